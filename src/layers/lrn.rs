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
    /// Per-pixel scratch for backward, (C, H·W).
    ratio: Vec<f32>,
}

impl Lrn {
    /// LRN for per-sample inputs [C, H, W].
    pub fn new(cfg: LrnConfig, in_shape: &[usize]) -> Result<Lrn, LayerError> {
        let err = |msg: String| Err(LayerError::Config { op: "lrn", msg });
        if in_shape.len() != 3 {
            return err(format!("input must be [C, H, W], got {in_shape:?}; hint: put LRN after a convolution"));
        }
        if cfg.size == 0 || cfg.size % 2 == 0 {
            return err(format!("size = {} must be odd (as Caffe requires)", cfg.size));
        }
        if !(cfg.alpha.is_finite() && cfg.beta.is_finite() && cfg.k.is_finite() && cfg.k > 0.0 && cfg.alpha >= 0.0) {
            return err(format!("alpha {}, beta {}, k {} must be finite, alpha ≥ 0 and k > 0", cfg.alpha, cfg.beta, cfg.k));
        }
        Ok(Lrn { cfg, shape: [in_shape[0], in_shape[1], in_shape[2]], scale: Vec::new(), ratio: Vec::new() })
    }

    fn window(&self, c: usize) -> std::ops::Range<usize> {
        let half = self.cfg.size / 2;
        c.saturating_sub(half)..(c + half + 1).min(self.shape[0])
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
    /// x: (N, C, H, W) → y: (N, C, H, W)
    fn forward(&mut self, _ctx: &Ctx, _p: &[f32], x: &Tensor, y: &mut Tensor) -> Result<(), LayerError> {
        let n = check_input("lrn", x, &self.shape)?;
        let [c, h, w] = self.shape;
        let hw = h * w;
        y.resize(x.shape());
        self.scale.resize(x.len(), 0.0);
        let coef = self.cfg.alpha / self.cfg.size as f32;
        for s in 0..n {
            let xs = &x.data()[s * c * hw..(s + 1) * c * hw];
            let sc = &mut self.scale[s * c * hw..(s + 1) * c * hw];
            sc.fill(self.cfg.k);
            for ch in 0..c {
                let half = self.cfg.size / 2;
                for src in ch.saturating_sub(half)..(ch + half + 1).min(c) {
                    let (dst, xin) = (&mut sc[ch * hw..(ch + 1) * hw], &xs[src * hw..(src + 1) * hw]);
                    for (d, &v) in dst.iter_mut().zip(xin) {
                        *d += coef * v * v;
                    }
                }
            }
            let ys = &mut y.data_mut()[s * c * hw..(s + 1) * c * hw];
            for ((o, &v), &sv) in ys.iter_mut().zip(xs).zip(sc.iter()) {
                *o = v * sv.powf(-self.cfg.beta);
            }
        }
        Ok(())
    }

    fn backward(&mut self, _ctx: &Ctx, _p: &[f32], _dp: &mut [f32], x: &Tensor, y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) -> Result<(), LayerError> {
        let Some(dx) = dx else { return Ok(()) };
        let n = check_input("lrn", x, &self.shape)?;
        let [c, h, w] = self.shape;
        let hw = h * w;
        dx.resize(x.shape());
        let coef = 2.0 * self.cfg.alpha * self.cfg.beta / self.cfg.size as f32;
        self.ratio.resize(c * hw, 0.0);
        for s in 0..n {
            let r = s * c * hw..(s + 1) * c * hw;
            let (xs, ys, gs, sc) = (&x.data()[r.clone()], &y.data()[r.clone()], &dy.data()[r.clone()], &self.scale[r.clone()]);
            for (((q, &g), &o), &sv) in self.ratio.iter_mut().zip(gs).zip(ys).zip(sc) {
                *q = g * o / sv;
            }
            let ds = &mut dx.data_mut()[r];
            for ((d, &g), &sv) in ds.iter_mut().zip(gs).zip(sc) {
                *d = g * sv.powf(-self.cfg.beta);
            }
            for ch in 0..c {
                for src in self.window(ch) {
                    for i in 0..hw {
                        ds[ch * hw + i] -= coef * xs[ch * hw + i] * self.ratio[src * hw + i];
                    }
                }
            }
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

    const GOLDEN_Y: [f32; 8] = [0.0, 0.5375411510467529, 0.9301735162734985, 1.1002440452575684, 1.0042427778244019, 0.6633256673812866, 0.16104958951473236, -0.4073905646800995];
    const GOLDEN_DX: [f32; 8] = [0.5743858814239502, 0.509360671043396, 0.41299450397491455, 0.28615644574165344, 0.15501737594604492, 0.013448175974190235, -0.1317264437675476, -0.2889132797718048];
    use crate::layers::{gradcheck::*, Mode};

    fn cfg(size: usize, k: f32) -> LrnConfig {
        LrnConfig { size, alpha: 0.5, beta: 0.75, k }
    }

    #[test]
    fn gradcheck_odd_shapes() {
        for (n, size) in [(1, 3), (3, 5)] {
            let mut l = Lrn::new(cfg(size, 2.0), &[7, 2, 3]).unwrap();
            let x = random_tensor(&[n, 7, 2, 3], 21);
            check_layer(&mut l, &Ctx::simple(Mode::Train), &x, &[], Tolerance::default()).unwrap();
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
