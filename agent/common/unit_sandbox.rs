//! What the packaged systemd unit's sandbox hides from the agent: it sees neither the users'
//! homes (`ProtectHome=yes`) nor the system's temporary folders (`PrivateTmp=`, which
//! `DynamicUser=yes` keeps on, gives it empty ones of its own). `check`, run as root from a shell,
//! sees them; the service does not. Named in `check`'s warnings and in the errors of a file not
//! found or not allowed.

use std::path::{Path, PathBuf};

/// What the packaged systemd unit hides from the agent that `path` is in, if anything. The path
/// is taken both as written and with its symbolic links and `..` resolved, and each folder both
/// ways too, as systemd follows links when it hides one (`/home` may be a link to `/var/home`).
pub(crate) fn hidden_by_the_unit(path: &Path) -> Option<Hidden> {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let paths = [resolved(&absolute), absolute];
    let under = |folders: &[&str]| {
        folders.iter().map(Path::new).any(|folder| {
            let real = std::fs::canonicalize(folder).unwrap_or_else(|_| folder.to_owned());
            paths.iter().any(|path| path.starts_with(folder) || path.starts_with(&real))
        })
    };
    if under(&["/home", "/root", "/run/user"]) {
        Some(Hidden {
            note: "the packaged systemd unit hides /home, /root and /run/user from the agent (ProtectHome=yes)",
            remedy: "move it, or let the unit see it with ProtectHome=read-only in a drop-in",
        })
    } else if under(&["/tmp", "/var/tmp"]) {
        Some(Hidden {
            note: "the packaged systemd unit gives the agent empty /tmp and /var/tmp folders of its own \
                   (PrivateTmp=, which DynamicUser=yes keeps on)",
            remedy: "move it out of /tmp and /var/tmp",
        })
    } else {
        None
    }
}

/// What the packaged unit does to a path, and what to do about it.
pub(crate) struct Hidden {
    pub(crate) note: &'static str,
    pub(crate) remedy: &'static str,
}

/// `absolute` with its symbolic links and `..` resolved as far as it exists, the rest appended
/// as written.
fn resolved(absolute: &Path) -> PathBuf {
    absolute
        .ancestors()
        .find_map(|ancestor| {
            let real = std::fs::canonicalize(ancestor).ok()?;
            Some(real.join(absolute.strip_prefix(ancestor).ok()?))
        })
        .unwrap_or_else(|| absolute.to_owned())
}

/// `hidden_by_the_unit` as a clause of an error message, or nothing.
pub(crate) fn unit_note(path: &Path) -> String {
    hidden_by_the_unit(path).map(|hidden| format!("; if it runs as a service: {}", hidden.note)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_folders_the_unit_hides_are_named() {
        const HOME: &str = "move it, or let the unit see it with ProtectHome=read-only in a drop-in";
        const TMP: &str = "move it out of /tmp and /var/tmp";
        let hidden = |path: &Path| hidden_by_the_unit(path).map(|hidden| hidden.remedy);
        assert_eq!(hidden(Path::new("/home/app/db.sqlite3")), Some(HOME));
        assert_eq!(hidden(Path::new("/root/db.sqlite3")), Some(HOME));
        assert_eq!(hidden(Path::new("/tmp/db.sqlite3")), Some(TMP));
        assert_eq!(hidden(Path::new("/var/tmp/x/db.sqlite3")), Some(TMP));
        assert_eq!(hidden(Path::new("/srv/../tmp/db.sqlite3")), Some(TMP));
        for seen in ["/srv/payments/db.sqlite3", "/homework/db.sqlite3", "/var/lib/app/db.sqlite3"] {
            assert_eq!(hidden(Path::new(seen)), None, "{seen}");
        }
        // Through a link, where the file really is counts.
        let folder = tempfile::tempdir_in("/var/tmp").unwrap();
        let link = std::env::temp_dir().join(format!("apimetrics-link-{}", std::process::id()));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(folder.path(), &link).unwrap();
        let through_link = hidden(&link.join("db.sqlite3"));
        std::fs::remove_file(&link).unwrap();
        assert_eq!(through_link, Some(TMP));
    }
}
