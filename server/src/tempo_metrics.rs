//! The per-request series Tempo exposes, with Tempo's names and labels, so the Tempo mixin's
//! dashboards and alerts read them unchanged: spans and bytes received and spans discarded per
//! tenant, spans accepted and refused per receiver, the push duration,
//! `tempo_request_duration_seconds` by route and status for every HTTP request and gRPC call,
//! and the query frontend's queries per tenant and op (`tempo_query_frontend_queries_total`,
//! `..._within_slo_total`, which the mixin's tenant dashboard and SLO burn rates read).

use std::collections::HashSet;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// Tenants with series of their own; spans of further tenants are counted under `other`.
pub const MAX_TENANT_SERIES: usize = 4096;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabel {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DiscardLabels {
    reason: String,
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceiverLabels {
    receiver: String,
    transport: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLabels {
    tenant: String,
    op: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status_code: String,
    ws: String,
}

/// A counter exposed without the `_total` suffix, as Tempo's `tempo_receiver_*_spans` are
/// (OpenMetrics names such a series `unknown`).
#[derive(Debug, Default, Clone)]
struct PlainCounter(Counter);

impl TypedMetric for PlainCounter {
    const TYPE: MetricType = MetricType::Unknown;
}

impl EncodeMetric for PlainCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        encoder.encode_gauge(&self.0.get())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Unknown
    }
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Why spans were discarded: Tempo's `reason` label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscardReason {
    RateLimited,
    TraceTooLarge,
    LiveTracesExceeded,
    InvalidTraceId,
}

impl DiscardReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::TraceTooLarge => "trace_too_large",
            Self::LiveTracesExceeded => "live_traces_exceeded",
            Self::InvalidTraceId => "invalid_trace_id",
        }
    }
}

/// Tempo's per-request series.
#[derive(Debug)]
pub struct TempoMetrics {
    spans_received: Family<TenantLabel, Counter>,
    bytes_received: Family<TenantLabel, Counter>,
    ingress_bytes: Family<TenantLabel, Counter>,
    discarded: Family<DiscardLabels, Counter>,
    accepted: Family<ReceiverLabels, PlainCounter>,
    refused: Family<ReceiverLabels, PlainCounter>,
    push_duration: Histogram,
    request_duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
    queries: Family<QueryLabels, Counter>,
    queries_within_slo: Family<QueryLabels, Counter>,
    slos: std::sync::OnceLock<QuerySlos>,
    tenants: Mutex<HashSet<String>>,
}

/// Tempo's duration SLO of each query op; zero: none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuerySlos {
    pub traces: Duration,
    pub search: Duration,
    pub metadata: Duration,
    pub metrics: Duration,
}

impl QuerySlos {
    fn of(&self, op: &str) -> Duration {
        match op {
            "traces" => self.traces,
            "search" => self.search,
            "metadata" => self.metadata,
            _ => self.metrics,
        }
    }
}

impl Default for TempoMetrics {
    fn default() -> Self {
        Self {
            spans_received: Family::default(),
            bytes_received: Family::default(),
            ingress_bytes: Family::default(),
            discarded: Family::default(),
            accepted: Family::default(),
            refused: Family::default(),
            push_duration: latency_histogram(),
            request_duration: Family::new_with_constructor(latency_histogram),
            queries: Family::default(),
            queries_within_slo: Family::default(),
            slos: std::sync::OnceLock::new(),
            tenants: Mutex::new(HashSet::new()),
        }
    }
}

