//! TraceQL metrics over a tenant's spans: a query range (or instant) request planned by the
//! traceql crate (one time-bucketed aggregation per pipeline,
//! [`tracehouse_traceql::plan_metrics`]) and run by the engine, its rows shaped into Tempo's
//! series: typed labels, samples and exemplars, oldest first. Tempo's limits and time
//! parameters live here too; [`stages`] applies second stages and arithmetic to the series.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, col, lit};
use tracehouse_traceql::ast::{MetricsExpr, Root};
use tracehouse_traceql::label::{entries, go_duration};
use tracehouse_traceql::plan::metrics::{Exemplars, out};
use tracehouse_traceql::{MetricsShape, StepRange, compile, plan_metrics};

use crate::search::HitValue;
use crate::traceql::to_df;
use crate::{Error, Result};
use datafusion::error::DataFusionError;

pub mod stages;

pub use tracehouse_traceql::plan::metrics::MAX_INTERVALS;

/// Series one answer holds at most unless configured otherwise.
pub const MAX_SERIES: usize = 1_000;

/// The bounds of a metrics query (Tempo's `query_frontend.metrics` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsLimits {
    /// Series the answer may hold; more is an error (`max_response_series`).
    pub max_series: usize,
    /// Longest `end - start` (`max_duration`, Tempo's default 24 h).
    pub max_range_ns: i64,
    /// Most steps in a range (`max_intervals`, Tempo's default 10,000).
    pub max_intervals: i64,
    /// Most exemplars per series (`max_exemplars`, Tempo's default 100).
    pub max_exemplars: usize,
}

impl Default for MetricsLimits {
    fn default() -> Self {
        Self {
            max_series: MAX_SERIES,
            max_range_ns: 24 * 3_600 * SECOND_NS,
            max_intervals: 10_000,
            max_exemplars: 100,
        }
    }
}

/// A metrics query over `(start, end]`, in `step` buckets (all ns since the epoch), or an
/// instant query over `[start, end]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsRequest {
    pub query: String,
    pub start_unix_nano: i64,
    pub end_unix_nano: i64,
    /// Ignored by an instant query (its one step is the range).
    pub step_ns: i64,
    pub instant: bool,
    /// Exemplars per series as Tempo's `exemplars` parameter asks: 0 for the most allowed; a
    /// `with(exemplars=N)` or `with(exemplars=false)` hint in the query wins. Instant queries
    /// have none.
    pub exemplars: u32,
    pub limits: MetricsLimits,
}

/// One series: its labels (typed, in `by()` order), samples `(timestamp ms, value)` and
/// exemplars, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Vec<(String, HitValue)>,
    pub samples: Vec<(i64, f64)>,
    pub exemplars: Vec<Exemplar>,
}

/// A span that stands for a series at a time, for "jump to trace".
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub trace_id: String,
    pub span_id: Option<String>,
    pub timestamp_ms: i64,
    /// The span's value (its duration for `quantile_over_time(duration)`), or the series'
    /// value at that time for counts and rates.
    pub value: f64,
}

/// The series of a metrics query, ordered by their labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsOutcome {
    pub series: Vec<Series>,
    /// Set to the series limit when the answer held more series and was cut to it (Tempo's
    /// partial answer: the first series are kept, their values may miss later parts).
    pub truncated_at: Option<usize>,
}

/// Tempo's message of an answer cut at `max_series` series.
pub fn truncated_message(max_series: usize) -> String {
    format!(
        "Response exceeds maximum series limit of {max_series}, a partial response is returned. \
         Warning: the accuracy of each individual value is not guaranteed."
    )
}

