//! The Django app's database, read-only: a SQLite file (`sqlite`), a PostgreSQL server
//! (`postgres`) or a MySQL or MariaDB server (`mysql`), each behind `Source`, which a tick asks
//! for the window's counts by (api_id, status_id) with the names of those ids. Names are joined
//! and zero-filled by the snapshot, the same way for every backend.
//!
//! The agent never writes here. SQLite is opened `mode=ro` + `query_only` for one tick; a server
//! is read in read-only transactions on one connection, kept between ticks.

pub mod config;
mod database_file;
mod kept;
mod mysql;
pub(crate) mod mysql_url;
mod postgres;
mod read;
mod side_files;
pub(crate) mod sqlite;
pub(crate) mod tls;
mod window;
mod window_count;

use std::path::PathBuf;

use chrono::{DateTime, Utc};

use self::config::{Database, SourceConfig};
use self::mysql::MysqlSource;
use self::postgres::PostgresSource;
pub use self::read::{RawCounts, read_counts};
pub(crate) use self::window::WindowRead;
pub use self::window_count::WindowBounds;
use crate::common::deadline::Watchdog;
use crate::common::ranges::SOURCE_ROWS_PER_READ;

/// `source.rows_per_read` when the config does not set it (for the benchmarks).
pub const DEFAULT_ROWS_PER_READ: u64 = SOURCE_ROWS_PER_READ.default as u64;

/// The database a tick reads, as `[source]` names it. Made once per config (a reload makes a
/// new one); a server's connection lives as long as this.
pub(crate) enum Source {
    /// The file, and the `[source]` it is read as.
    Sqlite(PathBuf, SourceConfig),
    Postgres(Box<PostgresSource>),
    Mysql(Box<MysqlSource>),
}

impl Source {
    pub(crate) fn new(config: &SourceConfig) -> Source {
        match &config.database {
            Database::Sqlite(path) => Source::Sqlite(path.clone(), config.clone()),
            Database::Postgres(server) => {
                Source::Postgres(Box::new(PostgresSource::new(config.clone(), (**server).clone())))
            }
            Database::Mysql(server) => Source::Mysql(Box::new(MysqlSource::new(config.clone(), (**server).clone()))),
        }
    }

    /// The window ending at `now`, read within `source.timeout`. SQLite's read runs on a thread
    /// of its own under `watchdog`, which keeps at most one stuck read.
    pub(crate) async fn read_window(&self, now: DateTime<Utc>, watchdog: &Watchdog) -> anyhow::Result<WindowRead> {
        match self {
            Source::Sqlite(path, config) => {
                let (path, config) = (path.clone(), config.clone());
                let what = format!("reading {} (source.database)", path.display());
                watchdog
                    .run(&what, (config.timeout, "source.timeout"), move |cancel| {
                        sqlite::read_window(&path, &config, now, cancel)
                    })
                    .await
            }
            Source::Postgres(server) => server.read_window(now).await,
            Source::Mysql(server) => server.read_window(now).await,
        }
    }

    /// `check`'s report on the database: opened, its size, how the window will be read.
    pub(crate) async fn check(&self, watchdog: &Watchdog) -> anyhow::Result<String> {
        match self {
            Source::Sqlite(path, config) => {
                let (path, config) = (path.clone(), config.clone());
                let what = format!("checking {} (source.database)", path.display());
                watchdog
                    .run(&what, (config.timeout, "source.timeout"), move |cancel| sqlite::check(&path, &config, cancel))
                    .await
            }
            Source::Postgres(server) => server.check().await,
            Source::Mysql(server) => server.check().await,
        }
    }
}
