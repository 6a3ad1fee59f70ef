#!/usr/bin/env bash
# Flight streaming benchmark: a release `tracehouse` on local storage loaded with tracegen spans,
# then large results streamed to local clients in the same run: pyarrow plain Flight and the
# ADBC Flight SQL driver against psycopg over the Postgres wire (the peer). Each measurement is
# a fresh client process (median of --runs). Usage: benches/flight.sh [SPANS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
SPANS=${1:-1000000}
RUNS=${2:-3}
python3 -c 'import psycopg, pyarrow.flight, adbc_driver_flightsql' 2>/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check 'psycopg[binary]' pyarrow adbc-driver-flightsql adbc-driver-manager
source benches/server.sh
"$bin/tracegen" --endpoint http://127.0.0.1:14318 --spans "$SPANS" --batch-spans 2000 --concurrency 4 --tenant bench >/dev/null
curl -sf -X POST http://127.0.0.1:13200/flush
echo "spans: $(psql -h 127.0.0.1 -p 15432 -U bench -d bench -XAtc 'SELECT count(*) FROM spans'), cores: $(nproc), runs: $RUNS"
python3 benches/flight_bench.py --server-pid "$pid" --flight-port 18815 --pg-port 15432 --tenant bench --runs "$RUNS"
