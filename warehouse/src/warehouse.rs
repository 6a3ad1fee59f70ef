//! The warehouse: append (WAL, then live buffer, indexed by trace id as it comes: see
//! [`crate::live`]), flush to Delta by time and size, replay on start, and consistent
//! snapshots (committed table plus live batches and their segments) for queries.
//!
//! A warehouse opened with [`Warehouse::open_shared`] has no WAL: other processes write the
//! tables (block-builders, through [`Warehouse::commit`]), so every read refreshes the table
//! from its log, and live spans come from a [`LiveSource`] (the live-store), filtered against
//! the `txn` versions of the snapshot read so no span is returned twice or missed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use deltalake::DeltaTable;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::Mutex as AsyncMutex;

use crate::id_range::{IdPage, IdRange, Read, SpanCondition, Wanted};
use crate::live::{self, LiveSegment, LiveSpans};
use crate::map_filter::MapFields;
use crate::provider::SnapshotSpans;
use crate::storage::{Storage, StorageConfigKind, validate_tenant};
use crate::trace_index::{self, DataFile, TableFiles, TraceIndex, TraceSpan};
use crate::wal::{Wal, WalConfig, WalRecord};
use crate::{Error, Result, table};

mod upkeep;
pub use upkeep::{MAX_SIDECARS, MAX_TENANTS_REPORTED, TableSize, UpkeepProgress, UpkeepReport};

/// How often a warehouse that writes its tables itself reloads them from their logs, to see
/// what other processes (compaction and retention jobs) committed. Vacuum's grace period must
/// be longer.
pub const TABLE_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// Tenant handles kept beyond those holding live spans: past it, creating a handle first drops
/// the idle ones (no live spans, held by no one; their table handle and trace-id index load
/// again on next use). Handles with live spans stay: the live buffer's byte limit bounds them.
pub const MAX_IDLE_TENANT_HANDLES: usize = 1024;

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
    /// Upkeep passes over a tenant's table finished.
    pub upkeep_passes: AtomicU64,
    /// Upkeep passes over a tenant's table that failed.
    pub upkeep_errors: AtomicU64,
    /// Compaction merges committed.
    pub compactions: AtomicU64,
    /// Files compaction replaced.
    pub files_compacted: AtomicU64,
    /// Files retention removed from the tables.
    pub files_expired: AtomicU64,
    /// Files vacuum deleted from storage.
    pub files_vacuumed: AtomicU64,
    /// Upkeep passes skipped because another process held the tenant's upkeep lease.
    pub upkeep_lease_busy: AtomicU64,
    /// Merges skipped on a conflict with another writer.
    pub upkeep_conflicts: AtomicU64,
    /// Time upkeep passes took, in microseconds.
    pub upkeep_micros: AtomicU64,
    /// Bytes of data files compaction read and wrote.
    pub compaction_bytes_read: AtomicU64,
    pub compaction_bytes_written: AtomicU64,
    /// Spans compaction wrote once that were stored twice (a client's retry).
    pub spans_deduplicated: AtomicU64,
    /// Spans retention removed.
    pub spans_expired: AtomicU64,
    /// Per tenant, the small files compaction would still merge after its last pass.
    pub outstanding_files: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
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
    /// The trace-id index of `flushing` and of `active` (in that order, oldest first).
    flushing_segments: Vec<Arc<LiveSegment>>,
    segments: Vec<Arc<LiveSegment>>,
    /// A chunk could not be indexed: snapshots index their live spans themselves.
    unindexed: bool,
    active_bytes: usize,
    active_since: Option<Instant>,
}

/// One tenant: its table handle and live spans.
pub struct Tenant {
    name: String,
    state: Mutex<TenantState>,
    /// Serializes table loading, flushing and index loading for this tenant.
    flush_lock: AsyncMutex<()>,
    /// The trace-id index of the committed table, loaded on the first lookup.
    trace_index: Mutex<Option<TraceIndex>>,
}

impl Tenant {
    /// Whether spans of this tenant are in the live buffer (buffered or being flushed).
    fn holds_live_spans(&self) -> bool {
        let st = self.state.lock().expect("tenant state lock");
        !st.active.is_empty() || !st.flushing.is_empty()
    }
}

/// What a trace-by-id lookup found.
#[derive(Debug, Default)]
pub struct TraceLookup {
    /// The trace's spans (`spans` batches), committed and live.
    pub batches: Vec<RecordBatch>,
    /// Data files opened.
    pub files_read: usize,
    /// Bytes of the data files opened.
    pub bytes_inspected: u64,
}

