//! What every backend's read of the window shares: what it gives the tick, the columns it needs
//! and where the future starts.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::config::Tables;
use super::read::RawCounts;

/// Rows dated this far past the agent's clock are counted as in the future: an app server's
/// clock runs ahead (rows written during the tick are not).
pub(crate) const FUTURE_AFTER: Duration = Duration::from_secs(60);

/// One tick's read of the window ending at a given instant.
#[derive(Debug)]
pub(crate) struct WindowRead {
    pub(crate) counts: RawCounts,
    /// Transactions modified at or after this instant were counted.
    pub(crate) window_start: DateTime<Utc>,
    /// How long opening and reading took.
    pub(crate) duration: Duration,
}

/// The columns the agent reads, by table; anything else in the tables is ignored.
pub(crate) const REQUIRED_COLUMNS: [(&str, &[&str]); 3] =
    [("api", &["id", "name"]), ("status", &["id", "name"]), ("transaction", &["api_id", "status_id", "time_modified"])];

pub(crate) fn table_name<'a>(tables: &'a Tables, role: &str) -> &'a str {
    match role {
        "api" => &tables.api,
        "status" => &tables.status,
        _ => &tables.transaction,
    }
}
