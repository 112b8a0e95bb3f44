//! The remote-write outlet: snappy-compressed protobuf straight into Prometheus, Mimir, Cortex,
//! Thanos or VictoriaMetrics. Unlike a gateway, a receiver keeps every sample with its
//! timestamp, so each tick's samples wait in a durable queue (`queue`) until a 2xx, and an
//! outage leaves no hole: the backlog goes out oldest first, in batches, ahead of new ticks.

pub mod queue;
pub mod request;

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use reqwest::Url;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE};
use serde::Deserialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use toml::Spanned;
use tracing::{debug, info, warn};

use self::queue::{Backlog, Batch, Queue};
use self::request::LabelSet;
use crate::config::{Config, Problems, byte_size, duration};
use crate::http::{Backoff, Failure, HttpSettings, RawBasicAuth, RawHttp, RawTls};
use crate::snapshot::Snapshot;
use crate::telemetry::AgentState;

/// One `[[remote_write]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRemoteWrite {
    /// Names the queue file and the `target` label; default: derived from the URL.
    name: Option<Spanned<String>>,
    /// The receiver's write endpoint, e.g. Prometheus's `/api/v1/write`.
    url: Spanned<String>,
    /// How long one request may take, connecting included.
    timeout: Option<Spanned<String>>,
    /// The most samples in one request.
    #[serde(default = "default_max_samples_per_send")]
    max_samples_per_send: Spanned<i64>,
    /// The queue's bounds.
    #[serde(default)]
    queue: RawQueue,
    /// Extra request headers, e.g. Mimir's `X-Scope-OrgID`.
    #[serde(default)]
    headers: std::collections::BTreeMap<Spanned<String>, Spanned<String>>,
    /// HTTP basic auth.
    basic_auth: Option<Spanned<RawBasicAuth>>,
    /// A bearer token, written in the config.
    bearer_token: Option<Spanned<String>>,
    /// A file holding the bearer token.
    bearer_token_file: Option<Spanned<String>>,
    /// A private CA, a client certificate, or (tests only) no verification.
    tls: Option<Spanned<RawTls>>,
    /// A forward proxy; by default HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the environment.
    proxy_url: Option<Spanned<String>>,
}

fn default_max_samples_per_send() -> Spanned<i64> {
    Spanned::new(0..0, 2000)
}

/// `queue = { max_age = "1h", max_bytes = "256MiB" }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    /// Samples older than this are dropped unsent (and counted).
    max_age: Option<Spanned<String>>,
    /// Beyond this much queued, the oldest samples are dropped (and counted).
    max_bytes: Option<Spanned<String>>,
}

/// A checked remote-write target.
#[derive(Debug, Clone)]
pub struct RemoteWriteConfig {
    pub name: String,
    pub url: Url,
    pub timeout: Duration,
    pub max_samples_per_send: usize,
    pub max_age: Duration,
    pub max_bytes: u64,
    pub http: HttpSettings,
}

impl RemoteWriteConfig {
    /// Where this target's queue lives under `state_dir`.
    pub fn queue_path(&self, state_dir: &Path) -> std::path::PathBuf {
        state_dir.join("remote_write").join(format!("{}.sqlite3", self.name))
    }
}

