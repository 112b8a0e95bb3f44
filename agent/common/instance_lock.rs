//! One agent per `state_dir`: two agents on the same queues would send every sample twice. The
//! lock is a POSIX record lock on `state_dir/agent.lock`, which the kernel releases when the
//! process ends, however it ends, so a `kill -9` leaves nothing to clean up; and which another
//! process can test without taking (`F_GETLK`), learning the holder's pid.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, bail};

use super::files::{not_a_plain_file, not_a_regular_file};

const LOCK_FILE: &str = "agent.lock";

/// What to do about an `agent.state_dir` the agent cannot write for `error`, as `run` and `check`
/// say it. A read-only file system there is, under the packaged unit, its `ProtectSystem=strict`.
pub fn state_dir_remedy(error: &std::io::Error) -> &'static str {
    if error.raw_os_error() == Some(libc::EROFS) {
        "the agent keeps its lock and the remote-write queues there, and the file system is read-only to it: \
         under the packaged systemd unit only /var/lib/apimetrics-agent (StateDirectory=) may be written: point \
         agent.state_dir there"
    } else {
        "the agent keeps its lock and the remote-write queues there: create it writable to the agent's user, or \
         point agent.state_dir elsewhere"
    }
}

/// Held while the agent runs; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

impl InstanceLock {
    /// Takes the lock on `state_dir`, creating the folder; fails naming the folder and the pid
    /// of the agent holding it.
    pub fn acquire(state_dir: &Path) -> anyhow::Result<InstanceLock> {
        if std::fs::symlink_metadata(state_dir).is_ok() && std::fs::metadata(state_dir).is_err() {
            bail!("agent.state_dir {} is a symbolic link that points nowhere: fix or remove it", state_dir.display());
        }
        if let Ok(metadata) = std::fs::metadata(state_dir)
            && !metadata.is_dir()
        {
            let what = not_a_regular_file(metadata.file_type()).unwrap_or("a file");
            bail!(
                "agent.state_dir {} is {what}, not a folder: give the agent a folder of its own",
                state_dir.display()
            );
        }
        std::fs::create_dir_all(state_dir).map_err(|error| {
            let remedy = state_dir_remedy(&error);
            anyhow::anyhow!("cannot create agent.state_dir {} ({error}): {remedy}", state_dir.display())
        })?;
        let path = state_dir.join(LOCK_FILE);
        let refused =
            |what: &str| anyhow::anyhow!("{} is {what}, not the agent's lock file: remove it", path.display());
        // Looked at before it is opened (opening a device can have effects of its own), and what
        // was opened again after, for one put there in between: never through a symbolic link
        // (it could point at any file the agent may write), never waiting on a named pipe.
        if let Ok(metadata) = std::fs::symlink_metadata(&path)
            && let Some(what) = not_a_plain_file(&metadata)
        {
            return Err(refused(what));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .map_err(|error| match error.raw_os_error() {
                Some(libc::ELOOP) => refused("a symbolic link"),
                Some(libc::EISDIR) => refused("a directory"),
                Some(libc::EACCES | libc::EPERM | libc::EROFS) => {
                    anyhow::anyhow!(
                        "cannot write in agent.state_dir: opening {} ({error}): {}",
                        path.display(),
                        state_dir_remedy(&error)
                    )
                }
                _ => anyhow::Error::new(error).context(format!("opening {}", path.display())),
            })?;
        let kind = file.metadata().with_context(|| format!("reading {}", path.display()))?.file_type();
        if let Some(what) = not_a_regular_file(kind) {
            return Err(refused(what));
        }
        if let Err(error) = lock(&file, libc::F_SETLK) {
            if !matches!(error.raw_os_error(), Some(libc::EACCES | libc::EAGAIN)) {
                return Err(error).with_context(|| format!("locking {}", path.display()));
            }
            bail!(
                "another agent{} is running on agent.state_dir {}: two agents on the same queues would send every \
                 sample twice; stop it, or give this one a state_dir of its own",
                holder(state_dir).map(|pid| format!(" (pid {pid})")).unwrap_or_default(),
                state_dir.display()
            );
        }
        Ok(InstanceLock { _file: file })
    }
}

/// Whether `a` and `b` name the same folder however they are spelled (relative or absolute, through
/// a link): a POSIX lock is the process's, so taking it again there and dropping the first
/// descriptor would release both.
pub fn same_folder(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => a == b,
    }
}

/// The pid of another process holding the lock on `state_dir`, if one does; tested without
/// taking it, for `check`.
pub fn holder(state_dir: &Path) -> Option<u32> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(state_dir.join(LOCK_FILE))
        .ok()?;
    let mut probe = whole_file(libc::F_WRLCK);
    // SAFETY: F_GETLK fills in `probe`, a plain struct this frame owns.
    let tested = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut probe) };
    (tested == 0 && probe.l_type != libc::F_UNLCK as libc::c_short).then_some(probe.l_pid as u32)
}

/// A write lock on the whole of `file`, taken (`F_SETLK`) without waiting.
fn lock(file: &File, command: libc::c_int) -> std::io::Result<()> {
    let whole = whole_file(libc::F_WRLCK);
    // SAFETY: fcntl reads `whole`, a plain struct this frame owns.
    if unsafe { libc::fcntl(file.as_raw_fd(), command, &whole) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn whole_file(kind: libc::c_int) -> libc::flock {
    // SAFETY: an all-zero flock is a valid value (start 0, length 0: the whole file).
    let mut whole: libc::flock = unsafe { std::mem::zeroed() };
    whole.l_type = kind as libc::c_short;
    whole.l_whence = libc::SEEK_SET as libc::c_short;
    whole
}
