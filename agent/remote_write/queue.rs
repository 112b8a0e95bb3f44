//! The durable queue of one remote-write target: every tick's samples are committed here
//! before any send and removed only after the receiver's 2xx, so a crash, a reboot or a long
//! outage loses nothing within the queue's bounds. One SQLite file per target, WAL mode,
//! `synchronous = FULL`; each batch is stored as snappy-compressed protobuf.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use prost::Message;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags, params};

use super::request::proto::{TimeSeries, WriteRequest};
use tracing::warn;

use crate::common::files::not_a_plain_file;
use crate::telemetry::Backlog;

/// A stored batch: whole ticks' series (or a part of one too large for one request).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Batch {
    pub(crate) id: i64,
    pub(crate) n_samples: u64,
    pub(crate) series: Vec<TimeSeries>,
}

/// What the bounds dropped, in samples.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub(crate) too_old: u64,
    pub(crate) over_size: u64,
    /// Batches that could not be read back (a disk fault, a bad restore).
    pub(crate) corrupt: u64,
}

/// The queue file of one target. The agent's tick loop writes it, the target's sender reads and
/// removes from it; nothing else writes it.
#[derive(Debug)]
pub struct Queue {
    path: PathBuf,
    connection: Mutex<Connection>,
}

/// Drops, in `transaction`, batches older than `oldest_ms`, then the oldest until the rest fit
/// in `max_bytes`; counts what it dropped.
fn drop_past_bounds(
    transaction: &rusqlite::Transaction<'_>,
    oldest_ms: i64,
    max_bytes: u64,
) -> rusqlite::Result<Dropped> {
    let too_old: i64 = transaction.query_row(
        "SELECT coalesce(sum(n_samples), 0) FROM batches WHERE timestamp_ms < ?1",
        [oldest_ms],
        |row| row.get(0),
    )?;
    transaction.execute("DELETE FROM batches WHERE timestamp_ms < ?1", [oldest_ms])?;
    // Keep the newest batches whose bodies add up to at most max_bytes.
    let first_kept: Option<i64> = transaction.query_row(
        "SELECT min(id) FROM (SELECT id, sum(length(body)) OVER (ORDER BY id DESC) AS newer_bytes FROM batches)
         WHERE newer_bytes <= ?1",
        [max_bytes.min(i64::MAX as u64) as i64],
        |row| row.get(0),
    )?;
    let first_kept = first_kept.unwrap_or(i64::MAX);
    let over_size: i64 = transaction.query_row(
        "SELECT coalesce(sum(n_samples), 0) FROM batches WHERE id < ?1",
        [first_kept],
        |row| row.get(0),
    )?;
    transaction.execute("DELETE FROM batches WHERE id < ?1", [first_kept])?;
    Ok(Dropped { too_old: too_old.max(0) as u64, over_size: over_size.max(0) as u64, corrupt: 0 })
}

/// Why a queue did not open: damaged (moved aside and started afresh), or failed otherwise.
enum Opening {
    Damaged(String),
    Failed(anyhow::Error),
}

/// Renames the queue file at `path`, with its `-wal` and `-shm` if there, to
/// `<name>.corrupt-<time>`; returns the new path.
fn move_aside(path: &Path) -> anyhow::Result<PathBuf> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let aside = PathBuf::from(format!("{}.corrupt-{stamp}", path.display()));
    for suffix in ["", "-wal", "-shm"] {
        let (from, to) = (format!("{}{suffix}", path.display()), format!("{}{suffix}", aside.display()));
        // A missing -wal or -shm is nothing to move; the file itself must move.
        match std::fs::rename(&from, &to) {
            Err(error) if suffix.is_empty() || error.kind() != std::io::ErrorKind::NotFound => {
                return Err(error).with_context(|| format!("moving the damaged queue {from} aside to {to}"));
            }
            _ => {}
        }
    }
    Ok(aside)
}

