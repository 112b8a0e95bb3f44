//! The Prometheus text exposition format (0.0.4): the one renderer behind `/metrics`,
//! `once --dry-run` and the Pushgateway body, with label values escaped as the format requires.

pub(crate) mod config;

use std::collections::BTreeMap;
use std::fmt::{Display, Write};

use self::config::MetricConfig;
use crate::common::redact::redact;
use crate::snapshot::Snapshot;

pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A text exposition being written; families are written whole, one after another.
#[derive(Debug, Default)]
pub(crate) struct Exposition {
    text: String,
    /// Written after each sample's own labels (the config's `[labels]`).
    constant_labels: Vec<(String, String)>,
}

impl Exposition {
    /// An exposition whose every sample carries `constant_labels` after its own.
    pub(crate) fn new(constant_labels: &BTreeMap<String, String>) -> Exposition {
        Exposition {
            text: String::new(),
            constant_labels: constant_labels.iter().map(|(name, value)| (name.clone(), value.clone())).collect(),
        }
    }

    /// Starts a family: its HELP and TYPE lines.
    pub(crate) fn family(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// One sample line; `labels` are written in the order given, then the constant labels.
    pub(crate) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.text.push_str(name);
        let constant = self.constant_labels.iter().map(|(label, value)| (label.as_str(), value.as_str()));
        let all_labels: Vec<(&str, &str)> = labels.iter().copied().chain(constant).collect();
        if !all_labels.is_empty() {
            self.text.push('{');
            for (position, (label, label_value)) in all_labels.iter().enumerate() {
                if position > 0 {
                    self.text.push(',');
                }
                self.text.push_str(label);
                self.text.push_str("=\"");
                push_escaped_label_value(&mut self.text, label_value);
                self.text.push('"');
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    pub(crate) fn into_string(self) -> String {
        self.text
    }
}

/// The aggregate as a gauge family: one sample per (API name, status name).
fn write_aggregate(exposition: &mut Exposition, snapshot: &Snapshot, metric: &MetricConfig) {
    exposition.family(&metric.name, &metric.help, "gauge");
    for series in &snapshot.series {
        exposition.sample(&metric.name, &[("api", &series.api), ("status", &series.status)], series.count);
    }
}

/// A tick's snapshot with its text rendered once: the body every Pushgateway target pushes and
/// the start of every `/metrics` page until the next tick.
#[derive(Debug)]
pub(crate) struct Rendered {
    pub(crate) snapshot: Snapshot,
    /// The aggregate, then the few agent metrics a central side needs to judge it (when it was
    /// computed, how much it counted). No timestamps, and no name a gateway uses itself
    /// (`push_time_seconds`, `process_*`, `go_*`).
    pub(crate) body: String,
}

impl Rendered {
    pub(crate) fn new(
        snapshot: Snapshot,
        metric: &MetricConfig,
        constant_labels: &BTreeMap<String, String>,
    ) -> Rendered {
        let mut exposition = Exposition::new(constant_labels);
        write_aggregate(&mut exposition, &snapshot, metric);
        write_snapshot_health(&mut exposition, &snapshot);
        write_build_info(&mut exposition);
        Rendered { snapshot, body: exposition.into_string() }
    }
}

pub(crate) fn write_build_info(exposition: &mut Exposition) {
    exposition.family("apimetrics_agent_build_info", "The agent's version; always 1.", "gauge");
    exposition.sample("apimetrics_agent_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1);
}

/// The snapshot's own figures: when it was computed, what it counted and left out.
fn write_snapshot_health(exposition: &mut Exposition, snapshot: &Snapshot) {
    exposition.family(
        "apimetrics_agent_snapshot_timestamp_seconds",
        "When the aggregate was computed, in seconds since the Unix epoch.",
        "gauge",
    );
    exposition.sample(
        "apimetrics_agent_snapshot_timestamp_seconds",
        &[],
        snapshot.computed_at.timestamp_millis() as f64 / 1000.0,
    );
    exposition.family("apimetrics_agent_rows_in_window", "Transactions counted in the aggregate.", "gauge");
    exposition.sample("apimetrics_agent_rows_in_window", &[], snapshot.n_rows_in_window);
    exposition.family(
        "apimetrics_agent_rows_in_future",
        "Transactions counted whose time_modified is more than a minute ahead of the agent's clock.",
        "gauge",
    );
    exposition.sample("apimetrics_agent_rows_in_future", &[], snapshot.n_rows_in_future);
    exposition.family(
        "apimetrics_agent_rows_skipped",
        "Rows in the window left out of the aggregate, by reason.",
        "gauge",
    );
    exposition.sample("apimetrics_agent_rows_skipped", &[("reason", "bad_timestamp")], snapshot.n_rows_bad_timestamp);
    exposition.sample("apimetrics_agent_rows_skipped", &[("reason", "orphaned")], snapshot.n_rows_orphaned);
}

/// A label value as the format writes it, with every known secret redacted first: the only text
/// of an exposition that comes from outside the agent's own vocabulary.
fn push_escaped_label_value(out: &mut String, value: &str) {
    for character in redact(value).chars() {
        match character {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            other => out.push(other),
        }
    }
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Series;
    use chrono::DateTime;
    use std::time::Duration;

    #[test]
    fn label_values_and_help_are_escaped_as_the_format_requires() {
        let snapshot = Snapshot {
            computed_at: DateTime::UNIX_EPOCH,
            window_start: DateTime::UNIX_EPOCH,
            series: vec![
                Series { api: "Mpesa \"Express\"\\v2".into(), status: "line\nbreak".into(), count: 3 },
                Series { api: "Airtel/Money".into(), status: "Imeshindwa ✗".into(), count: 0 },
            ],
            n_rows_in_window: 3,
            n_rows_bad_timestamp: 0,
            n_rows_in_future: 0,
            n_rows_orphaned: 0,
            query_duration: Duration::ZERO,
        };
        let metric = MetricConfig {
            name: "api_transactions".into(),
            help: "API \\ Transactions\nby API".into(),
            zero_fill: true,
        };
        let labels = BTreeMap::from([("site".to_owned(), "nairobi-1".to_owned())]);
        let mut exposition = Exposition::new(&labels);
        write_aggregate(&mut exposition, &snapshot, &metric);
        assert_eq!(
            exposition.into_string(),
            "# HELP api_transactions API \\\\ Transactions\\nby API\n\
             # TYPE api_transactions gauge\n\
             api_transactions{api=\"Mpesa \\\"Express\\\"\\\\v2\",status=\"line\\nbreak\",site=\"nairobi-1\"} 3\n\
             api_transactions{api=\"Airtel/Money\",status=\"Imeshindwa ✗\",site=\"nairobi-1\"} 0\n"
        );
    }
}
