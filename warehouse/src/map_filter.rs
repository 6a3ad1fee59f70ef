//! Span conditions on attribute maps decided while a data file is read.
//!
//! DataFusion's parquet row filters leave out conditions on nested columns, and reading a
//! whole attribute map costs about what the rest of the row does. A condition such as
//! `span.http.response.status_code >= 500` reads of its map only the keys and the typed value
//! it compares (`get_field(get_field(span_attributes, 'k'), 'int')`), so [`MapFilter`] decodes
//! just those Parquet leaves (the key leaf and the value leaves named) and decides the rows
//! there; the map itself is then not read at all. Each compared value is looked up there
//! directly (the first entry with the key, one field taken), not through `get_field`.
//! [`MapFields`] narrows any read's maps the same way, to the key and the value fields listed.
//! [`on_dedicated_columns`] reads the integer values of the first key of a dedicated integer
//! column from that column instead, in files whose span attributes hold no double.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray, UInt32Array, new_null_array};
use arrow::buffer::BooleanBuffer;
use arrow::compute::kernels::cmp::eq;
use arrow::datatypes::{DataType, Field, FieldRef, Schema};
use arrow::error::ArrowError;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, CaseExpr, CastExpr, Column, IsNotNullExpr, Literal};
use datafusion::physical_expr::utils::{conjunction_opt, split_conjunction};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ArrowPredicate;
use parquet::schema::types::SchemaDescriptor;

use crate::id_range::{SpanCondition, column_names, passes};
use crate::schema::{SPAN_COLUMNS, spans_schema};

/// Leaves of a map a condition reads: `None` for all of them, else the key leaf and the
/// value fields named.
type MapUses = HashMap<String, Option<BTreeSet<String>>>;

/// Of attribute maps, by column, the value fields a read decodes besides the key: the other
/// value leaves are not read, and come back as nulls.
pub type MapFields = BTreeMap<String, BTreeSet<String>>;

/// The value fields of each map that `exprs` read, when they read maps only one value field
/// of a named key at a time (a bare map column, as an expression of its own, is passed through,
/// not read); `None` when one reads a map in another way.
pub fn map_fields<'a>(exprs: impl IntoIterator<Item = &'a Arc<dyn PhysicalExpr>>) -> Option<MapFields> {
    let mut uses = MapUses::new();
    for e in exprs {
        if e.downcast_ref::<Column>().is_none() {
            visit(e, &mut uses);
        }
    }
    uses.into_iter().map(|(map, fields)| Some((map, fields?))).collect()
}

/// `condition` as (the conjuncts on flat columns, the conjuncts that read a nested column).
pub fn split(condition: &SpanCondition) -> (Option<SpanCondition>, Option<SpanCondition>) {
    let (nested, flat): (Vec<_>, Vec<_>) = split_conjunction(condition)
        .into_iter()
        .cloned()
        .partition(reads_nested);
    (conjunction_opt(flat), conjunction_opt(nested))
}

/// `condition` with the integer values of span attributes that feed a dedicated integer
/// column first (`span.http.response.status_code`, see [`SPAN_COLUMNS`]) read from that column,
/// for a file whose span attributes hold no double and no array (`no_doubles`, asked only when
/// a value would be replaced); `None` when nothing changes.
///
/// A weaker condition, for reads that check their rows again or only pick candidates: where the
/// attribute is an integer the column holds it, and without doubles its `double` field is
/// null; the column may also hold a value where the attribute does not (a numeric string, or
/// the next key when the first is absent), so a row may pass that the original would not.
pub fn on_dedicated_columns(condition: &SpanCondition, no_doubles: impl FnOnce() -> bool) -> Option<SpanCondition> {
    let rewritten = condition
        .clone()
        .transform_down(|e| {
            let Some((map, key, field)) = map_value_key_field(&e) else {
                return Ok(Transformed::no(e));
            };
            let column = SPAN_COLUMNS
                .iter()
                .find(|c| c.is_int && map == "span_attributes" && c.keys.first() == Some(&key.as_str()));
            let replaced: Option<Arc<dyn PhysicalExpr>> = match (column, field.as_str()) {
                (Some(c), "int") => {
                    let index = spans_schema().index_of(c.column)?;
                    Some(Arc::new(Column::new(c.column, index)))
                }
                (Some(_), "double") => Some(Arc::new(Literal::new(ScalarValue::Float64(None)))),
                (Some(_), "array") => Some(Arc::new(Literal::new(ScalarValue::Utf8(None)))),
                _ => None,
            };
            Ok(match replaced {
                Some(r) => Transformed::new(r, true, TreeNodeRecursion::Jump),
                None => Transformed::no(e),
            })
        })
        .ok()?;
    (rewritten.transformed && no_doubles()).then_some(integer_comparisons(rewritten.data))
}

