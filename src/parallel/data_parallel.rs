//! Data parallelism with all-reduce (what PyTorch DDP and Horovod do).
//!
//! Every worker holds a replica; rank 0's initial parameters are broadcast. Each step a worker
//! runs forward/backward on its shard with the loss divided by the GLOBAL batch size, so the sum
//! of the workers' gradients is the gradient of the global batch; the sum is formed by all-reduce
//! and every worker applies the same optimizer step, keeping the replicas identical.
//!
//! Gradients are reduced in buckets: contiguous runs of layers of the flat gradient buffer, in
//! reverse layer order (the last layers' gradients are ready first), the first bucket capped at
//! 1 MiB and the others at `--bucket-mb` (as DDP). With overlap (the default) a bucket is handed
//! to a communication thread the moment backward has finished its lowest layer, and is reduced
//! while backward goes on.
//!
//! The optimizer step is sharded (ZeRO stage 1) and fused into each bucket's reduction
//! (`Communicator::all_reduce_update`): once rank r holds the summed gradient of its chunk of a
//! bucket it updates that chunk of the parameters, and the updated chunks are gathered instead
//! of the gradients. Same traffic as an all-reduce, 1/P of the update work per worker, and the
//! update of the last layers overlaps the backward of the first. Each worker's optimizer state is
//! current only for the chunks it owns (fixed for the run).
//!
//! `--accumulate K` cuts the shard into K micro-batches whose gradients add up locally before one
//! reduction (DDP's `no_sync`). `--deterministic` cuts every global batch into
//! `DETERMINISTIC_LEAVES` fixed micro-shards, computes each on one thread into its own buffer,
//! sums them pairwise and reduces across workers with the fixed-order tree: the summation tree is
//! then the same for 1, 2, 4 and 8 workers, and so are the bits of the result.

mod bucket_sink;
mod settings;

use crate::comm::{algorithms, Communicator};
use crate::data::loader::Batch;
use crate::layers::{Ctx, StatSync};
use crate::net::{BatchStats, Net, ParamLayout};
use crate::optim::Optimizer;
use crate::ranges::even_range;
use crate::tensor::Tensor;
use crate::train::events::Track;
use crate::train::timeline::{PhaseLog, Span};
use crate::train::{self, nonfinite, StepReport, Strategy, TrainConfig, TrainError};
use bucket_sink::BucketSink;
pub use settings::AllReduceConfig;
use std::ops::Range;
use std::sync::mpsc;
use std::time::Instant;

/// Micro-shards per global batch in `--deterministic` mode (so 1, 2, 4 or 8 workers).
pub const DETERMINISTIC_LEAVES: usize = 8;

/// Cap of the first bucket (the last layers), small so communication starts early (DDP: 1 MiB).
pub const FIRST_BUCKET_BYTES: usize = 1 << 20;

/// A run of consecutive layers whose gradients are reduced together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// Layers, low to high.
    pub layers: Range<usize>,
    /// Their range in the flat buffer.
    pub params: Range<usize>,
}

/// Buckets over the layers of `layout`, from the last layer down (the order backward finishes
/// them): a bucket closes once it holds at least `first_cap` bytes (the first) or `cap` bytes
/// (the others). Layers without parameters join the bucket that is open.
pub fn assign_buckets(layout: &ParamLayout, num_layers: usize, first_cap: usize, cap: usize) -> Vec<Bucket> {
    let mut buckets = Vec::new();
    let (mut hi, mut bytes) = (num_layers, 0usize);
    for i in (0..num_layers).rev() {
        bytes += layout.layer_range(i).len() * 4;
        let limit = if buckets.is_empty() { first_cap } else { cap };
        if bytes >= limit || i == 0 {
            buckets.push(Bucket { layers: i..hi, params: layout.layer_range(i).start..layout.layer_range(hi - 1).end });
            (hi, bytes) = (i, 0);
        }
    }
    buckets
}

