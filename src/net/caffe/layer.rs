//! One TRAIN-phase layer of a prototxt turned into what convoy builds: a layer spec, the net's
//! input shape, the loss head, or nothing (Accuracy). One function per Caffe layer type; each
//! refuses the fields it does not read, naming the layer and the line.

use super::fields::filler;
use super::text::{err, num, pair, CaffeError, Msg, Value};
use crate::net::spec::{LayerSpec, Pair};

/// A layer being read, with what the net around it has already resolved.
pub(super) struct Layer<'a> {
    pub l: &'a Msg,
    /// Its name (Caffe's, or `layerN` when it has none).
    pub name: String,
    /// Its Caffe type.
    pub ty: &'a str,
    pub line: usize,
    pub origin: &'a str,
    /// Its input by our names when that is not the previous layer's output (the chain default).
    pub from: Option<String>,
    /// Every layer it reads, by our names (the inputs of a join).
    pub reads: Vec<String>,
    /// `param { lr_mult decay_mult }`, one per blob.
    pub lr_mult: Vec<f32>,
    pub decay_mult: Vec<f32>,
    /// The loss head (SoftmaxWithLoss, Accuracy, or a Softmax that nothing reads).
    pub head: bool,
}

/// What a layer becomes (one per layer read: a box for the spec would buy nothing).
#[allow(clippy::large_enum_variant)]
pub(super) enum Built {
    /// A layer of the net.
    Layer(LayerSpec),
    /// The net's per-sample input shape [C, H, W].
    Input(Vec<usize>),
    /// The loss head: no layer may follow.
    Head,
    /// Nothing convoy computes (Accuracy).
    Skipped,
}

/// The fields every layer may have.
const COMMON: [&str; 10] =
    ["name", "type", "bottom", "top", "include", "exclude", "param", "loss_weight", "propagate_down", "phase"];

