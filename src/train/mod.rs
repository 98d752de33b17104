//! The training loop: epochs or steps over a sharded, shuffled sampler, SGD-family updates on the
//! flat parameter buffer, evaluation after each epoch, typed events for progress/logs/metrics.
//!
//! This file runs one worker. It does not know about parallel strategies; those reuse
//! `Net::forward_backward` and the optimizer on the same flat buffers.

pub mod events;

use crate::checkpoint::{self, CheckpointError};
use crate::data::{idx::IdxDataset, loader::Loader, sampler::Sampler, DataError, Dataset, Split};
use crate::layers::{Ctx, Mode};
use crate::net::{BatchStats, ModelSpec, Net, NetError};
use crate::optim::{schedule::LrSchedule, OptimError, OptimizerConfig};
use crate::tensor::Tensor;
use events::{Event, EventSink};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use thiserror::Error;

/// Everything a training run needs, validated (see `cli` for how flags become this).
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// The model.
    pub model: ModelSpec,
    /// Directory with the IDX files.
    pub data_dir: PathBuf,
    /// Epochs to run (ignored when `steps` is set).
    pub epochs: u64,
    /// Stop after this many optimisation steps instead of full epochs.
    pub steps: Option<u64>,
    /// Global batch size.
    pub batch_size: usize,
    /// Optimizer and its hyper-parameters.
    pub optimizer: OptimizerConfig,
    /// Learning rate and schedule.
    pub schedule: LrSchedule,
    /// Seed of initialisation, shuffling and dropout.
    pub seed: u64,
    /// Intra-op threads.
    pub threads: usize,
    /// Evaluate on the test set after every epoch (always at the end).
    pub eval_each_epoch: bool,
    /// Write weights here at the end (safetensors).
    pub save: Option<PathBuf>,
    /// Start from these weights instead of a fresh initialisation.
    pub init_from: Option<PathBuf>,
}

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
    /// The loss became NaN or infinite.
    #[error("loss is not finite at step {step}; hint: lower the learning rate")]
    NonFinite {
        /// Step at which it happened.
        step: u64,
    },
}

impl TrainError {
    /// Process exit code: 2 for bad input (data, model, settings, weights file), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            TrainError::Data(_) | TrainError::Optim(_) | TrainError::DataModelMismatch { .. } => 2,
            TrainError::Checkpoint(CheckpointError::Io { .. }) => 1,
            TrainError::Checkpoint(_) => 2,
            TrainError::Net(NetError::Layer { .. } | NetError::Spec { .. }) => 2,
            TrainError::Net(NetError::Loss(_)) => 2,
            TrainError::NonFinite { .. } => 1,
        }
    }
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    /// Optimisation steps done.
    pub steps: u64,
    /// Final test accuracy (top-1).
    pub test_acc: f64,
    /// Final mean test loss.
    pub test_loss: f64,
    /// Mean training loss of the last step.
    pub last_loss: f64,
    /// Wall time.
    pub seconds: f64,
    /// Mean training throughput, images/s.
    pub images_per_sec: f64,
    /// Final parameters (flat).
    pub params: Vec<f32>,
}

/// Loads the train and test splits and checks they fit the model.
pub fn load_data(cfg: &TrainConfig) -> Result<(Arc<dyn Dataset>, Arc<dyn Dataset>), TrainError> {
    let train: Arc<dyn Dataset> = Arc::new(IdxDataset::load_dir(&cfg.data_dir, Split::Train)?);
    let test: Arc<dyn Dataset> = Arc::new(IdxDataset::load_dir(&cfg.data_dir, Split::Test)?);
    if train.sample_shape() != cfg.model.input.as_slice() {
        return Err(TrainError::DataModelMismatch {
            data: cfg.data_dir.display().to_string(),
            data_shape: train.sample_shape().to_vec(),
            model: cfg.model.name.clone(),
            model_shape: cfg.model.input.clone(),
        });
    }
    Ok((train, test))
}

/// Evaluates `params` on a whole dataset, in batches of `batch`.
pub fn evaluate(net: &mut Net, params: &[f32], data: &dyn Dataset, batch: usize, threads: usize) -> Result<BatchStats, NetError> {
    let shape: Vec<usize> = data.sample_shape().to_vec();
    let per: usize = shape.iter().product();
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
            labels.push(data.get_into(start + i, chunk));
        }
        let ctx = Ctx { mode: Mode::Eval, threads, ..Ctx::simple(Mode::Eval) };
        total.add(&net.evaluate(&ctx, params, &x, &labels)?);
        start += n;
    }
    Ok(total)
}

