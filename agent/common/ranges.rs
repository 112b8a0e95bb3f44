//! The default and the range of every duration, size and count a config may set, in one table
//! (README's "Ranges" table is this one). A value outside its range is a config problem, so no
//! later code has to guard against it. Each bound is chosen for how the value is used:
//!
//! - `schedule.interval` starts a tokio interval (`Instant::now() + interval`, which panics past
//!   the clock's range); from 100 ms, for tests that tick fast, to a leap year.
//! - `source.window` is subtracted from the tick's time with chrono (which panics past year
//!   262,143); from a second to a leap year, which covers a yearly count.
//! - `source.busy_timeout` is the wait for the app's write lock, in 1 ms polls, within one tick:
//!   up to ten minutes, and shorter than `source.timeout` (checked in `source::config`).
//! - `source.timeout` is the longest one tick's reading may take: from 100 ms to an hour.
//! - The HTTP timeouts bound one request, connecting included: from 100 ms to ten minutes.
//! - `queue.max_age` is subtracted from the clock in milliseconds: from a second to 31 days (a
//!   receiver refuses samples that old anyway); `queue.max_bytes` from 1 KiB to 1 TiB of disk.

use std::time::Duration;

/// A duration key's default and range, written as the config writes durations.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DurationRange {
    /// Used when the key is absent; `None` for a key with no default (it is required, or one of
    /// two alternatives).
    pub(crate) default: Option<&'static str>,
    pub(crate) min: &'static str,
    pub(crate) max: &'static str,
}

/// A size key's default and range, written as the config writes sizes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SizeRange {
    pub(crate) default: &'static str,
    pub(crate) min: &'static str,
    pub(crate) max: &'static str,
}

/// A count key's default and range.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CountRange {
    pub(crate) default: i64,
    pub(crate) min: i64,
    pub(crate) max: i64,
}

/// `schedule.interval`: no default, since exactly one of it and `schedule.cron` is set.
pub(crate) const SCHEDULE_INTERVAL: DurationRange = DurationRange { default: None, min: "100ms", max: "366d" };
/// `source.window`.
pub(crate) const SOURCE_WINDOW: DurationRange = DurationRange { default: Some("24h"), min: "1s", max: "366d" };
/// `source.busy_timeout`.
pub(crate) const SOURCE_BUSY_TIMEOUT: DurationRange = DurationRange { default: Some("5s"), min: "1ms", max: "10min" };
/// `source.timeout`.
pub(crate) const SOURCE_TIMEOUT: DurationRange = DurationRange { default: Some("30s"), min: "100ms", max: "1h" };
/// `source.rows_per_read`: its default was chosen by the writer benchmark (README, "The app's
/// writes").
pub(crate) const SOURCE_ROWS_PER_READ: CountRange = CountRange { default: 4_000, min: 100, max: 10_000_000 };
/// `pushgateway.timeout`.
pub(crate) const PUSHGATEWAY_TIMEOUT: DurationRange =
    DurationRange { default: Some("10s"), min: "100ms", max: "10min" };
/// `remote_write.timeout`.
pub(crate) const REMOTE_WRITE_TIMEOUT: DurationRange =
    DurationRange { default: Some("30s"), min: "100ms", max: "10min" };
/// `remote_write.max_samples_per_send`.
pub(crate) const REMOTE_WRITE_MAX_SAMPLES_PER_SEND: CountRange = CountRange { default: 2000, min: 1, max: 1_000_000 };
/// `remote_write.queue.max_age`.
pub(crate) const REMOTE_WRITE_QUEUE_MAX_AGE: DurationRange =
    DurationRange { default: Some("1h"), min: "1s", max: "31d" };
/// `remote_write.queue.max_bytes`.
pub(crate) const REMOTE_WRITE_QUEUE_MAX_BYTES: SizeRange = SizeRange { default: "256MiB", min: "1KiB", max: "1TiB" };

impl DurationRange {
    /// The value when the key is absent, or stands in for a refused one.
    pub(crate) fn default_or_min(&self) -> Duration {
        parse_duration(self.default.unwrap_or(self.min))
    }

