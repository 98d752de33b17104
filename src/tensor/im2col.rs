//! im2col / col2im for one sample in NCHW (Caffe's `im2col_cpu`, with dilation).
//!
//! `im2col` lays out every receptive field of a (C, H, W) image as a column of a
//! (C·kh·kw, OH·OW) matrix, so a convolution becomes one GEMM with the (O, C·kh·kw) weight
//! matrix. Padding cells read as zero. `col2im` is its adjoint: it scatters (ACCUMULATES) a column
//! matrix back into an image, which turns the GEMM's column gradient into the input gradient.

/// Geometry of one convolution window pass over one sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    /// Input channels covered (one group's channels).
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Vertical stride.
    pub sh: usize,
    /// Horizontal stride.
    pub sw: usize,
    /// Vertical zero padding.
    pub ph: usize,
    /// Horizontal zero padding.
    pub pw: usize,
    /// Vertical dilation.
    pub dh: usize,
    /// Horizontal dilation.
    pub dw: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl ConvShape {
    /// Rows of the column matrix: c·kh·kw.
    pub fn rows(&self) -> usize {
        self.c * self.kh * self.kw
    }
    /// Columns of the column matrix: oh·ow.
    pub fn cols(&self) -> usize {
        self.oh * self.ow
    }

    /// For kernel row `ki`/column `kj`: the valid output range along one axis, i.e. the outputs o
    /// with 0 ≤ o·s + k·d − p < input.
    fn valid(out: usize, input: usize, s: usize, k: usize, d: usize, p: usize) -> (usize, usize) {
        let off = (k * d) as isize - p as isize;
        // smallest o with o·s + off ≥ 0
        let lo = if off >= 0 { 0 } else { ((-off) as usize).div_ceil(s) };
        // largest o with o·s + off ≤ input − 1, plus one
        let hi_num = input as isize - 1 - off;
        let hi = if hi_num < 0 { 0 } else { (hi_num as usize / s + 1).min(out) };
        (lo.min(hi), hi)
    }
}

/// Fills `cols` (c·kh·kw × oh·ow, row-major with row stride `ld` ≥ oh·ow: several samples' columns
/// side by side) from the image `x` (c × h × w).
pub fn im2col(cols: &mut [f32], ld: usize, x: &[f32], g: &ConvShape) {
    let p = g.cols();
    for c in 0..g.c {
        let img = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ki in 0..g.kh {
            let (oh_lo, oh_hi) = ConvShape::valid(g.oh, g.h, g.sh, ki, g.dh, g.ph);
            for kj in 0..g.kw {
                let (ow_lo, ow_hi) = ConvShape::valid(g.ow, g.w, g.sw, kj, g.dw, g.pw);
                let row = &mut cols[((c * g.kh + ki) * g.kw + kj) * ld..][..p];
                for oh in 0..g.oh {
                    let out = &mut row[oh * g.ow..(oh + 1) * g.ow];
                    if oh < oh_lo || oh >= oh_hi || ow_lo >= ow_hi {
                        out.fill(0.0);
                        continue;
                    }
                    let ih = oh * g.sh + ki * g.dh - g.ph;
                    let src = &img[ih * g.w..(ih + 1) * g.w];
                    out[..ow_lo].fill(0.0);
                    out[ow_hi..].fill(0.0);
                    let iw0 = ow_lo * g.sw + kj * g.dw - g.pw;
                    if g.sw == 1 {
                        out[ow_lo..ow_hi].copy_from_slice(&src[iw0..iw0 + (ow_hi - ow_lo)]);
                    } else {
                        for (k, o) in out[ow_lo..ow_hi].iter_mut().enumerate() {
                            *o = src[iw0 + k * g.sw];
                        }
                    }
                }
            }
        }
    }
}

