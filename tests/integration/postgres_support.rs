//! PostgreSQL for the tests: the one server tests/run starts for the whole run (its address, CA
//! and binaries come in APIMETRICS_TEST_POSTGRES, APIMETRICS_TEST_POSTGRES_CA and
//! APIMETRICS_TEST_POSTGRES_BIN), uniquely named databases and reader roles on it, databases
//! filled by Django itself, and a second, private server for a test that stops and starts one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::{free_port, orm_counts, percent_encode, python, stderr, stdout, wait_for};

/// The tables Django 5.2 creates for the apiMetrics models on PostgreSQL (`sqlmigrate` output).
pub(crate) const POSTGRES_SCHEMA: &str = include_str!("../../schema/django-postgresql.sql");

/// The three tables the agent reads.
const APP_TABLES: [&str; 3] = ["apiMetrics_api", "apiMetrics_transactionstatus", "apiMetrics_transaction"];

/// A PostgreSQL server on a loopback port, whose superuser `postgres` connects over TCP without a
/// password and whose other roles must give theirs (SCRAM), with or without TLS.
#[derive(Debug, Clone)]
pub(crate) struct PostgresServer {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The CA that signed the server's certificate (for 127.0.0.1 and localhost).
    pub(crate) ca_file: PathBuf,
    /// The folder of Debian's binaries: psql, pg_isready, initdb, pg_ctl.
    pub(crate) bin: PathBuf,
}

/// The server tests/run started for this run.
pub(crate) fn postgres() -> PostgresServer {
    let variable = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: tests/run starts the tests' PostgreSQL server and sets it; run the tests with tests/run")
        })
    };
    let address = variable("APIMETRICS_TEST_POSTGRES");
    let (host, port) = address.rsplit_once(':').expect("APIMETRICS_TEST_POSTGRES is host:port");
    PostgresServer {
        host: host.to_owned(),
        port: port.parse().expect("APIMETRICS_TEST_POSTGRES is host:port"),
        ca_file: variable("APIMETRICS_TEST_POSTGRES_CA").into(),
        bin: variable("APIMETRICS_TEST_POSTGRES_BIN").into(),
    }
}

impl PostgresServer {
    /// `host:port`.
    pub(crate) fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Whether the server accepts connections now (pg_isready).
    pub(crate) fn is_ready(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args(["--quiet", "--host", &self.host, "--port", &self.port.to_string(), "--username", "postgres"])
            .args(["--timeout", "5"])
            .status()
            .unwrap()
            .success()
    }

    /// Runs `sql` through psql connected by `conninfo` (a URL or `key=value` words), never asking
    /// for a password; stdout has one line per row, fields separated by `|`, and nothing else.
    pub(crate) fn psql_connect(&self, conninfo: &str, sql: &str) -> Output {
        let mut child = Command::new(self.bin.join("psql"))
            .args(["--no-psqlrc", "--quiet", "--no-align", "--tuples-only", "--no-password"])
            .args(["--set", "ON_ERROR_STOP=1", "--file", "-", "--dbname", conninfo])
            .env_remove("PGPASSWORD")
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Written from a thread so a long script and a long answer cannot block each other; a
        // psql that stops at an error closes its input early, which its exit status reports.
        let mut input = child.stdin.take().unwrap();
        let sql = sql.to_owned();
        let writer = std::thread::spawn(move || input.write_all(sql.as_bytes()));
        let output = child.wait_with_output().unwrap();
        let _ = writer.join().unwrap();
        output
    }

    /// Runs `sql` in `database` as the superuser and returns its stdout; panics if it fails.
    pub(crate) fn psql(&self, database: &str, sql: &str) -> String {
        let conninfo = format!("host={} port={} user=postgres dbname={database}", self.host, self.port);
        let output = self.psql_connect(&conninfo, sql);
        assert!(output.status.success(), "psql in {database} failed: {}\n{sql}", stderr(&output));
        stdout(&output)
    }
}

/// A database of its own on a server, dropped (with any reader roles made for it) when dropped.
pub(crate) struct TestDatabase {
    server: PostgresServer,
    name: String,
    roles: Mutex<Vec<String>>,
}

impl TestDatabase {
    /// A new, empty database on the shared server, named `prefix` and a suffix unique to this
    /// run (lowercase letters, digits and `_`; keep `prefix` short: names stop at 63 bytes).
    pub(crate) fn create(prefix: &str) -> TestDatabase {
        TestDatabase::create_on(&postgres(), prefix)
    }

