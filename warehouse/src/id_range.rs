//! Reading a tenant's spans one trace-id range at a time, for search.
//!
//! Data files are sorted by trace id and carry page indexes, so the rows of a range
//! `[low, high)` are a few contiguous pages of each file: [`TableFiles::read_id_range`] reads
//! only those pages (and only the columns asked for), from footers cached with their page
//! indexes. [`TableFiles::id_pages`] gives the same statistics as a histogram of trace ids
//! (each page's smallest id and its rows), from which a search cuts the table into ranges of
//! about the spans it wants, whatever the spread of the ids (64-bit ids from Zipkin or Jaeger
//! fill only the low end of the id space).

use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBufferBuilder, MapArray, RecordBatch, StringArray, StructArray,
    new_null_array,
};
use arrow::compute::kernels::cmp::{gt_eq, lt};
use arrow::compute::{and, cast, filter_record_batch, prep_null_mask_filter};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::datasource::physical_plan::parquet::{ParquetFileMetrics, build_row_filter};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::utils::{collect_columns, reassign_expr_columns};
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::TryStreamExt;
use parquet::arrow::arrow_reader::{ArrowPredicate, ArrowPredicateFn, RowFilter, RowSelection, RowSelector};
use parquet::arrow::async_reader::ParquetRecordBatchStream;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::statistics::Statistics;
use parquet::schema::types::SchemaDescriptor;

use crate::map_filter::{self, MapFields, MapFilter, text_mask};
use crate::schema::{PARTITION_COLUMN, spans_schema};
use crate::trace_index::{DataFile, StoreReader, TableFiles, trace_id_hex};
use crate::{Error, Result};

/// Trace ids `[low, high)` in stored spelling (32 lowercase hex digits); `None` is unbounded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdRange {
    pub low: Option<String>,
    pub high: Option<String>,
}

impl IdRange {
    /// The ids from `first` to `last`, both included.
    pub fn spanning(first: u128, last: u128) -> Self {
        debug_assert!(first <= last, "an empty id range");
        Self {
            low: Some(trace_id_hex(first)),
            high: last.checked_add(1).map(trace_id_hex),
        }
    }

    fn admits(&self, min: &[u8], max: &[u8]) -> bool {
        self.low.as_ref().is_none_or(|l| max >= l.as_bytes()) && self.high.as_ref().is_none_or(|h| min < h.as_bytes())
    }

    /// Which rows of `ids` fall in the range.
    pub fn mask(&self, ids: &StringArray) -> Result<BooleanArray> {
        let low = self
            .low
            .as_ref()
            .map(|l| gt_eq(ids, &StringArray::new_scalar(l.as_str())));
        let high = self
            .high
            .as_ref()
            .map(|h| lt(ids, &StringArray::new_scalar(h.as_str())));
        Ok(match (low.transpose()?, high.transpose()?) {
            (Some(low), Some(high)) => and(&low, &high)?,
            (Some(one), None) | (None, Some(one)) => one,
            (None, None) => BooleanArray::from(vec![true; ids.len()]),
        })
    }

    fn is_all(&self) -> bool {
        self.low.is_none() && self.high.is_none()
    }
}

/// A condition on single spans (a DataFusion expression over columns of the `spans` schema, by
/// name): a read that has one keeps only the rows that pass it, decoding the columns it reads
/// first and the others only for those rows.
pub type SpanCondition = Arc<dyn PhysicalExpr>;

/// The rows a read keeps: trace ids in `range`, among `traces` (sorted) when given, that pass
/// `condition` when given.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    pub range: &'a IdRange,
    pub traces: Option<&'a [String]>,
    pub condition: Option<&'a SpanCondition>,
}

/// What a read returned: the rows kept (with the columns asked for), the compressed bytes of
/// the column chunks read in the share of their rows selected, and the rows of the pages read.
#[derive(Debug, Default)]
pub struct Read {
    pub batches: Vec<RecordBatch>,
    pub bytes: u64,
    pub scanned: u64,
}

impl Read {
    pub fn extend(&mut self, other: Read) {
        self.batches.extend(other.batches);
        self.bytes += other.bytes;
        self.scanned += other.scanned;
    }
}

