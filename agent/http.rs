//! The HTTP side every push target shares: headers, basic or bearer auth, TLS with a private CA
//! or client certificate, a forward proxy, and when to retry. Secrets read here never print.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Certificate, Identity, Proxy, StatusCode, Url};
use serde::Deserialize;
use toml::Spanned;

use crate::config::Problems;
use crate::populate::SplitMix64;

/// Headers the agent sets itself; a target's `headers` may not replace them.
const RESERVED_HEADERS: [&str; 5] =
    ["content-type", "content-encoding", "content-length", "user-agent", "x-prometheus-remote-write-version"];

pub const USER_AGENT: &str = concat!("apimetrics-agent/", env!("CARGO_PKG_VERSION"));

/// A secret from the config or a file. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `basic_auth = { username = "...", password = "..." }` or with `password_file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBasicAuth {
    /// The user name sent with every request.
    username: String,
    /// The password, written in the config.
    password: Option<String>,
    /// A file holding the password (a trailing newline is ignored).
    password_file: Option<String>,
}

/// `tls = { ca_file = "...", cert_file = "...", key_file = "...", insecure_skip_verify = false }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificates of the CAs to trust instead of the system's.
    ca_file: Option<String>,
    /// PEM client certificate, for servers that require one; needs `key_file`.
    cert_file: Option<String>,
    /// PEM private key of `cert_file`.
    key_file: Option<String>,
    /// Accept any server certificate. For tests only: it gives up on knowing who receives the data.
    #[serde(default)]
    insecure_skip_verify: bool,
}

/// The HTTP keys of one target's table, as written.
#[derive(Debug)]
pub struct RawHttp<'a> {
    pub headers: &'a BTreeMap<Spanned<String>, Spanned<String>>,
    pub basic_auth: Option<&'a Spanned<RawBasicAuth>>,
    pub bearer_token: Option<&'a Spanned<String>>,
    pub bearer_token_file: Option<&'a Spanned<String>>,
    pub tls: Option<&'a Spanned<RawTls>>,
    pub proxy_url: Option<&'a Spanned<String>>,
}

/// Checked HTTP settings of one target.
#[derive(Debug, Clone, Default)]
pub struct HttpSettings {
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub auth: Option<Auth>,
    /// PEM bytes of the CAs to trust instead of the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM bytes of the client certificate followed by its key.
    pub identity_pem: Option<Secret>,
    pub insecure_skip_verify: bool,
    /// `None`: HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the environment.
    pub proxy: Option<Url>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    Basic { username: String, password: Secret },
    Bearer(Secret),
}

