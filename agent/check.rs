//! `check`: what `run` needs, tried without running. The config has been validated by the time
//! this runs; here the database (a file or a server) is opened read-only (within `source.timeout`)
//! and explained,
//! `state_dir` is tried for writing (the agent's lock and the remote-write queues live there), and with
//! `--targets` every push target is asked for an answer. Nothing is sent but those probes, and
//! nothing is left behind.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use tokio::task::JoinSet;

use crate::common::deadline::Watchdog;
use crate::common::instance_lock;
use crate::common::redact::shown_url;
use crate::common::unit_sandbox::hidden_by_the_unit;
use crate::config::Config;
use crate::http::Failure;
use crate::source::Source;
use crate::{pushgateway, remote_write};

/// What `check` found: its report, and each thing that would stop `run` from working.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub text: String,
    pub failures: Vec<String>,
}

/// Checks the database, `state_dir` and, with `targets`, every push target.
pub async fn check(config: &Config, targets: bool) -> CheckReport {
    let mut report = CheckReport::default();
    let database = Source::new(&config.source).check(&Watchdog::default()).await;
    match database {
        Ok(text) => report.text.push_str(&text),
        Err(error) => report.failures.push(format!("{error:#}")),
    }
    match (try_writing(&config.state_dir), instance_lock::holder(&config.state_dir)) {
        (Ok(()), None) => {
            let _ = writeln!(report.text, "agent.state_dir {}: writable", config.state_dir.display());
        }
        (Ok(()), Some(pid)) => {
            let _ = writeln!(
                report.text,
                "agent.state_dir {}: writable, and in use by a running agent (pid {pid}): `run` or `once` there \
                 would be refused",
                config.state_dir.display()
            );
        }
        (Err(error), _) => report.failures.push(format!(
            "agent.state_dir {}: cannot be written ({error}); {}",
            config.state_dir.display(),
            instance_lock::state_dir_remedy(&error)
        )),
    }
    if let Some(hidden) = hidden_by_the_unit(&config.state_dir) {
        let _ = writeln!(
            report.text,
            "warning: agent.state_dir {}: {}, so under it the agent's lock and queues would not last past a restart \
             or could not be written: point agent.state_dir at /var/lib/apimetrics-agent, the unit's \
             StateDirectory=",
            config.state_dir.display(),
            hidden.note
        );
    }
    if targets {
        probe_targets(config, &mut report).await;
    }
    report
}

/// Creates and removes a file in `directory`, or in its nearest existing ancestor if it does not
/// exist yet (the agent creates it on start).
fn try_writing(directory: &Path) -> std::io::Result<()> {
    // An ancestor that cannot be looked at is where the error is, not one to pass over; one under
    // a file (ENOTDIR) is not there, and the file is named below.
    let there = |ancestor: &Path| match ancestor.try_exists() {
        Ok(exists) => exists,
        Err(error) => error.raw_os_error() != Some(libc::ENOTDIR),
    };
    let existing = directory.ancestors().find(|ancestor| there(ancestor)).unwrap_or(Path::new("."));
    if !std::fs::metadata(existing)?.is_dir() {
        return Err(std::io::Error::other(format!("{} is not a directory", existing.display())));
    }
    let probe = existing.join(format!(".apimetrics-agent-check-{}", std::process::id()));
    std::fs::OpenOptions::new().write(true).create_new(true).open(&probe)?;
    std::fs::remove_file(&probe)
}

/// The longest `check` waits for a target, whatever its own timeout.
const PROBE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// A probe's answer within `PROBE_DEADLINE`.
async fn bounded(probe: impl std::future::Future<Output = Result<(), Failure>>) -> Result<(), Failure> {
    tokio::time::timeout(PROBE_DEADLINE, probe)
        .await
        .unwrap_or_else(|_| Err(Failure::Retryable { reason: "no answer within 10s".into(), retry_after: None }))
}

/// Asks every target at once; each line says what it answered and how long that took.
async fn probe_targets(config: &Config, report: &mut CheckReport) {
    let mut probes = JoinSet::new();
    for (index, target) in config.pushgateways.iter().enumerate() {
        let target = target.clone();
        probes.spawn(async move {
            let started = Instant::now();
            let answer = bounded(pushgateway::probe(&target)).await;
            (format!("pushgateway[{index}] {}", target.name()), "ready", answer, started.elapsed())
        });
    }
    for (index, target) in config.remote_writes.iter().enumerate() {
        let target = target.clone();
        probes.spawn(async move {
            let started = Instant::now();
            let answer = bounded(remote_write::sender::probe(&target)).await;
            let name = format!("remote_write[{index}] {} ({})", target.name, shown_url(&target.url));
            (name, "accepted an empty write request", answer, started.elapsed())
        });
    }
    let mut lines = Vec::new();
    while let Some(Ok((name, success, answer, took))) = probes.join_next().await {
        let took = format!("{} ms", took.as_millis());
        match answer {
            Ok(()) => lines.push(format!("{name}: {success} in {took}")),
            Err(Failure::Retryable { reason, .. } | Failure::Permanent { reason }) => {
                report.failures.push(format!("{name}: {reason} (after {took})"))
            }
        }
    }
    lines.sort();
    for line in lines {
        let _ = writeln!(report.text, "{line}");
    }
    report.failures.sort();
}
