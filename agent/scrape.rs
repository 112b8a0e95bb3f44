//! The local scrape endpoint, for sites that can be scraped: `/metrics` renders the latest
//! snapshot and the agent's own metrics, `/healthz` says whether the last tick succeeded.
//! A scrape never queries the database.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::Utc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::exposition::CONTENT_TYPE;
use crate::telemetry::{AgentState, Health};

/// Serves until `shutdown` is cancelled, then finishes the requests under way.
pub async fn serve(listener: TcpListener, state: Arc<AgentState>, shutdown: CancellationToken) -> std::io::Result<()> {
    let router = Router::new().route("/metrics", get(metrics)).route("/healthz", get(healthz)).with_state(state);
    axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

async fn metrics(State(state): State<Arc<AgentState>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], state.render(Utc::now()))
}

async fn healthz(State(state): State<Arc<AgentState>>) -> impl IntoResponse {
    match state.health() {
        Health::Healthy => (StatusCode::OK, "ok\n".to_owned()),
        Health::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting: no tick has finished yet\n".to_owned()),
        Health::Failing(error) => (StatusCode::SERVICE_UNAVAILABLE, format!("last tick failed: {error}\n")),
    }
}
