//! Tempo's query API through the real binary (issue #4, in progress): buildinfo and
//! `/api/search` in TraceQL and tag form, checked against SQL over the same tracegen data.

mod common;

use common::TestServer;
use serde_json::Value;
use tracehouse_benches::send::Protocol;

async fn get(server: &TestServer, path: &str, tenant: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(format!("http://127.0.0.1:{}{path}", server.http_port));
    if let Some(t) = tenant {
        req = req.header("X-Scope-OrgID", t);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
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

    // TraceQL search: shape, limits and order, and the same traces SQL finds.
    let (status, body) = get(
        &server,
        "/api/search?q=%7B%20status%20%3D%20error%20%7D&limit=5&spss=2",
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
    let got: Vec<String> = traces
        .iter()
        .map(|t| t["traceID"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, want);

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
    let (status, _) = get(&server, "/api/search", Some("../etc")).await;
    assert_eq!(status, 400, "an invalid tenant is the client's error");
}
