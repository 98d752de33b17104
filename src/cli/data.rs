//! The data flags: how samples are made (`--image-size`, `--crop-size`, `--normalize`; train and
//! eval) and how the training input is loaded (`--augment`, `--loader-threads`, `--data-split`;
//! train only), and a Caffe prototxt's `transform_param` applied to them. docs/data.md explains
//! them.

use super::{invalid, ConfigError};
use crate::data::{split, Augment, Crop, DataOptions, Normalize};
use crate::net::ModelSpec;
use clap::Args;
use std::path::Path;

/// How samples are made from the data (`convoy train` and `convoy eval`).
#[derive(Debug, Args, Clone, Default)]
pub struct ImageArgs {
    /// Image folders: resize the shorter side to N and cut the center N×N (torchvision's
    /// Resize(N) + CenterCrop(N)), or HxW [default: the model's input size].
    #[arg(long)]
    pub image_size: Option<String>,
    /// Cut every sample to an N×N (or HxW) window: at a random place for training (seeded per
    /// seed, epoch and sample), the center for evaluation, before --augment and --normalize
    /// (Caffe's crop_size). The model's input is the window [default: the whole sample].
    #[arg(long)]
    pub crop_size: Option<String>,
    /// Per-channel normalisation (x − mean) / std: MEAN:STD with comma lists of one value or
    /// one per channel (0.4914,0.4822,0.4465:0.2470,0.2435,0.2616), imagenet, or none [the
    /// dataset's: MNIST's or CIFAR's statistics; none for image folders and synthetic data].
    #[arg(long)]
    pub normalize: Option<String>,
}

/// How the training input is loaded (`convoy train`).
#[derive(Debug, Args, Clone)]
pub struct LoadArgs {
    /// Augment training samples (never the test set): a comma list of crop:P (random crop of
    /// the original size after zero-padding P pixels on each side) and flip (horizontal, p = 0.5),
    /// or none. Seeded per (seed, epoch, sample): every worker count sees the same batch.
    #[arg(long, default_value = "none")]
    pub augment: String,
    /// Threads reading, decoding and augmenting batches ahead of the trainer (per worker).
    #[arg(long, default_value_t = 1)]
    pub loader_threads: usize,
    /// Each data-parallel rank reads its own part of the data: `{rank}` in --data is replaced
    /// by the rank (--data shards/rank{rank}); default: every rank opens the whole dataset and
    /// reads its shard of each batch.
    #[arg(long)]
    pub data_split: bool,
}

/// Parses `--image-size`: `N` or `HxW`.
fn parse_size(s: &str) -> Result<[usize; 2], ConfigError> {
    let dims: Option<Vec<usize>> =
        s.split('x').map(|d| d.trim().parse::<usize>().ok().filter(|d| (1..=32768).contains(d))).collect();
    match dims.as_deref() {
        Some(&[n]) => Ok([n, n]),
        Some(&[h, w]) => Ok([h, w]),
        _ => {
            Err(invalid("image-size", format!("'{s}' is not N or HxW with sizes from 1 to 32768, e.g. 32 or 224x224")))
        }
    }
}

impl ImageArgs {
    /// The options these flags give, the image size and channels defaulting to those of the
    /// model's input `[C, H, W]` (`None` when the model takes its input shape from the data).
    pub fn to_options(&self, model_input: Option<&[usize]>) -> Result<DataOptions, ConfigError> {
        let image_size = match (&self.image_size, model_input) {
            (Some(s), _) => Some(parse_size(s)?),
            (None, Some(&[_, h, w])) => Some([h, w]),
            _ => None,
        };
        let channels = match model_input {
            Some(&[c, _, _]) => Some(c),
            _ => None,
        };
        let normalize =
            self.normalize.as_deref().map(Normalize::parse).transpose().map_err(|m| invalid("normalize", m))?;
        let crop = self.crop_size.as_deref().map(Crop::parse).transpose().map_err(|m| invalid("crop-size", m))?;
        Ok(DataOptions { image_size, channels, normalize, crop, ..DataOptions::default() })
    }
}

impl LoadArgs {
    /// Adds these flags to `opts`; `data` is the --data path, `deterministic` says whether
    /// --deterministic was given.
    pub fn apply(&self, opts: &mut DataOptions, data: &Path, deterministic: bool) -> Result<(), ConfigError> {
        opts.augment = Augment::parse(&self.augment).map_err(|m| invalid("augment", m))?;
        if !(1..=256).contains(&self.loader_threads) {
            return Err(invalid("loader-threads", format!("{} must be from 1 to 256", self.loader_threads)));
        }
        opts.loader_threads = self.loader_threads;
        if self.data_split {
            split::check_template(data).map_err(|e| invalid("data-split", e.to_string()))?;
            if deterministic {
                return Err(invalid(
                    "data-split",
                    "cannot be combined with --deterministic (what each worker reads changes with the worker count); hint: drop one of them",
                ));
            }
        }
        opts.split = self.data_split;
        Ok(())
    }
}

