//! The MySQL and MariaDB backend: one connection, kept between ticks and made again (with
//! backoff) when the server restarts; each tick one read-only transaction on a consistent
//! snapshot (`START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY`) of three queries: the
//! window's counts grouped by (api_id, status_id) on the server, and the two name tables. The
//! server stops a statement past `source.timeout` (MariaDB's `max_statement_time`, MySQL's
//! `max_execution_time`), and the agent kills one that its own deadline outlives.
//!
//! Django keeps `time_modified` as `datetime(6)`: UTC with `USE_TZ = True`, the wall-clock time of
//! `TIME_ZONE` with `USE_TZ = False`, and binds `time_modified__gte` the same way. The agent binds
//! the window's start as the wall-clock time in `source.timezone` (UTC by default), as Django
//! does. The session's `time_zone` is UTC, which only a `timestamp` column (not Django's) reads.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use chrono::{DateTime, Datelike, NaiveDateTime, SubsecRound, Timelike, Utc};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Params, Row, SslOpts, Value};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use super::config::{SourceConfig, Tables};
use super::kept::{CONNECT_TIMEOUT, Kept, Server, Work, login_limit};
use super::mysql_url::MysqlServer;
use super::read::RawCounts;
use super::tls::{SslMode, system_root_certificates};
use super::window::{
    FUTURE_AFTER, REQUIRED_COLUMNS, WindowRead, lacking_columns, naive_bounds, not_the_apps_tables, table_name,
};
use super::window_count::NOT_AN_ID;
use crate::common::escape::with_causes;
use crate::common::redact::redact_from_outside;

/// The longest a statement waits for a table's metadata lock (held by a migration's `ALTER
/// TABLE`), in whole seconds as the server takes it.
const LOCK_WAIT_SECONDS: u64 = 2;

/// The server errors the agent explains (MySQL's and MariaDB's numbers).
mod code {
    pub(super) const ACCESS_DENIED_TO_DATABASE: u16 = 1044;
    pub(super) const ACCESS_DENIED: u16 = 1045;
    pub(super) const BAD_DATABASE: u16 = 1049;
    pub(super) const SERVER_SHUTDOWN: u16 = 1053;
    pub(super) const TABLE_ACCESS_DENIED: u16 = 1142;
    pub(super) const NO_SUCH_TABLE: u16 = 1146;
    pub(super) const LOCK_WAIT_TIMEOUT: u16 = 1205;
    pub(super) const QUERY_INTERRUPTED: u16 = 1317;
    pub(super) const CONNECTION_KILLED: u16 = 1927;
    pub(super) const MARIADB_STATEMENT_TIMEOUT: u16 = 1969;
    pub(super) const MYSQL_QUERY_TIMEOUT: u16 = 3024;
    pub(super) const MYSQL_IDLE_DISCONNECT: u16 = 4031;
}

/// A MySQL or MariaDB `[source]`, with its connection.
pub(crate) struct MysqlSource {
    config: SourceConfig,
    server: MysqlServer,
    state: Mutex<Kept<Connection>>,
}

/// An open connection and what was learnt about the tables on it.
pub(crate) struct Connection {
    conn: Conn,
    /// How `time_modified` is stored, which decides how the window's start is bound.
    time_column: TimeColumn,
    /// `VERSION()`: e.g. `10.11.19-MariaDB-0+deb12u1`.
    version: String,
    /// Closed by the server, or left mid-statement: not to be used again.
    broken: bool,
}

/// The type of `time_modified`: Django makes `datetime(6)`, which holds wall-clock times
/// (UTC's with `USE_TZ = True`); a `timestamp` holds instants, read in the session's UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeColumn {
    Datetime,
    Timestamp,
}

impl MysqlSource {
    pub(crate) fn new(config: SourceConfig, server: MysqlServer) -> MysqlSource {
        MysqlSource { config, server, state: Mutex::new(Kept::new()) }
    }

    /// The window ending at `now`, within `source.timeout`.
    pub(crate) async fn read_window(&self, now: DateTime<Utc>) -> anyhow::Result<WindowRead> {
        let started = Instant::now();
        // Django's datetimes have microseconds.
        let now = now.trunc_subsecs(6);
        let mut state = self.state.lock().await;
        let counts = state.bounded(self, |source, connection| Box::pin(source.count(connection, now))).await?;
        Ok(WindowRead { counts, window_start: now - self.config.window, duration: started.elapsed() })
    }

