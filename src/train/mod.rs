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
pub mod writer;

pub use error::TrainError;
pub use input::{check_shape, evaluate, feed, load_data, load_data_parts, TrainTest};

use crate::checkpoint;
use crate::data::{loader::Batch, loader::Loader, sampler::Sampler, sampler::Shard, DataOptions, Dataset};
use crate::layers::{Ctx, Mode};
use crate::net::{BatchStats, ModelSpec, Net};
use crate::optim::{schedule::LrSchedule, Optimizer, OptimizerConfig};
use events::{Event, EventSink, Track};
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
    /// Before the first step: make this worker's parameters the run's initial ones
    /// (e.g. broadcast from rank 0, or pull from the servers).
    fn init(&mut self, _params: &mut [f32]) -> Result<(), TrainError> {
        Ok(())
    }
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
    /// Names of the optimizer's state buffers (what a checkpoint holds besides the weights).
    fn state_names(&self) -> Vec<&'static str>;
    /// The optimizer's whole state (every buffer as long as the parameters) and its update
    /// count, for a checkpoint. Every worker calls it after the same step; it may communicate.
    fn optimizer_state(&mut self) -> Result<crate::optim::OptimizerState, TrainError>;
    /// Restores the optimizer from a checkpoint (buffers named as `state_names`).
    fn restore(&mut self, state: &[(String, Vec<f32>)], steps: u64) -> Result<(), TrainError>;
    /// Before a checkpoint: makes `params` hold every worker's current parameters (strategies
    /// that split the model gather them; collective: every worker calls it).
    fn checkpoint_params(&mut self, _params: &mut [f32]) -> Result<(), TrainError> {
        Ok(())
    }
    /// This worker's parameters where the strategy keeps its own (`owns_params`): the loop looks
    /// at them after every step (`--on-nonfinite fail`).
    fn own_params(&self) -> Option<&[f32]> {
        None
    }
    /// True when the strategy keeps its own (sliced) parameters after `init`: the loop then
    /// drops its full-size buffer on every worker but the lead, and passes an empty slice to
    /// `step`; `checkpoint_params` and `finish` fill the lead's.
    fn owns_params(&self) -> bool {
        false
    }
    /// Events that sum up this worker's strategy at the end of the run (pipeline stages).
    fn final_events(&self) -> Vec<events::Event> {
        Vec::new()
    }
    /// Starts recording the phases of each step for the timeline (see `timeline::PhaseLog`).
    fn record_phases(&mut self) {}
    /// Moves the phases recorded since the last call into `out`.
    fn take_phases(&mut self, _out: &mut Vec<timeline::Span>) {}
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

