//! Tensor (intra-layer) model parallelism, `--strategy tensor --mp N`: every worker holds a slice
//! of each convolution and fully connected layer and computes its part of every sample.
//!
//! The split, decided per layer while walking the net (`plan`):
//! - Conv2d: split by output channels (worker w keeps channels `chunk_range(C, w, N)`, its
//!   rows of the weight and bias). Its output stays sliced through ReLU and pooling (both per
//!   channel) until a layer needs every channel (the next convolution, Flatten, LRN, Dropout,
//!   the loss): there the slices are all-gathered.
//! - Linear after a full input: column-parallel (rows of the weight, slice of the bias); its
//!   output features stay sliced through ReLU, and the next Linear is row-parallel (the weight's
//!   columns of those features, the bias on worker 0 only) whose partial outputs are summed by an
//!   all-reduce — Megatron-LM's pairing: one all-reduce per pair in forward.
//! - Backward mirrors it: after a gather, the gradient that comes back is each worker's partial
//!   contribution (its slice of the next layer's weights), so it is all-reduced and each worker
//!   keeps its channels; after a row-parallel layer's all-reduce the gradient is already whole
//!   (one all-reduce per pair in backward, at the column-parallel layer's input).
//!
//! The net runs as segments (built as nets of their own) between those communication points; the
//! loss is computed by every worker on the whole logits. Each worker updates its own slices with
//! its own optimizer state — the same update as one worker on the whole batch. At the start each
//! worker cuts its slices out of the run's initial parameters; at the end they are gathered to
//! rank 0, so evaluation and saved weights are those of the whole net under the usual names.

use crate::comm::{chunk_range, Communicator};
use crate::data::loader::Batch;
use crate::layers::softmax_xent::{correct_topk, SoftmaxCrossEntropy};
use crate::layers::Ctx;
use crate::net::layout::ParamMult;
use crate::net::{BatchStats, Flat, LayerSpec, ModelSpec, Net, ParamLayout};
use crate::optim::Optimizer;
use crate::tensor::Tensor;
use crate::train::events::{Event, Track};
use crate::train::timeline::{PhaseLog, Span};
use crate::train::{nonfinite, StepReport, Strategy, TrainConfig, TrainError};
use std::ops::Range;
use std::time::Instant;

const TAG_GATHER: u32 = 0x9000_0001;

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
            return bad(format!("--strategy tensor runs one worker per slice: --workers {workers} but --mp {}; hint: drop --workers", self.mp));
        }
        // Every slice must be possible (the last worker's are the smallest).
        plan(&cfg.model, self.mp - 1, self.mp)?;
        Ok(())
    }
}

/// What happens after a segment.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Boundary {
    /// All-gather the channel (axis 1) slices into the whole tensor of `channels`; `partial`:
    /// the gradient coming back is a partial sum (a sliced layer follows), to be all-reduced.
    Gather { channels: usize, partial: bool },
    /// Sum the partial outputs of a row-parallel layer.
    AllReduce,
    /// The logits are whole.
    End,
}

/// The timeline name of the communication at a boundary after a segment's forward, or before
/// its backward (`None`: nothing is exchanged).
pub(crate) fn comm_phase(after: &Boundary, forward: bool) -> Option<&'static str> {
    match (after, forward) {
        (Boundary::Gather { .. }, true) => Some("all_gather"),
        (Boundary::AllReduce, true) | (Boundary::Gather { partial: true, .. }, false) => Some("allreduce"),
        _ => None,
    }
}

/// Records on the comm track the communication at boundary `after` of segment `k` since `p`.
pub(crate) fn record_comm(phases: &mut PhaseLog, after: &Boundary, forward: bool, k: usize, p: Option<Instant>) {
    if let Some(name) = comm_phase(after, forward) {
        phases.end(Track::Comm, name, Some(k), p);
    }
}

