//! The ticker: turns the config's `Schedule` (a fixed interval, or a cron expression run by
//! tokio-cron-scheduler) into tick signals on a channel of one. A tick that comes while the
//! previous one is still running is dropped, so ticks never overlap or pile up.

use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;

use crate::config::Schedule;

/// Sends tick signals on `ticks` until `shutdown` is cancelled.
pub(crate) async fn drive(
    schedule: Schedule,
    run_on_start: bool,
    ticks: mpsc::Sender<()>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if run_on_start {
        let _ = ticks.try_send(());
    }
    match schedule {
        Schedule::Interval(period) => drive_interval(period, ticks, shutdown).await,
        Schedule::Cron(expression) => drive_cron(&expression, ticks, shutdown).await,
    }
}

async fn drive_interval(period: Duration, ticks: mpsc::Sender<()>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut interval = tokio::time::interval_at(Instant::now() + period, period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = interval.tick() => { let _ = ticks.try_send(()); }
        }
    }
}

async fn drive_cron(expression: &str, ticks: mpsc::Sender<()>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut scheduler = JobScheduler::new().await.context("starting the cron scheduler")?;
    let job = Job::new_async(expression, move |_id, _scheduler| {
        let ticks = ticks.clone();
        Box::pin(async move {
            let _ = ticks.try_send(());
        })
    })
    .with_context(|| format!("schedule.cron {expression:?}"))?;
    scheduler.add(job).await.context("adding the cron job")?;
    scheduler.start().await.context("starting the cron scheduler")?;
    shutdown.cancelled().await;
    scheduler.shutdown().await.context("stopping the cron scheduler")?;
    Ok(())
}
