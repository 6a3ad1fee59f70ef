//! Live spans indexed by trace id, so that a search reads the rows of the traces it wants
//! instead of every live row.
//!
//! Each chunk of live spans gets a [`LiveSegment`] when it is appended: its rows in trace-id
//! order (as positions, the rows are not copied), each trace's first start and last end, and
//! the hashes of the string attribute values of each chunk (a search for a value skips the
//! segments and chunks that cannot hold it, as bloom filters do for data files).
//! Segments merge as chunks accumulate (the newest into the one before while it holds at
//! least as many rows), so a tenant has about log2 of its chunks of them and each row is
//! re-sorted a few times at most. A segment is to the live spans what the trace-id index and
//! the page index are to a data file: its trace list is a walk's source, and a read takes the
//! rows of a range or a list of traces alone.
//!
//! Live spans that come from elsewhere (a live-store) are indexed once per snapshot, on first
//! use ([`LiveSpans::segments`]).

use std::sync::{Arc, OnceLock};

use std::collections::BTreeSet;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBufferBuilder, MapArray, RecordBatch, StringArray, StructArray,
    UInt32Array,
};
use arrow::buffer::BooleanBuffer;
use arrow::compute::{and, concat_batches, filter, filter_record_batch, take_record_batch};
use arrow::datatypes::{DataType, Field, Fields, Schema};

use datafusion::common::hash_utils::{RandomState, create_hashes};

use crate::id_range::conform_batch;
use crate::id_range::{Read, Wanted};
use crate::map_filter::{self, MapFields, MapLookups};
use crate::table::ATTRIBUTE_STRING_LEAVES;
use crate::trace_index::{IdParser, TraceSpan, int_column, parse_trace_id, search_each, string_column, trace_id_hex};
use crate::{Error, Result};

/// Rows of a segment's batches, in trace-id order; each a batch and a row within it.
type RowRef = (u32, u32);

/// Live spans in trace-id order: batches, and for each trace (sorted) its rows among them.
#[derive(Debug)]
pub struct LiveSegment {
    batches: Vec<RecordBatch>,
    /// Each trace's id, first start and last end, sorted by id.
    traces: Arc<[TraceSpan]>,
    /// The rows of trace `i` are `rows[offsets[i]..offsets[i + 1]]`.
    offsets: Vec<u32>,
    rows: Vec<RowRef>,
    /// Per batch, per leaf of [`ATTRIBUTE_STRING_LEAVES`], the hashes of the distinct values
    /// it holds, sorted: a search for a string value skips the segments and the batches that
    /// cannot hold it.
    values: Vec<Arc<BatchValues>>,
    /// Per batch, whether its span attributes hold no double: then a condition on the integer
    /// value of a dedicated column's first key may read that column instead of the map.
    no_span_doubles: Vec<bool>,
}

/// Per leaf of [`ATTRIBUTE_STRING_LEAVES`], the sorted hashes of the distinct values a batch's
/// attribute maps hold there.
type BatchValues = [Vec<u64>; ATTRIBUTE_STRING_LEAVES.len()];

