//! Net-level tests: LeNet's layout, spec validation errors, and whole-net gradient checks (a small
//! DAG net, and ResNet-20 itself).

use super::*;
use crate::layers::Mode;

fn lenet() -> ModelSpec {
    ModelSpec::resolve("lenet").unwrap()
}

#[test]
fn lenet_layout_has_pytorch_names_and_shapes() {
    let net = Net::build(&lenet()).unwrap();
    let l = net.layout();
    let got: Vec<(&str, &[usize])> = l.entries().iter().map(|e| (e.name.as_str(), e.shape.as_slice())).collect();
    let want: Vec<(&str, &[usize])> = vec![
        ("conv1.weight", &[32, 1, 5, 5]),
        ("conv1.bias", &[32]),
        ("conv2.weight", &[64, 32, 5, 5]),
        ("conv2.bias", &[64]),
        ("fc1.weight", &[512, 3136]),
        ("fc1.bias", &[512]),
        ("fc2.weight", &[10, 512]),
        ("fc2.bias", &[10]),
    ];
    assert_eq!(got, want);
    // Same count as PyTorch's LeNet in bench/pytorch_bench.py.
    assert_eq!(l.len(), 1_663_370);
    let caffe = Net::build(&ModelSpec::resolve("lenet-caffe").unwrap()).unwrap();
    assert_eq!(caffe.layout().len(), 431_080);
}

#[test]
fn init_is_seeded_and_within_pytorch_bounds() {
    let net = Net::build(&lenet()).unwrap();
    let a = net.init_params(42);
    assert_eq!(a, net.init_params(42));
    assert_ne!(a, net.init_params(43));
    let fc1 = net.layout().view(&a, "fc1.weight").unwrap();
    let bound = 1.0 / (3136f32).sqrt();
    assert!(fc1.iter().all(|v| v.abs() <= bound));
    assert!(fc1.iter().fold(0.0f32, |m, v| m.max(v.abs())) > 0.99 * bound);
}

fn spec_err(toml_text: &str) -> String {
    match ModelSpec::from_toml(toml_text, "test.toml") {
        Err(e) => e.to_string(),
        Ok(spec) => match Net::build(&spec) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("spec unexpectedly valid"),
        },
    }
}

const HEAD: &str = "name = \"t\"\ninput = [1, 8, 8]\nclasses = 3\n";

#[test]
fn bad_specs_name_the_layer_and_never_panic() {
    let e = spec_err(&format!("{HEAD}[[layer]]\nname = \"c\"\ntype = \"conv2d\"\nout_channels = 2\nkernel = 9\n[[layer]]\nname = \"fc\"\ntype = \"linear\"\nout_features = 3\n"));
    assert!(e.contains("layer 'c'") && e.contains("kernel"), "{e}");
    let e = spec_err(&format!("{HEAD}[[layer]]\nname = \"c\"\ntype = \"conv2d\"\nout_channels = 2\nkernal = 3\n"));
    assert!(e.contains("kernal") && e.contains("line"), "{e}");
    let e = spec_err(&format!("{HEAD}[[layer]]\nname = \"x\"\ntype = \"warp\"\n"));
    assert!(e.contains("warp"), "{e}");
    let e = spec_err(&format!("{HEAD}[[layer]]\nname = \"fc\"\ntype = \"linear\"\nout_features = 4\n"));
    assert!(e.contains("classes = 3"), "{e}");
    let e = spec_err(&format!("{HEAD}[[layer]]\nname = \"fc\"\ntype = \"linear\"\nout_features = 3\n[[layer]]\nname = \"fc\"\ntype = \"relu\"\n"));
    assert!(e.contains("two layers are named 'fc'"), "{e}");
    let e = spec_err("name = \"t\"\ninput = [8, 8]\nclasses = 3\n[[layer]]\nname = \"r\"\ntype = \"relu\"\n");
    assert!(e.contains("[C, H, W]"), "{e}");
    let e = spec_err(&format!(
        "{HEAD}[[layer]]\nname = \"c\"\ntype = \"conv2d\"\nout_channels = 3\nkernel = 1\ngroups = 2\n"
    ));
    assert!(e.contains("layer 'c'"), "{e}");
}

