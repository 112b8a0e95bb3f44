//! A property of the config: no text makes `parse` panic, and no config it accepts makes the
//! agent panic. Thousands of texts, each setting keys of every table to values picked to break
//! things (huge, zero, negative, past a range, unicode, of the wrong type), are parsed; each that
//! parses then has one tick taken against a small database, its text rendered, its remote-write
//! series built, its clients made and its schedule computed, as the agent does.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use super::*;
use crate::common::random::SplitMix64;
use crate::exposition::Rendered;
use crate::populate::{Population, create};
use crate::snapshot::Snapshot;

/// Every key of every table, by the table it is set in; `pushgateway` and `remote_write` stand
/// for a `[[pushgateway]]` or `[[remote_write]]` table, the tables inside them by dotted keys.
const KEYS: &[(&str, &str)] = &[
    ("", "surprise"),
    ("agent", "state_dir"),
    ("agent", "statedir"),
    ("source", "database"),
    ("source", "window"),
    ("source", "timezone"),
    ("source", "busy_timeout"),
    ("source", "timeout"),
    ("source", "rows_per_read"),
    ("source", "api_table"),
    ("source", "status_table"),
    ("source", "transaction_table"),
    ("source", "password_file"),
    ("source", "sslmode"),
    ("source", "sslrootcert"),
    ("schedule", "interval"),
    ("schedule", "cron"),
    ("schedule", "run_on_start"),
    ("metric", "name"),
    ("metric", "help"),
    ("metric", "zero_fill"),
    ("labels", "site"),
    ("labels", "api"),
    ("labels", "\"bad-name\""),
    ("scrape", "listen"),
    ("scrape", "enable_reload"),
    ("log", "format"),
    ("pushgateway", "url"),
    ("pushgateway", "job"),
    ("pushgateway", "grouping"),
    ("pushgateway", "grouping.instance"),
    ("pushgateway", "method"),
    ("pushgateway", "timeout"),
    ("pushgateway", "delete_on_shutdown"),
    ("pushgateway", "headers"),
    ("pushgateway", "headers.X-Scope-OrgID"),
    ("pushgateway", "basic_auth"),
    ("pushgateway", "basic_auth.username"),
    ("pushgateway", "basic_auth.password"),
    ("pushgateway", "basic_auth.password_file"),
    ("pushgateway", "bearer_token"),
    ("pushgateway", "bearer_token_file"),
    ("pushgateway", "tls"),
    ("pushgateway", "tls.ca_file"),
    ("pushgateway", "tls.cert_file"),
    ("pushgateway", "tls.key_file"),
    ("pushgateway", "tls.insecure_skip_verify"),
    ("pushgateway", "proxy_url"),
    ("remote_write", "name"),
    ("remote_write", "url"),
    ("remote_write", "timeout"),
    ("remote_write", "max_samples_per_send"),
    ("remote_write", "queue"),
    ("remote_write", "queue.max_age"),
    ("remote_write", "queue.max_bytes"),
    ("remote_write", "headers"),
    ("remote_write", "headers.Authorization"),
    ("remote_write", "basic_auth"),
    ("remote_write", "basic_auth.username"),
    ("remote_write", "basic_auth.password"),
    ("remote_write", "basic_auth.password_file"),
    ("remote_write", "bearer_token"),
    ("remote_write", "bearer_token_file"),
    ("remote_write", "tls"),
    ("remote_write", "tls.ca_file"),
    ("remote_write", "tls.cert_file"),
    ("remote_write", "tls.key_file"),
    ("remote_write", "tls.insecure_skip_verify"),
    ("remote_write", "proxy_url"),
];

