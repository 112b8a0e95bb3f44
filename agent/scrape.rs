//! The local scrape endpoint, for sites that can be scraped: `/metrics` renders the latest
//! snapshot and the agent's own metrics, `/` is the status page, `/healthz` says whether the last tick succeeded, and
//! (with `enable_reload`) `POST /-/reload` re-reads the config. A scrape never queries the
//! database.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use chrono::Utc;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::exposition::CONTENT_TYPE;
use crate::run::ReloadRequest;
use crate::telemetry::{AgentState, Health};

/// Serves until `shutdown` is cancelled, then finishes the requests under way. With `reload`,
/// also serves `POST /-/reload`, answering once the reload is done or refused.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AgentState>,
    reload: Option<mpsc::Sender<ReloadRequest>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut router =
        Router::new().route("/", get(status_page)).route("/metrics", get(metrics)).route("/healthz", get(healthz));
    if reload.is_some() {
        router = router.route("/-/reload", post(reload_config));
    }
    let router = router.with_state(Endpoint { state, reload });
    axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

#[derive(Clone)]
struct Endpoint {
    state: Arc<AgentState>,
    reload: Option<mpsc::Sender<ReloadRequest>>,
}

async fn metrics(State(endpoint): State<Endpoint>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], endpoint.state.render(Utc::now()))
}

async fn status_page(State(endpoint): State<Endpoint>) -> impl IntoResponse {
    let page = crate::status_page::render(&endpoint.state.config(), &endpoint.state.view(), Utc::now());
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page)
}

async fn healthz(State(endpoint): State<Endpoint>) -> impl IntoResponse {
    match endpoint.state.health() {
        Health::Healthy => (StatusCode::OK, "ok\n".to_owned()),
        Health::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting: no tick has finished yet\n".to_owned()),
        Health::Failing(error) => (StatusCode::SERVICE_UNAVAILABLE, format!("last tick failed: {error}\n")),
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
