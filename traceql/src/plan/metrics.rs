//! TraceQL metrics (`{ ... } | rate() by (...)`) planned as a time-bucketed aggregation over
//! the spans the spanset part selects: one row per series and bucket, never a span loop.
//!
//! Buckets follow Tempo's: a range is aligned to its step ([`StepRange::aligned`]), bucket `i`
//! holds the spans that start in `(start + i*step, start + (i+1)*step]`, and its sample is
//! stamped `start + (i+1)*step`. A series is named by its `by()` labels, encoded as search's
//! `by()` spanset labels are ([`crate::label`]: typed, a missing value Tempo's nil).

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::functions::core::expr_fn::{coalesce, get_field};
use datafusion::functions_aggregate::expr_fn::min;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, cast, col, lit};

use super::{Needs, Planner, Type, Val, labelled, numeric, plan_err, tempo_text};
use crate::ast::{FieldExpr, Intrinsic, MetricsExpr, MetricsFn, MetricsFunc, Query, Root, SpansetExpr, Static};
use crate::{PlanOptions, Result};

mod compare;
pub use compare::MAX_TOP_N as MAX_COMPARE_TOP_N;

/// Output columns of a metrics plan.
pub mod out {
    /// The series' `by()` labels as label text ([`crate::label::entries`] reads them); empty
    /// without `by()`.
    pub const SERIES: &str = "series";
    /// The bucket index, from 0.
    pub const BUCKET: &str = "bucket";
    /// The bucket's value (Float64); null where the function has none (Tempo's NaN).
    pub const VALUE: &str = "value";

    /// With exemplars: one span of the series' bucket (its earliest), by trace id, span id,
    /// start time (ns) and value (the function's input; null for counts and rates).
    pub const EXEMPLAR_TRACE: &str = "exemplar_trace_id";
    pub const EXEMPLAR_SPAN: &str = "exemplar_span_id";
    pub const EXEMPLAR_TIME: &str = "exemplar_time_unix_nano";
    pub const EXEMPLAR_VALUE: &str = "exemplar_value";

    /// The text of `by()` label `i` (null for Tempo's nil), for SQL's columns.
    pub fn label(i: usize) -> String {
        format!("label_{i}")
    }
}

/// What a metrics plan says of its exemplars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exemplars {
    None,
    /// The start time of each row's earliest span ([`out::EXEMPLAR_TIME`]): cheap, no ids read.
    Times,
    /// Each row's earliest span: [`out::EXEMPLAR_TRACE`] and the columns after it. Run over the
    /// spans that start at the times a [`Exemplars::Times`] plan found, it names those spans.
    Spans,
}

/// Longest range a metrics query may span, in steps (Tempo answers at most this many points
/// per series by default too).
pub const MAX_INTERVALS: i64 = 11_000;

/// The time range of a metrics query after Tempo's alignment, ns since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepRange {
    pub start_ns: i64,
    pub end_ns: i64,
    pub step_ns: i64,
    /// An instant query: one bucket holding the spans that start in `[start, end]` (the start
    /// included, unlike a range's buckets).
    pub instant: bool,
}

impl StepRange {
    /// Tempo's `AlignRequest`: start rounded down and end up to a multiple of the step, then
    /// one more step before the start (a first bucket that the range's first spans fill).
    pub fn aligned(start_ns: i64, end_ns: i64, step_ns: i64) -> Result<Self> {
        if step_ns <= 0 {
            return plan_err("step must be positive");
        }
        if start_ns < 0 || end_ns <= start_ns {
            return plan_err("end must be after start");
        }
        let start = start_ns - start_ns % step_ns;
        let end = match end_ns % step_ns {
            0 => end_ns,
            m => end_ns.saturating_add(step_ns - m),
        };
        let start = if start > step_ns { start - step_ns } else { start };
        let range = Self {
            start_ns: start,
            end_ns: end,
            step_ns,
            instant: false,
        };
        if range.intervals() > MAX_INTERVALS {
            return plan_err(format!(
                "the range holds {} steps, more than {MAX_INTERVALS}: use a longer step or a shorter range",
                range.intervals()
            ));
        }
        Ok(range)
    }

