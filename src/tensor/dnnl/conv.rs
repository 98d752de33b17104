//! Convolution on oneDNN: forward, backward data, and backward weights with the bias, in the
//! layouts oneDNN prefers (blocked channels), converted at the edges from and to plain NCHW.
//! Primitives are built per batch size on first use and kept (`CACHE` sizes: training,
//! evaluation and a last short batch each keep theirs).

use super::{check, md, set_threads, sys, Engine, Md, PrimDesc, Port, Primitive};
use crate::tensor::backend::{ConvDesc, ConvEngine};
use std::ptr;

/// Batch sizes whose primitives are kept.
const CACHE: usize = 4;

/// A convolution of one shape on oneDNN (`backend::ConvEngine`).
pub struct DnnlConv {
    d: ConvDesc,
    engine: Engine,
    name: &'static str,
    by_batch: Vec<(usize, Prims)>,
    /// oneDNN writes gradients; the layer contract accumulates: they land here first.
    dw: Vec<f32>,
    db: Vec<f32>,
}

struct Fwd {
    pd: PrimDesc,
    prim: Primitive,
    src: Port,
    wei: Port,
    bias: Option<Port>,
    dst: Port,
}

struct BwdData {
    prim: Primitive,
    ddst: Port,
    wei: Port,
    dsrc: Port,
}

struct BwdWeights {
    prim: Primitive,
    src: Port,
    ddst: Port,
    dwei: Port,
    dbias: Option<Port>,
}

struct Prims {
    fwd: Fwd,
    bwd: Option<(BwdData, BwdWeights)>,
}

/// The plain (caller) and "any" (primitive's choice) descriptors of one batch size.
struct Descs {
    src: Md,
    wei: Md,
    bias: Md,
    dst: Md,
    any_src: Md,
    any_wei: Md,
    any_dst: Md,
    strides: [sys::dnnl_dim_t; 2],
    dilates: [sys::dnnl_dim_t; 2],
    pad_l: [sys::dnnl_dim_t; 2],
    pad_r: [sys::dnnl_dim_t; 2],
}

impl Descs {
    fn new(d: &ConvDesc, n: usize) -> Result<Descs, String> {
        let (g, og, cg) = (d.groups, d.o / d.groups, d.c / d.groups);
        let (wdims, wtag): (Vec<usize>, _) = if g > 1 { (vec![g, og, cg, d.kernel[0], d.kernel[1]], sys::dnnl_goihw) } else { (vec![d.o, d.c, d.kernel[0], d.kernel[1]], sys::dnnl_oihw) };
        let (sdims, ddims) = ([n, d.c, d.h, d.w], [n, d.o, d.oh, d.ow]);
        let i = |v: usize| v as sys::dnnl_dim_t;
        // oneDNN wants the right padding that makes the output size exact (PyTorch floors).
        let (ins, outs) = ([d.h, d.w], [d.oh, d.ow]);
        let pad_r = |a: usize| (i((outs[a].max(1) - 1) * d.stride[a] + (d.kernel[a] - 1) * d.dilation[a] + 1) - i(ins[a]) - i(d.padding[a])).min(i(d.padding[a]));
        let pad_r = [pad_r(0), pad_r(1)];
        Ok(Descs {
            src: md(&sdims, sys::dnnl_nchw)?,
            wei: md(&wdims, wtag)?,
            bias: md(&[d.o], sys::dnnl_a)?,
            dst: md(&ddims, sys::dnnl_nchw)?,
            any_src: md(&sdims, sys::dnnl_format_tag_any)?,
            any_wei: md(&wdims, sys::dnnl_format_tag_any)?,
            any_dst: md(&ddims, sys::dnnl_format_tag_any)?,
            strides: [i(d.stride[0]), i(d.stride[1])],
            dilates: [i(d.dilation[0]) - 1, i(d.dilation[1]) - 1],
            pad_l: [i(d.padding[0]), i(d.padding[1])],
            pad_r,
        })
    }
}

impl DnnlConv {
    /// An engine for `d`; primitives come with the first call of each batch size.
    pub fn new(d: ConvDesc) -> Result<DnnlConv, String> {
        let wlen = d.o * d.c / d.groups * d.kernel[0] * d.kernel[1];
        Ok(DnnlConv { d, engine: Engine::new()?, name: "dnnl", by_batch: Vec::new(), dw: vec![0.0; wlen], db: vec![0.0; d.o] })
    }

