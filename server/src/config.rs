//! The YAML configuration, shaped like Tempo's (`server`, `distributor.receivers.otlp`,
//! `ingester`, `storage.trace`, `ingest.kafka`, `block_builder`, `live_store`, `querier`), plus
//! `postgres`, `flight` and `query` blocks. Every field has a default, so an empty file (or
//! none) runs a local monolithic server. Any field can also be set by a flag named after its
//! path, dashes or underscores alike (`-ingest.kafka.consumer-group=g`,
//! `-server.http-listen-port=3201`), as Tempo's flags mirror its YAML.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracehouse_ingest::duration;
use tracehouse_warehouse::storage::S3Config;

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Which components run: `all` (monolithic, the default).
    pub target: Option<String>,
    pub server: ServerConfig,
    pub distributor: DistributorConfig,
    pub ingester: IngesterConfig,
    pub storage: StorageBlock,
    pub postgres: PostgresConfig,
    pub flight: FlightConfig,
    pub query: QueryConfig,
    /// Tempo's `ingest` block: Kafka, for the microservices targets.
    pub ingest: IngestBlock,
    pub block_builder: BlockBuilderBlock,
    pub live_store: LiveStoreBlock,
    pub querier: QuerierBlock,
    /// Tempo's `query_frontend` block: the search limits.
    pub query_frontend: QueryFrontendBlock,
    /// Tempo's `compactor` block: compaction, retention and vacuum.
    pub compactor: CompactorBlock,
    /// Tempo's `overrides` block: per-tenant settings (so far the retention).
    pub overrides: OverridesBlock,
}

/// Tempo's `compactor` block.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompactorBlock {
    pub compaction: CompactionBlock,
}

/// Tempo's `compactor.compaction`: how tables are compacted, expired and vacuumed.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompactionBlock {
    /// Run upkeep in-process in monolithic mode (`-target=compactor` always runs it).
    pub enabled: bool,
    /// How often every tenant's table is looked after.
    #[serde(deserialize_with = "duration::deserialize", serialize_with = "duration::serialize")]
    pub compaction_cycle: Duration,
    /// Files whose spans start in the same window are merged together.
    #[serde(deserialize_with = "duration::deserialize", serialize_with = "duration::serialize")]
    pub compaction_window: Duration,
    /// Files at least this large are left alone; merged files are cut at this size.
    pub target_file_bytes: u64,
    /// Bytes of input one merge reads at most.
    pub max_input_bytes: u64,
    /// Small files a window not yet ended needs before they merge (an ended one: two).
    pub min_open_window_files: usize,
    /// Merges one cycle runs per tenant at most.
    pub max_merges_per_cycle: usize,
    /// Memory one merge's sort holds before it spills to disk.
    pub merge_memory_bytes: usize,
    /// Spans are kept this long after they end; `0s` keeps them forever. Per tenant in the
    /// overrides.
    #[serde(deserialize_with = "duration::deserialize", serialize_with = "duration::serialize")]
    pub block_retention: Duration,
    /// Files compaction or retention removed stay on storage this long (running queries and
    /// other engines' snapshots keep reading them), as do unreferenced files and log entries.
    #[serde(deserialize_with = "duration::deserialize", serialize_with = "duration::serialize")]
    pub compacted_block_retention: Duration,
    /// How long a tenant's upkeep lease lasts unrenewed (one process looks after a tenant at
    /// a time; one killed holding it keeps the tenant waiting this long).
    #[serde(deserialize_with = "duration::deserialize", serialize_with = "duration::serialize")]
    pub lease_duration: Duration,
}

impl Default for CompactionBlock {
    fn default() -> Self {
        let upkeep = tracehouse_warehouse::upkeep::UpkeepConfig::default();
        Self {
            enabled: true,
            compaction_cycle: Duration::from_secs(30),
            compaction_window: upkeep.compaction_window,
            target_file_bytes: upkeep.target_file_bytes,
            max_input_bytes: upkeep.max_input_bytes,
            min_open_window_files: upkeep.min_open_window_files,
            max_merges_per_cycle: upkeep.max_merges_per_pass,
            merge_memory_bytes: upkeep.merge_memory_bytes,
            block_retention: upkeep.block_retention,
            compacted_block_retention: upkeep.grace,
            lease_duration: upkeep.lease_ttl,
        }
    }
}

impl CompactionBlock {
    /// The upkeep settings, or an error naming the key out of range.
    pub fn upkeep(&self) -> Result<tracehouse_warehouse::upkeep::UpkeepConfig, String> {
        let key = |k: &str| format!("compactor.compaction.{k}");
        let min_grace = 2 * tracehouse_warehouse::TABLE_REFRESH_INTERVAL;
        let checks: [(bool, String); 8] = [
            (
                self.lease_duration < Duration::from_secs(3),
                format!("{} must be at least 3s", key("lease_duration")),
            ),
            (
                self.compaction_cycle < Duration::from_secs(1),
                format!("{} must be at least 1s", key("compaction_cycle")),
            ),
            (
                self.compaction_window < Duration::from_secs(60),
                format!("{} must be at least 1m", key("compaction_window")),
            ),
            (
                self.target_file_bytes < 1 << 20,
                format!("{} must be at least 1 MiB", key("target_file_bytes")),
            ),
            (
                self.max_input_bytes < self.target_file_bytes,
                format!(
                    "{} must be at least {}",
                    key("max_input_bytes"),
                    key("target_file_bytes")
                ),
            ),
            (
                self.min_open_window_files < 2,
                format!("{} must be at least 2", key("min_open_window_files")),
            ),
            (
                self.max_merges_per_cycle == 0 || self.merge_memory_bytes < 16 << 20,
                format!(
                    "{} must be positive and {} at least 16 MiB",
                    key("max_merges_per_cycle"),
                    key("merge_memory_bytes")
                ),
            ),
            (
                self.compacted_block_retention < min_grace,
                format!(
                    "{} must be at least {min_grace:?}, twice the table reload interval",
                    key("compacted_block_retention")
                ),
            ),
        ];
        if let Some((_, message)) = checks.into_iter().find(|(bad, _)| *bad) {
            return Err(message);
        }
        Ok(tracehouse_warehouse::upkeep::UpkeepConfig {
            compaction_window: self.compaction_window,
            target_file_bytes: self.target_file_bytes,
            max_input_bytes: self.max_input_bytes,
            min_open_window_files: self.min_open_window_files,
            max_merges_per_pass: self.max_merges_per_cycle,
            block_retention: self.block_retention,
            grace: self.compacted_block_retention,
            merge_memory_bytes: self.merge_memory_bytes,
            tidy: true,
            compact: true,
            lease_ttl: self.lease_duration,
        })
    }
}

