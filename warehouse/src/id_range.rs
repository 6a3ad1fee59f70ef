//! Reading a tenant's spans one trace-id range at a time, for search.
//!
//! Data files are sorted by trace id and carry page indexes, so the rows of a range
//! `[low, high)` are a few contiguous pages of each file: [`TableFiles::read_id_range`] reads
//! only those pages (and only the columns asked for), from footers cached with their page
//! indexes. [`TableFiles::id_pages`] gives the same statistics as a histogram of trace ids
//! (each page's smallest id and its rows), from which a search cuts the table into ranges of
//! about the spans it wants, whatever the spread of the ids (64-bit ids from Zipkin or Jaeger
//! fill only the low end of the id space).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray};
use arrow::compute::kernels::cmp::{gt_eq, lt};
use arrow::compute::{and, cast, filter_record_batch};
use arrow::datatypes::DataType;
use futures::TryStreamExt;
use parquet::arrow::arrow_reader::{ArrowPredicateFn, ArrowReaderOptions, RowFilter, RowSelection, RowSelector};
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::statistics::Statistics;

use crate::schema::{PARTITION_COLUMN, spans_schema};
use crate::trace_index::{DataFile, StoreReader, TableFiles};
use crate::{Error, Result};

/// Trace ids `[low, high)` in stored spelling (32 lowercase hex digits); `None` is unbounded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdRange {
    pub low: Option<String>,
    pub high: Option<String>,
}

impl IdRange {
    fn admits(&self, min: &[u8], max: &[u8]) -> bool {
        self.low.as_ref().is_none_or(|l| max >= l.as_bytes()) && self.high.as_ref().is_none_or(|h| min < h.as_bytes())
    }

    /// Which rows of `ids` fall in the range.
    pub fn mask(&self, ids: &StringArray) -> Result<BooleanArray> {
        let mut mask = BooleanArray::from(vec![true; ids.len()]);
        if let Some(low) = &self.low {
            mask = and(&mask, &gt_eq(ids, &StringArray::new_scalar(low.as_str()))?)?;
        }
        if let Some(high) = &self.high {
            mask = and(&mask, &lt(ids, &StringArray::new_scalar(high.as_str()))?)?;
        }
        Ok(mask)
    }
}

/// The rows a range read keeps: trace ids in a range and, when given, among `traces` (sorted).
#[derive(Debug, Clone, Copy)]
struct Wanted<'a> {
    range: &'a IdRange,
    traces: Option<&'a [String]>,
}

impl Wanted<'_> {
    fn admits(&self, min: &[u8], max: &[u8]) -> bool {
        let listed = |t: &[String]| {
            let first = t.partition_point(|id| id.as_bytes() < min);
            t.get(first).is_some_and(|id| id.as_bytes() <= max)
        };
        self.range.admits(min, max) && self.traces.is_none_or(listed)
    }

    fn mask(&self, ids: &StringArray) -> Result<BooleanArray> {
        let mask = self.range.mask(ids)?;
        let Some(traces) = self.traces else {
            return Ok(mask);
        };
        Ok(and(&mask, &listed(ids, traces))?)
    }
}

/// Which of `ids` are among `traces` (sorted). Rows of data files come sorted by trace id, so
/// the two lists are walked side by side; a row smaller than the one before (live spans) looks
/// its id up afresh.
fn listed(ids: &StringArray, traces: &[String]) -> BooleanArray {
    let (mut at, mut previous) = (0usize, None);
    ids.iter()
        .map(|id| {
            let Some(id) = id else { return Some(false) };
            if previous.is_none_or(|p| id < p) {
                at = traces.partition_point(|t| t.as_str() < id);
            }
            while traces.get(at).is_some_and(|t| t.as_str() < id) {
                at += 1;
            }
            previous = Some(id);
            Some(traces.get(at).is_some_and(|t| t == id))
        })
        .collect()
}

/// One page of trace ids: the smallest and largest id on it and how many rows it holds.
pub type IdPage = (Vec<u8>, Vec<u8>, u64);

