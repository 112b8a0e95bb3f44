//! The agent's log as a person and a machine read it: one record per line in text whatever a
//! value holds, one JSON object per line with `--log-format json`.

use crate::peers::{FakeServer, Reply};
use crate::support::*;

/// A receiver whose error answer holds a line break and a forged log record after it.
fn receiver_answering_a_forged_line() -> FakeServer {
    let forged = "bad request\n2026-11-25T00:00:00Z  INFO apimetrics_agent::run: all is well, forged";
    FakeServer::start(vec![Reply::status(400).with_body(forged)])
}

#[test]
fn a_text_record_stays_on_one_line_whatever_a_value_holds() {
    let site = site_with_transactions();
    let receiver = receiver_answering_a_forged_line();
    let config = site.config("15s", &format!("[[pushgateway]]\nurl = \"{}\"\n", receiver.url()));
    let output = agent(&config).arg("once").stdin(std::process::Stdio::null()).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let log = stderr(&output);
    let push_failed = log.lines().find(|line| line.contains("push failed")).unwrap_or_else(|| panic!("{log}"));
    assert!(push_failed.contains("bad request\\n2026-11-25T00:00:00Z  INFO"), "{push_failed}");
    // The closing error, which quotes the answer too.
    assert!(log.contains("error: 1 of 1 push targets failed:\n  http://"), "{log}");
    assert!(!log.lines().any(|line| line.starts_with("2026-11-25T00:00:00Z")), "a forged record:\n{log}");
}

#[test]
fn a_refused_reload_lists_every_problem_in_one_record() {
    let site = site_with_transactions();
    let port = free_port();
    let listen = format!("[scrape]\nlisten = \"127.0.0.1:{port}\"\n");
    let config = site.config("1s", &listen);
    let agent = Running::start(&config, port);
    site.config("1x", &format!("{listen}[metric]\nname = \"bad-name\"\n"));
    let status = std::process::Command::new("kill").args(["-HUP", &agent.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let refused = wait_for("the refused reload in the log", std::time::Duration::from_secs(20), || {
        agent.log().lines().find(|line| line.contains("reload refused")).map(str::to_owned)
    });
    assert!(refused.contains("(2 problems):\\n  line "), "{refused}");
    assert!(refused.contains("schedule.interval") && refused.contains("metric.name"), "{refused}");
    let (_, log) = agent.terminate();
    assert!(log.lines().all(|line| line.starts_with("20")), "every line starts a record:\n{log}");
}

#[test]
fn json_logs_are_one_object_per_line_with_time_level_message_and_fields() {
    let site = site_with_transactions();
    let receiver = receiver_answering_a_forged_line();
    let config = site.config("15s", &format!("[[pushgateway]]\nurl = \"{}\"\n", receiver.url()));
    for switch in [&["--log-format", "json"][..], &[]] {
        let mut command = agent(&config);
        command.args(switch).arg("once").stdin(std::process::Stdio::null());
        if switch.is_empty() {
            command.env("APIMETRICS_LOG_FORMAT", "json");
        }
        let output = command.output().unwrap();
        let log = stderr(&output);
        // Every line but `main`'s closing error is a JSON object.
        let records: Vec<serde_json::Value> = log
            .lines()
            .filter(|line| !line.starts_with("error: ") && !line.starts_with("  "))
            .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line:?}")))
            .collect();
        let tick = records.iter().find(|record| record["message"] == "tick done").unwrap_or_else(|| panic!("{log}"));
        assert_eq!(tick["level"], "INFO");
        assert_eq!(tick["n_rows_in_window"], 5);
        assert!(tick["timestamp"].as_str().is_some_and(|at| at.starts_with("20")), "{tick}");
        let failed = records.iter().find(|record| record["message"] == "push failed; not retrying until the next tick");
        let failed = failed.unwrap_or_else(|| panic!("{log}"));
        assert_eq!(failed["level"], "WARN");
        assert!(failed["reason"].as_str().unwrap().contains("bad request\\n2026"), "{failed}");
    }
    let output = agent(&config).args(["--log-format", "xml", "check"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("\"xml\" is not a log format: \"text\" or \"json\""), "{}", stderr(&output));
}

#[test]
fn the_config_sets_the_log_format_and_the_command_line_wins() {
    let site = site_with_transactions();
    let config = site.config("15s", "[log]\nformat = \"json\"\n");
    let output = agent(&config).args(["once", "--dry-run"]).output().unwrap();
    let log = stderr(&output);
    assert!(log.lines().all(|line| serde_json::from_str::<serde_json::Value>(line).is_ok()), "{log}");
    assert!(log.contains("\"message\":\"tick done\""), "{log}");
    let output = agent(&config).args(["--log-format", "text", "once", "--dry-run"]).output().unwrap();
    let log = stderr(&output);
    assert!(log.lines().any(|line| line.contains(" INFO ") && line.contains("tick done")), "{log}");

    let config = site.config("15s", "[log]\nformat = \"yaml\"\n");
    assert_config_refused(&config, &["log.format: \"yaml\" is not a log format: \"text\" or \"json\""]);
}
