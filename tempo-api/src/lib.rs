//! Tempo's HTTP and gRPC query API for Grafana's Tempo datasource, over the `sql` crate's
//! query engine.
//!
//! So far (issue #4 in progress): `GET /api/status/buildinfo`, `GET /api/search` (TraceQL `q`
//! and the older tag form), and tag autocomplete (`/api/search/tags`, `/api/v2/search/tags`,
//! `/api/search/tag/<tag>/values`, `/api/v2/search/tag/<tag>/values`), as JSON in Tempo's
//! protobuf-JSON shape.
//!
//! Architecture invariant: uses `tracehouse_sql::QueryEngine`, never its pgwire module, and
//! never the Flight crate.

pub mod search;
pub mod tags;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::collections::HashMap;

use tracehouse_sql::{DEFAULT_TENANT, QueryEngine};

/// The Tempo version tracehouse answers as: Grafana enables streaming and metrics features by
/// it (at least 2.7.0).
pub const TEMPO_COMPAT_VERSION: &str = "2.9.0";

/// What the handlers share.
pub struct ApiState {
    pub engine: Arc<QueryEngine>,
}

/// Tempo's query API routes.
pub fn app(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/api/status/buildinfo", get(buildinfo))
        .route("/api/search", get(search::handler))
        .route("/api/search/tags", get(tags::tags_v1))
        .route("/api/v2/search/tags", get(tags::tags_v2))
        .route("/api/search/tag/{tag}/values", get(tags::values_v1))
        .route("/api/v2/search/tag/{tag}/values", get(tags::values_v2))
        .with_state(state)
}

async fn buildinfo() -> Response {
    axum::Json(serde_json::json!({
        "version": TEMPO_COMPAT_VERSION,
        "revision": concat!("tracehouse-", env!("CARGO_PKG_VERSION")),
        "branch": "main",
        "buildUser": "tracehouse",
        "buildDate": "",
        "goVersion": "none (tracehouse is written in Rust)",
    }))
    .into_response()
}

/// The tenant of a request: `X-Scope-OrgID`, else the default tenant.
pub fn tenant(headers: &HeaderMap) -> String {
    headers
        .get("x-scope-orgid")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .unwrap_or(DEFAULT_TENANT)
        .to_string()
}

/// Query parameter `name` parsed as `T`; `default` when absent or empty, 400 when invalid.
pub fn param<T: std::str::FromStr>(params: &HashMap<String, String>, name: &str, default: T) -> Result<T, ApiError> {
    match params.get(name).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| ApiError(StatusCode::BAD_REQUEST, format!("invalid {name}: {v:?}"))),
    }
}

/// An error as Tempo returns it: a status and a plain-text message.
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

/// The one mapping from query-engine errors to HTTP statuses: bad queries and bad tenants are
/// the client's (400), running out of query memory is 429, the rest is ours (500).
pub fn engine_error(e: tracehouse_sql::Error) -> ApiError {
    use tracehouse_sql::Error;
    let text = e.to_string();
    let status = match &e {
        Error::Warehouse(_) => StatusCode::BAD_REQUEST,
        Error::DataFusion(df) => match tracehouse_sql::errors::sqlstate(df) {
            "53200" => StatusCode::TOO_MANY_REQUESTS,
            "XX000" => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        },
    };
    ApiError(status, text)
}
