//! Comparisons with array attributes: `traceql_array_any(array, op, value)` holds when some
//! element of an array attribute (stored as JSON text, `["a","b"]`, `[1,2]`) compares with
//! `value` as `op` says, as Tempo matches arrays element by element (`span.tags = "a"`,
//! `span.tags != "a"`: some element is not `a`, `span.codes > 400`, `span.tags =~ "a.*"`).
//!
//! Elements compare with values of their own type: strings with text (`=~`/`!~` with the
//! anchored pattern the planner passes), integers with integers, any number with a double,
//! booleans with booleans. Null when the array is absent.
//!
//! [`ElementTest`] and [`kept_elements`] pick, for a span a search returns, the elements that
//! matched, as Tempo shows an array attribute with a matching span.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{ArrayRef, AsArray, BooleanArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, Operator, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, lit,
};
use serde_json::Value as Json;

use crate::ast::{BinOp, FieldExpr, Static};
use crate::label::LabelValue;

/// `array op value` over the elements of the JSON array text `array` (`value` a literal).
pub fn any_element(array: Expr, op: Operator, value: Expr) -> Expr {
    ARRAY_ANY.call(vec![array, lit(op.to_string()), value])
}

/// The function's name in plans.
pub const NAME: &str = "traceql_array_any";

static ARRAY_ANY: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| Arc::new(ScalarUDF::from(ArrayAnyUdf::new())));

#[derive(Debug, PartialEq, Eq, Hash)]
struct ArrayAnyUdf {
    signature: Signature,
}

impl ArrayAnyUdf {
    fn new() -> Self {
        Self {
            signature: Signature::any(3, Volatility::Immutable),
        }
    }
}

/// The operand an element is compared with.
enum Operand {
    Text(String),
    Pattern(regex::Regex, bool),
    Int(i64),
    Double(f64),
    Bool(bool),
}

impl ScalarUDFImpl for ArrayAnyUdf {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let ColumnarValue::Scalar(ScalarValue::Utf8(Some(op))) = &args.args[1] else {
            return exec_err!("traceql_array_any takes a literal operator");
        };
        let ColumnarValue::Scalar(value) = &args.args[2] else {
            return exec_err!("traceql_array_any takes a literal value");
        };
        // No array in any row (a file without arrays, read without the map): nothing to do.
        if let ColumnarValue::Scalar(s) = &args.args[0]
            && s.is_null()
        {
            return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(None)));
        }
        let Some(operand) = operand(op, value)? else {
            return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(None)));
        };
        let arrays = args.args[0].to_array(args.number_rows)?;
        Ok(ColumnarValue::Array(Arc::new(decide(&arrays, op, &operand)?)))
    }
}

/// A comparison of each element of an attribute's array with a literal, as a filter states it
/// (`span.tags = "a"`, `span.nums > 5`, `span.tags =~ "a.*"`).
pub struct ElementTest {
    op: &'static str,
    operand: Operand,
}

impl ElementTest {
    /// The tests `cond` states on `attr`: its comparisons of `attr` with a literal, at any
    /// depth (`{ span.tags = "a" || span.tags = "b" }` states two).
    pub fn stated(cond: &FieldExpr, attr: &FieldExpr, out: &mut Vec<ElementTest>) {
        let FieldExpr::Binary(op, a, b) = cond else {
            if let FieldExpr::Unary(_, a) = cond {
                Self::stated(a, attr, out);
            }
            return;
        };
        let test = match (&**a, &**b) {
            (x, FieldExpr::Static(v)) if x == attr => Self::of(*op, v, false),
            (FieldExpr::Static(v), x) if x == attr => Self::of(*op, v, true),
            _ => None,
        };
        match test {
            Some(t) => out.push(t),
            None => {
                Self::stated(a, attr, out);
                Self::stated(b, attr, out);
            }
        }
    }

