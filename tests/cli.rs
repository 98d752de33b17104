//! The `convoy` binary on bad input: every case exits with code 2 and a message naming the
//! thing that is wrong, never a panic.

mod common;

use common::{assert_exit2, convoy, tmp};
use std::path::Path;
use std::process::Output;

fn idx(magic: u32, dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}

/// A tiny MNIST-shaped directory: `n` train and test images of 28×28, `labels` of them labelled.
fn write_set(dir: &Path, n: u32, labels: u32, image_magic: u32, truncate: usize) {
    for split in ["train", "t10k"] {
        let mut img = idx(image_magic, &[n, 28, 28], &vec![7u8; (n * 784) as usize]);
        img.truncate(img.len() - truncate);
        std::fs::write(dir.join(format!("{split}-images-idx3-ubyte")), img).unwrap();
        std::fs::write(
            dir.join(format!("{split}-labels-idx1-ubyte")),
            idx(0x801, &[labels], &vec![1u8; labels as usize]),
        )
        .unwrap();
    }
}

#[test]
fn a_missing_data_dir_exits_2_naming_it() {
    let out = convoy(&["train", "--data", "no/such/dir", "--steps", "1", "--no-progress"]);
    assert_exit2(&out, &["no/such/dir"]);
}

#[test]
fn a_truncated_idx_file_exits_2_naming_the_file() {
    let d = tmp("trunc");
    write_set(&d, 4, 4, 0x803, 100);
    let out = convoy(&["train", "--data", d.to_str().unwrap(), "--steps", "1", "--no-progress"]);
    assert_exit2(&out, &["train-images-idx3-ubyte"]);
}

#[test]
fn an_idx_file_with_a_wrong_magic_exits_2_saying_so() {
    let d = tmp("magic");
    write_set(&d, 4, 4, 0x1234, 0);
    let out = convoy(&["train", "--data", d.to_str().unwrap(), "--steps", "1", "--no-progress"]);
    assert_exit2(&out, &["magic"]);
}

#[test]
fn label_count_differs_from_image_count() {
    let d = tmp("count");
    write_set(&d, 4, 3, 0x803, 0);
    let out = convoy(&["train", "--data", d.to_str().unwrap(), "--steps", "1", "--no-progress"]);
    assert_exit2(&out, &["labels"]);
}

#[test]
fn bad_flag_values() {
    assert_exit2(&convoy(&["train", "--batch-size", "0"]), &["--batch-size"]);
    assert_exit2(&convoy(&["train", "--lr", "-1"]), &["--lr"]);
    assert_exit2(&convoy(&["train", "--model", "nonet"]), &["unknown model 'nonet'"]);
    assert_exit2(&convoy(&["train", "--schedule", "sometimes"]), &["sometimes"]);
    assert_exit2(&convoy(&["train", "--frobnicate"]), &["--frobnicate"]);
    assert_exit2(&convoy(&["eval", "--weights", "no/such.safetensors"]), &["no/such.safetensors"]);
}

#[test]
fn corrupt_weights_file() {
    let d = tmp("weights");
    let w = d.join("w.safetensors");
    std::fs::write(&w, b"not a safetensors file at all").unwrap();
    assert_exit2(&convoy(&["eval", "--weights", w.to_str().unwrap()]), &["w.safetensors"]);
}

/// A short run writes metrics and weights; `convoy eval` loads the weights and reports the same
/// accuracy as the run's final evaluation.
#[test]
#[cfg_attr(debug_assertions, ignore = "release suite")]
fn train_save_metrics_then_eval() {
    let d = tmp("e2e");
    let (w, m) = (d.join("w.safetensors"), d.join("m.jsonl"));
    let out = convoy(&[
        "train",
        "--steps",
        "30",
        "--threads",
        "2",
        "--no-progress",
        "--save",
        w.to_str().unwrap(),
        "--metrics",
        m.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("done: 30 steps") && stdout.contains("test accuracy"), "{stdout}");
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&m).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["event"], "run_start");
    assert_eq!(lines.iter().filter(|v| v["event"] == "step").count(), 30);
    let last = lines.last().unwrap();
    assert_eq!(last["event"], "run_end");
    let acc = last["test_acc"].as_f64().unwrap();
    assert!(acc > 0.5, "30 steps of LeNet should beat chance by far: {acc}");
    let out = convoy(&["eval", "--weights", w.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.contains(&format!("test accuracy {:.2}%", acc * 100.0)), "{stdout} vs {acc}");
    // Weights of another model are refused with the first mismatch named.
    let out = convoy(&["eval", "--weights", w.to_str().unwrap(), "--model", "lenet-caffe"]);
    assert_exit2(&out, &["conv1.weight"]);
}

