//! SGD with momentum, dampening, Nesterov and weight decay, exactly as torch.optim.SGD
//! (https://pytorch.org/docs/stable/generated/torch.optim.SGD.html):
//! g ← g + wd·p; b ← g on the first step, else μ·b + (1 − τ)·g; g ← g + μ·b (Nesterov) or b;
//! p ← p − lr·g.

use super::Optimizer;
use std::ops::Range;

/// Stochastic gradient descent.
pub struct Sgd {
    momentum: f32,
    dampening: f32,
    nesterov: bool,
    weight_decay: f32,
    /// Momentum buffer, one per parameter ("momentum_buffer" in PyTorch's state).
    buf: Vec<f32>,
    steps: u64,
}

impl Sgd {
    /// SGD over `len` parameters (hyper-parameters validated by `OptimizerConfig`).
    pub fn new(len: usize, momentum: f32, dampening: f32, nesterov: bool, weight_decay: f32) -> Sgd {
        let buf = if momentum != 0.0 { vec![0.0; len] } else { Vec::new() };
        Sgd { momentum, dampening, nesterov, weight_decay, buf, steps: 0 }
    }
}

impl Optimizer for Sgd {
    fn begin_step(&mut self) {
        self.steps += 1;
    }

    fn update_range_decay(&mut self, range: Range<usize>, params: &mut [f32], grads: &[f32], lr: f32, decay_mult: f32) {
        let (mu, wd, damp) = (self.momentum, self.weight_decay * decay_mult, 1.0 - self.dampening);
        if mu == 0.0 {
            for (p, &g) in params.iter_mut().zip(grads) {
                *p -= lr * (g + wd * *p);
            }
            return;
        }
        let first = self.steps <= 1;
        let buf = &mut self.buf[range];
        for ((p, &g0), b) in params.iter_mut().zip(grads).zip(buf.iter_mut()) {
            let g = g0 + wd * *p;
            *b = if first { g } else { mu * *b + damp * g };
            let d = if self.nesterov { g + mu * *b } else { *b };
            *p -= lr * d;
        }
    }

    fn state(&self) -> Vec<(&'static str, &[f32])> {
        if self.buf.is_empty() {
            Vec::new()
        } else {
            vec![("momentum_buffer", &self.buf)]
        }
    }

    fn state_mut(&mut self) -> Vec<(&'static str, &mut [f32])> {
        if self.buf.is_empty() {
            Vec::new()
        } else {
            vec![("momentum_buffer", &mut self.buf)]
        }
    }

    fn steps(&self) -> u64 {
        self.steps
    }

    fn set_steps(&mut self, n: u64) {
        self.steps = n;
    }
}
