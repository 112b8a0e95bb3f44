//! Reads that cannot finish: a read past `source.timeout` is stopped, one stuck in a system call
//! is abandoned (and only one), `/healthz` says so, later ticks still start on time, and SIGTERM
//! ends the agent within its grace.

use std::ffi::CString;
use std::time::{Duration, Instant};

use crate::peers::{parse_exposition, value_of};
use crate::support::*;

/// The agent's documented shutdown grace.
const SHUTDOWN_GRACE: Duration = apimetrics_agent::run::SHUTDOWN_GRACE;

/// A site with `n` transactions in the window, written in one statement (fast at any size).
fn site_with_many_transactions(n: u64) -> Site {
    let site = Site::new();
    let api = site.add_api("Mpesa Express");
    let status = site.add_status("Pending");
    site.connect()
        .execute(
            "WITH RECURSIVE k(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM k WHERE x < ?1) \
             INSERT INTO apiMetrics_transaction (amount, time_created, time_modified, api_id, status_id) \
             SELECT 10.5, t, t, ?2, ?3 FROM (SELECT printf('%s.%06d', datetime('now', '-' || (x % 72000) || ' seconds'), \
             x % 1000000) AS t FROM k)",
            rusqlite::params![n as i64, api, status],
        )
        .unwrap();
    site
}

fn failed_ticks(agent: &Running) -> f64 {
    agent.ticks("failure")
}

/// Waits for `/healthz` to answer 503 with a body containing `reason`; returns the body.
fn wait_for_unhealthy(agent: &Running, reason: &str, deadline: Duration) -> String {
    wait_for(&format!("/healthz to answer 503 with {reason:?}"), deadline, || {
        http_get(&agent.url("/healthz")).filter(|(status, body)| *status == 503 && body.contains(reason))
    })
    .1
}

/// SIGTERM, and the time until the agent had exited (code 0).
fn terminate_in_time(agent: Running) -> String {
    let asked = Instant::now();
    let (status, log) = agent.terminate();
    let took = asked.elapsed();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(took < SHUTDOWN_GRACE, "SIGTERM took {took:?}, more than the grace of {SHUTDOWN_GRACE:?}");
    log
}

