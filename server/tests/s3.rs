//! Tables on S3: a real S3-compatible server (moto, installed by scripts/test) on loopback;
//! spans flushed there are read back after a restart.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestServer, free_port};
use tracehouse_benches::send::Protocol;
use tracehouse_benches::tracegen::{TraceGen, TraceGenConfig};

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_moto() -> (Moto, u16) {
    // A port picked free may be taken before moto binds it; moto then exits, and another
    // port is tried.
    let mut exits = Vec::new();
    for _ in 0..3 {
        let port = free_port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("moto_server is installed (scripts/test runs pip install 'moto[server]')");
        let mut moto = Moto(child);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if answers_as_s3(port).await {
                return (moto, port);
            }
            if let Some(status) = moto.0.try_wait().unwrap() {
                exits.push(format!(
                    "port {port}: {status}: {}",
                    std::fs::read_to_string(log.path()).unwrap()
                ));
                break;
            }
            assert!(Instant::now() < deadline, "moto did not answer on {port} within 90 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    panic!("moto exited at every try:\n{}", exits.join("\n"))
}

/// Whether an S3 server (not some other process that took the port) answers on `port`.
async fn answers_as_s3(port: u16) -> bool {
    match reqwest::get(format!("http://127.0.0.1:{port}/")).await {
        Ok(r) => r.text().await.is_ok_and(|t| t.contains("ListAllMyBucketsResult")),
        Err(_) => false,
    }
}

/// Creates the bucket `traces` on the moto at `port`; the storage config that uses it.
async fn bucket(port: u16) -> String {
    let created = reqwest::Client::new()
        .put(format!("http://127.0.0.1:{port}/traces"))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "create bucket: {}", created.status());
    format!(
        "storage:\n  trace:\n    backend: s3\n    s3:\n      bucket: traces\n      prefix: th\n      endpoint: 127.0.0.1:{port}\n      \
         region: us-east-1\n      access_key: test\n      secret_key: test\n      insecure: true\n      forcepathstyle: true\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_live_on_s3() {
    let (_moto, port) = start_moto().await;
    let http = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let yaml = bucket(port).await;
    let mut server = TestServer::start_in(dir.path(), &yaml).await;
    let mut sender = server.sender(Protocol::HttpProtobuf, false).await;
    let mut generator = TraceGen::new(TraceGenConfig {
        seed: 11,
        ..TraceGenConfig::default()
    });
    let mut sent = 0;
    for _ in 0..3 {
        let (req, n) = generator.request(400);
        let r = sender.send(&req, Some("s3-tenant")).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        sent += n;
    }
    let (status, _) = server.terminate();
    assert!(status.success(), "log:\n{}", server.log());

    let listing = http
        .get(format!(
            "http://127.0.0.1:{port}/traces?list-type=2&prefix=th/tenants/s3-tenant/spans/"
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        listing.contains("_delta_log/00000000000000000000.json"),
        "delta log on s3:\n{listing}"
    );
    assert!(listing.contains(".parquet"), "parquet files on s3:\n{listing}");

    // The WAL was truncated after the commit, so what a restart sees comes from S3.
    server.spawn().await;
    assert_eq!(server.span_count("s3-tenant").await, sent as i64);
    let client = server.pg("s3-tenant").await;
    let services: i64 = client
        .query_one("SELECT count(DISTINCT service_name) FROM spans", &[])
        .await
        .unwrap()
        .get(0);
    assert!(services >= 10);
}

/// `tracehouse compact` on S3: the job merges a tenant's small files through the object store
/// (multipart uploads, the OPTIMIZE commit, vacuum's listing, the log checkpoint), and a
/// restarted server reads the same spans from the compacted table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_runs_on_s3() {
    let (_moto, port) = start_moto().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = bucket(port).await
        + "ingester:\n  max_block_duration: 100ms\n  flush_check_period: 20ms\n\
           compactor:\n  compaction:\n    enabled: false\n    min_open_window_files: 2\n";
    let mut server = TestServer::start_in(dir.path(), &yaml).await;
    let mut sender = server.sender(Protocol::HttpProtobuf, false).await;
    let mut generator = common::generator(12);
    let mut sent = 0;
    for _ in 0..4 {
        let (req, n) = generator.request(300);
        let r = sender.send(&req, Some("s3-compacted")).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        sent += n;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_tracehouse"))
        .arg("compact")
        .arg(format!("-config.file={}", dir.path().join("tracehouse.yaml").display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("tenant s3-compacted: files "), "{stdout}");
    assert!(stdout.contains(", 1 merges ("), "{stdout}");
    let (status, _) = server.terminate();
    assert!(status.success(), "log:\n{}", server.log());
    server.spawn().await;
    let (count, distinct, _) = server.stored_span_ids("s3-compacted").await;
    assert_eq!((count, distinct), (sent as i64, sent as i64));
}
