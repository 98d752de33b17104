//! The errors of a run and their exit codes.

use super::stop;
use crate::checkpoint::CheckpointError;
use crate::comm::CommError;
use crate::data::DataError;
use crate::net::NetError;
use crate::optim::OptimError;
use std::path::PathBuf;
use thiserror::Error;

/// Errors of a run. `exit_code` tells bad input (2) from failures (1).
#[derive(Debug, Error)]
pub enum TrainError {
    /// The dataset could not be loaded.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The model could not be built, or failed at run time.
    #[error(transparent)]
    Net(#[from] NetError),
    /// Bad optimizer settings.
    #[error(transparent)]
    Optim(#[from] OptimError),
    /// Weights could not be saved or loaded.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The `--init-from` weights cannot be used (missing, not safetensors, another model).
    #[error("--init-from: {0}{hint}", hint = init_from_hint(.0))]
    InitFrom(CheckpointError),
    /// A checkpoint could not be written (`--checkpoint-errors fail`).
    #[error("could not write the checkpoint of step {step} into {}: {source}; {}; hint: free space on that disk, or pass another --checkpoint-dir, or --checkpoint-errors warn to keep training when a checkpoint cannot be written", dir.display(), match previous {
        Some(p) => format!("the previous checkpoint {} is intact (resume with --resume {})", p.display(), p.display()),
        None => "no earlier checkpoint exists".to_string(),
    })]
    CheckpointWrite {
        /// The step whose checkpoint failed.
        step: u64,
        /// The folder it was to become.
        dir: PathBuf,
        /// The newest committed checkpoint, if any.
        previous: Option<PathBuf>,
        /// What failed (names the path).
        source: CheckpointError,
    },
    /// The dataset does not fit the model.
    #[error("dataset {data} has samples of shape {data_shape:?} but model '{model}' expects {model_shape:?}; hint: pick a model for this dataset")]
    DataModelMismatch {
        /// Data directory.
        data: String,
        /// Per-sample data shape.
        data_shape: Vec<usize>,
        /// Model name.
        model: String,
        /// Per-sample model input.
        model_shape: Vec<usize>,
    },
    /// The loss or the parameters became NaN or infinite.
    #[error("{what} is not finite at step {step}{}; the last checkpoint, if any, is the last good one; hint: lower the learning rate", tensor.as_ref().map(|t| format!(" (first non-finite parameter tensor: {t})")).unwrap_or_default())]
    NonFinite {
        /// Step at which it happened.
        step: u64,
        /// "loss" or "the model".
        what: &'static str,
        /// The first parameter tensor holding a NaN or infinity after the step.
        tensor: Option<String>,
    },
    /// Communication between workers failed.
    #[error(transparent)]
    Comm(#[from] CommError),
    /// Bad parallel settings (workers, strategy, buckets, ...).
    #[error("{0}")]
    Config(String),
    /// A worker failed (in a run with several workers).
    #[error("worker {rank} failed at step {step}: {source}")]
    Worker {
        /// The worker's rank.
        rank: usize,
        /// The step it was running (1-based; 0 = set-up).
        step: u64,
        /// What went wrong.
        source: Box<TrainError>,
    },
    /// A parameter-server shard failed.
    #[error("parameter server {index} failed: {source}")]
    Server {
        /// Server shard index.
        index: usize,
        /// What went wrong.
        source: Box<TrainError>,
    },
    /// Something that should not happen went wrong in the machinery of a run.
    #[error("{0}")]
    Internal(String),
    /// A worker thread panicked (a bug: please report it).
    #[error("panicked: {0}")]
    Panicked(String),
    /// Stopped by SIGINT/SIGTERM after finishing a step.
    #[error("stopped by {} after step {step}{}", stop::name(*signal), match saved {
        Some(dir) => format!("; checkpoint saved to {}; resume with the same flags plus --resume {}", dir.display(), dir.display()),
        None => "; nothing saved (hint: --checkpoint-dir makes a stop write a checkpoint)".to_string(),
    })]
    Interrupted {
        /// The signal.
        signal: i32,
        /// Steps done.
        step: u64,
        /// The checkpoint written on the way out.
        saved: Option<PathBuf>,
    },
    /// A failure made on purpose by a test hook (`--inject-failure`).
    #[error("injected failure")]
    Injected,
    /// The stall watchdog ended the run (`--stall-abort`); the message is its report.
    #[error("{0}; the run was ended by --stall-abort")]
    Stalled(String),
}

fn init_from_hint(e: &CheckpointError) -> &'static str {
    match e {
        CheckpointError::Io { .. } => "; hint: pass a safetensors file, e.g. written by `convoy train --save` or by `safetensors.torch.save_file(model.state_dict(), ...)`",
        _ => "",
    }
}

impl TrainError {
    /// Process exit code: 2 for bad input (data, model, settings, weights file), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            TrainError::Data(e) => {
                if e.is_bad_input() {
                    2
                } else {
                    1
                }
            }
            TrainError::Optim(_) | TrainError::DataModelMismatch { .. } | TrainError::InitFrom(_) => 2,
            TrainError::Checkpoint(CheckpointError::Io { .. }) => 1,
            TrainError::Checkpoint(_) => 2,
            TrainError::Net(NetError::Layer { .. } | NetError::Spec { .. }) => 2,
            TrainError::Net(NetError::Loss(_)) => 2,
            TrainError::Config(_) => 2,
            TrainError::NonFinite { .. }
            | TrainError::Comm(_)
            | TrainError::Injected
            | TrainError::CheckpointWrite { .. } => 1,
            TrainError::Worker { source, .. } | TrainError::Server { source, .. } => source.exit_code(),
            TrainError::Panicked(_) | TrainError::Internal(_) => 1,
            TrainError::Interrupted { signal, .. } => stop::exit_code(*signal),
            TrainError::Stalled(_) => Self::STALLED_EXIT,
        }
    }

    /// Exit code of a run ended by the stall watchdog (`--stall-abort`).
    pub const STALLED_EXIT: u8 = 3;

    /// This error as the failure of worker `rank` at `step` (kept as it is when it already names
    /// a worker, or is only the echo of another rank's failure).
    pub fn at_worker(self, rank: usize, step: u64) -> TrainError {
        match self {
            // Bad `--init-from` weights are the same for every worker: not a worker's failure.
            e @ (TrainError::Worker { .. }
            | TrainError::Comm(CommError::PeerFailed { .. })
            | TrainError::Interrupted { .. }
            | TrainError::InitFrom(_)) => e,
            e => TrainError::Worker { rank, step, source: Box::new(e) },
        }
    }

    /// True when this error only reports that another rank failed.
    pub fn is_echo(&self) -> bool {
        matches!(self, TrainError::Comm(CommError::PeerFailed { .. }))
            || matches!(self, TrainError::Worker { source, .. } | TrainError::Server { source, .. } if source.is_echo())
    }
}
