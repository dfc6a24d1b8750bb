#!/usr/bin/env bash
# Start a real one-node SLURM cluster on this machine for the tests (tests/test_slurm.py).
#
#   bash tests/slurm/start.sh     # install if missing, configure, start, wait until the node is idle
#   bash tests/slurm/stop.sh      # stop the daemons again
#
# Debian 12 (slurm 22.05), run as root (or through sudo). Running it again is harmless: it only
# (re)starts what is not running, or everything when the written configuration changed.
#
# The cluster: this host is the controller and the only node; partitions `cpu` (default) and
# `gpu`. The node declares fake GPUs (gres `gpu`, no device behind them) so that `--gpus=1`
# requests schedule on machines without a GPU. No slurmdbd: `sacct` does not work, so a
# Snakemake profile must use `slurm-status-command: squeue`; MinJobAge keeps finished jobs
# visible to `squeue` and `scontrol show job` for five minutes.
#
# The configuration goes to /etc/slurm/, where slurm looks by default: the Snakemake job step
# drops every SLURM_* variable (SLURM_CONF included) before it calls `srun` inside a job.
# A slurm.conf not written by this script is never overwritten (set CACFLOW_SLURM_FORCE=1 to
# do it anyway).
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo --preserve-env=CACFLOW_SLURM_FORCE,CACFLOW_SLURM_WAIT_S bash "$0" "$@"
    fi
    echo "start.sh: SLURM daemons must be started as root (and sudo is not installed)" >&2
    exit 1
fi

here="$(cd "$(dirname "$0")" && pwd)"
# One start at a time (pytest workers may call this together). The daemons are started with
# this descriptor closed (9>&-), or they would hold the lock for their lifetime.
mkdir -p /run/lock
exec 9>/run/lock/cacflow-slurm-start.lock
flock --wait 900 9 || { echo "start.sh: another start.sh holds the lock" >&2; exit 1; }
conf_dir=/etc/slurm
marker="# Written by cacflow tests/slurm/start.sh"
fake_gpus=2
wait_s="${CACFLOW_SLURM_WAIT_S:-60}"

# --- install ---------------------------------------------------------------------------------
missing=()
for tool in /usr/sbin/slurmctld:slurmctld /usr/sbin/slurmd:slurmd /usr/bin/sbatch:slurm-client \
    /usr/sbin/munged:munge; do
    [ -x "${tool%%:*}" ] || missing+=("${tool##*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "start.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- configure -------------------------------------------------------------------------------
host="$(hostname -s)"
# CPUs, sockets, cores and memory exactly as slurmd sees them, so the node registers as valid.
hardware="$(slurmd -C | head -n 1 | sed -e 's/^NodeName=[^ ]* //')"

slurm_conf="$marker
ClusterName=cacflow
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# No systemd and no usable cgroups in containers and CI machines.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
# No accounting daemon; finished jobs stay visible to squeue/scontrol for 300 s. The Snakemake
# plugin trusts squeue only when MinJobAge >= 3 x slurm-init-seconds-before-status-checks.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=300
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 $hardware Gres=gpu:$fake_gpus State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$host MaxTime=INFINITE State=UP
"
# Fake GPUs: slurm counts the device files of a gpu gres, so give it empty plain files.
fake_gpu_files=/var/lib/slurm/fake-gpu
gres_conf="$marker
AutoDetect=off
NodeName=$host Name=gpu File=$fake_gpu_files[0-$((fake_gpus - 1))]
"

if [ -f "$conf_dir/slurm.conf" ] && ! grep -qxF "$marker" "$conf_dir/slurm.conf" \
    && [ "${CACFLOW_SLURM_FORCE:-0}" != 1 ]; then
    echo "start.sh: $conf_dir/slurm.conf exists and was not written by this script;" \
        "not touching it (CACFLOW_SLURM_FORCE=1 overwrites it)" >&2
    exit 1
fi

changed=0
write_if_changed() {  # path content
    if ! printf '%s' "$2" | cmp -s - "$1"; then
        printf '%s' "$2" >"$1.tmp" && mv "$1.tmp" "$1"
        changed=1
    fi
}
mkdir -p "$conf_dir" /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
for i in $(seq 0 $((fake_gpus - 1))); do touch "$fake_gpu_files$i"; done
write_if_changed "$conf_dir/slurm.conf" "$slurm_conf"
write_if_changed "$conf_dir/gres.conf" "$gres_conf"

if [ "$changed" = 1 ]; then
    echo "start.sh: wrote $conf_dir/slurm.conf and gres.conf; restarting the SLURM daemons"
    bash "$here/stop.sh" --keep-munge
fi

# --- start -----------------------------------------------------------------------------------
running() {  # pidfile
    [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

if ! running /run/munge/munged.pid; then
    install -d -o munge -g munge -m 0755 /run/munge
    runuser -u munge -- /usr/sbin/munged 9>&-
fi
for _ in $(seq 1 20); do
    munge -n </dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.5
done
munge -n </dev/null | unmunge >/dev/null || {
    echo "start.sh: munged does not answer (see /var/log/munge/munged.log)" >&2
    exit 1
}

running /run/slurmctld.pid || /usr/sbin/slurmctld 9>&-
running /run/slurmd.pid || /usr/sbin/slurmd 9>&-

# --- wait for the node -----------------------------------------------------------------------
deadline=$((SECONDS + wait_s))
state=""
while [ "$SECONDS" -lt "$deadline" ]; do
    state="$(sinfo --noheader --nodes "$host" --format %T 2>/dev/null | head -n 1 || true)"
    case "$state" in
        idle | mixed | allocated | completing | inval) break ;;
        drained* | draining | down*)
            # Left over from an earlier run (killed daemons, changed hardware): bring it back.
            scontrol update nodename="$host" state=resume 2>/dev/null || true
            ;;
    esac
    sleep 1
done
case "$state" in
    idle | mixed | allocated | completing) ;;
    *)
        echo "start.sh: node $host did not become idle within ${wait_s}s (state: '${state:-none}')" >&2
        scontrol show node "$host" >&2 || true
        echo "--- /var/log/slurm/slurmctld.log (tail)" >&2
        tail -n 20 /var/log/slurm/slurmctld.log >&2 || true
        echo "--- /var/log/slurm/slurmd.log (tail)" >&2
        tail -n 20 /var/log/slurm/slurmd.log >&2 || true
        exit 1
        ;;
esac
echo "start.sh: SLURM is up: node $host is $state; partitions: $(sinfo --noheader --format %P | tr '\n' ' ')"
