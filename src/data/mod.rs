//! Datasets: the `Dataset` trait, the IDX reader (MNIST, Fashion-MNIST), the CIFAR-10/100 binary
//! reader, image folders, synthetic data, augmentation and normalisation, the seeded sharded
//! sampler and the prefetching loader. docs/data.md is the user's view of all of it.
//!
//! A dataset hands out raw samples (pixels scaled to [0, 1], ToTensor's scale) and names the
//! normalisation it is usually trained with; `open_with` wraps it with the one chosen by the
//! user (`--normalize`), and the loader cuts the `--crop-size` window (crop.rs), augments the raw
//! pixels of training samples and then normalises them (Caffe's order: crop, mirror, mean and
//! scale; torchvision's: crop and flip, then ToTensor and Normalize).
//!
//! Placement (Intel Caffe's shared vs split DB): by default every rank opens the whole dataset
//! and reads only its shard of each global batch; with `--data-split` each data-parallel rank
//! opens its own part (`split.rs`).

pub mod augment;
pub mod cifar;
pub mod crop;
pub mod folder;
pub mod idx;
pub mod loader;
pub mod sampler;
pub mod split;
pub mod synthetic;

pub use augment::{Augment, Normalize};
pub use crop::Crop;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

/// How samples are made from the files (`--image-size`, `--crop-size`, `--normalize`,
/// `--augment`, `--loader-threads`, `--data-split`).
#[derive(Clone, Debug, PartialEq)]
pub struct DataOptions {
    /// Image folders: every image is resized and center-cropped to (H, W); `None`: the model's.
    pub image_size: Option<[usize; 2]>,
    /// Image folders: 1 (grayscale) or 3 (RGB) channels; `None`: the model's, else 3.
    pub channels: Option<usize>,
    /// Replaces the dataset's own normalisation; `None`: the dataset's (MNIST's, CIFAR's, none).
    pub normalize: Option<Normalize>,
    /// The window every sample is cut to (random in training, centered in evaluation); `None`:
    /// the whole sample.
    pub crop: Option<Crop>,
    /// Augmentation of training samples (never of the test set).
    pub augment: Augment,
    /// Threads decoding and augmenting batches ahead of the trainer (≥ 1).
    pub loader_threads: usize,
    /// Each data-parallel rank reads its own part: `{rank}` in the data path is replaced.
    pub split: bool,
}

impl Default for DataOptions {
    fn default() -> Self {
        DataOptions {
            image_size: None,
            channels: None,
            normalize: None,
            crop: None,
            augment: Augment::default(),
            loader_threads: 1,
            split: false,
        }
    }
}

/// Opens `split` of the dataset at `path` with default options (IDX, CIFAR, synthetic; an image
/// folder needs `open_with` and an image size).
pub fn open(path: &Path, split: Split) -> Result<Arc<dyn Dataset>, DataError> {
    open_with(path, split, &DataOptions::default())
}

/// Opens `split` of the dataset at `path`: `synthetic:CxHxW:CLASSES[:TRAIN[:TEST]]`, CIFAR-10/100
/// binary files, an image folder (`train/`, `test/` or `val/` with one folder per class, and no
/// IDX files beside them), else the IDX files of MNIST or Fashion-MNIST. Normalised as `opts.normalize` says.
pub fn open_with(path: &Path, split: Split, opts: &DataOptions) -> Result<Arc<dyn Dataset>, DataError> {
    let raw: Arc<dyn Dataset> = if let Some(spec) = synthetic::Spec::from_path(path) {
        Arc::new(synthetic::Synthetic::new(spec?, split))
    } else if let Some(kind) = cifar::detect(path) {
        Arc::new(cifar::CifarDataset::load_dir(path, kind, split)?)
    } else if folder::detect(path) && !idx::detect(path) {
        let size = opts.image_size.ok_or_else(|| DataError::Format {
            path: path.to_path_buf(),
            msg: "an image folder needs an image size; hint: pass --image-size N (images are resized and center-cropped to N×N)".into(),
        })?;
        Arc::new(folder::FolderDataset::load_dir(path, split, size, opts.channels.unwrap_or(3))?)
    } else {
        Arc::new(idx::IdxDataset::load_dir(path, split)?)
    };
    match &opts.normalize {
        None => Ok(raw),
        Some(n) => {
            n.check_channels(raw.sample_shape()[0])
                .map_err(|msg| DataError::Format { path: path.to_path_buf(), msg })?;
            Ok(Arc::new(Normalized { inner: raw, norm: n.clone() }))
        }
    }
}

/// Which part of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The training set.
    Train,
    /// The test set.
    Test,
}

/// Errors reading a dataset; each names the file (and the record or sample) and ends with a hint.
#[derive(Debug, Error)]
pub enum DataError {
    /// A file or directory is missing or unreadable.
    #[error("cannot read {path}: {source}; hint: check --data (the vendored MNIST is data/mnist; ../shared/datasets/mnist has a copy)")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// None of the candidate file names exists in the directory.
    #[error("no {what} file in {dir} (looked for {candidates}); hint: pass --data DIR with MNIST-format IDX files, CIFAR binary files or an image folder (docs/data.md)")]
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
    /// One record (sample) of a file is bad.
    #[error("{path}: record {record}: {msg}")]
    Record {
        /// Path.
        path: PathBuf,
        /// The record's index in the file (0-based).
        record: usize,
        /// What is wrong, with a hint.
        msg: String,
    },
    /// A loader thread failed (a bug, not bad data: please report it).
    #[error("data loader: {0}")]
    Internal(String),
}

impl DataError {
    /// True when the data (or the flags naming it) are at fault, false for an internal failure.
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, DataError::Internal(_))
    }
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
    /// Writes sample `i` un-normalised (pixels scaled to [0, 1]) into `out` (length = product of
    /// `sample_shape`), returns its label. Fails only for data read lazily (image files).
    fn read_raw(&self, i: usize, out: &mut [f32]) -> Result<u32, DataError>;
    /// The per-channel normalisation the model sees this dataset with.
    fn normalization(&self) -> Normalize {
        Normalize::identity()
    }
    /// Writes sample `i` as the model sees it (raw, then normalised), returns its label.
    fn get_into(&self, i: usize, out: &mut [f32]) -> Result<u32, DataError> {
        let label = self.read_raw(i, out)?;
        self.normalization().apply(out, self.sample_shape()[0]);
        Ok(label)
    }
}

/// A dataset with another normalisation (`--normalize`).
struct Normalized {
    inner: Arc<dyn Dataset>,
    norm: Normalize,
}

impl Dataset for Normalized {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn sample_shape(&self) -> &[usize] {
        self.inner.sample_shape()
    }
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
    fn read_raw(&self, i: usize, out: &mut [f32]) -> Result<u32, DataError> {
        self.inner.read_raw(i, out)
    }
    fn normalization(&self) -> Normalize {
        self.norm.clone()
    }
}
