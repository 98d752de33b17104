//! Cross-channel local response normalisation (AlexNet; Caffe `LRN` with ACROSS_CHANNELS,
//! PyTorch `nn.LocalResponseNorm`):
//! scale_c = k + α/size · Σ_{c' ∈ [c − ⌊size/2⌋, c + ⌊size/2⌋]} x_{c'}²  (zero outside the channels),
//! y_c = x_c · scale_c^(−β).
//! Backward as caffe/src/caffe/layers/lrn_layer.cpp `CrossChannelBackward_cpu`:
//! dx_c = dy_c · scale_c^(−β) − (2αβ/size) · x_c · Σ_{c' ∋ c} dy_{c'} · y_{c'} / scale_{c'}.
//! Caffe's default k is 1; the AlexNet paper used k = 2 (pass it explicitly).

use super::{check_input, Ctx, Layer, LayerError};
use crate::tensor::Tensor;

/// LRN hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrnConfig {
    /// Channels in the window (odd, as Caffe requires).
    pub size: usize,
    /// α.
    pub alpha: f32,
    /// β.
    pub beta: f32,
    /// k.
    pub k: f32,
}

/// Local response normalisation across channels.
pub struct Lrn {
    cfg: LrnConfig,
    shape: [usize; 3],
    /// scale of the last forward, (N, C, H, W).
    scale: Vec<f32>,
    /// scale^(−β) of the last forward (backward reuses it: a power costs 20× a multiply).
    spow: Vec<f32>,
    /// Backward scratch: one (C, H·W) plane of dy·y/scale per thread.
    ratio: Vec<f32>,
}

/// v^(−β), with the common exponents (AlexNet's 0.75, and 0.5, 1) as square roots and a division,
/// which vectorise; any other β through `powf`.
fn neg_pow(beta: f32) -> impl Fn(f32) -> f32 + Copy {
    move |v: f32| {
        if beta == 0.75 {
            let r = v.sqrt();
            1.0 / (r * r.sqrt())
        } else if beta == 0.5 {
            1.0 / v.sqrt()
        } else if beta == 1.0 {
            1.0 / v
        } else {
            v.powf(-beta)
        }
    }
}

impl Lrn {
    /// LRN for per-sample inputs [C, H, W].
    pub fn new(cfg: LrnConfig, in_shape: &[usize]) -> Result<Lrn, LayerError> {
        let err = |msg: String| Err(LayerError::Config { op: "lrn", msg });
        if in_shape.len() != 3 {
            return err(format!("input must be [C, H, W], got {in_shape:?}; hint: put LRN after a convolution"));
        }
        if cfg.size == 0 || cfg.size.is_multiple_of(2) {
            return err(format!("size = {} must be odd (as Caffe requires)", cfg.size));
        }
        if !(cfg.alpha.is_finite() && cfg.beta.is_finite() && cfg.k.is_finite() && cfg.k > 0.0 && cfg.alpha >= 0.0) {
            return err(format!(
                "alpha {}, beta {}, k {} must be finite, alpha ≥ 0 and k > 0",
                cfg.alpha, cfg.beta, cfg.k
            ));
        }
        Ok(Lrn {
            cfg,
            shape: [in_shape[0], in_shape[1], in_shape[2]],
            scale: Vec::new(),
            spow: Vec::new(),
            ratio: Vec::new(),
        })
    }

    /// Forward of one sample: its scale, scale^(−β) and output.
    fn forward_sample(cfg: &LrnConfig, c: usize, xs: &[f32], sc: &mut [f32], sp: &mut [f32], ys: &mut [f32]) {
        let hw = xs.len() / c;
        let (coef, half, pow) = (cfg.alpha / cfg.size as f32, cfg.size / 2, neg_pow(cfg.beta));
        sc.fill(cfg.k);
        for ch in 0..c {
            let dst = &mut sc[ch * hw..(ch + 1) * hw];
            for src in ch.saturating_sub(half)..(ch + half + 1).min(c) {
                for (d, &v) in dst.iter_mut().zip(&xs[src * hw..(src + 1) * hw]) {
                    *d += coef * v * v;
                }
            }
        }
        for (((o, p), &v), &sv) in ys.iter_mut().zip(sp.iter_mut()).zip(xs).zip(sc.iter()) {
            *p = pow(sv);
            *o = v * *p;
        }
    }

