//! The agent's log on stderr, in one of two formats: text for people (one line per record,
//! whatever a value holds: a newline in a receiver's answer or a path cannot start a forged
//! record), or JSON for machines (one object per line with time, level, message and fields, for
//! sites that ship logs to Loki or Elasticsearch). Every record passes `common::redact` first.

use std::io::{IsTerminal, Write};
use std::str::FromStr;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use super::escape::escape_controls;
use super::redact::redact;

/// How log records are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<LogFormat, String> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{other:?} is not a log format: \"text\" or \"json\"")),
        }
    }
}

/// Sends the process's log records to stderr in `format`, filtered by `RUST_LOG` (default
/// `info`). Call once, at start.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let colours = format == LogFormat::Text && std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(OneLineStderr { colours });
    match format {
        LogFormat::Text => builder.with_ansi(colours).init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
    }
}

/// Stderr, taking one whole record per write and keeping it on one line.
struct OneLineStderr {
    colours: bool,
}

impl<'a> MakeWriter<'a> for OneLineStderr {
    type Writer = OneLine<std::io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        OneLine { out: std::io::stderr(), colours: self.colours }
    }
}

/// Writes each record with every known secret redacted and its control characters escaped (`\n`,
/// `\r`, `\u{1b}`…) but the final line break, so one record is one line, no value moves the
/// cursor or forges a record, and no secret shows.
struct OneLine<W: Write> {
    out: W,
    colours: bool,
}

impl<W: Write> Write for OneLine<W> {
    fn write(&mut self, record: &[u8]) -> std::io::Result<usize> {
        self.write_all(record)?;
        Ok(record.len())
    }

    fn write_all(&mut self, record: &[u8]) -> std::io::Result<()> {
        let (body, end) = match record.strip_suffix(b"\n") {
            Some(body) => (body, &b"\n"[..]),
            None => (record, &b""[..]),
        };
        let text = String::from_utf8_lossy(body);
        let escaped = escape_controls(&redact(&text), self.colours);
        if escaped == text {
            return self.out.write_all(record);
        }
        self.out.write_all(escaped.as_bytes())?;
        self.out.write_all(end)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_stays_on_one_line_and_moves_no_cursor() {
        let mut written = OneLine { out: Vec::new(), colours: false };
        written.write_all(b"WARN push failed reason=HTTP 400: bad\nINFO forged record\r\n").unwrap();
        written.write_all("INFO path=/srv/\u{1b}[31mred\u{85}x\u{2028}y\tz\n".as_bytes()).unwrap();
        written.write_all(b"INFO plain\n").unwrap();
        assert_eq!(
            String::from_utf8(written.out).unwrap(),
            "WARN push failed reason=HTTP 400: bad\\nINFO forged record\\r\n\
             INFO path=/srv/\\u{1b}[31mred\\u{85}x\\u{2028}y\\tz\n\
             INFO plain\n"
        );
        // A receiver's answer, as `http::send` shows it.
        assert_eq!(escape_controls("bad\n\u{1b}[31mred\tü", false), "bad\\n\\u{1b}[31mred\\tü");
        let mut coloured = OneLine { out: Vec::new(), colours: true };
        coloured.write_all(b"\x1b[32mINFO\x1b[0m a\nb\n").unwrap();
        assert_eq!(String::from_utf8(coloured.out).unwrap(), "\x1b[32mINFO\x1b[0m a\\nb\n");
    }
}