/// The model `model` names (a prototxt's Data layer takes its shape from the data at `probe`)
/// and the data options of the flags, with a prototxt's `transform_param` applied. `load` is
/// given for training: (its flags, the --data path, --deterministic).
pub fn model_and_options(
    model: &str,
    probe: &Path,
    image: &ImageArgs,
    load: Option<(&LoadArgs, &Path, bool)>,
) -> anyhow::Result<(ModelSpec, DataOptions)> {
    let flags_only = image.to_options(None)?;
    let spec = ModelSpec::resolve_with(model, &mut || {
        Ok(crate::data::open_with(probe, crate::data::Split::Test, &flags_only)
            .map_err(|e| e.to_string())?
            .sample_shape()
            .to_vec())
    })?;
    let mut data = image.to_options(Some(&spec.input))?;
    if let Some((load, path, deterministic)) = load {
        load.apply(&mut data, path, deterministic)?;
    }
    if model.ends_with(".prototxt") {
        let text = std::fs::read_to_string(model).map_err(|e| invalid("model", format!("cannot read {model}: {e}")))?;
        if let Some(t) =
            crate::net::caffe::transform_from_prototxt(&text, model).map_err(|e| invalid("model", e.to_string()))?
        {
            let mut hw = |o: &DataOptions| {
                Ok(crate::data::open_with(probe, crate::data::Split::Test, o)
                    .map_err(|e| e.to_string())?
                    .sample_shape()
                    .to_vec())
            };
            apply_caffe_transform(&t, model, image, load.map(|l| l.0), &mut data, &mut hw)?;
        }
        if let Some(d) = crate::net::caffe::data_layer_from_prototxt(&text, model)
            .map_err(|e| invalid("model", e.to_string()))?
            .filter(|d| d.ty == "MemoryData")
        {
            check_memory_data(&d, model, &spec.input, probe, &data)?;
        }
    }
    Ok((spec, data))
}

/// A MemoryData layer declares its samples' shape (`memory_data_param { channels height width
/// }`, the model's input): samples of another shape at `probe` are an error naming the layer
/// and its line. Left to the run's own check: a crop (the window is compared there) and data
/// that cannot be opened here (the run says why).
fn check_memory_data(
    d: &crate::net::caffe::DataLayer,
    origin: &str,
    input: &[usize],
    probe: &Path,
    opts: &DataOptions,
) -> Result<(), ConfigError> {
    if opts.crop.is_some() {
        return Ok(());
    }
    let plain = DataOptions { normalize: None, ..opts.clone() };
    let Ok(set) = crate::data::open_with(probe, crate::data::Split::Test, &plain) else { return Ok(()) };
    let shape = set.sample_shape();
    if shape == input {
        return Ok(());
    }
    let dims = |s: &[usize]| s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("×");
    let fix = match shape {
        [c, h, w] => format!("channels: {c} height: {h} width: {w}"),
        _ => format!("the shape {shape:?}"),
    };
    Err(invalid(
        "model",
        format!(
            "{origin}:{}: MemoryData layer '{}' declares {} samples (channels × height × width), but {} has samples of {}; hint: give memory_data_param {{ {fix} }}, or use a Data layer, which takes its shape from --data",
            d.line,
            d.name,
            dims(input),
            probe.display(),
            dims(shape)
        ),
    ))
}

/// The global batch: `--batch-size` (`flag`) when given, else a Caffe prototxt's TRAIN-phase
/// Data/MemoryData `batch_size` (what one Caffe process computes per iteration; convoy splits
/// the global batch across its workers), else 64. When both are given and differ the flag wins,
/// with a note naming the prototxt's line.
pub fn batch_size(model: &str, flag: Option<usize>) -> Result<usize, ConfigError> {
    let layer = if model.ends_with(".prototxt") {
        let text = std::fs::read_to_string(model).map_err(|e| invalid("model", format!("cannot read {model}: {e}")))?;
        crate::net::caffe::data_layer_from_prototxt(&text, model).map_err(|e| invalid("model", e.to_string()))?
    } else {
        None
    };
    match (flag, layer.and_then(|l| l.batch_size)) {
        (Some(b), Some((p, line))) => {
            if b != p {
                tracing::info!("{model}:{line}: --batch-size {b} replaces the prototxt's batch_size {p}");
            }
            Ok(b)
        }
        (Some(b), None) => Ok(b),
        (None, Some((p, line))) if p > super::MAX_BATCH => Err(invalid(
            "model",
            format!("{model}:{line}: batch_size {p} is too large; hint: at most {}", super::MAX_BATCH),
        )),
        (None, Some((p, _))) => Ok(p),
        (None, None) => Ok(64),
    }
}