/// Checks `remote_write[index]`.
pub fn validate(problems: &mut Problems<'_>, index: usize, raw: &RawRemoteWrite, base: &Path) -> RemoteWriteConfig {
    let key = format!("remote_write[{index}]");
    let url = match Url::parse(raw.url.get_ref()) {
        Ok(url)
            if matches!(url.scheme(), "http" | "https") && url.username().is_empty() && url.password().is_none() =>
        {
            Some(url)
        }
        _ => {
            problems.at(
                &raw.url,
                &format!("{key}.url"),
                format_args!(
                    "{:?} is not an http(s) URL without credentials, e.g. \"https://mimir.example.org/api/v1/push\"",
                    raw.url.get_ref()
                ),
            );
            None
        }
    };
    let name = match &raw.name {
        Some(name) => {
            let valid = !name.get_ref().is_empty()
                && name.get_ref().chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !valid {
                problems.at(name, &format!("{key}.name"), "use letters, digits, '_', '-' and '.' only");
            }
            name.get_ref().clone()
        }
        None => url.as_ref().map(name_from_url).unwrap_or_default(),
    };
    let max_samples_per_send = *raw.max_samples_per_send.get_ref();
    if !(1..=1_000_000).contains(&max_samples_per_send) {
        problems.at(&raw.max_samples_per_send, &format!("{key}.max_samples_per_send"), "must be from 1 to 1000000");
    }
    let max_bytes = match &raw.queue.max_bytes {
        None => 256 << 20,
        Some(value) => byte_size(value.get_ref()).unwrap_or_else(|| {
            problems.at(
                value,
                &format!("{key}.queue.max_bytes"),
                format_args!("{:?} is not a size, e.g. \"256MiB\", \"1GB\"", value.get_ref()),
            );
            0
        }),
    };
    RemoteWriteConfig {
        name,
        url: url.unwrap_or_else(|| Url::parse("http://invalid.invalid/").expect("a constant URL parses")),
        timeout: duration(problems, raw.timeout.as_ref(), &format!("{key}.timeout"), "30s"),
        max_samples_per_send: max_samples_per_send.max(1) as usize,
        max_age: duration(problems, raw.queue.max_age.as_ref(), &format!("{key}.queue.max_age"), "1h"),
        max_bytes,
        http: HttpSettings::validate(
            problems,
            &key,
            RawHttp {
                headers: &raw.headers,
                basic_auth: raw.basic_auth.as_ref(),
                bearer_token: raw.bearer_token.as_ref(),
                bearer_token_file: raw.bearer_token_file.as_ref(),
                tls: raw.tls.as_ref(),
                proxy_url: raw.proxy_url.as_ref(),
            },
            base,
        ),
    }
}

/// `https://mimir.example.org/api/v1/push` → `mimir.example.org_api_v1_push`.
fn name_from_url(url: &Url) -> String {
    let mut raw = url.host_str().unwrap_or("remote").to_owned();
    if let Some(port) = url.port() {
        raw.push_str(&format!("_{port}"));
    }
    raw.push_str(url.path());
    let name: String =
        raw.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '.') { c } else { '_' }).collect();
    name.trim_matches('_').to_owned()
}

/// The least time between two requests while a backlog drains: the bounded rate.
const MIN_SEND_INTERVAL: Duration = Duration::from_millis(50);

/// One target's queue and what the tick loop needs to fill it.
#[derive(Debug)]
pub struct RemoteWriteTarget {
    pub config: RemoteWriteConfig,
    queue: Queue,
    /// The label sets of the last tick queued, for stale markers.
    previous: Mutex<(i64, Vec<LabelSet>)>,
    wake: Notify,
}