#[test]
fn a_read_past_the_timeout_is_stopped_and_later_ticks_start_on_time() {
    // A million rows without an index: a debug build reads them in about half a second.
    let site = site_with_many_transactions(1_000_000);
    let port = free_port();
    let config = site.config_with_source(
        "timeout = \"100ms\"\n",
        "500ms",
        &format!("[scrape]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let started = Instant::now();
    let agent = Running::start(&config, port);
    // The first tick fails at 100 ms (plus the time to stop): health says so at once.
    let health = wait_for_unhealthy(&agent, "timed out after 100ms (source.timeout); the read was stopped", DEADLINE);
    assert!(health.starts_with("the last tick failed: reading "), "{health}");
    // Later ticks keep their schedule: five more ticks come within about five intervals.
    let before = failed_ticks(&agent);
    let counting = Instant::now();
    wait_for("five more ticks, each stopped", DEADLINE, || (failed_ticks(&agent) >= before + 5.0).then_some(()));
    assert!(counting.elapsed() < Duration::from_secs(6), "five 500 ms ticks took {:?}", counting.elapsed());
    assert_eq!(agent.ticks("success"), 0.0);
    let samples = parse_exposition(&agent.metrics());
    let tick_seconds = value_of(&samples, "apimetrics_agent_tick_duration_seconds", &[]).unwrap();
    assert!(tick_seconds < 1.0, "a stopped tick took {tick_seconds} s (timeout 100 ms, 1 s to stop)");
    let log = terminate_in_time(agent);
    assert!(!log.contains("abandon"), "an interruptible read was never abandoned:\n{log}");
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn a_read_stuck_on_a_fifo_journal_is_abandoned_once_and_health_says_so() {
    // SQLite opens `<database>-journal` to look for a hot journal: a FIFO there blocks that open
    // until a writer comes, which the database file's own checks cannot see.
    let site = site_with_transactions();
    let journal = site.directory.path().join("app.sqlite3-journal");
    let fifo = CString::new(journal.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0, "mkfifo {}", journal.display());
    let port = free_port();
    let config =
        site.config_with_source("timeout = \"1s\"\n", "300ms", &format!("[scrape]\nlisten = \"127.0.0.1:{port}\"\n"));
    let agent = Running::start(&config, port);
    let health = wait_for_unhealthy(&agent, "stuck in a system call", DEADLINE);
    assert!(health.contains("timed out after 1s") || health.contains("an earlier read has been stuck"), "{health}");

    // Ticks go on (each refused at once while the read is stuck), on no new thread.
    let threads = || std::fs::read_dir(format!("/proc/{}/task", agent.child.id())).unwrap().count();
    let (before, n_threads) = (failed_ticks(&agent), threads());
    wait_for("five more ticks", DEADLINE, || (failed_ticks(&agent) >= before + 5.0).then_some(()));
    assert!(threads() <= n_threads, "threads grew from {n_threads} to {}: stuck reads pile up", threads());
    let health = wait_for_unhealthy(&agent, "an earlier read has been stuck in a system call for", DEADLINE);
    assert!(health.contains("no new read starts until it does"), "{health}");
    assert_eq!(agent.log().matches("abandoning it").count(), 1, "one read abandoned:\n{}", agent.log());

    // A writer on the FIFO frees the stuck open; with the FIFO gone, ticks succeed again.
    let writer = std::fs::OpenOptions::new().write(true).open(&journal).unwrap();
    std::fs::remove_file(&journal).unwrap();
    drop(writer);
    wait_for("/healthz to answer 200 again", DEADLINE, || {
        http_get(&agent.url("/healthz")).filter(|(status, _)| *status == 200)
    });
    assert!(agent.log().contains("the abandoned read returned at last"), "{}", agent.log());
    let metrics = agent.metrics();
    assert_eq!(sample(&metrics, "api_transactions{api=\"Mpesa Express\",status=\"Pending\"}"), Some(3.0));
    terminate_in_time(agent);
}

#[test]
fn sigterm_ends_the_agent_within_the_grace_while_a_read_is_stuck() {
    let site = site_with_transactions();
    let journal = site.directory.path().join("app.sqlite3-journal");
    let fifo = CString::new(journal.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let port = free_port();
    // A timeout longer than the grace: the tick is still waiting on the read at SIGTERM.
    let config =
        site.config_with_source("timeout = \"1h\"\n", "1s", &format!("[scrape]\nlisten = \"127.0.0.1:{port}\"\n"));
    let agent = Running::start(&config, port);
    // The read's thread is there, and with no writer on the FIFO it cannot return.
    wait_for("the tick's read to start", DEADLINE, || {
        let threads = std::fs::read_dir(format!("/proc/{}/task", agent.child.id())).ok()?;
        threads.filter_map(Result::ok).find(|thread| {
            std::fs::read_to_string(thread.path().join("comm")).is_ok_and(|name| name.trim() == "apimetrics-read")
        })
    });
    let (status, body) = http_get(&agent.url("/healthz")).unwrap();
    assert_eq!((status, body.as_str()), (503, "starting: no tick has finished yet\n"));
    terminate_in_time(agent);
}

const DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn a_receiver_that_never_answers_holds_neither_a_reload_nor_shutdown() {
    use crate::peers::{FakeServer, Reply};
    let site = site_with_transactions();
    let hanging = FakeServer::start(vec![Reply::status(204).after(Duration::from_secs(3600))]);
    let port = free_port();
    let config = site.config(
        "500ms",
        &format!(
            "[scrape]\nlisten = \"127.0.0.1:{port}\"\n\
             [[remote_write]]\nname = \"hanging\"\nurl = \"{}/api/v1/write\"\ntimeout = \"10min\"\n",
            hanging.url()
        ),
    );
    let agent = Running::start(&config, port);
    wait_for("a request under way", DEADLINE, || (!hanging.received().is_empty()).then_some(()));

    // A reload replaces the sender at once: the request under way is dropped, not waited on.
    let asked = Instant::now();
    let status = std::process::Command::new("kill").args(["-HUP", &agent.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    wait_for("the reload", DEADLINE, || agent.log().contains("reloaded the config").then_some(()));
    assert!(asked.elapsed() < Duration::from_secs(3), "the reload took {:?}", asked.elapsed());
    let ticks = agent.ticks("success");
    wait_for("ticks after the reload", DEADLINE, || (agent.ticks("success") >= ticks + 2.0).then_some(()));

    // Shutdown does not wait for the receiver either.
    wait_for("the new sender's request under way", DEADLINE, || (hanging.received().len() >= 2).then_some(()));
    let asked = Instant::now();
    terminate_in_time(agent);
    assert!(asked.elapsed() < Duration::from_secs(3), "SIGTERM took {:?} with a request under way", asked.elapsed());
}
