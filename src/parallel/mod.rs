//! Parallel training: the strategies (each a `train::Strategy` for one worker) and `run`, which
//! starts the workers (and parameter servers) as threads of this process, joined by a
//! `LocalComm`, and turns their results into one run.
//!
//! Every worker runs `train::run_worker` on its shard of each global batch; rank 0 leads
//! (progress, evaluation, saving). A worker that returns an error or panics aborts the
//! communicator, so every other rank's next collective fails at once and the run ends with the
//! first real error, naming the worker and the step.

pub mod data_parallel;
pub mod param_server;

use crate::comm::{Algorithm, CommError, Communicator, LocalComm};
use crate::data::sampler::Shard;
use crate::net::Net;
use crate::train::{self, events::Event, events::EventSink, StepReport, Strategy, TrainConfig, TrainError, TrainSummary};
use data_parallel::{AllReduce, AllReduceConfig};
use param_server::PsConfig;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the workers of a run cooperate.
#[derive(Clone, Debug, PartialEq)]
pub enum StrategyKind {
    /// Replicas whose gradients are summed by all-reduce (`--strategy allreduce`).
    AllReduce(AllReduceConfig),
    /// Workers that push gradients to and pull parameters from server shards (`--strategy ps`).
    ParamServer(PsConfig),
}

/// A failure injected on purpose (tests of failure handling; hidden flag `--inject-failure`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InjectFailure {
    /// Worker that fails.
    pub rank: usize,
    /// Step (1-based) at which it fails.
    pub step: u64,
    /// How it fails.
    pub kind: FailureKind,
}

/// How an injected failure fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The step returns an error.
    Error,
    /// The step panics.
    Panic,
    /// The step never returns (sleeps forever).
    Hang,
}

/// Parallel settings of a run (the single-worker defaults are `ParallelConfig::default()`).
#[derive(Clone, Debug, PartialEq)]
pub struct ParallelConfig {
    /// Data-parallel workers (threads of this process).
    pub workers: usize,
    /// How they cooperate.
    pub strategy: StrategyKind,
    /// How long a collective may wait for a peer before the run fails.
    pub stall_timeout: Duration,
    /// Test hook.
    pub inject_failure: Option<InjectFailure>,
}

impl Default for ParallelConfig {
    fn default() -> Self {
        ParallelConfig {
            workers: 1,
            strategy: StrategyKind::AllReduce(AllReduceConfig::default()),
            stall_timeout: crate::comm::local::DEFAULT_STALL,
            inject_failure: None,
        }
    }
}

impl ParallelConfig {
    /// Checks the settings against the run's; errors name the flag and end with a hint.
    pub fn validate(&self, cfg: &TrainConfig) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.workers == 0 {
            return bad("--workers must be at least 1".into());
        }
        if self.workers > 256 {
            return bad(format!("--workers {} is more than 256 threads; hint: use MPI to go beyond one machine", self.workers));
        }
        if cfg.batch_size < self.workers {
            return bad(format!(
                "--batch-size {} is smaller than --workers {}: some workers would get no samples; hint: the batch size is the global batch, split across workers",
                cfg.batch_size, self.workers
            ));
        }
        match &self.strategy {
            StrategyKind::AllReduce(a) => a.validate(self.workers, cfg),
            StrategyKind::ParamServer(_) if cfg.checkpoint.is_some() || cfg.resume.is_some() => bad(param_server::PS_CHECKPOINTS.into()),
            StrategyKind::ParamServer(p) => p.validate(),
        }
    }
}