/// Whole-net check: the gradient of the mean loss w.r.t. every parameter of a small conv net,
/// against central differences of the loss evaluated in f64 (see layers/gradcheck.rs for why
/// the forward passes themselves are f32).
#[test]
fn whole_net_gradient_matches_finite_differences() {
    let spec = ModelSpec::from_toml(
        &format!(
            "{HEAD}[[layer]]\nname = \"c1\"\ntype = \"conv2d\"\nout_channels = 3\nkernel = 3\npadding = 1\nstride = 2\n\
             [[layer]]\nname = \"r1\"\ntype = \"relu\"\n[[layer]]\nname = \"p1\"\ntype = \"avg_pool2d\"\nkernel = 2\n\
             [[layer]]\nname = \"fc\"\ntype = \"linear\"\nout_features = 3\n"
        ),
        "t",
    )
    .unwrap();
    let mut net = Net::build(&spec).unwrap();
    let params = net.init_params(5);
    let x = crate::layers::gradcheck::random_tensor(&[3, 1, 8, 8], 9);
    let labels = [0u32, 2, 1];
    let ctx = Ctx::simple(Mode::Train);
    let mut grads = vec![0.0f32; params.len()];
    struct Recorder<'a>(Flat<'a>, Vec<usize>);
    impl ParamSource for Recorder<'_> {
        fn params(&self, i: usize, range: std::ops::Range<usize>) -> &[f32] {
            self.0.params(i, range)
        }
    }
    impl GradSink for Recorder<'_> {
        fn layer(&mut self, i: usize, range: std::ops::Range<usize>) -> (&[f32], &mut [f32]) {
            self.0.layer(i, range)
        }
        fn done(&mut self, i: usize) {
            self.1.push(i);
        }
    }
    let mut sink = Recorder(Flat { params: &params, grads: &mut grads }, Vec::new());
    net.forward_backward_into(&ctx, &mut sink, &x, &labels, 3).unwrap();
    assert_eq!(sink.1, vec![3, 2, 1, 0], "layers finish last to first");
    let mut p = params.clone();
    // A small step: ReLU kinks must not fall inside ±eps of any pre-activation.
    let eps = 1e-3f32;
    for i in 0..p.len() {
        let orig = p[i];
        p[i] = orig + eps;
        let lp = net.evaluate(&ctx, &p, &x, &labels).unwrap().loss_sum / 3.0;
        p[i] = orig - eps;
        let lm = net.evaluate(&ctx, &p, &x, &labels).unwrap().loss_sum / 3.0;
        p[i] = orig;
        let num = (lp - lm) / (2.0 * eps as f64);
        let a = grads[i] as f64;
        assert!((a - num).abs() <= 5e-4 + 5e-3 * a.abs().max(num.abs()), "param {i}: analytic {a} numeric {num}");
    }
}

/// The zoo's models build, with the parameter counts of their references: Keras' model summary
/// (693,962), Caffe's bvlc_alexnet (60,965,224), and the counts below computed by hand.
#[test]
fn zoo_models_build_with_their_reference_parameter_counts() {
    let count = |name: &str| Net::build(&ModelSpec::resolve(name).unwrap()).unwrap().layout().len();
    assert_eq!(count("keras-mnist"), 693_962);
    assert_eq!(count("alexnet"), 60_965_224);
    // alexnet-cifar: 3·64·25+64, 64·128·25+128, 128·128·9+128, 1152·1024+1024, 1024·1024+1024, 1024·10+10.
    assert_eq!(count("alexnet-cifar"), 4_864 + 204_928 + 147_584 + 1_180_672 + 1_049_600 + 10_250);
    // vgg11-cifar: convs 3→64→128→256→256→512→512→512→512 (3×3), then 512→512→512→10.
    let convs: usize = [(3, 64), (64, 128), (128, 256), (256, 256), (256, 512), (512, 512), (512, 512), (512, 512)]
        .iter()
        .map(|(i, o)| i * o * 9 + o)
        .sum();
    assert_eq!(count("vgg11-cifar"), convs + (512 * 512 + 512) * 2 + 512 * 10 + 10);
    for name in crate::net::spec::ZOO {
        assert!(count(name) > 0, "{name}");
    }
    // ResNet-20 as akamaster/pytorch_resnet_cifar10 builds it: 269,722 parameters with option A,
    // 272,474 with option B; buffers 1,395 and 1,589 (running mean/var + num_batches_tracked).
    // The numbers are PyTorch's (2.x), from this script, which prints "A 269722 1395" and
    // "B 272474 1589":
    //
    //   import torch.nn as nn, torch.nn.functional as F
    //   class Pad(nn.Module):  # option A: subsample, zero-pad channels; no parameters
    //       def __init__(s, p): super().__init__(); s.p = p
    //       def forward(s, x): return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, s.p, s.p))
    //   class Block(nn.Module):
    //       def __init__(s, i, o, stride, option):
    //           super().__init__()
    //           s.c1, s.b1 = nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o)
    //           s.c2, s.b2 = nn.Conv2d(o, o, 3, 1, 1, bias=False), nn.BatchNorm2d(o)
    //           s.sc = nn.Sequential()
    //           if stride != 1 or i != o:
    //               s.sc = Pad(o // 4) if option == "A" else nn.Sequential(nn.Conv2d(i, o, 1, stride, bias=False), nn.BatchNorm2d(o))
    //       def forward(s, x): return F.relu(s.b2(s.c2(F.relu(s.b1(s.c1(x))))) + s.sc(x))
    //   for option in "AB":
    //       layers, i = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()], 16
    //       for o, stride in [(16, 1), (32, 2), (64, 2)]:
    //           for k in range(3):
    //               layers.append(Block(i, o, stride if k == 0 else 1, option)); i = o
    //       m = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    //       print(option, sum(p.numel() for p in m.parameters()), sum(b.numel() for b in m.buffers()))
    for (name, params, buffers) in [("resnet20", 269_722, 1_395), ("resnet20-b", 272_474, 1_589)] {
        let net = Net::build(&ModelSpec::resolve(name).unwrap()).unwrap();
        let b: usize = net.layout().entries().iter().filter(|e| e.buffer).map(|e| e.len()).sum();
        assert_eq!((net.layout().len() - b, b), (params, buffers), "{name}");
    }
}

