//! Model parallelism on threads. Pipeline: GPipe and 1F1B with 2 and 3 stages and 1, 4, 8
//! micro-batches compute what one worker computes on the same global batch (SGD momentum and
//! Adam, dropout included); 1F1B holds at most `stages` micro-batches on the first stage; data ×
//! pipeline hybrids too. Tensor split with 2, 3 and 4 slices (sizes that do not divide evenly)
//! likewise, each worker holding only its slices, also of DAGs (ResNet-20 with option-A and B
//! shortcuts, batch-norm statistics included; a net with every join). A stage that fails ends the run naming it; bad
//! flags are usage errors.

mod common;

use common::{
    config, convoy, model_file, reference, rel_err, running_stats, small_mnist, ten_steps_parallel, TEN_STEPS,
};
use convoy::parallel;
use convoy::train::{events::Event, events::Recorder, train};

/// lr 0.02: at 0.05 these 10-step runs on 600 MNIST images sit at the edge of chaos, where the
/// rounding-level differences between a split and a whole batch (a Linear layer's weight
/// gradient summed per micro-batch) flip a ReLU whose pre-activation lies within rounding of
/// zero, and one flipped element grows to 4e-4 in ten steps; which seeds flip depends on the
/// kernels' summation order (measured with the direct convolution kernels, seed 7: 4e-4 at
/// 0.05, 1.5e-5 at 0.03, 9e-9 at 0.02; seed 8: 1.6e-8 at 0.05).
const SGD: [&str; 6] = ["--optimizer", "sgd", "--momentum", "0.9", "--lr", "0.02"];
const ADAM: [&str; 4] = ["--optimizer", "adam", "--lr", "0.0001"];

/// `ten_steps_parallel` under `--strategy pipeline` with `args`; its parameters and events.
fn pipeline(args: &[&str]) -> (Vec<f32>, Vec<Event>) {
    ten_steps_parallel(&[&["--strategy", "pipeline"][..], args].concat())
}

fn stage_events(events: &[Event]) -> Vec<(usize, usize, f64)> {
    let mut v: Vec<(usize, usize, f64)> = events
        .iter()
        .filter_map(|e| {
            if let Event::Pipeline { stage, peak_in_flight, bubble, .. } = e {
                Some((*stage, *peak_in_flight, *bubble))
            } else {
                None
            }
        })
        .collect();
    v.sort_by_key(|x| x.0);
    v
}

#[test]
fn gpipe_and_1f1b_equal_single_worker_for_2_and_3_stages_and_1_4_8_micro_batches() {
    let want = reference(&SGD);
    for stages in ["2", "3"] {
        for micro in ["1", "4", "8"] {
            for schedule in ["gpipe", "1f1b"] {
                let (got, events) = pipeline(
                    &[&SGD[..], &["--stages", stages, "--micro-batches", micro, "--pipeline-schedule", schedule]]
                        .concat(),
                );
                let e = rel_err(&got, &want);
                eprintln!("{stages} stages, {micro} micro-batches, {schedule}: relative error {e:.2e}");
                assert!(e <= 1e-5, "{stages} stages, {micro} micro-batches, {schedule}: relative error {e:.3e}");
                let st = stage_events(&events);
                let s: usize = stages.parse().unwrap();
                let m: usize = micro.parse().unwrap();
                assert_eq!(st.len(), s, "one report per stage: {st:?}");
                let first = st[0].1;
                match schedule {
                    // GPipe holds every micro-batch; 1F1B at most `stages` on the first stage.
                    "gpipe" => assert_eq!(first, m, "{st:?}"),
                    _ => assert_eq!(first, m.min(s), "{st:?}"),
                }
            }
        }
    }
}

