//! The trace-id index: for every committed data file of a tenant, which traces it holds and
//! the time span of each, so trace-by-id opens only the files that hold the trace, with or
//! without a time range.
//!
//! Persisted beside the Delta log as small Parquet sidecars, `<table>/_trace_index/<v>.parquet`
//! (Delta ignores `_`-prefixed directories): one per flush, written after its commit, rows
//! `(path, size, date, trace_id, start_ns, end_ns)`. Loaded into memory on a tenant's first
//! lookup; files in the table that no sidecar covers (a crash between commit and sidecar, or a
//! writer that keeps none) are indexed from their own columns then and get a sidecar. Rows of
//! files no longer in the table are dropped on load.

use std::collections::{HashMap, HashSet};

use datafusion::common::HashMap as FastMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowFilter,
};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::{ArrowWriter, ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::bloom_filter::Sbbf;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::statistics::Statistics;
use parquet::schema::types::SchemaDescriptor;

use crate::schema::{PARTITION_COLUMN, spans_schema};
use crate::{Error, Result};

/// Directory of the sidecars inside a table.
pub const INDEX_DIR: &str = "_trace_index";
/// Files read at once by one lookup.
pub const LOOKUP_FILES_PARALLEL: usize = 8;

/// A committed data file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// Path relative to the table root, as in the Delta log (decoded).
    pub path: String,
    pub size: u64,
    /// The partition value (`date`).
    pub date: String,
}

#[derive(Debug, Clone, Copy)]
struct Location {
    file: u32,
    start_ns: i64,
    end_ns: i64,
}

/// One trace's rows of one file: `(trace id, first start, last end)`.
pub type TraceSpan = (u128, i64, i64);

/// The in-memory index of one tenant.
#[derive(Debug, Default)]
pub struct TraceIndex {
    files: Vec<DataFile>,
    /// (A fast hash: every search looks up every file of its snapshot, a few times.)
    file_ids: FastMap<String, u32>,
    /// (A fast hash: every search looks up thousands of traces.)
    traces: FastMap<u128, Vec<Location>>,
    /// The traces of each file (by file id), sorted, with the first start and last end of
    /// their rows there.
    /// (Shared: a search walks a file's list without copying it.)
    by_file: Vec<Arc<[TraceSpan]>>,
}

impl TraceIndex {
    /// Number of indexed files.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// `true` when `path` is indexed.
    pub fn has_file(&self, path: &str) -> bool {
        self.file_ids.contains_key(path)
    }

    /// Number of indexed traces.
    pub fn trace_count(&self) -> usize {
        self.traces.len()
    }

    /// Adds `traces` as held by `file`.
    pub fn insert(&mut self, file: &DataFile, traces: &[TraceSpan]) {
        let id = match self.file_ids.get(&file.path) {
            Some(id) => *id,
            None => {
                let id = u32::try_from(self.files.len()).expect("fewer than 2^32 files");
                self.files.push(file.clone());
                self.file_ids.insert(file.path.clone(), id);
                self.by_file.push(Arc::from([]));
                id
            }
        };
        let mut held: Vec<u128> = self.by_file[id as usize].iter().map(|t| t.0).collect();
        for &(trace, start_ns, end_ns) in traces {
            let locations = self.traces.entry(trace).or_default();
            match locations.iter_mut().find(|l| l.file == id) {
                Some(l) => {
                    l.start_ns = l.start_ns.min(start_ns);
                    l.end_ns = l.end_ns.max(end_ns);
                }
                None => {
                    locations.push(Location {
                        file: id,
                        start_ns,
                        end_ns,
                    });
                    held.push(trace);
                }
            }
        }
        held.sort_unstable();
        self.by_file[id as usize] = held
            .into_iter()
            .filter_map(|t| {
                let l = self.traces.get(&t)?.iter().find(|l| l.file == id)?;
                Some((t, l.start_ns, l.end_ns))
            })
            .collect();
    }

    /// Drops the files not in `paths` (files compaction or retention took out of the table);
    /// the rest keep their traces and their order.
    pub fn retain_files(&mut self, paths: &HashSet<&str>) {
        if self.files.iter().all(|f| paths.contains(f.path.as_str())) {
            return;
        }
        let old = std::mem::take(self);
        for (file, traces) in old.files.iter().zip(&old.by_file) {
            if paths.contains(file.path.as_str()) {
                self.insert(file, traces);
            }
        }
    }

    /// `files`, newest (last indexed) first; `None` when one of them is not indexed.
    pub fn newest_first(&self, files: &[DataFile]) -> Option<Vec<DataFile>> {
        let mut ids: Vec<u32> = files
            .iter()
            .map(|f| self.file_ids.get(&f.path).copied())
            .collect::<Option<_>>()?;
        ids.sort_unstable_by(|a, b| b.cmp(a));
        Some(ids.into_iter().map(|id| self.files[id as usize].clone()).collect())
    }

    /// The traces of `file`, sorted, each with the first start and last end of its rows
    /// there; `None` when it is not indexed.
    pub fn traces_of(&self, file: &DataFile) -> Option<Arc<[TraceSpan]>> {
        let id = *self.file_ids.get(&file.path)?;
        Some(self.by_file[id as usize].clone())
    }

    /// Which indexed files (by id) are among `files`; `None` when one of them is not indexed.
    pub fn ids_of(&self, files: &[DataFile]) -> Option<Vec<bool>> {
        let mut chosen = vec![false; self.files.len()];
        for f in files {
            chosen[*self.file_ids.get(&f.path)? as usize] = true;
        }
        Some(chosen)
    }

    /// Every trace with rows in `files`: its id, and the first start and last end of its rows
    /// in those files. `None` when one of `files` is not indexed.
    pub fn times_in(&self, files: &[DataFile]) -> Option<Vec<TraceSpan>> {
        let chosen = self.ids_of(files)?;
        let mut out = Vec::with_capacity(self.traces.len());
        for (&trace, locations) in &self.traces {
            let mut held = locations.iter().filter(|l| chosen[l.file as usize]);
            let Some(first) = held.next() else { continue };
            let (start, end) = held.fold((first.start_ns, first.end_ns), |(s, e), l| {
                (s.min(l.start_ns), e.max(l.end_ns))
            });
            out.push((trace, start, end));
        }
        Some(out)
    }

