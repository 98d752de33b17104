//! Pipeline parallelism (GPipe; 1F1B as in PipeDream-Flush / Megatron): the net's layers are cut
//! into `--stages` contiguous stages, one per worker; every global batch is cut into
//! `--micro-batches` micro-batches that flow through the stages: activations forward and
//! activation gradients backward over the Communicator's `send`/`recv`. Each stage accumulates
//! its layers' gradients over the micro-batches (loss divided by the global batch, as everywhere)
//! and applies the optimizer to its own layers at the end of the step — the same update as one
//! worker on the whole batch.
//!
//! Schedules, per stage s of S with M micro-batches:
//! - GPipe: all M forwards, then all M backwards (last in, first out). Holds M micro-batches of
//!   activations.
//! - 1F1B: min(S − s − 1, M) forwards to fill the pipe, then one forward and one backward in turn,
//!   then the remaining backwards. Holds at most S − s micro-batches of activations (S on the first).
//!
//! Activations of a micro-batch live in a slot (a `Net` with its own activation buffers and layer
//! caches) from its forward to its backward; the slots in use at once are the stage's activation
//! memory, reported with the bubble (the share of the step the stage waited for its neighbours;
//! GPipe's theory with equal stages: (S − 1)/(M + S − 1)).
//!
//! Every stage loads the whole global batch (stage 0 uses the images, the last stage the
//! labels); the last stage sends the loss statistics to stage 0, which leads the run. At the end
//! the stages send their layers' parameters to stage 0, so evaluation and saved weights are
//! those of the whole net, under the usual names.

use super::partition::balanced_stages;
use crate::comm::Communicator;
use crate::data::loader::Batch;
use crate::layers::Ctx;
use crate::net::{BatchStats, GradSink, Net, ParamSource};
use crate::optim::Optimizer;
use crate::ranges::even_range;
use crate::tensor::Tensor;
use crate::train::events::{Event, Track};
use crate::train::timeline::{PhaseLog, Span};
use crate::train::{nonfinite, StepReport, Strategy, TrainConfig, TrainError};
use std::ops::Range;
use std::time::Instant;

const TAG_ACT: u32 = 0x6000_0000;
const TAG_GRAD: u32 = 0x7000_0000;
const TAG_STATS: u32 = 0x8000_0001;

/// Order of forwards and backwards within a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// All forwards, then all backwards.
    GPipe,
    /// One forward, one backward in turn after a warm-up.
    OneFOneB,
}

/// One micro-batch's pass through a stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// Forward of micro-batch m.
    Forward(usize),
    /// Backward of micro-batch m.
    Backward(usize),
}

impl Schedule {
    /// The passes stage `stage` of `stages` runs in one step of `m` micro-batches, in order (what
    /// a stage runs, and what `convoy plan` simulates).
    pub fn passes(self, stage: usize, stages: usize, m: usize) -> Vec<Pass> {
        match self {
            Schedule::GPipe => (0..m).map(Pass::Forward).chain((0..m).rev().map(Pass::Backward)).collect(),
            Schedule::OneFOneB => {
                let warm = (stages - stage - 1).min(m);
                let steady = (0..m - warm).flat_map(|i| [Pass::Forward(warm + i), Pass::Backward(i)]);
                (0..warm).map(Pass::Forward).chain(steady).chain((m - warm..m).map(Pass::Backward)).collect()
            }
        }
    }
}

/// Settings of `--strategy pipeline`.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineConfig {
    /// Stages (= workers).
    pub stages: usize,
    /// Micro-batches per global batch.
    pub micro_batches: usize,
    /// Schedule.
    pub schedule: Schedule,
    /// Layers after which a stage ends (`--split-after`); empty: balance estimated FLOPs.
    pub split_after: Vec<String>,
    /// Data-parallel replicas of the whole pipeline (`--strategy hybrid --dp R --pp S`): rank
    /// r·S + s is stage s of replica r; replica r trains on shard r of each global batch, and
    /// each stage all-reduces its gradients with the same stage of the other replicas.
    pub replicas: usize,
}

