//! The PostgreSQL benchmark: `cargo bench --bench postgres`.
//!
//! Starts a private PostgreSQL (Debian's newest, as the postgres user, on a free loopback port,
//! `fsync = off`, `shared_buffers` at its default), creates Django's tables
//! (schema/django-postgresql.sql), 4 APIs × 6 statuses and 10,000,000 transactions over 48 hours,
//! half of them in the 24-hour window, then, with no index on `time_modified`, with a plain one
//! (what `models.Index(fields=["time_modified"])` makes) and with the covering one of
//! schema/index.sql, times the agent's tick (`apimetrics-agent once --dry-run`, its `query_ms` and
//! the whole process) against `psql` running the plain `GROUP BY a.name, s.name` query Django's ORM
//! would send (its `\timing` and the whole process), alternated, and reports the medians, the
//! agent/psql ratios and the agent's peak RSS, as a table to paste into the README. Each case
//! checks that the agent counts exactly what psql counts, pair by pair.
//!
//! The two times of each side: the agent's `query_ms` is its whole read, connecting (with the
//! tables' checks) included, as `once` makes a new connection (a tick of `run` reuses one);
//! psql's `\timing` is the query alone, after psql has connected. The processes' wall times
//! include starting, connecting and exiting for both. The window's rows lie in its last 23 hours
//! (`WINDOW_MARGIN`), so the counts stay exact for the bench's first hour after loading.
//!
//! `BENCH_PG_ROWS` sets another size; `BENCH_PG_DAYS` the days of history (default 2: half the
//! rows in the window; 30 puts one in 30 there, as on a site that keeps a month, where an index
//! on `time_modified` starts to matter); `BENCH_RUNS` the timed runs of each side per case (the
//! median is kept; at least 2).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use apimetrics_agent::populate::WINDOW_INDEX;
use chrono::Utc;

mod peak_rss;

/// The tables Django 5.2 creates for the apiMetrics models on PostgreSQL (`sqlmigrate` output).
const POSTGRES_SCHEMA: &str = include_str!("../../schema/django-postgresql.sql");
const DATABASE: &str = "apimetrics_bench";
const API_NAMES: [&str; 4] = ["Mpesa Express", "Mpesa B2C", "Mpesa C2B", "Mpesa B2B"];
const STATUS_NAMES: [&str; 6] = ["Pending", "Processing", "Processed", "Failed", "TimedOut", "Cancelled"];
/// The window's rows lie in its last 23 hours, so that for this long after loading none of them
/// leaves the window and the agent and psql, run at different moments, count the same rows.
const WINDOW_MARGIN: Duration = Duration::from_secs(3600);

/// The query Django's ORM sends for
/// `Transaction.objects.filter(time_modified__gte=now() - timedelta(hours=24))
///     .values("api__name", "status__name").annotate(Count("id"))`, as psql runs it.
const PLAIN_QUERY: &str = "SELECT a.name, s.name, count(t.id) FROM \"apiMetrics_transaction\" t \
     JOIN \"apiMetrics_api\" a ON a.id = t.api_id JOIN \"apiMetrics_transactionstatus\" s ON s.id = t.status_id \
     WHERE t.time_modified >= now() - interval '24 hours' GROUP BY a.name, s.name";

/// The plain index `models.Index(fields=["time_modified"])` makes (Django names it
/// `apiMetrics__time_mo_<hash>_idx`; the name changes nothing here).
const PLAIN_INDEX: &str =
    "CREATE INDEX \"apiMetrics__time_mo_bench_idx\" ON \"apiMetrics_transaction\" (\"time_modified\");";

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
            Case::Plain => format!("{PLAIN_INDEX}\nANALYZE \"apiMetrics_transaction\";\n"),
            // VACUUM again so that every page is all-visible and an index-only scan is possible.
            Case::Covering => format!(
                "DROP INDEX \"apiMetrics__time_mo_bench_idx\";\n{WINDOW_INDEX}\nVACUUM ANALYZE \"apiMetrics_transaction\";\n"
            ),
        }
    }
}

/// One case's figures.
struct Figures {
    case: Case,
    agent_query: Duration,
    agent_process: Duration,
    psql_query: Duration,
    psql_process: Duration,
    agent_peak_rss: u64,
}

