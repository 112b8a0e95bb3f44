//! systemd's credentials, read outside the service. A `*_file` key may name a file in
//! `/run/credentials/apimetrics-agent.service/`, where systemd puts what `LoadCredential=` hands
//! the running service; that folder does not exist for `check` or `once` run from a shell. There
//! the agent reads what `LoadCredential=NAME` would hand the service from a file: the first of
//! `/etc/credstore/NAME`, `/run/credstore/NAME`, `/usr/local/lib/credstore/NAME` and
//! `/usr/lib/credstore/NAME`, the folders systemd 252 looks in, in its order.
//! Inside a service (`$CREDENTIALS_DIRECTORY` set), one under another name than the config
//! says (a copy of the unit, a transient one) reads it from its own credentials folder.

use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Where systemd makes each service's credentials folder.
const CREDENTIALS: &str = "/run/credentials";

/// Where `LoadCredential=NAME`, without a path, looks for the file, in systemd's order.
const CREDENTIAL_STORES: [&str; 4] =
    ["/etc/credstore", "/run/credstore", "/usr/local/lib/credstore", "/usr/lib/credstore"];

/// Where a file the config names is to be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Located {
    /// At its own path.
    Itself,
    /// In place of a credential that is not where the config says: the file, what it is, and
    /// what to do should this user not be allowed to read it.
    Instead { file: PathBuf, what: String, if_denied: String },
    /// Nowhere: a credential not where the config says, and not where it could be; says where
    /// the agent looked and what to do.
    Nowhere(String),
}

/// Where to read `path`, as this process may (inside a service or not).
pub(crate) fn locate(path: &Path) -> Located {
    let handed = std::env::var_os("CREDENTIALS_DIRECTORY").filter(|folder| !folder.is_empty()).map(PathBuf::from);
    let stores = CREDENTIAL_STORES.map(Path::new);
    locate_among(path, handed.as_deref(), &stores)
}

/// `locate`, with `handed` the service's credentials folder (`None` outside a service) and
/// `stores` where `LoadCredential=NAME` looks.
fn locate_among(path: &Path, handed: Option<&Path>, stores: &[&Path]) -> Located {
    let Some(name) = credential_name(path) else { return Located::Itself };
    let absent =
        |path: &Path| matches!(path.symlink_metadata(), Err(error) if error.kind() == std::io::ErrorKind::NotFound);
    if !absent(path) {
        return Located::Itself;
    }
    if let Some(folder) = handed {
        let own = folder.join(name);
        if own != path && !absent(&own) {
            return Located::Instead {
                file: own,
                what: "the credential systemd handed this service".to_owned(),
                if_denied: "the service's own user may read it: is this the service?".to_owned(),
            };
        }
        return Located::Nowhere(format!(
            "systemd handed this service no credential {name} (its folder is {}): add LoadCredential={name} to the \
             unit's drop-in, and restart it; systemd skips, without a word, one whose file (/etc/credstore/{name}) \
             is missing",
            folder.display()
        ));
    }
    let candidates: Vec<PathBuf> = stores.iter().map(|store| store.join(name)).collect();
    match candidates.iter().find(|candidate| !absent(candidate)) {
        Some(found) => Located::Instead {
            file: found.clone(),
            what: format!("which LoadCredential={name} hands the service"),
            if_denied: format!(
                "only root may read a credential store: run this as root; the service reads it through \
                 LoadCredential={name} in the unit's drop-in"
            ),
        },
        None => {
            let looked: Vec<String> = candidates.iter().map(|candidate| candidate.display().to_string()).collect();
            let folder = path.parent().unwrap_or(path).display();
            Located::Nowhere(format!(
                "{folder}/ exists only inside the running service, where systemd puts what LoadCredential= hands \
                 it; outside it the agent reads what LoadCredential={name} would hand it, and there is no {}",
                looked.join(", no ")
            ))
        }
    }
}

/// The credential's name when `path` is a file in a service's credentials folder
/// (`/run/credentials/UNIT/NAME`, no trailing slash).
fn credential_name(path: &Path) -> Option<&str> {
    if path.as_os_str().as_bytes().ends_with(b"/") {
        return None;
    }
    let inside = path.strip_prefix(CREDENTIALS).ok()?;
    match inside.components().collect::<Vec<_>>()[..] {
        [Component::Normal(_unit), Component::Normal(name)] => name.to_str(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_the_service_a_credential_is_read_from_the_first_store_that_has_it() {
        let stores = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let store_paths = [stores[0].path(), stores[1].path()];
        let credential = Path::new("/run/credentials/apimetrics-agent.service/db-password");
        let nowhere = locate_among(credential, None, &store_paths);
        let Located::Nowhere(said) = nowhere else { panic!("{nowhere:?}") };
        assert!(said.starts_with("/run/credentials/apimetrics-agent.service/ exists only inside"), "{said}");
        assert!(said.contains("LoadCredential=db-password would hand it"), "{said}");
        let second = stores[1].path().join("db-password");
        assert!(said.ends_with(&format!("no {}", second.display())), "{said}");

        std::fs::write(&second, "pw").unwrap();
        let instead = |located: Located| match located {
            Located::Instead { file, .. } => file,
            other => panic!("{other:?}"),
        };
        assert_eq!(instead(locate_among(credential, None, &store_paths)), second);
        let first = stores[0].path().join("db-password");
        std::fs::write(&first, "pw").unwrap();
        assert_eq!(instead(locate_among(credential, None, &store_paths)), first);
    }

    #[test]
    fn inside_a_service_only_its_own_credentials_folder_counts() {
        let store = tempfile::tempdir().unwrap();
        std::fs::write(store.path().join("db-password"), "pw").unwrap();
        let stores = [store.path()];
        let handed = tempfile::tempdir().unwrap();
        let credential = Path::new("/run/credentials/apimetrics-agent.service/db-password");
        let Located::Nowhere(said) = locate_among(credential, Some(handed.path()), &stores) else { panic!() };
        assert!(said.starts_with("systemd handed this service no credential db-password (its folder is "), "{said}");
        assert!(said.contains("add LoadCredential=db-password to the unit's drop-in"), "{said}");
        // A unit of another name (a copy, a transient one) reads its own folder's.
        std::fs::write(handed.path().join("db-password"), "pw").unwrap();
        let located = locate_among(credential, Some(handed.path()), &stores);
        assert!(
            matches!(&located, Located::Instead { file, .. } if *file == handed.path().join("db-password")),
            "{located:?}"
        );
    }

    #[test]
    fn only_a_file_directly_in_a_services_credentials_folder_is_a_credential() {
        let stores = [Path::new("/nonexistent-store")];
        for path in [
            "/run/credentials/apimetrics-agent.service/db-password/",
            "/etc/apimetrics-agent/db-password",
            "/run/credentials/apimetrics-agent.service",
            "/run/credentials/apimetrics-agent.service/sub/db-password",
            "/run/credentialsx/apimetrics-agent.service/db-password",
            "credentials/apimetrics-agent.service/db-password",
        ] {
            assert_eq!(locate_among(Path::new(path), None, &stores), Located::Itself, "{path}");
        }
    }
}
