//! TraceQL benchmark: loads tracegen spans into a real warehouse (Delta tables on local disk,
//! everything flushed), then times each TraceQL shape two ways in the same run: as a Tempo
//! search (20 most recent traces, 3 spans per spanset) and as `count(*)` over `traceql()`, each
//! beside the hand-written SQL that computes the same spans (the peer, where SQL can say it).
//!
//! Usage: traceql [--spans N] [--flush-spans F] [--runs R] [--dir PATH] [--explain QUERY]
//! Prints one JSON object per shape.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracehouse_sql::traceql::SearchRequest;
use tracehouse_sql::{QueryEngine, QueryEngineConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TENANT: &str = "bench";

/// (name, TraceQL, equivalent SQL returning the same span rows, if SQL can say it simply).
const SHAPES: &[(&str, &str, Option<&str>)] = &[
    (
        "intrinsic",
        "{ status = error }",
        Some("SELECT count(*) FROM spans WHERE status_code = 'error'"),
    ),
    (
        "dedicated+duration",
        r#"{ resource.service.name = "checkout" && duration > 50ms }"#,
        Some("SELECT count(*) FROM spans WHERE service_name = 'checkout' AND duration_ns > 50000000"),
    ),
    (
        "typed attribute",
        "{ span.http.response.status_code >= 500 }",
        Some("SELECT count(*) FROM spans WHERE span_attributes['http.response.status_code']['int'] >= 500"),
    ),
    (
        "unscoped regex",
        r#"{ .db.system =~ "postgres.*" }"#,
        Some(
            "SELECT count(*) FROM spans WHERE span_attributes['db.system']['str'] ~ '^(?:postgres.*)$' \
             OR resource_attributes['db.system']['str'] ~ '^(?:postgres.*)$'",
        ),
    ),
    (
        "trace-level",
        r#"{ trace:rootService = "frontend" && status = error }"#,
        Some(
            "SELECT count(*) FROM spans s JOIN (SELECT trace_id FROM spans WHERE parent_span_id IS NULL \
             AND service_name = 'frontend') r ON s.trace_id = r.trace_id WHERE s.status_code = 'error'",
        ),
    ),
    (
        "and (same trace)",
        r#"{ kind = server && resource.service.name = "payment" } && { status = error }"#,
        None,
    ),
    (
        "child",
        "{ kind = server } > { status = error }",
        Some(
            "SELECT count(DISTINCT c.span_id) FROM spans c JOIN spans p ON c.trace_id = p.trace_id \
             AND c.parent_span_id = p.span_id WHERE p.kind = 'server' AND c.status_code = 'error'",
        ),
    ),
    (
        "descendant",
        r#"{ resource.service.name = "frontend" } >> { status = error }"#,
        None,
    ),
    ("pipeline count", "{ status = error } | count() > 2", None),
    (
        "by + avg",
        "{ kind = server } | by(resource.service.name) | avg(duration) > 100ms",
        None,
    ),
];

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn median(mut xs: Vec<Duration>) -> f64 {
    xs.sort();
    xs[xs.len() / 2].as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let spans: usize = arg("--spans").map_or(1_000_000, |s| s.parse().expect("--spans N"));
    let runs: usize = arg("--runs").map_or(3, |s| s.parse().expect("--runs R"));
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = arg("--dir").map_or_else(|| tmp.path().to_path_buf(), Into::into);
    let load = Instant::now();
    // About 40 files for a million spans, as the live-bytes flush used to make.
    let flush_spans: usize = arg("--flush-spans").map_or(25_000, |s| s.parse().expect("--flush-spans F"));
    let loaded = tracehouse_benches::load::load(&dir, TENANT, spans, flush_spans).await;
    let (warehouse, loaded) = (loaded.warehouse, loaded.spans);
    eprintln!("loaded {loaded} spans in {:.1}s", load.elapsed().as_secs_f64());

    let engine = Arc::new(QueryEngine::new(warehouse.clone(), QueryEngineConfig::default()).expect("engine"));
    if let Some(query) = arg("--explain") {
        // Where the time goes: EXPLAIN ANALYZE of one TraceQL query.
        let sql = format!(
            "EXPLAIN ANALYZE SELECT count(*) FROM traceql({})",
            tracehouse_sql::sql_literal(&query)
        );
        let batches = engine.sql(TENANT, &sql).await.expect("explain");
        println!(
            "{}",
            arrow::util::pretty::pretty_format_batches(&batches).expect("format")
        );
        return;
    }
    for (name, traceql, sql) in SHAPES {
        let mut search_ms = Vec::new();
        let mut table_ms = Vec::new();
        let mut sql_ms = Vec::new();
        let (mut traces, mut rows, mut peer_rows) = (0, 0i64, None);
        for _ in 0..runs {
            let t = Instant::now();
            let hits = engine
                .traceql_search(
                    TENANT,
                    &SearchRequest {
                        query: (*traceql).into(),
                        limit: 20,
                        spss: 3,
                        start_unix_nano: None,
                        end_unix_nano: None,
                    },
                )
                .await
                .expect("search");
            search_ms.push(t.elapsed());
            traces = hits.hits.len();
            let t = Instant::now();
            rows = count(
                &engine,
                &format!("SELECT count(*) FROM traceql({})", tracehouse_sql::sql_literal(traceql)),
            )
            .await;
            table_ms.push(t.elapsed());
            if let Some(sql) = sql {
                let t = Instant::now();
                peer_rows = Some(count(&engine, sql).await);
                sql_ms.push(t.elapsed());
            }
        }
        let table = median(table_ms);
        let peer = (!sql_ms.is_empty()).then(|| median(sql_ms));
        println!(
            "{}",
            serde_json::json!({
                "shape": name,
                "traceql": traceql,
                "spans": loaded,
                "search_ms": (median(search_ms) * 10.0).round() / 10.0,
                "search_traces": traces,
                "traceql_count_ms": (table * 10.0).round() / 10.0,
                "matched_spans": rows,
                "sql_ms": peer.map(|p| (p * 10.0).round() / 10.0),
                "sql_rows": peer_rows,
                "traceql_vs_sql": peer.map(|p| (table / p * 100.0).round() / 100.0),
            })
        );
        if let Some(p) = peer_rows {
            assert_eq!(p, rows, "{name}: TraceQL and SQL disagree");
        }
    }
}

async fn count(engine: &QueryEngine, sql: &str) -> i64 {
    let batches = engine.sql(TENANT, sql).await.expect("query");
    batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .expect("count")
        .value(0)
}
