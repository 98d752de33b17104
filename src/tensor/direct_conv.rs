//! Direct convolution of stride 1 and dilation 1 on padded planes, without a column matrix.
//!
//! Copy each input plane into a zero-padded plane of width `wp = w + 2·pw`. Output pixel
//! (r, c) then reads input `q + ki·wp + kj` at `q = r·wp + c`: over the flattened plane, the 2-D
//! convolution is a 1-D one, and every vector of consecutive `q` is one unaligned load per
//! (channel, ki, kj) — no edge cases, no im2col copy of kh·kw floats per input float. The lanes at
//! `c ≥ ow` compute values that are never read (the `2·pw` columns of padding per row: 6 % of a
//! 32-wide row, 20 % of an 8-wide one; `Flat::useful` says how much, and the layer chooses this
//! algorithm only where it is high).
//!
//! Three kernels, each register-blocked over output channels (broadcast weights) and vectors of q:
//! - forward: `yq[o, q] = b[o] + Σ_{c,ki,kj} w[o,c,ki,kj] · xp[c, q + ki·wp + kj]`;
//! - backward data is the same kernel on dy padded by (kh−1−ph, kw−1−pw) with the kernel
//!   rotated by 180° and its channel axes swapped (the transposed convolution of stride 1);
//! - backward weights: `dw[o,c,ki,kj] += Σ_q dyq[o, q] · xp[c, q + ki·wp + kj]`, where `dyq` is
//!   dy laid out like `yq` with zeros in the unused lanes; accumulated per (o, c, ki) in
//!   registers over a whole sub-batch, then reduced across lanes once.
//!
//! Summation order is fixed by the shapes alone (not by threads), so results are reproducible.

use super::simd::{Isa, Simd};

/// Vectors of q per forward tile (`NV`); planes are rounded to `NV · lanes` outputs.
const NV: usize = 2;

/// Geometry of one sample's stride-1 convolution over padded, flattened planes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flat {
    /// Input channels (of one group).
    pub cin: usize,
    /// Output channels (of one group).
    pub cout: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Input height (unpadded).
    pub h: usize,
    /// Input width (unpadded).
    pub w: usize,
    /// Vertical padding on each side.
    pub ph: usize,
    /// Horizontal padding on each side.
    pub pw: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// Padded width.
    pub wp: usize,
    /// Padded height.
    pub hp: usize,
    /// Outputs computed per output plane: oh·wp rounded up to a whole tile of vectors.
    pub q: usize,
}

impl Flat {
    /// The geometry for `isa`; `None` when the padding exceeds kernel − 1 (the transposed
    /// convolution of backward would need negative padding) or the output is empty.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        isa: Isa,
        cin: usize,
        cout: usize,
        kh: usize,
        kw: usize,
        h: usize,
        w: usize,
        ph: usize,
        pw: usize,
    ) -> Option<Flat> {
        if kh == 0 || kw == 0 || ph >= kh || pw >= kw || h + 2 * ph < kh || w + 2 * pw < kw {
            return None;
        }
        let (hp, wp) = (h + 2 * ph, w + 2 * pw);
        let (oh, ow) = (hp - kh + 1, wp - kw + 1);
        let tile = NV * isa.lanes();
        Some(Flat { cin, cout, kh, kw, h, w, ph, pw, oh, ow, wp, hp, q: (oh * wp).div_ceil(tile) * tile })
    }

    /// The geometry of backward data: dy (cout planes of oh × ow) padded by (kh−1−ph, kw−1−pw),
    /// convolved into cin planes of h × w.
    pub fn transposed(&self, isa: Isa) -> Option<Flat> {
        Flat::new(
            isa,
            self.cout,
            self.cin,
            self.kh,
            self.kw,
            self.oh,
            self.ow,
            self.kh - 1 - self.ph,
            self.kw - 1 - self.pw,
        )
    }

    /// Floats of one padded input plane.
    pub fn plane(&self) -> usize {
        self.hp * self.wp
    }

    /// Floats of one sample's padded input: every plane, plus the slack the last tile reads
    /// past the end of the last plane.
    pub fn in_len(&self) -> usize {
        let reach = self.q + (self.kh - 1) * self.wp + self.kw - 1;
        (self.cin - 1) * self.plane() + reach.max(self.plane())
    }

    /// Floats of one sample's output in q layout (cout planes of `q`).
    pub fn out_len(&self) -> usize {
        self.cout * self.q
    }

    /// Fraction of the computed lanes that are outputs.
    pub fn useful(&self) -> f64 {
        (self.oh * self.ow) as f64 / self.q as f64
    }

    /// Writes `x` (cin × h × w) into `xp` (`in_len` floats) as zero-padded planes.
    pub fn pad(&self, x: &[f32], xp: &mut [f32]) {
        let xp = &mut xp[..self.in_len()];
        xp.fill(0.0);
        for (c, img) in x.chunks_exact(self.h * self.w).take(self.cin).enumerate() {
            let plane = &mut xp[c * self.plane()..(c + 1) * self.plane()];
            for (r, row) in img.chunks_exact(self.w).enumerate() {
                let at = (r + self.ph) * self.wp + self.pw;
                plane[at..at + self.w].copy_from_slice(row);
            }
        }
    }

    /// Copies the outputs out of `yq` (q layout) into `y` (cout × oh × ow).
    pub fn extract(&self, yq: &[f32], y: &mut [f32]) {
        for (plane, out) in yq.chunks_exact(self.q).zip(y.chunks_exact_mut(self.oh * self.ow)) {
            for (r, row) in out.chunks_exact_mut(self.ow).enumerate() {
                row.copy_from_slice(&plane[r * self.wp..r * self.wp + self.ow]);
            }
        }
    }

    /// The adjoint of `extract`: lays `y` (cout × oh × ow) out in q layout, zeros elsewhere.
    pub fn spread(&self, y: &[f32], yq: &mut [f32]) {
        for (plane, out) in yq.chunks_exact_mut(self.q).zip(y.chunks_exact(self.oh * self.ow)) {
            plane.fill(0.0);
            for (r, row) in out.chunks_exact(self.ow).enumerate() {
                plane[r * self.wp..r * self.wp + self.ow].copy_from_slice(row);
            }
        }
    }
}

