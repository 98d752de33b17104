//! Declarative model specs: a model is a TOML document (the built-in zoo lives in
//! `src/net/models/*.toml`, users pass `--model path.toml`), turned into layers by `build_layer`.
//!
//! Format (see docs/models.md):
//! ```toml
//! name = "lenet"
//! input = [1, 28, 28]   # per-sample C, H, W
//! classes = 10
//! [[layer]]
//! name = "conv1"        # parameter names are "<name>.weight", "<name>.bias"
//! type = "conv2d"       # conv2d | max_pool2d | avg_pool2d | global_avg_pool | relu | sigmoid | tanh | softmax | flatten | linear | dropout | lrn
//! out_channels = 32
//! kernel = 5            # or [kh, kw]; also stride, padding, dilation, groups, bias
//! ```
//! Input shapes are inferred layer by layer (no `in_channels`/`in_features`), so a spec cannot
//! disagree with itself; a layer that does not fit its input is an error naming it.

use crate::layers::{
    activation::{Activation, Kind as ActKind},
    avg_pool::AvgPool2d,
    conv2d::{Conv2d, Conv2dConfig},
    dropout::Dropout,
    flatten::Flatten,
    linear::{Linear, LinearConfig},
    lrn::{Lrn, LrnConfig},
    max_pool::{MaxPool2d, PoolConfig},
    relu::Relu,
    Layer, LayerError,
};
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

/// One layer of a model spec; `type` selects the variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    /// 2-D convolution (PyTorch `nn.Conv2d`).
    Conv2d {
        /// Layer name.
        name: String,
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
    },
    /// Max pooling (PyTorch `nn.MaxPool2d`).
    MaxPool2d {
        /// Layer name.
        name: String,
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
    },
    /// Logistic sigmoid.
    Sigmoid {
        /// Layer name.
        name: String,
    },
    /// Hyperbolic tangent.
    Tanh {
        /// Layer name.
        name: String,
    },
    /// Softmax over each sample's values (the loss head has its own; this is for inside a net).
    Softmax {
        /// Layer name.
        name: String,
    },
    /// Global average pooling: (C, H, W) → (C, 1, 1) (PyTorch `AdaptiveAvgPool2d(1)`).
    GlobalAvgPool {
        /// Layer name.
        name: String,
    },
    /// Flatten (N, C, H, W) to (N, C·H·W).
    Flatten {
        /// Layer name.
        name: String,
    },
    /// Fully connected layer (PyTorch `nn.Linear`; flattens its input like Caffe's InnerProduct).
    Linear {
        /// Layer name.
        name: String,
        /// Output features.
        out_features: usize,
        /// Learn a bias (default true).
        #[serde(default = "yes")]
        bias: bool,
    },
    /// Inverted dropout.
    Dropout {
        /// Layer name.
        name: String,
        /// Drop probability.
        p: f32,
    },
    /// Cross-channel local response normalisation (AlexNet, Caffe `LRN`).
    Lrn {
        /// Layer name.
        name: String,
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
}

impl LayerSpec {
    /// The layer's name.
    pub fn name(&self) -> &str {
        match self {
            LayerSpec::Conv2d { name, .. }
            | LayerSpec::MaxPool2d { name, .. }
            | LayerSpec::AvgPool2d { name, .. }
            | LayerSpec::Relu { name }
            | LayerSpec::Sigmoid { name }
            | LayerSpec::Tanh { name }
            | LayerSpec::Softmax { name }
            | LayerSpec::GlobalAvgPool { name }
            | LayerSpec::Flatten { name }
            | LayerSpec::Linear { name, .. }
            | LayerSpec::Dropout { name, .. }
            | LayerSpec::Lrn { name, .. } => name,
        }
    }

