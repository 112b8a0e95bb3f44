//! What the agent records of itself while it runs: the latest snapshot, how ticks and reloads
//! went, and every push target's deliveries; rendered as the `apimetrics_agent_*` metrics that
//! follow the aggregate on `/metrics`. It knows no config: the run loop tells it the targets.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::exposition::{Exposition, Rendered, write_build_info};
use crate::history::History;
use crate::http::Failure;

/// How much waits in a remote-write queue to be sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub n_samples: u64,
    /// What the queued batches take on disk (compressed), as `queue.max_bytes` counts it.
    pub n_bytes: u64,
    pub oldest_timestamp_ms: Option<i64>,
}

/// Why remote-write samples were dropped unsent, as the `reason` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum DropReason {
    /// Stamped at or before a sample already queued: the clock went back, and a receiver would
    /// refuse them.
    ClockWentBack,
    /// A queued batch that could not be read back.
    Corrupt,
    /// Past `queue.max_bytes`.
    OverSize,
    /// Held in memory past its bound while the queue could not be written.
    QueueWriteFailed,
    /// The receiver refused them for good (a 4xx).
    Rejected,
    /// Past `queue.max_age`.
    TooOld,
}

impl DropReason {
    /// Every reason, each shown from the start (at 0) so that a rule's `increase()` sees the first.
    const ALL: [DropReason; 6] = [
        DropReason::ClockWentBack,
        DropReason::Corrupt,
        DropReason::OverSize,
        DropReason::QueueWriteFailed,
        DropReason::Rejected,
        DropReason::TooOld,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DropReason::ClockWentBack => "clock_went_back",
            DropReason::Corrupt => "corrupt",
            DropReason::OverSize => "over_size",
            DropReason::QueueWriteFailed => "queue_write_failed",
            DropReason::Rejected => "rejected",
            DropReason::TooOld => "too_old",
        }
    }
}

/// The two kinds of push target, which the figures kept for them differ by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TargetKind {
    /// Latest-only: pushes, no backlog.
    Pushgateway,
    /// A durable queue: samples sent, dropped and waiting.
    RemoteWrite,
}

/// The state every outlet reads. Outlets render the snapshot; none of them queries the database.
#[derive(Debug, Default)]
pub(crate) struct Telemetry {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    latest: Option<Arc<Rendered>>,
    /// The last 24 hours of snapshots, a point a minute per status, for the status page.
    history: History,
    /// Per push target, by name.
    deliveries: BTreeMap<String, Delivery>,
    last_reload: Reload,
    n_ticks_succeeded: u64,
    n_ticks_failed: u64,
    last_tick_duration: Option<Duration>,
    last_error: Option<String>,
    /// When the latest snapshot (or the start, before one) goes stale: the run loop sets it
    /// from the schedule.
    stale_at: Option<DateTime<Utc>>,
}

/// How the last (re)load of the config went.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reload {
    pub(crate) succeeded: bool,
    pub(crate) at: DateTime<Utc>,
}

impl Default for Reload {
    fn default() -> Self {
        Reload { succeeded: true, at: Utc::now() }
    }
}

/// How pushes to one target went.
#[derive(Debug, Default, Clone)]
pub(crate) struct Delivery {
    pub(crate) n_succeeded: u64,
    pub(crate) n_failed: u64,
    pub(crate) last_success: Option<DateTime<Utc>>,
    pub(crate) last_duration: Option<Duration>,
    /// The last push's failure; `None` once one succeeds. Shown on the status page.
    pub(crate) last_error: Option<PushError>,
    /// Remote-write only: samples delivered, samples dropped by reason, and what waits.
    pub(crate) samples_produced: u64,
    pub(crate) samples_sent: u64,
    pub(crate) samples_dropped: BTreeMap<DropReason, u64>,
    /// Samples held in memory because the queue could not be written.
    pub(crate) samples_held: u64,
    pub(crate) backlog: Option<Backlog>,
    /// Why the queue cannot be written now; `None` once a write succeeds.
    pub(crate) queue_fault: Option<String>,
}

impl Delivery {
    fn new(kind: TargetKind) -> Delivery {
        match kind {
            TargetKind::Pushgateway => Delivery::default(),
            TargetKind::RemoteWrite => Delivery {
                samples_dropped: DropReason::ALL.iter().map(|reason| (*reason, 0)).collect(),
                backlog: Some(Backlog::default()),
                ..Delivery::default()
            },
        }
    }
}

