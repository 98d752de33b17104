//! The transforms of Winograd convolution on 16 tiles (or filters) at once: the 1-D transforms
//! Bᵀ, G, Aᵀ and their adjoints A, Gᵀ of each tile size, and `two_d`, which applies one along
//! the columns and then the rows of a patch.

/// Tiles (or filters) transformed together: one AVX-512 vector, two AVX2 vectors.
pub(super) const LANES: usize = 16;
pub(super) type Lane = [f32; LANES];
pub(super) const ZERO: Lane = [0.0; LANES];
/// The largest transform size α = m + r − 1 (7: F(3×3, 5×5)); every 1-D transform takes and
/// returns this many lanes, of which it reads and writes its own sizes.
pub(super) const MAX_A: usize = 7;
pub(super) type Patch = [[Lane; MAX_A]; MAX_A];

/// The 2-D transform `F d Fᵀ` of the `n_in`×`n_in` patch `d` by the 1-D transform `f` (n_in
/// lanes to n_out): along each column, then along the rows of the result.
#[inline(always)]
pub(super) fn two_d(d: &Patch, n_in: usize, n_out: usize, f: fn(&[Lane; MAX_A]) -> [Lane; MAX_A]) -> Patch {
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

// The 1-D transforms. Bᵀ depends on the points only: 0, ±1, ∞ for α = 4 (F(2×2, 3×3)),
// 0, ±1, ±2, ∞ for α = 6 (F(4×4, 3×3) and F(2×2, 5×5)), and 0, ±1, ±2, 1/2, ∞ for α = 7
// (F(3×3, 5×5)); Aᵀ has rows p^j (j < m) and G rows p^j / Π(p − q) (j < r), the last point ∞
// taking the top coefficient, and Bᵀ solves Aᵀ[(G g) ⊙ (Bᵀ d)] = g ⋆ d (Lavin & Gray; the
// `wincnn` construction; the α = 7 terms below were printed by `scripts/winograd_transforms.py
// 3 5 0,1,-1,2,-2,1/2`, an exact rational solve of that system in sympy, and the tests check
// every transform against an f64 direct sum).
// Written out term by term: zeros cost nothing and the compiler vectorises each lane loop.

/// Bᵀ d of one line of a patch (α lanes).
#[inline(always)]
pub(super) fn input_1d<const M: usize, const R: usize>(d: &[Lane; MAX_A]) -> [Lane; MAX_A] {
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
pub(super) fn weight_1d<const M: usize, const R: usize>(g: &[Lane; MAX_A]) -> [Lane; MAX_A] {
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
pub(super) fn output_1d<const M: usize, const R: usize>(m: &[Lane; MAX_A]) -> [Lane; MAX_A] {
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
pub(super) fn dy_1d<const M: usize, const R: usize>(d: &[Lane; MAX_A]) -> [Lane; MAX_A] {
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
pub(super) fn weight_grad_1d<const M: usize, const R: usize>(m: &[Lane; MAX_A]) -> [Lane; MAX_A] {
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
