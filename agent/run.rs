//! The agent's life: bind the scrape endpoint, drive the schedule, take a snapshot per tick off
//! the async runtime, hand it to the outlets, and stop cleanly when told to.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::{self, Config};
use crate::pushgateway::{self, Pushgateway};
use crate::remote_write::{self, RemoteWriteTarget};
use crate::snapshot::Snapshot;
use crate::telemetry::AgentState;
use crate::{exposition, schedule, scrape, source};

/// How long the tasks under way get to finish after a shutdown signal, or outlets at a reload.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// A request to re-read the config (SIGHUP, or `POST /-/reload`), with where to say how it went.
#[derive(Debug)]
pub struct ReloadRequest {
    pub respond: Option<oneshot::Sender<Result<(), String>>>,
}

/// Runs until `shutdown` resolves (SIGTERM or SIGINT in the binary), then stops cleanly.
/// SIGHUP re-reads the config; a config that fails validation is refused and the agent goes on.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let state = Arc::new(AgentState::new(Arc::new(config)));
    let config = state.config();
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let (reload_sender, mut reload_receiver) = mpsc::channel::<ReloadRequest>(1);

    if let Some(listen) = config.scrape_listen {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding scrape.listen {listen} (is another process using it?)"))?;
        info!(address = %listener.local_addr()?, "serving /metrics and /healthz");
        let reload = config.enable_reload.then(|| reload_sender.clone());
        let (state, stop) = (state.clone(), stop.clone());
        tasks.spawn(async move {
            if let Err(error) = scrape::serve(listener, state, reload, stop).await {
                warn!(%error, "scrape endpoint stopped");
            }
        });
    }
    let mut hangups = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    tasks.spawn({
        let stop = stop.clone();
        async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    Some(()) = hangups.recv() => { let _ = reload_sender.send(ReloadRequest { respond: None }).await; }
                }
            }
        }
    });

    let mut outlets = Outlets::start(&config, &state, &stop)?;
    let (tick_sender, mut tick_receiver) = mpsc::channel(1);
    let mut schedule = Schedule::start(&config, config.run_on_start, tick_sender.clone(), &stop);
    info!(config = %config.path.display(), database = %config.source.database.display(), schedule = %config.schedule, "agent started");

    tokio::pin!(shutdown);
    let outcome = loop {
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            ended = &mut schedule.task => break match ended {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(error),
                Err(error) => Err(error).context("the schedule task failed"),
            },
            Some(request) = reload_receiver.recv() => {
                let outcome = reload(&state, &mut outlets, &mut schedule, &tick_sender, &stop).await;
                if let Some(respond) = request.respond {
                    let _ = respond.send(outcome);
                }
            }
            Some(()) = tick_receiver.recv() => {
                tokio::select! {
                    () = &mut shutdown => break Ok(()),
                    result = tick(&state) => match result {
                        Ok(snapshot) => outlets.publish(snapshot, &state.config()).await,
                        Err(error) => warn!(error = %format!("{error:#}"), "tick failed; serving the last good snapshot"),
                    }
                }
            }
        }
    };

    info!("shutting down");
    stop.cancel();
    outlets.stop().await;
    tasks.close();
    if tokio::time::timeout(SHUTDOWN_DEADLINE, tasks.wait()).await.is_err() {
        warn!(deadline = ?SHUTDOWN_DEADLINE, "tasks still running at the shutdown deadline; leaving them");
    }
    schedule.stop().await;
    outcome
}

/// Re-reads the config from its file. A config that fails validation changes nothing; a good
/// one replaces the outlets (remote-write queues keep their backlog on disk) and, if it
/// changed, the schedule. The scrape endpoint stays as it was started.
async fn reload(
    state: &Arc<AgentState>,
    outlets: &mut Outlets,
    schedule: &mut Schedule,
    tick_sender: &mpsc::Sender<()>,
    stop: &CancellationToken,
) -> Result<(), String> {
    let old = state.config();
    let path = old.path.clone();
    let loaded = tokio::task::spawn_blocking(move || config::load(&path)).await.map_err(|error| error.to_string());
    let new = match loaded {
        Ok(Ok(config)) => Arc::new(config),
        Ok(Err(error)) => {
            let message = error.to_string();
            error!(error = %message, "reload refused; running on as before");
            state.record_reload(false, Utc::now());
            return Err(message);
        }
        Err(message) => return Err(message),
    };
    if (new.scrape_listen, new.enable_reload) != (old.scrape_listen, old.enable_reload) {
        warn!("the [scrape] table changed; it takes effect when the agent restarts");
    }
    let previous = std::mem::replace(outlets, Outlets::idle());
    previous.stop().await;
    // In force before the new outlets start, so their first figures land on their own entries.
    state.replace_config(new.clone());
    match Outlets::start(&new, state, stop) {
        Ok(started) => *outlets = started,
        Err(error) => {
            let message = format!("{error:#}");
            error!(error = %message, "reload refused: the new outlets would not start; running on as before");
            state.replace_config(old.clone());
            *outlets = Outlets::start(&old, state, stop).map_err(|error| format!("{error:#}"))?;
            state.record_reload(false, Utc::now());
            return Err(message);
        }
    }
    if new.schedule.to_string() != old.schedule.to_string() {
        let previous = std::mem::replace(schedule, Schedule::start(&new, false, tick_sender.clone(), stop));
        previous.stop().await;
    }
    state.record_reload(true, Utc::now());
    info!(config = %new.path.display(), n_pushgateways = new.pushgateways.len(), n_remote_writes = new.remote_writes.len(), "reloaded the config");
    Ok(())
}

