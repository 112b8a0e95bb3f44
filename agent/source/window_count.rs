//! Counting the window's rows inside SQLite's own scan. An aggregate SQL function sees each row
//! as SQLite reads it, so no row crosses back to Rust through a result set and nothing is
//! sorted. It runs five million times a tick on a large site, so it is written against SQLite's
//! C API: rusqlite's safe aggregate wrapper cost about a tenth of the tick (README, benchmark).
//! One `Counter` gathers the counts of many short reads, each its own statement.

use std::ffi::{CStr, c_int};
use std::ops::RangeInclusive;
use std::slice;

use rusqlite::{Connection, ffi};
use rustc_hash::FxHashMap;

use crate::common::django_time::is_django_timestamp;

/// The SQL name of the counting function; its arguments are `(id, api_id, status_id, time_modified)`.
pub(crate) const FUNCTION_NAME: &CStr = c"apimetrics_count_window";

/// What the function counted over every read of one tick.
#[derive(Debug)]
pub(crate) struct WindowCounts {
    /// Counts for ids in `0..DENSE_IDS`, the usual case, at `api_id * DENSE_IDS + status_id`.
    dense: Vec<u64>,
    /// Counts for any other pair of ids.
    sparse: FxHashMap<(i64, i64), u64>,
    /// Rows whose `time_modified` is not a Django timestamp; not counted in any pair.
    pub(crate) n_rows_bad_timestamp: u64,
    /// Rows counted whose `time_modified` is at or after `future_from`: still counted, as Django
    /// counts them, but a sign that the app's clock runs ahead.
    pub(crate) n_rows_in_future: u64,
    /// Where the window and "the future" start, as Django's timestamp text.
    window_start: Vec<u8>,
    future_from: Vec<u8>,
    /// The ids handed over so far, for reads that may meet a row twice; `None` when they cannot.
    seen: Option<SeenIds>,
    /// How many more rows the statement under way may count before it is stopped, and where it
    /// stopped: the last counted row's `time_modified`, as stored.
    budget: u64,
    stopped_at: Option<StoppedAt>,
}

/// The `time_modified` of the last row a stopped read counted, as stored: text (not always
/// UTF-8) or a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoppedAt {
    pub(crate) is_blob: bool,
    pub(crate) bytes: Vec<u8>,
}

/// Text below this sorts before every year, so Django's query never counts it; numbers sort
/// before all text. (Not "0": the column's numeric affinity would make that the number 0.)
pub(crate) const BEFORE_ANY_YEAR: &str = "0-";

/// The instants a tick reads by, as Django's timestamp text in the app's time zone.
#[derive(Debug, Clone, Default)]
pub struct WindowBounds {
    /// Rows modified at or after this are in the window.
    pub start: String,
    /// Rows modified at or after this are counted as in the future too.
    pub future_from: String,
}

/// A set of the row ids from the smallest to the largest at the tick's start, one bit each. A
/// row the app inserts during the tick has a larger id and is left to the next tick.
#[derive(Debug)]
struct SeenIds {
    min_id: i64,
    words: Vec<u64>,
}

impl SeenIds {
    fn new(ids: RangeInclusive<i64>) -> SeenIds {
        let n_ids = ids.end().saturating_sub(*ids.start()).max(0) as usize;
        SeenIds { min_id: *ids.start(), words: vec![0; n_ids / 64 + 1] }
    }

    /// Adds `id`; false when it was there already or lies outside the set.
    fn insert(&mut self, id: i64) -> bool {
        let Some(id) = id.checked_sub(self.min_id).and_then(|offset| usize::try_from(offset).ok()) else {
            return false;
        };
        let Some(word) = self.words.get_mut(id / 64) else { return false };
        let bit = 1u64 << (id % 64);
        let new = *word & bit == 0;
        *word |= bit;
        new
    }
}

/// Ids below this are counted in a flat array (32 KiB) rather than a hash map.
const DENSE_IDS: i64 = 64;

/// Stands for an id that is not an integer (or is NULL, on any backend): it names no row, so the
/// pair counts as orphaned.
pub(crate) const NOT_AN_ID: i64 = i64::MIN;

impl WindowCounts {
    fn new(window: &WindowBounds, seen_ids: Option<RangeInclusive<i64>>) -> WindowCounts {
        WindowCounts {
            dense: vec![0; (DENSE_IDS * DENSE_IDS) as usize],
            sparse: FxHashMap::default(),
            n_rows_bad_timestamp: 0,
            n_rows_in_future: 0,
            window_start: window.start.as_bytes().to_vec(),
            future_from: window.future_from.as_bytes().to_vec(),
            seen: seen_ids.map(SeenIds::new),
            budget: u64::MAX,
            stopped_at: None,
        }
    }

