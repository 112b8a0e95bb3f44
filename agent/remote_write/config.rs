//! One `[[remote_write]]` table: the receiver, how much goes in one request, the queue's bounds,
//! and its HTTP settings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use toml::Spanned;

use crate::common::problems::{DurationText, Problems, SizeText, count, duration, size};
use crate::common::ranges::{
    REMOTE_WRITE_MAX_SAMPLES_PER_SEND, REMOTE_WRITE_QUEUE_MAX_AGE, REMOTE_WRITE_QUEUE_MAX_BYTES, REMOTE_WRITE_TIMEOUT,
};
use crate::common::redact::without_credentials;
use crate::common::secret_settings::remember_url_secrets;
use crate::http::config::{HttpSettings, RawBasicAuth, RawHttp, RawTls};

/// One `[[remote_write]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRemoteWrite {
    /// Names the queue file and the `target` label; default: derived from the URL.
    name: Option<Spanned<String>>,
    /// The receiver's write endpoint, e.g. Prometheus's `/api/v1/write`. Required.
    url: Option<Spanned<String>>,
    /// How long one request may take, connecting included.
    timeout: Option<Spanned<DurationText>>,
    /// The most samples in one request.
    max_samples_per_send: Option<Spanned<i64>>,
    /// The queue's bounds.
    #[serde(default)]
    queue: RawQueue,
    /// Extra request headers, e.g. Mimir's `X-Scope-OrgID`.
    #[serde(default)]
    headers: std::collections::BTreeMap<Spanned<String>, Spanned<String>>,
    /// HTTP basic auth.
    basic_auth: Option<Spanned<RawBasicAuth>>,
    /// A bearer token, written in the config.
    bearer_token: Option<Spanned<String>>,
    /// A file holding the bearer token.
    bearer_token_file: Option<Spanned<String>>,
    /// A private CA, a client certificate, or (tests only) no verification.
    tls: Option<Spanned<RawTls>>,
    /// A forward proxy; by default HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the environment.
    proxy_url: Option<Spanned<String>>,
}

/// `queue = { max_age = "1h", max_bytes = "256MiB" }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawQueue {
    /// Samples older than this are dropped unsent (and counted).
    max_age: Option<Spanned<DurationText>>,
    /// Beyond this much queued, the oldest samples are dropped (and counted).
    max_bytes: Option<Spanned<SizeText>>,
}

/// A checked remote-write target.
#[derive(Debug, Clone)]
pub(crate) struct RemoteWriteConfig {
    pub(crate) name: String,
    pub(crate) url: Url,
    pub(crate) timeout: Duration,
    pub(crate) max_samples_per_send: usize,
    pub(crate) max_age: Duration,
    pub(crate) max_bytes: u64,
    pub(crate) http: HttpSettings,
}

impl RemoteWriteConfig {
    /// Where this target's queue lives under `state_dir`.
    pub(crate) fn queue_path(&self, state_dir: &Path) -> PathBuf {
        state_dir.join("remote_write").join(format!("{}.sqlite3", self.name))
    }

    /// The queue's bounds as of now: the oldest timestamp kept (`max_age` ago) and `max_bytes`.
    pub(crate) fn queue_bounds_now(&self) -> (i64, u64) {
        let oldest_kept = chrono::Utc::now().timestamp_millis().saturating_sub(self.max_age.as_millis() as i64);
        (oldest_kept, self.max_bytes)
    }
}

impl RawRemoteWrite {
    /// Checks `remote_write[index]`.
    pub(crate) fn validate(&self, problems: &mut Problems<'_>, index: usize, base: &Path) -> RemoteWriteConfig {
        let key = format!("remote_write[{index}]");
        let url = self.url(problems, &key);
        let name = self.name(problems, &key, url.as_ref());
        let max_samples_per_send = count(
            problems,
            self.max_samples_per_send.as_ref(),
            &format!("{key}.max_samples_per_send"),
            &REMOTE_WRITE_MAX_SAMPLES_PER_SEND,
        );
        let max_bytes = size(
            problems,
            self.queue.max_bytes.as_ref(),
            &format!("{key}.queue.max_bytes"),
            &REMOTE_WRITE_QUEUE_MAX_BYTES,
        );
        RemoteWriteConfig {
            name,
            url: url.unwrap_or_else(|| Url::parse("http://invalid.invalid/").expect("a constant URL parses")),
            timeout: duration(problems, self.timeout.as_ref(), &format!("{key}.timeout"), &REMOTE_WRITE_TIMEOUT),
            max_samples_per_send: max_samples_per_send as usize,
            max_age: duration(
                problems,
                self.queue.max_age.as_ref(),
                &format!("{key}.queue.max_age"),
                &REMOTE_WRITE_QUEUE_MAX_AGE,
            ),
            max_bytes,
            http: RawHttp {
                headers: &self.headers,
                basic_auth: self.basic_auth.as_ref(),
                bearer_token: self.bearer_token.as_ref(),
                bearer_token_file: self.bearer_token_file.as_ref(),
                tls: self.tls.as_ref(),
                proxy_url: self.proxy_url.as_ref(),
            }
            .validate(problems, &key, base),
        }
    }

    fn url(&self, problems: &mut Problems<'_>, key: &str) -> Option<Url> {
        let url_key = format!("{key}.url");
        let Some(url) = &self.url else {
            problems.missing(
                &url_key,
                "missing: the receiver's write endpoint, e.g. \"https://mimir.example.org/api/v1/push\"",
            );
            return None;
        };
        match Url::parse(url.get_ref()) {
            Ok(parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
                problems.at(url, &url_key, "holds credentials: put them in basic_auth instead");
                None
            }
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {
                remember_url_secrets(problems, &url_key, &parsed);
                Some(parsed)
            }
            _ => {
                // Shown without credentials: a URL that does not parse may hold some.
                problems.at(
                    url,
                    &url_key,
                    format_args!(
                        "{:?} is not an http(s) URL, e.g. \"https://mimir.example.org/api/v1/push\"",
                        without_credentials(url.get_ref())
                    ),
                );
                None
            }
        }
    }

    /// The name given, or one derived from the URL.
    fn name(&self, problems: &mut Problems<'_>, key: &str, url: Option<&Url>) -> String {
        let Some(name) = &self.name else {
            return url.map(name_from_url).unwrap_or_default();
        };
        let valid = !name.get_ref().is_empty()
            && name.get_ref().chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid {
            problems.at(name, &format!("{key}.name"), "use letters, digits, '_', '-' and '.' only");
        }
        name.get_ref().clone()
    }
}

/// `https://mimir.example.org/api/v1/push` → `mimir.example.org_api_v1_push`.
fn name_from_url(url: &Url) -> String {
    let mut raw = url.host_str().unwrap_or("remote").to_owned();
    if let Some(port) = url.port() {
        raw.push_str(&format!("_{port}"));
    }
    raw.push_str(url.path());
    let name: String =
        raw.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '.') { c } else { '_' }).collect();
    match name.trim_matches('_') {
        "" => "remote".to_owned(),
        name => name.to_owned(),
    }
}
