//! What a search need not read: the data files, and the row groups within them, whose bloom
//! filters rule out a string attribute value every match needs, and the live segments that
//! do not hold such a value.
//!
//! Every match has a span that holds all the values one filter compares with `=` (a spanset
//! every match needs: an operand of `&&` or of a non-negated structural operator, and the
//! first stage of a pipeline), so a trace may match only when one of its row groups may hold
//! all of them. Of several such filters the one that keeps the fewest row groups decides: the
//! values of different filters may sit in different spans, files and row groups of a trace.
//! A row group covers a span of trace ids (files are sorted by trace id), so a walk takes of
//! a file only the traces in the spans of its row groups that may hold a match.

use std::collections::HashMap;
use std::sync::Arc;

use tracehouse_traceql::ast::{AttrScope, FieldExpr, Query, Root, SpansetExpr, Stage, Static};
use tracehouse_warehouse::Warehouse;
use tracehouse_warehouse::live::LiveSegment;
use tracehouse_warehouse::provider::SnapshotSpans;
use tracehouse_warehouse::table::ATTRIBUTE_STRING_LEAVES;
use tracehouse_warehouse::trace_index::DataFile;

use crate::Result;

/// A string value a span must hold, with the Parquet leaves that may hold it.
type Needed = (Vec<&'static str>, String);

/// Of a snapshot's data files, where a match may be.
pub(super) struct Pruned {
    /// The snapshot to read traces from: all files, unless none may hold a match.
    pub read: SnapshotSpans,
    /// The snapshot to walk: the files that may hold a match.
    pub walk: SnapshotSpans,
    pub may_hold: MayHold,
}

/// The trace ids a match may have, for the files of which only some row groups may hold one:
/// those row groups' smallest and largest ids. A file not listed may hold one anywhere.
#[derive(Debug, Default)]
pub(super) struct MayHold {
    by_file: HashMap<String, Vec<(u128, u128)>>,
    /// Every file's spans, merged; `None` when some file may hold a match anywhere.
    anywhere: Option<Vec<(u128, u128)>>,
    /// Row groups that may hold a match, of all (0 when bloom filters were not asked).
    kept: usize,
    row_groups: usize,
    /// Live segments were left out of the walk.
    live_pruned: bool,
    /// The trace ids a match may have in the live segments of which only some batches may
    /// hold one ([`segment_key`]): those batches' traces.
    by_segment: HashMap<usize, Vec<(u128, u128)>>,
}

/// Matches are rare when at most one row group in this many may hold one.
const RARE_SHARE: usize = 4;

impl MayHold {
    /// The spans of trace ids a match may have in the file at `path`; `None` when it may
    /// hold one anywhere.
    pub fn spans_in(&self, path: &str) -> Option<&[(u128, u128)]> {
        self.by_file.get(path).map(Vec::as_slice)
    }

    /// Whether bloom filters ruled out most row groups (all but one in [`RARE_SHARE`] at
    /// most may hold a match): matches are rare.
    pub fn rare(&self) -> bool {
        self.row_groups > 0 && self.kept * RARE_SHARE <= self.row_groups
    }

    /// Whether bloom filters (or live value hashes) ruled out some row groups (or
    /// segments): then a walk takes traces only from the sources that may hold a match, not
    /// from every source that holds them, and reads each trace in every source at once.
    pub fn pruned(&self) -> bool {
        self.row_groups > 0 || self.live_pruned
    }

    /// The trace ids a match may have in live `segment`, as [`Self::spans_in`].
    pub fn spans_in_segment(&self, segment: &Arc<LiveSegment>) -> Option<&[(u128, u128)]> {
        self.by_segment.get(&segment_key(segment)).map(Vec::as_slice)
    }

    /// Whether a match may be `trace`, taken from any file.
    pub fn in_any_file(&self, trace: u128) -> bool {
        self.anywhere.as_ref().is_none_or(|spans| covers(spans, trace))
    }
}

/// Whether one of `spans` (sorted, not overlapping) holds `trace`.
pub(super) fn covers(spans: &[(u128, u128)], trace: u128) -> bool {
    let after = spans.partition_point(|(lo, _)| *lo <= trace);
    after > 0 && spans[after - 1].1 >= trace
}

/// Sorts `spans` and merges those that overlap.
fn merged(mut spans: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    spans.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(spans.len());
    for (lo, hi) in spans {
        match out.last_mut() {
            Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// Where in `snapshot` (of data files `files`) a match of `query` may be: its files and row
/// groups, and its live segments (those that may hold every value each match needs).
pub(super) async fn prune(
    warehouse: &Warehouse,
    tenant: &str,
    query: &Query,
    snapshot: SnapshotSpans,
    files: &[DataFile],
) -> Result<Pruned> {
    let mut pruned = prune_files(warehouse, tenant, query, snapshot, files).await?;
    let needed = required_values(query);
    if needed.is_empty() {
        return Ok(pruned);
    }
    // As for row groups, one filter decides (the one that keeps the fewest rows): of a match,
    // the spans that hold the values of different filters may sit in different segments.
    let segments = pruned.walk.live_segments()?;
    let rows = |(segment, kept): &(&Arc<LiveSegment>, Vec<bool>)| -> usize {
        let batches = segment.batches().iter().zip(kept);
        batches.filter(|(_, k)| **k).map(|(b, _)| b.num_rows()).sum()
    };
    let by_group = needed.iter().map(|group| {
        let kept: Vec<(&Arc<LiveSegment>, Vec<bool>)> =
            segments.iter().map(|s| (s, s.batches_holding(group))).collect();
        (kept.iter().map(rows).sum::<usize>(), kept)
    });
    let Some((_, kept)) = by_group.min_by_key(|(rows, _)| *rows) else {
        return Ok(pruned);
    };
    let mut walked = Vec::with_capacity(kept.len());
    for (segment, batches) in kept {
        if !batches.contains(&true) {
            continue;
        }
        if batches.contains(&false) {
            // Only the traces with rows in the batches that may hold a match.
            let traces = segment.traces_in(&batches).into_iter().map(|t| (t, t)).collect();
            pruned.may_hold.by_segment.insert(segment_key(segment), traces);
        }
        walked.push(segment.clone());
    }
    if !pruned.may_hold.by_segment.is_empty() || walked.len() < segments.len() {
        pruned.walk = pruned.walk.with_live_segments(walked);
        pruned.may_hold.live_pruned = true;
    }
    Ok(pruned)
}

/// A live segment's key in [`MayHold`]: where it is (a snapshot's segments stay put).
fn segment_key(segment: &Arc<LiveSegment>) -> usize {
    Arc::as_ptr(segment) as usize
}

/// Where in `snapshot`'s data files `files` a match of `query` may be.
async fn prune_files(
    warehouse: &Warehouse,
    tenant: &str,
    query: &Query,
    snapshot: SnapshotSpans,
    files: &[DataFile],
) -> Result<Pruned> {
    let everything = || Pruned {
        read: snapshot.clone(),
        walk: snapshot.clone(),
        may_hold: MayHold::default(),
    };
    let Some(kept) = fewest_row_groups(warehouse, tenant, query, files).await? else {
        return Ok(everything());
    };
    if kept.iter().all(|groups| groups.iter().all(|k| *k)) {
        return Ok(everything());
    }
    let paths = files.iter().zip(&kept).filter(|(_, k)| k.contains(&true));
    let walk = snapshot.with_files(paths.map(|(f, _)| f.path.clone()).collect());
    if !kept.iter().flatten().any(|k| *k) {
        // The files' traces need not be read either: only live spans may match.
        return Ok(Pruned {
            read: walk.clone(),
            walk,
            may_hold: MayHold::default(),
        });
    }
    let may_hold = may_hold(warehouse, tenant, files, &kept).await?;
    Ok(Pruned {
        read: snapshot,
        walk,
        may_hold,
    })
}

/// Per file, per row group, whether it may hold a match, by the filter that keeps the fewest;
/// `None` when the query needs no string value.
async fn fewest_row_groups(
    warehouse: &Warehouse,
    tenant: &str,
    query: &Query,
    files: &[DataFile],
) -> Result<Option<Vec<Vec<bool>>>> {
    let mut best: Option<(usize, Vec<Vec<bool>>)> = None;
    for needed in required_values(query) {
        let mut kept: Option<Vec<Vec<bool>>> = None;
        for (leaves, value) in needed {
            let may = warehouse
                .files_row_groups_may_contain(tenant, files, &leaves, &value)
                .await?;
            kept = Some(match kept {
                None => may,
                Some(kept) => kept.iter().zip(&may).map(|(k, m)| and(k, m)).collect(),
            });
        }
        let Some(kept) = kept else { continue };
        let count = kept.iter().flatten().filter(|k| **k).count();
        if best.as_ref().is_none_or(|(c, _)| count < *c) {
            best = Some((count, kept));
        }
        if count == 0 {
            break;
        }
    }
    Ok(best.map(|(_, kept)| kept))
}

fn and(a: &[bool], b: &[bool]) -> Vec<bool> {
    debug_assert_eq!(a.len(), b.len(), "row groups of one file");
    a.iter().zip(b).map(|(a, b)| *a && *b).collect()
}

/// The trace-id spans of the `kept` row groups of the files where some are not.
async fn may_hold(warehouse: &Warehouse, tenant: &str, files: &[DataFile], kept: &[Vec<bool>]) -> Result<MayHold> {
    let (partly, partly_kept): (Vec<DataFile>, Vec<&Vec<bool>>) = files
        .iter()
        .zip(kept)
        .filter(|(_, k)| k.contains(&true) && k.contains(&false))
        .map(|(f, k)| (f.clone(), k))
        .unzip();
    let ids = warehouse.files_row_group_ids(tenant, &partly).await?;
    let mut by_file = HashMap::with_capacity(partly.len());
    for ((file, kept), ids) in partly.into_iter().zip(partly_kept).zip(ids) {
        let spans = ids.into_iter().zip(kept).filter(|(_, k)| **k).map(|(span, _)| span);
        by_file.insert(file.path, merged(spans.collect()));
    }
    let whole = files.iter().zip(kept).any(|(_, k)| k.iter().all(|k| *k));
    let anywhere = (!whole).then(|| merged(by_file.values().flatten().copied().collect()));
    Ok(MayHold {
        by_file,
        anywhere,
        kept: kept.iter().flatten().filter(|k| **k).count(),
        row_groups: kept.iter().map(Vec::len).sum(),
        live_pruned: false,
        by_segment: HashMap::new(),
    })
}

/// Per filter every match needs, the string values one of its spans must hold: the
/// `attr = "v"` terms joined by `&&` (filters with none are left out).
fn required_values(query: &Query) -> Vec<Vec<Needed>> {
    fn walk(e: &SpansetExpr, out: &mut Vec<Vec<Needed>>) {
        use tracehouse_traceql::ast::SpansetOp as Op;
        match e {
            SpansetExpr::Filter(cond) => {
                let mut needed = Vec::new();
                terms(cond, &mut needed);
                if !needed.is_empty() {
                    out.push(needed);
                }
            }
            SpansetExpr::Op(Op::And | Op::Child | Op::Descendant | Op::Parent | Op::Ancestor | Op::Sibling, a, b) => {
                walk(a, out);
                walk(b, out);
            }
            SpansetExpr::Op(..) => {}
            SpansetExpr::Pipeline(stages) => {
                if let Some(Stage::Spanset(first)) = stages.first() {
                    walk(first, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    if let Root::Spanset(e) = &query.root {
        walk(e, &mut out);
    }
    out
}

/// The `attr = "v"` terms of `e`'s `&&` conjunction.
fn terms(e: &FieldExpr, out: &mut Vec<Needed>) {
    use tracehouse_traceql::ast::{BinOp, CmpOp};
    match e {
        FieldExpr::Binary(BinOp::And, a, b) => {
            terms(a, out);
            terms(b, out);
        }
        FieldExpr::Binary(BinOp::Cmp(CmpOp::Eq), a, b) => {
            let ((FieldExpr::Attribute(attr), FieldExpr::Static(Static::Str(v)))
            | (FieldExpr::Static(Static::Str(v)), FieldExpr::Attribute(attr))) = (a.as_ref(), b.as_ref())
            else {
                return;
            };
            let [span, resource] = ATTRIBUTE_STRING_LEAVES;
            let leaves = match (attr.scope, attr.parent) {
                (AttrScope::Span, false) => vec![span],
                (AttrScope::Resource, false) => vec![resource],
                (AttrScope::Unscoped, false) => vec![span, resource],
                _ => return,
            };
            out.push((leaves, v.clone()));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_cover_their_ids_only() {
        let spans = merged(vec![(50, 60), (10, 20), (15, 30), (61, 61)]);
        assert_eq!(spans, vec![(10, 30), (50, 60), (61, 61)]);
        for (trace, held) in [
            (9, false),
            (10, true),
            (30, true),
            (31, false),
            (55, true),
            (61, true),
            (62, false),
        ] {
            assert_eq!(covers(&spans, trace), held, "{trace}");
        }
        assert!(!covers(&[], 1));
    }

    #[test]
    fn each_needed_filter_is_one_group() {
        let q = tracehouse_traceql::compile(
            r#"{ span.a = "x" && .b = "y" && duration > 1ms } && { resource.c = "z" } || { span.d = "w" }"#,
        );
        let groups = required_values(&q.expect("query"));
        assert!(groups.is_empty(), "an || operand is not needed");
        let q = tracehouse_traceql::compile(r#"{ span.a = "x" && .b = "y" } > { resource.c = "z" || span.e = "v" }"#);
        let groups = required_values(&q.expect("query"));
        let values: Vec<Vec<&str>> = groups
            .iter()
            .map(|g| g.iter().map(|(_, v)| v.as_str()).collect())
            .collect();
        assert_eq!(values, vec![vec!["x", "y"]]);
        assert_eq!(groups[0][1].0, ATTRIBUTE_STRING_LEAVES.to_vec(), "unscoped: either map");
    }
}
