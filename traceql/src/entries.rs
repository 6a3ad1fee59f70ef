//! Every attribute of a span as rows, for `compare()`: `traceql_attribute_entries(name1, col1,
//! name2, col2, ...)` lists one `{name, str, int, double, bool, array}` struct per attribute a
//! span has, to be unnested and counted per value. A map column (`span_attributes`, ...) gives
//! one entry per key, named `name` + key (`span.` + `http.method`); a text column gives one
//! entry named `name` where it has a value. Values of other types (bytes, key-value lists) and
//! absent values give none, as Tempo counts only the attributes a span has.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, BooleanBuilder, Float64Builder, Int64Builder, ListArray, MapArray,
    StringArray, StringBuilder, StructArray,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Fields, Float64Type, Int64Type};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, lit,
};

/// The fields of one entry, in order.
pub const FIELDS: [&str; 6] = ["name", "str", "int", "double", "bool", "array"];

/// Attributes one span may list; more is an error (a span has at most a few hundred).
pub const MAX_ENTRIES_PER_SPAN: usize = 10_000;

/// `traceql_attribute_entries(...)` over `(name, column)` pairs.
pub fn entries_expr(sources: Vec<(&str, Expr)>) -> Expr {
    let args = sources.into_iter().flat_map(|(n, c)| [lit(n), c]).collect();
    ENTRIES.call(args)
}

static ENTRIES: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| Arc::new(ScalarUDF::from(EntriesUdf::new())));

fn entry_fields() -> Fields {
    Fields::from(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("str", DataType::Utf8, true),
        Field::new("int", DataType::Int64, true),
        Field::new("double", DataType::Float64, true),
        Field::new("bool", DataType::Boolean, true),
        Field::new("array", DataType::Utf8, true),
    ])
}

fn list_field() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Struct(entry_fields()), false))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct EntriesUdf {
    signature: Signature,
}

impl EntriesUdf {
    fn new() -> Self {
        Self {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for EntriesUdf {
    fn name(&self) -> &str {
        "traceql_attribute_entries"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(list_field()))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        if !args.args.len().is_multiple_of(2) {
            return exec_err!("traceql_attribute_entries takes (name, column) pairs");
        }
        let mut sources = Vec::new();
        for pair in args.args.chunks(2) {
            let ColumnarValue::Scalar(ScalarValue::Utf8(Some(name))) = &pair[0] else {
                return exec_err!("traceql_attribute_entries takes a literal name before each column");
            };
            sources.push((name.clone(), Source::of(pair[1].to_array(rows)?)?));
        }
        let mut out = Entries::default();
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0i32);
        for row in 0..rows {
            let before = out.len();
            for (name, source) in &sources {
                source.append(name, row, &mut out);
            }
            if out.len() - before > MAX_ENTRIES_PER_SPAN {
                return exec_err!("a span lists more than {MAX_ENTRIES_PER_SPAN} attributes");
            }
            offsets.push(i32::try_from(out.len()).or_else(|_| exec_err!("too many attribute entries in one batch"))?);
        }
        let values = out.finish()?;
        let list = ListArray::try_new(list_field(), OffsetBuffer::new(offsets.into()), Arc::new(values), None)?;
        Ok(ColumnarValue::Array(Arc::new(list)))
    }
}

/// One argument column, read as entries.
enum Source {
    Text(StringArray),
    Map(Box<(MapArray, Values)>),
}

/// A map's values, their fields cast to the entry's types.
struct Values {
    str: Option<StringArray>,
    int: Option<ArrayRef>,
    double: Option<ArrayRef>,
    bool: Option<ArrayRef>,
    array: Option<StringArray>,
}

fn text(a: &ArrayRef) -> Result<StringArray> {
    Ok(cast(a, &DataType::Utf8)?.as_string::<i32>().clone())
}

impl Source {
    fn of(a: ArrayRef) -> Result<Self> {
        match a.data_type() {
            DataType::Map(..) => {
                let map = a.as_map().clone();
                let Some(values) = map.values().as_struct_opt() else {
                    return exec_err!("traceql_attribute_entries takes maps of attribute values");
                };
                let field = |n: &str| values.column_by_name(n).cloned();
                let values = Values {
                    str: field("str").map(|c| text(&c)).transpose()?,
                    int: field("int").filter(|c| c.data_type() == &DataType::Int64),
                    double: field("double").filter(|c| c.data_type() == &DataType::Float64),
                    bool: field("bool").filter(|c| c.data_type() == &DataType::Boolean),
                    array: field("array").map(|c| text(&c)).transpose()?,
                };
                Ok(Self::Map(Box::new((map, values))))
            }
            DataType::Null => Ok(Self::Text(StringArray::new_null(a.len()))),
            _ => Ok(Self::Text(text(&a)?)),
        }
    }