/// The exemplars per series `request` gets, as Tempo settles them.
pub fn exemplars_of(query: &tracehouse_traceql::ast::Query, request: &MetricsRequest) -> usize {
    use tracehouse_traceql::ast::Static;
    let most = request.limits.max_exemplars;
    let hint = query.hints.iter().rev().find(|h| h.name == "exemplars");
    let asked = match hint.map(|h| &h.value) {
        _ if request.instant => 0,
        Some(Static::Int(n)) => usize::try_from(*n).unwrap_or(0),
        Some(Static::Bool(false)) => 0,
        _ if request.exemplars == 0 => most,
        _ => request.exemplars as usize,
    };
    asked.min(most)
}

/// Tempo's sampling hints of a metrics query: the fraction of spans (`span_sample`) and of
/// traces (`trace_sample`) read; `sample=0.xx` samples traces where the query needs whole
/// traces, else spans. `sample=true` (Tempo's adaptive sampling) reads everything: the answer
/// is exact. Fractions outside `(0, 1)` read everything, as in Tempo.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    pub spans: Option<f64>,
    pub traces: Option<f64>,
}

impl Sampling {
    /// What `query`'s hints ask for.
    pub fn of(query: &tracehouse_traceql::ast::Query) -> Self {
        use tracehouse_traceql::ast::Static;
        let hint = |name: &str| {
            let h = query.hints.iter().rev().find(|h| h.name == name)?;
            let rate = match h.value {
                Static::Float(f) => f,
                Static::Int(i) => i as f64,
                _ => return None,
            };
            Some(rate).filter(|r| *r > 0.0 && *r < 1.0)
        };
        let mut sampling = Self {
            spans: hint("span_sample"),
            traces: hint("trace_sample"),
        };
        if let (Some(rate), Root::Metrics(m)) = (hint("sample"), &query.root) {
            match tracehouse_traceql::plan::metrics::needs_whole_traces(m) {
                true => sampling.traces = Some(rate),
                false => sampling.spans = Some(rate),
            }
        }
        sampling
    }

    /// What counts are multiplied by: the inverse of the fraction read.
    pub fn multiplier(&self) -> f64 {
        1.0 / (self.spans.unwrap_or(1.0) * self.traces.unwrap_or(1.0))
    }

    /// `spans`, only the sampled ones: those whose span id starts (trace id ends: 64-bit
    /// trace ids have 64 zero bits first) with 8 hex digits below the fraction of their range.
    /// Ids are random, so this is a uniform sample, the same at every run.
    pub fn sampled(
        &self,
        spans: datafusion::logical_expr::LogicalPlan,
    ) -> Result<datafusion::logical_expr::LogicalPlan> {
        use datafusion::functions::unicode::expr_fn::{left, right};
        let below = |digits: Expr, rate: f64| digits.lt(lit(format!("{:08x}", (rate * 4_294_967_296.0) as u64)));
        let spans_kept = self.spans.map(|r| below(left(col("span_id"), lit(8i64)), r));
        let traces_kept = self.traces.map(|r| below(right(col("trace_id"), lit(8i64)), r));
        let kept = spans_kept.into_iter().chain(traces_kept).reduce(|a, b| a.and(b));
        match kept {
            Some(kept) => Ok(LogicalPlanBuilder::from(spans).filter(kept)?.build()?),
            None => Ok(spans),
        }
    }
}

/// Whether `func`'s values count spans, so that sampling scales them (Tempo scales all but
/// min, max, avg and quantiles).
pub fn scaled_by_sampling(func: tracehouse_traceql::ast::MetricsFunc) -> bool {
    use tracehouse_traceql::ast::MetricsFunc as F;
    !matches!(
        func,
        F::MinOverTime | F::MaxOverTime | F::AvgOverTime | F::QuantileOverTime
    )
}

