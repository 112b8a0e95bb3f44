//! Against MariaDB: databases Django itself made and filled on the server tests/run starts, whose
//! ORM counts the agent must print exactly, four-byte names intact in every outlet; the failures
//! an operator meets (a wrong password, no server, a user without SELECT, TLS with the wrong CA)
//! told apart with the server's address and never the password; a read that outlives
//! `source.timeout` or waits on a migration's lock; and a server restarted under a running agent.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

use crate::mariadb_support::*;
use crate::peers::{instant_query, parse_exposition, pushgateway, victoria_metrics};
use crate::support::*;

fn pair(api: &str, status: &str) -> (String, String) {
    (api.to_owned(), status.to_owned())
}

/// A database with Django's tables (from `schema/django-mysql.sql`), two APIs (one named with
/// four-byte characters) and two statuses, and 3 + 2 transactions in the window, 9 outside it.
fn small_database(database: &TestDatabase) {
    database.mariadb(MARIADB_SCHEMA);
    database.mariadb(&format!(
        "INSERT INTO `apiMetrics_api` (name, description, params) VALUES ('Mpesa Express', '', '{{}}'), ('{FOUR_BYTE_API}', '', '{{}}');
         INSERT INTO `apiMetrics_transactionstatus` (name, description) VALUES ('Pending', ''), ('Failed', '');
         INSERT INTO `apiMetrics_transaction` (amount, time_created, time_modified, api_id, status_id)
           SELECT 1, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6) - INTERVAL 1 HOUR, 1, 1 FROM seq_1_to_3
           UNION ALL SELECT 1, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6) - INTERVAL 5 HOUR, 2, 2 FROM seq_1_to_2
           UNION ALL SELECT 1, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6) - INTERVAL 30 HOUR, 2, 2 FROM seq_1_to_9;"
    ));
}

/// What `small_database` holds in the window.
fn small_counts() -> BTreeMap<(String, String), u64> {
    BTreeMap::from([
        (pair("Mpesa Express", "Pending"), 3),
        (pair("Mpesa Express", "Failed"), 0),
        (pair(FOUR_BYTE_API, "Pending"), 0),
        (pair(FOUR_BYTE_API, "Failed"), 2),
    ])
}

#[test]
fn once_prints_exactly_what_djangos_orm_counts_with_and_without_use_tz() {
    for (use_tz, zone) in [(true, "UTC"), (false, "Africa/Nairobi")] {
        let database = TestDatabase::create("counts");
        let (_, django_counts) = django_fill(&database, use_tz, zone);
        assert!(django_counts.len() > 10 && django_counts.values().sum::<u64>() > 1000, "{django_counts:?}");
        assert!(django_counts.keys().any(|(api, _)| api == FOUR_BYTE_API), "{django_counts:?}");
        let user = database.create_reader("agent", READER_PASSWORD, true);
        let directory = tempfile::tempdir().unwrap();
        let timezone = if use_tz { String::new() } else { format!("timezone = \"{zone}\"\n") };
        let config_of = |zero_fill: bool| {
            server_config(
                directory.path(),
                &database.url(&user, None),
                &timezone,
                &format!("[metric]\nzero_fill = {zero_fill}\n"),
            )
        };
        let output = run_agent(&config_of(false), &["once", "--dry-run"]);
        assert!(output.status.success(), "USE_TZ = {use_tz}: {}", stderr(&output));
        assert_eq!(counts_in(&stdout(&output)), django_counts, "USE_TZ = {use_tz}");

        let output = run_agent(&config_of(true), &["once", "--dry-run"]);
        assert!(output.status.success(), "{}", stderr(&output));
        let filled = counts_in(&stdout(&output));
        // Five distinct API names × four distinct status names, the ORM's counts where it has any.
        assert_eq!(filled.len(), 20, "{filled:?}");
        for (pair, count) in &filled {
            assert_eq!(*count, django_counts.get(pair).copied().unwrap_or(0), "{pair:?}");
        }

        let check = run_agent(&config_of(true), &["check"]);
        assert!(check.status.success(), "{}", stderr(&check));
        let report = stdout(&check);
        let bound = if use_tz {
            "time_modified is datetime: the window starts at UTC's wall-clock time 24 h ago, as Django binds it with \
             USE_TZ = True"
                .to_owned()
        } else {
            format!(
                "time_modified is datetime: the window starts at the wall-clock time 24 h ago in {zone} \
                 (source.timezone), as Django binds it with USE_TZ = False"
            )
        };
        assert!(report.contains(&bound), "{report}");
        assert!(report.contains(&format!("database {} (10.", database.url(&user, None))), "{report}");
        assert!(report.contains("-MariaDB"), "{report}");
        assert!(report.contains("warning: no index on apiMetrics_transaction.time_modified"), "{report}");
    }
}

