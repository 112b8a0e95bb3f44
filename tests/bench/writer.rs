//! The app's write latency with and without the agent: `cargo bench --bench writer`.
//!
//! Databases of 1,000,000 and 10,000,000 transactions (20 APIs × 6 statuses, 48 hours;
//! `BENCH_WRITER_SIZES` sets others); a writer as busy as Django under load (200 writes a second,
//! each its own transaction, Django's 5 s lock timeout) runs 10 s alone, then 10 s while
//! `apimetrics-agent run` ticks every second, and again, alternated, in SQLite's default
//! rollback-journal mode and in WAL mode. Reports each run's p50, p99, worst latency and
//! failures, then the alternated runs together: the p99 ratio (goal at most 2x, must at most 3x)
//! and the worst write with the agent against the worst alone plus 50 ms.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use apimetrics_agent::populate::{self, Population, WriterReport, write_under_load};
use rusqlite::Connection;

const WRITES_PER_SECOND: u32 = 200;
const RUN: Duration = Duration::from_secs(10);
const ALTERNATIONS: usize = 2;

fn main() {
    let sizes: Vec<u64> = std::env::var("BENCH_WRITER_SIZES")
        .ok()
        .map(|sizes| sizes.split(',').filter_map(|size| size.trim().parse().ok()).collect())
        .unwrap_or(vec![1_000_000, 10_000_000]);
    println!(
        "writer: {WRITES_PER_SECOND} writes/s, runs of {RUN:?} alone and with the agent ticking every second, alternated {ALTERNATIONS} times"
    );
    let mut all_met = true;
    for n_rows in sizes {
        let directory = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let database = directory.path().join("app.sqlite3");
        populate::create(&database, &Population::new(n_rows, 20, 5), false, false).unwrap();
        let config = directory.path().join("config.toml");
        // `BENCH_ROWS_PER_READ` sets the agent's source.rows_per_read (its default otherwise).
        let rows_per_read = std::env::var("BENCH_ROWS_PER_READ").map(|rows| format!("rows_per_read = {rows}\n"));
        std::fs::write(
            &config,
            format!(
                "[source]\ndatabase = \"app.sqlite3\"\n{}[schedule]\ninterval = \"1s\"\n",
                rows_per_read.unwrap_or_default()
            ),
        )
        .unwrap();
        println!("\n{n_rows} transactions");
        println!(
            "  {:<9} {:<14} {:>8} {:>9} {:>9} {:>9} {:>9}",
            "journal", "agent", "writes", "p50", "p99", "worst", "failures"
        );
        for journal_mode in ["delete", "wal"] {
            Connection::open(&database).unwrap().pragma_update(None, "journal_mode", journal_mode).unwrap();
            let (mut alone, mut beside) = (WriterReport::default(), WriterReport::default());
            let mut tick_ms = Vec::new();
            for _ in 0..ALTERNATIONS {
                let run = write_under_load(&database, WRITES_PER_SECOND, RUN).unwrap();
                print_row(journal_mode, "none", &run);
                alone.latencies.extend(run.latencies);
                alone.failures.extend(run.failures);
                let (run, ticks) = write_beside_the_agent(&database, &config, directory.path());
                print_row(journal_mode, &format!("ticking ({})", ticks.len()), &run);
                beside.latencies.extend(run.latencies);
                beside.failures.extend(run.failures);
                tick_ms.extend(ticks);
            }
            let ratio = beside.percentile(0.99).as_secs_f64() / alone.percentile(0.99).as_secs_f64();
            let worst_alone = alone.percentile(1.0);
            let worst_beside = beside.percentile(1.0);
            let met = ratio <= 3.0
                && worst_beside <= worst_alone + Duration::from_millis(50)
                && alone.failures.is_empty()
                && beside.failures.is_empty();
            all_met &= met;
            println!(
                "  {journal_mode:<9} together: p99 {} alone, {} with the agent: {ratio:.2}x (goal <= 2x, must <= 3x); \
                 worst {} alone, {} with the agent (must <= alone + 50 ms); agent's tick {} ms median: {}",
                ms(alone.percentile(0.99)),
                ms(beside.percentile(0.99)),
                ms(worst_alone),
                ms(worst_beside),
                median(&tick_ms),
                if met { "met" } else { "NOT met" }
            );
        }
    }
    println!("\ngoals {}", if all_met { "met" } else { "NOT met" });
}

/// One run of the writer while `apimetrics-agent run` ticks on `database`; returns the writer's
/// report and how long each of the agent's ticks read, in milliseconds.
fn write_beside_the_agent(database: &Path, config: &Path, directory: &Path) -> (WriterReport, Vec<u64>) {
    let log = directory.join("agent.log");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_apimetrics-agent"))
        .args(["--config", config.to_str().unwrap(), "run"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log).unwrap().contains("tick done") {
        assert!(Instant::now() < deadline, "the agent did not tick");
        std::thread::sleep(Duration::from_millis(20));
    }
    let report = write_under_load(database, WRITES_PER_SECOND, RUN).unwrap();
    Command::new("kill").args(["-TERM", &agent.id().to_string()]).status().unwrap();
    agent.wait().unwrap();
    let agent_log = std::fs::read_to_string(&log).unwrap();
    let tick_ms = agent_log
        .lines()
        .filter_map(|line| line.split("query_ms=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect();
    (report, tick_ms)
}

fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

fn print_row(journal_mode: &str, agent: &str, report: &WriterReport) {
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