/// `convoy plan`: a table for the defaults, JSON that parses, and bad input → exit 2 naming it.
#[test]
fn plan_predicts_and_refuses_bad_input() {
    let run = |args: &[&str]| convoy(&[&["plan"][..], args].concat());
    let out = run(&["--model", "lenet", "--nodes", "1,2,64", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);
    assert!(v[2]["recommended"].is_string());
    let dir = std::env::temp_dir().join(format!("convoy-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("p.svg");
    assert_eq!(run(&["--plot", svg.to_str().unwrap()]).status.code(), Some(0));
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
    // A profile of another model.
    let other = dir.join("other.json");
    std::fs::write(
        &other,
        r#"{"version":1,"model":{"model":"lenet-caffe","input":784,"layers":[]},"batch":64,"threads":1,"mem_bandwidth":1e10,"allreduce_alpha":1e-5,"allreduce_beta":1e9}"#,
    )
    .unwrap();
    for (args, needle) in [
        (vec!["--model", "nope"], "nope"),
        (vec!["--nodes", "0"], "--nodes"),
        (vec!["--link=-5gbit"], "--link"),
        (vec!["--latency", "soon"], "--latency"),
        (vec!["--strategies", "magic"], "magic"),
        (vec!["--profile", other.to_str().unwrap()], "lenet-caffe"),
        (vec!["--profile", "/nonexistent/p.json"], "--profile"),
        (vec!["--node-gflops", "0"], "--node-gflops"),
        (vec!["--link", "profile"], "--link profile needs --profile"),
        (vec!["--servers", "0"], "--servers"),
        (vec!["--micro-batches", "512"], "--micro-batches"),
        (vec!["--bucket-mb=-1"], "--bucket-mb"),
        (vec!["--pipeline-schedule", "zigzag"], "--pipeline-schedule"),
        (vec!["--jitter=-2%"], "--jitter"),
        (vec!["--eager-limit", "big"], "--eager-limit"),
        (vec!["--node-speed", "0"], "--node-speed"),
        (vec!["--cores-per-node=-1"], "--cores-per-node"),
    ] {
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // A layout the user pins is the one predicted: 2 parameter-server shards for 1 worker, a
    // pipeline of 8 micro-batches with the layers its stages end after.
    let out = run(&[
        "--model",
        "lenet",
        "--nodes",
        "1,2",
        "--strategies",
        "ps,pipeline",
        "--servers",
        "2",
        "--micro-batches",
        "8",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["predictions"][0]["strategy"], "ps k=2");
    let two: Vec<&str> =
        v[1]["predictions"].as_array().unwrap().iter().map(|p| p["strategy"].as_str().unwrap()).collect();
    assert_eq!(two, ["ps k=2", "pipeline m=8"]);
    assert_eq!(v[1]["predictions"][1]["split_after"].as_array().unwrap().len(), 1);
    // The pipeline is predicted in the schedule `train` runs: 1F1B unless GPipe is asked for.
    let out = run(&[
        "--model",
        "lenet",
        "--nodes",
        "2",
        "--strategies",
        "pipeline",
        "--micro-batches",
        "8",
        "--pipeline-schedule",
        "gpipe",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let g: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(g[0]["predictions"][0]["strategy"], "pipeline gpipe m=8");
    assert!(
        g[0]["predictions"][0]["memory_bytes"].as_f64() > v[1]["predictions"][1]["memory_bytes"].as_f64(),
        "GPipe holds all 8 micro-batches, 1F1B 2"
    );
    // With jitter a data-parallel step on several nodes waits for the slowest; one node waits
    // for nobody.
    let out = run(&["--model", "lenet", "--nodes", "1,4,64", "--strategies", "dp", "--jitter", "3%", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let wait = |i: usize| j[i]["predictions"][0]["straggle_s"].as_f64().unwrap();
    assert_eq!(wait(0), 0.0);
    assert!(wait(1) > 0.0 && wait(2) > 0.0, "{j}");
    // `--link profile` needs the MPI link in the profile, which only `calibrate --comm mpi`
    // measures; calibrated without MPI, the profile has none; outside mpirun there is no link.
    let profile = dir.join("lenet.json");
    let cal = |extra: &[&str]| {
        convoy(
            &[
                &[
                    "plan",
                    "calibrate",
                    "--model",
                    "lenet",
                    "--batch",
                    "4",
                    "--reps",
                    "1",
                    "--threads",
                    "1",
                    "--out",
                    profile.to_str().unwrap(),
                ][..],
                extra,
            ]
            .concat(),
        )
    };
    assert_eq!(cal(&[]).status.code(), Some(0));
    let out = run(&["--profile", profile.to_str().unwrap(), "--link", "profile"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("has no MPI link") && err.contains("--comm mpi"), "{err}");
    let out = cal(&["--comm", "mpi"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("comm"), "{err}");
}

/// CIFAR-10 binary files are found by `--data`, train the zoo's CIFAR models, and a model for
/// another input is refused with both shapes named.
#[test]
fn cifar_binary_data_trains_cifar_models_and_refuses_mnist_models() {
    let dir = std::env::temp_dir().join(format!("convoy-cifar-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let record = |i: usize| {
        let mut r = vec![(i % 10) as u8];
        r.extend((0..3072).map(|p| ((p * 7 + i * 13) % 256) as u8));
        r
    };
    for name in [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ] {
        let bytes: Vec<u8> = (0..8).flat_map(record).collect();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let train = |model: &str| {
        convoy(&[
            "train",
            "--no-progress",
            "--steps",
            "2",
            "--batch-size",
            "8",
            "--threads",
            "1",
            "--model",
            model,
            "--data",
            dir.to_str().unwrap(),
        ])
    };
    let ok = train("alexnet-cifar");
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    let bad = train("lenet");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{err}");
    assert!(err.contains("[3, 32, 32]") && err.contains("[1, 28, 28]"), "{err}");
}

/// `plan calibrate` times every layer of a DAG net inside whole training steps (ResNet-20's
/// shortcut layers read a layer two back), and records the kernel each convolution ran.
#[test]
fn calibrate_profiles_residual_nets_with_their_kernels() {
    let dir = tmp("calibrate-dag");
    for model in ["resnet20", "resnet20-b"] {
        let profile = dir.join(format!("{model}.json"));
        let out = convoy(&[
            "plan",
            "calibrate",
            "--model",
            model,
            "--batch",
            "8",
            "--reps",
            "1",
            "--threads",
            "1",
            "--out",
            profile.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(0), "{model}: {}", String::from_utf8_lossy(&out.stderr));
        let p: serde_json::Value = serde_json::from_slice(&std::fs::read(&profile).unwrap()).unwrap();
        let layers = p["model"]["layers"].as_array().unwrap();
        let names: Vec<&str> = layers.iter().map(|l| l["name"].as_str().unwrap()).collect();
        assert!(
            names.iter().any(|n| n.starts_with("layer2_0_shortcut")) && names.contains(&"layer3_2_add"),
            "{model}: {names:?}"
        );
        for l in layers {
            let (f, b) = (l["fwd_s"].as_f64().unwrap(), l["bwd_s"].as_f64().unwrap());
            assert!(f.is_finite() && f >= 0.0 && b.is_finite() && b >= 0.0, "{model}: {l}");
        }
        let conv = layers.iter().find(|l| l["name"] == "layer1_0_conv1").unwrap();
        let kernel = conv["kernel"].as_str().unwrap_or("");
        assert!(["direct-avx512", "direct-avx2", "im2col+gemm"].contains(&kernel), "{model}: {conv}");
        assert!(conv["fwd_s"].as_f64().unwrap() > 0.0, "{conv}");
    }
    // The plan reads such a profile back.
    let out = convoy(&[
        "plan",
        "--model",
        "resnet20",
        "--profile",
        dir.join("resnet20.json").to_str().unwrap(),
        "--nodes",
        "1,2",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `bench --layers` prints one row per layer with its kernel and the measured FMA peak, as text
/// and as JSON; `--json` alone is refused.
#[test]
fn bench_layers_prints_a_row_per_layer() {
    let out = convoy(&[
        "bench", "--model", "resnet20", "--batch", "4", "--steps", "1", "--warmup", "1", "--layers", "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = t["layers"].as_array().unwrap();
    assert_eq!(rows.len(), 71, "ResNet-20 (option A) has 71 layers here");
    assert!(rows.iter().any(|r| r["kind"] == "conv2d" && !r["kernel"].as_str().unwrap().is_empty()));
    assert!(t["step_ms"].as_f64().unwrap() > 0.0 && t["peak_gflops"].as_f64().unwrap() >= 0.0);
    let sum: f64 = rows.iter().map(|r| r["fwd_ms"].as_f64().unwrap() + r["bwd_ms"].as_f64().unwrap()).sum();
    assert!(sum <= t["step_ms"].as_f64().unwrap() * 1.01 + 0.01, "the layers fit in the step: {sum} vs {t}");
    let out = convoy(&["bench", "--model", "lenet", "--batch", "2", "--steps", "1", "--warmup", "0", "--layers"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FMA peak") && text.contains("conv1") && text.contains("total:"), "{text}");
    assert_exit2(&convoy(&["bench", "--json"]), &["--layers"]);
}

/// `--backend`: an unknown name exits 2 naming the choices; `dnnl` in a build without oneDNN
/// exits 2 saying how to build; in a build with it, the per-layer table names oneDNN's
/// implementation on every convolution, and `--backend native` names convoy's kernels.
#[test]
fn backend_flag_chooses_the_convolution_library() {
    assert_exit2(&convoy(&["train", "--backend", "cudnn"]), &["native, dnnl"]);
    assert_exit2(&convoy(&["bench", "--backend", "x"]), &["unknown backend"]);
    let layers = |backend: &str| {
        let out = convoy(&[
            "bench",
            "--model",
            "lenet",
            "--batch",
            "2",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--layers",
            "--json",
            "--backend",
            backend,
        ]);
        (out.status.code(), out)
    };
    let (code, out) = layers("dnnl");
    if !cfg!(feature = "dnnl") {
        assert_exit2(&out, &["--features dnnl"]);
        return;
    }
    assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let kernels = |out: &Output| {
        let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        t["layers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["kind"] == "conv2d")
            .map(|r| r["kernel"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let k = kernels(&out);
    assert!(k.len() == 2 && k.iter().all(|k| k.starts_with("dnnl:")), "{k:?}");
    let (code, out) = layers("native");
    assert_eq!(code, Some(0));
    assert!(kernels(&out).iter().all(|k| !k.starts_with("dnnl")));
}
