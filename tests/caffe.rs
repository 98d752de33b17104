//! Caffe compatibility end to end: Caffe's LeNet prototxt (examples/mnist/lenet_train_test.prototxt)
//! trains exactly as the zoo's `lenet-caffe` (the same net, the same initialisation: the same
//! parameters after 10 steps, hence the same accuracy), under one worker and under all-reduce;
//! a Data layer's transform_param becomes the data options (--normalize, --augment flip).

mod common;

use common::{config, small_mnist};
use convoy::data::Normalize;
use convoy::parallel;
use convoy::train::events::Recorder;

const LENET: &str = include_str!("data/lenet_train_test.prototxt");

#[test]
fn caffe_lenet_prototxt_trains_exactly_as_the_built_in_lenet_caffe() {
    let path = std::env::temp_dir().join(format!("convoy-lenet-{}.prototxt", std::process::id()));
    std::fs::write(&path, LENET).unwrap();
    for workers in ["1", "2"] {
        let run = |model: &str, extra: &[&str]| {
            let (cfg, pc) = config(&[&["--model", model, "--steps", "10", "--batch-size", "64", "--threads", "1", "--workers", workers], extra].concat(), small_mnist());
            parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap()
        };
        let a = run(path.to_str().unwrap(), &[]);
        // Its transform_param scale 0.00390625 = 1/256 on 0..255 pixels is convoy's [0, 1]
        // pixels times 255/256: normalisation with mean 0, std 1/(255·scale).
        let b = run("lenet-caffe", &["--normalize", &format!("0:{}", 1.0f32 / (255.0 * 0.00390625))]);
        assert!(a.params == b.params, "{workers} workers: the prototxt net trained differently");
        assert_eq!(a.test_acc, b.test_acc);
    }
    // A layer convoy cannot build is refused naming the file and line, exit code 2.
    let bad = std::env::temp_dir().join(format!("convoy-bad-{}.prototxt", std::process::id()));
    std::fs::write(&bad, LENET.replace("type: \"ReLU\"", "type: \"PReLU\"")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_convoy")).args(["train", "--steps", "1", "--model", bad.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("PReLU") && err.contains(".prototxt:"), "{err}");
}

/// Caffe's lenet_solver.prototxt settings (with max_iter 10) train exactly as the same settings
/// given as flags.
#[test]
fn caffe_solver_sets_what_the_flags_would() {
    let net = std::env::temp_dir().join(format!("convoy-solver-net-{}.prototxt", std::process::id()));
    std::fs::write(&net, LENET).unwrap();
    let solver = std::env::temp_dir().join(format!("convoy-solver-{}.prototxt", std::process::id()));
    std::fs::write(
        &solver,
        format!(
            "net: \"{}\"\ntest_iter: 100\ntest_interval: 500\nbase_lr: 0.01\nmomentum: 0.9\nweight_decay: 0.0005\nlr_policy: \"inv\"\ngamma: 0.0001\npower: 0.75\ndisplay: 100\nmax_iter: 10\nrandom_seed: 3\nsolver_mode: CPU\n",
            net.display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let (cfg, pc) = config(&[args, &["--batch-size", "64", "--threads", "1"]].concat(), small_mnist());
        parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap()
    };
    let a = run(&["--solver", solver.to_str().unwrap()]);
    let b = run(&["--model", net.to_str().unwrap(), "--lr", "0.01", "--momentum", "0.9", "--weight-decay", "0.0005", "--schedule", "inv:0.0001:0.75", "--steps", "10", "--seed", "3"]);
    assert_eq!(a.steps, 10);
    assert!(a.params == b.params, "the solver's run differs from the flags' run");
}

/// `transform_param { scale mean_value mirror }` of the training Data layer becomes
/// `--normalize m/255:1/(255·scale)` and a flip; the flags win where given; crop_size is refused
/// (exit 2) unless the samples already have that size.
#[test]
fn data_layer_transform_param_sets_normalisation_and_flip_and_flags_win() {
    let dir = std::env::temp_dir().join(format!("convoy-transform-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, transform: &str| {
        let p = dir.join(name);
        std::fs::write(&p, LENET.replacen("transform_param { scale: 0.00390625 }", transform, 1)).unwrap();
        p.to_str().unwrap().to_string()
    };
    let net = write("t.prototxt", "transform_param { scale: 0.0125 mean_value: 127.5 mirror: true }");
    let (cfg, _) = config(&["--model", &net], small_mnist());
    // (pixel − 127.5)·0.0125 = (x − 0.5)/(1/(255·0.0125)) for x = pixel/255.
    assert_eq!(cfg.data.normalize, Some(Normalize::new(vec![127.5 / 255.0], vec![1.0 / (255.0 * 0.0125)])));
    assert!(cfg.data.augment.flip && cfg.data.augment.crop_pad == 0);
    let (cfg, _) = config(&["--model", &net, "--normalize", "0.1:0.2", "--augment", "crop:2"], small_mnist());
    assert_eq!(cfg.data.normalize, Some(Normalize::new(vec![0.1], vec![0.2])));
    assert!(!cfg.data.augment.flip && cfg.data.augment.crop_pad == 2);
    // A crop to the samples' own size is nothing to do; a smaller one is refused.
    let same = write("same.prototxt", "transform_param { crop_size: 28 }");
    assert_eq!(config(&["--model", &same], small_mnist()).0.data.normalize, Some(Normalize::new(vec![0.0], vec![1.0 / 255.0])));
    let small = write("crop.prototxt", "transform_param { crop_size: 24 scale: 0.00390625 }");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_convoy"))
        .args(["train", "--steps", "1", "--model", &small, "--data", small_mnist().to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("crop.prototxt:9") && err.contains("crop_size 24") && err.contains("hint"), "{err}");
}
