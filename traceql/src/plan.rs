//! Planning: a validated [`Query`] into a DataFusion `LogicalPlan` over the spans table, built
//! with `LogicalPlanBuilder` and `Expr` (never SQL text).
//!
//! Every spanset expression becomes a relation of keys `(trace_id, span_id, spanset)`:
//! `spanset` names the group a span belongs to after `by()` (empty otherwise). Filters scan
//! the spans table with the condition as a pushed-down predicate; `&&` and `||` are semi joins
//! and unions on `trace_id`; structural operators are equality or range joins over nested-set
//! numbers (see [`crate::structure`]) computed for the traces that can match; scalar filters
//! are aggregates per spanset joined back. The final keys join the spans table once more for
//! the columns and trace-level fields the caller returns.
//!
//! The input is the spans table as a `LogicalPlan`; the planner needs only these columns:
//! `trace_id`, `span_id`, `parent_span_id`, `name`, `kind`, `status_code`, `status_message`,
//! `start_time_unix_nano`, `end_time_unix_nano`, `duration_ns`, `service_name`, `scope_name`,
//! `scope_version`, the attribute maps `span_attributes`, `resource_attributes`,
//! `scope_attributes` (`Map<Utf8, Struct{str,int,double,bool,...}>`) and the lists `events` and
//! `links`. Dedicated attribute columns are named by [`PlanOptions::dedicated`].

use std::sync::Arc;

use datafusion::arrow::array::{ListArray, new_null_array};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Column, JoinType, ScalarValue, UnnestOptions};
use datafusion::functions::core::expr_fn::{coalesce, get_field, named_struct};
use datafusion::functions::expr_fn::concat;
use datafusion::functions::math::expr_fn::power;
use datafusion::functions_aggregate::average::avg_udaf;
use datafusion::functions_aggregate::count::count_all_window;
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::expr_fn::{array_agg, avg, count, max, min, sum};
use datafusion::functions_aggregate::min_max::{max_udaf, min_udaf};
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::functions_nested::expr_fn::cardinality;
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{
    AggregateUDF, Expr, ExprFunctionExt, LogicalPlan, LogicalPlanBuilder, Operator, SortExpr, WindowFrame,
    WindowFrameBound, WindowFrameUnits, WindowFunctionDefinition, binary_expr, cast, col, expr::TryCast,
    expr::WindowFunction, lit, not, when,
};

pub mod metrics;

pub use metrics::{MetricsShape, StepRange, plan_metrics};

use crate::array;
use crate::ast::*;
use crate::label::{self, ValueKind};
use crate::validate::{Type, parent_intrinsic, type_of};
use crate::{Error, Result};

/// What the planner knows about the table beyond the fixed columns.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Text columns that hold one attribute exactly: `(scope, key, column)`, used for string
    /// comparisons so they push down into the Parquet scan.
    pub dedicated: Vec<(AttrScope, String, String)>,
    /// The spans are a few whole traces (a search's chunk): trace facts and nested-set
    /// numbers are computed over all of them, instead of only over the traces that can match
    /// (which evaluates the match a second time: plans do not share subplans).
    pub whole_traces: bool,
}

/// Column names of the plan's output beyond the spans table's own columns.
pub mod out {
    /// The trace's root span service (`NULL` when the root never arrived).
    pub const ROOT_SERVICE: &str = "trace_root_service";
    /// The trace's root span name.
    pub const ROOT_NAME: &str = "trace_root_name";
    /// Earliest span start of the trace, ns since the epoch.
    pub const TRACE_START: &str = "trace_start_time_unix_nano";
    /// Latest span end minus earliest span start, ns.
    pub const TRACE_DURATION: &str = "trace_duration_ns";
    /// The spanset the span belongs to: empty, or `by(...)=value` labels after `by()`.
    pub const SPANSET: &str = "spanset";
    /// Spans matched in the span's spanset (search plans only).
    pub const MATCHED: &str = "spanset_matched";
}

const TRACE_ID: &str = "trace_id";
const SPAN_ID: &str = "span_id";
/// The trace and span ids of the keys [`Planner::with_values_and`] joins to their values.
const KEY_TRACE: &str = "__kt";
const KEY_SPAN: &str = "__ks";
const GRP: &str = "spanset";

/// Plans `query` over `spans`: one row per matching span with all of the table's columns
/// and the trace-level fields of [`out`].
pub fn plan_query(query: &Query, spans: LogicalPlan, options: &PlanOptions) -> Result<LogicalPlan> {
    check_cost(&query.root)?;
    let mut p = Planner::new(spans, options);
    // A lone filter reads its rows straight from the filtered scan, without the join back.
    if let Root::Spanset(SpansetExpr::Filter(e)) = &query.root {
        let needs = Needs::of(e);
        if !needs.events && !needs.links {
            return checked_size(p.output_filter(e, needs)?);
        }
    }
    let keys = p.root(&query.root)?;
    checked_size(p.output(keys)?)
}

/// Largest [`cost`] of a query planned. A structural operator uses both operands twice, so a
/// chain of them doubles the plan per operator (and DataFusion walks the whole tree in each
/// builder step); 100 admits four chained structural operators and refuses five, before any
/// plan is built.
pub const MAX_COST: u64 = 100;

/// The size of the plan a query builds, in units of one spanset filter, counting operands that
/// are planned twice twice.
pub fn cost(root: &Root) -> u64 {
    match root {
        Root::Spanset(s) => spanset_cost(s),
        Root::ScalarFilter(f) => scalar_cost(&f.lhs)
            .saturating_add(scalar_cost(&f.rhs))
            .saturating_mul(2),
        Root::Metrics(_) => 1,
    }
}

fn spanset_cost(e: &SpansetExpr) -> u64 {
    match e {
        SpansetExpr::Filter(_) => 1,
        SpansetExpr::Op(SpansetOp::And | SpansetOp::Union, a, b) => {
            spanset_cost(a).saturating_add(spanset_cost(b)).saturating_add(1)
        }
        SpansetExpr::Op(_, a, b) => spanset_cost(a)
            .saturating_add(spanset_cost(b))
            .saturating_mul(2)
            .saturating_add(1),
        SpansetExpr::Pipeline(stages) => stages.iter().fold(0u64, |c, stage| {
            let step = match stage {
                Stage::Spanset(s) => spanset_cost(s),
                Stage::ScalarFilter(f) => scalar_cost(&f.lhs).saturating_add(scalar_cost(&f.rhs)),
                Stage::By(_) | Stage::Coalesce | Stage::Select(_) => 0,
            };
            c.saturating_add(step).saturating_add(1)
        }),
    }
}

fn scalar_cost(e: &ScalarExpr) -> u64 {
    match e {
        ScalarExpr::Static(_) | ScalarExpr::Aggregate(_) => 0,
        ScalarExpr::Binary(_, a, b) => scalar_cost(a).saturating_add(scalar_cost(b)),
        ScalarExpr::Wrapped(s, _) => spanset_cost(s).saturating_add(1),
    }
}

/// Refuses a query whose [`cost`] is over [`MAX_COST`].
fn check_cost(root: &Root) -> Result<()> {
    let c = cost(root);
    if c > MAX_COST {
        return Err(Error::TooComplex(format!(
            "it would plan {c} spanset evaluations, more than {MAX_COST}; use fewer structural operators (each one doubles the work of what it joins)"
        )));
    }
    Ok(())
}

/// Most nodes a TraceQL plan may have, counting a subplan once per place it is used. A plan's
/// size is what optimising and running it costs; operators that use an operand twice (the
/// structural ones) double it, so a chain of them is refused here in microseconds instead of
/// being optimised for minutes.
pub const MAX_PLAN_NODES: usize = 2_000;

/// `plan`, or [`Error::TooComplex`] when it has more than [`MAX_PLAN_NODES`] nodes. Counting
/// stops at the limit, so this costs at most that many steps.
pub fn checked_size(plan: LogicalPlan) -> Result<LogicalPlan> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut nodes = 0usize;
    plan.apply(|_| {
        nodes += 1;
        Ok(if nodes > MAX_PLAN_NODES {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })?;
    if nodes > MAX_PLAN_NODES {
        return Err(Error::TooComplex(format!(
            "it plans into more than {MAX_PLAN_NODES} steps; use fewer structural operators or pipeline stages"
        )));
    }
    Ok(plan)
}

/// Plans a search as Tempo runs it: matching traces, most recent first, with `spss` spans per
/// spanset (the earliest), each row carrying how many spans its spanset matched in
/// [`out::MATCHED`]. The caller keeps the traces it wants (a search evaluates small inputs and
/// merges their hits: a top-K here would evaluate the match a second time).
pub fn plan_search(query: &Query, spans: LogicalPlan, options: &PlanOptions, spss: usize) -> Result<LogicalPlan> {
    check_cost(&query.root)?;
    let mut p = Planner::new(spans, options);
    let keys = p.root(&query.root)?;
    let rows = LogicalPlanBuilder::from(p.output(keys)?);
    let partition = vec![col(TRACE_ID), col(GRP)];
    let rank = row_number()
        .partition_by(partition.clone())
        .order_by(vec![
            col("start_time_unix_nano").sort(true, true),
            col(SPAN_ID).sort(true, true),
        ])
        .build()?
        .alias("__rank");
    let matched = count_all_window().partition_by(partition).build()?.alias(out::MATCHED);
    let names: Vec<Expr> = rows
        .schema()
        .columns()
        .into_iter()
        .map(|c| Expr::Column(Column::new_unqualified(c.name)))
        .collect();
    let mut keep = names.clone();
    keep.push(col(out::MATCHED));
    let plan = rows
        // Window expressions with different orderings go in separate window nodes.
        .window(vec![matched])?
        .window(vec![rank])?
        .filter(col("__rank").lt_eq(lit(spss as i64)))?
        .project(keep)?
        .sort(vec![
            col(out::TRACE_START).sort(false, true),
            col(TRACE_ID).sort(true, true),
            col(GRP).sort(true, true),
            col("start_time_unix_nano").sort(true, true),
        ])?
        .build()?;
    let plan = checked_size(plan)?;
    Ok(plan)
}

/// How the spans of a lone spanset expression ([`plan_lone_filter`]) are picked from a
/// trace's rows, each flagged with the filters it passes: a filter keeps its rows, `&&` the
/// rows of both sides when each side kept some, `||` the rows of either side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoneSet {
    /// The filter of this flag (an index into [`Lone::flags`]'s order).
    Filter(usize),
    And(Box<LoneSet>, Box<LoneSet>),
    Union(Box<LoneSet>, Box<LoneSet>),
}