/// Compiles `request`'s query, refusing what is not a metrics query, and aligns its range.
pub fn prepare(request: &MetricsRequest) -> Result<(tracehouse_traceql::ast::Query, StepRange)> {
    let query = compile(&request.query).map_err(to_df)?;
    if !matches!(query.root, Root::Metrics(_)) {
        return Err(DataFusionError::Plan(
            "not a metrics query: add a metrics function, such as `{ } | rate()`".into(),
        )
        .into());
    }
    let (start, end) = (request.start_unix_nano, request.end_unix_nano);
    let limits = &request.limits;
    let invalid = |message: String| Err(DataFusionError::Plan(message).into());
    if end.saturating_sub(start) > limits.max_range_ns {
        return invalid(format!(
            "metrics query time range exceeds the maximum allowed duration of {}",
            go_duration(limits.max_range_ns)
        ));
    }
    if !request.instant && request.step_ns > 0 && (end - start) / request.step_ns > limits.max_intervals {
        return invalid(format!(
            "step of {} is too small, minimum step for given range is {}",
            go_duration(request.step_ns),
            go_duration((end - start) / limits.max_intervals)
        ));
    }
    let range = match request.instant {
        true => StepRange::instant(start, end),
        false => StepRange::aligned(start, end, request.step_ns),
    };
    Ok((query, range.map_err(to_df)?))
}

/// Called with the series of each part of a range as it completes ([`parts`]), their samples
/// only those of that part, as Tempo streams a range's completed windows.
pub type Progress<'a> = &'a mut (dyn FnMut(&MetricsOutcome) + Send);

/// Parts a streamed range is answered in, at most.
pub const MAX_PARTS: i64 = 4;

/// The parts of `range` a query runs in, newest first: whole runs of buckets as `(first
/// bucket, end bucket)`, each holding the spans that start in
/// `(start + first*step, start + end*step]`. One part unless `streamed`; one for an instant
/// query and for `compare()`, whose top values are those of the whole range.
pub fn parts(query: &tracehouse_traceql::ast::Query, range: &StepRange, streamed: bool) -> Vec<(i64, i64)> {
    let n = range.intervals();
    let whole = !streamed || range.instant || compares(query);
    let count = if whole { 1 } else { n.clamp(1, MAX_PARTS) };
    let mut out: Vec<(i64, i64)> = (0..count).map(|i| (n * i / count, n * (i + 1) / count)).collect();
    out.reverse();
    out
}

fn compares(query: &tracehouse_traceql::ast::Query) -> bool {
    match &query.root {
        Root::Metrics(m) => (tracehouse_traceql::plan::metrics::pipelines(m).iter())
            .any(|(_, f)| f.func == tracehouse_traceql::ast::MetricsFunc::Compare),
        _ => false,
    }
}

/// `spans`, only those that start in the part `(first, end)` of `range` ([`parts`]).
pub fn spans_in_part(
    spans: datafusion::logical_expr::LogicalPlan,
    range: &StepRange,
    (first, end): (i64, i64),
) -> Result<datafusion::logical_expr::LogicalPlan> {
    let t = || col("start_time_unix_nano");
    let (lo, hi) = (
        range.start_ns + first * range.step_ns,
        range.start_ns + end * range.step_ns,
    );
    let kept = t().gt(lit(lo)).and(t().lt_eq(lit(hi)));
    Ok(LogicalPlanBuilder::from(spans).filter(kept)?.build()?)
}

/// `outcome` with only the samples and exemplars of the part `(first, end)` of `range`.
pub fn only_part(mut outcome: MetricsOutcome, range: &StepRange, (first, end): (i64, i64)) -> MetricsOutcome {
    let (from_ms, to_ms) = (range.timestamp_ms(first), range.timestamp_ms(end - 1));
    for s in &mut outcome.series {
        s.samples.retain(|(t, _)| (from_ms..=to_ms).contains(t));
        s.exemplars.clear();
    }
    outcome.series.retain(|s| !s.samples.is_empty());
    outcome
}

