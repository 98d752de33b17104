//! Winograd convolution F(m×m, r×r) for r×r, stride-1 convolutions (Lavin & Gray 2016, "Fast
//! Algorithms for Convolutional Neural Networks"): F(2×2, 3×3), F(4×4, 3×3), F(2×2, 5×5) and
//! F(3×3, 5×5).
//!
//! Each output tile of m×m pixels is `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`, where d is the tile's α×α
//! input patch (α = m + r − 1) and g the r×r filter. Summed over input channels, the
//! element-wise product becomes α² independent GEMMs, one per transform point ξ, over all tiles
//! of the batch at once: `M_ξ (K × T) = U_ξ (K × C) · V_ξ (C × T)`. A direct 3×3 convolution
//! costs 9 multiply-adds per output and input channel; F(2×2) costs 16/4 = 4 (2.25× fewer),
//! F(4×4) 36/16 = 2.25 (4× fewer); a 5×5 one costs 25, F(2×2) 36/4 = 9 (2.8× fewer), F(3×3)
//! 49/9 = 5.4 (4.6× fewer). The price is the transforms (memory-bound passes over V and M) and
//! rounding: the larger tiles' points ±2 (and 1/2 for F(3×3, 5×5)) and their scales 1/24,
//! 1/60 lose about two decimal digits against the direct sum, F(2×2, 3×3) almost none (the
//! tests here and the layer tests state the tolerances).
//!
//! Backward data of a stride-1 r×r convolution with padding p is a convolution of dy with the
//! filters rotated by 180° and their channel axes swapped, padding r − 1 − p: the same algorithm
//! (`Plan::transposed`).
//!
//! Layouts: U `[K][ξ][C]`, V `[C][ξ][T]`, M `[ξ][K][T]`, tiles t = (image, tile row, tile column)
//! in that order, so that each pass splits across threads on contiguous memory: the weight
//! transform by output channel, the input transform by input channel, the GEMMs by ξ, the
//! output transform by image. Every output element comes from the same operations whatever the
//! thread count (bitwise), and a sample's outputs do not depend on the others' values.
//! The transforms run 16 tiles at a time in plain loops that the compiler vectorises inside one
//! `#[target_feature]` entry per instruction set (`Isa`).

use super::gemm::{sgemm, MatRef};
use super::simd::Isa;
use rayon::prelude::*;
use tensors::{dy_channels, input_channels, output_images, weight_grad_rows, weight_rows};

/// The output tile size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tile {
    /// F(2×2, r×r): (r+1)×(r+1) transforms.
    F2,
    /// F(3×3, 5×5): 7×7 transforms (5×5 filters only).
    F3,
    /// F(4×4, 3×3): 6×6 transforms (3×3 filters only).
    F4,
}

impl Tile {
    /// Output pixels per tile side.
    pub fn m(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F3 => 3,
            Tile::F4 => 4,
        }
    }
}

/// The geometry of one Winograd convolution: `c` input channels of h×w, padded by (ph, pw),
/// to `k` output channels of oh×ow, cut into th×tw tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The output tile size.
    pub tile: Tile,
    /// The filter size, 3 or 5.
    pub r: usize,
    /// Input channels.
    pub c: usize,
    /// Output channels.
    pub k: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Zero padding above and below.
    pub ph: usize,
    /// Zero padding left and right.
    pub pw: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    th: usize,
    tw: usize,
}

impl Plan {
    /// The plan of an r×r, stride-1 convolution, or `None` where Winograd does not apply
    /// (r other than 3 or 5, F(4×4) with r = 5, F(3×3) with r = 3, padding above r − 1, an
    /// input smaller than the kernel).
    #[allow(clippy::too_many_arguments)]
    pub fn new(tile: Tile, r: usize, c: usize, k: usize, h: usize, w: usize, ph: usize, pw: usize) -> Option<Plan> {
        let fits = matches!((tile, r), (Tile::F2, 3 | 5) | (Tile::F4, 3) | (Tile::F3, 5));
        if !fits || ph >= r || pw >= r || h + 2 * ph < r || w + 2 * pw < r || c == 0 || k == 0 {
            return None;
        }
        let (oh, ow) = (h + 2 * ph + 1 - r, w + 2 * pw + 1 - r);
        let m = tile.m();
        Some(Plan { tile, r, c, k, h, w, ph, pw, oh, ow, th: oh.div_ceil(m), tw: ow.div_ceil(m) })
    }

    /// The plan of backward data: dy (k channels of oh×ow) to dx (c channels of h×w), padding
    /// r − 1 − p, with the filters of `transform_weights(.., transposed = true)`.
    pub fn transposed(&self) -> Plan {
        let r = self.r;
        Plan::new(self.tile, r, self.k, self.c, self.oh, self.ow, r - 1 - self.ph, r - 1 - self.pw)
            .expect("the transposed plan of a valid plan is valid")
    }