    /// An instant query over `[start, end]`, unaligned as Tempo leaves it: one bucket, one
    /// step long, stamped at the end.
    pub fn instant(start_ns: i64, end_ns: i64) -> Result<Self> {
        if start_ns < 0 || end_ns <= start_ns {
            return plan_err("end must be after start");
        }
        Ok(Self {
            start_ns,
            end_ns,
            step_ns: end_ns - start_ns,
            instant: true,
        })
    }

    /// Whether a span starting at `start` (an Int64 expression of ns) is in the range.
    pub fn holds(&self, start: Expr) -> Expr {
        let after = match self.instant {
            true => start.clone().gt_eq(lit(self.start_ns)),
            false => start.clone().gt(lit(self.start_ns)),
        };
        after.and(start.lt_eq(lit(self.end_ns)))
    }

    /// Buckets in the range.
    pub fn intervals(&self) -> i64 {
        (self.end_ns - self.start_ns) / self.step_ns
    }

    /// The timestamp of bucket `interval`'s sample, ms since the epoch: its end.
    pub fn timestamp_ms(&self, interval: i64) -> i64 {
        (self.start_ns + (interval + 1) * self.step_ns) / 1_000_000
    }
}

/// What the caller of a metrics plan needs to render its rows as Tempo does.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsShape {
    pub func: MetricsFunc,
    /// A series without `by()` is named `__name__` = the function's name, as Tempo names it.
    pub grouped: bool,
    /// Buckets without spans are 0 (counts, rates, histograms and quantiles), not absent.
    pub zero_filled: bool,
    /// The labels' names, in order: Tempo's text of each `by()` expression, then `__bucket`
    /// for a histogram's bucket or `p` for a quantile.
    pub labels: Vec<String>,
}

/// Plans each pipeline of the metrics query `query` over `spans` for `range`, in the order
/// [`pipelines`] lists them: columns [`out`], one row per series and bucket that holds a span.
/// Second stages and arithmetic between pipelines apply to their series afterwards.
/// `exemplars` adds the columns of each row's earliest span ([`Exemplars`]).
pub fn plan_metrics(
    query: &Query,
    spans: LogicalPlan,
    options: &PlanOptions,
    range: &StepRange,
    exemplars: Exemplars,
) -> Result<Vec<(LogicalPlan, MetricsShape)>> {
    super::check_cost(&query.root)?;
    let Root::Metrics(m) = &query.root else {
        return plan_err("not a metrics query: add a metrics function such as `| rate()`");
    };
    let mut plans = Vec::new();
    for (spanset, f) in pipelines(m) {
        let mut p = Planner::new(spans.clone(), options);
        let plan = p.metrics(spanset, f, range, exemplars)?;
        plans.push((super::checked_size(plan)?, shape_of(f)));
    }
    Ok(plans)
}

/// The pipelines (`spansets | function()`) of a metrics expression, left to right.
pub fn pipelines(e: &MetricsExpr) -> Vec<(&SpansetExpr, &MetricsFn)> {
    match e {
        MetricsExpr::Pipeline(s, f) => vec![(s.as_ref(), f)],
        MetricsExpr::Stage(e, _) => pipelines(e),
        MetricsExpr::Binary(_, a, b) => {
            let mut all = pipelines(a);
            all.extend(pipelines(b));
            all
        }
        MetricsExpr::Number(_) => Vec::new(),
    }
}

/// Whether `e`'s spansets need whole traces (spanset operators and pipelines, structure,
/// trace-level and parent fields): Tempo samples those by trace, the others by span.
pub fn needs_whole_traces(e: &MetricsExpr) -> bool {
    pipelines(e).iter().any(|(spanset, f)| {
        let SpansetExpr::Filter(c) = spanset else {
            return true;
        };
        let fields = f.by.iter().chain(&f.args);
        !fields.fold(Needs::of(c), |n, x| n.union(Needs::of(x))).row_only()
    })
}

