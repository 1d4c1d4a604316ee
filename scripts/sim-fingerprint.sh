#!/usr/bin/env bash
# Prints one line per simulator run: scenario, seed, trace hash, events, acknowledged writes,
# ok, violations' rules and the timings, for swarm seeds A..B and every named scenario (seed 1).
# Two builds whose machines decide the same give identical output (wall time is left out), so
# `diff` of two outputs checks that a speed change kept every run's event order.
# usage: scripts/sim-fingerprint.sh <cm-sim binary> [A..B]   (default 0..200)
set -euo pipefail
bin=$1
range=${2:-0..200}
dir=$(cd "$(dirname "$0")/../cm-sim/scenarios" && pwd)
line='"\(.scenario) \(.seed) \(.trace_hash) ev=\(.events) acked=\(.acked_writes) ok=\(.ok) v=\([.violations[].rule]|join(",")) t=\(.timings|tojson) l=\(.liveness_s)"'
"$bin" sweep --seeds "$range" --json | jq -r ".runs[] | $line" || true
for f in "$dir"/*.toml; do
    "$bin" run "$(basename "$f" .toml)" --json | jq -r "$line" || true
done