    /// Like `create`, on `server`.
    pub(crate) fn create_on(server: &PostgresServer, prefix: &str) -> TestDatabase {
        static CREATED: AtomicUsize = AtomicUsize::new(0);
        assert!(prefix.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_'));
        // Each test is a process of its own: the process id tells them apart, the counter tells
        // apart the databases of one test.
        let name = format!("{prefix}_{}_{}", std::process::id(), CREATED.fetch_add(1, Ordering::Relaxed));
        assert!(name.len() <= 40, "{name} leaves too little room for role names");
        server.psql("postgres", &format!("CREATE DATABASE \"{name}\";"));
        TestDatabase { server: server.clone(), name, roles: Mutex::new(Vec::new()) }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Runs `sql` (one statement or a script) in this database as the superuser and returns its
    /// stdout: one line per row, fields separated by `|`.
    pub(crate) fn psql(&self, sql: &str) -> String {
        self.server.psql(&self.name, sql)
    }

    /// Makes a LOGIN role with `password` that may connect to this database and use its schema
    /// public, and, when `grant_select`, read the three apiMetrics tables (which must exist by
    /// then). Roles belong to the whole server, so the role's name is this database's name, `_`
    /// and `role`; it is returned, for `url`.
    pub(crate) fn create_reader(&self, role: &str, password: &str, grant_select: bool) -> String {
        let role = format!("{}_{role}", self.name);
        assert!(role.len() <= 63 && role.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_'));
        let password = password.replace('\'', "''");
        let mut sql = format!(
            "CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}';\n\
             GRANT CONNECT ON DATABASE \"{}\" TO \"{role}\";\n\
             GRANT USAGE ON SCHEMA public TO \"{role}\";\n",
            self.name
        );
        if grant_select {
            let tables = APP_TABLES.map(|table| format!("\"{table}\"")).join(", ");
            sql.push_str(&format!("GRANT SELECT ON {tables} TO \"{role}\";\n"));
        }
        self.roles.lock().unwrap().push(role.clone());
        self.psql(&sql);
        role
    }

    /// `postgres://role[:password]@host:port/database`, the password percent-encoded.
    pub(crate) fn url(&self, role: &str, password: Option<&str>) -> String {
        let password = password.map(|password| format!(":{}", percent_encode(password))).unwrap_or_default();
        format!("postgres://{role}{password}@{}/{}", self.server.address(), self.name)
    }
}

impl Drop for TestDatabase {
    /// Best effort: a private server the test stopped cannot drop anything, and takes its
    /// databases with it.
    fn drop(&mut self) {
        let mut sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE);\n", self.name);
        for role in self.roles.lock().unwrap().iter() {
            sql.push_str(&format!("DROP ROLE IF EXISTS \"{role}\";\n"));
        }
        let conninfo = format!("host={} port={} user=postgres dbname=postgres", self.server.host, self.server.port);
        let _ = self.server.psql_connect(&conninfo, &sql);
    }
}

/// Fills `database` (empty) with Django itself (tests/django/make_database.py): `migrate` makes
/// the tables, the ORM writes the rows, with USE_TZ = `use_tz` and TIME_ZONE = `time_zone`.
/// Returns the statements of `sqlmigrate apiMetrics 0001` (a JSON array of strings, without
/// semicolons) and the ORM's 24-hour counts by (api, status).
pub(crate) fn django_fill(
    database: &TestDatabase,
    use_tz: bool,
    time_zone: &str,
) -> (serde_json::Value, BTreeMap<(String, String), u64>) {
    let output = Command::new(python())
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/django/make_database.py"))
        .args(["--postgres", &database.server.address(), &database.name])
        .args(["--use-tz", if use_tz { "true" } else { "false" }, "--time-zone", time_zone])
        .stdin(Stdio::null())
        .output()
        .expect("running python");
    assert!(
        output.status.success(),
        "filling {} with Django failed (tests/run installs Django and psycopg and sets APIMETRICS_TEST_PYTHON): {}",
        database.name,
        stderr(&output)
    );
    let mut made: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let counts = orm_counts(&made);
    (made["schema"].take(), counts)
}

/// A second PostgreSQL server of a test's own, for what the shared one must not go through
/// (a stop and a start). Stopped when dropped.
pub(crate) struct PrivateServer {
    pub(crate) server: PostgresServer,
    data: PathBuf,
    log: PathBuf,
}

/// Makes and starts a server in `directory` (which the postgres user must be able to reach, as
/// tempfile's folders under /tmp are; it is handed to that user) on a free loopback port: the
/// shared server's access rules, and its TLS certificate, which sits beside the CA.
pub(crate) fn private_postgres(directory: &Path) -> PrivateServer {
    let shared = postgres();
    let server = PostgresServer { port: free_port(), ..shared.clone() };
    let data = directory.join("data");
    let socket = directory.join("socket");
    std::fs::create_dir(&socket).unwrap();
    let chowned = Command::new("chown").args(["-R", "postgres:postgres"]).arg(directory).output().unwrap();
    assert!(chowned.status.success(), "{}", stderr(&chowned));

    let initdb = as_postgres(directory, &server.bin.join("initdb"))
        .arg("--pgdata")
        .arg(&data)
        .args(["--username=postgres", "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8"])
        .args(["--no-sync", "--no-instructions"])
        .output()
        .unwrap();
    assert!(initdb.status.success(), "initdb: {}", stderr(&initdb));

    // The same rules as tests/run's server.
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all postgres trust\n\
         host all postgres 127.0.0.1/32 trust\n\
         host all all 127.0.0.1/32 scram-sha-256\n",
    )
    .unwrap();
    let tls = shared.ca_file.parent().unwrap();
    let settings = format!(
        "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\nssl = on\n\
         ssl_cert_file = '{}'\nssl_key_file = '{}'\n",
        server.port,
        socket.display(),
        tls.join("server.crt").display(),
        tls.join("server.key").display()
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .unwrap()
        .write_all(settings.as_bytes())
        .unwrap();

    let private = PrivateServer { server, data, log: directory.join("postgres.log") };
    private.start();
    private
}

/// `program` run as the postgres user, from `directory` (the postgres user may not be allowed
/// into the test's working directory).
fn as_postgres(directory: &Path, program: &Path) -> Command {
    let mut command = Command::new("runuser");
    command.args(["-u", "postgres", "--"]).arg(program).current_dir(directory).stdin(Stdio::null());
    command
}

impl PrivateServer {
    fn pg_ctl(&self, arguments: &[&str]) -> Output {
        as_postgres(self.data.parent().unwrap(), &self.server.bin.join("pg_ctl"))
            .arg("--pgdata")
            .arg(&self.data)
            .args(arguments)
            .output()
            .unwrap()
    }

    /// Starts the server and waits until it accepts connections.
    pub(crate) fn start(&self) {
        let log = format!("--log={}", self.log.display());
        let started = self.pg_ctl(&[&log, "--no-wait", "start"]);
        assert!(started.status.success(), "pg_ctl start: {}", stderr(&started));
        wait_for("the private PostgreSQL server to accept connections", Duration::from_secs(60), || {
            self.server.is_ready().then_some(())
        });
    }

    /// Stops the server (its clients are disconnected) and waits until it has exited.
    pub(crate) fn stop(&self) {
        let stopped = self.pg_ctl(&["--mode=fast", "--wait", "--timeout=60", "stop"]);
        assert!(stopped.status.success(), "pg_ctl stop: {}", stderr(&stopped));
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        if self.data.join("postmaster.pid").exists() {
            let _ = self.pg_ctl(&["--mode=immediate", "--wait", "--timeout=60", "stop"]);
        }
    }
}

/// The apiMetrics tables of `database` as the catalog describes them: columns (types, lengths,
/// precision, nullability, identity), constraints and indexes.
fn describe_tables(database: &TestDatabase) -> String {
    database.psql(
        "SELECT table_name, ordinal_position, column_name, data_type, character_maximum_length, numeric_precision, \
                numeric_scale, is_nullable, is_identity, identity_generation, column_default \
         FROM information_schema.columns WHERE table_schema = 'public' AND table_name LIKE 'apiMetrics%' \
         ORDER BY table_name, ordinal_position;\n\
         SELECT c.relname, con.conname, pg_get_constraintdef(con.oid) \
         FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid \
         WHERE c.relname LIKE 'apiMetrics%' ORDER BY 1, 2;\n\
         SELECT tablename, indexname, indexdef FROM pg_indexes \
         WHERE schemaname = 'public' AND tablename LIKE 'apiMetrics%' ORDER BY 1, 2;\n",
    )
}

/// Django makes exactly the tables of schema/django-postgresql.sql, and its ORM counts what the
/// database itself counts from its own clock: the rows' times are true instants.
fn assert_django_makes_the_reference_tables(use_tz: bool, time_zone: &str) {
    let made = TestDatabase::create("django_made");
    let (statements, django_counts) = django_fill(&made, use_tz, time_zone);
    for statement in statements.as_array().unwrap() {
        let statement = statement.as_str().unwrap();
        assert!(
            POSTGRES_SCHEMA.contains(&format!("{statement};")),
            "Django made {statement}, which schema/django-postgresql.sql lacks"
        );
    }
    let reference = TestDatabase::create("reference");
    reference.psql(POSTGRES_SCHEMA);
    assert_eq!(describe_tables(&made), describe_tables(&reference));
    // Django's PostgreSQL backend makes every DateTimeField `timestamp with time zone`, whatever
    // USE_TZ says; with USE_TZ off it reads and writes them in TIME_ZONE.
    assert_eq!(
        made.psql(
            "SELECT data_type FROM information_schema.columns \
             WHERE table_name = 'apiMetrics_transaction' AND column_name = 'time_modified'"
        ),
        "timestamp with time zone\n"
    );

    assert!(django_counts.len() > 10 && django_counts.values().sum::<u64>() > 1000, "{django_counts:?}");
    let database_counts = made.psql(
        "SELECT coalesce(json_agg(json_build_array(api, status, n)), '[]') FROM ( \
             SELECT a.name AS api, s.name AS status, count(*) AS n FROM \"apiMetrics_transaction\" t \
             JOIN \"apiMetrics_api\" a ON a.id = t.api_id JOIN \"apiMetrics_transactionstatus\" s ON s.id = t.status_id \
             WHERE t.time_modified >= now() - interval '24 hours' GROUP BY 1, 2) AS counted",
    );
    let database_counts: BTreeMap<(String, String), u64> =
        serde_json::from_str::<Vec<(String, String, u64)>>(&database_counts)
            .unwrap()
            .into_iter()
            .map(|(api, status, n)| ((api, status), n))
            .collect();
    assert_eq!(database_counts, django_counts);
}

#[test]
fn django_makes_the_reference_tables_on_postgresql_with_use_tz() {
    assert_django_makes_the_reference_tables(true, "UTC");
}

#[test]
fn django_makes_the_reference_tables_on_postgresql_with_local_times_in_nairobi() {
    assert_django_makes_the_reference_tables(false, "Africa/Nairobi");
}

#[test]
fn the_shared_server_verifies_by_tls_and_asks_readers_for_their_password() {
    let server = postgres();
    // TLS verified against the CA, by address and by name, and plain TCP as well.
    for (host, sslmode, expected_ssl) in
        [("127.0.0.1", "verify-full", "t\n"), ("localhost", "verify-full", "t\n"), ("127.0.0.1", "disable", "f\n")]
    {
        let conninfo = format!(
            "host={host} port={} user=postgres dbname=postgres sslmode={sslmode} sslrootcert={}",
            server.port,
            server.ca_file.display()
        );
        let output = server.psql_connect(&conninfo, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
        assert!(output.status.success(), "{conninfo}: {}", stderr(&output));
        assert_eq!(stdout(&output), expected_ssl, "{conninfo}");
    }

    let database = TestDatabase::create("readers");
    database.psql(POSTGRES_SCHEMA);
    let password = "it's a secret: 100% @home/";
    let reader = database.create_reader("reader", password, true);
    let no_select = database.create_reader("no_select", password, false);
    let count = "SELECT count(*) FROM \"apiMetrics_transaction\"";

    let output = server.psql_connect(&database.url(&reader, Some(password)), count);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "0\n");

    let output = server.psql_connect(&database.url(&no_select, Some(password)), count);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("permission denied for table apiMetrics_transaction"), "{}", stderr(&output));

    for url in [database.url(&reader, Some("wrong")), database.url(&reader, None)] {
        let output = server.psql_connect(&url, count);
        assert!(!output.status.success());
        let message = stderr(&output);
        assert!(
            message.contains("password authentication failed") || message.contains("no password supplied"),
            "{url}: {message}"
        );
    }
}

#[test]
fn a_private_server_stops_and_starts_again_with_its_data() {
    let directory = tempfile::tempdir().unwrap();
    let private = private_postgres(directory.path());
    let database = TestDatabase::create_on(&private.server, "restarted");
    database.psql("CREATE TABLE kept (n integer); INSERT INTO kept VALUES (7);");

    private.stop();
    assert!(!private.server.is_ready(), "the private server still accepts connections after a stop");
    private.start();
    assert_eq!(database.psql("SELECT n FROM kept"), "7\n");

    // The shared server's certificate serves this one too.
    let conninfo = format!(
        "host=localhost port={} user=postgres dbname={} sslmode=verify-full sslrootcert={}",
        private.server.port,
        database.name(),
        private.server.ca_file.display()
    );
    let output = private.server.psql_connect(&conninfo, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "t\n");
}