/// How a slice's parameter tensor maps into the full one.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Cut {
    /// Rows `range` of dimension 0.
    Rows(Range<usize>),
    /// Columns `range` of dimension 1 of a 2-D weight.
    Cols(Range<usize>),
    /// The whole tensor.
    Whole,
    /// The whole tensor, held by every worker (a layer computed in full by each, such as batch
    /// norm before any split); `owner` (worker 0) is the one whose copy is gathered.
    Copy {
        /// This worker's copy is gathered.
        owner: bool,
    },
}

/// The slices of one worker: the segments' specs, what follows each, and the cut of every
/// parameter tensor (by full name).
#[derive(Clone, Debug)]
pub struct Plan {
    /// (spec, first layer in the whole model, what follows).
    segments: Vec<(ModelSpec, usize, Boundary)>,
    cuts: Vec<(String, Cut)>,
}

fn chunk(n: usize, w: usize, mp: usize, what: &str, layer: &str) -> Result<Range<usize>, TrainError> {
    let r = chunk_range(n, w, mp);
    if r.is_empty() {
        return Err(TrainError::Config(format!("--mp {mp}: layer '{layer}' has only {n} {what}, fewer than the slices; hint: use a smaller --mp")));
    }
    Ok(r)
}

/// Plans worker `w`'s slices of `spec` for `mp` slices.
pub fn plan(spec: &ModelSpec, w: usize, mp: usize) -> Result<Plan, TrainError> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Full,
        /// Channels of a conv output, sliced.
        Channels(usize),
        /// Features of a column-parallel linear, sliced.
        Features(usize),
    }
    let mut segments = Vec::new();
    let mut cuts = Vec::new();
    let mut cur: Vec<LayerSpec> = Vec::new();
    let mut input = spec.input.clone();
    let mut state = State::Full;
    let mut first = 0;
    // Per-sample shape at the current point of the full net (to know segment inputs).
    let full_net = Net::build_segment(spec, 0)?;
    if let Some(l) = spec.layers.iter().find(|l| !l.inputs().is_empty()) {
        return Err(TrainError::Config(format!(
            "--strategy tensor splits chains of layers; layer '{}' of '{}' reads {:?}; hint: use --strategy allreduce or pipeline for nets with branches",
            l.name(),
            spec.name,
            l.inputs()
        )));
    }
    let seg = |layers: Vec<LayerSpec>, input: Vec<usize>, i: usize| ModelSpec { name: format!("{}-part{i}", spec.name), input, classes: spec.classes, layers };
    for (i, layer) in spec.layers.iter().enumerate() {
        let needs_full = matches!(
            layer,
            LayerSpec::Conv2d { .. } | LayerSpec::Flatten { .. } | LayerSpec::Lrn { .. } | LayerSpec::Dropout { .. } | LayerSpec::Softmax { .. } | LayerSpec::PadChannels { .. } | LayerSpec::Scale { .. }
        )
            || matches!((layer, state), (LayerSpec::Linear { .. }, State::Channels(_)));
        if let (true, State::Channels(c) | State::Features(c)) = (needs_full, state) {
            let n = segments.len();
            segments.push((seg(std::mem::take(&mut cur), input.clone(), n), first, Boundary::Gather { channels: c, partial: true }));
            first = i;
            input = if i == 0 { spec.input.clone() } else { full_net.layer_out_shape(i - 1) };
            state = State::Full;
        }
        let mut l = layer.clone();
        match &mut l {
            LayerSpec::Conv2d { name, out_channels, groups, bias, .. } => {
                if *groups != 1 {
                    return Err(TrainError::Config(format!("--strategy tensor: grouped convolution '{name}' cannot be split by output channels yet; hint: use --strategy allreduce or pipeline")));
                }
                let r = chunk(*out_channels, w, mp, "output channels", name)?;
                cuts.push((format!("{name}.weight"), Cut::Rows(r.clone())));
                if *bias {
                    cuts.push((format!("{name}.bias"), Cut::Rows(r.clone())));
                }
                state = State::Channels(*out_channels);
                *out_channels = r.len();
            }
            LayerSpec::BatchNorm { name, affine, .. } => {
                // Per channel (or feature): a sliced input keeps its slice of every tensor.
                let names: &[&str] = if *affine { &["weight", "bias", "running_mean", "running_var"] } else { &["running_mean", "running_var"] };
                let cut = match state {
                    State::Full => Cut::Copy { owner: w == 0 },
                    State::Channels(c) | State::Features(c) => Cut::Rows(chunk_range(c, w, mp)),
                };
                for t in names {
                    cuts.push((format!("{name}.{t}"), cut.clone()));
                }
                cuts.push((format!("{name}.num_batches_tracked"), Cut::Copy { owner: w == 0 }));
            }
            LayerSpec::Linear { name, out_features, bias, lr_mult, decay_mult, .. } => match state {
                State::Full | State::Channels(_) => {
                    let r = chunk(*out_features, w, mp, "output features", name)?;
                    cuts.push((format!("{name}.weight"), Cut::Rows(r.clone())));
                    if *bias {
                        cuts.push((format!("{name}.bias"), Cut::Rows(r.clone())));
                    }
                    state = State::Features(*out_features);
                    *out_features = r.len();
                }
                State::Features(f) => {
                    let r = chunk_range(f, w, mp);
                    cuts.push((format!("{name}.weight"), Cut::Cols(r)));
                    // The bias is added once, by worker 0.
                    if *bias && w == 0 {
                        cuts.push((format!("{name}.bias"), Cut::Whole));
                    }
                    if *bias && w != 0 {
                        // Without its bias the slice has one parameter: keep the weight's multipliers only.
                        lr_mult.truncate(1);
                        decay_mult.truncate(1);
                    }
                    *bias = *bias && w == 0;
                    cur.push(l);
                    let n = segments.len();
                    segments.push((seg(std::mem::take(&mut cur), input.clone(), n), first, Boundary::AllReduce));
                    first = i + 1;
                    input = full_net.layer_out_shape(i);
                    state = State::Full;
                    continue;
                }
            },
            _ => {}
        }
        cur.push(l);
    }
    let n = segments.len();
    match state {
        // The last layer was row-parallel: its all-reduce makes the logits whole.
        State::Full if cur.is_empty() => {}
        State::Full => segments.push((seg(cur, input, n), first, Boundary::End)),
        State::Channels(c) | State::Features(c) => segments.push((seg(cur, input, n), first, Boundary::Gather { channels: c, partial: false })),
    }
    Ok(Plan { segments, cuts })
}

