//! The door every query of every front comes through ([`QueryEngine::admit`]): a slot among
//! its tenant's concurrent queries (beyond `max_concurrent_queries_per_tenant` the query is
//! refused at once, ResourceExhausted, and other tenants are unaffected), and, when the query
//! is over, its duration in `tracehouse_query_duration_seconds{front, outcome}` and a log line
//! when it took longer than `slow_query_threshold`. Deadlines and cancels are the engine's
//! (`QueryLimits`), applied where the query runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::errors::ErrorKind;
use crate::{Error, Result};

/// The protocol a query came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Front {
    Postgres,
    Flight,
    /// Tempo's API, over HTTP and gRPC.
    Tempo,
}

/// How a query ended, as the `outcome` label reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    /// The client's fault (bad query, not allowed, too complex).
    ClientError,
    Timeout,
    Cancelled,
    /// Memory or the tenant's concurrency ran out.
    ResourceExhausted,
    /// The server's fault (storage, an internal error).
    ServerError,
}

impl Front {
    /// The `front` label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Flight => "flight",
            Self::Tempo => "tempo",
        }
    }
}

impl Outcome {
    /// The `outcome` label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::ClientError => "client_error",
            Self::Timeout => "timeout",
            Self::Cancelled => "cancelled",
            Self::ResourceExhausted => "resource_exhausted",
            Self::ServerError => "server_error",
        }
    }

    /// The outcome of a query that failed with `kind`.
    pub fn of(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::Timeout => Self::Timeout,
            ErrorKind::Cancelled => Self::Cancelled,
            ErrorKind::ResourceExhausted | ErrorKind::TooLarge => Self::ResourceExhausted,
            kind if kind.http_status() >= 500 => Self::ServerError,
            _ => Self::ClientError,
        }
    }

    /// The outcome of a query that failed with SQLSTATE `code`.
    pub fn of_sqlstate(code: &str) -> Self {
        match code {
            "57014" => Self::Timeout,
            c if c.starts_with("53") || c == "54000" => Self::ResourceExhausted,
            c if c.starts_with("58") || c.starts_with("XX") => Self::ServerError,
            _ => Self::ClientError,
        }
    }
}

impl EncodeLabelValue for Front {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.name())
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct QueryLabels {
    front: Front,
    outcome: Outcome,
}

/// Tenants whose slot counts are kept at once; past it, tenants with no query running are
/// forgotten (their semaphore is full, so nothing is lost).
pub const MAX_TENANT_SLOTS: usize = 4096;
/// Longest query text a slow-query log line quotes.
pub const SLOW_QUERY_LOG_CHARS: usize = 500;

/// Admission settings.
#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    /// Queries one tenant may run at once, over all fronts.
    pub max_concurrent_queries_per_tenant: usize,
    /// Queries that take longer are logged (`Duration::ZERO`: none).
    pub slow_query_threshold: Duration,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            max_concurrent_queries_per_tenant: 20,
            slow_query_threshold: Duration::from_secs(5),
        }
    }
}

/// Buckets of query durations: 5 ms to about 5.5 minutes, by fours.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 4.0, 9))
}

/// Per-tenant slots and the query metrics.
pub struct Admission {
    config: AdmissionConfig,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    durations: Family<QueryLabels, Histogram>,
}

impl Admission {
    pub fn new(config: AdmissionConfig) -> Result<Self> {
        if config.max_concurrent_queries_per_tenant == 0 {
            return Err(Error::Config(
                "query.max_concurrent_queries_per_tenant must be positive".into(),
            ));
        }
        let durations: Family<QueryLabels, Histogram> = Family::new_with_constructor(duration_histogram);
        Ok(Self {
            config,
            slots: Mutex::new(HashMap::new()),
            durations,
        })
    }

    /// Registers the query metrics (`tracehouse_query_duration_seconds`) in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "tracehouse_query_duration_seconds",
            "Time queries took, by front and outcome",
            self.durations.clone(),
        );
    }

    /// A slot for a query of `tenant` from `front`, or ResourceExhausted when the tenant runs
    /// as many as it may. `text` is what the slow-query log quotes.
    pub fn admit(self: &Arc<Self>, front: Front, tenant: &str, text: &str) -> Result<Admitted> {
        let permit = self.permit(tenant).ok_or_else(|| {
            self.record(front, Outcome::ResourceExhausted, Duration::ZERO);
            Error::Busy(format!(
                "tenant {tenant:?} is running {} queries, its limit (query.max_concurrent_queries_per_tenant); retry when one ends",
                self.config.max_concurrent_queries_per_tenant
            ))
        })?;
        Ok(Admitted {
            admission: self.clone(),
            front,
            tenant: tenant.to_string(),
            text: text.chars().take(SLOW_QUERY_LOG_CHARS).collect(),
            started: Instant::now(),
            outcome: Mutex::new(Outcome::Ok),
            _permit: permit,
        })
    }

    /// A slot of `tenant`, taken under the map's lock: a tenant's semaphore is only
    /// forgotten while all its slots are free, so no tenant ever has two.
    fn permit(&self, tenant: &str) -> Option<OwnedSemaphorePermit> {
        let limit = self.config.max_concurrent_queries_per_tenant;
        let mut slots = self.slots.lock().expect("slots lock");
        if slots.len() >= MAX_TENANT_SLOTS && !slots.contains_key(tenant) {
            slots.retain(|_, s| s.available_permits() < limit);
        }
        let semaphore = slots
            .entry(tenant.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(limit)));
        semaphore.clone().try_acquire_owned().ok()
    }

    fn record(&self, front: Front, outcome: Outcome, took: Duration) {
        let labels = QueryLabels { front, outcome };
        self.durations.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// Queries of `tenant` running now.
    #[cfg(test)]
    fn running(&self, tenant: &str) -> usize {
        let limit = self.config.max_concurrent_queries_per_tenant;
        let slots = self.slots.lock().expect("slots lock");
        slots.get(tenant).map_or(0, |s| limit - s.available_permits())
    }
}