    fn append(&self, name: &str, row: usize, out: &mut Entries) {
        match self {
            Self::Text(t) if t.is_valid(row) => out.push_text(name, t.value(row)),
            Self::Text(_) => {}
            Self::Map(m) if m.0.is_valid(row) => {
                let (map, values) = (&m.0, &m.1);
                let keys = map.keys().as_string::<i32>();
                let offsets = map.value_offsets();
                for i in offsets[row] as usize..offsets[row + 1] as usize {
                    out.push_value(name, keys.value(i), values, i);
                }
            }
            Self::Map(..) => {}
        }
    }
}

/// `a` where row `i` holds a value.
fn set(a: Option<&dyn Array>, i: usize) -> Option<&dyn Array> {
    a.filter(|a| a.is_valid(i))
}

/// The entries built so far.
#[derive(Default)]
struct Entries {
    name: StringBuilder,
    str: StringBuilder,
    int: Int64Builder,
    double: Float64Builder,
    bool: BooleanBuilder,
    array: StringBuilder,
}

impl Entries {
    fn len(&self) -> usize {
        self.name.len()
    }

    fn push_text(&mut self, name: &str, value: &str) {
        self.name.append_value(name);
        self.str.append_value(value);
        self.int.append_null();
        self.double.append_null();
        self.bool.append_null();
        self.array.append_null();
    }

    /// Entry `i` of a map's values under `prefix` + `key`, if it holds a value of a listed type.
    fn push_value(&mut self, prefix: &str, key: &str, v: &Values, i: usize) {
        let (s, n, d, b, a) = (
            set(v.str.as_ref().map(|a| a as &dyn Array), i),
            set(v.int.as_deref(), i),
            set(v.double.as_deref(), i),
            set(v.bool.as_deref(), i),
            set(v.array.as_ref().map(|a| a as &dyn Array), i),
        );
        if s.is_none() && n.is_none() && d.is_none() && b.is_none() && a.is_none() {
            return;
        }
        self.name.append_value(format!("{prefix}{key}"));
        self.str.append_option(s.map(|x| x.as_string::<i32>().value(i)));
        self.int
            .append_option(n.map(|x| x.as_primitive::<Int64Type>().value(i)));
        self.double
            .append_option(d.map(|x| x.as_primitive::<Float64Type>().value(i)));
        self.bool.append_option(b.map(|x| x.as_boolean().value(i)));
        self.array.append_option(a.map(|x| x.as_string::<i32>().value(i)));
    }

    fn finish(mut self) -> Result<StructArray> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.name.finish()),
            Arc::new(self.str.finish()),
            Arc::new(self.int.finish()),
            Arc::new(self.double.finish()),
            Arc::new(self.bool.finish()),
            Arc::new(self.array.finish()),
        ];
        Ok(StructArray::try_new(entry_fields(), columns, None)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{MapBuilder, StructBuilder};
    use datafusion::logical_expr::ScalarUDFImpl;

    /// One attribute: key, text value, integer value.
    type Attr<'a> = (&'a str, Option<&'a str>, Option<i64>);

    fn attributes(rows: &[&[Attr]]) -> ArrayRef {
        let value_fields = vec![
            Field::new("str", DataType::Utf8, true),
            Field::new("int", DataType::Int64, true),
        ];
        let mut b = MapBuilder::new(None, StringBuilder::new(), StructBuilder::from_fields(value_fields, 0));
        for row in rows {
            for (k, s, i) in *row {
                b.keys().append_value(k);
                let v = b.values();
                v.field_builder::<StringBuilder>(0).unwrap().append_option(*s);
                v.field_builder::<Int64Builder>(1).unwrap().append_option(*i);
                v.append(true);
            }
            b.append(true).unwrap();
        }
        Arc::new(b.finish())
    }

    #[test]
    fn maps_and_texts_become_named_entries() {
        let map = attributes(&[
            &[("a", Some("x"), None), ("n", None, Some(3)), ("empty", None, None)],
            &[],
        ]);
        let names: ArrayRef = Arc::new(StringArray::from(vec![Some("GET"), None]));
        let args = ScalarFunctionArgs {
            args: vec![
                ColumnarValue::Scalar(ScalarValue::Utf8(Some("span.".into()))),
                ColumnarValue::Array(map),
                ColumnarValue::Scalar(ScalarValue::Utf8(Some("name".into()))),
                ColumnarValue::Array(names),
            ],
            arg_fields: vec![],
            number_rows: 2,
            return_field: Arc::new(Field::new("x", DataType::List(list_field()), true)),
            config_options: Default::default(),
        };
        let ColumnarValue::Array(out) = EntriesUdf::new().invoke_with_args(args).unwrap() else {
            panic!("an array")
        };
        let list = out.as_list::<i32>();
        assert_eq!(list.value_length(0), 3);
        assert_eq!(list.value_length(1), 0);
        let first = list.value(0);
        let s = first.as_struct();
        let names: Vec<&str> = s.column(0).as_string::<i32>().iter().flatten().collect();
        assert_eq!(names, ["span.a", "span.n", "name"]);
        assert_eq!(s.column(2).as_primitive::<Int64Type>().value(1), 3);
        assert!(s.column(1).as_string::<i32>().is_null(1));
    }
}