impl LiveSegment {
    /// The index of `batches` (`spans` batches). Rows whose trace id is not 32 hex digits
    /// (ingest refuses them) are left out.
    pub fn of(batches: Vec<RecordBatch>) -> Result<Self> {
        let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if u32::try_from(total).is_err() || u32::try_from(batches.len()).is_err() {
            return Err(Error::TooLarge(format!("{total} live rows to index at once")));
        }
        let mut keyed: Vec<(u128, RowRef, i64, i64)> = Vec::with_capacity(total);
        for (b, batch) in batches.iter().enumerate() {
            let ids = string_column(batch, "trace_id")?;
            let starts = int_column(batch, "start_time_unix_nano")?;
            let ends = int_column(batch, "end_time_unix_nano")?;
            let mut parser = IdParser::default();
            for row in 0..batch.num_rows() {
                if ids.is_null(row) {
                    continue;
                }
                if let Some(trace) = parser.parse(ids.value(row)) {
                    keyed.push((trace, (b as u32, row as u32), starts.value(row), ends.value(row)));
                }
            }
        }
        // Stable by id: a trace's rows keep their order of arrival.
        keyed.sort_by_key(|k| k.0);
        let values = (batches.iter())
            .map(|b| value_hashes(b).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        let no_span_doubles = batches.iter().map(no_span_doubles).collect();
        let mut segment = Self {
            batches,
            traces: Arc::from(Vec::new()),
            offsets: vec![0],
            rows: Vec::with_capacity(keyed.len()),
            values,
            no_span_doubles,
        };
        let mut traces: Vec<TraceSpan> = Vec::new();
        for (trace, row, start, end) in keyed {
            match traces.last_mut() {
                Some(t) if t.0 == trace => *t = (trace, t.1.min(start), t.2.max(end)),
                _ => {
                    if !traces.is_empty() {
                        segment.offsets.push(segment.rows.len() as u32);
                    }
                    traces.push((trace, start, end));
                }
            }
            segment.rows.push(row);
        }
        if !traces.is_empty() {
            segment.offsets.push(segment.rows.len() as u32);
        }
        segment.traces = traces.into();
        segment.check();
        Ok(segment)
    }

    /// This segment and `newer` in one: a trace in both has its rows here first.
    pub fn merge(&self, newer: &Self) -> Self {
        let shift = self.batches.len() as u32;
        let mut batches = self.batches.clone();
        batches.extend(newer.batches.iter().cloned());
        let mut traces: Vec<TraceSpan> = Vec::with_capacity(self.traces.len() + newer.traces.len());
        let mut offsets = Vec::with_capacity(self.offsets.len() + newer.offsets.len());
        let mut rows = Vec::with_capacity(self.rows.len() + newer.rows.len());
        offsets.push(0);
        let (mut i, mut j) = (0, 0);
        while i < self.traces.len() || j < newer.traces.len() {
            let (a, b) = (self.traces.get(i), newer.traces.get(j));
            let take_a = b.is_none_or(|b| a.is_some_and(|a| a.0 <= b.0));
            let take_b = a.is_none_or(|a| b.is_some_and(|b| b.0 <= a.0));
            let mut trace: Option<TraceSpan> = None;
            if take_a {
                trace = self.traces.get(i).copied();
                rows.extend_from_slice(self.rows_of(i));
                i += 1;
            }
            if take_b {
                let (id, start, end) = newer.traces[j];
                trace = Some(trace.map_or((id, start, end), |t| (id, t.1.min(start), t.2.max(end))));
                rows.extend(newer.rows_of(j).iter().map(|&(b, r)| (b + shift, r)));
                j += 1;
            }
            traces.extend(trace);
            offsets.push(rows.len() as u32);
        }
        let mut values = self.values.clone();
        values.extend(newer.values.iter().cloned());
        let mut no_span_doubles = self.no_span_doubles.clone();
        no_span_doubles.extend(&newer.no_span_doubles);
        let merged = Self {
            batches,
            traces: traces.into(),
            offsets,
            rows,
            values,
            no_span_doubles,
        };
        merged.check();
        merged
    }

    /// Per batch, whether one of its spans may hold each of `needed`: a value in one of its
    /// leaves (of [`ATTRIBUTE_STRING_LEAVES`]; other leaves may hold anything).
    pub fn batches_holding(&self, needed: &[(Vec<&str>, String)]) -> Vec<bool> {
        let lookups: Vec<(Vec<Option<usize>>, Option<u64>)> = (needed.iter())
            .map(|(leaves, value)| {
                let at = leaves
                    .iter()
                    .map(|l| ATTRIBUTE_STRING_LEAVES.iter().position(|a| a == l));
                let hash = hash_values(&StringArray::from(vec![value.as_str()])).ok();
                (at.collect(), hash.map(|h| h[0]))
            })
            .collect();
        let holds = |values: &BatchValues, (leaves, hash): &(Vec<Option<usize>>, Option<u64>)| {
            leaves.iter().any(|leaf| match (leaf, hash) {
                (Some(at), Some(hash)) => values[*at].binary_search(hash).is_ok(),
                _ => true,
            })
        };
        (self.values.iter())
            .map(|values| lookups.iter().all(|l| holds(values, l)))
            .collect()
    }

    /// The traces (sorted) with rows in the batches `chosen` marks.
    pub fn traces_in(&self, chosen: &[bool]) -> Vec<u128> {
        debug_assert_eq!(chosen.len(), self.batches.len());
        (0..self.traces.len())
            .filter(|&t| self.rows_of(t).iter().any(|&(b, _)| chosen[b as usize]))
            .map(|t| self.traces[t].0)
            .collect()
    }

    /// The bytes of the index itself (its batches are counted as live spans).
    pub fn index_bytes(&self) -> usize {
        let values: usize = (self.values.iter())
            .map(|v| v.iter().map(|h| h.capacity() * size_of::<u64>()).sum::<usize>())
            .sum();
        self.rows.capacity() * size_of::<RowRef>()
            + self.traces.len() * size_of::<TraceSpan>()
            + self.offsets.capacity() * size_of::<u32>()
            + values
            + self.no_span_doubles.capacity()
    }

    /// Rows indexed.
    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Each trace's id, first start and last end, sorted by id.
    pub fn traces(&self) -> &Arc<[TraceSpan]> {
        &self.traces
    }

    /// The batches indexed.
    pub fn batches(&self) -> &[RecordBatch] {
        &self.batches
    }

    fn rows_of(&self, trace: usize) -> &[RowRef] {
        &self.rows[self.offsets[trace] as usize..self.offsets[trace + 1] as usize]
    }

    /// Per batch, its rows among `rows` (in a bitmap over the batch's rows), `None` for a
    /// batch with none of them.
    fn marked<'a>(&self, rows: impl Iterator<Item = &'a RowRef>) -> Vec<Option<BooleanBuffer>> {
        let mut marks: Vec<Option<BooleanBufferBuilder>> = (0..self.batches.len()).map(|_| None).collect();
        for &(b, r) in rows {
            let mark = marks[b as usize].get_or_insert_with(|| {
                let mut mark = BooleanBufferBuilder::new(self.batches[b as usize].num_rows());
                mark.append_n(self.batches[b as usize].num_rows(), false);
                mark
            });
            mark.set_bit(r as usize, true);
        }
        marks.into_iter().map(|m| m.map(|mut m| m.finish())).collect()
    }

