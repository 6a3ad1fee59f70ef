#!/usr/bin/env bash
# Ingest benchmark: a release `tracehouse` on local storage, fed by `tracegen` over OTLP/HTTP
# protobuf (the reference), OTLP/gRPC, OTLP/HTTP JSON, Jaeger gRPC and Zipkin v2 JSON in the
# same run, each into its own tenant. Reports spans/s, server CPU-seconds per million spans, and bytes per span on disk
# after the flush. CPU-seconds count the server process only (tracegen shares the cores),
# from the first request until the spans are committed to the Delta table. Usage: benches/ingest.sh [SPANS_PER_PROTOCOL]
set -euo pipefail
cd "$(dirname "$0")/.."
SPANS=${1:-500000}
source benches/server.sh
tick=$(getconf CLK_TCK)
cpu() { awk -v t="$tick" '{print ($14 + $15) / t}' "/proc/$pid/stat"; }

declare -A rate cpu_per_m
protocols="http/protobuf grpc http/json jaeger/grpc zipkin/json"
for proto in $protocols; do
  tenant=bench-${proto//\//-}
  case $proto in
    grpc) endpoint=http://127.0.0.1:14317 ;;
    jaeger/grpc) endpoint=http://127.0.0.1:24250 ;;
    zipkin/json) endpoint=http://127.0.0.1:19411 ;;
    *) endpoint=http://127.0.0.1:14318 ;;
  esac
  c0=$(cpu)
  out=$("$bin/tracegen" --endpoint "$endpoint" --protocol "$proto" --spans "$SPANS" --batch-spans 2000 --concurrency 4 --tenant "$tenant")
  curl -sf -X POST http://127.0.0.1:13200/flush   # CPU includes writing the table
  c1=$(cpu)
  rate[$proto]=$(sed -E 's/.*"spans_per_second":([0-9.]+).*/\1/' <<<"$out")
  cpu_per_m[$proto]=$(awk -v a="$c0" -v b="$c1" -v n="$SPANS" 'BEGIN{printf "%.2f", (b-a) * 1e6 / n}')
done
rows=$(psql -h 127.0.0.1 -p 15432 -d bench-http-protobuf -XAtc "SELECT count(*) FROM spans")
kill -TERM $pid; wait $pid || true
bytes=$(find "$dir/data/tenants/bench-http-protobuf/spans" -name '*.parquet' -printf '%s\n' | awk '{s+=$1} END{print s}')
ref=${rate[http/protobuf]}
echo "spans per protocol: $SPANS (rows stored for http/protobuf: $rows), cores: $(nproc)"
printf '%-14s %12s %10s %22s\n' protocol spans/s ratio cpu-s/million-spans
for proto in $protocols; do
  printf '%-14s %12.0f %10.2f %22s\n' "$proto" "${rate[$proto]}" "$(awk -v a="${rate[$proto]}" -v b="$ref" 'BEGIN{print a/b}')" "${cpu_per_m[$proto]}"
done
awk -v b="$bytes" -v n="$rows" 'BEGIN{printf "on disk after flush: %d bytes of parquet, %.1f bytes/span\n", b, b/n}'