/// Most filters a lone spanset expression has: one flag bit each.
pub const MAX_LONE_FILTERS: usize = 64;

impl LoneSet {
    /// The flags whose rows a trace keeps, given `present` (the flags some row of the trace
    /// has, one bit each).
    pub fn kept(&self, present: u64) -> u64 {
        match self {
            Self::Filter(i) => 1 << i,
            Self::And(a, b) => {
                let (a, b) = (a.kept(present), b.kept(present));
                match a & present != 0 && b & present != 0 {
                    true => a | b,
                    false => 0,
                }
            }
            Self::Union(a, b) => a.kept(present) | b.kept(present),
        }
    }
}

/// A lone spanset expression planned: the rows that pass some filter of it, with the columns
/// of `spans` and then, when it has more than one filter, a boolean column per filter
/// ([`lone_flag`]) saying whether the row passes it; and how a trace's spans are picked.
#[derive(Debug)]
pub struct Lone {
    pub plan: LogicalPlan,
    pub set: LoneSet,
    pub flags: usize,
}

/// The name of the output column of a lone spanset expression's `i`th filter flag.
pub fn lone_flag(i: usize) -> String {
    format!("__lone_flag_{i}")
}

/// The spans of `query` when it is a lone spanset expression: filters on each span's own row
/// (no trace-level intrinsics, parent, nested-set values, events or links) joined by `&&` and
/// `||`, at most [`MAX_LONE_FILTERS`]; `None` for any other query. Its search hits are the
/// rows its [`LoneSet`] keeps, with the trace fields of their traces ([`plan_search`] finds
/// both in one plan).
pub fn plan_lone_filter(query: &Query, spans: LogicalPlan, options: &PlanOptions) -> Result<Option<Lone>> {
    let Root::Spanset(root) = &query.root else {
        return Ok(None);
    };
    let mut filters = Vec::new();
    let Some(set) = lone_set(root, &mut filters) else {
        return Ok(None);
    };
    if filters.len() > MAX_LONE_FILTERS {
        return Ok(None);
    }
    check_cost(&query.root)?;
    let mut p = Planner::new(spans, options);
    let conds = filters
        .iter()
        .map(|e| p.lower_bool(e, false))
        .collect::<Result<Vec<_>>>()?;
    let mut columns = p.span_columns("s");
    if conds.len() > 1 {
        let flag = |(i, c): (usize, &Expr)| c.clone().is_true().alias(lone_flag(i));
        columns.extend(conds.iter().enumerate().map(flag));
    }
    let any = conds.into_iter().reduce(Expr::or).expect("a lone set has a filter");
    let plan = p.base(Needs::default())?.filter(any)?.project(columns)?.build()?;
    Ok(Some(Lone {
        plan: checked_size(plan)?,
        flags: filters.len(),
        set,
    }))
}

/// `e` as a [`LoneSet`] over `filters` (its filters pushed in order), when it is one.
fn lone_set<'e>(e: &'e SpansetExpr, filters: &mut Vec<&'e FieldExpr>) -> Option<LoneSet> {
    match e {
        SpansetExpr::Filter(c) if Needs::of(c).row_only() => {
            filters.push(c);
            Some(LoneSet::Filter(filters.len() - 1))
        }
        SpansetExpr::Op(op @ (SpansetOp::And | SpansetOp::Union), a, b) => {
            let (a, b) = (Box::new(lone_set(a, filters)?), Box::new(lone_set(b, filters)?));
            Some(match op {
                SpansetOp::And => LoneSet::And(a, b),
                _ => LoneSet::Union(a, b),
            })
        }
        _ => None,
    }
}

fn q(rel: &str, name: &str) -> Expr {
    Expr::Column(Column::new(Some(rel), name))
}

fn plan_err<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::Plan(msg.into()))
}

/// What a filter's condition reads beyond the span row.
#[derive(Debug, Default, Clone, Copy)]
struct Needs {
    trace: bool,
    nested: bool,
    parent: bool,
    events: bool,
    links: bool,
}

impl Needs {
    /// Whether a condition reads the span's own row alone.
    fn row_only(self) -> bool {
        !(self.trace || self.nested || self.parent || self.events || self.links)
    }

    fn of(e: &FieldExpr) -> Self {
        let mut n = Self::default();
        e.visit_fields(&mut |f| match f {
            FieldExpr::Intrinsic(i) => match i {
                Intrinsic::TraceDuration | Intrinsic::RootName | Intrinsic::RootService => n.trace = true,
                Intrinsic::ChildCount
                | Intrinsic::NestedSetLeft
                | Intrinsic::NestedSetRight
                | Intrinsic::NestedSetParent => n.nested = true,
                Intrinsic::EventName | Intrinsic::EventTimeSinceStart => n.events = true,
                Intrinsic::LinkTraceId | Intrinsic::LinkSpanId => n.links = true,
                _ => {}
            },
            FieldExpr::Attribute(a) => {
                if a.parent {
                    n.parent = true;
                }
                match a.scope {
                    AttrScope::Event => n.events = true,
                    AttrScope::Link => n.links = true,
                    _ => {}
                }
            }
            _ => {}
        });
        n
    }

    fn union(self, o: Self) -> Self {
        Self {
            trace: self.trace || o.trace,
            nested: self.nested || o.nested,
            parent: self.parent || o.parent,
            events: self.events || o.events,
            links: self.links || o.links,
        }
    }
}

/// A lowered value.
#[derive(Clone)]
enum Val {
    Typed(Expr, Type),
    /// An attribute value struct, and a dedicated text column holding the same string.
    Attr(Expr, Option<Expr>),
    /// A number whose kind is known only per span (arithmetic on attributes): `int` holds it
    /// where it is an integer, `float` always holds it as a double.
    Num {
        int: Expr,
        float: Expr,
    },
    Nil,
}

struct Planner<'a> {
    spans: LogicalPlan,
    options: &'a PlanOptions,
    next_alias: usize,
}

impl<'a> Planner<'a> {
    fn new(spans: LogicalPlan, options: &'a PlanOptions) -> Self {
        Self {
            spans,
            options,
            next_alias: 0,
        }
    }

    fn alias(&mut self, prefix: &str) -> String {
        self.next_alias += 1;
        format!("__{prefix}{}", self.next_alias)
    }

    /// Every column of the spans, taken from the relation `rel` under its own name.
    fn span_columns(&self, rel: &str) -> Vec<Expr> {
        let fields = self.spans.schema().fields();
        fields.iter().map(|f| q(rel, f.name()).alias(f.name())).collect()
    }

    fn scan(&self) -> LogicalPlanBuilder {
        LogicalPlanBuilder::from(self.spans.clone())
    }

    // ----- roots and spansets -------------------------------------------------------------

    fn root(&mut self, root: &Root) -> Result<LogicalPlan> {
        match root {
            Root::Spanset(s) => self.spanset(s),
            Root::ScalarFilter(f) => self.wrapped_filter(f),
            Root::Metrics(_) => plan_err(
                "metrics queries (rate, count_over_time, ...) are not served by search; query spans with a spanset \
                 pipeline or use SQL aggregates",
            ),
        }
    }

    fn spanset(&mut self, s: &SpansetExpr) -> Result<LogicalPlan> {
        match s {
            SpansetExpr::Filter(e) => self.filter(e),
            SpansetExpr::Op(op, a, b) => {
                let ka = self.spanset(a)?;
                let kb = self.spanset(b)?;
                self.spanset_op(*op, ka, kb)
            }
            SpansetExpr::Pipeline(stages) => {
                let mut keys: Option<LogicalPlan> = None;
                for stage in stages {
                    keys = Some(self.stage(stage, keys)?);
                }
                keys.ok_or_else(|| Error::Plan("empty pipeline".into()))
            }
        }
    }

    /// The spans a filter keeps, as keys.
    fn filter(&mut self, e: &FieldExpr) -> Result<LogicalPlan> {
        let needs = Needs::of(e);
        let base = self.base(needs)?;
        let cond = self.lower_bool(e, false)?;
        let mut b = base.filter(cond)?.project(vec![
            q("s", TRACE_ID).alias(TRACE_ID),
            q("s", SPAN_ID).alias(SPAN_ID),
            lit("").alias(GRP),
        ])?;
        if needs.events || needs.links {
            b = b.distinct()?;
        }
        Ok(b.build()?)
    }

    /// The span rows (alias `s`) with what `needs` asks for joined on: trace fields (`t`),
    /// nested-set numbers (`n`), the parent span (`p`); events and links unnested in `s`.
    fn base(&mut self, needs: Needs) -> Result<LogicalPlanBuilder> {
        let mut span = self.scan();
        for (list, wanted) in [("events", needs.events), ("links", needs.links)] {
            if wanted {
                span = unnest_keeping_empty(span, list)?;
            }
        }
        let mut b = span.alias("s")?;
        if needs.trace {
            let t = self.trace_info(None)?.alias("t")?.build()?;
            b = b.join_on(t, JoinType::Inner, vec![q("s", TRACE_ID).eq(q("t", TRACE_ID))])?;
        }
        if needs.nested {
            let n = self.nested_set(None)?.alias("n")?.build()?;
            b = b.join_on(
                n,
                JoinType::Left,
                vec![
                    q("s", TRACE_ID).eq(q("n", TRACE_ID)),
                    q("s", SPAN_ID).eq(q("n", SPAN_ID)),
                ],
            )?;
        }
        if needs.parent {
            let p = self.scan().alias("p")?.build()?;
            b = b.join_on(
                p,
                JoinType::Left,
                vec![
                    q("s", TRACE_ID).eq(q("p", TRACE_ID)),
                    q("s", "parent_span_id").eq(q("p", SPAN_ID)),
                ],
            )?;
        }
        Ok(b)
    }