/// A stored body back to its series: snappy, then protobuf.
fn decode(body: &[u8]) -> Result<Vec<TimeSeries>, String> {
    let protobuf =
        snap::raw::Decoder::new().decompress_vec(body).map_err(|error| format!("it does not decompress: {error}"))?;
    let request = WriteRequest::decode(protobuf.as_slice()).map_err(|error| format!("it does not decode: {error}"))?;
    Ok(request.timeseries)
}

/// What waits in the queue file at `path`, read without writing to it: for operators' tools
/// and tests, while the agent runs or not.
pub fn inspect(path: &Path) -> anyhow::Result<Backlog> {
    let connection = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening the queue {}", path.display()))?;
    connection.busy_timeout(Duration::from_secs(5))?;
    backlog(&connection).with_context(|| format!("reading the queue {}", path.display()))
}

fn backlog(connection: &Connection) -> rusqlite::Result<Backlog> {
    connection.query_row(
        "SELECT coalesce(sum(n_samples), 0), coalesce(sum(length(body)), 0), min(timestamp_ms) FROM batches",
        [],
        |row| {
            Ok(Backlog {
                n_samples: row.get::<_, i64>(0)? as u64,
                n_bytes: row.get::<_, i64>(1)? as u64,
                oldest_timestamp_ms: row.get(2)?,
            })
        },
    )
}

/// An error when the queue file or its `-wal` or `-shm` is something SQLite should not open: a
/// symbolic link or a hard link (the agent would write into another file), a named pipe (a read would wait for
/// ever), a folder or a device. Nothing is moved: such a thing was put there by someone.
fn refuse_what_is_no_queue_file(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let file = Path::new(&file);
        let Ok(metadata) = std::fs::symlink_metadata(file) else { continue };
        if let Some(what) = not_a_plain_file(&metadata) {
            bail!("{} is {what}, not a queue file: remove it (the agent makes its queue files itself)", file.display());
        }
        if metadata.nlink() > 1 {
            bail!(
                "{} has other hard links ({} names): the agent would write its queue into a file that is also \
                 elsewhere; remove this name (the agent makes its queue files itself)",
                file.display(),
                metadata.nlink()
            );
        }
    }
    Ok(())
}

impl Queue {
    /// Opens (or creates) the queue at `path`, creating its directory. A file that is not a
    /// SQLite database, or fails SQLite's quick integrity check (a disk fault, a bad restore),
    /// is moved aside to `<name>.sqlite3.corrupt-<time>` (with its `-wal` and `-shm`), logged
    /// with both paths, and replaced by an empty queue, so the agent starts; any other failure
    /// (permissions, a full disk) is an error and moves nothing.
    pub fn open(path: &Path) -> anyhow::Result<Queue> {
        if let Some(directory) = path.parent() {
            std::fs::create_dir_all(directory).with_context(|| format!("creating {}", directory.display()))?;
        }
        refuse_what_is_no_queue_file(path)?;
        let damage = match Queue::open_checked(path) {
            Ok(queue) => return Ok(queue),
            Err(Opening::Failed(error)) => return Err(error),
            Err(Opening::Damaged(damage)) => damage,
        };
        let n_samples = inspect(path).ok().map(|backlog| backlog.n_samples);
        let aside = move_aside(path)?;
        warn!(
            queue = %path.display(),
            moved_to = %aside.display(),
            n_samples_in_it = ?n_samples,
            %damage,
            "the queue file is damaged: moved it aside and started an empty queue"
        );
        Queue::open_checked(path).map_err(|failed| match failed {
            Opening::Failed(error) => error,
            Opening::Damaged(damage) => anyhow::anyhow!("the new queue {} is damaged too: {damage}", path.display()),
        })
    }

