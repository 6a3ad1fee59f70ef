# Sourced by the benchmark scripts: builds release `tracehouse` and `tracegen`, starts the
# server on local storage in a temporary directory (killed and removed on exit), and waits
# until it is ready. Sets `bin` (the release dir), `dir` and `pid`.
# Ports: HTTP 13200, OTLP gRPC 14317, OTLP HTTP 14318, Jaeger gRPC 24250, Zipkin 19411,
# Postgres 15432, Flight 18815.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tracehouse-target}"
scripts/build tracehouse tracegen  # features resolved over the workspace (run from the repo root)
bin="$CARGO_TARGET_DIR/release"
dir=$(mktemp -d)
trap 'kill -9 $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
cat > "$dir/config.yaml" <<YAML
server:
  http_listen_port: 13200
distributor:
  receivers:
    otlp:
      protocols:
        grpc:
          endpoint: 127.0.0.1:14317
        http:
          endpoint: 127.0.0.1:14318
    jaeger:
      protocols:
        grpc:
          endpoint: 127.0.0.1:24250
    zipkin:
      endpoint: 127.0.0.1:19411
postgres:
  listen_address: 127.0.0.1:15432
flight:
  listen_address: 127.0.0.1:18815
overrides:                # the benchmarks measure throughput, not Tempo's default limits
  defaults:
    ingestion:
      rate_limit_bytes: 0
      max_traces_per_user: 0
    global:
      max_bytes_per_trace: 0
YAML
"$bin/tracehouse" -config.file="$dir/config.yaml" -storage.path="$dir/data" 2>"$dir/server.log" &
pid=$!
for _ in $(seq 200); do curl -sf http://127.0.0.1:13200/ready >/dev/null && break; sleep 0.1; done
