//! Checkpoints written on a thread of their own, so that training goes on while the files are
//! serialised, hashed, written and fsync'd (as PyTorch's `torch.distributed.checkpoint.async_save`
//! stages a copy and writes it in the background).
//!
//! The training thread copies what the checkpoint holds (the parameters; the optimizer state is
//! already a gathered copy) and hands it over; the cost left on the step is that copy. One write
//! is in flight at a time: the next checkpoint, a stop on a signal and the end of the run wait for
//! it, and the loop looks after every step whether it has finished, so a write that fails ends the
//! run (or warns, `--checkpoint-errors warn`) within a step of failing. A checkpoint is still only
//! committed (renamed into place, `latest` replaced) once all its files are on disk, so a crash
//! at any point leaves the previous one. Memory: one more copy of the parameters and the
//! optimizer state while a write is in flight.

use crate::checkpoint::{self, run::RunState, CheckpointError};
use crate::net::ParamLayout;
use crate::train::{OnCheckpointError, TrainError};
use std::path::PathBuf;
use std::thread::JoinHandle;

/// What one checkpoint holds.
pub struct Job {
    /// Checkpoint directory (`--checkpoint-dir`).
    pub dir: PathBuf,
    /// Newest checkpoints kept.
    pub keep: usize,
    /// The model's layout (names, shapes).
    pub layout: ParamLayout,
    /// The parameters (a copy).
    pub params: Vec<f32>,
    /// The optimizer state, named.
    pub state: Vec<(&'static str, Vec<f32>)>,
    /// `state.json`.
    pub run: RunState,
    /// Test hook: abort halfway through.
    pub crash: bool,
}

type Outcome = Result<PathBuf, TrainError>;

/// The writer of one run (the lead worker's).
pub struct Writer {
    on_error: OnCheckpointError,
    pending: Option<JoinHandle<Outcome>>,
}

impl Writer {
    /// A writer that ends the run on a failed write, or warns (`on_error`).
    pub fn new(on_error: OnCheckpointError) -> Writer {
        Writer { on_error, pending: None }
    }

    /// Starts writing `job` once the write in flight, if any, has finished (its error, under
    /// `--checkpoint-errors fail`, is returned instead).
    pub fn submit(&mut self, job: Job) -> Result<(), TrainError> {
        self.wait()?;
        let spawned = std::thread::Builder::new().name("checkpoint".into()).spawn(move || write(job));
        match spawned {
            Ok(h) => self.pending = Some(h),
            Err(e) => return Err(TrainError::Internal(format!("could not start the checkpoint writer thread: {e}"))),
        }
        Ok(())
    }

    /// The outcome of the write in flight if it has finished (`Ok(None)` while it runs or when
    /// there is none); see `wait`.
    pub fn poll(&mut self) -> Result<Option<PathBuf>, TrainError> {
        if self.pending.as_ref().is_some_and(JoinHandle::is_finished) {
            return self.wait();
        }
        Ok(None)
    }

    /// Waits for the write in flight: the folder written, `None` when there was none or it
    /// failed under `--checkpoint-errors warn` (warned about); its error under `fail`.
    pub fn wait(&mut self) -> Result<Option<PathBuf>, TrainError> {
        let Some(h) = self.pending.take() else { return Ok(None) };
        let outcome = h.join().unwrap_or_else(|panic| {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(TrainError::Internal(format!("the checkpoint writer panicked: {msg}")))
        });
        match outcome {
            Ok(dir) => {
                tracing::debug!(dir = %dir.display(), "checkpoint");
                Ok(Some(dir))
            }
            Err(e) if self.on_error == OnCheckpointError::Warn && matches!(e, TrainError::CheckpointWrite { .. }) => {
                // `--checkpoint-errors warn`: keep training, try again next time.
                tracing::warn!("{e}; training goes on (--checkpoint-errors warn)");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for Writer {
    /// A run that ends on an error still finishes the write in flight (a good checkpoint).
    fn drop(&mut self) {
        if let Some(h) = self.pending.take() {
            let _ = h.join();
        }
    }
}

fn write(job: Job) -> Outcome {
    let step = job.run.step;
    let refs: Vec<(&str, &[f32])> = job.state.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    checkpoint::run::save_checkpoint(&job.dir, job.keep, &job.layout, &job.params, &refs, job.run, job.crash).map_err(
        |source: CheckpointError| {
            // Read now: nothing else commits a checkpoint while this one is in flight.
            let previous = checkpoint::run::resolve(&job.dir).ok();
            TrainError::CheckpointWrite {
                step,
                dir: job.dir.join(checkpoint::run::folder_name(step)),
                previous,
                source,
            }
        },
    )
}
