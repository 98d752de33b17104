#!/usr/bin/env bash
# MPI transport benchmarks (issue 5), all measured in this run:
#  1. all-reduce bus bandwidth of MpiComm (direct = MPI_Allreduce in place, wrapped with the stall
#     watchdog) against the bare MPI_Allreduce call on the same buffers, and against LocalComm
#     (threads) with the same rank count;
#  2. LeNet training throughput with P processes × 1 thread against 1 process × 1 thread
#     (global batch 128, median of the per-step images/s after 10 warm-up steps).
# Usage: bash bench/mpi.sh [PROCS]   (needs a build with --features mpi)
set -euo pipefail
cd "$(dirname "$0")/.."
P=${1:-2}
BIN=target/release/convoy
MPIRUN="mpirun --allow-run-as-root --oversubscribe -np $P"
cargo build --release --features mpi --quiet
out=$(mktemp -d)

$MPIRUN $BIN bench allreduce --comm mpi > "$out/mpi.jsonl"
$BIN bench allreduce --ranks "$P" --algorithms direct,ring > "$out/local.jsonl"

flags=(--log-level warn train --no-progress --no-epoch-eval --steps 110 --batch-size 128 --threads 1)
$BIN "${flags[@]}" --metrics "$out/train1.jsonl" > /dev/null
$MPIRUN $BIN "${flags[@]}" --metrics "$out/trainP.jsonl" > /dev/null

python3 - "$out" "$P" <<'PY'
import json, sys, statistics
out, P = sys.argv[1], int(sys.argv[2])
rows = [json.loads(l) for f in ("mpi", "local") for l in open(f"{out}/{f}.jsonl") if l.startswith("{")]
t = {(r["algorithm"], r["bytes"]): r for r in rows}
print(f"all-reduce, {P} ranks: time in µs; busbw GB/s; MpiComm / bare MPI_Allreduce (in place) speed ratio")
print(f"{'bytes':>10} {'raw':>9} {'raw-inpl':>9} {'mpicomm':>9} {'ratio':>6} {'busbw':>7} {'local':>9} {'l.busbw':>7} {'mpi-ring':>9}")
for b in sorted({r["bytes"] for r in rows}):
    raw, rin, d, loc, ring = t[("mpi-raw", b)], t[("mpi-raw-inplace", b)], t[("mpi-direct", b)], t[("direct", b)], t[("mpi-ring", b)]
    print(f"{b:>10} {raw['time_us']:>9} {rin['time_us']:>9} {d['time_us']:>9} {rin['time_us'] / d['time_us']:>6.3f} {d['busbw_gbs']:>7} {loc['time_us']:>9} {loc['busbw_gbs']:>7} {ring['time_us']:>9}")
def ips(f):
    v = [json.loads(l)["images_per_sec"] for l in open(f) if l.startswith('{"event":"step"')]
    return statistics.median(v[10:])
one, many = ips(f"{out}/train1.jsonl"), ips(f"{out}/trainP.jsonl")
print(f"LeNet batch 128: 1 process {one:.0f} images/s, {P} processes {many:.0f} images/s, scaling efficiency {many / (P * one):.3f}")
PY
rm -rf "$out"
