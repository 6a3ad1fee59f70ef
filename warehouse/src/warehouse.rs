//! The warehouse: append (WAL, then live buffer), flush to Delta by time and size, replay on
//! start, and consistent snapshots (committed table plus live batches) for queries.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use deltalake::DeltaTable;
use tokio::sync::Mutex as AsyncMutex;

use crate::storage::{Storage, StorageConfigKind, validate_tenant};
use crate::wal::{Wal, WalConfig, WalRecord};
use crate::{Error, Result, table};

/// Settings of the warehouse.
#[derive(Debug, Clone)]
pub struct WarehouseConfig {
    pub storage: StorageConfigKind,
    pub wal: WalConfig,
    /// A tenant's live spans are flushed once the oldest is this old (Tempo's `max_block_duration`).
    pub max_block_duration: Duration,
    /// A tenant's live spans are flushed once they hold this many bytes (Tempo's `max_block_bytes`).
    pub max_block_bytes: usize,
    /// Bytes all tenants' live buffers may hold; appends beyond it get backpressure.
    pub max_live_bytes: usize,
    /// How often the flush loop looks at the buffers.
    pub flush_check_interval: Duration,
}

impl WarehouseConfig {
    /// Local storage under `dir/data`, the WAL in `dir/wal`, and modest bounds; for tests,
    /// benchmarks and tools. Flushes happen only when asked for (or under memory pressure).
    pub fn local(dir: &std::path::Path) -> Self {
        Self {
            storage: StorageConfigKind::Local { path: dir.join("data") },
            wal: WalConfig {
                dir: dir.join("wal"),
                segment_max_bytes: 64 << 20,
                queue_max_requests: 64,
                group_commit_max_bytes: 8 << 20,
            },
            max_block_duration: Duration::from_secs(3600),
            max_block_bytes: 256 << 20,
            max_live_bytes: 1 << 30,
            flush_check_interval: Duration::from_secs(3600),
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct WarehouseStats {
    pub spans_appended: AtomicU64,
    pub batches_appended: AtomicU64,
    pub spans_replayed: AtomicU64,
    pub appends_rejected_backpressure: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_errors: AtomicU64,
    pub spans_flushed: AtomicU64,
    pub live_bytes: AtomicUsize,
}

struct Chunk {
    seq: u64,
    batch: RecordBatch,
    bytes: usize,
}

#[derive(Default)]
struct TenantState {
    table: Option<Arc<DeltaTable>>,
    active: Vec<Chunk>,
    flushing: Vec<Chunk>,
    active_bytes: usize,
    active_since: Option<Instant>,
}

/// One tenant: its table handle and live spans.
pub struct Tenant {
    name: String,
    state: Mutex<TenantState>,
    /// Serializes table loading and flushing for this tenant.
    flush_lock: AsyncMutex<()>,
}

impl Tenant {
    /// The tenant id.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn push(&self, chunk: Chunk) {
        let mut st = self.state.lock().expect("tenant state lock");
        st.active_bytes += chunk.bytes;
        st.active_since.get_or_insert_with(Instant::now);
        st.active.push(chunk);
    }

    fn min_live_seq(&self) -> Option<u64> {
        let st = self.state.lock().expect("tenant state lock");
        st.flushing.iter().chain(&st.active).map(|c| c.seq).min()
    }
}

/// The storage engine shared by receivers and query engines.
pub struct Warehouse {
    config: WarehouseConfig,
    storage: Storage,
    wal: Wal,
    app_id: String,
    tenants: RwLock<HashMap<String, Arc<Tenant>>>,
    stats: Arc<WarehouseStats>,
}

impl Warehouse {
    /// Opens storage and the WAL, replays what the tables do not hold yet, and starts the
    /// WAL writer. Call [`run_flush_loop`](Self::run_flush_loop) to flush.
    pub async fn open(config: WarehouseConfig) -> Result<Arc<Self>> {
        assert!(config.max_block_bytes > 0 && config.max_live_bytes >= config.max_block_bytes);
        let storage = Storage::open(&config.storage)?;
        let (wal, records) = Wal::open(config.wal.clone())?;
        let app_id = format!("tracehouse-wal-{}", wal_id(&config.wal.dir)?);
        let warehouse = Arc::new(Self {
            config,
            storage,
            wal,
            app_id,
            tenants: RwLock::new(HashMap::new()),
            stats: Arc::new(WarehouseStats::default()),
        });
        warehouse.replay(records).await?;
        let weak = Arc::downgrade(&warehouse);
        warehouse.wal.start(Arc::new(move |records: Vec<WalRecord>| {
            if let Some(w) = weak.upgrade() {
                w.apply(records);
            }
        }))?;
        Ok(warehouse)
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &Arc<WarehouseStats> {
        &self.stats
    }

    /// Bytes of WAL segments on disk.
    pub fn wal_disk_bytes(&self) -> u64 {
        self.wal.disk_bytes()
    }

    async fn replay(&self, records: Vec<WalRecord>) -> Result<()> {
        let mut committed: HashMap<String, Option<u64>> = HashMap::new();
        let mut replayed = 0u64;
        for record in records {
            if !committed.contains_key(&record.tenant) {
                let tenant = self.tenant(&record.tenant)?;
                let t = self.load_table(&tenant).await?;
                committed.insert(record.tenant.clone(), table::committed_seq(&t, &self.app_id).await?);
            }
            if committed[&record.tenant].is_some_and(|c| record.seq <= c) {
                continue;
            }
            replayed += record.batch.num_rows() as u64;
            let bytes = record.batch.get_array_memory_size();
            self.stats.live_bytes.fetch_add(bytes, Ordering::Relaxed);
            self.tenant(&record.tenant)?.push(Chunk {
                seq: record.seq,
                batch: record.batch,
                bytes,
            });
        }
        self.stats.spans_replayed.fetch_add(replayed, Ordering::Relaxed);
        if replayed > 0 {
            tracing::info!(spans = replayed, "replayed unflushed spans from the wal");
        }
        Ok(())
    }

    fn apply(&self, records: Vec<WalRecord>) {
        for record in records {
            let bytes = record.batch.get_array_memory_size();
            match self.tenant(&record.tenant) {
                Ok(tenant) => tenant.push(Chunk {
                    seq: record.seq,
                    batch: record.batch,
                    bytes,
                }),
                Err(e) => tracing::error!(error = %e, "durable record for an invalid tenant"),
            }
        }
    }

    /// The tenant's handle, created on first use.
    pub fn tenant(&self, name: &str) -> Result<Arc<Tenant>> {
        if let Some(t) = self.tenants.read().expect("tenants lock").get(name) {
            return Ok(t.clone());
        }
        validate_tenant(name)?;
        let mut tenants = self.tenants.write().expect("tenants lock");
        Ok(tenants
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(Tenant {
                    name: name.to_string(),
                    state: Mutex::new(TenantState::default()),
                    flush_lock: AsyncMutex::new(()),
                })
            })
            .clone())
    }

    async fn load_table(&self, tenant: &Tenant) -> Result<Arc<DeltaTable>> {
        if let Some(t) = &tenant.state.lock().expect("tenant state lock").table {
            return Ok(t.clone());
        }
        let _guard = tenant.flush_lock.lock().await;
        if let Some(t) = &tenant.state.lock().expect("tenant state lock").table {
            return Ok(t.clone());
        }
        let t = Arc::new(table::open(&self.storage, &tenant.name).await?);
        tenant.state.lock().expect("tenant state lock").table = Some(t.clone());
        Ok(t)
    }

    /// Makes `batch` (a `spans` batch) durable for `tenant`; returns once it is in the WAL and
    /// visible to queries.
    pub async fn append(&self, tenant: &str, batch: RecordBatch) -> Result<()> {
        validate_tenant(tenant)?;
        let rows = batch.num_rows() as u64;
        if rows == 0 {
            return Ok(());
        }
        let bytes = batch.get_array_memory_size();
        let before = self.stats.live_bytes.fetch_add(bytes, Ordering::AcqRel);
        if before + bytes > self.config.max_live_bytes {
            self.stats.live_bytes.fetch_sub(bytes, Ordering::AcqRel);
            self.stats.appends_rejected_backpressure.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Backpressure(format!(
                "live buffers hold {before} of {} bytes; flushing",
                self.config.max_live_bytes
            )));
        }
        if let Err(e) = self.wal.append(tenant, batch).await {
            self.stats.live_bytes.fetch_sub(bytes, Ordering::AcqRel);
            if matches!(e, Error::Backpressure(_)) {
                self.stats.appends_rejected_backpressure.fetch_add(1, Ordering::Relaxed);
            }
            return Err(e);
        }
        self.stats.spans_appended.fetch_add(rows, Ordering::Relaxed);
        self.stats.batches_appended.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The committed table and the live batches of `tenant`, taken atomically.
    pub async fn snapshot(&self, tenant: &str) -> Result<(Arc<DeltaTable>, Vec<RecordBatch>)> {
        let tenant = self.tenant(tenant)?;
        self.load_table(&tenant).await?;
        let st = tenant.state.lock().expect("tenant state lock");
        let table = st
            .table
            .clone()
            .ok_or_else(|| Error::Wal("table handle vanished".into()))?;
        let live = st.flushing.iter().chain(&st.active).map(|c| c.batch.clone()).collect();
        Ok((table, live))
    }

    /// Flushes one tenant's live spans into its table. Returns the number of spans flushed.
    pub async fn flush_tenant(&self, tenant: &Arc<Tenant>) -> Result<u64> {
        let _guard = tenant.flush_lock.lock().await;
        let (table, batches, max_seq, bytes) = {
            let mut st = tenant.state.lock().expect("tenant state lock");
            if st.active.is_empty() {
                return Ok(0);
            }
            assert!(st.flushing.is_empty(), "a flush left chunks behind");
            st.flushing = std::mem::take(&mut st.active);
            let bytes = std::mem::take(&mut st.active_bytes);
            st.active_since = None;
            let batches: Vec<RecordBatch> = st.flushing.iter().map(|c| c.batch.clone()).collect();
            let max_seq = st.flushing.iter().map(|c| c.seq).max().unwrap_or_default();
            (st.table.clone(), batches, max_seq, bytes)
        };
        let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        let result = async {
            let t = match table {
                Some(t) => t,
                None => Arc::new(table::open(&self.storage, &tenant.name).await?),
            };
            table::append((*t).clone(), &batches, &self.app_id, max_seq).await
        }
        .await;
        let mut st = tenant.state.lock().expect("tenant state lock");
        match result {
            Ok(t) => {
                st.table = Some(Arc::new(t));
                st.flushing.clear();
                drop(st);
                self.stats.live_bytes.fetch_sub(bytes, Ordering::AcqRel);
                self.stats.flushes.fetch_add(1, Ordering::Relaxed);
                self.stats.spans_flushed.fetch_add(rows, Ordering::Relaxed);
                self.truncate_wal()?;
                Ok(rows)
            }
            Err(e) => {
                // Put the chunks back in front so they are retried, in order.
                let mut chunks = std::mem::take(&mut st.flushing);
                chunks.append(&mut st.active);
                st.active = chunks;
                st.active_bytes += bytes;
                st.active_since.get_or_insert_with(Instant::now);
                self.stats.flush_errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    fn truncate_wal(&self) -> Result<()> {
        // Read the WAL's next sequence first: any record applied later has a higher one.
        let next = self.wal.next_seq();
        let tenants: Vec<Arc<Tenant>> = self.tenants.read().expect("tenants lock").values().cloned().collect();
        let min_live = tenants
            .iter()
            .filter_map(|t| t.min_live_seq())
            .min()
            .unwrap_or(next)
            .min(next);
        self.wal.truncate_before(min_live)?;
        Ok(())
    }

    /// Flushes every tenant whose live spans are old or large enough (all of them with `force`).
    pub async fn flush_due(&self, force: bool) -> Result<u64> {
        let tenants: Vec<Arc<Tenant>> = self.tenants.read().expect("tenants lock").values().cloned().collect();
        let pressure = self.stats.live_bytes.load(Ordering::Acquire) * 2 >= self.config.max_live_bytes;
        let mut flushed = 0;
        let mut first_err = None;
        for tenant in tenants {
            let due = {
                let st = tenant.state.lock().expect("tenant state lock");
                !st.active.is_empty()
                    && (force
                        || pressure
                        || st.active_bytes >= self.config.max_block_bytes
                        || st
                            .active_since
                            .is_some_and(|s| s.elapsed() >= self.config.max_block_duration))
            };
            if due {
                match self.flush_tenant(&tenant).await {
                    Ok(n) => flushed += n,
                    Err(e) => {
                        tracing::error!(tenant = %tenant.name, error = %e, "flush failed; will retry");
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        match first_err {
            Some(e) if force => Err(e),
            _ => Ok(flushed),
        }
    }

    /// Flushes due tenants every `flush_check_interval` until `shutdown` resolves.
    pub async fn run_flush_loop(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.config.flush_check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let _ = self.flush_due(false).await;
                }
                _ = shutdown.changed() => break,
            }
        }
    }

    /// Stops the WAL writer (finishing queued appends) and flushes everything live.
    pub async fn shutdown(&self) -> Result<u64> {
        self.wal.close();
        self.flush_due(true).await
    }
}

/// The WAL's identity, created once, so Delta `txn` versions stay meaningful across restarts.
fn wal_id(dir: &std::path::Path) -> Result<String> {
    let path = dir.join("wal-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        _ => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            let tmp = dir.join("wal-id.tmp");
            std::fs::write(&tmp, &id)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()?;
            Ok(id)
        }
    }
}
