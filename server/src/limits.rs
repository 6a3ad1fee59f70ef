//! Per-tenant ingestion limits, applied where spans arrive (the monolith's receivers, the
//! distributor) before anything is stored: the ingestion rate (a token bucket of OTLP protobuf
//! bytes; beyond it the whole request is refused, 429 / ResourceExhausted with `Retry-After`,
//! Tempo's `rate_limited`), and per live trace its size (`max_bytes_per_trace`: the spans that
//! would take it over are refused, `trace_too_large`) and the number of live traces
//! (`max_traces_per_user`: spans of new traces beyond it are refused, `live_traces_exceeded`).
//! A trace is live until it receives no span for `ingester.trace_idle_period`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use crate::overrides::{Overrides, TenantLimits};
use crate::tempo_metrics::DiscardReason;

/// Tenants whose limiter state is kept; past it the one idle longest is forgotten.
pub const MAX_LIMITED_TENANTS: usize = 4096;

/// Live traces tracked over all tenants; spans of new traces beyond it are refused as
/// `live_traces_exceeded` whatever the tenant's own limit.
pub const MAX_LIVE_TRACES_TOTAL: usize = 1 << 21;

/// How often a tenant's idle traces are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Why a request was refused as a whole.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimited {
    pub message: String,
    pub retry_after: Duration,
}

/// What the per-trace limits took out of a request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Discarded {
    pub trace_too_large: u64,
    pub live_traces_exceeded: u64,
    /// The first refusal, as Tempo words it.
    pub message: Option<String>,
}

impl Discarded {
    /// Spans taken out.
    pub fn spans(&self) -> u64 {
        self.trace_too_large + self.live_traces_exceeded
    }

    /// Each reason with its spans.
    pub fn by_reason(&self) -> [(DiscardReason, u64); 2] {
        [
            (DiscardReason::TraceTooLarge, self.trace_too_large),
            (DiscardReason::LiveTracesExceeded, self.live_traces_exceeded),
        ]
    }
}

struct LiveTrace {
    bytes: u64,
    last_seen: Instant,
}

struct TenantState {
    tokens: f64,
    refilled: Instant,
    live: HashMap<Vec<u8>, LiveTrace>,
    swept: Instant,
    last_seen: Instant,
}

impl TenantState {
    fn new(now: Instant, burst: u64) -> Self {
        Self {
            tokens: burst as f64,
            refilled: now,
            live: HashMap::new(),
            swept: now,
            last_seen: now,
        }
    }

    /// Takes `bytes` from the bucket, or says how long until they would be there.
    fn take(&mut self, now: Instant, bytes: u64, limits: &TenantLimits) -> Result<(), Duration> {
        let (rate, burst) = (limits.rate_limit_bytes as f64, limits.burst_size_bytes as f64);
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + rate * elapsed).min(burst);
        self.refilled = now;
        if self.tokens >= bytes as f64 {
            self.tokens -= bytes as f64;
            return Ok(());
        }
        Err(Duration::from_secs_f64((bytes as f64 - self.tokens) / rate))
    }

    fn sweep(&mut self, now: Instant, idle: Duration) {
        if now.saturating_duration_since(self.swept) < SWEEP_INTERVAL {
            return;
        }
        self.live
            .retain(|_, t| now.saturating_duration_since(t.last_seen) < idle);
        self.swept = now;
    }
}

/// The limiter every receiver shares.
pub struct Limiter {
    overrides: Arc<Overrides>,
    trace_idle: Duration,
    tenants: Mutex<HashMap<String, TenantState>>,
}

impl Limiter {
    pub fn new(overrides: Arc<Overrides>, trace_idle: Duration) -> Self {
        Self {
            overrides,
            trace_idle,
            tenants: Mutex::new(HashMap::new()),
        }
    }

    /// Live traces per tenant now (for `tempo_live_store_live_traces`).
    pub fn live_traces(&self) -> Vec<(String, i64)> {
        let tenants = self.tenants.lock().expect("limiter lock");
        (tenants.iter())
            .map(|(t, s)| (t.clone(), s.live.len() as i64))
            .collect()
    }