impl Tenant {
    /// The tenant id.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds `chunk` to the live spans and indexes it; returns the bytes of its index, which
    /// the chunk's bytes now include (the caller adds them to the live bytes).
    fn push(&self, mut chunk: Chunk) -> usize {
        let segment = LiveSegment::of(vec![chunk.batch.clone()]);
        let index_bytes = segment.as_ref().map_or(0, LiveSegment::index_bytes);
        chunk.bytes += index_bytes;
        let mut st = self.state.lock().expect("tenant state lock");
        match segment {
            Ok(segment) => live::push_segment(&mut st.segments, segment),
            Err(e) => {
                tracing::error!(tenant = %self.name, error = %e, "live spans not indexed");
                st.unindexed = true;
            }
        }
        st.active_bytes += chunk.bytes;
        st.active_since.get_or_insert_with(Instant::now);
        st.active.push(chunk);
        index_bytes
    }

    fn min_live_seq(&self) -> Option<u64> {
        let st = self.state.lock().expect("tenant state lock");
        st.flushing.iter().chain(&st.active).map(|c| c.seq).min()
    }
}

/// Where a read takes spans from: a segment of live spans, or a data file.
#[derive(Debug, Clone)]
pub enum SpanSource {
    Live(Arc<LiveSegment>),
    File(DataFile),
}

/// Spans acknowledged but perhaps not yet in the table, from another process: one source
/// record each, tagged with the Delta `txn` application id and version that mark it committed.
#[derive(Debug, Clone)]
pub struct LiveRecord {
    pub app_id: String,
    pub version: i64,
    pub batch: RecordBatch,
}

/// Where a shared-table reader gets spans the tables may not hold yet.
#[async_trait::async_trait]
pub trait LiveSource: Send + Sync {
    /// The tenant's live records, in source order.
    async fn live(&self, tenant: &str) -> Result<Vec<LiveRecord>>;
}