impl RemoteWriteTarget {
    pub fn open(config: RemoteWriteConfig, state_dir: &Path) -> anyhow::Result<RemoteWriteTarget> {
        let queue = Queue::open(&config.queue_path(state_dir))?;
        let newest = queue.newest_timestamp_ms()?.unwrap_or(0);
        Ok(RemoteWriteTarget { config, queue, previous: Mutex::new((newest, Vec::new())), wake: Notify::new() })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Commits a tick's samples to the queue, stamped with the tick's time (moved 1 ms past the
    /// newest queued if the clock went back), and wakes the sender. Blocking.
    pub fn enqueue(&self, snapshot: &Snapshot, config: &Config) -> anyhow::Result<()> {
        let mut previous = self.previous.lock().unwrap_or_else(PoisonError::into_inner);
        let timestamp_ms = snapshot.computed_at.timestamp_millis().max(previous.0 + 1);
        let (series, sent) = request::tick_series(snapshot, &config.metric, &config.labels, timestamp_ms, &previous.1);
        self.queue
            .push(timestamp_ms, &series, self.config.max_samples_per_send)
            .with_context(|| format!("queueing the tick for {}", self.name()))?;
        *previous = (timestamp_ms, sent);
        drop(previous);
        debug!(target = %self.name(), timestamp_ms, n_series = series.len(), "queued a tick");
        self.wake.notify_one();
        Ok(())
    }
}

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
    Retry(Duration, Failure),
}

/// Sends one target's queue.
#[derive(Debug)]
pub struct Sender {
    target: Arc<RemoteWriteTarget>,
    client: reqwest::Client,
    backoff: Backoff,
    /// No request before this instant: the receiver's last `Retry-After`.
    not_before: Option<Instant>,
    /// Send batches up to this id one at a time: a request holding them was refused whole, and
    /// one at a time the receiver keeps what it accepts.
    one_at_a_time_until: i64,
}

impl Sender {
    pub fn new(target: Arc<RemoteWriteTarget>) -> anyhow::Result<Sender> {
        let client = target.config.http.client(target.config.timeout)?;
        Ok(Sender {
            target,
            client,
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(60)),
            not_before: None,
            one_at_a_time_until: 0,
        })
    }

    /// Runs a blocking queue operation off the runtime.
    async fn with_queue<T: Send + 'static>(
        &self,
        operation: impl FnOnce(&Queue) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let target = self.target.clone();
        tokio::task::spawn_blocking(move || operation(&target.queue)).await.context("the queue task failed")?
    }

    async fn step(&mut self, state: &AgentState) -> anyhow::Result<Step> {
        let name = self.target.name().to_owned();
        let oldest_kept = Utc::now().timestamp_millis() - self.target.config.max_age.as_millis() as i64;
        let max_bytes = self.target.config.max_bytes;
        let dropped = self.with_queue(move |queue| queue.enforce_bounds(oldest_kept, max_bytes)).await?;
        for (reason, n_samples) in [("too_old", dropped.too_old), ("over_size", dropped.over_size)] {
            if n_samples > 0 {
                warn!(target = %name, n_samples, reason, "dropped queued samples past the queue's bounds");
                state.record_samples_dropped(&name, reason, n_samples);
            }
        }
        let max_samples = self.target.config.max_samples_per_send as u64;
        let one_at_a_time = self.one_at_a_time_until;
        let batches = self
            .with_queue(move |queue| {
                let batches = queue.oldest(max_samples, 10_000)?;
                let single = batches.first().is_some_and(|batch| batch.id <= one_at_a_time);
                Ok(if single { batches.into_iter().take(1).collect() } else { batches })
            })
            .await?;
        self.record_backlog(state).await?;
        if batches.is_empty() {
            return Ok(Step::Idle);
        }
        if let Some(wait) = self.not_before.and_then(|at| at.checked_duration_since(Instant::now())) {
            return Ok(Step::Retry(
                wait,
                Failure::Retryable { reason: "waiting for Retry-After".into(), retry_after: None },
            ));
        }

        let n_samples: u64 = batches.iter().map(|batch| batch.n_samples).sum();
        let started = Instant::now();
        let result = self.send(&batches).await;
        state.record_push(&name, result.as_ref().map(|_| ()), started.elapsed(), Utc::now());
        let ids: Vec<i64> = batches.iter().map(|batch| batch.id).collect();
        match result {
            Ok(()) => {
                self.with_queue(move |queue| queue.remove(&ids)).await?;
                state.record_samples_sent(&name, n_samples);
                self.backoff.reset();
                self.record_backlog(state).await?;
                Ok(Step::Sent)
            }
            Err(failure @ Failure::Retryable { .. }) => {
                let retry_after = match &failure {
                    Failure::Retryable { retry_after, .. } => *retry_after,
                    Failure::Permanent { .. } => None,
                };
                let wait = self.backoff.next_wait(retry_after);
                if retry_after.is_some() {
                    self.not_before = Some(Instant::now() + wait);
                }
                warn!(target = %name, n_samples, reason = %failure, retry_in = ?wait, "remote write failed; the samples stay queued");
                Ok(Step::Retry(wait, failure))
            }
            Err(Failure::Permanent { reason }) if batches.len() > 1 => {
                self.one_at_a_time_until = ids[ids.len() - 1];
                warn!(target = %name, n_batches = batches.len(), %reason, "the receiver refused a request; sending its batches one by one to keep what it accepts");
                Ok(Step::Regrouped)
            }
            Err(Failure::Permanent { reason }) => {
                self.with_queue(move |queue| queue.remove(&ids)).await?;
                state.record_samples_dropped(&name, "rejected", n_samples);
                warn!(target = %name, n_samples, %reason, "the receiver refused these samples; dropped them");
                Ok(Step::Rejected { n_samples, reason })
            }
        }
    }

    async fn send(&self, batches: &[Batch]) -> Result<(), Failure> {
        let body = request::encode(batches.iter().flat_map(|batch| &batch.series), &[]);
        let request = self
            .client
            .post(self.target.config.url.clone())
            .header(CONTENT_ENCODING, "snappy")
            .header(CONTENT_TYPE, "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body);
        crate::http::send(self.target.config.http.authorize(request)).await.map(|_| ())
    }

    async fn record_backlog(&self, state: &AgentState) -> anyhow::Result<()> {
        let backlog: Backlog = self.with_queue(|queue| queue.backlog()).await?;
        state.record_backlog(self.target.name(), backlog);
        Ok(())
    }
}

