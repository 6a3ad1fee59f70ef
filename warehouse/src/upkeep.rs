//! Table upkeep of one tenant's Delta table, the parts that know nothing of the warehouse's
//! in-memory state: which files to compact ([`plan_compaction`]), merging them into
//! target-size files sorted by trace id with identical spans collapsed ([`merge`]), which
//! files retention removes ([`expired`]), committing either as one Delta transaction
//! ([`commit_replace`]), and vacuum and log upkeep ([`vacuum`], [`expire_log`]).
//!
//! Compaction commits `remove` + `add` actions with `dataChange=false` (operation OPTIMIZE):
//! readers, change consumers and other engines see the same rows. Appends that land meanwhile
//! go through (they remove nothing); a concurrent compaction or retention that removed one of
//! the same files makes the commit fail with [`Error::Conflict`], and the caller skips it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::Int64Type;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext, col};
use deltalake::DeltaTable;
use deltalake::kernel::scalars::ScalarExt;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, Add, Remove};
use deltalake::operations::vacuum::VacuumMode;
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use futures::StreamExt;
use indexmap::IndexMap;

use crate::schema::PARTITION_COLUMN;
use crate::table::writer_properties;
use crate::trace_index::DataFile;
use crate::{Error, Result};

/// Settings of compaction, retention and vacuum.
#[derive(Debug, Clone)]
pub struct UpkeepConfig {
    /// Files whose spans start in the same window (and day) are merged together (Tempo's
    /// `compaction_window`).
    pub compaction_window: Duration,
    /// Files at least this large are left alone; merged files are cut at this size.
    pub target_file_bytes: u64,
    /// Bytes of input one merge reads at most.
    pub max_input_bytes: u64,
    /// Small files a window that is still open (its end not yet past) needs before they
    /// merge; a closed window's merge with two. Merging an open window at every flush would
    /// rewrite its merged file again and again.
    pub min_open_window_files: usize,
    /// Merges one upkeep pass runs per tenant at most.
    pub max_merges_per_pass: usize,
    /// Files whose spans all ended longer ago are removed (Tempo's `block_retention`); zero
    /// keeps everything.
    pub block_retention: Duration,
    /// Removed and orphaned files are deleted from storage this long after they left the
    /// table (Tempo's `compacted_block_retention`); log entries expire after as long.
    pub grace: Duration,
    /// Memory one merge's sort may hold before it spills to disk.
    pub merge_memory_bytes: usize,
    /// Whether the pass also vacuums, expires the log and merges sidecars (each lists the
    /// table's files; a loop does it every few cycles).
    pub tidy: bool,
    /// Whether the pass merges small files (not for a retention-only job).
    pub compact: bool,
    /// How long the tenant's upkeep lease lasts unrenewed ([`crate::lease`]): a process
    /// killed while holding it keeps the tenant's upkeep waiting this long.
    pub lease_ttl: Duration,
}

impl Default for UpkeepConfig {
    fn default() -> Self {
        Self {
            compaction_window: Duration::from_secs(3600),
            target_file_bytes: 256 << 20,
            max_input_bytes: 1 << 30,
            min_open_window_files: 8,
            max_merges_per_pass: 16,
            block_retention: Duration::ZERO,
            grace: Duration::from_secs(3600),
            merge_memory_bytes: 256 << 20,
            tidy: true,
            compact: true,
            lease_ttl: crate::lease::LEASE_TTL,
        }
    }
}

/// A committed data file with the time span of its rows, from its Delta statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedFile {
    pub file: DataFile,
    pub start_ns: i64,
    pub end_ns: i64,
    /// Rows (spans) the file holds, by its statistics.
    pub rows: u64,
}

