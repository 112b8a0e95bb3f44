//! The agent's life: bind the scrape endpoint, drive the schedule, take a snapshot per tick off
//! the async runtime, hand it to the outlets, and stop cleanly when told to.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::Config;
use crate::pushgateway::{self, Pushgateway};
use crate::remote_write::{self, RemoteWriteTarget};
use crate::snapshot::Snapshot;
use crate::telemetry::AgentState;
use crate::{exposition, schedule, scrape, source};

/// How long the tasks under way get to finish after a shutdown signal.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// Runs until `shutdown` resolves (SIGTERM or SIGINT in the binary), then stops cleanly.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let state = Arc::new(AgentState::new(Arc::new(config)));
    let config = state.config.clone();
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();

    if let Some(listen) = config.scrape_listen {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding scrape.listen {listen} (is another process using it?)"))?;
        info!(address = %listener.local_addr()?, "serving /metrics and /healthz");
        let (state, stop) = (state.clone(), stop.clone());
        tasks.spawn(async move {
            if let Err(error) = scrape::serve(listener, state, stop).await {
                warn!(%error, "scrape endpoint stopped");
            }
        });
    }

    // Each target reads the latest snapshot on its own, so none waits on another or on a tick.
    let (snapshot_sender, _) = watch::channel(None::<Arc<Snapshot>>);
    for target in &config.pushgateways {
        let target = Pushgateway::new(target.clone()).with_context(|| format!("setting up {}", target.name()))?;
        tasks.spawn(pushgateway::deliver(target, snapshot_sender.subscribe(), state.clone(), stop.clone()));
    }

    let remote_writes = open_remote_writes(&config)?;
    for target in &remote_writes {
        let sender =
            remote_write::Sender::new(target.clone()).with_context(|| format!("setting up {}", target.name()))?;
        tasks.spawn(remote_write::deliver(sender, state.clone(), stop.clone()));
    }

    let (tick_sender, mut tick_receiver) = mpsc::channel(1);
    let mut schedule =
        tokio::spawn(schedule::drive(config.schedule.clone(), config.run_on_start, tick_sender, stop.clone()));
    info!(config = %config.path.display(), database = %config.source.database.display(), schedule = %config.schedule, "agent started");

    tokio::pin!(shutdown);
    let outcome = loop {
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            ended = &mut schedule => break match ended {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(error),
                Err(error) => Err(error).context("the schedule task failed"),
            },
            Some(()) = tick_receiver.recv() => {
                tokio::select! {
                    () = &mut shutdown => break Ok(()),
                    result = tick(&state) => match result {
                        Ok(snapshot) => {
                            enqueue(&remote_writes, &snapshot, &config).await;
                            snapshot_sender.send_replace(Some(snapshot));
                        }
                        Err(error) => warn!(error = %format!("{error:#}"), "tick failed; serving the last good snapshot"),
                    }
                }
            }
        }
    };

    info!("shutting down");
    stop.cancel();
    tasks.close();
    if tokio::time::timeout(SHUTDOWN_DEADLINE, tasks.wait()).await.is_err() {
        warn!(deadline = ?SHUTDOWN_DEADLINE, "tasks still running at the shutdown deadline; leaving them");
    }
    if !schedule.is_finished() {
        let _ = tokio::time::timeout(SHUTDOWN_DEADLINE, &mut schedule).await;
    }
    outcome
}

/// One tick: read the database off the runtime and record the result. A failure keeps the last
/// good snapshot in place for the outlets; the caller reports it.
pub async fn tick(state: &AgentState) -> anyhow::Result<Arc<Snapshot>> {
    let started = Instant::now();
    let config = state.config.clone();
    let now = Utc::now();
    let result =
        tokio::task::spawn_blocking(move || source::take_snapshot(&config.source, config.metric.zero_fill, now))
            .await
            .context("the tick's database task failed")
            .and_then(|result| result);
    let duration = started.elapsed();
    match result {
        Ok(snapshot) => {
            if snapshot.n_rows_bad_timestamp > 0 {
                warn!(
                    n_rows = snapshot.n_rows_bad_timestamp,
                    "skipped rows whose time_modified is not a Django timestamp (YYYY-MM-DD HH:MM:SS[.ffffff])"
                );
            }
            if snapshot.n_rows_orphaned > 0 {
                warn!(n_rows = snapshot.n_rows_orphaned, "skipped rows whose api_id or status_id names no row");
            }
            info!(
                n_series = snapshot.series.len(),
                n_rows_in_window = snapshot.n_rows_in_window,
                query_ms = snapshot.query_duration.as_millis() as u64,
                "tick done"
            );
            let snapshot = Arc::new(snapshot);
            state.record_success(snapshot.clone(), duration);
            Ok(snapshot)
        }
        Err(error) => {
            state.record_failure(format!("{error:#}"), duration);
            Err(error)
        }
    }
}

