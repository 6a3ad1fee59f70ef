//! Tempo-style TraceQL search: traces that match a query, with Tempo's result shape (at most
//! `limit` traces, `spss` spans per spanset, each span with the attributes the query read or
//! `select()`ed, per trace the span and error counts of each service), newest first.
//!
//! Which traces: as in Tempo, the first `limit` found, unless the query says
//! `with(most_recent=true)`, which asks for the `limit` most recent ones.
//!
//! How: traces are walked with the trace-id index ([`walk`]): first found takes each live
//! segment's traces (the live spans indexed by trace id), then each data file's in trace-id
//! order, newest first; most recent takes them newest first and stops when no trace left can
//! beat its `limit`th hit. Either way traces are
//! read whole (of each file that holds them, only their pages and the columns the query needs),
//! a chunk at a time, first through a candidate step over cheap columns when the query has one,
//! so the plan ([`prepared`], planned once per query and reused) run over a chunk alone gives
//! its traces exactly the answer of the whole table, and their service stats come from the
//! same rows. When the index does not cover the snapshot (a flush in between) or a most-recent
//! walk finds matches rare, the search reads one range of trace ids at a time instead
//! ([`ranges`]: small first, then growing), of every data file only the pages of that range,
//! plus the live spans of the same range, all from one snapshot. Bloom filters take out of a
//! walk the files and row groups that cannot hold a value the query needs, and value hashes
//! the live segments and chunks ([`prune`]).

mod candidates;
mod hits;
mod prepared;
mod prune;
mod ranges;
mod walk;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::compute::kernels::cmp::{gt_eq, lt_eq};
use arrow::compute::{and, filter_record_batch};
use arrow::datatypes::Int64Type;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use tracehouse_traceql::ast::{BinOp, CmpOp, FieldExpr, Intrinsic, Query, Root, SpansetExpr, Stage, Static};
use tracehouse_traceql::compile;
use tracehouse_traceql::label::LabelValue;
use tracehouse_warehouse::Warehouse;
use tracehouse_warehouse::id_range::{IdRange, Read, Wanted};
use tracehouse_warehouse::provider::SnapshotSpans;

pub use prepared::{SEARCH_PLANS_ENTRIES, SearchPlans};

use crate::Result;
use crate::traceql::to_df;

/// Longest search result accepted: traces per search (Tempo's default `max_result_limit`), and
/// spans per spanset (what `spss=0`, every span, is held to).
pub const MAX_SEARCH_LIMIT: usize = 256 * 1024;
pub const MAX_SPSS: usize = 10_000;

/// What a search looked at, as Tempo reports it in `SearchMetrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SearchMetrics {
    /// Traces the search evaluated and returned.
    pub inspected_traces: u64,
    /// Span rows the scans returned after pruning.
    pub inspected_spans: u64,
    /// Bytes read from data files.
    pub inspected_bytes: u64,
    /// Data files of the snapshot, and their bytes.
    pub total_blocks: u64,
    pub total_block_bytes: u64,
    /// Trace-id ranges done (those left when `limit` is reached count as done), of all.
    pub completed_jobs: u32,
    pub total_jobs: u32,
}

/// A search's hits (newest trace first) and what it looked at.
#[derive(Debug, Clone, Default)]
pub struct SearchOutcome {
    pub hits: Vec<TraceHit>,
    pub metrics: SearchMetrics,
}

/// Called with the hits and metrics so far after each trace-id range but the last.
pub type Progress<'a> = &'a mut (dyn FnMut(&SearchOutcome) + Send);

/// `true` when the query carries Tempo's `with(most_recent=true)`.
pub fn wants_most_recent(query: &Query) -> bool {
    query
        .hints
        .iter()
        .any(|h| h.name == "most_recent" && h.value == Static::Bool(true))
}

