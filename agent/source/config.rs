//! The `[source]` table: which Django database to read (a SQLite file, or a PostgreSQL, MySQL or
//! MariaDB server by URL), how far back, in which time zone, and under which table names.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;
use serde::Deserialize;
use toml::Spanned;

use super::database_file::refuse_what_is_no_readable_file;
use super::mysql_url::{self, MysqlServer};
use super::tls::{SslMode, root_store};
use crate::common::escape::percent_decoded;
use crate::common::files::read_regular_file;
use crate::common::problems::{DurationText, Problems, checked_duration, count, duration};
use crate::common::ranges::{SOURCE_BUSY_TIMEOUT, SOURCE_ROWS_PER_READ, SOURCE_TIMEOUT, SOURCE_WINDOW};
use crate::common::redact::{Secret, credentials_out_of_urls};
use crate::common::secret_settings::{read_secret, warn_if_weak};
use crate::common::unit_sandbox::unit_note;

/// A checked `[source]` table.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub database: Database,
    pub window: Duration,
    pub timezone: Tz,
    pub busy_timeout: Duration,
    /// The longest one tick's reading may take before it is stopped, or abandoned if stuck.
    pub timeout: Duration,
    /// The most rows one read transaction takes; a tick makes as many reads as the window needs.
    pub rows_per_read: u64,
    pub tables: Tables,
}

/// Which database the app keeps its tables in.
#[derive(Debug, Clone)]
pub enum Database {
    /// The app's SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL server.
    Postgres(Box<ServerConfig>),
    /// A MySQL or MariaDB server.
    Mysql(Box<MysqlServer>),
}

impl Database {
    /// How messages name it: the file's path, or the server's URL without its password.
    pub fn shown(&self) -> String {
        match self {
            Database::Sqlite(path) => path.display().to_string(),
            Database::Postgres(server) => server.shown.clone(),
            Database::Mysql(server) => server.shown.clone(),
        }
    }
}

/// A database server to read from, as `source.database` (a URL), `password_file`, `sslmode`
/// and `sslrootcert` say.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Host, port, user, database and password (its `Debug` hides the password).
    pub(crate) connect: tokio_postgres::Config,
    /// The URL without its password, for messages: `postgres://agent@db.internal:5432/app`.
    pub(crate) shown: String,
    pub(crate) sslmode: SslMode,
    /// PEM certificates of the CAs to trust for `verify-full`; `None`: the system's.
    pub(crate) root_certificates: Option<Vec<u8>>,
}

/// What is wrong with a `source.database` that names no file and is no server URL the agent
/// reads, when it looks meant for a server: a URL of another (or mistyped) scheme, or libpq's
/// `key=value` form.
fn no_path_nor_url(text: &str) -> Option<String> {
    const WANTED: &str = "a SQLite file's path, or a server's URL: postgres://USER@HOST:PORT/DBNAME or \
                          mysql://USER@HOST:PORT/DBNAME (lower case), the password in source.password_file";
    let keys = ["host=", "hostaddr=", "dbname=", "user=", "password=", "port=", "sslmode="];
    if text.split_whitespace().any(|word| keys.iter().any(|key| word.starts_with(key))) {
        return Some(format!("is libpq's key=value form, which the agent does not read: write {WANTED}"));
    }
    let scheme = text.split_once(':').map(|(scheme, _)| scheme)?;
    let is_scheme = !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c));
    is_scheme.then(|| {
        format!(
            "starts with {scheme:?}, a scheme the agent does not read (nor is it a file that exists): write {WANTED}"
        )
    })
}

/// Whether every host of `connect` is this machine (a Unix socket or a loopback address), where
/// no one else can answer in the server's place.
fn only_this_machine(connect: &tokio_postgres::Config) -> bool {
    connect.get_hosts().iter().all(|host| match host {
        tokio_postgres::config::Host::Tcp(name) => {
            name == "localhost"
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|address| address.is_loopback() || address.is_unspecified())
        }
        tokio_postgres::config::Host::Unix(_) => true,
    })
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
    /// The Django SQLite file, relative to the config file (must exist), or a server's URL:
    /// `postgres://user@host:5432/dbname`, `mysql://user@host:3306/dbname` or `mariadb://…`.
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
    /// A file holding the server's password (a trailing newline is ignored); servers only.
    password_file: Option<Spanned<String>>,
    /// TLS to the server: "disable", "prefer" (the default), "require" or "verify-full".
    sslmode: Option<Spanned<String>>,
    /// PEM certificates of the CAs that sign the server's certificate, for "verify-full".
    sslrootcert: Option<Spanned<String>>,
}

