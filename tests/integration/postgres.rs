//! Against PostgreSQL: databases Django itself made and filled on the server tests/run starts,
//! whose ORM counts the agent must print exactly; the failures an operator meets (a wrong
//! password, no server, a role without SELECT, TLS with the wrong CA) told apart with the
//! server's address and never the password; and a server restarted under a running agent. An
//! impostor that asks for the password in plain text, one that never answers, and rows Django
//! would not write (NULL keys, names that are no text) neither get the password nor stop the agent.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

use crate::peers::parse_exposition;
use crate::postgres_support::*;
use crate::support::*;

/// A database with Django's tables (from `schema/django-postgresql.sql`), two APIs and two
/// statuses, and 3 + 2 transactions in the window, 9 outside it.
fn small_database(database: &TestDatabase) {
    database.psql(POSTGRES_SCHEMA);
    database.psql(
        "INSERT INTO \"apiMetrics_api\" (name, description, params) VALUES ('Mpesa Express', '', '{}'), ('Mpesa B2C', '', '{}');
         INSERT INTO \"apiMetrics_transactionstatus\" (name, description) VALUES ('Pending', ''), ('Failed', '');
         INSERT INTO \"apiMetrics_transaction\" (amount, time_created, time_modified, api_id, status_id)
           SELECT 1, now(), now() - interval '1 hour', 1, 1 FROM generate_series(1, 3)
           UNION ALL SELECT 1, now(), now() - interval '5 hours', 2, 2 FROM generate_series(1, 2)
           UNION ALL SELECT 1, now(), now() - interval '30 hours', 2, 2 FROM generate_series(1, 9);",
    );
}

#[test]
fn once_prints_exactly_what_djangos_orm_counts_with_and_without_use_tz() {
    for (use_tz, zone) in [(true, "UTC"), (false, "Africa/Nairobi")] {
        let database = TestDatabase::create("counts");
        let (_, django_counts) = django_fill(&database, use_tz, zone);
        assert!(django_counts.len() > 10 && django_counts.values().sum::<u64>() > 1000, "{django_counts:?}");
        let role = database.create_reader("agent", READER_PASSWORD, true);
        let directory = tempfile::tempdir().unwrap();
        let timezone = if use_tz { String::new() } else { format!("timezone = \"{zone}\"\n") };
        let config_of = |zero_fill: bool| {
            server_config(
                directory.path(),
                &database.url(&role, None),
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
        // Four distinct API names × four distinct status names, the ORM's counts where it has any.
        assert_eq!(filled.len(), 16, "{filled:?}");
        for (pair, count) in &filled {
            assert_eq!(*count, django_counts.get(pair).copied().unwrap_or(0), "{pair:?}");
        }

        let check = run_agent(&config_of(true), &["check"]);
        assert!(check.status.success(), "{}", stderr(&check));
        let report = stdout(&check);
        // Django makes the column `timestamp with time zone` whatever USE_TZ says.
        let stored = if use_tz {
            "time_modified is timestamp with time zone: the window starts at the instant 24 h ago (USE_TZ = True)"
                .to_owned()
        } else {
            format!(
                "time_modified is timestamp with time zone: the window starts at the wall-clock time 24 h ago in \
                 {zone} (source.timezone), as Django binds it with USE_TZ = False"
            )
        };
        assert!(report.contains(&stored), "{report}");
        assert!(report.contains(&format!("database {}", database.url(&role, None))), "{report}");
        assert!(report.contains("warning: no index on apiMetrics_transaction.time_modified"), "{report}");
    }
}

#[test]
fn a_wrong_password_no_server_and_a_role_without_select_each_say_what_and_where() {
    let database = TestDatabase::create("failures");
    small_database(&database);
    let server = postgres();
    let directory = tempfile::tempdir().unwrap();

    // A wrong password: the server's reason and address, never the password.
    let role = database.create_reader("agent", "another-password-5150", true);
    let config_path = server_config(directory.path(), &database.url(&role, None), "", "");
    for command in [&["once", "--dry-run"][..], &["check"]] {
        let output = run_agent(&config_path, command);
        let said = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{said}");
        assert!(said.contains(&format!("cannot connect to postgres://{role}@{}/", server.address())), "{said}");
        assert!(said.contains("password authentication failed"), "{said}");
        assert!(said.contains("check the user in source.database and the password"), "{said}");
        assert!(!said.contains(READER_PASSWORD) && !said.contains("another-password"), "{said}");
    }

    // No server at the address.
    let nowhere = format!("postgres://{role}@127.0.0.1:{}/{}", free_port(), database.name());
    let output = run_agent(&server_config(directory.path(), &nowhere, "", ""), &["once", "--dry-run"]);
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(said.contains(&format!("cannot connect to {nowhere}")) && said.contains("refused"), "{said}");

    // A role that may connect but not read the tables: told which tables and the GRANT.
    let reader = database.create_reader("nosel", READER_PASSWORD, false);
    let output =
        run_agent(&server_config(directory.path(), &database.url(&reader, None), "", ""), &["once", "--dry-run"]);
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "role \"{reader}\" may not read table(s) \"apiMetrics_api\", \"apiMetrics_transactionstatus\", \
             \"apiMetrics_transaction\": as the tables' owner, run GRANT SELECT ON"
        )),
        "{said}"
    );

    // A database that is not the app's.
    let empty = TestDatabase::create("empty");
    let stranger = empty.create_reader("agent", READER_PASSWORD, false);
    let output = run_agent(&server_config(directory.path(), &empty.url(&stranger, None), "", ""), &["check"]);
    let said = stderr(&output);
    assert!(said.contains("table \"apiMetrics_api\" is missing") && said.contains("migrate"), "{said}");
}