/// Runs `request` over `tenant`'s spans in `warehouse`, planning in `ctx` (or taking the plan
/// from `plans`).
pub async fn search(
    ctx: &SessionContext,
    plans: &SearchPlans,
    warehouse: &Warehouse,
    tenant: &str,
    request: &SearchRequest,
    progress: Progress<'_>,
) -> Result<SearchOutcome> {
    if request.limit == 0 || request.limit > MAX_SEARCH_LIMIT || request.spss == 0 || request.spss > MAX_SPSS {
        return Err(
            DataFusionError::Plan(format!("limit must be 1..={MAX_SEARCH_LIMIT} and spss 1..={MAX_SPSS}")).into(),
        );
    }
    let query = compile(&request.query).map_err(to_df)?;
    let (table, live) = warehouse.snapshot(tenant).await?;
    let snapshot = SnapshotSpans::new(table, live);
    let files = snapshot.all_files()?;
    let mut found = SearchOutcome::default();
    found.metrics.total_blocks = files.len() as u64;
    found.metrics.total_block_bytes = files.iter().map(|f| f.size).sum();
    let pruned = prune::prune(warehouse, tenant, &query, snapshot, &files).await?;
    let prepared = plans.get(ctx, tenant, &request.query, &query, request.spss).await?;
    let search = Search {
        ctx,
        warehouse,
        tenant,
        request,
        shown: hits::Shown::of(&query),
        prepared,
        snapshot: pruned.read,
        walked: pruned.walk,
        may_hold: pruned.may_hold,
        candidates: AtomicBool::new(true),
    };
    let most_recent = wants_most_recent(&query);
    let mut walked = found.clone();
    let done = match most_recent {
        true => search.newest(&mut walked, progress).await?,
        false => search.first_found(&mut walked, progress).await?,
    };
    if done.is_some() {
        return Ok(walked);
    }
    let ranges: Vec<IdRange> = search.ranges().await?;
    found.metrics.total_jobs = u32::try_from(ranges.len()).unwrap_or(u32::MAX);
    for range in &ranges {
        let mut hits = search.hits(range, &mut found.metrics).await?;
        found.metrics.completed_jobs += 1;
        if !most_recent {
            // First found: the range's most recent traces fill what is missing.
            hits.truncate(request.limit - found.hits.len());
        }
        if !hits.is_empty() {
            found.hits.extend(hits);
            sort_newest_first(&mut found.hits);
            found.hits.truncate(request.limit);
        }
        if found.hits.len() >= request.limit && !most_recent {
            // The ranges left cannot change the answer: they are done.
            found.metrics.completed_jobs = found.metrics.total_jobs;
            break;
        }
        if found.metrics.completed_jobs < found.metrics.total_jobs {
            progress(&found);
        }
    }
    Ok(found)
}

fn sort_newest_first(hits: &mut [TraceHit]) {
    hits.sort_by(|a, b| {
        b.start_unix_nano
            .cmp(&a.start_unix_nano)
            .then_with(|| a.trace_id.cmp(&b.trace_id))
    });
}

/// Rows a range may hold at most when read: far more than it was cut for (a single trace of
/// that many spans is refused).
const MAX_RANGE_ROWS: u64 = 8 * ranges::MAX_RANGE_SPANS;

/// A search stops using the candidate step once a range has a candidate trace per this many
/// spans read (about one trace in ten): the whole rows of most pages are read anyway.
const DENSE_CANDIDATE_SPANS: usize = 256;

/// Live rows counted as one in the histogram of trace ids (a sample), at least; and the
/// samples taken at most (a larger live buffer is sampled more sparsely).
const LIVE_SAMPLE_ROWS: usize = 64;
const MAX_LIVE_SAMPLES: usize = 4_096;

/// One search request over one tenant's snapshot.
struct Search<'a> {
    ctx: &'a SessionContext,
    warehouse: &'a Warehouse,
    tenant: &'a str,
    request: &'a SearchRequest,
    /// What the query shows with each span.
    shown: hits::Shown,
    prepared: Arc<prepared::Prepared>,
    snapshot: SnapshotSpans,
    /// The same snapshot with only the data files that may hold a match: those a walk takes
    /// traces from.
    walked: SnapshotSpans,
    /// Of those files, the trace ids a match may have.
    may_hold: prune::MayHold,
    /// Whether ranges start with the candidate step: until one finds candidates dense.
    candidates: AtomicBool,
}

