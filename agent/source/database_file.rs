//! What stands at `source.database`, told before SQLite opens it: a named pipe would block the
//! open for ever, and a directory, socket or device is no database. Used at every tick and when
//! the config is checked.

use std::fs::OpenOptions;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use anyhow::bail;

/// Refuses, before anything opens it, a path that is not a regular file this user may read: a
/// named pipe would block the open for ever, and a directory, socket or device is no database.
pub(crate) fn refuse_what_is_no_readable_file(path: &Path) -> anyhow::Result<()> {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => bail!(
            "there is no file at {} (moved, or a restore not finished?): point source.database at the app's \
             SQLite database; the agent never creates it",
            path.display()
        ),
        Err(error) => {
            bail!("cannot look at {}: {error} (may this user enter every folder on the way?)", path.display())
        }
    };
    let kind = metadata.file_type();
    let what = if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a named pipe (FIFO)"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else {
        // Opening is the surest test of access; not blocking, in case a named pipe took the
        // file's place since it was looked at.
        return match OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path) {
            Ok(_) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => bail!(
                "this user may not read {} ({error}): give the agent's user the file's group, or read access \
                 (SupplementaryGroups= in the systemd unit)",
                path.display()
            ),
            Err(error) => bail!("cannot read {}: {error}", path.display()),
        };
    };
    bail!("{} is {what}, not a SQLite database file: point source.database at the app's database file", path.display())
}
