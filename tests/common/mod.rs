//! Helpers shared by the integration tests.
#![allow(dead_code)]

use clap::Parser;
use convoy::cli::{Cli, Command};
use convoy::data::idx::read_idx;
use convoy::parallel::ParallelConfig;
use convoy::train::TrainConfig;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A fresh, empty folder for the test `tag` of this test binary, under Cargo's temporary
/// folder for tests (named with the binary and the process id: reruns and other binaries never
/// share one).
pub fn tmp(tag: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{}-{tag}-{}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs the `convoy` binary with `args` from the repository root.
pub fn convoy(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_convoy"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

/// Bad input: exit code 2, a message holding every one of `needles`, and no panic.
pub fn assert_exit2(out: &std::process::Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "expected '{n}' in: {err}");
    }
    assert!(!err.contains("panicked"), "panic: {err}");
}

pub fn mnist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist")
}

/// Writes the first `n` records of an IDX file as a raw IDX file.
pub fn write_subset(src: &Path, dst: &Path, n: usize) {
    let a = read_idx(src).unwrap();
    let per: usize = a.dims[1..].iter().product();
    let mut out = std::fs::File::create(dst).unwrap();
    out.write_all(&[0, 0, 0x08, a.dims.len() as u8]).unwrap();
    out.write_all(&(n as u32).to_be_bytes()).unwrap();
    for d in &a.dims[1..] {
        out.write_all(&(*d as u32).to_be_bytes()).unwrap();
    }
    out.write_all(&a.data[..n * per]).unwrap();
}

/// Ten steps at batch 64 on one thread with a fixed seed: the runs the equivalence tests compare.
pub const TEN_STEPS: [&str; 8] = ["--steps", "10", "--batch-size", "64", "--threads", "1", "--seed", "7"];

/// 600 training and 100 test images of MNIST.
pub fn small_mnist() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("mnist-600-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, n) in [
            ("train-images-idx3-ubyte", 600),
            ("train-labels-idx1-ubyte", 600),
            ("t10k-images-idx3-ubyte", 100),
            ("t10k-labels-idx1-ubyte", 100),
        ] {
            write_subset(&mnist().join(format!("{name}.gz")), &dir.join(name), n);
        }
        dir
    })
}

/// The configs `convoy train ARGS` would run, on `data`.
pub fn config(args: &[&str], data: &Path) -> (TrainConfig, ParallelConfig) {
    let cli = Cli::try_parse_from(["convoy", "train"].iter().chain(args.iter())).unwrap();
    let Command::Train(t) = cli.command else { unreachable!() };
    let mut cfg = t.to_config().unwrap();
    cfg.data_dir = data.to_path_buf();
    (cfg, t.parallel.to_config().unwrap())
}

/// ‖a − b‖ / ‖b‖.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let n: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (d / n).sqrt()
}

/// A model for 28×28 MNIST with a residual block of batch norms and a BatchNorm1d in the
/// classifier (tests/batch_norm.rs, tests/mpi.rs).
#[allow(dead_code)]
pub const RESIDUAL: &str = r#"
name = "mini-res"
input = [1, 28, 28]
classes = 10
[[layer]]
name = "conv1"
type = "conv2d"
out_channels = 8
kernel = 3
stride = 2
padding = 1
bias = false
[[layer]]
name = "bn1"
type = "batch_norm"
[[layer]]
name = "relu1"
type = "relu"
[[layer]]
name = "b_conv1"
type = "conv2d"
out_channels = 8
kernel = 3
padding = 1
bias = false
[[layer]]
name = "b_bn1"
type = "batch_norm"
[[layer]]
name = "b_relu"
type = "relu"
[[layer]]
name = "b_conv2"
type = "conv2d"
out_channels = 8
kernel = 3
padding = 1
bias = false
[[layer]]
name = "b_bn2"
type = "batch_norm"
[[layer]]
name = "b_add"
type = "add"
inputs = ["b_bn2", "relu1"]
[[layer]]
name = "b_out"
type = "relu"
[[layer]]
name = "pool"
type = "max_pool2d"
kernel = 2
[[layer]]
name = "flatten"
type = "flatten"
[[layer]]
name = "fc1"
type = "linear"
out_features = 32
bias = false
[[layer]]
name = "bn_fc"
type = "batch_norm"
[[layer]]
name = "relu_fc"
type = "relu"
[[layer]]
name = "fc2"
type = "linear"
out_features = 10
"#;
