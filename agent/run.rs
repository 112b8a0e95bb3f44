//! The agent's life: bind the scrape endpoint, drive the ticker, take a snapshot per tick off
//! the async runtime, render it once and hand it to the outlets, reload on request, and stop
//! cleanly when told to. `Agent` holds the run loop's state; `once` is one tick, sent at once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use tokio::net::{TcpListener, TcpSocket};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use tracing::{error, info, warn};

use crate::common::deadline::Watchdog;
use crate::common::instance_lock::{self, InstanceLock};
use crate::common::service_manager;
use crate::config::{self, Config};
use crate::exposition::Rendered;
use crate::http::Failure;
use crate::pushgateway::{self, Pushgateway};
use crate::remote_write::sender::{self, record_bound_drops};
use crate::remote_write::{Enqueued, RemoteWriteTarget};
use crate::scrape::{self, ReloadRequest};
use crate::snapshot::Snapshot;
use crate::source::Source;
use crate::telemetry::{DropReason, TargetKind, Telemetry};
use crate::ticker;

/// How long the agent takes at most to stop after SIGTERM or SIGINT, all tasks together: what is
/// still busy then (a push under way) is abandoned, and the queues stay as their last commit left
/// them. Outlets replaced at a reload get as long.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The longest reading and checking the config may take at a reload before it is refused.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// How far each `EXTEND_TIMEOUT_USEC` pushes systemd's start timeout while the queues open; sent
/// every third of it.
const START_TIMEOUT_EXTENSION: Duration = Duration::from_secs(30);

/// The process's SIGHUPs, caught from the moment this is made: one that comes while the config is
/// read or the agent starts neither kills it (SIGHUP's default action) nor is lost, but reloads
/// the config once the agent runs.
pub struct Hangups(tokio::signal::unix::Signal);

impl Hangups {
    /// Installs the handler; within a Tokio runtime.
    pub fn catch() -> anyhow::Result<Hangups> {
        Ok(Hangups(signal(SignalKind::hangup()).context("installing the SIGHUP handler")?))
    }
}

/// Runs until `shutdown` resolves (SIGTERM or SIGINT in the binary), then stops cleanly.
/// SIGHUP re-reads the config; a config that fails validation is refused and the agent goes on.
pub async fn run(config: Config, hangups: Hangups, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let mut agent = tokio::select! {
        started = Agent::start(config, hangups) => started?,
        () = &mut shutdown => {
            info!("stopped before the start had finished (opening the queues)");
            return Ok(());
        }
    };
    // Under `Type=notify`, `systemctl start` returns, and `systemctl reload` may be sent, from
    // here: the endpoint serves, the queues are open, the ticker runs, SIGHUP reloads.
    tell_systemd("READY=1");
    let outcome = agent.run_until(shutdown).await;
    tell_systemd("STOPPING=1");
    agent.stop().await;
    outcome
}

/// Tells systemd `state` when it asked to be told (`$NOTIFY_SOCKET`); a failure is logged only.
fn tell_systemd(state: &str) {
    if let Err(error) = service_manager::notify(state) {
        warn!(%error, state, "cannot tell systemd (NOTIFY_SOCKET)");
    }
}

/// The running agent: the config in force, what it has recorded of itself, its outlets and
/// ticker, and the channels that drive it.
struct Agent {
    /// The config in force; the scrape endpoint reads it, a reload replaces it.
    config: watch::Sender<Arc<Config>>,
    telemetry: Arc<Telemetry>,
    outlets: Outlets,
    ticker: Ticker,
    /// Where tickers signal ticks, and where the loop takes them.
    tick_sender: mpsc::Sender<()>,
    ticks: mpsc::Receiver<()>,
    reloads: mpsc::Receiver<ReloadRequest>,
    /// Cancelled at shutdown: stops the ticker, the outlets and `tasks`.
    stop: CancellationToken,
    /// The scrape endpoint and the SIGHUP listener.
    tasks: TaskTracker,
    /// The database, as the config in force names it; a reload makes it anew.
    source: Source,
    /// Bounds each tick's read of a SQLite file, and keeps at most one stuck read.
    watchdog: Watchdog,
    /// Bounds reading the config at a reload (a hung file system must not hold the loop).
    reload_watchdog: Watchdog,
    /// When the agent started: health goes stale from here until a first snapshot.
    started_at: chrono::DateTime<Utc>,
    /// This agent's claim on `state_dir`, held until it exits.
    instance_lock: InstanceLock,
}