fn main() {
    if peak_rss::serve_request() {
        return;
    }
    let n_rows: u64 = std::env::var("BENCH_PG_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
    let n_runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5).max(2);
    let n_days: u64 = std::env::var("BENCH_PG_DAYS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    assert!(n_days >= 2 && n_rows >= n_days, "BENCH_PG_DAYS must be at least 2 and BENCH_PG_ROWS at least that");
    let n_in_window = n_rows - rows_before_the_window(n_rows, n_days);

    let server = PrivateServer::start();
    server.psql("postgres", &format!("CREATE DATABASE {DATABASE};"));
    let settings = server.psql(
        DATABASE,
        "SELECT current_setting('server_version'), current_setting('shared_buffers'), \
         current_setting('max_parallel_workers_per_gather'), current_setting('jit'), current_setting('work_mem');",
    );
    let settings: Vec<&str> = settings.trim().split('|').collect();
    println!(
        "PostgreSQL {} on 127.0.0.1:{} (fsync off; shared_buffers {}, the default; max_parallel_workers_per_gather {}; \
         jit {}; work_mem {})",
        settings[0], server.port, settings[1], settings[2], settings[3], settings[4]
    );

    let loaded_at = Instant::now();
    server.psql(DATABASE, &load_script(n_rows, n_days));
    println!(
        "loaded {n_rows} transactions ({n_in_window} in the window; 4 APIs x 6 statuses) with Django's keys and \
         indexes in {:.1?}",
        loaded_at.elapsed()
    );
    let started = Instant::now();
    server.psql(DATABASE, "VACUUM ANALYZE;");
    let size = server.psql(DATABASE, "SELECT pg_size_pretty(pg_total_relation_size('\"apiMetrics_transaction\"'));");
    println!("VACUUM ANALYZE in {:.1?}; the table and its indexes: {}", started.elapsed(), size.trim());

    let directory = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a temporary directory");
    let config = directory.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\ndatabase = \"postgres://postgres@127.0.0.1:{}/{DATABASE}\"\nsslmode = \"disable\"\n\
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
            server.psql(DATABASE, &setup);
            println!("  made in {:.1?}", started.elapsed());
        }
        print_plans(&server);

        // A first run of each, untimed, warms the cache and is checked pair by pair.
        let (agent_counts, _, _) = run_agent(&config);
        let psql_counts = plain_counts(&server);
        check_counts(&agent_counts, &psql_counts, n_in_window, loaded_at);

        let (mut agent_query, mut agent_process, mut psql_query, mut psql_process) =
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
                    let (query, process) = run_psql(&server);
                    psql_query.push(query);
                    psql_process.push(process);
                }
            }
        }
        let agent_peak_rss = peak_rss::peak_rss_of(
            env!("CARGO_BIN_EXE_apimetrics-agent"),
            &["--config", config.to_str().unwrap(), "once", "--dry-run"],
        );
        println!("  agent's tick (query_ms)  {}", milliseconds(&agent_query));
        println!("  agent's process          {}", milliseconds(&agent_process));
        println!("  psql's \\timing           {}", milliseconds(&psql_query));
        println!("  psql's process           {}", milliseconds(&psql_process));
        let figures = Figures {
            case,
            agent_query: median(&agent_query),
            agent_process: median(&agent_process),
            psql_query: median(&psql_query),
            psql_process: median(&psql_process),
            agent_peak_rss,
        };
        println!(
            "  medians: agent {:.3} s (process {:.3} s), psql {:.3} s (process {:.3} s); agent / psql {:.2}x \
             (processes {:.2}x); agent's peak RSS {:.1} MB",
            figures.agent_query.as_secs_f64(),
            figures.agent_process.as_secs_f64(),
            figures.psql_query.as_secs_f64(),
            figures.psql_process.as_secs_f64(),
            ratio(figures.agent_query, figures.psql_query),
            ratio(figures.agent_process, figures.psql_process),
            agent_peak_rss as f64 / 1e6
        );
        all_figures.push(figures);
    }

    println!(
        "\n{n_rows} transactions over {n_days} days, {n_in_window} in the window, PostgreSQL {}; median of {n_runs} alternated runs \
         (agent / psql above 1 means the agent is slower):\n",
        settings[0]
    );
    println!(
        "| | agent's tick (`query_ms`) | psql's query (`\\timing`) | agent / psql | agent's process | psql's process \
         | agent / psql (processes) | agent's peak RSS |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for figures in &all_figures {
        println!(
            "| {} | {:.3} s | {:.3} s | **{:.2}×** | {:.3} s | {:.3} s | {:.2}× | {:.1} MB |",
            figures.case.label(),
            figures.agent_query.as_secs_f64(),
            figures.psql_query.as_secs_f64(),
            ratio(figures.agent_query, figures.psql_query),
            figures.agent_process.as_secs_f64(),
            figures.psql_process.as_secs_f64(),
            ratio(figures.agent_process, figures.psql_process),
            figures.agent_peak_rss as f64 / 1e6
        );
    }
}

