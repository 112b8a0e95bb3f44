//! Keeps the app writing after the agent reads a WAL-mode database: any `-wal` or `-shm` file the
//! agent causes to exist is one the database's owner can read and write.
//!
//! With no connection open, a WAL-mode database has neither side file, and SQLite's read-only
//! reader creates both: owned by the agent's user and primary group, with the database's mode
//! (whatever the umask), and left in place when it closes, since a read-only connection cannot
//! take the lock that lets the last one delete them. The app's user reaches such a file only
//! through "others", and its next connection fails ("unable to open database file").
//!
//! So before SQLite opens the database, each missing side file is made here under a temporary
//! name, given the database's group and the database's mode with the group granted the owner's
//! bits (the app's user then has, through its group, what it has on the database), and only then
//! linked into place, which fails harmlessly if someone made one meanwhile. It holds one zero
//! byte: SQLite sets an *empty* side file it opens to the database's mode, but leaves a non-empty
//! one alone; a `-wal` shorter than its 32-byte header holds no frames, and the first connection
//! to open a `-shm` truncates it before use. The app's last connection deletes both, as its own.
//!
//! Nothing is made when the agent runs as root or as the database's owner (SQLite's own files are
//! then the owner's), or when it may not write the folder (SQLite then fails, and `describe`
//! says why). When the database's group is not one of the agent's, a file made here could not be
//! given to it, so the open is refused with what to do.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use tracing::debug;

/// The first 16 bytes of every SQLite database.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// The database header's size, and where the file format versions sit in it.
const DATABASE_HEADER_SIZE: u64 = 100;
const WRITE_VERSION_OFFSET: usize = 18;
const READ_VERSION_OFFSET: usize = 19;
/// The file format version of a WAL-mode database (1 is rollback journal).
const WAL_FORMAT_VERSION: u8 = 2;
/// What a side file made here holds: see the module's comment.
const SIDE_FILE_CONTENT: [u8; 1] = [0];
/// Tells apart the temporary files of threads in one process.
static TEMPORARY_FILE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Makes each missing side file of `database` the app's to write, if it is in WAL mode. Blocking.
pub(crate) fn create_missing_for_the_app(database: &Path) -> anyhow::Result<()> {
    // SQLite names the side files after the database's path with symbolic links resolved.
    let Ok(database) = std::fs::canonicalize(database) else { return Ok(()) };
    let database = database.as_path();
    if !is_wal_mode(database) {
        return Ok(());
    }
    let database_metadata =
        std::fs::metadata(database).with_context(|| format!("reading the owner of {}", database.display()))?;
    for suffix in ["-wal", "-shm"] {
        let mut side_file = database.as_os_str().to_owned();
        side_file.push(suffix);
        let side_file = PathBuf::from(side_file);
        if std::fs::symlink_metadata(&side_file).is_ok() {
            continue;
        }
        if create_side_file(database, &database_metadata, &side_file)? == Created::NothingToDo {
            return Ok(());
        }
    }
    Ok(())
}

/// Whether the file starts with a SQLite header saying WAL mode. A file the agent may not read,
/// shorter than a header or not SQLite is left for SQLite to report.
fn is_wal_mode(database: &Path) -> bool {
    let mut header = Vec::with_capacity(DATABASE_HEADER_SIZE as usize);
    // Not blocking: a named pipe put there since the path was checked must not hang the tick.
    let Ok(file) = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(database) else { return false };
    if !file.metadata().is_ok_and(|metadata| metadata.is_file()) {
        return false;
    }
    if file.take(DATABASE_HEADER_SIZE).read_to_end(&mut header).is_err() {
        return false;
    }
    header.len() == DATABASE_HEADER_SIZE as usize
        && header.starts_with(SQLITE_MAGIC)
        && header[WRITE_VERSION_OFFSET] == WAL_FORMAT_VERSION
        && header[READ_VERSION_OFFSET] == WAL_FORMAT_VERSION
}

/// The mode of a side file made for the app: the database's, with the group given the owner's bits.
fn side_file_mode(database_mode: u32) -> u32 {
    let mode = database_mode & 0o777;
    mode | ((mode & 0o700) >> 3)
}

#[derive(Debug, PartialEq, Eq)]
enum Created {
    /// The side file is in place, made here or by someone else meanwhile.
    InPlace,
    /// The agent may not write the folder, or SQLite's own side files would be the owner's.
    NothingToDo,
}

