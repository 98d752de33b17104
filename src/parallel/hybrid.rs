//! Hybrid parallelism of Krizhevsky's "One weird trick for parallelizing convolutional neural
//! networks" (2014) and Intel's multi-node Caffe, `--strategy hybrid --dp D --mp M`: the
//! convolutional layers (few parameters, most of the arithmetic) are data-parallel across all
//! D × M workers; the fully connected classifier (most of the parameters, little arithmetic) is
//! model-parallel in groups of M workers, column- then row-parallel as in `tensor`.
//!
//! Worker r = d·M + m trains on shard r of each global batch through the convolutions; the M
//! workers of group d then all-gather their last convolutional activations (the group's batch),
//! each runs its slice of the classifier on the whole group batch, the row-parallel layer's
//! partial logits are all-reduced in the group, and every member computes the loss of the group
//! batch. Backward returns the gradient of the convolutional activations as partial sums, which
//! the group all-reduces before each worker keeps its own rows and runs the convolutions' backward
//! on its shard. The convolutions' gradients are all-reduced across all workers (data
//! parallelism), each classifier slice's across the D workers that hold it. So activations cross
//! the network instead of the classifier's weight gradients: fewer bytes whenever the batch's
//! activations are smaller than the classifier.

use super::data_parallel::CommSync;
use super::tensor_parallel::{self, Maps, Sliced, SplitNet};
use crate::comm::Communicator;
use crate::data::loader::Batch;
use crate::layers::softmax_xent::{correct_topk, SoftmaxCrossEntropy};
use crate::layers::Ctx;
use crate::net::{BatchStats, Flat, LayerSpec, ModelSpec, Net};
use crate::optim::Optimizer;
use crate::ranges::even_range;
use crate::tensor::Tensor;
use crate::train::events::{Event, Track};
use crate::train::timeline::{PhaseLog, Span};
use crate::train::{nonfinite, StepReport, Strategy, TrainConfig, TrainError};
use std::ops::Range;
use std::time::Instant;

const TAG_ROWS: u32 = 0xA000_0001;
const TAG_LABELS: u32 = 0xA000_0002;

/// Settings of `--strategy hybrid --dp D --mp M`.
#[derive(Clone, Debug, PartialEq)]
pub struct HybridConfig {
    /// Data-parallel groups.
    pub dp: usize,
    /// Classifier slices per group.
    pub mp: usize,
    /// Batch norm in the convolutions over the global batch (SyncBatchNorm over all workers,
    /// `--batch-norm sync`, the default) or over each worker's shard (`local`).
    pub sync_batch_norm: bool,
}

impl HybridConfig {
    /// Checks the settings against the run.
    pub fn validate(&self, workers: usize, cfg: &TrainConfig) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.dp == 0 || self.mp < 2 {
            return bad(format!(
                "--dp {} --mp {}: need --dp ≥ 1 and --mp ≥ 2; hint: --mp 1 is plain data parallelism",
                self.dp, self.mp
            ));
        }
        let all = self.dp * self.mp;
        if workers != 1 && workers != all {
            return bad(format!(
                "--strategy hybrid runs --dp × --mp = {all} workers, not --workers {workers}; hint: drop --workers"
            ));
        }
        if cfg.batch_size < all {
            return bad(format!("--batch-size {} is smaller than the {all} workers", cfg.batch_size));
        }
        let (_, fc) = split_model(&cfg.model)?;
        tensor_parallel::plan(&fc, self.mp - 1, self.mp)?;
        Ok(())
    }
}

/// The convolutional part (up to the first Linear layer) and the classifier of `spec`.
pub fn split_model(spec: &ModelSpec) -> Result<(ModelSpec, ModelSpec), TrainError> {
    let cut = spec.layers.iter().position(|l| matches!(l, LayerSpec::Linear { .. })).ok_or_else(|| {
        TrainError::Config(format!(
            "--strategy hybrid: model '{}' has no fully connected layer to split; hint: use --strategy allreduce",
            spec.name
        ))
    })?;
    if cut == 0 {
        return Err(TrainError::Config(format!(
            "--strategy hybrid: model '{}' starts with a fully connected layer; hint: use --strategy tensor",
            spec.name
        )));
    }
    let full = Net::build(spec)?;
    let conv = spec.slice(0..cut, spec.input.clone(), format!("{}-features", spec.name)).map_err(TrainError::Config)?;
    let fc = spec
        .slice(cut..spec.layers.len(), full.layer_out_shape(cut - 1), format!("{}-classifier", spec.name))
        .map_err(TrainError::Config)?;
    Ok((conv, fc))
}

