#!/usr/bin/env bash
# Runs every test of convoy, in release mode (the training tests need it), on a fresh machine.
# Needs: a Rust toolchain (cargo). Installs Open MPI and libclang (Debian packages) when missing,
# for the MPI transport and its tests (tests/mpi.rs, run under mpirun), oneDNN (libdnnl-dev) for
# the dnnl backend, Debian's
# dataset-fashion-mnist, and Chromium with chromedriver for the dashboard's browser test
# (tests/browser.rs, screenshot in target/), and PyTorch with safetensors (pip) for the interop
# test (tests/interop.rs). The MNIST data is
# vendored in data/mnist (restored from ../shared/datasets/mnist if a checkout lacks it).
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

# Debian packages the tests need, installed in one go when any is missing: Open MPI and libclang
# (rsmpi's bindgen) for the MPI transport, oneDNN for the dnnl backend, Fashion-MNIST, and
# headless Chromium with its WebDriver for the dashboard's browser test.
need=()
{ command -v mpirun && command -v mpicc && ls /usr/lib/llvm-*/lib/libclang*.so*; } >/dev/null 2>&1 \
    || need+=(libopenmpi-dev openmpi-bin libclang-dev clang pkg-config)
[ -f /usr/include/oneapi/dnnl/dnnl.h ] || need+=(libdnnl-dev)
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
{ command -v chromium && command -v chromedriver; } >/dev/null 2>&1 || need+=(chromium chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}" >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null; }; then
        echo "error: could not install ${need[*]}; hint: install them by hand (Debian names)" >&2
        exit 2
    fi
fi

# tests/interop.rs loads convoy checkpoints into PyTorch (and back) with safetensors.torch.
if ! python3 -c "import torch, safetensors, numpy" >/dev/null 2>&1; then
    command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1 || {
        SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3 python3-pip >/dev/null
    }
    echo "installing torch safetensors numpy (pip)" >&2
    python3 -m pip install --quiet torch safetensors numpy 2>/dev/null \
        || python3 -m pip install --quiet --break-system-packages torch safetensors numpy \
        || { echo "error: could not install torch and safetensors; hint: pip install torch safetensors numpy" >&2; exit 2; }
fi

# tests/plan_cluster.rs builds an emulated 2-host cluster (network namespaces) when run as root;
# make sure none is left behind, whatever happens.
trap 'CLUSTER_PREFIX=cvt bash scripts/cluster.sh down >/dev/null 2>&1 || true' EXIT

# Style before the tests (rustfmt.toml; clippy's default lints as errors), on the default build
# (no MPI, no oneDNN: it must keep compiling on machines without them) and on the one the tests
# use. rustup's default profile has both tools; where they are missing and cannot be added, say so.
for tool in rustfmt clippy; do
    cargo "${tool/rustfmt/fmt}" --version >/dev/null 2>&1 || rustup component add "$tool" >/dev/null 2>&1 \
        || echo "warning: cargo ${tool/rustfmt/fmt} is missing and rustup could not add it; style not checked" >&2
done
if cargo fmt --version >/dev/null 2>&1; then
    cargo fmt --check || { echo "error: code not formatted; hint: run cargo fmt" >&2; exit 1; }
fi
if cargo clippy --version >/dev/null 2>&1; then
    cargo clippy --locked --all-targets -- -D warnings
    cargo clippy --release --locked --all-targets --features mpi,dnnl -- -D warnings
else
    cargo check --locked --all-targets
fi
# One release build for everything (library, binary, tests, benches), with the MPI transport and
# the oneDNN backend (the default backend of such a build; the native kernels run where a test
# asks for them with --backend native, and in every layer test).
cargo build --release --locked --all-targets --features mpi,dnnl
cargo test --release --locked --all-targets --features mpi,dnnl "$@"