/// Tempo's `overrides` block: `defaults` for every tenant, and a per-tenant file read again
/// every `per_tenant_override_period` (see `crate::overrides`). With `enable_legacy_overrides`,
/// Tempo's legacy flat keys are read here and in the file too (see `crate::overrides_keys`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct OverridesBlock {
    pub defaults: TenantOverrides,
    /// A YAML file of `overrides: {TENANT: {ingestion: {rate_limit_bytes: 1000}}}`, as Tempo's.
    pub per_tenant_override_config: Option<PathBuf>,
    /// How often the per-tenant file is read again (Tempo's default 10s).
    #[serde(deserialize_with = "duration::deserialize", serialize_with = "duration::serialize")]
    pub per_tenant_override_period: Duration,
    /// Reads Tempo's deprecated flat format (off by default, as in Tempo 3).
    pub enable_legacy_overrides: bool,
    /// Any other key: the defaults in the legacy flat format, or an error.
    #[serde(flatten)]
    pub legacy_defaults: serde_yaml::Mapping,
}

impl Default for OverridesBlock {
    fn default() -> Self {
        Self {
            defaults: TenantOverrides::default(),
            per_tenant_override_config: None,
            per_tenant_override_period: Duration::from_secs(10),
            enable_legacy_overrides: false,
            legacy_defaults: serde_yaml::Mapping::new(),
        }
    }
}

impl OverridesBlock {
    /// The defaults in force: `defaults`, or the flat keys beside it in the legacy format.
    pub fn effective_defaults(&self) -> Result<TenantOverrides, String> {
        let legacy = serde_yaml::Value::Mapping(self.legacy_defaults.clone());
        let scoped = serde_yaml::to_value(&self.defaults).map_err(|e| e.to_string())?;
        let block = if self.legacy_defaults.is_empty() {
            scoped
        } else if scoped == serde_yaml::to_value(TenantOverrides::default()).map_err(|e| e.to_string())? {
            legacy
        } else {
            return Err("overrides: mixes the legacy (flat) and the scoped overrides formats (defaults)".into());
        };
        crate::overrides_keys::tenant_overrides(block, self.enable_legacy_overrides, "overrides")
    }
}

/// One tenant's overrides, in Tempo's shape. Keys tracehouse does not read (Tempo's
/// `metrics_generator`, `forwarders`, ...) are kept aside and named in the log, so a Tempo
/// overrides file loads unchanged.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct TenantOverrides {
    pub ingestion: IngestionOverrides,
    pub global: GlobalOverrides,
    pub read: ReadOverrides,
    pub compaction: CompactionOverrides,
    #[serde(flatten)]
    pub unread: BTreeMap<String, serde_yaml::Value>,
}

impl TenantOverrides {
    /// The keys kept aside, by section ("": top level).
    pub fn unread_by_section(&self) -> [(&'static str, &BTreeMap<String, serde_yaml::Value>); 5] {
        [
            ("", &self.unread),
            ("ingestion", &self.ingestion.unread),
            ("global", &self.global.unread),
            ("read", &self.read.unread),
            ("compaction", &self.compaction.unread),
        ]
    }
}

/// `ingestion` overrides: the rate limit and live traces.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct IngestionOverrides {
    /// Bytes per second (OTLP protobuf size) a tenant may send; 0: no limit.
    pub rate_limit_bytes: Option<u64>,
    /// Bytes a tenant may send at once above its rate.
    pub burst_size_bytes: Option<u64>,
    /// Traces of a tenant receiving spans at once (seen within `ingester.trace_idle_period`);
    /// 0: no limit.
    pub max_traces_per_user: Option<u64>,
    #[serde(flatten)]
    pub unread: BTreeMap<String, serde_yaml::Value>,
}

/// `global` overrides.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct GlobalOverrides {
    /// Bytes one live trace may hold; spans beyond are refused (`trace_too_large`). 0: no limit.
    pub max_bytes_per_trace: Option<u64>,
    #[serde(flatten)]
    pub unread: BTreeMap<String, serde_yaml::Value>,
}

