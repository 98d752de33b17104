//! Caffe fields that map onto the layer spec's extras: `param { lr_mult decay_mult }` blocks and
//! `FillerParameter`s.

use super::text::{err, num, CaffeError, Msg, Value};
use crate::tensor::init::{Filler, VarianceNorm};

/// A layer's `param { lr_mult decay_mult }` blocks, in order (weight, bias); a list is empty
/// when all its multipliers are 1.
pub(super) fn param_mults(l: &Msg, origin: &str) -> Result<(Vec<f32>, Vec<f32>), CaffeError> {
    let (mut lr, mut decay) = (Vec::new(), Vec::new());
    for (v, line) in l.all("param") {
        let Value::Msg(p) = v else {
            return err(origin, line, "'param' must be a message: param { lr_mult: 1 decay_mult: 1 }");
        };
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

/// Whether layer `l` (at `line`) belongs to the net of `phase` ("TRAIN" or "TEST"), by Caffe's
/// rules: with `include { phase }` rules, when one of them names the phase (or no phase);
/// otherwise unless an `exclude { phase }` rule names it (or no phase). A layer with both, a
/// phase other than TRAIN/TEST, or a rule on levels or stages is an error.
pub(super) fn in_phase(l: &Msg, line: usize, phase: &str, origin: &str) -> Result<bool, CaffeError> {
    fn rules<'a>(l: &'a Msg, field: &'static str, origin: &str) -> Result<Vec<Option<&'a str>>, CaffeError> {
        let mut out = Vec::new();
        for (v, at) in l.all(field) {
            let Value::Msg(r) = v else {
                return err(origin, at, format!("'{field}' must be a message: {field} {{ phase: TRAIN }}"));
            };
            r.only(&["phase"], origin, &format!("{field} (levels and stages are not read)"))?;
            let p = r.scalar("phase");
            if let Some((p, at)) = p.filter(|p| !matches!(p.0, "TRAIN" | "TEST")) {
                return err(origin, at, format!("{field} phase: {p} is not a phase; hint: TRAIN or TEST"));
            }
            out.push(p.map(|p| p.0));
        }
        Ok(out)
    }
    let (include, exclude) = (rules(l, "include", origin)?, rules(l, "exclude", origin)?);
    let meets = |rule: &Option<&str>| rule.is_none_or(|p| p == phase);
    match (include.is_empty(), exclude.is_empty()) {
        (false, false) => {
            err(origin, line, "a layer has both include and exclude rules; hint: Caffe takes one or the other")
        }
        (false, true) => Ok(include.iter().any(meets)),
        (true, _) => Ok(!exclude.iter().any(meets)),
    }
}

/// A `FillerParameter` field (`weight_filler { type: "xavier" }`) as a `Filler`.
pub(super) fn filler(m: &Msg, field: &str, origin: &str) -> Result<Option<Filler>, CaffeError> {
    let Some((Value::Msg(f), line)) = m.all(field).next() else { return Ok(None) };
    f.only(&["type", "value", "min", "max", "mean", "std", "variance_norm", "sparse"], origin, field)?;
    let ty = f.scalar("type").map_or("constant", |t| t.0);
    let get = |name: &str, default: f32| -> Result<f32, CaffeError> { Ok(num(f, name, origin)?.unwrap_or(default)) };
    let norm = match f.scalar("variance_norm").map(|v| v.0) {
        None | Some("FAN_IN") => VarianceNorm::FanIn,
        Some("FAN_OUT") => VarianceNorm::FanOut,
        Some("AVERAGE") => VarianceNorm::Average,
        Some(other) => {
            return err(origin, line, format!("{field}: variance_norm {other} is not one of FAN_IN, FAN_OUT, AVERAGE"))
        }
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
        other => {
            return err(
                origin,
                line,
                format!(
                    "{field}: filler type '{other}' is not supported; hint: constant, gaussian, xavier, msra, uniform"
                ),
            )
        }
    };
    out.validate().map_err(|e| CaffeError::at(origin, line, format!("{field}: {e}")))?;
    Ok(Some(out))
}

/// A Data or MemoryData layer's `transform_param` in convoy's terms. Caffe computes
/// (pixel − mean)·scale on pixels in 0..255; convoy's datasets deliver x = pixel/255 in [0, 1]
/// and normalise (x − m)/s, so m = mean/255 and s = 1/(255·scale):
/// (x − mean/255)·255·scale = (pixel − mean)·scale.
#[derive(Clone, Debug, PartialEq)]
pub struct Transform {
    /// Per-channel (or one) mean m, on [0, 1] pixels.
    pub mean: Vec<f32>,
    /// Per-channel (or one) standard deviation s, as many as `mean`.
    pub std: Vec<f32>,
    /// `mirror`: random horizontal flips of training samples.
    pub mirror: bool,
    /// `crop_size`, when given and not 0 (Caffe's 0 is "no crop"): a random window in
    /// training, the center one in evaluation.
    pub crop: Option<usize>,
    /// The line of the `transform_param`, for messages.
    pub line: usize,
    /// The TEST-phase Data layer asks for `mirror: true`, which convoy does not do (it never
    /// augments the test set): the caller says so.
    pub test_mirror: bool,
}

/// The transform of the training Data/MemoryData layer of a NetParameter (`None`: there is none,
/// e.g. an Input layer). A layer without `transform_param` gets Caffe's defaults (scale 1, no
/// mean: raw 0..255 pixels). A TEST-phase Data layer's transform must agree with it except for
/// `mirror`, since convoy normalises and crops both sets alike; otherwise it is an error.
pub fn transform(net: &Msg, origin: &str) -> Result<Option<Transform>, CaffeError> {
    let (mut train, mut test) = (None, None);
    for (v, line) in net.all("layer") {
        let Value::Msg(l) = v else { continue };
        if !l.scalar("type").is_some_and(|t| matches!(t.0, "Data" | "MemoryData")) {
            continue;
        }
        // A Data layer in both phases (no rules) is the TRAIN one, and its transform both's.
        let slot = if in_phase(l, line, "TRAIN", origin)? {
            &mut train
        } else if in_phase(l, line, "TEST", origin)? {
            &mut test
        } else {
            continue;
        };
        if slot.is_none() {
            *slot = Some(one_transform(l, line, origin)?);
        }
    }
    let Some(mut t) = train else { return Ok(None) };
    if let Some(test) = test {
        let mut differ = Vec::new();
        if (&test.mean, &test.std) != (&t.mean, &t.std) {
            differ.push("mean_value/scale");
        }
        if test.crop != t.crop {
            differ.push("crop_size");
        }
        if !differ.is_empty() {
            return err(
                origin,
                test.line,
                format!(
                    "the TEST-phase Data layer's transform_param differs from the TRAIN one (line {}) in {}: convoy normalises and crops the training and test sets alike; hint: give both the same scale, mean_value and crop_size (only mirror may differ)",
                    t.line,
                    differ.join(" and ")
                ),
            );
        }
        t.test_mirror = test.mirror;
    }
    Ok(Some(t))
}

/// The `transform_param` of Data layer `l` (at `line`).
fn one_transform(l: &Msg, line: usize, origin: &str) -> Result<Transform, CaffeError> {
    let (p, line) = match l.all("transform_param").next() {
        Some((Value::Msg(p), at)) => (p.clone(), at),
        _ => (Msg::default(), line),
    };
    p.only(&["scale", "mean_value", "mean_file", "crop_size", "mirror"], origin, "transform_param")?;
    if let Some((_, at)) = p.scalar("mean_file") {
        return err(origin, at, "transform_param mean_file is not read; hint: give the mean per channel with mean_value (one per channel, on 0..255)");
    }
    let scale: f32 = num(&p, "scale", origin)?.unwrap_or(1.0);
    if !(scale.is_finite() && scale > 0.0) {
        return err(origin, line, format!("transform_param scale {scale} must be a positive number (e.g. 0.00390625)"));
    }
    let mut mean = Vec::new();
    for (v, at) in p.all("mean_value") {
        match v {
            Value::Scalar(s) => {
                mean.push(
                    s.parse::<f32>().ok().filter(|m| m.is_finite()).ok_or_else(|| {
                        CaffeError::at(origin, at, format!("'mean_value: {s}' is not a valid number"))
                    })? / 255.0,
                )
            }
            Value::Msg(_) => return err(origin, at, "mean_value must be a number"),
        }
    }
    if mean.is_empty() {
        mean.push(0.0);
    }
    let std = vec![1.0 / (255.0 * scale); mean.len()];
    let mirror = p.scalar("mirror").is_some_and(|m| m.0 == "true");
    let crop = num::<usize>(&p, "crop_size", origin)?.filter(|&c| c > 0);
    Ok(Transform { mean, std, mirror, crop, line, test_mirror: false })
}

/// The training Data or MemoryData layer of a NetParameter, for what the CLI applies beyond the
/// model spec.
#[derive(Clone, Debug, PartialEq)]
pub struct DataLayer {
    /// "Data" or "MemoryData".
    pub ty: String,
    /// The layer's name.
    pub name: String,
    /// The layer's line.
    pub line: usize,
    /// Its `batch_size` (in `data_param` or `memory_data_param`) and that field's line; `None`
    /// when not given. Caffe runs that many samples per iteration of one process.
    pub batch_size: Option<(usize, usize)>,
}

/// The first TRAIN-phase Data/MemoryData layer of `net` (`None`: there is none, e.g. an Input
/// layer). A batch_size of 0 is an error naming its line. The TEST-phase layer's batch_size is
/// not read: convoy evaluates the whole test set, in batches of its own.
pub fn data_layer(net: &Msg, origin: &str) -> Result<Option<DataLayer>, CaffeError> {
    for (v, line) in net.all("layer") {
        let Value::Msg(l) = v else { continue };
        let (ty, param) = match l.scalar("type").map(|t| t.0) {
            Some("Data") => ("Data", "data_param"),
            Some("MemoryData") => ("MemoryData", "memory_data_param"),
            _ => continue,
        };
        if !in_phase(l, line, "TRAIN", origin)? {
            continue;
        }
        let name = l.scalar("name").map_or_else(|| ty.to_string(), |n| n.0.to_string());
        let mut batch_size = None;
        if let Some(p) = l.msg(param) {
            if let (Some(b), Some((_, at))) = (num::<usize>(p, "batch_size", origin)?, p.scalar("batch_size")) {
                if b == 0 {
                    return err(origin, at, format!("{ty} layer '{name}': {param} batch_size 0; hint: the samples per iteration, e.g. batch_size: 64 (or drop it and give --batch-size)"));
                }
                batch_size = Some((b, at));
            }
        }
        return Ok(Some(DataLayer { ty: ty.to_string(), name, line, batch_size }));
    }
    Ok(None)
}
