//! The block-builder: a member of the consumer group over the ingest topic that buffers its
//! partitions' spans and writes them into the tenants' tables, exactly once.
//!
//! Each table commit carries, per partition it holds records of, a Delta `txn` action
//! ([`txn_app_id`], version = the highest offset included). Before writing, records at or below
//! the table's version are dropped, and Delta fails a commit that races another writer's commit
//! of the same partition, so a record reaches each table once whatever crashes or rebalances
//! happen. Kafka offsets are committed only after the tables, as the place to resume from; a
//! crash before that re-reads records the tables then skip.
//!
//! Invariants: a committed Kafka offset `c` of a partition means every record below `c` is in
//! its tenant's table; a builder's records of a partition are contiguous from such an offset;
//! so a table's version `v` for a partition means every record of that tenant up to `v` is in
//! the table. Records are never dropped on a rebalance (librdkafka may resume a re-assigned
//! partition past them); whoever writes a record second finds it covered by the version.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use rdkafka::Message as _;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use tracehouse_warehouse::Warehouse;

use crate::kafka::{Context, KafkaConfig, KafkaStats, decode_payload, record_tenant, txn_app_id};
use crate::{Error, Result};

/// Environment variable that makes a block-builder abort right after its first table commit,
/// before committing Kafka offsets: the window exactly-once must survive (tests only).
pub const CRASH_AFTER_TABLE_COMMIT: &str = "TRACEHOUSE_TEST_CRASH_AFTER_TABLE_COMMIT";

/// Settings of the block-builder.
#[derive(Debug, Clone)]
pub struct BlockBuilderConfig {
    /// Buffered spans are written at least this often (Tempo's `consume_cycle_duration`).
    pub consume_cycle: Duration,
    /// ... and whenever they hold this many bytes.
    pub max_block_bytes: usize,
    /// Kafka static group membership (`group.instance.id`), e.g. a StatefulSet pod name: a
    /// builder restarted under the same id gets its partitions back at once, without waiting for
    /// the group to expire the old member. Empty: dynamic membership.
    pub instance_id: String,
}

struct Pending {
    tenant: String,
    partition: i32,
    offset: i64,
    batch: RecordBatch,
}

#[derive(Default)]
struct Buffer {
    records: Vec<Pending>,
    /// `(partition, offset)` of every record consumed since the last flush (re-reads after a
    /// rebalance are skipped).
    seen: BTreeSet<(i32, i64)>,
    bytes: usize,
    since: Option<Instant>,
    /// One past the highest offset consumed, per partition consumed since the last flush.
    next_offsets: BTreeMap<i32, i64>,
}

