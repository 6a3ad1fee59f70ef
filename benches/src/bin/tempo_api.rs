//! Tempo API benchmark: loads tracegen spans into a real warehouse (flushed every
//! `--flush-spans`, so the tenant has many files, as Tempo has many blocks), serves Tempo's
//! query API on a local port, and times what Grafana does over HTTP:
//! - trace by id (`/api/v2/traces/<id>`, protobuf) for `--lookups` random traces, without and
//!   with a time range, as p50/p99, beside SQL in the same run: `WHERE trace_id = ...` (which
//!   the spans table also answers through the index) and the peer without the index,
//!   `WHERE trace_id >= x AND trace_id <= x`, which DataFusion prunes by statistics in every
//!   file;
//! - TraceQL searches (`/api/search`, limit 20, spss 3) for the shapes of the TraceQL bench.
//!
//! Usage: tempo_api [--spans N] [--flush-spans F] [--lookups L] [--runs R]
//! Prints one JSON object per measurement.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use tracehouse_sql::{QueryEngine, QueryEngineConfig};
use tracehouse_tempo_api::tempopb::{SearchResponse, TraceByIdResponse};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TENANT: &str = "bench";

const SEARCHES: &[(&str, &str)] = &[
    ("intrinsic", "{ status = error }"),
    (
        "dedicated+duration",
        r#"{ resource.service.name = "checkout" && duration > 50ms }"#,
    ),
    ("typed attribute", "{ span.http.response.status_code >= 500 }"),
    ("trace-level", r#"{ trace:rootService = "frontend" && status = error }"#),
    ("child", "{ kind = server } > { status = error }"),
    (
        "descendant",
        r#"{ resource.service.name = "frontend" } >> { status = error }"#,
    ),
    (
        "by + avg",
        "{ kind = server } | by(resource.service.name) | avg(duration) > 100ms",
    ),
];

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, mut xs: Vec<Duration>, extra: serde_json::Value) -> (f64, f64) {
    xs.sort();
    let (p50, p99) = (ms(percentile(&xs, 0.5)), ms(percentile(&xs, 0.99)));
    let mut line = serde_json::json!({ "measure": name, "n": xs.len(), "p50_ms": p50, "p99_ms": p99 });
    if let (Some(line), Some(extra)) = (line.as_object_mut(), extra.as_object()) {
        line.extend(extra.clone());
    }
    println!("{line}");
    (p50, p99)
}

