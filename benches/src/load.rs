//! Loads tracegen spans into a real warehouse for in-process benchmarks: Delta tables on local
//! disk, flushed every `flush_spans` spans (one set of files per flush, as blocks in Tempo),
//! everything flushed at the end (or, with `flush_spans` 0, everything kept live); the same
//! requests again, to send elsewhere. And the pieces the benchmarks share to query it over
//! HTTP: Tempo's API on a local port, a client with a tenant.

use std::collections::HashMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tracehouse_ingest::otlp::request_to_batch;
use tracehouse_warehouse::{Warehouse, WarehouseConfig};

use crate::tracegen::{TraceGen, TraceGenConfig};

/// What was loaded: the warehouse, the span count, and each trace's first start (unix ns).
pub struct Loaded {
    pub warehouse: Arc<Warehouse>,
    pub spans: usize,
    pub trace_starts: HashMap<Vec<u8>, u64>,
}

/// Loads at least `spans` spans for `tenant` under `dir`.
pub async fn load(dir: &std::path::Path, tenant: &str, spans: usize, flush_spans: usize) -> Loaded {
    load_with(dir, tenant, spans, flush_spans, TraceGenConfig::default()).await
}

/// [`load`] with the generator's `config` (send the same spans elsewhere with
/// [`each_request`]).
pub async fn load_with(
    dir: &std::path::Path,
    tenant: &str,
    spans: usize,
    flush_spans: usize,
    config: TraceGenConfig,
) -> Loaded {
    // The spans held live at once (all of them without flushes) fit, whatever the load.
    let held = match flush_spans {
        0 => spans,
        _ => flush_spans.min(spans),
    };
    let bounds = WarehouseConfig {
        max_live_bytes: (1 << 30).max(held.saturating_mul(MAX_LIVE_BYTES_PER_SPAN)),
        ..WarehouseConfig::local(dir)
    };
    let warehouse = Warehouse::open(bounds).await.expect("open warehouse");
    let handle = warehouse.tenant(tenant).expect("tenant");
    let mut since_flush = 0;
    let mut trace_starts: HashMap<Vec<u8>, u64> = HashMap::new();
    let loaded = each_request(spans, flush_spans, config, async |req, n| {
        for span in req
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
        {
            let start = trace_starts.entry(span.trace_id.clone()).or_insert(u64::MAX);
            *start = (*start).min(span.start_time_unix_nano);
        }
        warehouse
            .append(tenant, request_to_batch(req).expect("convert"))
            .await
            .expect("append");
        since_flush += n;
        if flush_spans > 0 && since_flush >= flush_spans {
            warehouse.flush_tenant(&handle).await.expect("flush");
            since_flush = 0;
        }
    })
    .await;
    let live_bytes = warehouse.stats().live_bytes.load(std::sync::atomic::Ordering::Acquire);
    if live_bytes > 0 {
        eprintln!("live: {live_bytes} bytes, {} per span", live_bytes / since_flush.max(1));
    }
    if flush_spans > 0 {
        warehouse.flush_tenant(&handle).await.expect("flush");
    }
    Loaded {
        warehouse,
        spans: loaded,
        trace_starts,
    }
}

/// Live bytes a load allows per span it holds live at once (spans in Arrow, builders' spare
/// capacity included, and their index: about 1,900 for tracegen's).
const MAX_LIVE_BYTES_PER_SPAN: usize = 4_096;

/// Spans per generated request (fewer when a flush comes sooner).
const REQUEST_SPANS: usize = 5_000;

/// Spans per request of a load that flushes every `flush_spans` (0: never).
fn request_spans(flush_spans: usize) -> usize {
    match flush_spans {
        0 => REQUEST_SPANS,
        _ => REQUEST_SPANS.min(flush_spans),
    }
}

/// Hands `each` the requests of a load of `spans` spans flushed every `flush_spans` (as
/// [`load_with`] makes them, in its order) and their span counts; returns the spans made.
/// The same arguments give the same spans (to send to another backend after a load).
pub async fn each_request(
    spans: usize,
    flush_spans: usize,
    config: TraceGenConfig,
    mut each: impl AsyncFnMut(&ExportTraceServiceRequest, usize),
) -> usize {
    let mut generator = TraceGen::new(config);
    let mut made = 0;
    while made < spans {
        let (req, n) = generator.request(request_spans(flush_spans));
        each(&req, n).await;
        made += n;
    }
    made
}

/// Serves Tempo's query API over `engine` on a local port; returns its base URL.
pub async fn serve_tempo_api(engine: Arc<tracehouse_sql::QueryEngine>) -> String {
    let app = tracehouse_tempo_api::app(Arc::new(tracehouse_tempo_api::ApiState {
        engine,
        limits: tracehouse_tempo_api::SearchLimits::default(),
        metrics: tracehouse_sql::metrics::MetricsLimits::default(),
        tenant_limits: Arc::new(tracehouse_tempo_api::NoTenantLimits),
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    base
}

/// An HTTP client that sends `tenant` in `X-Scope-OrgID` with every request.
pub fn tenant_client(tenant: &'static str) -> reqwest::Client {
    reqwest::Client::builder()
        .default_headers(reqwest::header::HeaderMap::from_iter([(
            reqwest::header::HeaderName::from_static("x-scope-orgid"),
            reqwest::header::HeaderValue::from_static(tenant),
        )]))
        .build()
        .expect("client")
}
