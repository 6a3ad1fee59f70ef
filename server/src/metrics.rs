//! `/metrics`: one prometheus-client registry per process, encoded in the OpenMetrics text
//! format. The figures the components count in atomics (receivers, warehouse, upkeep, Flight,
//! Kafka, live-store) are read at scrape time by [`StatsCollector`], under tracehouse's names
//! and, where a Tempo series means the same, under Tempo's name too (so the Tempo mixin's
//! dashboards and alerts read them); the per-request series with Tempo's names and labels are
//! in [`crate::tempo_metrics`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use tracehouse_ingest::kafka::KafkaStats;
use tracehouse_ingest::live_store::LiveStore;
use tracehouse_warehouse::{Warehouse, WarehouseStats};

/// Counters of the receivers.
#[derive(Debug, Default)]
pub struct ReceiverStats {
    pub otlp_http_requests: AtomicU64,
    pub otlp_grpc_requests: AtomicU64,
    pub spans_received: AtomicU64,
    pub requests_rejected_client: AtomicU64,
    pub requests_rejected_too_large: AtomicU64,
    pub requests_rejected_backpressure: AtomicU64,
    pub requests_failed_server: AtomicU64,
}

/// Writes metrics one descriptor at a time.
struct Out<'a>(DescriptorEncoder<'a>);

fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl Out<'_> {
    /// A counter; `name` ends in `_total`, as it is exposed.
    fn counter(&mut self, name: &str, help: &str, value: u64) -> fmt::Result {
        let name = name.strip_suffix("_total").expect("counter names end in _total");
        ConstCounter::new(value).encode(self.0.encode_descriptor(name, help, None, MetricType::Counter)?)
    }

    /// A counter of seconds (or another fractional unit).
    fn counter_f64(&mut self, name: &str, help: &str, value: f64) -> fmt::Result {
        let name = name.strip_suffix("_total").expect("counter names end in _total");
        ConstCounter::new(value).encode(self.0.encode_descriptor(name, help, None, MetricType::Counter)?)
    }

    fn gauge(&mut self, name: &str, help: &str, value: i64) -> fmt::Result {
        ConstGauge::new(value).encode(self.0.encode_descriptor(name, help, None, MetricType::Gauge)?)
    }

    /// A gauge with one label: a series per `(label value, value)`.
    fn gauge_by(&mut self, name: &str, help: &str, label: &str, series: &[(String, i64)]) -> fmt::Result {
        let mut metric = self.0.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (value_label, value) in series {
            let labels = [(label, value_label.as_str())];
            ConstGauge::new(*value).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// What `/metrics` reads from the components' atomics at each scrape.
pub struct StatsCollector {
    pub receivers: Arc<ReceiverStats>,
    /// `None` in the distributor, which stores nothing.
    pub warehouse: Option<Arc<Warehouse>>,
    pub flight: Arc<tracehouse_flight::FlightStats>,
    pub kafka: Option<Arc<KafkaStats>>,
    pub live_store: Option<Arc<LiveStore>>,
    /// The receivers' limiter: live traces per tenant.
    pub limiter: Option<Arc<crate::limits::Limiter>>,
}

impl fmt::Debug for StatsCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StatsCollector")
    }
}

impl Collector for StatsCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let mut out = Out(encoder);
        receivers(&mut out, &self.receivers)?;
        let default_stats = WarehouseStats::default();
        let (warehouse, wal_bytes) = match &self.warehouse {
            Some(w) => (w.stats().as_ref(), w.wal_disk_bytes()),
            None => (&default_stats, 0),
        };
        warehouse_stats(&mut out, warehouse, wal_bytes)?;
        upkeep(&mut out, warehouse)?;
        flight(&mut out, &self.flight)?;
        if let Some(k) = &self.kafka {
            kafka(&mut out, k)?;
        }
        if let Some(store) = &self.live_store {
            live_store(&mut out, &store.stats)?;
        }
        if let Some(limiter) = &self.limiter {
            out.gauge_by(
                "tempo_live_store_live_traces",
                "The current number of live traces per tenant.",
                "tenant",
                &limiter.live_traces(),
            )?;
        }
        Ok(())
    }
}

