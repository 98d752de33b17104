//! The training loop: epochs or steps over a sharded, shuffled sampler, SGD-family updates on the
//! flat parameter buffer, evaluation after each epoch, typed events for progress/logs/metrics.
//!
//! This file runs one worker. It does not know about parallel strategies; those reuse
//! `Net::forward_backward` and the optimizer on the same flat buffers.

mod error;
pub mod events;
mod input;
pub mod nonfinite;
pub mod stop;
pub mod timeline;
mod totals;
mod worker;
pub mod writer;

pub use error::TrainError;
pub use input::{check_shape, evaluate, feed, load_data, load_data_parts, TrainTest};
pub use worker::run_worker;

use crate::checkpoint;
use crate::data::{loader::Batch, sampler::Sampler, sampler::Shard, DataOptions};
use crate::layers::Ctx;
use crate::net::{BatchStats, ModelSpec, Net};
use crate::optim::{schedule::LrSchedule, Optimizer, OptimizerConfig};
use events::{EventSink, Track};
use std::path::PathBuf;
use std::time::Instant;

/// Everything a training run needs, validated (see `cli` for how flags become this).
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// The model.
    pub model: ModelSpec,
    /// The `--data` path: a dataset directory, `synthetic:...`, or with `data.split` a path
    /// with `{rank}` (docs/data.md).
    pub data_dir: PathBuf,
    /// How samples are made from the data (image size, normalisation, augmentation, loader
    /// threads, placement).
    pub data: DataOptions,
    /// Epochs to run (ignored when `steps` is set).
    pub epochs: u64,
    /// Stop after this many optimisation steps instead of full epochs.
    pub steps: Option<u64>,
    /// Global batch size.
    pub batch_size: usize,
    /// Optimizer and its hyper-parameters.
    pub optimizer: OptimizerConfig,
    /// Learning rate and schedule.
    pub schedule: LrSchedule,
    /// Seed of initialisation, shuffling and dropout.
    pub seed: u64,
    /// Intra-op threads.
    pub threads: usize,
    /// The library that runs the convolutions (`--backend`).
    pub backend: crate::layers::Backend,
    /// Evaluate on the test set after every epoch (always at the end).
    pub eval_each_epoch: bool,
    /// Also evaluate every this many steps (`--eval-every`, Caffe's `test_interval`).
    pub eval_every: Option<u64>,
    /// Log a step line every this many steps (`--log-every`, Caffe's `display`).
    pub log_every: Option<u64>,
    /// Write weights here at the end (safetensors).
    pub save: Option<PathBuf>,
    /// Start from these weights instead of a fresh initialisation.
    pub init_from: Option<PathBuf>,
    /// Write checkpoints.
    pub checkpoint: Option<CheckpointPolicy>,
    /// Resume from this checkpoint (a `step-N` folder, or a checkpoint directory's latest).
    pub resume: Option<PathBuf>,
    /// Emit `Event::Phase` for every phase of every step (`--timeline`); off, no phase is timed.
    pub timeline: bool,
    /// What a step with non-finite gradients does (`--on-nonfinite`).
    pub on_nonfinite: nonfinite::OnNonFinite,
    /// Test hook (`--inject-nonfinite`): at these steps (1-based) the first image of the global
    /// batch is made NaN, on the worker whose shard holds it (its gradients go non-finite).
    pub inject_nonfinite: Vec<u64>,
}

/// When and where a run writes checkpoints (`--checkpoint-dir`, `--checkpoint-every`, `--keep`).
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointPolicy {
    /// Directory of the `step-N` folders and the `latest` pointer.
    pub dir: PathBuf,
    /// After every this many steps; `None`: at the end of every epoch. Always at the end of the run.
    pub every_steps: Option<u64>,
    /// Newest checkpoints kept.
    pub keep: usize,
    /// Test hook: abort the process halfway through writing the checkpoint of this step.
    pub crash_at: Option<u64>,
    /// What a checkpoint that cannot be written does to the run (`--checkpoint-errors`).
    pub on_error: OnCheckpointError,
}

/// `--checkpoint-errors`: what happens when a checkpoint cannot be written (disk full,
/// unwritable directory). Either way the previous checkpoint and `latest` stay as they were.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnCheckpointError {
    /// End the run (exit code 1) naming the path [default].
    #[default]
    Fail,
    /// Log a warning and keep training; the next checkpoint tries again.
    Warn,
}