/// `condition` with what reading a dedicated integer column leaves behind made integer again:
/// `coalesce(x, NULL)` (planned as `CASE WHEN x IS NOT NULL THEN x END`) is `x`, and
/// `CAST(c AS Float64) op v` with `c` an Int64 column and `v` a whole number (below 2^53,
/// exact in both types) is `c op v`, an integer comparison.
fn integer_comparisons(condition: SpanCondition) -> SpanCondition {
    use datafusion::logical_expr::Operator::{Eq, Gt, GtEq, Lt, LtEq, NotEq};
    let simplified = condition.clone().transform_up(|e| {
        if let Some(first) = coalesced_alone(&e) {
            return Ok(Transformed::yes(first));
        }
        let Some(b) = e.downcast_ref::<BinaryExpr>() else {
            return Ok(Transformed::no(e));
        };
        // `x OR NULL` passes the rows `x` passes (a filter drops null as it drops false).
        if *b.op() == datafusion::logical_expr::Operator::Or {
            match (always_null(b.left()), always_null(b.right())) {
                (false, true) => return Ok(Transformed::yes(b.left().clone())),
                (true, false) => return Ok(Transformed::yes(b.right().clone())),
                _ => {}
            }
        }
        let compared = match (int_column_as_float(b.left()), whole_number(b.right())) {
            (Some(c), Some(v)) => Some((c, *b.op(), v)),
            _ => match (whole_number(b.left()), int_column_as_float(b.right())) {
                (Some(v), Some(c)) => b.op().swap().map(|op| (c, op, v)),
                _ => None,
            },
        };
        Ok(match compared {
            Some((c, op, v)) if matches!(op, Eq | NotEq | Lt | LtEq | Gt | GtEq) => {
                let literal: Arc<dyn PhysicalExpr> = Arc::new(Literal::new(ScalarValue::Int64(Some(v))));
                Transformed::yes(Arc::new(BinaryExpr::new(c, op, literal)) as Arc<dyn PhysicalExpr>)
            }
            _ => Transformed::no(e),
        })
    });
    simplified.map_or(condition, |s| s.data)
}

/// The name of TraceQL's array comparison function (the planner's `traceql_array_any`; the
/// warehouse does not depend on the planner, so the engine's tests check the two agree).
pub const ARRAY_ANY_UDF: &str = "traceql_array_any";

/// Whether `expr` is null on every row: a null literal, a comparison with one, or an array
/// comparison ([`ARRAY_ANY_UDF`]) of a null array.
fn always_null(expr: &Arc<dyn PhysicalExpr>) -> bool {
    use datafusion::logical_expr::Operator::{Eq, Gt, GtEq, Lt, LtEq, NotEq};
    if let Some(l) = expr.downcast_ref::<Literal>() {
        return l.value().is_null();
    }
    if let Some(b) = expr.downcast_ref::<BinaryExpr>() {
        return matches!(b.op(), Eq | NotEq | Lt | LtEq | Gt | GtEq)
            && (always_null(b.left()) || always_null(b.right()));
    }
    expr.downcast_ref::<ScalarFunctionExpr>()
        .is_some_and(|f| f.name() == ARRAY_ANY_UDF && f.args().first().is_some_and(always_null))
}

/// `x` of `coalesce(x, NULL...)` or `CASE WHEN x IS NOT NULL THEN x [ELSE NULL] END`.
fn coalesced_alone(expr: &Arc<dyn PhysicalExpr>) -> Option<Arc<dyn PhysicalExpr>> {
    let is_null = always_null;
    if let Some(f) = expr.downcast_ref::<ScalarFunctionExpr>()
        && f.name() == "coalesce"
        && let [first, rest @ ..] = f.args()
        && rest.iter().all(is_null)
    {
        return Some(first.clone());
    }
    let case = expr.downcast_ref::<CaseExpr>()?;
    let [(when, then)] = case.when_then_expr() else {
        return None;
    };
    let tested = when.downcast_ref::<IsNotNullExpr>()?.arg();
    let alone = case.expr().is_none() && case.else_expr().is_none_or(is_null) && tested.as_ref() == then.as_ref();
    alone.then(|| then.clone())
}