    /// Backward of one sample; `ratio` is a (C, H·W) scratch plane.
    #[allow(clippy::too_many_arguments)]
    fn backward_sample(
        cfg: &LrnConfig,
        c: usize,
        xs: &[f32],
        ys: &[f32],
        gs: &[f32],
        sc: &[f32],
        sp: &[f32],
        ratio: &mut [f32],
        ds: &mut [f32],
    ) {
        let hw = xs.len() / c;
        let (coef, half) = (2.0 * cfg.alpha * cfg.beta / cfg.size as f32, cfg.size / 2);
        for (((q, &g), &o), &sv) in ratio.iter_mut().zip(gs).zip(ys).zip(sc) {
            *q = g * o / sv;
        }
        for ((d, &g), &p) in ds.iter_mut().zip(gs).zip(sp) {
            *d = g * p;
        }
        for ch in 0..c {
            let (d, x) = (&mut ds[ch * hw..(ch + 1) * hw], &xs[ch * hw..(ch + 1) * hw]);
            for src in ch.saturating_sub(half)..(ch + half + 1).min(c) {
                for ((d, &xv), &r) in d.iter_mut().zip(x).zip(&ratio[src * hw..(src + 1) * hw]) {
                    *d -= coef * xv * r;
                }
            }
        }
    }
}

