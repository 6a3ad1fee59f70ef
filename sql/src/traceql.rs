//! TraceQL in the SQL engine: the `traceql('<query>')` table function and Tempo-style search.
//!
//! `traceql()` compiles its query with the traceql crate into a logical plan over the tenant's
//! `spans` table and serves it as a view, so the plan is inlined into the surrounding SQL and
//! `EXPLAIN` shows it. Search (in [`crate::search`]) runs the same planner with Tempo's result
//! shape.

use std::sync::Arc;

use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use tracehouse_traceql::ast::AttrScope;
use tracehouse_traceql::{PlanOptions, compile, plan_query};
use tracehouse_warehouse::provider::text_literal;
use tracehouse_warehouse::schema::{RESOURCE_COLUMNS, SPAN_COLUMNS};

/// The planner's view of the warehouse schema: dedicated text columns that hold exactly one
/// attribute key.
pub fn plan_options() -> PlanOptions {
    let mut dedicated = Vec::new();
    for (scope, cols) in [(AttrScope::Resource, RESOURCE_COLUMNS), (AttrScope::Span, SPAN_COLUMNS)] {
        for c in cols.iter().filter(|c| !c.is_int && c.keys.len() == 1) {
            dedicated.push((scope, c.keys[0].to_string(), c.column.to_string()));
        }
    }
    PlanOptions {
        dedicated,
        whole_traces: false,
    }
}

pub(crate) fn to_df(e: tracehouse_traceql::Error) -> DataFusionError {
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

/// The `traceql_metrics(query, start, end, step)` table function of one tenant: one row per
/// series and bucket that holds spans, the `by()` labels as text columns named as Tempo names
/// them, `time` (the bucket's end, as Tempo stamps its sample) and `value`. `start` and `end`
/// are text as Tempo's API takes them (unix seconds, ns or RFC 3339) or integer ns; `step` is
/// text (seconds or a Go duration) or integer ns.
#[derive(Debug)]
pub struct TraceqlMetricsFunction {
    spans: Arc<dyn TableProvider>,
}

impl TraceqlMetricsFunction {
    pub fn new(spans: Arc<dyn TableProvider>) -> Self {
        Self { spans }
    }
}

impl TableFunctionImpl for TraceqlMetricsFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        let usage = || {
            DataFusionError::Plan(
                "traceql_metrics() takes four literals: the TraceQL metrics query, start, end (unix seconds, \
                 ns or RFC 3339) and step (seconds, a Go duration such as '1m', or ns)"
                    .into(),
            )
        };
        let [query, start, end, step] = args.exprs() else {
            return Err(usage());
        };
        let text = text_literal(query).ok_or_else(usage)?;
        let time = |e: &Expr| int_literal(e).or_else(|| text_literal(e).and_then(crate::metrics::timestamp_ns));
        let step = int_literal(step).or_else(|| text_literal(step).and_then(crate::metrics::seconds_or_duration_ns));
        let (Some(start), Some(end), Some(step)) = (time(start), time(end), step) else {
            return Err(usage());
        };
        let request = crate::metrics::MetricsRequest {
            query: text.to_string(),
            start_unix_nano: start,
            end_unix_nano: end,
            step_ns: step,
            instant: false,
            exemplars: 0,
            limits: crate::metrics::MetricsLimits::default(),
        };
        let (parsed, range) = crate::metrics::prepare(&request).map_err(to_plain_df)?;
        let sampling = crate::metrics::Sampling::of(&parsed);
        let scan = crate::metrics::spans_in(spans_scan(self.spans.clone())?, &range).map_err(to_plain_df)?;
        let scan = sampling.sampled(scan).map_err(to_plain_df)?;
        let (plan, shape) = crate::metrics::lone_plan(&parsed, scan, &range).map_err(to_plain_df)?;
        let plan = crate::metrics::as_rows(plan, &shape, &range, sampling.multiplier())?;
        Ok(Arc::new(ViewTable::new(
            plan,
            Some(format!("traceql_metrics({text:?})")),
        )))
    }
}

/// An integer literal's value.
fn int_literal(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal(ScalarValue::Int64(Some(v)), _) => Some(*v),
        Expr::Literal(ScalarValue::Int32(Some(v)), _) => Some(i64::from(*v)),
        _ => None,
    }
}

fn to_plain_df(e: crate::Error) -> DataFusionError {
    match e {
        crate::Error::DataFusion(df) => df,
        other => DataFusionError::Plan(other.to_string()),
    }
}

fn spans_scan(spans: Arc<dyn TableProvider>) -> datafusion::error::Result<LogicalPlan> {
    LogicalPlanBuilder::scan("spans", provider_as_source(spans), None)?.build()
}

pub use crate::search::{
    HitValue, MAX_SEARCH_LIMIT, MAX_SPSS, SearchRequest, ServiceStat, SpanHit, SpansetHit, TraceHit, returned_fields,
};
