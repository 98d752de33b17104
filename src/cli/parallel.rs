//! The flags of parallel training (`ParallelArgs`, part of `convoy train`) and their
//! validation into a `ParallelConfig`.

use super::{invalid, ConfigError};
use crate::comm::Algorithm;
use crate::parallel::data_parallel::AllReduceConfig;
use crate::parallel::hybrid::HybridConfig;
use crate::parallel::param_server::{PsConfig, PsMode};
use crate::parallel::pipeline::{PipelineConfig, Schedule};
use crate::parallel::tensor_parallel::TensorConfig;
use crate::parallel::{CommKind, FailureKind, InjectFailure, ParallelConfig, StrategyKind};
use clap::Args;
use std::time::Duration;

/// `--strategy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StrategyArg {
    /// Replicas + all-reduce of gradient buckets (DDP, Horovod).
    Allreduce,
    /// Parameter server shards (sync, async or stale-synchronous).
    Ps,
    /// Layers cut into stages, one per worker; micro-batches flow through them.
    Pipeline,
    /// Data parallelism combined with another split: `--dp R --pp S` (R replicas of an
    /// S-stage pipeline).
    Hybrid,
    /// Every convolution and fully connected layer split across `--mp` workers.
    Tensor,
}

/// `--schedule` of the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ScheduleArg {
    /// All forwards, then all backwards.
    Gpipe,
    /// One forward, one backward (holds at most `stages` micro-batches of activations).
    #[value(name = "1f1b")]
    OneFOneB,
}

impl ScheduleArg {
    /// The schedule it names.
    pub fn schedule(self) -> Schedule {
        match self {
            ScheduleArg::Gpipe => Schedule::GPipe,
            ScheduleArg::OneFOneB => Schedule::OneFOneB,
        }
    }
}

/// `--allreduce`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AlgorithmArg {
    /// Shared memory: each rank sums its chunk straight from the others' buffers (threads).
    Direct,
    /// Reduce-scatter + all-gather around a ring.
    Ring,
    /// Pairwise tree in rank order, then broadcast.
    Tree,
    /// Reduce to rank 0, then broadcast.
    Naive,
}

/// `--batch-norm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BatchNormArg {
    /// Statistics over the global batch (SyncBatchNorm).
    Sync,
    /// Statistics over each worker's shard.
    Local,
}

/// `--ps-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PsModeArg {
    /// One update per global step (equals single-worker SGD).
    Sync,
    /// Every push applied at once.
    Async,
    /// Stale-synchronous: at most --staleness steps ahead of the slowest worker.
    Ssp,
}

/// `--comm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CommArg {
    /// MPI under an MPI launcher, threads otherwise.
    Auto,
    /// Threads of this process.
    Local,
    /// MPI.
    Mpi,
}

