//! The training loop of one worker, `run_worker`, in named steps: `start` (fresh or resumed
//! parameters, the strategy's `init`), then per step `check_finite`, `report_step`,
//! `eval_if_due` and `checkpoint_if_due`, and `finish` (the final evaluation, `--save`, the
//! run's end). Every strategy runs this same loop; only `Strategy::step` differs.

use super::events::{Event, Track};
use super::nonfinite::{self, OnNonFinite};
use super::{
    evaluate, feed, initial_params, stop, timeline, total_steps, totals, writer, OnCheckpointError, StepReport,
    Strategy, TrainConfig, TrainError, TrainSummary,
};
use crate::checkpoint;

use crate::data::{loader::Batch, loader::Loader, sampler::Shard, Dataset};
use crate::layers::{Ctx, Mode};
use crate::net::{BatchStats, Net};
use crate::optim::schedule::LrSchedule;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// What stays fixed during one worker's run.
struct Run<'a> {
    cfg: &'a TrainConfig,
    strategy_name: &'a str,
    shard: Shard,
    lead: bool,
    schedule: LrSchedule,
    per_epoch: u64,
    total_steps: u64,
    test_set: &'a dyn Dataset,
}

impl Run<'_> {
    /// An error of step `step`, naming this worker when there are several.
    fn failed_at(&self, step: u64) -> impl Fn(TrainError) -> TrainError {
        let shard = self.shard;
        move |e| if shard.world > 1 { e.at_worker(shard.rank, step) } else { e }
    }

    /// Evaluates `params` on the test set (the lead's job).
    fn evaluate(&self, net: &mut Net, params: &[f32]) -> Result<BatchStats, TrainError> {
        let cfg = self.cfg;
        evaluate(net, params, self.test_set, cfg.data.crop, 1000, cfg.threads, cfg.backend)
    }
}

/// Where the loop stands.
struct Position {
    step: u64,
    epoch: u64,
    /// The first batch of the epoch to load (non-zero on resume).
    start_batch: usize,
}

