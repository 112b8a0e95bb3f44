//! The Pushgateway outlet, for sites that cannot be scraped: each target pushes the latest
//! snapshot to its group, `/metrics/job/<job>{/<label>/<value>}`, retrying what may pass and
//! never queueing old snapshots: a gateway only ever holds the latest.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use chrono::Utc;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, Url};
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use toml::Spanned;
use tracing::{info, warn};

use crate::config::{Problems, duration, is_label_name};
use crate::exposition;
use crate::http::{Backoff, Failure, HttpSettings, RawBasicAuth, RawHttp, RawTls};
use crate::snapshot::Snapshot;
use crate::telemetry::AgentState;

/// One `[[pushgateway]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPushgateway {
    /// The gateway's base URL; a path prefix is kept.
    url: Spanned<String>,
    /// The `job` of the group pushed to.
    #[serde(default = "default_job")]
    job: Spanned<String>,
    /// Further grouping-key labels of the group.
    #[serde(default)]
    grouping: BTreeMap<Spanned<String>, Spanned<String>>,
    /// "put" replaces the whole group; "post" replaces only the families pushed.
    #[serde(default = "default_method")]
    method: Spanned<String>,
    /// How long one request may take, connecting included.
    timeout: Option<Spanned<String>>,
    /// Delete the group when the agent stops cleanly.
    #[serde(default)]
    delete_on_shutdown: bool,
    /// Extra request headers, e.g. a tenant header.
    #[serde(default)]
    headers: BTreeMap<Spanned<String>, Spanned<String>>,
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

fn default_job() -> Spanned<String> {
    Spanned::new(0..0, "apimetrics".to_owned())
}

fn default_method() -> Spanned<String> {
    Spanned::new(0..0, "put".to_owned())
}

/// A checked Pushgateway target.
#[derive(Debug, Clone)]
pub struct PushgatewayConfig {
    /// The group's URL, which names the target in logs and metrics (it holds no secret).
    pub group_url: Url,
    pub job: String,
    pub grouping: BTreeMap<String, String>,
    pub method: Method,
    pub timeout: Duration,
    pub delete_on_shutdown: bool,
    pub http: HttpSettings,
}

impl PushgatewayConfig {
    pub fn name(&self) -> &str {
        self.group_url.as_str()
    }
}

