//! Caffe model definitions: `--model net.prototxt` reads a Caffe `NetParameter` in protobuf text
//! format (Intel's multi-node Caffe shipped its models so) into a `ModelSpec`.
//!
//! Supported layer types: Input, Data, MemoryData (the input), Convolution, Pooling (MAX/AVE,
//! Caffe's ceil rounding), InnerProduct, ReLU, LRN (across channels), Dropout, Flatten,
//! BatchNorm (no affine; momentum = 1 − moving_average_fraction), Scale (per channel),
//! Eltwise SUM (our Add), Concat (channels), and the heads Softmax / SoftmaxWithLoss (our loss
//! head) and Accuracy (skipped). `include { phase: TEST }` layers are skipped, `phase: TRAIN`
//! kept. Bottoms and tops become named inputs: a layer reads the layer that last wrote its
//! bottom blob (in-place tops rewrite it), so branches and residual sums map to the net's DAG. The input shape comes from an Input layer, the
//! legacy `input_shape`/`input_dim` fields, `memory_data_param`, or — for a Data layer, whose
//! LMDB convoy does not read — from the dataset given with `--data` (3×crop×crop with a
//! `crop_size`). `param { lr_mult decay_mult }` and weight/bias fillers become the layer spec's
//! `lr_mult`/`decay_mult` and fillers. Accepted but not applied yet, with a warning:
//! `transform_param` scale/mean (convoy's datasets normalise themselves), the Data layer's batch
//! size and source.
//! Anything else — another layer type, an unknown field — is an error naming it and its line.

use super::spec::{LayerSpec, ModelSpec, Pair, INPUT};
use crate::tensor::init::{Filler, VarianceNorm};

/// A parse or mapping error, with its line.
fn err<T>(origin: &str, line: usize, msg: impl Into<String>) -> Result<T, String> {
    Err(format!("{origin}:{line}: {}", msg.into()))
}

/// A field's value.
#[derive(Clone, Debug)]
enum Value {
    Scalar(String),
    Msg(Msg),
}

/// A message: its fields in order, with their lines.
#[derive(Clone, Debug, Default)]
struct Msg {
    fields: Vec<(String, Value, usize)>,
}

impl Msg {
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a Value, usize)> + 'a {
        self.fields.iter().filter(move |f| f.0 == name).map(|f| (&f.1, f.2))
    }

    fn scalar<'a>(&'a self, name: &'a str) -> Option<(&'a str, usize)> {
        self.all(name).find_map(|(v, l)| if let Value::Scalar(s) = v { Some((s.as_str(), l)) } else { None })
    }

    fn msg<'a>(&'a self, name: &'a str) -> Option<&'a Msg> {
        self.all(name).find_map(|(v, _)| if let Value::Msg(m) = v { Some(m) } else { None })
    }

    /// Errors on a field not in `known`.
    fn only(&self, known: &[&str], origin: &str, what: &str) -> Result<(), String> {
        match self.fields.iter().find(|f| !known.contains(&f.0.as_str())) {
            Some((name, _, line)) => err(origin, *line, format!("unknown field '{name}' in {what}; hint: convoy reads {}", known.join(", "))),
            None => Ok(()),
        }
    }
}

/// Tokens of the text format.
#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Colon,
    Open,
    Close,
}

fn lex(text: &str, origin: &str) -> Result<Vec<(Tok, usize)>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(&c) = chars.peek() {
        match c {
            '\n' => {
                line += 1;
                chars.next();
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => {
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            ':' => {
                chars.next();
                out.push((Tok::Colon, line));
            }
            '{' | '<' => {
                chars.next();
                out.push((Tok::Open, line));
            }
            '}' | '>' => {
                chars.next();
                out.push((Tok::Close, line));
            }
            '"' | '\'' => {
                let q = c;
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return err(origin, line, "unterminated string"),
                        Some(c) if c == q => break,
                        Some('\\') => s.push(chars.next().unwrap_or('\\')),
                        Some('\n') => return err(origin, line, "newline in a string"),
                        Some(c) => s.push(c),
                    }
                }
                out.push((Tok::Str(s), line));
            }
            c if c.is_alphanumeric() || "_-+.".contains(c) => {
                let mut s = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_alphanumeric() || "_-+.".contains(c) {
                        s.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push((Tok::Ident(s), line));
            }
            c => return err(origin, line, format!("unexpected character '{c}'")),
        }
    }
    Ok(out)
}

fn parse_msg(toks: &[(Tok, usize)], pos: &mut usize, origin: &str, nested: bool) -> Result<Msg, String> {
    let mut m = Msg::default();
    loop {
        let Some((tok, line)) = toks.get(*pos) else {
            if nested {
                let last = toks.last().map_or(1, |t| t.1);
                return err(origin, last, "missing '}'");
            }
            return Ok(m);
        };
        let line = *line;
        match tok {
            Tok::Close if nested => {
                *pos += 1;
                return Ok(m);
            }
            Tok::Ident(name) => {
                *pos += 1;
                if toks.get(*pos).map(|t| &t.0) == Some(&Tok::Colon) {
                    *pos += 1;
                }
                match toks.get(*pos) {
                    Some((Tok::Open, _)) => {
                        *pos += 1;
                        let sub = parse_msg(toks, pos, origin, true)?;
                        m.fields.push((name.clone(), Value::Msg(sub), line));
                    }
                    Some((Tok::Ident(v) | Tok::Str(v), _)) => {
                        *pos += 1;
                        m.fields.push((name.clone(), Value::Scalar(v.clone()), line));
                    }
                    _ => return err(origin, line, format!("field '{name}' has no value")),
                }
            }
            other => return err(origin, line, format!("expected a field name, found {other:?}")),
        }
    }
}