    /// `check`'s report: the server, its version, the tables, and the plan of the window's query.
    pub(crate) async fn check(&self) -> anyhow::Result<String> {
        let mut state = self.state.lock().await;
        state.bounded(self, |source, connection| Box::pin(source.explain(connection))).await
    }

    /// The settings to log in with, TLS as `sslmode` says (`tls` false: none, for "prefer"'s
    /// second attempt).
    fn options(&self, tls: bool) -> anyhow::Result<OptsBuilder> {
        let server = &self.server;
        let ssl = match (server.sslmode, tls) {
            (SslMode::Disable, _) | (_, false) => None,
            // Encrypted, whoever answers: the certificate is not checked.
            (SslMode::Prefer | SslMode::Require, true) => {
                Some(SslOpts::default().with_danger_accept_invalid_certs(true))
            }
            (SslMode::VerifyFull, true) => {
                let roots = match &server.root_certificates {
                    Some(pem) => vec![pem.clone().into()],
                    None => system_root_certificates()?.into_iter().map(Into::into).collect(),
                };
                Some(SslOpts::default().with_root_certs(roots).with_disable_built_in_roots(true))
            }
        };
        Ok(OptsBuilder::default()
            .ip_or_hostname(server.host.clone())
            .tcp_port(server.port)
            .user(Some(server.user.clone()))
            .pass(server.password.as_ref().map(|password| password.expose().to_owned()))
            .db_name(Some(server.database.clone()))
            // The TCP address as written: never a Unix socket the server names (no TLS there).
            .prefer_socket(false)
            .ssl_opts(ssl)
            .connect_attribute("program_name", "apimetrics-agent"))
    }