impl Search<'_> {
    /// The trace-id ranges to search in turn, cut from the snapshot's pages and a sample of
    /// its live spans.
    async fn ranges(&self) -> Result<Vec<IdRange>> {
        let mut pages: Vec<ranges::Page> = self
            .warehouse
            .id_pages(self.tenant, &self.snapshot)
            .await?
            .into_iter()
            .map(|(min, max, rows)| ranges::Page {
                min: ranges::position(&min),
                max: ranges::position(&max),
                rows: rows as f64,
            })
            .collect();
        let live: usize = self.snapshot.live().iter().map(RecordBatch::num_rows).sum();
        let step = LIVE_SAMPLE_ROWS.max(live.div_ceil(MAX_LIVE_SAMPLES));
        for b in self.snapshot.live() {
            let Some(ids) = b.column_by_name("trace_id").and_then(|c| c.as_string_opt::<i32>()) else {
                continue;
            };
            for i in (0..ids.len()).step_by(step) {
                let at = ranges::position(ids.value(i).as_bytes());
                pages.push(ranges::Page {
                    min: at,
                    max: at,
                    rows: step as f64,
                });
            }
        }
        Ok(ranges::Ranges::new(pages).collect())
    }

    /// The hits with trace ids in `range`, newest first, with their service stats. With
    /// a candidate step, the range is first read with its columns only, and then whole only
    /// for the traces that pass it.
    async fn hits(&self, range: &IdRange, metrics: &mut SearchMetrics) -> Result<Vec<TraceHit>> {
        let candidates = self
            .prepared
            .candidates
            .as_ref()
            .filter(|_| self.candidates.load(Relaxed));
        let traces = match candidates {
            Some(step) => {
                let ids = self.candidate_traces(step, range, metrics).await?;
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                Some(ids)
            }
            None => None,
        };
        let wanted = Wanted {
            range,
            traces: traces.as_deref(),
            condition: None,
        };
        // With a candidate step, its read counted the range's spans.
        let whole = self
            .read(wanted, self.prepared.whole(), traces.is_none(), metrics)
            .await?;
        self.evaluate(&whole.batches, metrics).await
    }

    /// The hits, newest first, among whole traces (`whole`, read with the search's
    /// columns), with their service stats.
    async fn evaluate(&self, whole: &[RecordBatch], metrics: &mut SearchMetrics) -> Result<Vec<TraceHit>> {
        let spans = self.windowed(whole)?;
        if spans.is_empty() {
            return Ok(Vec::new());
        }
        let (fields, limit) = (&self.shown, self.request.limit);
        let mut hits = match &self.prepared.lone {
            Some(lone) => {
                let rows = lone.step.run(self.ctx, spans.clone()).await?;
                hits::lone_hits(&rows, &spans, lone, fields, (self.request.spss, limit))
            }
            None => hits::hits_from(&self.prepared.search.run(self.ctx, spans).await?, fields, limit),
        };
        metrics.inspected_traces += hits.len() as u64;
        hits::add_service_stats(&mut hits, whole);
        Ok(hits)
    }

    /// The trace ids of `range` that pass the candidate `step`, sorted. Turns the step off for
    /// the ranges left when they are dense.
    async fn candidate_traces(
        &self,
        step: &prepared::Step,
        range: &IdRange,
        metrics: &mut SearchMetrics,
    ) -> Result<Vec<String>> {
        let wanted = Wanted {
            range,
            traces: None,
            condition: step.condition.as_ref(),
        };
        let read = self.read(wanted, step, true, metrics).await?;
        let scanned = read.scanned;
        let ids = self.passing(step, read.batches).await?;
        if ids.len() as u64 > scanned.div_ceil(DENSE_CANDIDATE_SPANS as u64) {
            // Candidates are common: reading the ranges left whole at once is cheaper.
            self.candidates.store(false, Relaxed);
        }
        Ok(ids)
    }

    /// The trace ids (sorted) of `rows` (read with [`prepared::Step::read_columns`] of the
    /// candidate `step`, and its condition) that pass it.
    async fn passing(&self, step: &prepared::Step, rows: Vec<RecordBatch>) -> Result<Vec<String>> {
        match step.condition {
            // The reader kept only the rows that pass.
            Some(_) => Ok(trace_ids(&rows)),
            None => Ok(trace_ids(&step.run(self.ctx, rows).await?)),
        }
    }

    /// The `wanted` rows, with the columns `step` reads ([`prepared::Step::read_columns`]; with
    /// a condition, only its columns are read for the rows that fail it, and they count as
    /// inspected); `count` adds the rows to the inspected spans.
    async fn read(
        &self,
        wanted: Wanted<'_>,
        step: &prepared::Step,
        count: bool,
        metrics: &mut SearchMetrics,
    ) -> Result<Read> {
        let (columns, narrowed) = (step.read_columns(), step.narrowed.as_ref());
        let read = self
            .warehouse
            .read_id_range(self.tenant, &self.snapshot, wanted, &columns, narrowed)
            .await?;
        account(&read, count, wanted.condition.is_some(), metrics)?;
        Ok(read)
    }

    /// The rows of `batches` that overlap the request's window.
    fn windowed(&self, batches: &[RecordBatch]) -> datafusion::error::Result<Vec<RecordBatch>> {
        let (start, end) = (self.request.start_unix_nano, self.request.end_unix_nano);
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            let column = |name: &str| {
                b.column_by_name(name)
                    .and_then(|c| c.as_primitive_opt::<Int64Type>())
                    .ok_or_else(|| DataFusionError::Internal(format!("range read without {name}")))
            };
            let mut mask = BooleanArray::from(vec![true; b.num_rows()]);
            if let Some(start) = start {
                let ends = column("end_time_unix_nano")?;
                mask = and(&mask, &gt_eq(ends, &arrow::array::Int64Array::new_scalar(start))?)?;
            }
            if let Some(end) = end {
                let starts = column("start_time_unix_nano")?;
                mask = and(&mask, &lt_eq(starts, &arrow::array::Int64Array::new_scalar(end))?)?;
            }
            match mask.true_count() {
                0 => {}
                n if n == b.num_rows() => out.push(b.clone()),
                _ => out.push(filter_record_batch(b, &mask)?),
            }
        }
        Ok(out)
    }
}