/// When and why a push failed.
#[derive(Debug, Clone)]
pub(crate) struct PushError {
    pub(crate) at: DateTime<Utc>,
    pub(crate) reason: String,
}

impl Inner {
    fn health(&self, now: DateTime<Utc>) -> Health {
        if let Some(error) = &self.last_error {
            return Health::Failing(error.clone());
        }
        if let Some((target, fault)) =
            self.deliveries.iter().find_map(|(name, d)| Some((name, d.queue_fault.as_ref()?)))
        {
            return Health::QueueUnwritable { target: target.clone(), error: fault.clone() };
        }
        if let Some(stale_at) = self.stale_at.filter(|stale_at| now > *stale_at) {
            let computed_at = self.latest.as_ref().map(|latest| latest.snapshot.computed_at);
            return Health::Stale { computed_at, stale_at };
        }
        match self.n_ticks_succeeded + self.n_ticks_failed {
            0 => Health::Starting,
            _ => Health::Healthy,
        }
    }
}

/// The state at one moment, for the status page.
#[derive(Debug)]
pub(crate) struct StatusView {
    pub(crate) latest: Option<Arc<Rendered>>,
    pub(crate) history: History,
    /// What the history takes in memory (its clone above takes less).
    pub(crate) history_bytes: usize,
    pub(crate) health: Health,
    pub(crate) n_ticks_succeeded: u64,
    pub(crate) n_ticks_failed: u64,
    pub(crate) deliveries: BTreeMap<String, Delivery>,
    pub(crate) last_reload: Reload,
}

/// How the last tick went, for `/healthz`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Health {
    /// No tick has finished yet.
    Starting,
    Healthy,
    /// The last tick failed with this error; the last good snapshot is still served.
    Failing(String),
    /// A remote-write queue cannot be written (a full disk): its samples wait in memory.
    QueueUnwritable {
        target: String,
        error: String,
    },
    /// Ticks have stopped happening: the snapshot served (computed then; `None` for none yet)
    /// went stale at `stale_at`, three scheduled ticks on.
    Stale {
        computed_at: Option<DateTime<Utc>>,
        stale_at: DateTime<Utc>,
    },
}

impl Health {
    /// Whether `/healthz` answers 200, and what it says.
    pub(crate) fn describe(&self, now: DateTime<Utc>) -> (bool, String) {
        match self {
            Health::Healthy => (true, "healthy: the last tick succeeded".to_owned()),
            Health::Starting => (false, "starting: no tick has finished yet".to_owned()),
            Health::Failing(error) => (false, format!("the last tick failed: {error}")),
            Health::QueueUnwritable { target, error } => (
                false,
                format!("the queue of remote_write {target} cannot be written, its samples wait in memory: {error}"),
            ),
            Health::Stale { computed_at: Some(computed_at), stale_at } => (
                false,
                format!(
                    "stale: the snapshot served was computed at {} ({} s ago) and no tick has brought a newer one \
                     since {}: are ticks still running?",
                    computed_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    (now - *computed_at).num_seconds(),
                    stale_at.format("%Y-%m-%d %H:%M:%S UTC")
                ),
            ),
            Health::Stale { computed_at: None, stale_at } => (
                false,
                format!(
                    "stale: no tick has finished since the agent started, three scheduled ticks ago (by {}): \
                     are ticks running?",
                    stale_at.format("%Y-%m-%d %H:%M:%S UTC")
                ),
            ),
        }
    }
}