/// Values as TOML text: good ones, so that many configs parse, and ones meant to break things.
const VALUES: &[&str] = &[
    // Durations, in range and far out of it.
    "\"0s\"",
    "\"1ns\"",
    "\"1ms\"",
    "\"100ms\"",
    "\"1s\"",
    "\"15s\"",
    "\"24h\"",
    "\"366d\"",
    "\"367d\"",
    "\"100000000000h\"",
    "\"18446744073709551615s\"",
    "\"18446744073709551616s\"",
    "\"-1s\"",
    // Sizes.
    "\"0\"",
    "\"1KiB\"",
    "\"256MiB\"",
    "\"1TiB\"",
    "\"2TiB\"",
    "\"99999999999999999999GiB\"",
    // Time zones, cron expressions, addresses, URLs, names.
    "\"UTC\"",
    "\"Africa/Nairobi\"",
    "\"Mars/Olympus\"",
    "\"*/5 * * * * *\"",
    "\"* * * * * *\"",
    "\"0 0 0 30 2 *\"",
    "\"0 0 0 1 1 * 2020\"",
    "\"0 0 0 1 1 * 4999\"",
    "\"61 * * * *\"",
    "\"127.0.0.1:0\"",
    "\"[::1]:65536\"",
    "\"http://127.0.0.1:9\"",
    "\"https://user:hunter2@push.example.org\"",
    "\"http://[::1\"",
    "\"ftp://example.org/\"",
    "\"socks5://127.0.0.1:1080\"",
    "\"put\"",
    "\"post\"",
    "\"api_transactions\"",
    "\"app.sqlite3\"",
    "\"postgres://agent@127.0.0.1:1/app\"",
    "\"postgresql://u:hunter2@[::1/app?sslmode=verify-full&sslrootcert=/dev/null\"",
    "\"postgres://@/?options=-c%20x\"",
    "\"verify-full\"",
    "\"require\"",
    "\"/dev/null\"",
    "\".\"",
    "\"..\"",
    "\"\"",
    "\" \"",
    "\"ünïcödé ☃ \\u0000 \\n\\r\\t \\\" \\\\\"",
    "\"\\u202e\\ufeff\"",
    "'''\nmulti\nline'''",
    // Numbers, booleans, a date.
    "0",
    "-1",
    "1",
    "100",
    "2000",
    "10000000",
    "10000001",
    "9223372036854775807",
    "-9223372036854775808",
    "1e308",
    "-0.0",
    "nan",
    "inf",
    "true",
    "false",
    "1979-05-27T07:32:00Z",
    "07:32:00",
    // Arrays and tables, empty, mixed and nested.
    "[]",
    "[1, \"a\", [true]]",
    "[{}]",
    "{}",
    "{ username = \"agent\", password = \"hunter2\" }",
    "{ username = 7 }",
    "{ password = \"hunter2\" }",
    "{ max_age = \"1s\", max_bytes = \"1KiB\" }",
    "{ max_age = \"31d\", max_bytes = \"0\" }",
    "{ \"X-Scope-OrgID\" = \"site-1\" }",
    "{ Authorization = \"Bearer \\n\" }",
    "{ \"Content-Type\" = \"x\" }",
    "{ ca_file = \"/nonexistent\" }",
    "{ insecure_skip_verify = true }",
    "{ instance = \"a/b\", job = \"j\", \"\" = \"\" }",
    "{ a = { b = { c = [] } } }",
];

/// Good values for a key (by its last part), at the edges of their ranges where they have them, so
/// that many configs are accepted and the largest accepted values are used.
fn good_values(key: &str) -> &'static [&'static str] {
    match key.rsplit('.').next().unwrap_or(key) {
        "window" => &["\"1s\"", "\"366d\"", "\"24h\""],
        "interval" => &["\"100ms\"", "\"366d\"", "\"15s\""],
        "busy_timeout" => &["\"1ms\"", "\"29s\"", "\"10min\""],
        "timeout" => &["\"100ms\"", "\"1h\"", "\"10min\"", "\"30s\""],
        "max_age" => &["\"1s\"", "\"31d\""],
        "max_bytes" => &["\"1KiB\"", "\"1TiB\""],
        "rows_per_read" => &["100", "10000000"],
        "max_samples_per_send" => &["1", "1000000"],
        "timezone" => &["\"Pacific/Kiritimati\"", "\"America/St_Johns\"", "\"Etc/GMT+12\""],
        "cron" => &["\"*/5 * * * * *\"", "\"0 0 0 29 2 *\"", "\"0 0 0 1 1 * 4999\"", "\"59 59 23 31 12 *\""],
        "database" => &["\"app.sqlite3\""],
        "api_table" | "status_table" | "transaction_table" => &["\"apiMetrics_api\"", "\"x\"", "\"\""],
        "run_on_start" | "zero_fill" | "enable_reload" | "delete_on_shutdown" | "insecure_skip_verify" => {
            &["true", "false"]
        }
        "name" => &["\"a:b\"", "\"central\"", "\"a.b-c_d\""],
        "help" | "site" | "instance" | "X-Scope-OrgID" | "Authorization" | "job" | "username" => {
            &["\"☃ a/b \\\\ \\\"\\n\"", "\"x\""]
        }
        // The one secret the texts hold: no message may show it.
        "password" | "bearer_token" => &["\"hunter2\"", "\"hunter2\\n\""],
        "listen" => &["\"127.0.0.1:0\"", "\"[::1]:9184\""],
        "url" => &["\"http://127.0.0.1:9091/prefix/\"", "\"https://r.example/api/v1/write\""],
        "grouping" => &["{ instance = \"a/b\", zone = \"\" }"],
        "method" => &["\"post\"", "\"PUT\""],
        "format" => &["\"json\"", "\"text\"", "\"xml\""],
        "headers" => &["{ \"X-Scope-OrgID\" = \"site-1\" }"],
        "basic_auth" => &["{ username = \"agent\", password = \"hunter2\" }"],
        "proxy_url" => &["\"http://127.0.0.1:3128\"", "\"https://u:p@127.0.0.1:3128\""],
        "queue" => &["{ max_age = \"31d\", max_bytes = \"1TiB\" }"],
        "state_dir" => &["\"☃\"", "\"/nonexistent/state\""],
        _ => &["\"x\""],
    }
}