fn tiny_resnet() -> ModelSpec {
    ModelSpec::from_toml(
        r#"
name = "tiny-res"
input = [2, 4, 4]
classes = 3
[[layer]]
name = "c1"
type = "conv2d"
out_channels = 4
kernel = 3
padding = 1
[[layer]]
name = "bn1"
type = "batch_norm"
[[layer]]
name = "r1"
type = "tanh"
[[layer]]
name = "c2"
type = "conv2d"
out_channels = 4
kernel = 3
padding = 1
[[layer]]
name = "bn2"
type = "batch_norm"
[[layer]]
name = "add"
type = "add"
inputs = ["bn2", "r1"]
[[layer]]
name = "short"
type = "pad_channels"
input = "add"
out_channels = 6
stride = 2
[[layer]]
name = "side"
type = "conv2d"
input = "add"
out_channels = 2
kernel = 2
stride = 2
[[layer]]
name = "cat"
type = "concat"
inputs = ["short", "side", "input_pool"]
[[layer]]
name = "input_pool"
type = "avg_pool2d"
input = "input"
kernel = 2
"#,
        "test",
    )
    .unwrap()
}

/// Residual Add, Concat, a layer reading the net's input and an output read three times: the
/// gradient of every parameter against f64 finite differences of the whole net's loss.
#[test]
fn dag_net_gradients_match_finite_differences() {
    let mut spec = tiny_resnet();
    // "cat" reads a later layer: an error naming both.
    let e = Net::build(&spec).err().unwrap().to_string();
    assert!(e.contains("'cat' reads 'input_pool', which comes after it"), "{e}");
    let pool = spec.layers.pop().unwrap();
    spec.layers.insert(6, pool);
    spec.layers.push(LayerSpec::from_toml_fragment("name = \"tail\"\ntype = \"tanh\"").unwrap());
    spec.layers.push(LayerSpec::from_toml_fragment("name = \"fc\"\ntype = \"linear\"\nout_features = 3").unwrap());
    let mut net = Net::build(&spec).unwrap();
    assert_eq!(
        (net.sources(9), net.sources(6), net.sources(7)),
        (&[Some(7), Some(8), Some(6)][..], &[None][..], &[Some(5)][..])
    );
    let params = net.init_params(3);
    let x = crate::layers::gradcheck::random_tensor(&[3, 2, 4, 4], 9);
    let labels = [0u32, 2, 1];
    let ctx = Ctx::simple(Mode::Train);
    let mut grads = vec![0.0f32; params.len()];
    net.forward_backward(&ctx, &params, &mut grads, &x, &labels, 3).unwrap();
    let buffers = net.layout().buffer_ranges();
    let mut p = params.clone();
    let eps = 1e-3f32;
    for i in 0..p.len() {
        if buffers.iter().any(|r| r.contains(&i)) {
            assert_eq!(grads[i], 0.0, "buffer {i}");
            continue;
        }
        let orig = p[i];
        p[i] = orig + eps;
        let lp = net.evaluate(&ctx, &p, &x, &labels).unwrap().loss_sum / 3.0;
        p[i] = orig - eps;
        let lm = net.evaluate(&ctx, &p, &x, &labels).unwrap().loss_sum / 3.0;
        p[i] = orig;
        let num = (lp - lm) / (2.0 * eps as f64);
        let a = grads[i] as f64;
        assert!(
            (a - num).abs() <= 5e-4 + 5e-3 * a.abs().max(num.abs()),
            "param {i} ({:?}): analytic {a} numeric {num}",
            net.layout().entries().iter().find(|e| e.range().contains(&i)).map(|e| &e.name)
        );
    }
}

