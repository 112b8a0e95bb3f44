//! The HTTP keys every push target's table shares: headers, basic or bearer auth, TLS with a
//! private CA or client certificate, and a forward proxy; checked into `HttpSettings`.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Certificate, Identity, Url};
use serde::Deserialize;
use toml::Spanned;

use crate::common::escape::percent_decoded;
use crate::common::files::read_regular_file;
use crate::common::problems::Problems;
use crate::common::redact::{Secret, header_may_show, remember, remember_basic_auth, shown_url, without_credentials};
use crate::common::secret_settings::{read_secret, warn_if_readable_by_everyone, warn_if_weak};

/// Headers the agent sets itself; a target's `headers` may not replace them.
const RESERVED_HEADERS: [&str; 5] =
    ["content-type", "content-encoding", "content-length", "user-agent", "x-prometheus-remote-write-version"];

/// `basic_auth = { username = "...", password = "..." }` or with `password_file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBasicAuth {
    /// The user name sent with every request; required.
    username: Option<String>,
    /// The password, written in the config.
    password: Option<String>,
    /// A file holding the password (a trailing newline is ignored).
    password_file: Option<String>,
}

/// `tls = { ca_file = "...", cert_file = "...", key_file = "...", insecure_skip_verify = false }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
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
pub(crate) struct RawHttp<'a> {
    pub(crate) headers: &'a BTreeMap<Spanned<String>, Spanned<String>>,
    pub(crate) basic_auth: Option<&'a Spanned<RawBasicAuth>>,
    pub(crate) bearer_token: Option<&'a Spanned<String>>,
    pub(crate) bearer_token_file: Option<&'a Spanned<String>>,
    pub(crate) tls: Option<&'a Spanned<RawTls>>,
    pub(crate) proxy_url: Option<&'a Spanned<String>>,
}

/// Checked HTTP settings of one target. `Debug` shows no secret: header values not known to be
/// harmless are marked sensitive, and the proxy's credentials are left out.
#[derive(Clone, Default)]
pub(crate) struct HttpSettings {
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) auth: Option<Auth>,
    /// PEM bytes of the CAs to trust instead of the system's.
    pub(crate) ca_pem: Option<Vec<u8>>,
    /// PEM bytes of the client certificate followed by its key.
    pub(crate) identity_pem: Option<Secret>,
    pub(crate) insecure_skip_verify: bool,
    /// `None`: HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the environment.
    pub(crate) proxy: Option<Url>,
}

impl std::fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSettings")
            .field("headers", &self.headers)
            .field("auth", &self.auth)
            .field("ca_pem", &self.ca_pem.as_ref().map(|pem| format!("{} bytes", pem.len())))
            .field("identity_pem", &self.identity_pem)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .field("proxy", &self.proxy.as_ref().map(shown_url))
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Auth {
    Basic { username: String, password: Secret },
    Bearer(Secret),
}

