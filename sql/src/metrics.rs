//! TraceQL metrics over a tenant's spans: a query range request planned by the traceql crate
//! (a time-bucketed aggregation, [`tracehouse_traceql::plan_metrics`]) and run by the engine,
//! its rows shaped into Tempo's series: typed labels and samples, oldest first.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::logical_expr::{LogicalPlanBuilder, col, lit};
use tracehouse_traceql::ast::Root;
use tracehouse_traceql::label::entries;
use tracehouse_traceql::plan::metrics::out;
use tracehouse_traceql::{MetricsShape, StepRange, compile, plan_metrics};

use crate::guard::Refusal;
use crate::search::HitValue;
use crate::traceql::to_df;
use crate::{Error, Result};
use datafusion::error::DataFusionError;

/// Series one answer holds at most unless configured otherwise (Tempo's
/// `max_response_series` default).
pub const MAX_SERIES: usize = 1_000;

/// A metrics query over `(start, end]`, in `step` buckets (all ns since the epoch).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsRequest {
    pub query: String,
    pub start_unix_nano: i64,
    pub end_unix_nano: i64,
    pub step_ns: i64,
    /// Series the answer may hold; more is an error.
    pub max_series: usize,
}

/// One series: its labels (typed, in `by()` order) and samples `(timestamp ms, value)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Vec<(String, HitValue)>,
    pub samples: Vec<(i64, f64)>,
}

/// The series of a metrics query, ordered by their labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsOutcome {
    pub series: Vec<Series>,
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
    let range = StepRange::aligned(request.start_unix_nano, request.end_unix_nano, request.step_ns).map_err(to_df)?;
    Ok((query, range))
}

/// `spans` (the tenant's table), only the spans that start in `range`.
pub fn spans_in(
    spans: datafusion::logical_expr::LogicalPlan,
    range: &StepRange,
) -> Result<datafusion::logical_expr::LogicalPlan> {
    let start = col("start_time_unix_nano");
    let kept = start
        .clone()
        .gt(lit(range.start_ns))
        .and(start.lt_eq(lit(range.end_ns)));
    Ok(LogicalPlanBuilder::from(spans).filter(kept)?.build()?)
}

/// Plans `query` over `spans` (already narrowed to `range`).
pub fn plan(
    query: &tracehouse_traceql::ast::Query,
    spans: datafusion::logical_expr::LogicalPlan,
    range: &StepRange,
) -> Result<(datafusion::logical_expr::LogicalPlan, MetricsShape)> {
    Ok(plan_metrics(query, spans, &crate::traceql::plan_options(), range).map_err(to_df)?)
}

/// The series of a metrics plan's `rows`, as Tempo shapes them: a series without `by()` is
/// named `__name__` = the function; counts and rates are 0 in buckets without spans; other
/// functions have no sample there.
pub fn series_of(
    rows: &[RecordBatch],
    shape: &MetricsShape,
    range: &StepRange,
    max_series: usize,
) -> Result<Vec<Series>> {
    let mut by_series: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
    for batch in rows {
        let (Some(series), Some(bucket), Some(value)) = (
            batch.column_by_name(out::SERIES),
            batch.column_by_name(out::BUCKET),
            batch.column_by_name(out::VALUE),
        ) else {
            return Err(Error::Internal("a metrics plan without its columns".into()));
        };
        let series = datafusion::arrow::compute::cast(series, &DataType::Utf8).map_err(DataFusionError::from)?;
        let (series, bucket, value) = (
            series.as_string::<i32>(),
            bucket.as_primitive::<Int64Type>(),
            value.as_primitive::<Float64Type>(),
        );
        for row in 0..batch.num_rows() {
            let samples = by_series.entry(series.value(row).to_string()).or_default();
            if value.is_valid(row) {
                samples.insert(bucket.value(row), value.value(row));
            }
            if by_series.len() > max_series {
                return Err(Refusal::TooComplex(format!(
                    "the query returns more than {max_series} series: narrow it with a filter or fewer by() labels"
                ))
                .into());
            }
        }
    }
    Ok(by_series
        .into_iter()
        .map(|(text, buckets)| Series {
            labels: labels_of(&text, shape),
            samples: samples_of(&buckets, shape, range),
        })
        .filter(|s| !s.samples.is_empty())
        .collect())
}

fn labels_of(text: &str, shape: &MetricsShape) -> Vec<(String, HitValue)> {
    match shape.grouped {
        true => entries(text).into_iter().map(|(k, v)| (k, v.into())).collect(),
        false => vec![("__name__".to_string(), HitValue::Str(shape.func.name().to_string()))],
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

#[cfg(test)]
mod tests {
    use super::*;

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
