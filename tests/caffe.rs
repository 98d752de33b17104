//! Caffe compatibility end to end: Caffe's LeNet prototxt (examples/mnist/lenet_train_test.prototxt)
//! trains exactly as the zoo's `lenet-caffe` (the same net, the same initialisation: the same
//! parameters after 10 steps, hence the same accuracy), under one worker and under all-reduce;
//! a Data layer's transform_param becomes the data options (--normalize, --augment flip,
//! --crop-size): a net whose Data layer crops 32×32 samples to 28×28 trains through `convoy
//! train`, the same on 1 and 2 workers, and `convoy eval` cuts the same center window.

mod common;

use common::{config, convoy, convoy_text, small_mnist};
use convoy::data::{Crop, Normalize};
use convoy::net::{LayerSpec, ModelSpec, Net};
use convoy::parallel;
use convoy::tensor::init::Filler;
use convoy::train::events::{Event, Recorder};

const LENET: &str = include_str!("data/lenet_train_test.prototxt");
const ALEXNET: &str = include_str!("data/alexnet.prototxt");

/// The zoo's `alexnet` as bvlc_alexnet initialises and trains it: gaussian weights (std 0.01,
/// 0.005 for fc6 and fc7), constant biases (0.1 for conv2, conv4, conv5, fc6, fc7; 0 else),
/// lr_mult 1/2 and decay_mult 1/0 on weight/bias; without its `flatten` layer (Caffe's
/// InnerProduct flattens its input itself; a layer fewer also keeps dropout's masks, which are
/// keyed by layer index, the same); pooling with Caffe's round-up (which gives AlexNet's
/// 55 → 27 → 13 → 6 as PyTorch's round-down does).
fn alexnet_as_bvlc() -> ModelSpec {
    let mut spec = ModelSpec::resolve("alexnet").unwrap();
    spec.layers.retain(|l| !matches!(l, LayerSpec::Flatten { .. }));
    for l in &mut spec.layers {
        if let LayerSpec::MaxPool2d { ceil_mode, .. } = l {
            *ceil_mode = true;
        }
        let (std, bias) = match l.name() {
            "conv1" | "conv3" | "fc8" => (0.01, 0.0),
            "conv2" | "conv4" | "conv5" => (0.01, 0.1),
            "fc6" | "fc7" => (0.005, 0.1),
            _ => continue,
        };
        match l {
            LayerSpec::Conv2d { lr_mult, decay_mult, weight_filler, bias_filler, .. }
            | LayerSpec::Linear { lr_mult, decay_mult, weight_filler, bias_filler, .. } => {
                (*lr_mult, *decay_mult) = (vec![1.0, 2.0], vec![1.0, 0.0]);
                (*weight_filler, *bias_filler) =
                    (Some(Filler::Gaussian { mean: 0.0, std }), Some(Filler::Constant { value: bias }));
            }
            other => panic!("{other:?}"),
        }
    }
    spec
}

/// Caffe's bvlc_alexnet (tests/data/alexnet.prototxt) reads as the zoo's `alexnet`: the same
/// layers, kernels, strides, pads and groups (conv2, conv4, conv5 in 2), the same parameters
/// (60,965,224), with bvlc_alexnet's fillers and multipliers; the TEST-phase Accuracy is left out.
#[test]
fn caffe_alexnet_prototxt_is_the_built_in_alexnet() {
    let mut warnings = Vec::new();
    let spec =
        convoy::net::caffe::from_prototxt(ALEXNET, "alexnet.prototxt", &mut || Err("no --data".into()), &mut |w| {
            warnings.push(w)
        })
        .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let want = alexnet_as_bvlc();
    assert_eq!((&spec.input, spec.classes), (&vec![3, 227, 227], 1000));
    assert_eq!(spec.layers, want.layers);
    let groups: Vec<(String, usize)> = spec
        .layers
        .iter()
        .filter_map(
            |l| if let LayerSpec::Conv2d { name, groups, .. } = l { Some((name.clone(), *groups)) } else { None },
        )
        .collect();
    assert_eq!(
        groups,
        [("conv1", 1), ("conv2", 2), ("conv3", 1), ("conv4", 2), ("conv5", 2)].map(|(n, g)| (n.to_string(), g))
    );
    let (a, b) = (Net::build(&spec).unwrap(), Net::build(&ModelSpec::resolve("alexnet").unwrap()).unwrap());
    let shapes = |n: &Net| n.layout().entries().iter().map(|e| (e.name.clone(), e.shape.clone())).collect::<Vec<_>>();
    assert_eq!(shapes(&a), shapes(&b));
    assert_eq!((a.layout().len(), b.layout().len()), (60_965_224, 60_965_224));
    assert_eq!(a.layer_out_shape(a.num_layers() - 1), vec![1000]);
    // pool5's output is 256×6×6, as in Caffe (ceil rounding changes nothing here).
    let pool5 = a.layer_names().iter().position(|n| n == "pool5").unwrap();
    assert_eq!(a.layer_out_shape(pool5), vec![256, 6, 6]);
}

