//! Search plans prepared once and run once per trace-id range.
//!
//! A search evaluates the same TraceQL plan over many small inputs: each range of trace ids,
//! read into memory. The plan's scans read [`RangeTable`], whose physical scan
//! ([`RangeScanExec`]) takes its rows from the task that runs it (a [`RangeSpans`] extension of
//! the task's config), so one physical plan serves every range, and is kept in
//! [`SearchPlans`] for the next search with the same query, limit and spss (a dashboard
//! refresh). Each run starts from a copy with fresh state (`reset_plan_states`). The plans run
//! on one partition (the inputs are small) and without dynamic filters (a reused plan must not
//! carry state between runs). A query with a necessary span condition gets a second plan, the
//! candidate step, that finds the traces of a range worth reading whole; a lone spanset
//! expression (filters on each span's own row, alone or joined by `&&` and `||`) gets a third,
//! which only filters the rows (hits take the trace fields from the rows read).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{ScalarValue, internal_err};
use datafusion::datasource::provider_as_source;
use datafusion::error::Result as DfResult;
use datafusion::execution::session_state::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, TableType, col, lit};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType, reset_plan_states};
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};
use datafusion::prelude::SessionContext;
use tracehouse_traceql::PlanOptions;
use tracehouse_traceql::ast::{AttrScope, BinOp, CmpOp, FieldExpr, Intrinsic, Query, Root, SpansetExpr, Static};
use tracehouse_traceql::{Lone, LoneSet, lone_flag, plan_lone_filter, plan_query, plan_search};
use tracehouse_warehouse::id_range::SpanCondition;
use tracehouse_warehouse::map_filter::{MapFields, map_fields, reads_map_text, with_map_values};
use tracehouse_warehouse::schema::spans_schema;

use super::candidates::necessary_filter;
use super::hits::{HIT_COLUMNS, TRACE_FIELDS, dedicated_name};
use super::returned_fields;
use crate::Result;
use crate::traceql::{plan_options, to_df};

/// Prepared plans kept at most; past this the cache starts over.
pub const SEARCH_PLANS_ENTRIES: usize = 256;

/// Columns every range read carries besides what the plan reads: the window's bounds and
/// what service stats count.
const ALWAYS_READ: [&str; 5] = [
    "trace_id",
    "service_name",
    "status_code",
    "start_time_unix_nano",
    "end_time_unix_nano",
];

/// Columns a lone filter's whole traces are read with besides [`ALWAYS_READ`] and what its
/// plan reads: what the trace fields are found from.
const TRACE_FIELDS_READ: [&str; 2] = ["parent_span_id", "name"];

/// A search plan ready to run over any range.
#[derive(Debug)]
pub struct Prepared {
    /// The search over a range's whole traces.
    pub search: Step,
    /// The trace ids of a range that pass the query's necessary span condition
    /// ([`super::candidates`]), when it has one.
    pub candidates: Option<Step>,
    /// Of a lone spanset expression (filters on each span's own row joined by `&&` and `||`,
    /// [`plan_lone_filter`]), the spans of a range that pass one of its filters: hits take the
    /// trace fields from the rows read ([`super::hits::lone_hits`]) instead of running
    /// `search`.
    pub lone: Option<LoneStep>,
}

/// The step of a lone spanset expression: its rows in [`HIT_COLUMNS`]' layout without the
/// trace fields, then the dedicated columns of returned attributes, then (of more than one
/// filter) each filter's flag ([`tracehouse_traceql::lone_flag`]); and how a trace's spans are
/// picked from them.
#[derive(Debug)]
pub struct LoneStep {
    pub step: Step,
    pub set: LoneSet,
    pub flags: usize,
}

impl Prepared {
    /// The step whose columns whole traces are read with: the lone filter's, or the search's.
    pub fn whole(&self) -> &Step {
        self.lone.as_ref().map_or(&self.search, |l| &l.step)
    }
}

/// One plan over a range's rows, and the columns of `spans` to read the range with.
#[derive(Debug)]
pub struct Step {
    plan: Arc<dyn ExecutionPlan>,
    pub columns: Vec<String>,
    /// Of a candidate step, its condition as an expression over the `spans` columns: a trace
    /// passes when one of its rows does, so reads can filter rows as they decode them.
    pub condition: Option<SpanCondition>,
    /// Whether the step's condition reads text out of attribute maps (their largest leaves).
    pub reads_map_text: bool,
    /// Of the attribute maps the step reads, the value fields it needs, when it needs no other
    /// ([`narrowed`]): reads decode only those leaves of them.
    pub narrowed: Option<MapFields>,
}

