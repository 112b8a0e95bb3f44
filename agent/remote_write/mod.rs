//! The remote-write outlet: snappy-compressed protobuf straight into Prometheus, Mimir, Cortex,
//! Thanos or VictoriaMetrics. Unlike a gateway, a receiver keeps every sample with its
//! timestamp, so each tick's samples wait in a durable queue (`queue`) until a 2xx, and an
//! outage leaves no hole: the backlog goes out oldest first, in batches, ahead of new ticks
//! (`sender`). This file is the tick's side: a target's queue and how a snapshot goes into it.

pub(crate) mod config;
pub mod queue;
pub mod request;
pub(crate) mod sender;

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;
use tracing::{debug, info, warn};

use self::config::RemoteWriteConfig;
use self::queue::{Dropped, Queue};
use self::request::LabelSet;
use self::request::proto::TimeSeries;
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
    /// Ticks the queue could not take (a full disk, an I/O error), oldest first, written ahead
    /// of the next tick once it can; at most `MAX_HELD_SAMPLES`.
    held: Mutex<VecDeque<HeldTick>>,
    /// Wakes the sender when a tick was queued.
    wake: Arc<Notify>,
}

/// The most samples kept in memory while the queue cannot be written (about 200 bytes each):
/// beyond it the oldest are dropped as `queue_write_failed`.
pub(crate) const MAX_HELD_SAMPLES: usize = 50_000;

/// A tick's series, stamped, waiting for the queue to take them.
#[derive(Debug)]
struct HeldTick {
    timestamp_ms: i64,
    series: Vec<TimeSeries>,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Enqueued {
    /// Queued; writing it dropped what the queue's bounds no longer hold.
    Queued { n_samples: u64, dropped: Dropped },
    /// Dropped: stamped at or before a sample already queued, which a receiver would refuse.
    ClockWentBack { n_samples: u64 },
    /// The queue could not be written: the tick is held in memory with the others not yet
    /// written, and the oldest beyond `MAX_HELD_SAMPLES` were dropped.
    WriteFailed {
        error: String,
        /// The tick's own.
        n_samples: u64,
        n_samples_held: u64,
        n_samples_dropped: u64,
        /// What the bounds dropped while the held ticks before the failure were written.
        dropped: Dropped,
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
            held: Mutex::new(VecDeque::new()),
            wake: Arc::new(Notify::new()),
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }

    /// Commits a tick's samples to the queue, stamped with the tick's time, and wakes the
    /// sender. A tick stamped at or before the newest sample ever queued here (the clock went
    /// back) is dropped instead: a receiver refuses samples out of order. When the queue cannot
    /// be written, the tick is held in memory and written ahead of the next. Blocking.
    pub(crate) fn enqueue(&self, snapshot: &Snapshot) -> Enqueued {
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
            return Enqueued::ClockWentBack { n_samples: tick.series.len() as u64 };
        }
        if previous.clock_behind {
            info!(target = %self.name(), "the clock has passed the newest sample queued: queueing again");
        }
        *previous = QueuedTick { timestamp_ms, label_sets: tick.label_sets, clock_behind: false };
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        drop(previous);
        let n_samples = tick.series.len() as u64;
        held.push_back(HeldTick { timestamp_ms, series: tick.series });
        let outcome = self.write_held(&mut held, n_samples);
        drop(held);
        self.wake.notify_one();
        outcome
    }

    /// Writes the held ticks (the newest, the tick's own, of `n_samples`) to the queue, oldest
    /// first, each in its own transaction, up to the first that fails; then drops the oldest
    /// beyond `MAX_HELD_SAMPLES`.
    fn write_held(&self, held: &mut VecDeque<HeldTick>, n_samples: u64) -> Enqueued {
        let mut dropped = Dropped::default();
        while let Some(oldest) = held.front() {
            let bounds = Some(self.config.queue_bounds_now());
            match self.queue.push(oldest.timestamp_ms, &oldest.series, self.config.max_samples_per_send, bounds) {
                Ok(bounded) => {
                    debug!(target = %self.name(), timestamp_ms = oldest.timestamp_ms, n_series = oldest.series.len(), "queued a tick");
                    dropped.too_old += bounded.too_old;
                    dropped.over_size += bounded.over_size;
                    held.pop_front();
                }
                Err(error) => {
                    let mut n_samples_dropped = 0;
                    while held.iter().map(|tick| tick.series.len()).sum::<usize>() > MAX_HELD_SAMPLES {
                        n_samples_dropped += held.pop_front().map_or(0, |tick| tick.series.len() as u64);
                    }
                    let n_samples_held = held.iter().map(|tick| tick.series.len() as u64).sum();
                    let error = format!("{:#}", error.context(format!("writing to the queue of {}", self.name())));
                    return Enqueued::WriteFailed { error, n_samples, n_samples_held, n_samples_dropped, dropped };
                }
            }
        }
        Enqueued::Queued { n_samples, dropped }
    }

    /// The sending side of this target's queue.
    pub(crate) fn sender(&self) -> anyhow::Result<Sender> {
        Sender::new(self.config.clone(), self.queue.clone(), self.wake.clone())
    }
}
