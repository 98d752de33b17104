//! Caffe compatibility end to end: Caffe's LeNet prototxt (examples/mnist/lenet_train_test.prototxt)
//! trains exactly as the zoo's `lenet-caffe` (the same net, the same initialisation: the same
//! parameters after 10 steps, hence the same accuracy), under one worker and under all-reduce.

mod common;

use common::{config, small_mnist};
use convoy::parallel;
use convoy::train::events::Recorder;

const LENET: &str = include_str!("data/lenet_train_test.prototxt");

#[test]
fn caffe_lenet_prototxt_trains_exactly_as_the_built_in_lenet_caffe() {
    let path = std::env::temp_dir().join(format!("convoy-lenet-{}.prototxt", std::process::id()));
    std::fs::write(&path, LENET).unwrap();
    for workers in ["1", "2"] {
        let run = |model: &str| {
            let (cfg, pc) = config(&["--model", model, "--steps", "10", "--batch-size", "64", "--threads", "1", "--workers", workers], small_mnist());
            parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap()
        };
        let a = run(path.to_str().unwrap());
        let b = run("lenet-caffe");
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
