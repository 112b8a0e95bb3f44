//! Capped exponential backoff with jitter: how long to wait before trying again, for a push
//! target (`http::pacing`) and for a database server the agent reconnects to.

use std::time::Duration;

use super::random::SplitMix64;

/// Capped exponential backoff with full jitter: the n-th wait is random in
/// `[base·2ⁿ/2, base·2ⁿ]`, never above `cap`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    n_failures: u32,
    random: SplitMix64,
}

impl Backoff {
    pub(crate) fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff { base, cap, n_failures: 0, random: SplitMix64::from_clock() }
    }

    /// The wait before the next attempt, at least what the server asked for.
    pub(crate) fn next_wait(&mut self, retry_after: Option<Duration>) -> Duration {
        let ceiling = self.base.saturating_mul(1 << self.n_failures.min(20)).min(self.cap);
        self.n_failures += 1;
        let half = ceiling / 2;
        let jitter = Duration::from_nanos(self.random.below(half.as_nanos().max(1) as u64));
        (half + jitter).max(retry_after.unwrap_or_default())
    }

    pub(crate) fn reset(&mut self) {
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
}
