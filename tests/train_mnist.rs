//! End-to-end training on the vendored MNIST (release suite: ignored in debug builds, where it
//! would take too long; scripts/test.sh runs the release suite).

use clap::Parser;
use convoy::cli::{Cli, Command};
use convoy::train::{events::Recorder, train, TrainConfig};

fn config(args: &[&str]) -> TrainConfig {
    let cli = Cli::try_parse_from(["convoy", "train"].iter().chain(args.iter())).unwrap();
    match cli.command {
        Command::Train(t) => {
            let mut cfg = t.to_config().unwrap();
            cfg.data_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
            cfg
        }
        _ => unreachable!(),
    }
}

/// The README's default command reaches ≥ 99 % test accuracy.
#[test]
#[cfg_attr(debug_assertions, ignore = "release suite: trains 3 epochs")]
fn default_recipe_reaches_99_percent() {
    let cfg = config(&["--threads", "2"]);
    let mut rec = Recorder::default();
    let s = train(&cfg, &mut rec).unwrap();
    eprintln!("test accuracy {:.2}% in {:.0}s ({:.0} img/s)", s.test_acc * 100.0, s.seconds, s.images_per_sec);
    assert!(s.test_acc >= 0.99, "test accuracy {:.4} < 0.99", s.test_acc);
    assert_eq!(s.steps, 3 * 938);
}

/// Ten SGD steps of LeNet from convoy's seed-42 initial weights on training images 0..640 (file
/// order, batch 64, momentum 0.9, lr 0.01) give the same losses as PyTorch from the same weights.
/// Golden values: `python3 tests/golden/lenet_trajectory.py` (torch 2.15 CPU), which reproduces
/// convoy's RNG and initialiser in numpy so both start identical; its output:
///   losses ['2.3014381', '2.3018506', '2.2807508', '2.2648928', '2.2570374', '2.2330954', '2.2186756', '2.2079241', '2.1971135', '2.1822021']
///   fc2.bias after 10 steps ['-0.0226089', '0.0294543', '0.0122661', '0.0385323', '0.0207863', '0.0386943', '0.0088615', '-0.0327888', '0.0113012', '0.0282668']
/// On every backend of this build (native always; dnnl with `--features dnnl`).
#[test]
fn ten_step_trajectory_matches_pytorch() {
    for backend in backends() {
        lenet_ten_steps(backend);
    }
}

/// The backends this build has.
fn backends() -> Vec<convoy::layers::Backend> {
    use convoy::layers::Backend;
    if cfg!(feature = "dnnl") {
        vec![Backend::Native, Backend::Dnnl]
    } else {
        vec![Backend::Native]
    }
}

fn lenet_ten_steps(backend: convoy::layers::Backend) {
    use convoy::data::{idx::IdxDataset, Dataset, Split};
    use convoy::layers::{Ctx, Mode};
    use convoy::net::{ModelSpec, Net};
    use convoy::optim::OptimizerConfig;
    use convoy::tensor::Tensor;
    let want_loss =
        [2.3014381, 2.3018506, 2.2807508, 2.2648928, 2.2570374, 2.2330954, 2.2186756, 2.2079241, 2.1971135, 2.1822021];
    let want_bias = [
        -0.0226089f32,
        0.0294543,
        0.0122661,
        0.0385323,
        0.0207863,
        0.0386943,
        0.0088615,
        -0.0327888,
        0.0113012,
        0.0282668,
    ];
    let data = IdxDataset::load_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist"), Split::Train)
        .unwrap();
    let mut net = Net::build(&ModelSpec::resolve("lenet").unwrap()).unwrap();
    let mut params = net.init_params(42);
    let mut grads = vec![0.0; params.len()];
    let mut opt = OptimizerConfig::Sgd { momentum: 0.9, dampening: 0.0, nesterov: false, weight_decay: 0.0 }
        .build(params.len())
        .unwrap();
    let mut x = Tensor::zeros(&[64, 1, 28, 28]);
    let mut labels = vec![0u32; 64];
    for (step, want) in want_loss.iter().enumerate() {
        for (i, chunk) in x.data_mut().chunks_exact_mut(784).enumerate() {
            labels[i] = data.get_into(step * 64 + i, chunk).unwrap();
        }
        grads.fill(0.0);
        let ctx = Ctx { threads: 2, backend, ..Ctx::simple(Mode::Train) };
        let s = net.forward_backward(&ctx, &params, grads.as_mut_slice(), &x, &labels, 64).unwrap();
        opt.step(&mut params, &grads, 0.01);
        let loss = s.loss_sum / 64.0;
        assert!((loss - want).abs() < 2e-5, "{backend}, step {step}: loss {loss} vs PyTorch {want}");
    }
    let bias = net.layout().view(&params, "fc2.bias").unwrap();
    for (g, w) in bias.iter().zip(want_bias) {
        assert!((g - w).abs() < 2e-5, "{backend}: fc2.bias {g} vs PyTorch {w}");
    }
}

