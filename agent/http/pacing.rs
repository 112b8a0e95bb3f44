//! When to try a push target again: capped exponential backoff with jitter, and the wait a
//! receiver asked for with `Retry-After`, which holds for every request to it until it passes.
//! Both outlets pace their retries with this one type.

use std::time::{Duration, Instant};

use crate::common::backoff::Backoff;

/// One target's pacing.
#[derive(Debug, Clone)]
pub(crate) struct Pacing {
    backoff: Backoff,
    /// No request before this instant: the receiver's last `Retry-After`.
    not_before: Option<Instant>,
}

impl Pacing {
    /// Waits start at about `base` and double after each failure, up to `cap`.
    pub(crate) fn new(base: Duration, cap: Duration) -> Pacing {
        Pacing { backoff: Backoff::new(base, cap), not_before: None }
    }

    /// How long the receiver still wants to be left alone, if it asked (`Retry-After`).
    pub(crate) fn held_for(&self) -> Option<Duration> {
        self.not_before?.checked_duration_since(Instant::now()).filter(|wait| !wait.is_zero())
    }

    /// The wait before trying again after a failure, at least what the receiver asked for
    /// (`retry_after`); a receiver's wish also holds every later request until it has passed.
    pub(crate) fn after_failure(&mut self, retry_after: Option<Duration>) -> Duration {
        let wait = self.backoff.next_wait(retry_after);
        if retry_after.is_some() {
            self.not_before = Some(Instant::now() + wait);
        }
        wait
    }

    /// Starts the backoff over: after a success, or for a new snapshot. A receiver's
    /// `Retry-After` still holds.
    pub(crate) fn reset(&mut self) {
        self.backoff.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_after_holds_later_requests_and_a_backoff_alone_does_not() {
        let mut pacing = Pacing::new(Duration::from_millis(10), Duration::from_millis(20));
        pacing.after_failure(None);
        assert_eq!(pacing.held_for(), None, "a backoff is the caller's to wait out");
        let wait = pacing.after_failure(Some(Duration::from_secs(30)));
        assert_eq!(wait, Duration::from_secs(30));
        pacing.reset();
        let held = pacing.held_for().expect("the receiver's wish outlives a reset");
        assert!(held > Duration::from_secs(29) && held <= Duration::from_secs(30), "{held:?}");
    }
}
