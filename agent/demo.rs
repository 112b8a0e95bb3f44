//! `demo`: a sample database that changes every second the way the Django app changes it, with
//! the agent running on it, so a new user sees /metrics move without a Django install.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use chrono_tz::Tz;
use rusqlite::Connection;
use tracing::{info, warn};

use crate::common::django_time::django_timestamp;
use crate::common::random::SplitMix64;
use crate::config;
use crate::populate::{self, Population};
use crate::run::Hangups;
use crate::source::config::Database;

/// The sample database `demo` creates beside the config file and writes to.
const DEMO_DATABASE: &str = "demo.sqlite3";

/// Creates the demo database if absent, starts the sample writer, and runs the agent on the
/// config at `config_path` until `shutdown`.
pub async fn run(config_path: &Path, hangups: Hangups, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let database = config_path.parent().unwrap_or(Path::new(".")).join(DEMO_DATABASE);
    if !database.try_exists().with_context(|| format!("looking at {}", database.display()))? {
        info!(database = %database.display(), "creating the demo database");
        populate::create(&database, &Population::new(20_000, 4, 1), false, true)?;
    }
    let config = config::load(config_path)?;
    let same_file = match &config.source.database {
        Database::Sqlite(path) => std::fs::canonicalize(path).ok() == std::fs::canonicalize(&database).ok(),
        Database::Postgres(_) | Database::Mysql(_) => false,
    };
    if !same_file {
        bail!(
            "demo writes sample transactions into {}, but source.database in {} is {}: \
             run demo with a config whose source.database is {DEMO_DATABASE:?}",
            database.display(),
            config_path.display(),
            config.source.database.shown()
        );
    }
    if let Some(listen) = config.scrape_listen {
        info!("watch the aggregate move: curl -s http://{listen}/metrics");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (database, stop) = (database.clone(), stop.clone());
        std::thread::spawn(move || {
            if let Err(error) = write_like_the_app(&database, &stop) {
                warn!(error = %format!("{error:#}"), "the demo writer stopped; the aggregate will no longer move");
            }
        })
    };
    let outcome = crate::run::run(config, hangups, shutdown).await;
    stop.store(true, Ordering::Relaxed);
    let _ = writer.join();
    outcome
}

/// Every second, creates a few transactions and moves a few recent ones to another status,
/// bumping `time_modified` as Django's `auto_now` does, until `stop` is set.
fn write_like_the_app(database: &Path, stop: &AtomicBool) -> anyhow::Result<()> {
    let connection = Connection::open(database).with_context(|| format!("opening {}", database.display()))?;
    connection.busy_timeout(Duration::from_secs(5))?;
    let n_apis: i64 = connection.query_row("SELECT count(*) FROM apiMetrics_api", [], |row| row.get(0))?;
    let mut random = SplitMix64::from_clock();
    while !stop.load(Ordering::Relaxed) {
        let now = django_timestamp(Utc::now(), Tz::UTC);
        let transaction = connection.unchecked_transaction()?;
        for _ in 0..1 + random.below(4) {
            populate::create_transaction(&connection, &mut random, n_apis, &now)?;
        }
        for _ in 0..1 + random.below(4) {
            populate::move_recent_transaction(&connection, &mut random, 200, &now)?;
        }
        transaction.commit()?;
        std::thread::sleep(Duration::from_secs(1));
    }
    Ok(())
}
