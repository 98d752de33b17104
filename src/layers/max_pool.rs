//! Max pooling, PyTorch `nn.MaxPool2d` semantics (kernel, stride, padding, ceil mode; padding
//! cells never win). Forward keeps the argmax of each window for backward. Also defines
//! `PoolConfig` and the window geometry shared with average pooling.

use super::geometry::Axis;
use super::{check_input, Ctx, Layer, LayerError};
use crate::tensor::Tensor;

/// Configuration of a pooling window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// Window [h, w].
    pub kernel: [usize; 2],
    /// Stride [h, w].
    pub stride: [usize; 2],
    /// Implicit padding [h, w] on each side (at most half the kernel, as PyTorch requires).
    pub padding: [usize; 2],
    /// Round the output size up (Caffe's rule) instead of down.
    pub ceil_mode: bool,
}

impl PoolConfig {
    /// A square window `k` with stride `s`, no padding, floor mode.
    pub fn new(k: usize, s: usize) -> PoolConfig {
        PoolConfig { kernel: [k, k], stride: [s, s], padding: [0, 0], ceil_mode: false }
    }
}

/// Validated pooling geometry: input [C, H, W] and output size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolGeom {
    /// The configuration.
    pub cfg: PoolConfig,
    /// Channels, height, width of the input.
    pub input: [usize; 3],
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// Per output row: input rows [start, end) clipped to the input, and the window height
    /// clipped to the padded input (the count_include_pad divisor).
    pub rows: Vec<(usize, usize, usize)>,
    /// Per output column: the same for input columns.
    pub cols: Vec<(usize, usize, usize)>,
}

impl PoolGeom {
    /// Validates `cfg` against the per-sample input shape; `op` names the layer in errors.
    pub fn new(op: &'static str, cfg: PoolConfig, in_shape: &[usize]) -> Result<PoolGeom, LayerError> {
        let &[c, h, w] = in_shape else {
            return Err(LayerError::Config { op, msg: format!("input must be [C, H, W], got {in_shape:?}") });
        };
        for a in 0..2 {
            if cfg.padding[a] * 2 > cfg.kernel[a] {
                return Err(LayerError::Config {
                    op,
                    msg: format!(
                        "padding {:?} must be at most half the kernel {:?} (as in PyTorch)",
                        cfg.padding, cfg.kernel
                    ),
                });
            }
        }
        let oh = Axis { input: h, kernel: cfg.kernel[0], stride: cfg.stride[0], pad: cfg.padding[0], dilation: 1 }
            .out(op, cfg.ceil_mode)?;
        let ow = Axis { input: w, kernel: cfg.kernel[1], stride: cfg.stride[1], pad: cfg.padding[1], dilation: 1 }
            .out(op, cfg.ceil_mode)?;
        let ranges = |out: usize, input: usize, a: usize| -> Vec<(usize, usize, usize)> {
            (0..out)
                .map(|o| {
                    let start = (o * cfg.stride[a]) as isize - cfg.padding[a] as isize;
                    let end = (start + cfg.kernel[a] as isize).min((input + cfg.padding[a]) as isize);
                    let span = (end - start) as usize;
                    (start.max(0) as usize, (end.max(0) as usize).min(input), span)
                })
                .collect()
        };
        Ok(PoolGeom { cfg, input: [c, h, w], oh, ow, rows: ranges(oh, h, 0), cols: ranges(ow, w, 1) })
    }

    /// Per-sample output shape.
    pub fn out_shape(&self) -> Vec<usize> {
        vec![self.input[0], self.oh, self.ow]
    }
}

/// Max pooling layer.
pub struct MaxPool2d {
    g: PoolGeom,
    /// Index (within its H·W plane) of the maximum of each output element, (N, C, OH, OW).
    argmax: Vec<u32>,
    /// How a plane splits into stride phases (`Phases`).
    phases: Phases,
    /// Per thread: a plane's phases and running maxima (`Phases::size` each).
    rows: Vec<f32>,
    /// Per thread: the argmax of the running maxima (`Phases::flat` each).
    lanes: Vec<u32>,
}

impl MaxPool2d {
    /// Max pooling for per-sample inputs [C, H, W].
    pub fn new(cfg: PoolConfig, in_shape: &[usize]) -> Result<MaxPool2d, LayerError> {
        let g = PoolGeom::new("max_pool2d", cfg, in_shape)?;
        Ok(MaxPool2d { phases: Phases::new(&g), g, argmax: Vec::new(), rows: Vec::new(), lanes: Vec::new() })
    }
}

