//! The data side of a run: opening the train and test sets (shared or split placement), the
//! feed a worker's loader reads, and evaluation over a whole test set.

use super::{TrainConfig, TrainError};
use crate::data::crop::{Crop, Place};
use crate::data::{loader::Feed, sampler::Sampler, sampler::Shard, split, Dataset, Split};
use crate::layers::{Backend, Ctx, Mode};
use crate::net::{BatchStats, ModelSpec, Net};
use crate::tensor::Tensor;
use std::path::Path;
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
        (
            crate::data::open_with(&cfg.data_dir, Split::Train, opts)?,
            crate::data::open_with(&cfg.data_dir, Split::Test, opts)?,
        )
    };
    for set in [&train, &test] {
        check_shape(&cfg.model, &cfg.data_dir, cfg.data.crop, set.sample_shape())?;
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

/// Checks that samples of `shape` from the data at `data`, cut to the `crop` window if there is
/// one, are `model`'s input.
pub fn check_shape(model: &ModelSpec, data: &Path, crop: Option<Crop>, shape: &[usize]) -> Result<(), TrainError> {
    let data = data.display().to_string();
    let Some(crop) = crop else {
        if shape == model.input.as_slice() {
            return Ok(());
        }
        return Err(TrainError::DataModelMismatch {
            data,
            data_shape: shape.to_vec(),
            model: model.name.clone(),
            model_shape: model.input.clone(),
        });
    };
    let cut = crop
        .out_shape(shape)
        .map_err(|m| TrainError::Config(format!("--crop-size {}x{} on {data}: {m}", crop.h, crop.w)))?;
    if cut[..] != model.input[..] {
        let want = &model.input;
        return Err(TrainError::Config(format!(
            "dataset {data} has samples of shape {shape:?}, cut to {cut:?} by --crop-size {}x{}, but model '{}' expects {want:?}; hint: crop to the model's input ({}x{})",
            crop.h,
            crop.w,
            model.name,
            want.get(1).copied().unwrap_or(0),
            want.get(2).copied().unwrap_or(0)
        )));
    }
    Ok(())
}

/// What the loader of the worker holding `shard` reads: the training set, its sampler (split
/// placement: one part per data-parallel rank), the random crop, the augmentation and the loader
/// threads.
pub fn feed(cfg: &TrainConfig, train_set: &Arc<dyn Dataset>, shard: Shard) -> Feed {
    let mut sampler = Sampler::new(train_set.len(), cfg.batch_size, cfg.seed, false);
    if cfg.data.split {
        sampler = sampler.split(shard.world / shard.group.max(1));
    }
    Feed {
        data: train_set.clone(),
        sampler,
        crop: cfg.data.crop,
        augment: cfg.data.augment.clone(),
        seed: cfg.seed,
        threads: cfg.data.loader_threads.max(1),
    }
}

/// Evaluates `params` on a whole dataset (never augmented; cut to the center `crop` window if
/// given, as Caffe's TEST phase does), in batches of `batch`.
pub fn evaluate(
    net: &mut Net,
    params: &[f32],
    data: &dyn Dataset,
    crop: Option<Crop>,
    batch: usize,
    threads: usize,
    backend: Backend,
) -> Result<BatchStats, TrainError> {
    let shape: Vec<usize> = match crop {
        Some(k) => k
            .out_shape(data.sample_shape())
            .map_err(|m| TrainError::Config(format!("--crop-size {}x{}: {m}", k.h, k.w)))?
            .to_vec(),
        None => data.sample_shape().to_vec(),
    };
    let per: usize = shape.iter().product();
    let norm = data.normalization();
    let mut x = Tensor::default();
    let mut labels = Vec::with_capacity(batch);
    let mut whole = Vec::new();
    let mut total = BatchStats::default();
    let mut start = 0;
    while start < data.len() {
        let n = batch.min(data.len() - start);
        let mut full = vec![n];
        full.extend_from_slice(&shape);
        x.resize(&full);
        labels.clear();
        for (i, chunk) in x.data_mut().chunks_exact_mut(per).enumerate() {
            labels.push(match crop {
                Some(k) => k.read(data, start + i, Place::Center, chunk, &mut whole)?,
                None => data.read_raw(start + i, chunk)?,
            });
            norm.apply(chunk, shape[0]);
        }
        let ctx = Ctx { mode: Mode::Eval, threads, backend, ..Ctx::simple(Mode::Eval) };
        total.add(&net.evaluate(&ctx, params, &x, &labels)?);
        start += n;
    }
    Ok(total)
}
