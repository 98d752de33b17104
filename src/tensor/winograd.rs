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

/// Tiles (or filters) transformed together: one AVX-512 vector, two AVX2 vectors.
const LANES: usize = 16;
type Lane = [f32; LANES];
const ZERO: Lane = [0.0; LANES];
/// The largest transform size α = m + r − 1 (7: F(3×3, 5×5)); every 1-D transform takes and
/// returns this many lanes, of which it reads and writes its own sizes.
const MAX_A: usize = 7;
type Patch = [[Lane; MAX_A]; MAX_A];

/// The 2-D transform `F d Fᵀ` of the `n_in`×`n_in` patch `d` by the 1-D transform `f` (n_in
/// lanes to n_out): along each column, then along the rows of the result.
#[inline(always)]
fn two_d(d: &Patch, n_in: usize, n_out: usize, f: fn(&[Lane; MAX_A]) -> [Lane; MAX_A]) -> Patch {
    let (mut col, mut tmp, mut out) = ([ZERO; MAX_A], [[ZERO; MAX_A]; MAX_A], [[ZERO; MAX_A]; MAX_A]);
    for j in 0..n_in {
        for i in 0..n_in {
            col[i] = d[i][j];
        }
        let r = f(&col);
        for i in 0..n_out {
            tmp[i][j] = r[i];
        }
    }
    for i in 0..n_out {
        out[i] = f(&tmp[i]);
    }
    out
}

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
        Plan::new(self.tile, r, self.k, self.c, self.oh, self.ow, r - 1 - self.ph, r - 1 - self.pw).expect("the transposed plan of a valid plan is valid")
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
                let gemm = |g: usize, mg: &mut [f32]| sgemm(p.k, p.c, t, MatRef::n(&e[g * t..], xi * t), MatRef::t(&v[g * t..], xi * t), mg, p.c, true, 1);
                per_point(&mut b.mw, kc, inner, gemm);
            }
        };
        if chunks == 1 {
            body(x, dy, &mut self.bufs[0]);
        } else {
            x.par_chunks(per * xs).zip(dy.par_chunks(per * ys)).zip(self.bufs.par_iter_mut()).with_max_len(1).for_each(|((xc, dyc), b)| body(xc, dyc, b));
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
            dw.par_chunks_mut(per_k * p.c * p.taps()).enumerate().with_max_len(1).for_each(|(i, dwc)| weight_grad_rows(isa, &p, mw, i * per_k, dwc));
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
    out.par_chunks_mut(per * len).enumerate().with_max_len(1).for_each(|(i, chunk)| chunk.chunks_exact_mut(len).enumerate().for_each(|(j, part)| gemm(i * per + j, part)));
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
            let gemm = |g: usize, mg: &mut [f32]| sgemm(p.k, t, p.c, MatRef::n(&u[g * p.c..], xi * p.c), MatRef::n(&v[g * t..], xi * t), mg, t, false, 1);
            per_point(m, p.k * t, inner, gemm);
            output_images(isa, p, m, nb, 0, bias, yb);
        }
    };
    if chunks == 1 {
        body(x, y, &mut bufs[0]);
    } else {
        x.par_chunks(per * xs).zip(y.par_chunks_mut(per * ys)).zip(bufs.par_iter_mut()).with_max_len(1).for_each(|((xc, yc), b)| body(xc, yc, b));
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
        u.par_chunks_mut(per * row).enumerate().with_max_len(1).for_each(|(i, uc)| weight_rows(isa, p, w, transposed, i * per, uc));
    }
}

/// Runs `$imp::<M, R>` with the instruction set `isa` (this CPU's, from `Isa::best`) enabled, so
/// that the transforms' lane loops compile to its vectors; portable code without one.
macro_rules! isa_entry {
    ($name:ident, $imp:ident, ($($a:ident: $t:ty),*)) => {
        fn $name(isa: Option<Isa>, p: &Plan, $($a: $t),*) {
            match (p.tile, p.r) {
                (Tile::F2, 3) => dispatch::<2, 3>(isa, p, $($a),*),
                (Tile::F4, 3) => dispatch::<4, 3>(isa, p, $($a),*),
                (Tile::F2, 5) => dispatch::<2, 5>(isa, p, $($a),*),
                (Tile::F3, 5) => dispatch::<3, 5>(isa, p, $($a),*),
                _ => unreachable!("Plan::new admits F(2×2, 3×3), F(4×4, 3×3), F(2×2, 5×5) and F(3×3, 5×5) only"),
            }
            fn dispatch<const M: usize, const R: usize>(isa: Option<Isa>, p: &Plan, $($a: $t),*) {
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx512f")]
                    unsafe fn avx512<const M: usize, const R: usize>(p: &Plan, $($a: $t),*) {
                        $imp::<M, R>(p, $($a),*)
                    }
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn avx2<const M: usize, const R: usize>(p: &Plan, $($a: $t),*) {
                        $imp::<M, R>(p, $($a),*)
                    }
                    match isa {
                        // SAFETY: `isa` is what this CPU runs (`Isa::best`).
                        Some(Isa::Avx512) => return unsafe { avx512::<M, R>(p, $($a),*) },
                        // SAFETY: as above.
                        Some(Isa::Avx2) => return unsafe { avx2::<M, R>(p, $($a),*) },
                        None => {}
                    }
                }
                let _ = isa;
                $imp::<M, R>(p, $($a),*)
            }
        }
    };
}