/// SyncBatchNorm's sums over the workers, on a communicator of their own (the gradient buckets
/// are being reduced on the main one while backward runs).
pub(crate) struct CommSync<'a>(pub(crate) &'a dyn Communicator);

impl StatSync for CommSync<'_> {
    /// An all-gather of each worker's f64 values (their bits carried as pairs of f32, copied
    /// and never added), summed in rank order: f64 precision, and the same bits everywhere.
    fn all_reduce_sum(&self, buf: &mut [f64]) -> Result<(), String> {
        let send: Vec<f32> = buf.iter().flat_map(|v| split_f64(*v)).collect();
        let mut recv = vec![0.0f32; send.len() * self.0.size()];
        self.0.all_gather_into(&send, &mut recv).map_err(|e| e.to_string())?;
        for (i, v) in buf.iter_mut().enumerate() {
            *v = recv.chunks(send.len()).map(|c| join_f64(c[2 * i], c[2 * i + 1])).sum();
        }
        Ok(())
    }
}

/// The bits of an f64 as two f32 (low, high) — for transport only.
fn split_f64(v: f64) -> [f32; 2] {
    let b = v.to_bits();
    [f32::from_bits(b as u32), f32::from_bits((b >> 32) as u32)]
}

/// The f64 that `split_f64` cut.
fn join_f64(lo: f32, hi: f32) -> f64 {
    f64::from_bits(lo.to_bits() as u64 | ((hi.to_bits() as u64) << 32))
}

/// The all-reduce strategy of one worker.
pub struct AllReduce<'c> {
    comm: &'c dyn Communicator,
    /// For SyncBatchNorm: the same workers, another communicator.
    bn_comm: Option<Box<dyn Communicator>>,
    /// SyncBatchNorm on `comm` itself (a transport that cannot split: MPI processes × threads),
    /// so buckets are reduced after backward, never beside it.
    bn_on_main: bool,
    cfg: AllReduceConfig,
    opt: Box<dyn Optimizer>,
    grads: Vec<f32>,
    buckets: Vec<Bucket>,
    /// Bucket of each layer.
    bucket_of: Vec<usize>,
    /// Rows of the current micro-batch (accumulation, deterministic leaves).
    micro: Tensor,
    /// Gradient buffer per leaf of this worker (`--deterministic`).
    leaves: Vec<Vec<f32>>,
    /// Phases of the step, for the timeline.
    phases: PhaseLog,
    /// `--on-nonfinite skip`: reduce every bucket, look, then update (no fused update).
    skip_nonfinite: bool,
}

