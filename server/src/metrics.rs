//! Receiver counters, and the Prometheus text rendering of `/metrics` (receivers, warehouse,
//! Flight streams, Kafka clients, live-store).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use tracehouse_warehouse::WarehouseStats;

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

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
}

/// The time upkeep took, and each tenant's small files left to merge (the number to alert
/// on, as Tempo's `tempodb_compaction_outstanding_blocks`).
fn render_upkeep_time_and_backlog(out: &mut String, warehouse: &WarehouseStats) {
    let name = "tracehouse_upkeep_seconds_total";
    let seconds = warehouse.upkeep_micros.load(Ordering::Relaxed) as f64 / 1e6;
    let _ = writeln!(
        out,
        "# HELP {name} Time upkeep passes took.\n# TYPE {name} counter\n{name} {seconds}"
    );
    let name = "tracehouse_compaction_outstanding_files";
    let _ = writeln!(
        out,
        "# HELP {name} Small files of a tenant that compaction would still merge, after its last pass.\n# TYPE {name} gauge"
    );
    for (tenant, files) in warehouse.outstanding_files.lock().expect("outstanding lock").iter() {
        // Tenant ids are letters, digits, '_', '-' and '.': nothing to escape.
        let _ = writeln!(out, "{name}{{tenant=\"{tenant}\"}} {files}");
    }
}

/// Renders every counter in the Prometheus text format.
pub fn render(
    receivers: &ReceiverStats,
    warehouse: &WarehouseStats,
    wal_disk_bytes: u64,
    flight: &tracehouse_flight::FlightStats,
) -> String {
    let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let mut out = String::with_capacity(2048);
    counter(
        &mut out,
        "tracehouse_distributor_otlp_http_requests_total",
        "OTLP/HTTP export requests.",
        r(&receivers.otlp_http_requests),
    );
    counter(
        &mut out,
        "tracehouse_distributor_otlp_grpc_requests_total",
        "OTLP/gRPC export requests.",
        r(&receivers.otlp_grpc_requests),
    );
    counter(
        &mut out,
        "tracehouse_distributor_spans_received_total",
        "Spans acknowledged to clients.",
        r(&receivers.spans_received),
    );
    counter(
        &mut out,
        "tracehouse_distributor_requests_rejected_client_total",
        "Requests rejected as malformed (400/415).",
        r(&receivers.requests_rejected_client),
    );
    counter(
        &mut out,
        "tracehouse_distributor_requests_rejected_too_large_total",
        "Requests rejected as too large (413).",
        r(&receivers.requests_rejected_too_large),
    );
    counter(
        &mut out,
        "tracehouse_distributor_requests_rejected_backpressure_total",
        "Requests pushed back (429).",
        r(&receivers.requests_rejected_backpressure),
    );
    counter(
        &mut out,
        "tracehouse_distributor_requests_failed_total",
        "Requests failed by the server (5xx).",
        r(&receivers.requests_failed_server),
    );
    counter(
        &mut out,
        "tracehouse_warehouse_spans_appended_total",
        "Spans made durable in the WAL.",
        r(&warehouse.spans_appended),
    );
    counter(
        &mut out,
        "tracehouse_warehouse_spans_replayed_total",
        "Spans replayed from the WAL at start.",
        r(&warehouse.spans_replayed),
    );
    counter(
        &mut out,
        "tracehouse_warehouse_flushes_total",
        "Flushes committed to Delta tables.",
        r(&warehouse.flushes),
    );
    counter(
        &mut out,
        "tracehouse_warehouse_flush_errors_total",
        "Flushes that failed and will be retried.",
        r(&warehouse.flush_errors),
    );
    counter(
        &mut out,
        "tracehouse_warehouse_spans_flushed_total",
        "Spans committed to Delta tables.",
        r(&warehouse.spans_flushed),
    );
    for (name, help, value) in [
        (
            "tracehouse_upkeep_passes_total",
            "Upkeep passes over a tenant's table finished.",
            &warehouse.upkeep_passes,
        ),
        (
            "tracehouse_upkeep_errors_total",
            "Upkeep passes over a tenant's table that failed.",
            &warehouse.upkeep_errors,
        ),
        (
            "tracehouse_compactions_total",
            "Compaction merges committed.",
            &warehouse.compactions,
        ),
        (
            "tracehouse_compaction_files_total",
            "Data files compaction replaced.",
            &warehouse.files_compacted,
        ),
        (
            "tracehouse_retention_files_total",
            "Data files retention removed from the tables.",
            &warehouse.files_expired,
        ),
        (
            "tracehouse_vacuum_files_total",
            "Files vacuum deleted from storage.",
            &warehouse.files_vacuumed,
        ),
        (
            "tracehouse_upkeep_lease_busy_total",
            "Upkeep passes skipped because another process was looking after the tenant.",
            &warehouse.upkeep_lease_busy,
        ),
        (
            "tracehouse_compaction_conflicts_total",
            "Compaction merges skipped on a conflict with another writer.",
            &warehouse.upkeep_conflicts,
        ),
        (
            "tracehouse_compaction_bytes_read_total",
            "Bytes of data files compaction read.",
            &warehouse.compaction_bytes_read,
        ),
        (
            "tracehouse_compaction_bytes_written_total",
            "Bytes of data files compaction wrote.",
            &warehouse.compaction_bytes_written,
        ),
        (
            "tracehouse_compaction_spans_deduplicated_total",
            "Spans stored twice that compaction wrote once.",
            &warehouse.spans_deduplicated,
        ),
        (
            "tracehouse_retention_spans_total",
            "Spans retention removed.",
            &warehouse.spans_expired,
        ),
    ] {
        counter(&mut out, name, help, r(value));
    }
    render_upkeep_time_and_backlog(&mut out, warehouse);
    gauge(
        &mut out,
        "tracehouse_warehouse_live_bytes",
        "Bytes of acknowledged spans not yet flushed.",
        warehouse.live_bytes.load(Ordering::Relaxed) as u64,
    );
    gauge(
        &mut out,
        "tracehouse_warehouse_wal_disk_bytes",
        "Bytes of WAL segments on disk.",
        wal_disk_bytes,
    );
    counter(
        &mut out,
        "tracehouse_flight_streams_started_total",
        "Arrow Flight query result streams started.",
        r(&flight.streams_started),
    );
    counter(
        &mut out,
        "tracehouse_flight_streams_cancelled_total",
        "Arrow Flight result streams dropped before their end (client cancelled or went away).",
        r(&flight.streams_cancelled),
    );
    counter(
        &mut out,
        "tracehouse_flight_messages_sent_total",
        "Arrow Flight data messages sent.",
        r(&flight.messages_sent),
    );
    gauge(
        &mut out,
        "tracehouse_flight_streams_active",
        "Arrow Flight result streams open now.",
        r(&flight.streams_active),
    );
    out
}

