//! Checkpoints and resume: training N steps straight gives the same weights as resuming from the
//! checkpoint of step k and training the rest — on the same worker layout (bitwise), on another
//! (to float tolerance; bitwise in `--deterministic` mode); bad checkpoints are refused.

mod common;

use common::{config, convoy_text, rel_err, small_mnist, tmp, train_small};
use convoy::parallel;
use convoy::train::events::Recorder;
use std::path::{Path, PathBuf};

/// 20 steps over 600 images (an epoch is 10 steps at batch 64, the 10th partial), LR halved every 6
/// steps so the schedule crosses the resume point. On convoy's kernels: resuming on another
/// worker count splits the batch otherwise, and on oneDNN that alone moves these 20 steps by
/// 6e-5 (its convolutions' sums depend on the split more), above the 1e-5 the checks here hold
/// (tests/batch_norm.rs checks the splits on oneDNN, at 1e-4).
const RUN: [&str; 12] = [
    "--steps",
    "20",
    "--batch-size",
    "64",
    "--threads",
    "1",
    "--seed",
    "3",
    "--schedule",
    "step:6:0.5",
    "--backend",
    "native",
];

/// Final parameters of `convoy train RUN args`.
fn train(args: &[&str]) -> Vec<f32> {
    let (cfg, pc) = config(&[&RUN[..], args].concat(), small_mnist());
    parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap_or_else(|e| panic!("{args:?}: {e}")).params
}

/// Runs `layout` straight with checkpoints every 8 steps; returns the final parameters and the
/// checkpoint directory.
fn straight_with_checkpoints(tag: &str, layout: &[&str]) -> (Vec<f32>, PathBuf) {
    let dir = tmp(tag);
    let d = dir.to_str().unwrap();
    let p = train(&[layout, &["--checkpoint-dir", d, "--checkpoint-every", "8", "--keep", "5"]].concat());
    for s in ["step-8", "step-16", "step-20"] {
        assert!(dir.join(s).join("state.json").is_file(), "{s} missing");
    }
    assert_eq!(std::fs::read_to_string(dir.join("latest")).unwrap(), "step-20");
    (p, dir)
}

#[test]
fn resume_on_the_same_layout_is_exact() {
    for (tag, layout) in [
        ("single-sgd", vec!["--optimizer", "sgd", "--lr", "0.05"]),
        ("single-adam", vec!["--optimizer", "adam", "--lr", "0.001"]),
        ("ar2-sgd", vec!["--workers", "2", "--optimizer", "sgd", "--lr", "0.05"]),
        ("ar4-adam", vec!["--workers", "4", "--optimizer", "adam", "--lr", "0.001"]),
    ] {
        let (want, dir) = straight_with_checkpoints(tag, &layout);
        let from = dir.join("step-8");
        let got = train(&[&layout[..], &["--resume", from.to_str().unwrap()]].concat());
        let e = rel_err(&got, &want);
        assert!(e <= 1e-6, "{tag}: relative error {e:e}");
        // Resuming a finished run does nothing more.
        let again = train(&[&layout[..], &["--resume", dir.to_str().unwrap()]].concat());
        assert!(again == want, "{tag}: resuming the last checkpoint changed the weights");
    }
}

#[test]
fn resuming_on_another_worker_count_ends_where_one_worker_does() {
    let opt = ["--optimizer", "sgd", "--lr", "0.05"];
    let (_, dir) = straight_with_checkpoints("from4", &[&["--workers", "4"][..], &opt].concat());
    let from = dir.join("step-8");
    let one = train(&opt);
    for workers in ["1", "2"] {
        let got = train(&[&opt[..], &["--workers", workers, "--resume", from.to_str().unwrap()]].concat());
        let e = rel_err(&got, &one);
        assert!(e <= 1e-5, "4 → {workers} workers: relative error {e:e}");
    }
}

#[test]
fn deterministic_resume_on_another_worker_count_is_bitwise() {
    let opt = ["--optimizer", "adam", "--lr", "0.001", "--deterministic"];
    let (_, dir) = straight_with_checkpoints("det4", &[&["--workers", "4"][..], &opt].concat());
    let one = train(&opt);
    let got = train(&[&opt[..], &["--resume", dir.join("step-8").to_str().unwrap()]].concat());
    assert!(got == one, "4 workers → 1 worker resume differs from 1 worker straight");
}