#[test]
fn pipeline_with_adam_dropout_and_a_given_split_equals_single_worker() {
    let want = reference(&ADAM);
    let (got, _) =
        pipeline(&[&ADAM[..], &["--stages", "3", "--micro-batches", "4", "--split-after", "conv2,fc1"]].concat());
    assert!(rel_err(&got, &want) <= 1e-5, "adam: {:.3e}", rel_err(&got, &want));
    // Dropout masks are drawn per global sample, so cutting the batch does not change them.
    let model = dropout_model();
    let m = ["--model", &model];
    let want = reference(&[&SGD[..], &m].concat());
    for schedule in ["gpipe", "1f1b"] {
        let (got, _) = pipeline(
            &[
                &SGD[..],
                &m,
                &["--stages", "2", "--micro-batches", "8", "--pipeline-schedule", schedule, "--split-after", "flatten"],
            ]
            .concat(),
        );
        assert!(rel_err(&got, &want) <= 1e-5, "dropout {schedule}: {:.3e}", rel_err(&got, &want));
    }
}

/// A small net with dropout whose classifier is a single linear layer, written to a file; its
/// path.
fn dropout_model() -> String {
    model_file(
        "dropout.toml",
        r#"
name = "lenet-dropout"
input = [1, 28, 28]
classes = 10
[[layer]]
name = "conv1"
type = "conv2d"
out_channels = 8
kernel = 5
[[layer]]
name = "relu1"
type = "relu"
[[layer]]
name = "pool1"
type = "max_pool2d"
kernel = 2
[[layer]]
name = "flatten"
type = "flatten"
[[layer]]
name = "drop"
type = "dropout"
p = 0.5
[[layer]]
name = "fc"
type = "linear"
out_features = 10
"#,
    )
}

/// Tensor split: LeNet with 2, 3 and 4 slices (20 and 50 channels, 500 features: uneven for 3
/// and 4), SGD and Adam; a net with dropout and a column-parallel last layer. Every worker holds
/// only its slices: together exactly the whole model.
#[test]
fn tensor_split_equals_single_worker_and_each_worker_holds_only_its_slices() {
    for opt in [&SGD[..], &ADAM[..]] {
        let want = reference(opt);
        for mp in ["2", "3", "4"] {
            let (cfg, pc) =
                config(&[&TEN_STEPS[..], opt, &["--strategy", "tensor", "--mp", mp]].concat(), small_mnist());
            let mut rec = Recorder::default();
            let s = parallel::run(&cfg, &pc, &mut rec).unwrap_or_else(|e| panic!("mp {mp}: {e}"));
            let e = rel_err(&s.params, &want);
            eprintln!("tensor mp {mp} {opt:?}: {e:.2e}");
            assert!(e <= 1e-5, "mp {mp} {opt:?}: relative error {e:.3e}");
            let slices: Vec<(usize, usize)> = rec
                .events
                .iter()
                .filter_map(|e| {
                    if let Event::Split { param_bytes, full_param_bytes, .. } = e {
                        Some((*param_bytes, *full_param_bytes))
                    } else {
                        None
                    }
                })
                .collect();
            let n: usize = mp.parse().unwrap();
            assert_eq!(slices.len(), n);
            let full = slices[0].1;
            assert!(slices.iter().all(|s| s.0 < full * 2 / n), "{slices:?}");
            assert_eq!(slices.iter().map(|s| s.0).sum::<usize>(), full, "the slices partition the model: {slices:?}");
        }
    }
    let model = dropout_model();
    let m = ["--model", &model];
    let want = reference(&[&SGD[..], &m].concat());
    let (cfg, pc) =
        config(&[&TEN_STEPS[..], &SGD[..], &m, &["--strategy", "tensor", "--mp", "3"]].concat(), small_mnist());
    let s = parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap();
    assert!(rel_err(&s.params, &want) <= 1e-5, "dropout model: {:.3e}", rel_err(&s.params, &want));
}

/// CIFAR-shaped synthetic data for the ResNets: 3×32×32, 10 classes, 96 training and 32 test
/// samples.
const CIFAR: &str = "synthetic:3x32x32:10:96:32";
/// Two steps: ResNet-20 has some 3 million ReLUs per batch of 16, and from the third or fourth
/// step on a pre-activation within rounding of zero now and then flips one element's gradient,
/// after which the runs drift apart at the 1e-6..1e-4 level — data parallelism (2 or 3 workers,
/// SyncBatchNorm) does the same. The tensor split's slices also sum the input gradient in parts,
/// and the hybrid's split classifier sums the convolutions' output gradient in parts: with the
/// direct convolution kernels a flip comes at the third step for some of their runs (1e-5),
/// while two steps stay within 2.2e-6 (most near 1e-8).
const TWO_STEPS: [&str; 8] = ["--steps", "2", "--batch-size", "16", "--threads", "1", "--seed", "7"];

