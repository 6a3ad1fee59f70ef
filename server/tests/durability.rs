//! `kill -9` at any moment loses no acknowledged span and duplicates none: senders run while
//! small blocks flush continuously, the server is killed mid-stream, restarted, and every
//! acknowledged span id must be stored exactly once.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestServer, span_ids};
use tracehouse_benches::send::Protocol;
use tracehouse_benches::tracegen::{TraceGen, TraceGenConfig};

const FAST_FLUSH: &str = "ingester:\n  max_block_duration: 200ms\n  flush_check_period: 50ms\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_in(dir.path(), FAST_FLUSH).await;
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut replayed_total = 0;
    for round in 0..3u64 {
        let mut senders = Vec::new();
        for worker in 0..2u64 {
            let protocol = if worker == 0 {
                Protocol::HttpProtobuf
            } else {
                Protocol::Grpc
            };
            let mut sender = server.sender(protocol, false).await;
            let acked = acked.clone();
            senders.push(tokio::spawn(async move {
                let mut generator = TraceGen::new(TraceGenConfig {
                    seed: 1000 + round * 10 + worker,
                    ..TraceGenConfig::default()
                });
                loop {
                    let (req, _) = generator.request(200);
                    let ids = span_ids(&req);
                    match sender.send(&req, Some("durable")).await {
                        Ok(r) if r.status == 200 => acked.lock().unwrap().extend(ids),
                        Ok(r) if r.status == 429 || r.grpc_code == Some(tonic::Code::ResourceExhausted) => {}
                        _ => return, // the server is gone
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(700 + round * 400)).await;
        server.kill9();
        for s in senders {
            s.await.unwrap();
        }
        server.spawn().await;
        replayed_total += server.metric("tracehouse_warehouse_spans_replayed_total").await;
        let (count, distinct, ids) = server.stored_span_ids("durable").await;
        let acked = acked.lock().unwrap().clone();
        assert!(!acked.is_empty(), "round {round}: some spans were acknowledged");
        assert_eq!(count, distinct, "round {round}: no span is stored twice");
        let missing = acked.difference(&ids).count();
        assert_eq!(
            missing,
            0,
            "round {round}: {missing} of {} acknowledged spans lost",
            acked.len()
        );
    }
    // Both paths were exercised: commits happened mid-stream and kills left spans to replay.
    let commits = std::fs::read_dir(server.table_dir("durable").join("_delta_log"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".json"))
        .count();
    assert!(commits >= 3, "flushes committed while sending: {commits} commits");
    assert!(
        replayed_total > 0,
        "some acknowledged spans were only in the wal when killed"
    );

    // After a clean shutdown the WAL holds nothing the table lacks, and counts are stable.
    let before = server.span_count("durable").await;
    let (status, _) = server.terminate();
    assert!(status.success());
    server.spawn().await;
    assert_eq!(server.span_count("durable").await, before);
}
