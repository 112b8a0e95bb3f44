//! `GET /` on the scrape listener: one server-rendered page for the operator at the site. The
//! aggregate as an API × status table, when it was computed and how long that took, each target
//! with its last success, last error and backlog, the last 24 hours of counts by status as a
//! chart (`history`), and the config in force with its secrets redacted. No external assets; it
//! refreshes itself and reads on a phone.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::common::escape::html_escaped as escape;
use crate::common::redact::redact;
use crate::config::{Config, Schedule};
use crate::snapshot::Snapshot;
use crate::telemetry::{Delivery, Health, StatusView};

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1rem;color:#222;max-width:60rem}\
h1{font-size:1.3rem}h2{font-size:1.1rem;margin-top:1.5rem}\
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:.9rem}\
th,td{border:1px solid #ccc;padding:.3rem .5rem;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.ok{color:#176b2c}.bad{color:#b00020}.muted{color:#666}pre{background:#f4f4f4;padding:.5rem;overflow-x:auto;font-size:.8rem}";

/// The page as of `now`.
pub(crate) fn render(config: &Config, view: &StatusView, now: DateTime<Utc>) -> String {
    let refresh = match config.schedule {
        Schedule::Interval(period) => period.as_secs().clamp(1, 30),
        Schedule::Cron(_) => 15,
    };
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"{refresh}\"><title>apimetrics-agent</title><style>{STYLE}</style></head><body>\
         <h1>apimetrics-agent {}</h1>",
        env!("CARGO_PKG_VERSION")
    );
    write_health(&mut page, view, now);
    page.push_str("<h2>Transactions modified in the window</h2>");
    match &view.latest {
        None => page.push_str("<p class=\"muted\">No aggregate yet.</p>"),
        Some(latest) => write_aggregate(&mut page, &latest.snapshot, now),
    }
    page.push_str("<h2>The last 24 hours, by status</h2>");
    view.history.render(&mut page, now, view.history_bytes);
    page.push_str("<h2>Targets</h2>");
    write_targets(&mut page, &view.deliveries, now);
    let reload = view.last_reload;
    let _ = write!(
        page,
        "<h2>Configuration</h2><p>{} — last load {} at {}. Secrets are redacted.</p><pre id=\"config\">{}</pre></body></html>",
        escape(&config.path.display().to_string()),
        if reload.succeeded { "<span class=\"ok\">succeeded</span>" } else { "<span class=\"bad\">was refused</span>" },
        timestamp(reload.at),
        escape(&config.redacted_text)
    );
    redact(&page).into_owned()
}

/// Whether the last tick succeeded, and the tick counts.
fn write_health(page: &mut String, view: &StatusView, now: DateTime<Utc>) {
    let (healthy, health) = view.health.describe(now);
    let class = match view.health {
        Health::Starting => "muted",
        _ if healthy => "ok",
        _ => "bad",
    };
    let _ = write!(
        page,
        "<p id=\"health\" class=\"{class}\">{}</p><p class=\"muted\">ticks: {} succeeded, {} failed; page as of {}</p>",
        escape(&health),
        view.n_ticks_succeeded,
        view.n_ticks_failed,
        timestamp(now)
    );
}

/// The aggregate as an API × status table, with when and how it was computed.
fn write_aggregate(page: &mut String, snapshot: &Snapshot, now: DateTime<Utc>) {
    let _ = write!(
        page,
        "<p id=\"computed\">Computed {} ({} ago) in {}: {} transactions since {}.</p>",
        timestamp(snapshot.computed_at),
        age(now, snapshot.computed_at),
        seconds(snapshot.query_duration),
        snapshot.n_rows_in_window,
        timestamp(snapshot.window_start)
    );
    let statuses: BTreeSet<&str> = snapshot.series.iter().map(|series| series.status.as_str()).collect();
    let mut rows: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    for series in &snapshot.series {
        rows.entry(&series.api).or_default().insert(&series.status, series.count);
    }
    page.push_str("<div class=\"scroll\"><table id=\"aggregate\"><tr><th>API</th>");
    for status in &statuses {
        let _ = write!(page, "<th>{}</th>", escape(status));
    }
    page.push_str("</tr>");
    for (api, counts) in &rows {
        let _ = write!(page, "<tr><th>{}</th>", escape(api));
        for status in &statuses {
            match counts.get(status) {
                Some(count) => {
                    let _ = write!(page, "<td class=\"n\">{count}</td>");
                }
                None => page.push_str("<td class=\"n muted\">–</td>"),
            }
        }
        page.push_str("</tr>");
    }
    page.push_str("</table></div>");
    if snapshot.n_rows_bad_timestamp + snapshot.n_rows_orphaned > 0 {
        let _ = write!(
            page,
            "<p class=\"bad\">Left out: {} rows with a time_modified that is not a Django timestamp, {} rows naming no API or status.</p>",
            snapshot.n_rows_bad_timestamp, snapshot.n_rows_orphaned
        );
    }
}

/// Each push target with its last success, last error and backlog.
fn write_targets(page: &mut String, deliveries: &BTreeMap<String, Delivery>, now: DateTime<Utc>) {
    if deliveries.is_empty() {
        page.push_str("<p class=\"muted\">No push targets: /metrics only.</p>");
        return;
    }
    page.push_str(
        "<div class=\"scroll\"><table id=\"targets\"><tr><th>target</th><th>last success</th>\
         <th>last error</th><th>pushes ok / failed</th><th>backlog</th></tr>",
    );
    for (target, delivery) in deliveries {
        let success = delivery.last_success.map_or("never".to_owned(), |at| format!("{} ago", age(now, at)));
        let error = match &delivery.last_error {
            Some(error) => {
                format!("<span class=\"bad\">{} ago: {}</span>", age(now, error.at), escape(&error.reason))
            }
            None => "<span class=\"muted\">none</span>".to_owned(),
        };
        let backlog = match delivery.backlog {
            None => "<span class=\"muted\">latest only</span>".to_owned(),
            Some(backlog) => match backlog.oldest_timestamp_ms.and_then(DateTime::from_timestamp_millis) {
                Some(oldest) => format!("{} samples, oldest {} old", backlog.n_samples, age(now, oldest)),
                None => "empty".to_owned(),
            },
        };
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{success}</td><td>{error}</td><td class=\"n\">{} / {}</td><td>{backlog}</td></tr>",
            escape(target),
            delivery.n_succeeded,
            delivery.n_failed
        );
    }
    page.push_str("</table></div>");
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn age(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    let elapsed = (now - then).to_std().unwrap_or_default();
    humantime::format_duration(Duration::from_secs(elapsed.as_secs())).to_string()
}

fn seconds(duration: Duration) -> String {
    format!("{:.3} s", duration.as_secs_f64())
}
