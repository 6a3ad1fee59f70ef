#!/usr/bin/env bash
# Microservices-mode benchmark: distributor -> Kafka (a fresh tansu broker) -> block-builders ->
# Delta tables, with one and then two block-builders in the same run. For each it reports
#   - end-to-end spans/s: SPANS spans sent by tracegen, divided by the time from the first
#     request until a querier that reads only the committed tables counts all of them;
#   - the distributor's acknowledged spans/s (tracegen's own figure);
#   - the delay from a request's acknowledgement until its trace is queryable, through a
#     querier that asks the live-store and through one that reads only the tables, measured
#     by PROBES single-span requests while tracegen keeps a background load of LOAD spans/s.
# Everything (broker, every component, tracegen) shares this machine's cores.
# Usage: benches/kafka.sh [SPANS] [PROBES] [LOAD]
set -euo pipefail
cd "$(dirname "$0")/.."
SPANS=${1:-300000}
PROBES=${2:-20}
LOAD=${3:-5000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tracehouse-target}"
scripts/build tracehouse tracegen  # features resolved over the workspace, as for every release binary
bin="$CARGO_TARGET_DIR/release"
tansu="${TANSU_BIN:-$HOME/.cache/tracehouse-tools/bin/tansu}"
"$tansu" --version >/dev/null 2>&1 || { echo "tansu not found: run scripts/test once, or set TANSU_BIN" >&2; exit 1; }
root=$(mktemp -d)
pids=()
stop_all() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
trap 'stop_all; rm -rf "$root"' EXIT

wait_ready() { # port
  for _ in $(seq 600); do curl -sf "http://127.0.0.1:$1/ready" >/dev/null && return 0; sleep 0.1; done
  echo "component on :$1 never became ready" >&2; exit 1
}

component() { # dir name target http_port extra-flags...
  local dir=$1 name=$2 target=$3 port=$4; shift 4
  "$bin/tracehouse" -config.file="$dir/config.yaml" -target="$target" -server.http-listen-port="$port" "$@" \
    2>"$dir/$name.log" &
  pids+=($!)
}

declare -A e2e acked live_med live_max tables_med tables_max
for builders in 1 2; do
  dir="$root/run$builders"; mkdir -p "$dir"
  broker_port=$((19390 + builders))
  (cd "$dir" && exec env -u OTEL_EXPORTER_OTLP_ENDPOINT RUST_LOG=warn "$tansu" broker \
    --storage-engine sqlite://broker.db --listener-url "tcp://127.0.0.1:$broker_port" \
    --advertised-listener-url "tcp://127.0.0.1:$broker_port" >broker.log 2>&1) &
  pids+=($!)
  cat >"$dir/config.yaml" <<YAML
storage:
  trace:
    local:
      path: $dir/tables
ingest:
  kafka:
    address: 127.0.0.1:$broker_port
    topic: spans
    auto_create_topic_default_partitions: 4
block_builder:
  consume_cycle_duration: 1s
postgres:
  listen_address: 127.0.0.1:15452
flight:
  enabled: false
YAML
  component "$dir" distributor distributor 13300 \
    -distributor.otlp.grpc-endpoint=127.0.0.1:14337 -distributor.otlp.http-endpoint=127.0.0.1:14338
  wait_ready 13300   # the distributor creates the topic
  for b in $(seq "$builders"); do component "$dir" "builder$b" block-builder $((13300 + b)); done
  component "$dir" live-store live-store 13310
  component "$dir" querier-tables querier 13320
  component "$dir" querier-live querier 13321 -postgres.enabled=false -querier.live-store-addresses=127.0.0.1:13310
  for p in $(seq 13301 $((13300 + builders))) 13310 13320 13321; do wait_ready "$p"; done

  count() { psql -h 127.0.0.1 -p 15452 -d bench -XAtc "SELECT count(*) FROM spans" 2>/dev/null || echo 0; }
  start=$(date +%s.%N)
  out=$("$bin/tracegen" --endpoint http://127.0.0.1:14338 --protocol http/protobuf --spans "$SPANS" \
    --batch-spans 2000 --concurrency 4 --tenant bench)
  sent=$(sed -E 's/.*"spans":([0-9]+).*/\1/' <<<"$out")   # whole traces: a few more than asked
  while [ "$(count)" -lt "$sent" ]; do sleep 0.05; done
  end=$(date +%s.%N)
  sleep 2
  rows=$(count)
  [ "$rows" -eq "$sent" ] || { echo "expected $sent rows, got $rows" >&2; exit 1; }
  e2e[$builders]=$(awk -v n="$sent" -v a="$start" -v b="$end" 'BEGIN{printf "%.0f", n/(b-a)}')
  acked[$builders]=$(sed -E 's/.*"spans_per_second":([0-9.]+).*/\1/' <<<"$out")

  # Delay probes under a steady background load.
  "$bin/tracegen" --endpoint http://127.0.0.1:14338 --protocol http/protobuf --rate "$LOAD" \
    --spans $((LOAD * 90)) --batch-spans 500 --concurrency 2 --tenant load --seed 7 >/dev/null &
  load=$!
  sleep 2
  python3 benches/kafka_delay.py http://127.0.0.1:14338 http://127.0.0.1:13321 http://127.0.0.1:13320 \
    "$PROBES" probe >"$dir/probes.jsonl"
  kill "$load" 2>/dev/null || true
  stats() { # field -> "median max" in ms
    python3 -c 'import json,sys,statistics; v=[json.loads(l)[sys.argv[1]] for l in open(sys.argv[2])]; print(round(statistics.median(v)*1000), round(max(v)*1000))' "$1" "$dir/probes.jsonl"
  }
  read -r live_med[$builders] live_max[$builders] <<<"$(stats live)"
  read -r tables_med[$builders] tables_max[$builders] <<<"$(stats tables)"
  stop_all
done

echo "spans: $SPANS (tracegen http/protobuf, 4 partitions), cores: $(nproc), probes: $PROBES under $LOAD spans/s"
printf '%-9s %14s %8s %16s %22s %24s\n' builders e2e-spans/s ratio acked-spans/s "ack->live ms (med/max)" "ack->tables ms (med/max)"
for b in 1 2; do
  printf '%-9s %14s %8.2f %16.0f %22s %24s\n' "$b" "${e2e[$b]}" "$(awk -v a="${e2e[$b]}" -v r="${e2e[1]}" 'BEGIN{print a/r}')" \
    "${acked[$b]}" "${live_med[$b]}/${live_max[$b]}" "${tables_med[$b]}/${tables_max[$b]}"
done
