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
//! Staleness of an update = updates applied to the server between the worker's pull and its push.
//! Under SSP with bound s it is at most (workers − 1)(2s + 1): while a worker computes, each other
//! worker can finish at most 2s + 1 steps before it is held back.

use crate::comm::{chunk_range, Communicator};
use crate::data::loader::Batch;
use crate::layers::Ctx;
use crate::net::Net;
use crate::optim::{schedule::LrSchedule, Optimizer};
use crate::train::{events::Event, StepReport, Strategy, TrainConfig, TrainError};
use std::ops::Range;
use std::time::Instant;
use crate::train::events::Track;

const TAG_INIT: u32 = 0x5000_0001;
const TAG_PUSH: u32 = 0x5000_0002;
const TAG_PARAMS: u32 = 0x5000_0003;
const TAG_FINAL: u32 = 0x5000_0004;

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
    chunk_range(len, s, k)
}

/// A worker's side: push gradients, pull parameters.
pub struct Client<'c> {
    comm: &'c dyn Communicator,
    workers: usize,
    ranges: Vec<Range<usize>>,
    grads: Vec<f32>,
    phases: crate::train::timeline::PhaseLog,
}

impl<'c> Client<'c> {
    /// The client of the worker holding `comm` (ranks ≥ `workers` are the servers).
    pub fn new(comm: &'c dyn Communicator, workers: usize, cfg: &PsConfig, len: usize) -> Client<'c> {
        let ranges = (0..cfg.servers).map(|s| server_range(len, s, cfg.servers)).collect();
        Client { comm, workers, ranges, grads: vec![0.0; len], phases: Default::default() }
    }

    fn pull(&self, params: &mut [f32], tag: u32) -> Result<(), TrainError> {
        for (s, r) in self.ranges.iter().enumerate() {
            self.comm.recv(&mut params[r.clone()], self.workers + s, tag)?;
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
        self.pull(params, TAG_PARAMS)
    }

    fn step(&mut self, net: &mut Net, ctx: &Ctx, params: &mut [f32], batch: &Batch, _lr: f32) -> Result<StepReport, TrainError> {
        let t_fb = Instant::now();
        self.grads.fill(0.0);
        let stats = if batch.labels.is_empty() {
            Default::default()
        } else {
            net.forward_backward(ctx, params, self.grads.as_mut_slice(), &batch.x, &batch.labels, batch.global)?
        };
        let t = Instant::now();
        for (s, r) in self.ranges.iter().enumerate() {
            self.comm.send(&self.grads[r.clone()], self.workers + s, TAG_PUSH)?;
        }
        self.pull(params, TAG_PARAMS)?;
        let comm_s = t.elapsed().as_secs_f64();
        if self.phases.on() {
            // The worker does nothing else while it pushes and pulls (the update is the servers').
            let end = Instant::now();
            self.phases.record(Track::Compute, "forward_backward", None, t_fb, t);
            self.phases.record(Track::Compute, "comm_wait", None, t, end);
            self.phases.record(Track::Comm, "push_pull", None, t, end);
        }
        Ok(StepReport { stats, comm_s, comm_wait_s: comm_s })
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
        }
        Ok(())
    }

    // Asynchronous workers are not in lockstep, and the servers expect every push: a signal
    // does not stop this strategy early (a second one ends the process).
    fn can_stop_early(&self) -> bool {
        false
    }

    // The optimizer state lives on the servers; `ParallelConfig::validate` refuses checkpoints
    // and resume with this strategy before a run starts.
    fn state_names(&self) -> Vec<&'static str> {
        Vec::new()
    }

    fn optimizer_state(&mut self) -> Result<(Vec<(&'static str, Vec<f32>)>, u64), TrainError> {
        Err(TrainError::Config(PS_CHECKPOINTS.into()))
    }

    fn restore(&mut self, _state: &[(String, Vec<f32>)], _steps: u64) -> Result<(), TrainError> {
        Err(TrainError::Config(PS_CHECKPOINTS.into()))
    }
}

/// Why `--strategy ps` refuses checkpoints for now.
pub const PS_CHECKPOINTS: &str =
    "checkpoints and --resume are not supported with --strategy ps yet (the optimizer state lives on the servers); hint: use --strategy allreduce";

/// A server shard.
pub struct Server<'c> {
    comm: &'c dyn Communicator,
    index: usize,
    workers: usize,
    mode: PsMode,
    steps: u64,
    params: Vec<f32>,
    opt: Box<dyn Optimizer>,
    schedule: LrSchedule,
}

/// Staleness counts of one server.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Staleness {
    /// `histogram[s]` = updates applied with staleness s.
    pub histogram: Vec<u64>,
}