fn num<T: std::str::FromStr>(m: &Msg, name: &str, origin: &str) -> Result<Option<T>, String> {
    match m.scalar(name) {
        None => Ok(None),
        Some((s, line)) => s.parse().map(Some).map_err(|_| format!("{origin}:{line}: '{name}: {s}' is not a valid number")),
    }
}

/// A spatial parameter given as `one` (e.g. `kernel_size`), or `X_h` and `X_w` (`kernel_h`).
fn pair(m: &Msg, one: &str, name: &str, default: usize, origin: &str) -> Result<Pair, String> {
    let one: Option<usize> = num(m, one, origin)?;
    let h: Option<usize> = num(m, &format!("{name}_h"), origin)?;
    let w: Option<usize> = num(m, &format!("{name}_w"), origin)?;
    Ok(match (one, h, w) {
        (_, Some(h), Some(w)) => Pair::Two([h, w]),
        (Some(v), _, _) => Pair::One(v),
        _ => Pair::One(default),
    })
}

/// A layer's `param { lr_mult decay_mult }` blocks, in order (weight, bias); a list is empty
/// when all its multipliers are 1.
fn param_mults(l: &Msg, origin: &str) -> Result<(Vec<f32>, Vec<f32>), String> {
    let (mut lr, mut decay) = (Vec::new(), Vec::new());
    for (v, line) in l.all("param") {
        let Value::Msg(p) = v else { return err(origin, line, "'param' must be a message: param { lr_mult: 1 decay_mult: 1 }") };
        p.only(&["lr_mult", "decay_mult", "name", "share_mode"], origin, "param")?;
        if let Some((_, line)) = p.scalar("name").or(p.scalar("share_mode")) {
            return err(origin, line, "shared parameters (param { name }) are not supported; hint: remove the name");
        }
        let (l, d): (Option<f32>, Option<f32>) = (num(p, "lr_mult", origin)?, num(p, "decay_mult", origin)?);
        for (what, x) in [("lr_mult", l), ("decay_mult", d)] {
            if x.is_some_and(|x| !(x.is_finite() && x >= 0.0)) {
                return err(origin, line, format!("param {what} {} is invalid; hint: a number ≥ 0", x.unwrap_or(0.0)));
            }
        }
        lr.push(l.unwrap_or(1.0));
        decay.push(d.unwrap_or(1.0));
    }
    // All 1 is the default: an empty list, so the spec reads as one written without them.
    for v in [&mut lr, &mut decay] {
        if v.iter().all(|&x| x == 1.0) {
            v.clear();
        }
    }
    Ok((lr, decay))
}

/// A `FillerParameter` field (`weight_filler { type: "xavier" }`) as a `Filler`.
fn filler(m: &Msg, field: &str, origin: &str) -> Result<Option<Filler>, String> {
    let Some((Value::Msg(f), line)) = m.all(field).next() else { return Ok(None) };
    f.only(&["type", "value", "min", "max", "mean", "std", "variance_norm", "sparse"], origin, field)?;
    let ty = f.scalar("type").map_or("constant", |t| t.0);
    let get = |name: &str, default: f32| -> Result<f32, String> { Ok(num(f, name, origin)?.unwrap_or(default)) };
    let norm = match f.scalar("variance_norm").map(|v| v.0) {
        None | Some("FAN_IN") => VarianceNorm::FanIn,
        Some("FAN_OUT") => VarianceNorm::FanOut,
        Some("AVERAGE") => VarianceNorm::Average,
        Some(other) => return err(origin, line, format!("{field}: variance_norm {other} is not one of FAN_IN, FAN_OUT, AVERAGE")),
    };
    if num::<i64>(f, "sparse", origin)?.is_some_and(|s| s >= 0) {
        return err(origin, line, format!("{field}: sparse gaussian fillers are not supported; hint: remove 'sparse'"));
    }
    let out = match ty {
        "constant" => Filler::Constant { value: get("value", 0.0)? },
        "gaussian" => Filler::Gaussian { mean: get("mean", 0.0)?, std: get("std", 1.0)? },
        "xavier" => Filler::Xavier { variance_norm: norm },
        "msra" => Filler::Msra { variance_norm: norm },
        "uniform" => Filler::Uniform { min: get("min", 0.0)?, max: get("max", 1.0)? },
        other => return err(origin, line, format!("{field}: filler type '{other}' is not supported; hint: constant, gaussian, xavier, msra, uniform")),
    };
    out.validate().map_err(|e| format!("{origin}:{line}: {field}: {e}"))?;
    Ok(Some(out))
}

