//! The aggregation benchmark: `cargo bench --bench aggregate`.
//!
//! Builds a Django-schema database of 10,000,000 transactions over 48 hours (about 5,000,000 in
//! the 24-hour window), 20 APIs × 6 statuses, then times, in this one process and on the same
//! warm file:
//! - plain: the obvious JOIN + GROUP BY on names, run the usual way;
//! - floor: SQLite merely reading the window's rows by the same access path as the agent;
//! - agent: the agent's own reads and aggregation (`source::read_counts` + `Snapshot::from_counts`),
//!   in short reads of `BENCH_ROWS_PER_READ` rows (default: the agent's default), and in
//!   one read for comparison;
//!
//! first without an index on time_modified, then with `schema/index.sql`, and reports the ratios.
//! Last it runs the agent binary's `once` on the indexed file and reports its peak RSS.
//! `BENCH_ROWS` sets another size; `BENCH_RUNS` the runs per measurement (the median is kept).

use std::path::Path;
use std::time::{Duration, Instant};

use apimetrics_agent::populate::{self, Population, WINDOW_INDEX};
use apimetrics_agent::snapshot::Snapshot;
use apimetrics_agent::source::config::Tables;
use apimetrics_agent::source::{self, WindowBounds};
use chrono::Utc;
use rusqlite::{Connection, OpenFlags};

mod peak_rss;

const PLAIN_QUERY: &str = "SELECT a.name, s.name, count(*) FROM apiMetrics_transaction t \
     JOIN apiMetrics_api a ON a.id = t.api_id JOIN apiMetrics_transactionstatus s ON s.id = t.status_id \
     WHERE t.time_modified >= ?1 GROUP BY a.name, s.name";
const FLOOR_QUERY: &str = "SELECT sum(api_id + status_id) FROM apiMetrics_transaction WHERE time_modified >= ?1";

fn main() {
    if peak_rss::serve_request() {
        return;
    }
    let n_rows: u64 = std::env::var("BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
    let n_runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let directory = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a temporary directory");
    let database = directory.path().join("bench.sqlite3");

    let started = Instant::now();
    let population = Population::new(n_rows, 20, 7);
    populate::create(&database, &population, false, false).expect("building the database");
    println!("built {n_rows} transactions (20 APIs x 6 statuses, 48 hours) in {:.1?}", started.elapsed());
    let django_time = |instant| apimetrics_agent::common::django_time::django_timestamp(instant, chrono_tz::Tz::UTC);
    let bound = django_time(population.now - chrono::Duration::hours(24));
    let bounds =
        WindowBounds { start: bound.clone(), future_from: django_time(population.now + chrono::Duration::minutes(1)) };
    let rows_per_read: u64 =
        std::env::var("BENCH_ROWS_PER_READ").ok().and_then(|v| v.parse().ok()).unwrap_or(source::DEFAULT_ROWS_PER_READ);

    let mut figures = Vec::new();
    for indexed in [false, true] {
        if indexed {
            let started = Instant::now();
            Connection::open(&database).unwrap().execute_batch(WINDOW_INDEX).unwrap();
            println!("\ncreated the index in schema/index.sql in {:.1?}", started.elapsed());
        }
        let connection = read_only(&database);
        let label = if indexed { "with schema/index.sql" } else { "without an index on time_modified" };
        println!("\n{label}:");
        let plan: Vec<String> = connection
            .prepare(&format!("EXPLAIN QUERY PLAN {PLAIN_QUERY}"))
            .unwrap()
            .query_map([&bound], |row| row.get(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        println!("  plain query's plan  {}", plan.join("; "));
        let (plain, plain_count) = median(n_runs, || plain_count(&connection, &bound));
        let (floor, _) =
            median(n_runs, || connection.query_row(FLOOR_QUERY, [&bound], |row| row.get::<_, i64>(0)).unwrap() as u64);
        let agent_reading = |rows_per_read| {
            let raw = source::read_counts(&connection, &Tables::default(), &bounds, rows_per_read).unwrap();
            Snapshot::from_counts(&raw, true, Utc::now(), Utc::now(), Duration::ZERO).n_rows_in_window
        };
        let (agent, agent_count) = median(n_runs, || agent_reading(rows_per_read));
        let (one_read, one_read_count) = median(n_runs, || agent_reading(u64::MAX));
        assert_eq!(plain_count, agent_count, "the agent must count exactly what the plain query counts");
        assert_eq!(plain_count, one_read_count, "in one read too");
        println!("  rows in window      {agent_count}");
        println!("  plain query         {:>8.3} s", plain.as_secs_f64());
        println!("  floor (read only)   {:>8.3} s", floor.as_secs_f64());
        println!("  agent, one read     {:>8.3} s", one_read.as_secs_f64());
        println!("  agent               {:>8.3} s ({rows_per_read} rows a read)", agent.as_secs_f64());
        let speedup = plain.as_secs_f64() / agent.as_secs_f64();
        let over_floor = agent.as_secs_f64() / floor.as_secs_f64();
        let goal = if indexed { 5.0 } else { 3.0 };
        println!("  agent vs plain      {speedup:>8.2}x faster (goal >= {goal}x)");
        println!("  agent vs floor      {over_floor:>8.2}x the floor (goal <= 1.5x)");
        let over_one_read = agent.as_secs_f64() / one_read.as_secs_f64();
        println!("  short vs one read   {over_one_read:>8.2}x (goal <= 1.2x)");
        figures.push((speedup >= goal) && over_floor <= 1.5 && (indexed || over_one_read <= 1.2));
    }

    let rss = peak_rss_of_once(directory.path(), &database);
    println!("\npeak RSS of `apimetrics-agent once` on this database: {:.1} MB (goal < 50 MB)", rss as f64 / 1e6);
    let all_met = figures.iter().all(|met| *met) && rss < 50_000_000;
    println!("goals {}", if all_met { "met" } else { "NOT met" });
}

fn read_only(path: &Path) -> Connection {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("opening the database")
}

/// Runs the plain query and returns the transactions it counted.
fn plain_count(connection: &Connection, bound: &str) -> u64 {
    let mut statement = connection.prepare_cached(PLAIN_QUERY).unwrap();
    let rows = statement.query_map([bound], |row| row.get::<_, i64>(2)).unwrap();
    rows.map(|count| count.unwrap() as u64).sum()
}

/// The median time of `n_runs` runs after one warm-up, and the warm-up's result.
fn median<T>(n_runs: usize, mut run: impl FnMut() -> T) -> (Duration, T) {
    let result = run();
    let mut times: Vec<Duration> = (0..n_runs)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(run());
            started.elapsed()
        })
        .collect();
    times.sort();
    (times[times.len() / 2], result)
}

/// Runs the agent binary's `once --dry-run` on `database` and returns its peak resident memory in bytes.
fn peak_rss_of_once(directory: &Path, database: &Path) -> u64 {
    let config = directory.join("bench.toml");
    std::fs::write(
        &config,
        format!("[source]\ndatabase = {:?}\n[schedule]\ninterval = \"15s\"\n", database.display().to_string()),
    )
    .unwrap();
    peak_rss::peak_rss_of(
        env!("CARGO_BIN_EXE_apimetrics-agent"),
        &["--config", config.to_str().unwrap(), "once", "--dry-run"],
    )
}