    /// Of `files`, those that hold some of `traces` (sorted), each with the ids (hex, sorted)
    /// of those it holds. `None` when one of `files` is not indexed.
    pub fn holders(&self, traces: &[u128], files: &[DataFile]) -> Option<Vec<(DataFile, Vec<String>)>> {
        debug_assert!(traces.is_sorted(), "holders of unsorted traces");
        let chosen = self.ids_of(files)?;
        let steps: usize = self
            .chosen_lists(&chosen)
            .map(|(_, list)| intersect_steps(list.len(), traces.len()))
            .sum();
        let mut held: Vec<Vec<u128>> = vec![Vec::new(); self.files.len()];
        if steps <= traces.len().saturating_mul(MERGE_PER_LOOKUP) {
            // Few traces listed: searching the sorted lists and `traces` in each other is
            // cheaper than a hash lookup (a cache miss) per trace.
            for (file, list) in self.chosen_lists(&chosen) {
                held[file] = intersect_sorted(list, traces);
            }
        } else {
            for trace in traces {
                for l in self.traces.get(trace).into_iter().flatten() {
                    if chosen[l.file as usize] {
                        held[l.file as usize].push(*trace);
                    }
                }
            }
        }
        let mut out: Vec<(DataFile, Vec<String>)> = held
            .into_iter()
            .enumerate()
            .filter(|(_, ids)| !ids.is_empty())
            .map(|(file, ids)| (self.files[file].clone(), ids.into_iter().map(trace_id_hex).collect()))
            .collect();
        out.sort_by(|a, b| a.0.path.cmp(&b.0.path));
        Some(out)
    }

    /// The trace lists of the files `chosen` (by id).
    fn chosen_lists<'a>(&'a self, chosen: &'a [bool]) -> impl Iterator<Item = (usize, &'a [TraceSpan])> + 'a {
        self.by_file
            .iter()
            .enumerate()
            .filter(|(file, _)| chosen[*file])
            .map(|(file, list)| (file, &list[..]))
    }

    /// The files holding spans of `trace` that overlap `range` (unix ns, inclusive), if given.
    pub fn files_of(&self, trace: u128, range: Option<(i64, i64)>) -> Vec<DataFile> {
        let Some(locations) = self.traces.get(&trace) else {
            return Vec::new();
        };
        locations
            .iter()
            .filter(|l| range.is_none_or(|(start, end)| l.end_ns >= start && l.start_ns <= end))
            .map(|l| self.files[l.file as usize].clone())
            .collect()
    }
}

/// Steps of a search in the files' sorted lists per trace looked up: a hash lookup costs
/// about as much as this many.
const MERGE_PER_LOOKUP: usize = 64;

/// About the steps [`intersect_sorted`] takes over sorted lists of `a` and `b` entries: a
/// search of the longer for each entry of the shorter.
fn intersect_steps(a: usize, b: usize) -> usize {
    let (short, long) = (a.min(b), a.max(b));
    short * (long.max(1).ilog2() as usize + 1)
}

/// The traces of `list` (sorted) that are among `traces` (sorted): each entry of the shorter
/// searched for in what is left of the longer, so a short list costs its length times a
/// search, not the length of `traces` (a search over many small files checks each file's list).
fn intersect_sorted(list: &[TraceSpan], traces: &[u128]) -> Vec<u128> {
    match list.len() <= traces.len() {
        true => search_each(list.iter().map(|t| t.0), traces, |t| *t),
        false => search_each(traces.iter().copied(), list, |t| t.0),
    }
}

/// Those of `ids` (sorted) found in `rest` (sorted by `key`).
pub(crate) fn search_each<T>(ids: impl Iterator<Item = u128>, mut rest: &[T], key: impl Fn(&T) -> u128) -> Vec<u128> {
    let mut out = Vec::new();
    for id in ids {
        rest = &rest[rest.partition_point(|t| key(t) < id)..];
        if rest.first().is_some_and(|t| key(t) == id) {
            out.push(id);
            rest = &rest[1..];
        }
    }
    out
}

/// Whether a column's path `parts` spell the dotted `path` (compared in place: a search
/// checks every column of every file).
fn is_path(parts: &[String], path: &str) -> bool {
    let mut rest = path.split('.');
    parts.iter().all(|p| rest.next() == Some(p.as_str())) && rest.next().is_none()
}

/// A trace id in lowercase hex as its number; `None` unless 1 to 32 hex digits.
pub fn parse_trace_id(hex: &str) -> Option<u128> {
    if hex.is_empty() || hex.len() > 32 {
        return None;
    }
    // (By hand: every live span's id is parsed once per search that walks them.)
    hex.bytes().try_fold(0u128, |id, b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        Some(id << 4 | u128::from(digit))
    })
}

/// The stored spelling of a trace id: 32 lowercase hex digits.
pub fn trace_id_hex(trace: u128) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let bytes = trace.to_be_bytes();
    let mut hex = String::with_capacity(32);
    for b in bytes {
        hex.push(char::from(DIGITS[usize::from(b >> 4)]));
        hex.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    hex
}

/// Parses the trace ids of rows in turn: a trace's spans mostly sit side by side, so an id
/// like the row before's is not parsed again.
#[derive(Default)]
pub(crate) struct IdParser<'a> {
    last: Option<(&'a str, Option<u128>)>,
}

impl<'a> IdParser<'a> {
    /// [`parse_trace_id`] of `text`.
    pub(crate) fn parse(&mut self, text: &'a str) -> Option<u128> {
        let parsed = match self.last {
            Some((t, parsed)) if t == text => parsed,
            _ => parse_trace_id(text),
        };
        self.last = Some((text, parsed));
        parsed
    }
}

/// Per trace, the first start and last end in `batches` (`spans` batches), for rows whose
/// partition value is `date` (all rows when `None`).
pub fn trace_spans(batches: &[RecordBatch], date: Option<&str>) -> Result<Vec<TraceSpan>> {
    let mut acc: FastMap<u128, (i64, i64)> = FastMap::default();
    for batch in batches {
        let ids = string_column(batch, "trace_id")?;
        let starts = int_column(batch, "start_time_unix_nano")?;
        let ends = int_column(batch, "end_time_unix_nano")?;
        let dates = match date {
            Some(_) => Some(string_column(batch, PARTITION_COLUMN)?),
            None => None,
        };
        let mut parser = IdParser::default();
        for row in 0..batch.num_rows() {
            if let (Some(d), Some(dates)) = (date, &dates)
                && dates.value(row) != d
            {
                continue;
            }
            let Some(trace) = parser.parse(ids.value(row)) else {
                continue;
            };
            let (s, e) = (starts.value(row), ends.value(row));
            acc.entry(trace)
                .and_modify(|(a, b)| {
                    *a = (*a).min(s);
                    *b = (*b).max(e);
                })
                .or_insert((s, e));
        }
    }
    let mut v: Vec<TraceSpan> = acc.into_iter().map(|(t, (s, e))| (t, s, e)).collect();
    v.sort_unstable_by_key(|t| t.0);
    Ok(v)
}