/// A built segment.
pub(crate) struct Segment {
    pub(crate) net: Net,
    /// Its parameters in the worker's concatenated slice buffer.
    pub(crate) range: Range<usize>,
    pub(crate) after: Boundary,
    /// The input of its last forward.
    pub(crate) input: Tensor,
}

/// The communication after a segment's forward: its output `out` becomes the next input.
pub(crate) fn after_forward(comm: &dyn Communicator, after: &Boundary, out: Tensor, comm_s: &mut f64) -> Result<Tensor, TrainError> {
    let t = Instant::now();
    let next = match after {
        Boundary::Gather { channels, .. } => gather(comm, &out, *channels)?,
        Boundary::AllReduce => {
            let mut o = out;
            comm.all_reduce_into(o.data_mut())?;
            o
        }
        Boundary::End => return Ok(out),
    };
    *comm_s += t.elapsed().as_secs_f64();
    Ok(next)
}

/// The adjoint of `after_forward`: the gradient of the next input `dy` becomes the gradient of
/// the segment's output.
pub(crate) fn before_backward(comm: &dyn Communicator, after: &Boundary, dy: Tensor, comm_s: &mut f64) -> Result<Tensor, TrainError> {
    match after {
        Boundary::Gather { channels, partial } => {
            let t = Instant::now();
            let d = scatter(comm, dy, *channels, *partial)?;
            *comm_s += t.elapsed().as_secs_f64();
            Ok(d)
        }
        Boundary::AllReduce | Boundary::End => Ok(dy),
    }
}

