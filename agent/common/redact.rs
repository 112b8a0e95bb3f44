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

/// The config's TOML with passwords, tokens and credential-like headers replaced by
/// "<redacted>" (comments are not kept: they may hold secrets too).
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
    }
}
