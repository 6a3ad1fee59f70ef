//! Security of every query surface, against the real binary with real clients: each input of
//! the attack probe (issue 14) replayed over the Postgres wire (tokio-postgres, psql), Flight
//! (pyarrow) and the HTTP API, asserting the refusal and its code, that the server stays up,
//! that another tenant keeps being answered meanwhile, and that no data changed.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use tracehouse_benches::send::Protocol;

/// A server with tenants `a` and `b`, each holding flushed spans and live ones.
async fn two_tenants(extra_yaml: &str) -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), extra_yaml).await;
    let mut generator = common::generator(53);
    let mut sender = server.sender(Protocol::HttpProtobuf, false).await;
    for tenant in ["a", "b"] {
        let (req, _) = generator.request(400);
        assert_eq!(sender.send(&req, Some(tenant)).await.unwrap().status, 200);
    }
    let flushed = reqwest::Client::new()
        .post(format!("{}/flush", server.http()))
        .send()
        .await
        .unwrap();
    assert!(flushed.status().is_success());
    for tenant in ["a", "b"] {
        let (req, _) = generator.request(100);
        assert_eq!(sender.send(&req, Some(tenant)).await.unwrap().status, 200);
    }
    (dir, server)
}

/// The SQLSTATE of a failed statement on `client`.
async fn sqlstate(client: &tokio_postgres::Client, sql: &str) -> String {
    match client.simple_query(sql).await {
        Ok(_) => format!("accepted: {sql}"),
        Err(e) => e
            .code()
            .map_or_else(|| format!("no code: {e}"), |c| c.code().to_string()),
    }
}

/// Names and sizes of every file under `dir`.
fn files(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path().display().to_string(), meta.len()));
            }
        }
    }
    out.sort();
    out
}

/// Runs each ticket through pyarrow's plain Flight as `tenant`: `ok`, or the exception's class,
/// followed by ` too complex` when the message says a limit was hit.
fn flight_tickets(port: u16, tenant: &str, tickets: &[String]) -> Vec<String> {
    const SCRIPT: &str = r#"
import sys
import pyarrow.flight as flight
client = flight.FlightClient(f"grpc://127.0.0.1:{sys.argv[1]}")
opts = flight.FlightCallOptions(headers=[(b"x-scope-orgid", sys.argv[2].encode())])
for ticket in sys.argv[3:]:
    try:
        client.do_get(flight.Ticket(ticket.encode()), options=opts).read_all()
        print("ok")
    except Exception as e:
        limit = "too complex" in str(e) or "deeper" in str(e)
        print(type(e).__name__ + (" too complex" if limit else ""))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", SCRIPT, &port.to_string(), tenant])
        .args(tickets)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Tenant b answers a count within `limit` (a liveness check while a is hostile).
async fn b_answers(server: &TestServer, expected: i64, limit: Duration) {
    let started = Instant::now();
    let n = server.span_count("b").await;
    assert_eq!(n, expected);
    assert!(started.elapsed() < limit, "tenant b waited {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_is_read_only_and_confined_to_the_tenant() {
    let (dir, server) = two_tenants("").await;
    let (count_a, count_b) = (server.span_count("a").await, server.span_count("b").await);
    let b_files = files(&server.table_dir("b"));
    let target = dir.path().join("written.csv");
    let b_table = server.table_dir("b");
    let statements = [
        format!(
            "CREATE EXTERNAL TABLE bx STORED AS PARQUET LOCATION '{}/'",
            b_table.display()
        ),
        "CREATE EXTERNAL TABLE pw STORED AS CSV LOCATION '/etc/passwd'".to_string(),
        format!("COPY (SELECT * FROM spans) TO '{}'", target.display()),
        "DROP TABLE spans".into(),
        "DROP VIEW traces".into(),
        "CREATE TABLE t AS SELECT 1".into(),
        "CREATE VIEW v AS SELECT 1".into(),
        "INSERT INTO spans (trace_id) VALUES ('x')".into(),
        "DELETE FROM spans".into(),
        "SET datafusion.catalog.default_catalog = 'nope'".into(),
        "SET datafusion.runtime.memory_limit = '64G'".into(),
        "SET datafusion.runtime.temp_directory = '/tmp'".into(),
        "EXPLAIN CREATE TABLE t AS SELECT 1".into(),
        "SELECT 1; DROP TABLE spans".into(),
    ];
    let pg = server.pg("a").await;
    for sql in &statements {
        assert_eq!(sqlstate(&pg, sql).await, "42501", "{sql}");
        // The extended protocol (prepare) is refused the same way.
        let err = pg.prepare(sql).await.expect_err(sql);
        assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{sql}: {err}");
    }
    // psql shows the refusal as a Postgres error.
    let err = server.psql("a", &["-c", "DROP TABLE spans"]).unwrap_err();
    assert!(err.contains("permission denied"), "{err}");
    // Harmless session settings are accepted and stay in the connection.
    for sql in [
        "SET statement_timeout = '5s'",
        "SET application_name = 'probe'",
        "SET TIME ZONE 'America/New_York'",
        "SET extra_float_digits = 3",
    ] {
        pg.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let other = server.pg("a").await;
    let zone = other.simple_query("SHOW TIME ZONE").await.unwrap();
    let zone = zone
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap().to_string()),
            _ => None,
        })
        .unwrap();
    assert_eq!(zone, "UTC", "another connection's SET leaked");

    // Flight tickets: PermissionDenied (pyarrow's FlightUnauthorizedError) for the same
    // statements.
    let outcomes = flight_tickets(server.flight_port, "a", &statements[..4]);
    assert_eq!(outcomes, vec!["FlightUnauthorizedError"; 4]);

    // Nothing changed: no file written, both tenants' data and b's files as before, and a
    // fresh connection of tenant a still has its tables.
    assert!(!target.exists());
    assert_eq!(files(&server.table_dir("b")), b_files);
    assert_eq!(server.span_count("a").await, count_a);
    assert_eq!(server.span_count("b").await, count_b);
    let fresh = server.pg("a").await;
    fresh.simple_query("SELECT count(*) FROM traces").await.unwrap();
}

