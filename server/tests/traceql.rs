//! TraceQL through the real binary: `traceql()` in SQL over tokio-postgres and psql, agreeing
//! with plain SQL on tracegen data; `EXPLAIN` shows the compiled plan; a bad query is a
//! Postgres error with a SQLSTATE and the position; tenants stay apart.

mod common;

use common::TestServer;
use tracehouse_benches::send::Protocol;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceql_over_the_postgres_wire() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), "").await;
    let mut generator = common::generator(11);
    let mut sender = server.sender(Protocol::HttpProtobuf, false).await;
    for _ in 0..3 {
        let (req, _) = generator.request(400);
        assert_eq!(sender.send(&req, Some("tq")).await.unwrap().status, 200);
    }
    // Half of the data in Parquet, half live.
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/flush", server.http_port))
        .send()
        .await
        .unwrap();
    for _ in 0..3 {
        let (req, _) = generator.request(400);
        assert_eq!(sender.send(&req, Some("tq")).await.unwrap().status, 200);
    }

    let pg = server.pg("tq").await;
    let by_service = |sql: &'static str| {
        let pg = &pg;
        async move {
            let mut rows: Vec<(String, i64)> = pg
                .query(sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get::<_, Option<String>>(0).unwrap_or_default(), r.get(1)))
                .collect();
            rows.sort();
            rows
        }
    };
    // The query agrees with plain SQL.
    let via_traceql = by_service("SELECT service_name, count(*) FROM traceql('{ status = error }') GROUP BY 1").await;
    let via_sql = by_service("SELECT service_name, count(*) FROM spans WHERE status_code = 'error' GROUP BY 1").await;
    assert!(!via_sql.is_empty(), "tracegen makes errors");
    assert_eq!(via_traceql, via_sql);

    // Structure: children of server spans, against a SQL self-join on parent ids (tracegen
    // traces are complete, so every parent is in the tree).
    let children: i64 = pg
        .query_one("SELECT count(*) FROM traceql('{ kind = server } > { }')", &[])
        .await
        .unwrap()
        .get(0);
    let joined: i64 = pg
        .query_one(
            "SELECT count(DISTINCT c.span_id) FROM spans c JOIN spans p \
             ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id WHERE p.kind = 'server'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(joined > 0);
    assert_eq!(children, joined);

    // Trace-level fields come with every span.
    let row = pg
        .query_one(
            "SELECT count(*), count(DISTINCT trace_id), min(trace_duration_ns) FROM traceql('{ trace:duration > 0ms }')",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, i64>(0) > row.get::<_, i64>(1));
    assert!(row.get::<_, i64>(2) > 0);

    // EXPLAIN shows the compiled plan, over psql.
    let explain = server
        .psql(
            "tq",
            &[
                "-c",
                "EXPLAIN SELECT count(*) FROM traceql('{ status = error && duration > 10ms }')",
            ],
        )
        .unwrap();
    assert!(explain.contains("logical_plan"), "{explain}");
    assert!(explain.contains("status_code = Utf8(\"error\")"), "{explain}");
    assert!(explain.contains("duration_ns > Int64(10000000)"), "{explain}");

    // A bad query: a Postgres error with a SQLSTATE and the position.
    let err = pg.query("SELECT * FROM traceql('{ .a = }')", &[]).await.unwrap_err();
    let db = err.as_db_error().expect("a database error");
    assert_eq!(db.code().code(), "42601");
    assert!(db.message().contains("line 1, col 8"), "{}", db.message());
    let err = pg
        .query("SELECT * FROM traceql('{ 1 = \"x\" }')", &[])
        .await
        .unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "42804");
    let psql_err = server
        .psql("tq", &["-c", "SELECT * FROM traceql('{ } | rate()')"])
        .unwrap_err();
    assert!(psql_err.contains("metrics queries"), "{psql_err}");

    // Another tenant sees none of it.
    let other: i64 = server
        .pg("other")
        .await
        .query_one("SELECT count(*) FROM traceql('{ }')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(other, 0);
}