    fn add(&mut self, api_id: i64, status_id: i64) {
        if (0..DENSE_IDS).contains(&api_id) && (0..DENSE_IDS).contains(&status_id) {
            self.dense[(api_id * DENSE_IDS + status_id) as usize] += 1;
        } else {
            *self.sparse.entry((api_id, status_id)).or_insert(0) += 1;
        }
    }

    /// The counts by `(api_id, status_id)`, pairs with no rows left out.
    pub(crate) fn into_by_ids(self) -> FxHashMap<(i64, i64), u64> {
        let mut by_ids = self.sparse;
        for (position, &count) in self.dense.iter().enumerate().filter(|(_, count)| **count > 0) {
            by_ids.insert((position as i64 / DENSE_IDS, position as i64 % DENSE_IDS), count);
        }
        by_ids
    }
}

/// The counting function registered on a connection over one tick's `WindowCounts`, for as many
/// reads as the tick makes. Dropping it unregisters the function.
pub(crate) struct Counter<'c> {
    connection: &'c Connection,
    counts: *mut WindowCounts,
}

impl<'c> Counter<'c> {
    /// Registers the function over `window`; with `seen_ids`, each row id in it is counted at
    /// most once over all the reads and other ids not at all.
    pub(crate) fn register(
        connection: &'c Connection,
        window: &WindowBounds,
        seen_ids: Option<RangeInclusive<i64>>,
    ) -> rusqlite::Result<Counter<'c>> {
        let counts = Box::into_raw(Box::new(WindowCounts::new(window, seen_ids)));
        let counter = Counter { connection, counts };
        register(connection, Some(counts))?;
        Ok(counter)
    }

    /// Runs one read: `statement`, which calls the function as an aggregate, with `params`.
    /// Runs one read that counts at most `max_new_rows` rows it had not met before and stops
    /// there (its read transaction ends with it); returns where, or `None` when it ran out of
    /// rows first. Only for reads in `time_modified` order over a counter with `seen_ids`.
    pub(crate) fn read_up_to(
        &mut self,
        statement: &mut rusqlite::Statement<'_>,
        params: impl rusqlite::Params,
        max_new_rows: u64,
    ) -> rusqlite::Result<Option<StoppedAt>> {
        // SAFETY: no statement runs now, so nothing else touches the counts.
        unsafe { (*self.counts).budget = max_new_rows.max(1) };
        let outcome = statement.query_row(params, |_| Ok(()));
        // SAFETY: the statement has ended.
        let counts = unsafe { &mut *self.counts };
        counts.budget = u64::MAX;
        match (outcome, counts.stopped_at.take()) {
            (_, Some(stopped_at)) => Ok(Some(stopped_at)),
            (Ok(()), None) => Ok(None),
            (Err(error), None) => Err(error),
        }
    }

    pub(crate) fn read(
        &mut self,
        statement: &mut rusqlite::Statement<'_>,
        params: impl rusqlite::Params,
    ) -> rusqlite::Result<()> {
        statement.query_row(params, |_| Ok(()))
    }

    /// The counts of every read.
    pub(crate) fn finish(self) -> rusqlite::Result<WindowCounts> {
        register(self.connection, None)?;
        // SAFETY: the function is gone, so this is again the pointer's only owner; forgetting
        // `self` keeps `Drop` from touching it again.
        let counts = unsafe { Box::from_raw(self.counts) };
        std::mem::forget(self);
        Ok(*counts)
    }
}

impl Drop for Counter<'_> {
    fn drop(&mut self) {
        // If the function cannot be removed, it could still reach the counts: leaking them is the
        // only safe choice.
        if register(self.connection, None).is_ok() {
            // SAFETY: the function is gone, so this is the pointer's only owner.
            drop(unsafe { Box::from_raw(self.counts) });
        }
    }
}

/// Registers the function over `counts`, or with `None` removes it (SQLite deletes a function
/// registered with no callbacks).
fn register(connection: &Connection, counts: Option<*mut WindowCounts>) -> rusqlite::Result<()> {
    let (user_data, step, finish): (_, Option<StepFn>, Option<FinalFn>) = match counts {
        Some(counts) => (counts.cast(), Some(step), Some(finish)),
        None => (std::ptr::null_mut(), None, None),
    };
    // SAFETY: the handle is live for the call; the name is NUL-terminated; `user_data` outlives
    // the registration (a `Counter` frees it only after removing the function).
    let code = unsafe {
        ffi::sqlite3_create_function_v2(
            connection.handle(),
            FUNCTION_NAME.as_ptr(),
            4,
            ffi::SQLITE_UTF8 | ffi::SQLITE_DETERMINISTIC | ffi::SQLITE_DIRECTONLY,
            user_data,
            None,
            step,
            finish,
            None,
        )
    };
    if code == ffi::SQLITE_OK { Ok(()) } else { Err(rusqlite::Error::SqliteFailure(ffi::Error::new(code), None)) }
}

