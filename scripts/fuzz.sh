#!/usr/bin/env bash
# Coverage-guided fuzzing of one parser for a given time: scripts/fuzz.sh TARGET SECONDS
# TARGET: idx, cifar, image, weights, state_json, checkpoint, model_toml, prototxt, solver, web_json (src/fuzz.rs). New inputs that add coverage go
# into fuzz/corpus/TARGET (commit the small ones); a crash is written to fuzz/artifacts/TARGET/
# and the script exits non-zero: fix it, then add the input to the corpus so that
# tests/fuzz_corpus.rs replays it in every test run.
# Needs: cargo and a C++ compiler (libfuzzer-sys builds libFuzzer). Works on stable Rust: the
# sanitizer-coverage flags below are what cargo-fuzz passes, minus AddressSanitizer (nightly
# only, and not needed by safe Rust); RUSTFLAGS apply only to the --target build, not to build
# scripts.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ne 2 ]; then
    echo "usage: scripts/fuzz.sh TARGET SECONDS (targets: $(ls fuzz/fuzz_targets | grep -v cap.rs | sed 's/\.rs$//' | tr '\n' ' '))" >&2
    exit 2
fi
target=$1 seconds=$2
if [ ! -f "fuzz/fuzz_targets/$target.rs" ] || [ "$target" = cap ]; then
    echo "error: no fuzz target '$target'; hint: one of $(ls fuzz/fuzz_targets | grep -v cap.rs | sed 's/\.rs$//' | tr '\n' ' ')" >&2
    exit 2
fi
triple=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
cargo build --release --locked --manifest-path fuzz/Cargo.toml --target "$triple" --bin "$target"
mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
# Inputs up to 64 KiB; -rss_limit_mb catches memory growth, the capped allocator any single
# allocation above 256 MiB.
exec "fuzz/target/$triple/release/$target" "fuzz/corpus/$target" \
    -artifact_prefix="fuzz/artifacts/$target/" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1
