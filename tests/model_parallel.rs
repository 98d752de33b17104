//! Model parallelism on threads. Pipeline: GPipe and 1F1B with 2 and 3 stages and 1, 4, 8
//! micro-batches compute what one worker computes on the same global batch (SGD momentum and
//! Adam, dropout included); 1F1B holds at most `stages` micro-batches on the first stage; data ×
//! pipeline hybrids too. Tensor split with 2, 3 and 4 slices (sizes that do not divide evenly)
//! likewise, each worker holding only its slices. A stage that fails ends the run naming it; bad
//! flags are usage errors.

mod common;

use common::{config, rel_err, small_mnist};
use convoy::parallel;
use convoy::train::{events::Event, events::Recorder, train};

const TEN_STEPS: [&str; 8] = ["--steps", "10", "--batch-size", "64", "--threads", "1", "--seed", "7"];
const SGD: [&str; 6] = ["--optimizer", "sgd", "--momentum", "0.9", "--lr", "0.05"];
const ADAM: [&str; 4] = ["--optimizer", "adam", "--lr", "0.0001"];

fn reference(args: &[&str]) -> Vec<f32> {
    let (cfg, _) = config(&[&TEN_STEPS[..], args].concat(), small_mnist());
    train(&cfg, &mut Recorder::default()).unwrap().params
}

fn pipeline(args: &[&str]) -> (Vec<f32>, Vec<Event>) {
    let (cfg, pc) = config(&[&TEN_STEPS[..], &["--strategy", "pipeline"], args].concat(), small_mnist());
    let mut rec = Recorder::default();
    let s = parallel::run(&cfg, &pc, &mut rec).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert_eq!(s.steps, 10);
    (s.params, rec.events)
}

fn stage_events(events: &[Event]) -> Vec<(usize, usize, f64)> {
    let mut v: Vec<(usize, usize, f64)> =
        events.iter().filter_map(|e| if let Event::Pipeline { stage, peak_in_flight, bubble, .. } = e { Some((*stage, *peak_in_flight, *bubble)) } else { None }).collect();
    v.sort_by_key(|x| x.0);
    v
}

