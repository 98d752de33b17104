//! `convoy bench checkpoint`: what checkpoints cost. (1) Writing and loading one checkpoint
//! folder of a model (median of `--repeats`, with the bytes on disk), for SGD momentum and Adam
//! state. (2) The step-time overhead of `--checkpoint-every N` on real MNIST training: runs
//! without and with checkpoints alternate in this process (`--pairs` times) and the ratio of
//! their median mean step times is reported. A step's time is measured between consecutive step
//! events, so a checkpoint written after step k counts in the interval k → k+1; with
//! `--steps` = 4N + 1 there are exactly four checkpoints inside 4N intervals.

use crate::checkpoint::run::{load_checkpoint, save_checkpoint, RunState, FORMAT_VERSION};
use crate::cli::{Cli, Command};
use crate::net::{ModelSpec, Net};
use crate::optim::OptimizerConfig;
use crate::train::{self, events::Event, events::EventSink};
use clap::{Args, Parser};
use std::path::PathBuf;
use std::time::Instant;

/// Flags of `convoy bench checkpoint`.
#[derive(Debug, Args, Clone)]
pub struct CheckpointBenchArgs {
    /// Built-in model name or path to a .toml model spec.
    #[arg(long, default_value = "lenet")]
    pub model: String,
    /// Writes and loads timed (the median is reported).
    #[arg(long, default_value_t = 10)]
    pub repeats: usize,
    /// Directory for the checkpoints (default: a temporary one).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Data of the overhead runs (a dataset directory or `synthetic:CxHxW:CLASSES:...`).
    #[arg(long, default_value = "data/mnist")]
    pub data: PathBuf,
    /// Checkpoint every this many steps in the overhead runs.
    #[arg(long, default_value_t = 100)]
    pub every: u64,
    /// Pairs of runs (without, with checkpoints); 0: only write and load.
    #[arg(long, default_value_t = 3)]
    pub pairs: usize,
    /// Intra-op threads of the overhead runs.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// One result line.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "bench")]
pub enum CheckpointBenchResult {
    /// Writing and loading one checkpoint.
    #[serde(rename = "checkpoint_io")]
    Io {
        /// Model name.
        model: String,
        /// Optimizer whose state is saved.
        optimizer: String,
        /// Bytes of the checkpoint folder.
        bytes: u64,
        /// Median write time (files, fsyncs, renames, `latest`), ms.
        write_ms: f64,
        /// Median load time (read, SHA-256, checks), ms.
        load_ms: f64,
        /// bytes / write time, MB/s.
        write_mb_s: f64,
    },
    /// Step time with and without periodic checkpoints.
    #[serde(rename = "checkpoint_overhead")]
    Overhead {
        /// Model name.
        model: String,
        /// Checkpoint interval.
        every: u64,
        /// Steps of each run.
        steps: u64,
        /// Median over runs of the mean step time without checkpoints, ms.
        step_ms: f64,
        /// The same with `--checkpoint-every`, ms.
        step_ms_checkpointing: f64,
        /// Their ratio (1.02 = 2 % slower).
        ratio: f64,
        /// Mean step times of every run without / with checkpoints, ms.
        runs_ms: Vec<(f64, f64)>,
    },
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).map(|es| es.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum()).unwrap_or(0)
}

/// Records when each step event arrives.
#[derive(Default)]
struct StepTimes(Vec<Instant>);

impl EventSink for StepTimes {
    fn on_event(&mut self, e: &Event) {
        if matches!(e, Event::Step { .. }) {
            self.0.push(Instant::now());
        }
    }
}

