//! Datasets: the `Dataset` trait, the IDX reader (MNIST, Fashion-MNIST), the CIFAR-10/100 binary
//! reader, the seeded sharded sampler and the prefetching loader.
//!
//! Every rank opens the whole dataset and reads only its shard of each global batch (Intel
//! Caffe's "shared DB" placement); the sampler already takes `(rank, world)`.

pub mod cifar;
pub mod idx;
pub mod loader;
pub mod sampler;

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Opens `split` of the dataset in `dir`: CIFAR-10/100 binary files when present, else the IDX
/// files of MNIST or Fashion-MNIST.
pub fn open(dir: &Path, split: Split) -> Result<Arc<dyn Dataset>, DataError> {
    Ok(match cifar::detect(dir) {
        Some(kind) => Arc::new(cifar::CifarDataset::load_dir(dir, kind, split)?),
        None => Arc::new(idx::IdxDataset::load_dir(dir, split)?),
    })
}
use thiserror::Error;

/// Which part of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The training set.
    Train,
    /// The test set.
    Test,
}

/// Errors reading a dataset; each names the file and ends with a hint.
#[derive(Debug, Error)]
pub enum DataError {
    /// A file or directory is missing or unreadable.
    #[error("cannot read {path}: {source}; hint: copy ../shared/datasets/mnist into data/mnist or pass --data DIR")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// None of the candidate file names exists in the directory.
    #[error("no {what} file in {dir} (looked for {candidates}); hint: pass --data DIR with the MNIST-format IDX files")]
    NotFound {
        /// Directory searched.
        dir: PathBuf,
        /// What was looked for.
        what: &'static str,
        /// Names tried.
        candidates: String,
    },
    /// The file is not what it should be.
    #[error("{path}: {msg}")]
    Format {
        /// Path.
        path: PathBuf,
        /// What is wrong, with a hint.
        msg: String,
    },
}

/// A labelled image dataset.
pub trait Dataset: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;
    /// True when empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Per-sample shape [C, H, W].
    fn sample_shape(&self) -> &[usize];
    /// Number of classes.
    fn num_classes(&self) -> usize;
    /// Writes sample `i` (normalised) into `out` (length = product of `sample_shape`), returns its label.
    fn get_into(&self, i: usize, out: &mut [f32]) -> u32;
}