/// The hybrid strategy of one worker.
pub struct Hybrid<'c> {
    world: &'c dyn Communicator,
    /// The M workers of this group (rank = slice).
    group: &'c dyn Communicator,
    /// The D workers holding this slice (rank = group).
    replicas: &'c dyn Communicator,
    cfg: HybridConfig,
    model: ModelSpec,
    conv: Net,
    /// This worker's slices of the classifier (on the group).
    fc: SplitNet<'c>,
    fc_maps: Maps,
    /// The whole model's layout.
    full: crate::net::ParamLayout,
    /// Convolution parameters (whole), then the classifier slices.
    params: Vec<f32>,
    grads: Vec<f32>,
    conv_len: usize,
    opt: Box<dyn Optimizer>,
    /// `--on-nonfinite skip`.
    skip_nonfinite: bool,
    /// SyncBatchNorm in the convolutions (see `HybridConfig::sync_batch_norm`).
    sync_bn: bool,
    loss: SoftmaxCrossEntropy,
    full_bytes: usize,
    comm_s: f64,
    /// Phases of the step, for the timeline: forward/backward of the convolutions and of each
    /// classifier segment (`micro` = segment), optimizer; gathers and all-reduces on the comm track.
    phases: PhaseLog,
}

impl<'c> Hybrid<'c> {
    /// The strategy of worker `world.rank()`; `group` and `replicas` as above.
    pub fn new(
        world: &'c dyn Communicator,
        group: &'c dyn Communicator,
        replicas: &'c dyn Communicator,
        cfg: HybridConfig,
        run: &TrainConfig,
        net: &Net,
    ) -> Result<Hybrid<'c>, TrainError> {
        let (conv_spec, fc_spec) = split_model(&run.model)?;
        let conv = Net::build_segment(&conv_spec, 0)?;
        let fc_first = conv_spec.layers.len();
        let (fc, fc_maps, fc_len) = SplitNet::build(group, &fc_spec, fc_first)?;
        let conv_len = conv.layout().len();
        let fc_maps = fc_maps.into_iter().map(|(n, c, r)| (n, c, r.start + conv_len..r.end + conv_len)).collect();
        let len = conv_len + fc_len;
        let mut mults = conv.layout().mult_ranges();
        mults.extend(fc.mults().into_iter().map(|(r, m)| (r.start + conv_len..r.end + conv_len, m)));
        let sync_bn = cfg.sync_batch_norm && conv.has_buffers() && world.size() > 1;
        Ok(Hybrid {
            sync_bn,
            world,
            group,
            replicas,
            cfg,
            model: run.model.clone(),
            conv,
            fc,
            fc_maps,
            full: net.layout().clone(),
            params: vec![0.0; len],
            grads: vec![0.0; len],
            conv_len,
            skip_nonfinite: run.on_nonfinite == nonfinite::OnNonFinite::Skip,
            opt: run.optimizer.build_scaled(len, mults)?,
            loss: SoftmaxCrossEntropy::new(),
            full_bytes: net.layout().len() * 4,
            comm_s: 0.0,
            phases: PhaseLog::default(),
        })
    }

    /// Rows of the global batch of `n` that group member `m` trained on.
    fn member_rows(&self, n: usize, m: usize) -> Range<usize> {
        let d = self.world.rank() / self.cfg.mp;
        even_range(n, d * self.cfg.mp + m, self.world.size())
    }

    /// All-gathers per-sample rows in the group: `mine` (n_m, …) → (group rows, …).
    fn gather_rows(&mut self, mine: &[f32], per: usize, global: usize, tag: u32) -> Result<Vec<f32>, TrainError> {
        let t = Instant::now();
        let (m, mp) = (self.group.rank(), self.group.size());
        for v in (0..mp).filter(|&v| v != m) {
            self.group.send(mine, v, tag)?;
        }
        let first = self.member_rows(global, 0).start;
        let rows = first..self.member_rows(global, mp - 1).end;
        let mut out = vec![0.0f32; rows.len() * per];
        for v in 0..mp {
            let r = self.member_rows(global, v);
            let dst = &mut out[(r.start - first) * per..(r.end - first) * per];
            if v == m {
                dst.copy_from_slice(mine);
            } else {
                self.group.recv(dst, v, tag)?;
            }
        }
        self.comm_s += t.elapsed().as_secs_f64();
        Ok(out)
    }
}