impl Agent {
    /// Binds the scrape endpoint, opens the queues, starts a delivery task per target and the
    /// ticker.
    async fn start(config: Config, hangups: Hangups) -> anyhow::Result<Agent> {
        let instance_lock = InstanceLock::acquire(&config.state_dir)?;
        let config = Arc::new(config);
        let telemetry = Arc::new(Telemetry::default());
        telemetry.set_targets(target_names(&config));
        let (config_sender, _) = watch::channel(config.clone());
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (reload_sender, reloads) = mpsc::channel::<ReloadRequest>(1);
        if let Some(listen) = config.scrape_listen {
            let listener = bind(listen)
                .with_context(|| format!("binding scrape.listen {listen} (is another process using it?)"))?;
            info!(address = %listener.local_addr()?, "serving /metrics and /healthz");
            let reload = config.enable_reload.then(|| reload_sender.clone());
            let server = scrape::serve(listener, telemetry.clone(), config_sender.subscribe(), reload, stop.clone());
            tasks.spawn(async move {
                if let Err(error) = server.await {
                    warn!(%error, "scrape endpoint stopped");
                }
            });
        }
        tasks.spawn(forward_hangups(hangups, reload_sender, stop.clone()));

        // Opening a queue checks it, which takes seconds on a big one: off the runtime's threads,
        // so that a SIGTERM meanwhile is seen, and with systemd's start timeout pushed on while
        // it lasts (a unit of Type=notify is killed if it is not ready within it). Aborted when
        // dropped, should a SIGTERM end the start.
        let extending = AbortOnDropHandle::new(tokio::spawn(async {
            let period = START_TIMEOUT_EXTENSION / 3;
            let mut every = tokio::time::interval_at(Instant::now() + period, period);
            loop {
                every.tick().await;
                tell_systemd(&format!("EXTEND_TIMEOUT_USEC={}", START_TIMEOUT_EXTENSION.as_micros()));
            }
        }));
        let outlets = {
            let (config, telemetry, stop) = (config.clone(), telemetry.clone(), stop.clone());
            tokio::task::spawn_blocking(move || Outlets::start(&config, &telemetry, &stop)).await
        };
        drop(extending);
        let outlets = outlets.context("opening the outlets")??;
        let (tick_sender, ticks) = mpsc::channel(1);
        let ticker = Ticker::start(&config, config.run_on_start, tick_sender.clone(), &stop);
        info!(config = %config.path.display(), database = %config.source.database.shown(), schedule = %config.schedule, "agent started");
        let agent = Agent {
            config: config_sender,
            telemetry,
            outlets,
            ticker,
            tick_sender,
            ticks,
            reloads,
            stop,
            tasks,
            source: Source::new(&config.source),
            watchdog: Watchdog::default(),
            reload_watchdog: Watchdog::default(),
            started_at: Utc::now(),
            instance_lock,
        };
        agent.watch_for_staleness(&config);
        Ok(agent)
    }

    fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }

    /// Ticks and reloads until `shutdown` resolves or the ticker fails.
    async fn run_until(&mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                ended = &mut self.ticker.task => return match ended {
                    Ok(result) => result,
                    Err(error) => Err(error).context("the schedule task failed"),
                },
                Some(request) = self.reloads.recv() => {
                    let outcome = tokio::select! {
                        () = &mut shutdown => return Ok(()),
                        outcome = self.reload() => outcome,
                    };
                    if let Some(respond) = request.respond {
                        let _ = respond.send(outcome);
                    }
                }
                Some(()) = self.ticks.recv() => {
                    tokio::select! {
                        () = &mut shutdown => return Ok(()),
                        () = self.tick() => {}
                    }
                }
            }
        }
    }

    /// One tick: the snapshot, rendered once, handed to every outlet. A failure keeps the last
    /// good snapshot in place.
    async fn tick(&self) {
        let config = self.config();
        match take_snapshot(&config, &self.source, &self.telemetry, &self.watchdog).await {
            Ok(rendered) => {
                self.watch_for_staleness(&config);
                self.outlets.publish(rendered, &self.telemetry).await;
            }
            Err(error) if self.telemetry.latest().is_some() => {
                warn!(error = %format!("{error:#}"), "tick failed; serving the last good snapshot")
            }
            Err(error) => warn!(error = %format!("{error:#}"), "tick failed; no snapshot to serve yet"),
        }
    }

    /// Health turns stale three scheduled ticks after the snapshot served (or the start).
    fn watch_for_staleness(&self, config: &Config) {
        let since = self.telemetry.latest().map_or(self.started_at, |latest| latest.snapshot.computed_at);
        self.telemetry.set_stale_at(ticker::stale_at(config, since));
    }

    /// Re-reads the config from its file. A config that fails validation changes nothing; a
    /// good one replaces the outlets (remote-write queues keep their backlog on disk) and, if it
    /// changed, the ticker. The scrape endpoint stays as it was started.
    async fn reload(&mut self) -> Result<(), String> {
        let old = self.config();
        let path = old.path.clone();
        let what = format!("reading the config {}", path.display());
        let loaded = self.reload_watchdog.run(&what, (RELOAD_TIMEOUT, "the reload's limit"), move |_| {
            config::load(&path).map_err(|refused| anyhow::anyhow!(refused.to_string()))
        });
        let new = match loaded.await {
            Ok(config) => {
                config.log_warnings();
                Arc::new(config)
            }
            Err(refused) => {
                let message = format!("{refused:#}");
                error!(error = %message, "reload refused; running on as before");
                self.telemetry.record_reload(false, Utc::now());
                return Err(message);
            }
        };
        // A new state_dir is claimed before anything moves to it; the old one is let go once the
        // new outlets run on the new one.
        let new_lock = if instance_lock::same_folder(&new.state_dir, &old.state_dir) {
            None
        } else {
            match InstanceLock::acquire(&new.state_dir) {
                Ok(lock) => Some(lock),
                Err(refused) => {
                    let message = format!("{refused:#}");
                    error!(error = %message, "reload refused: the new agent.state_dir cannot be taken; running on as before");
                    self.telemetry.record_reload(false, Utc::now());
                    return Err(message);
                }
            }
        };
        if (new.scrape_listen, new.enable_reload) != (old.scrape_listen, old.enable_reload) {
            warn!("the [scrape] table changed; it takes effect when the agent restarts");
        }
        std::mem::replace(&mut self.outlets, Outlets::idle()).stop(Instant::now() + SHUTDOWN_GRACE).await;
        // In force before the new outlets start, so their first figures land on their own entries.
        self.put_in_force(&new);
        match Outlets::start(&new, &self.telemetry, &self.stop) {
            Ok(started) => {
                self.outlets = started;
                if let Some(lock) = new_lock {
                    self.instance_lock = lock;
                }
            }
            Err(refused) => {
                let message = format!("{refused:#}");
                error!(error = %message, "reload refused: the new outlets would not start; running on as before");
                self.put_in_force(&old);
                self.outlets =
                    Outlets::start(&old, &self.telemetry, &self.stop).map_err(|error| format!("{error:#}"))?;
                self.telemetry.record_reload(false, Utc::now());
                return Err(message);
            }
        }
        if new.schedule != old.schedule {
            let ticker = Ticker::start(&new, false, self.tick_sender.clone(), &self.stop);
            std::mem::replace(&mut self.ticker, ticker).stop(Instant::now() + SHUTDOWN_GRACE).await;
        }
        // A server's connection is made again with the new settings at the next tick.
        self.source = Source::new(&new.source);
        self.watch_for_staleness(&new);
        self.telemetry.record_reload(true, Utc::now());
        info!(config = %new.path.display(), n_pushgateways = new.pushgateways.len(), n_remote_writes = new.remote_writes.len(), "reloaded the config");
        Ok(())
    }

    /// Makes `config` the one in force: the scrape endpoint's, the targets telemetry keeps, and
    /// the latest snapshot's text, rendered again as `config` says.
    fn put_in_force(&self, config: &Arc<Config>) {
        self.telemetry.set_targets(target_names(config));
        if let Some(latest) = self.telemetry.latest() {
            let rendered = Rendered::new(latest.snapshot.clone(), &config.metric, &config.labels);
            self.telemetry.replace_latest(Arc::new(rendered));
        }
        self.config.send_replace(config.clone());
    }

    /// Stops the outlets, the tasks and the ticker, all within `SHUTDOWN_GRACE`. A read still
    /// under way is left to its thread, which the process's exit ends.
    async fn stop(self) {
        info!(grace = ?SHUTDOWN_GRACE, "shutting down");
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        self.stop.cancel();
        self.outlets.stop(deadline).await;
        self.tasks.close();
        if tokio::time::timeout_at(deadline, self.tasks.wait()).await.is_err() {
            warn!(grace = ?SHUTDOWN_GRACE, "tasks still running at the end of the shutdown grace; leaving them");
        }
        self.ticker.stop(deadline).await;
    }
}

/// A listener on `address` with a backlog of 1,024 (tokio's default is 128): a burst of
/// connections waits in the kernel for the accept loop, which sheds the idle ones, rather than
/// overflowing into clients' retries.
fn bind(address: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(1024)
}

