//! Secrets as the config gives them: read from a file, taken from a URL's query, and the
//! warnings about one that is too weak to be searched for or that every user may read. What is
//! read is remembered by `redact`, so that it never shows.

use std::path::Path;

use reqwest::Url;
use toml::Spanned;

use super::escape::percent_decoded;
use super::files::{read_regular_text, readable_by_everyone};
use super::problems::Problems;
use super::redact::{SHORTEST_SEARCHED, Secret, query_parameter_is_secret, remember};

/// A warning for a secret too short to be searched for in what the agent shows.
pub(crate) fn warn_if_weak(problems: &mut Problems<'_>, key: &str, secret: &Secret) {
    if secret.is_weak() {
        problems.warn(
            key,
            format_args!(
                "the secret is shorter than {SHORTEST_SEARCHED} characters: too weak to be searched for and redacted \
                 in free text (a receiver's answer that quotes it would show it); the agent never prints it \
                 itself. Use a longer one"
            ),
        );
    }
}

/// A warning for a file holding a secret that every user on the machine may read.
pub(crate) fn warn_if_readable_by_everyone(problems: &mut Problems<'_>, key: &str, path: &Path) {
    if let Some((mode, path)) = readable_by_everyone(path) {
        problems.warn(
            key,
            format_args!(
                "{} holds a secret and every user on this machine may read it (mode {mode:04o}): `chmod o-r` it, \
                 as ssh asks of a private key",
                path.display()
            ),
        );
    }
}

/// The secret in the file at `path` (named at `file` in the config, under `key`), its trailing
/// line breaks left out; a problem if it cannot be read or is empty, a warning if every user may
/// read it or it is weak.
pub(crate) fn read_secret<T>(problems: &mut Problems<'_>, key: &str, file: &Spanned<T>, path: &Path) -> Option<Secret> {
    let path = path.to_owned();
    warn_if_readable_by_everyone(problems, key, &path);
    match read_regular_text(&path) {
        Ok(text) if text.trim_end_matches(['\r', '\n']).is_empty() => {
            problems.at(file, key, format_args!("{} is empty", path.display()));
            None
        }
        Ok(text) => Some(Secret::new(text.trim_end_matches(['\r', '\n']).to_owned())),
        Err(error) => {
            problems.at(file, key, format_args!("cannot read {}: {error}", path.display()));
            None
        }
    }
}

/// Remembers the values of `url`'s secret-looking query parameters (`?api_key=…`) for `redact`,
/// as written and decoded, and warns about a weak one (the URL is at `key`).
pub(crate) fn remember_url_secrets(problems: &mut Problems<'_>, key: &str, url: &Url) {
    for pair in url.query().unwrap_or_default().split('&') {
        let (name, written) = pair.split_once('=').unwrap_or((pair, ""));
        if query_parameter_is_secret(&percent_decoded(&name.replace('+', " "))) {
            problems.inline_secret(key);
            remember(written);
            warn_if_weak(problems, key, &Secret::new(percent_decoded(&written.replace('+', " "))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::redact::redact;

    #[test]
    fn a_urls_secret_query_values_are_remembered_and_a_weak_one_warned_about() {
        let text = "[[remote_write]]\nurl = \"x\"\n";
        let mut problems = Problems::new(text);
        let url = Url::parse("https://u:pw@mimir.example.org/push?api_key=k3y-k3y-k3y&extra_label=site%3D1").unwrap();
        remember_url_secrets(&mut problems, "remote_write[0].url", &url);
        assert_eq!(redact("sent to ?api_key=k3y-k3y-k3y"), "sent to ?api_key=<redacted>");
        assert!(problems.take_warnings().is_empty());
        let weak = Url::parse("https://r/w?token=abc&sig=a%2Fb%2Fc%2Fd%2Fe").unwrap();
        remember_url_secrets(&mut problems, "remote_write[0].url", &weak);
        assert_eq!(problems.take_warnings().len(), 1);
        assert_eq!(redact("sig=a%2Fb%2Fc%2Fd%2Fe"), "sig=<redacted>");
    }
}