/// The training loop of one worker: loads `shard` of every global batch, lets `strategy` compute
/// and apply the update, and reports through `emit`. Rank 0 (`shard.rank == 0`) leads: it
/// announces the run, reports steps, evaluates and saves; every rank reports its own totals
/// (`Event::Worker`) after each epoch and at the end. With several workers an error names the
/// worker and the step.
// Long: the loop holds the run's state (position, totals, writer, timeline); each step's parts are the named
// functions below.
pub fn run_worker(
    cfg: &TrainConfig,
    strategy_name: &str,
    mut net: Net,
    (train_set, test_set): &(Arc<dyn Dataset>, Arc<dyn Dataset>),
    shard: Shard,
    strategy: &mut dyn Strategy,
    emit: &mut dyn FnMut(Event),
) -> Result<TrainSummary, TrainError> {
    let feed = feed(cfg, train_set, shard);
    let total_steps = total_steps(cfg, train_set.len());
    let run = Run {
        cfg,
        strategy_name,
        shard,
        lead: shard.rank == 0,
        schedule: cfg.schedule.clone().resolve(total_steps),
        per_epoch: feed.sampler.batches_per_epoch() as u64,
        total_steps,
        test_set: test_set.as_ref(),
    };
    let (mut params, mut at) = start(&run, &net, train_set.as_ref(), strategy, emit)?;
    let t0 = Instant::now();
    let mut totals = totals::WorkerTotals::default();
    // Phases of the current step, for the timeline (`None`: no timeline, nothing is timed).
    let mut phases: Option<Vec<timeline::Span>> = cfg.timeline.then(Vec::new);
    if cfg.timeline {
        strategy.record_phases();
    }
    let (mut last_loss, mut skipped) = (f64::NAN, 0u64);
    // Checkpoints are written in the background (the lead's; see `writer`).
    let mut writer = writer::Writer::new(cfg.checkpoint.as_ref().map_or(OnCheckpointError::Fail, |p| p.on_error));
    while at.step < total_steps {
        let mut loader = Loader::new(&feed, at.epoch, at.start_batch, shard);
        at.start_batch = 0;
        while at.step < total_steps {
            let t_wait = Instant::now();
            let Some(batch) = loader.next() else { break };
            let mut batch = batch.map_err(|e| run.failed_at(at.step + 1)(e.into()))?;
            if batch.offset == 0 && !batch.x.is_empty() && cfg.inject_nonfinite.contains(&(at.step + 1)) {
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
                step: at.step,
                layer: 0,
                sample_ids: &batch.ids,
                sync: None,
            };
            let lr = run.schedule.lr_at(at.step);
            let r = strategy.step(&mut net, &ctx, &mut params, &batch, lr).map_err(run.failed_at(at.step + 1))?;
            let compute = t_comp.elapsed().as_secs_f64();
            at.step += 1;
            let step = at.step;
            if let Some(spans) = &mut phases {
                emit_phases(spans, shard.rank, step, t_wait, t_comp, strategy, emit);
            }
            last_loss = r.stats.loss_sum / r.stats.samples.max(1) as f64;
            if r.skipped {
                skipped += 1;
                if run.lead {
                    tracing::warn!(
                        step,
                        skipped,
                        "non-finite gradients: the update of this step was skipped (--on-nonfinite skip)"
                    );
                }
            }
            check_finite(&run, &r, last_loss, &net, &params, strategy, step)?;
            totals.add(waited, compute, batch.global, &r);
            if let Some(e) = totals.rate(shard.rank, step, false) {
                emit(e);
            }
            if run.lead {
                emit(step_event(&at, &r, lr, batch.global, waited, compute));
            }
            eval_if_due(&run, &mut net, &params, &at, emit)?;
            let stopping = strategy.stop_now(step, shard.world).map_err(run.failed_at(step))?;
            let saved = checkpoint_if_due(&run, &at, &batch, stopping, &net, &mut params, strategy, &mut writer)?;
            // A background write that failed ends the run now (or warned, and training goes on).
            writer.poll().map_err(run.failed_at(step))?;
            if stopping {
                let signal = stop::requested().unwrap_or(stop::SIGINT);
                return Err(TrainError::Interrupted { signal, step, saved });
            }
            loader.recycle(batch);
        }
        if at.step.is_multiple_of(run.per_epoch) && at.step < total_steps {
            emit(totals.event(shard.rank, at.step, t0));
            if run.lead && cfg.eval_each_epoch {
                emit(eval_event(at.step, at.epoch, &run.evaluate(&mut net, &params)?));
            }
        }
        at.epoch += 1;
    }
    writer.wait().map_err(run.failed_at(at.step))?;
    strategy.finish(&mut params).map_err(run.failed_at(at.step))?;
    let seconds = t0.elapsed().as_secs_f64();
    emit(totals.event(shard.rank, at.step, t0));
    if let Some(e) = totals.rate(shard.rank, at.step, true) {
        emit(e);
    }
    let summary = TrainSummary {
        steps: at.step,
        test_acc: f64::NAN,
        test_loss: f64::NAN,
        last_loss,
        seconds,
        images_per_sec: totals.global_samples as f64 / seconds.max(1e-9),
        params,
    };
    finish(&run, &mut net, summary, at.epoch, skipped, t0, emit)
}

