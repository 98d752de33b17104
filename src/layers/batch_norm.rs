//! Batch normalisation: PyTorch's `nn.BatchNorm2d` (input (N, C, H, W)) and `nn.BatchNorm1d`
//! (input (N, C)), and `nn.SyncBatchNorm` when the step's context carries a `StatSync`.
//!
//! Training, per channel c over the M values of the batch (N·H·W; under sync the sums and M run
//! over every worker's shard, so the result is that of one worker on the global batch):
//! μ = Σx/M, σ² = Σ(x − μ)²/M (biased), x̂ = (x − μ)/√(σ² + ε), y = γ·x̂ + β, and
//! running_mean ← (1 − m)·running_mean + m·μ, running_var ← (1 − m)·running_var + m·σ²·M/(M − 1)
//! (unbiased), num_batches_tracked += 1 — PyTorch's rule (torch/nn/modules/batchnorm.py).
//! Evaluation normalises with the running statistics instead.
//!
//! Backward (training): dβ = Σdy, dγ = Σdy·x̂ (over this worker's values: the gradient
//! all-reduce adds the workers up), dx = γ/√(σ² + ε)·(dy − Σdy/M − x̂·Σ(dy·x̂)/M) with the
//! two sums over the global batch (one more all-reduce of 2C values under sync).
//!
//! The running statistics are buffers in the flat buffer (`ParamSpec::buffer`): forward reads
//! them there and keeps the updated values pending (several forwards before a commit chain their
//! updates, as PyTorch's would), and `commit_buffers` writes them back after the step.
//! Sums are accumulated in f64.

use super::{check_input, Ctx, Layer, LayerError, Mode, ParamSpec};
use crate::tensor::{init::Init, Tensor};

/// Settings of a batch-norm layer (PyTorch's defaults: ε = 1e-5, momentum 0.1, affine).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormConfig {
    /// Added to the variance.
    pub eps: f32,
    /// Weight of the new batch in the running statistics.
    pub momentum: f32,
    /// Learn γ and β (`weight`, `bias`); without, y = x̂ (Caffe's BatchNorm, then a Scale layer).
    pub affine: bool,
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        BatchNormConfig { eps: 1e-5, momentum: 0.1, affine: true }
    }
}

/// The values of channel `c` in each sample of `x` (C channels of `hw` values).
fn rows(x: &[f32], c: usize, channels: usize, hw: usize) -> impl Iterator<Item = &[f32]> {
    x.chunks(hw).skip(c).step_by(channels)
}

