//! The sending side of one remote-write target: the oldest batches first, at a bounded rate,
//! removed from the queue only after the receiver's 2xx; retries paced; a request refused whole
//! resent batch by batch so the receiver keeps what it accepts; the queue's bounds enforced
//! before each send, and every sample dropped counted by reason.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::config::RemoteWriteConfig;
use super::queue::{Batch, Dropped, Queue};
use super::request;
use crate::http::pacing::Pacing;
use crate::http::{self, Failure};
use crate::telemetry::{DropReason, Telemetry};

/// The least time between two requests while a backlog drains: the bounded rate.
const MIN_SEND_INTERVAL: Duration = Duration::from_millis(50);

/// What one step of a sender did.
#[derive(Debug)]
enum Step {
    /// Nothing waits.
    Idle,
    /// A request succeeded; more may wait.
    Sent,
    /// A refused request's batches are to go one at a time; go on at once.
    Regrouped,
    /// The receiver refused these samples for good; they were dropped. Go on at once.
    Rejected { n_samples: u64, reason: String },
    /// The request failed and may pass later: wait this long.
    Retry { wait: Duration, failure: Failure },
}

/// Sends one target's queue.
#[derive(Debug)]
pub(crate) struct Sender {
    config: RemoteWriteConfig,
    queue: Arc<Queue>,
    /// Notified when a tick was queued.
    wake: Arc<Notify>,
    client: reqwest::Client,
    pacing: Pacing,
    /// Send batches up to this id one at a time: a request holding them was refused whole, and
    /// one at a time the receiver keeps what it accepts.
    one_at_a_time_until: i64,
}

/// Why `drain` left samples behind.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DrainError {
    #[error("{failure}; {n_samples_queued} samples stay queued for the next run")]
    Failed { failure: Failure, n_samples_queued: u64 },
    #[error("the receiver refused {n_samples} samples, which were dropped: {reason}")]
    Refused { n_samples: u64, reason: String },
    #[error("{0:#}")]
    Queue(anyhow::Error),
}

impl Sender {
    pub(crate) fn new(config: RemoteWriteConfig, queue: Arc<Queue>, wake: Arc<Notify>) -> anyhow::Result<Sender> {
        let client = config.http.client(config.timeout).with_context(|| format!("setting up {}", config.name))?;
        Ok(Sender {
            config,
            queue,
            wake,
            client,
            pacing: Pacing::new(Duration::from_millis(500), Duration::from_secs(60)),
            one_at_a_time_until: 0,
        })
    }

    fn name(&self) -> &str {
        &self.config.name
    }

    /// Runs a blocking queue operation off the runtime.
    async fn with_queue<T: Send + 'static>(
        &self,
        operation: impl FnOnce(&Queue) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let queue = self.queue.clone();
        tokio::task::spawn_blocking(move || operation(&queue)).await.context("the queue task failed")?
    }

    /// Drops what is past the queue's bounds, counted by reason.
    async fn enforce_bounds(&self, telemetry: &Telemetry) -> anyhow::Result<()> {
        let (oldest_kept, max_bytes) = self.config.queue_bounds_now();
        let dropped = self.with_queue(move |queue| queue.enforce_bounds(oldest_kept, max_bytes)).await?;
        record_bound_drops(telemetry, self.name(), dropped);
        Ok(())
    }

    /// The batches the next request carries: the oldest, as many as fit one request, or only
    /// one while a refused request's batches go one at a time. Batches that cannot be read back
    /// are dropped on the way and counted.
    async fn next_batches(&self, telemetry: &Telemetry) -> anyhow::Result<Vec<Batch>> {
        let max_samples = self.config.max_samples_per_send as u64;
        let one_at_a_time = self.one_at_a_time_until;
        let (batches, dropped) = self
            .with_queue(move |queue| {
                let (batches, dropped) = queue.oldest(max_samples, 10_000)?;
                let single = batches.first().is_some_and(|batch| batch.id <= one_at_a_time);
                Ok((if single { batches.into_iter().take(1).collect() } else { batches }, dropped))
            })
            .await?;
        if dropped.corrupt > 0 {
            telemetry.record_samples_dropped(self.name(), DropReason::Corrupt, dropped.corrupt);
        }
        Ok(batches)
    }

    async fn step(&mut self, telemetry: &Telemetry) -> anyhow::Result<Step> {
        self.enforce_bounds(telemetry).await?;
        let batches = self.next_batches(telemetry).await?;
        self.record_backlog(telemetry).await?;
        if batches.is_empty() {
            return Ok(Step::Idle);
        }
        if let Some(wait) = self.pacing.held_for() {
            let failure = Failure::Retryable { reason: "waiting for Retry-After".into(), retry_after: None };
            return Ok(Step::Retry { wait, failure });
        }

        let name = self.name().to_owned();
        let n_samples: u64 = batches.iter().map(|batch| batch.n_samples).sum();
        let started = Instant::now();
        let result = self.send(&batches).await;
        telemetry.record_push(&name, result.as_ref().map(|_| ()), started.elapsed(), Utc::now());
        let ids: Vec<i64> = batches.iter().map(|batch| batch.id).collect();
        match result {
            Ok(()) => {
                self.with_queue(move |queue| queue.remove(&ids)).await?;
                telemetry.record_samples_sent(&name, n_samples);
                self.pacing.reset();
                self.record_backlog(telemetry).await?;
                Ok(Step::Sent)
            }
            Err(failure @ Failure::Retryable { .. }) => {
                let wait = self.pacing.after_failure(failure.retry_after());
                warn!(target = %name, n_samples, reason = %failure, retry_in = ?wait, "remote write failed; the samples stay queued");
                Ok(Step::Retry { wait, failure })
            }
            Err(Failure::Permanent { reason }) if batches.len() > 1 => {
                self.one_at_a_time_until = ids[ids.len() - 1];
                warn!(target = %name, n_batches = batches.len(), %reason, "the receiver refused a request; sending its batches one by one to keep what it accepts");
                Ok(Step::Regrouped)
            }
            Err(Failure::Permanent { reason }) => {
                self.with_queue(move |queue| queue.remove(&ids)).await?;
                telemetry.record_samples_dropped(&name, DropReason::Rejected, n_samples);
                warn!(target = %name, n_samples, %reason, "the receiver refused these samples; dropped them");
                Ok(Step::Rejected { n_samples, reason })
            }
        }
    }

    async fn send(&self, batches: &[Batch]) -> Result<(), Failure> {
        post(&self.client, &self.config, request::encode(batches.iter().flat_map(|batch| &batch.series))).await
    }

    async fn record_backlog(&self, telemetry: &Telemetry) -> anyhow::Result<()> {
        let backlog = self.with_queue(|queue| queue.backlog()).await?;
        telemetry.record_backlog(self.name(), backlog);
        Ok(())
    }
}

