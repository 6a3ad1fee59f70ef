//! Tempo's HTTP and gRPC query API for Grafana's Tempo datasource, over the `sql` crate's
//! query engine.
//!
//! - `GET /api/status/buildinfo`: the Tempo version Grafana checks.
//! - `GET /api/traces/<id>` and `/api/v2/traces/<id>`: trace by id, protobuf or JSON
//!   ([`traces`]), through the warehouse's trace-id index.
//! - `GET /api/search`: TraceQL `q` or the older tag form ([`search`]).
//! - Tag autocomplete: `/api/search/tags`, `/api/v2/search/tags`, `/api/search/tag/<tag>/values`,
//!   `/api/v2/search/tag/<tag>/values` ([`tags`]).
//! - gRPC `tempopb.StreamingQuerier` on the same port over h2c ([`grpc`]).
//!
//! Every response is a message of our `tempopb` protobuf ([`tempopb`], Tempo's package, names
//! and field numbers), as JSON in the protobuf-JSON mapping or as protobuf.
//!
//! Architecture invariant: uses `tracehouse_sql::QueryEngine`, never its pgwire module, and
//! never the Flight crate.

pub mod grpc;
pub mod metrics;
pub mod otlp;
pub mod search;
pub mod tags;
pub mod tempopb;
pub mod traces;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::collections::HashMap;
pub use tracehouse_sql::errors::ErrorKind;

use tracehouse_sql::QueryEngine;

/// The Tempo version tracehouse answers as: Grafana enables streaming and metrics features by
/// it (at least 2.7.0).
pub const TEMPO_COMPAT_VERSION: &str = "2.9.0";

/// What the handlers share.
pub struct ApiState {
    pub engine: Arc<QueryEngine>,
    pub limits: SearchLimits,
    /// Tempo's `query_frontend.metrics` bounds.
    pub metrics: tracehouse_sql::metrics::MetricsLimits,
    /// Each tenant's own bounds (Tempo's `read` overrides).
    pub tenant_limits: Arc<dyn TenantQueryLimits>,
}

/// Per-tenant query bounds (Tempo's `read` overrides), looked up at each query.
pub trait TenantQueryLimits: Send + Sync {
    /// The longest range a search may cover; zero: no bound.
    fn max_search_duration(&self, tenant: &str) -> std::time::Duration;
    /// The longest range a metrics query may cover; zero: `query_frontend.metrics.max_duration`.
    fn max_metrics_duration(&self, tenant: &str) -> std::time::Duration;
}

/// No per-tenant bounds.
pub struct NoTenantLimits;

impl TenantQueryLimits for NoTenantLimits {
    fn max_search_duration(&self, _: &str) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    fn max_metrics_duration(&self, _: &str) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

impl ApiState {
    /// `tenant`'s metrics bounds: its `max_metrics_duration`, when set, over the frontend's.
    pub fn metrics_limits(&self, tenant: &str) -> tracehouse_sql::metrics::MetricsLimits {
        let mut limits = self.metrics;
        let own = self.tenant_limits.max_metrics_duration(tenant);
        if !own.is_zero() {
            limits.max_range_ns = i64::try_from(own.as_nanos()).unwrap_or(i64::MAX);
        }
        limits
    }

    /// Refuses a search whose `start`..`end` is longer than `tenant`'s `max_search_duration`,
    /// in Tempo's words.
    pub fn check_search_range(
        &self,
        tenant: &str,
        request: &tracehouse_sql::search::SearchRequest,
    ) -> Result<(), ApiError> {
        let max = self.tenant_limits.max_search_duration(tenant);
        let (Some(start), Some(end)) = (request.start_unix_nano, request.end_unix_nano) else {
            return Ok(());
        };
        // `end` holds its whole last second.
        let (start_s, end_s) = (start / 1_000_000_000, end / 1_000_000_000 - 1);
        if max.is_zero() || end_s.saturating_sub(start_s) <= max.as_secs() as i64 {
            return Ok(());
        }
        Err(ApiError(
            ErrorKind::InvalidInput,
            format!(
                "range specified by start and end exceeds {}. received start={start_s} end={end_s}",
                tracehouse_traceql::label::go_duration(i64::try_from(max.as_nanos()).unwrap_or(i64::MAX))
            ),
        ))
    }
}

/// The largest `limit` and `spss` a search may ask for (Tempo's
/// `query_frontend.search.max_result_limit` and `max_spans_per_span_set`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchLimits {
    pub max_result_limit: usize,
    pub max_spans_per_span_set: usize,
}

