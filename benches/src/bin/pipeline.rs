//! `pipeline`: the in-process ingest path without network or WAL, as a peer figure for the
//! end-to-end benchmark: OTLP protobuf bytes -> decode -> `spans` batch -> sort by trace id ->
//! zstd Parquet with the production writer settings. Prints spans/s per stage and bytes/span.
//!
//! ```text
//! pipeline [SPANS] [BATCH_SPANS]
//! ```

use std::time::{Duration, Instant};

use mimalloc::MiMalloc;
use parquet::arrow::ArrowWriter;
use prost::Message;
use tracehouse_benches::tracegen::{TraceGen, TraceGenConfig};
use tracehouse_ingest::otlp::{BodyFormat, parse_request, request_to_batch};
use tracehouse_warehouse::table::{sort_by_trace, writer_properties};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let spans: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(500_000);
    let batch_spans: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2_000);
    let mut generator = TraceGen::new(TraceGenConfig::default());
    let mut bodies = Vec::new();
    let mut total = 0;
    while total < spans {
        let (req, n) = generator.request(batch_spans);
        bodies.push(req.encode_to_vec());
        total += n;
    }
    let wire_bytes: usize = bodies.iter().map(Vec::len).sum();

    let (mut decode, mut convert, mut sort, mut write) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut batches = Vec::new();
    for body in &bodies {
        let t = Instant::now();
        let req = parse_request(body, BodyFormat::Protobuf).expect("decodes");
        decode += t.elapsed();
        let t = Instant::now();
        batches.push(request_to_batch(&req).expect("converts"));
        convert += t.elapsed();
    }
    // One block, as a flush writes it.
    let t = Instant::now();
    let sorted = sort_by_trace(&batches).expect("sorts");
    sort += t.elapsed();
    let t = Instant::now();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, sorted.schema(), Some(writer_properties())).expect("writer");
    writer.write(&sorted).expect("writes");
    writer.close().expect("closes");
    write += t.elapsed();

    let rate = |d: Duration| total as f64 / d.as_secs_f64();
    let all = decode + convert + sort + write;
    println!(
        "spans: {total}, otlp protobuf bytes/span: {:.1}",
        wire_bytes as f64 / total as f64
    );
    println!("{:<22} {:>12}", "stage (one core)", "spans/s");
    for (name, d) in [
        ("decode protobuf", decode),
        ("convert to arrow", convert),
        ("sort by trace id", sort),
        ("write zstd parquet", write),
        ("all stages", all),
    ] {
        println!("{name:<22} {:>12.0}", rate(d));
    }
    println!("parquet bytes/span: {:.1}", out.len() as f64 / total as f64);
}
