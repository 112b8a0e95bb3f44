//! The PostgreSQL backend: one connection, kept between ticks and made again (with backoff)
//! when the server restarts or fails over; each tick one read-only, repeatable-read transaction
//! of three queries: the window's counts grouped by (api_id, status_id) on the server, and the
//! two name tables. The server stops a statement past `source.timeout` (`statement_timeout`),
//! and the agent cancels one that its own deadline outlives.
//!
//! Django binds `time_modified__gte` with the app server's clock minus 24 hours: an instant with
//! `USE_TZ = True`; with `USE_TZ = False`, a naive wall-clock time, which the server reads in the
//! session's `TimeZone`, set to Django's `TIME_ZONE`. The agent binds the same (`Binding`), with
//! `source.timezone` for `TIME_ZONE`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use chrono::{DateTime, SubsecRound, Utc};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_postgres::config::ChannelBinding;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, IsolationLevel};
use tokio_postgres_rustls::MakeRustlsConnect;
use tracing::{debug, info, warn};

use super::config::{ServerConfig, SourceConfig, Tables};
use super::kept::{CONNECT_TIMEOUT, Kept, Server, Work, login_limit};
use super::read::RawCounts;
use super::tls;
use super::tls::SslMode;
use super::window::{
    FUTURE_AFTER, REQUIRED_COLUMNS, WindowRead, lacking_columns, naive_bounds, not_the_apps_tables, table_name,
};
use super::window_count::NOT_AN_ID;
use crate::common::escape::with_causes;
use crate::common::redact::redact_from_outside;

/// The longest a statement waits for a table lock (a migration's `ALTER TABLE`), so that the
/// agent, queued behind it, never makes the app's queries queue behind the agent.
const LOCK_TIMEOUT: Duration = Duration::from_secs(2);

/// A PostgreSQL `[source]`, with its connection.
pub(crate) struct PostgresSource {
    config: SourceConfig,
    server: ServerConfig,
    state: Mutex<Kept<Connection>>,
}

/// An open connection and what was learnt about the tables on it.
pub(crate) struct Connection {
    client: Client,
    /// Drives the connection's socket; ends when the connection does.
    task: JoinHandle<()>,
    /// How `time_modified` is stored, which decides how the window's start is bound.
    time_column: TimeColumn,
    /// The server's version, for `check`.
    version: String,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How the window's bounds are bound: as instants (Django's `USE_TZ = True`, `source.timezone`
/// UTC, a `timestamp with time zone` column), or as wall-clock times in `source.timezone`, as
/// Django binds them with `USE_TZ = False` (which keeps the column's type, but sets the
/// session's `TimeZone` to its `TIME_ZONE`; the agent sets it to `source.timezone` too). The two
/// differ only on the days the clocks change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Binding {
    Instant,
    WallClock,
}

/// The type of `time_modified`: Django makes `timestamp with time zone`, whatever `USE_TZ`; a
/// table made otherwise may hold wall-clock times without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeColumn {
    WithTimeZone,
    WithoutTimeZone,
}

impl PostgresSource {
    pub(crate) fn new(config: SourceConfig, server: ServerConfig) -> PostgresSource {
        PostgresSource { config, server, state: Mutex::new(Kept::new()) }
    }