/// Prepared search plans by (tenant, query text, spss). Plans do not depend on the
/// tenant, but a shared entry would tell one tenant, by its speed, what another searched.
#[derive(Debug, Default)]
pub struct SearchPlans {
    entries: Mutex<HashMap<PlanKey, Arc<Prepared>>>,
    /// Every query runs its whole search plan, lone filters too (see [`Self::whole_plans_only`]).
    whole_only: bool,
}

/// (tenant, query text, spss).
type PlanKey = (String, String, usize);

impl SearchPlans {
    /// Plans that evaluate every query with its whole search plan, without the lone-filter
    /// step: the reference that step's answers are tested against.
    pub fn whole_plans_only() -> Self {
        Self {
            whole_only: true,
            ..Self::default()
        }
    }

    /// The plan of `query` (whose text is `text`) for `tenant`, prepared now unless it was
    /// before.
    pub async fn get(
        &self,
        ctx: &SessionContext,
        tenant: &str,
        text: &str,
        query: &Query,
        spss: usize,
    ) -> Result<Arc<Prepared>> {
        let key = (tenant.to_string(), text.to_string(), spss);
        if let Some(p) = self.entries.lock().expect("search plans lock").get(&key) {
            return Ok(p.clone());
        }
        let prepared = Arc::new(prepare(ctx, query, spss, self.whole_only).await?);
        let mut entries = self.entries.lock().expect("search plans lock");
        if entries.len() >= SEARCH_PLANS_ENTRIES {
            entries.clear();
        }
        entries.insert(key, prepared.clone());
        Ok(prepared)
    }
}

/// Plans `query` over [`RangeTable`], projected to the columns hits are built from (the
/// attribute maps only when the query returns attributes).
async fn prepare(ctx: &SessionContext, query: &Query, spss: usize, whole_only: bool) -> Result<Prepared> {
    let scan = LogicalPlanBuilder::scan("spans", provider_as_source(Arc::new(RangeTable)), None)?.build()?;
    let options = PlanOptions {
        whole_traces: true,
        ..plan_options()
    };
    let plan = plan_search(query, scan, &options, spss).map_err(to_df)?;
    let fields = returned_fields(query);
    let (dedicated, maps) = returned_columns(&fields, &options);
    let returned = |i: Intrinsic| fields.contains(&FieldExpr::Intrinsic(i));
    // Columns hits carry only when returned are not read otherwise.
    let mut columns: Vec<Expr> = HIT_COLUMNS
        .iter()
        .map(|c| match *c {
            "span_attributes" | "resource_attributes" if !maps => lit(ScalarValue::Null).alias(*c),
            "kind" if !returned(Intrinsic::Kind) => lit(ScalarValue::Null).alias(*c),
            "status_message" if !returned(Intrinsic::StatusMessage) => lit(ScalarValue::Null).alias(*c),
            _ => col(*c),
        })
        .collect();
    columns.extend(dedicated);
    let plan = LogicalPlanBuilder::from(plan).project(columns.clone())?.build()?;
    let mut config = ctx.copied_config().with_target_partitions(1);
    config = config.set_bool("datafusion.optimizer.enable_dynamic_filter_pushdown", false);
    let state = datafusion::execution::session_state::SessionStateBuilder::new_from_existing(ctx.state())
        .with_config(config)
        .build();
    let mut search = step(&state, &plan, &ALWAYS_READ).await?;
    search.narrowed = narrowed(query, &search);
    search.plan = with_looked_up_values(search.plan)?;
    let lone = match whole_only {
        true => None,
        false => lone_step(&state, query, &options, columns).await?,
    };
    let candidates = match necessary_filter(query) {
        Some(condition) => {
            let filter = Query {
                root: Root::Spanset(SpansetExpr::Filter(condition)),
                hints: Vec::new(),
                field_positions: Vec::new(),
            };
            let scan = LogicalPlanBuilder::scan("spans", provider_as_source(Arc::new(RangeTable)), None)?.build()?;
            let plan = plan_query(&filter, scan, &options).map_err(to_df)?;
            let plan = LogicalPlanBuilder::from(plan)
                .project(vec![col("trace_id")])?
                .distinct()?
                .build()?;
            let mut candidates = step(&state, &plan, &["trace_id"]).await?;
            candidates.condition = scan_condition(&candidates.plan);
            // Reading whole attribute maps costs about what reading the whole rows does; a
            // condition decides them from their key and value leaves alone.
            let maps = ["span_attributes", "resource_attributes"];
            let reads_maps = candidates.columns.iter().any(|c| maps.contains(&c.as_str()));
            candidates.reads_map_text = candidates.condition.as_ref().is_some_and(reads_map_text);
            (candidates.condition.is_some() || !reads_maps).then_some(candidates)
        }
        None => None,
    };
    Ok(Prepared {
        search,
        candidates,
        lone,
    })
}

