//! Parallel training: the strategies (each a `train::Strategy` for one worker) and `run`, which
//! starts the workers (and parameter servers) as threads of this process, joined by a
//! `LocalComm`, and turns their results into one run.
//!
//! Every worker runs `train::run_worker` on its shard of each global batch; rank 0 leads
//! (progress, evaluation, saving). A worker that returns an error or panics aborts the
//! communicator, so every other rank's next collective fails at once and the run ends with the
//! first real error, naming the worker and the step.

pub mod data_parallel;
mod guard;
pub mod hybrid;
#[cfg(feature = "mpi")]
mod mpi;
pub mod param_server;
pub mod pipeline;
pub mod tensor;
mod watchdog;

use crate::comm::{launch, Algorithm, CommError, Communicator, LocalComm};
use crate::data::sampler::Shard;
use crate::net::Net;
use crate::train::{self, events::Event, events::EventSink, Strategy, TrainConfig, TrainError, TrainSummary};
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
    /// The net's layers cut into stages, one per worker, micro-batches flowing through them
    /// (`--strategy pipeline`).
    Pipeline(pipeline::PipelineConfig),
    /// Every convolution and fully connected layer split across the workers (`--strategy tensor`).
    Tensor(tensor::TensorConfig),
    /// Data-parallel convolutions, model-parallel classifier (`--strategy hybrid --dp D --mp M`).
    Hybrid(hybrid::HybridConfig),
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
    /// How long no worker may finish a step before the stall watchdog reports which workers are
    /// stuck in which phase (`--stall-timeout`); communication gives up after `comm_limit()`.
    pub stall_timeout: Duration,
    /// End the run at the watchdog's first report (`--stall-abort`).
    pub stall_abort: bool,
    /// Test hook.
    pub inject_failure: Option<InjectFailure>,
    /// Transport between processes (`--comm`).
    pub comm: CommKind,
}

/// Which transport joins the processes of a run (`--comm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CommKind {
    /// MPI when an MPI launcher started this process (and convoy was built with it), else threads.
    #[default]
    Auto,
    /// Threads of this process only.
    Local,
    /// MPI (needs a build with `--features mpi` and a launcher such as mpirun or srun).
    Mpi,
}

/// The hint of every "built without MPI" error.
pub const BUILD_WITH_MPI: &str = "hint: build with `cargo build --release --features mpi` (on Debian first `apt-get install -y libopenmpi-dev openmpi-bin libclang-dev clang pkg-config`)";

impl CommKind {
    /// `Local` or `Mpi`: `Auto` resolved from the environment; errors when MPI is asked for (or a
    /// launcher started several processes) but this binary was built without it.
    pub fn resolve(self) -> Result<CommKind, TrainError> {
        self.resolve_in(cfg!(feature = "mpi"), launch::launched(), launch::size().unwrap_or(1))
    }

    /// `resolve` for a binary built with MPI or not (`built`), started by a launcher or not,
    /// with `size` processes.
    pub fn resolve_in(self, built: bool, launched: bool, size: usize) -> Result<CommKind, TrainError> {
        match self {
            CommKind::Local => Ok(CommKind::Local),
            CommKind::Mpi if !built => Err(TrainError::Config(format!("--comm mpi: this convoy was built without MPI; {BUILD_WITH_MPI}"))),
            CommKind::Mpi => Ok(CommKind::Mpi),
            CommKind::Auto if launched && built => Ok(CommKind::Mpi),
            CommKind::Auto if launched && size > 1 => Err(TrainError::Config(format!(
                "an MPI launcher started {size} processes, but this convoy was built without MPI, so each would train alone; {BUILD_WITH_MPI}, or pass --comm local"
            ))),
            CommKind::Auto => Ok(CommKind::Local),
        }
    }
}

impl ParallelConfig {
    /// How long a communication call may wait for a peer before it fails the run: 5 × the stall
    /// timeout (so the watchdog reports first and a hung rank still ends the run within a bounded
    /// time), or 2 × with `--stall-abort` (the watchdog then ends the run itself, with its report).
    pub fn comm_limit(&self) -> Duration {
        self.stall_timeout * if self.stall_abort { 2 } else { crate::comm::STALLS_BEFORE_GIVING_UP }
    }

