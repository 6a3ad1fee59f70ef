//! What applies to a metrics query's series after its pipelines run, as Tempo applies it:
//! second stages (`| topk(n)`, `| bottomk(n)`, `> 10`) and arithmetic between metrics queries
//! and numbers (`({ a } | rate()) / ({ } | rate())`, `100 * ({ } | rate())`). The series are
//! small (at most the series limit times the buckets); the spans were aggregated by the plans.

use std::collections::BTreeMap;

use tracehouse_traceql::ast::{ArithOp, CmpOp, MetricsExpr, MetricsStage, Static};

use super::Series;
use crate::Result;
use crate::search::HitValue;

/// A metrics expression's value: series, or a number (`2 * (...)`).
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Series(Vec<Series>),
    Number(f64),
}

/// The series of `e`, its pipelines' series taken from `leaves` in
/// [`tracehouse_traceql::plan::metrics::pipelines`] order.
pub fn combine(e: &MetricsExpr, leaves: &mut impl Iterator<Item = Vec<Series>>) -> Result<Operand> {
    let out = match e {
        MetricsExpr::Pipeline(..) => Operand::Series(leaves.next().unwrap_or_default()),
        MetricsExpr::Number(n) => Operand::Number(number(n)?),
        MetricsExpr::Stage(inner, stage) => match combine(inner, leaves)? {
            Operand::Series(series) => Operand::Series(staged(series, stage)?),
            Operand::Number(_) => return invalid("a second stage applies to a metrics query, not a number"),
        },
        MetricsExpr::Binary(op, a, b) => {
            let (a, b) = (combine(a, leaves)?, combine(b, leaves)?);
            arithmetic(*op, a, b)?
        }
    };
    Ok(out)
}

fn invalid<T>(message: &str) -> Result<T> {
    Err(datafusion::error::DataFusionError::Plan(message.to_string()).into())
}

/// A number in a metrics expression; durations in seconds, as Tempo compares them.
fn number(s: &Static) -> Result<f64> {
    match s {
        Static::Int(i) => Ok(*i as f64),
        Static::Float(f) => Ok(*f),
        Static::Duration(ns) => Ok(*ns as f64 / 1e9),
        other => invalid(&format!("{other} is not a number")),
    }
}

fn staged(series: Vec<Series>, stage: &MetricsStage) -> Result<Vec<Series>> {
    Ok(match stage {
        MetricsStage::Filter(op, v) => filtered(series, *op, number(v)?),
        MetricsStage::TopK(k) => ranked(series, *k, true),
        MetricsStage::BottomK(k) => ranked(series, *k, false),
    })
}

/// The samples that satisfy `op value`; series left without samples are dropped.
fn filtered(series: Vec<Series>, op: CmpOp, value: f64) -> Vec<Series> {
    let keep = |v: f64| match op {
        CmpOp::Eq => v == value,
        CmpOp::Neq => v != value,
        CmpOp::Lt => v < value,
        CmpOp::Lte => v <= value,
        CmpOp::Gt => v > value,
        CmpOp::Gte => v >= value,
    };
    (series.into_iter())
        .map(|mut s| {
            s.samples.retain(|&(_, v)| keep(v));
            s.exemplars.retain(|e| keep(e.value));
            s
        })
        .filter(|s| !s.samples.is_empty())
        .collect()
}

/// At each timestamp, the `k` series with the highest (`top`) or lowest values keep their
/// sample there; ties go to the series whose labels sort later (top) or earlier (bottom), a
/// fixed order as Tempo's. Series that are never among them are dropped.
fn ranked(mut series: Vec<Series>, k: i64, top: bool) -> Vec<Series> {
    let k = usize::try_from(k).unwrap_or(0);
    let mut at: BTreeMap<i64, Vec<(f64, usize)>> = BTreeMap::new();
    for (i, s) in series.iter().enumerate() {
        for &(t, v) in &s.samples {
            at.entry(t).or_default().push((v, i));
        }
    }
    let mut kept: Vec<Vec<(i64, f64)>> = vec![Vec::new(); series.len()];
    for (t, mut values) in at {
        values.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        if top {
            values.reverse();
        }
        for (v, i) in values.into_iter().take(k) {
            kept[i].push((t, v));
        }
    }
    for (s, samples) in series.iter_mut().zip(kept) {
        s.samples = samples;
    }
    series.retain(|s| !s.samples.is_empty());
    series
}

fn arithmetic(op: ArithOp, a: Operand, b: Operand) -> Result<Operand> {
    let apply = |x: f64, y: f64| match op {
        ArithOp::Add => Ok(x + y),
        ArithOp::Sub => Ok(x - y),
        ArithOp::Mul => Ok(x * y),
        ArithOp::Div => Ok(x / y),
        other => invalid(&format!("{} between metrics queries is not supported", other.symbol())),
    };
    Ok(match (a, b) {
        (Operand::Number(x), Operand::Number(y)) => Operand::Number(apply(x, y)?),
        (Operand::Series(s), Operand::Number(y)) => Operand::Series(scaled(s, |x| apply(x, y))?),
        (Operand::Number(x), Operand::Series(s)) => Operand::Series(scaled(s, |y| apply(x, y))?),
        (Operand::Series(l), Operand::Series(r)) => Operand::Series(matched(op, l, r, apply)?),
    })
}