/// The lone step of `query`, when it is a lone spanset expression: its spans projected to
/// `columns` (the search's output, in [`HIT_COLUMNS`]' layout), the trace fields left null,
/// then its filters' flags.
async fn lone_step(
    state: &SessionState,
    query: &Query,
    options: &PlanOptions,
    columns: Vec<Expr>,
) -> Result<Option<LoneStep>> {
    let scan = LogicalPlanBuilder::scan("spans", provider_as_source(Arc::new(RangeTable)), None)?.build()?;
    let Some(Lone { plan, set, flags }) = plan_lone_filter(query, scan, options).map_err(to_df)? else {
        return Ok(None);
    };
    // `columns` is HIT_COLUMNS, then the dedicated columns of returned attributes.
    let names = HIT_COLUMNS.iter().map(Some).chain(std::iter::repeat(None));
    let mut columns: Vec<Expr> = columns
        .into_iter()
        .zip(names)
        .map(|(c, name)| match name {
            Some(name) if TRACE_FIELDS.contains(name) => lit(ScalarValue::Null).alias(*name),
            _ => c,
        })
        .collect();
    if flags > 1 {
        columns.extend((0..flags).map(|i| col(lone_flag(i))));
    }
    let plan = LogicalPlanBuilder::from(plan).project(columns)?.build()?;
    let mut lone = step(state, &plan, &[&ALWAYS_READ[..], &TRACE_FIELDS_READ].concat()).await?;
    lone.narrowed = narrowed(query, &lone);
    lone.plan = with_looked_up_values(lone.plan)?;
    Ok(Some(LoneStep { step: lone, set, flags }))
}

/// `plan` with the values its filters and projections read out of attribute maps read by
/// direct lookups ([`with_map_values`]). Only for the steps that run over rows already read:
/// a candidate step's condition goes to the readers, which push `get_field` into files.
fn with_looked_up_values(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    let rewritten = plan.transform_up(|node| {
        if let Some(filter) = node.downcast_ref::<FilterExec>()
            && let Some(predicate) = with_map_values(filter.predicate())
        {
            let rebuilt = FilterExecBuilder::from(filter).with_predicate(predicate).build()?;
            return Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>));
        }
        let Some(projection) = node.downcast_ref::<ProjectionExec>() else {
            return Ok(Transformed::no(node));
        };
        let exprs: Vec<(ProjectionExpr, bool)> = (projection.expr().iter())
            .map(|p| match with_map_values(&p.expr) {
                Some(expr) => (ProjectionExpr::new(expr, p.alias.clone()), true),
                None => (p.clone(), false),
            })
            .collect();
        if !exprs.iter().any(|(_, changed)| *changed) {
            return Ok(Transformed::no(node));
        }
        let exprs = exprs.into_iter().map(|(e, _)| e);
        let rebuilt = ProjectionExec::try_new(exprs, projection.input().clone())?;
        Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>))
    })?;
    Ok(rewritten.data)
}

/// `plan` made physical, with the columns its scans read and `always`.
async fn step(state: &SessionState, plan: &LogicalPlan, always: &[&str]) -> Result<Step> {
    let plan = state.create_physical_plan(plan).await?;
    let mut columns: Vec<String> = always.iter().map(|c| c.to_string()).collect();
    collect_scanned(&plan, &mut columns);
    // In the order of the `spans` schema.
    let schema = spans_schema();
    columns.sort_by_key(|c| schema.index_of(c).unwrap_or(usize::MAX));
    Ok(Step {
        plan,
        columns,
        condition: None,
        reads_map_text: false,
        narrowed: None,
    })
}