impl PipelineConfig {
    /// Checks the settings against the run.
    pub fn validate(&self, workers: usize, cfg: &TrainConfig) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.stages < 2 {
            return bad(format!("--stages {} must be at least 2; hint: one stage is plain training", self.stages));
        }
        let all = self.stages * self.replicas;
        if workers != 1 && workers != all {
            return bad(format!("--strategy pipeline runs one worker per stage: --workers {workers} but {all} stages in all; hint: drop --workers"));
        }
        if self.replicas == 0 {
            return bad("--dp must be at least 1".into());
        }
        let shard = cfg.batch_size / self.replicas;
        if shard == 0 {
            return bad(format!("--batch-size {} is smaller than --dp {}: some replicas would get no samples; hint: the batch size is the global batch", cfg.batch_size, self.replicas));
        }
        if self.micro_batches == 0 || self.micro_batches > shard {
            return bad(format!(
                "--micro-batches {} must be between 1 and the batch size per replica {shard}",
                self.micro_batches
            ));
        }
        if !self.split_after.is_empty() && self.split_after.len() != self.stages - 1 {
            return bad(format!(
                "--split-after names {} layers; {} stages need {}",
                self.split_after.len(),
                self.stages,
                self.stages - 1
            ));
        }
        Ok(())
    }
}

/// The layer ranges of the stages: cut after the named layers, or (none named) so that the
/// largest stage's estimated cost is smallest (forward multiply–adds per sample, plus the
/// activation size for layers without arithmetic, so each stage gets some work).
pub fn partition(net: &Net, stages: usize, split_after: &[String]) -> Result<Vec<Range<usize>>, TrainError> {
    let n = net.num_layers();
    if stages > n {
        return Err(TrainError::Config(format!("--stages {stages} exceeds the {n} layers of the model")));
    }
    let names = net.layer_names();
    if !split_after.is_empty() {
        let mut cuts = Vec::new();
        for s in split_after {
            let i = names.iter().position(|x| x == s).ok_or_else(|| {
                TrainError::Config(format!(
                    "--split-after: no layer named '{s}'; hint: layers are {}",
                    names.join(", ")
                ))
            })?;
            if i + 1 < n && !net.spec().can_cut_after(i) {
                let ok: Vec<&str> =
                    (0..n - 1).filter(|&j| net.spec().can_cut_after(j)).map(|j| names[j].as_str()).collect();
                return Err(TrainError::Config(format!(
                    "--split-after {s}: a residual connection crosses that point; hint: cut after one of {}",
                    ok.join(", ")
                )));
            }
            cuts.push(i + 1);
        }
        if cuts.windows(2).any(|w| w[0] >= w[1]) || cuts.last() == Some(&n) {
            return Err(TrainError::Config(
                "--split-after: layers must be in order, and the last stage must keep at least one layer".into(),
            ));
        }
        let mut starts = vec![0];
        starts.extend(cuts);
        starts.push(n);
        return Ok(starts.windows(2).map(|w| w[0]..w[1]).collect());
    }
    let cost: Vec<f64> = net
        .flops_per_sample()
        .iter()
        .enumerate()
        .map(|(i, &f)| (f + net.layer_out_shape(i).iter().product::<usize>() as u64) as f64)
        .collect();
    // Balance over the units between the points where a cut is possible (a residual block is
    // one unit).
    balanced_stages(&cost, |j| net.spec().can_cut_after(j), stages).map_err(|units| {
        TrainError::Config(format!(
            "--stages {stages}: '{}' can be cut at only {} points (residual connections cross the others); \
             hint: use at most {units} stages",
            net.spec().name,
            units - 1
        ))
    })
}

/// One micro-batch's activations held between its forward and its backward.
struct InFlight {
    slot: usize,
    input: Tensor,
    rows: Range<usize>,
}

