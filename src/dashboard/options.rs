//! What the launch form offers and allows: the zoo, the datasets found on disk, the choices of
//! each flag and the bounds, as `GET /api/options` answers them and the launch check applies them.

use serde_json::{json, Value};
use std::path::Path;

/// Most workers a run from the page may have (threads of one machine).
pub const MAX_WORKERS: usize = 64;

/// Datasets: sub-directories of the data root holding MNIST-format training images.
pub fn datasets(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            ["train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"].iter().any(|f| e.path().join(f).is_file())
        })
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// The answer of `GET /api/options`.
pub fn options(data_root: &Path) -> Value {
    json!({
        "models": crate::net::spec::ZOO,
        "datasets": datasets(data_root),
        "strategies": ["allreduce", "ps", "pipeline", "tensor", "hybrid"],
        "allreduce": ["direct", "ring", "tree", "naive"],
        "ps_modes": ["sync", "async", "ssp"],
        "optimizers": ["sgd", "adam", "adamw"],
        "max_workers": MAX_WORKERS,
        "cores": crate::cli::default_threads(),
    })
}