/// An admitted query: holds its tenant's slot until dropped, then records its outcome and
/// duration, and logs it when slow.
pub struct Admitted {
    admission: Arc<Admission>,
    front: Front,
    tenant: String,
    text: String,
    started: Instant,
    outcome: Mutex<Outcome>,
    _permit: OwnedSemaphorePermit,
}

impl Admitted {
    /// Marks the query failed with `e` (the last call wins).
    pub fn failed(&self, e: &Error) {
        self.set(Outcome::of(e.kind()));
    }

    /// Sets how the query ended (the last call wins).
    pub fn set(&self, outcome: Outcome) {
        *self.outcome.lock().expect("outcome lock") = outcome;
    }

    /// Marks the query's outcome from `result`, passing it on.
    pub fn finish<T>(self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            self.failed(e);
        }
        result
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let took = self.started.elapsed();
        let outcome = *self.outcome.lock().expect("outcome lock");
        self.admission.record(self.front, outcome, took);
        let threshold = self.admission.config.slow_query_threshold;
        if !threshold.is_zero() && took >= threshold {
            tracing::warn!(
                front = ?self.front,
                tenant = %self.tenant,
                ?outcome,
                duration_ms = took.as_millis() as u64,
                query = %self.text,
                "slow query"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics_text(admission: &Admission) -> String {
        let mut registry = Registry::default();
        admission.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn a_tenant_over_its_limit_is_refused_and_others_are_not() {
        let config = AdmissionConfig {
            max_concurrent_queries_per_tenant: 2,
            slow_query_threshold: Duration::ZERO,
        };
        let admission = Arc::new(Admission::new(config).unwrap());
        let first = admission.admit(Front::Postgres, "a", "q1").unwrap();
        let second = admission.admit(Front::Flight, "a", "q2").unwrap();
        let e = admission.admit(Front::Tempo, "a", "q3").err().expect("over the limit");
        assert_eq!(
            (e.kind().http_status(), e.kind().grpc_code(), e.sqlstate()),
            (429, 8, "53000")
        );
        assert!(e.to_string().contains("max_concurrent_queries_per_tenant"), "{e}");
        let other = admission.admit(Front::Tempo, "b", "q").unwrap();
        assert_eq!(admission.running("a"), 2);
        second.failed(&Error::Timeout(Duration::from_secs(1)));
        drop(second);
        assert_eq!(admission.running("a"), 1);
        let third = admission.admit(Front::Tempo, "a", "q3").unwrap();
        drop((first, third, other));
        assert_eq!(admission.running("a"), 0);
        let text = metrics_text(&admission);
        for series in [
            r#"tracehouse_query_duration_seconds_count{front="postgres",outcome="ok"} 1"#,
            r#"tracehouse_query_duration_seconds_count{front="flight",outcome="timeout"} 1"#,
            r#"tracehouse_query_duration_seconds_count{front="tempo",outcome="resource_exhausted"} 1"#,
            r#"tracehouse_query_duration_seconds_count{front="tempo",outcome="ok"} 2"#,
        ] {
            assert!(text.contains(series), "{series} not in\n{text}");
        }
    }

    #[test]
    fn idle_tenants_are_forgotten_past_the_slot_limit() {
        let admission = Arc::new(Admission::new(AdmissionConfig::default()).unwrap());
        let held = admission.admit(Front::Tempo, "held", "q").unwrap();
        for i in 0..2 * MAX_TENANT_SLOTS {
            drop(admission.admit(Front::Tempo, &format!("t{i}"), "q").unwrap());
            assert!(admission.slots.lock().unwrap().len() <= MAX_TENANT_SLOTS);
        }
        assert_eq!(admission.running("held"), 1);
        drop(held);
        assert!(
            Admission::new(AdmissionConfig {
                max_concurrent_queries_per_tenant: 0,
                ..AdmissionConfig::default()
            })
            .is_err()
        );
    }
}
