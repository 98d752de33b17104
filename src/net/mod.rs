//! `Net`: an ordered list of named layers with shapes inferred and validated when it is built,
//! the `ParamLayout` of its flat parameter buffer, and the activation buffers of one batch.
//!
//! A layer reads the previous layer's output unless its spec names others (`input`, or `inputs`
//! for Add and Concat): the net is then a DAG in topological order (inputs come before the
//! layer). Backward runs the layers in reverse; the gradient of an output read by several layers
//! is the sum of what each gives back (the first writes it, the others add).
//!
//! The net does not own parameters or gradients: callers (the trainer, each parallel worker)
//! own the flat buffers and pass them in, so strategies can slice, reduce and checkpoint them.
//! The loss head is softmax + cross-entropy (fused, numerically stable).

mod build;
pub mod caffe;
mod caffe_error;
pub mod layout;
mod load;
mod params;
pub mod spec;

use crate::layers::join::Join;
use crate::layers::softmax_xent::{correct_topk, SoftmaxCrossEntropy};
use crate::layers::{Ctx, Layer, LayerError};
use crate::tensor::{rng::Rng, Tensor};
pub use layout::{ParamEntry, ParamLayout, ParamMult};
pub use params::{Flat, GradSink, ParamSource};
pub use spec::{LayerSpec, ModelSpec, SpecError, INPUT};
use std::ops::Range;
use thiserror::Error;

/// Errors building or running a net.
#[derive(Debug, Error)]
pub enum NetError {
    /// A layer rejected its configuration or its input shape.
    #[error("layer '{layer}' (#{index}): {source}")]
    Layer {
        /// Layer name.
        layer: String,
        /// Position in the net.
        index: usize,
        /// Cause.
        source: LayerError,
    },
    /// The spec itself is inconsistent (duplicate names, wrong class count, bad input shape).
    #[error("model '{model}': {msg}")]
    Spec {
        /// Model name.
        model: String,
        /// What is wrong, with a hint.
        msg: String,
    },
    /// The loss head rejected logits or labels (e.g. a label ≥ number of classes).
    #[error("loss: {0}")]
    Loss(LayerError),
}

/// Result of one forward/backward pass over a batch (or shard).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BatchStats {
    /// Sum over the samples of the cross-entropy loss.
    pub loss_sum: f64,
    /// Samples whose top-1 prediction is right.
    pub correct: usize,
    /// Samples in the batch.
    pub samples: usize,
}

impl BatchStats {
    /// Adds another batch's counts.
    pub fn add(&mut self, o: &BatchStats) {
        self.loss_sum += o.loss_sum;
        self.correct += o.correct;
        self.samples += o.samples;
    }
}

/// A layer of a net: one input, or several (Add, Concat).
pub enum Node {
    /// A layer of one input.
    One(Box<dyn Layer>),
    /// A layer of several inputs.
    Join(Box<dyn Join>),
}

impl Node {
    fn out_shape(&self) -> Vec<usize> {
        match self {
            Node::One(l) => l.out_shape(),
            Node::Join(j) => j.out_shape(),
        }
    }
    fn params(&self) -> Vec<crate::layers::ParamSpec> {
        match self {
            Node::One(l) => l.params(),
            Node::Join(_) => Vec::new(),
        }
    }
    fn fuse_relu(&mut self, on: bool) -> bool {
        match self {
            Node::One(l) => l.fuse_relu(on),
            Node::Join(j) => j.fuse_relu(on),
        }
    }
}