impl TempoMetrics {
    /// Adds every series to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "tempo_distributor_spans_received",
            "The total number of spans received per tenant",
            self.spans_received.clone(),
        );
        registry.register(
            "tempo_distributor_bytes_received",
            "The total number of proto bytes received per tenant, after limits",
            self.bytes_received.clone(),
        );
        registry.register(
            "tempo_distributor_ingress_bytes",
            "The total number of bytes received per tenant, before limits",
            self.ingress_bytes.clone(),
        );
        registry.register(
            "tempo_discarded_spans",
            "The total number of samples that were discarded.",
            self.discarded.clone(),
        );
        registry.register(
            "tempo_receiver_accepted_spans",
            "Number of spans successfully pushed into the pipeline.",
            self.accepted.clone(),
        );
        registry.register(
            "tempo_receiver_refused_spans",
            "Number of spans that could not be pushed into the pipeline.",
            self.refused.clone(),
        );
        registry.register(
            "tempo_distributor_push_duration_seconds",
            "Records the amount of time to push a batch to the ingester.",
            self.push_duration.clone(),
        );
        registry.register(
            "tempo_request_duration_seconds",
            "Time (in seconds) spent serving HTTP requests.",
            self.request_duration.clone(),
        );
        registry.register(
            "tempo_query_frontend_queries",
            "Total queries received per tenant.",
            self.queries.clone(),
        );
        registry.register(
            "tempo_query_frontend_queries_within_slo",
            "Total Queries within SLO per tenant",
            self.queries_within_slo.clone(),
        );
    }

    /// `tenant`, or `other` past [`MAX_TENANT_SERIES`] tenants.
    fn tenant(&self, tenant: &str) -> String {
        let mut known = self.tenants.lock().expect("tenants lock");
        if known.contains(tenant) {
            return tenant.to_string();
        }
        if known.len() >= MAX_TENANT_SERIES {
            return "other".to_string();
        }
        known.insert(tenant.to_string());
        tenant.to_string()
    }

    /// A request of `bytes` (as sent) arrived for `tenant`.
    pub fn ingress(&self, tenant: &str, bytes: u64) {
        let tenant = self.tenant(tenant);
        self.ingress_bytes.get_or_create(&TenantLabel { tenant }).inc_by(bytes);
    }

    /// `spans` of `bytes` (OTLP protobuf) were accepted for `tenant` through `receiver`.
    pub fn accepted(&self, receiver: &str, transport: &str, tenant: &str, spans: u64, bytes: u64) {
        let tenant = TenantLabel {
            tenant: self.tenant(tenant),
        };
        self.spans_received.get_or_create(&tenant).inc_by(spans);
        self.bytes_received.get_or_create(&tenant).inc_by(bytes);
        let labels = receiver_labels(receiver, transport);
        self.accepted.get_or_create(&labels).0.inc_by(spans);
    }

    /// `spans` were refused through `receiver` (nothing of them stored).
    pub fn refused(&self, receiver: &str, transport: &str, spans: u64) {
        let labels = receiver_labels(receiver, transport);
        self.refused.get_or_create(&labels).0.inc_by(spans);
    }

    /// `spans` of `tenant` were discarded for `reason`.
    pub fn discarded(&self, tenant: &str, reason: DiscardReason, spans: u64) {
        let labels = DiscardLabels {
            reason: reason.as_str().to_string(),
            tenant: self.tenant(tenant),
        };
        self.discarded.get_or_create(&labels).inc_by(spans);
    }

    /// Sets the duration SLOs (once, at start; none before).
    pub fn set_slos(&self, slos: QuerySlos) {
        let _ = self.slos.set(slos);
    }

    /// A query of `op` (Tempo's `traces`, `search`, `metadata`, `metrics`) by `tenant` ended
    /// with `outcome` after `took`. As Tempo counts them: a cancelled query is `canceled`,
    /// anything else `completed`; within the SLO unless the server failed or, with a duration
    /// SLO set for the op, it took longer.
    fn query_ended(&self, tenant: &str, op: &'static str, outcome: Outcome, took: Duration) {
        let result = if outcome == Outcome::Canceled {
            "canceled"
        } else {
            "completed"
        };
        let labels = QueryLabels {
            tenant: self.tenant(tenant),
            op: op.to_string(),
            result: result.to_string(),
        };
        self.queries.get_or_create(&labels).inc();
        let slo = self.slos.get().copied().unwrap_or_default().of(op);
        let in_time = slo.is_zero() || took < slo || outcome == Outcome::Canceled;
        if outcome != Outcome::ServerError && in_time {
            self.queries_within_slo.get_or_create(&labels).inc();
        }
    }

    /// One push took `elapsed`.
    pub fn push_took(&self, elapsed: Duration) {
        self.push_duration.observe(elapsed.as_secs_f64());
    }
}

/// Tempo's labels: its receivers are named `TYPE/TYPE_receiver` (`otlp/otlp_receiver`).
fn receiver_labels(receiver: &str, transport: &str) -> ReceiverLabels {
    ReceiverLabels {
        receiver: format!("{receiver}/{receiver}_receiver"),
        transport: transport.to_string(),
    }
}

/// How a query ended, for Tempo's query counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Answered, or refused for the caller's own fault (400, 404, 429).
    Done,
    Canceled,
    ServerError,
}

impl Outcome {
    fn of_http(status: u16) -> Self {
        match status {
            499 => Self::Canceled,
            500.. => Self::ServerError,
            _ => Self::Done,
        }
    }

    /// From a gRPC status code; Tempo counts InvalidArgument, NotFound and ResourceExhausted
    /// within the SLO.
    fn of_grpc(code: i32) -> Self {
        match code {
            1 => Self::Canceled,
            0 | 3 | 5 | 8 => Self::Done,
            _ => Self::ServerError,
        }
    }
}

