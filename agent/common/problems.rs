//! What every settings table's validation shares: the list of problems found, each with its key
//! and line, and the parsers of values that several tables take (durations, sizes and counts
//! within their ranges, names).

use std::fmt;
use std::time::Duration;

use toml::Spanned;

use super::ranges::{CountRange, DurationRange, SizeRange, byte_size};
use super::redact::credentials_out_of_urls;

/// The problems found so far in one config file, each with its key and, where the TOML has it,
/// its line. Validation goes on past a problem so that every one is reported at once. A URL's
/// credentials never show in a message, whatever key the URL was written under.
pub(crate) struct Problems<'a> {
    text: &'a str,
    found: Vec<Problem>,
    /// What is allowed but unwise (a weak secret, a secret file others may read), said at start.
    warnings: Vec<String>,
    /// The keys whose secret is written in the config itself, not in a file of its own.
    inline_secrets: Vec<String>,
}

/// One problem, as the operator reads it.
struct Problem {
    /// The line it is on, for sorting them as the file reads; `None` for no one place.
    line: Option<usize>,
    /// The key path it is about, e.g. `pushgateway[0].url`.
    key: String,
    message: String,
}

impl<'a> Problems<'a> {
    /// No problems yet in the config `text`.
    pub(crate) fn new(text: &'a str) -> Problems<'a> {
        Problems { text, found: Vec::new(), warnings: Vec::new(), inline_secrets: Vec::new() }
    }

    /// A warning about the value at `key`, which does not refuse the config.
    pub(crate) fn warn(&mut self, key: &str, message: impl fmt::Display) {
        self.warnings.push(credentials_out_of_urls(&format!("{key}: {message}")));
    }

    /// Notes that `key` holds a secret written in the config itself.
    pub(crate) fn inline_secret(&mut self, key: &str) {
        self.inline_secrets.push(key.to_owned());
    }

    /// The keys noted by `inline_secret`, taken out.
    pub(crate) fn take_inline_secrets(&mut self) -> Vec<String> {
        std::mem::take(&mut self.inline_secrets)
    }

    /// The warnings so far, taken out.
    pub(crate) fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// A problem with the value at `value`'s place in the file.
    pub(crate) fn at<T>(&mut self, value: &Spanned<T>, key: &str, message: impl fmt::Display) {
        self.at_offset(value.span().start, value.span().end == 0, key, message);
    }

    /// A problem with what lies at byte `offset` of the file.
    pub(crate) fn at_offset(&mut self, offset: usize, nowhere: bool, key: &str, message: impl fmt::Display) {
        if nowhere {
            return self.plain(key, message);
        }
        let line = line_of(self.text, offset);
        let message = credentials_out_of_urls(&format!("line {line}: {key}: {message}"));
        self.found.push(Problem { line: Some(line), key: key.to_owned(), message });
    }

    /// A problem with no one place in the file.
    pub(crate) fn plain(&mut self, key: &str, message: impl fmt::Display) {
        let message = credentials_out_of_urls(&format!("{key}: {message}"));
        self.found.push(Problem { line: None, key: key.to_owned(), message });
    }

    /// A required key that is absent, unless a problem with it, with a table holding it or with a
    /// key inside it is already reported: a value of the wrong type is taken out before the
    /// checks run, and is not to be reported twice.
    pub(crate) fn missing(&mut self, key: &str, message: impl fmt::Display) {
        if !self.reported_about(key) {
            self.plain(key, message);
        }
    }

    /// Like `missing`, for a key absent from the table at `table`'s place.
    pub(crate) fn missing_in<T>(&mut self, table: &Spanned<T>, key: &str, message: impl fmt::Display) {
        if !self.reported_about(key) {
            self.at(table, key, message);
        }
    }

    /// Whether a problem is reported with `key`, a table holding it, or a key inside it.
    fn reported_about(&self, key: &str) -> bool {
        let related = |reported: &str| {
            let (shorter, longer) = if reported.len() <= key.len() { (reported, key) } else { (key, reported) };
            longer.strip_prefix(shorter).is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        };
        self.found.iter().any(|problem| related(&problem.key))
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

/// A duration as the config writes it, e.g. "15s"; a type of its own so that a value of another
/// type is told what is expected ("expected a duration in quotes, e.g. \"15s\"").
#[derive(Debug, Clone)]
pub(crate) struct DurationText(pub(crate) String);

/// A size as the config writes it, e.g. "256MiB"; a type of its own as `DurationText` is.
#[derive(Debug, Clone)]
pub(crate) struct SizeText(pub(crate) String);

/// Reads a string into `T`, saying `expecting` of any other type.
struct QuotedText<T> {
    expecting: &'static str,
    wrap: fn(String) -> T,
}

impl<T> serde::de::Visitor<'_> for QuotedText<T> {
    type Value = T;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.expecting)
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<T, E> {
        Ok((self.wrap)(text.to_owned()))
    }
}

impl<'de> serde::Deserialize<'de> for DurationText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(QuotedText {
            expecting: "a duration in quotes, e.g. \"15s\" or \"500ms\"",
            wrap: DurationText,
        })
    }
}

