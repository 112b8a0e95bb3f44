//! When to try a push target again: capped exponential backoff with jitter, and the wait a
//! receiver asked for with `Retry-After`, which holds for every request to it until it passes.
//! Both outlets pace their retries with this one type.

use std::time::{Duration, Instant};

use crate::common::random::SplitMix64;

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

/// Capped exponential backoff with full jitter: the n-th wait is random in
/// `[base·2ⁿ/2, base·2ⁿ]`, never above `cap`.
#[derive(Debug, Clone)]
struct Backoff {
    base: Duration,
    cap: Duration,
    n_failures: u32,
    random: SplitMix64,
}

impl Backoff {
    fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff { base, cap, n_failures: 0, random: SplitMix64::from_clock() }
    }

    /// The wait before the next attempt, at least what the server asked for.
    fn next_wait(&mut self, retry_after: Option<Duration>) -> Duration {
        let ceiling = self.base.saturating_mul(1 << self.n_failures.min(20)).min(self.cap);
        self.n_failures += 1;
        let half = ceiling / 2;
        let jitter = Duration::from_nanos(self.random.below(half.as_nanos().max(1) as u64));
        (half + jitter).max(retry_after.unwrap_or_default())
    }

    fn reset(&mut self) {
        self.n_failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_and_honours_retry_after() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let waits: Vec<Duration> = (0..8).map(|_| backoff.next_wait(None)).collect();
        for (n, wait) in waits.iter().enumerate() {
            let ceiling = (Duration::from_millis(100) * 2u32.pow(n as u32)).min(Duration::from_secs(1));
            assert!(*wait >= ceiling / 2 && *wait <= ceiling, "wait {n} was {wait:?}, ceiling {ceiling:?}");
        }
        assert_eq!(backoff.next_wait(Some(Duration::from_secs(7))), Duration::from_secs(7));
        backoff.reset();
        assert!(backoff.next_wait(None) <= Duration::from_millis(100));
    }

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
