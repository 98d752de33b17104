#!/usr/bin/env bash
# Training throughput of convoy vs PyTorch CPU, same model, batch and threads, measured in the
# same run (one SGD-momentum step on random data: 5 warm-up steps, the median of STEPS).
# Usage: bash bench/compare.sh [model|all] [batch] [steps]   (default: lenet 64 30)
#   all: every zoo model at batch 64 and 128, and AlexNet 227×227 at batch 32, threads 1 and 2,
#   as the engine-speed issue asks; prints a markdown table.
# With oneDNN's headers installed (apt-get install -y libdnnl-dev) convoy is built with
# `--features dnnl` and every backend is measured: native, auto (that build's default: oneDNN or
# native per layer) and dnnl columns side by side; BACKENDS="auto" (say) measures fewer.
# Needs PyTorch: pip install torch numpy (the script installs them when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import torch' 2>/dev/null || pip install --quiet torch numpy
if [ -f /usr/include/oneapi/dnnl/dnnl.h ]; then read -r -a backends <<<"${BACKENDS:-native auto dnnl}"; features=(--features dnnl); else backends=(native); features=(); fi
cargo build --release --quiet "${features[@]}"
bin=${CARGO_TARGET_DIR:-target}/release/convoy
steps=${3:-30}
if [ "${1:-lenet}" = all ]; then
    runs=()
    for m in lenet keras-mnist resnet20 resnet20-b alexnet-cifar vgg11-cifar; do runs+=("$m 64" "$m 128"); done
    runs+=("alexnet 32")
else
    runs=("${1:-lenet} ${2:-64}")
fi
head="| model | batch | threads | PyTorch img/s"; rule="|---|---|---|---"
for b in "${backends[@]}"; do head+=" | $b img/s | $b ratio"; rule+="|---|---"; done
printf '%s |\n%s|\n' "$head" "$rule"
ips() { python3 -c "import json,sys; print(json.loads(sys.argv[1])['images_per_s'])" "$1"; }
for run in "${runs[@]}"; do
    read -r model batch <<<"$run"
    for t in 1 2; do
        pi=$(ips "$(python3 bench/pytorch_bench.py --model "$model" --batch "$batch" --threads "$t" --steps "$steps")")
        row="| $model | $batch | $t | $pi"
        for b in "${backends[@]}"; do
            ci=$(ips "$("$bin" --log-level warn bench --model "$model" --batch "$batch" --threads "$t" --steps "$steps" --backend "$b")")
            row+=" | $ci | $(python3 -c "print(f'{$ci/$pi:.2f}')")"
        done
        printf '%s |\n' "$row"
    done
done
