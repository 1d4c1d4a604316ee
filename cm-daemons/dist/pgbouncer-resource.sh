#!/bin/sh
# PgBouncer as a cm_agent custom resource (SPEC §14), typically with
# `placement = { with_primary_of = GROUP }` so that it runs only where the group's writable
# primary is and points at that local primary:
#
#   pgbouncer-resource.sh -start|-stop|-check|-clean ID RUN_DIR LISTEN_PORT DB_PORT [OS_USER [PASSFILE]]
#
#   [[resource]]
#   name = "pgbouncer"
#   script = "/usr/local/lib/cm/pgbouncer-resource.sh"
#   time_out = 2
#   placement = { with_primary_of = 1 }
#   instances = [{ node = 1, id = 9001, args = "/var/lib/cm/pgbouncer 6432 5432" }, ...]
#
# PgBouncer refuses to run as root: when the agent runs this script as root it starts PgBouncer
# as OS_USER (default postgres) with runuser. It listens on 127.0.0.1:LISTEN_PORT and forwards
# every database to 127.0.0.1:DB_PORT (the local DN) in session mode, trusting the users listed
# in RUN_DIR/users-ID.txt (the DB OS user by default) — adapt auth_type/auth_file for
# production. PostgreSQL trusts no address (SPEC §16): PgBouncer logs in to it with the
# cluster's password, read from PASSFILE (the node's libpq passfile, `<state_dir>/pgpass`,
# line `*:*:*:USER:PASSWORD`) into the 0600 auth file. Exit codes follow the contract: -check 0
# online, 1 offline.
set -u

[ $# -ge 5 ] || {
    echo "usage: $0 -start|-stop|-check|-clean ID RUN_DIR LISTEN_PORT DB_PORT [OS_USER [PASSFILE]]" >&2
    exit 2
}
verb=$1
id=$2
dir=$3
listen=$4
dbport=$5
user=${6:-postgres}
passfile=${7:-}
ini="$dir/pgbouncer-$id.ini"
pidfile="$dir/pgbouncer-$id.pid"

as_user() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u "$user" -- "$@"
    else
        "$@"
    fi
}

running_pid() {
    [ -f "$pidfile" ] || return 1
    pid=$(cat "$pidfile" 2>/dev/null)
    case "$pid" in '' | *[!0-9]*) return 1 ;; esac
    kill -0 "$pid" 2>/dev/null || return 1
    grep -q pgbouncer "/proc/$pid/comm" 2>/dev/null || return 1
    echo "$pid"
}

case "$verb" in
-start)
    running_pid >/dev/null && exit 0
    mkdir -p "$dir" || exit 1
    [ "$(id -u)" = 0 ] && chown "$user" "$dir"
    password=""
    if [ -n "$passfile" ]; then
        # The password field of the first `*:*:*:USER:` line (the generated one is plain hex).
        password=$(grep "^\*:\*:\*:$user:" "$passfile" | head -n 1 | cut -d: -f5-)
        [ -n "$password" ] || {
            echo "no password for $user in $passfile" >&2
            exit 1
        }
    fi
    (umask 077 && printf '"%s" "%s"\n' "$user" "$password" >"$dir/users-$id.txt") || exit 1
    cat >"$ini" <<EOF
[databases]
* = host=127.0.0.1 port=$dbport
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $listen
unix_socket_dir =
auth_type = trust
auth_file = $dir/users-$id.txt
pool_mode = session
pidfile = $pidfile
logfile = $dir/pgbouncer-$id.log
server_login_retry = 1
ignore_startup_parameters = extra_float_digits,options
EOF
    [ "$(id -u)" = 0 ] && chown "$user" "$ini" "$dir/users-$id.txt"
    rm -f "$pidfile"
    as_user pgbouncer -d -q "$ini" || exit 1
    i=0
    while [ $i -lt 20 ]; do
        running_pid >/dev/null && exit 0
        sleep 0.1
        i=$((i + 1))
    done
    echo "pgbouncer $id did not start; see $dir/pgbouncer-$id.log" >&2
    exit 1
    ;;
-stop)
    pid=$(running_pid) || exit 0
    # SIGTERM: immediate shutdown (clients are cut; the primary moved or the node stops).
    kill -TERM "$pid"
    i=0
    while [ $i -lt 30 ] && kill -0 "$pid" 2>/dev/null; do
        sleep 0.1
        i=$((i + 1))
    done
    kill -0 "$pid" 2>/dev/null && exit 1
    exit 0
    ;;
-check)
    running_pid >/dev/null && exit 0
    exit 1
    ;;
-clean)
    pid=$(running_pid) && kill -KILL "$pid"
    rm -f "$pidfile"
    exit 0
    ;;
*)
    echo "unknown verb $verb" >&2
    exit 2
    ;;
esac