impl<'c> AllReduce<'c> {
    /// The strategy for the worker holding `comm`.
    pub fn new(
        comm: &'c dyn Communicator,
        cfg: AllReduceConfig,
        run: &TrainConfig,
        net: &Net,
    ) -> Result<AllReduce<'c>, TrainError> {
        let len = net.layout().len();
        let cap = (cfg.bucket_mb * (1 << 20) as f64) as usize;
        let buckets = assign_buckets(net.layout(), net.num_layers(), FIRST_BUCKET_BYTES.min(cap), cap);
        let mut bucket_of = vec![0; net.num_layers()];
        for (b, bucket) in buckets.iter().enumerate() {
            bucket_of[bucket.layers.clone()].fill(b);
        }
        let leaves =
            if cfg.deterministic { vec![vec![0.0; len]; DETERMINISTIC_LEAVES / comm.size()] } else { Vec::new() };
        // Every worker splits (a collective), or none: they all build the same net.
        let sync = cfg.sync_batch_norm && net.has_buffers() && comm.size() > 1 && !cfg.deterministic;
        let (bn_comm, bn_on_main) = match sync.then(|| comm.split(0, comm.rank())) {
            None => (None, false),
            Some(Ok(c)) => (Some(c), false),
            Some(Err(e)) => {
                if comm.rank() == 0 {
                    tracing::info!(
                        "sync batch norm on the gradient communicator ({e}): gradients are reduced after backward"
                    );
                }
                (None, true)
            }
        };
        let opt = run.optimizer.build_scaled(len, net.layout().mult_ranges())?;
        let skip_nonfinite = run.on_nonfinite == nonfinite::OnNonFinite::Skip;
        Ok(AllReduce {
            comm,
            bn_comm,
            bn_on_main,
            opt,
            grads: vec![0.0; len],
            buckets,
            bucket_of,
            micro: Tensor::default(),
            leaves,
            cfg,
            phases: PhaseLog::default(),
            skip_nonfinite,
        })
    }

    /// The buckets, in the order they are reduced.
    pub fn buckets(&self) -> &[Bucket] {
        &self.buckets
    }

    /// Reduces every bucket after backward, each fused with the update of this rank's chunk of
    /// it; returns the seconds it took.
    fn reduce_update_all(&mut self, params: &mut [f32], lr: f32) -> Result<f64, TrainError> {
        let t = Instant::now();
        for (i, b) in self.buckets.iter().enumerate() {
            crate::comm::phase::set_bucket(Some(i));
            let r = b.params.clone();
            let opt = &mut *self.opt;
            let mut update = |c: Range<usize>, p: &mut [f32], g: &[f32]| {
                opt.update_range(r.start + c.start..r.start + c.end, p, g, lr)
            };
            let tb = Instant::now();
            self.comm.all_reduce_update(&mut self.grads[r.clone()], &mut params[r.clone()], &mut update)?;
            if self.phases.on() {
                self.phases.record(Track::Comm, "allreduce", Some(i), tb, Instant::now());
            }
        }
        crate::comm::phase::set_bucket(None);
        self.phases.since(Track::Compute, "comm_wait", t);
        Ok(t.elapsed().as_secs_f64())
    }

    /// `--on-nonfinite skip`: reduces every bucket whole, then updates everything unless some
    /// gradient is not finite (every worker agrees); returns (seconds, skipped).
    fn reduce_check_update(&mut self, params: &mut [f32], lr: f32) -> Result<(f64, bool), TrainError> {
        let t = Instant::now();
        for (i, b) in self.buckets.iter().enumerate() {
            crate::comm::phase::set_bucket(Some(i));
            let tb = Instant::now();
            self.comm.all_reduce_into(&mut self.grads[b.params.clone()])?;
            if self.phases.on() {
                self.phases.record(Track::Comm, "allreduce", Some(i), tb, Instant::now());
            }
        }
        crate::comm::phase::set_bucket(None);
        let skipped = nonfinite::agreed(nonfinite::any_nonfinite(&self.grads), &[self.comm])?;
        let secs = t.elapsed().as_secs_f64();
        self.phases.since(Track::Compute, "comm_wait", t);
        if !skipped {
            let t_opt = Instant::now();
            self.opt.step(params, &self.grads, lr);
            self.phases.since(Track::Compute, "optimizer", t_opt);
        }
        Ok((secs, skipped))
    }

    /// Forward/backward over `x` with every complete bucket reduced and applied (see
    /// `all_reduce_update`) on a second thread while backward continues. Returns the stats, the
    /// seconds of communication and the seconds waited for it after backward.
    #[allow(clippy::too_many_arguments)]
    fn backward_overlapped(
        &mut self,
        net: &mut Net,
        ctx: &Ctx,
        params: &mut [f32],
        x: &Tensor,
        labels: &[u32],
        denom: usize,
        lr: f32,
    ) -> Result<(BatchStats, f64, f64), TrainError> {
        let AllReduce { comm, grads, buckets, bucket_of, opt, phases, .. } = self;
        let timed = phases.on();
        let t_fb = Instant::now();
        let comm: &dyn Communicator = *comm;
        let opt: &mut dyn Optimizer = &mut **opt;
        // Buckets are in reverse order of the buffers: cut both from the end.
        let mut slices: Vec<Option<(&mut [f32], &mut [f32])>> = (0..buckets.len()).map(|_| None).collect();
        let (mut prest, mut grest): (&mut [f32], &mut [f32]) = (params, grads);
        for (b, bucket) in buckets.iter().enumerate() {
            let (plo, phi) = std::mem::take(&mut prest).split_at_mut(bucket.params.start);
            let (glo, ghi) = std::mem::take(&mut grest).split_at_mut(bucket.params.start);
            slices[b] = Some((phi, ghi));
            (prest, grest) = (plo, glo);
        }
        let (tx, rx) = mpsc::channel::<(usize, &mut [f32], &mut [f32])>();
        let buckets: &[Bucket] = buckets;
        std::thread::scope(|s| {
            let reducer = s.spawn(move || -> Result<(f64, Vec<Span>), TrainError> {
                let mut busy = 0.0;
                // Bucket phases of the comm track (this thread's), when timed.
                let mut spans = PhaseLog::default();
                if timed {
                    spans.enable();
                }
                for (b, p, g) in rx {
                    crate::comm::phase::set_bucket(Some(b));
                    let t = Instant::now();
                    let off = buckets[b].params.start;
                    let mut update = |c: Range<usize>, p: &mut [f32], g: &[f32]| {
                        opt.update_range(off + c.start..off + c.end, p, g, lr)
                    };
                    comm.all_reduce_update(g, p, &mut update)?;
                    let end = Instant::now();
                    busy += (end - t).as_secs_f64();
                    spans.record(Track::Comm, "allreduce", Some(b), t, end);
                }
                crate::comm::phase::set_bucket(None);
                let mut out = Vec::new();
                spans.drain_into(&mut out);
                Ok((busy, out))
            });
            let mut sink = BucketSink { slices, buckets, bucket_of, tx };
            let stats = net.forward_backward_into(ctx, &mut sink, x, labels, denom);
            // Normally every bucket has gone; after an error the rest go anyway so the other
            // ranks are not left waiting for a bucket that never comes.
            for b in 0..sink.slices.len() {
                sink.send(b);
            }
            drop(sink);
            let t_wait = Instant::now();
            let busy = reducer
                .join()
                .unwrap_or_else(|_| Err(TrainError::Panicked("the gradient reducer thread panicked".into())));
            let waited = t_wait.elapsed().as_secs_f64();
            let (busy, spans) = busy?;
            if timed {
                // The update is fused into each bucket's reduction: no optimizer phase of its own.
                phases.record(Track::Compute, "forward_backward", None, t_fb, t_wait);
                phases.since(Track::Compute, "comm_wait", t_wait);
                for s in spans {
                    phases.push(s);
                }
            }
            Ok((stats?, busy, waited))
        })
    }

    /// The forward/backward passes of a step, `k` micro-batches (the last overlapped with the
    /// reduction when `overlap`).
    #[allow(clippy::too_many_arguments)]
    fn micro_batches(
        &mut self,
        net: &mut Net,
        ctx: &Ctx,
        params: &mut [f32],
        batch: &Batch,
        lr: f32,
        sync: Option<&dyn StatSync>,
        stats: &mut BatchStats,
        report: &mut StepReport,
    ) -> Result<(), TrainError> {
        let n = batch.labels.len();
        let k = self.cfg.accumulate.min(n.max(1));
        let overlap = self.cfg.overlap && self.comm.size() > 1 && n > 0 && !self.bn_on_main && !self.skip_nonfinite;
        for m in 0..k {
            let rows = even_range(n, m, k);
            let whole = k == 1;
            if !whole {
                copy_rows(&batch.x, rows.clone(), &mut self.micro);
            }
            let lctx = Ctx { sample_ids: &batch.ids[rows.clone()], sync, ..*ctx };
            let labels = &batch.labels[rows];
            if m + 1 == k && overlap {
                // The micro tensor is borrowed by the call, so take it out for the duration.
                let micro = std::mem::take(&mut self.micro);
                let x = if whole { &batch.x } else { &micro };
                let r = self.backward_overlapped(net, &lctx, params, x, labels, batch.global, lr);
                self.micro = micro;
                let (s, busy, waited) = r?;
                stats.add(&s);
                (report.comm_s, report.comm_wait_s) = (busy, waited);
            } else if n > 0 || sync.is_some() {
                // (An empty shard still takes part in SyncBatchNorm's sums.)
                let x = if whole { &batch.x } else { &self.micro };
                let t = Instant::now();
                stats.add(&net.forward_backward(&lctx, params, &mut self.grads, x, labels, batch.global)?);
                self.phases.since(Track::Compute, "forward_backward", t);
            }
        }
        Ok(())
    }

    /// `--deterministic`: every leaf into its own buffer, pairwise sum, fixed-order tree.
    fn step_deterministic(
        &mut self,
        net: &mut Net,
        ctx: &Ctx,
        params: &mut [f32],
        batch: &Batch,
        lr: f32,
    ) -> Result<StepReport, TrainError> {
        let mut stats = BatchStats::default();
        let t_fb = Instant::now();
        let per_worker = self.leaves.len();
        let first_leaf = self.comm.rank() * per_worker;
        for (k, leaf) in self.leaves.iter_mut().enumerate() {
            leaf.fill(0.0);
            let rows = even_range(batch.global, first_leaf + k, DETERMINISTIC_LEAVES);
            let local = rows.start - batch.offset..rows.end - batch.offset;
            if local.is_empty() {
                continue;
            }
            copy_rows(&batch.x, local.clone(), &mut self.micro);
            let lctx = Ctx { sample_ids: &batch.ids[local.clone()], ..*ctx };
            stats.add(&net.forward_backward(
                &lctx,
                params,
                leaf.as_mut_slice(),
                &self.micro,
                &batch.labels[local],
                batch.global,
            )?);
        }
        algorithms::pairwise_sum(&mut self.leaves);
        let t = Instant::now();
        algorithms::all_reduce_tree(self.comm, &mut self.leaves[0])?;
        let t_opt = Instant::now();
        let comm_s = (t_opt - t).as_secs_f64();
        let skipped =
            self.skip_nonfinite && nonfinite::agreed(nonfinite::any_nonfinite(&self.leaves[0]), &[self.comm])?;
        if !skipped {
            self.opt.step(params, &self.leaves[0], lr);
        }
        if self.phases.on() {
            self.phases.record(Track::Compute, "forward_backward", None, t_fb, t);
            self.phases.record(Track::Compute, "comm_wait", None, t, t_opt);
            self.phases.record(Track::Comm, "allreduce", None, t, t_opt);
            self.phases.since(Track::Compute, "optimizer", t_opt);
        }
        Ok(StepReport { stats, comm_s, comm_wait_s: comm_s, skipped })
    }
}