#[test]
fn gpipe_and_1f1b_equal_single_worker_for_2_and_3_stages_and_1_4_8_micro_batches() {
    let want = reference(&SGD);
    for stages in ["2", "3"] {
        for micro in ["1", "4", "8"] {
            for schedule in ["gpipe", "1f1b"] {
                let (got, events) = pipeline(&[&SGD[..], &["--stages", stages, "--micro-batches", micro, "--pipeline-schedule", schedule]].concat());
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
    let (got, _) = pipeline(&[&ADAM[..], &["--stages", "3", "--micro-batches", "4", "--split-after", "conv2,fc1"]].concat());
    assert!(rel_err(&got, &want) <= 1e-5, "adam: {:.3e}", rel_err(&got, &want));
    // Dropout masks are drawn per global sample, so cutting the batch does not change them.
    let model = dropout_model();
    let m = ["--model", model.to_str().unwrap()];
    let want = reference(&[&SGD[..], &m].concat());
    for schedule in ["gpipe", "1f1b"] {
        let (got, _) = pipeline(&[&SGD[..], &m, &["--stages", "2", "--micro-batches", "8", "--pipeline-schedule", schedule, "--split-after", "flatten"]].concat());
        assert!(rel_err(&got, &want) <= 1e-5, "dropout {schedule}: {:.3e}", rel_err(&got, &want));
    }
}

/// A small net with dropout whose classifier is a single linear layer.
fn dropout_model() -> std::path::PathBuf {
    let model = std::env::temp_dir().join(format!("convoy-dropout-{}.toml", std::process::id()));
    std::fs::write(
        &model,
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
    .unwrap();
    model
}

/// Tensor split: LeNet with 2, 3 and 4 slices (20 and 50 channels, 500 features: uneven for 3
/// and 4), SGD and Adam; a net with dropout and a column-parallel last layer. Every worker holds
/// only its slices: together exactly the whole model.
#[test]
fn tensor_split_equals_single_worker_and_each_worker_holds_only_its_slices() {
    for opt in [&SGD[..], &ADAM[..]] {
        let want = reference(opt);
        for mp in ["2", "3", "4"] {
            let (cfg, pc) = config(&[&TEN_STEPS[..], opt, &["--strategy", "tensor", "--mp", mp]].concat(), small_mnist());
            let mut rec = Recorder::default();
            let s = parallel::run(&cfg, &pc, &mut rec).unwrap_or_else(|e| panic!("mp {mp}: {e}"));
            let e = rel_err(&s.params, &want);
            eprintln!("tensor mp {mp} {opt:?}: {e:.2e}");
            assert!(e <= 1e-5, "mp {mp} {opt:?}: relative error {e:.3e}");
            let slices: Vec<(usize, usize)> =
                rec.events.iter().filter_map(|e| if let Event::Split { param_bytes, full_param_bytes, .. } = e { Some((*param_bytes, *full_param_bytes)) } else { None }).collect();
            let n: usize = mp.parse().unwrap();
            assert_eq!(slices.len(), n);
            let full = slices[0].1;
            assert!(slices.iter().all(|s| s.0 < full * 2 / n), "{slices:?}");
            assert_eq!(slices.iter().map(|s| s.0).sum::<usize>(), full, "the slices partition the model: {slices:?}");
        }
    }
    let model = dropout_model();
    let m = ["--model", model.to_str().unwrap()];
    let want = reference(&[&SGD[..], &m].concat());
    let (cfg, pc) = config(&[&TEN_STEPS[..], &SGD[..], &m, &["--strategy", "tensor", "--mp", "3"]].concat(), small_mnist());
    let s = parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap();
    assert!(rel_err(&s.params, &want) <= 1e-5, "dropout model: {:.3e}", rel_err(&s.params, &want));
}

/// Hybrid data × pipeline: 2 replicas of a 2-stage pipeline (and 3 of 2 with 1F1B), each on its
/// shard of the batch, gradients all-reduced per stage.
#[test]
fn data_times_pipeline_equals_single_worker() {
    for opt in [&SGD[..], &ADAM[..]] {
        let want = reference(opt);
        for (dp, pp, schedule) in [("2", "2", "gpipe"), ("2", "2", "1f1b"), ("3", "2", "1f1b")] {
            let (cfg, pc) = config(&[&TEN_STEPS[..], opt, &["--strategy", "hybrid", "--dp", dp, "--pp", pp, "--micro-batches", "4", "--pipeline-schedule", schedule]].concat(), small_mnist());
            let s = parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap_or_else(|e| panic!("dp {dp} pp {pp}: {e}"));
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
            let (cfg, pc) = config(&[&TEN_STEPS[..], opt, &["--strategy", "hybrid", "--dp", dp, "--mp", mp]].concat(), small_mnist());
            let s = parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap_or_else(|e| panic!("dp {dp} mp {mp}: {e}"));
            let e = rel_err(&s.params, &want);
            eprintln!("hybrid dp {dp} × mp {mp} {opt:?}: {e:.2e}");
            assert!(e <= 1e-5, "dp {dp} × mp {mp} {opt:?}: relative error {e:.3e}");
        }
    }
    let model = std::env::temp_dir().join(format!("convoy-fc-dropout-{}.toml", std::process::id()));
    std::fs::write(
        &model,
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
    )
    .unwrap();
    let m = ["--model", model.to_str().unwrap()];
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
    let (cfg, pc) = config(&[&TEN_STEPS[..], &["--strategy", "pipeline", "--stages", "3", "--inject-failure", "1:4"]].concat(), small_mnist());
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
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_convoy"))
            .args(["train", "--no-progress", "--steps", "1", "--data", small_mnist().to_str().unwrap()])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
