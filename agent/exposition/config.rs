//! The `[metric]` and `[labels]` tables: what the gauge family is called and the constant labels
//! every series carries, in every outlet.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::common::problems::{Problems, is_label_name, is_metric_name};

/// The label names the aggregate itself uses; constant labels may not reuse them.
const AGGREGATE_LABELS: [&str; 2] = ["api", "status"];

/// A checked `[metric]` table.
#[derive(Debug, Clone)]
pub(crate) struct MetricConfig {
    pub(crate) name: String,
    pub(crate) help: String,
    pub(crate) zero_fill: bool,
}

/// `[metric]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetric {
    /// The gauge family's name.
    #[serde(default = "default_metric_name")]
    name: Spanned<String>,
    /// The gauge family's HELP text.
    #[serde(default = "default_metric_help")]
    help: String,
    /// Emit every API name × status name, 0 where there are none.
    #[serde(default = "default_true")]
    zero_fill: bool,
}

impl Default for RawMetric {
    fn default() -> Self {
        RawMetric { name: default_metric_name(), help: default_metric_help(), zero_fill: true }
    }
}

fn default_metric_name() -> Spanned<String> {
    Spanned::new(0..0, "api_transactions".to_owned())
}

fn default_metric_help() -> String {
    "API Transactions".to_owned()
}

fn default_true() -> bool {
    true
}

impl RawMetric {
    pub(crate) fn validate(self, problems: &mut Problems<'_>) -> MetricConfig {
        let name = self.name.get_ref().clone();
        if !is_metric_name(&name) {
            problems.at(
                &self.name,
                "metric.name",
                format_args!("{name:?} is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"),
            );
        }
        MetricConfig { name, help: self.help, zero_fill: self.zero_fill }
    }
}

/// `[labels]` as written: constant labels added to every series.
pub(crate) type RawLabels = BTreeMap<Spanned<String>, Spanned<String>>;

/// Checks `[labels]`: label names that do not collide with the aggregate's, and no empty values.
pub(crate) fn validate_labels(problems: &mut Problems<'_>, raw: &RawLabels) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    for (name, value) in raw {
        let key = format!("labels.{}", name.get_ref());
        if !is_label_name(name.get_ref()) {
            problems.at(name, &key, "not a label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with \"__\")");
        } else if AGGREGATE_LABELS.contains(&name.get_ref().as_str()) {
            problems.at(name, &key, "collides with a label of the aggregate (api, status): pick another name");
        }
        if value.get_ref().is_empty() {
            problems.at(value, &key, "empty value: Prometheus treats an empty label as absent");
        }
        labels.insert(name.get_ref().clone(), value.get_ref().clone());
    }
    labels
}
