//! The configuration file: serde types that mirror the TOML exactly, and the one `validate`
//! step that turns them into checked domain types or reports every problem with its key and line.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;
use serde::Deserialize;
use toml::Spanned;

use crate::pushgateway::{self, PushgatewayConfig, RawPushgateway};
use crate::remote_write::{self, RawRemoteWrite, RemoteWriteConfig};

/// The label names the aggregate itself uses; constant labels may not reuse them.
pub const AGGREGATE_LABELS: [&str; 2] = ["api", "status"];

/// The checked configuration the agent runs on.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from, for messages.
    pub path: PathBuf,
    /// The file's text with every secret replaced, for the status page.
    pub redacted_text: String,
    pub state_dir: PathBuf,
    pub source: SourceConfig,
    pub schedule: Schedule,
    pub run_on_start: bool,
    pub metric: MetricConfig,
    /// Constant labels on every series, sorted by name.
    pub labels: BTreeMap<String, String>,
    /// Where to serve `/metrics` and `/healthz`; `None` for no local endpoint.
    pub scrape_listen: Option<SocketAddr>,
    /// Whether the scrape endpoint serves `POST /-/reload`.
    pub enable_reload: bool,
    pub pushgateways: Vec<PushgatewayConfig>,
    pub remote_writes: Vec<RemoteWriteConfig>,
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub database: PathBuf,
    pub window: Duration,
    pub timezone: Tz,
    pub busy_timeout: Duration,
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

#[derive(Debug, Clone)]
pub enum Schedule {
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

#[derive(Debug, Clone)]
pub struct MetricConfig {
    pub name: String,
    pub help: String,
    pub zero_fill: bool,
}

/// A configuration that cannot be used; `main` exits with code 2 on it.
#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<String>,
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
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
        path: path.to_owned(),
        problems: vec![format!("cannot read it: {error} (pass --config PATH or set APIMETRICS_CONFIG)")],
    })?;
    parse(path, &text)
}

/// Parses and validates configuration text; `path` names it in messages and anchors relative paths.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text)
        .map_err(|error| ConfigError { path: path.to_owned(), problems: vec![describe_toml_error(text, &error)] })?;
    validate(path, text, raw)
}

fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end().to_owned();
    match error.span() {
        Some(span) => format!("line {}: {message}", line_of(text, span.start)),
        None => message,
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&byte| byte == b'\n').count() + 1
}

// ---------------------------------------------------------------------------------------------
// The TOML as written. Every field mirrors a key of config.toml.

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
    labels: BTreeMap<Spanned<String>, Spanned<String>>,
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    /// The Django SQLite file, relative to the config file; must exist.
    database: Option<Spanned<String>>,
    /// How far back a transaction's `time_modified` may lie to be counted.
    window: Option<Spanned<String>>,
    /// The IANA zone of the naive timestamps Django stored (UTC when `USE_TZ = True`).
    timezone: Option<Spanned<String>>,
    /// How long a read waits for the app's write lock before the tick fails.
    busy_timeout: Option<Spanned<String>>,
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
struct RawMetric {
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
// Validation: every problem is collected, each with its key and line.

/// The problems found so far, each with its key and, where the TOML has it, its line.
pub struct Problems<'a> {
    text: &'a str,
    /// Each problem with its line, or `usize::MAX` where it has none, to sort them as the file reads.
    found: Vec<(usize, String)>,
}

impl Problems<'_> {
    /// A problem with the value at `value`'s place in the file.
    pub fn at<T>(&mut self, value: &Spanned<T>, key: &str, message: impl fmt::Display) {
        let line = if value.span().end == 0 { None } else { Some(line_of(self.text, value.span().start)) };
        match line {
            Some(line) => self.found.push((line, format!("line {line}: {key}: {message}"))),
            None => self.found.push((usize::MAX, format!("{key}: {message}"))),
        }
    }

    /// A problem with no one place in the file.
    pub fn plain(&mut self, key: &str, message: impl fmt::Display) {
        self.found.push((usize::MAX, format!("{key}: {message}")));
    }
}

