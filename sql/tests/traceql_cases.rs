//! File-driven TraceQL tests: the queries of `tests/traceql/cases.yaml` over the OTLP JSON
//! fixtures, run through `traceql()` in SQL on a real warehouse (Delta tables on local disk
//! plus the live buffer), each compared with its expected trace and span ids.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::AsArray;
use common::{Case, Fixture};
use tracehouse_traceql::label::{LabelValue, entries};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceql_cases() {
    let fx = &Fixture::load().await;
    let cases = common::cases();
    assert!(cases.len() > 100, "the case file lost its cases");
    let mut failures = Vec::new();
    for case in &cases {
        let sql = format!(
            "SELECT trace_id, span_id FROM traceql({})",
            tracehouse_sql::sql_literal(&case.query)
        );
        let result = fx
            .engine
            .sql(case.tenant.as_deref().unwrap_or(common::TENANT), &sql)
            .await;
        match (&case.expect, &case.error, result) {
            (Some(expect), None, Ok(batches)) => {
                let want: BTreeSet<(String, String)> = expect
                    .iter()
                    .flat_map(|(t, spans)| spans.iter().map(move |s| (fx.trace(t), fx.span(s))))
                    .collect();
                let got = common::id_pairs(&batches);
                if got.len() != common::row_count(&batches) {
                    failures.push(format!("{}: a span came back twice", case.query));
                }
                if got != want {
                    failures.push(format!(
                        "{}\n   want {:?}\n   got  {:?}",
                        case.query,
                        fx.names(&want),
                        fx.names(&got)
                    ));
                }
                if let Some(spansets) = &case.spansets {
                    failures.extend(check_spansets(fx, case, spansets).await);
                }
            }
            (None, Some(needle), Err(e)) => {
                let text = e.to_string();
                if !text.contains(needle.as_str()) {
                    failures.push(format!("{}: error {text:?} lacks {needle:?}", case.query));
                }
            }
            (_, _, Ok(_)) => failures.push(format!("{}: expected an error", case.query)),
            (_, _, Err(e)) => failures.push(format!("{}: {e}", case.query)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Every non-metrics construct plans and runs (results are checked by `traceql_cases`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_construct_runs() {
    let fx = &Fixture::load().await;
    let queries: Vec<String> =
        serde_yaml::from_str(&std::fs::read_to_string(common::dir().join("runs.yaml")).unwrap()).unwrap();
    assert!(queries.len() > 150);
    let mut failures = Vec::new();
    for q in &queries {
        let sql = format!("SELECT count(*) FROM traceql({})", tracehouse_sql::sql_literal(q));
        if let Err(e) = fx.engine.sql(common::TENANT, &sql).await {
            failures.push(format!("{q}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} failed:\n{}",
        failures.len(),
        queries.len(),
        failures.join("\n")
    );
}

/// Map and struct access on traceql() rows (an optimizer rule of DataFusion 55 failed here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attribute_access_on_traceql_rows() {
    let fx = &Fixture::load().await;
    let batches = fx
        .engine
        .sql(
            common::TENANT,
            "SELECT sum(span_attributes['items']['int']), count(resource_attributes['team']) \
             FROM traceql('{ resource.service.name = \"cart\" }')",
        )
        .await
        .unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    assert!(text.contains("| 10 ") && text.contains("| 3 "), "{text}");
}

/// Compares the attributes of each trace's spansets with the case's `spansets`; a failure
/// message when they differ.
async fn check_spansets(
    fx: &Fixture,
    case: &Case,
    want: &BTreeMap<String, Vec<serde_yaml::Mapping>>,
) -> Option<String> {
    let sql = format!(
        "SELECT DISTINCT trace_id, spanset FROM traceql({})",
        tracehouse_sql::sql_literal(&case.query)
    );
    let tenant = case.tenant.as_deref().unwrap_or(common::TENANT);
    let batches = fx.engine.sql(tenant, &sql).await.ok()?;
    let mut got: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for b in &batches {
        let (ids, labels) = (b.column(0).as_string::<i32>(), b.column(1).as_string::<i32>());
        for row in 0..b.num_rows() {
            let attrs = entries(labels.value(row));
            got.entry(ids.value(row).to_string())
                .or_default()
                .insert(rendered(attrs));
        }
    }
    let want: BTreeMap<String, BTreeSet<String>> = want
        .iter()
        .map(|(trace, sets)| {
            let sets = sets
                .iter()
                .map(|m| {
                    rendered(
                        m.iter()
                            .map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), yaml_value(v)))
                            .collect(),
                    )
                })
                .collect();
            (fx.trace(trace), sets)
        })
        .collect();
    (got != want).then(|| format!("{}: spansets\n   want {want:?}\n   got  {got:?}", case.query))
}

fn rendered(attrs: Vec<(String, LabelValue)>) -> String {
    let parts: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    parts.join(", ")
}

fn yaml_value(v: &serde_yaml::Value) -> LabelValue {
    use serde_yaml::Value as Y;
    match v {
        Y::Null => LabelValue::Nil,
        Y::Bool(b) => LabelValue::Bool(*b),
        Y::Number(n) => match n.as_i64() {
            Some(i) => LabelValue::Int(i),
            None => LabelValue::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Y::String(s) => LabelValue::Str(s.clone()),
        Y::Sequence(items) => LabelValue::Array(items.iter().map(yaml_value).collect()),
        other => LabelValue::Str(format!("{other:?}")),
    }
}
