//! The Pushgateway outlet against Debian's prometheus-pushgateway (exact values, PUT and POST,
//! base64 grouping keys, delete on shutdown, basic auth and TLS with client certificates,
//! tinyproxy between), and against a hand-made server for retries, timeouts and the wire.

use std::path::Path;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use crate::peers::*;
use crate::support::*;

const DEADLINE: Duration = Duration::from_secs(20);

fn gateway_samples(port: u16) -> Vec<Sample> {
    let (status, body) = http_get(&format!("http://127.0.0.1:{port}/metrics")).expect("the gateway answers");
    assert_eq!(status, 200);
    parse_exposition(&body)
}

#[test]
fn once_pushes_exact_values_and_put_replaces_the_whole_group() {
    let gateway = pushgateway(None);
    let site = site_with_transactions();
    let config = site.config(
        "15s",
        &format!(
            "[labels]\nsite = \"nairobi-1\"\n[[pushgateway]]\nurl = \"http://127.0.0.1:{}/\"\njob = \"apimetrics payments\"\n\
             grouping = {{ instance = \"nairobi/1\", zone = \"\" }}\n",
            gateway.port
        ),
    );
    let output = run_agent(&config, &["once"]);
    assert!(output.status.success(), "{}", stderr(&output));

    let samples = gateway_samples(gateway.port);
    let group = [("job", "apimetrics payments"), ("instance", "nairobi/1"), ("zone", ""), ("site", "nairobi-1")];
    let series = |api: &str, status: &str| {
        let mut labels = group.to_vec();
        labels.extend([("api", api), ("status", status)]);
        value_of(&samples, "api_transactions", &labels)
    };
    assert_eq!(series("Mpesa Express", "Pending"), Some(3.0));
    assert_eq!(series("Mpesa Express", "Failed"), Some(0.0));
    assert_eq!(series("Mpesa B2C", "Failed"), Some(2.0));
    assert_eq!(series("Mpesa B2C", "Pending"), Some(0.0));
    assert_eq!(value_of(&samples, "apimetrics_agent_rows_in_window", &group), Some(5.0));
    assert!(value_of(&samples, "push_time_seconds", &group[..3]).unwrap() > 0.0);

    // The B2C API goes away: a PUT replaces the group, so its series vanish at the gateway too.
    site.connect()
        .execute_batch("PRAGMA foreign_keys = OFF; DELETE FROM apiMetrics_api WHERE name = 'Mpesa B2C';")
        .unwrap();
    let output = run_agent(&config, &["once"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let samples = gateway_samples(gateway.port);
    let remaining: Vec<_> = samples
        .iter()
        .filter(|(name, labels, _)| name == "api_transactions" && labels["job"] == "apimetrics payments")
        .map(|(_, labels, value)| (labels["api"].clone(), labels["status"].clone(), *value))
        .collect();
    assert_eq!(
        remaining,
        [("Mpesa Express".into(), "Failed".into(), 0.0), ("Mpesa Express".into(), "Pending".into(), 3.0)]
    );
}

/// Puts `text` into the group `path` of the gateway at `port`, as another pusher would.
fn push_other(port: u16, path: &str, text: &str) {
    let response = reqwest::blocking::Client::new()
        .put(format!("http://127.0.0.1:{port}{path}"))
        .body(text.to_owned())
        .send()
        .unwrap();
    assert!(response.status().is_success(), "{:?}", response.text());
}

#[test]
fn post_replaces_only_the_families_it_pushes_and_put_the_whole_group() {
    let gateway = pushgateway(None);
    let site = site_with_transactions();
    let other = ("other_metric", [("job", "apimetrics")]);
    for (method, other_survives) in [("post", true), ("put", false)] {
        push_other(gateway.port, "/metrics/job/apimetrics", "# TYPE other_metric gauge\nother_metric 42\n");
        let config = site.config(
            "15s",
            &format!("[[pushgateway]]\nurl = \"http://127.0.0.1:{}\"\nmethod = \"{method}\"\n", gateway.port),
        );
        let output = run_agent(&config, &["once"]);
        assert!(output.status.success(), "{}", stderr(&output));
        let samples = gateway_samples(gateway.port);
        assert_eq!(
            value_of(
                &samples,
                "api_transactions",
                &[("job", "apimetrics"), ("api", "Mpesa Express"), ("status", "Pending")]
            ),
            Some(3.0),
            "{method}"
        );
        assert_eq!(value_of(&samples, other.0, &other.1).is_some(), other_survives, "{method}");
    }
}

#[test]
fn run_pushes_every_tick_and_deletes_the_group_on_shutdown() {
    let gateway = pushgateway(None);
    let site = site_with_transactions();
    let port = free_port();
    let config = site.config(
        "200ms",
        &format!(
            "[scrape]\nlisten = \"127.0.0.1:{port}\"\n[[pushgateway]]\nurl = \"http://127.0.0.1:{}\"\n\
             grouping = {{ instance = \"site-a\" }}\ndelete_on_shutdown = true\n",
            gateway.port
        ),
    );
    let agent = Running::start(&config, port);
    let group = [("job", "apimetrics"), ("instance", "site-a"), ("api", "Mpesa Express"), ("status", "Pending")];
    wait_for("the first push", DEADLINE, || value_of(&gateway_samples(gateway.port), "api_transactions", &group));

    let express = site
        .connect()
        .query_row("SELECT id FROM apiMetrics_api WHERE name = 'Mpesa Express'", [], |row| row.get(0))
        .unwrap();
    site.add_transactions(4, express, 1, &hours_ago(0.1));
    wait_for("the next ticks' pushes", DEADLINE, || {
        (value_of(&gateway_samples(gateway.port), "api_transactions", &group)? == 7.0).then_some(())
    });
    let metrics = agent.metrics();
    let target = format!("http://127.0.0.1:{}/metrics/job/apimetrics/instance/site-a", gateway.port);
    let local = parse_exposition(&metrics);
    assert!(
        value_of(&local, "apimetrics_agent_pushes_total", &[("target", &target), ("result", "success")]).unwrap()
            >= 2.0
    );
    assert!(value_of(&local, "apimetrics_agent_push_last_success_timestamp_seconds", &[("target", &target)]).is_some());
    assert!(value_of(&local, "apimetrics_agent_push_duration_seconds", &[("target", &target)]).is_some());

    let (status, log) = agent.terminate();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("deleted the group on shutdown"), "{log}");
    let left: Vec<_> = gateway_samples(gateway.port)
        .into_iter()
        .filter(|(_, labels, _)| labels.get("instance").map(String::as_str) == Some("site-a"))
        .collect();
    assert!(left.is_empty(), "the group is still there: {left:?}");
}

/// A private CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
fn write_certificates(directory: &Path) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(directory.join("ca.pem"), ca.pem()).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    for (name, names, purpose) in [
        ("server", vec!["127.0.0.1".to_owned(), "localhost".to_owned()], ExtendedKeyUsagePurpose::ServerAuth),
        ("client", vec!["agent.example".to_owned()], ExtendedKeyUsagePurpose::ClientAuth),
    ] {
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(directory.join(format!("{name}.pem")), certificate.pem()).unwrap();
        std::fs::write(directory.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

#[test]
fn basic_auth_and_tls_with_a_client_certificate_reach_a_locked_down_gateway() {
    let site = site_with_transactions();
    let directory = site.directory.path();
    write_certificates(directory);
    let web_config = directory.join("web.yml");
    std::fs::write(
        &web_config,
        format!(
            "tls_server_config:\n  cert_file: {0}/server.pem\n  key_file: {0}/server.key\n  \
             client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {0}/ca.pem\n\
             basic_auth_users:\n  agent: {1}\n",
            directory.display(),
            bcrypt::hash("s3cret-pass", 4).unwrap()
        ),
    )
    .unwrap();
    let gateway = pushgateway(Some(&web_config));
    std::fs::write(directory.join("push.pass"), "s3cret-pass\n").unwrap();
    std::fs::write(directory.join("wrong.pass"), "not-the-pass\n").unwrap();
    let target = |password_file: &str, tls: &str| {
        format!(
            "[[pushgateway]]\nurl = \"https://127.0.0.1:{}\"\n\
             basic_auth = {{ username = \"agent\", password_file = \"{password_file}\" }}\ntls = {{ {tls} }}\n",
            gateway.port
        )
    };
    let full_tls = "ca_file = \"ca.pem\", cert_file = \"client.pem\", key_file = \"client.key\"";

    let config = site.config("15s", &target("push.pass", full_tls));
    let output = run_agent(&config, &["once"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let read_back = reqwest::blocking::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&std::fs::read(directory.join("ca.pem")).unwrap()).unwrap()])
        .identity(
            reqwest::Identity::from_pem(
                &[
                    std::fs::read(directory.join("client.pem")).unwrap(),
                    std::fs::read(directory.join("client.key")).unwrap(),
                ]
                .concat(),
            )
            .unwrap(),
        )
        .build()
        .unwrap()
        .get(format!("https://127.0.0.1:{}/metrics", gateway.port))
        .basic_auth("agent", Some("s3cret-pass"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let samples = parse_exposition(&read_back);
    assert_eq!(value_of(&samples, "api_transactions", &[("api", "Mpesa B2C"), ("status", "Failed")]), Some(2.0));

    // A wrong password is refused once, not retried, and never printed.
    let config = site.config("15s", &target("wrong.pass", full_tls));
    let output = run_agent(&config, &["once"]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("1 of 1 push targets failed") && message.contains("HTTP 401"), "{message}");
    assert_eq!(message.matches("push failed").count(), 1, "a 401 is not retried: {message}");
    assert!(!message.contains("not-the-pass") && !message.contains("s3cret-pass"), "{message}");

    // Without the client certificate the gateway will not talk at all.
    let config = site.config("15s", &target("push.pass", "ca_file = \"ca.pem\""));
    let output = run_agent(&config, &["once"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("push targets failed"), "{}", stderr(&output));
}

#[test]
fn pushes_go_through_a_forward_proxy() {
    let gateway = pushgateway(None);
    let site = site_with_transactions();
    let (proxy, proxy_log) = tinyproxy(site.directory.path());
    let config = site.config(
        "15s",
        &format!(
            "[[pushgateway]]\nurl = \"http://127.0.0.1:{}\"\nproxy_url = \"http://127.0.0.1:{}\"\n",
            gateway.port, proxy.port
        ),
    );
    let output = run_agent(&config, &["once"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let samples = gateway_samples(gateway.port);
    assert_eq!(value_of(&samples, "api_transactions", &[("api", "Mpesa Express"), ("status", "Pending")]), Some(3.0));
    let logged = std::fs::read_to_string(&proxy_log).unwrap();
    assert!(logged.contains(&format!("PUT http://127.0.0.1:{}/metrics/job/apimetrics", gateway.port)), "{logged}");

    // Without proxy_url, HTTP_PROXY from the environment applies, as operators expect.
    let without = site.write_config(
        "env-proxy.toml",
        &format!(
            "[source]\ndatabase = \"app.sqlite3\"\n[schedule]\ninterval = \"15s\"\n\
             [[pushgateway]]\nurl = \"http://127.0.0.1:{}\"\ngrouping = {{ via = \"env\" }}\n",
            gateway.port
        ),
    );
    let output = agent(&without)
        .arg("once")
        .env("HTTP_PROXY", format!("http://127.0.0.1:{}", proxy.port))
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let logged = std::fs::read_to_string(&proxy_log).unwrap();
    assert!(
        logged.contains(&format!("PUT http://127.0.0.1:{}/metrics/job/apimetrics/via/env", gateway.port)),
        "{logged}"
    );

    // With the proxy gone the push fails: it really went through the proxy.
    proxy.stop();
    let output = run_agent(&config, &["once"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("cannot connect"), "{}", stderr(&output));
}

fn fake_target(server: &FakeServer, extra: &str) -> String {
    format!("[[pushgateway]]\nurl = \"{}/prefix\"\njob = \"a/b\"\n{extra}", server.url())
}

#[test]
fn a_500_is_retried_with_the_same_body_and_the_wire_is_what_a_gateway_expects() {
    let server = FakeServer::start(vec![Reply::status(500).with_body("try later"), Reply::status(200)]);
    let site = site_with_transactions();
    std::fs::write(site.directory.path().join("token"), "tok-123\n").unwrap();
    let config = site.config(
        "15s",
        &fake_target(&server, "bearer_token_file = \"token\"\nheaders = { \"X-Scope-OrgID\" = \"site-1\" }\n"),
    );
    let output = run_agent(&config, &["once"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let received = server.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].body, received[1].body);
    let request = &received[1];
    assert_eq!(request.method, "PUT");
    assert_eq!(request.path, "/prefix/metrics/job@base64/YS9i");
    assert_eq!(request.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    assert_eq!(request.headers["authorization"], "Bearer tok-123");
    assert_eq!(request.headers["x-scope-orgid"], "site-1");
    assert!(request.headers["user-agent"].starts_with("apimetrics-agent/"));
    let body = String::from_utf8(request.body.clone()).unwrap();
    assert!(body.ends_with('\n'));
    for line in body.lines().filter(|line| !line.starts_with('#')) {
        // name{labels} value, and no timestamp after the value.
        let after_labels = line.rsplit_once('}').map_or(line, |(_, rest)| rest);
        assert_eq!(after_labels.split_whitespace().count(), if line.contains('}') { 1 } else { 2 }, "{line}");
    }
    assert!(stderr(&output).contains("HTTP 500 Internal Server Error: try later"), "{}", stderr(&output));
}

#[test]
fn a_429_waits_for_retry_after() {
    let server = FakeServer::start(vec![Reply::status(429).with_header("Retry-After", "2"), Reply::status(202)]);
    let site = site_with_transactions();
    let config = site.config("15s", &fake_target(&server, ""));
    let output = run_agent(&config, &["once"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let received = server.received();
    assert_eq!(received.len(), 2);
    let waited = received[1].at - received[0].at;
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}, before Retry-After");
}

#[test]
fn a_hang_past_the_timeout_is_retried() {
    let server = FakeServer::start(vec![Reply::status(200).after(Duration::from_secs(5)), Reply::status(200)]);
    let site = site_with_transactions();
    let config = site.config("15s", &fake_target(&server, "timeout = \"300ms\"\n"));
    let output = run_agent(&config, &["once"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(server.received().len(), 2);
    assert!(stderr(&output).contains("timed out"), "{}", stderr(&output));
}

#[test]
fn a_400_is_not_retried_and_its_body_is_logged() {
    let body = "pushed metrics are invalid or inconsistent with existing metrics";
    let server = FakeServer::start(vec![Reply::status(400).with_body(body), Reply::status(200)]);
    let site = site_with_transactions();
    let config = site.config("15s", &fake_target(&server, ""));
    let output = run_agent(&config, &["once"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(server.received().len(), 1);
    let message = stderr(&output);
    assert!(message.contains(&format!("HTTP 400 Bad Request: {body}")), "{message}");
    assert!(message.contains(&format!("{}/prefix/metrics/job@base64/YS9i", server.url())), "{message}");
}

#[test]
fn an_unreachable_gateway_fails_once_while_run_keeps_serving_and_trying() {
    let site = site_with_transactions();
    let unreachable = free_port();
    let target = format!("[[pushgateway]]\nurl = \"http://127.0.0.1:{unreachable}\"\ntimeout = \"500ms\"\n");
    let config = site.config("15s", &target);
    let output = run_agent(&config, &["once"]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains(&format!("http://127.0.0.1:{unreachable}/metrics/job/apimetrics: cannot connect")),
        "{message}"
    );

    let port = free_port();
    let config = site.config("300ms", &format!("{target}[scrape]\nlisten = \"127.0.0.1:{port}\"\n"));
    let agent = Running::start(&config, port);
    let target = format!("http://127.0.0.1:{unreachable}/metrics/job/apimetrics");
    wait_for("failed pushes over several ticks", DEADLINE, || {
        let local = parse_exposition(&agent.metrics());
        (value_of(&local, "apimetrics_agent_pushes_total", &[("target", &target), ("result", "failure")])? >= 3.0)
            .then_some(())
    });
    let local = parse_exposition(&agent.metrics());
    assert_eq!(value_of(&local, "api_transactions", &[("api", "Mpesa Express"), ("status", "Pending")]), Some(3.0));
    assert_eq!(
        value_of(&local, "apimetrics_agent_pushes_total", &[("target", &target), ("result", "success")]),
        Some(0.0)
    );
    let (status, _) = agent.terminate();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_hanging_target_does_not_hold_up_another() {
    let hanging = FakeServer::start(vec![Reply::status(200).after(Duration::from_secs(60))]);
    let gateway = pushgateway(None);
    let site = site_with_transactions();
    let port = free_port();
    let config = site.config(
        "200ms",
        &format!(
            "[scrape]\nlisten = \"127.0.0.1:{port}\"\n[[pushgateway]]\nurl = \"{}\"\ntimeout = \"60s\"\n\
             [[pushgateway]]\nurl = \"http://127.0.0.1:{}\"\n",
            hanging.url(),
            gateway.port
        ),
    );
    let agent = Running::start(&config, port);
    let healthy = format!("http://127.0.0.1:{}/metrics/job/apimetrics", gateway.port);
    wait_for("pushes to the healthy gateway on every tick", DEADLINE, || {
        let local = parse_exposition(&agent.metrics());
        (value_of(&local, "apimetrics_agent_pushes_total", &[("target", &healthy), ("result", "success")])? >= 5.0)
            .then_some(())
    });
    assert_eq!(hanging.received().len(), 1, "the hanging target is still on its first request");
    // Shutdown abandons the hanging request rather than waiting out its timeout or the deadline.
    let stopping = std::time::Instant::now();
    let (status, log) = agent.terminate();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(stopping.elapsed() < Duration::from_secs(5), "shutdown took {:?}", stopping.elapsed());
}

#[test]
fn push_settings_are_checked_before_anything_runs() {
    let site = site_with_transactions();
    std::fs::write(site.directory.path().join("pass"), "p4ss\n").unwrap();
    let config = site.config(
        "15s",
        "[labels]\ninstance = \"a\"\n\
         [[pushgateway]]\nurl = \"push.example.org:9091\"\n\
         [[pushgateway]]\nurl = \"http://gw:9091\"\nbasic_auth = { username = \"u\", password = \"p\", password_file = \"pass\" }\n\
         grouping = { instance = \"b\", \"bad-label\" = \"x\" }\nmethod = \"patch\"\n\
         [[pushgateway]]\nurl = \"http://gw:9091\"\njob = \"other\"\nbearer_token_file = \"missing-token\"\nsurprise = 1\n",
    );
    assert_config_refused(&config, &["line 18: pushgateway[2].surprise: unknown key", "pushgateway[1].method"]);

    let text = std::fs::read_to_string(&config).unwrap().replace("surprise = 1\n", "");
    std::fs::write(&config, text).unwrap();
    let message = assert_config_refused(
        &config,
        &[
            "line 8: pushgateway[0].url: \"push.example.org:9091\" is not an http:// or https:// URL",
            "pushgateway[1].basic_auth: set password or password_file, not both",
            "pushgateway[1].grouping.bad-label: not a grouping label name",
            "pushgateway[1].method: \"patch\" is not \"put\" or \"post\"",
            "pushgateway[1].grouping: instance = \"b\" contradicts labels.instance = \"a\"",
            "pushgateway[2].bearer_token_file: cannot read",
            "missing-token",
        ],
    );
    assert!(!message.contains("p4ss"), "{message}");
}
