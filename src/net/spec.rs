//! Declarative model specs: a model is a TOML document (the built-in zoo lives in
//! `src/net/models/*.toml`, users pass `--model path.toml`), turned into layers by `LayerSpec::build_node`.
//!
//! Format (see docs/models.md):
//! ```toml
//! name = "lenet"
//! input = [1, 28, 28]   # per-sample C, H, W
//! classes = 10
//! [[layer]]
//! name = "conv1"        # parameter names are "<name>.weight", "<name>.bias"
//! type = "conv2d"       # conv2d | max_pool2d | avg_pool2d | global_avg_pool | relu | sigmoid | tanh | softmax | flatten
//!                       # | linear | dropout | lrn | batch_norm | scale | pad_channels | add | mul | max | concat
//! out_channels = 32
//! kernel = 5            # or [kh, kw]; also stride, padding, dilation, groups, bias
//! ```
//! Input shapes are inferred layer by layer (no `in_channels`/`in_features`), so a spec cannot
//! disagree with itself; a layer that does not fit its input is an error naming it.

use super::Node;
use crate::layers::{
    activation::{Activation, Kind as ActKind},
    avg_pool::AvgPool2d,
    batch_norm::{BatchNorm, BatchNormConfig},
    conv2d::{Conv2d, Conv2dConfig},
    dropout::Dropout,
    flatten::Flatten,
    join::{Add, Concat, Max, Mul},
    linear::{Linear, LinearConfig},
    lrn::{Lrn, LrnConfig},
    max_pool::{MaxPool2d, PoolConfig},
    relu::Relu,
    scale::{PadChannels, Scale},
    Layer, LayerError,
};
use crate::tensor::init::Filler;
pub use model::{ModelSpec, SpecError, INPUT, ZOO};
use serde::{Deserialize, Serialize};

/// A size given as one number (square) or as `[h, w]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Pair {
    /// The same value for height and width.
    One(usize),
    /// `[height, width]`.
    Two([usize; 2]),
}

impl Pair {
    /// As `[h, w]`.
    pub fn hw(self) -> [usize; 2] {
        match self {
            Pair::One(v) => [v, v],
            Pair::Two(p) => p,
        }
    }
}

fn one() -> Pair {
    Pair::One(1)
}
fn zero() -> Pair {
    Pair::One(0)
}
fn one_usize() -> usize {
    1
}
fn yes() -> bool {
    true
}
fn lrn_size() -> usize {
    5
}
fn lrn_alpha() -> f32 {
    1e-4
}
fn lrn_beta() -> f32 {
    0.75
}
fn lrn_k() -> f32 {
    1.0
}
fn bn_eps() -> f32 {
    1e-5
}
fn bn_momentum() -> f32 {
    0.1
}

