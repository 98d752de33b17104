//! Layers: one file each, forward and backward side by side.
//!
//! A layer does not own its parameters. The net keeps ALL parameters in one flat `f32` buffer and
//! ALL gradients in another (`net::ParamLayout`); each layer receives its own contiguous slice
//! `p` (and `dp`) in the order it declared in `params()`. This departs from a `visit_params`
//! callback on purpose: the strategies slice, reduce and checkpoint those two buffers directly,
//! and no step ever copies parameters into or out of layers.
//!
//! Activations are owned by the net, too: `forward` writes into a caller-provided `y` that is
//! resized in place, so a training step allocates nothing once the buffers have grown.
//! `backward` gets `x`, `y` and `dy` back, ACCUMULATES into `dp` (`+=`; the trainer zeroes the
//! gradient buffer between steps) and writes `dx` when asked (the first layer is not asked).

pub mod activation;
pub mod avg_pool;
pub mod batch_norm;
pub mod conv2d;
pub mod dropout;
pub mod flatten;
pub mod geometry;
pub mod gradcheck;
pub mod join;
pub mod linear;
pub mod lrn;
pub mod max_pool;
pub mod relu;
pub mod scale;
pub mod softmax_xent;

pub use crate::tensor::backend::Backend;
use crate::tensor::init::Init;
use crate::tensor::Tensor;
use thiserror::Error;

/// Errors of layer construction (bad configuration or input shape) and of run-time shape checks.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum LayerError {
    /// A configuration that cannot work for this input, e.g. a kernel larger than the padded input.
    #[error("{op}: {msg}")]
    Config {
        /// Layer kind, e.g. "conv2d".
        op: &'static str,
        /// What is wrong, ending with a hint where one helps.
        msg: String,
    },
    /// A tensor whose shape differs from what the layer was built for.
    #[error("{op}: expected input of per-sample shape {expected:?}, got tensor of shape {got:?}")]
    Shape {
        /// Layer kind.
        op: &'static str,
        /// Per-sample shape the layer was built for.
        expected: Vec<usize>,
        /// Full shape of the tensor received (batch first).
        got: Vec<usize>,
    },
}

/// Training or evaluation behaviour (dropout on/off, and batch statistics in later layers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Training: stochastic layers are active.
    Train,
    /// Evaluation: deterministic inference.
    Eval,
}

/// Sums small per-channel vectors over the data-parallel workers that share a batch: how
/// SyncBatchNorm sees the global batch. Every worker calls it in the same order (layer order in
/// forward, the reverse in backward) with the same lengths. In f64, and the same sum (order)
/// on every worker.
pub trait StatSync: Sync {
    /// Replaces `buf` by its element-wise sum over the workers.
    fn all_reduce_sum(&self, buf: &mut [f64]) -> Result<(), String>;
}

/// What a layer may need to know about the step besides its input.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    /// Train or eval.
    pub mode: Mode,
    /// Intra-op threads this layer may use (1 = the calling thread only).
    pub threads: usize,
    /// The library that runs the layers that have a choice (convolutions).
    pub backend: Backend,
    /// Run seed.
    pub seed: u64,
    /// Global optimisation step.
    pub step: u64,
    /// Index of this layer in the net (set by the net), a key for per-layer randomness.
    pub layer: usize,
    /// Global id of each sample in the batch (its index in the dataset), `len == N`. Randomness
    /// is keyed on it, so every parallel strategy draws the same dropout mask for a sample.
    /// Empty means "use the position in the batch".
    pub sample_ids: &'a [u64],
    /// The workers whose shards together form the batch, for batch statistics over all of them
    /// (SyncBatchNorm); `None`: this batch alone.
    pub sync: Option<&'a dyn StatSync>,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("mode", &self.mode)
            .field("threads", &self.threads)
            .field("backend", &self.backend)
            .field("seed", &self.seed)
            .field("step", &self.step)
            .field("layer", &self.layer)
            .field("samples", &self.sample_ids.len())
            .field("sync", &self.sync.is_some())
            .finish()
    }
}

impl Ctx<'_> {
    /// A context for tests and single calls: given mode, one thread, native kernels, seed 0,
    /// step 0.
    pub fn simple(mode: Mode) -> Ctx<'static> {
        Ctx { mode, threads: 1, backend: Backend::Native, seed: 0, step: 0, layer: 0, sample_ids: &[], sync: None }
    }

    /// Global id of batch row `i`.
    pub fn sample_id(&self, i: usize) -> u64 {
        self.sample_ids.get(i).copied().unwrap_or(i as u64)
    }
}

/// One parameter tensor a layer declares: its short name, shape and initialiser.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    /// Short name ("weight", "bias"); the net prefixes the layer name: "conv1.weight".
    pub name: &'static str,
    /// Shape in PyTorch layout, e.g. `[out, in/groups, kh, kw]` for a conv weight.
    pub shape: Vec<usize>,
    /// PyTorch-default initialiser.
    pub init: Init,
    /// A buffer (PyTorch's term: BatchNorm's running statistics), not a parameter: it lives in
    /// the flat buffer and in checkpoints like a parameter, but gets no gradient, the optimizer
    /// never changes it, and the layer itself writes it (`Layer::commit_buffers`).
    pub buffer: bool,
}