/// Ten SGD steps of ResNet-20 (batch norm, residual adds, stride-2 convolutions) on a fixed
/// synthetic batch give the same losses on every backend of this build, within 1e-4 relative
/// (measured: 3.3e-5 at most), and weights within 1e-3 (measured 1.3e-4). Not closer: the
/// backends' convolutions sum in different orders (elements agree to ~1e-6), and at
/// initialisation on random labels batch norm's backward subtracts nearly equal numbers
/// (dy − mean dy), which turns that into ~3e-3 relative differences in some first-step weight
/// gradients (layer3_1_bn1.bias and every layer before it; the later layers agree to 1e-6). At
/// lr 0.01 the trajectories drift to 3.6e-4 by step 10, hence lr 0.002.
#[test]
fn resnet20_ten_steps_agree_across_backends() {
    ten_steps_agree_across_backends("resnet20", 16, 0.002, 0.5);
}

/// The same for VGG-11, whose layers of 64 channels and more run Winograd F(4×4) and F(2×2) on
/// the native backend (forward, input and weight gradients) and oneDNN's direct convolution on
/// the other: losses within 1e-4 relative, weights within 1e-3 (measured: 1.2e-8 and 1.5e-6; no
/// batch norm to amplify the rounding, unlike ResNet-20 above).
#[test]
fn vgg11_ten_steps_agree_across_backends() {
    ten_steps_agree_across_backends("vgg11-cifar", 8, 0.05, 0.03);
}

/// The same for AlexNet-CIFAR, whose 5×5 conv2 runs Winograd F(3×3, 5×5) and its 3×3 conv3
/// F(4×4, 3×3) on the native backend: losses within 1e-4 relative, weights within 1e-3
/// (measured: 2e-8 and 2.7e-6; the loss falls 2.31 → 2.15).
#[test]
fn alexnet_cifar_ten_steps_agree_across_backends() {
    ten_steps_agree_across_backends("alexnet-cifar", 8, 0.02, 0.1);
}

/// Ten SGD steps of `model` at batch `batch` and rate `lr` on a fixed synthetic batch: the loss
/// falls by `fall` on the native backend, and every other backend of this build follows it.
fn ten_steps_agree_across_backends(model: &str, batch: usize, lr: f32, fall: f64) {
    use convoy::layers::{Ctx, Mode};
    use convoy::net::{ModelSpec, Net};
    use convoy::optim::OptimizerConfig;
    use convoy::tensor::{rng::Rng, Tensor};
    let spec = ModelSpec::resolve(model).unwrap();
    let mut rng = Rng::new(3);
    let x = Tensor::from_vec(&[batch, 3, 32, 32], (0..batch * 3 * 32 * 32).map(|_| rng.normal()).collect()).unwrap();
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % 10).collect();
    let run = |backend| {
        let mut net = Net::build(&spec).unwrap();
        let mut params = net.init_params(42);
        let mut grads = vec![0.0; params.len()];
        let mut opt = OptimizerConfig::Sgd { momentum: 0.9, dampening: 0.0, nesterov: false, weight_decay: 0.0 }
            .build(params.len())
            .unwrap();
        let mut losses = Vec::new();
        for step in 0..10 {
            grads.fill(0.0);
            let ctx = Ctx { threads: 2, backend, step, ..Ctx::simple(Mode::Train) };
            let s = net.forward_backward(&ctx, &params, grads.as_mut_slice(), &x, &labels, batch).unwrap();
            opt.step(&mut params, &grads, lr);
            losses.push(s.loss_sum / batch as f64);
        }
        (losses, params)
    };
    let (l0, p0) = run(convoy::layers::Backend::Native);
    assert!(l0[9] < l0[0] - fall, "{model} native: the loss does not fall: {l0:?}");
    for backend in backends().into_iter().skip(1) {
        let (l, p) = run(backend);
        eprintln!("{model} {backend}: losses {l:?} vs native {l0:?}");
        for (step, (a, b)) in l.iter().zip(&l0).enumerate() {
            assert!((a - b).abs() <= 1e-4 * b.abs(), "{model} {backend}, step {step}: loss {a} vs native {b}");
        }
        let (diff, norm) = p
            .iter()
            .zip(&p0)
            .fold((0.0f64, 0.0f64), |(d, n), (a, b)| (d + ((a - b) as f64).powi(2), n + (*b as f64).powi(2)));
        eprintln!("{model} {backend}: weights differ by {:.2e} relative", diff.sqrt() / norm.sqrt());
        assert!(
            diff.sqrt() <= 1e-3 * norm.sqrt(),
            "{model} {backend}: weights differ from native by {:.2e} relative",
            diff.sqrt() / norm.sqrt()
        );
    }
}