/// Runs a whole single-worker training run, emitting events to `sink`.
pub fn train(cfg: &TrainConfig, sink: &mut dyn EventSink) -> Result<TrainSummary, TrainError> {
    cfg.optimizer.validate()?;
    let mut net = Net::build(&cfg.model)?;
    let (train_set, test_set) = load_data(cfg)?;
    let mut params = match &cfg.init_from {
        Some(p) => checkpoint::load_weights(p, net.layout())?,
        None => net.init_params(cfg.seed),
    };
    let mut grads = vec![0.0f32; params.len()];
    let mut opt = cfg.optimizer.build(params.len())?;
    let sampler = Sampler::new(train_set.len(), cfg.batch_size, cfg.seed, false);
    let per_epoch = sampler.batches_per_epoch() as u64;
    let total_steps = cfg.steps.unwrap_or(per_epoch * cfg.epochs);
    let schedule = cfg.schedule.clone().resolve(total_steps);
    sink.on_event(&Event::RunStart {
        model: cfg.model.name.clone(),
        params: params.len(),
        workers: 1,
        threads: cfg.threads,
        batch_size: cfg.batch_size,
        train_samples: train_set.len(),
        test_samples: test_set.len(),
        total_steps,
    });
    let t0 = Instant::now();
    let (mut step, mut last_loss, mut trained) = (0u64, f64::NAN, 0usize);
    let mut epoch = 0u64;
    while step < total_steps {
        let mut loader = Loader::new(train_set.clone(), sampler.clone(), epoch, 0, 0, 1);
        loop {
            if step >= total_steps {
                break;
            }
            let t_wait = Instant::now();
            let Some(batch) = loader.next() else { break };
            let waited = t_wait.elapsed().as_secs_f64();
            let t_comp = Instant::now();
            grads.fill(0.0);
            let ctx = Ctx { mode: Mode::Train, threads: cfg.threads, seed: cfg.seed, step, layer: 0, sample_ids: &batch.ids };
            let stats = net.forward_backward(&ctx, &params, &mut grads, &batch.x, &batch.labels, batch.labels.len(), &mut |_, _| {})?;
            let lr = schedule.lr_at(step);
            opt.step(&mut params, &grads, lr);
            let compute = t_comp.elapsed().as_secs_f64();
            step += 1;
            let n = stats.samples.max(1);
            last_loss = stats.loss_sum / n as f64;
            if !last_loss.is_finite() {
                return Err(TrainError::NonFinite { step });
            }
            trained += stats.samples;
            sink.on_event(&Event::Step {
                step,
                epoch,
                loss: last_loss,
                acc: stats.correct as f64 / n as f64,
                lr,
                samples: stats.samples,
                images_per_sec: stats.samples as f64 / (waited + compute).max(1e-9),
                data_wait_s: waited,
                compute_s: compute,
            });
            loader.recycle(batch);
        }
        let epoch_done = step % per_epoch == 0;
        if cfg.eval_each_epoch && epoch_done && step < total_steps {
            let s = evaluate(&mut net, &params, test_set.as_ref(), 1000, cfg.threads)?;
            sink.on_event(&eval_event(step, epoch, &s));
        }
        epoch += 1;
    }
    let train_secs = t0.elapsed().as_secs_f64();
    let s = evaluate(&mut net, &params, test_set.as_ref(), 1000, cfg.threads)?;
    sink.on_event(&eval_event(step, epoch.saturating_sub(1), &s));
    let summary = TrainSummary {
        steps: step,
        test_acc: s.correct as f64 / s.samples.max(1) as f64,
        test_loss: s.loss_sum / s.samples.max(1) as f64,
        last_loss,
        seconds: t0.elapsed().as_secs_f64(),
        images_per_sec: trained as f64 / train_secs.max(1e-9),
        params,
    };
    if let Some(path) = &cfg.save {
        checkpoint::save_weights(path, net.layout(), &summary.params, &cfg.model.name)?;
    }
    sink.on_event(&Event::RunEnd {
        steps: summary.steps,
        test_acc: summary.test_acc,
        test_loss: summary.test_loss,
        seconds: summary.seconds,
        images_per_sec: summary.images_per_sec,
    });
    Ok(summary)
}

fn eval_event(step: u64, epoch: u64, s: &BatchStats) -> Event {
    let n = s.samples.max(1) as f64;
    Event::Eval { step, epoch, loss: s.loss_sum / n, acc: s.correct as f64 / n, samples: s.samples }
}