/// `read` overrides: the bounds of a tenant's queries.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ReadOverrides {
    /// Longest range a search may cover; `0s`: no limit.
    #[serde(
        deserialize_with = "optional_duration",
        serialize_with = "duration::serialize_option"
    )]
    pub max_search_duration: Option<Duration>,
    /// Longest range a metrics query may cover; `0s`: `query_frontend.metrics.max_duration`.
    #[serde(
        deserialize_with = "optional_duration",
        serialize_with = "duration::serialize_option"
    )]
    pub max_metrics_duration: Option<Duration>,
    #[serde(flatten)]
    pub unread: BTreeMap<String, serde_yaml::Value>,
}

/// `compaction` overrides: a tenant's retention.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct CompactionOverrides {
    #[serde(
        deserialize_with = "optional_duration",
        serialize_with = "duration::serialize_option"
    )]
    pub block_retention: Option<Duration>,
    #[serde(flatten)]
    pub unread: BTreeMap<String, serde_yaml::Value>,
}

fn optional_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    text.map(|t| duration::parse_duration(&t))
        .transpose()
        .map_err(serde::de::Error::custom)
}

/// The per-tenant overrides file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PerTenantFile {
    overrides: BTreeMap<String, serde_yaml::Value>,
}

/// Each tenant's overrides in a per-tenant file's `text` (empty: none), in either of Tempo's
/// formats (the legacy one when `legacy_enabled`).
pub fn per_tenant_overrides(text: &str, legacy_enabled: bool) -> Result<BTreeMap<String, TenantOverrides>, String> {
    if text.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    let parsed: PerTenantFile = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for (tenant, block) in parsed.overrides {
        tracehouse_warehouse::storage::validate_tenant(&tenant).map_err(|e| format!("overrides.{tenant}: {e}"))?;
        let what = format!("overrides.{tenant}");
        let o = crate::overrides_keys::tenant_overrides(block, legacy_enabled, &what)?;
        out.insert(tenant, o);
    }
    Ok(out)
}

/// Tempo's `query_frontend` block.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryFrontendBlock {
    pub search: FrontendSearch,
    pub metrics: FrontendMetrics,
    pub trace_by_id: FrontendTraceById,
}

impl QueryFrontendBlock {
    /// The duration SLOs of Tempo's query counters, by op.
    pub fn slos(&self) -> crate::tempo_metrics::QuerySlos {
        crate::tempo_metrics::QuerySlos {
            traces: self.trace_by_id.duration_slo,
            search: self.search.duration_slo,
            metadata: self.search.metadata_slo.duration_slo,
            metrics: self.metrics.duration_slo,
        }
    }
}

/// A duration SLO, as Tempo's `duration_slo`: a query answered within it counts in
/// `tempo_query_frontend_queries_within_slo_total`; `0s`: every query not failed by the server.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Slo {
    #[serde(deserialize_with = "duration::deserialize", serialize_with = "duration::serialize")]
    pub duration_slo: Duration,
}

/// Tempo's `query_frontend.trace_by_id`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FrontendTraceById {
    /// The trace-by-id SLO.
    #[serde(deserialize_with = "duration::deserialize", serialize_with = "duration::serialize")]
    pub duration_slo: Duration,
}

/// Tempo's `query_frontend.metrics`: the bounds of a metrics query.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FrontendMetrics {
    /// Longest range a metrics query may cover (Tempo's default 24h).
    #[serde(deserialize_with = "duration::deserialize", serialize_with = "duration::serialize")]
    pub max_duration: Duration,
    /// Most steps in a range (Tempo's default 10,000).
    pub max_intervals: u64,
    /// Most series an answer holds; more is a 400 (Tempo's 0, unbounded, is not accepted).
    pub max_response_series: usize,
    /// Most exemplars per series (Tempo's default 100; 0 for none).
    pub max_exemplars: usize,
    /// The metrics queries' SLO (see [`Slo`]).
    #[serde(deserialize_with = "duration::deserialize", serialize_with = "duration::serialize")]
    pub duration_slo: Duration,
}

impl Default for FrontendMetrics {
    fn default() -> Self {
        let d = tracehouse_sql::metrics::MetricsLimits::default();
        Self {
            max_duration: Duration::from_nanos(d.max_range_ns as u64),
            max_intervals: d.max_intervals as u64,
            max_response_series: d.max_series,
            max_exemplars: d.max_exemplars,
            duration_slo: Duration::ZERO,
        }
    }
}

impl FrontendMetrics {
    /// The limits, or an error naming the key out of range.
    pub fn limits(&self) -> Result<tracehouse_sql::metrics::MetricsLimits, String> {
        let key = |k: &str| format!("query_frontend.metrics.{k}");
        let most_intervals = tracehouse_sql::metrics::MAX_INTERVALS as u64 - 2;
        if self.max_duration.is_zero() || self.max_duration > Duration::from_secs(366 * 86_400) {
            return Err(format!("{} must be between 1ns and 366 days", key("max_duration")));
        }
        if !(1..=most_intervals).contains(&self.max_intervals) {
            return Err(format!(
                "{} must be between 1 and {most_intervals}",
                key("max_intervals")
            ));
        }
        if !(1..=100_000).contains(&self.max_response_series) {
            return Err(format!("{} must be between 1 and 100000", key("max_response_series")));
        }
        if self.max_exemplars > 10_000 {
            return Err(format!("{} must be at most 10000", key("max_exemplars")));
        }
        Ok(tracehouse_sql::metrics::MetricsLimits {
            max_exemplars: self.max_exemplars,
            max_series: self.max_response_series,
            max_range_ns: self.max_duration.as_nanos() as i64,
            max_intervals: self.max_intervals as i64,
        })
    }
}

