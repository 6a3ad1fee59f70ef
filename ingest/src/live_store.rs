//! The live-store: reads the ingest topic from where the block-builders' group stands and keeps
//! every record the tables do not hold yet, so queriers answer with spans acknowledged seconds
//! ago. Records are dropped once their tenant's table records their partition's offset (the
//! block-builders' Delta `txn` versions), and when the store is over its byte limit (the oldest
//! records of the tenant holding the most go first, counted in `/metrics`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arrow::array::RecordBatch;
use rdkafka::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use tracehouse_warehouse::{LiveRecord, Warehouse};

use crate::kafka::{Context, KafkaConfig, KafkaStats, decode_payload, partition_count, record_tenant, txn_app_id};
use crate::{Error, Result};

/// Settings of the live-store.
#[derive(Debug, Clone)]
pub struct LiveStoreConfig {
    /// Bytes of spans held; beyond it the oldest records are dropped.
    pub max_live_bytes: usize,
    /// How often committed records are dropped.
    pub prune_interval: Duration,
}

struct Held {
    partition: i32,
    offset: i64,
    batch: RecordBatch,
    bytes: usize,
}

/// Counters of the live-store.
#[derive(Debug, Default)]
pub struct LiveStoreStats {
    pub records_held: AtomicUsize,
    pub bytes_held: AtomicUsize,
    pub records_pruned: AtomicU64,
    pub records_evicted: AtomicU64,
}

/// What the live-store holds, per tenant, in offset order per partition.
pub struct LiveStore {
    topic: String,
    config: LiveStoreConfig,
    tenants: Mutex<HashMap<String, VecDeque<Held>>>,
    pub stats: LiveStoreStats,
}

impl LiveStore {
    pub fn new(topic: &str, config: LiveStoreConfig) -> Self {
        assert!(config.max_live_bytes > 0);
        Self {
            topic: topic.to_string(),
            config,
            tenants: Mutex::default(),
            stats: LiveStoreStats::default(),
        }
    }