/// One layer of a model spec; `type` selects the variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    /// 2-D convolution (PyTorch `nn.Conv2d`).
    Conv2d {
        /// Layer name.
        name: String,
        /// The layer it reads: an earlier layer's name or "input" (default: the previous layer).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
        /// Output channels.
        out_channels: usize,
        /// Kernel size.
        kernel: Pair,
        /// Stride (default 1).
        #[serde(default = "one")]
        stride: Pair,
        /// Zero padding (default 0).
        #[serde(default = "zero")]
        padding: Pair,
        /// Dilation (default 1).
        #[serde(default = "one")]
        dilation: Pair,
        /// Groups (default 1).
        #[serde(default = "one_usize")]
        groups: usize,
        /// Learn a bias (default true).
        #[serde(default = "yes")]
        bias: bool,
        /// Learning-rate multipliers of its parameters in order (weight, bias), Caffe's
        /// `param { lr_mult }`; missing ones are 1, 0 freezes (default: none).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        lr_mult: Vec<f32>,
        /// Weight-decay multipliers, as `lr_mult` (Caffe's `decay_mult`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        decay_mult: Vec<f32>,
        /// Initialiser of the weight (default: PyTorch's), e.g. `{ type = "xavier" }`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        weight_filler: Option<Filler>,
        /// Initialiser of the bias (default: PyTorch's), e.g. `{ type = "constant", value = 0.1 }`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bias_filler: Option<Filler>,
    },
    /// Max pooling (PyTorch `nn.MaxPool2d`).
    MaxPool2d {
        /// Layer name.
        name: String,
        /// The layer it reads: an earlier layer's name or "input" (default: the previous layer).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
        /// Window size.
        kernel: Pair,
        /// Stride (default: the kernel size, as PyTorch).
        stride: Option<Pair>,
        /// Padding (default 0).
        #[serde(default = "zero")]
        padding: Pair,
        /// Round the output size up (Caffe's rule), default false.
        #[serde(default)]
        ceil_mode: bool,
    },
    /// Average pooling (PyTorch `nn.AvgPool2d`, count_include_pad).
    AvgPool2d {
        /// Layer name.
        name: String,
        /// The layer it reads: an earlier layer's name or "input" (default: the previous layer).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
        /// Window size.
        kernel: Pair,
        /// Stride (default: the kernel size).
        stride: Option<Pair>,
        /// Padding (default 0).
        #[serde(default = "zero")]
        padding: Pair,
        /// Round the output size up, default false.
        #[serde(default)]
        ceil_mode: bool,
    },
    /// Rectified linear unit.
    Relu {
        /// Layer name.
        name: String,
        /// The layer it reads: an earlier layer's name or "input" (default: the previous layer).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
    },
    /// Logistic sigmoid.
    Sigmoid {
        /// Layer name.
        name: String,
        /// The layer it reads: an earlier layer's name or "input" (default: the previous layer).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
    },
    /// Hyperbolic tangent.
    Tanh {
        /// Layer name.
        name: String,
        /// The layer it reads: an earlier layer's name or "input" (default: the previous layer).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
    },
    /// Softmax over each sample's values (the loss head has its own; this is for inside a net).
    Softmax {
        /// Layer name.
        name: String,
        /// The layer it reads: an earlier layer's name or "input" (default: the previous layer).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
    },
    /// Global average pooling: (C, H, W) → (C, 1, 1) (PyTorch `AdaptiveAvgPool2d(1)`).
    GlobalAvgPool {
        /// Layer name.
        name: String,
        /// The layer it reads: an earlier layer's name or "input" (default: the previous layer).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
    },
    /// Flatten (N, C, H, W) to (N, C·H·W).
    Flatten {
        /// Layer name.
        name: String,
        /// The layer it reads: an earlier layer's name or "input" (default: the previous layer).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
    },
    /// Fully connected layer (PyTorch `nn.Linear`; flattens its input like Caffe's InnerProduct).
    Linear {
        /// Layer name.
        name: String,
        /// The layer it reads: an earlier layer's name or "input" (default: the previous layer).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
        /// Output features.
        out_features: usize,
        /// Learn a bias (default true).
        #[serde(default = "yes")]
        bias: bool,
        /// Learning-rate multipliers of its parameters in order (weight, bias), Caffe's
        /// `param { lr_mult }`; missing ones are 1, 0 freezes (default: none).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        lr_mult: Vec<f32>,
        /// Weight-decay multipliers, as `lr_mult` (Caffe's `decay_mult`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        decay_mult: Vec<f32>,
        /// Initialiser of the weight (default: PyTorch's), e.g. `{ type = "xavier" }`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        weight_filler: Option<Filler>,
        /// Initialiser of the bias (default: PyTorch's), e.g. `{ type = "constant", value = 0.1 }`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bias_filler: Option<Filler>,
    },
    /// Inverted dropout.
    Dropout {
        /// Layer name.
        name: String,
        /// The layer it reads: an earlier layer's name or "input" (default: the previous layer).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
        /// Drop probability.
        p: f32,
    },
    /// Cross-channel local response normalisation (AlexNet, Caffe `LRN`).
    Lrn {
        /// Layer name.
        name: String,
        /// The layer it reads: an earlier layer's name or "input" (default: the previous layer).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
        /// Channels in the window (odd), default 5.
        #[serde(default = "lrn_size")]
        size: usize,
        /// Scale, default 1e-4.
        #[serde(default = "lrn_alpha")]
        alpha: f32,
        /// Exponent, default 0.75.
        #[serde(default = "lrn_beta")]
        beta: f32,
        /// Additive constant, default 1 (Caffe; AlexNet used 2).
        #[serde(default = "lrn_k")]
        k: f32,
    },
    /// Batch normalisation (PyTorch `nn.BatchNorm2d`/`BatchNorm1d`; under data parallelism
    /// the statistics are those of the global batch unless `--batch-norm local`).
    BatchNorm {
        /// Layer name.
        name: String,
        /// The layer it reads: an earlier layer's name or "input" (default: the previous layer).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
        /// Added to the variance, default 1e-5.
        #[serde(default = "bn_eps")]
        eps: f32,
        /// Weight of a new batch in the running statistics, default 0.1.
        #[serde(default = "bn_momentum")]
        momentum: f32,
        /// Learn a per-channel scale and shift, default true.
        #[serde(default = "yes")]
        affine: bool,
        /// Learning-rate multipliers of its parameters in order (weight, bias), Caffe's
        /// `param { lr_mult }`; missing ones are 1, 0 freezes (default: none).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        lr_mult: Vec<f32>,
        /// Weight-decay multipliers, as `lr_mult` (Caffe's `decay_mult`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        decay_mult: Vec<f32>,
    },
    /// Per-channel scale (and shift): Caffe's Scale layer.
    Scale {
        /// Layer name.
        name: String,
        /// The layer it reads: an earlier layer's name or "input" (default: the previous layer).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
        /// Learn a shift too, default true.
        #[serde(default = "yes")]
        bias: bool,
        /// Learning-rate multipliers of its parameters in order (weight, bias), Caffe's
        /// `param { lr_mult }`; missing ones are 1, 0 freezes (default: none).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        lr_mult: Vec<f32>,
        /// Weight-decay multipliers, as `lr_mult` (Caffe's `decay_mult`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        decay_mult: Vec<f32>,
        /// Initialiser of the scale (default: 1), e.g. `{ type = "xavier" }`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        weight_filler: Option<Filler>,
        /// Initialiser of the shift (default: 0), e.g. `{ type = "constant", value = 0.1 }`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bias_filler: Option<Filler>,
    },
    /// Subsample by `stride` and pad channels with zeros to `out_channels` (ResNet option A shortcut).
    PadChannels {
        /// Layer name.
        name: String,
        /// The layer it reads: an earlier layer's name or "input" (default: the previous layer).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
        /// Output channels (≥ the input's).
        out_channels: usize,
        /// Subsampling stride, default 1.
        #[serde(default = "one_usize")]
        stride: usize,
    },
    /// Element-wise sum of the outputs of `inputs` (a residual connection; Caffe's Eltwise SUM).
    Add {
        /// Layer name.
        name: String,
        /// The layers it adds (earlier layers' names, or "input").
        inputs: Vec<String>,
        /// One coefficient per input: y = Σ coeff_k·x_k (Caffe's `coeff`; default: all 1).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        coeff: Vec<f32>,
    },
    /// Element-wise product of the outputs of `inputs` (Caffe's Eltwise PROD).
    Mul {
        /// Layer name.
        name: String,
        /// The layers it multiplies.
        inputs: Vec<String>,
    },
    /// Element-wise maximum of the outputs of `inputs` (Caffe's Eltwise MAX).
    Max {
        /// Layer name.
        name: String,
        /// The layers it compares.
        inputs: Vec<String>,
    },
    /// Concatenation of the outputs of `inputs` along channels.
    Concat {
        /// Layer name.
        name: String,
        /// The layers it joins, in channel order.
        inputs: Vec<String>,
    },
}

