//! Interop with PyTorch (issue 10): a convoy LeNet checkpoint loads into the equivalent
//! torch.nn.Module with `safetensors.torch.load_file` + `load_state_dict(strict=True)` and gives
//! the same logits on 100 MNIST test images (≤ 1e-4 absolute) and the same test accuracy; a
//! state_dict saved by PyTorch (`safetensors.torch.save_file`) starts `convoy train --init-from`
//! and evaluates to PyTorch's logits and accuracy. The torch side is
//! tests/interop/torch_lenet.py (scripts/test.sh installs torch and safetensors when missing).

mod common;

use common::{convoy, tmp, train_small};
use convoy::data::{idx::IdxDataset, Dataset, Split};
use convoy::layers::{Ctx, Mode};
use convoy::net::{ModelSpec, Net};
use convoy::tensor::Tensor;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Runs the torch side; returns its logits (100 × 10) and test accuracy.
fn torch(cmd: &str, file: &Path, out: &Path) -> (Vec<Vec<f64>>, f64) {
    let o = Command::new("python3")
        .current_dir(ROOT)
        .args(["tests/interop/torch_lenet.py", cmd])
        .arg(file)
        .arg(out)
        .output()
        .expect("python3 not found");
    assert!(
        o.status.success(),
        "torch_lenet.py {cmd} failed (hint: pip install torch safetensors; scripts/test.sh does):\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
    let logits = v["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect())
        .collect();
    (logits, v["accuracy"].as_f64().unwrap())
}

/// convoy's logits of the first 100 MNIST test images with the weights in `file`.
fn convoy_logits(file: &Path) -> Vec<Vec<f64>> {
    let mut net = Net::build(&ModelSpec::resolve("lenet").unwrap()).unwrap();
    let params = convoy::checkpoint::load_weights(file, net.layout()).unwrap();
    let data = IdxDataset::load_dir(&Path::new(ROOT).join("data/mnist"), Split::Test).unwrap();
    let mut x = Tensor::zeros(&[100, 1, 28, 28]);
    for (i, chunk) in x.data_mut().chunks_exact_mut(784).enumerate() {
        data.get_into(i, chunk).unwrap();
    }
    let y = net.forward(&Ctx::simple(Mode::Eval), &params, &x).unwrap();
    y.data().chunks_exact(10).map(|r| r.iter().map(|&v| v as f64).collect()).collect()
}

/// `convoy eval`'s test accuracy (a fraction).
fn convoy_accuracy(weights: &Path) -> f64 {
    let o = convoy(&["eval", "--weights", weights.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
    out.split("test accuracy ")
        .nth(1)
        .and_then(|s| s.split('%').next())
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no accuracy in {out}"))
        / 100.0
}

fn max_abs(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    assert_eq!((a.len(), a[0].len()), (b.len(), b[0].len()));
    a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

#[test]
fn a_convoy_checkpoint_loads_into_torch_and_a_torch_state_dict_into_convoy() {
    let dir = tmp("lenet");
    // convoy → torch: a checkpoint of a short run (trained, so the logits are not those of the init).
    let ck = dir.join("ck");
    let o = convoy(
        &[
            &train_small("warn")[..],
            &["--no-epoch-eval", "--steps", "20", "--threads", "1", "--lr", "0.05"],
            &["--checkpoint-dir", ck.to_str().unwrap(), "--checkpoint-every", "20"],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let model = ck.join("step-20/model.safetensors");
    let (want, torch_acc) = torch("logits", &model, &dir.join("to-torch.json"));
    let got = convoy_logits(&model);
    let e = max_abs(&got, &want);
    eprintln!("convoy → torch: max |Δlogit| {e:.2e}, accuracy torch {torch_acc:.4}");
    assert!(e <= 1e-4, "logits differ by {e:e}");
    assert!(want.iter().flatten().map(|v| v.abs()).fold(0.0, f64::max) > 0.5, "logits too small to tell weights apart");
    assert!((convoy_accuracy(&model) - torch_acc).abs() < 1e-9, "the test accuracy differs");

    // torch → convoy: PyTorch's own initialisation, saved with save_file.
    let from_torch = dir.join("torch.safetensors");
    let (want, torch_acc) = torch("save", &from_torch, &dir.join("from-torch.json"));
    let e = max_abs(&convoy_logits(&from_torch), &want);
    eprintln!("torch → convoy: max |Δlogit| {e:.2e}");
    assert!(e <= 1e-4, "logits differ by {e:e}");
    assert!((convoy_accuracy(&from_torch) - torch_acc).abs() < 1e-9, "the test accuracy differs");
    // And it starts a run: after one step at a negligible learning rate the weights are still
    // torch's (lr 0 is refused by the CLI).
    let saved = dir.join("after.safetensors");
    let o = convoy(
        &[
            &train_small("warn")[..],
            &["--no-epoch-eval", "--steps", "1", "--threads", "1", "--lr", "1e-12", "--momentum", "0"],
            &["--init-from", from_torch.to_str().unwrap(), "--save", saved.to_str().unwrap()],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let net = Net::build(&ModelSpec::resolve("lenet").unwrap()).unwrap();
    let (a, b) = (
        convoy::checkpoint::load_weights(&from_torch, net.layout()).unwrap(),
        convoy::checkpoint::load_weights(&saved, net.layout()).unwrap(),
    );
    let d = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(d <= 1e-9, "--init-from did not start from the torch weights (max difference {d:e})");
}
