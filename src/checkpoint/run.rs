//! Run checkpoints: a folder `step-N/` holding `model.safetensors` (PyTorch names and layouts),
//! `optimizer.safetensors` (each state buffer under `<parameter>.<state>`, e.g.
//! `conv1.weight.momentum_buffer`, `fc1.bias.exp_avg_sq`) and `state.json` (position of the run,
//! the settings it must be resumed with, the layout it was written from, format version and the
//! SHA-256 of each file).
//!
//! A checkpoint is written into a temporary folder next to its final place, every file fsync'd,
//! then the folder is renamed and the directory fsync'd, then the `latest` pointer is replaced
//! atomically, and only then are checkpoints beyond `keep` deleted: a crash at any moment leaves
//! the previous checkpoint loadable. Loading verifies every checksum, the format version and
//! every tensor name and shape before anything is used.

use super::{io_err, to_safetensors, weights_from_bytes, write_atomic, CheckpointError};
use crate::net::ParamLayout;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

/// Version of the checkpoint format this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// `state.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Checkpoint format version.
    pub format_version: u32,
    /// Model name.
    pub model: String,
    /// Optimisation steps done.
    pub step: u64,
    /// Epoch the next step belongs to.
    pub epoch: u64,
    /// Samples of that epoch already trained (global, so any worker count can resume).
    pub samples_in_epoch: u64,
    /// Updates the optimizer has done (Adam's bias correction).
    pub optimizer_steps: u64,
    /// Global batch size.
    pub batch_size: usize,
    /// Seed of initialisation, shuffling and dropout.
    pub seed: u64,
    /// Optimizer and its hyper-parameters.
    pub optimizer: String,
    /// Learning-rate schedule (resolved over the run).
    pub schedule: String,
    /// Steps of the whole run.
    pub total_steps: u64,
    /// Workers of the run that wrote it.
    pub workers: usize,
    /// Strategy of the run that wrote it.
    pub strategy: String,
    /// SHA-256 (hex) of each file of the checkpoint.
    pub files: BTreeMap<String, String>,
}