/// The answer of `query` from its pipelines' `runs` (rows and shape, in
/// [`plan_metrics`] order) and their `exemplars`: series, second stages and arithmetic, cut
/// to `max_series` as Tempo cuts a partial answer.
pub fn outcome_of(
    query: &tracehouse_traceql::ast::Query,
    runs: &[(Vec<RecordBatch>, MetricsShape)],
    range: &StepRange,
    max_series: usize,
    exemplars: Vec<ExemplarSpans>,
    multiplier: f64,
) -> Result<MetricsOutcome> {
    let (mut leaves, mut truncated) = (Vec::new(), false);
    for ((rows, shape), found) in runs.iter().zip(exemplars) {
        let (mut series, cut) = series_of(rows, shape, range, max_series, &found)?;
        if multiplier != 1.0 && scaled_by_sampling(shape.func) {
            scale(&mut series, multiplier, shape.func);
        }
        leaves.push(series);
        truncated |= cut;
    }
    let Root::Metrics(root) = &query.root else {
        return Err(Error::Internal("a metrics query without its expression".into()));
    };
    match stages::combine(root, &mut leaves.into_iter())? {
        stages::Operand::Series(mut series) => {
            truncated |= series.len() > max_series;
            series.truncate(max_series);
            Ok(MetricsOutcome {
                series,
                truncated_at: truncated.then_some(max_series),
            })
        }
        stages::Operand::Number(_) => {
            Err(DataFusionError::Plan("a metrics query needs a metrics function, not only numbers".into()).into())
        }
    }
}

/// `series`' values times `multiplier`, and their exemplars' where those are the bucket's
/// value (all but `sum_over_time`'s, a span's own).
fn scale(series: &mut [Series], multiplier: f64, func: tracehouse_traceql::ast::MetricsFunc) {
    for s in series {
        s.samples.iter_mut().for_each(|(_, v)| *v *= multiplier);
        if func != tracehouse_traceql::ast::MetricsFunc::SumOverTime {
            s.exemplars.iter_mut().for_each(|e| e.value *= multiplier);
        }
    }
}

/// `spans` (the tenant's table), only the spans that start in `range`.
pub fn spans_in(
    spans: datafusion::logical_expr::LogicalPlan,
    range: &StepRange,
) -> Result<datafusion::logical_expr::LogicalPlan> {
    let kept = range.holds(col("start_time_unix_nano"));
    Ok(LogicalPlanBuilder::from(spans).filter(kept)?.build()?)
}

/// Plans each pipeline of `query` over `spans` (already narrowed to `range`), in the order
/// [`stages::combine`] takes their series.
pub fn plans(
    query: &tracehouse_traceql::ast::Query,
    spans: datafusion::logical_expr::LogicalPlan,
    range: &StepRange,
    exemplars: Exemplars,
) -> Result<Vec<(datafusion::logical_expr::LogicalPlan, MetricsShape)>> {
    Ok(plan_metrics(query, spans, &crate::traceql::plan_options(), range, exemplars).map_err(to_df)?)
}

/// How many pipelines `query` has (how many plans [`plans`] gives).
pub fn pipeline_count(query: &tracehouse_traceql::ast::Query) -> usize {
    match &query.root {
        Root::Metrics(m) => tracehouse_traceql::plan::metrics::pipelines(m).len(),
        _ => 0,
    }
}

/// The plan of a query that is one pipeline (`{ ... } | rate() by (...)`), for SQL, whose own
/// ORDER BY, LIMIT and WHERE do what second stages do.
pub fn lone_plan(
    query: &tracehouse_traceql::ast::Query,
    spans: datafusion::logical_expr::LogicalPlan,
    range: &StepRange,
) -> Result<(datafusion::logical_expr::LogicalPlan, MetricsShape)> {
    if !matches!(query.root, Root::Metrics(MetricsExpr::Pipeline(..))) {
        return Err(DataFusionError::Plan(
            "traceql_metrics() runs one metrics function; for topk, filters on values or arithmetic \
             between queries use SQL on its rows, or /api/metrics/query_range"
                .into(),
        )
        .into());
    }
    let mut plans = plans(query, spans, range, Exemplars::None)?;
    plans
        .pop()
        .ok_or_else(|| Error::Internal("a metrics pipeline without a plan".into()))
}

