//! File-driven TraceQL tests: the queries of `tests/traceql/cases.yaml` over the OTLP JSON
//! fixtures, run through `traceql()` in SQL on a real warehouse (Delta tables on local disk
//! plus the live buffer), each compared with its expected trace and span ids.

mod common;

use std::collections::BTreeSet;

use common::Fixture;

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