/// Outputs compared at once: one AVX-512 vector (two AVX2 ones). The flat run of a plane's
/// outputs is padded to whole `LANES`, so the loop has no scalar tail (a tail of branches on
/// coin-flip comparisons ran 2× slower than the old scalar scan).
const LANES: usize = 16;

/// A plane's input split into its stride phases, and the outputs computed as one flat run.
///
/// Phase (py, px) holds the padded input cells (sh·j + py, sw·i + px) for j < `ph_h`, i < `ph_w`,
/// −∞ outside the input (padding never wins). Output (oy, ox) at flat position q = oy·ph_w + ox
/// then reads window cell (ky, kx) at q + (ky / sh)·ph_w + kx / sw of phase (ky % sh, kx % sw):
/// for each window cell, every output of the plane compares at once, over one contiguous run
/// (positions with ox ≥ ow are computed and dropped). Built once per layer.
struct Phases {
    sh: usize,
    sw: usize,
    /// Columns of a phase: ow + (kw − 1) / sw.
    ph_w: usize,
    /// Rows of a phase: oh + (kh − 1) / sh.
    ph_h: usize,
    /// Outputs computed per plane: oh·ph_w rounded up to whole `LANES`.
    flat: usize,
    /// Floats per phase: its cells, then −∞ up to the furthest run's end.
    stride: usize,
    /// Per flat position: the argmax a window starts with (its first cell inside the input, as
    /// the scalar scan starts), and the input index of window cell (0, 0) (wrapping below 0).
    init: Vec<u32>,
    base: Vec<u32>,
}

impl Phases {
    fn new(g: &PoolGeom) -> Phases {
        let [_, _, w] = g.input;
        let ([kh, kw], [sh, sw], [pt, pl]) = (g.cfg.kernel, g.cfg.stride, g.cfg.padding);
        let (ph_h, ph_w) = (g.oh + (kh - 1) / sh, g.ow + (kw - 1) / sw);
        let flat = (g.oh * ph_w).next_multiple_of(LANES);
        let stride = ((kh - 1) / sh * ph_w + (kw - 1) / sw + flat).max(ph_h * ph_w);
        let (mut init, mut base) = (vec![0u32; flat], vec![0u32; flat]);
        for (oy, &(h0, _, _)) in g.rows.iter().enumerate() {
            for (ox, &(w0, _, _)) in g.cols.iter().enumerate() {
                init[oy * ph_w + ox] = (h0 * w + w0) as u32;
                base[oy * ph_w + ox] =
                    (((sh * oy) as isize - pt as isize) * w as isize + (sw * ox) as isize - pl as isize) as u32;
            }
        }
        Phases { sh, sw, ph_w, ph_h, flat, stride, init, base }
    }

    /// Floats of scratch per thread: the phases, the running maxima and one padded input row.
    fn size(&self) -> usize {
        self.sh * self.sw * self.stride + self.flat + self.sw * self.ph_w
    }

    /// Splits plane `x` (H×W, padding `pt`, `pl`) into `out`'s phases, through `row`.
    #[inline(always)]
    fn fill(&self, x: &[f32], [h, w]: [usize; 2], [pt, pl]: [usize; 2], out: &mut [f32], row: &mut [f32]) {
        let (sw, pw) = (self.sw, self.ph_w);
        let row = &mut row[..sw * pw];
        for phase in out.chunks_exact_mut(self.stride) {
            phase[self.ph_h * pw..].fill(f32::NEG_INFINITY);
        }
        // The input columns a phase row reads, after the left padding.
        let pl = pl.min(row.len());
        let n = w.min(row.len() - pl);
        for py in 0..self.sh {
            let (lo, hi) = out.split_at_mut((py * sw + 1) * self.stride);
            let first = &mut lo[py * sw * self.stride..];
            for j in 0..self.ph_h {
                let at = j * pw;
                let Some(r) = (self.sh * j + py).checked_sub(pt).filter(|&r| r < h) else {
                    first[at..at + pw].fill(f32::NEG_INFINITY);
                    for px in 1..sw {
                        hi[(px - 1) * self.stride + at..][..pw].fill(f32::NEG_INFINITY);
                    }
                    continue;
                };
                // The padded row: −∞, the input row, −∞.
                row[..pl].fill(f32::NEG_INFINITY);
                row[pl..pl + n].copy_from_slice(&x[r * w..][..n]);
                row[pl + n..].fill(f32::NEG_INFINITY);
                if sw == 2 {
                    // Even and odd columns (the common case, kept simple enough to vectorise).
                    for ((a, b), pair) in
                        first[at..at + pw].iter_mut().zip(&mut hi[at..at + pw]).zip(row.chunks_exact(2))
                    {
                        (*a, *b) = (pair[0], pair[1]);
                    }
                } else {
                    for (i, v) in first[at..at + pw].iter_mut().enumerate() {
                        *v = row[sw * i];
                    }
                    for px in 1..sw {
                        for (i, v) in hi[(px - 1) * self.stride + at..][..pw].iter_mut().enumerate() {
                            *v = row[sw * i + px];
                        }
                    }
                }
            }
        }
    }
}

