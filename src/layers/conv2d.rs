//! 2-D convolution, PyTorch `nn.Conv2d` semantics (kernel, stride, padding, dilation, groups,
//! bias), as im2col + GEMM per sample and group (Caffe's scheme).
//!
//! Threads: with `ctx.threads` = T > 1 the batch is cut into T contiguous chunks processed in
//! parallel on rayon, each with its own scratch and single-threaded GEMMs; the weight-gradient
//! partials of the chunks are then summed in chunk order, so results do not depend on scheduling.
//! Per-sample GEMMs keep the column matrix in cache (LeNet conv2: 800 × 196 floats = 627 KB)
//! where a whole-batch im2col would stream a 40 MB matrix through memory. The column matrix is
//! recomputed in backward instead of cached from forward: im2col costs one copy per element,
//! the GEMMs it feeds cost Og multiply-adds per element.
//! A 1×1 convolution with stride 1 and no padding uses the input as its column matrix directly.

use super::geometry::Axis;
use super::{check_input, Ctx, Layer, LayerError, ParamSpec};
use crate::tensor::gemm::{sgemm, MatRef};
use crate::tensor::im2col::{col2im, im2col, ConvShape};
use crate::tensor::{init::Init, Tensor};
use rayon::prelude::*;

/// Configuration of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// Output channels.
    pub out_channels: usize,
    /// Kernel [h, w].
    pub kernel: [usize; 2],
    /// Stride [h, w].
    pub stride: [usize; 2],
    /// Zero padding [h, w] on each side.
    pub padding: [usize; 2],
    /// Dilation [h, w].
    pub dilation: [usize; 2],
    /// Groups: input and output channels are split into this many independent convolutions.
    pub groups: usize,
    /// Learn a bias.
    pub bias: bool,
}

impl Conv2dConfig {
    /// A square `k`×`k` convolution with stride 1, no padding, no dilation, one group and a bias.
    pub fn new(out_channels: usize, k: usize) -> Conv2dConfig {
        Conv2dConfig { out_channels, kernel: [k, k], stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1, bias: true }
    }
}

/// Per-thread scratch buffers.
#[derive(Default)]
struct Scratch {
    /// Column matrix (Cg·kh·kw, OH·OW).
    cols: Vec<f32>,
    /// Column gradient, same shape.
    dcols: Vec<f32>,
    /// Weight-gradient partial of this thread's chunk (threads > 1 only).
    dw: Vec<f32>,
    /// Bias-gradient partial.
    db: Vec<f32>,
}

/// A 2-D convolution layer.
pub struct Conv2d {
    cfg: Conv2dConfig,
    in_shape: [usize; 3],
    geom: ConvShape,
    scratch: Vec<Scratch>,
}

impl Conv2d {
    /// A convolution for per-sample inputs [C, H, W]; validates the configuration against them.
    pub fn new(cfg: Conv2dConfig, in_shape: &[usize]) -> Result<Conv2d, LayerError> {
        let err = |msg: String| Err(LayerError::Config { op: "conv2d", msg });
        let &[c, h, w] = in_shape else {
            return err(format!("input must be [C, H, W], got {in_shape:?}; hint: a convolution cannot follow a flatten or linear layer"));
        };
        if cfg.out_channels == 0 || cfg.groups == 0 {
            return err("out_channels and groups must be at least 1".into());
        }
        if c % cfg.groups != 0 || cfg.out_channels % cfg.groups != 0 {
            return err(format!(
                "groups = {} must divide both the input channels ({c}) and out_channels ({})",
                cfg.groups, cfg.out_channels
            ));
        }
        let oh = Axis { input: h, kernel: cfg.kernel[0], stride: cfg.stride[0], pad: cfg.padding[0], dilation: cfg.dilation[0] }.out("conv2d", false)?;
        let ow = Axis { input: w, kernel: cfg.kernel[1], stride: cfg.stride[1], pad: cfg.padding[1], dilation: cfg.dilation[1] }.out("conv2d", false)?;
        let geom = ConvShape {
            c: c / cfg.groups,
            h,
            w,
            kh: cfg.kernel[0],
            kw: cfg.kernel[1],
            sh: cfg.stride[0],
            sw: cfg.stride[1],
            ph: cfg.padding[0],
            pw: cfg.padding[1],
            dh: cfg.dilation[0],
            dw: cfg.dilation[1],
            oh,
            ow,
        };
        Ok(Conv2d { cfg, in_shape: [c, h, w], geom, scratch: Vec::new() })
    }

    /// True when the input itself is the column matrix (1×1, stride 1, no padding).
    fn direct(&self) -> bool {
        let g = &self.geom;
        g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0
    }

