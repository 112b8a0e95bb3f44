//! The MariaDB benchmark: `cargo bench --bench mariadb`.
//!
//! Starts a private MariaDB (Debian's, as the mysql user, on a free loopback port, as tests/run
//! starts one but without TLS: no flush at commit, no doublewrite, no binary log;
//! `innodb_buffer_pool_size` at its default), creates Django's tables (schema/django-mysql.sql),
//! 4 APIs × 6 statuses and 10,000,000 transactions over 48 hours, half of them in the 24-hour
//! window, then, with no index on `time_modified`, with a plain one (what
//! `models.Index(fields=["time_modified"])` makes) and with the covering one of schema/index.sql,
//! times the agent's tick (`apimetrics-agent once --dry-run`, its `query_ms` and the whole
//! process) against the `mariadb` client running the plain `GROUP BY a.name, s.name` query
//! Django's ORM would send (the query timed on the server's clock, and the whole process),
//! alternated, and reports the medians, the agent/client ratios and the agent's peak RSS, as a
//! table to paste into the README. Each case checks that the agent counts exactly what the
//! client counts, pair by pair.
//!
//! The two times of each side: the agent's `query_ms` is its whole read, connecting (with the
//! tables' checks) included, as `once` makes a new connection (a tick of `run` reuses one); the
//! client's is the query alone, after it has connected: `NOW(6)` read by the server before and
//! after it, one round trip included, as psql's `\timing` has. The processes' wall times include
//! starting, connecting and exiting for both. The window's rows lie in its last 23 hours
//! (`WINDOW_MARGIN`), so the counts stay exact for the bench's first hour after loading.
//!
//! `BENCH_MARIADB_ROWS` sets another size; `BENCH_MARIADB_DAYS` the days of history (default 2:
//! half the rows in the window; 30 puts one in 30 there, as on a site that keeps a month, where
//! an index on `time_modified` starts to matter); `BENCH_RUNS` the timed runs of each side per
//! case (the median is kept; at least 2).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use apimetrics_agent::populate::WINDOW_INDEX;
use chrono::Utc;

mod peak_rss;

/// The tables Django 5.2 creates for the apiMetrics models on MariaDB (`sqlmigrate` output).
const MARIADB_SCHEMA: &str = include_str!("../../schema/django-mysql.sql");
const DATABASE: &str = "apimetrics_bench";
const API_NAMES: [&str; 4] = ["Mpesa Express", "Mpesa B2C", "Mpesa C2B", "Mpesa B2B"];
const STATUS_NAMES: [&str; 6] = ["Pending", "Processing", "Processed", "Failed", "TimedOut", "Cancelled"];
/// The window's rows lie in its last 23 hours, so that for this long after loading none of them
/// leaves the window and the agent and the client, run at different moments, count the same rows.
const WINDOW_MARGIN: Duration = Duration::from_secs(3600);

/// The query Django's ORM sends for
/// `Transaction.objects.filter(time_modified__gte=now() - timedelta(hours=24))
///     .values("api__name", "status__name").annotate(Count("id"))` with USE_TZ on (it binds the
/// window's start in UTC), as the client runs it.
const PLAIN_QUERY: &str = "SELECT a.name, s.name, COUNT(t.id) FROM `apiMetrics_transaction` t \
     JOIN `apiMetrics_api` a ON a.id = t.api_id JOIN `apiMetrics_transactionstatus` s ON s.id = t.status_id \
     WHERE t.time_modified >= UTC_TIMESTAMP(6) - INTERVAL 24 HOUR GROUP BY a.name, s.name";

/// The plain index `models.Index(fields=["time_modified"])` makes (Django names it
/// `apiMetrics__time_mo_<hash>_idx`; the name changes nothing here).
const PLAIN_INDEX: &str = "CREATE INDEX `apiMetrics__time_mo_bench_idx` ON `apiMetrics_transaction` (`time_modified`);";

/// The three cases, by the index on `time_modified`; each is made from the one before.
#[derive(Debug, Clone, Copy)]
enum Case {
    Absent,
    Plain,
    Covering,
}

