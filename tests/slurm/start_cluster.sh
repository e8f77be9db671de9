#!/usr/bin/env bash
# Start a one-node SLURM cluster on 127.0.0.1 for tests/workflow/test_slurm.py.
#
# Installs Debian's slurmctld, slurmd, slurm-client and munge when they are
# missing, writes /etc/slurm/slurm.conf (the job-step plugin drops SLURM_CONF
# inside jobs, so the config must sit at the default path), starts munged,
# slurmctld and slurmd in the foreground of background shells and records
# their PIDs under $LORASCOPE_SLURM_STATE/pids so stop_cluster.sh can stop
# exactly these processes. Needs root. Exit codes: 0 cluster up, 3 packages
# could not be installed (the test skips), anything else a real failure.
#
# Usage: tests/slurm/start_cluster.sh        (state in /tmp/lorascope-slurm)
set -euo pipefail

STATE=${LORASCOPE_SLURM_STATE:-/tmp/lorascope-slurm}
# The profile's slurm-init-seconds-before-status-checks; squeue only sees
# finished jobs for MinJobAge seconds, and the plugin falls back to sacct
# (which hangs without slurmdbd) unless MinJobAge >= 3x this delay.
STATUS_DELAY=${LORASCOPE_SLURM_STATUS_DELAY:-2}
MIN_JOB_AGE=$((STATUS_DELAY * 30))
CONF=/etc/slurm/slurm.conf
MARKER="# written by lorascope tests/slurm/start_cluster.sh"
PKGS=(slurmctld slurmd slurm-client munge)

log() { echo "[start_cluster] $*" >&2; }

if [[ $(id -u) != 0 ]]; then
    log "must run as root (slurmd and munged need it)"
    exit 3
fi

missing=()
for bin in slurmctld slurmd sbatch squeue munged; do
    command -v "$bin" >/dev/null || missing+=("$bin")
done
if ((${#missing[@]})); then
    log "missing ${missing[*]}; installing ${PKGS[*]}"
    if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${PKGS[@]}"; } >&2; then
        log "apt-get could not install ${PKGS[*]}"
        exit 3
    fi
fi

# A cluster that a killed test session left running holds the ports: its
# config names its state dir, so stop exactly the daemons it recorded there.
if [[ -e $CONF ]] && grep -qF "$MARKER" "$CONF"; then
    old=$(sed -n 's|^StateSaveLocation=\(.*\)/ctld$|\1|p' "$CONF")
    if [[ -n $old && $old != "$STATE" && -d $old/pids ]]; then
        log "stopping the cluster a previous session left running ($old)"
        LORASCOPE_SLURM_STATE=$old "$(dirname "$0")/stop_cluster.sh"
    fi
fi
if [[ -e $STATE/pids/slurmctld.pid ]]; then
    log "a cluster from $STATE seems to be running; run stop_cluster.sh first"
    exit 1
fi
if [[ -e $CONF ]] && ! grep -qF "$MARKER" "$CONF"; then
    log "$CONF exists and was not written by this script; refusing to replace it"
    exit 1
fi

host=$(hostname -s)
cpus=$(nproc)
# Leave headroom below the physical total so slurmd never marks the node
# invalid for reporting less memory than configured.
mem_mb=$(($(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) * 8 / 10))

mkdir -p "$STATE"/{pids,log,ctld,spool} /etc/slurm
cat >"$CONF" <<EOF
$MARKER
ClusterName=lorascope
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.daemon.pid
SlurmdPidFile=$STATE/slurmd.daemon.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# No cgroups in containers: track processes by parent pid, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=$MIN_JOB_AGE
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
log "wrote $CONF (node $host, $cpus CPUs, $mem_mb MB, MinJobAge $MIN_JOB_AGE)"

# munged refuses a socket directory that is not mode 755.
install -d -m 755 -o munge -g munge /run/munge /var/lib/munge /var/log/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    mungekey --create --keyfile=/etc/munge/munge.key
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key

# Each daemon runs in the foreground of a background job, so $! is the
# daemon's own PID (setpriv and nohup exec, they do not fork).
start() {  # name, command...
    local name=$1
    shift
    nohup "$@" </dev/null >"$STATE/log/$name.out" 2>&1 &
    echo $! >"$STATE/pids/$name.pid"
    log "started $name (pid $!)"
}
start munged setpriv --reuid=munge --regid=munge --init-groups \
    munged --foreground --force
for _ in $(seq 50); do
    [[ -S /run/munge/munge.socket.2 ]] && break
    sleep 0.1
done
munge -n | unmunge >/dev/null || { log "munge round trip failed"; exit 1; }

start slurmctld slurmctld -D -i
for _ in $(seq 100); do
    scontrol ping 2>/dev/null | grep -q UP && break
    sleep 0.2
done
start slurmd slurmd -D

# Ready when the node accepts jobs.
for _ in $(seq 150); do
    state=$(sinfo -h -n "$host" -o %t 2>/dev/null || true)
    if [[ $state == idle* || $state == mix* ]]; then
        log "cluster up: node $host is $state"
        exit 0
    fi
    sleep 0.2
done
log "node $host never became idle (state '${state:-?}'); logs in $STATE/log"
tail -n 20 "$STATE"/log/*.log >&2 || true
exit 1
