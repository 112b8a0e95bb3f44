//! Short reads: a tick reads the window in many small read transactions, by time through an
//! index or by id without one, and still counts Django's numbers: every row that stays put
//! exactly once, a row the app moves during the tick at most once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use apimetrics_agent::populate::WINDOW_INDEX;
use apimetrics_agent::snapshot::Snapshot;
use apimetrics_agent::source::config::{Database, SourceConfig, Tables};
use chrono::Utc;
use chrono_tz::Tz;

use crate::support::*;

fn source(site: &Site, rows_per_read: u64) -> SourceConfig {
    SourceConfig {
        database: Database::Sqlite(site.database()),
        window: Duration::from_secs(24 * 3600),
        timezone: Tz::UTC,
        busy_timeout: Duration::from_secs(5),
        timeout: Duration::from_secs(30),
        rows_per_read,
        tables: Tables::default(),
    }
}

/// A site with `n` transactions spread over the last 20 hours, with the covering index or without.
fn site_with(n: usize, indexed: bool) -> (Site, i64, i64) {
    let site = Site::new();
    if indexed {
        site.connect().execute_batch(WINDOW_INDEX).unwrap();
    }
    let api = site.add_api("Mpesa Express");
    let status = site.add_status("Pending");
    site.add_status("Failed");
    for position in 0..n {
        site.add_transactions(1, api, status, &hours_ago(20.0 * position as f64 / n as f64));
    }
    (site, api, status)
}

