//! Parameter server (DistBelief, TensorFlow's PS strategy, Petuum's SSP).
//!
//! `--servers k` server shards each own a contiguous slice of the flat parameter buffer (split
//! evenly by bytes) and the optimizer state of that slice, and run on their own threads (ranks
//! `workers..workers+k` of the communicator). A worker pushes its gradient slices to the servers
//! and pulls the new parameter slices back (one message pair per server per step).
//!
//! Modes:
//! - `sync`: a server waits for every worker's push, sums them in rank order and applies one
//!   update — SGD on the global batch, equal to single-worker training.
//! - `async`: every push is applied at once (as TensorFlow's asynchronous PS training does) and the
//!   pushing worker gets the newest parameters back. As in every mode, a worker's gradient is
//!   divided by the GLOBAL batch size, so each push carries 1/workers of a global step: the
//!   learning rate keeps its synchronous meaning (Downpour SGD with lr / workers), with one
//!   worker async equals sync, and the learning-rate schedule advances one step per `workers`
//!   updates, so it spans the run as in the other modes. (Dividing by the worker's own shard
//!   instead makes each update `workers` times larger; with momentum 0.9 and stale gradients that
//!   measurably hurt: 97.9 % instead of ≥ 98.8 % on MNIST with 4 workers.)
//! - `ssp`: as async, but a worker may start step c only when c − (slowest worker's finished
//!   steps) ≤ s (`--staleness s`): the server holds its reply until then.
//!
//! Checkpoints (docs/checkpoints.md): the servers know from the run's `CheckpointPolicy` at which
//! steps the workers write one, without being asked. After the update of such a step N a server
//! sends its slice of the optimizer state (and its update count) to worker 0, which gathers the
//! slices of every server into the full, named buffers of the checkpoint; the parameters worker 0
//! pulled after step N are the servers' parameters at that point. In sync mode that point is
//! simply the end of global step N. In async and SSP modes it is made consistent by a pause: a
//! worker that has pushed its step N is not answered until every worker has pushed step N, so the
//! servers hold exactly the N·workers updates of global batches 1..N (and none beyond) when they
//! take the snapshot; then every worker is released. A checkpoint therefore always describes
//! "N global batches consumed", in the same folder format as the other strategies, and resumes
//! under any strategy and worker count. On resume every server reads its slice of the optimizer
//! state from the checkpoint itself.
//!
//! Control messages: with every push a worker sends each server a small control message (did it see
//! SIGINT/SIGTERM, are its gradients non-finite under `--on-nonfinite skip`, and the stop step it
//! knows of), and with every reply a server sends one back (the stop step, whether the update of
//! that push was skipped).
//!
//! Stopping on a signal (docs/checkpoints.md): every worker must stop after the same global step
//! N, so that a checkpoint means "N global batches consumed". In sync mode every server sees every
//! worker's control message of a step, so all decide alike: stop after this step. In async and SSP
//! modes server 0 decides: N = (the most steps any worker has pushed to it) + 2. No worker can
//! be past N − 2 at that moment, and a worker pushes step N only after server 0 has answered its
//! step N − 1, with N in the answer: so every push of step N carries N to every server, which
//! holds it there as for a checkpoint until every worker has pushed step N, sends its state for
//! the checkpoint, and releases everyone with N in the reply; then the workers stop.
//!
//! `--on-nonfinite skip`: a worker looks at its own gradient before pushing it. In sync mode a
//! server skips the update of a step if any worker's gradient of that step was not finite (every
//! server knows the same flags, so all skip alike, as one worker would on the global batch); in
//! async and SSP modes each server drops that push. The reply says so.
//!
//! Staleness of an update = updates applied to the server between the worker's pull and its push.
//! Under SSP with bound s it is at most (workers − 1)(2s + 1): while a worker computes, each other
//! worker can finish at most 2s + 1 steps before it is held back.

