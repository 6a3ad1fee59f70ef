//! When the warehouse cannot keep up (here: its object store refuses every flush), live buffers
//! fill to `max_live_bytes` and receivers push back with 429 / ResourceExhausted instead of
//! growing without bound.

mod common;

use common::{TestServer, free_port};
use tracehouse_benches::send::Protocol;
use tracehouse_benches::tracegen::{TraceGen, TraceGenConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_buffers_push_back() {
    let dead_port = free_port(); // nothing listens: every flush fails and is retried later
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "ingester:\n  max_live_bytes: 8000000\n  max_block_bytes: 4000000\n  max_block_duration: 100ms\n  flush_check_period: 50ms\n\
         storage:\n  trace:\n    backend: s3\n    s3:\n      bucket: b\n      endpoint: 127.0.0.1:{dead_port}\n      insecure: true\n      \
         forcepathstyle: true\n      access_key: k\n      secret_key: s\n"
    );
    let server = TestServer::start_in(dir.path(), &yaml).await;
    let mut http = server.sender(Protocol::HttpProtobuf, false).await;
    let mut generator = TraceGen::new(TraceGenConfig {
        seed: 5,
        ..TraceGenConfig::default()
    });
    let (mut accepted, mut pushed_back) = (0, None);
    for _ in 0..100 {
        let (req, _) = generator.request(1_000);
        let reply = http.send(&req, Some("slow")).await.unwrap();
        match reply.status {
            200 => accepted += 1,
            429 => {
                pushed_back = Some(reply);
                break;
            }
            other => panic!("unexpected status {other}: {}", reply.body),
        }
    }
    let reply = pushed_back.expect("live buffers filled and receivers pushed back");
    assert!(accepted > 0, "requests were accepted until the buffers filled");
    assert!(reply.body.contains("over capacity"), "{}", reply.body);
    assert_eq!(
        reply.retry_after.as_deref(),
        Some("1"),
        "429 tells clients when to retry"
    );
    let live = server.metric("tracehouse_warehouse_live_bytes").await;
    assert!(live <= 8_000_000, "live bytes stay bounded: {live}");

    let mut grpc = server.sender(Protocol::Grpc, false).await;
    let (req, _) = generator.request(1_000);
    let reply = grpc.send(&req, Some("slow")).await.unwrap();
    assert_eq!(reply.grpc_code, Some(tonic::Code::ResourceExhausted), "{}", reply.body);
    assert!(
        server
            .metric("tracehouse_distributor_requests_rejected_backpressure_total")
            .await
            >= 2
    );
}
