//! What the server backends share: one connection, kept between ticks and made again with
//! backoff after a failed attempt, and how long logging in may take.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::common::backoff::Backoff;

/// The longest logging in to a server may take, whatever `source.timeout` allows.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Waits between failed connection attempts: 1 s doubling to 60 s, with jitter.
const RECONNECT_FIRST: Duration = Duration::from_secs(1);
const RECONNECT_CAP: Duration = Duration::from_secs(60);

/// How long logging in may take within a tick of `timeout`: the TCP connect and the server's
/// answers both, so that a server that accepts and never answers fails the attempt, which then
/// backs off, rather than holding every tick to its deadline.
pub(crate) fn login_limit(timeout: Duration) -> Duration {
    CONNECT_TIMEOUT.min(timeout * 3 / 4)
}

/// A server connection `C`, if there is one, and when the next attempt to make one may start.
pub(crate) struct Kept<C> {
    connection: Option<C>,
    backoff: Backoff,
    /// After a failed attempt: no new one before this, and why the last one failed.
    waiting: Option<(Instant, String)>,
}

impl<C> Kept<C> {
    pub(crate) fn new() -> Kept<C> {
        Kept { connection: None, backoff: Backoff::new(RECONNECT_FIRST, RECONNECT_CAP), waiting: None }
    }

    /// The open connection, or a new one made by `connect`, unless the wait after a failed
    /// attempt is still on (the tick then fails at once, saying why and for how long).
    pub(crate) async fn get(&mut self, connect: impl Future<Output = anyhow::Result<C>>) -> anyhow::Result<&mut C> {
        if self.connection.is_none() {
            if let Some((retry_at, reason)) = &self.waiting
                && let Some(wait) = retry_at.checked_duration_since(Instant::now())
            {
                bail!("{reason}; trying again in {}", humantime::format_duration(round_up(wait)));
            }
            match connect.await {
                Ok(connection) => {
                    self.backoff.reset();
                    self.waiting = None;
                    self.connection = Some(connection);
                }
                Err(error) => {
                    let wait = self.backoff.next_wait(None);
                    self.waiting = Some((Instant::now() + wait, format!("{error:#}")));
                    return Err(error);
                }
            }
        }
        Ok(self.connection.as_mut().expect("connected above"))
    }

    pub(crate) fn is_open(&self) -> bool {
        self.connection.is_some()
    }

    /// The connection, if there is one, without making one.
    pub(crate) fn get_if_open(&mut self) -> Option<&mut C> {
        self.connection.as_mut()
    }

    /// The connection, which is no longer kept.
    pub(crate) fn take(&mut self) -> Option<C> {
        self.connection.take()
    }

    /// Drops the connection if `is_closed` says the server closed it.
    pub(crate) fn forget_if(&mut self, is_closed: impl Fn(&C) -> bool) {
        if self.connection.as_ref().is_some_and(is_closed) {
            self.connection = None;
        }
    }
}

/// `wait` rounded up to the second, for a message.
fn round_up(wait: Duration) -> Duration {
    Duration::from_secs(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
}