    /// The primitives for batch size `n`, with backward ones when `backward`.
    fn prims(&mut self, n: usize, backward: bool) -> Result<&Prims, String> {
        let at = match self.by_batch.iter().position(|(b, _)| *b == n) {
            Some(at) => at,
            None => {
                if self.by_batch.len() == CACHE {
                    self.by_batch.remove(0);
                }
                let fwd = forward(&self.engine, &self.d, n)?;
                if self.name == "dnnl" {
                    // Once per layer: a name for the per-layer tables, which want a &'static str.
                    self.name = Box::leak(format!("dnnl:{}", fwd.pd.impl_name()).into_boxed_str());
                }
                self.by_batch.push((n, Prims { fwd, bwd: None }));
                self.by_batch.len() - 1
            }
        };
        if backward && self.by_batch[at].1.bwd.is_none() {
            let bwd = backward_prims(&self.engine, &self.d, n, &self.by_batch[at].1.fwd.pd)?;
            self.by_batch[at].1.bwd = Some(bwd);
        }
        Ok(&self.by_batch[at].1)
    }

    fn batch(&self, x: &[f32]) -> usize {
        x.len() / (self.d.c * self.d.h * self.d.w).max(1)
    }
}

fn forward(engine: &Engine, d: &ConvDesc, n: usize) -> Result<Fwd, String> {
    let s = Descs::new(d, n)?;
    let mut cd = std::mem::MaybeUninit::<sys::dnnl_convolution_desc_t>::zeroed();
    let bias = if d.bias { &s.bias as *const Md } else { ptr::null() };
    // SAFETY: every descriptor is initialised; the arrays hold two dims.
    check(
        unsafe { sys::dnnl_dilated_convolution_forward_desc_init(cd.as_mut_ptr(), sys::dnnl_forward_training, sys::dnnl_convolution_direct, &s.any_src, &s.any_wei, bias, &s.any_dst, s.strides.as_ptr(), s.dilates.as_ptr(), s.pad_l.as_ptr(), s.pad_r.as_ptr()) },
        "convolution_forward_desc_init",
    )?;
    // SAFETY: initialised above.
    let pd = PrimDesc::new(engine, unsafe { cd.assume_init_ref() }, None)?;
    Ok(Fwd {
        src: Port::new(engine, &s.src, &pd.md(sys::dnnl_query_src_md, 0), true)?,
        wei: Port::new(engine, &s.wei, &pd.md(sys::dnnl_query_weights_md, 0), true)?,
        bias: if d.bias { Some(Port::new(engine, &s.bias, &pd.md(sys::dnnl_query_weights_md, 1), true)?) } else { None },
        dst: Port::new(engine, &s.dst, &pd.md(sys::dnnl_query_dst_md, 0), false)?,
        prim: pd.primitive()?,
        pd,
    })
}

fn backward_prims(engine: &Engine, d: &ConvDesc, n: usize, hint: &PrimDesc) -> Result<(BwdData, BwdWeights), String> {
    let s = Descs::new(d, n)?;
    let mut cd = std::mem::MaybeUninit::<sys::dnnl_convolution_desc_t>::zeroed();
    // SAFETY: as in `forward`.
    check(
        unsafe { sys::dnnl_dilated_convolution_backward_data_desc_init(cd.as_mut_ptr(), sys::dnnl_convolution_direct, &s.any_src, &s.any_wei, &s.any_dst, s.strides.as_ptr(), s.dilates.as_ptr(), s.pad_l.as_ptr(), s.pad_r.as_ptr()) },
        "convolution_backward_data_desc_init",
    )?;
    let pd = PrimDesc::new(engine, unsafe { cd.assume_init_ref() }, Some(hint))?;
    let data = BwdData {
        ddst: Port::new(engine, &s.dst, &pd.md(sys::dnnl_query_diff_dst_md, 0), true)?,
        wei: Port::new(engine, &s.wei, &pd.md(sys::dnnl_query_weights_md, 0), true)?,
        dsrc: Port::new(engine, &s.src, &pd.md(sys::dnnl_query_diff_src_md, 0), false)?,
        prim: pd.primitive()?,
    };
    let mut cd = std::mem::MaybeUninit::<sys::dnnl_convolution_desc_t>::zeroed();
    let bias = if d.bias { &s.bias as *const Md } else { ptr::null() };
    // SAFETY: as in `forward`.
    check(
        unsafe { sys::dnnl_dilated_convolution_backward_weights_desc_init(cd.as_mut_ptr(), sys::dnnl_convolution_direct, &s.any_src, &s.any_wei, bias, &s.any_dst, s.strides.as_ptr(), s.dilates.as_ptr(), s.pad_l.as_ptr(), s.pad_r.as_ptr()) },
        "convolution_backward_weights_desc_init",
    )?;
    let pd = PrimDesc::new(engine, unsafe { cd.assume_init_ref() }, Some(hint))?;
    let weights = BwdWeights {
        src: Port::new(engine, &s.src, &pd.md(sys::dnnl_query_src_md, 0), true)?,
        ddst: Port::new(engine, &s.dst, &pd.md(sys::dnnl_query_diff_dst_md, 0), true)?,
        dwei: Port::new(engine, &s.wei, &pd.md(sys::dnnl_query_diff_weights_md, 0), false)?,
        dbias: if d.bias { Some(Port::new(engine, &s.bias, &pd.md(sys::dnnl_query_diff_weights_md, 1), false)?) } else { None },
        prim: pd.primitive()?,
    };
    Ok((data, weights))
}

