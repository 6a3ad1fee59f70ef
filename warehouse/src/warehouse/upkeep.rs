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
use crate::trace_index::DataFile;
use crate::upkeep::{self, TimedFile, UpkeepConfig};
use crate::{Error, Result, table};

/// What one upkeep pass did to a tenant's table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UpkeepReport {
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
    /// Files retention removed from the table.
    pub files_expired: usize,
    /// Files deleted from storage (listed only, on a dry run).
    pub files_vacuumed: Vec<String>,
    /// Delta log files deleted.
    pub log_files_expired: usize,
    /// Trace-id index sidecars merged into one.
    pub sidecars_merged: usize,
}

/// Sidecars a table may have before upkeep merges them (a load reads each).
pub const MAX_SIDECARS: usize = 64;

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

    /// One upkeep pass over `tenant`'s table: retention, compaction, then (with
    /// `config.tidy`) vacuum, log upkeep and the sidecar merge; `dry_run` changes nothing and
    /// lists what vacuum would delete.
    pub async fn upkeep_tenant(&self, tenant: &str, config: &UpkeepConfig, dry_run: bool) -> Result<UpkeepReport> {
        let done = self.upkeep_pass(tenant, config, dry_run).await;
        let counter = match &done {
            Ok(_) => &self.stats.upkeep_passes,
            Err(_) => &self.stats.upkeep_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        done
    }

    async fn upkeep_pass(&self, tenant: &str, config: &UpkeepConfig, dry_run: bool) -> Result<UpkeepReport> {
        let mut report = UpkeepReport::default();
        // Upkeep of a tenant without a table creates nothing.
        if !self.storage.table_exists(tenant).await? {
            return Ok(report);
        }
        let tenant = self.tenant(tenant)?;
        if !dry_run {
            report.files_expired = self.expire(&tenant, config).await?;
            self.compact(&tenant, config, &mut report).await?;
        }
        let table = self.refresh(&tenant).await?;
        if !table::is_created(&table) || !config.tidy {
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

    /// Removes the files retention expires; returns how many.
    async fn expire(&self, tenant: &Arc<Tenant>, config: &UpkeepConfig) -> Result<usize> {
        if config.block_retention.is_zero() {
            return Ok(0);
        }
        let table = self.refresh(tenant).await?;
        let retention_ns = i64::try_from(config.block_retention.as_nanos()).unwrap_or(i64::MAX);
        let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        let cutoff = now_ns.saturating_sub(retention_ns);
        let gone = upkeep::expired(&upkeep::timed_files(&table)?, cutoff);
        if gone.is_empty() {
            return Ok(0);
        }
        let operation = DeltaOperation::Delete {
            predicate: Some(format!("end_time_unix_nano < {cutoff}")),
        };
        self.commit_upkeep(tenant, &table, &gone, Vec::new(), true, operation)
            .await?;
        self.stats.files_expired.fetch_add(gone.len() as u64, Ordering::Relaxed);
        tracing::info!(tenant = %tenant.name, files = gone.len(), "retention removed files");
        Ok(gone.len())
    }

    /// Merges the groups of small files compaction plans, each committed on its own.
    async fn compact(&self, tenant: &Arc<Tenant>, config: &UpkeepConfig, report: &mut UpkeepReport) -> Result<()> {
        let table = self.refresh(tenant).await?;
        let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        for group in upkeep::plan_compaction(&upkeep::timed_files(&table)?, config, now_ns) {
            let (adds, stats) = upkeep::merge(&table, &group, config).await?;
            let written = adds.len();
            let operation = DeltaOperation::Optimize {
                predicate: None,
                target_size: i64::try_from(config.target_file_bytes).unwrap_or(i64::MAX),
            };
            match self.commit_upkeep(tenant, &table, &group, adds, false, operation).await {
                Ok(()) => {
                    report.merges += 1;
                    report.files_compacted += group.len();
                    report.files_written += written;
                    report.rows_read += stats.rows_read;
                    report.rows_written += stats.rows_written;
                    report.bytes_read += stats.bytes_read;
                    report.bytes_written += stats.bytes_written;
                    self.stats.compactions.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .files_compacted
                        .fetch_add(group.len() as u64, Ordering::Relaxed);
                }
                Err(Error::Conflict(e)) => {
                    // Another compaction or retention removed one of these files: the files
                    // written are orphans, which vacuum deletes after the grace period.
                    tracing::warn!(tenant = %tenant.name, error = %e, "compaction skipped a group on a conflict");
                    report.conflicts += 1;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Commits `removed` out and `added` in, read at `read` (the version the plan saw), then
    /// makes the result the tenant's table and brings the trace-id index up to date, all
    /// under the flush lock.
    async fn commit_upkeep(
        &self,
        tenant: &Arc<Tenant>,
        read: &DeltaTable,
        removed: &[TimedFile],
        added: Vec<deltalake::kernel::Add>,
        data_change: bool,
        operation: DeltaOperation,
    ) -> Result<()> {
        let _guard = tenant.flush_lock.lock().await;
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
