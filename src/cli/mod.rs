//! Command-line interface: clap definitions (raw flags) turned into validated configs
//! (ripgrep's LowArgs → HiArgs split). No configuration comes from environment variables.
//!
//! Exit codes (see `main.rs`): 0 success, 1 failure during a run, 2 bad usage, config, model
//! spec, data file or weights file.

pub mod bench;
mod data;
mod parallel;
pub mod plan;

pub use data::{model_and_options, ImageArgs, LoadArgs};
pub use parallel::{AlgorithmArg, CommArg, ParallelArgs, PsModeArg, ScheduleArg, StrategyArg};

use crate::layers::Backend;
use crate::optim::{schedule::LrSchedule, OptimizerConfig};
use crate::train::{CheckpointPolicy, OnCheckpointError, TrainConfig};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use thiserror::Error;

/// convoy: train convolutional neural networks in parallel.
#[derive(Debug, Parser)]
#[command(name = "convoy", version, about)]
pub struct Cli {
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[allow(clippy::large_enum_variant)] // parsed once per process: boxing `TrainArgs` would buy nothing
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a model (default: LeNet on the vendored MNIST).
    Train(TrainArgs),
    /// Evaluate saved weights on the test set.
    Eval(EvalArgs),
    /// Measure training throughput (images/s) on synthetic data.
    Bench(bench::BenchArgs),
    /// Predict step time and scaling of every strategy on 1 to 1024 nodes.
    Plan(plan::PlanArgs),
    /// The dashboard: a web page and JSON API to launch and watch runs.
    Serve(ServeArgs),
}

/// Flags of `convoy serve`.
#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port, printed on stdout). Binding beyond
    /// 127.0.0.1 exposes run launching to the network: the dashboard has no authentication.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Directory of the runs (one folder per run, with its run.json).
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Directory whose sub-directories holding MNIST-format IDX files are the datasets offered.
    #[arg(long, default_value = "data")]
    pub data_root: PathBuf,
    /// Runs training at the same time; the others wait in a queue.
    #[arg(long, default_value_t = 1)]
    pub max_runs: usize,
}