/// How many of `n_rows` transactions spread over `n_days` days lie before the 24-hour window.
fn rows_before_the_window(n_rows: u64, n_days: u64) -> u64 {
    n_rows * (n_days - 1) / n_days
}

/// One transaction: Django's tables, the names, the transactions, then Django's foreign keys
/// and indexes. The keys and indexes come last because checking and indexing 10M rows at once
/// is much faster than row by row; the tables end up exactly as the schema file makes them.
/// Transaction `i` (1..=n) has `time_modified` spread evenly over `n_days` days to 24 hours ago
/// for all but one day's share, over the last 24 hours less `WINDOW_MARGIN` for the rest; `id`
/// follows time, as in an app's table.
fn load_script(n_rows: u64, n_days: u64) -> String {
    let statements: Vec<&str> = POSTGRES_SCHEMA
        .lines()
        .filter(|line| !line.starts_with("--") && !line.trim().is_empty() && !["BEGIN;", "COMMIT;"].contains(line))
        .collect();
    let (keys_and_indexes, tables): (Vec<&str>, Vec<&str>) =
        statements.into_iter().partition(|line| line.starts_with("ALTER TABLE") || line.starts_with("CREATE INDEX"));
    assert!(
        tables.len() == 3 && tables.iter().all(|line| line.starts_with("CREATE TABLE")) && keys_and_indexes.len() == 4,
        "schema/django-postgresql.sql changed shape: one statement a line, 3 CREATE TABLE, 2 foreign keys, 2 indexes"
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
    let history = n_days - 1;
    let margin = WINDOW_MARGIN.as_secs();
    // Uneven shares per API and status, so that a pair counted under another's name shows.
    let transactions = format!(
        "INSERT INTO \"apiMetrics_transaction\" (amount, time_created, time_modified, api_id, status_id)\n\
         SELECT (i * 7919 % 1000000) / 100.0, modified - interval '30 seconds', modified, 1 + i % 10 % 4, \
         1 + i / 10 % 15 % 6\n\
         FROM (SELECT i, CASE WHEN i <= {n_before}\n\
             THEN now() - interval '{n_days} days' + (i - 1) * (interval '{history} days' / {n_before})\n\
             ELSE now() - interval '24 hours' + interval '{margin} seconds'\n\
                 + (i - {n_before} - 1) * ((interval '24 hours' - interval '{margin} seconds') / {n_in_window})\n\
             END AS modified\n\
           FROM generate_series(1, {n_rows}::bigint) AS i) AS numbered;"
    );
    format!(
        "BEGIN;\n{}\nINSERT INTO \"apiMetrics_api\" (name, description, params) VALUES {};\n\
         INSERT INTO \"apiMetrics_transactionstatus\" (name, description) VALUES {};\n{transactions}\n{}\nCOMMIT;\n",
        tables.join("\n"),
        apis.join(", "),
        statuses.join(", "),
        keys_and_indexes.join("\n")
    )
}

/// Prints the plans of the agent's query (with literal bounds, as the server plans the agent's
/// unnamed statement for its parameters) and of the plain one.
fn print_plans(server: &PrivateServer) {
    let now = Utc::now();
    let format = "%Y-%m-%d %H:%M:%S%.6f+00";
    let start = (now - chrono::Duration::hours(24)).format(format);
    let future_from = (now + chrono::Duration::minutes(1)).format(format);
    let agent_query = format!(
        "SELECT api_id::bigint, status_id::bigint, count(*), count(*) FILTER (WHERE time_modified > '{future_from}') \
         FROM \"apiMetrics_transaction\" WHERE time_modified >= '{start}' GROUP BY api_id, status_id"
    );
    for (whose, query) in [("agent's", agent_query.as_str()), ("plain", PLAIN_QUERY)] {
        println!("  {whose} query's plan:");
        for line in server.psql(DATABASE, &format!("EXPLAIN {query};")).lines() {
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

/// Runs the plain query as the brief's command does, output thrown away; returns psql's
/// `\timing` of the query and the process's wall time.
fn run_psql(server: &PrivateServer) -> (Duration, Duration) {
    let started = Instant::now();
    let output = Command::new(server.bin.join("psql"))
        .args(["-X", "-q", "-h", "127.0.0.1", "-p", &server.port.to_string(), "-U", "postgres", DATABASE])
        .args(["-c", "\\timing on", "-c", PLAIN_QUERY, "-o", "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("running psql");
    let process = started.elapsed();
    assert!(output.status.success(), "psql failed: {}", String::from_utf8_lossy(&output.stderr));
    // `\timing` writes "Time: 123.456 ms" (and " (00:01.235)" past a second) to stdout, not to -o.
    let stdout = String::from_utf8(output.stdout).unwrap();
    let milliseconds: f64 = stdout
        .lines()
        .find_map(|line| line.strip_prefix("Time: ")?.split(" ms").next()?.parse().ok())
        .unwrap_or_else(|| panic!("no \\timing line in psql's output: {stdout:?}"));
    (Duration::from_secs_f64(milliseconds / 1000.0), process)
}

/// The plain query's counts by (API, status) name.
fn plain_counts(server: &PrivateServer) -> BTreeMap<(String, String), u64> {
    server
        .psql(DATABASE, &format!("{PLAIN_QUERY};"))
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('|').collect();
            assert_eq!(fields.len(), 3, "psql printed {line:?}");
            ((fields[0].to_owned(), fields[1].to_owned()), fields[2].parse().unwrap())
        })
        .collect()
}

/// Fails loudly unless the agent counted exactly what psql did, every pair, and the window holds
/// the rows loaded into it.
fn check_counts(
    agent: &BTreeMap<(String, String), u64>,
    psql: &BTreeMap<(String, String), u64>,
    n_in_window: u64,
    loaded_at: Instant,
) {
    let (agent_total, psql_total) = (agent.values().sum::<u64>(), psql.values().sum::<u64>());
    let agent_nonzero: BTreeMap<_, _> = agent.iter().filter(|(_, count)| **count > 0).collect();
    let psql_nonzero: BTreeMap<_, _> = psql.iter().filter(|(_, count)| **count > 0).collect();
    assert!(
        agent_nonzero == psql_nonzero && agent_total == n_in_window,
        "the agent's counts differ from psql's ({agent_total} against {psql_total} rows, {n_in_window} loaded in the \
         window; loaded {:.0?} ago, the window's rows stay put for {WINDOW_MARGIN:?}):\nagent {agent:?}\npsql {psql:?}",
        loaded_at.elapsed()
    );
    println!("  counts: the agent's equal psql's in all {} pairs, {agent_total} rows", psql_nonzero.len());
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

/// A PostgreSQL server of the benchmark's own, in a folder under /tmp (which the postgres user
/// can reach) handed to that user. Stopped, and its folder removed, when dropped, also on a panic.
struct PrivateServer {
    /// The folder of Debian's binaries: initdb, pg_ctl, pg_isready, psql.
    bin: PathBuf,
    port: u16,
    folder: tempfile::TempDir,
}

impl PrivateServer {
    /// Makes and starts a server on a free loopback port, its superuser `postgres` trusted over
    /// TCP; waits until it accepts connections.
    fn start() -> PrivateServer {
        let bin = newest_postgres_bin();
        let folder = tempfile::Builder::new().prefix("apimetrics-bench-postgres.").tempdir_in("/tmp").unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let socket = folder.path().join("socket");
        std::fs::create_dir(&socket).unwrap();
        let chowned = Command::new("chown").args(["-R", "postgres:postgres"]).arg(folder.path()).output().unwrap();
        assert!(chowned.status.success(), "chown: {}", String::from_utf8_lossy(&chowned.stderr));
        let server = PrivateServer { bin, port, folder };

        let initdb = server
            .as_postgres("initdb")
            .arg("--pgdata")
            .arg(server.data())
            .args(["--username=postgres", "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8"])
            .args(["--no-sync", "--no-instructions"])
            .output()
            .unwrap();
        assert!(initdb.status.success(), "initdb: {}", String::from_utf8_lossy(&initdb.stderr));
        std::fs::write(
            server.data().join("pg_hba.conf"),
            "local all postgres trust\nhost all postgres 127.0.0.1/32 trust\n",
        )
        .unwrap();
        // Nothing here outlives the run: no waiting for the disk, and no WAL for the rows loaded
        // in the transaction that creates their table (wal_level minimal). None of it changes how
        // a read runs; shared_buffers stays at its default (128MB).
        let settings = format!(
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             wal_level = minimal\nmax_wal_senders = 0\nmax_wal_size = '4GB'\n",
            server.port,
            socket.display()
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(server.data().join("postgresql.conf"))
            .unwrap()
            .write_all(settings.as_bytes())
            .unwrap();

        let log = format!("--log={}", server.folder.path().join("postgres.log").display());
        let started = server.pg_ctl(&[&log, "--no-wait", "start"]);
        assert!(started.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&started.stderr));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !server.is_ready() {
            let log = std::fs::read_to_string(server.folder.path().join("postgres.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "PostgreSQL did not accept connections within 60 s; its log:\n{log}");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    fn data(&self) -> PathBuf {
        self.folder.path().join("data")
    }

    /// `program` from the server's binaries, run as the postgres user from the server's folder
    /// (that user may not be allowed into the checkout).
    fn as_postgres(&self, program: &str) -> Command {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(self.bin.join(program)).current_dir(self.folder.path());
        command.stdin(Stdio::null());
        command
    }

    fn pg_ctl(&self, arguments: &[&str]) -> Output {
        self.as_postgres("pg_ctl").arg("--pgdata").arg(self.data()).args(arguments).output().unwrap()
    }

    fn is_ready(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args(["--quiet", "--host", "127.0.0.1", "--port", &self.port.to_string(), "--username", "postgres"])
            .args(["--timeout", "5"])
            .status()
            .unwrap()
            .success()
    }

    /// Runs `sql` in `database` as the superuser, stopping at the first error; returns stdout,
    /// one line per row, fields separated by `|`. Panics if it fails.
    fn psql(&self, database: &str, sql: &str) -> String {
        let mut child = Command::new(self.bin.join("psql"))
            .args(["--no-psqlrc", "--quiet", "--no-align", "--tuples-only", "--set", "ON_ERROR_STOP=1"])
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string(), "--username", "postgres"])
            .args(["--dbname", database, "--file", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running psql");
        // Written from a thread so that a long script and a long answer cannot block each other.
        let mut input = child.stdin.take().unwrap();
        let script = sql.to_owned();
        let writer = std::thread::spawn(move || input.write_all(script.as_bytes()));
        let output = child.wait_with_output().unwrap();
        let _ = writer.join().unwrap();
        assert!(output.status.success(), "psql in {database} failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        if self.data().join("postmaster.pid").exists() {
            let stopped = self.pg_ctl(&["--mode=fast", "--wait", "--timeout=30", "stop"]);
            if !stopped.status.success() {
                let _ = self.pg_ctl(&["--mode=immediate", "--wait", "--timeout=30", "stop"]);
            }
        }
    }
}

/// The newest of Debian's /usr/lib/postgresql/<version>/bin folders (off the PATH).
fn newest_postgres_bin() -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql").expect("Debian's postgresql under /usr/lib/postgresql");
    let newest = versions
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            entry.path().join("bin/postgres").exists().then(|| (version, entry.path().join("bin")))
        })
        .max();
    newest.expect("no /usr/lib/postgresql/<version>/bin/postgres: apt-get install postgresql").1
}
