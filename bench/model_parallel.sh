#!/usr/bin/env bash
# Model and hybrid parallelism benchmarks (issue 6), on threads, all measured in this run:
#  1. bytes sent per step per worker (counted by the communicators) and images/s of data
#     parallelism, the hybrid (data-parallel convolutions, model-parallel classifier), the tensor
#     split and the pipeline, at 2 and 4 workers, on an AlexNet-style net (the zoo's
#     alexnet-cifar) with synthetic 3×32×32 input;
#  2. the pipeline bubble measured against GPipe's theory (S−1)/(M+S−1).
# Usage: bash bench/model_parallel.sh [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-20}
cargo build --release --quiet
BIN=target/release/convoy
out=$(mktemp -d)
python3 - "$out/data" <<'PY'
import os, random, struct, sys
d = sys.argv[1]; os.makedirs(d)
random.seed(1)
def write(name, n, dims):
    with open(f"{d}/{name}", "wb") as f:
        f.write(bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", x) for x in dims))
        size = 1
        for x in dims[1:]: size *= x
        f.write(os.urandom(n * size) if len(dims) > 1 else bytes(random.randrange(10) for _ in range(n)))
for split, n in (("train", 4096), ("t10k", 256)):
    write(f"{split}-images-idx4-ubyte", n, [n, 3, 32, 32])
    write(f"{split}-labels-idx1-ubyte", n, [n])
PY
run() {  # name, flags...
    local name=$1; shift
    $BIN --log-level debug train --model alexnet-cifar --data "$out/data" --no-progress --no-epoch-eval \
        --steps "$STEPS" --batch-size 64 --threads 1 --metrics "$out/$name.jsonl" "$@" > /dev/null 2> "$out/$name.log"
    echo "$name" >> "$out/runs"
}
run single
run dp2 --workers 2
run dp4 --workers 4
run hybrid-1x2 --strategy hybrid --dp 1 --mp 2
run hybrid-2x2 --strategy hybrid --dp 2 --mp 2
run tensor2 --strategy tensor --mp 2
run tensor4 --strategy tensor --mp 4
run pipe2 --strategy pipeline --stages 2 --micro-batches 8 --pipeline-schedule 1f1b
run pipe4 --strategy pipeline --stages 4 --micro-batches 8 --pipeline-schedule 1f1b
for m in 1 2 4 8; do run gpipe-s2-m$m --strategy pipeline --stages 2 --micro-batches $m --pipeline-schedule gpipe; done
python3 - "$out" <<'PY'
import json, re, statistics, sys
out = sys.argv[1]
runs = open(f"{out}/runs").read().split()
def load(name):
    ev = [json.loads(l) for l in open(f"{out}/{name}.jsonl") if l.startswith("{")]
    steps = [e for e in ev if e["event"] == "step"]
    ips = statistics.median([e["images_per_sec"] for e in steps[3:]])
    # Traffic and pipeline events are logged (debug/info), one per worker.
    log = open(f"{out}/{name}.log").read()
    traffic = [int(b) / int(s) for b, s in re.findall(r"traffic rank=\d+ bytes_sent=(\d+) steps=(\d+)", log)]
    bubbles = [float(b) for b in re.findall(r'pipeline stage stage=\d+ layers=\S+ bubble="([\d.]+)%"', log)]
    return ips, traffic, bubbles
base = load("single")[0]
print(f"| run | workers | images/s | speed-up vs 1 worker | bytes sent per step per worker (mean; max) |")
print("|---|---:|---:|---:|---:|")
for name in runs:
    if name.startswith("gpipe"):
        continue
    ips, traffic, _ = load(name)
    w = max(1, len(traffic))
    t = f"{statistics.mean(traffic) / 1e6:.2f} MB; {max(traffic) / 1e6:.2f} MB" if traffic else "0"
    print(f"| {name} | {w} | {ips:.0f} | {ips / base:.2f} | {t} |")
print()
print("| GPipe, 2 stages | micro-batches M | bubble measured (mean of stages) | theory (S−1)/(M+S−1) |")
print("|---|---:|---:|---:|")
for m in (1, 2, 4, 8):
    _, _, b = load(f"gpipe-s2-m{m}")
    print(f"| gpipe-s2-m{m} | {m} | {statistics.mean(b):.1f} % | {100 / (m + 1):.1f} % |")
PY
rm -rf "$out"