/// The Int64 column `expr` casts to Float64.
fn int_column_as_float(expr: &Arc<dyn PhysicalExpr>) -> Option<Arc<dyn PhysicalExpr>> {
    let cast = expr.downcast_ref::<CastExpr>()?;
    let column = cast.expr();
    let from = column
        .downcast_ref::<Column>()
        .map(|_| column.data_type(&spans_schema()));
    (cast.cast_type() == &DataType::Float64 && matches!(from, Some(Ok(DataType::Int64)))).then(|| column.clone())
}

/// The whole number a Float64 literal holds, when a Float64 holds it exactly (below 2^53).
fn whole_number(expr: &Arc<dyn PhysicalExpr>) -> Option<i64> {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match expr.downcast_ref::<Literal>()?.value() {
        ScalarValue::Float64(Some(v)) if v.fract() == 0.0 && v.abs() < EXACT => Some(*v as i64),
        _ => None,
    }
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
    map_value_key_field(expr).map(|(map, _, field)| (map, field))
}

/// `(map, key, field)` when `expr` is one value field of one key of a map column.
fn map_value_key_field(expr: &Arc<dyn PhysicalExpr>) -> Option<(String, String, String)> {
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
            Some((column(map)?, text(key)?, text(field)?))
        }
        [map, key, field] => Some((column(map)?, text(key)?, text(field)?)),
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
                Some(Some(fields)) => is_key_or_field(&path, fields),
            }
        })
        .collect()
}

/// Whether the leaf at `path` (of a map column) is the map's key or one of its value `fields`.
pub(crate) fn is_key_or_field(path: &[String], fields: &BTreeSet<String>) -> bool {
    match path.get(2).map(String::as_str) {
        Some("key") => path.len() == 3,
        Some("value") => path.get(3).is_some_and(|f| fields.contains(f)),
        _ => false,
    }
}

/// A parquet row filter that decides `condition` (conjuncts that read maps) from only the
/// leaves it reads.
pub struct MapFilter {
    projection: ProjectionMask,
    condition: SpanCondition,
    /// The values `condition` reads out of maps, each as the column it reads instead.
    lookups: Vec<Lookup>,
}

/// One value field of one key of a map, looked up in every row as a column of its own.
struct Lookup {
    column: String,
    map: String,
    key: String,
    field: String,
    /// The type `get_field` gives the value.
    data_type: DataType,
}

impl MapFilter {
    pub fn new(condition: SpanCondition, schema: &SchemaDescriptor) -> Self {
        let projection = ProjectionMask::leaves(schema, leaves(&condition, schema));
        let (condition, lookups) = with_lookups(condition);
        Self {
            projection,
            condition,
            lookups,
        }
    }
}

impl ArrowPredicate for MapFilter {
    fn projection(&self) -> &ProjectionMask {
        &self.projection
    }

    fn evaluate(&mut self, batch: RecordBatch) -> Result<BooleanArray, ArrowError> {
        let batch = match self.lookups.is_empty() {
            true => batch,
            false => with_looked_up(batch, &self.lookups)?,
        };
        passes(&self.condition, &batch).map_err(|e| ArrowError::ExternalError(Box::new(e)))
    }
}

/// A condition evaluated over batches that hold whole attribute maps (live spans): each value
/// it reads out of a map is looked up directly, as [`MapFilter`] does, not through
/// `get_field` (which copies each row's whole value struct first).
pub(crate) struct MapLookups {
    condition: SpanCondition,
    lookups: Vec<Lookup>,
    /// The columns the condition reads.
    columns: Vec<String>,
}

impl MapLookups {
    pub(crate) fn new(condition: &SpanCondition) -> Self {
        let columns = column_names(Some(condition));
        let (condition, lookups) = with_lookups(condition.clone());
        Self {
            condition,
            lookups,
            columns,
        }
    }

