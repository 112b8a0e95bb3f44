//! The `[source]` table: which Django database to read, how far back, in which time zone, and
//! under which table names.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;
use serde::Deserialize;
use toml::Spanned;

use super::database_file::refuse_what_is_no_readable_file;
use crate::common::problems::{Problems, duration};

/// A checked `[source]` table.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub database: PathBuf,
    pub window: Duration,
    pub timezone: Tz,
    pub busy_timeout: Duration,
    /// The longest one tick's reading may take before it is stopped, or abandoned if stuck.
    pub timeout: Duration,
    /// The most rows one read transaction takes; a tick makes as many reads as the window needs.
    pub rows_per_read: u64,
    pub tables: Tables,
}

/// The names of the Django tables the agent reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    pub api: String,
    pub status: String,
    pub transaction: String,
}

impl Default for Tables {
    fn default() -> Self {
        Tables {
            api: "apiMetrics_api".to_owned(),
            status: "apiMetrics_transactionstatus".to_owned(),
            transaction: "apiMetrics_transaction".to_owned(),
        }
    }
}

/// Rows per read transaction unless `rows_per_read` says otherwise: chosen by the writer
/// benchmark (README, "The app's writes").
const DEFAULT_ROWS_PER_READ: u64 = 5_000;
const ROWS_PER_READ_RANGE: std::ops::RangeInclusive<i64> = 100..=10_000_000;

/// `[source]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSource {
    /// The Django SQLite file, relative to the config file; must exist.
    database: Option<Spanned<String>>,
    /// How far back a transaction's `time_modified` may lie to be counted.
    window: Option<Spanned<String>>,
    /// The IANA zone of the naive timestamps Django stored (UTC when `USE_TZ = True`).
    timezone: Option<Spanned<String>>,
    /// How long a read waits for the app's write lock before the tick fails.
    busy_timeout: Option<Spanned<String>>,
    /// The longest one tick's reading may take before it is stopped, or abandoned if stuck.
    timeout: Option<Spanned<String>>,
    /// The most rows one read transaction takes: the longest an app write waits on the agent.
    rows_per_read: Option<Spanned<i64>>,
    /// The API model's table.
    #[serde(default = "default_api_table")]
    api_table: String,
    /// The TransactionStatus model's table.
    #[serde(default = "default_status_table")]
    status_table: String,
    /// The Transaction model's table.
    #[serde(default = "default_transaction_table")]
    transaction_table: String,
}

fn default_api_table() -> String {
    Tables::default().api
}

fn default_status_table() -> String {
    Tables::default().status
}

fn default_transaction_table() -> String {
    Tables::default().transaction
}

impl RawSource {
    /// Checks `[source]`; the database path is relative to `base`, the config file's folder.
    pub(crate) fn validate(self, problems: &mut Problems<'_>, base: &Path) -> SourceConfig {
        let database = match &self.database {
            None => {
                problems.plain("source.database", "missing: name the Django app's SQLite file");
                PathBuf::new()
            }
            Some(database) => {
                let resolved = base.join(database.get_ref());
                if !resolved.exists() {
                    problems.at(
                        database,
                        "source.database",
                        format_args!(
                            "no such file {:?} (the agent never creates it: point it at the Django app's SQLite database)",
                            resolved.display().to_string()
                        ),
                    );
                } else if let Err(error) = refuse_what_is_no_readable_file(&resolved) {
                    problems.at(database, "source.database", error);
                }
                resolved
            }
        };
        let window = duration(problems, self.window.as_ref(), "source.window", "24h");
        let busy_timeout = duration(problems, self.busy_timeout.as_ref(), "source.busy_timeout", "5s");
        let timeout = duration(problems, self.timeout.as_ref(), "source.timeout", "30s");
        let timezone = match &self.timezone {
            None => Tz::UTC,
            Some(zone) => zone.get_ref().parse::<Tz>().unwrap_or_else(|_| {
                problems.at(
                    zone,
                    "source.timezone",
                    format_args!("{:?} is not an IANA time zone (e.g. \"UTC\", \"Africa/Nairobi\")", zone.get_ref()),
                );
                Tz::UTC
            }),
        };
        let rows_per_read = match &self.rows_per_read {
            None => DEFAULT_ROWS_PER_READ,
            Some(value) if (ROWS_PER_READ_RANGE).contains(value.get_ref()) => *value.get_ref() as u64,
            Some(value) => {
                problems.at(
                    value,
                    "source.rows_per_read",
                    format_args!(
                        "{} is out of range: from {} to {} (default {DEFAULT_ROWS_PER_READ})",
                        value.get_ref(),
                        ROWS_PER_READ_RANGE.start(),
                        ROWS_PER_READ_RANGE.end()
                    ),
                );
                DEFAULT_ROWS_PER_READ
            }
        };
        SourceConfig {
            database,
            rows_per_read,
            window,
            timezone,
            busy_timeout,
            timeout,
            tables: Tables { api: self.api_table, status: self.status_table, transaction: self.transaction_table },
        }
    }
}