/// Checks `pushgateway[index]`; `labels` are the constant labels, which the grouping must not
/// contradict (the gateway would silently let the grouping win).
pub fn validate(
    problems: &mut Problems<'_>,
    index: usize,
    raw: &RawPushgateway,
    labels: &BTreeMap<String, String>,
    base: &Path,
) -> PushgatewayConfig {
    let key = format!("pushgateway[{index}]");
    let base_url = match Url::parse(raw.url.get_ref()) {
        Ok(url) if !matches!(url.scheme(), "http" | "https") => {
            problems.at(
                &raw.url,
                &format!("{key}.url"),
                format_args!(
                    "{:?} is not an http:// or https:// URL, e.g. \"https://push.example.org:9091\"",
                    raw.url.get_ref()
                ),
            );
            None
        }
        Ok(url) if !url.username().is_empty() || url.password().is_some() => {
            problems.at(&raw.url, &format!("{key}.url"), "holds credentials: put them in basic_auth instead");
            None
        }
        Ok(url) if url.query().is_some() || url.fragment().is_some() => {
            problems.at(&raw.url, &format!("{key}.url"), "must have no query or fragment");
            None
        }
        Ok(url) => Some(url),
        Err(error) => {
            problems.at(
                &raw.url,
                &format!("{key}.url"),
                format_args!("{:?} is not a URL: {error} (e.g. \"https://push.example.org:9091\")", raw.url.get_ref()),
            );
            None
        }
    };
    let job = raw.job.get_ref().clone();
    if job.is_empty() {
        problems.at(&raw.job, &format!("{key}.job"), "must not be empty");
    }
    let mut grouping = BTreeMap::new();
    for (name, value) in &raw.grouping {
        let label_key = format!("{key}.grouping.{}", name.get_ref());
        if !is_label_name(name.get_ref()) || name.get_ref() == "job" {
            problems.at(name, &label_key, "not a grouping label name ([a-zA-Z_][a-zA-Z0-9_]*, not \"job\" or \"__…\")");
        }
        grouping.insert(name.get_ref().clone(), value.get_ref().clone());
    }
    for (name, value) in labels {
        let grouped = if name == "job" { Some(&job) } else { grouping.get(name) };
        if let Some(grouped) = grouped.filter(|grouped| *grouped != value) {
            problems.plain(
                &format!("{key}.grouping"),
                format_args!(
                    "{name} = {grouped:?} contradicts labels.{name} = {value:?}; the gateway would keep {grouped:?}: \
                     make them agree or drop one"
                ),
            );
        }
    }
    let method = match raw.method.get_ref().to_ascii_lowercase().as_str() {
        "put" => Method::PUT,
        "post" => Method::POST,
        _ => {
            problems.at(
                &raw.method,
                &format!("{key}.method"),
                format_args!("{:?} is not \"put\" or \"post\"", raw.method.get_ref()),
            );
            Method::PUT
        }
    };
    let timeout = duration(problems, raw.timeout.as_ref(), &format!("{key}.timeout"), "10s");
    let http = HttpSettings::validate(
        problems,
        &key,
        RawHttp {
            headers: &raw.headers,
            basic_auth: raw.basic_auth.as_ref(),
            bearer_token: raw.bearer_token.as_ref(),
            bearer_token_file: raw.bearer_token_file.as_ref(),
            tls: raw.tls.as_ref(),
            proxy_url: raw.proxy_url.as_ref(),
        },
        base,
    );
    let group_url = base_url
        .map(|url| group_url(&url, &job, &grouping))
        .unwrap_or_else(|| Url::parse("http://invalid.invalid/").expect("a constant URL parses"));
    PushgatewayConfig { group_url, job, grouping, method, timeout, delete_on_shutdown: raw.delete_on_shutdown, http }
}

/// `base` + `/metrics/job/<job>{/<label>/<value>}`: values that are empty or hold a `/` go as
/// `<label>@base64/<url-safe base64>`, the rest percent-encoded.
pub fn group_url(base: &Url, job: &str, grouping: &BTreeMap<String, String>) -> Url {
    let mut url = base.clone();
    {
        let mut segments = url.path_segments_mut().expect("http(s) URLs have a path");
        segments.pop_if_empty().push("metrics");
        for (label, value) in
            std::iter::once(("job", job)).chain(grouping.iter().map(|(l, v)| (l.as_str(), v.as_str())))
        {
            if value.is_empty() || value.contains('/') {
                let encoded = if value.is_empty() { "=".to_owned() } else { URL_SAFE.encode(value) };
                segments.push(&format!("{label}@base64")).push(&encoded);
            } else {
                segments.push(label).push(value);
            }
        }
    }
    url
}

/// A target at work: its client, and how long the gateway asked it to wait.
#[derive(Debug)]
pub struct Pushgateway {
    pub config: PushgatewayConfig,
    client: reqwest::Client,
    backoff: Backoff,
    /// No request before this instant: the gateway's last `Retry-After`.
    not_before: Option<Instant>,
}

impl Pushgateway {
    pub fn new(config: PushgatewayConfig) -> anyhow::Result<Pushgateway> {
        let client = config.http.client(config.timeout)?;
        Ok(Pushgateway {
            config,
            client,
            backoff: Backoff::new(Duration::from_millis(250), Duration::from_secs(30)),
            not_before: None,
        })
    }

    pub fn name(&self) -> &str {
        self.config.name()
    }