impl Wanted<'_> {
    fn admits(&self, min: &[u8], max: &[u8]) -> bool {
        let listed = |t: &[String]| {
            let first = t.partition_point(|id| id.as_bytes() < min);
            t.get(first).is_some_and(|id| id.as_bytes() <= max)
        };
        self.range.admits(min, max) && self.traces.is_none_or(listed)
    }

    /// Which of `ids` are wanted, by trace id alone.
    fn ids_mask(&self, ids: &StringArray) -> Result<BooleanArray> {
        match self.traces.map(|t| listed(ids, t)) {
            None => self.range.mask(ids),
            Some(listed) if self.range.is_all() => Ok(listed),
            Some(listed) => Ok(and(&self.range.mask(ids)?, &listed)?),
        }
    }

    /// Whether the reader decides the listed traces itself (a row filter on `trace_id`, read
    /// as a dictionary), so the other columns are decoded for their rows only. Not with a
    /// condition: the few rows that pass it are checked after the read.
    fn ids_in_reader(&self) -> bool {
        self.traces.is_some() && self.condition.is_none()
    }

    /// Which of `ids` (text, or a dictionary of text: then each distinct id is looked at
    /// once) are wanted, by trace id alone.
    fn ids_mask_of(&self, ids: &ArrayRef) -> Result<BooleanArray> {
        text_mask(ids, |text| self.ids_mask(text))
    }

    /// The wanted rows of `batch` (typed as the `spans` schema, with `trace_id` and the
    /// condition's columns), `columns` only; `None` when there are none.
    fn keep(&self, batch: &RecordBatch, columns: &[String]) -> Result<Option<RecordBatch>> {
        // Only what is returned and decided on is copied out of the rows kept.
        let needed = read_columns(columns, self.condition);
        let schema = batch.schema();
        let indices: Vec<usize> = (schema.fields().iter().enumerate())
            .filter(|(_, f)| needed.contains(f.name()))
            .map(|(i, _)| i)
            .collect();
        let batch = &batch.project(&indices)?;
        let ids = batch
            .column_by_name("trace_id")
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| Error::InvalidSpan("spans were read without trace_id".into()))?;
        let mask = self.ids_mask(ids)?;
        let Some(kept) = filtered(batch, &mask)? else {
            return Ok(None);
        };
        self.decide(kept, columns)
    }

    /// The rows of `kept` (rows of wanted traces, with the condition's columns) that pass
    /// the condition, `columns` only; `None` when there are none.
    fn decide(&self, mut kept: RecordBatch, columns: &[String]) -> Result<Option<RecordBatch>> {
        if let Some(condition) = self.condition {
            let Some(passed) = filtered(&kept, &passes(condition, &kept)?)? else {
                return Ok(None);
            };
            kept = passed;
        }
        let indices = columns
            .iter()
            .map(|c| kept.schema().index_of(c))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Some(kept.project(&indices)?))
    }
}

/// The rows of `batch` that `mask` selects; `None` when none.
fn filtered(batch: &RecordBatch, mask: &BooleanArray) -> Result<Option<RecordBatch>> {
    Ok(match mask.true_count() {
        0 => None,
        n if n == batch.num_rows() => Some(batch.clone()),
        _ => Some(filter_record_batch(batch, mask)?),
    })
}

/// Which rows of `batch` pass `condition` (a null is a no).
pub(crate) fn passes(condition: &SpanCondition, batch: &RecordBatch) -> Result<BooleanArray> {
    let condition = reassign_expr_columns(condition.clone(), batch.schema_ref())?;
    let value = condition.evaluate(batch)?.into_array(batch.num_rows())?;
    let passed = value
        .as_boolean_opt()
        .ok_or_else(|| Error::InvalidSpan("a span condition that is not a boolean".into()))?;
    Ok(match passed.null_count() {
        0 => passed.clone(),
        _ => prep_null_mask_filter(passed),
    })
}

/// The names of the columns `condition` reads (none without one).
pub(crate) fn column_names(condition: Option<&SpanCondition>) -> Vec<String> {
    let columns = condition.map(collect_columns).unwrap_or_default();
    columns.iter().map(|c| c.name().to_string()).collect()
}

/// `columns`, `trace_id` and the columns `condition` reads, in the order of the `spans` schema.
fn read_columns(columns: &[String], condition: Option<&SpanCondition>) -> Vec<String> {
    let mut all: Vec<String> = columns.to_vec();
    for name in std::iter::once("trace_id".to_string()).chain(column_names(condition)) {
        if !all.contains(&name) {
            all.push(name);
        }
    }
    let schema = spans_schema();
    all.sort_by_key(|c| schema.index_of(c).unwrap_or(usize::MAX));
    all
}

