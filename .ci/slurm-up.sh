#!/usr/bin/env bash
# Brings up a one-node SLURM cluster on this machine for the SLURM integration tests: Debian's
# slurm-wlm and munge (installed if missing), munged, slurmctld and slurmd started if the cluster
# does not answer, then waits (bounded) for the node to be idle. No systemd is needed: apt does not
# start the daemons here, this script does. Idempotent: a cluster that answers is left as it is.
# Prints the PIDs of the daemons it started to $COMPAT_MATRIX_SLURM_PIDFILE, if set (one a line).
set -euo pipefail

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
    || ! command -v sbatch >/dev/null; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null
fi

node=$(hostname -s)
cpus=$(nproc)
mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
conf=/etc/slurm/slurm.conf
log=${TMPDIR:-/tmp}/compat-matrix-slurm
mkdir -p "$log"
started=()
pidof_daemon() {  # the daemon writes its pid file a moment after it forks
  for _ in $(seq 20); do [ -s "/run/$1.pid" ] && { cat "/run/$1.pid"; return; }; sleep 0.5; done
  pgrep -o -x "$1"
}

# munge: its key (the package makes one; make it if not), its run directory, the daemon as its user.
[ -s /etc/munge/munge.key ] || { mungekey --create --force 2>/dev/null || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge && chmod 0755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- munged --force
  for _ in $(seq 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
  munge -n | unmunge >/dev/null || { echo "munged does not answer" >&2; exit 1; }
  started+=("$(cat /run/munge/munged.pid 2>/dev/null || pgrep -u munge -x munged)")
fi

if ! pgrep -x slurmctld >/dev/null || ! pgrep -x slurmd >/dev/null; then
  # The configuration of a one-node cluster: no cgroups (linuxproc, task/none), no mail, the state
  # under /var/spool. Rewritten only when it names another node (a hand-made one is kept).
  if ! grep -qs "^NodeName=$node " "$conf"; then
    cat >"$conf" <<EOF
# Written by compat-matrix's .ci/slurm-up.sh: a one-node cluster for the integration tests.
ClusterName=compat-matrix
SlurmctldHost=$node
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$log/slurmctld.log
SlurmdLogFile=$log/slurmd.log
JobCompType=jobcomp/none
MinJobAge=300
SlurmdTimeout=60
NodeName=$node CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
  fi
  mkdir -p /var/spool/slurmctld /var/spool/slurmd
  if ! pgrep -x slurmctld >/dev/null; then slurmctld; started+=("$(pidof_daemon slurmctld)"); fi
  for _ in $(seq 30); do timeout 5 sinfo -h >/dev/null 2>&1 && break; sleep 1; done
  if ! pgrep -x slurmd >/dev/null; then slurmd; started+=("$(pidof_daemon slurmd)"); fi
fi

# The node takes a few seconds to register; a node left down by an earlier run is resumed.
for _ in $(seq 60); do
  state=$(timeout 5 sinfo -h -n "$node" -o %T 2>/dev/null | head -1 || true)
  case "$state" in
    idle|mixed|allocated|completing) break ;;
    down*|drain*) scontrol update NodeName="$node" State=RESUME 2>/dev/null || true ;;
  esac
  sleep 1
done
case "${state:-}" in
  idle|mixed|allocated|completing) ;;
  *) echo "the SLURM node is '${state:-no answer}' after 60 s; logs in $log" >&2; tail -20 "$log"/*.log >&2 || true
     exit 1 ;;
esac
if [ -n "${COMPAT_MATRIX_SLURM_PIDFILE:-}" ] && [ ${#started[@]} -gt 0 ]; then
  printf '%s\n' "${started[@]}" >>"$COMPAT_MATRIX_SLURM_PIDFILE"
fi
echo "slurm: $(sinfo -V), node $node $state, $cpus CPUs"
