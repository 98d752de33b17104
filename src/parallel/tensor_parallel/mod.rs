//! Tensor (intra-layer) model parallelism, `--strategy tensor --mp N`: every worker holds a slice
//! of each convolution and fully connected layer and computes its part of every sample.
//!
//! The split, decided per layer while walking the net in its (topological) order (`plan.rs`):
//! - Conv2d: split by output channels (worker w keeps channels `even_range(C, w, N)`, its
//!   rows of the weight and bias). Its output stays sliced through the per-channel layers (ReLU,
//!   pooling, batch norm, scale) and through element-wise joins (`add`, `mul`, `max`) whose inputs
//!   are all sliced alike, until a layer needs every channel (the next convolution, Flatten, LRN,
//!   Dropout, pad_channels, concat, a join of differently held inputs, the loss): there the
//!   slices are all-gathered, once per value however many layers read it whole.
//! - Linear after a whole input: column-parallel (rows of the weight, slice of the bias); its
//!   output features stay sliced through ReLU, and the next Linear is row-parallel (the weight's
//!   columns of those features, the bias on worker 0 only) whose partial outputs are summed by an
//!   all-reduce — Megatron-LM's pairing: one all-reduce per pair in forward.
//! - A layer computed whole is computed by every worker (the same values; its parameters, if
//!   any, a copy on each, worker 0's saved).
//! - Backward mirrors it (`exec.rs`): the gradient a split layer gives back for its whole input is
//!   its partial contribution (its slice of the weights), summed over the readers of that value
//!   and all-reduced once; each worker keeps its channels of it. After a row-parallel layer's
//!   all-reduce the gradient is already whole (one all-reduce per pair in backward, at the
//!   column-parallel layer's input).
//!
//! The net runs as segments (chains of layers built as nets of their own, and joins) between
//! those communication points; the loss is computed by every worker on the whole logits. Each
//! worker updates its own slices with its own optimizer state — the same update as one worker on
//! the whole batch. At the start each worker cuts its slices out of the run's initial parameters;
//! at the end they are gathered to rank 0, so evaluation and saved weights are those of the whole
//! net under the usual names.

mod exec;
mod plan;

pub(crate) use exec::SplitNet;
pub use plan::{plan, SplitPlan};

use crate::comm::Communicator;
use crate::data::loader::Batch;
use crate::layers::softmax_xent::{correct_topk, SoftmaxCrossEntropy};
use crate::layers::Ctx;
use crate::net::{BatchStats, Flat, ModelSpec, Net, ParamLayout};
use crate::optim::Optimizer;
use crate::tensor::Tensor;
use crate::train::events::{Event, Track};
use crate::train::timeline::{PhaseLog, Span};
use crate::train::{nonfinite, StepReport, Strategy, TrainConfig, TrainError};
use std::ops::Range;

/// Settings of `--strategy tensor`.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorConfig {
    /// Slices per layer (= workers).
    pub mp: usize,
}

impl TensorConfig {
    /// Checks the settings against the run.
    pub fn validate(&self, workers: usize, cfg: &TrainConfig) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.mp < 2 {
            return bad(format!("--mp {} must be at least 2; hint: one slice is plain training", self.mp));
        }
        if workers != 1 && workers != self.mp {
            return bad(format!(
                "--strategy tensor runs one worker per slice: --workers {workers} but --mp {}; hint: drop --workers",
                self.mp
            ));
        }
        // Every slice must be possible (the last worker's are the smallest).
        plan(&cfg.model, self.mp - 1, self.mp)?;
        Ok(())
    }
}

/// How a slice's parameter tensor maps into the full one.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Cut {
    /// Rows `range` of dimension 0.
    Rows(Range<usize>),
    /// Columns `range` of dimension 1 of a 2-D weight.
    Cols(Range<usize>),
    /// The whole tensor, held by this worker alone (the row-parallel bias, on worker 0).
    Whole,
    /// The whole tensor, held by every worker (a layer computed whole by each, such as batch
    /// norm before any split); `owner` (worker 0) is the one whose copy is gathered.
    Copy {
        /// This worker's copy is gathered.
        owner: bool,
    },
}

