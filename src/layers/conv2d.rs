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
//!
//! Stride-1, dilation-1 convolutions run the direct kernels of `tensor::direct_conv` instead
//! (conv2d/direct.rs) where the CPU has AVX2 or AVX-512 and the padded planes waste little;
//! `ConvAlgo` names the choice, made per layer shape at construction (`Conv2d::algo`).

use super::geometry::Axis;
use super::{check_input, Ctx, Layer, LayerError, ParamSpec};
use crate::tensor::backend::{self, Backend, ConvDesc, LayerEngine};
use crate::tensor::direct_conv::{self, Flat};
use crate::tensor::direct_oc;

use crate::tensor::im2col::ConvShape;
use crate::tensor::simd::Isa;
use crate::tensor::winograd::{Tile, Winograd};
use crate::tensor::{init::Init, Tensor};
pub use algo::ConvAlgo;
use algo::{DIRECT_MIN_USEFUL, DIRECT_OC_MAX_WEIGHTS, WINOGRAD_MAX_PAIRS_DIRECT, WINOGRAD_MIN_CHANNELS};
use gemm_path::{backward_chunk, forward_chunk, samples_per_gemm};
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
        Conv2dConfig {
            out_channels,
            kernel: [k, k],
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
            bias: true,
        }
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
    /// Direct path: dy padded for backward data; the channel-vectorised path's pixel-major dy.
    aux: Vec<f32>,
    /// Channel-vectorised path: pixel offsets in the padded inputs.
    pix: Vec<usize>,
}

