#!/usr/bin/env bash
# `convoy plan` against measurement on an emulated cluster (issue 11): hosts are network
# namespaces joined by a bridge with links capped by tc tbf (scripts/cluster.sh); MPI ranks run
# one per host, one compute thread each. For each (hosts, cap) and model:
#   1. `convoy plan calibrate --comm mpi` under mpirun measures, in the same run, the link
#      between hosts 0 and 1 (ping-pong: α + bytes/β; MPI_Allreduce: 2α + bytes/β; 64 KiB–4 MiB);
#      every layer's forward/backward time is measured before each configuration outside the
#      cluster, on one whole core (`convoy plan calibrate --threads 1`);
#   2. each run is measured (median step of steps 6..STEPS on the lead process) and predicted by
#      `convoy plan --profile P --link profile --latency profile` with the run's layout pinned
#      (--servers, --micro-batches, --mp; the pipeline is run with the plan's --split-after), and
#      the eager limit the cluster's MPI runs with (scripts/cluster.sh, CLUSTER_EAGER).
# Cores: the hosts share this machine's 2 cores; scripts/cluster.sh gives each host an equal CPU
# quota (2/hosts cores, a cpu cgroup), so a host that waits leaves its share unused instead of
# lending it to another, as separate nodes would, and convoy's MPI receives sleep while they wait
# long (MpiComm::probe). Before each model's runs `corun` trains the model alone on 1, 2, …, all
# hosts at once (no MPI) and once outside the cluster: the plan gets what a host delivers while
# as many hosts compute as in the run (solo step ÷ co-running step; less than its quota: the
# hosts share the machine's cores and caches) — below one core as --cores-per-node, from one core
# on (2 hosts) as --node-speed with the quota as cores (communication still overlaps) — and
# always the jitter of the steps with every host computing (--jitter: standard deviation ÷
# √mean step).
# Needs root, ip netns, tc, Open MPI and a build with --features mpi.
# Usage: bash bench/plan_vs_cluster.sh [STEPS] [HOSTS:CAP ...]   (MODELS="lenet alexnet-cifar";
# RUNS=REGEX keeps the runs whose name matches, e.g. RUNS='pipeline|hybrid')
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

# What a host delivers while C hosts compute at once: the model trained alone on hosts 0..C-1
# (one process per host, batch/hosts, no MPI) at the same time, and once outside the cluster on a
# whole core. Prints "CORES JITTER": the solo step ÷ the hosts' mean step (the cores a host
# delivers, at most its quota: the hosts share this machine's cores, and each one computing
# slows the others beyond the quota), and the hosts' step-to-step spread as the coefficient of
# variation of one second of computation (standard deviation ÷ √mean step).
corun() {  # C
    local c=$1 b=$((BATCH / hosts)) h args
    args=(--log-level error train --model "$model" ${data[@]+"${data[@]}"} --no-progress --no-epoch-eval --steps 40 --batch-size "$b" --threads 1)
    for h in $(seq 0 $((c - 1))); do
        rm -f "$out/co$h.jsonl"
        bash scripts/cluster.sh on "$h" "$BIN" "${args[@]}" --metrics "$out/co$h.jsonl" > /dev/null 2>&1 &
    done
    wait
    [ -f "$out/solo.jsonl" ] || "$BIN" "${args[@]}" --metrics "$out/solo.jsonl" > /dev/null 2>&1
    python3 -c "
import json, statistics
def steps(f):
    return [$b / json.loads(l)['images_per_sec'] for l in open(f) if l.startswith('{\"event\":\"step\"')][10:]
hosts = [steps('$out/co%d.jsonl' % h) for h in range($c)]
mean = statistics.mean(statistics.mean(v) for v in hosts)
jitter = statistics.mean(statistics.stdev(v) / statistics.mean(v) ** 0.5 for v in hosts)
print(f'{statistics.mean(steps(\"$out/solo.jsonl\")) / mean:.4f} {jitter:.4f}')"
}

predict() {  # nodes, cores, node speed, plan flags... → JSON of the one prediction
    local nodes=$1 cores=$2 speed=$3; shift 3
    $BIN plan --profile "$out/$model.json" --model "$model" --batch "$BATCH" --nodes "$nodes" --link profile --latency profile \
        --cores-per-node "$cores" --node-speed "$speed" --jitter "$jitter" --eager-limit "${CLUSTER_EAGER:-8388608}" "$@" --json | python3 -c "
import json, sys
print(json.dumps(json.load(sys.stdin)[0]['predictions'][0]))"
}