/// The table's data files with their time spans; files without statistics are left out (no
/// upkeep touches them).
pub fn timed_files(table: &DeltaTable) -> Result<Vec<TimedFile>> {
    if table.version().is_none() {
        return Ok(Vec::new());
    }
    let snapshot = table.snapshot()?;
    let mut out = Vec::new();
    for f in snapshot.log_data().iter() {
        let Some(stats) = f.stats() else { continue };
        let Some((start_ns, end_ns, rows)) = stats_span(&stats) else {
            continue;
        };
        let date = f.partition_values_map().get(PARTITION_COLUMN).cloned().flatten();
        out.push(TimedFile {
            file: DataFile {
                path: f.path().into_owned(),
                size: u64::try_from(f.size()).unwrap_or_default(),
                date: date.unwrap_or_default(),
            },
            start_ns,
            end_ns,
            rows,
        });
    }
    Ok(out)
}

/// The first start and last end of a file's rows, and how many rows it has, from its Delta
/// statistics JSON.
fn stats_span(stats: &str) -> Option<(i64, i64, u64)> {
    let v: serde_json::Value = serde_json::from_str(stats).ok()?;
    let start = v.get("minValues")?.get("start_time_unix_nano")?.as_i64()?;
    let end = v.get("maxValues")?.get("end_time_unix_nano")?.as_i64()?;
    let rows = v.get("numRecords").and_then(serde_json::Value::as_u64).unwrap_or(0);
    Some((start, end, rows))
}

/// Groups of files to merge, each into target-size files: files smaller than the target,
/// grouped by day and by the window their first span starts in, oldest first, packed up to
/// `max_input_bytes` and [`MAX_MERGE_FILES`]; groups of two files or more (of `min_open_window_files` or more in a
/// window that has not ended by `now_ns`), at most `max_merges_per_pass`.
pub fn plan_compaction(files: &[TimedFile], config: &UpkeepConfig, now_ns: i64) -> Vec<Vec<TimedFile>> {
    let window_ns = i64::try_from(config.compaction_window.as_nanos())
        .unwrap_or(i64::MAX)
        .max(1);
    let mut small: Vec<&TimedFile> = files
        .iter()
        .filter(|f| f.file.size < config.target_file_bytes)
        .collect();
    let key = |f: &TimedFile| (f.file.date.clone(), f.start_ns.div_euclid(window_ns));
    small.sort_by(|a, b| key(a).cmp(&key(b)).then(a.start_ns.cmp(&b.start_ns)));
    let enough = |group: &[TimedFile]| {
        let open = group
            .first()
            .is_some_and(|f| (f.start_ns.div_euclid(window_ns) + 1).saturating_mul(window_ns) > now_ns);
        group.len() >= if open { config.min_open_window_files.max(2) } else { 2 }
    };
    let mut groups: Vec<Vec<TimedFile>> = Vec::new();
    let mut current: Vec<TimedFile> = Vec::new();
    let mut bytes = 0u64;
    for f in small {
        let same_window = current.first().is_some_and(|c| key(c) == key(f));
        let full = bytes + f.file.size > config.max_input_bytes || current.len() == MAX_MERGE_FILES;
        if !same_window || full {
            let done = std::mem::take(&mut current);
            groups.extend(enough(&done).then_some(done));
            bytes = 0;
        }
        bytes += f.file.size;
        current.push(f.clone());
    }
    groups.extend(enough(&current).then_some(current));
    groups.truncate(config.max_merges_per_pass);
    groups
}

/// Small files compaction would merge if it ran now without a limit on merges (Tempo's
/// outstanding blocks): the number an operator alerts on when compaction falls behind.
pub fn outstanding(files: &[TimedFile], config: &UpkeepConfig, now_ns: i64) -> usize {
    let unlimited = UpkeepConfig {
        max_merges_per_pass: usize::MAX,
        ..config.clone()
    };
    plan_compaction(files, &unlimited, now_ns).iter().map(Vec::len).sum()
}

/// The files retention removes: those whose spans all ended before `cutoff_ns`.
pub fn expired(files: &[TimedFile], cutoff_ns: i64) -> Vec<TimedFile> {
    files.iter().filter(|f| f.end_ns < cutoff_ns).cloned().collect()
}