    /// The span rows of the traces in `only` (keys), or every span row.
    fn spans_of(&mut self, only: Option<LogicalPlan>) -> Result<LogicalPlanBuilder> {
        let Some(keys) = only.filter(|_| !self.options.whole_traces) else {
            return Ok(self.scan());
        };
        let (a, sp) = (self.alias("k"), self.alias("s"));
        let ids = LogicalPlanBuilder::from(keys)
            .project(vec![col(TRACE_ID)])?
            .distinct()?
            .alias(&a)?
            .build()?;
        Ok(self
            .scan()
            .alias(&sp)?
            .join_on(ids, JoinType::LeftSemi, vec![q(&sp, TRACE_ID).eq(q(&a, TRACE_ID))])?)
    }

    /// Per trace: start, duration, root name and root service; over the traces of `only`
    /// (keys) when given, else over every trace.
    fn trace_info(&mut self, only: Option<LogicalPlan>) -> Result<LogicalPlanBuilder> {
        let spans = self.spans_of(only)?;
        let is_root = col("parent_span_id").is_null();
        Ok(spans
            .aggregate(
                vec![col(TRACE_ID)],
                vec![
                    min(col("start_time_unix_nano")).alias("__start"),
                    max(col("end_time_unix_nano")).alias("__end"),
                    max(when(is_root.clone(), col("name")).end()?).alias(out::ROOT_NAME),
                    max(when(is_root, col("service_name")).end()?).alias(out::ROOT_SERVICE),
                ],
            )?
            .project(vec![
                col(TRACE_ID),
                col("__start").alias(out::TRACE_START),
                (col("__end") - col("__start")).alias(out::TRACE_DURATION),
                col(out::ROOT_NAME),
                col(out::ROOT_SERVICE),
            ])?)
    }

    /// Nested-set numbers `(trace_id, span_id, left, right, parent, children)` of every span
    /// of the traces in `only` (keys), or of every trace.
    fn nested_set(&mut self, only: Option<LogicalPlan>) -> Result<LogicalPlanBuilder> {
        let spans = self.spans_of(only)?;
        let item = named_struct(vec![
            lit("id"),
            col(SPAN_ID),
            lit("parent"),
            coalesce(vec![col("parent_span_id"), lit("")]),
            lit("start"),
            col("start_time_unix_nano"),
        ]);
        let numbered = crate::structure::nested_set_udf().call(vec![col("__spans")]);
        Ok(spans
            .aggregate(vec![col(TRACE_ID)], vec![array_agg(item).alias("__spans")])?
            .project(vec![col(TRACE_ID), numbered.alias("__ns")])?
            .unnest_column("__ns")?
            .project(vec![
                col(TRACE_ID),
                get_field(col("__ns"), "span_id").alias(SPAN_ID),
                get_field(col("__ns"), "left").alias("ns_left"),
                get_field(col("__ns"), "right").alias("ns_right"),
                get_field(col("__ns"), "parent").alias("ns_parent"),
                get_field(col("__ns"), "children").alias("ns_children"),
            ])?)
    }

    fn spanset_op(&mut self, op: SpansetOp, ka: LogicalPlan, kb: LogicalPlan) -> Result<LogicalPlan> {
        match op {
            SpansetOp::And => self.both_sides(ka, kb),
            SpansetOp::Union => Ok(LogicalPlanBuilder::from(ka).union_distinct(kb)?.build()?),
            _ => self.structural(op, ka, kb),
        }
    }

    /// `a && b`: the keys of either side whose trace has keys on both sides. Each side is used
    /// once (tagged, unioned, then a window per trace), so chains of `&&` plan linearly.
    fn both_sides(&mut self, ka: LogicalPlan, kb: LogicalPlan) -> Result<LogicalPlan> {
        let tag = |keys: LogicalPlan, is_a: i64| -> Result<LogicalPlan> {
            Ok(LogicalPlanBuilder::from(keys)
                .project(vec![col(TRACE_ID), col(SPAN_ID), col(GRP), lit(is_a).alias("__is_a")])?
                .build()?)
        };
        let part = vec![col(TRACE_ID)];
        let has = |side: Expr, name: &str| window(max_udaf(), side, part.clone(), vec![], None).map(|w| w.alias(name));
        Ok(LogicalPlanBuilder::from(tag(ka, 1)?)
            .union(tag(kb, 0)?)?
            .window(vec![
                has(col("__is_a"), "__has_a")?,
                has(lit(1i64) - col("__is_a"), "__has_b")?,
            ])?
            .filter(col("__has_a").eq(lit(1i64)).and(col("__has_b").eq(lit(1i64))))?
            .project(vec![col(TRACE_ID), col(SPAN_ID), col(GRP)])?
            .distinct()?
            .build()?)
    }

    /// Rows of `keys` whose trace has (semi) or lacks (anti) a row in `other`.
    fn semi_on_trace(&mut self, keys: LogicalPlan, other: LogicalPlan, join: JoinType) -> Result<LogicalPlan> {
        let (a, b) = (self.alias("l"), self.alias("r"));
        let ids = LogicalPlanBuilder::from(other)
            .project(vec![col(TRACE_ID)])?
            .distinct()?
            .alias(&b)?
            .build()?;
        Ok(LogicalPlanBuilder::from(keys)
            .alias(&a)?
            .join_on(ids, join, vec![q(&a, TRACE_ID).eq(q(&b, TRACE_ID))])?
            .project(key_columns(&a))?
            .build()?)
    }

    /// Structural operators in one pass: both sides' keys, tagged, meet their traces'
    /// nested-set numbers once, and window functions over each trace decide every relation
    /// (no self-join, so nothing is evaluated twice).
    ///
    /// - child / parent / sibling: rows are keyed by the number the relation equates (an A row
    ///   by its `left`, a B row by its `parent` for child, ...); a B row is related when its
    ///   key's partition holds an A row (for siblings: another span's A row).
    /// - descendant: in `left` order, B lies inside some A when the largest `right` of the A
    ///   rows strictly before it exceeds its own `right` (nested sets nest or are disjoint).
    /// - ancestor: B contains some A when the first A row strictly after it starts before
    ///   B's `right`.
    ///
    /// Spans without numbers (cut off from the root) relate to nothing.
    fn structural(&mut self, op: SpansetOp, ka: LogicalPlan, kb: LogicalPlan) -> Result<LogicalPlan> {
        use SpansetOp::*;
        let negated = matches!(op, NotChild | NotDescendant | NotParent | NotAncestor | NotSibling);
        let union = matches!(
            op,
            UnionChild | UnionDescendant | UnionParent | UnionAncestor | UnionSibling
        );
        let relation = match op {
            Child | NotChild | UnionChild => Rel::Child,
            Descendant | NotDescendant | UnionDescendant => Rel::Descendant,
            Parent | NotParent | UnionParent => Rel::Parent,
            Ancestor | NotAncestor | UnionAncestor => Rel::Ancestor,
            Sibling | NotSibling | UnionSibling => Rel::Sibling,
            And | Union => unreachable!("handled by spanset_op"),
        };
        // Number only the traces that can match: those with a right-hand span (and, for the
        // positive relations, a left-hand one).
        let candidates = if negated {
            kb.clone()
        } else {
            self.semi_on_trace(kb.clone(), ka.clone(), JoinType::LeftSemi)?
        };
        let ns = self.nested_set(Some(candidates))?.build()?;
        let tag = |keys: LogicalPlan, is_a: i64| -> Result<LogicalPlan> {
            Ok(LogicalPlanBuilder::from(keys)
                .project(vec![
                    col(TRACE_ID),
                    col(SPAN_ID),
                    col(GRP),
                    lit(is_a).alias("is_a"),
                    lit(1 - is_a).alias("is_b"),
                ])?
                .build()?)
        };
        let tagged = LogicalPlanBuilder::from(tag(ka, 1)?).union(tag(kb, 0)?)?.build()?;
        let (t, n) = (self.alias("t"), self.alias("n"));
        let rows = LogicalPlanBuilder::from(tagged)
            .alias(&t)?
            .join_on(
                LogicalPlanBuilder::from(ns).alias(&n)?.build()?,
                JoinType::Inner,
                vec![q(&t, TRACE_ID).eq(q(&n, TRACE_ID)), q(&t, SPAN_ID).eq(q(&n, SPAN_ID))],
            )?
            .project(vec![
                q(&t, TRACE_ID).alias(TRACE_ID),
                q(&t, SPAN_ID).alias(SPAN_ID),
                q(&t, GRP).alias(GRP),
                q(&t, "is_a").alias("is_a"),
                q(&t, "is_b").alias("is_b"),
                q(&n, "ns_left").alias("l"),
                q(&n, "ns_right").alias("r"),
                q(&n, "ns_parent").alias("p"),
            ])?;
        let is_a = col("is_a").eq(lit(1i64));
        let is_b = col("is_b").eq(lit(1i64));
        // (B related to some A, A related to some B), as conditions over the windowed rows.
        let (rows, b_rel, a_rel) = match relation {
            Rel::Child | Rel::Parent | Rel::Sibling => {
                let key = match relation {
                    Rel::Child => when(is_a.clone(), col("l")).otherwise(col("p"))?,
                    Rel::Parent => when(is_a.clone(), col("p")).otherwise(col("l"))?,
                    _ => col("p"),
                };
                let mut names: Vec<Expr> = rows.schema().columns().into_iter().map(Expr::Column).collect();
                names.push(key.alias("k"));
                let part = vec![col(TRACE_ID), col("k")];
                let part_span = vec![col(TRACE_ID), col("k"), col(SPAN_ID)];
                let rows = rows.project(names)?.window(vec![
                    window(sum_udaf(), col("is_a"), part.clone(), vec![], None)?.alias("n_a"),
                    window(sum_udaf(), col("is_b"), part, vec![], None)?.alias("n_b"),
                ])?;
                let (others_a, others_b) = if relation == Rel::Sibling {
                    // A span is not its own sibling.
                    let rows_self = rows.window(vec![
                        window(sum_udaf(), col("is_a"), part_span.clone(), vec![], None)?.alias("self_a"),
                        window(sum_udaf(), col("is_b"), part_span, vec![], None)?.alias("self_b"),
                    ])?;
                    return self.structural_result(
                        rows_self,
                        col("k").is_not_null().and((col("n_a") - col("self_a")).gt(lit(0i64))),
                        col("k").is_not_null().and((col("n_b") - col("self_b")).gt(lit(0i64))),
                        negated,
                        union,
                    );
                } else {
                    (col("n_a").gt(lit(0i64)), col("n_b").gt(lit(0i64)))
                };
                let present = col("k").is_not_null();
                (rows, present.clone().and(others_a), present.and(others_b))
            }
            Rel::Descendant | Rel::Ancestor => {
                let part = vec![col(TRACE_ID)];
                let order = vec![col("l").sort(true, false)];
                let before = WindowFrame::new_bounds(
                    WindowFrameUnits::Range,
                    WindowFrameBound::Preceding(ScalarValue::Int64(None)),
                    WindowFrameBound::Preceding(ScalarValue::Int64(Some(1))),
                );
                let after = WindowFrame::new_bounds(
                    WindowFrameUnits::Range,
                    WindowFrameBound::Following(ScalarValue::Int64(Some(1))),
                    WindowFrameBound::Following(ScalarValue::Int64(None)),
                );
                let right_of = |side: &Expr| when(side.clone(), col("r")).end();
                let left_of = |side: &Expr| when(side.clone(), col("l")).end();
                let rows = rows
                    .window(vec![
                        window(
                            max_udaf(),
                            right_of(&is_a)?,
                            part.clone(),
                            order.clone(),
                            Some(before.clone()),
                        )?
                        .alias("a_before"),
                        window(max_udaf(), right_of(&is_b)?, part.clone(), order.clone(), Some(before))?
                            .alias("b_before"),
                    ])?
                    .window(vec![
                        window(
                            min_udaf(),
                            left_of(&is_a)?,
                            part.clone(),
                            order.clone(),
                            Some(after.clone()),
                        )?
                        .alias("a_after"),
                        window(min_udaf(), left_of(&is_b)?, part, order, Some(after))?.alias("b_after"),
                    ])?;
                // x inside some Y: Y's right before x exceeds x's right; x contains some Y:
                // the first Y after x starts before x's right.
                let inside = |before: &str| col(before).gt(col("r"));
                let contains = |after: &str| col(after).lt(col("r"));
                if relation == Rel::Descendant {
                    (rows, inside("a_before"), contains("b_after"))
                } else {
                    (rows, contains("a_after"), inside("b_before"))
                }
            }
        };
        self.structural_result(rows, b_rel, a_rel, negated, union)
    }

