//! Upkeep of a tenant's table through the warehouse: compaction, retention, vacuum and log
//! upkeep ([`crate::upkeep`]) committed under the tenant's flush lock, with the table handle
//! and the trace-id index brought up to date in the same step, so a lookup never reads a file
//! that left the table nor misses one that joined it.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use deltalake::DeltaTable;
use deltalake::protocol::DeltaOperation;

use super::{Tenant, Warehouse, data_files};
use crate::lease::{self, Lease};
use crate::trace_index::DataFile;
use crate::upkeep::{self, TimedFile, UpkeepConfig};
use crate::{Error, Result, table};

/// What one upkeep pass did to a tenant's table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UpkeepReport {
    /// When another process held the tenant's upkeep lease: its name (the pass did nothing).
    pub held_by: Option<String>,
    /// The table's data files before the pass and after it.
    pub before: TableSize,
    pub after: TableSize,
    /// Merges committed.
    pub merges: usize,
    /// Merges skipped because another writer removed one of their files meanwhile.
    pub conflicts: usize,
    pub files_compacted: usize,
    pub files_written: usize,
    pub rows_read: u64,
    pub rows_written: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Files retention removed from the table, and the spans they held.
    pub files_expired: usize,
    pub rows_expired: u64,
    /// Files deleted from storage (listed only, on a dry run).
    pub files_vacuumed: Vec<String>,
    /// Delta log files deleted.
    pub log_files_expired: usize,
    /// Trace-id index sidecars merged into one.
    pub sidecars_merged: usize,
    /// Small files left that compaction would merge (Tempo's outstanding blocks).
    pub outstanding: usize,
}

/// A table's data files: how many, their bytes and their rows (spans), by the Delta log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TableSize {
    pub files: usize,
    pub bytes: u64,
    pub rows: u64,
}

impl TableSize {
    fn of(files: &[TimedFile]) -> Self {
        Self {
            files: files.len(),
            bytes: files.iter().map(|f| f.file.size).sum(),
            rows: files.iter().map(|f| f.rows).sum(),
        }
    }
}

/// Where a pass is, for a job's progress bar: merges done of those planned.
#[derive(Debug, Clone, Copy)]
pub struct UpkeepProgress {
    pub merges_done: usize,
    pub merges_planned: usize,
    /// Input bytes of the merges done.
    pub bytes_done: u64,
}

/// What one step of a pass (retention, a merge, their commits) works on: the tenant's
/// table as the pass read it, its files, the settings and the lease the pass holds.
struct Pass<'a> {
    tenant: &'a Arc<Tenant>,
    table: &'a DeltaTable,
    /// `table`'s files.
    files: &'a [TimedFile],
    config: &'a UpkeepConfig,
    lease: Option<&'a Lease>,
}

/// Merges of one pass running at once (each holds at most `merge_memory_bytes`).
const MERGES_IN_FLIGHT: usize = 2;

/// Sidecars a table may have before upkeep merges them (a load reads each).
pub const MAX_SIDECARS: usize = 64;

/// Tenants whose outstanding small files `/metrics` reports at most.
pub const MAX_TENANTS_REPORTED: usize = 10_000;

