//! The direct paths of `Conv2d` (`ConvAlgo::Direct`, `ConvAlgo::DirectOc`): one chunk of samples
//! through the kernels of `tensor::direct_conv` (vectors along padded planes) or
//! `tensor::direct_oc` (vectors across output channels), with the layer's per-thread scratch.

use super::Scratch;
use crate::tensor::direct_conv::{self, Flat};
use crate::tensor::direct_oc;
use crate::tensor::simd::Isa;

/// Floats of padded inputs (twice) gathered per weight-gradient call of the plane kernels, at
/// most 4 samples: the kernel sums a whole sub-batch in registers; 256 KiB keeps the gradient
/// rows near L1 (measured on ResNet-20: 1 MiB made the 32×32 layers 15 % slower, 4 MiB 30 %).
const WEIGHT_GRAD_FLOATS: usize = 1 << 16;

/// Floats per sub-batch of the channel kernels: their weights stream once per sub-batch, so it
/// is as large as 16 MiB allows (VGG-11's 512-channel layers: 9 MiB of weights, 2×2 maps).
const OC_FLOATS: usize = 1 << 22;

/// What a chunk needs besides its data: the kernels and their instruction set, one group's
/// geometry.
#[derive(Clone, Copy)]
pub(super) struct Direct {
    pub isa: Isa,
    /// Vectorised across output channels (`direct_oc`) rather than along planes.
    pub oc: bool,
    pub f: Flat,
    pub groups: usize,
    pub bias: bool,
}

/// Samples per call of the kernels. A function of the input's size only: a tensor split's slices
/// (fewer output channels) then sum their weight gradients over the same sub-batches as the whole
/// layer, bit for bit.
fn sub_batch(f: &Flat, oc: bool) -> usize {
    if oc {
        (OC_FLOATS / (4 * f.in_len())).max(1)
    } else {
        (WEIGHT_GRAD_FLOATS / (2 * f.in_len())).clamp(1, 4)
    }
}