/// The columns of `file_schema` a read of `wanted` types as dictionaries: the string columns
/// it is decided by (those its condition reads, and `trace_id` when it lists traces) and the
/// attribute maps `maps` reads (their keys). They are then decided once per distinct value of
/// a dictionary page instead of once per row, and the strings are not copied out.
fn dictionary_hint(
    file_schema: &Schema,
    wanted: &Wanted<'_>,
    ids_in_reader: bool,
    maps: Option<&SpanCondition>,
) -> Vec<String> {
    let map_columns = column_names(maps);
    let mut read = column_names(wanted.condition);
    if ids_in_reader {
        read.push("trace_id".to_string());
    }
    let hinted = file_schema.fields().iter().filter(|f| match f.data_type() {
        DataType::Utf8 => read.contains(f.name()),
        DataType::Map(..) => map_columns.contains(f.name()),
        _ => false,
    });
    hinted.map(|f| f.name().clone()).collect()
}

/// `file_schema` with the columns `hinted` ([`dictionary_hint`]) typed as dictionaries.
fn hinted_schema(file_schema: &Schema, hinted: &[String]) -> SchemaRef {
    let fields: Vec<Field> = file_schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 if hinted.contains(f.name()) => {
                let typed = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
                f.as_ref().clone().with_data_type(typed)
            }
            DataType::Map(entries, sorted) if hinted.contains(f.name()) => {
                let typed = DataType::Map(dictionary_keys(entries), *sorted);
                f.as_ref().clone().with_data_type(typed)
            }
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, file_schema.metadata().clone()))
}

/// A map's entries with their (text) keys typed as a dictionary: a key is then compared once
/// per distinct key of a page, and the keys are not copied out.
fn dictionary_keys(entries: &FieldRef) -> FieldRef {
    let DataType::Struct(fields) = entries.data_type() else {
        return entries.clone();
    };
    let typed: Vec<FieldRef> = fields
        .iter()
        .map(|f| match (f.name().as_str(), f.data_type()) {
            ("key", DataType::Utf8) => {
                let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
                Arc::new(f.as_ref().clone().with_data_type(dictionary))
            }
            _ => f.clone(),
        })
        .collect();
    Arc::new(entries.as_ref().clone().with_data_type(DataType::Struct(typed.into())))
}

/// `condition` as parquet row filters over a file of `file_schema`: none unless the file stores
/// every column it reads as the `spans` schema types it (or as a dictionary of that type).
/// The rows read are checked again, so a filter lets every row of a batch it fails on through.
fn condition_filters(
    condition: Option<&SpanCondition>,
    file_schema: &SchemaRef,
    metadata: &ParquetMetaData,
) -> Result<Vec<Box<dyn ArrowPredicate>>> {
    let Some(condition) = condition.filter(|c| stored_as_spans(c, file_schema)) else {
        return Ok(Vec::new());
    };
    let metrics = ParquetFileMetrics::new(0, "", &ExecutionPlanMetricsSet::new());
    let filter = build_row_filter(condition, file_schema, metadata, true, &metrics)?;
    let filters = filter.map(RowFilter::into_predicates).unwrap_or_default();
    Ok(filters
        .into_iter()
        .map(|f| Box::new(Lenient(f)) as Box<dyn ArrowPredicate>)
        .collect())
}

/// Whether a file of `file_schema` stores every column `condition` reads as the `spans` schema
/// types it (or as a dictionary of that type).
fn stored_as_spans(condition: &SpanCondition, file_schema: &Schema) -> bool {
    let spans = spans_schema();
    let typed = |name: &str| spans.field_with_name(name).ok().map(|f| f.data_type().clone());
    let stored = |name: &str| match file_schema.field_with_name(name).map(|f| f.data_type()) {
        Ok(DataType::Dictionary(_, values)) => Some(values.as_ref().clone()),
        Ok(t) => Some(t.clone()),
        Err(_) => None,
    };
    collect_columns(condition)
        .iter()
        .all(|c| typed(c.name()).is_some() && typed(c.name()) == stored(c.name()))
}

/// `wanted`'s condition as (what the read checks on the rows it returns, what a row filter
/// decides from the attribute-map leaves alone): the conjuncts that read maps go to the
/// filter when the file stores what they read as the `spans` schema types it.
fn split_condition(wanted: &Wanted<'_>, file_schema: &Schema) -> (Option<SpanCondition>, Option<SpanCondition>) {
    match wanted.condition {
        Some(c) if stored_as_spans(c, file_schema) => map_filter::split(c),
        other => (other.cloned(), None),
    }
}

/// The leaves of span attributes' double and array values.
const SPAN_DOUBLES_AND_ARRAYS: [[&str; 4]; 2] = [
    ["span_attributes", "key_value", "value", "double"],
    ["span_attributes", "key_value", "value", "array"],
];