/// Sends the target's queue until `stop`: whenever a tick queues samples, and after failures
/// with backoff. New ticks never interrupt a backlog: they queue behind it.
pub async fn deliver(mut sender: Sender, state: Arc<AgentState>, stop: CancellationToken) {
    let target = sender.target.clone();
    loop {
        let pause = match sender.step(&state).await {
            Ok(Step::Idle) => {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = target.wake.notified() => continue,
                }
            }
            Ok(Step::Sent) => MIN_SEND_INTERVAL,
            Ok(Step::Regrouped | Step::Rejected { .. }) => Duration::ZERO,
            Ok(Step::Retry(wait, _)) => wait,
            Err(error) => {
                warn!(target = %target.name(), error = %format!("{error:#}"), "the remote-write queue failed; trying again");
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
/// within `deadline`. `Err` says why samples stay queued, or which the receiver refused.
pub async fn drain(
    mut sender: Sender,
    state: &AgentState,
    max_failures: u32,
    deadline: Duration,
) -> Result<(), String> {
    let give_up_at = Instant::now() + deadline;
    let mut n_failures = 0;
    let mut rejected: Option<(u64, String)> = None;
    loop {
        match sender.step(state).await.map_err(|error| format!("{error:#}"))? {
            Step::Idle => {
                if let Some((n_samples, reason)) = rejected {
                    return Err(format!("the receiver refused {n_samples} samples, which were dropped: {reason}"));
                }
                info!(target = %sender.target.name(), "sent everything queued");
                return Ok(());
            }
            Step::Sent => {
                n_failures = 0;
                tokio::time::sleep(MIN_SEND_INTERVAL).await;
            }
            Step::Regrouped => n_failures = 0,
            Step::Rejected { n_samples, reason } => {
                let total = rejected.as_ref().map_or(0, |(n, _)| *n) + n_samples;
                rejected = Some((total, reason));
            }
            Step::Retry(wait, failure) => {
                n_failures += 1;
                if n_failures >= max_failures || Instant::now() + wait > give_up_at {
                    let backlog = state.backlog(sender.target.name()).unwrap_or_default();
                    return Err(format!("{failure}; {} samples stay queued for the next run", backlog.n_samples));
                }
                tokio::time::sleep(wait).await;
            }
        }
    }
}