isa_entry!(input_channels, input_channels_impl, (x: &[f32], c0: usize, v: &mut [f32], pad: &mut [f32]));
isa_entry!(output_images, output_images_impl, (mm: &[f32], n: usize, img0: usize, bias: Option<&[f32]>, y: &mut [f32]));
isa_entry!(weight_rows, weight_rows_impl, (w: &[f32], transposed: bool, r0: usize, u: &mut [f32]));
isa_entry!(dy_channels, dy_channels_impl, (dy: &[f32], k0: usize, e: &mut [f32], pad: &mut [f32]));
isa_entry!(weight_grad_rows, weight_grad_rows_impl, (mw: &[f32], k0: usize, dw: &mut [f32]));

/// E `[k][ξ][t]` = A dy Aᵀ of the output-gradient tiles of the channels k0.. that `e` holds: each
/// plane copied into the zeroed `pad` (th·m × tw·m: tiles past the edge read zeros), 16 tiles at
/// a time.
#[inline(always)]
fn dy_channels_impl<const M: usize, const R: usize>(p: &Plan, dy: &[f32], k0: usize, e: &mut [f32], pad: &mut [f32]) {
    let (a, ohw) = (M + R - 1, p.oh * p.ow);
    let n = dy.len() / (p.k * ohw);
    let t_all = n * p.tiles();
    let pc = p.tw * M;
    pad.fill(0.0);
    let mut d: Patch = [[ZERO; MAX_A]; MAX_A];
    for (ki, ek) in e.chunks_exact_mut(p.points() * t_all).enumerate() {
        let k = k0 + ki;
        let (mut t0, mut cnt) = (0, 0);
        let mut flush = |d: &Patch, cnt: usize, t0: usize| {
            let e = two_d(d, M, a, dy_1d::<M, R>);
            for x in 0..a {
                for y in 0..a {
                    ek[(x * a + y) * t_all + t0..][..cnt].copy_from_slice(&e[x][y][..cnt]);
                }
            }
        };
        for img in 0..n {
            let plane = &dy[(img * p.k + k) * ohw..][..ohw];
            for (r, src) in plane.chunks_exact(p.ow).enumerate() {
                pad[r * pc..][..p.ow].copy_from_slice(src);
            }
            for ti in 0..p.th {
                for tj in 0..p.tw {
                    let base = ti * M * pc + tj * M;
                    for (i, di) in d.iter_mut().enumerate().take(M) {
                        for (dij, &val) in di.iter_mut().zip(&pad[base + i * pc..][..M]) {
                            dij[cnt] = val;
                        }
                    }
                    cnt += 1;
                    if cnt == LANES {
                        flush(&d, cnt, t0);
                        (t0, cnt) = (t0 + LANES, 0);
                    }
                }
            }
        }
        if cnt > 0 {
            flush(&d, cnt, t0);
        }
    }
}

/// dw `[k][c][r][r]` += Gᵀ Mw G for the output channels k0.. that `dw` holds, 16 input
/// channels at a time.
#[inline(always)]
fn weight_grad_rows_impl<const M: usize, const R: usize>(p: &Plan, mw: &[f32], k0: usize, dw: &mut [f32]) {
    let (a, c) = (M + R - 1, p.c);
    let mut mt: Patch = [[ZERO; MAX_A]; MAX_A];
    for (ki, dwk) in dw.chunks_exact_mut(c * R * R).enumerate() {
        let k = k0 + ki;
        for c0 in (0..c).step_by(LANES) {
            let cnt = LANES.min(c - c0);
            for i in 0..a {
                for j in 0..a {
                    mt[i][j][..cnt].copy_from_slice(&mw[((i * a + j) * p.k + k) * c + c0..][..cnt]);
                }
            }
            let g = two_d(&mt, a, R, weight_grad_1d::<M, R>);
            for (i, r) in g.iter().enumerate().take(R) {
                for l in 0..cnt {
                    let f = &mut dwk[(c0 + l) * R * R + i * R..][..R];
                    for (j, fj) in f.iter_mut().enumerate() {
                        *fj += r[j][l];
                    }
                }
            }
        }
    }
}

