#!/usr/bin/env bash
# OPERA: a throw-away, one-node SLURM cluster on this machine, to run the workflow's cluster path
# (profiles/slurm) for real: tests/test_slurm.py and anyone checking the profile before a cluster run.
#
#   tools/local_slurm.sh start DIR    install Debian's munge/slurm packages if missing (apt-get),
#                                     write DIR/slurm.conf, start munged, slurmctld and slurmd (no
#                                     systemd, no accounting database), wait until the node is idle,
#                                     print `dir=`, the pids and `export SLURM_CONF=...`.
#                                     A second start on the same DIR keeps the running daemons.
#   tools/local_slurm.sh stop DIR     cancel every job, stop the daemons started from DIR.
#   tools/local_slurm.sh status DIR   which daemons run (exit 1 if one does not), then sinfo.
#   tools/local_slurm.sh env DIR      print `export SLURM_CONF=DIR/slurm.conf` (for eval).
#
# Needs root (slurmd starts jobs as their users) and, the first time, apt-get with a network.
# Everything the cluster writes (config, munge key and socket, state, logs, pid files) stays in DIR.
#
# What the cluster is like, and why:
#   * one partition, `main` (Default=YES): the profile sends jobs to the cluster's default
#     partition unless the user names one, so nothing here needs the profile to change.
#   * no slurmdbd: `sacct` fails, so profiles/slurm asks the Snakemake plugin for squeue-based
#     status; MinJobAge (default 3600 s) keeps finished jobs visible to squeue long enough for the
#     plugin to see COMPLETED / FAILED instead of an unknown job.
#   * Snakemake's jobstep plugin drops every SLURM_* variable (SLURM_CONF included) before its own
#     `srun` inside a job; that srun then reads /etc/slurm/slurm.conf. `start` therefore points
#     /etc/slurm/slurm.conf at DIR/slurm.conf when that path is free or already a link (a real
#     file is never touched; `stop` removes only a link into DIR). OPERA_SLURM_LINK_CONF=0 skips it.
#
# Settings (environment): OPERA_SLURM_PARTITION (main), OPERA_SLURM_CPUS (nproc),
#   OPERA_SLURM_MEM_MB (80% of MemTotal), OPERA_SLURM_MIN_JOB_AGE (3600),
#   OPERA_SLURM_CTLD_PORT (6817), OPERA_SLURM_D_PORT (6818), OPERA_SLURM_NO_INSTALL=1 (fail
#   instead of installing), OPERA_SLURM_LINK_CONF (1).
#
# Example:
#   sudo tools/local_slurm.sh start /tmp/slurm && eval "$(tools/local_slurm.sh env /tmp/slurm)"
#   .venv/bin/snakemake --workflow-profile none --profile profiles/slurm --configfile config/smoke.yaml
#   sudo tools/local_slurm.sh stop /tmp/slurm
set -euo pipefail

PACKAGES="munge slurmctld slurmd slurm-client"
TOOLS="munged mungekey munge unmunge slurmctld slurmd sinfo sbatch srun squeue scancel scontrol"
DEFAULT_CONF=/etc/slurm/slurm.conf
export PATH="$PATH:/usr/sbin:/sbin"

