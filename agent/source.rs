//! The Django app's SQLite database, read-only: opening it safely, checking it is the app's,
//! and streaming the window's rows into counts by (api_id, status_id).
//!
//! The agent never writes here. The connection is opened with `mode=ro` and `query_only`, waits
//! for the app's write lock no longer than `busy_timeout`, and lives only for one tick.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::config::{SourceConfig, Tables};
use crate::snapshot::{RawCounts, Snapshot};
use crate::window_count;

/// The columns the agent reads, by table; anything else in the tables is ignored.
const REQUIRED_COLUMNS: [(&str, &[&str]); 3] =
    [("api", &["id", "name"]), ("status", &["id", "name"]), ("transaction", &["api_id", "status_id", "time_modified"])];

/// Opens the database read-only and checks that it holds the app's tables.
pub fn open(source: &SourceConfig) -> anyhow::Result<Connection> {
    let path = &source.database;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
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
pub fn window_query(tables: &Tables) -> String {
    format!(
        "SELECT {}(api_id, status_id, time_modified) FROM {} WHERE time_modified >= ?1",
        window_count::FUNCTION_NAME.to_str().expect("the name is ASCII"),
        quoted(&tables.transaction)
    )
}

/// The text Django's SQLite backend would bind for `instant` seen in `timezone`:
/// `YYYY-MM-DD HH:MM:SS[.ffffff]`, the fraction left out when it is zero. Comparing stored text
/// against it is exactly what `filter(time_modified__gte=...)` does.
pub fn django_timestamp(instant: DateTime<Utc>, timezone: Tz) -> String {
    let local = instant.with_timezone(&timezone).naive_local();
    let micros = local.and_utc().timestamp_subsec_micros();
    if micros == 0 {
        local.format("%Y-%m-%d %H:%M:%S").to_string()
    } else {
        format!("{}.{micros:06}", local.format("%Y-%m-%d %H:%M:%S"))
    }
}

/// Whether `text` is a timestamp as Django stores it: `YYYY-MM-DD HH:MM:SS` with an optional
/// fraction of one to six digits. It runs once per row in the window, so the 19-byte prefix is
/// checked eight bytes at a time.
pub fn is_django_timestamp(text: &[u8]) -> bool {
    if text.len() < 19 || text.len() == 20 || text.len() > 26 {
        return false;
    }
    let word = |start: usize| u64::from_le_bytes(text[start..start + 8].try_into().expect("eight bytes"));
    // Bytes 0..8 "YYYY-MM-", 8..16 "DD HH:MM", 11..19 "HH:MM:SS": digits where the pattern has
    // 0x80, the given separator elsewhere.
    let prefix_ok = shaped_like(word(0), u64::from_le_bytes(*b"\x80\x80\x80\x80-\x80\x80-"))
        && shaped_like(word(8), u64::from_le_bytes(*b"\x80\x80 \x80\x80:\x80\x80"))
        && shaped_like(word(11), u64::from_le_bytes(*b"\x80\x80:\x80\x80:\x80\x80"));
    prefix_ok && (text.len() == 19 || (text[19] == b'.' && text[20..].iter().all(u8::is_ascii_digit)))
}

/// Whether each byte of `word` is an ASCII digit where `pattern` has 0x80, and equals `pattern`'s
/// byte elsewhere.
fn shaped_like(word: u64, pattern: u64) -> bool {
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    let digit_positions = pattern & HIGH_BITS;
    let digit_ones = digit_positions >> 7; // 0x01 in every digit position
    let digit_mask = digit_ones * 0xff;
    let separators_ok = (word & !digit_mask) == (pattern & !digit_mask);
    // A byte b is a digit when x = b ^ 0x30 is below 10: neither x nor x + 0x76 has its high bit
    // (and a carry out of a byte happens only when x already has it).
    let x = (word ^ 0x3030_3030_3030_3030) & digit_mask;
    let digits_ok = ((x.wrapping_add(digit_ones * 0x76) | x) & digit_positions) == 0;
    separators_ok && digits_ok
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

/// One tick's read: open, read the window ending at `now`, aggregate. Blocking; call it off the runtime.
pub fn take_snapshot(source: &SourceConfig, zero_fill: bool, now: DateTime<Utc>) -> anyhow::Result<Snapshot> {
    let started = Instant::now();
    let connection = open(source)?;
    let window_start = now - source.window;
    let bound = django_timestamp(window_start, source.timezone);
    let raw = read_counts(&connection, &source.tables, &bound)
        .map_err(|error| describe(error, source))
        .with_context(|| format!("reading {} (source.database)", source.database.display()))?;
    Ok(Snapshot::from_counts(&raw, zero_fill, now, window_start, started.elapsed()))
}

/// What `check` reports about how the window will be read.
#[derive(Debug)]
pub struct QueryPlan {
    /// SQLite's `EXPLAIN QUERY PLAN` lines for the window query.
    pub steps: Vec<String>,
    /// Indexes on the transaction table whose first column is `time_modified`, with whether
    /// they also hold `api_id` and `status_id` (so the rows need not be visited).
    pub time_indexes: Vec<(String, bool)>,
    pub n_transactions: i64,
}

pub fn explain(connection: &Connection, tables: &Tables) -> anyhow::Result<QueryPlan> {
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
            let covers = ["api_id", "status_id"].iter().all(|needed| columns.iter().flatten().any(|c| c == needed));
            time_indexes.push((index, covers));
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
    match plan.time_indexes.iter().find(|(_, covers)| *covers).or(plan.time_indexes.first()) {
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
    use chrono::TimeZone;

    #[test]
    fn window_bound_is_formatted_as_django_binds_it() {
        let whole = Utc.with_ymd_and_hms(2026, 11, 23, 9, 5, 7).unwrap();
        assert_eq!(django_timestamp(whole, Tz::UTC), "2026-11-23 09:05:07");
        let fraction = whole + chrono::Duration::microseconds(120);
        assert_eq!(django_timestamp(fraction, Tz::UTC), "2026-11-23 09:05:07.000120");
        let nanos = whole + chrono::Duration::nanoseconds(1_500);
        assert_eq!(django_timestamp(nanos, Tz::UTC), "2026-11-23 09:05:07.000001");
        assert_eq!(django_timestamp(whole, chrono_tz::Africa::Nairobi), "2026-11-23 12:05:07");
    }

    #[test]
    fn django_timestamps_are_recognised_and_others_are_not() {
        for good in ["2026-11-23 09:05:07", "2026-11-23 09:05:07.1", "2026-11-23 09:05:07.123456"] {
            assert!(is_django_timestamp(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            "garbage",
            "2026-11-23T09:05:07",
            "2026-11-23 09:05:07.",
            "2026-11-23 09:05:07.1234567",
            "2026-11-23 09:05:07+00:00",
            "2026-11-23 9:05:07",
            "20x6-11-23 09:05:07",
        ] {
            assert!(!is_django_timestamp(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn the_word_at_a_time_check_agrees_with_the_plain_one_on_every_byte() {
        fn plain(text: &[u8]) -> bool {
            let shape = b"0000-00-00 00:00:00";
            (text.len() == 19 || (21..=26).contains(&text.len()))
                && shape.iter().zip(text).all(|(&s, &b)| if s == b'0' { b.is_ascii_digit() } else { b == s })
                && (text.len() == 19 || (text[19] == b'.' && text[20..].iter().all(u8::is_ascii_digit)))
        }
        let base = b"2026-11-23 09:05:07.123456".to_vec();
        for length in [19, 21, 26] {
            for position in 0..length {
                for byte in 0..=255u8 {
                    let mut text = base[..length].to_vec();
                    text[position] = byte;
                    assert_eq!(is_django_timestamp(&text), plain(&text), "{:?}", String::from_utf8_lossy(&text));
                }
            }
        }
    }

    #[test]
    fn uri_escapes_what_sqlite_would_read_as_query() {
        assert_eq!(read_only_uri(Path::new("/data/a?b#c%d.sqlite3")), "file:/data/a%3fb%23c%25d.sqlite3?mode=ro");
    }
}