    /// Builds the layer for a per-sample input shape, validating the configuration against it.
    pub fn build(&self, in_shape: &[usize]) -> Result<Box<dyn Layer>, LayerError> {
        let pool = |kernel: &Pair, stride: &Option<Pair>, padding: &Pair, ceil_mode: bool| PoolConfig {
            kernel: kernel.hw(),
            stride: stride.unwrap_or(*kernel).hw(),
            padding: padding.hw(),
            ceil_mode,
        };
        Ok(match self {
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
        })
    }
}

/// A whole model: input shape, number of classes and the ordered layers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Model name.
    pub name: String,
    /// Per-sample input shape [C, H, W].
    pub input: Vec<usize>,
    /// Number of classes (size of the last layer's output).
    pub classes: usize,
    /// Layers in order.
    #[serde(rename = "layer")]
    pub layers: Vec<LayerSpec>,
}

/// Names of the built-in models.
pub const ZOO: &[&str] = &["lenet", "lenet-caffe", "keras-mnist", "alexnet", "alexnet-cifar", "vgg11-cifar"];

fn zoo_source(name: &str) -> Option<&'static str> {
    Some(match name {
        "lenet" => include_str!("models/lenet.toml"),
        "lenet-caffe" => include_str!("models/lenet-caffe.toml"),
        "keras-mnist" => include_str!("models/keras-mnist.toml"),
        "alexnet" => include_str!("models/alexnet.toml"),
        "alexnet-cifar" => include_str!("models/alexnet-cifar.toml"),
        "vgg11-cifar" => include_str!("models/vgg11-cifar.toml"),
        _ => return None,
    })
}

/// Errors reading a model spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Neither a built-in name nor a readable file.
    #[error("unknown model '{0}'; hint: use one of {ZOO:?} or a path to a .toml or Caffe .prototxt model file")]
    Unknown(String),
    /// The file could not be read.
    #[error("cannot read model file {path}: {source}")]
    Io {
        /// File path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A Caffe prototxt that convoy cannot read (the message names the file and line).
    #[error("{0}")]
    Caffe(String),
    /// The TOML does not describe a model (the message carries line and column).
    #[error("model spec {origin}: {msg}")]
    Parse {
        /// File path or zoo name.
        origin: String,
        /// Parser message with the location.
        msg: String,
    },
}

impl ModelSpec {
    /// Parses a TOML model spec; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<ModelSpec, SpecError> {
        toml::from_str(text).map_err(|e| SpecError::Parse { origin: origin.to_string(), msg: e.to_string() })
    }

    /// A built-in model by name, or a `.toml` or Caffe `.prototxt` file by path (a prototxt
    /// with a Data layer cannot be read without its dataset: see `resolve_with`).
    pub fn resolve(name_or_path: &str) -> Result<ModelSpec, SpecError> {
        ModelSpec::resolve_with(name_or_path, &mut || Err("no dataset given; hint: pass --data".into()))
    }

    /// `resolve`, with `data_shape` giving the dataset's per-sample shape for a prototxt's Data
    /// layer. The prototxt's accepted-but-not-applied settings are logged as warnings.
    pub fn resolve_with(name_or_path: &str, data_shape: &mut dyn FnMut() -> Result<Vec<usize>, String>) -> Result<ModelSpec, SpecError> {
        if name_or_path.ends_with(".prototxt") {
            let text = std::fs::read_to_string(name_or_path).map_err(|source| SpecError::Io { path: name_or_path.to_string(), source })?;
            return super::caffe::from_prototxt(&text, name_or_path, data_shape, &mut |w| tracing::warn!("{w}")).map_err(SpecError::Caffe);
        }
        if let Some(src) = zoo_source(name_or_path) {
            return ModelSpec::from_toml(src, name_or_path);
        }
        if name_or_path.ends_with(".toml") {
            let text = std::fs::read_to_string(name_or_path)
                .map_err(|source| SpecError::Io { path: name_or_path.to_string(), source })?;
            return ModelSpec::from_toml(&text, name_or_path);
        }
        Err(SpecError::Unknown(name_or_path.to_string()))
    }
}
