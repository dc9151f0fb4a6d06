//! The HTTP API (axum): what the local database, routers and operators ask
//! an agent. Every error is JSON `{"error": {"code", "message"}}` with a
//! fitting status; nothing here can change state yet.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::shell::{Handle, Query};

/// One member as `GET /v1/members` returns it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MemberJson {
    /// The node's stable name.
    pub node_id: String,
    /// Its SWIM/QUIC address.
    pub addr: String,
    /// `alive`, `suspect` or `down`.
    pub state: String,
    /// Which start of its agent this is.
    pub generation: u64,
    /// `seed` or `member`.
    pub role: String,
    /// Locality and other labels.
    pub labels: BTreeMap<String, String>,
    /// Its agent's version.
    pub version: String,
    /// Milliseconds since this agent last received a packet from it; `null`
    /// if only heard of through others.
    pub last_heard_ms_ago: Option<u64>,
    /// Whether this row is the answering agent itself.
    pub local: bool,
}

/// A JSON error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An error with `status`, a stable machine `code`, and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the agent is stopping",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (self.status, axum::Json(body)).into_response()
    }
}

/// Serves the API on `listener` until the process exits.
pub async fn serve(listener: tokio::net::TcpListener, handle: Handle) {
    let app = Router::new()
        .route("/v1/health", get(health))
        .route("/v1/members", get(members))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(handle);
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!(%error, "http server stopped");
    }
}

async fn ask<T>(
    handle: &Handle,
    query: impl FnOnce(oneshot::Sender<T>) -> Query,
) -> Result<T, ApiError> {
    let (reply, answer) = oneshot::channel();
    handle
        .queries
        .send(query(reply))
        .await
        .map_err(|_| ApiError::unavailable())?;
    answer.await.map_err(|_| ApiError::unavailable())
}

async fn health(State(handle): State<Handle>) -> impl IntoResponse {
    axum::Json(serde_json::json!({
        "status": "ok",
        "node_id": handle.identity.node_id,
        "generation": handle.identity.generation.0,
        "role": handle.identity.meta.role,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_ms": handle.started.elapsed().as_millis() as u64,
    }))
}

async fn members(State(handle): State<Handle>) -> Result<axum::Json<Vec<MemberJson>>, ApiError> {
    let rows = ask(&handle, Query::Members).await?;
    let now = handle.started.elapsed();
    let members = rows
        .into_iter()
        .map(|row| MemberJson {
            node_id: row.identity.node_id.to_string(),
            addr: row.identity.addr.to_string(),
            state: row.state.as_str().to_string(),
            generation: row.identity.generation.0,
            role: row.identity.meta.role.to_string(),
            labels: row.identity.meta.labels.clone(),
            version: row.identity.meta.version.clone(),
            last_heard_ms_ago: row
                .last_heard
                .map(|at| now.saturating_sub(at).as_millis() as u64),
            local: row.is_local,
        })
        .collect();
    Ok(axum::Json(members))
}

async fn metrics(State(handle): State<Handle>) -> Result<Response, ApiError> {
    ask(&handle, Query::PublishMetrics).await?;
    let body = handle.metrics.render();
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response())
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no such endpoint: {}", uri.path()),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}
