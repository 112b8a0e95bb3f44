//! The SQLite backend: the app's database file, opened read-only (`mode=ro` + `query_only`)
//! for one tick, waiting for the app's write lock no longer than `busy_timeout`, read in short
//! transactions (`read`, `window_count`), on a thread of its own under the tick's deadline.
//! `database_file` and `side_files` look at the file and its WAL side files before it opens.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::config::{SourceConfig, Tables};
use super::read::{ReadMethod, TimeIndex, chosen_method, quoted, read_counts, read_queries, time_indexes};
use super::window::{FUTURE_AFTER, REQUIRED_COLUMNS, WindowRead, lacking_columns, not_the_apps_tables, table_name};
use super::window_count::{self, WindowBounds};
use super::{database_file, side_files};
use crate::common::deadline::Cancel;
use crate::common::django_time::{django_text, django_timestamp, local_clock_minus};

/// Opens the database read-only and checks that it holds the app's tables. Once `cancel` is
/// set, every statement on the connection and every wait for a lock stops with an error.
pub(crate) fn open(path: &Path, source: &SourceConfig, cancel: &Cancel) -> anyhow::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    database_file::refuse_what_is_no_readable_file(path)
        .with_context(|| format!("opening {} (source.database)", path.display()))?;
    side_files::create_missing_for_the_app(path)
        .with_context(|| format!("opening {} (source.database)", path.display()))?;
    let connection = Connection::open_with_flags(read_only_uri(path), flags)
        .map_err(|error| describe(error, path, source))
        .with_context(|| format!("opening {} (source.database)", path.display()))?;
    wait_for_locks(&connection, source.busy_timeout, cancel)?;
    let stop = cancel.clone();
    connection.progress_handler(PROGRESS_EVERY, Some(move || stop.is_cancelled()))?;
    connection
        .pragma_update(None, "query_only", true)
        .map_err(|error| describe(error, path, source))
        .with_context(|| format!("opening {} (source.database)", path.display()))?;
    check_tables(&connection, &source.tables)
        .map_err(|error| {
            error.downcast::<rusqlite::Error>().map(|error| describe(error, path, source)).unwrap_or_else(|error| error)
        })
        .with_context(|| format!("checking {} (source.database)", path.display()))?;
    Ok(connection)
}

/// How many of SQLite's VM steps run between two looks at the tick's `Cancel`.
const PROGRESS_EVERY: std::ffi::c_int = 10_000;

thread_local! {
    /// How many 1 ms polls a read on this thread makes for a lock before it gives up.
    static LOCK_POLLS: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
    /// The tick's `Cancel` on this thread, which also ends a wait for a lock.
    static LOCK_CANCEL: std::cell::RefCell<Cancel> = std::cell::RefCell::new(Cancel::default());
}

/// Waits up to `timeout` for a lock the app holds, polling every millisecond. SQLite's own
/// handler backs off to 100 ms sleeps, and a tick of many short reads meets the app's writes
/// often: backing off, it would wait far longer than the writes hold their locks.
fn wait_for_locks(connection: &Connection, timeout: Duration, cancel: &Cancel) -> rusqlite::Result<()> {
    fn poll(n_polls: i32) -> bool {
        let cancelled = LOCK_CANCEL.with(|cancel| cancel.borrow().is_cancelled());
        let go_on = n_polls < LOCK_POLLS.with(std::cell::Cell::get) && !cancelled;
        if go_on {
            std::thread::sleep(Duration::from_millis(1));
        }
        go_on
    }
    LOCK_POLLS.with(|polls| polls.set(timeout.as_millis().min(i32::MAX as u128) as i32));
    LOCK_CANCEL.with(|slot| *slot.borrow_mut() = cancel.clone());
    connection.busy_handler(Some(poll))
}

/// A `file:` URI for `path` with `mode=ro`; `?`, `#` and `%` in the path are escaped.
fn read_only_uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for character in path.to_string_lossy().chars() {
        match character {
            '?' => uri.push_str("%3f"),
            '#' => uri.push_str("%23"),
            '%' => uri.push_str("%25"),
            other => uri.push(other),
        }
    }
    uri.push_str("?mode=ro");
    uri
}

