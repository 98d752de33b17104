//! Fuzz targets: one function per parser of outside input, each taking arbitrary bytes. They
//! must never panic, abort or allocate in proportion to a length field rather than to the input;
//! where a parse succeeds they check what it promised. `fuzz/` (libFuzzer, `scripts/fuzz.sh
//! TARGET SECONDS`) drives them with coverage guidance; tests/fuzz_corpus.rs replays the
//! committed corpus `fuzz/corpus/TARGET/` through them in every test run.

use crate::checkpoint::{self, run};
use crate::data::{idx, Dataset};
use crate::net::ParamLayout;
use std::path::Path;

/// A fuzz target: its name and the function that takes one input.
pub type Target = (&'static str, fn(&[u8]));

/// The targets by name (the names of `fuzz/fuzz_targets/*.rs` and `fuzz/corpus/*/`).
pub const TARGETS: [Target; 11] = [
    ("cifar", cifar),
    ("image", image),
    ("idx", idx),
    ("weights", weights),
    ("state_json", state_json),
    ("checkpoint", checkpoint),
    ("model_toml", model_toml),
    ("prototxt", prototxt),
    ("solver", solver),
    ("web_json", web_json),
    ("profile", profile),
];

/// Builds a parsed model as `convoy train` would (shapes, layout), if it is small enough to
/// allocate: parameters are never allocated here.
fn build(spec: &crate::net::ModelSpec) {
    if let Ok(net) = crate::net::Net::build(spec) {
        assert_eq!(net.layout().entries().iter().map(|e| e.len()).sum::<usize>(), net.layout().len());
    }
}

/// CIFAR binary batch files: the first byte chooses CIFAR-10 or -100, the rest is the file.
pub fn cifar(data: &[u8]) {
    use crate::data::cifar::{CifarDataset, Kind};
    let Some((k, rest)) = data.split_first() else { return };
    let kind = if k % 2 == 0 { Kind::Cifar10 } else { Kind::Cifar100 };
    if let Ok(ds) = CifarDataset::from_files(kind, &[(std::path::PathBuf::from("fuzz.bin"), rest.to_vec())]) {
        let mut buf = vec![0.0f32; 3 * 32 * 32];
        for i in 0..ds.len().min(3) {
            assert!((ds.get_into(i, &mut buf).expect("in memory") as usize) < ds.num_classes());
        }
    }
}

/// A PNG or JPEG file of an image folder, decoded, resized and cropped; the first byte chooses
/// the sample shape (grayscale or RGB, 1 to 16 pixels square), the rest is the file.
pub fn image(data: &[u8]) {
    let Some((k, rest)) = data.split_first() else { return };
    let shape = [if k & 1 == 0 { 1 } else { 3 }, 1 + (k >> 1 & 15) as usize, 1 + (k >> 1 & 15) as usize];
    let mut out = vec![-1.0f32; shape.iter().product()];
    if crate::data::folder::decode_bytes(rest, shape, &mut out).is_ok() {
        assert!(out.iter().all(|v| (0.0..=1.0).contains(v)), "pixels outside [0, 1]");
    }
}

/// A model spec in TOML (`--model file.toml`).
pub fn model_toml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(spec) = crate::net::ModelSpec::from_toml(&text, "fuzz.toml") {
        build(&spec);
    }
}

/// A Caffe NetParameter in text format (`--model net.prototxt`).
pub fn prototxt(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(spec) = crate::net::caffe::from_prototxt(&text, "fuzz.prototxt", &mut || Ok(vec![1, 28, 28]), &mut |_| {})
    {
        build(&spec);
    }
    if let Ok(Some(d)) = crate::net::caffe::data_layer_from_prototxt(&text, "fuzz.prototxt") {
        assert!(d.batch_size.is_none_or(|(b, _)| b > 0), "a batch_size of 0 is an error");
    }
}

/// A Caffe SolverParameter in text format (`--solver`).
pub fn solver(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(s) = crate::net::caffe::solver_from_prototxt(&text, "fuzz.prototxt", &mut |_| {}) {
        if let Some(spec) = s.schedule {
            let _ = crate::optim::schedule::LrSchedule::parse(&spec, s.lr.unwrap_or(0.01));
        }
    }
}

/// An IDX file (raw or gzipped), decoded; then the input without its first two bytes, split
/// where they say (u16 LE), as an images file and a labels file made into a dataset.
pub fn idx(data: &[u8]) {
    let p = Path::new("fuzz.idx");
    if let Ok(a) = idx::decode_idx(data, p) {
        assert_eq!(a.data.len(), a.dims.iter().product::<usize>(), "payload must match the dimensions");
    }
    let Some((h, rest)) = data.split_first_chunk::<2>() else { return };
    let (a, b) = rest.split_at((u16::from_le_bytes(*h) as usize).min(rest.len()));
    if let (Ok(images), Ok(labels)) = (idx::decode_idx(a, p), idx::decode_idx(b, p)) {
        if let Ok(ds) = idx::IdxDataset::from_arrays(images, labels, (p, p)) {
            let mut buf = vec![0.0f32; ds.sample_shape().iter().product()];
            for i in 0..ds.len().min(3) {
                assert!(ds.get_into(i, &mut buf).expect("in memory") < 10);
            }
        }
    }
}

/// The layout the weight targets load into: two layers, three tensors.
fn layout() -> ParamLayout {
    ParamLayout::new(vec![
        ("conv1", vec![("weight", vec![2, 1, 3, 3]), ("bias", vec![2])]),
        ("fc", vec![("weight", vec![3, 4])]),
    ])
}