fn scaled(mut series: Vec<Series>, f: impl Fn(f64) -> Result<f64>) -> Result<Vec<Series>> {
    for s in &mut series {
        for sample in &mut s.samples {
            sample.1 = f(sample.1)?;
        }
        s.samples.retain(|(_, v)| !v.is_nan());
    }
    series.retain(|s| !s.samples.is_empty());
    Ok(series)
}

/// A series' labels without `__name__`: what pairs it with the other side's series.
fn key(s: &Series) -> Vec<(String, HitValue)> {
    (s.labels.iter()).filter(|(k, _)| k != "__name__").cloned().collect()
}

/// Series of both sides with the same labels (a side's series without labels pairs with
/// every series of the other), their values combined where both have a sample.
fn matched(
    op: ArithOp,
    l: Vec<Series>,
    r: Vec<Series>,
    apply: impl Fn(f64, f64) -> Result<f64>,
) -> Result<Vec<Series>> {
    let r_fans_out = r.iter().any(|s| key(s).is_empty());
    let target = if r_fans_out { &l } else { &r };
    let mut out = Vec::new();
    for t in target {
        let k = key(t);
        let (Some(a), Some(b)) = (paired(&l, &k), paired(&r, &k)) else {
            continue;
        };
        let values: BTreeMap<i64, f64> = b.samples.iter().copied().collect();
        let mut samples = Vec::new();
        for &(ts, x) in &a.samples {
            if let Some(&y) = values.get(&ts) {
                let v = apply(x, y)?;
                if !v.is_nan() {
                    samples.push((ts, v));
                }
            }
        }
        if !samples.is_empty() {
            out.push(Series {
                labels: merged_labels(op, &a.labels, &b.labels),
                samples,
                exemplars: a.exemplars.iter().chain(&b.exemplars).cloned().collect(),
            });
        }
    }
    Ok(out)
}

/// The series of `side` labelled `k`, or else its series without labels.
fn paired<'a>(side: &'a [Series], k: &[(String, HitValue)]) -> Option<&'a Series> {
    (side.iter().find(|s| key(s) == k)).or_else(|| side.iter().find(|s| key(s).is_empty()))
}

/// The left side's labels, then the right side's it lacks; `__name__` names the operation
/// where both sides have one (`(rate / count_over_time)`), and is dropped otherwise.
fn merged_labels(op: ArithOp, l: &[(String, HitValue)], r: &[(String, HitValue)]) -> Vec<(String, HitValue)> {
    let name = |side: &[(String, HitValue)]| {
        side.iter().find_map(|(k, v)| match (k.as_str(), v) {
            ("__name__", HitValue::Str(s)) => Some(s.clone()),
            _ => None,
        })
    };
    let mut out: Vec<(String, HitValue)> = l.iter().filter(|(k, _)| k != "__name__").cloned().collect();
    for (k, v) in r {
        if k != "__name__" && !out.iter().any(|(o, _)| o == k) {
            out.push((k.clone(), v.clone()));
        }
    }
    if let (Some(a), Some(b)) = (name(l), name(r)) {
        out.insert(
            0,
            ("__name__".into(), HitValue::Str(format!("({a} {} {b})", op.symbol()))),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(label: &str, samples: &[(i64, f64)]) -> Series {
        Series {
            labels: vec![("svc".into(), HitValue::Str(label.into()))],
            samples: samples.to_vec(),
            exemplars: Vec::new(),
        }
    }

    #[test]
    fn topk_keeps_each_timestamps_highest() {
        let s = vec![
            series("a", &[(1, 5.0), (2, 1.0)]),
            series("b", &[(1, 3.0), (2, 4.0)]),
            series("c", &[(1, 1.0), (2, 2.0)]),
        ];
        let top = ranked(s.clone(), 1, true);
        assert_eq!(top, vec![series("a", &[(1, 5.0)]), series("b", &[(2, 4.0)])]);
        let bottom = ranked(s, 1, false);
        assert_eq!(bottom, vec![series("a", &[(2, 1.0)]), series("c", &[(1, 1.0)])]);
    }

    #[test]
    fn filters_drop_samples_and_empty_series() {
        let s = vec![series("a", &[(1, 5.0), (2, 1.0)]), series("b", &[(1, 0.5)])];
        assert_eq!(filtered(s, CmpOp::Gt, 1.0), vec![series("a", &[(1, 5.0)])]);
    }

    #[test]
    fn arithmetic_pairs_series_by_labels_and_fans_out_unlabelled() {
        let total = Series {
            labels: vec![("__name__".into(), HitValue::Str("rate".into()))],
            samples: vec![(1, 10.0), (2, 0.0)],
            exemplars: Vec::new(),
        };
        let errors = vec![series("a", &[(1, 2.0), (2, 1.0)]), series("b", &[(1, 5.0)])];
        let Operand::Series(out) =
            arithmetic(ArithOp::Div, Operand::Series(errors), Operand::Series(vec![total])).unwrap()
        else {
            panic!("series expected")
        };
        // 1 / 0 is +inf, kept as Tempo keeps it; only NaN is dropped.
        assert_eq!(out[0], series("a", &[(1, 0.2), (2, f64::INFINITY)]));
        assert_eq!(out[1], series("b", &[(1, 0.5)]));
        let Operand::Series(out) = arithmetic(ArithOp::Mul, Operand::Number(100.0), Operand::Series(out)).unwrap()
        else {
            panic!("series expected")
        };
        assert_eq!(out[1], series("b", &[(1, 50.0)]));
    }
}
