//! The configuration file as a whole: the TOML parsed with its spans and deserialized past every
//! unknown key and wrong type (`common::deserialize`), then one `validate` step that hands each
//! table to the module it configures (`source`, `exposition`, the outlets) and checks what spans
//! tables, so every problem is reported at once with its key and line. Every duration, size and
//! count has its range in `common::ranges`. This sits above the outlets and composes their
//! settings; none of them imports it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::common::deserialize::deserialize_past_mistakes;
use crate::common::files::{read_regular_text, readable_by_everyone};
use crate::common::logging::LogFormat;
use crate::common::problems::{DurationText, Problems, duration};
use crate::common::ranges::SCHEDULE_INTERVAL;
use crate::common::redact::redacted_config;
use crate::exposition::config::{MetricConfig, RawLabels, RawMetric, validate_labels};
use crate::http::config::remember_proxy_credentials;
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
    /// `[log] format`, for `main` to set up logging with.
    pub log_format: LogFormat,
    /// What is allowed but unwise (a weak secret, a secret file others may read).
    pub(crate) warnings: Vec<String>,
}

impl Config {
    /// The `[source]` table: the database to read and how.
    pub fn source(&self) -> &SourceConfig {
        &self.source
    }

    /// Logs each warning the config gave: at start, and after a reload.
    pub fn log_warnings(&self) {
        for warning in &self.warnings {
            tracing::warn!(config = %self.path.display(), "{warning}");
        }
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

/// Where the Debian package installs the configuration, which its unit passes with `--config`.
pub const PACKAGED_PATH: &str = "/etc/apimetrics-agent/config.toml";

/// Reads and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = read_regular_text(path).map_err(|error| {
        let packaged = Path::new(PACKAGED_PATH);
        let hint = if error.kind() == std::io::ErrorKind::NotFound && path != packaged && packaged.is_file() {
            format!("pass --config {PACKAGED_PATH}, where the Debian package installed it, or set APIMETRICS_CONFIG")
        } else {
            "pass --config PATH or set APIMETRICS_CONFIG".to_owned()
        };
        ConfigError { path: path.to_owned(), problems: vec![format!("cannot read it: {error} ({hint})")] }
    })?;
    parse(path, &text)
}

/// A warning when the config holds secrets of its own and every user on the machine may read it:
/// for each key, the file key to move its secret to, where there is one.
fn warn_of_secrets_everyone_may_read(problems: &mut Problems<'_>, path: &Path) {
    let mut keys = problems.take_inline_secrets();
    keys.dedup();
    let Some((mode, _)) = readable_by_everyone(path).filter(|_| !keys.is_empty()) else { return };
    // "the secret at KEY to FILE KEY", for a key whose secret has a file form.
    let move_to_file = |key: &str| {
        if key == "source.database" {
            return Some("the password in source.database to source.password_file".to_owned());
        }
        [(".basic_auth.password", ".basic_auth.password_file"), (".bearer_token", ".bearer_token_file")]
            .into_iter()
            .find_map(|(inline, file)| key.strip_suffix(inline).map(|table| format!("{key} to {table}{file}")))
    };
    let moves: Vec<String> = keys.iter().filter_map(|key| move_to_file(key)).collect();
    let fixed: Vec<&str> = keys.iter().map(String::as_str).filter(|key| move_to_file(key).is_none()).collect();
    let mut remedies = Vec::new();
    if !moves.is_empty() {
        remedies.push(format!(
            "move {}, naming a file only the agent's user may read (LoadCredential= under systemd)",
            moves.join(", ")
        ));
    }
    if !fixed.is_empty() {
        remedies.push(format!(
            "{} {} no file form: keep the config from other users (mode 0640, in a group the agent's user has: \
             SupplementaryGroups= under systemd)",
            fixed.join(", "),
            if fixed.len() == 1 { "has" } else { "have" }
        ));
    }
    problems.warn(
        &keys.join(", "),
        format_args!(
            "secret written in {}, which every user on this machine may read (mode {mode:04o}): {}",
            path.display(),
            remedies.join("; ")
        ),
    );
}

