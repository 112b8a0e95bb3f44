//! What the server backends share: one connection, kept between ticks and made again with
//! backoff after a failed attempt; each tick's work on it bounded by `source.timeout`; and how
//! long logging in may take.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use tracing::info;

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

/// One piece of work on a connection.
pub(crate) type Work<'a, T> = Pin<Box<dyn Future<Output = anyhow::Result<T>> + Send + 'a>>;

/// What `Kept::bounded` asks of a server backend.
pub(crate) trait Server: Sync {
    type Connection: Send;

    /// The server's URL without its password, for messages.
    fn shown(&self) -> &str;

    /// `source.timeout`.
    fn timeout(&self) -> Duration;

    /// Logs in and gets the connection ready for work.
    fn connect(&self) -> Work<'_, Self::Connection>;

    /// Whether `connection` is no longer fit for work: the server closed it, or the work's
    /// `error` broke it.
    fn is_broken(connection: &Self::Connection, error: Option<&anyhow::Error>) -> bool;

    /// Lets go of `connection`, which broke (`overran` false) or was cut off by the agent's own
    /// deadline mid-statement (`overran` true): the server may still be running its statement.
    fn abandon(&self, connection: Self::Connection, overran: bool);
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
    async fn get(&mut self, connect: impl Future<Output = anyhow::Result<C>>) -> anyhow::Result<&mut C> {
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

    fn is_open(&self) -> bool {
        self.connection.is_some()
    }

    /// The connection, which is no longer kept.
    fn take(&mut self) -> Option<C> {
        self.connection.take()
    }

    /// Runs `work` on the connection (made first if there is none) within `source.timeout`.
    /// A connection the server closed since the last tick (a restart, a failover) is made again
    /// once, at once; one that breaks or overruns is let go, to be made again next time. After
    /// an error the server answered (a lock timeout, a revoked grant) the connection is kept:
    /// no new login every tick.
    pub(crate) async fn bounded<S, T>(
        &mut self,
        server: &S,
        work: impl for<'a> Fn(&'a S, &'a mut C) -> Work<'a, T>,
    ) -> anyhow::Result<T>
    where
        S: Server<Connection = C>,
    {
        let timeout = server.timeout();
        let attempt = async {
            self.forget_if(|connection| S::is_broken(connection, None));
            let was_open = self.is_open();
            let connection = self.get(server.connect()).await?;
            match work(server, connection).await {
                Err(error) if was_open && S::is_broken(connection, Some(&error)) => {
                    info!(server = %server.shown(), error = %format!("{error:#}"), "the database server closed the connection; connecting again");
                    if let Some(connection) = self.take() {
                        server.abandon(connection, false);
                    }
                    let connection = self.get(server.connect()).await?;
                    work(server, connection).await
                }
                other => other,
            }
        };
        let outcome = match tokio::time::timeout(timeout, attempt).await {
            Ok(outcome) => outcome,
            Err(_) => {
                // Cut off mid-way, the connection is in an unknown state: its statement is
                // stopped and it is not kept; the next tick makes a new one.
                if let Some(connection) = self.take() {
                    server.abandon(connection, true);
                }
                Err(anyhow!(
                    "the read ran past source.timeout ({}); the query was cancelled",
                    humantime::format_duration(timeout)
                ))
            }
        };
        if let Some(connection) = self.connection.as_ref()
            && S::is_broken(connection, outcome.as_ref().err())
            && let Some(connection) = self.take()
        {
            server.abandon(connection, false);
        }
        outcome.with_context(|| format!("reading {} (source.database)", server.shown()))
    }

    /// Drops the connection if `is_closed` says the server closed it.
    fn forget_if(&mut self, is_closed: impl Fn(&C) -> bool) {
        if self.connection.as_ref().is_some_and(is_closed) {
            self.connection = None;
        }
    }
}

/// `wait` rounded up to the second, for a message.
fn round_up(wait: Duration) -> Duration {
    Duration::from_secs(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
}
