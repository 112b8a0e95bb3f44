//! The remote-write outlet: snappy-compressed protobuf straight into Prometheus, Mimir, Cortex,
//! Thanos or VictoriaMetrics. Unlike a gateway, a receiver keeps every sample with its
//! timestamp, so each tick's samples wait in a durable queue (`queue`) until a 2xx, and an
//! outage leaves no hole: the backlog goes out oldest first, in batches, ahead of new ticks
//! (`sender`). This file is the tick's side: a target's queue and how a snapshot goes into it.

pub(crate) mod config;
pub mod queue;
pub mod request;
pub(crate) mod sender;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context;
use tokio::sync::Notify;
use tracing::debug;

use self::config::RemoteWriteConfig;
use self::queue::Queue;
use self::request::LabelSet;
use self::sender::Sender;
use crate::exposition::config::MetricConfig;
use crate::snapshot::Snapshot;

/// One target's queue and what the tick loop needs to fill it.
#[derive(Debug)]
pub(crate) struct RemoteWriteTarget {
    config: RemoteWriteConfig,
    queue: Arc<Queue>,
    /// How each snapshot becomes series: the family's name and the constant labels.
    metric: MetricConfig,
    labels: BTreeMap<String, String>,
    previous: Mutex<QueuedTick>,
    /// Wakes the sender when a tick was queued.
    wake: Arc<Notify>,
}

/// The last tick queued: its samples' timestamp, and its label sets for stale markers.
#[derive(Debug)]
struct QueuedTick {
    timestamp_ms: i64,
    label_sets: Vec<LabelSet>,
}

impl RemoteWriteTarget {
    /// Opens the target's queue under `state_dir`; its snapshots render with `metric` and `labels`.
    pub(crate) fn open(
        config: RemoteWriteConfig,
        state_dir: &Path,
        metric: MetricConfig,
        labels: BTreeMap<String, String>,
    ) -> anyhow::Result<RemoteWriteTarget> {
        let queue = Queue::open(&config.queue_path(state_dir))?;
        let newest = queue.newest_timestamp_ms()?.unwrap_or(0);
        Ok(RemoteWriteTarget {
            config,
            queue: Arc::new(queue),
            metric,
            labels,
            previous: Mutex::new(QueuedTick { timestamp_ms: newest, label_sets: Vec::new() }),
            wake: Arc::new(Notify::new()),
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }

    /// Commits a tick's samples to the queue, stamped with the tick's time (moved 1 ms past the
    /// newest queued if the clock went back), and wakes the sender. Blocking.
    pub(crate) fn enqueue(&self, snapshot: &Snapshot) -> anyhow::Result<()> {
        let mut previous = self.previous.lock().unwrap_or_else(PoisonError::into_inner);
        let timestamp_ms = snapshot.computed_at.timestamp_millis().max(previous.timestamp_ms + 1);
        let tick = request::tick_series(snapshot, &self.metric, &self.labels, timestamp_ms, &previous.label_sets);
        self.queue
            .push(timestamp_ms, &tick.series, self.config.max_samples_per_send)
            .with_context(|| format!("queueing the tick for {}", self.name()))?;
        *previous = QueuedTick { timestamp_ms, label_sets: tick.label_sets };
        drop(previous);
        debug!(target = %self.name(), timestamp_ms, n_series = tick.series.len(), "queued a tick");
        self.wake.notify_one();
        Ok(())
    }

    /// The sending side of this target's queue.
    pub(crate) fn sender(&self) -> anyhow::Result<Sender> {
        Sender::new(self.config.clone(), self.queue.clone(), self.wake.clone())
    }
}
