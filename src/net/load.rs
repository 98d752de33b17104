//! Finding a model: a zoo name, a TOML spec file or a Caffe prototxt, turned into a `ModelSpec`.
//! The one place that knows all three sources (spec.rs parses TOML, caffe/ reads prototxt, and
//! neither imports the other).

use super::caffe;
use super::spec::{ModelSpec, SpecError};

/// The TOML of a built-in model (its name is in `spec::ZOO`).
fn zoo_source(name: &str) -> Option<&'static str> {
    Some(match name {
        "lenet" => include_str!("models/lenet.toml"),
        "lenet-caffe" => include_str!("models/lenet-caffe.toml"),
        "keras-mnist" => include_str!("models/keras-mnist.toml"),
        "alexnet" => include_str!("models/alexnet.toml"),
        "alexnet-cifar" => include_str!("models/alexnet-cifar.toml"),
        "vgg11-cifar" => include_str!("models/vgg11-cifar.toml"),
        "resnet20" => include_str!("models/resnet20.toml"),
        "resnet20-b" => include_str!("models/resnet20-b.toml"),
        _ => return None,
    })
}

impl ModelSpec {
    /// A built-in model by name, or a `.toml` or Caffe `.prototxt` file by path (a prototxt
    /// with a Data layer cannot be read without its dataset: see `resolve_with`).
    pub fn resolve(name_or_path: &str) -> Result<ModelSpec, SpecError> {
        ModelSpec::resolve_with(name_or_path, &mut || Err("no dataset given; hint: pass --data".into()))
    }

    /// `resolve`, with `data_shape` giving the dataset's per-sample shape for a prototxt's Data
    /// layer. The prototxt's accepted-but-not-applied settings are logged as warnings.
    pub fn resolve_with(
        name_or_path: &str,
        data_shape: &mut dyn FnMut() -> Result<Vec<usize>, String>,
    ) -> Result<ModelSpec, SpecError> {
        if name_or_path.ends_with(".prototxt") {
            let text = std::fs::read_to_string(name_or_path)
                .map_err(|source| SpecError::Io { path: name_or_path.to_string(), source })?;
            return caffe::from_prototxt(&text, name_or_path, data_shape, &mut |w| tracing::warn!("{w}"))
                .map_err(SpecError::Caffe);
        }
        if let Some(src) = zoo_source(name_or_path) {
            return ModelSpec::from_toml(src, name_or_path);
        }
        if name_or_path.ends_with(".toml") {
            let text = std::fs::read_to_string(name_or_path)
                .map_err(|source| SpecError::Io { path: name_or_path.to_string(), source })?;
            return ModelSpec::from_toml(&text, name_or_path);
        }
        Err(SpecError::Unknown(name_or_path.to_string()))
    }
}