/// Whether no row group of a file holds a double or an array among its span attributes: by
/// its statistics, their `double` and `array` leaves are null throughout.
fn no_span_doubles(metadata: &ParquetMetaData) -> bool {
    let schema = metadata.file_metadata().schema_descr();
    SPAN_DOUBLES_AND_ARRAYS.iter().all(|path| {
        let Some(leaf) = (0..schema.num_columns()).find(|&c| schema.column(c).path().parts() == path) else {
            return false;
        };
        metadata.row_groups().iter().all(|rg| {
            let chunk = rg.column(leaf);
            let nulls = chunk.statistics().and_then(|s| s.null_count_opt());
            nulls.is_some_and(|n| i64::try_from(n).is_ok_and(|n| n == chunk.num_values()))
        })
    })
}

/// A row filter that lets every row through where it fails (a type it cannot compare).
struct Lenient(Box<dyn ArrowPredicate>);

impl ArrowPredicate for Lenient {
    fn projection(&self) -> &ProjectionMask {
        self.0.projection()
    }

    fn evaluate(&mut self, batch: RecordBatch) -> std::result::Result<BooleanArray, arrow::error::ArrowError> {
        let rows = batch.num_rows();
        Ok(self
            .0
            .evaluate(batch)
            .unwrap_or_else(|_| BooleanArray::from(vec![true; rows])))
    }
}

/// Which of `ids` are among `traces` (sorted). Rows of data files come sorted by trace id, so
/// the two lists are walked side by side; a row smaller than the one before (live spans) looks
/// its id up afresh.
fn listed(ids: &StringArray, traces: &[String]) -> BooleanArray {
    let (mut at, mut previous) = (0usize, None::<(&str, bool)>);
    let mut out = BooleanBufferBuilder::new(ids.len());
    for i in 0..ids.len() {
        if ids.is_null(i) {
            out.append(false);
            continue;
        }
        let id = ids.value(i);
        // A trace's rows are side by side.
        if let Some((p, was)) = previous
            && p == id
        {
            out.append(was);
            continue;
        }
        if previous.is_none_or(|(p, _)| id < p) {
            at = traces.partition_point(|t| t.as_str() < id);
        }
        while traces.get(at).is_some_and(|t| t.as_str() < id) {
            at += 1;
        }
        let is = traces.get(at).is_some_and(|t| t == id);
        previous = Some((id, is));
        out.append(is);
    }
    BooleanArray::new(out.finish(), None)
}

/// One page of trace ids: the smallest and largest id on it and how many rows it holds.
pub type IdPage = (Vec<u8>, Vec<u8>, u64);

/// The leaf index of the top-level `trace_id` column.
pub(crate) fn trace_id_leaf(metadata: &ParquetMetaData, file: &DataFile) -> Result<usize> {
    let schema = metadata.file_metadata().schema_descr();
    (0..schema.num_columns())
        .find(|&i| schema.column(i).path().string() == "trace_id")
        .ok_or_else(|| Error::InvalidSpan(format!("{} has no trace_id column", file.path)))
}

/// The pages of `trace_id` in row group `rg`: (first row, rows, min, max); one entry for the
/// whole row group when the file has no page index.
fn id_pages_of(metadata: &ParquetMetaData, rg: usize, leaf: usize) -> Vec<(u64, u64, Vec<u8>, Vec<u8>)> {
    let group = metadata.row_group(rg);
    let rows = u64::try_from(group.num_rows()).unwrap_or_default();
    let indexes = metadata.column_index().zip(metadata.offset_index());
    if let Some((columns, offsets)) = indexes
        && let ColumnIndexMetaData::BYTE_ARRAY(index) = &columns[rg][leaf]
    {
        let locations = offsets[rg][leaf].page_locations();
        let mut pages = Vec::with_capacity(locations.len());
        for (i, page) in locations.iter().enumerate() {
            let first = u64::try_from(page.first_row_index).unwrap_or_default();
            let end = locations
                .get(i + 1)
                .map_or(rows, |n| u64::try_from(n.first_row_index).unwrap_or_default());
            let (Some(min), Some(max)) = (index.min_value(i), index.max_value(i)) else {
                continue;
            };
            pages.push((first, end - first, min.to_vec(), max.to_vec()));
        }
        return pages;
    }
    match group.column(leaf).statistics() {
        Some(Statistics::ByteArray(s)) => match (s.min_bytes_opt(), s.max_bytes_opt()) {
            (Some(min), Some(max)) => vec![(0, rows, min.to_vec(), max.to_vec())],
            _ => vec![(0, rows, Vec::new(), vec![0xff; 32])],
        },
        _ => vec![(0, rows, Vec::new(), vec![0xff; 32])],
    }
}