/// Parses `text` (a NetParameter) into a model spec; `data_shape` gives the dataset's per-sample
/// shape for a Data layer. Warnings (accepted but not applied) go to `warn`.
pub fn from_prototxt(text: &str, origin: &str, data_shape: &mut dyn FnMut() -> Result<Vec<usize>, String>, warn: &mut dyn FnMut(String)) -> Result<ModelSpec, String> {
    let toks = lex(text, origin)?;
    let net = parse_msg(&toks, &mut 0, origin, false)?;
    net.only(&["name", "layer", "layers", "input", "input_shape", "input_dim", "force_backward", "state", "debug_info"], origin, "the net")?;
    if let Some((_, line)) = net.all("layers").next() {
        return err(origin, line, "V1 'layers' definitions are not read; hint: convert with Caffe's upgrade_net_proto_text");
    }
    let name = net.scalar("name").map_or("caffe-net", |s| s.0).to_string();
    let mut input: Option<Vec<usize>> = None;
    if let Some(shape) = net.msg("input_shape") {
        input = Some(shape.all("dim").filter_map(|(v, _)| if let Value::Scalar(s) = v { s.parse().ok() } else { None }).skip(1).collect());
    } else if net.scalar("input_dim").is_some() {
        input = Some(net.all("input_dim").filter_map(|(v, _)| if let Value::Scalar(s) = v { s.parse().ok() } else { None }).skip(1).collect());
    }
    let mut layers: Vec<LayerSpec> = Vec::new();
    let mut classes = None;
    let mut ended = false;
    // Which layer last wrote each blob (in-place layers rewrite theirs); `INPUT` for the data.
    let mut blobs: Vec<(String, String)> = Vec::new();
    for (v, line) in net.all("layer") {
        let Value::Msg(l) = v else { return err(origin, line, "'layer' must be a message") };
        let lname = l.scalar("name").map(|s| s.0.to_string()).unwrap_or_else(|| format!("layer{}", layers.len()));
        let ty = l.scalar("type").map(|s| s.0).ok_or_else(|| format!("{origin}:{line}: layer '{lname}' has no type"))?;
        let phase = l.msg("include").and_then(|i| i.scalar("phase")).map(|p| p.0);
        if phase == Some("TEST") {
            continue;
        }
        let common = ["name", "type", "bottom", "top", "include", "exclude", "param", "loss_weight", "propagate_down", "phase"];
        let known = |extra: &[&'static str]| -> Vec<&'static str> { common.iter().chain(extra).copied().collect() };
        let bottoms: Vec<String> = l.all("bottom").filter_map(|(v, _)| if let Value::Scalar(s) = v { Some(s.clone()) } else { None }).collect();
        let (lr_mult, decay_mult) = param_mults(l, origin)?;
        let is_input = matches!(ty, "Input" | "Data" | "MemoryData");
        let head = matches!(ty, "Accuracy" | "Softmax" | "SoftmaxWithLoss");
        // The layers this one reads, by our names.
        let mut reads: Vec<String> = Vec::new();
        if !is_input && !head {
            if ended {
                return err(origin, line, format!("layer '{lname}' comes after the loss; hint: the loss must be the last layer"));
            }
            for b in &bottoms {
                match blobs.iter().rev().find(|(blob, _)| blob == b) {
                    Some((_, by)) => reads.push(by.clone()),
                    None => return err(origin, line, format!("layer '{lname}' reads blob '{b}', which no earlier layer writes; hint: check its bottom")),
                }
            }
        }
        // A single input that is the previous layer's output is the default (a chain).
        let previous = layers.last().map_or(INPUT.to_string(), |p| p.name().to_string());
        let from = match reads.as_slice() {
            [one] if *one == previous => None,
            [one] => Some(one.clone()),
            _ => None,
        };
        let n_bottoms = |want: usize| -> Result<(), String> {
            if reads.len() != want && !(want == 1 && reads.is_empty()) {
                return err(origin, line, format!("layer '{lname}' ({ty}) reads {} blobs; hint: it takes {want}", reads.len()));
            }
            Ok(())
        };
        let param = |field: &str| l.msg(field).cloned().unwrap_or_default();
        if !is_input && !head && !matches!(ty, "Eltwise" | "Concat") {
            n_bottoms(1)?;
        }
        match ty {
            "Input" => {
                l.only(&known(&["input_param"]), origin, &format!("layer '{lname}'"))?;
                let shape = param("input_param").msg("shape").cloned().unwrap_or_default();
                let dims: Vec<usize> = shape.all("dim").filter_map(|(v, _)| if let Value::Scalar(s) = v { s.parse().ok() } else { None }).collect();
                if dims.len() != 4 {
                    return err(origin, line, format!("Input '{lname}' needs shape {{ dim: N dim: C dim: H dim: W }}, found {} dims", dims.len()));
                }
                input = Some(dims[1..].to_vec());
            }
            "MemoryData" => {
                l.only(&known(&["memory_data_param", "transform_param"]), origin, &format!("layer '{lname}'"))?;
                let p = param("memory_data_param");
                let dims: Vec<Option<usize>> = vec![num(&p, "channels", origin)?, num(&p, "height", origin)?, num(&p, "width", origin)?];
                input = Some(dims.into_iter().collect::<Option<Vec<usize>>>().ok_or_else(|| format!("{origin}:{line}: memory_data_param needs channels, height, width"))?);
            }
            "Data" => {
                l.only(&known(&["data_param", "transform_param"]), origin, &format!("layer '{lname}'"))?;
                warn(format!("{origin}:{line}: Data layer '{lname}': convoy reads --data instead of its source and uses --batch-size; transform_param scale/mean are not applied (the datasets normalise themselves)"));
                let crop: Option<usize> = num(&param("transform_param"), "crop_size", origin)?;
                input = Some(match crop {
                    Some(c) => vec![3, c, c],
                    None => data_shape().map_err(|e| format!("{origin}:{line}: Data layer '{lname}' takes its shape from --data: {e}"))?,
                });
            }
            "Convolution" => {
                l.only(&known(&["convolution_param"]), origin, &format!("layer '{lname}'"))?;
                let p = param("convolution_param");
                p.only(
                    &["num_output", "kernel_size", "kernel_h", "kernel_w", "stride", "stride_h", "stride_w", "pad", "pad_h", "pad_w", "group", "bias_term", "dilation", "weight_filler", "bias_filler", "engine"],
                    origin,
                    &format!("convolution_param of '{lname}'"),
                )?;
                let (weight_filler, bias_filler) = (filler(&p, "weight_filler", origin)?, filler(&p, "bias_filler", origin)?);
                let out: usize = num(&p, "num_output", origin)?.ok_or_else(|| format!("{origin}:{line}: Convolution '{lname}' needs num_output"))?;
                layers.push(LayerSpec::Conv2d {
                    name: lname.clone(),
                    input: from.clone(),
                    out_channels: out,
                    kernel: pair(&p, "kernel_size", "kernel", 0, origin)?,
                    stride: pair(&p, "stride", "stride", 1, origin)?,
                    padding: pair(&p, "pad", "pad", 0, origin)?,
                    dilation: Pair::One(num(&p, "dilation", origin)?.unwrap_or(1)),
                    groups: num(&p, "group", origin)?.unwrap_or(1),
                    bias: p.scalar("bias_term").is_none_or(|b| b.0 == "true"),
                    lr_mult: lr_mult.clone(),
                    decay_mult: decay_mult.clone(),
                    weight_filler,
                    bias_filler,
                });
            }
            "Pooling" => {
                l.only(&known(&["pooling_param"]), origin, &format!("layer '{lname}'"))?;
                let p = param("pooling_param");
                p.only(&["pool", "kernel_size", "kernel_h", "kernel_w", "stride", "stride_h", "stride_w", "pad", "pad_h", "pad_w", "engine"], origin, &format!("pooling_param of '{lname}'"))?;
                let (kernel, stride, padding) = (pair(&p, "kernel_size", "kernel", 0, origin)?, Some(pair(&p, "stride", "stride", 1, origin)?), pair(&p, "pad", "pad", 0, origin)?);
                layers.push(match p.scalar("pool").map_or("MAX", |s| s.0) {
                    "MAX" => LayerSpec::MaxPool2d { name: lname.clone(), input: from.clone(), kernel, stride, padding, ceil_mode: true },
                    "AVE" => LayerSpec::AvgPool2d { name: lname.clone(), input: from.clone(), kernel, stride, padding, ceil_mode: true },
                    other => return err(origin, line, format!("pool: {other} is not supported; hint: MAX or AVE")),
                });
            }
            "InnerProduct" => {
                l.only(&known(&["inner_product_param"]), origin, &format!("layer '{lname}'"))?;
                let p = param("inner_product_param");
                p.only(&["num_output", "bias_term", "weight_filler", "bias_filler", "axis"], origin, &format!("inner_product_param of '{lname}'"))?;
                let (weight_filler, bias_filler) = (filler(&p, "weight_filler", origin)?, filler(&p, "bias_filler", origin)?);
                let out: usize = num(&p, "num_output", origin)?.ok_or_else(|| format!("{origin}:{line}: InnerProduct '{lname}' needs num_output"))?;
                classes = Some(out);
                layers.push(LayerSpec::Linear {
                    name: lname.clone(),
                    input: from.clone(),
                    out_features: out,
                    bias: p.scalar("bias_term").is_none_or(|b| b.0 == "true"),
                    lr_mult: lr_mult.clone(),
                    decay_mult: decay_mult.clone(),
                    weight_filler,
                    bias_filler,
                });
            }
            "ReLU" => {
                l.only(&known(&["relu_param"]), origin, &format!("layer '{lname}'"))?;
                if num::<f32>(&param("relu_param"), "negative_slope", origin)?.is_some_and(|s| s != 0.0) {
                    return err(origin, line, "ReLU with a negative_slope (leaky) is not supported yet");
                }
                layers.push(LayerSpec::Relu { name: lname.clone(), input: None });
            }
            "LRN" => {
                l.only(&known(&["lrn_param"]), origin, &format!("layer '{lname}'"))?;
                let p = param("lrn_param");
                if p.scalar("norm_region").is_some_and(|r| r.0 != "ACROSS_CHANNELS") {
                    return err(origin, line, "LRN norm_region WITHIN_CHANNEL is not supported; hint: ACROSS_CHANNELS");
                }
                layers.push(LayerSpec::Lrn {
                    name: lname.clone(),
                    input: from.clone(),
                    size: num(&p, "local_size", origin)?.unwrap_or(5),
                    alpha: num(&p, "alpha", origin)?.unwrap_or(1.0),
                    beta: num(&p, "beta", origin)?.unwrap_or(0.75),
                    k: num(&p, "k", origin)?.unwrap_or(1.0),
                });
            }
            "Dropout" => {
                l.only(&known(&["dropout_param"]), origin, &format!("layer '{lname}'"))?;
                layers.push(LayerSpec::Dropout { name: lname.clone(), input: from.clone(), p: num(&param("dropout_param"), "dropout_ratio", origin)?.unwrap_or(0.5) });
            }
            "Flatten" => layers.push(LayerSpec::Flatten { name: lname.clone(), input: None }),
            "Sigmoid" => layers.push(LayerSpec::Sigmoid { name: lname.clone(), input: None }),
            "TanH" => layers.push(LayerSpec::Tanh { name: lname.clone(), input: None }),
            "BatchNorm" => {
                l.only(&known(&["batch_norm_param"]), origin, &format!("layer '{lname}'"))?;
                let p = param("batch_norm_param");
                p.only(&["use_global_stats", "moving_average_fraction", "eps"], origin, &format!("batch_norm_param of '{lname}'"))?;
                if p.scalar("use_global_stats").is_some() {
                    warn(format!("{origin}:{line}: layer '{lname}': use_global_stats is not applied (convoy normalises with batch statistics in training, running ones in evaluation: Caffe's default)"));
                }
                let fraction: f32 = num(&p, "moving_average_fraction", origin)?.unwrap_or(0.999);
                warn(format!("{origin}:{line}: layer '{lname}': running statistics are PyTorch's exponential average with momentum {} (1 − moving_average_fraction), not Caffe's normalised sum", 1.0 - fraction));
                // Caffe's BatchNorm "parameters" are its statistics (convoy's buffers, which no
                // optimizer touches): the usual `param { lr_mult: 0 }` blocks say just that.
                if lr_mult.iter().any(|&m| m != 0.0) {
                    return err(origin, line, format!("BatchNorm '{lname}': lr_mult must be 0 (its blobs are running statistics, never learned); hint: learn a scale with a Scale layer"));
                }
                layers.push(LayerSpec::BatchNorm {
                    name: lname.clone(),
                    input: from.clone(),
                    eps: num(&p, "eps", origin)?.unwrap_or(1e-5),
                    momentum: 1.0 - fraction,
                    affine: false,
                    lr_mult: Vec::new(),
                    decay_mult: Vec::new(),
                });
            }
            "Scale" => {
                l.only(&known(&["scale_param"]), origin, &format!("layer '{lname}'"))?;
                let p = param("scale_param");
                p.only(&["bias_term", "axis", "num_axes", "filler", "bias_filler"], origin, &format!("scale_param of '{lname}'"))?;
                if num::<i64>(&p, "axis", origin)?.is_some_and(|a| a != 1) || num::<i64>(&p, "num_axes", origin)?.is_some_and(|a| a != 1) {
                    return err(origin, line, format!("Scale '{lname}': only per-channel scaling (axis 1, num_axes 1) is supported"));
                }
                layers.push(LayerSpec::Scale {
                    name: lname.clone(),
                    input: from.clone(),
                    bias: p.scalar("bias_term").is_some_and(|b| b.0 == "true"),
                    lr_mult: lr_mult.clone(),
                    decay_mult: decay_mult.clone(),
                    weight_filler: filler(&p, "filler", origin)?,
                    bias_filler: filler(&p, "bias_filler", origin)?,
                });
            }
            "Eltwise" => {
                l.only(&known(&["eltwise_param"]), origin, &format!("layer '{lname}'"))?;
                let p = param("eltwise_param");
                p.only(&["operation", "coeff", "stable_prod_grad"], origin, &format!("eltwise_param of '{lname}'"))?;
                if p.scalar("operation").is_some_and(|o| o.0 != "SUM") {
                    return err(origin, line, format!("Eltwise '{lname}': operation {} is not supported; hint: SUM", p.scalar("operation").map_or("", |o| o.0)));
                }
                if p.all("coeff").any(|(v, _)| !matches!(v, Value::Scalar(c) if c.parse::<f32>() == Ok(1.0))) {
                    return err(origin, line, format!("Eltwise '{lname}': coefficients other than 1 are not supported"));
                }
                layers.push(LayerSpec::Add { name: lname.clone(), inputs: reads.clone() });
            }
            "Concat" => {
                l.only(&known(&["concat_param"]), origin, &format!("layer '{lname}'"))?;
                let p = param("concat_param");
                p.only(&["axis", "concat_dim"], origin, &format!("concat_param of '{lname}'"))?;
                if num::<i64>(&p, "axis", origin)?.or(num::<i64>(&p, "concat_dim", origin)?).is_some_and(|a| a != 1) {
                    return err(origin, line, format!("Concat '{lname}': only along channels (axis 1) is supported"));
                }
                layers.push(LayerSpec::Concat { name: lname.clone(), inputs: reads.clone() });
            }
            "Softmax" | "SoftmaxWithLoss" => ended = true,
            "Accuracy" => {}
            other => {
                return err(
                    origin,
                    line,
                    format!("layer '{lname}': type '{other}' is not supported yet; hint: convoy reads Input, Data, MemoryData, Convolution, Pooling, InnerProduct, ReLU, Sigmoid, TanH, LRN, Dropout, Flatten, Softmax(WithLoss), Accuracy, BatchNorm, Scale, Eltwise (SUM), Concat"),
                )
            }
        }
        if is_input {
            if let Some(t) = l.all("top").find_map(|(v, _)| if let Value::Scalar(s) = v { Some(s.clone()) } else { None }) {
                blobs.push((t, INPUT.to_string()));
            }
        } else if !head {
            for (v, _) in l.all("top") {
                if let Value::Scalar(t) = v {
                    blobs.push((t.clone(), lname.clone()));
                }
            }
        }
    }
    let input = input.ok_or_else(|| format!("{origin}: no input shape; hint: add an Input layer (input_param {{ shape {{ dim: 1 dim: C dim: H dim: W }} }}) or a Data layer"))?;
    let classes = classes.ok_or_else(|| format!("{origin}: no InnerProduct layer gives the number of classes"))?;
    Ok(ModelSpec { name, input, classes, layers })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{Net, ParamMult};

    /// Caffe's examples/mnist/lenet_train_test.prototxt.
    pub const LENET: &str = include_str!("../../tests/data/lenet_train_test.prototxt");

    fn parse(text: &str) -> Result<ModelSpec, String> {
        from_prototxt(text, "net.prototxt", &mut || Ok(vec![1, 28, 28]), &mut |_| {})
    }

    #[test]
    fn caffe_lenet_is_the_zoos_lenet_caffe() {
        let mut warnings = Vec::new();
        let spec = from_prototxt(LENET, "lenet.prototxt", &mut || Ok(vec![1, 28, 28]), &mut |w| warnings.push(w)).unwrap();
        assert_eq!(spec.input, vec![1, 28, 28]);
        assert_eq!(spec.classes, 10);
        let a = Net::build(&spec).unwrap();
        let b = Net::build(&ModelSpec::resolve("lenet-caffe").unwrap()).unwrap();
        assert_eq!(a.layer_names(), b.layer_names());
        let shapes = |n: &Net| n.layout().entries().iter().map(|e| (e.name.clone(), e.shape.clone())).collect::<Vec<_>>();
        assert_eq!(shapes(&a), shapes(&b));
        // Its lr_mult 1/2 and xavier/constant fillers are read: the zoo's TOML says the same.
        let zoo = ModelSpec::resolve("lenet-caffe").unwrap();
        for (a, b) in spec.layers.iter().zip(&zoo.layers) {
            assert_eq!((a.mults(), a.fillers()), (b.mults(), b.fillers()), "{}", a.name());
        }
        assert!(!warnings.iter().any(|w| w.contains("fillers") || w.contains("lr_mult")), "{warnings:?}");
    }

    #[test]
    fn param_multipliers_and_fillers_are_read() {
        let spec = parse(
            r#"layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  param { lr_mult: 0 decay_mult: 0 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: "msra" variance_norm: FAN_OUT } bias_filler { type: "constant" value: 0.2 } } }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" param { lr_mult: 1 } param { lr_mult: 1 }
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.01 } bias_filler { type: "uniform" min: -1 max: 1 } } }
"#,
        )
        .unwrap();
        let net = Net::build(&spec).unwrap();
        let mult = |n: &str| net.layout().get(n).unwrap().mult;
        assert_eq!((mult("conv.weight"), mult("conv.bias")), (ParamMult::FROZEN, ParamMult { lr: 2.0, decay: 0.0 }));
        assert_eq!((mult("fc.weight"), mult("fc.bias")), (ParamMult::ONE, ParamMult::ONE));
        assert_eq!(net.layout().mult_ranges(), vec![(0..18, ParamMult::FROZEN), (18..20, ParamMult { lr: 2.0, decay: 0.0 })]);
        assert_eq!(spec.layers[0].fillers(), [Some(&Filler::Msra { variance_norm: VarianceNorm::FanOut }), Some(&Filler::Constant { value: 0.2 })]);
        assert_eq!(spec.layers[1].fillers(), [Some(&Filler::Gaussian { mean: 0.0, std: 0.01 }), Some(&Filler::Uniform { min: -1.0, max: 1.0 })]);
        let params = net.init_params(1);
        assert!(params[18..20].iter().all(|&b| b == 0.2));
        for (text, needle) in [
            ("param { lr_mult: -1 }", "lr_mult -1"),
            ("param { lr_mult: 1 } param { lr_mult: 2 } param { lr_mult: 1 }", "3 lr_mult values"),
            ("param { name: \"shared\" }", "shared"),
            ("convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: \"bilinear\" } }", "bilinear"),
        ] {
            let body = if text.starts_with("param") { format!("{text} convolution_param {{ num_output: 2 kernel_size: 3 }}") } else { text.to_string() };
            let proto = format!("layer {{ name: \"data\" type: \"Input\" top: \"data\" input_param {{ shape {{ dim: 1 dim: 1 dim: 4 dim: 4 }} }} }}\nlayer {{ name: \"c\" type: \"Convolution\" bottom: \"data\" top: \"c\" {body} }}\nlayer {{ name: \"fc\" type: \"InnerProduct\" bottom: \"c\" top: \"fc\" inner_product_param {{ num_output: 2 }} }}");
            let e = parse(&proto).and_then(|s| Net::build(&s).map(|_| ()).map_err(|e| e.to_string())).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn an_input_layer_and_alexnet_style_layers_map() {
        let spec = parse(
            r#"name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape: { dim: 10 dim: 3 dim: 32 dim: 32 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 group: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "pool1" type: "Pooling" bottom: "norm1" top: "pool1" pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "drop" type: "Dropout" bottom: "fc" top: "fc" dropout_param { dropout_ratio: 0.3 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"#,
        )
        .unwrap();
        assert_eq!((spec.input.clone(), spec.classes, spec.layers.len()), (vec![3, 32, 32], 5, 6));
        // Caffe rounds pooling up: (32 − 3)/2 rounded up + 1 = 16.
        let net = Net::build(&spec).unwrap();
        assert_eq!(net.layer_out_shape(3), vec![8, 16, 16]);
    }

    /// A residual block as Caffe writes it (ResNet's deploy prototxts: BatchNorm + Scale in
    /// place, Eltwise SUM, a Concat branch) reads as the same spec as its TOML.
    #[test]
    fn residual_blocks_with_batch_norm_scale_eltwise_and_concat_map_to_the_dag() {
        let proto = r#"
name: "block"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" batch_norm_param { moving_average_fraction: 0.9 } }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2" convolution_param { num_output: 4 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "sum" type: "Eltwise" bottom: "conv2" bottom: "conv1" top: "sum" }
layer { name: "side" type: "Convolution" bottom: "data" top: "side" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "cat" type: "Concat" bottom: "sum" bottom: "side" top: "cat" }
layer { name: "fc" type: "InnerProduct" bottom: "cat" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
"#;
        let toml = r#"
name = "block"
input = [3, 8, 8]
classes = 5
[[layer]]
name = "conv1"
type = "conv2d"
out_channels = 4
kernel = 3
padding = 1
bias = false
[[layer]]
name = "bn1"
type = "batch_norm"
momentum = 0.100000024
affine = false
[[layer]]
name = "scale1"
type = "scale"
[[layer]]
name = "relu1"
type = "relu"
[[layer]]
name = "conv2"
type = "conv2d"
out_channels = 4
kernel = 3
padding = 1
bias = false
[[layer]]
name = "sum"
type = "add"
inputs = ["conv2", "relu1"]
[[layer]]
name = "side"
type = "conv2d"
input = "input"
out_channels = 2
kernel = 1
[[layer]]
name = "cat"
type = "concat"
inputs = ["sum", "side"]
[[layer]]
name = "fc"
type = "linear"
out_features = 5
"#;
        let got = parse(proto).unwrap();
        let want = ModelSpec::from_toml(toml, "test").unwrap();
        assert_eq!(got.layers, want.layers);
        assert_eq!((&got.input, got.classes), (&want.input, want.classes));
        let net = Net::build(&want).unwrap();
        assert_eq!(net.sources(7), &[Some(5), Some(6)]);
    }

    #[test]
    fn unknown_types_fields_and_broken_text_name_the_line() {
        let cases = [
            ("layer { name: \"a\" type: \"Input\" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }\nlayer { name: \"d\" type: \"Deconvolution\" }", ":2:", "Deconvolution"),
            ("layer { name: \"a\" type: \"Input\" top: \"data\" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }\nlayer { name: \"r\" type: \"ReLU\" bottom: \"nope\" top: \"r\" }", ":2:", "blob 'nope'"),
            ("layer { name: \"a\" type: \"Input\" top: \"data\" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }\nlayer { name: \"e\" type: \"Eltwise\" bottom: \"data\" bottom: \"data\" top: \"e\" eltwise_param { operation: PROD } }", ":2:", "PROD"),
            ("layer { name: \"a\" type: \"Input\" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }\nlayer { name: \"c\" type: \"Convolution\"\n convolution_param { num_output: 2 kernel_size: 3 bogus: 1 } }", ":3:", "bogus"),
            ("layer { name: \"a\" type: \"Input\" ", ":1:", "missing '}'"),
            ("layers { name: \"old\" }", ":1:", "V1"),
            ("layer { name: \"fc\" type: \"InnerProduct\" inner_product_param { num_output: 2 } }", "", "no input shape"),
            ("layer { name: \"a\" type: \"Input\" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }\nlayer { name: \"c\" type: \"Convolution\" convolution_param { num_output: x kernel_size: 3 } }", ":2:", "not a valid number"),
        ];
        for (text, line, needle) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.contains(line) && e.contains(needle), "{text}: {e}");
        }
    }
}

