//! A whole model's spec (`ModelSpec`): its input, classes and ordered layers, read from TOML,
//! checked for where each layer takes its inputs, and cut into the stages of a pipeline.

use super::LayerSpec;
use serde::{Deserialize, Serialize};

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

/// The name by which a layer reads the net's input (no layer may take it).
pub const INPUT: &str = "input";

/// Names of the built-in models.
pub const ZOO: &[&str] =
    &["lenet", "lenet-caffe", "keras-mnist", "alexnet", "alexnet-cifar", "vgg11-cifar", "resnet20", "resnet20-b"];

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
    /// A Caffe prototxt that convoy cannot read (the file and line, and what is wrong).
    #[error("{0}")]
    Caffe(crate::net::caffe_error::CaffeError),
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
    /// The inputs of every layer: an earlier layer's index, or `None` for the net's input.
    /// Errors name the layer and the input that is not an earlier layer.
    pub fn sources(&self) -> Result<Vec<Vec<Option<usize>>>, String> {
        let mut out = Vec::with_capacity(self.layers.len());
        for (i, l) in self.layers.iter().enumerate() {
            let names = l.inputs();
            if names.is_empty() {
                if l.is_join() {
                    return Err(format!("layer '{}' ({}) lists no inputs; hint: inputs = [\"a\", \"b\"]", l.name(), i));
                }
                out.push(vec![i.checked_sub(1)]);
                continue;
            }
            let mut srcs = Vec::with_capacity(names.len());
            for n in names {
                if n == INPUT {
                    srcs.push(None);
                    continue;
                }
                match self.layers[..i].iter().position(|e| e.name() == n) {
                    Some(j) => srcs.push(Some(j)),
                    None if self.layers[i..].iter().any(|e| e.name() == n) => {
                        return Err(format!(
                            "layer '{}' reads '{n}', which comes after it; hint: list layers so that inputs come first",
                            l.name()
                        ))
                    }
                    None => {
                        return Err(format!(
                        "layer '{}' reads '{n}', which is no layer; hint: use an earlier layer's name or \"{INPUT}\"",
                        l.name()
                    ))
                    }
                }
            }
            out.push(srcs);
        }
        Ok(out)
    }

    /// True when the model can be cut between layers `after` and `after + 1` (a pipeline stage
    /// boundary, a model-parallel segment): the only edge across it is `after`'s output.
    pub fn can_cut_after(&self, after: usize) -> bool {
        let Ok(srcs) = self.sources() else { return false };
        srcs.iter().skip(after + 1).all(|s| s.iter().all(|&j| j.is_some_and(|j| j >= after)))
    }

    /// Layers `range` as a model of their own, whose input (`input`, per-sample) is the output
    /// of layer `range.start - 1`; `name` names it. Errors when an edge other than that one
    /// crosses either end of the range.
    pub fn slice(&self, range: std::ops::Range<usize>, input: Vec<usize>, name: String) -> Result<ModelSpec, String> {
        let (first, end) = (range.start, range.end);
        if first > 0 && !self.can_cut_after(first - 1) {
            return Err(format!("cannot cut '{}' before layer '{}': a connection (a residual shortcut) crosses there; hint: cut where only one tensor passes, e.g. after a block's last layer", self.name, self.layers[first].name()));
        }
        if end < self.layers.len() && !self.can_cut_after(end - 1) {
            return Err(format!("cannot cut '{}' after layer '{}': a connection (a residual shortcut) crosses there; hint: cut where only one tensor passes", self.name, self.layers[end - 1].name()));
        }
        let before = first.checked_sub(1).map(|j| self.layers[j].name().to_string());
        let layers = self.layers[range]
            .iter()
            .map(|l| {
                let mut l = l.clone();
                l.map_inputs(&mut |n| (Some(n) == before.as_deref()).then(|| INPUT.to_string()));
                l
            })
            .collect();
        Ok(ModelSpec { name, input, classes: self.classes, layers })
    }

    /// Parses a TOML model spec; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<ModelSpec, SpecError> {
        toml::from_str(text).map_err(|e| SpecError::Parse { origin: origin.to_string(), msg: e.to_string() })
    }
}