/// Runs a training run with `pc.workers` workers on threads; returns rank 0's summary.
pub fn run(cfg: &TrainConfig, pc: &ParallelConfig, sink: &mut dyn EventSink) -> Result<TrainSummary, TrainError> {
    pc.validate(cfg)?;
    cfg.optimizer.validate()?;
    if pc.workers == 1 && pc.strategy == StrategyKind::AllReduce(AllReduceConfig::default()) && pc.inject_failure.is_none() {
        return train::train(cfg, sink);
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if pc.workers * cfg.threads > cores {
        let hint = if cores >= pc.workers { format!("--threads {}", cores / pc.workers) } else { format!("at most {cores} workers") };
        tracing::warn!(workers = pc.workers, threads = cfg.threads, cores, "workers × threads exceeds the cores; workers will share cores (hint: {hint})");
    }
    let param_count = Net::build(&cfg.model)?.layout().len();
    let data = Arc::new(train::load_data(cfg)?);
    let (servers, algorithm) = match &pc.strategy {
        StrategyKind::AllReduce(a) => (0, if a.deterministic { Algorithm::Tree } else { a.algorithm }),
        StrategyKind::ParamServer(p) => (p.servers, Algorithm::Ring),
    };
    let comms = LocalComm::world(pc.workers + servers, algorithm, pc.stall_timeout);
    let supervisor = comms[0].twin();
    let total_steps = train::total_steps(cfg, data.0.len());
    let (tx, rx) = mpsc::channel::<Msg>();
    let ranks = comms.len();
    for (rank, comm) in comms.into_iter().enumerate() {
        let (tx, data, cfg, pc) = (tx.clone(), data.clone(), cfg.clone(), pc.clone());
        let name = if rank < pc.workers { format!("worker {rank}") } else { format!("server {}", rank - pc.workers) };
        // Threads are not scoped: a worker that hangs outside communication must not keep the
        // run from ending (the others time out, and `run` returns after a grace period).
        let spawned = std::thread::Builder::new().name(name.replace(' ', "-")).spawn(move || {
            let progress = AtomicU64::new(0);
            let out = catch_unwind(AssertUnwindSafe(|| -> Result<Option<TrainSummary>, TrainError> {
                if rank >= pc.workers {
                    let index = rank - pc.workers;
                    let wrap = |e: TrainError| TrainError::Server { index, source: Box::new(e) };
                    let StrategyKind::ParamServer(p) = &pc.strategy else { unreachable!("servers exist only for the ps strategy") };
                    let server = param_server::Server::new(&cfg, &comm, pc.workers, p.servers, p.mode, total_steps, param_count).map_err(wrap)?;
                    let hist = server.serve().map_err(wrap)?;
                    let _ = tx.send(Msg::Event(hist.event(index)));
                    return Ok(None);
                }
                let net = Net::build(&cfg.model)?;
                let (mut strategy, shard): (Box<dyn Strategy + '_>, Shard) = match &pc.strategy {
                    StrategyKind::AllReduce(a) => {
                        let leaves = if a.deterministic { data_parallel::DETERMINISTIC_LEAVES } else { pc.workers };
                        (Box::new(AllReduce::new(&comm, a.clone(), &cfg, &net)?), Shard { rank, world: pc.workers, leaves })
                    }
                    StrategyKind::ParamServer(p) => (Box::new(param_server::Client::new(&comm, pc.workers, p, param_count)), Shard::of(rank, pc.workers)),
                };
                let mut guarded = Guard { inner: strategy.as_mut(), rank, step: &progress, inject: pc.inject_failure };
                let name = match &pc.strategy {
                    StrategyKind::AllReduce(_) => "allreduce",
                    StrategyKind::ParamServer(_) => "ps",
                };
                train::run_worker(&cfg, name, net, &data, shard, &mut guarded, &mut |e| {
                    let _ = tx.send(Msg::Event(e));
                })
                .map(Some)
            }))
            .unwrap_or_else(|panic| {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                let e = TrainError::Panicked(msg);
                if rank < pc.workers {
                    Err(e.at_worker(rank, progress.load(Ordering::Relaxed)))
                } else {
                    Err(TrainError::Server { index: rank - pc.workers, source: Box::new(e) })
                }
            });
            if let Err(e) = &out {
                // A signal stops every worker after the same step: no one needs waking.
                if !e.is_echo() && !matches!(e, TrainError::Interrupted { .. }) {
                    comm.abort(&e.to_string());
                }
            }
            let _ = tx.send(Msg::Done(rank, out));
        });
        if let Err(e) = spawned {
            supervisor.abort("could not start a thread");
            return Err(TrainError::Internal(format!("could not start the thread of {name}: {e}")));
        }
    }
    drop(tx);
    let mut results: Vec<Option<Result<Option<TrainSummary>, TrainError>>> = (0..ranks).map(|_| None).collect();
    let mut first_error: Option<Instant> = None;
    let mut done = 0;
    while done < ranks {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Msg::Event(e)) => sink.on_event(&e),
            Ok(Msg::Done(rank, r)) => {
                if r.is_err() {
                    first_error.get_or_insert_with(Instant::now);
                }
                results[rank] = Some(r);
                done += 1;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if first_error.is_some_and(|t| t.elapsed() > GRACE) {
            // Someone failed and some ranks still have not ended: they are stuck outside
            // communication. Leave them behind (the process ends with the error).
            supervisor.abort("the run failed");
            break;
        }
    }
    let mut summary = None;
    let mut first_echo = None;
    for (rank, r) in results.into_iter().enumerate() {
        match r {
            Some(Ok(Some(s))) if summary.is_none() => summary = Some(s),
            Some(Ok(_)) => {}
            Some(Err(e)) if e.is_echo() => {
                first_echo.get_or_insert(e);
            }
            Some(Err(e)) => return Err(e),
            None if first_echo.is_none() && first_error.is_none() => {
                first_echo = Some(TrainError::Internal(format!("rank {rank} ended without a result")));
            }
            None => {}
        }
    }
    match (first_echo, summary) {
        (Some(e), _) => Err(e),
        (None, Some(s)) => Ok(s),
        (None, None) => Err(TrainError::Comm(CommError::Invalid("no worker returned a result".into()))),
    }
}

/// How long `run` waits for the other ranks to end after one has failed.
const GRACE: Duration = Duration::from_secs(10);

/// What the rank threads tell `run`.
enum Msg {
    Event(Event),
    Done(usize, Result<Option<TrainSummary>, TrainError>),
}

/// Wraps a worker's strategy: counts its steps and fires the injected failure.
struct Guard<'a> {
    inner: &'a mut (dyn Strategy + 'a),
    rank: usize,
    /// The step being run (1-based), readable after a panic.
    step: &'a AtomicU64,
    inject: Option<InjectFailure>,
}

