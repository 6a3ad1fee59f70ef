//! Jaeger and Zipkin receivers, per-tenant limits from the overrides (reloaded while the server
//! runs) and Tempo's metric names, end to end: the real binary, and real clients (OpenTelemetry's
//! Python Jaeger Thrift and gRPC exporters, the Jaeger IDL's Thrift agent client, OpenTelemetry's
//! Zipkin JSON and protobuf exporters, installed by the test script into
//! `~/.cache/tracehouse-tools/pyclients`; tonic's client for the Jaeger gRPC API).

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{TestServer, free_ports};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

/// The Python that has the Jaeger and Zipkin client libraries.
fn python() -> String {
    std::env::var("TRACEHOUSE_PYCLIENTS").unwrap_or_else(|_| {
        let home = std::env::var("HOME").expect("HOME");
        format!("{home}/.cache/tracehouse-tools/pyclients/bin/python")
    })
}

/// Sends the client script's trace over `protocol`; its trace id.
fn send_with_client(protocol: &str, endpoint: &str, tenant: &str, service: &str) -> String {
    // Read when the test runs: a binary built in another checkout sharing the target dir
    // must use this checkout's script.
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    let script = format!("{dir}/tests/clients/jaeger_zipkin.py");
    let out = Command::new(python())
        .args([script.as_str(), protocol, endpoint, tenant, service])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}; scripts/test installs the Python clients", python()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{protocol} client failed: {stderr}");
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(id.len(), 32, "{protocol}: trace id {id:?}; stderr: {stderr}");
    id
}

const PROTOCOLS: [&str; 8] = [
    "otlp-http",
    "jaeger-thrift-http",
    "jaeger-thrift-compact",
    "jaeger-thrift-binary",
    "jaeger-grpc",
    "zipkin-json",
    "zipkin-v1-json",
    "zipkin-proto",
];

struct Ports {
    thrift_http: u16,
    grpc: u16,
    compact: u16,
    binary: u16,
    zipkin: u16,
}

fn receivers_yaml(p: &Ports) -> String {
    format!(
        "distributor:\n  receivers:\n    jaeger:\n      protocols:\n\
         \x20       thrift_http: {{endpoint: 127.0.0.1:{}}}\n\
         \x20       grpc: {{endpoint: 127.0.0.1:{}}}\n\
         \x20       thrift_compact: {{endpoint: 127.0.0.1:{}}}\n\
         \x20       thrift_binary: {{endpoint: 127.0.0.1:{}}}\n\
         \x20   zipkin: {{endpoint: 127.0.0.1:{}, parse_string_tags: true}}\n",
        p.thrift_http, p.grpc, p.compact, p.binary, p.zipkin
    )
}

async fn start_with_receivers(dir: &std::path::Path, extra: &str) -> (TestServer, Ports) {
    let [thrift_http, grpc, compact, binary, zipkin] = free_ports();
    let ports = Ports {
        thrift_http,
        grpc,
        compact,
        binary,
        zipkin,
    };
    let yaml = format!("{}{extra}", receivers_yaml(&ports));
    (TestServer::start_in(dir, &yaml).await, ports)
}

fn endpoint(server: &TestServer, ports: &Ports, protocol: &str) -> String {
    let port = match protocol {
        "otlp-http" => server.otlp_http_port,
        "jaeger-thrift-http" => ports.thrift_http,
        "jaeger-thrift-compact" => ports.compact,
        "jaeger-thrift-binary" => ports.binary,
        "jaeger-grpc" => ports.grpc,
        _ => ports.zipkin,
    };
    format!("127.0.0.1:{port}")
}