log() { echo "local_slurm: $*" >&2; }
die() { log "$*"; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

set_dir() {  # set_dir PATH [create]: DIR becomes the absolute path
    [ -n "${1:-}" ] || usage
    if [ "${2:-}" = create ]; then mkdir -p "$1"; fi
    [ -d "$1" ] || die "$1 is not a directory (the DIR given to start)"
    DIR="$(cd "$1" && pwd)"
    export SLURM_CONF="$DIR/slurm.conf"
}

# The pid in a pid file, printed only while that process lives and its command line names DIR:
# a pid the kernel has given to another process since is never signalled.
pid_of() {
    local file="$DIR/run/$1.pid" pid
    [ -s "$file" ] || return 0
    pid="$(tr -dc '0-9' < "$file")"
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 0
    if tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "$DIR/"; then echo "$pid"; fi
}

install_packages() {
    local tool missing=""
    for tool in $TOOLS; do command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"; done
    [ -z "$missing" ] && return 0
    [ "${OPERA_SLURM_NO_INSTALL:-0}" = 1 ] && die "missing:$missing (OPERA_SLURM_NO_INSTALL=1)"
    command -v apt-get >/dev/null 2>&1 || die "missing:$missing, and no apt-get to install $PACKAGES"
    log "missing:$missing; installing $PACKAGES with apt-get"
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $PACKAGES >&2
}

write_conf() {
    local host cpus mem
    host="$(hostname -s)"
    cpus="${OPERA_SLURM_CPUS:-$(nproc)}"
    mem="${OPERA_SLURM_MEM_MB:-$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)}"
    cat > "$DIR/slurm.conf" <<EOF
# One-node test cluster written by tools/local_slurm.sh (OPERA); state, logs and pids in $DIR.
ClusterName=opera_local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=${OPERA_SLURM_CTLD_PORT:-6817}
SlurmdPort=${OPERA_SLURM_D_PORT:-6818}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
SlurmUser=$(id -un)
SlurmdUser=root
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups needed (containers, CI machines)
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
# a request the node can never satisfy fails at sbatch instead of pending forever
EnforcePartLimits=ALL
# no accounting database: squeue is the only record of a job, for MinJobAge seconds after it ends
MinJobAge=${OPERA_SLURM_MIN_JOB_AGE:-3600}
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
NodeName=$host NodeHostname=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=${OPERA_SLURM_PARTITION:-main} Nodes=$host Default=YES MaxTime=INFINITE State=UP DefMemPerCPU=$((mem / cpus))
EOF
}

link_default_conf() {
    [ "${OPERA_SLURM_LINK_CONF:-1}" = 1 ] || return 0
    if [ -L "$DEFAULT_CONF" ] || [ ! -e "$DEFAULT_CONF" ]; then
        mkdir -p "$(dirname "$DEFAULT_CONF")"
        ln -sfn "$DIR/slurm.conf" "$DEFAULT_CONF"
        log "$DEFAULT_CONF -> $DIR/slurm.conf"
    else
        log "WARNING: $DEFAULT_CONF is a real file, left alone; the srun inside Snakemake jobs will read it"
    fi
}

wait_until() {  # wait_until SECONDS WHAT COMMAND...
    local deadline=$((SECONDS + $1)) what="$2"; shift 2
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || { log "timed out waiting for $what (logs: $DIR/log)"; return 1; }
        sleep 0.5
    done
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
conf_value() { sed -n "s/^$1=//p" "$DIR/slurm.conf"; }
node_up() { sinfo -h -o '%T' | grep -qE '^(idle|mixed|allocated)'; }

cmd_start() {
    set_dir "${1:-}" create
    [ "$(id -u)" = 0 ] || die "start needs root (slurmd runs jobs as their users)"
    install_packages
    mkdir -p "$DIR"/{munge,state,spool,run,log}
    chmod 700 "$DIR/munge"
    local munged slurmctld slurmd port
    munged="$(pid_of munged)"; slurmctld="$(pid_of slurmctld)"; slurmd="$(pid_of slurmd)"
    if [ -z "$slurmctld$slurmd" ] || [ ! -s "$DIR/slurm.conf" ]; then write_conf; fi
    local ports=""
    [ -n "$slurmctld" ] || ports="$ports $(conf_value SlurmctldPort)"
    [ -n "$slurmd" ] || ports="$ports $(conf_value SlurmdPort)"
    for port in $ports; do
        if port_in_use "$port"; then
            die "port $port is in use (another SLURM?); set OPERA_SLURM_CTLD_PORT / OPERA_SLURM_D_PORT"
        fi
    done
    link_default_conf

    if [ -z "$munged" ]; then
        [ -s "$DIR/munge/munge.key" ] || mungekey --create --keyfile="$DIR/munge/munge.key" >&2
        chmod 600 "$DIR/munge/munge.key"
        rm -f "$DIR/munge/munge.socket" "$DIR/munge/munge.socket.lock"
        munged --force --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" \
            --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" \
            --seed-file="$DIR/munge/munged.seed" >&2
        wait_until 20 munged test -S "$DIR/munge/munge.socket" || exit 1
        munged="$(pid_of munged)"
        [ -n "$munged" ] || die "munged did not start ($DIR/log/munged.log)"
    fi
    munge -n --socket="$DIR/munge/munge.socket" | unmunge --socket="$DIR/munge/munge.socket" >/dev/null \
        || die "munge credentials do not round-trip ($DIR/log/munged.log)"

    if [ -z "$slurmctld" ]; then
        slurmctld -i -f "$DIR/slurm.conf" >&2
        wait_until 30 slurmctld scontrol ping || die "slurmctld does not answer ($DIR/log/slurmctld.log)"
        slurmctld="$(pid_of slurmctld)"
    fi
    if [ -z "$slurmd" ]; then
        slurmd -f "$DIR/slurm.conf" -N "$(hostname -s)" >&2
        wait_until 20 slurmd test -s "$DIR/run/slurmd.pid" || die "slurmd did not start ($DIR/log/slurmd.log)"
        slurmd="$(pid_of slurmd)"
    fi
    wait_until 60 "an idle node" node_up || die "node not up: $(sinfo -h -N -o '%N %T %E' 2>&1)"
    [ -n "$slurmctld" ] && [ -n "$slurmd" ] || die "a daemon exited after starting ($DIR/log)"
    echo "dir=$DIR"
    echo "munged_pid=$munged"
    echo "slurmctld_pid=$slurmctld"
    echo "slurmd_pid=$slurmd"
    echo "export SLURM_CONF=$DIR/slurm.conf"
    sinfo >&2
}

cmd_stop() {
    set_dir "${1:-}"
    local name pid deadline jobs
    if [ -n "$(pid_of slurmctld)" ]; then
        jobs="$(squeue -h -o '%i' -t PENDING,RUNNING,SUSPENDED,COMPLETING 2>/dev/null || true)"
        if [ -n "$jobs" ]; then
            log "cancelling jobs:" $jobs
            scancel $jobs 2>/dev/null || true
            deadline=$((SECONDS + 30))
            while [ "$SECONDS" -lt "$deadline" ] \
                  && squeue -h -t PENDING,RUNNING,SUSPENDED,COMPLETING -o '%i' 2>/dev/null | grep -q .; do
                sleep 1
            done
        fi
    fi
    for name in slurmd slurmctld munged; do
        pid="$(pid_of "$name")"
        if [ -z "$pid" ]; then echo "$name: not running"; continue; fi
        kill -TERM "$pid" 2>/dev/null || true
        deadline=$((SECONDS + 15))
        while [ -d "/proc/$pid" ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
        if [ -d "/proc/$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.5; fi
        if [ -d "/proc/$pid" ]; then echo "$name: pid $pid still running"; else echo "$name: stopped (pid $pid)"; fi
    done
    if [ -L "$DEFAULT_CONF" ] && [ "$(readlink "$DEFAULT_CONF")" = "$DIR/slurm.conf" ]; then
        rm -f "$DEFAULT_CONF"
        echo "removed link $DEFAULT_CONF"
    fi
}

cmd_status() {
    set_dir "${1:-}"
    local name pid rc=0
    for name in munged slurmctld slurmd; do
        pid="$(pid_of "$name")"
        if [ -n "$pid" ]; then echo "$name: running (pid $pid)"; else echo "$name: not running"; rc=1; fi
    done
    if [ "$rc" = 0 ]; then sinfo; fi
    return "$rc"
}

case "${1:-}" in
    start) cmd_start "${2:-}" ;;
    stop) cmd_stop "${2:-}" ;;
    status) cmd_status "${2:-}" ;;
    env) set_dir "${2:-}"; echo "export SLURM_CONF=$DIR/slurm.conf" ;;
    *) usage ;;
esac