    fn push(&self, tenant: String, held: Held) {
        let mut tenants = self.tenants.lock().expect("live store lock");
        self.stats.bytes_held.fetch_add(held.bytes, Ordering::AcqRel);
        self.stats.records_held.fetch_add(1, Ordering::AcqRel);
        tenants.entry(tenant).or_default().push_back(held);
        while self.stats.bytes_held.load(Ordering::Acquire) > self.config.max_live_bytes {
            // Evict from the tenant holding the most.
            let Some(queue) = tenants.values_mut().max_by_key(|q| q.len()) else {
                break;
            };
            let Some(old) = queue.pop_front() else {
                break;
            };
            self.forget(&old);
            self.stats.records_evicted.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn forget(&self, held: &Held) {
        self.stats.bytes_held.fetch_sub(held.bytes, Ordering::AcqRel);
        self.stats.records_held.fetch_sub(1, Ordering::AcqRel);
    }

    /// The tenant's records as `(partition, offset, spans)`.
    pub fn records(&self, tenant: &str) -> Vec<(i32, i64, RecordBatch)> {
        let tenants = self.tenants.lock().expect("live store lock");
        tenants.get(tenant).map_or_else(Vec::new, |q| {
            q.iter().map(|h| (h.partition, h.offset, h.batch.clone())).collect()
        })
    }

    /// The tenant's records, each tagged with the `txn` id and version that mark it committed.
    pub fn live(&self, tenant: &str) -> Vec<LiveRecord> {
        self.records(tenant)
            .into_iter()
            .map(|(partition, offset, batch)| LiveRecord {
                app_id: txn_app_id(&self.topic, partition),
                version: offset,
                batch,
            })
            .collect()
    }

    /// Drops the records the tables hold.
    async fn prune(&self, warehouse: &Warehouse) -> Result<()> {
        let wanted: Vec<(String, Vec<String>)> = {
            let tenants = self.tenants.lock().expect("live store lock");
            tenants
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .map(|(t, q)| {
                    let mut parts: Vec<i32> = q.iter().map(|h| h.partition).collect();
                    parts.sort_unstable();
                    parts.dedup();
                    (t.clone(), parts.iter().map(|p| txn_app_id(&self.topic, *p)).collect())
                })
                .collect()
        };
        for (tenant, apps) in wanted {
            let versions = warehouse.committed_versions(&tenant, &apps).await?;
            let mut tenants = self.tenants.lock().expect("live store lock");
            if let Some(queue) = tenants.get_mut(&tenant) {
                let before = queue.len();
                let mut kept = VecDeque::with_capacity(queue.len());
                for h in queue.drain(..) {
                    let app = txn_app_id(&self.topic, h.partition);
                    if versions.get(&app).is_some_and(|&v| h.offset <= v) {
                        self.forget(&h);
                    } else {
                        kept.push_back(h);
                    }
                }
                self.stats
                    .records_pruned
                    .fetch_add((before - kept.len()) as u64, Ordering::Relaxed);
                *queue = kept;
            }
        }
        Ok(())
    }
}

/// Consumes every partition of the topic from the block-builders' committed offsets, holding
/// records until the tables have them, until `shutdown` changes.
pub async fn run(
    store: Arc<LiveStore>,
    kafka: KafkaConfig,
    warehouse: Arc<Warehouse>,
    stats: Arc<KafkaStats>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    // Reads the builders' group offsets, never joins the group nor commits.
    let consumer: StreamConsumer<Context> = kafka
        .client_config()
        .set("group.id", &kafka.consumer_group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // Freshness is the live-store's job: a broker answers a fetch at once when data is
        // there, and waits at most this long when a partition is quiet (librdkafka: 500 ms).
        .set("fetch.wait.max.ms", "50")
        .set("statistics.interval.ms", kafka.stats_interval.as_millis().to_string())
        .create_with_context(Context::new(stats.clone(), &kafka.topic))
        .map_err(|e| Error::Kafka(format!("creating kafka consumer: {e}")))?;
    let probe: FutureProducer = kafka
        .client_config()
        .create()
        .map_err(|e| Error::Kafka(format!("creating kafka client: {e}")))?;
    let partitions = loop {
        match partition_count(&probe, &kafka.topic).await {
            Ok(Some(n)) => break n,
            Ok(None) => tracing::info!(topic = %kafka.topic, "waiting for the kafka topic"),
            Err(e) => tracing::warn!(error = %e, "kafka not reachable"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return Ok(()),
        }
    };
    drop(probe);
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(&kafka.topic, p);
    }
    let committed = loop {
        match tokio::task::block_in_place(|| consumer.committed_offsets(list.clone(), Duration::from_secs(10))) {
            Ok(c) => break c,
            Err(e) => tracing::warn!(error = %e, "reading the block-builders' offsets failed; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return Ok(()),
        }
    };
    let mut start = TopicPartitionList::new();
    for e in committed.elements() {
        let offset = match e.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            _ => Offset::Beginning,
        };
        start
            .add_partition_offset(&kafka.topic, e.partition(), offset)
            .map_err(|e| Error::Kafka(e.to_string()))?;
    }
    consumer
        .assign(&start)
        .map_err(|e| Error::Kafka(format!("assigning partitions: {e}")))?;
    stats.connected.store(true, Ordering::Release);
    tracing::info!(partitions, "live-store consuming");
    let mut prune = tokio::time::interval(store.config.prune_interval);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = consumer.recv() => match msg {
                Ok(m) => {
                    stats.connected.store(true, Ordering::Release);
                    stats.records_consumed.fetch_add(1, Ordering::Relaxed);
                    match m.payload().map(decode_payload) {
                        Some(Ok(batch)) if batch.num_rows() > 0 => {
                            let bytes = batch.get_array_memory_size();
                            store.push(record_tenant(m.headers()), Held {
                                partition: m.partition(),
                                offset: m.offset(),
                                batch,
                                bytes,
                            });
                        }
                        Some(Ok(_)) | None => {}
                        Some(Err(_)) => {
                            stats.records_undecodable.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Err(e) => {
                    stats.connected.store(false, Ordering::Release);
                    tracing::warn!(error = %e, "kafka consume failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            },
            _ = prune.tick() => {
                if let Err(e) = store.prune(&warehouse).await {
                    tracing::warn!(error = %e, "reading the tables' offsets failed");
                }
            }
            _ = shutdown.changed() => return Ok(()),
        }
    }
}
