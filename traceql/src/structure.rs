//! Trace structure as data: `traceql_nested_set(spans)` numbers one trace's spans in nested-set
//! order, so structural operators become equality and range joins.
//!
//! Input: a list of `{id, parent, start}` structs, all spans of one trace. Output: a list of
//! `{span_id, left, right, parent, children}`: `left`/`right` are the nested-set numbers of a
//! depth-first walk from each root span (children in start-time order), `parent` is the parent's
//! `left` (`-1` for a root), `children` counts direct children. As in Tempo, only spans joined
//! to a root have a place in the tree; spans cut off from it (missing parent, root never
//! received) get null numbers.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, Int64Builder, ListArray, StringBuilder, StructArray,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, Fields, Int64Type};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

/// Fields of one numbered span.
pub fn output_fields() -> Fields {
    Fields::from(vec![
        Field::new("span_id", DataType::Utf8, false),
        Field::new("left", DataType::Int64, true),
        Field::new("right", DataType::Int64, true),
        Field::new("parent", DataType::Int64, true),
        Field::new("children", DataType::Int64, false),
    ])
}

fn output_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Struct(output_fields()), true)))
}

static NESTED_SET: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| Arc::new(ScalarUDF::from(NestedSetUdf::new())));

/// The shared `traceql_nested_set` function.
pub fn nested_set_udf() -> Arc<ScalarUDF> {
    NESTED_SET.clone()
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct NestedSetUdf {
    signature: Signature,
}

impl NestedSetUdf {
    fn new() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for NestedSetUdf {
    fn name(&self) -> &str {
        "traceql_nested_set"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(output_type())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let Some(list) = arrays[0].as_list_opt::<i32>() else {
            return exec_err!("traceql_nested_set takes a list of span structs");
        };
        Ok(ColumnarValue::Array(number_traces(list)?))
    }
}

/// Numbers every trace (list entry) of `list`.
fn number_traces(list: &ListArray) -> Result<ArrayRef> {
    let values = list
        .values()
        .as_struct_opt()
        .ok_or_else(|| datafusion::error::DataFusionError::Execution("traceql_nested_set takes structs".into()))?;
    let ids = values.column_by_name("id").map(|c| c.as_string::<i32>());
    let parents = values.column_by_name("parent").map(|c| c.as_string::<i32>());
    let starts = values.column_by_name("start").map(|c| c.as_primitive::<Int64Type>());
    let (Some(ids), Some(parents), Some(starts)) = (ids, parents, starts) else {
        return exec_err!("traceql_nested_set needs fields id, parent and start");
    };
    let mut span_id = StringBuilder::new();
    let mut left = Int64Builder::new();
    let mut right = Int64Builder::new();
    let mut parent = Int64Builder::new();
    let mut children = Int64Builder::new();
    let mut offsets = vec![0i32];
    let mut tree = Tree::default();
    for row in 0..list.len() {
        let (begin, end) = (
            list.value_offsets()[row] as usize,
            list.value_offsets()[row + 1] as usize,
        );
        if list.is_valid(row) {
            tree.number(
                begin..end,
                |i| ids.value(i),
                |i| parents.is_valid(i).then(|| parents.value(i)),
                |i| starts.value(i),
            );
            for (k, i) in (begin..end).enumerate() {
                span_id.append_value(ids.value(i));
                left.append_option(tree.left[k]);
                right.append_option(tree.right[k]);
                parent.append_option(tree.parent[k]);
                children.append_value(tree.children[k].len() as i64);
            }
        }
        let len = i32::try_from(span_id.len()).map_err(|_| {
            datafusion::error::DataFusionError::Execution("nested set output exceeds i32 offsets".into())
        })?;
        offsets.push(len);
    }
    let structs = StructArray::new(
        output_fields(),
        vec![
            Arc::new(span_id.finish()),
            Arc::new(left.finish()),
            Arc::new(right.finish()),
            Arc::new(parent.finish()),
            Arc::new(children.finish()),
        ],
        None,
    );
    let DataType::List(field) = output_type() else {
        unreachable!()
    };
    Ok(Arc::new(ListArray::new(
        field,
        OffsetBuffer::new(offsets.into()),
        Arc::new(structs),
        list.nulls().cloned(),
    )))
}

/// Scratch space for numbering one trace; reused across traces.
#[derive(Default)]
struct Tree {
    left: Vec<Option<i64>>,
    right: Vec<Option<i64>>,
    parent: Vec<Option<i64>>,
    children: Vec<Vec<usize>>,
}

impl Tree {
    fn number<'a>(
        &mut self,
        range: std::ops::Range<usize>,
        id: impl Fn(usize) -> &'a str,
        parent_id: impl Fn(usize) -> Option<&'a str>,
        start: impl Fn(usize) -> i64,
    ) {
        let base = range.start;
        let n = range.len();
        self.left.clear();
        self.left.resize(n, None);
        self.right.clear();
        self.right.resize(n, None);
        self.parent.clear();
        self.parent.resize(n, None);
        self.children.iter_mut().for_each(Vec::clear);
        self.children.resize_with(n, Vec::new);
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(n);
        for k in 0..n {
            index.entry(id(base + k)).or_insert(k);
        }
        let mut roots = Vec::new();
        for k in 0..n {
            match parent_id(base + k).filter(|p| !p.is_empty()) {
                None => roots.push(k),
                Some(p) => {
                    if let Some(&pk) = index.get(p)
                        && pk != k
                    {
                        self.children[pk].push(k);
                    }
                }
            }
        }
        let key = |k: usize| (start(base + k), id(base + k));
        roots.sort_by(|a, b| key(*a).cmp(&key(*b)));
        for list in &mut self.children {
            list.sort_by(|a, b| key(*a).cmp(&key(*b)));
        }
        // Iterative depth-first walk: (node, next child to visit).
        let mut counter = 0i64;
        let mut stack: Vec<(usize, usize)> = Vec::new();
        for &root in &roots {
            if self.left[root].is_some() {
                continue;
            }
            counter += 1;
            self.left[root] = Some(counter);
            self.parent[root] = Some(-1);
            stack.push((root, 0));
            while let Some(top) = stack.last_mut() {
                let (node, next) = *top;
                if let Some(&child) = self.children[node].get(next) {
                    top.1 += 1;
                    if self.left[child].is_some() {
                        continue; // a duplicate id seen twice; number it once
                    }
                    counter += 1;
                    self.left[child] = Some(counter);
                    self.parent[child] = self.left[node];
                    stack.push((child, 0));
                } else {
                    counter += 1;
                    self.right[node] = Some(counter);
                    stack.pop();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (left, right, parent, children) per span.
    type Numbers = (Option<i64>, Option<i64>, Option<i64>, usize);

    fn number(spans: &[(&'static str, &'static str, i64)]) -> Vec<Numbers> {
        let mut tree = Tree::default();
        tree.number(0..spans.len(), |i| spans[i].0, |i| Some(spans[i].1), |i| spans[i].2);
        (0..spans.len())
            .map(|k| (tree.left[k], tree.right[k], tree.parent[k], tree.children[k].len()))
            .collect()
    }

    #[test]
    fn numbers_a_tree_in_start_order_and_leaves_orphans_out() {
        // root -> (a -> c), b ; x's parent never arrived
        let got = number(&[
            ("b", "r", 20),
            ("r", "", 0),
            ("c", "a", 15),
            ("a", "r", 10),
            ("x", "missing", 5),
        ]);
        assert_eq!(
            got,
            vec![
                (Some(6), Some(7), Some(1), 0),
                (Some(1), Some(8), Some(-1), 2),
                (Some(3), Some(4), Some(2), 0),
                (Some(2), Some(5), Some(1), 1),
                (None, None, None, 0),
            ]
        );
    }

    #[test]
    fn deep_chains_do_not_recurse() {
        let ids: Vec<&'static str> = (0..100_000)
            .map(|i| &*Box::leak(format!("s{i}").into_boxed_str()))
            .collect();
        let spans: Vec<_> = (0..ids.len())
            .map(|i| (ids[i], if i == 0 { "" } else { ids[i - 1] }, i as i64))
            .collect();
        let got = number(&spans);
        assert_eq!(got[0], (Some(1), Some(200_000), Some(-1), 1));
        assert_eq!(got[99_999], (Some(100_000), Some(100_001), Some(99_999), 0));
    }
}