impl Strategy for Guard<'_> {
    fn init(&mut self, params: &mut [f32]) -> Result<(), TrainError> {
        self.inner.init(params)
    }

    fn step(&mut self, net: &mut Net, ctx: &crate::layers::Ctx, params: &mut [f32], batch: &crate::data::loader::Batch, lr: f32) -> Result<StepReport, TrainError> {
        let step = self.step.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(f) = self.inject.filter(|f| f.rank == self.rank && f.step == step) {
            match f.kind {
                FailureKind::Error => return Err(TrainError::Injected),
                FailureKind::Panic => panic!("injected panic at step {}", f.step),
                FailureKind::Hang => loop {
                    std::thread::sleep(Duration::from_secs(3600));
                },
            }
        }
        self.inner.step(net, ctx, params, batch, lr)
    }

    fn finish(&mut self, params: &mut [f32]) -> Result<(), TrainError> {
        self.inner.finish(params)
    }

    fn can_stop_early(&self) -> bool {
        self.inner.can_stop_early()
    }

    fn state_names(&self) -> Vec<&'static str> {
        self.inner.state_names()
    }

    fn optimizer_state(&mut self) -> Result<(Vec<(&'static str, Vec<f32>)>, u64), TrainError> {
        self.inner.optimizer_state()
    }

    fn restore(&mut self, state: &[(String, Vec<f32>)], steps: u64) -> Result<(), TrainError> {
        self.inner.restore(state, steps)
    }
}