impl RawHttp<'_> {
    /// Checks the HTTP keys of the table at `key` (e.g. `pushgateway[0]`); paths are relative to `base`.
    pub(crate) fn validate(self, problems: &mut Problems<'_>, key: &str, base: &Path) -> HttpSettings {
        let mut settings = HttpSettings {
            headers: self.headers(problems, key),
            auth: self.auth(problems, key, base),
            ..HttpSettings::default()
        };
        if let Some(tls) = self.tls {
            validate_tls(&mut settings, problems, &format!("{key}.tls"), tls, base);
        }
        settings.proxy = self.proxy(problems, key);
        settings
    }

    fn headers(&self, problems: &mut Problems<'_>, key: &str) -> Vec<(HeaderName, HeaderValue)> {
        let mut headers = Vec::new();
        for (name, value) in self.headers {
            // A name with a space or a colon is a value written as a name ("Authorization:
            // Bearer …"): it is not shown.
            let mistyped = name.get_ref().contains(|character: char| character == ':' || character.is_whitespace());
            if mistyped {
                Secret::new(name.get_ref().clone());
                problems.at(
                    name,
                    &format!("{key}.headers"),
                    "a header's name holds a space or a colon (not shown: it may be a secret); write \
                     `Name = \"value\"`",
                );
                continue;
            }
            let header_key = format!("{key}.headers.{}", name.get_ref());
            match (HeaderName::try_from(name.get_ref().as_str()), HeaderValue::try_from(value.get_ref().as_str())) {
                (Ok(header), _) if RESERVED_HEADERS.contains(&header.as_str()) => {
                    problems.at(name, &header_key, "is set by the agent itself and cannot be replaced")
                }
                (Ok(header), Ok(mut header_value)) => {
                    // Shown only for names known to carry no secret; every other value is one.
                    if !header_may_show(header.as_str()) {
                        header_value.set_sensitive(true);
                        problems.inline_secret(&header_key);
                        remember_header_value(problems, &header_key, value.get_ref());
                    }
                    headers.push((header, header_value))
                }
                (Err(_), _) => problems.at(name, &header_key, "is not a valid HTTP header name"),
                (_, Err(_)) => problems.at(value, &header_key, "is not a valid HTTP header value"),
            }
        }
        headers
    }

    fn auth(&self, problems: &mut Problems<'_>, key: &str, base: &Path) -> Option<Auth> {
        let bearer = match (self.bearer_token, self.bearer_token_file) {
            (Some(token), Some(_)) => {
                problems.at(token, &format!("{key}.bearer_token"), "set bearer_token or bearer_token_file, not both");
                None
            }
            (Some(token), None) => {
                let token_key = format!("{key}.bearer_token");
                problems.inline_secret(&token_key);
                let secret = Secret::new(token.get_ref().clone());
                warn_if_weak(problems, &token_key, &secret);
                usable_in_a_header(problems, &token_key, token, Some(secret))
            }
            (None, Some(file)) => {
                let file_key = format!("{key}.bearer_token_file");
                let token = read_secret(problems, &file_key, file, &base.join(file.get_ref()));
                if let Some(token) = &token {
                    warn_if_weak(problems, &file_key, token);
                }
                usable_in_a_header(problems, &file_key, file, token)
            }
            (None, None) => None,
        };
        let basic = self.basic_auth.and_then(|spanned| basic_auth(problems, key, spanned, base));
        match (basic, bearer) {
            (Some(_), Some(_)) => {
                let span = self.basic_auth.expect("basic auth was given");
                problems.at(span, &format!("{key}.basic_auth"), "set basic_auth or a bearer token, not both");
                None
            }
            (basic, bearer) => basic.or(bearer.map(Auth::Bearer)),
        }
    }

    fn proxy(&self, problems: &mut Problems<'_>, key: &str) -> Option<Url> {
        let proxy = self.proxy_url?;
        let shown = without_credentials(proxy.get_ref());
        match Url::parse(proxy.get_ref()) {
            Ok(url) if ["http", "https"].contains(&url.scheme()) => {
                let proxy_key = format!("{key}.proxy_url");
                if remember_proxy_credentials(problems, &proxy_key, &url) {
                    problems.inline_secret(&proxy_key);
                }
                Some(url)
            }
            // reqwest is built without its `socks` feature: such a proxy would fail every request.
            Ok(url) if url.scheme().starts_with("socks") => {
                problems.at(
                    proxy,
                    &format!("{key}.proxy_url"),
                    format_args!("{shown:?}: this build speaks to HTTP proxies only, not SOCKS"),
                );
                None
            }
            _ => {
                problems.at(
                    proxy,
                    &format!("{key}.proxy_url"),
                    format_args!("{shown:?} is not a proxy URL, e.g. \"http://proxy.internal:3128\""),
                );
                None
            }
        }
    }
}

/// Remembers the value of a header that may carry a secret, whole and in the parts a server
/// may quote alone: each word of it (the token of "Bearer <token>"), and for "Basic <base64>"
/// the decoded user:password and the password. Warns when the secret is weak.
fn remember_header_value(problems: &mut Problems<'_>, key: &str, value: &str) {
    let whole = Secret::new(value.to_owned());
    let mut secret_part = whole.clone();
    for word in value.split_whitespace().skip(1) {
        secret_part = Secret::new(word.to_owned());
    }
    if let Some(encoded) = value.trim().strip_prefix("Basic ")
        && let Ok(decoded) = BASE64.decode(encoded.trim())
    {
        let pair = String::from_utf8_lossy(&decoded).into_owned();
        remember(&pair);
        if let Some((_, password)) = pair.split_once(':') {
            secret_part = Secret::new(password.to_owned());
        }
    }
    warn_if_weak(problems, key, &secret_part);
}

/// Remembers the password in a proxy's URL, as written and as sent (`Proxy-Authorization:
/// Basic` with the base64 of user:password), and warns if it is weak; whether the URL held any.
pub(crate) fn remember_proxy_credentials(problems: &mut Problems<'_>, key: &str, url: &Url) -> bool {
    if url.username().is_empty() && url.password().is_none() {
        return false;
    }
    let password = url.password().unwrap_or_default();
    let (username, decoded_password) = (percent_decoded(url.username()), percent_decoded(password));
    remember(password);
    remember(&format!("{username}:{decoded_password}"));
    remember_basic_auth(url.username(), password);
    remember_basic_auth(&username, &decoded_password);
    // A proxy that takes a token as its user name, with no password: the name is the secret.
    let secret = if password.is_empty() { username } else { decoded_password };
    warn_if_weak(problems, key, &Secret::new(secret));
    true
}

