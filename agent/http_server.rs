//! The scrape endpoint's HTTP server: an accept loop of its own around hyper, so that no client
//! can take what the agent needs to tick. Every socket is a file descriptor, and `axum::serve`
//! left idle connections open for ever: about a thousand of them used up the open-file limit, and
//! ticks failed to open the database.
//!
//! So here: a request's headers must arrive within `header_read_timeout` of connecting or of the
//! last answer, which hyper restarts after each answer, so the same timeout closes idle keep-alive
//! connections; an answer is bounded in time (`answer_timeout`, then 503) and a whole exchange too
//! (`exchange_timeout`, then the connection is dropped: a client that does not read its answer);
//! a request's declared body is bounded in size (413). The connections open at once are capped,
//! from the open-file limit, leaving descriptors for ticks and queues. At the cap an idle
//! connection is closed to make room (first the one that has waited longest without sending a
//! request, then the keep-alive one idle the longest), so a flood of idle connections cannot keep
//! a scraper out, and the kernel's backlog keeps draining; when every connection is answering,
//! the new one is closed at once. An `accept` that fails (out of descriptors) backs off and is logged
//! once a minute. At shutdown idle connections close at once and answers under way finish, within
//! `SHUTDOWN_GRACE`.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::http::{Request, Response, StatusCode};
use axum::response::IntoResponse;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, info, warn};

use crate::common::open_files;

/// How long a client has to send a request's headers, from connecting or from the last answer.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the agent takes to answer at most (its answers come from memory; a reload waits on
/// the run loop).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one request may take, from its headers to the last byte of its answer handed to the
/// socket.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request body the endpoint takes; none of its routes needs one.
const MAX_REQUEST_BODY: u64 = 64 * 1024;
/// The largest request head (request line and headers); a browser's cookies for the host fit.
const MAX_HEADER_BYTES: usize = 32 * 1024;
/// What hyper buffers per connection at most.
const MAX_BUFFER_BYTES: usize = 64 * 1024;

/// Descriptors the connection cap leaves to the rest of the agent, beyond half the limit: a tick's
/// database and its journal or `-wal` and `-shm`, three files per remote-write queue, pushes'
/// connections, the runtime, logs.
const RESERVED_DESCRIPTORS: u64 = 256;
/// The cap's bounds, whatever the open-file limit: more connections than a scraper and a few
/// browsers need, and enough for them on a tiny limit.
const MAX_CONNECTIONS: usize = 1024;
const MIN_CONNECTIONS: usize = 8;

/// At shutdown, how long answers under way get before their connections are dropped; within the
/// run loop's own deadline.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a connection told to close, with no answer under way, gets to send the rest of its
/// last answer.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// At the cap, how long a new connection waits for the connection closed to make room.
const ROOM_WAIT: Duration = Duration::from_millis(100);
/// After an `accept` fails for want of descriptors or memory, the first and the longest pause.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// How often a repeated event (accept errors, connections closed at the cap) is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// What the server allows a client.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) header_read_timeout: Duration,
    pub(crate) answer_timeout: Duration,
    pub(crate) exchange_timeout: Duration,
    pub(crate) max_request_body: u64,
    /// How many connections may be open at once.
    pub(crate) max_connections: usize,
    /// The soft open-file limit the cap was derived from, for the log.
    pub(crate) open_file_limit: u64,
}

impl Limits {
    /// The limits, with the connection cap derived from the process's soft open-file limit now.
    pub(crate) fn for_this_process() -> Limits {
        let open_file_limit = match open_files::current() {
            Ok(limit) => limit.soft,
            Err(error) => {
                warn!(%error, assumed = open_files::ASSUMED_SOFT_LIMIT, "cannot read the open-file limit (RLIMIT_NOFILE)");
                open_files::ASSUMED_SOFT_LIMIT
            }
        };
        Limits {
            header_read_timeout: HEADER_READ_TIMEOUT,
            answer_timeout: ANSWER_TIMEOUT,
            exchange_timeout: EXCHANGE_TIMEOUT,
            max_request_body: MAX_REQUEST_BODY,
            max_connections: max_connections(open_file_limit),
            open_file_limit,
        }
    }
}

