//! The Winograd transforms over whole tensors: input channels into V, output-gradient channels
//! into E, filters into U, weight-gradient rows out of M, M into output images. Each is one
//! function per tile shape (const `M`, `R`), entered through `isa_entry!` with this CPU's
//! instruction set enabled so that the 16-tile lane loops of `transforms` vectorise.

use super::transforms::{dy_1d, input_1d, output_1d, two_d, weight_1d, weight_grad_1d, Patch, LANES, MAX_A, ZERO};
use super::{Plan, Tile};
use crate::tensor::simd::Isa;

/// Runs `$imp::<M, R>` with the instruction set `isa` (this CPU's, from `Isa::best`) enabled, so
/// that the transforms' lane loops compile to its vectors; portable code without one.
macro_rules! isa_entry {
    ($name:ident, $imp:ident, ($($a:ident: $t:ty),*)) => {
        pub(super) fn $name(isa: Option<Isa>, p: &Plan, $($a: $t),*) {
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
fn output_images_impl<const M: usize, const R: usize>(
    p: &Plan,
    mm: &[f32],
    n: usize,
    img0: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
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
                let f = if transposed {
                    &w[((c0 + l) * p.k + r) * taps..][..taps]
                } else {
                    &w[(r * cols + c0 + l) * taps..][..taps]
                };
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