/// Tempo's `query_frontend.search`: the largest `limit` and `spss` a search may ask for.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FrontendSearch {
    /// Largest `limit`; 0 for the engine's own bound (262,144 traces, Tempo's default).
    pub max_result_limit: usize,
    /// Largest `spss`; 0 for the engine's own bound (every span, up to 10,000).
    pub max_spans_per_span_set: usize,
    /// The searches' SLO (see [`Slo`]).
    #[serde(deserialize_with = "duration::deserialize", serialize_with = "duration::serialize")]
    pub duration_slo: Duration,
    /// The tag and tag-value queries' SLO.
    pub metadata_slo: Slo,
}

impl Default for FrontendSearch {
    fn default() -> Self {
        Self {
            max_result_limit: tracehouse_sql::traceql::MAX_SEARCH_LIMIT,
            max_spans_per_span_set: 100,
            duration_slo: Duration::ZERO,
            metadata_slo: Slo::default(),
        }
    }
}

impl FrontendSearch {
    /// The limits, or an error naming the key out of range.
    pub fn limits(&self) -> Result<tracehouse_tempo_api::SearchLimits, String> {
        let (most_traces, most_spans) = (
            tracehouse_sql::traceql::MAX_SEARCH_LIMIT,
            tracehouse_sql::traceql::MAX_SPSS,
        );
        if self.max_result_limit > most_traces {
            return Err(format!(
                "query_frontend.search.max_result_limit {} is over {most_traces}, the most a search holds",
                self.max_result_limit
            ));
        }
        if self.max_spans_per_span_set > most_spans {
            return Err(format!(
                "query_frontend.search.max_spans_per_span_set {} is over {most_spans}, the most a search holds",
                self.max_spans_per_span_set
            ));
        }
        let or = |v: usize, bound: usize| if v == 0 { bound } else { v };
        Ok(tracehouse_tempo_api::SearchLimits {
            max_result_limit: or(self.max_result_limit, most_traces),
            max_spans_per_span_set: or(self.max_spans_per_span_set, most_spans),
        })
    }
}

/// Tempo's `ingest` block.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestBlock {
    pub kafka: tracehouse_ingest::kafka::KafkaConfig,
}

/// Tempo's `ingest.kafka` block (see `tracehouse_ingest::kafka::KafkaConfig`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlockBuilderBlock {
    /// Consumed spans are written into the tables at least this often.
    #[serde(deserialize_with = "duration::deserialize", serialize_with = "duration::serialize")]
    pub consume_cycle_duration: Duration,
    /// ... and whenever a builder holds this many bytes of them.
    pub max_block_bytes: usize,
    /// Static group membership id (Kafka's `group.instance.id`), e.g. the pod name of a
    /// StatefulSet: a restarted builder takes its partitions back at once. Empty: dynamic.
    pub instance_id: String,
}

impl Default for BlockBuilderBlock {
    fn default() -> Self {
        Self {
            consume_cycle_duration: Duration::from_secs(5),
            max_block_bytes: 256 << 20,
            instance_id: String::new(),
        }
    }
}

/// The live-store: spans consumed but not yet in the tables.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiveStoreBlock {
    /// Bytes held; beyond it the oldest records are dropped (and counted).
    pub max_live_bytes: usize,
    /// How often records the tables hold are dropped.
    #[serde(deserialize_with = "duration::deserialize", serialize_with = "duration::serialize")]
    pub prune_interval: Duration,
}

impl Default for LiveStoreBlock {
    fn default() -> Self {
        Self {
            max_live_bytes: 1 << 30,
            prune_interval: Duration::from_secs(1),
        }
    }
}

/// The querier's view of the live-stores.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuerierBlock {
    /// HTTP `host:port` of live-store replicas, tried in order; empty: tables only.
    pub live_store_addresses: Vec<String>,
    #[serde(deserialize_with = "duration::deserialize", serialize_with = "duration::serialize")]
    pub live_store_timeout: Duration,
}

impl Default for QuerierBlock {
    fn default() -> Self {
        Self {
            live_store_addresses: Vec::new(),
            live_store_timeout: Duration::from_secs(10),
        }
    }
}

/// Tempo's `server` block: the HTTP API.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub http_listen_address: String,
    pub http_listen_port: u16,
    /// How long shutdown may take before the process exits anyway.
    #[serde(deserialize_with = "duration::deserialize", serialize_with = "duration::serialize")]
    pub graceful_shutdown_timeout: Duration,
    pub log_level: String,
    /// Credentials for the HTTP API (but `/ready` and `/metrics`), OTLP, and Flight unless
    /// `flight.auth` has its own; with any listed, every request must present one. Same shape
    /// as `flight.auth`.
    pub auth: Vec<FlightCredential>,
    /// Whether this process may use transparent huge pages as the system allows. Off by
    /// default: the allocator returns freed memory to the kernel and takes fresh memory back,
    /// and each huge page taken is zeroed whole, which cost a third of the ingest path's CPU
    /// (`benches/README.md`, "Transparent huge pages").
    pub transparent_huge_pages: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            http_listen_address: "127.0.0.1".into(),
            http_listen_port: 3200,
            graceful_shutdown_timeout: Duration::from_secs(30),
            log_level: "info".into(),
            auth: Vec::new(),
            transparent_huge_pages: false,
        }
    }
}

/// Tempo's `distributor` block.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistributorConfig {
    pub receivers: ReceiversConfig,
    /// Largest accepted request body, after decompression.
    pub max_request_bytes: usize,
}

impl Default for DistributorConfig {
    fn default() -> Self {
        Self {
            receivers: ReceiversConfig::default(),
            max_request_bytes: 16 << 20,
        }
    }
}

