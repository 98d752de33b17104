//! The data flags: how samples are made (`--image-size`, `--normalize`; train and eval) and how
//! the training input is loaded (`--augment`, `--loader-threads`, `--data-split`; train only).
//! docs/data.md explains them.

use super::{invalid, ConfigError};
use crate::data::{split, Augment, DataOptions, Normalize};
use clap::Args;
use std::path::Path;

/// How samples are made from the data (`convoy train` and `convoy eval`).
#[derive(Debug, Args, Clone, Default)]
pub struct ImageArgs {
    /// Image folders: resize the shorter side to N and cut the center N×N (torchvision's
    /// Resize(N) + CenterCrop(N)), or HxW [default: the model's input size].
    #[arg(long)]
    pub image_size: Option<String>,
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
    let dims: Option<Vec<usize>> = s.split('x').map(|d| d.trim().parse::<usize>().ok().filter(|d| (1..=32768).contains(d))).collect();
    match dims.as_deref() {
        Some(&[n]) => Ok([n, n]),
        Some(&[h, w]) => Ok([h, w]),
        _ => Err(invalid("image-size", format!("'{s}' is not N or HxW with sizes from 1 to 32768, e.g. 32 or 224x224"))),
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
        let normalize = self.normalize.as_deref().map(Normalize::parse).transpose().map_err(|m| invalid("normalize", m))?;
        Ok(DataOptions { image_size, channels, normalize, ..DataOptions::default() })
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

/// Applies a Caffe prototxt's Data-layer `transform_param` (`t`, see `caffe::Transform`) to
/// `opts`: its mean/scale become the normalisation and `mirror` a flip, unless `--normalize` or
/// `--augment` says otherwise (the flag wins, with a note). A `crop_size` is refused unless the
/// samples already have that size (`sample_hw` gives theirs): convoy does not crop to a smaller
/// size.
pub fn apply_caffe_transform(
    t: &crate::net::caffe::Transform,
    origin: &str,
    image: &ImageArgs,
    load: &LoadArgs,
    opts: &mut DataOptions,
    sample_hw: &mut dyn FnMut(&DataOptions) -> Result<Vec<usize>, String>,
) -> Result<(), ConfigError> {
    if image.normalize.is_some() {
        tracing::info!("{origin}:{}: --normalize replaces the prototxt's transform_param mean/scale", t.line);
    } else {
        opts.normalize = Some(Normalize::new(t.mean.clone(), t.std.clone()));
    }
    if t.mirror {
        if load.augment != "none" {
            tracing::info!("{origin}:{}: --augment replaces the prototxt's mirror: true", t.line);
        } else {
            opts.augment.flip = true;
        }
    }
    if let Some(c) = t.crop {
        let hw = sample_hw(opts).map_err(|e| invalid("model", format!("{origin}:{}: transform_param crop_size: {e}", t.line)))?;
        if hw[..] != [c, c] {
            return Err(invalid(
                "model",
                format!(
                    "{origin}:{}: transform_param crop_size {c} is not supported: the samples are {hw:?} and convoy does not crop them to a smaller size; hint: remove crop_size and use --augment crop:P (a random crop at full size), or an image folder (resized and center-cropped to the model's {c}×{c})",
                    t.line
                ),
            ));
        }
    }
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
        let a = ImageArgs { image_size: Some("64".into()), normalize: Some("imagenet".into()) };
        let o = a.to_options(Some(&[3, 32, 32])).unwrap();
        assert_eq!(o.image_size, Some([64, 64]));
        assert!(o.normalize.is_some());
        let e = ImageArgs { normalize: Some("1:2:3".into()), ..ImageArgs::default() }.to_options(None).unwrap_err().to_string();
        assert!(e.contains("--normalize"), "{e}");
        let mut opts = DataOptions::default();
        let load = |augment: &str, threads, split| LoadArgs { augment: augment.into(), loader_threads: threads, data_split: split };
        load("crop:4,flip", 3, false).apply(&mut opts, Path::new("d"), false).unwrap();
        assert_eq!((opts.augment.crop_pad, opts.augment.flip, opts.loader_threads), (4, true, 3));
        assert!(load("spin", 1, false).apply(&mut opts, Path::new("d"), false).unwrap_err().to_string().contains("--augment"));
        assert!(load("none", 0, false).apply(&mut opts, Path::new("d"), false).unwrap_err().to_string().contains("--loader-threads"));
        let e = load("none", 1, true).apply(&mut opts, Path::new("d"), false).unwrap_err().to_string();
        assert!(e.contains("--data-split") && e.contains("{rank}"), "{e}");
        assert!(load("none", 1, true).apply(&mut opts, Path::new("d/rank{rank}"), true).unwrap_err().to_string().contains("--deterministic"));
        load("none", 1, true).apply(&mut opts, Path::new("d/rank{rank}"), false).unwrap();
        assert!(opts.split);
    }
}
