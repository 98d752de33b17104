#!/usr/bin/env bash
# Wall time of the README's first command (`convoy train`: LeNet on the vendored MNIST, 3 epochs)
# against the same training in PyTorch (bench/mnist_time.py), on the same machine, in one run,
# repeated R times (default 3), alternating. The target: convoy ≤ 0.5× PyTorch's wall time.
# Usage: bash bench/mnist_time.sh [R] [THREADS]   (THREADS default: all cores, convoy's default)
# With oneDNN's headers installed convoy is built with `--features dnnl` (its default backend
# auto then); BACKEND=native|auto|dnnl chooses.
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-3}
threads=${2:-$(nproc)}
python3 -c 'import torch' 2>/dev/null || pip install --quiet torch numpy
if [ -f /usr/include/oneapi/dnnl/dnnl.h ]; then features=(--features dnnl); backend=${BACKEND:-auto}; else features=(); backend=${BACKEND:-native}; fi
cargo build --release --quiet "${features[@]}"
bin=${CARGO_TARGET_DIR:-target}/release/convoy
echo "convoy backend: $backend"
printf '%-4s %-12s %-12s %-12s %-8s %s\n' rep convoy_s pytorch_s ratio conv_acc pytorch_acc
for r in $(seq 1 "$reps"); do
    t0=$(date +%s.%N)
    acc=$("$bin" --log-level warn train --backend "$backend" --threads "$threads" --no-progress --metrics /tmp/convoy-mnist-time.jsonl >/dev/null 2>&1 && \
          python3 -c "import json; e=[json.loads(l) for l in open('/tmp/convoy-mnist-time.jsonl')]; print([x for x in e if x.get('event')=='eval'][-1]['acc'])")
    t1=$(date +%s.%N)
    c=$(python3 -c "print(round($t1 - $t0, 2))")
    p=$(python3 bench/mnist_time.py --threads "$threads")
    ps=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['wall_s'])" "$p")
    pa=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['test_accuracy'][-1])" "$p")
    printf '%-4s %-12s %-12s %-12s %-8s %s\n' "$r" "$c" "$ps" "$(python3 -c "print(round($c/$ps, 2))")" "$acc" "$pa"
done