/// `{ <body> }` repeated `n` times joined by `op`.
fn chain(body: &str, op: &str, n: usize) -> String {
    vec![format!("{{ {body} }}"); n].join(&format!(" {op} "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_queries_fail_fast_and_others_keep_being_served() {
    let (_dir, server) = two_tenants("").await;
    let (count_a, count_b) = (server.span_count("a").await, server.span_count("b").await);
    let http = reqwest::Client::new();
    let search = |q: String| {
        let http = http.clone();
        let url = format!("{}/api/search", server.http());
        async move {
            let started = Instant::now();
            let r = http
                .get(url)
                .query(&[("q", q.as_str())])
                .header("X-Scope-OrgID", "a")
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            (status, body, started.elapsed())
        }
    };
    let sum = vec!["1"; 2_000].join("+");
    let refused = [
        format!("{{ .a = {sum} }}"),
        chain("", "&&", 3_000),
        chain("", ">>", 10),
        chain("", ">", 20),
        format!("{{ }}{}", " | count() > 0".repeat(200)),
    ];
    for q in refused {
        let (status, body, took) = search(q.clone()).await;
        assert_eq!(status, 400, "{}: {body}", &q[..q.len().min(60)]);
        assert!(body.contains("too complex") || body.contains("deeper"), "{body}");
        assert!(
            took < Duration::from_secs(2),
            "{:?} for {}",
            took,
            &q[..q.len().min(60)]
        );
        b_answers(&server, count_b, Duration::from_secs(3)).await;
    }
    // Chains that used to double their plan per operator now plan linearly and answer.
    for q in [chain("", "&&", 10), format!("{{ }}{}", " | count() > 0".repeat(8))] {
        let (status, body, _) = search(q.clone()).await;
        assert_eq!(status, 200, "{q}: {body}");
    }

    // SQL: deep expressions and traceql() chains, over pgwire and Flight.
    let pg = server.pg("a").await;
    let deep_sql = [
        format!("SELECT {}", vec!["1"; 3_000].join("+")),
        format!("SELECT count(*) FROM spans WHERE {}", vec!["0=0"; 5_000].join(" OR ")),
        format!("SELECT count(*) FROM traceql('{}')", chain("", ">>", 10)),
        format!("SELECT {}1{}", "(".repeat(5_000), ")".repeat(5_000)),
        format!("SELECT {}1{}", "abs(".repeat(40), ")".repeat(40)),
    ];
    for sql in &deep_sql {
        let started = Instant::now();
        let state = sqlstate(&pg, sql).await;
        assert!(state == "54001" || state == "54000", "{state} for {}", &sql[..60]);
        assert!(started.elapsed() < Duration::from_secs(2));
        b_answers(&server, count_b, Duration::from_secs(3)).await;
    }
    let mut hostile = deep_sql[..2].to_vec();
    hostile.push(chain("", "&&", 3_000));
    // InvalidArgument is pyarrow's ArrowInvalid.
    assert_eq!(
        flight_tickets(server.flight_port, "a", &hostile),
        vec!["ArrowInvalid too complex"; 3]
    );
    let ready = reqwest::get(format!("{}/ready", server.http())).await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(server.span_count("a").await, count_a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_stop_on_timeout_cancel_and_memory_limit() {
    let (_dir, server) = two_tenants("query:\n  max_memory_bytes: 268435456\n  timeout: 20s\n").await;
    let endless = "SELECT count(*) FROM generate_series(1, 1000000000000)";

    // A session's statement_timeout stops the query, and the core is free after.
    let pg = server.pg("a").await;
    pg.simple_query("SET statement_timeout = '2s'").await.unwrap();
    let started = Instant::now();
    assert_eq!(sqlstate(&pg, endless).await, "57014");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "{took:?}"
    );
    let cpu = server.cpu_seconds();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(server.cpu_seconds() - cpu < 0.5, "still busy after the timeout");

    // Also when the SET comes in the same text as the query (psql -c 'SET ...; SELECT ...').
    let pg = server.pg("a").await;
    let started = Instant::now();
    assert_eq!(
        sqlstate(&pg, &format!("SET statement_timeout = '2s'; {endless}")).await,
        "57014"
    );
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());

    // A CancelRequest stops it.
    let pg = server.pg("a").await;
    let token = pg.cancel_token();
    let cancel = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    });
    let started = Instant::now();
    assert_eq!(sqlstate(&pg, endless).await, "57014");
    assert!(started.elapsed() < Duration::from_secs(6));
    cancel.await.unwrap();
    let cpu = server.cpu_seconds();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(server.cpu_seconds() - cpu < 0.5, "still busy after the cancel");

    // A client that goes away mid-query (psql killed) stops it too.
    let mut psql = std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &server.pg_port.to_string(),
            "-U",
            "tester",
            "-d",
            "a",
            "-X",
            "-c",
            endless,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let busy = server.cpu_seconds();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(server.cpu_seconds() - busy > 0.2, "the query was not running");
    psql.kill().unwrap();
    psql.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let cpu = server.cpu_seconds();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(server.cpu_seconds() - cpu < 0.5, "still busy after the client left");

    // The engine's own timeout stops a query nobody set a timeout for.
    let pg = server.pg("a").await;
    let started = Instant::now();
    assert_eq!(sqlstate(&pg, endless).await, "57014");
    assert!(started.elapsed() < Duration::from_secs(30));

    // Scalar functions' results count against the pool.
    for sql in [
        "SELECT length(repeat('x', 1000000000))",
        "SELECT length(lpad('x', 1000000000))",
        "SELECT cardinality(range(1, 1000000000))",
        "SELECT length(repeat(name, 100000000)) FROM spans",
    ] {
        assert_eq!(sqlstate(&pg, sql).await, "53200", "{sql}");
    }
    let rss_kb: u64 = std::fs::read_to_string(format!("/proc/{}/status", server.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    assert!(rss_kb < 1_500_000, "peak RSS {rss_kb} kB");
    b_answers(&server, server.span_count("b").await, Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_hold_and_connections_are_bounded() {
    let yaml = "postgres:\n  max_connections: 3\n  idle_timeout: 2s\n  users:\n    alice: wonderland\n    bob:\n      password: builder\n      tenant: b\n";
    let (_dir, server) = two_tenants(yaml).await;
    // SCRAM state is per connection: logins keep working, also after a wrong password.
    for _ in 0..3 {
        let c = server.pg_as("a", "alice", Some("wonderland")).await.unwrap();
        c.simple_query("SELECT 1").await.unwrap();
    }
    let wrong = server.pg_as("a", "alice", Some("nope")).await.unwrap_err();
    assert_eq!(wrong.code().map(|c| c.code()), Some("28P01"), "{wrong}");
    let c = server.pg_as("a", "alice", Some("wonderland")).await.unwrap();
    c.simple_query("SELECT 1").await.unwrap();
    drop(c);
    // A tenant-bound user reads only its tenant.
    let bob = server.pg_as("postgres", "bob", Some("builder")).await.unwrap();
    let n: i64 = bob.query_one("SELECT count(*) FROM spans", &[]).await.unwrap().get(0);
    assert_eq!(
        n,
        server
            .pg_as("b", "alice", Some("wonderland"))
            .await
            .unwrap()
            .query_one("SELECT count(*) FROM spans", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    );
    drop(bob);
    let denied = match server.pg_as("a", "bob", Some("builder")).await {
        Ok(c) => c.simple_query("SELECT 1").await.unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(denied.code().map(|c| c.code()), Some("42501"), "{denied}");

    // Idle connections are closed; past max_connections a client reads SQLSTATE 53300.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held: Vec<_> = futures::future::join_all((0..3).map(|_| server.pg_as("a", "alice", Some("wonderland"))))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let full = server.pg_as("a", "alice", Some("wonderland")).await.unwrap_err();
    assert_eq!(full.code().map(|c| c.code()), Some("53300"), "{full}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(held[0].simple_query("SELECT 1").await.is_err(), "idle connection kept");
    let again = server.pg_as("a", "alice", Some("wonderland")).await.unwrap();
    again.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_create_no_tenants_and_bad_tenant_ids_are_refused() {
    let (dir, server) = two_tenants("").await;
    let tenants_dir = dir.path().join("data").join("tenants");
    let before: Vec<_> = std::fs::read_dir(&tenants_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let http = reqwest::Client::new();
    let rss_kb = || -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", server.pid()))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap()
    };
    let rss_before = rss_kb();
    for i in 0..300 {
        let r = http
            .get(format!("{}/api/search", server.http()))
            .query(&[("q", "{ }")])
            .header("X-Scope-OrgID", format!("nobody-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["traces"].as_array().map_or(0, Vec::len), 0);
    }
    // Sessions of tenants past `query.max_tenant_sessions` are freed (each holds ~5 MB of
    // pg_catalog tables; 300 kept would be ~1.6 GB).
    let grown_mb = rss_kb().saturating_sub(rss_before) / 1024;
    assert!(grown_mb < 900, "RSS grew {grown_mb} MB over 300 fresh tenants");
    let pg = server.pg("nobody-x").await;
    let n: i64 = pg.query_one("SELECT count(*) FROM spans", &[]).await.unwrap().get(0);
    assert_eq!(n, 0);
    let after: Vec<_> = std::fs::read_dir(&tenants_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(before.len(), after.len(), "reads created tenant directories");

    // Non-ASCII or raw-byte tenant ids are 400 on reads and on ingest, never the default.
    for value in [
        reqwest::header::HeaderValue::from_bytes("tén".as_bytes()).unwrap(),
        reqwest::header::HeaderValue::from_bytes(&[0xe6, 0x97, 0xa5, 0xe6, 0x9c, 0xac]).unwrap(),
        reqwest::header::HeaderValue::from_bytes(&[0xff, 0xfe]).unwrap(),
    ] {
        let r = http
            .get(format!("{}/api/search", server.http()))
            .query(&[("q", "{ }")])
            .header("X-Scope-OrgID", value.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let r = http
            .post(format!("{}/v1/traces", server.otlp_http()))
            .header("Content-Type", "application/json")
            .header("X-Scope-OrgID", value)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_of_one_tenant_do_not_block_others() {
    use arrow_flight::sql::client::FlightSqlServiceClient;
    let (_dir, server) = two_tenants("").await;
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", server.flight_port))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut a = FlightSqlServiceClient::new(channel.clone());
    a.set_header("x-scope-orgid", "a");
    let mut refused = None;
    for i in 0..1_100 {
        match a.prepare(format!("SELECT {i}"), None).await {
            Ok(_) => {}
            Err(e) => {
                refused = Some((i, e.to_string()));
                break;
            }
        }
    }
    let (at, message) = refused.expect("a tenant's prepared statements are capped");
    assert_eq!(at, tracehouse_flight::prepared::MAX_PREPARED_PER_TENANT, "{message}");
    let mut b = FlightSqlServiceClient::new(channel);
    b.set_header("x-scope-orgid", "b");
    let mut stmt = b.prepare("SELECT count(*) FROM spans".into(), None).await.unwrap();
    let info = stmt.execute().await.unwrap();
    assert_eq!(info.endpoint.len(), 1);
}

/// `r` with a bearer token and a tenant header, when given.
fn authed(mut r: reqwest::RequestBuilder, token: Option<&str>, tenant: Option<&str>) -> reqwest::RequestBuilder {
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(t) = tenant {
        r = r.header("X-Scope-OrgID", t);
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_auth_protects_http_otlp_and_flight_with_tenant_binding() {
    let dir = tempfile::tempdir().unwrap();
    let yaml =
        "server:\n  auth:\n    - bearer_token: admin-token\n    - bearer_token: shop-token\n      tenant: shop\n";
    let server = TestServer::start_in(dir.path(), yaml).await;
    let http = reqwest::Client::new();
    let mut generator = common::generator(59);
    let (req, sent) = generator.request(50);
    let body = prost::Message::encode_to_vec(&req);
    let post = |token: Option<&'static str>, tenant: Option<&'static str>| {
        let r = http
            .post(format!("{}/v1/traces", server.otlp_http()))
            .header("Content-Type", "application/x-protobuf")
            .body(body.clone());
        authed(r, token, tenant).send()
    };
    assert_eq!(post(None, None).await.unwrap().status(), 401);
    assert_eq!(post(Some("wrong"), None).await.unwrap().status(), 401);
    assert_eq!(post(Some("shop-token"), Some("other")).await.unwrap().status(), 403);
    // The bound token writes into its tenant without naming it.
    assert_eq!(post(Some("shop-token"), None).await.unwrap().status(), 200);
    assert_eq!(post(Some("admin-token"), Some("other")).await.unwrap().status(), 200);

    let search = |token: Option<&'static str>, tenant: Option<&'static str>| {
        authed(http.get(format!("{}/api/search/tags", server.http())), token, tenant).send()
    };
    assert_eq!(search(None, None).await.unwrap().status(), 401);
    assert_eq!(search(Some("shop-token"), Some("other")).await.unwrap().status(), 403);
    assert_eq!(search(Some("shop-token"), None).await.unwrap().status(), 200);
    // Every tenant's limits and the configuration are for unbound credentials only.
    for path in ["/status/overrides", "/status/config"] {
        let status = |token| authed(http.get(format!("{}{path}", server.http())), token, None).send();
        assert_eq!(status(None).await.unwrap().status(), 401, "{path}");
        assert_eq!(status(Some("shop-token")).await.unwrap().status(), 403, "{path}");
        let admin = status(Some("admin-token")).await.unwrap();
        assert_eq!(admin.status(), 200, "{path}");
        let text = admin.text().await.unwrap();
        assert!(!text.contains("shop-token") && !text.contains("admin-token"), "{text}");
    }
    // Probes and scrapers need no credentials.
    assert_eq!(
        http.get(format!("{}/ready", server.http()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{}/metrics", server.http()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // OTLP/gRPC: Unauthenticated without a token.
    let mut grpc = server.sender(Protocol::Grpc, false).await;
    let r = grpc.send(&req, Some("shop")).await.unwrap();
    assert_eq!(r.grpc_code, Some(tonic::Code::Unauthenticated), "{}", r.body);

    // Flight takes server.auth when flight.auth is empty.
    let script = r#"
import sys
import pyarrow.flight as flight
client = flight.FlightClient(f"grpc://127.0.0.1:{sys.argv[1]}")
try:
    client.do_get(flight.Ticket(b"SELECT 1")).read_all()
    print("accepted")
except flight.FlightUnauthenticatedError:
    print("unauthenticated")
opts = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer shop-token")])
print(client.do_get(flight.Ticket(b"SELECT count(*) AS n FROM spans"), options=opts).read_all()["n"][0].as_py())
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, &server.flight_port.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines[0], "unauthenticated");
    assert_eq!(
        lines[1],
        sent.to_string(),
        "the shop-token reads the spans it wrote into shop"
    );
}

/// Every front comes through the engine's one door: a tenant at its concurrent-query limit is
/// refused on Postgres (53000), Tempo's API (429) and Flight while another tenant is served;
/// the slow query is logged, and `/metrics` counts queries by front and outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_at_its_query_limit_is_refused_on_every_front() {
    let yaml = "query:\n  max_concurrent_queries_per_tenant: 1\n  slow_query_threshold: 1s\n";
    let (_dir, server) = two_tenants(yaml).await;
    let b_spans = server.span_count("b").await;
    let pg = server.pg("a").await;
    pg.simple_query("SET statement_timeout = '4s'").await.unwrap();
    let slow =
        tokio::spawn(async move { sqlstate(&pg, "SELECT count(*) FROM generate_series(1, 1000000000000)").await });
    tokio::time::sleep(Duration::from_millis(800)).await;

    assert_eq!(sqlstate(&server.pg("a").await, "SELECT 1").await, "53000");
    let search = |tenant: &'static str| {
        reqwest::Client::new()
            .get(format!("{}/api/search", server.http()))
            .header("X-Scope-OrgID", tenant)
            .query(&[("q", "{ }"), ("limit", "5")])
            .send()
    };
    let refused = search("a").await.unwrap();
    assert_eq!(refused.status(), 429);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("max_concurrent_queries_per_tenant")
    );
    let flight = flight_tickets(server.flight_port, "a", &["SELECT 1".to_string()]);
    assert_ne!(flight, ["ok"], "flight admitted a query over the limit");
    assert_eq!(search("b").await.unwrap().status(), 200);
    b_answers(&server, b_spans, Duration::from_secs(5)).await;

    assert_eq!(slow.await.unwrap(), "57014");
    assert_eq!(search("a").await.unwrap().status(), 200);
    assert_eq!(
        flight_tickets(server.flight_port, "a", &["SELECT 1".to_string()]),
        ["ok"]
    );
    assert!(
        server
            .log()
            .lines()
            .any(|l| l.contains("slow query") && l.contains("generate_series")),
        "no slow-query line in the log"
    );
    let metrics = server.metrics_text().await;
    for series in [
        r#"tracehouse_query_duration_seconds_count{front="postgres",outcome="timeout"} 1"#,
        r#"tracehouse_query_duration_seconds_count{front="postgres",outcome="resource_exhausted"} 1"#,
        r#"tracehouse_query_duration_seconds_count{front="tempo",outcome="resource_exhausted"} 1"#,
        r#"tracehouse_query_duration_seconds_count{front="flight",outcome="resource_exhausted"} 1"#,
        r#"tracehouse_query_duration_seconds_count{front="flight",outcome="ok"} 1"#,
    ] {
        assert!(metrics.contains(series), "{series} not in /metrics");
    }
}