/// Tempo's query op of a request path (an HTTP route or a gRPC full method), if a query.
fn query_op(path: &str) -> Option<&'static str> {
    let path = path.strip_prefix("/tempopb.StreamingQuerier/").unwrap_or(path);
    if path.starts_with("/api/traces/") || path.starts_with("/api/v2/traces/") {
        Some("traces")
    } else if path == "/api/search" || path == "Search" {
        Some("search")
    } else if path.starts_with("/api/search/tag")
        || path.starts_with("/api/v2/search/tag")
        || path.starts_with("SearchTag")
    {
        Some("metadata")
    } else if path.starts_with("/api/metrics/") || path.starts_with("MetricsQuery") {
        Some("metrics")
    } else {
        None
    }
}

/// A route template as Tempo labels it: `/api/traces/{trace_id}` is `api_traces_traceid`.
pub fn route_label(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    for segment in template.split('/').filter(|s| !s.is_empty()) {
        if !out.is_empty() {
            out.push('_');
        }
        let param = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}'));
        match param {
            Some(name) => out.extend(name.chars().filter(char::is_ascii_alphanumeric)),
            None => out.extend(segment.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })),
        }
    }
    let out = out.trim_matches('_').to_ascii_lowercase();
    if out.is_empty() { "root".to_string() } else { out }
}