    /// The columns the condition reads.
    pub(crate) fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Which rows of `batch` pass the condition (a null is a no).
    pub(crate) fn passes(&self, batch: &RecordBatch) -> crate::Result<BooleanArray> {
        match self.lookups.is_empty() {
            true => passes(&self.condition, batch),
            false => passes(&self.condition, &with_looked_up(batch.clone(), &self.lookups)?),
        }
    }
}

/// `condition` with each value it reads out of a map (`get_field(map, 'k', 'f')`) read from
/// a column of its own instead, and those columns; unchanged, with none, when it also reads a
/// map in another way. `get_field` builds each row's whole value struct before taking the
/// field; a lookup takes the one field of the first entry with the key.
fn with_lookups(condition: SpanCondition) -> (SpanCondition, Vec<Lookup>) {
    let mut lookups: Vec<Lookup> = Vec::new();
    let rewritten = condition.clone().transform_down(|e| {
        let (Some((map, key, field)), Some(f)) = (map_value_key_field(&e), e.downcast_ref::<ScalarFunctionExpr>())
        else {
            return Ok(Transformed::no(e));
        };
        let data_type = f.return_type().clone();
        let at = lookups
            .iter()
            .position(|l| (&l.map, &l.key, &l.field) == (&map, &key, &field))
            .unwrap_or_else(|| {
                let column = format!("lookup:{}", lookups.len());
                lookups.push(Lookup {
                    column,
                    map,
                    key,
                    field,
                    data_type,
                });
                lookups.len() - 1
            });
        let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(&lookups[at].column, 0));
        Ok(Transformed::new(column, true, TreeNodeRecursion::Jump))
    });
    let Ok(rewritten) = rewritten else {
        return (condition, Vec::new());
    };
    let mut uses = MapUses::new();
    visit(&rewritten.data, &mut uses);
    match uses.is_empty() {
        true => (rewritten.data, lookups),
        false => (condition, Vec::new()),
    }
}

/// `get_field(map, key, field)` evaluated by a direct lookup: per row, the field of the first
/// entry with the key ([`look_up`]). DataFusion's `get_field` on a map first copies each
/// row's whole value struct (every text and array leaf of it) and then takes the field; a
/// plan that compares an attribute as an int, a double and an array did that three times.
#[derive(Debug, Eq)]
pub struct MapValue {
    map: Arc<dyn PhysicalExpr>,
    key: String,
    field: String,
    data_type: DataType,
}

// By hand, as DataFusion's own expressions (Arc<dyn PhysicalExpr> fields).
impl PartialEq for MapValue {
    fn eq(&self, other: &Self) -> bool {
        self.map.eq(&other.map)
            && (&self.key, &self.field, &self.data_type) == (&other.key, &other.field, &other.data_type)
    }
}

impl std::hash::Hash for MapValue {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::hash::Hash::hash(&self.map, state);
        std::hash::Hash::hash(&(&self.key, &self.field, &self.data_type), state);
    }
}

impl std::fmt::Display for MapValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "map_value({}, {:?}, {:?})", self.map, self.key, self.field)
    }
}

impl PhysicalExpr for MapValue {
    fn data_type(&self, _schema: &Schema) -> datafusion::common::Result<DataType> {
        Ok(self.data_type.clone())
    }

    fn nullable(&self, _schema: &Schema) -> datafusion::common::Result<bool> {
        Ok(true)
    }

    fn evaluate(&self, batch: &RecordBatch) -> datafusion::common::Result<datafusion::logical_expr::ColumnarValue> {
        let map = self.map.evaluate(batch)?.into_array(batch.num_rows())?;
        let values = look_up(&map, &self.key, &self.field, &self.data_type)?;
        Ok(datafusion::logical_expr::ColumnarValue::Array(values))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.map]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> datafusion::common::Result<Arc<dyn PhysicalExpr>> {
        let [map] = <[_; 1]>::try_from(children)
            .map_err(|_| datafusion::error::DataFusionError::Internal("map_value has one child".into()))?;
        Ok(Arc::new(Self {
            map,
            key: self.key.clone(),
            field: self.field.clone(),
            data_type: self.data_type.clone(),
        }))
    }

