//! Tempo's search semantics over the fixtures: the first `limit` traces found, or the most
//! recent with `with(most_recent=true)`, newest first; `spss` spans per spanset with the
//! matched count, root service and name, start and duration, `by()` spansets, and the time
//! range. And for every query of the case file: the hits a search returns part by part are
//! exactly the hits of the whole-table evaluation.

mod common;

use common::{Fixture, TENANT};
use tracehouse_sql::search::{SearchRequest, TraceHit};

fn request(query: &str, limit: usize, spss: usize) -> SearchRequest {
    SearchRequest {
        query: query.into(),
        limit,
        spss,
        start_unix_nano: None,
        end_unix_nano: None,
    }
}

/// 2026-11-20T12:00:00Z, the fixtures' time zero.
const BASE_NS: i64 = 1_795_176_000_000_000_000;
const MS: i64 = 1_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_follows_tempo_semantics() {
    let fx = &Fixture::load().await;
    let search = |r: SearchRequest| async move { fx.engine.traceql_search(TENANT, &r).await.unwrap().hits };
    let names = |hits: &[TraceHit]| hits.iter().map(|h| h.trace_id.clone()).collect::<Vec<_>>();

    // Most recent first, `limit` traces.
    let hits = search(request("{ } with(most_recent=true)", 2, 3)).await;
    assert_eq!(names(&hits), vec![fx.trace("T4"), fx.trace("T3")]);
    let t4 = &hits[0];
    assert_eq!(t4.root_service_name.as_deref(), Some("frontend"));
    assert_eq!(t4.root_trace_name.as_deref(), Some("POST /orders"));
    assert_eq!(t4.start_unix_nano, BASE_NS + 5000 * MS);
    assert_eq!(t4.duration_ns, 2000 * MS);
    // At most `spss` spans per spanset, the earliest, with the number matched.
    let t3 = &hits[1];
    assert_eq!(t3.spansets.len(), 1);
    assert_eq!(t3.spansets[0].matched, 4);
    let spans: Vec<_> = t3.spansets[0].spans.iter().map(|s| s.span_id.clone()).collect();
    assert_eq!(spans, vec![fx.span("s0"), fx.span("s1"), fx.span("s2")]);
    assert_eq!(t3.duration_ns, 1000 * MS, "trace split across flushes");

    // All four traces, and a trace whose root never arrived has no root fields.
    let hits = search(request("{ }", 20, 1)).await;
    assert_eq!(names(&hits), ["T4", "T3", "T2", "T1"].map(|t| fx.trace(t)).to_vec());
    let t2 = &hits[2];
    assert_eq!((t2.root_service_name.clone(), t2.root_trace_name.clone()), (None, None));
    assert_eq!(t2.duration_ns, 300 * MS);

    // by() makes one spanset per value, labelled.
    let hits = search(request(
        "{ trace:id = \"11111111111111111111111111111111\" } | by(resource.service.name)",
        20,
        1,
    ))
    .await;
    assert_eq!(hits.len(), 1);
    let sets: Vec<_> = hits[0]
        .spansets
        .iter()
        .map(|s| (s.label.clone(), s.matched, s.spans[0].span_id.clone()))
        .collect();
    assert_eq!(
        sets,
        vec![
            ("by(resource.service.name)=cart".to_string(), 3, fx.span("a1")),
            ("by(resource.service.name)=frontend".to_string(), 2, fx.span("r1")),
            ("by(resource.service.name)=payment".to_string(), 3, fx.span("b1")),
        ]
    );

    // The time range keeps spans that overlap it.
    let mut r = request("{ }", 20, 3);
    r.start_unix_nano = Some(BASE_NS + 4000 * MS);
    assert_eq!(names(&search(r).await), vec![fx.trace("T4")]);

    // Bad queries and bad limits are errors, not panics.
    for bad in [request("{ .a = }", 20, 3), request("{ }", 0, 3), request("{ }", 20, 0)] {
        assert!(fx.engine.traceql_search(TENANT, &bad).await.is_err());
    }
}

/// Search looks at the table part by part and stops early; whatever it returns must be what
/// the whole-table evaluation (`with(most_recent=true)`) says of the same traces, and it must
/// return as many traces as there are, up to `limit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_by_parts_answers_as_the_whole_table() {
    let fx = &Fixture::load().await;
    let cases = common::cases();
    let mut checked = 0;
    let mut failures = Vec::new();
    let cases = cases
        .iter()
        .filter(|c| c.expect.is_some() && !c.query.contains("with("));
    for (i, case) in cases.enumerate() {
        let tenant = case.tenant.as_deref().unwrap_or(TENANT);
        let whole = format!("{} with(most_recent=true)", case.query);
        let Ok(exact) = fx.engine.traceql_search(tenant, &request(&whole, 1000, 1000)).await else {
            failures.push(format!("{whole}: the whole-table search failed"));
            continue;
        };
        // Every case whole; every eighth also stopping after its first trace.
        let limits: &[usize] = if i % 8 == 0 { &[1, 1000] } else { &[1000] };
        for &limit in limits {
            let found = fx
                .engine
                .traceql_search(tenant, &request(&case.query, limit, 1000))
                .await
                .unwrap()
                .hits;
            if found.len() != exact.hits.len().min(limit) {
                failures.push(format!(
                    "{} (limit {limit}): {} traces, the whole table has {}",
                    case.query,
                    found.len(),
                    exact.hits.len()
                ));
            }
            for hit in &found {
                match exact.hits.iter().find(|h| h.trace_id == hit.trace_id) {
                    Some(h) if h == hit => {}
                    Some(h) => failures.push(format!("{} (limit {limit}):\n  {hit:?}\n  {h:?}", case.query)),
                    None => failures.push(format!(
                        "{} (limit {limit}): {} matches nothing",
                        case.query, hit.trace_id
                    )),
                }
            }
        }
        checked += 1;
    }
    assert!(checked > 100, "only {checked} cases checked");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