/// All-gathers channel slices: `mine` is (N, c_w, ...) of this worker; returns (N, channels, ...).
fn gather(comm: &dyn Communicator, mine: &Tensor, channels: usize) -> Result<Tensor, TrainError> {
    let (w, mp) = (comm.rank(), comm.size());
    let n = mine.shape()[0];
    let inner: usize = mine.shape()[2..].iter().product();
    let mut shape = mine.shape().to_vec();
    shape[1] = channels;
    let mut out = Tensor::default();
    out.resize(&shape);
    for v in (0..mp).filter(|&v| v != w) {
        comm.send(mine.data(), v, TAG_GATHER)?;
    }
    let mut buf = Vec::new();
    for v in 0..mp {
        let r = chunk_range(channels, v, mp);
        let part: &[f32] = if v == w {
            mine.data()
        } else {
            buf.resize(n * r.len() * inner, 0.0);
            comm.recv(&mut buf, v, TAG_GATHER)?;
            &buf
        };
        let od = out.data_mut();
        for s in 0..n {
            let src = &part[s * r.len() * inner..(s + 1) * r.len() * inner];
            od[(s * channels + r.start) * inner..(s * channels + r.end) * inner].copy_from_slice(src);
        }
    }
    Ok(out)
}

/// This worker's channels of a whole (N, channels, ...) gradient, after summing the partial
/// ones if `partial`.
fn scatter(comm: &dyn Communicator, mut whole: Tensor, channels: usize, partial: bool) -> Result<Tensor, TrainError> {
    if partial {
        comm.all_reduce_into(whole.data_mut())?;
    }
    let r = chunk_range(channels, comm.rank(), comm.size());
    let n = whole.shape()[0];
    let inner: usize = whole.shape()[2..].iter().product();
    let mut shape = whole.shape().to_vec();
    shape[1] = r.len();
    let mut out = Tensor::default();
    out.resize(&shape);
    let od = out.data_mut();
    for s in 0..n {
        od[s * r.len() * inner..(s + 1) * r.len() * inner].copy_from_slice(&whole.data()[(s * channels + r.start) * inner..(s * channels + r.end) * inner]);
    }
    Ok(out)
}

/// A slice buffer's parameter tensors: (full name, cut, range in the slice buffer).
pub(crate) type Maps = Vec<(String, Cut, Range<usize>)>;

/// Worker `w`'s segments (built) and the maps of its concatenated slice buffer.
fn build(spec: &ModelSpec, w: usize, mp: usize) -> Result<(Vec<Segment>, Maps, usize), TrainError> {
    build_from(spec, w, mp, 0)
}

/// `build` for a part of a model whose first layer is layer `first` of the whole.
pub(crate) fn build_from(spec: &ModelSpec, w: usize, mp: usize, first_layer: usize) -> Result<(Vec<Segment>, Maps, usize), TrainError> {
    let plan = plan(spec, w, mp)?;
    let mut segments = Vec::new();
    let mut maps = Vec::new();
    let mut off = 0;
    for (spec, first, after) in plan.segments {
        let net = Net::build_segment(&spec, first_layer + first)?;
        let layout: &ParamLayout = net.layout();
        for e in layout.entries() {
            let cut = plan.cuts.iter().find(|c| c.0 == e.name).map(|c| c.1.clone()).unwrap_or(Cut::Whole);
            maps.push((e.name.clone(), cut, off + e.offset..off + e.offset + e.len()));
        }
        let len = layout.len();
        segments.push(Segment { net, range: off..off + len, after, input: Tensor::default() });
        off += len;
    }
    Ok((segments, maps, off))
}