/// `match $spec { <every single-input layer> { input: $i, .. } => $one, <the joins> => $join }`:
/// the one list of the layers that have an `input` field.
macro_rules! by_input {
    ($spec:expr, $i:ident => $one:expr, $join:expr) => {
        match $spec {
            LayerSpec::Conv2d { input: $i, .. }
            | LayerSpec::MaxPool2d { input: $i, .. }
            | LayerSpec::AvgPool2d { input: $i, .. }
            | LayerSpec::Relu { input: $i, .. }
            | LayerSpec::Sigmoid { input: $i, .. }
            | LayerSpec::Tanh { input: $i, .. }
            | LayerSpec::Softmax { input: $i, .. }
            | LayerSpec::GlobalAvgPool { input: $i, .. }
            | LayerSpec::Flatten { input: $i, .. }
            | LayerSpec::Linear { input: $i, .. }
            | LayerSpec::Dropout { input: $i, .. }
            | LayerSpec::Lrn { input: $i, .. }
            | LayerSpec::BatchNorm { input: $i, .. }
            | LayerSpec::Scale { input: $i, .. }
            | LayerSpec::PadChannels { input: $i, .. } => $one,
            LayerSpec::Add { .. } | LayerSpec::Mul { .. } | LayerSpec::Max { .. } | LayerSpec::Concat { .. } => $join,
        }
    };
}

