//! Max pooling, PyTorch `nn.MaxPool2d` semantics (kernel, stride, padding, ceil mode; padding
//! cells never win). Forward keeps the argmax of each window for backward. Also defines
//! `PoolConfig` and the window geometry shared with average pooling.

use super::geometry::Axis;
use super::{check_input, Ctx, Layer, LayerError};
use crate::tensor::Tensor;

/// Configuration of a pooling window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// Window [h, w].
    pub kernel: [usize; 2],
    /// Stride [h, w].
    pub stride: [usize; 2],
    /// Implicit padding [h, w] on each side (at most half the kernel, as PyTorch requires).
    pub padding: [usize; 2],
    /// Round the output size up (Caffe's rule) instead of down.
    pub ceil_mode: bool,
}

impl PoolConfig {
    /// A square window `k` with stride `s`, no padding, floor mode.
    pub fn new(k: usize, s: usize) -> PoolConfig {
        PoolConfig { kernel: [k, k], stride: [s, s], padding: [0, 0], ceil_mode: false }
    }
}

/// Validated pooling geometry: input [C, H, W] and output size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolGeom {
    /// The configuration.
    pub cfg: PoolConfig,
    /// Channels, height, width of the input.
    pub input: [usize; 3],
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// Per output row: input rows [start, end) clipped to the input, and the window height
    /// clipped to the padded input (the count_include_pad divisor).
    pub rows: Vec<(usize, usize, usize)>,
    /// Per output column: the same for input columns.
    pub cols: Vec<(usize, usize, usize)>,
}

impl PoolGeom {
    /// Validates `cfg` against the per-sample input shape; `op` names the layer in errors.
    pub fn new(op: &'static str, cfg: PoolConfig, in_shape: &[usize]) -> Result<PoolGeom, LayerError> {
        let &[c, h, w] = in_shape else {
            return Err(LayerError::Config { op, msg: format!("input must be [C, H, W], got {in_shape:?}") });
        };
        for a in 0..2 {
            if cfg.padding[a] * 2 > cfg.kernel[a] {
                return Err(LayerError::Config {
                    op,
                    msg: format!("padding {:?} must be at most half the kernel {:?} (as in PyTorch)", cfg.padding, cfg.kernel),
                });
            }
        }
        let oh = Axis { input: h, kernel: cfg.kernel[0], stride: cfg.stride[0], pad: cfg.padding[0], dilation: 1 }.out(op, cfg.ceil_mode)?;
        let ow = Axis { input: w, kernel: cfg.kernel[1], stride: cfg.stride[1], pad: cfg.padding[1], dilation: 1 }.out(op, cfg.ceil_mode)?;
        let ranges = |out: usize, input: usize, a: usize| -> Vec<(usize, usize, usize)> {
            (0..out)
                .map(|o| {
                    let start = (o * cfg.stride[a]) as isize - cfg.padding[a] as isize;
                    let end = (start + cfg.kernel[a] as isize).min((input + cfg.padding[a]) as isize);
                    let span = (end - start) as usize;
                    (start.max(0) as usize, (end.max(0) as usize).min(input), span)
                })
                .collect()
        };
        Ok(PoolGeom { cfg, input: [c, h, w], oh, ow, rows: ranges(oh, h, 0), cols: ranges(ow, w, 1) })
    }

    /// Per-sample output shape.
    pub fn out_shape(&self) -> Vec<usize> {
        vec![self.input[0], self.oh, self.ow]
    }
}

/// Max pooling layer.
pub struct MaxPool2d {
    g: PoolGeom,
    /// Index (within its H·W plane) of the maximum of each output element, (N, C, OH, OW).
    argmax: Vec<u32>,
}

impl MaxPool2d {
    /// Max pooling for per-sample inputs [C, H, W].
    pub fn new(cfg: PoolConfig, in_shape: &[usize]) -> Result<MaxPool2d, LayerError> {
        Ok(MaxPool2d { g: PoolGeom::new("max_pool2d", cfg, in_shape)?, argmax: Vec::new() })
    }
}

