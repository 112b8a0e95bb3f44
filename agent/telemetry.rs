//! What the agent shares between its tick loop and its outlets: the latest good snapshot and the
//! agent's own health, rendered as `apimetrics_agent_*` metrics beside the aggregate.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::exposition::{Exposition, write_aggregate, write_build_info, write_snapshot_health};
use crate::http::Failure;
use crate::remote_write::queue::Backlog;
use crate::snapshot::Snapshot;

/// The state every outlet reads. Outlets render the snapshot; none of them queries the database.
#[derive(Debug)]
pub struct AgentState {
    /// The config in force; a reload replaces it whole.
    config: RwLock<Arc<Config>>,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    latest: Option<Arc<Snapshot>>,
    /// Per push target, by name.
    deliveries: BTreeMap<String, Delivery>,
    /// Whether the last (re)load of the config succeeded, and when it was.
    last_reload: (bool, DateTime<Utc>),
    n_ticks_succeeded: u64,
    n_ticks_failed: u64,
    last_tick_duration: Option<Duration>,
    last_error: Option<String>,
}

/// How pushes to one target went.
#[derive(Debug, Default, Clone)]
pub struct Delivery {
    pub n_succeeded: u64,
    pub n_failed: u64,
    pub last_success: Option<DateTime<Utc>>,
    pub last_duration: Option<Duration>,
    /// When and why the last push failed; `None` once one succeeds. Shown on the status page.
    pub last_error: Option<(DateTime<Utc>, String)>,
    /// Remote-write only: samples delivered, samples dropped by reason, and what waits.
    pub samples_sent: u64,
    pub samples_dropped: BTreeMap<&'static str, u64>,
    pub backlog: Option<Backlog>,
}

/// Why remote-write samples were dropped, as the `reason` label says it.
pub const DROP_REASONS: [&str; 3] = ["too_old", "over_size", "rejected"];

impl Inner {
    fn health(&self) -> Health {
        match (&self.last_error, self.n_ticks_succeeded + self.n_ticks_failed) {
            (Some(error), _) => Health::Failing(error.clone()),
            (None, 0) => Health::Starting,
            (None, _) => Health::Healthy,
        }
    }
}

/// The state at one moment, for the status page.
#[derive(Debug)]
pub struct StatusView {
    pub latest: Option<Arc<Snapshot>>,
    pub health: Health,
    pub n_ticks_succeeded: u64,
    pub n_ticks_failed: u64,
    pub deliveries: BTreeMap<String, Delivery>,
    pub last_reload: (bool, DateTime<Utc>),
}

/// Delivery figures for `config`'s targets: carried over from `previous` where a target stays.
fn new_deliveries(config: &Config, previous: &BTreeMap<String, Delivery>) -> BTreeMap<String, Delivery> {
    let pushgateways = config.pushgateways.iter().map(|target| (target.name().to_owned(), Delivery::default()));
    let remote_writes = config.remote_writes.iter().map(|target| {
        let delivery = Delivery {
            samples_dropped: DROP_REASONS.iter().map(|reason| (*reason, 0)).collect(),
            backlog: Some(Backlog::default()),
            ..Delivery::default()
        };
        (target.name.clone(), delivery)
    });
    pushgateways
        .chain(remote_writes)
        .map(|(name, fresh)| {
            let kept = previous.get(&name).cloned().unwrap_or(fresh);
            (name, kept)
        })
        .collect()
}

/// How the last tick went, for `/healthz`.
#[derive(Debug, PartialEq, Eq)]
pub enum Health {
    /// No tick has finished yet.
    Starting,
    Healthy,
    /// The last tick failed with this error; the last good snapshot is still served.
    Failing(String),
}