/// Middleware: observes every HTTP request in `tempo_request_duration_seconds`. A gRPC call
/// (the StreamingQuerier on the HTTP port) is labelled as Tempo's gRPC server labels it:
/// method `gRPC`, the full method as the route, `success` / `cancel` / `error` as the status,
/// observed when its last message or its trailers are sent. Queries (trace by id, search, tags,
/// metrics; HTTP or gRPC) are also counted per tenant and op.
pub async fn track_requests(
    State(metrics): State<std::sync::Arc<TempoMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let grpc =
        (headers.get(axum::http::header::CONTENT_TYPE)).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let path = request.uri().path();
    let query = query_op(path).map(|op| (op, query_tenant(headers)));
    let route = if grpc {
        path.to_string()
    } else {
        (request.extensions().get::<MatchedPath>()).map_or_else(|| "other".to_string(), |p| route_label(p.as_str()))
    };
    let method = if grpc {
        "gRPC".to_string()
    } else {
        request.method().to_string()
    };
    let ws = headers.contains_key(axum::http::header::UPGRADE);
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let labels = RequestLabels {
        method,
        route,
        status_code: response.status().as_u16().to_string(),
        ws: ws.to_string(),
    };
    if !grpc || !response.status().is_success() {
        (metrics.request_duration.get_or_create(&labels)).observe(started.elapsed().as_secs_f64());
        if let Some((op, Some(tenant))) = &query {
            let outcome = Outcome::of_http(response.status().as_u16());
            metrics.query_ended(tenant, op, outcome, started.elapsed());
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let observed = GrpcObserved {
        inner: body,
        metrics,
        labels: Some(labels),
        query: query.and_then(|(op, tenant)| Some((op, tenant?))),
        started,
        // A trailers-only answer (an error before any message) has its status in the headers.
        code: grpc_code(&parts.headers),
    };
    Response::from_parts(parts, axum::body::Body::new(observed))
}

/// The tenant a query is for (`X-Scope-OrgID`, or Tempo's default), when it is a valid id.
fn query_tenant(headers: &axum::http::HeaderMap) -> Option<String> {
    let tenant = headers
        .get("x-scope-orgid")
        .map_or(Some("single-tenant"), |v| v.to_str().ok())?;
    tracehouse_warehouse::storage::validate_tenant(tenant).ok()?;
    Some(tenant.to_string())
}

/// A gRPC call's `grpc-status`, when present.
fn grpc_code(headers: &axum::http::HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Tempo's status label of a gRPC status code.
fn grpc_status_label(code: i32) -> &'static str {
    match code {
        0 => "success",
        1 => "cancel",
        _ => "error",
    }
}

/// A gRPC response body that observes the call's duration and status when it ends: at its
/// trailers, at its end, or when dropped unfinished (the client went away: `cancel`).
struct GrpcObserved {
    inner: axum::body::Body,
    metrics: std::sync::Arc<TempoMetrics>,
    labels: Option<RequestLabels>,
    query: Option<(&'static str, String)>,
    started: std::time::Instant,
    code: Option<i32>,
}

/// gRPC's `Unknown`: a stream that ended with no status.
const GRPC_UNKNOWN: i32 = 2;
/// gRPC's `Cancelled`.
const GRPC_CANCELLED: i32 = 1;

impl GrpcObserved {
    fn observe(&mut self, fallback: i32) {
        let Some(mut labels) = self.labels.take() else {
            return;
        };
        let code = self.code.unwrap_or(fallback);
        labels.status_code = grpc_status_label(code).to_string();
        let histogram = self.metrics.request_duration.get_or_create(&labels);
        histogram.observe(self.started.elapsed().as_secs_f64());
        if let Some((op, tenant)) = &self.query {
            self.metrics
                .query_ended(tenant, op, Outcome::of_grpc(code), self.started.elapsed());
        }
    }
}

impl http_body::Body for GrpcObserved {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_code) {
                    self.code = Some(code);
                    self.observe(GRPC_UNKNOWN);
                }
            }
            std::task::Poll::Ready(Some(Err(_)) | None) => self.observe(GRPC_UNKNOWN),
            std::task::Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for GrpcObserved {
    fn drop(&mut self) {
        self.observe(GRPC_CANCELLED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_labelled_as_tempo_labels_them() {
        assert_eq!(route_label("/api/traces/{trace_id}"), "api_traces_traceid");
        assert_eq!(
            route_label("/api/v2/search/tag/{tag_name}/values"),
            "api_v2_search_tag_tagname_values"
        );
        assert_eq!(route_label("/api/echo"), "api_echo");
        assert_eq!(route_label("/"), "root");
    }

    #[test]
    fn queries_are_counted_under_tempos_ops() {
        assert_eq!(query_op("/api/traces/abc"), Some("traces"));
        assert_eq!(query_op("/api/v2/traces/abc"), Some("traces"));
        assert_eq!(query_op("/api/search"), Some("search"));
        assert_eq!(query_op("/tempopb.StreamingQuerier/Search"), Some("search"));
        assert_eq!(query_op("/api/v2/search/tag/x/values"), Some("metadata"));
        assert_eq!(
            query_op("/tempopb.StreamingQuerier/SearchTagValuesV2"),
            Some("metadata")
        );
        assert_eq!(query_op("/api/metrics/query_range"), Some("metrics"));
        assert_eq!(query_op("/tempopb.StreamingQuerier/MetricsQueryRange"), Some("metrics"));
        assert_eq!(query_op("/v1/traces"), None);
        assert_eq!(query_op("/metrics"), None);
        assert_eq!(Outcome::of_http(429), Outcome::Done);
        assert_eq!(Outcome::of_http(499), Outcome::Canceled);
        assert_eq!(Outcome::of_http(503), Outcome::ServerError);
        assert_eq!(Outcome::of_grpc(8), Outcome::Done);
        assert_eq!(Outcome::of_grpc(13), Outcome::ServerError);
    }

    #[test]
    fn a_duration_slo_counts_only_the_queries_within_it() {
        let m = TempoMetrics::default();
        let mut registry = Registry::default();
        m.register(&mut registry);
        m.set_slos(QuerySlos {
            search: Duration::from_secs(1),
            ..QuerySlos::default()
        });
        let ms = Duration::from_millis;
        m.query_ended("t", "search", Outcome::Done, ms(500));
        m.query_ended("t", "search", Outcome::Done, ms(1500));
        m.query_ended("t", "search", Outcome::ServerError, ms(10));
        m.query_ended("t", "metadata", Outcome::Done, ms(1500));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let value = |series: &str| -> &str {
            let line = text
                .lines()
                .find(|l| l.starts_with(series))
                .unwrap_or_else(|| panic!("{series}: {text}"));
            line.rsplit(' ').next().unwrap()
        };
        let labels = |op: &str| format!("{{tenant=\"t\",op=\"{op}\",result=\"completed\"}}");
        assert_eq!(
            value(&format!("tempo_query_frontend_queries_total{}", labels("search"))),
            "3"
        );
        let within = |op: &str| format!("tempo_query_frontend_queries_within_slo_total{}", labels(op));
        assert_eq!(value(&within("search")), "1", "under 1s and not failed");
        assert_eq!(value(&within("metadata")), "1", "no SLO for metadata");
    }

    #[test]
    fn tempo_names_encode_as_tempo_exposes_them() {
        let m = TempoMetrics::default();
        let mut registry = Registry::default();
        m.register(&mut registry);
        m.accepted("jaeger", "grpc", "t1", 3, 100);
        m.discarded("t1", DiscardReason::RateLimited, 2);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("tempo_distributor_spans_received_total{tenant=\"t1\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("tempo_distributor_bytes_received_total{tenant=\"t1\"} 100"),
            "{text}"
        );
        assert!(
            text.contains("tempo_receiver_accepted_spans{receiver=\"jaeger/jaeger_receiver\",transport=\"grpc\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("tempo_discarded_spans_total{reason=\"rate_limited\",tenant=\"t1\"} 2"),
            "{text}"
        );
    }
}
