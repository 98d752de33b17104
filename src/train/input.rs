//! The data side of a run: opening the train and test sets (shared or split placement), the
//! feed a worker's loader reads, and evaluation over a whole test set.

use super::{TrainConfig, TrainError};
use crate::data::{loader::Feed, sampler::Sampler, sampler::Shard, split, Dataset, Split};
use crate::layers::{Ctx, Mode};
use crate::net::{BatchStats, Net};
use crate::tensor::Tensor;
use std::sync::Arc;

/// A run's training and test sets.
pub type TrainTest = (Arc<dyn Dataset>, Arc<dyn Dataset>);

/// Loads the train and test splits for a single worker and checks they fit the model.
pub fn load_data(cfg: &TrainConfig) -> Result<TrainTest, TrainError> {
    load_data_parts(cfg, &[0], 1)
}

/// Loads the train and test splits and checks they fit the model. With `--data-split` the
/// training set is made of the `local` parts (data-parallel ranks of this process) of `parts`,
/// and the test set is the test split of the first of them (rank 0's evaluates); otherwise
/// `local` and `parts` do not matter.
pub fn load_data_parts(cfg: &TrainConfig, local: &[usize], parts: usize) -> Result<TrainTest, TrainError> {
    let opts = &cfg.data;
    let (train, test): TrainTest = if opts.split {
        if !cfg.batch_size.is_multiple_of(parts) {
            return Err(TrainError::Config(format!(
                "--data-split with {parts} data-parallel ranks needs a --batch-size divisible by {parts} (every rank takes the same share of each batch), not {}",
                cfg.batch_size
            )));
        }
        let local = if local.is_empty() { &[0][..] } else { local };
        let train = split::SplitSet::open(&cfg.data_dir, opts, local, parts)?;
        let test = crate::data::open_with(&split::part_path(&cfg.data_dir, local[0]), Split::Test, opts)?;
        tracing::debug!(parts, local = ?local, samples = train.len(), "split data placement");
        (Arc::new(train), test)
    } else {
        (crate::data::open_with(&cfg.data_dir, Split::Train, opts)?, crate::data::open_with(&cfg.data_dir, Split::Test, opts)?)
    };
    if train.sample_shape() != cfg.model.input.as_slice() {
        return Err(TrainError::DataModelMismatch {
            data: cfg.data_dir.display().to_string(),
            data_shape: train.sample_shape().to_vec(),
            model: cfg.model.name.clone(),
            model_shape: cfg.model.input.clone(),
        });
    }
    if train.num_classes() > cfg.model.classes {
        return Err(TrainError::Config(format!(
            "the data in {} has {} classes but model '{}' has {} outputs; hint: use a model with classes = {}",
            cfg.data_dir.display(),
            train.num_classes(),
            cfg.model.name,
            cfg.model.classes,
            train.num_classes()
        )));
    }
    Ok((train, test))
}

/// What the loader of the worker holding `shard` reads: the training set, its sampler (split
/// placement: one part per data-parallel rank), the augmentation and the loader threads.
pub fn feed(cfg: &TrainConfig, train_set: &Arc<dyn Dataset>, shard: Shard) -> Feed {
    let mut sampler = Sampler::new(train_set.len(), cfg.batch_size, cfg.seed, false);
    if cfg.data.split {
        sampler = sampler.split(shard.world / shard.group.max(1));
    }
    Feed { data: train_set.clone(), sampler, augment: cfg.data.augment.clone(), seed: cfg.seed, threads: cfg.data.loader_threads.max(1) }
}

/// Evaluates `params` on a whole dataset (never augmented), in batches of `batch`.
pub fn evaluate(net: &mut Net, params: &[f32], data: &dyn Dataset, batch: usize, threads: usize) -> Result<BatchStats, TrainError> {
    let shape: Vec<usize> = data.sample_shape().to_vec();
    let per: usize = shape.iter().product();
    let norm = data.normalization();
    let mut x = Tensor::default();
    let mut labels = Vec::with_capacity(batch);
    let mut total = BatchStats::default();
    let mut start = 0;
    while start < data.len() {
        let n = batch.min(data.len() - start);
        let mut full = vec![n];
        full.extend_from_slice(&shape);
        x.resize(&full);
        labels.clear();
        for (i, chunk) in x.data_mut().chunks_exact_mut(per).enumerate() {
            labels.push(data.read_raw(start + i, chunk)?);
            norm.apply(chunk, shape[0]);
        }
        let ctx = Ctx { mode: Mode::Eval, threads, ..Ctx::simple(Mode::Eval) };
        total.add(&net.evaluate(&ctx, params, &x, &labels)?);
        start += n;
    }
    Ok(total)
}
