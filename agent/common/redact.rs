//! Keeping secrets out of everything the agent shows. Every secret the config holds is made a
//! `Secret`, which never prints and is remembered here when made; `redact` then replaces each
//! remembered secret (and the forms it takes once escaped for a log, a page or a URL) with
//! `<redacted>`, and every surface passes its text through it: the log's writer, the status page,
//! `/metrics`, the reload answer, `check`'s report and `main`'s error. Where the agent prints a
//! value itself (the config's text, a header, a URL), it shows no secret in the first place.

use std::borrow::Cow;
use std::fmt;
use std::sync::RwLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::Url;

use super::escape::{
    escape_controls, html_escaped, html_unescaped, json_escaped, json_unescaped, percent_decoded, percent_encoded,
};

/// What replaces a secret.
pub(crate) const REDACTED: &str = "<redacted>";

/// A secret shorter than this is not searched for in free text: replacing every "abc" in the
/// log would mangle it and still not hide a secret that weak. Such a secret gets a warning.
pub(crate) const SHORTEST_SEARCHED: usize = 8;

/// Every secret seen by this process, in each form it may take when shown, longest first.
/// Only ever added to: a line logged after a reload that dropped a secret may still quote it.
static REMEMBERED: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// A secret from the config or a file. `Debug` never shows it, and making one remembers it for
/// `redact`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(secret: String) -> Secret {
        remember(&secret);
        Secret(secret)
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// Whether it is too short to be searched for in free text (`SHORTEST_SEARCHED`).
    pub(crate) fn is_weak(&self) -> bool {
        is_weak(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

fn is_weak(secret: &str) -> bool {
    secret.chars().count() < SHORTEST_SEARCHED
}

/// Remembers `secret` for `redact`, in every form it may take on a surface: as written, escaped
/// for a log record (text or JSON), a Rust debug string, an exposition label, HTML, and
/// percent-encoded as in a URL. A weak secret is not remembered (see `SHORTEST_SEARCHED`).
pub(crate) fn remember(secret: &str) {
    let trimmed = secret.trim();
    if trimmed != secret {
        // A server trims a header's value, and quotes it trimmed.
        remember(trimmed);
    }
    if is_weak(secret) {
        return;
    }
    let squeezed: String = secret.chars().filter(|character| !character.is_whitespace()).collect();
    let mut forms = vec![
        squeezed,
        secret.to_owned(),
        json_escaped(secret),
        format!("{secret:?}").trim_matches('"').to_owned(),
        html_escaped(secret),
        percent_encoded(secret),
    ];
    for index in 0..forms.len() {
        let escaped = escape_controls(&forms[index], false);
        forms.push(escaped);
    }
    let mut remembered = REMEMBERED.write().unwrap_or_else(|poisoned| poisoned.into_inner());
    for form in forms {
        if !remembered.contains(&form) {
            remembered.push(form);
        }
    }
    // Longest first: a secret that holds another is replaced whole.
    remembered.sort_by_key(|form| std::cmp::Reverse(form.len()));
}

/// Remembers what HTTP basic auth puts on the wire for `username` and `password`: the base64 of
/// `username:password`, which a receiver that echoes the `Authorization` header shows.
pub(crate) fn remember_basic_auth(username: &str, password: &str) {
    remember(&BASE64.encode(format!("{username}:{password}")));
}

/// Text from outside (a receiver's, a proxy's or a server's answer) as the agent may show it:
/// every remembered secret replaced, also where the answer holds one in an encoding of its own
/// (JSON's `\u0026`, HTML's `&#x27;`, percent-encoding in either case, `+` for a space): the
/// answer is then shown decoded, redacted. An answer that spreads a secret over several lines
/// is withheld whole. Call it on the whole answer, before cutting it short.
pub(crate) fn redact_from_outside(text: &str) -> String {
    let redacted = redact(text);
    if redacted != text {
        return redacted.into_owned();
    }
    let mut decoded = text.to_owned();
    // Each round undoes one more layer of escaping (an answer may escape what it quotes twice).
    for _round in 0..3 {
        let html = html_unescaped(&json_unescaped(&decoded));
        let next = percent_decoded(&html);
        for candidate in [&html, &next, &percent_decoded(&html.replace('+', " "))] {
            if let Cow::Owned(redacted) = redact(candidate) {
                return redacted;
            }
        }
        if next == decoded {
            break;
        }
        decoded = next;
    }
    let squeezed: String = decoded.chars().filter(|character| !character.is_whitespace()).collect();
    if redact(&squeezed) != squeezed {
        return format!("{REDACTED} (the answer quoted a configured secret across lines; not shown)");
    }
    text.to_owned()
}

/// `text` with every remembered secret replaced by `<redacted>`; borrowed when it holds none.
pub fn redact(text: &str) -> Cow<'_, str> {
    let remembered = REMEMBERED.read().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut text = Cow::Borrowed(text);
    for form in remembered.iter() {
        if text.contains(form.as_str()) {
            text = Cow::Owned(text.replace(form.as_str(), REDACTED));
        }
    }
    text
}

/// Request headers whose values carry no secret, and so are shown (a tenant's name, what the
/// client accepts); every other header's value is shown as `<redacted>`. Lower case.
pub(crate) const SHOWN_HEADERS: [&str; 4] = ["x-scope-orgid", "thanos-tenant", "accept", "accept-language"];

/// Whether the value of the request header `name` may be shown.
pub(crate) fn header_may_show(name: &str) -> bool {
    SHOWN_HEADERS.contains(&name.to_ascii_lowercase().as_str())
}

/// Query parameters whose values are secrets (an API key in the URL), by a word in their name.
const SECRET_QUERY_WORDS: [&str; 8] = ["key", "token", "secret", "pass", "auth", "sig", "credential", "session"];

pub(crate) fn query_parameter_is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_QUERY_WORDS.iter().any(|word| name.contains(word))
}

