#!/usr/bin/env bash
# Runs every test of convoy, in release mode (the training tests need it), on a fresh machine.
# Needs: a Rust toolchain (cargo). Installs nothing else today: the MNIST data is vendored in
# data/mnist (restored from ../shared/datasets/mnist if a checkout lacks it).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
    echo "error: cargo not found; hint: install Rust (https://rustup.rs)" >&2
    exit 2
fi
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
    if [ ! -f "data/mnist/$f" ]; then
        if [ -f "../shared/datasets/mnist/$f" ]; then
            mkdir -p data/mnist && cp "../shared/datasets/mnist/$f" data/mnist/
        else
            echo "error: data/mnist/$f missing; hint: copy the MNIST IDX files into data/mnist" >&2
            exit 2
        fi
    fi
done

# One release build for everything (library, binary, tests, benches).
cargo build --release --locked --all-targets
cargo test --release --locked --all-targets "$@"
