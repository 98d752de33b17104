//! Caffe model definitions: `--model net.prototxt` reads a Caffe `NetParameter` in protobuf text
//! format (Intel's multi-node Caffe shipped its models so) into a `ModelSpec`.
//!
//! Supported layer types: Input, Data, MemoryData (the input), Convolution, Pooling (MAX/AVE,
//! Caffe's ceil rounding), InnerProduct, ReLU, LRN (across channels), Dropout, Flatten,
//! BatchNorm (no affine; momentum = 1 − moving_average_fraction), Scale (per channel),
//! Eltwise SUM with coefficients (our add), PROD (mul) and MAX (max), Concat (channels), Softmax
//! (inside the net, or the head), and the heads SoftmaxWithLoss (our loss head) and Accuracy
//! (skipped). The TRAIN net is built, by Caffe's
//! `include`/`exclude { phase }` rules. Bottoms and tops become named inputs: every layer reads
//! the layer that last wrote its bottom blob (in-place tops rewrite it), so branches and residual sums map to the net's DAG. The input shape comes from an Input layer, the
//! legacy `input_shape`/`input_dim` fields, `memory_data_param`, or — for a Data layer, whose
//! LMDB convoy does not read — from the dataset given with `--data` (3×crop×crop with a
//! `crop_size`). `param { lr_mult decay_mult }` and weight/bias fillers become the layer spec's
//! `lr_mult`/`decay_mult` and fillers; the training Data layer's `transform_param` (checked
//! against the TEST one's) is read by `transform_from_prototxt` into data options — mean/scale,
//! mirror, crop_size — which the CLI applies, and its `batch_size` (Data or MemoryData) by
//! `data_layer_from_prototxt`: the CLI makes it the global batch unless --batch-size is given.
//! Accepted with a warning but not applied: the Data layer's source.
//! A Softmax whose top a later TRAIN-phase layer reads (other than Accuracy or
//! SoftmaxWithLoss) is an inner `softmax` layer; one whose output nothing reads (a deploy net's
//! `prob`) is the loss head, as SoftmaxWithLoss always is.
//! Anything else — another layer type, an unknown field in a layer or in one of its parameter
//! messages — is an error naming it and its line.

mod fields;
mod solver;
#[cfg(test)]
mod tests;
mod text;

use super::spec::{LayerSpec, ModelSpec, Pair, INPUT};
use fields::{filler, in_phase, param_mults};
pub use fields::{DataLayer, Transform};
pub use solver::{solver_from_prototxt, Solver};
use text::{err, lex, num, pair, parse_msg, Value};

/// The training Data/MemoryData layer's `transform_param` of a NetParameter (see `Transform`),
/// `None` without such a layer; an error if the TEST-phase one disagrees (but for mirror).
pub fn transform_from_prototxt(text: &str, origin: &str) -> Result<Option<Transform>, String> {
    let net = parse_msg(&lex(text, origin)?, &mut 0, origin, false)?;
    fields::transform(&net, origin)
}

/// The training Data/MemoryData layer of a NetParameter (see `DataLayer`): its name, line and
/// `batch_size`, which the CLI makes the global batch unless `--batch-size` is given; `None`
/// without such a layer. A batch_size of 0 is an error naming the file and line.
pub fn data_layer_from_prototxt(text: &str, origin: &str) -> Result<Option<DataLayer>, String> {
    let net = parse_msg(&lex(text, origin)?, &mut 0, origin, false)?;
    fields::data_layer(&net, origin)
}