/// The prototxt AlexNet trains exactly as the zoo's (with bvlc_alexnet's fillers and
/// multipliers, `alexnet_as_bvlc`): the same parameters after 2 steps of batch 2 on synthetic
/// 3×227×227 data with 1000 classes, dropout on. A 61 M-parameter net: run in release.
#[test]
fn caffe_alexnet_prototxt_trains_exactly_as_the_built_in_alexnet() {
    let path = std::env::temp_dir().join(format!("convoy-alexnet-{}.prototxt", std::process::id()));
    std::fs::write(&path, ALEXNET).unwrap();
    let data = std::path::Path::new("synthetic:3x227x227:1000:8:2");
    let run = |model: &str, spec: Option<ModelSpec>| {
        let (mut cfg, pc) = config(
            &[
                "--model",
                model,
                "--data",
                data.to_str().unwrap(),
                "--steps",
                "2",
                "--batch-size",
                "2",
                "--threads",
                "2",
                "--lr",
                "0.01",
                "--weight-decay",
                "0.0005",
            ],
            data,
        );
        if let Some(s) = spec {
            cfg.model = s;
        }
        parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap()
    };
    let a = run(path.to_str().unwrap(), None);
    let b = run("alexnet", Some(alexnet_as_bvlc()));
    assert_eq!((a.steps, a.params.len()), (2, 60_965_224));
    assert!(
        a.params == b.params,
        "the prototxt AlexNet trained differently (relative error {:e})",
        common::rel_err(&a.params, &b.params)
    );
    assert_eq!(a.last_loss, b.last_loss);
    // It did train: the parameters moved from their initialisation (biases of 0.1 among them).
    let init = Net::build(&alexnet_as_bvlc()).unwrap().init_params(42);
    assert!(common::rel_err(&a.params, &init) > 0.0);
}

