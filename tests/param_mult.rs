//! Caffe's per-parameter multipliers and fillers in a TOML model: `lr_mult`/`decay_mult` train the
//! same under every strategy — all-reduce (2 workers), synchronous parameter servers (2 workers,
//! 2 servers), pipeline (2 stages), tensor (2 slices), hybrid (data × tensor, data × pipeline) —
//! as on one worker, lr_mult 0 freezes a tensor bitwise at its filler's values everywhere, and
//! the multipliers change training (the test can fail).

mod common;

use common::{config, model_file, rel_err, small_mnist, trained, TEN_STEPS};
use convoy::net::{ModelSpec, Net};
use convoy::parallel;
use convoy::train::events::Recorder;

const MODEL: &str = r#"
name = "mult"
input = [1, 28, 28]
classes = 10
[[layer]]
name = "conv1"
type = "conv2d"
out_channels = 4
kernel = 5
stride = 2
lr_mult = [0.0, 2.0]
weight_filler = { type = "constant", value = 0.05 }
bias_filler = { type = "constant", value = 0.1 }
[[layer]]
name = "relu1"
type = "relu"
[[layer]]
name = "fc1"
type = "linear"
out_features = 32
decay_mult = [1.0, 0.0]
weight_filler = { type = "xavier" }
[[layer]]
name = "relu2"
type = "relu"
[[layer]]
name = "fc2"
type = "linear"
out_features = 10
lr_mult = [3.0, 2.0]
decay_mult = [0.5]
weight_filler = { type = "msra", variance_norm = "average" }
"#;

/// SGD with momentum and weight decay, after `TEN_STEPS`.
const OPT: [&str; 6] = ["--lr", "0.05", "--momentum", "0.9", "--weight-decay", "0.01"];

/// The flags of every run here, on the model file `model`.
fn args(model: &str) -> Vec<&str> {
    [&TEN_STEPS[..], &OPT, &["--model", model]].concat()
}

/// One worker's parameters after the run, checked: conv1.weight frozen at its filler's value,
/// conv1.bias learning.
fn one_worker(m: &str) -> Vec<f32> {
    let want = trained(&args(m));
    assert_frozen(m, &want, "one worker");
    let net = Net::build(&ModelSpec::resolve(m).unwrap()).unwrap();
    assert!(net.layout().view(&want, "conv1.bias").unwrap().iter().all(|&b| b != 0.1), "conv1.bias learns (lr_mult 2)");
    want
}

/// conv1.weight (lr_mult 0) still holds its filler's value 0.05, bitwise.
fn assert_frozen(m: &str, params: &[f32], what: &str) {
    let net = Net::build(&ModelSpec::resolve(m).unwrap()).unwrap();
    let w = net.layout().view(params, "conv1.weight").unwrap();
    assert!(
        w.iter().all(|v| v.to_bits() == 0.05f32.to_bits()),
        "{what}: lr_mult 0 must freeze conv1.weight at its filler's value"
    );
}

#[test]
fn lr_and_decay_multipliers_train_the_same_on_two_workers_as_on_one() {
    let m = &model_file("mult.toml", MODEL);
    let want = one_worker(m);

    for extra in [&["--workers", "2"][..], &["--workers", "2", "--allreduce", "ring", "--no-overlap"][..]] {
        let (cfg, pc) = config(&[&args(m)[..], &["--strategy", "allreduce"], extra].concat(), small_mnist());
        let got = parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap().params;
        let e = rel_err(&got, &want);
        assert!(e <= 1e-5, "{extra:?}: relative error {e:e}");
        assert_frozen(m, &got, &format!("{extra:?}"));
    }

    // Without the multipliers (same fillers) training differs: they were applied.
    let plain = MODEL
        .replace("lr_mult = [0.0, 2.0]\n", "")
        .replace("decay_mult = [1.0, 0.0]\n", "")
        .replace("lr_mult = [3.0, 2.0]\n", "")
        .replace("decay_mult = [0.5]\n", "");
    let other = trained(&args(&model_file("plain.toml", &plain)));
    assert!(rel_err(&other, &want) > 1e-3);
}

/// The other strategies give each of their optimizers the multipliers of the ranges it updates:
/// a parameter server its shard, a pipeline stage its layers, a tensor slice its slices (a
/// row-parallel layer's bias lives on worker 0 only, so the others keep the weight's
/// multipliers alone), and the hybrids both. Same tolerance as tests/parallel.rs and
/// tests/model_parallel.rs (1e-5 relative after 10 steps); the frozen tensor is bitwise
/// unchanged, and weight decay with decay_mult 0 (fc1.bias) or 0.5 (fc2.weight) is on.
#[test]
fn every_strategy_honours_lr_and_decay_multipliers() {
    let m = &model_file("mult-strategies.toml", MODEL);
    let want = one_worker(m);
    for extra in [
        &["--strategy", "ps", "--ps-mode", "sync", "--workers", "2", "--servers", "2"][..],
        &["--strategy", "pipeline", "--stages", "2"][..],
        &["--strategy", "pipeline", "--stages", "2", "--micro-batches", "4", "--pipeline-schedule", "gpipe"][..],
        &["--strategy", "tensor", "--mp", "2"][..],
        &["--strategy", "hybrid", "--dp", "2", "--mp", "2"][..],
        &["--strategy", "hybrid", "--dp", "2", "--pp", "2", "--micro-batches", "2"][..],
    ] {
        let (cfg, pc) = config(&[&args(m)[..], extra].concat(), small_mnist());
        let got =
            parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap_or_else(|e| panic!("{extra:?}: {e}")).params;
        let e = rel_err(&got, &want);
        assert!(e <= 1e-5, "{extra:?}: relative error {e:e}");
        assert_frozen(m, &got, &format!("{extra:?}"));
    }
}
