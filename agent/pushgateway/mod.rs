//! The Pushgateway outlet, for sites that cannot be scraped: each target pushes the latest
//! snapshot to its group, `/metrics/job/<job>{/<label>/<value>}`, retrying what may pass and
//! never queueing old snapshots: a gateway only ever holds the latest.

pub(crate) mod config;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use self::config::PushgatewayConfig;
use crate::exposition::{self, Rendered};
use crate::http::pacing::Pacing;
use crate::http::{self, Failure};
use crate::telemetry::Telemetry;

/// For `check --targets`: asks the gateway whether it is ready, `GET /-/ready` beside the
/// group's `/metrics/job/…` path, through the target's TLS, auth and proxy.
pub(crate) async fn probe(config: &PushgatewayConfig) -> Result<(), Failure> {
    let client = config
        .http
        .client(config.timeout)
        .map_err(|error| Failure::Permanent { reason: format!("cannot set up the client: {error:#}") })?;
    let mut ready = config.group_url.clone();
    let prefix = ready.path().split("/metrics/job/").next().unwrap_or("").trim_end_matches('/').to_owned();
    ready.set_path(&format!("{prefix}/-/ready"));
    http::send(config.http.authorize(client.get(ready))).await
}

/// How long deleting the group at shutdown may take, within the agent's shutdown grace.
const DELETE_DEADLINE: Duration = Duration::from_secs(5);

/// A target at work: its client, and how its retries are paced.
#[derive(Debug)]
pub(crate) struct Pushgateway {
    config: PushgatewayConfig,
    client: reqwest::Client,
    pacing: Pacing,
}

impl Pushgateway {
    pub(crate) fn new(config: PushgatewayConfig) -> anyhow::Result<Pushgateway> {
        let client = config.http.client(config.timeout)?;
        Ok(Pushgateway { config, client, pacing: Pacing::new(Duration::from_millis(250), Duration::from_secs(30)) })
    }

    pub(crate) fn name(&self) -> &str {
        self.config.name()
    }

    async fn send(&self, method: Method, body: Option<&str>) -> Result<(), Failure> {
        let mut request = self.client.request(method, self.config.group_url.clone());
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, exposition::CONTENT_TYPE).body(body.to_owned());
        }
        http::send(self.config.http.authorize(request)).await
    }

    /// Pushes `body`, retrying what may pass with backoff, until it succeeds, fails for good,
    /// `max_attempts` run out, or `give_up` resolves (a newer snapshot, or shutdown).
    pub(crate) async fn push(
        &mut self,
        body: &str,
        max_attempts: u32,
        give_up: impl Future<Output = ()>,
    ) -> Result<(), Failure> {
        tokio::pin!(give_up);
        self.pacing.reset();
        let mut last_failure = None;
        for attempt in 1.. {
            // The gateway's Retry-After holds across snapshots, so it is kept until it has passed.
            if let Some(held_for) = self.pacing.held_for() {
                tokio::select! {
                    () = &mut give_up => return Err(last_failure.unwrap_or_else(|| Failure::Retryable {
                        reason: "the gateway's Retry-After had not passed".into(),
                        retry_after: None,
                    })),
                    () = tokio::time::sleep(held_for) => {}
                }
            }
            let failure = match self.send(self.config.method.clone(), Some(body)).await {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
            if !matches!(failure, Failure::Retryable { .. }) || attempt >= max_attempts {
                warn!(target = %self.name(), attempt, reason = %failure, "push failed; not retrying until the next tick");
                return Err(failure);
            }
            let wait = self.pacing.after_failure(failure.retry_after());
            warn!(target = %self.name(), attempt, reason = %failure, retry_in = ?wait, "push failed; retrying");
            if failure.retry_after().is_none() {
                tokio::select! {
                    () = &mut give_up => return Err(failure),
                    () = tokio::time::sleep(wait) => {}
                }
            }
            last_failure = Some(failure);
        }
        unreachable!("the attempts never run out before max_attempts")
    }

    /// Deletes the group, once.
    async fn delete(&self) -> Result<(), Failure> {
        self.send(Method::DELETE, None).await
    }
}

/// Pushes every new snapshot to `target` until `stop`; a newer snapshot ends the retries of an
/// older one. When the agent itself stops (`shutdown`, not a reload), deletes the group if the
/// target asks for it.
pub(crate) async fn deliver(
    mut target: Pushgateway,
    mut snapshots: watch::Receiver<Option<Arc<Rendered>>>,
    telemetry: Arc<Telemetry>,
    stop: CancellationToken,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            changed = snapshots.changed() => if changed.is_err() { break },
        }
        let Some(rendered) = snapshots.borrow_and_update().clone() else { continue };
        // A newer snapshot ends the retries, not a request under way (a slow gateway must still
        // get each push through); shutdown ends both.
        let mut newer = snapshots.clone();
        let give_up = async move {
            let _ = newer.changed().await;
        };
        let started = Instant::now();
        let pushed = tokio::select! {
            result = target.push(&rendered.body, u32::MAX, give_up) => Some(result),
            () = stop.cancelled() => None,
        };
        let Some(result) = pushed else { break };
        telemetry.record_push(target.name(), result.as_ref().map(|_| ()), started.elapsed(), Utc::now());
    }
    if target.config.delete_on_shutdown && shutdown.is_cancelled() {
        match tokio::time::timeout(DELETE_DEADLINE, target.delete()).await {
            Ok(Ok(())) => info!(target = %target.name(), "deleted the group on shutdown"),
            Ok(Err(failure)) => {
                warn!(target = %target.name(), reason = %failure, "could not delete the group on shutdown")
            }
            Err(_) => {
                warn!(target = %target.name(), deadline = ?DELETE_DEADLINE, "the gateway did not answer the delete in time; the group stays")
            }
        }
    }
}