/// The storage engine shared by receivers and query engines.
pub struct Warehouse {
    config: WarehouseConfig,
    storage: Storage,
    /// `None` when other processes write the tables ([`Warehouse::open_shared`]).
    wal: Option<Wal>,
    live_source: Option<Arc<dyn LiveSource>>,
    app_id: String,
    tenants: RwLock<HashMap<String, Arc<Tenant>>>,
    stats: Arc<WarehouseStats>,
    /// This warehouse's name as the holder of tenants' upkeep leases ([`crate::lease`]).
    upkeep_owner: String,
    footers: Arc<trace_index::FooterCache>,
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
            wal: Some(wal),
            live_source: None,
            app_id,
            tenants: RwLock::new(HashMap::new()),
            stats: Arc::new(WarehouseStats::default()),
            footers: Arc::default(),
            upkeep_owner: crate::lease::new_owner(),
        });
        warehouse.replay(records).await?;
        let weak = Arc::downgrade(&warehouse);
        if let Some(wal) = &warehouse.wal {
            wal.start(Arc::new(move |records: Vec<WalRecord>| {
                if let Some(w) = weak.upgrade() {
                    w.apply(records);
                }
            }))?;
        }
        Ok(warehouse)
    }

    /// Opens storage without a WAL, for processes that share the tables with writers elsewhere:
    /// reads refresh each table from its log and add `live` spans; writes go through
    /// [`commit`](Self::commit) only.
    pub fn open_shared(config: WarehouseConfig, live: Option<Arc<dyn LiveSource>>) -> Result<Arc<Self>> {
        let storage = Storage::open(&config.storage)?;
        Ok(Arc::new(Self {
            config,
            storage,
            wal: None,
            live_source: live,
            app_id: String::new(),
            tenants: RwLock::new(HashMap::new()),
            stats: Arc::new(WarehouseStats::default()),
            footers: Arc::default(),
            upkeep_owner: crate::lease::new_owner(),
        }))
    }

    fn is_shared(&self) -> bool {
        self.wal.is_none()
    }

    /// Reloads the tenant's table from its log (tables written by other processes), and adds
    /// the new files to a loaded trace index.
    async fn refresh(&self, tenant: &Arc<Tenant>) -> Result<Arc<DeltaTable>> {
        let _guard = tenant.flush_lock.lock().await;
        let current = tenant.state.lock().expect("tenant state lock").table.clone();
        let mut table = match current {
            Some(t) => (*t).clone(),
            None => table::open(&self.storage, &tenant.name).await?,
        };
        let before = table.version();
        if table::is_created(&table) {
            table.update_incremental(None).await?;
        } else {
            match table.load().await {
                Ok(()) | Err(deltalake::DeltaTableError::NotATable(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let table = Arc::new(table);
        if table.version() != before {
            self.sync_index(tenant, &table).await?;
        }
        tenant.state.lock().expect("tenant state lock").table = Some(table.clone());
        Ok(table)
    }

    /// The committed versions of `app_ids` in the tenant's table, read fresh from its log.
    pub async fn committed_versions(&self, tenant: &str, app_ids: &[String]) -> Result<HashMap<String, i64>> {
        let tenant = self.tenant(tenant)?;
        let table = self.refresh(&tenant).await?;
        txn_versions(&table, app_ids).await
    }

    /// Writes `batches` into the tenant's table in one commit carrying `txns` (application id,
    /// version) as Delta `txn` actions; for writers that keep their own progress (Kafka offsets).
    /// Fails with a conflict when another writer committed one of the same application ids
    /// meanwhile. Returns the table version written.
    pub async fn commit(&self, tenant: &str, batches: &[RecordBatch], txns: Vec<(String, i64)>) -> Result<u64> {
        assert!(!txns.is_empty(), "a shared-table commit must carry its progress");
        let tenant = self.tenant(tenant)?;
        let _guard = tenant.flush_lock.lock().await;
        let current = tenant.state.lock().expect("tenant state lock").table.clone();
        let t = match current {
            Some(t) => t,
            None => Arc::new(table::open(&self.storage, &tenant.name).await?),
        };
        let txns = txns
            .into_iter()
            .map(|(app, version)| deltalake::kernel::Transaction::new(app, version))
            .collect();
        let (t, entries) = self.write_indexed(&tenant, t, batches, txns).await?;
        let version = t.version().unwrap_or_default();
        tenant.state.lock().expect("tenant state lock").table = Some(Arc::new(t));
        if let Some(entries) = entries {
            self.write_sidecar(&tenant.name, version, &entries).await;
        }
        let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
        self.stats.spans_flushed.fetch_add(rows, Ordering::Relaxed);
        Ok(version)
    }

    /// Appends `batches` with `txns`, then computes the trace-index entries of the added files
    /// (`None`, and a dropped in-memory index, when that fails).
    async fn write_indexed(
        &self,
        tenant: &Tenant,
        table: Arc<DeltaTable>,
        batches: &[RecordBatch],
        txns: Vec<deltalake::kernel::Transaction>,
    ) -> Result<(DeltaTable, Option<Vec<(DataFile, Vec<trace_index::TraceSpan>)>>)> {
        let before = data_files(&table)?;
        let t = table::append_txns((*table).clone(), batches, txns).await?;
        let entries = match self.index_entries(&tenant.name, &before, &t, batches).await {
            Ok(entries) => Some(entries),
            Err(e) => {
                tracing::warn!(tenant = %tenant.name, error = %e, "trace index not updated; rebuilt on next load");
                *tenant.trace_index.lock().expect("trace index lock") = None;
                None
            }
        };
        // A local flush updates the index together with the live buffer, later.
        if self.is_shared()
            && let (Some(index), Some(entries)) =
                (tenant.trace_index.lock().expect("trace index lock").as_mut(), &entries)
        {
            for (file, traces) in entries {
                index.insert(file, traces);
            }
            index.retain_files(&data_files(&t)?.iter().map(|f| f.path.as_str()).collect());
        }
        Ok((t, entries))
    }

    async fn write_sidecar(&self, tenant: &str, version: u64, entries: &[(DataFile, Vec<trace_index::TraceSpan>)]) {
        let written = async {
            self.table_files(tenant)?
                .write_sidecar(&format!("{version:020}"), entries)
                .await
        };
        if let Err(e) = written.await {
            tracing::warn!(tenant = %tenant, error = %e, "trace index sidecar not written; rebuilt on next load");
        }
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &Arc<WarehouseStats> {
        &self.stats
    }

    /// Bytes of WAL segments on disk.
    pub fn wal_disk_bytes(&self) -> u64 {
        self.wal.as_ref().map_or(0, Wal::disk_bytes)
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
            let bytes = record.bytes;
            self.stats.live_bytes.fetch_add(bytes, Ordering::Relaxed);
            let index_bytes = self.tenant(&record.tenant)?.push(Chunk {
                seq: record.seq,
                batch: record.batch,
                bytes,
            });
            self.stats.live_bytes.fetch_add(index_bytes, Ordering::Relaxed);
        }
        self.stats.spans_replayed.fetch_add(replayed, Ordering::Relaxed);
        if replayed > 0 {
            tracing::info!(spans = replayed, "replayed unflushed spans from the wal");
        }
        Ok(())
    }

    fn apply(&self, records: Vec<WalRecord>) {
        for record in records {
            let bytes = record.bytes;
            match self.tenant(&record.tenant) {
                Ok(tenant) => {
                    // The index was not reserved with the spans: it counts from here on.
                    let index_bytes = tenant.push(Chunk {
                        seq: record.seq,
                        batch: record.batch,
                        bytes,
                    });
                    self.stats.live_bytes.fetch_add(index_bytes, Ordering::AcqRel);
                }
                Err(e) => tracing::error!(error = %e, "durable record for an invalid tenant"),
            }
        }
    }

    /// Tenant handles held (those with live spans, and at most
    /// [`MAX_IDLE_TENANT_HANDLES`] more).
    pub fn tenant_handles(&self) -> usize {
        self.tenants.read().expect("tenants lock").len()
    }

    /// The tenant's handle, created on first use.
    pub fn tenant(&self, name: &str) -> Result<Arc<Tenant>> {
        if let Some(t) = self.tenants.read().expect("tenants lock").get(name) {
            return Ok(t.clone());
        }
        validate_tenant(name)?;
        let mut tenants = self.tenants.write().expect("tenants lock");
        if tenants.len() >= MAX_IDLE_TENANT_HANDLES && !tenants.contains_key(name) {
            tenants.retain(|_, t| Arc::strong_count(t) > 1 || t.holds_live_spans());
        }
        Ok(tenants
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(Tenant {
                    name: name.to_string(),
                    state: Mutex::new(TenantState::default()),
                    flush_lock: AsyncMutex::new(()),
                    trace_index: Mutex::new(None),
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
        let Some(wal) = &self.wal else {
            self.stats.live_bytes.fetch_sub(bytes, Ordering::AcqRel);
            return Err(Error::Config(
                "this process does not accept spans: the tables are written elsewhere".into(),
            ));
        };
        if let Err(e) = wal.append(tenant, batch).await {
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

    /// The committed table (`None` when the tenant has none) and the live batches of `tenant`,
    /// taken atomically. Reading a tenant that has nothing creates nothing: no handle, no
    /// directory.
    pub async fn snapshot(&self, tenant: &str) -> Result<(Option<Arc<DeltaTable>>, LiveSpans)> {
        let tenant = match self.reading(tenant).await? {
            Reading::Known(t) => t,
            Reading::LiveOnly(live) => return Ok((None, LiveSpans::new(live))),
        };
        if self.is_shared() {
            let (table, live) = self.shared_snapshot(&tenant).await?;
            return Ok((Some(table), LiveSpans::new(live)));
        }
        self.load_table(&tenant).await?;
        let st = tenant.state.lock().expect("tenant state lock");
        let table = st
            .table
            .clone()
            .ok_or_else(|| Error::Wal("table handle vanished".into()))?;
        let batches = st.flushing.iter().chain(&st.active).map(|c| c.batch.clone()).collect();
        let live = match st.unindexed {
            true => LiveSpans::new(batches),
            false => LiveSpans::indexed(
                batches,
                st.flushing_segments.iter().chain(&st.segments).cloned().collect(),
            ),
        };
        Ok((Some(table), live))
    }

    /// What a read of `name` starts from: its handle when it has one or a table on storage;
    /// else only the live records another process holds for it (none in monolithic mode, where
    /// every tenant with live spans has a handle).
    async fn reading(&self, name: &str) -> Result<Reading> {
        validate_tenant(name)?;
        if let Some(t) = self.tenants.read().expect("tenants lock").get(name) {
            return Ok(Reading::Known(t.clone()));
        }
        // Live records first: one the live source drops as committed is in the table after.
        let live = match (&self.live_source, self.is_shared()) {
            (Some(source), true) => source.live(name).await?.into_iter().map(|r| r.batch).collect(),
            _ => Vec::new(),
        };
        if self.storage.table_exists(name).await? {
            return Ok(Reading::Known(self.tenant(name)?));
        }
        Ok(Reading::LiveOnly(live))
    }

    /// Live records first, then the table: a record the live source dropped as committed is in
    /// the table read after it. Records the snapshot's `txn` versions cover are left out.
    async fn shared_snapshot(&self, tenant: &Arc<Tenant>) -> Result<(Arc<DeltaTable>, Vec<RecordBatch>)> {
        let records = match &self.live_source {
            Some(source) => source.live(&tenant.name).await?,
            None => Vec::new(),
        };
        let table = self.refresh(tenant).await?;
        let live = uncommitted(&table, records).await?;
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
            st.flushing_segments = std::mem::take(&mut st.segments);
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
            let txn = table::wal_txn(&self.app_id, max_seq);
            self.write_indexed(tenant, t, &batches, vec![txn]).await
        }
        .await;
        let sidecar = {
            let mut st = tenant.state.lock().expect("tenant state lock");
            match result {
                Ok((t, entries)) => {
                    let version = t.version().unwrap_or_default();
                    // Index and live buffer change together, so a lookup sees the flushed spans
                    // in exactly one of them.
                    if let (Some(index), Some(entries)) =
                        (tenant.trace_index.lock().expect("trace index lock").as_mut(), &entries)
                    {
                        for (file, traces) in entries {
                            index.insert(file, traces);
                        }
                        // Files another process (compaction, retention) took out meanwhile.
                        if let Ok(files) = data_files(&t) {
                            index.retain_files(&files.iter().map(|f| f.path.as_str()).collect());
                        }
                    }
                    st.table = Some(Arc::new(t));
                    st.flushing.clear();
                    st.flushing_segments.clear();
                    st.unindexed &= !st.active.is_empty();
                    entries.map(|e| (version, e))
                }
                Err(e) => {
                    // Put the chunks back in front so they are retried, in order.
                    let mut chunks = std::mem::take(&mut st.flushing);
                    chunks.append(&mut st.active);
                    st.active = chunks;
                    let mut segments = std::mem::take(&mut st.flushing_segments);
                    segments.append(&mut st.segments);
                    st.segments = segments;
                    st.active_bytes += bytes;
                    st.active_since.get_or_insert_with(Instant::now);
                    self.stats.flush_errors.fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
            }
        };
        if let Some((version, entries)) = sidecar {
            self.write_sidecar(&tenant.name, version, &entries).await;
        }
        self.stats.live_bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
        self.stats.spans_flushed.fetch_add(rows, Ordering::Relaxed);
        self.truncate_wal()?;
        Ok(rows)
    }

    fn table_files(&self, tenant: &str) -> Result<TableFiles> {
        let url = self.storage.table_url(tenant)?;
        let root = object_store::path::Path::from_url_path(url.path())
            .map_err(|e| Error::Config(format!("bad table location {url}: {e}")))?;
        Ok(TableFiles {
            store: self.storage.store.clone(),
            root,
            local: url.to_file_path().ok(),
            footers: self.footers.clone(),
        })
    }

    /// The index entries of the files a flush added: from the flushed batches when a partition
    /// got one file, else read back from the files.
    async fn index_entries(
        &self,
        tenant: &str,
        before: &[DataFile],
        table: &DeltaTable,
        batches: &[RecordBatch],
    ) -> Result<Vec<(DataFile, Vec<trace_index::TraceSpan>)>> {
        let files = self.table_files(tenant)?;
        let old: std::collections::HashSet<&str> = before.iter().map(|f| f.path.as_str()).collect();
        let after = data_files(table)?;
        let added: Vec<&DataFile> = after.iter().filter(|f| !old.contains(f.path.as_str())).collect();
        // The flushed batches tell what each added file holds when the commit added one file per
        // date of theirs and nothing else (another process's compaction file read in with the
        // commit is read from the file).
        let dates = batch_dates(batches)?;
        let ours = added.len() == dates.len() && added.iter().all(|f| dates.contains(f.date.as_str()));
        let mut entries = Vec::with_capacity(added.len());
        for file in &added {
            let traces = if ours {
                trace_index::trace_spans(batches, Some(&file.date))?
            } else {
                files.index_file(file).await?
            };
            entries.push(((*file).clone(), traces));
        }
        Ok(entries)
    }

    /// The spans of one trace, committed and live. The trace-id index picks the files to open
    /// (only those overlapping `range_ns`, unix ns inclusive, when given); an unknown trace
    /// opens none.
    pub async fn trace_by_id(&self, tenant: &str, trace: u128, range_ns: Option<(i64, i64)>) -> Result<TraceLookup> {
        self.traces_by_id(tenant, &[trace], range_ns).await
    }

    /// The spans of several traces at once: each file that holds any of them is read once.
    pub async fn traces_by_id(
        &self,
        tenant: &str,
        traces: &[u128],
        range_ns: Option<(i64, i64)>,
    ) -> Result<TraceLookup> {
        let tenant = match self.reading(tenant).await? {
            Reading::Known(t) => t,
            Reading::LiveOnly(live) => return live_lookup(&live, traces),
        };
        let (table, shared_live) = if self.is_shared() {
            let (table, live) = self.shared_snapshot(&tenant).await?;
            (table, Some(live))
        } else {
            (self.load_table(&tenant).await?, None)
        };
        let files = self.table_files(&tenant.name)?;
        self.ensure_index(&tenant, table).await?;
        // Live chunks and index under the state lock: a flush changes both in one step.
        let (live, to_open) = {
            let st = tenant.state.lock().expect("tenant state lock");
            let live: Vec<RecordBatch> = match &shared_live {
                Some(live) => live.clone(),
                None => st.flushing.iter().chain(&st.active).map(|c| c.batch.clone()).collect(),
            };
            let mut to_open: Vec<(DataFile, Vec<String>)> = Vec::new();
            if let Some(index) = tenant.trace_index.lock().expect("trace index lock").as_ref() {
                for &trace in traces {
                    for file in index.files_of(trace, range_ns) {
                        let hex = trace_index::trace_id_hex(trace);
                        match to_open.iter_mut().find(|(f, _)| f.path == file.path) {
                            Some((_, ids)) => ids.push(hex),
                            None => to_open.push((file, vec![hex])),
                        }
                    }
                }
            }
            (live, to_open)
        };
        let wanted: std::collections::HashSet<String> = traces.iter().map(|t| trace_index::trace_id_hex(*t)).collect();
        let (mut batches, bytes_inspected) = files.read_traces(&to_open).await?;
        for batch in &live {
            if let Some(b) = trace_index::filter_traces(batch, &wanted)? {
                batches.push(b);
            }
        }
        Ok(TraceLookup {
            batches,
            files_read: to_open.len(),
            bytes_inspected,
        })
    }

    /// Loads the tenant's trace-id index unless it is loaded, from the tenant's table (or
    /// `table` when the tenant has none yet).
    async fn ensure_index(&self, tenant: &Tenant, table: Arc<DeltaTable>) -> Result<()> {
        let loaded = tenant.trace_index.lock().expect("trace index lock").is_some();
        if loaded || !table::is_created(&table) {
            return Ok(());
        }
        let _guard = tenant.flush_lock.lock().await;
        if tenant.trace_index.lock().expect("trace index lock").is_none() {
            let current = tenant
                .state
                .lock()
                .expect("tenant state lock")
                .table
                .clone()
                .unwrap_or(table);
            let index = self.table_files(&tenant.name)?.load(&data_files(&current)?).await?;
            tracing::info!(tenant = %tenant.name, files = index.file_count(), traces = index.trace_count(), "trace index loaded");
            *tenant.trace_index.lock().expect("trace index lock") = Some(index);
        }
        Ok(())
    }

    /// `answer` from the trace-id index of `tenant`, which holds every data file of `snapshot`;
    /// `None` when it does not (yet) hold one of them.
    async fn with_index<T>(
        &self,
        tenant: &str,
        snapshot: &SnapshotSpans,
        answer: impl FnOnce(&TraceIndex, &[DataFile]) -> Option<T>,
    ) -> Result<Option<T>> {
        let files = snapshot.read_files()?;
        if files.is_empty() {
            // Nothing to index: the answer over an empty index.
            return Ok(answer(&TraceIndex::default(), &files));
        }
        let Reading::Known(tenant) = self.reading(tenant).await? else {
            return Ok(None);
        };
        if let Some(table) = snapshot.table() {
            self.ensure_index(&tenant, table).await?;
        }
        let index = tenant.trace_index.lock().expect("trace index lock");
        Ok(match index.as_ref() {
            Some(index) => answer(index, &files),
            None => None,
        })
    }

    /// Every trace of `snapshot`'s data files, with the first start and last end of its rows
    /// in them (live spans are not in it); `None` when the trace-id index does not cover the
    /// snapshot.
    pub async fn trace_times(&self, tenant: &str, snapshot: &SnapshotSpans) -> Result<Option<Vec<TraceSpan>>> {
        self.with_index(tenant, snapshot, |index, files| index.times_in(files))
            .await
    }

    /// The data files of `snapshot`, newest first; `None` when the trace-id index does not
    /// cover the snapshot.
    pub async fn files_newest_first(&self, tenant: &str, snapshot: &SnapshotSpans) -> Result<Option<Vec<DataFile>>> {
        self.with_index(tenant, snapshot, |index, files| index.newest_first(files))
            .await
    }

    /// The traces of `file` (one of `snapshot`'s), sorted, with the time span of their rows
    /// there, by the trace-id index; `None` when it does not cover the snapshot.
    pub async fn traces_in_file(
        &self,
        tenant: &str,
        snapshot: &SnapshotSpans,
        file: &DataFile,
    ) -> Result<Option<Arc<[TraceSpan]>>> {
        self.with_index(tenant, snapshot, |index, _| index.traces_of(file))
            .await
    }

    /// The rows of `traces` (sorted) in `snapshot` (that pass `condition`, when given),
    /// `columns` only (of the maps `narrowed` names, the fields it lists): of each data file
    /// that holds some (by the trace-id index) the pages that hold them, and of each live
    /// segment the rows; `None` when the index does not cover the snapshot.
    pub async fn read_traces_of(
        &self,
        tenant: &str,
        snapshot: &SnapshotSpans,
        traces: &[u128],
        columns: &[String],
        condition: Option<&SpanCondition>,
        narrowed: Option<&MapFields>,
    ) -> Result<Option<Read>> {
        let holders = self.with_index(tenant, snapshot, |i, files| i.holders(traces, files));
        let Some(holders) = holders.await? else {
            return Ok(None);
        };
        let live: Vec<(Arc<LiveSegment>, Vec<String>)> = (snapshot.live_segments()?.iter())
            .map(|s| (s.clone(), live::held(s, traces)))
            .filter(|(_, held)| !held.is_empty())
            .collect();
        let all = IdRange::default();
        let wanted = |ids| Wanted {
            range: &all,
            traces: Some(ids),
            condition,
        };
        let parts: Vec<(SpanSource, Wanted<'_>)> = (live.iter())
            .map(|(segment, ids)| (SpanSource::Live(segment.clone()), wanted(ids)))
            .chain((holders.iter()).map(|(file, ids)| (SpanSource::File(file.clone()), wanted(ids))))
            .collect();
        Ok(Some(self.read_parts(tenant, &parts, columns, narrowed).await?))
    }

    /// The rows of each of `parts` (a live segment or a data file of `tenant`) that are wanted
    /// of it, `columns` only (of the maps `narrowed` names, the fields it lists): of each file
    /// only the pages that may hold those ids, and no other file, whatever the trace-id index
    /// says holds them too. The live rows come first.
    pub async fn read_parts(
        &self,
        tenant: &str,
        parts: &[(SpanSource, Wanted<'_>)],
        columns: &[String],
        narrowed: Option<&MapFields>,
    ) -> Result<Read> {
        let mut read = Read::default();
        let mut by_path: HashMap<String, Wanted<'_>> = HashMap::with_capacity(parts.len());
        let mut files = Vec::with_capacity(parts.len());
        for (source, wanted) in parts {
            match source {
                SpanSource::File(file) => {
                    assert!(
                        by_path.insert(file.path.clone(), *wanted).is_none(),
                        "a file read twice"
                    );
                    files.push(file.clone());
                }
                SpanSource::Live(segment) => read.extend(segment.read(*wanted, columns, narrowed)?),
            }
        }
        let by_path = &by_path;
        let reads = self
            .each_file(tenant, files, |files, file| async move {
                files.read_id_range(&file, by_path[&file.path], columns, narrowed).await
            })
            .await?;
        reads.into_iter().for_each(|r| read.extend(r));
        Ok(read)
    }

    /// The spans of `snapshot` (of `tenant`) that are `wanted`, `columns` only: of each data
    /// file the pages that may hold them, and the live spans.
    pub async fn read_id_range(
        &self,
        tenant: &str,
        snapshot: &SnapshotSpans,
        wanted: Wanted<'_>,
        columns: &[String],
        narrowed: Option<&MapFields>,
    ) -> Result<Read> {
        let reads = self
            .each_file(tenant, snapshot.files()?, |files, file| async move {
                files.read_id_range(&file, wanted, columns, narrowed).await
            })
            .await?;
        let mut read = live::read_segments(&snapshot.live_segments()?, wanted, columns, narrowed)?;
        reads.into_iter().for_each(|r| read.extend(r));
        Ok(read)
    }

    /// The trace-id pages of `snapshot`'s data files (smallest and largest id and rows of
    /// each): a histogram of the table's trace ids. Live spans are not in it.
    pub async fn id_pages(&self, tenant: &str, snapshot: &SnapshotSpans) -> Result<Vec<IdPage>> {
        let pages = self
            .each_file(tenant, snapshot.files()?, |files, file| async move {
                files.id_pages(&file).await
            })
            .await?;
        Ok(pages.into_iter().flatten().collect())
    }

    /// For each of `files`, per row group, whether a string attribute value in `leaves` may
    /// be `value`: false only when the row group's bloom filter on each leaf rules it out.
    pub async fn files_row_groups_may_contain(
        &self,
        tenant: &str,
        files: &[DataFile],
        leaves: &[&str],
        value: &str,
    ) -> Result<Vec<Vec<bool>>> {
        self.each_file(tenant, files.to_vec(), |files, file| async move {
            files.row_groups_may_contain(&file, leaves, value).await
        })
        .await
    }

    /// For each of `files`, per row group, its smallest and largest trace id.
    pub async fn files_row_group_ids(&self, tenant: &str, files: &[DataFile]) -> Result<Vec<Vec<(u128, u128)>>> {
        self.each_file(tenant, files.to_vec(), |files, file| async move {
            files.row_group_ids(&file).await
        })
        .await
    }

    /// `read` of each of `tenant`'s `files`, in order, at most `LOOKUP_FILES_PARALLEL` at once.
    async fn each_file<T, F, Fut>(&self, tenant: &str, files: Vec<DataFile>, read: F) -> Result<Vec<T>>
    where
        F: Fn(TableFiles, DataFile) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        validate_tenant(tenant)?;
        let table_files = self.table_files(tenant)?;
        futures::stream::iter(files.into_iter().map(|f| read(table_files.clone(), f)))
            .buffered(trace_index::LOOKUP_FILES_PARALLEL)
            .try_collect()
            .await
    }

    fn truncate_wal(&self) -> Result<()> {
        let Some(wal) = &self.wal else {
            return Ok(());
        };
        // Read the WAL's next sequence first: any record applied later has a higher one.
        let next = wal.next_seq();
        let tenants: Vec<Arc<Tenant>> = self.tenants.read().expect("tenants lock").values().cloned().collect();
        let min_live = tenants
            .iter()
            .filter_map(|t| t.min_live_seq())
            .min()
            .unwrap_or(next)
            .min(next);
        wal.truncate_before(min_live)?;
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

    /// Reloads the loaded tables from their logs, so that what another process committed
    /// (a scheduled compaction or retention job) is read, before vacuum deletes the files
    /// it replaced.
    async fn refresh_tables(&self) {
        let tenants: Vec<Arc<Tenant>> = self.tenants.read().expect("tenants lock").values().cloned().collect();
        for tenant in tenants {
            let loaded = tenant.state.lock().expect("tenant state lock").table.is_some();
            if loaded && let Err(e) = self.refresh(&tenant).await {
                tracing::warn!(tenant = %tenant.name, error = %e, "table not reloaded; retried later");
            }
        }
    }

    /// Flushes due tenants every `flush_check_interval` until `shutdown` resolves, and every
    /// [`TABLE_REFRESH_INTERVAL`] reloads the loaded tables from their logs.
    pub async fn run_flush_loop(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.config.flush_check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_refresh = Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let _ = self.flush_due(false).await;
                    if !self.is_shared() && last_refresh.elapsed() >= TABLE_REFRESH_INTERVAL {
                        self.refresh_tables().await;
                        last_refresh = Instant::now();
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
    }

    /// Stops the WAL writer (finishing queued appends) and flushes everything live.
    pub async fn shutdown(&self) -> Result<u64> {
        if let Some(wal) = &self.wal {
            wal.close();
        }
        self.flush_due(true).await
    }
}

/// The committed data files of `table` (none before its first commit).
pub(crate) fn data_files(table: &DeltaTable) -> Result<Vec<DataFile>> {
    if !table::is_created(table) {
        return Ok(Vec::new());
    }
    let snapshot = table.snapshot()?;
    Ok(snapshot
        .log_data()
        .iter()
        .map(|f| DataFile {
            path: f.path().into_owned(),
            size: u64::try_from(f.size()).unwrap_or_default(),
            date: f
                .partition_values_map()
                .get(crate::schema::PARTITION_COLUMN)
                .cloned()
                .flatten()
                .unwrap_or_default(),
        })
        .collect())
}

/// The distinct partition values (`date`) of `batches`.
fn batch_dates(batches: &[RecordBatch]) -> Result<std::collections::HashSet<String>> {
    use arrow::array::AsArray;
    let mut out = std::collections::HashSet::new();
    for b in batches {
        let Some(column) = b.column_by_name(crate::schema::PARTITION_COLUMN) else {
            continue;
        };
        let Some(dates) = column.as_string_opt::<i32>() else {
            return Err(Error::InvalidSpan("the partition column is not text".into()));
        };
        let mut last: Option<&str> = None;
        for d in dates.iter().flatten() {
            if last != Some(d) && !out.contains(d) {
                out.insert(d.to_string());
            }
            last = Some(d);
        }
    }
    Ok(out)
}

/// The committed versions of `app_ids` in `table` (absent ids have none).
async fn txn_versions(table: &DeltaTable, app_ids: &[String]) -> Result<HashMap<String, i64>> {
    let mut versions = HashMap::with_capacity(app_ids.len());
    if !table::is_created(table) {
        return Ok(versions);
    }
    let snapshot = table.snapshot()?;
    for app in app_ids {
        if let Some(v) = snapshot.transaction_version(table.log_store().as_ref(), app).await? {
            versions.insert(app.clone(), v);
        }
    }
    Ok(versions)
}

/// The batches of `records` that `table` does not hold: version above the table's `txn` version
/// of their application id. A record seen twice (same id and version) is kept once.
/// Where a read of a tenant starts.
enum Reading {
    /// The tenant has a handle (live spans or a table).
    Known(Arc<Tenant>),
    /// No table: only these live batches (from another process), if any.
    LiveOnly(Vec<RecordBatch>),
}

/// The spans of `traces` among `live` batches alone.
fn live_lookup(live: &[RecordBatch], traces: &[u128]) -> Result<TraceLookup> {
    let wanted: std::collections::HashSet<String> = traces.iter().map(|t| trace_index::trace_id_hex(*t)).collect();
    let mut batches = Vec::new();
    for batch in live {
        if let Some(b) = trace_index::filter_traces(batch, &wanted)? {
            batches.push(b);
        }
    }
    Ok(TraceLookup {
        batches,
        ..TraceLookup::default()
    })
}

async fn uncommitted(table: &DeltaTable, records: Vec<LiveRecord>) -> Result<Vec<RecordBatch>> {
    let mut apps: Vec<String> = records.iter().map(|r| r.app_id.clone()).collect();
    apps.sort_unstable();
    apps.dedup();
    let versions = txn_versions(table, &apps).await?;
    let mut seen = std::collections::HashSet::new();
    Ok(records
        .into_iter()
        .filter(|r| versions.get(&r.app_id).is_none_or(|&v| r.version > v))
        .filter(|r| seen.insert((r.app_id.clone(), r.version)))
        .map(|r| r.batch)
        .collect())
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