    /// Checks the settings against the run's; errors name the flag and end with a hint.
    pub fn validate(&self, cfg: &TrainConfig) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.workers == 0 {
            return bad("--workers must be at least 1".into());
        }
        if self.workers > 256 && self.comm != CommKind::Mpi {
            return bad(format!(
                "--workers {} is more than 256 threads; hint: use MPI to go beyond one machine",
                self.workers
            ));
        }
        if cfg.batch_size < self.workers {
            return bad(format!(
                "--batch-size {} is smaller than --workers {}: some workers would get no samples; hint: the batch size is the global batch, split across workers",
                cfg.batch_size, self.workers
            ));
        }
        match &self.strategy {
            StrategyKind::AllReduce(a) => a.validate(self.workers, cfg),
            StrategyKind::ParamServer(p) => p.validate(),
            StrategyKind::Pipeline(p) => p.validate(self.workers, cfg),
            StrategyKind::Tensor(t) => t.validate(self.workers, cfg),
            StrategyKind::Hybrid(h) => h.validate(self.workers, cfg),
        }
    }
}

/// The processes of a run: this one alone, or the MPI job it belongs to. MPI is initialised by
/// `start` and finalised when the session is dropped.
pub struct Session {
    #[cfg(feature = "mpi")]
    mpi: Option<crate::comm::mpi::Mpi>,
}

impl Session {
    /// Resolves `--comm` and, for MPI, initialises it.
    pub fn start(pc: &ParallelConfig) -> Result<Session, TrainError> {
        let kind = pc.comm.resolve()?;
        #[cfg(feature = "mpi")]
        {
            let mpi = if kind == CommKind::Mpi {
                Some(crate::comm::mpi::Mpi::init(pc.stall_timeout, pc.stall_abort)?)
            } else {
                None
            };
            Ok(Session { mpi })
        }
        #[cfg(not(feature = "mpi"))]
        {
            let _ = kind;
            Ok(Session {})
        }
    }

    /// True for the process that reports the run (progress, metrics, weights, checkpoints): the
    /// one holding worker 0.
    pub fn leads(&self, pc: &ParallelConfig) -> bool {
        #[cfg(feature = "mpi")]
        if let Some(m) = &self.mpi {
            return mpi::leads(m, pc);
        }
        let _ = pc;
        true
    }

    /// Processes in the run (1 without MPI).
    pub fn processes(&self) -> usize {
        #[cfg(feature = "mpi")]
        if let Some(m) = &self.mpi {
            return m.world().size();
        }
        1
    }

    /// Runs the training run; returns this process's summary (`None` for a process that holds
    /// only parameter servers).
    pub fn run(
        &self,
        cfg: &TrainConfig,
        pc: &ParallelConfig,
        sink: &mut dyn EventSink,
    ) -> Result<Option<TrainSummary>, TrainError> {
        #[cfg(feature = "mpi")]
        if let Some(m) = &self.mpi {
            return mpi::run(m, cfg, pc, sink);
        }
        run(cfg, pc, sink).map(Some)
    }
}