/// The push targets `config` names, as telemetry keeps them.
fn target_names(config: &Config) -> impl Iterator<Item = (&str, TargetKind)> {
    let pushgateways = config.pushgateways.iter().map(|target| (target.name(), TargetKind::Pushgateway));
    let remote_writes = config.remote_writes.iter().map(|target| (target.name.as_str(), TargetKind::RemoteWrite));
    pushgateways.chain(remote_writes)
}

/// A task that turns each SIGHUP into a reload request, until `stop`.
async fn forward_hangups(Hangups(mut hangups): Hangups, reloads: mpsc::Sender<ReloadRequest>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            Some(()) = hangups.recv() => { let _ = reloads.send(ReloadRequest { respond: None }).await; }
        }
    }
}

/// The ticker's task, stoppable on its own for a reload.
struct Ticker {
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    stop: CancellationToken,
}

impl Ticker {
    fn start(config: &Config, run_on_start: bool, ticks: mpsc::Sender<()>, parent: &CancellationToken) -> Ticker {
        let stop = parent.child_token();
        let task = tokio::spawn(ticker::drive(config.schedule.clone(), run_on_start, ticks, stop.clone()));
        Ticker { task, stop }
    }

    async fn stop(mut self, deadline: Instant) {
        self.stop.cancel();
        if !self.task.is_finished() {
            let _ = tokio::time::timeout_at(deadline, &mut self.task).await;
        }
    }
}

/// The push targets of one config: a delivery task each, stoppable together for a reload.
struct Outlets {
    /// Each gateway target reads the latest snapshot on its own, so none waits on another or
    /// on a tick.
    snapshots: watch::Sender<Option<Arc<Rendered>>>,
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

    fn start(config: &Config, telemetry: &Arc<Telemetry>, shutdown: &CancellationToken) -> anyhow::Result<Outlets> {
        let outlets = Outlets {
            snapshots: watch::channel(None).0,
            remote_writes: open_remote_writes(config)?,
            stop: shutdown.child_token(),
            tasks: TaskTracker::new(),
        };
        for target in &config.pushgateways {
            let target = Pushgateway::new(target.clone()).with_context(|| format!("setting up {}", target.name()))?;
            let (snapshots, stop) = (outlets.snapshots.subscribe(), outlets.stop.clone());
            outlets.tasks.spawn(pushgateway::deliver(target, snapshots, telemetry.clone(), stop, shutdown.clone()));
        }
        for target in &outlets.remote_writes {
            outlets.tasks.spawn(sender::deliver(target.sender()?, telemetry.clone(), outlets.stop.clone()));
        }
        Ok(outlets)
    }

    /// Hands a tick's snapshot to every target: committed to each remote-write queue first.
    async fn publish(&self, rendered: Arc<Rendered>, telemetry: &Telemetry) {
        enqueue(&self.remote_writes, &rendered, telemetry).await;
        self.snapshots.send_replace(Some(rendered));
    }

    /// Stops every delivery task, abandoning requests under way at `deadline`.
    async fn stop(self, deadline: Instant) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout_at(deadline, self.tasks.wait()).await.is_err() {
            warn!("push targets still busy at the deadline; leaving them");
        }
    }
}

/// Reads the database within `source.timeout`, renders the snapshot and records the result. The
/// caller reports a failure.
async fn take_snapshot(
    config: &Arc<Config>,
    source: &Source,
    telemetry: &Telemetry,
    watchdog: &Watchdog,
) -> anyhow::Result<Arc<Rendered>> {
    let started = Instant::now();
    let now = Utc::now();
    let result =
        source.read_window(now, watchdog).await.map(|read| Snapshot::from_read(&read, config.metric.zero_fill, now));
    let duration = started.elapsed();
    match result {
        Ok(snapshot) => {
            report_tick(&snapshot);
            let rendered = Arc::new(Rendered::new(snapshot, &config.metric, &config.labels));
            telemetry.record_success(rendered.clone(), duration);
            Ok(rendered)
        }
        Err(error) => {
            telemetry.record_failure(format!("{error:#}"), duration);
            Err(error)
        }
    }
}