#[test]
fn four_byte_names_arrive_intact_at_the_pushgateway_and_victoria_metrics() {
    let database = TestDatabase::create("outlets");
    small_database(&database);
    let user = database.create_reader("agent", READER_PASSWORD, true);
    let directory = tempfile::tempdir().unwrap();
    let gateway = pushgateway(None);
    let victoria = victoria_metrics(directory.path());
    let outlets = format!(
        "[[pushgateway]]\nurl = \"http://127.0.0.1:{}\"\njob = \"apimetrics\"\n\
         [[remote_write]]\nurl = \"http://127.0.0.1:{}/api/v1/write\"\n",
        gateway.port, victoria.port
    );
    let config_path = server_config(directory.path(), &database.url(&user, None), "", &outlets);
    let output = run_agent(&config_path, &["once"]);
    assert!(output.status.success(), "{}", stderr(&output));

    let (status, pushed) = http_get(&format!("http://127.0.0.1:{}/metrics", gateway.port)).unwrap();
    assert_eq!(status, 200);
    assert_eq!(counts_in(&pushed), small_counts(), "{pushed}");

    let received = wait_for("VictoriaMetrics to make the samples searchable", Duration::from_secs(30), || {
        let response = instant_query(victoria.port, "api_transactions");
        let results = response["data"]["result"].as_array()?.clone();
        (results.len() == 4).then_some(results)
    });
    let counts: BTreeMap<(String, String), u64> = received
        .iter()
        .map(|result| {
            let labels = &result["metric"];
            let value = result["value"][1].as_str().unwrap().parse().unwrap();
            (pair(labels["api"].as_str().unwrap(), labels["status"].as_str().unwrap()), value)
        })
        .collect();
    assert_eq!(counts, small_counts());
}

#[test]
fn a_wrong_password_no_server_and_a_user_without_select_each_say_what_and_where() {
    let database = TestDatabase::create("failures");
    small_database(&database);
    let server = mariadb();
    let directory = tempfile::tempdir().unwrap();

    // A wrong password: the server's reason and address, never the password.
    let user = database.create_reader("agent", "another-password-5150", true);
    let config_path = server_config(directory.path(), &database.url(&user, None), "", "");
    for command in [&["once", "--dry-run"][..], &["check"]] {
        let output = run_agent(&config_path, command);
        let said = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{said}");
        assert!(said.contains(&format!("cannot connect to mysql://{user}@{}/", server.address())), "{said}");
        assert!(said.contains("Access denied for user") && said.contains("(error 1045"), "{said}");
        assert!(said.contains("check the user in source.database and the password"), "{said}");
        assert!(!said.contains(READER_PASSWORD) && !said.contains("another-password"), "{said}");
    }

    // No server at the address.
    let nowhere = format!("mysql://{user}@127.0.0.1:{}/{}", free_port(), database.name());
    let output = run_agent(&server_config(directory.path(), &nowhere, "", ""), &["once", "--dry-run"]);
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(said.contains(&format!("cannot connect to {nowhere}: Connection refused")), "{said}");
    assert!(said.contains("is the server running and listening on that address"), "{said}");

    // A user with no grant at all: the server refuses it the database.
    let nobody = database.create_reader("nosel", READER_PASSWORD, false);
    let output =
        run_agent(&server_config(directory.path(), &database.url(&nobody, None), "", ""), &["once", "--dry-run"]);
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(said.contains("(error 1044") && said.contains("the user needs SELECT on the app's three tables"), "{said}");

    // A user that may read one table of three: told which two, and the GRANT.
    let partial = database.create_reader("partial", READER_PASSWORD, false);
    database.mariadb(&format!("GRANT SELECT ON `{}`.`apiMetrics_api` TO '{partial}'@'127.0.0.1';", database.name()));
    let output = run_agent(&server_config(directory.path(), &database.url(&partial, None), "", ""), &["check"]);
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "user \"{partial}\" may not read table(s) `apiMetrics_transactionstatus`, `apiMetrics_transaction`: as \
             an administrator, run GRANT SELECT ON `{}`.* TO '{partial}'@'127.0.0.1'",
            database.name()
        )),
        "{said}"
    );

    // A database that is not the app's.
    let empty = TestDatabase::create("empty");
    let stranger = empty.create_reader("agent", READER_PASSWORD, true);
    let output = run_agent(&server_config(directory.path(), &empty.url(&stranger, None), "", ""), &["check"]);
    let said = stderr(&output);
    assert!(said.contains("table \"apiMetrics_api\" is missing") && said.contains("migrate"), "{said}");
}