/// Flags of parallel training (part of `convoy train`).
#[derive(Debug, Args, Clone)]
pub struct ParallelArgs {
    /// Data-parallel workers (threads of this process; under MPI, threads of each process). The
    /// global batch (--batch-size) is split across all workers; the first batch%workers take one
    /// sample more.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Transport between processes: mpi when started by mpirun/srun (and built with
    /// --features mpi), threads of this process otherwise.
    #[arg(long, value_enum, default_value = "auto")]
    pub comm: CommArg,
    /// How the workers cooperate.
    #[arg(long, value_enum, default_value = "allreduce")]
    pub strategy: StrategyArg,
    /// All-reduce algorithm.
    #[arg(long = "allreduce", value_enum, default_value = "direct")]
    pub algorithm: AlgorithmArg,
    /// Gradient bucket cap in MiB (the first bucket is capped at 1 MiB).
    #[arg(long)]
    pub bucket_mb: Option<f64>,
    /// Reduce gradients after backward instead of overlapping with it.
    #[arg(long)]
    pub no_overlap: bool,
    /// Sum this many micro-batches locally before each all-reduce.
    #[arg(long)]
    pub accumulate: Option<usize>,
    /// Bitwise-identical results for 1, 2, 4 and 8 workers (needs --threads 1; slower).
    #[arg(long)]
    pub deterministic: bool,
    /// Batch-norm statistics under --strategy allreduce (and of the convolutions under hybrid
    /// --dp D --mp M): over the global batch (SyncBatchNorm,
    /// the same result as one worker) or over each worker's shard (DDP's default, no
    /// communication) [default: sync].
    #[arg(long = "batch-norm", value_enum)]
    pub batch_norm: Option<BatchNormArg>,
    /// Parameter-server consistency.
    #[arg(long, value_enum)]
    pub ps_mode: Option<PsModeArg>,
    /// Steps a worker may run ahead of the slowest (--ps-mode ssp; default 3).
    #[arg(long)]
    pub staleness: Option<u64>,
    /// Parameter-server shards (threads of their own).
    #[arg(long)]
    pub servers: Option<usize>,
    /// Pipeline stages (--strategy pipeline), one worker each.
    #[arg(long)]
    pub stages: Option<usize>,
    /// Micro-batches per global batch (--strategy pipeline) [stages × 2].
    #[arg(long)]
    pub micro_batches: Option<usize>,
    /// Pipeline schedule.
    #[arg(long = "pipeline-schedule", value_enum)]
    pub pipeline_schedule: Option<ScheduleArg>,
    /// Layers after which pipeline stages end (comma-separated; default: balance estimated FLOPs).
    #[arg(long, value_delimiter = ',')]
    pub split_after: Vec<String>,
    /// Data-parallel replicas (--strategy hybrid).
    #[arg(long)]
    pub dp: Option<usize>,
    /// Pipeline stages per replica (--strategy hybrid).
    #[arg(long)]
    pub pp: Option<usize>,
    /// Model-parallel slices per replica (--strategy hybrid: data-parallel convolutions,
    /// model-parallel classifier; not yet).
    #[arg(long)]
    pub mp: Option<usize>,
    /// Seconds without any worker finishing a step before the stall watchdog prints which
    /// workers are stuck in which phase (communication gives up after 5 × this).
    #[arg(long, default_value_t = 60.0)]
    pub stall_timeout: f64,
    /// End the run (exit 3) with the watchdog's report at the first stall.
    #[arg(long)]
    pub stall_abort: bool,
    /// Under MPI, wait for messages in MPI_Mprobe (MPI's own polling, a core per waiting rank)
    /// instead of polling, then yielding, then sleeping, which leaves the core to ranks that
    /// compute beside a waiting one.
    #[arg(long)]
    pub mpi_spin_wait: bool,
    /// Test hook: make worker RANK fail at STEP (RANK:STEP[:error|panic|hang]).
    #[arg(long, hide = true)]
    pub inject_failure: Option<String>,
}

impl ParallelArgs {
    /// Refuses the flags of data-parallel replicas (all-reduce, parameter server) for a
    /// strategy that splits the model.
    fn reject_replica_flags(&self, strategy: &str) -> Result<(), ConfigError> {
        for (given, flag) in [
            (self.bucket_mb.is_some(), "bucket-mb"),
            (self.no_overlap, "no-overlap"),
            (self.accumulate.is_some(), "accumulate"),
            (self.deterministic, "deterministic"),
            (self.batch_norm.is_some(), "batch-norm"),
            (self.ps_mode.is_some(), "ps-mode"),
            (self.staleness.is_some(), "staleness"),
            (self.servers.is_some(), "servers"),
        ] {
            if given {
                return Err(invalid(flag, format!("does not apply to --strategy {strategy}")));
            }
        }
        Ok(())
    }

    /// `--inject-failure`, parsed.
    fn inject_failure(&self) -> Result<Option<InjectFailure>, ConfigError> {
        Ok(match &self.inject_failure {
            None => None,
            Some(spec) => {
                let parts: Vec<&str> = spec.split(':').collect();
                let num = |s: &str| {
                    s.parse::<u64>()
                        .map_err(|_| invalid("inject-failure", format!("'{spec}' is not RANK:STEP[:error|panic|hang]")))
                };
                match parts.as_slice() {
                    [r, st] | [r, st, _] => Some(InjectFailure {
                        rank: num(r)? as usize,
                        step: num(st)?,
                        kind: match parts.get(2) {
                            None | Some(&"error") => FailureKind::Error,
                            Some(&"panic") => FailureKind::Panic,
                            Some(&"hang") => FailureKind::Hang,
                            Some(_) => {
                                return Err(invalid(
                                    "inject-failure",
                                    format!("'{spec}' is not RANK:STEP[:error|panic|hang]"),
                                ))
                            }
                        },
                    }),
                    _ => {
                        return Err(invalid("inject-failure", format!("'{spec}' is not RANK:STEP[:error|panic|hang]")))
                    }
                }
            }
        })
    }