    fn fan_in(&self) -> usize {
        self.geom.rows()
    }

    fn prepare(&mut self, chunks: usize, with_grads: bool) {
        let k = self.geom.rows() * self.geom.cols();
        let (wlen, blen) = (self.cfg.out_channels * self.fan_in(), self.cfg.out_channels);
        let direct = self.direct();
        self.scratch.resize_with(chunks.max(1), Scratch::default);
        for s in &mut self.scratch {
            if !direct {
                s.cols.resize(k, 0.0);
            }
            if with_grads {
                s.dcols.resize(k, 0.0);
                if chunks > 1 {
                    s.dw.resize(wlen, 0.0);
                    s.db.resize(blen, 0.0);
                }
            }
        }
    }
}

/// Forward of a chunk of samples. `x`: (n, C, H, W), `y`: (n, O, OH, OW).
fn forward_chunk(cfg: &Conv2dConfig, g: &ConvShape, direct: bool, w: &[f32], b: &[f32], x: &[f32], y: &mut [f32], s: &mut Scratch) {
    let (groups, og) = (cfg.groups, cfg.out_channels / cfg.groups);
    let (k, p) = (g.rows(), g.cols());
    let xin = g.c * g.h * g.w;
    let (xs_len, ys_len) = (xin * groups, cfg.out_channels * p);
    for (xs, ys) in x.chunks_exact(xs_len).zip(y.chunks_exact_mut(ys_len)) {
        for gi in 0..groups {
            let xg = &xs[gi * xin..(gi + 1) * xin];
            let cols: &[f32] = if direct {
                xg
            } else {
                im2col(&mut s.cols, xg, g);
                &s.cols
            };
            let yg = &mut ys[gi * og * p..(gi + 1) * og * p];
            if cfg.bias {
                for (row, &bv) in yg.chunks_exact_mut(p).zip(&b[gi * og..(gi + 1) * og]) {
                    row.fill(bv);
                }
            }
            // y_g (og × p) = W_g (og × k) · cols (k × p)
            sgemm(og, p, k, MatRef::n(&w[gi * og * k..], k), MatRef::n(cols, p), yg, p, cfg.bias, 1);
        }
    }
}

/// Backward of a chunk: accumulates into `dw`/`db`, writes `dx` when given.
#[allow(clippy::too_many_arguments)]
fn backward_chunk(
    cfg: &Conv2dConfig,
    g: &ConvShape,
    direct: bool,
    w: &[f32],
    x: &[f32],
    dy: &[f32],
    mut dx: Option<&mut [f32]>,
    cols_buf: &mut Vec<f32>,
    dcols: &mut [f32],
    dw: &mut [f32],
    db: &mut [f32],
) {
    let (groups, og) = (cfg.groups, cfg.out_channels / cfg.groups);
    let (k, p) = (g.rows(), g.cols());
    let xin = g.c * g.h * g.w;
    let (xs_len, ys_len) = (xin * groups, cfg.out_channels * p);
    if let Some(d) = dx.as_deref_mut() {
        d.fill(0.0);
    }
    for (si, (xs, dys)) in x.chunks_exact(xs_len).zip(dy.chunks_exact(ys_len)).enumerate() {
        for gi in 0..groups {
            let xg = &xs[gi * xin..(gi + 1) * xin];
            let dyg = &dys[gi * og * p..(gi + 1) * og * p];
            let cols: &[f32] = if direct {
                xg
            } else {
                im2col(cols_buf, xg, g);
                cols_buf
            };
            // dW_g (og × k) += dy_g (og × p) · colsᵀ (p × k)
            sgemm(og, k, p, MatRef::n(dyg, p), MatRef::t(cols, p), &mut dw[gi * og * k..(gi + 1) * og * k], k, true, 1);
            if cfg.bias {
                for (dbv, row) in db[gi * og..(gi + 1) * og].iter_mut().zip(dyg.chunks_exact(p)) {
                    *dbv += row.iter().sum::<f32>();
                }
            }
            if let Some(d) = dx.as_deref_mut() {
                let dxg = &mut d[si * xs_len + gi * xin..si * xs_len + (gi + 1) * xin];
                let wg = &w[gi * og * k..(gi + 1) * og * k];
                if direct {
                    // dx_g (k × p) += W_gᵀ (k × og) · dy_g (og × p)
                    sgemm(k, p, og, MatRef::t(wg, k), MatRef::n(dyg, p), dxg, p, true, 1);
                } else {
                    sgemm(k, p, og, MatRef::t(wg, k), MatRef::n(dyg, p), dcols, p, false, 1);
                    col2im(dxg, dcols, g);
                }
            }
        }
    }
}