pub(crate) fn string_column(batch: &RecordBatch, name: &str) -> Result<StringArray> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| Error::InvalidSpan(format!("batch has no {name} column")))?;
    Ok(cast(col, &DataType::Utf8)?.as_string::<i32>().clone())
}

pub(crate) fn int_column(batch: &RecordBatch, name: &str) -> Result<Int64Array> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| Error::InvalidSpan(format!("batch has no {name} column")))?;
    Ok(col.as_primitive::<Int64Type>().clone())
}

fn sidecar_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("size", DataType::Int64, false),
        Field::new("date", DataType::Utf8, false),
        Field::new("trace_id", DataType::Utf8, false),
        Field::new("start_ns", DataType::Int64, false),
        Field::new("end_ns", DataType::Int64, false),
    ]))
}

/// Where one table's files live in the store.
#[derive(Debug, Clone)]
pub struct TableFiles {
    pub store: Arc<dyn ObjectStore>,
    /// The table root inside the store.
    pub root: Path,
    /// The table root's directory when the store is the local filesystem: small reads are
    /// then made in place ([`StoreReader`]).
    pub local: Option<std::path::PathBuf>,
    /// Footers of the files read before.
    pub footers: Arc<FooterCache>,
}

impl TableFiles {
    fn child(&self, relative: &str) -> Path {
        let mut path = self.root.clone();
        for part in relative.split('/').filter(|p| !p.is_empty()) {
            path = path.join(part);
        }
        path
    }

    /// A reader of `file` over its cached footer (with page indexes) and Arrow schema.
    pub(crate) async fn builder(&self, file: &DataFile) -> Result<ParquetRecordBatchStreamBuilder<StoreReader>> {
        let metadata = self.reader_metadata(file).await?;
        Ok(ParquetRecordBatchStreamBuilder::new_with_metadata(
            self.reader(file),
            metadata,
        ))
    }

    /// `file`'s footer (with page indexes) and Arrow schema, cached.
    pub(crate) async fn reader_metadata(&self, file: &DataFile) -> Result<ArrowReaderMetadata> {
        let path = self.child(&file.path);
        if let Some(m) = self.footers.arrow(&path) {
            return Ok(m);
        }
        let m = ArrowReaderMetadata::load_async(&mut self.reader(file), reader_options()).await?;
        self.footers.put_arrow(&path, m.clone());
        Ok(m)
    }

    /// `file`'s footer (`base`, as [`Self::reader_metadata`] gives it) with the Arrow schema
    /// `typed` makes (the file's own, some text columns typed as dictionaries; `name` names
    /// which), cached: converting a schema costs more than reading a small file's pages.
    pub(crate) fn hinted_metadata(
        &self,
        file: &DataFile,
        base: &ArrowReaderMetadata,
        name: &str,
        typed: impl FnOnce() -> SchemaRef,
    ) -> Result<ArrowReaderMetadata> {
        let path = self.child(&file.path);
        if let Some(m) = self.footers.hinted(&path, name) {
            return Ok(m);
        }
        let m = ArrowReaderMetadata::try_new(base.metadata().clone(), reader_options().with_schema(typed()))?;
        self.footers.put_hinted(&path, name, m.clone());
        Ok(m)
    }

    pub(crate) fn reader(&self, file: &DataFile) -> StoreReader {
        // A path that could leave the table's directory is read through the store alone.
        let parts = || file.path.split('/').filter(|p| !p.is_empty());
        let inside = parts().all(|p| p != "." && p != "..");
        let local = (self.local.as_ref())
            .filter(|_| inside)
            .map(|root| parts().fold(root.clone(), |path, part| path.join(part)));
        StoreReader {
            store: self.store.clone(),
            path: self.child(&file.path),
            local,
            size: file.size,
            footers: self.footers.clone(),
        }
    }

