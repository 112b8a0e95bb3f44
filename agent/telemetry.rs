//! What the agent shares between its tick loop and its outlets: the latest good snapshot and the
//! agent's own health, rendered as `apimetrics_agent_*` metrics beside the aggregate.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::exposition::{Exposition, write_aggregate};
use crate::snapshot::Snapshot;

/// The state every outlet reads. Outlets render the snapshot; none of them queries the database.
#[derive(Debug)]
pub struct AgentState {
    pub config: Arc<Config>,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    latest: Option<Arc<Snapshot>>,
    n_ticks_succeeded: u64,
    n_ticks_failed: u64,
    last_tick_duration: Option<Duration>,
    last_error: Option<String>,
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
        AgentState { config, inner: Mutex::new(Inner::default()) }
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
        let inner = self.lock();
        match (&inner.last_error, inner.n_ticks_succeeded + inner.n_ticks_failed) {
            (Some(error), _) => Health::Failing(error.clone()),
            (None, 0) => Health::Starting,
            (None, _) => Health::Healthy,
        }
    }

    /// The scrape endpoint's page: the latest aggregate, then the agent's own metrics as of `now`.
    pub fn render(&self, now: DateTime<Utc>) -> String {
        let inner = self.lock();
        let mut exposition = Exposition::new();
        if let Some(snapshot) = &inner.latest {
            write_aggregate(&mut exposition, snapshot, &self.config.metric, &self.config.labels);
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
        if let Some(snapshot) = &inner.latest {
            let computed_at = snapshot.computed_at;
            exposition.family(
                "apimetrics_agent_last_success_timestamp_seconds",
                "When the served aggregate was computed, in seconds since the Unix epoch.",
                "gauge",
            );
            exposition.sample(
                "apimetrics_agent_last_success_timestamp_seconds",
                &[],
                computed_at.timestamp_millis() as f64 / 1000.0,
            );
            exposition.family(
                "apimetrics_agent_snapshot_age_seconds",
                "How old the served aggregate is; it grows while ticks fail.",
                "gauge",
            );
            let age = (now - computed_at).to_std().unwrap_or_default();
            exposition.sample("apimetrics_agent_snapshot_age_seconds", &[], age.as_secs_f64());
            exposition.family(
                "apimetrics_agent_rows_in_window",
                "Transactions counted in the served aggregate.",
                "gauge",
            );
            exposition.sample("apimetrics_agent_rows_in_window", &[], snapshot.n_rows_in_window);
            exposition.family(
                "apimetrics_agent_rows_skipped",
                "Rows in the window left out of the served aggregate, by reason.",
                "gauge",
            );
            exposition.sample(
                "apimetrics_agent_rows_skipped",
                &[("reason", "bad_timestamp")],
                snapshot.n_rows_bad_timestamp,
            );
            exposition.sample("apimetrics_agent_rows_skipped", &[("reason", "orphaned")], snapshot.n_rows_orphaned);
        }
        exposition.family("apimetrics_agent_build_info", "The agent's version; always 1.", "gauge");
        exposition.sample("apimetrics_agent_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1);
        exposition.into_string()
    }
}