/// Accumulates the column matrix `cols` (row stride `ld`) into the image gradient `dx` (c × h × w):
/// the adjoint of `im2col`.
pub fn col2im(dx: &mut [f32], cols: &[f32], ld: usize, g: &ConvShape) {
    let p = g.cols();
    for c in 0..g.c {
        let img = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ki in 0..g.kh {
            let (oh_lo, oh_hi) = ConvShape::valid(g.oh, g.h, g.sh, ki, g.dh, g.ph);
            for kj in 0..g.kw {
                let (ow_lo, ow_hi) = ConvShape::valid(g.ow, g.w, g.sw, kj, g.dw, g.pw);
                if ow_lo >= ow_hi {
                    continue;
                }
                let row = &cols[((c * g.kh + ki) * g.kw + kj) * ld..][..p];
                for oh in oh_lo..oh_hi {
                    let ih = oh * g.sh + ki * g.dh - g.ph;
                    let dst = &mut img[ih * g.w..(ih + 1) * g.w];
                    let src = &row[oh * g.ow + ow_lo..oh * g.ow + ow_hi];
                    let iw0 = ow_lo * g.sw + kj * g.dw - g.pw;
                    if g.sw == 1 {
                        for (d, &s) in dst[iw0..iw0 + src.len()].iter_mut().zip(src) {
                            *d += s;
                        }
                    } else {
                        for (k, &s) in src.iter().enumerate() {
                            dst[iw0 + k * g.sw] += s;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::rng::Rng;

    fn shape(
        c: usize,
        h: usize,
        w: usize,
        k: (usize, usize),
        s: (usize, usize),
        p: (usize, usize),
        d: (usize, usize),
    ) -> ConvShape {
        // PyTorch's output size (floor mode); the shapes below all fit.
        let out = |i: usize, k: usize, s: usize, p: usize, d: usize| (i + 2 * p - d * (k - 1) - 1) / s + 1;
        let (oh, ow) = (out(h, k.0, s.0, p.0, d.0), out(w, k.1, s.1, p.1, d.1));
        ConvShape { c, h, w, kh: k.0, kw: k.1, sh: s.0, sw: s.1, ph: p.0, pw: p.1, dh: d.0, dw: d.1, oh, ow }
    }

    fn naive(x: &[f32], g: &ConvShape) -> Vec<f32> {
        let mut out = vec![0.0; g.rows() * g.cols()];
        for c in 0..g.c {
            for ki in 0..g.kh {
                for kj in 0..g.kw {
                    for oh in 0..g.oh {
                        for ow in 0..g.ow {
                            let ih = (oh * g.sh + ki * g.dh) as isize - g.ph as isize;
                            let iw = (ow * g.sw + kj * g.dw) as isize - g.pw as isize;
                            let v = if ih >= 0 && iw >= 0 && (ih as usize) < g.h && (iw as usize) < g.w {
                                x[(c * g.h + ih as usize) * g.w + iw as usize]
                            } else {
                                0.0
                            };
                            out[((c * g.kh + ki) * g.kw + kj) * g.cols() + oh * g.ow + ow] = v;
                        }
                    }
                }
            }
        }
        out
    }

    fn cases() -> Vec<ConvShape> {
        vec![
            shape(1, 5, 5, (3, 3), (1, 1), (0, 0), (1, 1)),
            shape(2, 7, 5, (3, 2), (2, 1), (1, 2), (1, 1)),
            shape(3, 6, 9, (2, 3), (1, 3), (2, 1), (2, 2)),
            shape(2, 4, 4, (5, 5), (1, 1), (2, 2), (1, 1)),
            shape(1, 3, 8, (1, 1), (2, 2), (0, 0), (1, 1)),
            shape(2, 9, 7, (3, 3), (3, 2), (3, 3), (1, 2)),
        ]
    }

    #[test]
    fn im2col_matches_direct_indexing() {
        let mut rng = Rng::new(1);
        for g in cases() {
            let x: Vec<f32> = (0..g.c * g.h * g.w).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let mut cols = vec![f32::NAN; g.rows() * g.cols()];
            im2col(&mut cols, g.cols(), &x, &g);
            assert_eq!(cols, naive(&x, &g), "{g:?}");
        }
    }

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        let mut rng = Rng::new(2);
        for g in cases() {
            let x: Vec<f32> = (0..g.c * g.h * g.w).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let c: Vec<f32> = (0..g.rows() * g.cols()).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let mut cols = vec![0.0; c.len()];
            im2col(&mut cols, g.cols(), &x, &g);
            let lhs: f64 = cols.iter().zip(&c).map(|(a, b)| *a as f64 * *b as f64).sum();
            let mut dx = vec![0.0; x.len()];
            col2im(&mut dx, &c, g.cols(), &g);
            let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| *a as f64 * *b as f64).sum();
            assert!((lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0), "{g:?}: {lhs} vs {rhs}");
        }
    }
}