impl Strategy for AllReduce<'_> {
    fn init(&mut self, params: &mut [f32]) -> Result<(), TrainError> {
        self.comm.broadcast_into(params, 0)?;
        Ok(())
    }

    fn state_names(&self) -> Vec<&'static str> {
        self.opt.state().into_iter().map(|s| s.0).collect()
    }

    fn stop_now(&mut self, step: u64, world: usize) -> Result<bool, TrainError> {
        Ok(crate::train::stop::stop_now(self.comm, step, world)?)
    }

    fn optimizer_state(&mut self) -> Result<crate::optim::OptimizerState, TrainError> {
        // With the sharded update each worker's state is current only for the chunks it owns:
        // gather every bucket's chunks (the ownership of `all_reduce_update`) before copying.
        if !self.cfg.deterministic && self.comm.size() > 1 {
            for (_, buf) in self.opt.state_mut() {
                for b in &self.buckets {
                    algorithms::ring_all_gather_inplace(self.comm, &mut buf[b.params.clone()])?;
                }
            }
        }
        Ok(train::snapshot(self.opt.as_ref()))
    }

    fn restore(&mut self, state: &[(String, Vec<f32>)], steps: u64) -> Result<(), TrainError> {
        train::restore_optimizer(self.opt.as_mut(), state, steps)
    }

    fn record_phases(&mut self) {
        self.phases.enable();
    }

    fn take_phases(&mut self, out: &mut Vec<Span>) {
        self.phases.drain_into(out);
    }

    fn step(
        &mut self,
        net: &mut Net,
        ctx: &Ctx,
        params: &mut [f32],
        batch: &Batch,
        lr: f32,
    ) -> Result<StepReport, TrainError> {
        if self.cfg.deterministic {
            return self.step_deterministic(net, ctx, params, batch, lr);
        }
        self.grads.fill(0.0);
        if !self.skip_nonfinite {
            // (Skipping: the update, its step count included, waits for the look at the gradients.)
            self.opt.begin_step();
        }
        let overlap = self.cfg.overlap
            && self.comm.size() > 1
            && !batch.labels.is_empty()
            && !self.bn_on_main
            && !self.skip_nonfinite;
        let mut stats = BatchStats::default();
        let mut report = StepReport::default();
        // The batch-norm communicator is lent to the micro-batches (which borrow `self`).
        let bn_comm = self.bn_comm.take();
        let main = self.comm;
        let sync = bn_comm.as_deref().map(CommSync).or_else(|| self.bn_on_main.then_some(CommSync(main)));
        let r = self.micro_batches(
            net,
            ctx,
            params,
            batch,
            lr,
            sync.as_ref().map(|s| s as &dyn StatSync),
            &mut stats,
            &mut report,
        );
        self.bn_comm = bn_comm;
        r?;
        if self.skip_nonfinite {
            (report.comm_s, report.skipped) = self.reduce_check_update(params, lr)?;
            report.comm_wait_s = report.comm_s;
        } else if !overlap {
            report.comm_s = self.reduce_update_all(params, lr)?;
            report.comm_wait_s = report.comm_s;
        }
        net.commit_buffers(params);
        report.stats = stats;
        Ok(report)
    }
}