/// Values of the right type for a key (by its last part) but far out of its range, or odd.
fn extreme_values(key: &str) -> &'static [&'static str] {
    match key.rsplit('.').next().unwrap_or(key) {
        "window" | "interval" | "busy_timeout" | "timeout" | "max_age" => &[
            "\"0s\"",
            "\"1ns\"",
            "\"99ms\"",
            "\"367d\"",
            "\"100000000000h\"",
            "\"18446744073709551615s\"",
            "\"584942417355y\"",
        ],
        "max_bytes" => &["\"0\"", "\"1023\"", "\"2TiB\"", "\"18446744073709551615\"", "\"16EiB\""],
        "rows_per_read" | "max_samples_per_send" => &["0", "-1", "99", "9223372036854775807", "-9223372036854775808"],
        "cron" => &["\"0 0 0 30 2 *\"", "\"0 0 0 1 1 * 2020\"", "\"* * * * *\"", "\"0 0 0 L * *\"", "\"@yearly\""],
        "listen" => &["\"127.0.0.1:65536\"", "\"localhost:9184\"", "\"0.0.0.0:0\""],
        "url" | "proxy_url" => &["\"http://\"", "\"http://u:hunter2@h\"", "\"unix:/run/x\"", "\"http://h?q#f\""],
        _ => VALUES,
    }
}

/// The larger values, built: a long string, a deep array.
fn built_value(random: &mut SplitMix64) -> String {
    match random.below(3) {
        0 => format!("\"{}\"", "x".repeat(10_000)),
        1 => format!("{}1{}", "[".repeat(100), "]".repeat(100)),
        _ => format!("\"{}\"", "☃".repeat(300)),
    }
}

