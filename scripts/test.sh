#!/usr/bin/env bash
# The test command of README.md: every unit, property, simulation and end-to-end test.
# End-to-end tests need PostgreSQL server binaries; on a machine without them this script
# installs them with apt-get (as root), as CI's fresh machines need.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "PostgreSQL server binaries missing: installing them with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "PostgreSQL is missing: install it (Debian: sudo apt-get install postgresql)" >&2
    exit 1
  fi
fi

# HAProxy for the load-balancer end-to-end test (SPEC §15); its service is not wanted.
if [ ! -x /usr/sbin/haproxy ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "HAProxy missing: installing it with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
    (systemctl disable --now haproxy || service haproxy stop) >/dev/null 2>&1 || true
  else
    echo "HAProxy is missing: the HAProxy end-to-end test will skip (Debian: sudo apt-get install haproxy)" >&2
  fi
fi

# PgBouncer for the custom-resource end-to-end test (SPEC §14). Debian's package starts its own
# service on install: stop and disable it (our test runs its own copies as the postgres user).
if ! command -v pgbouncer >/dev/null && [ ! -x /usr/sbin/pgbouncer ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "PgBouncer missing: installing it with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
    if command -v systemctl >/dev/null && systemctl list-unit-files pgbouncer.service >/dev/null 2>&1; then
      systemctl disable --now pgbouncer.service >/dev/null 2>&1 || true
    fi
    if [ -x /etc/init.d/pgbouncer ]; then
      /etc/init.d/pgbouncer stop >/dev/null 2>&1 || true
      update-rc.d pgbouncer disable >/dev/null 2>&1 || true
    fi
  else
    echo "PgBouncer is missing: install it (Debian: sudo apt-get install pgbouncer)" >&2
    exit 1
  fi
fi

# nftables for the nemesis's partitions (SPEC §18: `cm_local nemesis`, run by .ci/run).
if ! command -v nft >/dev/null && [ ! -x /usr/sbin/nft ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "nftables missing: installing it with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables >/dev/null
  else
    echo "nftables is missing: the nemesis cannot partition (Debian: sudo apt-get install nftables)" >&2
  fi
fi

if ! command -v cargo-nextest >/dev/null; then
  cargo install cargo-nextest --locked
fi
# The end-to-end tests keep every daemon's journal here; they are replayed below (SPEC §17)
# and removed once they all replay identical (kept for a look otherwise).
CM_KEEP_JOURNALS="$(mktemp -d -t cm-journals.XXXXXX)"
export CM_KEEP_JOURNALS
echo "end-to-end journals kept in $CM_KEEP_JOURNALS"
cargo nextest run --workspace --locked --no-fail-fast
cargo test --workspace --doc --locked
# Fuzz corpora and regression inputs replay as ordinary tests (fuzz/ is its own workspace).
cargo test --manifest-path fuzz/Cargo.toml --locked
# Every journal the end-to-end tests kept replays identical against this build's core.
scripts/replay-journals.sh "$CM_KEEP_JOURNALS"
rm -rf "$CM_KEEP_JOURNALS"