/// `url` as the agent shows it: its user name and password, and the values of secret-looking
/// query parameters, replaced by `<redacted>`.
pub(crate) fn shown_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_password(None);
    let _ = shown.set_username("");
    if url.query_pairs().any(|(name, _)| query_parameter_is_secret(&name)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(name, value)| {
                let value = if query_parameter_is_secret(&name) { REDACTED.to_owned() } else { value.into_owned() };
                (name.into_owned(), value)
            })
            .collect();
        shown.query_pairs_mut().clear().extend_pairs(pairs);
    }
    let shown = shown.to_string().replace("%3Credacted%3E", REDACTED);
    match shown.split_once("://") {
        Some((scheme, rest)) if !url.username().is_empty() || url.password().is_some() => {
            format!("{scheme}://{REDACTED}@{rest}")
        }
        _ => shown,
    }
}

/// Keys whose values are secrets.
const SECRET_KEYS: [&str; 2] = ["password", "bearer_token"];

/// Keys whose values are URLs, which may carry credentials (`https://user:password@host`).
const URL_KEYS: [&str; 2] = ["url", "proxy_url"];

/// Keys whose values are a file's path or a URL (`source.database`: a SQLite file, or a server's
/// URL, which may carry its password).
const PATH_OR_URL_KEYS: [&str; 1] = ["database"];

/// Whether the value at a key path (its table keys, e.g. `["pushgateway", "basic_auth",
/// "password"]`) may hold a secret: a password or token, basic_auth as a whole, any header's
/// value, or a URL. Messages about such a value name its key, never the value.
pub(crate) fn may_hold_secret(path: &[&str]) -> bool {
    path.iter().any(|key| SECRET_KEYS.contains(key) || matches!(*key, "basic_auth" | "headers"))
        || path.last().is_some_and(|key| URL_KEYS.contains(key))
}