    /// `element op value` (`value op element` when `flipped`), for the operators and literals
    /// that compare elements.
    fn of(op: BinOp, value: &Static, flipped: bool) -> Option<Self> {
        use crate::ast::CmpOp::*;
        let op = match op {
            BinOp::Regex if !flipped => "~",
            BinOp::NotRegex if !flipped => "!~",
            BinOp::Cmp(c) => match (c, flipped) {
                (Eq, _) => "=",
                (Neq, _) => "!=",
                (Lt, false) | (Gt, true) => "<",
                (Lte, false) | (Gte, true) => "<=",
                (Gt, false) | (Lt, true) => ">",
                (Gte, false) | (Lte, true) => ">=",
            },
            _ => return None,
        };
        let value = match value {
            Static::Str(s) if op.ends_with('~') => ScalarValue::Utf8(Some(format!("^(?:{s})$"))),
            Static::Str(s) => ScalarValue::Utf8(Some(s.clone())),
            Static::Int(i) => ScalarValue::Int64(Some(*i)),
            Static::Float(f) => ScalarValue::Float64(Some(*f)),
            Static::Bool(b) => ScalarValue::Boolean(Some(*b)),
            _ => return None,
        };
        let operand = operand(op, &value).ok()??;
        Some(Self { op, operand })
    }
}

/// Of the JSON array `text`, the elements some test holds for, as Tempo shows an array
/// attribute with a span that matched by its elements: one element alone, several as an
/// array. `None` when no element passes, or `text` is not an array.
pub fn kept_elements(text: &str, tests: &[ElementTest]) -> Option<LabelValue> {
    let Ok(Json::Array(items)) = serde_json::from_str::<Json>(text) else {
        return None;
    };
    let mut kept: Vec<Json> = items
        .into_iter()
        .filter(|e| tests.iter().any(|t| element_holds(e, t.op, &t.operand)))
        .collect();
    match kept.len() {
        0 => None,
        1 => kept.pop().map(|e| LabelValue::of(&e)),
        _ => Some(LabelValue::of(&Json::Array(kept))),
    }
}

fn operand(op: &str, value: &ScalarValue) -> Result<Option<Operand>> {
    Ok(Some(match value {
        ScalarValue::Utf8(Some(s)) if op == "~" || op == "!~" => {
            let pattern = regex::Regex::new(s).or_else(|e| exec_err!("invalid regular expression: {e}"))?;
            Operand::Pattern(pattern, op == "~")
        }
        ScalarValue::Utf8(Some(s)) => Operand::Text(s.clone()),
        ScalarValue::Int64(Some(i)) => Operand::Int(*i),
        ScalarValue::Float64(Some(f)) => Operand::Double(*f),
        ScalarValue::Boolean(Some(b)) => Operand::Bool(*b),
        _ => return Ok(None),
    }))
}

fn decide(arrays: &ArrayRef, op: &str, operand: &Operand) -> Result<BooleanArray> {
    let Some(texts) = arrays.as_string_opt::<i32>() else {
        return exec_err!("traceql_array_any takes array text");
    };
    Ok(texts
        .iter()
        .map(|text| {
            let Ok(Json::Array(items)) = serde_json::from_str::<Json>(text?) else {
                return Some(false);
            };
            Some(items.iter().any(|e| element_holds(e, op, operand)))
        })
        .collect())
}

