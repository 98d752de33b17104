//! Command-line interface: clap definitions (raw flags) turned into validated configs
//! (ripgrep's LowArgs → HiArgs split). No configuration comes from environment variables.
//!
//! Exit codes (see `main.rs`): 0 success, 1 failure during a run, 2 bad usage, config, model
//! spec, data file or weights file.

pub mod bench;

use crate::net::ModelSpec;
use crate::optim::{schedule::LrSchedule, OptimizerConfig};
use crate::train::TrainConfig;
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
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a model (default: LeNet on the vendored MNIST).
    Train(TrainArgs),
    /// Evaluate saved weights on the test set.
    Eval(EvalArgs),
    /// Measure training throughput (images/s) on synthetic data.
    Bench(bench::BenchArgs),
}

/// Flags of `convoy train`.
#[derive(Debug, Args, Clone)]
pub struct TrainArgs {
    /// Built-in model name (lenet, lenet-caffe) or path to a .toml model spec.
    #[arg(long, default_value = "lenet")]
    pub model: String,
    /// Directory with the MNIST-format IDX files (gzipped or raw).
    #[arg(long, default_value = "data/mnist")]
    pub data: PathBuf,
    /// Number of epochs.
    #[arg(long, default_value_t = 3)]
    pub epochs: u64,
    /// Stop after this many optimisation steps (overrides --epochs).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Global batch size.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
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
    /// Write metrics as JSON lines to this file.
    #[arg(long)]
    pub metrics: Option<PathBuf>,
    /// Save the final weights (safetensors, PyTorch names and layouts).
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Initialise from these weights (safetensors with matching names), e.g. saved by PyTorch.
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    /// Evaluate only at the end, not after every epoch.
    #[arg(long)]
    pub no_epoch_eval: bool,
    /// Do not draw a progress bar.
    #[arg(long)]
    pub no_progress: bool,
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
    /// Directory with the MNIST-format IDX files.
    #[arg(long, default_value = "data/mnist")]
    pub data: PathBuf,
    /// Evaluation batch size.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Intra-op threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
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

fn invalid(flag: &'static str, msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { flag, msg: msg.into() }
}

/// The number of cores, the default for `--threads`.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Validates a thread count.
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
        if self.batch_size == 0 {
            return Err(invalid("batch-size", "must be at least 1").into());
        }
        if self.batch_size > 1 << 20 {
            return Err(invalid("batch-size", format!("{} is too large; hint: at most 1048576", self.batch_size)).into());
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
        let model = ModelSpec::resolve(&self.model)?;
        let optimizer = OptimizerConfig::from_name(&self.optimizer, self.momentum, self.nesterov, self.weight_decay)?;
        let schedule = LrSchedule::parse(&self.schedule, self.lr)?;
        Ok(TrainConfig {
            model,
            data_dir: self.data.clone(),
            epochs: self.epochs,
            steps: self.steps,
            batch_size: self.batch_size,
            optimizer,
            schedule,
            seed: self.seed,
            threads: threads_from(self.threads)?,
            eval_each_epoch: !self.no_epoch_eval,
            save: self.save.clone(),
            init_from: self.init_from.clone(),
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
        assert_eq!(cfg.epochs, 3);
        assert_eq!(cfg.seed, 42);
        assert_eq!(cfg.schedule.base_lr, 0.01);
        assert_eq!(cfg.schedule.clone().resolve(2814).lr_at(2814), 0.0, "cosine over the whole run");
        assert_eq!(cfg.optimizer, OptimizerConfig::Sgd { momentum: 0.9, dampening: 0.0, nesterov: false, weight_decay: 0.0 });
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
        assert!(parse(&["train", "--batch-size", "many"]).is_err());
        assert!(parse(&["train", "--no-such-flag"]).is_err());
    }

    #[test]
    fn eval_and_bench_parse() {
        assert!(matches!(parse(&["eval", "--weights", "w.safetensors"]).unwrap().command, Command::Eval(_)));
        assert!(parse(&["eval"]).is_err(), "--weights is required");
        assert!(matches!(parse(&["bench", "--model", "lenet", "--batch", "64", "--threads", "2"]).unwrap().command, Command::Bench(_)));
    }
}
