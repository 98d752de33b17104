//! The direct path of `Conv2d` (`ConvAlgo::Direct`): one chunk of samples through the kernels of
//! `tensor::direct_conv`, group by group, with the layer's per-thread scratch.

use super::Scratch;
use crate::tensor::direct_conv::{self, Flat};
use crate::tensor::simd::Isa;

/// Floats of padded inputs and q-layout gradients gathered per weight-gradient call: the
/// kernel sums a whole sub-batch in registers; 256 KiB keeps the gradient rows near L1
/// (measured on ResNet-20: 1 MiB made the 32×32 layers 15 % slower, 4 MiB 30 %).
const WEIGHT_GRAD_FLOATS: usize = 1 << 16;

/// Samples per weight-gradient call.
fn sub_batch(f: &Flat) -> usize {
    (WEIGHT_GRAD_FLOATS / (f.in_len() + f.out_len())).max(1)
}

/// Sizes the scratch of `chunks` threads: `cols` holds padded inputs, `dcols` q-layout outputs or
/// gradients, `aux` the padded dy of backward data; `dw`/`db` the partials of several chunks.
pub(super) fn prepare(f: Flat, scratch: &mut Vec<Scratch>, chunks: usize, with_grads: bool, wlen: usize, blen: usize) {
    let nb = if with_grads { sub_batch(&f) } else { 1 };
    // Sized with AVX-512's rounding, the larger of the two.
    let t = Flat::new(Isa::Avx512, f.cin, f.cout, f.kh, f.kw, f.h, f.w, f.ph, f.pw).and_then(|w| w.transposed(Isa::Avx512)).map_or(0, |t| t.in_len() + t.out_len());
    scratch.resize_with(chunks.max(1), Scratch::default);
    for s in scratch.iter_mut() {
        s.cols.resize(nb * f.in_len(), 0.0);
        s.dcols.resize(nb * f.out_len(), 0.0);
        if with_grads {
            s.aux.resize(t, 0.0);
            if chunks > 1 {
                s.dw.resize(wlen, 0.0);
                s.db.resize(blen, 0.0);
            }
        }
    }
}

/// Packs the weights of every group for forward, and for backward data when `transposed` is given.
pub(super) fn pack(isa: Isa, f: &Flat, groups: usize, w: &[f32], packed: &mut Vec<f32>, transposed: Option<&mut Vec<f32>>) {
    let per = f.cout * f.cin * f.kh * f.kw;
    packed.resize(groups * per, 0.0);
    for (g, out) in packed.chunks_exact_mut(per).enumerate() {
        direct_conv::pack_forward(isa, f, &w[g * per..(g + 1) * per], out);
    }
    if let Some(t) = transposed {
        t.resize(groups * per, 0.0);
        for (g, out) in t.chunks_exact_mut(per).enumerate() {
            direct_conv::pack_transposed(isa, f, &w[g * per..(g + 1) * per], out);
        }
    }
}

/// Sums the weight- and bias-gradient partials of the chunks in chunk order (deterministic
/// whatever the scheduling).
pub(super) fn sum_partials(chunks: &[Scratch], dw: &mut [f32], db: Option<&mut [f32]>) {
    for s in chunks {
        dw.iter_mut().zip(&s.dw).for_each(|(d, v)| *d += v);
    }
    if let Some(db) = db {
        for s in chunks {
            db.iter_mut().zip(&s.db).for_each(|(d, v)| *d += v);
        }
    }
}

/// What a chunk needs besides its data: the kernels' instruction set, one group's geometry.
#[derive(Clone, Copy)]
pub(super) struct Direct {
    pub isa: Isa,
    pub f: Flat,
    pub groups: usize,
    pub bias: bool,
}

impl Direct {
    /// Forward of a chunk: `x` (n, C, H, W) → `y` (n, O, OH, OW).
    pub fn forward(&self, packed: &[f32], b: &[f32], x: &[f32], y: &mut [f32], xp: &mut [f32], yq: &mut [f32]) {
        let f = &self.f;
        let (xin, yout, wlen) = (f.cin * f.h * f.w, f.cout * f.oh * f.ow, f.cout * f.cin * f.kh * f.kw);
        for (xs, ys) in x.chunks_exact(xin * self.groups).zip(y.chunks_exact_mut(yout * self.groups)) {
            for g in 0..self.groups {
                f.pad(&xs[g * xin..(g + 1) * xin], xp);
                let bias = self.bias.then(|| &b[g * f.cout..(g + 1) * f.cout]);
                direct_conv::forward(self.isa, f, xp, &packed[g * wlen..(g + 1) * wlen], bias, yq);
                f.extract(yq, &mut ys[g * yout..(g + 1) * yout]);
            }
        }
    }

    /// Backward of a chunk: ACCUMULATES into `dw`/`db`, writes `dx` when given. `packed_t` holds
    /// the weights packed for backward data (`pack` with `transposed`).
    #[allow(clippy::too_many_arguments)]
    pub fn backward(&self, packed_t: &[f32], x: &[f32], dy: &[f32], dx: Option<&mut [f32]>, xs: &mut [f32], dys: &mut [f32], aux: &mut [f32], dw: &mut [f32], db: &mut [f32]) {
        let f = &self.f;
        let (xin, yout, wlen) = (f.cin * f.h * f.w, f.cout * f.oh * f.ow, f.cout * f.cin * f.kh * f.kw);
        let (xsample, ysample) = (xin * self.groups, yout * self.groups);
        let n = x.len() / xsample;
        let nb = sub_batch(f);
        for g in 0..self.groups {
            for s0 in (0..n).step_by(nb) {
                let m = nb.min(n - s0);
                for s in 0..m {
                    let at = (s0 + s) * xsample + g * xin;
                    f.pad(&x[at..at + xin], &mut xs[s * f.in_len()..(s + 1) * f.in_len()]);
                    let at = (s0 + s) * ysample + g * yout;
                    f.spread(&dy[at..at + yout], &mut dys[s * f.out_len()..(s + 1) * f.out_len()]);
                }
                direct_conv::weight_grad(self.isa, f, m, xs, f.in_len(), dys, f.out_len(), &mut dw[g * wlen..(g + 1) * wlen]);
            }
            if self.bias {
                for dys in dy.chunks_exact(ysample) {
                    let rows = dys[g * yout..(g + 1) * yout].chunks_exact(f.oh * f.ow);
                    for (d, row) in db[g * f.cout..(g + 1) * f.cout].iter_mut().zip(rows) {
                        *d += row.iter().sum::<f32>();
                    }
                }
            }
        }
        let Some(dx) = dx else { return };
        let t = f.transposed(self.isa).expect("Flat::new checked the padding");
        let (dyp, dxq) = aux.split_at_mut(t.in_len());
        for (dys, dxs) in dy.chunks_exact(ysample).zip(dx.chunks_exact_mut(xsample)) {
            for g in 0..self.groups {
                t.pad(&dys[g * yout..(g + 1) * yout], dyp);
                direct_conv::forward(self.isa, &t, dyp, &packed_t[g * wlen..(g + 1) * wlen], None, dxq);
                t.extract(dxq, &mut dxs[g * xin..(g + 1) * xin]);
            }
        }
    }
}
