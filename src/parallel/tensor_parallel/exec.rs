//! Runs a tensor-split net (`plan.rs`) on one worker: the segments in order, with the
//! communication between them, and backward in reverse.
//!
//! Forward: a row-parallel segment's output is all-reduced; a sliced output that some reader
//! needs whole is all-gathered once (its readers then take the copy they need).
//! Backward keeps one invariant: the gradient handed to a segment is whole (the same on every
//! worker, or exact for this worker's channels when sliced). A segment that starts with a split
//! layer (Conv2d, column-parallel Linear) gives back a partial sum for its input (its slice of the
//! weights' contribution); those are added up per value and all-reduced once, when the value's
//! producer runs its backward (the adjoint of the all-gather: one all-reduce per gathered value).
//! A sliced value read whole gets back this worker's channels of the whole gradient.

use super::plan::{Form, Read, SegPlan};
use super::{Cut, Maps, SplitPlan, TrainError};
use crate::comm::Communicator;
use crate::layers::join::Join;
use crate::layers::Ctx;
use crate::net::layout::ParamMult;
use crate::net::{Flat, Net, NetError, Node};
use crate::ranges::even_range;
use crate::tensor::Tensor;
use crate::train::events::Track;
use crate::train::timeline::PhaseLog;
use std::ops::Range;
use std::time::Instant;

const TAG_GATHER: u32 = 0x9000_0001;

/// A segment's computation.
enum Op {
    /// A chain of layers, built as a net of its own.
    Chain(Box<Net>),
    /// A layer of several inputs (no parameters).
    Join(Box<dyn Join>, String),
}

/// The gradient of a value being summed in backward: whole contributions (as the value is held)
/// and partial ones (whole-sized, to be all-reduced).
#[derive(Default)]
struct Grad {
    whole: Tensor,
    whole_set: bool,
    partial: Tensor,
    partial_set: bool,
}

/// `dst` = `g` when not `set`, else `dst` += `g`.
fn add_into(dst: &mut Tensor, set: &mut bool, g: &[f32], shape: &[usize]) {
    if *set {
        dst.data_mut().iter_mut().zip(g).for_each(|(d, &v)| *d += v);
    } else {
        dst.resize(shape);
        dst.data_mut().copy_from_slice(g);
        *set = true;
    }
}

impl Grad {
    fn clear(&mut self) {
        self.whole_set = false;
        self.partial_set = false;
    }

    /// Adds `g`, the gradient a reader gives back: `partial` (a sum over the workers), or whole
    /// and, when `read_whole` of a value held as `held`, of every channel.
    fn add(&mut self, g: &Tensor, held: Form, read_whole: bool, partial: bool, w: usize, mp: usize) {
        match (partial, read_whole, held) {
            (true, ..) => add_into(&mut self.partial, &mut self.partial_set, g.data(), g.shape()),
            (false, true, Form::Sliced { channels, .. }) => {
                add_channels(&mut self.whole, &mut self.whole_set, g, channels, even_range(channels, w, mp))
            }
            _ => add_into(&mut self.whole, &mut self.whole_set, g.data(), g.shape()),
        }
    }
}

/// Adds (or writes) channels `r` of `whole` (N, channels, ...) into `dst` (N, r.len(), ...).
fn add_channels(dst: &mut Tensor, set: &mut bool, whole: &Tensor, channels: usize, r: Range<usize>) {
    let n = whole.shape()[0];
    let inner: usize = whole.shape()[2..].iter().product();
    if !*set {
        let mut shape = whole.shape().to_vec();
        shape[1] = r.len();
        dst.resize(&shape);
    }
    let per = r.len() * inner;
    for s in 0..n {
        let src = &whole.data()[(s * channels + r.start) * inner..(s * channels + r.end) * inner];
        let d = &mut dst.data_mut()[s * per..(s + 1) * per];
        if *set {
            d.iter_mut().zip(src).for_each(|(a, &b)| *a += b);
        } else {
            d.copy_from_slice(src);
        }
    }
    *set = true;
}

