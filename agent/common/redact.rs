//! Keeping secrets out of what the agent shows: a `Secret` that never prints, and the config's
//! text with its passwords, tokens and credential-like headers replaced.

use std::fmt;

/// A secret from the config or a file. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(secret: String) -> Secret {
        Secret(secret)
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Keys whose values are secrets, and header names that usually carry one.
const SECRET_KEYS: [&str; 2] = ["password", "bearer_token"];
const SECRET_HEADER_WORDS: [&str; 6] = ["auth", "token", "key", "secret", "cookie", "password"];

/// Keys whose values are URLs, which may carry credentials (`https://user:password@host`).
const URL_KEYS: [&str; 2] = ["url", "proxy_url"];

/// Whether the value at a key path (its table keys, e.g. `["pushgateway", "basic_auth",
/// "password"]`) may hold a secret: a password or token, basic_auth as a whole, any header's
/// value, or a URL. Messages about such a value name its key, never the value.
pub(crate) fn may_hold_secret(path: &[&str]) -> bool {
    path.iter().any(|key| SECRET_KEYS.contains(key) || matches!(*key, "basic_auth" | "headers"))
        || path.last().is_some_and(|key| URL_KEYS.contains(key))
}

/// `text` with what stands between a URL's `scheme://` and its host's `@` (a user name and
/// password) replaced by "<redacted>"; text with an `@` and no `://` is redacted up to its last
/// `@`. For showing a URL, even one that does not parse.
pub(crate) fn without_credentials(text: &str) -> String {
    let authority_start = text.find("://").map_or(0, |scheme_end| scheme_end + 3);
    let authority_end = text[authority_start..].find(['/', '?', '#']).map_or(text.len(), |end| authority_start + end);
    match text[authority_start..authority_end].rfind('@') {
        Some(at) => format!("{}<redacted>{}", &text[..authority_start], &text[authority_start + at..]),
        None => text.to_owned(),
    }
}

/// `text` (a message) with the credentials of every URL in it replaced by "<redacted>", as
/// `without_credentials` does for one URL; a URL ends at a quote or a space here.
pub(crate) fn credentials_out_of_urls(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(scheme_end) = rest.find("://") {
        let authority_start = scheme_end + 3;
        let authority_end = rest[authority_start..]
            .find(['/', '?', '#', '"', '\'', ' ', '\n'])
            .map_or(rest.len(), |end| authority_start + end);
        shown.push_str(&without_credentials(&rest[..authority_end]));
        rest = &rest[authority_end..];
    }
    shown.push_str(rest);
    shown
}

/// The config's TOML with passwords, tokens, credential-like headers and the credentials in URLs
/// replaced by "<redacted>" (comments are not kept: they may hold secrets too).
pub(crate) fn redacted_config(text: &str) -> String {
    fn redact(value: &mut toml::Value, in_headers: bool) {
        match value {
            toml::Value::Table(table) => {
                for (key, value) in table.iter_mut() {
                    let lower = key.to_ascii_lowercase();
                    let secret = SECRET_KEYS.contains(&lower.as_str())
                        || (in_headers && SECRET_HEADER_WORDS.iter().any(|word| lower.contains(word)));
                    if secret {
                        *value = toml::Value::String("<redacted>".to_owned());
                    } else if let (true, toml::Value::String(url)) = (URL_KEYS.contains(&key.as_str()), &value) {
                        *value = toml::Value::String(without_credentials(url));
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
        assert!(shown.contains("https://<redacted>@r/w") && shown.contains("http://<redacted>@proxy:3128"), "{shown}");
    }

    #[test]
    fn credentials_leave_urls_that_do_not_parse_too() {
        assert_eq!(without_credentials("http://user:pw@c/write"), "http://<redacted>@c/write");
        assert_eq!(without_credentials("http://user:p@ss@c:80/write?a@b"), "http://<redacted>@c:80/write?a@b");
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