/// A metrics plan's rows for SQL: the `by()` labels as text columns named as Tempo names them,
/// `time` (the bucket's end, a UTC timestamp) and `value`.
pub fn as_rows(
    plan: datafusion::logical_expr::LogicalPlan,
    shape: &MetricsShape,
    range: &StepRange,
    multiplier: f64,
) -> datafusion::error::Result<datafusion::logical_expr::LogicalPlan> {
    use datafusion::arrow::datatypes::TimeUnit;
    let mut columns: Vec<datafusion::logical_expr::Expr> = (shape.labels.iter().enumerate())
        .map(|(i, name)| col(out::label(i)).alias(name))
        .collect();
    let end_ns = lit(range.start_ns) + (col(out::BUCKET) + lit(1i64)) * lit(range.step_ns);
    let utc = DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
    columns.push(datafusion::logical_expr::cast(end_ns, utc).alias("time"));
    columns.push(match multiplier != 1.0 && scaled_by_sampling(shape.func) {
        true => (col(out::VALUE) * lit(multiplier)).alias(out::VALUE),
        false => col(out::VALUE),
    });
    LogicalPlanBuilder::from(plan).project(columns)?.build()
}

/// The series of a metrics plan's `rows`, as Tempo shapes them: a series without `by()` is
/// named `__name__` = the function; counts and rates are 0 in buckets without spans; other
/// functions have no sample there. `exemplars` (by series label text and bucket) are the
/// spans [`exemplar_times`] chose, found by an [`Exemplars::Spans`] plan.
pub fn series_of(
    rows: &[RecordBatch],
    shape: &MetricsShape,
    range: &StepRange,
    max_series: usize,
    exemplars: &ExemplarSpans,
) -> Result<(Vec<Series>, bool)> {
    let mut by_series: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
    let mut truncated = false;
    for batch in rows {
        let (series, bucket, value) = row_columns(batch)?;
        for row in 0..batch.num_rows() {
            let text = series.value(row);
            // Beyond the limit, new series are left out as Tempo leaves them out.
            if by_series.len() >= max_series && !by_series.contains_key(text) {
                truncated = true;
                continue;
            }
            let samples = by_series.entry(text.to_string()).or_default();
            if value.is_valid(row) {
                samples.insert(bucket.value(row), value.value(row));
            }
        }
    }
    let mut series: Vec<Series> = (by_series.into_iter())
        .map(|(text, buckets)| Series {
            labels: labels_of(&text, shape),
            samples: samples_of(&buckets, shape, range),
            exemplars: exemplars_for(&text, &buckets, exemplars),
        })
        .filter(|s| !s.samples.is_empty())
        .collect();
    if shape.func == tracehouse_traceql::ast::MetricsFunc::QuantileOverTime {
        closest_quantile_keeps_exemplars(&mut series);
    }
    Ok((series, truncated))
}

/// A step's exemplar stays only on the quantile series (of the same other labels) whose value
/// at that step is closest to the exemplar's (the first on a tie), as Tempo gives each
/// exemplar to one quantile.
fn closest_quantile_keeps_exemplars(series: &mut [Series]) {
    type Key = (String, String, Option<String>);
    let key = |s: &Series, e: &Exemplar| -> Key {
        let others: Vec<&(String, HitValue)> = s.labels.iter().filter(|(k, _)| k != "p").collect();
        (format!("{others:?}"), e.trace_id.clone(), e.span_id.clone())
    };
    // Per exemplar: the closest series so far, and how close.
    let mut best: std::collections::HashMap<Key, (f64, usize)> = Default::default();
    for (i, s) in series.iter().enumerate() {
        for e in &s.exemplars {
            let Some(v) = value_at_step(s, e.timestamp_ms) else {
                continue;
            };
            let d = (v - e.value).abs();
            let b = best.entry(key(s, e)).or_insert((d, i));
            if d < b.0 {
                *b = (d, i);
            }
        }
    }
    for (i, s) in series.iter_mut().enumerate() {
        let kept: Vec<bool> = (s.exemplars.iter())
            .map(|e| best.get(&key(s, e)).is_some_and(|(_, w)| *w == i))
            .collect();
        let mut flags = kept.into_iter();
        s.exemplars.retain(|_| flags.next().unwrap_or(false));
    }
}