/// Tempo's `distributor.receivers`, named as the OpenTelemetry Collector's receivers. OTLP
/// runs by default; Jaeger and Zipkin (and each Jaeger protocol) only when named, as in Tempo,
/// where a name with no settings (`thrift_http:`) listens on the protocol's default port.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReceiversConfig {
    pub otlp: OtlpReceiverConfig,
    #[serde(deserialize_with = "named", skip_serializing_if = "Option::is_none")]
    pub jaeger: Option<JaegerReceiverConfig>,
    #[serde(deserialize_with = "named", skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<ZipkinReceiverConfig>,
}

/// A block that is on when named, even with no settings (`zipkin:` reads as YAML null).
fn named<'de, D: serde::Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<Option<T>, D::Error> {
    Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
}

/// The Collector's `jaeger` receiver.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct JaegerReceiverConfig {
    pub protocols: JaegerProtocols,
}

/// The Jaeger protocols; each listens only when named.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct JaegerProtocols {
    /// Thrift over HTTP, `POST /api/traces` (default port 14268).
    #[serde(deserialize_with = "named", skip_serializing_if = "Option::is_none")]
    pub thrift_http: Option<OptionalEndpoint>,
    /// `jaeger.api_v2.CollectorService/PostSpans` over gRPC (default port 14250).
    #[serde(deserialize_with = "named", skip_serializing_if = "Option::is_none")]
    pub grpc: Option<OptionalEndpoint>,
    /// The agent's Thrift compact protocol over UDP (default port 6831).
    #[serde(deserialize_with = "named", skip_serializing_if = "Option::is_none")]
    pub thrift_compact: Option<OptionalEndpoint>,
    /// The agent's Thrift binary protocol over UDP (default port 6832).
    #[serde(deserialize_with = "named", skip_serializing_if = "Option::is_none")]
    pub thrift_binary: Option<OptionalEndpoint>,
}

/// A listener whose `endpoint` defaults to its protocol's port on 127.0.0.1.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptionalEndpoint {
    pub endpoint: Option<String>,
}

impl OptionalEndpoint {
    /// The endpoint, or 127.0.0.1 on `default_port`.
    pub fn or_port(&self, default_port: u16) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| format!("127.0.0.1:{default_port}"))
    }
}

/// The Collector's `zipkin` receiver: `POST /api/v2/spans` (JSON, protobuf) and
/// `POST /api/v1/spans` (JSON).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ZipkinReceiverConfig {
    /// Default `127.0.0.1:9411`.
    pub endpoint: Option<String>,
    /// Tags reading as numbers or booleans become attributes of that type (off, as in the
    /// Collector: Zipkin tags are strings).
    pub parse_string_tags: bool,
}

/// Jaeger's and Zipkin's default ports.
pub mod ports {
    pub const JAEGER_THRIFT_HTTP: u16 = 14268;
    pub const JAEGER_GRPC: u16 = 14250;
    pub const JAEGER_THRIFT_COMPACT: u16 = 6831;
    pub const JAEGER_THRIFT_BINARY: u16 = 6832;
    pub const ZIPKIN: u16 = 9411;
}

/// A Jaeger or Zipkin listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiverRole {
    JaegerThriftHttp,
    JaegerGrpc,
    JaegerThriftCompactUdp,
    JaegerThriftBinaryUdp,
    Zipkin,
}

impl ReceiverRole {
    /// The role as `-config.verify` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Self::JaegerThriftHttp => "jaeger-thrift-http",
            Self::JaegerGrpc => "jaeger-grpc",
            Self::JaegerThriftCompactUdp => "jaeger-thrift-compact-udp",
            Self::JaegerThriftBinaryUdp => "jaeger-thrift-binary-udp",
            Self::Zipkin => "zipkin",
        }
    }

    /// Whether it takes datagrams (which carry no credentials).
    pub fn is_udp(self) -> bool {
        matches!(self, Self::JaegerThriftCompactUdp | Self::JaegerThriftBinaryUdp)
    }
}