    fn alpha(&self) -> usize {
        self.tile.m() + self.r - 1
    }

    /// Floats of one filter.
    fn taps(&self) -> usize {
        self.r * self.r
    }

    /// Transform points ξ: the number of GEMMs.
    fn points(&self) -> usize {
        self.alpha() * self.alpha()
    }

    fn tiles(&self) -> usize {
        self.th * self.tw
    }

    /// Floats of the transformed filters U.
    pub fn u_len(&self) -> usize {
        self.k * self.points() * self.c
    }

    /// Floats of the padded plane each thread gathers its patches from.
    fn pad_len(&self) -> usize {
        let (m, e) = (self.tile.m(), self.r - 1);
        (self.th * m + e) * (self.tw * m + e)
    }
}

/// Bytes of one block's transformed inputs and products (V and M, or V and E) that the
/// blocking aims for: the block's passes then stay in the caches instead of streaming the whole
/// batch's V and M through memory (AlexNet-CIFAR's 64→128 5×5 layer on 15×15 maps: 113 MB for
/// a batch of 64). Measured with `convoy bench` (batch 64, one thread, Zen 4 with 1 MiB of L2),
/// AlexNet-CIFAR / VGG-11 step ms: the whole batch at once 262 / 381; blocks of 16 MiB 213 / 380,
/// 4 MiB 195–203 / 358–374, 1 MiB 182 / 345–353, 512 KiB 182 / 347–351.
const BLOCK_BYTES: usize = 1 << 20;

/// Fewest tiles per block: the GEMMs stream U (K·C·α² floats) once per block, so small blocks
/// re-read large filters (VGG-11's 512→512: 37 MB) too often, and thin GEMMs run slowly. With
/// 1 MiB blocks, VGG-11 step ms: 16 tiles 367, 32 353, 64 345, 128 364.
const BLOCK_MIN_TILES: usize = 64;

/// One thread's buffers: a block's transformed inputs V `[C][ξ][T]`, products M `[ξ][K][T]`,
/// transformed output gradients E `[K][ξ][T]`, its weight-gradient partial Mw `[ξ][K][C]`,
/// and the padded plane the patches are gathered from.
#[derive(Default)]
struct Buffers {
    v: Vec<f32>,
    m: Vec<f32>,
    e: Vec<f32>,
    mw: Vec<f32>,
    pad: Vec<f32>,
}

/// A Winograd convolution layer's state: its forward and backward-data plans, the transformed
/// filters of each, and per-thread buffers, kept between calls (no allocation once grown).
pub struct Winograd {
    fwd: Plan,
    bwd: Plan,
    u: Vec<f32>,
    ut: Vec<f32>,
    bufs: Vec<Buffers>,
}

