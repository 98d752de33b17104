//! The oneDNN operations behind the engines: what a convolution and an inner product (a linear
//! layer) look like to oneDNN, as memory descriptors for a batch size and operation descriptors
//! for forward, backward data and backward weights.

use super::{check, md, sys, Md};
use crate::tensor::engine::ConvDesc;
use std::ptr;

/// A layer shape that oneDNN runs.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    /// A 2-D convolution.
    Conv(ConvDesc),
    /// y = x·Wᵀ + b with x read flattened: (N, inf) → (N, outf), W (outf, inf).
    Linear {
        /// Input features (a sample flattened).
        inf: usize,
        /// Output features.
        outf: usize,
        /// With a bias.
        bias: bool,
    },
}

/// Which of the three computations.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Pass {
    Forward,
    BackwardData,
    BackwardWeights,
}

/// An operation descriptor, ready for `PrimDesc::new`.
pub(super) enum OpDesc {
    Conv(Box<sys::dnnl_convolution_desc_t>),
    Linear(Box<sys::dnnl_inner_product_desc_t>),
}

/// The caller's plain descriptors of a batch size and the "any" ones that let oneDNN choose.
pub(super) struct Mds {
    pub src: Md,
    pub wei: Md,
    pub bias: Md,
    pub dst: Md,
    any_src: Md,
    any_wei: Md,
    any_dst: Md,
}

impl Op {
    /// Input floats per sample.
    pub fn sample_len(&self) -> usize {
        match self {
            Op::Conv(d) => d.shape.c * d.groups * d.shape.h * d.shape.w,
            Op::Linear { inf, .. } => *inf,
        }
    }

    /// Weight floats.
    pub fn weights_len(&self) -> usize {
        match self {
            Op::Conv(d) => d.o * d.shape.rows(),
            Op::Linear { inf, outf, .. } => inf * outf,
        }
    }

    /// Bias floats (0 without one).
    pub fn bias_len(&self) -> usize {
        match self {
            Op::Conv(d) => {
                if d.bias {
                    d.o
                } else {
                    0
                }
            }
            Op::Linear { outf, bias, .. } => {
                if *bias {
                    *outf
                } else {
                    0
                }
            }
        }
    }

    pub(super) fn mds(&self, n: usize) -> Result<Mds, String> {
        let (sdims, wdims, ddims, o, stag, wtag): (Vec<usize>, Vec<usize>, Vec<usize>, usize, _, _) = match self {
            Op::Conv(d) => {
                let (s, g, og) = (&d.shape, d.groups, d.o / d.groups);
                let (w, t) = if g > 1 {
                    (vec![g, og, s.c, s.kh, s.kw], sys::dnnl_goihw)
                } else {
                    (vec![d.o, s.c, s.kh, s.kw], sys::dnnl_oihw)
                };
                (vec![n, s.c * g, s.h, s.w], w, vec![n, d.o, s.oh, s.ow], d.o, sys::dnnl_nchw, t)
            }
            Op::Linear { inf, outf, .. } => {
                (vec![n, *inf], vec![*outf, *inf], vec![n, *outf], *outf, sys::dnnl_nc, sys::dnnl_oi)
            }
        };
        Ok(Mds {
            src: md(&sdims, stag)?,
            wei: md(&wdims, wtag)?,
            bias: md(&[o], sys::dnnl_a)?,
            dst: md(&ddims, stag)?,
            any_src: md(&sdims, sys::dnnl_format_tag_any)?,
            // A linear layer's weights stay plain: with `any` oneDNN 2.6 picks brgemm with blocked
            // weights, whose backward ran 3× slower than the plain GEMM on LeNet's fc1 (800→500).
            any_wei: md(&wdims, if matches!(self, Op::Linear { .. }) { wtag } else { sys::dnnl_format_tag_any })?,
            any_dst: md(&ddims, sys::dnnl_format_tag_any)?,
        })
    }