/// What one merge did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MergeStats {
    pub files_written: usize,
    pub rows_read: u64,
    pub rows_written: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

/// Merges `group` (files of one day) into new files of at most about the target size, rows
/// sorted by trace id and start, a span identical to an earlier one of the same trace and
/// start (a client's retry) written once; the files are uploaded but not committed. Returns their `add`
/// actions (`dataChange=false`).
pub async fn merge(table: &DeltaTable, group: &[TimedFile], config: &UpkeepConfig) -> Result<(Vec<Add>, MergeStats)> {
    let date = group.first().map(|f| f.file.date.clone()).unwrap_or_default();
    assert!(group.iter().all(|f| f.file.date == date), "a merge spans one day");
    let ctx = merge_context(table, group.len(), config)?;
    let root = table.table_url().clone();
    let urls = group
        .iter()
        .map(|f| root.join(&f.file.path).map(|u| u.to_string()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("bad data file path: {e}")))?;
    // Each file is sorted so already (flushes and merges write it so): the files are merged
    // as they stream, with no sort that holds them.
    let sorted = [col("trace_id"), col("start_time_unix_nano")].map(|c| c.sort(true, false));
    let options = ParquetReadOptions::default().file_sort_order(vec![sorted.to_vec()]);
    let frame = ctx.read_parquet(urls, options).await?.sort(sorted.to_vec())?;
    let mut stream = frame.execute_stream().await?;
    // The kernel's scalar type, which deltalake does not re-export, inferred from its use.
    let day = ScalarExt::from_array(&StringArray::from(vec![date.as_str()]), 0)
        .ok_or_else(|| Error::Config(format!("bad partition value {date:?}")))?;
    let partition = IndexMap::from([(PARTITION_COLUMN.to_string(), day)]);
    let mut writer = RecordBatchWriter::for_table(table)?
        .with_writer_properties(writer_properties())
        .with_target_file_size(config.target_file_bytes);
    let mut stats = MergeStats {
        bytes_read: group.iter().map(|f| f.file.size).sum(),
        ..MergeStats::default()
    };
    let mut last: Option<RecordBatch> = None;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        stats.rows_read += batch.num_rows() as u64;
        let kept = drop_repeats(&batch, last.as_ref())?;
        if batch.num_rows() > 0 {
            last = Some(batch.slice(batch.num_rows() - 1, 1));
        }
        if kept.num_rows() > 0 {
            stats.rows_written += kept.num_rows() as u64;
            // The one partition named, not split out of a date column (a copy of each batch).
            writer.write_partition(kept, &partition, WriteMode::Default).await?;
        }
    }
    let mut adds = writer.flush().await?;
    stats.files_written = adds.len();
    for add in &mut adds {
        add.data_change = false;
        stats.bytes_written += u64::try_from(add.size).unwrap_or_default();
    }
    Ok((adds, stats))
}

/// Rows per batch a merge reads from each file.
const MERGE_BATCH_ROWS: usize = 1024;

/// Files one merge reads at most (it holds a batch of each).
pub const MAX_MERGE_FILES: usize = 64;

/// A session for one merge: one partition per input file (each read in order, then merged
/// as they stream; a small batch of each held at a time), and a memory limit on what it holds.
fn merge_context(table: &DeltaTable, files: usize, config: &UpkeepConfig) -> Result<SessionContext> {
    let mut session = SessionConfig::new()
        .with_target_partitions(files.max(1))
        .with_batch_size(MERGE_BATCH_ROWS);
    session.options_mut().execution.parquet.pushdown_filters = false;
    // Read the files' own types (text as Utf8, not views): the table's writer takes those.
    session.options_mut().execution.parquet.schema_force_view_types = false;
    session.options_mut().optimizer.repartition_file_scans = false;
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(config.merge_memory_bytes)))
        .build_arc()?;
    let ctx = SessionContext::new_with_config_rt(session, runtime);
    let url = table.table_url();
    let store_url = url::Url::parse(&format!("{}://{}", url.scheme(), url.authority()))
        .map_err(|e| Error::Config(format!("bad table location {url}: {e}")))?;
    ctx.register_object_store(&store_url, table.log_store().root_object_store(None));
    Ok(ctx)
}