impl LayerSpec {
    /// The layer's name.
    pub fn name(&self) -> &str {
        match self {
            LayerSpec::Conv2d { name, .. }
            | LayerSpec::MaxPool2d { name, .. }
            | LayerSpec::AvgPool2d { name, .. }
            | LayerSpec::Relu { name, .. }
            | LayerSpec::Sigmoid { name, .. }
            | LayerSpec::Tanh { name, .. }
            | LayerSpec::Softmax { name, .. }
            | LayerSpec::GlobalAvgPool { name, .. }
            | LayerSpec::Flatten { name, .. }
            | LayerSpec::Linear { name, .. }
            | LayerSpec::Dropout { name, .. }
            | LayerSpec::Lrn { name, .. }
            | LayerSpec::BatchNorm { name, .. }
            | LayerSpec::Scale { name, .. }
            | LayerSpec::PadChannels { name, .. }
            | LayerSpec::Add { name, .. }
            | LayerSpec::Mul { name, .. }
            | LayerSpec::Max { name, .. }
            | LayerSpec::Concat { name, .. } => name,
        }
    }

    /// The `input` field of a single-input layer (`None` for the joins, which have `inputs`).
    fn input_field(&mut self) -> Option<&mut Option<String>> {
        by_input!(self, input => Some(input), None)
    }

    /// The layers it reads by name ("input" is the net's input); empty: the previous layer.
    pub fn inputs(&self) -> Vec<&str> {
        match self {
            LayerSpec::Add { inputs, .. }
            | LayerSpec::Mul { inputs, .. }
            | LayerSpec::Max { inputs, .. }
            | LayerSpec::Concat { inputs, .. } => inputs.iter().map(String::as_str).collect(),
            _ => by_input!(self, input => input.iter().map(String::as_str).collect(), Vec::new()),
        }
    }

    /// Renames the inputs it reads through `f` (when a model is cut into segments).
    pub fn map_inputs(&mut self, f: &mut dyn FnMut(&str) -> Option<String>) {
        match self {
            LayerSpec::Add { inputs, .. }
            | LayerSpec::Mul { inputs, .. }
            | LayerSpec::Max { inputs, .. }
            | LayerSpec::Concat { inputs, .. } => {
                for i in inputs.iter_mut() {
                    if let Some(n) = f(i) {
                        *i = n;
                    }
                }
            }
            _ => {
                if let Some(Some(i)) = self.input_field() {
                    if let Some(n) = f(i) {
                        *i = n;
                    }
                }
            }
        }
    }

    /// One layer from the TOML of its table (tests, tools).
    pub fn from_toml_fragment(text: &str) -> Result<LayerSpec, SpecError> {
        toml::from_str(text).map_err(|e| SpecError::Parse { origin: "layer".into(), msg: e.to_string() })
    }

    /// Its parameters' learning-rate and weight-decay multipliers (empty: all 1).
    pub fn mults(&self) -> (&[f32], &[f32]) {
        match self {
            LayerSpec::Conv2d { lr_mult, decay_mult, .. }
            | LayerSpec::Linear { lr_mult, decay_mult, .. }
            | LayerSpec::BatchNorm { lr_mult, decay_mult, .. }
            | LayerSpec::Scale { lr_mult, decay_mult, .. } => (lr_mult, decay_mult),
            _ => (&[], &[]),
        }
    }

    /// Its weight and bias fillers (`None`: the layer's default initialisation).
    pub fn fillers(&self) -> [Option<&Filler>; 2] {
        match self {
            LayerSpec::Conv2d { weight_filler, bias_filler, .. }
            | LayerSpec::Linear { weight_filler, bias_filler, .. }
            | LayerSpec::Scale { weight_filler, bias_filler, .. } => [weight_filler.as_ref(), bias_filler.as_ref()],
            _ => [None, None],
        }
    }

    /// True for layers of several inputs (Add, Mul, Max, Concat).
    pub fn is_join(&self) -> bool {
        matches!(self, LayerSpec::Add { .. } | LayerSpec::Mul { .. } | LayerSpec::Max { .. } | LayerSpec::Concat { .. })
    }

