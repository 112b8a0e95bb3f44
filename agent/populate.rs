//! Sample databases the way the Django app writes them: the schema from `schema/django.sql`,
//! a few APIs and statuses, and transactions spread over the last hours with Django's timestamp
//! text; and the app's own writes under load, to show the agent does them no harm. Used by
//! `populate`, `demo`, the tests and the benchmarks; never pointed at a real app.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rusqlite::{Connection, params};

use crate::common::django_time::django_timestamp;
use crate::common::random::SplitMix64;

/// The tables Django's migrations create for the app's models.
pub(crate) const DJANGO_SCHEMA: &str = include_str!("../schema/django.sql");
/// The covering index the README recommends adding through a migration.
pub const WINDOW_INDEX: &str = include_str!("../schema/index.sql");

pub(crate) const API_NAMES: [&str; 20] = [
    "Mpesa Express",
    "Mpesa B2C",
    "Mpesa C2B",
    "Mpesa B2B",
    "Mpesa Reversal",
    "Mpesa Account Balance",
    "Mpesa Transaction Status",
    "Airtel Money Collect",
    "Airtel Money Disburse",
    "T-Kash Collect",
    "Equitel Pay",
    "PesaLink Send",
    "Card Charge",
    "Card Refund",
    "Bank Transfer",
    "Paybill Validation",
    "Till Confirmation",
    "Bulk Payout",
    "Standing Order",
    "Remittance Inbound",
];

pub(crate) const STATUS_NAMES: [&str; 6] = ["Pending", "Processing", "Processed", "Failed", "TimedOut", "Cancelled"];

/// What to put in a sample database.
#[derive(Debug, Clone)]
pub struct Population {
    pub n_transactions: u64,
    /// How many of `API_NAMES` to use, from the first.
    pub n_apis: usize,
    /// Seeds the pseudo-random choices, so a seed always gives the same rows.
    pub seed: u64,
    /// Transactions are created evenly over `span` before `now`.
    pub(crate) span: Duration,
    pub now: DateTime<Utc>,
}

impl Population {
    pub fn new(n_transactions: u64, n_apis: usize, seed: u64) -> Population {
        Population { n_transactions, n_apis, seed, span: Duration::from_secs(48 * 3600), now: Utc::now() }
    }
}

/// Creates a Django-schema database at `path` holding `population`. The file appears whole or
/// not at all; an existing file is replaced only with `force`.
pub fn create(path: &Path, population: &Population, force: bool, show_progress: bool) -> anyhow::Result<()> {
    // `try_exists`: a folder this user may not enter is said so, not taken for "no file".
    if path.try_exists().with_context(|| format!("looking at {}", path.display()))? && !force {
        bail!("refusing to touch {}: it exists (pass --force to replace it)", path.display());
    }
    if !(1..=API_NAMES.len()).contains(&population.n_apis) {
        bail!("--apis must be between 1 and {}, not {}", API_NAMES.len(), population.n_apis);
    }
    let partial = PathBuf::from(format!("{}.partial", path.display()));
    let _ = std::fs::remove_file(&partial);
    let connection = Connection::open(&partial).with_context(|| format!("creating {}", partial.display()))?;
    fill(&connection, population, show_progress).with_context(|| format!("writing {}", partial.display()))?;
    connection.close().map_err(|(_, error)| error)?;
    std::fs::rename(&partial, path).with_context(|| format!("moving {} to {}", partial.display(), path.display()))?;
    Ok(())
}

