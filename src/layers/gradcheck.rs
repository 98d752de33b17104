//! Finite-difference gradient check for any `Layer`.
//!
//! The objective is L = Σ y·r for a fixed random projection r, evaluated and differenced in
//! f64: (L(θ+ε) − L(θ−ε)) / 2ε for every input element and every parameter, compared with the
//! analytic gradient from `backward` (dy = r). Layers are f32-only by design (one concrete CPU
//! type), so the forward passes run in f32; ε defaults to Caffe's
//! `GradientChecker` step 1e-2, which keeps f32 rounding in L (~1e-7 relative) far below the
//! tolerance. The check also verifies that `backward` accumulates into `dp` instead of
//! overwriting it.

use super::{Ctx, Layer};
use crate::tensor::{rng::Rng, Tensor};

/// Tolerances of a gradient check: pass when |a − n| ≤ atol + rtol·max(|a|, |n|).
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    /// Finite-difference step.
    pub eps: f32,
    /// Relative tolerance.
    pub rtol: f64,
    /// Absolute tolerance.
    pub atol: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance { eps: 1e-2, rtol: 2e-3, atol: 2e-4 }
    }
}

fn objective(layer: &mut dyn Layer, ctx: &Ctx, p: &[f32], x: &Tensor, r: &[f32]) -> f64 {
    let mut y = Tensor::default();
    layer.forward(ctx, p, x, &mut y).expect("gradcheck forward");
    y.data().iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum()
}

fn compare(what: &str, i: usize, analytic: f32, numeric: f64, tol: &Tolerance) -> Result<f64, String> {
    let a = analytic as f64;
    let err = (a - numeric).abs();
    if err > tol.atol + tol.rtol * a.abs().max(numeric.abs()) {
        return Err(format!("{what}[{i}]: analytic {a:.6e} vs numeric {numeric:.6e} (|diff| {err:.3e})"));
    }
    Ok(err)
}

/// Checks input and parameter gradients of `layer` at input `x` and parameters `p`.
/// Returns the largest absolute error seen, or a message naming the first element that fails.
/// Panics if forward/backward return an error (a test bug).
pub fn check_layer(layer: &mut dyn Layer, ctx: &Ctx, x: &Tensor, p: &[f32], tol: Tolerance) -> Result<f64, String> {
    let mut y = Tensor::default();
    layer.forward(ctx, p, x, &mut y).expect("gradcheck forward");
    let mut rng = Rng::new(0x5eed);
    let r: Vec<f32> = (0..y.len()).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let dy = Tensor::from_vec(y.shape(), r.clone()).expect("dy shape");
    // Pre-fill dp with 0.5 to check accumulation: the result must be 0.5 + gradient.
    let mut dp = vec![0.5f32; p.len()];
    let mut dx = Tensor::default();
    layer.backward(ctx, p, &mut dp, x, &y, &dy, Some(&mut dx)).expect("gradcheck backward");
    if dx.shape() != x.shape() {
        return Err(format!("dx has shape {:?}, x has {:?}", dx.shape(), x.shape()));
    }
    let mut worst = 0.0f64;
    let h = tol.eps as f64;
    let mut xp = x.clone();
    for i in 0..x.len() {
        let orig = xp.data()[i];
        xp.data_mut()[i] = orig + tol.eps;
        let lp = objective(layer, ctx, p, &xp, &r);
        xp.data_mut()[i] = orig - tol.eps;
        let lm = objective(layer, ctx, p, &xp, &r);
        xp.data_mut()[i] = orig;
        worst = worst.max(compare("dx", i, dx.data()[i], (lp - lm) / (2.0 * h), &tol)?);
    }
    // Buffers (running statistics) are inputs of evaluation, not parameters: no gradient, and
    // `backward` must leave their `dp` alone.
    let mut buffer = vec![false; p.len()];
    let mut off = 0;
    for spec in layer.params() {
        buffer[off..off + spec.len()].fill(spec.buffer);
        off += spec.len();
    }
    let mut pp = p.to_vec();
    for i in 0..p.len() {
        if buffer[i] {
            if dp[i] != 0.5 {
                return Err(format!("dp[{i}] of a buffer changed to {}", dp[i]));
            }
            continue;
        }
        let orig = pp[i];
        pp[i] = orig + tol.eps;
        let lp = objective(layer, ctx, &pp, x, &r);
        pp[i] = orig - tol.eps;
        let lm = objective(layer, ctx, &pp, x, &r);
        pp[i] = orig;
        worst = worst.max(compare("dp", i, dp[i] - 0.5, (lp - lm) / (2.0 * h), &tol)?);
    }
    Ok(worst)
}

/// Random parameters for `layer`, drawn from its declared initialisers with `seed`.
pub fn init_params(layer: &dyn Layer, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for spec in layer.params() {
        let start = out.len();
        out.resize(start + spec.len(), 0.0);
        spec.init.fill(&mut out[start..], &mut rng);
    }
    out
}

/// A tensor of `shape` with elements U(−1, 1) from `seed`.
pub fn random_tensor(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = Rng::new(seed);
    let n = shape.iter().product();
    Tensor::from_vec(shape, (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect()).expect("shape")
}

/// Asserts every element of `got` is within `tol` of `want` (absolute), naming the first miss.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length {} vs {}", got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "{what}[{i}]: got {g}, want {w} (tol {tol})");
    }
}