impl ParamSpec {
    /// A trainable parameter.
    pub fn param(name: &'static str, shape: Vec<usize>, init: Init) -> ParamSpec {
        ParamSpec { name, shape, init, buffer: false }
    }
    /// A buffer (see `buffer`).
    pub fn buffer(name: &'static str, shape: Vec<usize>, init: Init) -> ParamSpec {
        ParamSpec { name, shape, init, buffer: true }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// True for a zero-size parameter.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A layer of a net. Constructors take the per-sample input shape and validate the configuration
/// against it, so a built net never meets a shape error at run time except for a wrong batch.
pub trait Layer: Send {
    /// Kind name, e.g. "conv2d".
    fn kind(&self) -> &'static str;

    /// Per-sample output shape (no batch dimension), fixed at construction.
    fn out_shape(&self) -> Vec<usize>;

    /// Parameter tensors, in the order they are packed in this layer's slice.
    fn params(&self) -> Vec<ParamSpec> {
        Vec::new()
    }

    /// Forward pass.
    ///
    /// # Shapes
    /// `p`: this layer's parameters, packed; `x`: (N, in...); `y` is resized to (N, out...).
    fn forward(&mut self, ctx: &Ctx, p: &[f32], x: &Tensor, y: &mut Tensor) -> Result<(), LayerError>;

    /// Backward pass: accumulates parameter gradients into `dp` and, when `dx` is given, writes the
    /// input gradient into it (resized to `x`'s shape). `x` and `y` are the tensors of the last
    /// `forward` call with the same batch.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &mut self,
        ctx: &Ctx,
        p: &[f32],
        dp: &mut [f32],
        x: &Tensor,
        y: &Tensor,
        dy: &Tensor,
        dx: Option<&mut Tensor>,
    ) -> Result<(), LayerError>;

    /// Multiply–adds per sample in forward (for balancing pipeline stages and the cost model).
    fn flops_per_sample(&self) -> u64 {
        0
    }

    /// The kernel this layer runs, for per-layer tables ("direct-avx512", "im2col+gemm"); empty
    /// where there is one way only.
    fn kernel(&self) -> &'static str {
        ""
    }

    /// Switches a ReLU fused into this layer's output on or off for the calls that follow, and
    /// says whether this layer can fuse one (false: nothing changes). With it on, `forward`
    /// writes max(y, 0) in the same pass over the data, and `backward` receives that output and
    /// its gradient and blocks the gradient where the output is not positive, bitwise what the
    /// layer followed by a `Relu` computes. The net fuses a `Relu` that is the only reader of
    /// this layer's output (one pass over the activations less each way, docs/engine.md).
    fn fuse_relu(&mut self, _on: bool) -> bool {
        false
    }

    /// Writes the buffers that training forwards have computed since the last call (BatchNorm's
    /// running statistics) into `p`, this layer's slice of the flat buffer. The strategies call
    /// it through `Net::commit_buffers` after each step; a layer without buffers does nothing.
    fn commit_buffers(&mut self, _p: &mut [f32]) {}
}

/// Checks that `x` is (N, sample...) and returns N.
pub fn check_input(op: &'static str, x: &Tensor, sample: &[usize]) -> Result<usize, LayerError> {
    let s = x.shape();
    if s.is_empty() || &s[1..] != sample {
        return Err(LayerError::Shape { op, expected: sample.to_vec(), got: s.to_vec() });
    }
    Ok(s[0])
}

/// Elements below which an element-wise pass stays on the calling thread (a rayon hand-off
/// costs a few microseconds; 16 K floats take about that long).
const PAR_MIN: usize = 1 << 14;

/// Applies `f` to matching chunks of `out` and `a` (equal lengths) on `threads` threads: the
/// element-wise passes (ReLU, batch norm) that would otherwise leave the other cores idle
/// while the convolutions around them use all of them.
pub(crate) fn par_zip2(threads: usize, out: &mut [f32], a: &[f32], f: impl Fn(&mut [f32], &[f32]) + Sync) {
    if threads <= 1 || out.len() < PAR_MIN {
        return f(out, a);
    }
    use rayon::prelude::*;
    let chunk = out.len().div_ceil(threads).next_multiple_of(64);
    out.par_chunks_mut(chunk).zip(a.par_chunks(chunk)).for_each(|(o, x)| f(o, x));
}

/// `par_zip2` with a second input.
pub(crate) fn par_zip3(
    threads: usize,
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    f: impl Fn(&mut [f32], &[f32], &[f32]) + Sync,
) {
    if threads <= 1 || out.len() < PAR_MIN {
        return f(out, a, b);
    }
    use rayon::prelude::*;
    let chunk = out.len().div_ceil(threads).next_multiple_of(64);
    out.par_chunks_mut(chunk).zip(a.par_chunks(chunk)).zip(b.par_chunks(chunk)).for_each(|((o, x), y)| f(o, x, y));
}