/// One comparison step over `LANES` outputs: where window value v beats the running maximum
/// b (`>`, or v is NaN: the first maximum stays, NaN wins as in PyTorch), b ← v and the argmax
/// a ← base + off. Written with intrinsics: LLVM left the plain Rust version scalar.
trait LaneStep {
    /// # Safety
    /// Each pointer is valid for `LANES` elements, and the CPU runs the implementation's ISA.
    unsafe fn step(b: *mut f32, a: *mut u32, v: *const f32, base: *const u32, off: u32);
}

/// Any CPU: bit-mask selects, one lane at a time.
struct Portable;

impl LaneStep for Portable {
    unsafe fn step(b: *mut f32, a: *mut u32, v: *const f32, base: *const u32, off: u32) {
        for l in 0..LANES {
            // SAFETY: the caller's contract.
            let (b, a, v, base) = unsafe { (&mut *b.add(l), &mut *a.add(l), *v.add(l), *base.add(l)) };
            let m = 0u32.wrapping_sub(((v > *b) | v.is_nan()) as u32);
            *b = f32::from_bits((b.to_bits() & !m) | (v.to_bits() & m));
            *a = (*a & !m) | (base.wrapping_add(off) & m);
        }
    }
}

#[cfg(target_arch = "x86_64")]
struct Avx512Step;

#[cfg(target_arch = "x86_64")]
impl LaneStep for Avx512Step {
    #[inline(always)]
    unsafe fn step(b: *mut f32, a: *mut u32, v: *const f32, base: *const u32, off: u32) {
        use std::arch::x86_64::*;
        // SAFETY: the caller's contract (16 lanes, AVX-512F).
        unsafe {
            let (vv, bb) = (_mm512_loadu_ps(v), _mm512_loadu_ps(b));
            let k = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(vv, bb) | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(vv, vv);
            _mm512_storeu_ps(b, _mm512_mask_mov_ps(bb, k, vv));
            let idx = _mm512_add_epi32(_mm512_loadu_si512(base as *const _), _mm512_set1_epi32(off as i32));
            _mm512_storeu_si512(a as *mut _, _mm512_mask_mov_epi32(_mm512_loadu_si512(a as *const _), k, idx));
        }
    }
}

#[cfg(target_arch = "x86_64")]
struct Avx2Step;

#[cfg(target_arch = "x86_64")]
impl LaneStep for Avx2Step {
    #[inline(always)]
    unsafe fn step(b: *mut f32, a: *mut u32, v: *const f32, base: *const u32, off: u32) {
        use std::arch::x86_64::*;
        // SAFETY: the caller's contract (16 lanes as two halves of 8, AVX2).
        unsafe {
            for h in [0, 8] {
                let (vv, bb) = (_mm256_loadu_ps(v.add(h)), _mm256_loadu_ps(b.add(h)));
                let m = _mm256_or_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(vv, bb), _mm256_cmp_ps::<_CMP_UNORD_Q>(vv, vv));
                _mm256_storeu_ps(b.add(h), _mm256_blendv_ps(bb, vv, m));
                let idx = _mm256_add_epi32(_mm256_loadu_si256(base.add(h) as *const _), _mm256_set1_epi32(off as i32));
                let aa = _mm256_loadu_si256(a.add(h) as *const _);
                _mm256_storeu_si256(a.add(h) as *mut _, _mm256_blendv_epi8(aa, idx, _mm256_castps_si256(m)));
            }
        }
    }
}

