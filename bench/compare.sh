#!/usr/bin/env bash
# Training throughput of convoy vs PyTorch CPU, same model, batch and threads, measured in the
# same run (one SGD-momentum step on random data: 5 warm-up steps, the median of STEPS).
# Usage: bash bench/compare.sh [model|all] [batch] [steps]   (default: lenet 64 30)
#   all: every zoo model at batch 64 and 128, and AlexNet 227×227 at batch 32, threads 1 and 2,
#   as the engine-speed issue asks; prints a markdown table.
# Needs PyTorch: pip install torch numpy (the script installs them when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import torch' 2>/dev/null || pip install --quiet torch numpy
cargo build --release --quiet
steps=${3:-30}
if [ "${1:-lenet}" = all ]; then
    runs=()
    for m in lenet keras-mnist resnet20 resnet20-b alexnet-cifar vgg11-cifar; do runs+=("$m 64" "$m 128"); done
    runs+=("alexnet 32")
else
    runs=("${1:-lenet} ${2:-64}")
fi
printf '| model | batch | threads | convoy img/s | PyTorch img/s | ratio |\n|---|---|---|---|---|---|\n'
for run in "${runs[@]}"; do
    read -r model batch <<<"$run"
    for t in 1 2; do
        c=$(target/release/convoy --log-level warn bench --model "$model" --batch "$batch" --threads "$t" --steps "$steps")
        p=$(python3 bench/pytorch_bench.py --model "$model" --batch "$batch" --threads "$t" --steps "$steps")
        ci=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['images_per_s'])" "$c")
        pi=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['images_per_s'])" "$p")
        printf '| %s | %s | %s | %s | %s | %s |\n' "$model" "$batch" "$t" "$ci" "$pi" "$(python3 -c "print(f'{$ci/$pi:.2f}')")"
    done
done