use crate::checkpoint;
use crate::comm::Communicator;
use crate::data::loader::Batch;
use crate::data::sampler::Sampler;
use crate::layers::Ctx;
use crate::net::Net;
use crate::optim::{schedule::LrSchedule, Optimizer, OptimizerConfig};
use crate::ranges::even_range;
use crate::train::events::Track;
use crate::train::{
    events::Event, nonfinite, restore_optimizer, CheckpointPolicy, StepReport, Strategy, TrainConfig, TrainError,
};
use std::ops::Range;
use std::time::Instant;

mod server;
pub use server::{Server, Staleness};

const TAG_INIT: u32 = 0x5000_0001;
const TAG_PUSH: u32 = 0x5000_0002;
const TAG_PARAMS: u32 = 0x5000_0003;
const TAG_FINAL: u32 = 0x5000_0004;
const TAG_STATE: u32 = 0x5000_0005;
const TAG_PUSH_CTRL: u32 = 0x5000_0006;
const TAG_REPLY_CTRL: u32 = 0x5000_0007;

/// A step number in two f32s (bit patterns, never added), 0 meaning none.
fn put_step(step: Option<u64>) -> [f32; 2] {
    let v = step.unwrap_or(0);
    [f32::from_bits(v as u32), f32::from_bits((v >> 32) as u32)]
}

fn get_step(v: [f32; 2]) -> Option<u64> {
    let s = u64::from(v[0].to_bits()) | (u64::from(v[1].to_bits()) << 32);
    (s != 0).then_some(s)
}

/// What a worker tells every server with a push.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct PushCtrl {
    /// The worker's process has seen SIGINT/SIGTERM.
    signal: bool,
    /// `--on-nonfinite skip` and this push holds a NaN or an infinity.
    nonfinite: bool,
    /// The step after which everyone stops, once the worker knows it.
    stop_at: Option<u64>,
}

impl PushCtrl {
    fn encode(&self) -> [f32; 4] {
        let s = put_step(self.stop_at);
        [f32::from(u8::from(self.signal)), f32::from(u8::from(self.nonfinite)), s[0], s[1]]
    }

    fn decode(m: &[f32; 4]) -> PushCtrl {
        PushCtrl { signal: m[0] > 0.0, nonfinite: m[1] > 0.0, stop_at: get_step([m[2], m[3]]) }
    }
}

/// What a server tells a worker with the parameters it sends back.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct ReplyCtrl {
    /// The step after which everyone stops, once the server knows it.
    stop_at: Option<u64>,
    /// The update of the worker's push (sync: of the whole step) was skipped.
    skipped: bool,
}

impl ReplyCtrl {
    fn encode(&self) -> [f32; 3] {
        let s = put_step(self.stop_at);
        [s[0], s[1], f32::from(u8::from(self.skipped))]
    }

    fn decode(m: &[f32; 3]) -> ReplyCtrl {
        ReplyCtrl { stop_at: get_step([m[0], m[1]]), skipped: m[2] > 0.0 }
    }
}

/// Consistency of the parameter server (`--ps-mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsMode {
    /// Bulk-synchronous: one update per global step.
    Sync,
    /// Every push applied at once.
    Async,
    /// Stale-synchronous parallel with this bound on how far a worker runs ahead.
    Ssp {
        /// Steps a worker may run ahead of the slowest.
        staleness: u64,
    },
}

/// Settings of `--strategy ps`.
#[derive(Clone, Debug, PartialEq)]
pub struct PsConfig {
    /// Consistency mode.
    pub mode: PsMode,
    /// Server shards.
    pub servers: usize,
}

impl PsConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), TrainError> {
        if self.servers == 0 || self.servers > 64 {
            return Err(TrainError::Config(format!("--servers {} must be between 1 and 64", self.servers)));
        }
        Ok(())
    }
}

/// The slice of the flat buffer server `s` of `k` owns.
pub fn server_range(len: usize, s: usize, k: usize) -> Range<usize> {
    even_range(len, s, k)
}

