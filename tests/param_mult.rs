//! Caffe's per-parameter multipliers and fillers in a TOML model: `lr_mult`/`decay_mult` train the
//! same under all-reduce (2 workers) as on one worker, lr_mult 0 freezes a tensor at its filler's
//! values, and the multipliers change training (the test can fail).

mod common;

use common::{config, rel_err, small_mnist};
use convoy::net::{ModelSpec, Net};
use convoy::parallel;
use convoy::train::{events::Recorder, train};

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
lr_mult = [3.0]
weight_filler = { type = "msra", variance_norm = "average" }
"#;

const ARGS: [&str; 16] = ["--steps", "10", "--batch-size", "64", "--threads", "1", "--seed", "7", "--lr", "0.05", "--momentum", "0.9", "--weight-decay", "0.01", "--model", ""];

fn args(model: &str) -> Vec<&str> {
    let mut a = ARGS.to_vec();
    a[15] = model;
    a
}

#[test]
fn lr_and_decay_multipliers_train_the_same_on_two_workers_as_on_one() {
    let dir = std::env::temp_dir().join(format!("convoy-mult-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mult.toml");
    std::fs::write(&path, MODEL).unwrap();
    let m = path.to_str().unwrap();
    let (cfg, _) = config(&args(m), small_mnist());
    let want = train(&cfg, &mut Recorder::default()).unwrap().params;

    let net = Net::build(&ModelSpec::resolve(m).unwrap()).unwrap();
    let view = |name: &str| net.layout().view(&want, name).unwrap().to_vec();
    assert!(view("conv1.weight").iter().all(|&w| w == 0.05), "lr_mult 0 must freeze conv1.weight at its filler's value");
    assert!(view("conv1.bias").iter().all(|&b| b != 0.1), "conv1.bias learns (lr_mult 2)");

    for extra in [&["--workers", "2"][..], &["--workers", "2", "--allreduce", "ring", "--no-overlap"][..]] {
        let (cfg, pc) = config(&[&args(m)[..], &["--strategy", "allreduce"], extra].concat(), small_mnist());
        let got = parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap().params;
        let e = rel_err(&got, &want);
        assert!(e <= 1e-5, "{extra:?}: relative error {e:e}");
    }

    // Without the multipliers (same fillers) training differs: they were applied.
    let plain = MODEL.replace("lr_mult = [0.0, 2.0]\n", "").replace("decay_mult = [1.0, 0.0]\n", "").replace("lr_mult = [3.0]\n", "");
    let plain_path = dir.join("plain.toml");
    std::fs::write(&plain_path, plain).unwrap();
    let (cfg, _) = config(&args(plain_path.to_str().unwrap()), small_mnist());
    let other = train(&cfg, &mut Recorder::default()).unwrap().params;
    assert!(rel_err(&other, &want) > 1e-3);
}