impl Warehouse {
    /// The tenants that have a table on storage, sorted.
    pub async fn stored_tenants(&self) -> Result<Vec<String>> {
        let root = self
            .storage
            .root_url
            .join("tenants/")
            .map_err(|e| Error::Config(format!("bad storage root: {e}")))?;
        let prefix = object_store::path::Path::from_url_path(root.path())
            .map_err(|e| Error::Config(format!("bad storage root: {e}")))?;
        let listed = match self.storage.store.list_with_delimiter(Some(&prefix)).await {
            Ok(listed) => listed,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for dir in listed.common_prefixes {
            let Some(name) = dir.filename() else { continue };
            if self.storage.table_exists(name).await? {
                out.push(name.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    /// One upkeep pass over `tenant`'s table ([`Self::upkeep_tenant_with`]), without progress.
    pub async fn upkeep_tenant(&self, tenant: &str, config: &UpkeepConfig, dry_run: bool) -> Result<UpkeepReport> {
        self.upkeep_tenant_with(tenant, config, dry_run, &|_| {}).await
    }

    /// One upkeep pass over `tenant`'s table: retention, compaction, then (with
    /// `config.tidy`) vacuum, log upkeep and the sidecar merge; `dry_run` changes nothing and
    /// lists what vacuum would delete. A pass that changes the table holds the tenant's
    /// upkeep lease ([`crate::lease`]); when another process holds it, the pass does nothing
    /// and says who. `progress` hears of each merge.
    pub async fn upkeep_tenant_with(
        &self,
        tenant: &str,
        config: &UpkeepConfig,
        dry_run: bool,
        progress: &(dyn Fn(UpkeepProgress) + Sync),
    ) -> Result<UpkeepReport> {
        // Upkeep of a tenant without a table creates nothing.
        if !self.storage.table_exists(tenant).await? {
            return Ok(UpkeepReport::default());
        }
        let started = std::time::Instant::now();
        let lease = match dry_run {
            true => None,
            false => match self.upkeep_lease(tenant, config.lease_ttl).await? {
                lease::Acquired::Held(l) => Some(l),
                lease::Acquired::Busy { owner, .. } => {
                    self.stats.upkeep_lease_busy.fetch_add(1, Ordering::Relaxed);
                    return Ok(UpkeepReport {
                        held_by: Some(owner),
                        ..Default::default()
                    });
                }
            },
        };
        let done = self
            .upkeep_pass(tenant, config, dry_run, lease.as_ref(), progress)
            .await;
        if let Some(lease) = lease
            && let Err(e) = lease.release().await
        {
            tracing::warn!(tenant, error = %e, "upkeep lease not released; it expires");
        }
        self.count_pass(tenant, &done, started.elapsed());
        done
    }

    /// Takes `tenant`'s upkeep lease for this process.
    async fn upkeep_lease(&self, tenant: &str, ttl: std::time::Duration) -> Result<lease::Acquired> {
        let dir = self.table_files(tenant)?.root.join(lease::LEASE_DIR);
        lease::acquire(self.storage.store.clone(), dir, &self.upkeep_owner, ttl).await
    }

    fn count_pass(&self, tenant: &str, done: &Result<UpkeepReport>, took: std::time::Duration) {
        let stats = &self.stats;
        let add = |counter: &std::sync::atomic::AtomicU64, n: u64| counter.fetch_add(n, Ordering::Relaxed);
        add(
            &stats.upkeep_micros,
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        );
        let Ok(r) = done else {
            add(&stats.upkeep_errors, 1);
            return;
        };
        add(&stats.upkeep_passes, 1);
        add(&stats.compaction_bytes_read, r.bytes_read);
        add(&stats.compaction_bytes_written, r.bytes_written);
        add(&stats.spans_deduplicated, r.rows_read.saturating_sub(r.rows_written));
        add(&stats.spans_expired, r.rows_expired);
        add(&stats.upkeep_conflicts, r.conflicts as u64);
        let mut outstanding = stats.outstanding_files.lock().expect("outstanding lock");
        if outstanding.len() < MAX_TENANTS_REPORTED || outstanding.contains_key(tenant) {
            outstanding.insert(tenant.to_string(), r.outstanding as u64);
        }
    }

    async fn upkeep_pass(
        &self,
        tenant: &str,
        config: &UpkeepConfig,
        dry_run: bool,
        lease: Option<&Lease>,
        progress: &(dyn Fn(UpkeepProgress) + Sync),
    ) -> Result<UpkeepReport> {
        let mut report = UpkeepReport::default();
        let tenant = self.tenant(tenant)?;
        // The table is read again only after this pass committed to it.
        let mut table = self.refresh(&tenant).await?;
        let mut files = upkeep::timed_files(&table)?;
        report.before = TableSize::of(&files);
        if !dry_run {
            let pass = Pass {
                tenant: &tenant,
                table: &table,
                files: &files,
                config,
                lease,
            };
            (report.files_expired, report.rows_expired) = self.expire(&pass).await?;
            if config.compact {
                if report.files_expired > 0 {
                    table = self.refresh(&tenant).await?;
                    files = upkeep::timed_files(&table)?;
                }
                let pass = Pass {
                    tenant: &tenant,
                    table: &table,
                    files: &files,
                    config,
                    lease,
                };
                self.compact(&pass, &mut report, progress).await?;
            }
            if report.files_expired + report.merges > 0 {
                table = self.refresh(&tenant).await?;
                files = upkeep::timed_files(&table)?;
            }
        }
        report.after = TableSize::of(&files);
        let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        report.outstanding = upkeep::outstanding(&files, config, now_ns);
        if !table::is_created(&table) || !config.tidy || lease.is_some_and(Lease::lost) {
            return Ok(report);
        }
        let (vacuumed, files) = upkeep::vacuum(&table, config.grace, dry_run).await?;
        if !dry_run {
            self.stats
                .files_vacuumed
                .fetch_add(files.len() as u64, Ordering::Relaxed);
            report.log_files_expired = upkeep::expire_log(&vacuumed, config.grace).await?;
            let name = format!("{:020}-merged", vacuumed.version().unwrap_or_default());
            let sidecars = self.table_files(&tenant.name)?;
            report.sidecars_merged = sidecars
                .consolidate(&data_files(&vacuumed)?, &name, MAX_SIDECARS)
                .await?;
        }
        report.files_vacuumed = files;
        Ok(report)
    }

    /// Removes the files retention expires; returns how many, and the spans they held.
    async fn expire(&self, pass: &Pass<'_>) -> Result<(usize, u64)> {
        let (tenant, config) = (pass.tenant, pass.config);
        if config.block_retention.is_zero() {
            return Ok((0, 0));
        }
        let retention_ns = i64::try_from(config.block_retention.as_nanos()).unwrap_or(i64::MAX);
        let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        let cutoff = now_ns.saturating_sub(retention_ns);
        let gone = upkeep::expired(pass.files, cutoff);
        if gone.is_empty() {
            return Ok((0, 0));
        }
        let operation = DeltaOperation::Delete {
            predicate: Some(format!("end_time_unix_nano < {cutoff}")),
        };
        self.commit_upkeep(pass, &gone, Vec::new(), true, operation).await?;
        self.stats.files_expired.fetch_add(gone.len() as u64, Ordering::Relaxed);
        tracing::info!(tenant = %tenant.name, files = gone.len(), "retention removed files");
        Ok((gone.len(), gone.iter().map(|f| f.rows).sum()))
    }

    /// Merges the groups of small files compaction plans, each committed on its own, up to
    /// [`MERGES_IN_FLIGHT`] merging at once (a merge runs on one core: it decodes, merges and
    /// encodes in turn); commits take turns.
    async fn compact(
        &self,
        pass: &Pass<'_>,
        report: &mut UpkeepReport,
        progress: &(dyn Fn(UpkeepProgress) + Sync),
    ) -> Result<()> {
        let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        let mut groups = upkeep::plan_compaction(pass.files, pass.config, now_ns).into_iter();
        let mut done = UpkeepProgress {
            merges_done: 0,
            merges_planned: groups.len(),
            bytes_done: 0,
        };
        progress(done);
        // Dropped on an early return: the merges still running stop (their files are orphans).
        let mut merges = tokio::task::JoinSet::new();
        loop {
            while merges.len() < MERGES_IN_FLIGHT
                && let Some(group) = groups.next()
            {
                let (table, config) = (pass.table.clone(), pass.config.clone());
                merges.spawn(async move {
                    let merged = upkeep::merge(&table, &group, &config).await;
                    (group, merged)
                });
            }
            let Some(joined) = merges.join_next().await else {
                return Ok(());
            };
            let (group, merged) = joined.map_err(|e| Error::Unavailable(format!("a merge stopped: {e}")))?;
            if pass.lease.is_some_and(Lease::lost) {
                return Err(Error::Conflict("the upkeep lease was lost; the pass stops".into()));
            }
            let (adds, stats) = merged?;
            done.merges_done += 1;
            done.bytes_done += stats.bytes_read;
            let committed = self.commit_merge(pass, &group, adds).await;
            progress(done);
            self.count_merge(pass, &group, stats, committed, report)?;
        }
    }

    /// Commits a merge of `group` that wrote the files `adds` (OPTIMIZE, no data change).
    async fn commit_merge(
        &self,
        pass: &Pass<'_>,
        group: &[TimedFile],
        adds: Vec<deltalake::kernel::Add>,
    ) -> Result<()> {
        let operation = DeltaOperation::Optimize {
            predicate: None,
            target_size: i64::try_from(pass.config.target_file_bytes).unwrap_or(i64::MAX),
        };
        self.commit_upkeep(pass, group, adds, false, operation).await
    }

    /// Adds a merge of `group` (`stats`) to `report` when it committed; a conflict skips it.
    fn count_merge(
        &self,
        pass: &Pass<'_>,
        group: &[TimedFile],
        stats: upkeep::MergeStats,
        committed: Result<()>,
        report: &mut UpkeepReport,
    ) -> Result<()> {
        match committed {
            Ok(()) => {
                report.merges += 1;
                report.files_compacted += group.len();
                report.files_written += stats.files_written;
                report.rows_read += stats.rows_read;
                report.rows_written += stats.rows_written;
                report.bytes_read += stats.bytes_read;
                report.bytes_written += stats.bytes_written;
                self.stats.compactions.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .files_compacted
                    .fetch_add(group.len() as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(Error::Conflict(e)) => {
                // Another compaction or retention removed one of these files: the files
                // written are orphans, which vacuum deletes after the grace period.
                tracing::warn!(tenant = %pass.tenant.name, error = %e, "compaction skipped a group on a conflict");
                report.conflicts += 1;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Commits `removed` out and `added` in, over the version `pass` read, then makes the
    /// result the tenant's table and brings the trace-id index up to date, all under the
    /// flush lock.
    async fn commit_upkeep(
        &self,
        pass: &Pass<'_>,
        removed: &[TimedFile],
        added: Vec<deltalake::kernel::Add>,
        data_change: bool,
        operation: DeltaOperation,
    ) -> Result<()> {
        let (tenant, lease, read) = (pass.tenant, pass.lease, pass.table);
        let _guard = tenant.flush_lock.lock().await;
        if lease.is_some_and(Lease::lost) {
            return Err(Error::Conflict("the upkeep lease was lost; nothing committed".into()));
        }
        let before: HashSet<String> = data_files(read)?.into_iter().map(|f| f.path).collect();
        // At the version it committed (commit_replace read the log just before).
        let committed = Arc::new(upkeep::commit_replace(read, removed, added, data_change, operation).await?);
        self.sync_index(tenant, &committed).await?;
        let version = committed.version().unwrap_or_default();
        tenant.state.lock().expect("tenant state lock").table = Some(committed.clone());
        // The files this commit added (and any another writer added meanwhile).
        let added_paths: HashSet<String> = (data_files(&committed)?.into_iter())
            .map(|f| f.path)
            .filter(|p| !before.contains(p))
            .collect();
        if !added_paths.is_empty() {
            match self.entries_of(tenant, &committed, &added_paths).await {
                Ok(entries) => self.write_sidecar(&tenant.name, version, &entries).await,
                Err(e) => {
                    tracing::warn!(tenant = %tenant.name, error = %e, "trace index sidecar not written; rebuilt on next load")
                }
            }
        }
        Ok(())
    }

    /// Brings a loaded trace-id index in line with `table`: files that left it are dropped,
    /// files that joined it are indexed from their own columns. The caller holds the flush
    /// lock (a local flush inserts its files together with clearing its live spans).
    pub(super) async fn sync_index(&self, tenant: &Tenant, table: &DeltaTable) -> Result<()> {
        if tenant.trace_index.lock().expect("trace index lock").is_none() {
            return Ok(());
        }
        let current = data_files(table)?;
        let paths: HashSet<&str> = current.iter().map(|f| f.path.as_str()).collect();
        let new: Vec<DataFile> = {
            let mut index = tenant.trace_index.lock().expect("trace index lock");
            let Some(index) = index.as_mut() else { return Ok(()) };
            index.retain_files(&paths);
            current.iter().filter(|f| !index.has_file(&f.path)).cloned().collect()
        };
        let files = self.table_files(&tenant.name)?;
        let mut entries = Vec::with_capacity(new.len());
        for file in new {
            let traces = files.index_file(&file).await?;
            entries.push((file, traces));
        }
        if let Some(index) = tenant.trace_index.lock().expect("trace index lock").as_mut() {
            for (file, traces) in &entries {
                index.insert(file, traces);
            }
        }
        Ok(())
    }

    /// The index entries of `paths` (files of `table`), for their sidecar: from the loaded
    /// index, which [`Self::sync_index`] has just given them, else read from the files.
    async fn entries_of(
        &self,
        tenant: &Tenant,
        table: &DeltaTable,
        paths: &HashSet<String>,
    ) -> Result<Vec<(DataFile, Vec<crate::trace_index::TraceSpan>)>> {
        let files = self.table_files(&tenant.name)?;
        let mut out = Vec::new();
        for file in data_files(table)?.into_iter().filter(|f| paths.contains(&f.path)) {
            let known =
                (tenant.trace_index.lock().expect("trace index lock").as_ref()).and_then(|i| i.traces_of(&file));
            let traces = match known {
                Some(list) => list.to_vec(),
                None => files.index_file(&file).await?,
            };
            out.push((file, traces));
        }
        Ok(out)
    }
}
