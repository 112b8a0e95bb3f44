//! The agent's log on stderr, in one of two formats: text for people (one line per record,
//! whatever a value holds: a newline in a receiver's answer or a path cannot start a forged
//! record), or JSON for machines (one object per line with time, level, message and fields, for
//! sites that ship logs to Loki or Elasticsearch).

use std::io::{IsTerminal, Write};
use std::str::FromStr;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

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
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(OneLineStderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
    }
}

/// Stderr, taking one whole record per write and keeping it on one line.
struct OneLineStderr;

impl<'a> MakeWriter<'a> for OneLineStderr {
    type Writer = OneLine<std::io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        OneLine(std::io::stderr())
    }
}

/// Writes each record with its inner line breaks escaped (`\n`, `\r`), so one record is one line.
struct OneLine<W: Write>(W);

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
        if !body.iter().any(|byte| matches!(byte, b'\n' | b'\r')) {
            return self.0.write_all(record);
        }
        let mut line = Vec::with_capacity(record.len() + 16);
        for &byte in body {
            match byte {
                b'\n' => line.extend_from_slice(b"\\n"),
                b'\r' => line.extend_from_slice(b"\\r"),
                other => line.push(other),
            }
        }
        line.extend_from_slice(end);
        self.0.write_all(&line)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_stays_on_one_line() {
        let mut written = OneLine(Vec::new());
        written.write_all(b"WARN push failed reason=HTTP 400: bad\nINFO forged record\r\n").unwrap();
        written.write_all(b"INFO plain\n").unwrap();
        assert_eq!(
            String::from_utf8(written.0).unwrap(),
            "WARN push failed reason=HTTP 400: bad\\nINFO forged record\\r\nINFO plain\n"
        );
    }
}
