//! The window's edges and the timezone of Django's naive timestamps, at a fixed "now".

use std::time::Duration;

use apimetrics_agent::common::django_time::django_timestamp;
use apimetrics_agent::snapshot::Snapshot;
use apimetrics_agent::source::config::{Database, SourceConfig, Tables};
use chrono::{TimeZone, Utc};
use chrono_tz::Tz;

use crate::support::*;

fn source(site: &Site, timezone: Tz) -> SourceConfig {
    SourceConfig {
        database: Database::Sqlite(site.database()),
        window: Duration::from_secs(24 * 3600),
        timezone,
        busy_timeout: Duration::from_secs(1),
        timeout: Duration::from_secs(30),
        rows_per_read: 10_000,
        tables: Tables::default(),
    }
}

fn counts(site: &Site, timezone: Tz, now: chrono::DateTime<Utc>) -> Vec<(String, String, u64)> {
    let snapshot = Snapshot::take(&source(site, timezone), false, now).unwrap();
    snapshot.series.into_iter().map(|series| (series.api, series.status, series.count)).collect()
}

#[test]
fn the_window_includes_its_start_and_excludes_the_microsecond_before() {
    let site = Site::new();
    let api = site.add_api("Mpesa Express");
    let at_start = site.add_status("AtStart");
    let before_start = site.add_status("BeforeStart");
    let fraction_at_start = site.add_status("FractionAtStart");
    let future = site.add_status("Future");
    let now = Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap();
    // Django leaves out a zero fraction, so the start is stored as "2026-11-23 12:00:00".
    site.add_transactions(2, api, at_start, "2026-11-23 12:00:00");
    site.add_transactions(3, api, before_start, "2026-11-23 11:59:59.999999");
    site.add_transactions(1, api, fraction_at_start, "2026-11-23 12:00:00.000001");
    // Django's __gte counts a timestamp after "now" too (a clock ahead of the agent's).
    site.add_transactions(1, api, future, "2026-11-24 12:00:05");
    assert_eq!(
        counts(&site, Tz::UTC, now),
        [
            ("Mpesa Express".into(), "AtStart".into(), 2),
            ("Mpesa Express".into(), "FractionAtStart".into(), 1),
            ("Mpesa Express".into(), "Future".into(), 1),
        ]
    );
    // A start with a fraction is bound as Django binds it, six digits.
    let later = now + chrono::Duration::microseconds(500);
    assert_eq!(django_timestamp(later - chrono::Duration::hours(24), Tz::UTC), "2026-11-23 12:00:00.000500");
    assert_eq!(counts(&site, Tz::UTC, later), [("Mpesa Express".into(), "Future".into(), 1)]);
}

#[test]
fn naive_timestamps_are_read_in_the_configured_zone() {
    let site = Site::new();
    let api = site.add_api("Mpesa Express");
    let recent = site.add_status("Recent");
    let old = site.add_status("Old");
    let now = Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap();
    // Django with USE_TZ = False and TIME_ZONE = "Africa/Nairobi" (UTC+3) stores local time.
    // 23 hours ago in Nairobi: inside the window.
    site.add_transactions(
        2,
        api,
        recent,
        &django_timestamp(now - chrono::Duration::hours(23), chrono_tz::Africa::Nairobi),
    );
    // 22 hours ago written as UTC text: read as Nairobi time it is 25 hours ago, outside.
    site.add_transactions(5, api, old, &django_timestamp(now - chrono::Duration::hours(22), Tz::UTC));
    assert_eq!(counts(&site, chrono_tz::Africa::Nairobi, now), [("Mpesa Express".into(), "Recent".into(), 2)]);
    // Read as UTC, both lie inside.
    assert_eq!(
        counts(&site, Tz::UTC, now),
        [("Mpesa Express".into(), "Old".into(), 5), ("Mpesa Express".into(), "Recent".into(), 2)]
    );
}

#[test]
fn apis_and_statuses_sharing_a_name_merge_and_orphans_are_left_out() {
    let site = Site::new();
    let first = site.add_api("Mpesa Express");
    let second = site.add_api("Mpesa Express");
    let pending = site.add_status("Pending");
    let pending_again = site.add_status("Pending");
    let recent = hours_ago(1.0);
    site.add_transactions(2, first, pending, &recent);
    site.add_transactions(3, second, pending_again, &recent);
    // An orphan: SQLite enforces foreign keys only where a connection turns them on.
    let connection = site.connect();
    connection.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
    for _ in 0..4 {
        connection
            .execute(
                "INSERT INTO apiMetrics_transaction (amount, time_created, time_modified, api_id, status_id) \
                 VALUES (1, ?1, ?1, 999, ?2)",
                rusqlite::params![recent, pending],
            )
            .unwrap();
    }
    let snapshot = Snapshot::take(&source(&site, Tz::UTC), true, Utc::now()).unwrap();
    let series: Vec<_> = snapshot.series.iter().map(|s| (s.api.as_str(), s.status.as_str(), s.count)).collect();
    assert_eq!(series, [("Mpesa Express", "Pending", 5)]);
    assert_eq!(snapshot.n_rows_orphaned, 4);
}