/// Forward of whole planes (H·W inputs → OH·OW outputs and their argmax) through `Phases`.
/// The comparisons run in the order of a scalar scan of each window (rows, then columns, `>`
/// keeping the first maximum, NaN winning as in PyTorch), so the result is that scan's, ties
/// included. `scratch` holds the phases and the running maxima (`Phases::size`), `lanes`
/// their indices (`Phases::flat`).
///
/// # Safety
/// The CPU runs `S`'s instruction set.
#[inline(always)]
unsafe fn forward_planes<S: LaneStep>(
    g: &PoolGeom,
    ph: &Phases,
    x: &[f32],
    y: &mut [f32],
    arg: &mut [u32],
    scratch: &mut [f32],
    lanes: &mut [u32],
) {
    let [_, h, w] = g.input;
    let (oh, ow, [kh, kw]) = (g.oh, g.ow, g.cfg.kernel);
    let (phases, rest) = scratch[..ph.size()].split_at_mut(ph.sh * ph.sw * ph.stride);
    let (best, row) = rest.split_at_mut(ph.flat);
    let lanes = &mut lanes[..ph.flat];
    for (xp, (yp, ap)) in x.chunks_exact(h * w).zip(y.chunks_exact_mut(oh * ow).zip(arg.chunks_exact_mut(oh * ow))) {
        ph.fill(xp, [h, w], g.cfg.padding, phases, row);
        best.fill(f32::NEG_INFINITY);
        lanes.copy_from_slice(&ph.init);
        for ky in 0..kh {
            for kx in 0..kw {
                let v = &phases
                    [((ky % ph.sh) * ph.sw + kx % ph.sw) * ph.stride + (ky / ph.sh) * ph.ph_w + kx / ph.sw..]
                    [..ph.flat];
                let off = (ky * w + kx) as u32;
                for q in (0..ph.flat).step_by(LANES) {
                    // SAFETY: q + LANES ≤ flat, the length of every slice here; the ISA is
                    // this function's contract.
                    unsafe {
                        S::step(
                            best.as_mut_ptr().add(q),
                            lanes.as_mut_ptr().add(q),
                            v.as_ptr().add(q),
                            ph.base.as_ptr().add(q),
                            off,
                        )
                    };
                }
            }
        }
        for (oy, (yr, ar)) in yp.chunks_exact_mut(ow).zip(ap.chunks_exact_mut(ow)).enumerate() {
            yr.copy_from_slice(&best[oy * ph.ph_w..][..ow]);
            ar.copy_from_slice(&lanes[oy * ph.ph_w..][..ow]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn forward_planes_avx512(
    g: &PoolGeom,
    ph: &Phases,
    x: &[f32],
    y: &mut [f32],
    arg: &mut [u32],
    rows: &mut [f32],
    lanes: &mut [u32],
) {
    // SAFETY: this function runs only where AVX-512F does.
    unsafe { forward_planes::<Avx512Step>(g, ph, x, y, arg, rows, lanes) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_planes_avx2(
    g: &PoolGeom,
    ph: &Phases,
    x: &[f32],
    y: &mut [f32],
    arg: &mut [u32],
    rows: &mut [f32],
    lanes: &mut [u32],
) {
    // SAFETY: this function runs only where AVX2 does.
    unsafe { forward_planes::<Avx2Step>(g, ph, x, y, arg, rows, lanes) }
}

/// Forward of whole planes, one window at a time: the scalar scan. Faster than `Phases` on
/// small planes (under `VECTOR_MIN` outputs), where splitting the input costs more than the
/// vectors save.
fn scan_planes(g: &PoolGeom, x: &[f32], y: &mut [f32], arg: &mut [u32]) {
    let [_, h, w] = g.input;
    let (oh, ow) = (g.oh, g.ow);
    for (xp, (yp, ap)) in x.chunks_exact(h * w).zip(y.chunks_exact_mut(oh * ow).zip(arg.chunks_exact_mut(oh * ow))) {
        for (oy, &(h0, h1, _)) in g.rows.iter().enumerate() {
            for (ox, &(w0, w1, _)) in g.cols.iter().enumerate() {
                let (mut best, mut a) = (f32::NEG_INFINITY, (h0 * w + w0) as u32);
                for iy in h0..h1 {
                    for (ix, &v) in xp[iy * w + w0..iy * w + w1].iter().enumerate() {
                        // Branch-free select by bit masks: on real activations this comparison
                        // is a coin flip, and mispredicted branches cost 10× the arithmetic.
                        let m = 0u32.wrapping_sub(((v > best) | v.is_nan()) as u32);
                        best = f32::from_bits((best.to_bits() & !m) | (v.to_bits() & m));
                        a = (a & !m) | ((iy * w + w0 + ix) as u32 & m);
                    }
                }
                yp[oy * ow + ox] = best;
                ap[oy * ow + ox] = a;
            }
        }
    }
}

/// Outputs per plane from which `Phases` beats the scalar scan (measured, batch 64 on an AMD
/// EPYC: 225 outputs 4× faster, 64 and 49 1.7–1.9×, 16 and 9 1.2× slower).
const VECTOR_MIN: usize = 32;

/// `forward_planes` built for the best instruction set of this CPU.
fn forward_planes_best(
    g: &PoolGeom,
    ph: &Phases,
    x: &[f32],
    y: &mut [f32],
    arg: &mut [u32],
    rows: &mut [f32],
    lanes: &mut [u32],
) {
    use crate::tensor::simd::Isa;
    if g.oh * g.ow < VECTOR_MIN {
        return scan_planes(g, x, y, arg);
    }
    match Isa::best() {
        // SAFETY: `Isa::best` checked that this CPU runs the instruction set.
        #[cfg(target_arch = "x86_64")]
        Some(Isa::Avx512) => unsafe { forward_planes_avx512(g, ph, x, y, arg, rows, lanes) },
        #[cfg(target_arch = "x86_64")]
        Some(Isa::Avx2) => unsafe { forward_planes_avx2(g, ph, x, y, arg, rows, lanes) },
        // SAFETY: the portable step runs anywhere.
        _ => unsafe { forward_planes::<Portable>(g, ph, x, y, arg, rows, lanes) },
    }
}

impl Layer for MaxPool2d {
    fn kind(&self) -> &'static str {
        "max_pool2d"
    }

    fn out_shape(&self) -> Vec<usize> {
        self.g.out_shape()
    }

    /// # Shapes
    /// x: (N, C, H, W) → y: (N, C, OH, OW)
    fn forward(&mut self, ctx: &Ctx, _p: &[f32], x: &Tensor, y: &mut Tensor) -> Result<(), LayerError> {
        let n = check_input("max_pool2d", x, &self.g.input)?;
        let [c, h, w] = self.g.input;
        let (oh, ow) = (self.g.oh, self.g.ow);
        y.resize(&[n, c, oh, ow]);
        self.argmax.resize(y.len(), 0);
        let (planes, row, lanes) = (n * c, self.phases.size(), self.phases.flat);
        // Whole planes per thread, each thread with its own row buffer.
        let threads = ctx.threads.clamp(1, planes.max(1));
        let per = planes.div_ceil(threads).max(1);
        self.rows.resize(threads * row, 0.0);
        self.lanes.resize(threads * lanes, 0);
        let (g, ph) = (&self.g, &self.phases);
        type Chunks<'a> = (&'a [f32], (&'a mut [f32], (&'a mut [u32], (&'a mut [f32], &'a mut [u32]))));
        let part = |(xs, (ys, (args, (rows, ls)))): Chunks<'_>| forward_planes_best(g, ph, xs, ys, args, rows, ls);
        if threads > 1 {
            use rayon::prelude::*;
            let work = y.data_mut().par_chunks_mut(per * oh * ow).zip(
                self.argmax
                    .par_chunks_mut(per * oh * ow)
                    .zip(self.rows.par_chunks_mut(row).zip(self.lanes.par_chunks_mut(lanes))),
            );
            x.data().par_chunks(per * h * w).zip(work).for_each(part);
        } else {
            part((x.data(), (y.data_mut(), (&mut self.argmax, (&mut self.rows, &mut self.lanes)))));
        }
        Ok(())
    }

    fn backward(
        &mut self,
        ctx: &Ctx,
        _p: &[f32],
        _dp: &mut [f32],
        x: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
        dx: Option<&mut Tensor>,
    ) -> Result<(), LayerError> {
        let Some(dx) = dx else { return Ok(()) };
        let [_, h, w] = self.g.input;
        let plane_out = self.g.oh * self.g.ow;
        dx.resize(x.shape());
        let plane = |(dxp, (dyp, ap)): (&mut [f32], (&[f32], &[u32]))| {
            dxp.fill(0.0);
            for (&g, &a) in dyp.iter().zip(ap) {
                dxp[a as usize] += g;
            }
        };
        let work = (
            dx.data_mut().chunks_exact_mut(h * w),
            (dy.data().chunks_exact(plane_out), self.argmax.chunks_exact(plane_out)),
        );
        if ctx.threads > 1 {
            use rayon::prelude::*;
            dx.data_mut()
                .par_chunks_exact_mut(h * w)
                .zip(dy.data().par_chunks_exact(plane_out).zip(self.argmax.par_chunks_exact(plane_out)))
                .for_each(plane);
        } else {
            work.0.zip(work.1 .0.zip(work.1 .1)).for_each(plane);
        }
        Ok(())
    }

    fn flops_per_sample(&self) -> u64 {
        (self.g.input[0] * self.g.oh * self.g.ow * self.g.cfg.kernel[0] * self.g.cfg.kernel[1]) as u64
    }
}

#[cfg(test)]
mod tests;