/// The value of `s` at the step that holds time `ms`: the first sample stamped at or after it.
fn value_at_step(s: &Series, ms: i64) -> Option<f64> {
    s.samples.iter().find(|(t, _)| *t >= ms).map(|(_, v)| *v)
}

/// A plan's series label text, bucket and value columns.
fn row_columns(
    batch: &RecordBatch,
) -> Result<(
    datafusion::arrow::array::StringArray,
    &datafusion::arrow::array::Int64Array,
    &datafusion::arrow::array::Float64Array,
)> {
    let (Some(series), Some(bucket), Some(value)) = (
        batch.column_by_name(out::SERIES),
        batch.column_by_name(out::BUCKET),
        batch.column_by_name(out::VALUE),
    ) else {
        return Err(Error::Internal("a metrics plan without its columns".into()));
    };
    let series = datafusion::arrow::compute::cast(series, &DataType::Utf8).map_err(DataFusionError::from)?;
    Ok((
        series.as_string::<i32>().clone(),
        bucket.as_primitive::<Int64Type>(),
        value.as_primitive::<Float64Type>(),
    ))
}

/// Exemplars by series label text and bucket.
pub type ExemplarSpans = std::collections::HashMap<(String, i64), Exemplar>;

/// Most exemplar spans one pipeline looks up, shared by its series (bounds the lookup's list
/// of times at this many per pipeline).
pub const MAX_EXEMPLAR_LOOKUPS: usize = 10_000;

/// The start times of the exemplars to look up in an [`Exemplars::Times`] plan's `rows`: per
/// series at most `limit` (and together at most [`MAX_EXEMPLAR_LOOKUPS`]), evenly spread over
/// its buckets; none when `limit` is 0 or the plan has no exemplar times.
pub fn exemplar_times(rows: &[RecordBatch], limit: usize) -> Result<Vec<i64>> {
    let mut by_series: BTreeMap<String, BTreeMap<i64, i64>> = BTreeMap::new();
    for batch in rows {
        let (series, bucket, _) = row_columns(batch)?;
        let Some(time) = batch.column_by_name(out::EXEMPLAR_TIME) else {
            return Ok(Vec::new());
        };
        let time = time.as_primitive::<Int64Type>();
        for row in (0..batch.num_rows()).filter(|r| time.is_valid(*r)) {
            let times = by_series.entry(series.value(row).to_string()).or_default();
            times.insert(bucket.value(row), time.value(row));
        }
    }
    let limit = limit.min(MAX_EXEMPLAR_LOOKUPS / by_series.len().max(1));
    Ok((by_series.values())
        .flat_map(|t| spread(t.values().copied(), limit))
        .collect())
}

/// At most `limit` of `items`, evenly spread.
fn spread<T: Clone>(items: impl Iterator<Item = T>, limit: usize) -> Vec<T> {
    let all: Vec<T> = items.collect();
    if all.len() <= limit {
        return all;
    }
    (0..limit).map(|i| all[i * all.len() / limit].clone()).collect()
}

/// The spans an [`Exemplars::Spans`] plan's `rows` name, by series label text and bucket.
pub fn exemplar_spans(rows: &[RecordBatch]) -> Result<ExemplarSpans> {
    let mut out = ExemplarSpans::new();
    for batch in rows {
        let (series, bucket, _) = row_columns(batch)?;
        let Some(picked) = ExemplarColumns::of(batch)? else {
            continue;
        };
        for row in 0..batch.num_rows() {
            if let Some(e) = picked.exemplar(row) {
                out.insert((series.value(row).to_string(), bucket.value(row)), e);
            }
        }
    }
    Ok(out)
}

