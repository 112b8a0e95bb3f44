//! Blocking work under a deadline. A tick's read runs on a thread of its own; when it overruns,
//! it is told to stop (`Cancel`, which the SQLite source checks while it reads and while it
//! waits for locks). A read stuck in a system call (a FIFO, a dead network mount) cannot be
//! stopped: it is abandoned, and no new read starts while it is still stuck, so hung reads never
//! pile up threads and never hold up the schedule, the server or shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use tracing::{info, warn};

/// How long an overrunning read gets to stop once told to, before it is abandoned.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Set when the work should stop; the work checks it where it can.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub(crate) fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Runs blocking work one piece at a time, each under a deadline, with at most one abandoned
/// piece still stuck.
#[derive(Debug, Default)]
pub(crate) struct Watchdog {
    stuck: Mutex<Option<Abandoned>>,
}

/// A piece of work that overran, would not stop, and was left behind.
#[derive(Debug)]
struct Abandoned {
    what: String,
    since: Instant,
    returned: Arc<AtomicBool>,
}

impl Watchdog {
    /// Runs `work` on a thread of its own and waits up to `timeout` for it; `what` names it in
    /// errors and logs, `limit` the setting the timeout comes from. Fails at once while an
    /// earlier piece is still stuck.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        what: &str,
        (timeout, limit): (Duration, &str),
        work: impl FnOnce(&Cancel) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        self.refuse_while_stuck()?;
        let started = Instant::now();
        let cancel = Cancel::default();
        let returned = Arc::new(AtomicBool::new(false));
        let (sender, mut result) = tokio::sync::oneshot::channel();
        let spawned = {
            let (cancel, returned) = (cancel.clone(), returned.clone());
            std::thread::Builder::new().name("apimetrics-read".to_owned()).spawn(move || {
                let outcome = work(&cancel);
                returned.store(true, Ordering::Release);
                let _ = sender.send(outcome);
            })
        };
        spawned.map_err(|error| anyhow!("{what}: cannot start a thread for it: {error}"))?;
        let overran = match tokio::time::timeout(timeout, &mut result).await {
            Ok(Ok(outcome)) => return outcome,
            Ok(Err(_)) => return Err(anyhow!("{what}: the read's thread panicked")),
            Err(_) => humantime::format_duration(timeout),
        };
        cancel.cancel();
        if tokio::time::timeout(STOP_GRACE, &mut result).await.is_ok() {
            return Err(anyhow!("{what}: timed out after {overran} ({limit}); the read was stopped"));
        }
        warn!(what, timeout = %overran, "a read is stuck in a system call and does not stop: abandoning it");
        *self.lock() = Some(Abandoned { what: what.to_owned(), since: started, returned });
        Err(anyhow!(
            "{what}: timed out after {overran} ({limit}), stuck in a system call (a FIFO, a dead network \
             mount, a hung disk?); it was abandoned, and no new read starts until it returns"
        ))
    }

    /// An error while the abandoned piece is still stuck; forgets it once it has returned.
    fn refuse_while_stuck(&self) -> anyhow::Result<()> {
        let mut stuck = self.lock();
        let Some(abandoned) = stuck.as_ref() else { return Ok(()) };
        let for_how_long = humantime::format_duration(Duration::from_secs(abandoned.since.elapsed().as_secs()));
        if abandoned.returned.load(Ordering::Acquire) {
            info!(what = %abandoned.what, after = %for_how_long, "the abandoned read returned at last");
            *stuck = None;
            return Ok(());
        }
        warn!(what = %abandoned.what, stuck_for = %for_how_long, "a read is still stuck; not starting another");
        Err(anyhow!(
            "{}: an earlier read has been stuck in a system call for {for_how_long} and has not returned (a FIFO, \
             a dead network mount, a hung disk?): no new read starts until it does",
            abandoned.what
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Abandoned>> {
        self.stuck.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_that_stops_when_told_is_stopped_and_work_that_does_not_is_abandoned_once() {
        let watchdog = Watchdog::default();
        let quick = watchdog.run("quick", (Duration::from_secs(5), "a limit"), |_| Ok(7)).await.unwrap();
        assert_eq!(quick, 7);

        let polite = watchdog.run("polite", (Duration::from_millis(50), "a limit"), |cancel| {
            while !cancel.is_cancelled() {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        });
        let error = polite.await.unwrap_err().to_string();
        assert!(error.contains("timed out after 50ms (a limit)") && error.contains("was stopped"), "{error}");

        let (release, released) = std::sync::mpsc::channel::<()>();
        let stubborn = watchdog.run("stubborn", (Duration::from_millis(50), "a limit"), move |_| {
            let _ = released.recv();
            Ok(())
        });
        let error = stubborn.await.unwrap_err().to_string();
        assert!(error.contains("stuck in a system call") && error.contains("abandoned"), "{error}");
        let refused =
            watchdog.run("next", (Duration::from_secs(5), "a limit"), |_| Ok(())).await.unwrap_err().to_string();
        assert!(refused.starts_with("stubborn: an earlier read has been stuck"), "{refused}");

        release.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match watchdog.run("next", (Duration::from_secs(5), "a limit"), |_| Ok(())).await {
                Ok(()) => break,
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(5)).await,
                Err(error) => panic!("the stuck work returned, yet: {error}"),
            }
        }
    }
}
