//! Row-major single-precision GEMM over the `gemm` crate (pure Rust, AVX-512/AVX2 chosen at run
//! time, strided operands; docs/engine.md, "GEMM and convolution").
//!
//! `sgemm` computes `C = op(A) · op(B)` or `C += op(A) · op(B)` where `op(X)` is `X` or `Xᵀ`.
//! Transposition is expressed through strides, so no operand is ever copied. The thread count is
//! per call: 1 runs on the calling thread, more uses rayon's pool.

/// One operand of a GEMM: a row-major matrix in a slice with leading dimension `ld`,
/// optionally read transposed.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    /// Backing storage.
    pub data: &'a [f32],
    /// Distance between consecutive stored rows.
    pub ld: usize,
    /// Read the stored matrix transposed.
    pub trans: bool,
}

impl<'a> MatRef<'a> {
    /// A matrix stored row-major, read as is.
    pub fn n(data: &'a [f32], ld: usize) -> Self {
        MatRef { data, ld, trans: false }
    }
    /// A matrix stored row-major, read transposed.
    pub fn t(data: &'a [f32], ld: usize) -> Self {
        MatRef { data, ld, trans: true }
    }
    /// (row stride, column stride) of the logical matrix.
    fn strides(&self) -> (isize, isize) {
        if self.trans {
            (1, self.ld as isize)
        } else {
            (self.ld as isize, 1)
        }
    }
    /// Minimum slice length holding a logical `rows × cols` matrix.
    fn needed(&self, rows: usize, cols: usize) -> usize {
        if rows == 0 || cols == 0 {
            return 0;
        }
        let (sr, sc) = if self.trans { (cols, rows) } else { (rows, cols) };
        (sr - 1) * self.ld + sc
    }
}

/// `C(m×n) = op(A)(m×k) · op(B)(k×n)`, or `C += …` when `accumulate`. `C` is row-major with
/// leading dimension `ldc`. `threads` > 1 parallelises inside the product.
///
/// Panics if a slice is too short for the stated dimensions: that is a bug in the caller (layers
/// validate shapes before they reach here), and the check keeps the unsafe call sound.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(c.len() >= (m - 1) * ldc + n, "sgemm: C too short");
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                c[i * ldc..i * ldc + n].fill(0.0);
            }
        }
        return;
    }
    assert!(a.data.len() >= a.needed(m, k), "sgemm: A too short");
    assert!(b.data.len() >= b.needed(k, n), "sgemm: B too short");
    assert!(a.trans || a.ld >= k, "sgemm: lda < k");
    assert!(!a.trans || a.ld >= m, "sgemm: lda < m");
    assert!(b.trans || b.ld >= n, "sgemm: ldb < n");
    assert!(!b.trans || b.ld >= k, "sgemm: ldb < k");
    assert!(ldc >= n, "sgemm: ldc < n");
    let (a_rs, a_cs) = a.strides();
    let (b_rs, b_cs) = b.strides();
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the asserts above guarantee every index the kernel touches lies inside the slices;
    // `c` is borrowed mutably, so it cannot alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], ta: bool, b: &[f32], tb: bool) -> Vec<f32> {
        let mut c = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for p in 0..k {
                    let av = if ta { a[p * m + i] } else { a[i * k + p] };
                    let bv = if tb { b[j * k + p] } else { b[p * n + j] };
                    s += av as f64 * bv as f64;
                }
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    #[test]
    fn matches_naive_for_all_transpositions() {
        let mut rng = crate::tensor::rng::Rng::new(7);
        for &(m, n, k) in &[(1, 1, 1), (3, 5, 7), (17, 9, 33), (64, 65, 63)] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.uniform(-1.0, 1.0)).collect();
            for &(ta, tb) in &[(false, false), (true, false), (false, true), (true, true)] {
                let am = if ta { MatRef::t(&a, m) } else { MatRef::n(&a, k) };
                let bm = if tb { MatRef::t(&b, k) } else { MatRef::n(&b, n) };
                let want = naive(m, n, k, &a, ta, &b, tb);
                for threads in [1, 2] {
                    let mut c = vec![1.0f32; m * n];
                    sgemm(m, n, k, am, bm, &mut c, n, false, threads);
                    for (x, y) in c.iter().zip(&want) {
                        assert!((x - y).abs() < 1e-4, "{m}x{n}x{k} ta={ta} tb={tb}: {x} vs {y}");
                    }
                    sgemm(m, n, k, am, bm, &mut c, n, true, threads);
                    for (x, y) in c.iter().zip(&want) {
                        assert!((x - 2.0 * y).abs() < 2e-4, "accumulate: {x} vs {}", 2.0 * y);
                    }
                }
            }
        }
    }
}