impl CheckpointPolicy {
    /// Whether a checkpoint is due after `step` (1-based) of a run of `total_steps` with
    /// `per_epoch` steps an epoch: every `every_steps`, else at every epoch end; always at the
    /// end. (Signals add checkpoints of their own.) Parameter servers use it to know, without
    /// asking, when the workers will want their state.
    pub fn due(&self, step: u64, per_epoch: u64, total_steps: u64) -> bool {
        self.every_steps.map_or(step.is_multiple_of(per_epoch.max(1)), |n| step.is_multiple_of(n))
            || step == total_steps
    }
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    /// Optimisation steps done.
    pub steps: u64,
    /// Final test accuracy (top-1).
    pub test_acc: f64,
    /// Final mean test loss.
    pub test_loss: f64,
    /// Mean training loss of the last step.
    pub last_loss: f64,
    /// Wall time.
    pub seconds: f64,
    /// Mean training throughput, images/s.
    pub images_per_sec: f64,
    /// Final parameters (flat).
    pub params: Vec<f32>,
}

/// What one worker's step reports back to the loop.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepReport {
    /// Loss and accuracy over this worker's shard.
    pub stats: BatchStats,
    /// Seconds in communication (overlapped or not).
    pub comm_s: f64,
    /// Seconds waiting for communication after the computation was done.
    pub comm_wait_s: f64,
    /// `--on-nonfinite skip`: the gradients were not finite and nothing was updated.
    pub skipped: bool,
}

/// How one worker turns its shard of a global batch into a parameter update: single-worker SGD
/// (`LocalSgd`), all-reduce data parallelism, a parameter-server client, ... The loop in
/// `run_worker` does the rest (data, schedule, events, evaluation, saving).
pub trait Strategy {
    // What every strategy must do: one step, and its optimizer state for checkpoints.
    /// One step on this worker's shard: compute gradients and update `params` with learning
    /// rate `lr` (strategies whose servers own the schedule ignore it).
    fn step(
        &mut self,
        net: &mut Net,
        ctx: &Ctx,
        params: &mut [f32],
        batch: &Batch,
        lr: f32,
    ) -> Result<StepReport, TrainError>;
    /// Names of the optimizer's state buffers (what a checkpoint holds besides the weights).
    fn state_names(&self) -> Vec<&'static str>;
    /// The optimizer's whole state (every buffer as long as the parameters) and its update
    /// count, for a checkpoint. Every worker calls it after the same step; it may communicate.
    fn optimizer_state(&mut self) -> Result<crate::optim::OptimizerState, TrainError>;
    /// Restores the optimizer from a checkpoint (buffers named as `state_names`).
    fn restore(&mut self, state: &[(String, Vec<f32>)], steps: u64) -> Result<(), TrainError>;

    // Points of the run a strategy may act at (the defaults suit one worker).
    /// Before the first step: make this worker's parameters the run's initial ones
    /// (e.g. broadcast from rank 0, or pull from the servers).
    fn init(&mut self, _params: &mut [f32]) -> Result<(), TrainError> {
        Ok(())
    }
    /// After the last step: make `params` the run's final parameters (e.g. pull from the servers).
    fn finish(&mut self, _params: &mut [f32]) -> Result<(), TrainError> {
        Ok(())
    }
    /// Called by every worker after `step`: true when all must stop now (a signal). Strategies
    /// whose workers are processes agree on it through their communicator (`stop::agreed`); the
    /// parameter server's servers fix the step.
    fn stop_now(&mut self, step: u64, world: usize) -> Result<bool, TrainError> {
        Ok(stop::stop_after(step, world))
    }
    /// Before a checkpoint: makes `params` hold every worker's current parameters (strategies
    /// that split the model gather them; collective: every worker calls it).
    fn checkpoint_params(&mut self, _params: &mut [f32]) -> Result<(), TrainError> {
        Ok(())
    }

    // Strategies that split the model and keep their own slices.
    /// True when the strategy keeps its own (sliced) parameters after `init`: the loop then
    /// drops its full-size buffer on every worker but the lead, and passes an empty slice to
    /// `step`; `checkpoint_params` and `finish` fill the lead's.
    fn owns_params(&self) -> bool {
        false
    }
    /// This worker's parameters where the strategy keeps its own (`owns_params`): the loop looks
    /// at them after every step (`--on-nonfinite fail`).
    fn own_params(&self) -> Option<&[f32]> {
        None
    }

    // What a strategy may report: its phases for the timeline and its totals at the end.
    /// Starts recording the phases of each step for the timeline (see `timeline::PhaseLog`).
    fn record_phases(&mut self) {}
    /// Moves the phases recorded since the last call into `out`.
    fn take_phases(&mut self, _out: &mut Vec<timeline::Span>) {}
    /// Events that sum up this worker's strategy at the end of the run (pipeline stages).
    fn final_events(&self) -> Vec<events::Event> {
        Vec::new()
    }
}

/// Copies of an optimizer's state buffers and its update count.
pub fn snapshot(opt: &dyn Optimizer) -> crate::optim::OptimizerState {
    (opt.state().into_iter().map(|(n, b)| (n, b.to_vec())).collect(), opt.steps())
}