    pub(crate) fn contains(&self, value: Duration) -> bool {
        (parse_duration(self.min)..=parse_duration(self.max)).contains(&value)
    }

    /// "from 100ms to 366d (default 15s)", for messages.
    pub(crate) fn describe(&self) -> String {
        match self.default {
            Some(default) => format!("from {} to {} (default {default})", self.min, self.max),
            None => format!("from {} to {}", self.min, self.max),
        }
    }
}

impl SizeRange {
    pub(crate) fn default_bytes(&self) -> u64 {
        parse_size(self.default)
    }

    pub(crate) fn contains(&self, bytes: u64) -> bool {
        (parse_size(self.min)..=parse_size(self.max)).contains(&bytes)
    }

    pub(crate) fn describe(&self) -> String {
        format!("from {} to {} (default {})", self.min, self.max, self.default)
    }
}

impl CountRange {
    pub(crate) fn contains(&self, count: i64) -> bool {
        (self.min..=self.max).contains(&count)
    }

    pub(crate) fn describe(&self) -> String {
        format!("from {} to {} (default {})", self.min, self.max, self.default)
    }
}

fn parse_duration(text: &str) -> Duration {
    humantime::parse_duration(text).expect("the ranges' own durations parse (a test checks them)")
}

fn parse_size(text: &str) -> u64 {
    byte_size(text).expect("the ranges' own sizes parse (a test checks them)")
}

/// A size such as "256MiB", "1GB", "4096" (bytes); binary and decimal units.
pub(crate) fn byte_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(multiplier)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DURATIONS: [DurationRange; 7] = [
        SCHEDULE_INTERVAL,
        SOURCE_WINDOW,
        SOURCE_BUSY_TIMEOUT,
        SOURCE_TIMEOUT,
        PUSHGATEWAY_TIMEOUT,
        REMOTE_WRITE_TIMEOUT,
        REMOTE_WRITE_QUEUE_MAX_AGE,
    ];

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(byte_size("256MiB"), Some(256 << 20));
        assert_eq!(byte_size("1GB"), Some(1_000_000_000));
        assert_eq!(byte_size("1TiB"), Some(1 << 40));
        assert_eq!(byte_size("4096"), Some(4096));
        assert_eq!(byte_size("2 kib"), Some(2048));
        assert_eq!(byte_size("0"), Some(0));
        for bad in ["", "MiB", "12XB", "-1MiB", "99999999999999999999GiB", "18446744073709551615TiB", "1.5GiB"] {
            assert_eq!(byte_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_default_lies_in_its_range_and_every_bound_parses() {
        for range in DURATIONS {
            let (min, max) = (parse_duration(range.min), parse_duration(range.max));
            assert!(!min.is_zero() && min <= max, "{range:?}");
            assert!(range.contains(range.default_or_min()), "{range:?}");
        }
        let size = REMOTE_WRITE_QUEUE_MAX_BYTES;
        assert!(parse_size(size.min) <= parse_size(size.max) && size.contains(size.default_bytes()), "{size:?}");
        for count in [SOURCE_ROWS_PER_READ, REMOTE_WRITE_MAX_SAMPLES_PER_SEND] {
            assert!(count.min >= 1 && count.contains(count.default), "{count:?}");
        }
    }

    /// What the ranges are there for: the largest value of each is safe where it is used.
    #[test]
    fn the_largest_values_are_safe_where_they_are_used() {
        let now = chrono::Utc::now();
        let window = parse_duration(SOURCE_WINDOW.max);
        assert!(now.checked_sub_signed(chrono::TimeDelta::from_std(window).unwrap()).is_some());
        let interval = parse_duration(SCHEDULE_INTERVAL.max);
        assert!(std::time::Instant::now().checked_add(interval).is_some());
        let max_age = parse_duration(REMOTE_WRITE_QUEUE_MAX_AGE.max);
        assert!(now.timestamp_millis().checked_sub(max_age.as_millis() as i64).is_some());
    }
}