/// A worker's side: push gradients, pull parameters.
pub struct Client<'c> {
    comm: &'c dyn Communicator,
    workers: usize,
    ranges: Vec<Range<usize>>,
    grads: Vec<f32>,
    /// Names of the optimizer's state buffers (which live on the servers).
    state_names: Vec<&'static str>,
    phases: crate::train::timeline::PhaseLog,
    /// The model's buffers (BatchNorm's running statistics) and this worker's values of them:
    /// they are the worker's own, as under DDP without SyncBatchNorm (worker 0's are evaluated
    /// and saved), so a pull does not replace them.
    buffers: Vec<Range<usize>>,
    kept: Vec<f32>,
    /// `--on-nonfinite skip`: look at the gradient before pushing it.
    skip_nonfinite: bool,
    /// The step after which every worker stops (a signal), once a server has said so.
    stop_at: Option<u64>,
}

impl<'c> Client<'c> {
    /// The client of the worker holding `comm` (ranks ≥ `workers` are the servers), whose
    /// servers run `optimizer`.
    /// `buffers`: the ranges of the model's buffers (`ParamLayout::buffer_ranges`).
    pub fn new(
        comm: &'c dyn Communicator,
        workers: usize,
        cfg: &PsConfig,
        len: usize,
        optimizer: &OptimizerConfig,
        buffers: Vec<Range<usize>>,
    ) -> Result<Client<'c>, TrainError> {
        let ranges = (0..cfg.servers).map(|s| server_range(len, s, cfg.servers)).collect();
        // (Built for one value: SGD without momentum has no buffer, and with momentum one only
        // when its length is not zero.)
        let state_names = optimizer.build(1)?.state().into_iter().map(|s| s.0).collect();
        Ok(Client {
            comm,
            workers,
            ranges,
            grads: vec![0.0; len],
            state_names,
            phases: Default::default(),
            buffers,
            kept: Vec::new(),
            skip_nonfinite: false,
            stop_at: None,
        })
    }

    /// `--on-nonfinite skip`: the servers skip a non-finite gradient (see the module docs).
    pub fn skip_nonfinite(mut self, on: bool) -> Client<'c> {
        self.skip_nonfinite = on;
        self
    }

    /// Puts this worker's buffers back after a pull.
    fn restore_buffers(&self, params: &mut [f32]) {
        let mut at = 0;
        for r in &self.buffers {
            params[r.clone()].copy_from_slice(&self.kept[at..at + r.len()]);
            at += r.len();
        }
    }

    fn keep_buffers(&mut self, params: &[f32]) {
        self.kept.clear();
        for r in &self.buffers {
            self.kept.extend_from_slice(&params[r.clone()]);
        }
    }

    /// Receives every shard's parameters, worker w from server w first (as servers take the
    /// workers' pushes): a transport that moves a long message only once its receive is posted
    /// (MPI's rendezvous) would otherwise have every worker wait for server 0 first — whose link
    /// then carries all the workers' shards while the other servers idle (2 workers and 2
    /// servers on 4 emulated hosts pulled in twice the time their links allow).
    fn pull(&self, params: &mut [f32], tag: u32) -> Result<(), TrainError> {
        let k = self.ranges.len();
        for i in 0..k {
            let s = (self.comm.rank() + i) % k;
            self.comm.recv(&mut params[self.ranges[s].clone()], self.workers + s, tag)?;
        }
        Ok(())
    }
}