fn validate(path: &Path, text: &str, raw: RawConfig) -> Result<Config, ConfigError> {
    let mut problems = Problems { text, found: Vec::new() };
    let base = path.parent().unwrap_or(Path::new("."));

    let database = match &raw.source.database {
        None => {
            problems.plain("source.database", "missing: name the Django app's SQLite file");
            PathBuf::new()
        }
        Some(database) => {
            let resolved = base.join(database.get_ref());
            if !resolved.is_file() {
                problems.at(
                    database,
                    "source.database",
                    format_args!(
                        "no such file {:?} (the agent never creates it: point it at the Django app's SQLite database)",
                        resolved.display().to_string()
                    ),
                );
            }
            resolved
        }
    };
    let window = duration(&mut problems, raw.source.window.as_ref(), "source.window", "24h");
    let busy_timeout = duration(&mut problems, raw.source.busy_timeout.as_ref(), "source.busy_timeout", "5s");
    let timezone = match &raw.source.timezone {
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
    let tables = Tables {
        api: raw.source.api_table,
        status: raw.source.status_table,
        transaction: raw.source.transaction_table,
    };

    let schedule = match (&raw.schedule.interval, &raw.schedule.cron) {
        (Some(_), Some(cron)) => {
            problems.at(cron, "schedule.cron", "set exactly one of schedule.interval and schedule.cron, not both");
            Schedule::Interval(Duration::from_secs(15))
        }
        (None, None) => {
            problems.plain("schedule", "set exactly one of schedule.interval (e.g. \"15s\") and schedule.cron");
            Schedule::Interval(Duration::from_secs(15))
        }
        (Some(interval), None) => {
            Schedule::Interval(duration(&mut problems, Some(interval), "schedule.interval", "15s"))
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
    };

    let metric_name = raw.metric.name.get_ref().clone();
    if !is_metric_name(&metric_name) {
        problems.at(
            &raw.metric.name,
            "metric.name",
            format_args!("{metric_name:?} is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"),
        );
    }

    let mut labels = BTreeMap::new();
    for (name, value) in &raw.labels {
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

    let scrape_listen = raw.scrape.as_ref().and_then(|scrape| {
        scrape
            .listen
            .get_ref()
            .parse::<SocketAddr>()
            .map_err(|_| {
                problems.at(
                    &scrape.listen,
                    "scrape.listen",
                    format_args!(
                        "{:?} is not an address with a port, e.g. \"127.0.0.1:9184\"",
                        scrape.listen.get_ref()
                    ),
                );
            })
            .ok()
    });

    let pushgateways: Vec<PushgatewayConfig> = raw
        .pushgateway
        .iter()
        .enumerate()
        .map(|(index, target)| pushgateway::validate(&mut problems, index, target, &labels, base))
        .collect();
    let mut names = std::collections::BTreeSet::new();
    for (index, target) in pushgateways.iter().enumerate() {
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

    let remote_writes: Vec<RemoteWriteConfig> = raw
        .remote_write
        .iter()
        .enumerate()
        .map(|(index, target)| remote_write::validate(&mut problems, index, target, base))
        .collect();
    let mut names = std::collections::BTreeSet::new();
    for (index, target) in remote_writes.iter().enumerate() {
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

    if !problems.found.is_empty() {
        problems.found.sort_by_key(|(line, _)| *line);
        let problems = problems.found.into_iter().map(|(_, problem)| problem).collect();
        return Err(ConfigError { path: path.to_owned(), problems });
    }
    Ok(Config {
        path: path.to_owned(),
        redacted_text: redacted(text),
        state_dir: base.join(raw.agent.state_dir),
        source: SourceConfig { database, window, timezone, busy_timeout, tables },
        schedule,
        run_on_start: raw.schedule.run_on_start,
        metric: MetricConfig { name: metric_name, help: raw.metric.help, zero_fill: raw.metric.zero_fill },
        labels,
        scrape_listen,
        enable_reload: raw.scrape.as_ref().is_some_and(|scrape| scrape.enable_reload),
        pushgateways,
        remote_writes,
    })
}

/// A duration key: `value` if given, else `default`; zero and unparsable values are problems.
pub fn duration(problems: &mut Problems<'_>, value: Option<&Spanned<String>>, key: &str, default: &str) -> Duration {
    let Some(value) = value else {
        return humantime::parse_duration(default).expect("default durations parse");
    };
    match humantime::parse_duration(value.get_ref()) {
        Ok(parsed) if parsed.is_zero() => {
            problems.at(value, key, "must be longer than zero");
            parsed
        }
        Ok(parsed) => parsed,
        Err(error) => {
            problems.at(
                value,
                key,
                format_args!("{:?} is not a duration: {error} (e.g. \"500ms\", \"15s\", \"24h\")", value.get_ref()),
            );
            Duration::from_secs(1)
        }
    }
}

/// Keys whose values are secrets, and header names that usually carry one.
const SECRET_KEYS: [&str; 2] = ["password", "bearer_token"];
const SECRET_HEADER_WORDS: [&str; 6] = ["auth", "token", "key", "secret", "cookie", "password"];

/// The config's TOML with passwords, tokens and credential-like headers replaced by
/// "<redacted>" (comments are not kept: they may hold secrets too).
pub fn redacted(text: &str) -> String {
    fn redact(value: &mut toml::Value, in_headers: bool) {
        match value {
            toml::Value::Table(table) => {
                for (key, value) in table.iter_mut() {
                    let lower = key.to_ascii_lowercase();
                    let secret = SECRET_KEYS.contains(&lower.as_str())
                        || (in_headers && SECRET_HEADER_WORDS.iter().any(|word| lower.contains(word)));
                    if secret {
                        *value = toml::Value::String("<redacted>".to_owned());
                    } else {
                        redact(value, key == "headers");
                    }
                }
            }
            toml::Value::Array(items) => items.iter_mut().for_each(|item| redact(item, false)),
            _ => {}
        }
    }
    match text.parse::<toml::Table>() {
        Ok(table) => {
            let mut value = toml::Value::Table(table);
            redact(&mut value, false);
            toml::to_string_pretty(&value).unwrap_or_default()
        }
        Err(_) => String::new(),
    }
}

/// A size such as "256MiB", "1GB", "4096" (bytes); binary and decimal units.
pub fn byte_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(multiplier).filter(|size| *size > 0)
}

/// Parses a cron expression exactly as the scheduler will: six or seven fields, seconds first.
pub fn parse_cron(expression: &str) -> Result<croner::Cron, croner::errors::CronError> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expression)
}

pub fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

pub fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in(dir: &Path, text: &str) -> Result<Config, ConfigError> {
        parse(&dir.join("config.toml"), text)
    }

    fn with_database() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.sqlite3"), b"").unwrap();
        dir
    }

    #[test]
    fn secrets_are_redacted_from_the_shown_config() {
        let text = "[[pushgateway]]\nurl = \"http://gw\"\nbasic_auth = { username = \"agent\", password = \"hunter2\" }\n\
                    bearer_token = \"tok-1\"\nheaders = { Authorization = \"Basic eA==\", \"X-Scope-OrgID\" = \"site-1\" }\n";
        let shown = redacted(text);
        for secret in ["hunter2", "tok-1", "eA=="] {
            assert!(!shown.contains(secret), "{shown}");
        }
        for kept in ["agent", "site-1", "http://gw", "<redacted>"] {
            assert!(shown.contains(kept), "{shown}");
        }
    }

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(byte_size("256MiB"), Some(256 << 20));
        assert_eq!(byte_size("1GB"), Some(1_000_000_000));
        assert_eq!(byte_size("4096"), Some(4096));
        assert_eq!(byte_size("2 kib"), Some(2048));
        for bad in ["", "0", "MiB", "12XB", "-1MiB", "99999999999999999999GiB"] {
            assert_eq!(byte_size(bad), None, "{bad}");
        }
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
