//! The `[source]` table: which Django database to read, how far back, in which time zone, and
//! under which table names.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;
use serde::Deserialize;
use toml::Spanned;

use super::database_file::refuse_what_is_no_readable_file;
use crate::common::problems::{DurationText, Problems, checked_duration, count, duration};
use crate::common::ranges::{SOURCE_BUSY_TIMEOUT, SOURCE_ROWS_PER_READ, SOURCE_TIMEOUT, SOURCE_WINDOW};

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

/// `[source]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSource {
    /// The Django SQLite file, relative to the config file; must exist.
    database: Option<Spanned<String>>,
    /// How far back a transaction's `time_modified` may lie to be counted.
    window: Option<Spanned<DurationText>>,
    /// The IANA zone of the naive timestamps Django stored (UTC when `USE_TZ = True`).
    timezone: Option<Spanned<String>>,
    /// How long a read waits for the app's write lock before the tick fails.
    busy_timeout: Option<Spanned<DurationText>>,
    /// The longest one tick's reading may take before it is stopped, or abandoned if stuck.
    timeout: Option<Spanned<DurationText>>,
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
                problems.missing("source.database", "missing: name the Django app's SQLite file");
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
        let window = duration(problems, self.window.as_ref(), "source.window", &SOURCE_WINDOW);
        let busy_timeout =
            checked_duration(problems, self.busy_timeout.as_ref(), "source.busy_timeout", &SOURCE_BUSY_TIMEOUT);
        let timeout = checked_duration(problems, self.timeout.as_ref(), "source.timeout", &SOURCE_TIMEOUT);
        // Unset, busy_timeout stays within a short timeout rather than refuse it.
        let busy_timeout = match (&self.busy_timeout, busy_timeout, timeout) {
            (None, Some(busy_timeout), Some(timeout)) => Some(busy_timeout.min(timeout / 2)),
            (_, busy_timeout, _) => busy_timeout,
        };
        if let (Some(busy_timeout), Some(timeout)) = (busy_timeout, timeout) {
            self.check_busy_timeout_within_timeout(problems, busy_timeout, timeout);
        }
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
        let rows_per_read = count(problems, self.rows_per_read.as_ref(), "source.rows_per_read", &SOURCE_ROWS_PER_READ);
        SourceConfig {
            database,
            rows_per_read,
            window,
            timezone,
            busy_timeout: busy_timeout.unwrap_or_else(|| SOURCE_BUSY_TIMEOUT.default_or_min()),
            timeout: timeout.unwrap_or_else(|| SOURCE_TIMEOUT.default_or_min()),
            tables: Tables { api: self.api_table, status: self.status_table, transaction: self.transaction_table },
        }
    }

    /// A wait for the app's lock must end before the tick's deadline, or it could never end in a
    /// read. Reported at whichever of the two keys is written.
    fn check_busy_timeout_within_timeout(
        &self,
        problems: &mut Problems<'_>,
        busy_timeout: Duration,
        timeout: Duration,
    ) {
        if busy_timeout < timeout {
            return;
        }
        let (busy_shown, timeout_shown) =
            (humantime::format_duration(busy_timeout), humantime::format_duration(timeout));
        // Unset, busy_timeout was kept within the timeout: only a set one can be too long.
        if let Some(value) = &self.busy_timeout {
            problems.at(
                value,
                "source.busy_timeout",
                format_args!(
                    "{busy_shown} is not shorter than source.timeout ({timeout_shown}), the deadline of a tick's \
                     whole reading: make it shorter"
                ),
            );
        }
    }
}