    fn binding(&self, column: TimeColumn) -> Binding {
        if column == TimeColumn::WithTimeZone && self.config.timezone == chrono_tz::Tz::UTC {
            Binding::Instant
        } else {
            Binding::WallClock
        }
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

    /// Connects, and checks the tables: each must be there, with its columns, and readable.
    async fn connect(&self) -> anyhow::Result<Connection> {
        let mut connect = self.server.connect.clone();
        let timeout_ms = self.config.timeout.as_millis();
        let lock_ms = LOCK_TIMEOUT.min(self.config.timeout / 2).as_millis();
        // The server stops what the agent would wait for too long, and every transaction on the
        // connection is read-only, whatever the agent sends.
        let ours = format!(
            "-c statement_timeout={timeout_ms} -c lock_timeout={lock_ms} -c idle_in_transaction_session_timeout={timeout_ms} \
             -c default_transaction_read_only=on -c TimeZone={}",
            self.config.timezone.name()
        );
        let options = match connect.get_options() {
            Some(theirs) => format!("{theirs} {ours}"),
            None => ours,
        };
        let login_limit = login_limit(self.config.timeout);
        let sslmode = match self.server.sslmode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        };
        connect.options(options).application_name("apimetrics-agent").connect_timeout(login_limit).ssl_mode(sslmode);
        if self.server.sslmode == SslMode::Require {
            // The server is not verified: the password goes only into SCRAM bound to this TLS
            // channel, never in plain text or as MD5 to whoever answers.
            connect.channel_binding(ChannelBinding::Require);
        }
        let tls = tls::client_config(self.server.sslmode, self.server.root_certificates.as_deref())?;
        let (client, connection) = tokio::time::timeout(login_limit, connect.connect(MakeRustlsConnect::new(tls)))
            .await
            .map_err(|_| {
                anyhow!(
                    "cannot connect to {}: no answer within {} while logging in (is the server stopped or \
                     overloaded?)",
                    self.server.shown,
                    humantime::format_duration(login_limit)
                )
            })?
            .map_err(|error| anyhow!("cannot connect to {}: {}", self.server.shown, describe(&error, &self.server)))?;
        let server = self.server.shown.clone();
        let task = tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%server, error = %with_causes("", &error), "the database connection ended");
            }
        });
        let version: String = client
            .query_one("SELECT current_setting('server_version')", &[])
            .await
            .map_err(|error| anyhow!(describe(&error, &self.server)))?
            .get(0);
        let time_column = check_tables(&client, &self.config.tables, &self.server).await?;
        info!(server = %self.server.shown, version = %version, "connected to the database server");
        Ok(Connection { client, task, time_column, version })
    }

    /// The window's counts on `connection`, in one read-only snapshot.
    async fn count(&self, connection: &mut Connection, now: DateTime<Utc>) -> anyhow::Result<RawCounts> {
        let tables = &self.config.tables;
        let transaction = connection
            .client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(|error| anyhow!(describe(&error, &self.server)))?;
        let binding = self.binding(connection.time_column);
        let query = count_query(tables, binding);
        let rows = match binding {
            Binding::Instant => {
                let (start, future_from) = (now - self.config.window, now + FUTURE_AFTER);
                transaction.query(&query, &[&start, &future_from]).await
            }
            Binding::WallClock => {
                let (start, future_from) = naive_bounds(now, self.config.window, self.config.timezone);
                transaction.query(&query, &[&start, &future_from]).await
            }
        }
        .map_err(|error| anyhow!(describe(&error, &self.server)))?;
        let mut counts = RawCounts::default();
        let unreadable =
            |table: &str, error: tokio_postgres::Error| anyhow!("reading {table}: {}", with_causes("", &error));
        for row in rows {
            let read = || -> Result<_, tokio_postgres::Error> {
                let ids: (Option<i64>, Option<i64>) = (row.try_get(0)?, row.try_get(1)?);
                Ok((ids, row.try_get::<_, i64>(2)?, row.try_get::<_, i64>(3)?))
            };
            let ((api_id, status_id), n_rows, n_in_future) =
                read().map_err(|error| unreadable(&tables.transaction, error))?;
            // A NULL key names no row: its transactions count as orphaned, as with SQLite.
            let key = (api_id.unwrap_or(NOT_AN_ID), status_id.unwrap_or(NOT_AN_ID));
            *counts.by_ids.entry(key).or_default() += n_rows as u64;
            counts.n_rows_in_future += n_in_future as u64;
        }
        for (role, names) in [("api", &mut counts.apis), ("status", &mut counts.statuses)] {
            // Read as SQLite's are: a name that is no text as its text, NULL as "".
            let table = table_name(tables, role);
            let query = format!("SELECT id::bigint, coalesce(name::text, '') FROM {}", quoted(table));
            let rows = transaction.query(&query, &[]).await.map_err(|error| anyhow!(describe(&error, &self.server)))?;
            for row in rows {
                let (id, name) = (row.try_get::<_, Option<i64>>(0), row.try_get::<_, String>(1));
                match (id, name) {
                    (Ok(Some(id)), Ok(name)) => names.push((id, name)),
                    (Ok(None), _) => {}
                    (Err(error), _) | (_, Err(error)) => return Err(unreadable(table, error)),
                }
            }
        }
        transaction.commit().await.map_err(|error| anyhow!(describe(&error, &self.server)))?;
        Ok(counts)
    }

    /// What `check` says: the server, the column's type and how the window is bound, the
    /// number of transactions, and the plan of the window's query (with a warning when no
    /// index leads with `time_modified`).
    async fn explain(&self, connection: &mut Connection) -> anyhow::Result<String> {
        let tables = &self.config.tables;
        let fail = |error: tokio_postgres::Error| anyhow!(describe(&error, &self.server));
        // The planner's estimate: counting a big table could take longer than source.timeout.
        let n_transactions: Option<i64> = connection
            .client
            .query_one(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass($1)",
                &[&quoted(&tables.transaction)],
            )
            .await
            .map_err(fail)?
            .try_get(0)
            .ok();
        let n_transactions = match n_transactions {
            Some(n) if n >= 0 => format!("about {n} transactions (the planner's estimate)"),
            _ => "transactions not yet counted by ANALYZE".to_owned(),
        };
        let binding = self.binding(connection.time_column);
        let column = match connection.time_column {
            TimeColumn::WithTimeZone => "timestamp with time zone",
            TimeColumn::WithoutTimeZone => "timestamp without time zone",
        };
        let bound = match binding {
            Binding::Instant => "the window starts at the instant 24 h ago (USE_TZ = True)".to_owned(),
            Binding::WallClock => format!(
                "the window starts at the wall-clock time 24 h ago in {} (source.timezone), as Django binds it with \
                 USE_TZ = False",
                self.config.timezone
            ),
        };
        let query = count_query(tables, binding);
        let plan_rows = match binding {
            Binding::Instant => {
                let now = Utc::now();
                connection.client.query(&format!("EXPLAIN {query}"), &[&now, &now]).await
            }
            Binding::WallClock => {
                let now = Utc::now().naive_utc();
                connection.client.query(&format!("EXPLAIN {query}"), &[&now, &now]).await
            }
        }
        .map_err(fail)?;
        let mut report = format!(
            "database {} (PostgreSQL {}) opened read-only: {n_transactions}\n\
             {}.time_modified is {column}: {bound}\nread query: {query}\nplan:\n",
            self.server.shown, connection.version, tables.transaction
        );
        let plan: Vec<String> = plan_rows.iter().map(|row| row.get::<_, String>(0)).collect();
        for step in &plan {
            report.push_str(&format!("  {step}\n"));
        }
        let indexes: Vec<String> = connection
            .client
            .query(
                "SELECT indexrelid::regclass::text FROM pg_index i JOIN pg_attribute a \
                 ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
                 WHERE i.indrelid = to_regclass(quote_ident($1)) AND a.attname = 'time_modified'",
                &[&tables.transaction],
            )
            .await
            .map_err(fail)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        match indexes.first() {
            None => report.push_str(&format!(
                "warning: no index on {}.time_modified: every tick reads the whole table; add one through a Django \
                 migration (see the README)\n",
                tables.transaction
            )),
            Some(index) => report.push_str(&format!("index {index} leads with time_modified\n")),
        }
        Ok(report)
    }

    /// Asks the server to stop what `connection` is running (the agent's own deadline passed
    /// first), without waiting for the answer for long.
    fn cancel_query(&self, connection: &Connection) {
        let token = connection.client.cancel_token();
        let Ok(tls) = tls::client_config(self.server.sslmode, self.server.root_certificates.as_deref()) else {
            return;
        };
        let server = self.server.shown.clone();
        tokio::spawn(async move {
            let cancelled =
                tokio::time::timeout(CONNECT_TIMEOUT, token.cancel_query(MakeRustlsConnect::new(tls))).await;
            if !matches!(cancelled, Ok(Ok(()))) {
                warn!(%server, "could not ask the database server to cancel the agent's overrunning query");
            }
        });
    }
}