/// Fashion-MNIST (Debian's dataset-fashion-mnist, installed by scripts/test.sh) with the zoo's
/// `keras-mnist` and Adam, as TensorFlow's MirroredStrategy tutorial trains it: ≥ 87 % after one
/// epoch (measured 88.7 %), and the same run on 2 all-reduce workers.
#[test]
#[cfg_attr(debug_assertions, ignore = "release suite: trains on all of Fashion-MNIST")]
fn keras_mnist_with_adam_learns_fashion_mnist_on_1_and_2_workers() {
    let dir = std::path::Path::new("/usr/share/datasets/fashion-mnist");
    assert!(
        dir.is_dir(),
        "{} missing; hint: apt-get install -y dataset-fashion-mnist (scripts/test.sh does)",
        dir.display()
    );
    for workers in ["1", "2"] {
        let cli = Cli::try_parse_from([
            "convoy",
            "train",
            "--model",
            "keras-mnist",
            "--optimizer",
            "adam",
            "--lr",
            "0.001",
            "--epochs",
            "1",
            "--threads",
            "1",
            "--workers",
            workers,
        ])
        .unwrap();
        let Command::Train(t) = cli.command else { unreachable!() };
        let mut cfg = t.to_config().unwrap();
        cfg.data_dir = dir.to_path_buf();
        let s = convoy::parallel::run(&cfg, &t.parallel.to_config().unwrap(), &mut Recorder::default()).unwrap();
        eprintln!("fashion-mnist keras-mnist, {workers} worker(s): {:.2}%", s.test_acc * 100.0);
        assert!(s.test_acc >= 0.87, "{workers} workers: test accuracy {:.4} < 0.87", s.test_acc);
    }
}

/// Issue 7's target: LeNet (the default model) reaches ≥ 89 % on Fashion-MNIST — with Adam
/// (lr 1e-3, batch 32) in one epoch on 2 all-reduce workers (measured 90.00 %; batch 64 gave
/// 89.38 %, too close to the bound, and the default SGD recipe 86.85 % after one epoch).
#[test]
#[cfg_attr(debug_assertions, ignore = "release suite: trains on all of Fashion-MNIST")]
fn lenet_reaches_89_percent_on_fashion_mnist() {
    let dir = std::path::Path::new("/usr/share/datasets/fashion-mnist");
    assert!(
        dir.is_dir(),
        "{} missing; hint: apt-get install -y dataset-fashion-mnist (scripts/test.sh does)",
        dir.display()
    );
    let cli = Cli::try_parse_from([
        "convoy",
        "train",
        "--optimizer",
        "adam",
        "--lr",
        "0.001",
        "--batch-size",
        "32",
        "--epochs",
        "1",
        "--threads",
        "1",
        "--workers",
        "2",
    ])
    .unwrap();
    let Command::Train(t) = cli.command else { unreachable!() };
    let mut cfg = t.to_config().unwrap();
    cfg.data_dir = dir.to_path_buf();
    let s = convoy::parallel::run(&cfg, &t.parallel.to_config().unwrap(), &mut Recorder::default()).unwrap();
    eprintln!("fashion-mnist lenet, 2 workers: {:.2}%", s.test_acc * 100.0);
    assert!(s.test_acc >= 0.89, "test accuracy {:.4} < 0.89", s.test_acc);
}

/// Issue 7's target: `keras-mnist` with Adam on 2 data-parallel workers reaches ≥ 98.5 % on MNIST
/// (3 epochs of batch 64, lr 1e-3: measured 98.70 % in 19 s; 2 epochs gave 98.57 %).
#[test]
#[cfg_attr(debug_assertions, ignore = "release suite: trains on all of MNIST")]
fn keras_mnist_with_adam_on_2_workers_reaches_98_5_percent_on_mnist() {
    let cli = Cli::try_parse_from([
        "convoy",
        "train",
        "--model",
        "keras-mnist",
        "--optimizer",
        "adam",
        "--lr",
        "0.001",
        "--epochs",
        "3",
        "--threads",
        "1",
        "--workers",
        "2",
    ])
    .unwrap();
    let Command::Train(t) = cli.command else { unreachable!() };
    let mut cfg = t.to_config().unwrap();
    cfg.data_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let s = convoy::parallel::run(&cfg, &t.parallel.to_config().unwrap(), &mut Recorder::default()).unwrap();
    eprintln!("mnist keras-mnist, 2 workers, 3 epochs: {:.2}%", s.test_acc * 100.0);
    assert!(s.test_acc >= 0.985, "test accuracy {:.4} < 0.985", s.test_acc);
}