impl AgentState {
    pub fn new(config: Arc<Config>) -> AgentState {
        let deliveries = new_deliveries(&config, &BTreeMap::new());
        let inner = Inner { deliveries, last_reload: (true, Utc::now()), ..Inner::default() };
        AgentState { config: RwLock::new(config), inner: Mutex::new(inner) }
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Puts a reloaded config in force. Targets that stay keep their delivery figures; gone
    /// ones leave /metrics; new ones start at zero.
    pub fn replace_config(&self, config: Arc<Config>) {
        let mut inner = self.lock();
        inner.deliveries = new_deliveries(&config, &inner.deliveries);
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = config;
    }

    /// Counts a reload attempt, as the agent's own metrics show it.
    pub fn record_reload(&self, succeeded: bool, at: DateTime<Utc>) {
        self.lock().last_reload = (succeeded, at);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn record_success(&self, snapshot: Arc<Snapshot>, duration: Duration) {
        let mut inner = self.lock();
        inner.latest = Some(snapshot);
        inner.n_ticks_succeeded += 1;
        inner.last_tick_duration = Some(duration);
        inner.last_error = None;
    }

    pub fn record_failure(&self, error: String, duration: Duration) {
        let mut inner = self.lock();
        inner.n_ticks_failed += 1;
        inner.last_tick_duration = Some(duration);
        inner.last_error = Some(error);
    }

    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        self.lock().latest.clone()
    }

    pub fn health(&self) -> Health {
        self.lock().health()
    }

    /// Everything the status page shows, taken at one moment.
    pub fn view(&self) -> StatusView {
        let inner = self.lock();
        StatusView {
            latest: inner.latest.clone(),
            health: inner.health(),
            n_ticks_succeeded: inner.n_ticks_succeeded,
            n_ticks_failed: inner.n_ticks_failed,
            deliveries: inner.deliveries.clone(),
            last_reload: inner.last_reload,
        }
    }

    /// Counts one push to `target` (one snapshot, retries included) and remembers how it went.
    pub fn record_push(&self, target: &str, result: Result<(), &Failure>, duration: Duration, at: DateTime<Utc>) {
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
                delivery.last_error = Some((at, failure.to_string()));
            }
        }
    }

    pub fn record_samples_sent(&self, target: &str, n_samples: u64) {
        self.lock().deliveries.entry(target.to_owned()).or_default().samples_sent += n_samples;
    }

    pub fn record_samples_dropped(&self, target: &str, reason: &'static str, n_samples: u64) {
        let mut inner = self.lock();
        *inner.deliveries.entry(target.to_owned()).or_default().samples_dropped.entry(reason).or_default() += n_samples;
    }

    pub fn record_backlog(&self, target: &str, backlog: Backlog) {
        self.lock().deliveries.entry(target.to_owned()).or_default().backlog = Some(backlog);
    }

    pub fn backlog(&self, target: &str) -> Option<Backlog> {
        self.lock().deliveries.get(target).and_then(|delivery| delivery.backlog)
    }

    /// The scrape endpoint's page: the latest aggregate, then the agent's own metrics as of `now`.
    pub fn render(&self, now: DateTime<Utc>) -> String {
        let config = self.config();
        let inner = self.lock();
        let mut exposition = Exposition::new(&config.labels);
        if let Some(snapshot) = &inner.latest {
            write_aggregate(&mut exposition, snapshot, &config.metric);
            write_snapshot_health(&mut exposition, snapshot);
            exposition.family(
                "apimetrics_agent_snapshot_age_seconds",
                "How old the served aggregate is; it grows while ticks fail.",
                "gauge",
            );
            let age = (now - snapshot.computed_at).to_std().unwrap_or_default();
            exposition.sample("apimetrics_agent_snapshot_age_seconds", &[], age.as_secs_f64());
        }
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
        let (reloaded, reloaded_at) = inner.last_reload;
        exposition.family(
            "apimetrics_agent_config_last_reload_successful",
            "Whether the last load of the config (at start, SIGHUP or POST /-/reload) succeeded.",
            "gauge",
        );
        exposition.sample("apimetrics_agent_config_last_reload_successful", &[], u8::from(reloaded));
        exposition.family(
            "apimetrics_agent_config_last_reload_timestamp_seconds",
            "When the config was last loaded or a reload refused, in seconds since the Unix epoch.",
            "gauge",
        );
        exposition.sample(
            "apimetrics_agent_config_last_reload_timestamp_seconds",
            &[],
            reloaded_at.timestamp_millis() as f64 / 1000.0,
        );
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
        write_build_info(&mut exposition);
        exposition.into_string()
    }
}

/// Per remote-write target: samples sent and dropped, and the queue's backlog.
fn write_remote_write(exposition: &mut Exposition, deliveries: &BTreeMap<String, Delivery>, now: DateTime<Utc>) {
    let remote_writes: Vec<(&String, &Delivery, Backlog)> =
        deliveries.iter().filter_map(|(target, delivery)| Some((target, delivery, delivery.backlog?))).collect();
    if remote_writes.is_empty() {
        return;
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
        "Samples dropped unsent, by reason: too_old (queue.max_age), over_size (queue.max_bytes), rejected (a 4xx).",
        "counter",
    );
    for (target, delivery, _) in &remote_writes {
        for (reason, n_samples) in &delivery.samples_dropped {
            exposition.sample(
                "apimetrics_agent_remote_write_samples_dropped_total",
                &[("target", target), ("reason", reason)],
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