/// All-gathers channel slices: `mine` is (N, c_w, ...) of this worker; `out` becomes
/// (N, channels, ...).
fn gather_into(comm: &dyn Communicator, mine: &Tensor, channels: usize, out: &mut Tensor) -> Result<(), TrainError> {
    let (w, mp) = (comm.rank(), comm.size());
    let n = mine.shape()[0];
    let inner: usize = mine.shape()[2..].iter().product();
    let mut shape = mine.shape().to_vec();
    shape[1] = channels;
    out.resize(&shape);
    for v in (0..mp).filter(|&v| v != w) {
        comm.send(mine.data(), v, TAG_GATHER)?;
    }
    let mut buf = Vec::new();
    for v in 0..mp {
        let r = even_range(channels, v, mp);
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
    Ok(())
}

/// A segment's output: as held, and its gathered whole copy.
#[derive(Default)]
struct Out {
    y: Tensor,
    whole: Tensor,
}

/// The value `r` reads: the net's input `x`, or an output.
fn value<'a>(outs: &'a [Out], r: &Read, x: &'a Tensor) -> &'a Tensor {
    match r.src {
        None => x,
        Some(j) if r.whole => &outs[j].whole,
        Some(j) => &outs[j].y,
    }
}

/// One worker's tensor-split net.
pub(crate) struct SplitNet<'c> {
    comm: &'c dyn Communicator,
    plans: Vec<SegPlan>,
    ops: Vec<Op>,
    /// Each segment's parameters in the worker's concatenated slice buffer.
    ranges: Vec<Range<usize>>,
    outs: Vec<Out>,
    grads: Vec<Grad>,
    /// The gradient of the net's input.
    dinput: Grad,
    scratch: Tensor,
    /// Seconds spent communicating.
    pub(crate) comm_s: f64,
}

impl<'c> SplitNet<'c> {
    /// Worker `comm.rank()`'s slices of `spec` (a part of a model whose first layer is layer
    /// `first_layer` of the whole); with the maps of its slice buffer and its length.
    pub(crate) fn build(
        comm: &'c dyn Communicator,
        spec: &crate::net::ModelSpec,
        first_layer: usize,
    ) -> Result<(SplitNet<'c>, Maps, usize), TrainError> {
        let (w, mp) = (comm.rank(), comm.size());
        let SplitPlan { segments, cuts } = super::plan(spec, w, mp)?;
        let mut ops = Vec::new();
        let mut ranges = Vec::new();
        let mut maps = Vec::new();
        let mut off = 0;
        for s in &segments {
            let first = first_layer + s.first;
            let layer = &s.spec.layers[0];
            let op = if layer.is_join() {
                let node = layer.build_node(&s.in_shapes).map_err(|source| NetError::Layer {
                    layer: layer.name().to_string(),
                    index: first,
                    source,
                })?;
                let Node::Join(j) = node else {
                    return Err(TrainError::Internal(format!("join '{}' built as a one-input layer", layer.name())));
                };
                ranges.push(off..off);
                Op::Join(j, layer.name().to_string())
            } else {
                let net = Net::build_segment(&s.spec, first)?;
                for e in net.layout().entries() {
                    // Not cut: a whole tensor held by worker 0 alone.
                    let cut = cuts.iter().find(|c| c.0 == e.name).map_or(Cut::Whole, |c| c.1.clone());
                    maps.push((e.name.clone(), cut, off + e.offset..off + e.offset + e.len()));
                }
                ranges.push(off..off + net.layout().len());
                off += net.layout().len();
                Op::Chain(Box::new(net))
            };
            ops.push(op);
        }
        let n = segments.len();
        let net = SplitNet {
            comm,
            plans: segments,
            ops,
            ranges,
            outs: (0..n).map(|_| Out::default()).collect(),
            grads: (0..n).map(|_| Grad::default()).collect(),
            dinput: Grad::default(),
            scratch: Tensor::default(),
            comm_s: 0.0,
        };
        Ok((net, maps, off))
    }