    /// The keys a structural operator returns from its windowed rows.
    fn structural_result(
        &mut self,
        rows: LogicalPlanBuilder,
        b_related: Expr,
        a_related: Expr,
        negated: bool,
        union: bool,
    ) -> Result<LogicalPlan> {
        let is_a = col("is_a").eq(lit(1i64));
        let is_b = col("is_b").eq(lit(1i64));
        let keep = if negated {
            // As in Tempo, a span cut off from the root (no place in the tree) is not
            // returned by a negated relation either.
            let placed = col("l").is_not_null();
            is_b.and(placed).and(not(coalesce(vec![b_related, lit(false)])))
        } else if union {
            is_b.and(b_related).or(is_a.and(a_related))
        } else {
            is_b.and(b_related)
        };
        Ok(rows
            .filter(keep)?
            .project(vec![col(TRACE_ID), col(SPAN_ID), col(GRP)])?
            .distinct()?
            .build()?)
    }

    // ----- pipelines ------------------------------------------------------------------------

    fn stage(&mut self, stage: &Stage, input: Option<LogicalPlan>) -> Result<LogicalPlan> {
        let input = match input {
            Some(keys) => keys,
            None => match stage {
                // A pipeline that starts with a scalar filter, by() or select() starts from
                // every span.
                Stage::Spanset(s) => return self.spanset(s),
                _ => self.filter(&FieldExpr::Static(Static::Bool(true)))?,
            },
        };
        match stage {
            Stage::Spanset(s) => {
                let matched = self.spanset(s)?;
                let (a, b) = (self.alias("l"), self.alias("r"));
                let matched = LogicalPlanBuilder::from(matched)
                    .project(vec![col(TRACE_ID), col(SPAN_ID)])?
                    .distinct()?
                    .alias(&b)?
                    .build()?;
                Ok(LogicalPlanBuilder::from(input)
                    .alias(&a)?
                    .join_on(
                        matched,
                        JoinType::LeftSemi,
                        vec![q(&a, TRACE_ID).eq(q(&b, TRACE_ID)), q(&a, SPAN_ID).eq(q(&b, SPAN_ID))],
                    )?
                    .project(key_columns(&a))?
                    .build()?)
            }
            Stage::ScalarFilter(f) => self.scalar_filter_stage(f, input),
            Stage::By(e) => {
                let (rel, value) = self.with_values(input, std::slice::from_ref(e), true)?;
                let shown = as_tempo_shows(e, value[0].clone());
                let grp = labelled(col("__kg"), &format!("by({})", tempo_text(e)), shown);
                Ok(LogicalPlanBuilder::from(rel)
                    .project(vec![
                        col(KEY_TRACE).alias(TRACE_ID),
                        col(KEY_SPAN).alias(SPAN_ID),
                        grp.alias(GRP),
                    ])?
                    .build()?)
            }
            Stage::Coalesce => Ok(LogicalPlanBuilder::from(input)
                .project(vec![col(TRACE_ID), col(SPAN_ID), lit("").alias(GRP)])?
                .distinct()?
                .build()?),
            // select() chooses what search results show; the planned rows carry every column.
            Stage::Select(_) => Ok(input),
        }
    }

    /// `keys` joined with the values of `exprs` for each span: the relation has the keys as
    /// `__kt`, `__ks`, `__kg` and values `__v0`, `__v1`, ...; the returned values read those.
    /// `as_text` asks for values that are only rendered as text (`by()` labels), which lets an
    /// attribute read its dedicated column instead of the attribute map.
    fn with_values(
        &mut self,
        keys: LogicalPlan,
        exprs: &[FieldExpr],
        as_text: bool,
    ) -> Result<(LogicalPlan, Vec<Val>)> {
        self.with_values_and(keys, exprs, as_text, &[])
    }

    /// [`Self::with_values`], and the span columns `columns` under their own names.
    fn with_values_and(
        &mut self,
        keys: LogicalPlan,
        exprs: &[FieldExpr],
        as_text: bool,
        columns: &[&str],
    ) -> Result<(LogicalPlan, Vec<Val>)> {
        let needs = exprs.iter().fold(Needs::default(), |n, e| n.union(Needs::of(e)));
        let base = self.base(needs)?.build()?;
        let k = self.alias("k");
        // Key columns under names of their own: re-aliasing them to the input's names trips
        // DataFusion 55's push_down_leaf_projections. tracehouse's engine leaves that rule out
        // (sql/src/engine.rs); the distinct names keep these plans valid under the default
        // optimizer too.
        let mut projection = vec![
            q(&k, TRACE_ID).alias(KEY_TRACE),
            q(&k, SPAN_ID).alias(KEY_SPAN),
            q(&k, GRP).alias("__kg"),
        ];
        let vals = self.value_columns(exprs, as_text, &mut projection)?;
        projection.extend(columns.iter().map(|c| q("s", c).alias(*c)));
        let rel = LogicalPlanBuilder::from(keys)
            .alias(&k)?
            .join_on(
                base,
                JoinType::Inner,
                vec![q(&k, TRACE_ID).eq(q("s", TRACE_ID)), q(&k, SPAN_ID).eq(q("s", SPAN_ID))],
            )?
            .project(projection)?
            .build()?;
        Ok((rel, vals))
    }

    /// The values of `exprs` over the spans relation `s`, each pushed onto `projection` as
    /// `__v0`, `__v1`, ... (`as_text` as in [`Self::with_values`]); the returned values read
    /// those columns.
    fn value_columns(&self, exprs: &[FieldExpr], as_text: bool, projection: &mut Vec<Expr>) -> Result<Vec<Val>> {
        let mut vals = Vec::new();
        for (i, e) in exprs.iter().enumerate() {
            let name = format!("__v{i}");
            let (expr, val) = match self.lower_value_any(e)? {
                Val::Typed(x, t) => (x, Val::Typed(col(&name), t)),
                Val::Attr(_, Some(dedicated)) if as_text => (dedicated, Val::Typed(col(&name), Type::Str)),
                Val::Attr(x, _) => (x, Val::Attr(col(&name), None)),
                Val::Num { int, float } => {
                    let int_name = format!("__v{i}_int");
                    projection.push(int.alias(&int_name));
                    let val = Val::Num {
                        int: col(int_name),
                        float: col(&name),
                    };
                    (float, val)
                }
                Val::Nil => (lit(ScalarValue::Null), Val::Typed(col(&name), Type::Nil)),
            };
            projection.push(expr.alias(name));
            vals.push(val);
        }
        Ok(vals)
    }