fn shape_of(f: &MetricsFn) -> MetricsShape {
    let mut labels: Vec<String> = f.by.iter().map(tempo_text).collect();
    match f.func {
        MetricsFunc::Compare => labels = compare::LABELS.map(String::from).to_vec(),
        MetricsFunc::HistogramOverTime => labels.push("__bucket".into()),
        MetricsFunc::QuantileOverTime => labels.push("p".into()),
        _ => {}
    }
    MetricsShape {
        func: f.func,
        grouped: !labels.is_empty(),
        zero_filled: !matches!(
            f.func,
            MetricsFunc::MinOverTime | MetricsFunc::MaxOverTime | MetricsFunc::SumOverTime | MetricsFunc::AvgOverTime
        ),
        labels,
    }
}

impl Planner<'_> {
    fn metrics(
        &mut self,
        spanset: &SpansetExpr,
        f: &MetricsFn,
        range: &StepRange,
        exemplars: Exemplars,
    ) -> Result<LogicalPlan> {
        if f.func == MetricsFunc::Compare {
            return self.compared(spanset, f, range, exemplars);
        }
        let (arg, quantiles) = arguments(f)?;
        let mut exprs = f.by.clone();
        exprs.extend(arg.clone());
        let (rel, vals) = self.matched_values(spanset, &exprs, exemplars == Exemplars::Spans, &[])?;
        // Group on the typed by() values; their labels are written once per series and bucket.
        let mut group = Vec::new();
        let by: Vec<Val> = (vals.iter().take(f.by.len()).enumerate())
            .map(|(i, v)| grouped(v, i, &mut group))
            .collect();
        let names: Vec<String> = group.iter().map(|g| g.schema_name().to_string()).collect();
        let (start, step) = (lit(range.start_ns), lit(range.step_ns));
        // (start_time - start - 1) / step is the bucket of a right-closed interval (and 0 for
        // an instant's start, -1 / step truncating to 0).
        let bucket = (col(START) - start - lit(1i64)) / step;
        let mut kept = range.holds(col(START));
        group.push(bucket.alias(out::BUCKET));
        let histogram = matches!(f.func, MetricsFunc::QuantileOverTime | MetricsFunc::HistogramOverTime);
        let value = arg.as_ref().zip(vals.last());
        if histogram && let Some((_, v)) = value {
            let bound = log2_bound(v.clone());
            kept = kept.and(bound.clone().is_not_null());
            group.push(bound.alias(LOG2_BOUND));
        }
        let value = value.map(|(a, v)| over_time_value(a, v.clone()));
        let mut aggregates = vec![aggregate_of(f.func, value.clone(), range.step_ns as f64 / 1e9).alias(out::VALUE)];
        match exemplars {
            Exemplars::None => {}
            Exemplars::Times => aggregates.push(min(col(START)).alias(out::EXEMPLAR_TIME)),
            Exemplars::Spans => {
                let value = value.filter(|_| !matches!(f.func, MetricsFunc::HistogramOverTime));
                aggregates.extend(exemplar_of(col(EX_TRACE), col(EX_SPAN), col(START), value, col(START)));
            }
        }
        let mut plan = LogicalPlanBuilder::from(rel)
            .filter(kept)?
            .aggregate(group, aggregates)?;
        let mut extra = None;
        match f.func {
            MetricsFunc::HistogramOverTime => extra = Some(("__bucket", col(LOG2_BOUND))),
            MetricsFunc::QuantileOverTime => {
                plan = quantiles_of(plan, &names, &quantiles, exemplars)?;
                extra = Some(("p", col(QUANTILE)));
            }
            _ => {}
        }
        let mut columns = series_columns(f, &by, extra);
        columns.extend(exemplar_columns(exemplars).into_iter().map(col));
        Ok(plan.project(columns)?.build()?)
    }
}

