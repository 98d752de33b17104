#!/usr/bin/env bash
# Copied from ../shared/cluster/netns-cluster.sh (the project carries its own copy; used by
# bench/plan_vs_cluster.sh and tests/plan_cluster.rs). Changes: the agent path follows the file
# name; `run` makes a process that waits in MPI yield its core (OMPI_MCA_mpi_yield_when_idle=1),
# since the emulated hosts share the machine's cores — on real hosts a waiting process polls a
# core of its own, here it would take one from a host that computes — and binds no rank to a core
# (each host's Open MPI would bind its rank to core 0, the same core on every host).
# A small emulated cluster on one machine: N network namespaces ("hosts") joined by a bridge that
# lives in its own namespace (nothing touches the machine's own network), with an optional
# bandwidth cap per host link (tc tbf). mpirun started in host 0 reaches the others through an
# rsh agent that is `ip netns exec`.
#   up N [RATE]   create hosts h0..h{N-1} (RATE e.g. 1gbit, 200mbit; default: no cap; the tbf
#                 bucket holds what the link carries in 1 ms, at least 64 KiB (a veth's GSO
#                 packets), or CLUSTER_BURST: a bucket lets the first bucketful of every message
#                 that follows a pause cross at the veth's speed, which no real link does — with
#                 4 ms (250 kB at 500 Mbit/s) a 3-stage LeNet pipeline ran in 160 ms per step,
#                 with 64 KiB in 240); each host
#                 gets CLUSTER_CPUS cores (default: this machine's cores / N) as a CPU quota
#                 (a cgroup of the cpu controller, v1 or v2; per period of CLUSTER_CPU_PERIOD_US,
#                 default 10000), so hosts do not take each other's time: a host that waits
#                 leaves its share unused, as a real node would
#   down          remove them
#   run CMD...    run CMD inside h0 with OMPI settings that launch on the other hosts
#   on I CMD...   run CMD inside host hI (its namespace and CPU quota), without MPI
#   hostfile      print an Open MPI hostfile for the hosts
set -euo pipefail
P=${CLUSTER_PREFIX:-cvy}
SW=${P}-sw
NET=${CLUSTER_NET:-10.231.77}
here=$(cd "$(dirname "$0")" && pwd)

hosts() { ip netns list | awk '{print $1}' | grep -E "^${P}-h[0-9]+$" | sort -V; }

