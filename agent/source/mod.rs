//! The Django app's SQLite database, read-only: opening it safely, checking it is the app's,
//! and counting the window's rows by (api_id, status_id) with the names of those ids.
//!
//! The agent never writes here. The connection is opened with `mode=ro` and `query_only`, waits
//! for the app's write lock no longer than `busy_timeout`, and lives only for one tick.

pub mod config;
mod side_files;
mod window_count;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use chrono::{DateTime, Utc};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags};
use rustc_hash::FxHashMap;

use self::config::{SourceConfig, Tables};
use crate::common::django_time::django_timestamp;

/// What one read of the database found, keyed by row ids as stored.
#[derive(Debug, Default, Clone)]
pub struct RawCounts {
    /// `(id, name)` of every row of the API table.
    pub apis: Vec<(i64, String)>,
    /// `(id, name)` of every row of the status table.
    pub statuses: Vec<(i64, String)>,
    /// Transactions in the window by `(api_id, status_id)`.
    pub by_ids: FxHashMap<(i64, i64), u64>,
    /// Rows in the window whose `time_modified` is not a Django timestamp; not counted.
    pub n_rows_bad_timestamp: u64,
}

/// One tick's read of the window ending at a given instant.
#[derive(Debug)]
pub(crate) struct WindowRead {
    pub(crate) counts: RawCounts,
    /// Transactions modified at or after this instant were counted.
    pub(crate) window_start: DateTime<Utc>,
    /// How long opening and reading took.
    pub(crate) duration: Duration,
}

/// The columns the agent reads, by table; anything else in the tables is ignored.
const REQUIRED_COLUMNS: [(&str, &[&str]); 3] =
    [("api", &["id", "name"]), ("status", &["id", "name"]), ("transaction", &["api_id", "status_id", "time_modified"])];

/// Opens the database read-only and checks that it holds the app's tables.
pub(crate) fn open(source: &SourceConfig) -> anyhow::Result<Connection> {
    let path = &source.database;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    side_files::create_missing_for_the_app(path)
        .with_context(|| format!("opening {} (source.database)", path.display()))?;
    let connection = Connection::open_with_flags(read_only_uri(path), flags)
        .map_err(|error| describe(error, source))
        .with_context(|| format!("opening {} (source.database)", path.display()))?;
    connection.busy_timeout(source.busy_timeout)?;
    connection
        .pragma_update(None, "query_only", true)
        .map_err(|error| describe(error, source))
        .with_context(|| format!("opening {} (source.database)", path.display()))?;
    check_tables(&connection, &source.tables)
        .map_err(|error| {
            error.downcast::<rusqlite::Error>().map(|error| describe(error, source)).unwrap_or_else(|error| error)
        })
        .with_context(|| format!("checking {} (source.database)", path.display()))?;
    Ok(connection)
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
fn describe(error: rusqlite::Error, source: &SourceConfig) -> anyhow::Error {
    let extended_code = match &error {
        rusqlite::Error::SqliteFailure(failure, _) => failure.extended_code,
        _ => 0,
    };
    if [rusqlite::ffi::SQLITE_READONLY_CANTINIT, rusqlite::ffi::SQLITE_READONLY_DIRECTORY].contains(&extended_code) {
        return anyhow!(
            "{} is in WAL mode and its shared-memory file ({}-shm) is missing, and this user may not create it: \
             run the agent as the app's user or group, with the database's directory writable to it \
             (no app connection was open; the next one creates the file)",
            source.database.display(),
            source.database.display()
        );
    }
    match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => anyhow!("{} is not a SQLite database", source.database.display()),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => anyhow!(
            "the database stayed locked by a writer for longer than source.busy_timeout ({}): {error}",
            humantime::format_duration(source.busy_timeout)
        ),
        Some(ErrorCode::CannotOpen) => {
            anyhow!(
                "cannot open {}: {error} (does the file exist and may this user read it?)",
                source.database.display()
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
        let missing: Vec<&str> =
            columns.iter().copied().filter(|column| !present.iter().any(|p| p == column)).collect();
        if !missing.is_empty() {
            problems.push(format!("table {table:?} lacks column(s) {}", missing.join(", ")));
        }
    }
    if !problems.is_empty() {
        bail!(
            "{}: is this the Django app's database, migrated? schema/django.sql shows the tables expected \
             (other table names go in source.api_table, source.status_table, source.transaction_table)",
            problems.join("; ")
        );
    }
    Ok(())
}

fn table_name<'a>(tables: &'a Tables, role: &str) -> &'a str {
    match role {
        "api" => &tables.api,
        "status" => &tables.status,
        _ => &tables.transaction,
    }
}

