//! SQL functions over spans: `attr(map, key)` reads any attribute as text, whatever its type;
//! `to_json(value)` renders maps, lists and structs (attributes, events, links) as JSON text.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringBuilder, StructArray};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use datafusion::common::{ScalarValue, exec_err, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use datafusion::prelude::SessionContext;

/// Registers the tracehouse UDFs on `ctx`, and budgets its amplifying functions against `pool`.
pub fn register(ctx: &SessionContext, pool: std::sync::Arc<dyn datafusion::execution::memory_pool::MemoryPool>) {
    ctx.register_udf(ScalarUDF::from(AttrUdf::new()));
    ctx.register_udf(ScalarUDF::from(ToJsonUdf::new()));
    crate::budget::register(ctx, pool);
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

/// Whether `t` is an attribute map: text keys, and values a struct of typed columns.
fn is_attribute_map(t: &DataType) -> bool {
    let DataType::Map(entries, _) = t else {
        return false;
    };
    let DataType::Struct(fields) = entries.data_type() else {
        return false;
    };
    fields.len() == 2
        && fields[0].data_type() == &DataType::Utf8
        && matches!(fields[1].data_type(), DataType::Struct(_))
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
            t if is_attribute_map(t) => Ok(DataType::Utf8),
            DataType::Null => Ok(DataType::Utf8),
            other => {
                plan_err!("attr() takes an attribute map (text keys, typed values) as its first argument, got {other}")
            }
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
        let (Some(keys), Some(values)) = (maps.keys().as_string_opt::<i32>(), maps.values().as_struct_opt()) else {
            return exec_err!("attr() takes an attribute map (text keys, typed values)");
        };
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

/// `to_json(value)`: any value as JSON text: maps and structs as objects, lists as arrays
/// (arrow-json's encoding; binary as hex). `NULL` stays `NULL`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ToJsonUdf {
    signature: Signature,
}

impl Default for ToJsonUdf {
    fn default() -> Self {
        Self::new()
    }
}

impl ToJsonUdf {
    pub fn new() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

/// Every value of `array` as JSON text.
pub fn json_text(array: &ArrayRef) -> Result<ArrayRef> {
    let rows = array.len();
    let schema = Arc::new(Schema::new(vec![Field::new("v", array.data_type().clone(), true)]));
    let batch = RecordBatch::try_new(schema, vec![array.clone()])?;
    let mut buf = Vec::with_capacity(rows * 64);
    {
        let mut writer = arrow::json::LineDelimitedWriter::new(&mut buf);
        writer.write(&batch)?;
        writer.finish()?;
    }
    let text = std::str::from_utf8(&buf).map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
    let mut out = StringBuilder::with_capacity(rows, buf.len());
    for line in text.lines() {
        // One object per row, `{"v":<value>}`, or `{}` for NULL.
        out.append_option(line.strip_prefix("{\"v\":").and_then(|rest| rest.strip_suffix('}')));
    }
    let out = out.finish();
    assert_eq!(out.len(), rows, "one JSON line per row");
    Ok(Arc::new(out))
}

impl ScalarUDFImpl for ToJsonUdf {
    fn name(&self) -> &str {
        "to_json"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let array = args.args[0].clone().into_array(args.number_rows)?;
        Ok(ColumnarValue::Array(json_text(&array)?))
    }
}

#[cfg(test)]
mod json_tests {
    use arrow::array::{Int32Array, ListArray};
    use arrow::datatypes::Int32Type;

    use super::*;

    #[test]
    fn json_text_keeps_rows_and_nulls() {
        let lists: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), None]),
            None,
            Some(vec![]),
        ]));
        let text = json_text(&lists).unwrap();
        let text = text.as_string::<i32>();
        assert_eq!(text.len(), 3);
        assert_eq!(text.value(0), "[1,null]");
        assert!(text.is_null(1));
        assert_eq!(text.value(2), "[]");
        let ints: ArrayRef = Arc::new(Int32Array::from(vec![Some(7), None]));
        let text = json_text(&ints).unwrap();
        assert_eq!(text.as_string::<i32>().value(0), "7");
        assert!(text.is_null(1));
    }
}
