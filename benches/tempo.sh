# Sourced by the benchmark scripts when a Tempo binary is at $tempo_bin: starts it monolithic
# on loopback (HTTP 3300, OTLP gRPC 4417, OTLP HTTP 4418, Jaeger gRPC 34250, Zipkin 29411),
# multitenant, local storage in a temporary directory, Tempo's ingestion limits lifted, blocks
# cut after 5 s; killed and removed on exit. Sets `tempo_pid` and `tempo_dir`; defines
# `tempo_block_bytes TENANT`, `tempo_flushed_bytes` and `tempo_wait_flushed BYTES_BEFORE`.
tempo_dir=$(mktemp -d)
cat > "$tempo_dir/tempo.yaml" <<YAML
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
        grpc:
          endpoint: "127.0.0.1:4417"
        http:
          endpoint: "127.0.0.1:4418"
    jaeger:
      protocols:
        grpc:
          endpoint: "127.0.0.1:34250"
    zipkin:
      endpoint: "127.0.0.1:29411"
live_store:
  wal:
    path: $tempo_dir/live-store/wal
    ingestion_time_range_slack: 1h
  shutdown_marker_dir: $tempo_dir/live-store/shutdown
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
      path: $tempo_dir/wal
    local:
      path: $tempo_dir/blocks
usage_report:
  reporting_enabled: false
overrides:
  defaults:
    ingestion:
      rate_limit_bytes: 1000000000
      burst_size_bytes: 1000000000
      max_traces_per_user: 0
YAML
"$tempo_bin" -config.file="$tempo_dir/tempo.yaml" -multitenancy.enabled=true >"$tempo_dir/tempo.log" 2>&1 &
tempo_pid=$!
disown "$tempo_pid"  # killed at exit without a "Killed" line
trap 'kill -9 ${pid:-} $tempo_pid 2>/dev/null || true; rm -rf "${dir:-}" "$tempo_dir"' EXIT
for _ in $(seq 120); do curl -sf http://127.0.0.1:3300/ready >/dev/null && break; sleep 0.5; done
curl -sf http://127.0.0.1:3300/ready >/dev/null || { tail -20 "$tempo_dir/tempo.log"; exit 1; }

# Bytes of TENANT's data.parquet files in Tempo's backend, of blocks not compacted away,
# once unchanged for 10 s (at most 3 min).
tempo_block_bytes() {
  local last=-1 now
  for _ in $(seq 18); do
    now=$(find "$tempo_dir/blocks/$1" -name meta.json -printf '%h/data.parquet\n' 2>/dev/null |
      xargs -r stat -c %s | awk '{s+=$1} END{print s+0}')
    [ "$now" -gt 0 ] && [ "$now" = "$last" ] && break
    last=$now
    sleep 10
  done
  echo "$now"
}

# Bytes of blocks Tempo's live-store has flushed to its backend so far.
tempo_flushed_bytes() {
  curl -sf http://127.0.0.1:3300/metrics | awk '$1 == "tempo_live_store_local_flush_size_bytes_sum" {print $2}'
}

# Waits until the live-store has flushed what it was sent: its flushed bytes have grown past
# $1 and then stayed unchanged for 10 s, twice its block duration (at most 3 min).
tempo_wait_flushed() {
  local last="" now stable=0
  for _ in $(seq 180); do
    now=$(tempo_flushed_bytes)
    if [ "$now" != "$1" ] && [ "$now" = "$last" ]; then
      stable=$((stable + 1))
      [ "$stable" -ge 10 ] && return 0
    else
      stable=0
    fi
    last=$now
    sleep 1
  done
}
