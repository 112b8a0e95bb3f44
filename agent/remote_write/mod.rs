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
use tracing::{debug, info, warn};

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
    /// Whether ticks are being dropped because the clock is behind `timestamp_ms`.
    clock_behind: bool,
}

/// What became of a tick's samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enqueued {
    Queued,
    /// Dropped: stamped at or before a sample already queued, which a receiver would refuse.
    ClockWentBack {
        n_samples: u64,
    },
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
            previous: Mutex::new(QueuedTick { timestamp_ms: newest, label_sets: Vec::new(), clock_behind: false }),
            wake: Arc::new(Notify::new()),
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }

    /// Commits a tick's samples to the queue, stamped with the tick's time, and wakes the
    /// sender. A tick stamped at or before the newest sample ever queued here (the clock went
    /// back) is dropped instead: a receiver refuses samples out of order. Blocking.
    pub(crate) fn enqueue(&self, snapshot: &Snapshot) -> anyhow::Result<Enqueued> {
        let mut previous = self.previous.lock().unwrap_or_else(PoisonError::into_inner);
        let timestamp_ms = snapshot.computed_at.timestamp_millis();
        let tick = request::tick_series(snapshot, &self.metric, &self.labels, timestamp_ms, &previous.label_sets);
        if timestamp_ms <= previous.timestamp_ms {
            if !previous.clock_behind {
                warn!(
                    target = %self.name(),
                    tick_at = %snapshot.computed_at,
                    newest_queued_at = %chrono::DateTime::from_timestamp_millis(previous.timestamp_ms).unwrap_or_default(),
                    "the clock went back: dropping ticks until it passes the newest sample queued (a receiver refuses samples out of order)"
                );
            }
            previous.clock_behind = true;
            return Ok(Enqueued::ClockWentBack { n_samples: tick.series.len() as u64 });
        }
        self.queue
            .push(timestamp_ms, &tick.series, self.config.max_samples_per_send)
            .with_context(|| format!("queueing the tick for {}", self.name()))?;
        if previous.clock_behind {
            info!(target = %self.name(), "the clock has passed the newest sample queued: queueing again");
        }
        *previous = QueuedTick { timestamp_ms, label_sets: tick.label_sets, clock_behind: false };
        drop(previous);
        debug!(target = %self.name(), timestamp_ms, n_series = tick.series.len(), "queued a tick");
        self.wake.notify_one();
        Ok(Enqueued::Queued)
    }

    /// The sending side of this target's queue.
    pub(crate) fn sender(&self) -> anyhow::Result<Sender> {
        Sender::new(self.config.clone(), self.queue.clone(), self.wake.clone())
    }
}