fn receivers(out: &mut Out, r: &ReceiverStats) -> fmt::Result {
    let list = [
        (
            "tracehouse_distributor_otlp_http_requests_total",
            "OTLP/HTTP export requests.",
            &r.otlp_http_requests,
        ),
        (
            "tracehouse_distributor_otlp_grpc_requests_total",
            "OTLP/gRPC export requests.",
            &r.otlp_grpc_requests,
        ),
        (
            "tracehouse_distributor_spans_received_total",
            "Spans acknowledged to clients.",
            &r.spans_received,
        ),
        (
            "tracehouse_distributor_requests_rejected_client_total",
            "Requests rejected as malformed (400/415).",
            &r.requests_rejected_client,
        ),
        (
            "tracehouse_distributor_requests_rejected_too_large_total",
            "Requests rejected as too large (413).",
            &r.requests_rejected_too_large,
        ),
        (
            "tracehouse_distributor_requests_rejected_backpressure_total",
            "Requests pushed back (429).",
            &r.requests_rejected_backpressure,
        ),
        (
            "tracehouse_distributor_requests_failed_total",
            "Requests failed by the server (5xx).",
            &r.requests_failed_server,
        ),
    ];
    for (name, help, value) in list {
        out.counter(name, help, load(value))?;
    }
    Ok(())
}

fn warehouse_stats(out: &mut Out, w: &WarehouseStats, wal_disk_bytes: u64) -> fmt::Result {
    let list = [
        (
            "tracehouse_warehouse_spans_appended_total",
            "Spans made durable in the WAL.",
            &w.spans_appended,
        ),
        (
            "tracehouse_warehouse_spans_replayed_total",
            "Spans replayed from the WAL at start.",
            &w.spans_replayed,
        ),
        (
            "tracehouse_warehouse_flushes_total",
            "Flushes committed to Delta tables.",
            &w.flushes,
        ),
        (
            "tempo_ingester_blocks_flushed_total",
            "Flushes of live spans committed to the tables (tracehouse_warehouse_flushes_total).",
            &w.flushes,
        ),
        (
            "tracehouse_warehouse_flush_errors_total",
            "Flushes that failed and will be retried.",
            &w.flush_errors,
        ),
        (
            "tempo_ingester_failed_flushes_total",
            "Flushes that failed and will be retried (tracehouse_warehouse_flush_errors_total).",
            &w.flush_errors,
        ),
        (
            "tracehouse_warehouse_spans_flushed_total",
            "Spans committed to Delta tables.",
            &w.spans_flushed,
        ),
    ];
    for (name, help, value) in list {
        out.counter(name, help, load(value))?;
    }
    let live = w.live_bytes.load(Ordering::Relaxed) as i64;
    out.gauge(
        "tracehouse_warehouse_live_bytes",
        "Bytes of acknowledged spans not yet flushed.",
        live,
    )?;
    out.gauge(
        "tracehouse_warehouse_wal_disk_bytes",
        "Bytes of WAL segments on disk.",
        wal_disk_bytes as i64,
    )
}