/// A 2-D convolution layer.
pub struct Conv2d {
    cfg: Conv2dConfig,
    in_shape: [usize; 3],
    geom: ConvShape,
    algo: ConvAlgo,
    /// Direct path: the geometry of one group, and the weights packed for forward and for
    /// backward data (refreshed every call: the parameters change between steps).
    flat: Option<Flat>,
    packed: Vec<f32>,
    packed_t: Vec<f32>,
    scratch: Vec<Scratch>,
    /// Winograd path: its plans, transformed filters and buffers.
    wino: Option<Winograd>,
    /// The external library running this layer when `Ctx::backend` is not native (made on the
    /// first call that asks for it), and the backend of the last call (for `kernel`).
    engine: Option<Box<dyn LayerEngine>>,
    backend: Backend,
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
        if !c.is_multiple_of(cfg.groups) || !cfg.out_channels.is_multiple_of(cfg.groups) {
            return err(format!(
                "groups = {} must divide both the input channels ({c}) and out_channels ({})",
                cfg.groups, cfg.out_channels
            ));
        }
        let oh = Axis {
            input: h,
            kernel: cfg.kernel[0],
            stride: cfg.stride[0],
            pad: cfg.padding[0],
            dilation: cfg.dilation[0],
        }
        .out("conv2d", false)?;
        let ow = Axis {
            input: w,
            kernel: cfg.kernel[1],
            stride: cfg.stride[1],
            pad: cfg.padding[1],
            dilation: cfg.dilation[1],
        }
        .out("conv2d", false)?;
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
        let mut conv = Conv2d {
            cfg,
            in_shape: [c, h, w],
            geom,
            algo: ConvAlgo::Im2col,
            flat: None,
            packed: Vec::new(),
            packed_t: Vec::new(),
            scratch: Vec::new(),
            wino: None,
            engine: None,
            backend: Backend::Native,
        };
        let choice = conv.best_algo();
        conv.set_algo(choice)?;
        Ok(conv)
    }

    /// The algorithm chosen for this shape on this CPU.
    fn best_algo(&self) -> ConvAlgo {
        if self.one_by_one() {
            return ConvAlgo::Gemm1x1;
        }
        if let Some(tile) = self.winograd_tile() {
            return ConvAlgo::Winograd(tile);
        }
        match Isa::best().and_then(|isa| self.flat_for(isa).map(|f| (isa, f))) {
            Some((isa, f)) if f.useful() >= DIRECT_MIN_USEFUL => ConvAlgo::Direct(isa),
            Some((isa, f))
                if self.cfg.groups == 1 && direct_oc::supports(&f) && f.cin * f.cout <= DIRECT_OC_MAX_WEIGHTS =>
            {
                ConvAlgo::DirectOc(isa)
            }
            _ => ConvAlgo::Im2col,
        }
    }

    /// The direct kernels' geometry, where they apply to this layer.
    fn flat_for(&self, isa: Isa) -> Option<Flat> {
        let g = &self.geom;
        if (g.sh, g.sw, g.dh, g.dw) != (1, 1, 1, 1) || !direct_conv::weight_grad_supports(g.kw) {
            return None;
        }
        Flat::new(isa, g.c, self.cfg.out_channels / self.cfg.groups, g.kh, g.kw, g.h, g.w, g.ph, g.pw)
    }

    /// The Winograd tile for this layer where Winograd pays: at least `WINOGRAD_MIN_CHANNELS`
    /// input channels and more than `WINOGRAD_MAX_PAIRS_DIRECT` channel pairs, and the tile that
    /// needs fewer transform points over the output: F(2×2) or, for 3×3, F(4×4), for 5×5, F(3×3)
    /// (F(2×2) on a tie: cheaper transforms, less rounding).
    fn winograd_tile(&self) -> Option<Tile> {
        let g = &self.geom;
        if g.c < WINOGRAD_MIN_CHANNELS || g.c * self.cfg.out_channels <= WINOGRAD_MAX_PAIRS_DIRECT {
            return None;
        }
        let points = |m: usize| g.oh.div_ceil(m) * g.ow.div_ceil(m) * (m + g.kh - 1) * (m + g.kh - 1);
        let big = if g.kh == 3 { Tile::F4 } else { Tile::F3 };
        let tile = if points(big.m()) < points(2) { big } else { Tile::F2 };
        self.winograd(tile).map(|_| tile)
    }

    /// The Winograd state of this layer with `tile`, where it applies.
    fn winograd(&self, tile: Tile) -> Option<Winograd> {
        let g = &self.geom;
        if g.kh != g.kw || (g.sh, g.sw, g.dh, g.dw, self.cfg.groups) != (1, 1, 1, 1, 1) {
            return None;
        }
        Winograd::new(tile, g.kh, g.c, self.cfg.out_channels, g.h, g.w, g.ph, g.pw)
    }

    /// The algorithm this layer runs.
    pub fn algo(&self) -> ConvAlgo {
        self.algo
    }

    /// Runs this layer with `algo` from now on (the tests run every algorithm that applies).
    /// Fails when `algo` does not apply to the shape or the CPU.
    pub fn set_algo(&mut self, algo: ConvAlgo) -> Result<(), LayerError> {
        let refuse = |why: &str| {
            Err(LayerError::Config { op: "conv2d", msg: format!("algorithm {} does not apply: {why}", algo.name()) })
        };
        let mut wino = None;
        let flat = match algo {
            ConvAlgo::Im2col => None,
            ConvAlgo::Winograd(tile) => match self.winograd(tile) {
                Some(wn) => {
                    wino = Some(wn);
                    None
                }
                None => return refuse("needs a 3×3 kernel (F(2×2), F(4×4)) or a 5×5 one (F(2×2), F(3×3)) of stride 1 and dilation 1, one group and padding below the kernel size"),
            },
            ConvAlgo::Gemm1x1 if !self.one_by_one() => return refuse("the kernel is not 1×1 with stride 1 and no padding"),
            ConvAlgo::Gemm1x1 => None,
            ConvAlgo::Direct(isa) | ConvAlgo::DirectOc(isa) if !isa.supported() => return refuse("this CPU lacks the instruction set"),
            ConvAlgo::Direct(isa) => match self.flat_for(isa) {
                Some(f) => Some(f),
                None => return refuse("needs stride 1, dilation 1, padding below the kernel size and a kernel width of 1, 3, 5 or 7"),
            },
            ConvAlgo::DirectOc(isa) => match self.flat_for(isa) {
                Some(f) if self.cfg.groups == 1 && direct_oc::supports(&f) => Some(f),
                _ => return refuse("needs a 3×3 kernel of stride 1 and one group"),
            },
        };
        (self.algo, self.flat, self.wino) = (algo, flat, wino);
        Ok(())
    }

    /// The direct kernels this layer runs, if it runs one.
    fn direct_kernel(&self) -> Option<direct::Direct> {
        let (f, (isa, oc)) = (self.flat?, self.algo.direct_isa()?);
        Some(direct::Direct { isa, oc, f, groups: self.cfg.groups, bias: self.cfg.bias })
    }

    /// Under `Backend::Auto`, whether this shape stays on the native kernels: 3×3 convolutions
    /// on the plane kernels with at most 32 input channels per group (ResNet-20's first two
    /// stages). Measured with `convoy bench --layers` (batch 64): there the native kernels took
    /// 11.1 against oneDNN's 11.4 ms per 16-channel 32×32 layer on one thread and 5.7 against
    /// 8.4 ms on two (oneDNN converts every tensor to and from its blocked layout, and on two
    /// threads those passes share the memory bandwidth); everywhere else oneDNN was as fast or
    /// faster (strided and 8×8 layers 1.3–1.6×, LeNet's 5×5 2×, AlexNet's 5×5 and 11×11).
    /// Winograd layers stay native too: VGG-11's 64→128 on 16×16 took 40 against oneDNN's 66 ms
    /// forward + backward, its 256→256 on 8×8 67 against 116, its 512→512 on 2×2 34 against 37,
    /// AlexNet-CIFAR's 5×5 64→128 85 (F(3×3)) against 137.
    fn native_pays(&self) -> bool {
        let g = &self.geom;
        match self.algo {
            ConvAlgo::Direct(_) => (g.kh, g.kw) == (3, 3) && g.c <= 32,
            ConvAlgo::Winograd(_) => true,
            _ => false,
        }
    }

    /// The engine of `backend` (made on first use), or `None` for the native kernels.
    fn engine(&mut self, backend: Backend) -> Result<Option<&mut Box<dyn LayerEngine>>, LayerError> {
        let backend = backend.resolve(self.native_pays());
        self.backend = backend;
        if backend == Backend::Native {
            return Ok(None);
        }
        if self.engine.is_none() {
            let desc =
                ConvDesc { shape: self.geom, o: self.cfg.out_channels, groups: self.cfg.groups, bias: self.cfg.bias };
            self.engine =
                backend::conv_engine(backend, &desc).map_err(|msg| LayerError::Config { op: "conv2d", msg })?;
        }
        Ok(self.engine.as_mut())
    }

    /// True when the input itself is the column matrix (1×1, stride 1, no padding).
    fn one_by_one(&self) -> bool {
        let g = &self.geom;
        g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0
    }

    /// True when `algo` is `Gemm1x1`: the GEMM paths read the input as the column matrix.
    fn direct(&self) -> bool {
        self.algo == ConvAlgo::Gemm1x1
    }

    fn fan_in(&self) -> usize {
        self.geom.rows()
    }

    /// Samples per GEMM on the im2col paths.
    fn samples_per_gemm(&self) -> usize {
        samples_per_gemm(self.direct(), self.geom.cols())
    }

    fn prepare(&mut self, chunks: usize, with_grads: bool) {
        if let Some(d) = self.direct_kernel() {
            let wlen = self.cfg.out_channels * self.fan_in();
            direct::prepare(&d, &mut self.scratch, chunks, with_grads, wlen, self.cfg.out_channels);
            return;
        }
        let nb = self.samples_per_gemm();
        let k = self.geom.rows() * self.geom.cols() * nb;
        let (wlen, blen) = (self.cfg.out_channels * self.fan_in(), self.cfg.out_channels);
        let direct = self.direct();
        self.scratch.resize_with(chunks.max(1), Scratch::default);
        for s in &mut self.scratch {
            if !direct {
                s.cols.resize(k, 0.0);
            }
            if nb > 1 {
                s.aux.resize(self.cfg.out_channels / self.cfg.groups * self.geom.cols() * nb, 0.0);
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

impl Layer for Conv2d {
    fn kind(&self) -> &'static str {
        "conv2d"
    }

    fn out_shape(&self) -> Vec<usize> {
        vec![self.cfg.out_channels, self.geom.oh, self.geom.ow]
    }

    fn params(&self) -> Vec<ParamSpec> {
        let fan_in = self.fan_in();
        let mut v = vec![ParamSpec::param(
            "weight",
            vec![self.cfg.out_channels, self.geom.c, self.geom.kh, self.geom.kw],
            Init::KaimingUniform { fan_in },
        )];
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
        let (wlen, bias) = (self.cfg.out_channels * self.fan_in(), self.cfg.bias);
        if let Some(e) = self.engine(ctx.backend)? {
            let (w, b) = p.split_at(wlen);
            return e
                .forward(ctx.threads, w, bias.then_some(b), x.data(), y.data_mut())
                .map_err(|msg| LayerError::Config { op: "conv2d", msg });
        }
        let threads = ctx.threads.clamp(1, n.max(1));
        let (w, b) = p.split_at(wlen);
        if let Some(wn) = self.wino.as_mut() {
            wn.forward(threads, w, bias.then_some(b), x.data(), y.data_mut());
            return Ok(());
        }
        self.prepare(threads, false);
        let (cfg, g, direct, nb) = (self.cfg, self.geom, self.direct(), self.samples_per_gemm());
        let per = n.div_ceil(threads);
        let (xs, ys) = (x.sample_len(), y.sample_len());
        if let Some(d) = self.direct_kernel() {
            d.pack_forward(w, &mut self.packed);
            let packed = &self.packed;
            if threads == 1 {
                d.forward(packed, b, x.data(), y.data_mut(), &mut self.scratch[0]);
                return Ok(());
            }
            x.data()
                .par_chunks(per * xs)
                .zip(y.data_mut().par_chunks_mut(per * ys))
                .zip(self.scratch.par_iter_mut())
                .with_max_len(1)
                .for_each(|((xc, yc), s)| d.forward(packed, b, xc, yc, s));
            return Ok(());
        }
        if threads == 1 {
            forward_chunk(&cfg, &g, direct, nb, w, b, x.data(), y.data_mut(), &mut self.scratch[0]);
        } else {
            x.data()
                .par_chunks(per * xs)
                .zip(y.data_mut().par_chunks_mut(per * ys))
                .zip(self.scratch.par_iter_mut())
                .for_each(|((xc, yc), s)| forward_chunk(&cfg, &g, direct, nb, w, b, xc, yc, s));
        }
        Ok(())
    }

    // Long: one backward per algorithm (engine, Winograd, direct, GEMM) over the same chunked threads; split, each
    // part would re-derive the same geometry and scratch.
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
        let n = check_input("conv2d", x, &self.in_shape)?;
        let (wlen, bias) = (self.cfg.out_channels * self.fan_in(), self.cfg.bias);
        if let Some(e) = self.engine(ctx.backend)? {
            let (dw, db) = dp.split_at_mut(wlen);
            let dx = dx.map(|d| {
                d.resize(x.shape());
                d.data_mut()
            });
            return e
                .backward(ctx.threads, &p[..wlen], x.data(), dy.data(), dx, dw, bias.then_some(db))
                .map_err(|msg| LayerError::Config { op: "conv2d", msg });
        }
        let threads = ctx.threads.clamp(1, n.max(1));
        let w = &p[..wlen];
        let (dw, db) = dp.split_at_mut(wlen);
        let (cfg, g, direct, nb) = (self.cfg, self.geom, self.direct(), self.samples_per_gemm());
        let per = n.div_ceil(threads);
        let (xs, ys) = (x.sample_len(), dy.sample_len());
        let mut dx = dx;
        if let Some(d) = dx.as_deref_mut() {
            d.resize(x.shape());
        }
        if let Some(wn) = self.wino.as_mut() {
            if let Some(d) = dx {
                wn.backward_data(threads, w, dy.data(), d.data_mut());
            }
            wn.backward_weights(threads, x.data(), dy.data(), dw);
            if cfg.bias {
                let plane = g.oh * g.ow;
                for sample in dy.data().chunks_exact(ys) {
                    for (dbv, row) in db.iter_mut().zip(sample.chunks_exact(plane)) {
                        *dbv += row.iter().sum::<f32>();
                    }
                }
            }
            return Ok(());
        }
        self.prepare(threads, true);
        if let Some(d) = self.direct_kernel() {
            // Backward reads only the transposed packing, and only for the input gradient.
            if dx.is_some() {
                d.pack_transposed(w, &mut self.packed_t);
            }
            let packed_t = &self.packed_t;
            let chunks = n.div_ceil(per);
            let work = x
                .data()
                .par_chunks(per * xs)
                .zip(dy.data().par_chunks(per * ys))
                .zip(self.scratch.par_iter_mut())
                .with_max_len(1);
            let body = |((xc, dyc), s): ((&[f32], &[f32]), &mut Scratch), dxc: Option<&mut [f32]>| {
                let (mut pdw, mut pdb) = (std::mem::take(&mut s.dw), std::mem::take(&mut s.db));
                pdw.fill(0.0);
                pdb.fill(0.0);
                d.backward(packed_t, xc, dyc, dxc, s, &mut pdw, &mut pdb);
                (s.dw, s.db) = (pdw, pdb);
            };
            if chunks == 1 {
                // One chunk accumulates straight into the layer's gradient.
                d.backward(
                    packed_t,
                    x.data(),
                    dy.data(),
                    dx.as_deref_mut().map(|t| t.data_mut()),
                    &mut self.scratch[0],
                    dw,
                    db,
                );
                return Ok(());
            }
            match dx {
                Some(t) => work.zip(t.data_mut().par_chunks_mut(per * xs)).for_each(|(a, dxc)| body(a, Some(dxc))),
                None => work.for_each(|a| body(a, None)),
            }
            direct::sum_partials(&self.scratch[..chunks], dw, if cfg.bias { Some(db) } else { None });
            return Ok(());
        }
        if threads == 1 {
            let s = &mut self.scratch[0];
            backward_chunk(
                &cfg,
                &g,
                direct,
                nb,
                w,
                x.data(),
                dy.data(),
                dx.as_deref_mut().map(|d| d.data_mut()),
                s,
                dw,
                db,
            );
            return Ok(());
        }
        let body = |((xc, dyc), s): ((&[f32], &[f32]), &mut Scratch), dxc: Option<&mut [f32]>| {
            let (mut pdw, mut pdb) = (std::mem::take(&mut s.dw), std::mem::take(&mut s.db));
            pdw.fill(0.0);
            pdb.fill(0.0);
            backward_chunk(&cfg, &g, direct, nb, w, xc, dyc, dxc, s, &mut pdw, &mut pdb);
            (s.dw, s.db) = (pdw, pdb);
        };
        let work = x.data().par_chunks(per * xs).zip(dy.data().par_chunks(per * ys)).zip(self.scratch.par_iter_mut());
        match dx {
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

    fn kernel(&self) -> &'static str {
        match (&self.engine, self.backend) {
            (Some(e), b) if b != Backend::Native => e.name(),
            _ => self.algo.name(),
        }
    }
}

mod algo;
mod direct;
mod gemm_path;
#[cfg(test)]
mod tests;