/// Adds the bytes of `read` to `metrics` and, when `count`, its spans: the rows kept, or with
/// a condition (`conditioned`) every row of the pages it was decided on. Refuses more rows than
/// one read may hold. Returns the rows kept.
fn account(read: &Read, count: bool, conditioned: bool, metrics: &mut SearchMetrics) -> Result<u64> {
    let rows: u64 = read.batches.iter().map(|b| b.num_rows() as u64).sum();
    metrics.inspected_spans += match (count, conditioned) {
        (false, _) => 0,
        (true, true) => read.scanned,
        (true, false) => rows,
    };
    metrics.inspected_bytes += read.bytes;
    if rows > MAX_RANGE_ROWS {
        return Err(DataFusionError::ResourcesExhausted(format!(
            "search read {rows} spans at once, more than {MAX_RANGE_ROWS}"
        ))
        .into());
    }
    Ok(rows)
}

/// The distinct trace ids of `batches` (sorted).
fn trace_ids(batches: &[RecordBatch]) -> Vec<String> {
    let mut ids: Vec<String> = batches
        .iter()
        .filter_map(|b| b.column_by_name("trace_id").and_then(|c| c.as_string_opt::<i32>()))
        .flat_map(|ids| ids.iter().flatten().map(str::to_string).collect::<Vec<_>>())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// A TraceQL search, as Tempo's `/api/search` takes it.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub query: String,
    /// Traces to return (Tempo's default is 20).
    pub limit: usize,
    /// Spans per spanset (Tempo's default is 3).
    pub spss: usize,
    /// Only spans that overlap `[start, end]`, ns since the epoch.
    pub start_unix_nano: Option<i64>,
    pub end_unix_nano: Option<i64>,
}

/// One trace of a search result.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceHit {
    pub trace_id: String,
    pub root_service_name: Option<String>,
    pub root_trace_name: Option<String>,
    pub start_unix_nano: i64,
    pub duration_ns: i64,
    pub spansets: Vec<SpansetHit>,
    /// Spans and error spans per service over the whole trace, by service name.
    pub service_stats: Vec<ServiceStat>,
}

/// One service's share of a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceStat {
    pub service_name: String,
    pub span_count: u64,
    pub error_count: u64,
}

/// One spanset of a trace: its `by()` label (empty without `by()`), how many spans matched
/// and the first `spss` of them.
#[derive(Debug, Clone, PartialEq)]
pub struct SpansetHit {
    pub label: String,
    pub matched: u64,
    pub spans: Vec<SpanHit>,
}