echo "| hosts | cap | model | β p2p / all-reduce / PS round, host | run | delivered | measured step ms | predicted step ms | error |"
echo "|---:|---|---|---|---|---:|---:|---:|---:|"
for cfg in "${CONFIGS[@]}"; do
    hosts=${cfg%%:*}; cap=${cfg#*:}
    bash scripts/cluster.sh up "$hosts" "$cap" > /dev/null
    for model in $MODELS; do
        case $model in lenet) data=() ;; *) data=(--data synthetic:3x32x32:10:4096:512) ;; esac
        # The link from inside the cluster; the layers from outside it (a host's CPU quota would
        # throttle some timed layers and not others), at one full core: the plan scales them.
        # This VM's speed drifts by 10–20 % over minutes (other tenants): calibrate next to the runs.
        $BIN plan calibrate --model "$model" --batch "$BATCH" --threads 1 --out "$out/$model-compute.json" > /dev/null
        mpi "$hosts" --log-level error plan calibrate --comm mpi --model "$model" --batch "$BATCH" --threads 1 --reps 1 --out "$out/link.json" > /dev/null 2>&1
        python3 -c "
import json
p = json.load(open('$out/$model-compute.json')); p['mpi_link'] = json.load(open('$out/link.json'))['mpi_link']
json.dump(p, open('$out/$model.json', 'w'))"
        # What a host delivers while as many hosts compute as in the run (measured for
        # 1..hosts): below one core as its cores, from one core on as its speed with the quota as
        # its cores (the plan lets communication overlap computation from 1 core on). Jitter:
        # all hosts at once.
        quota=${CLUSTER_CPUS:-$(python3 -c "print(2 / $hosts)")}
        rm -f "$out/solo.jsonl"
        cores=()
        for c in $(seq 1 "$hosts"); do
            read -r delivered jitter <<< "$(corun "$c")"
            cores[c]=$(python3 -c "print('$delivered 1' if $quota < 1 else '$quota $delivered')")
        done
        link=$(python3 -c "
import json; l = json.load(open('$out/$model.json'))['mpi_link']
print(f\"{l['beta']/1e6:.0f} / {l['allreduce_beta']/1e6:.0f} / {l.get('server_beta', 0)/1e6:.0f} MB/s, jitter {$jitter:.3f}\")")
        # Hosts that compute at once: data parallel and hybrid all; the parameter server its
        # workers (the shards wait); a pipeline one (a stage computes while the others wait for
        # its output, or for the link: bench/results/2026-12-01-plan-vs-cluster-6.md).
        runs=("dp|$hosts|$hosts|${cores[hosts]}|--strategies dp --bucket-mb 25|")
        runs+=("ps k=1|$hosts|$((hosts - 1))|${cores[hosts - 1]}|--strategies ps --servers 1|--strategy ps --servers 1")
        [ "$hosts" -ge 3 ] && runs+=("ps k=2|$hosts|$((hosts - 2))|${cores[hosts - 2]}|--strategies ps --servers 2|--strategy ps --servers 2")
        runs+=("pipeline s=$hosts m=$MICRO|$hosts|$hosts|${cores[1]}|--strategies pipeline --micro-batches $MICRO|--strategy pipeline --stages $hosts --micro-batches $MICRO")
        mp=$hosts; [ "$hosts" -eq 4 ] && mp=2
        runs+=("hybrid dp=$((hosts / mp)) mp=$mp|$hosts|$hosts|${cores[hosts]}|--strategies hybrid --mp $mp|--strategy hybrid --dp $((hosts / mp)) --mp $mp")
        for r in "${runs[@]}"; do
            IFS='|' read -r name ranks nodes cores pflags tflags <<< "$r"
            [[ -z "${RUNS:-}" || "$name" =~ ${RUNS:-} ]] || continue
            # shellcheck disable=SC2086
            p=$(predict "$nodes" $cores $pflags)
            split=$(python3 -c "import json; print(','.join(json.loads('''$p''').get('split_after', [])))")
            [ -n "$split" ] && tflags="$tflags --split-after $split"
            # shellcheck disable=SC2086
            measured=$(measure "$ranks" $tflags)
            python3 -c "
import json, math
m, p = float('$measured'), json.loads('''$p''')['step_s']
err = f'{(p - m) / m * 100:+.0f} %' if not math.isnan(m) else 'run failed'
print(f'| $hosts | $cap | $model | $link | $name | {min(${cores// /, }):.2f} | {m*1e3:.1f} | {p*1e3:.1f} | {err} |')"
        done
    done
    bash scripts/cluster.sh down > /dev/null
done
