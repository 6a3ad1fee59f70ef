//! `tracegen`: sends deterministic, realistic traces to any OTLP endpoint, at a rate or as
//! fast as the endpoint takes them, and reports what it sent.
//!
//! ```text
//! tracegen --endpoint http://127.0.0.1:4318 --protocol http/protobuf --spans 1000000 \
//!          [--rate SPANS_PER_S] [--batch-spans 1000] [--concurrency 4] [--seed 1] [--tenant T] [--gzip]
//! ```

use std::time::{Duration, Instant};

use tracehouse_benches::send::{Protocol, Sender};
use tracehouse_benches::tracegen::{TraceGen, TraceGenConfig};

struct Args {
    endpoint: String,
    protocol: Protocol,
    spans: usize,
    rate: Option<f64>,
    batch_spans: usize,
    concurrency: usize,
    seed: u64,
    tenant: Option<String>,
    gzip: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        endpoint: "http://127.0.0.1:4318".into(),
        protocol: Protocol::HttpProtobuf,
        spans: 100_000,
        rate: None,
        batch_spans: 1_000,
        concurrency: 4,
        seed: 1,
        tenant: None,
        gzip: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--endpoint" => a.endpoint = value()?,
            "--protocol" => a.protocol = value()?.parse()?,
            "--spans" => a.spans = value()?.parse().map_err(|e| format!("--spans: {e}"))?,
            "--rate" => a.rate = Some(value()?.parse().map_err(|e| format!("--rate: {e}"))?),
            "--batch-spans" => a.batch_spans = value()?.parse().map_err(|e| format!("--batch-spans: {e}"))?,
            "--concurrency" => a.concurrency = value()?.parse().map_err(|e| format!("--concurrency: {e}"))?,
            "--seed" => a.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--tenant" => a.tenant = Some(value()?),
            "--gzip" => a.gzip = true,
            "-h" | "--help" => {
                println!(
                    "usage: tracegen --endpoint URL [--protocol http/protobuf|http/json|grpc|jaeger/grpc|zipkin/json] [--spans N] [--rate SPANS_PER_S] [--batch-spans N] [--concurrency N] [--seed N] [--tenant T] [--gzip]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.concurrency == 0 || a.batch_spans == 0 {
        return Err("--concurrency and --batch-spans must be positive".into());
    }
    Ok(a)
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tracegen: {e}");
            std::process::exit(2);
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // Requests are generated up front (deterministically), so sending measures the endpoint.
    let mut generator = TraceGen::new(TraceGenConfig {
        seed: args.seed,
        start_unix_nano: now - 600_000_000_000,
        ..TraceGenConfig::default()
    });
    let mut requests = Vec::new();
    let mut total = 0;
    while total < args.spans {
        let (req, n) = generator.request(args.batch_spans.min(args.spans - total));
        total += n;
        requests.push((req, n));
    }
    let per_worker = requests.len().div_ceil(args.concurrency);
    let started = Instant::now();
    let mut workers = Vec::new();
    let mut chunks = Vec::new();
    while !requests.is_empty() {
        let rest = requests.split_off(per_worker.min(requests.len()));
        chunks.push(std::mem::replace(&mut requests, rest));
    }
    let worker_rate = args.rate.map(|r| r / chunks.len().max(1) as f64);
    for chunk in chunks {
        let endpoint = args.endpoint.clone();
        let tenant = args.tenant.clone();
        let (protocol, gzip) = (args.protocol, args.gzip);
        workers.push(tokio::spawn(async move {
            let mut sender = Sender::connect(protocol, &endpoint, gzip).await?;
            let (mut sent, mut retries) = (0usize, 0usize);
            let t0 = Instant::now();
            for (req, n) in chunk {
                if let Some(rate) = worker_rate {
                    let due = Duration::from_secs_f64(sent as f64 / rate);
                    if let Some(wait) = due.checked_sub(t0.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                }
                loop {
                    let reply = sender.send(&req, tenant.as_deref()).await?;
                    let retryable = reply.status == 429
                        || reply.status == 503
                        || matches!(
                            reply.grpc_code,
                            Some(tonic::Code::ResourceExhausted | tonic::Code::Unavailable)
                        );
                    if (200..300).contains(&reply.status) {
                        break;
                    } else if retryable && retries < 10_000 {
                        retries += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    } else {
                        return Err(format!(
                            "export failed: status {} {:?}: {}",
                            reply.status, reply.grpc_code, reply.body
                        ));
                    }
                }
                sent += n;
            }
            Ok::<_, String>((sent, retries))
        }));
    }
    let (mut sent, mut retries) = (0, 0);
    for w in workers {
        match w.await {
            Ok(Ok((s, r))) => {
                sent += s;
                retries += r;
            }
            Ok(Err(e)) => {
                eprintln!("tracegen: {e}");
                std::process::exit(1);
            }
            Err(e) => {
                eprintln!("tracegen: worker panicked: {e}");
                std::process::exit(1);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"spans\":{sent},\"seconds\":{secs:.3},\"spans_per_second\":{:.0},\"retries\":{retries}}}",
        sent as f64 / secs
    );
}