/// V `[c][ξ][t]` of the input channels c0.. that `v` holds, for all `n` images of `x`: each
/// plane copied into the middle of the zero-padded `pad`, its tiles' patches gathered 16 at a
/// time and transformed together.
#[inline(always)]
fn input_channels_impl<const M: usize, const R: usize>(p: &Plan, x: &[f32], c0: usize, v: &mut [f32], pad: &mut [f32]) {
    let (a, hw) = (M + R - 1, p.h * p.w);
    let n = x.len() / (p.c * hw);
    let t_all = n * p.tiles();
    let pc = p.tw * M + R - 1;
    pad.fill(0.0);
    let mut d: Patch = [[ZERO; MAX_A]; MAX_A];
    for (ci, vc) in v.chunks_exact_mut(p.points() * t_all).enumerate() {
        let c = c0 + ci;
        let (mut t0, mut cnt) = (0, 0);
        for img in 0..n {
            let plane = &x[(img * p.c + c) * hw..][..hw];
            for (r, src) in plane.chunks_exact(p.w).enumerate() {
                pad[(r + p.ph) * pc + p.pw..][..p.w].copy_from_slice(src);
            }
            for ti in 0..p.th {
                for tj in 0..p.tw {
                    let base = ti * M * pc + tj * M;
                    for (i, di) in d.iter_mut().enumerate().take(a) {
                        let row = &pad[base + i * pc..][..a];
                        for (dij, &val) in di.iter_mut().zip(row) {
                            dij[cnt] = val;
                        }
                    }
                    cnt += 1;
                    if cnt == LANES {
                        store_input::<M, R>(&d, cnt, t0, t_all, vc);
                        (t0, cnt) = (t0 + LANES, 0);
                    }
                }
            }
        }
        if cnt > 0 {
            store_input::<M, R>(&d, cnt, t0, t_all, vc);
        }
    }
}

/// Transforms the patches `d` and writes the first `cnt` lanes at tiles t0.. of one channel's V.
#[inline(always)]
fn store_input<const M: usize, const R: usize>(d: &Patch, cnt: usize, t0: usize, t_all: usize, vc: &mut [f32]) {
    let a = M + R - 1;
    let v = two_d(d, a, a, input_1d::<M, R>);
    for i in 0..a {
        for j in 0..a {
            vc[(i * a + j) * t_all + t0..][..cnt].copy_from_slice(&v[i][j][..cnt]);
        }
    }
}

/// y of the images img0.. that `y` holds from M `[ξ][k][t]` of all `n` images: 16 tiles at a
/// time, transformed back, plus the bias, written where they fall inside the output.
#[inline(always)]
fn output_images_impl<const M: usize, const R: usize>(p: &Plan, mm: &[f32], n: usize, img0: usize, bias: Option<&[f32]>, y: &mut [f32]) {
    let (a, tiles, ohw) = (M + R - 1, p.tiles(), p.oh * p.ow);
    let nimg = y.len() / (p.k * ohw);
    let t_all = n * tiles;
    let mut mt: Patch = [[ZERO; MAX_A]; MAX_A];
    for k in 0..p.k {
        let b = bias.map_or(0.0, |b| b[k]);
        let (mut t0, t_end) = (img0 * tiles, (img0 + nimg) * tiles);
        while t0 < t_end {
            let cnt = LANES.min(t_end - t0);
            for i in 0..a {
                for j in 0..a {
                    mt[i][j][..cnt].copy_from_slice(&mm[((i * a + j) * p.k + k) * t_all + t0..][..cnt]);
                }
            }
            let out = two_d(&mt, a, M, output_1d::<M, R>);
            for (i, o) in out.iter().enumerate().take(M) {
                for l in 0..cnt {
                    let t = t0 + l;
                    let (img, r) = (t / tiles - img0, t % tiles);
                    let (row, c0) = ((r / p.tw) * M + i, (r % p.tw) * M);
                    if row >= p.oh {
                        continue;
                    }
                    let dst = &mut y[(img * p.k + k) * ohw + row * p.ow..][..p.ow];
                    for (j, oj) in o.iter().enumerate().take(M.min(p.ow - c0)) {
                        dst[c0 + j] = oj[l] + b;
                    }
                }
            }
            t0 += cnt;
        }
    }
}

