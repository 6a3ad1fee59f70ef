//! Microservices mode against a real Kafka-compatible broker (`tansu`, fresh per test): every
//! component is a separate `tracehouse` process sharing one table directory.
//!
//! - end to end: distributor, two block-builders, a live-store and a querier; every span
//!   acknowledged is queryable at once (live-store) and later from the tables, exactly once;
//! - a block-builder killed with `kill -9` mid-traffic, and one aborted between its table commit
//!   and its offset commit, then restarted: every acknowledged span exactly once;
//! - a second block-builder joining takes partitions over (rebalance), nothing lost or doubled;
//! - the broker stopped while the distributor takes traffic: 503 / Unavailable and `/ready`
//!   failing, then recovery, with every acknowledged span stored once;
//! - a topic written as the OpenTelemetry Collector's Kafka exporter does (`otlp_proto`, and
//!   `otlp_json`), with and without a tenant header.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::kafka::{Broker, produce_raw};
use common::{TestServer, span_ids};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tracehouse_benches::send::Protocol;
use tracehouse_benches::tracegen::{TraceGen, TraceGenConfig};

const TOPIC: &str = "spans";

/// One deployment: a broker and the shared table directory.
struct Deployment {
    root: tempfile::TempDir,
    broker: Broker,
    storage: PathBuf,
}

impl Deployment {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let broker = Broker::start(&root.path().join("broker"));
        let storage = root.path().join("tables");
        Self { root, broker, storage }
    }

    /// The config of one component.
    fn yaml(&self, target: &str, extra: &str) -> String {
        let base = format!(
            "target: {target}\n\
             ingest:\n  kafka:\n    address: {}\n    topic: {TOPIC}\n    consumer_group: builders\n    \
             auto_create_topic_default_partitions: 4\n    write_timeout: 3s\n\
             block_builder:\n  consume_cycle_duration: 1s\n\
             live_store:\n  prune_interval: 200ms\n",
            self.broker.address()
        );
        let mut config: serde_yaml::Value = serde_yaml::from_str(&base).unwrap();
        if !extra.is_empty() {
            common::merge(&mut config, serde_yaml::from_str(extra).unwrap());
        }
        serde_yaml::to_string(&config).unwrap()
    }

    async fn start(&self, name: &str, target: &str, extra: &str) -> TestServer {
        self.start_with_env(name, target, extra, &[]).await
    }

    async fn start_with_env(&self, name: &str, target: &str, extra: &str, env: &[(&str, &str)]) -> TestServer {
        TestServer::start_component(
            &self.root.path().join(name),
            &self.storage,
            &self.yaml(target, extra),
            env,
        )
        .await
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }
}

fn tracegen(seed: u64) -> TraceGen {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    TraceGen::new(TraceGenConfig {
        seed,
        start_unix_nano: now - 60_000_000_000,
        ..TraceGenConfig::default()
    })
}

/// Sends `requests` requests of ~`spans` spans for `tenant`; returns the acknowledged span ids.
async fn send(
    server: &TestServer,
    protocol: Protocol,
    seed: u64,
    requests: usize,
    spans: usize,
    tenant: &str,
) -> HashSet<String> {
    let mut sender = server.sender(protocol, false).await;
    let mut g = tracegen(seed);
    let mut acked = HashSet::new();
    for _ in 0..requests {
        let (req, _) = g.request(spans);
        let reply = sender.send(&req, Some(tenant)).await.unwrap();
        assert_eq!(reply.status, 200, "{reply:?}");
        acked.extend(span_ids(&req));
    }
    acked
}

