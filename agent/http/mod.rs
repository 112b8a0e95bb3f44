//! The HTTP side every push target shares: a client built from a target's `HttpSettings`
//! (`config`), sending a request and telling a failure worth retrying from one that is not, and
//! the pacing of retries (`pacing`).

pub(crate) mod config;
pub(crate) mod pacing;

use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Certificate, Identity, Proxy, StatusCode};

use self::config::{Auth, HttpSettings};
use crate::common::escape::{escape_controls, with_causes};
use crate::common::redact::redact_from_outside;

const USER_AGENT: &str = concat!("apimetrics-agent/", env!("CARGO_PKG_VERSION"));

/// How much of a receiver's error answer is read (the rest is never read), and how many of its
/// characters a message shows.
const ANSWER_READ_LIMIT: usize = 64 * 1024;
const ANSWER_SHOWN_CHARACTERS: usize = 500;

impl HttpSettings {
    /// A client with these settings; every request through it times out after `timeout`.
    pub(crate) fn client(&self, timeout: Duration) -> anyhow::Result<reqwest::Client> {
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .redirect(same_origin_redirects())
            .default_headers(headers)
            .timeout(timeout)
            .connect_timeout(timeout)
            .tls_danger_accept_invalid_certs(self.insecure_skip_verify);
        if let Some(ca_pem) = &self.ca_pem {
            builder = builder.tls_certs_only(Certificate::from_pem_bundle(ca_pem)?);
        }
        if let Some(identity_pem) = &self.identity_pem {
            builder = builder.identity(Identity::from_pem(identity_pem.expose().as_bytes())?);
        }
        if let Some(proxy) = &self.proxy {
            builder = builder.proxy(Proxy::all(proxy.clone())?);
        }
        Ok(builder.build()?)
    }

    /// Adds the configured authorization to a request.
    pub(crate) fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some(Auth::Basic { username, password }) => request.basic_auth(username, Some(password.expose())),
            Some(Auth::Bearer(token)) => request.bearer_auth(token.expose()),
            None => request,
        }
    }
}

/// Follows a redirect only to the same scheme, host and port (at most 10): the target's headers
/// may carry secrets, and a redirect elsewhere would hand them to another server.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let origin = |url: &reqwest::Url| {
            (url.scheme().to_owned(), url.host_str().map(str::to_owned), url.port_or_known_default())
        };
        let same = attempt.previous().last().is_some_and(|previous| origin(previous) == origin(attempt.url()));
        if same && attempt.previous().len() < 10 { attempt.follow() } else { attempt.stop() }
    })
}

/// How a failed request should be handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Worth trying again: a connection error, a timeout, a 5xx or a 429; the server may have
    /// said how long to wait.
    Retryable { reason: String, retry_after: Option<Duration> },
    /// Trying again cannot help until something changes (another 4xx): the server's reason.
    Permanent { reason: String },
}

impl Failure {
    pub(crate) fn reason(&self) -> &str {
        match self {
            Failure::Retryable { reason, .. } | Failure::Permanent { reason } => reason,
        }
    }

    /// How long the server asked to be left alone, if it did.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Retryable { retry_after, .. } => *retry_after,
            Failure::Permanent { .. } => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// Sends a request and classifies what came back: `Ok` for a 2xx, else how to go on.
pub(crate) async fn send(request: reqwest::RequestBuilder) -> Result<(), Failure> {
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(error) => {
            // Without the URL as written: its query may hold a secret in a form of its own.
            let reason = describe_request_error(&error.without_url());
            return Err(Failure::Retryable { reason, retry_after: None });
        }
    };
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = response.headers().get(RETRY_AFTER).and_then(parse_retry_after);
    // The start of the answer, whatever its length: secrets out of the whole of it before it is
    // cut short (a secret across the cut would show in part), then escaped onto one line.
    let mut body = Vec::new();
    while body.len() < ANSWER_READ_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let body = redact_from_outside(String::from_utf8_lossy(&body).trim());
    let mut reason = format!("HTTP {status}");
    if !body.is_empty() {
        reason.push_str(": ");
        reason.push_str(&escape_controls(&body.chars().take(ANSWER_SHOWN_CHARACTERS).collect::<String>(), false));
    }
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        Err(Failure::Retryable { reason, retry_after })
    } else {
        Err(Failure::Permanent { reason })
    }
}

fn describe_request_error(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    redact_from_outside(&with_causes(kind, error))
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(text).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_as_seconds_or_a_date() {
        assert_eq!(parse_retry_after(&HeaderValue::from_static("3")), Some(Duration::from_secs(3)));
        let in_a_minute = (chrono::Utc::now() + chrono::Duration::seconds(60)).to_rfc2822();
        let parsed = parse_retry_after(&HeaderValue::from_str(&in_a_minute).unwrap()).unwrap();
        assert!(parsed > Duration::from_secs(55) && parsed <= Duration::from_secs(60), "{parsed:?}");
        assert_eq!(parse_retry_after(&HeaderValue::from_static("soon")), None);
    }
}