/// `token`, if "Bearer <token>" can be an HTTP header's value; else a problem at `place`, which
/// names the key and never shows the token.
fn usable_in_a_header<T>(
    problems: &mut Problems<'_>,
    key: &str,
    place: &Spanned<T>,
    token: Option<Secret>,
) -> Option<Secret> {
    let token = token?;
    if HeaderValue::try_from(format!("Bearer {}", token.expose())).is_ok() {
        return Some(token);
    }
    problems.at(
        place,
        key,
        "the token is not usable in an HTTP header: it holds a line break or another control character",
    );
    None
}

fn basic_auth(problems: &mut Problems<'_>, key: &str, spanned: &Spanned<RawBasicAuth>, base: &Path) -> Option<Auth> {
    let basic = spanned.get_ref();
    let password = match (&basic.password, &basic.password_file) {
        (Some(_), Some(_)) => {
            problems.at(spanned, &format!("{key}.basic_auth"), "set password or password_file, not both");
            None
        }
        (Some(password), None) => {
            problems.inline_secret(&format!("{key}.basic_auth.password"));
            Some(Secret::new(password.clone()))
        }
        (None, Some(file)) => {
            let file = Spanned::new(spanned.span(), file.clone());
            read_secret(problems, &format!("{key}.basic_auth.password_file"), &file, &base.join(file.get_ref()))
        }
        (None, None) => {
            problems.missing_in(spanned, &format!("{key}.basic_auth"), "needs password or password_file");
            None
        }
    };
    let Some(username) = &basic.username else {
        problems.missing_in(spanned, &format!("{key}.basic_auth.username"), "missing: the user name to send");
        return None;
    };
    let password = password?;
    warn_if_weak(problems, &format!("{key}.basic_auth.password"), &password);
    remember_basic_auth(username, password.expose());
    Some(Auth::Basic { username: username.clone(), password })
}

/// Checks `tls` (at `tls_key`) into `settings`: the CA, the client certificate and its key.
fn validate_tls(
    settings: &mut HttpSettings,
    problems: &mut Problems<'_>,
    tls_key: &str,
    spanned: &Spanned<RawTls>,
    base: &Path,
) {
    let tls = spanned.get_ref();
    settings.insecure_skip_verify = tls.insecure_skip_verify;
    if let Some(ca_file) = &tls.ca_file {
        let ca_key = format!("{tls_key}.ca_file");
        settings.ca_pem = read_file(problems, spanned, &ca_key, ca_file, base)
            .filter(|pem| check(problems, spanned, &ca_key, Certificate::from_pem(pem)));
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert_file), Some(key_file)) => {
            let cert_key = format!("{tls_key}.cert_file");
            let cert = read_file(problems, spanned, &cert_key, cert_file, base);
            let key_key = format!("{tls_key}.key_file");
            let key = read_file(problems, spanned, &key_key, key_file, base);
            warn_if_readable_by_everyone(problems, &key_key, &base.join(key_file));
            if let (Some(mut pem), Some(key)) = (cert, key) {
                pem.push(b'\n');
                pem.extend_from_slice(&key);
                if check(problems, spanned, &cert_key, Identity::from_pem(&pem)) {
                    settings.identity_pem = Some(Secret::new(String::from_utf8_lossy(&pem).into_owned()));
                }
            }
        }
        (Some(_), None) | (None, Some(_)) => {
            problems.at(spanned, tls_key, "cert_file and key_file go together: set both or neither")
        }
        (None, None) => {}
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
    read_regular_file(&path)
        .map_err(|error| problems.at(span, key, format_args!("cannot read {}: {error}", path.display())))
        .ok()
}

fn check<T>(problems: &mut Problems<'_>, span: &Spanned<RawTls>, key: &str, parsed: reqwest::Result<T>) -> bool {
    parsed.map_err(|error| problems.at(span, key, format_args!("is not usable PEM: {error}"))).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let auth = Auth::Basic { username: "agent".into(), password: Secret::new("hunter2".into()) };
        let mut header = HeaderValue::from_static("Token t0k3n");
        header.set_sensitive(true);
        let settings = HttpSettings {
            auth: Some(auth),
            headers: vec![(HeaderName::from_static("x-api-key"), header)],
            proxy: Some(Url::parse("http://user:pr0xy-pw@proxy:3128").unwrap()),
            ..HttpSettings::default()
        };
        let printed = format!("{settings:?}");
        for secret in ["hunter2", "t0k3n", "pr0xy-pw"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains("<redacted>@proxy:3128"), "{printed}");
    }
}
