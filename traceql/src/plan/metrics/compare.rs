//! `compare({ selection }, topN, start, end)`: every attribute value of the spans, counted per
//! step for the selection (the spans the filter matches, starting in `(start, end]` when given)
//! and for the baseline (the others), as Tempo's Traces Drilldown compares them.
//!
//! Series, as Tempo names them: `{__meta_type="baseline"|"selection", <attribute>=<value>}` for
//! the `topN` values with the most spans over the range (per attribute and side), and
//! `{__meta_type="baseline_total"|"selection_total", <attribute>=nil}` for all of an
//! attribute's spans. Attributes are the span's, resource's and scope's (`instrumentation.`)
//! and the intrinsics Tempo lists (name, kind, status, statusMessage, rootName,
//! rootServiceName, instrumentation:name and :version); durations and ids are not counted.
//! Checked against Tempo 3.1 on the same spans: every series of an attribute the spans have is
//! equal. Tempo also lists `span:childCount` (it needs each trace's tree; not counted here) and
//! a `nil` value of the well-known attributes its Parquet keeps in dedicated columns for spans
//! that lack them (`span.http.url="nil"`); tracehouse counts only attributes a span has.
//! Tempo's documented `__meta_error` series of an attribute beyond `topN` values has no
//! samples, and Tempo's answers leave it out; so do these.
//!
//! One pass: each span's attributes are listed ([`crate::entries`]), unnested and counted per
//! side, attribute, value and bucket; window functions then rank the values and sum the
//! totals, so the answer holds at most `topN` values per attribute whatever the cardinality.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::functions::core::expr_fn::{coalesce, get_field, named_struct};
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::functions_window::expr_fn::{dense_rank, row_number};
use datafusion::logical_expr::{
    Expr, ExprFunctionExt, JoinType, LogicalPlan, LogicalPlanBuilder, WindowFunctionDefinition, cast, col, lit, when,
};

use super::{EX_SPAN, EX_TRACE, Exemplars, START, StepRange, exemplar_columns, exemplar_of, out};
use crate::ast::{FieldExpr, Intrinsic, MetricsFn, SpansetExpr, Static};
use crate::label::{ValueKind, append, append_named};
use crate::plan::{Needs, Planner, Val, plan_err};
use crate::{Result, entries};

/// Most values per attribute and side that `compare()` may ask for (Tempo's limit).
pub const MAX_TOP_N: i64 = 1000;
/// Values per attribute and side without a number (Tempo's default).
const DEFAULT_TOP_N: i64 = 10;

/// The intrinsics counted, with Tempo's names for them.
const INTRINSICS: [(&str, Intrinsic); 8] = [
    ("name", Intrinsic::Name),
    ("kind", Intrinsic::Kind),
    ("status", Intrinsic::Status),
    ("statusMessage", Intrinsic::StatusMessage),
    ("rootName", Intrinsic::RootName),
    ("rootServiceName", Intrinsic::RootService),
    ("instrumentation:name", Intrinsic::InstrumentationName),
    ("instrumentation:version", Intrinsic::InstrumentationVersion),
];

/// The attribute maps counted, with the prefix of their attributes' names.
const MAPS: [(&str, &str); 3] = [
    ("resource.", "resource_attributes"),
    ("instrumentation.", "scope_attributes"),
    ("span.", "span_attributes"),
];

/// Columns of the counted rows.
const SEL: &str = "__sel";
const ENTRY: &str = "__entry";
const NAME: &str = "__name";
const VALUE_FIELDS: [&str; 5] = ["str", "int", "double", "bool", "array"];
const COUNT: &str = "__count";
const TOTAL: &str = "__total";
const RANK: &str = "__rank";
const FIRST_OF_BUCKET: &str = "__first";
const IS_TOTAL: &str = "__is_total";

/// `compare()`'s number of values and selection window (ns, exclusive start), as Tempo
/// validates them.
struct Arguments {
    top_n: i64,
    window: Option<(i64, i64)>,
}

fn arguments(f: &MetricsFn) -> Result<Arguments> {
    let int = |e: &FieldExpr| match e {
        FieldExpr::Static(Static::Int(i)) => Ok(*i),
        _ => plan_err("compare() takes integers after its filter"),
    };
    let args: Vec<i64> = f.args.iter().map(int).collect::<Result<_>>()?;
    let (top_n, window) = match args.as_slice() {
        [] => (DEFAULT_TOP_N, None),
        [n] => (*n, None),
        [n, start, end] => (*n, Some((*start, *end))),
        _ => return plan_err("compare() takes a filter, then the number of values, a start and an end"),
    };
    if !(1..=MAX_TOP_N).contains(&top_n) {
        return plan_err(format!(
            "compare() top number of values must be an integer between 1 and {MAX_TOP_N}"
        ));
    }
    let window = match window {
        None | Some((0, 0)) => None,
        Some((s, e)) if s <= 0 || e <= 0 => {
            return plan_err("compare() timestamps must be positive integer unix nanoseconds");
        }
        Some((s, e)) if e <= s => return plan_err("compare() end timestamp must be greater than start timestamp"),
        w => w,
    };
    Ok(Arguments { top_n, window })
}