#[test]
fn caffe_lenet_prototxt_trains_exactly_as_the_built_in_lenet_caffe() {
    let path = std::env::temp_dir().join(format!("convoy-lenet-{}.prototxt", std::process::id()));
    std::fs::write(&path, LENET).unwrap();
    for workers in ["1", "2"] {
        let run = |model: &str, extra: &[&str]| {
            let (cfg, pc) = config(
                &[
                    &["--model", model, "--steps", "10", "--batch-size", "64", "--threads", "1", "--workers", workers],
                    extra,
                ]
                .concat(),
                small_mnist(),
            );
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
    let out = convoy(&["train", "--steps", "1", "--model", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("PReLU") && err.contains(".prototxt:"), "{err}");
}

/// Caffe's lenet_solver.prototxt settings (with max_iter 10, test_interval 4) train exactly as
/// the same settings given as flags: test_interval is --eval-every (evaluations after steps 4
/// and 8, and at the end); test_iter is read and noted (convoy evaluates the whole test set);
/// display is --log-every (a log line every N steps).
#[test]
fn caffe_solver_sets_what_the_flags_would() {
    let net = std::env::temp_dir().join(format!("convoy-solver-net-{}.prototxt", std::process::id()));
    std::fs::write(&net, LENET).unwrap();
    let solver = std::env::temp_dir().join(format!("convoy-solver-{}.prototxt", std::process::id()));
    std::fs::write(
        &solver,
        format!(
            "net: \"{}\"\ntest_iter: 100\ntest_interval: 4\nbase_lr: 0.01\nmomentum: 0.9\nweight_decay: 0.0005\nlr_policy: \"inv\"\ngamma: 0.0001\npower: 0.75\ndisplay: 100\nmax_iter: 10\nrandom_seed: 3\nsolver_mode: CPU\n",
            net.display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let (cfg, pc) = config(&[args, &["--batch-size", "64", "--threads", "1"]].concat(), small_mnist());
        assert_eq!(cfg.eval_every, Some(4));
        let mut rec = Recorder::default();
        let summary = parallel::run(&cfg, &pc, &mut rec).unwrap();
        let evals: Vec<(u64, usize, f64)> = rec
            .events
            .iter()
            .filter_map(|e| {
                if let Event::Eval { step, samples, acc, .. } = e {
                    Some((*step, *samples, *acc))
                } else {
                    None
                }
            })
            .collect();
        (summary, evals)
    };
    let (a, a_evals) = run(&["--solver", solver.to_str().unwrap()]);
    let (b, b_evals) = run(&[
        "--model",
        net.to_str().unwrap(),
        "--lr",
        "0.01",
        "--momentum",
        "0.9",
        "--weight-decay",
        "0.0005",
        "--schedule",
        "inv:0.0001:0.75",
        "--steps",
        "10",
        "--seed",
        "3",
        "--eval-every",
        "4",
    ]);
    assert_eq!(a.steps, 10);
    assert!(a.params == b.params, "the solver's run differs from the flags' run");
    // Evaluations of the whole 100-image test set after steps 4, 8 and 10 (the end), both ways.
    assert_eq!(a_evals.iter().map(|e| (e.0, e.1)).collect::<Vec<_>>(), vec![(4, 100), (8, 100), (10, 100)]);
    assert_eq!(a_evals, b_evals);
    assert_eq!(a_evals[2].2, a.test_acc);
    // --eval-every 0 is refused, naming the flag (exit code 2).
    let (code, _, err) = convoy_text(&[
        "train",
        "--steps",
        "1",
        "--eval-every",
        "0",
        "--model",
        net.to_str().unwrap(),
        "--data",
        small_mnist().to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--eval-every"), "{err}");
    // display: 5 logs steps 5 and 10 at info level, as --log-every 5 does; --log-every 0 is refused.
    let shown = std::env::temp_dir().join(format!("convoy-solver-display-{}.prototxt", std::process::id()));
    std::fs::write(
        &shown,
        format!("net: \"{}\"\nbase_lr: 0.01\nlr_policy: \"fixed\"\ndisplay: 5\nmax_iter: 10\n", net.display()),
    )
    .unwrap();
    for args in [
        vec!["--solver", shown.to_str().unwrap()],
        vec!["--model", net.to_str().unwrap(), "--steps", "10", "--log-every", "5"],
    ] {
        let (code, _, err) = convoy_text(
            &[
                &[
                    "--log-level",
                    "info",
                    "train",
                    "--no-progress",
                    "--batch-size",
                    "16",
                    "--threads",
                    "1",
                    "--data",
                    small_mnist().to_str().unwrap(),
                ][..],
                &args,
            ]
            .concat(),
        );
        assert_eq!(code, Some(0), "{err}");
        let steps: Vec<&str> = err.lines().filter(|l| l.contains(" step ") || l.ends_with(" step")).collect();
        assert_eq!(steps.len(), 2, "{args:?}: {err}");
        assert!(steps[0].contains("step=5") && steps[1].contains("step=10") && steps[0].contains("loss="), "{steps:?}");
    }
    let (code, _, err) = convoy_text(&[
        "train",
        "--steps",
        "1",
        "--log-every",
        "0",
        "--model",
        net.to_str().unwrap(),
        "--data",
        small_mnist().to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--log-every"), "{err}");
}

/// LENET with the TRAIN Data layer's transform_param `train` and the TEST one's `test`, written
/// to `dir/name`; its path.
fn lenet_with(dir: &std::path::Path, name: &str, train: &str, test: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    let from = "transform_param { scale: 0.00390625 }";
    std::fs::write(&p, LENET.replacen(from, train, 1).replacen(from, test, 1)).unwrap();
    p.to_str().unwrap().to_string()
}

/// `transform_param { scale mean_value mirror crop_size }` of the training Data layer becomes
/// `--normalize m/255:1/(255·scale)`, a flip and `--crop-size`; the flags win where given.
#[test]
fn data_layer_transform_param_sets_normalisation_flip_and_crop_and_flags_win() {
    let dir = std::env::temp_dir().join(format!("convoy-transform-{}", std::process::id()));
    let net = lenet_with(
        &dir,
        "t.prototxt",
        "transform_param { scale: 0.0125 mean_value: 127.5 mirror: true }",
        "transform_param { scale: 0.0125 mean_value: 127.5 }",
    );
    let (cfg, _) = config(&["--model", &net], small_mnist());
    // (pixel − 127.5)·0.0125 = (x − 0.5)/(1/(255·0.0125)) for x = pixel/255.
    assert_eq!(cfg.data.normalize, Some(Normalize::new(vec![127.5 / 255.0], vec![1.0 / (255.0 * 0.0125)])));
    assert!(cfg.data.augment.flip && cfg.data.augment.crop_pad == 0);
    assert_eq!(cfg.data.crop, None);
    let (cfg, _) = config(&["--model", &net, "--normalize", "0.1:0.2", "--augment", "crop:2"], small_mnist());
    assert_eq!(cfg.data.normalize, Some(Normalize::new(vec![0.1], vec![0.2])));
    assert!(!cfg.data.augment.flip && cfg.data.augment.crop_pad == 2);
    // crop_size: the model's input is the window, the data options cut it.
    let crop = lenet_with(
        &dir,
        "crop.prototxt",
        "transform_param { crop_size: 24 scale: 0.00390625 }",
        "transform_param { scale: 0.00390625 crop_size: 24 }",
    );
    let (cfg, _) = config(&["--model", &crop], small_mnist());
    assert_eq!((cfg.model.input.clone(), cfg.data.crop), (vec![1, 24, 24], Some(Crop::square(24))));
    let same =
        lenet_with(&dir, "same.prototxt", "transform_param { crop_size: 28 }", "transform_param { crop_size: 28 }");
    let (cfg, _) = config(&["--model", &same], small_mnist());
    assert_eq!(
        (cfg.data.crop, cfg.data.normalize),
        (Some(Crop::square(28)), Some(Normalize::new(vec![0.0], vec![1.0 / 255.0])))
    );
    // --crop-size wins (and must then fit the model: 24 on a 24×24 net).
    let (cfg, _) = config(&["--model", &crop, "--crop-size", "24x24"], small_mnist());
    assert_eq!(cfg.data.crop, Some(Crop::square(24)));
}

/// A LeNet prototxt whose Data layers crop 32×32 samples to 28×28 (crop_size 28, mirror in
/// TRAIN) trains through `convoy train`: random windows in training, the center one for the
/// test set; `convoy eval` of the saved weights reports the same test accuracy (the same center
/// window and normalisation from the prototxt). In-process, 1 and 2 workers give the same
/// parameters (windows keyed by sample, not by worker).
#[test]
fn a_data_layer_crop_trains_through_the_cli_and_eval_cuts_the_same_center() {
    let dir = std::env::temp_dir().join(format!("convoy-crop-{}", std::process::id()));
    let net = lenet_with(
        &dir,
        "lenet-crop.prototxt",
        "transform_param { scale: 0.00390625 crop_size: 28 mirror: true }",
        "transform_param { scale: 0.00390625 crop_size: 28 }",
    );
    let data = "synthetic:1x32x32:10:256:64";
    let weights = dir.join("w.safetensors");
    let w = weights.to_str().unwrap();
    let (code, out, err) = convoy_text(&[
        "train",
        "--model",
        &net,
        "--data",
        data,
        "--steps",
        "4",
        "--batch-size",
        "32",
        "--threads",
        "1",
        "--no-progress",
        "--save",
        w,
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("done: 4 steps"), "{out}");
    let acc = |s: &str| s.split("test accuracy ").nth(1).and_then(|t| t.split('%').next()).map(str::to_string);
    let trained = acc(&out).unwrap_or_else(|| panic!("{out}"));
    let (code, eval, err) = convoy_text(&["eval", "--model", &net, "--data", data, "--weights", w, "--threads", "1"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(eval.contains("on 64 images"), "{eval}");
    assert_eq!(acc(&eval).unwrap(), trained, "eval: {eval}\ntrain: {out}");
    // Without the prototxt's crop, eval would not fit the 28×28 net.
    let (code, _, err) =
        convoy_text(&["eval", "--model", "lenet-caffe", "--data", data, "--weights", w, "--threads", "1"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("[1, 32, 32]") && err.contains("[1, 28, 28]"), "{err}");
    let (code, out, err) = convoy_text(&[
        "eval",
        "--model",
        "lenet-caffe",
        "--data",
        data,
        "--weights",
        w,
        "--threads",
        "1",
        "--crop-size",
        "28",
        "--normalize",
        &format!("0:{}", 1.0f32 / (255.0 * 0.00390625)),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(acc(&out).unwrap(), trained, "--crop-size 28 on the zoo's lenet-caffe is the same net and crop");

    let sd = std::path::Path::new(data);
    let run = |workers: &str| {
        let (cfg, pc) = config(
            &[
                "--model",
                &net,
                "--data",
                data,
                "--steps",
                "4",
                "--batch-size",
                "32",
                "--threads",
                "1",
                "--workers",
                workers,
            ],
            sd,
        );
        assert_eq!(
            (cfg.model.input.clone(), cfg.data.crop, cfg.data.augment.flip),
            (vec![1, 28, 28], Some(Crop::square(28)), true)
        );
        parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap()
    };
    let (one, two) = (run("1"), run("2"));
    let e = common::rel_err(&two.params, &one.params);
    assert!(e <= 1e-5, "2 workers: relative error {e:e}");
    assert_eq!(one.test_acc, two.test_acc);
}

/// Crops that cannot work are refused with exit code 2, naming the prototxt line or the flag,
/// with a hint: larger than the samples, a TEST Data layer that disagrees, mean_file, a crop of
/// 0 or too large given as a flag, and a crop that does not give the model's input.
#[test]
fn bad_crops_are_refused_naming_the_line_or_flag() {
    let dir = std::env::temp_dir().join(format!("convoy-badcrop-{}", std::process::id()));
    let mnist = small_mnist().to_str().unwrap().to_string();
    let large = lenet_with(
        &dir,
        "large.prototxt",
        "transform_param { crop_size: 40 scale: 0.00390625 }",
        "transform_param { crop_size: 40 scale: 0.00390625 }",
    );
    let differ = lenet_with(
        &dir,
        "differ.prototxt",
        "transform_param { crop_size: 24 scale: 0.00390625 }",
        "transform_param { scale: 0.00390625 }",
    );
    let mean_file = lenet_with(
        &dir,
        "meanfile.prototxt",
        "transform_param { crop_size: 24 mean_file: \"mean.binaryproto\" }",
        "transform_param { crop_size: 24 }",
    );
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["--model", &large], vec!["large.prototxt:9", "crop_size 40", "28×28", "hint"]),
        (vec!["--model", &differ], vec!["differ.prototxt:18", "TEST", "(line 9)", "crop_size", "hint"]),
        (vec!["--model", &mean_file], vec!["meanfile.prototxt:9", "mean_file", "hint"]),
        (vec!["--crop-size", "0"], vec!["--crop-size", "'0'"]),
        (vec!["--crop-size", "29"], vec!["--crop-size 29x29", "28×28", "hint"]),
        (vec!["--crop-size", "24"], vec!["--crop-size 24x24", "[1, 24, 24]", "expects [1, 28, 28]", "hint"]),
    ];
    for (args, needles) in cases {
        let (code, _, err) = convoy_text(
            &[&["train", "--steps", "1", "--threads", "1", "--no-progress", "--data", &mnist][..], &args].concat(),
        );
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(needles.iter().all(|n| err.contains(n)), "{args:?}: {needles:?} in {err}");
    }
}

/// LENET with its TRAIN Data layer's `batch_size: 64` replaced by `batch`, written to
/// `dir/name`; its path.
fn lenet_batch(dir: &std::path::Path, name: &str, batch: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    assert!(LENET.contains("batch_size: 64"));
    std::fs::write(&p, LENET.replacen("batch_size: 64", batch, 1)).unwrap();
    p.to_str().unwrap().to_string()
}

/// The TRAIN Data layer's `data_param { batch_size: 16 }` is the global batch when --batch-size
/// is not given (also for the net of a --solver), `--batch-size 8` wins with a note naming the
/// line, and `batch_size: 0` is refused naming the line (exit 2). The run's batch is read from
/// its `run start` log line and the metrics file's run_start event.
#[test]
fn a_data_layers_batch_size_is_the_global_batch_unless_the_flag_is_given() {
    let dir = std::env::temp_dir().join(format!("convoy-batch-{}", std::process::id()));
    let net = lenet_batch(&dir, "b16.prototxt", "batch_size: 16");
    let mnist = small_mnist().to_str().unwrap().to_string();
    assert_eq!(config(&["--model", &net], small_mnist()).0.batch_size, 16);
    assert_eq!(config(&["--model", &net, "--batch-size", "8"], small_mnist()).0.batch_size, 8);
    let solver = dir.join("solver.prototxt");
    std::fs::write(&solver, format!("net: \"{net}\"\nbase_lr: 0.01\nlr_policy: \"fixed\"\nmax_iter: 2\n")).unwrap();
    assert_eq!(config(&["--solver", solver.to_str().unwrap()], small_mnist()).0.batch_size, 16);
    // The zoo's models keep the default of 64.
    assert_eq!(config(&["--model", "lenet-caffe"], small_mnist()).0.batch_size, 64);

    let metrics = dir.join("m.jsonl");
    let run = |extra: &[&str]| {
        convoy_text(
            &[
                &[
                    "--log-level",
                    "info",
                    "train",
                    "--model",
                    &net,
                    "--data",
                    &mnist,
                    "--steps",
                    "2",
                    "--threads",
                    "1",
                    "--no-progress",
                    "--no-epoch-eval",
                    "--metrics",
                    metrics.to_str().unwrap(),
                ][..],
                extra,
            ]
            .concat(),
        )
    };
    let (code, out, err) = run(&[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("done: 2 steps"), "{out}");
    let start = err.lines().find(|l| l.contains("run start")).unwrap_or_else(|| panic!("{err}"));
    assert!(start.contains("batch_size=16"), "{start}");
    let m = std::fs::read_to_string(&metrics).unwrap();
    assert!(m.lines().next().is_some_and(|l| l.contains("\"run_start\"") && l.contains("\"batch_size\":16")), "{m}");
    assert!(!err.contains("replaces the prototxt's batch_size"), "{err}");

    let (code, _, err) = run(&["--batch-size", "8"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.lines().any(|l| l.contains("run start") && l.contains("batch_size=8")), "{err}");
    assert!(err.contains("b16.prototxt:10: --batch-size 8 replaces the prototxt's batch_size 16"), "{err}");
    assert!(std::fs::read_to_string(&metrics).unwrap().contains("\"batch_size\":8"));

    let zero = lenet_batch(&dir, "b0.prototxt", "batch_size: 0");
    let (code, _, err) =
        convoy_text(&["train", "--model", &zero, "--data", &mnist, "--steps", "1", "--threads", "1", "--no-progress"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("b0.prototxt:10:") && err.contains("batch_size 0") && err.contains("hint"), "{err}");
}

/// LeNet with its input given by `input` (a layer, written before conv1), written to
/// `dir/name`; its path.
fn lenet_input(dir: &std::path::Path, name: &str, input: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let (_, body) = LENET.split_once("layer {\n  name: \"conv1\"").unwrap();
    let p = dir.join(name);
    std::fs::write(&p, format!("name: \"LeNet\"\n{input}\nlayer {{\n  name: \"conv1\"{body}")).unwrap();
    p.to_str().unwrap().to_string()
}

/// A MemoryData input (memory_data_param { batch_size: 32 channels: 1 height: 28 width: 28 },
/// transform_param scale 1/256) trains on MNIST exactly as the same net with an Input layer,
/// --batch-size 32 and the same normalisation (identical parameters after 3 steps, and through
/// `convoy train` the same test accuracy); a MemoryData shape that is not the data's is refused
/// naming the layer and its line (exit 2).
#[test]
fn a_memory_data_layer_trains_as_an_input_layer_and_a_wrong_shape_names_its_line() {
    let dir = std::env::temp_dir().join(format!("convoy-memdata-{}", std::process::id()));
    let mnist = small_mnist().to_str().unwrap().to_string();
    let memory = |c, h, w| {
        format!("layer {{ name: \"mnist\" type: \"MemoryData\" top: \"data\" top: \"label\" transform_param {{ scale: 0.00390625 }}\n  memory_data_param {{ batch_size: 32 channels: {c} height: {h} width: {w} }} }}")
    };
    let mem = lenet_input(&dir, "mem.prototxt", &memory(1, 28, 28));
    let input = lenet_input(&dir, "input.prototxt", "layer { name: \"mnist\" type: \"Input\" top: \"data\" input_param { shape { dim: 32 dim: 1 dim: 28 dim: 28 } } }");
    let norm = format!("0:{}", 1.0f32 / (255.0 * 0.00390625));
    let run = |args: &[&str]| {
        let (cfg, pc) = config(&[args, &["--steps", "3", "--threads", "1", "--no-epoch-eval"]].concat(), small_mnist());
        assert_eq!(cfg.batch_size, 32);
        parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap()
    };
    let a = run(&["--model", &mem]);
    let b = run(&["--model", &input, "--batch-size", "32", "--normalize", &norm]);
    assert_eq!(a.steps, 3);
    assert!(a.params == b.params, "the MemoryData net trained differently from the Input one");
    assert_eq!(a.test_acc, b.test_acc);
    let cli = |args: &[&str]| {
        convoy_text(
            &[
                &["train", "--data", &mnist, "--steps", "2", "--threads", "1", "--no-progress", "--no-epoch-eval"][..],
                args,
            ]
            .concat(),
        )
    };
    let (code, mem_out, err) = cli(&["--model", &mem]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.lines().any(|l| l.contains("run start") && l.contains("batch_size=32")), "{err}");
    let (code, input_out, err) = cli(&["--model", &input, "--batch-size", "32", "--normalize", &norm]);
    assert_eq!(code, Some(0), "{err}");
    let acc = |s: &str| s.split("test accuracy ").nth(1).map(str::to_string);
    assert!(acc(&mem_out).is_some() && acc(&mem_out) == acc(&input_out), "{mem_out}\n{input_out}");

    let wrong = lenet_input(&dir, "wrong.prototxt", &memory(3, 32, 32));
    let (code, _, err) = cli(&["--model", &wrong]);
    assert_eq!(code, Some(2), "{err}");
    for needle in [
        "wrong.prototxt:2:",
        "MemoryData layer 'mnist'",
        "3×32×32",
        "1×28×28",
        "hint",
        "channels: 1 height: 28 width: 28",
    ] {
        assert!(err.contains(needle), "{needle} in {err}");
    }
}
