//! Executes every notebook in `notebooks/` headlessly (nbclient) against the real binary fed
//! with an hour of tracegen data that holds an injected error spike; fails when any cell
//! fails, when a notebook draws fewer plots than it should, or when its findings disagree with
//! the data (span count, the spike's window).
//!
//! `TRACEHOUSE_NOTEBOOKS_WRITE=1` saves the executed notebooks, plots included, over the
//! committed ones (that is how their outputs are made).

mod common;

use common::TestServer;
use tracehouse_benches::send::Protocol;
use tracehouse_benches::tracegen::{TraceGen, TraceGenConfig};

const MINUTE_NS: u64 = 60_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notebooks_run_against_tracegen_data() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), "").await;
    // The hour starts a second before a minute boundary, so the notebooks' first one-minute
    // bucket holds a single trace: a partial bucket must not pass for the spike.
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let now = wall - wall % MINUTE_NS - 1_000_000_000;
    // An hour of traffic at 2% failing calls, and five minutes, 25 to 20 minutes ago, at 30%.
    let hour = TraceGen::new(TraceGenConfig {
        seed: 61,
        start_unix_nano: now - 60 * MINUTE_NS,
        trace_interval_ns: 1_800_000_000,
        error_rate: 0.02,
    });
    let spike_start = now - 25 * MINUTE_NS;
    let spike = TraceGen::new(TraceGenConfig {
        seed: 62,
        start_unix_nano: spike_start,
        trace_interval_ns: 1_000_000_000,
        error_rate: 0.3,
    });
    let mut sender = server.sender(Protocol::HttpProtobuf, false).await;
    for (mut generator, spans) in [(hour, 27_000), (spike, 4_000)] {
        let mut sent = 0;
        while sent < spans {
            let (req, n) = generator.request(1_000);
            assert_eq!(sender.send(&req, Some("shop")).await.unwrap().status, 200);
            sent += n;
        }
        // Some spans in Parquet files, the rest live: the notebooks read both.
        let flushed = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/flush", server.http_port))
            .send()
            .await
            .unwrap();
        assert!(flushed.status().is_success());
    }
    let total = server.span_count("shop").await;

    let notebooks = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../notebooks");
    let mut command = std::process::Command::new("python3");
    command
        .arg(notebooks.join("execute.py"))
        .env(
            "TRACEHOUSE_FLIGHT_URL",
            format!("grpc://127.0.0.1:{}", server.flight_port),
        )
        .env("TRACEHOUSE_TENANT", "shop");
    if std::env::var("TRACEHOUSE_NOTEBOOKS_WRITE").is_ok_and(|v| v == "1") {
        command.arg("--write");
    } else {
        command.arg("--out").arg(dir.path().join("executed"));
    }
    let out = tokio::task::spawn_blocking(move || command.output().expect("python3"))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "a notebook failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: std::collections::BTreeMap<String, serde_json::Value> = stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("one JSON line per notebook");
            (v["notebook"].as_str().unwrap().to_string(), v)
        })
        .collect();
    assert_eq!(
        results.keys().collect::<Vec<_>>(),
        ["errors_and_dependencies.ipynb", "latency.ipynb"]
    );

    let latency = &results["latency.ipynb"];
    assert_eq!(
        latency["images"], 5,
        "percentiles over time, TraceQL metrics p99, endpoints, waterfall, heatmap: {latency}"
    );
    assert_eq!(latency["findings"]["spans"], total.to_string());
    let slowest = latency["findings"]["slowest_trace"].as_str().unwrap();
    let pg = server.pg("shop").await;
    // The TraceQL metrics cell has a p99 series for every service with server spans.
    let servers: i64 = pg
        .query_one(
            "SELECT count(DISTINCT service_name) FROM spans WHERE kind = 'server'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(latency["findings"]["metrics_series"], servers.to_string(), "{latency}");
    let slowest_root: i64 = pg
        .query_one("SELECT max(duration_ns) FROM spans WHERE parent_span_id IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    let of_trace: i64 = pg
        .query_one("SELECT max(duration_ns) FROM spans WHERE trace_id = $1", &[&slowest])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        of_trace, slowest_root,
        "the slowest trace is the one with the longest root"
    );

    let errors = &results["errors_and_dependencies.ipynb"];
    assert_eq!(errors["images"], 4, "error rate, spike, graph, waterfall: {errors}");
    // The spike found is the injected one: its window overlaps 25 to 20 minutes ago.
    let parse = |k: &str| -> u64 {
        let text = errors["findings"][k].as_str().unwrap();
        let t = time_of(text);
        assert!(t > 0, "{k}: {text}");
        t
    };
    let (found_start, found_end) = (parse("spike_start"), parse("spike_end"));
    assert!(
        found_start < spike_start + 5 * MINUTE_NS && found_end > spike_start,
        "spike found at {found_start}..{found_end}, injected at {spike_start}..+5min: {errors}"
    );
    assert!(
        errors["findings"]["spike_traces"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 10
    );
    // The structural TraceQL query over plain Flight found front-end errors caused by databases.
    assert!(
        errors["findings"]["db_caused_traces"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    let edges: usize = errors["findings"]["dependency_edges"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let service_edges: i64 = pg
        .query_one(
            "SELECT count(*) FROM (SELECT DISTINCT p.service_name, c.service_name FROM spans c \
             JOIN spans p ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id \
             WHERE c.service_name <> p.service_name)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(edges as i64 > service_edges, "service edges plus databases and topics");
}

/// Unix nanoseconds of an RFC 3339 time.
fn time_of(text: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
        .timestamp_nanos_opt()
        .unwrap() as u64
}
