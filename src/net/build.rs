//! Building a `Net` from a spec: names checked, every layer built on the shapes of its inputs,
//! every branch read, the parameter layout with its multipliers, and which layers may run the
//! ReLU after them inside their own pass.

use super::{LayerSpec, ModelSpec, Net, NetError, Node, ParamLayout, ParamMult, INPUT};
use crate::layers::softmax_xent::SoftmaxCrossEntropy;
use crate::tensor::Tensor;

impl Net {
    /// Builds the net of `spec`; `classes`: its output must be the class scores (a whole model,
    /// not a segment).
    // Long: the checks of a spec in the order a reader meets them; each error names the layer it is about.
    pub(super) fn build_checked(spec: &ModelSpec, classes: bool) -> Result<Net, NetError> {
        let spec_err = |msg: String| NetError::Spec { model: spec.name.clone(), msg };
        // A whole model takes images; a segment may start anywhere (e.g. after Flatten).
        if (classes && spec.input.len() != 3) || spec.input.is_empty() || spec.input.contains(&0) {
            return Err(spec_err(format!("input must be [C, H, W] with positive sizes, got {:?}", spec.input)));
        }
        if spec.layers.is_empty() {
            return Err(spec_err("has no layers; hint: add [[layer]] tables".into()));
        }
        let srcs = spec.sources().map_err(spec_err)?;
        let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(spec.layers.len());
        let mut layers = Vec::with_capacity(spec.layers.len());
        let mut names: Vec<String> = Vec::with_capacity(spec.layers.len());
        for (index, ls) in spec.layers.iter().enumerate() {
            let name = ls.name().to_string();
            if name.is_empty() || name.contains(['.', '/', ' ']) || name == INPUT {
                return Err(spec_err(format!("layer #{index} has invalid name '{name}'; hint: use letters, digits, '_' or '-' (and not \"{INPUT}\")")));
            }
            if names.contains(&name) {
                return Err(spec_err(format!("two layers are named '{name}'; hint: names must be unique")));
            }
            let in_shapes: Vec<Vec<usize>> =
                srcs[index].iter().map(|s| s.map_or_else(|| spec.input.clone(), |j| shapes[j].clone())).collect();
            let layer =
                ls.build_node(&in_shapes).map_err(|source| NetError::Layer { layer: name.clone(), index, source })?;
            shapes.push(layer.out_shape());
            layers.push(layer);
            names.push(name);
        }
        // Every output but the last must be read (an unread branch gets no gradient: a mistake).
        let n = layers.len();
        for (j, name) in names.iter().enumerate().take(n - 1) {
            if !srcs.iter().any(|s| s.contains(&Some(j))) {
                return Err(spec_err(format!("the output of layer '{name}' is read by no layer; hint: name it in a later layer's `input`/`inputs`, or remove it")));
            }
        }
        let shape = &shapes[n - 1];
        if classes && *shape != [spec.classes] {
            return Err(spec_err(format!(
                "the last layer outputs per-sample shape {shape:?} but classes = {}; hint: end with a linear layer of out_features = {}",
                spec.classes, spec.classes
            )));
        }
        let mut layout = ParamLayout::new(
            layers
                .iter()
                .zip(&names)
                .map(|(l, n)| (n.as_str(), l.params().into_iter().map(|p| (p.name, p.shape)).collect())),
        );
        for (l, n) in layers.iter().zip(&names) {
            for p in l.params().iter().filter(|p| p.buffer) {
                layout.mark_buffer(&format!("{n}.{}", p.name));
            }
        }
        for ((ls, l), n) in spec.layers.iter().zip(&layers).zip(&names) {
            set_mults(&mut layout, ls, l, n).map_err(spec_err)?;
        }
        let mut fusable = vec![false; n];
        for i in 0..n.saturating_sub(1) {
            let relu_next = matches!(&layers[i + 1], Node::One(l) if l.kind() == "relu") && srcs[i + 1] == [Some(i)];
            let readers = srcs.iter().flatten().filter(|&&s| s == Some(i)).count();
            fusable[i] = relu_next && readers == 1 && layers[i].fuse_relu(false);
        }
        Ok(Net {
            spec: spec.clone(),
            names,
            layers,
            srcs,
            written: vec![false; n],
            dscratch: Tensor::default(),
            layout,
            acts: vec![Tensor::default(); n],
            dacts: vec![Tensor::default(); n],
            dinput: Tensor::default(),
            first_layer: 0,
            loss: SoftmaxCrossEntropy::new(),
            times: None,
            fusable,
            fused: vec![false; n],
            fusion: true,
        })
    }
}

/// Puts layer `name`'s `lr_mult`/`decay_mult` (spec `ls`) into `layout`, by the order of its
/// trainable parameters (weight, then bias), and checks them and its fillers.
fn set_mults(layout: &mut ParamLayout, ls: &LayerSpec, layer: &Node, name: &str) -> Result<(), String> {
    let trainable: Vec<&'static str> = layer.params().iter().filter(|p| !p.buffer).map(|p| p.name).collect();
    let (lr, decay) = ls.mults();
    for (field, values) in [("lr_mult", lr), ("decay_mult", decay)] {
        if values.len() > trainable.len() {
            return Err(format!(
                "layer '{name}' gives {} {field} values but has {} parameters {trainable:?}; hint: one value per parameter, weight first",
                values.len(),
                trainable.len()
            ));
        }
        if let Some(v) = values.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
            return Err(format!(
                "layer '{name}': {field} {v} is invalid; hint: a finite number ≥ 0 (0 freezes the parameter)"
            ));
        }
    }
    for (k, p) in trainable.iter().enumerate() {
        let m = ParamMult { lr: lr.get(k).copied().unwrap_or(1.0), decay: decay.get(k).copied().unwrap_or(1.0) };
        layout.set_mult(&format!("{name}.{p}"), m);
    }
    for f in ls.fillers().into_iter().flatten() {
        f.validate().map_err(|e| format!("layer '{name}': {e}"))?;
    }
    Ok(())
}