/// U `[r][ξ][col]` for the rows r0.. that `u` holds (see `transform_weights`), 16 columns at a time.
#[inline(always)]
fn weight_rows_impl<const M: usize, const R: usize>(p: &Plan, w: &[f32], transposed: bool, r0: usize, u: &mut [f32]) {
    let (a, cols, xi) = (M + R - 1, p.c, p.points());
    let mut g: Patch = [[ZERO; MAX_A]; MAX_A];
    let taps = R * R;
    for (ri, ur) in u.chunks_exact_mut(xi * cols).enumerate() {
        let r = r0 + ri;
        for c0 in (0..cols).step_by(LANES) {
            let cnt = LANES.min(cols - c0);
            for l in 0..cnt {
                // Forward: filter (out = r, in = col). Transposed: filter (out = col, in = r),
                // rotated by 180°. The weights are (out, in, R, R) with `p.c` or `p.k` inputs.
                let f = if transposed { &w[((c0 + l) * p.k + r) * taps..][..taps] } else { &w[(r * cols + c0 + l) * taps..][..taps] };
                for (i, gi) in g.iter_mut().enumerate().take(R) {
                    for (j, gij) in gi.iter_mut().enumerate().take(R) {
                        gij[l] = if transposed { f[(R - 1 - i) * R + (R - 1 - j)] } else { f[i * R + j] };
                    }
                }
            }
            let t = two_d(&g, R, a, weight_1d::<M, R>);
            for i in 0..a {
                for j in 0..a {
                    ur[(i * a + j) * cols + c0..][..cnt].copy_from_slice(&t[i][j][..cnt]);
                }
            }
        }
    }
}

// The 1-D transforms. Bᵀ depends on the points only: 0, ±1, ∞ for α = 4 (F(2×2, 3×3)),
// 0, ±1, ±2, ∞ for α = 6 (F(4×4, 3×3) and F(2×2, 5×5)), and 0, ±1, ±2, 1/2, ∞ for α = 7
// (F(3×3, 5×5)); Aᵀ has rows p^j (j < m) and G rows p^j / Π(p − q) (j < r), the last point ∞
// taking the top coefficient, and Bᵀ solves Aᵀ[(G g) ⊙ (Bᵀ d)] = g ⋆ d (Lavin & Gray; the
// `wincnn` construction; the α = 7 terms below were printed by an exact rational solve of that
// system in sympy, and the layer tests check every transform against an f64 direct sum).
// Written out term by term: zeros cost nothing and the compiler vectorises each lane loop.

/// Bᵀ d of one line of a patch (α lanes).
#[inline(always)]
fn input_1d<const M: usize, const R: usize>(d: &[Lane; MAX_A]) -> [Lane; MAX_A] {
    let mut r = [ZERO; MAX_A];
    for l in 0..LANES {
        if M + R - 1 == 4 {
            let (d0, d1, d2, d3) = (d[0][l], d[1][l], d[2][l], d[3][l]);
            r[0][l] = d0 - d2;
            r[1][l] = d1 + d2;
            r[2][l] = d2 - d1;
            r[3][l] = d1 - d3;
        } else if M + R - 1 == 7 {
            let (d0, d1, d2, d3, d4, d5, d6) = (d[0][l], d[1][l], d[2][l], d[3][l], d[4][l], d[5][l], d[6][l]);
            r[0][l] = -2.0 * d0 + 4.0 * d1 + 2.5 * d2 - 5.0 * d3 - 0.5 * d4 + d5;
            r[1][l] = 2.0 * d1 - 2.0 * d2 - 4.5 * d3 + 0.5 * d4 + d5;
            r[2][l] = -2.0 * d1 + 6.0 * d2 - 3.5 * d3 - 1.5 * d4 + d5;
            r[3][l] = d1 - 1.5 * d2 - 2.0 * d3 + 1.5 * d4 + d5;
            r[4][l] = -d1 + 2.5 * d2 - 2.5 * d4 + d5;
            r[5][l] = 4.0 * d1 - 5.0 * d3 + d5;
            r[6][l] = -2.0 * d1 + 4.0 * d2 + 2.5 * d3 - 5.0 * d4 - 0.5 * d5 + d6;
        } else {
            let (d0, d1, d2, d3, d4, d5) = (d[0][l], d[1][l], d[2][l], d[3][l], d[4][l], d[5][l]);
            r[0][l] = 4.0 * d0 - 5.0 * d2 + d4;
            r[1][l] = -4.0 * (d1 + d2) + d3 + d4;
            r[2][l] = 4.0 * (d1 - d2) - d3 + d4;
            r[3][l] = 2.0 * (d3 - d1) - d2 + d4;
            r[4][l] = 2.0 * (d1 - d3) - d2 + d4;
            r[5][l] = 4.0 * d1 - 5.0 * d3 + d5;
        }
    }
    r
}

