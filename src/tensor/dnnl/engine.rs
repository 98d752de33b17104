//! A layer on oneDNN (`backend::LayerEngine`): forward, backward data, and backward weights with
//! the bias, in the layouts oneDNN prefers (blocked channels, blocked weights), converted at the
//! edges from and to the caller's plain layout (`Port`). Primitives are built per batch size on
//! first use and kept (`CACHE` sizes: training, evaluation and a last short batch each keep
//! theirs).

use super::ops::{Op, OpDesc, Pass};
use super::{same_md, set_threads, sys, Engine, Port, PrimDesc, Primitive};
use crate::tensor::engine::LayerEngine;
use rayon::prelude::*;

/// Batch sizes whose primitives are kept.
const CACHE: usize = 4;

/// Largest weight count (16 MiB) for which a linear layer too cuts the batch into parts, one
/// weight-gradient partial each; above (AlexNet's fc6 and fc7), it runs whole on OpenMP threads.
const PART_MAX_WEIGHTS: usize = 1 << 22;

/// A convolution or a linear layer of one shape on oneDNN.
///
/// Threads: a convolution cuts the batch into one part per thread, as the native path does, each
/// part with its own engine, stream, primitives and gradient buffers, run on the rayon pool with
/// oneDNN single-threaded inside; the weight-gradient partials are summed in part order. So the
/// result depends on the thread count only as the native one does, and oneDNN's OpenMP team
/// never starts beside convoy's rayon threads: its threads spin after each parallel region and
/// took the cores from the native layers around (keras-mnist on 2 threads: backward 6.5 ms with
/// fc1 on OpenMP, 2.4 natively). Linear layers split the same way up to `PART_MAX_WEIGHTS`;
/// larger ones (AlexNet's fc6 and fc7: a 150 MB partial per thread would cost more than it
/// saves) run whole on OpenMP threads.
pub struct DnnlEngine {
    op: Op,
    name: &'static str,
    /// (batch size, thread count, the parts).
    by_batch: Vec<(usize, usize, Vec<Part>)>,
}

/// The primitives of one part of the batch.
struct Part {
    engine: Engine,
    fwd: Fwd,
    bwd: Option<(BwdData, BwdWeights)>,
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
    /// The forward's converted input has this primitive's layout: read there, not converted
    /// again (the layer contract: backward gets the last forward's `x`).
    src_from_fwd: bool,
    /// Backward data's converted output gradient has this primitive's layout: read there.
    ddst_from_data: bool,
}

impl OpDesc {
    fn primitive_desc(&self, engine: &Engine, hint: Option<&PrimDesc>) -> Result<PrimDesc, String> {
        match self {
            OpDesc::Conv(d) => PrimDesc::new(engine, &**d, hint),
            OpDesc::Linear(d) => PrimDesc::new(engine, &**d, hint),
        }
    }
}

impl DnnlEngine {
    /// An engine for `op`; primitives come with the first call of each batch size.
    pub fn new(op: Op) -> Result<DnnlEngine, String> {
        Ok(DnnlEngine { name: "dnnl", by_batch: Vec::new(), op })
    }

    /// Rows per part and OpenMP threads per part for a batch of `n` on `threads` threads.
    fn split(&self, n: usize, threads: usize) -> (usize, usize) {
        match self.op {
            Op::Linear { .. } if self.op.weights_len() > PART_MAX_WEIGHTS => (n.max(1), threads.max(1)),
            _ => (n.div_ceil(threads.clamp(1, n.max(1))).max(1), 1),
        }
    }

    /// The parts for a batch of `n` on `threads` threads, with backward primitives when
    /// `backward`.
    fn parts(&mut self, n: usize, threads: usize, backward: bool) -> Result<&mut Vec<Part>, String> {
        let (per, _) = self.split(n, threads);
        let at = match self.by_batch.iter().position(|(b, t, _)| *b == n && *t == threads) {
            Some(at) => at,
            None => {
                if self.by_batch.len() == CACHE {
                    self.by_batch.remove(0);
                }
                let mut parts = Vec::new();
                for start in (0..n).step_by(per) {
                    let (engine, rows) = (Engine::new()?, per.min(n - start));
                    let fwd = forward(&engine, &self.op, rows)?;
                    parts.push(Part {
                        engine,
                        fwd,
                        bwd: None,
                        dw: vec![0.0; self.op.weights_len()],
                        db: vec![0.0; self.op.bias_len()],
                    });
                }
                if self.name == "dnnl" {
                    // Once per layer: a name for the per-layer tables, which want a &'static str.
                    self.name = Box::leak(format!("dnnl:{}", parts[0].fwd.pd.impl_name()).into_boxed_str());
                }
                self.by_batch.push((n, threads, parts));
                self.by_batch.len() - 1
            }
        };
        let op = self.op;
        let parts = &mut self.by_batch[at].2;
        if backward {
            for (k, part) in parts.iter_mut().enumerate().filter(|(_, p)| p.bwd.is_none()) {
                let rows = per.min(n - k * per);
                part.bwd = Some(backward_prims(&part.engine, &op, rows, &part.fwd.pd)?);
            }
        }
        Ok(parts)
    }
}