    /// Logs in within `login_limit`, over TLS unless `sslmode` says otherwise ("prefer" falls
    /// back to plain TCP when the server has no TLS).
    async fn log_in(&self) -> anyhow::Result<Conn> {
        // mysql_async builds its TLS settings on the process's default provider.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let limit = login_limit(self.config.timeout);
        let attempt = |tls: bool| async move {
            let options = self.options(tls)?;
            match tokio::time::timeout(limit, Conn::new(options)).await {
                Ok(outcome) => Ok(outcome),
                Err(_) => Err(anyhow!(
                    "cannot connect to {}: no answer within {} while logging in (is the server stopped or overloaded?)",
                    self.server.shown,
                    humantime::format_duration(limit)
                )),
            }
        };
        let conn = match attempt(self.server.sslmode != SslMode::Disable).await? {
            Err(mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer))
                if self.server.sslmode == SslMode::Prefer =>
            {
                attempt(false).await?
            }
            other => other,
        };
        conn.map_err(|error| {
            let why = match &error {
                // Not a connection that closed: one that was never made (TLS's own failures
                // come as InvalidData, and describe explains them).
                mysql_async::Error::Io(mysql_async::IoError::Io(io))
                    if ![std::io::ErrorKind::ConnectionRefused, std::io::ErrorKind::InvalidData]
                        .contains(&io.kind()) =>
                {
                    format!(
                        "{}: is the host reachable, and a MySQL or MariaDB server listening on that port?",
                        chain(&error)
                    )
                }
                _ => describe(&error, &self.server),
            };
            anyhow!("cannot connect to {}: {why}", self.server.shown)
        })
    }

    /// Connects, sets the session up (read-only, UTC, the server's own timeouts), and checks
    /// the tables: each must be there, with its columns, and readable.
    async fn connect(&self) -> anyhow::Result<Connection> {
        let mut conn = self.log_in().await?;
        let fail = |error: mysql_async::Error| anyhow!(describe(&error, &self.server));
        // Names come as utf8mb4 whatever the server's own character set (a server may ignore
        // the one asked for at login).
        conn.query_drop("SET NAMES utf8mb4").await.map_err(fail)?;
        // Every value from the server is read as a Value and converted here: mysql_async's
        // typed reads panic on what they do not expect, and whoever answers may send anything.
        let version = first_value(conn.query_first("SELECT VERSION()").await.map_err(fail)?).map(|value| text(&value));
        let version = version.unwrap_or_default();
        let timeout = self.config.timeout;
        let lock_wait = LOCK_WAIT_SECONDS.min((timeout / 2).as_secs()).max(1);
        // MariaDB stops a statement after max_statement_time seconds; MySQL a SELECT after
        // max_execution_time milliseconds.
        let statement_limit = if version.contains("MariaDB") {
            format!("max_statement_time = {:.3}", timeout.as_secs_f64())
        } else {
            format!("max_execution_time = {}", timeout.as_millis())
        };
        conn.query_drop(format!(
            "SET SESSION time_zone = '+00:00', lock_wait_timeout = {lock_wait}, {statement_limit}"
        ))
        .await
        .map_err(fail)?;
        conn.query_drop("SET SESSION TRANSACTION READ ONLY").await.map_err(fail)?;
        let time_column = check_tables(&mut conn, &self.config.tables, &self.server).await?;
        info!(server = %self.server.shown, version = %version, "connected to the database server");
        Ok(Connection { conn, time_column, version, broken: false })
    }

    /// The window's bounds as `datetime` values: the wall-clock times in `source.timezone`
    /// Django would bind, or UTC's for a `timestamp` column.
    fn bounds(&self, column: TimeColumn, now: DateTime<Utc>) -> (NaiveDateTime, NaiveDateTime) {
        match column {
            TimeColumn::Datetime => naive_bounds(now, self.config.window, self.config.timezone),
            TimeColumn::Timestamp => ((now - self.config.window).naive_utc(), (now + FUTURE_AFTER).naive_utc()),
        }
    }

    /// The window's counts on `connection`, in one read-only snapshot.
    async fn count(&self, connection: &mut Connection, now: DateTime<Utc>) -> anyhow::Result<RawCounts> {
        let (start, future_from) = self.bounds(connection.time_column, now);
        let tables = &self.config.tables;
        let counting = count_query(tables);
        let names: Vec<(&str, String)> = ["api", "status"]
            .into_iter()
            .map(|role| {
                let table = table_name(tables, role);
                (table, format!("SELECT id, COALESCE(CAST(name AS CHAR), '') FROM {}", quoted(table)))
            })
            .collect();
        let server = &self.server;
        let outcome = async {
            let conn = &mut connection.conn;
            conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY").await?;
            let rows: Vec<Row> = conn.exec(&counting, (datetime(future_from), datetime(start))).await?;
            let mut named = Vec::new();
            for (table, query) in &names {
                named.push((*table, conn.exec::<Row, _, _>(query, Params::Empty).await?));
            }
            conn.query_drop("COMMIT").await?;
            Ok::<_, mysql_async::Error>((rows, named))
        }
        .await;
        let (rows, named) = match outcome {
            Ok(read) => read,
            Err(error) => {
                connection.broken = is_closed(&error);
                if !connection.broken && connection.conn.query_drop("ROLLBACK").await.is_err() {
                    connection.broken = true;
                }
                return Err(anyhow!(describe(&error, server)));
            }
        };
        let mut counts = RawCounts::default();
        for row in rows {
            let values = row.unwrap();
            let unreadable = || anyhow!("reading {}: a row of counts the agent cannot read", tables.transaction);
            let [api_id, status_id, n_rows, n_in_future] = values.as_slice() else { return Err(unreadable()) };
            // A NULL key names no row: its transactions count as orphaned, as with SQLite.
            let key = (integer(api_id).unwrap_or(NOT_AN_ID), integer(status_id).unwrap_or(NOT_AN_ID));
            let (Some(n_rows), Some(n_in_future)) = (integer(n_rows), integer(n_in_future)) else {
                return Err(unreadable());
            };
            *counts.by_ids.entry(key).or_default() += n_rows as u64;
            counts.n_rows_in_future += n_in_future as u64;
        }
        for ((table, rows), names) in named.into_iter().zip([&mut counts.apis, &mut counts.statuses]) {
            for row in rows {
                let values = row.unwrap();
                let [id, name] = values.as_slice() else { bail!("reading {table}: a row the agent cannot read") };
                // Read as SQLite's are: a name that is no text as its text, NULL as "".
                if let Some(id) = integer(id) {
                    names.push((id, text(name)));
                }
            }
        }
        Ok(counts)
    }

    /// What `check` says: the server, the column's type and how the window is bound, the
    /// number of transactions, and the plan of the window's query (with a warning when no
    /// index leads with `time_modified`).
    async fn explain(&self, connection: &mut Connection) -> anyhow::Result<String> {
        let tables = &self.config.tables;
        let server = &self.server;
        let fail = |error: mysql_async::Error| anyhow!(describe(&error, server));
        let conn = &mut connection.conn;
        // The storage engine's estimate: counting a big table could take longer than source.timeout.
        let n_transactions = conn
            .exec_first(
                "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
                (tables.transaction.as_str(),),
            )
            .await
            .map_err(fail)?;
        let n_transactions = match first_value(n_transactions).as_ref().and_then(integer) {
            Some(n) => format!("about {n} transactions (the storage engine's estimate)"),
            None => "transactions not yet counted".to_owned(),
        };
        let (column, bound) = match connection.time_column {
            TimeColumn::Datetime if self.config.timezone == chrono_tz::Tz::UTC => (
                "datetime",
                "the window starts at UTC's wall-clock time 24 h ago, as Django binds it with USE_TZ = True".to_owned(),
            ),
            TimeColumn::Datetime => (
                "datetime",
                format!(
                    "the window starts at the wall-clock time 24 h ago in {} (source.timezone), as Django binds it \
                     with USE_TZ = False",
                    self.config.timezone
                ),
            ),
            TimeColumn::Timestamp => ("timestamp", "the window starts at the instant 24 h ago".to_owned()),
        };
        let query = count_query(tables);
        let now = datetime(Utc::now().naive_utc());
        let plan: Vec<Row> = conn.exec(format!("EXPLAIN {query}"), (now.clone(), now)).await.map_err(fail)?;
        let mut report = format!(
            "database {} ({}) opened read-only: {n_transactions}\n{}.time_modified is {column}: {bound}\n\
             read query: {query}\nplan:\n",
            server.shown, connection.version, tables.transaction
        );
        for step in plan {
            let columns = step.columns();
            let fields: Vec<String> = step
                .unwrap()
                .iter()
                .zip(columns.iter())
                .filter(|(value, _)| **value != Value::NULL)
                .map(|(value, column)| format!("{}={}", column.name_str(), text(value)))
                .collect();
            report.push_str(&format!("  {}\n", fields.join(" ")));
        }
        let index = conn
            .exec_first(
                "SELECT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() \
                 AND TABLE_NAME = ? AND SEQ_IN_INDEX = 1 AND COLUMN_NAME = 'time_modified'",
                (tables.transaction.as_str(),),
            )
            .await
            .map_err(fail)?;
        match first_value(index).map(|value| text(&value)) {
            None => report.push_str(&format!(
                "warning: no index on {}.time_modified: every tick reads the whole table; add one through a Django \
                 migration (see the README)\n",
                tables.transaction
            )),
            Some(index) => report.push_str(&format!("index {index} leads with time_modified\n")),
        }
        Ok(report)
    }

    /// Asks the server, on a connection of its own, to stop what connection `id` is running
    /// (the agent's own deadline passed first), without waiting for the answer for long.
    fn kill_query(&self, id: u32) {
        let Ok(options) = self.options(self.server.sslmode != SslMode::Disable) else { return };
        let server = self.server.shown.clone();
        tokio::spawn(async move {
            let Ok(Ok(mut conn)) = tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(options)).await else {
                // A server that cannot be reached (it restarted, it is down) runs nothing of ours.
                debug!(%server, "could not connect to ask the database server to stop the agent's statement");
                return;
            };
            let killed = tokio::time::timeout(CONNECT_TIMEOUT, conn.query_drop(format!("KILL QUERY {id}"))).await;
            match killed {
                // 1094: no such thread any more; nothing runs.
                Ok(Ok(())) => debug!(%server, id, "asked the database server to stop the agent's statement"),
                Ok(Err(mysql_async::Error::Server(error))) if error.code == 1094 => {}
                _ => warn!(%server, "could not ask the database server to stop the agent's statement"),
            }
            let _ = conn.disconnect().await;
        });
    }
}

