//! Counting the window's rows inside SQLite's own scan. An aggregate SQL function sees each row
//! as SQLite reads it, so no row crosses back to Rust through a result set and nothing is
//! sorted. It runs five million times a tick on a large site, so it is written against SQLite's
//! C API: rusqlite's safe aggregate wrapper cost about a tenth of the tick (README, benchmark).

use std::ffi::{CStr, c_int};
use std::slice;

use rusqlite::{Connection, ffi};
use rustc_hash::FxHashMap;

use crate::common::django_time::is_django_timestamp;

/// The SQL name of the counting function; its arguments are `(api_id, status_id, time_modified)`.
pub(crate) const FUNCTION_NAME: &CStr = c"apimetrics_count_window";

/// What the function counted over one query.
#[derive(Debug)]
pub(crate) struct WindowCounts {
    /// Counts for ids in `0..DENSE_IDS`, the usual case, at `api_id * DENSE_IDS + status_id`.
    dense: Vec<u64>,
    /// Counts for any other pair of ids.
    sparse: FxHashMap<(i64, i64), u64>,
    /// Rows whose `time_modified` is not a Django timestamp; not counted in any pair.
    pub(crate) n_rows_bad_timestamp: u64,
}

/// Ids below this are counted in a flat array (32 KiB) rather than a hash map.
const DENSE_IDS: i64 = 64;

/// Stands for an id that is not an integer: it names no row, so the pair counts as orphaned.
const NOT_AN_ID: i64 = i64::MIN;

impl Default for WindowCounts {
    fn default() -> Self {
        WindowCounts {
            dense: vec![0; (DENSE_IDS * DENSE_IDS) as usize],
            sparse: FxHashMap::default(),
            n_rows_bad_timestamp: 0,
        }
    }
}

impl WindowCounts {
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

/// Runs `sql`, which calls `FUNCTION_NAME(api_id, status_id, time_modified)` as an aggregate,
/// with `bound` as `?1`, and returns what the function counted.
pub(crate) fn count_window(connection: &Connection, sql: &str, bound: &str) -> rusqlite::Result<WindowCounts> {
    with_function(connection, || connection.query_row(sql, [bound], |_| Ok(()))).map(|((), counts)| counts)
}

/// Runs `work` while the function is registered on `connection`, and returns what it counted.
pub(crate) fn with_function<T>(
    connection: &Connection,
    work: impl FnOnce() -> rusqlite::Result<T>,
) -> rusqlite::Result<(T, WindowCounts)> {
    let counts = Box::into_raw(Box::<WindowCounts>::default());
    let outcome = register(connection, Some(counts)).and_then(|()| work());
    // On failure the function could still reach `counts`: leaking it is the only safe choice.
    register(connection, None)?;
    // SAFETY: no function holds the pointer any more, so this is again its only owner.
    let counts = unsafe { Box::from_raw(counts) };
    outcome.map(|result| (result, *counts))
}

/// Registers the function over `counts`, or with `None` removes it (SQLite deletes a function
/// registered with no callbacks).
fn register(connection: &Connection, counts: Option<*mut WindowCounts>) -> rusqlite::Result<()> {
    let (user_data, step, finish): (_, Option<StepFn>, Option<FinalFn>) = match counts {
        Some(counts) => (counts.cast(), Some(step), Some(finish)),
        None => (std::ptr::null_mut(), None, None),
    };
    // SAFETY: the handle is live for the call; the name is NUL-terminated; `user_data` outlives
    // the registration (`count_window` frees it only after removing the function).
    let code = unsafe {
        ffi::sqlite3_create_function_v2(
            connection.handle(),
            FUNCTION_NAME.as_ptr(),
            3,
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
    let &[api_id, status_id, time_modified] = args else { return };
    // Only text and blobs compare >= a text bound, so time_modified is one of those here.
    // SAFETY: the value is valid for this call; text is read before its length, as SQLite asks.
    let timestamp_ok = unsafe {
        let text = ffi::sqlite3_value_text(time_modified);
        !text.is_null()
            && is_django_timestamp(slice::from_raw_parts(text, ffi::sqlite3_value_bytes(time_modified) as usize))
    };
    if timestamp_ok {
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