    async fn send(&self, method: Method, body: Option<&str>) -> Result<(), Failure> {
        let mut request = self.client.request(method, self.config.group_url.clone());
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, exposition::CONTENT_TYPE).body(body.to_owned());
        }
        crate::http::send(self.config.http.authorize(request)).await.map(|_| ())
    }

    /// Pushes `body`, retrying what may pass with backoff, until it succeeds, fails for good,
    /// `max_attempts` run out, or `give_up` resolves (a newer snapshot, or shutdown).
    pub async fn push(
        &mut self,
        body: &str,
        max_attempts: u32,
        give_up: impl Future<Output = ()>,
    ) -> Result<(), Failure> {
        tokio::pin!(give_up);
        self.backoff.reset();
        let mut last_failure = None;
        for attempt in 1.. {
            // The gateway's Retry-After holds across snapshots, so it is kept until it has passed.
            if let Some(not_before) = self.not_before {
                tokio::select! {
                    () = &mut give_up => return Err(last_failure.unwrap_or_else(|| Failure::Retryable {
                        reason: "the gateway's Retry-After had not passed".into(),
                        retry_after: None,
                    })),
                    () = tokio::time::sleep_until(not_before.into()) => self.not_before = None,
                }
            }
            let failure = match self.send(self.config.method.clone(), Some(body)).await {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
            let retry_after = match &failure {
                Failure::Retryable { retry_after, .. } if attempt < max_attempts => *retry_after,
                _ => {
                    warn!(target = %self.name(), attempt, reason = %failure, "push failed; not retrying until the next tick");
                    return Err(failure);
                }
            };
            let wait = self.backoff.next_wait(retry_after);
            warn!(target = %self.name(), attempt, reason = %failure, retry_in = ?wait, "push failed; retrying");
            if retry_after.is_some() {
                self.not_before = Some(Instant::now() + wait);
            } else {
                tokio::select! {
                    () = &mut give_up => return Err(failure),
                    () = tokio::time::sleep(wait) => {}
                }
            }
            last_failure = Some(failure);
        }
        unreachable!("the attempts never run out before max_attempts")
    }

    /// Deletes the group, once.
    pub async fn delete(&self) -> Result<(), Failure> {
        self.send(Method::DELETE, None).await
    }
}

/// Pushes every new snapshot to `target` until `stop`; a newer snapshot ends the retries of an
/// older one. When the agent itself stops (`shutdown`, not a reload), deletes the group if the
/// target asks for it.
pub async fn deliver(
    mut target: Pushgateway,
    mut snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    state: Arc<AgentState>,
    stop: CancellationToken,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            changed = snapshots.changed() => if changed.is_err() { break },
        }
        let Some(snapshot) = snapshots.borrow_and_update().clone() else { continue };
        let config = state.config();
        let body = exposition::push_body(&snapshot, &config.metric, &config.labels);
        // A newer snapshot ends the retries, not a request under way (a slow gateway must still
        // get each push through); shutdown ends both.
        let mut newer = snapshots.clone();
        let give_up = async move {
            let _ = newer.changed().await;
        };
        let started = Instant::now();
        let pushed = tokio::select! {
            result = target.push(&body, u32::MAX, give_up) => Some(result),
            () = stop.cancelled() => None,
        };
        let Some(result) = pushed else { break };
        state.record_push(target.name(), result.as_ref().map(|_| ()), started.elapsed(), Utc::now());
    }
    if target.config.delete_on_shutdown && shutdown.is_cancelled() {
        match target.delete().await {
            Ok(()) => info!(target = %target.name(), "deleted the group on shutdown"),
            Err(failure) => warn!(target = %target.name(), reason = %failure, "could not delete the group on shutdown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_urls_keep_the_prefix_and_encode_awkward_values() {
        let base = Url::parse("https://push.example.org:9091/gateway/").unwrap();
        let grouping = BTreeMap::from([
            ("instance".to_owned(), "nairobi/1".to_owned()),
            ("site".to_owned(), "Nairobi West".to_owned()),
            ("zone".to_owned(), String::new()),
        ]);
        assert_eq!(
            group_url(&base, "api metrics", &grouping).as_str(),
            "https://push.example.org:9091/gateway/metrics/job/api%20metrics/instance@base64/bmFpcm9iaS8x\
             /site/Nairobi%20West/zone@base64/="
        );
        let plain = Url::parse("http://127.0.0.1:9091").unwrap();
        assert_eq!(
            group_url(&plain, "a/b", &BTreeMap::new()).as_str(),
            "http://127.0.0.1:9091/metrics/job@base64/YS9i"
        );
    }
}