impl Winograd {
    /// For an r×r, stride-1, one-group convolution of `c` channels of h×w to `k`, padded by
    /// (ph, pw); `None` where it does not apply (`Plan::new`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(tile: Tile, r: usize, c: usize, k: usize, h: usize, w: usize, ph: usize, pw: usize) -> Option<Winograd> {
        let fwd = Plan::new(tile, r, c, k, h, w, ph, pw)?;
        Some(Winograd { fwd, bwd: fwd.transposed(), u: Vec::new(), ut: Vec::new(), bufs: Vec::new() })
    }

    /// The forward plan.
    pub fn plan(&self) -> &Plan {
        &self.fwd
    }

    /// `y` (n, k, oh, ow) = conv(`x` (n, c, h, w), `w` (k, c, r, r)) + `bias`.
    pub fn forward(&mut self, threads: usize, w: &[f32], bias: Option<&[f32]>, x: &[f32], y: &mut [f32]) {
        let p = self.fwd;
        self.u.resize(p.u_len(), 0.0);
        transform_weights(&p, threads, w, false, &mut self.u);
        run(&p, threads, &self.u, x, bias, y, &mut self.bufs);
    }

    /// `dx` (n, c, h, w) = the input gradient of the forward convolution for `dy` (n, k, oh, ow).
    pub fn backward_data(&mut self, threads: usize, w: &[f32], dy: &[f32], dx: &mut [f32]) {
        let p = self.bwd;
        self.ut.resize(p.u_len(), 0.0);
        transform_weights(&p, threads, w, true, &mut self.ut);
        run(&p, threads, &self.ut, dy, None, dx, &mut self.bufs);
    }

    /// `dw` (k, c, r, r) += the weight gradient of the forward convolution of `x` for `dy`.
    ///
    /// The same transform points read backwards: with y = Aᵀ[(G g) ⊙ (Bᵀ d)], the trilinear form
    /// Σ dy·y = Σ_ξ (A dy)_ξ (G g)_ξ (Bᵀ d)_ξ gives dg = Gᵀ[(A dy) ⊙ (Bᵀ d)]; in 2-D, per tile,
    /// dW = Gᵀ [(A dy Aᵀ) ⊙ (Bᵀ d B)] G, and the sum over tiles and images is one GEMM per ξ
    /// and block, accumulated: `Mw_ξ (K × C) += E_ξ (K × T) · V_ξᵀ (T × C)`. Each thread sums
    /// its blocks, the threads' partials are added in thread order, and one output transform
    /// ends it.
    pub fn backward_weights(&mut self, threads: usize, x: &[f32], dy: &[f32], dw: &mut [f32]) {
        let p = self.fwd;
        let n = x.len() / (p.c * p.h * p.w);
        assert_eq!(x.len(), n * p.c * p.h * p.w, "winograd: input length");
        assert_eq!(dy.len(), n * p.k * p.oh * p.ow, "winograd: output gradient length");
        assert_eq!(dw.len(), p.k * p.c * p.taps(), "winograd: weight gradient length");
        if n == 0 {
            return;
        }
        let isa = Isa::best();
        let (xs, ys, ipb) = (p.c * p.h * p.w, p.k * p.oh * p.ow, images_per_block(&p));
        let per = n.div_ceil(ipb).div_ceil(threads.max(1)) * ipb;
        let chunks = n.div_ceil(per);
        let inner = (threads / chunks).max(1);
        size_buffers(&mut self.bufs, chunks, &p, ipb, true);
        let body = |xc: &[f32], dyc: &[f32], b: &mut Buffers| {
            b.mw.fill(0.0);
            for (xb, dyb) in xc.chunks(ipb * xs).zip(dyc.chunks(ipb * ys)) {
                let t = xb.len() / xs * p.tiles();
                let (xi, kc) = (p.points(), p.k * p.c);
                input_channels(isa, &p, xb, 0, &mut b.v[..p.c * xi * t], &mut b.pad);
                dy_channels(isa, &p, dyb, 0, &mut b.e[..p.k * xi * t], &mut b.pad);
                let (v, e) = (&b.v[..], &b.e[..]);
                let gemm = |g: usize, mg: &mut [f32]| {
                    sgemm(p.k, p.c, t, MatRef::n(&e[g * t..], xi * t), MatRef::t(&v[g * t..], xi * t), mg, p.c, true, 1)
                };
                per_point(&mut b.mw, kc, inner, gemm);
            }
        };
        if chunks == 1 {
            body(x, dy, &mut self.bufs[0]);
        } else {
            x.par_chunks(per * xs)
                .zip(dy.par_chunks(per * ys))
                .zip(self.bufs.par_iter_mut())
                .with_max_len(1)
                .for_each(|((xc, dyc), b)| body(xc, dyc, b));
            let (first, rest) = self.bufs.split_at_mut(1);
            for b in &rest[..chunks - 1] {
                first[0].mw.iter_mut().zip(&b.mw).for_each(|(s, v)| *s += v);
            }
        }
        let mw = &self.bufs[0].mw[..];
        if threads <= 1 {
            weight_grad_rows(isa, &p, mw, 0, dw);
        } else {
            let per_k = p.k.div_ceil(threads);
            dw.par_chunks_mut(per_k * p.c * p.taps())
                .enumerate()
                .with_max_len(1)
                .for_each(|(i, dwc)| weight_grad_rows(isa, &p, mw, i * per_k, dwc));
        }
    }
}

/// Runs `gemm(ξ, part)` for each transform point's `len` floats of `out`, on `threads` threads
/// when there are fewer blocks than threads (VGG-11's 4×4 and 2×2 maps: one block for the
/// batch). Each GEMM is the same single-threaded call either way.
fn per_point(out: &mut [f32], len: usize, threads: usize, gemm: impl Fn(usize, &mut [f32]) + Sync) {
    if threads <= 1 {
        out.chunks_exact_mut(len).enumerate().for_each(|(g, part)| gemm(g, part));
        return;
    }
    let per = (out.len() / len).div_ceil(threads);
    out.par_chunks_mut(per * len)
        .enumerate()
        .with_max_len(1)
        .for_each(|(i, chunk)| chunk.chunks_exact_mut(len).enumerate().for_each(|(j, part)| gemm(i * per + j, part)));
}