/// The pipeline strategy of one stage.
pub struct Pipeline<'c> {
    comm: &'c dyn Communicator,
    /// The same stage of the other replicas (hybrid data × pipeline).
    replicas: Option<&'c dyn Communicator>,
    cfg: PipelineConfig,
    stage: usize,
    stages: usize,
    /// Every stage's layers.
    ranges: Vec<Range<usize>>,
    /// This stage's parameters in the flat buffer.
    params: Range<usize>,
    /// Length of the whole flat buffer.
    full_len: usize,
    opt: Box<dyn Optimizer>,
    /// `--on-nonfinite skip`.
    skip_nonfinite: bool,
    grads: Vec<f32>,
    /// Activation slots (built as needed) and which are free.
    slots: Vec<Net>,
    free: Vec<usize>,
    /// Tensors of finished micro-batches (inputs, received gradients), reused.
    spare: Vec<Tensor>,
    in_flight: Vec<Option<InFlight>>,
    model: crate::net::ModelSpec,
    /// Activation bytes per sample of this stage (its input and its layers' outputs).
    act_bytes_per_sample: usize,
    peak: usize,
    peak_bytes: usize,
    current_bytes: usize,
    waited_s: f64,
    step_s: f64,
    /// Phases of the step, for the timeline: forward/backward per micro-batch on the compute
    /// track; send, recv, the replicas' all-reduce and the loss statistics on the comm track.
    phases: PhaseLog,
}

