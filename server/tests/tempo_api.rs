//! Tempo's query API through the real binary, over tracegen data checked against SQL:
//! buildinfo, search (TraceQL and tag form), tag autocomplete, trace by id (v1 and v2, JSON and
//! protobuf), every JSON answer decoded strictly with the decoders generated from our tempopb
//! `.proto`, the calls Grafana's Explore makes over HTTP and over streaming gRPC (h2c on the
//! HTTP port), and tenant isolation on each.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::TestServer;
use serde_json::Value;
use tracehouse_benches::send::Protocol;
use tracehouse_tempo_api::tempopb;

async fn get(server: &TestServer, path: &str, tenant: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(format!("http://127.0.0.1:{}{path}", server.http_port));
    if let Some(t) = tenant {
        req = req.header("X-Scope-OrgID", t);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// The trace ids of a search response, in order.
fn trace_ids(resp: &Value) -> Vec<String> {
    resp["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["traceID"].as_str().unwrap().to_string())
        .collect()
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.chars().all(|c| c.is_ascii_hexdigit())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_and_buildinfo() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), "").await;
    let mut generator = common::generator(5);
    let mut sender = server.sender(Protocol::HttpProtobuf, false).await;
    for _ in 0..4 {
        let (req, _) = generator.request(500);
        assert_eq!(sender.send(&req, Some("shop")).await.unwrap().status, 200);
    }

    // Build info: a version Grafana reads as at least 2.7.0.
    let (status, body) = get(&server, "/api/status/buildinfo", None).await;
    assert_eq!(status, 200);
    let info: Value = serde_json::from_str(&body).unwrap();
    for key in ["version", "revision", "branch", "buildUser", "buildDate", "goVersion"] {
        assert!(info[key].is_string(), "{key} in {body}");
    }
    let version: Vec<u64> = info["version"]
        .as_str()
        .unwrap()
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(version >= vec![2, 7, 0], "{version:?}");

    // An unknown path is Tempo's plain 404 (Grafana's feature probes read it as "not there"),
    // not a gRPC answer; the StreamingQuerier's own paths stay gRPC.
    for path in ["/api/nothing-here", "/api/metrics/summary", "/tempopb.Nothing/Call"] {
        let (status, body) = get(&server, path, Some("shop")).await;
        assert_eq!((status, body.as_str()), (404, "404 page not found\n"), "{path}");
    }

    // TraceQL search: shape, limits and order, and the same traces SQL finds. By default the
    // first `limit` traces found, each a match; with Tempo's hint, the most recent.
    let (status, body) = get(
        &server,
        "/api/search?q=%7B%20status%20%3D%20error%20%7D&limit=5&spss=2",
        Some("shop"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let first = trace_ids(&serde_json::from_str(&body).unwrap());
    assert_eq!(first.len(), 5);
    let (status, body) = get(
        &server,
        "/api/search?q=%7B%20status%20%3D%20error%20%7D%20with(most_recent%3Dtrue)&limit=5&spss=2",
        Some("shop"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let resp: Value = serde_json::from_str(&body).unwrap();
    let traces = resp["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 5);
    let mut starts = Vec::new();
    for t in traces {
        assert!(is_hex(t["traceID"].as_str().unwrap(), 32), "{t}");
        assert!(
            t["rootServiceName"].is_string() && t["rootTraceName"].is_string(),
            "{t}"
        );
        let start: u64 = t["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
        starts.push(start);
        assert!(t["durationMs"].is_u64() || t.get("durationMs").is_none(), "{t}");
        let sets = t["spanSets"].as_array().unwrap();
        assert!(!sets.is_empty());
        assert_eq!(t["spanSet"], sets[0]);
        for set in sets {
            let spans = set["spans"].as_array().unwrap();
            assert!(!spans.is_empty() && spans.len() <= 2, "spss=2: {set}");
            assert!(set["matched"].as_u64().unwrap() >= spans.len() as u64);
            for sp in spans {
                assert!(is_hex(sp["spanID"].as_str().unwrap(), 16), "{sp}");
                sp["startTimeUnixNano"].as_str().unwrap().parse::<u64>().unwrap();
                sp["durationNanos"].as_str().unwrap().parse::<u64>().unwrap();
            }
        }
    }
    assert!(starts.windows(2).all(|w| w[0] >= w[1]), "most recent first: {starts:?}");
    let pg = server.pg("shop").await;
    let want: Vec<String> = pg
        .query(
            "SELECT trace_id FROM traces WHERE trace_id IN (SELECT trace_id FROM spans WHERE status_code = 'error') \
             ORDER BY start_time_unix_nano DESC, trace_id LIMIT 5",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(trace_ids(&resp), want);
    let errors: Vec<String> = pg
        .query("SELECT DISTINCT trace_id FROM spans WHERE status_code = 'error'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(first.iter().all(|t| errors.contains(t)), "{first:?} are matches");

    // The tag form.
    let (status, body) = get(
        &server,
        "/api/search?tags=service.name%3Dcheckout&minDuration=1ms&limit=3",
        Some("shop"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let resp: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(resp["traces"].as_array().unwrap().len(), 3);

    // by(): one spanset per value, with the value as an attribute.
    let q = "%7B%20%7D%20%7C%20by(resource.service.name)";
    let (_, body) = get(&server, &format!("/api/search?q={q}&limit=10&spss=1"), Some("shop")).await;
    let resp: Value = serde_json::from_str(&body).unwrap();
    let traces = resp["traces"].as_array().unwrap();
    assert!(
        traces.iter().any(|t| t["spanSets"].as_array().unwrap().len() > 1),
        "{body}"
    );
    for set in traces.iter().flat_map(|t| t["spanSets"].as_array().unwrap()) {
        assert_eq!(set["attributes"][0]["key"], "by(resource.service.name)", "{set}");
        assert_eq!(set["spans"].as_array().unwrap().len(), 1);
    }

    // Errors: an invalid query is a 400 with the parse error; a bad limit too.
    let (status, body) = get(&server, "/api/search?q=%7B%20.a%20%3D%20%7D", Some("shop")).await;
    assert_eq!(status, 400);
    assert!(body.contains("line 1, col 8"), "{body}");
    assert_eq!(get(&server, "/api/search?limit=lots", Some("shop")).await.0, 400);
    // Grafana's large limits are taken, as Tempo takes them; beyond Tempo's maxima, its words.
    let (status, body) = get(&server, "/api/search?q=%7B%20%7D&limit=100000&spss=100", Some("shop")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(&server, "/api/search?q=%7B%20%7D&spss=101", Some("shop")).await;
    assert_eq!(
        (status, body.as_str()),
        (400, "spans per span set exceeds 100. received 101")
    );

    // Tag autocomplete: names by scope, typed values, narrowed by a TraceQL filter.
    let (status, body) = get(&server, "/api/search/tags", Some("shop")).await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<String> =
        serde_json::from_value(serde_json::from_str::<Value>(&body).unwrap()["tagNames"].clone()).unwrap();
    for want in ["service.name", "http.request.method", "http.response.status_code"] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    let (status, body) = get(&server, "/api/v2/search/tags", Some("shop")).await;
    assert_eq!(status, 200, "{body}");
    let v2: Value = serde_json::from_str(&body).unwrap();
    let scope = |name: &str| -> Vec<String> {
        let s = v2["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("{name}: {body}"));
        serde_json::from_value(s["tags"].clone()).unwrap()
    };
    assert!(scope("resource").contains(&"service.name".to_string()));
    assert!(scope("span").contains(&"http.response.status_code".to_string()));
    assert!(scope("intrinsic").contains(&"status".to_string()));
    assert!(
        scope("event").contains(&"exception.type".to_string()),
        "tracegen errors carry exception events"
    );
    let services: Vec<String> = pg
        .query("SELECT DISTINCT service_name FROM spans ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let (status, body) = get(&server, "/api/search/tag/service.name/values", Some("shop")).await;
    assert_eq!(status, 200, "{body}");
    let values: Vec<String> =
        serde_json::from_value(serde_json::from_str::<Value>(&body).unwrap()["tagValues"].clone()).unwrap();
    assert_eq!(values, services);
    let (status, body) = get(
        &server,
        "/api/v2/search/tag/span.http.response.status_code/values",
        Some("shop"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let typed: Value = serde_json::from_str(&body).unwrap();
    let typed = typed["tagValues"].as_array().unwrap();
    assert!(!typed.is_empty() && typed.iter().all(|v| v["type"] == "int"), "{body}");
    let (_, body) = get(&server, "/api/v2/search/tag/status/values", Some("shop")).await;
    assert!(body.contains(r#"{"type":"keyword","value":"error"}"#), "{body}");
    let q = "%7B%20resource.service.name%20%3D%20%22checkout%22%20%7D";
    let (status, body) = get(
        &server,
        &format!("/api/v2/search/tag/resource.service.name/values?q={q}"),
        Some("shop"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["tagValues"],
        serde_json::json!([{"type": "string", "value": "checkout"}])
    );
    assert_eq!(
        get(&server, "/api/v2/search/tag/%7Bnot-a-tag/values", Some("shop"))
            .await
            .0,
        400
    );

    // Tenants stay apart.
    let (status, body) = get(&server, "/api/search?q=%7B%20%7D", Some("someone-else")).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["traces"],
        serde_json::json!([])
    );
    let (status, body) = get(&server, "/api/search/tags", Some("someone-else")).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["tagNames"],
        serde_json::json!([])
    );
    let (_, body) = get(
        &server,
        "/api/v2/search/tag/resource.service.name/values",
        Some("someone-else"),
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["tagValues"],
        serde_json::json!([])
    );
    let (_, body) = get(&server, "/api/v2/search/tags", Some("someone-else")).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["scopes"],
        serde_json::json!([{ "name": "intrinsic", "tags": tracehouse_tempo_api::tags::INTRINSICS }]),
        "only the intrinsics, which every tenant has"
    );
    let (_, body) = get(&server, "/api/search/tag/service.name/values", Some("someone-else")).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["tagValues"],
        serde_json::json!([])
    );
    let (status, _) = get(&server, "/api/search", Some("../etc")).await;
    assert_eq!(status, 400, "an invalid tenant is the client's error");
}

/// Trace id (hex) -> its span ids (hex) in `req`.
fn traces_of(
    req: &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
    into: &mut BTreeMap<String, BTreeSet<String>>,
) {
    for span in req
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
    {
        into.entry(hex::encode(&span.trace_id))
            .or_default()
            .insert(hex::encode(&span.span_id));
    }
}

async fn get_bytes(server: &TestServer, path: &str, tenant: Option<&str>, accept: &str) -> (u16, Vec<u8>) {
    let mut req = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}{path}", server.http_port))
        .header("Accept", accept);
    if let Some(t) = tenant {
        req = req.header("X-Scope-OrgID", t);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
}

/// Strictly decodes `body` as `T` with the decoder generated from our tempopb `.proto`: unknown
/// and mistyped fields fail.
fn strict<T: serde::de::DeserializeOwned>(body: &[u8]) -> T {
    serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "strict decode as {}: {e}: {}",
            std::any::type_name::<T>(),
            String::from_utf8_lossy(body)
        )
    })
}

fn span_ids_of(trace: &tempopb::Trace) -> BTreeSet<String> {
    trace
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| hex::encode(&s.span_id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_by_id_and_strict_contracts() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), "").await;
    let mut generator = common::generator(11);
    let mut sender = server.sender(Protocol::HttpProtobuf, false).await;
    let mut flushed = BTreeMap::new();
    let mut live = BTreeMap::new();
    for i in 0..6 {
        let (req, _) = generator.request(300);
        traces_of(&req, if i < 4 { &mut flushed } else { &mut live });
        assert_eq!(sender.send(&req, Some("shop")).await.unwrap().status, 200);
        if i == 1 || i == 3 {
            // Two flushes: two files per partition, so the index has to pick.
            assert_eq!(get(&server, "/flush", None).await.0, 204);
        }
    }
    let pg = server.pg("shop").await;
    let mut checked = 0;
    for (trace, want) in flushed.iter().step_by(7).chain(live.iter().step_by(7)) {
        // v1 JSON: `batches`, strictly a tempopb.Trace once renamed.
        let (status, body) = get_bytes(
            &server,
            &format!("/api/traces/{trace}"),
            Some("shop"),
            "application/json",
        )
        .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let mut v1: Value = serde_json::from_slice(&body).unwrap();
        let batches = v1
            .as_object_mut()
            .unwrap()
            .remove("batches")
            .expect("v1 JSON has batches");
        assert!(v1.as_object().unwrap().is_empty(), "only batches at the top: {v1}");
        let from_json: tempopb::Trace =
            strict(&serde_json::to_vec(&serde_json::json!({ "resourceSpans": batches })).unwrap());
        assert_eq!(&span_ids_of(&from_json), want, "trace {trace}");
        // v1 protobuf: the same trace.
        let (status, body) = get_bytes(
            &server,
            &format!("/api/traces/{trace}"),
            Some("shop"),
            "application/protobuf",
        )
        .await;
        assert_eq!(status, 200);
        let from_proto = <tempopb::Trace as prost::Message>::decode(body.as_slice()).unwrap();
        assert_eq!(from_proto, from_json);
        // Every span carries its trace id, and resources their service name.
        for rs in &from_proto.resource_spans {
            let attrs = &rs.resource.as_ref().unwrap().attributes;
            assert!(attrs.iter().any(|kv| kv.key == "service.name"), "{attrs:?}");
            for s in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                assert_eq!(hex::encode(&s.trace_id), *trace);
                assert!(s.end_time_unix_nano >= s.start_time_unix_nano && s.kind != 0);
            }
        }
        // v2, JSON and protobuf.
        let (status, body) = get_bytes(
            &server,
            &format!("/api/v2/traces/{trace}"),
            Some("shop"),
            "application/json",
        )
        .await;
        assert_eq!(status, 200);
        let v2: tempopb::TraceByIdResponse = strict(&body);
        assert_eq!(v2.trace.as_ref(), Some(&from_json));
        assert!(v2.metrics.unwrap().inspected_bytes > 0 || live.contains_key(trace));
        let (_, body) = get_bytes(
            &server,
            &format!("/api/v2/traces/{trace}"),
            Some("shop"),
            "application/protobuf",
        )
        .await;
        let v2p = <tempopb::TraceByIdResponse as prost::Message>::decode(body.as_slice()).unwrap();
        assert_eq!(v2p.trace.as_ref(), Some(&from_json));
        // The same spans as SQL finds for the trace.
        let n: i64 = pg
            .query_one("SELECT count(*) FROM spans WHERE trace_id = $1", &[trace])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n as usize, want.len());
        // SQL by trace id goes through the index; the same filter the index cannot see (an
        // expression over the column) scans everything and must agree.
        let scanned: i64 = pg
            .query_one("SELECT count(*) FROM spans WHERE lower(trace_id) = $1", &[trace])
            .await
            .unwrap()
            .get(0);
        assert_eq!(scanned, n);
        checked += 1;
    }
    assert!(checked >= 10, "checked {checked} traces");

    // A range narrows the lookup; one that misses the trace finds nothing.
    let (trace, want) = flushed.iter().next().unwrap();
    let now = now_s();
    let (status, body) = get_bytes(
        &server,
        &format!("/api/traces/{trace}?start={}&end={}", now - 3600, now + 60),
        Some("shop"),
        "application/protobuf",
    )
    .await;
    assert_eq!(status, 200);
    let t = <tempopb::Trace as prost::Message>::decode(body.as_slice()).unwrap();
    assert_eq!(&span_ids_of(&t), want);
    let (status, _) = get(
        &server,
        &format!("/api/traces/{trace}?start=1000&end=2000"),
        Some("shop"),
    )
    .await;
    assert_eq!(status, 404);

    // Unknown and invalid ids; other tenants see nothing.
    let unknown = "0123456789abcdef0123456789abcdef";
    let (status, body) = get(&server, &format!("/api/traces/{unknown}"), Some("shop")).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = get_bytes(
        &server,
        &format!("/api/v2/traces/{unknown}"),
        Some("shop"),
        "application/json",
    )
    .await;
    assert_eq!(status, 200);
    let empty: tempopb::TraceByIdResponse = strict(&body);
    assert!(empty.trace.unwrap_or_default().resource_spans.is_empty());
    assert_eq!(get(&server, "/api/traces/not-hex", Some("shop")).await.0, 400);
    assert_eq!(
        get(&server, &format!("/api/traces/{}", "a".repeat(33)), Some("shop"))
            .await
            .0,
        400
    );
    assert_eq!(
        get(&server, &format!("/api/traces/{trace}"), Some("someone-else"))
            .await
            .0,
        404
    );
    let (status, body) = get_bytes(
        &server,
        &format!("/api/v2/traces/{trace}"),
        Some("someone-else"),
        "application/json",
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        strict::<tempopb::TraceByIdResponse>(&body)
            .trace
            .unwrap_or_default()
            .resource_spans
            .is_empty()
    );

    // Contracts: every JSON answer decodes strictly as its tempopb message.
    let q = "%7B%20status%20%3D%20error%20%7D";
    let (status, body) = get_bytes(&server, &format!("/api/search?q={q}&limit=7"), Some("shop"), "*/*").await;
    assert_eq!(status, 200);
    let search: tempopb::SearchResponse = strict(&body);
    assert_eq!(search.traces.len(), 7);
    for t in &search.traces {
        assert!(!t.service_stats.is_empty(), "serviceStats: {t:?}");
        let errors: u32 = t.service_stats.values().map(|s| s.error_count).sum();
        let spans: u32 = t.service_stats.values().map(|s| s.span_count).sum();
        assert!(errors >= 1 && spans >= errors, "{t:?}");
        let n: i64 = pg
            .query_one("SELECT count(*) FROM spans WHERE trace_id = $1", &[&t.trace_id])
            .await
            .unwrap()
            .get(0);
        assert_eq!(spans as i64, n, "serviceStats counts every span of {}", t.trace_id);
    }
    // Spans come back with what the query read and what select() names, typed.
    let (status, body) = get_bytes(
        &server,
        "/api/search?q=%7B%20span.http.response.status_code%20%3E%3D%20500%20%7D%20%7C%20select(kind%2C%20resource.host.name)&limit=3",
        Some("shop"),
        "*/*",
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let selected: tempopb::SearchResponse = strict(&body);
    assert!(!selected.traces.is_empty());
    for span in selected.traces.iter().flat_map(|t| &t.span_sets).flat_map(|s| &s.spans) {
        let value = |key: &str| {
            span.attributes
                .iter()
                .find(|kv| kv.key == key)
                .and_then(|kv| kv.value.clone())
                .and_then(|v| v.value)
                .unwrap_or_else(|| panic!("{key} in {span:?}"))
        };
        use tempopb::common::v1::any_value::Value as V;
        assert!(
            matches!(value("http.response.status_code"), V::IntValue(c) if c >= 500),
            "{span:?}"
        );
        assert!(matches!(value("kind"), V::StringValue(_)), "{span:?}");
        assert!(matches!(value("host.name"), V::StringValue(_)), "{span:?}");
    }
    let (_, body) = get_bytes(&server, "/api/search/tags", Some("shop"), "*/*").await;
    assert!(!strict::<tempopb::SearchTagsResponse>(&body).tag_names.is_empty());
    let (_, body) = get_bytes(&server, "/api/v2/search/tags", Some("shop"), "*/*").await;
    assert!(strict::<tempopb::SearchTagsV2Response>(&body).scopes.len() >= 4);
    let (_, body) = get_bytes(&server, "/api/search/tag/service.name/values", Some("shop"), "*/*").await;
    assert!(!strict::<tempopb::SearchTagValuesResponse>(&body).tag_values.is_empty());
    let (_, body) = get_bytes(
        &server,
        "/api/v2/search/tag/resource.service.name/values",
        Some("shop"),
        "*/*",
    )
    .await;
    assert!(
        !strict::<tempopb::SearchTagValuesV2Response>(&body)
            .tag_values
            .is_empty()
    );
    // Empty answers keep their lists, and decode strictly too.
    let (_, body) = get_bytes(&server, &format!("/api/search?q={q}"), Some("someone-else"), "*/*").await;
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["traces"],
        serde_json::json!([])
    );
    assert!(strict::<tempopb::SearchResponse>(&body).traces.is_empty());
    // The decoders are strict: an unknown field or a mistyped one fails.
    assert!(serde_json::from_str::<tempopb::SearchResponse>(r#"{"traces":[],"extra":1}"#).is_err());
    assert!(serde_json::from_str::<tempopb::SearchResponse>(r#"{"traces":[{"durationMs":"soon"}]}"#).is_err());
    assert!(serde_json::from_str::<tempopb::TraceByIdResponse>(r#"{"trace":{"batches":[]}}"#).is_err());
}

fn values_request(tag: &str) -> tempopb::SearchTagValuesRequest {
    tempopb::SearchTagValuesRequest {
        tag_name: tag.into(),
        ..Default::default()
    }
}

/// The one message of a unary-like streamed answer.
async fn one_message<T>(response: tonic::Response<tonic::Streaming<T>>) -> T {
    response.into_inner().message().await.unwrap().expect("one message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_explore_over_http_and_streaming_grpc() {
    use tempopb::streaming_querier_client::StreamingQuerierClient;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), "").await;
    let mut generator = common::generator(23);
    let mut sender = server.sender(Protocol::Grpc, false).await;
    // Enough spans (a file and live ones) for a search to read several chunks of traces.
    for i in 0..15 {
        let (req, _) = generator.request(400);
        assert_eq!(sender.send(&req, Some("shop")).await.unwrap().status, 200);
        if i == 6 {
            assert_eq!(get(&server, "/flush", None).await.0, 204);
        }
    }
    // Grafana checks the datasource, then offers the search builder.
    assert_eq!(get(&server, "/api/echo", None).await, (200, "echo".to_string()));
    assert_eq!(get(&server, "/api/status/buildinfo", None).await.0, 200);

    // The streaming client speaks gRPC to the HTTP port (h2c), tenant in metadata.
    let mut client = StreamingQuerierClient::connect(format!("http://127.0.0.1:{}", server.http_port))
        .await
        .unwrap();
    fn with_tenant<T>(msg: T, tenant: &str) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.metadata_mut().insert("x-scope-orgid", tenant.parse().unwrap());
        req
    }
    let tags = client
        .search_tags_v2(with_tenant(tempopb::SearchTagsRequest::default(), "shop"))
        .await
        .map(one_message)
        .unwrap()
        .await;
    let (_, body) = get_bytes(&server, "/api/v2/search/tags", Some("shop"), "*/*").await;
    assert_eq!(
        tags,
        strict::<tempopb::SearchTagsV2Response>(&body),
        "gRPC and HTTP agree"
    );
    let values = client
        .search_tag_values_v2(with_tenant(values_request("resource.service.name"), "shop"))
        .await
        .map(one_message)
        .unwrap()
        .await;
    let (_, body) = get_bytes(
        &server,
        "/api/v2/search/tag/resource.service.name/values",
        Some("shop"),
        "*/*",
    )
    .await;
    assert_eq!(values, strict::<tempopb::SearchTagValuesV2Response>(&body));
    let v1_values = client
        .search_tag_values(with_tenant(values_request("service.name"), "shop"))
        .await
        .map(one_message)
        .unwrap()
        .await;
    assert_eq!(v1_values.tag_values.len(), values.tag_values.len());
    let names = client
        .search_tags(with_tenant(tempopb::SearchTagsRequest::default(), "shop"))
        .await
        .map(one_message)
        .unwrap()
        .await;
    assert!(names.tag_names.contains(&"service.name".to_string()));

    // A TraceQL search streams partial results and ends with the complete set, which is what
    // the HTTP search answers. (A limit above the matches: every trace is read, in chunks.)
    let query = "{ kind = server } | count() > 0";
    let mut stream = client
        .search(with_tenant(
            tempopb::SearchRequest {
                query: query.into(),
                limit: 1000,
                spans_per_span_set: 2,
                ..Default::default()
            },
            "shop",
        ))
        .await
        .unwrap()
        .into_inner();
    let mut messages = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        messages.push(m);
    }
    assert!(messages.len() >= 2, "partial then final: {} messages", messages.len());
    let last = messages.last().unwrap();
    let metrics = last.metrics.as_ref().unwrap();
    assert_eq!(metrics.completed_jobs, metrics.total_jobs);
    assert!(messages[0].metrics.as_ref().unwrap().completed_jobs < metrics.total_jobs);
    let (_, body) = get_bytes(
        &server,
        "/api/search?q=%7B%20kind%20%3D%20server%20%7D%20%7C%20count()%20%3E%200&limit=1000&spss=2",
        Some("shop"),
        "*/*",
    )
    .await;
    let http: tempopb::SearchResponse = strict(&body);
    assert_eq!(last.traces, http.traces);
    assert!(http.traces.len() >= 5, "{} traces", http.traces.len());

    // The user opens a trace from the results: Grafana asks v2 for protobuf.
    let first = &http.traces[0];
    let (status, body) = get_bytes(
        &server,
        &format!("/api/v2/traces/{}", first.trace_id),
        Some("shop"),
        "application/protobuf",
    )
    .await;
    assert_eq!(status, 200);
    let opened = <tempopb::TraceByIdResponse as prost::Message>::decode(body.as_slice()).unwrap();
    let ids = span_ids_of(opened.trace.as_ref().unwrap());
    for s in first.span_sets.iter().flat_map(|s| &s.spans) {
        assert!(ids.contains(&s.span_id), "search span {} is in the trace", s.span_id);
    }
    let spans: u32 = first.service_stats.values().map(|s| s.span_count).sum();
    assert_eq!(spans as usize, ids.len());

    // An invalid query ends the call with InvalidArgument.
    let err = client
        .search(with_tenant(
            tempopb::SearchRequest {
                query: "{ .a = }".into(),
                ..Default::default()
            },
            "shop",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().contains("line 1"), "{err}");

    // Tenants stay apart on the gRPC side too.
    let mut other = client
        .search(with_tenant(
            tempopb::SearchRequest {
                query: "{ }".into(),
                ..Default::default()
            },
            "someone-else",
        ))
        .await
        .unwrap()
        .into_inner();
    while let Some(m) = other.message().await.unwrap() {
        assert!(m.traces.is_empty());
    }
    let other_values = client
        .search_tag_values_v2(with_tenant(values_request("resource.service.name"), "someone-else"))
        .await
        .map(one_message)
        .unwrap()
        .await;
    assert!(other_values.tag_values.is_empty());
    let bad_tenant = client
        .search_tags(with_tenant(tempopb::SearchTagsRequest::default(), "../etc"))
        .await
        .unwrap_err();
    assert_eq!(bad_tenant.code(), tonic::Code::InvalidArgument);

    // The calls are in `tempo_request_duration_seconds` as Tempo's gRPC server labels them:
    // the streamed searches once each stream ended, the invalid query as an error.
    let metrics = server.metrics_text().await;
    let count = |route: &str, status: &str| -> f64 {
        let series = format!(
            "tempo_request_duration_seconds_count{{method=\"gRPC\",route=\"/tempopb.StreamingQuerier/{route}\",status_code=\"{status}\",ws=\"false\"}} "
        );
        let line = metrics.lines().find(|l| l.starts_with(&series));
        line.map_or(0.0, |l| l[series.len()..].trim().parse().unwrap())
    };
    assert_eq!(count("Search", "success"), 2.0, "{metrics}");
    assert_eq!(count("Search", "error"), 1.0, "{metrics}");
    assert_eq!(count("SearchTags", "error"), 1.0, "{metrics}");
    assert!(count("SearchTagValuesV2", "success") >= 2.0, "{metrics}");
    // And as queries, per tenant and op, as Tempo's query frontend counts them: the refused
    // query is the caller's fault, so within the SLO; the bad tenant id is no tenant.
    let queries = |name: &str, tenant: &str, op: &str| -> f64 {
        let series = format!("{name}{{tenant=\"{tenant}\",op=\"{op}\",result=\"completed\"}} ");
        let line = metrics.lines().find(|l| l.starts_with(&series));
        line.map_or(0.0, |l| l[series.len()..].trim().parse().unwrap())
    };
    for name in [
        "tempo_query_frontend_queries_total",
        "tempo_query_frontend_queries_within_slo_total",
    ] {
        assert_eq!(queries(name, "someone-else", "search"), 1.0, "{name}: {metrics}");
        assert!(
            queries(name, "shop", "search") >= 3.0,
            "grpc twice, http once: {metrics}"
        );
        assert!(queries(name, "shop", "traces") >= 1.0, "{metrics}");
        assert!(queries(name, "shop", "metadata") >= 2.0, "{metrics}");
    }
    assert!(!metrics.contains("tenant=\"../etc\""), "{metrics}");
}

/// The server's peak resident memory (VmHWM), in bytes.
fn peak_rss_bytes(server: &TestServer) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Grafana's search (limit 100,000 and spss 100, Tempo's maximum) over 20,000 spans returns
/// every matching trace, the same traces SQL finds, each with up to 100 spans, without the
/// server's memory growing with the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_sized_search_returns_every_match() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), "").await;
    let mut generator = common::generator(11);
    let mut sender = server.sender(Protocol::HttpProtobuf, false).await;
    let mut sent = 0;
    while sent < 20_000usize {
        let (req, n) = generator.request(2_000);
        assert_eq!(sender.send(&req, Some("grafana")).await.unwrap().status, 200);
        sent += n;
    }
    let client = server.pg("grafana").await;
    let expected: i64 = client
        .query_one("SELECT count(DISTINCT trace_id) FROM spans", &[])
        .await
        .unwrap()
        .get(0);
    let before = peak_rss_bytes(&server);
    let (status, body) = get(&server, "/api/search?q=%7B%7D&limit=100000&spss=100", Some("grafana")).await;
    assert_eq!(status, 200, "{body}");
    let resp: Value = serde_json::from_str(&body).unwrap();
    let ids: BTreeSet<String> = trace_ids(&resp).into_iter().collect();
    assert_eq!(ids.len() as i64, expected, "every trace matches {{}}");
    let mut matched_total = 0;
    for t in resp["traces"].as_array().unwrap() {
        let set = &t["spanSets"][0];
        let matched = set["matched"].as_u64().unwrap();
        let spans = set["spans"].as_array().unwrap().len() as u64;
        assert_eq!(
            spans,
            matched.min(100),
            "spss 100 of {matched} matched in {}",
            t["traceID"]
        );
        matched_total += matched;
    }
    assert_eq!(
        matched_total as i64,
        server.span_count("grafana").await,
        "every span matched"
    );
    let grown = peak_rss_bytes(&server).saturating_sub(before);
    assert!(
        grown < 512 << 20,
        "the search grew the server's peak memory by {} MiB",
        grown >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_query_range_over_http_and_grpc() {
    use tempopb::streaming_querier_client::StreamingQuerierClient;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), "").await;
    let mut generator = common::generator(31);
    let mut sender = server.sender(Protocol::HttpProtobuf, false).await;
    for i in 0..6 {
        let (req, _) = generator.request(300);
        assert_eq!(sender.send(&req, Some("shop")).await.unwrap().status, 200);
        if i == 2 {
            assert_eq!(get(&server, "/flush", None).await.0, 204);
        }
    }
    let now_s = now_s();
    let (start, end) = (now_s - 600, now_s + 600);
    let q = "%7B%20%7D%20%7C%20count_over_time()%20by%20(resource.service.name)";
    let path = format!("/api/metrics/query_range?q={q}&start={start}&end={end}&step=30s");

    // JSON: Tempo's QueryRangeResponse, strictly; per service, the samples add up to SQL's count.
    let (status, body) = get_bytes(&server, &path, Some("shop"), "*/*").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let json: tempopb::QueryRangeResponse = strict(&body);
    let mut totals: BTreeMap<String, i64> = BTreeMap::new();
    for s in &json.series {
        let [label] = s.labels.as_slice() else { panic!("{s:?}") };
        assert_eq!(label.key, "resource.service.name");
        let Some(tracehouse_tempo_api::tempopb::common::v1::any_value::Value::StringValue(service)) =
            label.value.as_ref().and_then(|v| v.value.clone())
        else {
            panic!("{label:?}")
        };
        // Every 30 s bucket of the aligned range, oldest first, stamped at its end.
        let (first, last) = (start - start % 30 - 30, end.div_ceil(30) * 30);
        assert_eq!(s.samples.len() as u64, (last - first) / 30, "{s:?}");
        assert_eq!(s.samples[0].timestamp_ms as u64, (first + 30) * 1_000);
        assert!(
            s.samples
                .windows(2)
                .all(|w| w[1].timestamp_ms - w[0].timestamp_ms == 30_000)
        );
        assert_eq!(s.samples[0].timestamp_ms % 30_000, 0);
        *totals.entry(service).or_default() += s.samples.iter().map(|x| x.value as i64).sum::<i64>();
    }
    let pg = server.pg("shop").await;
    let sql = spans_by_service(&pg).await;
    assert!(sql.len() >= 3, "{sql:?}");
    assert_eq!(totals, sql);

    // Protobuf when asked, the same answer; gRPC (h2c on the HTTP port) the same too.
    let (status, body) = get_bytes(&server, &path, Some("shop"), "application/protobuf").await;
    assert_eq!(status, 200);
    assert_eq!(
        <tempopb::QueryRangeResponse as prost::Message>::decode(body.as_slice()).unwrap(),
        json
    );
    let mut client = StreamingQuerierClient::connect(format!("http://127.0.0.1:{}", server.http_port))
        .await
        .unwrap();
    let mut request = tonic::Request::new(tempopb::QueryRangeRequest {
        query: "{ } | count_over_time() by (resource.service.name)".into(),
        start: start * 1_000_000_000,
        end: end * 1_000_000_000,
        step: 30_000_000_000,
        ..Default::default()
    });
    request.metadata_mut().insert("x-scope-orgid", "shop".parse().unwrap());
    let mut stream = client.metrics_query_range(request).await.unwrap().into_inner();
    let mut messages = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        messages.push(m);
    }
    // Streamed as Tempo streams: the range's parts, newest first, each with its own samples,
    // then the whole answer, equal to HTTP's.
    let (last, parts) = messages.split_last().unwrap();
    assert_eq!(last.series, json.series);
    assert_eq!(parts.len(), 4, "{parts:?}");
    let newest =
        |m: &tempopb::QueryRangeResponse| (m.series.iter().flat_map(|s| &s.samples)).map(|x| x.timestamp_ms).max();
    let newest: Vec<i64> = parts.iter().filter_map(newest).collect();
    assert!(
        !newest.is_empty() && newest.windows(2).all(|w| w[0] > w[1]),
        "newest first: {newest:?}"
    );
    let mut streamed: BTreeMap<String, i64> = BTreeMap::new();
    let mut stamps = std::collections::BTreeSet::new();
    for s in parts.iter().flat_map(|m| &m.series) {
        let Some(tracehouse_tempo_api::tempopb::common::v1::any_value::Value::StringValue(service)) =
            s.labels[0].value.as_ref().and_then(|v| v.value.clone())
        else {
            panic!("{s:?}")
        };
        for x in &s.samples {
            assert!(
                stamps.insert((service.clone(), x.timestamp_ms)),
                "a sample in one part only"
            );
        }
        *streamed.entry(service).or_default() += s.samples.iter().map(|x| x.value as i64).sum::<i64>();
    }
    assert_eq!(streamed, sql);

    // rate() without by(): one series named __name__=rate; another tenant has none.
    let rate = format!("/api/metrics/query_range?q=%7B%7D%7Crate()&start={start}&end={end}&step=60");
    let (status, body) = get_bytes(&server, &rate, Some("shop"), "*/*").await;
    assert_eq!(status, 200);
    let series = strict::<tempopb::QueryRangeResponse>(&body).series;
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].labels[0].key, "__name__");
    let (status, body) = get_bytes(&server, &rate, Some("someone-else"), "*/*").await;
    assert_eq!(status, 200);
    assert!(strict::<tempopb::QueryRangeResponse>(&body).series.is_empty());

    compare_counts_as_psql(&server, &mut client, start, end).await;

    // A search query, a bad query and a bad step are 400s with a message.
    for (q, step) in [
        ("%7B%20status%20%3D%20error%20%7D", "60"),
        ("%7B%7D%7Crate(", "60"),
        ("%7B%7D%7Crate()", "soon"),
    ] {
        let path = format!("/api/metrics/query_range?q={q}&start={start}&end={end}&step={step}");
        let (status, body) = get(&server, &path, Some("shop")).await;
        assert_eq!(status, 400, "{q}: {body}");
        assert!(!body.is_empty());
    }
}

/// `compare()` as an instant query, as Traces Drilldown runs it: per service, the selection
/// (error spans) and baseline (the others) equal psql's counts, the totals are named by the
/// attribute with Tempo's `nil`, gRPC gives the same series, and another tenant has none.
async fn compare_counts_as_psql(
    server: &TestServer,
    client: &mut tempopb::streaming_querier_client::StreamingQuerierClient<tonic::transport::Channel>,
    start: u64,
    end: u64,
) {
    use tempopb::common::v1::any_value::Value;
    let q = "%7B%7D%20%7C%20compare(%7Bstatus%3Derror%7D%2C%20100)";
    let path = format!("/api/metrics/query?q={q}&start={start}&end={end}");
    let (status, body) = get_bytes(server, &path, Some("shop"), "*/*").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: tempopb::QueryInstantResponse = strict(&body);
    let mut got: BTreeMap<(String, String), i64> = BTreeMap::new();
    for s in &answer.series {
        let [meta, attribute] = s.labels.as_slice() else {
            panic!("{s:?}")
        };
        let Some(Value::StringValue(side)) = meta.value.as_ref().and_then(|v| v.value.clone()) else {
            panic!("{meta:?}")
        };
        assert_eq!(meta.key, "__meta_type");
        let value = attribute.value.as_ref().and_then(|v| v.value.clone());
        if side.ends_with("_total") {
            assert_eq!(value, Some(Value::StringValue("nil".into())), "{s:?}");
        }
        if attribute.key == "resource.service.name" {
            let service = match value {
                Some(Value::StringValue(v)) => v,
                other => panic!("{other:?}"),
            };
            got.insert((side, service), s.value as i64);
        }
    }
    let pg = server.pg("shop").await;
    let rows = pg
        .query(
            "SELECT CASE WHEN status_code = 'error' THEN 'selection' ELSE 'baseline' END, service_name, count(*)              FROM spans GROUP BY 1, 2",
            &[],
        )
        .await
        .unwrap();
    let mut want: BTreeMap<(String, String), i64> = BTreeMap::new();
    for r in &rows {
        let (side, service, n): (String, String, i64) = (r.get(0), r.get(1), r.get(2));
        *want.entry((format!("{side}_total"), "nil".into())).or_default() += n;
        want.insert((side, service), n);
    }
    assert!(want.keys().any(|(side, _)| side == "selection"), "{want:?}");
    assert_eq!(got, want);

    let mut request = tonic::Request::new(tempopb::QueryInstantRequest {
        query: "{} | compare({status=error}, 100)".into(),
        start: start * 1_000_000_000,
        end: end * 1_000_000_000,
    });
    request.metadata_mut().insert("x-scope-orgid", "shop".parse().unwrap());
    let grpc = one_message(client.metrics_query_instant(request).await.unwrap()).await;
    let sorted = |mut v: Vec<tempopb::InstantSeries>| {
        v.sort_by_key(|s| format!("{:?}", s.labels));
        v
    };
    assert_eq!(sorted(grpc.series), sorted(answer.series));
    let (status, body) = get_bytes(server, &path, Some("someone-else"), "*/*").await;
    assert_eq!(status, 200);
    assert!(strict::<tempopb::QueryInstantResponse>(&body).series.is_empty());
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// SQL's span count per service (over psql's wire).
async fn spans_by_service(pg: &tokio_postgres::Client) -> BTreeMap<String, i64> {
    let rows = pg
        .query("SELECT service_name, count(*) FROM spans GROUP BY 1", &[])
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// A label's value in a Tempo answer.
fn label_value(labels: &[tempopb::common::v1::KeyValue], key: &str) -> Option<tempopb::common::v1::any_value::Value> {
    labels
        .iter()
        .find(|l| l.key == key)
        .and_then(|l| l.value.as_ref()?.value.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_instant_quantiles_histograms_and_limits() {
    use tempopb::common::v1::any_value::Value;
    use tempopb::streaming_querier_client::StreamingQuerierClient;
    let dir = tempfile::tempdir().unwrap();
    let yaml = "query_frontend:\n  metrics:\n    max_duration: 2h\n    max_response_series: 50\n";
    let server = TestServer::start_in(dir.path(), yaml).await;
    let mut generator = common::generator(37);
    let mut sender = server.sender(Protocol::HttpProtobuf, false).await;
    for _ in 0..3 {
        let (req, _) = generator.request(300);
        assert_eq!(sender.send(&req, Some("shop")).await.unwrap().status, 200);
    }
    let now_s = now_s();
    let (start, end) = (now_s - 1_800, now_s + 1_800);

    // Instant: one value per series over [start, end], equal to SQL's count; gRPC the same.
    let q = "%7B%20%7D%20%7C%20count_over_time()%20by%20(resource.service.name)";
    let path = format!("/api/metrics/query?q={q}&start={start}&end={end}");
    let (status, body) = get_bytes(&server, &path, Some("shop"), "*/*").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let instant: tempopb::QueryInstantResponse = strict(&body);
    let counts: BTreeMap<String, i64> = (instant.series.iter())
        .map(|s| match label_value(&s.labels, "resource.service.name") {
            Some(Value::StringValue(service)) => (service, s.value as i64),
            other => panic!("{other:?}"),
        })
        .collect();
    let pg = server.pg("shop").await;
    let sql = spans_by_service(&pg).await;
    assert!(sql.len() >= 3, "{sql:?}");
    assert_eq!(counts, sql);
    let mut client = StreamingQuerierClient::connect(format!("http://127.0.0.1:{}", server.http_port))
        .await
        .unwrap();
    let mut request = tonic::Request::new(tempopb::QueryInstantRequest {
        query: "{ } | count_over_time() by (resource.service.name)".into(),
        start: start * 1_000_000_000,
        end: end * 1_000_000_000,
    });
    request.metadata_mut().insert("x-scope-orgid", "shop".parse().unwrap());
    let grpc = one_message(client.metrics_query_instant(request).await.unwrap()).await;
    assert_eq!(grpc.series.len(), instant.series.len());

    // Quantiles carry a float `p` label; histograms a float `__bucket` (seconds); protobuf the same.
    let q = "%7B%20%7D%20%7C%20quantile_over_time(duration%2C%200.5%2C%200.99)";
    let path = format!("/api/metrics/query_range?q={q}&start={start}&end={end}&step=5m");
    let (status, body) = get_bytes(&server, &path, Some("shop"), "*/*").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let quantiles: tempopb::QueryRangeResponse = strict(&body);
    let ps: Vec<Option<Value>> = quantiles.series.iter().map(|s| label_value(&s.labels, "p")).collect();
    assert_eq!(ps, vec![Some(Value::DoubleValue(0.5)), Some(Value::DoubleValue(0.99))]);
    // Exemplars by default (Tempo's 100 at most), each on the quantile series closest to it:
    // spans that SQL finds, by trace:id and span:id.
    let exemplars: Vec<&tempopb::Exemplar> = quantiles.series.iter().flat_map(|s| &s.exemplars).collect();
    assert!(!exemplars.is_empty() && exemplars.len() <= 200, "{quantiles:?}");
    for e in exemplars {
        let (Some(Value::StringValue(trace)), Some(Value::StringValue(span))) =
            (label_value(&e.labels, "trace:id"), label_value(&e.labels, "span:id"))
        else {
            panic!("{e:?}")
        };
        let row = pg
            .query_one(
                "SELECT duration_ns FROM spans WHERE trace_id = $1 AND span_id = $2",
                &[&trace, &span],
            )
            .await
            .unwrap();
        assert_eq!(e.value, row.get::<_, i64>(0) as f64 / 1e9);
    }
    let (status, body) = get_bytes(&server, &path, Some("shop"), "application/protobuf").await;
    assert_eq!(status, 200);
    assert_eq!(
        <tempopb::QueryRangeResponse as prost::Message>::decode(body.as_slice()).unwrap(),
        quantiles
    );
    let q = "%7B%20%7D%20%7C%20histogram_over_time(duration)";
    let path = format!("/api/metrics/query_range?q={q}&start={start}&end={end}&step=5m");
    let (status, body) = get_bytes(&server, &path, Some("shop"), "*/*").await;
    assert_eq!(status, 200);
    let histogram: tempopb::QueryRangeResponse = strict(&body);
    let mut spans = 0;
    for s in &histogram.series {
        let Some(Value::DoubleValue(bound)) = label_value(&s.labels, "__bucket") else {
            panic!("{s:?}")
        };
        assert_eq!((bound * 1e9).log2().fract(), 0.0, "a power of two ns: {bound}");
        spans += s.samples.iter().map(|x| x.value as i64).sum::<i64>();
    }
    assert_eq!(spans, sql.values().sum::<i64>());

    // The configured limits: a range over 2h is a 400 with Tempo's text; more than 50 series
    // is Tempo's partial answer, cut to 50.
    let q = "%7B%7D%7Crate()";
    let path = format!("/api/metrics/query_range?q={q}&start={}&end={end}", start - 3_601);
    let (status, body) = get(&server, &path, Some("shop")).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("exceeds the maximum allowed duration of 2h0m0s"),
        "{body}"
    );
    let q = "%7B%7D%7Crate()%20by%20(span%3Aid)";
    let path = format!("/api/metrics/query_range?q={q}&start={start}&end={end}");
    let (status, body) = get(&server, &path, Some("shop")).await;
    assert_eq!(status, 200, "{body}");
    let cut: tempopb::QueryRangeResponse = strict(body.as_bytes());
    assert_eq!(cut.series.len(), 50);
    assert_eq!(cut.status, tempopb::PartialStatus::Partial as i32);
    assert!(
        cut.message.contains("exceeds maximum series limit of 50"),
        "{}",
        cut.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_counters_follow_the_configured_slos() {
    let dir = tempfile::tempdir().unwrap();
    let slos = "query_frontend:\n  search:\n    duration_slo: 1us\n  trace_by_id:\n    duration_slo: 1h\n";
    let server = TestServer::start_in(dir.path(), slos).await;
    let (status, _) = get(&server, "/api/search?q=%7B%7D", Some("slo")).await;
    assert_eq!(status, 200);
    let (status, _) = get(&server, "/api/traces/0123456789abcdef0123456789abcdef", Some("slo")).await;
    assert_eq!(status, 404);
    let metrics = server.metrics_text().await;
    let value = |name: &str, op: &str| -> f64 {
        let series = format!("{name}{{tenant=\"slo\",op=\"{op}\",result=\"completed\"}} ");
        let line = metrics.lines().find(|l| l.starts_with(&series));
        line.map_or(0.0, |l| l[series.len()..].trim().parse().unwrap())
    };
    assert_eq!(value("tempo_query_frontend_queries_total", "search"), 1.0, "{metrics}");
    assert_eq!(
        value("tempo_query_frontend_queries_within_slo_total", "search"),
        0.0,
        "over 1us"
    );
    assert_eq!(value("tempo_query_frontend_queries_total", "traces"), 1.0, "{metrics}");
    assert_eq!(
        value("tempo_query_frontend_queries_within_slo_total", "traces"),
        1.0,
        "a 404 within 1h"
    );
}
