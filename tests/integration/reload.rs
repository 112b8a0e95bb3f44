//! Reloading without a restart: SIGHUP and `POST /-/reload` put a good config in force at the
//! next tick, refuse a bad one while the agent runs on, and keep remote-write backlogs.

use std::process::Command;
use std::time::Duration;

use apimetrics_agent::remote_write::queue::inspect;

use crate::peers::*;
use crate::support::*;

const DEADLINE: Duration = Duration::from_secs(30);

fn sighup(agent: &Running) {
    assert!(Command::new("kill").args(["-HUP", &agent.child.id().to_string()]).status().unwrap().success());
}

fn local(agent: &Running) -> Vec<Sample> {
    parse_exposition(&agent.metrics())
}

fn gateway_value(port: u16, labels: &[(&str, &str)]) -> Option<f64> {
    let (_, body) = http_get(&format!("http://127.0.0.1:{port}/metrics"))?;
    value_of(&parse_exposition(&body), "api_transactions", labels)
}

#[test]
fn sighup_moves_pushes_to_a_new_target_and_a_bad_config_is_refused() {
    let first = pushgateway(None);
    let second = pushgateway(None);
    let site = site_with_transactions();
    let port = free_port();
    let scrape = format!("[scrape]\nlisten = \"127.0.0.1:{port}\"\n");
    let config = site.config("300ms", &format!("{scrape}[[pushgateway]]\nurl = \"http://127.0.0.1:{}\"\n", first.port));
    let agent = Running::start(&config, port);
    let express = [("api", "Mpesa Express"), ("status", "Pending")];
    wait_for("pushes to the first gateway", DEADLINE, || gateway_value(first.port, &express));

    site.config(
        "300ms",
        &format!("[labels]\nsite = \"b\"\n{scrape}[[pushgateway]]\nurl = \"http://127.0.0.1:{}\"\n", second.port),
    );
    sighup(&agent);
    wait_for("pushes to the second gateway, with the new label", DEADLINE, || {
        gateway_value(second.port, &[("api", "Mpesa Express"), ("status", "Pending"), ("site", "b")])
    });
    let metrics = local(&agent);
    assert_eq!(value_of(&metrics, "apimetrics_agent_config_last_reload_successful", &[]), Some(1.0));
    let first_target = format!("http://127.0.0.1:{}/metrics/job/apimetrics", first.port);
    assert!(
        value_of(&metrics, "apimetrics_agent_pushes_total", &[("target", &first_target), ("result", "success")])
            .is_none(),
        "a removed target leaves /metrics"
    );

    std::fs::write(
        &config,
        std::fs::read_to_string(&config).unwrap().replace("interval = \"300ms\"", "interval = \"soon\""),
    )
    .unwrap();
    sighup(&agent);
    wait_for("the refusal on /metrics", DEADLINE, || {
        (value_of(&local(&agent), "apimetrics_agent_config_last_reload_successful", &[("site", "b")])? == 0.0)
            .then_some(())
    });
    assert!(agent.log().contains("reload refused; running on as before"), "{}", agent.log());
    assert!(agent.log().contains("schedule.interval: \"soon\" is not a duration"), "{}", agent.log());
    // Still ticking and pushing on the last good config.
    let before = agent.ticks("success");
    let page = agent.wait_for_ticks("success", before + 3.0);
    let on_the_last_good_config = [("result", "success"), ("site", "b")];
    assert!(value_of(&parse_exposition(&page), "apimetrics_agent_ticks_total", &on_the_last_good_config).is_some());
    let (status, log) = agent.terminate();
    assert_eq!(status.code(), Some(0), "{log}");
}