#[test]
fn bad_checkpoints_and_flags_are_refused_and_eval_reads_a_checkpoint() {
    let (_, dir) = straight_with_checkpoints("bad", &[]);
    let data = small_mnist().to_str().unwrap();
    let base = train_small("error");
    let run = |extra: &[&str]| convoy_text(&[&base[..], &RUN[..], extra].concat());
    let step8 = dir.join("step-8");
    // Other flags than the run that wrote it.
    let (code, _, err) = run(&["--resume", step8.to_str().unwrap(), "--lr", "0.5"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--lr") && err.contains("step-8"), "{err}");
    // A position outside the epoch (state.json edited by hand).
    let edited = dir.join("edited");
    std::fs::create_dir_all(&edited).unwrap();
    for f in ["model.safetensors", "optimizer.safetensors", "state.json"] {
        std::fs::copy(step8.join(f), edited.join(f)).unwrap();
    }
    let sj = std::fs::read_to_string(edited.join("state.json")).unwrap();
    let sj = sj.replace("\"samples_in_epoch\": 512", "\"samples_in_epoch\": 6400000000");
    std::fs::write(edited.join("state.json"), sj).unwrap();
    let (code, _, err) = run(&["--resume", edited.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("does not fit this run") && err.contains("6400000000"), "{err}");
    // Evaluate a checkpoint folder.
    let (code, _, err) = convoy_text(&["eval", "--data", data, "--weights", step8.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    // A corrupted file: refused naming it, nothing trained.
    let mp = step8.join("model.safetensors");
    let mut b = std::fs::read(&mp).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x40;
    std::fs::write(&mp, b).unwrap();
    let (code, _, err) = run(&["--resume", step8.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("model.safetensors") && err.contains("SHA-256"), "{err}");
    let (code, _, err) = run(&["--resume", dir.join("nothing-here").to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("nothing-here"), "{err}");
}

fn lenet_layout() -> convoy::net::ParamLayout {
    let spec = convoy::net::ModelSpec::resolve("lenet").unwrap();
    convoy::net::Net::build(&spec).unwrap().layout().clone()
}

/// Trained weights written by `--save` (the file PyTorch's `save_file(model.state_dict())` makes:
/// F32 tensors under state_dict names), in a fresh folder.
fn saved_weights(tag: &str) -> (PathBuf, Vec<f32>) {
    let dir = tmp(tag);
    std::fs::create_dir_all(&dir).unwrap();
    let w = dir.join("trained.safetensors");
    train(&["--optimizer", "sgd", "--lr", "0.05", "--save", w.to_str().unwrap()]);
    let params = convoy::checkpoint::load_weights(&w, &lenet_layout()).unwrap();
    (w, params)
}

/// Final parameters of one step at a learning rate of 1e-30 (which leaves the weights where the
/// run started) with `args`.
fn one_tiny_step(args: &[&str]) -> Vec<f32> {
    let (cfg, pc) = config(
        &[&["--steps", "1", "--batch-size", "64", "--threads", "1", "--lr", "1e-30"][..], args].concat(),
        small_mnist(),
    );
    parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap_or_else(|e| panic!("{args:?}: {e}")).params
}

#[test]
fn init_from_starts_every_strategy_from_the_file() {
    let (w, want) = saved_weights("init");
    let fresh = one_tiny_step(&[]);
    assert!(rel_err(&fresh, &want) > 0.1, "a fresh initialisation must differ from the trained weights");
    for layout in [
        vec![],
        vec!["--workers", "2"],
        vec!["--workers", "2", "--strategy", "ps"],
        vec!["--workers", "3", "--strategy", "ps", "--ps-mode", "async"],
    ] {
        let got = one_tiny_step(&[&layout[..], &["--init-from", w.to_str().unwrap()]].concat());
        let e = rel_err(&got, &want);
        assert!(e <= 1e-12, "{layout:?}: started {e:e} away from the --init-from weights");
    }
}

#[test]
fn init_from_a_mismatched_or_missing_file_exits_2_naming_it() {
    let (w, _) = saved_weights("init-bad");
    let bytes = std::fs::read(&w).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    // The same tensors with fc1.weight transposed ([in, out], a classic porting slip), and
    // without fc1.bias.
    type Edit<'a> = &'a dyn Fn(&str, Vec<usize>) -> Option<Vec<usize>>;
    let write = |path: &Path, edit: Edit<'_>| {
        let views: Vec<(String, safetensors::tensor::TensorView)> = st
            .tensors()
            .into_iter()
            .filter_map(|(name, t)| {
                let shape = edit(&name, t.shape().to_vec())?;
                Some((name, safetensors::tensor::TensorView::new(t.dtype(), shape, t.data()).unwrap()))
            })
            .collect();
        std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
    };
    let dir = w.parent().unwrap();
    let transposed = dir.join("transposed.safetensors");
    write(&transposed, &|n, s| Some(if n == "fc1.weight" { vec![s[1], s[0]] } else { s }));
    let missing = dir.join("no-bias.safetensors");
    write(&missing, &|n, s| (n != "fc1.bias").then_some(s));
    let base = [&train_small("error")[..], &["--steps", "2", "--threads", "1"]].concat();
    for (file, workers, want) in [
        (&transposed, "1", "tensor 'fc1.weight' has shape"),
        (&transposed, "2", "tensor 'fc1.weight' has shape"),
        (&missing, "1", "tensor 'fc1.bias' is missing"),
        (&dir.join("nowhere.safetensors"), "1", "hint"),
    ] {
        let (code, _, err) =
            convoy_text(&[&base[..], &["--workers", workers, "--init-from", file.to_str().unwrap()]].concat());
        assert_eq!(code, Some(2), "{err}");
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(err.contains("--init-from") && err.contains(name) && err.contains(want), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn parameter_server_checkpoints_resume_under_allreduce_and_back() {
    // Adam at lr 1e-4: at 1e-3 another split of the batch alone moves it by ~3e-5 (tests/parallel.rs).
    for opt in [["--optimizer", "sgd", "--lr", "0.05"], ["--optimizer", "adam", "--lr", "0.0001"]] {
        let one = train(&opt);
        // Written by 2 sync workers and 2 server shards (each holding half of the state).
        let ps = [&["--strategy", "ps", "--workers", "2", "--servers", "2"][..], &opt].concat();
        let (straight, dir) = straight_with_checkpoints(&format!("ps-{}", opt[1]), &ps);
        let e = rel_err(&straight, &one);
        assert!(e <= 1e-5, "{}: PS differs from one worker by {e:e}", opt[1]);
        let from = dir.join("step-8");
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(from.join("state.json")).unwrap()).unwrap();
        assert_eq!((state["strategy"].as_str(), state["optimizer_steps"].as_u64()), (Some("ps"), Some(8)));
        for layout in [vec![], vec!["--workers", "3"], vec!["--strategy", "ps", "--workers", "3"]] {
            let got = train(&[&opt[..], &layout, &["--resume", from.to_str().unwrap()]].concat());
            let e = rel_err(&got, &one);
            assert!(e <= 1e-5, "{}: PS (2 workers, 2 servers) → {layout:?}: relative error {e:e}", opt[1]);
        }
        // The reverse: written by 4 all-reduce workers, resumed by the parameter server.
        let (_, dir) =
            straight_with_checkpoints(&format!("ar-ps-{}", opt[1]), &[&["--workers", "4"][..], &opt].concat());
        for servers in ["1", "3"] {
            let got = train(
                &[
                    &opt[..],
                    &[
                        "--strategy",
                        "ps",
                        "--workers",
                        "2",
                        "--servers",
                        servers,
                        "--resume",
                        dir.join("step-8").to_str().unwrap(),
                    ],
                ]
                .concat(),
            );
            let e = rel_err(&got, &one);
            assert!(e <= 1e-5, "{}: all-reduce (4 workers) → PS with {servers} servers: relative error {e:e}", opt[1]);
        }
    }
}

#[test]
fn asynchronous_parameter_server_checkpoints_hold_exactly_n_global_steps() {
    let opt = ["--optimizer", "adam", "--lr", "0.001"];
    for mode in [vec!["--ps-mode", "async"], vec!["--ps-mode", "ssp", "--staleness", "1"]] {
        let dir = tmp(&format!("ps-{}", mode[1]));
        let d = dir.to_str().unwrap();
        let layout = [&["--strategy", "ps", "--workers", "3", "--servers", "2"][..], &mode, &opt].concat();
        train(&[&layout[..], &["--checkpoint-dir", d, "--checkpoint-every", "4", "--keep", "10"]].concat());
        // Each checkpoint is the servers' state after every worker's first N pushes and no
        // other: 3 updates per global step (the workers wait for each other at that step).
        for n in [4u64, 8, 12, 16, 20] {
            let state: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join(format!("step-{n}/state.json"))).unwrap()).unwrap();
            assert_eq!(state["optimizer_steps"].as_u64(), Some(3 * n), "{mode:?}: checkpoint of step {n}");
        }
        // It resumes, under the same mode and under all-reduce.
        for resumed in [&layout[..], &opt[..]] {
            let got = train(&[resumed, &["--resume", dir.join("step-8").to_str().unwrap()]].concat());
            assert!(got.iter().all(|v| v.is_finite()));
        }
    }
    // One asynchronous worker is sequential: resuming it is exact.
    let layout = [&["--strategy", "ps", "--ps-mode", "async"][..], &opt].concat();
    let (want, dir) = straight_with_checkpoints("ps-async-1", &layout);
    let got = train(&[&layout[..], &["--resume", dir.join("step-8").to_str().unwrap()]].concat());
    assert!(got == want, "one async worker: resumed run differs from the straight one");
}