impl<'de> serde::Deserialize<'de> for SizeText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(QuotedText { expecting: "a size in quotes, e.g. \"256MiB\"", wrap: SizeText })
    }
}

/// A duration key: `value` if given, else the range's default; values that do not parse or lie
/// outside `range` are problems, and stand in as the default (or the least) of the range.
pub(crate) fn duration(
    problems: &mut Problems<'_>,
    value: Option<&Spanned<DurationText>>,
    key: &str,
    range: &DurationRange,
) -> Duration {
    checked_duration(problems, value, key, range).unwrap_or_else(|| range.default_or_min())
}

/// Like `duration`, but `None` for a value that is a problem.
pub(crate) fn checked_duration(
    problems: &mut Problems<'_>,
    value: Option<&Spanned<DurationText>>,
    key: &str,
    range: &DurationRange,
) -> Option<Duration> {
    let Some(value) = value else {
        return Some(range.default_or_min());
    };
    let text = &value.get_ref().0;
    match humantime::parse_duration(text) {
        Ok(parsed) if range.contains(parsed) => Some(parsed),
        Ok(_) => {
            problems.at(value, key, format_args!("{text:?} is out of range: {}", range.describe()));
            None
        }
        Err(error) => {
            problems.at(
                value,
                key,
                format_args!("{text:?} is not a duration: {error} (e.g. \"500ms\", \"15s\", \"24h\")"),
            );
            None
        }
    }
}

/// A size key: `value` if given, else the range's default; values that do not parse or lie
/// outside `range` are problems.
pub(crate) fn size(
    problems: &mut Problems<'_>,
    value: Option<&Spanned<SizeText>>,
    key: &str,
    range: &SizeRange,
) -> u64 {
    let Some(value) = value else {
        return range.default_bytes();
    };
    let text = &value.get_ref().0;
    match byte_size(text) {
        Some(bytes) if range.contains(bytes) => bytes,
        Some(_) => {
            problems.at(value, key, format_args!("{text:?} is out of range: {}", range.describe()));
            range.default_bytes()
        }
        None => {
            problems.at(value, key, format_args!("{text:?} is not a size, e.g. \"256MiB\", \"1GB\""));
            range.default_bytes()
        }
    }
}

/// A count key: `value` if given, else the range's default; values outside `range` are problems.
pub(crate) fn count(problems: &mut Problems<'_>, value: Option<&Spanned<i64>>, key: &str, range: &CountRange) -> u64 {
    match value {
        None => range.default as u64,
        Some(value) if range.contains(*value.get_ref()) => *value.get_ref() as u64,
        Some(value) => {
            problems.at(value, key, format_args!("{} is out of range: {}", value.get_ref(), range.describe()));
            range.default as u64
        }
    }
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
    fn a_missing_key_is_not_reported_again_under_a_reported_table_or_key() {
        let text = "[schedule]\ninterval = 5\n";
        let mut problems = Problems::new(text);
        problems.at_offset(22, false, "schedule.interval", "invalid type");
        problems.missing("schedule", "set exactly one of schedule.interval and schedule.cron");
        problems.missing("schedule.interval", "missing");
        problems.missing("scheduler", "not related: a key is more than a prefix");
        problems.missing("pushgateway[0].url", "missing");
        assert_eq!(
            problems.into_messages(),
            [
                "line 2: schedule.interval: invalid type",
                "scheduler: not related: a key is more than a prefix",
                "pushgateway[0].url: missing"
            ]
        );
    }
}
