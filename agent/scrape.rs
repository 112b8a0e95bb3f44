//! The local scrape endpoint, for sites that can be scraped: `/metrics` serves the latest
//! snapshot's text and the agent's own metrics, `/` is the status page, `/healthz` says whether
//! the last tick succeeded, and (with `enable_reload`) `POST /-/reload` asks the run loop to
//! re-read the config. A scrape never queries the database. Every answer passes `common::redact`. `http_server` serves it, within
//! bounds no client can push.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::common::redact::redact;
use crate::config::Config;
use crate::exposition::CONTENT_TYPE;
use crate::http_server::{self, Limits};
use crate::telemetry::Telemetry;

/// A request to re-read the config (SIGHUP, or `POST /-/reload`), with where to say how it went.
#[derive(Debug)]
pub(crate) struct ReloadRequest {
    pub(crate) respond: Option<oneshot::Sender<Result<(), String>>>,
}

/// `POST /-/reload` takes no body: one this long at most (`{}`, an empty form) is read and
/// ignored, a longer one refused.
const RELOAD_BODY_LIMIT: usize = 1024;
/// How long `POST /-/reload` waits for the run loop, which takes a reload between ticks.
const RELOAD_WAIT: Duration = Duration::from_secs(15);

/// Serves until `shutdown` is cancelled, then finishes the requests under way (idle connections
/// close at once). `config` is the config in force, which a reload replaces. With `reload`, also
/// serves `POST /-/reload`, answering once the reload is done or refused.
pub(crate) async fn serve(
    listener: TcpListener,
    telemetry: Arc<Telemetry>,
    config: watch::Receiver<Arc<Config>>,
    reload: Option<mpsc::Sender<ReloadRequest>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut router =
        Router::new().route("/", get(status_page)).route("/metrics", get(metrics)).route("/healthz", get(healthz));
    if reload.is_some() {
        router = router.route("/-/reload", post(reload_config));
    }
    let router = router.with_state(Endpoint { telemetry, config, reload });
    http_server::serve(listener, router, Limits::for_this_process(), shutdown).await;
    Ok(())
}

#[derive(Clone)]
struct Endpoint {
    telemetry: Arc<Telemetry>,
    config: watch::Receiver<Arc<Config>>,
    reload: Option<mpsc::Sender<ReloadRequest>>,
}

impl Endpoint {
    fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }
}

async fn metrics(State(endpoint): State<Endpoint>) -> impl IntoResponse {
    let page = endpoint.telemetry.render(&endpoint.config().labels, Utc::now());
    // Label values are redacted as they are written; a metric's name never is.
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], page)
}

async fn status_page(State(endpoint): State<Endpoint>) -> impl IntoResponse {
    let page = crate::status_page::render(&endpoint.config(), &endpoint.telemetry.view(), Utc::now());
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page)
}

async fn healthz(State(endpoint): State<Endpoint>) -> impl IntoResponse {
    match endpoint.telemetry.health().describe(Utc::now()) {
        (true, _) => (StatusCode::OK, "ok\n".to_owned()),
        (false, reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{}\n", redact(&reason))),
    }
}

async fn reload_config(State(endpoint): State<Endpoint>, body: Body) -> Response {
    // A declared length is refused before any of the body is read.
    let too_long = body.size_hint().lower() > RELOAD_BODY_LIMIT as u64;
    if too_long || axum::body::to_bytes(body, RELOAD_BODY_LIMIT).await.is_err() {
        let message = format!("POST /-/reload takes no body ({RELOAD_BODY_LIMIT} bytes at most are ignored)\n");
        return (StatusCode::PAYLOAD_TOO_LARGE, message).into_response();
    }
    let (respond, outcome) = oneshot::channel();
    let reloaded = tokio::time::timeout(RELOAD_WAIT, async {
        let sent = match &endpoint.reload {
            Some(reload) => reload.send(ReloadRequest { respond: Some(respond) }).await.is_ok(),
            None => false,
        };
        (sent, outcome.await)
    });
    let answer = match reloaded.await {
        Ok((true, Ok(Ok(())))) => (StatusCode::OK, "reloaded\n".to_owned()),
        Ok((true, Ok(Err(error)))) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("reload refused: {}\n", redact(&error)))
        }
        Ok(_) => (StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping\n".to_owned()),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "no reload within {RELOAD_WAIT:?}: the agent reloads between ticks, and a tick is taking long; the \
                 log and apimetrics_agent_config_last_reload_successful say how a reload went\n"
            ),
        ),
    };
    answer.into_response()
}