impl TableFiles {
    /// The pages of `file`'s trace ids: each page's smallest and largest id and its rows.
    pub async fn id_pages(&self, file: &DataFile) -> Result<Vec<IdPage>> {
        let builder = self.builder(file).await?;
        let metadata = builder.metadata();
        let leaf = trace_id_leaf(metadata, file)?;
        let mut out = Vec::new();
        for rg in 0..metadata.num_row_groups() {
            out.extend(
                id_pages_of(metadata, rg, leaf)
                    .into_iter()
                    .map(|(_, n, min, max)| (min, max, n)),
            );
        }
        Ok(out)
    }

    /// The rows of `file` that are `wanted`, `columns` of the `spans` schema (in that order),
    /// reading only the pages whose trace-id statistics admit such ids.
    /// Of the maps `narrowed` names, only the key and the value fields it lists are read.
    /// A read of many rows is split by row groups into tasks that decode side by side.
    pub async fn read_id_range(
        &self,
        file: &DataFile,
        wanted: Wanted<'_>,
        columns: &[String],
        narrowed: Option<&MapFields>,
    ) -> Result<Read> {
        let mut reader_metadata = self.reader_metadata(file).await?;
        let metadata = reader_metadata.metadata().clone();
        let leaf = trace_id_leaf(&metadata, file)?;
        let Some(pages) = Pages::of(&metadata, leaf, &wanted) else {
            return Ok(Read::default());
        };
        let dedicated = wanted
            .condition
            .and_then(|c| map_filter::on_dedicated_columns(c, || no_span_doubles(&metadata)));
        let wanted = Wanted {
            condition: dedicated.as_ref().or(wanted.condition),
            ..wanted
        };
        let (checked, maps) = split_condition(&wanted, reader_metadata.schema());
        let checked = Wanted {
            condition: checked.as_ref(),
            ..wanted
        };
        let hint = dictionary_hint(
            reader_metadata.schema(),
            &checked,
            wanted.ids_in_reader(),
            maps.as_ref(),
        );
        if !hint.is_empty() {
            let file_schema = reader_metadata.schema().clone();
            let typed = || hinted_schema(&file_schema, &hint);
            reader_metadata = self.hinted_metadata(file, &reader_metadata, &hint.join(","), typed)?;
        }
        let read = read_columns(columns, checked.condition);
        let schema = metadata.file_metadata().schema_descr();
        let roots: Vec<usize> = read
            .iter()
            .filter_map(|c| schema.root_schema().get_fields().iter().position(|f| f.name() == c))
            .collect();
        let leaves = projected_leaves(schema, &roots, narrowed);
        let filters = Filters {
            condition: checked.condition.cloned(),
            maps,
            ids: wanted
                .traces
                .filter(|_| wanted.ids_in_reader())
                .map(|t| (leaf, wanted.range.clone(), Arc::from(t))),
        };
        let mut counted = leaves.clone();
        counted.extend(filters.map_leaves(schema).into_iter().filter(|l| !leaves.contains(l)));
        let bytes = pages.bytes(&metadata, &counted);
        let projection = ProjectionMask::leaves(schema, leaves);
        let mut streams = Vec::new();
        for groups in pages.split(read_tasks()) {
            let builder =
                ParquetRecordBatchStreamBuilder::new_with_metadata(self.reader(file), reader_metadata.clone());
            streams.push(filters.reader(builder, projection.clone(), groups)?);
        }
        let batches = side_by_side(streams).await?;
        // The pages read may hold other ids; a condition pushed in part is checked whole.
        let mut kept = Vec::with_capacity(batches.len());
        for b in &batches {
            kept.extend(checked.keep(&project_spans(b, &read, &file.date, narrowed)?, columns)?);
        }
        Ok(Read {
            batches: kept,
            bytes,
            scanned: pages.rows,
        })
    }
}