impl HttpSettings {
    /// Checks the HTTP keys of the table at `key` (e.g. `pushgateway[0]`); paths are relative to `base`.
    pub fn validate(problems: &mut Problems<'_>, key: &str, raw: RawHttp<'_>, base: &Path) -> HttpSettings {
        let mut settings = HttpSettings::default();
        for (name, value) in raw.headers {
            let header_key = format!("{key}.headers.{}", name.get_ref());
            match (HeaderName::try_from(name.get_ref().as_str()), HeaderValue::try_from(value.get_ref().as_str())) {
                (Ok(header), _) if RESERVED_HEADERS.contains(&header.as_str()) => {
                    problems.at(name, &header_key, "is set by the agent itself and cannot be replaced")
                }
                (Ok(header), Ok(header_value)) => settings.headers.push((header, header_value)),
                (Err(_), _) => problems.at(name, &header_key, "is not a valid HTTP header name"),
                (_, Err(_)) => problems.at(value, &header_key, "is not a valid HTTP header value"),
            }
        }
        let bearer = match (raw.bearer_token, raw.bearer_token_file) {
            (Some(token), Some(_)) => {
                problems.at(token, &format!("{key}.bearer_token"), "set bearer_token or bearer_token_file, not both");
                None
            }
            (Some(token), None) => Some(Secret(token.get_ref().clone())),
            (None, Some(file)) => read_secret(problems, &format!("{key}.bearer_token_file"), file, base),
            (None, None) => None,
        };
        let basic = raw.basic_auth.and_then(|spanned| {
            let basic = spanned.get_ref();
            let password = match (&basic.password, &basic.password_file) {
                (Some(_), Some(_)) => {
                    problems.at(spanned, &format!("{key}.basic_auth"), "set password or password_file, not both");
                    None
                }
                (Some(password), None) => Some(Secret(password.clone())),
                (None, Some(file)) => {
                    let file = Spanned::new(spanned.span(), file.clone());
                    read_secret(problems, &format!("{key}.basic_auth.password_file"), &file, base)
                }
                (None, None) => {
                    problems.at(spanned, &format!("{key}.basic_auth"), "needs password or password_file");
                    None
                }
            };
            password.map(|password| Auth::Basic { username: basic.username.clone(), password })
        });
        settings.auth = match (basic, bearer) {
            (Some(_), Some(_)) => {
                let span = raw.basic_auth.expect("basic auth was given");
                problems.at(span, &format!("{key}.basic_auth"), "set basic_auth or a bearer token, not both");
                None
            }
            (basic, bearer) => basic.or(bearer.map(Auth::Bearer)),
        };
        if let Some(spanned) = raw.tls {
            let tls = spanned.get_ref();
            let tls_key = format!("{key}.tls");
            settings.insecure_skip_verify = tls.insecure_skip_verify;
            if let Some(ca_file) = &tls.ca_file {
                settings.ca_pem = read_file(problems, spanned, &format!("{tls_key}.ca_file"), ca_file, base)
                    .filter(|pem| check(problems, spanned, &format!("{tls_key}.ca_file"), Certificate::from_pem(pem)));
            }
            match (&tls.cert_file, &tls.key_file) {
                (Some(cert_file), Some(key_file)) => {
                    let cert = read_file(problems, spanned, &format!("{tls_key}.cert_file"), cert_file, base);
                    let key = read_file(problems, spanned, &format!("{tls_key}.key_file"), key_file, base);
                    if let (Some(mut pem), Some(key)) = (cert, key) {
                        pem.push(b'\n');
                        pem.extend_from_slice(&key);
                        if check(problems, spanned, &format!("{tls_key}.cert_file"), Identity::from_pem(&pem)) {
                            settings.identity_pem = Some(Secret(String::from_utf8_lossy(&pem).into_owned()));
                        }
                    }
                }
                (Some(_), None) | (None, Some(_)) => {
                    problems.at(spanned, &tls_key, "cert_file and key_file go together: set both or neither")
                }
                (None, None) => {}
            }
        }
        if let Some(proxy) = raw.proxy_url {
            match Url::parse(proxy.get_ref()) {
                Ok(url) if ["http", "https", "socks5", "socks5h"].contains(&url.scheme()) => settings.proxy = Some(url),
                _ => problems.at(
                    proxy,
                    &format!("{key}.proxy_url"),
                    format_args!("{:?} is not a proxy URL, e.g. \"http://proxy.internal:3128\"", proxy.get_ref()),
                ),
            }
        }
        settings
    }

    /// A client with these settings; every request through it times out after `timeout`.
    pub fn client(&self, timeout: Duration) -> anyhow::Result<reqwest::Client> {
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
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
    pub fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some(Auth::Basic { username, password }) => request.basic_auth(username, Some(password.expose())),
            Some(Auth::Bearer(token)) => request.bearer_auth(token.expose()),
            None => request,
        }
    }
}

fn read_file(
    problems: &mut Problems<'_>,
    span: &Spanned<RawTls>,
    key: &str,
    file: &str,
    base: &Path,
) -> Option<Vec<u8>> {
    let path = base.join(file);
    std::fs::read(&path)
        .map_err(|error| problems.at(span, key, format_args!("cannot read {}: {error}", path.display())))
        .ok()
}

