//! Direct 3×3 convolution vectorised over output channels, for small maps.
//!
//! `direct_conv` vectorises along the flattened padded plane, which wastes the lanes that fall on
//! padding: a third of them on 8×8 maps, half on 4×4. Here the vectors run over output channels
//! instead (channel counts that are multiples of the lane count: 16, 32, 64, … on AVX-512), so
//! no lane is wasted whatever the map size, and the pixels of a whole sub-batch of samples form
//! one long list to tile:
//! - forward: `yt[p, o] = Σ_{c,k} w[o, c, k] · xp[pix(p) + c·plane + off(k)]`: a tile of `P`
//!   pixels × `V` vectors of output channels in registers; per (c, tap) `V` weight loads and `P`
//!   broadcasts of input values;
//! - backward data (stride 1): the same kernel on dy padded by (2 − p), the weights rotated by
//!   180° with their channel axes swapped;
//! - weight gradient: `dw[o, c, k] += Σ_p dyt[p, o] · xp[pix(p) + c·plane + off(k)]`: the nine
//!   taps × `V` vectors of output channels accumulate in registers over every pixel of the
//!   sub-batch, so no lane sum is needed.
//!
//! `yt`/`dyt` are pixel-major (`[pixel][channel]`, rows of `padded(cout)` floats): `to_nchw` and
//! `from_nchw` convert. Channel counts are padded to a multiple of 16 with zero weights (the
//! lanes past the last channel compute values nobody reads), so every channel count works, and a
//! channel's result does not depend on how many channels there are: a tensor split's slices
//! compute bit for bit what the whole layer does. Padded inputs are `direct_conv::Flat` planes
//! (`Flat::pad`), one sample every `in_len` floats.

use super::direct_conv::Flat;
use super::simd::{Isa, Simd};

/// Pixels per forward tile.
const P: usize = 12;
/// Taps of a 3×3 kernel.
const TAPS: usize = 9;

/// True when the kernels apply: a 3×3 kernel (of stride 1: the caller's `Flat`).
pub fn supports(f: &Flat) -> bool {
    f.kh == 3 && f.kw == 3
}

/// A channel count rounded up to whole vectors of both instruction sets.
pub fn padded(channels: usize) -> usize {
    channels.next_multiple_of(16)
}

/// Offsets of every output pixel of `m` samples in their padded inputs (one sample every
/// `f.in_len()` floats): `s·in_len + r·wp + c`.
pub fn pixels(f: &Flat, m: usize, out: &mut Vec<usize>) {
    out.clear();
    for s in 0..m {
        for r in 0..f.oh {
            out.extend((0..f.ow).map(|c| s * f.in_len() + r * f.wp + c));
        }
    }
}

/// Packs `w` (cout × cin × 3 × 3) as `[(c·9 + k)·padded(cout) + o]` for `forward` (`cin · 9 ·
/// padded(cout)` floats, zeros past the last channel).
pub fn pack_forward(f: &Flat, w: &[f32], out: &mut [f32]) {
    let cop = padded(f.cout);
    out[..f.cin * TAPS * cop].fill(0.0);
    for o in 0..f.cout {
        for c in 0..f.cin {
            for k in 0..TAPS {
                out[(c * TAPS + k) * cop + o] = w[(o * f.cin + c) * TAPS + k];
            }
        }
    }
}

/// Packs the weights of backward data (`forward` with `f.transposed()`): `[(o·9 + k)·padded(cin)
/// + c] = w[o, c, 8 − k]` (`cout · 9 · padded(cin)` floats).
pub fn pack_transposed(f: &Flat, w: &[f32], out: &mut [f32]) {
    let cip = padded(f.cin);
    out[..f.cout * TAPS * cip].fill(0.0);
    for o in 0..f.cout {
        for c in 0..f.cin {
            for k in 0..TAPS {
                out[(o * TAPS + (TAPS - 1 - k)) * cip + c] = w[(o * f.cin + c) * TAPS + k];
            }
        }
    }
}

/// `y[s, o, :] = yt[s·ohw + :, o] + b[o]` for the `m` samples of `yt` (pixel-major).
pub fn to_nchw(f: &Flat, yt: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    let (hw, co) = (f.oh * f.ow, padded(f.cout));
    for (ys, ts) in y.chunks_exact_mut(f.cout * hw).zip(yt.chunks_exact(hw * co)) {
        for (o, plane) in ys.chunks_exact_mut(hw).enumerate() {
            let b = bias.map_or(0.0, |b| b[o]);
            for (p, v) in plane.iter_mut().enumerate() {
                *v = ts[p * co + o] + b;
            }
        }
    }
}

