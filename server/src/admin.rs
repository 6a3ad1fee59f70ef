//! The HTTP API on port 3200: `/ready`, `/metrics`, `/api/echo`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tracehouse_warehouse::Warehouse;

use crate::metrics::{ReceiverStats, render};

/// State of the admin endpoints.
pub struct AdminState {
    pub ready: AtomicBool,
    pub receivers: Arc<ReceiverStats>,
    pub warehouse: Arc<Warehouse>,
}

/// The admin router.
pub fn app(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/echo", get(|| async { "echo" }))
        .with_state(state)
}

async fn ready(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: starting or shutting down")
    }
}

async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let body = render(
        &state.receivers,
        state.warehouse.stats(),
        state.warehouse.wal_disk_bytes(),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