/// Of the maps `step` (the search over whole traces) reads, the value fields its plan reads,
/// when it needs no others: the query is one filter whose attributes are all compared with a
/// value (`{ span.x >= 500 && .y = "a" }`, no `!=`, `!~` or nil), so each span it returns has
/// every attribute it returns in a field the plan compares. A map read but not compared (the
/// other scope's) is read with its keys alone.
fn narrowed(query: &Query, step: &Step) -> Option<MapFields> {
    let Root::Spanset(SpansetExpr::Filter(c)) = &query.root else {
        return None;
    };
    if !compared_conjunction(c) {
        return None;
    }
    let mut exprs = Vec::new();
    let mut stack = vec![&step.plan];
    while let Some(node) = stack.pop() {
        node.apply_expressions(&mut |e| {
            exprs.push(e.clone());
            Ok(TreeNodeRecursion::Continue)
        })
        .ok()?;
        stack.extend(node.children());
    }
    let mut fields = map_fields(exprs.iter())?;
    for map in ["span_attributes", "resource_attributes"] {
        if step.columns.iter().any(|c| c == map) {
            fields.entry(map.to_string()).or_default();
        }
    }
    Some(fields)
}

/// Whether `c` is a conjunction of comparisons of a span's own attribute or intrinsic with a
/// value, none of them `!=`, `!~` or with nil.
fn compared_conjunction(c: &FieldExpr) -> bool {
    let field = |f: &FieldExpr| match f {
        FieldExpr::Attribute(a) => {
            !a.parent && matches!(a.scope, AttrScope::Span | AttrScope::Resource | AttrScope::Unscoped)
        }
        FieldExpr::Intrinsic(_) => true,
        _ => false,
    };
    let value = |f: &FieldExpr| matches!(f, FieldExpr::Static(s) if *s != Static::Nil);
    match c {
        FieldExpr::Binary(BinOp::And, a, b) => compared_conjunction(a) && compared_conjunction(b),
        FieldExpr::Binary(op @ (BinOp::Cmp(_) | BinOp::Regex), a, b) => {
            *op != BinOp::Cmp(CmpOp::Neq) && ((field(a) && value(b)) || (value(a) && field(b)))
        }
        _ => false,
    }
}

impl Step {
    /// The columns to read rows for this step with: of a step with a condition, which reads
    /// keep only the rows that pass, just the trace ids.
    pub fn read_columns(&self) -> Vec<String> {
        match self.condition {
            Some(_) => vec!["trace_id".to_string()],
            None => self.columns.clone(),
        }
    }
}

/// The condition a candidate step's plan filters its scans' rows with: the predicate of the
/// filters right over its scans, when there are some and all have the same.
fn scan_condition(plan: &Arc<dyn ExecutionPlan>) -> Option<SpanCondition> {
    fn collect(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<SpanCondition>) {
        if let Some(filter) = plan.downcast_ref::<FilterExec>()
            && let Some(predicate) = over_scan(filter.predicate().clone(), filter.input())
        {
            out.push(predicate);
        }
        for child in plan.children() {
            collect(child, out);
        }
    }
    let mut found = Vec::new();
    collect(plan, &mut found);
    let first = found.first()?.clone();
    found.iter().all(|p| p.as_ref() == first.as_ref()).then_some(first)
}

/// `predicate` over the output of `input` as an expression over the columns of the
/// [`RangeScanExec`] under it, when only projections lie in between.
fn over_scan(mut predicate: SpanCondition, mut input: &Arc<dyn ExecutionPlan>) -> Option<SpanCondition> {
    loop {
        if input.downcast_ref::<RangeScanExec>().is_some() {
            return Some(predicate);
        }
        if let Some(projection) = input.downcast_ref::<ProjectionExec>() {
            predicate = projection.projection_expr().unproject_expr(&predicate).ok()?;
        } else if input.downcast_ref::<CooperativeExec>().is_none() {
            return None;
        }
        input = input.children()[0];
    }
}

