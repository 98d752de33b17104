//! Optimizers on the flat parameter buffer: SGD (momentum, dampening, Nesterov, weight decay)
//! and Adam/AdamW with exactly PyTorch's update rules, plus LR schedules (`schedule`).
//!
//! An optimizer holds one state buffer per kind (e.g. "momentum_buffer"), each as long as the
//! parameters, named as in PyTorch's optimizer state so checkpoints can store them by parameter.
//! `begin_step` advances the step count once per global update; `update_range` then updates any
//! sub-range with the matching state slice, which serves gradient buckets and parameter-server
//! shards; `step` does both for the whole buffer.

pub mod adam;
pub mod schedule;
pub mod sgd;
#[cfg(test)]
mod tests;

use crate::net::layout::ParamMult;
use std::ops::Range;
use thiserror::Error;

/// A hyper-parameter that cannot work.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum OptimError {
    /// A value out of range.
    #[error("optimizer: {field} = {value} is invalid: {hint}")]
    Invalid {
        /// The field (flag) name.
        field: &'static str,
        /// The value given.
        value: String,
        /// What would be valid.
        hint: String,
    },
    /// An LR schedule that does not parse.
    #[error("invalid --schedule '{spec}': {msg}; grammar: constant | step:SIZE:GAMMA | multistep:M1,M2,..:GAMMA | cosine[:T_MAX[:ETA_MIN]] (no T_MAX: the whole run) | inv:GAMMA:POWER | poly:MAX_ITER:POWER | exp:GAMMA, optionally prefixed warmup:N,")]
    Schedule {
        /// The spec given.
        spec: String,
        /// What is wrong.
        msg: String,
    },
}

fn invalid(field: &'static str, value: impl ToString, hint: &str) -> OptimError {
    OptimError::Invalid { field, value: value.to_string(), hint: hint.to_string() }
}

/// Which optimizer, with its hyper-parameters (the learning rate comes from the schedule).
#[derive(Clone, Debug, PartialEq)]
pub enum OptimizerConfig {
    /// torch.optim.SGD.
    Sgd {
        /// Momentum factor.
        momentum: f32,
        /// Dampening of the momentum.
        dampening: f32,
        /// Nesterov momentum.
        nesterov: bool,
        /// L2 penalty added to the gradient.
        weight_decay: f32,
    },
    /// torch.optim.Adam (L2 weight decay added to the gradient).
    Adam {
        /// β₁.
        beta1: f32,
        /// β₂.
        beta2: f32,
        /// ε.
        eps: f32,
        /// L2 penalty.
        weight_decay: f32,
    },
    /// torch.optim.AdamW (decoupled weight decay).
    AdamW {
        /// β₁.
        beta1: f32,
        /// β₂.
        beta2: f32,
        /// ε.
        eps: f32,
        /// Decoupled weight decay.
        weight_decay: f32,
    },
}

impl OptimizerConfig {
    /// From CLI values: `name` is sgd, adam or adamw; Adam/AdamW use PyTorch's defaults
    /// (β = 0.9/0.999, ε = 1e-8; AdamW weight decay 0.01 when none is given).
    pub fn from_name(name: &str, momentum: f32, nesterov: bool, weight_decay: Option<f32>) -> Result<Self, OptimError> {
        let cfg = match name {
            "sgd" => {
                OptimizerConfig::Sgd { momentum, dampening: 0.0, nesterov, weight_decay: weight_decay.unwrap_or(0.0) }
            }
            "adam" => {
                OptimizerConfig::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: weight_decay.unwrap_or(0.0) }
            }
            "adamw" => OptimizerConfig::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: weight_decay.unwrap_or(0.01),
            },
            other => return Err(invalid("optimizer", other, "use sgd, adam or adamw")),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every hyper-parameter.
    pub fn validate(&self) -> Result<(), OptimError> {
        let nonneg = |field, v: f32| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(invalid(field, v, "must be a finite number ≥ 0"))
            }
        };
        let beta =
            |field, v: f32| if (0.0..1.0).contains(&v) { Ok(()) } else { Err(invalid(field, v, "must be in [0, 1)")) };
        match *self {
            OptimizerConfig::Sgd { momentum, dampening, nesterov, weight_decay } => {
                nonneg("momentum", momentum)?;
                nonneg("weight-decay", weight_decay)?;
                if !(0.0..=1.0).contains(&dampening) {
                    return Err(invalid("dampening", dampening, "must be in [0, 1]"));
                }
                if nesterov && (momentum <= 0.0 || dampening != 0.0) {
                    return Err(invalid(
                        "nesterov",
                        "true",
                        "Nesterov needs momentum > 0 and zero dampening (as in PyTorch)",
                    ));
                }
                Ok(())
            }
            OptimizerConfig::Adam { beta1, beta2, eps, weight_decay }
            | OptimizerConfig::AdamW { beta1, beta2, eps, weight_decay } => {
                beta("beta1", beta1)?;
                beta("beta2", beta2)?;
                nonneg("eps", eps)?;
                nonneg("weight-decay", weight_decay)
            }
        }
    }

    /// An optimizer for `len` values where the values in each of `ranges` (sorted, disjoint:
    /// `ParamLayout::mult_ranges`) learn at lr·`lr_mult` with weight decay wd·`decay_mult`;
    /// frozen ranges (lr_mult 0: the buffers) are never changed and their state stays zero.
    /// Without ranges it is the plain optimizer (no cost, bit-identical).
    pub fn build_scaled(
        &self,
        len: usize,
        ranges: Vec<(Range<usize>, ParamMult)>,
    ) -> Result<Box<dyn Optimizer>, OptimError> {
        for (r, m) in &ranges {
            if !(m.lr.is_finite() && m.lr >= 0.0 && m.decay.is_finite() && m.decay >= 0.0) {
                return Err(invalid(
                    "lr_mult/decay_mult",
                    format!("{}/{} at {r:?}", m.lr, m.decay),
                    "multipliers must be finite numbers ≥ 0",
                ));
            }
        }
        let inner = self.build(len)?;
        Ok(if ranges.is_empty() { inner } else { Box::new(Scaled { inner, ranges }) })
    }

    /// An optimizer for `len` parameters.
    pub fn build(&self, len: usize) -> Result<Box<dyn Optimizer>, OptimError> {
        self.validate()?;
        Ok(match *self {
            OptimizerConfig::Sgd { momentum, dampening, nesterov, weight_decay } => {
                Box::new(sgd::Sgd::new(len, momentum, dampening, nesterov, weight_decay))
            }
            OptimizerConfig::Adam { beta1, beta2, eps, weight_decay } => {
                Box::new(adam::Adam::new(len, beta1, beta2, eps, weight_decay, false))
            }
            OptimizerConfig::AdamW { beta1, beta2, eps, weight_decay } => {
                Box::new(adam::Adam::new(len, beta1, beta2, eps, weight_decay, true))
            }
        })
    }
}