/// `batch` (sorted) without the rows equal in every column to an earlier row of the same trace
/// and start in it or to `before` (the last row of the previous batch).
fn drop_repeats(batch: &RecordBatch, before: Option<&RecordBatch>) -> Result<RecordBatch> {
    let n = batch.num_rows();
    // The key columns, typed once (a comparison per row, not an array per row).
    let keys = |b: &RecordBatch| -> Option<(StringArray, Int64Array)> {
        let ids = b.column_by_name("trace_id")?.as_string_opt::<i32>()?.clone();
        let starts = b
            .column_by_name("start_time_unix_nano")?
            .as_primitive_opt::<Int64Type>()?
            .clone();
        Some((ids, starts))
    };
    let (Some(mine), theirs) = (keys(batch), before.and_then(keys)) else {
        return Ok(batch.clone());
    };
    let same_key = |i: usize, other: Option<&(StringArray, Int64Array)>, j: usize| -> bool {
        let (ids, starts) = other.unwrap_or(&mine);
        mine.0.value(i) == ids.value(j) && mine.1.value(i) == starts.value(j)
    };
    let same_row = |i: usize, other: &RecordBatch, j: usize| -> bool {
        batch.schema() == other.schema()
            && (0..batch.num_columns())
                .all(|c| batch.column(c).slice(i, 1).to_data() == other.column(c).slice(j, 1).to_data())
    };
    // Rows of the same trace and start are next to each other; of those, a row equal to an
    // earlier one repeats it.
    let repeats = |i: usize| {
        let mut j = i;
        while j > 0 && same_key(i, None, j - 1) {
            j -= 1;
            if same_row(i, batch, j) {
                return true;
            }
        }
        let previous = before.zip(theirs.as_ref());
        j == 0 && previous.is_some_and(|(b, k)| same_key(i, Some(k), 0) && same_row(i, b, 0))
    };
    let keep: Vec<bool> = (0..n).map(|i| !repeats(i)).collect();
    if keep.iter().all(|k| *k) {
        return Ok(batch.clone());
    }
    Ok(arrow::compute::filter_record_batch(batch, &keep.into())?)
}

/// Commits `removed` out of the table and `added` into it as one transaction: compaction
/// (`data_change` false: the same rows, OPTIMIZE) or retention (`data_change` true, DELETE).
///
/// Delta lets two compactions that remove the same file both commit (their removes change no
/// data), which would add its rows twice; so each attempt reads the latest version, fails
/// with [`Error::Conflict`] when one of `removed` has left the table, and commits at exactly
/// the next version (another commit landing first makes it read again).
pub async fn commit_replace(
    table: &DeltaTable,
    removed: &[TimedFile],
    added: Vec<Add>,
    data_change: bool,
    operation: DeltaOperation,
) -> Result<DeltaTable> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut actions: Vec<Action> = removed
        .iter()
        .map(|f| Action::Remove(remove(f, data_change, now_ms)))
        .collect();
    actions.extend(added.into_iter().map(Action::Add));
    let mut latest = table.clone();
    for _ in 0..MAX_COMMIT_ATTEMPTS {
        latest.update_incremental(None).await?;
        let present: HashSet<String> = (latest.snapshot()?.log_data().iter())
            .map(|f| f.path().into_owned())
            .collect();
        if let Some(gone) = removed.iter().find(|f| !present.contains(&f.file.path)) {
            return Err(Error::Conflict(format!("{} left the table meanwhile", gone.file.path)));
        }
        let commit = CommitBuilder::default()
            .with_actions(actions.clone())
            .with_max_retries(0)
            .build(Some(latest.snapshot()?), latest.log_store(), operation.clone())
            .await;
        match commit {
            Ok(commit) => {
                latest.update_incremental(Some(commit.version())).await?;
                return Ok(latest);
            }
            Err(e) if is_commit_race(&e) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Conflict(format!(
        "no free table version in {MAX_COMMIT_ATTEMPTS} attempts"
    )))
}