impl Server for MysqlSource {
    type Connection = Connection;

    fn shown(&self) -> &str {
        &self.server.shown
    }

    fn timeout(&self) -> Duration {
        self.config.timeout
    }

    fn connect(&self) -> Work<'_, Connection> {
        Box::pin(self.connect())
    }

    fn is_broken(connection: &Connection, _: Option<&anyhow::Error>) -> bool {
        connection.broken
    }

    /// A connection that broke mid-read may have been cut by a proxy or the network, not by
    /// the server, which then runs its statement on: it is killed, as an overrun one is.
    fn abandon(&self, connection: Connection, _overran: bool) {
        self.kill_query(connection.conn.id());
    }
}

/// The window's counts by (api_id, status_id), and how many of them lie past the first
/// parameter (a clock ahead), as one grouped query on the server; the second is the window's
/// start.
fn count_query(tables: &Tables) -> String {
    format!(
        "SELECT api_id, status_id, COUNT(*), COUNT(CASE WHEN time_modified > ? THEN 1 END) FROM {} \
         WHERE time_modified >= ? GROUP BY api_id, status_id",
        quoted(&tables.transaction)
    )
}

/// `name` as a quoted identifier: Django's table names have capitals.
fn quoted(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A `datetime` parameter, to the microsecond.
fn datetime(time: NaiveDateTime) -> Value {
    Value::Date(
        time.year() as u16,
        time.month() as u8,
        time.day() as u8,
        time.hour() as u8,
        time.minute() as u8,
        time.second() as u8,
        time.nanosecond() / 1_000,
    )
}

/// An integer column's value, however the protocol sent it; `None` for NULL (or no integer).
fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        Value::UInt(n) => i64::try_from(*n).ok(),
        Value::Bytes(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        _ => None,
    }
}