/// The leaf index of the top-level `trace_id` column.
fn trace_id_leaf(metadata: &ParquetMetaData, file: &DataFile) -> Result<usize> {
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
    /// A reader of `file` over its cached footer (with page indexes).
    async fn builder(&self, file: &DataFile) -> Result<ParquetRecordBatchStreamBuilder<StoreReader>> {
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        Ok(ParquetRecordBatchStreamBuilder::new_with_options(self.reader(file), options).await?)
    }

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

    /// The rows of `file` with trace ids in `range` (and among `traces`, sorted, when given):
    /// `columns` of the `spans` schema (in that order), reading only the pages whose trace-id
    /// statistics admit such ids. Returns the batches and the compressed bytes of the column
    /// chunks read, in the share of their rows selected.
    pub async fn read_id_range(
        &self,
        file: &DataFile,
        range: &IdRange,
        traces: Option<&[String]>,
        columns: &[String],
    ) -> Result<(Vec<RecordBatch>, u64)> {
        let wanted = Wanted { range, traces };
        let builder = self.builder(file).await?;
        let metadata = builder.metadata().clone();
        let leaf = trace_id_leaf(&metadata, file)?;
        let (mut groups, mut selectors, mut fractions) = (Vec::new(), Vec::new(), Vec::new());
        for rg in 0..metadata.num_row_groups() {
            let pages = id_pages_of(&metadata, rg, leaf);
            if !pages.iter().any(|(_, _, min, max)| wanted.admits(min, max)) {
                continue;
            }
            groups.push(rg);
            let (mut chosen, mut all) = (0u64, 0u64);
            for (_, rows, min, max) in &pages {
                all += rows;
                let admitted = wanted.admits(min, max);
                chosen += if admitted { *rows } else { 0 };
                let rows = usize::try_from(*rows).unwrap_or_default();
                selectors.push(if admitted {
                    RowSelector::select(rows)
                } else {
                    RowSelector::skip(rows)
                });
            }
            fractions.push((rg, chosen as f64 / all.max(1) as f64));
        }
        if groups.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let schema = builder.parquet_schema();
        let roots: Vec<usize> = columns
            .iter()
            .map(String::as_str)
            .chain(["trace_id"])
            .filter_map(|c| schema.root_schema().get_fields().iter().position(|f| f.name() == c))
            .collect();
        // Bytes of the projected column chunks, in the share of their rows selected.
        let bytes: f64 = fractions
            .iter()
            .map(|&(rg, share)| {
                let group = metadata.row_group(rg);
                let chunks = (0..schema.num_columns()).filter(|&c| roots.contains(&schema.get_column_root_idx(c)));
                chunks.map(|c| group.column(c).compressed_size() as f64).sum::<f64>() * share
            })
            .sum();
        let projection = ProjectionMask::roots(schema, roots);
        let ids = ProjectionMask::leaves(schema, [leaf]);
        let mut builder = builder
            .with_projection(projection)
            .with_row_groups(groups)
            .with_row_selection(RowSelection::from(selectors))
            .with_batch_size(8192);
        if let Some(traces) = traces {
            // A few traces of each page: the other columns are decoded for their rows only.
            let (range, traces) = (range.clone(), traces.to_vec());
            let predicate = ArrowPredicateFn::new(ids, move |batch: RecordBatch| {
                let ids = cast(batch.column(0), &DataType::Utf8)?;
                let wanted = Wanted {
                    range: &range,
                    traces: Some(&traces),
                };
                wanted
                    .mask(ids.as_string::<i32>())
                    .map_err(|e| arrow::error::ArrowError::ExternalError(Box::new(e)))
            });
            builder = builder.with_row_filter(RowFilter::new(vec![Box::new(predicate)]));
        }
        let stream = builder.build()?;
        let batches: Vec<RecordBatch> = stream.try_collect().await?;
        // The pages read may hold ids on either side of the range.
        let mut kept = Vec::with_capacity(batches.len());
        for b in &batches {
            let ids = b
                .column_by_name("trace_id")
                .ok_or_else(|| Error::InvalidSpan("a range was read without trace_id".into()))?;
            let ids = cast(ids, &DataType::Utf8)?;
            let mask = wanted.mask(ids.as_string::<i32>())?;
            match mask.true_count() {
                0 => continue,
                n if n == b.num_rows() => kept.push(project_spans(b, columns, &file.date)?),
                _ => kept.push(project_spans(&filter_record_batch(b, &mask)?, columns, &file.date)?),
            }
        }
        let batches = kept;
        Ok((batches, bytes as u64))
    }
}

/// The rows of live `batches` (in the `spans` schema) with trace ids in `range` (and among
/// `traces`, sorted, when given), `columns` only.
pub(crate) fn live_id_range(
    batches: &[RecordBatch],
    range: &IdRange,
    traces: Option<&[String]>,
    columns: &[String],
) -> Result<Vec<RecordBatch>> {
    let wanted = Wanted { range, traces };
    let mut out = Vec::new();
    for b in batches {
        let Some(ids) = b.column_by_name("trace_id") else {
            continue;
        };
        let ids = cast(ids, &DataType::Utf8)?;
        let mask = wanted.mask(ids.as_string::<i32>())?;
        if mask.true_count() == 0 {
            continue;
        }
        let kept = filter_record_batch(b, &mask)?;
        out.push(project_spans(&kept, columns, "")?);
    }
    Ok(out)
}

/// `columns` of `batch`, typed as in the `spans` schema; the partition column is `date` when
/// the batch lacks it.
pub(crate) fn project_spans(batch: &RecordBatch, columns: &[String], date: &str) -> Result<RecordBatch> {
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
            Some(c) if c.data_type() == field.data_type() => c.clone(),
            Some(c) => cast(c, field.data_type())?,
            None if name == PARTITION_COLUMN => Arc::new(StringArray::from(vec![date; batch.num_rows()])),
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