/// Turns SQLite's terse codes into what an operator can act on.
fn describe(error: rusqlite::Error, path: &Path, source: &SourceConfig) -> anyhow::Error {
    let extended_code = match &error {
        rusqlite::Error::SqliteFailure(failure, _) => failure.extended_code,
        _ => 0,
    };
    if [rusqlite::ffi::SQLITE_READONLY_CANTINIT, rusqlite::ffi::SQLITE_READONLY_DIRECTORY].contains(&extended_code) {
        return anyhow!(
            "{} is in WAL mode and its shared-memory file ({}-shm) is missing, and this user may not create it: \
             run the agent as the app's user or group, with the database's directory writable to it \
             (no app connection was open; the next one creates the file)",
            path.display(),
            path.display()
        );
    }
    if extended_code == rusqlite::ffi::SQLITE_READONLY_ROLLBACK {
        return anyhow!(
            "{} has a hot journal ({}-journal): the app stopped in the middle of a write, and only a connection \
             that may write can roll it back; the app's next connection repairs it, after which the agent reads \
             on (nothing was changed)",
            path.display(),
            path.display()
        );
    }
    match error.sqlite_error_code() {
        Some(ErrorCode::OperationInterrupted) => anyhow!("the read was stopped: it ran past source.timeout"),
        Some(ErrorCode::NotADatabase) => anyhow!(
            "{} is not a SQLite database (its first bytes are not SQLite's header): point source.database at the \
             app's database file",
            path.display()
        ),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => anyhow!(
            "the database stayed locked by a writer for longer than source.busy_timeout ({}): {error}",
            humantime::format_duration(source.busy_timeout)
        ),
        Some(ErrorCode::CannotOpen) => {
            // SQLite says only "unable to open database file": looking again tells a missing or
            // unreadable file, or an agent out of descriptors, from the rest.
            if let Err(reason) = database_file::refuse_what_is_no_readable_file(path) {
                return reason;
            }
            anyhow!(
                "cannot open {}: {error} (the file is there and readable now: was the agent out of open files, or \
                 was the file being replaced?)",
                path.display()
            )
        }
        _ => anyhow::Error::new(error),
    }
}

fn check_tables(connection: &Connection, tables: &Tables) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for (role, columns) in REQUIRED_COLUMNS {
        let table = table_name(tables, role);
        let mut statement = connection.prepare("SELECT name FROM pragma_table_info(?1)")?;
        let present: Vec<String> = statement.query_map([table], |row| row.get(0))?.collect::<Result<_, _>>()?;
        if present.is_empty() {
            problems.push(format!("table {table:?} is missing"));
            continue;
        }
        problems.extend(lacking_columns(table, columns, |column| present.iter().any(|name| name == column)));
    }
    if !problems.is_empty() {
        return Err(not_the_apps_tables(&problems, "schema/django.sql"));
    }
    Ok(())
}

/// One tick's read: open, then count the window ending at `now`; stops with an error once
/// `cancel` is set. Blocking; call it off the runtime.
pub(crate) fn read_window(
    path: &Path,
    source: &SourceConfig,
    now: DateTime<Utc>,
    cancel: &Cancel,
) -> anyhow::Result<WindowRead> {
    let started = Instant::now();
    let connection = open(path, source, cancel)?;
    let window_start = now - source.window;
    let bounds = WindowBounds {
        start: django_text(local_clock_minus(now, source.window, source.timezone)),
        future_from: django_timestamp(now + FUTURE_AFTER, source.timezone),
    };
    let counts = read_counts(&connection, &source.tables, &bounds, source.rows_per_read)
        .map_err(|error| describe(error, path, source))
        .with_context(|| format!("reading {} (source.database)", path.display()))?;
    Ok(WindowRead { counts, window_start, duration: started.elapsed() })
}

