//! `run`: the scrape endpoint as Prometheus sees it, ticks on an interval or a cron expression,
//! the last good snapshot kept while ticks fail, and a clean exit on SIGTERM.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

const DEADLINE: Duration = Duration::from_secs(20);

#[test]
fn metrics_follow_the_database_pass_promtool_and_sigterm_exits_0() {
    let site = Site::new();
    let tricky = site.add_api("Mpesa \"Express\" \\ v2\nbeta");
    let slashed = site.add_api("Airtel/Money ✓ Kenya");
    let pending = site.add_status("Pending");
    site.add_status("Imeshindwa");
    site.add_transactions(3, tricky, pending, &hours_ago(2.0));
    let port = free_port();
    let config =
        site.config("200ms", &format!("[labels]\nsite = \"nairobi/1\"\n[scrape]\nlisten = \"127.0.0.1:{port}\"\n"));
    let agent = Running::start(&config, port);

    let tricky_series =
        "api_transactions{api=\"Mpesa \\\"Express\\\" \\\\ v2\\nbeta\",status=\"Pending\",site=\"nairobi/1\"}";
    let slashed_series = "api_transactions{api=\"Airtel/Money ✓ Kenya\",status=\"Pending\",site=\"nairobi/1\"}";
    let metrics = wait_for("the first snapshot", DEADLINE, || {
        let metrics = agent.metrics();
        sample(&metrics, tricky_series).map(|_| metrics)
    });
    assert_eq!(sample(&metrics, tricky_series), Some(3.0));
    assert_eq!(sample(&metrics, slashed_series), Some(0.0));
    // The constant labels go on the agent's own series too.
    assert_eq!(sample(&metrics, "apimetrics_agent_rows_in_window{site=\"nairobi/1\"}"), Some(3.0));
    assert!(sample(&metrics, "apimetrics_agent_ticks_total{result=\"success\",site=\"nairobi/1\"}").unwrap() >= 1.0);
    assert_eq!(sample(&metrics, "apimetrics_agent_ticks_total{result=\"failure\",site=\"nairobi/1\"}"), Some(0.0));
    assert_eq!(http_get(&agent.url("/healthz")), Some((200, "ok\n".to_owned())));

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; tests/run installs it)");
    promtool.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    let findings = format!("{}{}", String::from_utf8_lossy(&checked.stdout), String::from_utf8_lossy(&checked.stderr));
    assert!(checked.status.success() && findings.trim().is_empty(), "promtool found: {findings}\nin:\n{metrics}");

    site.add_transactions(4, slashed, pending, &hours_ago(0.0));
    wait_for("the new transactions on /metrics", DEADLINE, || {
        (sample(&agent.metrics(), slashed_series) == Some(4.0)).then_some(())
    });

    let (status, log) = agent.terminate();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("shutting down"), "{log}");
}

