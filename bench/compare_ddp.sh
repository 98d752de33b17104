#!/usr/bin/env bash
# Data-parallel training throughput of convoy (threads, all-reduce) vs PyTorch DDP (gloo,
# processes) on the same machine, model, global batch and threads per worker, measured in the same
# run; scaling efficiency = 2-worker images/s / (2 × 1-worker images/s) of the same framework.
# Usage: bash bench/compare_ddp.sh [model] [global batch]   (default: lenet 128)
# Needs PyTorch: pip install torch numpy (the script installs them when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-lenet}
batch=${2:-128}
python3 -c 'import torch' 2>/dev/null || pip install --quiet torch numpy
cargo build --release --quiet
json() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
# convoy: one worker, then 2 workers with overlap on and off (one JSON line each).
mapfile -t c < <(target/release/convoy --log-level warn bench train --model "$model" --batch "$batch" --workers 2 --strategy allreduce --steps 60)
c1=$(json "${c[0]}" images_per_s); c2=$(json "${c[1]}" images_per_s); c2n=$(json "${c[2]}" images_per_s)
p1=$(json "$(python3 bench/pytorch_ddp_bench.py --model "$model" --batch "$batch" --workers 1 --threads 1 --steps 60)" images_per_s)
p2=$(json "$(python3 bench/pytorch_ddp_bench.py --model "$model" --batch "$batch" --workers 2 --threads 1 --steps 60)" images_per_s)
p2n=$(json "$(python3 bench/pytorch_ddp_bench.py --model "$model" --batch "$batch" --workers 2 --threads 1 --steps 60 --no-overlap)" images_per_s)
printf '%-22s %-14s %-14s %s\n' run convoy_img/s pytorch_img/s ratio
row() { printf '%-22s %-14s %-14s %s\n' "$1" "$2" "$3" "$(python3 -c "print(f'{$2/$3:.2f}')")"; }
row "1 worker" "$c1" "$p1"
row "2 workers overlap" "$c2" "$p2"
row "2 workers no overlap" "$c2n" "$p2n"
python3 -c "print(f'scaling efficiency (overlap): convoy {$c2/(2*$c1):.3f}, pytorch ddp {$p2/(2*$p1):.3f}')"