impl Planner<'_> {
    /// The rows of `compare()` over the spans `spanset` matches: columns [`out`], the series'
    /// labels in [`out::SERIES`].
    pub(super) fn compared(
        &mut self,
        spanset: &SpansetExpr,
        f: &MetricsFn,
        range: &StepRange,
        exemplars: Exemplars,
    ) -> Result<LogicalPlan> {
        let args = arguments(f)?;
        let Some(SpansetExpr::Filter(selection)) = f.selection.as_deref() else {
            return plan_err("compare() takes a spanset filter first");
        };
        let spans = self.selected(spanset, selection, args.window, exemplars)?;
        let counts = counted(spans, range, exemplars)?;
        ranked(counts, args.top_n, exemplars)
    }

    /// The spans `spanset` matches: their start time, whether `selection` holds
    /// ([`SEL`]) and their attributes ([`ENTRY`], one row each).
    fn selected(
        &mut self,
        spanset: &SpansetExpr,
        selection: &FieldExpr,
        window: Option<(i64, i64)>,
        exemplars: Exemplars,
    ) -> Result<LogicalPlan> {
        let n = Needs::of(selection);
        // A selection on the span's own row is a value of it; others match as a spanset.
        let by_value = !(n.events || n.links || n.nested || n.parent);
        let mut exprs: Vec<FieldExpr> = INTRINSICS.iter().map(|(_, i)| FieldExpr::Intrinsic(*i)).collect();
        if by_value {
            exprs.push(selection.clone());
        }
        let maps: Vec<&str> = MAPS.iter().map(|(_, m)| *m).collect();
        let ids = exemplars == Exemplars::Spans || !by_value;
        let (mut rel, vals) = self.matched_values(spanset, &exprs, ids, &maps)?;
        let mut sel = match vals.get(INTRINSICS.len()) {
            Some(Val::Typed(x, _)) => coalesce(vec![x.clone(), lit(false)]),
            Some(Val::Attr(x, _)) => coalesce(vec![get_field(x.clone(), "bool"), lit(false)]),
            _ => lit(false),
        };
        if !by_value {
            (rel, sel) = self.joined_selection(rel, selection)?;
        }
        if let Some((start, end)) = window {
            sel = sel.and(col(START).gt(lit(start))).and(col(START).lt_eq(lit(end)));
        }
        let mut sources: Vec<(&str, Expr)> = (INTRINSICS.iter().zip(&vals))
            .map(|((name, i), v)| (*name, value_expr(*i, v)))
            .collect();
        sources.extend(MAPS.iter().map(|(prefix, m)| (*prefix, col(*m))));
        let mut projection = vec![col(START), sel.alias(SEL), entries::entries_expr(sources).alias(ENTRY)];
        if ids {
            projection.extend([col(EX_TRACE), col(EX_SPAN)]);
        }
        Ok(LogicalPlanBuilder::from(rel)
            .project(projection)?
            .unnest_column(ENTRY)?
            .build()?)
    }

    /// `rel` (with [`EX_TRACE`] and [`EX_SPAN`]) joined with the spans `selection` matches,
    /// and whether each span is one of them.
    fn joined_selection(&mut self, rel: LogicalPlan, selection: &FieldExpr) -> Result<(LogicalPlan, Expr)> {
        let keys = LogicalPlanBuilder::from(self.spanset(&SpansetExpr::Filter(selection.clone()))?)
            .project(vec![
                col(super::super::TRACE_ID).alias("__sel_t"),
                col(super::super::SPAN_ID).alias("__sel_s"),
            ])?
            .distinct()?
            .build()?;
        let joined = LogicalPlanBuilder::from(rel)
            .join_on(
                keys,
                JoinType::Left,
                vec![col(EX_TRACE).eq(col("__sel_t")), col(EX_SPAN).eq(col("__sel_s"))],
            )?
            .build()?;
        Ok((joined, col("__sel_t").is_not_null()))
    }
}

/// An intrinsic's value as the text the entries list: a scope's name and version are `""`
/// where absent, as OTLP reads them and Tempo counts them.
fn value_expr(i: Intrinsic, v: &Val) -> Expr {
    let x = match v {
        Val::Typed(x, _) | Val::Attr(x, _) | Val::Num { float: x, .. } => x.clone(),
        Val::Nil => lit(ScalarValue::Utf8(None)),
    };
    match i {
        Intrinsic::InstrumentationName | Intrinsic::InstrumentationVersion => coalesce(vec![x, lit("")]),
        _ => x,
    }
}

