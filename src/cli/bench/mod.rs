//! `convoy bench`: benchmarks printed as JSON lines, each next to a baseline measured in the same
//! run or by a script in bench/:
//! - `convoy bench [--model M --batch B --threads T]`: training-step throughput on synthetic data,
//!   measured as `bench/pytorch_bench.py` does (5 warm-up steps, then the median of `--steps`
//!   timed steps of forward + backward + SGD-momentum update); `bench/compare.sh` runs both.
//! - `convoy bench allreduce`: all-reduce bus bandwidth per algorithm, rank count and size, with
//!   memcpy bandwidth of the same size measured in the same run.
//! - `convoy bench train`: data-parallel training throughput on MNIST and its scaling efficiency
//!   against one worker measured in the same run; `bench/compare_ddp.sh` adds PyTorch DDP.
//! - `convoy bench checkpoint`: checkpoint write/load time and bytes, and the step-time overhead
//!   of `--checkpoint-every` against runs without checkpoints in the same process.
//! - `convoy bench timeline`: the step-time overhead of the metrics file and the timeline
//!   (`--metrics`, `--timeline`) against runs without them in the same process.

use crate::layers::{Backend, Ctx, Mode};
use crate::net::{ModelSpec, Net};
use crate::optim::OptimizerConfig;
use crate::tensor::{rng::Rng, Tensor};
use clap::Args;
use std::time::Instant;

mod allreduce;
mod checkpoint_bench;
mod layers;
mod timeline_bench;
mod train_bench;

pub use allreduce::AllreduceArgs;
pub use checkpoint_bench::CheckpointBenchArgs;
pub use timeline_bench::TimelineBenchArgs;
pub use train_bench::TrainBenchArgs;

/// Flags of `convoy bench`.
#[derive(Debug, Args, Clone)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// Which benchmark (default: training-step throughput).
    #[command(subcommand)]
    pub kind: Option<BenchKind>,
    /// Flags of the step benchmark.
    #[command(flatten)]
    pub step: StepArgs,
}

/// The benchmarks besides the default one.
#[derive(Debug, clap::Subcommand, Clone)]
pub enum BenchKind {
    /// All-reduce bus bandwidth vs memcpy.
    Allreduce(AllreduceArgs),
    /// Data-parallel training throughput and scaling efficiency.
    Train(TrainBenchArgs),
    /// Checkpoint write/load time and bytes, and the step-time overhead of --checkpoint-every.
    Checkpoint(CheckpointBenchArgs),
    /// Step-time overhead of the metrics file and the timeline (--metrics, --timeline).
    Timeline(TimelineBenchArgs),
}

/// Flags of the step benchmark.
#[derive(Debug, Args, Clone)]
pub struct StepArgs {
    /// Built-in model name or path to a .toml model spec.
    #[arg(long, default_value = "lenet")]
    pub model: String,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Intra-op threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// The library that runs convolutions and linear layers: auto, native, dnnl [auto when built
    /// with oneDNN, else native].
    #[arg(long, value_parser = super::parse_backend, env = "CONVOY_BACKEND")]
    pub backend: Option<Backend>,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Time every layer's forward and backward (Caffe's `caffe time`): a table with GFLOP/s,
    /// the share of this machine's FMA peak and the kernel each layer runs.
    #[arg(long)]
    pub layers: bool,
    /// With --layers: print the table as one JSON object instead of text.
    #[arg(long, requires = "layers")]
    pub json: bool,
}

/// One benchmark result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchResult {
    /// "convoy".
    pub framework: &'static str,
    /// Model name.
    pub model: String,
    /// Batch size.
    pub batch: usize,
    /// Threads.
    pub threads: usize,
    /// The library that ran the convolutions.
    pub backend: &'static str,
    /// Parameter count.
    pub params: usize,
    /// Median step time in milliseconds.
    pub step_ms: f64,
    /// batch / median step time.
    pub images_per_s: f64,
    /// Median time of the per-step finiteness check of the parameters (`--on-nonfinite fail`,
    /// the default), right after each step's update, ms; not part of `step_ms`.
    pub nonfinite_check_ms: f64,
    /// `nonfinite_check_ms / step_ms`: what the check adds to a step.
    pub nonfinite_check_share: f64,
}

