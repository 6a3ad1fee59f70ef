//! Compaction with the real binary: `tracehouse compact` (a scheduled job, another process)
//! merges a running monolithic server's small files while spans keep arriving, and the
//! server's answers stay exact before and after it reloads the table; and in-process upkeep
//! (`compactor.compaction.enabled`) compacts as spans flush, counted in `/metrics`.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use common::{TestServer, generator, span_ids};
use tracehouse_benches::send::Protocol;

const TENANT: &str = "compacted";

/// Fast flushes (many small files), in-process upkeep off; the job merges the open window.
const SMALL_FILES: &str = "ingester:\n  max_block_duration: 100ms\n  flush_check_period: 20ms\n\
                           compactor:\n  compaction:\n    enabled: false\n    min_open_window_files: 2\n";

/// Sends `requests` requests of 100 spans, pausing so that each lands in its own flush;
/// returns the span ids.
async fn send(server: &TestServer, seed: u64, requests: usize) -> HashSet<String> {
    let mut sender = server.sender(Protocol::Grpc, false).await;
    let mut traces = generator(seed);
    let mut ids = HashSet::new();
    for _ in 0..requests {
        let (req, _) = traces.request(100);
        let r = sender.send(&req, Some(TENANT)).await.unwrap();
        assert_eq!(r.status, 200);
        ids.extend(span_ids(&req));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    ids
}

fn data_files(server: &TestServer) -> usize {
    fn walk(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| match p.is_dir() {
                true if p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('_')) => 0,
                true => walk(&p),
                false => usize::from(p.extension().is_some_and(|e| e == "parquet")),
            })
            .sum()
    }
    walk(&server.table_dir(TENANT))
}

/// Whether `server` counts a compaction within 10 s.
async fn compacted(server: &TestServer) -> bool {
    for _ in 0..50 {
        if server.metric("tracehouse_compactions_total").await > 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

async fn assert_exact(server: &TestServer, sent: &HashSet<String>, when: &str) {
    let (count, distinct, ids) = server.stored_span_ids(TENANT).await;
    assert_eq!(count, distinct, "{when}: no span twice");
    assert_eq!(&ids, sent, "{when}: every span, nothing else");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_job_compacts_while_the_server_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_in(dir.path(), SMALL_FILES).await;
    let mut sent = send(&server, 1, 6).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = data_files(&server);
    assert!(before >= 5, "small flushes made {before} files");

    // The job runs as its own process, on the same config, while spans keep arriving.
    let config = dir.path().join("tracehouse.yaml");
    let storage = server.storage.clone();
    let job = std::thread::spawn(move || {
        Command::new(env!("CARGO_BIN_EXE_tracehouse"))
            .arg("compact")
            .arg(format!("-config.file={}", config.display()))
            .arg(format!("-storage.path={}", storage.display()))
            .arg(format!("-tenant={TENANT}"))
            .output()
            .unwrap()
    });
    sent.extend(send(&server, 2, 3).await);
    let out = job.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("tenant {TENANT}: files ")), "{stdout}");
    assert!(stdout.contains(", 1 merges ("), "{stdout}");

    // The running server still reads the files it knew (kept for the grace period) ...
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_exact(&server, &sent, "before the server reloads").await;
    // ... and after a restart reads the compacted table.
    server.terminate();
    server.spawn().await;
    assert_exact(&server, &sent, "after a restart").await;

    // A dry run changes nothing: inside the grace period there is nothing to delete.
    let out = Command::new(env!("CARGO_BIN_EXE_tracehouse"))
        .args(["compact", "-dry-run"])
        .arg(format!("-config.file={}", dir.path().join("tracehouse.yaml").display()))
        .arg(format!("-storage.path={}", server.storage.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("0 files to vacuum"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_upkeep_compacts_as_spans_flush() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "ingester:\n  max_block_duration: 100ms\n  flush_check_period: 20ms\n\
                compactor:\n  compaction:\n    compaction_cycle: 1s\n    min_open_window_files: 4\n";
    let server = TestServer::start_in(dir.path(), yaml).await;
    let sent = send(&server, 3, 8).await;
    assert!(compacted(&server).await, "upkeep compacted within 10 s");
    assert_exact(&server, &sent, "after in-process compaction").await;
    let trace = server
        .pg(TENANT)
        .await
        .query_one("SELECT trace_id FROM spans LIMIT 1", &[])
        .await
        .unwrap()
        .get::<_, String>(0);
    let found = reqwest::Client::new()
        .get(format!("{}/api/traces/{trace}", server.http()))
        .header("X-Scope-OrgID", TENANT)
        .send()
        .await
        .unwrap();
    assert_eq!(found.status(), 200, "trace by id after compaction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_compactor_compacts_tables_others_write() {
    let dir = tempfile::tempdir().unwrap();
    let writer = TestServer::start_in(&dir.path().join("writer"), SMALL_FILES).await;
    let sent = send(&writer, 4, 4).await;
    let compactor = TestServer::start_component(
        &dir.path().join("compactor"),
        &writer.storage,
        "target: compactor\ncompactor:\n  compaction:\n    compaction_cycle: 1s\n    min_open_window_files: 2\n",
        &[],
    )
    .await;
    assert!(compacted(&compactor).await, "the compactor compacted within 10 s");
    assert_exact(&writer, &sent, "while another process compacts").await;
}
