//! One `[[pushgateway]]` table: the gateway, the group pushed to, how, and its HTTP settings.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use reqwest::{Method, Url};
use serde::Deserialize;
use toml::Spanned;

use crate::common::problems::{DurationText, Problems, duration, is_label_name};
use crate::common::ranges::PUSHGATEWAY_TIMEOUT;
use crate::common::redact::without_credentials;
use crate::http::config::{HttpSettings, RawBasicAuth, RawHttp, RawTls};

/// One `[[pushgateway]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPushgateway {
    /// The gateway's base URL; a path prefix is kept. Required.
    url: Option<Spanned<String>>,
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
    timeout: Option<Spanned<DurationText>>,
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
pub(crate) struct PushgatewayConfig {
    /// The group's URL, which names the target in logs and metrics (it holds no secret).
    pub(crate) group_url: Url,
    pub(crate) method: Method,
    pub(crate) timeout: Duration,
    pub(crate) delete_on_shutdown: bool,
    pub(crate) http: HttpSettings,
}

impl PushgatewayConfig {
    pub(crate) fn name(&self) -> &str {
        self.group_url.as_str()
    }
}

impl RawPushgateway {
    /// Checks `pushgateway[index]`; `labels` are the constant labels, which the grouping must
    /// not contradict (the gateway would silently let the grouping win).
    pub(crate) fn validate(
        &self,
        problems: &mut Problems<'_>,
        index: usize,
        labels: &BTreeMap<String, String>,
        base: &Path,
    ) -> PushgatewayConfig {
        let key = format!("pushgateway[{index}]");
        let base_url = self.base_url(problems, &key);
        let job = self.job.get_ref().clone();
        if job.is_empty() {
            problems.at(&self.job, &format!("{key}.job"), "must not be empty");
        }
        let grouping = self.grouping(problems, &key, &job, labels);
        let method = self.method(problems, &key);
        let timeout = duration(problems, self.timeout.as_ref(), &format!("{key}.timeout"), &PUSHGATEWAY_TIMEOUT);
        let http = RawHttp {
            headers: &self.headers,
            basic_auth: self.basic_auth.as_ref(),
            bearer_token: self.bearer_token.as_ref(),
            bearer_token_file: self.bearer_token_file.as_ref(),
            tls: self.tls.as_ref(),
            proxy_url: self.proxy_url.as_ref(),
        }
        .validate(problems, &key, base);
        let group_url = base_url
            .map(|url| group_url(&url, &job, &grouping))
            .unwrap_or_else(|| Url::parse("http://invalid.invalid/").expect("a constant URL parses"));
        PushgatewayConfig { group_url, method, timeout, delete_on_shutdown: self.delete_on_shutdown, http }
    }

    fn base_url(&self, problems: &mut Problems<'_>, key: &str) -> Option<Url> {
        let url_key = format!("{key}.url");
        let Some(url) = &self.url else {
            problems.missing(&url_key, "missing: the gateway's base URL, e.g. \"https://push.example.org:9091\"");
            return None;
        };
        // The text is shown only without credentials: a URL that does not parse may hold some.
        let shown = without_credentials(url.get_ref());
        match Url::parse(url.get_ref()) {
            Ok(parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
                problems.at(url, &url_key, "holds credentials: put them in basic_auth instead");
                None
            }
            Ok(parsed) if !matches!(parsed.scheme(), "http" | "https") => {
                problems.at(
                    url,
                    &url_key,
                    format_args!("{shown:?} is not an http:// or https:// URL, e.g. \"https://push.example.org:9091\""),
                );
                None
            }
            Ok(parsed) if parsed.query().is_some() || parsed.fragment().is_some() => {
                problems.at(url, &url_key, "must have no query or fragment");
                None
            }
            Ok(parsed) => Some(parsed),
            Err(error) => {
                problems.at(
                    url,
                    &url_key,
                    format_args!("{shown:?} is not a URL: {error} (e.g. \"https://push.example.org:9091\")"),
                );
                None
            }
        }
    }

    /// The grouping labels, which must be label names and agree with the constant labels.
    fn grouping(
        &self,
        problems: &mut Problems<'_>,
        key: &str,
        job: &String,
        labels: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let mut grouping = BTreeMap::new();
        for (name, value) in &self.grouping {
            let label_key = format!("{key}.grouping.{}", name.get_ref());
            if !is_label_name(name.get_ref()) || name.get_ref() == "job" {
                problems.at(
                    name,
                    &label_key,
                    "not a grouping label name ([a-zA-Z_][a-zA-Z0-9_]*, not \"job\" or \"__…\")",
                );
            }
            grouping.insert(name.get_ref().clone(), value.get_ref().clone());
        }
        for (name, value) in labels {
            let grouped = if name == "job" { Some(job) } else { grouping.get(name) };
            if let Some(grouped) = grouped.filter(|grouped| *grouped != value) {
                problems.plain(
                    &format!("{key}.grouping"),
                    format_args!(
                        "{name} = {grouped:?} contradicts labels.{name} = {value:?}; the gateway would keep \
                         {grouped:?}: make them agree or drop one"
                    ),
                );
            }
        }
        grouping
    }

    fn method(&self, problems: &mut Problems<'_>, key: &str) -> Method {
        match self.method.get_ref().to_ascii_lowercase().as_str() {
            "put" => Method::PUT,
            "post" => Method::POST,
            _ => {
                problems.at(
                    &self.method,
                    &format!("{key}.method"),
                    format_args!("{:?} is not \"put\" or \"post\"", self.method.get_ref()),
                );
                Method::PUT
            }
        }
    }
}

/// `base` + `/metrics/job/<job>{/<label>/<value>}`: values that are empty or hold a `/` go as
/// `<label>@base64/<url-safe base64>`, the rest percent-encoded.
fn group_url(base: &Url, job: &str, grouping: &BTreeMap<String, String>) -> Url {
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
