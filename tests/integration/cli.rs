//! The command line: exit codes, what goes to stdout and stderr, and the messages on bad input.

use std::path::{Path, PathBuf};

use crate::peers::{parse_exposition, value_of};
use crate::support::*;

#[test]
fn dry_run_prints_exactly_the_exposition_and_nothing_else_on_stdout() {
    let site = Site::new();
    let express = site.add_api("Mpesa Express");
    let b2c = site.add_api("Mpesa B2C");
    let pending = site.add_status("Pending");
    let failed = site.add_status("Failed");
    site.add_transactions(3, express, pending, &hours_ago(1.0));
    site.add_transactions(2, express, pending, &hours_ago(23.5));
    site.add_transactions(4, express, failed, &hours_ago(24.5));
    site.add_transactions(1, b2c, failed, &hours_ago(47.0));
    site.add_transactions(6, b2c, failed, &hours_ago(0.01));
    let config = site.config("15s", "[labels]\nsite = \"nairobi-1\"\n");

    let before = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    let output = run_agent(&config, &["once", "--dry-run"]);
    let after = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = stdout(&output);
    let (aggregate, health) = printed.split_at(printed.find("# HELP apimetrics_agent_").unwrap());
    assert_eq!(
        aggregate,
        "# HELP api_transactions API Transactions\n\
         # TYPE api_transactions gauge\n\
         api_transactions{api=\"Mpesa B2C\",status=\"Failed\",site=\"nairobi-1\"} 6\n\
         api_transactions{api=\"Mpesa B2C\",status=\"Pending\",site=\"nairobi-1\"} 0\n\
         api_transactions{api=\"Mpesa Express\",status=\"Failed\",site=\"nairobi-1\"} 0\n\
         api_transactions{api=\"Mpesa Express\",status=\"Pending\",site=\"nairobi-1\"} 5\n"
    );
    // Then what a central side needs to judge it, as a push carries it, under the same labels.
    let health = parse_exposition(health);
    let site = ("site", "nairobi-1");
    let stamp = value_of(&health, "apimetrics_agent_snapshot_timestamp_seconds", &[site]).unwrap();
    assert!((before..=after).contains(&stamp), "{stamp} not in {before}..={after}");
    assert_eq!(value_of(&health, "apimetrics_agent_rows_in_window", &[site]), Some(11.0));
    assert_eq!(value_of(&health, "apimetrics_agent_rows_skipped", &[("reason", "bad_timestamp"), site]), Some(0.0));
    assert_eq!(value_of(&health, "apimetrics_agent_rows_skipped", &[("reason", "orphaned"), site]), Some(0.0));
    assert!(stderr(&output).contains("tick done"), "{}", stderr(&output));
}

#[test]
fn without_zero_fill_metric_name_and_help_come_from_the_config() {
    let site = Site::new();
    let express = site.add_api("Mpesa Express");
    site.add_api("Mpesa B2C");
    let pending = site.add_status("Pending");
    site.add_status("Failed");
    site.add_transactions(2, express, pending, &hours_ago(2.0));
    let config = site.config("15s", "[metric]\nname = \"payments\"\nhelp = \"Payments by API\"\nzero_fill = false\n");
    let output = run_agent(&config, &["once", "--dry-run"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).starts_with(
            "# HELP payments Payments by API\n# TYPE payments gauge\npayments{api=\"Mpesa Express\",status=\"Pending\"} 2\n# "
        ),
        "{}",
        stdout(&output)
    );
}