impl ReceiversConfig {
    /// Every Jaeger and Zipkin listener configured: role and address.
    pub fn extra_listeners(&self) -> Vec<(ReceiverRole, String)> {
        let mut out = Vec::new();
        if let Some(j) = &self.jaeger {
            let p = &j.protocols;
            let list = [
                (
                    ReceiverRole::JaegerThriftHttp,
                    &p.thrift_http,
                    ports::JAEGER_THRIFT_HTTP,
                ),
                (ReceiverRole::JaegerGrpc, &p.grpc, ports::JAEGER_GRPC),
                (
                    ReceiverRole::JaegerThriftCompactUdp,
                    &p.thrift_compact,
                    ports::JAEGER_THRIFT_COMPACT,
                ),
                (
                    ReceiverRole::JaegerThriftBinaryUdp,
                    &p.thrift_binary,
                    ports::JAEGER_THRIFT_BINARY,
                ),
            ];
            for (role, endpoint, port) in list {
                if let Some(e) = endpoint {
                    out.push((role, e.or_port(port)));
                }
            }
        }
        if let Some(z) = &self.zipkin {
            let endpoint = z
                .endpoint
                .clone()
                .unwrap_or_else(|| format!("127.0.0.1:{}", ports::ZIPKIN));
            out.push((ReceiverRole::Zipkin, endpoint));
        }
        out
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpReceiverConfig {
    pub protocols: OtlpProtocols,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpProtocols {
    pub grpc: Endpoint,
    pub http: Endpoint,
}

impl Default for OtlpProtocols {
    fn default() -> Self {
        Self {
            grpc: Endpoint {
                endpoint: "127.0.0.1:4317".into(),
            },
            http: Endpoint {
                endpoint: "127.0.0.1:4318".into(),
            },
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub endpoint: String,
}

/// Tempo's `ingester` block: when live spans become table files, and how much may wait.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngesterConfig {
    #[serde(deserialize_with = "duration::deserialize", serialize_with = "duration::serialize")]
    pub max_block_duration: Duration,
    pub max_block_bytes: usize,
    /// All tenants' live spans together; beyond it receivers answer 429 / ResourceExhausted.
    pub max_live_bytes: usize,
    #[serde(deserialize_with = "duration::deserialize", serialize_with = "duration::serialize")]
    pub flush_check_period: Duration,
    /// Appends waiting for the WAL writer; beyond it receivers answer 429.
    pub wal_queue_max_requests: usize,
    pub wal_segment_max_bytes: u64,
    /// Most bytes written between two WAL fsyncs (one group commit).
    pub wal_group_commit_max_bytes: usize,
    /// A trace that received no span for this long is no longer live: it no longer counts
    /// towards `max_traces_per_user`, and its size towards `max_bytes_per_trace` starts over.
    #[serde(deserialize_with = "duration::deserialize", serialize_with = "duration::serialize")]
    pub trace_idle_period: Duration,
}

impl Default for IngesterConfig {
    fn default() -> Self {
        Self {
            max_block_duration: Duration::from_secs(300),
            max_block_bytes: 256 << 20,
            max_live_bytes: 1 << 30,
            flush_check_period: Duration::from_secs(1),
            wal_queue_max_requests: 1024,
            wal_segment_max_bytes: 64 << 20,
            wal_group_commit_max_bytes: 8 << 20,
            trace_idle_period: Duration::from_secs(10),
        }
    }
}

/// Tempo's `storage` block.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageBlock {
    pub trace: TraceStorage,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TraceStorage {
    /// `local` or `s3`.
    pub backend: String,
    pub local: LocalStorage,
    pub s3: S3Config,
    pub wal: WalStorage,
}

impl Default for TraceStorage {
    fn default() -> Self {
        Self {
            backend: "local".into(),
            local: LocalStorage::default(),
            s3: S3Config::default(),
            wal: WalStorage::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalStorage {
    pub path: PathBuf,
}

impl Default for LocalStorage {
    fn default() -> Self {
        Self {
            path: PathBuf::from("./tracehouse-data"),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WalStorage {
    /// Defaults to `<storage.trace.local.path>/wal`.
    pub path: Option<PathBuf>,
}

/// The Postgres wire server.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    pub enabled: bool,
    pub listen_address: String,
    pub max_connections: usize,
    /// A connection with no query running for this long is closed.
    #[serde(deserialize_with = "duration::deserialize", serialize_with = "duration::serialize")]
    pub idle_timeout: Duration,
    /// User name to its password (`alice: secret`), or to `{password, tenant}` for a user that
    /// reads only that tenant. Empty: any user, no password.
    pub users: BTreeMap<String, PostgresUser>,
}

/// A Postgres user: a password, or a password and the one tenant it may read.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum PostgresUser {
    Password(String),
    Bound { password: String, tenant: String },
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen_address: "127.0.0.1:5432".into(),
            max_connections: 100,
            idle_timeout: Duration::from_secs(600),
            users: BTreeMap::new(),
        }
    }
}

impl PostgresConfig {
    /// The users as the Postgres server takes them.
    pub fn pg_users(&self) -> std::collections::HashMap<String, tracehouse_postgres::PgUser> {
        use tracehouse_postgres::PgUser;
        self.users
            .iter()
            .map(|(name, user)| {
                let user = match user {
                    PostgresUser::Password(password) => PgUser {
                        password: password.clone(),
                        tenant: None,
                    },
                    PostgresUser::Bound { password, tenant } => PgUser {
                        password: password.clone(),
                        tenant: Some(tenant.clone()),
                    },
                };
                (name.clone(), user)
            })
            .collect()
    }
}

/// The Arrow Flight server (port 8815 by default: free of Tempo's and OTLP's ports, and the
/// port pyarrow's Flight examples use).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlightConfig {
    pub enabled: bool,
    pub listen_address: String,
    /// Credentials; with any listed, every call must present one (see `tracehouse_flight::auth`).
    pub auth: Vec<FlightCredential>,
}

impl Default for FlightConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen_address: "127.0.0.1:8815".into(),
            auth: Vec::new(),
        }
    }
}

/// One Flight credential: a bearer token, or a username and password; optionally bound to a
/// tenant.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlightCredential {
    pub bearer_token: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// When set, these credentials read only this tenant.
    pub tenant: Option<String>,
}

/// The authenticator a list of credentials (`flight.auth`, `server.auth`) describes; `key`
/// names the list in errors.
pub fn authenticator(key: &str, list: &[FlightCredential]) -> Result<tracehouse_flight::auth::Auth, String> {
    use tracehouse_flight::auth::{Auth, Credential, Secret};
    let mut credentials = Vec::with_capacity(list.len());
    for (i, c) in list.iter().enumerate() {
        let secret = match (&c.bearer_token, &c.username, &c.password) {
            (Some(token), None, None) => Secret::Bearer(token.clone()),
            (None, Some(username), Some(password)) => Secret::Basic {
                username: username.clone(),
                password: password.clone(),
            },
            _ => {
                return Err(format!(
                    "{key}[{i}]: give either bearer_token, or username and password"
                ));
            }
        };
        if let Some(t) = &c.tenant {
            tracehouse_warehouse::storage::validate_tenant(t).map_err(|e| format!("{key}[{i}].tenant: {e}"))?;
        }
        credentials.push(Credential {
            secret,
            tenant: c.tenant.clone(),
        });
    }
    Auth::new(credentials).map_err(|e| format!("{key}: {e}"))
}

impl FlightConfig {
    /// The authenticator of the Flight port: `flight.auth`, else `server.auth`.
    pub fn authenticator(&self, server: &ServerConfig) -> Result<tracehouse_flight::auth::Auth, String> {
        if self.auth.is_empty() {
            authenticator("server.auth", &server.auth)
        } else {
            authenticator("flight.auth", &self.auth)
        }
    }
}

/// The query engine.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    pub max_memory_bytes: usize,
    /// Longest a query may plan and run (a Postgres session may set a shorter
    /// `statement_timeout`).
    #[serde(deserialize_with = "duration::deserialize", serialize_with = "duration::serialize")]
    pub timeout: Duration,
    /// Tenant query sessions kept in memory; the least recently used is dropped past this.
    pub max_tenant_sessions: usize,
    /// Queries one tenant may run at once over all fronts; more are refused (HTTP 429,
    /// ResourceExhausted, SQLSTATE 53000) while other tenants are served.
    pub max_concurrent_queries_per_tenant: usize,
    /// Queries taking longer are logged (`0s`: none).
    #[serde(deserialize_with = "duration::deserialize", serialize_with = "duration::serialize")]
    pub slow_query_threshold: Duration,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            max_memory_bytes: 2 << 30,
            timeout: Duration::from_secs(300),
            max_tenant_sessions: 64,
            max_concurrent_queries_per_tenant: 20,
            slow_query_threshold: Duration::from_secs(5),
        }
    }
}