/// G g of one line of a filter (r lanes to α).
#[inline(always)]
fn weight_1d<const M: usize, const R: usize>(g: &[Lane; MAX_A]) -> [Lane; MAX_A] {
    let mut r = [ZERO; MAX_A];
    for l in 0..LANES {
        let (g0, g1, g2, g3, g4) = (g[0][l], g[1][l], g[2][l], g[3][l], g[4][l]);
        if (M, R) == (2, 3) {
            r[0][l] = g0;
            r[1][l] = 0.5 * (g0 + g1 + g2);
            r[2][l] = 0.5 * (g0 - g1 + g2);
            r[3][l] = g2;
        } else if (M, R) == (4, 3) {
            r[0][l] = g0 / 4.0;
            r[1][l] = -(g0 + g1 + g2) / 6.0;
            r[2][l] = -(g0 - g1 + g2) / 6.0;
            r[3][l] = g0 / 24.0 + g1 / 12.0 + g2 / 6.0;
            r[4][l] = g0 / 24.0 - g1 / 12.0 + g2 / 6.0;
            r[5][l] = g2;
        } else if (M, R) == (3, 5) {
            r[0][l] = -g0 / 2.0;
            r[1][l] = -(g0 + g1 + g2 + g3 + g4) / 3.0;
            r[2][l] = (g0 - g1 + g2 - g3 + g4) / 9.0;
            r[3][l] = (g0 + 2.0 * g1 + 4.0 * g2 + 8.0 * g3 + 16.0 * g4) / 36.0;
            r[4][l] = -(g0 - 2.0 * g1 + 4.0 * g2 - 8.0 * g3 + 16.0 * g4) / 60.0;
            r[5][l] = (32.0 * g0 + 16.0 * g1 + 8.0 * g2 + 4.0 * g3 + 2.0 * g4) / 45.0;
            r[6][l] = g4;
        } else {
            let (even, odd) = (g0 + g2 + g4, g1 + g3);
            let (even2, odd2) = (g0 + 4.0 * g2 + 16.0 * g4, 2.0 * g1 + 8.0 * g3);
            r[0][l] = g0 / 4.0;
            r[1][l] = -(even + odd) / 6.0;
            r[2][l] = -(even - odd) / 6.0;
            r[3][l] = (even2 + odd2) / 24.0;
            r[4][l] = (even2 - odd2) / 24.0;
            r[5][l] = g4;
        }
    }
    r
}