#[test]
fn tls_verify_full_connects_with_the_servers_ca_and_refuses_another() {
    let database = TestDatabase::create("tls");
    small_database(&database);
    let user = database.create_reader("agent", READER_PASSWORD, true);
    let directory = tempfile::tempdir().unwrap();
    let url = database.url(&user, None);
    let server = mariadb();

    let with_ca = format!("sslmode = \"verify-full\"\nsslrootcert = \"{}\"\n", server.ca_file.display());
    let output = run_agent(&server_config(directory.path(), &url, &with_ca, ""), &["once", "--dry-run"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(counts_in(&stdout(&output)), small_counts());
    // A CA of the test's own, which signed nothing the server holds.
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let other_ca = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
    let other_file = directory.path().join("other-ca.pem");
    std::fs::write(&other_file, other_ca.pem()).unwrap();
    let with_other = format!("sslmode = \"verify-full\"\nsslrootcert = \"{}\"\n", other_file.display());
    let output = run_agent(&server_config(directory.path(), &url, &with_other, ""), &["once", "--dry-run"]);
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(said.contains(&format!("cannot connect to {url}")), "{said}");
    assert!(said.contains("not signed by a CA in source.sslrootcert"), "{said}");
    assert!(!said.contains(READER_PASSWORD), "{said}");

    // "require" encrypts without checking, and the URL may say it; so may "disable".
    for mode in ["require", "disable"] {
        let output = run_agent(
            &server_config(directory.path(), &format!("{url}?sslmode={mode}"), "", ""),
            &["once", "--dry-run"],
        );
        assert!(output.status.success(), "{mode}: {}", stderr(&output));
        assert_eq!(counts_in(&stdout(&output)), small_counts(), "{mode}");
    }
}

/// Processes of `user` on the server still running a statement (the agent's own sleeping
/// connection is not one).
fn running_statements(server: &MariadbServer, user: &str) -> String {
    server.mariadb(&format!(
        "SELECT id, command, state, info FROM information_schema.PROCESSLIST WHERE user = '{user}' \
         AND command NOT IN ('Sleep', 'Killed');"
    ))
}

#[test]
fn a_read_past_source_timeout_is_stopped_on_the_server_and_a_migrations_lock_is_not_waited_on() {
    let database = TestDatabase::create("slow");
    small_database(&database);
    // A name table that takes 30 s a row to read, as a runaway query would.
    database.mariadb("CREATE VIEW slow_api AS SELECT id, name FROM `apiMetrics_api` WHERE SLEEP(30) = 0;");
    let user = database.create_reader("agent", READER_PASSWORD, true);
    let server = mariadb();
    let directory = tempfile::tempdir().unwrap();
    let slow =
        server_config(directory.path(), &database.url(&user, None), "timeout = \"1s\"\napi_table = \"slow_api\"\n", "");
    let started = Instant::now();
    let output = run_agent(&slow, &["once", "--dry-run"]);
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(said.contains("source.timeout"), "{said}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    // Whoever stopped it first (the server's max_statement_time, or the agent's KILL QUERY),
    // nothing of the agent's runs on.
    wait_for("the agent's statement to stop on the server", Duration::from_secs(10), || {
        running_statements(&server, &user).trim().is_empty().then_some(())
    });

    // A migration holds the table (ALTER TABLE takes its metadata lock; LOCK TABLES … WRITE
    // does the same here): the read gives up after lock_wait_timeout, 2 s, and says why.
    let mut migration = Command::new("mariadb")
        .args(["--no-defaults", "--protocol=TCP", "--host", &server.host, "--port", &server.port.to_string()])
        .args(["--user=root", &format!("--database={}", database.name())])
        .args(["--execute", "LOCK TABLES `apiMetrics_transaction` WRITE; SELECT SLEEP(20);"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the table to be locked", Duration::from_secs(10), || {
        let locked = server.mariadb(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE info LIKE 'SELECT SLEEP(20)%' AND user = 'root';",
        );
        (locked.trim() == "1").then_some(())
    });
    let waiting = server_config(directory.path(), &database.url(&user, None), "timeout = \"10s\"\n", "");
    let started = Instant::now();
    let output = run_agent(&waiting, &["once", "--dry-run"]);
    let _ = migration.kill();
    let _ = migration.wait();
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(
        said.contains("(error 1205") && said.contains("a migration or another lock holder kept the table"),
        "{said}"
    );
    assert!(started.elapsed() < Duration::from_secs(8), "took {:?}", started.elapsed());
}

#[test]
fn a_server_restart_under_run_fails_ticks_clearly_then_recovers_by_itself() {
    let directory = tempfile::tempdir().unwrap();
    let private = private_mariadb(directory.path());
    let database = TestDatabase::create_on(&private.server, "restart");
    small_database(&database);
    let user = database.create_reader("agent", READER_PASSWORD, true);
    let scrape_port = free_port();
    let site = tempfile::tempdir().unwrap();
    let config_path = server_config(
        site.path(),
        &database.url(&user, None),
        "timeout = \"5s\"\n",
        &format!("[scrape]\nlisten = \"127.0.0.1:{scrape_port}\"\n"),
    );
    let running = Running::start(&config_path, scrape_port);
    running.wait_for_ticks("success", 1.0);

    private.stop();
    let failed_before = running.ticks("failure");
    running.wait_for_ticks("failure", failed_before + 2.0);
    let (status, healthz) = http_get(&running.url("/healthz")).unwrap();
    assert_eq!(status, 503, "{healthz}");
    let log = running.log();
    assert!(log.contains(&format!("reading {} (source.database)", database.url(&user, None))), "{log}");
    assert!(log.contains(&format!("127.0.0.1:{}", private.server.port)), "{log}");
    assert!(!log.contains(READER_PASSWORD), "{log}");

    private.start();
    let succeeded = running.ticks("success");
    // The backoff between attempts grows while the server is down: allow for a minute.
    wait_for("a tick to succeed after the restart", Duration::from_secs(60), || {
        (running.ticks("success") > succeeded).then_some(())
    });
    assert_eq!(counts_in(&running.metrics()), small_counts());
    let (status, _) = http_get(&running.url("/healthz")).unwrap();
    assert_eq!(status, 200);
    assert!(running.log().matches("connected to the database server").count() >= 2);
    running.terminate();
}

#[test]
fn names_equal_under_the_columns_collation_stay_apart_as_the_django_view_keeps_them() {
    let database = TestDatabase::create("collation");
    small_database(&database);
    // Under utf8mb4_unicode_ci these equal "Mpesa Express" and FOUR_BYTE_API: a GROUP BY name in
    // SQL would merge each pair under one of its names.
    database.mariadb(
        "INSERT INTO `apiMetrics_api` (id, name, description, params) VALUES (3, 'MPESA EXPRESS ', '', '{}'), \
           (4, 'Lipa 🐍 na M-Pesa 🇰🇪', '', '{}');
         INSERT INTO `apiMetrics_transaction` (amount, time_created, time_modified, api_id, status_id)
           VALUES (1, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6) - INTERVAL 2 HOUR, 3, 1),
                  (1, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6) - INTERVAL 2 HOUR, 4, 2);",
    );
    assert_eq!(database.mariadb(&format!("SELECT 'Lipa 🐍 na M-Pesa 🇰🇪' = '{FOUR_BYTE_API}';")).trim(), "1");
    let user = database.create_reader("agent", READER_PASSWORD, true);
    let directory = tempfile::tempdir().unwrap();
    let output =
        run_agent(&server_config(directory.path(), &database.url(&user, None), "", ""), &["once", "--dry-run"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let counts = counts_in(&stdout(&output));
    assert_eq!(counts[&pair("Mpesa Express", "Pending")], 3);
    assert_eq!(counts[&pair("MPESA EXPRESS ", "Pending")], 1);
    assert_eq!(counts[&pair(FOUR_BYTE_API, "Failed")], 2);
    assert_eq!(counts[&pair("Lipa 🐍 na M-Pesa 🇰🇪", "Failed")], 1);
}

#[test]
fn null_keys_and_names_that_are_no_text_are_counted_as_sqlite_counts_them() {
    let database = TestDatabase::create("odd_rows");
    small_database(&database);
    // What Django would not write, but another program could: a transaction without an API,
    // and names read through a view where one is NULL and one a number.
    database.mariadb(
        "ALTER TABLE `apiMetrics_transaction` MODIFY api_id bigint NULL;
         INSERT INTO `apiMetrics_transaction` (amount, time_created, time_modified, api_id, status_id)
           VALUES (1, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6) - INTERVAL 2 HOUR, NULL, 1);
         CREATE VIEW odd_api AS SELECT id, CASE WHEN id = 1 THEN NULL ELSE 42 END AS name FROM `apiMetrics_api`;",
    );
    let user = database.create_reader("agent", READER_PASSWORD, true);
    let directory = tempfile::tempdir().unwrap();
    let config_path = server_config(directory.path(), &database.url(&user, None), "api_table = \"odd_api\"\n", "");
    let output = run_agent(&config_path, &["once", "--dry-run"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = stdout(&output);
    let counts = counts_in(&printed);
    assert_eq!(counts[&pair("", "Pending")], 3, "{printed}");
    assert_eq!(counts[&pair("42", "Failed")], 2, "{printed}");
    let orphaned = parse_exposition(&printed)
        .into_iter()
        .find(|(name, labels, _)| name == "apimetrics_agent_rows_skipped" && labels["reason"] == "orphaned")
        .map(|(_, _, value)| value);
    assert_eq!(orphaned, Some(1.0), "{printed}");
}