    fn scalar_filter_stage(&mut self, f: &ScalarFilter, input: LogicalPlan) -> Result<LogicalPlan> {
        let mut aggs = Vec::new();
        collect_aggregates(&f.lhs, &mut aggs);
        collect_aggregates(&f.rhs, &mut aggs);
        // Each distinct argument is computed once.
        let mut args: Vec<FieldExpr> = Vec::new();
        for a in &aggs {
            if let Some(arg) = &a.arg
                && !args.contains(arg)
            {
                args.push(arg.clone());
            }
        }
        let (rel, vals) = self.with_values(input, &args, false)?;
        // Window aggregates per (trace, spanset) keep the rows, so the input is used once and
        // a pipeline of scalar filters plans linearly.
        let part = vec![col(KEY_TRACE), col("__kg")];
        // Each distinct aggregate is one window expression (DataFusion 55's filter push-down
        // fails on a window node whose expressions repeat).
        let mut distinct: Vec<&Aggregate> = Vec::new();
        for a in &aggs {
            if !distinct.contains(a) {
                distinct.push(a);
            }
        }
        let mut agg_exprs = Vec::new();
        let mut grp = col("__kg");
        for (i, a) in distinct.iter().enumerate() {
            let at = a.arg.as_ref().and_then(|arg| args.iter().position(|x| x == arg));
            let val = at
                .zip(a.arg.as_ref())
                .map(|(at, e)| (at, as_tempo_shows(e, vals[at].clone())));
            let (windows, value) = aggregate_windows(a, i, val, &part)?;
            // A window an argument shares between aggregates is computed once.
            for w in windows {
                if !agg_exprs
                    .iter()
                    .any(|e: &Expr| e.schema_name().to_string() == w.schema_name().to_string())
                {
                    agg_exprs.push(w);
                }
            }
            grp = labelled(grp, &label_name(a), value);
        }
        let cond = self.lower_scalar_cmp(f, &mut |a| {
            let at = distinct.iter().position(|d| *d == a).unwrap_or_default();
            col(format!("__a{at}"))
        })?;
        Ok(LogicalPlanBuilder::from(rel)
            .window(agg_exprs)?
            .filter(cond)?
            .project(vec![
                col(KEY_TRACE).alias(TRACE_ID),
                col(KEY_SPAN).alias(SPAN_ID),
                grp.alias(GRP),
            ])?
            .distinct()?
            .build()?)
    }

    fn lower_scalar_cmp(&self, f: &ScalarFilter, next_agg: &mut impl FnMut(&Aggregate) -> Expr) -> Result<Expr> {
        let l = scalar_expr(&f.lhs, next_agg)?;
        let r = scalar_expr(&f.rhs, next_agg)?;
        Ok(binary_expr(l, cmp_operator(f.op), r))
    }

    /// `(pipeline | agg) op (pipeline | agg) ...` at the root: traces where the comparison of
    /// per-trace values holds; their spans from every pipeline.
    fn wrapped_filter(&mut self, f: &ScalarFilter) -> Result<LogicalPlan> {
        let mut wrapped: Vec<(&SpansetExpr, &Aggregate)> = Vec::new();
        collect_wrapped(&f.lhs, &mut wrapped);
        collect_wrapped(&f.rhs, &mut wrapped);
        let mut keys_all = Vec::new();
        let mut joined: Option<LogicalPlanBuilder> = None;
        for (i, (pipeline, agg)) in wrapped.iter().enumerate() {
            let keys = self.spanset(pipeline)?;
            keys_all.push(keys.clone());
            let args: Vec<FieldExpr> = agg.arg.iter().cloned().collect();
            let (rel, vals) = self.with_values(keys, &args, false)?;
            let v = vals.into_iter().next().map(numeric);
            let per_trace = LogicalPlanBuilder::from(rel)
                .aggregate(
                    vec![col(KEY_TRACE)],
                    vec![aggregate_expr(agg.func, v).alias(format!("__w{i}"))],
                )?
                .project(vec![col(KEY_TRACE).alias(format!("__wt{i}")), col(format!("__w{i}"))])?
                .build()?;
            joined = Some(match joined {
                None => LogicalPlanBuilder::from(per_trace),
                Some(b) => b.join_on(
                    per_trace,
                    JoinType::Inner,
                    vec![col("__wt0").eq(col(format!("__wt{i}")))],
                )?,
            });
        }
        let mut next = 0;
        let cond = self.lower_scalar_cmp(f, &mut |_| {
            let c = col(format!("__w{next}"));
            next += 1;
            c
        })?;
        let traces = joined
            .ok_or_else(|| Error::Plan("a scalar filter needs a pipeline".into()))?
            .filter(cond)?
            .project(vec![col("__wt0").alias(TRACE_ID)])?
            .build()?;
        let mut result: Option<LogicalPlanBuilder> = None;
        for keys in keys_all {
            let kept = self.semi_on_trace(keys, traces.clone(), JoinType::LeftSemi)?;
            result = Some(match result {
                None => LogicalPlanBuilder::from(kept),
                Some(b) => b.union_distinct(kept)?,
            });
        }
        Ok(result.expect("at least one pipeline").build()?)
    }

    /// Joins the final keys to the span rows and their trace fields.
    fn output(&mut self, keys: LogicalPlan) -> Result<LogicalPlan> {
        let traces = self.trace_info(Some(keys.clone()))?.build()?;
        let (k, s, t) = (self.alias("k"), self.alias("s"), self.alias("t"));
        let mut projection = self.span_columns(&s);
        projection.extend([
            q(&t, out::ROOT_SERVICE).alias(out::ROOT_SERVICE),
            q(&t, out::ROOT_NAME).alias(out::ROOT_NAME),
            q(&t, out::TRACE_START).alias(out::TRACE_START),
            q(&t, out::TRACE_DURATION).alias(out::TRACE_DURATION),
            q(&k, GRP).alias(out::SPANSET),
        ]);
        Ok(LogicalPlanBuilder::from(keys)
            .alias(&k)?
            .join_on(
                self.scan().alias(&s)?.build()?,
                JoinType::Inner,
                vec![q(&k, TRACE_ID).eq(q(&s, TRACE_ID)), q(&k, SPAN_ID).eq(q(&s, SPAN_ID))],
            )?
            .join_on(
                LogicalPlanBuilder::from(traces).alias(&t)?.build()?,
                JoinType::Inner,
                vec![q(&k, TRACE_ID).eq(q(&t, TRACE_ID))],
            )?
            .project(projection)?
            .build()?)
    }

    /// The rows of a lone filter (one row per span, so no events or links unnested) with
    /// their trace fields.
    fn output_filter(&mut self, e: &FieldExpr, needs: Needs) -> Result<LogicalPlan> {
        let cond = self.lower_bool(e, false)?;
        let rows = self.base(needs)?.filter(cond)?;
        let keys = rows
            .clone()
            .project(vec![q("s", TRACE_ID).alias(TRACE_ID), lit("").alias(GRP)])?
            .build()?;
        let traces = self.trace_info(Some(keys))?.build()?;
        let t = self.alias("t");
        let mut projection = self.span_columns("s");
        projection.extend([
            q(&t, out::ROOT_SERVICE).alias(out::ROOT_SERVICE),
            q(&t, out::ROOT_NAME).alias(out::ROOT_NAME),
            q(&t, out::TRACE_START).alias(out::TRACE_START),
            q(&t, out::TRACE_DURATION).alias(out::TRACE_DURATION),
            lit("").alias(out::SPANSET),
        ]);
        Ok(rows
            .join_on(
                LogicalPlanBuilder::from(traces).alias(&t)?.build()?,
                JoinType::Inner,
                vec![q("s", TRACE_ID).eq(q(&t, TRACE_ID))],
            )?
            .project(projection)?
            .build()?)
    }

    // ----- field expressions ------------------------------------------------------------------

    /// A condition; `negated` when under `!`, where a missing value must read as false.
    fn lower_bool(&self, e: &FieldExpr, negated: bool) -> Result<Expr> {
        match e {
            FieldExpr::Binary(BinOp::And, a, b) => Ok(self.lower_bool(a, negated)?.and(self.lower_bool(b, negated)?)),
            FieldExpr::Binary(BinOp::Or, a, b) => Ok(self.lower_bool(a, negated)?.or(self.lower_bool(b, negated)?)),
            // `!x` of a value holds where it is the boolean false (a missing value is nil,
            // neither true nor false, as in Tempo).
            FieldExpr::Unary(UnaryOp::Not, a) if matches!(**a, FieldExpr::Attribute(_)) => {
                self.either_scope(a, false, |this, v| {
                    Ok(match this.lower_value(v)? {
                        Val::Attr(x, _) => get_field(x, "bool").is_false(),
                        Val::Typed(x, Type::Bool) => x.is_false(),
                        _ => lit(false),
                    })
                })
            }
            FieldExpr::Unary(UnaryOp::Not, a) => Ok(not(self.lower_bool(a, true)?)),
            // An unscoped attribute is the span's when the span has it, else the resource's,
            // as in Tempo (so `.x = nil` holds where the span lacks `x`).
            leaf => self.either_scope(leaf, negated, |this, v| this.lower_leaf(v)),
        }
    }

    /// `lower` of each copy of `e` with its unscoped attributes read from the span or the
    /// resource ([`expand_unscoped`]), each holding only where the span lacks the attributes
    /// it reads from the resource, joined by OR; `negated` reads a missing value as false.
    fn either_scope(
        &self,
        e: &FieldExpr,
        negated: bool,
        lower: impl Fn(&Self, &FieldExpr) -> Result<Expr>,
    ) -> Result<Expr> {
        let mut out: Option<Expr> = None;
        for (v, span_lacks) in expand_unscoped(e) {
            let read = lower(self, &v)?;
            let mut x = read.clone();
            for a in &span_lacks {
                x = x.and(self.span_lacks(a, &read)?);
            }
            let x = if negated { coalesce(vec![x, lit(false)]) } else { x };
            out = Some(match out {
                None => x,
                Some(acc) => acc.or(x),
            });
        }
        Ok(out.expect("at least one variant"))
    }