    /// `--comm`.
    fn comm_kind(&self) -> CommKind {
        match self.comm {
            CommArg::Auto => CommKind::Auto,
            CommArg::Local => CommKind::Local,
            CommArg::Mpi => CommKind::Mpi,
        }
    }

    /// Worker threads this process will run (the pipeline runs one per stage).
    pub fn threads_per_process(&self) -> usize {
        match (self.strategy, self.stages) {
            (StrategyArg::Pipeline, Some(s)) if !crate::comm::launch::launched() => s.max(1),
            (StrategyArg::Pipeline, None) if !crate::comm::launch::launched() => self.workers.max(2),
            (StrategyArg::Tensor, _) if !crate::comm::launch::launched() => self.mp.unwrap_or(self.workers.max(2)),
            (StrategyArg::Hybrid, _) if !crate::comm::launch::launched() => {
                self.dp.unwrap_or(1).max(1) * self.pp.or(self.mp).unwrap_or(1).max(1)
            }
            _ => self.workers.max(1),
        }
    }

    /// Validates the flags into parallel settings.
    pub fn to_config(&self) -> Result<ParallelConfig, ConfigError> {
        self.check_flags_apply()?;
        let strategy = match self.strategy {
            StrategyArg::Tensor => {
                self.reject_replica_flags("tensor")?;
                StrategyKind::Tensor(TensorConfig {
                    mp: self.mp.unwrap_or(if self.workers > 1 { self.workers } else { 2 }),
                })
            }
            StrategyArg::Pipeline | StrategyArg::Hybrid => self.pipeline_or_hybrid()?,
            StrategyArg::Allreduce => self.allreduce()?,
            StrategyArg::Ps => self.parameter_server()?,
        };
        Ok(ParallelConfig {
            workers: self.workers,
            strategy,
            stall_timeout: Duration::from_secs_f64(self.stall_timeout),
            stall_abort: self.stall_abort,
            mpi_spin_wait: self.mpi_spin_wait,
            inject_failure: self.inject_failure()?,
            comm: self.comm_kind(),
        })
    }

    /// Refuses bad counts and the flags of a strategy other than the chosen one.
    fn check_flags_apply(&self) -> Result<(), ConfigError> {
        if self.workers == 0 {
            return Err(invalid("workers", "must be at least 1"));
        }
        if !(self.stall_timeout.is_finite() && self.stall_timeout > 0.0) {
            return Err(invalid(
                "stall-timeout",
                format!("{} must be a positive number of seconds", self.stall_timeout),
            ));
        }
        let pipeline_flags = [
            (self.stages.is_some(), "stages"),
            (self.micro_batches.is_some(), "micro-batches"),
            (self.pipeline_schedule.is_some(), "pipeline-schedule"),
            (!self.split_after.is_empty(), "split-after"),
        ];
        if !matches!(self.strategy, StrategyArg::Pipeline | StrategyArg::Hybrid) {
            if let Some((_, flag)) = pipeline_flags.iter().find(|f| f.0) {
                return Err(invalid(flag, "applies to --strategy pipeline; hint: add --strategy pipeline"));
            }
        }
        if self.strategy != StrategyArg::Hybrid {
            for (given, flag) in [
                (self.dp.is_some(), "dp"),
                (self.pp.is_some(), "pp"),
                (self.mp.is_some() && self.strategy != StrategyArg::Tensor, "mp"),
            ] {
                if given {
                    return Err(invalid(flag, "applies to --strategy hybrid; hint: add --strategy hybrid"));
                }
            }
        }
        Ok(())
    }

