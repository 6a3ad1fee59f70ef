//! Spanset labels: the attributes a spanset carries after `by()` and pipeline aggregates,
//! typed as Tempo types them, in one text column so that equal labels are the same spanset.
//!
//! A label is `""` (no attributes) or a JSON array of `[name, value]` pairs in the order the
//! pipeline added them, e.g. `[["by(span.code)",200],["count()",3]]`. Values keep their type:
//! strings, integers, floats (always written with a fraction or an exponent, so `5.0` stays a
//! float), booleans, `null` for Tempo's nil, durations as Tempo prints them (Go's duration
//! text, `"1.5s"`, a string as in Tempo's answers), and arrays as JSON arrays.
//!
//! `traceql_label(label, name, value, kind)` appends one pair; [`entries`] reads them back.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, lit,
};
use serde_json::Value as Json;

/// How `traceql_label` reads its value argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// By its Arrow type: text, Int64, Float64, Boolean, or an attribute value struct
    /// (`{str, int, double, bool, array, ...}`, whichever field is set).
    Plain,
    /// Int64 nanoseconds, written as a duration.
    Duration,
    /// A Float64, written as an integer where the fifth argument (Int64) holds one: an
    /// aggregate of attributes that were all integers.
    Number,
}

impl ValueKind {
    fn tag(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Duration => "duration",
            Self::Number => "number",
        }
    }
}

/// `label` with `[name, value]` appended. `int` is the integer form of a
/// [`ValueKind::Number`] value (ignored otherwise).
pub fn append(label: Expr, name: &str, value: Expr, kind: ValueKind, int: Option<Expr>) -> Expr {
    append_named(label, lit(name), value, kind, int)
}

/// [`append`] with a name read per row from a text expression.
pub fn append_named(label: Expr, name: Expr, value: Expr, kind: ValueKind, int: Option<Expr>) -> Expr {
    let int = int.unwrap_or_else(|| lit(ScalarValue::Int64(None)));
    LABEL.call(vec![label, name, value, lit(kind.tag()), int])
}

static LABEL: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| Arc::new(ScalarUDF::from(LabelUdf::new())));

#[derive(Debug, PartialEq, Eq, Hash)]
struct LabelUdf {
    signature: Signature,
}