fn forward(engine: &Engine, op: &Op, n: usize) -> Result<Fwd, String> {
    let m = op.mds(n)?;
    let pd = op.desc(Pass::Forward, &m)?.primitive_desc(engine, None)?;
    Ok(Fwd {
        src: Port::new(engine, &m.src, &pd.md(sys::dnnl_query_src_md, 0), true)?,
        wei: Port::new(engine, &m.wei, &pd.md(sys::dnnl_query_weights_md, 0), true)?,
        bias: if op.bias_len() > 0 {
            Some(Port::new(engine, &m.bias, &pd.md(sys::dnnl_query_weights_md, 1), true)?)
        } else {
            None
        },
        dst: Port::new(engine, &m.dst, &pd.md(sys::dnnl_query_dst_md, 0), false)?,
        prim: pd.primitive(engine)?,
        pd,
    })
}

fn backward_prims(engine: &Engine, op: &Op, n: usize, hint: &PrimDesc) -> Result<(BwdData, BwdWeights), String> {
    let m = op.mds(n)?;
    let pd = op.desc(Pass::BackwardData, &m)?.primitive_desc(engine, Some(hint))?;
    let data = BwdData {
        ddst: Port::new(engine, &m.dst, &pd.md(sys::dnnl_query_diff_dst_md, 0), true)?,
        wei: Port::new(engine, &m.wei, &pd.md(sys::dnnl_query_weights_md, 0), true)?,
        dsrc: Port::new(engine, &m.src, &pd.md(sys::dnnl_query_diff_src_md, 0), false)?,
        prim: pd.primitive(engine)?,
    };
    let data_ddst = pd.md(sys::dnnl_query_diff_dst_md, 0);
    let pd = op.desc(Pass::BackwardWeights, &m)?.primitive_desc(engine, Some(hint))?;
    let weights = BwdWeights {
        src_from_fwd: same_md(&pd.md(sys::dnnl_query_src_md, 0), &hint.md(sys::dnnl_query_src_md, 0)),
        ddst_from_data: same_md(&pd.md(sys::dnnl_query_diff_dst_md, 0), &data_ddst),
        src: Port::new(engine, &m.src, &pd.md(sys::dnnl_query_src_md, 0), true)?,
        ddst: Port::new(engine, &m.dst, &pd.md(sys::dnnl_query_diff_dst_md, 0), true)?,
        dwei: Port::new(engine, &m.wei, &pd.md(sys::dnnl_query_diff_weights_md, 0), false)?,
        dbias: if op.bias_len() > 0 {
            Some(Port::new(engine, &m.bias, &pd.md(sys::dnnl_query_diff_weights_md, 1), false)?)
        } else {
            None
        },
        prim: pd.primitive(engine)?,
    };
    Ok((data, weights))
}

impl Part {
    fn forward(&self, w: &[f32], b: Option<&[f32]>, x: &[f32], y: &mut [f32]) -> Result<(), String> {
        let (f, e) = (&self.fwd, &self.engine);
        f.src.bind(e, x.as_ptr())?;
        f.wei.bind(e, w.as_ptr())?;
        f.dst.bind(e, y.as_mut_ptr())?;
        let (src, wei, dst) = (
            (sys::DNNL_ARG_SRC, f.src.memory()),
            (sys::DNNL_ARG_WEIGHTS, f.wei.memory()),
            (sys::DNNL_ARG_DST, f.dst.memory()),
        );
        match (&f.bias, b) {
            (Some(port), Some(b)) => {
                port.bind(e, b.as_ptr())?;
                e.run(&f.prim, &[src, wei, (sys::DNNL_ARG_BIAS, port.memory()), dst])?;
            }
            _ => e.run(&f.prim, &[src, wei, dst])?,
        }
        f.dst.finish(e)
    }