/// Aᵀ m of one line of a product tile (α lanes to m).
#[inline(always)]
fn output_1d<const M: usize, const R: usize>(m: &[Lane; MAX_A]) -> [Lane; MAX_A] {
    let mut r = [ZERO; MAX_A];
    for l in 0..LANES {
        if M + R - 1 == 4 {
            let (m0, m1, m2, m3) = (m[0][l], m[1][l], m[2][l], m[3][l]);
            r[0][l] = m0 + m1 + m2;
            r[1][l] = m1 - m2 - m3;
        } else if M + R - 1 == 7 {
            let (m0, m1, m2, m3, m4, m5, m6) = (m[0][l], m[1][l], m[2][l], m[3][l], m[4][l], m[5][l], m[6][l]);
            let (s12, d12, s34, d34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
            r[0][l] = m0 + s12 + s34 + m5;
            r[1][l] = d12 + 2.0 * d34 + 0.5 * m5;
            r[2][l] = s12 + 4.0 * s34 + 0.25 * m5 + m6;
        } else {
            let (m0, m1, m2, m3, m4, m5) = (m[0][l], m[1][l], m[2][l], m[3][l], m[4][l], m[5][l]);
            let (s12, d12, s34, d34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
            r[0][l] = m0 + s12 + s34;
            if M == 2 {
                r[1][l] = d12 + 2.0 * d34 + m5;
            } else {
                r[1][l] = d12 + 2.0 * d34;
                r[2][l] = s12 + 4.0 * s34;
                r[3][l] = d12 + 8.0 * d34 + m5;
            }
        }
    }
    r
}

/// A dy of one line of an output-gradient tile (m lanes to α).
#[inline(always)]
fn dy_1d<const M: usize, const R: usize>(d: &[Lane; MAX_A]) -> [Lane; MAX_A] {
    let mut r = [ZERO; MAX_A];
    for l in 0..LANES {
        if (M, R) == (2, 3) {
            let (d0, d1) = (d[0][l], d[1][l]);
            r[0][l] = d0;
            r[1][l] = d0 + d1;
            r[2][l] = d0 - d1;
            r[3][l] = -d1;
        } else if M == 3 {
            let (d0, d1, d2) = (d[0][l], d[1][l], d[2][l]);
            r[0][l] = d0;
            r[1][l] = d0 + d1 + d2;
            r[2][l] = d0 - d1 + d2;
            r[3][l] = d0 + 2.0 * d1 + 4.0 * d2;
            r[4][l] = d0 - 2.0 * d1 + 4.0 * d2;
            r[5][l] = d0 + 0.5 * d1 + 0.25 * d2;
            r[6][l] = d2;
        } else if M == 2 {
            let (d0, d1) = (d[0][l], d[1][l]);
            r[0][l] = d0;
            r[1][l] = d0 + d1;
            r[2][l] = d0 - d1;
            r[3][l] = d0 + 2.0 * d1;
            r[4][l] = d0 - 2.0 * d1;
            r[5][l] = d1;
        } else {
            let (d0, d1, d2, d3) = (d[0][l], d[1][l], d[2][l], d[3][l]);
            let (e02, e13) = (d0 + d2, d1 + d3);
            let (f02, f13) = (d0 + 4.0 * d2, 2.0 * d1 + 8.0 * d3);
            r[0][l] = d0;
            r[1][l] = e02 + e13;
            r[2][l] = e02 - e13;
            r[3][l] = f02 + f13;
            r[4][l] = f02 - f13;
            r[5][l] = d3;
        }
    }
    r
}

/// Gᵀ m of one line of a weight-gradient product (α lanes to r).
#[inline(always)]
fn weight_grad_1d<const M: usize, const R: usize>(m: &[Lane; MAX_A]) -> [Lane; MAX_A] {
    let mut r = [ZERO; MAX_A];
    for l in 0..LANES {
        if (M, R) == (2, 3) {
            let (m0, m1, m2, m3) = (m[0][l], m[1][l], m[2][l], m[3][l]);
            r[0][l] = m0 + 0.5 * (m1 + m2);
            r[1][l] = 0.5 * (m1 - m2);
            r[2][l] = 0.5 * (m1 + m2) + m3;
        } else if (M, R) == (3, 5) {
            let (m0, m1, m2, m3, m4, m5, m6) = (m[0][l], m[1][l], m[2][l], m[3][l], m[4][l], m[5][l], m[6][l]);
            r[0][l] = -m0 / 2.0 - m1 / 3.0 + m2 / 9.0 + m3 / 36.0 - m4 / 60.0 + 32.0 * m5 / 45.0;
            r[1][l] = -m1 / 3.0 - m2 / 9.0 + m3 / 18.0 + m4 / 30.0 + 16.0 * m5 / 45.0;
            r[2][l] = -m1 / 3.0 + m2 / 9.0 + m3 / 9.0 - m4 / 15.0 + 8.0 * m5 / 45.0;
            r[3][l] = -m1 / 3.0 - m2 / 9.0 + 2.0 * m3 / 9.0 + 2.0 * m4 / 15.0 + 4.0 * m5 / 45.0;
            r[4][l] = -m1 / 3.0 + m2 / 9.0 + 4.0 * m3 / 9.0 - 4.0 * m4 / 15.0 + 2.0 * m5 / 45.0 + m6;
        } else {
            let (m0, m1, m2, m3, m4, m5) = (m[0][l], m[1][l], m[2][l], m[3][l], m[4][l], m[5][l]);
            let (s12, d12, s34, d34) = (m1 + m2, m2 - m1, m3 + m4, m3 - m4);
            r[0][l] = m0 / 4.0 - s12 / 6.0 + s34 / 24.0;
            r[1][l] = d12 / 6.0 + d34 / 12.0;
            if R == 3 {
                r[2][l] = -s12 / 6.0 + s34 / 6.0 + m5;
            } else {
                r[2][l] = -s12 / 6.0 + s34 / 6.0;
                r[3][l] = d12 / 6.0 + d34 / 3.0;
                r[4][l] = -s12 / 6.0 + 2.0 * s34 / 3.0 + m5;
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of a test convolution: n images of c channels of h×w, k filters of r×r,
    /// padding (ph, pw).
    #[derive(Clone, Copy)]
    struct Shape {
        n: usize,
        c: usize,
        k: usize,
        h: usize,
        w: usize,
        r: usize,
        ph: usize,
        pw: usize,
    }

    impl Shape {
        fn out(&self) -> (usize, usize) {
            (self.h + 2 * self.ph + 1 - self.r, self.w + 2 * self.pw + 1 - self.r)
        }

        /// Calls `f(input, weight, output)` with the indices of every multiply-add of the
        /// direct convolution, output by output, each output's terms by channel, row, column.
        fn taps(&self, mut f: impl FnMut(usize, usize, usize)) {
            let Shape { n, c, k, h, w, r, ph, pw } = *self;
            let (oh, ow) = self.out();
            for i in 0..n {
                for o in 0..k {
                    for y in 0..oh {
                        for s in 0..ow {
                            for ci in 0..c {
                                for a in 0..r {
                                    for b in 0..r {
                                        let (yy, xx) = ((y + a) as isize - ph as isize, (s + b) as isize - pw as isize);
                                        if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < w {
                                            f(((i * c + ci) * h + yy as usize) * w + xx as usize, ((o * c + ci) * r + a) * r + b, ((i * k + o) * oh + y) * ow + s);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }

        /// The direct convolution of x with w, in f64.
        fn reference(&self, x: &[f32], w: &[f32]) -> Vec<f64> {
            let (oh, ow) = self.out();
            let mut y = vec![0.0f64; self.n * self.k * oh * ow];
            self.taps(|xi, wi, yi| y[yi] += x[xi] as f64 * w[wi] as f64);
            y
        }
    }

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2001) as f32 / 1000.0 - 1.0).collect()
    }

    /// Largest error relative to the largest magnitude of the reference.
    fn rel_err(got: &[f32], want: &[f64]) -> f64 {
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        got.iter().zip(want).map(|(&g, &w)| (g as f64 - w).abs()).fold(0.0, f64::max) / scale
    }

    #[test]
    fn forward_and_backward_data_match_the_direct_sum_in_f64() {
        // Maps off the tile size, padding 0, 1 and 2 (rectangular too), channels off 16.
        let cases = [(2, 3, 5, 7, 6, 1, 1), (1, 17, 4, 5, 5, 0, 0), (3, 5, 19, 8, 8, 1, 1), (2, 4, 3, 2, 2, 1, 1), (1, 2, 3, 4, 9, 2, 1), (2, 33, 18, 3, 3, 1, 0)];
        let cases5 = [(2, 3, 5, 7, 6, 2, 2), (1, 17, 4, 5, 5, 0, 0), (3, 5, 19, 15, 15, 2, 2), (2, 4, 3, 2, 2, 2, 2), (1, 2, 3, 4, 9, 3, 1), (2, 33, 18, 6, 5, 4, 0)];
        let runs = cases.iter().flat_map(|&cs| [(Tile::F2, 3, cs), (Tile::F4, 3, cs)]).chain(cases5.iter().flat_map(|&cs| [(Tile::F2, 5, cs), (Tile::F3, 5, cs)]));
        for (tile, r, (n, c, k, h, w, ph, pw)) in runs {
            let sh = Shape { n, c, k, h, w, r, ph, pw };
            let x = data(n * c * h * w, 1);
            let wt = data(k * c * r * r, 2);
            let b: Vec<f32> = (0..k).map(|i| i as f32 * 0.1).collect();
            let mut win = Winograd::new(tile, r, c, k, h, w, ph, pw).unwrap();
            let (oh, ow) = (win.plan().oh, win.plan().ow);
            assert_eq!((oh, ow), sh.out());
            for threads in [1, 3] {
                let what = format!("{tile:?} {n} {c}->{k} {h}x{w} pad {ph},{pw}, {threads} threads");
                let mut y = vec![f32::NAN; n * k * oh * ow];
                win.forward(threads, &wt, Some(&b), &x, &mut y);
                let mut want = sh.reference(&x, &wt);
                for (i, v) in want.iter_mut().enumerate() {
                    *v += b[(i / (oh * ow)) % k] as f64;
                }
                let e = rel_err(&y, &want);
                assert!(e < 1e-5, "{what}: forward {e}");
                // Backward data: the input gradient of sum(y * dy) is the transposed convolution.
                let dy = data(n * k * oh * ow, 3);
                let mut dx = vec![f32::NAN; n * c * h * w];
                win.backward_data(threads, &wt, &dy, &mut dx);
                let mut want = vec![0.0f64; dx.len()];
                sh.taps(|xi, wi, yi| want[xi] += dy[yi] as f64 * wt[wi] as f64);
                let e = rel_err(&dx, &want);
                assert!(e < 1e-5, "{what}: backward data {e}");
                // Weight gradient, accumulated onto 1.0.
                let mut dw = vec![1.0f32; k * c * r * r];
                win.backward_weights(threads, &x, &dy, &mut dw);
                let mut want = vec![1.0f64; dw.len()];
                sh.taps(|xi, wi, yi| want[wi] += dy[yi] as f64 * x[xi] as f64);
                let e = rel_err(&dw, &want);
                assert!(e < 1e-5, "{what}: weight gradient {e}");
            }
        }
    }

    #[test]
    fn a_padding_or_map_the_kernel_does_not_fit_is_refused() {
        assert!(Plan::new(Tile::F4, 3, 1, 1, 5, 5, 3, 1).is_none());
        assert!(Plan::new(Tile::F2, 3, 1, 1, 2, 2, 0, 0).is_none());
        assert_eq!(Plan::new(Tile::F2, 3, 1, 1, 2, 2, 1, 1).map(|p| (p.oh, p.ow)), Some((2, 2)));
        assert!(Plan::new(Tile::F4, 5, 1, 1, 9, 9, 2, 2).is_none(), "F(4×4, 5×5) is not offered");
        assert!(Plan::new(Tile::F3, 3, 1, 1, 9, 9, 1, 1).is_none(), "F(3×3, 3×3) is not offered");
        assert_eq!(Plan::new(Tile::F3, 5, 1, 1, 15, 15, 2, 2).map(|p| (p.th, p.tw)), Some((5, 5)));
        assert!(Plan::new(Tile::F2, 5, 1, 1, 9, 9, 5, 2).is_none());
        assert!(Plan::new(Tile::F2, 7, 1, 1, 9, 9, 3, 3).is_none());
        assert_eq!(Plan::new(Tile::F2, 5, 1, 1, 15, 15, 2, 2).map(|p| (p.oh, p.ow)), Some((15, 15)));
    }

    /// Largest error relative to the largest output, and RMS error relative to it, of the f32
    /// direct sum and of each tile, against the f64 sum, on a 64→64 layer of `h`×`h` maps with
    /// weights of Kaiming scale (r×r, padding r / 2).
    fn rounding(r: usize, h: usize, tiles: &[Tile]) -> Vec<(f64, f64)> {
        let (n, c, k, p) = (4, 64, 64, r / 2);
        let sh = Shape { n, c, k, h, w: h, r, ph: p, pw: p };
        let x = data(n * c * h * h, 5);
        let scale = (2.0 / (c * r * r) as f32).sqrt();
        let wt: Vec<f32> = data(k * c * r * r, 6).iter().map(|v| v * scale).collect();
        let want = sh.reference(&x, &wt);
        // The direct sum in f32, each output's terms added in order.
        let mut direct = vec![0.0f32; want.len()];
        sh.taps(|xi, wi, yi| direct[yi] += x[xi] * wt[wi]);
        let top = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let rms = |y: &[f32]| (y.iter().zip(&want).map(|(&g, &w)| (g as f64 - w).powi(2)).sum::<f64>() / want.len() as f64).sqrt() / top;
        let mut out = vec![(rel_err(&direct, &want), rms(&direct))];
        for &tile in tiles {
            let mut win = Winograd::new(tile, r, c, k, h, h, p, p).unwrap();
            let mut y = vec![0.0; want.len()];
            win.forward(1, &wt, None, &x, &mut y);
            out.push((rel_err(&y, &want), rms(&y)));
        }
        eprintln!("{r}×{r} on {h}×{h}, max / rms error: direct, then {tiles:?}: {out:?}");
        out
    }

    /// The rounding the docs state. 3×3 on 8×8: the largest error is below 1e-6 for F(2×2) and
    /// 1e-5 for F(4×4) (measured 3.2e-7 and 7.9e-6; the sequential f32 direct sum: 8.2e-7), and
    /// the RMS error of F(4×4) is within 8× that of the direct sum (measured 5.8e-7 against
    /// 1.0e-7; F(2×2) 6.6e-8). 5×5 on 15×15 (AlexNet-CIFAR's conv2): F(2×2) and F(3×3) below
    /// 1e-5, and F(3×3)'s RMS error within 8× the direct sum's (measured: largest 5.3e-6 and
    /// 6.1e-6 against the direct sum's 1.3e-6; RMS 5.1e-7 and 6.8e-7 against 1.7e-7).
    #[test]
    fn rounding_stays_within_the_stated_bounds() {
        let e = rounding(3, 8, &[Tile::F2, Tile::F4]);
        assert!(e[1].0 < 1e-6);
        assert!(e[2].0 < 1e-5);
        assert!(e[2].1 < 8.0 * e[0].1);
        let e = rounding(5, 15, &[Tile::F2, Tile::F3]);
        assert!(e[1].0 < 1e-5 && e[2].0 < 1e-5);
        assert!(e[2].1 < 8.0 * e[0].1);
    }
}
