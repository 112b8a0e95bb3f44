//! systemd's credentials, read outside the service. A `*_file` key may name a file in
//! `/run/credentials/apimetrics-agent.service/`, where systemd puts what `LoadCredential=` hands
//! the running service; that folder does not exist for `check` or `once` run from a shell. There
//! the agent reads what `LoadCredential=NAME` would hand the service: the first of
//! `/etc/credstore/NAME`, `/run/credstore/NAME` and `/usr/lib/credstore/NAME`, as systemd looks.
//! Inside the service (`$CREDENTIALS_DIRECTORY` set) a path is only ever itself.

use std::path::{Component, Path, PathBuf};

/// Where systemd makes each service's credentials folder.
const CREDENTIALS: &str = "/run/credentials";

/// Where `LoadCredential=NAME`, without a path, looks for the file, in systemd's order.
const CREDENTIAL_STORES: [&str; 3] = ["/etc/credstore", "/run/credstore", "/usr/lib/credstore"];

/// Where a file the config names is to be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Located {
    /// At its own path.
    Itself,
    /// In a credential store, in place of a credential that exists only inside the service.
    InStore(PathBuf),
    /// Nowhere: a credential outside the service, and no store holds it; says where it looked.
    Nowhere(String),
}

/// Where to read `path`, as this process may (inside the service or not).
pub(crate) fn locate(path: &Path) -> Located {
    let in_service = std::env::var_os("CREDENTIALS_DIRECTORY").is_some();
    let stores = CREDENTIAL_STORES.map(Path::new);
    locate_among(path, in_service, &stores)
}

fn locate_among(path: &Path, in_service: bool, stores: &[&Path]) -> Located {
    let Some(name) = credential_name(path) else { return Located::Itself };
    let absent =
        |path: &Path| matches!(path.symlink_metadata(), Err(error) if error.kind() == std::io::ErrorKind::NotFound);
    if in_service || !absent(path) {
        return Located::Itself;
    }
    let candidates: Vec<PathBuf> = stores.iter().map(|store| store.join(name)).collect();
    match candidates.iter().find(|candidate| !absent(candidate)) {
        Some(found) => Located::InStore(found.clone()),
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
/// (`/run/credentials/UNIT/NAME`).
fn credential_name(path: &Path) -> Option<&str> {
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
        let nowhere = locate_among(credential, false, &store_paths);
        let Located::Nowhere(said) = nowhere else { panic!("{nowhere:?}") };
        assert!(said.starts_with("/run/credentials/apimetrics-agent.service/ exists only inside"), "{said}");
        assert!(said.contains("LoadCredential=db-password would hand it"), "{said}");
        let second = stores[1].path().join("db-password");
        assert!(said.ends_with(&format!("no {}", second.display())), "{said}");

        std::fs::write(&second, "pw").unwrap();
        assert_eq!(locate_among(credential, false, &store_paths), Located::InStore(second.clone()));
        let first = stores[0].path().join("db-password");
        std::fs::write(&first, "pw").unwrap();
        assert_eq!(locate_among(credential, false, &store_paths), Located::InStore(first));
        // Inside the service, only what systemd put in its folder counts.
        assert_eq!(locate_among(credential, true, &store_paths), Located::Itself);
    }

    #[test]
    fn only_a_file_directly_in_a_services_credentials_folder_is_a_credential() {
        let stores = [Path::new("/nonexistent-store")];
        for path in [
            "/etc/apimetrics-agent/db-password",
            "/run/credentials/apimetrics-agent.service",
            "/run/credentials/apimetrics-agent.service/sub/db-password",
            "/run/credentialsx/apimetrics-agent.service/db-password",
            "credentials/apimetrics-agent.service/db-password",
        ] {
            assert_eq!(locate_among(Path::new(path), false, &stores), Located::Itself, "{path}");
        }
    }
}
