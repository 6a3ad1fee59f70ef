//! The HTTP API on port 3200: `/ready`, `/metrics`, `/api/echo`, `/flush` (as Tempo's
//! ingester: write every tenant's live spans into its table now), and `/status/config` and
//! `/status/overrides` (the configuration and per-tenant limits in force). In the Kafka targets `/ready`
//! also needs the brokers reachable, and `/metrics` adds the Kafka clients' and live-store's
//! figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tracehouse_warehouse::Warehouse;

use tracehouse_ingest::kafka::KafkaStats;
use tracehouse_ingest::live_store::LiveStore;

use crate::limits::Limiter;
use crate::metrics::{ReceiverStats, StatsCollector};
use crate::overrides::Overrides;
use crate::tempo_metrics::TempoMetrics;

/// State of the admin endpoints.
pub struct AdminState {
    pub ready: AtomicBool,
    pub receivers: Arc<ReceiverStats>,
    /// `None` in the distributor, which stores nothing.
    pub warehouse: Option<Arc<Warehouse>>,
    pub flight: Arc<tracehouse_flight::FlightStats>,
    /// The Kafka clients of this process, if any.
    pub kafka: Option<Arc<KafkaStats>>,
    pub live_store: Option<Arc<LiveStore>>,
    /// The query engine's admission (its query metrics), on a querying target.
    pub queries: std::sync::OnceLock<Arc<tracehouse_sql::admission::Admission>>,
    /// The series Tempo exposes per request.
    pub tempo: Arc<TempoMetrics>,
    /// The per-tenant limits in force.
    pub overrides: Arc<Overrides>,
    /// The receivers' limiter (its live traces), on a receiving target.
    pub limiter: Option<Arc<Limiter>>,
    /// `/status/config`: the configuration, secrets masked.
    pub config_yaml: String,
}

impl AdminState {
    /// State of a process without Kafka or live-store.
    pub fn new(receivers: Arc<ReceiverStats>, warehouse: Option<Arc<Warehouse>>, overrides: Arc<Overrides>) -> Self {
        Self {
            ready: false.into(),
            receivers,
            warehouse,
            flight: Arc::default(),
            kafka: None,
            live_store: None,
            queries: std::sync::OnceLock::new(),
            tempo: Arc::default(),
            overrides,
            limiter: None,
            config_yaml: String::new(),
        }
    }
}

/// The admin router.
pub fn app(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/echo", get(|| async { "echo" }))
        .route("/flush", get(flush).post(flush))
        .route("/status/config", get(status_config))
        .route("/status/overrides", get(status_overrides))
        .route("/status/overrides/{tenant}", get(status_tenant_overrides))
        .with_state(state)
}

/// An unknown path: Tempo's plain-text 404.
pub async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, "404 page not found\n")
}

async fn ready(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    if !state.ready.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: starting or shutting down");
    }
    match &state.kafka {
        Some(k) if !k.connected.load(Ordering::Acquire) => {
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: kafka is not reachable")
        }
        _ => (StatusCode::OK, "ready"),
    }
}

async fn flush(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let Some(warehouse) = &state.warehouse else {
        return (StatusCode::NOT_FOUND, "this target holds no spans to flush".to_string());
    };
    match warehouse.flush_due(true).await {
        Ok(_) => (StatusCode::NO_CONTENT, String::new()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("flush failed: {e}")),
    }
}

const YAML: &str = "text/yaml; charset=utf-8";

async fn status_config(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, YAML)], state.config_yaml.clone())
}

async fn status_overrides(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, YAML)], state.overrides.status_yaml())
}

async fn status_tenant_overrides(
    State(state): State<Arc<AdminState>>,
    axum::extract::Path(tenant): axum::extract::Path<String>,
) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, YAML)], state.overrides.tenant_yaml(&tenant))
}

async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(StatsCollector {
        receivers: state.receivers.clone(),
        warehouse: state.warehouse.clone(),
        flight: state.flight.clone(),
        kafka: state.kafka.clone(),
        live_store: state.live_store.clone(),
        limiter: state.limiter.clone(),
    }));
    registry.register_collector(Box::new(state.overrides.clone()));
    state.tempo.register(&mut registry);
    if let Some(queries) = state.queries.get() {
        queries.register(&mut registry);
    }
    let mut body = String::with_capacity(16 << 10);
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, &registry) {
        tracing::error!(error = %e, "encoding metrics");
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            e.to_string(),
        );
    }
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body)
}

#[cfg(test)]
mod tests {

    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt;
    use tracehouse_warehouse::WarehouseConfig;

    use super::*;

    async fn get(app: Router, uri: &str) -> (StatusCode, String) {
        let resp = app
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn ready_metrics_echo() {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = Warehouse::open(WarehouseConfig {
            max_block_bytes: 1 << 20,
            max_live_bytes: 1 << 20,
            ..WarehouseConfig::local(dir.path())
        })
        .await
        .unwrap();
        let overrides = Arc::new(Overrides::load(&Default::default(), std::time::Duration::ZERO).unwrap());
        let state = Arc::new(AdminState::new(Arc::default(), Some(warehouse), overrides));
        let app = app(state.clone());
        assert_eq!(get(app.clone(), "/ready").await.0, StatusCode::SERVICE_UNAVAILABLE);
        state.ready.store(true, Ordering::Release);
        assert_eq!(get(app.clone(), "/ready").await, (StatusCode::OK, "ready".into()));
        assert_eq!(get(app.clone(), "/api/echo").await, (StatusCode::OK, "echo".into()));
        assert_eq!(get(app.clone(), "/flush").await.0, StatusCode::NO_CONTENT);
        let (status, metrics) = get(app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            metrics.contains("# TYPE tracehouse_distributor_spans_received counter"),
            "{metrics}"
        );
        assert!(metrics.contains("tracehouse_warehouse_live_bytes 0"), "{metrics}");
        assert!(metrics.contains("tempo_ingester_blocks_flushed_total 0"), "{metrics}");
        assert!(metrics.ends_with("# EOF\n"), "{metrics}");
        assert!(
            metrics.contains("tempo_runtime_config_last_reload_successful 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("tempo_limits_defaults{limit_name=\"max_bytes_per_trace\"} 5000000"),
            "{metrics}"
        );
    }
}