/// Appends the Kafka clients' figures: records produced and consumed, consumer lag per
/// partition, table and offset commits and their latency.
pub fn render_kafka(out: &mut String, k: &tracehouse_ingest::kafka::KafkaStats) {
    let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
    counter(
        out,
        "tracehouse_kafka_records_produced_total",
        "Records acknowledged by Kafka.",
        r(&k.records_produced),
    );
    counter(
        out,
        "tracehouse_kafka_bytes_produced_total",
        "Payload bytes acknowledged by Kafka.",
        r(&k.bytes_produced),
    );
    counter(
        out,
        "tracehouse_kafka_produce_errors_total",
        "Requests whose records Kafka did not acknowledge (503).",
        r(&k.produce_errors),
    );
    counter(
        out,
        "tracehouse_kafka_records_consumed_total",
        "Records consumed.",
        r(&k.records_consumed),
    );
    counter(
        out,
        "tracehouse_kafka_records_undecodable_total",
        "Consumed records that were not OTLP, skipped.",
        r(&k.records_undecodable),
    );
    counter(
        out,
        "tracehouse_block_builder_records_already_committed_total",
        "Consumed records a table already held (replays after a crash or rebalance), skipped.",
        r(&k.records_already_committed),
    );
    counter(
        out,
        "tracehouse_block_builder_table_commits_total",
        "Table commits of consumed spans.",
        r(&k.table_commits),
    );
    counter(
        out,
        "tracehouse_block_builder_table_commit_errors_total",
        "Failed table commits (retried).",
        r(&k.table_commit_errors),
    );
    let micros = r(&k.table_commit_micros_total);
    let _ = writeln!(
        out,
        "# HELP tracehouse_block_builder_table_commit_seconds_total Time spent committing consumed spans to tables.\n# TYPE tracehouse_block_builder_table_commit_seconds_total counter\ntracehouse_block_builder_table_commit_seconds_total {}",
        micros as f64 / 1e6
    );
    counter(
        out,
        "tracehouse_kafka_offset_commits_total",
        "Kafka offset commits after table commits.",
        r(&k.offset_commits),
    );
    counter(
        out,
        "tracehouse_kafka_offset_commit_errors_total",
        "Failed Kafka offset commits.",
        r(&k.offset_commit_errors),
    );
    counter(
        out,
        "tracehouse_kafka_rebalances_total",
        "Consumer group rebalances.",
        r(&k.rebalances),
    );
    gauge(
        out,
        "tracehouse_kafka_connected",
        "1 when the brokers answered the last check.",
        u64::from(k.connected.load(Ordering::Acquire)),
    );
    let lag = k.lag.lock().expect("lag lock");
    let _ = writeln!(
        out,
        "# HELP tracehouse_kafka_consumer_lag Records behind the partition's end, per assigned partition.\n# TYPE tracehouse_kafka_consumer_lag gauge"
    );
    for (p, l) in lag.iter() {
        let _ = writeln!(out, "tracehouse_kafka_consumer_lag{{partition=\"{p}\"}} {l}");
    }
}

/// Appends the live-store's figures.
pub fn render_live_store(out: &mut String, s: &tracehouse_ingest::live_store::LiveStoreStats) {
    let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
    gauge(
        out,
        "tracehouse_live_store_records",
        "Records held, not yet in the tables.",
        s.records_held.load(Ordering::Relaxed) as u64,
    );
    gauge(
        out,
        "tracehouse_live_store_bytes",
        "Bytes of spans held.",
        s.bytes_held.load(Ordering::Relaxed) as u64,
    );
    counter(
        out,
        "tracehouse_live_store_records_pruned_total",
        "Records dropped once in the tables.",
        r(&s.records_pruned),
    );
    counter(
        out,
        "tracehouse_live_store_records_evicted_total",
        "Records dropped over the byte limit before reaching the tables.",
        r(&s.records_evicted),
    );
}