/// Applies a Caffe prototxt's Data-layer `transform_param` (`t`, see `caffe::Transform`) to
/// `opts`: its mean/scale become the normalisation, `mirror` a flip (training: `load` given) and
/// `crop_size` the crop, unless `--normalize`, `--augment` or `--crop-size` says otherwise (the
/// flag wins, with a note). The crop must fit the samples (`sample_shape` gives theirs) or it
/// is an error naming the prototxt's line.
pub fn apply_caffe_transform(
    t: &crate::net::caffe::Transform,
    origin: &str,
    image: &ImageArgs,
    load: Option<&LoadArgs>,
    opts: &mut DataOptions,
    sample_shape: &mut dyn FnMut(&DataOptions) -> Result<Vec<usize>, String>,
) -> Result<(), ConfigError> {
    if image.normalize.is_some() {
        tracing::info!("{origin}:{}: --normalize replaces the prototxt's transform_param mean/scale", t.line);
    } else {
        opts.normalize = Some(Normalize::new(t.mean.clone(), t.std.clone()));
    }
    match load {
        Some(l) if t.mirror && l.augment != "none" => {
            tracing::info!("{origin}:{}: --augment replaces the prototxt's mirror: true", t.line)
        }
        Some(_) if t.mirror => opts.augment.flip = true,
        _ => {}
    }
    if t.test_mirror {
        tracing::info!(
            "{origin}: the TEST-phase Data layer's mirror: true is not applied: convoy never augments the test set"
        );
    }
    let Some(c) = t.crop else { return Ok(()) };
    if image.crop_size.is_some() {
        tracing::info!("{origin}:{}: --crop-size replaces the prototxt's transform_param crop_size", t.line);
        return Ok(());
    }
    let shape = sample_shape(opts)
        .map_err(|e| invalid("model", format!("{origin}:{}: transform_param crop_size: {e}", t.line)))?;
    Crop::square(c)
        .out_shape(&shape)
        .map_err(|e| invalid("model", format!("{origin}:{}: transform_param crop_size {c}: {e}", t.line)))?;
    opts.crop = Some(Crop::square(c));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_normalisation_and_loader_flags_validate() {
        assert_eq!(parse_size("32").unwrap(), [32, 32]);
        assert_eq!(parse_size("24x32").unwrap(), [24, 32]);
        for bad in ["0", "x", "32x", "1x2x3", "99999"] {
            assert!(parse_size(bad).unwrap_err().to_string().contains("--image-size"), "{bad}");
        }
        let none = ImageArgs::default();
        let o = none.to_options(Some(&[1, 28, 28])).unwrap();
        assert_eq!((o.image_size, o.channels, o.normalize), (Some([28, 28]), Some(1), None));
        assert_eq!(none.to_options(None).unwrap().image_size, None);
        let a = ImageArgs {
            image_size: Some("64".into()),
            normalize: Some("imagenet".into()),
            crop_size: Some("56".into()),
        };
        let o = a.to_options(Some(&[3, 32, 32])).unwrap();
        assert_eq!(o.image_size, Some([64, 64]));
        assert!(o.normalize.is_some());
        assert_eq!(o.crop, Some(Crop::square(56)));
        for bad in ["0", "3x", "-1"] {
            let e = ImageArgs { crop_size: Some(bad.into()), ..ImageArgs::default() }
                .to_options(None)
                .unwrap_err()
                .to_string();
            assert!(e.contains("--crop-size") && e.contains("N or HxW"), "{e}");
        }
        let e = ImageArgs { normalize: Some("1:2:3".into()), ..ImageArgs::default() }
            .to_options(None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--normalize"), "{e}");
        let mut opts = DataOptions::default();
        let load = |augment: &str, threads, split| LoadArgs {
            augment: augment.into(),
            loader_threads: threads,
            data_split: split,
        };
        load("crop:4,flip", 3, false).apply(&mut opts, Path::new("d"), false).unwrap();
        assert_eq!((opts.augment.crop_pad, opts.augment.flip, opts.loader_threads), (4, true, 3));
        assert!(load("spin", 1, false)
            .apply(&mut opts, Path::new("d"), false)
            .unwrap_err()
            .to_string()
            .contains("--augment"));
        assert!(load("none", 0, false)
            .apply(&mut opts, Path::new("d"), false)
            .unwrap_err()
            .to_string()
            .contains("--loader-threads"));
        let e = load("none", 1, true).apply(&mut opts, Path::new("d"), false).unwrap_err().to_string();
        assert!(e.contains("--data-split") && e.contains("{rank}"), "{e}");
        assert!(load("none", 1, true)
            .apply(&mut opts, Path::new("d/rank{rank}"), true)
            .unwrap_err()
            .to_string()
            .contains("--deterministic"));
        load("none", 1, true).apply(&mut opts, Path::new("d/rank{rank}"), false).unwrap();
        assert!(opts.split);
    }
}