/// Tensor split of residual nets (DAGs): ResNet-20 with option-A shortcuts (pad_channels: the
/// add then mixes a whole and a sliced input) and option-B ones (1×1 convolution + BN: every add
/// keeps the slices), 2 and 3 slices (16/32/64 channels: uneven for 3), SGD with momentum. The
/// parameters gathered to worker 0, the batch-norm running statistics among them, and the test
/// loss they give equal one worker's on the whole batch.
#[test]
#[cfg_attr(debug_assertions, ignore = "release suite: trains ResNet-20")]
fn tensor_split_of_resnet20_a_and_b_equals_single_worker_with_running_statistics() {
    let data = std::path::Path::new(CIFAR);
    for model in ["resnet20", "resnet20-b"] {
        let m = ["--model", model];
        let (cfg, _) = config(&[&TWO_STEPS[..], &SGD[..], &m].concat(), data);
        let want = train(&cfg, &mut Recorder::default()).unwrap();
        let stats = running_stats(model, &want.params);
        assert!(stats.iter().any(|v| v.abs() > 0.05 && (v - 1.0).abs() > 0.05), "the running statistics moved");
        for mp in ["2", "3"] {
            let (cfg, pc) =
                config(&[&TWO_STEPS[..], &SGD[..], &m, &["--strategy", "tensor", "--mp", mp]].concat(), data);
            let s =
                parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap_or_else(|e| panic!("{model} mp {mp}: {e}"));
            assert_eq!(s.steps, 2);
            let e = rel_err(&s.params, &want.params);
            let es = rel_err(&running_stats(model, &s.params), &stats);
            let el = (s.test_loss - want.test_loss).abs() / want.test_loss;
            eprintln!("tensor {model} mp {mp}: parameters {e:.2e}, running statistics {es:.2e}, test loss {el:.2e}");
            assert!(e <= 1e-5, "{model} mp {mp}: relative error {e:.3e}");
            assert!(es <= 1e-5, "{model} mp {mp}: running statistics, relative error {es:.3e}");
            assert!(el <= 1e-5, "{model} mp {mp}: test loss {} vs {}", s.test_loss, want.test_loss);
        }
    }
}

/// The hybrid's data-parallel convolutions use SyncBatchNorm by default (statistics over every
/// worker's shard: the global batch), so ResNet-20 under `--dp D --mp M` trains as one worker,
/// running statistics included; `--batch-norm local` (each shard's statistics) does not.
#[test]
#[cfg_attr(debug_assertions, ignore = "release suite: trains ResNet-20")]
fn hybrid_resnet20_with_sync_batch_norm_equals_single_worker() {
    let data = std::path::Path::new(CIFAR);
    let m = ["--model", "resnet20"];
    let (cfg, _) = config(&[&TWO_STEPS[..], &SGD[..], &m].concat(), data);
    let want = train(&cfg, &mut Recorder::default()).unwrap();
    let stats = running_stats("resnet20", &want.params);
    for (dp, mp) in [("1", "2"), ("2", "2")] {
        let (cfg, pc) =
            config(&[&TWO_STEPS[..], &SGD[..], &m, &["--strategy", "hybrid", "--dp", dp, "--mp", mp]].concat(), data);
        let s = parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap_or_else(|e| panic!("dp {dp} mp {mp}: {e}"));
        let e = rel_err(&s.params, &want.params);
        let es = rel_err(&running_stats("resnet20", &s.params), &stats);
        eprintln!("hybrid resnet20 dp {dp} mp {mp}: parameters {e:.2e}, running statistics {es:.2e}");
        assert!(e <= 1e-5 && es <= 1e-5, "dp {dp} mp {mp}: relative errors {e:.3e}, {es:.3e}");
    }
    let (cfg, pc) = config(
        &[&TWO_STEPS[..], &SGD[..], &m, &["--strategy", "hybrid", "--dp", "2", "--mp", "2", "--batch-norm", "local"]]
            .concat(),
        data,
    );
    let s = parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap();
    let es = rel_err(&running_stats("resnet20", &s.params), &stats);
    assert!(es > 1e-4, "--batch-norm local: shard statistics should differ from the global batch's ({es:.3e})");
}