/// Name of a checkpoint folder.
pub fn folder_name(step: u64) -> String {
    format!("step-{step}")
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The layout of the optimizer file: for each state buffer, every parameter tensor again, named
/// `<parameter>.<state>`; the flat buffer is the state buffers one after the other.
fn optimizer_layout(layout: &ParamLayout, state_names: &[&str]) -> ParamLayout {
    ParamLayout::new(
        state_names
            .iter()
            .flat_map(|s| layout.entries().iter().map(move |e| (e.name.as_str(), vec![(*s, e.shape.clone())]))),
    )
}

fn fsync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes checkpoint `run.step` under `root` and keeps the newest `keep`; returns its folder.
/// `crash_halfway` (a test hook) aborts the process after the first file.
pub fn save_checkpoint(
    root: &Path,
    keep: usize,
    layout: &ParamLayout,
    params: &[f32],
    state: &[(&str, &[f32])],
    mut run: RunState,
    crash_halfway: bool,
) -> Result<PathBuf, CheckpointError> {
    fs::create_dir_all(root).map_err(io_err(root))?;
    let name = folder_name(run.step);
    let tmp = root.join(format!(".tmp-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    let result = (|| {
        let meta = HashMap::from([("model".to_string(), run.model.clone()), ("format".to_string(), "pt".to_string())]);
        let model = to_safetensors(layout, params, meta);
        let names: Vec<&str> = state.iter().map(|s| s.0).collect();
        let flat: Vec<f32> = state.iter().flat_map(|s| s.1.iter().copied()).collect();
        let optimizer = to_safetensors(&optimizer_layout(layout, &names), &flat, HashMap::new());
        run.files = BTreeMap::from([
            ("model.safetensors".to_string(), sha256_hex(&model)),
            ("optimizer.safetensors".to_string(), sha256_hex(&optimizer)),
        ]);
        write_atomic(&tmp.join("model.safetensors"), &model)?;
        if crash_halfway {
            // Test hook (`--inject-checkpoint-crash`): die like a power cut would.
            std::process::abort();
        }
        write_atomic(&tmp.join("optimizer.safetensors"), &optimizer)?;
        let json = serde_json::to_vec_pretty(&run).expect("RunState serialises");
        write_atomic(&tmp.join("state.json"), &json)?;
        let dst = root.join(&name);
        // The same step written again (a resumed run): the old folder is moved aside, not
        // deleted, until the new one has taken its place.
        let old = root.join(format!(".old-{name}-{}", std::process::id()));
        let replacing = dst.exists();
        if replacing {
            let _ = fs::remove_dir_all(&old);
            fs::rename(&dst, &old).map_err(io_err(&dst))?;
        }
        if let Err(e) = fs::rename(&tmp, &dst) {
            if replacing {
                let _ = fs::rename(&old, &dst);
            }
            return Err(io_err(&dst)(e));
        }
        fsync_dir(root);
        if replacing {
            let _ = fs::remove_dir_all(&old);
        }
        write_atomic(&root.join("latest"), name.as_bytes())?;
        Ok(dst)
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    let dst = result?;
    prune(root, keep, run.step);
    Ok(dst)
}

/// Deletes the oldest `step-N` folders beyond the newest `keep` (never `current`).
fn prune(root: &Path, keep: usize, current: u64) {
    let Ok(entries) = fs::read_dir(root) else { return };
    let mut steps: Vec<u64> =
        entries.filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("step-")?.parse().ok()).collect();
    steps.sort_unstable_by(|a, b| b.cmp(a));
    for s in steps.into_iter().skip(keep.max(1)).filter(|&s| s != current) {
        let _ = fs::remove_dir_all(root.join(folder_name(s)));
    }
}

/// The checkpoint folder `path` names: a checkpoint folder itself, or a checkpoint directory
/// (its `latest`).
pub fn resolve(path: &Path) -> Result<PathBuf, CheckpointError> {
    if path.join("state.json").is_file() {
        return Ok(path.to_path_buf());
    }
    let latest = path.join("latest");
    match fs::read_to_string(&latest) {
        Ok(name) => {
            let dir = path.join(name.trim());
            if dir.join("state.json").is_file() {
                Ok(dir)
            } else {
                Err(CheckpointError::Format { path: latest, msg: format!("points to '{}', which is not a checkpoint", name.trim()) })
            }
        }
        Err(_) => Err(CheckpointError::Format {
            path: path.to_path_buf(),
            msg: "neither a checkpoint folder (state.json) nor a checkpoint directory (latest); hint: pass --checkpoint-dir's folder or one of its step-N folders".into(),
        }),
    }
}

/// A loaded checkpoint.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The folder it came from.
    pub dir: PathBuf,
    /// Parameters.
    pub params: Vec<f32>,
    /// Optimizer state buffers by name.
    pub state: Vec<(String, Vec<f32>)>,
    /// `state.json`.
    pub run: RunState,
}

/// Loads the checkpoint `path` names (see `resolve`) for a model of `layout` whose optimizer
/// has the state buffers `state_names`; verifies checksums, version, names and shapes first.
pub fn load_checkpoint(path: &Path, layout: &ParamLayout, state_names: &[&str]) -> Result<Loaded, CheckpointError> {
    let dir = resolve(path)?;
    let sp = dir.join("state.json");
    let run = parse_run_state(&fs::read(&sp).map_err(io_err(&sp))?, &sp)?;
    let read = |name: &str| {
        let p = dir.join(name);
        fs::read(&p).map_err(io_err(&p))
    };
    let model = read("model.safetensors")?;
    let optimizer = read("optimizer.safetensors")?;
    checkpoint_from_bytes(&dir, run, &model, &optimizer, layout, state_names)
}

/// Parses `state.json` (`path` names it in errors) and refuses format versions newer than this
/// build reads.
pub fn parse_run_state(bytes: &[u8], path: &Path) -> Result<RunState, CheckpointError> {
    let run: RunState = serde_json::from_slice(bytes)
        .map_err(|e| CheckpointError::Format { path: path.to_path_buf(), msg: e.to_string() })?;
    if run.format_version > FORMAT_VERSION {
        return Err(CheckpointError::Mismatch {
            path: path.to_path_buf(),
            msg: format!(
                "format version {} is newer than this convoy reads ({FORMAT_VERSION}); hint: use a newer convoy",
                run.format_version
            ),
        });
    }
    Ok(run)
}

/// A checkpoint from the bytes of its files (`dir` names them in errors): checks each file's
/// SHA-256 against `run.files`, then every tensor name and shape.
pub fn checkpoint_from_bytes(
    dir: &Path,
    run: RunState,
    model: &[u8],
    optimizer: &[u8],
    layout: &ParamLayout,
    state_names: &[&str],
) -> Result<Loaded, CheckpointError> {
    let sp = dir.join("state.json");
    let check = |name: &str, bytes: &[u8]| -> Result<PathBuf, CheckpointError> {
        let p = dir.join(name);
        let want = run
            .files
            .get(name)
            .ok_or_else(|| CheckpointError::Format { path: sp.clone(), msg: format!("no checksum for {name}") })?;
        if &sha256_hex(bytes) != want {
            return Err(CheckpointError::Format {
                path: p,
                msg: "SHA-256 does not match state.json (truncated or corrupted)".into(),
            });
        }
        Ok(p)
    };
    let mp = check("model.safetensors", model)?;
    let params = weights_from_bytes(model, &mp, layout)?;
    let op = check("optimizer.safetensors", optimizer)?;
    let flat = weights_from_bytes(optimizer, &op, &optimizer_layout(layout, state_names)).map_err(|e| match e {
        CheckpointError::Mismatch { path, msg } => CheckpointError::Mismatch {
            path,
            msg: format!("{msg} (optimizer state; the checkpoint was written with optimizer {})", run.optimizer),
        },
        e => e,
    })?;
    let n = layout.len();
    let state =
        state_names.iter().enumerate().map(|(i, s)| (s.to_string(), flat[i * n..(i + 1) * n].to_vec())).collect();
    Ok(Loaded { dir: dir.to_path_buf(), params, state, run })
}

/// SHA-256 (hex) of `bytes`, as `state.json` records it.
pub fn sha256(bytes: &[u8]) -> String {
    sha256_hex(bytes)
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

    fn run_state(step: u64) -> RunState {
        RunState {
            format_version: FORMAT_VERSION,
            model: "t".into(),
            step,
            epoch: 1,
            samples_in_epoch: 64,
            optimizer_steps: step,
            batch_size: 32,
            seed: 1,
            optimizer: "sgd".into(),
            schedule: "constant".into(),
            total_steps: 100,
            workers: 2,
            strategy: "allreduce".into(),
            files: BTreeMap::new(),
        }
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("convoy-run-ckpt-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn round_trip_latest_and_keep() {
        let l = layout();
        let root = tmpdir("rt");
        let params: Vec<f32> = (0..l.len()).map(|i| i as f32 * 0.5).collect();
        let mom: Vec<f32> = (0..l.len()).map(|i| -(i as f32)).collect();
        for step in [10, 20, 30] {
            save_checkpoint(&root, 2, &l, &params, &[("momentum_buffer", &mom)], run_state(step), false).unwrap();
        }
        assert!(!root.join("step-10").exists() && root.join("step-20").exists() && root.join("step-30").exists());
        let c = load_checkpoint(&root, &l, &["momentum_buffer"]).unwrap();
        assert_eq!(c.dir, root.join("step-30"));
        assert_eq!(c.params, params);
        assert_eq!(c.state, vec![("momentum_buffer".to_string(), mom.clone())]);
        assert_eq!(c.run.step, 30);
        let st = SafeTensorsNames::of(&root.join("step-30/optimizer.safetensors"));
        assert!(st.contains(&"conv1.weight.momentum_buffer".to_string()), "{st:?}");
        // Another optimizer's state is a mismatch naming the tensor.
        let e = load_checkpoint(&root.join("step-20"), &l, &["exp_avg", "exp_avg_sq"]).unwrap_err().to_string();
        assert!(e.contains("conv1.weight.exp_avg") && e.contains("optimizer"), "{e}");
    }

    struct SafeTensorsNames;
    impl SafeTensorsNames {
        fn of(p: &Path) -> Vec<String> {
            let b = fs::read(p).unwrap();
            safetensors::SafeTensors::deserialize(&b).unwrap().names().into_iter().map(|s| s.to_string()).collect()
        }
    }

    #[test]
    fn corruption_and_newer_versions_are_refused_naming_the_file() {
        let l = layout();
        let root = tmpdir("bad");
        let params = vec![1.0f32; l.len()];
        let dir = save_checkpoint(&root, 3, &l, &params, &[], run_state(5), false).unwrap();
        let mp = dir.join("model.safetensors");
        let mut b = fs::read(&mp).unwrap();
        let last = b.len() - 1;
        b[last] ^= 1;
        fs::write(&mp, &b).unwrap();
        let e = load_checkpoint(&dir, &l, &[]).unwrap_err().to_string();
        assert!(e.contains("model.safetensors") && e.contains("SHA-256"), "{e}");
        let dir =
            save_checkpoint(&root, 3, &l, &params, &[], RunState { format_version: 1, ..run_state(6) }, false).unwrap();
        let sp = dir.join("state.json");
        let s = fs::read_to_string(&sp).unwrap().replace("\"format_version\": 1", "\"format_version\": 99");
        fs::write(&sp, s).unwrap();
        let e = load_checkpoint(&dir, &l, &[]).unwrap_err().to_string();
        assert!(e.contains("state.json") && e.contains("newer"), "{e}");
        let e = load_checkpoint(&root.join("nope"), &l, &[]).unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("hint"), "{e}");
    }
}
