//! The ranks of a run that live in this process, run to the end: one thread per rank, each
//! building its strategy and running `train::run_worker` (or a parameter server), a supervisor
//! that turns the first failure into the run's error and a watchdog that names stalled ranks.

use super::config::{ParallelConfig, StrategyKind};
use super::{guard, param_server, watchdog};
use crate::comm::Communicator;
use crate::net::Net;
use crate::train::{self, events::Event, events::EventSink, Strategy, TrainConfig, TrainError, TrainSummary};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    let here = ranks.comms.len();
    warn_if_oversubscribed(here, cfg.threads);
    let param_count = Net::build(&cfg.model)?.layout().len();
    let workers = ranks.workers;
    // `--data-split`: the parts of the data-parallel ranks of this process's workers (the
    // stages or slices of one replica share a part).
    let group = pc.strategy.data_group(workers);
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
        let job = RankJob {
            index,
            rank,
            workers,
            param_count,
            total_steps,
            data: data.clone(),
            cfg: cfg.clone(),
            pc: pc.clone(),
            beacons: dog.beacons.clone(),
            tx: tx.clone(),
        };
        let name = if rank < workers { format!("worker {rank}") } else { format!("server {}", rank - workers) };
        // Threads are not scoped: a worker that hangs outside communication must not keep the
        // run from ending (the others time out, and `run` returns after a grace period).
        let spawned = std::thread::Builder::new().name(name.replace(' ', "-")).spawn(move || job.run(comm));
        if let Err(e) = spawned {
            (ranks.abort)("could not start a thread", 1);
            return Err(TrainError::Internal(format!("could not start the thread of {name}: {e}")));
        }
    }
    drop(tx);
    supervise(rx, here, &mut dog, &ranks.abort, ranks.waits.as_ref(), sink)
}

/// Warns when the ranks of this process times their threads exceed its cores.
fn warn_if_oversubscribed(here: usize, threads: usize) {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if here * threads > cores {
        let hint =
            if cores >= here { format!("--threads {}", cores / here) } else { format!("at most {cores} workers") };
        tracing::warn!(
            ranks = here,
            threads,
            cores,
            "ranks × threads exceeds the cores; ranks will share cores (hint: {hint})"
        );
    }
}

/// What one rank's thread needs (moved into it).
struct RankJob {
    /// Position in this process's ranks.
    index: usize,
    rank: usize,
    workers: usize,
    param_count: usize,
    total_steps: u64,
    data: Arc<train::TrainTest>,
    cfg: TrainConfig,
    pc: ParallelConfig,
    beacons: Arc<watchdog::Beacons>,
    tx: mpsc::Sender<Msg>,
}

impl RankJob {
    /// The rank's thread: serves or trains, turns a panic into an error naming the rank, aborts
    /// the communicator on a real failure, and reports `Done`.
    fn run(self, owned: Box<dyn Communicator>) {
        let progress = AtomicU64::new(0);
        let comm: &dyn Communicator = &*owned;
        let (rank, workers) = (self.rank, self.workers);
        let out = catch_unwind(AssertUnwindSafe(|| {
            if rank >= workers {
                self.serve(comm)
            } else {
                self.train(comm, &progress)
            }
        }))
        .unwrap_or_else(|panic| {
            let e = TrainError::Panicked(panic_message(panic.as_ref()));
            if rank < workers {
                Err(e.at_worker(rank, progress.load(Ordering::Relaxed)))
            } else {
                Err(TrainError::Server { index: rank - workers, source: Box::new(e) })
            }
        });
        self.beacons.ended(self.index);
        if let Err(e) = &out {
            // A signal stops every worker after the same step: no one needs waking.
            if !e.is_echo() && !matches!(e, TrainError::Interrupted { .. }) {
                comm.abort_with(&e.to_string(), e.exit_code() as i32);
            }
        }
        // The communicator goes before `Done`: once every rank is done the process may
        // finalize MPI, and an MPI communicator freed after that crashes the process.
        drop(owned);
        let _ = self.tx.send(Msg::Done(self.index, out));
    }

    /// A parameter-server rank: serves until the workers are done.
    fn serve(&self, comm: &dyn Communicator) -> Result<Option<TrainSummary>, TrainError> {
        let index = self.rank - self.workers;
        let wrap = |e: TrainError| TrainError::Server { index, source: Box::new(e) };
        let StrategyKind::ParamServer(p) = &self.pc.strategy else {
            unreachable!("servers exist only for the ps strategy")
        };
        let server = param_server::Server::new(
            &self.cfg,
            comm,
            self.workers,
            p.servers,
            p.mode,
            self.total_steps,
            self.param_count,
            self.data.0.len(),
        )
        .map_err(wrap)?;
        let hist = server.serve().map_err(wrap)?;
        let _ = self.tx.send(Msg::Event(hist.event(index)));
        Ok(None)
    }

    /// A worker rank: builds its net and strategy and runs the training loop.
    fn train(&self, comm: &dyn Communicator, progress: &AtomicU64) -> Result<Option<TrainSummary>, TrainError> {
        let (cfg, kind, rank) = (&self.cfg, &self.pc.strategy, self.rank);
        let net = Net::build(&cfg.model)?;
        let groups = kind.split_groups(comm, rank)?;
        let (mut strategy, shard) = kind.build(comm, &groups, rank, self.workers, cfg, &net)?;
        let mut guarded = guard::Guard {
            inner: strategy.as_mut(),
            rank,
            step: progress,
            inject: self.pc.inject_failure,
            beacons: &self.beacons,
            index: self.index,
        };
        let tx = &self.tx;
        let summary = train::run_worker(cfg, kind.name(), net, &self.data, shard, &mut guarded, &mut |e| {
            let _ = tx.send(Msg::Event(e));
        })?;
        for e in guarded.final_events() {
            let _ = tx.send(Msg::Event(e));
        }
        let sent = comm.values_sent() + groups.as_ref().map_or(0, |(a, b)| a.values_sent() + b.values_sent());
        let _ = tx.send(Msg::Event(Event::Traffic { rank, bytes_sent: sent * 4, steps: summary.steps }));
        Ok(Some(summary))
    }
}

/// The message of a panic's payload.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Forwards the ranks' events to `sink` until all `here` are done, watching for stalls and, after
/// a failure, leaving ranks stuck outside communication behind after `GRACE`; then the run's
/// result: the first real error, else the first worker's summary.
fn supervise(
    rx: mpsc::Receiver<Msg>,
    here: usize,
    dog: &mut watchdog::Watchdog,
    abort: &AbortFn,
    waits: Option<&WaitsFn>,
    sink: &mut dyn EventSink,
) -> Result<Option<TrainSummary>, TrainError> {
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
            abort("the run failed", 1);
            break;
        }
        if first_error.is_none() && looked.elapsed() >= WATCH_TICK {
            looked = Instant::now();
            let cache = std::cell::OnceCell::new();
            let waits =
                |i: usize| cache.get_or_init(|| waits.map(|f| f()).unwrap_or_default()).get(i).copied().flatten();
            if let Some(report) = dog.check(&waits) {
                // `--stall-abort`: end every rank (the stuck ones are left behind) with the report.
                abort(&report, TrainError::STALLED_EXIT as i32);
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

/// How long `run` waits for the other ranks to end after one has failed.
const GRACE: Duration = Duration::from_secs(10);

/// How often `run` looks at the stall watchdog.
const WATCH_TICK: Duration = Duration::from_millis(100);

/// What the rank threads tell `run`.
enum Msg {
    Event(Event),
    Done(usize, Result<Option<TrainSummary>, TrainError>),
}