impl Case {
    fn label(self) -> &'static str {
        match self {
            Case::Absent => "no index on `time_modified`",
            Case::Plain => "plain index on `time_modified`",
            Case::Covering => "covering index (`schema/index.sql`)",
        }
    }

    /// What turns the previous case's table into this one's.
    fn setup(self) -> String {
        match self {
            Case::Absent => String::new(),
            Case::Plain => format!("{PLAIN_INDEX}\nANALYZE TABLE `apiMetrics_transaction`;\n"),
            // schema/index.sql quotes its names as PostgreSQL and SQLite do: ANSI_QUOTES reads
            // them as names, for this session only.
            Case::Covering => format!(
                "DROP INDEX `apiMetrics__time_mo_bench_idx` ON `apiMetrics_transaction`;\n\
                 SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES');\n{WINDOW_INDEX}\n\
                 ANALYZE TABLE `apiMetrics_transaction`;\n"
            ),
        }
    }
}

/// One case's figures.
struct Figures {
    case: Case,
    agent_query: Duration,
    agent_process: Duration,
    client_query: Duration,
    client_process: Duration,
    agent_peak_rss: u64,
}

fn main() {
    if peak_rss::serve_request() {
        return;
    }
    let n_rows: u64 = std::env::var("BENCH_MARIADB_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
    let n_runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5).max(2);
    let n_days: u64 = std::env::var("BENCH_MARIADB_DAYS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    assert!(
        n_days >= 2 && n_rows >= n_days,
        "BENCH_MARIADB_DAYS must be at least 2 and BENCH_MARIADB_ROWS at least that"
    );
    let n_in_window = n_rows - rows_before_the_window(n_rows, n_days);

    let started = Instant::now();
    let server = PrivateServer::start();
    println!("started in {:.1?}", started.elapsed());
    server.mariadb(None, &format!("CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"));
    let settings = server.mariadb(
        Some(DATABASE),
        "SELECT VERSION(), @@innodb_buffer_pool_size DIV 1048576, @@query_cache_type, \
         @@innodb_flush_log_at_trx_commit, @@max_statement_time;",
    );
    let settings: Vec<&str> = settings.trim().split('\t').collect();
    println!(
        "MariaDB {} on 127.0.0.1:{} (innodb_buffer_pool_size {} MB, the default; query_cache_type {}; \
         innodb_flush_log_at_trx_commit {}; max_statement_time {})",
        settings[0], server.port, settings[1], settings[2], settings[3], settings[4]
    );

    let loaded_at = Instant::now();
    server.mariadb(Some(DATABASE), &load_script(n_rows, n_days));
    println!(
        "loaded {n_rows} transactions ({n_in_window} in the window; 4 APIs x 6 statuses) with Django's keys and \
         indexes in {:.1?}",
        loaded_at.elapsed()
    );
    let started = Instant::now();
    server.mariadb(Some(DATABASE), "ANALYZE TABLE `apiMetrics_transaction`;");
    let size = server.mariadb(
        Some(DATABASE),
        "SELECT ROUND((DATA_LENGTH + INDEX_LENGTH) / 1048576) FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'apiMetrics_transaction';",
    );
    println!("ANALYZE TABLE in {:.1?}; the table and its indexes: about {} MB", started.elapsed(), size.trim());

    let directory = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a temporary directory");
    let config = directory.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\ndatabase = \"mysql://root@127.0.0.1:{}/{DATABASE}\"\nsslmode = \"disable\"\n\
             timeout = \"10m\"\n[schedule]\ninterval = \"15s\"\n",
            server.port
        ),
    )
    .unwrap();

    let mut all_figures = Vec::new();
    for case in [Case::Absent, Case::Plain, Case::Covering] {
        println!("\n{}:", case.label());
        let setup = case.setup();
        if !setup.is_empty() {
            let started = Instant::now();
            server.mariadb(Some(DATABASE), &setup);
            println!("  made in {:.1?}", started.elapsed());
        }
        print_plans(&server);

        // A first run of each, untimed, warms the cache and is checked pair by pair.
        let (agent_counts, _, _) = run_agent(&config);
        let client_counts = plain_counts(&server);
        check_counts(&agent_counts, &client_counts, n_in_window, loaded_at);

        let (mut agent_query, mut agent_process, mut client_query, mut client_process) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for run in 0..n_runs {
            // Alternated, and each side first in every other round.
            for agent_first in [run % 2 == 0, run % 2 == 1] {
                if agent_first {
                    let (counts, query, process) = run_agent(&config);
                    let n_counted: u64 = counts.values().sum();
                    assert_eq!(n_counted, n_in_window, "a timed run of the agent counted another number of rows");
                    agent_query.push(query);
                    agent_process.push(process);
                } else {
                    let (query, process) = run_client(&server);
                    client_query.push(query);
                    client_process.push(process);
                }
            }
        }
        let agent_peak_rss = peak_rss::peak_rss_of(
            env!("CARGO_BIN_EXE_apimetrics-agent"),
            &["--config", config.to_str().unwrap(), "once", "--dry-run"],
        );
        println!("  agent's tick (query_ms)  {}", milliseconds(&agent_query));
        println!("  agent's process          {}", milliseconds(&agent_process));
        println!("  client's query           {}", milliseconds(&client_query));
        println!("  client's process         {}", milliseconds(&client_process));
        let figures = Figures {
            case,
            agent_query: median(&agent_query),
            agent_process: median(&agent_process),
            client_query: median(&client_query),
            client_process: median(&client_process),
            agent_peak_rss,
        };
        println!(
            "  medians: agent {:.3} s (process {:.3} s), client {:.3} s (process {:.3} s); agent / client {:.2}x \
             (processes {:.2}x); agent's peak RSS {:.1} MB",
            figures.agent_query.as_secs_f64(),
            figures.agent_process.as_secs_f64(),
            figures.client_query.as_secs_f64(),
            figures.client_process.as_secs_f64(),
            ratio(figures.agent_query, figures.client_query),
            ratio(figures.agent_process, figures.client_process),
            agent_peak_rss as f64 / 1e6
        );
        all_figures.push(figures);
    }

    println!(
        "\n{n_rows} transactions over {n_days} days, {n_in_window} in the window, MariaDB {}; median of {n_runs} \
         alternated runs (agent / client above 1 means the agent is slower):\n",
        settings[0]
    );
    println!(
        "| | agent's tick (`query_ms`) | the client's query | agent / client | agent's process | client's process \
         | agent / client (processes) | agent's peak RSS |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for figures in &all_figures {
        println!(
            "| {} | {:.3} s | {:.3} s | **{:.2}×** | {:.3} s | {:.3} s | {:.2}× | {:.1} MB |",
            figures.case.label(),
            figures.agent_query.as_secs_f64(),
            figures.client_query.as_secs_f64(),
            ratio(figures.agent_query, figures.client_query),
            figures.agent_process.as_secs_f64(),
            figures.client_process.as_secs_f64(),
            ratio(figures.agent_process, figures.client_process),
            figures.agent_peak_rss as f64 / 1e6
        );
    }
}