/// A key set to a value in a config text: the table (`pushgateway 1` for the second
/// `[[pushgateway]]`), the key, the value as TOML.
type Setting = (String, &'static str, String);

/// A good config of `n_pushgateways` and `n_remote_writes` targets with `settings` written over
/// it; a key set twice keeps the last value.
fn config_text(n_pushgateways: usize, n_remote_writes: usize, settings: Vec<Setting>) -> String {
    // Tables in the order written, each with its entries.
    let mut tables: Vec<(String, Vec<(&str, String)>)> = vec![
        ("source".to_owned(), vec![("database", "\"app.sqlite3\"".to_owned())]),
        ("schedule".to_owned(), vec![("interval", "\"15s\"".to_owned())]),
    ];
    for index in 0..n_pushgateways {
        tables.push((format!("pushgateway {index}"), vec![("url", format!("\"http://127.0.0.1:{}\"", 9091 + index))]));
    }
    for index in 0..n_remote_writes {
        let url = format!("\"http://127.0.0.1:9090/api/v1/write/{index}\"");
        tables.push((format!("remote_write {index}"), vec![("url", url)]));
    }
    for (table, key, value) in settings {
        let entries = match tables.iter().position(|(name, _)| *name == table) {
            Some(position) => &mut tables[position].1,
            None => {
                tables.push((table, Vec::new()));
                &mut tables.last_mut().expect("just pushed").1
            }
        };
        entries.retain(|(written, _)| *written != key);
        entries.push((key, value));
    }
    // The root's keys first: after a header they would be that table's.
    tables.sort_by_key(|(name, _)| !name.is_empty());
    let mut text = String::new();
    for (table, entries) in &tables {
        match table.split_once(' ') {
            Some((array, _)) => text.push_str(&format!("[[{array}]]\n")),
            None if table.is_empty() => {}
            None => text.push_str(&format!("[{table}]\n")),
        }
        for (key, value) in entries {
            text.push_str(&format!("{key} = {value}\n"));
        }
    }
    text
}

/// `table` as `config_text` names it: the first of its kind for an array of tables.
fn first_of(table: &str) -> String {
    match table {
        "pushgateway" | "remote_write" => format!("{table} 0"),
        table => table.to_owned(),
    }
}

/// One config per key with a range (or a syntax of its own) and per good or extreme value of it,
/// every other key good: the ranges' edges, each tried alone.
fn one_key_texts() -> Vec<String> {
    let mut texts = Vec::new();
    for &(table, key) in KEYS {
        let extremes = extreme_values(key);
        if std::ptr::eq(extremes, VALUES) {
            continue;
        }
        for value in good_values(key).iter().chain(extremes) {
            texts.push(config_text(1, 1, vec![(first_of(table), key, (*value).to_owned())]));
        }
    }
    texts
}

/// A config of up to two targets of each kind with one to three keys set to good values for
/// them, to extreme ones, to any of `VALUES`, or to a built one.
fn random_text(random: &mut SplitMix64) -> String {
    let n_pushgateways = random.below(3) as usize;
    let n_remote_writes = random.below(3) as usize;
    let mut settings = Vec::new();
    for _ in 0..1 + random.below(3) {
        let (table, key) = KEYS[random.below(KEYS.len() as u64) as usize];
        let pick =
            |values: &[&str], random: &mut SplitMix64| values[random.below(values.len() as u64) as usize].to_owned();
        let value = match random.below(40) {
            0 => built_value(random),
            1..20 => pick(good_values(key), random),
            20..32 => pick(extreme_values(key), random),
            _ => pick(VALUES, random),
        };
        let table = match table {
            "pushgateway" => format!("{table} {}", random.below(n_pushgateways.max(1) as u64)),
            "remote_write" => format!("{table} {}", random.below(n_remote_writes.max(1) as u64)),
            table => table.to_owned(),
        };
        settings.push((table, key, value));
    }
    config_text(n_pushgateways, n_remote_writes, settings)
}

/// What the agent does with a config it accepted, short of serving and sending: one tick's
/// snapshot, its text, its remote-write series, its requests and their authorization, its
/// schedule; and, with `build_clients`, the targets' own clients (a client takes tens of
/// milliseconds to build, so not for every config).
fn use_as_the_agent_would(
    config: &Config,
    runtime: &tokio::runtime::Runtime,
    plain_client: &reqwest::Client,
    build_clients: bool,
) {
    let now = chrono::Utc::now();
    if let Ok(snapshot) = Snapshot::take(&config.source, config.metric.zero_fill, now) {
        let rendered = Rendered::new(snapshot, &config.metric, &config.labels);
        let series = crate::remote_write::request::tick_series(
            &rendered.snapshot,
            &config.metric,
            &config.labels,
            now.timestamp_millis(),
            &[],
        );
        crate::remote_write::request::encode(&series.series);
    }
    if let crate::source::config::Database::Postgres(server) = &config.source.database {
        let _ = crate::source::tls::client_config(server.sslmode, server.root_certificates.as_deref());
    }
    let _entered = runtime.enter();
    let targets = config.pushgateways.iter().map(|target| (&target.http, target.timeout, &target.group_url));
    let remote_writes = config.remote_writes.iter().map(|target| (&target.http, target.timeout, &target.url));
    for (http, timeout, url) in targets.chain(remote_writes) {
        let _ = http.authorize(plain_client.post(url.clone())).build();
        if build_clients {
            let _ = http.client(timeout).map(|client| client.post(url.clone()).build());
        }
    }
    for target in &config.remote_writes {
        let _ = target.queue_path(&config.state_dir);
        let _ = now.timestamp_millis() - target.max_age.as_millis() as i64;
    }
    match &config.schedule {
        Schedule::Interval(period) => {
            let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + *period, *period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let _ = config.schedule.to_string();
        }
        Schedule::Cron(expression) => {
            next_cron_time(expression, now).expect("an accepted cron expression names a time to come");
            tokio_cron_scheduler::Job::new_async(expression.as_str(), |_id, _scheduler| Box::pin(async {}))
                .expect("the scheduler takes what the config accepted");
        }
    }
}

#[test]
fn no_config_text_panics_the_parser_and_no_accepted_config_panics_the_agent() {
    let directory = tempfile::tempdir().unwrap();
    let database = directory.path().join("app.sqlite3");
    create(&database, &Population::new(300, 3, 7), false, false).unwrap();
    let path = directory.path().join("config.toml");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let plain_client = runtime.block_on(async { reqwest::Client::new() });
    let mut random = SplitMix64(11);
    let texts: Vec<String> = one_key_texts().into_iter().chain((0..3000).map(|_| random_text(&mut random))).collect();
    let (mut n_accepted, n_texts) = (0, texts.len());
    let started = std::time::Instant::now();
    for text in &texts {
        let outcome = catch_unwind(AssertUnwindSafe(|| match parse(&path, text) {
            Ok(config) => {
                use_as_the_agent_would(&config, &runtime, &plain_client, n_accepted % 8 == 0);
                true
            }
            Err(error) => {
                assert!(!error.problems.is_empty());
                assert!(!error.to_string().contains("hunter2"), "a secret in:\n{error}");
                false
            }
        }));
        match outcome {
            Ok(accepted) => n_accepted += usize::from(accepted),
            Err(_) => panic!("this config panicked the agent (see the panic above):\n{text}"),
        }
    }
    // The property is only shown for configs that get this far: enough of them must.
    assert!(n_accepted >= n_texts / 20, "only {n_accepted} of {n_texts} configs were accepted");
    eprintln!("{n_accepted} of {n_texts} configs accepted and used in {:?}", started.elapsed());
}

/// The keys each table knows, as the config itself lists them for an unknown key, are all in
/// `KEYS`: a key added to a table and not to the list fails here.
#[test]
fn every_key_of_every_table_is_in_the_list() {
    let probes = [
        ("agent", "[agent]\nunknown = 1\n"),
        ("source", "[source]\nunknown = 1\n"),
        ("schedule", "[schedule]\nunknown = 1\n"),
        ("metric", "[metric]\nunknown = 1\n"),
        ("scrape", "[scrape]\nunknown = 1\n"),
        ("log", "[log]\nunknown = 1\n"),
        ("pushgateway", "[[pushgateway]]\nunknown = 1\n"),
        ("pushgateway.basic_auth", "[[pushgateway]]\nbasic_auth = { unknown = 1 }\n"),
        ("pushgateway.tls", "[[pushgateway]]\ntls = { unknown = 1 }\n"),
        ("remote_write", "[[remote_write]]\nunknown = 1\n"),
        ("remote_write.queue", "[[remote_write]]\nqueue = { unknown = 1 }\n"),
        ("remote_write.basic_auth", "[[remote_write]]\nbasic_auth = { unknown = 1 }\n"),
        ("remote_write.tls", "[[remote_write]]\ntls = { unknown = 1 }\n"),
    ];
    for (table, text) in probes {
        let problems = parse(Path::new("config.toml"), text).unwrap_err().problems;
        let listed =
            problems.iter().find(|problem| problem.contains("unknown key")).expect("the unknown key is reported");
        let known: Vec<&str> = listed.rsplit_once('(').unwrap().1.split('`').skip(1).step_by(2).collect();
        assert!(!known.is_empty(), "{listed}");
        let (top, inner) = table.split_once('.').map_or((table, None), |(top, inner)| (top, Some(inner)));
        for key in known {
            let dotted = inner.map_or(key.to_owned(), |inner| format!("{inner}.{key}"));
            assert!(
                KEYS.contains(&(top, dotted.as_str()))
                    || KEYS.iter().any(|(t, k)| *t == top && k.starts_with(&format!("{dotted}."))),
                "{top}: {dotted} is not in KEYS"
            );
        }
    }
}