impl Layer for MaxPool2d {
    fn kind(&self) -> &'static str {
        "max_pool2d"
    }

    fn out_shape(&self) -> Vec<usize> {
        self.g.out_shape()
    }

    /// # Shapes
    /// x: (N, C, H, W) → y: (N, C, OH, OW)
    fn forward(&mut self, ctx: &Ctx, _p: &[f32], x: &Tensor, y: &mut Tensor) -> Result<(), LayerError> {
        let n = check_input("max_pool2d", x, &self.g.input)?;
        let [c, h, w] = self.g.input;
        let (oh, ow) = (self.g.oh, self.g.ow);
        y.resize(&[n, c, oh, ow]);
        self.argmax.resize(y.len(), 0);
        let g = &self.g;
        let plane = |(xp, (yp, ap)): (&[f32], (&mut [f32], &mut [u32]))| {
            for (oy, &(h0, h1, _)) in g.rows.iter().enumerate() {
                for (ox, &(w0, w1, _)) in g.cols.iter().enumerate() {
                    let (mut best, mut arg) = (f32::NEG_INFINITY, (h0 * w + w0) as u32);
                    for iy in h0..h1 {
                        for (ix, &v) in xp[iy * w + w0..iy * w + w1].iter().enumerate() {
                            // `>` keeps the first maximum; NaN propagates as in PyTorch.
                            // Branch-free select by bit masks: on real activations this comparison is
                            // a coin flip, and mispredicted branches cost 10× the arithmetic.
                            let m = 0u32.wrapping_sub(((v > best) | v.is_nan()) as u32);
                            best = f32::from_bits((best.to_bits() & !m) | (v.to_bits() & m));
                            arg = (arg & !m) | ((iy * w + w0 + ix) as u32 & m);
                        }
                    }
                    yp[oy * ow + ox] = best;
                    ap[oy * ow + ox] = arg;
                }
            }
        };
        let (xs, ys, args) = (x.data().chunks_exact(h * w), y.data_mut().chunks_exact_mut(oh * ow), self.argmax.chunks_exact_mut(oh * ow));
        if ctx.threads > 1 {
            use rayon::prelude::*;
            x.data().par_chunks_exact(h * w).zip(y.data_mut().par_chunks_exact_mut(oh * ow).zip(self.argmax.par_chunks_exact_mut(oh * ow))).for_each(plane);
        } else {
            xs.zip(ys.zip(args)).for_each(plane);
        }
        Ok(())
    }

    fn backward(&mut self, ctx: &Ctx, _p: &[f32], _dp: &mut [f32], x: &Tensor, _y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) -> Result<(), LayerError> {
        let Some(dx) = dx else { return Ok(()) };
        let [_, h, w] = self.g.input;
        let plane_out = self.g.oh * self.g.ow;
        dx.resize(x.shape());
        let plane = |(dxp, (dyp, ap)): (&mut [f32], (&[f32], &[u32]))| {
            dxp.fill(0.0);
            for (&g, &a) in dyp.iter().zip(ap) {
                dxp[a as usize] += g;
            }
        };
        let work = (dx.data_mut().chunks_exact_mut(h * w), (dy.data().chunks_exact(plane_out), self.argmax.chunks_exact(plane_out)));
        if ctx.threads > 1 {
            use rayon::prelude::*;
            dx.data_mut().par_chunks_exact_mut(h * w).zip(dy.data().par_chunks_exact(plane_out).zip(self.argmax.par_chunks_exact(plane_out))).for_each(plane);
        } else {
            work.0.zip(work.1 .0.zip(work.1 .1)).for_each(plane);
        }
        Ok(())
    }

    fn flops_per_sample(&self) -> u64 {
        (self.g.input[0] * self.g.oh * self.g.ow * self.g.cfg.kernel[0] * self.g.cfg.kernel[1]) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{gradcheck::*, Mode};
    use crate::tensor::rng::Rng;

    const GOLDEN_SHAPE: [usize; 4] = [1, 2, 3, 4];
    const GOLDEN_Y: [f32; 24] = [0.7965654730796814, 0.8956986665725708, 0.9958808422088623, 0.9612752199172974, 0.7965654730796814, 0.9964756369590759, 0.9964756369590759, 0.7924270033836365, 0.6793047785758972, 0.9964756369590759, 0.9964756369590759, 0.7924270033836365, 0.9016759991645813, 0.9970241189002991, 0.957429826259613, 0.5123879313468933, 0.9016759991645813, 0.9970241189002991, 0.957429826259613, 0.6892436742782593, 0.9975263476371765, 0.9975263476371765, 0.7840402722358704, 0.6892436742782593];
    const GOLDEN_DX: [f32; 60] = [0.0, 0.0, 0.0, 0.8775825500488281, 0.5403023362159729, 0.07073719799518585, 0.5838531255722046, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.6536436080932617, 0.0, -1.7182697057724, 0.0, -0.22778689861297607, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.814670205116272, 0.37457573413848877, -0.1572279930114746, 0.0, 0.3466353118419647, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.5138673782348633, 0.0, -1.3146084547042847, 0.0, 0.004425697959959507, 0.0, 0.0];

    /// Distinct values 0.05 apart, shuffled, so ±eps never changes a window's argmax.
    fn separated(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let mut v: Vec<f32> = (0..n).map(|i| i as f32 * 0.05 - n as f32 * 0.025).collect();
        Rng::new(seed).shuffle(&mut v);
        Tensor::from_vec(shape, v).unwrap()
    }

    #[test]
    fn gradcheck_stride_padding_ceil() {
        let cases = [
            (1, PoolConfig::new(2, 2), [2, 4, 6]),
            (3, PoolConfig::new(3, 2), [2, 7, 5]),
            (3, PoolConfig { kernel: [3, 2], stride: [2, 1], padding: [1, 1], ceil_mode: true }, [1, 6, 5]),
            (1, PoolConfig { kernel: [3, 3], stride: [2, 2], padding: [0, 0], ceil_mode: true }, [2, 6, 6]),
        ];
        for (n, cfg, s) in cases {
            let mut l = MaxPool2d::new(cfg, &s).unwrap();
            let x = separated(&[n, s[0], s[1], s[2]], 3);
            check_layer(&mut l, &Ctx::simple(Mode::Train), &x, &[], Tolerance::default()).unwrap();
        }
    }

    /// Golden values from PyTorch:
    /// ```python
    /// import torch
    /// x = (torch.arange(2 * 5 * 6.).reshape(1, 2, 5, 6) * 0.37).sin().requires_grad_()
    /// y = torch.nn.functional.max_pool2d(x, 3, 2, padding=1, ceil_mode=True)
    /// y.backward((torch.arange(y.numel() * 1.).reshape(y.shape) * 0.5).cos())
    /// print(list(y.shape), y.flatten().tolist(), x.grad.flatten().tolist())
    /// ```
    #[test]
    fn golden_pytorch_ceil_mode_with_padding() {
        let x = Tensor::from_vec(&[1, 2, 5, 6], (0..60).map(|i| (i as f32 * 0.37).sin()).collect()).unwrap();
        let cfg = PoolConfig { kernel: [3, 3], stride: [2, 2], padding: [1, 1], ceil_mode: true };
        let mut l = MaxPool2d::new(cfg, &[2, 5, 6]).unwrap();
        let ctx = Ctx::simple(Mode::Train);
        let mut y = Tensor::default();
        l.forward(&ctx, &[], &x, &mut y).unwrap();
        assert_eq!(y.shape(), &GOLDEN_SHAPE);
        let dy = Tensor::from_vec(y.shape(), (0..y.len()).map(|i| (i as f32 * 0.5).cos()).collect()).unwrap();
        let mut dx = Tensor::default();
        l.backward(&ctx, &[], &mut [], &x, &y, &dy, Some(&mut dx)).unwrap();
        assert_close("y", y.data(), &GOLDEN_Y, 1e-6);
        assert_close("dx", dx.data(), &GOLDEN_DX, 1e-6);
    }

    #[test]
    fn bad_configs_are_errors() {
        assert!(MaxPool2d::new(PoolConfig::new(5, 1), &[1, 3, 3]).is_err());
        assert!(MaxPool2d::new(PoolConfig { kernel: [2, 2], stride: [1, 1], padding: [2, 0], ceil_mode: false }, &[1, 8, 8]).is_err());
        assert!(MaxPool2d::new(PoolConfig::new(2, 0), &[1, 8, 8]).is_err());
        assert!(MaxPool2d::new(PoolConfig::new(2, 2), &[8, 8]).is_err());
        let mut l = MaxPool2d::new(PoolConfig::new(2, 2), &[1, 4, 4]).unwrap();
        let mut y = Tensor::default();
        assert!(l.forward(&Ctx::simple(Mode::Eval), &[], &Tensor::zeros(&[1, 1, 4, 5]), &mut y).is_err());
    }
}
