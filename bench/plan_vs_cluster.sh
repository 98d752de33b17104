#!/usr/bin/env bash
# `convoy plan` against measurement on an emulated cluster (issue 11): hosts are network
# namespaces joined by a bridge with links capped by tc tbf (scripts/cluster.sh); MPI ranks run
# one per host. For each (hosts, cap) the link is calibrated in the same run with MpiComm's
# all-reduce (least squares of time = 2α + bytes/β over 256 KiB–4 MiB, 2 hosts), the compute with
# `convoy plan calibrate --threads 1`, then LeNet steps are measured and predicted.
# The hosts share the machine's 2 cores: --cores-per-node = 2 / hosts (below 2 the model turns
# overlap off: MPI's progress polling takes the worker's core; below 1 compute slows by 1/cores).
# Needs root, ip netns, tc, Open MPI and a build with --features mpi.
# Usage: bash bench/plan_vs_cluster.sh [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-30}
cargo build --release --features mpi --quiet
BIN=$PWD/target/release/convoy
out=$(mktemp -d)
trap 'bash scripts/cluster.sh down >/dev/null 2>&1 || true; rm -rf "$out"' EXIT
$BIN plan calibrate --model lenet --threads 1 --out "$out/profile.json" > /dev/null

measure() {  # hosts, flags... → median step seconds
    local n=$1; shift
    bash scripts/cluster.sh run bash -c "mpirun --hostfile \$CLUSTER_HOSTFILE -np $n $BIN --log-level error train --no-progress --no-epoch-eval --steps $STEPS --batch-size 64 --threads 1 --metrics $out/m.jsonl $*" > /dev/null 2>&1
    python3 -c "
import json, statistics
v = [json.loads(l) for l in open('$out/m.jsonl') if l.startswith('{\"event\":\"step\"')][5:]
print(statistics.median([64 / x['images_per_sec'] for x in v]))"
}

echo "| hosts | cap | link calibrated (α, β) | run | measured step ms | predicted step ms | error |"
echo "|---:|---|---|---|---:|---:|---:|"
for cfg in "2 1gbit" "2 200mbit" "3 1gbit"; do
    set -- $cfg; hosts=$1; cap=$2
    bash scripts/cluster.sh up "$hosts" "$cap" > /dev/null
    bash scripts/cluster.sh run bash -c "mpirun --hostfile \$CLUSTER_HOSTFILE -np 2 $BIN bench allreduce --comm mpi --min-bytes 262144 --max-bytes 4194304 --budget-bytes 8388608" > "$out/ar.jsonl" 2>/dev/null
    read -r alpha beta < <(python3 -c "
import json
r = [json.loads(l) for l in open('$out/ar.jsonl') if l.startswith('{')]
pts = [(x['bytes'], x['time_us'] * 1e-6) for x in r if x['algorithm'] == 'mpi-direct']
n = len(pts); mx = sum(p[0] for p in pts) / n; my = sum(p[1] for p in pts) / n
s = sum((p[0] - mx) * (p[1] - my) for p in pts) / sum((p[0] - mx) ** 2 for p in pts)
print(max(my - s * mx, 0) / 2, 1 / s)")
    cores=$(python3 -c "print(2 / $hosts)")
    runs=("dp:" "dp:--no-overlap")
    [ "$hosts" -ge 3 ] && runs+=("ps k=1:--strategy ps --servers 1")
    for r in "${runs[@]}"; do
        name=${r%%:*}; flags=${r#*:}
        workers=$hosts; [ "$name" = "ps k=1" ] && workers=$((hosts - 1))
        c=$cores; [ "$flags" = "--no-overlap" ] && c=$(python3 -c "print(min($cores, 1.0))")
        measured=$(measure "$hosts" "$flags")
        predicted=$($BIN plan --profile "$out/profile.json" --model lenet --batch 64 --nodes "$workers" --link "${beta}B/s" --latency "${alpha}s" \
            --cores-per-node "$c" --mem-bandwidth 10GB/s --strategies "${name%% *}" --all-layouts --json | python3 -c "
import json, sys
d = json.load(sys.stdin)[0]['predictions']
want = '$name'
p = [x for x in d if x['strategy'] == want or (want == 'dp' and x['strategy'].startswith('dp bucket=25'))]
print(p[0]['step_s'])")
        python3 -c "
m, p = $measured, $predicted
print(f'| $hosts | $cap | {$alpha*1e3:.2f} ms, {$beta/1e6:.0f} MB/s | $name ${flags:+($flags)} | {m*1e3:.1f} | {p*1e3:.1f} | {(p-m)/m*100:+.0f} % |')"
    done
    bash scripts/cluster.sh down > /dev/null
done