/// Runs the benchmark chosen by `args`, printing one JSON line per result.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    match &args.kind {
        None if args.step.layers => {
            check_step_args(&args.step)?;
            let table = layers::run(&args.step)?;
            if args.step.json {
                println!("{}", serde_json::to_string(&table)?);
            } else {
                print!("{}", layers::render(&table));
            }
        }
        None => println!("{}", serde_json::to_string(&run_step(&args.step)?)?),
        Some(BenchKind::Allreduce(a)) => {
            for r in allreduce::run(a)? {
                println!("{}", serde_json::to_string(&r)?);
            }
        }
        Some(BenchKind::Train(t)) => {
            for r in train_bench::run(t)? {
                println!("{}", serde_json::to_string(&r)?);
            }
        }
        Some(BenchKind::Checkpoint(c)) => {
            for r in checkpoint_bench::run(c)? {
                println!("{}", serde_json::to_string(&r)?);
            }
        }
        Some(BenchKind::Timeline(t)) => println!("{}", serde_json::to_string(&timeline_bench::run(t)?)?),
    }
    Ok(())
}

fn check_step_args(args: &StepArgs) -> anyhow::Result<()> {
    if args.batch == 0 || args.steps == 0 || args.threads == 0 {
        anyhow::bail!(super::ConfigError::Invalid { flag: "batch/steps/threads", msg: "must be at least 1".into() });
    }
    Ok(())
}

/// A model, its parameters and optimizer, and one fixed synthetic batch: what both step
/// benchmarks time, one SGD-momentum step at a time (as `bench/pytorch_bench.py` does).
pub(super) struct Rig {
    pub spec: ModelSpec,
    pub net: Net,
    pub params: Vec<f32>,
    grads: Vec<f32>,
    opt: Box<dyn crate::optim::Optimizer>,
    x: Tensor,
    labels: Vec<u32>,
    ids: Vec<u64>,
    pub backend: Backend,
}

impl Rig {
    pub fn new(args: &StepArgs) -> anyhow::Result<Rig> {
        let spec = ModelSpec::resolve(&args.model)?;
        let net = Net::build(&spec)?;
        let params = net.init_params(0);
        let opt = OptimizerConfig::Sgd { momentum: 0.9, dampening: 0.0, nesterov: false, weight_decay: 0.0 }
            .build(params.len())?;
        let mut rng = Rng::new(1);
        let mut shape = vec![args.batch];
        shape.extend_from_slice(&spec.input);
        let n: usize = shape.iter().product();
        let x = Tensor::from_vec(&shape, (0..n).map(|_| rng.normal()).collect())?;
        let labels: Vec<u32> = (0..args.batch).map(|_| rng.below(spec.classes as u64) as u32).collect();
        let ids: Vec<u64> = (0..args.batch as u64).collect();
        Ok(Rig {
            grads: vec![0.0; params.len()],
            spec,
            net,
            params,
            opt,
            x,
            labels,
            ids,
            backend: args.backend.unwrap_or(Backend::best()),
        })
    }

    /// Step `i`: forward, backward, update.
    pub fn step(&mut self, i: usize, threads: usize) -> anyhow::Result<()> {
        self.grads.fill(0.0);
        let ctx = Ctx {
            mode: Mode::Train,
            threads,
            backend: self.backend,
            seed: 0,
            step: i as u64,
            layer: 0,
            sample_ids: &self.ids,
            sync: None,
        };
        self.net.forward_backward(&ctx, &self.params, &mut self.grads, &self.x, &self.labels, self.labels.len())?;
        self.opt.step(&mut self.params, &self.grads, 0.01);
        Ok(())
    }
}

/// Runs the step benchmark.
pub fn run_step(args: &StepArgs) -> anyhow::Result<BenchResult> {
    check_step_args(args)?;
    let mut rig = Rig::new(args)?;
    let mut times = Vec::with_capacity(args.steps);
    let mut checks = Vec::with_capacity(args.steps);
    for i in 0..args.warmup + args.steps {
        let t = Instant::now();
        rig.step(i, args.threads)?;
        let step_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let bad = std::hint::black_box(crate::train::nonfinite::any_nonfinite(std::hint::black_box(&rig.params)));
        let check_s = t.elapsed().as_secs_f64();
        if bad {
            anyhow::bail!("the benchmark's parameters went non-finite at step {i}");
        }
        if i >= args.warmup {
            times.push(step_s);
            checks.push(check_s);
        }
    }
    times.sort_by(f64::total_cmp);
    checks.sort_by(f64::total_cmp);
    let med = times[times.len() / 2];
    let check = checks[checks.len() / 2];
    Ok(BenchResult {
        framework: "convoy",
        model: rig.spec.name,
        batch: args.batch,
        threads: args.threads,
        backend: rig.backend.name(),
        params: rig.params.len(),
        step_ms: (med * 1e6).round() / 1e3,
        images_per_s: (args.batch as f64 / med * 10.0).round() / 10.0,
        nonfinite_check_ms: (check * 1e6).round() / 1e3,
        nonfinite_check_share: (check / med * 1e5).round() / 1e5,
    })
}
