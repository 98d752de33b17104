//! `Net`: an ordered list of named layers with shapes inferred and validated when it is built,
//! the `ParamLayout` of its flat parameter buffer, and the activation buffers of one batch.
//!
//! The net does not own parameters or gradients: callers (the trainer, each parallel worker)
//! own the flat buffers and pass them in, so strategies can slice, reduce and checkpoint them.
//! The loss head is softmax + cross-entropy (fused, numerically stable).

pub mod caffe;
pub mod layout;
pub mod spec;

use crate::layers::softmax_xent::{correct_topk, SoftmaxCrossEntropy};
use crate::layers::{Ctx, Layer, LayerError};
use crate::tensor::{rng::Rng, Tensor};
pub use layout::{ParamEntry, ParamLayout};
pub use spec::{LayerSpec, ModelSpec, SpecError};
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

/// A built network: layers, names, parameter layout and reusable activation buffers.
pub struct Net {
    spec: ModelSpec,
    names: Vec<String>,
    layers: Vec<Box<dyn Layer>>,
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

    fn build_checked(spec: &ModelSpec, classes: bool) -> Result<Net, NetError> {
        let spec_err = |msg: String| NetError::Spec { model: spec.name.clone(), msg };
        // A whole model takes images; a segment may start anywhere (e.g. after Flatten).
        if (classes && spec.input.len() != 3) || spec.input.is_empty() || spec.input.contains(&0) {
            return Err(spec_err(format!("input must be [C, H, W] with positive sizes, got {:?}", spec.input)));
        }
        if spec.layers.is_empty() {
            return Err(spec_err("has no layers; hint: add [[layer]] tables".into()));
        }
        let mut shape = spec.input.clone();
        let mut layers = Vec::with_capacity(spec.layers.len());
        let mut names: Vec<String> = Vec::with_capacity(spec.layers.len());
        for (index, ls) in spec.layers.iter().enumerate() {
            let name = ls.name().to_string();
            if name.is_empty() || name.contains(['.', '/', ' ']) {
                return Err(spec_err(format!("layer #{index} has invalid name '{name}'; hint: use letters, digits, '_' or '-'")));
            }
            if names.contains(&name) {
                return Err(spec_err(format!("two layers are named '{name}'; hint: names must be unique")));
            }
            let layer = ls.build(&shape).map_err(|source| NetError::Layer { layer: name.clone(), index, source })?;
            shape = layer.out_shape();
            layers.push(layer);
            names.push(name);
        }
        if classes && shape != [spec.classes] {
            return Err(spec_err(format!(
                "the last layer outputs per-sample shape {shape:?} but classes = {}; hint: end with a linear layer of out_features = {}",
                spec.classes, spec.classes
            )));
        }
        let layout = ParamLayout::new(
            layers.iter().zip(&names).map(|(l, n)| (n.as_str(), l.params().into_iter().map(|p| (p.name, p.shape)).collect())),
        );
        let n = layers.len();
        Ok(Net {
            spec: spec.clone(),
            names,
            layers,
            layout,
            acts: vec![Tensor::default(); n],
            dacts: vec![Tensor::default(); n],
            dinput: Tensor::default(),
            first_layer: 0,
            loss: SoftmaxCrossEntropy::new(),
        })
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
        self.layers.iter().map(|l| l.flops_per_sample()).collect()
    }

    /// Fresh parameters from the layers' PyTorch-default initialisers, drawn in layout order.
    pub fn init_params(&self, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let mut buf = vec![0.0f32; self.layout.len()];
        let mut off = 0;
        for layer in &self.layers {
            for p in layer.params() {
                p.init.fill(&mut buf[off..off + p.len()], &mut rng);
                off += p.len();
            }
        }
        buf
    }

    /// Runs forward and returns the logits (N, classes).
    pub fn forward(&mut self, ctx: &Ctx, params: &[f32], x: &Tensor) -> Result<&Tensor, NetError> {
        self.forward_from(ctx, params, x)
    }

    fn forward_from<S: ParamSource + ?Sized>(&mut self, ctx: &Ctx, params: &S, x: &Tensor) -> Result<&Tensor, NetError> {
        self.forward_layers(ctx, params, 0..self.layers.len(), x)
    }