    /// Writes one sidecar named `name` for `entries`.
    pub async fn write_sidecar(&self, name: &str, entries: &[(DataFile, Vec<TraceSpan>)]) -> Result<()> {
        let rows: usize = entries.iter().map(|(_, t)| t.len()).sum();
        if rows == 0 {
            return Ok(());
        }
        let mut path = Vec::with_capacity(rows);
        let mut size = Vec::with_capacity(rows);
        let mut date = Vec::with_capacity(rows);
        let mut trace = Vec::with_capacity(rows);
        let mut start = Vec::with_capacity(rows);
        let mut end = Vec::with_capacity(rows);
        for (file, traces) in entries {
            for &(t, s, e) in traces {
                path.push(file.path.as_str());
                size.push(i64::try_from(file.size).unwrap_or(i64::MAX));
                date.push(file.date.as_str());
                trace.push(trace_id_hex(t));
                start.push(s);
                end.push(e);
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(path)),
            Arc::new(Int64Array::from(size)),
            Arc::new(StringArray::from(date)),
            Arc::new(StringArray::from(trace)),
            Arc::new(Int64Array::from(start)),
            Arc::new(Int64Array::from(end)),
        ];
        let batch = RecordBatch::try_new(sidecar_schema(), columns)?;
        let mut buf = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut buf, sidecar_schema(), None)?;
        writer.write(&batch)?;
        writer.close()?;
        let location = self
            .root
            .clone()
            .join(INDEX_DIR)
            .join(format!("{name}.parquet").as_str());
        self.store.put(&location, Bytes::from(buf).into()).await?;
        Ok(())
    }

    /// When the table has more than `max_sidecars` sidecars, merges them into one holding the
    /// rows of the `live` files (the table's), named `name`, and deletes the others; returns
    /// how many it deleted. A sidecar written meanwhile (a flush) is left alone; a load that
    /// listed a deleted one skips it.
    pub async fn consolidate(&self, live: &[DataFile], name: &str, max_sidecars: usize) -> Result<usize> {
        let prefix = self.root.clone().join(INDEX_DIR);
        let metas: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        if metas.len() <= max_sidecars {
            return Ok(0);
        }
        let index = self.load(live).await?;
        let entries: Vec<(DataFile, Vec<TraceSpan>)> = (index.files.iter().zip(&index.by_file))
            .map(|(f, traces)| (f.clone(), traces.to_vec()))
            .collect();
        self.write_sidecar(name, &entries).await?;
        let merged = prefix.clone().join(format!("{name}.parquet").as_str());
        let mut deleted = 0;
        for meta in metas.into_iter().filter(|m| m.location != merged) {
            match self.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(deleted)
    }

    /// Loads every sidecar, keeping the rows of `live` files; then indexes the live files no
    /// sidecar covered (and writes a sidecar for them).
    pub async fn load(&self, live: &[DataFile]) -> Result<TraceIndex> {
        let live_paths: HashSet<&str> = live.iter().map(|f| f.path.as_str()).collect();
        let mut index = TraceIndex::default();
        let prefix = self.root.clone().join(INDEX_DIR);
        let metas: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        for meta in metas {
            // A sidecar merged away meanwhile ([`Self::consolidate`]): its files are in the
            // merged one, or indexed below.
            let bytes = match self.store.get(&meta.location).await {
                Ok(got) => got.bytes().await?,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
            for batch in reader {
                let batch = batch?;
                let (path, size, date) = (
                    string_column(&batch, "path")?,
                    int_column(&batch, "size")?,
                    string_column(&batch, "date")?,
                );
                let (trace, start, end) = (
                    string_column(&batch, "trace_id")?,
                    int_column(&batch, "start_ns")?,
                    int_column(&batch, "end_ns")?,
                );
                let mut row = 0;
                while row < batch.num_rows() {
                    // Rows of one file are contiguous.
                    let mut next = row + 1;
                    while next < batch.num_rows() && path.value(next) == path.value(row) {
                        next += 1;
                    }
                    if live_paths.contains(path.value(row)) {
                        let file = DataFile {
                            path: path.value(row).to_string(),
                            size: u64::try_from(size.value(row)).unwrap_or_default(),
                            date: date.value(row).to_string(),
                        };
                        let traces: Vec<TraceSpan> = (row..next)
                            .filter_map(|r| parse_trace_id(trace.value(r)).map(|t| (t, start.value(r), end.value(r))))
                            .collect();
                        index.insert(&file, &traces);
                    }
                    row = next;
                }
            }
        }
        let missing: Vec<&DataFile> = live.iter().filter(|f| !index.file_ids.contains_key(&f.path)).collect();
        if !missing.is_empty() {
            tracing::info!(files = missing.len(), "indexing trace ids of files without a sidecar");
            let mut entries = Vec::with_capacity(missing.len());
            for file in missing {
                let traces = self.index_file(file).await?;
                index.insert(file, &traces);
                entries.push((file.clone(), traces));
            }
            let name = format!("repair-{}", uuid::Uuid::new_v4().simple());
            self.write_sidecar(&name, &entries).await?;
        }
        Ok(index)
    }

    /// Reads a data file's trace ids and times to index it.
    pub async fn index_file(&self, file: &DataFile) -> Result<Vec<TraceSpan>> {
        let builder = self.builder(file).await?;
        let mask = ProjectionMask::columns(
            builder.parquet_schema(),
            ["trace_id", "start_time_unix_nano", "end_time_unix_nano"],
        );
        let batches: Vec<RecordBatch> = builder.with_projection(mask).build()?.try_collect().await?;
        trace_spans(&batches, None)
    }

    /// Per row group of `file`, whether it may hold `value` in one of the columns `leaves`
    /// (leaf paths such as `span_attributes.key_value.value.str`): `false` only when its bloom
    /// filter on each of them rules it out (every row group may when a leaf is missing).
    pub async fn row_groups_may_contain(&self, file: &DataFile, leaves: &[&str], value: &str) -> Result<Vec<bool>> {
        let mut builder = self.builder(file).await?;
        let row_groups = builder.metadata().num_row_groups();
        let Some(columns) = self.footers.leaf_columns(builder.parquet_schema(), leaves) else {
            return Ok(vec![true; row_groups]);
        };
        // Array values are JSON text in a leaf of their own, outside the bloom filters: a row
        // group that holds any may hold the value in an array.
        let array_leaves: Vec<String> = leaves.iter().map(|l| array_leaf(l)).collect();
        let array_leaves: Vec<&str> = array_leaves.iter().map(String::as_str).collect();
        let arrays = self.footers.leaf_columns(builder.parquet_schema(), &array_leaves);
        let mut may = Vec::with_capacity(row_groups);
        for row_group in 0..row_groups {
            let mut any = arrays
                .as_ref()
                .is_none_or(|a| a.iter().any(|&c| leaf_holds_values(builder.metadata(), row_group, c)));
            for &column in &columns {
                if any {
                    break;
                }
                let filter = self.bloom(&mut builder, file, row_group, column).await?;
                if filter.is_none_or(|f| f.check(value)) {
                    any = true;
                    break;
                }
            }
            may.push(any);
        }
        Ok(may)
    }

    /// A row group's bloom filter on `column`, through the cache.
    async fn bloom(
        &self,
        builder: &mut ParquetRecordBatchStreamBuilder<StoreReader>,
        file: &DataFile,
        row_group: usize,
        column: usize,
    ) -> Result<Option<Arc<Sbbf>>> {
        let key = (self.child(&file.path), row_group, column);
        if let Some(filter) = self.footers.bloom(&key) {
            return Ok(filter);
        }
        let filter = builder.get_row_group_column_bloom_filter(row_group, column).await?;
        let filter = filter.map(Arc::new);
        self.footers.put_bloom(key, filter.clone());
        Ok(filter)
    }

    /// Per row group of `file`, its smallest and largest trace id (every id when its
    /// statistics do not say).
    pub async fn row_group_ids(&self, file: &DataFile) -> Result<Vec<(u128, u128)>> {
        let builder = self.builder(file).await?;
        let leaf = crate::id_range::trace_id_leaf(builder.metadata(), file)?;
        let span = |rg: &parquet::file::metadata::RowGroupMetaData| {
            let Some(Statistics::ByteArray(s)) = rg.column(leaf).statistics() else {
                return None;
            };
            let id = |b: Option<&[u8]>| parse_trace_id(std::str::from_utf8(b?).ok()?);
            Some((id(s.min_bytes_opt())?, id(s.max_bytes_opt())?))
        };
        let groups = builder.metadata().row_groups();
        Ok(groups.iter().map(|rg| span(rg).unwrap_or((0, u128::MAX))).collect())
    }

    /// The spans of the wanted traces, per file the ids it holds, as `spans` batches
    /// (partition column restored). Each file is opened once; row groups whose trace-id
    /// statistics exclude every wanted id are skipped, and only matching rows are decoded.
    /// Returns the batches and the bytes of the files opened.
    pub async fn read_traces(&self, wanted: &[(DataFile, Vec<String>)]) -> Result<(Vec<RecordBatch>, u64)> {
        let results: Vec<Vec<RecordBatch>> = futures::stream::iter(wanted.iter().cloned())
            .map(|(file, ids)| async move { self.read_trace_file(&file, &ids).await })
            .buffer_unordered(LOOKUP_FILES_PARALLEL)
            .try_collect()
            .await?;
        let bytes = wanted.iter().map(|(f, _)| f.size).sum();
        Ok((results.into_iter().flatten().collect(), bytes))
    }

    async fn read_trace_file(&self, file: &DataFile, ids: &[String]) -> Result<Vec<RecordBatch>> {
        let builder = self.builder(file).await?;
        let schema = builder.parquet_schema();
        let leaf = crate::id_range::trace_id_leaf(builder.metadata(), file)?;
        let row_groups: Vec<usize> = builder
            .metadata()
            .row_groups()
            .iter()
            .enumerate()
            .filter(|(_, rg)| match rg.column(leaf).statistics() {
                Some(Statistics::ByteArray(s)) => match (s.min_bytes_opt(), s.max_bytes_opt()) {
                    (Some(min), Some(max)) => ids.iter().any(|id| min <= id.as_bytes() && id.as_bytes() <= max),
                    _ => true,
                },
                _ => true,
            })
            .map(|(i, _)| i)
            .collect();
        if row_groups.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: HashSet<String> = ids.iter().cloned().collect();
        let predicate = ArrowPredicateFn::new(ProjectionMask::leaves(schema, [leaf]), move |batch: RecordBatch| {
            let ids = cast(batch.column(0), &DataType::Utf8)?;
            Ok(in_set(ids.as_string::<i32>(), &wanted))
        });
        let stream = builder
            .with_row_groups(row_groups)
            .with_row_filter(RowFilter::new(vec![Box::new(predicate)]))
            .build()?;
        let batches: Vec<RecordBatch> = stream.try_collect().await?;
        batches.iter().map(|b| to_spans_batch(b, &file.date)).collect()
    }
}

fn in_set(ids: &StringArray, wanted: &HashSet<String>) -> BooleanArray {
    ids.iter()
        .map(|id| Some(id.is_some_and(|id| wanted.contains(id))))
        .collect()
}

/// How data files are opened: with their page indexes, when they have them.
pub(crate) fn reader_options() -> ArrowReaderOptions {
    ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional)
}