/// Half of what the soft open-file limit leaves beyond `RESERVED_DESCRIPTORS`, within
/// `MIN_CONNECTIONS..=MAX_CONNECTIONS`: 384 connections for the usual 1,024.
fn max_connections(soft_open_file_limit: u64) -> usize {
    let half_of_the_rest = soft_open_file_limit.saturating_sub(RESERVED_DESCRIPTORS) / 2;
    usize::try_from(half_of_the_rest).unwrap_or(MAX_CONNECTIONS).clamp(MIN_CONNECTIONS, MAX_CONNECTIONS)
}

/// Serves `router` on `listener` until `shutdown` is cancelled; then stops accepting, closes idle
/// connections, and returns once the answers under way are sent (within `SHUTDOWN_GRACE`).
pub(crate) async fn serve(listener: TcpListener, router: Router, limits: Limits, shutdown: CancellationToken) {
    info!(
        max_connections = limits.max_connections,
        open_file_limit = limits.open_file_limit,
        header_read_timeout = ?limits.header_read_timeout,
        answer_timeout = ?limits.answer_timeout,
        "scrape endpoint limits"
    );
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        .max_header_size(MAX_HEADER_BYTES)
        .max_buf_size(MAX_BUFFER_BYTES);
    let connections = Arc::new(Connections::new(limits.max_connections));
    let server = Arc::new(Server { builder, router, limits, connections: connections.clone() });
    let tasks = TaskTracker::new();
    let mut accept_errors = Occasional::default();
    let mut backoff = ACCEPT_BACKOFF;
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff = ACCEPT_BACKOFF;
                stream
            }
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                if let Some(n_errors) = accept_errors.count() {
                    warn!(%error, n_errors, pause = ?backoff, "the scrape endpoint cannot accept connections{}", what_to_do(&error));
                }
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                continue;
            }
        };
        let Some(slot) = connections.make_room().await else {
            // Every connection is answering, or on its way out: this one is closed at once.
            drop(stream);
            continue;
        };
        let activity = Arc::new(Activity::new(shutdown.child_token()));
        let registered = connections.register(activity.clone(), slot);
        tasks.spawn(server.clone().serve_connection(stream, activity, registered, shutdown.clone()));
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
}

/// What the accept loop hands every connection's task.
struct Server {
    builder: http1::Builder,
    router: Router,
    limits: Limits,
    connections: Arc<Connections>,
}

impl Server {
    /// Serves one connection until it ends, or until it is told to close (at the cap, or at
    /// shutdown) and its last answer is out, or until it overruns a bound; then closes it.
    async fn serve_connection(
        self: Arc<Self>,
        stream: TcpStream,
        activity: Arc<Activity>,
        registered: Registered,
        shutdown: CancellationToken,
    ) {
        // Dropped after the connection, so the slot frees only once the socket is closed.
        let _registered = registered;
        let service = {
            let (server, activity) = (self.clone(), activity.clone());
            service_fn(move |request| server.clone().answer(request, activity.clone()))
        };
        let connection = self.builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let mut closing_since = None;
        loop {
            let give_up_at = activity.give_up_at(closing_since, shutdown.is_cancelled(), &self.limits);
            if give_up_at.is_some_and(|deadline| deadline <= Instant::now()) {
                if activity.answering_since().is_some() {
                    self.connections.note_dropped_exchange(&self.limits);
                }
                return;
            }
            tokio::select! {
                ended = connection.as_mut() => {
                    if let Err(error) = ended {
                        debug!(%error, "scrape connection ended");
                    }
                    return;
                }
                () = activity.close.cancelled(), if closing_since.is_none() => {
                    connection.as_mut().graceful_shutdown();
                    closing_since = Some(Instant::now());
                }
                () = activity.changed.notified() => {}
                () = sleep_until(give_up_at) => {}
            }
        }
    }

