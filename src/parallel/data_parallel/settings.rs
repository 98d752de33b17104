//! `AllReduceConfig`: the settings of `--strategy allreduce` (algorithm, bucket size, overlap,
//! accumulation, determinism, batch-norm statistics), their defaults, and the checks that reject
//! combinations the strategy cannot run.

use super::DETERMINISTIC_LEAVES;
use crate::comm::Algorithm;
use crate::train::{TrainConfig, TrainError};

/// Settings of `--strategy allreduce`.
#[derive(Clone, Debug, PartialEq)]
pub struct AllReduceConfig {
    /// All-reduce algorithm (`--allreduce`).
    pub algorithm: Algorithm,
    /// Bucket cap in MiB (`--bucket-mb`).
    pub bucket_mb: f64,
    /// Reduce buckets while backward runs (off: `--no-overlap`).
    pub overlap: bool,
    /// Micro-batches summed locally per reduction (`--accumulate`).
    pub accumulate: usize,
    /// Bitwise-reproducible across worker counts (`--deterministic`).
    pub deterministic: bool,
    /// Batch-norm statistics over the global batch (SyncBatchNorm, the default: the same
    /// result as one worker), or over each worker's shard (`--batch-norm local`, DDP's default).
    pub sync_batch_norm: bool,
}

impl Default for AllReduceConfig {
    fn default() -> Self {
        AllReduceConfig {
            algorithm: Algorithm::Direct,
            bucket_mb: 25.0,
            overlap: true,
            accumulate: 1,
            deterministic: false,
            sync_batch_norm: true,
        }
    }
}

impl AllReduceConfig {
    /// The all-reduce algorithm the communicator must use (`--deterministic` needs the tree).
    pub fn effective_algorithm(&self) -> Algorithm {
        if self.deterministic {
            Algorithm::Tree
        } else {
            self.algorithm
        }
    }

    /// Checks the settings for `workers` workers of run `cfg`.
    pub fn validate(&self, workers: usize, cfg: &TrainConfig) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if !(self.bucket_mb.is_finite() && self.bucket_mb > 0.0) {
            return bad(format!(
                "--bucket-mb {} must be a positive number of MiB; hint: 25 is DDP's default",
                self.bucket_mb
            ));
        }
        if self.accumulate == 0 {
            return bad("--accumulate must be at least 1".into());
        }
        if self.deterministic {
            if !workers.is_power_of_two() || workers > DETERMINISTIC_LEAVES {
                return bad(format!(
                    "--deterministic works with 1, 2, 4 or 8 workers, not {workers}; hint: the global batch is cut into {DETERMINISTIC_LEAVES} fixed micro-shards"
                ));
            }
            if self.accumulate != 1 {
                return bad("--deterministic fixes its own micro-batches; hint: drop --accumulate".into());
            }
            if cfg.threads != 1 {
                return bad("--deterministic needs --threads 1 (the intra-op split changes summation order)".into());
            }
            if crate::net::Net::build(&cfg.model)?.has_buffers() {
                return bad(format!(
                    "--deterministic does not support batch norm yet (model '{}'): its micro-shards would each normalise alone; hint: drop --deterministic",
                    cfg.model.name
                ));
            }
        }
        Ok(())
    }
}