/// Runs a training run with `pc.workers` workers on threads of this process; returns rank 0's
/// summary. (Under MPI use `Session`, which also runs this when MPI is not in use.)
pub fn run(cfg: &TrainConfig, pc: &ParallelConfig, sink: &mut dyn EventSink) -> Result<TrainSummary, TrainError> {
    pc.validate(cfg)?;
    cfg.optimizer.validate()?;
    if pc.workers == 1
        && pc.strategy == StrategyKind::AllReduce(AllReduceConfig::default())
        && pc.inject_failure.is_none()
    {
        return train::train(cfg, sink);
    }
    let (servers, algorithm) = match &pc.strategy {
        StrategyKind::AllReduce(a) => (0, a.effective_algorithm()),
        StrategyKind::ParamServer(p) => (p.servers, Algorithm::Ring),
        StrategyKind::Pipeline(_) | StrategyKind::Tensor(_) | StrategyKind::Hybrid(_) => (0, Algorithm::Direct),
    };
    let workers = match &pc.strategy {
        StrategyKind::Pipeline(p) => p.stages * p.replicas,
        StrategyKind::Tensor(t) => t.mp,
        StrategyKind::Hybrid(h) => h.dp * h.mp,
        _ => pc.workers,
    };
    let comms = LocalComm::world(workers + servers, algorithm, pc.comm_limit());
    let supervisor = comms[0].twin();
    let watcher = comms[0].twin();
    let ranks = comms.into_iter().enumerate().map(|(r, c)| (r, Box::new(c) as Box<dyn Communicator>)).collect();
    let abort = Box::new(move |m: &str, code: i32| supervisor.abort_with(m, code));
    run_ranks(cfg, pc, Ranks { comms: ranks, workers, abort, waits: Some(Box::new(move || watcher.waits())) }, sink)?
        .ok_or_else(|| TrainError::Comm(CommError::Invalid("no worker returned a result".into())))
}

/// The ranks of a run that live in this process.
pub(crate) struct Ranks {
    /// (rank, its communicator): workers are ranks 0..workers, servers the ranks after them.
    pub comms: Vec<(usize, Box<dyn Communicator>)>,
    /// Workers in the whole run (all processes).
    pub workers: usize,
    /// Ends every rank of the run (after a failure, for ranks stuck outside communication),
    /// with the exit code the processes should end with (MPI).
    pub abort: AbortFn,
    /// What each rank of `comms` (by position) waits in, where the communicator knows it.
    pub waits: Option<WaitsFn>,
}

/// Ends every rank with a message and an exit code (`Ranks::abort`).
pub(crate) type AbortFn = Box<dyn Fn(&str, i32) + Send>;

/// What every rank of this process waits in (`Ranks::waits`).
pub(crate) type WaitsFn = Box<dyn Fn() -> Vec<watchdog::Wait> + Send>;

