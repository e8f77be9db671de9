#!/usr/bin/env bash
# Stop the daemons started by start_cluster.sh, by the PIDs it recorded
# (never by name: other SLURM or munge processes on the machine are left
# alone). Idempotent: missing or stale PID files are ignored.
set -uo pipefail

STATE=${LORASCOPE_SLURM_STATE:-/tmp/lorascope-slurm}

log() { echo "[stop_cluster] $*" >&2; }

# Stop in reverse start order: slurmd, slurmctld, then munged.
for name in slurmd slurmctld munged; do
    pidfile=$STATE/pids/$name.pid
    [[ -f $pidfile ]] || continue
    pid=$(<"$pidfile")
    # Guard against a recycled PID: only signal the process we started.
    if [[ -r /proc/$pid/comm && $(</proc/"$pid"/comm) == "$name" ]]; then
        kill -TERM "$pid"
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name (pid $pid) ignored SIGTERM; sending SIGKILL"
            kill -KILL "$pid"
        fi
        log "stopped $name (pid $pid)"
    fi
    rm -f "$pidfile"
done

# The config start_cluster.sh wrote for this cluster goes too: left behind,
# it makes every later snakemake on the machine wait 9-10 s at start-up (the
# SLURM executor plugin runs `scontrol show config` at import, which then
# retries a controller that is gone; without a config it fails at once).
CONF=/etc/slurm/slurm.conf
MARKER="# written by lorascope tests/slurm/start_cluster.sh"
if [[ -f $CONF ]] && grep -qF "$MARKER" "$CONF" &&
    grep -qxF "StateSaveLocation=$STATE/ctld" "$CONF"; then
    rm -f "$CONF"
    log "removed $CONF"
fi