/// Parses and validates configuration text; `path` names it in messages and anchors relative paths.
/// Every problem is reported: unknown keys and values of the wrong type are taken out and the
/// rest checked as if they were not there.
pub(crate) fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let mut problems = Problems::new(text);
    let config = deserialize_past_mistakes::<RawConfig>(text, &mut problems).map(|raw| {
        let mut config = raw.validate(&mut problems, path, text);
        warn_of_secrets_everyone_may_read(&mut problems, path);
        config.warnings = problems.take_warnings();
        config
    });
    match (config, problems.into_messages()) {
        (Some(config), found) if found.is_empty() => Ok(config),
        (_, found) if found.is_empty() => {
            Err(ConfigError { path: path.to_owned(), problems: vec!["cannot be read as TOML".to_owned()] })
        }
        (_, found) => Err(ConfigError { path: path.to_owned(), problems: found }),
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
    /// The Django database to read; required (its `database` key is).
    #[serde(default)]
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
    /// How the agent writes its own log.
    #[serde(default)]
    log: RawLog,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    /// "text" (one record per line) or "json" (one object per line); `--log-format` overrides
    /// it. Read at start: a reload does not change it.
    format: Option<Spanned<String>>,
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
    interval: Option<Spanned<DurationText>>,
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
    /// The address to serve `/metrics` and `/healthz` on, e.g. "127.0.0.1:9184"; required in the
    /// table.
    listen: Option<Spanned<String>>,
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
        let log_format = self.log.validate(problems);
        remember_proxies_from_the_environment(problems);
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
            log_format,
            warnings: Vec::new(),
        }
    }
}

/// Remembers the credentials of the proxies the environment names (`HTTPS_PROXY` and its kin),
/// which a target without `proxy_url` uses, so that a proxy quoting them cannot make them show.
fn remember_proxies_from_the_environment(problems: &mut Problems<'_>) {
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"] {
        if let Some(url) = std::env::var(name).ok().and_then(|value| reqwest::Url::parse(&value).ok()) {
            // Not written in the config: no warning about who may read it.
            let _ = remember_proxy_credentials(problems, &format!("{name} (environment)"), &url);
        }
    }
}

impl RawLog {
    fn validate(&self, problems: &mut Problems<'_>) -> LogFormat {
        let Some(format) = &self.format else { return LogFormat::default() };
        format.get_ref().parse().unwrap_or_else(|error| {
            problems.at(format, "log.format", error);
            LogFormat::default()
        })
    }
}