    fn check(&self) {
        debug_assert_eq!(self.offsets.len(), self.traces.len() + 1);
        debug_assert_eq!(self.offsets.last().copied(), Some(self.rows.len() as u32));
        debug_assert!(
            self.traces.windows(2).all(|w| w[0].0 < w[1].0),
            "traces sorted, once each"
        );
    }

    /// The traces of `wanted` that are here, by position in [`Self::traces`].
    fn chosen(&self, wanted: &Wanted<'_>) -> Result<Vec<usize>> {
        let bound = |hex: &Option<String>| -> Result<Option<u128>> {
            hex.as_deref()
                .map(|h| parse_trace_id(h).ok_or_else(|| Error::InvalidSpan(format!("trace id bound {h:?}"))))
                .transpose()
        };
        let (low, high) = (bound(&wanted.range.low)?, bound(&wanted.range.high)?);
        let from = low.map_or(0, |l| self.traces.partition_point(|t| t.0 < l));
        let to = high.map_or(self.traces.len(), |h| self.traces.partition_point(|t| t.0 < h));
        let Some(listed) = wanted.traces else {
            return Ok((from..to.max(from)).collect());
        };
        let mut chosen = Vec::with_capacity(listed.len().min(to.saturating_sub(from)));
        let mut at = from;
        for hex in listed {
            let trace = parse_trace_id(hex).ok_or_else(|| Error::InvalidSpan(format!("trace id {hex:?}")))?;
            at += self.traces[at..to.max(at)].partition_point(|t| t.0 < trace);
            if at < to && self.traces[at].0 == trace {
                chosen.push(at);
                at += 1;
            }
        }
        Ok(chosen)
    }