/// A slice buffer's parameter tensors: (full name, cut, range in the slice buffer).
pub(crate) type Maps = Vec<(String, Cut, Range<usize>)>;

/// Copies between a full parameter buffer and a slice buffer (`to_slices`: full → slices).
pub(crate) fn copy(
    maps: &Maps,
    full_layout: &ParamLayout,
    full: &mut [f32],
    slices: &mut [f32],
    to_slices: bool,
) -> Result<(), TrainError> {
    for (name, cut, range) in maps {
        let e = full_layout
            .get(name)
            .ok_or_else(|| TrainError::Internal(format!("tensor slice '{name}' has no full tensor")))?;
        let whole = &mut full[e.range()];
        let mine = &mut slices[range.clone()];
        let pairs: Vec<(Range<usize>, Range<usize>)> = match cut {
            Cut::Copy { owner: false } if !to_slices => continue,
            Cut::Whole | Cut::Copy { .. } => vec![(0..whole.len(), 0..mine.len())],
            Cut::Rows(r) => {
                let row: usize = e.shape[1..].iter().product();
                vec![(r.start * row..r.end * row, 0..mine.len())]
            }
            Cut::Cols(r) => {
                let cols = e.shape[1];
                (0..e.shape[0])
                    .map(|o| (o * cols + r.start..o * cols + r.end, o * r.len()..(o + 1) * r.len()))
                    .collect()
            }
        };
        for (f, m) in pairs {
            if to_slices {
                mine[m].copy_from_slice(&whole[f]);
            } else {
                whole[f].copy_from_slice(&mine[m]);
            }
        }
    }
    Ok(())
}

/// A worker's slice buffer in the whole layout; every value has exactly one owner (the row-parallel
/// bias lives on worker 0 only).
pub(crate) struct Sliced<'a> {
    pub(crate) maps: &'a Maps,
    pub(crate) layout: &'a ParamLayout,
}

impl crate::parallel::owned::Owned for Sliced<'_> {
    fn write_full(&self, mine: &[f32], full: &mut [f32]) -> Result<(), TrainError> {
        let mut m = mine.to_vec();
        copy(self.maps, self.layout, full, &mut m, false)
    }

    fn read_full(&self, full: &[f32], mine: &mut [f32]) -> Result<(), TrainError> {
        let mut f = full.to_vec();
        copy(self.maps, self.layout, &mut f, mine, true)
    }
}

/// The tensor-parallel strategy of one worker.
pub struct TensorSplit<'c> {
    comm: &'c dyn Communicator,
    net: SplitNet<'c>,
    /// (full-layout entry name, cut, range in `params`).
    maps: Maps,
    model: ModelSpec,
    /// The whole model's layout.
    full: ParamLayout,
    params: Vec<f32>,
    grads: Vec<f32>,
    opt: Box<dyn Optimizer>,
    /// `--on-nonfinite skip`.
    skip_nonfinite: bool,
    loss: SoftmaxCrossEntropy,
    dlogits: Tensor,
    full_bytes: usize,
    /// Phases of the step, for the timeline: forward/backward per segment (`micro` = segment)
    /// and the optimizer on the compute track, gathers and all-reduces on the comm track.
    phases: PhaseLog,
}

impl<'c> TensorSplit<'c> {
    /// The strategy of worker `comm.rank()` of `comm.size()` slices.
    pub fn new(comm: &'c dyn Communicator, run: &TrainConfig, net: &Net) -> Result<TensorSplit<'c>, TrainError> {
        let (split, maps, off) = SplitNet::build(comm, &run.model, 0)?;
        let mults = split.mults();
        tracing::debug!(
            rank = comm.rank(),
            slice_bytes = off * 4,
            full_bytes = net.layout().len() * 4,
            "tensor slices"
        );
        Ok(TensorSplit {
            comm,
            net: split,
            maps,
            model: run.model.clone(),
            full: net.layout().clone(),
            params: vec![0.0; off],
            grads: vec![0.0; off],
            skip_nonfinite: run.on_nonfinite == nonfinite::OnNonFinite::Skip,
            opt: run.optimizer.build_scaled(off, mults)?,
            loss: SoftmaxCrossEntropy::new(),
            dlogits: Tensor::default(),
            full_bytes: net.layout().len() * 4,
            phases: PhaseLog::default(),
        })
    }
}

impl Strategy for TensorSplit<'_> {
    fn init(&mut self, params: &mut [f32]) -> Result<(), TrainError> {
        self.comm.broadcast_into(params, 0)?;
        let full = Net::build(&self.model)?;
        copy(&self.maps, full.layout(), params, &mut self.params, true)
    }

