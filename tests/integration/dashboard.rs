//! The Grafana dashboard in contrib/grafana/: a valid dashboard, and every PromQL expression in
//! it (variables given a value) evaluates without an error against Debian's Prometheus, which
//! the agent has written to; the aggregate's panels show what the agent sent.

use std::collections::BTreeSet;
use std::path::Path;

use crate::peers::{instant_query, prometheus_receiver};
use crate::support::*;

fn dashboard() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/grafana/apimetrics.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("contrib/grafana/apimetrics.json is JSON")
}

/// Every expression of a panel's targets, with the panel's title.
fn expressions(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("every target has an expr");
            found.push((panel["title"].as_str().unwrap().to_owned(), expr.to_owned()));
        }
    }
    found
}

/// `expr` with Grafana's variables given values, as Grafana would send it.
fn with_values(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m").replace("$job", ".*").replace("$api", ".*")
}

/// Prometheus's answer to an instant query: its status, the number of series, and the answer.
fn evaluate(port: u16, promql: &str) -> (String, usize, String) {
    let response = instant_query(port, promql);
    let n_series = response["data"]["result"].as_array().map_or(0, Vec::len);
    (response["status"].as_str().unwrap_or_default().to_owned(), n_series, response.to_string())
}

#[test]
fn the_dashboard_is_valid_and_every_expression_evaluates_against_prometheus() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "apimetrics-agent");
    assert!(dashboard["title"].is_string() && dashboard["schemaVersion"].as_u64().unwrap() >= 36);
    let panels = dashboard["panels"].as_array().unwrap();
    let ids: BTreeSet<u64> = panels.iter().map(|panel| panel["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    for panel in panels {
        let position = &panel["gridPos"];
        for key in ["x", "y", "w", "h"] {
            assert!(position[key].is_u64(), "{}: gridPos.{key}", panel["title"]);
        }
        assert!(position["x"].as_u64().unwrap() + position["w"].as_u64().unwrap() <= 24, "{}", panel["title"]);
        if panel["type"] != "row" {
            assert_eq!(panel["datasource"]["uid"], "${datasource}", "{}", panel["title"]);
            assert!(!panel["targets"].as_array().unwrap().is_empty(), "{}", panel["title"]);
        }
    }
    let variables: Vec<&str> =
        dashboard["templating"]["list"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(variables, ["datasource", "job", "api"]);
    let expressions = expressions(&dashboard);
    assert!(expressions.len() >= 10, "{expressions:?}");
    for (title, expr) in &expressions {
        let given = with_values(expr);
        let unknown: Vec<&str> = given.match_indices('$').map(|(at, _)| &given[at..]).collect();
        assert!(unknown.is_empty(), "{title}: a variable the test gives no value: {unknown:?}");
    }

    // The agent writes to a real Prometheus, as a site's agent would.
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
    wait_for("Prometheus to hold the agent's samples", std::time::Duration::from_secs(30), || {
        (evaluate(port, "api_transactions").1 == 4).then_some(())
    });

    for (title, expr) in &expressions {
        let (status, n_series, body) = evaluate(port, &with_values(expr));
        assert_eq!(status, "success", "{title}: {expr}: {body}");
        // The aggregate's panels show what the agent sent; the agent's own health comes from
        // scraping /metrics, which this Prometheus does not do, so those may be empty.
        if expr.contains("api_transactions") {
            assert!(n_series > 0, "{title}: {expr} found nothing: {body}");
        }
    }
    // The variables' queries: Grafana's label_values(selector, label) asks for the selector's series.
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        let Some(definition) = variable["definition"].as_str() else { continue };
        let selector = definition
            .strip_prefix("label_values(")
            .and_then(|rest| rest.rsplit_once(", "))
            .map(|(selector, _)| selector)
            .unwrap_or_else(|| panic!("{definition}"));
        let (status, n_series, body) = evaluate(port, &with_values(selector));
        assert!(status == "success" && n_series == 4, "{definition}: {body}");
    }
}