impl Layer for Lrn {
    fn kind(&self) -> &'static str {
        "lrn"
    }

    fn out_shape(&self) -> Vec<usize> {
        self.shape.to_vec()
    }

    /// # Shapes
    /// x: (N, C, H, W) → y: (N, C, H, W). Samples are independent: with `ctx.threads` > 1 they
    /// are split over the threads (results do not depend on the split).
    fn forward(&mut self, ctx: &Ctx, _p: &[f32], x: &Tensor, y: &mut Tensor) -> Result<(), LayerError> {
        check_input("lrn", x, &self.shape)?;
        let (c, per) = (self.shape[0], x.sample_len());
        y.resize(x.shape());
        self.scale.resize(x.len(), 0.0);
        self.spow.resize(x.len(), 0.0);
        let cfg = self.cfg;
        type Chunks<'a> = ((&'a [f32], &'a mut [f32]), (&'a mut [f32], &'a mut [f32]));
        let work = |((xs, sc), (sp, ys)): Chunks<'_>| Lrn::forward_sample(&cfg, c, xs, sc, sp, ys);
        if ctx.threads > 1 {
            use rayon::prelude::*;
            x.data()
                .par_chunks(per)
                .zip(self.scale.par_chunks_mut(per))
                .zip(self.spow.par_chunks_mut(per).zip(y.data_mut().par_chunks_mut(per)))
                .for_each(work);
        } else {
            x.data()
                .chunks(per)
                .zip(self.scale.chunks_mut(per))
                .zip(self.spow.chunks_mut(per).zip(y.data_mut().chunks_mut(per)))
                .for_each(work);
        }
        Ok(())
    }

    fn backward(
        &mut self,
        ctx: &Ctx,
        _p: &[f32],
        _dp: &mut [f32],
        x: &Tensor,
        y: &Tensor,
        dy: &Tensor,
        dx: Option<&mut Tensor>,
    ) -> Result<(), LayerError> {
        let Some(dx) = dx else { return Ok(()) };
        let n = check_input("lrn", x, &self.shape)?;
        let (c, per) = (self.shape[0], x.sample_len());
        dx.resize(x.shape());
        let threads = ctx.threads.clamp(1, n.max(1));
        self.ratio.resize(threads * per, 0.0);
        let (cfg, scale, spow) = (self.cfg, &self.scale, &self.spow);
        // Samples [k·chunk, (k+1)·chunk) on thread k, each with its own scratch plane.
        let chunk = n.div_ceil(threads) * per;
        let run = |(k, (ratio, ds)): (usize, (&mut [f32], &mut [f32]))| {
            let base = k * chunk;
            for (i, d) in ds.chunks_mut(per).enumerate() {
                let r = base + i * per..base + (i + 1) * per;
                Lrn::backward_sample(
                    &cfg,
                    c,
                    &x.data()[r.clone()],
                    &y.data()[r.clone()],
                    &dy.data()[r.clone()],
                    &scale[r.clone()],
                    &spow[r],
                    ratio,
                    d,
                );
            }
        };
        if threads > 1 {
            use rayon::prelude::*;
            self.ratio.par_chunks_mut(per).zip(dx.data_mut().par_chunks_mut(chunk)).enumerate().for_each(run);
        } else {
            run((0, (&mut self.ratio[..], dx.data_mut())));
        }
        Ok(())
    }

    fn flops_per_sample(&self) -> u64 {
        (self.shape.iter().product::<usize>() * (self.cfg.size + 2)) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOLDEN_Y: [f32; 8] = [
        0.0,
        0.5375411510467529,
        0.9301735162734985,
        1.1002440452575684,
        1.0042427778244019,
        0.6633256673812866,
        0.16104958951473236,
        -0.4073905646800995,
    ];
    const GOLDEN_DX: [f32; 8] = [
        0.5743858814239502,
        0.509360671043396,
        0.41299450397491455,
        0.28615644574165344,
        0.15501737594604492,
        0.013448175974190235,
        -0.1317264437675476,
        -0.2889132797718048,
    ];
    use crate::layers::{gradcheck::*, Mode};

    fn cfg(size: usize, k: f32) -> LrnConfig {
        LrnConfig { size, alpha: 0.5, beta: 0.75, k }
    }

    #[test]
    fn gradcheck_odd_shapes_every_power_path_and_threads() {
        for (n, size, beta, threads) in
            [(1, 3, 0.75, 1), (3, 5, 0.75, 2), (3, 3, 0.5, 2), (2, 5, 1.0, 1), (4, 3, 0.6, 3)]
        {
            let mut l = Lrn::new(LrnConfig { beta, ..cfg(size, 2.0) }, &[7, 2, 3]).unwrap();
            let x = random_tensor(&[n, 7, 2, 3], 21);
            let ctx = Ctx { threads, ..Ctx::simple(Mode::Train) };
            check_layer(&mut l, &ctx, &x, &[], Tolerance::default())
                .unwrap_or_else(|e| panic!("beta {beta}, {threads} threads: {e}"));
        }
    }

    #[test]
    fn the_fast_powers_match_powf() {
        for beta in [0.75f32, 0.5, 1.0, 0.6] {
            for v in [1.0f32, 1.7, 2.0, 13.5, 1e3] {
                let (got, want) = (neg_pow(beta)(v), v.powf(-beta));
                assert!((got - want).abs() <= 2e-7 * want, "{v}^-{beta}: {got} vs {want}");
            }
        }
    }

    /// Golden values from PyTorch:
    /// ```python
    /// import torch
    /// x = ((torch.arange(8.) * 0.5).sin() * 2).reshape(1, 4, 1, 2).requires_grad_()
    /// y = torch.nn.LocalResponseNorm(3, alpha=0.1, beta=0.75, k=2.0)(x)
    /// y.backward((torch.arange(8.) * 0.3).cos().reshape(1, 4, 1, 2))
    /// print(y.flatten().tolist(), x.grad.flatten().tolist())
    /// ```
    #[test]
    fn golden_pytorch() {
        let x = Tensor::from_vec(&[1, 4, 1, 2], (0..8).map(|i| (i as f32 * 0.5).sin() * 2.0).collect()).unwrap();
        let mut l = Lrn::new(LrnConfig { size: 3, alpha: 0.1, beta: 0.75, k: 2.0 }, &[4, 1, 2]).unwrap();
        let ctx = Ctx::simple(Mode::Train);
        let mut y = Tensor::default();
        l.forward(&ctx, &[], &x, &mut y).unwrap();
        let dy = Tensor::from_vec(&[1, 4, 1, 2], (0..8).map(|i| (i as f32 * 0.3).cos()).collect()).unwrap();
        let mut dx = Tensor::default();
        l.backward(&ctx, &[], &mut [], &x, &y, &dy, Some(&mut dx)).unwrap();
        assert_close("y", y.data(), &GOLDEN_Y, 1e-5);
        assert_close("dx", dx.data(), &GOLDEN_DX, 1e-5);
    }

    #[test]
    fn bad_config() {
        assert!(Lrn::new(cfg(4, 1.0), &[3, 2, 2]).is_err());
        assert!(Lrn::new(cfg(3, 0.0), &[3, 2, 2]).is_err());
        assert!(Lrn::new(cfg(3, 1.0), &[12]).is_err());
    }
}