/// Runs this process's ranks, each on a thread; returns the summary of its first worker (rank 0's
/// when it lives here), `None` when this process holds only servers.
pub(crate) fn run_ranks(
    cfg: &TrainConfig,
    pc: &ParallelConfig,
    ranks: Ranks,
    sink: &mut dyn EventSink,
) -> Result<Option<TrainSummary>, TrainError> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let here = ranks.comms.len();
    if here * cfg.threads > cores {
        let hint =
            if cores >= here { format!("--threads {}", cores / here) } else { format!("at most {cores} workers") };
        tracing::warn!(
            ranks = here,
            threads = cfg.threads,
            cores,
            "ranks × threads exceeds the cores; ranks will share cores (hint: {hint})"
        );
    }
    let param_count = Net::build(&cfg.model)?.layout().len();
    let workers = ranks.workers;
    // `--data-split`: the parts of the data-parallel ranks of this process's workers (the
    // stages or slices of one replica share a part).
    let group = match &pc.strategy {
        StrategyKind::Pipeline(p) => p.stages.max(1),
        StrategyKind::Tensor(_) => workers.max(1),
        _ => 1,
    };
    let mut parts: Vec<usize> =
        ranks.comms.iter().map(|(r, _)| *r).filter(|&r| r < workers).map(|r| r / group).collect();
    parts.dedup();
    let data = Arc::new(train::load_data_parts(cfg, &parts, workers / group)?);
    let total_steps = train::total_steps(cfg, data.0.len());
    let (tx, rx) = mpsc::channel::<Msg>();
    let hosted: Vec<usize> = ranks.comms.iter().map(|c| c.0).collect();
    let spans = ranks.comms.iter().any(|c| c.1.spans_processes());
    let mut dog = watchdog::Watchdog::new(&hosted, pc.stall_timeout, pc.stall_abort, spans);
    // Parameter servers have no steps to watch.
    for (i, _) in hosted.iter().enumerate().filter(|(_, &r)| r >= workers) {
        dog.beacons.ended(i);
    }
    for (index, (rank, comm)) in ranks.comms.into_iter().enumerate() {
        let (tx, data, cfg, pc, beacons) = (tx.clone(), data.clone(), cfg.clone(), pc.clone(), dog.beacons.clone());
        let name = if rank < workers { format!("worker {rank}") } else { format!("server {}", rank - workers) };
        // Threads are not scoped: a worker that hangs outside communication must not keep the
        // run from ending (the others time out, and `run` returns after a grace period).
        let spawned = std::thread::Builder::new().name(name.replace(' ', "-")).spawn(move || {
            let progress = AtomicU64::new(0);
            let owned = comm;
            let comm: &dyn Communicator = &*owned;
            let out = catch_unwind(AssertUnwindSafe(|| -> Result<Option<TrainSummary>, TrainError> {
                if rank >= workers {
                    let index = rank - workers;
                    let wrap = |e: TrainError| TrainError::Server { index, source: Box::new(e) };
                    let StrategyKind::ParamServer(p) = &pc.strategy else {
                        unreachable!("servers exist only for the ps strategy")
                    };
                    let server = param_server::Server::new(
                        &cfg,
                        comm,
                        workers,
                        p.servers,
                        p.mode,
                        total_steps,
                        param_count,
                        data.0.len(),
                    )
                    .map_err(wrap)?;
                    let hist = server.serve().map_err(wrap)?;
                    let _ = tx.send(Msg::Event(hist.event(index)));
                    return Ok(None);
                }
                let net = Net::build(&cfg.model)?;
                // Hybrid data × pipeline: the stages of one replica, and one stage of all replicas.
                let groups = match &pc.strategy {
                    StrategyKind::Pipeline(p) if p.replicas > 1 => Some((
                        comm.split(rank / p.stages, rank % p.stages)?,
                        comm.split(rank % p.stages, rank / p.stages)?,
                    )),
                    // The classifier group of this worker, and the workers holding its slice.
                    StrategyKind::Hybrid(h) => {
                        Some((comm.split(rank / h.mp, rank % h.mp)?, comm.split(rank % h.mp, rank / h.mp)?))
                    }
                    _ => None,
                };
                let (mut strategy, shard): (Box<dyn Strategy + '_>, Shard) = match &pc.strategy {
                    StrategyKind::AllReduce(a) => {
                        let leaves = if a.deterministic { data_parallel::DETERMINISTIC_LEAVES } else { workers };
                        (
                            Box::new(AllReduce::new(comm, a.clone(), &cfg, &net)?),
                            Shard { rank, world: workers, leaves, group: 1 },
                        )
                    }
                    StrategyKind::ParamServer(p) => {
                        let skip = cfg.on_nonfinite == train::nonfinite::OnNonFinite::Skip;
                        (
                            Box::new(
                                param_server::Client::new(
                                    comm,
                                    workers,
                                    p,
                                    param_count,
                                    &cfg.optimizer,
                                    net.layout().buffer_ranges(),
                                )?
                                .skip_nonfinite(skip),
                            ),
                            Shard::of(rank, workers),
                        )
                    }
                    // Every stage sees the whole batch (stage 0 its images, the last its labels).
                    StrategyKind::Pipeline(p) => {
                        let (stages, replicas) = match &groups {
                            Some((s, r)) => (&**s, Some(&**r)),
                            None => (comm, None),
                        };
                        (
                            Box::new(pipeline::Pipeline::new(stages, replicas, p.clone(), &cfg, &net)?),
                            Shard::grouped(rank, workers, p.stages),
                        )
                    }
                    // Every slice computes on the whole batch.
                    StrategyKind::Tensor(_) => {
                        (Box::new(tensor::TensorSplit::new(comm, &cfg, &net)?), Shard::grouped(rank, workers, workers))
                    }
                    StrategyKind::Hybrid(h) => {
                        let (group, replicas) =
                            groups.as_ref().map(|(g, r)| (&**g, &**r)).expect("hybrid groups are split above");
                        (
                            Box::new(hybrid::Hybrid::new(comm, group, replicas, h.clone(), &cfg, &net)?),
                            Shard::of(rank, workers),
                        )
                    }
                };
                let mut guarded = guard::Guard {
                    inner: strategy.as_mut(),
                    rank,
                    step: &progress,
                    inject: pc.inject_failure,
                    beacons: &beacons,
                    index,
                };
                let name = match &pc.strategy {
                    StrategyKind::AllReduce(_) => "allreduce",
                    StrategyKind::ParamServer(_) => "ps",
                    StrategyKind::Pipeline(_) => "pipeline",
                    StrategyKind::Tensor(_) => "tensor",
                    StrategyKind::Hybrid(_) => "hybrid",
                };
                let summary = train::run_worker(&cfg, name, net, &data, shard, &mut guarded, &mut |e| {
                    let _ = tx.send(Msg::Event(e));
                })?;
                for e in guarded.final_events() {
                    let _ = tx.send(Msg::Event(e));
                }
                let sent = comm.values_sent() + groups.as_ref().map_or(0, |(a, b)| a.values_sent() + b.values_sent());
                let _ = tx.send(Msg::Event(Event::Traffic { rank, bytes_sent: sent * 4, steps: summary.steps }));
                Ok(Some(summary))
            }))
            .unwrap_or_else(|panic| {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                let e = TrainError::Panicked(msg);
                if rank < workers {
                    Err(e.at_worker(rank, progress.load(Ordering::Relaxed)))
                } else {
                    Err(TrainError::Server { index: rank - workers, source: Box::new(e) })
                }
            });
            beacons.ended(index);
            if let Err(e) = &out {
                // A signal stops every worker after the same step: no one needs waking.
                if !e.is_echo() && !matches!(e, TrainError::Interrupted { .. }) {
                    comm.abort_with(&e.to_string(), e.exit_code() as i32);
                }
            }
            // The communicator goes before `Done`: once every rank is done the process may
            // finalize MPI, and an MPI communicator freed after that crashes the process.
            drop(owned);
            let _ = tx.send(Msg::Done(index, out));
        });
        if let Err(e) = spawned {
            (ranks.abort)("could not start a thread", 1);
            return Err(TrainError::Internal(format!("could not start the thread of {name}: {e}")));
        }
    }
    drop(tx);
    let mut results: Vec<Option<Result<Option<TrainSummary>, TrainError>>> = (0..here).map(|_| None).collect();
    let mut first_error: Option<Instant> = None;
    let mut done = 0;
    let mut looked = Instant::now();
    while done < here {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Msg::Event(e)) => sink.on_event(&e),
            Ok(Msg::Done(index, r)) => {
                if r.is_err() {
                    first_error.get_or_insert_with(Instant::now);
                }
                results[index] = Some(r);
                done += 1;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if first_error.is_some_and(|t| t.elapsed() > GRACE) {
            // Someone failed and some ranks still have not ended: they are stuck outside
            // communication. Leave them behind (the process ends with the error).
            (ranks.abort)("the run failed", 1);
            break;
        }
        if first_error.is_none() && looked.elapsed() >= WATCH_TICK {
            looked = Instant::now();
            let cache = std::cell::OnceCell::new();
            let waits = |i: usize| {
                cache.get_or_init(|| ranks.waits.as_ref().map(|f| f()).unwrap_or_default()).get(i).copied().flatten()
            };
            if let Some(report) = dog.check(&waits) {
                // `--stall-abort`: end every rank (the stuck ones are left behind) with the report.
                (ranks.abort)(&report, TrainError::STALLED_EXIT as i32);
                return Err(TrainError::Stalled(report));
            }
        }
    }
    let mut summary = None;
    let mut first_echo = None;
    for (index, r) in results.into_iter().enumerate() {
        match r {
            Some(Ok(Some(s))) if summary.is_none() => summary = Some(s),
            Some(Ok(_)) => {}
            Some(Err(e)) if e.is_echo() => {
                first_echo.get_or_insert(e);
            }
            Some(Err(e)) => return Err(e),
            None if first_echo.is_none() && first_error.is_none() => {
                first_echo = Some(TrainError::Internal(format!("rank thread {index} ended without a result")));
            }
            None => {}
        }
    }
    match first_echo {
        Some(e) => Err(e),
        None => Ok(summary),
    }
}

