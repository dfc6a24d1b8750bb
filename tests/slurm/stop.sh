#!/usr/bin/env bash
# Stop the one-node SLURM cluster of tests/slurm/start.sh: slurmd, slurmctld and munged, each by
# the process id in its pid file. Harmless when they are not running.
#
#   bash tests/slurm/stop.sh               # stop all three
#   bash tests/slurm/stop.sh --keep-munge  # leave munged running (start.sh uses this on restart)
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo bash "$0" "$@"
    fi
    echo "stop.sh: must run as root (and sudo is not installed)" >&2
    exit 1
fi

stop() {  # name pidfile
    local pid
    [ -f "$2" ] || return 0
    pid="$(cat "$2")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "stop.sh: $1 (pid $pid) did not stop within 10 s; killing it" >&2
            kill -9 "$pid" 2>/dev/null || true
        fi
        echo "stop.sh: stopped $1 (pid $pid)"
    fi
    rm -f "$2"
}

stop slurmd /run/slurmd.pid
stop slurmctld /run/slurmctld.pid
if [ "${1:-}" != "--keep-munge" ]; then
    stop munged /run/munge/munged.pid
fi
