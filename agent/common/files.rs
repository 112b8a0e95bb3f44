//! Reading the small files a config names (the config itself, password and token files, TLS
//! certificates and keys) without ever hanging: a named pipe in their place would block a plain
//! read for ever, holding up `check`, the start or a reload; a device could be endless.

use std::fs::{FileType, OpenOptions};
use std::io::{Error, ErrorKind, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::credentials::{self, Located};

/// The most a config-named file may hold; more is refused, not read.
const MAX_BYTES: u64 = 16 << 20;

/// Reads the regular file at `path`; anything else (a named pipe, a directory, a socket, a
/// device) or a file over 16 MiB is an error saying what stands there. A systemd credential,
/// outside the service, is read from the credential store that would hand it to the service
/// (`credentials`).
pub fn read_regular_file(path: &Path) -> std::io::Result<Vec<u8>> {
    match credentials::locate(path) {
        Located::Itself => read_this_regular_file(path),
        Located::Instead { file, what, if_denied } => read_this_regular_file(&file).map_err(|error| {
            let hint =
                if error.kind() == ErrorKind::PermissionDenied { format!("; {if_denied}") } else { String::new() };
            Error::new(error.kind(), format!("{error} (read from {}, {what}{hint})", file.display()))
        }),
        Located::Nowhere(looked) => {
            Err(Error::new(ErrorKind::NotFound, format!("{}: {looked}", Error::from_raw_os_error(libc::ENOENT))))
        }
    }
}

fn read_this_regular_file(path: &Path) -> std::io::Result<Vec<u8>> {
    // Not blocking: opening a named pipe for reading would otherwise wait for a writer.
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let metadata = file.metadata()?;
    if let Some(what) = not_a_regular_file(metadata.file_type()) {
        return Err(Error::new(ErrorKind::InvalidInput, format!("it is {what}, not a regular file")));
    }
    if metadata.len() > MAX_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("it holds {} bytes, more than 16 MiB", metadata.len()),
        ));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(MAX_BYTES + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// What stands at a path that is not a regular file, as a message says it ("a named pipe
/// (FIFO)"); `None` for a regular file.
pub(crate) fn not_a_regular_file(kind: FileType) -> Option<&'static str> {
    if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_fifo() {
        Some("a named pipe (FIFO)")
    } else if kind.is_socket() {
        Some("a socket")
    } else {
        Some("a device")
    }
}

/// What stands at a path, as `symlink_metadata` read it, when it is not a regular file of its
/// own name: a symbolic link (the agent would write wherever it points) or what
/// `not_a_regular_file` says; `None` for a regular file.
pub(crate) fn not_a_plain_file(metadata: &std::fs::Metadata) -> Option<&'static str> {
    if metadata.file_type().is_symlink() { Some("a symbolic link") } else { not_a_regular_file(metadata.file_type()) }
}

/// The file's permission bits if every user on the machine may read it (`o+r`), for a warning
/// about a file that holds a secret, as ssh gives about a private key.
/// Returns the file looked at too: a credential outside the service is its store's file.
pub(crate) fn readable_by_everyone(path: &Path) -> Option<(u32, PathBuf)> {
    use std::os::unix::fs::PermissionsExt;
    let path = match credentials::locate(path) {
        Located::Instead { file, .. } => file,
        _ => path.to_owned(),
    };
    let mode = std::fs::metadata(&path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o004 != 0).then_some((mode, path))
}

/// `read_regular_file`, as UTF-8 text.
pub fn read_regular_text(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read_regular_file(path)?).map_err(|_| Error::new(ErrorKind::InvalidData, "it is not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;

    use super::*;

    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "a = 1\n").unwrap();
        assert_eq!(read_regular_text(&file).unwrap(), "a = 1\n");
        let fifo = dir.path().join("fifo");
        assert_eq!(unsafe { libc::mkfifo(CString::new(fifo.to_str().unwrap()).unwrap().as_ptr(), 0o600) }, 0);
        let refused = |path: &Path| read_regular_file(path).unwrap_err().to_string();
        assert_eq!(refused(&fifo), "it is a named pipe (FIFO), not a regular file");
        assert_eq!(refused(dir.path()), "it is a directory, not a regular file");
        assert_eq!(refused(Path::new("/dev/zero")), "it is a device, not a regular file");
        assert_eq!(read_regular_file(&dir.path().join("nothing")).unwrap_err().kind(), ErrorKind::NotFound);
        std::fs::write(&file, [0xff, 0xfe]).unwrap();
        assert_eq!(read_regular_text(&file).unwrap_err().to_string(), "it is not UTF-8 text");
    }

    #[test]
    fn a_file_every_user_may_read_is_told_apart() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "t").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(readable_by_everyone(&file), Some((0o644, file.clone())));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(readable_by_everyone(&file), None);
    }
}