/// `text` (a URL as written, which may not parse) without its credentials: what stands between
/// `scheme://` (or the start) and the last `@` becomes "<redacted>". A URL that parses is shown
/// as `shown_url` shows it when it holds a secret; one that does not parse is cut at its last
/// `@` whatever stands between, since a password may hold `/`, `?` or `#`.
pub(crate) fn without_credentials(text: &str) -> String {
    if let Some(url) = Url::parse(text).ok().filter(|_| text.contains("://")) {
        let secret_query = url.query_pairs().any(|(name, _)| query_parameter_is_secret(&name));
        return if url.username().is_empty() && url.password().is_none() && !secret_query {
            text.to_owned()
        } else {
            shown_url(&url)
        };
    }
    cut_at_last_at(text)
}

/// `text` with what stands between `scheme://` (or the start) and its last `@` replaced by
/// "<redacted>": a URL's credentials, whatever characters its password holds.
fn cut_at_last_at(text: &str) -> String {
    let authority_start = text.find("://").map_or(0, |scheme_end| scheme_end + 3);
    match text[authority_start..].rfind('@') {
        Some(at) => format!("{}{REDACTED}{}", &text[..authority_start], &text[authority_start + at..]),
        None => text.to_owned(),
    }
}

/// `text` (a message) with the credentials of every URL in it replaced by "<redacted>": what
/// stands between `scheme://` and the URL's last `@`; a URL ends at a quote or a space here.
pub(crate) fn credentials_out_of_urls(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(scheme_end) = rest.find("://") {
        let authority_start = scheme_end + 3;
        let url_end = rest[authority_start..]
            .find(|character: char| matches!(character, '"' | '\'' | '`') || character.is_whitespace())
            .map_or(rest.len(), |end| authority_start + end);
        match rest[authority_start..url_end].rfind('@') {
            Some(at) => {
                shown.push_str(&rest[..authority_start]);
                shown.push_str(REDACTED);
                shown.push_str(&rest[authority_start + at..url_end]);
            }
            None => shown.push_str(&rest[..url_end]),
        }
        rest = &rest[url_end..];
    }
    shown.push_str(rest);
    shown
}