/// For strategies that split the model: how a worker's own buffer (parameters or an optimizer
/// state, in its own layout) maps into the whole model's flat layout.
pub(crate) trait Owned {
    /// Writes this worker's values into their places of `full` (others untouched).
    fn write_full(&self, mine: &[f32], full: &mut [f32]) -> Result<(), TrainError>;
    /// Reads this worker's values out of `full`.
    fn read_full(&self, full: &[f32], mine: &mut [f32]) -> Result<(), TrainError>;
}

/// `Strategy::stop_now` of a strategy whose workers `comm` joins: agreed across processes,
/// process-local otherwise.
pub(crate) fn stop_now(comm: &dyn Communicator, step: u64, world: usize) -> Result<bool, TrainError> {
    if comm.spans_processes() {
        Ok(train::stop::agreed(comm)?)
    } else {
        Ok(train::stop::stop_after(step, world))
    }
}

/// The whole-model vector of a split buffer: every value written by exactly one worker (those
/// with `contributes`), zeros elsewhere, summed by `reduce` (collective).
pub(crate) fn gather_full(
    owned: &dyn Owned,
    mine: &[f32],
    len: usize,
    contributes: bool,
    reduce: &mut dyn FnMut(&mut [f32]) -> Result<(), TrainError>,
) -> Result<Vec<f32>, TrainError> {
    let mut full = vec![0.0f32; len];
    if contributes {
        owned.write_full(mine, &mut full)?;
    }
    reduce(&mut full)?;
    Ok(full)
}

