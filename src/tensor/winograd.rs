//! Winograd convolution F(m×m, 3×3) for 3×3, stride-1 convolutions (Lavin & Gray 2016, "Fast
//! Algorithms for Convolutional Neural Networks"), m = 2 or 4.
//!
//! Each output tile of m×m pixels is `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`, where d is the tile's
//! (m+2)×(m+2) input patch and g the 3×3 filter. Summed over input channels, the element-wise
//! product becomes (m+2)² independent GEMMs, one per transform point ξ, over all tiles of the
//! batch at once: `M_ξ (K × T) = U_ξ (K × C) · V_ξ (C × T)`. A direct 3×3 convolution costs 9
//! multiply-adds per output and input channel; F(2×2) costs 16/4 = 4 (2.25× fewer), F(4×4)
//! 36/16 = 2.25 (4× fewer), paid for with the transforms (memory-bound passes over V and M) and
//! with rounding: F(4×4)'s points ±2 and its 1/24 scale lose about two decimal digits against
//! the direct sum, F(2×2) almost none (the layer tests state the tolerances).
//!
//! Backward data of a stride-1 3×3 convolution with padding p is a convolution of dy with the
//! filters rotated by 180° and their channel axes swapped, padding 2 − p: the same algorithm
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
/// The largest transform size, m + 2 for m = 4.
const MAX_A: usize = 6;
type Patch = [[Lane; MAX_A]; MAX_A];

/// The output tile size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tile {
    /// F(2×2, 3×3): 4×4 transforms.
    F2,
    /// F(4×4, 3×3): 6×6 transforms.
    F4,
}