type StepFn = unsafe extern "C" fn(*mut ffi::sqlite3_context, c_int, *mut *mut ffi::sqlite3_value);
type FinalFn = unsafe extern "C" fn(*mut ffi::sqlite3_context);

unsafe extern "C" fn step(context: *mut ffi::sqlite3_context, n_args: c_int, args: *mut *mut ffi::sqlite3_value) {
    // SAFETY: SQLite hands back the user data given in `register`, a live `WindowCounts` that no
    // one else touches while the query runs, and `n_args` valid values.
    let (counts, args) = unsafe {
        (&mut *ffi::sqlite3_user_data(context).cast::<WindowCounts>(), slice::from_raw_parts(args, n_args as usize))
    };
    let &[id, api_id, status_id, time_modified] = args else { return };
    // SAFETY: the value is valid for this call.
    if let Some(seen) = &mut counts.seen
        && !seen.insert(unsafe { integer(id) })
    {
        return;
    }
    counts.budget -= 1;
    if counts.budget == 0 {
        // The read has counted its share: record where, and stop the statement (an error from
        // a step ends it) once this row is counted below.
        // SAFETY: the value is valid for this call; a blob or text is read before its length.
        let stopped_at = unsafe {
            let is_blob = ffi::sqlite3_value_type(time_modified) == ffi::SQLITE_BLOB;
            let bytes = if is_blob {
                ffi::sqlite3_value_blob(time_modified).cast()
            } else {
                ffi::sqlite3_value_text(time_modified)
            };
            let bytes = if bytes.is_null() {
                Vec::new()
            } else {
                slice::from_raw_parts(bytes, ffi::sqlite3_value_bytes(time_modified) as usize).to_vec()
            };
            StoppedAt { is_blob, bytes }
        };
        counts.stopped_at = Some(stopped_at);
        // SAFETY: the context is valid for this call; the message is NUL-terminated.
        unsafe { ffi::sqlite3_result_error(context, c"the read counted its share of rows".as_ptr(), -1) };
    }
    // SAFETY: the value is valid for this call; a blob or text is read before its length, as
    // SQLite asks.
    let (kind, bytes) = unsafe {
        let kind = ffi::sqlite3_value_type(time_modified);
        let bytes = match kind {
            ffi::SQLITE_TEXT => ffi::sqlite3_value_text(time_modified),
            ffi::SQLITE_BLOB => ffi::sqlite3_value_blob(time_modified).cast(),
            _ => std::ptr::null(),
        };
        let bytes = if bytes.is_null() {
            &[][..]
        } else {
            slice::from_raw_parts(bytes, ffi::sqlite3_value_bytes(time_modified) as usize)
        };
        (kind, bytes)
    };
    // As Django's text comparison places it: numbers before all text, blobs after it.
    let in_window = match kind {
        ffi::SQLITE_TEXT if bytes >= counts.window_start.as_slice() => true,
        ffi::SQLITE_TEXT if bytes >= BEFORE_ANY_YEAR.as_bytes() => return,
        ffi::SQLITE_BLOB => true,
        _ => false,
    };
    if in_window && is_django_timestamp(bytes) {
        if bytes >= counts.future_from.as_slice() {
            counts.n_rows_in_future += 1;
        }
        // SAFETY: both values are valid for this call.
        unsafe { counts.add(integer(api_id), integer(status_id)) }
    } else {
        counts.n_rows_bad_timestamp += 1;
    }
}

/// The value as an id, or `NOT_AN_ID` when it is not an integer.
unsafe fn integer(value: *mut ffi::sqlite3_value) -> i64 {
    // SAFETY: the caller passes a value valid for this call.
    unsafe {
        if ffi::sqlite3_value_type(value) == ffi::SQLITE_INTEGER { ffi::sqlite3_value_int64(value) } else { NOT_AN_ID }
    }
}

unsafe extern "C" fn finish(context: *mut ffi::sqlite3_context) {
    // SAFETY: the context is valid for this call.
    unsafe { ffi::sqlite3_result_null(context) }
}