/// Images per block of `p`: as many as `BLOCK_BYTES` allows, at least `BLOCK_MIN_TILES` tiles.
/// A function of the shape only, so that a sample's result does not depend on the batch or the
/// thread count.
fn images_per_block(p: &Plan) -> usize {
    let per_tile = p.points() * (p.c + p.k) * 4;
    let tiles = (BLOCK_BYTES / per_tile).max(BLOCK_MIN_TILES);
    (tiles / p.tiles()).max(1)
}

/// Gives `chunks` threads buffers for blocks of `ipb` images of `p` (E and Mw too when
/// `weights`).
fn size_buffers(bufs: &mut Vec<Buffers>, chunks: usize, p: &Plan, ipb: usize, weights: bool) {
    let (xi, t) = (p.points(), ipb * p.tiles());
    bufs.resize_with(bufs.len().max(chunks), Buffers::default);
    for b in &mut bufs[..chunks] {
        b.v.resize(b.v.len().max(p.c * xi * t), 0.0);
        b.pad.resize(b.pad.len().max(p.pad_len()), 0.0);
        if weights {
            b.e.resize(b.e.len().max(p.k * xi * t), 0.0);
            b.mw.resize(xi * p.k * p.c, 0.0);
        } else {
            b.m.resize(b.m.len().max(xi * p.k * t), 0.0);
        }
    }
}

/// One convolution by `p` with transformed filters `u`, block by block of images (input
/// transform, GEMMs, output transform), the blocks shared out to `threads` in contiguous runs.
fn run(p: &Plan, threads: usize, u: &[f32], x: &[f32], bias: Option<&[f32]>, y: &mut [f32], bufs: &mut Vec<Buffers>) {
    let n = x.len() / (p.c * p.h * p.w);
    assert_eq!(x.len(), n * p.c * p.h * p.w, "winograd: input length");
    assert_eq!(y.len(), n * p.k * p.oh * p.ow, "winograd: output length");
    assert_eq!(u.len(), p.u_len(), "winograd: filter length");
    if n == 0 {
        return;
    }
    let isa = Isa::best();
    let (xs, ys, ipb) = (p.c * p.h * p.w, p.k * p.oh * p.ow, images_per_block(p));
    let per = n.div_ceil(ipb).div_ceil(threads.max(1)) * ipb;
    let chunks = n.div_ceil(per);
    let inner = (threads / chunks).max(1);
    size_buffers(bufs, chunks, p, ipb, false);
    let body = |xc: &[f32], yc: &mut [f32], b: &mut Buffers| {
        for (xb, yb) in xc.chunks(ipb * xs).zip(yc.chunks_mut(ipb * ys)) {
            let nb = xb.len() / xs;
            let (xi, t) = (p.points(), nb * p.tiles());
            let (v, m) = (&mut b.v[..p.c * xi * t], &mut b.m[..xi * p.k * t]);
            input_channels(isa, p, xb, 0, v, &mut b.pad);
            // One GEMM per transform point: M_ξ (K × T) = U_ξ (K × C) · V_ξ (C × T).
            let v = &v[..];
            let gemm = |g: usize, mg: &mut [f32]| {
                sgemm(p.k, t, p.c, MatRef::n(&u[g * p.c..], xi * p.c), MatRef::n(&v[g * t..], xi * t), mg, t, false, 1)
            };
            per_point(m, p.k * t, inner, gemm);
            output_images(isa, p, m, nb, 0, bias, yb);
        }
    };
    if chunks == 1 {
        body(x, y, &mut bufs[0]);
    } else {
        x.par_chunks(per * xs)
            .zip(y.par_chunks_mut(per * ys))
            .zip(bufs.par_iter_mut())
            .with_max_len(1)
            .for_each(|((xc, yc), b)| body(xc, yc, b));
    }
}

/// The filters of `w` (k, c, r, r) transformed into U `[rows][ξ][cols]`: for the forward plan
/// rows = k, cols = c; `transposed` (backward data, whose plan has c and k swapped) reads
/// filter (row = input channel, col = output channel) rotated by 180°.
fn transform_weights(p: &Plan, threads: usize, w: &[f32], transposed: bool, u: &mut [f32]) {
    assert_eq!(w.len(), p.k * p.c * p.taps(), "winograd: weight length");
    let isa = Isa::best();
    let row = p.points() * p.c;
    if threads <= 1 {
        weight_rows(isa, p, w, transposed, 0, u);
    } else {
        let per = p.k.div_ceil(threads);
        u.par_chunks_mut(per * row)
            .enumerate()
            .with_max_len(1)
            .for_each(|(i, uc)| weight_rows(isa, p, w, transposed, i * per, uc));
    }
}

mod tensors;
#[cfg(test)]
mod tests;
mod transforms;