impl Telemetry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The push targets now configured. Targets that stay keep their figures; gone ones leave
    /// /metrics; new ones start at zero.
    pub(crate) fn set_targets<'a>(&self, targets: impl IntoIterator<Item = (&'a str, TargetKind)>) {
        let mut inner = self.lock();
        let previous = std::mem::take(&mut inner.deliveries);
        inner.deliveries = targets
            .into_iter()
            .map(|(name, kind)| (name.to_owned(), previous.get(name).cloned().unwrap_or_else(|| Delivery::new(kind))))
            .collect();
    }

    /// Counts a reload attempt, as the agent's own metrics show it.
    pub(crate) fn record_reload(&self, succeeded: bool, at: DateTime<Utc>) {
        self.lock().last_reload = Reload { succeeded, at };
    }

    pub(crate) fn record_success(&self, rendered: Arc<Rendered>, duration: Duration) {
        let mut inner = self.lock();
        inner.history.record(&rendered.snapshot);
        inner.latest = Some(rendered);
        inner.n_ticks_succeeded += 1;
        inner.last_tick_duration = Some(duration);
        inner.last_error = None;
    }

    pub(crate) fn record_failure(&self, error: String, duration: Duration) {
        let mut inner = self.lock();
        inner.n_ticks_failed += 1;
        inner.last_tick_duration = Some(duration);
        inner.last_error = Some(error);
    }

    /// Replaces the latest snapshot's rendering (after a reload changed how it renders), not
    /// counting a tick.
    pub(crate) fn replace_latest(&self, rendered: Arc<Rendered>) {
        self.lock().latest = Some(rendered);
    }

    pub(crate) fn latest(&self) -> Option<Arc<Rendered>> {
        self.lock().latest.clone()
    }

    /// Health as of now.
    pub(crate) fn health(&self) -> Health {
        self.lock().health(Utc::now())
    }

    /// Sets when the snapshot served (or the start, before one) goes stale.
    pub(crate) fn set_stale_at(&self, stale_at: Option<DateTime<Utc>>) {
        self.lock().stale_at = stale_at;
    }

    /// Everything the status page shows, taken at one moment.
    pub(crate) fn view(&self) -> StatusView {
        let inner = self.lock();
        StatusView {
            latest: inner.latest.clone(),
            history: inner.history.clone(),
            history_bytes: inner.history.bytes(),
            health: inner.health(Utc::now()),
            n_ticks_succeeded: inner.n_ticks_succeeded,
            n_ticks_failed: inner.n_ticks_failed,
            deliveries: inner.deliveries.clone(),
            last_reload: inner.last_reload,
        }
    }

    /// Counts one push to `target` (one snapshot, retries included) and remembers how it went.
    pub(crate) fn record_push(
        &self,
        target: &str,
        result: Result<(), &Failure>,
        duration: Duration,
        at: DateTime<Utc>,
    ) {
        let mut inner = self.lock();
        let delivery = inner.deliveries.entry(target.to_owned()).or_default();
        delivery.last_duration = Some(duration);
        match result {
            Ok(()) => {
                delivery.n_succeeded += 1;
                delivery.last_success = Some(at);
                delivery.last_error = None;
            }
            Err(failure) => {
                delivery.n_failed += 1;
                delivery.last_error = Some(PushError { at, reason: failure.to_string() });
            }
        }
    }

    /// Counts the samples a tick made for `target`, and (when known) how many wait in memory
    /// after it.
    pub(crate) fn record_samples_produced(&self, target: &str, n_samples: u64, n_samples_held: Option<u64>) {
        let mut inner = self.lock();
        let delivery = inner.deliveries.entry(target.to_owned()).or_default();
        delivery.samples_produced += n_samples;
        delivery.samples_held = n_samples_held.unwrap_or(delivery.samples_held);
    }

    pub(crate) fn record_samples_sent(&self, target: &str, n_samples: u64) {
        self.lock().deliveries.entry(target.to_owned()).or_default().samples_sent += n_samples;
    }

    pub(crate) fn record_samples_dropped(&self, target: &str, reason: DropReason, n_samples: u64) {
        let mut inner = self.lock();
        *inner.deliveries.entry(target.to_owned()).or_default().samples_dropped.entry(reason).or_default() += n_samples;
    }

    /// Whether the target's queue could be written at the last tick, and if not, why.
    pub(crate) fn record_queue_fault(&self, target: &str, fault: Option<String>) {
        self.lock().deliveries.entry(target.to_owned()).or_default().queue_fault = fault;
    }

    pub(crate) fn record_backlog(&self, target: &str, backlog: Backlog) {
        self.lock().deliveries.entry(target.to_owned()).or_default().backlog = Some(backlog);
    }

    pub(crate) fn backlog(&self, target: &str) -> Option<Backlog> {
        self.lock().deliveries.get(target).and_then(|delivery| delivery.backlog)
    }

    /// The scrape endpoint's page as of `now`: the latest snapshot's text as rendered at its
    /// tick, then the agent's own metrics, each series with `constant_labels`.
    pub(crate) fn render(&self, constant_labels: &BTreeMap<String, String>, now: DateTime<Utc>) -> String {
        let inner = self.lock();
        let mut exposition = Exposition::new(constant_labels);
        if let Some(latest) = &inner.latest {
            exposition.family(
                "apimetrics_agent_snapshot_age_seconds",
                "How old the served aggregate is; it grows while ticks fail.",
                "gauge",
            );
            let age = (now - latest.snapshot.computed_at).to_std().unwrap_or_default();
            exposition.sample("apimetrics_agent_snapshot_age_seconds", &[], age.as_secs_f64());
        }
        write_ticks(&mut exposition, &inner);
        write_reload(&mut exposition, inner.last_reload);
        write_deliveries(&mut exposition, &inner.deliveries);
        write_remote_write(&mut exposition, &inner.deliveries, now);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            exposition.family(
                "apimetrics_agent_runtime_alive_tasks",
                "Tasks alive in the agent's async runtime; flat over time when nothing leaks.",
                "gauge",
            );
            exposition.sample("apimetrics_agent_runtime_alive_tasks", &[], runtime.metrics().num_alive_tasks());
        }
        match &inner.latest {
            // The snapshot's text ends with the build info.
            Some(latest) => latest.body.clone() + &exposition.into_string(),
            None => {
                write_build_info(&mut exposition);
                exposition.into_string()
            }
        }
    }
}