fn upkeep(out: &mut Out, w: &WarehouseStats) -> fmt::Result {
    let list = [
        (
            "tracehouse_upkeep_passes_total",
            "Upkeep passes over a tenant's table finished.",
            &w.upkeep_passes,
        ),
        (
            "tracehouse_upkeep_errors_total",
            "Upkeep passes over a tenant's table that failed.",
            &w.upkeep_errors,
        ),
        (
            "tempodb_compaction_errors_total",
            "Upkeep passes over a tenant's table that failed (tracehouse_upkeep_errors_total).",
            &w.upkeep_errors,
        ),
        (
            "tracehouse_compactions_total",
            "Compaction merges committed.",
            &w.compactions,
        ),
        (
            "tracehouse_compaction_files_total",
            "Data files compaction replaced.",
            &w.files_compacted,
        ),
        (
            "tempodb_compaction_blocks_total",
            "Data files compaction replaced (tracehouse_compaction_files_total).",
            &w.files_compacted,
        ),
        (
            "tracehouse_retention_files_total",
            "Data files retention removed from the tables.",
            &w.files_expired,
        ),
        (
            "tempodb_retention_deleted_total",
            "Data files retention removed (tracehouse_retention_files_total).",
            &w.files_expired,
        ),
        (
            "tracehouse_vacuum_files_total",
            "Files vacuum deleted from storage.",
            &w.files_vacuumed,
        ),
        (
            "tracehouse_upkeep_lease_busy_total",
            "Upkeep passes skipped because another process was looking after the tenant.",
            &w.upkeep_lease_busy,
        ),
        (
            "tracehouse_compaction_conflicts_total",
            "Compaction merges skipped on a conflict with another writer.",
            &w.upkeep_conflicts,
        ),
        (
            "tracehouse_compaction_bytes_read_total",
            "Bytes of data files compaction read.",
            &w.compaction_bytes_read,
        ),
        (
            "tracehouse_compaction_bytes_written_total",
            "Bytes of data files compaction wrote.",
            &w.compaction_bytes_written,
        ),
        (
            "tempodb_compaction_bytes_written_total",
            "Bytes of data files compaction wrote (tracehouse_compaction_bytes_written_total).",
            &w.compaction_bytes_written,
        ),
        (
            "tracehouse_compaction_spans_deduplicated_total",
            "Spans stored twice that compaction wrote once.",
            &w.spans_deduplicated,
        ),
        (
            "tempodb_compaction_spans_deduped_total",
            "Spans stored twice that compaction wrote once (tracehouse_compaction_spans_deduplicated_total).",
            &w.spans_deduplicated,
        ),
        (
            "tracehouse_retention_spans_total",
            "Spans retention removed.",
            &w.spans_expired,
        ),
    ];
    for (name, help, value) in list {
        out.counter(name, help, load(value))?;
    }
    out.counter_f64(
        "tracehouse_upkeep_seconds_total",
        "Time upkeep passes took.",
        load(&w.upkeep_micros) as f64 / 1e6,
    )?;
    let outstanding: Vec<(String, i64)> = (w.outstanding_files.lock().expect("outstanding lock").iter())
        .map(|(tenant, files)| (tenant.clone(), *files as i64))
        .collect();
    out.gauge_by(
        "tracehouse_compaction_outstanding_files",
        "Small files of a tenant that compaction would still merge, after its last pass.",
        "tenant",
        &outstanding,
    )?;
    out.gauge_by(
        "tempodb_compaction_outstanding_blocks",
        "Small files of a tenant that compaction would still merge (tracehouse_compaction_outstanding_files).",
        "tenant",
        &outstanding,
    )
}

fn flight(out: &mut Out, f: &tracehouse_flight::FlightStats) -> fmt::Result {
    out.counter(
        "tracehouse_flight_streams_started_total",
        "Arrow Flight query result streams started.",
        load(&f.streams_started),
    )?;
    out.counter(
        "tracehouse_flight_streams_cancelled_total",
        "Arrow Flight result streams dropped before their end (client cancelled or went away).",
        load(&f.streams_cancelled),
    )?;
    out.counter(
        "tracehouse_flight_messages_sent_total",
        "Arrow Flight data messages sent.",
        load(&f.messages_sent),
    )?;
    out.gauge(
        "tracehouse_flight_streams_active",
        "Arrow Flight result streams open now.",
        load(&f.streams_active) as i64,
    )
}

