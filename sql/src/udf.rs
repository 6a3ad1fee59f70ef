//! SQL functions over spans: `attr(map, key)` reads any attribute as text, whatever its type.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringBuilder, StructArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::common::{ScalarValue, exec_err};
use datafusion::error::Result;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use datafusion::prelude::SessionContext;

/// Registers the tracehouse UDFs on `ctx`.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::from(AttrUdf::new()));
}

/// `attr(attributes, 'key')`: the attribute's value as text (`NULL` when absent); integers,
/// doubles and booleans in their usual text form, bytes as hex, arrays and kvlists as JSON.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct AttrUdf {
    signature: Signature,
}

impl Default for AttrUdf {
    fn default() -> Self {
        Self::new()
    }
}

impl AttrUdf {
    pub fn new() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

/// Renders entry `i` of an attribute value struct as text.
pub fn render_value(values: &StructArray, i: usize) -> Option<String> {
    if values.is_null(i) {
        return None;
    }
    let col = |name: &str| values.column_by_name(name);
    if let Some(c) = col("str").filter(|c| c.is_valid(i)) {
        return Some(c.as_string::<i32>().value(i).to_string());
    }
    if let Some(c) = col("int").filter(|c| c.is_valid(i)) {
        return Some(c.as_primitive::<Int64Type>().value(i).to_string());
    }
    if let Some(c) = col("double").filter(|c| c.is_valid(i)) {
        return Some(c.as_primitive::<Float64Type>().value(i).to_string());
    }
    if let Some(c) = col("bool").filter(|c| c.is_valid(i)) {
        return Some(c.as_boolean().value(i).to_string());
    }
    if let Some(c) = col("bytes").filter(|c| c.is_valid(i)) {
        return Some(
            c.as_binary::<i32>()
                .value(i)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        );
    }
    for name in ["array", "kvlist"] {
        if let Some(c) = col(name).filter(|c| c.is_valid(i)) {
            return Some(c.as_string::<i32>().value(i).to_string());
        }
    }
    None
}

impl ScalarUDFImpl for AttrUdf {
    fn name(&self) -> &str {
        "attr"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match &arg_types[0] {
            DataType::Map(_, _) | DataType::Null => Ok(DataType::Utf8),
            other => exec_err!("attr() takes an attribute map as its first argument, got {other}"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let key = match &args.args[1] {
            ColumnarValue::Scalar(
                ScalarValue::Utf8(Some(k)) | ScalarValue::LargeUtf8(Some(k)) | ScalarValue::Utf8View(Some(k)),
            ) => k.clone(),
            ColumnarValue::Scalar(s) if s.is_null() => {
                return Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)));
            }
            _ => return exec_err!("attr() takes a constant text key as its second argument"),
        };
        let maps = args.args[0].clone().into_array(rows)?;
        if maps.data_type() == &DataType::Null {
            return Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)));
        }
        let maps = maps.as_map();
        let keys = maps.keys().as_string::<i32>();
        let values = maps.values().as_struct();
        let offsets = maps.value_offsets();
        let mut out = StringBuilder::with_capacity(rows, rows * 8);
        for row in 0..rows {
            if maps.is_null(row) {
                out.append_null();
                continue;
            }
            let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
            let found = (start..end).find(|&j| keys.value(j) == key);
            out.append_option(found.and_then(|j| render_value(values, j)));
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish()) as ArrayRef))
    }
}