impl<'c> Pipeline<'c> {
    /// The strategy of the stage `comm.rank()` (of `comm.size()` stages); `replicas` joins this
    /// stage with the same stage of the other data-parallel replicas, if any.
    pub fn new(
        comm: &'c dyn Communicator,
        replicas: Option<&'c dyn Communicator>,
        cfg: PipelineConfig,
        run: &TrainConfig,
        net: &Net,
    ) -> Result<Pipeline<'c>, TrainError> {
        let (stage, stages) = (comm.rank(), comm.size());
        let ranges = partition(net, stages, &cfg.split_after)?;
        let layers = ranges[stage].clone();
        let layout = net.layout();
        let params = layout.layer_range(layers.start).start..layout.layer_range(layers.end - 1).end;
        let input: usize = if layers.start == 0 {
            net.input_shape().iter().product()
        } else {
            net.layer_out_shape(layers.start - 1).iter().product()
        };
        let outputs: usize = layers.clone().map(|i| net.layer_out_shape(i).iter().product::<usize>()).sum();
        Ok(Pipeline {
            comm,
            replicas,
            opt: run.optimizer.build_scaled(params.len(), layout.mult_ranges_in(&params))?,
            skip_nonfinite: run.on_nonfinite == nonfinite::OnNonFinite::Skip,
            grads: vec![0.0; params.len()],
            stage,
            stages,
            ranges,
            params,
            full_len: layout.len(),
            slots: Vec::new(),
            free: Vec::new(),
            spare: Vec::new(),
            in_flight: Vec::new(),
            model: run.model.clone(),
            act_bytes_per_sample: (input + 2 * outputs) * 4,
            peak: 0,
            peak_bytes: 0,
            current_bytes: 0,
            waited_s: 0.0,
            step_s: 0.0,
            phases: PhaseLog::default(),
            cfg,
        })
    }

    fn layers(&self) -> Range<usize> {
        self.ranges[self.stage].clone()
    }

    fn last(&self) -> bool {
        self.stage + 1 == self.stages
    }

    /// Per-sample shape of the input of layer `i`.
    fn input_shape(&self, net: &Net, i: usize) -> Vec<usize> {
        if i == 0 {
            net.input_shape().to_vec()
        } else {
            net.layer_out_shape(i - 1)
        }
    }

    fn take_slot(&mut self, rows: usize) -> Result<usize, TrainError> {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Net::build(&self.model)?);
                self.slots.len() - 1
            }
        };
        self.current_bytes += rows * self.act_bytes_per_sample;
        let in_use = self.slots.len() - self.free.len();
        self.peak = self.peak.max(in_use);
        self.peak_bytes = self.peak_bytes.max(self.current_bytes);
        Ok(slot)
    }

    /// Receives into a tensor of `rows` samples of per-sample `shape`, timing the wait.
    fn recv_tensor(&mut self, rows: usize, shape: &[usize], src: usize, tag: u32) -> Result<Tensor, TrainError> {
        let mut full = vec![rows];
        full.extend_from_slice(shape);
        let mut t = self.spare.pop().unwrap_or_default();
        t.resize(&full);
        let w = Instant::now();
        self.comm.recv(t.data_mut(), src, tag)?;
        self.waited_s += w.elapsed().as_secs_f64();
        self.phases.end(Track::Comm, "recv", Some((tag & 0x0fff_ffff) as usize), Some(w));
        Ok(t)
    }

    fn forward(
        &mut self,
        net: &Net,
        ctx: &Ctx,
        params: &mut [f32],
        batch: &Batch,
        m: usize,
        stats: &mut BatchStats,
    ) -> Result<(), TrainError> {
        let rows = even_range(batch.labels.len(), m, self.cfg.micro_batches);
        if rows.is_empty() {
            return Ok(());
        }
        let layers = self.layers();
        let input = if self.stage == 0 {
            let per = batch.x.sample_len();
            let mut shape = batch.x.shape().to_vec();
            shape[0] = rows.len();
            let mut t = self.spare.pop().unwrap_or_default();
            t.resize(&shape);
            t.data_mut().copy_from_slice(&batch.x.data()[rows.start * per..rows.end * per]);
            t
        } else {
            let shape = self.input_shape(net, layers.start);
            self.recv_tensor(rows.len(), &shape, self.stage - 1, TAG_ACT + m as u32)?
        };
        let p = self.phases.start();
        let slot = self.take_slot(rows.len())?;
        let mctx = Ctx { sample_ids: &batch.ids[rows.clone()], ..*ctx };
        let last = self.last();
        let out = self.slots[slot].forward_layers(&mctx, &*params, layers, &input)?;
        if last {
            stats.add(&self.slots[slot].loss_forward_backward(&batch.labels[rows.clone()], batch.global)?);
            self.phases.end(Track::Compute, "forward", Some(m), p);
        } else {
            self.phases.end(Track::Compute, "forward", Some(m), p);
            let p = self.phases.start();
            self.comm.send(out.data(), self.stage + 1, TAG_ACT + m as u32)?;
            self.phases.end(Track::Comm, "send", Some(m), p);
        }
        // Batch-norm statistics per micro-batch, as GPipe's: each forward updates the running
        // statistics in turn (the optimizer leaves buffers alone, so now is as good as later).
        self.slots[slot].commit_buffers(params);
        self.in_flight[m] = Some(InFlight { slot, input, rows });
        Ok(())
    }

    fn backward(&mut self, net: &Net, ctx: &Ctx, params: &[f32], batch: &Batch, m: usize) -> Result<(), TrainError> {
        let Some(f) = self.in_flight[m].take() else { return Ok(()) };
        let layers = self.layers();
        let dy = if self.last() {
            None
        } else {
            let shape = net.layer_out_shape(layers.end - 1);
            Some(self.recv_tensor(f.rows.len(), &shape, self.stage + 1, TAG_GRAD + m as u32)?)
        };
        let p = self.phases.start();
        let mctx = Ctx { sample_ids: &batch.ids[f.rows.clone()], ..*ctx };
        let mut sink = StageGrads { params, grads: &mut self.grads, offset: self.params.start };
        let input_grad = layers.start > 0;
        let dx = self.slots[f.slot].backward_layers(&mctx, &mut sink, layers, &f.input, dy.as_ref(), input_grad)?;
        self.phases.end(Track::Compute, "backward", Some(m), p);
        if let Some(dx) = dx {
            let p = self.phases.start();
            self.comm.send(dx.data(), self.stage - 1, TAG_GRAD + m as u32)?;
            self.phases.end(Track::Comm, "send", Some(m), p);
        }
        self.free.push(f.slot);
        self.spare.push(f.input);
        self.spare.extend(dy);
        self.current_bytes -= f.rows.len() * self.act_bytes_per_sample;
        Ok(())
    }
}

