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
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, cast, col, lit};

use super::{Needs, Planner, Type, Val, labelled, numeric, plan_err, tempo_text};
use crate::ast::{FieldExpr, Intrinsic, MetricsExpr, MetricsFn, MetricsFunc, Query, Root, SpansetExpr};
use crate::{PlanOptions, Result};

/// Output columns of a metrics plan.
pub mod out {
    /// The series' `by()` labels as label text ([`crate::label::entries`] reads them); empty
    /// without `by()`.
    pub const SERIES: &str = "series";
    /// The bucket index, from 0.
    pub const BUCKET: &str = "bucket";
    /// The bucket's value (Float64); null where the function has none (Tempo's NaN).
    pub const VALUE: &str = "value";

    /// The text of `by()` label `i` (null for Tempo's nil), for SQL's columns.
    pub fn label(i: usize) -> String {
        format!("label_{i}")
    }
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
        };
        if range.intervals() > MAX_INTERVALS {
            return plan_err(format!(
                "the range holds {} steps, more than {MAX_INTERVALS}: use a longer step or a shorter range",
                range.intervals()
            ));
        }
        Ok(range)
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
    /// Buckets without spans are 0 (counts and rates), not absent.
    pub zero_filled: bool,
    /// The `by()` labels' names, in order (Tempo's text of each expression).
    pub labels: Vec<String>,
}

/// Plans the metrics query `query` over `spans` for `range`: columns [`out`], one row per
/// series and bucket that holds a span.
pub fn plan_metrics(
    query: &Query,
    spans: LogicalPlan,
    options: &PlanOptions,
    range: &StepRange,
) -> Result<(LogicalPlan, MetricsShape)> {
    super::check_cost(&query.root)?;
    let Root::Metrics(m) = &query.root else {
        return plan_err("not a metrics query: add a metrics function such as `| rate()`");
    };
    let MetricsExpr::Pipeline(spanset, f) = m else {
        return plan_err("second stages and arithmetic between metrics queries are not supported yet");
    };
    let shape = MetricsShape {
        func: f.func,
        grouped: !f.by.is_empty(),
        zero_filled: matches!(f.func, MetricsFunc::Rate | MetricsFunc::CountOverTime),
        labels: f.by.iter().map(tempo_text).collect(),
    };
    let mut p = Planner::new(spans, options);
    let plan = p.metrics(spanset, f, range)?;
    Ok((super::checked_size(plan)?, shape))
}

impl Planner<'_> {
    fn metrics(&mut self, spanset: &SpansetExpr, f: &MetricsFn, range: &StepRange) -> Result<LogicalPlan> {
        let arg = match f.func {
            MetricsFunc::Rate | MetricsFunc::CountOverTime => None,
            MetricsFunc::MinOverTime
            | MetricsFunc::MaxOverTime
            | MetricsFunc::SumOverTime
            | MetricsFunc::AvgOverTime => match f.args.as_slice() {
                [a] => Some(a.clone()),
                _ => return plan_err(format!("{}() takes one attribute", f.func.name())),
            },
            other => return plan_err(format!("{}() is not supported yet", other.name())),
        };
        let mut exprs = f.by.clone();
        exprs.extend(arg.clone());
        let (rel, vals) = self.matched_values(spanset, &exprs)?;
        let mut series = lit("");
        let mut group = Vec::new();
        for (i, (e, v)) in f.by.iter().zip(&vals).enumerate() {
            series = labelled(series, &tempo_text(e), super::as_tempo_shows(e, v.clone()));
            group.push(label_text(v.clone()).alias(out::label(i)));
        }
        let value = arg
            .as_ref()
            .zip(vals.last())
            .map(|(a, v)| over_time_value(a, v.clone()));
        let (start, step) = (lit(range.start_ns), lit(range.step_ns));
        // (start_time - start - 1) / step is the bucket of a right-closed interval.
        let bucket = (col(START) - start.clone() - lit(1i64)) / step;
        let in_range = col(START).gt(start).and(col(START).lt_eq(lit(range.end_ns)));
        let step_seconds = range.step_ns as f64 / 1e9;
        let aggregate = aggregate_of(f.func, value, step_seconds);
        Ok(LogicalPlanBuilder::from(rel)
            .filter(in_range)?
            .aggregate(
                [series.alias(out::SERIES), bucket.alias(out::BUCKET)]
                    .into_iter()
                    .chain(group),
                vec![aggregate.alias(out::VALUE)],
            )?
            .build()?)
    }
}

impl Planner<'_> {
    /// The spans `spanset` matches, each once, with the values of `exprs` (`__v0`, ...) and
    /// the start time. A lone filter reads them straight from its filtered scan; any other
    /// spanset's keys join the spans back.
    fn matched_values(&mut self, spanset: &SpansetExpr, exprs: &[FieldExpr]) -> Result<(LogicalPlan, Vec<Val>)> {
        if let SpansetExpr::Filter(e) = spanset {
            let needs = exprs.iter().fold(Needs::of(e), |n, x| n.union(Needs::of(x)));
            if !needs.events && !needs.links {
                let cond = self.lower_bool(e, false)?;
                let mut projection = vec![super::q("s", START).alias(START)];
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
        self.with_values_and(keys, exprs, true, &[START])
    }
}

/// The spans' start time column, carried next to the values.
const START: &str = "start_time_unix_nano";

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