#[test]
fn every_row_counts_once_while_the_app_moves_rows_during_the_reads() {
    for indexed in [true, false] {
        let (site, _, _) = site_with(2000, indexed);
        let moving = Arc::new(AtomicBool::new(true));
        let n_moves = Arc::new(AtomicU64::new(0));
        // A busy app, a write a millisecond (back to back, a writer starves every reader in
        // SQLite's rollback mode, the app's own included): a random row gets a new status and,
        // as Django's auto_now does, a new time_modified, which moves it ahead of reads by time.
        let writer = {
            let (connection, moving, n_moves) = (site.connect(), moving.clone(), n_moves.clone());
            std::thread::spawn(move || {
                let mut seed = 7u64;
                while moving.load(Ordering::Relaxed) {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    connection
                        .execute(
                            "UPDATE apiMetrics_transaction SET status_id = 3 - status_id, time_modified = ?1 \
                             WHERE id = ?2",
                            rusqlite::params![hours_ago(0.0), 1 + ((seed >> 33) % 2000) as i64],
                        )
                        .unwrap();
                    n_moves.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        // Ticks until the app has moved 200 rows while one ran: each must count every row once.
        let (mut n_moves_during_ticks, mut n_ticks) = (0, 0);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while n_moves_during_ticks < 200 {
            assert!(std::time::Instant::now() < deadline, "indexed: {indexed}: only {n_moves_during_ticks} moves");
            let before = n_moves.load(Ordering::Relaxed);
            let snapshot = Snapshot::take(&source(&site, 100), true, Utc::now()).unwrap();
            n_moves_during_ticks += n_moves.load(Ordering::Relaxed) - before;
            n_ticks += 1;
            assert_eq!(snapshot.n_rows_in_window, 2000, "indexed: {indexed}, tick {n_ticks}: every row, once");
            assert_eq!(snapshot.n_rows_bad_timestamp, 0);
        }
        moving.store(false, Ordering::Relaxed);
        writer.join().unwrap();
    }
}

#[test]
fn more_rows_on_one_timestamp_than_one_read_takes_count_once() {
    let (site, api, status) = site_with(10, true);
    let same = hours_ago(2.0);
    site.add_transactions(350, api, status, &same);
    for rows_per_read in [100, 350, 351, 10_000] {
        let snapshot = Snapshot::take(&source(&site, rows_per_read), true, Utc::now()).unwrap();
        assert_eq!(snapshot.n_rows_in_window, 360, "{rows_per_read} rows a read");
    }
}

#[test]
fn timestamps_django_cannot_place_are_skipped_and_future_ones_counted_by_both_ways_of_reading() {
    for indexed in [true, false] {
        let (site, api, status) = site_with(5, indexed);
        let connection = site.connect();
        let insert = |time_modified: rusqlite::types::Value| {
            connection
                .execute(
                    "INSERT INTO apiMetrics_transaction (amount, time_created, time_modified, api_id, status_id) \
                     VALUES (1, '2026-01-01 00:00:00', ?1, ?2, ?3)",
                    rusqlite::params![time_modified, api, status],
                )
                .unwrap();
        };
        // What another program might write; Django never does, and its query counts none of them.
        use rusqlite::types::Value::{Integer, Real, Text};
        insert(Integer(1_764_000_000));
        insert(Real(1.5));
        insert(Text(format!(" {}", hours_ago(1.0))));
        insert(Text(String::new()));
        insert(Text(hours_ago(1.0).replace(' ', "T")));
        // An app server whose clock runs two hours ahead: Django counts these, and so does the agent.
        site.add_transactions(3, api, status, &hours_ago(-2.0));
        for rows_per_read in [100, 2] {
            let snapshot = Snapshot::take(&source(&site, rows_per_read), true, Utc::now()).unwrap();
            let context = format!("indexed: {indexed}, {rows_per_read} rows a read");
            assert_eq!(snapshot.n_rows_in_window, 5 + 3, "{context}");
            assert_eq!(snapshot.n_rows_bad_timestamp, 5, "{context}");
            assert_eq!(snapshot.n_rows_in_future, 3, "{context}");
        }
    }
}

#[test]
fn negative_zero_and_far_apart_ids_count_once_either_way() {
    for indexed in [true, false] {
        for far in [1_000i64, 1_000_000_000_000_000] {
            let (site, api, status) = site_with(3, indexed);
            let connection = site.connect();
            for id in [-5i64, 0, far] {
                connection
                    .execute(
                        "INSERT INTO apiMetrics_transaction (id, amount, time_created, time_modified, api_id, status_id) \
                         VALUES (?1, 1, ?2, ?2, ?3, ?4)",
                        rusqlite::params![id, hours_ago(1.0), api, status],
                    )
                    .unwrap();
            }
            let snapshot = Snapshot::take(&source(&site, 100), true, Utc::now()).unwrap();
            assert_eq!(snapshot.n_rows_in_window, 6, "indexed: {indexed}, ids up to {far}");
        }
    }
}

#[test]
fn a_whole_read_of_timestamps_that_are_no_utf8_text_ends() {
    let (site, api, status) = site_with(5, true);
    let connection = site.connect();
    // Text whose last byte is no UTF-8, as a program other than Django might write: no read can
    // start at it, so the reads must end some other way.
    let mut stored = hours_ago(1.0).into_bytes();
    stored.push(0xff);
    for _ in 0..150 {
        connection
            .execute(
                "INSERT INTO apiMetrics_transaction (amount, time_created, time_modified, api_id, status_id) \
                 VALUES (1, '2026-01-01 00:00:00', CAST(?1 AS TEXT), ?2, ?3)",
                rusqlite::params![stored, api, status],
            )
            .unwrap();
    }
    let snapshot = Snapshot::take(&source(&site, 100), true, Utc::now()).unwrap();
    assert_eq!((snapshot.n_rows_in_window, snapshot.n_rows_bad_timestamp), (5, 150));
}

#[test]
fn an_index_that_cannot_serve_the_window_is_not_read_through() {
    for index in [
        "CREATE INDEX partial_time ON apiMetrics_transaction (time_modified) WHERE status_id = 1",
        "CREATE INDEX nocase_time ON apiMetrics_transaction (time_modified COLLATE NOCASE, api_id, status_id)",
    ] {
        let (site, _, _) = site_with(5, false);
        site.connect().execute_batch(index).unwrap();
        let output = run_agent(&site.config("1s", ""), &["check"]);
        assert!(output.status.success(), "{}", stderr(&output));
        assert!(stdout(&output).contains("by id, the whole table"), "{index}:\n{}", stdout(&output));
    }
}
