#!/usr/bin/env bash
# `convoy plan` against measurement on an emulated cluster (issue 11): hosts are network
# namespaces joined by a bridge with links capped by tc tbf (scripts/cluster.sh); MPI ranks run
# one per host, one compute thread each. For each (hosts, cap) and model:
#   1. `convoy plan calibrate --comm mpi` under mpirun measures, in the same run, the link
#      (MPI_Allreduce between hosts 0 and 1, 64 KiB–4 MiB, time = 2α + bytes/β) and, on host 0
#      while the other hosts sleep, every layer's forward/backward time;
#   2. each run is measured (median step of steps 6..STEPS on the lead process) and predicted by
#      `convoy plan --profile P --link profile --latency profile` with the run's layout pinned
#      (--servers, --micro-batches, --mp; the pipeline is run with the plan's --split-after).
# Cores: the hosts share this machine's 2 cores. A rank waiting for the network yields its core
# (OMPI_MCA_mpi_yield_when_idle=1, set by scripts/cluster.sh), so the cores are shared among the
# ranks that compute at the same time: --cores-per-node = 2 / (computing ranks) — all hosts for
# data parallel, pipeline and hybrid, the workers only for the parameter server (its servers
# wait most of the step).
# Needs root, ip netns, tc, Open MPI and a build with --features mpi.
# Usage: bash bench/plan_vs_cluster.sh [STEPS] [HOSTS:CAP ...]   (MODELS="lenet alexnet-cifar")
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-30}
shift || true
CONFIGS=("$@")
[ ${#CONFIGS[@]} -gt 0 ] || CONFIGS=(2:100mbit 2:500mbit 2:2gbit 3:100mbit 3:500mbit 3:2gbit 4:100mbit 4:500mbit 4:2gbit)
MODELS=${MODELS:-lenet alexnet-cifar}
BATCH=${BATCH:-64}
MICRO=${MICRO:-8}
cargo build --release --features mpi --quiet
BIN=$PWD/target/release/convoy
out=$(mktemp -d)
trap 'bash scripts/cluster.sh down >/dev/null 2>&1 || true; rm -rf "$out"' EXIT

mpi() {  # ranks, convoy args...
    local n=$1; shift
    bash scripts/cluster.sh run bash -c "mpirun --hostfile \$CLUSTER_HOSTFILE -np $n $BIN $*"
}

measure() {  # ranks, train flags... → median step seconds (or "nan" when the run failed)
    local n=$1; shift
    rm -f "$out/m.jsonl"
    if ! mpi "$n" --log-level error train --model "$model" ${data[@]+"${data[@]}"} --no-progress --no-epoch-eval --steps "$STEPS" --batch-size "$BATCH" --threads 1 --metrics "$out/m.jsonl" "$@" > "$out/run.log" 2>&1; then
        tail -3 "$out/run.log" >&2
        echo nan
        return
    fi
    python3 -c "
import json, statistics
v = [json.loads(l) for l in open('$out/m.jsonl') if l.startswith('{\"event\":\"step\"')][5:]
print(statistics.median([$BATCH / x['images_per_sec'] for x in v]))"
}

predict() {  # nodes, cores, plan flags... → JSON of the one prediction
    local nodes=$1 cores=$2; shift 2
    $BIN plan --profile "$out/$model.json" --model "$model" --batch "$BATCH" --nodes "$nodes" --link profile --latency profile \
        --cores-per-node "$cores" "$@" --json | python3 -c "
import json, sys
print(json.dumps(json.load(sys.stdin)[0]['predictions'][0]))"
}

echo "| hosts | cap | model | link α, β (measured) | run | measured step ms | predicted step ms | error |"
echo "|---:|---|---|---|---|---:|---:|---:|"
for cfg in "${CONFIGS[@]}"; do
    hosts=${cfg%%:*}; cap=${cfg#*:}
    bash scripts/cluster.sh up "$hosts" "$cap" > /dev/null
    for model in $MODELS; do
        case $model in lenet) data=() ;; *) data=(--data synthetic:3x32x32:10:4096:512) ;; esac
        mpi "$hosts" --log-level error plan calibrate --comm mpi --model "$model" --batch "$BATCH" --threads 1 --out "$out/$model.json" > /dev/null 2>&1
        link=$(python3 -c "
import json; l = json.load(open('$out/$model.json'))['mpi_link']
print(f\"{l['alpha']*1e3:.2f} ms, {l['beta']/1e6:.0f} MB/s\")")
        all=$(python3 -c "print(2 / $hosts)")
        runs=("dp|$hosts|$hosts|$all|--strategies dp --bucket-mb 25|")
        runs+=("ps k=1|$hosts|$((hosts - 1))|$(python3 -c "print(2 / ($hosts - 1))")|--strategies ps --servers 1|--strategy ps --servers 1")
        [ "$hosts" -ge 3 ] && runs+=("ps k=2|$hosts|$((hosts - 2))|$(python3 -c "print(2 / ($hosts - 2))")|--strategies ps --servers 2|--strategy ps --servers 2")
        runs+=("pipeline s=$hosts m=$MICRO|$hosts|$hosts|$all|--strategies pipeline --micro-batches $MICRO|--strategy pipeline --stages $hosts --micro-batches $MICRO")
        mp=$hosts; [ "$hosts" -eq 4 ] && mp=2
        runs+=("hybrid dp=$((hosts / mp)) mp=$mp|$hosts|$hosts|$all|--strategies hybrid --mp $mp|--strategy hybrid --dp $((hosts / mp)) --mp $mp")
        for r in "${runs[@]}"; do
            IFS='|' read -r name ranks nodes cores pflags tflags <<< "$r"
            # shellcheck disable=SC2086
            p=$(predict "$nodes" "$cores" $pflags)
            split=$(python3 -c "import json; print(','.join(json.loads('''$p''').get('split_after', [])))")
            [ -n "$split" ] && tflags="$tflags --split-after $split"
            # shellcheck disable=SC2086
            measured=$(measure "$ranks" $tflags)
            python3 -c "
import json, math
m, p = float('$measured'), json.loads('''$p''')['step_s']
err = f'{(p - m) / m * 100:+.0f} %' if not math.isnan(m) else 'run failed'
print(f'| $hosts | $cap | $model | $link | $name | {m*1e3:.1f} | {p*1e3:.1f} | {err} |')"
        done
    done
    bash scripts/cluster.sh down > /dev/null
done