impl Staleness {
    fn record(&mut self, s: usize) {
        if self.histogram.len() <= s {
            self.histogram.resize(s + 1, 0);
        }
        self.histogram[s] += 1;
    }

    /// Largest staleness seen.
    pub fn max(&self) -> usize {
        self.histogram.iter().rposition(|&c| c > 0).unwrap_or(0)
    }

    /// Mean staleness.
    pub fn mean(&self) -> f64 {
        let n: u64 = self.histogram.iter().sum();
        let total: u64 = self.histogram.iter().enumerate().map(|(s, &c)| s as u64 * c).sum();
        total as f64 / n.max(1) as f64
    }

    /// As an event of server `server`.
    pub fn event(&self, server: usize) -> Event {
        Event::Staleness { server, histogram: self.histogram.clone(), max: self.max(), mean: self.mean() }
    }
}

impl<'c> Server<'c> {
    /// Server shard `comm.rank() - workers` of `servers`, for a run of `steps` steps per worker
    /// over `len` parameters.
    pub fn new(cfg: &TrainConfig, comm: &'c dyn Communicator, workers: usize, servers: usize, mode: PsMode, steps: u64, len: usize) -> Result<Server<'c>, TrainError> {
        let index = comm.rank() - workers;
        let n = server_range(len, index, servers).len();
        Ok(Server {
            comm,
            index,
            workers,
            mode,
            steps,
            params: vec![0.0; n],
            opt: cfg.optimizer.build(n)?,
            schedule: cfg.schedule.clone().resolve(steps),
        })
    }

    /// Serves the whole run; returns the staleness of the updates applied.
    pub fn serve(mut self) -> Result<Staleness, TrainError> {
        self.comm.recv(&mut self.params, 0, TAG_INIT)?;
        for w in 0..self.workers {
            self.comm.send(&self.params, w, TAG_PARAMS)?;
        }
        let hist = match self.mode {
            PsMode::Sync => self.serve_sync()?,
            PsMode::Async => self.serve_async(None)?,
            PsMode::Ssp { staleness } => self.serve_async(Some(staleness))?,
        };
        self.comm.send(&self.params, 0, TAG_FINAL)?;
        Ok(hist)
    }

    fn serve_sync(&mut self) -> Result<Staleness, TrainError> {
        let mut sum = vec![0.0f32; self.params.len()];
        let mut hist = Staleness::default();
        for step in 0..self.steps {
            sum.fill(0.0);
            for w in 0..self.workers {
                self.comm.recv_add(&mut sum, w, TAG_PUSH)?;
                hist.record(0);
            }
            self.opt.step(&mut self.params, &sum, self.schedule.lr_at(step));
            for w in 0..self.workers {
                self.comm.send(&self.params, w, TAG_PARAMS)?;
            }
        }
        Ok(hist)
    }

    fn serve_async(&mut self, bound: Option<u64>) -> Result<Staleness, TrainError> {
        let w = self.workers;
        let mut grad = vec![0.0f32; self.params.len()];
        let mut hist = Staleness::default();
        let mut version = 0u64;
        let mut pulled = vec![0u64; w];
        let mut clock = vec![0u64; w];
        let mut waiting = vec![false; w];
        for _ in 0..self.steps * w as u64 {
            let src = self.comm.recv_any(&mut grad, TAG_PUSH)?;
            if src >= w {
                return Err(TrainError::Internal(format!("server {} got a push from rank {src}, which is not a worker", self.index)));
            }
            hist.record((version - pulled[src]) as usize);
            let lr = self.schedule.lr_at(version / w as u64);
            self.opt.step(&mut self.params, &grad, lr);
            version += 1;
            clock[src] += 1;
            waiting[src] = true;
            let slowest = clock.iter().copied().min().unwrap_or(0);
            for v in 0..w {
                // Under SSP a worker that has finished c steps may start the next only when
                // c − slowest ≤ s; a worker that has finished the run just gets its reply.
                let may_go = match bound {
                    None => true,
                    Some(s) => clock[v] - slowest <= s || clock[v] == self.steps,
                };
                if waiting[v] && may_go {
                    self.comm.send(&self.params, v, TAG_PARAMS)?;
                    pulled[v] = version;
                    waiting[v] = false;
                }
            }
        }
        Ok(hist)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_summary() {
        let mut s = Staleness::default();
        for x in [0, 0, 3, 1] {
            s.record(x);
        }
        assert_eq!(s.histogram, vec![2, 1, 0, 1]);
        assert_eq!(s.max(), 3);
        assert!((s.mean() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn servers_split_the_buffer_evenly() {
        let r: Vec<_> = (0..3).map(|s| server_range(10, s, 3)).collect();
        assert_eq!(r, vec![0..4, 4..7, 7..10]);
    }
}