    /// The buffers and the tensors with lr/decay multipliers, in the slice buffer.
    pub(crate) fn mults(&self) -> Vec<(Range<usize>, ParamMult)> {
        let nets =
            self.ops
                .iter()
                .zip(&self.ranges)
                .filter_map(|(o, r)| if let Op::Chain(n) = o { Some((n, r.start)) } else { None });
        nets.flat_map(|(n, off)| {
            n.layout().mult_ranges().into_iter().map(move |(b, m)| (b.start + off..b.end + off, m))
        })
        .collect()
    }

    /// Writes the new buffer values (`Net::commit_buffers`) into `params`, the slice buffer.
    pub(crate) fn commit_buffers(&mut self, params: &mut [f32]) {
        for (o, r) in self.ops.iter_mut().zip(&self.ranges) {
            if let Op::Chain(n) = o {
                n.commit_buffers(&mut params[r.clone()]);
            }
        }
    }

    /// Forward on `x` (whole, the same on every worker) with the slice buffer `params`; returns
    /// the whole output. Phases: forward per segment (`micro` = segment), communication.
    pub(crate) fn forward(
        &mut self,
        ctx: &Ctx,
        params: &[f32],
        x: &Tensor,
        phases: &mut PhaseLog,
    ) -> Result<&Tensor, TrainError> {
        for k in 0..self.ops.len() {
            let (done, rest) = self.outs.split_at_mut(k);
            let out = &mut rest[0];
            let plan = &self.plans[k];
            let p = phases.start();
            match &mut self.ops[k] {
                Op::Chain(net) => {
                    let y = net.forward_layers(
                        ctx,
                        &params[self.ranges[k].clone()],
                        0..net.num_layers(),
                        value(done, &plan.reads[0], x),
                    )?;
                    out.y.resize(y.shape());
                    out.y.data_mut().copy_from_slice(y.data());
                }
                Op::Join(j, name) => {
                    let xs: Vec<&Tensor> = plan.reads.iter().map(|r| value(done, r, x)).collect();
                    j.forward(&xs, &mut out.y).map_err(|source| NetError::Layer {
                        layer: name.clone(),
                        index: plan.first,
                        source,
                    })?;
                }
            }
            phases.end(Track::Compute, "forward", Some(k), p);
            if plan.reduce {
                let (t, p) = (Instant::now(), phases.start());
                self.comm.all_reduce_into(out.y.data_mut())?;
                self.comm_s += t.elapsed().as_secs_f64();
                phases.end(Track::Comm, "allreduce", Some(k), p);
            }
            if let (true, Form::Sliced { channels, .. }) = (plan.gather, plan.out) {
                let (t, p) = (Instant::now(), phases.start());
                gather_into(self.comm, &out.y, channels, &mut out.whole)?;
                self.comm_s += t.elapsed().as_secs_f64();
                phases.end(Track::Comm, "all_gather", Some(k), p);
            }
        }
        let last = self.outs.last().ok_or_else(|| TrainError::Internal("a split net without segments".into()))?;
        Ok(if self.plans[self.plans.len() - 1].gather { &last.whole } else { &last.y })
    }