/// Waits until the querier holds exactly `acked` for `tenant`: same ids, no row twice. Fails
/// at once on a duplicate.
async fn wait_exactly(querier: &TestServer, tenant: &str, acked: &HashSet<String>, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (rows, distinct, ids) = querier.stored_span_ids(tenant).await;
        assert_eq!(rows, distinct, "a span was returned twice ({tenant})");
        let missing = acked.difference(&ids).count();
        let extra = ids.difference(acked).count();
        if missing == 0 {
            assert_eq!(extra, 0, "spans nobody acknowledged ({tenant})");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} acknowledged spans missing for {tenant} after {within:?}",
            acked.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Counts by reading the Delta tables directly through a querier without live-store.
async fn wait_in_tables(querier: &TestServer, tenant: &str, acked: &HashSet<String>, within: Duration) {
    wait_exactly(querier, tenant, acked, within).await;
}

async fn metric(server: &TestServer, name: &str) -> u64 {
    server.metric(name).await
}

async fn ready_status(server: &TestServer) -> u16 {
    reqwest::get(format!("{}/ready", server.http()))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microservices_end_to_end_exactly_once() {
    let d = Deployment::new();
    let distributor = d.start("distributor", "distributor", "").await;
    let b1 = d.start("builder-1", "block-builder", "").await;
    let b2 = d.start("builder-2", "block-builder", "").await;
    let live = d.start("live-store", "live-store", "").await;
    let querier = d
        .start(
            "querier",
            "querier",
            &format!("querier:\n  live_store_addresses: [127.0.0.1:{}]\n", live.http_port),
        )
        .await;
    let tables_only = d.start("querier-tables", "querier", "").await;

    let mut acked: HashMap<&str, HashSet<String>> = HashMap::new();
    acked
        .entry("team-a")
        .or_default()
        .extend(send(&distributor, Protocol::Grpc, 1, 20, 200, "team-a").await);
    acked
        .entry("team-a")
        .or_default()
        .extend(send(&distributor, Protocol::HttpProtobuf, 2, 20, 200, "team-a").await);
    acked
        .entry("team-b")
        .or_default()
        .extend(send(&distributor, Protocol::HttpJson, 3, 10, 100, "team-b").await);
    let total: usize = acked.values().map(HashSet::len).sum();
    assert!(total > 8000, "{total}");

    // Fresh: the querier answers every acknowledged span (live-store plus tables), never twice,
    // well before the tables hold them all.
    let started = Instant::now();
    for (tenant, ids) in &acked {
        wait_exactly(&querier, tenant, ids, Duration::from_secs(30)).await;
    }
    eprintln!("all acknowledged spans queryable after {:?}", started.elapsed());

    // The tables get everything, exactly once; the live-store then lets go.
    for (tenant, ids) in &acked {
        wait_in_tables(&tables_only, tenant, ids, Duration::from_secs(60)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&live, "tracehouse_live_store_records").await > 0 {
        assert!(Instant::now() < deadline, "live-store still holds committed records");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (tenant, ids) in &acked {
        wait_exactly(&querier, tenant, ids, Duration::from_secs(1)).await;
    }
    // Trace by id through the Tempo API of the querier.
    let client = querier.pg("team-a").await;
    let trace: String = client
        .query_one("SELECT trace_id FROM spans LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    let n: i64 = client
        .query_one(&format!("SELECT count(*) FROM spans WHERE trace_id = '{trace}'"), &[])
        .await
        .unwrap()
        .get(0);
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/traces/{trace}", querier.http()))
        .header("X-Scope-OrgID", "team-a")
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let spans: usize = body["batches"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["scopeSpans"].as_array().unwrap())
        .map(|s| s["spans"].as_array().unwrap().len())
        .sum();
    assert_eq!(spans as i64, n);

    // Metrics and readiness.
    let records = metric(&distributor, "tracehouse_kafka_records_produced_total").await;
    assert!(records >= 50, "{records}");
    assert_eq!(
        metric(&distributor, "tracehouse_distributor_spans_received_total").await as usize,
        total
    );
    let mut consumed = 0;
    for b in [&b1, &b2] {
        consumed += metric(b, "tracehouse_kafka_records_consumed_total").await;
        let text = b.metrics_text().await;
        assert!(
            text.contains("tracehouse_block_builder_table_commit_seconds_total"),
            "{text}"
        );
    }
    assert!(consumed >= records, "{consumed} < {records}");
    // Lag per assigned partition, from librdkafka's statistics (every 5 s).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut partitions = 0;
        for b in [&b1, &b2] {
            let text = b.metrics_text().await;
            partitions += text.matches("tracehouse_kafka_consumer_lag{partition=").count();
        }
        if partitions == 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lag of {partitions} partitions reported, not 4"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(metric(&distributor, "tracehouse_kafka_connected").await, 1);
    for s in [&distributor, &b2, &live, &querier] {
        assert_eq!(ready_status(s).await, 200);
    }
    // Components refuse what they do not serve: the querier takes no spans.
    // Its own listening sockets are checked: a bare connect could reach another test's
    // process that took the unused port meanwhile.
    let listening = querier.listening_ports();
    assert!(listening.contains(&querier.http_port), "{listening:?}");
    for port in [querier.otlp_grpc_port, querier.otlp_http_port] {
        assert!(!listening.contains(&port), "querier listens on {port}: {listening:?}");
    }
}

/// Sends from two tasks until `stop`, recording acknowledged ids; failures are tolerated.
fn traffic(
    distributor: &TestServer,
    acked: Arc<Mutex<HashSet<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    seed: u64,
) -> Vec<tokio::task::JoinHandle<(u64, u64)>> {
    let mut tasks = Vec::new();
    for (i, protocol) in [Protocol::Grpc, Protocol::HttpProtobuf].into_iter().enumerate() {
        let endpoint = match protocol {
            Protocol::Grpc => format!("http://127.0.0.1:{}", distributor.otlp_grpc_port),
            _ => distributor.otlp_http(),
        };
        let acked = acked.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut sender = tracehouse_benches::send::Sender::connect(protocol, &endpoint, false)
                .await
                .unwrap();
            let mut g = tracegen(seed + i as u64);
            let (mut ok, mut failed) = (0u64, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (req, _) = g.request(100);
                match sender.send(&req, Some("t")).await {
                    Ok(r) if r.status == 200 => {
                        ok += 1;
                        acked.lock().unwrap().extend(span_ids(&req));
                    }
                    _ => {
                        failed += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ok, failed)
        }));
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_builder_crashes_lose_and_duplicate_nothing() {
    let d = Deployment::new();
    let distributor = d.start("distributor", "distributor", "").await;
    let mut builder = d.start("builder", "block-builder", &builder_id(0)).await;
    let tables = d.start("querier", "querier", "").await;
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let senders = traffic(&distributor, acked.clone(), stop.clone(), 10);

    // kill -9 in the middle of traffic, twice, after the builder has committed something.
    for _ in 0..2 {
        let before = metric(&builder, "tracehouse_block_builder_table_commits_total").await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while metric(&builder, "tracehouse_block_builder_table_commits_total").await < before + 2 {
            assert!(
                Instant::now() < deadline,
                "builder commits nothing; log:\n{}",
                builder.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        builder.kill9();
        tokio::time::sleep(Duration::from_millis(700)).await;
        builder.spawn().await;
    }

    // A crash exactly between the table commit and the Kafka offset commit: the failpoint
    // aborts the process there; the restarted builder must skip what the table holds.
    builder.kill9();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    builder
        .env
        .push((tracehouse_ingest_failpoint().to_string(), "1".to_string()));
    builder.spawn_unready();
    let status = builder
        .wait_exit(Duration::from_secs(60))
        .expect("the failpoint aborts the builder");
    assert!(!status.success());
    assert!(
        builder.log().contains("aborting before committing offsets"),
        "{}",
        builder.log()
    );
    builder.env.clear();
    builder.spawn().await;

    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut ok = 0;
    for t in senders {
        ok += t.await.unwrap().0;
    }
    assert!(ok > 20, "{ok}");
    let acked = acked.lock().unwrap().clone();
    wait_in_tables(&tables, "t", &acked, Duration::from_secs(60)).await;
    // The restarted builder re-read records the table already held, and skipped them.
    assert!(metric(&builder, "tracehouse_block_builder_records_already_committed_total").await > 0);
}

/// A builder's static group membership, as a StatefulSet pod name would give it.
fn builder_id(n: u32) -> String {
    format!("block_builder:\n  instance_id: builder-{n}\n")
}

fn tracehouse_ingest_failpoint() -> &'static str {
    // Mirrors tracehouse_ingest::block_builder::CRASH_AFTER_TABLE_COMMIT (tests reach the
    // binary, not the crate).
    "TRACEHOUSE_TEST_CRASH_AFTER_TABLE_COMMIT"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_block_builder_joining_rebalances() {
    let d = Deployment::new();
    let distributor = d.start("distributor", "distributor", "").await;
    let first = d.start("builder-1", "block-builder", "").await;
    let tables = d.start("querier", "querier", "").await;
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let senders = traffic(&distributor, acked.clone(), stop.clone(), 20);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = d.start("builder-2", "block-builder", "").await;
    // The second builder gets partitions and writes.
    let deadline = Instant::now() + Duration::from_secs(45);
    while metric(&second, "tracehouse_block_builder_table_commits_total").await == 0 {
        assert!(
            Instant::now() < deadline,
            "the second builder never wrote; log:\n{}",
            second.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let first_commits = metric(&first, "tracehouse_block_builder_table_commits_total").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in senders {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 1000, "{}", acked.len());
    wait_in_tables(&tables, "t", &acked, Duration::from_secs(60)).await;
    assert!(metric(&first, "tracehouse_kafka_rebalances_total").await >= 2);
    // Both keep writing after the rebalance: the first one still owns partitions.
    assert!(metric(&first, "tracehouse_block_builder_table_commits_total").await > first_commits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_fails_requests_then_recovers() {
    let d = Deployment::new();
    let mut distributor = d.start("distributor", "distributor", "").await;
    let _builder = d.start("builder", "block-builder", "").await;
    let tables = d.start("querier", "querier", "").await;
    let mut acked = send(&distributor, Protocol::Grpc, 30, 5, 100, "t").await;

    // Stopped: the process is frozen, so connections hang instead of being refused (what a
    // dead host looks like). Restarting tansu 0.6.0 on the same storage is no option: its
    // idempotent-produce check panics for a producer that wrote before the restart.
    d.broker.pause();
    // Requests fail within the write timeout with 503 / Unavailable; nothing is acknowledged.
    let mut g = tracegen(31);
    let mut grpc = distributor.sender(Protocol::Grpc, false).await;
    let mut http = distributor.sender(Protocol::HttpProtobuf, false).await;
    let (req, _) = g.request(50);
    let started = Instant::now();
    let r = grpc.send(&req, Some("t")).await.unwrap();
    assert_eq!(r.grpc_code, Some(tonic::Code::Unavailable), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
    let (req, _) = g.request(50);
    let r = http.send(&req, Some("t")).await.unwrap();
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.retry_after.as_deref(), Some("1"));
    assert!(r.body.contains("kafka"), "{}", r.body);
    let deadline = Instant::now() + Duration::from_secs(20);
    while ready_status(&distributor).await != 503 {
        assert!(Instant::now() < deadline, "/ready stays 200 with the broker down");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(metric(&distributor, "tracehouse_kafka_produce_errors_total").await >= 2);

    d.broker.resume();
    // Readiness follows the broker back.
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready_status(&distributor).await != 200 {
        assert!(Instant::now() < deadline, "/ready stays 503 after the broker came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The records that timed out made librdkafka bump the idempotent producer's epoch by
    // itself (rdkafka_broker.c, "Bump the epoch to reset the base msgid"), which Kafka
    // accepts; tansu 0.6.0 has no row for a client-bumped epoch and panics on every such
    // produce (tansu-storage lite.rs:503, "more or less than one row"). So the producer
    // that lived through the outage cannot write to this broker again, and recovery is
    // shown the way an orchestrator provides it: the distributor process restarts (a new
    // producer id) and retrying clients get through. The block-builder and the querier
    // stay up throughout.
    distributor.kill9();
    distributor.spawn().await;
    let mut http = distributor.sender(Protocol::HttpProtobuf, false).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut recovered = 0;
    while recovered < 5 {
        let (req, _) = g.request(100);
        match http.send(&req, Some("t")).await {
            Ok(r) if r.status == 200 => {
                recovered += 1;
                acked.extend(span_ids(&req));
            }
            _ => {
                assert!(Instant::now() < deadline, "no recovery; log:\n{}", distributor.log());
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    // Every acknowledged span once. Spans of requests answered 503 may be stored too: the
    // frozen broker still holds their records and writes them when it goes on (at least once
    // for what was not acknowledged; the client decides whether to retry).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (rows, distinct, ids) = tables.stored_span_ids("t").await;
        assert_eq!(rows, distinct, "a span stored twice");
        if acked.is_subset(&ids) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged spans missing",
            acked.difference(&ids).count()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_kafka_exporter_topics() {
    let d = Deployment::new();
    d.broker.create_topic("otlp_spans", 2).await;
    let producer = d.broker.producer();
    let mut g = tracegen(40);
    let mut by_tenant: HashMap<&str, HashSet<String>> = HashMap::new();
    // otlp_proto (the exporter's default): the payload is the OTLP protobuf message.
    for i in 0..10 {
        let (req, _) = g.request(50);
        let tenant = if i % 2 == 0 { None } else { Some("collector-team") };
        produce_raw(&producer, "otlp_spans", &[i as u8], &req.encode_to_vec(), tenant).await;
        by_tenant
            .entry(tenant.unwrap_or("single-tenant"))
            .or_default()
            .extend(span_ids(&req));
    }
    // otlp_json.
    for i in 0..4 {
        let (req, _) = g.request(50);
        let json = otlp_json(&req);
        produce_raw(&producer, "otlp_spans", &[i as u8], json.as_bytes(), Some("json-team")).await;
        by_tenant.entry("json-team").or_default().extend(span_ids(&req));
    }
    // A record that is not OTLP is skipped, not fatal.
    produce_raw(&producer, "otlp_spans", b"x", b"\x00\x01not otlp", None).await;

    let extra = "ingest:\n  kafka:\n    topic: otlp_spans\n    consumer_group: from-collector\n";
    let builder = d.start("builder", "block-builder", extra).await;
    let tables = d.start("querier", "querier", extra).await;
    for (tenant, ids) in &by_tenant {
        wait_in_tables(&tables, tenant, ids, Duration::from_secs(60)).await;
    }
    assert_eq!(metric(&builder, "tracehouse_kafka_records_undecodable_total").await, 1);
    assert!(d.dir("builder").exists() && Path::new(&d.storage).exists());
}

/// OTLP JSON as the Collector writes it (hex ids, camelCase, string nanos).
fn otlp_json(req: &ExportTraceServiceRequest) -> String {
    let spans: Vec<serde_json::Value> = req
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| {
            serde_json::json!({
                "traceId": hex::encode(&s.trace_id),
                "spanId": hex::encode(&s.span_id),
                "parentSpanId": hex::encode(&s.parent_span_id),
                "name": s.name,
                "kind": s.kind,
                "startTimeUnixNano": s.start_time_unix_nano.to_string(),
                "endTimeUnixNano": s.end_time_unix_nano.to_string(),
            })
        })
        .collect();
    serde_json::json!({
        "resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "collector-json"}}]},
            "scopeSpans": [{"scope": {"name": "otelcol"}, "spans": spans}]
        }]
    })
    .to_string()
}
