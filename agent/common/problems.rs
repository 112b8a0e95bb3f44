//! What every settings table's validation shares: the list of problems found, each with its key
//! and line, and the parsers of values that several tables take (durations, sizes, names).

use std::fmt;
use std::time::Duration;

use toml::Spanned;

/// The problems found so far in one config file, each with its key and, where the TOML has it,
/// its line. Validation goes on past a problem so that every one is reported at once.
pub(crate) struct Problems<'a> {
    text: &'a str,
    found: Vec<Problem>,
}

/// One problem, as the operator reads it.
struct Problem {
    /// The line it is on, for sorting them as the file reads; `None` for no one place.
    line: Option<usize>,
    message: String,
}

impl<'a> Problems<'a> {
    /// No problems yet in the config `text`.
    pub(crate) fn new(text: &'a str) -> Problems<'a> {
        Problems { text, found: Vec::new() }
    }

    /// A problem with the value at `value`'s place in the file.
    pub(crate) fn at<T>(&mut self, value: &Spanned<T>, key: &str, message: impl fmt::Display) {
        if value.span().end == 0 {
            return self.plain(key, message);
        }
        let line = line_of(self.text, value.span().start);
        self.found.push(Problem { line: Some(line), message: format!("line {line}: {key}: {message}") });
    }

    /// A problem with no one place in the file.
    pub(crate) fn plain(&mut self, key: &str, message: impl fmt::Display) {
        self.found.push(Problem { line: None, message: format!("{key}: {message}") });
    }

    /// Every problem, in the order the file reads (those with no line last); empty when the
    /// config is good.
    pub(crate) fn into_messages(mut self) -> Vec<String> {
        self.found.sort_by_key(|problem| problem.line.unwrap_or(usize::MAX));
        self.found.into_iter().map(|problem| problem.message).collect()
    }
}

/// The line, counted from 1, that byte `offset` of `text` is on.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&byte| byte == b'\n').count() + 1
}

/// A duration key: `value` if given, else `default`; zero and unparsable values are problems.
pub(crate) fn duration(
    problems: &mut Problems<'_>,
    value: Option<&Spanned<String>>,
    key: &str,
    default: &str,
) -> Duration {
    let Some(value) = value else {
        return humantime::parse_duration(default).expect("default durations parse");
    };
    match humantime::parse_duration(value.get_ref()) {
        Ok(parsed) if parsed.is_zero() => {
            problems.at(value, key, "must be longer than zero");
            parsed
        }
        Ok(parsed) => parsed,
        Err(error) => {
            problems.at(
                value,
                key,
                format_args!("{:?} is not a duration: {error} (e.g. \"500ms\", \"15s\", \"24h\")", value.get_ref()),
            );
            Duration::from_secs(1)
        }
    }
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
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(multiplier).filter(|size| *size > 0)
}

/// A Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub(crate) fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A Prometheus label name a user may set: `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`.
pub(crate) fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(byte_size("256MiB"), Some(256 << 20));
        assert_eq!(byte_size("1GB"), Some(1_000_000_000));
        assert_eq!(byte_size("4096"), Some(4096));
        assert_eq!(byte_size("2 kib"), Some(2048));
        for bad in ["", "0", "MiB", "12XB", "-1MiB", "99999999999999999999GiB"] {
            assert_eq!(byte_size(bad), None, "{bad}");
        }
    }
}