/// Parquet footers of data files with their page indexes, the bloom filters read, and open
/// handles of local files, kept because files never change once written. Bounded: each map
/// starts over when full.
#[derive(Debug, Default)]
pub struct FooterCache {
    /// Footers by file, and their bytes in memory.
    entries: std::sync::Mutex<(HashMap<Path, Footer>, usize)>,
    /// By (file, row group, column); `None` for a column chunk without one.
    blooms: std::sync::Mutex<(Blooms, usize)>,
    /// The leaf column a dotted path was last found at: files mostly share a schema, so a
    /// lookup checks there first (at most [`LEAF_GUESSES`]).
    leaves: std::sync::Mutex<HashMap<String, usize>>,
    /// Open handles of the local files read in place, by path (at most [`OPEN_FILES`]; the
    /// map starts over when full): an open costs more than a small read. Files never change
    /// once written; a handle of a file removed since reads what it held until then.
    handles: std::sync::Mutex<HashMap<std::path::PathBuf, Arc<std::fs::File>>>,
}

/// Local files held open at most.
const OPEN_FILES: usize = 256;

const LEAF_GUESSES: usize = 256;

/// One file's footer, and the same footer as Arrow readers see it (with its Arrow schema:
/// converting the schema is most of opening a file) once a reader asked for it. Both share the
/// footer, so the cache's byte bound covers them.
#[derive(Debug, Clone)]
struct Footer {
    parquet: Arc<ParquetMetaData>,
    arrow: Option<ArrowReaderMetadata>,
    /// The footer as readers that asked for some text columns as dictionaries see it, by
    /// those columns' names (at most [`HINTS_PER_FOOTER`]).
    hinted: Vec<(String, ArrowReaderMetadata)>,
}

impl Footer {
    /// Its bytes in memory: the footer's, and an estimate for each hinted schema.
    fn size(&self) -> usize {
        self.parquet.memory_size() + self.hinted.len() * HINTED_BYTES
    }
}

/// Hinted schemas kept per footer at most (the list starts over when full), and the bytes one
/// is counted for (its Arrow schema and the levels of each column).
const HINTS_PER_FOOTER: usize = 4;
const HINTED_BYTES: usize = 32 << 10;

/// A column chunk: (file, row group, leaf column).
type BloomKey = (Path, usize, usize);

type Blooms = HashMap<BloomKey, Option<Arc<Sbbf>>>;

/// Footers a [`FooterCache`] holds at most, and their bytes in memory at most.
pub const FOOTER_CACHE_ENTRIES: usize = 4096;
pub const FOOTER_CACHE_BYTES: usize = 256 << 20;

/// Bloom filters a [`FooterCache`] holds at most, and their bytes at most.
pub const BLOOM_CACHE_ENTRIES: usize = 65_536;
pub const BLOOM_CACHE_BYTES: usize = 64 << 20;

impl FooterCache {
    /// The local file at `path`, open.
    fn open(&self, path: &std::path::Path) -> std::io::Result<Arc<std::fs::File>> {
        if let Some(file) = self.handles.lock().expect("handles lock").get(path) {
            return Ok(file.clone());
        }
        let file = Arc::new(std::fs::File::open(path)?);
        let mut handles = self.handles.lock().expect("handles lock");
        if handles.len() >= OPEN_FILES {
            handles.clear();
        }
        handles.insert(path.to_path_buf(), file.clone());
        Ok(file)
    }

    fn arrow(&self, path: &Path) -> Option<ArrowReaderMetadata> {
        let guard = self.entries.lock().expect("footer cache lock");
        guard.0.get(path).and_then(|f| f.arrow.clone())
    }

    fn put_arrow(&self, path: &Path, metadata: ArrowReaderMetadata) {
        let footer = Footer {
            parquet: metadata.metadata().clone(),
            arrow: Some(metadata),
            hinted: Vec::new(),
        };
        self.insert(path, footer);
    }

    fn bloom(&self, key: &BloomKey) -> Option<Option<Arc<Sbbf>>> {
        self.blooms.lock().expect("bloom cache lock").0.get(key).cloned()
    }

    fn put_bloom(&self, key: BloomKey, filter: Option<Arc<Sbbf>>) {
        // A block is 32 bytes.
        let size = filter.as_ref().map_or(0, |f| f.num_blocks() * 32) + 64;
        let mut guard = self.blooms.lock().expect("bloom cache lock");
        let (entries, bytes) = &mut *guard;
        if entries.len() >= BLOOM_CACHE_ENTRIES || *bytes + size > BLOOM_CACHE_BYTES {
            entries.clear();
            *bytes = 0;
        }
        if entries.insert(key, filter).is_none() {
            *bytes += size;
        }
    }

