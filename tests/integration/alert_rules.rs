//! The Prometheus alert rules in contrib/prometheus/: promtool accepts them, their unit tests
//! make every alert fire and resolve, and those tests fail when a rule or an expectation is wrong.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::*;

fn contrib(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/prometheus").join(file)
}

fn promtool(arguments: &[&str], file: &Path) -> (Output, String) {
    let output = Command::new("promtool")
        .args(arguments)
        .arg(file)
        .output()
        .expect("promtool (Debian package prometheus; tests/run installs it)");
    let said = format!("{}{}", stdout(&output), stderr(&output));
    (output, said)
}

/// The alert names a rules file defines, in order.
fn alert_names(rules: &str) -> Vec<String> {
    rules.lines().filter_map(|line| line.trim().strip_prefix("- alert: ")).map(str::to_owned).collect()
}

/// One `alert_rule_test` entry: at `eval_time`, whether `alert` is expected to fire.
struct Expectation {
    alert: String,
    minute: u32,
    fires: bool,
}

/// The expectations of a promtool test file written as alerts_test.yml is (eval_time in minutes,
/// then alertname, then exp_alerts).
fn expectations(tests: &str) -> Vec<Expectation> {
    let mut found = Vec::new();
    let (mut minute, mut alert) = (None, None);
    for line in tests.lines().map(str::trim) {
        if let Some(eval_time) = line.strip_prefix("- eval_time: ") {
            minute = Some(eval_time.strip_suffix('m').and_then(|m| m.parse().ok()).expect("eval_time in minutes"));
        } else if let Some(name) = line.strip_prefix("alertname: ") {
            alert = Some(name.to_owned());
        } else if let Some(expected) = line.strip_prefix("exp_alerts:") {
            let (minute, alert) = (minute.take().unwrap(), alert.take().unwrap());
            found.push(Expectation { alert, minute, fires: expected.trim() != "[]" });
        }
    }
    found
}

/// A directory holding `alerts.yml` and `alerts_test.yml` as given.
fn rules_and_tests(rules: &str, tests: &str) -> tempfile::TempDir {
    let directory = tempfile::tempdir().unwrap();
    std::fs::write(directory.path().join("alerts.yml"), rules).unwrap();
    std::fs::write(directory.path().join("alerts_test.yml"), tests).unwrap();
    directory
}

#[test]
fn promtool_accepts_the_shipped_alert_rules() {
    let (checked, said) = promtool(&["check", "rules"], &contrib("alerts.yml"));
    assert!(checked.status.success(), "promtool check rules:\n{said}");
    let n_alerts = alert_names(&std::fs::read_to_string(contrib("alerts.yml")).unwrap()).len();
    assert!(said.contains(&format!("SUCCESS: {n_alerts} rules found")), "{said}");
}

#[test]
fn every_shipped_alert_fires_and_resolves_in_its_unit_tests() {
    let (tested, said) = promtool(&["test", "rules"], &contrib("alerts_test.yml"));
    assert!(tested.status.success(), "promtool test rules:\n{said}");

    // Each alert is tested firing, then resolved at a later time.
    let rules = std::fs::read_to_string(contrib("alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(contrib("alerts_test.yml")).unwrap();
    let expectations = expectations(&tests);
    let names = alert_names(&rules);
    assert!(names.len() >= 10, "{names:?}");
    for name in names {
        let fired_at = expectations.iter().filter(|e| e.alert == name && e.fires).map(|e| e.minute).min();
        let resolved_after = fired_at
            .is_some_and(|fired_at| expectations.iter().any(|e| e.alert == name && !e.fires && e.minute > fired_at));
        assert!(resolved_after, "{name} is not tested firing and then resolved in alerts_test.yml");
    }
}

#[test]
fn a_rule_broken_so_it_never_fires_fails_the_shipped_unit_tests() {
    let rules = std::fs::read_to_string(contrib("alerts.yml")).unwrap();
    let broken = rules.replace(r#"expr: up{job="apimetrics"} == 0"#, r#"expr: up{job="apimetrics"} == 2"#);
    assert_ne!(broken, rules, "the rule to break was not found");
    let directory = rules_and_tests(&broken, &std::fs::read_to_string(contrib("alerts_test.yml")).unwrap());

    let (tested, said) = promtool(&["test", "rules"], &directory.path().join("alerts_test.yml"));
    assert!(!tested.status.success(), "promtool passed a rule that never fires:\n{said}");
    assert!(said.contains("FAILED") && said.contains("alertname: ApimetricsAgentDown, time: 8m"), "{said}");
}

#[test]
fn an_expected_alert_that_does_not_match_fails_the_unit_tests() {
    let tests = "rule_files: [alerts.yml]\n\
                 evaluation_interval: 1m\n\
                 tests:\n\
                 \x20 - interval: 1m\n\
                 \x20   input_series:\n\
                 \x20     - series: 'up{job=\"apimetrics\", instance=\"site-a:9184\"}'\n\
                 \x20       values: '0x10'\n\
                 \x20   alert_rule_test:\n\
                 \x20     - eval_time: 8m\n\
                 \x20       alertname: ApimetricsAgentDown\n\
                 \x20       exp_alerts:\n\
                 \x20         - exp_labels: {severity: warning, job: apimetrics, instance: \"site-a:9184\"}\n";
    let directory = rules_and_tests(&std::fs::read_to_string(contrib("alerts.yml")).unwrap(), tests);

    let (tested, said) = promtool(&["test", "rules"], &directory.path().join("alerts_test.yml"));
    assert!(!tested.status.success(), "promtool passed a wrong expectation:\n{said}");
    assert!(said.contains("FAILED") && said.contains(r#"severity="critical""#), "{said}");
}
