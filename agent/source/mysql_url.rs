//! A MySQL or MariaDB server as `source.database` names it: `mysql://USER@HOST:PORT/DBNAME` (or
//! `mariadb://`), with `sslmode` and `sslrootcert` as query parameters or keys of their own.

use reqwest::Url;

use super::tls::SslMode;
use crate::common::escape::percent_decoded;
use crate::common::redact::Secret;

/// The schemes that name a MySQL or MariaDB server.
pub(crate) const SCHEMES: [&str; 2] = ["mysql://", "mariadb://"];

/// The port MySQL and MariaDB listen on unless told otherwise.
const DEFAULT_PORT: u16 = 3306;

/// A MySQL or MariaDB server to read from, checked.
#[derive(Debug, Clone)]
pub struct MysqlServer {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) user: String,
    /// From the URL or `source.password_file`; `Debug` hides it.
    pub(crate) password: Option<Secret>,
    pub(crate) database: String,
    pub(crate) sslmode: SslMode,
    /// PEM certificates of the CAs to trust for `verify-full`; `None`: the system's.
    pub(crate) root_certificates: Option<Vec<u8>>,
    /// The URL without its password, for messages: `mysql://agent@db.internal:3306/app`.
    pub(crate) shown: String,
}

impl MysqlServer {
    /// Whether the host is this machine (a loopback address), where no one else can answer.
    pub(crate) fn is_this_machine(&self) -> bool {
        self.host == "localhost" || self.host.parse::<std::net::IpAddr>().is_ok_and(|address| address.is_loopback())
    }
}

/// What a MySQL URL says, before the password file and TLS settings are weighed with it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct MysqlUrl {
    pub(crate) scheme: &'static str,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) user: String,
    pub(crate) password: Option<String>,
    pub(crate) database: String,
    pub(crate) sslmode: Option<String>,
    pub(crate) sslrootcert: Option<String>,
}

impl MysqlUrl {
    /// `scheme://user@host:port/database`: never the password.
    pub(crate) fn shown(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("{}{}@{host}:{}/{}", self.scheme, self.user, self.port, self.database)
    }
}

/// Reads `text`, a URL of one of `SCHEMES`. The error says what is wrong without quoting the
/// URL (it may hold the password).
pub(crate) fn parse(text: &str) -> Result<MysqlUrl, String> {
    const EXAMPLE: &str = "e.g. \"mysql://agent@db.internal:3306/app\"";
    let scheme = SCHEMES.into_iter().find(|scheme| text.starts_with(scheme)).ok_or("is not a MySQL URL")?;
    let url = Url::parse(text).map_err(|error| format!("is not a MySQL URL ({error}), {EXAMPLE}"))?;
    let host = match url.host_str() {
        Some(host) if !host.is_empty() => host.trim_start_matches('[').trim_end_matches(']').to_owned(),
        _ => return Err(format!("names no host: write it after the @, {EXAMPLE}")),
    };
    let user = percent_decoded(url.username());
    if user.is_empty() {
        return Err(format!("names no user: write it before the host, {EXAMPLE}"));
    }
    let database = percent_decoded(url.path().trim_start_matches('/'));
    if database.is_empty() || database.contains('/') {
        return Err(format!("names no database: end the URL with /DBNAME, {EXAMPLE}"));
    }
    let (mut sslmode, mut sslrootcert) = (None, None);
    for (key, value) in url.query_pairs() {
        match &*key {
            "sslmode" => sslmode = Some(value.into_owned()),
            "sslrootcert" => sslrootcert = Some(value.into_owned()),
            other => {
                return Err(format!(
                    "has the parameter {other:?}, which the agent does not read: only sslmode and sslrootcert"
                ));
            }
        }
    }
    Ok(MysqlUrl {
        scheme,
        host,
        port: url.port().unwrap_or(DEFAULT_PORT),
        user,
        password: url.password().map(percent_decoded),
        database,
        sslmode,
        sslrootcert,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_gives_its_parts_decoded_and_is_shown_without_its_password() {
        let url =
            parse("mariadb://agent:p%40ss%2Fw@db.internal:3307/pay%20ments?sslmode=verify-full&sslrootcert=ca.pem")
                .unwrap();
        assert_eq!(
            url,
            MysqlUrl {
                scheme: "mariadb://",
                host: "db.internal".to_owned(),
                port: 3307,
                user: "agent".to_owned(),
                password: Some("p@ss/w".to_owned()),
                database: "pay ments".to_owned(),
                sslmode: Some("verify-full".to_owned()),
                sslrootcert: Some("ca.pem".to_owned()),
            }
        );
        assert_eq!(url.shown(), "mariadb://agent@db.internal:3307/pay ments");
        let v6 = parse("mysql://agent@[::1]/app").unwrap();
        assert_eq!((v6.host.as_str(), v6.port, v6.shown().as_str()), ("::1", 3306, "mysql://agent@[::1]:3306/app"));
    }

    #[test]
    fn what_a_url_lacks_or_adds_is_said_without_quoting_it() {
        for (url, said) in [
            ("mysql://agent:Secr3t-pw@/app", "is not a MySQL URL (empty host)"),
            ("mysql://:Secr3t-pw@db/app", "names no user"),
            ("mysql://agent:Secr3t-pw@db", "names no database"),
            ("mysql://agent:Secr3t-pw@db/a/b", "names no database"),
            ("mysql://agent:Secr3t-pw@db/app?ssl-mode=REQUIRED", "\"ssl-mode\", which the agent does not read"),
            ("mysql://agent:Secr3t-pw@db:99999/app", "is not a MySQL URL (invalid port number)"),
        ] {
            let error = parse(url).unwrap_err();
            assert!(error.contains(said) && !error.contains("Secr3t"), "{url}: {error}");
        }
    }
}