/// A checkpoint written by a tensor split of ResNet-20-B holds the whole model under the
/// single-worker names: resumed by one worker, the run ends where the uninterrupted one does.
/// Two steps, the checkpoint after the first (TWO_STEPS says why: with three steps, checkpoint
/// after two, a CI machine measured 1.79e-5 against the 1e-5 asked).
#[test]
#[cfg_attr(debug_assertions, ignore = "release suite: trains ResNet-20")]
fn tensor_split_checkpoint_of_resnet20_b_resumes_on_one_worker() {
    let data = std::path::Path::new(CIFAR);
    let m = ["--model", "resnet20-b"];
    let dir = std::env::temp_dir().join(format!("convoy-tensor-dag-ckpt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (cfg, _) = config(&[&TWO_STEPS[..], &SGD[..], &m].concat(), data);
    let want = train(&cfg, &mut Recorder::default()).unwrap().params;
    let ck = ["--checkpoint-dir", dir.to_str().unwrap(), "--checkpoint-every", "1"];
    let (cfg, pc) = config(&[&TWO_STEPS[..], &SGD[..], &m, &["--strategy", "tensor", "--mp", "3"], &ck].concat(), data);
    parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap();
    let (mut cfg, _) = config(&[&TWO_STEPS[..], &SGD[..], &m].concat(), data);
    cfg.resume = Some(dir.join("step-1"));
    let got = train(&cfg, &mut Recorder::default()).unwrap().params;
    let e = rel_err(&got, &want);
    eprintln!("resnet20-b tensor mp 3 checkpoint → 1 worker: {e:.2e}");
    assert!(e <= 1e-5, "relative error {e:.3e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A small net with every join: two branches of convolutions gated by `mul`, a `max` with the
/// block's input (all sliced alike: kept sliced), a `concat` (gathered), a `batch_norm` and a
/// `scale` computed whole (a copy of their parameters on every worker), a weighted `add` of a
/// sliced and a whole input, and a classifier whose column-parallel features feed two Linear
/// layers summed by an `add` (row-parallel, then whole). No bias is followed by a batch norm
/// (its gradient would be rounding noise, which Adam scales up to full steps).
const JOINS: &str = r#"
name = "joins"
input = [1, 28, 28]
classes = 10
[[layer]]
name = "conv1"
type = "conv2d"
out_channels = 8
kernel = 3
stride = 2
padding = 1
bias = false
[[layer]]
name = "bn1"
type = "batch_norm"
[[layer]]
name = "relu1"
type = "relu"
[[layer]]
name = "conv_a"
type = "conv2d"
out_channels = 8
kernel = 3
padding = 1
[[layer]]
name = "relu_a"
type = "relu"
[[layer]]
name = "conv_b"
type = "conv2d"
input = "relu1"
out_channels = 8
kernel = 1
[[layer]]
name = "gate"
type = "sigmoid"
[[layer]]
name = "gated"
type = "mul"
inputs = ["relu_a", "gate"]
[[layer]]
name = "mx"
type = "max"
inputs = ["gated", "relu1"]
[[layer]]
name = "cat"
type = "concat"
inputs = ["mx", "relu1"]
[[layer]]
name = "bn2"
type = "batch_norm"
affine = false
[[layer]]
name = "sc"
type = "scale"
[[layer]]
name = "conv_c"
type = "conv2d"
out_channels = 16
kernel = 3
padding = 1
[[layer]]
name = "res"
type = "add"
inputs = ["conv_c", "sc"]
coeff = [1.0, 0.5]
[[layer]]
name = "pool"
type = "max_pool2d"
kernel = 2
[[layer]]
name = "flatten"
type = "flatten"
[[layer]]
name = "fc1"
type = "linear"
out_features = 32
[[layer]]
name = "relu_fc"
type = "relu"
[[layer]]
name = "fc2"
type = "linear"
out_features = 10
[[layer]]
name = "fc2b"
type = "linear"
input = "relu_fc"
out_features = 10
bias = false
[[layer]]
name = "logits"
type = "add"
inputs = ["fc2", "fc2b"]
"#;

/// Tensor split of a DAG with `mul`, `max`, `concat`, `scale`, whole-computed batch norm and a
/// mixed `add`, on 2 and 3 slices, SGD and Adam; and the conv/classifier hybrid, whose classifier
/// (a DAG too) runs on the same split net (without the convolutions' batch norms: the hybrid
/// normalises them per shard).
#[test]
fn tensor_split_of_a_net_with_every_join_equals_single_worker() {
    let joins = model_file("joins.toml", JOINS);
    let no_conv_bn = model_file(
        "joins-nobn.toml",
        &JOINS
            .replace("name = \"bn1\"\ntype = \"batch_norm\"", "name = \"bn1\"\ntype = \"tanh\"")
            .replace("name = \"bn2\"\ntype = \"batch_norm\"\naffine = false", "name = \"bn2\"\ntype = \"tanh\""),
    );
    let runs: [(&str, &[&str], &[&str]); 5] = [
        (&joins, &SGD, &["--strategy", "tensor", "--mp", "2"]),
        (&joins, &SGD, &["--strategy", "tensor", "--mp", "3"]),
        (&joins, &ADAM, &["--strategy", "tensor", "--mp", "2"]),
        (&joins, &ADAM, &["--strategy", "tensor", "--mp", "3"]),
        (&no_conv_bn, &SGD, &["--strategy", "hybrid", "--dp", "1", "--mp", "3"]),
    ];
    for (model, opt, flags) in runs {
        let m = ["--model", model];
        let want = reference(&[opt, &m].concat());
        let (cfg, pc) = config(&[&TEN_STEPS[..], opt, &m, flags].concat(), small_mnist());
        let s = parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap_or_else(|e| panic!("{flags:?}: {e}"));
        let e = rel_err(&s.params, &want);
        eprintln!("{model} {flags:?} {}: {e:.2e}", opt[1]);
        assert!(e <= 1e-5, "{model} {flags:?} {}: relative error {e:.3e}", opt[1]);
    }
}

/// A grouped convolution (AlexNet's conv2/4/5) is computed whole by every worker of the tensor
/// split, the layers around it split: the same training as one worker.
#[test]
fn tensor_split_computes_a_grouped_convolution_whole() {
    let model = model_file(
        "grouped.toml",
        "name = \"grouped\"\ninput = [1, 28, 28]\nclasses = 10\n\
         [[layer]]\nname = \"conv1\"\ntype = \"conv2d\"\nout_channels = 4\nkernel = 5\n\
         [[layer]]\nname = \"r1\"\ntype = \"relu\"\n\
         [[layer]]\nname = \"conv_g\"\ntype = \"conv2d\"\nout_channels = 6\nkernel = 5\ngroups = 2\n\
         [[layer]]\nname = \"r2\"\ntype = \"relu\"\n\
         [[layer]]\nname = \"conv3\"\ntype = \"conv2d\"\nout_channels = 4\nkernel = 3\n\
         [[layer]]\nname = \"fc\"\ntype = \"linear\"\nout_features = 10\n",
    );
    let m = model.as_str();
    let want = reference(&[&SGD[..], &["--model", m]].concat());
    for mp in ["2", "3"] {
        let (cfg, pc) = config(
            &[&TEN_STEPS[..], &SGD[..], &["--model", m, "--strategy", "tensor", "--mp", mp]].concat(),
            small_mnist(),
        );
        let got = parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap().params;
        let e = rel_err(&got, &want);
        assert!(e <= 1e-5, "mp {mp}: relative error {e:.3e}");
    }
}

/// Hybrid data × pipeline: 2 replicas of a 2-stage pipeline (and 3 of 2 with 1F1B), each on its
/// shard of the batch, gradients all-reduced per stage.
#[test]
fn data_times_pipeline_equals_single_worker() {
    for opt in [&SGD[..], &ADAM[..]] {
        let want = reference(opt);
        for (dp, pp, schedule) in [("2", "2", "gpipe"), ("2", "2", "1f1b"), ("3", "2", "1f1b")] {
            let (cfg, pc) = config(
                &[
                    &TEN_STEPS[..],
                    opt,
                    &[
                        "--strategy",
                        "hybrid",
                        "--dp",
                        dp,
                        "--pp",
                        pp,
                        "--micro-batches",
                        "4",
                        "--pipeline-schedule",
                        schedule,
                    ],
                ]
                .concat(),
                small_mnist(),
            );
            let s =
                parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap_or_else(|e| panic!("dp {dp} pp {pp}: {e}"));
            let e = rel_err(&s.params, &want);
            eprintln!("dp {dp} × pp {pp} {schedule} {opt:?}: {e:.2e}");
            assert!(e <= 1e-5, "dp {dp} × pp {pp} {schedule} {opt:?}: relative error {e:.3e}");
        }
    }
}

/// Data-parallel convolutions with a model-parallel classifier (Krizhevsky 2014): 1, 2 groups of
/// 2 and 3 slices, SGD and Adam, and a classifier with dropout between its layers.
#[test]
fn data_parallel_convolutions_with_model_parallel_classifier_equal_single_worker() {
    for opt in [&SGD[..], &ADAM[..]] {
        let want = reference(opt);
        for (dp, mp) in [("1", "2"), ("2", "2"), ("2", "3")] {
            let (cfg, pc) = config(
                &[&TEN_STEPS[..], opt, &["--strategy", "hybrid", "--dp", dp, "--mp", mp]].concat(),
                small_mnist(),
            );
            let s =
                parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap_or_else(|e| panic!("dp {dp} mp {mp}: {e}"));
            let e = rel_err(&s.params, &want);
            eprintln!("hybrid dp {dp} × mp {mp} {opt:?}: {e:.2e}");
            assert!(e <= 1e-5, "dp {dp} × mp {mp} {opt:?}: relative error {e:.3e}");
        }
    }
    let model = model_file(
        "fc-dropout.toml",
        r#"
name = "fc-dropout"
input = [1, 28, 28]
classes = 10
[[layer]]
name = "conv1"
type = "conv2d"
out_channels = 6
kernel = 5
[[layer]]
name = "relu1"
type = "relu"
[[layer]]
name = "pool1"
type = "max_pool2d"
kernel = 4
[[layer]]
name = "fc1"
type = "linear"
out_features = 33
[[layer]]
name = "relu2"
type = "relu"
[[layer]]
name = "drop"
type = "dropout"
p = 0.3
[[layer]]
name = "fc2"
type = "linear"
out_features = 10
"#,
    );
    let m = ["--model", &model];
    let want = reference(&[&SGD[..], &m].concat());
    for flags in [vec!["--strategy", "hybrid", "--dp", "2", "--mp", "2"], vec!["--strategy", "tensor", "--mp", "3"]] {
        let (cfg, pc) = config(&[&TEN_STEPS[..], &SGD[..], &m, &flags].concat(), small_mnist());
        let s = parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap();
        assert!(rel_err(&s.params, &want) <= 1e-5, "{flags:?}: {:.3e}", rel_err(&s.params, &want));
    }
}

/// Checkpoints of split models hold the whole model under the single-worker names: written by
/// each strategy and resumed by one worker, and written by one worker and resumed by each
/// strategy, the run ends where the uninterrupted single-worker run does.
#[test]
fn checkpoints_move_between_split_models_and_one_worker() {
    let dir = std::env::temp_dir().join(format!("convoy-mp-ckpt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for opt in [&SGD[..], &ADAM[..]] {
        let want = reference(opt);
        let single = dir.join(format!("single-{}", opt[1]));
        let ck = ["--checkpoint-dir", single.to_str().unwrap(), "--checkpoint-every", "5"];
        let (cfg, _) = config(&[&TEN_STEPS[..], opt, &ck].concat(), small_mnist());
        train(&cfg, &mut Recorder::default()).unwrap();
        let layouts: [&[&str]; 4] = [
            &["--strategy", "pipeline", "--stages", "2", "--micro-batches", "4"],
            &["--strategy", "tensor", "--mp", "3"],
            &["--strategy", "hybrid", "--dp", "2", "--mp", "2"],
            &["--strategy", "hybrid", "--dp", "2", "--pp", "2", "--micro-batches", "2"],
        ];
        for (i, flags) in layouts.iter().enumerate() {
            // Written by the split model, resumed by one worker.
            let d = dir.join(format!("{i}-{}", opt[1]));
            let ck = ["--checkpoint-dir", d.to_str().unwrap(), "--checkpoint-every", "5"];
            let (cfg, pc) = config(&[&TEN_STEPS[..], opt, flags, &ck].concat(), small_mnist());
            parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap_or_else(|e| panic!("{flags:?}: {e}"));
            let (mut cfg, _) = config(&[&TEN_STEPS[..], opt].concat(), small_mnist());
            cfg.resume = Some(d.join("step-5"));
            let got = train(&cfg, &mut Recorder::default()).unwrap().params;
            assert!(rel_err(&got, &want) <= 1e-5, "{flags:?} → 1 worker {opt:?}: {:.3e}", rel_err(&got, &want));
            // Written by one worker, resumed by the split model.
            let (mut cfg, pc) = config(&[&TEN_STEPS[..], opt, flags].concat(), small_mnist());
            cfg.resume = Some(single.join("step-5"));
            let got = parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap().params;
            assert!(rel_err(&got, &want) <= 1e-5, "1 worker → {flags:?} {opt:?}: {:.3e}", rel_err(&got, &want));
        }
    }
}

#[test]
fn balanced_partition_gives_every_stage_work_and_covers_the_net() {
    let net = convoy::net::Net::build(&convoy::net::ModelSpec::resolve("lenet").unwrap()).unwrap();
    for stages in 2..=4 {
        let parts = convoy::parallel::pipeline::partition(&net, stages, &[]).unwrap();
        assert_eq!(parts.len(), stages);
        assert_eq!(parts[0].start, 0);
        assert_eq!(parts.last().unwrap().end, net.num_layers());
        assert!(parts.windows(2).all(|w| w[0].end == w[1].start && !w[0].is_empty()), "{parts:?}");
    }
}

#[test]
fn a_failing_stage_ends_the_run_naming_it() {
    let (cfg, pc) = config(
        &[&TEN_STEPS[..], &["--strategy", "pipeline", "--stages", "3", "--inject-failure", "1:4"]].concat(),
        small_mnist(),
    );
    let e = parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap_err().to_string();
    assert!(e.contains("worker 1") && e.contains("step 4"), "{e}");
}

#[test]
fn bad_pipeline_flags_are_usage_errors() {
    for (args, needle) in [
        (vec!["--strategy", "pipeline", "--stages", "1"], "--stages"),
        (vec!["--strategy", "pipeline", "--stages", "2", "--workers", "3"], "--workers"),
        (vec!["--strategy", "pipeline", "--stages", "2", "--micro-batches", "0"], "--micro-batches"),
        (vec!["--strategy", "pipeline", "--stages", "2", "--split-after", "nope"], "nope"),
        (vec!["--strategy", "pipeline", "--stages", "3", "--split-after", "fc1"], "--split-after"),
        (vec!["--strategy", "pipeline", "--stages", "20"], "--stages"),
        (vec!["--stages", "2"], "strategy pipeline"),
        (vec!["--strategy", "hybrid", "--dp", "2"], "--pp"),
        (vec!["--strategy", "hybrid", "--dp", "2", "--mp", "2", "--pp", "2"], "pipeline flags"),
        (vec!["--strategy", "hybrid", "--dp", "2", "--mp", "1"], "--mp"),
        (vec!["--strategy", "hybrid", "--dp", "2", "--mp", "2", "--bucket-mb", "5"], "--bucket-mb"),
        (vec!["--dp", "2"], "strategy hybrid"),
        (vec!["--strategy", "tensor", "--mp", "1"], "--mp"),
        (vec!["--strategy", "tensor", "--mp", "200"], "fewer than the slices"),
    ] {
        let out = convoy(
            &[&["train", "--no-progress", "--steps", "1", "--data", small_mnist().to_str().unwrap()][..], &args]
                .concat(),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
