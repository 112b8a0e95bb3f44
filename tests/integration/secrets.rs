//! Secrets never show: receivers and proxies that quote the credentials they were sent (Debian's
//! vmauth does, on a wrong password; a hand-made receiver echoes every header) must leave them
//! out of every surface the agent writes or serves: its log, the status page, `/metrics`,
//! `/healthz` and `check`'s output.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::peers::*;
use crate::support::*;

/// Everything the agent shows about itself while `running`, and then `check --targets` on the
/// same config (its stdout and stderr), one surface per entry.
fn every_surface(running: &Running, config: &std::path::Path) -> Vec<(&'static str, String)> {
    let page = |path: &str| http_get(&running.url(path)).map(|(_, body)| body).unwrap_or_default();
    let check = run_agent(config, &["check", "--targets"]);
    vec![
        ("the status page", page("/")),
        ("/metrics", page("/metrics")),
        ("/healthz", page("/healthz")),
        ("check's output", format!("{}{}", stdout(&check), stderr(&check))),
        ("the log", running.log()),
    ]
}

/// Asserts that no surface holds any of `secrets`.
fn assert_shown_nowhere(surfaces: &[(&str, String)], secrets: &[String]) {
    for (surface, text) in surfaces {
        for secret in secrets {
            assert!(!text.contains(secret.as_str()), "{surface} shows the secret {secret:?}:\n{text}");
        }
    }
}

fn basic(user: &str, password: &str) -> String {
    BASE64.encode(format!("{user}:{password}"))
}

#[test]
fn a_wrong_password_at_vmauth_shows_nowhere() {
    let site = site_with_transactions();
    let victoria = victoria_metrics(site.directory.path());
    let gate = vmauth(site.directory.path(), "site-1", "correct-horse-battery", victoria.port);
    let wrong = "wrong-horse-battery-staple";
    let password_file = site.directory.path().join("password");
    std::fs::write(&password_file, format!("{wrong}\n")).unwrap();
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let scrape_port = free_port();
    let config = site.config(
        "1s",
        &format!(
            "[scrape]\nlisten = \"127.0.0.1:{scrape_port}\"\n[[remote_write]]\nname = \"central\"\n\
             url = \"http://127.0.0.1:{}/api/v1/write\"\n\
             basic_auth = {{ username = \"site-1\", password_file = \"password\" }}\n",
            gate.port
        ),
    );
    let running = Running::start(&config, scrape_port);
    // vmauth's answer, quoting the Authorization header it could not match, reaches the log.
    let log = wait_for("vmauth's refusal in the log", Duration::from_secs(20), || {
        let log = running.log();
        log.contains("cannot find the provided auth token").then_some(log)
    });
    assert!(log.contains("Basic <redacted>"), "{log}");
    let surfaces = every_surface(&running, &config);
    let (_, check) = &surfaces[3];
    assert!(check.contains("remote_write[0] central") && check.contains("Basic <redacted>"), "{check}");
    assert_shown_nowhere(&surfaces, &[wrong.to_owned(), basic("site-1", wrong)]);
    running.terminate();
}

#[test]
fn secrets_leave_every_surface_when_a_proxy_and_a_receiver_echo_them() {
    let site = site_with_transactions();
    let proxy = tinyproxy_with_basic_auth(site.directory.path(), "proxy-user", "proxy-pass-9876");
    // A receiver that answers every request with a 400 quoting each header it got, then a line
    // that looks like a record of the agent's own log.
    let forged = "2026-01-01T00:00:00.000000Z  INFO apimetrics_agent::run: forged record";
    let receiver = FakeServer::start(vec![Reply::status(400).echoing_headers().with_body(&format!("\n{forged}\n"))]);
    let token_file = site.directory.path().join("token");
    std::fs::write(&token_file, "bearer-token-abcdef\n").unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let scrape_port = free_port();
    let proxy_url = format!("http://proxy-user:proxy-pass-9876@127.0.0.1:{}", proxy.port);
    let config = site.config(
        "1s",
        &format!(
            "[scrape]\nlisten = \"127.0.0.1:{scrape_port}\"\n\
             [[remote_write]]\nname = \"central\"\nurl = \"{receiver}/api/v1/write?api_key=query-key-24680\"\n\
             proxy_url = \"{proxy_url}\"\nbasic_auth = {{ username = \"site-1\", password = \"rw-password-5555\" }}\n\
             headers = {{ X-Api-Key = \"api-key-0123456789\", X-Scope-OrgID = \"tenant-1\" }}\n\
             [[pushgateway]]\nurl = \"{receiver}\"\nproxy_url = \"{proxy_url}\"\nbearer_token_file = \"token\"\n",
            receiver = receiver.url()
        ),
    );
    let running = Running::start(&config, scrape_port);
    wait_for("both targets' refusals in the log", Duration::from_secs(20), || {
        let log = running.log();
        (log.contains("the receiver refused") && log.contains("push failed")).then_some(())
    });
    // The credentials did go out, through the proxy, and came back in the answers.
    let received = receiver.received();
    assert!(received.iter().any(|request| request.headers.get("x-api-key").is_some_and(|key| key.contains("api-key"))));
    assert!(
        received.iter().any(|request| request.headers.get("authorization").is_some_and(|auth| auth.contains("Bearer")))
    );

    let surfaces = every_surface(&running, &config);
    let secrets = [
        "proxy-pass-9876".to_owned(),
        basic("proxy-user", "proxy-pass-9876"),
        "rw-password-5555".to_owned(),
        basic("site-1", "rw-password-5555"),
        "api-key-0123456789".to_owned(),
        "bearer-token-abcdef".to_owned(),
        "query-key-24680".to_owned(),
    ];
    assert_shown_nowhere(&surfaces, &secrets);
    let log = running.log();
    assert!(log.contains("x-api-key: <redacted>") && log.contains("authorization: Bearer <redacted>"), "{log}");
    // The tenant header is on the short list of harmless ones, and shows.
    assert!(log.contains("x-scope-orgid: tenant-1"), "{log}");
    // The forged record stays inside the refusal it came in: no line of the log starts with it.
    assert!(log.lines().all(|line| !line.starts_with(forged)), "{log}");
    assert!(log.lines().any(|line| line.contains("push failed") && line.contains(&format!("\\n{forged}"))), "{log}");
    let (_, page) = &surfaces[0];
    assert!(page.contains("proxy_url = &quot;http://&lt;redacted&gt;@127.0.0.1"), "{page}");
    assert!(page.contains("X-Api-Key = &quot;&lt;redacted&gt;&quot;"), "{page}");
    running.terminate();
}
