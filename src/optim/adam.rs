//! Adam and AdamW exactly as torch.optim.Adam / AdamW (non-amsgrad, non-fused):
//! Adam: g ← g + wd·p. AdamW: p ← p·(1 − lr·wd). Then m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g²,
//! p ← p − lr/(1−β₁ᵗ) · m / (√v / √(1−β₂ᵗ) + ε).

use super::Optimizer;
use std::ops::Range;

/// Adam or AdamW.
pub struct Adam {
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    decoupled: bool,
    /// First moment ("exp_avg").
    m: Vec<f32>,
    /// Second moment ("exp_avg_sq").
    v: Vec<f32>,
    steps: u64,
}

impl Adam {
    /// Adam (`decoupled` false) or AdamW (true) over `len` parameters.
    pub fn new(len: usize, beta1: f32, beta2: f32, eps: f32, weight_decay: f32, decoupled: bool) -> Adam {
        Adam { beta1, beta2, eps, weight_decay, decoupled, m: vec![0.0; len], v: vec![0.0; len], steps: 0 }
    }
}

impl Optimizer for Adam {
    fn begin_step(&mut self) {
        self.steps += 1;
    }

    fn update_range_decay(&mut self, range: Range<usize>, params: &mut [f32], grads: &[f32], lr: f32, decay_mult: f32) {
        let t = self.steps.max(1) as i32;
        let (b1, b2, eps, wd) = (self.beta1, self.beta2, self.eps, self.weight_decay * decay_mult);
        // PyTorch computes the corrections in Python floats (f64), then the step in the tensor dtype.
        let bc1 = 1.0 - (b1 as f64).powi(t);
        let bc2_sqrt = (1.0 - (b2 as f64).powi(t)).sqrt();
        let step_size = (lr as f64 / bc1) as f32;
        let bc2_sqrt = bc2_sqrt as f32;
        let m = &mut self.m[range.clone()];
        let v = &mut self.v[range];
        for (((p, &g0), m), v) in params.iter_mut().zip(grads).zip(m.iter_mut()).zip(v.iter_mut()) {
            let g = if self.decoupled {
                *p *= 1.0 - lr * wd;
                g0
            } else {
                g0 + wd * *p
            };
            *m += (g - *m) * (1.0 - b1);
            *v = *v * b2 + (1.0 - b2) * g * g;
            let denom = v.sqrt() / bc2_sqrt + eps;
            *p -= step_size * *m / denom;
        }
    }

    fn state(&self) -> Vec<(&'static str, &[f32])> {
        vec![("exp_avg", &self.m), ("exp_avg_sq", &self.v)]
    }

    fn state_mut(&mut self) -> Vec<(&'static str, &mut [f32])> {
        vec![("exp_avg", &mut self.m), ("exp_avg_sq", &mut self.v)]
    }

    fn steps(&self) -> u64 {
        self.steps
    }

    fn set_steps(&mut self, n: u64) {
        self.steps = n;
    }
}