/// The schedule's task, stoppable on its own for a reload.
struct Schedule {
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    stop: CancellationToken,
}

impl Schedule {
    fn start(config: &Config, run_on_start: bool, ticks: mpsc::Sender<()>, parent: &CancellationToken) -> Schedule {
        let stop = parent.child_token();
        let task = tokio::spawn(schedule::drive(config.schedule.clone(), run_on_start, ticks, stop.clone()));
        Schedule { task, stop }
    }

    async fn stop(mut self) {
        self.stop.cancel();
        if !self.task.is_finished() {
            let _ = tokio::time::timeout(SHUTDOWN_DEADLINE, &mut self.task).await;
        }
    }
}

/// The push targets of one config: a delivery task each, stoppable together for a reload.
struct Outlets {
    /// Each gateway target reads the latest snapshot on its own, so none waits on another or
    /// on a tick.
    snapshots: watch::Sender<Option<Arc<Snapshot>>>,
    remote_writes: Vec<Arc<RemoteWriteTarget>>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Outlets {
    /// No targets: a placeholder while a reload swaps them.
    fn idle() -> Outlets {
        Outlets {
            snapshots: watch::channel(None).0,
            remote_writes: Vec::new(),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    fn start(config: &Config, state: &Arc<AgentState>, shutdown: &CancellationToken) -> anyhow::Result<Outlets> {
        let outlets = Outlets {
            snapshots: watch::channel(None).0,
            remote_writes: open_remote_writes(config)?,
            stop: shutdown.child_token(),
            tasks: TaskTracker::new(),
        };
        for target in &config.pushgateways {
            let target = Pushgateway::new(target.clone()).with_context(|| format!("setting up {}", target.name()))?;
            let (snapshots, stop) = (outlets.snapshots.subscribe(), outlets.stop.clone());
            outlets.tasks.spawn(pushgateway::deliver(target, snapshots, state.clone(), stop, shutdown.clone()));
        }
        for target in &outlets.remote_writes {
            let sender =
                remote_write::Sender::new(target.clone()).with_context(|| format!("setting up {}", target.name()))?;
            outlets.tasks.spawn(remote_write::deliver(sender, state.clone(), outlets.stop.clone()));
        }
        Ok(outlets)
    }

    /// Hands a tick's snapshot to every target: committed to each remote-write queue first.
    async fn publish(&self, snapshot: Arc<Snapshot>, config: &Arc<Config>) {
        enqueue(&self.remote_writes, &snapshot, config).await;
        self.snapshots.send_replace(Some(snapshot));
    }

    /// Stops every delivery task, abandoning requests under way, within the deadline.
    async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(SHUTDOWN_DEADLINE, self.tasks.wait()).await.is_err() {
            warn!(deadline = ?SHUTDOWN_DEADLINE, "push targets still busy at the deadline; leaving them");
        }
    }
}

/// One tick: read the database off the runtime and record the result. A failure keeps the last
/// good snapshot in place for the outlets; the caller reports it.
pub async fn tick(state: &AgentState) -> anyhow::Result<Arc<Snapshot>> {
    let started = Instant::now();
    let config = state.config();
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
    let config = state.config();
    let body = exposition::push_body(&snapshot, &config.metric, &config.labels);
    if dry_run {
        return Ok(Some(body));
    }
    let remote_writes = open_remote_writes(&config)?;
    enqueue(&remote_writes, &snapshot, &config).await;
    let state = Arc::new(state);
    let mut pushes = JoinSet::new();
    for target in &config.pushgateways {
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