/// What `check` reports about how the window will be read.
#[derive(Debug)]
pub(crate) struct QueryPlan {
    pub(crate) method: ReadMethod,
    /// Each read's query with SQLite's `EXPLAIN QUERY PLAN` lines for it.
    pub(crate) reads: Vec<(String, Vec<String>)>,
    /// Indexes on the transaction table whose first column is `time_modified`.
    pub(crate) time_indexes: Vec<TimeIndex>,
    pub(crate) n_transactions: i64,
}

pub(crate) fn explain(connection: &Connection, tables: &Tables) -> anyhow::Result<QueryPlan> {
    let method = chosen_method(connection, tables)?;
    let counter = window_count::Counter::register(connection, &WindowBounds::default(), None)?;
    let mut reads = Vec::new();
    for query in read_queries(tables, method) {
        let mut statement = connection.prepare(&format!("EXPLAIN QUERY PLAN {query}"))?;
        let n_parameters = statement.parameter_count();
        let values = ["9999"; 3];
        let steps = statement
            .query_map(rusqlite::params_from_iter(&values[..n_parameters]), |row| row.get::<_, String>(3))?
            .collect::<Result<Vec<_>, _>>()?;
        reads.push((query, steps));
    }
    drop(counter);
    let time_indexes = time_indexes(connection, &tables.transaction)?;
    let n_transactions =
        connection.query_row(&format!("SELECT count(*) FROM {}", quoted(&tables.transaction)), [], |row| row.get(0))?;
    Ok(QueryPlan { method, reads, time_indexes, n_transactions })
}

/// `check`'s report: the database opened, its size, how the window will be read, and a warning
/// when no index leads with `time_modified` (every tick then reads the whole table).
pub(crate) fn check(path: &Path, source: &SourceConfig, cancel: &Cancel) -> anyhow::Result<String> {
    let connection = open(path, source, cancel)?;
    let plan = explain(&connection, &source.tables)
        .map_err(|error| match error.downcast::<rusqlite::Error>() {
            Ok(error) => describe(error, path, source),
            Err(error) => error,
        })
        .with_context(|| format!("explaining the query on {}", path.display()))?;
    let method = match plan.method {
        ReadMethod::ByTime => "by time_modified, through the index",
        ReadMethod::ById => "by id, the whole table",
    };
    let mut report = format!(
        "database {} opened read-only: {} transactions\nreads: {} rows at most each (source.rows_per_read), {method}\n",
        path.display(),
        plan.n_transactions,
        source.rows_per_read
    );
    for (query, steps) in &plan.reads {
        report.push_str(&format!("read query: {query}\nplan:\n"));
        for step in steps {
            report.push_str(&format!("  {step}\n"));
        }
    }
    let best = plan.time_indexes.iter().find(|index| index.covers_window).or(plan.time_indexes.first());
    match best.map(|index| (&index.name, index.covers_window)) {
        None => report.push_str(&format!(
            "warning: no index on {}.time_modified: every tick reads the whole table; \
             add the index in schema/index.sql (/usr/share/doc/apimetrics-agent/index.sql where the package is \
             installed) through a Django migration (see the README)\n",
            source.tables.transaction
        )),
        Some((name, false)) => report.push_str(&format!(
            "warning: index {name} leads with time_modified but lacks api_id and status_id, so every row in the \
             window is still visited; the index in schema/index.sql covers all three\n"
        )),
        Some((name, true)) => report.push_str(&format!("index {name} covers the window query\n")),
    }
    if let Some(hidden) = crate::common::unit_sandbox::hidden_by_the_unit(path) {
        report.push_str(&format!(
            "warning: {}, so `run` under it will not find {}: {}\n",
            hidden.note,
            path.display(),
            hidden.remedy
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_escapes_what_sqlite_would_read_as_query() {
        assert_eq!(read_only_uri(Path::new("/data/a?b#c%d.sqlite3")), "file:/data/a%3fb%23c%25d.sqlite3?mode=ro");
    }
}