#[test]
fn dag_specs_that_cannot_work_are_errors_naming_the_layer() {
    let mut spec = tiny_resnet();
    spec.layers.truncate(6);
    spec.layers.push(LayerSpec::from_toml_fragment("name = \"fc\"\ntype = \"linear\"\nout_features = 3").unwrap());
    Net::build(&spec).unwrap();
    let with = |f: &dyn Fn(&mut ModelSpec)| {
        let mut s = spec.clone();
        f(&mut s);
        Net::build(&s).err().map(|e| e.to_string()).unwrap_or_default()
    };
    let e = with(&|s| {
        s.layers[5] =
            LayerSpec::from_toml_fragment("name = \"add\"\ntype = \"add\"\ninputs = [\"bn2\", \"nope\"]").unwrap()
    });
    assert!(e.contains("'add' reads 'nope', which is no layer"), "{e}");
    let e = with(&|s| {
        s.layers[5] =
            LayerSpec::from_toml_fragment("name = \"add\"\ntype = \"add\"\ninputs = [\"bn2\", \"input\"]").unwrap()
    });
    assert!(e.contains("cannot be added"), "{e}");
    let e = with(&|s| {
        s.layers.insert(6, LayerSpec::from_toml_fragment("name = \"extra\"\ntype = \"tanh\"").unwrap());
        s.layers[7] =
            LayerSpec::from_toml_fragment("name = \"fc\"\ntype = \"linear\"\ninput = \"add\"\nout_features = 3")
                .unwrap();
    });
    assert!(e.contains("'extra' is read by no layer"), "{e}");
    let e = with(&|s| s.layers[0] = LayerSpec::from_toml_fragment("name = \"input\"\ntype = \"relu\"").unwrap());
    assert!(e.contains("invalid name 'input'"), "{e}");
}

/// A net of BatchNorm (and every other layer) runs on an empty batch (a data-parallel worker
/// whose shard of a small last batch is empty still takes part in SyncBatchNorm's sums).
#[test]
fn a_net_runs_forward_and_backward_on_an_empty_batch() {
    let mut spec = tiny_resnet();
    let pool = spec.layers.pop().unwrap();
    spec.layers.insert(6, pool);
    spec.layers.push(LayerSpec::from_toml_fragment("name = \"fc\"\ntype = \"linear\"\nout_features = 3").unwrap());
    let mut net = Net::build(&spec).unwrap();
    let params = net.init_params(3);
    let mut grads = vec![0.0f32; params.len()];
    // Alone, batch norm refuses a batch without values; the global count comes from the peers.
    let e = net
        .forward_backward(&Ctx::simple(Mode::Train), &params, &mut grads, &Tensor::zeros(&[0, 2, 4, 4]), &[], 1)
        .unwrap_err();
    assert!(e.to_string().contains("more than 1 value per channel"), "{e}");
    let s = net.evaluate(&Ctx::simple(Mode::Eval), &params, &Tensor::zeros(&[0, 2, 4, 4]), &[]).unwrap();
    assert_eq!(s.samples, 0);
}