/// Creates the group consumer of the block-builders.
pub fn group_consumer(
    kafka: &KafkaConfig,
    instance_id: &str,
    stats: Arc<KafkaStats>,
) -> Result<StreamConsumer<Context>> {
    let mut client = kafka.client_config();
    if !instance_id.is_empty() {
        client.set("group.instance.id", instance_id);
    }
    let consumer: StreamConsumer<Context> = client
        .set("group.id", &kafka.consumer_group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("statistics.interval.ms", kafka.stats_interval.as_millis().to_string())
        .create_with_context(Context::new(stats, &kafka.topic))
        .map_err(|e| Error::Kafka(format!("creating kafka consumer: {e}")))?;
    Ok(consumer)
}

/// Consumes until `shutdown` changes, then writes what it holds and returns.
pub async fn run(
    kafka: KafkaConfig,
    config: BlockBuilderConfig,
    warehouse: Arc<Warehouse>,
    stats: Arc<KafkaStats>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    assert!(config.max_block_bytes > 0 && !config.consume_cycle.is_zero());
    // The topic must exist before subscribing; create it as the distributor would.
    loop {
        match crate::kafka::ensure_topic(&kafka).await {
            Ok(_) => break,
            Err(e) => tracing::warn!(error = %e, "waiting for the kafka topic"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return Ok(()),
        }
    }
    let consumer = group_consumer(&kafka, &config.instance_id, stats.clone())?;
    consumer
        .subscribe(&[&kafka.topic])
        .map_err(|e| Error::Kafka(format!("subscribing to {:?}: {e}", kafka.topic)))?;
    let mut buffer = Buffer::default();
    loop {
        let deadline = buffer
            .since
            .map_or(Instant::now() + config.consume_cycle, |s| s + config.consume_cycle);
        let stop = tokio::select! {
            msg = consumer.recv() => {
                match msg {
                    Ok(m) => {
                        stats.connected.store(true, Ordering::Release);
                        stats.records_consumed.fetch_add(1, Ordering::Relaxed);
                        let next = buffer.next_offsets.entry(m.partition()).or_insert(0);
                        *next = (*next).max(m.offset() + 1);
                        let fresh = buffer.seen.insert((m.partition(), m.offset()));
                        match m.payload().filter(|_| fresh).map(decode_payload) {
                            Some(Ok(batch)) if batch.num_rows() > 0 => {
                                buffer.bytes += batch.get_array_memory_size();
                                buffer.since.get_or_insert_with(Instant::now);
                                buffer.records.push(Pending {
                                    tenant: record_tenant(m.headers()),
                                    partition: m.partition(),
                                    offset: m.offset(),
                                    batch,
                                });
                            }
                            Some(Ok(_)) | None => {}
                            Some(Err(e)) => {
                                stats.records_undecodable.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(partition = m.partition(), offset = m.offset(), error = %e, "skipping a record that is not OTLP");
                            }
                        }
                    }
                    Err(e) => {
                        stats.connected.store(false, Ordering::Release);
                        tracing::warn!(error = %e, "kafka consume failed");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
                false
            }
            _ = tokio::time::sleep_until(deadline.into()) => false,
            _ = shutdown.changed() => true,
        };
        let due = stop
            || buffer.bytes >= config.max_block_bytes
            || buffer.since.is_some_and(|s| s.elapsed() >= config.consume_cycle)
            || (buffer.records.is_empty() && !buffer.next_offsets.is_empty() && Instant::now() >= deadline);
        if due {
            // Retry until written: the records stay buffered and their offsets uncommitted.
            let mut backoff = Duration::from_millis(200);
            loop {
                match flush(&kafka, &warehouse, &stats, &consumer, &mut buffer).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "writing consumed spans failed; retrying");
                        if stop && *shutdown.borrow() && backoff > Duration::from_secs(5) {
                            return Err(e);
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
        }
        if stop {
            return Ok(());
        }
    }
}

/// Writes the buffer into the tables (one commit per tenant), then commits the consumed offsets
/// to Kafka.
async fn flush(
    kafka: &KafkaConfig,
    warehouse: &Warehouse,
    stats: &KafkaStats,
    consumer: &StreamConsumer<Context>,
    buffer: &mut Buffer,
) -> Result<()> {
    let mut by_tenant: BTreeMap<&str, Vec<&Pending>> = BTreeMap::new();
    for r in &buffer.records {
        by_tenant.entry(r.tenant.as_str()).or_default().push(r);
    }
    for (tenant, records) in by_tenant {
        write_tenant(kafka, warehouse, stats, tenant, &records).await?;
    }
    if std::env::var_os(CRASH_AFTER_TABLE_COMMIT).is_some() && !buffer.records.is_empty() {
        // Failpoint for the exactly-once tests: die between the table and the offset commit.
        tracing::error!("{CRASH_AFTER_TABLE_COMMIT} is set: aborting before committing offsets");
        std::process::abort();
    }
    if !buffer.next_offsets.is_empty() {
        let mut list = TopicPartitionList::new();
        for (p, next) in &buffer.next_offsets {
            list.add_partition_offset(&kafka.topic, *p, Offset::Offset(*next))
                .map_err(|e| Error::Kafka(e.to_string()))?;
        }
        match tokio::task::block_in_place(|| consumer.commit(&list, CommitMode::Sync)) {
            Ok(()) => {
                stats.offset_commits.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                // The tables hold the truth; a later commit (or the tables' versions) covers it.
                stats.offset_commit_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "committing kafka offsets failed");
            }
        }
    }
    *buffer = Buffer::default();
    Ok(())
}

/// Writes one tenant's records not yet in its table, with their partitions' offsets.
async fn write_tenant(
    kafka: &KafkaConfig,
    warehouse: &Warehouse,
    stats: &KafkaStats,
    tenant: &str,
    records: &[&Pending],
) -> Result<()> {
    let partitions: BTreeSet<i32> = records.iter().map(|r| r.partition).collect();
    let apps: Vec<String> = partitions.iter().map(|p| txn_app_id(&kafka.topic, *p)).collect();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let started = Instant::now();
        let versions = warehouse.committed_versions(tenant, &apps).await?;
        let mut batches = Vec::new();
        let mut highest: BTreeMap<i32, i64> = BTreeMap::new();
        let mut skipped = 0u64;
        for r in records {
            let app = txn_app_id(&kafka.topic, r.partition);
            if versions.get(&app).is_some_and(|&v| r.offset <= v) {
                skipped += 1;
                continue;
            }
            batches.push(r.batch.clone());
            let h = highest.entry(r.partition).or_insert(r.offset);
            *h = (*h).max(r.offset);
        }
        if batches.is_empty() {
            stats.records_already_committed.fetch_add(skipped, Ordering::Relaxed);
            return Ok(());
        }
        let txns: Vec<(String, i64)> = highest
            .iter()
            .map(|(p, o)| (txn_app_id(&kafka.topic, *p), *o))
            .collect();
        match warehouse.commit(tenant, &batches, txns).await {
            Ok(version) => {
                stats.records_already_committed.fetch_add(skipped, Ordering::Relaxed);
                stats.table_commits.fetch_add(1, Ordering::Relaxed);
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                stats.table_commit_micros_total.fetch_add(micros, Ordering::Relaxed);
                let spans: usize = batches.iter().map(RecordBatch::num_rows).sum();
                tracing::debug!(tenant, version, spans, offsets = ?highest, "committed");
                return Ok(());
            }
            Err(e) if attempt < 4 => {
                // Most likely another builder committed the same partition (a rebalance): look
                // at the table's versions again.
                stats.table_commit_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(tenant, error = %e, attempt, "table commit failed; re-reading versions");
            }
            Err(e) => {
                stats.table_commit_errors.fetch_add(1, Ordering::Relaxed);
                return Err(e.into());
            }
        }
    }
}