    fn open_checked(path: &Path) -> Result<Queue, Opening> {
        let opened = Connection::open(path).and_then(|connection| {
            connection.execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = FULL;
                 CREATE TABLE IF NOT EXISTS batches (
                     id INTEGER PRIMARY KEY AUTOINCREMENT,
                     timestamp_ms INTEGER NOT NULL,
                     n_samples INTEGER NOT NULL,
                     body BLOB NOT NULL
                 );
                 CREATE TABLE IF NOT EXISTS newest_stamp (
                     id INTEGER PRIMARY KEY CHECK (id = 1),
                     timestamp_ms INTEGER NOT NULL
                 );",
            )?;
            connection.busy_timeout(Duration::from_secs(5))?;
            let verdict: Vec<String> =
                connection.prepare("PRAGMA quick_check")?.query_map([], |row| row.get(0))?.collect::<Result<_, _>>()?;
            Ok((connection, verdict))
        });
        match opened {
            // SQLite opens a file it may not write read-only without a word: every tick would fail.
            Ok((connection, _)) if connection.is_readonly(rusqlite::MAIN_DB).unwrap_or(true) => {
                Err(Opening::Failed(anyhow::anyhow!(
                    "the queue {} cannot be written by this user: give it to the agent's user",
                    path.display()
                )))
            }
            Ok((connection, verdict)) if verdict == ["ok"] => {
                Ok(Queue { path: path.to_owned(), connection: Mutex::new(connection) })
            }
            Ok((_, verdict)) => Err(Opening::Damaged(format!("its integrity check says: {}", verdict.join("; ")))),
            Err(error) if error.sqlite_error_code() == Some(ErrorCode::ReadOnly) => {
                Err(Opening::Failed(anyhow::anyhow!(
                    "the queue {} cannot be written by this user ({error}): give it to the agent's user",
                    path.display()
                )))
            }
            Err(error)
                if matches!(error.sqlite_error_code(), Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)) =>
            {
                Err(Opening::Damaged(error.to_string()))
            }
            Err(error) => {
                Err(Opening::Failed(anyhow::Error::new(error).context(format!("opening the queue {}", path.display()))))
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Commits one tick's series, split into batches of at most `max_samples` samples. With
    /// `bounds` (the oldest timestamp kept, the most bytes), the same transaction drops what is
    /// past them, so the file never exceeds them even while nothing is sent; returns what it
    /// dropped.
    pub fn push(
        &self,
        timestamp_ms: i64,
        series: &[TimeSeries],
        max_samples: usize,
        bounds: Option<(i64, u64)>,
    ) -> anyhow::Result<Dropped> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        for chunk in series.chunks(max_samples.max(1)) {
            let n_samples: usize = chunk.iter().map(|series| series.samples.len()).sum();
            let protobuf = WriteRequest { timeseries: chunk.to_vec(), metadata: Vec::new() }.encode_to_vec();
            let body = snap::raw::Encoder::new().compress_vec(&protobuf).expect("snappy compresses any input");
            transaction.execute(
                "INSERT INTO batches (timestamp_ms, n_samples, body) VALUES (?1, ?2, ?3)",
                params![timestamp_ms, n_samples as i64, body],
            )?;
        }
        transaction.execute(
            "INSERT INTO newest_stamp (id, timestamp_ms) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET timestamp_ms = max(timestamp_ms, excluded.timestamp_ms)",
            [timestamp_ms],
        )?;
        let dropped = match bounds {
            Some((oldest_ms, max_bytes)) => drop_past_bounds(&transaction, oldest_ms, max_bytes)?,
            None => Dropped::default(),
        };
        transaction.commit().with_context(|| format!("committing to the queue {}", self.path.display()))?;
        Ok(dropped)
    }