/// What a Caffe `SolverParameter` sets, in convoy's terms (`--solver`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Solver {
    /// `net`: the model prototxt.
    pub net: Option<String>,
    /// `base_lr`.
    pub lr: Option<f32>,
    /// `momentum`.
    pub momentum: Option<f32>,
    /// `weight_decay`.
    pub weight_decay: Option<f32>,
    /// `lr_policy` with its parameters, as a `--schedule` spec.
    pub schedule: Option<String>,
    /// `max_iter`.
    pub steps: Option<u64>,
    /// `type`: sgd, or adam; `nesterov` for Nesterov.
    pub optimizer: Option<String>,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// `random_seed`.
    pub seed: Option<u64>,
    /// `snapshot` (steps).
    pub snapshot: Option<u64>,
    /// `snapshot_prefix`.
    pub snapshot_prefix: Option<String>,
    /// `iter_size` (gradient accumulation).
    pub iter_size: Option<usize>,
}

/// Parses a Caffe solver; `note` receives what is accepted but not applied.
pub fn solver_from_prototxt(text: &str, origin: &str, note: &mut dyn FnMut(String)) -> Result<Solver, String> {
    let toks = lex(text, origin)?;
    let m = parse_msg(&toks, &mut 0, origin, false)?;
    m.only(
        &[
            "net", "train_net", "base_lr", "momentum", "weight_decay", "lr_policy", "gamma", "power", "stepsize", "stepvalue", "max_iter", "test_interval", "test_iter",
            "display", "snapshot", "snapshot_prefix", "type", "solver_type", "random_seed", "solver_mode", "device_id", "momentum2", "delta", "test_initialization",
            "average_loss", "iter_size", "regularization_type", "snapshot_format",
        ],
        origin,
        "the solver",
    )?;
    let mut s = Solver { net: m.scalar("net").or(m.scalar("train_net")).map(|v| v.0.to_string()), ..Solver::default() };
    s.lr = num(&m, "base_lr", origin)?;
    s.momentum = num(&m, "momentum", origin)?;
    s.weight_decay = num(&m, "weight_decay", origin)?;
    s.steps = num(&m, "max_iter", origin)?;
    s.seed = num::<i64>(&m, "random_seed", origin)?.filter(|&v| v >= 0).map(|v| v as u64);
    s.snapshot = num::<u64>(&m, "snapshot", origin)?.filter(|&v| v > 0);
    s.snapshot_prefix = m.scalar("snapshot_prefix").map(|v| v.0.to_string());
    s.iter_size = num::<usize>(&m, "iter_size", origin)?.filter(|&v| v > 1);
    let ty_raw = m.scalar("type").or(m.scalar("solver_type")).map(|v| v.0);
    let ty = ty_raw.map(str::to_ascii_lowercase);
    match ty.as_deref() {
        None | Some("sgd") => s.optimizer = Some("sgd".into()),
        Some("nesterov") => {
            s.optimizer = Some("sgd".into());
            s.nesterov = true;
        }
        Some("adam") => {
            s.optimizer = Some("adam".into());
            if num::<f32>(&m, "momentum2", origin)?.is_some_and(|b| b != 0.999) || num::<f32>(&m, "delta", origin)?.is_some_and(|d| d != 1e-8) {
                let line = m.scalar("momentum2").or(m.scalar("delta")).map_or(1, |v| v.1);
                return err(origin, line, "Adam with momentum2 ≠ 0.999 or delta ≠ 1e-8 is not supported yet");
            }
            if s.momentum.is_some_and(|b| b != 0.9) {
                return err(origin, m.scalar("momentum").map_or(1, |v| v.1), "Adam's momentum (β1) must be 0.9 in convoy for now");
            }
            s.momentum = None;
        }
        Some(_) => {
            return err(origin, m.scalar("type").or(m.scalar("solver_type")).map_or(1, |v| v.1), format!("solver type '{}' is not supported; hint: SGD, Nesterov or Adam", ty_raw.unwrap_or("")))
        }
    }
    if let Some((r, line)) = m.scalar("regularization_type") {
        if r != "L2" {
            return err(origin, line, format!("regularization_type {r}: only L2 is supported"));
        }
    }
    let gamma: Option<f32> = num(&m, "gamma", origin)?;
    let power: Option<f32> = num(&m, "power", origin)?;
    let need = |v: Option<f32>, what: &str, line: usize| v.ok_or_else(|| format!("{origin}:{line}: this lr_policy needs {what}"));
    if let Some((policy, line)) = m.scalar("lr_policy") {
        s.schedule = Some(match policy {
            "fixed" => "constant".into(),
            "step" => {
                let size: u64 = num(&m, "stepsize", origin)?.ok_or_else(|| format!("{origin}:{line}: lr_policy step needs stepsize"))?;
                format!("step:{size}:{}", need(gamma, "gamma", line)?)
            }
            "multistep" => {
                let values: Vec<String> = m.all("stepvalue").filter_map(|(v, _)| if let Value::Scalar(s) = v { Some(s.clone()) } else { None }).collect();
                if values.is_empty() {
                    return err(origin, line, "lr_policy multistep needs stepvalue entries");
                }
                format!("multistep:{}:{}", values.join(","), need(gamma, "gamma", line)?)
            }
            "inv" => format!("inv:{}:{}", need(gamma, "gamma", line)?, need(power, "power", line)?),
            "poly" => format!("poly:{}:{}", s.steps.ok_or_else(|| format!("{origin}:{line}: lr_policy poly needs max_iter"))?, need(power, "power", line)?),
            "exp" => format!("exp:{}", need(gamma, "gamma", line)?),
            other => return err(origin, line, format!("lr_policy '{other}' is not supported; hint: fixed, step, multistep, inv, poly, exp")),
        });
    }
    for f in ["test_interval", "test_iter", "display", "solver_mode", "device_id", "average_loss", "test_initialization", "snapshot_format"] {
        if let Some((v, line)) = m.scalar(f) {
            note(format!("{origin}:{line}: {f}: {v} accepted and ignored (convoy evaluates after every epoch and at the end, logs every step, runs on the CPU)"));
        }
    }
    Ok(s)
}