/// Whether `source.database` names a PostgreSQL server.
fn is_postgres_url(text: &str) -> bool {
    ["postgres://", "postgresql://"].iter().any(|scheme| text.starts_with(scheme))
}

/// Whether `source.database` names a MySQL or MariaDB server.
fn is_mysql_url(text: &str) -> bool {
    mysql_url::SCHEMES.iter().any(|scheme| text.starts_with(scheme))
}

/// `url` without its `sslmode` and `sslrootcert` query parameters (tokio-postgres knows neither
/// "verify-full" nor root certificates), and their values.
fn take_tls_parameters(url: &str) -> (String, Option<String>, Option<String>) {
    let Some((base, query)) = url.split_once('?') else { return (url.to_owned(), None, None) };
    let (mut sslmode, mut root, mut kept) = (None, None, Vec::new());
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("sslmode", value)) => sslmode = Some(percent_decoded(value)),
            Some(("sslrootcert", value)) => root = Some(percent_decoded(value)),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    (rest, sslmode, root)
}

/// `postgres://user@host:port/dbname`, for messages: never the password.
fn shown_server(connect: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = connect
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(index, host)| {
            let name = match host {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            let port = connect.get_ports().get(index).or(connect.get_ports().first()).copied().unwrap_or(5432);
            if name.contains(':') { format!("[{name}]:{port}") } else { format!("{name}:{port}") }
        })
        .collect();
    format!(
        "postgres://{}@{}/{}",
        connect.get_user().unwrap_or_default(),
        hosts.join(","),
        connect.get_dbname().unwrap_or_default()
    )
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
                problems.missing("source.database", "missing: name the Django app's SQLite file, or its server by URL");
                Database::Sqlite(PathBuf::new())
            }
            Some(url) if is_postgres_url(url.get_ref()) => {
                self.refuse_sqlite_keys(problems);
                Database::Postgres(Box::new(self.server(problems, url, base)))
            }
            Some(url) if is_mysql_url(url.get_ref()) => {
                self.refuse_sqlite_keys(problems);
                Database::Mysql(Box::new(self.mysql_server(problems, url, base)))
            }
            Some(database) => {
                self.refuse_server_keys(problems);
                let resolved = base.join(database.get_ref());
                let missing = std::fs::metadata(&resolved).is_err_and(|error| error.kind() == ErrorKind::NotFound);
                if missing {
                    // What was meant for a server is not echoed: it may hold the password.
                    let mistake = no_path_nor_url(database.get_ref()).unwrap_or_else(|| {
                        format!(
                            "no such file {:?} (the agent never creates it: point it at the Django app's SQLite \
                             database{})",
                            resolved.display().to_string(),
                            unit_note(&resolved)
                        )
                    });
                    problems.at(database, "source.database", mistake);
                } else if let Err(error) = refuse_what_is_no_readable_file(&resolved) {
                    problems.at(database, "source.database", error);
                }
                Database::Sqlite(resolved)
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

    /// The server `url` names, with `password_file`, `sslmode` and `sslrootcert` (which the URL
    /// may also carry, as libpq's do).
    fn server(&self, problems: &mut Problems<'_>, url: &Spanned<String>, base: &Path) -> ServerConfig {
        let (rest, url_sslmode, url_root) = take_tls_parameters(url.get_ref());
        let mut connect = match rest.parse::<tokio_postgres::Config>() {
            Ok(connect) => connect,
            Err(error) => {
                problems.at(
                    url,
                    "source.database",
                    format_args!(
                        // Not echoed: a password holding `?` or `#` would be taken for what
                        // follows the host.
                        "the URL is not a PostgreSQL URL ({}), e.g. \"postgres://agent@db.internal:5432/app\"",
                        credentials_out_of_urls(&error.to_string())
                    ),
                );
                tokio_postgres::Config::new()
            }
        };
        if connect.get_hosts().is_empty() {
            connect.host("localhost");
        }
        if connect.get_user().is_none() {
            problems.at(url, "source.database", "names no user: write it in the URL, postgres://USER@host/dbname");
        }
        if connect.get_dbname().is_none() {
            problems.at(url, "source.database", "names no database: end the URL with /DBNAME");
        }
        let in_url = connect.get_password().map(|password| Secret::new(String::from_utf8_lossy(password).into_owned()));
        if let Some(password) = self.password(problems, in_url.as_ref(), base) {
            connect.password(password.expose());
        }
        let (sslmode, root_certificates) = self.tls(problems, url, (url_sslmode, url_root), base);
        if connect.get_password().is_some()
            && matches!(sslmode, SslMode::Prefer | SslMode::Disable)
            && !only_this_machine(&connect)
        {
            problems.warn(
                "source.sslmode",
                format_args!(
                    "{:?}: the server is not verified, so whoever answers at its address could ask for the password \
                     in plain text and get it; set sslmode = \"verify-full\" (with sslrootcert), or \"require\" (the \
                     password then goes only into SCRAM bound to the TLS channel)",
                    sslmode.name()
                ),
            );
        }
        let shown = shown_server(&connect);
        ServerConfig { connect, shown, sslmode, root_certificates }
    }

    /// The MySQL or MariaDB server `url` names, with `password_file`, `sslmode` and `sslrootcert`.
    fn mysql_server(&self, problems: &mut Problems<'_>, url: &Spanned<String>, base: &Path) -> MysqlServer {
        let parsed = mysql_url::parse(url.get_ref()).unwrap_or_else(|mistake| {
            // Not echoed: a password holding `?` or `#` would be taken for what follows the host.
            problems.at(url, "source.database", format_args!("the URL {mistake}"));
            mysql_url::MysqlUrl::default()
        });
        let in_url = parsed.password.clone().map(Secret::new);
        let password = self.password(problems, in_url.as_ref(), base);
        let tls_in_url = (parsed.sslmode.clone(), parsed.sslrootcert.clone());
        let (sslmode, root_certificates) = self.tls(problems, url, tls_in_url, base);
        let server = MysqlServer {
            shown: parsed.shown(),
            host: parsed.host,
            port: parsed.port,
            user: parsed.user,
            password,
            database: parsed.database,
            sslmode,
            root_certificates,
        };
        if server.password.is_some() && sslmode != SslMode::VerifyFull && !server.is_this_machine() {
            problems.warn(
                "source.sslmode",
                format_args!(
                    "{:?}: the server is not verified, so whoever answers at its address could ask for the password \
                     (MySQL's caching_sha2_password sends it whole) and get it; set sslmode = \"verify-full\" \
                     (with sslrootcert)",
                    sslmode.name()
                ),
            );
        }
        server
    }

    /// The password: the URL's (`in_url`) or `password_file`'s, never both.
    fn password(&self, problems: &mut Problems<'_>, in_url: Option<&Secret>, base: &Path) -> Option<Secret> {
        if let Some(password) = in_url {
            problems.inline_secret("source.database");
            warn_if_weak(problems, "source.database", password);
            if let Some(file) = &self.password_file {
                problems.at(file, "source.password_file", "the URL holds a password already: keep one of the two");
            }
            return Some(password.clone());
        }
        let file = self.password_file.as_ref()?;
        let password = read_secret(problems, "source.password_file", file, &base.join(file.get_ref()))?;
        warn_if_weak(problems, "source.password_file", &password);
        Some(password)
    }

    /// `sslmode` and the CA certificates of `sslrootcert`, from the keys or the URL's own
    /// parameters (`in_url`), never both.
    fn tls(
        &self,
        problems: &mut Problems<'_>,
        url: &Spanned<String>,
        in_url: (Option<String>, Option<String>),
        base: &Path,
    ) -> (SslMode, Option<Vec<u8>>) {
        let (url_sslmode, url_root) = in_url;
        let sslmode = match (&self.sslmode, url_sslmode) {
            (Some(key), Some(_)) => {
                problems.at(key, "source.sslmode", "the URL sets sslmode already: keep one of the two");
                SslMode::Prefer
            }
            (Some(key), None) => SslMode::parse(key.get_ref()).unwrap_or_else(|| {
                problems.at(key, "source.sslmode", format_args!("{:?} is not {}", key.get_ref(), SslMode::CHOICES));
                SslMode::Prefer
            }),
            (None, Some(text)) => SslMode::parse(&text).unwrap_or_else(|| {
                problems.at(url, "source.database", format_args!("sslmode={text:?} is not {}", SslMode::CHOICES));
                SslMode::Prefer
            }),
            (None, None) => SslMode::Prefer,
        };
        let root_file = match (&self.sslrootcert, url_root) {
            (Some(key), Some(_)) => {
                problems.at(key, "source.sslrootcert", "the URL sets sslrootcert already: keep one of the two");
                None
            }
            (Some(key), None) => Some((key.get_ref().clone(), "source.sslrootcert")),
            (None, Some(file)) => Some((file, "source.database")),
            (None, None) => None,
        };
        let root_certificates = root_file.and_then(|(file, key)| {
            let path = base.join(&file);
            let span = self.sslrootcert.as_ref().map_or(url.span(), |key| key.span());
            let place = Spanned::new(span, ());
            let pem = read_regular_file(&path)
                .map_err(|error| problems.at(&place, key, format_args!("cannot read {}: {error}", path.display())))
                .ok()?;
            if root_store(&pem).is_err() {
                problems.at(&place, key, format_args!("{} holds no PEM certificate", path.display()));
                return None;
            }
            if sslmode != SslMode::VerifyFull {
                problems.at(&place, key, "is used only with sslmode = \"verify-full\": set that too");
            }
            Some(pem)
        });
        (sslmode, root_certificates)
    }

    /// Keys only SQLite has are refused with a server: its readers never wait on the app's
    /// writers, so a read needs neither a lock wait nor short transactions.
    fn refuse_sqlite_keys(&self, problems: &mut Problems<'_>) {
        if let Some(value) = &self.busy_timeout {
            problems.at(value, "source.busy_timeout", "is SQLite's; source.database names a server: leave it out");
        }
        if let Some(value) = &self.rows_per_read {
            problems.at(value, "source.rows_per_read", "is SQLite's; source.database names a server: leave it out");
        }
    }

    /// Keys only a server has are refused with a SQLite file.
    fn refuse_server_keys(&self, problems: &mut Problems<'_>) {
        let keys =
            [("password_file", &self.password_file), ("sslmode", &self.sslmode), ("sslrootcert", &self.sslrootcert)];
        for (key, value) in keys {
            if let Some(value) = value {
                problems.at(
                    value,
                    &format!("source.{key}"),
                    "is for a database server; source.database names a SQLite file",
                );
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_meant_for_a_server_but_no_url_the_agent_reads_is_told_without_its_password() {
        let libpq = no_path_nor_url("host=db port=5432 user=agent password=Str0ng-pass dbname=app").unwrap();
        assert!(libpq.starts_with("is libpq's key=value form") && !libpq.contains("Str0ng"), "{libpq}");
        for mistyped in ["postgres:/agent:pw@db/app", "postgress://agent:pw@db/app", "POSTGRES://agent:pw@db/app"] {
            let said = no_path_nor_url(mistyped).unwrap();
            assert!(said.contains("a scheme the agent does not read") && !said.contains("pw"), "{said}");
        }
        for path in ["app.sqlite3", "/var/lib/app/db.sqlite3", "./my db.sqlite3"] {
            assert_eq!(no_path_nor_url(path), None, "{path}");
        }
    }

    #[test]
    fn only_loopback_and_unix_sockets_are_this_machine() {
        let parse = |url: &str| url.parse::<tokio_postgres::Config>().unwrap();
        assert!(only_this_machine(&parse("postgres://a@127.0.0.1/b")));
        assert!(only_this_machine(&parse("postgres://a@localhost/b")));
        assert!(only_this_machine(&parse("postgres://a@[::1]/b")));
        assert!(only_this_machine(&parse("postgres://a@%2Fvar%2Frun%2Fpostgresql/b")));
        assert!(!only_this_machine(&parse("postgres://a@db.internal/b")));
        assert!(!only_this_machine(&parse("postgres://a@127.0.0.1,10.0.0.5/b")));
    }
}