    fn step(
        &mut self,
        _net: &mut Net,
        ctx: &Ctx,
        _params: &mut [f32],
        batch: &Batch,
        lr: f32,
    ) -> Result<StepReport, TrainError> {
        let comm0 = self.net.comm_s;
        self.grads.fill(0.0);
        let logits = self.net.forward(ctx, &self.params, &batch.x, &mut self.phases)?;
        let loss_sum = self.loss.forward(logits, &batch.labels).map_err(crate::net::NetError::Loss)?;
        let stats =
            BatchStats { loss_sum, correct: correct_topk(logits, &batch.labels, 1), samples: batch.labels.len() };
        self.dlogits.resize(logits.shape());
        self.loss.backward(&batch.labels, batch.global.max(1), &mut self.dlogits);
        let mut sink = Flat { params: &self.params, grads: &mut self.grads };
        self.net.backward(ctx, &mut sink, &batch.x, &self.dlogits, false, &mut self.phases)?;
        // `--on-nonfinite skip`: every worker looks at its gradients and all agree.
        let skipped = self.skip_nonfinite && nonfinite::agreed(nonfinite::any_nonfinite(&self.grads), &[self.comm])?;
        let p = self.phases.start();
        if !skipped {
            self.opt.step(&mut self.params, &self.grads, lr);
        }
        self.net.commit_buffers(&mut self.params);
        self.phases.end(Track::Compute, "optimizer", None, p);
        let comm = self.net.comm_s - comm0;
        Ok(StepReport { stats, comm_s: comm, comm_wait_s: comm, skipped })
    }

    fn finish(&mut self, params: &mut [f32]) -> Result<(), TrainError> {
        // The lead's buffer gets the whole net (evaluation, saving), as at a checkpoint.
        self.checkpoint_params(params)
    }

    fn stop_now(&mut self, step: u64, world: usize) -> Result<bool, TrainError> {
        Ok(crate::train::stop::stop_now(self.comm, step, world)?)
    }

    fn state_names(&self) -> Vec<&'static str> {
        self.opt.state().into_iter().map(|s| s.0).collect()
    }

    fn owns_params(&self) -> bool {
        true
    }

    fn own_params(&self) -> Option<&[f32]> {
        Some(&self.params)
    }

    fn checkpoint_params(&mut self, params: &mut [f32]) -> Result<(), TrainError> {
        let owned = Sliced { maps: &self.maps, layout: &self.full };
        let comm = self.comm;
        let full = crate::parallel::owned::gather_full(&owned, &self.params, self.full.len(), true, &mut |v| {
            Ok(comm.all_reduce_into(v)?)
        })?;
        if params.len() == full.len() {
            params.copy_from_slice(&full);
        }
        Ok(())
    }

    fn optimizer_state(&mut self) -> Result<crate::optim::OptimizerState, TrainError> {
        let owned = Sliced { maps: &self.maps, layout: &self.full };
        let comm = self.comm;
        crate::parallel::owned::gather_optimizer(self.opt.as_ref(), &owned, self.full.len(), true, &mut |v| {
            Ok(comm.all_reduce_into(v)?)
        })
    }

    fn restore(&mut self, state: &[(String, Vec<f32>)], steps: u64) -> Result<(), TrainError> {
        crate::parallel::owned::restore_split(
            self.opt.as_mut(),
            &Sliced { maps: &self.maps, layout: &self.full },
            state,
            steps,
        )
    }

    fn record_phases(&mut self) {
        self.phases.enable();
    }

    fn take_phases(&mut self, out: &mut Vec<Span>) {
        self.phases.drain_into(out);
    }

    fn final_events(&self) -> Vec<Event> {
        vec![Event::Split {
            rank: self.comm.rank(),
            param_bytes: self.params.len() * 4,
            full_param_bytes: self.full_bytes,
        }]
    }
}