/// Sizes the scratch of `chunks` threads: `cols` holds padded inputs, `dcols` outputs or
/// gradients (q layout, or pixel-major), `aux` the padded dy of backward data (and for `oc` the
/// pixel-major dy); `dw`/`db` the partials of several chunks.
pub(super) fn prepare(
    d: &Direct,
    scratch: &mut Vec<Scratch>,
    chunks: usize,
    with_grads: bool,
    wlen: usize,
    blen: usize,
) {
    let (f, oc) = (d.f, d.oc);
    let t = f.transposed(d.isa).expect("Flat::new checked the padding");
    let nb = if oc || with_grads { sub_batch(&f, oc) } else { 1 };
    let (cols, dcols, aux) = if oc {
        let out = f.oh * f.ow * direct_oc::padded(f.cout);
        (nb * f.in_len().max(t.in_len()), nb * out.max(f.h * f.w * direct_oc::padded(f.cin)), nb * out)
    } else {
        (nb * f.in_len(), nb * f.out_len(), t.in_len() + t.out_len())
    };
    scratch.resize_with(chunks.max(1), Scratch::default);
    for s in scratch.iter_mut() {
        s.cols.resize(cols, 0.0);
        s.dcols.resize(dcols, 0.0);
        if with_grads {
            s.aux.resize(aux, 0.0);
            if chunks > 1 {
                s.dw.resize(wlen, 0.0);
                s.db.resize(blen, 0.0);
            }
        }
        if oc {
            s.pix.reserve(nb * f.oh.max(f.h) * f.ow.max(f.w));
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

impl Direct {
    /// Packs the weights of every group for forward.
    pub fn pack_forward(&self, w: &[f32], packed: &mut Vec<f32>) {
        let f = &self.f;
        if self.oc {
            // One group; channels padded to whole vectors.
            packed.resize(f.cin * 9 * direct_oc::padded(f.cout), 0.0);
            return direct_oc::pack_forward(f, w, packed);
        }
        let per = f.cout * f.cin * f.kh * f.kw;
        packed.resize(self.groups * per, 0.0);
        for (g, out) in packed.chunks_exact_mut(per).enumerate() {
            direct_conv::pack_forward(self.isa, f, &w[g * per..(g + 1) * per], out);
        }
    }

    /// Packs the weights of every group for backward data.
    pub fn pack_transposed(&self, w: &[f32], packed: &mut Vec<f32>) {
        let f = &self.f;
        if self.oc {
            packed.resize(f.cout * 9 * direct_oc::padded(f.cin), 0.0);
            return direct_oc::pack_transposed(f, w, packed);
        }
        let per = f.cout * f.cin * f.kh * f.kw;
        packed.resize(self.groups * per, 0.0);
        for (g, out) in packed.chunks_exact_mut(per).enumerate() {
            direct_conv::pack_transposed(self.isa, f, &w[g * per..(g + 1) * per], out);
        }
    }

    /// Forward of a chunk: `x` (n, C, H, W) → `y` (n, O, OH, OW).
    pub fn forward(&self, packed: &[f32], b: &[f32], x: &[f32], y: &mut [f32], s: &mut Scratch) {
        let f = &self.f;
        let (xin, yout, wlen) = (f.cin * f.h * f.w, f.cout * f.oh * f.ow, f.cout * f.cin * f.kh * f.kw);
        if self.oc {
            // One group (`set_algo` checks it).
            let nb = sub_batch(f, true);
            for (xs, ys) in x.chunks(nb * xin).zip(y.chunks_mut(nb * yout)) {
                let m = xs.len() / xin;
                for (j, xj) in xs.chunks_exact(xin).enumerate() {
                    f.pad(xj, &mut s.cols[j * f.in_len()..(j + 1) * f.in_len()]);
                }
                direct_oc::pixels(f, m, &mut s.pix);
                direct_oc::forward(self.isa, f, &s.cols, &s.pix, packed, &mut s.dcols);
                direct_oc::to_nchw(
                    f,
                    &s.dcols[..m * f.oh * f.ow * direct_oc::padded(f.cout)],
                    self.bias.then_some(b),
                    ys,
                );
            }
            return;
        }
        for (xs, ys) in x.chunks_exact(xin * self.groups).zip(y.chunks_exact_mut(yout * self.groups)) {
            for g in 0..self.groups {
                f.pad(&xs[g * xin..(g + 1) * xin], &mut s.cols);
                let bias = self.bias.then(|| &b[g * f.cout..(g + 1) * f.cout]);
                direct_conv::forward(self.isa, f, &s.cols, &packed[g * wlen..(g + 1) * wlen], bias, &mut s.dcols);
                f.extract(&s.dcols, &mut ys[g * yout..(g + 1) * yout]);
            }
        }
    }

    /// Backward of a chunk: ACCUMULATES into `dw`/`db`, writes `dx` when given. `packed_t` holds
    /// the weights packed for backward data (`pack_transposed`).
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        packed_t: &[f32],
        x: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        s: &mut Scratch,
        dw: &mut [f32],
        db: &mut [f32],
    ) {
        let f = &self.f;
        let yout = f.cout * f.oh * f.ow;
        let ysample = yout * self.groups;
        if self.bias {
            for dys in dy.chunks_exact(ysample) {
                for (d, row) in db.iter_mut().zip(dys.chunks_exact(f.oh * f.ow)) {
                    *d += row.iter().sum::<f32>();
                }
            }
        }
        if self.oc {
            self.backward_oc(packed_t, x, dy, dx, s, dw);
        } else {
            self.backward_planes(packed_t, x, dy, dx, s, dw);
        }
    }

    fn backward_planes(
        &self,
        packed_t: &[f32],
        x: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        s: &mut Scratch,
        dw: &mut [f32],
    ) {
        let f = &self.f;
        let (xin, yout, wlen) = (f.cin * f.h * f.w, f.cout * f.oh * f.ow, f.cout * f.cin * f.kh * f.kw);
        let (xsample, ysample) = (xin * self.groups, yout * self.groups);
        let n = x.len() / xsample;
        let nb = sub_batch(f, false);
        for g in 0..self.groups {
            for s0 in (0..n).step_by(nb) {
                let m = nb.min(n - s0);
                for j in 0..m {
                    let at = (s0 + j) * xsample + g * xin;
                    f.pad(&x[at..at + xin], &mut s.cols[j * f.in_len()..(j + 1) * f.in_len()]);
                    let at = (s0 + j) * ysample + g * yout;
                    f.spread(&dy[at..at + yout], &mut s.dcols[j * f.out_len()..(j + 1) * f.out_len()]);
                }
                direct_conv::weight_grad(
                    self.isa,
                    f,
                    m,
                    &s.cols,
                    f.in_len(),
                    &s.dcols,
                    f.out_len(),
                    &mut dw[g * wlen..(g + 1) * wlen],
                );
            }
        }
        let Some(dx) = dx else { return };
        let t = f.transposed(self.isa).expect("Flat::new checked the padding");
        let (dyp, dxq) = s.aux.split_at_mut(t.in_len());
        for (dys, dxs) in dy.chunks_exact(ysample).zip(dx.chunks_exact_mut(xsample)) {
            for g in 0..self.groups {
                t.pad(&dys[g * yout..(g + 1) * yout], dyp);
                direct_conv::forward(self.isa, &t, dyp, &packed_t[g * wlen..(g + 1) * wlen], None, dxq);
                t.extract(dxq, &mut dxs[g * xin..(g + 1) * xin]);
            }
        }
    }

    /// One group: weight gradient and input gradient per sub-batch.
    fn backward_oc(
        &self,
        packed_t: &[f32],
        x: &[f32],
        dy: &[f32],
        mut dx: Option<&mut [f32]>,
        s: &mut Scratch,
        dw: &mut [f32],
    ) {
        let f = &self.f;
        let (xin, yout) = (f.cin * f.h * f.w, f.cout * f.oh * f.ow);
        let t = f.transposed(self.isa).expect("Flat::new checked the padding");
        let n = x.len() / xin;
        let nb = sub_batch(f, true);
        for s0 in (0..n).step_by(nb) {
            let m = nb.min(n - s0);
            for j in 0..m {
                f.pad(&x[(s0 + j) * xin..(s0 + j + 1) * xin], &mut s.cols[j * f.in_len()..(j + 1) * f.in_len()]);
            }
            let dys = &dy[s0 * yout..(s0 + m) * yout];
            direct_oc::from_nchw(f, dys, &mut s.aux[..m * f.oh * f.ow * direct_oc::padded(f.cout)]);
            direct_oc::pixels(f, m, &mut s.pix);
            direct_oc::weight_grad(self.isa, f, &s.cols, &s.pix, &s.aux, dw);
            if let Some(dx) = dx.as_deref_mut() {
                for (j, dyj) in dys.chunks_exact(yout).enumerate() {
                    t.pad(dyj, &mut s.cols[j * t.in_len()..(j + 1) * t.in_len()]);
                }
                direct_oc::pixels(&t, m, &mut s.pix);
                direct_oc::forward(self.isa, &t, &s.cols, &s.pix, packed_t, &mut s.dcols);
                direct_oc::to_nchw(
                    &t,
                    &s.dcols[..m * f.h * f.w * direct_oc::padded(f.cin)],
                    None,
                    &mut dx[s0 * xin..(s0 + m) * xin],
                );
            }
        }
    }
}
