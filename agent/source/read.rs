//! Counting the window in short reads, each its own read transaction, so that an app write never
//! waits on the agent for longer than one of them, whatever the table's size.
//!
//! Two ways, chosen per tick:
//! - **By time** (an index leads with `time_modified`): the window in `time_modified` order; the
//!   counting function stops a read once it has counted `rows_per_read` rows it had not met, and
//!   the next starts at the last one's timestamp. A row the app modifies during the tick moves
//!   forward and may be met again: the ids already counted are kept (one bit per id from the
//!   smallest to the largest at the tick's start), so it counts once, in the state the first
//!   read saw. A row that moves from ahead of the reads to behind them (an app clock
//!   that went back) is left to the next tick.
//! - **By id** (no such index, or ids too sparse to keep a bit each): `rows_per_read` ids a
//!   read, in id order. Ids do not move, so each row is read once, in the state it had when its
//!   read came.
//!
//! Either way, a row that did not change during the tick is counted exactly once; a row that
//! did is counted at most once, in a state it really had; rows the app inserts during the tick
//! (ids above the largest at its start) are left to the next tick.

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql, params};
use rustc_hash::FxHashMap;

use super::config::Tables;
use super::window_count::{BEFORE_ANY_YEAR, Counter, FUNCTION_NAME, WindowBounds};

/// What one tick's reads found, keyed by row ids as stored.
#[derive(Debug, Default, Clone)]
pub struct RawCounts {
    /// `(id, name)` of every row of the API table.
    pub apis: Vec<(i64, String)>,
    /// `(id, name)` of every row of the status table.
    pub statuses: Vec<(i64, String)>,
    /// Transactions in the window by `(api_id, status_id)`.
    pub by_ids: FxHashMap<(i64, i64), u64>,
    /// Rows whose `time_modified` is not a Django timestamp and which Django's query cannot
    /// place (a number, text sorting before any year, or malformed text at or after the
    /// window's start); not counted.
    pub n_rows_bad_timestamp: u64,
    /// Rows counted whose `time_modified` lies in the future.
    pub n_rows_in_future: u64,
}

/// Over this many ids from the smallest to the largest, a read by time would need too large a set
/// of ids seen (32 MiB): read by id.
const MAX_IDS_SEEN: i64 = 1 << 28;

/// How a tick reads the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadMethod {
    ByTime,
    ById,
}

/// The ids in the table when the tick starts.
#[derive(Debug, Clone, Copy)]
struct IdRange {
    min: i64,
    max: i64,
}

/// Reads the names and counts the window, `rows_per_read` rows at most per read transaction.
pub fn read_counts(
    connection: &Connection,
    tables: &Tables,
    bounds: &WindowBounds,
    rows_per_read: u64,
) -> rusqlite::Result<RawCounts> {
    let table = quoted(&tables.transaction);
    // One short read for what every later read is measured against.
    let transaction = connection.unchecked_transaction()?;
    let apis = read_names(connection, &tables.api)?;
    let statuses = read_names(connection, &tables.status)?;
    let ids = id_range(connection, &table)?;
    let method = read_method(connection, tables, ids)?;
    transaction.finish()?;

    let Some(ids) = ids else {
        return Ok(RawCounts { apis, statuses, ..RawCounts::default() });
    };
    let rows_per_read = rows_per_read.clamp(1, i64::MAX as u64) as i64;
    let seen_ids = (method == ReadMethod::ByTime).then_some(ids.min..=ids.max);
    let mut counter = Counter::register(connection, bounds, seen_ids)?;
    match method {
        ReadMethod::ByTime => read_by_time(connection, &mut counter, &table, bounds, rows_per_read)?,
        ReadMethod::ById => read_by_id(connection, &mut counter, &table, ids, rows_per_read)?,
    }
    let counts = counter.finish()?;
    Ok(RawCounts {
        apis,
        statuses,
        n_rows_bad_timestamp: counts.n_rows_bad_timestamp,
        n_rows_in_future: counts.n_rows_in_future,
        by_ids: counts.into_by_ids(),
    })
}

/// How a tick would read the window now.
pub(crate) fn chosen_method(connection: &Connection, tables: &Tables) -> rusqlite::Result<ReadMethod> {
    read_method(connection, tables, id_range(connection, &quoted(&tables.transaction))?)
}

/// The smallest and largest id in `table`; `None` when it is empty.
fn id_range(connection: &Connection, table: &str) -> rusqlite::Result<Option<IdRange>> {
    // Two subqueries: SQLite finds a lone min() or max() in the index at once, but scans the
    // whole table for both in one SELECT.
    connection.query_row(&format!("SELECT (SELECT min(id) FROM {table}), (SELECT max(id) FROM {table})"), [], |row| {
        Ok(row.get::<_, Option<i64>>(0)?.zip(row.get::<_, Option<i64>>(1)?).map(|(min, max)| IdRange { min, max }))
    })
}

/// By time where an index leads with `time_modified` and the ids fit the set of ids seen.
fn read_method(connection: &Connection, tables: &Tables, ids: Option<IdRange>) -> rusqlite::Result<ReadMethod> {
    let fits = ids.is_none_or(|ids| ids.max.checked_sub(ids.min).is_some_and(|span| span < MAX_IDS_SEEN));
    let indexed = !time_indexes(connection, &tables.transaction)?.is_empty();
    Ok(if indexed && fits { ReadMethod::ByTime } else { ReadMethod::ById })
}

