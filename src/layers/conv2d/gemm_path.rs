//! The im2col + GEMM path of `Conv2d` (`ConvAlgo::Gemm`, `ConvAlgo::Gemm1x1`): one chunk of
//! samples, per group, with the layer's per-thread scratch; several samples share a GEMM where
//! one sample's map is too small to fill one.

use super::{Conv2dConfig, Scratch};
use crate::tensor::gemm::{sgemm, MatRef};
use crate::tensor::im2col::{col2im, im2col, ConvShape};

/// Columns a batched GEMM aims for: below it, a per-sample GEMM (VGG's 2×2 maps: 4 columns)
/// spends its time in packing and edges, so several samples' columns go side by side.
const GEMM_MIN_COLS: usize = 256;

/// Samples per GEMM on the im2col path: 1 where one sample's map is wide enough (and for
/// `Gemm1x1`, which reads the input in place), else enough for `GEMM_MIN_COLS` columns.
pub(super) fn samples_per_gemm(one_by_one: bool, p: usize) -> usize {
    if one_by_one || p >= GEMM_MIN_COLS {
        1
    } else {
        GEMM_MIN_COLS.div_ceil(p.max(1))
    }
}

/// Forward of a chunk of samples. `x`: (n, C, H, W), `y`: (n, O, OH, OW). `nb` samples share
/// one GEMM (`samples_per_gemm`): their columns side by side, the product scattered back.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_chunk(
    cfg: &Conv2dConfig,
    g: &ConvShape,
    direct: bool,
    nb: usize,
    w: &[f32],
    b: &[f32],
    x: &[f32],
    y: &mut [f32],
    s: &mut Scratch,
) {
    let (groups, og) = (cfg.groups, cfg.out_channels / cfg.groups);
    let (k, p) = (g.rows(), g.cols());
    let xin = g.c * g.h * g.w;
    let (xs_len, ys_len) = (xin * groups, cfg.out_channels * p);
    let n = x.len() / xs_len;
    for s0 in (0..n).step_by(nb) {
        let m = nb.min(n - s0);
        let ld = m * p;
        for gi in 0..groups {
            let wg = MatRef::n(&w[gi * og * k..], k);
            let bias = &b[if cfg.bias { gi * og..(gi + 1) * og } else { 0..0 }];
            if m == 1 {
                let xg = &x[s0 * xs_len + gi * xin..][..xin];
                let cols: &[f32] = if direct {
                    xg
                } else {
                    im2col(&mut s.cols, p, xg, g);
                    &s.cols
                };
                let yg = &mut y[s0 * ys_len + gi * og * p..][..og * p];
                for (row, &bv) in yg.chunks_exact_mut(p).zip(bias) {
                    row.fill(bv);
                }
                // y_g (og × p) = W_g (og × k) · cols (k × p)
                sgemm(og, p, k, wg, MatRef::n(cols, p), yg, p, cfg.bias, 1);
                continue;
            }
            for j in 0..m {
                im2col(&mut s.cols[j * p..], ld, &x[(s0 + j) * xs_len + gi * xin..][..xin], g);
            }
            // tmp (og × m·p) = W_g (og × k) · cols (k × m·p)
            sgemm(og, ld, k, wg, MatRef::n(&s.cols, ld), &mut s.aux, ld, false, 1);
            for j in 0..m {
                let yg = &mut y[(s0 + j) * ys_len + gi * og * p..][..og * p];
                for (o, row) in yg.chunks_exact_mut(p).enumerate() {
                    let src = &s.aux[o * ld + j * p..][..p];
                    let bv = bias.get(o).copied().unwrap_or(0.0);
                    row.iter_mut().zip(src).for_each(|(d, &v)| *d = v + bv);
                }
            }
        }
    }
}

/// Backward of a chunk: accumulates into `dw`/`db`, writes `dx` when given; `nb` as in forward.
#[allow(clippy::too_many_arguments)]
pub(super) fn backward_chunk(
    cfg: &Conv2dConfig,
    g: &ConvShape,
    direct: bool,
    nb: usize,
    w: &[f32],
    x: &[f32],
    dy: &[f32],
    mut dx: Option<&mut [f32]>,
    s: &mut Scratch,
    dw: &mut [f32],
    db: &mut [f32],
) {
    let (groups, og) = (cfg.groups, cfg.out_channels / cfg.groups);
    let (k, p) = (g.rows(), g.cols());
    let xin = g.c * g.h * g.w;
    let (xs_len, ys_len) = (xin * groups, cfg.out_channels * p);
    let n = x.len() / xs_len;
    if let Some(d) = dx.as_deref_mut() {
        d.fill(0.0);
    }
    for s0 in (0..n).step_by(nb) {
        let m = nb.min(n - s0);
        let ld = m * p;
        for gi in 0..groups {
            let xg = &x[s0 * xs_len + gi * xin..][..xin];
            let wg = &w[gi * og * k..(gi + 1) * og * k];
            // dy_g of the m samples as one (og × m·p) matrix: in place for one sample.
            let dyg: &[f32] = if m == 1 {
                &dy[s0 * ys_len + gi * og * p..][..og * p]
            } else {
                for j in 0..m {
                    let src = &dy[(s0 + j) * ys_len + gi * og * p..][..og * p];
                    for (o, row) in src.chunks_exact(p).enumerate() {
                        s.aux[o * ld + j * p..][..p].copy_from_slice(row);
                    }
                }
                &s.aux[..og * ld]
            };
            let cols: &[f32] = if direct {
                xg
            } else {
                for j in 0..m {
                    im2col(&mut s.cols[j * p..], ld, &x[(s0 + j) * xs_len + gi * xin..][..xin], g);
                }
                &s.cols
            };
            // dW_g (og × k) += dy_g (og × m·p) · colsᵀ (m·p × k)
            sgemm(
                og,
                k,
                ld,
                MatRef::n(dyg, ld),
                MatRef::t(cols, ld),
                &mut dw[gi * og * k..(gi + 1) * og * k],
                k,
                true,
                1,
            );
            if cfg.bias {
                for (dbv, row) in db[gi * og..(gi + 1) * og].iter_mut().zip(dyg.chunks_exact(ld)) {
                    *dbv += row.iter().sum::<f32>();
                }
            }
            if let Some(d) = dx.as_deref_mut() {
                if direct {
                    // dx_g (k × p) += W_gᵀ (k × og) · dy_g (og × p)
                    let dxg = &mut d[s0 * xs_len + gi * xin..][..xin];
                    sgemm(k, p, og, MatRef::t(wg, k), MatRef::n(dyg, p), dxg, p, true, 1);
                } else {
                    sgemm(k, ld, og, MatRef::t(wg, k), MatRef::n(dyg, ld), &mut s.dcols, ld, false, 1);
                    for j in 0..m {
                        col2im(&mut d[(s0 + j) * xs_len + gi * xin..][..xin], &s.dcols[j * p..], ld, g);
                    }
                }
            }
        }
    }
}