    /// Answers one request through the router, within the bounds.
    async fn answer(
        self: Arc<Self>,
        request: Request<Incoming>,
        activity: Arc<Activity>,
    ) -> Result<Response<Answer>, Infallible> {
        let exchange = Exchange::begin(activity);
        let declared_body = request.body().size_hint().lower();
        let response = if declared_body > self.limits.max_request_body {
            let message =
                format!("this endpoint takes request bodies of {} bytes at most\n", self.limits.max_request_body);
            (StatusCode::PAYLOAD_TOO_LARGE, message).into_response()
        } else {
            match tokio::time::timeout(self.limits.answer_timeout, self.router.clone().oneshot(request)).await {
                Ok(Ok(response)) => response,
                Ok(Err(infallible)) => match infallible {},
                Err(_) => {
                    let message = format!("no answer within {:?}\n", self.limits.answer_timeout);
                    (StatusCode::SERVICE_UNAVAILABLE, message).into_response()
                }
            }
        };
        Ok(response.map(|body| Answer { body, exchange: Some(exchange) }))
    }
}

/// Resolves at `deadline`, or never.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Errors that end one connection before it was accepted, and say nothing of the listener.
fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(error.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

/// What an operator can do about an accept error, after a colon; empty when nothing is known.
fn what_to_do(error: &std::io::Error) -> String {
    match error.raw_os_error() {
        Some(libc::EMFILE) => format!(
            ": too many open files: the agent holds as many as its open-file limit allows ({}; LimitNOFILE= in \
             the systemd unit)",
            open_files::current().map_or_else(|_| "unknown".to_owned(), |limit| limit.soft.to_string())
        ),
        Some(libc::ENFILE) => ": too many open files in the system (the kernel's fs.file-max is reached)".to_owned(),
        _ => String::new(),
    }
}

/// One connection as its task, its requests and the accept loop see it.
struct Activity {
    state: Mutex<ActivityState>,
    /// Told when an exchange begins or ends, so the task's deadline follows.
    changed: Notify,
    /// Cancelled to close the connection: at the cap, or at shutdown (a child of its token).
    close: CancellationToken,
}

#[derive(Clone, Copy, Debug)]
struct ActivityState {
    /// How many requests are being answered (one, but for a pipelined request while the last
    /// answer is still being sent), and since when.
    n_answering: u32,
    answering_since: Option<Instant>,
    /// When the connection was accepted or its last answer was sent.
    idle_since: Instant,
    /// Whether any answer was sent on it.
    answered: bool,
}

impl Activity {
    fn new(close: CancellationToken) -> Activity {
        let state =
            ActivityState { n_answering: 0, answering_since: None, idle_since: Instant::now(), answered: false };
        Activity { state: Mutex::new(state), changed: Notify::new(), close }
    }

    fn state(&self) -> ActivityState {
        *self.state.lock().expect("the connection's state")
    }

    /// Since when a request is being answered, if one is.
    fn answering_since(&self) -> Option<Instant> {
        self.state().answering_since
    }

    /// Whether no request has come on the connection yet (half a head may have), and it is not
    /// told to close: the first candidates to close at the cap.
    fn never_asked(&self) -> bool {
        let state = self.state();
        state.n_answering == 0 && !state.answered && !self.close.is_cancelled()
    }

    /// Since when the connection has been idle, if it is, and not told to close yet.
    fn idle_since(&self) -> Option<Instant> {
        let state = self.state();
        (state.n_answering == 0 && !self.close.is_cancelled()).then_some(state.idle_since)
    }

    /// When the connection's task drops it, as things stand: when an exchange overruns; when it
    /// has been told to close and no answer is under way, at once if it never answered (it is idle,
    /// or half a request head came), else after `CLOSE_GRACE` for the last answer to leave; at
    /// shutdown, `SHUTDOWN_GRACE` after it began at most. Else hyper ends it.
    fn give_up_at(&self, closing_since: Option<Instant>, shutting_down: bool, limits: &Limits) -> Option<Instant> {
        let state = self.state();
        let overrun = state.answering_since.map(|since| since + limits.exchange_timeout);
        let closed = closing_since.and_then(|since| match (state.answering_since, state.answered) {
            (None, false) => Some(since),
            (None, true) => Some(since + CLOSE_GRACE),
            (Some(_), _) => shutting_down.then_some(since + SHUTDOWN_GRACE),
        });
        overrun.into_iter().chain(closed).min()
    }
}

/// One request being answered on a connection: from its head, read, to its answer handed to the
/// socket (`Answer` says how nearly).
struct Exchange(Arc<Activity>);

impl Exchange {
    fn begin(activity: Arc<Activity>) -> Exchange {
        {
            let mut state = activity.state.lock().expect("the connection's state");
            state.n_answering += 1;
            state.answering_since.get_or_insert_with(Instant::now);
        }
        activity.changed.notify_one();
        Exchange(activity)
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        {
            let mut state = self.0.state.lock().expect("the connection's state");
            state.n_answering -= 1;
            state.answered = true;
            if state.n_answering == 0 {
                state.answering_since = None;
                state.idle_since = Instant::now();
            }
        }
        self.0.changed.notify_one();
    }
}

/// An answer's body, holding its exchange open until hyper has handed all of it to the socket but
/// what it buffers (`MAX_BUFFER_BYTES`). It never says it has ended, so hyper, having taken the
/// last bytes, drops it only once its buffer has room again: a client that does not read keeps
/// the exchange open, and meets `exchange_timeout`.
struct Answer {
    body: Body,
    exchange: Option<Exchange>,
}

impl HttpBody for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let frame = std::task::ready!(Pin::new(&mut self.body).poll_frame(context));
        if frame.is_none() {
            self.exchange = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The connections open: a slot each (the cap), and what the accept loop needs to pick one to
/// close when every slot is taken.
struct Connections {
    slots: Arc<Semaphore>,
    max_connections: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    by_id: HashMap<u64, Arc<Activity>>,
    next_id: u64,
    /// Ids in the order accepted, to find the connection that has waited longest without sending
    /// a request in constant time, however many a flood opens. An id leaves once it reaches the
    /// front and its connection is gone, has asked or is closing; the rest are pruned when the
    /// list grows past twice the cap.
    accepted: VecDeque<u64>,
    /// Connections closed to make room, and exchanges dropped for overrunning, not logged yet.
    closed_at_the_cap: Occasional,
    dropped_exchanges: Occasional,
}

impl Connections {
    fn new(max_connections: usize) -> Connections {
        Connections { slots: Arc::new(Semaphore::new(max_connections)), max_connections, open: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().expect("the open connections")
    }

    /// A slot for a new connection: a free one, or one freed by closing an idle connection.
    /// `None` when every connection is answering or already closing, and no slot frees up within
    /// `ROOM_WAIT`.
    async fn make_room(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            return Some(slot);
        }
        self.close_an_idle_one();
        tokio::time::timeout(ROOM_WAIT, self.slots.clone().acquire_owned()).await.ok()?.ok()
    }

    /// Tells an idle connection to close, if there is one: the one that has waited longest
    /// without sending a request (a flood's), else the keep-alive connection idle the longest (a
    /// scraper's, which reconnects at its next scrape).
    fn close_an_idle_one(&self) {
        let mut open = self.lock();
        let Open { by_id, accepted, .. } = &mut *open;
        let mut never_asked = std::iter::from_fn(|| accepted.pop_front()).filter_map(|id| by_id.get(&id));
        let chosen = match never_asked.find(|activity| activity.never_asked()) {
            Some(activity) => activity,
            None => {
                let idle = by_id.values().filter_map(|activity| Some((activity.idle_since()?, activity)));
                let Some((_, longest_idle)) = idle.min_by_key(|(idle_since, _)| *idle_since) else { return };
                longest_idle
            }
        };
        chosen.close.cancel();
        if let Some(n_closed) = open.closed_at_the_cap.count() {
            warn!(
                max_connections = self.max_connections,
                n_closed,
                "the scrape endpoint is at its connection limit: closed idle connections to make room (a flood of \
                 idle connections?)"
            );
        }
    }

    /// Keeps `activity` among the open connections until the returned value is dropped, which
    /// also frees its slot.
    fn register(self: &Arc<Self>, activity: Arc<Activity>, slot: OwnedSemaphorePermit) -> Registered {
        let mut open = self.lock();
        let id = open.next_id;
        open.next_id += 1;
        open.by_id.insert(id, activity);
        let Open { by_id, accepted, .. } = &mut *open;
        accepted.push_back(id);
        if accepted.len() > 2 * self.max_connections {
            accepted.retain(|id| by_id.get(id).is_some_and(|activity| activity.never_asked()));
        }
        Registered { connections: self.clone(), id, _slot: slot }
    }

    fn note_dropped_exchange(&self, limits: &Limits) {
        if let Some(n_dropped) = self.lock().dropped_exchanges.count() {
            warn!(
                exchange_timeout = ?limits.exchange_timeout,
                n_dropped,
                "dropped a scrape connection whose request was not answered within the exchange timeout \
                 (a client that does not read its answer?)"
            );
        }
    }
}

/// A connection among the open ones, and its slot.
struct Registered {
    connections: Arc<Connections>,
    id: u64,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.connections.lock().by_id.remove(&self.id);
    }
}

/// Counts an event that may repeat fast, to log it at most once per `LOG_EVERY`.
#[derive(Debug, Default)]
struct Occasional {
    last_said: Option<Instant>,
    n_unsaid: u64,
}

impl Occasional {
    /// Counts one; returns how many there were since it was last said, when it is time to say so.
    fn count(&mut self) -> Option<u64> {
        self.n_unsaid += 1;
        let now = Instant::now();
        if self.last_said.is_some_and(|last_said| now.duration_since(last_said) < LOG_EVERY) {
            return None;
        }
        self.last_said = Some(now);
        Some(std::mem::take(&mut self.n_unsaid))
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::mpsc;

    use super::*;

    #[test]
    fn the_cap_leaves_descriptors_to_the_rest_of_the_agent() {
        assert_eq!(max_connections(1024), 384);
        assert_eq!(max_connections(2048), 896);
        assert_eq!(max_connections(8192), 1024);
        assert_eq!(max_connections(1 << 20), 1024);
        assert_eq!(max_connections(300), 22);
        assert_eq!(max_connections(0), 8);
    }

    /// More than the kernel buffers on a loopback connection.
    const BIG_ANSWER: usize = 32 << 20;

    fn limits(max_connections: usize) -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(5),
            answer_timeout: Duration::from_secs(5),
            exchange_timeout: Duration::from_secs(5),
            max_request_body: 16,
            max_connections,
            open_file_limit: 1024,
        }
    }

    /// Serves `/` ("ok"), `/slow` (which says when it starts, then answers after 300 ms) and
    /// `/big` (32 MiB) on a free port.
    async fn start(limits: Limits) -> (SocketAddr, mpsc::Receiver<()>, CancellationToken, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (started, starts) = mpsc::channel(8);
        let slow = move || {
            let started = started.clone();
            async move {
                let _ = started.send(()).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                "slow"
            }
        };
        let router = Router::new()
            .route("/", get(|| async { "ok" }))
            .route("/slow", get(slow))
            .route("/big", get(|| async { "x".repeat(BIG_ANSWER) }));
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, router, limits, shutdown.clone()));
        (address, starts, shutdown, server)
    }

    async fn send(connection: &mut TcpStream, method_and_path: &str, more_headers: &str) {
        let request = format!("{method_and_path} HTTP/1.1\r\nHost: test\r\n{more_headers}\r\n");
        connection.write_all(request.as_bytes()).await.unwrap();
    }

    /// Reads one answer, whose body has a Content-Length.
    async fn answer(connection: &mut TcpStream) -> String {
        let mut answer = Vec::new();
        loop {
            let mut buffer = [0; 4096];
            let n_read = connection.read(&mut buffer).await.unwrap();
            assert!(n_read > 0, "closed after {:?}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buffer[..n_read]);
            let text = String::from_utf8_lossy(&answer).into_owned();
            let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
            let length = head.lines().find_map(|line| line.strip_prefix("content-length: ")?.parse().ok());
            if body.len() >= length.expect("a content-length") {
                return text;
            }
        }
    }

    /// Whether the server closes `connection` within `wait`, sending nothing more.
    async fn closed_within(connection: &mut TcpStream, wait: Duration) -> bool {
        let mut buffer = [0; 64];
        match tokio::time::timeout(wait, connection.read(&mut buffer)).await {
            Ok(Ok(0)) => true,
            Ok(Err(error)) => error.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(Ok(_)) => panic!("the server wrote {:?}", String::from_utf8_lossy(&buffer)),
            Err(_) => false,
        }
    }

    #[tokio::test]
    async fn at_the_cap_one_that_never_asked_makes_room_then_the_longest_idle() {
        let (address, _, _shutdown, _) = start(limits(3)).await;
        let asked = async || {
            let mut connection = TcpStream::connect(address).await.unwrap();
            send(&mut connection, "GET /", "").await;
            assert!(answer(&mut connection).await.ends_with("\r\n\r\nok"));
            connection
        };
        let mut asked_first = asked().await;
        let mut asked_second = asked().await;
        let mut silent = TcpStream::connect(address).await.unwrap();

        let _fourth = asked().await;
        assert!(closed_within(&mut silent, Duration::from_secs(1)).await, "the one that never asked is closed");
        assert!(!closed_within(&mut asked_first, Duration::from_millis(200)).await, "keep-alive ones stay");
        let _fifth = asked().await;
        assert!(closed_within(&mut asked_first, Duration::from_secs(1)).await, "then the longest idle is closed");
        assert!(!closed_within(&mut asked_second, Duration::from_millis(200)).await, "the others stay");
        send(&mut asked_second, "GET /", "").await;
        assert!(answer(&mut asked_second).await.ends_with("\r\n\r\nok"));
    }

    #[tokio::test]
    async fn a_declared_body_over_the_limit_is_refused_unread() {
        let (address, _, _shutdown, _) = start(limits(2)).await;
        let mut connection = TcpStream::connect(address).await.unwrap();
        send(&mut connection, "POST /", "Content-Length: 17\r\n").await;
        let refusal = answer(&mut connection).await;
        assert!(refusal.starts_with("HTTP/1.1 413 "), "{refusal}");
        assert!(refusal.ends_with("this endpoint takes request bodies of 16 bytes at most\n"), "{refusal}");
    }

    #[tokio::test]
    async fn an_answer_too_slow_is_503() {
        let (address, _, _shutdown, _) =
            start(Limits { answer_timeout: Duration::from_millis(100), ..limits(2) }).await;
        let mut connection = TcpStream::connect(address).await.unwrap();
        send(&mut connection, "GET /slow", "").await;
        let answer = answer(&mut connection).await;
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
        assert!(answer.ends_with("no answer within 100ms\n"), "{answer}");
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_its_answer_is_dropped() {
        let (address, _, _shutdown, _) =
            start(Limits { exchange_timeout: Duration::from_millis(300), ..limits(2) }).await;
        let mut connection = TcpStream::connect(address).await.unwrap();
        send(&mut connection, "GET /big", "").await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut received = Vec::new();
        match tokio::time::timeout(Duration::from_secs(5), connection.read_to_end(&mut received)).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset),
            Err(_) => panic!("still open after {} bytes", received.len()),
        }
        assert!(received.len() < BIG_ANSWER, "the whole answer arrived");
    }

    #[tokio::test]
    async fn shutdown_closes_idle_connections_at_once_and_finishes_answers_under_way() {
        let (address, mut starts, shutdown, server) = start(limits(4)).await;
        let mut idle = TcpStream::connect(address).await.unwrap();
        let mut answering = TcpStream::connect(address).await.unwrap();
        send(&mut answering, "GET /slow", "").await;
        starts.recv().await.unwrap();

        shutdown.cancel();
        assert!(closed_within(&mut idle, Duration::from_millis(200)).await);
        assert!(answer(&mut answering).await.ends_with("\r\n\r\nslow"));
        tokio::time::timeout(Duration::from_secs(2), server).await.unwrap().unwrap();
        assert!(TcpStream::connect(address).await.is_err(), "the listener is closed");
    }
}