/// The field a metrics function reads, and `quantile_over_time`'s quantiles.
fn arguments(f: &MetricsFn) -> Result<(Option<FieldExpr>, Vec<f64>)> {
    let quantile = |e: &FieldExpr| match e {
        FieldExpr::Static(Static::Int(i)) => Ok(*i as f64),
        FieldExpr::Static(Static::Float(x)) => Ok(*x),
        _ => plan_err("quantiles must be numbers between 0 and 1"),
    };
    match (f.func, f.args.as_slice()) {
        (MetricsFunc::Rate | MetricsFunc::CountOverTime, _) => Ok((None, Vec::new())),
        (MetricsFunc::Compare, _) => plan_err("compare() is planned on its own"),
        (MetricsFunc::QuantileOverTime, [a, qs @ ..]) if !qs.is_empty() => {
            Ok((Some(a.clone()), qs.iter().map(quantile).collect::<Result<_>>()?))
        }
        (MetricsFunc::QuantileOverTime, _) => plan_err("quantile_over_time() takes a field and at least one quantile"),
        (_, [a]) => Ok((Some(a.clone()), Vec::new())),
        (func, _) => plan_err(format!("{}() takes one field", func.name())),
    }
}

/// `v` read from group columns `__g{i}...` (their expressions pushed onto `group`).
fn grouped(v: &Val, i: usize, group: &mut Vec<Expr>) -> Val {
    let mut column = |x: &Expr, suffix: &str| {
        let name = format!("__g{i}{suffix}");
        group.push(x.clone().alias(&name));
        col(name)
    };
    match v {
        Val::Typed(x, t) => Val::Typed(column(x, ""), *t),
        Val::Attr(x, text) => {
            let x = column(x, "");
            Val::Attr(x, text.as_ref().map(|t| column(t, "_text")))
        }
        Val::Num { int, float } => Val::Num {
            float: column(float, ""),
            int: column(int, "_int"),
        },
        Val::Nil => Val::Nil,
    }
}

/// The final columns: the series' label text (by() labels, then `extra`), each by() label as
/// text, the bucket and the value.
fn series_columns(f: &MetricsFn, by: &[Val], extra: Option<(&str, Expr)>) -> Vec<Expr> {
    let mut series = lit("");
    let mut labels = Vec::new();
    for (e, v) in f.by.iter().zip(by) {
        series = labelled(series, &tempo_text(e), super::as_tempo_shows(e, v.clone()));
        labels.push(label_text(v.clone()));
    }
    if let Some((name, x)) = extra {
        series = labelled(series, name, Val::Typed(x.clone(), Type::Float));
        labels.push(cast(x, DataType::Utf8));
    }
    let mut columns = vec![series.alias(out::SERIES)];
    columns.extend(labels.into_iter().enumerate().map(|(i, l)| l.alias(out::label(i))));
    columns.extend([col(out::BUCKET), col(out::VALUE)]);
    columns
}