    /// That the span has no value of attribute `a` (span-scoped) of the kinds `read` reads of
    /// the resource's: `str` of a string comparison, `int` and `double` of a number's, the
    /// whole value of `= nil`. Reading only those fields keeps map reads narrow; a span whose
    /// attribute has another type than its resource's then reads as lacking it.
    fn span_lacks(&self, a: &Attribute, read: &Expr) -> Result<Expr> {
        let resource = Attribute {
            scope: AttrScope::Resource,
            ..a.clone()
        };
        let (Val::Attr(span, _), Val::Attr(resource, dedicated)) = (self.attribute(a)?, self.attribute(&resource)?)
        else {
            return plan_err("internal: attributes lower to attribute values");
        };
        let (fields, whole) = fields_read(read, &resource);
        let fields = match (fields.is_empty(), whole, dedicated.is_some()) {
            (true, false, true) => vec!["str".to_string()],
            (true, _, _) | (_, true, _) => return Ok(span.is_null()),
            (false, false, _) => fields,
        };
        let absent = fields.into_iter().map(|f| get_field(span.clone(), f).is_null());
        Ok(absent.reduce(Expr::and).expect("a field"))
    }

    fn lower_leaf(&self, e: &FieldExpr) -> Result<Expr> {
        match e {
            FieldExpr::Static(Static::Bool(b)) => Ok(lit(*b)),
            FieldExpr::Binary(BinOp::Cmp(op), a, b) => self.compare(*op, a, b),
            FieldExpr::Binary(op @ (BinOp::Regex | BinOp::NotRegex), a, b) => {
                let value = self.lower_value(a)?;
                let pattern = match &**b {
                    FieldExpr::Static(Static::Str(p)) => lit(format!("^(?:{p})$")),
                    other => concat(vec![lit("^(?:"), string_of(self.lower_value(other)?), lit(")$")]),
                };
                let operator = if *op == BinOp::Regex {
                    Operator::RegexMatch
                } else {
                    Operator::RegexNotMatch
                };
                let elements = match (&value, &pattern) {
                    (Val::Attr(x, None), Expr::Literal(..)) => Some(array::any_element(
                        get_field(x.clone(), "array"),
                        operator,
                        pattern.clone(),
                    )),
                    _ => None,
                };
                let scalar = binary_expr(string_of(value), operator, pattern);
                Ok(match elements {
                    Some(e) => scalar.or(e),
                    None => scalar,
                })
            }
            other => match self.lower_value(other)? {
                Val::Attr(v, _) => Ok(get_field(v, "bool").is_true()),
                Val::Typed(x, Type::Bool) => Ok(x),
                Val::Typed(x, _) | Val::Num { float: x, .. } => Ok(x.is_not_null().and(lit(false))),
                Val::Nil => Ok(lit(false)),
            },
        }
    }

    fn compare(&self, op: CmpOp, a: &FieldExpr, b: &FieldExpr) -> Result<Expr> {
        let (a, b) = (padded_trace_id(a, b), padded_trace_id(b, a));
        let (l, r) = (self.lower_value(&a)?, self.lower_value(&b)?);
        let operator = cmp_operator(op);
        Ok(match (l, r) {
            (Val::Nil, Val::Nil) => lit(matches!(op, CmpOp::Eq | CmpOp::Lte | CmpOp::Gte)),
            (Val::Nil, other) | (other, Val::Nil) => {
                let x = match other {
                    Val::Typed(x, _) | Val::Attr(x, _) | Val::Num { float: x, .. } => x,
                    Val::Nil => unreachable!(),
                };
                if op == CmpOp::Eq { x.is_null() } else { x.is_not_null() }
            }
            (Val::Attr(x, _), Val::Attr(y, _)) => {
                binary_expr(get_field(x.clone(), "str"), operator, get_field(y.clone(), "str"))
                    .or(binary_expr(
                        numeric(Val::Attr(x.clone(), None)),
                        operator,
                        numeric(Val::Attr(y.clone(), None)),
                    ))
                    .or(binary_expr(get_field(x, "bool"), operator, get_field(y, "bool")))
            }
            (Val::Attr(x, dedicated), Val::Typed(y, t)) => attr_vs(x, dedicated, y, t, operator),
            (Val::Typed(y, t), Val::Attr(x, dedicated)) => attr_vs(x, dedicated, y, t, flip(operator)),
            (Val::Typed(x, _), Val::Typed(y, _)) => binary_expr(x, operator, y),
            (l, r) => numbers_compared(l, operator, r),
        })
    }

    /// A value, with unscoped attributes reading the span attribute, else the resource's.
    fn lower_value_any(&self, e: &FieldExpr) -> Result<Val> {
        match e {
            FieldExpr::Attribute(a) if a.scope == AttrScope::Unscoped && parent_intrinsic(a).is_none() => {
                let span = self.attribute(&Attribute {
                    scope: AttrScope::Span,
                    ..a.clone()
                })?;
                let resource = self.attribute(&Attribute {
                    scope: AttrScope::Resource,
                    ..a.clone()
                })?;
                match (span, resource) {
                    (Val::Attr(x, _), Val::Attr(y, _)) => Ok(Val::Attr(coalesce(vec![x, y]), None)),
                    _ => unreachable!("attributes lower to attribute values"),
                }
            }
            other => self.lower_value(other),
        }
    }

    fn lower_value(&self, e: &FieldExpr) -> Result<Val> {
        let t = type_of(e).map_err(Error::Plan)?;
        Ok(match e {
            FieldExpr::Static(s) => match s {
                Static::Nil => Val::Nil,
                Static::Str(v) => Val::Typed(lit(v.clone()), t),
                Static::Int(v) | Static::Duration(v) => Val::Typed(lit(*v), t),
                Static::Float(v) => Val::Typed(lit(*v), t),
                Static::Bool(v) => Val::Typed(lit(*v), t),
                Static::Status(v) => Val::Typed(lit(v.name()), t),
                Static::Kind(v) => Val::Typed(lit(v.name()), t),
            },
            FieldExpr::Intrinsic(i) => Val::Typed(intrinsic("s", *i)?, t),
            FieldExpr::Attribute(a) => match parent_intrinsic(a) {
                Some(i) => Val::Typed(intrinsic("p", i)?, t),
                None => self.attribute(a)?,
            },
            FieldExpr::Unary(UnaryOp::Neg, a) => match self.lower_value_any(a)? {
                v @ (Val::Attr(..) | Val::Num { .. }) => {
                    let (int, float) = number_parts(v);
                    Val::Num {
                        int: Expr::Negative(Box::new(int.unwrap_or_else(|| lit(ScalarValue::Int64(None))))),
                        float: Expr::Negative(Box::new(float)),
                    }
                }
                v => Val::Typed(Expr::Negative(Box::new(numeric(v))), t),
            },
            FieldExpr::Unary(UnaryOp::Not, _)
            | FieldExpr::Binary(BinOp::And | BinOp::Or | BinOp::Cmp(_) | BinOp::Regex | BinOp::NotRegex, ..) => {
                Val::Typed(self.lower_bool(e, false)?, Type::Bool)
            }
            FieldExpr::Binary(BinOp::Arith(op), a, b) => {
                arithmetic(*op, self.lower_value_any(a)?, self.lower_value_any(b)?, t)?
            }
        })
    }

