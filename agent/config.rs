//! The configuration file as a whole: the TOML parsed with its spans, then one `validate` step
//! that hands each table to the module it configures (`source`, `exposition`, the outlets) and
//! checks what spans tables, so every problem is reported at once with its key and line. This
//! sits above the outlets and composes their settings; none of them imports it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::common::files::read_regular_text;
use crate::common::problems::{Problems, duration, line_of};
use crate::common::redact::redacted_config;
use crate::exposition::config::{MetricConfig, RawLabels, RawMetric, validate_labels};
use crate::pushgateway::config::{PushgatewayConfig, RawPushgateway};
use crate::remote_write::config::{RawRemoteWrite, RemoteWriteConfig};
use crate::source::config::{RawSource, SourceConfig};

/// The checked configuration the agent runs on.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from, for messages.
    pub(crate) path: PathBuf,
    /// The file's text with every secret replaced, for the status page.
    pub(crate) redacted_text: String,
    pub(crate) state_dir: PathBuf,
    pub(crate) source: SourceConfig,
    pub(crate) schedule: Schedule,
    pub(crate) run_on_start: bool,
    pub(crate) metric: MetricConfig,
    /// Constant labels on every series, sorted by name.
    pub(crate) labels: BTreeMap<String, String>,
    /// Where to serve `/metrics` and `/healthz`; `None` for no local endpoint.
    pub(crate) scrape_listen: Option<SocketAddr>,
    /// Whether the scrape endpoint serves `POST /-/reload`.
    pub(crate) enable_reload: bool,
    pub(crate) pushgateways: Vec<PushgatewayConfig>,
    pub(crate) remote_writes: Vec<RemoteWriteConfig>,
}

impl Config {
    /// The `[source]` table: the database to read and how.
    pub fn source(&self) -> &SourceConfig {
        &self.source
    }
}

/// When ticks happen, as `[schedule]` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Schedule {
    Interval(Duration),
    /// A cron expression with seconds, already known to parse.
    Cron(String),
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Interval(period) => write!(f, "every {}", humantime::format_duration(*period)),
            Schedule::Cron(expression) => write!(f, "cron {expression:?} (UTC)"),
        }
    }
}

/// A configuration that cannot be used; `main` exits with code 2 on it.
#[derive(Debug)]
pub struct ConfigError {
    pub(crate) path: PathBuf,
    pub(crate) problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "invalid configuration {}: {one}", self.path.display()),
            many => {
                write!(f, "invalid configuration {} ({} problems):", self.path.display(), many.len())?;
                for problem in many {
                    write!(f, "\n  {problem}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = read_regular_text(path).map_err(|error| ConfigError {
        path: path.to_owned(),
        problems: vec![format!("cannot read it: {error} (pass --config PATH or set APIMETRICS_CONFIG)")],
    })?;
    parse(path, &text)
}

/// Parses and validates configuration text; `path` names it in messages and anchors relative paths.
pub(crate) fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text)
        .map_err(|error| ConfigError { path: path.to_owned(), problems: vec![describe_toml_error(text, &error)] })?;
    let mut problems = Problems::new(text);
    let config = raw.validate(&mut problems, path, text);
    match problems.into_messages() {
        found if found.is_empty() => Ok(config),
        found => Err(ConfigError { path: path.to_owned(), problems: found }),
    }
}

fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end().to_owned();
    match error.span() {
        Some(span) => format!("line {}: {message}", line_of(text, span.start)),
        None => message,
    }
}

// ---------------------------------------------------------------------------------------------
// The TOML as written. Every field mirrors a key of config.toml; the tables of one module are
// that module's own.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// The agent's own settings.
    #[serde(default)]
    agent: RawAgent,
    /// The Django database to read.
    source: RawSource,
    /// When to compute the aggregate.
    #[serde(default)]
    schedule: RawSchedule,
    /// The name, help and shape of the gauge family.
    #[serde(default)]
    metric: RawMetric,
    /// Constant labels added to every series.
    #[serde(default)]
    labels: RawLabels,
    /// The local scrape endpoint; absent for none.
    scrape: Option<RawScrape>,
    /// Pushgateway targets, each pushed to independently.
    #[serde(default)]
    pushgateway: Vec<RawPushgateway>,
    /// Remote-write targets, each with its own durable queue.
    #[serde(default)]
    remote_write: Vec<RawRemoteWrite>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    /// Where the agent keeps its own files, relative to the config file.
    #[serde(default = "default_state_dir")]
    state_dir: String,
}

impl Default for RawAgent {
    fn default() -> Self {
        RawAgent { state_dir: default_state_dir() }
    }
}

fn default_state_dir() -> String {
    "state".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    /// A fixed interval between ticks, e.g. "15s"; exclusive with `cron`.
    interval: Option<Spanned<String>>,
    /// A cron expression with a seconds field, evaluated in UTC; exclusive with `interval`.
    cron: Option<Spanned<String>>,
    /// Whether to tick once at start-up instead of waiting for the first scheduled time.
    #[serde(default = "default_true")]
    run_on_start: bool,
}