/// Per series and bucket, each of `quantiles` (column [`QUANTILE`]) of the histogram that
/// `counts` holds (one row per series, bucket and [`LOG2_BOUND`], its count in `value`).
fn quantiles_of(
    counts: LogicalPlanBuilder,
    group: &[String],
    quantiles: &[f64],
    exemplars: Exemplars,
) -> Result<LogicalPlanBuilder> {
    use datafusion::functions_aggregate::expr_fn::array_agg;
    let keys: Vec<Expr> = (group.iter().map(|g| col(g.as_str())))
        .chain([col(out::BUCKET)])
        .collect();
    let mut aggregates = vec![
        array_agg(col(LOG2_BOUND)).alias("__bounds"),
        array_agg(cast(col(out::VALUE), DataType::Int64)).alias("__counts"),
    ];
    match exemplars {
        Exemplars::None => {}
        Exemplars::Times => aggregates.push(min(col(out::EXEMPLAR_TIME)).alias(out::EXEMPLAR_TIME)),
        Exemplars::Spans => {
            let [trace, span, time, value] = EXEMPLAR_COLUMNS.map(col);
            aggregates.extend(exemplar_of(trace, span, time.clone(), Some(value), time));
        }
    }
    let histograms = counts.aggregate(keys, aggregates)?;
    let ps = LogicalPlanBuilder::values(quantiles.iter().map(|q| vec![lit(*q)]).collect())?
        .project(vec![col("column1").alias(QUANTILE)])?
        .build()?;
    let value = crate::log2::quantile_expr(col("__bounds"), col("__counts"), col(QUANTILE));
    let mut columns: Vec<Expr> = group.iter().map(|g| col(g.as_str())).collect();
    columns.extend([col(out::BUCKET), col(QUANTILE), value.alias(out::VALUE)]);
    columns.extend(exemplar_columns(exemplars).into_iter().map(col));
    Ok(LogicalPlanBuilder::from(histograms.build()?)
        .cross_join(ps)?
        .project(columns)?)
}
impl Planner<'_> {
    /// The spans `spanset` matches, each once, with the values of `exprs` (`__v0`, ...), the
    /// start time, the spans' `columns` and, with `ids`, the trace and span ids ([`EX_TRACE`],
    /// [`EX_SPAN`]). A lone filter reads them straight from its filtered scan; any other
    /// spanset's keys join the spans back.
    fn matched_values(
        &mut self,
        spanset: &SpansetExpr,
        exprs: &[FieldExpr],
        ids: bool,
        columns: &[&str],
    ) -> Result<(LogicalPlan, Vec<Val>)> {
        if let SpansetExpr::Filter(e) = spanset {
            let needs = exprs.iter().fold(Needs::of(e), |n, x| n.union(Needs::of(x)));
            if !needs.events && !needs.links {
                let cond = self.lower_bool(e, false)?;
                let mut projection = vec![super::q("s", START).alias(START)];
                if ids {
                    projection.push(super::q("s", super::TRACE_ID).alias(EX_TRACE));
                    projection.push(super::q("s", super::SPAN_ID).alias(EX_SPAN));
                }
                projection.extend(columns.iter().map(|c| super::q("s", c).alias(*c)));
                let vals = self.value_columns(exprs, true, &mut projection)?;
                let rel = self.base(needs)?.filter(cond)?.project(projection)?.build()?;
                return Ok((rel, vals));
            }
        }
        // Each span once, whatever spansets it belongs to.
        let keys = LogicalPlanBuilder::from(self.spanset(spanset)?)
            .project(vec![
                col(super::TRACE_ID),
                col(super::SPAN_ID),
                lit("").alias(super::GRP),
            ])?
            .distinct()?
            .build()?;
        let columns: Vec<&str> = [START].into_iter().chain(columns.iter().copied()).collect();
        self.with_values_and(keys, exprs, true, &columns)
    }
}

/// The spans' start time column, carried next to the values.
const START: &str = "start_time_unix_nano";
/// The trace and span ids of the spans [`Planner::matched_values`] gives (the key columns of
/// its join, named so on its lone-filter path too).
const EX_TRACE: &str = super::KEY_TRACE;
const EX_SPAN: &str = super::KEY_SPAN;
const EXEMPLAR_COLUMNS: [&str; 4] = [
    out::EXEMPLAR_TRACE,
    out::EXEMPLAR_SPAN,
    out::EXEMPLAR_TIME,
    out::EXEMPLAR_VALUE,
];

/// The exemplar columns a plan carries.
fn exemplar_columns(exemplars: Exemplars) -> Vec<&'static str> {
    match exemplars {
        Exemplars::None => Vec::new(),
        Exemplars::Times => vec![out::EXEMPLAR_TIME],
        Exemplars::Spans => EXEMPLAR_COLUMNS.to_vec(),
    }
}

