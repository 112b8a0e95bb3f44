//! MariaDB for the tests: the one server tests/run starts for the whole run (its address and CA
//! come in APIMETRICS_TEST_MARIADB and APIMETRICS_TEST_MARIADB_CA), uniquely named databases and
//! reader users on it, databases filled by Django itself (through PyMySQL), and a second, private
//! server for a test that stops and starts one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{Offset, Utc};
use chrono_tz::Tz;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

use crate::support::{free_port, orm_counts, percent_encode, python, stderr, stdout};

/// The tables Django 5.2 creates for the apiMetrics models on MariaDB (`sqlmigrate` output).
pub(crate) const MARIADB_SCHEMA: &str = include_str!("../../schema/django-mysql.sql");

/// The API whose name tests/django/make_database.py adds on MySQL and MariaDB: characters outside
/// the Basic Multilingual Plane, four bytes each in UTF-8.
pub(crate) const FOUR_BYTE_API: &str = "Lipa 💳 na M-Pesa 🇰🇪";

/// The hosts a reader is made for: 127.0.0.1 for TCP (the server resolves no names, so a TCP
/// connection is never from `localhost`), localhost for the server's socket.
const READER_HOSTS: [&str; 2] = ["127.0.0.1", "localhost"];

/// A MariaDB server on a loopback port, whose root connects over TCP from 127.0.0.1 without a
/// password and whose other users must give theirs, with or without TLS.
#[derive(Debug, Clone)]
pub(crate) struct MariadbServer {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The CA that signed the server's certificate (for 127.0.0.1 and localhost); the
    /// certificate and its key, server.crt and server.key, the mysql user's, sit beside it.
    pub(crate) ca_file: PathBuf,
}

/// The server tests/run started for this run.
pub(crate) fn mariadb() -> MariadbServer {
    let variable = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: tests/run starts the tests' MariaDB server and sets it; run the tests with tests/run")
        })
    };
    let address = variable("APIMETRICS_TEST_MARIADB");
    let (host, port) = address.rsplit_once(':').expect("APIMETRICS_TEST_MARIADB is host:port");
    MariadbServer {
        host: host.to_owned(),
        port: port.parse().expect("APIMETRICS_TEST_MARIADB is host:port"),
        ca_file: variable("APIMETRICS_TEST_MARIADB_CA").into(),
    }
}

