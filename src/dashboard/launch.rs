//! The launch request of `POST /api/runs`: checked field by field (known model, a dataset that is
//! present, bounds; a sent TOML spec or Caffe prototxt parsed and built against the dataset),
//! then turned into `convoy train` flags and checked again by the CLI's own validation, so the
//! server refuses exactly what the command line refuses, with the same messages.

use super::error::{first_line, internal, ApiError};
use super::options::{datasets, MAX_WORKERS};
use crate::cli::{Cli, Command};
use axum::http::StatusCode;
use clap::Parser;
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::Path;

/// Largest model spec (TOML or prototxt) sent with a launch request.
const SPEC_LIMIT: usize = 32 << 10;

/// The body of `POST /api/runs`. Absent fields take `convoy train`'s defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchRequest {
    /// A label (letters, digits, space, `-_.`, at most 64).
    #[serde(default)]
    pub name: String,
    /// A model of the zoo.
    #[serde(default)]
    pub model: Option<String>,
    /// A model spec (TOML, docs/models.md) instead of `model`.
    #[serde(default)]
    pub model_spec: Option<String>,
    /// A Caffe net (NetParameter prototxt, docs/models.md) instead of `model`.
    #[serde(default)]
    pub model_prototxt: Option<String>,
    /// A dataset from `GET /api/options`.
    #[serde(default)]
    pub dataset: Option<String>,
    /// `allreduce`, `ps`, `pipeline`, `tensor` or `hybrid`.
    #[serde(default)]
    pub strategy: Option<String>,
    /// All-reduce algorithm.
    #[serde(default)]
    pub allreduce: Option<String>,
    /// Bucket cap, MiB.
    #[serde(default)]
    pub bucket_mb: Option<f64>,
    /// Overlap reduction with backward.
    #[serde(default)]
    pub overlap: Option<bool>,
    /// Micro-batches per reduction.
    #[serde(default)]
    pub accumulate: Option<usize>,
    /// Parameter-server mode.
    #[serde(default)]
    pub ps_mode: Option<String>,
    /// SSP staleness bound.
    #[serde(default)]
    pub staleness: Option<u64>,
    /// Parameter-server shards.
    #[serde(default)]
    pub servers: Option<usize>,
    /// Pipeline stages (`pipeline`).
    #[serde(default)]
    pub stages: Option<usize>,
    /// Micro-batches per global batch (`pipeline`, `hybrid` with `pp`).
    #[serde(default)]
    pub micro_batches: Option<usize>,
    /// `1f1b` or `gpipe`.
    #[serde(default)]
    pub pipeline_schedule: Option<String>,
    /// Data-parallel replicas (`hybrid`).
    #[serde(default)]
    pub dp: Option<usize>,
    /// Pipeline stages per replica (`hybrid`).
    #[serde(default)]
    pub pp: Option<usize>,
    /// Model-parallel slices (`tensor`; `hybrid`: of the classifier).
    #[serde(default)]
    pub mp: Option<usize>,
    /// Data-parallel workers.
    #[serde(default)]
    pub workers: Option<usize>,
    /// Intra-op threads per worker.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Epochs.
    #[serde(default)]
    pub epochs: Option<u64>,
    /// Steps (instead of epochs).
    #[serde(default)]
    pub steps: Option<u64>,
    /// Global batch.
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Learning rate.
    #[serde(default)]
    pub lr: Option<f32>,
    /// `sgd`, `adam`, `adamw`.
    #[serde(default)]
    pub optimizer: Option<String>,
    /// LR schedule (`convoy train --schedule`).
    #[serde(default)]
    pub schedule: Option<String>,
    /// Seed.
    #[serde(default)]
    pub seed: Option<u64>,
}

fn one_of(field: &str, v: &Option<String>, allowed: &[&str]) -> Result<(), ApiError> {
    match v {
        Some(x) if !allowed.contains(&x.as_str()) => {
            Err(ApiError::bad(format!("{field}: unknown value '{x}'; hint: one of {allowed:?}")))
        }
        _ => Ok(()),
    }
}