/// Parses `text` (a NetParameter) into a model spec; `data_shape` gives the dataset's per-sample
/// shape for a Data layer. Warnings (accepted but not applied) go to `warn`.
pub fn from_prototxt(
    text: &str,
    origin: &str,
    data_shape: &mut dyn FnMut() -> Result<Vec<usize>, String>,
    warn: &mut dyn FnMut(String),
) -> Result<ModelSpec, String> {
    let toks = lex(text, origin)?;
    let net = parse_msg(&toks, &mut 0, origin, false)?;
    net.only(
        &["name", "layer", "layers", "input", "input_shape", "input_dim", "force_backward", "state", "debug_info"],
        origin,
        "the net",
    )?;
    if let Some((_, line)) = net.all("layers").next() {
        return err(
            origin,
            line,
            "V1 'layers' definitions are not read; hint: convert with Caffe's upgrade_net_proto_text",
        );
    }
    let name = net.scalar("name").map_or("caffe-net", |s| s.0).to_string();
    let mut input: Option<Vec<usize>> = None;
    if let Some(shape) = net.msg("input_shape") {
        input = Some(
            shape
                .all("dim")
                .filter_map(|(v, _)| if let Value::Scalar(s) = v { s.parse().ok() } else { None })
                .skip(1)
                .collect(),
        );
    } else if net.scalar("input_dim").is_some() {
        input = Some(
            net.all("input_dim")
                .filter_map(|(v, _)| if let Value::Scalar(s) = v { s.parse().ok() } else { None })
                .skip(1)
                .collect(),
        );
    }
    let mut layers: Vec<LayerSpec> = Vec::new();
    let mut classes = None;
    let mut ended = false;
    // Which layer last wrote each blob (in-place layers rewrite theirs); `INPUT` for the data.
    let mut blobs: Vec<(String, String)> = Vec::new();
    let all: Vec<(&Value, usize)> = net.all("layer").collect();
    // Inner softmax layers with their lines, for the shape check at the end.
    let mut inner_softmax: Vec<(usize, usize)> = Vec::new();
    for (at, &(v, line)) in all.iter().enumerate() {
        let Value::Msg(l) = v else { return err(origin, line, "'layer' must be a message") };
        let lname = l.scalar("name").map(|s| s.0.to_string()).unwrap_or_else(|| format!("layer{}", layers.len()));
        let ty =
            l.scalar("type").map(|s| s.0).ok_or_else(|| format!("{origin}:{line}: layer '{lname}' has no type"))?;
        // convoy builds the TRAIN net: TEST-only layers (include or exclude rules) are skipped.
        if !in_phase(l, line, "TRAIN", origin)? {
            continue;
        }
        let common =
            ["name", "type", "bottom", "top", "include", "exclude", "param", "loss_weight", "propagate_down", "phase"];
        let known = |extra: &[&'static str]| -> Vec<&'static str> { common.iter().chain(extra).copied().collect() };
        let bottoms: Vec<String> = l
            .all("bottom")
            .filter_map(|(v, _)| if let Value::Scalar(s) = v { Some(s.clone()) } else { None })
            .collect();
        let (lr_mult, decay_mult) = param_mults(l, origin)?;
        let is_input = matches!(ty, "Input" | "Data" | "MemoryData");
        let head =
            matches!(ty, "Accuracy" | "SoftmaxWithLoss") || (ty == "Softmax" && !softmax_is_read(&all, at, origin)?);
        // The layers this one reads, by our names.
        let mut reads: Vec<String> = Vec::new();
        if !is_input && !head {
            if ended {
                return err(
                    origin,
                    line,
                    format!("layer '{lname}' comes after the loss; hint: the loss must be the last layer"),
                );
            }
            for b in &bottoms {
                match blobs.iter().rev().find(|(blob, _)| blob == b) {
                    Some((_, by)) => reads.push(by.clone()),
                    None => {
                        return err(
                            origin,
                            line,
                            format!(
                            "layer '{lname}' reads blob '{b}', which no earlier layer writes; hint: check its bottom"
                        ),
                        )
                    }
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
                return err(
                    origin,
                    line,
                    format!("layer '{lname}' ({ty}) reads {} blobs; hint: it takes {want}", reads.len()),
                );
            }
            Ok(())
        };
        let param = |field: &str| l.msg(field).cloned().unwrap_or_default();
        // The layer's own fields, and those of its parameter message `field` (absent: empty).
        let fields = |extra: &[&'static str]| l.only(&known(extra), origin, &format!("layer '{lname}'"));
        let sub = |field: &str, allowed: &[&str]| -> Result<text::Msg, String> {
            let p = param(field);
            p.only(allowed, origin, &format!("{field} of '{lname}'"))?;
            Ok(p)
        };
        if !is_input && !head && !matches!(ty, "Eltwise" | "Concat") {
            n_bottoms(1)?;
        }
        match ty {
            "Input" => {
                fields(&["input_param"])?;
                let shape = sub("input_param", &["shape"])?.msg("shape").cloned().unwrap_or_default();
                shape.only(&["dim"], origin, &format!("input_param shape of '{lname}'"))?;
                let dims: Vec<usize> = shape.all("dim").filter_map(|(v, _)| if let Value::Scalar(s) = v { s.parse().ok() } else { None }).collect();
                if dims.len() != 4 {
                    return err(origin, line, format!("Input '{lname}' needs shape {{ dim: N dim: C dim: H dim: W }}, found {} dims", dims.len()));
                }
                input = Some(dims[1..].to_vec());
            }
            "MemoryData" => {
                fields(&["memory_data_param", "transform_param"])?;
                let p = sub("memory_data_param", &["batch_size", "channels", "height", "width"])?;
                let dims: Vec<Option<usize>> = vec![num(&p, "channels", origin)?, num(&p, "height", origin)?, num(&p, "width", origin)?];
                input = Some(dims.into_iter().collect::<Option<Vec<usize>>>().ok_or_else(|| format!("{origin}:{line}: memory_data_param needs channels, height, width"))?);
            }
            "Data" => {
                fields(&["data_param", "transform_param"])?;
                // Where the data comes from is --data's business; the old in-data_param
                // transform fields (scale, mean_file, crop_size, mirror) are refused: they belong
                // in transform_param, which is read.
                sub("data_param", &["source", "batch_size", "backend", "rand_skip", "prefetch", "force_encoded_color"])?;
                warn(format!("{origin}:{line}: Data layer '{lname}': convoy reads --data instead of its source"));
                // Caffe's crop_size 0 (its default) means no crop.
                let crop: Option<usize> = num(&param("transform_param"), "crop_size", origin)?.filter(|&c| c > 0);
                input = Some(match crop {
                    // The dataset's channels when it can be opened (Caffe's default, color, else).
                    Some(c) => vec![data_shape().map_or(3, |s| s[0]), c, c],
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
                fields(&["relu_param"])?;
                if num::<f32>(&sub("relu_param", &["negative_slope", "engine"])?, "negative_slope", origin)?.is_some_and(|s| s != 0.0) {
                    return err(origin, line, "ReLU with a negative_slope (leaky) is not supported yet");
                }
                layers.push(LayerSpec::Relu { name: lname.clone(), input: from.clone() });
            }
            "LRN" => {
                fields(&["lrn_param"])?;
                let p = sub("lrn_param", &["local_size", "alpha", "beta", "norm_region", "k", "engine"])?;
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
                fields(&["dropout_param"])?;
                layers.push(LayerSpec::Dropout { name: lname.clone(), input: from.clone(), p: num(&sub("dropout_param", &["dropout_ratio"])?, "dropout_ratio", origin)?.unwrap_or(0.5) });
            }
            "Flatten" => {
                fields(&["flatten_param"])?;
                let p = sub("flatten_param", &["axis", "end_axis"])?;
                if num::<i64>(&p, "axis", origin)?.is_some_and(|a| a != 1) || num::<i64>(&p, "end_axis", origin)?.is_some_and(|a| a != -1) {
                    return err(origin, line, format!("Flatten '{lname}': only axis 1 to end_axis -1 (C×H×W per sample) is supported"));
                }
                layers.push(LayerSpec::Flatten { name: lname.clone(), input: from.clone() });
            }
            "Sigmoid" => {
                fields(&["sigmoid_param"])?;
                sub("sigmoid_param", &["engine"])?;
                layers.push(LayerSpec::Sigmoid { name: lname.clone(), input: from.clone() });
            }
            "TanH" => {
                fields(&["tanh_param"])?;
                sub("tanh_param", &["engine"])?;
                layers.push(LayerSpec::Tanh { name: lname.clone(), input: from.clone() });
            }
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
                let coeff: Vec<f32> = p
                    .all("coeff")
                    .map(|(v, l)| match v {
                        Value::Scalar(c) => c.parse().map_err(|_| format!("{origin}:{l}: 'coeff: {c}' is not a valid number")),
                        Value::Msg(_) => err(origin, l, "coeff must be a number"),
                    })
                    .collect::<Result<_, _>>()?;
                let op = p.scalar("operation").map_or("SUM", |o| o.0);
                if !coeff.is_empty() && (op != "SUM" || coeff.len() != reads.len()) {
                    return err(origin, line, format!("Eltwise '{lname}': {} coeff values for {} bottoms of {op}; hint: coeff is for SUM, one per bottom", coeff.len(), reads.len()));
                }
                let (name, inputs) = (lname.clone(), reads.clone());
                layers.push(match op {
                    "SUM" => LayerSpec::Add { name, inputs, coeff: if coeff.iter().all(|&c| c == 1.0) { Vec::new() } else { coeff } },
                    "PROD" => LayerSpec::Mul { name, inputs },
                    "MAX" => LayerSpec::Max { name, inputs },
                    other => return err(origin, line, format!("Eltwise '{lname}': operation {other} is not supported; hint: SUM, PROD or MAX")),
                });
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
            "Softmax" | "SoftmaxWithLoss" => {
                let extra: &[&'static str] = if ty == "Softmax" { &["softmax_param"] } else { &["softmax_param", "loss_param"] };
                fields(extra)?;
                if num::<i64>(&sub("softmax_param", &["axis", "engine"])?, "axis", origin)?.is_some_and(|a| a != 1) {
                    return err(origin, line, format!("{ty} '{lname}': only over channels (axis 1) is supported"));
                }
                let loss = sub("loss_param", &["normalization", "normalize"])?;
                if loss.scalar("normalization").is_some_and(|n| n.0 == "NONE") || loss.scalar("normalize").is_some_and(|n| n.0 == "false") {
                    return err(origin, line, format!("{ty} '{lname}': a summed (unnormalised) loss is not supported; hint: convoy averages over the batch (normalization: VALID or BATCH_SIZE)"));
                }
                if head {
                    ended = true;
                } else {
                    inner_softmax.push((layers.len(), line));
                    layers.push(LayerSpec::Softmax { name: lname.clone(), input: from.clone() });
                }
            }
            // Skipped: its settings change nothing convoy computes.
            "Accuracy" => {
                fields(&["accuracy_param"])?;
                sub("accuracy_param", &["top_k", "axis", "ignore_label"])?;
            }
            other => {
                return err(
                    origin,
                    line,
                    format!("layer '{lname}': type '{other}' is not supported yet; hint: convoy reads Input, Data, MemoryData, Convolution, Pooling, InnerProduct, ReLU, Sigmoid, TanH, LRN, Dropout, Flatten, Softmax(WithLoss), Accuracy, BatchNorm, Scale, Eltwise (SUM, PROD, MAX), Concat"),
                )
            }
        }
        if is_input {
            if let Some(t) =
                l.all("top").find_map(|(v, _)| if let Value::Scalar(s) = v { Some(s.clone()) } else { None })
            {
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
    let spec = ModelSpec { name, input, classes, layers };
    check_inner_softmax(&spec, &inner_softmax, origin)?;
    Ok(spec)
}

/// Whether the Softmax `layers[i]` is read inside the net: a later TRAIN-phase layer reads its
/// top blob before another layer rewrites it, and that reader is not Accuracy, SoftmaxWithLoss
/// or a Softmax head. A Softmax nothing reads (a deploy net's `prob`) is the net's head.
fn softmax_is_read(layers: &[(&Value, usize)], i: usize, origin: &str) -> Result<bool, String> {
    let Value::Msg(me) = layers[i].0 else { return Ok(false) };
    let Some((top, _)) = me.scalar("top") else { return Ok(false) };
    for (j, &(v, line)) in layers.iter().enumerate().skip(i + 1) {
        let Value::Msg(l) = v else { continue };
        if !in_phase(l, line, "TRAIN", origin)? {
            continue;
        }
        let has = |field: &str| l.all(field).any(|(b, _)| matches!(b, Value::Scalar(b) if b == top));
        if has("bottom") {
            let inner = match l.scalar("type").map_or("", |t| t.0) {
                "Accuracy" | "SoftmaxWithLoss" => false,
                "Softmax" => softmax_is_read(layers, j, origin)?,
                _ => true,
            };
            if inner {
                return Ok(true);
            }
        }
        if has("top") {
            return Ok(false);
        }
    }
    Ok(false)
}

/// Caffe's Softmax (axis 1) normalises over the channels at each position, convoy's `softmax`
/// over all of a sample's values: the same on a vector, or C×1×1; on a C×H×W blob with H·W > 1
/// they differ, so an inner Softmax there is refused, naming its line. A spec that does not
/// build is left to the caller, which reports why.
fn check_inner_softmax(spec: &ModelSpec, inner: &[(usize, usize)], origin: &str) -> Result<(), String> {
    if inner.is_empty() {
        return Ok(());
    }
    let Ok(net) = super::Net::build(spec) else { return Ok(()) };
    for &(i, line) in inner {
        let shape = net.layer_out_shape(i);
        if shape.iter().skip(1).product::<usize>() > 1 {
            return err(
                origin,
                line,
                format!("Softmax '{}' over a blob of per-sample shape {shape:?}: Caffe normalises over the channels at each position, convoy's softmax over the whole sample; hint: put it after an InnerProduct (a vector per sample)", spec.layers[i].name()),
            );
        }
    }
    Ok(())
}
