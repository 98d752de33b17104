//! Runs under MPI (`Session` with the `mpi` feature): the processes of an `mpirun`/`srun` job.
//!
//! - All-reduce, one worker per process (`--workers 1`): rank = MPI rank, `MpiComm`.
//! - All-reduce, T worker threads per process (`--workers T`): P × T ranks joined by `HierComm`
//!   (threads in shared memory, processes over MPI).
//! - Parameter server: one rank per process; the first `--servers k` MPI ranks are the server
//!   shards and the others the workers (ranks are renumbered so the strategy sees workers first,
//!   as on threads).

use super::config::{CommKind, ParallelConfig, StrategyKind};
use super::ranks::{run_ranks, Ranks, WaitsFn};
use crate::comm::mpi::{HierComm, Mpi};
use crate::comm::{Communicator, LocalComm};
use crate::train::events::{Event, EventSink};
use crate::train::{timeline, TrainConfig, TrainError, TrainSummary};
use std::sync::Arc;

/// True for the process holding worker 0.
pub fn leads(mpi: &Mpi, pc: &ParallelConfig) -> bool {
    mpi.world().rank() == lead_rank(pc)
}

/// The MPI rank of the process holding worker 0 (it reports the run and writes its files).
fn lead_rank(pc: &ParallelConfig) -> usize {
    match &pc.strategy {
        StrategyKind::ParamServer(p) => p.servers,
        StrategyKind::AllReduce(_) | StrategyKind::Pipeline(_) | StrategyKind::Tensor(_) | StrategyKind::Hybrid(_) => 0,
    }
}

/// What the one rank of this process waits in: its longest MPI call.
fn mpi_waits(world: &Arc<crate::comm::mpi::MpiComm>) -> WaitsFn {
    let w = world.clone();
    Box::new(move || vec![w.waiting_in()])
}

/// The sink of a process other than the lead's with `--timeline`: keeps the phases of its
/// workers for the gather at the end, passes the rest on.
struct KeepPhases<'a> {
    inner: &'a mut dyn EventSink,
    phases: Vec<Event>,
}

impl EventSink for KeepPhases<'_> {
    fn on_event(&mut self, e: &Event) {
        match e {
            Event::Phase { .. } => self.phases.push(e.clone()),
            _ => self.inner.on_event(e),
        }
    }
}

/// Runs this process's ranks; with `--timeline`, gathers every process's phases into the lead's
/// sink (which writes the trace) once the run has ended on every process — normally or by an
/// agreed stop (a failure aborts the job, and the trace then has the lead's workers only).
fn run_and_gather(
    mpi: &Mpi,
    cfg: &TrainConfig,
    pc: &ParallelConfig,
    ranks: Ranks,
    sink: &mut dyn EventSink,
) -> Result<Option<TrainSummary>, TrainError> {
    if !cfg.timeline {
        return run_ranks(cfg, pc, ranks, sink);
    }
    let (root, world) = (lead_rank(pc), mpi.world());
    let lead = world.rank() == root;
    let mut keep = KeepPhases { inner: sink, phases: Vec::new() };
    let out = run_ranks(cfg, pc, ranks, if lead { &mut *keep.inner } else { &mut keep });
    if out.is_ok() || matches!(out, Err(TrainError::Interrupted { .. })) {
        let parts = world.gather_bytes(root, &if lead { Vec::new() } else { timeline::export(&keep.phases) })?;
        for part in parts.iter().filter(|p| !p.is_empty()) {
            for e in timeline::import(part) {
                keep.inner.on_event(&e);
            }
        }
    }
    out
}