/// The aggregates that pick a group's exemplar: the row with the least `order` (its trace,
/// span, time and value), as [`EXEMPLAR_COLUMNS`].
fn exemplar_of(trace: Expr, span: Expr, time: Expr, value: Option<Expr>, order: Expr) -> Vec<Expr> {
    use datafusion::functions_aggregate::expr_fn::first_value;
    let first = |x: Expr| first_value(x, vec![order.clone().sort(true, false)]);
    let value = value.map_or_else(|| lit(ScalarValue::Float64(None)), first);
    vec![
        first(trace).alias(out::EXEMPLAR_TRACE),
        first(span).alias(out::EXEMPLAR_SPAN),
        min(time).alias(out::EXEMPLAR_TIME),
        value.alias(out::EXEMPLAR_VALUE),
    ]
}

/// A span's power-of-two bucket in a histogram (its upper bound).
const LOG2_BOUND: &str = "__log2_bound";
/// The quantile a row of `quantile_over_time` holds.
const QUANTILE: &str = "__quantile";

/// The upper bound of a span's power-of-two bucket for `histogram_over_time(a)` and
/// `quantile_over_time(a, ...)`, as Tempo buckets it: durations in seconds, integers as they
/// are; null (the span counts in no bucket) for values below 2 and for other types.
fn log2_bound(v: Val) -> Expr {
    let bucket = |x: Expr| crate::log2::bucket_expr(cast(x, DataType::Int64));
    let seconds = |x: Expr| bucket(x) / lit(1e9);
    match v {
        Val::Typed(x, Type::Duration) => seconds(x),
        Val::Typed(x, Type::Int) => bucket(x),
        Val::Num { int, .. } => bucket(int),
        Val::Attr(x, _) => bucket(get_field(x, "int")),
        _ => lit(ScalarValue::Float64(None)),
    }
}

/// A span's value for `min/max/sum/avg_over_time(a)`: its duration in seconds, as Tempo's, or
/// the attribute as a number (null where it has none).
fn over_time_value(a: &FieldExpr, v: Val) -> Expr {
    match (a, v) {
        (FieldExpr::Intrinsic(Intrinsic::Duration), Val::Typed(x, _)) => cast(x, DataType::Float64) / lit(1e9),
        (_, Val::Typed(_, Type::Str | Type::Bool | Type::Nil | Type::Status | Type::Kind)) => {
            lit(ScalarValue::Float64(None))
        }
        (_, v) => cast(numeric(v), DataType::Float64),
    }
}

/// A `by()` value as text, whatever its type (null where the span has none).
fn label_text(v: Val) -> Expr {
    let text = |x: Expr| cast(x, DataType::Utf8);
    match v {
        Val::Typed(x, _) | Val::Num { float: x, .. } => text(x),
        Val::Attr(x, _) => coalesce(
            ["str", "int", "double", "bool", "array"]
                .into_iter()
                .map(|f| text(get_field(x.clone(), f)))
                .collect(),
        ),
        Val::Nil => lit(ScalarValue::Utf8(None)),
    }
}

/// The aggregate of one bucket of `func` over the spans' `value`s.
fn aggregate_of(func: MetricsFunc, value: Option<Expr>, step_seconds: f64) -> Expr {
    use datafusion::functions_aggregate::expr_fn::{avg, count, max, min, sum};
    let spans = || cast(count(lit(1i64)), DataType::Float64);
    let v = || value.clone().unwrap_or_else(|| lit(ScalarValue::Float64(None)));
    match func {
        MetricsFunc::Rate => spans() / lit(step_seconds),
        MetricsFunc::MinOverTime => min(v()),
        MetricsFunc::MaxOverTime => max(v()),
        MetricsFunc::SumOverTime => sum(v()),
        MetricsFunc::AvgOverTime => avg(v()),
        _ => spans(),
    }
}