    /// The rows `wanted` (its range, its listed traces and its condition), `columns` only.
    pub fn read(&self, wanted: Wanted<'_>, columns: &[String], narrowed: Option<&MapFields>) -> Result<Read> {
        let chosen = self.chosen(&wanted)?;
        let marked = self.marked(chosen.iter().flat_map(|&t| self.rows_of(t)));
        let mut read = Read::default();
        // A weaker condition where a dedicated column may stand for a map's value: rows that
        // pass are checked again whole, as for data files.
        let dedicated = (wanted.condition).and_then(|c| map_filter::on_dedicated_columns(c, || true));
        let condition = wanted.condition.map(MapLookups::new);
        let on_dedicated = dedicated.as_ref().map(MapLookups::new);
        let mut kept = Vec::new();
        for (b, (batch, rows)) in self.batches.iter().zip(marked).enumerate() {
            let Some(rows) = rows else {
                continue;
            };
            read.scanned += rows.count_set_bits() as u64;
            let condition = match self.no_span_doubles[b] {
                true => on_dedicated.as_ref().or(condition.as_ref()),
                false => condition.as_ref(),
            };
            kept.extend(rows_of_batch(batch, rows, condition, columns, narrowed)?);
        }
        let Some(first) = kept.first() else {
            return Ok(read);
        };
        // One batch: the rows of many small chunks are evaluated together.
        read.batches.push(concat_batches(&first.schema(), &kept)?);
        Ok(read)
    }
}

/// Of `batch`, `columns` of the rows `marked` that pass `condition`; of the maps `narrowed`
/// names, the keys and the value fields it lists (the other fields null, as a file read
/// leaves them). When the rows are most of the batch, the condition is evaluated over the
/// batch as it is; otherwise the columns it reads are taken out first, and the others only
/// for the rows that pass.
fn rows_of_batch(
    batch: &RecordBatch,
    marked: BooleanBuffer,
    condition: Option<&MapLookups>,
    columns: &[String],
    narrowed: Option<&MapFields>,
) -> Result<Option<RecordBatch>> {
    debug_assert_eq!(marked.len(), batch.num_rows());
    let full = project_named(batch, columns)?;
    let out = match narrowed {
        Some(fields) => narrow_maps(&full, fields)?,
        None => full.clone(),
    };
    let picked = if marked.count_set_bits() * WHOLE_BATCH_SHARE >= batch.num_rows() {
        let mut mask = BooleanArray::new(marked, None);
        if let Some(condition) = condition {
            mask = and(&mask, &condition.passes(&project_named(batch, condition.columns())?)?)?;
        }
        match mask.true_count() {
            0 => return Ok(None),
            n if n == batch.num_rows() => out,
            _ => filter_record_batch(&out, &mask)?,
        }
    } else {
        let mut rows: UInt32Array = marked.set_indices().map(|r| r as u32).collect();
        if let Some(condition) = condition {
            let read = take_record_batch(&project_named(batch, condition.columns())?, &rows)?;
            rows = filter(&rows, &condition.passes(&read)?)?.as_primitive().clone();
        }
        if rows.is_empty() {
            return Ok(None);
        }
        take_record_batch(&out, &rows)?
    };
    match narrowed {
        Some(_) => Ok(Some(conform_batch(&picked, full.schema())?)),
        None => Ok(Some(picked)),
    }
}

/// `batch` with each map `fields` names cut down to its keys and the value fields listed: a
/// take or a filter of it copies those leaves only.
fn narrow_maps(batch: &RecordBatch, fields: &MapFields) -> Result<RecordBatch> {
    let mut columns = batch.columns().to_vec();
    let mut schema_fields: Vec<Arc<Field>> = batch.schema().fields().iter().cloned().collect();
    for (i, field) in batch.schema().fields().iter().enumerate() {
        let (Some(wanted), Some(map)) = (fields.get(field.name()), columns[i].as_map_opt()) else {
            continue;
        };
        let narrowed = narrow_map(map, wanted)?;
        schema_fields[i] = Arc::new(field.as_ref().clone().with_data_type(narrowed.data_type().clone()));
        columns[i] = narrowed;
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(schema_fields)), columns)?)
}