up() {
  local n=$1 rate=${2:-}
  down >/dev/null 2>&1 || true
  ip netns add "$SW"
  ip -n "$SW" link add br0 type bridge
  ip -n "$SW" link set br0 up
  ip -n "$SW" link set lo up
  local hostsfile; hostsfile=$(mktemp)
  local burst=${CLUSTER_BURST:-}
  if [ -n "$rate" ] && [ -z "$burst" ]; then
    burst=$(python3 -c "
import re, sys
m = re.fullmatch(r'([0-9.]+)([kmg]?)(bit|bps)', '$rate'.lower())
if not m: sys.exit('rate $rate: hint: like 100mbit, 2gbit')
bits = float(m[1]) * {'': 1, 'k': 1e3, 'm': 1e6, 'g': 1e9}[m[2]] * (8 if m[3] == 'bps' else 1)
print(max(65536, int(bits / 8 * 0.001)))")
  fi
  for i in $(seq 0 $((n-1))); do echo "$NET.$((i+10)) h$i" >> "$hostsfile"; done
  for i in $(seq 0 $((n-1))); do
    local h=${P}-h$i
    ip netns add "$h"
    ip link add "v$P$i" netns "$h" type veth peer name "p$i" netns "$SW"
    ip -n "$h" link set "v$P$i" name eth0
    ip -n "$h" addr add "$NET.$((i+10))/24" dev eth0
    ip -n "$h" link set eth0 up
    ip -n "$h" link set lo up
    # TCP congestion control of the host: cubic (Linux's default), else reno, where this
    # machine's default is another: under BBR (the default of some VMs) an exchange of 6.65 MB
    # both ways between 2 hosts at 100 Mbit/s took 0.56–0.58 s with spikes to 0.80 (about one
    # in six); under reno 0.568 s every time.
    local cc
    for cc in cubic reno; do
      ip netns exec "$h" sysctl -q -w net.ipv4.tcp_congestion_control=$cc 2>/dev/null && break
    done
    ip -n "$SW" link set "p$i" master br0
    ip -n "$SW" link set "p$i" up
    if [ -n "$rate" ]; then
      # cap both directions: egress of the host and egress of the switch port
      ip netns exec "$h"  tc qdisc add dev eth0 root tbf rate "$rate" burst "$burst" latency 100ms
      ip netns exec "$SW" tc qdisc add dev "p$i" root tbf rate "$rate" burst "$burst" latency 100ms
    fi
    mkdir -p "/etc/netns/$h"
    cp "$hostsfile" "/etc/netns/$h/hosts"
    echo "127.0.0.1 localhost" >> "/etc/netns/$h/hosts"
    echo "h$i" > "/etc/netns/$h/hostname"
  done
  rm -f "$hostsfile"
  local cpus=${CLUSTER_CPUS:-$(python3 -c "print($(nproc) / $n)")}
  for i in $(seq 0 $((n-1))); do cpu_quota "${P}-h$i" "$cpus"; done
  echo "up: $n hosts ${rate:+capped at $rate (burst $burst bytes)}, TCP $(ip netns exec "${P}-h0" sysctl -n net.ipv4.tcp_congestion_control), $cpus cores each$([ -n "$(cgroup_dir "${P}-h0")" ] || echo ' (no cpu cgroup here: not enforced)')"
}

# The cpu cgroup of host $1 (empty when this machine has no cpu controller to use). Inside a
# host (`ip netns exec` remounts /sys) the cgroup file systems are not visible: the cpu
# hierarchy is mounted again, privately, at /tmp/cvy-cgroup.
cgroup_dir() {
  local r=""
  if [ -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then r=/sys/fs/cgroup/cpu
  elif [ -f /sys/fs/cgroup/cgroup.controllers ] && grep -qw cpu /sys/fs/cgroup/cgroup.controllers; then r=/sys/fs/cgroup
  elif [ -f /tmp/cvy-cgroup/cgroup.procs ]; then r=/tmp/cvy-cgroup
  elif [ ! -d /sys/fs/cgroup/unified ] && [ "$(id -u)" = 0 ] && mkdir -p /tmp/cvy-cgroup \
      && { mount -t cgroup -o cpu cgroup /tmp/cvy-cgroup 2>/dev/null || mount -t cgroup2 none /tmp/cvy-cgroup 2>/dev/null; }; then
    r=/tmp/cvy-cgroup
  fi
  [ -n "$r" ] && echo "$r/$1"
  return 0
}

cpu_quota() {  # host, cores: a period of CLUSTER_CPU_PERIOD_US, cores × period of CPU time in each
  local d; d=$(cgroup_dir "$1"); [ -n "$d" ] || return 0
  local period=${CLUSTER_CPU_PERIOD_US:-10000}
  local us; us=$(python3 -c "print(max(1000, int($2 * $period)))")
  mkdir -p "$d"
  if [ -f "$d/cpu.cfs_quota_us" ]; then
    echo "$period" > "$d/cpu.cfs_period_us"; echo "$us" > "$d/cpu.cfs_quota_us"
  else
    grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control || echo +cpu > /sys/fs/cgroup/cgroup.subtree_control
    echo "$us $period" > "$d/cpu.max"
  fi
}

enter_cgroup() {  # host: moves this shell (and what it starts) into the host's cpu cgroup
  local d; d=$(cgroup_dir "$1")
  if [ -n "$d" ] && [ -d "$d" ]; then echo $$ > "$d/cgroup.procs"; fi
}

down() {
  for h in $(hosts); do
    ip netns del "$h"; rm -rf "/etc/netns/$h"
    local d; d=$(cgroup_dir "$h"); [ -n "$d" ] && [ -d "$d" ] && rmdir "$d" 2>/dev/null || true
  done
  ip netns del "$SW" 2>/dev/null || true
}

hostfile() { local i=0; for h in $(hosts); do echo "h$i slots=${SLOTS:-1}"; i=$((i+1)); done; }

agent() {  # called by Open MPI's launcher as: agent [opts] HOST CMD...
  while [ "${1:-}" != "" ] && [ "${1#-}" != "$1" ]; do shift; done
  local host=$1; shift
  # own network namespace, its own hostname (a UTS namespace) and its CPU share, as a real host
  enter_cgroup "${P}-$host"
  exec ip netns exec "${P}-$host" unshare --uts bash -c "hostname $host; $*"
}

# Open MPI's TCP transport sends a message above its eager limit (64 KiB) only after the
# receiver's answer, and that answer travels on the one connection between the two processes,
# behind whatever data the receiver is sending there: two processes that exchange large
# messages both ways (a reduce-scatter or all-gather of 2, the hybrid's exchange at 2) either
# overlap the two directions or, once one answer is late, take turns for the rest of the run —
# an all-reduce of 6.65 MB between 2 hosts at 100 Mbit/s in 0.57 s or 1.10 s (in 3 of 6 runs of
# 13). Messages up to EAGER go without the answer (0.57 s in 7 of 7 runs; 10.4 MB in 0.89 s
# in 3 of 3); it costs each process about 10 MB. docs/mpi.md gives users the same settings.
EAGER=${CLUSTER_EAGER:-8388608}

run() {
  local hf; hf=$(mktemp); hostfile > "$hf"
  enter_cgroup "${P}-h0"
  OMPI_MCA_plm_rsh_agent="$here/$(basename "$0") agent" \
  OMPI_MCA_btl=self,tcp OMPI_MCA_btl_tcp_if_include=eth0 OMPI_MCA_oob_tcp_if_include=eth0 \
  OMPI_MCA_btl_tcp_eager_limit=$EAGER OMPI_MCA_btl_tcp_max_send_size=$EAGER \
  OMPI_MCA_pml=ob1 OMPI_MCA_plm_rsh_no_tree_spawn=1 OMPI_MCA_mpi_yield_when_idle=1 OMPI_MCA_hwloc_base_binding_policy=none \
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 CLUSTER_HOSTFILE="$hf" \
    ip netns exec "${P}-h0" unshare --uts bash -c 'hostname h0; "$0" cgmount; exec "$@"' "$here/$(basename "$0")" "$@"
}

on() {
  local host=h$1; shift
  enter_cgroup "${P}-$host"
  exec ip netns exec "${P}-$host" "$@"
}

cmd=${1:-}; shift || true
case "$cmd" in
  up) up "$@" ;; down) down ;; run) run "$@" ;; on) on "$@" ;; hostfile) hostfile ;; agent) agent "$@" ;;
  cgmount) cgroup_dir x > /dev/null ;;  # (inside h0, once, before the agents need it)
  *) sed -n '/^#   up N/,/^#   hostfile/p' "$0"; exit 2 ;;
esac