/// Opens each remote-write target's queue under `[agent] state_dir`.
fn open_remote_writes(config: &Config) -> anyhow::Result<Vec<Arc<RemoteWriteTarget>>> {
    let targets = config.remote_writes.iter().map(|target| {
        RemoteWriteTarget::open(target.clone(), &config.state_dir)
            .map(Arc::new)
            .with_context(|| format!("opening the queue of remote_write {:?} (agent.state_dir)", target.name))
    });
    targets.collect()
}

/// Commits the tick's samples to every remote-write queue, each off the runtime and all at once,
/// before any of them is sent.
async fn enqueue(targets: &[Arc<RemoteWriteTarget>], snapshot: &Arc<Snapshot>, config: &Arc<Config>) {
    let mut queued = JoinSet::new();
    for target in targets {
        let (target, snapshot, config) = (target.clone(), snapshot.clone(), config.clone());
        queued.spawn_blocking(move || (target.name().to_owned(), target.enqueue(&snapshot, &config)));
    }
    while let Some(joined) = queued.join_next().await {
        match joined {
            Ok((_, Ok(()))) => {}
            Ok((name, Err(error))) => {
                warn!(target = %name, error = %format!("{error:#}"), "could not queue the tick's samples")
            }
            Err(error) => warn!(%error, "a queueing task failed"),
        }
    }
}

/// How many times `once` tries a target, and for how long at most, Retry-After included.
const ONCE_ATTEMPTS: u32 = 4;
const ONCE_DEADLINE: Duration = Duration::from_secs(60);

/// One tick now, for `once`. With `dry_run`, returns the body a push would carry and sends
/// nothing; else pushes to every target at once and fails naming each target that failed.
pub async fn once(config: Config, dry_run: bool) -> anyhow::Result<Option<String>> {
    let state = AgentState::new(Arc::new(config));
    let snapshot = tick(&state).await?;
    let body = exposition::push_body(&snapshot, &state.config.metric, &state.config.labels);
    if dry_run {
        return Ok(Some(body));
    }
    let remote_writes = open_remote_writes(&state.config)?;
    enqueue(&remote_writes, &snapshot, &state.config).await;
    let state = Arc::new(state);
    let mut pushes = JoinSet::new();
    for target in &state.config.pushgateways {
        let mut target = Pushgateway::new(target.clone()).with_context(|| format!("setting up {}", target.name()))?;
        let body = body.clone();
        pushes.spawn(async move {
            let result = target.push(&body, ONCE_ATTEMPTS, tokio::time::sleep(ONCE_DEADLINE)).await;
            (target.name().to_owned(), result.map_err(|failure| failure.to_string()))
        });
    }
    for target in remote_writes {
        let sender =
            remote_write::Sender::new(target.clone()).with_context(|| format!("setting up {}", target.name()))?;
        let state = state.clone();
        pushes.spawn(async move {
            let result = remote_write::drain(sender, &state, ONCE_ATTEMPTS, ONCE_DEADLINE).await;
            (target.name().to_owned(), result)
        });
    }
    let n_targets = pushes.len();
    let mut failures = Vec::new();
    while let Some(joined) = pushes.join_next().await {
        match joined.context("a push task failed")? {
            (name, Ok(())) => info!(target = %name, "pushed"),
            (name, Err(failure)) => failures.push(format!("{name}: {failure}")),
        }
    }
    if !failures.is_empty() {
        failures.sort();
        bail!("{} of {n_targets} push targets failed:\n  {}", failures.len(), failures.join("\n  "));
    }
    Ok(None)
}