impl SpansetHit {
    /// The spanset's attributes in the order its pipeline added them: `by()` labels and
    /// aggregate values, typed (see [`tracehouse_traceql::label`]).
    pub fn attributes(&self) -> Vec<(String, HitValue)> {
        tracehouse_traceql::label::entries(&self.label)
            .into_iter()
            .map(|(name, value)| (name, HitValue::from(value)))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpanHit {
    pub span_id: String,
    pub name: String,
    pub service_name: Option<String>,
    pub start_unix_nano: i64,
    pub duration_ns: i64,
    /// What the query looked at or `select()`ed, as Tempo returns it with each span: attributes
    /// by name, and the intrinsics `status`, `kind` and `statusMessage`. Absent ones are left out.
    pub attributes: Vec<(String, HitValue)>,
}

/// A typed value returned with a span.
#[derive(Debug, Clone, PartialEq)]
pub enum HitValue {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    /// Tempo's nil: the value is absent.
    Nil,
    Array(Vec<HitValue>),
}

impl From<LabelValue> for HitValue {
    fn from(v: LabelValue) -> Self {
        match v {
            LabelValue::Str(s) => Self::Str(s),
            LabelValue::Int(i) => Self::Int(i),
            LabelValue::Double(d) => Self::Double(d),
            LabelValue::Bool(b) => Self::Bool(b),
            LabelValue::Nil => Self::Nil,
            LabelValue::Array(items) => Self::Array(items.into_iter().map(Self::from).collect()),
        }
    }
}

/// Fields whose values search returns with each span: the attributes and the status, kind and
/// status-message intrinsics the query's filters and `by()`s read, and everything `select()`
/// names; each once, in order of appearance.
pub fn returned_fields(query: &Query) -> Vec<FieldExpr> {
    fn wanted(f: &FieldExpr) -> bool {
        match f {
            FieldExpr::Attribute(a) => !a.parent,
            FieldExpr::Intrinsic(i) => matches!(i, Intrinsic::Status | Intrinsic::Kind | Intrinsic::StatusMessage),
            _ => false,
        }
    }
    let mut out = Vec::new();
    let mut add = |f: &FieldExpr| {
        if wanted(f) && !out.contains(f) {
            out.push(f.clone());
        }
    };
    visit_spanset_fields(query, &mut |cond, selected| match selected {
        false => cond.visit_fields(&mut add),
        true => add(cond),
    });
    out
}

/// The attributes the query's filters compare `= nil`: a returned span that lacks one shows
/// it as nil, as Tempo shows it.
pub(crate) fn nil_compared(query: &Query) -> Vec<FieldExpr> {
    fn collect(c: &FieldExpr, out: &mut Vec<FieldExpr>) {
        match c {
            FieldExpr::Binary(BinOp::Cmp(CmpOp::Eq), a, b) => {
                for (x, y) in [(a, b), (b, a)] {
                    let attr = matches!(&**x, FieldExpr::Attribute(at) if !at.parent);
                    if attr && **y == FieldExpr::Static(Static::Nil) && !out.contains(x) {
                        out.push((**x).clone());
                    }
                }
            }
            FieldExpr::Binary(_, a, b) => {
                collect(a, out);
                collect(b, out);
            }
            FieldExpr::Unary(_, a) => collect(a, out),
            FieldExpr::Static(_) | FieldExpr::Intrinsic(_) | FieldExpr::Attribute(_) => {}
        }
    }
    let mut out = Vec::new();
    visit_spanset_fields(query, &mut |cond, selected| {
        if !selected {
            collect(cond, &mut out)
        }
    });
    out
}

/// Calls `f` on the condition of each spanset filter and the expression of each `by()` of the
/// query (`false`), and each field `select()` names (`true`), in order of appearance.
pub(crate) fn visit_spanset_fields(query: &Query, f: &mut impl FnMut(&FieldExpr, bool)) {
    fn walk(e: &SpansetExpr, f: &mut impl FnMut(&FieldExpr, bool)) {
        match e {
            SpansetExpr::Filter(cond) => f(cond, false),
            SpansetExpr::Op(_, l, r) => {
                walk(l, f);
                walk(r, f);
            }
            SpansetExpr::Pipeline(stages) => {
                for stage in stages {
                    match stage {
                        Stage::Spanset(e) => walk(e, f),
                        Stage::Select(fields) => fields.iter().for_each(|s| f(s, true)),
                        // Tempo shows the attributes `by()` reads with each span, as a filter's.
                        Stage::By(e) => f(e, false),
                        _ => {}
                    }
                }
            }
        }
    }
    if let Root::Spanset(e) = &query.root {
        walk(e, f);
    }
}