    fn get(&self, path: &Path) -> Option<Arc<ParquetMetaData>> {
        let guard = self.entries.lock().expect("footer cache lock");
        guard.0.get(path).map(|f| f.parquet.clone())
    }

    fn put(&self, path: &Path, metadata: Arc<ParquetMetaData>) {
        let footer = Footer {
            parquet: metadata,
            arrow: None,
            hinted: Vec::new(),
        };
        self.insert(path, footer);
    }

    /// The leaf columns of `schema` at the dotted paths `leaves`, in their order; `None` when
    /// one is missing.
    fn leaf_columns(&self, schema: &SchemaDescriptor, leaves: &[&str]) -> Option<Vec<usize>> {
        let at = |i: usize, leaf: &str| i < schema.num_columns() && is_path(schema.column(i).path().parts(), leaf);
        let mut guesses = self.leaves.lock().expect("leaf guesses lock");
        let mut columns = Vec::with_capacity(leaves.len());
        for leaf in leaves {
            let column = match guesses.get(*leaf) {
                Some(&i) if at(i, leaf) => i,
                _ => {
                    let i = (0..schema.num_columns()).find(|&i| at(i, leaf))?;
                    if guesses.len() >= LEAF_GUESSES {
                        guesses.clear();
                    }
                    guesses.insert(leaf.to_string(), i);
                    i
                }
            };
            columns.push(column);
        }
        Some(columns)
    }

    /// `path`'s footer as read with the dictionary hint named `hint`, when kept.
    fn hinted(&self, path: &Path, hint: &str) -> Option<ArrowReaderMetadata> {
        let guard = self.entries.lock().expect("footer cache lock");
        let footer = guard.0.get(path)?;
        footer.hinted.iter().find(|(h, _)| h == hint).map(|(_, m)| m.clone())
    }

    /// Keeps `metadata` as `path`'s footer read with the hint named `hint`, when the footer
    /// itself is kept and the cache has room.
    fn put_hinted(&self, path: &Path, hint: &str, metadata: ArrowReaderMetadata) {
        let mut guard = self.entries.lock().expect("footer cache lock");
        let (entries, bytes) = &mut *guard;
        let Some(footer) = entries.get_mut(path) else {
            return;
        };
        if footer.hinted.len() >= HINTS_PER_FOOTER {
            *bytes -= footer.hinted.len() * HINTED_BYTES;
            footer.hinted.clear();
        }
        if *bytes + HINTED_BYTES <= FOOTER_CACHE_BYTES {
            footer.hinted.push((hint.to_string(), metadata));
            *bytes += HINTED_BYTES;
        }
    }

    /// Keeps `footer` for `path`, starting over when full.
    fn insert(&self, path: &Path, footer: Footer) {
        let size = footer.size();
        let mut guard = self.entries.lock().expect("footer cache lock");
        let (entries, bytes) = &mut *guard;
        if entries.len() >= FOOTER_CACHE_ENTRIES || *bytes + size > FOOTER_CACHE_BYTES {
            entries.clear();
            *bytes = 0;
        }
        if let Some(old) = entries.insert(path.clone(), footer) {
            *bytes -= old.size();
        }
        *bytes += size;
    }
}

/// Reads one Parquet file of known size from the store; on the local filesystem, reads of up
/// to [`INLINE_READ_BYTES`] in place (`local`: the file's path there).
pub(crate) struct StoreReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    local: Option<std::path::PathBuf>,
    size: u64,
    footers: Arc<FooterCache>,
}

/// Bytes a read of a local file makes in place at most, on the task that asks: the store
/// hands each read to a blocking thread (a thread wake-up and a file open per read), which
/// costs more than reading a few pages from the page cache. A search over 200 small files
/// made hundreds of such reads, and spent 16% of its time on them. Larger reads go through
/// the store.
const INLINE_READ_BYTES: u64 = 4 << 20;

/// Ranges closer than this are read at once.
const INLINE_GAP_BYTES: u64 = 64 << 10;

/// `ranges` of the local `file`, read in place: runs of near ranges with one read each.
fn read_in_place(file: &std::fs::File, ranges: &[std::ops::Range<u64>]) -> std::io::Result<Vec<Bytes>> {
    use std::os::unix::fs::FileExt;
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_unstable_by_key(|&i| ranges[i].start);
    let mut out = vec![Bytes::new(); ranges.len()];
    let mut at = 0;
    while at < order.len() {
        let (start, mut end, mut next) = (ranges[order[at]].start, ranges[order[at]].end, at + 1);
        while next < order.len() && ranges[order[next]].start <= end.saturating_add(INLINE_GAP_BYTES) {
            end = end.max(ranges[order[next]].end);
            next += 1;
        }
        let mut run = vec![0u8; usize::try_from(end - start).map_err(std::io::Error::other)?];
        file.read_exact_at(&mut run, start)?;
        let run = Bytes::from(run);
        for &i in &order[at..next] {
            let r = &ranges[i];
            out[i] =
                run.slice(usize::try_from(r.start - start).unwrap_or(0)..usize::try_from(r.end - start).unwrap_or(0));
        }
        at = next;
    }
    Ok(out)
}

impl StoreReader {
    /// The local path to read `ranges` from in place, when they are few enough bytes.
    fn in_place(&self, ranges: &[std::ops::Range<u64>]) -> Option<&std::path::Path> {
        let bytes: u64 = ranges.iter().map(|r| r.end.saturating_sub(r.start)).sum();
        self.local.as_deref().filter(|_| bytes <= INLINE_READ_BYTES)
    }
}

/// Bytes fetched with the footer, to get the metadata in one request.
const FOOTER_PREFETCH_BYTES: usize = 64 << 10;

impl AsyncFileReader for StoreReader {
    fn get_bytes(&mut self, range: std::ops::Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        Box::pin(async move {
            if let Some(path) = self.in_place(std::slice::from_ref(&range)) {
                let file = self.footers.open(path)?;
                let mut read = read_in_place(&file, std::slice::from_ref(&range))?;
                return Ok(read.pop().unwrap_or_default());
            }
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
        })
    }