/// Spans per side, attribute, value and bucket ([`COUNT`]), in the range.
fn counted(spans: LogicalPlan, range: &StepRange, exemplars: Exemplars) -> Result<LogicalPlan> {
    let (start, step) = (lit(range.start_ns), lit(range.step_ns));
    let bucket = (col(START) - start - lit(1i64)) / step;
    let entry = |f: &str| get_field(col(ENTRY), f);
    let mut group = vec![col(SEL), entry("name").alias(NAME)];
    group.extend(VALUE_FIELDS.map(|f| entry(f).alias(f)));
    group.push(bucket.alias(out::BUCKET));
    let mut aggregates = vec![count(lit(1i64)).alias(COUNT)];
    match exemplars {
        Exemplars::None => {}
        Exemplars::Times => {
            aggregates.push(datafusion::functions_aggregate::expr_fn::min(col(START)).alias(out::EXEMPLAR_TIME))
        }
        Exemplars::Spans => aggregates.extend(exemplar_of(col(EX_TRACE), col(EX_SPAN), col(START), None, col(START))),
    }
    Ok(LogicalPlanBuilder::from(spans)
        .filter(range.holds(col(START)))?
        .aggregate(group, aggregates)?
        .build()?)
}

/// The series rows: the `top_n` values of each side and attribute (by spans over the range)
/// and each attribute's totals, labelled as Tempo labels them.
fn ranked(counts: LogicalPlan, top_n: i64, exemplars: Exemplars) -> Result<LogicalPlan> {
    use datafusion::functions_aggregate::sum::sum_udaf;
    let value: Vec<Expr> = VALUE_FIELDS.iter().map(|f| col(*f)).collect();
    let side = vec![col(SEL), col(NAME)];
    let with = |extra: Vec<Expr>| side.iter().cloned().chain(extra).collect::<Vec<_>>();
    let sum_over = |partition: Vec<Expr>| {
        Expr::from(datafusion::logical_expr::expr::WindowFunction::new(
            WindowFunctionDefinition::AggregateUDF(sum_udaf()),
            vec![col(COUNT)],
        ))
        .partition_by(partition)
        .build()
    };
    let value_spans = sum_over(with(value.clone()))?.alias("__value_spans");
    let bucket_total = sum_over(with(vec![col(out::BUCKET)]))?.alias(TOTAL);
    let first = row_number()
        .partition_by(with(vec![col(out::BUCKET)]))
        .order_by(value.iter().map(|v| v.clone().sort(true, true)).collect())
        .build()?
        .alias(FIRST_OF_BUCKET);
    let mut order = vec![col("__value_spans").sort(false, false)];
    order.extend(value.iter().map(|v| v.clone().sort(true, true)));
    let rank = dense_rank()
        .partition_by(side.clone())
        .order_by(order)
        .build()?
        .alias(RANK);
    let kinds = LogicalPlanBuilder::values(vec![vec![lit(false)], vec![lit(true)]])?
        .project(vec![col("column1").alias(IS_TOTAL)])?
        .build()?;
    let keep = when(col(IS_TOTAL), col(FIRST_OF_BUCKET).eq(lit(1u64))).otherwise(col(RANK).lt_eq(lit(top_n as u64)))?;
    let mut columns = vec![
        label()?.alias(out::SERIES),
        meta()?.alias(out::label(0)),
        col(NAME).alias(out::label(1)),
        when(col(IS_TOTAL), lit(ScalarValue::Utf8(None)))
            .otherwise(value_text())?
            .alias(out::label(2)),
        col(out::BUCKET),
    ];
    let value_of_row = when(col(IS_TOTAL), col(TOTAL)).otherwise(col(COUNT))?;
    columns.push(cast(value_of_row, DataType::Float64).alias(out::VALUE));
    columns.extend(exemplar_columns(exemplars).into_iter().map(col));
    // One window per plan node: DataFusion runs a node's windows over one sort.
    Ok(LogicalPlanBuilder::from(counts)
        .window(vec![value_spans])?
        .window(vec![bucket_total])?
        .window(vec![first])?
        .window(vec![rank])?
        .filter(
            col(RANK)
                .lt_eq(lit(top_n as u64))
                .or(col(FIRST_OF_BUCKET).eq(lit(1u64))),
        )?
        .cross_join(kinds)?
        .filter(keep)?
        .project(columns)?
        .build()?)
}

/// The names of the label columns of a `compare()` plan, for SQL.
pub const LABELS: [&str; 3] = ["__meta_type", "attribute", "attribute_value"];

/// A row's `__meta_type`.
fn meta() -> Result<Expr> {
    Ok(when(col(IS_TOTAL).and(col(SEL)), lit("selection_total"))
        .when(col(IS_TOTAL), lit("baseline_total"))
        .when(col(SEL), lit("selection"))
        .otherwise(lit("baseline"))?)
}

/// A row's attribute value as text.
fn value_text() -> Expr {
    coalesce(VALUE_FIELDS.iter().map(|f| cast(col(*f), DataType::Utf8)).collect())
}

/// `[["__meta_type", side], [attribute, value or nil]]`.
fn label() -> Result<Expr> {
    let first = append(lit(""), "__meta_type", meta()?, ValueKind::Plain, None);
    let fields: Vec<Expr> = VALUE_FIELDS.iter().flat_map(|f| [lit(*f), col(*f)]).collect();
    let value = when(col(IS_TOTAL), lit(ScalarValue::Null)).otherwise(named_struct(fields))?;
    Ok(append_named(first, col(NAME), value, ValueKind::Plain, None))
}