    /// `--strategy pipeline`, and `--strategy hybrid` (`--dp × --pp` replicas of a pipeline, or
    /// `--dp × --mp` with a model-parallel classifier).
    fn pipeline_or_hybrid(&self) -> Result<StrategyKind, ConfigError> {
        let hybrid = self.strategy == StrategyArg::Hybrid;
        // `--batch-norm` applies to the data-parallel convolutions of dp × mp.
        let bn_ok = hybrid && self.mp.is_some();
        let mut replica_flags = self.clone();
        if bn_ok {
            replica_flags.batch_norm = None;
        }
        replica_flags.reject_replica_flags(if hybrid { "hybrid" } else { "pipeline" })?;
        if hybrid && self.mp.is_some() {
            if self.pp.is_some()
                || self.stages.is_some()
                || self.micro_batches.is_some()
                || self.pipeline_schedule.is_some()
                || !self.split_after.is_empty()
            {
                return Err(invalid(
                    "mp",
                    "--dp × --mp (model-parallel classifier) does not combine with pipeline flags yet",
                ));
            }
            return Ok(StrategyKind::Hybrid(HybridConfig {
                dp: self.dp.unwrap_or(1),
                mp: self.mp.unwrap_or(2),
                sync_batch_norm: self.batch_norm != Some(BatchNormArg::Local),
            }));
        }
        if hybrid && (self.dp.is_none() || self.pp.is_none()) {
            return Err(invalid("dp", "--strategy hybrid needs --dp R with --pp S (R replicas of an S-stage pipeline) or --mp M (data-parallel convolutions, model-parallel classifier)"));
        }
        if hybrid && self.stages.is_some() {
            return Err(invalid("stages", "with --strategy hybrid the stages are --pp"));
        }
        let stages = self.pp.or(self.stages).unwrap_or(if self.workers > 1 { self.workers } else { 2 });
        Ok(StrategyKind::Pipeline(PipelineConfig {
            stages,
            micro_batches: self.micro_batches.unwrap_or(stages * 2),
            schedule: self.pipeline_schedule.unwrap_or(ScheduleArg::OneFOneB).schedule(),
            split_after: self.split_after.clone(),
            replicas: self.dp.unwrap_or(1),
        }))
    }

    /// `--strategy allreduce` (the default).
    fn allreduce(&self) -> Result<StrategyKind, ConfigError> {
        for (given, flag) in [
            (self.ps_mode.is_some(), "ps-mode"),
            (self.staleness.is_some(), "staleness"),
            (self.servers.is_some(), "servers"),
        ] {
            if given {
                return Err(invalid(flag, "applies to --strategy ps; hint: add --strategy ps"));
            }
        }
        let defaults = AllReduceConfig::default();
        Ok(StrategyKind::AllReduce(AllReduceConfig {
            algorithm: match self.algorithm {
                AlgorithmArg::Direct => Algorithm::Direct,
                AlgorithmArg::Ring => Algorithm::Ring,
                AlgorithmArg::Tree => Algorithm::Tree,
                AlgorithmArg::Naive => Algorithm::Naive,
            },
            bucket_mb: self.bucket_mb.unwrap_or(defaults.bucket_mb),
            overlap: !self.no_overlap,
            accumulate: self.accumulate.unwrap_or(1),
            deterministic: self.deterministic,
            sync_batch_norm: self.batch_norm != Some(BatchNormArg::Local),
        }))
    }

    /// `--strategy ps`.
    fn parameter_server(&self) -> Result<StrategyKind, ConfigError> {
        for (given, flag) in [
            (self.bucket_mb.is_some(), "bucket-mb"),
            (self.no_overlap, "no-overlap"),
            (self.accumulate.is_some(), "accumulate"),
            (self.deterministic, "deterministic"),
            (self.batch_norm.is_some(), "batch-norm"),
        ] {
            if given {
                return Err(invalid(flag, "applies to --strategy allreduce"));
            }
        }
        let mode = match self.ps_mode.unwrap_or(PsModeArg::Sync) {
            PsModeArg::Sync | PsModeArg::Async if self.staleness.is_some() => {
                return Err(invalid("staleness", "applies to --ps-mode ssp"));
            }
            PsModeArg::Sync => PsMode::Sync,
            PsModeArg::Async => PsMode::Async,
            PsModeArg::Ssp => PsMode::Ssp { staleness: self.staleness.unwrap_or(3) },
        };
        Ok(StrategyKind::ParamServer(PsConfig { mode, servers: self.servers.unwrap_or(1) }))
    }
}
