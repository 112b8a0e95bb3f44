//! Shared helpers: Django-schema databases in temporary folders, config files, the agent binary,
//! free loopback ports and polling with a deadline.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use apimetrics_agent::common::django_time::django_timestamp;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use rusqlite::{Connection, params};

pub(crate) const SCHEMA: &str = include_str!("../../schema/django.sql");

/// A temporary folder holding `app.sqlite3`, made from `schema/django.sql`, and configs beside it.
pub(crate) struct Site {
    pub(crate) directory: tempfile::TempDir,
}

impl Site {
    pub(crate) fn new() -> Site {
        let site = Site { directory: tempfile::tempdir().unwrap() };
        site.connect().execute_batch(SCHEMA).unwrap();
        site
    }

    pub(crate) fn database(&self) -> PathBuf {
        self.directory.path().join("app.sqlite3")
    }

    /// A read-write connection, as the app has.
    pub(crate) fn connect(&self) -> Connection {
        let connection = Connection::open(self.database()).unwrap();
        connection.busy_timeout(Duration::from_secs(5)).unwrap();
        connection
    }

    pub(crate) fn add_api(&self, name: &str) -> i64 {
        let connection = self.connect();
        connection
            .execute("INSERT INTO apiMetrics_api (name, description, params) VALUES (?1, '', '{}')", [name])
            .unwrap();
        connection.last_insert_rowid()
    }

    pub(crate) fn add_status(&self, name: &str) -> i64 {
        let connection = self.connect();
        connection
            .execute("INSERT INTO apiMetrics_transactionstatus (name, description) VALUES (?1, '')", [name])
            .unwrap();
        connection.last_insert_rowid()
    }

    /// Adds `n` transactions of one API and status, last modified at the text `time_modified`.
    pub(crate) fn add_transactions(&self, n: usize, api_id: i64, status_id: i64, time_modified: &str) {
        let mut connection = self.connect();
        let transaction = connection.transaction().unwrap();
        for _ in 0..n {
            transaction
                .execute(
                    "INSERT INTO apiMetrics_transaction (amount, time_created, time_modified, api_id, status_id) \
                     VALUES (10.5, ?1, ?1, ?2, ?3)",
                    params![time_modified, api_id, status_id],
                )
                .unwrap();
        }
        transaction.commit().unwrap();
    }