    /// All at once: the store coalesces nearby ranges (one open and read on local disk, one
    /// request per coalesced range on S3).
    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        Box::pin(async move {
            if let Some(path) = self.in_place(&ranges) {
                return Ok(read_in_place(&*self.footers.open(path)?, &ranges)?);
            }
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
        })
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        Box::pin(async move {
            if let Some(metadata) = self.footers.get(&self.path) {
                return Ok(metadata);
            }
            let size = self.size;
            let metadata = Arc::new(
                ParquetMetaDataReader::new()
                    .with_page_index_policy(PageIndexPolicy::Optional)
                    .with_prefetch_hint(Some(FOOTER_PREFETCH_BYTES))
                    .load_and_finish(&mut *self, size)
                    .await?,
            );
            self.footers.put(&self.path, metadata.clone());
            Ok(metadata)
        })
    }
}

/// A batch read from a data file, in the `spans` schema: columns by name, cast where the file's
/// physical types differ, the partition column restored.
fn to_spans_batch(batch: &RecordBatch, date: &str) -> Result<RecordBatch> {
    let names: Vec<String> = spans_schema().fields().iter().map(|f| f.name().clone()).collect();
    crate::id_range::project_spans(batch, &names, date, None)
}

/// Rows of `batch` whose trace id is one of `wanted` (hex).
pub fn filter_traces(batch: &RecordBatch, wanted: &HashSet<String>) -> Result<Option<RecordBatch>> {
    let ids = string_column(batch, "trace_id")?;
    let mask = in_set(&ids, wanted);
    if mask.true_count() == 0 {
        return Ok(None);
    }
    Ok(Some(filter_record_batch(batch, &mask)?))
}

/// The leaf holding the array values beside an attribute map's string leaf
/// (`span_attributes.key_value.value.str` → `...value.array`).
fn array_leaf(string_leaf: &str) -> String {
    match string_leaf.strip_suffix(".str") {
        Some(stem) => format!("{stem}.array"),
        None => string_leaf.to_string(),
    }
}