impl Tile {
    /// Output pixels per tile side.
    pub fn m(self) -> usize {
        match self {
            Tile::F2 => 2,
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
    /// The plan of a 3×3, stride-1 convolution, or `None` where Winograd does not apply
    /// (padding above 2, or an input smaller than the kernel).
    pub fn new(tile: Tile, c: usize, k: usize, h: usize, w: usize, ph: usize, pw: usize) -> Option<Plan> {
        if ph > 2 || pw > 2 || h + 2 * ph < 3 || w + 2 * pw < 3 || c == 0 || k == 0 {
            return None;
        }
        let (oh, ow) = (h + 2 * ph - 2, w + 2 * pw - 2);
        let m = tile.m();
        Some(Plan { tile, c, k, h, w, ph, pw, oh, ow, th: oh.div_ceil(m), tw: ow.div_ceil(m) })
    }

    /// The plan of backward data: dy (k channels of oh×ow) to dx (c channels of h×w), padding
    /// 2 − p, with the filters of `transform_weights(.., transposed = true)`.
    pub fn transposed(&self) -> Plan {
        Plan::new(self.tile, self.k, self.c, self.oh, self.ow, 2 - self.ph, 2 - self.pw).expect("the transposed plan of a valid plan is valid")
    }

    fn alpha(&self) -> usize {
        self.tile.m() + 2
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
        let m = self.tile.m();
        (self.th * m + 2) * (self.tw * m + 2)
    }
}

/// A Winograd convolution layer's state: its forward and backward-data plans, the transformed
/// filters of each, and the transformed inputs and products, kept between calls (no allocation
/// once grown).
pub struct Winograd {
    fwd: Plan,
    bwd: Plan,
    u: Vec<f32>,
    ut: Vec<f32>,
    v: Vec<f32>,
    m: Vec<f32>,
    /// Weight gradient: dy's tiles transformed, `[K][ξ][T]`.
    e: Vec<f32>,
    pads: Vec<Vec<f32>>,
}

impl Winograd {
    /// For a 3×3, stride-1, one-group convolution of `c` channels of h×w to `k`, padded by
    /// (ph, pw); `None` where it does not apply.
    pub fn new(tile: Tile, c: usize, k: usize, h: usize, w: usize, ph: usize, pw: usize) -> Option<Winograd> {
        let fwd = Plan::new(tile, c, k, h, w, ph, pw)?;
        Some(Winograd { fwd, bwd: fwd.transposed(), u: Vec::new(), ut: Vec::new(), v: Vec::new(), m: Vec::new(), e: Vec::new(), pads: Vec::new() })
    }

    /// The forward plan.
    pub fn plan(&self) -> &Plan {
        &self.fwd
    }

    /// `y` (n, k, oh, ow) = conv(`x` (n, c, h, w), `w` (k, c, 3, 3)) + `bias`.
    pub fn forward(&mut self, threads: usize, w: &[f32], bias: Option<&[f32]>, x: &[f32], y: &mut [f32]) {
        let p = self.fwd;
        self.u.resize(p.u_len(), 0.0);
        transform_weights(&p, threads, w, false, &mut self.u);
        run(&p, threads, &self.u, x, bias, y, &mut self.v, &mut self.m, &mut self.pads);
    }

    /// `dx` (n, c, h, w) = the input gradient of the forward convolution for `dy` (n, k, oh, ow).
    pub fn backward_data(&mut self, threads: usize, w: &[f32], dy: &[f32], dx: &mut [f32]) {
        let p = self.bwd;
        self.ut.resize(p.u_len(), 0.0);
        transform_weights(&p, threads, w, true, &mut self.ut);
        run(&p, threads, &self.ut, dy, None, dx, &mut self.v, &mut self.m, &mut self.pads);
    }

    /// `dw` (k, c, 3, 3) += the weight gradient of the forward convolution of `x` for `dy`.
    ///
    /// The same transform points read backwards: with y = Aᵀ[(G g) ⊙ (Bᵀ d)], the trilinear form
    /// Σ dy·y = Σ_ξ (A dy)_ξ (G g)_ξ (Bᵀ d)_ξ gives dg = Gᵀ[(A dy) ⊙ (Bᵀ d)]; in 2-D, per tile,
    /// dW = Gᵀ [(A dy Aᵀ) ⊙ (Bᵀ d B)] G, and the sum over tiles and images is one GEMM per ξ:
    /// `Mw_ξ (K × C) = E_ξ (K × T) · V_ξᵀ (T × C)`.
    pub fn backward_weights(&mut self, threads: usize, x: &[f32], dy: &[f32], dw: &mut [f32]) {
        let p = self.fwd;
        let n = x.len() / (p.c * p.h * p.w);
        assert_eq!(x.len(), n * p.c * p.h * p.w, "winograd: input length");
        assert_eq!(dy.len(), n * p.k * p.oh * p.ow, "winograd: output gradient length");
        assert_eq!(dw.len(), p.k * p.c * 9, "winograd: weight gradient length");
        if n == 0 {
            return;
        }
        let (xi, t) = (p.points(), n * p.tiles());
        let threads = threads.max(1);
        prepare(&p, threads, n, &mut self.v, &mut self.pads);
        self.e.resize(p.k * xi * t, 0.0);
        self.m.resize(xi * p.k * p.c, 0.0);
        let isa = Isa::best();
        let (per_c, per_k) = (p.c.div_ceil(threads), p.k.div_ceil(threads));
        if threads == 1 {
            input_channels(isa, &p, x, 0, &mut self.v, &mut self.pads[0]);
            for pad in self.pads.iter_mut() {
                pad.fill(0.0);
            }
            dy_channels(isa, &p, dy, 0, &mut self.e, &mut self.pads[0]);
        } else {
            self.v.par_chunks_mut(per_c * xi * t).zip(self.pads.par_iter_mut()).enumerate().with_max_len(1).for_each(|(i, (vc, pad))| input_channels(isa, &p, x, i * per_c, vc, pad));
            for pad in self.pads.iter_mut() {
                pad.fill(0.0);
            }
            self.e.par_chunks_mut(per_k * xi * t).zip(self.pads.par_iter_mut()).enumerate().with_max_len(1).for_each(|(i, (ec, pad))| dy_channels(isa, &p, dy, i * per_k, ec, pad));
        }
        let (v, e, kc) = (&self.v[..], &self.e[..], p.k * p.c);
        let gemm = |g: usize, mg: &mut [f32]| sgemm(p.k, p.c, t, MatRef::n(&e[g * t..], xi * t), MatRef::t(&v[g * t..], xi * t), mg, p.c, false, 1);
        if threads == 1 {
            self.m.chunks_exact_mut(kc).enumerate().for_each(|(g, mg)| gemm(g, mg));
            weight_grad_rows(isa, &p, &self.m, 0, dw);
        } else {
            let per = xi.div_ceil(threads);
            self.m.par_chunks_mut(per * kc).enumerate().with_max_len(1).for_each(|(i, chunk)| chunk.chunks_exact_mut(kc).enumerate().for_each(|(j, mg)| gemm(i * per + j, mg)));
            let m = &self.m[..];
            dw.par_chunks_mut(per_k * p.c * 9).enumerate().with_max_len(1).for_each(|(i, dwc)| weight_grad_rows(isa, &p, m, i * per_k, dwc));
        }
    }
}

/// Sizes V for `n` images and gives each of `threads` a zeroed padded plane.
fn prepare(p: &Plan, threads: usize, n: usize, v: &mut Vec<f32>, pads: &mut Vec<Vec<f32>>) {
    v.resize(p.c * p.points() * n * p.tiles(), 0.0);
    pads.resize_with(threads, Vec::new);
    for pad in pads.iter_mut() {
        pad.clear();
        pad.resize(p.pad_len(), 0.0);
    }
}

/// One convolution by `p` with transformed filters `u`: input transform, GEMMs, output transform.
#[allow(clippy::too_many_arguments)]
fn run(p: &Plan, threads: usize, u: &[f32], x: &[f32], bias: Option<&[f32]>, y: &mut [f32], v: &mut Vec<f32>, m: &mut Vec<f32>, pads: &mut Vec<Vec<f32>>) {
    let n = x.len() / (p.c * p.h * p.w);
    assert_eq!(x.len(), n * p.c * p.h * p.w, "winograd: input length");
    assert_eq!(y.len(), n * p.k * p.oh * p.ow, "winograd: output length");
    assert_eq!(u.len(), p.u_len(), "winograd: filter length");
    if n == 0 {
        return;
    }
    let (xi, t) = (p.points(), n * p.tiles());
    let threads = threads.max(1);
    prepare(p, threads, n, v, pads);
    m.resize(xi * p.k * t, 0.0);
    let isa = Isa::best();
    // Input transform, by input channel.
    let per_c = p.c.div_ceil(threads);
    if threads == 1 {
        input_channels(isa, p, x, 0, v, &mut pads[0]);
    } else {
        v.par_chunks_mut(per_c * xi * t).zip(pads.par_iter_mut()).enumerate().with_max_len(1).for_each(|(i, (vc, pad))| input_channels(isa, p, x, i * per_c, vc, pad));
    }
    // One GEMM per transform point: M_ξ (K × T) = U_ξ (K × C) · V_ξ (C × T).
    let (v, kt) = (&v[..], p.k * t);
    let gemm = |g: usize, mg: &mut [f32]| sgemm(p.k, t, p.c, MatRef::n(&u[g * p.c..], xi * p.c), MatRef::n(&v[g * t..], xi * t), mg, t, false, 1);
    if threads == 1 {
        m.chunks_exact_mut(kt).enumerate().for_each(|(g, mg)| gemm(g, mg));
    } else {
        let per = xi.div_ceil(threads);
        m.par_chunks_mut(per * kt).enumerate().with_max_len(1).for_each(|(i, chunk)| chunk.chunks_exact_mut(kt).enumerate().for_each(|(j, mg)| gemm(i * per + j, mg)));
    }
    // Output transform, by image.
    let ys = p.k * p.oh * p.ow;
    if threads == 1 {
        output_images(isa, p, m, n, 0, bias, y);
    } else {
        let per = n.div_ceil(threads);
        y.par_chunks_mut(per * ys).enumerate().with_max_len(1).for_each(|(i, yc)| output_images(isa, p, m, n, i * per, bias, yc));
    }
}

/// The filters of `w` (k, c, 3, 3) transformed into U `[rows][ξ][cols]`: for the forward plan
/// rows = k, cols = c; `transposed` (backward data, whose plan has c and k swapped) reads
/// filter (row = input channel, col = output channel) rotated by 180°.
fn transform_weights(p: &Plan, threads: usize, w: &[f32], transposed: bool, u: &mut [f32]) {
    assert_eq!(w.len(), p.k * p.c * 9, "winograd: weight length");
    let isa = Isa::best();
    let row = p.points() * p.c;
    if threads <= 1 {
        weight_rows(isa, p, w, transposed, 0, u);
    } else {
        let per = p.k.div_ceil(threads);
        u.par_chunks_mut(per * row).enumerate().with_max_len(1).for_each(|(i, uc)| weight_rows(isa, p, w, transposed, i * per, uc));
    }
}

/// Runs `$imp::<M>` with the instruction set `isa` (this CPU's, from `Isa::best`) enabled, so
/// that the transforms' lane loops compile to its vectors; portable code without one.
macro_rules! isa_entry {
    ($name:ident, $imp:ident, ($($a:ident: $t:ty),*)) => {
        fn $name(isa: Option<Isa>, p: &Plan, $($a: $t),*) {
            match p.tile {
                Tile::F2 => dispatch::<2>(isa, p, $($a),*),
                Tile::F4 => dispatch::<4>(isa, p, $($a),*),
            }
            fn dispatch<const M: usize>(isa: Option<Isa>, p: &Plan, $($a: $t),*) {
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx512f")]
                    unsafe fn avx512<const M: usize>(p: &Plan, $($a: $t),*) {
                        $imp::<M>(p, $($a),*)
                    }
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn avx2<const M: usize>(p: &Plan, $($a: $t),*) {
                        $imp::<M>(p, $($a),*)
                    }
                    match isa {
                        // SAFETY: `isa` is what this CPU runs (`Isa::best`).
                        Some(Isa::Avx512) => return unsafe { avx512::<M>(p, $($a),*) },
                        // SAFETY: as above.
                        Some(Isa::Avx2) => return unsafe { avx2::<M>(p, $($a),*) },
                        None => {}
                    }
                }
                let _ = isa;
                $imp::<M>(p, $($a),*)
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
fn dy_channels_impl<const M: usize>(p: &Plan, dy: &[f32], k0: usize, e: &mut [f32], pad: &mut [f32]) {
    let (a, ohw) = (M + 2, p.oh * p.ow);
    let n = dy.len() / (p.k * ohw);
    let t_all = n * p.tiles();
    let pc = p.tw * M;
    let mut d = [[ZERO; MAX_A]; MAX_A];
    let mut col = [ZERO; MAX_A];
    let mut tmp: Patch = [[ZERO; MAX_A]; MAX_A];
    for (ki, ek) in e.chunks_exact_mut(p.points() * t_all).enumerate() {
        let k = k0 + ki;
        let (mut t0, mut cnt) = (0, 0);
        let mut flush = |d: &[[Lane; MAX_A]; MAX_A], cnt: usize, t0: usize| {
            for j in 0..M {
                for i in 0..M {
                    col[i] = d[i][j];
                }
                let r = dy_1d::<M>(&col);
                for x in 0..a {
                    tmp[x][j] = r[x];
                }
            }
            for x in 0..a {
                let r = dy_1d::<M>(&tmp[x]);
                for y in 0..a {
                    ek[(x * a + y) * t_all + t0..][..cnt].copy_from_slice(&r[y][..cnt]);
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

/// dw `[k][c][3][3]` += Gᵀ Mw G for the output channels k0.. that `dw` holds, 16 input
/// channels at a time.
#[inline(always)]
fn weight_grad_rows_impl<const M: usize>(p: &Plan, mw: &[f32], k0: usize, dw: &mut [f32]) {
    let (a, c) = (M + 2, p.c);
    let mut mt: Patch = [[ZERO; MAX_A]; MAX_A];
    let mut col = [ZERO; MAX_A];
    let mut tmp = [[ZERO; MAX_A]; 3];
    for (ki, dwk) in dw.chunks_exact_mut(c * 9).enumerate() {
        let k = k0 + ki;
        for c0 in (0..c).step_by(LANES) {
            let cnt = LANES.min(c - c0);
            for i in 0..a {
                for j in 0..a {
                    mt[i][j][..cnt].copy_from_slice(&mw[((i * a + j) * p.k + k) * c + c0..][..cnt]);
                }
            }
            for j in 0..a {
                for i in 0..a {
                    col[i] = mt[i][j];
                }
                let r = weight_grad_1d::<M>(&col);
                for i in 0..3 {
                    tmp[i][j] = r[i];
                }
            }
            for (i, ti) in tmp.iter().enumerate() {
                let r = weight_grad_1d::<M>(ti);
                for l in 0..cnt {
                    let f = &mut dwk[(c0 + l) * 9 + i * 3..][..3];
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
fn input_channels_impl<const M: usize>(p: &Plan, x: &[f32], c0: usize, v: &mut [f32], pad: &mut [f32]) {
    let (a, hw) = (M + 2, p.h * p.w);
    let n = x.len() / (p.c * hw);
    let t_all = n * p.tiles();
    let pc = p.tw * M + 2;
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
                        store_input::<M>(&d, cnt, t0, t_all, vc);
                        (t0, cnt) = (t0 + LANES, 0);
                    }
                }
            }
        }
        if cnt > 0 {
            store_input::<M>(&d, cnt, t0, t_all, vc);
        }
    }
}

/// Transforms the patches `d` and writes the first `cnt` lanes at tiles t0.. of one channel's V.
#[inline(always)]
fn store_input<const M: usize>(d: &Patch, cnt: usize, t0: usize, t_all: usize, vc: &mut [f32]) {
    let a = M + 2;
    let mut col = [ZERO; MAX_A];
    let mut tmp: Patch = [[ZERO; MAX_A]; MAX_A];
    // Bᵀ d: along each column of the patch, then along the rows of the result (· B).
    for b in 0..a {
        for i in 0..a {
            col[i] = d[i][b];
        }
        let r = input_1d::<M>(&col);
        for i in 0..a {
            tmp[i][b] = r[i];
        }
    }
    for i in 0..a {
        let r = input_1d::<M>(&tmp[i]);
        for j in 0..a {
            vc[(i * a + j) * t_all + t0..][..cnt].copy_from_slice(&r[j][..cnt]);
        }
    }
}

/// y of the images img0.. that `y` holds from M `[ξ][k][t]` of all `n` images: 16 tiles at a
/// time, transformed back, plus the bias, written where they fall inside the output.
#[inline(always)]
fn output_images_impl<const M: usize>(p: &Plan, mm: &[f32], n: usize, img0: usize, bias: Option<&[f32]>, y: &mut [f32]) {
    let (a, tiles, ohw) = (M + 2, p.tiles(), p.oh * p.ow);
    let nimg = y.len() / (p.k * ohw);
    let t_all = n * tiles;
    let mut mt: Patch = [[ZERO; MAX_A]; MAX_A];
    let mut col = [ZERO; MAX_A];
    let mut tmp: [[Lane; MAX_A]; 4] = [[ZERO; MAX_A]; 4];
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
            // Aᵀ m A: along the columns, then along the rows of the result.
            for j in 0..a {
                for i in 0..a {
                    col[i] = mt[i][j];
                }
                let r = output_1d::<M>(&col);
                for i in 0..M {
                    tmp[i][j] = r[i];
                }
            }
            for (i, ti_row) in tmp.iter().enumerate().take(M) {
                let o = output_1d::<M>(ti_row);
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
fn weight_rows_impl<const M: usize>(p: &Plan, w: &[f32], transposed: bool, r0: usize, u: &mut [f32]) {
    let (a, cols, xi) = (M + 2, p.c, p.points());
    let mut g = [[ZERO; 3]; 3];
    let mut col = [ZERO; 3];
    let mut tmp = [[ZERO; 3]; MAX_A];
    for (ri, ur) in u.chunks_exact_mut(xi * cols).enumerate() {
        let r = r0 + ri;
        for c0 in (0..cols).step_by(LANES) {
            let cnt = LANES.min(cols - c0);
            for l in 0..cnt {
                // Forward: filter (out = r, in = col). Transposed: filter (out = col, in = r),
                // rotated by 180°. The weights are (out, in, 3, 3) with `p.c` or `p.k` inputs.
                let f = if transposed { &w[((c0 + l) * p.k + r) * 9..][..9] } else { &w[(r * cols + c0 + l) * 9..][..9] };
                for (i, gi) in g.iter_mut().enumerate() {
                    for (j, gij) in gi.iter_mut().enumerate() {
                        gij[l] = if transposed { f[(2 - i) * 3 + (2 - j)] } else { f[i * 3 + j] };
                    }
                }
            }
            // G g Gᵀ: along the columns of g, then along the rows of the result.
            for j in 0..3 {
                for i in 0..3 {
                    col[i] = g[i][j];
                }
                let t = weight_1d::<M>(&col);
                for i in 0..a {
                    tmp[i][j] = t[i];
                }
            }
            for i in 0..a {
                let t = weight_1d::<M>(&tmp[i]);
                for j in 0..a {
                    ur[(i * a + j) * cols + c0..][..cnt].copy_from_slice(&t[j][..cnt]);
                }
            }
        }
    }
}

/// Bᵀ d of one line of a patch (m + 2 lanes).
#[inline(always)]
fn input_1d<const M: usize>(d: &[Lane; MAX_A]) -> [Lane; MAX_A] {
    let mut r = [ZERO; MAX_A];
    for l in 0..LANES {
        if M == 2 {
            let (d0, d1, d2, d3) = (d[0][l], d[1][l], d[2][l], d[3][l]);
            r[0][l] = d0 - d2;
            r[1][l] = d1 + d2;
            r[2][l] = d2 - d1;
            r[3][l] = d1 - d3;
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

/// G g of one line of a filter (3 lanes to m + 2).
#[inline(always)]
fn weight_1d<const M: usize>(g: &[Lane; 3]) -> [Lane; MAX_A] {
    let mut r = [ZERO; MAX_A];
    for l in 0..LANES {
        let (g0, g1, g2) = (g[0][l], g[1][l], g[2][l]);
        if M == 2 {
            r[0][l] = g0;
            r[1][l] = 0.5 * (g0 + g1 + g2);
            r[2][l] = 0.5 * (g0 - g1 + g2);
            r[3][l] = g2;
        } else {
            r[0][l] = g0 / 4.0;
            r[1][l] = -(g0 + g1 + g2) / 6.0;
            r[2][l] = -(g0 - g1 + g2) / 6.0;
            r[3][l] = g0 / 24.0 + g1 / 12.0 + g2 / 6.0;
            r[4][l] = g0 / 24.0 - g1 / 12.0 + g2 / 6.0;
            r[5][l] = g2;
        }
    }
    r
}

/// Aᵀ m of one line of a product tile (m + 2 lanes to m).
#[inline(always)]
fn output_1d<const M: usize>(m: &[Lane; MAX_A]) -> [Lane; 4] {
    let mut r = [ZERO; 4];
    for l in 0..LANES {
        if M == 2 {
            let (m0, m1, m2, m3) = (m[0][l], m[1][l], m[2][l], m[3][l]);
            r[0][l] = m0 + m1 + m2;
            r[1][l] = m1 - m2 - m3;
        } else {
            let (m0, m1, m2, m3, m4, m5) = (m[0][l], m[1][l], m[2][l], m[3][l], m[4][l], m[5][l]);
            let (s12, d12, s34, d34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
            r[0][l] = m0 + s12 + s34;
            r[1][l] = d12 + 2.0 * d34;
            r[2][l] = s12 + 4.0 * s34;
            r[3][l] = d12 + 8.0 * d34 + m5;
        }
    }
    r
}

/// A dy of one line of an output-gradient tile (m lanes to m + 2).
#[inline(always)]
fn dy_1d<const M: usize>(d: &[Lane; MAX_A]) -> [Lane; MAX_A] {
    let mut r = [ZERO; MAX_A];
    for l in 0..LANES {
        if M == 2 {
            let (d0, d1) = (d[0][l], d[1][l]);
            r[0][l] = d0;
            r[1][l] = d0 + d1;
            r[2][l] = d0 - d1;
            r[3][l] = -d1;
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

/// Gᵀ m of one line of a weight-gradient product (m + 2 lanes to 3).
#[inline(always)]
fn weight_grad_1d<const M: usize>(m: &[Lane; MAX_A]) -> [Lane; 3] {
    let mut r = [ZERO; 3];
    for l in 0..LANES {
        if M == 2 {
            let (m0, m1, m2, m3) = (m[0][l], m[1][l], m[2][l], m[3][l]);
            r[0][l] = m0 + 0.5 * (m1 + m2);
            r[1][l] = 0.5 * (m1 - m2);
            r[2][l] = 0.5 * (m1 + m2) + m3;
        } else {
            let (m0, m1, m2, m3, m4, m5) = (m[0][l], m[1][l], m[2][l], m[3][l], m[4][l], m[5][l]);
            let (s12, d12, s34, d34) = (m1 + m2, m2 - m1, m3 + m4, m3 - m4);
            r[0][l] = m0 / 4.0 - s12 / 6.0 + s34 / 24.0;
            r[1][l] = d12 / 6.0 + d34 / 12.0;
            r[2][l] = -s12 / 6.0 + s34 / 6.0 + m5;
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct 3×3 convolution in f64: (n, c, h, w) with (k, c, 3, 3), padding (ph, pw).
    fn reference(x: &[f32], w: &[f32], n: usize, c: usize, k: usize, h: usize, wd: usize, ph: usize, pw: usize) -> Vec<f64> {
        let (oh, ow) = (h + 2 * ph - 2, wd + 2 * pw - 2);
        let mut y = vec![0.0f64; n * k * oh * ow];
        for i in 0..n {
            for o in 0..k {
                for r in 0..oh {
                    for s in 0..ow {
                        let mut acc = 0.0f64;
                        for ci in 0..c {
                            for a in 0..3 {
                                for b in 0..3 {
                                    let (yy, xx) = ((r + a) as isize - ph as isize, (s + b) as isize - pw as isize);
                                    if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < wd {
                                        acc += x[((i * c + ci) * h + yy as usize) * wd + xx as usize] as f64 * w[((o * c + ci) * 3 + a) * 3 + b] as f64;
                                    }
                                }
                            }
                        }
                        y[((i * k + o) * oh + r) * ow + s] = acc;
                    }
                }
            }
        }
        y
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
        for tile in [Tile::F2, Tile::F4] {
            for &(n, c, k, h, w, ph, pw) in &cases {
                let x = data(n * c * h * w, 1);
                let wt = data(k * c * 9, 2);
                let b: Vec<f32> = (0..k).map(|i| i as f32 * 0.1).collect();
                let mut win = Winograd::new(tile, c, k, h, w, ph, pw).unwrap();
                let (oh, ow) = (win.plan().oh, win.plan().ow);
                for threads in [1, 3] {
                    let mut y = vec![f32::NAN; n * k * oh * ow];
                    win.forward(threads, &wt, Some(&b), &x, &mut y);
                    let mut want = reference(&x, &wt, n, c, k, h, w, ph, pw);
                    for (i, v) in want.iter_mut().enumerate() {
                        *v += b[(i / (oh * ow)) % k] as f64;
                    }
                    let e = rel_err(&y, &want);
                    assert!(e < 1e-5, "{tile:?} forward {n} {c}->{k} {h}x{w} pad {ph},{pw}, {threads} threads: {e}");
                    // Backward data: the input gradient of sum(y * dy) is the transposed convolution.
                    let dy = data(n * k * oh * ow, 3);
                    let mut dx = vec![f32::NAN; n * c * h * w];
                    win.backward_data(threads, &wt, &dy, &mut dx);
                    let mut want = vec![0.0f64; dx.len()];
                    for i in 0..n {
                        for o in 0..k {
                            for r in 0..oh {
                                for s in 0..ow {
                                    let g = dy[((i * k + o) * oh + r) * ow + s] as f64;
                                    for ci in 0..c {
                                        for a in 0..3 {
                                            for bb in 0..3 {
                                                let (yy, xx) = ((r + a) as isize - ph as isize, (s + bb) as isize - pw as isize);
                                                if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < w {
                                                    want[((i * c + ci) * h + yy as usize) * w + xx as usize] += g * wt[((o * c + ci) * 3 + a) * 3 + bb] as f64;
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    let e = rel_err(&dx, &want);
                    assert!(e < 1e-5, "{tile:?} backward data {n} {c}->{k} {h}x{w} pad {ph},{pw}, {threads} threads: {e}");
                    // Weight gradient, accumulated onto 1.0.
                    let mut dw = vec![1.0f32; k * c * 9];
                    win.backward_weights(threads, &x, &dy, &mut dw);
                    let mut want = vec![1.0f64; dw.len()];
                    for i in 0..n {
                        for o in 0..k {
                            for r in 0..oh {
                                for s in 0..ow {
                                    let g = dy[((i * k + o) * oh + r) * ow + s] as f64;
                                    for ci in 0..c {
                                        for a in 0..3 {
                                            for bb in 0..3 {
                                                let (yy, xx) = ((r + a) as isize - ph as isize, (s + bb) as isize - pw as isize);
                                                if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < w {
                                                    want[((o * c + ci) * 3 + a) * 3 + bb] += g * x[((i * c + ci) * h + yy as usize) * w + xx as usize] as f64;
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    let e = rel_err(&dw, &want);
                    assert!(e < 1e-5, "{tile:?} weight gradient {n} {c}->{k} {h}x{w} pad {ph},{pw}, {threads} threads: {e}");
                }
            }
        }
    }

    #[test]
    fn padding_above_two_or_a_map_below_the_kernel_is_refused() {
        assert!(Plan::new(Tile::F4, 1, 1, 5, 5, 3, 1).is_none());
        assert!(Plan::new(Tile::F2, 1, 1, 2, 2, 0, 0).is_none());
        assert_eq!(Plan::new(Tile::F2, 1, 1, 2, 2, 1, 1).map(|p| (p.oh, p.ow)), Some((2, 2)));
    }

    /// The rounding the docs state, on a 64→64 layer of 8×8 maps with weights of Kaiming
    /// scale: against an f64 sum, the largest error relative to the largest output is below
    /// 1e-6 for F(2×2) and 1e-5 for F(4×4) (measured 3.3e-7 and 6.9e-6; a sequential f32 direct
    /// sum: 9.2e-7), and the RMS error of F(4×4) is within 8× that of the f32 direct sum
    /// (measured 5.9e-7 against 1.0e-7; F(2×2) 6.6e-8).
    #[test]
    fn rounding_stays_within_the_stated_bounds() {
        let (n, c, k, h, w) = (4, 64, 64, 8, 8);
        let x = data(n * c * h * w, 5);
        let wt: Vec<f32> = data(k * c * 9, 6).iter().map(|v| v * 0.04).collect();
        let want = reference(&x, &wt, n, c, k, h, w, 1, 1);
        let mut direct = vec![0.0f32; want.len()];
        for i in 0..n {
            for o in 0..k {
                for r in 0..h {
                    for s in 0..w {
                        let mut acc = 0.0f32;
                        for ci in 0..c {
                            for a in 0..3 {
                                for b in 0..3 {
                                    let (yy, xx) = (r as isize + a as isize - 1, s as isize + b as isize - 1);
                                    if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < w {
                                        acc += x[((i * c + ci) * h + yy as usize) * w + xx as usize] * wt[((o * c + ci) * 3 + a) * 3 + b];
                                    }
                                }
                            }
                        }
                        direct[((i * k + o) * h + r) * w + s] = acc;
                    }
                }
            }
        }
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let rms = |y: &[f32]| (y.iter().zip(&want).map(|(&g, &w)| (g as f64 - w).powi(2)).sum::<f64>() / want.len() as f64).sqrt() / scale;
        let run = |tile| {
            let mut win = Winograd::new(tile, c, k, h, w, 1, 1).unwrap();
            let mut y = vec![0.0; want.len()];
            win.forward(1, &wt, None, &x, &mut y);
            y
        };
        let (f2, f4) = (run(Tile::F2), run(Tile::F4));
        eprintln!("max / rms error: direct {:e} / {:e}, F2 {:e} / {:e}, F4 {:e} / {:e}", rel_err(&direct, &want), rms(&direct), rel_err(&f2, &want), rms(&f2), rel_err(&f4, &want), rms(&f4));
        assert!(rel_err(&f2, &want) < 1e-6);
        assert!(rel_err(&f4, &want) < 1e-5);
        assert!(rms(&f4) < 8.0 * rms(&direct));
    }
}