/// Output channels per forward block: the const `OB` of `forward_tiles` for `isa`.
fn block(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 8,
        Isa::Avx2 => 4,
    }
}

/// Packs `cout × cin × kk` weights, read through `get(o, c, k)`, the way the forward kernel reads
/// them: output channels in blocks (full blocks of `block(isa)`, then single channels), each
/// block's weights contiguous as `[c·kk + k][o − o0]`, so a block streams through L1 in order.
fn pack(isa: Isa, cout: usize, cin: usize, kk: usize, get: impl Fn(usize, usize, usize) -> f32, out: &mut [f32]) {
    let ob = block(isa);
    let full = cout / ob * ob;
    for o in 0..cout {
        let (o0, b) = if o < full { (o / ob * ob, ob) } else { (o, 1) };
        for c in 0..cin {
            for k in 0..kk {
                out[o0 * cin * kk + (c * kk + k) * b + (o - o0)] = get(o, c, k);
            }
        }
    }
}

/// Packs forward weights `w` (cout × cin × kh × kw) for `forward` on `isa`.
pub fn pack_forward(isa: Isa, f: &Flat, w: &[f32], out: &mut [f32]) {
    let kk = f.kh * f.kw;
    pack(isa, f.cout, f.cin, kk, |o, c, k| w[(o * f.cin + c) * kk + k], out);
}

/// Packs the weights of backward data for `forward` with the transposed geometry: output channel
/// c, input channel o, tap k reads `w[o, c, kh−1−ki, kw−1−kj]`.
pub fn pack_transposed(isa: Isa, f: &Flat, w: &[f32], out: &mut [f32]) {
    let kk = f.kh * f.kw;
    pack(isa, f.cin, f.cout, kk, |c, o, k| w[(o * f.cin + c) * kk + (kk - 1 - k)], out);
}