impl LaunchRequest {
    /// The model sent with the request, if any: its text and its file name in the run folder.
    pub fn sent_model(&self) -> Option<(&str, &'static str)> {
        match (&self.model_spec, &self.model_prototxt) {
            (Some(t), _) => Some((t, "model.toml")),
            (None, Some(t)) => Some((t, "model.prototxt")),
            (None, None) => None,
        }
    }

    /// Checks a sent model: size, syntax, and that it builds for the dataset in `data_dir`.
    /// Returns a sent prototxt's TRAIN Data-layer batch_size, the run's batch unless batch_size
    /// is sent (as `convoy train` reads it).
    fn check_sent_model(
        &self,
        data_dir: &Path,
        sample_shape: &dyn Fn(&Path) -> Result<Vec<usize>, String>,
    ) -> Result<Option<usize>, ApiError> {
        let (field, text) = match (&self.model_spec, &self.model_prototxt) {
            (Some(t), _) => ("model_spec", t),
            (None, Some(t)) => ("model_prototxt", t),
            (None, None) => return Ok(None),
        };
        if text.len() > SPEC_LIMIT {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("{field} is {} bytes; hint: at most {SPEC_LIMIT}", text.len()),
            ));
        }
        let bad = |e: String| ApiError::bad(format!("{field}: {e}"));
        let shape = || sample_shape(data_dir);
        let spec = if field == "model_spec" {
            crate::net::ModelSpec::from_toml(text, field).map_err(|e| bad(e.to_string()))?
        } else {
            let mut shape = shape;
            crate::net::caffe::from_prototxt(text, field, &mut shape, &mut |_| {}).map_err(|e| bad(e.to_string()))?
        };
        let net = crate::net::Net::build(&spec).map_err(|e| bad(e.to_string()))?;
        let mut data = shape().map_err(|e| ApiError::bad(format!("dataset: {e}")))?;
        let mut batch = None;
        // A Data layer's crop_size cuts the samples to the model's input, as in `convoy train`.
        if field == "model_prototxt" {
            // Its Data layer's batch_size (0 is refused).
            batch = crate::net::caffe::data_layer_from_prototxt(text, field)
                .map_err(|e| bad(e.to_string()))?
                .and_then(|d| d.batch_size)
                .map(|b| b.0);
            if let Some(c) = crate::net::caffe::transform_from_prototxt(text, field)
                .map_err(|e| bad(e.to_string()))?
                .and_then(|t| t.crop)
            {
                data = crate::data::Crop::square(c)
                    .out_shape(&data)
                    .map_err(|e| bad(format!("transform_param crop_size {c}: {e}")))?
                    .to_vec();
            }
        }
        if net.input_shape() != data.as_slice() {
            return Err(bad(format!("the model takes inputs of shape {:?} but the dataset's samples are {data:?}; hint: set the input shape to the dataset's", net.input_shape())));
        }
        Ok(batch)
    }

    /// Checks the request and returns the `convoy train` flags (without the run's file paths)
    /// and the settings to show. `model_path` is where a sent model will be written (its name
    /// from `sent_model`).
    pub fn to_args(&self, data_root: &Path, model_path: &Path) -> Result<(Vec<String>, Value), ApiError> {
        let shape = |dir: &Path| {
            crate::data::open(dir, crate::data::Split::Test)
                .map(|d| d.sample_shape().to_vec())
                .map_err(|e| e.to_string())
        };
        self.to_args_with(&datasets(data_root), data_root, model_path, &shape)
    }

    /// `to_args` with the datasets present and their per-sample shapes given (the fuzz target's
    /// way to check requests without reading files).
    // Long: a launch request checked field by field in the order of the form, each message naming its field.
    pub fn to_args_with(
        &self,
        present: &[String],
        data_root: &Path,
        model_path: &Path,
        sample_shape: &dyn Fn(&Path) -> Result<Vec<usize>, String>,
    ) -> Result<(Vec<String>, Value), ApiError> {
        let name_ok = |c: char| c.is_ascii_alphanumeric() || " -_.".contains(c);
        if self.name.chars().count() > 64 || !self.name.chars().all(name_ok) || self.name.contains("..") {
            return Err(ApiError::bad(format!(
                "name '{}' is not allowed; hint: at most 64 letters, digits, spaces, '-', '_' or '.' (no '..' or '/')",
                self.name
            )));
        }
        let sent = [self.model.is_some(), self.model_spec.is_some(), self.model_prototxt.is_some()];
        if sent.iter().filter(|&&b| b).count() > 1 {
            return Err(ApiError::bad("give one of model, model_spec (TOML) and model_prototxt (Caffe), not several"));
        }
        let model = match self.sent_model() {
            Some(_) => model_path.display().to_string(),
            None => {
                let m = &self.model;
                let m = m.clone().unwrap_or_else(|| "lenet".into());
                if !crate::net::spec::ZOO.contains(&m.as_str()) {
                    return Err(ApiError::bad(format!(
                        "unknown model '{m}'; hint: one of {:?}, or send a TOML spec as model_spec",
                        crate::net::spec::ZOO
                    )));
                }
                m
            }
        };
        let dataset = self.dataset.clone().unwrap_or_else(|| "mnist".into());
        if !present.contains(&dataset) {
            return Err(ApiError::bad(format!(
                "unknown dataset '{dataset}'; hint: one of {present:?} (folders of the server's --data-root)"
            )));
        }
        let sent_batch = self.check_sent_model(&data_root.join(&dataset), sample_shape)?;
        one_of("strategy", &self.strategy, &["allreduce", "ps", "pipeline", "tensor", "hybrid"])?;
        one_of("pipeline_schedule", &self.pipeline_schedule, &["1f1b", "gpipe"])?;
        one_of("allreduce", &self.allreduce, &["direct", "ring", "tree", "naive"])?;
        one_of("ps_mode", &self.ps_mode, &["sync", "async", "ssp"])?;
        one_of("optimizer", &self.optimizer, &["sgd", "adam", "adamw"])?;
        let workers = self.workers.unwrap_or(1);
        if workers == 0 || workers > MAX_WORKERS {
            return Err(ApiError::bad(format!("workers: {workers} is out of range; hint: 1 to {MAX_WORKERS}")));
        }
        for (field, v) in [
            ("stages", self.stages),
            ("micro_batches", self.micro_batches),
            ("dp", self.dp),
            ("pp", self.pp),
            ("mp", self.mp),
        ] {
            if v.is_some_and(|v| v == 0 || v > MAX_WORKERS) {
                return Err(ApiError::bad(format!(
                    "{field}: {} is out of range; hint: 1 to {MAX_WORKERS}",
                    v.unwrap_or_default()
                )));
            }
        }
        if let Some(t) = self.threads {
            if t == 0 || t > 256 {
                return Err(ApiError::bad(format!(
                    "threads: {t} is out of range; hint: 1 to the number of cores ({})",
                    crate::cli::default_threads()
                )));
            }
        }
        if self.epochs.is_some_and(|e| e == 0 || e > 1000) || self.steps.is_some_and(|s| s == 0 || s > 10_000_000) {
            return Err(ApiError::bad("epochs must be 1 to 1000 and steps 1 to 10000000"));
        }
        let mut a: Vec<String> = vec![
            "train".into(),
            "--model".into(),
            model,
            "--data".into(),
            data_root.join(&dataset).display().to_string(),
        ];
        let mut flag = |f: &str, v: Option<String>| {
            if let Some(v) = v {
                a.push(format!("--{f}"));
                a.push(v);
            }
        };
        flag("workers", Some(workers.to_string()));
        flag("strategy", self.strategy.clone());
        flag("allreduce", self.allreduce.clone());
        flag("bucket-mb", self.bucket_mb.map(|v| v.to_string()));
        flag("accumulate", self.accumulate.map(|v| v.to_string()));
        flag("ps-mode", self.ps_mode.clone());
        flag("staleness", self.staleness.map(|v| v.to_string()));
        flag("servers", self.servers.map(|v| v.to_string()));
        flag("stages", self.stages.map(|v| v.to_string()));
        flag("micro-batches", self.micro_batches.map(|v| v.to_string()));
        flag("pipeline-schedule", self.pipeline_schedule.clone());
        flag("dp", self.dp.map(|v| v.to_string()));
        flag("pp", self.pp.map(|v| v.to_string()));
        flag("mp", self.mp.map(|v| v.to_string()));
        flag("threads", self.threads.map(|v| v.to_string()));
        flag("epochs", self.epochs.map(|v| v.to_string()));
        flag("steps", self.steps.map(|v| v.to_string()));
        flag("batch-size", self.batch_size.map(|v| v.to_string()));
        flag("lr", self.lr.map(|v| v.to_string()));
        flag("optimizer", self.optimizer.clone());
        flag("schedule", self.schedule.clone());
        flag("seed", self.seed.map(|v| v.to_string()));
        if self.overlap == Some(false) {
            a.push("--no-overlap".into());
        }
        // The CLI's own checks, on the CLI's parse of these very flags (a sent spec is checked
        // above; the zoo's lenet stands in for it here).
        let mut check = a.clone();
        if self.sent_model().is_some() {
            check[2] = "lenet".into();
        }
        let cli = Cli::try_parse_from(std::iter::once("convoy".to_string()).chain(check))
            .map_err(|e| ApiError::bad(first_line(&e.to_string())))?;
        let Command::Train(t) = cli.command else { return Err(internal("not a train command")) };
        let cfg = t.to_config().map_err(|e| ApiError::bad(e.to_string()))?;
        let pc = t.parallel.to_config().map_err(|e| ApiError::bad(e.to_string()))?;
        // The worker threads the run will start (a pipeline runs one per stage, a hybrid dp × pp).
        let threads = t.parallel.threads_per_process();
        if threads > MAX_WORKERS {
            return Err(ApiError::bad(format!("the run would start {threads} workers; hint: at most {MAX_WORKERS}")));
        }
        pc.validate(&cfg).map_err(|e| ApiError::bad(e.to_string()))?;
        let config = json!({
            "model": match self.sent_model() { Some((_, file)) => format!("sent ({file})"), None => a[2].clone() },
            "dataset": dataset,
            "strategy": self.strategy.clone().unwrap_or_else(|| "allreduce".into()),
            "workers": threads,
            "threads": cfg.threads,
            "epochs": if cfg.steps.is_some() { None } else { Some(cfg.epochs) },
            "steps": cfg.steps,
            // `cfg` was checked with lenet standing in for a sent model: a sent prototxt's
            // batch_size is the run's unless batch_size is sent.
            "batch_size": sent_batch.filter(|_| self.batch_size.is_none()).unwrap_or(cfg.batch_size),
            // Through its decimal form: 0.01 stays 0.01 (as f64 it would show f32's rounding).
            "lr": cfg.schedule.base_lr.to_string().parse::<f64>().unwrap_or(f64::NAN),
            "optimizer": self.optimizer.clone().unwrap_or_else(|| "sgd".into()),
            "allreduce": self.allreduce, "bucket_mb": self.bucket_mb, "overlap": self.overlap, "accumulate": self.accumulate,
            "ps_mode": self.ps_mode, "staleness": self.staleness, "servers": self.servers,
            "stages": self.stages, "micro_batches": self.micro_batches, "pipeline_schedule": self.pipeline_schedule,
            "dp": self.dp, "pp": self.pp, "mp": self.mp,
            "schedule": self.schedule, "seed": self.seed,
        });
        Ok((a, config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A prototxt whose Data layers crop 32×32 samples to 28×28 fits a 28×28 net; a crop larger
    /// than the samples is refused.
    #[test]
    fn a_prototxt_crop_is_checked_against_the_dataset() {
        let lenet = include_str!("../../tests/data/lenet_train_test.prototxt");
        let with = |c: usize| {
            let text = lenet.replace(
                "transform_param { scale: 0.00390625 }",
                &format!("transform_param {{ scale: 0.00390625 crop_size: {c} }}"),
            );
            serde_json::from_value::<LaunchRequest>(json!({ "model_prototxt": text })).unwrap()
        };
        let shape = |_: &Path| Ok(vec![1, 32, 32]);
        with(28).check_sent_model(Path::new("d"), &shape).unwrap();
        let e = with(40).check_sent_model(Path::new("d"), &shape).unwrap_err();
        assert!(format!("{e:?}").contains("crop_size 40"), "{e:?}");
    }
}
