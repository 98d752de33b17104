//! The model as the planner sees it: each layer's seconds per sample and per call, parameters
//! and output size (`LayerCost`), and the whole model's (`ModelCost`), built from multiply–add
//! counts and a node speed here, or read from a measured profile (`calibrate`).

use super::{bad, PlanError};
use crate::net::{ModelSpec, Net};
use serde::{Deserialize, Serialize};

/// One layer, as the cost model sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerCost {
    /// Layer name.
    pub name: String,
    /// Forward seconds per sample on one node.
    pub fwd_s: f64,
    /// Backward seconds per sample on one node.
    pub bwd_s: f64,
    /// Forward seconds per call, whatever its batch (buffers, weight traffic): a call on b
    /// samples takes `fwd_fixed_s + b·fwd_s`. Measured by `calibrate` at two batch sizes; 0
    /// from FLOP counts.
    #[serde(default)]
    pub fwd_fixed_s: f64,
    /// Backward seconds per call (a Linear layer's weight gradient is written once per call:
    /// micro-batches pay it each time).
    #[serde(default)]
    pub bwd_fixed_s: f64,
    /// Parameters.
    pub params: usize,
    /// Output values per sample.
    pub out: usize,
    /// A fully connected layer (the hybrid splits these).
    pub fc: bool,
    /// A pipeline stage may end after this layer (no residual connection crosses the point).
    #[serde(default = "yes")]
    pub cut_after: bool,
    /// The kernel the layer ran when calibrated ("direct-avx512", "im2col+gemm"; empty where
    /// there is one way, or from FLOP counts).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kernel: String,
}

fn yes() -> bool {
    true
}

impl LayerCost {
    /// Forward seconds of one call on `samples` samples.
    pub fn fwd(&self, samples: f64) -> f64 {
        self.fwd_fixed_s + samples * self.fwd_s
    }

    /// Backward seconds of one call on `samples` samples.
    pub fn bwd(&self, samples: f64) -> f64 {
        self.bwd_fixed_s + samples * self.bwd_s
    }

    /// Forward + backward seconds of one call on `samples` samples.
    pub fn step(&self, samples: f64) -> f64 {
        self.fwd(samples) + self.bwd(samples)
    }
}

/// A model's costs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelCost {
    /// Model name.
    pub model: String,
    /// Per-sample input values.
    pub input: usize,
    /// Layers in order.
    pub layers: Vec<LayerCost>,
}

impl ModelCost {
    /// Costs from multiply–add counts and a node speed (`gflops`: 10^9 floating-point operations
    /// per second; a multiply–add is 2, backward is twice forward).
    pub fn from_flops(spec: &ModelSpec, gflops: f64) -> Result<ModelCost, PlanError> {
        if !(gflops.is_finite() && gflops > 0.0) {
            return bad(format!("--node-gflops {gflops} must be a positive number; hint: a Xeon core does about 50"));
        }
        let net = Net::build(spec).map_err(|e| PlanError::Input(e.to_string()))?;
        let layout = net.layout();
        let layers = (0..net.num_layers())
            .map(|i| {
                let fwd = net.flops_per_sample()[i] as f64 * 2.0 / (gflops * 1e9);
                LayerCost {
                    name: net.layer_names()[i].clone(),
                    fwd_s: fwd,
                    bwd_s: 2.0 * fwd,
                    fwd_fixed_s: 0.0,
                    bwd_fixed_s: 0.0,
                    params: layout.layer_range(i).len(),
                    out: net.layer_out_shape(i).iter().product(),
                    fc: matches!(spec.layers[i], crate::net::LayerSpec::Linear { .. }),
                    cut_after: i + 1 == net.num_layers() || spec.can_cut_after(i),
                    kernel: String::new(),
                }
            })
            .collect();
        Ok(ModelCost { model: spec.name.clone(), input: spec.input.iter().product(), layers })
    }

    /// Parameters in all.
    pub fn params(&self) -> usize {
        self.layers.iter().map(|l| l.params).sum()
    }

    /// Forward + backward seconds per sample.
    pub fn sample_s(&self) -> f64 {
        self.layers.iter().map(|l| l.fwd_s + l.bwd_s).sum()
    }

    /// Forward + backward seconds of one step on `samples` samples (every layer called once).
    pub fn step_s(&self, samples: f64) -> f64 {
        self.layers.iter().map(|l| l.step(samples)).sum()
    }

    /// Activation bytes held per sample for backward (every layer's output, and the input).
    pub fn act_bytes(&self) -> f64 {
        4.0 * (self.input + self.layers.iter().map(|l| l.out).sum::<usize>()) as f64
    }
}
