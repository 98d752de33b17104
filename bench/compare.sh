#!/usr/bin/env bash
# Training throughput of convoy vs PyTorch CPU, same model, batch and threads, measured in the
# same run. Usage: bash bench/compare.sh [model] [batch] [steps]   (default: lenet 64 30)
# Needs PyTorch: pip install torch numpy (the script installs them when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-lenet}
batch=${2:-64}
steps=${3:-30}
python3 -c 'import torch' 2>/dev/null || pip install --quiet torch numpy
cargo build --release --quiet
printf '%-8s %-7s %-14s %-14s %s\n' threads batch convoy_img/s pytorch_img/s ratio
for t in 1 2; do
    c=$(target/release/convoy --log-level warn bench --model "$model" --batch "$batch" --threads "$t" --steps "$steps")
    p=$(python3 bench/pytorch_bench.py --model "$model" --batch "$batch" --threads "$t" --steps "$steps")
    ci=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['images_per_s'])" "$c")
    pi=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['images_per_s'])" "$p")
    ratio=$(python3 -c "print(f'{$ci/$pi:.2f}')")
    printf '%-8s %-7s %-14s %-14s %s\n' "$t" "$batch" "$ci" "$pi" "$ratio"
done
