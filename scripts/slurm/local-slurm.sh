#!/usr/bin/env bash
# A real single-node Slurm on this machine, CPU only, everything in one temporary directory (for
# test/slurm/ and for trying OPENTUNE_EXECUTOR=slurm by hand; docs/slurm.md):
#
#   scripts/slurm/local-slurm.sh install      # Debian's slurm-wlm + munge, when missing (needs root)
#   scripts/slurm/local-slurm.sh start DIR    # munged, slurmctld, slurmd; prints SLURM_CONF=DIR/slurm.conf
#   scripts/slurm/local-slurm.sh stop DIR     # stops the three daemons started for DIR
#
# Clients find this cluster through SLURM_CONF=DIR/slurm.conf (its AuthInfo names our munge socket).
# One node (this host as "localhost", the whole node per job: select/linear) and one partition
# "debug". Daemons run as root (as the tests do); MinJobAge keeps ended jobs visible to squeue
# and scontrol for an hour, as there is no slurmdbd (no sacct) here.
set -euo pipefail

say () { echo "local-slurm: $*" >&2; }

install_slurm () {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then return 0; fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    say "slurm-wlm/munge missing and cannot install them (needs root and apt-get)"; return 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends slurm-wlm munge >/tmp/opentune-slurm-apt.log 2>&1 ||
    { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends slurm-wlm munge >/tmp/opentune-slurm-apt.log 2>&1; } ||
    { tail -5 /tmp/opentune-slurm-apt.log >&2; return 1; }
}

free_port () {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

write_config () {
  local dir=$1 node
  # this machine's sockets, cores and threads as slurmd sees them (a mismatch drains the node)
  node=$(slurmd -C | head -1 | sed -e 's/^NodeName=[^ ]*//' -e 's/RealMemory=[0-9]*//')
  mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/munge"
  chmod 755 "$dir/munge" # munged wants its socket's folder reachable by all
  dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$dir/munge/munge.key"
  cat >"$dir/slurm.conf" <<CONF
ClusterName=opentune
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/linear
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MinJobAge=3600
KillWait=10
InactiveLimit=0
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
MpiDefault=none
NodeName=localhost NodeAddr=127.0.0.1 $node State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
  # nothing is confined (proctrack/linuxproc, task/none), but slurmd loads a cgroup plugin anyway:
  # v1 where any v1 hierarchy is mounted (autodetect refuses hybrid hosts), else v2
  local plugin=cgroup/v2
  if grep -q ' cgroup ' /proc/mounts; then plugin=cgroup/v1; fi
  printf 'CgroupPlugin=%s\nCgroupAutomount=no\nIgnoreSystemd=yes\nConstrainCores=no\nConstrainRAMSpace=no\n' \
    "$plugin" >"$dir/cgroup.conf"
}

start () {
  local dir=$1
  install_slurm
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ -f "$dir/slurm.conf" ] || write_config "$dir"
  export SLURM_CONF=$dir/slurm.conf
  munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed"
  slurmctld -f "$SLURM_CONF"
  slurmd -f "$SLURM_CONF" -N localhost
  for _ in $(seq 1 150); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qE '^idle'; then echo "SLURM_CONF=$SLURM_CONF"; return 0; fi
    sleep 0.2
  done
  say "the node did not come up idle; logs in $dir/log"; sinfo -N -l >&2 || true
  tail -5 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
  stop "$dir"; return 1
}

stop () {
  local dir pidfile pid
  dir=$(cd "$1" && pwd)
  # the jobs first (SIGTERM, then SIGKILL after KillWait), so that no slurmstepd outlives its slurmd
  if SLURM_CONF=$dir/slurm.conf scancel --user="$(id -un)" 2>/dev/null; then
    for _ in $(seq 1 75); do
      [ -z "$(SLURM_CONF=$dir/slurm.conf squeue --noheader 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
  for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || continue
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
}

case "${1:-}" in
  install) install_slurm ;;
  start) start "${2:?usage: $0 start DIR}" ;;
  stop) stop "${2:?usage: $0 stop DIR}" ;;
  *) echo "usage: $0 install | start DIR | stop DIR" >&2; exit 2 ;;
esac