/// The first value of a row, if there is a row.
fn first_value(row: Option<Row>) -> Option<Value> {
    row?.unwrap().into_iter().next()
}

/// A value as text: a name as the server sent it (in utf8mb4), anything else as SQL writes it.
fn text(value: &Value) -> String {
    match value {
        Value::Bytes(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::NULL => String::new(),
        other => other.as_sql(true).trim_matches('\'').to_owned(),
    }
}

/// Checks each table: there, with the columns the agent reads, and readable by this user; says
/// how `time_modified` is stored. Every problem is reported at once.
async fn check_tables(conn: &mut Conn, tables: &Tables, server: &MysqlServer) -> anyhow::Result<TimeColumn> {
    let fail = |error: mysql_async::Error| anyhow!(describe(&error, server));
    let mut problems = Vec::new();
    let mut unreadable = Vec::new();
    let mut time_column = None;
    for (role, columns) in REQUIRED_COLUMNS {
        let table = table_name(tables, role);
        // information_schema shows only what the user has a grant on: asking for no rows tells
        // a missing table from one the user may not read.
        match conn.query_drop(format!("SELECT 1 FROM {} LIMIT 0", quoted(table))).await {
            Ok(()) => {}
            Err(mysql_async::Error::Server(error)) if error.code == code::NO_SUCH_TABLE => {
                problems.push(format!("table {table:?} is missing"));
                continue;
            }
            Err(mysql_async::Error::Server(error)) if error.code == code::TABLE_ACCESS_DENIED => {
                unreadable.push(quoted(table));
                continue;
            }
            Err(error) => return Err(fail(error)),
        }
        let present: BTreeMap<String, String> = conn
            .exec::<Row, _, _>(
                "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
                 AND TABLE_NAME = ?",
                (table,),
            )
            .await
            .map_err(fail)?
            .into_iter()
            .map(|row| {
                let value = |index| row.as_ref(index).map(text).unwrap_or_default();
                (value(0), value(1))
            })
            .collect();
        problems.extend(lacking_columns(table, columns, |column| present.contains_key(column)));
        if let Some(kind) = present.get("time_modified").filter(|_| role == "transaction") {
            time_column = match kind.to_ascii_lowercase().as_str() {
                "datetime" => Some(TimeColumn::Datetime),
                "timestamp" => Some(TimeColumn::Timestamp),
                other => {
                    problems.push(format!(
                        "{table}.time_modified is {other}, not a datetime as Django's DateTimeField makes it"
                    ));
                    None
                }
            };
        }
    }
    if !problems.is_empty() {
        return Err(not_the_apps_tables(&problems, "schema/django-mysql.sql"));
    }
    if !unreadable.is_empty() {
        // The account as the server knows it: the user at the host it was created for.
        let account = first_value(conn.query_first("SELECT CURRENT_USER()").await.map_err(fail)?)
            .map(|value| text(&value))
            .and_then(|account| {
                let (user, host) = account.rsplit_once('@')?;
                Some(format!("'{}'@'{}'", user.replace('\'', "''"), host.replace('\'', "''")))
            })
            .unwrap_or_else(|| format!("'{}'@'%'", server.user.replace('\'', "''")));
        bail!(
            "user {:?} may not read table(s) {}: as an administrator, run GRANT SELECT ON `{}`.* TO {account} (or \
             on each table)",
            server.user,
            unreadable.join(", "),
            server.database.replace('`', "``"),
        );
    }
    time_column.ok_or_else(|| anyhow!("{}.time_modified is missing", tables.transaction))
}

/// Whether the connection under `error` is gone (the server restarted, killed it, or closed it
/// after `wait_timeout`, or the network broke).
fn is_closed(error: &mysql_async::Error) -> bool {
    match error {
        mysql_async::Error::Io(_) => true,
        mysql_async::Error::Driver(driver) => {
            matches!(driver, mysql_async::DriverError::ConnectionClosed | mysql_async::DriverError::PacketOutOfOrder)
        }
        mysql_async::Error::Server(server) => {
            [code::SERVER_SHUTDOWN, code::CONNECTION_KILLED, code::MYSQL_IDLE_DISCONNECT].contains(&server.code)
        }
        mysql_async::Error::Other(_) | mysql_async::Error::Url(_) => false,
    }
}

/// `error` and its causes, as text from outside; mysql_async's I/O errors say "Input/output
/// error" at two levels, and the words add nothing to the cause's own.
fn chain(error: &mysql_async::Error) -> String {
    redact_from_outside(&with_causes("", error).replace("Input/output error: ", ""))
}

/// What went wrong, as an operator can act on it: the server's message with a hint; never the
/// password.
fn describe(error: &mysql_async::Error, server: &MysqlServer) -> String {
    if let mysql_async::Error::Server(db) = error {
        let hint = match db.code {
            code::ACCESS_DENIED => ": check the user in source.database and the password (source.password_file)",
            code::ACCESS_DENIED_TO_DATABASE => {
                ": check the database's name at the end of source.database; the user needs SELECT on the app's three \
                 tables there (README: MySQL and MariaDB, the GRANT)"
            }
            code::BAD_DATABASE => ": check the database's name at the end of source.database",
            code::TABLE_ACCESS_DENIED => {
                ": the user needs SELECT on the three tables (README: MySQL and MariaDB, the GRANT)"
            }
            code::MARIADB_STATEMENT_TIMEOUT | code::MYSQL_QUERY_TIMEOUT | code::QUERY_INTERRUPTED => {
                ": it ran past source.timeout (the server's statement limit), or an administrator killed it"
            }
            code::LOCK_WAIT_TIMEOUT => ": a migration or another lock holder kept the table; the next tick tries again",
            code::SERVER_SHUTDOWN | code::CONNECTION_KILLED => {
                ": the server is shutting down or restarting; the agent connects again"
            }
            _ => "",
        };
        // The server's words are text from outside: a message may quote what it was sent.
        return format!("{} (error {}, SQLSTATE {}){hint}", redact_from_outside(&db.message), db.code, db.state);
    }
    let chain = chain(error);
    let hint = if chain.contains("certificate") || chain.contains("UnknownIssuer") || chain.contains("NotValidForName")
    {
        match server.root_certificates {
            Some(_) => {
                ": the server's certificate is not signed by a CA in source.sslrootcert, or does not name the host"
            }
            None => ": the server's certificate is not signed by a CA this system trusts: set source.sslrootcert",
        }
    } else if chain.contains("Connection refused") {
        ": is the server running and listening on that address (bind-address, port)?"
    } else if chain.contains("server does not have this capability") {
        if server.sslmode == SslMode::VerifyFull {
            ": the server does not speak TLS, so it cannot be verified (is it the real one?): turn on TLS on the server"
        } else {
            ": the server does not speak TLS; set source.sslmode = \"disable\" or \"prefer\", or turn on TLS on the server"
        }
    } else if matches!(
        error,
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(mysql_async::DriverError::ConnectionClosed)
    ) {
        ": the connection to the database server was closed (did it restart?)"
    } else {
        ""
    };
    format!("{chain}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_quoted_as_identifiers() {
        assert_eq!(quoted("apiMetrics_api"), "`apiMetrics_api`");
        assert_eq!(quoted("we`ird"), "`we``ird`");
    }

    #[test]
    fn values_are_read_whichever_protocol_sent_them() {
        assert_eq!(integer(&Value::Int(-3)), Some(-3));
        assert_eq!(integer(&Value::UInt(7)), Some(7));
        assert_eq!(integer(&Value::UInt(u64::MAX)), None);
        assert_eq!(integer(&Value::Bytes(b"42".to_vec())), Some(42));
        assert_eq!(integer(&Value::NULL), None);
        assert_eq!(text(&Value::Bytes("Lipa 💳".as_bytes().to_vec())), "Lipa 💳");
        assert_eq!(text(&Value::NULL), "");
        assert_eq!(text(&Value::Int(12)), "12");
    }

    #[test]
    fn a_datetime_parameter_keeps_its_microseconds() {
        let time = NaiveDateTime::parse_from_str("2026-11-26 03:04:05.123456", "%Y-%m-%d %H:%M:%S%.f").unwrap();
        assert_eq!(datetime(time), Value::Date(2026, 11, 26, 3, 4, 5, 123_456));
    }
}