/// Forward over one sample: `yq` (cout planes of q) from the padded input `xp` and the packed
/// weights `wt` (`pack_forward`, or `pack_transposed` with the transposed geometry), plus `bias`.
pub fn forward(isa: Isa, f: &Flat, xp: &[f32], wt: &[f32], bias: Option<&[f32]>, yq: &mut [f32]) {
    assert!(xp.len() >= f.in_len() && wt.len() >= f.cin * f.kh * f.kw * f.cout && yq.len() >= f.out_len());
    assert!(bias.is_none_or(|b| b.len() >= f.cout));
    assert!(isa.supported(), "direct_conv: {isa:?} is not available on this CPU");
    // SAFETY: the CPU has the instruction set (checked above); the lengths asserted above bound
    // every index the kernels touch (see `Flat::in_len`).
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => forward_avx512(f, xp, wt, bias, yq),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => forward_avx2(f, xp, wt, bias, yq),
            #[allow(unreachable_patterns)]
            _ => unreachable!(),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn forward_avx512(f: &Flat, xp: &[f32], wt: &[f32], bias: Option<&[f32]>, yq: &mut [f32]) {
    forward_tiles::<super::simd::Avx512, 8>(f, xp, wt, bias, yq) // block(Avx512)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_avx2(f: &Flat, xp: &[f32], wt: &[f32], bias: Option<&[f32]>, yq: &mut [f32]) {
    forward_tiles::<super::simd::Avx2, 4>(f, xp, wt, bias, yq) // block(Avx2)
}

/// Output channels in blocks of `OB`, the rest one at a time.
#[inline(always)]
unsafe fn forward_tiles<S: Simd, const OB: usize>(
    f: &Flat,
    xp: &[f32],
    wt: &[f32],
    bias: Option<&[f32]>,
    yq: &mut [f32],
) {
    let full = f.cout / OB * OB;
    for o0 in (0..full).step_by(OB) {
        forward_block::<S, OB>(f, o0, xp, wt, bias, yq);
    }
    for o0 in full..f.cout {
        forward_block::<S, 1>(f, o0, xp, wt, bias, yq);
    }
}

/// Output channels `o0..o0 + OB`, every q: `OB × NV` accumulators per tile.
#[inline(always)]
unsafe fn forward_block<S: Simd, const OB: usize>(
    f: &Flat,
    o0: usize,
    xp: &[f32],
    wt: &[f32],
    bias: Option<&[f32]>,
    yq: &mut [f32],
) {
    let (kk, plane) = (f.kh * f.kw, f.plane());
    let (xp, wt, yq) = (xp.as_ptr(), wt.as_ptr(), yq.as_mut_ptr());
    for q0 in (0..f.q).step_by(NV * S::LANES) {
        let mut acc = [[S::zero(); NV]; OB];
        if let Some(b) = bias {
            for (o, row) in acc.iter_mut().enumerate() {
                *row = [S::splat(b[o0 + o]); NV];
            }
        }
        for c in 0..f.cin {
            let xc = xp.add(c * plane + q0);
            let wc = wt.add(o0 * f.cin * kk + c * kk * OB);
            for ki in 0..f.kh {
                for kj in 0..f.kw {
                    let xk = xc.add(ki * f.wp + kj);
                    let wk = wc.add((ki * f.kw + kj) * OB);
                    let mut xv = [S::zero(); NV];
                    for (v, x) in xv.iter_mut().enumerate() {
                        *x = S::load(xk.add(v * S::LANES));
                    }
                    for (o, row) in acc.iter_mut().enumerate() {
                        let b = S::splat(*wk.add(o));
                        for (a, &x) in row.iter_mut().zip(&xv) {
                            *a = S::fma(b, x, *a);
                        }
                    }
                }
            }
        }
        for (o, row) in acc.iter().enumerate() {
            for (v, &a) in row.iter().enumerate() {
                S::store(yq.add((o0 + o) * f.q + q0 + v * S::LANES), a);
            }
        }
    }
}

/// Kernel widths the weight-gradient kernel is built for (the others use im2col + GEMM).
pub fn weight_grad_supports(kw: usize) -> bool {
    matches!(kw, 1 | 3 | 5 | 7)
}

/// Weight gradient over `n` samples: `dw[o, c, ki, kj] += Σ_s Σ_q dyq[s][o, q] · xp[s][c, q + ki·wp + kj]`,
/// with sample `s`'s padded input at `xs[s·xstride..]` and its q-layout gradient at `dys[s·dstride..]`.
#[allow(clippy::too_many_arguments)]
pub fn weight_grad(
    isa: Isa,
    f: &Flat,
    n: usize,
    xs: &[f32],
    xstride: usize,
    dys: &[f32],
    dstride: usize,
    dw: &mut [f32],
) {
    assert!(weight_grad_supports(f.kw), "direct_conv: no weight-gradient kernel for kw = {}", f.kw);
    assert!(n == 0 || (xs.len() >= (n - 1) * xstride + f.in_len() && dys.len() >= (n - 1) * dstride + f.out_len()));
    assert!(dw.len() >= f.cout * f.cin * f.kh * f.kw);
    assert!(isa.supported(), "direct_conv: {isa:?} is not available on this CPU");
    // SAFETY: as in `forward`.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => weight_grad_avx512(f, n, xs, xstride, dys, dstride, dw),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => weight_grad_avx2(f, n, xs, xstride, dys, dstride, dw),
            #[allow(unreachable_patterns)]
            _ => unreachable!(),
        }
    }
}