/// How many of `n_rows` transactions spread over `n_days` days lie before the 24-hour window.
fn rows_before_the_window(n_rows: u64, n_days: u64) -> u64 {
    n_rows * (n_days - 1) / n_days
}

/// Django's tables, the names, the transactions, then Django's foreign keys. The keys come last,
/// and the rows go in with foreign_key_checks and unique_checks off into a table still empty in
/// one statement, because InnoDB then loads it in bulk (one undo record for the whole insert, no
/// row locks) and a key added with foreign_key_checks off builds its index in place, by sorting
/// all rows at once, instead of copying the table; the tables end up exactly as the schema file
/// makes them, and the ids the keys point to exist by construction. Transaction `i` (1..=n), its
/// `id` too, has `time_modified` spread evenly over `n_days` days to 24 hours ago for all but one
/// day's share, over the last 24 hours less `WINDOW_MARGIN` for the rest, in UTC, as Django
/// writes with USE_TZ on; `id` follows time, as in an app's table. The rows come from MariaDB's
/// Sequence engine (`seq_1_to_<n>`), never leaving the server.
fn load_script(n_rows: u64, n_days: u64) -> String {
    let statements: Vec<&str> =
        MARIADB_SCHEMA.lines().filter(|line| !line.starts_with("--") && !line.trim().is_empty()).collect();
    let (keys, tables): (Vec<&str>, Vec<&str>) =
        statements.into_iter().partition(|line| line.starts_with("ALTER TABLE"));
    assert!(
        tables.len() == 3 && tables.iter().all(|line| line.starts_with("CREATE TABLE")) && keys.len() == 2,
        "schema/django-mysql.sql changed shape: one statement a line, 3 CREATE TABLE, 2 foreign keys"
    );
    let apis: Vec<String> = API_NAMES
        .iter()
        .enumerate()
        .map(|(position, name)| {
            format!("('{name}', '{name} payments', '{{\"shortcode\": \"{}\"}}')", 174379 + position)
        })
        .collect();
    let statuses: Vec<String> = STATUS_NAMES.iter().map(|name| format!("('{name}', '{name}')")).collect();
    let n_before = rows_before_the_window(n_rows, n_days);
    let n_in_window = n_rows - n_before;
    let history_microseconds = (n_days - 1) * 86_400_000_000;
    let window_microseconds = 86_400_000_000 - WINDOW_MARGIN.as_micros() as u64;
    let margin = WINDOW_MARGIN.as_secs();
    // The step between rows, in microseconds, exact to a millionth: MariaDB multiplies decimals
    // exactly, so a row's time never drifts, whatever the count.
    let step = |span: u64, n: u64| format!("{:.6}", span as f64 / n as f64);
    let (history_step, window_step) = (step(history_microseconds, n_before), step(window_microseconds, n_in_window));
    // Uneven shares per API and status, so that a pair counted under another's name shows.
    let transactions = format!(
        "SET @now = UTC_TIMESTAMP(6);\n\
         INSERT INTO `apiMetrics_transaction` (id, amount, time_created, time_modified, api_id, status_id)\n\
         SELECT i, (i * 7919 % 1000000) / 100.0, modified - INTERVAL 30 SECOND, modified, 1 + i % 10 % 4, \
         1 + i DIV 10 % 15 % 6\n\
         FROM (SELECT seq AS i, CASE WHEN seq <= {n_before}\n\
             THEN @now - INTERVAL {n_days} DAY + INTERVAL FLOOR((seq - 1) * {history_step}) MICROSECOND\n\
             ELSE @now - INTERVAL 24 HOUR + INTERVAL {margin} SECOND\n\
                 + INTERVAL FLOOR((CAST(seq AS SIGNED) - {n_before} - 1) * {window_step}) MICROSECOND\n\
             END AS modified\n\
           FROM seq_1_to_{n_rows}) AS numbered;\nCOMMIT;"
    );
    format!(
        "SET SESSION foreign_key_checks = 0, unique_checks = 0;\n{}\n\
         INSERT INTO `apiMetrics_api` (name, description, params) VALUES {};\n\
         INSERT INTO `apiMetrics_transactionstatus` (name, description) VALUES {};\n\
         BEGIN;\n{transactions}\n{}\n",
        tables.join("\n"),
        apis.join(", "),
        statuses.join(", "),
        keys.join("\n")
    )
}