fn create_side_file(
    database: &Path,
    database_metadata: &std::fs::Metadata,
    side_file: &Path,
) -> anyhow::Result<Created> {
    let Some(temporary) = TemporaryFile::create(side_file)? else { return Ok(Created::NothingToDo) };
    let created = temporary.file.metadata().with_context(|| format!("reading {}", temporary.path.display()))?;
    if created.uid() == 0 || created.uid() == database_metadata.uid() {
        return Ok(Created::NothingToDo);
    }
    match std::os::unix::fs::fchown(&temporary.file, None, Some(database_metadata.gid())) {
        Ok(()) => {}
        Err(error) if error.kind() == ErrorKind::PermissionDenied => bail!(
            "{} is in WAL mode with no app connection open, so reading it would create {}; this user is not in \
             the database's group ({}), so it could not give the app that file and the app's next connection \
             would fail: give the agent the database's group (SupplementaryGroups= in the systemd unit) or run it \
             as the app's user",
            database.display(),
            side_file.display(),
            group_name(database_metadata.gid())
        ),
        Err(error) => {
            return Err(error).with_context(|| format!("giving {} the database's group", temporary.path.display()));
        }
    }
    let mode = side_file_mode(database_metadata.mode());
    temporary
        .file
        .set_permissions(Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {} to {mode:o}", temporary.path.display()))?;
    match std::fs::hard_link(&temporary.path, side_file) {
        Ok(()) => debug!(path = %side_file.display(), mode = format!("{mode:o}"), "created a side file for the app"),
        Err(error) if error.kind() == ErrorKind::AlreadyExists => {}
        Err(error) => return Err(error).with_context(|| format!("creating {}", side_file.display())),
    }
    Ok(Created::InPlace)
}

/// A side file in the making, under a name of its own beside it; removed when dropped.
struct TemporaryFile {
    path: PathBuf,
    file: File,
}

impl TemporaryFile {
    /// `None` when the agent may not create files in the folder.
    fn create(side_file: &Path) -> anyhow::Result<Option<TemporaryFile>> {
        let mut name = side_file.file_name().unwrap_or_default().to_owned();
        let number = TEMPORARY_FILE_COUNTER.fetch_add(1, Ordering::Relaxed);
        name.push(format!(".apimetrics-agent.{}.{number}", std::process::id()));
        let path = side_file.with_file_name(name);
        let open = || OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path);
        let opened = match open() {
            // Left by an agent stopped midway whose process id this one now has.
            Err(error) if error.kind() == ErrorKind::AlreadyExists => {
                std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
                open()
            }
            other => other,
        };
        let mut file = match opened {
            Ok(file) => file,
            Err(error) if [ErrorKind::PermissionDenied, ErrorKind::ReadOnlyFilesystem].contains(&error.kind()) => {
                return Ok(None);
            }
            Err(error) => return Err(error).with_context(|| format!("creating {}", path.display())),
        };
        let written = file.write_all(&SIDE_FILE_CONTENT);
        let temporary = TemporaryFile { path, file };
        written.with_context(|| format!("writing {}", temporary.path.display()))?;
        Ok(Some(temporary))
    }
}

impl Drop for TemporaryFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The group's name from /etc/group, or its number.
fn group_name(gid: u32) -> String {
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    groups
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.get(2).and_then(|field| field.parse::<u32>().ok()) == Some(gid))
        .map_or_else(|| format!("group id {gid}"), |fields| fields[0].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_gets_the_owners_bits_and_others_keep_theirs() {
        assert_eq!(side_file_mode(0o100640), 0o660);
        assert_eq!(side_file_mode(0o644), 0o664);
        assert_eq!(side_file_mode(0o600), 0o660);
        assert_eq!(side_file_mode(0o2604), 0o664);
    }

    #[test]
    fn only_a_sqlite_header_saying_wal_counts_as_wal_mode() {
        let directory = tempfile::tempdir().unwrap();
        let database = directory.path().join("app.sqlite3");
        let connection = rusqlite::Connection::open(&database).unwrap();
        connection.execute_batch("CREATE TABLE t (x)").unwrap();
        assert!(!is_wal_mode(&database), "rollback journal");
        connection.pragma_update(None, "journal_mode", "wal").unwrap();
        assert!(is_wal_mode(&database));
        drop(connection);

        let mut header = std::fs::read(&database).unwrap();
        header.truncate(DATABASE_HEADER_SIZE as usize - 1);
        std::fs::write(&database, &header).unwrap();
        assert!(!is_wal_mode(&database), "shorter than a header");
        std::fs::write(&database, [b'x'; 4096]).unwrap();
        assert!(!is_wal_mode(&database), "not SQLite");
        assert!(!is_wal_mode(&directory.path().join("missing.sqlite3")));
    }

    #[test]
    fn a_group_is_named_by_etc_group_or_its_number() {
        assert_eq!(group_name(0), "root");
        assert_eq!(group_name(4_000_000_000), "group id 4000000000");
    }
}