/// Flags of `convoy train`.
#[derive(Debug, Args, Clone)]
pub struct TrainArgs {
    /// Built-in model name (lenet, lenet-caffe, ...) or path to a .toml model spec or Caffe .prototxt.
    #[arg(long, default_value = "lenet")]
    pub model: String,
    /// A Caffe solver.prototxt: its net, base_lr, momentum, weight_decay, lr_policy, max_iter,
    /// type, random_seed, snapshot, iter_size and test_interval (--eval-every) replace the
    /// corresponding flags.
    #[arg(long)]
    pub solver: Option<PathBuf>,
    /// The data: a directory of MNIST-format IDX files (gzipped or raw), CIFAR-10/100 binary
    /// files or an image folder (train/, test/ or val/, one folder per class), or
    /// synthetic:CxHxW:CLASSES[:TRAIN[:TEST]] (docs/data.md).
    #[arg(long, default_value = "data/mnist")]
    pub data: PathBuf,
    /// How samples are made.
    #[command(flatten)]
    pub image: ImageArgs,
    /// How the training input is loaded.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Number of epochs.
    #[arg(long, default_value_t = 3)]
    pub epochs: u64,
    /// Stop after this many optimisation steps (overrides --epochs).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Global batch size [default: 64; with a Caffe prototxt, its TRAIN Data or MemoryData
    /// layer's batch_size].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Base learning rate.
    #[arg(long, default_value_t = 0.01, allow_negative_numbers = true)]
    pub lr: f32,
    /// Optimizer: sgd, adam or adamw.
    #[arg(long, default_value = "sgd")]
    pub optimizer: String,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true)]
    pub momentum: f32,
    /// Use Nesterov momentum (SGD).
    #[arg(long)]
    pub nesterov: bool,
    /// Weight decay (L2 for sgd/adam, decoupled for adamw; adamw defaults to 0.01).
    #[arg(long, allow_negative_numbers = true)]
    pub weight_decay: Option<f32>,
    /// LR schedule: cosine (annealed to 0 over the run, the default), constant, step:1000:0.1,
    /// multistep:500,800:0.1, cosine:3000[:ETA_MIN], inv:0.0001:0.75, poly:10000:1, exp:0.99,
    /// optionally prefixed by warmup:N,
    #[arg(long, default_value = "cosine")]
    pub schedule: String,
    /// Seed of initialisation, shuffling and dropout.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Intra-op threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// The library that runs convolutions and linear layers: native (convoy's kernels), dnnl
    /// (oneDNN, in a build with --features dnnl) or auto (per layer shape, the one measured
    /// faster) [$CONVOY_BACKEND, else auto when built with oneDNN, else native].
    #[arg(long, value_parser = parse_backend, env = "CONVOY_BACKEND")]
    pub backend: Option<Backend>,
    /// Write metrics as JSON lines to this file.
    #[arg(long)]
    pub metrics: Option<PathBuf>,
    /// Write a Chrome-trace timeline of every worker's phases (chrome://tracing, Perfetto).
    #[arg(long)]
    pub timeline: Option<PathBuf>,
    /// Record the run in a new folder of DIR (run.json, and metrics, weights and timeline unless
    /// given), where `convoy serve --runs-dir DIR` lists it.
    #[arg(long)]
    pub runs_dir: Option<PathBuf>,
    /// Save the final weights (safetensors, PyTorch names and layouts).
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Initialise from these weights (safetensors with matching names), e.g. saved by PyTorch.
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    /// Write checkpoints (step-N folders and a `latest` pointer) into this directory.
    #[arg(long)]
    pub checkpoint_dir: Option<PathBuf>,
    /// Checkpoint every N steps, or `epoch` [epoch]; always at the end of the run too.
    #[arg(long)]
    pub checkpoint_every: Option<String>,
    /// Checkpoints kept (the newest).
    #[arg(long, default_value_t = 3)]
    pub keep: usize,
    /// Resume from a checkpoint folder (step-N) or a checkpoint directory (its latest); pass the
    /// flags of the run that wrote it.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// When a checkpoint cannot be written (disk full, unwritable directory): fail [default]
    /// ends the run (exit 1), warn logs a warning, keeps training and tries again at the next
    /// checkpoint. The previous checkpoint stays intact either way.
    #[arg(long, value_enum)]
    pub checkpoint_errors: Option<CheckpointErrorsArg>,
    /// A step whose gradients hold a NaN or an infinity: fail [default] ends the run naming the
    /// step and tensor (the last checkpoint is the last good one); skip leaves parameters and
    /// optimizer state as they were (PyTorch GradScaler's rule), reports the step as skipped in
    /// the metrics and goes on.
    #[arg(long, value_enum)]
    pub on_nonfinite: Option<OnNonFiniteArg>,
    /// Test hook: abort the process halfway through writing the checkpoint of this step.
    #[arg(long, hide = true)]
    pub inject_checkpoint_crash: Option<u64>,
    /// Test hook: make the first image of the global batch NaN at these steps (comma-separated).
    #[arg(long, hide = true, value_delimiter = ',')]
    pub inject_nonfinite: Vec<u64>,
    /// Evaluate only at the end, not after every epoch.
    #[arg(long)]
    pub no_epoch_eval: bool,
    /// Also evaluate on the test set every N steps (as Caffe's test_interval).
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Log the step's loss, accuracy, learning rate and images/s every N steps (info level;
    /// Caffe's `display`).
    #[arg(long)]
    pub log_every: Option<u64>,
    /// Do not draw a progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Parallel training.
    #[command(flatten)]
    pub parallel: ParallelArgs,
}

/// `--checkpoint-errors`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckpointErrorsArg {
    /// End the run.
    Fail,
    /// Warn and keep training.
    Warn,
}

/// `--on-nonfinite`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnNonFiniteArg {
    /// End the run.
    Fail,
    /// Skip the step's update on every worker.
    Skip,
}

/// Flags of `convoy eval`.
#[derive(Debug, Args, Clone)]
pub struct EvalArgs {
    /// Weights to evaluate (safetensors).
    #[arg(long)]
    pub weights: PathBuf,
    /// Model the weights belong to.
    #[arg(long, default_value = "lenet")]
    pub model: String,
    /// The data (as for `convoy train`); its test split is evaluated.
    #[arg(long, default_value = "data/mnist")]
    pub data: PathBuf,
    /// How samples are made (as in training).
    #[command(flatten)]
    pub image: ImageArgs,
    /// Evaluation batch size.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Intra-op threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// The library that runs convolutions and linear layers: native (convoy's kernels), dnnl
    /// (oneDNN, in a build with --features dnnl) or auto (per layer shape, the one measured
    /// faster) [$CONVOY_BACKEND, else auto when built with oneDNN, else native].
    #[arg(long, value_parser = parse_backend, env = "CONVOY_BACKEND")]
    pub backend: Option<Backend>,
}