/// Restores an optimizer's state buffers (matched by name) and update count.
pub fn restore_optimizer(opt: &mut dyn Optimizer, state: &[(String, Vec<f32>)], steps: u64) -> Result<(), TrainError> {
    for (name, buf) in opt.state_mut() {
        let src = state
            .iter()
            .find(|s| s.0 == name)
            .ok_or_else(|| TrainError::Internal(format!("checkpoint has no optimizer state '{name}'")))?;
        if src.1.len() != buf.len() {
            return Err(TrainError::Internal(format!(
                "optimizer state '{name}' has {} values, expected {}",
                src.1.len(),
                buf.len()
            )));
        }
        buf.copy_from_slice(&src.1);
    }
    opt.set_steps(steps);
    Ok(())
}

/// Plain single-worker training: the gradient of the whole batch, then an optimizer step.
pub struct LocalSgd {
    opt: Box<dyn Optimizer>,
    grads: Vec<f32>,
    phases: timeline::PhaseLog,
    /// `--on-nonfinite skip`.
    skip_nonfinite: bool,
}

impl LocalSgd {
    /// For a model of parameter layout `layout`.
    pub fn new(cfg: &OptimizerConfig, layout: &crate::net::ParamLayout) -> Result<LocalSgd, TrainError> {
        let len = layout.len();
        Ok(LocalSgd {
            opt: cfg.build_scaled(len, layout.mult_ranges())?,
            grads: vec![0.0; len],
            phases: Default::default(),
            skip_nonfinite: false,
        })
    }

    /// `--on-nonfinite skip`: a step whose gradients are not finite changes nothing.
    pub fn skip_nonfinite(mut self, on: bool) -> LocalSgd {
        self.skip_nonfinite = on;
        self
    }
}

impl Strategy for LocalSgd {
    fn step(
        &mut self,
        net: &mut Net,
        ctx: &Ctx,
        params: &mut [f32],
        batch: &Batch,
        lr: f32,
    ) -> Result<StepReport, TrainError> {
        let t = Instant::now();
        self.grads.fill(0.0);
        let stats =
            net.forward_backward(ctx, params, self.grads.as_mut_slice(), &batch.x, &batch.labels, batch.global)?;
        let t_opt = Instant::now();
        let skipped = self.skip_nonfinite && nonfinite::any_nonfinite(&self.grads);
        if !skipped {
            self.opt.step(params, &self.grads, lr);
        }
        net.commit_buffers(params);
        if self.phases.on() {
            self.phases.record(Track::Compute, "forward_backward", None, t, t_opt);
            self.phases.since(Track::Compute, "optimizer", t_opt);
        }
        Ok(StepReport { stats, skipped, ..StepReport::default() })
    }

    fn record_phases(&mut self) {
        self.phases.enable();
    }

    fn take_phases(&mut self, out: &mut Vec<timeline::Span>) {
        self.phases.drain_into(out);
    }

    fn state_names(&self) -> Vec<&'static str> {
        self.opt.state().into_iter().map(|s| s.0).collect()
    }

    fn optimizer_state(&mut self) -> Result<crate::optim::OptimizerState, TrainError> {
        Ok(snapshot(self.opt.as_ref()))
    }

    fn restore(&mut self, state: &[(String, Vec<f32>)], steps: u64) -> Result<(), TrainError> {
        restore_optimizer(self.opt.as_mut(), state, steps)
    }
}

/// Runs a whole single-worker training run, emitting events to `sink`.
pub fn train(cfg: &TrainConfig, sink: &mut dyn EventSink) -> Result<TrainSummary, TrainError> {
    cfg.optimizer.validate()?;
    let net = Net::build(&cfg.model)?;
    let data = load_data(cfg)?;
    let mut strategy =
        LocalSgd::new(&cfg.optimizer, net.layout())?.skip_nonfinite(cfg.on_nonfinite == nonfinite::OnNonFinite::Skip);
    run_worker(cfg, "single", net, &data, Shard::WHOLE, &mut strategy, &mut |e| sink.on_event(&e))
}

/// Initial parameters of a run: the `init_from` weights, or a fresh seeded initialisation.
pub fn initial_params(cfg: &TrainConfig, net: &Net) -> Result<Vec<f32>, TrainError> {
    Ok(match &cfg.init_from {
        Some(p) => checkpoint::load_weights(p, net.layout()).map_err(TrainError::InitFrom)?,
        None => net.init_params(cfg.seed),
    })
}

/// Steps of the whole run.
pub fn total_steps(cfg: &TrainConfig, train_len: usize) -> u64 {
    let per_epoch = Sampler::new(train_len, cfg.batch_size, cfg.seed, false).batches_per_epoch() as u64;
    cfg.steps.unwrap_or(per_epoch * cfg.epochs)
}