    /// Forward of the layers `range` (a pipeline stage) on `x`, the input of layer `range.start`;
    /// returns the output of layer `range.end - 1`. The activations stay for `backward_layers`.
    pub fn forward_layers<S: ParamSource + ?Sized>(&mut self, ctx: &Ctx, params: &S, range: Range<usize>, x: &Tensor) -> Result<&Tensor, NetError> {
        let (first, end) = (range.start, range.end);
        for i in range {
            let (done, rest) = self.acts.split_at_mut(i);
            let input = if i == first { x } else { &done[i - 1] };
            let r = self.layout.layer_range(i);
            let lctx = Ctx { layer: self.first_layer + i, ..*ctx };
            self.layers[i]
                .forward(&lctx, params.params(i, r), input, &mut rest[0])
                .map_err(|source| NetError::Layer { layer: self.names[i].clone(), index: i, source })?;
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
    pub fn backward_layers<G: GradSink + ?Sized>(&mut self, ctx: &Ctx, sink: &mut G, range: Range<usize>, x: &Tensor, dy: Option<&Tensor>, input_grad: bool) -> Result<Option<&Tensor>, NetError> {
        let (first, end) = (range.start, range.end);
        if let Some(dy) = dy {
            self.dacts[end - 1].resize(dy.shape());
            self.dacts[end - 1].data_mut().copy_from_slice(dy.data());
        }
        for i in range.rev() {
            let r = self.layout.layer_range(i);
            let lctx = Ctx { layer: self.first_layer + i, ..*ctx };
            let (dprev, dcur) = self.dacts.split_at_mut(i);
            let input = if i == first { x } else { &self.acts[i - 1] };
            let dx = match (i == first, input_grad) {
                (true, false) => None,
                (true, true) => Some(&mut self.dinput),
                (false, _) => Some(&mut dprev[i - 1]),
            };
            let (p, g) = sink.layer(i, r);
            self.layers[i]
                .backward(&lctx, p, g, input, &self.acts[i], &dcur[0], dx)
                .map_err(|source| NetError::Layer { layer: self.names[i].clone(), index: i, source })?;
            sink.done(i);
        }
        Ok(input_grad.then_some(&self.dinput))
    }

    /// Per-sample output shape of layer `i`.
    pub fn layer_out_shape(&self, i: usize) -> Vec<usize> {
        self.layers[i].out_shape()
    }

    /// Loss and accuracy of a batch without gradients.
    pub fn evaluate(&mut self, ctx: &Ctx, params: &[f32], x: &Tensor, labels: &[u32]) -> Result<BatchStats, NetError> {
        self.evaluate_from(ctx, params, x, labels)
    }

    fn evaluate_from<S: ParamSource + ?Sized>(&mut self, ctx: &Ctx, params: &S, x: &Tensor, labels: &[u32]) -> Result<BatchStats, NetError> {
        self.forward_from(ctx, params, x)?;
        let logits = &self.acts[self.layers.len() - 1];
        let loss_sum = self.loss.forward(logits, labels).map_err(NetError::Loss)?;
        Ok(BatchStats { loss_sum, correct: correct_topk(logits, labels, 1), samples: labels.len() })
    }

    /// Forward, loss and backward over a batch; ACCUMULATES the parameter gradients into `grads`.
    /// The loss gradient is divided by `denom` (the global batch size), so workers that each
    /// process a shard produce gradients that sum to the global-batch mean.
    pub fn forward_backward(&mut self, ctx: &Ctx, params: &[f32], grads: &mut [f32], x: &Tensor, labels: &[u32], denom: usize) -> Result<BatchStats, NetError> {
        self.forward_backward_into(ctx, &mut Flat { params, grads }, x, labels, denom)
    }

    /// `forward_backward` with parameters and gradients handed out per layer by `sink`. Layers
    /// run last to first; `sink.done(i)` is called right after layer i's gradients are final,
    /// which lets a data-parallel strategy reduce (and update) a bucket while backward continues.
    pub fn forward_backward_into<G: GradSink + ?Sized>(&mut self, ctx: &Ctx, sink: &mut G, x: &Tensor, labels: &[u32], denom: usize) -> Result<BatchStats, NetError> {
        let all = 0..self.layers.len();
        self.forward_layers(ctx, sink, all.clone(), x)?;
        let stats = self.loss_forward_backward(labels, denom)?;
        self.backward_layers(ctx, sink, all, x, None, false)?;
        Ok(stats)
    }
}

/// Where forward reads each layer's parameters from.
pub trait ParamSource {
    /// The parameters of layer `i`, whose range in the flat buffer is `range`.
    fn params(&self, i: usize, range: Range<usize>) -> &[f32];
}

impl ParamSource for [f32] {
    fn params(&self, _i: usize, range: Range<usize>) -> &[f32] {
        &self[range]
    }
}

/// Where backward reads parameters and writes gradients, per layer: the whole flat buffers
/// (`Flat`), or pieces of them handed out per layer (a data-parallel strategy gives each bucket
/// away once it is complete).
pub trait GradSink: ParamSource {
    /// The parameters and gradient slice of layer `i` (range `range` of the flat buffers).
    fn layer(&mut self, i: usize, range: Range<usize>) -> (&[f32], &mut [f32]);
    /// Layer `i`'s gradients are final for this pass.
    fn done(&mut self, _i: usize) {}
}

/// Whole flat parameter and gradient buffers.
pub struct Flat<'a> {
    /// Parameters.
    pub params: &'a [f32],
    /// Gradients (accumulated into).
    pub grads: &'a mut [f32],
}

impl ParamSource for Flat<'_> {
    fn params(&self, _i: usize, range: Range<usize>) -> &[f32] {
        &self.params[range]
    }
}

impl GradSink for Flat<'_> {
    fn layer(&mut self, _i: usize, range: Range<usize>) -> (&[f32], &mut [f32]) {
        (&self.params[range.clone()], &mut self.grads[range])
    }
}

#[cfg(test)]
mod tests;
