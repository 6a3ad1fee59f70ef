//! Scalar functions whose result can be far larger than their input (`repeat`, `lpad`,
//! `replace`, `array_repeat`, `range`, ...), wrapped so their result's size is estimated and
//! reserved in the engine's memory pool before it is built: a call whose result would not fit
//! the pool's free memory (or is over [`MAX_RESULT_BYTES`]) is an error (SQLSTATE 53200), not
//! gigabytes of memory outside the pool. The reservation is released when the call returns; the
//! result then lives with the query like any other batch.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;

/// Largest result one call may build, whatever the pool has free.
pub const MAX_RESULT_BYTES: usize = 256 << 20;

/// How a function's result size follows from its arguments, per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(s, n)`: `len(s) * n`.
    Repeat,
    /// `lpad(s, n [, fill])`, `rpad`: up to 4 bytes per character of `n`.
    Pad,
    /// `replace(s, from, to)`, `regexp_replace(s, pattern, to)`: every byte may be replaced.
    Replace,
    /// `array_repeat(x, n)`, `array_resize(a, n)`: `n` elements of up to 16 bytes.
    Elements,
    /// `range(start, stop [, step])`, `generate_series`: `(stop - start) / step` values.
    Series,
}

const WRAPPED: &[(&str, Growth)] = &[
    ("repeat", Growth::Repeat),
    ("lpad", Growth::Pad),
    ("rpad", Growth::Pad),
    ("replace", Growth::Replace),
    ("regexp_replace", Growth::Replace),
    ("array_repeat", Growth::Elements),
    ("array_resize", Growth::Elements),
    ("range", Growth::Series),
    ("generate_series", Growth::Series),
];

/// Replaces the session's amplifying scalar functions with budgeted ones.
pub fn register(ctx: &SessionContext, pool: Arc<dyn MemoryPool>) {
    for (name, growth) in WRAPPED {
        if let Some(inner) = ctx.state().scalar_functions().get(*name).cloned() {
            ctx.register_udf(ScalarUDF::new_from_impl(Budgeted {
                inner,
                growth: *growth,
                pool: pool.clone(),
            }));
        }
    }
}

/// A scalar function whose result is reserved in the pool before it is computed.
#[derive(Debug)]
struct Budgeted {
    inner: Arc<ScalarUDF>,
    growth: Growth,
    pool: Arc<dyn MemoryPool>,
}

impl PartialEq for Budgeted {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner && self.growth == other.growth
    }
}

impl Eq for Budgeted {}

impl Hash for Budgeted {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
        self.growth.hash(state);
    }
}

/// One argument's per-row numbers: an integer argument's value, or a text argument's length.
enum PerRow {
    Constant(u64, i64),
    Values(Option<arrow::array::Int64Array>, Option<arrow::array::Int64Array>),
}

impl PerRow {
    fn of(arg: &ColumnarValue) -> Self {
        match arg {
            ColumnarValue::Scalar(s) => {
                let len = match s {
                    ScalarValue::Utf8(Some(t)) | ScalarValue::LargeUtf8(Some(t)) | ScalarValue::Utf8View(Some(t)) => {
                        t.len() as u64
                    }
                    _ => 16,
                };
                let int = match s.cast_to(&DataType::Int64) {
                    Ok(ScalarValue::Int64(Some(v))) => v,
                    _ => 0,
                };
                Self::Constant(len, int)
            }
            ColumnarValue::Array(a) => {
                let ints = arrow::compute::cast(a, &DataType::Int64)
                    .ok()
                    .map(|c| c.as_primitive::<Int64Type>().clone());
                let lens = arrow::compute::kernels::length::length(a)
                    .and_then(|l| arrow::compute::cast(&l, &DataType::Int64))
                    .ok()
                    .map(|c| c.as_primitive::<Int64Type>().clone());
                Self::Values(ints, lens)
            }
        }
    }

    fn int(&self, row: usize) -> i64 {
        match self {
            Self::Constant(_, v) => *v,
            Self::Values(Some(ints), _) if ints.is_valid(row) => ints.value(row),
            Self::Values(..) => 0,
        }
    }

    fn len(&self, row: usize) -> u64 {
        match self {
            Self::Constant(len, _) => *len,
            Self::Values(_, Some(lens)) if lens.is_valid(row) => lens.value(row).max(0) as u64,
            Self::Values(..) => 16,
        }
    }
}

impl Budgeted {
    fn row_bytes(&self, args: &[PerRow], row: usize) -> u64 {
        let int = |i: usize| args.get(i).map_or(0, |a| a.int(row));
        let len = |i: usize| args.get(i).map_or(0, |a| a.len(row));
        let count = |i: usize| int(i).max(0) as u64;
        match self.growth {
            Growth::Repeat => len(0).saturating_mul(count(1)),
            Growth::Pad => count(1).saturating_mul(4),
            Growth::Replace => len(0).saturating_mul(len(2).saturating_add(1)),
            Growth::Elements => count(1).saturating_mul(16),
            Growth::Series => {
                let (start, stop) = if args.len() == 1 { (0, int(0)) } else { (int(0), int(1)) };
                let step = if args.len() > 2 { int(2) } else { 1 };
                (stop.abs_diff(start) / step.unsigned_abs().max(1)).saturating_mul(8)
            }
        }
    }

    /// The result's bytes for the whole call, counted up to just past `MAX_RESULT_BYTES`.
    fn result_bytes(&self, args: &[ColumnarValue], rows: usize) -> u64 {
        let rows = if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
            1
        } else {
            rows
        };
        let per_row: Vec<PerRow> = args.iter().map(PerRow::of).collect();
        let mut total = 0u64;
        for row in 0..rows {
            total = total.saturating_add(self.row_bytes(&per_row, row));
            if total > MAX_RESULT_BYTES as u64 {
                break;
            }
        }
        total
    }
}

impl ScalarUDFImpl for Budgeted {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let bytes = self.result_bytes(&args.args, args.number_rows);
        if bytes > MAX_RESULT_BYTES as u64 {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{}() would build a result of more than {MAX_RESULT_BYTES} bytes",
                self.name()
            )));
        }
        let reservation = MemoryConsumer::new(format!("{}()", self.name())).register(&self.pool);
        reservation.try_grow(bytes as usize)?;
        self.inner.invoke_with_args(args)
    }
}
