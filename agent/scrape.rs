//! The local scrape endpoint, for sites that can be scraped: `/metrics` serves the latest
//! snapshot's text and the agent's own metrics, `/` is the status page, `/healthz` says whether
//! the last tick succeeded, and (with `enable_reload`) `POST /-/reload` asks the run loop to
//! re-read the config. A scrape never queries the database.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use chrono::Utc;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::exposition::CONTENT_TYPE;
use crate::telemetry::Telemetry;

/// A request to re-read the config (SIGHUP, or `POST /-/reload`), with where to say how it went.
#[derive(Debug)]
pub(crate) struct ReloadRequest {
    pub(crate) respond: Option<oneshot::Sender<Result<(), String>>>,
}

/// Serves until `shutdown` is cancelled, then finishes the requests under way. `config` is the
/// config in force, which a reload replaces. With `reload`, also serves `POST /-/reload`,
/// answering once the reload is done or refused.
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
    axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await
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
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], page)
}

async fn status_page(State(endpoint): State<Endpoint>) -> impl IntoResponse {
    let page = crate::status_page::render(&endpoint.config(), &endpoint.telemetry.view(), Utc::now());
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page)
}

async fn healthz(State(endpoint): State<Endpoint>) -> impl IntoResponse {
    match endpoint.telemetry.health().describe(Utc::now()) {
        (true, _) => (StatusCode::OK, "ok\n".to_owned()),
        (false, reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

async fn reload_config(State(endpoint): State<Endpoint>) -> impl IntoResponse {
    let (respond, outcome) = oneshot::channel();
    let sent = match &endpoint.reload {
        Some(reload) => reload.send(ReloadRequest { respond: Some(respond) }).await.is_ok(),
        None => false,
    };
    match (sent, outcome.await) {
        (true, Ok(Ok(()))) => (StatusCode::OK, "reloaded\n".to_owned()),
        (true, Ok(Err(error))) => (StatusCode::INTERNAL_SERVER_ERROR, format!("reload refused: {error}\n")),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping\n".to_owned()),
    }
}
