//! Weights files: the flat parameter buffer saved as safetensors under PyTorch state_dict names
//! and layouts (`conv1.weight` as [out, in, kh, kw]), loadable with
//! `safetensors.torch.load_file` into the equivalent `torch.nn` model, and back.
//!
//! Writes are atomic (temporary file in the same directory, fsync, rename, fsync of the
//! directory), so a crash never leaves a half-written file under the final name and an older file
//! survives until the new one is complete. Loading checks every name, shape and dtype against the
//! `ParamLayout` before any value is copied, so nothing loads partially.

pub mod run;

use crate::net::ParamLayout;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Errors saving or loading weights.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not a valid safetensors file (truncated, bad header).
    #[error("{path}: not a valid safetensors file ({msg}); hint: was it written completely?")]
    Format {
        /// File path.
        path: PathBuf,
        /// Parser message.
        msg: String,
    },
    /// The file does not match the model.
    #[error("{path}: does not match the model: {msg}; hint: pass the --model the weights were trained with")]
    Mismatch {
        /// File path.
        path: PathBuf,
        /// First mismatch found.
        msg: String,
    },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io { path: path.to_path_buf(), source }
}

/// Writes `bytes` to `path` atomically: temp file in the same directory, fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, path).map_err(io_err(path))?;
        if let Ok(d) = fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Serialises the named tensors of `layout` from the flat buffer `params` to safetensors bytes.
/// `metadata` goes into the header's `__metadata__` (e.g. the model name).
pub fn to_safetensors(layout: &ParamLayout, params: &[f32], metadata: HashMap<String, String>) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> =
        layout.entries().iter().map(|e| params[e.range()].iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
    let views: Vec<(String, TensorView)> = layout
        .entries()
        .iter()
        .zip(&bytes)
        .map(|(e, b)| (e.name.clone(), TensorView::new(Dtype::F32, e.shape.clone(), b).expect("shape matches bytes")))
        .collect();
    let meta = if metadata.is_empty() { None } else { Some(metadata) };
    safetensors::serialize(views, meta).expect("serialising in-memory tensors cannot fail")
}

/// Saves the parameters as a safetensors file, atomically.
pub fn save_weights(path: &Path, layout: &ParamLayout, params: &[f32], model: &str) -> Result<(), CheckpointError> {
    let meta = HashMap::from([("model".to_string(), model.to_string()), ("format".to_string(), "pt".to_string())]);
    write_atomic(path, &to_safetensors(layout, params, meta))
}

/// Reads a safetensors file into a flat buffer laid out by `layout`. Every tensor of the layout
/// must be present as F32 with the same shape; extra tensors are an error too (a different model).
pub fn load_weights(path: &Path, layout: &ParamLayout) -> Result<Vec<f32>, CheckpointError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    weights_from_bytes(&bytes, path, layout)
}

/// Like `load_weights` for bytes already in memory; `path` only names the source in errors.
pub fn weights_from_bytes(bytes: &[u8], path: &Path, layout: &ParamLayout) -> Result<Vec<f32>, CheckpointError> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| CheckpointError::Format { path: path.to_path_buf(), msg: e.to_string() })?;
    let mismatch = |msg: String| CheckpointError::Mismatch { path: path.to_path_buf(), msg };
    for e in layout.entries() {
        let t = st.tensor(&e.name).map_err(|_| mismatch(format!("tensor '{}' is missing", e.name)))?;
        if t.dtype() != Dtype::F32 {
            return Err(mismatch(format!("tensor '{}' has dtype {:?}, expected F32", e.name, t.dtype())));
        }
        if t.shape() != e.shape.as_slice() {
            return Err(mismatch(format!("tensor '{}' has shape {:?}, expected {:?}", e.name, t.shape(), e.shape)));
        }
    }
    let mut extra: Vec<String> =
        st.names().into_iter().filter(|n| layout.get(n).is_none()).map(|n| n.to_string()).collect();
    if !extra.is_empty() {
        extra.sort();
        return Err(mismatch(format!("unexpected tensor '{}' (not in this model)", extra[0])));
    }
    let mut out = vec![0.0f32; layout.len()];
    for e in layout.entries() {
        let t = st.tensor(&e.name).map_err(|_| mismatch(format!("tensor '{}' is missing", e.name)))?;
        for (dst, chunk) in out[e.range()].iter_mut().zip(t.data().chunks_exact(4)) {
            *dst = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> ParamLayout {
        ParamLayout::new(vec![
            ("conv1", vec![("weight", vec![2, 1, 3, 3]), ("bias", vec![2])]),
            ("fc", vec![("weight", vec![3, 4])]),
        ])
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("convoy-ckpt-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn round_trip_is_exact() {
        let l = layout();
        let params: Vec<f32> = (0..l.len()).map(|i| (i as f32 * 0.37).sin()).collect();
        let d = tmpdir("rt");
        let p = d.join("w.safetensors");
        save_weights(&p, &l, &params, "test").unwrap();
        assert_eq!(load_weights(&p, &l).unwrap(), params);
    }

    #[test]
    fn mismatches_name_the_tensor_and_load_nothing() {
        let l = layout();
        let d = tmpdir("mm");
        let p = d.join("w.safetensors");
        save_weights(&p, &l, &vec![0.0; l.len()], "test").unwrap();
        let other = ParamLayout::new(vec![
            ("conv1", vec![("weight", vec![2, 1, 5, 5]), ("bias", vec![2])]),
            ("fc", vec![("weight", vec![3, 4])]),
        ]);
        let e = load_weights(&p, &other).unwrap_err().to_string();
        assert!(e.contains("conv1.weight") && e.contains("[2, 1, 3, 3]"), "{e}");
        let fewer = ParamLayout::new(vec![("conv1", vec![("weight", vec![2, 1, 3, 3]), ("bias", vec![2])])]);
        let e = load_weights(&p, &fewer).unwrap_err().to_string();
        assert!(e.contains("unexpected tensor 'fc.weight'"), "{e}");
        // Truncated file.
        let bytes = fs::read(&p).unwrap();
        fs::write(&p, &bytes[..bytes.len() - 5]).unwrap();
        let e = load_weights(&p, &l).unwrap_err();
        assert!(matches!(e, CheckpointError::Format { .. }), "{e}");
        let e = load_weights(&d.join("missing.safetensors"), &l).unwrap_err().to_string();
        assert!(e.contains("missing.safetensors"), "{e}");
    }
}