impl Default for RawSchedule {
    fn default() -> Self {
        RawSchedule { interval: None, cron: None, run_on_start: true }
    }
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScrape {
    /// The address to serve `/metrics` and `/healthz` on, e.g. "127.0.0.1:9184".
    listen: Spanned<String>,
    /// Serve `POST /-/reload`, which re-reads the config as SIGHUP does.
    #[serde(default)]
    enable_reload: bool,
}

// ---------------------------------------------------------------------------------------------
// Validation: each table by the module it configures, then the rules that span tables.

impl RawConfig {
    fn validate(self, problems: &mut Problems<'_>, path: &Path, text: &str) -> Config {
        let base = path.parent().unwrap_or(Path::new("."));
        let source = self.source.validate(problems, base);
        let schedule = self.schedule.validate(problems);
        let metric = self.metric.validate(problems);
        let labels = validate_labels(problems, &self.labels);
        let scrape_listen = self.scrape.as_ref().and_then(|scrape| scrape.validate(problems));
        let pushgateways = validate_pushgateways(problems, &self.pushgateway, &labels, base);
        let remote_writes = validate_remote_writes(problems, &self.remote_write, base);
        Config {
            path: path.to_owned(),
            redacted_text: redacted_config(text),
            state_dir: base.join(self.agent.state_dir),
            source,
            schedule,
            run_on_start: self.schedule.run_on_start,
            metric,
            labels,
            scrape_listen,
            enable_reload: self.scrape.as_ref().is_some_and(|scrape| scrape.enable_reload),
            pushgateways,
            remote_writes,
        }
    }
}

impl RawSchedule {
    fn validate(&self, problems: &mut Problems<'_>) -> Schedule {
        match (&self.interval, &self.cron) {
            (Some(_), Some(cron)) => {
                problems.at(cron, "schedule.cron", "set exactly one of schedule.interval and schedule.cron, not both");
                Schedule::Interval(Duration::from_secs(15))
            }
            (None, None) => {
                problems.plain("schedule", "set exactly one of schedule.interval (e.g. \"15s\") and schedule.cron");
                Schedule::Interval(Duration::from_secs(15))
            }
            (Some(interval), None) => {
                Schedule::Interval(duration(problems, Some(interval), "schedule.interval", "15s"))
            }
            (None, Some(cron)) => {
                if let Err(error) = parse_cron(cron.get_ref()) {
                    problems.at(
                        cron,
                        "schedule.cron",
                        format_args!(
                            "{:?} is not a cron expression: {error} (six fields, seconds first, e.g. \"*/15 * * * * *\")",
                            cron.get_ref()
                        ),
                    );
                }
                Schedule::Cron(cron.get_ref().clone())
            }
        }
    }
}

/// Parses a cron expression exactly as the scheduler will: six or seven fields, seconds first.
pub(crate) fn parse_cron(expression: &str) -> Result<croner::Cron, croner::errors::CronError> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expression)
}

impl RawScrape {
    fn validate(&self, problems: &mut Problems<'_>) -> Option<SocketAddr> {
        self.listen
            .get_ref()
            .parse::<SocketAddr>()
            .map_err(|_| {
                problems.at(
                    &self.listen,
                    "scrape.listen",
                    format_args!("{:?} is not an address with a port, e.g. \"127.0.0.1:9184\"", self.listen.get_ref()),
                );
            })
            .ok()
    }
}

/// Each `[[pushgateway]]`, and no two pushing to the same group.
fn validate_pushgateways(
    problems: &mut Problems<'_>,
    raw: &[RawPushgateway],
    labels: &BTreeMap<String, String>,
    base: &Path,
) -> Vec<PushgatewayConfig> {
    let targets: Vec<PushgatewayConfig> =
        raw.iter().enumerate().map(|(index, target)| target.validate(problems, index, labels, base)).collect();
    let mut names = BTreeSet::new();
    for (index, target) in targets.iter().enumerate() {
        if !names.insert(target.name()) {
            problems.plain(
                &format!("pushgateway[{index}]"),
                format_args!(
                    "pushes to the same group as an earlier target ({}): each would overwrite the other",
                    target.name()
                ),
            );
        }
    }
    targets
}