    /// Backward after `forward` on the same `x`: ACCUMULATES the gradients of the slice buffer
    /// `sink.params` into `sink.grads`; `dy` is the (whole) gradient of the output. With
    /// `input_grad`, returns the whole gradient of `x`.
    pub(crate) fn backward(
        &mut self,
        ctx: &Ctx,
        sink: &mut Flat,
        x: &Tensor,
        dy: &Tensor,
        input_grad: bool,
        phases: &mut PhaseLog,
    ) -> Result<Option<&Tensor>, TrainError> {
        let (w, mp) = (self.comm.rank(), self.comm.size());
        self.grads.iter_mut().for_each(Grad::clear);
        self.dinput.clear();
        let n = self.ops.len();
        self.grads[n - 1].add(dy, self.plans[n - 1].out, true, false, w, mp);
        for k in (0..n).rev() {
            let (before, rest) = self.grads.split_at_mut(k);
            let g = &mut rest[0];
            let plan = &self.plans[k];
            self.comm_s += finish(self.comm, g, plan.out, phases, k)?;
            if !g.whole_set {
                // Read by no one that passes a gradient back (cannot happen in a built net).
                g.whole.resize(self.outs[k].y.shape());
                g.whole.fill(0.0);
            }
            let p = phases.start();
            let outs = &self.outs;
            match &mut self.ops[k] {
                Op::Chain(net) => {
                    let r = &plan.reads[0];
                    let range = self.ranges[k].clone();
                    let mut seg = Flat { params: &sink.params[range.clone()], grads: &mut sink.grads[range] };
                    let want = r.src.is_some() || input_grad;
                    let dx = net.backward_layers(
                        ctx,
                        &mut seg,
                        0..net.num_layers(),
                        value(outs, r, x),
                        Some(&g.whole),
                        want,
                    )?;
                    if let (Some(dx), Some((t, held))) =
                        (dx, target(before, &mut self.dinput, &self.plans, r, input_grad))
                    {
                        t.add(dx, held, r.whole, plan.partial_dx, w, mp);
                    }
                }
                Op::Join(j, _) => {
                    for (i, r) in plan.reads.iter().enumerate() {
                        if let Some((t, held)) = target(before, &mut self.dinput, &self.plans, r, input_grad) {
                            j.backward_input(
                                i,
                                value(outs, r, x).shape(),
                                &outs[k].y,
                                &g.whole,
                                &mut self.scratch,
                                false,
                            );
                            t.add(&self.scratch, held, r.whole, false, w, mp);
                        }
                    }
                }
            }
            phases.end(Track::Compute, "backward", Some(k), p);
        }
        if !input_grad {
            return Ok(None);
        }
        self.comm_s += finish(self.comm, &mut self.dinput, Form::Full, phases, 0)?;
        Ok(Some(&self.dinput.whole))
    }
}

/// Where the gradient of what `r` reads is summed (with how that value is held): an earlier
/// segment's output, or the net's input when its gradient is wanted.
fn target<'a>(
    before: &'a mut [Grad],
    dinput: &'a mut Grad,
    plans: &[SegPlan],
    r: &Read,
    input_grad: bool,
) -> Option<(&'a mut Grad, Form)> {
    match r.src {
        Some(j) => Some((&mut before[j], plans[j].out)),
        None if input_grad => Some((dinput, Form::Full)),
        None => None,
    }
}

/// Makes the gradient `g` of a value held as `held` whole: all-reduces its partial sums and adds
/// them (this worker's channels of them, when sliced). Returns the seconds spent communicating.
fn finish(
    comm: &dyn Communicator,
    g: &mut Grad,
    held: Form,
    phases: &mut PhaseLog,
    k: usize,
) -> Result<f64, TrainError> {
    if !g.partial_set {
        return Ok(0.0);
    }
    let (t, p) = (Instant::now(), phases.start());
    comm.all_reduce_into(g.partial.data_mut())?;
    phases.end(Track::Comm, "allreduce", Some(k), p);
    let secs = t.elapsed().as_secs_f64();
    let Grad { whole, whole_set, partial, .. } = g;
    match held {
        Form::Sliced { channels, .. } => {
            add_channels(whole, whole_set, partial, channels, even_range(channels, comm.rank(), comm.size()))
        }
        Form::Full => add_into(whole, whole_set, partial.data(), partial.shape()),
    }
    g.partial_set = false;
    Ok(secs)
}
