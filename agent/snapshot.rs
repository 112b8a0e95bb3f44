//! The snapshot: the one value a tick computes and every outlet renders. Turning the database's
//! counts by (api_id, status_id) into counts by (API name, status name) happens here, without IO
//! (`from_counts`); `take` is the tick's read and that step together.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rustc_hash::FxHashMap;

use crate::common::deadline::Cancel;
use crate::source::config::{Database, SourceConfig};
use crate::source::{self, RawCounts, WindowRead};

/// One series of the gauge family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    pub api: String,
    pub status: String,
    pub count: u64,
}

/// The aggregate at one moment, ready to render.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The tick's "now": the window ends here, and remote-write stamps samples with it.
    pub computed_at: DateTime<Utc>,
    /// Transactions modified at or after this instant were counted.
    pub window_start: DateTime<Utc>,
    /// Sorted by API name, then status name; one entry per distinct pair of names.
    pub series: Vec<Series>,
    /// Transactions counted, summed over every series.
    pub n_rows_in_window: u64,
    /// Rows skipped because `time_modified` does not parse.
    pub n_rows_bad_timestamp: u64,
    /// Rows counted whose time_modified lies more than a minute past the agent's clock.
    pub n_rows_in_future: u64,
    /// Rows skipped because their api_id or status_id names no row (the app's JOIN drops them too).
    pub n_rows_orphaned: u64,
    /// How long reading the database took.
    pub query_duration: Duration,
}

impl Snapshot {
    /// One tick of a SQLite source: reads the window ending at `now` and aggregates it.
    /// Blocking; call it off the runtime. (The run loop reads any source through `Source`.)
    pub fn take(source: &SourceConfig, zero_fill: bool, now: DateTime<Utc>) -> anyhow::Result<Snapshot> {
        let Database::Sqlite(path) = &source.database else {
            anyhow::bail!("Snapshot::take reads a SQLite file; source.database names a server");
        };
        let read = source::sqlite::read_window(path, source, now, &Cancel::default())?;
        Ok(Snapshot::from_read(&read, zero_fill, now))
    }

    /// The snapshot of a tick's read of the window ending at `now`.
    pub(crate) fn from_read(read: &WindowRead, zero_fill: bool, now: DateTime<Utc>) -> Snapshot {
        Snapshot::from_counts(&read.counts, zero_fill, now, read.window_start, read.duration)
    }

    /// Merges counts by id into counts by name, as Django's `GROUP BY api.name, status.name` does.
    /// With `zero_fill`, every API name × every status name is present, 0 where there are none.
    pub fn from_counts(
        raw: &RawCounts,
        zero_fill: bool,
        computed_at: DateTime<Utc>,
        window_start: DateTime<Utc>,
        query_duration: Duration,
    ) -> Snapshot {
        let api_names: FxHashMap<i64, &str> = raw.apis.iter().map(|(id, name)| (*id, name.as_str())).collect();
        let status_names: FxHashMap<i64, &str> = raw.statuses.iter().map(|(id, name)| (*id, name.as_str())).collect();

        let mut by_names: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        if zero_fill {
            let apis: BTreeSet<&str> = api_names.values().copied().collect();
            let statuses: BTreeSet<&str> = status_names.values().copied().collect();
            for api in &apis {
                for status in &statuses {
                    by_names.insert((api, status), 0);
                }
            }
        }
        let mut n_rows_orphaned = 0;
        for (&(api_id, status_id), &count) in &raw.by_ids {
            match (api_names.get(&api_id), status_names.get(&status_id)) {
                (Some(api), Some(status)) => *by_names.entry((api, status)).or_insert(0) += count,
                _ => n_rows_orphaned += count,
            }
        }
        let series: Vec<Series> = by_names
            .into_iter()
            .map(|((api, status), count)| Series { api: api.to_owned(), status: status.to_owned(), count })
            .collect();
        Snapshot {
            computed_at,
            window_start,
            n_rows_in_window: series.iter().map(|series| series.count).sum(),
            series,
            n_rows_bad_timestamp: raw.n_rows_bad_timestamp,
            n_rows_in_future: raw.n_rows_in_future,
            n_rows_orphaned,
            query_duration,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(counts: &[((i64, i64), u64)]) -> RawCounts {
        RawCounts {
            apis: vec![(1, "Mpesa Express".into()), (2, "Mpesa B2C".into()), (3, "Mpesa Express".into())],
            statuses: vec![(10, "Pending".into()), (11, "Failed".into())],
            by_ids: counts.iter().copied().collect(),
            n_rows_bad_timestamp: 0,
            n_rows_in_future: 0,
        }
    }

    fn pairs(snapshot: &Snapshot) -> Vec<(&str, &str, u64)> {
        snapshot.series.iter().map(|s| (s.api.as_str(), s.status.as_str(), s.count)).collect()
    }

    fn snapshot(raw: &RawCounts, zero_fill: bool) -> Snapshot {
        Snapshot::from_counts(raw, zero_fill, DateTime::UNIX_EPOCH, DateTime::UNIX_EPOCH, Duration::ZERO)
    }

    #[test]
    fn rows_with_one_name_merge_and_zero_fill_covers_every_pair() {
        let snapshot = snapshot(&raw(&[((1, 10), 2), ((3, 10), 5), ((2, 11), 1)]), true);
        assert_eq!(
            pairs(&snapshot),
            [
                ("Mpesa B2C", "Failed", 1),
                ("Mpesa B2C", "Pending", 0),
                ("Mpesa Express", "Failed", 0),
                ("Mpesa Express", "Pending", 7),
            ]
        );
        assert_eq!(snapshot.n_rows_in_window, 8);
    }

    #[test]
    fn without_zero_fill_only_nonzero_pairs_remain() {
        let snapshot = snapshot(&raw(&[((1, 10), 2), ((2, 11), 1)]), false);
        assert_eq!(pairs(&snapshot), [("Mpesa B2C", "Failed", 1), ("Mpesa Express", "Pending", 2)]);
    }

    #[test]
    fn rows_naming_no_api_or_status_are_counted_apart() {
        let snapshot = snapshot(&raw(&[((1, 10), 2), ((99, 10), 4), ((1, 99), 1)]), false);
        assert_eq!(pairs(&snapshot), [("Mpesa Express", "Pending", 2)]);
        assert_eq!(snapshot.n_rows_orphaned, 5);
        assert_eq!(snapshot.n_rows_in_window, 2);
    }
}