impl RawSchedule {
    fn validate(&self, problems: &mut Problems<'_>) -> Schedule {
        let fallback = Schedule::Interval(SCHEDULE_INTERVAL.default_or_min());
        match (&self.interval, &self.cron) {
            (Some(_), Some(cron)) => {
                problems.at(cron, "schedule.cron", "set exactly one of schedule.interval and schedule.cron, not both");
                fallback
            }
            (None, None) => {
                problems.missing("schedule", "set exactly one of schedule.interval (e.g. \"15s\") and schedule.cron");
                fallback
            }
            (Some(interval), None) => {
                Schedule::Interval(duration(problems, Some(interval), "schedule.interval", &SCHEDULE_INTERVAL))
            }
            (None, Some(cron)) => match next_cron_time(cron.get_ref(), chrono::Utc::now()) {
                Ok(_) => Schedule::Cron(cron.get_ref().clone()),
                Err(problem) => {
                    problems.at(cron, "schedule.cron", format_args!("{:?} {problem}", cron.get_ref()));
                    fallback
                }
            },
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

/// The first time after `now` that the cron `expression` names; the problem, as the end of a
/// sentence about the expression, when it does not parse or names no time to come (30 February,
/// a year gone by).
fn next_cron_time(
    expression: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>, String> {
    let cron = parse_cron(expression).map_err(|error| {
        format!("is not a cron expression: {error} (six fields, seconds first, e.g. \"*/15 * * * * *\")")
    })?;
    cron.find_next_occurrence(&now, false)
        .map_err(|_| "names no time to come (a day no month has, or a year gone by?)".to_owned())
}

impl RawScrape {
    fn validate(&self, problems: &mut Problems<'_>) -> Option<SocketAddr> {
        let Some(listen) = &self.listen else {
            problems.missing(
                "scrape.listen",
                "missing: the address to serve /metrics on, e.g. \"127.0.0.1:9184\" (or leave [scrape] out)",
            );
            return None;
        };
        listen
            .get_ref()
            .parse::<SocketAddr>()
            .map_err(|_| {
                problems.at(
                    listen,
                    "scrape.listen",
                    format_args!("{:?} is not an address with a port, e.g. \"127.0.0.1:9184\"", listen.get_ref()),
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
mod never_panics;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::config::{Database, Tables};
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
        assert_eq!(config.source.busy_timeout, Duration::from_secs(5));
        assert_eq!(config.source.timeout, Duration::from_secs(30));
        assert!(matches!(config.schedule, Schedule::Interval(interval) if interval == Duration::from_secs(15)));
        assert_eq!(config.metric.name, "api_transactions");
        assert_eq!(config.metric.help, "API Transactions");
        assert!(config.metric.zero_fill);
        assert_eq!(config.source.tables, Tables::default());
        assert_eq!(config.scrape_listen, Some("127.0.0.1:9184".parse().unwrap()));
        assert!(matches!(&config.source.database, Database::Sqlite(path) if *path == dir.path().join("app.sqlite3")));
    }

    #[test]
    fn unknown_key_names_it_and_its_line() {
        let dir = with_database();
        let error = parse_in(
            dir.path(),
            "[source]\ndatabase = \"app.sqlite3\"\nwindw = \"24h\"\n[schedule]\ninterval = \"1s\"\n",
        )
        .unwrap_err();
        assert_eq!(
            error.problems,
            ["line 3: source.windw: unknown key: did you mean `window`? (expected one of `database`, `window`, \
              `timezone`, `busy_timeout`, `timeout`, `rows_per_read`, `api_table`, `status_table`, \
              `transaction_table`, `password_file`, `sslmode`, `sslrootcert`)"]
        );
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
        assert!(
            problems.contains("line 3: source.busy_timeout: \"0s\" is out of range: from 1ms to 10min (default 5s)"),
            "{problems}"
        );
        assert!(problems.contains("line 5: schedule.interval: \"fast\" is not a duration"), "{problems}");
        assert!(problems.contains("line 7: scrape.listen: \"localhost\" is not an address"), "{problems}");
        assert!(problems.contains("line 9: metric.name: \"api-transactions\" is not a metric name"), "{problems}");
    }

    /// The example: four independent mistakes in four tables, all reported in one run.
    #[test]
    fn an_unknown_key_a_wrong_type_a_bad_value_and_a_cross_field_rule_are_all_reported() {
        let dir = with_database();
        let text = "[source]\ndatabase = \"app.sqlite3\"\nwindow = \"100000000000h\"\n\
                    [schedule]\nintervall = \"15s\"\n\
                    [metric]\nzero_fill = \"yes\"\n\
                    [[remote_write]]\nurl = \"http://a/write\"\nbasic_auth = { username = \"u\", password = \"p\" }\n\
                    bearer_token = \"t\"\n";
        let error = parse_in(dir.path(), text).unwrap_err();
        assert_eq!(
            error.problems,
            [
                "line 3: source.window: \"100000000000h\" is out of range: from 1s to 366d (default 24h)",
                "line 5: schedule.intervall: unknown key: did you mean `interval`? (expected one of `interval`, \
                 `cron`, `run_on_start`)",
                "line 7: metric.zero_fill: invalid type: string \"yes\", expected a boolean",
                "line 10: remote_write[0].basic_auth: set basic_auth or a bearer token, not both",
            ],
            "{error}"
        );
    }

    #[test]
    fn a_secret_of_the_wrong_type_or_in_a_bad_url_is_named_never_shown() {
        let dir = with_database();
        let text = "[source]\ndatabase = \"app.sqlite3\"\n[schedule]\ninterval = \"1s\"\n\
                    [[pushgateway]]\nurl = \"http://u:hunter2@gw:port\"\nbasic_auth = { username = \"u\", password = [\"hunter2\"] }\n\
                    [[remote_write]]\nurl = \"ftp://u:hunter2@r\"\nbearer_token = { token = \"hunter2\" }\n\
                    headers = { Authorization = 2, X-Token = \"Bearer \\nhunter2\" }\nproxy_url = \"hunter2@proxy\"\n\
                    [[pushgateway]]\nurl = \"http://gw2\"\nproxy_url = \"socks5://u:hunter2@127.0.0.1:1080\"\n";
        let error = parse_in(dir.path(), text).unwrap_err();
        let message = error.to_string();
        assert!(!message.contains("hunter2"), "{message}");
        for expected in [
            "line 6: pushgateway[0].url: \"http://<redacted>@gw:port\" is not a URL",
            "line 7: pushgateway[0].basic_auth.password: wrong type: array (not shown: it may be a secret), expected a string",
            "line 9: remote_write[0].url: holds credentials",
            "line 10: remote_write[0].bearer_token: wrong type: table (not shown: it may be a secret)",
            "line 11: remote_write[0].headers.Authorization: wrong type: integer (not shown: it may be a secret)",
            "line 11: remote_write[0].headers.X-Token: is not a valid HTTP header value",
            "line 12: remote_write[0].proxy_url: \"<redacted>@proxy\" is not a proxy URL",
            "line 15: pushgateway[1].proxy_url: \"socks5://<redacted>@127.0.0.1:1080\": this build speaks to HTTP \
             proxies only, not SOCKS",
        ] {
            assert!(message.contains(expected), "{expected} not in:\n{message}");
        }
        assert_eq!(error.problems.len(), 8, "{message}");
    }

    #[test]
    fn weak_secrets_and_secret_files_others_may_read_are_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let dir = with_database();
        std::fs::write(dir.path().join("token"), "a-long-enough-token\n").unwrap();
        std::fs::set_permissions(dir.path().join("token"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = "[source]\ndatabase = \"app.sqlite3\"\n[schedule]\ninterval = \"1s\"\n\
                    [[pushgateway]]\nurl = \"http://gw\"\nbasic_auth = { username = \"u\", password = \"short\" }\n\
                    proxy_url = \"http://p:pw@proxy:3128\"\nheaders = { X-Api-Key = \"k\", X-Source = \"s\" }\n\
                    [[remote_write]]\nurl = \"http://r/w\"\nbearer_token_file = \"token\"\n";
        let config = parse_in(dir.path(), text).unwrap();
        let warned = config.warnings.join("\n");
        for expected in [
            "pushgateway[0].basic_auth.password: the secret is shorter than 8 characters",
            "pushgateway[0].proxy_url: the secret is shorter than 8 characters",
            "pushgateway[0].headers.X-Api-Key: the secret is shorter than 8 characters",
            // A header not known to be harmless is a secret, whatever its name.
            "pushgateway[0].headers.X-Source: the secret is shorter than 8 characters",
            "remote_write[0].bearer_token_file: ",
            "token holds a secret and every user on this machine may read it (mode 0644): `chmod o-r` it",
        ] {
            assert!(warned.contains(expected), "{expected} not in:\n{warned}");
        }
        assert_eq!(config.warnings.len(), 5, "{warned}");
        assert!(!warned.contains("\"short\"") && !warned.contains(":pw@"), "{warned}");
    }

    #[test]
    fn a_header_value_is_a_secret_whole_and_in_the_parts_a_server_quotes_alone() {
        let dir = with_database();
        let text = "[source]\ndatabase = \"app.sqlite3\"\n[schedule]\ninterval = \"1s\"\n\
                    [[remote_write]]\nurl = \"http://r/w\"\nheaders = { Authorization = \"Bearer eyJhbGciOi.payload.sig\" }\n\
                    [[remote_write]]\nurl = \"http://r/w2\"\nheaders = { Authorization = \"Basic YWdlbnQ6c2hvcnQ=\" }\n";
        let config = parse_in(dir.path(), text).unwrap();
        assert_eq!(crate::common::redact::redact("bad token eyJhbGciOi.payload.sig"), "bad token <redacted>");
        assert_eq!(crate::common::redact::redact("user agent:short"), "user <redacted>");
        let warned = config.warnings.join("\n");
        assert!(warned.contains("remote_write[1].headers.Authorization: the secret is shorter than 8"), "{warned}");
        assert_eq!(config.warnings.len(), 1, "{warned}");

        let mistyped = "[source]\ndatabase = \"app.sqlite3\"\n[schedule]\ninterval = \"1s\"\n\
                        [[remote_write]]\nurl = \"http://r/w\"\nheaders = { \"Authorization: Bearer n4me-s3cret\" = \"x\" }\n";
        let message = parse_in(dir.path(), mistyped).unwrap_err().to_string();
        assert!(message.contains("remote_write[0].headers: a header's name holds a space or a colon"), "{message}");
        assert!(!message.contains("n4me-s3cret"), "{message}");
    }

    #[test]
    fn durations_outside_their_ranges_are_refused_and_a_cron_that_never_comes_too() {
        let dir = with_database();
        for (keys, expected) in [
            (
                "[schedule]\ninterval = \"1ns\"\n",
                "line 4: schedule.interval: \"1ns\" is out of range: from 100ms to 366d",
            ),
            (
                "[schedule]\ninterval = \"18446744073709551616s\"\n",
                "line 4: schedule.interval: \"18446744073709551616s\" is not a duration",
            ),
            ("[schedule]\ncron = \"0 0 0 30 2 *\"\n", "line 4: schedule.cron: \"0 0 0 30 2 *\" names no time to come"),
            ("[schedule]\ncron = \"0 0 0 1 1 * 2020\"\n", "line 4: schedule.cron: \"0 0 0 1 1 * 2020\" names no time"),
        ] {
            let error = parse_in(dir.path(), &format!("[source]\ndatabase = \"app.sqlite3\"\n{keys}")).unwrap_err();
            assert_eq!(error.problems.len(), 1, "{error}");
            assert!(error.problems[0].starts_with(expected), "{error}");
        }
    }

    #[test]
    fn a_duration_or_size_of_another_type_is_told_what_is_expected() {
        let dir = with_database();
        let text = "[source]\ndatabase = \"app.sqlite3\"\nwindow = 24\n[schedule]\ninterval = \"1s\"\n\
                    [[remote_write]]\nurl = \"http://r/w\"\nqueue = { max_bytes = 4096 }\nmax_samples_per_send = 1e3\n";
        let error = parse_in(dir.path(), text).unwrap_err();
        assert_eq!(
            error.problems,
            [
                "line 3: source.window: invalid type: integer `24`, expected a duration in quotes, e.g. \"15s\" or \
                 \"500ms\"",
                "line 8: remote_write[0].queue.max_bytes: invalid type: integer `4096`, expected a size in quotes, e.g. \
                 \"256MiB\"",
                "line 9: remote_write[0].max_samples_per_send: invalid type: floating point `1000.0`, expected an integer",
            ]
        );
    }

    #[test]
    fn the_lock_wait_must_end_before_the_ticks_deadline() {
        let dir = with_database();
        let with = |keys: &str| {
            parse_in(
                dir.path(),
                &format!("[source]\ndatabase = \"app.sqlite3\"\n{keys}[schedule]\ninterval = \"1s\"\n"),
            )
        };
        let config = with("").unwrap();
        assert_eq!(
            (config.source.busy_timeout, config.source.timeout),
            (Duration::from_secs(5), Duration::from_secs(30))
        );
        let error = with("busy_timeout = \"1m\"\n").unwrap_err();
        assert_eq!(
            error.problems,
            [
                "line 3: source.busy_timeout: 1m is not shorter than source.timeout (30s), the deadline of a tick's whole \
              reading: make it shorter"
            ]
        );
        // Unset, the lock wait stays within a short deadline: half of it.
        let short = with("timeout = \"2s\"\n").unwrap();
        assert_eq!((short.source.busy_timeout, short.source.timeout), (Duration::from_secs(1), Duration::from_secs(2)));
        assert_eq!(with("timeout = \"2s\"\nbusy_timeout = \"1s\"\n").unwrap().source.timeout, Duration::from_secs(2));
    }

    #[test]
    fn a_config_of_no_toml_names_the_line() {
        let dir = with_database();
        let error = parse_in(dir.path(), "[source]\ndatabase = \"app.sqlite3\"\nwindow = 24h\n").unwrap_err();
        assert_eq!(error.problems.len(), 1, "{error}");
        assert!(error.problems[0].starts_with("line 3: TOML syntax: "), "{error}");
    }

    #[test]
    fn a_missing_required_key_is_named_once() {
        let dir = with_database();
        let error = parse_in(
            dir.path(),
            "[schedule]\ninterval = \"1s\"\n[scrape]\nenable_reload = true\n[[pushgateway]]\njob = \"j\"\n\
             [[remote_write]]\nurl = 5\n",
        )
        .unwrap_err();
        let problems = error.problems.join("\n");
        assert!(
            problems.contains("line 8: remote_write[0].url: invalid type: integer `5`")
                || problems.contains("line 8: remote_write[0].url: wrong type: integer"),
            "{problems}"
        );
        assert!(problems.contains("source.database: missing"), "{problems}");
        assert!(problems.contains("scrape.listen: missing"), "{problems}");
        assert!(problems.contains("pushgateway[0].url: missing"), "{problems}");
        assert!(!problems.contains("remote_write[0].url: missing"), "{problems}");
        assert_eq!(error.problems.len(), 4, "{problems}");
    }
}
