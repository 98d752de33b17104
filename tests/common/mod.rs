//! Helpers shared by the integration tests.
#![allow(dead_code)]

use clap::Parser;
use convoy::cli::{Cli, Command};
use convoy::data::idx::read_idx;
use convoy::net::{ModelSpec, Net};
use convoy::parallel::{self, ParallelConfig};
use convoy::train::events::{Event, Recorder};
use convoy::train::{train, TrainConfig};
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

/// A command that runs the `convoy` binary from the repository root, for callers that add
/// environment, standard streams or `spawn`; the `Command`.
pub fn convoy_cmd() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_convoy"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

/// Runs the `convoy` binary with `args` from the repository root; its `Output`.
pub fn convoy(args: &[&str]) -> std::process::Output {
    convoy_cmd().args(args).output().unwrap()
}

/// Runs the `convoy` binary with `args` from the repository root; (exit code, stdout, stderr).
pub fn convoy_text(args: &[&str]) -> (Option<i32>, String, String) {
    let out = convoy(args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits for `child` to end, polling every 20 ms; once `deadline` has passed since `start`,
/// kills and reaps it and panics with the message `hang()` (a hang guard); its exit code.
pub fn wait_or_kill(
    child: &mut std::process::Child,
    start: std::time::Instant,
    deadline: std::time::Duration,
    hang: impl FnOnce() -> String,
) -> Option<i32> {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{}", hang());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The start of a quiet `convoy train` command line on `small_mnist` (log level `level`, no
/// progress bar); the six arguments.
pub fn train_small(level: &'static str) -> [&'static str; 6] {
    ["--log-level", level, "train", "--no-progress", "--data", small_mnist().to_str().unwrap()]
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

/// The full MNIST folder of the repository (data/mnist); its path.
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

/// The parameters after `convoy train ARGS` on `small_mnist`, trained in this process: one
/// worker's (`train`), or the threads transport's (`parallel::run`) where ARGS ask for more
/// workers or `--deterministic`; the flat parameter vector.
pub fn trained(args: &[&str]) -> Vec<f32> {
    let (cfg, pc) = config(args, small_mnist());
    if pc.workers == 1 && !args.contains(&"--deterministic") {
        return train(&cfg, &mut Recorder::default()).unwrap().params;
    }
    parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap().params
}

/// The reference a strategy is compared with: `trained` after `TEN_STEPS` with `args` (one
/// worker unless `args` say otherwise); its parameters.
pub fn reference(args: &[&str]) -> Vec<f32> {
    trained(&[&TEN_STEPS[..], args].concat())
}

/// `parallel::run` of `TEN_STEPS` with `args` on `small_mnist`, checked to run 10 steps; its
/// parameters and events.
pub fn ten_steps_parallel(args: &[&str]) -> (Vec<f32>, Vec<Event>) {
    let (cfg, pc) = config(&[&TEN_STEPS[..], args].concat(), small_mnist());
    let mut rec = Recorder::default();
    let s = parallel::run(&cfg, &pc, &mut rec).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert_eq!(s.steps, 10);
    (s.params, rec.events)
}

/// `text` written to `name` in this test binary's folder of model files (written aside and
/// renamed: tests that run in parallel and write the same file never read half of it); its path.
pub fn model_file(name: &str, text: &str) -> String {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{}-models-{}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let aside = dir.join(format!(".{name}.{:?}", std::thread::current().id()));
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, &path).unwrap();
    path.to_str().unwrap().to_string()
}

/// The batch-norm running statistics in `params`, by the layout of `model` (zoo name or file),
/// checked to be there; their values in layout order.
pub fn running_stats(model: &str, params: &[f32]) -> Vec<f32> {
    let net = Net::build(&ModelSpec::resolve(model).unwrap()).unwrap();
    let ranges = net.layout().buffer_ranges();
    assert!(!ranges.is_empty());
    ranges.into_iter().flat_map(|r| params[r].to_vec()).collect()
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