#[tokio::main]
async fn main() {
    let spans: usize = arg("--spans").map_or(1_000_000, |s| s.parse().expect("--spans N"));
    let flush_spans: usize = arg("--flush-spans").map_or(100_000, |s| s.parse().expect("--flush-spans F"));
    let lookups: usize = arg("--lookups").map_or(200, |s| s.parse().expect("--lookups L"));
    let runs: usize = arg("--runs").map_or(3, |s| s.parse().expect("--runs R"));
    let tmp = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    let loaded = tracehouse_benches::load::load(tmp.path(), TENANT, spans, flush_spans).await;
    eprintln!(
        "loaded {} spans in {:.1}s",
        loaded.spans,
        started.elapsed().as_secs_f64()
    );
    let engine = Arc::new(QueryEngine::new(loaded.warehouse.clone(), QueryEngineConfig::default()).expect("engine"));
    let files = data_files(tmp.path());
    let base = tracehouse_benches::load::serve_tempo_api(engine.clone()).await;
    let client = tracehouse_benches::load::tenant_client(TENANT);

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut traces: Vec<(&Vec<u8>, &u64)> = loaded.trace_starts.iter().collect();
    traces.sort();
    traces.shuffle(&mut rng);
    traces.truncate(lookups);

    // The first lookup loads the tenant's trace-id index; report it apart.
    let first = Instant::now();
    let (id, _) = traces[0];
    let resp = client
        .get(format!("{base}/api/v2/traces/{}", hex::encode(id)))
        .header("Accept", "application/protobuf")
        .send()
        .await
        .expect("first lookup");
    assert!(resp.status().is_success());
    let found = TraceByIdResponse::decode(resp.bytes().await.expect("body")).expect("protobuf");
    assert!(
        found.trace.is_some_and(|t| !t.resource_spans.is_empty()),
        "first trace found"
    );
    let first_ms = ms(first.elapsed());

    let (mut plain, mut ranged, mut sql, mut scan) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut spans_seen, mut bytes_seen) = (0usize, 0u64);
    for (id, start_ns) in &traces {
        let hex = hex::encode(id);
        let start_s = **start_ns / 1_000_000_000;
        for (range, out) in [(None, &mut plain), (Some((start_s - 60, start_s + 60)), &mut ranged)] {
            let url = match range {
                None => format!("{base}/api/v2/traces/{hex}"),
                Some((s, e)) => format!("{base}/api/v2/traces/{hex}?start={s}&end={e}"),
            };
            let t = Instant::now();
            let resp = client
                .get(url)
                .header("Accept", "application/protobuf")
                .send()
                .await
                .expect("lookup");
            let status = resp.status();
            let body = resp.bytes().await.expect("body");
            out.push(t.elapsed());
            assert!(status.is_success(), "{status}: {}", String::from_utf8_lossy(&body));
            let resp = TraceByIdResponse::decode(body).expect("protobuf");
            let n: usize = resp
                .trace
                .iter()
                .flat_map(|t| &t.resource_spans)
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum();
            assert!(n > 0, "trace {hex} found (range {range:?})");
            if range.is_none() {
                spans_seen += n;
                bytes_seen += resp.metrics.map_or(0, |m| m.inspected_bytes);
            }
        }
        // SQL with `=` goes through the same index; the range form says the same but the
        // index does not see it, so DataFusion prunes by statistics in every file.
        for (sql_text, out) in [
            (format!("SELECT * FROM spans WHERE trace_id = '{hex}'"), &mut sql),
            (
                format!("SELECT * FROM spans WHERE trace_id >= '{hex}' AND trace_id <= '{hex}'"),
                &mut scan,
            ),
        ] {
            let t = Instant::now();
            let batches = engine.sql(TENANT, &sql_text).await.expect("sql");
            out.push(t.elapsed());
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            assert!(rows > 0, "sql finds {hex}: {sql_text}");
        }
    }
    let n = traces.len() as f64;
    let context = serde_json::json!({
        "spans": loaded.spans,
        "flush_spans": flush_spans,
        "data_files": files,
        "avg_spans_per_trace": (spans_seen as f64 / n * 10.0).round() / 10.0,
        "avg_bytes_inspected": (bytes_seen as f64 / n).round(),
    });
    println!(
        "{}",
        serde_json::json!({ "measure": "trace_by_id_first_lookup_ms", "ms": first_ms })
    );
    let (p50, _) = summary("trace_by_id", plain, context.clone());
    summary("trace_by_id_with_range", ranged, context.clone());
    summary("sql_where_trace_id_eq_indexed", sql, context.clone());
    let (peer50, _) = summary("sql_trace_id_range_no_index_peer", scan, context);
    println!(
        "{}",
        serde_json::json!({ "measure": "trace_by_id_vs_no_index_peer_p50", "ratio": (p50 / peer50 * 100.0).round() / 100.0 })
    );

    for (name, q) in SEARCHES {
        let mut times = Vec::new();
        let mut found = 0;
        for _ in 0..runs {
            let t = Instant::now();
            let resp = client
                .get(format!("{base}/api/search"))
                .query(&[("q", *q), ("limit", "20"), ("spss", "3")])
                .send()
                .await
                .expect("search");
            assert!(resp.status().is_success(), "{name}");
            let body: SearchResponse = serde_json::from_slice(&resp.bytes().await.expect("body")).expect("json");
            times.push(t.elapsed());
            found = body.traces.len();
        }
        times.sort();
        println!(
            "{}",
            serde_json::json!({ "measure": "search", "shape": name, "traceql": q, "median_ms": ms(times[times.len() / 2]), "traces": found, "runs": runs })
        );
    }
}

/// Parquet data files under `dir` (the trace-id index's sidecars left out).
fn data_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                if !path.ends_with(tracehouse_warehouse::trace_index::INDEX_DIR) {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "parquet") {
                n += 1;
            }
        }
    }
    n
}