/// Runs both benchmarks.
// Long: one benchmark script: set up, time each phase, print the table.
pub fn run(args: &CheckpointBenchArgs) -> anyhow::Result<Vec<CheckpointBenchResult>> {
    if args.repeats == 0 || args.every == 0 || args.threads == 0 {
        anyhow::bail!(crate::cli::ConfigError::Invalid {
            flag: "repeats/every/threads",
            msg: "must be at least 1".into()
        });
    }
    let root = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("convoy-bench-checkpoint-{}", std::process::id())));
    let spec = ModelSpec::resolve(&args.model)?;
    let net = Net::build(&spec)?;
    let params = net.init_params(1);
    let mut out = Vec::new();
    for (opt_name, opt) in [
        ("sgd", OptimizerConfig::from_name("sgd", 0.9, false, None)?),
        ("adam", OptimizerConfig::from_name("adam", 0.9, false, None)?),
    ] {
        let mut o = opt.build(params.len())?;
        let grads: Vec<f32> = params.iter().map(|v| v * 0.01).collect();
        let mut p = params.clone();
        o.step(&mut p, &grads, 0.01);
        let names: Vec<&str> = o.state().into_iter().map(|s| s.0).collect();
        let (mut w, mut l, mut bytes) = (Vec::new(), Vec::new(), 0);
        let _ = std::fs::remove_dir_all(&root);
        for i in 0..args.repeats as u64 {
            let state = RunState {
                format_version: FORMAT_VERSION,
                model: spec.name.clone(),
                step: i + 1,
                epoch: 0,
                samples_in_epoch: 0,
                optimizer_steps: 1,
                batch_size: 64,
                seed: 1,
                optimizer: format!("{opt:?}"),
                schedule: "constant".into(),
                total_steps: 1000,
                workers: 1,
                strategy: "single".into(),
                files: Default::default(),
            };
            let t = Instant::now();
            let dir = save_checkpoint(&root, 2, net.layout(), &p, &o.state(), state, false)?;
            w.push(t.elapsed().as_secs_f64());
            bytes = dir_bytes(&dir);
            let t = Instant::now();
            let c = load_checkpoint(&dir, net.layout(), &names)?;
            l.push(t.elapsed().as_secs_f64());
            anyhow::ensure!(c.params == p, "the checkpoint did not load back");
        }
        let (write, load) = (median(w), median(l));
        out.push(CheckpointBenchResult::Io {
            model: spec.name.clone(),
            optimizer: opt_name.to_string(),
            bytes,
            write_ms: write * 1e3,
            load_ms: load * 1e3,
            write_mb_s: bytes as f64 / write / 1e6,
        });
    }
    if args.pairs == 0 {
        let _ = std::fs::remove_dir_all(&root);
        return Ok(out);
    }
    let steps = 4 * args.every + 1;
    let mut runs = Vec::new();
    for _ in 0..args.pairs {
        let mut pair = [0.0; 2];
        for (k, ckpt) in [false, true].into_iter().enumerate() {
            let _ = std::fs::remove_dir_all(&root);
            let (steps_s, every_s, threads_s) = (steps.to_string(), args.every.to_string(), args.threads.to_string());
            let mut flags = vec![
                "convoy",
                "train",
                "--model",
                &args.model,
                "--steps",
                &steps_s,
                "--threads",
                &threads_s,
                "--no-epoch-eval",
                "--optimizer",
                "adam",
                "--lr",
                "0.001",
            ];
            let root_s = root.to_string_lossy().into_owned();
            if ckpt {
                flags.extend(["--checkpoint-dir", &root_s, "--checkpoint-every", &every_s, "--keep", "2"]);
            }
            let Command::Train(t) = Cli::try_parse_from(&flags)?.command else {
                unreachable!("parsed a train command")
            };
            let mut cfg = t.to_config()?;
            cfg.data_dir = args.data.clone();
            let mut times = StepTimes::default();
            train::train(&cfg, &mut times)?;
            let n = times.0.len();
            anyhow::ensure!(n as u64 == steps, "expected {steps} step events, got {n}");
            pair[k] = (times.0[n - 1] - times.0[0]).as_secs_f64() / (n - 1) as f64 * 1e3;
        }
        runs.push((pair[0], pair[1]));
    }
    let _ = std::fs::remove_dir_all(&root);
    let (a, b) = (median(runs.iter().map(|r| r.0).collect()), median(runs.iter().map(|r| r.1).collect()));
    out.push(CheckpointBenchResult::Overhead {
        model: spec.name.clone(),
        every: args.every,
        steps,
        step_ms: a,
        step_ms_checkpointing: b,
        ratio: b / a,
        runs_ms: runs,
    });
    Ok(out)
}