/// Before the first step: announces the run (lead), takes the initial or resumed parameters and
/// position, checks that the checkpoint folder can be written, and runs the strategy's `init`.
fn start(
    run: &Run,
    net: &Net,
    train_set: &dyn Dataset,
    strategy: &mut dyn Strategy,
    emit: &mut dyn FnMut(Event),
) -> Result<(Vec<f32>, Position), TrainError> {
    let cfg = run.cfg;
    let mut params = initial_params(cfg, net)?;
    if run.lead {
        emit(Event::RunStart {
            model: cfg.model.name.clone(),
            params: params.len(),
            workers: run.shard.world,
            threads: cfg.threads,
            batch_size: cfg.batch_size,
            train_samples: train_set.len(),
            test_samples: run.test_set.len(),
            total_steps: run.total_steps,
        });
    }
    let mut at = Position { step: 0, epoch: 0, start_batch: 0 };
    if let Some(path) = &cfg.resume {
        let c = checkpoint::run::load_checkpoint(path, net.layout(), &strategy.state_names())?;
        check_resumable(cfg, &c.run, &run.schedule, (run.total_steps, run.per_epoch), &c.dir)?;
        params = c.params;
        strategy.restore(&c.state, c.run.optimizer_steps)?;
        at = Position {
            step: c.run.step,
            epoch: c.run.epoch,
            start_batch: (c.run.samples_in_epoch / cfg.batch_size as u64) as usize,
        };
        if run.lead {
            tracing::info!(checkpoint = %c.dir.display(), step = at.step, epoch = at.epoch, "resuming");
        }
    }
    if let (true, Some(policy)) = (run.lead, &cfg.checkpoint) {
        // Found out now rather than at the first checkpoint, maybe hours later.
        std::fs::create_dir_all(&policy.dir).map_err(|e| {
            TrainError::Config(format!(
                "cannot create --checkpoint-dir {}: {e}; hint: pass a directory you can write",
                policy.dir.display()
            ))
        })?;
    }
    strategy.init(&mut params).map_err(run.failed_at(at.step))?;
    if !run.lead && strategy.owns_params() {
        // The strategy keeps only its slices; a full copy is needed by the lead worker alone
        // (evaluation, saving, checkpoints).
        params = Vec::new();
    }
    Ok((params, at))
}

/// After step `step`: the loss and the parameters (whose gradients may have gone non-finite
/// without the loss showing it yet) must be finite. Under `--on-nonfinite skip` the strategy has
/// looked at the gradients and skipped the update if needed, and a non-finite loss alone changes
/// nothing; but a finite gradient can still overflow the parameters, so a checkpoint is never
/// written of a diverged model.
fn check_finite(
    run: &Run,
    r: &StepReport,
    loss: f64,
    net: &Net,
    params: &[f32],
    strategy: &dyn Strategy,
    step: u64,
) -> Result<(), TrainError> {
    let cfg = run.cfg;
    let nonfinite = |what, tensor| Err(run.failed_at(step)(TrainError::NonFinite { step, what, tensor }));
    if cfg.on_nonfinite == OnNonFinite::Skip {
        if cfg.checkpoint.as_ref().is_some_and(|p| p.due(step, run.per_epoch, run.total_steps)) {
            if let Some(tensor) = first_nonfinite(net.layout(), params) {
                return nonfinite("the model", Some(tensor));
            }
        }
        return Ok(());
    }
    let loss_bad = r.stats.samples > 0 && !loss.is_finite();
    let (mine, named) = match strategy.own_params() {
        Some(p) => (p, false),
        None => (params, true),
    };
    if loss_bad || nonfinite::any_nonfinite(mine) {
        let tensor = if named { first_nonfinite(net.layout(), params) } else { None };
        let what = match (loss_bad, named) {
            (true, _) => "loss",
            (false, true) => "the model",
            (false, false) => "this worker's part of the model",
        };
        return nonfinite(what, tensor);
    }
    Ok(())
}

/// The lead's `Event::Step` for the step just done.
fn step_event(at: &Position, r: &StepReport, lr: f32, global: usize, waited: f64, compute: f64) -> Event {
    let n = r.stats.samples.max(1);
    Event::Step {
        step: at.step,
        epoch: at.epoch,
        loss: r.stats.loss_sum / n as f64,
        acc: r.stats.correct as f64 / n as f64,
        lr,
        samples: r.stats.samples,
        images_per_sec: global as f64 / (waited + compute).max(1e-9),
        data_wait_s: waited,
        compute_s: compute - r.comm_wait_s,
        comm_s: r.comm_s,
        comm_wait_s: r.comm_wait_s,
        skipped: r.skipped,
    }
}