impl Server for PostgresSource {
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

    fn is_broken(connection: &Connection, error: Option<&anyhow::Error>) -> bool {
        connection.client.is_closed() || error.is_some_and(is_closed)
    }

    fn abandon(&self, connection: Connection, overran: bool) {
        if overran {
            self.cancel_query(&connection);
        }
    }
}

/// The window's counts by (api_id, status_id), and how many of them lie past `$2` (a clock
/// ahead), as one grouped query on the server. Bound to wall-clock times, the parameters are
/// `timestamp`s, which the server reads in the session's `TimeZone` (`source.timezone`), as it
/// reads what Django sends with `USE_TZ = False`.
fn count_query(tables: &Tables, binding: Binding) -> String {
    let cast = match binding {
        Binding::Instant => "",
        Binding::WallClock => "::timestamp",
    };
    format!(
        "SELECT api_id::bigint, status_id::bigint, count(*), count(*) FILTER (WHERE time_modified > $2{cast}) \
         FROM {} WHERE time_modified >= $1{cast} GROUP BY api_id, status_id",
        quoted(&tables.transaction)
    )
}

/// `name` as a quoted identifier: Django's table names have capitals.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Checks each table: there, with the columns the agent reads, and readable by this role; says
/// how `time_modified` is stored. Every problem is reported at once.
async fn check_tables(client: &Client, tables: &Tables, server: &ServerConfig) -> anyhow::Result<TimeColumn> {
    let fail = |error: tokio_postgres::Error| anyhow!(describe(&error, server));
    let mut problems = Vec::new();
    let mut unreadable = Vec::new();
    let mut time_column = None;
    for (role, columns) in REQUIRED_COLUMNS {
        let table = table_name(tables, role);
        let found = client
            .query_opt(
                "SELECT has_table_privilege(to_regclass(quote_ident($1)), 'SELECT') WHERE to_regclass(quote_ident($1)) \
                 IS NOT NULL",
                &[&table],
            )
            .await
            .map_err(fail)?;
        let Some(found) = found else {
            problems.push(format!("table {table:?} is missing"));
            continue;
        };
        if !found.get::<_, bool>(0) {
            unreadable.push(quoted(table));
        }
        let present: BTreeMap<String, String> = client
            .query(
                "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
                 WHERE attrelid = to_regclass(quote_ident($1)) AND attnum > 0 AND NOT attisdropped",
                &[&table],
            )
            .await
            .map_err(fail)?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        problems.extend(lacking_columns(table, columns, |column| present.contains_key(column)));
        if let Some(kind) = present.get("time_modified").filter(|_| role == "transaction") {
            time_column = match kind.as_str() {
                "timestamp with time zone" => Some(TimeColumn::WithTimeZone),
                "timestamp without time zone" => Some(TimeColumn::WithoutTimeZone),
                other => {
                    problems.push(format!(
                        "{table}.time_modified is {other}, not a timestamp as Django's DateTimeField makes it"
                    ));
                    None
                }
            };
        }
    }
    if !problems.is_empty() {
        return Err(not_the_apps_tables(&problems, "schema/django-postgresql.sql"));
    }
    if !unreadable.is_empty() {
        let user = server.connect.get_user().unwrap_or_default();
        bail!(
            "role {user:?} may not read table(s) {}: as the tables' owner, run GRANT SELECT ON {} TO {}",
            unreadable.join(", "),
            unreadable.join(", "),
            quoted(user)
        );
    }
    time_column.ok_or_else(|| anyhow!("{}.time_modified is missing", tables.transaction))
}

