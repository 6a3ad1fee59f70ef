//! TraceQL in the SQL engine: the `traceql('<query>')` table function and Tempo-style search.
//!
//! `traceql()` compiles its query with the traceql crate into a logical plan over the tenant's
//! `spans` table and serves it as a view, so the plan is inlined into the surrounding SQL and
//! `EXPLAIN` shows it. Search (in [`crate::search`]) runs the same planner with Tempo's result
//! shape.

use std::sync::Arc;

use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder};
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

fn spans_scan(spans: Arc<dyn TableProvider>) -> datafusion::error::Result<LogicalPlan> {
    LogicalPlanBuilder::scan("spans", provider_as_source(spans), None)?.build()
}

pub use crate::search::{
    HitValue, MAX_SEARCH_LIMIT, MAX_SPSS, SearchRequest, ServiceStat, SpanHit, SpansetHit, TraceHit, returned_fields,
};