/// The queries a tick runs for `method`, for `check` to explain: each read's, with `?` for the
/// values bound.
pub(crate) fn read_queries(tables: &Tables, method: ReadMethod) -> Vec<String> {
    let table = quoted(&tables.transaction);
    match method {
        ReadMethod::ByTime => vec![before_any_year_query(&table), time_from_query(&table)],
        ReadMethod::ById => vec![id_range_query(&table)],
    }
}

fn counted_columns() -> String {
    format!("{}(id, api_id, status_id, time_modified)", FUNCTION_NAME.to_str().expect("the name is ASCII"))
}

fn before_any_year_query(table: &str) -> String {
    format!("SELECT {} FROM {table} WHERE time_modified < '{BEFORE_ANY_YEAR}'", counted_columns())
}

/// The window from `?1` on, in `time_modified` order: the counting function stops it.
fn time_from_query(table: &str) -> String {
    format!("SELECT {} FROM {table} WHERE time_modified >= ?1", counted_columns())
}

/// Every row of an id range: the counting function places each one in or out of the window
/// itself, which costs less than SQLite's comparisons under the column's numeric affinity.
fn id_range_query(table: &str) -> String {
    format!("SELECT {} FROM {table} WHERE id >= ?1 AND id <= ?2", counted_columns())
}

/// A `time_modified` as stored, bound back byte for byte (text need not be UTF-8 to sort).
#[derive(Debug, Clone)]
enum StoredTime {
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

impl ToSql for StoredTime {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            StoredTime::Text(bytes) => ValueRef::Text(bytes),
            StoredTime::Blob(bytes) => ValueRef::Blob(bytes),
        }))
    }
}

fn read_by_time(
    connection: &Connection,
    counter: &mut Counter<'_>,
    table: &str,
    bounds: &WindowBounds,
    rows_per_read: i64,
) -> rusqlite::Result<()> {
    counter.read(&mut connection.prepare(&before_any_year_query(table))?, [])?;
    let mut from = connection.prepare(&time_from_query(table))?;
    let mut start = StoredTime::Text(bounds.start.clone().into_bytes());
    // Each read counts `rows_per_read` rows it had not met and is stopped there; the next starts
    // at the last one's timestamp (the rows met again there are known by id and skipped).
    while let Some(stopped_at) = counter.read_up_to(&mut from, [&start], rows_per_read as u64)? {
        start =
            if stopped_at.is_blob { StoredTime::Blob(stopped_at.bytes) } else { StoredTime::Text(stopped_at.bytes) };
    }
    Ok(())
}

fn read_by_id(
    connection: &Connection,
    counter: &mut Counter<'_>,
    table: &str,
    ids: IdRange,
    rows_per_read: i64,
) -> rusqlite::Result<()> {
    let mut range = connection.prepare(&id_range_query(table))?;
    let mut next_id = connection.prepare(&format!("SELECT min(id) FROM {table} WHERE id > ?1 AND id <= ?2"))?;
    // Each read takes the next `rows_per_read` ids from the first that exists, so gaps in the
    // ids cost one lookup, not one read per `rows_per_read` missing ids.
    let mut next = Some(ids.min);
    while let Some(first) = next {
        let last = first.saturating_add(rows_per_read - 1).min(ids.max);
        counter.read(&mut range, params![first, last])?;
        next = if last >= ids.max { None } else { next_id.query_row([last, ids.max], |row| row.get(0))? };
    }
    Ok(())
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

/// An index that leads with `time_modified`.
#[derive(Debug)]
pub(crate) struct TimeIndex {
    pub(crate) name: String,
    /// Whether it also holds `api_id` and `status_id`, so the rows need not be visited.
    pub(crate) covers_window: bool,
}

/// The indexes on `table` whose first column is `time_modified`, in SQLite's own order (BINARY
/// collation), and over every row: a partial index or another collation cannot serve the window.
pub(crate) fn time_indexes(connection: &Connection, table: &str) -> rusqlite::Result<Vec<TimeIndex>> {
    let mut list = connection.prepare_cached("SELECT name FROM pragma_index_list(?1) WHERE partial = 0")?;
    let index_names: Vec<String> = list.query_map([table], |row| row.get(0))?.collect::<Result<_, _>>()?;
    let mut time_indexes = Vec::new();
    for index in index_names {
        let mut info =
            connection.prepare_cached("SELECT name, coll FROM pragma_index_xinfo(?1) WHERE key = 1 ORDER BY seqno")?;
        let columns: Vec<(Option<String>, Option<String>)> =
            info.query_map([&index], |row| Ok((row.get(0)?, row.get(1)?)))?.collect::<Result<_, _>>()?;
        let binary = columns.first().and_then(|(_, collation)| collation.as_deref()) == Some("BINARY");
        let columns: Vec<Option<String>> = columns.into_iter().map(|(column, _)| column).collect();
        if binary && columns.first().and_then(|column| column.as_deref()) == Some("time_modified") {
            let covers_window =
                ["api_id", "status_id"].iter().all(|needed| columns.iter().flatten().any(|c| c == needed));
            time_indexes.push(TimeIndex { name: index, covers_window });
        }
    }
    Ok(time_indexes)
}

/// SQLite's identifier quoting.
pub(crate) fn quoted(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}