/// Counts (and logs) what a queue's bounds dropped, by reason.
pub(crate) fn record_bound_drops(telemetry: &Telemetry, target: &str, dropped: Dropped) {
    for (reason, n_samples) in [(DropReason::TooOld, dropped.too_old), (DropReason::OverSize, dropped.over_size)] {
        if n_samples > 0 {
            warn!(target, n_samples, reason = reason.as_str(), "dropped queued samples past the queue's bounds");
            telemetry.record_samples_dropped(target, reason, n_samples);
        }
    }
}

/// Posts one write request's `body` to the target.
async fn post(client: &reqwest::Client, config: &RemoteWriteConfig, body: Vec<u8>) -> Result<(), Failure> {
    let request = client
        .post(config.url.clone())
        .header(CONTENT_ENCODING, "snappy")
        .header(CONTENT_TYPE, "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body);
    http::send(config.http.authorize(request)).await
}

/// For `check --targets`: a write request with no series, which a receiver answers as it would
/// a real one (its address, TLS, auth and path all tried) and which stores nothing.
pub(crate) async fn probe(config: &RemoteWriteConfig) -> Result<(), Failure> {
    let client = config
        .http
        .client(config.timeout)
        .map_err(|error| Failure::Permanent { reason: format!("cannot set up the client: {error:#}") })?;
    post(&client, config, request::encode([])).await
}

/// Sends the target's queue until `stop`: whenever a tick queues samples, and after failures
/// with backoff. New ticks never interrupt a backlog: they queue behind it.
pub(crate) async fn deliver(mut sender: Sender, telemetry: Arc<Telemetry>, stop: CancellationToken) {
    let wake = sender.wake.clone();
    loop {
        // A request under way is dropped at `stop` (its batches stay queued): a receiver that
        // never answers must not hold a reload or shutdown, nor leave this sender on the queue
        // beside the next one.
        let stepped = tokio::select! {
            () = stop.cancelled() => break,
            stepped = sender.step(&telemetry) => stepped,
        };
        let pause = match stepped {
            Ok(Step::Idle) => {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = wake.notified() => continue,
                }
            }
            Ok(Step::Sent) => MIN_SEND_INTERVAL,
            Ok(Step::Regrouped | Step::Rejected { .. }) => Duration::ZERO,
            Ok(Step::Retry { wait, .. }) => wait,
            Err(error) => {
                warn!(target = %sender.name(), error = %format!("{error:#}"), "the remote-write queue failed; trying again");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// For `once`: sends everything queued, retrying failures up to `max_failures` times in a row
/// within `deadline`. An error says why samples stay queued, or which the receiver refused.
pub(crate) async fn drain(
    mut sender: Sender,
    telemetry: &Telemetry,
    max_failures: u32,
    deadline: Duration,
) -> Result<(), DrainError> {
    let give_up_at = Instant::now() + deadline;
    let mut n_failures = 0;
    let mut refused: Option<DrainError> = None;
    loop {
        let stepped = tokio::select! {
            () = tokio::time::sleep_until(give_up_at.into()) => {
                let failure = Failure::Retryable {
                    reason: format!("no answer within {}", humantime::format_duration(deadline)),
                    retry_after: None,
                };
                let n_samples_queued = telemetry.backlog(sender.name()).unwrap_or_default().n_samples;
                return Err(DrainError::Failed { failure, n_samples_queued });
            }
            stepped = sender.step(telemetry) => stepped,
        };
        match stepped.map_err(DrainError::Queue)? {
            Step::Idle => {
                if let Some(refused) = refused {
                    return Err(refused);
                }
                info!(target = %sender.name(), "sent everything queued");
                return Ok(());
            }
            Step::Sent => {
                n_failures = 0;
                tokio::time::sleep(MIN_SEND_INTERVAL).await;
            }
            Step::Regrouped => n_failures = 0,
            Step::Rejected { n_samples, reason } => {
                let n_before = match refused {
                    Some(DrainError::Refused { n_samples, .. }) => n_samples,
                    _ => 0,
                };
                refused = Some(DrainError::Refused { n_samples: n_before + n_samples, reason });
            }
            Step::Retry { wait, failure } => {
                n_failures += 1;
                if n_failures >= max_failures || Instant::now() + wait > give_up_at {
                    let n_samples_queued = telemetry.backlog(sender.name()).unwrap_or_default().n_samples;
                    return Err(DrainError::Failed { failure, n_samples_queued });
                }
                tokio::time::sleep(wait).await;
            }
        }
    }
}