/// Ticks by result, and how long the last one took.
fn write_ticks(exposition: &mut Exposition, inner: &Inner) {
    exposition.family("apimetrics_agent_ticks_total", "Ticks of the aggregate, by result.", "counter");
    exposition.sample("apimetrics_agent_ticks_total", &[("result", "success")], inner.n_ticks_succeeded);
    exposition.sample("apimetrics_agent_ticks_total", &[("result", "failure")], inner.n_ticks_failed);
    if let Some(duration) = inner.last_tick_duration {
        exposition.family(
            "apimetrics_agent_tick_duration_seconds",
            "How long the last tick took, successful or not.",
            "gauge",
        );
        exposition.sample("apimetrics_agent_tick_duration_seconds", &[], duration.as_secs_f64());
    }
}

/// Whether and when the config was last loaded.
fn write_reload(exposition: &mut Exposition, reload: Reload) {
    exposition.family(
        "apimetrics_agent_config_last_reload_successful",
        "Whether the last load of the config (at start, SIGHUP or POST /-/reload) succeeded.",
        "gauge",
    );
    exposition.sample("apimetrics_agent_config_last_reload_successful", &[], u8::from(reload.succeeded));
    exposition.family(
        "apimetrics_agent_config_last_reload_timestamp_seconds",
        "When the config was last loaded or a reload refused, in seconds since the Unix epoch.",
        "gauge",
    );
    exposition.sample(
        "apimetrics_agent_config_last_reload_timestamp_seconds",
        &[],
        reload.at.timestamp_millis() as f64 / 1000.0,
    );
}

