//! What every backend's read of the window shares: what it gives the tick, the columns it needs
//! and where the future starts.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};

use super::config::Tables;
use super::read::RawCounts;
use crate::common::django_time::local_clock_minus;

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

/// What a server's catalog says is wrong with the tables (`problems`: one missing, a column
/// lacking), with where to look: the app's migration, and `schema` (the backend's file under
/// `schema/`) for what it makes.
pub(crate) fn not_the_apps_tables(problems: &[String], schema: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{}: is this the Django app's database, migrated? The app's first migration \
         (apiMetrics/migrations/0001_initial.py, run by `python manage.py migrate apiMetrics`) creates the tables; \
         {schema} shows them (other table names go in source.api_table, source.status_table, \
         source.transaction_table)",
        problems.join("; ")
    )
}

/// "table … lacks column(s) …" when the table lacks any of `columns` (`has` says whether it
/// has one).
pub(crate) fn lacking_columns(table: &str, columns: &[&str], has: impl Fn(&str) -> bool) -> Option<String> {
    let missing: Vec<&str> = columns.iter().copied().filter(|column| !has(column)).collect();
    (!missing.is_empty()).then(|| format!("table {table:?} lacks column(s) {}", missing.join(", ")))
}

/// The window's start and the "in the future" bound as naive wall-clock times in `timezone`,
/// as Django computes them with `USE_TZ = False`: the local clock's reading minus the window.
pub(crate) fn naive_bounds(
    now: DateTime<Utc>,
    window: Duration,
    timezone: chrono_tz::Tz,
) -> (NaiveDateTime, NaiveDateTime) {
    (local_clock_minus(now, window, timezone), (now + FUTURE_AFTER).with_timezone(&timezone).naive_local())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn without_time_zone_the_window_starts_at_the_local_clock_minus_a_day_as_django_computes_it() {
        // 2026-03-29 is the day Europe/Berlin moves to summer time (02:00 → 03:00). At noon,
        // Django's naive `datetime.now() - timedelta(hours=24)` reads 12:00 the day before, not
        // 11:00 (the instant 24 h earlier).
        let now = Utc.with_ymd_and_hms(2026, 3, 29, 10, 0, 0).unwrap();
        let (start, future_from) = naive_bounds(now, Duration::from_secs(86_400), chrono_tz::Europe::Berlin);
        assert_eq!(start.to_string(), "2026-03-28 12:00:00");
        assert_eq!(future_from.to_string(), "2026-03-29 12:01:00");
    }
}