/// ResNet-20 of the zoo (`name`), its ReLUs made tanh when `smooth`, in training mode (batch
/// norm on batch statistics) on a batch of 2 random 3×32×32 inputs: the analytic gradient of
/// the mean loss against central differences (step `eps`, the loss summed in f64) for
/// `per_tensor` elements of every parameter tensor, spread over it, and 6 input elements.
/// Returns (what, analytic, numeric) for each.
///
/// Why tanh: the f32 forward cannot take a step small enough that none of the ReLU inputs
/// (377k for a batch of 2) crosses 0. With ReLU, measured: a step of 1e-3 moves single numeric
/// gradients by up to 30 % (3 to 5 % over all of them), 3e-4 is no better (f32 rounding), 1e-2
/// flips signs. With tanh the loss is smooth and the same graph (every convolution, batch norm,
/// residual add, shortcut, the pooling and the classifier) passes a tight check; ReLU itself
/// has its own gradient check.
fn resnet_finite_differences(name: &str, smooth: bool, per_tensor: usize, eps: f32) -> Vec<(String, f64, f64)> {
    let mut spec = ModelSpec::resolve(name).unwrap();
    if smooth {
        let mut swapped = 0;
        for l in &mut spec.layers {
            if let LayerSpec::Relu { name, input } = l {
                *l = LayerSpec::Tanh { name: name.clone(), input: input.clone() };
                swapped += 1;
            }
        }
        assert_eq!(swapped, 19, "ResNet-20 has 19 ReLUs");
    }
    let mut net = Net::build(&spec).unwrap();
    let params = net.init_params(1);
    let x = crate::layers::gradcheck::random_tensor(&[2, 3, 32, 32], 7);
    let labels = [3u32, 8];
    let ctx = Ctx::simple(Mode::Train);
    let mut grads = vec![0.0f32; params.len()];
    let all = 0..net.num_layers();
    net.forward_layers(&ctx, &params[..], all.clone(), &x).unwrap();
    net.loss_forward_backward(&labels, 2).unwrap();
    let dx = net
        .backward_layers(&ctx, &mut Flat { params: &params, grads: &mut grads }, all, &x, None, true)
        .unwrap()
        .unwrap()
        .clone();
    let tensors: Vec<(String, usize, usize)> =
        net.layout().entries().iter().filter(|e| !e.buffer).map(|e| (e.name.clone(), e.offset, e.len())).collect();
    let mut out = Vec::new();
    let mut loss = |p: &[f32], x: &Tensor| net.evaluate(&ctx, p, x, &labels).unwrap().loss_sum / 2.0;
    let mut p = params.clone();
    for (name, offset, len) in tensors {
        let mut at: Vec<usize> = (0..per_tensor).map(|j| offset + len * (2 * j + 1) / (2 * per_tensor)).collect();
        at.dedup();
        for i in at {
            let orig = p[i];
            p[i] = orig + eps;
            let lp = loss(&p, &x);
            p[i] = orig - eps;
            let lm = loss(&p, &x);
            p[i] = orig;
            out.push((format!("{name}[{}]", i - offset), grads[i] as f64, (lp - lm) / (2.0 * eps as f64)));
        }
    }
    let mut xp = x.clone();
    for i in (0..6).map(|k| k * x.len() / 6 + 517) {
        let orig = xp.data()[i];
        xp.data_mut()[i] = orig + eps;
        let lp = loss(&params, &xp);
        xp.data_mut()[i] = orig - eps;
        let lm = loss(&params, &xp);
        xp.data_mut()[i] = orig;
        out.push((format!("input[{i}]"), dx.data()[i] as f64, (lp - lm) / (2.0 * eps as f64)));
    }
    out
}

/// Each (analytic, numeric) within |a − n| ≤ 5e-5 + 1e-2·max(|a|, |n|); returns the worst
/// error as a fraction of its bound. Measured with step 3e-3: absolute errors up to 4e-5 (f32
/// rounding of the loss, on gradients up to 0.13), relative up to 17 % on gradients near 1e-5.
fn assert_gradients_close(name: &str, checks: &[(String, f64, f64)]) -> f64 {
    let mut worst = 0.0f64;
    for (what, a, n) in checks {
        let frac = (a - n).abs() / (5e-5 + 1e-2 * a.abs().max(n.abs()));
        assert!(frac <= 1.0, "{name} {what}: analytic {a:.6e} numeric {n:.6e}");
        worst = worst.max(frac);
    }
    worst
}

/// The whole of ResNet-20 (option A shortcuts: subsample and zero-pad), 2 elements of each of
/// its 59 parameter tensors (first convolution, every BN's γ and β, every block's convolutions,
/// the classifier's weight and bias) and of the input.
#[test]
fn resnet20_gradients_match_finite_differences() {
    let checks = resnet_finite_differences("resnet20", true, 2, 3e-3);
    assert_eq!(checks.len(), 59 * 2 + 6);
    let worst = assert_gradients_close("resnet20", &checks);
    eprintln!("resnet20: worst {worst:.3} of the tolerance");
}

