//! How many files the agent may hold open (`RLIMIT_NOFILE`): every socket and database file takes
//! one. The binary raises the soft limit to the hard one at start, as Go programs do; the scrape
//! endpoint sizes its connection cap from what the soft limit then is.

use tracing::{info, warn};

/// The soft limit when it cannot be read: Linux's default.
pub(crate) const ASSUMED_SOFT_LIMIT: u64 = 1024;

/// The process's open-file limits: the soft one is enforced, the hard one is as far as the
/// process may raise it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFileLimit {
    pub soft: u64,
    pub hard: u64,
}

/// The limits in force now.
pub fn current() -> std::io::Result<OpenFileLimit> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes only into the struct it is given, which lives across the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(OpenFileLimit { soft: limit.rlim_cur, hard: limit.rlim_max })
}

/// Raises the soft limit to the hard one and logs both. When they are equal already (systemd's
/// `LimitNOFILE=` sets both) nothing is asked of the kernel. A failure is logged, and the agent
/// goes on with the limit it has: the scrape endpoint's cap follows whatever it is.
pub fn raise_soft_limit() {
    let before = match current() {
        Ok(limit) => limit,
        Err(error) => {
            warn!(%error, "cannot read the open-file limit (RLIMIT_NOFILE); going on with it as it is");
            return;
        }
    };
    if before.soft >= before.hard {
        info!(soft = before.soft, hard = before.hard, "open-file limit (RLIMIT_NOFILE)");
        return;
    }
    let raised = libc::rlimit { rlim_cur: before.hard, rlim_max: before.hard };
    // SAFETY: setrlimit only reads the struct it is given, which lives across the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        let error = std::io::Error::last_os_error();
        warn!(soft = before.soft, hard = before.hard, %error, "cannot raise the open-file limit (RLIMIT_NOFILE) to the hard limit; going on with the soft one");
        return;
    }
    info!(
        soft = before.hard,
        hard = before.hard,
        was = before.soft,
        "raised the open-file limit (RLIMIT_NOFILE) to the hard limit"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limits_in_force_are_read() {
        let limit = current().unwrap();
        assert!(limit.soft >= 3 && limit.soft <= limit.hard, "{limit:?}");
    }
}
