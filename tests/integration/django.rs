//! Against Django itself: a database made by `manage.py migrate` and the ORM (tests/django/),
//! whose schema must be `schema/django.sql` and whose ORM counts `once --dry-run` must print.

use std::collections::BTreeMap;
use std::process::Command;

use crate::peers::parse_exposition;
use crate::support::*;

/// The `name` series of an exposition by (api, status).
fn parse_series(exposition: &str, name: &str) -> BTreeMap<(String, String), u64> {
    parse_exposition(exposition)
        .into_iter()
        .filter(|(sample_name, _, _)| sample_name == name)
        .map(|(_, labels, value)| ((labels["api"].clone(), labels["status"].clone()), value as u64))
        .collect()
}

#[test]
fn dry_run_prints_exactly_what_django_counts_on_a_database_django_made() {
    let directory = tempfile::tempdir().unwrap();
    let database = directory.path().join("django.sqlite3");
    let output = Command::new(python())
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/django/make_database.py"))
        .arg(&database)
        .output()
        .expect("running python");
    assert!(
        output.status.success(),
        "making the database with Django failed (tests/run installs Django and sets APIMETRICS_TEST_PYTHON): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let made: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    for statement in made["schema"].as_array().unwrap() {
        let statement = statement.as_str().unwrap().replacen("CREATE TABLE ", "CREATE TABLE IF NOT EXISTS ", 1);
        assert!(SCHEMA.contains(&format!("{statement};")), "Django made {statement}, which schema/django.sql lacks");
    }
    let django_counts = orm_counts(&made);
    assert!(django_counts.len() > 10 && django_counts.values().sum::<u64>() > 1000, "{django_counts:?}");

    let config = directory.path().join("config.toml");
    let configure = |zero_fill: bool| {
        std::fs::write(
            &config,
            format!(
                "[source]\ndatabase = \"django.sqlite3\"\n[schedule]\ninterval = \"15s\"\n[metric]\nzero_fill = {zero_fill}\n"
            ),
        )
        .unwrap();
    };
    configure(false);
    let output = run_agent(&config, &["once", "--dry-run"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(parse_series(&stdout(&output), "api_transactions"), django_counts);

    configure(true);
    let output = run_agent(&config, &["once", "--dry-run"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let filled = parse_series(&stdout(&output), "api_transactions");
    // Four distinct API names (two rows share "Mpesa Express") × four distinct status names.
    assert_eq!(filled.len(), 16);
    for (pair, count) in &filled {
        assert_eq!(*count, django_counts.get(pair).copied().unwrap_or(0), "{pair:?}");
    }
}
