//! The status page in a real browser: Debian's headless Chromium loads `/` from a running agent;
//! the test reads what it rendered and keeps a phone-sized screenshot for a person to look at
//! (`target/tmp/status-page.png`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::peers::*;
use crate::support::*;

const DEADLINE: Duration = Duration::from_secs(30);

/// Headless Chromium with this machine's closed network in mind, in a throwaway profile.
fn chromium(profile: &Path) -> Command {
    let mut command = Command::new("chromium");
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=412,1400",
    ]);
    command.arg(format!("--user-data-dir={}", profile.display()));
    command
}

#[test]
fn the_status_page_shows_the_aggregate_the_targets_and_the_config_without_secrets() {
    let site = site_with_transactions();
    let port = free_port();
    let config = site.config(
        "500ms",
        &format!(
            "[labels]\nsite = \"nairobi-1\"\n[scrape]\nlisten = \"127.0.0.1:{port}\"\n\
             [[pushgateway]]\nurl = \"http://127.0.0.1:{}\"\ntimeout = \"300ms\"\n\
             basic_auth = {{ username = \"agent\", password = \"hunter2-secret\" }}\n\
             [[remote_write]]\nname = \"central\"\nurl = \"http://127.0.0.1:{}/api/v1/write\"\ntimeout = \"300ms\"\n",
            free_port(),
            free_port()
        ),
    );
    let agent = Running::start(&config, port);
    wait_for("a failed push and a backlog", DEADLINE, || {
        let metrics = parse_exposition(&agent.metrics());
        let backlog = value_of(&metrics, "apimetrics_agent_remote_write_backlog_samples", &[("target", "central")])?;
        let failed_pushes = metrics
            .iter()
            .filter(|(name, labels, value)| {
                name == "apimetrics_agent_pushes_total"
                    && labels.get("result").map(String::as_str) == Some("failure")
                    && labels.get("target").is_some_and(|target| target.starts_with("http://"))
                    && *value > 0.0
            })
            .count();
        (backlog > 0.0 && failed_pushes == 1).then_some(())
    });

    let profile = tempfile::tempdir().unwrap();
    let dumped = chromium(profile.path())
        .arg("--dump-dom")
        .arg(agent.url("/"))
        .output()
        .expect("chromium (tests/run installs it)");
    assert!(dumped.status.success(), "{}", stderr(&dumped));
    let page = stdout(&dumped);
    assert!(page.contains("healthy: the last tick succeeded"), "{page}");
    assert!(page.contains("<th>Mpesa Express</th><td class=\"n\">0</td><td class=\"n\">3</td>"), "{page}");
    assert!(page.contains("<th>Mpesa B2C</th><td class=\"n\">2</td><td class=\"n\">0</td>"), "{page}");
    assert!(page.contains("5 transactions since"), "{page}");
    assert!(page.contains("<td>central</td>"), "{page}");
    assert!(page.contains("cannot connect"), "{page}");
    assert!(page.contains("samples, oldest"), "{page}");
    assert!(page.contains("password = \"&lt;redacted&gt;\""), "{page}");
    assert!(!page.contains("hunter2-secret"), "the page shows a secret: {page}");
    assert!(page.contains("http-equiv=\"refresh\""), "{page}");
    // The last 24 hours as an inline chart, a line a status, and a table for browsers without SVG.
    assert!(page.contains("<svg id=\"history\""), "{page}");
    for status in ["Failed", "Pending"] {
        assert!(page.contains(&format!("<polyline data-status=\"{status}\"")), "{page}");
    }
    assert!(page.contains("<table id=\"history-table\">"), "{page}");
    assert!(!page.contains("<script") && !page.contains("src=\"http"), "the page loads nothing: {page}");

    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let taken = chromium(profile.path())
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg(agent.url("/"))
        .output()
        .unwrap();
    assert!(taken.status.success(), "{}", stderr(&taken));
    let png = std::fs::read(&screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "not a screenshot of a page");
}