impl Strategy for Hybrid<'_> {
    fn init(&mut self, params: &mut [f32]) -> Result<(), TrainError> {
        self.world.broadcast_into(params, 0)?;
        let full = Net::build(&self.model)?;
        // The convolutions come first in both layouts.
        self.params[..self.conv_len].copy_from_slice(&params[..self.conv_len]);
        tensor_parallel::copy(&self.fc_maps, full.layout(), params, &mut self.params, true)
    }

    // Long: one training step of data-parallel convolutions and a model-parallel classifier: the exchanges between
    // the two parts are in the order they happen.
    fn step(
        &mut self,
        _net: &mut Net,
        ctx: &Ctx,
        _params: &mut [f32],
        batch: &Batch,
        lr: f32,
    ) -> Result<StepReport, TrainError> {
        let comm0 = self.comm_s;
        self.grads.fill(0.0);
        let global = batch.global;
        let n_mine = batch.labels.len();
        // Convolutions on this worker's shard.
        let p = self.phases.start();
        // SyncBatchNorm: the convolutions' batch statistics over every worker's shard (the
        // global batch), on the world communicator (nothing else is in flight on it meanwhile).
        let bn = self.sync_bn.then_some(CommSync(self.world));
        // (Only the convolutions: the classifier runs on the group batch with its own statistics.)
        let cctx = Ctx { sync: bn.as_ref().map(|s| s as &dyn crate::layers::StatSync), ..*ctx };
        let conv_out = self
            .conv
            .forward_layers(&cctx, &self.params[..self.conv_len], 0..self.conv.num_layers(), &batch.x)?
            .clone();
        self.phases.end(Track::Compute, "forward", None, p);
        let p = self.phases.start();
        let per: usize = conv_out.shape()[1..].iter().product();
        let feats = self.gather_rows(conv_out.data(), per, global, TAG_ROWS)?;
        let labels_f: Vec<f32> = batch.labels.iter().map(|&l| l as f32).collect();
        let labels: Vec<u32> = self.gather_rows(&labels_f, 1, global, TAG_LABELS)?.iter().map(|&l| l as u32).collect();
        self.phases.end(Track::Comm, "all_gather", None, p);
        let group_rows = labels.len();
        let mut shape = conv_out.shape().to_vec();
        shape[0] = group_rows;
        let x = Tensor::from_vec(&shape, feats).map_err(|e| TrainError::Internal(e.to_string()))?;
        // The classifier slices on the group batch (sample ids of the whole group for dropout).
        let gids = self.group_sample_ids(batch)?;
        let gctx = Ctx { sample_ids: &gids, ..*ctx };
        let (cl, fc0) = (self.conv_len, self.fc.comm_s);
        let logits = self.fc.forward(&gctx, &self.params[cl..], &x, &mut self.phases)?;
        let loss_sum = self.loss.forward(logits, &labels).map_err(crate::net::NetError::Loss)?;
        let mut s = [loss_sum as f32, correct_topk(logits, &labels, 1) as f32, group_rows as f32];
        let mut dy = Tensor::default();
        dy.resize(logits.shape());
        self.loss.backward(&labels, global.max(1), &mut dy);
        let mine = self.member_rows(global, self.group.rank());
        let first = self.member_rows(global, 0).start;
        let mut sink = Flat { params: &self.params[cl..], grads: &mut self.grads[cl..] };
        let dx = self
            .fc
            .backward(&gctx, &mut sink, &x, &dy, true, &mut self.phases)?
            .ok_or_else(|| TrainError::Internal("no feature gradient".into()))?;
        // dx: the whole gradient of the group's convolutional features (the split net summed its
        // partial sums over the group); keep my rows.
        let mut dconv = Tensor::default();
        let mut cshape = conv_out.shape().to_vec();
        cshape[0] = n_mine;
        dconv.resize(&cshape);
        dconv.data_mut().copy_from_slice(&dx.data()[(mine.start - first) * per..(mine.end - first) * per]);
        let comm_fc = self.fc.comm_s - fc0;
        let p = self.phases.start();
        let mut sink = Flat { params: &self.params[..cl], grads: &mut self.grads[..cl] };
        self.conv.backward_layers(&cctx, &mut sink, 0..self.conv.num_layers(), &batch.x, Some(&dconv), false)?;
        self.phases.end(Track::Compute, "backward", None, p);
        // Data parallelism: the convolutions over all workers, each slice over its replicas.
        let t = Instant::now();
        self.world.all_reduce_into(&mut self.grads[..cl])?;
        self.replicas.all_reduce_into(&mut self.grads[cl..])?;
        // Loss statistics of the whole batch (each group's members hold the same).
        self.world.all_reduce_into(&mut s)?;
        self.comm_s += t.elapsed().as_secs_f64() + comm_fc;
        self.phases.end(Track::Comm, "allreduce", None, Some(t));
        // `--on-nonfinite skip`: every worker looks at its gradients and all agree.
        let skipped = self.skip_nonfinite && nonfinite::agreed(nonfinite::any_nonfinite(&self.grads), &[self.world])?;
        let p = self.phases.start();
        if !skipped {
            self.opt.step(&mut self.params, &self.grads, lr);
        }
        // Batch-norm statistics of the convolutions: the global batch's under SyncBatchNorm
        // (the same on every worker), else each worker's own shard's (worker 0's are saved).
        self.conv.commit_buffers(&mut self.params[..self.conv_len]);
        self.fc.commit_buffers(&mut self.params[self.conv_len..]);
        self.phases.end(Track::Compute, "optimizer", None, p);
        let mp = self.cfg.mp as f64;
        let stats = BatchStats {
            loss_sum: s[0] as f64 / mp,
            correct: (s[1] as f64 / mp).round() as usize,
            samples: (s[2] as f64 / mp).round() as usize,
        };
        let comm = self.comm_s - comm0;
        Ok(StepReport { stats, comm_s: comm, comm_wait_s: comm, skipped })
    }

    fn finish(&mut self, params: &mut [f32]) -> Result<(), TrainError> {
        // The lead's buffer gets the whole net (evaluation, saving), as at a checkpoint.
        self.checkpoint_params(params)
    }

    fn stop_now(&mut self, step: u64, world: usize) -> Result<bool, TrainError> {
        Ok(crate::train::stop::stop_now(self.world, step, world)?)
    }

    fn state_names(&self) -> Vec<&'static str> {
        self.opt.state().into_iter().map(|s| s.0).collect()
    }

    fn owns_params(&self) -> bool {
        true
    }

    fn own_params(&self) -> Option<&[f32]> {
        Some(&self.params)
    }

    fn checkpoint_params(&mut self, params: &mut [f32]) -> Result<(), TrainError> {
        let full = self.gather(&self.params, self.full.len())?;
        if params.len() == full.len() {
            params.copy_from_slice(&full);
        }
        Ok(())
    }

    fn optimizer_state(&mut self) -> Result<crate::optim::OptimizerState, TrainError> {
        let mut out = Vec::new();
        for (name, buf) in self.opt.state() {
            out.push((name, self.gather(buf, self.full.len())?));
        }
        Ok((out, self.opt.steps()))
    }

    fn restore(&mut self, state: &[(String, Vec<f32>)], steps: u64) -> Result<(), TrainError> {
        let owned = Parts {
            conv_len: self.conv_len,
            fc: Sliced { maps: &self.fc_maps, layout: &self.full },
            conv: true,
            classifier: true,
        };
        super::owned::restore_split(self.opt.as_mut(), &owned, state, steps)
    }

    fn record_phases(&mut self) {
        self.phases.enable();
    }

    fn take_phases(&mut self, out: &mut Vec<Span>) {
        self.phases.drain_into(out);
    }

    fn final_events(&self) -> Vec<Event> {
        vec![Event::Split {
            rank: self.world.rank(),
            param_bytes: self.params.len() * 4,
            full_param_bytes: self.full_bytes,
        }]
    }
}

