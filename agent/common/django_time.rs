//! Timestamps as Django's SQLite backend writes and binds them: `YYYY-MM-DD HH:MM:SS[.ffffff]`
//! text in the app's time zone. Counting Django's way means comparing this text, not parsing it.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use chrono_tz::Tz;

/// The text Django's SQLite backend would bind for `instant` seen in `timezone`:
/// `YYYY-MM-DD HH:MM:SS[.ffffff]`, the fraction left out when it is zero. Comparing stored text
/// against it is exactly what `filter(time_modified__gte=...)` does.
pub fn django_timestamp(instant: DateTime<Utc>, timezone: Tz) -> String {
    django_text(instant.with_timezone(&timezone).naive_local())
}

/// A naive wall-clock time as Django's SQLite backend binds it (see `django_timestamp`).
pub(crate) fn django_text(local: NaiveDateTime) -> String {
    let micros = local.and_utc().timestamp_subsec_micros();
    if micros == 0 {
        local.format("%Y-%m-%d %H:%M:%S").to_string()
    } else {
        format!("{}.{micros:06}", local.format("%Y-%m-%d %H:%M:%S"))
    }
}

/// The wall-clock time in `timezone` that is `window` before `now` by the clock, as Django's
/// `timezone.now() - timedelta(hours=24)` computes it. With `USE_TZ = True` the zone is UTC and
/// this is the instant `window` ago; with a local zone it is naive arithmetic, which on the day
/// the clocks change is an hour off the instant 24 hours ago, as Django's own filter is.
pub(crate) fn local_clock_minus(now: DateTime<Utc>, window: Duration, timezone: Tz) -> NaiveDateTime {
    let local = now.with_timezone(&timezone).naive_local();
    chrono::Duration::from_std(window)
        .ok()
        .and_then(|window| local.checked_sub_signed(window))
        .unwrap_or(NaiveDateTime::MIN)
}

/// Whether `text` is a timestamp as Django stores it: `YYYY-MM-DD HH:MM:SS` with an optional
/// fraction of one to six digits. It runs once per row in the window, so the 19-byte prefix is
/// checked eight bytes at a time.
pub(crate) fn is_django_timestamp(text: &[u8]) -> bool {
    if text.len() < 19 || text.len() == 20 || text.len() > 26 {
        return false;
    }
    let word = |start: usize| u64::from_le_bytes(text[start..start + 8].try_into().expect("eight bytes"));
    // Bytes 0..8 "YYYY-MM-", 8..16 "DD HH:MM", 11..19 "HH:MM:SS": digits where the pattern has
    // 0x80, the given separator elsewhere.
    let prefix_ok = shaped_like(word(0), u64::from_le_bytes(*b"\x80\x80\x80\x80-\x80\x80-"))
        && shaped_like(word(8), u64::from_le_bytes(*b"\x80\x80 \x80\x80:\x80\x80"))
        && shaped_like(word(11), u64::from_le_bytes(*b"\x80\x80:\x80\x80:\x80\x80"));
    prefix_ok && (text.len() == 19 || (text[19] == b'.' && text[20..].iter().all(u8::is_ascii_digit)))
}

/// Whether each byte of `word` is an ASCII digit where `pattern` has 0x80, and equals `pattern`'s
/// byte elsewhere.
fn shaped_like(word: u64, pattern: u64) -> bool {
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    let digit_positions = pattern & HIGH_BITS;
    let digit_ones = digit_positions >> 7; // 0x01 in every digit position
    let digit_mask = digit_ones * 0xff;
    let separators_ok = (word & !digit_mask) == (pattern & !digit_mask);
    // A byte b is a digit when x = b ^ 0x30 is below 10: neither x nor x + 0x76 has its high bit
    // (and a carry out of a byte happens only when x already has it).
    let x = (word ^ 0x3030_3030_3030_3030) & digit_mask;
    let digits_ok = ((x.wrapping_add(digit_ones * 0x76) | x) & digit_positions) == 0;
    separators_ok && digits_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn window_bound_is_formatted_as_django_binds_it() {
        let whole = Utc.with_ymd_and_hms(2026, 11, 23, 9, 5, 7).unwrap();
        assert_eq!(django_timestamp(whole, Tz::UTC), "2026-11-23 09:05:07");
        let fraction = whole + chrono::Duration::microseconds(120);
        assert_eq!(django_timestamp(fraction, Tz::UTC), "2026-11-23 09:05:07.000120");
        let nanos = whole + chrono::Duration::nanoseconds(1_500);
        assert_eq!(django_timestamp(nanos, Tz::UTC), "2026-11-23 09:05:07.000001");
        assert_eq!(django_timestamp(whole, chrono_tz::Africa::Nairobi), "2026-11-23 12:05:07");
    }

    #[test]
    fn django_timestamps_are_recognised_and_others_are_not() {
        for good in ["2026-11-23 09:05:07", "2026-11-23 09:05:07.1", "2026-11-23 09:05:07.123456"] {
            assert!(is_django_timestamp(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            "garbage",
            "2026-11-23T09:05:07",
            "2026-11-23 09:05:07.",
            "2026-11-23 09:05:07.1234567",
            "2026-11-23 09:05:07+00:00",
            "2026-11-23 9:05:07",
            "20x6-11-23 09:05:07",
        ] {
            assert!(!is_django_timestamp(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn the_word_at_a_time_check_agrees_with_the_plain_one_on_every_byte() {
        fn plain(text: &[u8]) -> bool {
            let shape = b"0000-00-00 00:00:00";
            (text.len() == 19 || (21..=26).contains(&text.len()))
                && shape.iter().zip(text).all(|(&s, &b)| if s == b'0' { b.is_ascii_digit() } else { b == s })
                && (text.len() == 19 || (text[19] == b'.' && text[20..].iter().all(u8::is_ascii_digit)))
        }
        let base = b"2026-11-23 09:05:07.123456".to_vec();
        for length in [19, 21, 26] {
            for position in 0..length {
                for byte in 0..=255u8 {
                    let mut text = base[..length].to_vec();
                    text[position] = byte;
                    assert_eq!(is_django_timestamp(&text), plain(&text), "{:?}", String::from_utf8_lossy(&text));
                }
            }
        }
    }
}