/// The output columns that carry returned attributes from their dedicated columns, and whether
/// some returned attribute needs the attribute maps (one without a dedicated column).
fn returned_columns(fields: &[FieldExpr], options: &PlanOptions) -> (Vec<Expr>, bool) {
    let (mut columns, mut maps) = (Vec::new(), false);
    for f in fields {
        let FieldExpr::Attribute(a) = f else {
            continue;
        };
        let scopes = match a.scope {
            AttrScope::Unscoped => vec![AttrScope::Span, AttrScope::Resource],
            scope => vec![scope],
        };
        for scope in scopes {
            let column = options
                .dedicated
                .iter()
                .find(|(s, key, _)| *s == scope && *key == a.name)
                .map(|(_, _, column)| column);
            match column {
                Some(c) => {
                    let e = col(c.as_str()).alias(dedicated_name(scope, &a.name));
                    if !columns.contains(&e) {
                        columns.push(e);
                    }
                }
                None => maps = true,
            }
        }
    }
    (columns, maps)
}

/// Adds the columns the [`RangeScanExec`]s of `plan` read to `out`.
fn collect_scanned(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<String>) {
    if let Some(scan) = plan.downcast_ref::<RangeScanExec>() {
        for f in scan.schema.fields() {
            if !out.contains(f.name()) {
                out.push(f.name().clone());
            }
        }
    }
    for child in plan.children() {
        collect_scanned(child, out);
    }
}

impl Step {
    /// Runs the plan over `spans` (batches with [`Step::columns`]), in `ctx`'s runtime.
    pub async fn run(&self, ctx: &SessionContext, spans: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        let plan = reset_plan_states(self.plan.clone())?;
        let task = ctx.task_ctx();
        let config = task
            .session_config()
            .clone()
            .with_extension(Arc::new(RangeSpans(spans)));
        let task = TaskContext::new(
            None,
            task.session_id(),
            config,
            task.scalar_functions().clone(),
            task.higher_order_functions().clone(),
            task.aggregate_functions().clone(),
            task.window_functions().clone(),
            task.runtime_env(),
        );
        Ok(datafusion::physical_plan::collect(plan, Arc::new(task)).await?)
    }
}

/// The rows of the range a search plan runs over, handed to its scans through the task.
#[derive(Debug)]
pub struct RangeSpans(pub Vec<RecordBatch>);

/// `spans` as a search plan sees it: the rows of the range being run.
#[derive(Debug)]
pub struct RangeTable;

#[async_trait]
impl TableProvider for RangeTable {
    fn schema(&self) -> SchemaRef {
        spans_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = match projection {
            Some(p) => Arc::new(spans_schema().project(p)?),
            None => spans_schema(),
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Arc::new(RangeScanExec {
            schema,
            properties: Arc::new(properties),
        }))
    }
}

/// Scans the [`RangeSpans`] of the task that runs it.
#[derive(Debug)]
pub struct RangeScanExec {
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl DisplayAs for RangeScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let names: Vec<&str> = self.schema.fields().iter().map(|f| f.name().as_str()).collect();
        write!(f, "RangeScanExec: projection=[{}]", names.join(", "))
    }
}

impl ExecutionPlan for RangeScanExec {
    fn name(&self) -> &str {
        "RangeScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, _children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("RangeScanExec has one partition, not {partition}");
        }
        let Some(spans) = context.session_config().get_extension::<RangeSpans>() else {
            return internal_err!("RangeScanExec runs only with the spans of a range");
        };
        let mut batches = Vec::with_capacity(spans.0.len());
        for b in &spans.0 {
            let columns = self
                .schema
                .fields()
                .iter()
                .map(|f| b.column_by_name(f.name()).cloned())
                .collect::<Option<Vec<_>>>();
            let Some(columns) = columns else {
                return internal_err!("a range was read without a column its plan reads");
            };
            batches.push(RecordBatch::try_new(self.schema.clone(), columns)?);
        }
        Ok(Box::pin(MemoryStream::try_new(batches, self.schema.clone(), None)?))
    }
}

#[cfg(test)]
mod tests {
    /// The warehouse's scan filters recognise the planner's array comparison by name.
    #[test]
    fn array_comparison_has_the_name_the_warehouse_knows() {
        assert_eq!(
            tracehouse_warehouse::map_filter::ARRAY_ANY_UDF,
            tracehouse_traceql::array::NAME
        );
    }
}