/// The transpose of `to_nchw` (no bias): `dyt[s·ohw + p, o] = dy[s, o, p]`, zeros past the last
/// channel.
pub fn from_nchw(f: &Flat, dy: &[f32], dyt: &mut [f32]) {
    let (hw, co) = (f.oh * f.ow, padded(f.cout));
    for (ds, ts) in dy.chunks_exact(f.cout * hw).zip(dyt.chunks_exact_mut(hw * co)) {
        if co > f.cout {
            ts.fill(0.0);
        }
        for (o, plane) in ds.chunks_exact(hw).enumerate() {
            for (p, &v) in plane.iter().enumerate() {
                ts[p * co + o] = v;
            }
        }
    }
}

fn check(isa: Isa, f: &Flat, xs: &[f32], pix: &[usize]) {
    assert!(supports(f), "direct_oc: {f:?} is not 3×3");
    assert!(isa.supported(), "direct_oc: {isa:?} is not available on this CPU");
    // Every read is at pix + c·plane + ki·wp + kj ≤ pix + (cin − 1)·plane + 2·wp + 2.
    let reach = (f.cin - 1) * f.plane() + 2 * f.wp + 2;
    assert!(pix.iter().all(|&p| p + reach < xs.len()), "direct_oc: input too short");
}

/// Forward over the pixels `pix` (from `pixels`) of padded inputs `xs`: `yt` (pixel-major, row
/// stride cout) from the weights packed by `pack_forward`.
pub fn forward(isa: Isa, f: &Flat, xs: &[f32], pix: &[usize], wt: &[f32], yt: &mut [f32]) {
    check(isa, f, xs, pix);
    assert!(wt.len() >= f.cin * TAPS * padded(f.cout) && yt.len() >= pix.len() * padded(f.cout));
    // SAFETY: the CPU has the instruction set; the asserts bound every index.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => forward_avx512(f, xs, pix, wt, yt),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => forward_avx2(f, xs, pix, wt, yt),
            #[allow(unreachable_patterns)]
            _ => unreachable!(),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn forward_avx512(f: &Flat, xs: &[f32], pix: &[usize], wt: &[f32], yt: &mut [f32]) {
    forward_all::<super::simd::Avx512, 2>(f, xs, pix, wt, yt)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_avx2(f: &Flat, xs: &[f32], pix: &[usize], wt: &[f32], yt: &mut [f32]) {
    // 16 registers: 6 pixels × 2 vectors; the tile of 12 runs as two halves of the same code.
    forward_all::<super::simd::Avx2, 1>(f, xs, pix, wt, yt)
}

/// Output channels in blocks of `V` vectors (then single vectors), pixels in tiles of `P` (then
/// single pixels).
#[inline(always)]
unsafe fn forward_all<S: Simd, const V: usize>(f: &Flat, xs: &[f32], pix: &[usize], wt: &[f32], yt: &mut [f32]) {
    let (block, cop) = (V * S::LANES, padded(f.cout));
    let full = cop / block * block;
    let tiles = pix.len() / P * P;
    for o0 in (0..full).step_by(block) {
        for p0 in (0..tiles).step_by(P) {
            forward_tile::<S, V, P>(f, xs, &pix[p0..p0 + P], wt, yt, o0, p0);
        }
        for p0 in tiles..pix.len() {
            forward_tile::<S, V, 1>(f, xs, &pix[p0..p0 + 1], wt, yt, o0, p0);
        }
    }
    for o0 in (full..cop).step_by(S::LANES) {
        for p0 in (0..tiles).step_by(P) {
            forward_tile::<S, 1, P>(f, xs, &pix[p0..p0 + P], wt, yt, o0, p0);
        }
        for p0 in tiles..pix.len() {
            forward_tile::<S, 1, 1>(f, xs, &pix[p0..p0 + 1], wt, yt, o0, p0);
        }
    }
}

#[inline(always)]
unsafe fn forward_tile<S: Simd, const V: usize, const T: usize>(
    f: &Flat,
    xs: &[f32],
    pix: &[usize],
    wt: &[f32],
    yt: &mut [f32],
    o0: usize,
    p0: usize,
) {
    let mut acc = [[S::zero(); V]; T];
    let mut base = [std::ptr::null::<f32>(); T];
    for (b, &p) in base.iter_mut().zip(pix) {
        *b = xs.as_ptr().add(p);
    }
    let (plane, cop) = (f.plane(), padded(f.cout));
    for c in 0..f.cin {
        for ki in 0..3 {
            for kj in 0..3 {
                let off = c * plane + ki * f.wp + kj;
                let wk = wt.as_ptr().add((c * TAPS + ki * 3 + kj) * cop + o0);
                let mut wv = [S::zero(); V];
                for (v, w) in wv.iter_mut().enumerate() {
                    *w = S::load(wk.add(v * S::LANES));
                }
                for (row, b) in acc.iter_mut().zip(&base) {
                    let x = S::splat(*b.add(off));
                    for (a, &w) in row.iter_mut().zip(&wv) {
                        *a = S::fma(x, w, *a);
                    }
                }
            }
        }
    }
    for (t, row) in acc.iter().enumerate() {
        for (v, &a) in row.iter().enumerate() {
            S::store(yt.as_mut_ptr().add((p0 + t) * cop + o0 + v * S::LANES), a);
        }
    }
}

/// Weight gradient over the pixels `pix` of padded inputs `xs` and the pixel-major gradient
/// `dyt`: ACCUMULATES into `dw` (cout × cin × 3 × 3).
pub fn weight_grad(isa: Isa, f: &Flat, xs: &[f32], pix: &[usize], dyt: &[f32], dw: &mut [f32]) {
    check(isa, f, xs, pix);
    assert!(dyt.len() >= pix.len() * padded(f.cout) && dw.len() >= f.cout * f.cin * TAPS);
    // SAFETY: as in `forward`.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => weight_grad_avx512(f, xs, pix, dyt, dw),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => weight_grad_avx2(f, xs, pix, dyt, dw),
            #[allow(unreachable_patterns)]
            _ => unreachable!(),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weight_grad_avx512(f: &Flat, xs: &[f32], pix: &[usize], dyt: &[f32], dw: &mut [f32]) {
    weight_grad_all::<super::simd::Avx512, 2>(f, xs, pix, dyt, dw)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn weight_grad_avx2(f: &Flat, xs: &[f32], pix: &[usize], dyt: &[f32], dw: &mut [f32]) {
    weight_grad_all::<super::simd::Avx2, 1>(f, xs, pix, dyt, dw)
}

#[inline(always)]
unsafe fn weight_grad_all<S: Simd, const V: usize>(f: &Flat, xs: &[f32], pix: &[usize], dyt: &[f32], dw: &mut [f32]) {
    let (block, cop) = (V * S::LANES, padded(f.cout));
    let full = cop / block * block;
    for c in 0..f.cin {
        for o0 in (0..full).step_by(block) {
            weight_grad_block::<S, V>(f, xs, pix, dyt, dw, c, o0);
        }
        for o0 in (full..cop).step_by(S::LANES) {
            weight_grad_block::<S, 1>(f, xs, pix, dyt, dw, c, o0);
        }
    }
}

/// Input channel `c`, output channels `o0..o0 + V·lanes`: nine taps × V vectors accumulated
/// over every pixel, then added into `dw`.
#[inline(always)]
unsafe fn weight_grad_block<S: Simd, const V: usize>(
    f: &Flat,
    xs: &[f32],
    pix: &[usize],
    dyt: &[f32],
    dw: &mut [f32],
    c: usize,
    o0: usize,
) {
    let mut acc = [[S::zero(); V]; TAPS];
    let taps: [usize; TAPS] = std::array::from_fn(|k| c * f.plane() + (k / 3) * f.wp + k % 3);
    for (p, &px) in pix.iter().enumerate() {
        let d = dyt.as_ptr().add(p * padded(f.cout) + o0);
        let mut dv = [S::zero(); V];
        for (v, x) in dv.iter_mut().enumerate() {
            *x = S::load(d.add(v * S::LANES));
        }
        let xb = xs.as_ptr().add(px);
        for (row, &t) in acc.iter_mut().zip(&taps) {
            let x = S::splat(*xb.add(t));
            for (a, &g) in row.iter_mut().zip(&dv) {
                *a = S::fma(x, g, *a);
            }
        }
    }
    let mut lanes = [0.0f32; 16];
    for (k, row) in acc.iter().enumerate() {
        for (v, &a) in row.iter().enumerate() {
            S::store(lanes.as_mut_ptr(), a);
            for (l, &val) in lanes[..S::LANES].iter().enumerate() {
                let o = o0 + v * S::LANES + l;
                if o < f.cout {
                    dw[(o * f.cin + c) * TAPS + k] += val;
                }
            }
        }
    }
}
