#!/usr/bin/env bash
# Replays every daemon journal kept by the end-to-end tests (SPEC §17) against this build's core:
# scripts/test.sh runs the tests with CM_KEEP_JOURNALS set, then this script. A journal that
# does not replay `identical` means a machine changed in a way the recorded runs would not
# reproduce: look at the first differing step it prints.
#   scripts/replay-journals.sh [DIR]    (default: $CM_KEEP_JOURNALS)
set -euo pipefail
cd "$(dirname "$0")/.."

root="${1:-${CM_KEEP_JOURNALS:-}}"
if [ -z "$root" ] || [ ! -d "$root" ]; then
  echo "usage: $0 DIR (or set CM_KEEP_JOURNALS): the directory the tests kept journals in" >&2
  exit 2
fi

cargo build --locked -q -p cm-sim --bin cm-sim
sim="${CARGO_TARGET_DIR:-target}/debug/cm-sim"

# A journal is a directory of *.cmj segments: <root>/<cluster>/node<n>/<daemon>/.
mapfile -t dirs < <(find "$root" -name '*.cmj' -printf '%h\n' | sort -u)
if [ "${#dirs[@]}" -eq 0 ]; then
  echo "no journals under $root: did the end-to-end tests run with CM_KEEP_JOURNALS set?" >&2
  exit 1
fi
failed=0
for d in "${dirs[@]}"; do
  if ! "$sim" replay "$d"; then
    failed=$((failed + 1))
  fi
done
echo "replayed ${#dirs[@]} journals, $failed not identical"
[ "$failed" -eq 0 ]