/// A flag value that cannot work.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The flag's value is out of range.
    #[error("invalid value for --{flag}: {msg}")]
    Invalid {
        /// Flag name.
        flag: &'static str,
        /// What is wrong, with a hint.
        msg: String,
    },
}

/// The largest global batch `--batch-size` (or a prototxt's batch_size) may ask for.
const MAX_BATCH: usize = 1 << 20;

fn invalid(flag: &'static str, msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { flag, msg: msg.into() }
}

/// The number of cores, the default for `--threads`.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// `--backend`'s parser: a clear error (exit 2) for an unknown name, or for dnnl in a build
/// without it, saying how to build.
pub fn parse_backend(s: &str) -> Result<Backend, String> {
    Backend::parse(s)
}

/// `--threads` (or every core when absent), checked.
pub fn threads_from(flag: Option<usize>) -> Result<usize, ConfigError> {
    match flag {
        Some(0) => Err(invalid("threads", "must be at least 1")),
        Some(t) if t > 1024 => Err(invalid("threads", format!("{t} is more than 1024; hint: use the number of cores"))),
        Some(t) => Ok(t),
        None => Ok(default_threads()),
    }
}

impl TrainArgs {
    /// Validates the flags into a run configuration.
    pub fn to_config(&self) -> anyhow::Result<TrainConfig> {
        let Some(path) = &self.solver else { return self.to_config_flags() };
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid("solver", format!("cannot read {}: {e}", path.display())))?;
        let origin = path.display().to_string();
        let s = crate::net::caffe::solver_from_prototxt(&text, &origin, &mut |n| tracing::info!("{n}"))
            .map_err(|e| invalid("solver", e.to_string()))?;
        let mut a = self.clone();
        a.solver = None;
        if let Some(net) = s.net {
            a.model = net;
        }
        a.lr = s.lr.unwrap_or(a.lr);
        a.momentum = s.momentum.unwrap_or(a.momentum);
        a.weight_decay = s.weight_decay.or(a.weight_decay);
        a.schedule = s.schedule.unwrap_or_else(|| "constant".into());
        a.steps = s.steps.or(a.steps);
        a.optimizer = s.optimizer.unwrap_or(a.optimizer);
        a.nesterov |= s.nesterov;
        a.seed = s.seed.unwrap_or(a.seed);
        if let Some(every) = s.snapshot {
            a.checkpoint_every = Some(every.to_string());
            a.checkpoint_dir =
                a.checkpoint_dir.or(s.snapshot_prefix.map(|p| PathBuf::from(format!("{p}_checkpoints"))));
        }
        a.eval_every = s.test_interval.or(a.eval_every);
        a.log_every = s.display.or(a.log_every);
        if let Some(k) = s.iter_size {
            a.parallel.accumulate = Some(k);
        }
        a.to_config_flags()
    }

    /// `to_config` from the flags alone.
    // Long: flag by flag into TrainConfig, every message naming its flag, in the order of --help.
    fn to_config_flags(&self) -> anyhow::Result<TrainConfig> {
        if self.batch_size == Some(0) {
            return Err(invalid("batch-size", "must be at least 1").into());
        }
        if let Some(b) = self.batch_size.filter(|&b| b > MAX_BATCH) {
            return Err(invalid("batch-size", format!("{b} is too large; hint: at most {MAX_BATCH}")).into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(invalid("lr", format!("{} must be a positive number, e.g. 0.01", self.lr)).into());
        }
        if self.epochs == 0 && self.steps.is_none() {
            return Err(invalid("epochs", "must be at least 1 (or give --steps)").into());
        }
        if self.steps == Some(0) {
            return Err(invalid("steps", "must be at least 1").into());
        }
        // A model whose input shape comes from the data (a prototxt without one) looks at the
        // test set; with --data-split at this process's first part.
        let probe = if self.load.data_split {
            crate::data::split::part_path(&self.data, crate::comm::launch::rank().unwrap_or(0) * self.parallel.workers)
        } else {
            self.data.clone()
        };
        let (model, data) = data::model_and_options(
            &self.model,
            &probe,
            &self.image,
            Some((&self.load, &self.data, self.parallel.deterministic)),
        )?;
        let batch_size = data::batch_size(&self.model, self.batch_size)?;
        let optimizer = OptimizerConfig::from_name(&self.optimizer, self.momentum, self.nesterov, self.weight_decay)?;
        let schedule = LrSchedule::parse(&self.schedule, self.lr)?;
        if self.eval_every == Some(0) {
            return Err(invalid("eval-every", "must be at least 1 (steps)").into());
        }
        if self.log_every == Some(0) {
            return Err(invalid("log-every", "must be at least 1 (steps)").into());
        }
        if self.keep == 0 {
            return Err(invalid("keep", "must be at least 1").into());
        }
        let every_steps = match self.checkpoint_every.as_deref() {
            None | Some("epoch") => None,
            Some(n) => match n.parse::<u64>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    return Err(invalid(
                        "checkpoint-every",
                        format!("'{n}' is not a positive number of steps or 'epoch'"),
                    )
                    .into())
                }
            },
        };
        if self.init_from.is_some() && self.resume.is_some() {
            return Err(invalid(
                "init-from",
                "cannot be combined with --resume (the checkpoint holds the weights); hint: drop one of them",
            )
            .into());
        }
        if self.checkpoint_every.is_some() && self.checkpoint_dir.is_none() {
            return Err(invalid("checkpoint-every", "needs --checkpoint-dir").into());
        }
        if self.checkpoint_errors.is_some() && self.checkpoint_dir.is_none() {
            return Err(invalid("checkpoint-errors", "needs --checkpoint-dir").into());
        }
        let on_error = match self.checkpoint_errors {
            Some(CheckpointErrorsArg::Warn) => OnCheckpointError::Warn,
            Some(CheckpointErrorsArg::Fail) | None => OnCheckpointError::Fail,
        };
        Ok(TrainConfig {
            model,
            data_dir: self.data.clone(),
            data,
            epochs: self.epochs,
            steps: self.steps,
            batch_size,
            optimizer,
            schedule,
            seed: self.seed,
            threads: match self.threads {
                // One worker takes every core; several share them.
                None => (default_threads() / (self.parallel.threads_per_process() * crate::comm::launch::local_size()))
                    .max(1),
                t => threads_from(t)?,
            },
            backend: self.backend.unwrap_or(Backend::best()),
            eval_each_epoch: !self.no_epoch_eval,
            eval_every: self.eval_every,
            log_every: self.log_every,
            save: self.save.clone(),
            init_from: self.init_from.clone(),
            checkpoint: self.checkpoint_dir.clone().map(|dir| CheckpointPolicy {
                dir,
                every_steps,
                keep: self.keep,
                crash_at: self.inject_checkpoint_crash,
                on_error,
            }),
            resume: self.resume.clone(),
            timeline: self.timeline.is_some(),
            on_nonfinite: match self.on_nonfinite {
                Some(OnNonFiniteArg::Skip) => crate::train::nonfinite::OnNonFinite::Skip,
                Some(OnNonFiniteArg::Fail) | None => crate::train::nonfinite::OnNonFinite::Fail,
            },
            inject_nonfinite: self.inject_nonfinite.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("convoy").chain(args.iter().copied()))
    }

    fn train_args(args: &[&str]) -> TrainArgs {
        match parse(&[&["train"], args].concat()).unwrap().command {
            Command::Train(t) => t,
            c => panic!("not train: {c:?}"),
        }
    }

    #[test]
    fn train_defaults_are_the_documented_recipe() {
        let cfg = train_args(&[]).to_config().unwrap();
        assert_eq!(cfg.model.name, "lenet");
        assert_eq!(cfg.batch_size, 64);
        // Whether --batch-size was given matters (a prototxt's batch_size applies without it).
        assert_eq!((train_args(&[]).batch_size, train_args(&["--batch-size", "32"]).batch_size), (None, Some(32)));
        assert_eq!(cfg.epochs, 3);
        assert_eq!(cfg.seed, 42);
        assert_eq!(cfg.schedule.base_lr, 0.01);
        assert_eq!(cfg.schedule.clone().resolve(2814).lr_at(2814), 0.0, "cosine over the whole run");
        assert_eq!(
            cfg.optimizer,
            OptimizerConfig::Sgd { momentum: 0.9, dampening: 0.0, nesterov: false, weight_decay: 0.0 }
        );
        assert_eq!(cfg.data_dir, PathBuf::from("data/mnist"));
    }

    #[test]
    fn bad_values_are_rejected_with_the_flag_name() {
        let e = train_args(&["--batch-size", "0"]).to_config().unwrap_err().to_string();
        assert!(e.contains("--batch-size"), "{e}");
        let e = train_args(&["--lr", "-0.1"]).to_config().unwrap_err().to_string();
        assert!(e.contains("--lr"), "{e}");
        let e = train_args(&["--model", "resnet9000"]).to_config().unwrap_err().to_string();
        assert!(e.contains("unknown model 'resnet9000'"), "{e}");
        let e = train_args(&["--threads", "0"]).to_config().unwrap_err().to_string();
        assert!(e.contains("--threads"), "{e}");
        let e = train_args(&["--optimizer", "rmsprop"]).to_config().unwrap_err().to_string();
        assert!(e.contains("rmsprop"), "{e}");
        let e = train_args(&["--checkpoint-errors", "warn"]).to_config().unwrap_err().to_string();
        assert!(e.contains("--checkpoint-errors") && e.contains("--checkpoint-dir"), "{e}");
        let c = train_args(&["--checkpoint-dir", "ck", "--checkpoint-errors", "warn"]).to_config().unwrap();
        assert_eq!(c.checkpoint.unwrap().on_error, OnCheckpointError::Warn);
        assert_eq!(
            train_args(&["--checkpoint-dir", "ck"]).to_config().unwrap().checkpoint.unwrap().on_error,
            OnCheckpointError::Fail
        );
        assert!(parse(&["train", "--checkpoint-dir", "ck", "--checkpoint-errors", "maybe"]).is_err());
        let e = train_args(&["--init-from", "w.safetensors", "--resume", "ckpt"]).to_config().unwrap_err().to_string();
        assert!(e.contains("--init-from") && e.contains("--resume"), "{e}");
        assert!(parse(&["train", "--batch-size", "many"]).is_err());
        assert!(parse(&["train", "--no-such-flag"]).is_err());
    }

    #[test]
    fn serve_timeline_and_runs_dir_parse() {
        let Command::Serve(s) = parse(&["serve"]).unwrap().command else { panic!("not serve") };
        assert_eq!(
            (s.addr.as_str(), s.runs_dir.as_path(), s.max_runs),
            ("127.0.0.1:8080", std::path::Path::new("runs"), 1)
        );
        let Command::Serve(s) =
            parse(&["serve", "--addr", "127.0.0.1:0", "--max-runs", "3", "--data-root", "d"]).unwrap().command
        else {
            panic!()
        };
        assert_eq!((s.max_runs, s.data_root), (3, PathBuf::from("d")));
        assert!(parse(&["serve", "--max-runs", "many"]).is_err());
        let t = train_args(&["--timeline", "t.json", "--runs-dir", "runs"]);
        assert!(t.to_config().unwrap().timeline);
        assert_eq!(t.runs_dir, Some(PathBuf::from("runs")));
        assert!(!train_args(&[]).to_config().unwrap().timeline, "no timeline unless asked");
    }

    #[test]
    fn stall_and_mpi_wait_flags_parse() {
        let pc = train_args(&[]).parallel.to_config().unwrap();
        assert_eq!((pc.stall_timeout.as_secs(), pc.stall_abort, pc.comm_limit().as_secs()), (60, false, 300));
        let pc = train_args(&["--stall-timeout", "2", "--stall-abort"]).parallel.to_config().unwrap();
        assert_eq!((pc.stall_timeout.as_secs(), pc.stall_abort, pc.comm_limit().as_secs()), (2, true, 4));
        assert!(train_args(&["--stall-timeout", "0"]).parallel.to_config().is_err());
        assert!(!pc.mpi_spin_wait);
        assert!(train_args(&["--mpi-spin-wait"]).parallel.to_config().unwrap().mpi_spin_wait);
        let hybrid = ["--strategy", "hybrid", "--mp", "2", "--mpi-spin-wait"];
        assert!(train_args(&hybrid).parallel.to_config().unwrap().mpi_spin_wait);
    }

    #[test]
    fn eval_and_bench_parse() {
        assert!(matches!(parse(&["eval", "--weights", "w.safetensors"]).unwrap().command, Command::Eval(_)));
        assert!(parse(&["eval"]).is_err(), "--weights is required");
        assert!(matches!(
            parse(&["bench", "--model", "lenet", "--batch", "64", "--threads", "2"]).unwrap().command,
            Command::Bench(_)
        ));
    }
}