/// A safetensors weights file (`--init-from`, `eval --weights`, a checkpoint's model file).
pub fn weights(data: &[u8]) {
    let l = layout();
    if let Ok(w) = checkpoint::weights_from_bytes(data, Path::new("fuzz.safetensors"), &l) {
        assert_eq!(w.len(), l.len());
    }
}

/// A checkpoint's `state.json`.
pub fn state_json(data: &[u8]) {
    if let Ok(r) = run::parse_run_state(data, Path::new("state.json")) {
        assert!(r.format_version <= run::FORMAT_VERSION);
    }
}

/// A whole checkpoint folder: `[u16 LE length of state.json][state.json][u32 LE length of
/// model.safetensors][model.safetensors][optimizer.safetensors]` (lengths clamped to what is
/// there). Loaded as it is, then again with the checksums made to match, so that the fuzzer also
/// reaches the name and shape checks behind them.
pub fn checkpoint(data: &[u8]) {
    fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
        let (a, b) = data.split_at(n.min(data.len()));
        *data = b;
        a
    }
    let mut rest = data;
    let h = take(&mut rest, 2);
    let state =
        take(&mut rest, u16::from_le_bytes([h.first().copied().unwrap_or(0), h.get(1).copied().unwrap_or(0)]) as usize);
    let h = take(&mut rest, 4);
    let mut len = [0u8; 4];
    len[..h.len()].copy_from_slice(h);
    let model = take(&mut rest, u32::from_le_bytes(len) as usize);
    let optimizer = rest;
    let dir = Path::new("fuzz-ckpt");
    let Ok(mut r) = run::parse_run_state(state, &dir.join("state.json")) else { return };
    let l = layout();
    for names in [&[][..], &["momentum_buffer"][..], &["exp_avg", "exp_avg_sq"][..]] {
        let _ = run::checkpoint_from_bytes(dir, r.clone(), model, optimizer, &l, names);
    }
    r.files.insert("model.safetensors".into(), run::sha256(model));
    r.files.insert("optimizer.safetensors".into(), run::sha256(optimizer));
    for names in [&[][..], &["momentum_buffer"][..], &["exp_avg", "exp_avg_sq"][..]] {
        if let Ok(c) = run::checkpoint_from_bytes(dir, r.clone(), model, optimizer, &l, names) {
            assert_eq!((c.params.len(), c.state.len()), (l.len(), names.len()));
        }
    }
}

/// The website's JSON: the body of `POST /api/runs` (a launch request, checked as the server
/// does, with a dataset `mnist` of 1×28×28 samples and no file read), and the `GET /api/plan`
/// query's fields as JSON (checked and parsed by the CLI; the plan is computed when the node
/// counts are few and small). The first byte chooses which.
pub fn web_json(data: &[u8]) {
    use crate::dashboard::{launch::LaunchRequest, plan::PlanQuery};
    let Some((k, body)) = data.split_first() else { return };
    if k % 2 == 0 {
        let Ok(req) = serde_json::from_slice::<LaunchRequest>(body) else { return };
        let (root, model) = (Path::new("/nonexistent-data"), Path::new("/nonexistent-data/run/model.toml"));
        if let Ok((args, config)) = req.to_args_with(&["mnist".to_string()], root, model, &|_| Ok(vec![1, 28, 28])) {
            assert_eq!(args[0], "train");
            assert!(args.iter().all(|a| !a.contains("..")), "{args:?}");
            assert!(config.is_object());
        }
        return;
    }
    let Ok(q) = serde_json::from_slice::<PlanQuery>(body) else { return };
    let Ok(args) = q.to_args() else { return };
    use clap::Parser;
    let Ok(crate::cli::Cli { command: crate::cli::Command::Plan(p), .. }) = crate::cli::Cli::try_parse_from(&args)
    else {
        return;
    };
    // (A plan of many large node counts takes milliseconds; the fuzzer wants microseconds.)
    if p.nodes.len() <= 4 && p.nodes.iter().all(|&n| n <= 4096) {
        if let Ok((_, rows)) = crate::cli::plan::predict(&p) {
            assert_eq!(rows.len(), p.nodes.len());
        }
    }
}

/// A `convoy plan --profile` file (JSON, as `convoy plan calibrate` writes it) for LeNet; where it
/// is accepted, the plan made from it on a few node counts has finite, positive step times.
pub fn profile(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let spec = crate::net::ModelSpec::resolve("lenet").expect("a built-in model");
    let Ok(p) = crate::plan::calibrate::parse(text, "fuzz", &spec) else { return };
    let cluster = crate::plan::Cluster {
        bandwidth: 1.25e9,
        latency: 5e-6,
        collective_bandwidth: 1.25e9,
        collective_latency: 5e-6,
        server_bandwidth: 1.25e9,
        mem_bandwidth: p.mem_bandwidth,
        cores_per_node: p.threads as f64,
        node_speed: 1.0,
        jitter: 0.0,
        eager_bytes: crate::plan::pipeline_sim::EAGER_BYTES,
    };
    let planner = crate::plan::Plan { model: p.model, cluster, batch: p.batch.min(4096), pins: Default::default() };
    for n in [1, 3, 16] {
        for row in planner.layouts(n, &[], true) {
            assert!(row.step_s.is_finite() && row.step_s > 0.0, "{row:?}");
        }
    }
}