/// The Kafka clients' figures: records produced and consumed, consumer lag per partition,
/// table and offset commits and their latency.
fn kafka(out: &mut Out, k: &KafkaStats) -> fmt::Result {
    let list = [
        (
            "tracehouse_kafka_records_produced_total",
            "Records acknowledged by Kafka.",
            &k.records_produced,
        ),
        (
            "tempo_distributor_produce_records_total",
            "Records acknowledged by Kafka (tracehouse_kafka_records_produced_total).",
            &k.records_produced,
        ),
        (
            "tracehouse_kafka_bytes_produced_total",
            "Payload bytes acknowledged by Kafka.",
            &k.bytes_produced,
        ),
        (
            "tempo_distributor_kafka_write_bytes_total",
            "Payload bytes acknowledged by Kafka (tracehouse_kafka_bytes_produced_total).",
            &k.bytes_produced,
        ),
        (
            "tracehouse_kafka_produce_errors_total",
            "Requests whose records Kafka did not acknowledge (503).",
            &k.produce_errors,
        ),
        (
            "tracehouse_kafka_records_consumed_total",
            "Records consumed.",
            &k.records_consumed,
        ),
        (
            "tracehouse_kafka_records_undecodable_total",
            "Consumed records that were not OTLP, skipped.",
            &k.records_undecodable,
        ),
        (
            "tracehouse_block_builder_records_already_committed_total",
            "Consumed records a table already held (replays after a crash or rebalance), skipped.",
            &k.records_already_committed,
        ),
        (
            "tracehouse_block_builder_table_commits_total",
            "Table commits of consumed spans.",
            &k.table_commits,
        ),
        (
            "tracehouse_block_builder_table_commit_errors_total",
            "Failed table commits (retried).",
            &k.table_commit_errors,
        ),
        (
            "tracehouse_kafka_offset_commits_total",
            "Kafka offset commits after table commits.",
            &k.offset_commits,
        ),
        (
            "tracehouse_kafka_offset_commit_errors_total",
            "Failed Kafka offset commits.",
            &k.offset_commit_errors,
        ),
        (
            "tracehouse_kafka_rebalances_total",
            "Consumer group rebalances.",
            &k.rebalances,
        ),
    ];
    for (name, help, value) in list {
        out.counter(name, help, load(value))?;
    }
    let failures = [("reason", "kafka_error")];
    let mut metric = out.0.encode_descriptor(
        "tempo_distributor_produce_failures",
        "Requests whose records Kafka did not acknowledge, by reason.",
        None,
        MetricType::Counter,
    )?;
    ConstCounter::new(load(&k.produce_errors)).encode(metric.encode_family(&failures)?)?;
    out.counter_f64(
        "tracehouse_block_builder_table_commit_seconds_total",
        "Time spent committing consumed spans to tables.",
        load(&k.table_commit_micros_total) as f64 / 1e6,
    )?;
    out.gauge(
        "tracehouse_kafka_connected",
        "1 when the brokers answered the last check.",
        i64::from(k.connected.load(Ordering::Acquire)),
    )?;
    let lag: Vec<(String, i64)> = (k.lag.lock().expect("lag lock").iter())
        .map(|(p, l)| (p.to_string(), *l))
        .collect();
    out.gauge_by(
        "tracehouse_kafka_consumer_lag",
        "Records behind the partition's end, per assigned partition.",
        "partition",
        &lag,
    )?;
    out.gauge_by(
        "tempo_ingest_group_partition_lag",
        "Records behind the partition's end, per assigned partition (tracehouse_kafka_consumer_lag).",
        "partition",
        &lag,
    )
}

fn live_store(out: &mut Out, s: &tracehouse_ingest::live_store::LiveStoreStats) -> fmt::Result {
    out.gauge(
        "tracehouse_live_store_records",
        "Records held, not yet in the tables.",
        s.records_held.load(Ordering::Relaxed) as i64,
    )?;
    out.gauge(
        "tracehouse_live_store_bytes",
        "Bytes of spans held.",
        s.bytes_held.load(Ordering::Relaxed) as i64,
    )?;
    out.counter(
        "tracehouse_live_store_records_pruned_total",
        "Records dropped once in the tables.",
        load(&s.records_pruned),
    )?;
    out.counter(
        "tracehouse_live_store_records_evicted_total",
        "Records dropped over the byte limit before reaching the tables.",
        load(&s.records_evicted),
    )
}
