//! The app's write latency with and without the agent: `cargo bench --bench writer`.
//!
//! A database of 1,000,000 transactions (20 APIs × 6 statuses, 48 hours); a writer as busy as
//! Django under load (200 writes a second, each its own transaction, Django's 5 s lock timeout)
//! runs 10 s alone, then 10 s while `apimetrics-agent run` ticks every second, in SQLite's default
//! rollback-journal mode and in WAL mode. Reports the writer's p50, p99 and worst latency and
//! its failures, both runs in this one process on the same file.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use apimetrics_agent::populate::{self, Population, WriterReport, write_under_load};
use rusqlite::Connection;

const WRITES_PER_SECOND: u32 = 200;
const RUN: Duration = Duration::from_secs(10);

fn main() {
    println!("writer: {WRITES_PER_SECOND} writes/s for {RUN:?}, over 1,000,000 transactions");
    println!(
        "  {:<9} {:<14} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "journal", "agent", "writes", "p50", "p99", "worst", "failures"
    );
    for journal_mode in ["delete", "wal"] {
        let directory = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let database = directory.path().join("app.sqlite3");
        populate::create(&database, &Population::new(1_000_000, 20, 5), false, false).unwrap();
        Connection::open(&database).unwrap().pragma_update(None, "journal_mode", journal_mode).unwrap();

        let alone = write_under_load(&database, WRITES_PER_SECOND, RUN).unwrap();
        print_row(journal_mode, "none", &alone);

        let config = directory.path().join("config.toml");
        std::fs::write(&config, "[source]\ndatabase = \"app.sqlite3\"\n[schedule]\ninterval = \"1s\"\n").unwrap();
        let log = directory.path().join("agent.log");
        let mut agent = Command::new(env!("CARGO_BIN_EXE_apimetrics-agent"))
            .args(["--config", config.to_str().unwrap(), "run"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(&log).unwrap().contains("tick done") {
            assert!(Instant::now() < deadline, "the agent did not tick");
            std::thread::sleep(Duration::from_millis(20));
        }
        let beside = write_under_load(&database, WRITES_PER_SECOND, RUN).unwrap();
        Command::new("kill").args(["-TERM", &agent.id().to_string()]).status().unwrap();
        agent.wait().unwrap();
        let agent_log = std::fs::read_to_string(&log).unwrap();
        let n_ticks = agent_log.matches("tick done").count();
        let tick_ms: Vec<u64> = agent_log
            .lines()
            .filter_map(|line| line.split("query_ms=").nth(1)?.split_whitespace().next()?.parse().ok())
            .collect();
        print_row(journal_mode, &format!("ticking ({n_ticks})"), &beside);
        println!(
            "  {:<9} agent's read: {} ms median; p99 with/without the agent: {:.2}x",
            "",
            median(&tick_ms),
            beside.percentile(0.99).as_secs_f64() / alone.percentile(0.99).as_secs_f64()
        );
    }
}

fn print_row(journal_mode: &str, agent: &str, report: &WriterReport) {
    let ms = |duration: Duration| format!("{:.2} ms", duration.as_secs_f64() * 1000.0);
    println!(
        "  {journal_mode:<9} {agent:<14} {:>8} {:>9} {:>9} {:>9} {:>9}",
        report.latencies.len(),
        ms(report.percentile(0.5)),
        ms(report.percentile(0.99)),
        ms(report.percentile(1.0)),
        report.failures.len()
    );
}

fn median(values: &[u64]) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or(0)
}