/// The config's TOML with passwords, tokens, the values of headers not in `SHOWN_HEADERS`, and
/// the credentials and secret-looking query values of URLs replaced by "<redacted>" (comments
/// are not kept: they may hold secrets too).
pub(crate) fn redacted_config(text: &str) -> String {
    fn redact(value: &mut toml::Value, in_headers: bool) {
        match value {
            toml::Value::Table(table) => {
                for (key, value) in table.iter_mut() {
                    let lower = key.to_ascii_lowercase();
                    let secret = SECRET_KEYS.contains(&lower.as_str()) || (in_headers && !header_may_show(key));
                    if secret {
                        *value = toml::Value::String(REDACTED.to_owned());
                    } else if let (true, toml::Value::String(url)) = (URL_KEYS.contains(&key.as_str()), &value) {
                        let shown = Url::parse(url).map_or_else(|_| without_credentials(url), |url| shown_url(&url));
                        *value = toml::Value::String(shown);
                    } else if let toml::Value::String(url) = &value
                        && PATH_OR_URL_KEYS.contains(&key.as_str())
                        && url.contains("://")
                    {
                        // A database server's password may hold `?`, `#` or `/`, which a URL
                        // parser would take for what follows the host.
                        *value = toml::Value::String(cut_at_last_at(url));
                    } else {
                        redact(value, key == "headers");
                    }
                }
            }
            toml::Value::Array(items) => items.iter_mut().for_each(|item| redact(item, false)),
            _ => {}
        }
    }
    match text.parse::<toml::Table>() {
        Ok(table) => {
            let mut value = toml::Value::Table(table);
            redact(&mut value, false);
            toml::to_string_pretty(&value).unwrap_or_default()
        }
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_from_the_shown_config() {
        let text = "[[pushgateway]]\nurl = \"http://gw\"\nbasic_auth = { username = \"agent\", password = \"hunter2\" }\n\
                    bearer_token = \"tok-1\"\nheaders = { Authorization = \"Basic eA==\", \"X-Scope-OrgID\" = \"site-1\" }\n";
        let shown = redacted_config(text);
        for secret in ["hunter2", "tok-1", "eA=="] {
            assert!(!shown.contains(secret), "{shown}");
        }
        for kept in ["agent", "site-1", "http://gw", "<redacted>"] {
            assert!(shown.contains(kept), "{shown}");
        }
        let shown =
            redacted_config("[[remote_write]]\nurl = \"https://u:pw@r/w\"\nproxy_url = \"http://p:s3@proxy:3128\"\n");
        assert!(!shown.contains("pw@") && !shown.contains("s3@"), "{shown}");
        assert!(shown.contains("https://<redacted>@r/w") && shown.contains("http://<redacted>@proxy:3128/"), "{shown}");
        // A server's URL as source.database, whatever its password's length or encoding; a
        // SQLite path is shown as written.
        for (url, password) in [
            ("mariadb://agent:Rt%2DSecr3t%2dPassw0rd@db:3306/pay", "Secr3t"),
            ("mysql://agent:Xq7@db/pay", "Xq7"),
            ("postgres://agent:p%40ss@db/pay", "p%40ss"),
            ("mysql://agent:?Xk9Lm2Qr7Vw_token@db/pay", "Xk9Lm2"),
        ] {
            let shown = redacted_config(&format!("[source]\ndatabase = \"{url}\"\n"));
            assert!(!shown.contains(password) && shown.contains("<redacted>@"), "{shown}");
        }
        let shown = redacted_config("[source]\ndatabase = \"/var/lib/app/db@2.sqlite3\"\n");
        assert!(shown.contains("/var/lib/app/db@2.sqlite3"), "{shown}");
    }

    #[test]
    fn a_remembered_secret_leaves_every_form_it_takes() {
        let secret = Secret::new("s3cr\"et-pass\nword&<ü".to_owned());
        let shown = |text: &str| redact(text).into_owned();
        assert_eq!(shown("password=s3cr\"et-pass\nword&<ü."), "password=<redacted>.");
        assert_eq!(shown("{\"error\":\"s3cr\\\"et-pass\\nword&<ü\"}"), "{\"error\":\"<redacted>\"}");
        assert_eq!(shown("<pre>s3cr&quot;et-pass\nword&amp;&lt;ü</pre>"), "<pre><redacted></pre>");
        assert_eq!(shown("http://u:s3cr%22et-pass%0Aword%26%3C%C3%BC@h"), "http://u:<redacted>@h");
        assert_eq!(shown("reason=\"s3cr\\\"et-pass\\nword&<ü\""), "reason=\"<redacted>\"");
        assert!(matches!(redact("nothing to hide"), Cow::Borrowed(_)));
        assert_eq!(format!("{secret:?}"), "<redacted>");

        // A weak secret is never searched for; its basic-auth form is.
        let weak = Secret::new("pw".to_owned());
        assert!(weak.is_weak() && !secret.is_weak());
        assert_eq!(shown("pw: a pwd"), "pw: a pwd");
        remember_basic_auth("agent", "pw");
        assert_eq!(shown("cannot find \"Basic YWdlbnQ6cHc=\""), "cannot find \"Basic <redacted>\"");
    }

    #[test]
    fn an_answer_that_quotes_a_secret_in_its_own_encoding_shows_it_nowhere() {
        Secret::new("s3cret&token<value>/x y".to_owned());
        Secret::new("TrailingSpaceToken123 \t ".to_owned());
        for answer in [
            r#"{"authorization": "Bearer s3cret\u0026token\u003cvalue\u003e\/x y"}"#,
            "Bearer s3cret&amp;token&lt;value&#x3e;/x y",
            "token=s3cret%26token%3cvalue%3e%2fx+y",
            "token=s3cret%26token%3Cvalue%3E/x%20y",
            r#"{"x": "s3cret&amp;token&lt;value&gt;/x y"}"#,
            "authorization: Bearer TrailingSpaceToken123",
        ] {
            let shown = redact_from_outside(answer);
            assert!(
                shown.contains(REDACTED) && !shown.contains("s3cret") && !shown.contains("Trailing"),
                "{answer} → {shown}"
            );
        }
        let wrapped = "Bearer s3cret&tok\nen<value>/x\r\n y";
        assert!(
            redact_from_outside(wrapped).starts_with("<redacted> (the answer quoted"),
            "{}",
            redact_from_outside(wrapped)
        );
        assert_eq!(redact_from_outside("nothing & nothing %41"), "nothing & nothing %41");
    }

    #[test]
    fn urls_show_no_credentials_nor_secret_query_values() {
        let url = Url::parse("https://u:pw@mimir.example.org/push?api_key=k3y-k3y-k3y&extra_label=site%3D1").unwrap();
        assert_eq!(
            shown_url(&url),
            "https://<redacted>@mimir.example.org/push?api_key=<redacted>&extra_label=site%3D1"
        );
        let shown = redacted_config("[[remote_write]]\nurl = \"https://r/w?token=abcdefghij&a=b\"\n");
        assert!(shown.contains("https://r/w?token=<redacted>&a=b"), "{shown}");
    }

    #[test]
    fn only_known_harmless_headers_are_shown() {
        assert!(header_may_show("X-Scope-OrgID") && header_may_show("thanos-tenant"));
        assert!(!header_may_show("X-Api-Key") && !header_may_show("X-Tenant-Signature"));
        let shown =
            redacted_config("[[remote_write]]\nheaders = { \"X-Scope-OrgID\" = \"site-1\", X-Custom = \"v4lue\" }\n");
        assert!(shown.contains("X-Scope-OrgID = \"site-1\"") && !shown.contains("v4lue"), "{shown}");
    }

    #[test]
    fn credentials_leave_urls_that_do_not_parse_too() {
        assert_eq!(without_credentials("http://user:pw@c/write"), "http://<redacted>@c/write");
        assert_eq!(without_credentials("http://user:p@ss@c:80/write?a@b"), "http://<redacted>@c/write?a@b");
        // A password with a slash, a question mark or a hash makes the URL unparseable.
        assert_eq!(without_credentials("http://agent:Pa/ss?w#rd@gw:9091"), "http://<redacted>@gw:9091");
        assert_eq!(without_credentials("user:pw@host:9091"), "<redacted>@host:9091");
        assert_eq!(without_credentials("http://gw:9091/p@th"), "http://gw:9091/p@th");
        assert_eq!(without_credentials("ünïcode://ä@ö"), "ünïcode://<redacted>@ö");
    }

    #[test]
    fn credentials_leave_every_url_in_a_message() {
        assert_eq!(
            credentials_out_of_urls("invalid type: string \"https://u:pw@h/x\", expected \"ftp://a@b\" or http://c"),
            "invalid type: string \"https://<redacted>@h/x\", expected \"ftp://<redacted>@b\" or http://c"
        );
        assert_eq!(credentials_out_of_urls("no URL: user@host"), "no URL: user@host");
        assert_eq!(
            credentials_out_of_urls("\"http://agent:Pa/ss@gw:x\" is not a URL"),
            "\"http://<redacted>@gw:x\" is not a URL"
        );
    }

    #[test]
    fn secret_keys_are_known_by_their_paths() {
        assert!(may_hold_secret(&["pushgateway", "basic_auth", "password"]));
        assert!(may_hold_secret(&["pushgateway", "basic_auth"]));
        assert!(may_hold_secret(&["remote_write", "headers", "X-Scope-OrgID"]));
        assert!(may_hold_secret(&["remote_write", "url"]));
        assert!(may_hold_secret(&["pushgateway", "bearer_token"]));
        assert!(!may_hold_secret(&["pushgateway", "bearer_token_file"]));
        assert!(!may_hold_secret(&["source", "window"]));
    }
}