impl Default for SearchLimits {
    fn default() -> Self {
        Self {
            max_result_limit: search::MAX_RESULT_LIMIT,
            max_spans_per_span_set: search::MAX_SPANS_PER_SPAN_SET,
        }
    }
}

/// Tempo's query API routes, and the StreamingQuerier gRPC service beside them (on its own
/// paths only: an unknown path is a plain 404, as Tempo answers, which Grafana's feature
/// probes read as "not there").
pub fn app(state: Arc<ApiState>) -> Router {
    let grpc = grpc::service(state.clone());
    Router::new()
        .route("/api/status/buildinfo", get(buildinfo))
        .route("/api/traces/{id}", get(traces::v1))
        .route("/api/v2/traces/{id}", get(traces::v2))
        .route("/api/search", get(search::handler))
        .route("/api/metrics/query_range", get(metrics::query_range))
        .route("/api/metrics/query", get(metrics::query_instant))
        .route("/api/search/tags", get(tags::tags_v1))
        .route("/api/v2/search/tags", get(tags::tags_v2))
        .route("/api/search/tag/{tag}/values", get(tags::values_v1))
        .route("/api/v2/search/tag/{tag}/values", get(tags::values_v2))
        .with_state(state)
        .route_service(GRPC_PATHS, grpc)
}

/// The paths of the StreamingQuerier gRPC service.
const GRPC_PATHS: &str = "/tempopb.StreamingQuerier/{*method}";

/// `value` as a JSON response (protobuf JSON for `tempopb` messages).
pub fn json<T: serde::Serialize>(value: &T) -> Response {
    json_listing(value, None)
}

/// `value` as JSON with its top-level list `list` present even when empty: protobuf JSON
/// omits empty lists, but Tempo's answers carry them as `[]` and Grafana reads them unchecked.
pub fn json_listing<T: serde::Serialize>(value: &T, list: Option<&str>) -> Response {
    let encoded = serde_json::to_value(value).and_then(|mut v| {
        if let (Some(key), serde_json::Value::Object(map)) = (list, &mut v) {
            map.entry(key).or_insert_with(|| serde_json::Value::Array(Vec::new()));
        }
        serde_json::to_vec(&v)
    });
    match encoded {
        Ok(body) => ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => ApiError(ErrorKind::Internal, format!("encoding the response: {e}")).into_response(),
    }
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
    tracehouse_sql::tenant_or_default(headers.get(tracehouse_sql::TENANT_HEADER).map(|v| v.as_bytes()))
}

/// Query parameter `name` parsed as `T`; `default` when absent or empty, 400 when invalid.
pub fn param<T: std::str::FromStr>(params: &HashMap<String, String>, name: &str, default: T) -> Result<T, ApiError> {
    match params.get(name).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| ApiError(ErrorKind::InvalidInput, format!("invalid {name}: {v:?}"))),
    }
}

/// An error as Tempo returns it: a kind (whose status on HTTP and gRPC comes from
/// [`ErrorKind`]'s one table) and a plain-text message.
#[derive(Debug)]
pub struct ApiError(pub ErrorKind, pub String);

impl ApiError {
    /// The HTTP status of this error.
    pub fn http_status(&self) -> StatusCode {
        StatusCode::from_u16(self.0.http_status()).expect("the kind table holds valid statuses")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.http_status(), self.1).into_response()
    }
}

/// `query`'s answer, run as one admitted query of `tenant` on the Tempo front (its slot among
/// the tenant's concurrent queries, its metrics, the slow-query log: [`tracehouse_sql::admission`]).
pub async fn admitted<T>(
    state: &ApiState,
    tenant: &str,
    text: &str,
    query: impl std::future::Future<Output = Result<T, tracehouse_sql::Error>>,
) -> Result<T, ApiError> {
    let ticket = (state.engine)
        .admit(tracehouse_sql::admission::Front::Tempo, tenant, text)
        .map_err(engine_error)?;
    ticket.finish(query.await).map_err(engine_error)
}

/// A query-engine error as Tempo's API answers it.
pub fn engine_error(e: tracehouse_sql::Error) -> ApiError {
    ApiError(e.kind(), e.to_string())
}