/// A built network: layers, names, parameter layout and reusable activation buffers.
pub struct Net {
    spec: ModelSpec,
    names: Vec<String>,
    layers: Vec<Node>,
    /// The inputs of each layer: an earlier layer, or `None` for the net's input.
    srcs: Vec<Vec<Option<usize>>>,
    /// Whether each gradient of `dacts` has been written in the current backward.
    written: Vec<bool>,
    /// Gradient of an output that a second reader adds to the first's.
    dscratch: Tensor,
    layout: ParamLayout,
    /// acts[i]: output of layer i, (N, out_i...).
    acts: Vec<Tensor>,
    /// dacts[i]: gradient w.r.t. acts[i].
    dacts: Vec<Tensor>,
    /// Gradient w.r.t. the input of the first layer of a `backward_layers` range.
    dinput: Tensor,
    /// Index of the first layer in the whole model (a segment's), for `Ctx::layer`.
    first_layer: usize,
    loss: SoftmaxCrossEntropy,
    /// Per-layer (forward, backward) seconds summed since `take_layer_times`, when timing is on.
    times: Option<Vec<(f64, f64)>>,
    /// fusable[i]: layer i can run the ReLU i + 1 in its own pass (`Layer::fuse_relu`), which
    /// is the only reader of its output.
    fusable: Vec<bool>,
    /// fused[i]: the last forward over layer i ran ReLU i + 1 inside it. The fused output goes
    /// to acts[i + 1] (acts[i] is left alone) and its gradient from dacts[i + 1] to dacts[i].
    fused: Vec<bool>,
    /// Whether forwards fuse (`set_fusion`).
    fusion: bool,
}

impl Net {
    /// Builds the net, inferring each layer's input shape from the previous one.
    pub fn build(spec: &ModelSpec) -> Result<Net, NetError> {
        Net::build_checked(spec, true)
    }

    /// Builds a part of a net (a model-parallel segment) whose first layer is layer `first` of
    /// the whole model: as `build`, but its output need not be the class scores, and its layers
    /// see their index in the whole model (dropout masks depend on it).
    pub fn build_segment(spec: &ModelSpec, first: usize) -> Result<Net, NetError> {
        let mut net = Net::build_checked(spec, false)?;
        net.first_layer = first;
        Ok(net)
    }

    /// Whether the forwards that follow run a ReLU inside the layer before it where they can.
    /// On by default: the results are bitwise the same either way, and fusing saves one pass
    /// over the activations in forward and one in backward.
    pub fn set_fusion(&mut self, on: bool) {
        self.fusion = on;
    }

    /// The spec it was built from.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The parameter layout.
    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    /// Per-sample input shape.
    pub fn input_shape(&self) -> &[usize] {
        &self.spec.input
    }

    /// Number of layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Layer names in order.
    pub fn layer_names(&self) -> &[String] {
        &self.names
    }

    /// Forward multiply–adds per sample, per layer.
    pub fn flops_per_sample(&self) -> Vec<u64> {
        self.layers.iter().map(|l| if let Node::One(l) = l { l.flops_per_sample() } else { 0 }).collect()
    }

    /// The inputs of layer `i` (an earlier layer, or `None` for the net's input).
    pub fn sources(&self, i: usize) -> &[Option<usize>] {
        &self.srcs[i]
    }

    /// True when the net has buffers (BatchNorm's running statistics).
    pub fn has_buffers(&self) -> bool {
        self.layout.entries().iter().any(|e| e.buffer)
    }

