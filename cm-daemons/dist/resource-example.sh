#!/bin/sh
# A complete custom-resource script for cm_agent (SPEC §14): it keeps one long-running program
# alive, tracked by a pid file. Use it as is for a program that runs in the foreground, or copy
# it as the skeleton of your own script.
#
#   resource-example.sh -start|-stop|-check|-clean ID RUN_DIR PROGRAM [ARGS...]
#
# In the cluster config (the agent appends `args` to `<verb> <id>`, split on whitespace):
#
#   [[resource]]
#   name = "web"
#   script = "/usr/local/lib/cm/resource-example.sh"
#   instances = [{ node = 1, id = 9001, args = "/var/lib/cm/res /usr/bin/python3 -m http.server 8080" }]
#
# The contract:
#   -start  start it in the background and return (exit 0 when it runs);
#   -stop   stop it gracefully (SIGTERM, wait up to 5 s);
#   -check  exit 0 online, 1 offline, 2 unknown, 3 abnormal (here: a pid file whose process
#           is gone but left the file behind is "offline"; a process that ignores signals is
#           still "online" until -clean);
#   -clean  force it down (SIGKILL) and remove its traces.
# The agent kills any run (with its process group) after the resource's `time_out`; the
# program started by -start gets its own session (setsid) so that it outlives the script.
# stdout and stderr of the script go to the agent's log (bounded); the program's go to
# RUN_DIR/resource-ID.log.
set -u

usage() {
    echo "usage: $0 -start|-stop|-check|-clean ID RUN_DIR PROGRAM [ARGS...]" >&2
    exit 2
}

[ $# -ge 3 ] || usage
verb=$1
id=$2
run_dir=$3
shift 3
pidfile="$run_dir/resource-$id.pid"
logfile="$run_dir/resource-$id.log"

# The pid in the pid file, if that process is alive and is still the program we started (a
# recycled pid runs something else: its command line does not match).
running_pid() {
    [ -f "$pidfile" ] || return 1
    pid=$(cat "$pidfile" 2>/dev/null)
    case "$pid" in '' | *[!0-9]*) return 1 ;; esac
    kill -0 "$pid" 2>/dev/null || return 1
    if [ -n "$program" ] && [ -r "/proc/$pid/cmdline" ]; then
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$program" || return 1
    fi
    echo "$pid"
}

program=${1:-}

case "$verb" in
-start)
    [ -n "$program" ] || usage
    if running_pid >/dev/null; then
        echo "resource $id already runs"
        exit 0
    fi
    mkdir -p "$run_dir" || exit 1
    setsid "$@" </dev/null >>"$logfile" 2>&1 &
    echo $! >"$pidfile"
    # Give it a moment to fail fast (a bad path, a port in use).
    sleep 0.3
    if running_pid >/dev/null; then
        echo "resource $id started as pid $(cat "$pidfile")"
        exit 0
    fi
    echo "resource $id exited right after its start; see $logfile" >&2
    exit 1
    ;;
-stop)
    pid=$(running_pid) || exit 0
    kill -TERM "$pid" 2>/dev/null
    i=0
    while [ $i -lt 50 ] && kill -0 "$pid" 2>/dev/null; do
        sleep 0.1
        i=$((i + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "resource $id (pid $pid) ignored SIGTERM for 5 s" >&2
        exit 1
    fi
    rm -f "$pidfile"
    exit 0
    ;;
-check)
    if running_pid >/dev/null; then
        exit 0
    fi
    exit 1
    ;;
-clean)
    if pid=$(running_pid); then
        kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$pidfile"
    exit 0
    ;;
*)
    usage
    ;;
esac
