//! Tempo's power-of-two histograms, for `histogram_over_time` and `quantile_over_time`: a
//! value's bucket is the next power of two at or above it ([`bucketize`]), and a quantile is
//! interpolated exponentially inside the bucket it falls in ([`quantile`]), as Tempo computes
//! them. `traceql_log2_bucket(int)` and `traceql_log2_quantile(buckets, counts, p)` run them in
//! plans.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, Float64Builder, ListArray};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The power-of-two bucket of `v`: the least power of two at or above it; `None` below 2,
/// where Tempo puts a span in no bucket.
pub fn bucketize(v: i64) -> Option<f64> {
    if v < 2 {
        return None;
    }
    let bits = 64 - (v as u64 - 1).leading_zeros();
    Some((1u64 << bits) as f64)
}

/// Quantile `p` of a histogram whose `buckets` are `(upper bound, count)` in ascending bound
/// order: the bucket holding the `ceil(p * total)`-th value, interpolated exponentially
/// between the bound of the bucket before it (half its own bound for the first) and its own.
/// 0 for an empty histogram or a `p` outside `[0, 1]`.
pub fn quantile(p: f64, buckets: &[(f64, i64)]) -> f64 {
    let total: i64 = buckets.iter().map(|b| b.1).sum();
    if !(0.0..=1.0).contains(&p) || total == 0 {
        return 0.0;
    }
    let wanted = ((p * total as f64).ceil() as i64).max(1);
    let mut seen = 0;
    let mut at = 0;
    for (i, &(bound, count)) in buckets.iter().enumerate() {
        at = i;
        if seen + count > wanted {
            break;
        }
        seen += count;
        if seen == wanted {
            return bound;
        }
    }
    let fraction = (wanted - seen) as f64 / buckets[at].1 as f64;
    let high = buckets[at].0.log2();
    let low = if at > 0 { buckets[at - 1].0.log2() } else { high - 1.0 };
    (low + (high - low) * fraction).exp2()
}

/// `traceql_log2_bucket(v)`: [`bucketize`] of an Int64, null below 2.
pub fn bucket_expr(v: Expr) -> Expr {
    BUCKET.call(vec![v])
}

/// `traceql_log2_quantile(bounds, counts, p)`: [`quantile`] of one histogram per row, its
/// bounds (List of Float64) and counts (List of Int64) in any order.
pub fn quantile_expr(bounds: Expr, counts: Expr, p: Expr) -> Expr {
    QUANTILE.call(vec![bounds, counts, p])
}

static BUCKET: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| Arc::new(ScalarUDF::from(BucketUdf::new())));
static QUANTILE: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| Arc::new(ScalarUDF::from(QuantileUdf::new())));

#[derive(Debug, PartialEq, Eq, Hash)]
struct BucketUdf {
    signature: Signature,
}

impl BucketUdf {
    fn new() -> Self {
        Self {
            signature: Signature::exact(vec![DataType::Int64], Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for BucketUdf {
    fn name(&self) -> &str {
        "traceql_log2_bucket"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let values = args.args[0].to_array(args.number_rows)?;
        let Some(values) = values.as_primitive_opt::<Int64Type>() else {
            return exec_err!("traceql_log2_bucket takes an Int64");
        };
        let out: Float64Array = values.iter().map(|v| v.and_then(bucketize)).collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct QuantileUdf {
    signature: Signature,
}

impl QuantileUdf {
    fn new() -> Self {
        Self {
            signature: Signature::any(3, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for QuantileUdf {
    fn name(&self) -> &str {
        "traceql_log2_quantile"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays: Vec<ArrayRef> = (args.args.iter()).map(|a| a.to_array(rows)).collect::<Result<_>>()?;
        let (Some(bounds), Some(counts), Some(ps)) = (
            arrays[0].as_list_opt::<i32>(),
            arrays[1].as_list_opt::<i32>(),
            arrays[2].as_primitive_opt::<Float64Type>(),
        ) else {
            return exec_err!("traceql_log2_quantile takes two lists and a Float64");
        };
        let mut out = Float64Builder::with_capacity(rows);
        let mut histogram = Vec::new();
        for row in 0..rows {
            histogram_of(bounds, counts, row, &mut histogram)?;
            out.append_value(quantile(ps.value(row), &histogram));
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// Row `row`'s `(bound, count)` pairs in ascending bound order, into `out`.
fn histogram_of(bounds: &ListArray, counts: &ListArray, row: usize, out: &mut Vec<(f64, i64)>) -> Result<()> {
    out.clear();
    if bounds.is_null(row) || counts.is_null(row) {
        return Ok(());
    }
    let (b, c) = (bounds.value(row), counts.value(row));
    let (Some(b), Some(c)) = (b.as_primitive_opt::<Float64Type>(), c.as_primitive_opt::<Int64Type>()) else {
        return exec_err!("traceql_log2_quantile takes Float64 bounds and Int64 counts");
    };
    if b.len() != c.len() {
        return exec_err!("traceql_log2_quantile takes as many bounds as counts");
    }
    out.extend(b.iter().zip(c.iter()).filter_map(|(b, c)| Some((b?, c?))));
    out.sort_by(|x, y| x.0.total_cmp(&y.0));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_the_next_power_of_two() {
        assert_eq!(bucketize(0), None);
        assert_eq!(bucketize(1), None);
        assert_eq!(bucketize(2), Some(2.0));
        assert_eq!(bucketize(3), Some(4.0));
        assert_eq!(bucketize(4), Some(4.0));
        assert_eq!(bucketize(5), Some(8.0));
        assert_eq!(bucketize(1 << 40), Some((1u64 << 40) as f64));
        assert_eq!(bucketize((1 << 40) + 1), Some((1u64 << 41) as f64));
    }

    #[test]
    fn quantiles_interpolate_as_tempo_does() {
        // Tempo's Log2Quantile cases (engine_metrics_test.go).
        let buckets = [(1.0, 1), (2.0, 1), (4.0, 1), (8.0, 1), (16.0, 1)];
        assert_eq!(quantile(0.0, &buckets), 1.0);
        assert_eq!(quantile(0.2, &buckets), 1.0);
        assert_eq!(quantile(0.4, &buckets), 2.0);
        assert_eq!(quantile(1.0, &buckets), 16.0);
        // Half way through a bucket of two: 2^(1 + 0.5).
        let v = quantile(0.5, &[(2.0, 1), (4.0, 2)]);
        assert!((v - 2f64.powf(1.5)).abs() < 1e-12, "{v}");
        // The first bucket interpolates from half its bound.
        let v = quantile(0.5, &[(8.0, 2)]);
        assert!((v - 2f64.powf(2.5)).abs() < 1e-12, "{v}");
        assert_eq!(quantile(0.5, &[]), 0.0);
        assert_eq!(quantile(1.5, &buckets), 0.0);
    }
}