    /// Input gradient into `dx` (when given), weight and bias gradients into the part's own
    /// buffers.
    fn backward(&mut self, w: &[f32], x: &[f32], dy: &[f32], dx: Option<&mut [f32]>) -> Result<(), String> {
        let (bd, bw) = self.bwd.as_ref().expect("built by DnnlEngine::parts");
        let e = &self.engine;
        let ran_data = dx.is_some();
        if let Some(dx) = dx {
            bd.ddst.bind(e, dy.as_ptr())?;
            bd.wei.bind(e, w.as_ptr())?;
            bd.dsrc.bind(e, dx.as_mut_ptr())?;
            e.run(
                &bd.prim,
                &[
                    (sys::DNNL_ARG_DIFF_DST, bd.ddst.memory()),
                    (sys::DNNL_ARG_WEIGHTS, bd.wei.memory()),
                    (sys::DNNL_ARG_DIFF_SRC, bd.dsrc.memory()),
                ],
            )?;
            bd.dsrc.finish(e)?;
        }
        // Each activation converted once a step: x in forward, dy in backward data.
        let src = if bw.src_from_fwd && self.fwd.src.converts() {
            self.fwd.src.memory()
        } else {
            bw.src.bind(e, x.as_ptr())?;
            bw.src.memory()
        };
        let ddst = if ran_data && bw.ddst_from_data && bd.ddst.converts() {
            bd.ddst.memory()
        } else {
            bw.ddst.bind(e, dy.as_ptr())?;
            bw.ddst.memory()
        };
        bw.dwei.bind(e, self.dw.as_mut_ptr())?;
        let args =
            [(sys::DNNL_ARG_SRC, src), (sys::DNNL_ARG_DIFF_DST, ddst), (sys::DNNL_ARG_DIFF_WEIGHTS, bw.dwei.memory())];
        match &bw.dbias {
            Some(port) => {
                port.bind(e, self.db.as_mut_ptr())?;
                e.run(&bw.prim, &[args[0], args[1], args[2], (sys::DNNL_ARG_DIFF_BIAS, port.memory())])?;
                port.finish(e)?;
            }
            None => e.run(&bw.prim, &args)?,
        }
        bw.dwei.finish(e)
    }
}

impl LayerEngine for DnnlEngine {
    fn name(&self) -> &'static str {
        self.name
    }

    fn forward(
        &mut self,
        threads: usize,
        w: &[f32],
        b: Option<&[f32]>,
        x: &[f32],
        y: &mut [f32],
    ) -> Result<(), String> {
        let n = x.len() / self.op.sample_len().max(1);
        let (per, omp) = self.split(n, threads);
        let (xs, ys) = (self.op.sample_len(), y.len() / n.max(1));
        let parts = self.parts(n, threads, false)?;
        if parts.len() == 1 {
            set_threads(omp);
            return parts[0].forward(w, b, x, y);
        }
        x.par_chunks(per * xs).zip(y.par_chunks_mut(per * ys)).zip(parts.par_iter_mut()).with_max_len(1).try_for_each(
            |((xc, yc), part)| {
                set_threads(1);
                part.forward(w, b, xc, yc)
            },
        )
    }

    fn backward(
        &mut self,
        threads: usize,
        w: &[f32],
        x: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        dw: &mut [f32],
        mut db: Option<&mut [f32]>,
    ) -> Result<(), String> {
        let n = x.len() / self.op.sample_len().max(1);
        let (per, omp) = self.split(n, threads);
        let (xs, ys) = (self.op.sample_len(), dy.len() / n.max(1));
        let parts = self.parts(n, threads, true)?;
        if parts.len() == 1 {
            set_threads(omp);
            parts[0].backward(w, x, dy, dx)?;
        } else {
            let work = x.par_chunks(per * xs).zip(dy.par_chunks(per * ys)).zip(parts.par_iter_mut()).with_max_len(1);
            let body = |((xc, dyc), part): ((&[f32], &[f32]), &mut Part), dxc: Option<&mut [f32]>| {
                set_threads(1);
                part.backward(w, xc, dyc, dxc)
            };
            match dx {
                Some(dx) => work.zip(dx.par_chunks_mut(per * xs)).try_for_each(|(a, dxc)| body(a, Some(dxc)))?,
                None => work.try_for_each(|a| body(a, None))?,
            }
        }
        // The parts' gradients, summed in part order: the same for any scheduling.
        for part in parts.iter() {
            dw.iter_mut().zip(&part.dw).for_each(|(a, v)| *a += v);
            if let Some(db) = db.as_deref_mut() {
                db.iter_mut().zip(&part.db).for_each(|(a, v)| *a += v);
            }
        }
        Ok(())
    }
}
