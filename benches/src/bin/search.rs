//! Search side by side with Tempo: the same tracegen spans go to a real warehouse in process
//! (Delta tables on local disk, flushed into `--files` data files) and, when `--tempo` is
//! given, to a running Tempo over OTLP/HTTP; then both answer the same `/api/search` calls
//! (`limit=20&spss=3`, the last hour), median of `--runs`, and a markdown table with the ratio
//! Tempo ms ÷ tracehouse ms is printed (above 1: tracehouse is faster).
//!
//! Usage: search [--spans N] [--files F] [--runs R] [--only NAME | --query Q] [--metrics] [--compact]
//!               [--tempo http://127.0.0.1:3300 --tempo-otlp http://127.0.0.1:4418] [--tempo-wait-s S]
//! `--only` times the shapes whose name contains NAME; `--metrics` prints each search's
//! response metrics (inspected traces, spans, bytes, jobs) to stderr. A second table times
//! TraceQL metrics query ranges (one-minute steps over the same hour) on both servers, next
//! to the SQL that computes the same buckets.
//! `benches/search.sh` starts Tempo (a binary built by shared/tempo-oracle) and runs this.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracehouse_benches::load::{each_request, load_with, serve_tempo_api, tenant_client};
use tracehouse_benches::send::{Protocol, Sender};
use tracehouse_benches::tracegen::TraceGenConfig;
use tracehouse_sql::{QueryEngine, QueryEngineConfig};
use tracehouse_tempo_api::tempopb::SearchResponse;
use tracehouse_warehouse::Warehouse;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TENANT: &str = "bench";