/// Sets `path` (dot-separated, dashes read as underscores) in `root` to the YAML scalar
/// `value`; fields named `*_addresses` take a comma-separated list.
fn set_path(root: &mut serde_yaml::Value, path: &str, value: &str) -> Result<(), String> {
    use serde_yaml::{Mapping, Value};
    let keys: Vec<String> = path.split('.').map(|k| k.replace('-', "_")).collect();
    if keys.iter().any(String::is_empty) {
        return Err(format!("bad flag -{path}"));
    }
    let mut node = root;
    for key in &keys[..keys.len() - 1] {
        if !node.is_mapping() {
            *node = Value::Mapping(Mapping::new());
        }
        let map = node.as_mapping_mut().expect("made a mapping");
        node = map
            .entry(Value::String(key.clone()))
            .or_insert_with(|| Value::Mapping(Mapping::new()));
    }
    let last = keys.last().expect("non-empty path");
    let parsed = if last.ends_with("_addresses") {
        Value::Sequence(
            value
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| Value::String(v.to_string()))
                .collect(),
        )
    } else {
        match serde_yaml::from_str::<Value>(value) {
            Ok(v @ (Value::Bool(_) | Value::Number(_))) => v,
            _ => Value::String(value.to_string()),
        }
    };
    if !node.is_mapping() {
        *node = Value::Mapping(Mapping::new());
    }
    node.as_mapping_mut()
        .expect("made a mapping")
        .insert(Value::String(last.clone()), parsed);
    Ok(())
}

/// How `/status/config` shows a secret, as Tempo does.
pub const MASKED: &str = "********";

/// Replaces every secret in `value` (or all of it, under `all`) by [`MASKED`].
fn mask_secrets(value: &mut serde_yaml::Value, all: bool) {
    match value {
        serde_yaml::Value::Mapping(map) => {
            for (key, v) in map.iter_mut() {
                let key = key.as_str().unwrap_or("");
                let secret = ["password", "secret", "token"].iter().any(|s| key.contains(s));
                mask_secrets(v, all || secret || key == "users");
            }
        }
        serde_yaml::Value::Sequence(items) => items.iter_mut().for_each(|v| mask_secrets(v, all)),
        serde_yaml::Value::Null => {}
        other if all => *other = serde_yaml::Value::from(MASKED),
        _ => {}
    }
}