    /// Applies `tenant`'s limits to `request`: refuses it whole over the rate, else takes out
    /// the spans the per-trace limits refuse and says how many.
    pub fn admit(&self, tenant: &str, request: &mut ExportTraceServiceRequest) -> Result<Discarded, RateLimited> {
        let limits = self.overrides.limits(tenant);
        let bytes = request.encoded_len() as u64;
        let now = Instant::now();
        let mut tenants = self.tenants.lock().expect("limiter lock");
        let total_live: usize = tenants.values().map(|s| s.live.len()).sum();
        let state = state(&mut tenants, tenant, now, &limits);
        state.last_seen = now;
        if limits.rate_limit_bytes > 0 {
            rate_check(state, now, bytes, &limits, tenant)?;
        }
        state.sweep(now, self.trace_idle);
        Ok(per_trace(state, request, now, &limits, tenant, total_live))
    }
}

fn state<'a>(
    tenants: &'a mut HashMap<String, TenantState>,
    tenant: &str,
    now: Instant,
    limits: &TenantLimits,
) -> &'a mut TenantState {
    if !tenants.contains_key(tenant) && tenants.len() >= MAX_LIMITED_TENANTS {
        let idlest = (tenants.iter())
            .min_by_key(|(_, s)| s.last_seen)
            .map(|(t, _)| t.clone())
            .expect("full map");
        tenants.remove(&idlest);
    }
    (tenants.entry(tenant.to_string())).or_insert_with(|| TenantState::new(now, limits.burst_size_bytes))
}

fn rate_check(
    state: &mut TenantState,
    now: Instant,
    bytes: u64,
    limits: &TenantLimits,
    tenant: &str,
) -> Result<(), RateLimited> {
    let (limit, burst) = (limits.rate_limit_bytes, limits.burst_size_bytes);
    if bytes > burst {
        return Err(RateLimited {
            message: format!(
                "RATE_LIMITED: batch size ({bytes} bytes) exceeds ingestion limit (local: {limit} bytes/s, \
                 burst: {burst} bytes) for user {tenant}. consider reducing batch size or increasing rate limit."
            ),
            retry_after: Duration::from_secs(1),
        });
    }
    state.take(now, bytes, limits).map_err(|wait| RateLimited {
        message: format!(
            "RATE_LIMITED: ingestion rate limit (local: {limit} bytes/s, burst: {burst} bytes) exceeded while \
             adding {bytes} bytes for user {tenant}. consider increasing the limit or reducing ingestion rate."
        ),
        retry_after: wait,
    })
}

/// Takes out of `request` the spans the per-trace limits refuse.
fn per_trace(
    state: &mut TenantState,
    request: &mut ExportTraceServiceRequest,
    now: Instant,
    limits: &TenantLimits,
    tenant: &str,
    total_live: usize,
) -> Discarded {
    let mut discarded = Discarded::default();
    let mut live_total = total_live;
    for rs in &mut request.resource_spans {
        for ss in &mut rs.scope_spans {
            ss.spans.retain(|span| {
                let size = span.encoded_len() as u64;
                let refusal = admit_span(state, &span.trace_id, size, now, limits, &mut live_total);
                match refusal {
                    None => true,
                    Some(reason) => {
                        record(&mut discarded, reason, &span.trace_id, size, limits, tenant);
                        false
                    }
                }
            });
        }
        rs.scope_spans.retain(|ss| !ss.spans.is_empty());
    }
    request.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
    discarded
}

fn admit_span(
    state: &mut TenantState,
    trace_id: &[u8],
    size: u64,
    now: Instant,
    limits: &TenantLimits,
    live_total: &mut usize,
) -> Option<DiscardReason> {
    if let Some(trace) = state.live.get_mut(trace_id) {
        if limits.max_bytes_per_trace > 0 && trace.bytes + size > limits.max_bytes_per_trace {
            return Some(DiscardReason::TraceTooLarge);
        }
        trace.bytes += size;
        trace.last_seen = now;
        return None;
    }
    let full = limits.max_traces_per_user > 0 && state.live.len() as u64 >= limits.max_traces_per_user;
    if full || *live_total >= MAX_LIVE_TRACES_TOTAL {
        return Some(DiscardReason::LiveTracesExceeded);
    }
    if limits.max_bytes_per_trace > 0 && size > limits.max_bytes_per_trace {
        return Some(DiscardReason::TraceTooLarge);
    }
    state.live.insert(
        trace_id.to_vec(),
        LiveTrace {
            bytes: size,
            last_seen: now,
        },
    );
    *live_total += 1;
    None
}