impl LabelUdf {
    fn new() -> Self {
        Self {
            signature: Signature::any(5, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for LabelUdf {
    fn name(&self) -> &str {
        "traceql_label"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let scalar_text = |i: usize| match &args.args[i] {
            ColumnarValue::Scalar(ScalarValue::Utf8(Some(s))) => Ok(s.clone()),
            _ => exec_err!("traceql_label takes a literal name and kind"),
        };
        let kind = scalar_text(3)?;
        let name = Name::of(&args.args[1], rows)?;
        let arrays: Vec<ArrayRef> = [0, 2, 4]
            .into_iter()
            .map(|i| args.args[i].to_array(rows))
            .collect::<Result<_>>()?;
        let Some(labels) = arrays[0].as_string_opt::<i32>() else {
            return exec_err!("traceql_label takes a text label");
        };
        let mut out = StringBuilder::with_capacity(rows, rows * 16);
        for row in 0..rows {
            let value = match kind.as_str() {
                "duration" => duration_json(arrays[1].as_ref(), row),
                "number" => number_json(arrays[1].as_ref(), arrays[2].as_ref(), row),
                _ => value_json(arrays[1].as_ref(), row),
            };
            let prior = if labels.is_valid(row) { labels.value(row) } else { "" };
            out.append_value(appended(prior, name.at(row), value));
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// A label's name: one for all rows, or one per row (`compare()`'s attribute names).
enum Name {
    One(String),
    PerRow(datafusion::arrow::array::StringArray),
}

impl Name {
    fn of(v: &ColumnarValue, rows: usize) -> Result<Self> {
        match v {
            ColumnarValue::Scalar(ScalarValue::Utf8(Some(s))) => Ok(Self::One(s.clone())),
            ColumnarValue::Array(a) => {
                match datafusion::arrow::compute::cast(a, &DataType::Utf8)?.as_string_opt::<i32>() {
                    Some(names) => Ok(Self::PerRow(names.clone())),
                    None => exec_err!("traceql_label takes a text name"),
                }
            }
            _ => Self::of(&ColumnarValue::Array(v.to_array(rows)?), rows),
        }
    }

    fn at(&self, row: usize) -> &str {
        match self {
            Self::One(s) => s,
            Self::PerRow(names) if names.is_valid(row) => names.value(row),
            Self::PerRow(_) => "",
        }
    }
}

/// `prior` (a label this function made, or `""`) with one pair added, as text: the label is
/// not parsed again at each stage.
fn appended(prior: &str, name: &str, value: Json) -> String {
    let pair = Json::Array(vec![Json::String(name.to_string()), value]).to_string();
    match prior.strip_suffix(']') {
        Some(pairs) => format!("{pairs},{pair}]"),
        None => format!("[{pair}]"),
    }
}

fn float_json(v: f64) -> Json {
    serde_json::Number::from_f64(v).map_or_else(|| Json::String(v.to_string()), Json::Number)
}

fn duration_json(a: &dyn Array, row: usize) -> Json {
    match a.as_primitive_opt::<Int64Type>() {
        Some(ns) if ns.is_valid(row) => Json::String(go_duration(ns.value(row))),
        _ => Json::Null,
    }
}

fn number_json(a: &dyn Array, int: &dyn Array, row: usize) -> Json {
    if let Some(i) = int.as_primitive_opt::<Int64Type>()
        && i.is_valid(row)
    {
        return Json::from(i.value(row));
    }
    value_json(a, row)
}

/// The value in row `row` of `a`, by its type; `null` when absent.
fn value_json(a: &dyn Array, row: usize) -> Json {
    if !a.is_valid(row) {
        return Json::Null;
    }
    match a.data_type() {
        DataType::Utf8 => Json::String(a.as_string::<i32>().value(row).to_string()),
        DataType::Int64 => Json::from(a.as_primitive::<Int64Type>().value(row)),
        DataType::Float64 => float_json(a.as_primitive::<Float64Type>().value(row)),
        DataType::Boolean => Json::Bool(a.as_boolean().value(row)),
        DataType::Struct(_) => attribute_json(a.as_struct(), row),
        _ => Json::Null,
    }
}

/// An attribute value struct's set field.
fn attribute_json(s: &datafusion::arrow::array::StructArray, row: usize) -> Json {
    let field = |name: &str| s.column_by_name(name).filter(|c| c.is_valid(row));
    if let Some(c) = field("array") {
        let text = c.as_string::<i32>().value(row);
        // As Tempo labels it, an array of one element is that element (`["c"]` is `"c"`).
        return match serde_json::from_str(text) {
            Ok(Json::Array(mut items)) if items.len() == 1 => items.pop().unwrap_or(Json::Null),
            Ok(v) => v,
            Err(_) => Json::String(text.to_string()),
        };
    }
    ["str", "int", "double", "bool", "kvlist"]
        .into_iter()
        .find_map(field)
        .map_or(Json::Null, |c| value_json(c.as_ref(), row))
}

/// A typed spanset attribute value, as [`entries`] reads it back.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelValue {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    /// Tempo's nil: the value was absent.
    Nil,
    Array(Vec<LabelValue>),
}

impl LabelValue {
    /// A JSON value, typed.
    pub fn of(v: &Json) -> Self {
        match v {
            Json::Null => Self::Nil,
            Json::Bool(b) => Self::Bool(*b),
            Json::Number(n) => match n.as_i64() {
                Some(i) if !n.is_f64() => Self::Int(i),
                _ => Self::Double(n.as_f64().unwrap_or(f64::NAN)),
            },
            Json::String(s) => Self::Str(s.clone()),
            Json::Array(items) => Self::Array(items.iter().map(Self::of).collect()),
            Json::Object(_) => Self::Str(v.to_string()),
        }
    }
}

/// A value stored as JSON text (an array attribute), typed; `None` when it is not JSON.
pub fn json_value(text: &str) -> Option<LabelValue> {
    serde_json::from_str::<Json>(text).ok().map(|v| LabelValue::of(&v))
}

/// The `[name, value]` pairs of a label, in order.
pub fn entries(label: &str) -> Vec<(String, LabelValue)> {
    let Ok(Json::Array(pairs)) = serde_json::from_str::<Json>(label) else {
        return Vec::new();
    };
    pairs
        .iter()
        .filter_map(|p| match p {
            Json::Array(kv) if kv.len() == 2 => Some((kv[0].as_str()?.to_string(), LabelValue::of(&kv[1]))),
            _ => None,
        })
        .collect()
}

/// A duration as Go's `time.Duration.String` writes it (Tempo's text for durations):
/// `0s`, `150ns`, `1.5µs`, `20ms`, `1.5s`, `2m30s`, `1h0m0s`.
pub fn go_duration(ns: i64) -> String {
    let sign = if ns < 0 { "-" } else { "" };
    let u = ns.unsigned_abs();
    if u == 0 {
        return "0s".into();
    }
    if u < 1_000_000_000 {
        let (unit, scale) = match u {
            0..1_000 => return format!("{sign}{u}ns"),
            1_000..1_000_000 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        return format!("{sign}{}{unit}", fraction(u, scale));
    }
    let (h, rem) = (u / 3_600_000_000_000, u % 3_600_000_000_000);
    let (m, s_ns) = (rem / 60_000_000_000, rem % 60_000_000_000);
    let seconds = fraction(s_ns, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{sign}{seconds}s"),
        (0, m) => format!("{sign}{m}m{seconds}s"),
        (h, m) => format!("{sign}{h}h{m}m{seconds}s"),
    }
}

/// `v / scale` in decimal, without trailing zeros in the fraction.
fn fraction(v: u64, scale: u64) -> String {
    let (whole, part) = (v / scale, v % scale);
    if part == 0 {
        return whole.to_string();
    }
    let digits = scale.ilog10() as usize;
    let text = format!("{part:0digits$}");
    format!("{whole}.{}", text.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_go_writes_them() {
        for (ns, text) in [
            (0, "0s"),
            (150, "150ns"),
            (1_500, "1.5µs"),
            (20_000_000, "20ms"),
            (1_234_567, "1.234567ms"),
            (1_500_000_000, "1.5s"),
            (150_000_000_000, "2m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (-2_000_000, "-2ms"),
        ] {
            assert_eq!(go_duration(ns), text);
        }
    }

    #[test]
    fn labels_keep_order_and_types() {
        let l = appended("", "by(span.code)", Json::from(200));
        let l = appended(&l, "avg(span.x)", float_json(5.0));
        let l = appended(&l, "by(span.flag)", Json::Null);
        assert_eq!(
            entries(&l),
            vec![
                ("by(span.code)".to_string(), LabelValue::Int(200)),
                ("avg(span.x)".to_string(), LabelValue::Double(5.0)),
                ("by(span.flag)".to_string(), LabelValue::Nil),
            ]
        );
        assert!(entries("").is_empty());
    }
}
