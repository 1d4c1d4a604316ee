#!/usr/bin/env bash
# Runs two cm-sim builds back to back on the sim_speed bench's scenario (1P4S over 2 AZs, 3 CMS,
# primary SIGSTOPped) and on a chunk of swarm seeds, and prints simulated seconds per wall second
# and per CPU second of each (CPU seconds are what a busy machine cannot steal).
# usage: scripts/sim-speed-compare.sh <old cm-sim> <new cm-sim> [runs (default 20)] [seeds (default 0..100)]
set -euo pipefail
old=$1 new=$2 runs=${3:-20} seeds=${4:-0..100}
measure() { # bin args... -> "wall cpu" (output in the temp file)
    local bin=$1; shift
    local t0 out
    t0=$(date +%s.%N)
    out=$( { /usr/bin/time -f "%U %S" "$bin" "$@" > /tmp/sim-speed-compare.$$ || true; } 2>&1 | tail -1)
    local wall; wall=$(echo "$(date +%s.%N) - $t0" | bc)
    local cpu; cpu=$(echo "$out" | awk '{print $1+$2}')
    echo "$wall $cpu"
}
for which in old new; do
    bin=${!which}
    # The runs are timed as one batch: CPU time is reported in 10 ms steps, too coarse for
    # one run of a few tens of ms. Every run of the scenario simulates the same seconds.
    "$bin" run primary-frozen-1p4s-two-az --json > /tmp/sim-speed-compare.$$ || true
    s=$(jq .sim_seconds /tmp/sim-speed-compare.$$)
    read -r wall cpu < <(measure bash -c \
        'for _ in $(seq "$1"); do "$2" run primary-frozen-1p4s-two-az --json > /dev/null || true; done' \
        _ "$runs" "$bin")
    sim=$(echo "$s * $runs" | bc)
    printf '%s  1p4s_3cms with_faults x%s: %.0f sim s, %.0f sim-s/wall-s, %.0f sim-s/cpu-s\n' \
        "$which" "$runs" "$sim" "$(echo "$sim / $wall" | bc -l)" "$(echo "$sim / $cpu" | bc -l)"
    read -r w c < <(measure "$bin" sweep --seeds "$seeds" --json)
    s=$(jq .sim_seconds /tmp/sim-speed-compare.$$)
    printf '%s  swarm sweep %s: %.0f sim s, %.0f sim-s/wall-s (all threads), %.0f sim-s/cpu-s\n' \
        "$which" "$seeds" "$s" "$(echo "$s / $w" | bc -l)" "$(echo "$s / $c" | bc -l)"
done
rm -f /tmp/sim-speed-compare.$$