impl Layer<'_> {
    /// Builds the layer; `data_shape` gives the dataset's per-sample shape for a Data layer.
    pub fn build(
        &self,
        data_shape: &mut dyn FnMut() -> Result<Vec<usize>, String>,
        warn: &mut dyn FnMut(String),
    ) -> Result<Built, CaffeError> {
        match self.ty {
            "Input" => self.input(),
            "MemoryData" => self.memory_data(),
            "Data" => self.data(data_shape, warn),
            "Convolution" => self.convolution(),
            "Pooling" => self.pooling(),
            "InnerProduct" => self.inner_product(),
            "ReLU" | "Sigmoid" | "TanH" | "Dropout" | "Flatten" => self.activation(),
            "LRN" => self.lrn(),
            "BatchNorm" => self.batch_norm(warn),
            "Scale" => self.scale(),
            "Eltwise" => self.eltwise(),
            "Concat" => self.concat(),
            "Softmax" | "SoftmaxWithLoss" => self.softmax(),
            // Skipped: its settings change nothing convoy computes.
            "Accuracy" => {
                self.with("accuracy_param", &["top_k", "axis", "ignore_label"])?;
                Ok(Built::Skipped)
            }
            other => self.err(format!(
                "layer '{}': type '{other}' is not supported yet; hint: convoy reads Input, Data, MemoryData, Convolution, Pooling, InnerProduct, ReLU, Sigmoid, TanH, LRN, Dropout, Flatten, Softmax(WithLoss), Accuracy, BatchNorm, Scale, Eltwise (SUM, PROD, MAX), Concat",
                self.name
            )),
        }
    }

    fn err<T>(&self, msg: impl Into<String>) -> Result<T, CaffeError> {
        err(self.origin, self.line, msg)
    }

    /// Refuses a field of the layer other than the common ones and `extra`.
    fn fields(&self, extra: &[&str]) -> Result<(), CaffeError> {
        let known: Vec<&str> = COMMON.iter().chain(extra).copied().collect();
        self.l.only(&known, self.origin, &format!("layer '{}'", self.name))
    }

    /// The parameter message `field` (empty when absent), refusing a field outside `allowed`.
    fn sub(&self, field: &str, allowed: &[&str]) -> Result<Msg, CaffeError> {
        let p = self.l.msg(field).cloned().unwrap_or_default();
        p.only(allowed, self.origin, &format!("{field} of '{}'", self.name))?;
        Ok(p)
    }

    /// `fields(&[field])`, then `sub(field, allowed)`: a layer with one parameter message.
    fn with(&self, field: &str, allowed: &[&str]) -> Result<Msg, CaffeError> {
        self.fields(&[field])?;
        self.sub(field, allowed)
    }

    fn num<T: std::str::FromStr>(&self, p: &Msg, field: &str) -> Result<Option<T>, CaffeError> {
        num(p, field, self.origin)
    }

    /// A `bias_term` field (`default` when absent).
    fn flag(p: &Msg, field: &str, default: bool) -> bool {
        p.scalar(field).map_or(default, |b| b.0 == "true")
    }

    fn input(&self) -> Result<Built, CaffeError> {
        let shape = self.with("input_param", &["shape"])?.msg("shape").cloned().unwrap_or_default();
        shape.only(&["dim"], self.origin, &format!("input_param shape of '{}'", self.name))?;
        let dims: Vec<usize> = shape
            .all("dim")
            .filter_map(|(v, _)| if let Value::Scalar(s) = v { s.parse().ok() } else { None })
            .collect();
        if dims.len() != 4 {
            return self.err(format!(
                "Input '{}' needs shape {{ dim: N dim: C dim: H dim: W }}, found {} dims",
                self.name,
                dims.len()
            ));
        }
        Ok(Built::Input(dims[1..].to_vec()))
    }

    fn memory_data(&self) -> Result<Built, CaffeError> {
        self.fields(&["memory_data_param", "transform_param"])?;
        let p = self.sub("memory_data_param", &["batch_size", "channels", "height", "width"])?;
        let dims = [self.num(&p, "channels")?, self.num(&p, "height")?, self.num(&p, "width")?];
        let dims = dims
            .into_iter()
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| CaffeError::at(self.origin, self.line, "memory_data_param needs channels, height, width"))?;
        Ok(Built::Input(dims))
    }

    fn data(
        &self,
        data_shape: &mut dyn FnMut() -> Result<Vec<usize>, String>,
        warn: &mut dyn FnMut(String),
    ) -> Result<Built, CaffeError> {
        let (origin, line, name) = (self.origin, self.line, &self.name);
        self.fields(&["data_param", "transform_param"])?;
        // Where the data comes from is --data's business; the old in-data_param transform
        // fields (scale, mean_file, crop_size, mirror) are refused: they belong in
        // transform_param, which is read.
        self.sub("data_param", &["source", "batch_size", "backend", "rand_skip", "prefetch", "force_encoded_color"])?;
        warn(format!("{origin}:{line}: Data layer '{name}': convoy reads --data instead of its source"));
        // Caffe's crop_size 0 (its default) means no crop.
        let transform = self.l.msg("transform_param").cloned().unwrap_or_default();
        let crop: Option<usize> = self.num(&transform, "crop_size")?.filter(|&c| c > 0);
        Ok(Built::Input(match crop {
            // The dataset's channels when it can be opened (Caffe's default, color, else).
            Some(c) => vec![data_shape().map_or(3, |s| s[0]), c, c],
            None => data_shape().map_err(|e| {
                CaffeError::at(origin, line, format!("Data layer '{name}' takes its shape from --data: {e}"))
            })?,
        }))
    }

    fn convolution(&self) -> Result<Built, CaffeError> {
        let p = self.with(
            "convolution_param",
            &[
                "num_output",
                "kernel_size",
                "kernel_h",
                "kernel_w",
                "stride",
                "stride_h",
                "stride_w",
                "pad",
                "pad_h",
                "pad_w",
                "group",
                "bias_term",
                "dilation",
                "weight_filler",
                "bias_filler",
                "engine",
            ],
        )?;
        let origin = self.origin;
        let (weight_filler, bias_filler) = (filler(&p, "weight_filler", origin)?, filler(&p, "bias_filler", origin)?);
        let out: usize = self.num(&p, "num_output")?.ok_or_else(|| {
            CaffeError::at(origin, self.line, format!("Convolution '{}' needs num_output", self.name))
        })?;
        Ok(Built::Layer(LayerSpec::Conv2d {
            name: self.name.clone(),
            input: self.from.clone(),
            out_channels: out,
            kernel: pair(&p, "kernel_size", "kernel", 0, origin)?,
            stride: pair(&p, "stride", "stride", 1, origin)?,
            padding: pair(&p, "pad", "pad", 0, origin)?,
            dilation: Pair::One(self.num(&p, "dilation")?.unwrap_or(1)),
            groups: self.num(&p, "group")?.unwrap_or(1),
            bias: Self::flag(&p, "bias_term", true),
            lr_mult: self.lr_mult.clone(),
            decay_mult: self.decay_mult.clone(),
            weight_filler,
            bias_filler,
        }))
    }

    fn pooling(&self) -> Result<Built, CaffeError> {
        let p = self.with(
            "pooling_param",
            &[
                "pool",
                "kernel_size",
                "kernel_h",
                "kernel_w",
                "stride",
                "stride_h",
                "stride_w",
                "pad",
                "pad_h",
                "pad_w",
                "engine",
            ],
        )?;
        let origin = self.origin;
        let kernel = pair(&p, "kernel_size", "kernel", 0, origin)?;
        let stride = Some(pair(&p, "stride", "stride", 1, origin)?);
        let padding = pair(&p, "pad", "pad", 0, origin)?;
        let (name, input) = (self.name.clone(), self.from.clone());
        Ok(Built::Layer(match p.scalar("pool").map_or("MAX", |s| s.0) {
            "MAX" => LayerSpec::MaxPool2d { name, input, kernel, stride, padding, ceil_mode: true },
            "AVE" => LayerSpec::AvgPool2d { name, input, kernel, stride, padding, ceil_mode: true },
            other => return self.err(format!("pool: {other} is not supported; hint: MAX or AVE")),
        }))
    }

    fn inner_product(&self) -> Result<Built, CaffeError> {
        let p =
            self.with("inner_product_param", &["num_output", "bias_term", "weight_filler", "bias_filler", "axis"])?;
        let origin = self.origin;
        let (weight_filler, bias_filler) = (filler(&p, "weight_filler", origin)?, filler(&p, "bias_filler", origin)?);
        let out: usize = self.num(&p, "num_output")?.ok_or_else(|| {
            CaffeError::at(origin, self.line, format!("InnerProduct '{}' needs num_output", self.name))
        })?;
        Ok(Built::Layer(LayerSpec::Linear {
            name: self.name.clone(),
            input: self.from.clone(),
            out_features: out,
            bias: Self::flag(&p, "bias_term", true),
            lr_mult: self.lr_mult.clone(),
            decay_mult: self.decay_mult.clone(),
            weight_filler,
            bias_filler,
        }))
    }

    /// ReLU, Sigmoid, TanH, Dropout, Flatten: one input, one output, few settings.
    fn activation(&self) -> Result<Built, CaffeError> {
        let (name, input) = (self.name.clone(), self.from.clone());
        Ok(Built::Layer(match self.ty {
            "ReLU" => {
                let p = self.with("relu_param", &["negative_slope", "engine"])?;
                if self.num::<f32>(&p, "negative_slope")?.is_some_and(|s| s != 0.0) {
                    return self.err("ReLU with a negative_slope (leaky) is not supported yet");
                }
                LayerSpec::Relu { name, input }
            }
            "Sigmoid" => {
                self.with("sigmoid_param", &["engine"])?;
                LayerSpec::Sigmoid { name, input }
            }
            "TanH" => {
                self.with("tanh_param", &["engine"])?;
                LayerSpec::Tanh { name, input }
            }
            "Dropout" => {
                let p = self.with("dropout_param", &["dropout_ratio"])?;
                LayerSpec::Dropout { name, input, p: self.num(&p, "dropout_ratio")?.unwrap_or(0.5) }
            }
            _ => {
                let p = self.with("flatten_param", &["axis", "end_axis"])?;
                if self.num::<i64>(&p, "axis")?.is_some_and(|a| a != 1)
                    || self.num::<i64>(&p, "end_axis")?.is_some_and(|a| a != -1)
                {
                    return self.err(format!(
                        "Flatten '{}': only axis 1 to end_axis -1 (C×H×W per sample) is supported",
                        self.name
                    ));
                }
                LayerSpec::Flatten { name, input }
            }
        }))
    }

    fn lrn(&self) -> Result<Built, CaffeError> {
        let p = self.with("lrn_param", &["local_size", "alpha", "beta", "norm_region", "k", "engine"])?;
        if p.scalar("norm_region").is_some_and(|r| r.0 != "ACROSS_CHANNELS") {
            return self.err("LRN norm_region WITHIN_CHANNEL is not supported; hint: ACROSS_CHANNELS");
        }
        Ok(Built::Layer(LayerSpec::Lrn {
            name: self.name.clone(),
            input: self.from.clone(),
            size: self.num(&p, "local_size")?.unwrap_or(5),
            alpha: self.num(&p, "alpha")?.unwrap_or(1.0),
            beta: self.num(&p, "beta")?.unwrap_or(0.75),
            k: self.num(&p, "k")?.unwrap_or(1.0),
        }))
    }

    fn batch_norm(&self, warn: &mut dyn FnMut(String)) -> Result<Built, CaffeError> {
        let p = self.with("batch_norm_param", &["use_global_stats", "moving_average_fraction", "eps"])?;
        let (origin, line, name) = (self.origin, self.line, &self.name);
        if p.scalar("use_global_stats").is_some() {
            warn(format!("{origin}:{line}: layer '{name}': use_global_stats is not applied (convoy normalises with batch statistics in training, running ones in evaluation: Caffe's default)"));
        }
        let fraction: f32 = self.num(&p, "moving_average_fraction")?.unwrap_or(0.999);
        warn(format!("{origin}:{line}: layer '{name}': running statistics are PyTorch's exponential average with momentum {} (1 − moving_average_fraction), not Caffe's normalised sum", 1.0 - fraction));
        // Caffe's BatchNorm "parameters" are its statistics (convoy's buffers, which no optimizer
        // touches): the usual `param { lr_mult: 0 }` blocks say just that.
        if self.lr_mult.iter().any(|&m| m != 0.0) {
            return self.err(format!("BatchNorm '{name}': lr_mult must be 0 (its blobs are running statistics, never learned); hint: learn a scale with a Scale layer"));
        }
        Ok(Built::Layer(LayerSpec::BatchNorm {
            name: name.clone(),
            input: self.from.clone(),
            eps: self.num(&p, "eps")?.unwrap_or(1e-5),
            momentum: 1.0 - fraction,
            affine: false,
            lr_mult: Vec::new(),
            decay_mult: Vec::new(),
        }))
    }

    fn scale(&self) -> Result<Built, CaffeError> {
        let p = self.with("scale_param", &["bias_term", "axis", "num_axes", "filler", "bias_filler"])?;
        if self.num::<i64>(&p, "axis")?.is_some_and(|a| a != 1)
            || self.num::<i64>(&p, "num_axes")?.is_some_and(|a| a != 1)
        {
            return self
                .err(format!("Scale '{}': only per-channel scaling (axis 1, num_axes 1) is supported", self.name));
        }
        Ok(Built::Layer(LayerSpec::Scale {
            name: self.name.clone(),
            input: self.from.clone(),
            bias: Self::flag(&p, "bias_term", false),
            lr_mult: self.lr_mult.clone(),
            decay_mult: self.decay_mult.clone(),
            weight_filler: filler(&p, "filler", self.origin)?,
            bias_filler: filler(&p, "bias_filler", self.origin)?,
        }))
    }

    fn eltwise(&self) -> Result<Built, CaffeError> {
        let p = self.with("eltwise_param", &["operation", "coeff", "stable_prod_grad"])?;
        let origin = self.origin;
        let coeff: Vec<f32> = p
            .all("coeff")
            .map(|(v, l)| match v {
                Value::Scalar(c) => {
                    c.parse().map_err(|_| CaffeError::at(origin, l, format!("'coeff: {c}' is not a valid number")))
                }
                Value::Msg(_) => err(origin, l, "coeff must be a number"),
            })
            .collect::<Result<_, _>>()?;
        let op = p.scalar("operation").map_or("SUM", |o| o.0);
        let n = self.reads.len();
        if !coeff.is_empty() && (op != "SUM" || coeff.len() != n) {
            return self.err(format!(
                "Eltwise '{}': {} coeff values for {n} bottoms of {op}; hint: coeff is for SUM, one per bottom",
                self.name,
                coeff.len()
            ));
        }
        let (name, inputs) = (self.name.clone(), self.reads.clone());
        Ok(Built::Layer(match op {
            "SUM" => {
                LayerSpec::Add { name, inputs, coeff: if coeff.iter().all(|&c| c == 1.0) { Vec::new() } else { coeff } }
            }
            "PROD" => LayerSpec::Mul { name, inputs },
            "MAX" => LayerSpec::Max { name, inputs },
            other => {
                return self.err(format!(
                    "Eltwise '{}': operation {other} is not supported; hint: SUM, PROD or MAX",
                    self.name
                ))
            }
        }))
    }

    fn concat(&self) -> Result<Built, CaffeError> {
        let p = self.with("concat_param", &["axis", "concat_dim"])?;
        if self.num::<i64>(&p, "axis")?.or(self.num::<i64>(&p, "concat_dim")?).is_some_and(|a| a != 1) {
            return self.err(format!("Concat '{}': only along channels (axis 1) is supported", self.name));
        }
        Ok(Built::Layer(LayerSpec::Concat { name: self.name.clone(), inputs: self.reads.clone() }))
    }

    /// Softmax inside the net, or the head (SoftmaxWithLoss, or a Softmax nothing reads).
    fn softmax(&self) -> Result<Built, CaffeError> {
        let (ty, name) = (self.ty, &self.name);
        let extra: &[&str] = if ty == "Softmax" { &["softmax_param"] } else { &["softmax_param", "loss_param"] };
        self.fields(extra)?;
        if self.num::<i64>(&self.sub("softmax_param", &["axis", "engine"])?, "axis")?.is_some_and(|a| a != 1) {
            return self.err(format!("{ty} '{name}': only over channels (axis 1) is supported"));
        }
        let loss = self.sub("loss_param", &["normalization", "normalize"])?;
        if loss.scalar("normalization").is_some_and(|n| n.0 == "NONE")
            || loss.scalar("normalize").is_some_and(|n| n.0 == "false")
        {
            return self.err(format!("{ty} '{name}': a summed (unnormalised) loss is not supported; hint: convoy averages over the batch (normalization: VALID or BATCH_SIZE)"));
        }
        if self.head {
            return Ok(Built::Head);
        }
        Ok(Built::Layer(LayerSpec::Softmax { name: name.clone(), input: self.from.clone() }))
    }
}