fn element_holds(e: &Json, op: &str, operand: &Operand) -> bool {
    use std::cmp::Ordering;
    let ordering: Option<Ordering> = match (e, operand) {
        (Json::String(s), Operand::Pattern(p, wanted)) => return p.is_match(s) == *wanted,
        (Json::String(s), Operand::Text(t)) => Some(s.as_str().cmp(t.as_str())),
        (Json::Number(n), Operand::Int(i)) if n.is_i64() => n.as_i64().map(|v| v.cmp(i)),
        (Json::Number(n), Operand::Int(i)) => n.as_f64().and_then(|v| v.partial_cmp(&(*i as f64))),
        (Json::Number(n), Operand::Double(d)) => n.as_f64().and_then(|v| v.partial_cmp(d)),
        (Json::Bool(b), Operand::Bool(v)) => Some(b.cmp(v)),
        _ => None,
    };
    let Some(o) = ordering else {
        return false;
    };
    match op {
        "=" => o.is_eq(),
        "!=" => o.is_ne(),
        "<" => o.is_lt(),
        "<=" => o.is_le(),
        ">" => o.is_gt(),
        ">=" => o.is_ge(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;

    fn holds(array: &str, op: &str, value: ScalarValue) -> bool {
        let arrays: ArrayRef = Arc::new(StringArray::from(vec![array]));
        let operand = operand(op, &value).unwrap().unwrap();
        decide(&arrays, op, &operand).unwrap().value(0)
    }

    #[test]
    fn some_element_decides() {
        let text = |s: &str| ScalarValue::Utf8(Some(s.into()));
        assert!(holds(r#"["a","b"]"#, "=", text("a")));
        assert!(holds(r#"["a","b"]"#, "!=", text("a")), "b is not a");
        assert!(!holds(r#"["a"]"#, "!=", text("a")));
        assert!(holds(r#"["a","b"]"#, "~", text("^(?:[bc])$")));
        assert!(!holds(r#"["a"]"#, "!~", text("^(?:a)$")));
        assert!(holds("[1,2,3]", "<", ScalarValue::Int64(Some(2))));
        assert!(holds(
            "[9007199254740993]",
            "=",
            ScalarValue::Int64(Some(9_007_199_254_740_993))
        ));
        assert!(!holds(
            "[9007199254740992]",
            "=",
            ScalarValue::Int64(Some(9_007_199_254_740_993))
        ));
        assert!(holds("[0.5,1.5]", ">", ScalarValue::Int64(Some(1))));
        assert!(holds("[0.5,1.5]", "=", ScalarValue::Float64(Some(1.5))));
        assert!(holds("[true,false]", "=", ScalarValue::Boolean(Some(false))));
        assert!(!holds(r#"["1"]"#, "=", ScalarValue::Int64(Some(1))), "types do not mix");
    }

    fn kept(query: &str, attr: &str, array: &str) -> Option<LabelValue> {
        let q = crate::parse(query).unwrap();
        let crate::ast::Root::Spanset(crate::ast::SpansetExpr::Filter(cond)) = &q.root else {
            panic!("one filter");
        };
        let attr = match crate::parse(&format!("{{ {attr} }}")).unwrap().root {
            crate::ast::Root::Spanset(crate::ast::SpansetExpr::Filter(a)) => a,
            _ => panic!("one attribute"),
        };
        let mut tests = Vec::new();
        ElementTest::stated(cond, &attr, &mut tests);
        kept_elements(array, &tests)
    }

    #[test]
    fn matching_elements_are_kept() {
        let strs = |v: &[&str]| LabelValue::Array(v.iter().map(|s| LabelValue::Str(s.to_string())).collect());
        let tags = r#"["a","b","c"]"#;
        assert_eq!(
            kept(r#"{ span.tags != "a" }"#, "span.tags", tags),
            Some(strs(&["b", "c"]))
        );
        assert_eq!(
            kept(r#"{ span.tags = "a" }"#, "span.tags", tags),
            Some(LabelValue::Str("a".into()))
        );
        assert_eq!(
            kept(r#"{ span.tags =~ "[ab]" }"#, "span.tags", tags),
            Some(strs(&["a", "b"]))
        );
        assert_eq!(
            kept(r#"{ "c" = span.tags || span.x = 1 }"#, "span.tags", tags),
            Some(LabelValue::Str("c".into()))
        );
        assert_eq!(
            kept("{ 5 < span.nums }", "span.nums", "[1,10]"),
            Some(LabelValue::Int(10))
        );
        assert_eq!(kept("{ span.nums > 50 }", "span.nums", "[1,10]"), None);
        assert_eq!(kept(r#"{ span.other = "a" }"#, "span.tags", tags), None);
    }
}