/// Attempts [`commit_replace`] makes before it gives up (each lost to another commit).
const MAX_COMMIT_ATTEMPTS: usize = 32;

/// Whether a commit failed only because another commit took the version first.
fn is_commit_race(e: &deltalake::DeltaTableError) -> bool {
    use deltalake::kernel::transaction::TransactionError as T;
    matches!(
        e,
        deltalake::DeltaTableError::Transaction {
            source: T::CommitConflict(_) | T::VersionAlreadyExists(_) | T::MaxCommitAttempts(_)
        } | deltalake::DeltaTableError::VersionAlreadyExists(_)
    )
}

/// The `remove` action of `f`.
fn remove(f: &TimedFile, data_change: bool, now_ms: i64) -> Remove {
    Remove {
        path: f.file.path.clone(),
        data_change,
        deletion_timestamp: Some(now_ms),
        extended_file_metadata: Some(true),
        size: i64::try_from(f.file.size).ok(),
        partition_values: Some(
            [(PARTITION_COLUMN.to_string(), Some(f.file.date.clone()))]
                .into_iter()
                .collect(),
        ),
        deletion_vector: None,
        tags: None,
        base_row_id: None,
        default_row_commit_version: None,
    }
}

/// Deletes from storage the files that left the table longer than `grace` ago and files no
/// commit references (orphans of a crash mid-flush) older than `grace`; with `dry_run`,
/// only lists them. Returns the paths.
pub async fn vacuum(table: &DeltaTable, grace: Duration, dry_run: bool) -> Result<(DeltaTable, Vec<String>)> {
    if table.version().is_none() {
        return Ok((table.clone(), Vec::new()));
    }
    let grace = chrono::Duration::from_std(grace).map_err(|e| Error::Config(format!("grace period: {e}")))?;
    let (table, metrics) = table
        .clone()
        .vacuum()
        .with_retention_period(grace)
        .with_enforce_retention_duration(false)
        .with_mode(VacuumMode::Full)
        .with_dry_run(dry_run)
        .await?;
    Ok((table, metrics.files_deleted))
}

/// A pass writes a checkpoint when the table has none this recent (commits make one every 100
/// versions too, deltalake's default interval).
pub const CHECKPOINT_EVERY_VERSIONS: u64 = 100;

/// Writes a checkpoint of the table's current version unless one is less than
/// [`CHECKPOINT_EVERY_VERSIONS`] old, then deletes log entries older than `grace` that a
/// checkpoint makes unnecessary. Returns the number of log files deleted.
pub async fn expire_log(table: &DeltaTable, grace: Duration) -> Result<usize> {
    let Some(version) = table.version() else {
        return Ok(0);
    };
    let last = last_checkpoint(table).await?;
    if last.is_none_or(|c| version.saturating_sub(c) >= CHECKPOINT_EVERY_VERSIONS) {
        deltalake::protocol::checkpoints::create_checkpoint(table, None).await?;
    }
    let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
    let cutoff = chrono::Utc::now().timestamp_millis().saturating_sub(grace_ms);
    Ok(
        deltalake::protocol::checkpoints::cleanup_expired_logs_for(version, table.log_store().as_ref(), cutoff, None)
            .await?,
    )
}

