#!/usr/bin/env bash
# Search side by side with Tempo on the same spans in the same run (benches/README.md).
# Usage: benches/search.sh [SPANS] [FILES] [RUNS] [search flags: --compact, --only NAME, ...]
# FILES 0 keeps every span live (unflushed); --compact merges the files before the searches.
# Tempo: TEMPO_BIN (default ~/.cache/tempo-oracle/tempo, as shared/tempo-oracle/build.sh
# leaves it). Without a Tempo binary, only tracehouse is timed.
# Tempo runs as benches/tempo.sh starts it (HTTP 3300, OTLP HTTP 4418); after the spans are
# sent the bench waits for Tempo to cut and flush its blocks, so both sides answer from storage.
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
  source benches/tempo.sh
  args+=(--tempo http://127.0.0.1:3300 --tempo-otlp http://127.0.0.1:4418)
fi
"$CARGO_TARGET_DIR/release/search" "${args[@]}"