#[test]
fn failing_ticks_keep_the_last_snapshot_and_recover() {
    let site = Site::new();
    let api = site.add_api("Mpesa B2C");
    let status = site.add_status("Failed");
    site.add_transactions(7, api, status, &hours_ago(3.0));
    let port = free_port();
    let config = site.config_with_source(
        "busy_timeout = \"50ms\"\n",
        "100ms",
        &format!("[scrape]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let agent = Running::start(&config, port);
    let series = "api_transactions{api=\"Mpesa B2C\",status=\"Failed\"}";
    wait_for("the first snapshot", DEADLINE, || sample(&agent.metrics(), series));

    let writer = site.connect();
    writer.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let failing = agent.wait_for_ticks("failure", 2.0);
    assert!(sample(&failing, "apimetrics_agent_ticks_total{result=\"failure\"}").unwrap() >= 2.0, "{failing}");
    assert_eq!(sample(&failing, series), Some(7.0), "the last good snapshot is still served");
    let (code, body) = http_get(&agent.url("/healthz")).unwrap();
    assert_eq!(code, 503);
    assert!(body.contains("locked by a writer for longer than source.busy_timeout (50ms)"), "{body}");
    wait_for("the snapshot's age to grow", DEADLINE, || {
        (sample(&agent.metrics(), "apimetrics_agent_snapshot_age_seconds")? > 0.3).then_some(())
    });
    assert!(agent.log().contains("tick failed; serving the last good snapshot"));
    writer.execute_batch("ROLLBACK").unwrap();

    site.add_transactions(1, api, status, &hours_ago(0.5));
    wait_for("recovery", DEADLINE, || (sample(&agent.metrics(), series) == Some(8.0)).then_some(()));
    wait_for("healthy again", DEADLINE, || (http_get(&agent.url("/healthz"))?.0 == 200).then_some(()));
}

#[test]
fn a_cron_schedule_ticks_without_a_tick_at_start() {
    let site = Site::new();
    let api = site.add_api("Mpesa Express");
    let status = site.add_status("Pending");
    site.add_transactions(1, api, status, &hours_ago(1.0));
    let port = free_port();
    let config = site.write_config(
        "config.toml",
        &format!(
            "[source]\ndatabase = \"app.sqlite3\"\n[schedule]\ncron = \"* * * * * *\"\nrun_on_start = false\n\
             [scrape]\nlisten = \"127.0.0.1:{port}\"\n"
        ),
    );
    let agent = Running::start(&config, port);
    let page = agent.wait_for_ticks("success", 2.0);
    assert!(sample(&page, "apimetrics_agent_ticks_total{result=\"success\"}").unwrap() >= 2.0, "{page}");
    let (status, log) = agent.terminate();
    assert_eq!(status.code(), Some(0), "{log}");
}

#[test]
fn a_taken_scrape_port_is_an_error_naming_the_key() {
    let site = Site::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = site.config("1s", &format!("[scrape]\nlisten = \"127.0.0.1:{port}\"\n"));
    let output = run_agent(&config, &["run"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains(&format!("binding scrape.listen 127.0.0.1:{port}")), "{}", stderr(&output));
}

#[test]
fn demo_creates_its_database_and_the_aggregate_moves() {
    let directory = tempfile::tempdir().unwrap();
    let port = free_port();
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
    let config = directory.path().join("config.toml");
    std::fs::write(
        &config,
        shipped
            .replace("interval = \"15s\"", "interval = \"300ms\"")
            .replace("listen = \"127.0.0.1:9184\"", &format!("listen = \"127.0.0.1:{port}\"")),
    )
    .unwrap();
    // Without --config: the agent falls back to $APIMETRICS_CONFIG.
    let log = directory.path().join("demo.log");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_apimetrics-agent"))
        .arg("demo")
        .env("APIMETRICS_CONFIG", &config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let demo = Running::adopt(child, port, log);
    let rows = |metrics: &str| sample(metrics, "apimetrics_agent_rows_in_window");
    let first = wait_for("the demo's first snapshot", Duration::from_secs(60), || rows(&demo.metrics()));
    assert!(first > 5_000.0, "the demo database holds about 10,000 transactions in the window, not {first}");
    wait_for("the aggregate to move as the demo writes", DEADLINE, || (rows(&demo.metrics())? > first).then_some(()));
    assert!(directory.path().join("demo.sqlite3").is_file());
    let (status, log) = demo.terminate();
    assert_eq!(status.code(), Some(0), "{log}");
}

#[test]
fn under_a_notify_unit_systemd_hears_ready_once_it_serves_and_stopping_at_sigterm() {
    let site = site_with_transactions();
    let port = free_port();
    let config = site.config("1s", &format!("[scrape]\nlisten = \"127.0.0.1:{port}\"\n"));
    // systemd's side: a datagram socket named in NOTIFY_SOCKET.
    let socket_path = site.directory.path().join("notify.sock");
    let systemd = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    systemd.set_read_timeout(Some(DEADLINE)).unwrap();
    let log = config.with_extension("log");
    let child = agent(&config)
        .arg("run")
        .env("NOTIFY_SOCKET", &socket_path)
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let heard = || {
        let mut buffer = [0; 256];
        let length = systemd.recv(&mut buffer).expect("a notification within the deadline");
        String::from_utf8_lossy(&buffer[..length]).into_owned()
    };
    assert_eq!(heard(), "READY=1");
    // Ready means serving, and a reload asked for at once is taken, not fatal.
    let (status, _) = http_get(&format!("http://127.0.0.1:{port}/healthz")).expect("it serves once ready");
    assert!(status == 200 || status == 503, "{status}");
    let agent = Running::adopt(child, port, log);
    assert!(Command::new("kill").args(["-HUP", &agent.child.id().to_string()]).status().unwrap().success());
    wait_for("the reload the SIGHUP asked for", DEADLINE, || agent.log().contains("reloaded the config").then_some(()));
    let (status, log) = agent.terminate();
    assert_eq!(status.code(), Some(0), "{log}");
    assert_eq!(heard(), "STOPPING=1");
}