impl ConvEngine for DnnlConv {
    fn name(&self) -> &'static str {
        self.name
    }

    fn forward(&mut self, threads: usize, w: &[f32], b: Option<&[f32]>, x: &[f32], y: &mut [f32]) -> Result<(), String> {
        set_threads(threads);
        let n = self.batch(x);
        self.prims(n, false)?;
        let f = &self.by_batch.iter().find(|(b, _)| *b == n).expect("built above").1.fwd;
        let e = &self.engine;
        f.src.bind(e, x.as_ptr())?;
        f.wei.bind(e, w.as_ptr())?;
        f.dst.bind(e, y.as_mut_ptr())?;
        let (src, wei, dst) = ((sys::DNNL_ARG_SRC, f.src.memory()), (sys::DNNL_ARG_WEIGHTS, f.wei.memory()), (sys::DNNL_ARG_DST, f.dst.memory()));
        match (&f.bias, b) {
            (Some(port), Some(b)) => {
                port.bind(e, b.as_ptr())?;
                e.run(&f.prim, &[src, wei, (sys::DNNL_ARG_BIAS, port.memory()), dst])?;
            }
            _ => e.run(&f.prim, &[src, wei, dst])?,
        }
        f.dst.finish(e)
    }

    fn backward(&mut self, threads: usize, w: &[f32], x: &[f32], dy: &[f32], dx: Option<&mut [f32]>, dw: &mut [f32], db: Option<&mut [f32]>) -> Result<(), String> {
        set_threads(threads);
        let n = self.batch(x);
        self.prims(n, true)?;
        let (bd, bw) = self.by_batch.iter().find(|(b, _)| *b == n).expect("built above").1.bwd.as_ref().expect("built above");
        let e = &self.engine;
        if let Some(dx) = dx {
            bd.ddst.bind(e, dy.as_ptr())?;
            bd.wei.bind(e, w.as_ptr())?;
            bd.dsrc.bind(e, dx.as_mut_ptr())?;
            e.run(&bd.prim, &[(sys::DNNL_ARG_DIFF_DST, bd.ddst.memory()), (sys::DNNL_ARG_WEIGHTS, bd.wei.memory()), (sys::DNNL_ARG_DIFF_SRC, bd.dsrc.memory())])?;
            bd.dsrc.finish(e)?;
        }
        bw.src.bind(e, x.as_ptr())?;
        bw.ddst.bind(e, dy.as_ptr())?;
        bw.dwei.bind(e, self.dw.as_mut_ptr())?;
        let args = [(sys::DNNL_ARG_SRC, bw.src.memory()), (sys::DNNL_ARG_DIFF_DST, bw.ddst.memory()), (sys::DNNL_ARG_DIFF_WEIGHTS, bw.dwei.memory())];
        match &bw.dbias {
            Some(port) => {
                port.bind(e, self.db.as_mut_ptr())?;
                e.run(&bw.prim, &[args[0], args[1], args[2], (sys::DNNL_ARG_DIFF_BIAS, port.memory())])?;
            }
            None => e.run(&bw.prim, &args)?,
        }
        bw.dwei.finish(e)?;
        dw.iter_mut().zip(&self.dw).for_each(|(a, v)| *a += v);
        if let (Some(port), Some(db)) = (&bw.dbias, db) {
            port.finish(e)?;
            db.iter_mut().zip(&self.db).for_each(|(a, v)| *a += v);
        }
        Ok(())
    }
}
