//! The per-request series Tempo exposes, with Tempo's names and labels, so the Tempo mixin's
//! dashboards and alerts read them unchanged: spans and bytes received and spans discarded per
//! tenant, spans accepted and refused per receiver, the push duration, and
//! `tempo_request_duration_seconds` by route and status for every HTTP request.

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
    tenants: Mutex<HashSet<String>>,
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

/// Middleware: observes every HTTP request in `tempo_request_duration_seconds`.
pub async fn track_requests(
    State(metrics): State<std::sync::Arc<TempoMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route =
        (request.extensions().get::<MatchedPath>()).map_or_else(|| "other".to_string(), |p| route_label(p.as_str()));
    let method = request.method().to_string();
    let ws = request.headers().contains_key(axum::http::header::UPGRADE);
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let labels = RequestLabels {
        method,
        route,
        status_code: response.status().as_u16().to_string(),
        ws: ws.to_string(),
    };
    (metrics.request_duration.get_or_create(&labels)).observe(started.elapsed().as_secs_f64());
    response
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