/// Copies between a full parameter buffer and a slice buffer (`to_slices`: full → slices).
pub(crate) fn copy(maps: &Maps, full_layout: &ParamLayout, full: &mut [f32], slices: &mut [f32], to_slices: bool) -> Result<(), TrainError> {
    for (name, cut, range) in maps {
        let e = full_layout.get(name).ok_or_else(|| TrainError::Internal(format!("tensor slice '{name}' has no full tensor")))?;
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
                (0..e.shape[0]).map(|o| (o * cols + r.start..o * cols + r.end, o * r.len()..(o + 1) * r.len())).collect()
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

impl super::Owned for Sliced<'_> {
    fn to_full(&self, mine: &[f32], full: &mut [f32]) -> Result<(), TrainError> {
        let mut m = mine.to_vec();
        copy(self.maps, self.layout, full, &mut m, false)
    }

    fn from_full(&self, full: &[f32], mine: &mut [f32]) -> Result<(), TrainError> {
        let mut f = full.to_vec();
        copy(self.maps, self.layout, &mut f, mine, true)
    }
}

/// The buffers (batch-norm statistics) and the tensors with lr/decay multipliers of `segments`
/// (`ParamLayout::mult_ranges`) in the buffer they are laid out in.
pub(crate) fn segment_mults(segments: &[Segment]) -> Vec<(Range<usize>, ParamMult)> {
    segments.iter().flat_map(|s| s.net.layout().mult_ranges().into_iter().map(|(b, m)| (b.start + s.range.start..b.end + s.range.start, m))).collect()
}

/// Writes the segments' new buffer values (`Net::commit_buffers`) into `params`.
pub(crate) fn commit_segments(segments: &mut [Segment], params: &mut [f32]) {
    for s in segments {
        s.net.commit_buffers(&mut params[s.range.clone()]);
    }
}

/// The tensor-parallel strategy of one worker.
pub struct TensorSplit<'c> {
    comm: &'c dyn Communicator,
    segments: Vec<Segment>,
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
    logits: Tensor,
    dlogits: Tensor,
    full_bytes: usize,
    comm_s: f64,
    /// Phases of the step, for the timeline: forward/backward per segment (`micro` = segment)
    /// and the optimizer on the compute track, gathers and all-reduces on the comm track.
    phases: PhaseLog,
}