#[test]
fn tls_verify_full_connects_with_the_servers_ca_and_refuses_another() {
    let database = TestDatabase::create("tls");
    small_database(&database);
    let role = database.create_reader("agent", READER_PASSWORD, true);
    let directory = tempfile::tempdir().unwrap();
    let url = database.url(&role, None);
    let server = postgres();

    let with_ca = format!("sslmode = \"verify-full\"\nsslrootcert = \"{}\"\n", server.ca_file.display());
    let output = run_agent(&server_config(directory.path(), &url, &with_ca, ""), &["once", "--dry-run"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let counts = counts_in(&stdout(&output));
    assert_eq!(counts[&("Mpesa Express".to_owned(), "Pending".to_owned())], 3);
    assert_eq!(counts[&("Mpesa B2C".to_owned(), "Failed".to_owned())], 2);

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

    // "require" encrypts without checking; the URL may say it as libpq's do.
    let output =
        run_agent(&server_config(directory.path(), &format!("{url}?sslmode=require"), "", ""), &["once", "--dry-run"]);
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn a_server_restart_under_run_fails_ticks_clearly_then_recovers_by_itself() {
    let directory = tempfile::tempdir().unwrap();
    let private = private_postgres(directory.path());
    let database = TestDatabase::create_on(&private.server, "restart");
    small_database(&database);
    let role = database.create_reader("agent", READER_PASSWORD, true);
    let scrape_port = free_port();
    let site = tempfile::tempdir().unwrap();
    let config_path = server_config(
        site.path(),
        &database.url(&role, None),
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
    assert!(log.contains(&format!("reading {} (source.database)", database.url(&role, None))), "{log}");
    assert!(log.contains(&format!("127.0.0.1:{}", private.server.port)), "{log}");
    assert!(!log.contains(READER_PASSWORD), "{log}");

    private.start();
    let succeeded = running.ticks("success");
    // The backoff between attempts grows while the server is down: allow for a minute.
    wait_for("a tick to succeed after the restart", Duration::from_secs(60), || {
        (running.ticks("success") > succeeded).then_some(())
    });
    let counts = counts_in(&running.metrics());
    assert_eq!(counts[&("Mpesa Express".to_owned(), "Pending".to_owned())], 3);
    let (status, _) = http_get(&running.url("/healthz")).unwrap();
    assert_eq!(status, 200);
    assert!(running.log().matches("connected to the database server").count() >= 2);
    running.terminate();
}

/// A server at `port` that speaks TLS with a certificate of its own and then asks for the
/// password in plain text, as an impostor at the server's address could; the thread returns
/// what the client sent after that question.
fn impostor_asking_for_the_password() -> (u16, std::thread::JoinHandle<Vec<u8>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    let thread = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut ssl_request = [0; 8];
        tcp.read_exact(&mut ssl_request).unwrap();
        tcp.write_all(b"S").unwrap();
        let mut tls = rustls::StreamOwned::new(rustls::ServerConnection::new(Arc::new(config)).unwrap(), tcp);
        let mut length = [0; 4];
        tls.read_exact(&mut length).unwrap();
        let mut startup = vec![0; u32::from_be_bytes(length) as usize - 4];
        tls.read_exact(&mut startup).unwrap();
        // AuthenticationCleartextPassword.
        tls.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).unwrap();
        tls.flush().unwrap();
        let mut sent = Vec::new();
        let _ = tls.read_to_end(&mut sent);
        sent
    });
    (port, thread)
}

#[test]
fn an_impostor_gets_no_password_and_a_silent_server_ends_the_connect() {
    let directory = tempfile::tempdir().unwrap();

    // sslmode = "require" verifies no certificate: the password goes only into SCRAM bound to
    // the TLS channel, so a server asking for it in plain text gets nothing.
    let (port, impostor) = impostor_asking_for_the_password();
    let url = format!("postgres://agent@127.0.0.1:{port}/app");
    let output =
        run_agent(&server_config(directory.path(), &url, "sslmode = \"require\"\n", ""), &["once", "--dry-run"]);
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(said.contains(&format!("cannot connect to {url}")), "{said}");
    assert!(said.contains("server did not use channel binding") && said.contains("verify-full"), "{said}");
    let sent = impostor.join().unwrap();
    assert!(!String::from_utf8_lossy(&sent).contains(READER_PASSWORD), "the impostor got the password: {sent:?}");

    // A server that accepts and never answers (a stopped postmaster): the login has its limit,
    // said as such, within source.timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("postgres://agent@127.0.0.1:{}/app", silent.local_addr().unwrap().port());
    let started = Instant::now();
    let output = run_agent(&server_config(directory.path(), &url, "timeout = \"2s\"\n", ""), &["once", "--dry-run"]);
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(said.contains(&format!("cannot connect to {url}: no answer within 1s 500ms while logging in")), "{said}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}

#[test]
fn null_keys_and_names_that_are_no_text_are_counted_as_sqlite_counts_them() {
    let database = TestDatabase::create("odd_rows");
    small_database(&database);
    // What Django would not write, but another program could: a transaction without an API,
    // and names read through a view where one is NULL and one a number.
    database.psql(
        "ALTER TABLE \"apiMetrics_transaction\" ALTER COLUMN api_id DROP NOT NULL;
         INSERT INTO \"apiMetrics_transaction\" (amount, time_created, time_modified, api_id, status_id)
           VALUES (1, now(), now() - interval '2 hours', NULL, 1);
         CREATE VIEW odd_api AS SELECT id, CASE WHEN id = 1 THEN NULL ELSE 42 END AS name FROM \"apiMetrics_api\";",
    );
    let role = database.create_reader("agent", READER_PASSWORD, true);
    database.psql(&format!("GRANT SELECT ON odd_api TO \"{role}\";"));
    let directory = tempfile::tempdir().unwrap();
    let config_path = server_config(directory.path(), &database.url(&role, None), "api_table = \"odd_api\"\n", "");
    let output = run_agent(&config_path, &["once", "--dry-run"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = stdout(&output);
    let counts = counts_in(&printed);
    assert_eq!(counts[&(String::new(), "Pending".to_owned())], 3, "{printed}");
    assert_eq!(counts[&("42".to_owned(), "Failed".to_owned())], 2, "{printed}");
    let orphaned = parse_exposition(&printed)
        .into_iter()
        .find(|(name, labels, _)| name == "apimetrics_agent_rows_skipped" && labels["reason"] == "orphaned")
        .map(|(_, _, value)| value);
    assert_eq!(orphaned, Some(1.0), "{printed}");
}