    /// The operation descriptor of `pass` on the descriptors `m`.
    // Long: one oneDNN primitive descriptor per operation kind, each a straight sequence of C API calls.
    pub(super) fn desc(&self, pass: Pass, m: &Mds) -> Result<OpDesc, String> {
        let has_bias = self.bias_len() > 0;
        let bias = if has_bias { &m.bias as *const Md } else { ptr::null() };
        match self {
            Op::Conv(d) => {
                let (s, i) = (&d.shape, |v: usize| v as sys::dnnl_dim_t);
                // oneDNN wants the right padding that makes the output size exact (PyTorch floors).
                let pad_r = |input: usize, out: usize, k: usize, st: usize, p: usize, dil: usize| {
                    (i((out.max(1) - 1) * st + (k - 1) * dil + 1) - i(input) - i(p)).min(i(p))
                };
                let (strides, dilates) = ([i(s.sh), i(s.sw)], [i(s.dh) - 1, i(s.dw) - 1]);
                let (pl, pr) = (
                    [i(s.ph), i(s.pw)],
                    [pad_r(s.h, s.oh, s.kh, s.sh, s.ph, s.dh), pad_r(s.w, s.ow, s.kw, s.sw, s.pw, s.dw)],
                );
                // SAFETY: zeroed plain C struct, initialised by the call below.
                let mut cd: Box<sys::dnnl_convolution_desc_t> = Box::new(unsafe { std::mem::zeroed() });
                let alg = sys::dnnl_convolution_direct;
                // SAFETY: every descriptor is initialised; the arrays hold two dims.
                let status = unsafe {
                    match pass {
                        Pass::Forward => sys::dnnl_dilated_convolution_forward_desc_init(
                            &mut *cd,
                            sys::dnnl_forward_training,
                            alg,
                            &m.any_src,
                            &m.any_wei,
                            bias,
                            &m.any_dst,
                            strides.as_ptr(),
                            dilates.as_ptr(),
                            pl.as_ptr(),
                            pr.as_ptr(),
                        ),
                        Pass::BackwardData => sys::dnnl_dilated_convolution_backward_data_desc_init(
                            &mut *cd,
                            alg,
                            &m.any_src,
                            &m.any_wei,
                            &m.any_dst,
                            strides.as_ptr(),
                            dilates.as_ptr(),
                            pl.as_ptr(),
                            pr.as_ptr(),
                        ),
                        Pass::BackwardWeights => sys::dnnl_dilated_convolution_backward_weights_desc_init(
                            &mut *cd,
                            alg,
                            &m.any_src,
                            &m.any_wei,
                            bias,
                            &m.any_dst,
                            strides.as_ptr(),
                            dilates.as_ptr(),
                            pl.as_ptr(),
                            pr.as_ptr(),
                        ),
                    }
                };
                check(status, "convolution_desc_init")?;
                Ok(OpDesc::Conv(cd))
            }
            Op::Linear { .. } => {
                // SAFETY: as above.
                let mut ld: Box<sys::dnnl_inner_product_desc_t> = Box::new(unsafe { std::mem::zeroed() });
                // SAFETY: every descriptor is initialised.
                let status = unsafe {
                    match pass {
                        Pass::Forward => sys::dnnl_inner_product_forward_desc_init(
                            &mut *ld,
                            sys::dnnl_forward_training,
                            &m.any_src,
                            &m.any_wei,
                            bias,
                            &m.any_dst,
                        ),
                        Pass::BackwardData => sys::dnnl_inner_product_backward_data_desc_init(
                            &mut *ld, &m.any_src, &m.any_wei, &m.any_dst,
                        ),
                        Pass::BackwardWeights => sys::dnnl_inner_product_backward_weights_desc_init(
                            &mut *ld, &m.any_src, &m.any_wei, bias, &m.any_dst,
                        ),
                    }
                };
                check(status, "inner_product_desc_init")?;
                Ok(OpDesc::Linear(ld))
            }
        }
    }
}