/// The shapes of issue 15's table, in its order, two rare attribute matches, then three in
/// most-recent mode.
const SHAPES: &[(&str, &str)] = &[
    ("all", "{ }"),
    ("intrinsic", "{ status = error }"),
    (
        "dedicated + duration",
        r#"{ resource.service.name = "checkout" && duration > 50ms }"#,
    ),
    ("typed attribute", "{ span.http.response.status_code >= 500 }"),
    ("unscoped regex", r#"{ .db.system =~ "postgres.*" }"#),
    ("trace-level", r#"{ trace:rootService = "frontend" && status = error }"#),
    (
        "and",
        r#"{ kind = server && resource.service.name = "payment" } && { status = error }"#,
    ),
    ("child", "{ kind = server } > { status = error }"),
    (
        "descendant",
        r#"{ resource.service.name = "frontend" } >> { status = error }"#,
    ),
    ("pipeline", "{ status = error } | count() > 2"),
    (
        "by + avg",
        "{ kind = server } | by(resource.service.name) | avg(duration) > 100ms",
    ),
    ("no match", r#"{ span.user.id = "nobody" }"#),
    ("rare attribute", r#"{ span.user.id = "user-4242" }"#),
    (
        "rare attribute + duration",
        "{ span.http.response.status_code = 404 && duration > 20ms }",
    ),
    ("most recent: all", "{ } with(most_recent=true)"),
    ("most recent: intrinsic", "{ status = error } with(most_recent=true)"),
    (
        "most recent: trace-level",
        r#"{ trace:rootService = "frontend" && status = error } with(most_recent=true)"#,
    ),
];

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Sends `req` to Tempo, retrying while it pushes back.
async fn send_to_tempo(
    sender: &mut Sender,
    req: &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
) {
    for attempt in 0..100 {
        let reply = sender.send(req, Some(TENANT)).await.expect("send to tempo");
        if reply.status == 200 {
            return;
        }
        assert!(
            matches!(reply.status, 429 | 503) && attempt < 99,
            "tempo refused spans: {} {}",
            reply.status,
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Loads `spans` tracegen spans into a warehouse under `dir` in `files` flushes, then into Tempo.
async fn load(dir: &std::path::Path, spans: usize, files: usize, tempo_otlp: Option<&str>) -> Arc<Warehouse> {
    let mut tempo = match tempo_otlp {
        Some(url) => Some(
            Sender::connect(Protocol::HttpProtobuf, url, false)
                .await
                .expect("tempo otlp"),
        ),
        None => None,
    };
    // Tempo takes spans from the last hour only (its ingestion slack).
    let config = TraceGenConfig {
        start_unix_nano: now_ns() - 600_000_000_000,
        ..TraceGenConfig::default()
    };
    // No files: every span stays live (unflushed).
    let flush_spans = match files {
        0 => 0,
        _ => spans.div_ceil(files),
    };
    // Tempo gets the same requests after tracehouse has them (flushed as asked), so that the
    // two never hold the spans in memory at once.
    let loaded = load_with(dir, TENANT, spans, flush_spans, config.clone()).await;
    eprintln!("loaded {} spans", loaded.spans);
    if let Some(tempo) = tempo.as_mut() {
        each_request(spans, flush_spans, config, async |req, _| {
            send_to_tempo(tempo, req).await
        })
        .await;
    }
    loaded.warehouse
}

/// Median ms of `runs` searches of `q` at `base`, and the traces the last one returned.
async fn time_search(client: &reqwest::Client, base: &str, q: &str, runs: usize, window: (u64, u64)) -> (f64, usize) {
    let mut times = Vec::with_capacity(runs);
    let mut traces = 0;
    let (start, end) = (window.0.to_string(), window.1.to_string());
    for _ in 0..runs {
        let t = Instant::now();
        let resp = client
            .get(format!("{base}/api/search"))
            .query(&[
                ("q", q),
                ("limit", "20"),
                ("spss", "3"),
                ("start", &start),
                ("end", &end),
            ])
            .send()
            .await
            .expect("search");
        let status = resp.status();
        let body = resp.bytes().await.expect("body");
        times.push(t.elapsed());
        assert!(
            status.is_success(),
            "{base} {q}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        let parsed: SearchResponse = serde_json::from_slice(&body).expect("search json");
        traces = parsed.traces.len();
        if std::env::args().any(|a| a == "--metrics") && times.len() == runs {
            eprintln!("{q}: {:?}", parsed.metrics);
        }
    }
    (median_ms(times), traces)
}

/// `--compact`: one upkeep pass merging every file into target-size files before the
/// searches; prints what it did and how fast.
async fn compact(warehouse: &Warehouse, spans: usize) {
    let config = tracehouse_warehouse::upkeep::UpkeepConfig {
        min_open_window_files: 2,
        ..Default::default()
    };
    let started = Instant::now();
    let r = warehouse
        .upkeep_tenant(TENANT, &config, false)
        .await
        .expect("compaction");
    let s = started.elapsed().as_secs_f64();
    println!(
        "compaction: {} files into {} in {s:.1}s ({:.0} spans/s; {} -> {} bytes, {:.1} bytes/span)\n",
        r.files_compacted,
        r.files_written,
        r.rows_read as f64 / s,
        r.bytes_read,
        r.bytes_written,
        r.bytes_written as f64 / spans.max(1) as f64,
    );
}

/// The median of `times` in ms, to a tenth.
fn median_ms(mut times: Vec<Duration>) -> f64 {
    times.sort();
    (times[times.len() / 2].as_secs_f64() * 1e4).round() / 10.0
}

/// Median ms of `runs` GETs of `url` (after one warm-up): a trace by id.
async fn time_get(client: &reqwest::Client, url: &str, runs: usize) -> f64 {
    let mut times = Vec::with_capacity(runs);
    for run in 0..=runs {
        let t = Instant::now();
        let resp = client.get(url).send().await.expect("get");
        let status = resp.status();
        resp.bytes().await.expect("body");
        assert!(status.is_success(), "{url}: {status}");
        if run > 0 {
            times.push(t.elapsed());
        }
    }
    median_ms(times)
}

/// Median ms of `runs` runs of `sql` on the engine (after one warm-up).
async fn time_sql(engine: &QueryEngine, sql: &str, runs: usize) -> f64 {
    let mut times = Vec::with_capacity(runs);
    for run in 0..=runs {
        let t = Instant::now();
        engine.sql(TENANT, sql).await.expect("sql");
        if run > 0 {
            times.push(t.elapsed());
        }
    }
    median_ms(times)
}

/// What every table times: the servers, the search window and the runs.
struct Bench {
    client: reqwest::Client,
    ours: String,
    tempo: Option<String>,
    engine: Arc<QueryEngine>,
    window: (u64, u64),
    runs: usize,
}

/// SQL over the same spans (Tempo has none): a count by service and one trace's spans.
const SQL_SHAPES: &[(&str, &str)] = &[
    (
        "SQL: spans by service",
        "SELECT service_name, count(*) FROM spans GROUP BY service_name",
    ),
    (
        "SQL: errors by service, p99",
        "SELECT service_name, approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ns) \
         FROM spans WHERE status_code = 'error' GROUP BY service_name",
    ),
];

/// The markdown table of `shapes` on both servers, then trace by id and the SQL shapes.
async fn print_table(bench: &Bench, shapes: &[(&str, String)]) {
    println!("| shape | query | Tempo ms | tracehouse ms | Tempo ÷ tracehouse | traces (Tempo / tracehouse) |");
    println!("|---|---|---|---|---|---|");
    let row = |name: &str, q: &str, tempo_ms: Option<f64>, ms: f64, counts: String| {
        let ratio = tempo_ms.map_or("–".into(), |t| format!("{:.2}", t / ms.max(0.001)));
        let tempo_ms = tempo_ms.map_or("–".into(), |t| t.to_string());
        let q = q.replace('|', "\\|");
        println!("| {name} | `{q}` | {tempo_ms} | {ms} | {ratio} | {counts} |");
    };
    for (name, q) in shapes {
        // One warm-up each, as a dashboard refresh finds caches warm.
        time_search(&bench.client, &bench.ours, q, 1, bench.window).await;
        let (ms, n) = time_search(&bench.client, &bench.ours, q, bench.runs, bench.window).await;
        let (tempo_ms, tempo_n) = match &bench.tempo {
            Some(base) => {
                time_search(&bench.client, base, q, 1, bench.window).await;
                let (t, n) = time_search(&bench.client, base, q, bench.runs, bench.window).await;
                (Some(t), n.to_string())
            }
            None => (None, "–".into()),
        };
        row(name, q, tempo_ms, ms, format!("{tempo_n} / {n}"));
    }
    let first = bench
        .engine
        .sql(TENANT, "SELECT min(trace_id) FROM spans")
        .await
        .expect("a trace");
    let ids = arrow::compute::cast(first[0].column(0), &arrow::datatypes::DataType::Utf8).expect("text");
    let ids = arrow::array::AsArray::as_string::<i32>(&ids);
    if arrow::array::Array::len(ids) > 0 {
        let id = ids.value(0);
        let path = format!("/api/v2/traces/{id}");
        let ms = time_get(&bench.client, &format!("{}{path}", bench.ours), bench.runs).await;
        let tempo_ms = match &bench.tempo {
            Some(base) => Some(time_get(&bench.client, &format!("{base}{path}"), bench.runs).await),
            None => None,
        };
        row("trace by id (no range)", &path, tempo_ms, ms, "1 / 1".into());
    }
    for (name, sql) in SQL_SHAPES {
        let ms = time_sql(&bench.engine, sql, bench.runs).await;
        row(name, sql, None, ms, "–".into());
    }
}

/// TraceQL metrics shapes (issue 18) and the SQL that answers the same over the window
/// (`{S}`, `{E}`: its ns bounds), one-minute steps.
const METRICS_SHAPES: &[(&str, &str, &str)] = &[
    (
        "metrics: rate",
        "{ } | rate()",
        "SELECT (start_time_unix_nano - {S} - 1) / 60000000000 AS b, count(*) / 60.0 FROM spans \
         WHERE start_time_unix_nano > {S} AND start_time_unix_nano <= {E} GROUP BY b",
    ),
    (
        "metrics: count by service",
        "{ } | count_over_time() by (resource.service.name)",
        "SELECT service_name, (start_time_unix_nano - {S} - 1) / 60000000000 AS b, count(*) FROM spans \
         WHERE start_time_unix_nano > {S} AND start_time_unix_nano <= {E} GROUP BY 1, 2",
    ),
    (
        "metrics: avg server duration by service",
        "{ kind = server } | avg_over_time(duration) by (resource.service.name)",
        "SELECT service_name, (start_time_unix_nano - {S} - 1) / 60000000000 AS b, avg(duration_ns) / 1e9 \
         FROM spans WHERE kind = 'server' AND start_time_unix_nano > {S} AND start_time_unix_nano <= {E} \
         GROUP BY 1, 2",
    ),
    (
        "metrics: server duration p50/p90/p99 by service",
        "{ kind = server } | quantile_over_time(duration, .5, .9, .99) by (resource.service.name)",
        "SELECT service_name, (start_time_unix_nano - {S} - 1) / 60000000000 AS b, \
         approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ns), \
         approx_percentile_cont(0.9) WITHIN GROUP (ORDER BY duration_ns), \
         approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ns) \
         FROM spans WHERE kind = 'server' AND start_time_unix_nano > {S} AND start_time_unix_nano <= {E} \
         GROUP BY 1, 2",
    ),
    (
        "metrics: compare errors with the rest",
        "{ } | compare({ status = error })",
        // Span attributes only: each value's spans per side and step.
        "SELECT s, k, v, b, count(*) FROM (SELECT status_code = 'error' AS s, \
         (start_time_unix_nano - {S} - 1) / 60000000000 AS b, unnest(map_keys(span_attributes)) AS k, \
         unnest(map_values(span_attributes)) AS v FROM spans \
         WHERE start_time_unix_nano > {S} AND start_time_unix_nano <= {E}) GROUP BY 1, 2, 3, 4",
    ),
    (
        "metrics: duration histogram",
        "{ } | histogram_over_time(duration)",
        "SELECT power(2, ceil(log2(CAST(duration_ns AS DOUBLE)))) / 1e9 AS le, \
         (start_time_unix_nano - {S} - 1) / 60000000000 AS b, count(*) FROM spans \
         WHERE duration_ns >= 2 AND start_time_unix_nano > {S} AND start_time_unix_nano <= {E} GROUP BY 1, 2",
    ),
];

/// Median ms of `runs` metrics query ranges of `q` over `window` (unix s) in one-minute steps
/// on `base`, and the series of the last answer; `None` when the server refuses it.
async fn time_metrics(
    client: &reqwest::Client,
    base: &str,
    q: &str,
    runs: usize,
    window: (u64, u64),
) -> Option<(f64, usize)> {
    let url = format!("{base}/api/metrics/query_range");
    let (start, end) = (window.0.to_string(), window.1.to_string());
    let params = [
        ("q", q),
        ("start", start.as_str()),
        ("end", end.as_str()),
        ("step", "60s"),
    ];
    let mut times = Vec::with_capacity(runs);
    let mut series = 0;
    for run in 0..=runs {
        let t = Instant::now();
        let resp = client.get(&url).query(&params).send().await.ok()?;
        let ok = resp.status().is_success();
        let body = resp.bytes().await.ok()?;
        if !ok {
            eprintln!("{base}: {q}: {}", String::from_utf8_lossy(&body));
            return None;
        }
        let parsed: serde_json::Value = serde_json::from_slice(&body).ok()?;
        series = parsed["series"].as_array().map_or(0, Vec::len);
        if run > 0 {
            times.push(t.elapsed());
        }
    }
    Some((median_ms(times), series))
}

/// The markdown table of the metrics shapes on both servers, and their SQL on the engine.
async fn print_metrics_table(bench: &Bench, only: &str) {
    println!(
        "| shape | query | Tempo ms | tracehouse ms | Tempo ÷ tracehouse | series (Tempo / tracehouse) | same in SQL, ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    let s_ns = bench.window.0 * 1_000_000_000;
    let e_ns = bench.window.1 * 1_000_000_000;
    for (name, q, sql) in METRICS_SHAPES.iter().filter(|(n, ..)| n.contains(only)) {
        let ours = time_metrics(&bench.client, &bench.ours, q, bench.runs, bench.window).await;
        let tempo = match &bench.tempo {
            Some(base) => time_metrics(&bench.client, base, q, bench.runs, bench.window).await,
            None => None,
        };
        let sql = sql.replace("{S}", &s_ns.to_string()).replace("{E}", &e_ns.to_string());
        let sql_ms = time_sql(&bench.engine, &sql, bench.runs).await;
        let show = |m: Option<(f64, usize)>| {
            m.map_or(("–".to_string(), "–".to_string()), |(ms, n)| {
                (ms.to_string(), n.to_string())
            })
        };
        let ratio = match (tempo, ours) {
            (Some((t, _)), Some((o, _))) => format!("{:.2}", t / o.max(0.001)),
            _ => "–".into(),
        };
        let ((tempo_ms, tempo_n), (ms, n)) = (show(tempo), show(ours));
        let q = q.replace('|', "\\|");
        println!("| {name} | `{q}` | {tempo_ms} | {ms} | {ratio} | {tempo_n} / {n} | {sql_ms} |");
    }
}

#[tokio::main]
async fn main() {
    let spans: usize = arg("--spans").map_or(500_000, |s| s.parse().expect("--spans N"));
    let files: usize = arg("--files").map_or(2, |s| s.parse().expect("--files F"));
    let runs: usize = arg("--runs").map_or(5, |s| s.parse().expect("--runs R"));
    let tempo = arg("--tempo");
    // Only the shapes whose name contains this.
    let only = arg("--only").unwrap_or_default();
    let tempo_otlp = arg("--tempo-otlp");
    let wait_s: u64 = arg("--tempo-wait-s").map_or(45, |s| s.parse().expect("--tempo-wait-s S"));
    let tmp = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    let warehouse = load(tmp.path(), spans, files, tempo_otlp.as_deref()).await;
    eprintln!("loaded in {:.1}s", started.elapsed().as_secs_f64());
    let compact_after = std::env::args().any(|a| a == "--compact");
    let engine = Arc::new(QueryEngine::new(warehouse.clone(), QueryEngineConfig::default()).expect("engine"));
    let ours = serve_tempo_api(engine.clone()).await;
    if tempo.is_some() {
        // Tempo cuts blocks after a few seconds and reads only its backend for older data.
        eprintln!("waiting {wait_s}s for Tempo's blocks");
        tokio::time::sleep(Duration::from_secs(wait_s)).await;
    }
    let now_s = now_ns() / 1_000_000_000;
    let bench = Bench {
        client: tenant_client(TENANT),
        ours,
        tempo,
        engine,
        window: (now_s - 3600, now_s),
        runs,
    };
    // `--query Q` times Q instead of the shapes.
    let asked = arg("--query").map(|q| vec![("query", q)]);
    let shapes: Vec<(&str, String)> = asked.unwrap_or_else(|| {
        let chosen = SHAPES.iter().filter(|(name, _)| name.contains(only.as_str()));
        chosen.map(|(name, q)| (*name, q.to_string())).collect()
    });
    println!("spans {spans}, tracehouse data files {files}, median of {runs}\n");
    print_table(&bench, &shapes).await;
    if arg("--query").is_none() {
        println!();
        print_metrics_table(&bench, &only).await;
    }
    if compact_after {
        println!();
        compact(&warehouse, spans).await;
        println!("after compaction, median of {runs}\n");
        print_table(&bench, &shapes).await;
    }
}