#[cfg(test)]
mod solver_tests {
    use super::*;

    #[test]
    fn caffe_mnist_lenet_solver_maps_to_convoy_settings() {
        // Caffe's examples/mnist/lenet_solver.prototxt.
        let text = r#"
net: "examples/mnist/lenet_train_test.prototxt"
test_iter: 100
test_interval: 500
base_lr: 0.01
momentum: 0.9
weight_decay: 0.0005
lr_policy: "inv"
gamma: 0.0001
power: 0.75
display: 100
max_iter: 10000
snapshot: 5000
snapshot_prefix: "examples/mnist/lenet"
solver_mode: CPU
"#;
        let mut notes = Vec::new();
        let s = solver_from_prototxt(text, "lenet_solver.prototxt", &mut |n| notes.push(n)).unwrap();
        assert_eq!(s.net.as_deref(), Some("examples/mnist/lenet_train_test.prototxt"));
        assert_eq!((s.lr, s.momentum, s.weight_decay, s.steps), (Some(0.01), Some(0.9), Some(0.0005), Some(10000)));
        assert_eq!(s.schedule.as_deref(), Some("inv:0.0001:0.75"));
        assert_eq!((s.snapshot, s.snapshot_prefix.as_deref()), (Some(5000), Some("examples/mnist/lenet")));
        assert_eq!(s.optimizer.as_deref(), Some("sgd"));
        assert!(notes.iter().any(|n| n.contains("solver_mode")) && notes.iter().any(|n| n.contains("test_interval")), "{notes:?}");
        let multi = solver_from_prototxt("lr_policy: \"multistep\"\ngamma: 0.1\nstepvalue: 100\nstepvalue: 200\ntype: \"Nesterov\"", "s", &mut |_| {}).unwrap();
        assert_eq!(multi.schedule.as_deref(), Some("multistep:100,200:0.1"));
        assert!(multi.nesterov);
        let poly = solver_from_prototxt("lr_policy: \"poly\"\npower: 1\nmax_iter: 50\ntype: \"Adam\"", "s", &mut |_| {}).unwrap();
        assert_eq!((poly.schedule.as_deref(), poly.optimizer.as_deref()), (Some("poly:50:1"), Some("adam")));
    }

    #[test]
    fn unsupported_solver_settings_name_the_line() {
        for (text, needle) in [
            ("base_lr: 0.1\nlr_policy: \"sigmoid\"", ":2:"),
            ("base_lr: 0.1\nclip_gradients: 10", "clip_gradients"),
            ("type: \"RMSProp\"", "RMSProp"),
            ("lr_policy: \"step\"\ngamma: 0.1", "stepsize"),
        ] {
            let e = solver_from_prototxt(text, "s.prototxt", &mut |_| {}).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