impl Layer for Conv2d {
    fn kind(&self) -> &'static str {
        "conv2d"
    }

    fn out_shape(&self) -> Vec<usize> {
        vec![self.cfg.out_channels, self.geom.oh, self.geom.ow]
    }

    fn params(&self) -> Vec<ParamSpec> {
        let fan_in = self.fan_in();
        let mut v = vec![ParamSpec::param("weight", vec![self.cfg.out_channels, self.geom.c, self.geom.kh, self.geom.kw], Init::KaimingUniform { fan_in })];
        if self.cfg.bias {
            v.push(ParamSpec::param("bias", vec![self.cfg.out_channels], Init::UniformFanIn { fan_in }));
        }
        v
    }

    /// # Shapes
    /// p: weight (O, C/groups, kh, kw) then bias (O); x: (N, C, H, W) → y: (N, O, OH, OW)
    fn forward(&mut self, ctx: &Ctx, p: &[f32], x: &Tensor, y: &mut Tensor) -> Result<(), LayerError> {
        let n = check_input("conv2d", x, &self.in_shape)?;
        y.resize(&[n, self.cfg.out_channels, self.geom.oh, self.geom.ow]);
        let threads = ctx.threads.clamp(1, n.max(1));
        self.prepare(threads, false);
        let wlen = self.cfg.out_channels * self.fan_in();
        let (w, b) = p.split_at(wlen);
        let (cfg, g, direct) = (self.cfg, self.geom, self.direct());
        let per = n.div_ceil(threads);
        let (xs, ys) = (x.sample_len(), y.sample_len());
        if threads == 1 {
            forward_chunk(&cfg, &g, direct, w, b, x.data(), y.data_mut(), &mut self.scratch[0]);
        } else {
            x.data()
                .par_chunks(per * xs)
                .zip(y.data_mut().par_chunks_mut(per * ys))
                .zip(self.scratch.par_iter_mut())
                .for_each(|((xc, yc), s)| forward_chunk(&cfg, &g, direct, w, b, xc, yc, s));
        }
        Ok(())
    }

    fn backward(&mut self, ctx: &Ctx, p: &[f32], dp: &mut [f32], x: &Tensor, _y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) -> Result<(), LayerError> {
        let n = check_input("conv2d", x, &self.in_shape)?;
        let threads = ctx.threads.clamp(1, n.max(1));
        self.prepare(threads, true);
        let wlen = self.cfg.out_channels * self.fan_in();
        let w = &p[..wlen];
        let (dw, db) = dp.split_at_mut(wlen);
        let (cfg, g, direct) = (self.cfg, self.geom, self.direct());
        let per = n.div_ceil(threads);
        let (xs, ys) = (x.sample_len(), dy.sample_len());
        let mut dx = dx.map(|d| {
            d.resize(x.shape());
            d
        });
        if threads == 1 {
            let s = &mut self.scratch[0];
            backward_chunk(&cfg, &g, direct, w, x.data(), dy.data(), dx.as_deref_mut().map(|d| d.data_mut()), &mut s.cols, &mut s.dcols, dw, db);
            return Ok(());
        }
        let body = |((xc, dyc), s): ((&[f32], &[f32]), &mut Scratch), dxc: Option<&mut [f32]>| {
            s.dw.fill(0.0);
            s.db.fill(0.0);
            backward_chunk(&cfg, &g, direct, w, xc, dyc, dxc, &mut s.cols, &mut s.dcols, &mut s.dw, &mut s.db);
        };
        let work = x.data().par_chunks(per * xs).zip(dy.data().par_chunks(per * ys)).zip(self.scratch.par_iter_mut());
        match dx.as_deref_mut() {
            Some(d) => work.zip(d.data_mut().par_chunks_mut(per * xs)).for_each(|(a, dxc)| body(a, Some(dxc))),
            None => work.for_each(|a| body(a, None)),
        }
        // Sum the chunk partials in chunk order: deterministic whatever the scheduling.
        for s in &self.scratch[..n.div_ceil(per)] {
            dw.iter_mut().zip(&s.dw).for_each(|(d, v)| *d += v);
            if cfg.bias {
                db.iter_mut().zip(&s.db).for_each(|(d, v)| *d += v);
            }
        }
        Ok(())
    }

    fn flops_per_sample(&self) -> u64 {
        (self.cfg.out_channels * self.geom.cols() * self.fan_in()) as u64
    }
}

#[cfg(test)]
mod tests;