/// Whether the connection under `error` is gone (the server restarted or the network broke).
fn is_closed(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| cause.downcast_ref::<tokio_postgres::Error>().is_some_and(tokio_postgres::Error::is_closed))
        || error.to_string().contains(CLOSED)
}

/// How `describe` says a connection is gone.
const CLOSED: &str = "the connection to the database server was closed";

/// What went wrong, as an operator can act on it: the server's message, with the host and port
/// for a connection that failed; never the password.
fn describe(error: &tokio_postgres::Error, server: &ServerConfig) -> String {
    if error.is_closed() {
        return format!("{CLOSED} (did it restart or fail over?)");
    }
    if let Some(db) = error.as_db_error() {
        let code = db.code();
        let hint = if *code == SqlState::INVALID_PASSWORD || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
            ": check the user in source.database and the password (source.password_file)"
        } else if *code == SqlState::INVALID_CATALOG_NAME {
            ": check the database's name at the end of source.database"
        } else if *code == SqlState::QUERY_CANCELED {
            ": it ran past source.timeout (the server's statement_timeout), or an administrator cancelled it"
        } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
            ": the agent's role needs SELECT on the three tables (README: PostgreSQL, the GRANT)"
        } else if *code == SqlState::LOCK_NOT_AVAILABLE {
            ": a migration or another lock holder kept the table; the next tick tries again"
        } else if [SqlState::ADMIN_SHUTDOWN, SqlState::CANNOT_CONNECT_NOW, SqlState::CRASH_SHUTDOWN].contains(code) {
            ": the server is restarting or shutting down; the agent connects again"
        } else {
            ""
        };
        // The server's words are text from outside: a message may quote what it was sent.
        return format!("{} (SQLSTATE {}){hint}", redact_from_outside(db.message()), code.code());
    }
    let chain = redact_from_outside(&with_causes("", error));
    let tls_hint = if chain.contains("certificate") || chain.contains("UnknownIssuer") {
        match server.root_certificates {
            Some(_) => {
                ": the server's certificate is not signed by a CA in source.sslrootcert, or does not name the host"
            }
            None => ": the server's certificate is not signed by a CA this system trusts: set source.sslrootcert",
        }
    } else if chain.contains("password missing") {
        ": the server asks for a password; put it in the file source.password_file names"
    } else if chain.contains("Connection refused") {
        ": is the server running and listening on that address (listen_addresses, port)?"
    } else if chain.contains("server did not use channel binding") {
        ": with sslmode = \"require\" the server is not verified, so the agent gives the password only to SCRAM \
         bound to the TLS channel (scram-sha-256 in pg_hba.conf, PostgreSQL 11 or later); for another method, \
         verify the server: sslmode = \"verify-full\" with source.sslrootcert"
    } else if chain.contains("server does not support TLS") {
        ": the server does not speak TLS; set source.sslmode = \"disable\" or \"prefer\", or turn on ssl on the server"
    } else {
        ""
    };
    format!("{chain}{tls_hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_quoted_as_identifiers() {
        assert_eq!(quoted("apiMetrics_api"), "\"apiMetrics_api\"");
        assert_eq!(quoted("we\"ird"), "\"we\"\"ird\"");
    }
}
