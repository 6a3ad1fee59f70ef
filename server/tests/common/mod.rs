//! `TestServer`: starts the real `tracehouse` binary on free loopback ports in a temporary
//! directory, and the clients tests use against it (OTLP, tokio-postgres, psql).

#![allow(dead_code)]

pub mod kafka;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tracehouse_benches::send::{Protocol, Sender};

/// The hex span ids of a request, as the `spans` table stores them.
pub fn span_ids(req: &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest) -> Vec<String> {
    req.resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| hex::encode(&s.span_id))
        .collect()
}

/// A free TCP port on 127.0.0.1.
/// A tracegen whose traces start a minute ago, so they fall in today's partition.
pub fn generator(seed: u64) -> tracehouse_benches::tracegen::TraceGen {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    tracehouse_benches::tracegen::TraceGen::new(tracehouse_benches::tracegen::TraceGenConfig {
        seed,
        start_unix_nano: now - 60_000_000_000,
        ..Default::default()
    })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `N` distinct free ports: each is held until all are picked (ports picked one at a time may
/// repeat, and a server would then listen on one port for two purposes).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: [TcpListener; N] = std::array::from_fn(|_| TcpListener::bind("127.0.0.1:0").unwrap());
    held.map(|l| l.local_addr().unwrap().port())
}

/// Deep-merges `extra` into `base` (mappings merge, anything else replaces).
pub fn merge(base: &mut serde_yaml::Value, extra: serde_yaml::Value) {
    match (base, extra) {
        (serde_yaml::Value::Mapping(b), serde_yaml::Value::Mapping(e)) => {
            for (k, v) in e {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// A running `tracehouse` process.
pub struct TestServer {
    pub dir: PathBuf,
    pub otlp_http_port: u16,
    pub otlp_grpc_port: u16,
    pub http_port: u16,
    pub pg_port: u16,
    pub flight_port: u16,
    pub extra_yaml: String,
    /// Table storage; `dir/data` unless shared with other processes.
    pub storage: PathBuf,
    /// Extra environment variables of the process.
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

impl TestServer {
    /// Starts a server storing in `dir`, with `extra_yaml` appended to the generated config.
    pub async fn start_in(dir: &Path, extra_yaml: &str) -> Self {
        Self::start_component(dir, &dir.join("data"), extra_yaml, &[]).await
    }

    /// Starts one component (`extra_yaml` names its target) in `dir`, with tables in `storage`
    /// (shared by the components of one deployment).
    pub async fn start_component(dir: &Path, storage: &Path, extra_yaml: &str, env: &[(&str, &str)]) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let [otlp_http_port, otlp_grpc_port, http_port, pg_port, flight_port] = free_ports();
        let mut server = Self {
            dir: dir.to_path_buf(),
            otlp_http_port,
            otlp_grpc_port,
            http_port,
            pg_port,
            flight_port,
            extra_yaml: extra_yaml.to_string(),
            storage: storage.to_path_buf(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            child: None,
        };
        server.spawn().await;
        server
    }

    /// Starts the process without waiting for `/ready` (for processes expected to die).
    pub fn spawn_unready(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.write_config_and_start();
    }

    /// `true` while the process runs.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// Waits up to `timeout` for the process to exit; its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().expect("started").try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Starts (again) in the same directory, on the same ports unless another process took
    /// one of them meanwhile (ports are picked free but not held), then on new ones.
    pub async fn spawn(&mut self) {
        for _ in 0..5 {
            match self.try_spawn().await {
                Ok(()) => return,
                Err(log) if log.contains("Address already in use") => {
                    [
                        self.otlp_http_port,
                        self.otlp_grpc_port,
                        self.http_port,
                        self.pg_port,
                        self.flight_port,
                    ] = free_ports();
                }
                Err(log) => panic!("tracehouse exited before ready; log:\n{log}"),
            }
        }
        panic!("tracehouse found no free ports in 5 tries; log:\n{}", self.log());
    }

    async fn try_spawn(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "already running");
        let log_start = self.log().len();
        self.write_config_and_start();
        self.wait_ready().await.map_err(|status| {
            self.child = None;
            format!("exit {status}: {}", self.log().get(log_start..).unwrap_or_default())
        })
    }

    fn write_config_and_start(&mut self) {
        let base = format!(
            "server:\n  http_listen_port: {}\n  graceful_shutdown_timeout: 60s\n\
             distributor:\n  receivers:\n    otlp:\n      protocols:\n        grpc:\n          endpoint: 127.0.0.1:{}\n        http:\n          endpoint: 127.0.0.1:{}\n\
             postgres:\n  listen_address: 127.0.0.1:{}\n\
             flight:\n  listen_address: 127.0.0.1:{}\n\
             overrides:\n  defaults:\n    ingestion:\n      rate_limit_bytes: 0\n      max_traces_per_user: 0\n    \
             global:\n      max_bytes_per_trace: 0\n",
            self.http_port, self.otlp_grpc_port, self.otlp_http_port, self.pg_port, self.flight_port
        );
        let mut config: serde_yaml::Value = serde_yaml::from_str(&base).unwrap();
        if !self.extra_yaml.trim().is_empty() {
            merge(
                &mut config,
                serde_yaml::from_str(&self.extra_yaml).expect("extra yaml parses"),
            );
        }
        let config = serde_yaml::to_string(&config).unwrap();
        let config_path = self.dir.join("tracehouse.yaml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tracehouse"))
            .arg(format!("-config.file={}", config_path.display()))
            .arg(format!("-storage.path={}", self.storage.display()))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting tracehouse");
        self.child = Some(child);
    }

    /// The HTTP API's base URL.
    pub fn http(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Waits for `/ready`; the exit status if the process ended first.
    async fn wait_ready(&mut self) -> Result<(), ExitStatus> {
        let url = format!("http://127.0.0.1:{}/ready", self.http_port);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(status);
            }
            if let Ok(r) = reqwest::get(&url).await
                && r.status() == 200
            {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "tracehouse not ready in 60s; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
        let mut child = self.child.take().expect("running");
        let started = Instant::now();
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
        let status = child.wait().unwrap();
        (status, started.elapsed())
    }

    pub fn otlp_http(&self) -> String {
        format!("http://127.0.0.1:{}", self.otlp_http_port)
    }

    pub async fn sender(&self, protocol: Protocol, gzip: bool) -> Sender {
        let endpoint = match protocol {
            Protocol::Grpc => format!("http://127.0.0.1:{}", self.otlp_grpc_port),
            _ => self.otlp_http(),
        };
        Sender::connect(protocol, &endpoint, gzip).await.unwrap()
    }

    /// A tokio-postgres client on database `tenant`.
    pub async fn pg(&self, tenant: &str) -> tokio_postgres::Client {
        self.pg_as(tenant, "tester", None).await.unwrap()
    }

    pub async fn pg_as(
        &self,
        tenant: &str,
        user: &str,
        password: Option<&str>,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut conf = format!("host=127.0.0.1 port={} user={user} dbname={tenant}", self.pg_port);
        if let Some(p) = password {
            conf.push_str(&format!(" password={p}"));
        }
        let (client, conn) = tokio_postgres::connect(&conf, tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// The server process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// CPU seconds (user + system) the server process has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the command name (in parentheses): utime and stime are the 12th and
        // 13th of them, in clock ticks (100 per second on Linux).
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        ticks as f64 / 100.0
    }

    /// The TCP ports the server process itself listens on (its sockets in LISTEN state), so
    /// a port another process took in the meantime does not count.
    pub fn listening_ports(&self) -> std::collections::BTreeSet<u16> {
        let fd_dir = format!("/proc/{}/fd", self.pid());
        let inodes: std::collections::HashSet<String> = std::fs::read_dir(fd_dir)
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter_map(|l| {
                let l = l.to_string_lossy().to_string();
                Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
            })
            .collect();
        let mut ports = std::collections::BTreeSet::new();
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            let text = std::fs::read_to_string(table).unwrap_or_default();
            for line in text.lines().skip(1) {
                // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]) {
                    let port = f[1].rsplit(':').next().unwrap();
                    ports.insert(u16::from_str_radix(port, 16).unwrap());
                }
            }
        }
        ports
    }

    /// The whole `/metrics` page.
    pub async fn metrics_text(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.http_port))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// A counter or gauge from `/metrics`.
    pub async fn metric(&self, name: &str) -> u64 {
        let text = self.metrics_text().await;
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("metric {name} missing from:\n{text}"))
    }

    /// `count(*)` of a tenant's spans.
    pub async fn span_count(&self, tenant: &str) -> i64 {
        let client = self.pg(tenant).await;
        client
            .query_one("SELECT count(*) FROM spans", &[])
            .await
            .unwrap()
            .get(0)
    }

    /// `(rows, distinct span ids, the span ids)` of a tenant, over the Postgres wire.
    pub async fn stored_span_ids(&self, tenant: &str) -> (i64, i64, std::collections::HashSet<String>) {
        let client = self.pg(tenant).await;
        let row = client
            .query_one("SELECT count(*), count(DISTINCT span_id) FROM spans", &[])
            .await
            .unwrap();
        let ids = client
            .query("SELECT span_id FROM spans", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        (row.get(0), row.get(1), ids)
    }

    /// Runs the real `psql` client; returns its stdout, or its stderr as the error.
    pub fn psql(&self, tenant: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.pg_port.to_string(),
                "-U",
                "tester",
                "-d",
                tenant,
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args(args)
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .expect("psql is installed (scripts/test installs postgresql-client)");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Directory of a tenant's Delta table (local storage).
    pub fn table_dir(&self, tenant: &str) -> PathBuf {
        self.dir.join("data").join("tenants").join(tenant).join("spans")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
