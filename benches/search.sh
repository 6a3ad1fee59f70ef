#!/usr/bin/env bash
# Search side by side with Tempo on the same spans in the same run (benches/README.md).
# Usage: benches/search.sh [SPANS] [FILES] [RUNS] [search flags: --compact, --only NAME, ...]
# FILES 0 keeps every span live (unflushed); --compact merges the files before the searches.
# Tempo: TEMPO_BIN (default ~/.cache/tempo-oracle/tempo, as shared/tempo-oracle/build.sh
# leaves it). Without a Tempo binary, only tracehouse is timed.
# Tempo runs monolithic on loopback (HTTP 3300, OTLP HTTP 4418), local storage, with its
# ingestion limits lifted; after the spans are sent the bench waits for Tempo to cut and
# flush its blocks, so both sides answer from storage.
set -euo pipefail
spans=${1:-500000}
files=${2:-2}
runs=${3:-5}
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tracehouse-target}"
scripts/build search  # features resolved over the workspace, as for every release binary
tempo_bin=${TEMPO_BIN:-$HOME/.cache/tempo-oracle/tempo}
args=(--spans "$spans" --files "$files" --runs "$runs" "${@:4}")
if [ -x "$tempo_bin" ]; then
  dir=$(mktemp -d)
  cat > "$dir/tempo.yaml" <<YAML
stream_over_http_enabled: true
server:
  http_listen_address: 127.0.0.1
  http_listen_port: 3300
  grpc_listen_address: 127.0.0.1
  grpc_listen_port: 9395
  log_level: warn
distributor:
  receivers:
    otlp:
      protocols:
        http:
          endpoint: "127.0.0.1:4418"
live_store:
  wal:
    path: $dir/live-store/wal
    ingestion_time_range_slack: 1h
  shutdown_marker_dir: $dir/live-store/shutdown
  max_block_duration: 5s
query_frontend:
  search:
    query_backend_after: 30s
  metrics:
    query_backend_after: 30s
storage:
  trace:
    backend: local
    blocklist_poll: 10s
    wal:
      path: $dir/wal
    local:
      path: $dir/blocks
usage_report:
  reporting_enabled: false
overrides:
  defaults:
    ingestion:
      rate_limit_bytes: 1000000000
      burst_size_bytes: 1000000000
      max_traces_per_user: 0
YAML
  "$tempo_bin" -config.file="$dir/tempo.yaml" -multitenancy.enabled=true >"$dir/tempo.log" 2>&1 &
  tempo_pid=$!
  trap 'kill -9 $tempo_pid 2>/dev/null || true; rm -rf "$dir"' EXIT
  for _ in $(seq 120); do curl -sf http://127.0.0.1:3300/ready >/dev/null && break; sleep 0.5; done
  curl -sf http://127.0.0.1:3300/ready >/dev/null || { tail -20 "$dir/tempo.log"; exit 1; }
  args+=(--tempo http://127.0.0.1:3300 --tempo-otlp http://127.0.0.1:4418)
fi
"$CARGO_TARGET_DIR/release/search" "${args[@]}"
