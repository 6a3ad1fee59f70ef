//! The HTTP API on port 3200: `/ready`, `/metrics`, `/api/echo`, and `/flush` (as Tempo's
//! ingester: write every tenant's live spans into its table now). In the Kafka targets `/ready`
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

use crate::metrics::{ReceiverStats, render, render_kafka, render_live_store};

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
}

impl AdminState {
    /// State of a process without Kafka or live-store.
    pub fn new(receivers: Arc<ReceiverStats>, warehouse: Option<Arc<Warehouse>>) -> Self {
        Self {
            ready: false.into(),
            receivers,
            warehouse,
            flight: Arc::default(),
            kafka: None,
            live_store: None,
            queries: std::sync::OnceLock::new(),
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

async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let default_stats = tracehouse_warehouse::WarehouseStats::default();
    let (warehouse, wal_bytes) = match &state.warehouse {
        Some(w) => (w.stats().as_ref(), w.wal_disk_bytes()),
        None => (&default_stats, 0),
    };
    let mut body = render(&state.receivers, warehouse, wal_bytes, &state.flight);
    if let Some(kafka) = &state.kafka {
        render_kafka(&mut body, kafka);
    }
    if let Some(store) = &state.live_store {
        render_live_store(&mut body, &store.stats);
    }
    if let Some(queries) = state.queries.get() {
        let mut registry = prometheus_client::registry::Registry::default();
        queries.register(&mut registry);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut body, &registry) {
            tracing::error!(error = %e, "encoding query metrics");
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
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
        let state = Arc::new(AdminState::new(Arc::default(), Some(warehouse)));
        let app = app(state.clone());
        assert_eq!(get(app.clone(), "/ready").await.0, StatusCode::SERVICE_UNAVAILABLE);
        state.ready.store(true, Ordering::Release);
        assert_eq!(get(app.clone(), "/ready").await, (StatusCode::OK, "ready".into()));
        assert_eq!(get(app.clone(), "/api/echo").await, (StatusCode::OK, "echo".into()));
        assert_eq!(get(app.clone(), "/flush").await.0, StatusCode::NO_CONTENT);
        let (status, metrics) = get(app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            metrics.contains("# TYPE tracehouse_distributor_spans_received_total counter"),
            "{metrics}"
        );
        assert!(metrics.contains("tracehouse_warehouse_live_bytes 0"), "{metrics}");
    }
}