/// Prints the plans of the agent's query (the shape agent/source/mysql.rs sends, with literal
/// bounds for its parameters) and of the plain one.
fn print_plans(server: &PrivateServer) {
    let now = Utc::now();
    let format = "%Y-%m-%d %H:%M:%S%.6f";
    let start = (now - chrono::Duration::hours(24)).format(format);
    let future_from = (now + chrono::Duration::minutes(1)).format(format);
    let agent_query = format!(
        "SELECT api_id, status_id, COUNT(*), COUNT(CASE WHEN time_modified > '{future_from}' THEN 1 END) \
         FROM `apiMetrics_transaction` WHERE time_modified >= '{start}' GROUP BY api_id, status_id"
    );
    for (whose, query) in [("agent's", agent_query.as_str()), ("plain", PLAIN_QUERY)] {
        println!("  {whose} query's plan:");
        for line in server.mariadb(Some(DATABASE), &format!("EXPLAIN {query};")).lines() {
            println!("    {line}");
        }
    }
}

/// Runs `apimetrics-agent once --dry-run`; returns its counts by (API, status) name, the tick's
/// `query_ms` and the process's wall time.
fn run_agent(config: &Path) -> (BTreeMap<(String, String), u64>, Duration, Duration) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_apimetrics-agent"))
        .args(["--config", config.to_str().unwrap(), "once", "--dry-run"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("running the agent");
    let process = started.elapsed();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the agent failed: {log}");
    let query_ms: u64 = log
        .lines()
        .filter(|line| line.contains("tick done"))
        .find_map(|line| line.split("query_ms=").nth(1)?.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no `tick done ... query_ms=` in the agent's log: {log}"));
    let exposition = String::from_utf8(output.stdout).unwrap();
    let label = |line: &str, name: &str| -> String {
        let value = line.split(&format!("{name}=\"")).nth(1).and_then(|rest| rest.split('"').next());
        value.unwrap_or_else(|| panic!("no {name} label in {line:?}")).to_owned()
    };
    let counts = exposition
        .lines()
        .filter(|line| line.starts_with("api_transactions{"))
        .map(|line| {
            let count = line.rsplit(' ').next().and_then(|count| count.parse().ok());
            ((label(line, "api"), label(line, "status")), count.unwrap_or_else(|| panic!("no count in {line:?}")))
        })
        .collect();
    (counts, Duration::from_millis(query_ms), process)
}

/// Runs the plain query with the `mariadb` client, as a user would, without TLS (as the agent's
/// config here); returns the query's time on the server's clock and the process's wall time.
fn run_client(server: &PrivateServer) -> (Duration, Duration) {
    let started = Instant::now();
    let output = server
        .client(Some(DATABASE))
        .arg("--execute")
        .arg(format!("SET @started = NOW(6); {PLAIN_QUERY}; SELECT TIMESTAMPDIFF(MICROSECOND, @started, NOW(6));"))
        .stdin(Stdio::null())
        .output()
        .expect("running mariadb");
    let process = started.elapsed();
    assert!(output.status.success(), "mariadb failed: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let microseconds: u64 = stdout
        .lines()
        .last()
        .and_then(|line| line.parse().ok())
        .unwrap_or_else(|| panic!("no time after the query's rows: {stdout:?}"));
    (Duration::from_micros(microseconds), process)
}

/// The plain query's counts by (API, status) name.
fn plain_counts(server: &PrivateServer) -> BTreeMap<(String, String), u64> {
    server
        .mariadb(Some(DATABASE), &format!("{PLAIN_QUERY};"))
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields.len(), 3, "mariadb printed {line:?}");
            ((fields[0].to_owned(), fields[1].to_owned()), fields[2].parse().unwrap())
        })
        .collect()
}