    /// Writes `name` beside the database; the config's paths resolve against this folder.
    pub(crate) fn write_config(&self, name: &str, text: &str) -> PathBuf {
        let path = self.directory.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A config reading `app.sqlite3` every `interval`, with `extra` TOML appended.
    pub(crate) fn config(&self, interval: &str, extra: &str) -> PathBuf {
        self.config_with_source("", interval, extra)
    }

    /// Like `config`, with `source_keys` added to its `[source]` table.
    pub(crate) fn config_with_source(&self, source_keys: &str, interval: &str, extra: &str) -> PathBuf {
        self.write_config(
            "config.toml",
            &format!(
                "[source]\ndatabase = \"app.sqlite3\"\n{source_keys}[schedule]\ninterval = \"{interval}\"\n{extra}"
            ),
        )
    }
}

/// Two APIs × two statuses: Mpesa Express/Pending 3 and Mpesa B2C/Failed 2 in the window, 9
/// more B2C/Failed outside it, the other two pairs empty.
pub(crate) fn site_with_transactions() -> Site {
    let site = Site::new();
    let express = site.add_api("Mpesa Express");
    let b2c = site.add_api("Mpesa B2C");
    let pending = site.add_status("Pending");
    let failed = site.add_status("Failed");
    site.add_transactions(3, express, pending, &hours_ago(1.0));
    site.add_transactions(2, b2c, failed, &hours_ago(5.0));
    site.add_transactions(9, b2c, failed, &hours_ago(30.0));
    site
}

/// `instant` as Django stores it in UTC.
pub(crate) fn utc_text(instant: DateTime<Utc>) -> String {
    django_timestamp(instant, Tz::UTC)
}

/// The ORM's counts by (api, status) in what tests/django/make_database.py printed.
pub(crate) fn orm_counts(made: &serde_json::Value) -> std::collections::BTreeMap<(String, String), u64> {
    made["counts"]
        .as_array()
        .expect("make_database.py prints its counts")
        .iter()
        .map(|row| {
            ((row[0].as_str().unwrap().to_owned(), row[1].as_str().unwrap().to_owned()), row[2].as_u64().unwrap())
        })
        .collect()
}

/// The interpreter with Django, psycopg and PyMySQL installed; tests/run sets it up.
pub(crate) fn python() -> String {
    std::env::var("APIMETRICS_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// `text` with every byte but the URL-unreserved ones written `%XX`.
pub(crate) fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (byte as char).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

pub(crate) fn hours_ago(hours: f64) -> String {
    utc_text(Utc::now() - chrono::Duration::milliseconds((hours * 3_600_000.0) as i64))
}

pub(crate) fn agent(config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_apimetrics-agent"));
    command.arg("--config").arg(config).env_remove("APIMETRICS_CONFIG").env("RUST_LOG", "info");
    command
}

pub(crate) fn run_agent(config: &Path, arguments: &[&str]) -> Output {
    agent(config).args(arguments).stdin(Stdio::null()).output().unwrap()
}

/// Runs the agent as "nobody", with no supplementary groups: CI runs as root, who may read and
/// write anything, and a service user may not.
pub(crate) fn run_agent_as_nobody(config: &Path, arguments: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", env!("CARGO_BIN_EXE_apimetrics-agent")])
        .arg("--config")
        .arg(config)
        .args(arguments)
        .env_remove("APIMETRICS_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs `check` on `config` and asserts the agent refuses it (exit 2) with each of `expected`
/// in its message; returns the message.
pub(crate) fn assert_config_refused(config: &Path, expected: &[&str]) -> String {
    let output = run_agent(config, &["check"]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    for expected in expected {
        assert!(message.contains(expected), "missing {expected:?} in:\n{message}");
    }
    message
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// A loopback port free now and handed to no other test in this run. Tests run in separate
/// processes, and the kernel may hand a just-released port to the next caller, so each port
/// handed out is claimed with a file; claims older than ten minutes are from earlier runs.
pub(crate) fn free_port() -> u16 {
    let claims = Path::new(env!("CARGO_TARGET_TMPDIR")).join("claimed-ports");
    std::fs::create_dir_all(&claims).unwrap();
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let claim = claims.join(port.to_string());
        let stale = std::fs::metadata(&claim)
            .and_then(|metadata| metadata.modified())
            .is_ok_and(|claimed| claimed.elapsed().unwrap_or_default() > Duration::from_secs(600));
        if stale {
            let _ = std::fs::remove_file(&claim);
        }
        if std::fs::OpenOptions::new().write(true).create_new(true).open(&claim).is_ok() {
            return port;
        }
    }
}

/// Polls `probe` until it returns `Some`, or panics after `deadline` saying what was awaited.
pub(crate) fn wait_for<T>(what: &str, deadline: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(started.elapsed() < deadline, "gave up after {deadline:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The body of a GET, or `None` while the server is not answering.
pub(crate) fn http_get(url: &str) -> Option<(u16, String)> {
    let response = reqwest::blocking::Client::new().get(url).timeout(Duration::from_secs(5)).send().ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().ok()?))
}

/// The value of the sample written exactly as `series` (name and labels) in an exposition.
pub(crate) fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A running agent, killed when dropped if the test has not stopped it.
pub(crate) struct Running {
    pub(crate) child: Child,
    pub(crate) port: u16,
    log: PathBuf,
}

impl Running {
    /// Starts `run` on `config`, whose scrape listener must be on `port`, and waits until it serves.
    pub(crate) fn start(config: &Path, port: u16) -> Running {
        let log = config.with_extension("log");
        let child = agent(config)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Running::adopt(child, port, log)
    }

    /// Takes charge of an agent started otherwise, logging to `log`, and waits until it serves.
    pub(crate) fn adopt(child: Child, port: u16, log: PathBuf) -> Running {
        let running = Running { child, port, log };
        wait_for("the scrape endpoint", Duration::from_secs(60), || http_get(&running.url("/healthz")));
        running
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub(crate) fn metrics(&self) -> String {
        let (status, body) = http_get(&self.url("/metrics")).expect("the agent answers /metrics");
        assert_eq!(status, 200);
        body
    }

    /// How many ticks have ended with `result` ("success" or "failure"), as /metrics counts
    /// them, whatever constant labels they carry.
    pub(crate) fn ticks(&self, result: &str) -> f64 {
        let samples = crate::peers::parse_exposition(&self.metrics());
        crate::peers::value_of(&samples, "apimetrics_agent_ticks_total", &[("result", result)])
            .expect("/metrics counts the ticks")
    }

    /// Waits until at least `n` ticks have ended with `result`; returns the /metrics page that
    /// showed it.
    pub(crate) fn wait_for_ticks(&self, result: &str, n: f64) -> String {
        wait_for(&format!("{n} ticks ending in {result}"), Duration::from_secs(20), || {
            let metrics = self.metrics();
            let samples = crate::peers::parse_exposition(&metrics);
            let counted = crate::peers::value_of(&samples, "apimetrics_agent_ticks_total", &[("result", result)])?;
            (counted >= n).then_some(metrics)
        })
    }

    /// Everything the agent has logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// Sends SIGTERM and returns the exit status and everything the agent logged.
    pub(crate) fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let status =
            wait_for("the agent to exit after SIGTERM", Duration::from_secs(15), || self.child.try_wait().unwrap());
        (status, self.log())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The password of the reader roles the server tests make; `server_config` writes it to a file.
pub(crate) const READER_PASSWORD: &str = "reader-password-7301";

/// A config in `directory` reading the server at `url` with `READER_PASSWORD` from a file (mode
/// 0600), `source_keys` added to `[source]` and `extra` after it; ticking every second.
pub(crate) fn server_config(directory: &Path, url: &str, source_keys: &str, extra: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let password_file = directory.join("db-password");
    std::fs::write(&password_file, format!("{READER_PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = directory.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"state\"\n[source]\ndatabase = \"{url}\"\npassword_file = \"db-password\"\n{source_keys}\
             [schedule]\ninterval = \"1s\"\n{extra}"
        ),
    )
    .unwrap();
    config
}

/// The `api_transactions` series of an exposition by (api, status).
pub(crate) fn counts_in(exposition: &str) -> std::collections::BTreeMap<(String, String), u64> {
    crate::peers::parse_exposition(exposition)
        .into_iter()
        .filter(|(name, _, _)| name == "api_transactions")
        .map(|(_, labels, value)| ((labels["api"].clone(), labels["status"].clone()), value as u64))
        .collect()
}