/// Blocks of output channels per kernel width, so that `OB · KW` accumulators, KW inputs and one
/// gradient vector fit the register file (32 registers for AVX-512, 16 for AVX2).
macro_rules! weight_grad_for {
    ($name:ident, $feat:literal, $S:ty, $ob1:literal, $ob3:literal, $ob5:literal, $ob7:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feat)]
        unsafe fn $name(f: &Flat, n: usize, xs: &[f32], xstride: usize, dys: &[f32], dstride: usize, dw: &mut [f32]) {
            let a = (f, n, xs, xstride, dys, dstride, dw);
            match f.kw {
                1 => weight_grad_tiles::<$S, $ob1, 1>(a),
                3 => weight_grad_tiles::<$S, $ob3, 3>(a),
                5 => weight_grad_tiles::<$S, $ob5, 5>(a),
                7 => weight_grad_tiles::<$S, $ob7, 7>(a),
                _ => unreachable!(),
            }
        }
    };
}
weight_grad_for!(weight_grad_avx512, "avx512f", super::simd::Avx512, 16, 8, 4, 3);
weight_grad_for!(weight_grad_avx2, "avx2,fma", super::simd::Avx2, 8, 3, 2, 1);

type GradArgs<'a, 'b> = (&'a Flat, usize, &'a [f32], usize, &'a [f32], usize, &'b mut [f32]);

#[inline(always)]
unsafe fn weight_grad_tiles<S: Simd, const OB: usize, const KW: usize>(a: GradArgs) {
    let (f, n, xs, xstride, dys, dstride, dw) = a;
    let full = f.cout / OB * OB;
    for o0 in (0..full).step_by(OB) {
        weight_grad_block::<S, OB, KW>((f, n, xs, xstride, dys, dstride, &mut *dw), o0);
    }
    for o0 in full..f.cout {
        weight_grad_block::<S, 1, KW>((f, n, xs, xstride, dys, dstride, &mut *dw), o0);
    }
}