fn check<T>(problems: &mut Problems<'_>, span: &Spanned<RawTls>, key: &str, parsed: reqwest::Result<T>) -> bool {
    parsed.map_err(|error| problems.at(span, key, format_args!("is not usable PEM: {error}"))).is_ok()
}

fn read_secret(problems: &mut Problems<'_>, key: &str, file: &Spanned<String>, base: &Path) -> Option<Secret> {
    let path = base.join(file.get_ref());
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim_end_matches(['\r', '\n']).is_empty() => {
            problems.at(file, key, format_args!("{} is empty", path.display()));
            None
        }
        Ok(text) => Some(Secret(text.trim_end_matches(['\r', '\n']).to_owned())),
        Err(error) => {
            problems.at(file, key, format_args!("cannot read {}: {error}", path.display()));
            None
        }
    }
}

/// How a failed request should be handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Worth trying again: a connection error, a timeout, a 5xx or a 429; the server may have
    /// said how long to wait.
    Retryable { reason: String, retry_after: Option<Duration> },
    /// Trying again cannot help until something changes (another 4xx): the server's reason.
    Permanent { reason: String },
}

impl Failure {
    pub fn reason(&self) -> &str {
        match self {
            Failure::Retryable { reason, .. } | Failure::Permanent { reason } => reason,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// Sends a request and classifies what came back: `Ok` for a 2xx, else how to go on.
pub async fn send(request: reqwest::RequestBuilder) -> Result<StatusCode, Failure> {
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => return Err(Failure::Retryable { reason: describe_request_error(&error), retry_after: None }),
    };
    let status = response.status();
    if status.is_success() {
        return Ok(status);
    }
    let retry_after = response.headers().get(RETRY_AFTER).and_then(parse_retry_after);
    let body = response.text().await.unwrap_or_default();
    let body = body.trim();
    let mut reason = format!("HTTP {status}");
    if !body.is_empty() {
        let shown: String = body.chars().take(500).collect();
        reason.push_str(&format!(": {shown}"));
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
    let mut reason = kind.to_owned();
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !reason.contains(&text) {
            reason.push_str(": ");
            reason.push_str(&text);
        }
        source = cause.source();
    }
    reason
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

/// Capped exponential backoff with full jitter: the n-th wait is random in
/// `[base·2ⁿ/2, base·2ⁿ]`, never above `cap`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    n_failures: u32,
    random: SplitMix64,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        Backoff { base, cap, n_failures: 0, random: SplitMix64(seed as u64) }
    }

    /// The wait before the next attempt, at least what the server asked for.
    pub fn next_wait(&mut self, retry_after: Option<Duration>) -> Duration {
        let ceiling = self.base.saturating_mul(1 << self.n_failures.min(20)).min(self.cap);
        self.n_failures += 1;
        let half = ceiling / 2;
        let jitter = Duration::from_nanos(self.random.below(half.as_nanos().max(1) as u64));
        (half + jitter).max(retry_after.unwrap_or_default())
    }

    pub fn reset(&mut self) {
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
    fn retry_after_is_read_as_seconds_or_a_date() {
        assert_eq!(parse_retry_after(&HeaderValue::from_static("3")), Some(Duration::from_secs(3)));
        let in_a_minute = (chrono::Utc::now() + chrono::Duration::seconds(60)).to_rfc2822();
        let parsed = parse_retry_after(&HeaderValue::from_str(&in_a_minute).unwrap()).unwrap();
        assert!(parsed > Duration::from_secs(55) && parsed <= Duration::from_secs(60), "{parsed:?}");
        assert_eq!(parse_retry_after(&HeaderValue::from_static("soon")), None);
    }

    #[test]
    fn secrets_never_print() {
        let auth = Auth::Basic { username: "agent".into(), password: Secret("hunter2".into()) };
        let settings = HttpSettings { auth: Some(auth), ..HttpSettings::default() };
        let printed = format!("{settings:?}");
        assert!(!printed.contains("hunter2") && printed.contains("<redacted>"), "{printed}");
    }
}
