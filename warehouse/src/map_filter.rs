//! Span conditions on attribute maps decided while a data file is read.
//!
//! DataFusion's parquet row filters leave out conditions on nested columns, and reading a
//! whole attribute map costs about what the rest of the row does. A condition such as
//! `span.http.response.status_code >= 500` reads of its map only the keys and the typed value
//! it compares (`get_field(get_field(span_attributes, 'k'), 'int')`), so [`MapFilter`] decodes
//! just those Parquet leaves (the key leaf and the value leaves named) and decides the rows
//! there; the map itself is then not read at all.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::datatypes::DataType;
use arrow::error::ArrowError;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_expr::utils::{conjunction_opt, split_conjunction};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ArrowPredicate;
use parquet::schema::types::SchemaDescriptor;

use crate::id_range::{SpanCondition, passes};
use crate::schema::spans_schema;

/// Leaves of a map a condition reads: `None` for all of them, else the key leaf and the
/// value fields named.
type MapUses = HashMap<String, Option<BTreeSet<String>>>;

/// `condition` as (the conjuncts on flat columns, the conjuncts that read a nested column).
pub fn split(condition: &SpanCondition) -> (Option<SpanCondition>, Option<SpanCondition>) {
    let (nested, flat): (Vec<_>, Vec<_>) = split_conjunction(condition)
        .into_iter()
        .cloned()
        .partition(reads_nested);
    (conjunction_opt(flat), conjunction_opt(nested))
}

fn reads_nested(expr: &Arc<dyn PhysicalExpr>) -> bool {
    let mut uses = MapUses::new();
    visit(expr, &mut uses);
    !uses.is_empty()
}

/// Whether `condition` reads text out of an attribute map (the string values, or whole
/// maps): the largest leaves of a map, which cost about what the rest of a row does.
pub fn reads_map_text(condition: &SpanCondition) -> bool {
    let mut uses = MapUses::new();
    visit(condition, &mut uses);
    let text = ["str", "bytes", "array", "kvlist"];
    uses.values()
        .any(|fields| fields.as_ref().is_none_or(|f| text.iter().any(|t| f.contains(*t))))
}

/// Whether the `spans` schema types `column` as a nested type.
fn is_nested(column: &str) -> bool {
    spans_schema().field_with_name(column).is_ok_and(|f| {
        matches!(
            f.data_type(),
            DataType::Map(..) | DataType::List(_) | DataType::Struct(_)
        )
    })
}

/// Records in `uses` the nested columns `expr` reads and which of their leaves.
fn visit(expr: &Arc<dyn PhysicalExpr>, uses: &mut MapUses) {
    if let Some((column, field)) = map_value_field(expr) {
        let entry = uses.entry(column).or_insert_with(|| Some(BTreeSet::new()));
        if let Some(fields) = entry {
            fields.insert(field);
        }
        return;
    }
    if let Some(c) = expr.downcast_ref::<Column>()
        && is_nested(c.name())
    {
        uses.insert(c.name().to_string(), None);
        return;
    }
    for child in expr.children() {
        visit(child, uses);
    }
}

/// `(map, field)` when `expr` is one value field of one key of a map column:
/// `get_field(get_field(map, 'key'), 'field')` or `get_field(map, 'key', 'field')`.
fn map_value_field(expr: &Arc<dyn PhysicalExpr>) -> Option<(String, String)> {
    let args = get_field_args(expr)?;
    let text = |e: &Arc<dyn PhysicalExpr>| {
        let value = e.downcast_ref::<Literal>()?.value();
        value.try_as_str().flatten().map(str::to_string)
    };
    let column = |e: &Arc<dyn PhysicalExpr>| {
        let c = e.downcast_ref::<Column>()?;
        let map = spans_schema().field_with_name(c.name()).ok()?.data_type().clone();
        matches!(map, DataType::Map(..)).then(|| c.name().to_string())
    };
    match args {
        [inner, field] => {
            let [map, key] = get_field_args(inner)? else {
                return None;
            };
            text(key)?;
            Some((column(map)?, text(field)?))
        }
        [map, key, field] => {
            text(key)?;
            Some((column(map)?, text(field)?))
        }
        _ => None,
    }
}