/// A hybrid worker's buffer: the convolutions (whole, first in both layouts), then its classifier
/// slices. `conv`/`classifier`: whether this worker writes that part into the whole vector (one
/// owner per value: worker 0 for the replicated convolutions, group 0 for the slices).
struct Parts<'a> {
    conv_len: usize,
    fc: Sliced<'a>,
    conv: bool,
    classifier: bool,
}

impl super::owned::Owned for Parts<'_> {
    fn write_full(&self, mine: &[f32], full: &mut [f32]) -> Result<(), TrainError> {
        if self.conv {
            full[..self.conv_len].copy_from_slice(&mine[..self.conv_len]);
        }
        if self.classifier {
            self.fc.write_full(mine, full)?;
        }
        Ok(())
    }

    fn read_full(&self, full: &[f32], mine: &mut [f32]) -> Result<(), TrainError> {
        mine[..self.conv_len].copy_from_slice(&full[..self.conv_len]);
        self.fc.read_full(full, mine)
    }
}

impl Hybrid<'_> {
    /// The whole vector of a buffer in this worker's layout, on every worker.
    fn gather(&self, mine: &[f32], len: usize) -> Result<Vec<f32>, TrainError> {
        let me = self.world.rank();
        let owned = Parts {
            conv_len: self.conv_len,
            fc: Sliced { maps: &self.fc_maps, layout: &self.full },
            conv: me == 0,
            classifier: me < self.cfg.mp,
        };
        let world = self.world;
        super::owned::gather_full(&owned, mine, len, true, &mut |v| Ok(world.all_reduce_into(v)?))
    }

    /// Global sample ids of the group's batch, in row order (dropout masks follow them).
    fn group_sample_ids(&mut self, batch: &Batch) -> Result<Vec<u64>, TrainError> {
        // Ids are exchanged as two f32 halves each (exact for ids below 2^48).
        let enc: Vec<f32> = batch.ids.iter().flat_map(|&i| [(i >> 24) as f32, (i & 0xFF_FFFF) as f32]).collect();
        let all = self.gather_rows(&enc, 2, batch.global, TAG_ROWS + 10)?;
        Ok(all.chunks(2).map(|p| ((p[0] as u64) << 24) | p[1] as u64).collect())
    }
}
