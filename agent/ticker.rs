//! The ticker: turns the config's `Schedule` (a fixed interval, or a cron expression run by
//! tokio-cron-scheduler) into tick signals on a channel of one. A tick that comes while the
//! previous one is still running is dropped, so ticks never overlap or pile up.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Schedule, parse_cron};

/// How many scheduled ticks may pass without a new snapshot before health turns stale.
const TICKS_BEFORE_STALE: u32 = 3;

/// When a snapshot taken at `since` (or, before any, the agent's start) is stale: once the third
/// scheduled tick after it has had `source.timeout` to finish and none brought a newer one.
pub(crate) fn stale_at(config: &Config, since: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let third_tick = match &config.schedule {
        Schedule::Interval(period) => {
            since.checked_add_signed(chrono::Duration::from_std(*period * TICKS_BEFORE_STALE).ok()?)?
        }
        // A schedule that fires fewer times than that (a cron with a year that has passed) is
        // stale once its last firing has had its timeout: no tick will come.
        Schedule::Cron(expression) => {
            let cron = parse_cron(expression).ok()?;
            let mut at = since;
            for _ in 0..TICKS_BEFORE_STALE {
                match cron.find_next_occurrence(&at, false) {
                    Ok(next) => at = next,
                    Err(_) => break,
                }
            }
            at
        }
    };
    third_tick.checked_add_signed(chrono::Duration::from_std(config.source.timeout).ok()?)
}

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

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::task::Poll;

    use super::*;

    fn config(schedule: &str, timeout: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.sqlite3"), b"").unwrap();
        let text = format!("[source]\ndatabase = \"app.sqlite3\"\ntimeout = \"{timeout}\"\n[schedule]\n{schedule}\n");
        crate::config::parse(&dir.path().join("config.toml"), &text).unwrap()
    }

    #[test]
    fn a_snapshot_goes_stale_when_three_scheduled_ticks_and_a_timeout_have_passed() {
        let since: DateTime<Utc> = "2026-11-25T10:00:07Z".parse().unwrap();
        let every_15s = config("interval = \"15s\"", "30s");
        assert_eq!(stale_at(&every_15s, since), Some("2026-11-25T10:01:22Z".parse().unwrap()));
        // Cron: the third firing after `since` (10:05, 10:10, 10:15), then the timeout.
        let every_5_minutes = config("cron = \"0 */5 * * * *\"", "1m");
        assert_eq!(stale_at(&every_5_minutes, since), Some("2026-11-25T10:16:00Z".parse().unwrap()));
        // Weekdays at nine: from a Friday's tick, stale after the third weekday, Wednesday.
        let weekdays = config("cron = \"0 0 9 * * MON-FRI\"", "30s");
        let friday: DateTime<Utc> = "2026-11-27T09:00:00Z".parse().unwrap();
        assert_eq!(stale_at(&weekdays, friday), Some("2026-12-02T09:00:30Z".parse().unwrap()));
        // Every five seconds in one minute of 2027: after that minute, stale once the last
        // firing has had its timeout.
        let one_minute = config("cron = \"*/5 0 10 25 11 * 2027\"", "2s");
        let last: DateTime<Utc> = "2027-11-25T10:00:55Z".parse().unwrap();
        assert_eq!(stale_at(&one_minute, last), Some("2027-11-25T10:00:57Z".parse().unwrap()));
    }

    /// Whether `drive` signals a tick before its first wait, for each kind of schedule.
    #[tokio::test]
    async fn a_tick_at_start_comes_only_when_asked_for() {
        let year_away = Schedule::Cron("0 0 0 1 1 *".to_owned());
        let hour_away = Schedule::Interval(Duration::from_secs(3600));
        for schedule in [year_away, hour_away] {
            for run_on_start in [false, true] {
                let (ticks, mut received) = mpsc::channel(1);
                let stop = CancellationToken::new();
                let mut driving = pin!(drive(schedule.clone(), run_on_start, ticks, stop.clone()));
                // One poll runs everything up to the schedule's first wait.
                std::future::poll_fn(|context| {
                    assert!(driving.as_mut().poll(context).is_pending(), "{schedule}: drive ended early");
                    Poll::Ready(())
                })
                .await;
                assert_eq!(received.try_recv().is_ok(), run_on_start, "{schedule}, run_on_start = {run_on_start}");
                stop.cancel();
                driving.await.unwrap();
                assert!(received.try_recv().is_err(), "{schedule}: no tick came before the first scheduled time");
            }
        }
    }
}
