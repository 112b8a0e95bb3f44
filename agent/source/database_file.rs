//! What stands at `source.database`, told before SQLite opens it: a named pipe would block the
//! open for ever, and a directory, socket or device is no database. Used at every tick and when
//! the config is checked.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{anyhow, bail};

use crate::common::files::not_a_regular_file;
use crate::common::open_files;
use crate::common::unit_sandbox::unit_note;

/// Refuses, before anything opens it, a path that is not a regular file this user may read: a
/// named pipe would block the open for ever, and a directory, socket or device is no database.
pub(crate) fn refuse_what_is_no_readable_file(path: &Path) -> anyhow::Result<()> {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => bail!(
            "there is no file at {} (moved, or a restore not finished?){}: point source.database at the app's \
             SQLite database; the agent never creates it",
            path.display(),
            unit_note(path)
        ),
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => bail!(
            "this user may not reach {} ({error}): a folder on the way is closed to it{}; give the agent's \
             user the group that may enter each folder (SupplementaryGroups= in the systemd unit)",
            path.display(),
            unit_note(path)
        ),
        Err(error) => bail!("cannot look at {}: {error}", path.display()),
    };
    let Some(what) = not_a_regular_file(metadata.file_type()) else {
        // Opening is the surest test of access; not blocking, in case a named pipe took the
        // file's place since it was looked at.
        return match OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path) {
            Ok(_) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => bail!(
                "this user may not read {} ({error}){}: give the agent's user the file's group, or read access \
                 (SupplementaryGroups= in the systemd unit)",
                path.display(),
                unit_note(path)
            ),
            Err(error) => Err(cannot_open(path, &error)),
        };
    };
    bail!("{} is {what}, not a SQLite database file: point source.database at the app's database file", path.display())
}

/// Why `path` could not be opened for reading, for an error that is not about access. Running out
/// of descriptors is said plainly: it is the agent's state, not the file's.
fn cannot_open(path: &Path, error: &std::io::Error) -> anyhow::Error {
    match error.raw_os_error() {
        Some(libc::EMFILE) => {
            let limit = open_files::current().map_or_else(|_| "its limit".to_owned(), |limit| limit.soft.to_string());
            anyhow!(
                "cannot open {}: too many open files: the agent holds as many as it may ({limit}, RLIMIT_NOFILE; \
                 LimitNOFILE= in the systemd unit); this says nothing of the file",
                path.display()
            )
        }
        Some(libc::ENFILE) => anyhow!(
            "cannot open {}: too many open files in the system (the kernel's fs.file-max is reached); the file \
             itself was not tried",
            path.display()
        ),
        _ => anyhow!("cannot read {}: {error}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_descriptors_is_named_and_not_blamed_on_the_file() {
        let path = Path::new("/srv/app/db.sqlite3");
        let per_process = cannot_open(path, &std::io::Error::from_raw_os_error(libc::EMFILE)).to_string();
        assert!(per_process.starts_with("cannot open /srv/app/db.sqlite3: too many open files: "), "{per_process}");
        assert!(per_process.contains("RLIMIT_NOFILE"), "{per_process}");
        let system_wide = cannot_open(path, &std::io::Error::from_raw_os_error(libc::ENFILE)).to_string();
        assert!(system_wide.contains("too many open files in the system"), "{system_wide}");
        for message in [per_process, system_wide] {
            assert!(!message.contains("exist"), "{message}");
        }
        let other = cannot_open(path, &std::io::Error::from_raw_os_error(libc::EIO)).to_string();
        assert!(other.starts_with("cannot read /srv/app/db.sqlite3: Input/output error"), "{other}");
    }
}