fn record(d: &mut Discarded, reason: DiscardReason, trace_id: &[u8], size: u64, limits: &TenantLimits, tenant: &str) {
    let message = match reason {
        DiscardReason::TraceTooLarge => {
            d.trace_too_large += 1;
            format!(
                "TRACE_TOO_LARGE: max size of trace ({}) exceeded while adding {size} bytes to trace {} for tenant {tenant}",
                limits.max_bytes_per_trace,
                hex::encode(trace_id)
            )
        }
        _ => {
            d.live_traces_exceeded += 1;
            format!(
                "LIVE_TRACES_EXCEEDED: max live traces per tenant exceeded for tenant {tenant}: per-user traces limit (local: {}) exceeded",
                limits.max_traces_per_user
            )
        }
    };
    d.message.get_or_insert(message);
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    use super::*;

    fn request(trace: u8, spans: usize) -> ExportTraceServiceRequest {
        let span = |i: usize| Span {
            trace_id: vec![trace; 16],
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            name: "s".repeat(100),
            ..Span::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: (0..spans).map(span).collect(),
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
    }

    fn limiter(limits: TenantLimits) -> Limiter {
        Limiter::new(Arc::new(Overrides::fixed(limits)), Duration::from_secs(10))
    }

    fn unlimited() -> TenantLimits {
        TenantLimits {
            rate_limit_bytes: 0,
            burst_size_bytes: 0,
            max_traces_per_user: 0,
            max_bytes_per_trace: 0,
            max_search_duration: Duration::ZERO,
            max_metrics_duration: Duration::ZERO,
            block_retention: Duration::ZERO,
        }
    }

    #[test]
    fn spans_beyond_max_bytes_per_trace_are_refused_exactly() {
        let one = request(1, 1).resource_spans[0].scope_spans[0].spans[0].encoded_len() as u64;
        let l = limiter(TenantLimits {
            max_bytes_per_trace: 3 * one + one / 2,
            ..unlimited()
        });
        let mut r = request(1, 5);
        let d = l.admit("t", &mut r).unwrap();
        assert_eq!(d.trace_too_large, 2);
        assert_eq!(r.resource_spans[0].scope_spans[0].spans.len(), 3);
        assert!(d.message.unwrap().starts_with("TRACE_TOO_LARGE"));
        let mut other = request(2, 3);
        assert_eq!(
            l.admit("t", &mut other).unwrap().spans(),
            0,
            "another trace has its own budget"
        );
    }

    #[test]
    fn the_rate_is_a_token_bucket_per_tenant() {
        let size = request(1, 10).encoded_len() as u64;
        let l = limiter(TenantLimits {
            rate_limit_bytes: 1,
            burst_size_bytes: size * 2,
            ..unlimited()
        });
        assert!(l.admit("a", &mut request(1, 10)).is_ok());
        assert!(l.admit("a", &mut request(1, 10)).is_ok());
        let refused = l.admit("a", &mut request(1, 10)).unwrap_err();
        assert!(refused.message.starts_with("RATE_LIMITED"), "{refused:?}");
        assert!(refused.retry_after > Duration::from_secs(100));
        assert!(l.admit("b", &mut request(1, 10)).is_ok(), "tenant b has its own bucket");
    }

    #[test]
    fn new_traces_beyond_the_live_limit_are_refused() {
        let l = limiter(TenantLimits {
            max_traces_per_user: 2,
            ..unlimited()
        });
        for trace in 1..=2 {
            assert_eq!(l.admit("t", &mut request(trace, 1)).unwrap().spans(), 0);
        }
        assert_eq!(l.admit("t", &mut request(3, 2)).unwrap().live_traces_exceeded, 2);
        assert_eq!(
            l.admit("t", &mut request(1, 1)).unwrap().spans(),
            0,
            "a live trace goes on"
        );
        assert_eq!(l.live_traces(), vec![("t".to_string(), 2)]);
    }
}
