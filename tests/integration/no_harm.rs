//! The agent never makes the app's writes fail: a writer as busy as Django under load (200
//! writes a second, each its own transaction), with Django's 5 s lock timeout, runs while the agent ticks every second over a million
//! transactions, in SQLite's default rollback-journal mode and in WAL mode.

use std::time::Duration;

use apimetrics_agent::populate::{self, Population, write_under_load};

use crate::support::*;

#[test]
fn a_busy_writer_never_fails_while_the_agent_ticks() {
    for journal_mode in ["delete", "wal"] {
        let site = Site::new();
        std::fs::remove_file(site.database()).unwrap();
        populate::create(&site.database(), &Population::new(1_000_000, 20, 3), false, false).unwrap();
        site.connect().pragma_update(None, "journal_mode", journal_mode).unwrap();
        let port = free_port();
        let config = site.config("1s", &format!("[scrape]\nlisten = \"127.0.0.1:{port}\"\n"));
        let agent = Running::start(&config, port);
        // Rounds of five seconds of writes until the agent has ticked three times under them: a
        // loaded machine slows the ticks, and must not fail the test for it.
        let before = agent.ticks("success");
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        let mut n_writes = 0;
        while agent.ticks("success") - before < 3.0 {
            let ticked = agent.ticks("success") - before;
            assert!(
                std::time::Instant::now() < deadline,
                "{journal_mode}: the agent ticked {ticked} times in 90 s of writes"
            );
            let report = write_under_load(&site.database(), 200, Duration::from_secs(5)).unwrap();
            assert!(report.failures.is_empty(), "{journal_mode}: writes failed: {:?}", report.failures);
            n_writes += report.latencies.len();
        }
        assert!(n_writes > 100, "{journal_mode}: only {n_writes} writes");
        assert_eq!(agent.ticks("failure"), 0.0, "{journal_mode}: {}", agent.log());
        let (status, log) = agent.terminate();
        assert_eq!(status.code(), Some(0), "{log}");
    }
}