impl Strategy for Client<'_> {
    fn init(&mut self, params: &mut [f32]) -> Result<(), TrainError> {
        if self.comm.rank() == 0 {
            for (s, r) in self.ranges.iter().enumerate() {
                self.comm.send(&params[r.clone()], self.workers + s, TAG_INIT)?;
            }
        }
        self.pull(params, TAG_PARAMS)?;
        self.keep_buffers(params);
        Ok(())
    }

    fn step(
        &mut self,
        net: &mut Net,
        ctx: &Ctx,
        params: &mut [f32],
        batch: &Batch,
        _lr: f32,
    ) -> Result<StepReport, TrainError> {
        let t_fb = Instant::now();
        self.grads.fill(0.0);
        let stats = if batch.labels.is_empty() {
            Default::default()
        } else {
            net.forward_backward(ctx, params, self.grads.as_mut_slice(), &batch.x, &batch.labels, batch.global)?
        };
        let t = Instant::now();
        let ctrl = PushCtrl {
            signal: crate::train::stop::requested().is_some(),
            nonfinite: self.skip_nonfinite && nonfinite::any_nonfinite(&self.grads),
            stop_at: self.stop_at,
        }
        .encode();
        for (s, r) in self.ranges.iter().enumerate() {
            self.comm.send(&ctrl, self.workers + s, TAG_PUSH_CTRL)?;
            self.comm.send(&self.grads[r.clone()], self.workers + s, TAG_PUSH)?;
        }
        self.pull(params, TAG_PARAMS)?;
        let mut skipped = false;
        for s in 0..self.ranges.len() {
            let mut m = [0.0f32; 3];
            self.comm.recv(&mut m, self.workers + s, TAG_REPLY_CTRL)?;
            let reply = ReplyCtrl::decode(&m);
            skipped |= reply.skipped;
            self.stop_at = self.stop_at.or(reply.stop_at);
        }
        self.restore_buffers(params);
        net.commit_buffers(params);
        self.keep_buffers(params);
        let comm_s = t.elapsed().as_secs_f64();
        if self.phases.on() {
            // The worker does nothing else while it pushes and pulls (the update is the servers').
            let end = Instant::now();
            self.phases.record(Track::Compute, "forward_backward", None, t_fb, t);
            self.phases.record(Track::Compute, "comm_wait", None, t, end);
            self.phases.record(Track::Comm, "push_pull", None, t, end);
        }
        Ok(StepReport { stats, comm_s, comm_wait_s: comm_s, skipped })
    }

    fn record_phases(&mut self) {
        self.phases.enable();
    }

    fn take_phases(&mut self, out: &mut Vec<crate::train::timeline::Span>) {
        self.phases.drain_into(out);
    }

    fn finish(&mut self, params: &mut [f32]) -> Result<(), TrainError> {
        if self.comm.rank() == 0 {
            self.pull(params, TAG_FINAL)?;
            self.restore_buffers(params);
        }
        Ok(())
    }

    // The servers fix the step after which everyone stops (see the module docs).
    fn stop_now(&mut self, step: u64, _world: usize) -> Result<bool, TrainError> {
        Ok(self.stop_at == Some(step))
    }

    fn state_names(&self) -> Vec<&'static str> {
        self.state_names.clone()
    }

    // Worker 0 gathers every server's slice of the state, sent after the update of a checkpoint
    // step (see the module docs); the other workers have nothing to add.
    fn optimizer_state(&mut self) -> Result<crate::optim::OptimizerState, TrainError> {
        if self.comm.rank() != 0 {
            return Ok((Vec::new(), 0));
        }
        let len = self.grads.len();
        let mut state: Vec<(&'static str, Vec<f32>)> = self.state_names.iter().map(|n| (*n, vec![0.0; len])).collect();
        let mut steps = 0;
        for (s, r) in self.ranges.iter().enumerate() {
            let mut msg = vec![0.0f32; 2 + state.len() * r.len()];
            self.comm.recv(&mut msg, self.workers + s, TAG_STATE)?;
            steps = u64::from(msg[0].to_bits()) | (u64::from(msg[1].to_bits()) << 32);
            for (i, (_, buf)) in state.iter_mut().enumerate() {
                buf[r.clone()].copy_from_slice(&msg[2 + i * r.len()..2 + (i + 1) * r.len()]);
            }
        }
        Ok((state, steps))
    }

    // Every server reads its slice of the state from the checkpoint itself (`Server::new`).
    fn restore(&mut self, _state: &[(String, Vec<f32>)], _steps: u64) -> Result<(), TrainError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_split_the_buffer_evenly() {
        let r: Vec<_> = (0..3).map(|s| server_range(10, s, 3)).collect();
        assert_eq!(r, vec![0..4, 4..7, 7..10]);
    }
}