/// A stage's own buffers are its range of the flat layout.
struct StageRange(Range<usize>);

impl super::owned::Owned for StageRange {
    fn write_full(&self, mine: &[f32], full: &mut [f32]) -> Result<(), TrainError> {
        full[self.0.clone()].copy_from_slice(mine);
        Ok(())
    }

    fn read_full(&self, full: &[f32], mine: &mut [f32]) -> Result<(), TrainError> {
        mine.copy_from_slice(&full[self.0.clone()]);
        Ok(())
    }
}

/// Sums `v` over the stages, then over the replicas.
fn reduce_all(comm: &dyn Communicator, replicas: Option<&dyn Communicator>, v: &mut [f32]) -> Result<(), TrainError> {
    comm.all_reduce_into(v)?;
    if let Some(r) = replicas {
        r.all_reduce_into(v)?;
    }
    Ok(())
}

impl Pipeline<'_> {
    /// The whole vector of a buffer of this stage's range (replica 0's values), on every worker.
    fn gather(&self, mine: &[f32], len: usize) -> Result<Vec<f32>, TrainError> {
        let contributes = self.replicas.is_none_or(|r| r.rank() == 0);
        let (comm, replicas) = (self.comm, self.replicas);
        super::owned::gather_full(&StageRange(self.params.clone()), mine, len, contributes, &mut |v| {
            reduce_all(comm, replicas, v)
        })
    }
}

/// The whole parameter buffer for reading, this stage's gradient buffer for writing.
struct StageGrads<'a> {
    params: &'a [f32],
    grads: &'a mut [f32],
    offset: usize,
}

impl ParamSource for StageGrads<'_> {
    fn params(&self, _i: usize, range: Range<usize>) -> &[f32] {
        &self.params[range]
    }
}

impl GradSink for StageGrads<'_> {
    fn layer(&mut self, _i: usize, range: Range<usize>) -> (&[f32], &mut [f32]) {
        (&self.params[range.clone()], &mut self.grads[range.start - self.offset..range.end - self.offset])
    }
}