impl<'c> TensorSplit<'c> {
    /// The strategy of worker `comm.rank()` of `comm.size()` slices.
    pub fn new(comm: &'c dyn Communicator, run: &TrainConfig, net: &Net) -> Result<TensorSplit<'c>, TrainError> {
        let (w, mp) = (comm.rank(), comm.size());
        let (segments, maps, off) = build(&run.model, w, mp)?;
        let mults = segment_mults(&segments);
        tracing::debug!(rank = w, slice_bytes = off * 4, full_bytes = net.layout().len() * 4, "tensor slices");
        Ok(TensorSplit {
            comm,
            segments,
            maps,
            model: run.model.clone(),
            full: net.layout().clone(),
            params: vec![0.0; off],
            grads: vec![0.0; off],
            skip_nonfinite: run.on_nonfinite == nonfinite::OnNonFinite::Skip,
            opt: run.optimizer.build_scaled(off, mults)?,
            loss: SoftmaxCrossEntropy::new(),
            logits: Tensor::default(),
            dlogits: Tensor::default(),
            full_bytes: net.layout().len() * 4,
            comm_s: 0.0,
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

    fn step(&mut self, _net: &mut Net, ctx: &Ctx, _params: &mut [f32], batch: &Batch, lr: f32) -> Result<StepReport, TrainError> {
        let comm0 = self.comm_s;
        self.grads.fill(0.0);
        // Forward, segment by segment (the first reads the batch itself; later ones keep their
        // input for backward).
        let mut x = Tensor::default();
        for k in 0..self.segments.len() {
            if k > 0 {
                self.segments[k].input = x;
            }
            let Segment { net, range, after, input } = &mut self.segments[k];
            let input = if k == 0 { &batch.x } else { &*input };
            let p = self.phases.start();
            let out = net.forward_layers(ctx, &self.params[range.clone()], 0..net.num_layers(), input)?.clone();
            self.phases.end(Track::Compute, "forward", Some(k), p);
            let p = self.phases.start();
            x = after_forward(self.comm, after, out, &mut self.comm_s)?;
            record_comm(&mut self.phases, after, true, k, p);
        }
        self.logits = x;
        let loss_sum = self.loss.forward(&self.logits, &batch.labels).map_err(crate::net::NetError::Loss)?;
        let stats = BatchStats { loss_sum, correct: correct_topk(&self.logits, &batch.labels, 1), samples: batch.labels.len() };
        self.dlogits.resize(self.logits.shape());
        self.loss.backward(&batch.labels, batch.global.max(1), &mut self.dlogits);
        // Backward, segment by segment.
        let mut dy = std::mem::take(&mut self.dlogits);
        for k in (0..self.segments.len()).rev() {
            let p = self.phases.start();
            let d = before_backward(self.comm, &self.segments[k].after, dy, &mut self.comm_s)?;
            record_comm(&mut self.phases, &self.segments[k].after, false, k, p);
            let Segment { net, range, input, .. } = &mut self.segments[k];
            let input = if k == 0 { &batch.x } else { &*input };
            let p = self.phases.start();
            let mut sink = Flat { params: &self.params[range.clone()], grads: &mut self.grads[range.clone()] };
            let dx = net.backward_layers(ctx, &mut sink, 0..net.num_layers(), input, Some(&d), k > 0)?;
            self.phases.end(Track::Compute, "backward", Some(k), p);
            dy = dx.cloned().unwrap_or_default();
            self.dlogits = d;
        }
        // `--on-nonfinite skip`: every worker looks at its gradients and all agree.
        let skipped = self.skip_nonfinite && nonfinite::agreed(nonfinite::any_nonfinite(&self.grads), &[self.comm])?;
        let p = self.phases.start();
        if !skipped {
            self.opt.step(&mut self.params, &self.grads, lr);
        }
        commit_segments(&mut self.segments, &mut self.params);
        self.phases.end(Track::Compute, "optimizer", None, p);
        let comm = self.comm_s - comm0;
        Ok(StepReport { stats, comm_s: comm, comm_wait_s: comm, skipped })
    }

    fn finish(&mut self, params: &mut [f32]) -> Result<(), TrainError> {
        // The lead's buffer gets the whole net (evaluation, saving), as at a checkpoint.
        self.checkpoint_params(params)
    }

    fn stop_now(&mut self, step: u64, world: usize) -> Result<bool, TrainError> {
        super::stop_now(self.comm, step, world)
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
        let full = super::gather_full(&owned, &self.params, self.full.len(), true, &mut |v| Ok(comm.all_reduce_into(v)?))?;
        if params.len() == full.len() {
            params.copy_from_slice(&full);
        }
        Ok(())
    }

    fn optimizer_state(&mut self) -> Result<(Vec<(&'static str, Vec<f32>)>, u64), TrainError> {
        let owned = Sliced { maps: &self.maps, layout: &self.full };
        let comm = self.comm;
        super::gather_optimizer(self.opt.as_ref(), &owned, self.full.len(), true, &mut |v| Ok(comm.all_reduce_into(v)?))
    }

    fn restore(&mut self, state: &[(String, Vec<f32>)], steps: u64) -> Result<(), TrainError> {
        super::restore_split(self.opt.as_mut(), &Sliced { maps: &self.maps, layout: &self.full }, state, steps)
    }

    fn record_phases(&mut self) {
        self.phases.enable();
    }

    fn take_phases(&mut self, out: &mut Vec<Span>) {
        self.phases.drain_into(out);
    }

    fn final_events(&self) -> Vec<Event> {
        vec![Event::Split { rank: self.comm.rank(), param_bytes: self.params.len() * 4, full_param_bytes: self.full_bytes }]
    }
}