fn get_field_args(expr: &Arc<dyn PhysicalExpr>) -> Option<&[Arc<dyn PhysicalExpr>]> {
    let f = expr.downcast_ref::<ScalarFunctionExpr>()?;
    (f.name() == "get_field").then(|| f.args())
}

/// The leaves of a file of `schema` that `condition` reads: of its flat columns all, of its
/// maps the key and the value fields it names.
pub fn leaves(condition: &SpanCondition, schema: &SchemaDescriptor) -> Vec<usize> {
    let mut uses = MapUses::new();
    visit(condition, &mut uses);
    let flat: Vec<String> = datafusion::physical_expr::utils::collect_columns(condition)
        .iter()
        .map(|c| c.name().to_string())
        .filter(|c| !uses.contains_key(c))
        .collect();
    (0..schema.num_columns())
        .filter(|&i| {
            let path = schema.column(i).path().parts().to_vec();
            let Some(root) = path.first() else {
                return false;
            };
            if flat.contains(root) {
                return true;
            }
            match uses.get(root) {
                None => false,
                Some(None) => true,
                Some(Some(fields)) => match path.get(2).map(String::as_str) {
                    Some("key") => path.len() == 3,
                    Some("value") => path.get(3).is_some_and(|f| fields.contains(f)),
                    _ => false,
                },
            }
        })
        .collect()
}

/// A parquet row filter that decides `condition` (conjuncts that read maps) from only the
/// leaves it reads.
pub struct MapFilter {
    projection: ProjectionMask,
    leaves: Vec<usize>,
    condition: SpanCondition,
}

impl MapFilter {
    pub fn new(condition: SpanCondition, schema: &SchemaDescriptor) -> Self {
        let leaves = leaves(&condition, schema);
        let projection = ProjectionMask::leaves(schema, leaves.iter().copied());
        Self {
            projection,
            leaves,
            condition,
        }
    }

    /// The leaves the filter decodes.
    pub fn leaves(&self) -> &[usize] {
        &self.leaves
    }
}

impl ArrowPredicate for MapFilter {
    fn projection(&self) -> &ProjectionMask {
        &self.projection
    }

    fn evaluate(&mut self, batch: RecordBatch) -> Result<BooleanArray, ArrowError> {
        passes(&self.condition, &batch).map_err(|e| ArrowError::ExternalError(Box::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::common::DFSchema;
    use datafusion::functions::core::expr_fn::get_field;
    use datafusion::logical_expr::{Expr, col, lit};
    use datafusion::prelude::SessionContext;
    use parquet::arrow::ArrowSchemaConverter;

    use super::*;

    fn physical(e: Expr) -> SpanCondition {
        let schema = DFSchema::try_from(spans_schema().as_ref().clone()).expect("schema");
        SessionContext::new()
            .create_physical_expr(e, &schema)
            .expect("physical")
    }

    fn attr(map: &str, key: &str, field: &str) -> Expr {
        get_field(get_field(col(map), key), field)
    }

    #[test]
    fn map_conjuncts_read_only_the_leaves_they_compare() {
        let typed = attr("span_attributes", "http.response.status_code", "int").gt_eq(lit(500i64));
        let condition = physical(typed.clone().and(col("status_code").eq(lit("error"))));
        let (flat, maps) = split(&condition);
        let (flat, maps) = (flat.expect("flat part"), maps.expect("map part"));
        assert!(!reads_nested(&flat) && reads_nested(&maps));
        assert!(!reads_map_text(&maps));
        let parquet = ArrowSchemaConverter::new()
            .convert(&spans_schema())
            .expect("parquet schema");
        let paths: Vec<String> = leaves(&maps, &parquet)
            .into_iter()
            .map(|i| parquet.column(i).path().string())
            .collect();
        assert_eq!(
            paths,
            ["span_attributes.key_value.key", "span_attributes.key_value.value.int"]
        );
        let text = physical(attr("resource_attributes", "db.system", "str").eq(lit("postgres")));
        assert!(reads_map_text(&text));
        let whole = physical(get_field(col("span_attributes"), "k").is_null());
        assert!(reads_map_text(&whole));
        let all_leaves = leaves(&whole, &parquet);
        assert!(all_leaves.len() > 2, "a whole map reads every leaf: {all_leaves:?}");
        assert_eq!(
            split(&physical(col("status_code").eq(lit("error")))).1.map(|_| ()),
            None
        );
    }
}