impl Strategy for Pipeline<'_> {
    fn init(&mut self, params: &mut [f32]) -> Result<(), TrainError> {
        self.comm.broadcast_into(params, 0)?;
        Ok(())
    }

    fn step(
        &mut self,
        net: &mut Net,
        ctx: &Ctx,
        params: &mut [f32],
        batch: &Batch,
        lr: f32,
    ) -> Result<StepReport, TrainError> {
        let t = Instant::now();
        let waited0 = self.waited_s;
        self.grads.fill(0.0);
        let m_count = self.cfg.micro_batches;
        self.in_flight.clear();
        self.in_flight.resize_with(m_count, || None);
        let mut stats = BatchStats::default();
        let net: &Net = net;
        for pass in self.cfg.schedule.passes(self.stage, self.stages, m_count) {
            match pass {
                Pass::Forward(m) => self.forward(net, ctx, params, batch, m, &mut stats)?,
                Pass::Backward(m) => self.backward(net, ctx, params, batch, m)?,
            }
        }
        if let Some(dp) = self.replicas {
            let w = Instant::now();
            dp.all_reduce_into(&mut self.grads)?;
            self.waited_s += w.elapsed().as_secs_f64();
            self.phases.end(Track::Comm, "allreduce", None, Some(w));
        }
        // `--on-nonfinite skip`: every stage of every replica looks at its gradients and all agree.
        let skipped = self.skip_nonfinite
            && nonfinite::agreed(
                nonfinite::any_nonfinite(&self.grads),
                &[self.comm, self.replicas.unwrap_or(self.comm)][..if self.replicas.is_some() { 2 } else { 1 }],
            )?;
        let r = self.params.clone();
        let p = self.phases.start();
        if !skipped {
            self.opt.step(&mut params[r], &self.grads, lr);
        }
        self.phases.end(Track::Compute, "optimizer", None, p);
        // The loss is known on the last stage; stage 0 leads and reports it.
        let p = self.phases.start();
        if self.stages > 1 {
            if self.last() {
                self.comm.send(&[stats.loss_sum as f32, stats.correct as f32, stats.samples as f32], 0, TAG_STATS)?;
            } else if self.stage == 0 {
                let mut s = [0.0f32; 3];
                self.comm.recv(&mut s, self.stages - 1, TAG_STATS)?;
                if let Some(dp) = self.replicas {
                    dp.all_reduce_into(&mut s)?;
                }
                stats = BatchStats { loss_sum: s[0] as f64, correct: s[1] as usize, samples: s[2] as usize };
            }
            if self.last() || self.stage == 0 {
                self.phases.end(Track::Comm, "stats", None, p);
            }
        }
        let waited = self.waited_s - waited0;
        self.step_s += t.elapsed().as_secs_f64();
        Ok(StepReport { stats, comm_s: waited, comm_wait_s: waited, skipped })
    }

    fn finish(&mut self, params: &mut [f32]) -> Result<(), TrainError> {
        // Every stage's layers into every buffer (the lead's for evaluation and saving), as at a
        // checkpoint.
        self.checkpoint_params(params)
    }

    fn stop_now(&mut self, step: u64, world: usize) -> Result<bool, TrainError> {
        if !self.comm.spans_processes() {
            return Ok(crate::train::stop::stop_after(step, world));
        }
        let mut flag = [if crate::train::stop::requested().is_some() { 1.0f32 } else { 0.0 }];
        reduce_all(self.comm, self.replicas, &mut flag)?;
        Ok(flag[0] > 0.0)
    }

    fn state_names(&self) -> Vec<&'static str> {
        self.opt.state().into_iter().map(|s| s.0).collect()
    }

    fn checkpoint_params(&mut self, params: &mut [f32]) -> Result<(), TrainError> {
        let mine = params[self.params.clone()].to_vec();
        let full = self.gather(&mine, params.len())?;
        params.copy_from_slice(&full);
        Ok(())
    }

    fn optimizer_state(&mut self) -> Result<crate::optim::OptimizerState, TrainError> {
        let len = self.full_len;
        let owned = StageRange(self.params.clone());
        let contributes = self.replicas.is_none_or(|r| r.rank() == 0);
        let (comm, replicas) = (self.comm, self.replicas);
        super::owned::gather_optimizer(self.opt.as_ref(), &owned, len, contributes, &mut |v| {
            reduce_all(comm, replicas, v)
        })
    }

    fn restore(&mut self, state: &[(String, Vec<f32>)], steps: u64) -> Result<(), TrainError> {
        super::owned::restore_split(self.opt.as_mut(), &StageRange(self.params.clone()), state, steps)
    }

    fn record_phases(&mut self) {
        self.phases.enable();
    }

    fn take_phases(&mut self, out: &mut Vec<Span>) {
        self.phases.drain_into(out);
    }

    fn final_events(&self) -> Vec<Event> {
        let l = self.layers();
        vec![Event::Pipeline {
            stage: self.stage,
            layers: format!("{}..{}", l.start, l.end - 1),
            bubble: if self.step_s > 0.0 { self.waited_s / self.step_s } else { 0.0 },
            peak_in_flight: self.peak,
            peak_activation_bytes: self.peak_bytes,
        }]
    }
}
