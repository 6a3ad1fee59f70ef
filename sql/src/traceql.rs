//! TraceQL in the SQL engine: the `traceql('<query>')` table function and Tempo-style search.
//!
//! `traceql()` compiles its query with the traceql crate into a logical plan over the tenant's
//! `spans` table and serves it as a view, so the plan is inlined into the surrounding SQL and
//! `EXPLAIN` shows it. Search runs the same plan with Tempo's result shape: traces most recent
//! first, at most `limit` of them and `spss` spans per spanset, each span with the attributes
//! the query read or `select()`ed, and per trace the span and error counts of each service.

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, col, lit};
use datafusion::prelude::SessionContext;
use tracehouse_traceql::ast::{AttrScope, FieldExpr, Intrinsic, Query, Root, SpansetExpr, Stage};
use tracehouse_traceql::plan::out;
use tracehouse_traceql::{PlanOptions, compile, plan_query, plan_search};
use tracehouse_warehouse::provider::text_literal;
use tracehouse_warehouse::schema::{RESOURCE_COLUMNS, SPAN_COLUMNS};

use crate::Result;

/// Longest search result accepted: traces per search, and spans per spanset.
pub const MAX_SEARCH_LIMIT: usize = 10_000;
pub const MAX_SPSS: usize = 10_000;

/// The planner's view of the warehouse schema: dedicated text columns that hold exactly one
/// attribute key.
pub fn plan_options() -> PlanOptions {
    let mut dedicated = Vec::new();
    for (scope, cols) in [(AttrScope::Resource, RESOURCE_COLUMNS), (AttrScope::Span, SPAN_COLUMNS)] {
        for c in cols.iter().filter(|c| !c.is_int && c.keys.len() == 1) {
            dedicated.push((scope, c.keys[0].to_string(), c.column.to_string()));
        }
    }
    PlanOptions { dedicated }
}

fn to_df(e: tracehouse_traceql::Error) -> DataFusionError {
    match e {
        tracehouse_traceql::Error::DataFusion(df) => df,
        other => DataFusionError::External(Box::new(other)),
    }
}

/// The `traceql(query)` table function of one tenant.
#[derive(Debug)]
pub struct TraceqlFunction {
    spans: Arc<dyn TableProvider>,
    options: PlanOptions,
}

impl TraceqlFunction {
    pub fn new(spans: Arc<dyn TableProvider>) -> Self {
        Self {
            spans,
            options: plan_options(),
        }
    }
}

impl TableFunctionImpl for TraceqlFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        let [query] = args.exprs() else {
            return Err(DataFusionError::Plan(
                "traceql() takes one argument: the TraceQL query as a string literal".into(),
            ));
        };
        let Some(text) = text_literal(query) else {
            return Err(DataFusionError::Plan(
                "traceql() takes the TraceQL query as a string literal".into(),
            ));
        };
        let parsed = compile(text).map_err(to_df)?;
        let scan = spans_scan(self.spans.clone())?;
        let plan = plan_query(&parsed, scan, &self.options).map_err(to_df)?;
        Ok(Arc::new(ViewTable::new(plan, Some(format!("traceql({text:?})")))))
    }
}

fn spans_scan(spans: Arc<dyn TableProvider>) -> datafusion::error::Result<LogicalPlan> {
    LogicalPlanBuilder::scan("spans", provider_as_source(spans), None)?.build()
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

/// Runs `request` on `ctx`'s `spans` table.
pub async fn search(ctx: &SessionContext, request: &SearchRequest) -> Result<Vec<TraceHit>> {
    if request.limit == 0 || request.limit > MAX_SEARCH_LIMIT || request.spss == 0 || request.spss > MAX_SPSS {
        return Err(
            DataFusionError::Plan(format!("limit must be 1..={MAX_SEARCH_LIMIT} and spss 1..={MAX_SPSS}")).into(),
        );
    }
    let parsed = compile(&request.query).map_err(to_df)?;
    let spans = ctx.table_provider("spans").await?;
    let mut scan = LogicalPlanBuilder::from(spans_scan(spans)?);
    if let Some(start) = request.start_unix_nano {
        scan = scan.filter(col("end_time_unix_nano").gt_eq(lit(start)))?;
    }
    if let Some(end) = request.end_unix_nano {
        scan = scan.filter(col("start_time_unix_nano").lt_eq(lit(end)))?;
    }
    let plan = plan_search(&parsed, scan.build()?, &plan_options(), request.limit, request.spss).map_err(to_df)?;
    let batches = ctx
        .execute_logical_plan(plan)
        .await?
        .select_columns(&[
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
        ])?
        .collect()
        .await?;
    let mut hits = hits_from(&batches, &returned_fields(&parsed));
    add_service_stats(ctx, &mut hits).await?;
    Ok(hits)
}

/// Fills `service_stats` of `hits` with one aggregate over their traces' spans.
async fn add_service_stats(ctx: &SessionContext, hits: &mut [TraceHit]) -> Result<()> {
    use datafusion::functions_aggregate::count::count;
    if hits.is_empty() {
        return Ok(());
    }
    let ids: Vec<Expr> = hits.iter().map(|h| lit(h.trace_id.clone())).collect();
    let error = datafusion::logical_expr::case(col("status_code"))
        .when(lit("error"), lit(1i64))
        .otherwise(lit(0i64))?;
    let batches = ctx
        .table("spans")
        .await?
        .filter(col("trace_id").in_list(ids, false))?
        .aggregate(
            vec![col("trace_id"), col("service_name")],
            vec![
                count(lit(1)).alias("spans"),
                datafusion::functions_aggregate::sum::sum(error).alias("errors"),
            ],
        )?
        .sort(vec![
            col("trace_id").sort(true, true),
            col("service_name").sort(true, true),
        ])?
        .collect()
        .await?;
    let position: std::collections::HashMap<String, usize> =
        hits.iter().enumerate().map(|(i, h)| (h.trace_id.clone(), i)).collect();
    for b in &batches {
        for row in 0..b.num_rows() {
            let Some(&i) = opt_str(b.column(0).as_ref(), row).and_then(|t| position.get(&t)) else {
                continue;
            };
            hits[i].service_stats.push(ServiceStat {
                service_name: opt_str(b.column(1).as_ref(), row).unwrap_or_default(),
                span_count: b.column(2).as_primitive::<Int64Type>().value(row).max(0) as u64,
                error_count: b.column(3).as_primitive::<Int64Type>().value(row).max(0) as u64,
            });
        }
    }
    Ok(())
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
