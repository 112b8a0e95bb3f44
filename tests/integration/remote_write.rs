//! The remote-write outlet against Debian's prometheus (remote-write receiver) and
//! victoria-metrics, read back through their query APIs; an outage with the agent killed and
//! restarted; and a hand-made receiver for the wire, retries and refusals.

use std::collections::BTreeMap;
use std::time::Duration;

use apimetrics_agent::remote_write::request::STALE_NAN_BITS;
use apimetrics_agent::remote_write::request::proto::WriteRequest;
use prost::Message;

use crate::peers::*;
use crate::support::*;

const DEADLINE: Duration = Duration::from_secs(30);

/// The result of an instant query: each series' labels and value.
fn query(port: u16, promql: &str) -> Vec<(BTreeMap<String, String>, String)> {
    let response = instant_query(port, promql);
    assert_eq!(response["status"], "success", "{response}");
    let results = response["data"]["result"].as_array().unwrap();
    let value_of = |result: &serde_json::Value| {
        if result["value"].is_array() {
            result["value"][1].as_str().unwrap().to_owned()
        } else {
            result["values"].to_string()
        }
    };
    results.iter().map(|result| (serde_json::from_value(result["metric"].clone()).unwrap(), value_of(result))).collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect()
}

#[test]
fn prometheus_receives_exact_values_and_label_sets() {
    let site = site_with_transactions();
    let port = free_port();
    let _prometheus = prometheus_receiver(site.directory.path(), port);
    let config = site.config(
        "15s",
        &format!(
            "[labels]\njob = \"apimetrics\"\ninstance = \"nairobi-1\"\n\
             [[remote_write]]\nurl = \"http://127.0.0.1:{port}/api/v1/write\"\n"
        ),
    );
    let output = run_agent(&config, &["once"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let mut received = query(port, "api_transactions");
    received.sort();
    let common = [("__name__", "api_transactions"), ("job", "apimetrics"), ("instance", "nairobi-1")];
    let expected = |api: &str, status: &str, value: &str| {
        let mut pairs = common.to_vec();
        pairs.extend([("api", api), ("status", status)]);
        (labels(&pairs), value.to_owned())
    };
    let mut wanted = vec![
        expected("Mpesa B2C", "Failed", "2"),
        expected("Mpesa B2C", "Pending", "0"),
        expected("Mpesa Express", "Failed", "0"),
        expected("Mpesa Express", "Pending", "3"),
    ];
    wanted.sort();
    assert_eq!(received, wanted);
    let rows = query(port, "apimetrics_agent_rows_in_window");
    assert_eq!(
        rows,
        [(
            labels(&[
                ("__name__", "apimetrics_agent_rows_in_window"),
                ("job", "apimetrics"),
                ("instance", "nairobi-1")
            ]),
            "5".to_owned()
        )]
    );
}

#[test]
fn victoria_metrics_receives_exact_values() {
    let site = site_with_transactions();
    let victoria = victoria_metrics(site.directory.path());
    let config = site.config(
        "15s",
        &format!(
            "[labels]\nsite = \"nairobi-1\"\n[[remote_write]]\nurl = \"http://127.0.0.1:{}/api/v1/write\"\n",
            victoria.port
        ),
    );
    let output = run_agent(&config, &["once"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let received = wait_for("VictoriaMetrics to make the samples searchable", DEADLINE, || {
        let mut received = query(victoria.port, "api_transactions");
        received.sort();
        (received.len() == 4).then_some(received)
    });
    let values: Vec<(&str, &str, &str, &str)> = received
        .iter()
        .map(|(labels, value)| {
            (labels["api"].as_str(), labels["status"].as_str(), labels["site"].as_str(), value.as_str())
        })
        .collect();
    assert_eq!(
        values,
        [
            ("Mpesa B2C", "Failed", "nairobi-1", "2"),
            ("Mpesa B2C", "Pending", "nairobi-1", "0"),
            ("Mpesa Express", "Failed", "nairobi-1", "0"),
            ("Mpesa Express", "Pending", "nairobi-1", "3"),
        ]
    );
}

/// A `[scrape]` on `scrape_port` and one remote-write target, "central", sending to
/// `receiver_port`, with `extra` keys in its table.
fn scraped_and_central(scrape_port: u16, receiver_port: u16, extra: &str) -> String {
    format!(
        "[scrape]\nlisten = \"127.0.0.1:{scrape_port}\"\n\
         [[remote_write]]\nname = \"central\"\nurl = \"http://127.0.0.1:{receiver_port}/api/v1/write\"\n{extra}"
    )
}

/// Starts `run` on `config` with every queued tick logged (for `queued_ticks`), its log in `log`,
/// after `prepare` has set what else the test needs on the command.
fn start_logging_ticks(
    config: &std::path::Path,
    scrape_port: u16,
    log: std::path::PathBuf,
    prepare: impl FnOnce(&mut std::process::Command),
) -> Running {
    let mut command = agent(config);
    prepare(&mut command);
    let child = command
        .arg("run")
        .env("RUST_LOG", "info,apimetrics_agent::remote_write=debug")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Running::adopt(child, scrape_port, log)
}

/// The timestamps of the ticks the agent queued, from its debug log.
fn queued_ticks(log: &str) -> Vec<i64> {
    log.lines()
        .filter(|line| line.contains("queued a tick"))
        .map(|line| line.split("timestamp_ms=").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn an_outage_with_a_killed_agent_leaves_no_hole() {
    let site = site_with_transactions();
    let receiver_port = free_port();
    let scrape_port = free_port();
    let config = site.config("300ms", &scraped_and_central(scrape_port, receiver_port, "timeout = \"1s\"\n"));
    let start = || {
        let log = site.directory.path().join(format!("agent-{}.log", free_port()));
        start_logging_ticks(&config, scrape_port, log, |_| {})
    };
    let backlog = |agent: &Running| {
        value_of(
            &parse_exposition(&agent.metrics()),
            "apimetrics_agent_remote_write_backlog_samples",
            &[("target", "central")],
        )
    };

    // The receiver is down: ticks queue up. Then the agent dies without a word.
    let mut first = start();
    wait_for("a backlog of several ticks", DEADLINE, || (backlog(&first)? >= 4.0 * 7.0).then_some(()));
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let first_ticks = queued_ticks(&first.log());
    drop(first);

    // Restarted, it finds its backlog and keeps queueing; then the receiver comes back.
    let second = start();
    wait_for("more ticks queued after the restart", DEADLINE, || {
        (queued_ticks(&second.log()).len() >= 3).then_some(())
    });
    let _prometheus = prometheus_receiver(site.directory.path(), receiver_port);
    wait_for("the backlog to drain", DEADLINE, || (backlog(&second)? == 0.0).then_some(()));
    let local = parse_exposition(&second.metrics());
    let sent = value_of(&local, "apimetrics_agent_remote_write_samples_sent_total", &[("target", "central")]).unwrap();
    let (status, log) = second.terminate();
    assert_eq!(status.code(), Some(0), "{log}");

    let second_ticks = queued_ticks(&log);
    let ticks: Vec<i64> = first_ticks.iter().chain(&second_ticks).copied().collect();
    assert!(ticks.windows(2).all(|pair| pair[0] < pair[1]), "tick timestamps strictly increase: {ticks:?}");
    // Every tick's sample is there, in order, once: at the receiver, or (a tick queued after
    // the drained reading and not yet sent at SIGTERM) still in the queue for the next start.
    let range = query(receiver_port, "api_transactions{api=\"Mpesa Express\",status=\"Pending\"}[10m]");
    let samples: Vec<(f64, String)> = serde_json::from_str(&range[0].1).unwrap();
    let stored: Vec<i64> = samples.iter().map(|(at, _)| (at * 1000.0).round() as i64).collect();
    let still_queued = queued_timestamps(&site.directory.path().join("state/remote_write/central.sqlite3"));
    let delivered_or_kept: Vec<i64> = stored.iter().chain(&still_queued).copied().collect();
    let seen = format!("at the receiver {stored:?}, still queued {still_queued:?}, logged {ticks:?}");
    assert!(delivered_or_kept.windows(2).all(|pair| pair[0] < pair[1]), "once each, in order: {seen}");
    assert!(ticks.iter().all(|tick| delivered_or_kept.contains(tick)), "no logged tick is missing: {seen}");
    // The first agent may die after committing a tick and before logging it: at most that one
    // tick is unlogged, and it lies between the two agents' logged ticks.
    let unlogged: Vec<&i64> = delivered_or_kept.iter().filter(|tick| !ticks.contains(tick)).collect();
    let (last_before_kill, first_after) = (first_ticks.last().copied().unwrap_or(0), second_ticks[0]);
    assert!(
        unlogged.len() <= 1 && unlogged.iter().all(|tick| (last_before_kill..first_after).contains(*tick)),
        "ticks no agent logged: {unlogged:?}; {seen}"
    );
    assert!(still_queued.len() <= 2, "the drained reading left at most a tick or two: {still_queued:?}");
    // Seven series a tick (four pairs, rows in window, two skip reasons): what was counted as
    // sent is whole ticks, never more than reached the receiver.
    let n_stored = stored.len() as f64 * 7.0;
    assert!(sent <= n_stored && sent >= n_stored - 3.0 * 7.0, "sent {sent} samples, {} ticks stored", stored.len());
    assert_eq!(sent % 7.0, 0.0, "whole ticks only: {sent}");
}

/// Waits until the agent's own counters for `target` add up: every sample a tick made was sent,
/// dropped (by some reason), is queued or is held in memory. (The counters are read at one
/// moment, between a tick and the sender's next look at the queue they may not add up yet.)
fn wait_for_reconciled(agent: &Running, target: &str) -> f64 {
    wait_for(&format!("{target}'s samples to add up"), DEADLINE, || {
        let samples = parse_exposition(&agent.metrics());
        let value = |name: &str| value_of(&samples, name, &[("target", target)]);
        let produced = value("apimetrics_agent_remote_write_samples_produced_total")?;
        let dropped: f64 = samples
            .iter()
            .filter(|(name, labels, _)| {
                name == "apimetrics_agent_remote_write_samples_dropped_total"
                    && labels.get("target").map(String::as_str) == Some(target)
            })
            .map(|(_, _, value)| value)
            .sum();
        let accounted = value("apimetrics_agent_remote_write_samples_sent_total")?
            + dropped
            + value("apimetrics_agent_remote_write_backlog_samples")?
            + value("apimetrics_agent_remote_write_held_samples")?;
        (produced > 0.0 && accounted == produced).then_some(produced)
    })
}

/// The tick timestamps of the batches waiting in a remote-write queue file, oldest first.
fn queued_timestamps(queue: &std::path::Path) -> Vec<i64> {
    let connection = rusqlite::Connection::open_with_flags(queue, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut statement = connection.prepare("SELECT DISTINCT timestamp_ms FROM batches ORDER BY timestamp_ms").unwrap();
    statement.query_map([], |row| row.get(0)).unwrap().map(Result::unwrap).collect()
}

fn fake_target(server: &FakeServer, extra: &str) -> String {
    format!("[[remote_write]]\nname = \"central\"\nurl = \"{}/api/v1/push\"\n{extra}", server.url())
}

fn decode(body: &[u8]) -> WriteRequest {
    let raw = snap::raw::Decoder::new().decompress_vec(body).expect("a snappy block (not framed) body");
    WriteRequest::decode(raw.as_slice()).unwrap()
}

#[test]
fn the_wire_is_remote_write_1_0_and_a_500_is_retried_with_the_same_batch() {
    let server = FakeServer::start(vec![Reply::status(500), Reply::status(204)]);
    let site = site_with_transactions();
    let config = site.config(
        "15s",
        &format!(
            "[labels]\nsite = \"nairobi-1\"\n{}",
            fake_target(&server, "headers = { \"X-Scope-OrgID\" = \"tenant-1\" }\n")
        ),
    );
    let output = run_agent(&config, &["once"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let received = server.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].body, received[1].body, "the retry carries the same batch");
    let request = &received[1];
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/api/v1/push"));
    assert_eq!(request.headers["content-encoding"], "snappy");
    assert_eq!(request.headers["content-type"], "application/x-protobuf");
    assert_eq!(request.headers["x-prometheus-remote-write-version"], "0.1.0");
    assert_eq!(request.headers["x-scope-orgid"], "tenant-1");
    assert!(request.headers["user-agent"].starts_with("apimetrics-agent/"));
    let write = decode(&request.body);
    assert_eq!(write.timeseries.len(), 7);
    let timestamp = write.timeseries[0].samples[0].timestamp;
    for series in &write.timeseries {
        let names: Vec<&str> = series.labels.iter().map(|label| label.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted, "labels sorted by name, none twice");
        assert!(names.contains(&"__name__") && names.contains(&"site"));
        assert!(series.labels.iter().all(|label| !label.value.is_empty()));
        assert_eq!(series.samples.len(), 1);
        assert_eq!(series.samples[0].timestamp, timestamp);
    }
    let now = chrono::Utc::now().timestamp_millis();
    assert!((now - 60_000..=now).contains(&timestamp), "stamped with the tick's time");
}

#[test]
fn a_400_is_not_retried_and_the_refused_samples_are_counted() {
    let server = FakeServer::start(vec![Reply::status(400).with_body("out of bounds"), Reply::status(204)]);
    let site = site_with_transactions();
    let config = site.config("15s", &fake_target(&server, ""));
    let output = run_agent(&config, &["once"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(server.received().len(), 1);
    let message = stderr(&output);
    assert!(
        message.contains(
            "central: the receiver refused 7 samples, which were dropped: HTTP 400 Bad Request: out of bounds"
        ),
        "{message}"
    );
}

#[test]
fn a_429_waits_for_retry_after_and_a_hang_is_retried_after_the_timeout() {
    let server = FakeServer::start(vec![
        Reply::status(429).with_header("Retry-After", "2"),
        Reply::status(204).after(Duration::from_secs(5)),
        Reply::status(204),
    ]);
    let site = site_with_transactions();
    let config = site.config("15s", &fake_target(&server, "timeout = \"500ms\"\n"));
    let output = run_agent(&config, &["once"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let received = server.received();
    assert_eq!(received.len(), 3);
    assert!(received[1].at - received[0].at >= Duration::from_secs(2), "Retry-After was not honoured");
    assert!(stderr(&output).contains("timed out"), "{}", stderr(&output));
    assert_eq!(received[1].body, received[2].body);
}

#[test]
fn a_refused_request_is_split_so_the_receiver_keeps_what_it_accepts() {
    let site = site_with_transactions();
    // First run: the receiver fails, the tick stays queued.
    let down = FakeServer::start(vec![Reply::status(503)]);
    let config = site.config("15s", &fake_target(&down, ""));
    let output = run_agent(&config, &["once"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("7 samples stay queued"), "{}", stderr(&output));

    // Second run: two ticks queued; the receiver refuses them together, accepts them one by one.
    let picky = FakeServer::start(vec![Reply::status(400).with_body("out of order"), Reply::status(204)]);
    let config = site.config("15s", &fake_target(&picky, ""));
    let output = run_agent(&config, &["once"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let sizes: Vec<usize> = picky.received().iter().map(|request| decode(&request.body).timeseries.len()).collect();
    assert_eq!(sizes, [14, 7, 7]);
    let stamps: Vec<i64> =
        picky.received()[1..].iter().map(|request| decode(&request.body).timeseries[0].samples[0].timestamp).collect();
    assert!(stamps[0] < stamps[1], "oldest first: {stamps:?}");
}

#[test]
fn max_samples_per_send_splits_a_tick() {
    let server = FakeServer::start(vec![Reply::status(204)]);
    let site = site_with_transactions();
    let config = site.config("15s", &fake_target(&server, "max_samples_per_send = 3\n"));
    let output = run_agent(&config, &["once"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let sizes: Vec<usize> = server.received().iter().map(|request| decode(&request.body).timeseries.len()).collect();
    assert_eq!(sizes, [3, 3, 1]);
}

#[test]
fn a_series_that_leaves_gets_a_stale_marker() {
    let server = FakeServer::start(vec![Reply::status(204)]);
    let site = site_with_transactions();
    let port = free_port();
    let config = site.config(
        "300ms",
        &format!("[metric]\nzero_fill = false\n[scrape]\nlisten = \"127.0.0.1:{port}\"\n{}", fake_target(&server, "")),
    );
    let agent = Running::start(&config, port);
    let is_b2c = |series: &apimetrics_agent::remote_write::request::proto::TimeSeries| {
        series.labels.iter().any(|label| label.name == "api" && label.value == "Mpesa B2C")
    };
    wait_for("a tick with the B2C series", DEADLINE, || {
        server.received().iter().any(|request| decode(&request.body).timeseries.iter().any(is_b2c)).then_some(())
    });
    site.connect().execute_batch("DELETE FROM apiMetrics_transaction WHERE api_id = 2").unwrap();
    let marker = wait_for("the stale marker", DEADLINE, || {
        server
            .received()
            .iter()
            .flat_map(|request| decode(&request.body).timeseries)
            .find(|series| is_b2c(series) && series.samples[0].value.to_bits() == STALE_NAN_BITS)
    });
    let names: Vec<(&str, &str)> =
        marker.labels.iter().map(|label| (label.name.as_str(), label.value.as_str())).collect();
    assert_eq!(names, [("__name__", "api_transactions"), ("api", "Mpesa B2C"), ("status", "Failed")]);
    let (status, _) = agent.terminate();
    assert_eq!(status.code(), Some(0));
    let markers = server
        .received()
        .iter()
        .flat_map(|request| decode(&request.body).timeseries)
        .filter(|series| is_b2c(series) && series.samples[0].value.is_nan())
        .count();
    assert_eq!(markers, 1, "one marker, not one per tick");
}

#[test]
fn remote_write_settings_are_checked_before_anything_runs() {
    let site = site_with_transactions();
    let config = site.config(
        "15s",
        "[[remote_write]]\nname = \"central\"\nurl = \"http://a:9090/api/v1/write\"\nqueue = { max_bytes = \"lots\", max_age = \"0s\" }\n\
         [[remote_write]]\nname = \"central\"\nurl = \"ftp://b/write\"\nmax_samples_per_send = 0\n\
         [[remote_write]]\nname = \"has space\"\nurl = \"http://user:pw@c/write\"\n",
    );
    let message = assert_config_refused(
        &config,
        &[
            "remote_write[0].queue.max_bytes: \"lots\" is not a size",
            "remote_write[0].queue.max_age: \"0s\" is out of range: from 1s to 31d (default 1h)",
            "remote_write[1].url: \"ftp://b/write\" is not an http(s) URL",
            "remote_write[1].max_samples_per_send: 0 is out of range: from 1 to 1000000 (default 2000)",
            "remote_write[1].name: \"central\" is taken by an earlier target",
            "remote_write[2].name: use letters, digits",
            "remote_write[2].url: holds credentials: put them in basic_auth instead",
        ],
    );
    assert!(!message.contains("pw@"), "{message}");
}

/// Debian's libfaketime, which tests/run installs: the agent's wall clock, and only it, follows
/// the offset written in a file (`+0`, `-1h`), stepped while it runs. Monotonic time, which its
/// timers use, stays real.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

#[test]
fn a_clock_stepped_back_drops_ticks_until_it_passes_the_newest_sample_and_a_step_forward_needs_nothing() {
    let site = site_with_transactions();
    let (receiver_port, scrape_port) = (free_port(), free_port());
    let _prometheus = prometheus_receiver(site.directory.path(), receiver_port);
    let clock = site.directory.path().join("clock-offset");
    std::fs::write(&clock, "+0\n").unwrap();
    let config = site.config("300ms", &scraped_and_central(scrape_port, receiver_port, ""));
    let log = site.directory.path().join("agent.log");
    let agent = start_logging_ticks(&config, scrape_port, log, |command| {
        command
            .env("LD_PRELOAD", LIBFAKETIME)
            .env("FAKETIME_TIMESTAMP_FILE", &clock)
            .env("FAKETIME_NO_CACHE", "1")
            .env("DONT_FAKE_MONOTONIC", "1");
    });
    let counter = |name: &str, labels: &[(&str, &str)]| {
        value_of(&parse_exposition(&agent.metrics()), name, labels).unwrap_or_else(|| panic!("{name} {labels:?}"))
    };
    let sent = || counter("apimetrics_agent_remote_write_samples_sent_total", &[("target", "central")]);
    let dropped = |reason| {
        counter("apimetrics_agent_remote_write_samples_dropped_total", &[("target", "central"), ("reason", reason)])
    };
    wait_for("three ticks delivered", DEADLINE, || (sent() >= 3.0 * 7.0).then_some(()));

    // An hour back: every tick now would land before samples the receiver holds.
    std::fs::write(&clock, "-1h\n").unwrap();
    wait_for("three ticks dropped", DEADLINE, || (dropped("clock_went_back") >= 3.0 * 7.0).then_some(()));
    let sent_while_back = sent();
    wait_for("two more ticks dropped", DEADLINE, || (dropped("clock_went_back") >= 5.0 * 7.0).then_some(()));
    assert_eq!(sent(), sent_while_back, "nothing new was sent while the clock was behind");
    assert_eq!(agent.log().matches("the clock went back").count(), 1, "said once:\n{}", agent.log());

    // Back to the right time: queueing resumes. Then half an hour forward: nothing special.
    std::fs::write(&clock, "+0\n").unwrap();
    wait_for("ticks sent again", DEADLINE, || (sent() >= sent_while_back + 3.0 * 7.0).then_some(()));
    assert!(agent.log().contains("the clock has passed the newest sample queued: queueing again"));
    std::fs::write(&clock, "+30m\n").unwrap();
    let before_forward = sent();
    wait_for("ticks sent after the step forward", DEADLINE, || (sent() >= before_forward + 3.0 * 7.0).then_some(()));

    // The receiver refused nothing, and every sample is accounted for.
    let samples = parse_exposition(&agent.metrics());
    let rejected = value_of(
        &samples,
        "apimetrics_agent_remote_write_samples_dropped_total",
        &[("target", "central"), ("reason", "rejected")],
    );
    assert_eq!(rejected, Some(0.0), "the receiver refused samples:\n{}", agent.log());
    wait_for_reconciled(&agent, "central");
    let (status, log) = agent.terminate();
    assert_eq!(status.code(), Some(0), "{log}");

    // At the receiver, one series' timestamps strictly increase, none from the hour back.
    let range = query(receiver_port, "api_transactions{api=\"Mpesa Express\",status=\"Pending\"}[2h]");
    let stored: Vec<f64> =
        serde_json::from_str::<Vec<(f64, String)>>(&range[0].1).unwrap().iter().map(|s| s.0).collect();
    assert!(stored.windows(2).all(|pair| pair[0] < pair[1]), "{stored:?}");
}

#[test]
fn a_batch_that_cannot_be_read_back_is_dropped_counted_and_blocks_nothing() {
    let site = site_with_transactions();
    let (receiver_port, scrape_port) = (free_port(), free_port());
    let config = site.config("300ms", &scraped_and_central(scrape_port, receiver_port, "timeout = \"1s\"\n"));
    let agent = start_logging_ticks(&config, scrape_port, site.directory.path().join("agent.log"), |_| {});
    let value = |name: &str, labels: &[(&str, &str)]| value_of(&parse_exposition(&agent.metrics()), name, labels);
    let backlog = || value("apimetrics_agent_remote_write_backlog_samples", &[("target", "central")]);
    wait_for("a backlog of three ticks", DEADLINE, || (backlog()? >= 3.0 * 7.0).then_some(()));

    // A disk fault garbles the oldest batch; the receiver comes back.
    let queue = site.directory.path().join("state/remote_write/central.sqlite3");
    let garbled = rusqlite::Connection::open(&queue).unwrap();
    garbled.busy_timeout(Duration::from_secs(5)).unwrap();
    let (garbled_at, n_garbled): (i64, i64) = garbled
        .query_row(
            "UPDATE batches SET body = x'0badc0de' WHERE id = (SELECT min(id) FROM batches) \
             RETURNING timestamp_ms, n_samples",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    drop(garbled);
    let _prometheus = prometheus_receiver(site.directory.path(), receiver_port);
    wait_for("the backlog to drain", DEADLINE, || (backlog()? == 0.0).then_some(()));

    let dropped = |reason| {
        value("apimetrics_agent_remote_write_samples_dropped_total", &[("target", "central"), ("reason", reason)])
    };
    assert_eq!(dropped("corrupt"), Some(n_garbled as f64));
    // Every reason is there from the start, at 0, for a rule's increase() to see its first drop.
    for reason in ["rejected", "queue_write_failed", "too_old", "over_size", "clock_went_back"] {
        assert_eq!(dropped(reason), Some(0.0), "{reason}");
    }
    wait_for_reconciled(&agent, "central");
    let (status, log) = agent.terminate();
    assert_eq!(status.code(), Some(0), "{log}");
    let dropped = log.lines().find(|line| line.contains("dropped queued batches that cannot be read back"));
    assert!(dropped.is_some_and(|line| line.contains("n_batches=1")), "{log}");

    // Every tick but the garbled one reached the receiver.
    let ticks: Vec<i64> = queued_ticks(&log);
    let range = query(receiver_port, "api_transactions{api=\"Mpesa Express\",status=\"Pending\"}[10m]");
    let samples: Vec<(f64, String)> = serde_json::from_str(&range[0].1).unwrap();
    let stored: Vec<i64> = samples.iter().map(|(at, _)| (at * 1000.0).round() as i64).collect();
    let still_queued = queued_timestamps(&queue);
    let expected: Vec<i64> = ticks.iter().copied().filter(|tick| *tick != garbled_at).collect();
    let delivered_or_kept: Vec<i64> = stored.iter().chain(&still_queued).copied().collect();
    assert_eq!(delivered_or_kept, expected, "garbled {garbled_at}");
}

#[test]
fn a_garbled_queue_file_is_moved_aside_at_start_and_new_samples_still_arrive() {
    let site = site_with_transactions();
    let scrape_port = free_port();
    let victoria = victoria_metrics(site.directory.path());
    let victoria_port = victoria.port;
    let queues = site.directory.path().join("state/remote_write");
    std::fs::create_dir_all(&queues).unwrap();
    std::fs::write(queues.join("central.sqlite3"), vec![0x5a; 8192]).unwrap();
    // A second target whose queue is sound: the damaged one must not affect it.
    let config = site.config(
        "300ms",
        &format!(
            "[scrape]\nlisten = \"127.0.0.1:{scrape_port}\"\n\
             [[remote_write]]\nname = \"central\"\nurl = \"http://127.0.0.1:{victoria_port}/api/v1/write\"\n\
             [[remote_write]]\nname = \"other\"\nurl = \"http://127.0.0.1:{victoria_port}/api/v1/write\"\n"
        ),
    );
    let agent = Running::start(&config, scrape_port);
    let sent = |target| {
        value_of(
            &parse_exposition(&agent.metrics()),
            "apimetrics_agent_remote_write_samples_sent_total",
            &[("target", target)],
        )
    };
    wait_for("both targets to send", DEADLINE, || (sent("central")? >= 7.0 && sent("other")? >= 7.0).then_some(()));
    let (status, log) = agent.terminate();
    assert_eq!(status.code(), Some(0), "{log}");
    let moved = log.lines().find(|line| line.contains("the queue file is damaged")).unwrap_or_else(|| panic!("{log}"));
    let original = queues.join("central.sqlite3");
    assert!(moved.contains(&format!("queue={}", original.display())), "{moved}");
    let aside: Vec<std::path::PathBuf> = std::fs::read_dir(&queues)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().contains("central.sqlite3.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(moved.contains(&format!("moved_to={}", aside[0].display())), "{moved}");
    assert_eq!(std::fs::read(&aside[0]).unwrap(), vec![0x5a; 8192], "kept as it was");
    // At the receiver: the samples the fresh queue carried.
    let received = wait_for("VictoriaMetrics to have the samples", DEADLINE, || {
        let url = format!("http://127.0.0.1:{victoria_port}/api/v1/export?match[]=api_transactions");
        let (_, body) = http_get(&url)?;
        body.contains("Mpesa Express").then_some(body)
    });
    assert!(received.contains("\"status\":\"Pending\""), "{received}");
}

/// A disk that fills up on demand under the agent's state_dir: a small tmpfs where the test may
/// mount one (CI runs as root), else the agent's own file-size limit (`RLIMIT_FSIZE`, soft only,
/// with SIGXFSZ ignored) lowered to what its files hold, so that the next append fails as on a
/// full disk. Unmounted when dropped.
enum FullDisk {
    Tmpfs { mount_point: std::path::PathBuf, filler: std::path::PathBuf },
    FileSizeLimit { state_dir: std::path::PathBuf },
}

impl FullDisk {
    /// Prepares `state_dir` (which must not exist yet).
    fn at(state_dir: &std::path::Path) -> FullDisk {
        let mount_point = state_dir.parent().unwrap().join("small-disk");
        std::fs::create_dir_all(&mount_point).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
            .arg(&mount_point)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !mounted {
            std::fs::remove_dir(&mount_point).unwrap();
            return FullDisk::FileSizeLimit { state_dir: state_dir.to_owned() };
        }
        std::os::unix::fs::symlink(&mount_point, state_dir).unwrap();
        FullDisk::Tmpfs { filler: mount_point.join("filler"), mount_point }
    }

    /// Ignores SIGXFSZ in the agent, so a write past a file-size limit fails instead of killing it.
    fn prepare(command: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        // SAFETY: signal() only, between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                Ok(())
            });
        }
    }

    fn fill(&self, pid: u32) {
        match self {
            FullDisk::Tmpfs { filler, .. } => {
                use std::io::Write;
                let mut file = std::fs::File::create(filler).unwrap();
                while file.write_all(&[0u8; 4096]).is_ok() {}
            }
            FullDisk::FileSizeLimit { state_dir } => {
                let largest = walk(state_dir).iter().map(|path| std::fs::metadata(path).map_or(0, |m| m.len())).max();
                set_file_size_limit(pid, &largest.unwrap_or(0).to_string());
            }
        }
    }

    fn free(&self, pid: u32) {
        match self {
            FullDisk::Tmpfs { filler, .. } => std::fs::remove_file(filler).unwrap(),
            FullDisk::FileSizeLimit { .. } => set_file_size_limit(pid, "unlimited"),
        }
    }
}

fn walk(directory: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(directory).unwrap().map(Result::unwrap) {
        if entry.file_type().unwrap().is_dir() {
            files.extend(walk(&entry.path()));
        } else {
            files.push(entry.path());
        }
    }
    files
}

/// Sets the agent's soft file-size limit; the hard one stays unlimited, so it can be raised again.
fn set_file_size_limit(pid: u32, soft: &str) {
    let status = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--fsize={soft}:unlimited"))
        .status()
        .unwrap();
    assert!(status.success(), "prlimit --fsize={soft} on the agent");
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        if let FullDisk::Tmpfs { mount_point, .. } = self {
            let _ = std::process::Command::new("umount").arg("-l").arg(mount_point).status();
        }
    }
}

#[test]
fn a_full_disk_holds_the_samples_in_memory_turns_health_503_and_loses_nothing() {
    let site = site_with_transactions();
    let state_dir = site.directory.path().join("state");
    let disk = FullDisk::at(&state_dir);
    let (receiver_port, scrape_port) = (free_port(), free_port());
    let _prometheus = prometheus_receiver(site.directory.path(), receiver_port);
    let config = site.config("300ms", &scraped_and_central(scrape_port, receiver_port, ""));
    let log = site.directory.path().join("agent.log");
    let agent = start_logging_ticks(&config, scrape_port, log, FullDisk::prepare);
    let value = |name: &str, labels: &[(&str, &str)]| value_of(&parse_exposition(&agent.metrics()), name, labels);
    let sent = || value("apimetrics_agent_remote_write_samples_sent_total", &[("target", "central")]);
    wait_for("a first tick delivered", DEADLINE, || (sent()? >= 7.0).then_some(()));

    let pid = agent.child.id();
    disk.fill(pid);
    let health = wait_for("/healthz to say the queue cannot be written", DEADLINE, || {
        http_get(&agent.url("/healthz")).filter(|(status, body)| *status == 503 && body.contains("cannot be written"))
    });
    assert!(health.1.contains("the queue of remote_write central cannot be written"), "{}", health.1);
    let failed_ticks = || agent.log().matches("the queue cannot be written").count();
    wait_for("three ticks held in memory", DEADLINE, || (failed_ticks() >= 3).then_some(()));
    let held = value("apimetrics_agent_remote_write_held_samples", &[("target", "central")]).unwrap();
    assert!(held >= 3.0 * 7.0, "held {held} samples");
    wait_for_reconciled(&agent, "central");

    // Room again: the held ticks go to the queue, oldest first, and on to the receiver.
    disk.free(pid);
    wait_for("/healthz to answer 200 again", DEADLINE, || {
        http_get(&agent.url("/healthz")).filter(|(status, _)| *status == 200)
    });
    wait_for("the backlog to drain", DEADLINE, || {
        (value("apimetrics_agent_remote_write_backlog_samples", &[("target", "central")])? == 0.0).then_some(())
    });
    let dropped = value(
        "apimetrics_agent_remote_write_samples_dropped_total",
        &[("target", "central"), ("reason", "queue_write_failed")],
    );
    assert_eq!(dropped, Some(0.0), "the bound was not reached");
    wait_for_reconciled(&agent, "central");
    let (status, log) = agent.terminate();
    assert_eq!(status.code(), Some(0), "{log}");

    let ticks = queued_ticks(&log);
    let range = query(receiver_port, "api_transactions{api=\"Mpesa Express\",status=\"Pending\"}[10m]");
    let samples: Vec<(f64, String)> = serde_json::from_str(&range[0].1).unwrap();
    let stored: Vec<i64> = samples.iter().map(|(at, _)| (at * 1000.0).round() as i64).collect();
    let still_queued = queued_timestamps(&state_dir.join("remote_write/central.sqlite3"));
    let delivered_or_kept: Vec<i64> = stored.iter().chain(&still_queued).copied().collect();
    assert_eq!(delivered_or_kept, ticks, "every tick once, in order, the held ones included");
    drop(disk);
}