/// An optimizer's state buffers by name (each as long as the parameters) and its update count:
/// what a checkpoint holds besides the weights.
pub type OptimizerState = (Vec<(&'static str, Vec<f32>)>, u64);

/// An optimizer over a flat parameter buffer.
pub trait Optimizer: Send {
    /// Starts a global update: advances the step count (used by Adam's bias correction).
    fn begin_step(&mut self);
    /// Updates `params` (the slice for `range` of the full buffer) from `grads` (same slice).
    /// Call after `begin_step`; disjoint ranges of one step may be updated in any order.
    fn update_range(&mut self, range: Range<usize>, params: &mut [f32], grads: &[f32], lr: f32) {
        self.update_range_decay(range, params, grads, lr, 1.0);
    }
    /// `update_range` with the weight decay multiplied by `decay_mult` (Caffe's decay_mult).
    fn update_range_decay(&mut self, range: Range<usize>, params: &mut [f32], grads: &[f32], lr: f32, decay_mult: f32);
    /// One whole update: `begin_step` then `update_range` over everything.
    fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32) {
        self.begin_step();
        self.update_range(0..params.len(), params, grads, lr);
    }
    /// State buffers by PyTorch name, each as long as the parameters.
    fn state(&self) -> Vec<(&'static str, &[f32])>;
    /// Mutable state buffers (for restoring a checkpoint).
    fn state_mut(&mut self) -> Vec<(&'static str, &mut [f32])>;
    /// Updates done.
    fn steps(&self) -> u64;
    /// Sets the update count (for restoring a checkpoint).
    fn set_steps(&mut self, n: u64);
}

/// An optimizer whose ranges learn with multiplied rates and weight decays (Caffe's
/// `lr_mult`/`decay_mult`); frozen ranges (BatchNorm's running statistics: no gradient, and no
/// weight decay or momentum may move them; lr_mult 0) are skipped, so their state stays zero.
struct Scaled {
    inner: Box<dyn Optimizer>,
    /// Sorted, disjoint.
    ranges: Vec<(Range<usize>, ParamMult)>,
}

impl Optimizer for Scaled {
    fn begin_step(&mut self) {
        self.inner.begin_step();
    }

    fn update_range_decay(&mut self, range: Range<usize>, params: &mut [f32], grads: &[f32], lr: f32, decay_mult: f32) {
        let mut at = range.start;
        let first = self.ranges.partition_point(|f| f.0.end <= range.start);
        for (f, m) in &self.ranges[first..] {
            if f.start >= range.end {
                break;
            }
            // The part before `f` learns as usual, then `f` ∩ `range` with its multipliers.
            if f.start > at {
                let (a, b) = (at - range.start, f.start - range.start);
                self.inner.update_range_decay(at..f.start, &mut params[a..b], &grads[a..b], lr, decay_mult);
            }
            let (s, e) = (f.start.max(at), f.end.min(range.end));
            if !m.is_frozen() && s < e {
                let (a, b) = (s - range.start, e - range.start);
                self.inner.update_range_decay(s..e, &mut params[a..b], &grads[a..b], lr * m.lr, decay_mult * m.decay);
            }
            at = at.max(e);
        }
        if at < range.end {
            let a = at - range.start;
            self.inner.update_range_decay(at..range.end, &mut params[a..], &grads[a..], lr, decay_mult);
        }
    }

    fn state(&self) -> Vec<(&'static str, &[f32])> {
        self.inner.state()
    }

    fn state_mut(&mut self) -> Vec<(&'static str, &mut [f32])> {
        self.inner.state_mut()
    }

    fn steps(&self) -> u64 {
        self.inner.steps()
    }

    fn set_steps(&mut self, n: u64) {
        self.inner.set_steps(n);
    }
}