    fn fmt_sql(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// `expr` with each value it reads out of an attribute map (`get_field(map, 'k', 'f')`, or
/// nested) read by a [`MapValue`] instead; `None` when it reads none. For plans over rows
/// already in memory: the readers that push conditions into files know `get_field`, not this.
pub fn with_map_values(expr: &Arc<dyn PhysicalExpr>) -> Option<Arc<dyn PhysicalExpr>> {
    let rewritten = expr
        .clone()
        .transform_down(|e| {
            let (Some((_, key, field)), Some(f)) = (map_value_key_field(&e), e.downcast_ref::<ScalarFunctionExpr>())
            else {
                return Ok(Transformed::no(e));
            };
            let map = match f.args() {
                [inner, _] => get_field_args(inner).and_then(|a| a.first()).cloned(),
                [map, _, _] => Some(map.clone()),
                _ => None,
            };
            let Some(map) = map else {
                return Ok(Transformed::no(e));
            };
            let value: Arc<dyn PhysicalExpr> = Arc::new(MapValue {
                map,
                key,
                field,
                data_type: f.return_type().clone(),
            });
            Ok(Transformed::new(value, true, TreeNodeRecursion::Jump))
        })
        .ok()?;
    rewritten.transformed.then_some(rewritten.data)
}

/// `batch` with a column per lookup.
fn with_looked_up(batch: RecordBatch, lookups: &[Lookup]) -> Result<RecordBatch, ArrowError> {
    let mut fields: Vec<FieldRef> = batch.schema().fields().iter().cloned().collect();
    let mut columns = batch.columns().to_vec();
    for l in lookups {
        let map = batch
            .column_by_name(&l.map)
            .ok_or_else(|| ArrowError::SchemaError(format!("a map filter read without {}", l.map)))?;
        let values = look_up(map, &l.key, &l.field, &l.data_type)?;
        fields.push(Arc::new(Field::new(&l.column, l.data_type.clone(), true)));
        columns.push(values);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// Per row of `map`, value field `field` of its first entry with key `key` (null without one),
/// typed `data_type`.
fn look_up(map: &ArrayRef, key: &str, field: &str, data_type: &DataType) -> Result<ArrayRef, ArrowError> {
    let map = map
        .as_map_opt()
        .ok_or_else(|| ArrowError::SchemaError("a map lookup on a column that is not a map".into()))?;
    let entries = map.entries();
    let values = entries.column(1).as_struct();
    let Some(values) = values.column_by_name(field) else {
        return Ok(new_null_array(data_type, map.len()));
    };
    // The entries of this map's rows only (a slice of a map shares all of its entries).
    let offsets = map.value_offsets();
    let (first, end) = (offsets[0] as usize, offsets[map.len()] as usize);
    let matched = key_matches(&entries.column(0).slice(first, end - first), key)?;
    let mut indices: Vec<Option<u32>> = vec![None; map.len()];
    let mut row = 0usize;
    for entry in matched.set_indices().map(|i| first + i) {
        while offsets[row + 1] as usize <= entry {
            row += 1;
        }
        if indices[row].is_none() {
            indices[row] = Some(u32::try_from(entry).map_err(|e| ArrowError::ExternalError(Box::new(e)))?);
        }
    }
    let taken = arrow::compute::take(values.as_ref(), &UInt32Array::from(indices), None)?;
    match taken.data_type() == data_type {
        true => Ok(taken),
        false => arrow::compute::cast(&taken, data_type),
    }
}

/// Which of a map's `keys` (text, or a dictionary of text: each distinct key compared once)
/// are `key`.
fn key_matches(keys: &ArrayRef, key: &str) -> Result<BooleanBuffer, ArrowError> {
    let scalar = StringArray::new_scalar(key);
    let mask = text_mask(keys, |text| eq(text, &scalar))?;
    Ok(mask.values().clone())
}

/// Which rows of `array` (text, or a dictionary of text: then `decide` sees each distinct
/// value once and its answer is spread over the rows) `decide` keeps; a null answer or a
/// null row is not kept, so the mask has no nulls.
pub(crate) fn text_mask<E: From<ArrowError>>(
    array: &ArrayRef,
    decide: impl Fn(&StringArray) -> Result<BooleanArray, E>,
) -> Result<BooleanArray, E> {
    let Some(dictionary) = array.as_any_dictionary_opt() else {
        let text = arrow::compute::cast(array, &DataType::Utf8)?;
        return Ok(BooleanArray::new(true_and_valid(&decide(text.as_string())?), None));
    };
    let values = arrow::compute::cast(dictionary.values(), &DataType::Utf8)?;
    let of_values = BooleanArray::new(true_and_valid(&decide(values.as_string())?), None);
    let of_keys = arrow::compute::take(&of_values, dictionary.keys(), None)?;
    Ok(BooleanArray::new(true_and_valid(of_keys.as_boolean()), None))
}

/// The rows of `b` that are true (not null).
fn true_and_valid(b: &BooleanArray) -> BooleanBuffer {
    match b.nulls() {
        Some(nulls) => b.values() & nulls.inner(),
        None => b.values().clone(),
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

    #[test]
    fn map_values_read_what_get_field_reads() {
        use crate::span::{AttrValue, ScopeRecord, SpanBatchBuilder, SpanRecord};
        let key = "http.response.status_code";
        let values = [
            vec![(key, AttrValue::Int(500)), ("other", AttrValue::Str("x"))],
            vec![("other", AttrValue::Int(1)), (key, AttrValue::Str("503"))],
            vec![(key, AttrValue::Array("[500,501]".into()))],
            vec![],
        ];
        let mut builder = SpanBatchBuilder::new();
        for (i, attributes) in values.into_iter().enumerate() {
            let (trace, span) = ([1u8; 16], (i as u64 + 1).to_be_bytes());
            let record = SpanRecord::for_test(&trace, &span, attributes);
            builder.append(&ScopeRecord::default(), &record);
        }
        let batch = builder.finish().expect("batch");
        for field in ["int", "str", "double", "array"] {
            let read = physical(attr("span_attributes", key, field));
            let looked_up = with_map_values(&read).expect("a map value");
            assert!(looked_up.to_string().starts_with("map_value("), "{looked_up}");
            let expected = read.evaluate(&batch).unwrap().into_array(4).unwrap();
            let got = looked_up.evaluate(&batch).unwrap().into_array(4).unwrap();
            assert_eq!(got.as_ref(), expected.as_ref(), "{field}");
            // A slice reads its own rows' entries, not the ones before it.
            let slice = batch.slice(1, 2);
            let expected = read.evaluate(&slice).unwrap().into_array(2).unwrap();
            let got = looked_up.evaluate(&slice).unwrap().into_array(2).unwrap();
            assert_eq!(got.as_ref(), expected.as_ref(), "{field} of a slice");
        }
        // Nothing read out of a map: nothing to change.
        assert!(with_map_values(&physical(col("status_code").eq(lit("error")))).is_none());
    }

    #[test]
    fn first_keys_of_dedicated_int_columns_are_read_from_them_without_doubles() {
        let status = |field: &str| attr("span_attributes", "http.response.status_code", field);
        let typed = status("int").gt_eq(lit(500i64)).or(status("double").gt_eq(lit(500.0)));
        let condition = physical(typed.and(col("status_code").eq(lit("error"))));
        assert_eq!(on_dedicated_columns(&condition, || false).map(|_| ()), None);
        let rewritten = on_dedicated_columns(&condition, || true).expect("rewritten");
        assert!(!reads_nested(&rewritten), "{rewritten}");
        assert!(rewritten.to_string().contains("http_status_code"), "{rewritten}");
        // Not the second key, not resource attributes, not text.
        for (map, key, field) in [
            ("span_attributes", "http.status_code", "int"),
            ("resource_attributes", "http.response.status_code", "int"),
            ("span_attributes", "http.response.status_code", "str"),
        ] {
            let other = physical(attr(map, key, field).is_not_null());
            assert_eq!(
                on_dedicated_columns(&other, || true).map(|_| ()),
                None,
                "{map} {key} {field}"
            );
        }
    }

    #[test]
    fn compared_as_floats_dedicated_ints_compare_as_ints() {
        use arrow::array::Int64Array;
        use datafusion::functions::core::expr_fn::coalesce;
        use datafusion::logical_expr::{cast, when};
        let status = |field: &str| attr("span_attributes", "http.response.status_code", field);
        // As TraceQL compiles `span.http.response.status_code <op> <number>`.
        let as_float = coalesce(vec![cast(status("int"), DataType::Float64), status("double")]);
        // As DataFusion's simplifier plans `coalesce`.
        let int = cast(status("int"), DataType::Float64);
        let as_case = when(int.clone().is_not_null(), int).end().expect("case");
        let codes = Int64Array::from(vec![Some(200), Some(404), Some(500), None]);
        let field = Field::new("http_status_code", DataType::Int64, true);
        let batch = RecordBatch::try_new(Arc::new(Schema::new(vec![field])), vec![Arc::new(codes)]).expect("batch");
        for (compared, expected) in [
            (as_float.clone().eq(lit(404.0)), [false, true, false, false]),
            (lit(404.0).lt(as_float.clone()), [false, false, true, false]),
            (as_float.clone().gt_eq(lit(404.5)), [false, false, true, false]),
            (as_case.eq(lit(500.0)), [false, false, true, false]),
        ] {
            let rewritten = on_dedicated_columns(&physical(compared), || true).expect("rewritten");
            let whole = !rewritten.to_string().contains("404.5");
            assert_eq!(!rewritten.to_string().contains("CAST"), whole, "{rewritten}");
            let got: Vec<bool> = passes(&rewritten, &batch)
                .expect("passes")
                .iter()
                .map(|b| b == Some(true))
                .collect();
            assert_eq!(got, expected, "{rewritten}");
        }
    }

    #[test]
    fn lookups_decide_as_get_field_does() {
        use crate::span::{AttrMapBuilder, AttrValue};
        let mut maps = AttrMapBuilder::new();
        maps.append(&[("a", AttrValue::Int(7)), ("code", AttrValue::Int(503))]);
        maps.append(&[("code", AttrValue::Str("503"))]);
        maps.append(&[]);
        maps.append(&[("code", AttrValue::Int(200)), ("code", AttrValue::Int(500))]);
        maps.append(&[("b", AttrValue::Int(1)), ("code", AttrValue::Int(500))]);
        let map = maps.finish().expect("map");
        let dictionary = dictionary_keys(&map);
        let typed = attr("span_attributes", "code", "int").gt_eq(lit(500i64));
        let either = typed.clone().or(attr("span_attributes", "a", "int").eq(lit(7i64)));
        for e in [typed, either] {
            let condition = physical(e);
            let (rewritten, lookups) = with_lookups(condition.clone());
            assert!(!lookups.is_empty() && !reads_nested(&rewritten));
            for column in [map.clone(), dictionary.clone()] {
                let field = Field::new("span_attributes", column.data_type().clone(), true);
                let batch = RecordBatch::try_new(Arc::new(Schema::new(vec![field])), vec![column]).expect("batch");
                let fast = passes(&rewritten, &with_looked_up(batch.clone(), &lookups).expect("looked up"));
                let got: Vec<bool> = fast.expect("passes").iter().map(|b| b == Some(true)).collect();
                if batch.column(0).data_type() == map.data_type() {
                    let slow = passes(&condition, &batch).expect("get_field");
                    assert_eq!(got, slow.iter().map(|b| b == Some(true)).collect::<Vec<_>>());
                }
                assert_eq!(
                    got[1..],
                    [false, false, false, true],
                    "first key wins; text is not an int"
                );
            }
        }
    }

    /// `map` with its keys as a dictionary, as a read hints them.
    fn dictionary_keys(map: &ArrayRef) -> ArrayRef {
        let map = map.as_map();
        let keys = arrow::compute::cast(
            map.keys(),
            &DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
        )
        .expect("dictionary");
        let DataType::Struct(fields) = map.entries().data_type() else {
            unreachable!("entries are a struct")
        };
        let key = Arc::new(fields[0].as_ref().clone().with_data_type(keys.data_type().clone()));
        let fields: arrow::datatypes::Fields = vec![key, fields[1].clone()].into();
        let entries = arrow::array::StructArray::try_new(fields.clone(), vec![keys, map.values().clone()], None)
            .expect("entries");
        let entry = Arc::new(Field::new("key_value", DataType::Struct(fields), false));
        Arc::new(arrow::array::MapArray::try_new(entry, map.offsets().clone(), entries, None, false).expect("map"))
    }
}
