#!/usr/bin/env bash
# Ingest benchmark: a release `tracehouse` on local storage, fed by `tracegen` over OTLP/HTTP
# protobuf (the reference), OTLP/gRPC, OTLP/HTTP JSON, Jaeger gRPC and Zipkin v2 JSON in the
# same run, each into its own tenant; then, with a Tempo binary (TEMPO_BIN, default
# ~/.cache/tempo-oracle/tempo as shared/tempo-oracle/build.sh leaves it), the same load to
# Tempo on the same cores, one server at a time. Reports spans/s, server CPU-seconds per
# million spans and bytes per span of the data files. CPU counts the server process only
# (tracegen shares the cores), from the first request until the spans are in the server's
# storage and it has settled (under 0.1 CPU-s in 2 s): for tracehouse, after `POST /flush`
# committed the Delta table; for Tempo, after its live-store flushed its last block to the
# backend. Tempo's compaction of those blocks (about 30 s later) is left out, as is
# tracehouse's (not run here): the bench waits for it before the next protocol.
# Usage: benches/ingest.sh [SPANS_PER_PROTOCOL]
set -euo pipefail
cd "$(dirname "$0")/.."
SPANS=${1:-500000}
tempo_bin=${TEMPO_BIN:-$HOME/.cache/tempo-oracle/tempo}
source benches/server.sh
tick=$(getconf CLK_TCK)
cpu_of() { awk -v t="$tick" '{print ($14 + $15) / t}' "/proc/$1/stat"; }
# Waits until process $1 uses under 0.1 CPU-s in 2 s, at most 120 s.
settle() {
  local a b
  for _ in $(seq 60); do
    a=$(cpu_of "$1"); sleep 2; b=$(cpu_of "$1")
    awk -v a="$a" -v b="$b" 'BEGIN{exit !(b - a < 0.1)}' && return 0
  done
}

protocols="http/protobuf grpc http/json jaeger/grpc zipkin/json"
declare -A rate cpu_per_m
# load SYSTEM PID PROTOCOL ENDPOINT [FLUSH_URL]: sends SPANS spans; records spans/s and the
# CPU-s per million spans of PID under "SYSTEM PROTOCOL".
load() {
  local system=$1 p=$2 proto=$3 endpoint=$4 flush=${5:-} c0 c1 out flushed=""
  [ "$system" = tempo ] && flushed=$(tempo_flushed_bytes)
  c0=$(cpu_of "$p")
  out=$("$bin/tracegen" --endpoint "$endpoint" --protocol "$proto" --spans "$SPANS" --batch-spans 2000 \
    --concurrency 4 --tenant "bench-${proto//\//-}")
  [ -n "$flush" ] && curl -sf -X POST "$flush"
  [ "$system" = tempo ] && tempo_wait_flushed "$flushed"
  settle "$p"
  c1=$(cpu_of "$p")
  [ "$system" = tempo ] && { sleep 45; settle "$p"; }  # its compaction, not counted
  rate["$system $proto"]=$(sed -E 's/.*"spans_per_second":([0-9.]+).*/\1/' <<<"$out")
  cpu_per_m["$system $proto"]=$(awk -v a="$c0" -v b="$c1" -v n="$SPANS" 'BEGIN{printf "%.2f", (b-a) * 1e6 / n}')
}

for proto in $protocols; do
  case $proto in
    grpc) endpoint=http://127.0.0.1:14317 ;;
    jaeger/grpc) endpoint=http://127.0.0.1:24250 ;;
    zipkin/json) endpoint=http://127.0.0.1:19411 ;;
    *) endpoint=http://127.0.0.1:14318 ;;
  esac
  load tracehouse "$pid" "$proto" "$endpoint" http://127.0.0.1:13200/flush
done
rows=$(psql -h 127.0.0.1 -p 15432 -d bench-http-protobuf -XAtc "SELECT count(*) FROM spans")
kill -TERM $pid; wait $pid || true
bytes=$(find "$dir/data/tenants/bench-http-protobuf/spans" -name '*.parquet' -printf '%s\n' | awk '{s+=$1} END{print s}')

systems=tracehouse
if [ -x "$tempo_bin" ]; then
  source benches/tempo.sh
  for proto in $protocols; do
    case $proto in
      grpc) endpoint=http://127.0.0.1:4417 ;;
      jaeger/grpc) endpoint=http://127.0.0.1:34250 ;;
      zipkin/json) endpoint=http://127.0.0.1:29411 ;;
      *) endpoint=http://127.0.0.1:4418 ;;
    esac
    load tempo "$tempo_pid" "$proto" "$endpoint"
  done
  tempo_bytes=$(tempo_block_bytes bench-http-protobuf)
  systems="tracehouse tempo"
fi

echo "spans per protocol: $SPANS (rows stored for http/protobuf: $rows), cores: $(nproc)"
printf '%-14s' protocol
for s in $systems; do printf ' %16s %10s %14s' "$s spans/s" ratio "cpu-s/M spans"; done
[ "$systems" = tracehouse ] || printf ' %22s' "tempo cpu / tracehouse"
echo
ref=${rate[tracehouse http/protobuf]}
for proto in $protocols; do
  printf '%-14s' "$proto"
  for s in $systems; do
    printf ' %16.0f %10.2f %14s' "${rate[$s $proto]}" "$(awk -v a="${rate[$s $proto]}" -v b="$ref" 'BEGIN{print a/b}')" \
      "${cpu_per_m[$s $proto]}"
  done
  [ "$systems" = tracehouse ] ||
    printf ' %22.2f' "$(awk -v t="${cpu_per_m[tempo $proto]}" -v h="${cpu_per_m[tracehouse $proto]}" 'BEGIN{print t/h}')"
  echo
done
awk -v b="$bytes" -v n="$rows" 'BEGIN{printf "tracehouse on disk after flush: %d bytes of parquet, %.1f bytes/span\n", b, b/n}'
[ -z "${tempo_bytes:-}" ] ||
  awk -v b="$tempo_bytes" -v n="$SPANS" 'BEGIN{printf "tempo blocks (data.parquet) of http/protobuf: %d bytes, %.1f bytes/span\n", b, b/n}'
