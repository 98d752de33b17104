#!/usr/bin/env bash
# Wall time of the README's first command (`convoy train`: LeNet on the vendored MNIST, 3 epochs)
# against the same training in PyTorch (bench/mnist_time.py), on the same machine, in one run,
# repeated R times (default 3), alternating. The target: convoy ≤ 0.5× PyTorch's wall time.
# Usage: bash bench/mnist_time.sh [R] [THREADS]   (THREADS default: all cores, convoy's default)
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-3}
threads=${2:-$(nproc)}
python3 -c 'import torch' 2>/dev/null || pip install --quiet torch numpy
cargo build --release --quiet
printf '%-4s %-12s %-12s %-12s %-8s %s\n' rep convoy_s pytorch_s ratio conv_acc pytorch_acc
for r in $(seq 1 "$reps"); do
    t0=$(date +%s.%N)
    acc=$(target/release/convoy --log-level warn train --threads "$threads" --no-progress --metrics /tmp/convoy-mnist-time.jsonl >/dev/null 2>&1 && \
          python3 -c "import json; e=[json.loads(l) for l in open('/tmp/convoy-mnist-time.jsonl')]; print([x for x in e if x.get('event')=='eval'][-1]['acc'])")
    t1=$(date +%s.%N)
    c=$(python3 -c "print(round($t1 - $t0, 2))")
    p=$(python3 bench/mnist_time.py --threads "$threads")
    ps=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['wall_s'])" "$p")
    pa=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['test_accuracy'][-1])" "$p")
    printf '%-4s %-12s %-12s %-12s %-8s %s\n' "$r" "$c" "$ps" "$(python3 -c "print(round($c/$ps, 2))")" "$acc" "$pa"
done