fn fill(connection: &Connection, population: &Population, show_progress: bool) -> anyhow::Result<()> {
    // Safe only because the file is new and renamed into place when complete.
    connection.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -262144;")?;
    connection.execute_batch(DJANGO_SCHEMA)?;
    let transaction = connection.unchecked_transaction()?;
    insert_names(connection, population.n_apis)?;
    let progress = if show_progress {
        ProgressBar::with_draw_target(Some(population.n_transactions), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {human_pos}/{human_len} transactions, {eta} left")
            .expect("the template is valid"),
    );
    let mut random = SplitMix64(population.seed);
    let mut insert = connection.prepare(
        "INSERT INTO apiMetrics_transaction (amount, time_created, time_modified, api_id, status_id) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let span_micros = population.span.as_micros() as i64;
    let start = population.now - population.span;
    let n = population.n_transactions.max(1) as i64;
    for position in 0..population.n_transactions as i64 {
        // Created evenly over the span, in id order as the app creates them; modified up to 15
        // minutes later, never after `now`.
        let created =
            start + chrono::Duration::microseconds(span_micros * position / n + random.below(1_000_000) as i64);
        let modified = (created + chrono::Duration::microseconds(random.below(900_000_000) as i64)).min(population.now);
        let amount = (random.below(10_000_000) as f64) / 100.0;
        insert.execute(params![
            amount,
            django_timestamp(created, Tz::UTC),
            django_timestamp(modified, Tz::UTC),
            1 + random.below(population.n_apis as u64) as i64,
            1 + random.below(STATUS_NAMES.len() as u64) as i64,
        ])?;
        if position % 65_536 == 0 {
            progress.set_position(position as u64);
        }
    }
    progress.finish_and_clear();
    drop(insert);
    transaction.commit()?;
    Ok(())
}

/// The first `n_apis` of `API_NAMES` and every status, as the app's admin would enter them.
fn insert_names(connection: &Connection, n_apis: usize) -> rusqlite::Result<()> {
    for (position, name) in API_NAMES[..n_apis].iter().enumerate() {
        connection.execute(
            "INSERT INTO apiMetrics_api (name, description, params) VALUES (?1, ?2, ?3)",
            params![name, format!("{name} payments"), format!("{{\"shortcode\": \"{}\"}}", 174379 + position)],
        )?;
    }
    for name in STATUS_NAMES {
        connection.execute(
            "INSERT INTO apiMetrics_transactionstatus (name, description) VALUES (?1, ?2)",
            params![name, format!("The transaction is {}", name.to_lowercase())],
        )?;
    }
    Ok(())
}

/// Creates a Pending transaction of a random API, modified `now`, as the app does.
pub(crate) fn create_transaction(
    connection: &Connection,
    random: &mut SplitMix64,
    n_apis: i64,
    now: &str,
) -> rusqlite::Result<usize> {
    connection.execute(
        "INSERT INTO apiMetrics_transaction (amount, time_created, time_modified, api_id, status_id) \
         VALUES (?1, ?2, ?2, ?3, 1)",
        params![random.below(1_000_000) as f64 / 100.0, now, 1 + random.below(n_apis.max(1) as u64) as i64],
    )
}

/// Moves one of the `n_recent` newest transactions to a random status, bumping `time_modified`
/// to `now` as Django's `auto_now` does.
pub(crate) fn move_recent_transaction(
    connection: &Connection,
    random: &mut SplitMix64,
    n_recent: u64,
    now: &str,
) -> rusqlite::Result<usize> {
    connection.execute(
        "UPDATE apiMetrics_transaction SET status_id = ?1, time_modified = ?2 \
         WHERE id = (SELECT max(id) FROM apiMetrics_transaction) - ?3",
        params![1 + random.below(STATUS_NAMES.len() as u64) as i64, now, random.below(n_recent) as i64],
    )
}

/// What a run of `write_under_load` saw: the latency of every write, and every failure.
#[derive(Debug, Default)]
pub struct WriterReport {
    pub latencies: Vec<Duration>,
    pub failures: Vec<String>,
}

impl WriterReport {
    /// The latency below which `fraction` of the writes finished (0.5 for the median).
    pub fn percentile(&self, fraction: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted
            .get(((sorted.len() as f64 * fraction) as usize).min(sorted.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    }
}

/// Writes to `database` as the Django app does under load, `writes_per_second` for `how_long`:
/// each write its own transaction (Django's autocommit) on a connection with Django's 5 s lock
/// timeout, alternately creating a transaction and moving a recent one to another status
/// (bumping `time_modified`). A write that falls behind the pace is not made up for.
pub fn write_under_load(database: &Path, writes_per_second: u32, how_long: Duration) -> anyhow::Result<WriterReport> {
    let connection = Connection::open(database).with_context(|| format!("opening {}", database.display()))?;
    connection.busy_timeout(Duration::from_secs(5))?;
    let n_apis: i64 = connection.query_row("SELECT count(*) FROM apiMetrics_api", [], |row| row.get(0))?;
    let mut random = SplitMix64(7);
    let mut report = WriterReport::default();
    let started = std::time::Instant::now();
    let pace = Duration::from_secs(1) / writes_per_second.max(1);
    let mut next_write = started;
    let mut n_writes: u64 = 0;
    while started.elapsed() < how_long {
        std::thread::sleep(next_write.saturating_duration_since(std::time::Instant::now()));
        next_write = (next_write + pace).max(std::time::Instant::now());
        let now = django_timestamp(Utc::now(), Tz::UTC);
        let write_started = std::time::Instant::now();
        let result = if n_writes.is_multiple_of(2) {
            create_transaction(&connection, &mut random, n_apis, &now)
        } else {
            move_recent_transaction(&connection, &mut random, 1000, &now)
        };
        match result {
            Ok(_) => report.latencies.push(write_started.elapsed()),
            Err(error) => report.failures.push(error.to_string()),
        }
        n_writes += 1;
    }
    Ok(report)
}
