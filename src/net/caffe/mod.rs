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
mod layer;
mod solver;
#[cfg(test)]
mod tests;
mod text;

use super::spec::{LayerSpec, ModelSpec, INPUT};
use fields::{in_phase, param_mults};
pub use fields::{DataLayer, Transform};
use layer::{Built, Layer};
pub use solver::{solver_from_prototxt, Solver};
pub use text::CaffeError;
use text::{err, lex, parse_msg, Value};

/// The training Data/MemoryData layer's `transform_param` of a NetParameter (see `Transform`),
/// `None` without such a layer; an error if the TEST-phase one disagrees (but for mirror).
pub fn transform_from_prototxt(text: &str, origin: &str) -> Result<Option<Transform>, CaffeError> {
    let net = parse_msg(&lex(text, origin)?, &mut 0, origin, false)?;
    fields::transform(&net, origin)
}

/// The training Data/MemoryData layer of a NetParameter (see `DataLayer`): its name, line and
/// `batch_size`, which the CLI makes the global batch unless `--batch-size` is given; `None`
/// without such a layer. A batch_size of 0 is an error naming the file and line.
pub fn data_layer_from_prototxt(text: &str, origin: &str) -> Result<Option<DataLayer>, CaffeError> {
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
) -> Result<ModelSpec, CaffeError> {
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
    let mut input = legacy_input_shape(&net);
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
        let Some(layer) = read_layer(l, line, origin, &all, at, &layers, &blobs, ended)? else { continue };
        match layer.build(data_shape, warn)? {
            Built::Layer(spec) => {
                match &spec {
                    LayerSpec::Linear { out_features, .. } => classes = Some(*out_features),
                    LayerSpec::Softmax { .. } => inner_softmax.push((layers.len(), line)),
                    _ => {}
                }
                layers.push(spec);
            }
            Built::Input(shape) => input = Some(shape),
            Built::Head => ended = true,
            Built::Skipped => {}
        }
        let is_input = matches!(layer.ty, "Input" | "Data" | "MemoryData");
        let tops = l.all("top").filter_map(|(v, _)| if let Value::Scalar(s) = v { Some(s.clone()) } else { None });
        if is_input {
            blobs.extend(tops.take(1).map(|t| (t, INPUT.to_string())));
        } else if !layer.head {
            blobs.extend(tops.map(|t| (t, layer.name.clone())));
        }
    }
    let input = input.ok_or_else(|| CaffeError::whole(origin, "no input shape; hint: add an Input layer (input_param { shape { dim: 1 dim: C dim: H dim: W } }) or a Data layer"))?;
    let classes =
        classes.ok_or_else(|| CaffeError::whole(origin, "no InnerProduct layer gives the number of classes"))?;
    let spec = ModelSpec { name, input, classes, layers };
    check_inner_softmax(&spec, &inner_softmax, origin)?;
    Ok(spec)
}

/// The input shape [C, H, W] of the net's legacy `input_shape` or `input_dim` fields (N dropped).
fn legacy_input_shape(net: &text::Msg) -> Option<Vec<usize>> {
    let dims = |m: &text::Msg, field: &str| -> Vec<usize> {
        m.all(field).filter_map(|(v, _)| if let Value::Scalar(s) = v { s.parse().ok() } else { None }).skip(1).collect()
    };
    if let Some(shape) = net.msg("input_shape") {
        Some(dims(shape, "dim"))
    } else if net.scalar("input_dim").is_some() {
        Some(dims(net, "input_dim"))
    } else {
        None
    }
}

/// The layer `l` (at `line`, index `at` of `all`) with its inputs resolved against the blobs
/// written so far, or `None` when it is not part of the TRAIN net (include/exclude rules).
#[allow(clippy::too_many_arguments)] // the reading's state, each piece named at the one call site
fn read_layer<'a>(
    l: &'a text::Msg,
    line: usize,
    origin: &'a str,
    all: &[(&Value, usize)],
    at: usize,
    layers: &[LayerSpec],
    blobs: &[(String, String)],
    ended: bool,
) -> Result<Option<Layer<'a>>, CaffeError> {
    let name = l.scalar("name").map(|s| s.0.to_string()).unwrap_or_else(|| format!("layer{}", layers.len()));
    let ty = l
        .scalar("type")
        .map(|s| s.0)
        .ok_or_else(|| CaffeError::at(origin, line, format!("layer '{name}' has no type")))?;
    // convoy builds the TRAIN net: TEST-only layers (include or exclude rules) are skipped.
    if !in_phase(l, line, "TRAIN", origin)? {
        return Ok(None);
    }
    let bottoms: Vec<String> =
        l.all("bottom").filter_map(|(v, _)| if let Value::Scalar(s) = v { Some(s.clone()) } else { None }).collect();
    let (lr_mult, decay_mult) = param_mults(l, origin)?;
    let is_input = matches!(ty, "Input" | "Data" | "MemoryData");
    let head = matches!(ty, "Accuracy" | "SoftmaxWithLoss") || (ty == "Softmax" && !softmax_is_read(all, at, origin)?);
    // The layers this one reads, by our names.
    let mut reads: Vec<String> = Vec::new();
    if !is_input && !head {
        if ended {
            return err(
                origin,
                line,
                format!("layer '{name}' comes after the loss; hint: the loss must be the last layer"),
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
                            "layer '{name}' reads blob '{b}', which no earlier layer writes; hint: check its bottom"
                        ),
                    )
                }
            }
        }
        if !matches!(ty, "Eltwise" | "Concat") && reads.len() > 1 {
            return err(origin, line, format!("layer '{name}' ({ty}) reads {} blobs; hint: it takes 1", reads.len()));
        }
    }
    // A single input that is the previous layer's output is the default (a chain).
    let previous = layers.last().map_or(INPUT.to_string(), |p| p.name().to_string());
    let from = match reads.as_slice() {
        [one] if *one != previous => Some(one.clone()),
        _ => None,
    };
    Ok(Some(Layer { l, name, ty, line, origin, from, reads, lr_mult, decay_mult, head }))
}

/// Whether the Softmax `layers[i]` is read inside the net: a later TRAIN-phase layer reads its
/// top blob before another layer rewrites it, and that reader is not Accuracy, SoftmaxWithLoss
/// or a Softmax head. A Softmax nothing reads (a deploy net's `prob`) is the net's head.
fn softmax_is_read(layers: &[(&Value, usize)], i: usize, origin: &str) -> Result<bool, CaffeError> {
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
fn check_inner_softmax(spec: &ModelSpec, inner: &[(usize, usize)], origin: &str) -> Result<(), CaffeError> {
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
