//! Months at a site in a few minutes: a 1 s tick while the targets take turns being up, down
//! and hanging. Resident memory, open files, threads and runtime tasks stay flat, and the
//! remote-write queue stays within its bounds.

use std::time::{Duration, Instant};

use apimetrics_agent::remote_write::queue::inspect;

use crate::peers::*;
use crate::support::*;

/// What the test watches of the agent's process.
#[derive(Debug, Clone, Copy)]
struct Usage {
    resident_kib: u64,
    n_threads: u64,
    n_files: usize,
    n_tasks: f64,
}

fn usage(agent: &Running) -> Usage {
    let pid = agent.child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|line| line.starts_with(name)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let n_files = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let n_tasks = value_of(&parse_exposition(&agent.metrics()), "apimetrics_agent_runtime_alive_tasks", &[]).unwrap();
    Usage { resident_kib: field("VmRSS:"), n_threads: field("Threads:"), n_files, n_tasks }
}

#[test]
fn a_long_run_against_flapping_targets_stays_flat_and_bounded() {
    let hang = Reply::status(200).after(Duration::from_secs(3));
    let gateway = FakeServer::cycling(vec![Reply::status(200), Reply::status(500), hang.clone()]);
    let receiver = FakeServer::cycling(vec![Reply::status(204), Reply::status(503), hang, Reply::status(503)]);
    let site = site_with_transactions();
    let port = free_port();
    let config = site.config(
        "1s",
        &format!(
            "[scrape]\nlisten = \"127.0.0.1:{port}\"\n\
             [[pushgateway]]\nurl = \"{}\"\ntimeout = \"1s\"\n\
             [[remote_write]]\nname = \"central\"\nurl = \"{}/api/v1/write\"\ntimeout = \"1s\"\n\
             queue = {{ max_age = \"20s\", max_bytes = \"16KiB\" }}\n",
            gateway.url(),
            receiver.url()
        ),
    );
    let agent = Running::start(&config, port);
    let api = site.add_api("Airtel Money");
    let warm_up = Instant::now() + Duration::from_secs(20);
    while Instant::now() < warm_up {
        site.add_transactions(1, api, 1, &hours_ago(0.0));
        std::thread::sleep(Duration::from_millis(500));
    }
    let start = usage(&agent);
    let ticks_at_start = agent.ticks("success");

    let queue = site.directory.path().join("state/remote_write/central.sqlite3");
    let end_of_soak = Instant::now() + Duration::from_secs(120);
    while Instant::now() < end_of_soak {
        site.add_transactions(1, api, 1, &hours_ago(0.0));
        let backlog = inspect(&queue).unwrap();
        // Bounds are applied before every send, so allow one tick's batch on top.
        assert!(backlog.n_bytes <= 16 * 1024 + 4096, "the queue holds {} bytes", backlog.n_bytes);
        if let Some(oldest) = backlog.oldest_timestamp_ms {
            let age = chrono::Utc::now().timestamp_millis() - oldest;
            assert!(age <= 20_000 + 5_000, "the oldest queued sample is {age} ms old");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let end = usage(&agent);
    let n_ticks = agent.ticks("success") - ticks_at_start;
    assert!(n_ticks >= 100.0, "only {n_ticks} ticks in 120 s");
    assert!(end.resident_kib <= start.resident_kib + 8 * 1024, "memory grew: {start:?} → {end:?}");
    assert!(end.n_files <= start.n_files + 4, "open files grew: {start:?} → {end:?}");
    assert!(end.n_threads <= start.n_threads + 4, "threads grew: {start:?} → {end:?}");
    assert!(end.n_tasks <= start.n_tasks + 4.0, "runtime tasks grew: {start:?} → {end:?}");
    assert!(gateway.received().len() > 50 && receiver.received().len() > 50, "the targets were not exercised");
    eprintln!("soak: {n_ticks} ticks; start {start:?}; end {end:?}");
    let (status, log) = agent.terminate();
    assert_eq!(status.code(), Some(0), "{log}");
}
