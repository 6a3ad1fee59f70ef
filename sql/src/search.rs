//! Tempo-style TraceQL search: traces that match a query, with Tempo's result shape (at most
//! `limit` traces, `spss` spans per spanset, each span with the attributes the query read or
//! `select()`ed, per trace the span and error counts of each service), newest first.
//!
//! Which traces: as in Tempo, the first `limit` found, unless the query says
//! `with(most_recent=true)`, which asks for the `limit` most recent ones.
//!
//! How: spans are stored sorted by trace id, every file with page statistics on `trace_id`, and
//! trace ids are uniformly random. So a search evaluates the query over one range of trace ids
//! at a time, the first range 1/256 of the id space and each next one as large as all before
//! it (9 ranges in all), over every data file and the live spans of one snapshot. Each range
//! holds whole traces, so evaluating it alone gives its traces exactly the answer of the whole
//! table, and a range reads only the row groups and pages whose trace ids overlap it. The
//! search stops as soon as it has `limit` traces: a query that matches often reads a small
//! slice of the data, one that matches nothing reads it all once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use datafusion::catalog::TableProvider;
use datafusion::datasource::{MemTable, provider_as_source};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder, col, lit};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use tracehouse_traceql::ast::{AttrScope, FieldExpr, Intrinsic, Query, Root, SpansetExpr, Stage, Static};
use tracehouse_traceql::plan::out;
use tracehouse_traceql::{compile, plan_search};
use tracehouse_warehouse::Warehouse;
use tracehouse_warehouse::provider::SnapshotSpans;
use tracehouse_warehouse::schema::spans_schema;
use tracehouse_warehouse::trace_index::{parse_trace_id, trace_id_hex};

use crate::Result;
use crate::traceql::{plan_options, to_df};

/// Longest search result accepted: traces per search, and spans per spanset.
pub const MAX_SEARCH_LIMIT: usize = 10_000;
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

/// Runs `request` over `tenant`'s spans in `warehouse`, planning and executing in `ctx`.
pub async fn search(
    ctx: &SessionContext,
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
    let files = snapshot.data_files();
    let mut found = SearchOutcome::default();
    found.metrics.total_blocks = files.len() as u64;
    found.metrics.total_block_bytes = files.iter().map(|(_, size)| size).sum();
    let snapshot = prune(warehouse, tenant, &query, snapshot, &files).await?;
    let search = Search {
        ctx,
        warehouse,
        tenant,
        request,
        query: &query,
        span_count: snapshot.span_count(),
        snapshot: Arc::new(snapshot),
    };
    let ranges = if wants_most_recent(&query) {
        vec![TraceIdRange::all()]
    } else {
        trace_id_ranges()
    };
    found.metrics.total_jobs = u32::try_from(ranges.len()).unwrap_or(u32::MAX);
    for range in ranges.iter().filter(|_| search.span_count > 0) {
        let missing = request.limit - found.hits.len();
        let hits = search.hits(range, missing, &mut found.metrics).await?;
        found.metrics.completed_jobs += 1;
        if !hits.is_empty() {
            found.hits.extend(hits);
            sort_newest_first(&mut found.hits);
        }
        if found.hits.len() >= request.limit {
            // The ranges left cannot change the answer: they are done.
            found.metrics.completed_jobs = found.metrics.total_jobs;
            break;
        }
        progress(&found);
    }
    Ok(found)
}

/// `snapshot` without the data files that cannot hold a match: those whose bloom filters rule
/// out a string attribute value every match needs.
async fn prune(
    warehouse: &Warehouse,
    tenant: &str,
    query: &Query,
    snapshot: SnapshotSpans,
    files: &[(String, u64)],
) -> Result<SnapshotSpans> {
    let mut keep: Vec<bool> = vec![true; files.len()];
    for (leaves, value) in required_values(query) {
        if !keep.contains(&true) {
            break;
        }
        let may = warehouse.files_may_contain(tenant, files, &leaves, &value).await?;
        keep.iter_mut().zip(may).for_each(|(k, m)| *k &= m);
    }
    if keep.iter().all(|k| *k) {
        return Ok(snapshot);
    }
    let kept = files.iter().zip(keep).filter(|(_, k)| *k).map(|((p, _), _)| p.clone());
    Ok(snapshot.with_files(kept.collect()))
}