/// The training loop of one worker: loads `shard` of every global batch, lets `strategy` compute
/// and apply the update, and reports through `emit`. Rank 0 (`shard.rank == 0`) leads: it
/// announces the run, reports steps, evaluates and saves; every rank reports its own totals
/// (`Event::Worker`) after each epoch and at the end. With several workers an error names the
/// worker and the step.
#[allow(clippy::too_many_arguments)]
pub fn run_worker(
    cfg: &TrainConfig,
    strategy_name: &str,
    mut net: Net,
    (train_set, test_set): &(Arc<dyn Dataset>, Arc<dyn Dataset>),
    shard: Shard,
    strategy: &mut dyn Strategy,
    emit: &mut dyn FnMut(Event),
) -> Result<TrainSummary, TrainError> {
    let lead = shard.rank == 0;
    let mut params = initial_params(cfg, &net)?;
    let feed = feed(cfg, train_set, shard);
    let sampler = feed.sampler.clone();
    let per_epoch = sampler.batches_per_epoch() as u64;
    let total_steps = total_steps(cfg, train_set.len());
    let schedule = cfg.schedule.clone().resolve(total_steps);
    if lead {
        emit(Event::RunStart {
            model: cfg.model.name.clone(),
            params: params.len(),
            workers: shard.world,
            threads: cfg.threads,
            batch_size: cfg.batch_size,
            train_samples: train_set.len(),
            test_samples: test_set.len(),
            total_steps,
        });
    }
    let t0 = Instant::now();
    let mut totals = totals::WorkerTotals::default();
    let (mut step, mut epoch, mut start_batch) = (0u64, 0u64, 0usize);
    let failed_at = |step: u64| move |e: TrainError| if shard.world > 1 { e.at_worker(shard.rank, step) } else { e };
    if let Some(path) = &cfg.resume {
        let c = checkpoint::run::load_checkpoint(path, net.layout(), &strategy.state_names())?;
        check_resumable(cfg, &c.run, &schedule, (total_steps, per_epoch), &c.dir)?;
        params = c.params;
        strategy.restore(&c.state, c.run.optimizer_steps)?;
        (step, epoch) = (c.run.step, c.run.epoch);
        start_batch = (c.run.samples_in_epoch / cfg.batch_size as u64) as usize;
        if lead {
            tracing::info!(checkpoint = %c.dir.display(), step, epoch, "resuming");
        }
    }
    if let (true, Some(policy)) = (lead, &cfg.checkpoint) {
        // Found out now rather than at the first checkpoint, maybe hours later.
        std::fs::create_dir_all(&policy.dir).map_err(|e| {
            TrainError::Config(format!(
                "cannot create --checkpoint-dir {}: {e}; hint: pass a directory you can write",
                policy.dir.display()
            ))
        })?;
    }
    strategy.init(&mut params).map_err(failed_at(step))?;
    if !lead && strategy.owns_params() {
        // The strategy keeps only its slices; a full copy is needed by the lead worker alone
        // (evaluation, saving, checkpoints).
        params = Vec::new();
    }
    // Phases of the current step, for the timeline (`None`: no timeline, nothing is timed).
    let mut phases: Option<Vec<timeline::Span>> = cfg.timeline.then(Vec::new);
    if cfg.timeline {
        strategy.record_phases();
    }
    let mut last_loss = f64::NAN;
    let mut skipped = 0u64;
    // Checkpoints are written in the background (the lead's; see `writer`).
    let mut writer = writer::Writer::new(cfg.checkpoint.as_ref().map_or(OnCheckpointError::Fail, |p| p.on_error));
    while step < total_steps {
        let mut loader = Loader::new(&feed, epoch, start_batch, shard);
        start_batch = 0;
        while step < total_steps {
            let t_wait = Instant::now();
            let Some(batch) = loader.next() else { break };
            let mut batch = batch.map_err(|e| failed_at(step + 1)(e.into()))?;
            if batch.offset == 0 && !batch.x.is_empty() && cfg.inject_nonfinite.contains(&(step + 1)) {
                let per = batch.x.sample_len();
                batch.x.data_mut()[..per].fill(f32::NAN);
            }
            let waited = t_wait.elapsed().as_secs_f64();
            let t_comp = Instant::now();
            let ctx = Ctx {
                mode: Mode::Train,
                threads: cfg.threads,
                backend: cfg.backend,
                seed: cfg.seed,
                step,
                layer: 0,
                sample_ids: &batch.ids,
                sync: None,
            };
            let lr = schedule.lr_at(step);
            let r = strategy.step(&mut net, &ctx, &mut params, &batch, lr).map_err(failed_at(step + 1))?;
            let compute = t_comp.elapsed().as_secs_f64();
            step += 1;
            if let Some(spans) = &mut phases {
                emit_phases(spans, shard.rank, step, t_wait, t_comp, strategy, emit);
            }
            let n = r.stats.samples.max(1);
            last_loss = r.stats.loss_sum / n as f64;
            // The loss and the parameters (whose gradients may have gone non-finite without the
            // loss showing it yet) are checked every step. (`--on-nonfinite skip`: the strategy
            // has looked at the gradients and skipped the update if needed; a non-finite loss
            // alone changes nothing.)
            let skip_mode = cfg.on_nonfinite == nonfinite::OnNonFinite::Skip;
            if r.skipped {
                skipped += 1;
                if lead {
                    tracing::warn!(
                        step,
                        skipped,
                        "non-finite gradients: the update of this step was skipped (--on-nonfinite skip)"
                    );
                }
            }
            let epoch_end = batch.index + 1 == sampler.batches_per_epoch();
            if !skip_mode {
                let loss_bad = r.stats.samples > 0 && !last_loss.is_finite();
                let (mine, named) = match strategy.own_params() {
                    Some(p) => (p, false),
                    None => (params.as_slice(), true),
                };
                if loss_bad || nonfinite::any_nonfinite(mine) {
                    let tensor = if named { first_nonfinite(net.layout(), &params) } else { None };
                    let what = match (loss_bad, named) {
                        (true, _) => "loss",
                        (false, true) => "the model",
                        (false, false) => "this worker's part of the model",
                    };
                    return Err(failed_at(step)(TrainError::NonFinite { step, what, tensor }));
                }
            } else if cfg.checkpoint.as_ref().is_some_and(|p| p.due(step, per_epoch, total_steps)) {
                // Skipped steps keep the parameters finite, but a finite gradient can still
                // overflow them: never write a checkpoint of a diverged model.
                if let Some(tensor) = first_nonfinite(net.layout(), &params) {
                    return Err(failed_at(step)(TrainError::NonFinite {
                        step,
                        what: "the model",
                        tensor: Some(tensor),
                    }));
                }
            }
            totals.add(waited, compute, batch.global, &r);
            if let Some(e) = totals.rate(shard.rank, step, false) {
                emit(e);
            }
            if lead {
                emit(Event::Step {
                    step,
                    epoch,
                    loss: last_loss,
                    acc: r.stats.correct as f64 / n as f64,
                    lr,
                    samples: r.stats.samples,
                    images_per_sec: batch.global as f64 / (waited + compute).max(1e-9),
                    data_wait_s: waited,
                    compute_s: compute - r.comm_wait_s,
                    comm_s: r.comm_s,
                    comm_wait_s: r.comm_wait_s,
                    skipped: r.skipped,
                });
            }
            // `--eval-every`: not at the end (evaluated below) nor where the epoch's is due.
            let epoch_eval = cfg.eval_each_epoch && step % per_epoch == 0;
            if lead && cfg.eval_every.is_some_and(|n| step % n == 0) && step < total_steps && !epoch_eval {
                let s = evaluate(&mut net, &params, test_set.as_ref(), cfg.data.crop, 1000, cfg.threads, cfg.backend)?;
                emit(eval_event(step, epoch, &s));
            }
            let stopping = strategy.stop_now(step, shard.world).map_err(failed_at(step))?;
            let mut saved = None;
            if let Some(policy) = &cfg.checkpoint {
                if policy.due(step, per_epoch, total_steps) || stopping {
                    let (next_epoch, samples) =
                        if epoch_end { (epoch + 1, 0) } else { (epoch, ((batch.index + 1) * cfg.batch_size) as u64) };
                    strategy.checkpoint_params(&mut params).map_err(failed_at(step))?;
                    let (state, opt_steps) = strategy.optimizer_state().map_err(failed_at(step))?;
                    if lead {
                        let run = checkpoint::run::RunState {
                            format_version: checkpoint::run::FORMAT_VERSION,
                            model: cfg.model.name.clone(),
                            step,
                            epoch: next_epoch,
                            samples_in_epoch: samples,
                            optimizer_steps: opt_steps,
                            batch_size: cfg.batch_size,
                            seed: cfg.seed,
                            optimizer: format!("{:?}", cfg.optimizer),
                            schedule: format!("{schedule:?}"),
                            total_steps,
                            workers: shard.world,
                            strategy: strategy_name.to_string(),
                            files: Default::default(),
                        };
                        let job = writer::Job {
                            dir: policy.dir.clone(),
                            keep: policy.keep,
                            layout: net.layout().clone(),
                            params: params.clone(),
                            state,
                            run,
                            crash: policy.crash_at == Some(step),
                        };
                        writer.submit(job).map_err(failed_at(step))?;
                        if stopping {
                            saved = writer.wait().map_err(failed_at(step))?.map(|_| policy.dir.clone());
                        }
                    }
                }
            }
            // A background write that failed ends the run now (or warned, and training goes on).
            writer.poll().map_err(failed_at(step))?;
            if stopping {
                let signal = stop::requested().unwrap_or(stop::SIGINT);
                return Err(TrainError::Interrupted { signal, step, saved });
            }
            loader.recycle(batch);
        }
        let epoch_done = step % per_epoch == 0;
        if epoch_done && step < total_steps {
            emit(totals.event(shard.rank, step, t0));
            if lead && cfg.eval_each_epoch {
                let s = evaluate(&mut net, &params, test_set.as_ref(), cfg.data.crop, 1000, cfg.threads, cfg.backend)?;
                emit(eval_event(step, epoch, &s));
            }
        }
        epoch += 1;
    }
    writer.wait().map_err(failed_at(step))?;
    strategy.finish(&mut params).map_err(failed_at(step))?;
    let train_secs = t0.elapsed().as_secs_f64();
    emit(totals.event(shard.rank, step, t0));
    if let Some(e) = totals.rate(shard.rank, step, true) {
        emit(e);
    }
    let mut summary = TrainSummary {
        steps: step,
        test_acc: f64::NAN,
        test_loss: f64::NAN,
        last_loss,
        seconds: train_secs,
        images_per_sec: totals.global_samples as f64 / train_secs.max(1e-9),
        params,
    };
    if lead {
        let s = evaluate(&mut net, &summary.params, test_set.as_ref(), cfg.data.crop, 1000, cfg.threads, cfg.backend)?;
        emit(eval_event(step, epoch.saturating_sub(1), &s));
        summary.test_acc = s.correct as f64 / s.samples.max(1) as f64;
        summary.test_loss = s.loss_sum / s.samples.max(1) as f64;
        summary.seconds = t0.elapsed().as_secs_f64();
        if let Some(path) = &cfg.save {
            checkpoint::save_weights(path, net.layout(), &summary.params, &cfg.model.name)?;
        }
        emit(Event::RunEnd {
            steps: summary.steps,
            test_acc: summary.test_acc,
            test_loss: summary.test_loss,
            seconds: summary.seconds,
            images_per_sec: summary.images_per_sec,
            skipped_steps: skipped,
        });
    }
    Ok(summary)
}