/// Output channels `o0..o0 + OB`, one kernel row at a time: `OB × KW` accumulators summed over
/// every sample and q, then across lanes.
#[inline(always)]
unsafe fn weight_grad_block<S: Simd, const OB: usize, const KW: usize>(a: GradArgs, o0: usize) {
    let (f, n, xs, xstride, dys, dstride, dw) = a;
    let (kk, plane) = (f.kh * KW, f.plane());
    for c in 0..f.cin {
        for ki in 0..f.kh {
            let mut acc = [[S::zero(); KW]; OB];
            for s in 0..n {
                let xr = xs.as_ptr().add(s * xstride + c * plane + ki * f.wp);
                let dr = dys.as_ptr().add(s * dstride + o0 * f.q);
                for q0 in (0..f.q).step_by(S::LANES) {
                    let mut xv = [S::zero(); KW];
                    for (kj, x) in xv.iter_mut().enumerate() {
                        *x = S::load(xr.add(q0 + kj));
                    }
                    for (o, row) in acc.iter_mut().enumerate() {
                        let d = S::load(dr.add(o * f.q + q0));
                        for (a, &x) in row.iter_mut().zip(&xv) {
                            *a = S::fma(d, x, *a);
                        }
                    }
                }
            }
            for (o, row) in acc.iter().enumerate() {
                let at = ((o0 + o) * f.cin + c) * kk + ki * KW;
                for (kj, &a) in row.iter().enumerate() {
                    dw[at + kj] += S::hsum(a);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::rng::Rng;

    fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut r = Rng::new(seed);
        (0..n).map(|_| r.uniform(-1.0, 1.0)).collect()
    }

    /// Plain 6-loop convolution in f64.
    fn reference(f: &Flat, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f64> {
        let mut y = vec![0.0f64; f.cout * f.oh * f.ow];
        for o in 0..f.cout {
            for r in 0..f.oh {
                for col in 0..f.ow {
                    let mut s = b[o] as f64;
                    for c in 0..f.cin {
                        for ki in 0..f.kh {
                            for kj in 0..f.kw {
                                let (ih, iw) = ((r + ki) as isize - f.ph as isize, (col + kj) as isize - f.pw as isize);
                                if ih >= 0 && iw >= 0 && (ih as usize) < f.h && (iw as usize) < f.w {
                                    s += w[((o * f.cin + c) * f.kh + ki) * f.kw + kj] as f64
                                        * x[(c * f.h + ih as usize) * f.w + iw as usize] as f64;
                                }
                            }
                        }
                    }
                    y[(o * f.oh + r) * f.ow + col] = s;
                }
            }
        }
        y
    }

    #[test]
    fn forward_matches_the_six_loops_on_awkward_shapes() {
        // (cin, cout, kh, kw, h, w, ph, pw): channel counts that are not multiples of the blocks,
        // rectangular kernels, no padding, maps narrower than a vector.
        let shapes = [
            (3, 5, 3, 3, 7, 9, 1, 1),
            (1, 17, 5, 5, 12, 11, 2, 2),
            (4, 9, 1, 1, 5, 3, 0, 0),
            (2, 3, 3, 5, 6, 20, 0, 2),
            (16, 16, 3, 3, 8, 8, 1, 1),
        ];
        for isa in Isa::available() {
            for &(cin, cout, kh, kw, h, w, ph, pw) in &shapes {
                let f = Flat::new(isa, cin, cout, kh, kw, h, w, ph, pw).unwrap();
                let (x, wt, b) = (rand(cin * h * w, 1), rand(cout * cin * kh * kw, 2), rand(cout, 3));
                let mut xp = vec![f32::NAN; f.in_len()];
                f.pad(&x, &mut xp);
                let mut packed = vec![0.0; wt.len()];
                pack_forward(isa, &f, &wt, &mut packed);
                let mut yq = vec![0.0; f.out_len()];
                forward(isa, &f, &xp, &packed, Some(&b), &mut yq);
                let mut y = vec![0.0; cout * f.oh * f.ow];
                f.extract(&yq, &mut y);
                for (i, (&got, &want)) in y.iter().zip(&reference(&f, &x, &wt, &b)).enumerate() {
                    assert!(
                        (got as f64 - want).abs() < 1e-4 * (1.0 + want.abs()),
                        "{isa:?} {f:?} y[{i}] = {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn transposed_forward_and_weight_grad_are_the_adjoints() {
        // <dy, conv(x, w)> = <conv_t(dy, w), x> = <dw(x, dy), w>: both backward kernels against
        // the forward one, in f64.
        for isa in Isa::available() {
            for &(cin, cout, k, h, w, p) in
                &[(3, 5, 3, 7, 9, 1), (2, 4, 5, 9, 8, 2), (5, 3, 1, 4, 6, 0), (3, 2, 7, 9, 9, 3), (2, 19, 3, 5, 5, 0)]
            {
                let f = Flat::new(isa, cin, cout, k, k, h, w, p, p).unwrap();
                let (x, wt, dy) = (rand(cin * h * w, 4), rand(cout * cin * k * k, 5), rand(cout * f.oh * f.ow, 6));
                let y = reference(&f, &x, &wt, &vec![0.0; cout]);
                let lhs: f64 = y.iter().zip(&dy).map(|(&a, &b)| a * b as f64).sum();
                // backward data
                let t = f.transposed(isa).unwrap();
                assert_eq!((t.oh, t.ow), (h, w));
                let mut dyp = vec![0.0; t.in_len()];
                t.pad(&dy, &mut dyp);
                let mut packed = vec![0.0; wt.len()];
                pack_transposed(isa, &f, &wt, &mut packed);
                let mut dxq = vec![0.0; t.out_len()];
                forward(isa, &t, &dyp, &packed, None, &mut dxq);
                let mut dx = vec![0.0; cin * h * w];
                t.extract(&dxq, &mut dx);
                let rhs: f64 = dx.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum();
                assert!((lhs - rhs).abs() < 1e-4 * (1.0 + lhs.abs()), "{isa:?} {f:?} data: {lhs} vs {rhs}");
                // backward weights, over two samples (the second is the first doubled)
                let mut xp = vec![0.0; 2 * f.in_len()];
                let (x0, x1) = xp.split_at_mut(f.in_len());
                f.pad(&x, x0);
                f.pad(&x.iter().map(|v| 2.0 * v).collect::<Vec<_>>(), x1);
                let mut dyq = vec![0.0; 2 * f.out_len()];
                f.spread(&dy, &mut dyq[..f.out_len()]);
                f.spread(&dy, &mut dyq[f.out_len()..]);
                let mut dw = vec![0.0; wt.len()];
                weight_grad(isa, &f, 2, &xp, f.in_len(), &dyq, f.out_len(), &mut dw);
                let rhs: f64 = dw.iter().zip(&wt).map(|(&a, &b)| a as f64 * b as f64).sum();
                assert!(
                    (3.0 * lhs - rhs).abs() < 1e-4 * (1.0 + lhs.abs()),
                    "{isa:?} {f:?} weights: {} vs {rhs}",
                    3.0 * lhs
                );
            }
        }
    }
}