impl MariadbServer {
    /// `host:port`.
    pub(crate) fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Whether the server answers on its port now (`mariadb-admin ping`, which succeeds as soon
    /// as the server answers, whoever it lets in).
    pub(crate) fn is_ready(&self) -> bool {
        Command::new("mariadb-admin")
            .args(["--no-defaults", "--protocol=TCP", "--host", &self.host, "--port", &self.port.to_string()])
            .args(["--user=root", "--connect-timeout=5", "ping"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    /// Runs `sql` through the mariadb client, over TCP to this server, with `connection`'s
    /// options after its own (`--user=`, `--password=`, `--database=`, `--host=`, `--ssl`,
    /// `--ssl-verify-server-cert`, `--ssl-ca=`; a later option wins), never asking for a password;
    /// it stops at the first error. stdout has one line per row, fields separated by tabs and
    /// written as stored (`--raw`: no escaping; utf8mb4, so four-byte characters come through),
    /// and nothing else.
    pub(crate) fn mariadb_connect(&self, connection: &[&str], sql: &str) -> Output {
        let mut child = Command::new("mariadb")
            .args(["--no-defaults", "--batch", "--raw", "--skip-column-names", "--default-character-set=utf8mb4"])
            .args(["--connect-timeout=10", "--protocol=TCP", "--host", &self.host, "--port", &self.port.to_string()])
            .args(connection)
            .env_remove("MYSQL_PWD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Written from a thread so a long script and a long answer cannot block each other; a
        // client that stops at an error closes its input early, which its exit status reports.
        let mut input = child.stdin.take().unwrap();
        let sql = sql.to_owned();
        let writer = std::thread::spawn(move || input.write_all(sql.as_bytes()));
        let output = child.wait_with_output().unwrap();
        let _ = writer.join().unwrap();
        output
    }

    /// Runs `sql` as root, in no database (name tables with theirs), and returns its stdout;
    /// panics with the client's message if it fails.
    pub(crate) fn mariadb(&self, sql: &str) -> String {
        self.mariadb_in(None, sql)
    }

    /// Runs `sql` as root in `database` (or in none), and returns its stdout; panics if it fails.
    fn mariadb_in(&self, database: Option<&str>, sql: &str) -> String {
        let database = database.map(|database| format!("--database={database}"));
        let mut connection = vec!["--user=root"];
        connection.extend(database.as_deref());
        let output = self.mariadb_connect(&connection, sql);
        assert!(output.status.success(), "mariadb on {} failed: {}\n{sql}", self.address(), stderr(&output));
        stdout(&output)
    }
}

/// `text` as the inside of a MariaDB string literal in the default SQL mode, where a backslash
/// escapes.
fn sql_string(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\'', "''")
}

/// A database of its own on a server (utf8mb4, the server's collation), dropped (with any reader
/// users made for it) when dropped.
pub(crate) struct TestDatabase {
    server: MariadbServer,
    name: String,
    users: Mutex<Vec<String>>,
}

impl TestDatabase {
    /// A new, empty database on the shared server, named `prefix` and a suffix unique to this
    /// run (lowercase letters, digits and `_`; keep `prefix` short: names stop at 64 characters).
    pub(crate) fn create(prefix: &str) -> TestDatabase {
        TestDatabase::create_on(&mariadb(), prefix)
    }

    /// Like `create`, on `server`.
    pub(crate) fn create_on(server: &MariadbServer, prefix: &str) -> TestDatabase {
        static CREATED: AtomicUsize = AtomicUsize::new(0);
        assert!(prefix.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_'));
        // Each test is a process of its own: the process id tells them apart, the counter tells
        // apart the databases of one test.
        let name = format!("{prefix}_{}_{}", std::process::id(), CREATED.fetch_add(1, Ordering::Relaxed));
        assert!(name.len() <= 40, "{name} leaves too little room for user names");
        server.mariadb(&format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"));
        TestDatabase { server: server.clone(), name, users: Mutex::new(Vec::new()) }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Runs `sql` (one statement or a script) in this database as root and returns its stdout:
    /// one line per row, fields separated by tabs, as stored.
    pub(crate) fn mariadb(&self, sql: &str) -> String {
        self.server.mariadb_in(Some(&self.name), sql)
    }

    /// Makes a user with `password`, from 127.0.0.1 (TCP) and from localhost (the socket), that,
    /// when `grant_select`, may read every table of this database (`GRANT SELECT ON db.*`), and
    /// otherwise holds no privilege at all: the server then refuses it the database when it
    /// connects. Users belong to the whole server, so the user's name is this database's name,
    /// `_` and `user`; it is returned, for `url`.
    pub(crate) fn create_reader(&self, user: &str, password: &str, grant_select: bool) -> String {
        let user = format!("{}_{user}", self.name);
        // MariaDB 10.11 takes user names of up to 128 characters (MySQL 8, 32).
        assert!(user.len() <= 128 && user.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_'));
        let password = sql_string(password);
        let mut sql = String::new();
        for host in READER_HOSTS {
            sql.push_str(&format!("CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}';\n"));
            if grant_select {
                sql.push_str(&format!("GRANT SELECT ON `{}`.* TO '{user}'@'{host}';\n", self.name));
            }
        }
        self.users.lock().unwrap().push(user.clone());
        self.mariadb(&sql);
        user
    }

    /// `mysql://user[:password]@host:port/database`, the password percent-encoded.
    pub(crate) fn url(&self, user: &str, password: Option<&str>) -> String {
        let password = password.map(|password| format!(":{}", percent_encode(password))).unwrap_or_default();
        format!("mysql://{user}{password}@{}/{}", self.server.address(), self.name)
    }
}

impl Drop for TestDatabase {
    /// Best effort: a private server the test stopped cannot drop anything, and takes its
    /// databases with it. Connections still in the database or of its users are killed first:
    /// DROP DATABASE would wait for an open transaction's locks (bounded here by
    /// lock_wait_timeout all the same).
    fn drop(&mut self) {
        let users = self.users.lock().unwrap();
        let user_list = users.iter().map(|user| format!("'{user}'")).collect::<Vec<_>>().join(", ");
        let of_users = if users.is_empty() { String::new() } else { format!(" OR user IN ({user_list})") };
        let mut sql = format!(
            "DELIMITER //\n\
             BEGIN NOT ATOMIC\n\
               FOR victim IN (SELECT id FROM information_schema.PROCESSLIST\n\
                   WHERE id <> CONNECTION_ID() AND (db = '{name}'{of_users})) DO\n\
                 KILL CONNECTION victim.id;\n\
               END FOR;\n\
             END //\n\
             DELIMITER ;\n\
             SET SESSION lock_wait_timeout = 30;\n\
             DROP DATABASE IF EXISTS `{name}`;\n",
            name = self.name
        );
        for user in users.iter() {
            for host in READER_HOSTS {
                sql.push_str(&format!("DROP USER IF EXISTS '{user}'@'{host}';\n"));
            }
        }
        let _ = self.server.mariadb_connect(&["--user=root"], &sql);
    }
}

/// Fills `database` (empty) with Django itself (tests/django/make_database.py --mysql, through
/// PyMySQL): `migrate` makes the tables, the ORM writes the rows (one API named
/// `FOUR_BYTE_API` among them), with USE_TZ = `use_tz` and TIME_ZONE = `time_zone`. Returns the
/// statements of `sqlmigrate apiMetrics 0001` (a JSON array of strings, without semicolons) and
/// the ORM's 24-hour counts by (api, status).
pub(crate) fn django_fill(
    database: &TestDatabase,
    use_tz: bool,
    time_zone: &str,
) -> (serde_json::Value, BTreeMap<(String, String), u64>) {
    let output = Command::new(python())
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/django/make_database.py"))
        .args(["--mysql", &database.server.address(), &database.name])
        .args(["--use-tz", if use_tz { "true" } else { "false" }, "--time-zone", time_zone])
        .stdin(Stdio::null())
        .output()
        .expect("running python");
    assert!(
        output.status.success(),
        "filling {} with Django failed (tests/run installs Django and PyMySQL and sets APIMETRICS_TEST_PYTHON): {}",
        database.name,
        stderr(&output)
    );
    let mut made: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let counts = orm_counts(&made);
    (made["schema"].take(), counts)
}

/// The options of a server in `directory` on `port`, as tests/run gives its own: TLS with the
/// certificate in `tls` (the shared server's folder), utf8mb4, addresses never resolved to names,
/// and no waiting for the disk.
fn server_options(directory: &Path, port: u16, tls: &Path) -> Vec<String> {
    let path = |name: &str| directory.join(name).display().to_string();
    let tls = |name: &str| tls.join(name).display().to_string();
    vec![
        "--no-defaults".to_owned(),
        "--user=mysql".to_owned(),
        format!("--datadir={}", path("data")),
        format!("--tmpdir={}", path("tmp")),
        "--bind-address=127.0.0.1".to_owned(),
        format!("--port={port}"),
        format!("--socket={}", path("mysqld.sock")),
        format!("--pid-file={}", path("mariadbd.pid")),
        format!("--log-error={}", path("error.log")),
        "--skip-name-resolve".to_owned(),
        format!("--ssl-ca={}", tls("ca.crt")),
        format!("--ssl-cert={}", tls("server.crt")),
        format!("--ssl-key={}", tls("server.key")),
        "--character-set-server=utf8mb4".to_owned(),
        "--collation-server=utf8mb4_unicode_ci".to_owned(),
        "--innodb-flush-log-at-trx-commit=0".to_owned(),
        "--innodb-doublewrite=0".to_owned(),
        "--innodb-flush-method=nosync".to_owned(),
        "--skip-log-bin".to_owned(),
        "--max-connections=500".to_owned(),
    ]
}

/// Debian's server binary: /usr/sbin may be off the PATH.
fn mariadbd() -> &'static str {
    if Path::new("/usr/sbin/mariadbd").exists() { "/usr/sbin/mariadbd" } else { "mariadbd" }
}

/// A second MariaDB server of a test's own, for what the shared one must not go through (a stop
/// and a start). Killed when dropped.
pub(crate) struct PrivateServer {
    pub(crate) server: MariadbServer,
    directory: PathBuf,
    /// The running mariadbd, none while stopped.
    process: Mutex<Option<Child>>,
}

/// Makes and starts a server in `directory` (which the mysql user must be able to reach, as
/// tempfile's folders under /tmp are; it is handed to that user) on a free loopback port: the
/// shared server's accounts (root from 127.0.0.1 without a password), settings and TLS
/// certificate, which sits beside the CA.
pub(crate) fn private_mariadb(directory: &Path) -> PrivateServer {
    let shared = mariadb();
    let server = MariadbServer { port: free_port(), ..shared };
    std::fs::create_dir(directory.join("tmp")).unwrap();
    let chowned = Command::new("chown").args(["-R", "mysql:mysql"]).arg(directory).output().unwrap();
    assert!(chowned.status.success(), "{}", stderr(&chowned));

    let installed = Command::new("mariadb-install-db")
        .args(["--no-defaults", "--user=mysql"])
        .arg(format!("--datadir={}", directory.join("data").display()))
        .arg(format!("--tmpdir={}", directory.join("tmp").display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
        .current_dir(directory)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(installed.status.success(), "mariadb-install-db: {}{}", stdout(&installed), stderr(&installed));

    let private = PrivateServer { server, directory: directory.to_owned(), process: Mutex::new(None) };
    private.start();
    // As tests/run does, over the socket as root@localhost.
    private.admin_sql(
        "CREATE OR REPLACE USER 'root'@'127.0.0.1';\n\
         GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;\n",
    );
    private
}

impl PrivateServer {
    fn socket(&self) -> String {
        self.directory.join("mysqld.sock").display().to_string()
    }

    /// Runs `sql` over the server's socket as root@localhost; panics if it fails.
    fn admin_sql(&self, sql: &str) {
        let output = Command::new("mariadb")
            .args(["--no-defaults", "--batch", "--user=root", "--socket", &self.socket(), "--execute", sql])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(output.status.success(), "mariadb over the private server's socket: {}", stderr(&output));
    }

    /// Starts the server and waits until it accepts connections; panics with its log if it exits
    /// or is not ready within a minute.
    pub(crate) fn start(&self) {
        let mut process = self.process.lock().unwrap();
        assert!(process.is_none(), "the private MariaDB server is already running");
        let tls = self.server.ca_file.parent().unwrap();
        let mut child = Command::new(mariadbd())
            .args(server_options(&self.directory, self.server.port, tls))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("running mariadbd");
        let log = || std::fs::read_to_string(self.directory.join("error.log")).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.server.is_ready() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "the private MariaDB server exited ({status}) before it accepted connections; its log:\n{}",
                    log()
                );
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the private MariaDB server did not accept connections within 60 s; its log:\n{}", log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        *process = Some(child);
    }

    /// Stops the server (a shutdown: its clients are disconnected) and waits until it has exited.
    pub(crate) fn stop(&self) {
        let mut process = self.process.lock().unwrap();
        let mut child = process.take().expect("the private MariaDB server is running");
        let stopped = Command::new("mariadb-admin")
            .args(["--no-defaults", "--user=root", "--socket", &self.socket(), "--shutdown-timeout=60", "shutdown"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if !stopped.status.success() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mariadb-admin shutdown: {}", stderr(&stopped));
        }
        let status = child.wait().unwrap();
        assert!(status.success(), "the private MariaDB server exited with {status}");
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The apiMetrics tables of `database` as the data dictionary describes them: engine and
/// collation, columns (types, nullability, defaults, auto-increment, character sets), indexes,
/// foreign keys and check constraints.
fn describe_tables(database: &TestDatabase) -> String {
    database.mariadb(
        "SELECT TABLE_NAME, ENGINE, TABLE_COLLATION FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE 'apiMetrics%' ORDER BY 1;\n\
         SELECT TABLE_NAME, ORDINAL_POSITION, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA, \
                CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE 'apiMetrics%' ORDER BY 1, 2;\n\
         SELECT TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX, COLUMN_NAME, NON_UNIQUE, INDEX_TYPE FROM information_schema.STATISTICS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE 'apiMetrics%' ORDER BY 1, 2, 3;\n\
         SELECT k.TABLE_NAME, k.CONSTRAINT_NAME, k.COLUMN_NAME, k.REFERENCED_TABLE_NAME, k.REFERENCED_COLUMN_NAME, \
                r.UPDATE_RULE, r.DELETE_RULE FROM information_schema.KEY_COLUMN_USAGE k \
         LEFT JOIN information_schema.REFERENTIAL_CONSTRAINTS r \
           ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME \
         WHERE k.TABLE_SCHEMA = DATABASE() AND k.TABLE_NAME LIKE 'apiMetrics%' ORDER BY 1, 2, 3;\n\
         SELECT TABLE_NAME, CONSTRAINT_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
         WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME LIKE 'apiMetrics%' ORDER BY 1, 2;\n",
    )
}

/// The offset from UTC of `time_zone` now, as MariaDB's `time_zone` takes it (`+03:00`).
fn utc_offset_now(time_zone: &str) -> String {
    let zone: Tz = time_zone.parse().unwrap();
    let seconds = Utc::now().with_timezone(&zone).offset().fix().local_minus_utc();
    let sign = if seconds < 0 { '-' } else { '+' };
    format!("{sign}{:02}:{:02}", seconds.abs() / 3600, seconds.abs() % 3600 / 60)
}

/// Django makes exactly the tables of schema/django-mysql.sql, and its ORM counts what the
/// database itself counts from its own clock, read in the zone Django wrote in: UTC with USE_TZ,
/// TIME_ZONE's local time without. Django converts the times itself: the server has no time zone
/// tables.
fn assert_django_makes_the_reference_tables(use_tz: bool, time_zone: &str) {
    let made = TestDatabase::create("django_made");
    let (statements, django_counts) = django_fill(&made, use_tz, time_zone);
    for statement in statements.as_array().unwrap() {
        let statement = statement.as_str().unwrap();
        assert!(
            MARIADB_SCHEMA.contains(&format!("{statement};")),
            "Django made {statement}, which schema/django-mysql.sql lacks"
        );
    }
    let reference = TestDatabase::create("reference");
    reference.mariadb(MARIADB_SCHEMA);
    assert_eq!(describe_tables(&made), describe_tables(&reference));
    // A DateTimeField is a `datetime(6)`, which holds no zone.
    assert_eq!(
        made.mariadb(
            "SELECT COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
             AND TABLE_NAME = 'apiMetrics_transaction' AND COLUMN_NAME = 'time_modified'"
        ),
        "datetime(6)\n"
    );
    assert_eq!(made.mariadb("SELECT COUNT(*) FROM mysql.time_zone_name"), "0\n", "the server has time zone tables");

    assert!(django_counts.len() > 10 && django_counts.values().sum::<u64>() > 1000, "{django_counts:?}");
    assert!(django_counts.keys().any(|(api, _)| api == FOUR_BYTE_API), "{django_counts:?}");
    // The session reads its clock at the zone's offset now (Africa/Nairobi has kept +03:00 all
    // year since 1942, so it holds over the rows' 48 hours).
    let offset = if use_tz { "+00:00".to_owned() } else { utc_offset_now(time_zone) };
    let database_counts = made.mariadb(&format!(
        "SET time_zone = '{offset}';\n\
         SELECT COALESCE(JSON_ARRAYAGG(JSON_ARRAY(api, status, n)), '[]') FROM ( \
             SELECT a.name AS api, s.name AS status, COUNT(*) AS n FROM apiMetrics_transaction t \
             JOIN apiMetrics_api a ON a.id = t.api_id JOIN apiMetrics_transactionstatus s ON s.id = t.status_id \
             WHERE t.time_modified >= NOW(6) - INTERVAL 24 HOUR GROUP BY a.name, s.name) AS counted;"
    ));
    let database_counts: BTreeMap<(String, String), u64> =
        serde_json::from_str::<Vec<(String, String, u64)>>(&database_counts)
            .unwrap()
            .into_iter()
            .map(|(api, status, n)| ((api, status), n))
            .collect();
    assert_eq!(database_counts, django_counts);
    // The newest row, saved through save() (auto_now) moments ago, reads as now on that clock.
    let age: i64 = made
        .mariadb(&format!(
            "SET time_zone = '{offset}';\n\
             SELECT TIMESTAMPDIFF(SECOND, MAX(time_modified), NOW(6)) FROM apiMetrics_transaction;"
        ))
        .trim()
        .parse()
        .unwrap();
    assert!((0..600).contains(&age), "the newest row is {age} s old on the clock at {offset}");
}

#[test]
fn django_makes_the_reference_tables_on_mariadb_with_use_tz() {
    assert_django_makes_the_reference_tables(true, "UTC");
}

#[test]
fn django_makes_the_reference_tables_on_mariadb_with_local_times_in_nairobi() {
    assert_django_makes_the_reference_tables(false, "Africa/Nairobi");
}

/// The TLS version a connection with `connection`'s options runs ("" without TLS), as the server
/// reports it.
fn tls_version(server: &MariadbServer, connection: &[&str]) -> String {
    let output = server.mariadb_connect(connection, "SHOW SESSION STATUS LIKE 'Ssl_version';");
    assert!(output.status.success(), "{connection:?}: {}", stderr(&output));
    stdout(&output).trim_end_matches('\n').split('\t').nth(1).unwrap_or_default().to_owned()
}

#[test]
fn the_shared_server_verifies_by_tls_and_asks_readers_for_their_password() {
    let server = mariadb();
    let ca = format!("--ssl-ca={}", server.ca_file.display());
    let verified = ["--ssl", "--ssl-verify-server-cert", ca.as_str()];
    // TLS verified against the CA, by address and by name, and plain TCP as well.
    for host in ["--host=127.0.0.1", "--host=localhost"] {
        let version = tls_version(&server, &[&["--user=root", host][..], &verified[..]].concat());
        assert!(version.starts_with("TLSv1."), "{host}: {version:?}");
    }
    assert_eq!(tls_version(&server, &["--user=root", "--skip-ssl"]), "");

    let database = TestDatabase::create("readers");
    database.mariadb(MARIADB_SCHEMA);
    let password = "it's a secret: 100% @home/ \\";
    let reader = database.create_reader("reader", password, true);
    let no_select = database.create_reader("no_select", password, false);
    let count = "SELECT COUNT(*) FROM apiMetrics_transaction;";
    let as_reader = format!("--user={reader}");
    let with_password = format!("--password={password}");
    let in_database = format!("--database={}", database.name());

    // With its password, over TLS verified against the CA and over plain TCP.
    for tls in [&verified[..], &["--skip-ssl"][..]] {
        let connection = [&[as_reader.as_str(), &with_password, &in_database][..], tls].concat();
        let output = server.mariadb_connect(&connection, count);
        assert!(output.status.success(), "{connection:?}: {}", stderr(&output));
        assert_eq!(stdout(&output), "0\n");
    }

    // Without SELECT, the database is refused at once.
    let output = server.mariadb_connect(&[&format!("--user={no_select}"), &with_password, &in_database], count);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message
            .contains(&format!("Access denied for user '{no_select}'@'127.0.0.1' to database '{}'", database.name())),
        "{message}"
    );

    // Without a password, or with a wrong one, the reader is refused.
    for (password, says) in [(None, "(using password: NO)"), (Some("--password=wrong"), "(using password: YES)")] {
        let connection = [&[as_reader.as_str(), &in_database][..], &verified[..], password.as_slice()].concat();
        let output = server.mariadb_connect(&connection, count);
        assert!(!output.status.success(), "{connection:?}");
        let message = stderr(&output);
        assert!(message.contains(&format!("Access denied for user '{reader}'@'127.0.0.1' {says}")), "{message}");
    }

    // A CA of the test's own, which signed nothing the server holds.
    let directory = tempfile::tempdir().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let other_ca = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
    let other_file = directory.path().join("other-ca.pem");
    std::fs::write(&other_file, other_ca.pem()).unwrap();
    let other = format!("--ssl-ca={}", other_file.display());
    let connection = [as_reader.as_str(), &with_password, &in_database, "--ssl", "--ssl-verify-server-cert", &other];
    let output = server.mariadb_connect(&connection, count);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("TLS/SSL error") && message.contains("certificate"), "{message}");
}

#[test]
fn a_private_server_stops_and_starts_again_with_its_data() {
    let directory = tempfile::tempdir().unwrap();
    let private = private_mariadb(directory.path());
    let database = TestDatabase::create_on(&private.server, "restarted");
    database.mariadb("CREATE TABLE kept (n integer); INSERT INTO kept VALUES (7);");

    private.stop();
    assert!(!private.server.is_ready(), "the private server still answers after a stop");
    private.start();
    assert_eq!(database.mariadb("SELECT n FROM kept;"), "7\n");

    // The shared server's certificate serves this one too, and root connects from 127.0.0.1.
    let ca = format!("--ssl-ca={}", private.server.ca_file.display());
    let version =
        tls_version(&private.server, &["--user=root", "--host=localhost", "--ssl", "--ssl-verify-server-cert", &ca]);
    assert!(version.starts_with("TLSv1."), "{version:?}");
}