/// Logs a tick's figures, and the rows it had to leave out.
fn report_tick(snapshot: &Snapshot) {
    if snapshot.n_rows_bad_timestamp > 0 {
        warn!(
            n_rows = snapshot.n_rows_bad_timestamp,
            "skipped rows whose time_modified is not a Django timestamp (YYYY-MM-DD HH:MM:SS[.ffffff])"
        );
    }
    if snapshot.n_rows_in_future > 0 {
        warn!(
            n_rows = snapshot.n_rows_in_future,
            "counted rows whose time_modified is more than a minute ahead of this machine's clock: is a clock wrong?"
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
}

/// Opens each remote-write target's queue under `[agent] state_dir`.
fn open_remote_writes(config: &Config) -> anyhow::Result<Vec<Arc<RemoteWriteTarget>>> {
    let targets = config.remote_writes.iter().map(|target| {
        RemoteWriteTarget::open(target.clone(), &config.state_dir, config.metric.clone(), config.labels.clone())
            .map(Arc::new)
            .with_context(|| format!("opening the queue of remote_write {:?} (agent.state_dir)", target.name))
    });
    targets.collect()
}

/// Commits the tick's samples to every remote-write queue, each off the runtime and all at once,
/// before any of them is sent; counts the ticks a queue dropped.
async fn enqueue(targets: &[Arc<RemoteWriteTarget>], rendered: &Arc<Rendered>, telemetry: &Telemetry) {
    let mut queued = JoinSet::new();
    for target in targets {
        let (target, rendered) = (target.clone(), rendered.clone());
        queued.spawn_blocking(move || {
            let outcome = target.enqueue(&rendered.snapshot);
            (target, outcome)
        });
    }
    while let Some(joined) = queued.join_next().await {
        let (target, outcome) = match joined {
            Ok(done) => done,
            Err(error) => {
                warn!(%error, "a queueing task failed");
                continue;
            }
        };
        let name = target.name();
        match outcome {
            Enqueued::Queued { n_samples, dropped } => {
                telemetry.record_samples_produced(name, n_samples, Some(0));
                record_bound_drops(telemetry, name, dropped);
                telemetry.record_queue_fault(name, None);
            }
            Enqueued::ClockWentBack { n_samples } => {
                telemetry.record_samples_produced(name, n_samples, None);
                telemetry.record_samples_dropped(name, DropReason::ClockWentBack, n_samples)
            }
            Enqueued::WriteFailed { error, n_samples, n_samples_held, n_samples_dropped, dropped } => {
                telemetry.record_samples_produced(name, n_samples, Some(n_samples_held));
                record_bound_drops(telemetry, name, dropped);
                warn!(target = %name, %error, n_samples_held, n_samples_dropped, "the queue cannot be written: holding the samples in memory and trying again at the next tick");
                telemetry.record_samples_dropped(name, DropReason::QueueWriteFailed, n_samples_dropped);
                telemetry.record_queue_fault(name, Some(error));
            }
        }
    }
}

/// How many times `once` tries a target, and for how long at most, Retry-After included.
const ONCE_ATTEMPTS: u32 = 4;
const ONCE_DEADLINE: Duration = Duration::from_secs(60);

/// One tick now, for `once`. With `dry_run`, returns the body a push would carry and sends
/// nothing; else pushes to every target at once and fails naming each target that failed.
pub async fn once(config: Config, dry_run: bool) -> anyhow::Result<Option<String>> {
    let config = Arc::new(config);
    let telemetry = Arc::new(Telemetry::default());
    telemetry.set_targets(target_names(&config));
    let rendered = take_snapshot(&config, &Source::new(&config.source), &telemetry, &Watchdog::default()).await?;
    if dry_run {
        return Ok(Some(rendered.body.clone()));
    }
    let _instance_lock = InstanceLock::acquire(&config.state_dir)?;
    let remote_writes = open_remote_writes(&config)?;
    enqueue(&remote_writes, &rendered, &telemetry).await;
    let mut pushes = JoinSet::new();
    for target in &config.pushgateways {
        let mut target = Pushgateway::new(target.clone()).with_context(|| format!("setting up {}", target.name()))?;
        let rendered = rendered.clone();
        pushes.spawn(async move {
            // The deadline ends a request under way too: a gateway that never answers.
            let pushing = target.push(&rendered.body, ONCE_ATTEMPTS, tokio::time::sleep(ONCE_DEADLINE));
            let result = tokio::time::timeout(ONCE_DEADLINE, pushing).await.unwrap_or_else(|_| {
                Err(Failure::Retryable { reason: "no answer within 60s".into(), retry_after: None })
            });
            (target.name().to_owned(), result.map_err(|failure| failure.to_string()))
        });
    }
    for target in remote_writes {
        let sender = target.sender()?;
        let telemetry = telemetry.clone();
        pushes.spawn(async move {
            let result = sender::drain(sender, &telemetry, ONCE_ATTEMPTS, ONCE_DEADLINE).await;
            (target.name().to_owned(), result.map_err(|error| error.to_string()))
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