    /// The oldest batches, together holding at most `max_samples` samples (always at least
    /// one batch when any waits), and at most `max_batches` of them. A batch that cannot be read
    /// back (it does not decompress or decode) is deleted on the way, logged and counted in the
    /// `Dropped` returned, so it never blocks the batches behind it.
    pub(crate) fn oldest(&self, max_samples: u64, max_batches: usize) -> anyhow::Result<(Vec<Batch>, Dropped)> {
        let connection = self.lock();
        let mut statement =
            connection.prepare_cached("SELECT id, n_samples, body FROM batches ORDER BY id LIMIT ?1")?;
        let mut rows = statement.query([max_batches as i64])?;
        let (mut batches, mut unreadable) = (Vec::new(), Vec::new());
        let mut n_samples = 0;
        while let Some(row) = rows.next()? {
            let id = row.get::<_, i64>(0)?;
            let batch_samples = row.get_ref(1)?.as_i64().map_or(0, |n| n.max(0) as u64);
            if !batches.is_empty() && n_samples + batch_samples > max_samples {
                break;
            }
            let body = match row.get_ref(2)? {
                ValueRef::Blob(bytes) | ValueRef::Text(bytes) => bytes,
                _ => &[],
            };
            match decode(body) {
                Ok(series) => {
                    n_samples += batch_samples;
                    batches.push(Batch { id, n_samples: batch_samples, series });
                }
                Err(reason) => unreadable.push((id, batch_samples, reason)),
            }
        }
        drop(rows);
        drop(statement);
        let mut dropped = Dropped::default();
        if let Some((_, _, first_reason)) = unreadable.first() {
            warn!(queue = %self.path.display(), n_batches = unreadable.len(), first_reason = %first_reason, "dropped queued batches that cannot be read back");
        }
        for (id, batch_samples, _) in &unreadable {
            connection.execute("DELETE FROM batches WHERE id = ?1", [id])?;
            dropped.corrupt += batch_samples;
        }
        Ok((batches, dropped))
    }