/// Tasks one read is split into at most: the cores.
fn read_tasks() -> usize {
    static TASKS: LazyLock<usize> = LazyLock::new(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    *TASKS
}

/// Rows a read task decodes at least: a read of fewer is not split.
const MIN_TASK_ROWS: u64 = 16 * 1024;

/// The batches of `streams`, in order, each read in a task of its own: side by side, and
/// beside the reads of other files (those of a search's files are polled together). Dropping
/// the future aborts the tasks left; a task cancelled otherwise is the runtime shutting down,
/// and a panic in one goes on up to the query's own guard.
async fn side_by_side(streams: Vec<ParquetRecordBatchStream<StoreReader>>) -> Result<Vec<RecordBatch>> {
    let mut tasks = tokio::task::JoinSet::new();
    for (part, stream) in streams.into_iter().enumerate() {
        tasks.spawn(async move { (part, stream.try_collect::<Vec<RecordBatch>>().await) });
    }
    let mut parts = Vec::with_capacity(tasks.len());
    while let Some(done) = tasks.join_next().await {
        let (part, batches) = match done {
            Ok(done) => done,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => return Err(Error::ShuttingDown),
        };
        parts.push((part, batches?));
    }
    parts.sort_unstable_by_key(|(part, _)| *part);
    Ok(parts.into_iter().flat_map(|(_, batches)| batches).collect())
}

/// The row filters of one read, built afresh for each of its tasks: the condition's (when
/// the file stores what it reads as the `spans` schema types it), the attribute maps', and
/// the listed trace ids' (the `trace_id` leaf, the range, the ids sorted).
struct Filters {
    condition: Option<SpanCondition>,
    maps: Option<SpanCondition>,
    ids: Option<(usize, IdRange, Arc<[String]>)>,
}

impl Filters {
    /// The leaves the attribute-map filter decodes.
    fn map_leaves(&self, schema: &SchemaDescriptor) -> Vec<usize> {
        let maps = self.maps.as_ref();
        maps.map(|m| map_filter::leaves(m, schema)).unwrap_or_default()
    }

    /// The stream of `builder`'s rows of the pages `groups`, `projection` only, through the
    /// filters.
    fn reader(
        &self,
        builder: ParquetRecordBatchStreamBuilder<StoreReader>,
        projection: ProjectionMask,
        groups: &[GroupPages],
    ) -> Result<ParquetRecordBatchStream<StoreReader>> {
        let metadata = builder.metadata().clone();
        let schema = metadata.file_metadata().schema_descr();
        let mut filters = condition_filters(self.condition.as_ref(), builder.schema(), &metadata)?;
        if let Some(maps) = &self.maps {
            filters.push(Box::new(MapFilter::new(maps.clone(), schema)));
        }
        if let Some((leaf, range, traces)) = &self.ids {
            let (range, traces) = (range.clone(), traces.clone());
            let ids = ProjectionMask::leaves(schema, [*leaf]);
            filters.push(Box::new(ArrowPredicateFn::new(ids, move |batch: RecordBatch| {
                let wanted = Wanted {
                    range: &range,
                    traces: Some(&traces),
                    condition: None,
                };
                wanted
                    .ids_mask_of(batch.column(0))
                    .map_err(|e| arrow::error::ArrowError::ExternalError(Box::new(e)))
            })));
        }
        let selectors: Vec<RowSelector> = groups.iter().flat_map(|g| g.selectors.iter().copied()).collect();
        let mut builder = builder
            .with_projection(projection)
            .with_row_groups(groups.iter().map(|g| g.rg).collect())
            .with_row_selection(RowSelection::from(selectors))
            .with_batch_size(8192);
        if !filters.is_empty() {
            builder = builder.with_row_filter(RowFilter::new(filters));
        }
        Ok(builder.build()?)
    }
}

/// The leaves of the columns `roots` of a file of `schema`: of the maps `narrowed` names only
/// the key and the value fields it lists.
fn projected_leaves(schema: &SchemaDescriptor, roots: &[usize], narrowed: Option<&MapFields>) -> Vec<usize> {
    (0..schema.num_columns())
        .filter(|&c| {
            let root = schema.get_column_root_idx(c);
            if !roots.contains(&root) {
                return false;
            }
            let column = schema.column(c);
            let path = column.path().parts();
            // A map of no fields is not read (parquet reads no map without its values).
            match narrowed.and_then(|n| n.get(&path[0])) {
                Some(fields) => !fields.is_empty() && map_filter::is_key_or_field(path, fields),
                None => true,
            }
        })
        .collect()
}

/// The pages of a file a read selects by their trace-id statistics.
struct Pages {
    groups: Vec<GroupPages>,
    rows: u64,
}

/// The pages of one row group a read selects.
struct GroupPages {
    rg: usize,
    selectors: Vec<RowSelector>,
    /// Rows selected, and their share of the row group's.
    rows: u64,
    share: f64,
}

impl Pages {
    /// The pages of the file of `metadata` that may hold `wanted` ids; `None` when none may.
    fn of(metadata: &ParquetMetaData, leaf: usize, wanted: &Wanted<'_>) -> Option<Self> {
        let mut pages = Pages {
            groups: Vec::new(),
            rows: 0,
        };
        for rg in 0..metadata.num_row_groups() {
            let id_pages = id_pages_of(metadata, rg, leaf);
            if !id_pages.iter().any(|(_, _, min, max)| wanted.admits(min, max)) {
                continue;
            }
            let (mut chosen, mut all, mut selectors) = (0u64, 0u64, Vec::with_capacity(id_pages.len()));
            for (_, rows, min, max) in &id_pages {
                all += rows;
                let admitted = wanted.admits(min, max);
                chosen += if admitted { *rows } else { 0 };
                let rows = usize::try_from(*rows).unwrap_or_default();
                selectors.push(match admitted {
                    true => RowSelector::select(rows),
                    false => RowSelector::skip(rows),
                });
            }
            pages.rows += chosen;
            pages.groups.push(GroupPages {
                rg,
                selectors,
                rows: chosen,
                share: chosen as f64 / all.max(1) as f64,
            });
        }
        (!pages.groups.is_empty()).then_some(pages)
    }

    /// The row groups in at most `tasks` runs of about equal selected rows, each of
    /// [`MIN_TASK_ROWS`] at least (but for the last).
    fn split(&self, tasks: usize) -> Vec<&[GroupPages]> {
        let tasks = tasks
            .min(usize::try_from(self.rows / MIN_TASK_ROWS).unwrap_or(usize::MAX))
            .max(1);
        let per_task = self.rows.div_ceil(tasks as u64);
        let (mut parts, mut from, mut rows) = (Vec::with_capacity(tasks), 0, 0u64);
        for (i, group) in self.groups.iter().enumerate() {
            rows += group.rows;
            if rows >= per_task && parts.len() + 1 < tasks {
                parts.push(&self.groups[from..=i]);
                (from, rows) = (i + 1, 0);
            }
        }
        if from < self.groups.len() {
            parts.push(&self.groups[from..]);
        }
        parts
    }

    /// Bytes of the column chunks of `leaves`, in the share of their rows selected.
    fn bytes(&self, metadata: &ParquetMetaData, leaves: &[usize]) -> u64 {
        let bytes: f64 = self
            .groups
            .iter()
            .map(|g| {
                let group = metadata.row_group(g.rg);
                leaves
                    .iter()
                    .map(|&c| group.column(c).compressed_size() as f64)
                    .sum::<f64>()
                    * g.share
            })
            .sum();
        bytes as u64
    }
}

/// `array` typed as `to`: cast, except that a map or struct read with fewer fields (a narrowed
/// map) gets the missing ones as nulls.
fn conform(array: &ArrayRef, to: &DataType) -> Result<ArrayRef> {
    if array.data_type() == to {
        return Ok(array.clone());
    }
    match (array.data_type(), to) {
        (DataType::Map(..), DataType::Map(entries, sorted)) => {
            let map = array.as_map();
            let conformed = conform(&(Arc::new(map.entries().clone()) as ArrayRef), entries.data_type())?;
            let map = MapArray::try_new(
                entries.clone(),
                map.offsets().clone(),
                conformed.as_struct().clone(),
                map.nulls().cloned(),
                *sorted,
            )?;
            Ok(Arc::new(map))
        }
        (DataType::Struct(_), DataType::Struct(fields)) => {
            let from = array.as_struct();
            let columns = fields
                .iter()
                .map(|f| match from.column_by_name(f.name()) {
                    Some(c) => conform(c, f.data_type()),
                    None => Ok(new_null_array(f.data_type(), from.len())),
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Arc::new(StructArray::try_new(
                fields.clone(),
                columns,
                from.nulls().cloned(),
            )?))
        }
        _ => Ok(cast(array, to)?),
    }
}

/// `batch` typed as `schema` (of the same columns), by [`conform`].
pub(crate) fn conform_batch(batch: &RecordBatch, schema: SchemaRef) -> Result<RecordBatch> {
    let columns = (batch.columns().iter().zip(schema.fields()))
        .map(|(c, f)| conform(c, f.data_type()))
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// `columns` of `batch`, typed as in the `spans` schema; the partition column is `date` when
/// the batch lacks it, and a map `narrowed` to no fields (not read) is null.
pub(crate) fn project_spans(
    batch: &RecordBatch,
    columns: &[String],
    date: &str,
    narrowed: Option<&MapFields>,
) -> Result<RecordBatch> {
    let unread = |name: &str| narrowed.and_then(|n| n.get(name)).is_some_and(|f| f.is_empty());
    let full = spans_schema();
    let indices = columns
        .iter()
        .map(|c| full.index_of(c))
        .collect::<Result<Vec<_>, _>>()?;
    let schema = Arc::new(full.project(&indices)?);
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    for field in schema.fields() {
        let name = field.name();
        arrays.push(match batch.column_by_name(name) {
            Some(c) => conform(c, field.data_type())?,
            None if name == PARTITION_COLUMN => Arc::new(StringArray::from(vec![date; batch.num_rows()])),
            None if unread(name) => new_null_array(field.data_type(), batch.num_rows()),
            None => return Err(Error::InvalidSpan(format!("data file has no {name} column"))),
        });
    }
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(schema, arrays, &options)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_split_into_tasks_of_whole_row_groups() {
        let group = |rg: usize, rows: u64| GroupPages {
            rg,
            selectors: vec![RowSelector::select(rows as usize)],
            rows,
            share: 1.0,
        };
        let pages = |rows: &[u64]| Pages {
            groups: rows.iter().enumerate().map(|(rg, &r)| group(rg, r)).collect(),
            rows: rows.iter().sum(),
        };
        let groups = |parts: Vec<&[GroupPages]>| -> Vec<Vec<usize>> {
            parts.iter().map(|p| p.iter().map(|g| g.rg).collect()).collect()
        };
        let small = pages(&[MIN_TASK_ROWS, MIN_TASK_ROWS / 2]);
        assert_eq!(
            groups(small.split(4)),
            vec![vec![0, 1]],
            "under two tasks' rows: one task"
        );
        let even = pages(&[MIN_TASK_ROWS; 4]);
        assert_eq!(groups(even.split(2)), vec![vec![0, 1], vec![2, 3]]);
        assert_eq!(groups(even.split(8)), vec![vec![0], vec![1], vec![2], vec![3]]);
        assert_eq!(groups(even.split(1)), vec![vec![0, 1, 2, 3]]);
        let uneven = pages(&[3 * MIN_TASK_ROWS, 10, 10, MIN_TASK_ROWS]);
        assert_eq!(groups(uneven.split(2)), vec![vec![0], vec![1, 2, 3]]);
    }

    #[test]
    fn spanning_ranges_hold_both_ends() {
        let range = IdRange::spanning(0x10, 0x2f);
        let ids = StringArray::from([0x0f, 0x10, 0x2f, 0x30].map(trace_id_hex).to_vec());
        let got: Vec<bool> = range.mask(&ids).unwrap().iter().map(|b| b.unwrap()).collect();
        assert_eq!(got, [false, true, true, false]);
        let top = IdRange::spanning(u128::MAX - 1, u128::MAX);
        assert_eq!(top.high, None, "no id past the largest");
        let ids = StringArray::from(vec![trace_id_hex(u128::MAX)]);
        assert!(top.mask(&ids).unwrap().value(0));
    }

    #[test]
    fn ids_of_a_dictionary_are_decided_per_value() {
        use arrow::array::{DictionaryArray, Int32Array};
        let traces: Vec<String> = ["b", "d"].map(String::from).to_vec();
        let all = IdRange::default();
        let wanted = Wanted {
            range: &all,
            traces: Some(&traces),
            condition: None,
        };
        let values = StringArray::from(vec!["a", "b", "d"]);
        let keys = Int32Array::from(vec![Some(1), Some(0), None, Some(2), Some(1)]);
        let ids: ArrayRef = Arc::new(DictionaryArray::new(keys, Arc::new(values)));
        let got: Vec<bool> = wanted.ids_mask_of(&ids).unwrap().iter().map(|b| b.unwrap()).collect();
        assert_eq!(got, [true, false, false, true, true]);
        let plain: ArrayRef = Arc::new(StringArray::from(vec![
            Some("b"),
            Some("a"),
            None,
            Some("d"),
            Some("b"),
        ]));
        let got: Vec<bool> = wanted.ids_mask_of(&plain).unwrap().iter().map(|b| b.unwrap()).collect();
        assert_eq!(got, [true, false, false, true, true]);
    }

    #[test]
    fn listed_finds_ids_sorted_or_not() {
        let traces: Vec<String> = ["b", "d", "f"].map(String::from).to_vec();
        let ids = StringArray::from(vec![
            Some("a"),
            Some("b"),
            Some("b"),
            None,
            Some("e"),
            Some("f"),
            Some("d"),
            Some("g"),
        ]);
        let got: Vec<bool> = listed(&ids, &traces).iter().map(|b| b.unwrap()).collect();
        assert_eq!(got, [false, true, true, false, false, true, true, false]);
        assert!(listed(&ids, &[]).iter().all(|b| b == Some(false)));
    }
}