/// Checks the layout against the job's process count (every process sees the same flags and
/// count, so every one fails alike, before any communication).
fn validate(mpi: &Mpi, cfg: &TrainConfig, pc: &ParallelConfig) -> Result<usize, TrainError> {
    let procs = mpi.world().size();
    let workers = match &pc.strategy {
        StrategyKind::ParamServer(p) => {
            if pc.workers != 1 {
                return Err(TrainError::Config(format!(
                    "--strategy ps under MPI runs one worker or server per process, not --workers {}; hint: start more processes with mpirun -np",
                    pc.workers
                )));
            }
            if procs <= p.servers {
                return Err(TrainError::Config(format!(
                    "--servers {} needs more than {} MPI processes (the first {} are the servers, the others the workers); hint: mpirun -np {}",
                    p.servers,
                    procs,
                    p.servers,
                    p.servers + 1
                )));
            }
            procs - p.servers
        }
        StrategyKind::AllReduce(_) => procs * pc.workers,
        StrategyKind::Pipeline(_) | StrategyKind::Tensor(_) | StrategyKind::Hybrid(_) if pc.workers != 1 => {
            return Err(TrainError::Config("--strategy pipeline/tensor/hybrid under MPI runs one stage or slice per process; hint: drop --workers and start that many processes".into()))
        }
        StrategyKind::Pipeline(_) | StrategyKind::Tensor(_) | StrategyKind::Hybrid(_) => procs,
    };
    // The whole run's layout, for the checks that depend on the worker count.
    let global = ParallelConfig { workers, comm: CommKind::Mpi, ..pc.clone() };
    global.validate(cfg)?;
    cfg.optimizer.validate()?;
    Ok(workers)
}

/// Runs this process's part of the job.
// Long: the rank layout of each strategy under MPI, one arm each, ending in the same run_ranks call.
pub fn run(
    mpi: &Mpi,
    cfg: &TrainConfig,
    pc: &ParallelConfig,
    sink: &mut dyn EventSink,
) -> Result<Option<TrainSummary>, TrainError> {
    let workers = validate(mpi, cfg, pc)?;
    let world = mpi.world();
    let me = world.rank();
    if me == 0 {
        tracing::info!(processes = world.size(), workers, library = %Mpi::library_version(), "MPI job");
    }
    let abort_world = {
        let w = world.clone();
        move |m: &str, code: i32| w.abort_with(m, code)
    };
    let ranks = match &pc.strategy {
        StrategyKind::ParamServer(p) => {
            let key = if me < p.servers { workers + me } else { me - p.servers };
            let comm = world.split(0, key)?;
            Ranks { comms: vec![(key, comm)], workers, abort: Box::new(abort_world), waits: Some(mpi_waits(world)) }
        }
        StrategyKind::Pipeline(_) | StrategyKind::Tensor(_) | StrategyKind::Hybrid(_) => {
            let comm = world.with_algorithm(crate::comm::Algorithm::Direct)?;
            Ranks {
                comms: vec![(me, Box::new(comm) as Box<dyn Communicator>)],
                workers,
                abort: Box::new(abort_world),
                waits: Some(mpi_waits(world)),
            }
        }
        StrategyKind::AllReduce(a) => {
            let algorithm = a.effective_algorithm();
            let net = world.with_algorithm(algorithm)?;
            if pc.workers == 1 {
                Ranks {
                    comms: vec![(me, Box::new(net) as Box<dyn Communicator>)],
                    workers,
                    abort: Box::new(abort_world),
                    waits: Some(mpi_waits(world)),
                }
            } else {
                let net = Arc::new(net);
                let locals = LocalComm::world(pc.workers, crate::comm::Algorithm::Direct, pc.comm_limit());
                let twin = locals[0].twin();
                let watcher = locals[0].twin();
                let base = me * pc.workers;
                let mpi = world.clone();
                let mut comms = Vec::new();
                for (t, local) in locals.into_iter().enumerate() {
                    comms.push((
                        me * pc.workers + t,
                        Box::new(HierComm::new(local, net.clone(), algorithm)?) as Box<dyn Communicator>,
                    ));
                }
                let w = world.clone();
                Ranks {
                    comms,
                    workers,
                    abort: Box::new(move |m: &str, code: i32| {
                        twin.abort(m);
                        w.abort_with(m, code)
                    }),
                    // Peers within this process, as ranks of the whole run; thread 0 also talks
                    // to the other processes.
                    waits: Some(Box::new(move || {
                        let mut w: Vec<_> = watcher
                            .waits()
                            .into_iter()
                            .map(|w| w.map(|(op, peer, t)| (op, peer.map(|p| base + p), t)))
                            .collect();
                        if let Some(first) = w.first_mut() {
                            *first = first.or_else(|| mpi.waiting_in());
                        }
                        w
                    })),
                }
            }
        }
    };
    run_and_gather(mpi, cfg, pc, ranks, sink)
}