/// `map` with its keys and the value fields named in `wanted` only.
fn narrow_map(map: &MapArray, wanted: &BTreeSet<String>) -> Result<ArrayRef> {
    let entries = map.entries();
    let (Some(key), Some(value)) = (
        entries.column_by_name("key"),
        entries.column_by_name("value").and_then(|v| v.as_struct_opt()),
    ) else {
        return Err(Error::InvalidSpan("an attribute map without keys or values".into()));
    };
    let (value_fields, value_columns): (Vec<_>, Vec<_>) = (value.fields().iter().zip(value.columns()))
        .filter(|(f, _)| wanted.contains(f.name()))
        .map(|(f, c)| (f.clone(), c.clone()))
        .unzip();
    let value =
        StructArray::try_new_with_length(value_fields.into(), value_columns, value.nulls().cloned(), value.len())?;
    let entry_fields = Fields::from(vec![
        Field::new("key", key.data_type().clone(), false),
        Field::new("value", value.data_type().clone(), true),
    ]);
    let entries = StructArray::try_new(
        entry_fields,
        vec![key.clone(), Arc::new(value)],
        entries.nulls().cloned(),
    )?;
    let DataType::Map(entries_field, sorted) = map.data_type() else {
        return Err(Error::InvalidSpan("an attribute map that is not a map".into()));
    };
    let entries_field = Arc::new(
        entries_field
            .as_ref()
            .clone()
            .with_data_type(entries.data_type().clone()),
    );
    Ok(Arc::new(MapArray::try_new(
        entries_field,
        map.offsets().clone(),
        entries,
        map.nulls().cloned(),
        *sorted,
    )?))
}

/// Rows of a batch are taken out before they are evaluated when they are under one in this
/// many of its rows; otherwise the batch is evaluated whole.
const WHOLE_BATCH_SHARE: usize = 4;

/// The values `batch`'s attribute maps hold ([`BatchValues`]).
fn value_hashes(batch: &RecordBatch) -> Result<BatchValues> {
    let mut out: BatchValues = Default::default();
    for (leaf, hashes) in ATTRIBUTE_STRING_LEAVES.iter().zip(&mut out) {
        let map_column = leaf.split('.').next().unwrap_or(leaf);
        let Some(map) = batch.column_by_name(map_column).and_then(|c| c.as_map_opt()) else {
            continue;
        };
        // The entries of this batch's rows only (a slice's map shares the rest).
        let offsets = map.value_offsets();
        let (from, to) = (offsets[0] as usize, offsets[map.len()] as usize);
        let values = (map.entries().column_by_name("value"))
            .and_then(|v| v.as_struct_opt())
            .and_then(|v| v.column_by_name("str"))
            .and_then(|v| v.as_string_opt::<i32>())
            .ok_or_else(|| Error::InvalidSpan(format!("{map_column} without string values")))?
            .slice(from, to - from);
        let all = hash_values(&values)?;
        hashes.extend((0..values.len()).filter(|&i| values.is_valid(i)).map(|i| all[i]));
        // The strings of array values too: a search for `attr = "v"` matches an array with `v`.
        let arrays = (map.entries().column_by_name("value"))
            .and_then(|v| v.as_struct_opt())
            .and_then(|v| v.column_by_name("array"))
            .and_then(|v| v.as_string_opt::<i32>())
            .map(|a| a.slice(from, to - from));
        if let Some(arrays) = arrays.filter(|a| a.null_count() < a.len()) {
            let elements = array_strings(&arrays);
            hashes.extend(hash_values(&elements)?);
        }
        hashes.sort_unstable();
        hashes.dedup();
        hashes.shrink_to_fit();
    }
    Ok(out)
}