/// Whether `column` of `row_group` may hold a value (its statistics do not say it is null
/// throughout).
fn leaf_holds_values(metadata: &parquet::file::metadata::ParquetMetaData, row_group: usize, column: usize) -> bool {
    let chunk = metadata.row_group(row_group).column(column);
    let nulls = chunk.statistics().and_then(|s| s.null_count_opt());
    !nulls.is_some_and(|n| i64::try_from(n).is_ok_and(|n| n == chunk.num_values()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retained_files_keep_their_traces_and_the_rest_are_gone() {
        let file = |p: &str| DataFile {
            path: p.into(),
            size: 1,
            date: "d".into(),
        };
        let mut index = TraceIndex::default();
        index.insert(&file("a"), &[(1, 10, 20), (2, 10, 20)]);
        index.insert(&file("b"), &[(2, 30, 40)]);
        index.insert(&file("c"), &[(3, 50, 60)]);
        index.retain_files(&["a", "c"].into_iter().collect());
        assert_eq!(index.file_count(), 2);
        assert!(!index.has_file("b"));
        assert_eq!(index.files_of(2, None), vec![file("a")]);
        assert_eq!(index.files_of(3, None), vec![file("c")]);
        assert_eq!(index.trace_count(), 3);
        let newest: Vec<String> = index
            .newest_first(&[file("a"), file("c")])
            .unwrap()
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(newest, vec!["c", "a"]);
    }

    #[test]
    fn arrow_footers_count_against_the_footer_bound() {
        let metadata = tiny_footer();
        let cache = FooterCache::default();
        let path = |i: usize| Path::from(format!("f{i}"));
        for i in 0..=FOOTER_CACHE_ENTRIES {
            cache.put_arrow(&path(i), metadata.clone());
        }
        assert!(
            cache.arrow(&path(0)).is_none() && cache.get(&path(0)).is_none(),
            "started over when full"
        );
        assert!(cache.arrow(&path(FOOTER_CACHE_ENTRIES)).is_some());
        assert!(
            cache.get(&path(FOOTER_CACHE_ENTRIES)).is_some(),
            "one footer serves both readers"
        );
    }

    #[test]
    fn reads_in_place_return_each_range_as_asked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).expect("written");
        let ranges = [200_000..200_010, 5..9, 0..4, 7..12, 199_990..200_001, 10..10];
        let footers = FooterCache::default();
        let file = footers.open(&path).expect("open");
        let read = read_in_place(&file, &ranges).expect("read");
        for (r, bytes) in ranges.iter().zip(&read) {
            assert_eq!(&bytes[..], &data[r.start as usize..r.end as usize], "{r:?}");
        }
        let past_the_end = 299_999..300_001;
        assert!(read_in_place(&file, std::slice::from_ref(&past_the_end)).is_err());
        // Held open: the same handle again, and its bytes after the file is gone.
        std::fs::remove_file(&path).expect("removed");
        let again = footers.open(&path).expect("held open");
        assert!(Arc::ptr_eq(&file, &again));
        assert_eq!(
            &read_in_place(&again, &ranges[..1]).expect("read")[0][..],
            &data[200_000..200_010]
        );
        for i in 0..OPEN_FILES {
            let other = dir.path().join(format!("g{i}"));
            std::fs::write(&other, b"x").expect("written");
            footers.open(&other).expect("open");
        }
        assert!(footers.handles.lock().expect("lock").len() <= OPEN_FILES, "bounded");
        assert!(footers.open(&path).is_err(), "let go once the map started over");
    }

    #[test]
    fn only_paths_inside_the_table_are_read_in_place() {
        let files = TableFiles {
            store: Arc::new(object_store::memory::InMemory::new()),
            root: Path::from("t"),
            local: Some(std::path::PathBuf::from("/data/t")),
            footers: Arc::new(FooterCache::default()),
        };
        let file = |path: &str| DataFile {
            path: path.into(),
            size: 1,
            date: "2026-12-01".into(),
        };
        let local = |path: &str| files.reader(&file(path)).local;
        assert_eq!(
            local("date=2026-12-01/a.parquet"),
            Some("/data/t/date=2026-12-01/a.parquet".into())
        );
        assert_eq!(local("../other/a.parquet"), None);
        assert_eq!(local("x/./a.parquet"), None);
    }

    #[test]
    fn holders_by_walking_lists_or_by_lookups_agree() {
        let file = |i: u32| DataFile {
            path: format!("f{i:02}"),
            size: 1,
            date: "2026-12-01".into(),
        };
        // Trace t is in file t % 3, traces divisible by 5 also in file 3, and trace 3000 + f
        // alone in each of 64 more files f.
        let holds = |f: u128, t: u128| match f {
            0..3 => t < 2_000 && t % 3 == f,
            3 => t < 2_000 && t.is_multiple_of(5),
            _ => t == 3_000 + f,
        };
        let mut index = TraceIndex::default();
        for f in 0..68u32 {
            let traces: Vec<TraceSpan> = (0..3_100u128)
                .filter(|t| holds(u128::from(f), *t))
                .map(|t| (t, 0, 1))
                .collect();
            index.insert(&file(f), &traces);
        }
        let files: Vec<DataFile> = (0..68).map(file).collect();
        let expect = |traces: &[u128]| -> Vec<(String, Vec<String>)> {
            let mut out = Vec::new();
            for f in 0..68u32 {
                let held: Vec<String> = traces
                    .iter()
                    .filter(|t| holds(u128::from(f), **t))
                    .map(|t| trace_id_hex(*t))
                    .collect();
                if !held.is_empty() {
                    out.push((file(f).path, held));
                }
            }
            out
        };
        let got = |traces: &[u128]| -> Vec<(String, Vec<String>)> {
            let holders = index.holders(traces, &files).expect("indexed");
            holders.into_iter().map(|(f, ids)| (f.path, ids)).collect()
        };
        let steps = |traces: &[u128]| -> usize {
            let lists = (0..68).map(|f| (0..3_100u128).filter(|t| holds(f, *t)).count());
            lists.map(|l| intersect_steps(l, traces.len())).sum()
        };
        // Many traces asked for: the lists are searched; three over many files: each is
        // looked up.
        let mut many: Vec<u128> = (0..2_000).step_by(7).collect();
        many.push(3_010);
        assert!(steps(&many) <= many.len() * MERGE_PER_LOOKUP);
        assert_eq!(got(&many), expect(&many));
        let few = [10u128, 11, 3_010];
        assert!(steps(&few) > few.len() * MERGE_PER_LOOKUP);
        assert_eq!(got(&few), expect(&few));
        assert!(got(&[5_000]).is_empty());
    }

    #[test]
    fn sorted_lists_intersect_whichever_is_longer() {
        let list: Vec<TraceSpan> = [1u128, 4, 9, 16, 25].iter().map(|t| (*t, 0, 1)).collect();
        assert_eq!(intersect_sorted(&list, &[0, 4, 5, 16, 30]), vec![4, 16]);
        let long: Vec<u128> = (0..100).collect();
        assert_eq!(intersect_sorted(&list, &long), vec![1, 4, 9, 16, 25]);
        assert_eq!(intersect_sorted(&list, &[25]), vec![25]);
        assert!(intersect_sorted(&list, &[]).is_empty());
        assert!(intersect_sorted(&[], &long).is_empty());
        assert!(is_path(&["a".into(), "b".into()], "a.b"));
        assert!(!is_path(&["a".into(), "b".into()], "a.b.c"));
        assert!(!is_path(&["a".into(), "b".into()], "a"));
    }

    /// The footer of a one-column, one-row file.
    fn tiny_footer() -> ArrowReaderMetadata {
        use arrow::array::Int64Array;
        let batch = RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![1])) as _)]).expect("batch");
        let mut file = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut file, batch.schema(), None).expect("writer");
        writer.write(&batch).expect("write");
        writer.close().expect("close");
        ArrowReaderMetadata::load(&bytes::Bytes::from(file), reader_options()).expect("footer")
    }

    #[test]
    fn hinted_footers_are_bounded_per_file() {
        let metadata = tiny_footer();
        let cache = FooterCache::default();
        let path = Path::from("f");
        cache.put_hinted(&path, "x", metadata.clone());
        assert!(cache.hinted(&path, "x").is_none(), "kept only beside its footer");
        cache.put_arrow(&path, metadata.clone());
        let base = cache.entries.lock().expect("lock").1;
        for i in 0..HINTS_PER_FOOTER {
            cache.put_hinted(&path, &format!("h{i}"), metadata.clone());
        }
        assert!(cache.hinted(&path, "h0").is_some());
        assert_eq!(
            cache.entries.lock().expect("lock").1,
            base + HINTS_PER_FOOTER * HINTED_BYTES
        );
        cache.put_hinted(&path, "more", metadata.clone());
        assert!(cache.hinted(&path, "h0").is_none(), "started over when full");
        assert!(cache.hinted(&path, "more").is_some());
        assert_eq!(
            cache.entries.lock().expect("lock").1,
            base + HINTED_BYTES,
            "counted in bytes"
        );
    }

    #[test]
    fn bloom_cache_is_bounded() {
        let cache = FooterCache::default();
        let key = |i: usize| (Path::from(format!("f{i}")), 0, 0);
        for i in 0..=BLOOM_CACHE_ENTRIES {
            cache.put_bloom(key(i), None);
        }
        assert!(cache.bloom(&key(0)).is_none(), "started over when full");
        assert!(cache.bloom(&key(BLOOM_CACHE_ENTRIES)).is_some_and(|f| f.is_none()));
    }

    #[test]
    fn trace_ids_parse_as_tempo_accepts_them() {
        assert_eq!(parse_trace_id("1"), Some(1));
        assert_eq!(parse_trace_id("00000000000000000000000000000001"), Some(1));
        assert_eq!(trace_id_hex(0xab), "000000000000000000000000000000ab");
        assert_eq!(parse_trace_id(""), None);
        assert_eq!(parse_trace_id("xyz"), None);
        assert_eq!(parse_trace_id(&"f".repeat(33)), None);
        assert_eq!(parse_trace_id(&"f".repeat(32)), Some(u128::MAX));
        assert_eq!(parse_trace_id("0aBf"), Some(0xabf));
        assert_eq!(parse_trace_id("+1"), None);
        assert_eq!(parse_trace_id("1g"), None);
        for id in [0u128, 1, 0xdead_beef, u128::MAX / 3] {
            assert_eq!(parse_trace_id(&trace_id_hex(id)), Some(id));
        }
    }

    #[test]
    fn lookup_filters_by_time_range() {
        let mut index = TraceIndex::default();
        let a = DataFile {
            path: "date=2026-01-01/a.parquet".into(),
            size: 10,
            date: "2026-01-01".into(),
        };
        let b = DataFile {
            path: "date=2026-01-02/b.parquet".into(),
            size: 20,
            date: "2026-01-02".into(),
        };
        index.insert(&a, &[(7, 100, 200), (8, 100, 150)]);
        index.insert(&b, &[(7, 1000, 1100)]);
        assert_eq!(index.files_of(7, None), vec![a.clone(), b.clone()]);
        assert_eq!(index.files_of(7, Some((0, 300))), vec![a.clone()]);
        assert_eq!(index.files_of(7, Some((1050, 2000))), vec![b]);
        assert!(index.files_of(9, None).is_empty());
        assert_eq!((index.file_count(), index.trace_count()), (2, 2));
    }
}