/// Fails loudly unless the agent counted exactly what the client did, every pair, and the window
/// holds the rows loaded into it.
fn check_counts(
    agent: &BTreeMap<(String, String), u64>,
    client: &BTreeMap<(String, String), u64>,
    n_in_window: u64,
    loaded_at: Instant,
) {
    let (agent_total, client_total) = (agent.values().sum::<u64>(), client.values().sum::<u64>());
    let agent_nonzero: BTreeMap<_, _> = agent.iter().filter(|(_, count)| **count > 0).collect();
    let client_nonzero: BTreeMap<_, _> = client.iter().filter(|(_, count)| **count > 0).collect();
    assert!(
        agent_nonzero == client_nonzero && agent_total == n_in_window,
        "the agent's counts differ from the client's ({agent_total} against {client_total} rows, {n_in_window} \
         loaded in the window; loaded {:.0?} ago, the window's rows stay put for {WINDOW_MARGIN:?}):\n\
         agent {agent:?}\nclient {client:?}",
        loaded_at.elapsed()
    );
    println!("  counts: the agent's equal the client's in all {} pairs, {agent_total} rows", client_nonzero.len());
}

fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

fn ratio(numerator: Duration, denominator: Duration) -> f64 {
    numerator.as_secs_f64() / denominator.as_secs_f64()
}

fn milliseconds(values: &[Duration]) -> String {
    let shown: Vec<String> = values.iter().map(|value| format!("{:.0}", value.as_secs_f64() * 1000.0)).collect();
    format!("{} ms", shown.join(", "))
}

/// A MariaDB server of the benchmark's own, in a folder under /tmp (which the mysql user can
/// reach) handed to that user. Stopped, and its folder removed, when dropped, also on a panic.
struct PrivateServer {
    port: u16,
    folder: tempfile::TempDir,
    process: Child,
}