/// Trace ids a TraceQL search of `tenant` finds.
async fn traceql(server: &TestServer, tenant: &str, q: &str) -> Vec<String> {
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/search", server.http()))
        .query(&[("q", q), ("limit", "100")])
        .header("X-Scope-OrgID", tenant)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let traces = body["traces"].as_array().cloned().unwrap_or_default();
    let mut ids: Vec<String> = traces
        .iter()
        .map(|t| t["traceID"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// The rows SQL gives of a trace, a column a field: what a span's OTLP twin must match.
async fn sql_view(server: &TestServer, tenant: &str, trace_id: &str) -> Vec<Vec<String>> {
    let client = server.pg(tenant).await;
    let sql = "SELECT name, kind, status_code, status_message, service_name, scope_name, scope_version, \
               CAST(parent_span_id <> '' AS VARCHAR), db_system, CAST(http_status_code AS VARCHAR), \
               attr(span_attributes, 'db.rows'), attr(span_attributes, 'db.cost'), \
               attr(span_attributes, 'db.cached'), events[1]['name'], \
               CAST(cardinality(links) AS VARCHAR), CAST(end_time_unix_nano > start_time_unix_nano AS VARCHAR) \
               FROM spans WHERE trace_id = $1 ORDER BY name";
    let rows = client.query(sql, &[&trace_id]).await.unwrap();
    (rows.iter())
        .map(|r| {
            (0..r.len())
                .map(|i| r.get::<_, Option<String>>(i).unwrap_or_else(|| "NULL".into()))
                .collect()
        })
        .collect()
}

/// Where a protocol's spans go: UDP datagrams carry no tenant.
fn tenant_of(protocol: &str) -> &'static str {
    match protocol {
        "jaeger-thrift-compact" | "jaeger-thrift-binary" => "single-tenant",
        _ => "shop",
    }
}

/// Columns of [`sql_view`] a format cannot carry: Zipkin has no links, Zipkin v1 no kind.
fn lost_in(protocol: &str) -> &'static [usize] {
    const KIND: usize = 1;
    const LINKS: usize = 14;
    match protocol {
        "zipkin-v1-json" => &[KIND, LINKS],
        p if p.starts_with("zipkin") => &[LINKS],
        _ => &[],
    }
}

async fn wait_for_spans(server: &TestServer, tenant: &str, trace_id: &str, spans: i64) {
    let client = server.pg(tenant).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let row = client
            .query_one("SELECT count(*) FROM spans WHERE trace_id = $1", &[&trace_id])
            .await
            .unwrap();
        if row.get::<_, i64>(0) >= spans {
            return;
        }
        assert!(Instant::now() < deadline, "trace {trace_id} did not arrive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_is_found_by_the_sql_and_traceql_of_its_otlp_twin() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ports) = start_with_receivers(dir.path(), "").await;
    let mut views = BTreeMap::new();
    for protocol in PROTOCOLS {
        let service = format!("svc-{protocol}");
        let tenant = tenant_of(protocol);
        let id = send_with_client(protocol, &endpoint(&server, &ports, protocol), "shop", &service);
        wait_for_spans(&server, tenant, &id, 2).await;
        views.insert(protocol, (id, service));
    }
    let (otlp_id, _) = &views["otlp-http"];
    let twin = sql_view(&server, "shop", otlp_id).await;
    assert_eq!(twin.len(), 2, "{twin:?}");
    for (protocol, (id, service)) in &views {
        let tenant = tenant_of(protocol);
        let view = sql_view(&server, tenant, id).await;
        let comparable = |rows: &[Vec<String>]| -> Vec<Vec<String>> {
            (rows.iter())
                .map(|r| {
                    (r.iter().enumerate())
                        .map(|(i, v)| match lost_in(protocol).contains(&i) {
                            true => "-".to_string(),
                            // Zipkin's protobuf and v1 exporters lower-case span names.
                            false if i == 0 => v.to_lowercase(),
                            false => v.replace(service.as_str(), "SVC").replace("svc-otlp-http", "SVC"),
                        })
                        .collect()
                })
                .collect()
        };
        assert_eq!(comparable(&view), comparable(&twin), "{protocol} against its OTLP twin");
        let kind = |k: &str| match *protocol {
            "zipkin-v1-json" => String::new(),
            _ => format!(" && kind = {k}"),
        };
        let queries = [
            format!(
                "{{ resource.service.name = \"{service}\"{} && status = error && span.db.system = \"postgresql\" }}",
                kind("client")
            ),
            format!("{{ resource.service.name = \"{service}\" && span.db.rows = 42 && span.db.cached = true }}"),
            format!(
                "{{ resource.service.name = \"{service}\"{} }} > {{ name =~ \"(?i)select cart\" }}",
                kind("server")
            ),
            format!("{{ resource.service.name = \"{service}\" && event:name = \"retry\" }}"),
            format!("{{ resource.service.name = \"{service}\" && span.http.status_code = 404 }}"),
        ];
        for q in &queries {
            assert_eq!(traceql(&server, tenant, q).await, vec![id.clone()], "{protocol}: {q}");
        }
    }
    let metrics = server.metrics_text().await;
    for (receiver, transport) in [
        ("otlp", "http"),
        ("jaeger", "collector_http"),
        ("jaeger", "grpc"),
        ("jaeger", "udp_thrift_compact"),
        ("jaeger", "udp_thrift_binary"),
        ("zipkin", "http_v2_json"),
        ("zipkin", "http_v1_json"),
    ] {
        // Tempo's labels: `jaeger/jaeger_receiver`, the Collector's transport names.
        let series = format!(
            "tempo_receiver_accepted_spans{{receiver=\"{receiver}/{receiver}_receiver\",transport=\"{transport}\"}}"
        );
        assert!(labelled(&metrics, &series) >= 2.0, "{series} in:\n{metrics}");
    }
    for (tenant, spans) in [("shop", 12.0), ("single-tenant", 4.0)] {
        let received = format!("tempo_distributor_spans_received_total{{tenant=\"{tenant}\"}}");
        assert_eq!(labelled(&metrics, &received), spans, "traces of two spans");
    }
}

/// The value of the series `series` (name and labels, as exposed) in `metrics`, 0 if absent.
fn labelled(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// A malformed body: port, path, content type, body, the status expected, a word its message has.
type BadBody = (u16, &'static str, &'static str, Vec<u8>, u16, &'static str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_jaeger_and_zipkin_input_gets_a_clear_error_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ports) = start_with_receivers(dir.path(), "").await;
    let http = reqwest::Client::new();
    let post = |port: u16, path: &str, content_type: &str, body: Vec<u8>| {
        http.post(format!("http://127.0.0.1:{port}{path}"))
            .header("Content-Type", content_type)
            .header("X-Scope-OrgID", "bad")
            .body(body)
            .send()
    };
    // A Thrift list declaring a billion spans, in a 40-byte body: refused before allocation.
    let mut huge_list = vec![0x0c, 0x00, 0x01, 0x0b, 0x00, 0x01, 0, 0, 0, 1, b's', 0x00];
    huge_list.extend([0x0f, 0x00, 0x02, 0x0c, 0x3b, 0x9a, 0xca, 0x00]);
    let cases: Vec<BadBody> = vec![
        (
            ports.thrift_http,
            "/api/traces",
            "application/x-thrift",
            b"not thrift at all".to_vec(),
            400,
            "jaeger thrift",
        ),
        (
            ports.thrift_http,
            "/api/traces",
            "application/x-thrift",
            huge_list,
            400,
            "jaeger thrift",
        ),
        (
            ports.thrift_http,
            "/api/traces",
            "application/json",
            b"{}".to_vec(),
            415,
            "unsupported content type",
        ),
        (
            ports.zipkin,
            "/api/v2/spans",
            "application/json",
            b"[{\"traceId\": 5}]".to_vec(),
            400,
            "zipkin json",
        ),
        (
            ports.zipkin,
            "/api/v2/spans",
            "application/json",
            b"[{\"traceId\":\"zz\",\"id\":\"1\"}]".to_vec(),
            400,
            "zipkin json",
        ),
        (
            ports.zipkin,
            "/api/v2/spans",
            "application/x-protobuf",
            vec![0x0a, 0xff, 0xff, 0xff],
            400,
            "zipkin protobuf",
        ),
        (
            ports.zipkin,
            "/api/v1/spans",
            "application/json",
            b"{\"not\": \"a list\"}".to_vec(),
            400,
            "zipkin v1 json",
        ),
    ];
    for (port, path, content_type, body, status, says) in cases {
        let r = post(port, path, content_type, body).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{path} {content_type}");
        let text = r.text().await.unwrap();
        assert!(text.contains(says), "{path}: {text}");
    }
    for port in [ports.compact, ports.binary] {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .send_to(b"\x82\x21\x01\x09emitBatch\xff\xff", ("127.0.0.1", port))
            .unwrap();
        socket.send_to(&[0xff; 300], ("127.0.0.1", port)).unwrap();
    }
    let mut client = tracehouse_ingest::jaeger::api_v2::collector_service_client::CollectorServiceClient::connect(
        format!("http://127.0.0.1:{}", ports.grpc),
    )
    .await
    .unwrap();
    let bad_span = tracehouse_ingest::jaeger::api_v2::Span {
        trace_id: vec![1, 2, 3],
        span_id: vec![1; 8],
        operation_name: "x".into(),
        ..Default::default()
    };
    let mut request = tonic::Request::new(tracehouse_ingest::jaeger::api_v2::PostSpansRequest {
        batch: Some(tracehouse_ingest::jaeger::api_v2::Batch {
            spans: vec![bad_span],
            process: None,
        }),
    });
    request.metadata_mut().insert("x-scope-orgid", "bad".parse().unwrap());
    let status = client.post_spans(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("trace id"), "{status:?}");
    // The datagrams went to the default tenant: give them time, then nothing is stored anywhere.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for tenant in ["bad", "single-tenant"] {
        let client = server.pg(tenant).await;
        let n: i64 = client
            .query_one("SELECT count(*) FROM spans", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{tenant}");
    }
    assert!(
        server
            .metric("tracehouse_distributor_requests_rejected_client_total")
            .await
            >= 10
    );
    assert!(server.log().contains("tracehouse ready"), "still running");
}

/// A request of `traces` traces of `spans` spans each, every span the same size.
fn otlp_request(first_trace: u8, traces: u8, spans: usize) -> ExportTraceServiceRequest {
    let span = |trace: u8, i: usize| Span {
        trace_id: vec![trace; 16],
        span_id: (i as u64 + 1).to_be_bytes().to_vec(),
        name: "step".into(),
        start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
        end_time_unix_nano: 1_700_000_000_000_001_000 + i as u64,
        ..Span::default()
    };
    let spans = (first_trace..first_trace + traces)
        .flat_map(|t| (0..spans).map(move |i| span(t, i)))
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

async fn send_otlp(server: &TestServer, tenant: &str, request: &ExportTraceServiceRequest) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/traces", server.otlp_http()))
        .header("Content-Type", "application/x-protobuf")
        .header("X-Scope-OrgID", tenant)
        .body(request.encode_to_vec())
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_limit_each_tenant_and_reload_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let one_span = otlp_request(1, 1, 1).resource_spans[0].scope_spans[0].spans[0].encoded_len();
    let request_bytes = otlp_request(1, 1, 10).encoded_len() as u64;
    let file = dir.path().join("overrides.yaml");
    let slow = format!(
        "overrides:\n  slow:\n    ingestion:\n      rate_limit_bytes: 1\n      burst_size_bytes: {}\n  \
         small:\n    global:\n      max_bytes_per_trace: {}\n    metrics_generator:\n      processors: [span-metrics]\n",
        request_bytes * 3,
        3 * one_span + one_span / 2
    );
    std::fs::write(&file, &slow).unwrap();
    let extra = format!(
        "overrides:\n  per_tenant_override_config: {}\n  per_tenant_override_period: 200ms\n",
        file.display()
    );
    let server = TestServer::start_in(dir.path(), &extra).await;

    // max_bytes_per_trace: the fourth and fifth spans of a trace are refused, exactly.
    let r = send_otlp(&server, "small", &otlp_request(1, 2, 5)).await;
    assert_eq!(r.status(), 200);
    let answer = ExportTraceServiceResponse::decode(r.bytes().await.unwrap()).unwrap();
    let partial = answer.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 4, "two spans of each of two traces");
    assert!(partial.error_message.starts_with("TRACE_TOO_LARGE"), "{partial:?}");
    assert_eq!(server.span_count("small").await, 6);

    // The rate: three requests fit the burst, the fourth is refused; another tenant goes on.
    for _ in 0..3 {
        assert_eq!(send_otlp(&server, "slow", &otlp_request(1, 1, 10)).await.status(), 200);
    }
    let refused = send_otlp(&server, "slow", &otlp_request(1, 1, 10)).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after > 60, "a 1 byte/s rate: {retry_after}");
    assert!(format!("{:?}", refused.bytes().await.unwrap()).contains("RATE_LIMITED"));
    for _ in 0..5 {
        assert_eq!(send_otlp(&server, "fast", &otlp_request(1, 1, 10)).await.status(), 200);
    }

    // A malformed file keeps the last good values; a good one takes effect within its period.
    std::fs::write(&file, "overrides: [").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let metrics = server.metrics_text().await;
    assert_eq!(
        labelled(&metrics, "tempo_runtime_config_last_reload_successful"),
        0.0,
        "{metrics}"
    );
    assert_eq!(send_otlp(&server, "slow", &otlp_request(1, 1, 10)).await.status(), 429);
    std::fs::write(
        &file,
        slow.replace("rate_limit_bytes: 1\n", "rate_limit_bytes: 100000000\n"),
    )
    .unwrap();
    let changed = Instant::now();
    let mut refusals = 2;
    while send_otlp(&server, "slow", &otlp_request(1, 1, 10)).await.status() != 200 {
        refusals += 1;
        assert!(
            changed.elapsed() < Duration::from_secs(3),
            "the new rate took no effect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        server.log().contains("per-tenant overrides not reloaded"),
        "the reason is logged"
    );
    let status = reqwest::get(format!("{}/status/overrides", server.http()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(status.contains("rate_limit_bytes: 100000000"), "{status}");
    let config = reqwest::get(format!("{}/status/config", server.http()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(config.contains("per_tenant_override_period: 200ms"), "{config}");

    // Tempo's series, after this known load.
    let metrics = server.metrics_text().await;
    let expect = [
        ("tempo_distributor_spans_received_total{tenant=\"small\"}", 6.0),
        (
            "tempo_discarded_spans_total{reason=\"trace_too_large\",tenant=\"small\"}",
            4.0,
        ),
        (
            "tempo_discarded_spans_total{reason=\"rate_limited\",tenant=\"slow\"}",
            10.0 * f64::from(refusals),
        ),
        ("tempo_distributor_spans_received_total{tenant=\"slow\"}", 40.0),
        ("tempo_distributor_spans_received_total{tenant=\"fast\"}", 50.0),
        (
            "tempo_receiver_refused_spans{receiver=\"otlp/otlp_receiver\",transport=\"http\"}",
            4.0 + 10.0 * f64::from(refusals),
        ),
        ("tempo_runtime_config_last_reload_successful", 1.0),
        (
            "tempo_limits_overrides{limit_name=\"ingestion_rate_limit_bytes\",user=\"slow\"}",
            1e8,
        ),
        ("tempo_live_store_live_traces{tenant=\"small\"}", 2.0),
    ];
    for (series, value) in expect {
        assert_eq!(labelled(&metrics, series), value, "{series} in:\n{metrics}");
    }
    let bytes = labelled(&metrics, "tempo_distributor_bytes_received_total{tenant=\"fast\"}");
    assert_eq!(bytes, 5.0 * request_bytes as f64);
    assert!(
        labelled(
            &metrics,
            "tempo_request_duration_seconds_count{method=\"POST\",route=\"v1_traces\",status_code=\"429\",ws=\"false\"}"
        ) == f64::from(refusals),
        "{metrics}"
    );
    // small 1, slow 3 + the refusals + 1, fast 5
    let pushes = 10.0 + f64::from(refusals);
    assert_eq!(
        labelled(&metrics, "tempo_distributor_push_duration_seconds_count"),
        pushes,
        "{metrics}"
    );
}

/// `tracehouse -config.verify` over `config`: its stderr when it refuses it.
fn refused_config(dir: &std::path::Path, config: &str) -> String {
    let file = dir.join("refused.yaml");
    std::fs::write(&file, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tracehouse"))
        .arg(format!("-config.file={}", file.display()))
        .arg("-config.verify")
        .output()
        .unwrap();
    assert!(!out.status.success(), "accepted: {config}");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_files_in_tempos_legacy_format_and_misspelt_keys() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("overrides.yaml");
    let with_file = |extra: &str| {
        format!(
            "overrides:\n  per_tenant_override_config: {}\n  per_tenant_override_period: 200ms\n{extra}",
            file.display()
        )
    };
    // A misspelt limit is refused by name, not silently left unapplied.
    std::fs::write(&file, "overrides:\n  t:\n    ingestion:\n      rate_limit_byte: 5\n").unwrap();
    let err = refused_config(dir.path(), &with_file(""));
    assert!(err.contains("unknown overrides key ingestion.rate_limit_byte"), "{err}");
    // Tempo's legacy flat format: refused unless enabled, as in Tempo 3.
    let request_bytes = otlp_request(1, 1, 10).encoded_len() as u64;
    let legacy = format!(
        "overrides:\n  slow:\n    ingestion_rate_limit_bytes: 1\n    ingestion_burst_size_bytes: {}\n    \
         metrics_generator_processors: [service-graphs]\n",
        request_bytes * 2
    );
    std::fs::write(&file, &legacy).unwrap();
    let err = refused_config(dir.path(), &with_file(""));
    assert!(err.contains("legacy overrides are disabled"), "{err}");

    let server = TestServer::start_in(dir.path(), &with_file("  enable_legacy_overrides: true\n")).await;
    for _ in 0..2 {
        assert_eq!(send_otlp(&server, "slow", &otlp_request(1, 1, 10)).await.status(), 200);
    }
    assert_eq!(send_otlp(&server, "slow", &otlp_request(1, 1, 10)).await.status(), 429);
    assert_eq!(send_otlp(&server, "other", &otlp_request(1, 1, 10)).await.status(), 200);
    let status = reqwest::get(format!("{}/status/overrides/slow", server.http()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(status.contains("rate_limit_bytes: 1\n"), "{status}");
    // A misspelt key in a reloaded file keeps the last good values, and says which key.
    std::fs::write(
        &file,
        legacy.replace("ingestion_rate_limit_bytes", "ingestion_rate_limit_byte"),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        server
            .log()
            .contains("unknown legacy overrides key ingestion_rate_limit_byte"),
        "{}",
        server.log()
    );
    assert_eq!(send_otlp(&server, "slow", &otlp_request(1, 1, 10)).await.status(), 429);
}