/// Copies rows `rows` of an (N, ...) tensor into `out`.
fn copy_rows(x: &Tensor, rows: Range<usize>, out: &mut Tensor) {
    let per = x.sample_len();
    let mut shape = x.shape().to_vec();
    shape[0] = rows.len();
    out.resize(&shape);
    out.data_mut().copy_from_slice(&x.data()[rows.start * per..rows.end * per]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::ModelSpec;

    #[test]
    fn buckets_cover_the_buffer_from_the_end_with_a_small_first_bucket() {
        let net = Net::build(&ModelSpec::resolve("lenet").unwrap()).unwrap();
        let layout = net.layout();
        let b = assign_buckets(layout, net.num_layers(), FIRST_BUCKET_BYTES, 25 << 20);
        // The first bucket closes at fc1 (6.4 MB ≥ 1 MiB); the convolutions make the second.
        assert_eq!(b.len(), 2, "{b:?}");
        assert_eq!(b[0].params.end, layout.len());
        assert_eq!(b[1].params.start, 0);
        assert_eq!(b[0].params.start, b[1].params.end);
        assert_eq!(b[1].layers.start, 0);
        assert_eq!(b[0].layers.end, net.num_layers());
        assert_eq!(b[0].layers.start, b[1].layers.end);
        // Tiny caps give one bucket per layer with parameters.
        let tiny = assign_buckets(layout, net.num_layers(), 4, 4);
        assert_eq!(tiny.len(), 4, "{tiny:?}");
        let mut next = layout.len();
        for x in &tiny {
            assert_eq!(x.params.end, next);
            next = x.params.start;
        }
        assert_eq!(next, 0);
    }
}