impl Config {
    /// Parses YAML text.
    #[cfg(test)]
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        Self::from_yaml_with(text, &[])
    }

    /// Parses YAML text, then applies `overrides` (`(path, value)` from flags) over it.
    pub fn from_yaml_with(text: &str, overrides: &[(String, String)]) -> Result<Self, String> {
        let mut root: serde_yaml::Value = if text.trim().is_empty() {
            serde_yaml::Value::Mapping(serde_yaml::Mapping::new())
        } else {
            serde_yaml::from_str(text).map_err(|e| format!("config: {e}"))?
        };
        if root.is_null() {
            root = serde_yaml::Value::Mapping(serde_yaml::Mapping::new());
        }
        for (path, value) in overrides {
            set_path(&mut root, path, value)?;
        }
        serde_yaml::from_value(root).map_err(|e| {
            if overrides.is_empty() {
                format!("config: {e}")
            } else {
                format!("config (with flags): {e}")
            }
        })
    }

    /// The configuration in force, every default filled in, as YAML (`/status/config`), with
    /// secrets (passwords, secret keys, bearer tokens, Postgres users' passwords) masked.
    pub fn masked_yaml(&self) -> String {
        let mut value = serde_yaml::to_value(self).expect("the config serializes");
        mask_secrets(&mut value, false);
        serde_yaml::to_string(&value).expect("yaml value")
    }

    /// The WAL directory.
    pub fn wal_path(&self) -> PathBuf {
        self.storage
            .trace
            .wal
            .path
            .clone()
            .unwrap_or_else(|| self.storage.trace.local.path.join("wal"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_set_any_field() {
        let o = |k: &str, v: &str| (k.to_string(), v.to_string());
        let c = Config::from_yaml_with(
            "server:\n  log_level: warn\n",
            &[
                o("server.http-listen-port", "3201"),
                o("ingest.kafka.consumer-group", "g1"),
                o("ingest.kafka.address", "127.0.0.1:9092"),
                o("ingest.kafka.auto_create_topic_enabled", "false"),
                o("querier.live-store-addresses", "a:1, b:2"),
                o("block_builder.consume_cycle_duration", "250ms"),
            ],
        )
        .unwrap();
        assert_eq!(c.server.http_listen_port, 3201);
        assert_eq!(c.server.log_level, "warn");
        assert_eq!(c.ingest.kafka.consumer_group, "g1");
        assert_eq!(c.ingest.kafka.address, "127.0.0.1:9092");
        assert!(!c.ingest.kafka.auto_create_topic_enabled);
        assert_eq!(c.querier.live_store_addresses, vec!["a:1", "b:2"]);
        assert_eq!(c.block_builder.consume_cycle_duration, Duration::from_millis(250));
        let err = Config::from_yaml_with("", &[o("ingest.kafka.nope", "1")]).unwrap_err();
        assert!(err.contains("unknown field `nope`"), "{err}");
    }

    #[test]
    fn query_slos_read_as_tempo_writes_them() {
        let yaml = "query_frontend:\n  search:\n    duration_slo: 5s\n    metadata_slo:\n      duration_slo: 1s\n  \
                    trace_by_id:\n    duration_slo: 2s\n  metrics:\n    duration_slo: 3s\n";
        let slos = Config::from_yaml_with(yaml, &[]).unwrap().query_frontend.slos();
        let s = Duration::from_secs;
        assert_eq!(
            slos,
            crate::tempo_metrics::QuerySlos {
                traces: s(2),
                search: s(5),
                metadata: s(1),
                metrics: s(3),
            }
        );
    }

    #[test]
    fn legacy_defaults_beside_the_scoped_block() {
        let c = |yaml: &str| {
            Config::from_yaml_with(yaml, &[])
                .unwrap()
                .overrides
                .effective_defaults()
        };
        let legacy = "overrides:\n  enable_legacy_overrides: true\n  max_bytes_per_trace: 7\n  block_retention: 1h\n";
        let o = c(legacy).unwrap();
        assert_eq!(o.global.max_bytes_per_trace, Some(7));
        assert_eq!(o.compaction.block_retention, Some(Duration::from_secs(3600)));
        let off = c("overrides:\n  max_bytes_per_trace: 7\n").unwrap_err();
        assert!(off.contains("legacy overrides are disabled"), "{off}");
        let typo = c("overrides:\n  per_tenant_override_perod: 5s\n").unwrap_err();
        assert!(
            typo.contains("unknown overrides key per_tenant_override_perod"),
            "{typo}"
        );
        let mixed = "overrides:\n  enable_legacy_overrides: true\n  max_bytes_per_trace: 7\n  \
                     defaults:\n    global:\n      max_bytes_per_trace: 8\n";
        assert!(c(mixed).unwrap_err().contains("mixes"));
        let scoped = c("overrides:\n  defaults:\n    global:\n      max_bytes_per_trace: 8\n").unwrap();
        assert_eq!(scoped.global.max_bytes_per_trace, Some(8));
    }

    #[test]
    fn status_config_masks_secrets() {
        let text = "postgres:\n  users:\n    alice: s3cr1\n    bob: {password: s3cr2, tenant: t}\n\
                    server:\n  auth: [{bearer_token: s3cr3}]\n\
                    storage:\n  trace:\n    s3: {bucket: b, access_key: ak, secret_key: s3cr4}\n\
                    ingest:\n  kafka: {sasl_password: s3cr5}\n";
        let yaml = Config::from_yaml(text).unwrap().masked_yaml();
        for secret in ["s3cr1", "s3cr2", "s3cr3", "s3cr4", "s3cr5"] {
            assert!(!yaml.contains(secret), "{secret} shown: {yaml}");
        }
        assert!(yaml.contains("bucket: b") && yaml.contains("access_key: ak"), "{yaml}");
        assert!(
            yaml.contains("http_listen_port: 3200") && yaml.contains("max_block_duration: 5m"),
            "{yaml}"
        );
        let back = Config::from_yaml(&yaml).unwrap();
        assert_eq!(
            back.ingester.max_block_duration,
            Duration::from_secs(300),
            "the output reads back"
        );
    }

    #[test]
    fn readme_example_parses() {
        let text = include_str!("../../tracehouse.example.yaml");
        let c = Config::from_yaml(text).unwrap();
        assert_eq!(c.server.http_listen_port, 3200);
        assert_eq!(c.ingester.max_block_duration, Duration::from_secs(300));
        assert!(Config::from_yaml("bogus_key: 1").unwrap_err().contains("unknown field"));
        let body: Vec<&str> = text.lines().skip_while(|l| l.starts_with('#')).collect();
        let readme = include_str!("../../README.md");
        assert!(
            readme.contains(&body.join("\n")),
            "README.md shows tracehouse.example.yaml verbatim"
        );
    }
}