    /// Removes batches that were delivered, or given up on.
    pub(crate) fn remove(&self, ids: &[i64]) -> anyhow::Result<()> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        for id in ids {
            transaction.execute("DELETE FROM batches WHERE id = ?1", [id])?;
        }
        transaction.commit()?;
        Ok(())
    }

    /// Drops batches older than `oldest_ms`, then the oldest until the rest fit in `max_bytes`.
    pub(crate) fn enforce_bounds(&self, oldest_ms: i64, max_bytes: u64) -> anyhow::Result<Dropped> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        let dropped = drop_past_bounds(&transaction, oldest_ms, max_bytes)?;
        transaction.commit()?;
        Ok(dropped)
    }

    /// What waits to be sent.
    pub(crate) fn backlog(&self) -> anyhow::Result<Backlog> {
        Ok(backlog(&self.lock())?)
    }

    /// The newest timestamp ever queued here, sent or not: a receiver refuses a sample at or
    /// before it in the same series, so a restarted agent queues none.
    pub(crate) fn newest_timestamp_ms(&self) -> anyhow::Result<Option<i64>> {
        // Two-argument max() is NULL if either is: the newest of those there are.
        Ok(self.lock().query_row(
            "SELECT max(timestamp_ms) FROM (SELECT max(timestamp_ms) AS timestamp_ms FROM batches
                                           UNION ALL SELECT timestamp_ms FROM newest_stamp)",
            [],
            |row| row.get(0),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote_write::request::proto::{Label, Sample};

    fn series(n: usize, timestamp_ms: i64) -> Vec<TimeSeries> {
        (0..n)
            .map(|index| TimeSeries {
                labels: vec![Label { name: "__name__".into(), value: format!("series_{index}") }],
                samples: vec![Sample { value: index as f64, timestamp: timestamp_ms }],
            })
            .collect()
    }

    #[test]
    fn batches_survive_reopening_and_leave_only_when_removed() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("queue").join("central.sqlite3");
        let queue = Queue::open(&path).unwrap();
        queue.push(1000, &series(5, 1000), 2, None).unwrap();
        queue.push(2000, &series(3, 2000), 2, None).unwrap();
        drop(queue);

        let queue = Queue::open(&path).unwrap();
        let backlog = queue.backlog().unwrap();
        assert_eq!((backlog.n_samples, backlog.oldest_timestamp_ms), (8, Some(1000)));
        assert_eq!(inspect(&path).unwrap(), backlog, "read from outside, the file says the same");
        let (first, _) = queue.oldest(4, 100).unwrap();
        assert_eq!(first.iter().map(|batch| batch.n_samples).collect::<Vec<_>>(), [2, 2]);
        assert_eq!(first[0].series, series(5, 1000)[..2]);
        queue.remove(&first.iter().map(|batch| batch.id).collect::<Vec<_>>()).unwrap();
        let (next, _) = queue.oldest(1, 100).unwrap();
        assert_eq!(next.len(), 1, "one batch even when it alone exceeds the limit");
        assert_eq!(next[0].series, series(5, 1000)[4..]);
        assert_eq!(queue.newest_timestamp_ms().unwrap(), Some(2000));
    }

    #[test]
    fn the_newest_stamp_outlives_the_batches_that_bore_it() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("q.sqlite3");
        let queue = Queue::open(&path).unwrap();
        assert_eq!(queue.newest_timestamp_ms().unwrap(), None);
        queue.push(3000, &series(2, 3000), 10, None).unwrap();
        queue.push(2000, &series(2, 2000), 10, None).unwrap();
        let all: Vec<i64> = queue.oldest(100, 100).unwrap().0.iter().map(|batch| batch.id).collect();
        queue.remove(&all).unwrap();
        drop(queue);
        let reopened = Queue::open(&path).unwrap();
        assert_eq!(reopened.backlog().unwrap().n_samples, 0);
        assert_eq!(reopened.newest_timestamp_ms().unwrap(), Some(3000), "sent and gone, still the newest stamp");
    }

    #[test]
    fn a_batch_that_cannot_be_read_back_is_dropped_and_the_next_comes_through() {
        let directory = tempfile::tempdir().unwrap();
        let queue = Queue::open(&directory.path().join("q.sqlite3")).unwrap();
        for timestamp_ms in [1000, 2000, 3000] {
            queue.push(timestamp_ms, &series(3, timestamp_ms), 10, None).unwrap();
        }
        queue.lock().execute("UPDATE batches SET body = x'00ff' WHERE timestamp_ms = 1000", []).unwrap();
        queue
            .lock()
            .execute("UPDATE batches SET n_samples = 'three', body = 'text' WHERE timestamp_ms = 2000", [])
            .unwrap();
        let (batches, dropped) = queue.oldest(100, 100).unwrap();
        assert_eq!(dropped, Dropped { corrupt: 3, ..Dropped::default() }, "a count that is no number counts 0");
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].series, series(3, 3000));
        assert_eq!(queue.backlog().unwrap().n_samples, 3, "the backlog counts what is really there");
    }

    #[test]
    fn a_damaged_queue_file_is_moved_aside_and_replaced_by_an_empty_one() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("central.sqlite3");
        std::fs::write(&path, b"not a database at all, just bytes a bad restore left behind").unwrap();
        let queue = Queue::open(&path).unwrap();
        queue.push(1000, &series(2, 1000), 10, None).unwrap();
        assert_eq!(queue.backlog().unwrap().n_samples, 2);
        let aside: Vec<String> = std::fs::read_dir(directory.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.starts_with("central.sqlite3.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        let kept = std::fs::read(directory.path().join(&aside[0])).unwrap();
        assert!(kept.starts_with(b"not a database"), "the damaged file is kept as it was");

        // A directory in the queue's place is not damage: an error, and nothing moves.
        let blocked = directory.path().join("blocked.sqlite3");
        std::fs::create_dir(&blocked).unwrap();
        let error = Queue::open(&blocked).unwrap_err().to_string();
        assert!(
            error.ends_with(
                "blocked.sqlite3 is a directory, not a queue file: remove it (the agent makes its queue files itself)"
            ),
            "{error}"
        );
        assert!(blocked.is_dir());
    }

    #[test]
    fn a_link_or_a_named_pipe_in_a_queue_files_place_is_refused_and_left_alone() {
        let directory = tempfile::tempdir().unwrap();
        // A link to a file the agent may write: not followed, the file untouched.
        let precious = directory.path().join("precious.txt");
        std::fs::write(&precious, "keep me").unwrap();
        let linked = directory.path().join("linked.sqlite3");
        std::os::unix::fs::symlink(&precious, &linked).unwrap();
        let error = Queue::open(&linked).unwrap_err().to_string();
        assert!(error.contains("linked.sqlite3 is a symbolic link, not a queue file"), "{error}");
        assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me");
        // A named pipe as the -wal file: an error at once, where SQLite's read would wait for ever.
        let piped = directory.path().join("piped.sqlite3");
        let fifo = std::ffi::CString::new(format!("{}-wal", piped.display())).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path this frame owns.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let error = Queue::open(&piped).unwrap_err().to_string();
        assert!(error.contains("piped.sqlite3-wal is a named pipe (FIFO), not a queue file"), "{error}");
        // A hard link to another file (the app's database, say): refused, the file untouched.
        let app = directory.path().join("app.sqlite3");
        std::fs::write(&app, "the app's own").unwrap();
        let hard = directory.path().join("hard.sqlite3");
        std::fs::hard_link(&app, &hard).unwrap();
        let error = Queue::open(&hard).unwrap_err().to_string();
        assert!(error.contains("hard.sqlite3 has other hard links (2 names)"), "{error}");
        assert_eq!(std::fs::read_to_string(&app).unwrap(), "the app's own");
    }

    #[test]
    fn a_push_keeps_the_bounds_in_its_own_transaction() {
        let directory = tempfile::tempdir().unwrap();
        let queue = Queue::open(&directory.path().join("q.sqlite3")).unwrap();
        queue.push(1000, &series(4, 1000), 100, None).unwrap();
        queue.push(2000, &series(4, 2000), 100, None).unwrap();
        let too_old = queue.push(3000, &series(4, 3000), 100, Some((1500, u64::MAX))).unwrap();
        assert_eq!(too_old, Dropped { too_old: 4, ..Dropped::default() });
        let one_batch_of_bytes = queue.backlog().unwrap().n_bytes / 2;
        let over_size = queue.push(4000, &series(4, 4000), 100, Some((0, one_batch_of_bytes + 1))).unwrap();
        assert_eq!(over_size, Dropped { over_size: 8, ..Dropped::default() });
        assert_eq!(queue.backlog().unwrap().n_samples, 4, "only the newest tick is left");
    }

    #[test]
    fn bounds_drop_the_oldest_first_and_count_what_they_drop() {
        let directory = tempfile::tempdir().unwrap();
        let queue = Queue::open(&directory.path().join("q.sqlite3")).unwrap();
        for tick in 0..10 {
            queue.push(tick * 1000, &series(4, tick * 1000), 100, None).unwrap();
        }
        let dropped = queue.enforce_bounds(3000, u64::MAX).unwrap();
        assert_eq!(dropped, Dropped { too_old: 12, over_size: 0, corrupt: 0 });
        let newest_two: i64 = queue
            .lock()
            .query_row(
                "SELECT sum(size) FROM (SELECT length(body) AS size FROM batches ORDER BY id DESC LIMIT 2)",
                [],
                |row| row.get(0),
            )
            .unwrap();
        let dropped = queue.enforce_bounds(0, newest_two as u64).unwrap();
        assert_eq!(dropped, Dropped { too_old: 0, over_size: 20, corrupt: 0 });
        let backlog = queue.backlog().unwrap();
        assert_eq!(backlog, Backlog { n_samples: 8, n_bytes: newest_two as u64, oldest_timestamp_ms: Some(8000) });
    }
}