/// Per remote-write target: samples sent and dropped, and the queue's backlog.
fn write_remote_write(exposition: &mut Exposition, deliveries: &BTreeMap<String, Delivery>, now: DateTime<Utc>) {
    let remote_writes: Vec<(&String, &Delivery, Backlog)> =
        deliveries.iter().filter_map(|(target, delivery)| Some((target, delivery, delivery.backlog?))).collect();
    if remote_writes.is_empty() {
        return;
    }
    exposition.family(
        "apimetrics_agent_remote_write_samples_produced_total",
        "Samples the ticks made for each remote-write target: sent + dropped + backlog + held.",
        "counter",
    );
    for (target, delivery, _) in &remote_writes {
        exposition.sample(
            "apimetrics_agent_remote_write_samples_produced_total",
            &[("target", target)],
            delivery.samples_produced,
        );
    }
    exposition.family(
        "apimetrics_agent_remote_write_samples_sent_total",
        "Samples each remote-write receiver accepted.",
        "counter",
    );
    for (target, delivery, _) in &remote_writes {
        exposition.sample(
            "apimetrics_agent_remote_write_samples_sent_total",
            &[("target", target)],
            delivery.samples_sent,
        );
    }
    exposition.family(
        "apimetrics_agent_remote_write_samples_dropped_total",
        "Samples dropped unsent, by reason: too_old (queue.max_age), over_size (queue.max_bytes), rejected (a 4xx), \
         clock_went_back, corrupt, queue_write_failed.",
        "counter",
    );
    for (target, delivery, _) in &remote_writes {
        for (reason, n_samples) in &delivery.samples_dropped {
            exposition.sample(
                "apimetrics_agent_remote_write_samples_dropped_total",
                &[("target", target), ("reason", reason.as_str())],
                n_samples,
            );
        }
    }
    exposition.family(
        "apimetrics_agent_remote_write_backlog_samples",
        "Samples queued for each remote-write receiver, not yet accepted.",
        "gauge",
    );
    for (target, _, backlog) in &remote_writes {
        exposition.sample("apimetrics_agent_remote_write_backlog_samples", &[("target", target)], backlog.n_samples);
    }
    exposition.family(
        "apimetrics_agent_remote_write_held_samples",
        "Samples held in memory because the queue could not be written.",
        "gauge",
    );
    for (target, delivery, _) in &remote_writes {
        exposition.sample("apimetrics_agent_remote_write_held_samples", &[("target", target)], delivery.samples_held);
    }
    exposition.family(
        "apimetrics_agent_remote_write_backlog_oldest_age_seconds",
        "Age of the oldest queued sample; 0 when none waits.",
        "gauge",
    );
    for (target, _, backlog) in &remote_writes {
        let age =
            backlog.oldest_timestamp_ms.map_or(0.0, |oldest| (now.timestamp_millis() - oldest).max(0) as f64 / 1000.0);
        exposition.sample("apimetrics_agent_remote_write_backlog_oldest_age_seconds", &[("target", target)], age);
    }
}

/// Per push target: pushes by result, when one last succeeded, how long the last one took.
fn write_deliveries(exposition: &mut Exposition, deliveries: &BTreeMap<String, Delivery>) {
    if deliveries.is_empty() {
        return;
    }
    exposition.family(
        "apimetrics_agent_pushes_total",
        "Snapshots pushed to each target, by result (retries within one push count once).",
        "counter",
    );
    for (target, delivery) in deliveries {
        exposition.sample(
            "apimetrics_agent_pushes_total",
            &[("target", target), ("result", "success")],
            delivery.n_succeeded,
        );
        exposition.sample(
            "apimetrics_agent_pushes_total",
            &[("target", target), ("result", "failure")],
            delivery.n_failed,
        );
    }
    exposition.family(
        "apimetrics_agent_push_last_success_timestamp_seconds",
        "When a push to each target last succeeded, in seconds since the Unix epoch.",
        "gauge",
    );
    for (target, delivery) in deliveries {
        if let Some(at) = delivery.last_success {
            exposition.sample(
                "apimetrics_agent_push_last_success_timestamp_seconds",
                &[("target", target)],
                at.timestamp_millis() as f64 / 1000.0,
            );
        }
    }
    exposition.family(
        "apimetrics_agent_push_duration_seconds",
        "How long the last push to each target took, retries included.",
        "gauge",
    );
    for (target, delivery) in deliveries {
        if let Some(duration) = delivery.last_duration {
            exposition.sample("apimetrics_agent_push_duration_seconds", &[("target", target)], duration.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_turns_stale_when_no_tick_brings_a_newer_snapshot_in_time() {
        let telemetry = Telemetry::default();
        let started: DateTime<Utc> = "2026-11-25T10:00:00Z".parse().unwrap();
        let stale_at = started + chrono::Duration::seconds(75);
        telemetry.set_stale_at(Some(stale_at));
        let inner = telemetry.lock();
        assert_eq!(inner.health(started), Health::Starting);
        let health = inner.health(stale_at + chrono::Duration::seconds(1));
        assert_eq!(health, Health::Stale { computed_at: None, stale_at });
        let (healthy, text) = health.describe(stale_at);
        assert!(!healthy && text.starts_with("stale: no tick has finished since the agent started"), "{text}");
        drop(inner);

        telemetry.record_failure("timed out".to_owned(), Duration::from_secs(1));
        let (healthy, text) = telemetry.lock().health(stale_at + chrono::Duration::seconds(1)).describe(stale_at);
        assert!(!healthy && text == "the last tick failed: timed out", "a failure says why first: {text}");
    }
}
