//! Compaction with the real binary: `tracehouse compact` (a scheduled job, another process)
//! merges a running monolithic server's small files while spans keep arriving, and the
//! server's answers stay exact before and after it reloads the table; and in-process upkeep
//! (`compactor.compaction.enabled`) compacts as spans flush, counted in `/metrics`; and the job
//! over a table of 1,000 small files: retention only, then compaction killed with `kill -9`
//! after its first commit, a second job kept out by the killed one's lease until it expires,
//! and answers (SQL, TraceQL, trace by id) identical before, during and after.

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

/// The smallest trace id of the tenant, over the Postgres wire.
async fn a_trace(server: &TestServer) -> String {
    let client = server.pg(TENANT).await;
    let row = client.query_one("SELECT min(trace_id) FROM spans", &[]).await.unwrap();
    row.get(0)
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
    let trace = a_trace(&server).await;
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

/// A job's settings for the 1,000-file table: a short lease (a killed job holds it this
/// long), spans kept a week, merges of 64 files, all of them in one pass.
const JOB: &str =
    "compactor:\n  compaction:\n    lease_duration: 6s\n    block_retention: 168h\n    max_merges_per_cycle: 64\n";

/// Writes `files` small files of about 5 spans each into the table under `storage`, spans
/// starting `age` ago, as that many block-builder cycles would leave them: the first through
/// the warehouse library (which creates the table), the rest in one Delta commit of one file
/// per request, each sorted and written as flushes are.
/// Returns the span ids.
async fn small_files(storage: &std::path::Path, files: usize, seed: u64, age: Duration) -> HashSet<String> {
    use tracehouse_warehouse::storage::StorageConfigKind;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let mut traces = tracehouse_benches::tracegen::TraceGen::new(tracehouse_benches::tracegen::TraceGenConfig {
        seed,
        start_unix_nano: (now - age).as_nanos() as u64,
        ..Default::default()
    });
    let mut ids = HashSet::new();
    let mut batches = Vec::new();
    for _ in 0..files {
        let (req, _) = traces.request(5);
        ids.extend(span_ids(&req));
        let batch = tracehouse_ingest::otlp::request_to_batch(&req).unwrap();
        batches.push(tracehouse_warehouse::table::sort_by_trace(&[batch]).unwrap());
    }
    let table_dir = storage.join("tenants").join(TENANT).join("spans");
    if !table_dir.join("_delta_log").exists() {
        let scratch = tempfile::tempdir().unwrap();
        let mut config = tracehouse_warehouse::WarehouseConfig::local(scratch.path());
        config.storage = StorageConfigKind::Local {
            path: storage.to_path_buf(),
        };
        let w = tracehouse_warehouse::Warehouse::open(config).await.unwrap();
        w.append(TENANT, batches.remove(0)).await.unwrap();
        w.flush_due(true).await.unwrap();
        w.shutdown().await.unwrap();
    }
    let table = deltalake::open_table(url::Url::from_directory_path(&table_dir).unwrap())
        .await
        .unwrap();
    let mut writer = deltalake::writer::RecordBatchWriter::for_table(&table)
        .unwrap()
        .with_writer_properties(tracehouse_warehouse::table::writer_properties());
    let mut actions = Vec::new();
    for batch in batches {
        use deltalake::writer::DeltaWriter;
        writer.write(batch).await.unwrap();
        actions.extend(
            writer
                .flush()
                .await
                .unwrap()
                .into_iter()
                .map(deltalake::kernel::Action::Add),
        );
    }
    let operation = deltalake::protocol::DeltaOperation::Write {
        mode: deltalake::protocol::SaveMode::Append,
        partition_by: None,
        predicate: None,
    };
    deltalake::kernel::transaction::CommitBuilder::default()
        .with_actions(actions)
        .build(Some(table.snapshot().unwrap()), table.log_store(), operation)
        .await
        .unwrap();
    ids
}

/// `tracehouse compact` with `args` on `server`'s storage, configured by [`JOB`].
fn job(server: &TestServer, dir: &std::path::Path, args: &[&str]) -> Command {
    let config = dir.join("job.yaml");
    std::fs::write(&config, JOB).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_tracehouse"));
    command
        .arg("compact")
        .arg(format!("-config.file={}", config.display()))
        .arg(format!("-storage.path={}", server.storage.display()))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    command
}

/// Runs `command` to its end; its stdout, once it succeeded.
fn finished(command: &mut Command) -> String {
    let out = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// What a user sees of the tenant: SQL counts and span ids, a TraceQL search's traces and
/// matches, the span ids of a trace by id (sorted).
type Answers = (i64, i64, HashSet<String>, Vec<String>, Vec<String>);

async fn answers(server: &TestServer, trace: &str) -> Answers {
    let (count, distinct, ids) = server.stored_span_ids(TENANT).await;
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        async move {
            let r = http.get(path).header("X-Scope-OrgID", TENANT).send().await.unwrap();
            assert_eq!(r.status(), 200);
            serde_json::from_str::<serde_json::Value>(&r.text().await.unwrap()).unwrap()
        }
    };
    let q = "%7B%20span.http.response.status_code%20%3E%3D%20500%20%7D";
    let found = get(format!("{}/api/search?q={q}&limit=100000&spss=10", server.http())).await;
    let mut traces: Vec<String> = found["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| format!("{} {}", t["traceID"], t["spanSets"][0]["matched"]))
        .collect();
    traces.sort();
    let by_id = get(format!("{}/api/v2/traces/{trace}", server.http()))
        .await
        .to_string();
    let mut spans: Vec<String> = by_id
        .split("\"spanId\":\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_string())
        .collect();
    spans.sort();
    assert!(!spans.is_empty() && !traces.is_empty());
    (count, distinct, ids, traces, spans)
}

/// `server` started again, so that it reads what the jobs committed (a server reloads a table
/// another process changed every minute), and its answers.
async fn restarted(server: &mut TestServer, trace: &str) -> Answers {
    server.terminate();
    server.spawn().await;
    answers(server, trace).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_looks_after_a_thousand_small_files_even_when_killed() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("data");
    // 100 files of spans 30 days old (past retention), then 900 recent ones.
    let old = small_files(&storage, 100, 11, Duration::from_secs(30 * 86_400)).await;
    let kept = small_files(&storage, 900, 12, Duration::from_secs(60)).await;
    let no_upkeep = "compactor:\n  compaction:\n    enabled: false\n";
    let mut server = TestServer::start_in(dir.path(), no_upkeep).await;
    assert_eq!(server.span_count(TENANT).await as usize, old.len() + kept.len());

    // Retention only: the old files go, nothing is merged.
    let stdout = finished(&mut job(&server, dir.path(), &["-retention-only"]));
    assert!(
        stdout.starts_with(&format!("tenant {TENANT}: files 1000 -> 900, ")),
        "{stdout}"
    );
    let removed = format!("retention removed {} spans in 100 files", old.len());
    assert!(stdout.contains(&removed), "{stdout}");
    assert!(stdout.contains(", 0 merges ("), "{stdout}");
    assert!(stdout.contains("summary: 1 tenants (0 failed, 0 skipped)"), "{stdout}");
    server.terminate();
    server.spawn().await;
    let trace = a_trace(&server).await;
    let before = answers(&server, &trace).await;
    assert_eq!(before.2, kept, "retention removed exactly the old spans");

    // A job killed after its first merge is committed, before the rest are ...
    let mut first = job(&server, dir.path(), &[]).spawn().unwrap();
    let mut lines = std::io::BufReader::new(first.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut lines, &mut line).unwrap();
    assert!(
        line.contains("merge 1/"),
        "a plain progress line off a terminal: {line:?}"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    // ... keeps another job out with its lease until that expires.
    let stdout = finished(&mut job(&server, dir.path(), &[]));
    assert!(stdout.contains("skipped, "), "{stdout}");
    assert!(stdout.contains("(0 failed, 1 skipped)"), "{stdout}");
    assert_eq!(restarted(&mut server, &trace).await, before, "answers after the kill");

    // Once it has expired, the next job does the rest, while the server answers.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let job_run = std::thread::spawn({
        let mut command = job(&server, dir.path(), &[]);
        move || finished(&mut command)
    });
    assert_eq!(answers(&server, &trace).await, before, "answers during compaction");
    let stdout = job_run.join().unwrap();
    assert!(stdout.contains(", 0 conflicts,"), "{stdout}");
    assert_eq!(restarted(&mut server, &trace).await, before, "answers after compaction");
    // Merged files of one window merge again until one is left (below the target size).
    let stdout = finished(&mut job(&server, dir.path(), &[]));
    assert!(stdout.contains(" 0 small files outstanding"), "{stdout}");
    let files = data_files_in(&server);
    assert_eq!(files.referenced.len(), 1, "900 small files of one hour became one");
    assert_eq!(
        restarted(&mut server, &trace).await,
        before,
        "answers after the second pass"
    );

    // What the killed job wrote but never committed goes once it is older than the grace
    // period; what compaction and retention removed stays for its own grace period, and what
    // the table references stays.
    age_files(&server.table_dir(TENANT), Duration::from_secs(7200));
    let stdout = finished(&mut job(&server, dir.path(), &["-dry-run"]));
    let listed: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("would delete "))
        .collect();
    let orphans = files.orphans();
    assert_eq!(listed.len(), orphans.len(), "{stdout}\norphans: {orphans:?}");
    assert!(
        listed.iter().all(|l| orphans.iter().any(|o| l.ends_with(o.as_str()))),
        "{stdout}"
    );
    let stdout = finished(&mut job(&server, dir.path(), &[]));
    assert!(
        stdout.contains(&format!(" {} files vacuumed", orphans.len())),
        "{stdout}"
    );
    let files = data_files_in(&server);
    assert!(files.orphans().is_empty() && files.referenced.len() == 1);
    assert_eq!(restarted(&mut server, &trace).await, before, "answers after vacuum");
}

/// The data files of the table: on disk, referenced by its log (read by the deltalake Python
/// package, another engine), and removed by a commit of its log; paths relative to the table.
struct Files {
    on_disk: HashSet<String>,
    referenced: HashSet<String>,
    removed: HashSet<String>,
}

impl Files {
    /// Files on disk that no commit added or removed (written, never committed).
    fn orphans(&self) -> Vec<String> {
        let known = |f: &String| self.referenced.contains(f) || self.removed.contains(f);
        self.on_disk.iter().filter(|f| !known(f)).cloned().collect()
    }
}

fn data_files_in(server: &TestServer) -> Files {
    let table = server.table_dir(TENANT);
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import os, sys, deltalake\nfor u in deltalake.DeltaTable(sys.argv[1]).file_uris():\n    \
             print(os.path.relpath(u.removeprefix('file://'), sys.argv[1]))",
        )
        .arg(&table)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let referenced = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let mut removed = HashSet::new();
    for entry in std::fs::read_dir(table.join("_delta_log")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let action: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(p) = action["remove"]["path"].as_str() {
                removed.insert(p.to_string());
            }
        }
    }
    let mut on_disk = HashSet::new();
    let mut stack = vec![table.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() && !name.starts_with('_') {
                stack.push(path);
            } else if name.ends_with(".parquet") && !path.is_dir() {
                on_disk.insert(path.strip_prefix(&table).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    Files {
        on_disk,
        referenced,
        removed,
    }
}

/// Sets the modification time of the data files under `dir` `age` back (vacuum's clock).
fn age_files(dir: &std::path::Path, age: Duration) {
    let ago = format!("{} seconds ago", age.as_secs());
    let status = Command::new("find")
        .arg(dir)
        .args([
            "-name",
            "*.parquet",
            "-not",
            "-path",
            "*/_*",
            "-exec",
            "touch",
            "-d",
            &ago,
            "{}",
            "+",
        ])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_compactor_replicas_never_look_after_a_tenant_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("data");
    let sent = small_files(&storage, 600, 21, Duration::from_secs(60)).await;
    let yaml = "target: compactor\ncompactor:\n  compaction:\n    compaction_cycle: 1s\n    \
                lease_duration: 6s\n    max_merges_per_cycle: 2\n";
    let replicas = [
        TestServer::start_component(&dir.path().join("a"), &storage, yaml, &[]).await,
        TestServer::start_component(&dir.path().join("b"), &storage, yaml, &[]).await,
    ];
    // Each pass merges two groups of 64 files (seconds of work), and each replica starts one
    // every second: they meet, and one of them finds the other looking after the tenant.
    let (mut busy, mut compactions) = (0, 0);
    for _ in 0..120 {
        (busy, compactions) = (0, 0);
        for r in &replicas {
            busy += r.metric("tracehouse_upkeep_lease_busy_total").await;
            compactions += r.metric("tracehouse_compactions_total").await;
        }
        if busy > 0 && compactions > 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(busy > 0, "neither replica found the other holding the lease in 60 s");
    assert!(compactions > 2, "{compactions} merges in 60 s");
    for r in &replicas {
        assert_eq!(r.metric("tracehouse_compaction_conflicts_total").await, 0);
    }
    drop(replicas);
    let server = TestServer::start_component(
        &dir.path().join("reader"),
        &storage,
        "compactor:\n  compaction:\n    enabled: false\n",
        &[],
    )
    .await;
    assert_exact(&server, &sent, "after two replicas compacted").await;
}