/// The string elements of JSON array values (`["a","b"]`).
fn array_strings(arrays: &StringArray) -> StringArray {
    let mut out = Vec::new();
    for text in arrays.iter().flatten() {
        if let Ok(serde_json::Value::Array(items)) = serde_json::from_str::<serde_json::Value>(text) {
            out.extend(items.into_iter().filter_map(|i| match i {
                serde_json::Value::String(s) => Some(s),
                _ => None,
            }));
        }
    }
    StringArray::from(out)
}

/// Whether the span attributes of `batch` hold no double and no array value.
fn no_span_doubles(batch: &RecordBatch) -> bool {
    let Some(map) = batch.column_by_name("span_attributes").and_then(|c| c.as_map_opt()) else {
        return false;
    };
    let offsets = map.value_offsets();
    let (from, to) = (offsets[0] as usize, offsets[map.len()] as usize);
    let values = map.entries().column_by_name("value").and_then(|v| v.as_struct_opt());
    ["double", "array"].iter().all(|field| {
        let leaf = values.and_then(|v| v.column_by_name(field));
        leaf.is_some_and(|d| d.slice(from, to - from).null_count() == to - from)
    })
}

/// The hash of each of `values`, the same for the same text wherever it is.
fn hash_values(values: &StringArray) -> Result<Vec<u64>> {
    let mut hashes = vec![0; values.len()];
    create_hashes([values as &dyn Array], &RandomState::with_seed(0), &mut hashes)?;
    Ok(hashes)
}

/// `columns` of `batch`, by name.
fn project_named(batch: &RecordBatch, columns: &[String]) -> Result<RecordBatch> {
    let schema = batch.schema();
    let indices = columns
        .iter()
        .map(|c| schema.index_of(c))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(batch.project(&indices)?)
}

/// A tenant's live segments, oldest first, merged as they come: the newest merges into the one
/// before while that one holds no more rows than it (a binary counter: about log2 of the
/// chunks are left, and each row is merged about that many times).
pub(crate) fn push_segment(segments: &mut Vec<Arc<LiveSegment>>, segment: LiveSegment) {
    let mut newest = segment;
    while let Some(before) = segments.last()
        && before.rows() <= newest.rows()
    {
        let before = segments.pop().expect("a segment before");
        newest = before.merge(&newest);
    }
    segments.push(Arc::new(newest));
}

/// The live spans of a snapshot: batches, and their segments (given, or built once on
/// first use and shared by the snapshot's copies).
#[derive(Debug, Clone, Default)]
pub struct LiveSpans {
    batches: Vec<RecordBatch>,
    segments: Arc<OnceLock<Arc<[Arc<LiveSegment>]>>>,
}

impl LiveSpans {
    /// Live `batches`, indexed on first use.
    pub fn new(batches: Vec<RecordBatch>) -> Self {
        Self {
            batches,
            segments: Arc::default(),
        }
    }

    /// Live `batches` and `segments` that index exactly them.
    pub(crate) fn indexed(batches: Vec<RecordBatch>, segments: Vec<Arc<LiveSegment>>) -> Self {
        debug_assert_eq!(
            segments.iter().map(|s| s.batches.len()).sum::<usize>(),
            batches.len(),
            "segments index the batches"
        );
        Self {
            batches,
            segments: Arc::new(OnceLock::from(Arc::from(segments))),
        }
    }

    /// The same live batches, of whose segments only `segments` are walked.
    pub(crate) fn with_segments(&self, segments: Vec<Arc<LiveSegment>>) -> Self {
        Self {
            batches: self.batches.clone(),
            segments: Arc::new(OnceLock::from(Arc::from(segments))),
        }
    }

    /// The live batches.
    pub fn batches(&self) -> &[RecordBatch] {
        &self.batches
    }