#[test]
fn rows_with_unparsable_timestamps_are_skipped_counted_and_reported() {
    let site = Site::new();
    let api = site.add_api("Mpesa Express");
    let status = site.add_status("Pending");
    site.add_transactions(2, api, status, &hours_ago(1.0));
    site.add_transactions(1, api, status, "garbage");
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    site.add_transactions(1, api, status, &format!("{today}T00:00:00"));
    let config = site.config("15s", "");
    let output = run_agent(&config, &["once", "--dry-run"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("api_transactions{api=\"Mpesa Express\",status=\"Pending\"} 2\n"));
    let log = stderr(&output);
    assert!(log.contains("skipped rows whose time_modified is not a Django timestamp"), "{log}");
    assert!(log.contains("n_rows=2"), "{log}");
}

#[test]
fn config_errors_exit_2_naming_key_and_line() {
    let site = Site::new();
    let config = site.write_config(
        "bad.toml",
        "[source]\ndatabase = \"app.sqlite3\"\n[schedule]\ninterval = \"15s\"\ncron = \"* * * * * *\"\n\
         [labels]\nstatus = \"x\"\n",
    );
    let output = run_agent(&config, &["once"]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains("bad.toml (2 problems)"), "{message}");
    assert!(
        message.contains("line 5: schedule.cron: set exactly one of schedule.interval and schedule.cron"),
        "{message}"
    );
    assert!(message.contains("line 7: labels.status: collides with a label of the aggregate"), "{message}");

    let unknown = site.write_config("unknown.toml", "[source]\ndatabase = \"app.sqlite3\"\ntable = \"x\"\n");
    let output = run_agent(&unknown, &["check"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("line 3: source.table: unknown key"), "{}", stderr(&output));

    let output = run_agent(&site.directory.path().join("absent.toml"), &["run"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("absent.toml: cannot read it"), "{}", stderr(&output));
}

/// Issue #11: one run names every mistake, each with its line, whatever kind it is.
#[test]
fn check_names_every_mistake_at_once_and_never_shows_a_secret() {
    let site = Site::new();
    let config = site.write_config(
        "config.toml",
        "[source]\ndatabase = \"app.sqlite3\"\nwindow = \"100000000000h\"\n\
         [schedule]\nintervall = \"15s\"\n\
         [scrape]\nlisten = \"127.0.0.1:9184\"\nenable_reload = \"yes\"\n\
         [[pushgateway]]\nurl = \"http://gw:9091\"\nbasic_auth = { username = \"agent\", password = \"p\" }\n\
         bearer_token = \"t\"\n\
         [[remote_write]]\nurl = \"http://r/write\"\nbasic_auth = { username = \"agent\", password = 4711 }\n\
         bearer_token = [\"hunter2\"]\n",
    );
    let message = assert_config_refused(
        &config,
        &[
            "config.toml (6 problems):\n",
            "\n  line 3: source.window: \"100000000000h\" is out of range: from 1s to 366d (default 24h)\n",
            "\n  line 5: schedule.intervall: unknown key: did you mean `interval`?",
            "\n  line 8: scrape.enable_reload: invalid type: string \"yes\", expected a boolean\n",
            "\n  line 11: pushgateway[0].basic_auth: set basic_auth or a bearer token, not both\n",
            "\n  line 15: remote_write[0].basic_auth.password: wrong type: integer (not shown: it may be a secret), \
             expected a string\n",
            "\n  line 16: remote_write[0].bearer_token: wrong type: array (not shown: it may be a secret), expected a \
             string",
        ],
    );
    assert!(!message.contains("4711") && !message.contains("hunter2"), "{message}");
    // `run` (and a reload) reads the file as `check` does: the same problems, and nothing started.
    let output = run_agent(&config, &["run"]);
    assert_eq!(output.status.code(), Some(2));
    let problems = message[message.find("config.toml (6 problems)").unwrap()..].trim_end();
    assert!(stderr(&output).contains(problems), "{}", stderr(&output));
}

#[test]
fn a_missing_database_exits_2_naming_the_key_and_path() {
    let site = Site::new();
    let config =
        site.write_config("config.toml", "[source]\ndatabase = \"gone.sqlite3\"\n[schedule]\ninterval = \"1s\"\n");
    let output = run_agent(&config, &["once", "--dry-run"]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains("line 2: source.database: no such file"), "{message}");
    assert!(message.contains("gone.sqlite3"), "{message}");
    assert_eq!(stdout(&output), "");
}

#[test]
fn a_file_that_is_not_sqlite_or_lacks_the_tables_fails_with_what_is_wrong() {
    let site = Site::new();
    std::fs::write(
        site.directory.path().join("notes.sqlite3"),
        "these are not the tables you are looking for\n".repeat(100),
    )
    .unwrap();
    let config =
        site.write_config("config.toml", "[source]\ndatabase = \"notes.sqlite3\"\n[schedule]\ninterval = \"1s\"\n");
    let output = run_agent(&config, &["once"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("notes.sqlite3 is not a SQLite database"), "{}", stderr(&output));

    let empty = rusqlite::Connection::open(site.directory.path().join("other.sqlite3")).unwrap();
    empty.execute_batch("CREATE TABLE apiMetrics_api (id integer PRIMARY KEY, name text)").unwrap();
    drop(empty);
    let config =
        site.write_config("config.toml", "[source]\ndatabase = \"other.sqlite3\"\n[schedule]\ninterval = \"1s\"\n");
    let output = run_agent(&config, &["once"]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("table \"apiMetrics_transactionstatus\" is missing"), "{message}");
    assert!(message.contains("table \"apiMetrics_transaction\" is missing"), "{message}");
    assert!(message.contains("schema/django.sql"), "{message}");
    assert!(message.contains("`python manage.py migrate apiMetrics`"), "{message}");
}

#[test]
fn a_database_locked_past_the_busy_timeout_fails_the_tick_and_says_so() {
    let site = Site::new();
    let api = site.add_api("Mpesa Express");
    let status = site.add_status("Pending");
    site.add_transactions(1, api, status, &hours_ago(1.0));
    let writer = site.connect();
    writer.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let config = site.config_with_source("busy_timeout = \"300ms\"\n", "1s", "");
    let output = run_agent(&config, &["once", "--dry-run"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("the database stayed locked by a writer for longer than source.busy_timeout (300ms)"),
        "{}",
        stderr(&output)
    );
    assert_eq!(stdout(&output), "");
    writer.execute_batch("COMMIT").unwrap();
}

#[test]
fn the_agent_never_writes_to_the_database() {
    let site = Site::new();
    let api = site.add_api("Mpesa Express");
    let status = site.add_status("Pending");
    site.add_transactions(5, api, status, &hours_ago(1.0));
    let before = std::fs::read(site.database()).unwrap();
    let modified = std::fs::metadata(site.database()).unwrap().modified().unwrap();
    let config = site.config("1s", "");
    for command in [&["once"][..], &["check"], &["once", "--dry-run"]] {
        let output = run_agent(&config, command);
        assert!(output.status.success(), "{command:?}: {}", stderr(&output));
    }
    assert_eq!(std::fs::read(site.database()).unwrap(), before);
    assert_eq!(std::fs::metadata(site.database()).unwrap().modified().unwrap(), modified);
    let leftovers: Vec<_> = std::fs::read_dir(site.directory.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("app.sqlite3-"))
        .collect();
    assert!(leftovers.is_empty(), "the agent left {leftovers:?} beside the database");
}

#[test]
fn check_shows_the_plan_and_warns_without_an_index_on_time_modified() {
    let site = Site::new();
    let config = site.config("1s", "");
    let output = run_agent(&config, &["check"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report = stdout(&output);
    assert!(report.contains("by id, the whole table"), "{report}");
    assert!(
        report.contains("SEARCH apiMetrics_transaction USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)"),
        "{report}"
    );
    assert!(report.contains("warning: no index on apiMetrics_transaction.time_modified"), "{report}");

    site.connect().execute_batch(include_str!("../../schema/index.sql")).unwrap();
    let output = run_agent(&config, &["check"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report = stdout(&output);
    assert!(report.contains("by time_modified, through the index"), "{report}");
    assert!(report.contains("USING COVERING INDEX apimetrics_txn_window (time_modified>?)"), "{report}");
    assert!(report.contains("index apimetrics_txn_window covers the window query"), "{report}");
    // The only warning left, if any, is that a test's database in /tmp is out of the unit's sight.
    assert!(!report.lines().any(|line| line.starts_with("warning") && line.contains("index")), "{report}");
}

#[test]
fn populate_creates_a_django_database_and_refuses_to_overwrite_one() {
    let site = Site::new();
    let path = site.directory.path().join("sample.sqlite3");
    let populate = |extra: &[&str]| {
        let mut arguments = vec!["populate", path.to_str().unwrap(), "--rows", "5000", "--seed", "3"];
        arguments.extend_from_slice(extra);
        run_agent(&site.directory.path().join("unused.toml"), &arguments)
    };
    let output = populate(&[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let connection = rusqlite::Connection::open(&path).unwrap();
    let count = |sql: &str| connection.query_row(sql, [], |row| row.get::<_, i64>(0)).unwrap();
    assert_eq!(count("SELECT count(*) FROM apiMetrics_transaction"), 5000);
    assert_eq!(count("SELECT count(*) FROM apiMetrics_api"), 4);
    assert_eq!(count("SELECT count(*) FROM apiMetrics_transactionstatus"), 6);
    let in_window =
        count(&format!("SELECT count(*) FROM apiMetrics_transaction WHERE time_modified >= '{}'", hours_ago(24.0)));
    assert!((2000..3000).contains(&in_window), "about half the rows lie in the last 24 hours, not {in_window}");
    let schema: Vec<String> = connection
        .prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY rowid")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for statement in &schema {
        let created = statement.replacen("CREATE TABLE ", "CREATE TABLE IF NOT EXISTS ", 1);
        assert!(SCHEMA.contains(&created), "{created} is not in schema/django.sql");
    }
    drop(connection);

    let output = populate(&[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("refusing to touch"), "{}", stderr(&output));
    assert!(stderr(&output).contains("--force"), "{}", stderr(&output));
    let output = populate(&["--force"]);
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn a_wal_database_whose_shm_file_the_agent_may_not_create_gets_a_message_saying_so() {
    use std::os::unix::fs::PermissionsExt;
    let site = Site::new();
    let api = site.add_api("Mpesa Express");
    let status = site.add_status("Pending");
    site.add_transactions(1, api, status, &hours_ago(1.0));
    site.connect().pragma_update(None, "journal_mode", "wal").unwrap();
    let config = site.config("1s", "");
    // Readable but not writable for "nobody", like a hardened service user's view of the app.
    for path in [site.directory.path(), &site.database(), &config] {
        let mode = if path.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let output = run_agent_as_nobody(&config, &["once"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("is in WAL mode and its shared-memory file"), "{}", stderr(&output));
    assert!(!site.directory.path().join("app.sqlite3-shm").exists());
}

/// Removes the credential store file it was given, and the store folder if the test made it.
struct CredentialStoreFile {
    file: PathBuf,
    made_the_folder: bool,
}

impl Drop for CredentialStoreFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
        if self.made_the_folder {
            let _ = std::fs::remove_dir(self.file.parent().unwrap());
        }
    }
}

#[test]
fn outside_the_service_a_credential_is_read_where_load_credential_finds_it() {
    let site = site_with_transactions();
    let name = format!("apimetrics-test-{}", std::process::id());
    let password = format!("{name}-password");
    let credential = format!("/run/credentials/{name}.service/{password}");
    let config = site.config(
        "1s",
        &format!(
            "[[pushgateway]]\nurl = \"http://127.0.0.1:9/\"\n\
             basic_auth = {{ username = \"site\", password_file = \"{credential}\" }}\n"
        ),
    );
    let check = |in_service: bool| {
        let mut command = agent(&config);
        command.arg("check").env_remove("CREDENTIALS_DIRECTORY").stdin(std::process::Stdio::null());
        if in_service {
            command.env("CREDENTIALS_DIRECTORY", format!("/run/credentials/{name}.service"));
        }
        command.output().unwrap()
    };

    let output = check(false);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    let store_file = Path::new("/etc/credstore").join(&password);
    let expected = format!(
        "pushgateway[0].basic_auth.password_file: cannot read {credential}: No such file or directory (os error 2): \
         /run/credentials/{name}.service/ exists only inside the running service, where systemd puts what \
         LoadCredential= hands it; outside it the agent reads what LoadCredential={password} would hand it, and \
         there is no {}, no /run/credstore/{password}, no /usr/local/lib/credstore/{password}, no \
         /usr/lib/credstore/{password}",
        store_file.display()
    );
    assert!(message.contains(&expected), "{message}");

    let made_the_folder = std::fs::create_dir("/etc/credstore").is_ok();
    let _store = CredentialStoreFile { file: store_file.clone(), made_the_folder };
    std::fs::write(&store_file, "a-password-long-enough-to-redact\n").unwrap();
    std::fs::set_permissions(&store_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let output = check(false);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!stderr(&output).contains(&password), "{}", stderr(&output));

    // A user who may not read the store is told whose it is.
    std::fs::set_permissions(site.directory.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for file in [&config, &site.database()] {
        std::fs::set_permissions(file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    }
    let output = run_agent_as_nobody(&config, &["check"]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    let expected = format!(
        "Permission denied (os error 13) (read from {}, which LoadCredential={password} hands the service; only \
         root may read a credential store",
        store_file.display()
    );
    assert!(message.contains(&expected), "{message}");

    // Inside the service only what systemd put in its folder counts.
    let output = check(true);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(
        message.contains(&format!("cannot read {credential}: No such file or directory (os error 2)")),
        "{message}"
    );
    assert!(message.contains(&format!("systemd handed this service no credential {password}")), "{message}");
    assert!(!message.contains("exists only inside"), "{message}");
}

#[test]
fn secrets_written_in_a_config_everyone_may_read_are_warned_about_by_key() {
    let site = site_with_transactions();
    let config = site.config(
        "1s",
        "[[pushgateway]]\nurl = \"http://127.0.0.1:9/\"\n\
         basic_auth = { username = \"site\", password = \"an-inline-password-long-enough\" }\n\
         [[remote_write]]\nurl = \"http://127.0.0.1:9/api/v1/write\"\nbearer_token_file = \"token\"\n",
    );
    std::fs::write(site.directory.path().join("token"), "a-token-in-a-file-of-its-own").unwrap();
    let token_mode = std::os::unix::fs::PermissionsExt::from_mode(0o600);
    std::fs::set_permissions(site.directory.path().join("token"), token_mode).unwrap();
    let warnings = |mode: u32| {
        std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
        let output = run_agent(&config, &["check"]);
        assert!(output.status.success(), "{}", stderr(&output));
        stderr(&output).lines().filter(|line| line.contains("WARN")).map(str::to_owned).collect::<Vec<_>>()
    };
    let said = warnings(0o644);
    assert_eq!(said.len(), 1, "{said:?}");
    let expected = format!(
        "pushgateway[0].basic_auth.password: secret written in {}, which every user on this machine may read \
         (mode 0644): move pushgateway[0].basic_auth.password to pushgateway[0].basic_auth.password_file, naming a \
         file only the agent's user may read",
        config.display()
    );
    assert!(said[0].contains(&expected), "{said:?}");
    assert!(!said[0].contains("an-inline-password") && !said[0].contains("remote_write"), "{said:?}");
    assert_eq!(warnings(0o640), Vec::<String>::new());
}