    /// Builds the layer for a per-sample input shape, validating the configuration against it.
    pub fn build(&self, in_shape: &[usize]) -> Result<Box<dyn Layer>, LayerError> {
        match self.build_node(&[in_shape.to_vec()])? {
            Node::One(l) => Ok(l),
            Node::Join(j) => Err(LayerError::Config {
                op: j.kind(),
                msg: "has several inputs; hint: build it with build_node".into(),
            }),
        }
    }

    /// Builds the layer for the per-sample shapes of its inputs (one, but for the joins).
    pub fn build_node(&self, in_shapes: &[Vec<usize>]) -> Result<Node, LayerError> {
        let in_shape: &[usize] = if self.is_join() { &[] } else { &in_shapes[0] };
        let pool = |kernel: &Pair, stride: &Option<Pair>, padding: &Pair, ceil_mode: bool| PoolConfig {
            kernel: kernel.hw(),
            stride: stride.unwrap_or(*kernel).hw(),
            padding: padding.hw(),
            ceil_mode,
        };
        let one: Box<dyn Layer> = match self {
            LayerSpec::Conv2d { out_channels, kernel, stride, padding, dilation, groups, bias, .. } => {
                let cfg = Conv2dConfig {
                    out_channels: *out_channels,
                    kernel: kernel.hw(),
                    stride: stride.hw(),
                    padding: padding.hw(),
                    dilation: dilation.hw(),
                    groups: *groups,
                    bias: *bias,
                };
                Box::new(Conv2d::new(cfg, in_shape)?)
            }
            LayerSpec::MaxPool2d { kernel, stride, padding, ceil_mode, .. } => {
                Box::new(MaxPool2d::new(pool(kernel, stride, padding, *ceil_mode), in_shape)?)
            }
            LayerSpec::AvgPool2d { kernel, stride, padding, ceil_mode, .. } => {
                Box::new(AvgPool2d::new(pool(kernel, stride, padding, *ceil_mode), in_shape)?)
            }
            LayerSpec::Relu { .. } => Box::new(Relu::new(in_shape)?),
            LayerSpec::Sigmoid { .. } => Box::new(Activation::new(ActKind::Sigmoid, in_shape)?),
            LayerSpec::Tanh { .. } => Box::new(Activation::new(ActKind::Tanh, in_shape)?),
            LayerSpec::Softmax { .. } => Box::new(Activation::new(ActKind::Softmax, in_shape)?),
            LayerSpec::GlobalAvgPool { .. } => Box::new(Activation::new(ActKind::GlobalAvgPool, in_shape)?),
            LayerSpec::Flatten { .. } => Box::new(Flatten::new(in_shape)?),
            LayerSpec::Linear { out_features, bias, .. } => {
                Box::new(Linear::new(LinearConfig { out_features: *out_features, bias: *bias }, in_shape)?)
            }
            LayerSpec::Dropout { p, .. } => Box::new(Dropout::new(*p, in_shape)?),
            LayerSpec::Lrn { size, alpha, beta, k, .. } => {
                Box::new(Lrn::new(LrnConfig { size: *size, alpha: *alpha, beta: *beta, k: *k }, in_shape)?)
            }
            LayerSpec::BatchNorm { eps, momentum, affine, .. } => {
                Box::new(BatchNorm::new(BatchNormConfig { eps: *eps, momentum: *momentum, affine: *affine }, in_shape)?)
            }
            LayerSpec::Scale { bias, .. } => Box::new(Scale::new(*bias, in_shape)?),
            LayerSpec::PadChannels { out_channels, stride, .. } => {
                Box::new(PadChannels::new(*out_channels, *stride, in_shape)?)
            }
            LayerSpec::Add { coeff, .. } => return Ok(Node::Join(Box::new(Add::weighted(in_shapes, coeff.clone())?))),
            LayerSpec::Mul { .. } => return Ok(Node::Join(Box::new(Mul::new(in_shapes)?))),
            LayerSpec::Max { .. } => return Ok(Node::Join(Box::new(Max::new(in_shapes)?))),
            LayerSpec::Concat { .. } => return Ok(Node::Join(Box::new(Concat::new(in_shapes)?))),
        };
        Ok(Node::One(one))
    }
}

mod model;