/// `--eval-every`: evaluates (lead) on its steps, but not at the end (evaluated by `finish`) nor
/// where the epoch's evaluation is due.
fn eval_if_due(
    run: &Run,
    net: &mut Net,
    params: &[f32],
    at: &Position,
    emit: &mut dyn FnMut(Event),
) -> Result<(), TrainError> {
    let cfg = run.cfg;
    let epoch_eval = cfg.eval_each_epoch && at.step.is_multiple_of(run.per_epoch);
    if run.lead && cfg.eval_every.is_some_and(|n| at.step.is_multiple_of(n)) && at.step < run.total_steps && !epoch_eval
    {
        emit(eval_event(at.step, at.epoch, &run.evaluate(net, params)?));
    }
    Ok(())
}

/// Writes a checkpoint when the policy says so or the run is stopping: every worker gathers
/// its parameters and optimizer state (collective), the lead hands them to the background
/// writer. Returns the folder when the run is stopping and the checkpoint was written.
#[allow(clippy::too_many_arguments)] // the loop's state, each piece named at the one call site
fn checkpoint_if_due(
    run: &Run,
    at: &Position,
    batch: &Batch,
    stopping: bool,
    net: &Net,
    params: &mut [f32],
    strategy: &mut dyn Strategy,
    writer: &mut writer::Writer,
) -> Result<Option<PathBuf>, TrainError> {
    let (cfg, step) = (run.cfg, at.step);
    let Some(policy) = &cfg.checkpoint else { return Ok(None) };
    if !(policy.due(step, run.per_epoch, run.total_steps) || stopping) {
        return Ok(None);
    }
    let epoch_end = batch.index + 1 == run.per_epoch as usize;
    let (next_epoch, samples) =
        if epoch_end { (at.epoch + 1, 0) } else { (at.epoch, ((batch.index + 1) * cfg.batch_size) as u64) };
    strategy.checkpoint_params(params).map_err(run.failed_at(step))?;
    let (state, opt_steps) = strategy.optimizer_state().map_err(run.failed_at(step))?;
    if !run.lead {
        return Ok(None);
    }
    let state_json = checkpoint::run::RunState {
        format_version: checkpoint::run::FORMAT_VERSION,
        model: cfg.model.name.clone(),
        step,
        epoch: next_epoch,
        samples_in_epoch: samples,
        optimizer_steps: opt_steps,
        batch_size: cfg.batch_size,
        seed: cfg.seed,
        optimizer: format!("{:?}", cfg.optimizer),
        schedule: format!("{:?}", run.schedule),
        total_steps: run.total_steps,
        workers: run.shard.world,
        strategy: run.strategy_name.to_string(),
        files: Default::default(),
    };
    let job = writer::Job {
        dir: policy.dir.clone(),
        keep: policy.keep,
        layout: net.layout().clone(),
        params: params.to_vec(),
        state,
        run: state_json,
        crash: policy.crash_at == Some(step),
    };
    writer.submit(job).map_err(run.failed_at(step))?;
    if !stopping {
        return Ok(None);
    }
    Ok(writer.wait().map_err(run.failed_at(step))?.map(|_| policy.dir.clone()))
}

/// After the last step (lead): evaluates, writes `--save` and announces the end of the run.
fn finish(
    run: &Run,
    net: &mut Net,
    mut summary: TrainSummary,
    epoch: u64,
    skipped: u64,
    t0: Instant,
    emit: &mut dyn FnMut(Event),
) -> Result<TrainSummary, TrainError> {
    if !run.lead {
        return Ok(summary);
    }
    let cfg = run.cfg;
    let s = run.evaluate(net, &summary.params)?;
    emit(eval_event(summary.steps, epoch.saturating_sub(1), &s));
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