/// SQLite's identifier quoting.
fn quoted(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// The query a tick runs: the window's rows by the cheapest access path, each counted by
/// `window_count`'s function as SQLite reads it.
pub(crate) fn window_query(tables: &Tables) -> String {
    format!(
        "SELECT {}(api_id, status_id, time_modified) FROM {} WHERE time_modified >= ?1",
        window_count::FUNCTION_NAME.to_str().expect("the name is ASCII"),
        quoted(&tables.transaction)
    )
}

/// Reads the API and status names and counts the window's transactions, in one read transaction.
pub fn read_counts(connection: &Connection, tables: &Tables, window_start: &str) -> rusqlite::Result<RawCounts> {
    let transaction = connection.unchecked_transaction()?;
    let apis = read_names(connection, &tables.api)?;
    let statuses = read_names(connection, &tables.status)?;
    let counts = window_count::count_window(connection, &window_query(tables), window_start)?;
    transaction.finish()?;
    let n_rows_bad_timestamp = counts.n_rows_bad_timestamp;
    Ok(RawCounts { apis, statuses, by_ids: counts.into_by_ids(), n_rows_bad_timestamp })
}

fn read_names(connection: &Connection, table: &str) -> rusqlite::Result<Vec<(i64, String)>> {
    let mut statement = connection.prepare(&format!("SELECT id, name FROM {}", quoted(table)))?;
    let rows = statement.query_map([], |row| {
        let name = match row.get_ref(1)? {
            ValueRef::Text(text) | ValueRef::Blob(text) => String::from_utf8_lossy(text).into_owned(),
            ValueRef::Null => String::new(),
            ValueRef::Integer(number) => number.to_string(),
            ValueRef::Real(number) => number.to_string(),
        };
        Ok((row.get::<_, i64>(0)?, name))
    })?;
    rows.collect()
}

/// One tick's read: open, then count the window ending at `now`. Blocking; call it off the runtime.
pub(crate) fn read_window(source: &SourceConfig, now: DateTime<Utc>) -> anyhow::Result<WindowRead> {
    let started = Instant::now();
    let connection = open(source)?;
    let window_start = now - source.window;
    let bound = django_timestamp(window_start, source.timezone);
    let counts = read_counts(&connection, &source.tables, &bound)
        .map_err(|error| describe(error, source))
        .with_context(|| format!("reading {} (source.database)", source.database.display()))?;
    Ok(WindowRead { counts, window_start, duration: started.elapsed() })
}

/// What `check` reports about how the window will be read.
#[derive(Debug)]
pub(crate) struct QueryPlan {
    /// SQLite's `EXPLAIN QUERY PLAN` lines for the window query.
    pub(crate) steps: Vec<String>,
    /// Indexes on the transaction table whose first column is `time_modified`.
    pub(crate) time_indexes: Vec<TimeIndex>,
    pub(crate) n_transactions: i64,
}

/// An index that leads with `time_modified`.
#[derive(Debug)]
pub(crate) struct TimeIndex {
    pub(crate) name: String,
    /// Whether it also holds `api_id` and `status_id`, so the rows need not be visited.
    pub(crate) covers_window: bool,
}

pub(crate) fn explain(connection: &Connection, tables: &Tables) -> anyhow::Result<QueryPlan> {
    let sql = format!("EXPLAIN QUERY PLAN {}", window_query(tables));
    let (steps, _) = window_count::with_function(connection, || {
        let mut statement = connection.prepare(&sql)?;
        statement.query_map(["9999"], |row| row.get::<_, String>(3))?.collect::<Result<Vec<_>, _>>()
    })?;
    let mut time_indexes = Vec::new();
    let mut list = connection.prepare("SELECT name FROM pragma_index_list(?1)")?;
    let index_names: Vec<String> =
        list.query_map([&tables.transaction], |row| row.get(0))?.collect::<Result<_, _>>()?;
    for index in index_names {
        let mut info = connection.prepare("SELECT name FROM pragma_index_info(?1) ORDER BY seqno")?;
        let columns: Vec<Option<String>> = info.query_map([&index], |row| row.get(0))?.collect::<Result<_, _>>()?;
        if columns.first().and_then(|column| column.as_deref()) == Some("time_modified") {
            let covers_window =
                ["api_id", "status_id"].iter().all(|needed| columns.iter().flatten().any(|c| c == needed));
            time_indexes.push(TimeIndex { name: index, covers_window });
        }
    }
    let n_transactions =
        connection.query_row(&format!("SELECT count(*) FROM {}", quoted(&tables.transaction)), [], |row| row.get(0))?;
    Ok(QueryPlan { steps, time_indexes, n_transactions })
}

/// `check`'s report: the database opened, its size, how the window will be read, and a warning
/// when no index leads with `time_modified` (every tick then reads the whole table).
pub fn check(source: &SourceConfig) -> anyhow::Result<String> {
    let connection = open(source)?;
    let plan = explain(&connection, &source.tables)
        .map_err(|error| match error.downcast::<rusqlite::Error>() {
            Ok(error) => describe(error, source),
            Err(error) => error,
        })
        .with_context(|| format!("explaining the query on {}", source.database.display()))?;
    let mut report = format!(
        "database {} opened read-only: {} transactions\nwindow query: {}\nplan:\n",
        source.database.display(),
        plan.n_transactions,
        window_query(&source.tables)
    );
    for step in &plan.steps {
        report.push_str(&format!("  {step}\n"));
    }
    let best = plan.time_indexes.iter().find(|index| index.covers_window).or(plan.time_indexes.first());
    match best.map(|index| (&index.name, index.covers_window)) {
        None => report.push_str(&format!(
            "warning: no index on {}.time_modified: every tick reads the whole table; \
             add the index in schema/index.sql through a Django migration (see the README)\n",
            source.tables.transaction
        )),
        Some((name, false)) => report.push_str(&format!(
            "warning: index {name} leads with time_modified but lacks api_id and status_id, so every row in the \
             window is still visited; the index in schema/index.sql covers all three\n"
        )),
        Some((name, true)) => report.push_str(&format!("index {name} covers the window query\n")),
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