/// A series' exemplars, oldest first; one without a value of its own (counts, rates) takes
/// its bucket's.
fn exemplars_for(text: &str, buckets: &BTreeMap<i64, f64>, exemplars: &ExemplarSpans) -> Vec<Exemplar> {
    if exemplars.is_empty() {
        return Vec::new();
    }
    (buckets.iter())
        .filter_map(|(b, v)| {
            let e = exemplars.get(&(text.to_string(), *b))?;
            let value = if e.value.is_nan() { *v } else { e.value };
            Some(Exemplar { value, ..e.clone() })
        })
        .filter(|e| !e.value.is_nan())
        .collect()
}

/// The exemplar columns of a plan's rows, where it has them.
struct ExemplarColumns<'a> {
    trace: &'a datafusion::arrow::array::StringArray,
    span: &'a datafusion::arrow::array::StringArray,
    time: &'a datafusion::arrow::array::Int64Array,
    value: &'a datafusion::arrow::array::Float64Array,
}

impl<'a> ExemplarColumns<'a> {
    fn of(batch: &'a RecordBatch) -> Result<Option<Self>> {
        let column = |name: &str| batch.column_by_name(name);
        let (Some(trace), Some(span), Some(time), Some(value)) = (
            column(out::EXEMPLAR_TRACE),
            column(out::EXEMPLAR_SPAN),
            column(out::EXEMPLAR_TIME),
            column(out::EXEMPLAR_VALUE),
        ) else {
            return Ok(None);
        };
        let typed = || -> Option<Self> {
            Some(Self {
                trace: trace.as_string_opt::<i32>()?,
                span: span.as_string_opt::<i32>()?,
                time: time.as_primitive_opt::<Int64Type>()?,
                value: value.as_primitive_opt::<Float64Type>()?,
            })
        };
        typed()
            .map(Some)
            .ok_or_else(|| Error::Internal("exemplar columns of unexpected types".into()))
    }

    fn exemplar(&self, row: usize) -> Option<Exemplar> {
        if self.trace.is_null(row) || self.time.is_null(row) {
            return None;
        }
        Some(Exemplar {
            trace_id: self.trace.value(row).to_string(),
            span_id: self.span.is_valid(row).then(|| self.span.value(row).to_string()),
            timestamp_ms: self.time.value(row) / 1_000_000,
            value: if self.value.is_valid(row) {
                self.value.value(row)
            } else {
                f64::NAN
            },
        })
    }
}

/// A series' labels as Tempo names them: without `by()`, `__name__` = the function; with it,
/// the labels with a value, or the first label as nil when none has one.
fn labels_of(text: &str, shape: &MetricsShape) -> Vec<(String, HitValue)> {
    if !shape.grouped {
        return vec![("__name__".to_string(), HitValue::Str(shape.func.name().to_string()))];
    }
    let all: Vec<(String, HitValue)> = entries(text).into_iter().map(|(k, v)| (k, v.into())).collect();
    if shape.func == tracehouse_traceql::ast::MetricsFunc::Compare {
        // compare()'s totals are named by an attribute whose value is nil.
        return all;
    }
    let valued: Vec<(String, HitValue)> = (all.iter()).filter(|(_, v)| *v != HitValue::Nil).cloned().collect();
    match valued.is_empty() {
        true => all.into_iter().take(1).collect(),
        false => valued,
    }
}

fn samples_of(buckets: &BTreeMap<i64, f64>, shape: &MetricsShape, range: &StepRange) -> Vec<(i64, f64)> {
    match shape.zero_filled {
        true => (0..range.intervals())
            .map(|i| (range.timestamp_ms(i), buckets.get(&i).copied().unwrap_or(0.0)))
            .collect(),
        false => (buckets.iter())
            .filter(|(i, v)| **i < range.intervals() && !v.is_nan())
            .map(|(i, v)| (range.timestamp_ms(*i), *v))
            .collect(),
    }
}

