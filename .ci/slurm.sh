#!/usr/bin/env bash
# A single-node SLURM for CI (Debian's slurmctld, slurmd and munge; run as root, no systemd).
#
#   .ci/slurm.sh start    install if needed, write /etc/slurm/slurm.conf, start the daemons,
#                         wait until the node is idle
#   .ci/slurm.sh stop     stop the daemons this script started (by PID), nothing else
#   .ci/slurm.sh status   sinfo of the running cluster
#
# The node offers every CPU, the memory less 1 GB, and one fake GPU (gres on /dev/null) so a
# `gpu: 1` job can be scheduled. There is no job accounting, so the SLURM executor plugin
# needs `--slurm-status-command squeue --slurm-no-account` (MinJobAge keeps finished jobs
# visible to squeue and scontrol: an hour, so a test that checks its first jobs at the end of a
# slow run still finds them). State, logs and PID files live in $MASSL_SLURM_DIR.
set -euo pipefail

STATE_DIR=${MASSL_SLURM_DIR:-/tmp/massl-slurm}
CONF=/etc/slurm/slurm.conf
MARKER="# written by massl-bench .ci/slurm.sh"
NODE=$(hostname -s)
STARTED="$STATE_DIR/started.pids"  # "name pid" of each daemon this script started

log() { echo "slurm.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

install_packages() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null && return
    log "installing slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

write_config() {
    if [[ -f $CONF ]] && ! grep -qF "$MARKER" "$CONF"; then
        die "$CONF exists and was not written by this script; not touching a real cluster's config"
    fi
    local cpus mem_mb
    cpus=$(nproc)
    mem_mb=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))
    mkdir -p /etc/slurm "$STATE_DIR/state" "$STATE_DIR/spool"
    cat >"$CONF" <<EOF
$MARKER
ClusterName=massl-ci
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
MinJobAge=3600
StateSaveLocation=$STATE_DIR/state
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/slurmctld.log
SlurmdLogFile=$STATE_DIR/slurmd.log
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:fake:1 State=UNKNOWN
PartitionName=ci Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    echo "NodeName=$NODE Name=gpu Type=fake File=/dev/null" >/etc/slurm/gres.conf
    echo "# no cgroups: ProctrackType=proctrack/linuxproc, TaskPlugin=task/none" >/etc/slurm/cgroup.conf
}

# Start a daemon unless one is running; record its PID (from its PID file) if we started it.
start_daemon() {
    local name=$1 pidfile=$2
    shift 2
    if pgrep -x "$name" >/dev/null; then
        log "$name already running; leaving it alone"
        return
    fi
    rm -f "$pidfile"
    "$@" || die "$name did not start"
    for _ in $(seq 50); do
        [[ -s $pidfile ]] && break
        sleep 0.1
    done
    [[ -s $pidfile ]] || die "$name wrote no PID file $pidfile"
    echo "$name $(cat "$pidfile")" >>"$STARTED"
    log "started $name (pid $(cat "$pidfile"))"
}

wait_for_idle_node() {
    local state=""
    for _ in $(seq 60); do
        state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
        [[ $state == idle || $state == mixed ]] && { log "node $NODE is $state"; return; }
        sleep 0.5
    done
    log "slurmctld log:"; tail -n 20 "$STATE_DIR/slurmctld.log" >&2 || true
    log "slurmd log:"; tail -n 20 "$STATE_DIR/slurmd.log" >&2 || true
    die "node $NODE is not idle after 30 s (state: '${state:-no answer}')"
}

start() {
    [[ $(id -u) == 0 ]] || die "run as root (installs packages and starts system daemons)"
    install_packages
    write_config
    mkdir -p "$STATE_DIR"
    [[ -f /etc/munge/munge.key ]] || die "/etc/munge/munge.key missing (the munge package creates it)"
    mkdir -p /run/munge
    chown munge:munge /run/munge
    start_daemon munged /run/munge/munged.pid runuser -u munge -- munged --force
    start_daemon slurmctld "$STATE_DIR/slurmctld.pid" slurmctld -c
    start_daemon slurmd "$STATE_DIR/slurmd.pid" slurmd -N "$NODE"
    wait_for_idle_node
}

stop() {
    [[ -f $STARTED ]] || { log "no daemons started by this script"; return; }
    local name pid
    # Reverse order: slurmd, slurmctld, then munged.
    tac "$STARTED" | while read -r name pid; do
        if kill -0 "$pid" 2>/dev/null && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]]; then
            kill "$pid"
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
            log "stopped $name (pid $pid)"
        else
            log "$name (pid $pid) is no longer running"
        fi
    done
    rm -f "$STARTED"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) sinfo ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
