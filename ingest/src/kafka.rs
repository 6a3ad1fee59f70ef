//! Kafka between the distributor and the block-builders and live-stores: client settings
//! (SASL, TLS), topic creation through the AdminClient, the record format, the producer that
//! acknowledges a request only once the brokers acknowledged every record of it, and record
//! decoding (ours and the OpenTelemetry Collector's `otlp_proto` and `otlp_json`).
//!
//! A record is an OTLP `ExportTraceServiceRequest` in protobuf (the Collector's `otlp_proto`
//! encoding), holding the spans of one request that hash to one partition by trace id, with the
//! tenant in the `X-Scope-OrgID` header. Records without that header belong to
//! `single-tenant`; a payload starting with `{` is read as OTLP JSON (`otlp_json`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use prost::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::statistics::Statistics;
use rdkafka::util::Timeout;
use tracehouse_warehouse::storage::DEFAULT_TENANT;

use crate::otlp::{BodyFormat, parse_request, request_to_batch};
use crate::{Error, Result};

/// Record header naming the tenant (matched without regard to case).
pub const TENANT_HEADER: &str = "X-Scope-OrgID";

/// Most partitions a topic may have for us (a bound on per-partition state).
pub const MAX_PARTITIONS: i32 = 4096;

/// Connection and topic settings, Tempo's `ingest.kafka` block (the YAML reads into it).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port[,host:port]`.
    pub address: String,
    pub topic: String,
    /// The block-builders' consumer group; live-stores read its committed offsets.
    pub consumer_group: String,
    pub client_id: String,
    /// How long a produce may take before the request fails with 503 / Unavailable.
    #[serde(
        deserialize_with = "crate::duration::deserialize",
        serialize_with = "crate::duration::serialize"
    )]
    pub write_timeout: Duration,
    pub auto_create_topic_enabled: bool,
    pub auto_create_topic_default_partitions: i32,
    pub auto_create_topic_replication_factor: i32,
    /// Largest record the producer sends; bigger partition payloads are split.
    pub producer_max_record_size_bytes: usize,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`; SASL is off when empty.
    pub sasl_mechanism: String,
    pub sasl_username: String,
    pub sasl_password: String,
    pub tls_enabled: bool,
    pub tls_ca_path: String,
    pub tls_cert_path: String,
    pub tls_key_path: String,
    pub tls_insecure_skip_verify: bool,
    /// How often consumers report lag (librdkafka statistics); not configurable.
    #[serde(skip)]
    pub stats_interval: Duration,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            address: "localhost:9092".into(),
            topic: "tracehouse-ingest".into(),
            consumer_group: "tracehouse-block-builder".into(),
            client_id: "tracehouse".into(),
            write_timeout: Duration::from_secs(10),
            auto_create_topic_enabled: true,
            auto_create_topic_default_partitions: 8,
            auto_create_topic_replication_factor: 1,
            producer_max_record_size_bytes: 4 << 20,
            sasl_mechanism: String::new(),
            sasl_username: String::new(),
            sasl_password: String::new(),
            tls_enabled: false,
            tls_ca_path: String::new(),
            tls_cert_path: String::new(),
            tls_key_path: String::new(),
            tls_insecure_skip_verify: false,
            stats_interval: Duration::from_secs(5),
        }
    }
}

impl KafkaConfig {
    /// Checks what librdkafka would only report later, or never.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Kafka(m));
        if self.address.trim().is_empty() {
            return bad("ingest.kafka.address is empty".into());
        }
        if self.topic.trim().is_empty() || self.consumer_group.trim().is_empty() {
            return bad("ingest.kafka.topic and ingest.kafka.consumer_group must be set".into());
        }
        if !(1..=MAX_PARTITIONS).contains(&self.auto_create_topic_default_partitions) {
            return bad(format!(
                "ingest.kafka.auto_create_topic_default_partitions must be 1 to {MAX_PARTITIONS}"
            ));
        }
        match self.sasl_mechanism.to_ascii_uppercase().as_str() {
            "" | "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512" => {}
            other => {
                return bad(format!(
                    "ingest.kafka.sasl_mechanism {other:?} is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
                ));
            }
        }
        if self.write_timeout.is_zero() || self.producer_max_record_size_bytes < 1024 {
            return bad("ingest.kafka.write_timeout and producer_max_record_size_bytes must be positive".into());
        }
        Ok(())
    }

    /// librdkafka settings shared by producers, consumers and the admin client.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.address)
            .set("client.id", &self.client_id)
            .set("socket.keepalive.enable", "true")
            .set("reconnect.backoff.max.ms", "2000")
            .set("log_level", "4");
        let sasl = !self.sasl_mechanism.is_empty();
        let protocol = match (sasl, self.tls_enabled) {
            (false, false) => "plaintext",
            (false, true) => "ssl",
            (true, false) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        };
        c.set("security.protocol", protocol);
        if sasl {
            c.set("sasl.mechanism", self.sasl_mechanism.to_ascii_uppercase())
                .set("sasl.username", &self.sasl_username)
                .set("sasl.password", &self.sasl_password);
        }
        if self.tls_enabled {
            let files = [
                ("ssl.ca.location", &self.tls_ca_path),
                ("ssl.certificate.location", &self.tls_cert_path),
                ("ssl.key.location", &self.tls_key_path),
            ];
            for (key, value) in files {
                if !value.is_empty() {
                    c.set(key, value);
                }
            }
            if self.tls_insecure_skip_verify {
                c.set("enable.ssl.certificate.verification", "false")
                    .set("ssl.endpoint.identification.algorithm", "none");
            }
        }
        c
    }
}

/// The Delta `txn` application id under which a table records how far it holds `partition`.
pub fn txn_app_id(topic: &str, partition: i32) -> String {
    format!("tracehouse-kafka-{topic}-{partition}")
}

/// The partition of a trace: FNV-1a of its id, modulo `partitions`.
pub fn partition_of(trace_id: &[u8], partitions: i32) -> i32 {
    assert!(partitions > 0);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in trace_id {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i32::try_from(h % partitions.unsigned_abs() as u64).expect("partition fits i32")
}

/// Splits `request` into one request per partition (by trace id), keeping each span's resource
/// and scope.
pub fn split_request(request: &ExportTraceServiceRequest, partitions: i32) -> BTreeMap<i32, ExportTraceServiceRequest> {
    let mut out: BTreeMap<i32, ExportTraceServiceRequest> = BTreeMap::new();
    for rs in &request.resource_spans {
        // Per partition: the index of this resource's copy in that partition's request.
        let mut resource_at: HashMap<i32, usize> = HashMap::new();
        for ss in &rs.scope_spans {
            let mut scope_at: HashMap<i32, usize> = HashMap::new();
            for span in &ss.spans {
                let p = partition_of(&span.trace_id, partitions);
                let req = out.entry(p).or_default();
                let r = *resource_at.entry(p).or_insert_with(|| {
                    req.resource_spans.push(ResourceSpans {
                        resource: rs.resource.clone(),
                        scope_spans: Vec::new(),
                        schema_url: rs.schema_url.clone(),
                    });
                    req.resource_spans.len() - 1
                });
                let scopes = &mut req.resource_spans[r].scope_spans;
                let s = *scope_at.entry(p).or_insert_with(|| {
                    scopes.push(ScopeSpans {
                        scope: ss.scope.clone(),
                        spans: Vec::new(),
                        schema_url: ss.schema_url.clone(),
                    });
                    scopes.len() - 1
                });
                scopes[s].spans.push(span.clone());
            }
        }
    }
    out
}

/// Encodes one partition's request as records of at most `max_bytes` each (splitting by
/// resource, then by span, when needed).
pub fn encode_records(request: &ExportTraceServiceRequest, max_bytes: usize) -> Vec<Vec<u8>> {
    if request.encoded_len() <= max_bytes {
        return vec![request.encode_to_vec()];
    }
    let spans: usize = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    if spans <= 1 {
        // One span over the limit: sent whole; the broker's own limit decides.
        return vec![request.encode_to_vec()];
    }
    // Halve by span count, keeping resources and scopes.
    let half = spans / 2;
    let (mut left, mut right) = (
        ExportTraceServiceRequest::default(),
        ExportTraceServiceRequest::default(),
    );
    let mut seen = 0usize;
    for rs in &request.resource_spans {
        let (mut l, mut r) = (rs.clone(), rs.clone());
        l.scope_spans.clear();
        r.scope_spans.clear();
        for ss in &rs.scope_spans {
            let (mut ls, mut rsc) = (ss.clone(), ss.clone());
            ls.spans.clear();
            rsc.spans.clear();
            for span in &ss.spans {
                if seen < half {
                    ls.spans.push(span.clone());
                } else {
                    rsc.spans.push(span.clone());
                }
                seen += 1;
            }
            if !ls.spans.is_empty() {
                l.scope_spans.push(ls);
            }
            if !rsc.spans.is_empty() {
                r.scope_spans.push(rsc);
            }
        }
        if !l.scope_spans.is_empty() {
            left.resource_spans.push(l);
        }
        if !r.scope_spans.is_empty() {
            right.resource_spans.push(r);
        }
    }
    let mut out = encode_records(&left, max_bytes);
    out.extend(encode_records(&right, max_bytes));
    out
}

/// The tenant a record's headers name, `single-tenant` when none does.
pub fn record_tenant<H: Headers>(headers: Option<&H>) -> String {
    if let Some(headers) = headers {
        for h in headers.iter() {
            if h.key.eq_ignore_ascii_case(TENANT_HEADER)
                && let Some(v) = h.value.and_then(|v| std::str::from_utf8(v).ok())
                && !v.trim().is_empty()
            {
                return v.trim().to_string();
            }
        }
    }
    DEFAULT_TENANT.to_string()
}

/// Decodes a record's payload (OTLP protobuf, or OTLP JSON when it starts with `{`).
pub fn decode_payload(payload: &[u8]) -> Result<RecordBatch> {
    let json = payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let format = if json { BodyFormat::Json } else { BodyFormat::Protobuf };
    request_to_batch(&parse_request(payload, format)?)
}

/// Counters and gauges of the Kafka clients, for `/metrics`.
#[derive(Debug, Default)]
pub struct KafkaStats {
    pub records_produced: AtomicU64,
    pub bytes_produced: AtomicU64,
    pub produce_errors: AtomicU64,
    pub records_consumed: AtomicU64,
    pub records_undecodable: AtomicU64,
    /// Records a block-builder skipped because the table already held them.
    pub records_already_committed: AtomicU64,
    pub table_commits: AtomicU64,
    pub table_commit_errors: AtomicU64,
    pub table_commit_micros_total: AtomicU64,
    pub offset_commits: AtomicU64,
    pub offset_commit_errors: AtomicU64,
    pub rebalances: AtomicU64,
    /// Last metadata request (or produce) succeeded.
    pub connected: AtomicBool,
    /// Consumer lag per partition, from librdkafka's statistics.
    pub lag: Mutex<BTreeMap<i32, i64>>,
}

/// Client context that records lag and logs rebalances.
pub struct Context {
    pub stats: Arc<KafkaStats>,
    topic: String,
}

impl Context {
    pub fn new(stats: Arc<KafkaStats>, topic: &str) -> Self {
        Self {
            stats,
            topic: topic.to_string(),
        }
    }
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        if let Some(topic) = statistics.topics.get(&self.topic) {
            // Rebuilt from each report: only partitions this member is fetching now, so a
            // partition revoked in a rebalance stops being reported here.
            let current: BTreeMap<i32, i64> = topic
                .partitions
                .iter()
                .filter(|(p, part)| **p >= 0 && part.consumer_lag >= 0 && part.fetch_state == "active")
                .map(|(p, part)| (*p, part.consumer_lag))
                .collect();
            *self.stats.lag.lock().expect("lag lock") = current;
        }
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.stats.rebalances.fetch_add(1, Ordering::Relaxed);
        if let Rebalance::Revoke(list) = rebalance {
            let mut lag = self.stats.lag.lock().expect("lag lock");
            let parts: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
            for p in &parts {
                lag.remove(p);
            }
            tracing::info!(partitions = ?parts, "kafka partitions revoked");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let parts: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
            tracing::info!(partitions = ?parts, "kafka partitions assigned");
        }
    }
}

/// The topic's partition count, creating the topic first when it is missing and creation is on.
pub async fn ensure_topic(config: &KafkaConfig) -> Result<i32> {
    let probe: FutureProducer = config
        .client_config()
        .create()
        .map_err(|e| Error::Kafka(format!("creating kafka client: {e}")))?;
    if let Some(n) = partition_count(&probe, &config.topic).await? {
        return Ok(n);
    }
    if !config.auto_create_topic_enabled {
        return Err(Error::Unavailable(format!(
            "kafka topic {:?} does not exist and ingest.kafka.auto_create_topic_enabled is false",
            config.topic
        )));
    }
    let admin: AdminClient<DefaultClientContext> = config
        .client_config()
        .create()
        .map_err(|e| Error::Kafka(format!("creating kafka admin client: {e}")))?;
    let topic = NewTopic::new(
        &config.topic,
        config.auto_create_topic_default_partitions,
        TopicReplication::Fixed(config.auto_create_topic_replication_factor),
    );
    let options = AdminOptions::new().operation_timeout(Some(Timeout::After(Duration::from_secs(10))));
    let results = admin
        .create_topics([&topic], &options)
        .await
        .map_err(|e| Error::Unavailable(format!("creating kafka topic {:?}: {e}", config.topic)))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(Error::Unavailable(format!("creating kafka topic {name:?}: {code}"))),
        }
    }
    tracing::info!(topic = %config.topic, partitions = config.auto_create_topic_default_partitions, "created kafka topic");
    for _ in 0..50 {
        if let Some(n) = partition_count(&probe, &config.topic).await? {
            return Ok(n);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(Error::Unavailable(format!(
        "kafka topic {:?} created but has no metadata",
        config.topic
    )))
}

/// The partition count of `topic`, `None` when it does not exist.
pub async fn partition_count<C: ClientContext + 'static>(
    client: &FutureProducer<C>,
    topic: &str,
) -> Result<Option<i32>> {
    let client = client.client();
    let metadata = tokio::task::block_in_place(|| client.fetch_metadata(Some(topic), Duration::from_secs(5)))
        .map_err(|e| Error::Unavailable(format!("kafka metadata: {e}")))?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    if t.error().is_some() || t.partitions().is_empty() {
        return Ok(None);
    }
    let n = i32::try_from(t.partitions().len()).unwrap_or(i32::MAX);
    if n > MAX_PARTITIONS {
        return Err(Error::Kafka(format!(
            "kafka topic {topic:?} has {n} partitions; at most {MAX_PARTITIONS} are supported"
        )));
    }
    Ok(Some(n))
}

/// Checks every `interval` that the brokers answer and the topic exists, setting `connected`,
/// until `shutdown` changes (the consumers' readiness).
pub async fn watch(
    config: KafkaConfig,
    stats: Arc<KafkaStats>,
    interval: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let probe: FutureProducer = match config.client_config().create() {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "creating kafka client");
            return;
        }
    };
    loop {
        let ok = match partition_count(&probe, &config.topic).await {
            Ok(Some(_)) => true,
            Ok(None) => false,
            Err(e) => {
                tracing::debug!(error = %e, "kafka check failed");
                false
            }
        };
        if stats.connected.swap(ok, Ordering::AcqRel) != ok {
            tracing::info!(connected = ok, "kafka connectivity changed");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// The distributor's producer: idempotent, `acks=all`.
pub struct Producer {
    producer: FutureProducer,
    config: KafkaConfig,
    partitions: AtomicI32,
    stats: Arc<KafkaStats>,
}

impl Producer {
    /// Creates the producer; [`maintain`](Self::maintain) learns (and creates) the topic.
    pub fn new(config: &KafkaConfig, stats: Arc<KafkaStats>) -> Result<Self> {
        config.validate()?;
        let producer: FutureProducer = config
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("message.timeout.ms", config.write_timeout.as_millis().to_string())
            .set(
                "message.max.bytes",
                (config.producer_max_record_size_bytes + 64 * 1024).to_string(),
            )
            .create()
            .map_err(|e| Error::Kafka(format!("creating kafka producer: {e}")))?;
        Ok(Self {
            producer,
            config: config.clone(),
            partitions: AtomicI32::new(0),
            stats,
        })
    }

    /// Learns the topic's partitions (creating it when allowed), then re-checks the brokers every
    /// `interval` until `shutdown` changes; `connected` follows the outcome.
    pub async fn maintain(&self, interval: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            let result = if self.partitions.load(Ordering::Acquire) == 0 {
                ensure_topic(&self.config).await
            } else {
                partition_count(&self.producer, &self.config.topic).await.and_then(|n| {
                    n.ok_or_else(|| Error::Unavailable(format!("kafka topic {:?} vanished", self.config.topic)))
                })
            };
            match result {
                Ok(n) => {
                    let before = self.partitions.swap(n, Ordering::AcqRel);
                    if before != n {
                        tracing::info!(topic = %self.config.topic, partitions = n, "kafka topic ready");
                    }
                    self.stats.connected.store(true, Ordering::Release);
                }
                Err(e) => {
                    if self.stats.connected.swap(false, Ordering::AcqRel)
                        || self.partitions.load(Ordering::Acquire) == 0
                    {
                        tracing::warn!(error = %e, "kafka not reachable");
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// The partition count in use (0 before the topic is known).
    pub fn partitions(&self) -> i32 {
        self.partitions.load(Ordering::Acquire)
    }

    /// Sends the spans of `request` for `tenant`, returning once every record is acknowledged
    /// by the brokers (or failing with [`Error::Unavailable`]). Returns the records sent.
    pub async fn send(&self, tenant: &str, request: &ExportTraceServiceRequest) -> Result<usize> {
        let partitions = self.partitions();
        if partitions == 0 {
            return Err(Error::Unavailable(format!(
                "kafka topic {:?} is not available yet",
                self.config.topic
            )));
        }
        let started = Instant::now();
        let mut payloads = Vec::new();
        for (p, part) in split_request(request, partitions) {
            for bytes in encode_records(&part, self.config.producer_max_record_size_bytes) {
                payloads.push((p, bytes));
            }
        }
        let sends = payloads.iter().map(|(p, bytes)| {
            let headers = OwnedHeaders::new().insert(Header {
                key: TENANT_HEADER,
                value: Some(tenant),
            });
            let record: FutureRecord<'_, (), Vec<u8>> = FutureRecord::to(&self.config.topic)
                .partition(*p)
                .payload(bytes)
                .headers(headers);
            self.producer.send(record, Timeout::After(self.config.write_timeout))
        });
        let results = futures::future::join_all(sends).await;
        let mut first_err: Option<KafkaError> = None;
        for r in results {
            if let Err((e, _)) = r {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            None => {
                let bytes: usize = payloads.iter().map(|(_, b)| b.len()).sum();
                self.stats
                    .records_produced
                    .fetch_add(payloads.len() as u64, Ordering::Relaxed);
                self.stats.bytes_produced.fetch_add(bytes as u64, Ordering::Relaxed);
                self.stats.connected.store(true, Ordering::Release);
                tracing::trace!(
                    records = payloads.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "produced"
                );
                Ok(payloads.len())
            }
            Some(e) => {
                self.stats.produce_errors.fetch_add(1, Ordering::Relaxed);
                Err(Error::Unavailable(format!("kafka did not acknowledge the spans: {e}")))
            }
        }
    }

    /// Waits up to `timeout` for queued records to be delivered.
    pub fn flush(&self, timeout: Duration) {
        let _ = self.producer.flush(timeout);
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::trace::v1::Span;

    use super::*;

    fn request(traces: u8, spans_per_trace: u8) -> ExportTraceServiceRequest {
        let mut spans = Vec::new();
        for t in 0..traces {
            for s in 0..spans_per_trace {
                spans.push(Span {
                    trace_id: vec![t + 1; 16],
                    span_id: vec![s + 1; 8],
                    name: format!("s{t}-{s}"),
                    start_time_unix_nano: 1,
                    end_time_unix_nano: 2,
                    ..Span::default()
                });
            }
        }
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: None,
                scope_spans: vec![ScopeSpans {
                    scope: None,
                    spans,
                    schema_url: "s".into(),
                }],
                schema_url: "r".into(),
            }],
        }
    }

    fn spans(r: &ExportTraceServiceRequest) -> Vec<&opentelemetry_proto::tonic::trace::v1::Span> {
        r.resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .collect()
    }

    #[test]
    fn split_keeps_every_span_once_and_traces_whole() {
        let req = request(40, 3);
        let parts = split_request(&req, 7);
        assert!(parts.len() > 1);
        let mut total = 0;
        for (p, part) in &parts {
            for s in spans(part) {
                assert_eq!(partition_of(&s.trace_id, 7), *p);
                total += 1;
            }
            assert_eq!(part.resource_spans[0].schema_url, "r");
            assert_eq!(part.resource_spans[0].scope_spans[0].schema_url, "s");
        }
        assert_eq!(total, 120);
        assert_eq!(split_request(&req, 1).len(), 1);
    }

    #[test]
    fn big_payloads_are_split_under_the_limit() {
        let req = request(50, 10);
        let whole = req.encoded_len();
        let records = encode_records(&req, whole / 5);
        assert!(records.len() >= 5);
        let mut total = 0;
        for r in &records {
            assert!(r.len() <= whole / 5);
            total += spans(&ExportTraceServiceRequest::decode(r.as_slice()).unwrap()).len();
        }
        assert_eq!(total, 500);
    }

    #[test]
    fn payloads_decode_as_protobuf_or_json() {
        let req = request(2, 2);
        assert_eq!(decode_payload(&req.encode_to_vec()).unwrap().num_rows(), 4);
        let json = r#" {"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"x","startTimeUnixNano":"1","endTimeUnixNano":"2"}]}]}]}"#;
        assert_eq!(decode_payload(json.as_bytes()).unwrap().num_rows(), 1);
        assert!(decode_payload(b"\xff\xff garbage").is_err());
    }

    #[test]
    fn config_checks() {
        assert!(KafkaConfig::default().validate().is_ok());
        let c = KafkaConfig {
            sasl_mechanism: "GSSAPI".into(),
            ..KafkaConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("sasl_mechanism"));
        let c = KafkaConfig {
            sasl_mechanism: "scram-sha-512".into(),
            tls_enabled: true,
            ..KafkaConfig::default()
        };
        let cc = c.client_config();
        assert_eq!(cc.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(cc.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
    }
}