/// String values every match needs as an attribute value, with the Parquet leaves that hold
/// them: from `attr = "v"` terms joined by `&&` in a filter, of the spanset operands every
/// match needs (`&&` and the non-negated structural operators).
fn required_values(query: &Query) -> Vec<(Vec<&'static str>, String)> {
    fn terms(e: &FieldExpr, out: &mut Vec<(Vec<&'static str>, String)>) {
        use tracehouse_traceql::ast::{BinOp, CmpOp};
        match e {
            FieldExpr::Binary(BinOp::And, a, b) => {
                terms(a, out);
                terms(b, out);
            }
            FieldExpr::Binary(BinOp::Cmp(CmpOp::Eq), a, b) => {
                let ((FieldExpr::Attribute(attr), FieldExpr::Static(Static::Str(v)))
                | (FieldExpr::Static(Static::Str(v)), FieldExpr::Attribute(attr))) = (a.as_ref(), b.as_ref())
                else {
                    return;
                };
                let [span, resource] = tracehouse_warehouse::table::ATTRIBUTE_STRING_LEAVES;
                let leaves = match (attr.scope, attr.parent) {
                    (AttrScope::Span, false) => vec![span],
                    (AttrScope::Resource, false) => vec![resource],
                    (AttrScope::Unscoped, false) => vec![span, resource],
                    _ => return,
                };
                out.push((leaves, v.clone()));
            }
            _ => {}
        }
    }
    fn walk(e: &SpansetExpr, out: &mut Vec<(Vec<&'static str>, String)>) {
        use tracehouse_traceql::ast::SpansetOp as Op;
        match e {
            SpansetExpr::Filter(cond) => terms(cond, out),
            SpansetExpr::Op(Op::And | Op::Child | Op::Descendant | Op::Parent | Op::Ancestor | Op::Sibling, a, b) => {
                walk(a, out);
                walk(b, out);
            }
            SpansetExpr::Op(..) => {}
            SpansetExpr::Pipeline(stages) => {
                if let Some(Stage::Spanset(first)) = stages.first() {
                    walk(first, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    if let Root::Spanset(e) = &query.root {
        walk(e, &mut out);
    }
    out
}

/// Bits of the first trace-id range: it covers 1/2^bits of the id space.
const FIRST_RANGE_BITS: u32 = 8;

/// Spans a trace-id range may be expected to hold for a search to read it into memory once.
const MAX_SPANS_IN_MEMORY: u64 = 50_000;

/// Trace ids `[low, high)` in stored spelling (`None`: unbounded), `share` 2^-FIRST_RANGE_BITS
/// parts of the id space.
#[derive(Debug, Clone, PartialEq)]
struct TraceIdRange {
    low: Option<String>,
    high: Option<String>,
    share: u64,
}

impl TraceIdRange {
    fn all() -> Self {
        Self {
            low: None,
            high: None,
            share: 1 << FIRST_RANGE_BITS,
        }
    }
}

/// The trace-id ranges a search looks at in turn: the first 1/256 of the id space, then each
/// as large as all before it.
fn trace_id_ranges() -> Vec<TraceIdRange> {
    let bound = |step: u64| trace_id_hex(u128::from(step) << (128 - FIRST_RANGE_BITS));
    let parts: u64 = 1 << FIRST_RANGE_BITS;
    let mut ranges = vec![TraceIdRange {
        low: None,
        high: Some(bound(1)),
        share: 1,
    }];
    let mut low = 1;
    while low < parts {
        let high = low * 2;
        ranges.push(TraceIdRange {
            low: Some(bound(low)),
            high: (high < parts).then(|| bound(high)),
            share: high - low,
        });
        low = high;
    }
    ranges
}

fn sort_newest_first(hits: &mut [TraceHit]) {
    hits.sort_by(|a, b| {
        b.start_unix_nano
            .cmp(&a.start_unix_nano)
            .then_with(|| a.trace_id.cmp(&b.trace_id))
    });
}

/// One search request over one tenant's snapshot.
struct Search<'a> {
    ctx: &'a SessionContext,
    warehouse: &'a Warehouse,
    tenant: &'a str,
    request: &'a SearchRequest,
    query: &'a Query,
    snapshot: Arc<SnapshotSpans>,
    /// Spans in `snapshot` (by the Delta statistics).
    span_count: u64,
}

impl Search<'_> {
    /// The spans of `spans` with trace ids in `range`.
    fn in_range(&self, spans: Arc<dyn TableProvider>, range: &TraceIdRange) -> Result<LogicalPlan> {
        let mut scan = LogicalPlanBuilder::scan("spans", provider_as_source(spans), None)?;
        if let Some(low) = &range.low {
            scan = scan.filter(col("trace_id").gt_eq(lit(low.as_str())))?;
        }
        if let Some(high) = &range.high {
            scan = scan.filter(col("trace_id").lt(lit(high.as_str())))?;
        }
        Ok(scan.build()?)
    }

    /// The spans of `spans` that overlap the request's window.
    fn windowed(&self, spans: impl Into<LogicalPlanBuilder>) -> Result<LogicalPlan> {
        let mut scan: LogicalPlanBuilder = spans.into();
        if let Some(start) = self.request.start_unix_nano {
            scan = scan.filter(col("end_time_unix_nano").gt_eq(lit(start)))?;
        }
        if let Some(end) = self.request.end_unix_nano {
            scan = scan.filter(col("start_time_unix_nano").lt_eq(lit(end)))?;
        }
        Ok(scan.build()?)
    }

    /// The `limit` most recent hits with trace ids in `range`, with service stats. A range
    /// small enough is read once into memory and evaluated there (the plan reads its input
    /// several times, and the service stats come from the same rows); a larger one is
    /// evaluated over the snapshot.
    async fn hits(&self, range: &TraceIdRange, limit: usize, metrics: &mut SearchMetrics) -> Result<Vec<TraceHit>> {
        let expected = self.span_count / (1 << FIRST_RANGE_BITS) * range.share;
        let whole = match expected <= MAX_SPANS_IN_MEMORY {
            true => self.read_at_most(range, MAX_SPANS_IN_MEMORY * 2, metrics).await?,
            false => None,
        };
        let Some(whole) = whole else {
            let spans = self.windowed(self.in_range(self.snapshot.clone(), range)?)?;
            let hits = self.evaluate(spans, limit, metrics).await?;
            return self.with_service_stats(hits, metrics).await;
        };
        if whole.iter().all(|b| b.num_rows() == 0) {
            return Ok(Vec::new());
        }
        let memory = Arc::new(MemTable::try_new(spans_schema(), vec![whole.clone()])?);
        let spans = self.windowed(LogicalPlanBuilder::scan("spans", provider_as_source(memory), None)?)?;
        let mut hits = self.evaluate(spans, limit, metrics).await?;
        add_service_stats(&mut hits, &whole);
        Ok(hits)
    }

    /// The `limit` most recent hits in `spans`, without service stats.
    async fn evaluate(&self, spans: LogicalPlan, limit: usize, metrics: &mut SearchMetrics) -> Result<Vec<TraceHit>> {
        let plan = plan_search(self.query, spans, &plan_options(), limit, self.request.spss).map_err(to_df)?;
        let columns: Vec<_> = HIT_COLUMNS.iter().map(|c| col(*c)).collect();
        let plan = LogicalPlanBuilder::from(plan).project(columns)?.build()?;
        let batches = self.run(plan, metrics).await?;
        let hits = hits_from(&batches, &returned_fields(self.query));
        metrics.inspected_traces += hits.len() as u64;
        Ok(hits)
    }

    /// `hits` with their service stats, from their whole traces (outside the window too), read
    /// through the trace-id index.
    async fn with_service_stats(&self, mut hits: Vec<TraceHit>, metrics: &mut SearchMetrics) -> Result<Vec<TraceHit>> {
        if hits.is_empty() {
            return Ok(hits);
        }
        let traces: Vec<u128> = hits.iter().filter_map(|h| parse_trace_id(&h.trace_id)).collect();
        let whole = self.warehouse.traces_by_id(self.tenant, &traces, None).await?;
        metrics.inspected_bytes += whole.bytes_inspected;
        add_service_stats(&mut hits, &whole.batches);
        Ok(hits)
    }

    /// The spans of `range`, unless there are more than `max_spans` (trace ids need not be
    /// uniform): then `None`, having read no more than that.
    async fn read_at_most(
        &self,
        range: &TraceIdRange,
        max_spans: u64,
        metrics: &mut SearchMetrics,
    ) -> Result<Option<Vec<RecordBatch>>> {
        use futures::StreamExt;
        let state = self.ctx.state();
        let physical = state
            .create_physical_plan(&self.in_range(self.snapshot.clone(), range)?)
            .await?;
        let mut stream = datafusion::physical_plan::execute_stream(physical.clone(), state.task_ctx())?;
        let (mut batches, mut rows) = (Vec::new(), 0u64);
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            rows += batch.num_rows() as u64;
            if rows > max_spans {
                return Ok(None);
            }
            batches.push(batch);
        }
        add_scanned(&physical, metrics);
        Ok(Some(batches))
    }

    /// Executes `plan`, adding what its scans read to `metrics`.
    async fn run(&self, plan: LogicalPlan, metrics: &mut SearchMetrics) -> Result<Vec<RecordBatch>> {
        let state = self.ctx.state();
        let physical = state.create_physical_plan(&plan).await?;
        let batches = datafusion::physical_plan::collect(physical.clone(), state.task_ctx()).await?;
        add_scanned(&physical, metrics);
        Ok(batches)
    }
}

/// Rows and bytes the scans of an executed plan read.
fn add_scanned(plan: &Arc<dyn ExecutionPlan>, metrics: &mut SearchMetrics) {
    if plan.name() == "DataSourceExec"
        && let Some(m) = plan.metrics()
    {
        metrics.inspected_spans += m.output_rows().unwrap_or(0) as u64;
        metrics.inspected_bytes += m.sum_by_name("bytes_scanned").map_or(0, |v| v.as_usize() as u64);
    }
    for child in plan.children() {
        add_scanned(child, metrics);
    }
}

/// The columns of a search plan's output that hits are built from, in [`hits_from`]'s order.
const HIT_COLUMNS: [&str; 17] = [
    "trace_id",
    "span_id",
    "name",
    "service_name",
    "start_time_unix_nano",
    "duration_ns",
    out::ROOT_SERVICE,
    out::ROOT_NAME,
    out::TRACE_START,
    out::TRACE_DURATION,
    out::SPANSET,
    out::MATCHED,
    "span_attributes",
    "resource_attributes",
    "status_code",
    "kind",
    "status_message",
];

/// Fills `service_stats` of `hits` from their traces' spans (`spans` batches that hold them
/// whole): spans and error spans per service, by service name.
fn add_service_stats(hits: &mut [TraceHit], spans: &[RecordBatch]) {
    let position: HashMap<&str, usize> = hits.iter().enumerate().map(|(i, h)| (h.trace_id.as_str(), i)).collect();
    let mut stats: Vec<BTreeMap<Option<String>, (u64, u64)>> = vec![BTreeMap::new(); hits.len()];
    for b in spans {
        let (Some(ids), Some(services), Some(status)) = (
            b.column_by_name("trace_id"),
            b.column_by_name("service_name"),
            b.column_by_name("status_code"),
        ) else {
            continue;
        };
        for row in 0..b.num_rows() {
            let Some(&i) = opt_str(ids.as_ref(), row).and_then(|t| position.get(t.as_str())) else {
                continue;
            };
            let entry = stats[i].entry(opt_str(services.as_ref(), row)).or_default();
            entry.0 += 1;
            entry.1 += u64::from(opt_str(status.as_ref(), row).as_deref() == Some("error"));
        }
    }
    for (hit, stats) in hits.iter_mut().zip(stats) {
        hit.service_stats = stats
            .into_iter()
            .map(|(name, (spans, errors))| ServiceStat {
                service_name: name.unwrap_or_default(),
                span_count: spans,
                error_count: errors,
            })
            .collect();
    }
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
}

/// Fields whose values search returns with each span: the attributes and the status, kind and
/// status-message intrinsics the query's filters read, and everything `select()` names; each
/// once, in order of appearance.
pub fn returned_fields(query: &Query) -> Vec<FieldExpr> {
    fn wanted(f: &FieldExpr) -> bool {
        match f {
            FieldExpr::Attribute(a) => !a.parent,
            FieldExpr::Intrinsic(i) => matches!(i, Intrinsic::Status | Intrinsic::Kind | Intrinsic::StatusMessage),
            _ => false,
        }
    }
    fn walk(e: &SpansetExpr, out: &mut Vec<FieldExpr>) {
        match e {
            SpansetExpr::Filter(cond) => cond.visit_fields(&mut |f| {
                if wanted(f) && !out.contains(f) {
                    out.push(f.clone());
                }
            }),
            SpansetExpr::Op(_, l, r) => {
                walk(l, out);
                walk(r, out);
            }
            SpansetExpr::Pipeline(stages) => {
                for stage in stages {
                    match stage {
                        Stage::Spanset(e) => walk(e, out),
                        Stage::Select(fields) => {
                            for f in fields.iter().filter(|f| wanted(f)) {
                                if !out.contains(f) {
                                    out.push(f.clone());
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    if let Root::Spanset(e) = &query.root {
        walk(e, &mut out);
    }
    out
}

fn opt_str(a: &dyn Array, i: usize) -> Option<String> {
    a.is_valid(i).then(|| a.as_string::<i32>().value(i).to_string())
}

/// The value of `key` in row `row` of an attribute map, typed.
fn map_value(map: &dyn Array, row: usize, key: &str) -> Option<HitValue> {
    let map = map.as_map_opt()?;
    if !map.is_valid(row) {
        return None;
    }
    let entries = map.value(row);
    let keys = entries.column(0).as_string::<i32>();
    let values = entries.column(1).as_struct();
    let i = (0..keys.len()).find(|&i| keys.value(i) == key)?;
    let field = |name: &str| values.column_by_name(name).filter(|c| c.is_valid(i));
    if let Some(c) = field("str") {
        return Some(HitValue::Str(c.as_string::<i32>().value(i).to_string()));
    }
    if let Some(c) = field("int") {
        return Some(HitValue::Int(c.as_primitive::<Int64Type>().value(i)));
    }
    if let Some(c) = field("double") {
        return Some(HitValue::Double(
            c.as_primitive::<arrow::datatypes::Float64Type>().value(i),
        ));
    }
    if let Some(c) = field("bool") {
        return Some(HitValue::Bool(c.as_boolean().value(i)));
    }
    ["array", "kvlist"]
        .iter()
        .find_map(|n| field(n))
        .map(|c| HitValue::Str(c.as_string::<i32>().value(i).to_string()))
}

/// The values of `fields` for row `row` of a search result batch.
fn returned_values(b: &RecordBatch, row: usize, fields: &[FieldExpr]) -> Vec<(String, HitValue)> {
    let (span_attrs, resource_attrs) = (b.column(12).as_ref(), b.column(13).as_ref());
    let mut out = Vec::new();
    for f in fields {
        let (name, value) = match f {
            FieldExpr::Attribute(a) => {
                let value = match a.scope {
                    AttrScope::Span => map_value(span_attrs, row, &a.name),
                    AttrScope::Resource => map_value(resource_attrs, row, &a.name),
                    AttrScope::Unscoped => {
                        map_value(span_attrs, row, &a.name).or_else(|| map_value(resource_attrs, row, &a.name))
                    }
                    _ => None,
                };
                (a.name.clone(), value)
            }
            FieldExpr::Intrinsic(i) => {
                let (name, col) = match i {
                    Intrinsic::Status => ("status", 14),
                    Intrinsic::Kind => ("kind", 15),
                    _ => ("statusMessage", 16),
                };
                (
                    name.to_string(),
                    opt_str(b.column(col).as_ref(), row).map(HitValue::Str),
                )
            }
            _ => continue,
        };
        if let Some(v) = value
            && !out.iter().any(|(n, _)| *n == name)
        {
            out.push((name, v));
        }
    }
    out
}

/// Rows (sorted by trace, spanset, start) into traces.
fn hits_from(batches: &[RecordBatch], fields: &[FieldExpr]) -> Vec<TraceHit> {
    let mut traces: Vec<TraceHit> = Vec::new();
    for b in batches {
        let c = |i: usize| b.column(i).as_ref();
        for row in 0..b.num_rows() {
            let trace_id = opt_str(c(0), row).unwrap_or_default();
            let label = opt_str(c(10), row).unwrap_or_default();
            let span = SpanHit {
                span_id: opt_str(c(1), row).unwrap_or_default(),
                name: opt_str(c(2), row).unwrap_or_default(),
                service_name: opt_str(c(3), row),
                start_unix_nano: c(4).as_primitive::<Int64Type>().value(row),
                duration_ns: c(5).as_primitive::<Int64Type>().value(row),
                attributes: returned_values(b, row, fields),
            };
            let matched = c(11).as_primitive::<Int64Type>().value(row).max(0) as u64;
            if traces.last().is_none_or(|t| t.trace_id != trace_id) {
                traces.push(TraceHit {
                    trace_id: trace_id.clone(),
                    root_service_name: opt_str(c(6), row),
                    root_trace_name: opt_str(c(7), row),
                    start_unix_nano: c(8).as_primitive::<Int64Type>().value(row),
                    duration_ns: c(9).as_primitive::<Int64Type>().value(row),
                    spansets: Vec::new(),
                    service_stats: Vec::new(),
                });
            }
            let trace = traces.last_mut().expect("pushed above");
            if trace.spansets.last().is_none_or(|s| s.label != label) {
                trace.spansets.push(SpansetHit {
                    label,
                    matched,
                    spans: Vec::new(),
                });
            }
            trace.spansets.last_mut().expect("pushed above").spans.push(span);
        }
    }
    traces
}