const SECOND_NS: i64 = 1_000_000_000;

/// A timestamp as Tempo parses it: unix seconds (10 digits or fewer, or with a fraction),
/// unix nanoseconds, or RFC 3339.
pub fn timestamp_ns(v: &str) -> Option<i64> {
    if v.contains('.')
        && let Ok(seconds) = v.parse::<f64>()
    {
        return float_ns(seconds);
    }
    match v.parse::<i64>() {
        Ok(n) if v.len() <= 10 => n.checked_mul(SECOND_NS),
        Ok(n) => Some(n),
        Err(_) => chrono::DateTime::parse_from_rfc3339(v).ok()?.timestamp_nanos_opt(),
    }
}

/// Seconds (a number) or a Go duration, in ns.
pub fn seconds_or_duration_ns(v: &str) -> Option<i64> {
    match v.parse::<f64>() {
        Ok(seconds) => float_ns(seconds),
        Err(_) => go_duration_ns(v),
    }
}

fn float_ns(seconds: f64) -> Option<i64> {
    let ns = (seconds * SECOND_NS as f64).round();
    (ns.is_finite() && ns.abs() < i64::MAX as f64).then_some(ns as i64)
}

/// Tempo's default step for a range: about 240 points, rounded down to an hour, 5 minutes, a
/// minute, 15, 5 or 1 second (ranges under a minute: to 50 ms).
pub fn default_step_ns(range_ns: i64) -> i64 {
    let baseline = range_ns / 240;
    if range_ns < 60 * SECOND_NS {
        let g = 50_000_000;
        return if baseline > g { baseline / g * g } else { g };
    }
    let granularities = [3_600, 300, 60, 15, 5, 1].map(|s| s * SECOND_NS);
    (granularities.into_iter())
        .find(|g| baseline > *g)
        .map_or(SECOND_NS, |g| baseline / g * g)
}

/// A Go duration (`100ms`, `1h30m`) in nanoseconds, through the TraceQL lexer.
pub fn go_duration_ns(text: &str) -> Option<i64> {
    let tokens = tracehouse_traceql::lexer::lex(text).ok()?;
    match tokens.as_slice() {
        [t, eof] if eof.tok == tracehouse_traceql::lexer::Tok::Eof => match t.tok {
            tracehouse_traceql::lexer::Tok::Duration(ns) => Some(ns),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_steps_follow_tempo() {
        assert_eq!(default_step_ns(24 * 3_600 * SECOND_NS), 300 * SECOND_NS);
        assert_eq!(default_step_ns(6 * 3_600 * SECOND_NS), 60 * SECOND_NS);
        assert_eq!(default_step_ns(30 * SECOND_NS), 100_000_000);
        assert_eq!(default_step_ns(SECOND_NS), 50_000_000);
        assert_eq!(default_step_ns(100 * SECOND_NS), SECOND_NS);
    }

    #[test]
    fn ranges_align_as_tempo_aligns_them() {
        // 10:00:07 to 10:05:03 in 60 s steps: 09:59:00 to 10:06:00, seven buckets.
        let s = 1_000_000_000i64;
        let r = StepRange::aligned(36_007 * s, 36_303 * s, 60 * s).unwrap();
        assert_eq!((r.start_ns, r.end_ns), (35_940 * s, 36_360 * s));
        assert_eq!(r.intervals(), 7);
        assert_eq!(r.timestamp_ms(0), 36_000_000);
        assert!(StepRange::aligned(0, 10, 0).is_err());
        assert!(StepRange::aligned(10, 10, 1).is_err());
        assert!(StepRange::aligned(0, 1_000_000 * s, s).is_err(), "too many steps");
    }
}