/// Σ f(v) over `r` in 16 f32 lanes (vectorised, and more accurate than one running sum).
fn lanes_sum(r: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; 16];
    let chunks = r.chunks_exact(16);
    let rest: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for ch in chunks {
        let ch: &[f32; 16] = ch.try_into().expect("chunks of 16");
        for (a, &v) in acc.iter_mut().zip(ch) {
            *a += f(v);
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// How a channel's input maps to its output: y = (x − μ)·s + β, then max(·, 0) with a fused
/// ReLU. Forward and the fused backward's mask evaluate it with the same f32 operations, so the
/// mask is exactly where the forward's output is positive.
#[derive(Clone, Copy)]
struct Affine {
    mu: f32,
    s: f32,
    beta: f32,
    relu: bool,
}

impl Affine {
    /// Output of input `v` (before the ReLU).
    #[inline(always)]
    fn pre(&self, v: f32) -> f32 {
        (v - self.mu) * self.s + self.beta
    }

    /// Gradient `g` of the output, passed back through the ReLU: 0 where the output is not
    /// positive (`Relu::backward`'s rule).
    #[inline(always)]
    fn through_relu(&self, v: f32, g: f32) -> f32 {
        if !self.relu || self.pre(v) > 0.0 {
            g
        } else {
            0.0
        }
    }
}

/// (Σ g, Σ g·(x − μ)) over a row of inputs `x` and output gradients `g` (through the ReLU of
/// `a` when fused), in 16 f32 lanes.
fn lanes_sum2(x: &[f32], g: &[f32], a: Affine) -> (f32, f32) {
    let (mut sa, mut sb) = ([0.0f32; 16], [0.0f32; 16]);
    let (xc, gc) = (x.chunks_exact(16), g.chunks_exact(16));
    let (mut ra, mut rb) = (0.0f32, 0.0f32);
    let mu = a.mu;
    for (&xv, &gv) in xc.remainder().iter().zip(gc.remainder()) {
        let gv = a.through_relu(xv, gv);
        ra += gv;
        rb += gv * (xv - mu);
    }
    for (xs, gs) in xc.zip(gc) {
        let (xs, gs): (&[f32; 16], &[f32; 16]) =
            (xs.try_into().expect("chunks of 16"), gs.try_into().expect("chunks of 16"));
        for i in 0..16 {
            let gv = a.through_relu(xs[i], gs[i]);
            sa[i] += gv;
            sb[i] += gv * (xs[i] - mu);
        }
    }
    (sa.iter().sum::<f32>() + ra, sb.iter().sum::<f32>() + rb)
}

/// Sets `out` to `f(c)` for the `c_n` channels, on the rayon pool when `par`.
fn per_channel(par: bool, out: &mut Vec<f64>, c_n: usize, f: impl Fn(usize) -> f64 + Sync) {
    out.clear();
    out.resize(c_n, 0.0);
    per_channel_into(par, out, f);
}

/// Sets `out[c] = f(c)`, on the rayon pool when `par`.
fn per_channel_into(par: bool, out: &mut [f64], f: impl Fn(usize) -> f64 + Sync) {
    if par {
        use rayon::prelude::*;
        out.par_iter_mut().enumerate().for_each(|(c, o)| *o = f(c));
    } else {
        out.iter_mut().enumerate().for_each(|(c, o)| *o = f(c));
    }
}

/// A batch-normalisation layer.
pub struct BatchNorm {
    cfg: BatchNormConfig,
    shape: Vec<usize>,
    /// Channels.
    c: usize,
    /// Values per channel per sample (H·W, or 1).
    hw: usize,
    /// Mean and 1/√(σ² + ε) the last forward normalised with.
    mean: Vec<f64>,
    invstd: Vec<f64>,
    /// Mode of the last forward (backward differs: batch or running statistics).
    last: Mode,
    /// Running mean, running var, batches tracked: updated, not yet committed when `pending`.
    run: Vec<f32>,
    pending: bool,
    /// Scratch for the all-reduced sums, this worker's backward sums and the per-channel
    /// backward coefficients (kept: a step allocates nothing).
    sums: Vec<f64>,
    local: Vec<f64>,
    coef: Vec<(f64, f64)>,
    /// A ReLU fused into the output (`fuse_relu`).
    relu: bool,
}

const OP: &str = "batch_norm";

impl BatchNorm {
    /// The layer for per-sample inputs (C, H, W) or (C).
    pub fn new(cfg: BatchNormConfig, in_shape: &[usize]) -> Result<BatchNorm, LayerError> {
        let bad = |msg: String| Err(LayerError::Config { op: OP, msg });
        if !(in_shape.len() == 1 || in_shape.len() == 3) || in_shape.contains(&0) {
            return bad(format!("needs (C, H, W) or (C) input, got {in_shape:?}"));
        }
        if !(cfg.eps.is_finite() && cfg.eps > 0.0) {
            return bad(format!("eps = {} must be a positive number; hint: PyTorch's default is 1e-5", cfg.eps));
        }
        if !(0.0..=1.0).contains(&cfg.momentum) {
            return bad(format!("momentum = {} must be in [0, 1]; hint: PyTorch's default is 0.1", cfg.momentum));
        }
        let c = in_shape[0];
        let hw = in_shape[1..].iter().product();
        Ok(BatchNorm {
            cfg,
            shape: in_shape.to_vec(),
            c,
            hw,
            mean: vec![0.0; c],
            invstd: vec![0.0; c],
            last: Mode::Eval,
            run: vec![0.0; 2 * c + 1],
            pending: false,
            sums: Vec::new(),
            local: vec![0.0; 2 * c],
            coef: vec![(0.0, 0.0); c],
            relu: false,
        })
    }

    /// Offset of the buffers in this layer's slice.
    fn buffers_at(&self) -> usize {
        if self.cfg.affine {
            2 * self.c
        } else {
            0
        }
    }

    /// γ_c (1 without affine).
    fn gamma(&self, p: &[f32], c: usize) -> f64 {
        if self.cfg.affine {
            p[c] as f64
        } else {
            1.0
        }
    }

    /// Channel `c`'s map from input to output, with the statistics of the last forward.
    fn affine(&self, p: &[f32], c: usize) -> Affine {
        let beta = if self.cfg.affine { p[self.c + c] } else { 0.0 };
        Affine { mu: self.mean[c] as f32, s: (self.invstd[c] * self.gamma(p, c)) as f32, beta, relu: self.relu }
    }

    /// Sums `self.sums` over the workers (when syncing).
    fn reduce(&mut self, ctx: &Ctx) -> Result<(), LayerError> {
        if let Some(sync) = ctx.sync {
            sync.all_reduce_sum(&mut self.sums)
                .map_err(|e| LayerError::Config { op: OP, msg: format!("sync batch norm: {e}") })?;
        }
        Ok(())
    }
}

impl Layer for BatchNorm {
    fn kind(&self) -> &'static str {
        OP
    }

    fn out_shape(&self) -> Vec<usize> {
        self.shape.clone()
    }

    /// PyTorch's state_dict order: weight, bias, running_mean, running_var, num_batches_tracked.
    fn params(&self) -> Vec<ParamSpec> {
        let c = self.c;
        let mut v = Vec::new();
        if self.cfg.affine {
            v.push(ParamSpec::param("weight", vec![c], Init::Constant(1.0)));
            v.push(ParamSpec::param("bias", vec![c], Init::Constant(0.0)));
        }
        v.push(ParamSpec::buffer("running_mean", vec![c], Init::Constant(0.0)));
        v.push(ParamSpec::buffer("running_var", vec![c], Init::Constant(1.0)));
        v.push(ParamSpec::buffer("num_batches_tracked", vec![], Init::Constant(0.0)));
        v
    }

    /// # Shapes
    /// x: (N, C, H, W) or (N, C) → y: the same.
    fn forward(&mut self, ctx: &Ctx, p: &[f32], x: &Tensor, y: &mut Tensor) -> Result<(), LayerError> {
        let n = check_input(OP, x, &self.shape)?;
        let (c_n, b, hw) = (self.c, self.buffers_at(), self.hw);
        self.last = ctx.mode;
        if ctx.mode == Mode::Train {
            // Two passes (mean, then squared deviations): no cancellation in the variance. Each
            // row (one sample's channel) is summed in f32 lanes, the rows in f64.
            let par = ctx.threads > 1 && x.len() >= super::PAR_MIN;
            let xd = x.data();
            per_channel(par, &mut self.sums, c_n, |c| {
                rows(xd, c, c_n, hw).map(|r| lanes_sum(r, |v| v) as f64).sum::<f64>()
            });
            self.sums.push((n * self.hw) as f64);
            self.reduce(ctx)?;
            let m = self.sums[c_n];
            if m < 2.0 {
                return Err(LayerError::Config {
                    op: OP,
                    msg: format!("training needs more than 1 value per channel, got {m} (batch {n} × {} positions); hint: use a larger batch", self.hw),
                });
            }
            for c in 0..c_n {
                self.mean[c] = self.sums[c] / m;
            }
            self.sums.clear();
            let mean = &self.mean;
            per_channel(par, &mut self.sums, c_n, |c| {
                let mu = mean[c] as f32;
                rows(xd, c, c_n, hw).map(|r| lanes_sum(r, |v| (v - mu) * (v - mu)) as f64).sum::<f64>()
            });
            self.reduce(ctx)?;
            let mom = self.cfg.momentum as f64;
            if !self.pending {
                self.run.copy_from_slice(&p[b..b + 2 * c_n + 1]);
            }
            let run = &mut self.run;
            for c in 0..c_n {
                let var = self.sums[c] / m;
                self.invstd[c] = 1.0 / (var + self.cfg.eps as f64).sqrt();
                run[c] = ((1.0 - mom) * run[c] as f64 + mom * self.mean[c]) as f32;
                run[c_n + c] = ((1.0 - mom) * run[c_n + c] as f64 + mom * var * m / (m - 1.0)) as f32;
            }
            run[2 * c_n] += 1.0;
            self.pending = true;
        } else {
            for c in 0..c_n {
                self.mean[c] = p[b + c] as f64;
                self.invstd[c] = 1.0 / (p[b + c_n + c] as f64 + self.cfg.eps as f64).sqrt();
            }
        }
        y.resize(x.shape());
        let (cc, hw) = (self.c, self.hw);
        let this = &*self;
        let row = |i: usize, yo: &mut [f32], xi: &[f32]| {
            let a = this.affine(p, i % cc);
            if a.relu {
                yo.iter_mut().zip(xi).for_each(|(o, &v)| *o = a.pre(v).max(0.0));
            } else {
                yo.iter_mut().zip(xi).for_each(|(o, &v)| *o = a.pre(v));
            }
        };
        if ctx.threads > 1 && x.len() >= super::PAR_MIN {
            use rayon::prelude::*;
            y.data_mut()
                .par_chunks_mut(hw)
                .zip(x.data().par_chunks(hw))
                .enumerate()
                .with_min_len(16)
                .for_each(|(i, (yo, xi))| row(i, yo, xi));
        } else {
            y.data_mut().chunks_mut(hw).zip(x.data().chunks(hw)).enumerate().for_each(|(i, (yo, xi))| row(i, yo, xi));
        }
        Ok(())
    }

    // Long: one pass per mode (affine or not, batch or running statistics, fused ReLU) over the same per-channel
    // sums.
    fn backward(
        &mut self,
        ctx: &Ctx,
        p: &[f32],
        dp: &mut [f32],
        x: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
        dx: Option<&mut Tensor>,
    ) -> Result<(), LayerError> {
        check_input(OP, x, &self.shape)?;
        let (c_n, hw) = (self.c, self.hw);
        // Per channel: Σdy and Σdy·x̂ over this worker's values.
        let par = ctx.threads > 1 && x.len() >= super::PAR_MIN;
        let mut coef = std::mem::take(&mut self.coef);
        let (this, xd, gd) = (&*self, x.data(), dy.data());
        // Σdy and Σdy·x̂ of channel c, in one pass over its values.
        let sums = |c: usize| {
            let a = this.affine(p, c);
            rows(xd, c, c_n, hw).zip(rows(gd, c, c_n, hw)).fold((0.0f64, 0.0f64), |(s, t), (xr, gr)| {
                let (sg, sgx) = lanes_sum2(xr, gr, a);
                (s + sg as f64, t + sgx as f64 * this.invstd[c])
            })
        };
        if par {
            use rayon::prelude::*;
            coef.par_iter_mut().enumerate().for_each(|(c, o)| *o = sums(c));
        } else {
            coef.iter_mut().enumerate().for_each(|(c, o)| *o = sums(c));
        }
        self.coef = coef;
        let local = &mut self.local;
        local.resize(2 * c_n, 0.0);
        for (c, &(sg, sgx)) in self.coef.iter().enumerate() {
            (local[c], local[c_n + c]) = (sg, sgx);
        }
        if self.cfg.affine {
            for c in 0..c_n {
                dp[c] += local[c_n + c] as f32;
                dp[c_n + c] += local[c] as f32;
            }
        }
        let Some(dx) = dx else { return Ok(()) };
        dx.resize(x.shape());
        // Training: the sums over the global batch; evaluation: the statistics are constants.
        self.coef.fill((0.0, 0.0));
        if self.last == Mode::Train {
            self.sums.clear();
            self.sums.extend_from_slice(&self.local);
            self.sums.push((x.dim(0) * self.hw) as f64);
            self.reduce(ctx)?;
            let m = self.sums[2 * c_n];
            for (c, k) in self.coef.iter_mut().enumerate() {
                *k = (self.sums[c] / m, self.sums[c_n + c] / m);
            }
        }
        let (cc, hw) = (self.c, self.hw);
        let this = &*self;
        let row = |i: usize, d: &mut [f32], xi: &[f32], gi: &[f32]| {
            let c = i % cc;
            let (a, is, (mean_dy, mean_dyx)) = (this.affine(p, c), this.invstd[c], this.coef[c]);
            let s = this.gamma(p, c) * is;
            // dx = s·(dy − mean_dy − x̂·mean_dyx) = s·dy + k·(x − μ) + c0, coefficients in f64.
            let (s32, k, c0, mu) = (s as f32, (-s * is * mean_dyx) as f32, (-s * mean_dy) as f32, a.mu);
            if a.relu {
                d.iter_mut()
                    .zip(xi)
                    .zip(gi)
                    .for_each(|((o, &xv), &g)| *o = s32 * a.through_relu(xv, g) + k * (xv - mu) + c0);
            } else {
                d.iter_mut().zip(xi).zip(gi).for_each(|((o, &xv), &g)| *o = s32 * g + k * (xv - mu) + c0);
            }
        };
        if par {
            use rayon::prelude::*;
            dx.data_mut()
                .par_chunks_mut(hw)
                .zip(x.data().par_chunks(hw))
                .zip(dy.data().par_chunks(hw))
                .enumerate()
                .with_min_len(16)
                .for_each(|(i, ((d, xi), gi))| row(i, d, xi, gi));
        } else {
            dx.data_mut()
                .chunks_mut(hw)
                .zip(x.data().chunks(hw))
                .zip(dy.data().chunks(hw))
                .enumerate()
                .for_each(|(i, ((d, xi), gi))| row(i, d, xi, gi));
        }
        Ok(())
    }

    fn flops_per_sample(&self) -> u64 {
        2 * (self.c * self.hw) as u64
    }

    fn fuse_relu(&mut self, on: bool) -> bool {
        self.relu = on;
        true
    }

    fn commit_buffers(&mut self, p: &mut [f32]) {
        if std::mem::take(&mut self.pending) {
            let b = self.buffers_at();
            p[b..b + self.run.len()].copy_from_slice(&self.run);
        }
    }
}

#[cfg(test)]
mod tests;