    /// The segments indexing the batches, oldest first.
    pub fn segments(&self) -> Result<Arc<[Arc<LiveSegment>]>> {
        if let Some(segments) = self.segments.get() {
            return Ok(segments.clone());
        }
        let segments: Arc<[Arc<LiveSegment>]> = match self.batches.is_empty() {
            true => Arc::from(Vec::new()),
            false => Arc::from(vec![Arc::new(LiveSegment::of(self.batches.clone())?)]),
        };
        Ok(self.segments.get_or_init(|| segments).clone())
    }
}

/// The rows of every live segment that are `wanted`, `columns` only (maps `narrowed`).
pub(crate) fn read_segments(
    segments: &[Arc<LiveSegment>],
    wanted: Wanted<'_>,
    columns: &[String],
    narrowed: Option<&MapFields>,
) -> Result<Read> {
    let mut read = Read::default();
    for segment in segments {
        read.extend(segment.read(wanted, columns, narrowed)?);
    }
    Ok(read)
}

/// Of `traces` (sorted), those `segment` holds, in stored spelling.
pub(crate) fn held(segment: &LiveSegment, traces: &[u128]) -> Vec<String> {
    let found = search_each(traces.iter().copied(), &segment.traces, |t| t.0);
    found.into_iter().map(trace_id_hex).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id_range::IdRange;
    use arrow::array::{ArrayRef, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};

    fn batch(rows: &[(u128, i64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("trace_id", DataType::Utf8, false),
            Field::new("start_time_unix_nano", DataType::Int64, false),
            Field::new("end_time_unix_nano", DataType::Int64, false),
        ]));
        let ids: ArrayRef = Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| crate::trace_index::trace_id_hex(r.0)),
        ));
        let starts: ArrayRef = Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1)));
        let ends: ArrayRef = Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1 + 10)));
        RecordBatch::try_new(schema, vec![ids, starts, ends]).unwrap()
    }

    fn rows_by_trace(segment: &LiveSegment) -> Vec<(u128, Vec<RowRef>)> {
        (0..segment.traces.len())
            .map(|i| (segment.traces[i].0, segment.rows_of(i).to_vec()))
            .collect()
    }

    #[test]
    fn a_segment_lists_each_trace_once_with_its_rows_in_order() {
        let s = LiveSegment::of(vec![batch(&[(7, 5), (3, 1), (7, 2)])]).unwrap();
        assert_eq!(&s.traces[..], &[(3, 1, 11), (7, 2, 15)]);
        assert_eq!(rows_by_trace(&s), vec![(3, vec![(0, 1)]), (7, vec![(0, 0), (0, 2)])]);
    }

    #[test]
    fn merged_segments_keep_older_rows_first() {
        let a = LiveSegment::of(vec![batch(&[(7, 5), (3, 1)])]).unwrap();
        let b = LiveSegment::of(vec![batch(&[(9, 0), (7, 1)])]).unwrap();
        let m = a.merge(&b);
        assert_eq!(&m.traces[..], &[(3, 1, 11), (7, 1, 15), (9, 0, 10)]);
        assert_eq!(
            rows_by_trace(&m),
            vec![(3, vec![(0, 1)]), (7, vec![(0, 0), (1, 1)]), (9, vec![(1, 0)])]
        );
        let whole = LiveSegment::of(vec![a.batches[0].clone(), b.batches[0].clone()]).unwrap();
        assert_eq!(rows_by_trace(&whole), rows_by_trace(&m), "merged as if built at once");
    }

    #[test]
    fn segments_merge_like_a_binary_counter() {
        let mut segments = Vec::new();
        for i in 0..11u128 {
            push_segment(&mut segments, LiveSegment::of(vec![batch(&[(i + 1, 0)])]).unwrap());
        }
        let sizes: Vec<usize> = segments.iter().map(|s| s.rows()).collect();
        assert_eq!(sizes, vec![8, 2, 1], "11 = 8 + 2 + 1");
        let traces: Vec<u128> = segments.iter().flat_map(|s| s.traces.iter().map(|t| t.0)).collect();
        assert_eq!(traces.len(), 11);
    }

    #[test]
    fn reads_take_the_rows_of_the_range_and_the_listed_traces() {
        let s = LiveSegment::of(vec![batch(&[(1, 0), (2, 0), (3, 0), (2, 1)]), batch(&[(4, 0)])]).unwrap();
        let columns = vec!["trace_id".to_string(), "start_time_unix_nano".to_string()];
        let ids = |read: Read| -> Vec<(u128, i64)> {
            let mut out = Vec::new();
            for b in &read.batches {
                let ids = b.column(0).as_string::<i32>();
                let starts = b.column(1).as_primitive::<Int64Type>();
                for i in 0..b.num_rows() {
                    out.push((parse_trace_id(ids.value(i)).unwrap(), starts.value(i)));
                }
            }
            out.sort_unstable();
            out
        };
        let range = IdRange::spanning(2, 3);
        let all = |range| Wanted {
            range,
            traces: None,
            condition: None,
        };
        assert_eq!(
            ids(s.read(all(&range), &columns, None).unwrap()),
            vec![(2, 0), (2, 1), (3, 0)]
        );
        let listed: Vec<String> = [2u128, 4, 5].map(crate::trace_index::trace_id_hex).to_vec();
        let everything = IdRange::default();
        let wanted = Wanted {
            range: &everything,
            traces: Some(&listed),
            condition: None,
        };
        let read = s.read(wanted, &columns, None).unwrap();
        assert_eq!(read.scanned, 3);
        assert_eq!(ids(read), vec![(2, 0), (2, 1), (4, 0)]);
        assert_eq!(
            held(&s, &[0, 2, 4, 9]),
            [2u128, 4].map(crate::trace_index::trace_id_hex).to_vec()
        );
    }

    #[test]
    fn segments_know_the_string_values_their_maps_hold() {
        use crate::span::{AttrValue, ScopeRecord, SpanBatchBuilder, SpanRecord};
        let spans = |user: &'static str, service: &'static str| {
            let scope = ScopeRecord {
                resource_attributes: vec![("service.name", AttrValue::Str(service))],
                ..ScopeRecord::default()
            };
            let attributes = vec![("user.id", AttrValue::Str(user)), ("n", AttrValue::Int(7))];
            let span = SpanRecord::for_test(&[1; 16], &[2; 8], attributes);
            let mut builder = SpanBatchBuilder::new();
            builder.append(&scope, &span);
            builder.append(&scope, &span);
            // The second row alone: a slice shares its map's entries with the first.
            builder.finish().unwrap().slice(1, 1)
        };
        let [span, resource] = ATTRIBUTE_STRING_LEAVES;
        let needs = |leaves: &[&'static str], value: &str| vec![(leaves.to_vec(), value.to_string())];
        let a = LiveSegment::of(vec![spans("u1", "checkout")]).unwrap();
        assert_eq!(a.batches_holding(&needs(&[span], "u1")), [true]);
        assert_eq!(
            a.batches_holding(&needs(&[span], "checkout")),
            [false],
            "a resource value is not a span's"
        );
        assert_eq!(a.batches_holding(&needs(&[span, resource], "checkout")), [true]);
        assert_eq!(a.batches_holding(&needs(&[span, resource], "u2")), [false]);
        assert_eq!(
            a.batches_holding(&needs(&["events.name"], "x")),
            [true],
            "an unknown leaf may hold anything"
        );
        let b = LiveSegment::of(vec![spans("u2", "checkout")]).unwrap();
        let merged = a.merge(&b);
        assert_eq!(merged.batches_holding(&needs(&[span], "u2")), [false, true]);
        let mut both = needs(&[span], "u2");
        both.extend(needs(&[resource], "checkout"));
        assert_eq!(merged.batches_holding(&both), [false, true], "every value needed");
        assert_eq!(merged.values[0][1].len(), 1, "one distinct resource value");
        assert_eq!(
            merged.traces_in(&[false, true]),
            vec![0x0101_0101_0101_0101_0101_0101_0101_0101]
        );
        assert!(merged.traces_in(&[false, false]).is_empty());
        assert_eq!(merged.no_span_doubles, [true, true], "integers, no doubles");
    }
}