/// The version of the table's latest checkpoint, from its log's listing.
async fn last_checkpoint(table: &DeltaTable) -> Result<Option<u64>> {
    use futures::TryStreamExt;
    let store = table.log_store().object_store(None);
    let log = table.log_store().log_path().clone();
    let listed: Vec<object_store::ObjectMeta> = store.list(Some(&log)).try_collect().await?;
    Ok(listed
        .iter()
        .filter_map(|m| {
            let (version, rest) = m.location.filename()?.split_once('.')?;
            rest.starts_with("checkpoint").then(|| version.parse().ok()).flatten()
        })
        .max())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};

    fn file(path: &str, date: &str, size: u64, start_ns: i64) -> TimedFile {
        TimedFile {
            file: DataFile {
                path: path.into(),
                size,
                date: date.into(),
            },
            start_ns,
            end_ns: start_ns + 1,
            rows: 1,
        }
    }

    #[test]
    fn compaction_groups_small_files_by_day_and_window() {
        let hour = 3_600_000_000_000i64;
        let config = UpkeepConfig {
            target_file_bytes: 100,
            max_input_bytes: 150,
            ..UpkeepConfig::default()
        };
        let files = vec![
            file("a", "d1", 10, 5),
            file("big", "d1", 100, 6),
            file("b", "d1", 10, 7),
            file("c", "d1", 10, hour + 1),
            file("d", "d2", 10, 8),
            file("e", "d2", 10, 9),
            file("f", "d2", 60, 10),
            file("g", "d2", 60, 11),
            file("h", "d2", 60, 12),
        ];
        // Every window closed long ago (now is far past them).
        let groups: Vec<Vec<String>> = plan_compaction(&files, &config, i64::MAX)
            .into_iter()
            .map(|g| g.into_iter().map(|f| f.file.path).collect())
            .collect();
        // `big` is at the target; `c` is alone in its window; d2 is cut at 150 bytes.
        assert_eq!(groups, [vec!["a", "b"], vec!["d", "e", "f", "g"]]);
        let one = UpkeepConfig {
            max_merges_per_pass: 1,
            ..config
        };
        assert_eq!(plan_compaction(&files, &one, i64::MAX).len(), 1);
        // In a window still open, two files are not enough.
        let open = UpkeepConfig {
            min_open_window_files: 3,
            ..one
        };
        assert!(plan_compaction(&files[..3], &open, 10).is_empty());
        assert_eq!(plan_compaction(&files[..3], &open, hour).len(), 1, "closed at the hour");
    }

    #[test]
    fn retention_takes_files_wholly_before_the_cutoff() {
        let files = vec![file("old", "d1", 1, 5), file("new", "d1", 1, 50)];
        let gone: Vec<_> = expired(&files, 10).into_iter().map(|f| f.file.path).collect();
        assert_eq!(gone, vec!["old"]);
    }

    #[test]
    fn repeats_are_dropped_within_and_across_batches() {
        let batch = |ids: &[&str], names: &[&str]| {
            let schema = Arc::new(Schema::new(vec![
                Field::new("trace_id", arrow::datatypes::DataType::Utf8, false),
                Field::new("span_id", arrow::datatypes::DataType::Utf8, false),
                Field::new("start_time_unix_nano", arrow::datatypes::DataType::Int64, false),
                Field::new("name", arrow::datatypes::DataType::Utf8, false),
            ]));
            RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(StringArray::from(vec!["t"; ids.len()])),
                    Arc::new(StringArray::from(ids.to_vec())),
                    Arc::new(arrow::array::Int64Array::from(vec![1; ids.len()])),
                    Arc::new(StringArray::from(names.to_vec())),
                ],
            )
            .unwrap()
        };
        let first = batch(&["a", "a", "a", "b"], &["x", "x", "y", "z"]);
        let kept = drop_repeats(&first, None).unwrap();
        // The second `a` repeats the first; the third differs in content and stays.
        assert_eq!(kept.num_rows(), 3);
        let second = batch(&["b", "c"], &["z", "w"]);
        let kept = drop_repeats(&second, Some(&first.slice(3, 1))).unwrap();
        assert_eq!(kept.num_rows(), 1);
    }
}