#[test]
fn post_reload_answers_how_it_went() {
    let site = site_with_transactions();
    let port = free_port();
    let good = format!("[scrape]\nlisten = \"127.0.0.1:{port}\"\nenable_reload = true\n");
    let config = site.config("300ms", &good);
    let agent = Running::start(&config, port);
    let post = || {
        let response = reqwest::blocking::Client::new().post(agent.url("/-/reload")).send().unwrap();
        (response.status().as_u16(), response.text().unwrap())
    };
    site.config("300ms", &format!("{good}[labels]\nsite = \"nairobi-1\"\n"));
    assert_eq!(post(), (200, "reloaded\n".to_owned()));
    wait_for("the new label on /metrics", DEADLINE, || {
        value_of(
            &local(&agent),
            "api_transactions",
            &[("api", "Mpesa B2C"), ("status", "Failed"), ("site", "nairobi-1")],
        )
    });

    site.config("300ms", &format!("{good}[labels]\napi = \"clash\"\n"));
    let (status, body) = post();
    assert_eq!(status, 500);
    assert!(body.starts_with("reload refused: invalid configuration"), "{body}");
    assert!(body.contains("labels.api: collides with a label of the aggregate"), "{body}");
    let (status, _) = agent.terminate();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_reload_to_another_state_dir_moves_the_agents_claim_or_is_refused() {
    let site = site_with_transactions();
    let port = free_port();
    let text = |state_dir: &str, port: u16| {
        format!(
            "[source]\ndatabase = \"app.sqlite3\"\n[schedule]\ninterval = \"300ms\"\n[agent]\nstate_dir = \"{state_dir}\"\n\
             [scrape]\nlisten = \"127.0.0.1:{port}\"\nenable_reload = true\n"
        )
    };
    let config = site.write_config("config.toml", &text("one", port));
    let agent = Running::start(&config, port);
    let pid = agent.child.id();
    let claimed = |state_dir: &str| {
        let output = run_agent(&site.write_config("probe.toml", &text(state_dir, 9)), &["check"]);
        stdout(&output).contains(&format!("in use by a running agent (pid {pid})"))
    };
    assert!(claimed("one"));
    let post = || {
        let response = reqwest::blocking::Client::new().post(agent.url("/-/reload")).send().unwrap();
        (response.status().as_u16(), response.text().unwrap())
    };
    site.write_config("config.toml", &text("two", port));
    assert_eq!(post(), (200, "reloaded\n".to_owned()));
    assert!(!claimed("one"), "the old state_dir is let go");
    assert!(claimed("two"), "the new one is held");

    // The same folder spelled another way is the same claim: still held after the reload.
    let absolute = site.directory.path().join("two");
    site.write_config("config.toml", &text(absolute.to_str().unwrap(), port));
    assert_eq!(post(), (200, "reloaded\n".to_owned()));
    assert!(claimed("two"), "the same folder, spelled absolutely, is still held");

    // A state_dir another agent holds: the reload is refused and the claim stays where it was.
    let other_port = free_port();
    let other = Running::start(&site.write_config("other.toml", &text("three", other_port)), other_port);
    site.write_config("config.toml", &text("three", port));
    let (status, body) = post();
    assert_eq!(status, 500, "{body}");
    let expected = format!("another agent (pid {}) is running on agent.state_dir", other.child.id());
    assert!(body.contains(&expected), "{body}");
    assert!(claimed("two"));
    for running in [agent, other] {
        let (status, log) = running.terminate();
        assert_eq!(status.code(), Some(0), "{log}");
    }
}

#[test]
fn a_remote_write_target_that_stays_keeps_its_backlog() {
    let site = site_with_transactions();
    let port = free_port();
    let unreachable = free_port();
    let target = |timeout: &str| {
        format!(
            "[scrape]\nlisten = \"127.0.0.1:{port}\"\n[[remote_write]]\nname = \"central\"\n\
             url = \"http://127.0.0.1:{unreachable}/api/v1/write\"\ntimeout = \"{timeout}\"\n"
        )
    };
    let config = site.config("300ms", &target("1s"));
    let agent = Running::start(&config, port);
    // Nothing reaches the receiver, so the queue on disk only ever grows; a reload that lost it
    // would show as a drop.
    let queued = || inspect(&site.directory.path().join("state/remote_write/central.sqlite3")).unwrap().n_samples;
    let before = wait_for("a backlog", DEADLINE, || Some(queued()).filter(|samples| *samples >= 21));
    site.config("300ms", &target("2s"));
    sighup(&agent);
    wait_for("the reload", DEADLINE, || agent.log().contains("reloaded the config").then_some(()));
    assert!(queued() >= before, "the backlog shrank across the reload");
    wait_for("the agent to report the kept backlog", DEADLINE, || {
        let backlog =
            value_of(&local(&agent), "apimetrics_agent_remote_write_backlog_samples", &[("target", "central")])?;
        (backlog >= before as f64).then_some(())
    });
    let (status, _) = agent.terminate();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_reload_relabels_the_served_aggregate_before_the_next_tick() {
    let site = site_with_transactions();
    let port = free_port();
    let scrape = format!("[scrape]\nlisten = \"127.0.0.1:{port}\"\nenable_reload = true\n");
    // One tick at start, the next an hour away: whatever changes on /metrics meanwhile is the reload's.
    let config = site.config("1h", &scrape);
    let agent = Running::start(&config, port);
    let express = [("api", "Mpesa Express"), ("status", "Pending")];
    wait_for("the first snapshot", DEADLINE, || value_of(&local(&agent), "api_transactions", &express));

    site.config("1h", &format!("[labels]\nsite = \"b\"\n{scrape}"));
    let response = reqwest::blocking::Client::new().post(agent.url("/-/reload")).send().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let metrics = local(&agent);
    let relabelled = [("api", "Mpesa Express"), ("status", "Pending"), ("site", "b")];
    assert_eq!(value_of(&metrics, "api_transactions", &relabelled), Some(3.0), "{metrics:?}");
    assert_eq!(value_of(&metrics, "apimetrics_agent_ticks_total", &[("result", "success"), ("site", "b")]), Some(1.0));
    let (status, log) = agent.terminate();
    assert_eq!(status.code(), Some(0), "{log}");
}