    /// Writes the buffers computed by training forwards since the last call (BatchNorm's running
    /// statistics) into `params`, a flat buffer of this net's layout. Every strategy calls it
    /// after its update; the optimizers leave buffers alone, so the time of the call is free.
    pub fn commit_buffers(&mut self, params: &mut [f32]) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            if let Node::One(l) = l {
                l.commit_buffers(&mut params[self.layout.layer_range(i)]);
            }
        }
    }

    /// Fresh parameters from the layers' PyTorch-default initialisers, drawn in layout order.
    pub fn init_params(&self, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let mut buf = vec![0.0f32; self.layout.len()];
        let mut off = 0;
        for (layer, ls) in self.layers.iter().zip(&self.spec.layers) {
            // The spec's fillers replace the default of the layer's first (weight) and second
            // (bias) parameters; they draw from the same seeded stream, in the same order.
            let mut fillers = ls.fillers().into_iter();
            for p in layer.params() {
                let dst = &mut buf[off..off + p.len()];
                match if p.buffer { None } else { fillers.next().flatten() } {
                    Some(f) => f.init(&p.shape).fill(dst, &mut rng),
                    None => p.init.fill(dst, &mut rng),
                }
                off += p.len();
            }
        }
        buf
    }

    /// Runs forward and returns the logits (N, classes).
    pub fn forward(&mut self, ctx: &Ctx, params: &[f32], x: &Tensor) -> Result<&Tensor, NetError> {
        self.forward_from(ctx, params, x)
    }

    fn forward_from<S: ParamSource + ?Sized>(
        &mut self,
        ctx: &Ctx,
        params: &S,
        x: &Tensor,
    ) -> Result<&Tensor, NetError> {
        self.forward_layers(ctx, params, 0..self.layers.len(), x)
    }

    /// Forward of the layers `range` (a pipeline stage) on `x`, the input of layer `range.start`;
    /// returns the output of layer `range.end - 1`. The activations stay for `backward_layers`.
    pub fn forward_layers<S: ParamSource + ?Sized>(
        &mut self,
        ctx: &Ctx,
        params: &S,
        range: Range<usize>,
        x: &Tensor,
    ) -> Result<&Tensor, NetError> {
        let (first, end) = (range.start, range.end);
        for i in range {
            if i > first && self.fused[i - 1] {
                // This ReLU ran inside layer i - 1.
                continue;
            }
            // Fuse the ReLU that follows when it is in the range too.
            let fuse = self.fusable[i] && self.fusion && i + 1 < end;
            if self.fusable[i] {
                self.layers[i].fuse_relu(fuse);
            }
            self.fused[i] = fuse;
            let (done, rest) = self.acts.split_at_mut(i);
            let out = if fuse { 1 } else { 0 };
            // An input before the range is the range's input `x` (a stage's cut is checked to
            // cross one edge only).
            let pick = |s: &Option<usize>| match s {
                Some(j) if *j >= first => &done[*j],
                _ => x,
            };
            let lctx = Ctx { layer: self.first_layer + i, ..*ctx };
            let clock = self.times.as_ref().map(|_| std::time::Instant::now());
            let r = match &mut self.layers[i] {
                Node::One(l) => l.forward(
                    &lctx,
                    params.params(i, self.layout.layer_range(i)),
                    pick(&self.srcs[i][0]),
                    &mut rest[out],
                ),
                Node::Join(j) => {
                    let xs: Vec<&Tensor> = self.srcs[i].iter().map(pick).collect();
                    j.set_threads(ctx.threads);
                    j.forward(&xs, &mut rest[out])
                }
            };
            r.map_err(|source| NetError::Layer { layer: self.names[i].clone(), index: i, source })?;
            if let (Some(t), Some(c)) = (&mut self.times, clock) {
                t[i].0 += c.elapsed().as_secs_f64();
            }
        }
        Ok(&self.acts[end - 1])
    }

    /// Loss and accuracy of the last forward's logits (the whole net or the last stage), and the
    /// loss gradient (divided by `denom`) ready for `backward_layers`.
    pub fn loss_forward_backward(&mut self, labels: &[u32], denom: usize) -> Result<BatchStats, NetError> {
        let last = self.layers.len() - 1;
        let logits = &self.acts[last];
        let loss_sum = self.loss.forward(logits, labels).map_err(NetError::Loss)?;
        let stats = BatchStats { loss_sum, correct: correct_topk(logits, labels, 1), samples: labels.len() };
        self.dacts[last].resize(self.acts[last].shape());
        self.loss.backward(labels, denom.max(1), &mut self.dacts[last]);
        Ok(stats)
    }

    /// Backward of the layers `range` after `forward_layers` over them (with the same `x`):
    /// ACCUMULATES their parameter gradients through `sink`. `dy` is the gradient of the
    /// output of layer `range.end - 1`; `None` when that is the last layer, whose gradient
    /// `loss_forward_backward` has set. With `input_grad`, returns the gradient of `x`.
    // Long: the reverse sweep over a DAG: gradient slots, fused ReLUs and the per-layer sink calls share the loop
    // state.
    pub fn backward_layers<G: GradSink + ?Sized>(
        &mut self,
        ctx: &Ctx,
        sink: &mut G,
        range: Range<usize>,
        x: &Tensor,
        dy: Option<&Tensor>,
        input_grad: bool,
    ) -> Result<Option<&Tensor>, NetError> {
        let (first, end) = (range.start, range.end);
        let Net {
            layers, srcs, acts, dacts, dinput, dscratch, written, layout, names, first_layer, times, fused, ..
        } = self;
        if let Some(dy) = dy {
            dacts[end - 1].resize(dy.shape());
            dacts[end - 1].data_mut().copy_from_slice(dy.data());
        }
        written[first..end].fill(false);
        written[end - 1] = true;
        let mut input_written = false;
        for i in range.rev() {
            let lctx = Ctx { layer: *first_layer + i, ..*ctx };
            let clock = times.as_ref().map(|_| std::time::Instant::now());
            let (dprev, dcur) = dacts.split_at_mut(i);
            if !written[i] {
                // Read only by layers outside the range: no gradient flows back through it.
                dcur[0].resize(acts[i].shape());
                dcur[0].fill(0.0);
            }
            if i > first && fused[i - 1] {
                // A ReLU run inside layer i - 1: its output's gradient is that layer's (the
                // ReLU is its only reader), which passes it back through the ReLU itself.
                std::mem::swap(&mut dprev[i - 1], &mut dcur[0]);
                written[i - 1] = true;
                sink.done(i);
                continue;
            }
            let dy = &dcur[0];
            // A fused layer's output is the ReLU's.
            let y = &acts[if fused[i] && i + 1 < end { i + 1 } else { i }];
            let (wprev, _) = written.split_at_mut(i);
            let err = |source| NetError::Layer { layer: names[i].clone(), index: i, source };
            let input_of = |s: Option<usize>| match s {
                Some(j) if j >= first => &acts[j],
                _ => x,
            };
            match &mut layers[i] {
                Node::One(l) => {
                    let s = srcs[i][0];
                    let (p, g) = sink.layer(i, layout.layer_range(i));
                    let input = input_of(s);
                    match grad_slot(s, first, input_grad, dprev, wprev, dinput, &mut input_written) {
                        None => l.backward(&lctx, p, g, input, y, dy, None).map_err(err)?,
                        Some((t, w)) if !*w => {
                            l.backward(&lctx, p, g, input, y, dy, Some(t)).map_err(err)?;
                            *w = true;
                        }
                        Some((t, _)) => {
                            l.backward(&lctx, p, g, input, y, dy, Some(dscratch)).map_err(err)?;
                            t.data_mut().iter_mut().zip(dscratch.data()).for_each(|(a, &b)| *a += b);
                        }
                    }
                }
                Node::Join(jn) => {
                    for (k, &s) in srcs[i].iter().enumerate() {
                        let shape = input_of(s).shape();
                        if let Some((t, w)) = grad_slot(s, first, input_grad, dprev, wprev, dinput, &mut input_written)
                        {
                            jn.backward_input(k, shape, y, dy, t, *w);
                            *w = true;
                        }
                    }
                }
            }
            if let (Some(t), Some(c)) = (times.as_mut(), clock) {
                t[i].1 += c.elapsed().as_secs_f64();
            }
            sink.done(i);
        }
        Ok(input_grad.then_some(&*dinput))
    }

    /// Times every layer's forward and backward from now on (`convoy bench --layers`, `plan
    /// calibrate`): one clock read per layer call, only while on.
    pub fn set_layer_timing(&mut self, on: bool) {
        self.times = on.then(|| vec![(0.0, 0.0); self.layers.len()]);
    }

    /// The (forward, backward) seconds of each layer summed since timing was switched on or last
    /// taken, and resets them; empty when timing is off.
    pub fn take_layer_times(&mut self) -> Vec<(f64, f64)> {
        match &mut self.times {
            Some(t) => std::mem::replace(t, vec![(0.0, 0.0); t.len()]),
            None => Vec::new(),
        }
    }

    /// The kind of layer `i` ("conv2d", "add").
    pub fn layer_kind(&self, i: usize) -> &'static str {
        match &self.layers[i] {
            Node::One(l) => l.kind(),
            Node::Join(j) => j.kind(),
        }
    }

    /// The kernel layer `i` runs ("direct-avx512", "im2col+gemm"; empty where there is one way).
    pub fn layer_kernel(&self, i: usize) -> &'static str {
        if i > 0 && self.fused[i - 1] {
            return "fused";
        }
        match &self.layers[i] {
            Node::One(l) => l.kernel(),
            Node::Join(_) => "",
        }
    }

    /// Per-sample output shape of layer `i`.
    pub fn layer_out_shape(&self, i: usize) -> Vec<usize> {
        self.layers[i].out_shape()
    }

    /// Loss and accuracy of a batch without gradients.
    pub fn evaluate(&mut self, ctx: &Ctx, params: &[f32], x: &Tensor, labels: &[u32]) -> Result<BatchStats, NetError> {
        self.evaluate_from(ctx, params, x, labels)
    }

    fn evaluate_from<S: ParamSource + ?Sized>(
        &mut self,
        ctx: &Ctx,
        params: &S,
        x: &Tensor,
        labels: &[u32],
    ) -> Result<BatchStats, NetError> {
        self.forward_from(ctx, params, x)?;
        let logits = &self.acts[self.layers.len() - 1];
        let loss_sum = self.loss.forward(logits, labels).map_err(NetError::Loss)?;
        Ok(BatchStats { loss_sum, correct: correct_topk(logits, labels, 1), samples: labels.len() })
    }

    /// Forward, loss and backward over a batch; ACCUMULATES the parameter gradients into `grads`.
    /// The loss gradient is divided by `denom` (the global batch size), so workers that each
    /// process a shard produce gradients that sum to the global-batch mean.
    pub fn forward_backward(
        &mut self,
        ctx: &Ctx,
        params: &[f32],
        grads: &mut [f32],
        x: &Tensor,
        labels: &[u32],
        denom: usize,
    ) -> Result<BatchStats, NetError> {
        self.forward_backward_into(ctx, &mut Flat { params, grads }, x, labels, denom)
    }

    /// `forward_backward` with parameters and gradients handed out per layer by `sink`. Layers
    /// run last to first; `sink.done(i)` is called right after layer i's gradients are final,
    /// which lets a data-parallel strategy reduce (and update) a bucket while backward continues.
    pub fn forward_backward_into<G: GradSink + ?Sized>(
        &mut self,
        ctx: &Ctx,
        sink: &mut G,
        x: &Tensor,
        labels: &[u32],
        denom: usize,
    ) -> Result<BatchStats, NetError> {
        let all = 0..self.layers.len();
        self.forward_layers(ctx, sink, all.clone(), x)?;
        let stats = self.loss_forward_backward(labels, denom)?;
        self.backward_layers(ctx, sink, all, x, None, false)?;
        Ok(stats)
    }
}

/// Where the gradient of an input `s` of a layer goes in a backward over layers `first..`: the
/// gradient of an earlier layer of the range, or (when asked) of the range's input; with whether
/// it has been written in this pass (a second reader then adds to it).
fn grad_slot<'a>(
    s: Option<usize>,
    first: usize,
    input_grad: bool,
    dprev: &'a mut [Tensor],
    wprev: &'a mut [bool],
    dinput: &'a mut Tensor,
    input_written: &'a mut bool,
) -> Option<(&'a mut Tensor, &'a mut bool)> {
    match s {
        Some(j) if j >= first => Some((&mut dprev[j], &mut wprev[j])),
        _ if input_grad => Some((dinput, input_written)),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