/// The first tensor of `layout` holding a NaN or an infinity in `params`.
fn first_nonfinite(layout: &crate::net::ParamLayout, params: &[f32]) -> Option<String> {
    layout
        .entries()
        .iter()
        .find(|e| params.get(e.range()).is_some_and(nonfinite::any_nonfinite))
        .map(|e| e.name.clone())
}

/// Checks that a checkpoint can continue this run: same model, batch, seed, optimizer, schedule
/// and length (the flags of a resumed run must be those of the run that wrote it).
fn check_resumable(
    cfg: &TrainConfig,
    run: &checkpoint::run::RunState,
    schedule: &LrSchedule,
    (total_steps, per_epoch): (u64, u64),
    dir: &Path,
) -> Result<(), TrainError> {
    let checks: [(&str, String, String); 6] = [
        ("--model", run.model.clone(), cfg.model.name.clone()),
        ("--batch-size", run.batch_size.to_string(), cfg.batch_size.to_string()),
        ("--seed", run.seed.to_string(), cfg.seed.to_string()),
        ("--optimizer/--lr/--momentum/--weight-decay", run.optimizer.clone(), format!("{:?}", cfg.optimizer)),
        ("--schedule/--lr", run.schedule.clone(), format!("{schedule:?}")),
        ("--epochs/--steps", run.total_steps.to_string(), total_steps.to_string()),
    ];
    for (flag, saved, now) in checks {
        if saved != now {
            return Err(TrainError::Config(format!(
                "cannot resume from {}: it was written with {flag} giving {saved}, this run has {now}; hint: resume with the flags of the run that wrote it",
                dir.display()
            )));
        }
    }
    // (state.json carries no checksum of its own: a position outside the epoch is refused here.)
    let batch = cfg.batch_size as u64;
    if !run.samples_in_epoch.is_multiple_of(batch)
        || run.samples_in_epoch / batch >= per_epoch
        || run.step > total_steps
    {
        return Err(TrainError::Config(format!(
            "cannot resume from {}: its position (step {}, sample {} of epoch {}) does not fit this run",
            dir.display(),
            run.step,
            run.samples_in_epoch,
            run.epoch
        )));
    }
    Ok(())
}

/// Emits the data wait (`t_wait`..`t_comp`) and the strategy's phases of step `step`.
fn emit_phases(
    spans: &mut Vec<timeline::Span>,
    rank: usize,
    step: u64,
    t_wait: Instant,
    t_comp: Instant,
    strategy: &mut dyn Strategy,
    emit: &mut dyn FnMut(Event),
) {
    spans.clear();
    strategy.take_phases(spans);
    let (start_ns, end_ns) = (timeline::ns(t_wait), timeline::ns(t_comp));
    emit(Event::Phase { rank, step, track: Track::Compute, name: "data", bucket: None, micro: None, start_ns, end_ns });
    for s in spans.iter() {
        emit(Event::Phase {
            rank,
            step,
            track: s.track,
            name: s.name,
            bucket: s.bucket,
            micro: s.micro,
            start_ns: s.start_ns,
            end_ns: s.end_ns,
        });
    }
}

fn eval_event(step: u64, epoch: u64, s: &BatchStats) -> Event {
    let n = s.samples.max(1) as f64;
    Event::Eval { step, epoch, loss: s.loss_sum / n, acc: s.correct as f64 / n, samples: s.samples }
}