impl PrivateServer {
    /// Makes and starts a server on a free loopback port, its root trusted over TCP from
    /// 127.0.0.1; waits until it accepts connections.
    fn start() -> PrivateServer {
        let folder = tempfile::Builder::new().prefix("apimetrics-bench-mariadb.").tempdir_in("/tmp").unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let path = |name: &str| folder.path().join(name).display().to_string();
        // mariadbd's temporary files go here: /tmp may be closed to the mysql user.
        std::fs::create_dir(folder.path().join("tmp")).unwrap();
        let chowned = Command::new("chown").args(["-R", "mysql:mysql"]).arg(folder.path()).output().unwrap();
        assert!(chowned.status.success(), "chown: {}", String::from_utf8_lossy(&chowned.stderr));

        let installed = Command::new("mariadb-install-db")
            .args(["--no-defaults", "--user=mysql", &format!("--datadir={}", path("data"))])
            .args([&format!("--tmpdir={}", path("tmp")), "--auth-root-authentication-method=normal", "--skip-test-db"])
            .current_dir(folder.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(installed.status.success(), "mariadb-install-db: {}", String::from_utf8_lossy(&installed.stdout));

        // Nothing here outlives the run: no waiting for the disk (no flush at commit, no
        // doublewrite buffer, no fsync of data files, no binary log) and a redo log large enough
        // that the load is not held up by checkpoints. None of it changes how a read runs;
        // innodb_buffer_pool_size stays at its default (128 MB).
        let mariadbd = if Path::new("/usr/sbin/mariadbd").exists() { "/usr/sbin/mariadbd" } else { "mariadbd" };
        let process = Command::new(mariadbd)
            .args(["--no-defaults", "--user=mysql", &format!("--datadir={}", path("data"))])
            .args([&format!("--tmpdir={}", path("tmp")), "--bind-address=127.0.0.1", &format!("--port={port}")])
            .args([&format!("--socket={}", path("mysqld.sock")), &format!("--pid-file={}", path("mariadbd.pid"))])
            .args([&format!("--log-error={}", path("error.log")), "--skip-name-resolve"])
            .args(["--character-set-server=utf8mb4", "--collation-server=utf8mb4_unicode_ci"])
            .args(["--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0", "--innodb-flush-method=nosync"])
            .args(["--skip-log-bin", "--innodb-log-file-size=1G"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("running mariadbd");
        let mut server = PrivateServer { port, folder, process };

        let deadline = Instant::now() + Duration::from_secs(60);
        while !server.is_ready() {
            let log = std::fs::read_to_string(server.folder.path().join("error.log")).unwrap_or_default();
            assert!(server.process.try_wait().unwrap().is_none(), "MariaDB exited at start; its log:\n{log}");
            assert!(Instant::now() < deadline, "MariaDB did not accept connections within 60 s; its log:\n{log}");
            std::thread::sleep(Duration::from_millis(100));
        }
        // root from 127.0.0.1 without a password, whatever mariadb-install-db made, as tests/run does.
        let granted = server
            .admin()
            .arg("--execute")
            .arg(
                "CREATE OR REPLACE USER 'root'@'127.0.0.1';\n\
                 GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;",
            )
            .output()
            .unwrap();
        assert!(granted.status.success(), "granting root: {}", String::from_utf8_lossy(&granted.stderr));
        server
    }

    /// The client as root@localhost over the server's socket.
    fn admin(&self) -> Command {
        let mut command = Command::new("mariadb");
        command.args(["--no-defaults", "--user=root", "--socket", &self.socket()]).stdin(Stdio::null());
        command
    }

    fn socket(&self) -> String {
        self.folder.path().join("mysqld.sock").display().to_string()
    }

    /// Whether the server answers on its port (`mariadb-admin ping`).
    fn is_ready(&self) -> bool {
        Command::new("mariadb-admin")
            .args(["--no-defaults", "--protocol=TCP", "--host=127.0.0.1", &format!("--port={}", self.port)])
            .args(["--user=root", "--connect-timeout=5", "ping"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    /// The client as root over TCP without TLS, in `database`, printing rows one a line, fields
    /// separated by tabs, as stored.
    fn client(&self, database: Option<&str>) -> Command {
        let mut command = Command::new("mariadb");
        command
            .args(["--no-defaults", "--batch", "--raw", "--skip-column-names", "--default-character-set=utf8mb4"])
            .args(["--protocol=TCP", "--host=127.0.0.1", &format!("--port={}", self.port), "--user=root"])
            .arg("--skip-ssl")
            .args(database.map(|database| format!("--database={database}")));
        command
    }

    /// Runs `sql` in `database` (or in none) as root, stopping at the first error; returns
    /// stdout, one line per row, fields separated by tabs. Panics if it fails.
    fn mariadb(&self, database: Option<&str>, sql: &str) -> String {
        let mut child = self
            .client(database)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running mariadb");
        // Written from a thread so that a long script and a long answer cannot block each other.
        let mut input = child.stdin.take().unwrap();
        let script = sql.to_owned();
        let writer = std::thread::spawn(move || input.write_all(script.as_bytes()));
        let output: Output = child.wait_with_output().unwrap();
        let _ = writer.join().unwrap();
        assert!(output.status.success(), "mariadb failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    }
}

impl Drop for PrivateServer {
    /// A shutdown over the socket, else a kill; then the folder goes with `folder`.
    fn drop(&mut self) {
        let stopped = Command::new("mariadb-admin")
            .args(["--no-defaults", "--user=root", "--socket", &self.socket(), "--shutdown-timeout=30", "shutdown"])
            .stdin(Stdio::null())
            .output();
        if !stopped.is_ok_and(|stopped| stopped.status.success()) {
            let _ = self.process.kill();
        }
        let _ = self.process.wait();
    }
}