/// ResNet-20 with option B shortcuts (1×1 convolution and batch norm, with parameters), 3
/// elements per tensor; and the real ResNet-20, ReLUs and all, where f32 central differences
/// across ReLU kinks only allow an aggregate check: ‖a − n‖ / ‖n‖ over all the samples (0.026
/// measured) — see `resnet_finite_differences`.
#[test]
#[cfg_attr(debug_assertions, ignore = "release suite: 770 forwards of ResNet-20 (11 s in debug)")]
fn resnet20_b_and_relu_resnet20_gradients_match_finite_differences() {
    let checks = resnet_finite_differences("resnet20-b", true, 3, 3e-3);
    assert_eq!(checks.len(), 65 * 3 + 6);
    let worst = assert_gradients_close("resnet20-b", &checks);
    eprintln!("resnet20-b: worst {worst:.3} of the tolerance");
    let checks = resnet_finite_differences("resnet20", false, 3, 1e-3);
    let (d, n) = checks.iter().fold((0.0f64, 0.0f64), |(d, n), (_, a, m)| (d + (a - m) * (a - m), n + m * m));
    let rel = (d / n).sqrt();
    eprintln!("resnet20 (ReLU): relative error {rel:.3e} over {} samples", checks.len());
    assert!(rel < 0.15, "resnet20 (ReLU): relative error {rel}");
}

/// A ReLU that is the only reader of a batch norm or residual add runs inside it (one pass over
/// the activations less each way): bitwise the same loss, parameter and input gradients as the
/// unfused net, also when a range (a pipeline stage) cuts between the pair, where it must not
/// fuse. ResNet-20: 19 ReLUs, every one fused (10 after a batch norm, 9 after an add).
#[test]
fn fused_relus_change_no_bit() {
    let spec = ModelSpec::resolve("resnet20").unwrap();
    let x = crate::layers::gradcheck::random_tensor(&[3, 3, 32, 32], 5);
    let labels = [1u32, 7, 2];
    let run = |fusion: bool, cut: Option<usize>, threads: usize| {
        let mut net = Net::build(&spec).unwrap();
        net.set_fusion(fusion);
        let params = net.init_params(3);
        let ctx = Ctx { threads, ..Ctx::simple(Mode::Train) };
        let mut grads = vec![0.0f32; params.len()];
        let n = net.num_layers();
        let stages = match cut {
            Some(k) => vec![0..k, k..n],
            None => std::iter::once(0..n).collect(),
        };
        // Forward stage by stage, then backward in reverse, as the pipeline runs one net.
        let mut inputs = vec![x.clone()];
        for r in &stages {
            let y = net.forward_layers(&ctx, &params[..], r.clone(), inputs.last().unwrap()).unwrap().clone();
            inputs.push(y);
        }
        let stats = net.loss_forward_backward(&labels, 3).unwrap();
        let mut dy: Option<Tensor> = None;
        for (r, input) in stages.iter().zip(&inputs).rev() {
            let d = net
                .backward_layers(
                    &ctx,
                    &mut Flat { params: &params, grads: &mut grads },
                    r.clone(),
                    input,
                    dy.as_ref(),
                    true,
                )
                .unwrap()
                .unwrap()
                .clone();
            dy = Some(d);
        }
        let kernels: Vec<&str> = (0..n).map(|i| net.layer_kernel(i)).collect();
        let fused = kernels.iter().filter(|k| **k == "fused").count();
        (stats.loss_sum, grads, dy.unwrap(), fused)
    };
    let names = Net::build(&spec).unwrap().layer_names().to_vec();
    // Cut between the stem's batch norm and its ReLU.
    let cut = names.iter().position(|n| n == "bn1").unwrap() + 1;
    for (cut, threads, want_fused) in [(None, 1, 19), (None, 2, 19), (Some(cut), 1, 18)] {
        let (loss, grads, dx, none) = run(false, None, threads);
        assert_eq!(none, 0);
        let (l, g, d, fused) = run(true, cut, threads);
        assert_eq!(fused, want_fused, "cut {cut:?}");
        assert_eq!(l.to_bits(), loss.to_bits(), "loss, cut {cut:?}, {threads} threads");
        assert!(
            g.iter().zip(&grads).all(|(a, b)| a.to_bits() == b.to_bits()),
            "parameter gradients, cut {cut:?}, {threads} threads"
        );
        assert!(
            d.data().iter().zip(dx.data()).all(|(a, b)| a.to_bits() == b.to_bits()),
            "input gradient, cut {cut:?}, {threads} threads"
        );
    }
}
