#!/usr/bin/env bash
# Runs every test of convoy, in release mode (the training tests need it), on a fresh machine.
# Needs: a Rust toolchain (cargo). Installs Open MPI and libclang (Debian packages) when missing,
# for the MPI transport and its tests (tests/mpi.rs, run under mpirun), and Debian's
# dataset-fashion-mnist. The MNIST data is
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

# Open MPI, and libclang for rsmpi's bindgen.
MPI_PACKAGES="libopenmpi-dev openmpi-bin libclang-dev clang pkg-config"
if ! command -v mpirun >/dev/null || ! command -v mpicc >/dev/null || ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1; then
    echo "installing $MPI_PACKAGES" >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $MPI_PACKAGES >/dev/null; }; then
        echo "error: could not install $MPI_PACKAGES; hint: install them by hand (Debian/Ubuntu names)" >&2
        exit 2
    fi
fi

# tests/plan_cluster.rs builds an emulated 2-host cluster (network namespaces) when run as root;
# make sure none is left behind, whatever happens.
trap 'CLUSTER_PREFIX=cvt bash scripts/cluster.sh down >/dev/null 2>&1 || true' EXIT

# Fashion-MNIST (tests/train_mnist.rs) from Debian's package.
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null \
        || { echo "error: could not install dataset-fashion-mnist; hint: apt-get install -y dataset-fashion-mnist" >&2; exit 2; }
fi

# The default build (no MPI) must keep compiling on machines without MPI.
cargo check --locked --all-targets
# One release build for everything (library, binary, tests, benches), with the MPI transport.
cargo build --release --locked --all-targets --features mpi
cargo test --release --locked --all-targets --features mpi "$@"
