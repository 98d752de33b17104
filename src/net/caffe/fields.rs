//! Caffe fields that map onto the layer spec's extras: `param { lr_mult decay_mult }` blocks and
//! `FillerParameter`s.

use super::text::{err, num, Msg, Value};
use crate::tensor::init::{Filler, VarianceNorm};

/// A layer's `param { lr_mult decay_mult }` blocks, in order (weight, bias); a list is empty
/// when all its multipliers are 1.
pub(super) fn param_mults(l: &Msg, origin: &str) -> Result<(Vec<f32>, Vec<f32>), String> {
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
pub(super) fn filler(m: &Msg, field: &str, origin: &str) -> Result<Option<Filler>, String> {
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