/// `Strategy::optimizer_state` of a split model: each state buffer gathered whole.
pub(crate) fn gather_optimizer(
    opt: &dyn crate::optim::Optimizer,
    owned: &dyn Owned,
    len: usize,
    contributes: bool,
    reduce: &mut dyn FnMut(&mut [f32]) -> Result<(), TrainError>,
) -> Result<crate::optim::OptimizerState, TrainError> {
    let mut out = Vec::new();
    for (name, buf) in opt.state() {
        out.push((name, gather_full(owned, buf, len, contributes, reduce)?));
    }
    Ok((out, opt.steps()))
}

/// `Strategy::restore` of a split model: each worker takes its part of the whole state.
pub(crate) fn restore_split(
    opt: &mut dyn crate::optim::Optimizer,
    owned: &dyn Owned,
    state: &[(String, Vec<f32>)],
    steps: u64,
) -> Result<(), TrainError> {
    for (name, buf) in opt.state_mut() {
        let src = state
            .iter()
            .find(|s| s.0 == name)
            .ok_or_else(|| TrainError::Internal(format!("checkpoint has no optimizer state '{name}'")))?;
        owned.read_full(&src.1, buf)?;
    }
    opt.set_steps(steps);
    Ok(())
}

/// How long `run` waits for the other ranks to end after one has failed.
const GRACE: Duration = Duration::from_secs(10);

/// How often `run` looks at the stall watchdog.
const WATCH_TICK: Duration = Duration::from_millis(100);

/// What the rank threads tell `run`.
enum Msg {
    Event(Event),
    Done(usize, Result<Option<TrainSummary>, TrainError>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_auto_picks_mpi_only_when_launched_and_built_and_explains_a_missing_build() {
        assert_eq!(CommKind::Auto.resolve_in(true, true, 4).unwrap(), CommKind::Mpi);
        assert_eq!(CommKind::Auto.resolve_in(true, false, 1).unwrap(), CommKind::Local);
        assert_eq!(CommKind::Auto.resolve_in(false, false, 1).unwrap(), CommKind::Local);
        assert_eq!(CommKind::Auto.resolve_in(false, true, 1).unwrap(), CommKind::Local);
        assert_eq!(CommKind::Local.resolve_in(true, true, 4).unwrap(), CommKind::Local);
        for e in [CommKind::Mpi.resolve_in(false, false, 1), CommKind::Auto.resolve_in(false, true, 4)] {
            let e = e.unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains("--features mpi") && e.to_string().contains("libopenmpi-dev"), "{e}");
        }
    }
}
