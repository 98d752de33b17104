//! Parallel training: the strategies (each a `train::Strategy` for one worker) and `run`, which
//! starts the workers (and parameter servers) as threads of this process, joined by a
//! `LocalComm`, and turns their results into one run.
//!
//! Every worker runs `train::run_worker` on its shard of each global batch; rank 0 leads
//! (progress, evaluation, saving). A worker that returns an error or panics aborts the
//! communicator, so every other rank's next collective fails at once and the run ends with the
//! first real error, naming the worker and the step.

mod config;
pub mod data_parallel;
mod guard;
pub mod hybrid;
mod kind;
#[cfg(feature = "mpi")]
mod mpi;
mod owned;
pub mod param_server;
pub mod partition;
pub mod pipeline;
mod ranks;
pub mod tensor_parallel;
mod watchdog;

use crate::comm::{CommError, Communicator, LocalComm};
use crate::train::{self, events::EventSink, TrainConfig, TrainError, TrainSummary};
pub use config::{CommKind, FailureKind, InjectFailure, ParallelConfig, StrategyKind, BUILD_WITH_MPI};
use data_parallel::AllReduceConfig;
use ranks::{run_ranks, Ranks};

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
                crate::comm::mpi::set_spin_wait(pc.mpi_spin_wait);
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
    let (servers, algorithm) = pc.strategy.servers_and_algorithm();
    let workers = pc.strategy.workers_on_threads(pc.workers);
    let comms = LocalComm::world(workers + servers, algorithm, pc.comm_limit());
    let supervisor = comms[0].twin();
    let watcher = comms[0].twin();
    let ranks = comms.into_iter().enumerate().map(|(r, c)| (r, Box::new(c) as Box<dyn Communicator>)).collect();
    let abort = Box::new(move |m: &str, code: i32| supervisor.abort_with(m, code));
    run_ranks(cfg, pc, Ranks { comms: ranks, workers, abort, waits: Some(Box::new(move || watcher.waits())) }, sink)?
        .ok_or_else(|| TrainError::Comm(CommError::Invalid("no worker returned a result".into())))
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