    fn attribute(&self, a: &Attribute) -> Result<Val> {
        let rel = if a.parent { "p" } else { "s" };
        let map = match a.scope {
            AttrScope::Span => q(rel, "span_attributes"),
            AttrScope::Resource => q(rel, "resource_attributes"),
            AttrScope::Instrumentation => q(rel, "scope_attributes"),
            AttrScope::Event => get_field(q(rel, "events"), "attributes"),
            AttrScope::Link => get_field(q(rel, "links"), "attributes"),
            AttrScope::Unscoped => {
                return plan_err(format!("internal: unscoped attribute {a} reached lowering unexpanded"));
            }
        };
        let dedicated = self
            .options
            .dedicated
            .iter()
            .find(|(scope, key, _)| *scope == a.scope && *key == a.name)
            .map(|(_, _, column)| q(rel, column));
        Ok(Val::Attr(get_field(map, a.name.as_str()), dedicated))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rel {
    Child,
    Parent,
    Descendant,
    Ancestor,
    Sibling,
}

/// `func(arg) OVER (PARTITION BY partition ORDER BY order frame)` for an aggregate `func`.
fn window(
    func: Arc<AggregateUDF>,
    arg: Expr,
    partition: Vec<Expr>,
    order: Vec<SortExpr>,
    frame: Option<WindowFrame>,
) -> Result<Expr> {
    let mut w = WindowFunction::new(WindowFunctionDefinition::AggregateUDF(func), vec![arg]);
    w.params.partition_by = partition;
    w.params.window_frame =
        frame.unwrap_or_else(|| WindowFrame::new(if order.is_empty() { None } else { Some(false) }));
    w.params.order_by = order;
    Ok(Expr::from(w))
}

fn key_columns(rel: &str) -> Vec<Expr> {
    vec![
        q(rel, TRACE_ID).alias(TRACE_ID),
        q(rel, SPAN_ID).alias(SPAN_ID),
        q(rel, GRP).alias(GRP),
    ]
}

/// Unnests `list` (events or links) into one row per element, keeping a span whose list is
/// empty as one row with a null element.
fn unnest_keeping_empty(b: LogicalPlanBuilder, list: &str) -> Result<LogicalPlanBuilder> {
    let schema = b.schema().clone();
    let (_, field) = schema
        .qualified_field_with_unqualified_name(list)
        .map_err(|_| Error::Plan(format!("the spans table has no {list} column")))?;
    let DataType::List(item) = field.data_type() else {
        return plan_err(format!("column {list} is not a list"));
    };
    let one_null = ListArray::new(
        item.clone(),
        OffsetBuffer::from_lengths([1]),
        new_null_array(item.data_type(), 1),
        None,
    );
    let filled =
        when(cardinality(col(list)).gt(lit(0u64)), col(list)).otherwise(lit(ScalarValue::List(Arc::new(one_null))))?;
    let projection: Vec<Expr> = schema
        .fields()
        .iter()
        .map(|f| {
            if f.name() == list {
                filled.clone().alias(list)
            } else {
                col(f.name())
            }
        })
        .collect();
    Ok(b.project(projection)?
        .unnest_column_with_options(list, UnnestOptions::new().with_preserve_nulls(true))?)
}

fn intrinsic(rel: &str, i: Intrinsic) -> Result<Expr> {
    Ok(match i {
        Intrinsic::Duration => q(rel, "duration_ns"),
        Intrinsic::Name => q(rel, "name"),
        Intrinsic::Status => q(rel, "status_code"),
        Intrinsic::StatusMessage => coalesce(vec![q(rel, "status_message"), lit("")]),
        Intrinsic::Kind => q(rel, "kind"),
        Intrinsic::SpanId => q(rel, SPAN_ID),
        Intrinsic::ParentId => coalesce(vec![q(rel, "parent_span_id"), lit("")]),
        Intrinsic::TraceId => q(rel, TRACE_ID),
        Intrinsic::TraceDuration => q("t", out::TRACE_DURATION),
        // A trace whose root never arrived has empty root names, as in Tempo.
        Intrinsic::RootName => coalesce(vec![q("t", out::ROOT_NAME), lit("")]),
        Intrinsic::RootService => coalesce(vec![q("t", out::ROOT_SERVICE), lit("")]),
        Intrinsic::EventName => get_field(q(rel, "events"), "name"),
        Intrinsic::EventTimeSinceStart => {
            get_field(q(rel, "events"), "time_unix_nano") - q(rel, "start_time_unix_nano")
        }
        Intrinsic::LinkTraceId => get_field(q(rel, "links"), "trace_id"),
        Intrinsic::LinkSpanId => get_field(q(rel, "links"), "span_id"),
        Intrinsic::InstrumentationName => q(rel, "scope_name"),
        Intrinsic::InstrumentationVersion => q(rel, "scope_version"),
        Intrinsic::ChildCount => coalesce(vec![q("n", "ns_children"), lit(0i64)]),
        Intrinsic::NestedSetLeft => q("n", "ns_left"),
        Intrinsic::NestedSetRight => q("n", "ns_right"),
        Intrinsic::NestedSetParent => q("n", "ns_parent"),
        Intrinsic::Parent => return plan_err("'parent' alone is not a value"),
    })
}

/// `e`, or when it is a text compared with a trace id (`other`), that text as stored: Tempo
/// prints trace ids without their leading zeros and accepts them either way, in either case.
fn padded_trace_id(e: &FieldExpr, other: &FieldExpr) -> FieldExpr {
    let is_trace_id = matches!(other, FieldExpr::Intrinsic(Intrinsic::TraceId | Intrinsic::LinkTraceId));
    match e {
        FieldExpr::Static(Static::Str(id))
            if is_trace_id && !id.is_empty() && id.len() <= 32 && id.bytes().all(|c| c.is_ascii_hexdigit()) =>
        {
            FieldExpr::Static(Static::Str(format!("{:0>32}", id.to_ascii_lowercase())))
        }
        other => other.clone(),
    }
}

/// The fields `e` reads of the attribute value `value` (`get_field(value, 'str')`), and whether
/// it also reads the value whole.
fn fields_read(e: &Expr, value: &Expr) -> (Vec<String>, bool) {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let (mut fields, mut whole) = (Vec::new(), false);
    let _ = e.apply(|node| {
        if node == value {
            whole = true;
            return Ok(TreeNodeRecursion::Jump);
        }
        if let Expr::ScalarFunction(f) = node
            && f.func.name() == "get_field"
            && let [inner, Expr::Literal(ScalarValue::Utf8(Some(field)), _)] = f.args.as_slice()
            && inner == value
        {
            if !fields.contains(field) {
                fields.push(field.clone());
            }
            return Ok(TreeNodeRecursion::Jump);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    (fields, whole)
}

/// Copies of a boolean leaf with each unscoped attribute read as a span, then a resource,
/// attribute (every combination; at most 16), each with the span attributes it read as
/// resource attributes: that copy holds only where the span lacks them (Tempo reads an
/// unscoped attribute from the span when the span has it, else from the resource).
fn expand_unscoped(e: &FieldExpr) -> Vec<(FieldExpr, Vec<Attribute>)> {
    type Variants = Vec<(FieldExpr, Vec<Attribute>)>;
    fn go(e: &FieldExpr) -> Variants {
        match e {
            FieldExpr::Attribute(a) if a.scope == AttrScope::Unscoped && parent_intrinsic(a).is_none() => {
                let scoped = |scope| Attribute { scope, ..a.clone() };
                vec![
                    (FieldExpr::Attribute(scoped(AttrScope::Span)), Vec::new()),
                    (
                        FieldExpr::Attribute(scoped(AttrScope::Resource)),
                        vec![scoped(AttrScope::Span)],
                    ),
                ]
            }
            FieldExpr::Binary(op, a, b) => {
                let (la, lb) = (go(a), go(b));
                let mut out = Vec::new();
                for (x, xs) in &la {
                    for (y, ys) in &lb {
                        if out.len() < 16 {
                            let binary = FieldExpr::Binary(*op, Box::new(x.clone()), Box::new(y.clone()));
                            out.push((binary, xs.iter().chain(ys).cloned().collect()));
                        }
                    }
                }
                out
            }
            FieldExpr::Unary(op, a) => go(a)
                .into_iter()
                .map(|(x, absent)| (FieldExpr::Unary(*op, Box::new(x)), absent))
                .collect(),
            other => vec![(other.clone(), Vec::new())],
        }
    }
    go(e)
}

fn cmp_operator(op: CmpOp) -> Operator {
    match op {
        CmpOp::Eq => Operator::Eq,
        CmpOp::Neq => Operator::NotEq,
        CmpOp::Lt => Operator::Lt,
        CmpOp::Lte => Operator::LtEq,
        CmpOp::Gt => Operator::Gt,
        CmpOp::Gte => Operator::GtEq,
    }
}

fn flip(op: Operator) -> Operator {
    match op {
        Operator::Lt => Operator::Gt,
        Operator::LtEq => Operator::GtEq,
        Operator::Gt => Operator::Lt,
        Operator::GtEq => Operator::LtEq,
        other => other,
    }
}

/// `attr op value`, reading the attribute as the value's type; an array attribute holds it
/// when some element does ([`crate::array`]).
fn attr_vs(attr: Expr, dedicated: Option<Expr>, value: Expr, t: Type, op: Operator) -> Expr {
    // An attribute with a dedicated column (`service.name`, `http.route`, ...) is compared there
    // alone: those columns hold single values.
    let elements = matches!(t, Type::Str | Type::Int | Type::Float | Type::Bool)
        && matches!(value, Expr::Literal(..))
        && dedicated.is_none();
    let elements = elements.then(|| array::any_element(get_field(attr.clone(), "array"), op, value.clone()));
    let scalar = match t {
        Type::Str | Type::Status | Type::Kind => {
            let s = dedicated.unwrap_or_else(|| get_field(attr, "str"));
            binary_expr(s, op, value)
        }
        Type::Bool => binary_expr(get_field(attr, "bool"), op, value),
        // An integer attribute compares as an integer (exact beyond 2^53), a double as a double.
        Type::Int => coalesce(vec![
            binary_expr(get_field(attr.clone(), "int"), op, value.clone()),
            binary_expr(get_field(attr, "double"), op, cast(value, DataType::Float64)),
        ]),
        _ => binary_expr(numeric(Val::Attr(attr, None)), op, cast(value, DataType::Float64)),
    };
    match elements {
        Some(e) => scalar.or(e),
        None => scalar,
    }
}

/// A value as a number: its integer form where it is an integer, and its double form.
fn number_parts(v: Val) -> (Option<Expr>, Expr) {
    match v {
        Val::Typed(x, Type::Int | Type::Duration) => (Some(x.clone()), cast(x, DataType::Float64)),
        Val::Typed(x, _) => (None, cast(x, DataType::Float64)),
        Val::Attr(x, _) => (Some(get_field(x.clone(), "int")), numeric(Val::Attr(x, None))),
        Val::Num { int, float } => (Some(int), float),
        Val::Nil => (None, lit(ScalarValue::Float64(None))),
    }
}

/// `l op r` of two numbers at least one of which has its kind known only per span: as
/// integers where both are integers, else as doubles.
fn numbers_compared(l: Val, op: Operator, r: Val) -> Expr {
    let ((li, lf), (ri, rf)) = (number_parts(l), number_parts(r));
    let as_float = binary_expr(lf, op, rf);
    match (li, ri) {
        (Some(a), Some(b)) => coalesce(vec![binary_expr(a, op, b), as_float]),
        _ => as_float,
    }
}

/// `a op b` as Tempo computes it: integer by integer is integer arithmetic (division
/// truncates, a zero divisor gives nil), anything else is double arithmetic. `t` is the
/// static type of the result.
fn arithmetic(op: ArithOp, a: Val, b: Val, t: Type) -> Result<Val> {
    let ((ai, af), (bi, bf)) = (number_parts(a), number_parts(b));
    let both_int = ai
        .clone()
        .zip(bi.clone())
        .map(|(x, y)| x.is_not_null().and(y.is_not_null()));
    let int = ai.zip(bi).map(|(x, y)| integer_arith(op, x, y)).transpose()?;
    let float = arith(op, af, bf);
    let whole = |f: Expr| Expr::TryCast(TryCast::new(Box::new(f), DataType::Int64));
    Ok(match (t, int, both_int) {
        (Type::Int, Some(int), _) => Val::Typed(int, t),
        (Type::Duration, Some(int), _) => Val::Typed(coalesce(vec![int, whole(float)]), t),
        (Type::Duration, None, _) => Val::Typed(whole(float), t),
        (Type::Number, Some(int), Some(both)) => Val::Num {
            float: when(both, cast(int.clone(), DataType::Float64)).otherwise(float)?,
            int,
        },
        _ => Val::Typed(float, Type::Float),
    })
}

/// Integer `x op y`: wrapping as in Go; a zero divisor gives null (Tempo fails the span), and
/// `x ^ y` is the integer part of the power.
fn integer_arith(op: ArithOp, x: Expr, y: Expr) -> Result<Expr> {
    let guarded = |on_minus_one: Expr, result: Expr| {
        when(y.clone().eq(lit(0i64)), lit(ScalarValue::Int64(None)))
            .when(y.clone().eq(lit(-1i64)), on_minus_one)
            .otherwise(result)
    };
    Ok(match op {
        ArithOp::Add => x + y,
        ArithOp::Sub => x - y,
        ArithOp::Mul => x * y,
        ArithOp::Div => guarded(Expr::Negative(Box::new(x.clone())), x / y.clone())?,
        ArithOp::Mod => guarded(lit(0i64), x % y.clone())?,
        ArithOp::Pow => Expr::TryCast(TryCast::new(
            Box::new(power(cast(x, DataType::Float64), cast(y, DataType::Float64))),
            DataType::Int64,
        )),
    })
}

/// A value as a number: attributes read their int (as a double) or double.
fn numeric(v: Val) -> Expr {
    match v {
        Val::Typed(x, _) | Val::Num { float: x, .. } => x,
        Val::Attr(x, _) => coalesce(vec![
            cast(get_field(x.clone(), "int"), DataType::Float64),
            get_field(x, "double"),
        ]),
        Val::Nil => lit(ScalarValue::Null),
    }
}

/// A value as text: attributes as their string, number or boolean.
fn string_of(v: Val) -> Expr {
    match v {
        Val::Typed(x, _) => x,
        Val::Num { float, .. } => cast(float, DataType::Utf8),
        Val::Attr(x, dedicated) => dedicated.unwrap_or_else(|| get_field(x, "str")),
        Val::Nil => lit(ScalarValue::Utf8(None)),
    }
}

/// `label` with the spanset attribute `name` = `v` appended, typed as Tempo types it
/// (see [`crate::label`]); an absent value is Tempo's nil.
/// `e`'s value `v` typed as Tempo types it in spanset attributes: arithmetic on durations
/// gives plain numbers there (`by(duration * 2)` is a double of nanoseconds).
fn as_tempo_shows(e: &FieldExpr, v: Val) -> Val {
    match (e, v) {
        (FieldExpr::Binary(BinOp::Arith(_), ..), Val::Typed(x, Type::Duration)) => {
            Val::Typed(cast(x, DataType::Float64), Type::Float)
        }
        (_, v) => v,
    }
}

fn labelled(label: Expr, name: &str, v: Val) -> Expr {
    match v {
        Val::Typed(x, Type::Duration) => label::append(label, name, x, ValueKind::Duration, None),
        Val::Num { int, float } => label::append(label, name, float, ValueKind::Number, Some(int)),
        Val::Typed(x, _) | Val::Attr(x, _) => label::append(label, name, x, ValueKind::Plain, None),
        Val::Nil => label::append(label, name, lit(ScalarValue::Null), ValueKind::Plain, None),
    }
}

fn arith(op: ArithOp, x: Expr, y: Expr) -> Expr {
    match op {
        ArithOp::Add => x + y,
        ArithOp::Sub => x - y,
        ArithOp::Mul => x * y,
        ArithOp::Div => x / y,
        ArithOp::Mod => x % y,
        ArithOp::Pow => power(cast(x, DataType::Float64), cast(y, DataType::Float64)),
    }
}

fn aggregate_expr(func: AggFunc, value: Option<Expr>) -> Expr {
    let v = || value.clone().unwrap_or_else(|| lit(1i64));
    match func {
        AggFunc::Count => count(lit(1i64)),
        AggFunc::Avg => avg(cast(v(), DataType::Float64)),
        AggFunc::Min => min(v()),
        AggFunc::Max => max(v()),
        AggFunc::Sum => sum(v()),
    }
}

/// [`aggregate_expr`] as a window over `partition`: the aggregate of the whole partition on
/// each of its rows.
fn window_aggregate(func: AggFunc, value: Option<Expr>, partition: Vec<Expr>) -> Result<Expr> {
    let v = || value.clone().unwrap_or_else(|| lit(1i64));
    let (udaf, arg) = match func {
        AggFunc::Count => (count_udaf(), lit(1i64)),
        AggFunc::Avg => (avg_udaf(), cast(v(), DataType::Float64)),
        AggFunc::Min => (min_udaf(), v()),
        AggFunc::Max => (max_udaf(), v()),
        AggFunc::Sum => (sum_udaf(), v()),
    };
    window(udaf, arg, partition, vec![], None)
}

/// The window expressions of the `i`th aggregate of a scalar filter stage over `partition`
/// (its value as `__a{i}`), and its value typed as Tempo types it for the spanset's
/// attributes: `count()` an integer, aggregates of durations durations (`avg` truncated to
/// whole nanoseconds, as Tempo divides them), of attributes integers where every value was
/// one (but `avg`, a double), else doubles.
fn aggregate_windows(
    a: &Aggregate,
    i: usize,
    arg: Option<(usize, Val)>,
    partition: &[Expr],
) -> Result<(Vec<Expr>, Val)> {
    let name = format!("__a{i}");
    let (at, val) = match arg {
        Some((at, v)) => (at, Some(v)),
        None => (0, None),
    };
    let value = window_aggregate(a.func, val.clone().map(numeric), partition.to_vec())?.alias(&name);
    let typed = |t| Val::Typed(col(&name), t);
    Ok(match (a.func, val) {
        (AggFunc::Count, _) => (vec![value], typed(Type::Int)),
        (AggFunc::Avg, Some(Val::Typed(_, Type::Duration))) => (
            vec![value],
            Val::Typed(cast(col(&name), DataType::Int64), Type::Duration),
        ),
        (AggFunc::Avg, _) => (vec![value], typed(Type::Float)),
        (_, Some(Val::Typed(_, t))) => (vec![value], typed(t)),
        (func, Some(v @ (Val::Attr(..) | Val::Num { .. }))) => {
            let (int, float) = number_parts(v);
            let int = int.unwrap_or_else(|| lit(ScalarValue::Int64(None)));
            let (int_name, doubles) = (format!("{name}_int"), format!("__v{at}_doubles"));
            // Values that are numbers but not integers.
            let non_int = when(int.clone().is_null(), float).end()?;
            let windows = vec![
                value,
                window_aggregate(func, Some(int), partition.to_vec())?.alias(&int_name),
                window(count_udaf(), non_int, partition.to_vec(), vec![], None)?.alias(&doubles),
            ];
            let int = when(col(&doubles).eq(lit(0i64)), col(&int_name)).end()?;
            (windows, Val::Num { int, float: col(&name) })
        }
        (_, _) => (vec![value], typed(Type::Float)),
    })
}

/// An aggregate's name as Tempo writes it in a spanset's attributes: `avg(duration)`, with
/// intrinsics unscoped where they have an unscoped name.
fn label_name(a: &Aggregate) -> String {
    match &a.arg {
        Some(arg) => format!("{}({})", a.func.name(), tempo_text(arg)),
        None => a.to_string(),
    }
}

/// A field expression as Tempo prints it in spanset attributes: intrinsics by their unscoped
/// words, at any depth (`by(duration * 2)`).
fn tempo_text(e: &FieldExpr) -> String {
    format!("{e:#}")
}

fn collect_aggregates<'e>(e: &'e ScalarExpr, out: &mut Vec<&'e Aggregate>) {
    match e {
        ScalarExpr::Aggregate(a) => out.push(a),
        ScalarExpr::Binary(_, a, b) => {
            collect_aggregates(a, out);
            collect_aggregates(b, out);
        }
        ScalarExpr::Static(_) | ScalarExpr::Wrapped(..) => {}
    }
}

fn collect_wrapped<'e>(e: &'e ScalarExpr, out: &mut Vec<(&'e SpansetExpr, &'e Aggregate)>) {
    match e {
        ScalarExpr::Wrapped(p, a) => out.push((p, a)),
        ScalarExpr::Binary(_, a, b) => {
            collect_wrapped(a, out);
            collect_wrapped(b, out);
        }
        ScalarExpr::Static(_) | ScalarExpr::Aggregate(_) => {}
    }
}

/// A scalar expression with each aggregate (or wrapped pipeline) read by `next_agg`, in the
/// order [`collect_aggregates`] / [`collect_wrapped`] lists them.
fn scalar_expr(e: &ScalarExpr, next_agg: &mut impl FnMut(&Aggregate) -> Expr) -> Result<Expr> {
    Ok(match e {
        ScalarExpr::Static(s) => match s {
            Static::Int(v) | Static::Duration(v) => lit(*v),
            Static::Float(v) => lit(*v),
            other => return plan_err(format!("{other} is not a number")),
        },
        ScalarExpr::Aggregate(a) | ScalarExpr::Wrapped(_, a) => next_agg(a),
        ScalarExpr::Binary(op, a, b) => {
            let x = scalar_expr(a, next_agg)?;
            let y = scalar_expr(b, next_agg)?;
            arith(*op, cast(x, DataType::Float64), cast(y, DataType::Float64))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::LoneSet::{self, And, Filter, Union};

    fn and(a: LoneSet, b: LoneSet) -> LoneSet {
        And(Box::new(a), Box::new(b))
    }

    fn union(a: LoneSet, b: LoneSet) -> LoneSet {
        Union(Box::new(a), Box::new(b))
    }

    #[test]
    fn lone_sets_keep_the_rows_tempo_returns() {
        let both = and(Filter(0), Filter(1));
        assert_eq!(both.kept(0b11), 0b11, "both sides matched: the rows of both");
        assert_eq!(both.kept(0b01), 0, "one side alone: nothing");
        let either = union(Filter(0), Filter(1));
        assert_eq!(
            either.kept(0b01),
            0b11,
            "rows of a side that matched nothing are none anyway"
        );
        let nested = union(and(Filter(0), Filter(1)), Filter(2));
        assert_eq!(nested.kept(0b101), 0b100, "the && part fails, the || side stays");
        assert_eq!(nested.kept(0b111), 0b111);
        let inner = and(Filter(0), union(Filter(1), Filter(2)));
        assert_eq!(inner.kept(0b101), 0b111, "a row of the || side satisfies the &&");
        assert_eq!(inner.kept(0b110), 0);
    }
}
