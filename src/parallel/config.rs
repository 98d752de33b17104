//! How a run is parallelised: the strategy and its layout, the transport (`--comm`), and the
//! checks that refuse a configuration before any worker starts.

use super::data_parallel::AllReduceConfig;
use super::param_server::PsConfig;
use super::{hybrid, pipeline, tensor_parallel};
use crate::comm::launch;
use crate::train::{TrainConfig, TrainError};
use std::time::Duration;

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
    Tensor(tensor_parallel::TensorConfig),
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
    /// MPI receives wait in `MPI_Mprobe` rather than polling and sleeping (`--mpi-spin-wait`).
    pub mpi_spin_wait: bool,
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