/// Each `[[remote_write]]`, and no two sharing a name (it names the queue).
fn validate_remote_writes(problems: &mut Problems<'_>, raw: &[RawRemoteWrite], base: &Path) -> Vec<RemoteWriteConfig> {
    let targets: Vec<RemoteWriteConfig> =
        raw.iter().enumerate().map(|(index, target)| target.validate(problems, index, base)).collect();
    let mut names = BTreeSet::new();
    for (index, target) in targets.iter().enumerate() {
        if !names.insert(target.name.as_str()) {
            problems.plain(
                &format!("remote_write[{index}].name"),
                format_args!(
                    "{:?} is taken by an earlier target: give each its own name (it names the queue)",
                    target.name
                ),
            );
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::config::Tables;
    use chrono_tz::Tz;

    fn parse_in(dir: &Path, text: &str) -> Result<Config, ConfigError> {
        parse(&dir.join("config.toml"), text)
    }

    fn with_database() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.sqlite3"), b"").unwrap();
        dir
    }

    #[test]
    fn shipped_config_parses_and_validates() {
        let dir = with_database();
        let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
        let shipped = shipped.replace("demo.sqlite3", "app.sqlite3");
        let config = parse_in(dir.path(), &shipped).unwrap();
        assert_eq!(config.source.window, Duration::from_secs(24 * 3600));
        assert_eq!(config.source.timezone, Tz::UTC);
        assert!(matches!(config.schedule, Schedule::Interval(interval) if interval == Duration::from_secs(15)));
        assert_eq!(config.metric.name, "api_transactions");
        assert_eq!(config.metric.help, "API Transactions");
        assert!(config.metric.zero_fill);
        assert_eq!(config.source.tables, Tables::default());
        assert_eq!(config.scrape_listen, Some("127.0.0.1:9184".parse().unwrap()));
        assert_eq!(config.source.database, dir.path().join("app.sqlite3"));
    }

    #[test]
    fn unknown_key_names_it_and_its_line() {
        let dir = with_database();
        let error = parse_in(
            dir.path(),
            "[source]\ndatabase = \"app.sqlite3\"\nwindw = \"24h\"\n[schedule]\ninterval = \"1s\"\n",
        )
        .unwrap_err();
        let message = error.to_string();
        assert!(message.contains("line 3"), "{message}");
        assert!(message.contains("unknown field `windw`"), "{message}");
    }

    #[test]
    fn every_problem_is_reported_with_key_and_line() {
        let dir = with_database();
        let text = "[source]\ndatabase = \"app.sqlite3\"\nwindow = \"24x\"\ntimezone = \"Mars/Olympus\"\n\
                    [schedule]\ninterval = \"1s\"\ncron = \"* * * * * *\"\n\
                    [labels]\napi = \"x\"\n\"bad-name\" = \"y\"\nsite = \"\"\n";
        let error = parse_in(dir.path(), text).unwrap_err();
        let problems = error.problems.join("\n");
        assert_eq!(error.problems.len(), 6, "{problems}");
        assert!(problems.contains("line 3: source.window: \"24x\" is not a duration"), "{problems}");
        assert!(problems.contains("line 4: source.timezone: \"Mars/Olympus\""), "{problems}");
        assert!(problems.contains("line 7: schedule.cron: set exactly one"), "{problems}");
        assert!(problems.contains("line 9: labels.api: collides"), "{problems}");
        assert!(problems.contains("line 10: labels.bad-name: not a label name"), "{problems}");
        assert!(problems.contains("line 11: labels.site: empty value"), "{problems}");
    }

    #[test]
    fn neither_interval_nor_cron_is_an_error() {
        let dir = with_database();
        let error = parse_in(dir.path(), "[source]\ndatabase = \"app.sqlite3\"\n").unwrap_err();
        assert_eq!(error.problems, ["schedule: set exactly one of schedule.interval (e.g. \"15s\") and schedule.cron"]);
    }

    #[test]
    fn bad_cron_is_an_error_and_good_cron_is_kept() {
        let dir = with_database();
        let error = parse_in(dir.path(), "[source]\ndatabase = \"app.sqlite3\"\n[schedule]\ncron = \"61 * * * *\"\n")
            .unwrap_err();
        assert!(
            error.problems[0].starts_with("line 4: schedule.cron: \"61 * * * *\" is not a cron expression"),
            "{:?}",
            error.problems
        );
        let config =
            parse_in(dir.path(), "[source]\ndatabase = \"app.sqlite3\"\n[schedule]\ncron = \"*/5 * * * * *\"\n")
                .unwrap();
        assert!(matches!(config.schedule, Schedule::Cron(ref expression) if expression == "*/5 * * * * *"));
    }

    #[test]
    fn missing_database_names_the_key_and_the_resolved_path() {
        let dir = tempfile::tempdir().unwrap();
        let error =
            parse_in(dir.path(), "[source]\ndatabase = \"nope.sqlite3\"\n[schedule]\ninterval = \"1s\"\n").unwrap_err();
        assert_eq!(error.problems.len(), 1);
        assert!(error.problems[0].starts_with("line 2: source.database: no such file"), "{:?}", error.problems);
        assert!(error.problems[0].contains(&dir.path().join("nope.sqlite3").display().to_string()));
    }

    #[test]
    fn zero_and_bad_durations_and_listen_address_are_errors() {
        let dir = with_database();
        let error = parse_in(
            dir.path(),
            "[source]\ndatabase = \"app.sqlite3\"\nbusy_timeout = \"0s\"\n[schedule]\ninterval = \"fast\"\n\
             [scrape]\nlisten = \"localhost\"\n[metric]\nname = \"api-transactions\"\n",
        )
        .unwrap_err();
        let problems = error.problems.join("\n");
        assert!(problems.contains("line 3: source.busy_timeout: must be longer than zero"), "{problems}");
        assert!(problems.contains("line 5: schedule.interval: \"fast\" is not a duration"), "{problems}");
        assert!(problems.contains("line 7: scrape.listen: \"localhost\" is not an address"), "{problems}");
        assert!(problems.contains("line 9: metric.name: \"api-transactions\" is not a metric name"), "{problems}");
    }
}
