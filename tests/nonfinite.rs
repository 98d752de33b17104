//! `--on-nonfinite skip` (PyTorch GradScaler's rule): a step whose gradients hold a NaN is not
//! applied — parameters and optimizer state stay as they were — on every worker of every
//! strategy, which all agree with one worker; the step is reported in the metrics. The NaN comes
//! from a test hook that makes the first image of the global batch NaN at chosen steps (only the
//! worker whose shard holds it sees it: the others learn of it from the reduction or the agreement).

mod common;

use common::{config, convoy_text, rel_err, small_mnist, train_small};
use convoy::parallel;
use convoy::train::events::{Event, Recorder};

const RUN: [&str; 10] =
    ["--steps", "10", "--batch-size", "32", "--threads", "1", "--seed", "3", "--no-epoch-eval", "--on-nonfinite"];

/// Final parameters and the skipped steps (from the events) of a run with `args`.
fn run(args: &[&str]) -> (Vec<f32>, Vec<u64>) {
    let (cfg, pc) = config(&[&RUN[..], &["skip", "--inject-nonfinite", "3,7"], args].concat(), small_mnist());
    let mut rec = Recorder::default();
    let s = parallel::run(&cfg, &pc, &mut rec).unwrap();
    let skipped = rec.events.iter().filter_map(|e| match e {
        Event::Step { step, skipped: true, .. } => Some(*step),
        _ => None,
    });
    (s.params, skipped.collect())
}

#[test]
fn every_strategy_skips_the_same_steps_as_one_worker() {
    for opt in
        [&["--optimizer", "sgd", "--momentum", "0.9", "--lr", "0.05"][..], &["--optimizer", "adam", "--lr", "0.0001"]]
    {
        let (want, skipped) = run(opt);
        assert_eq!(skipped, vec![3, 7], "{opt:?}");
        assert!(want.iter().all(|v| v.is_finite()), "{opt:?}: the model went non-finite");
        for layout in [
            &["--workers", "2"][..],
            &["--workers", "3", "--no-overlap"],
            &["--workers", "2", "--deterministic"],
            &["--strategy", "pipeline", "--stages", "2", "--micro-batches", "4"],
            &["--strategy", "tensor", "--mp", "2"],
            &["--strategy", "hybrid", "--dp", "2", "--pp", "2", "--micro-batches", "2"],
            &["--strategy", "hybrid", "--dp", "2", "--mp", "2"],
            &["--strategy", "ps", "--ps-mode", "sync", "--workers", "2", "--servers", "2"],
            &["--strategy", "ps", "--ps-mode", "async", "--workers", "1", "--servers", "2"],
        ] {
            let (got, s) = run(&[opt, layout].concat());
            assert_eq!(s, vec![3, 7], "{opt:?} {layout:?}");
            let e = rel_err(&got, &want);
            assert!(e <= 1e-5, "{opt:?} {layout:?}: relative error {e:.3e} against one worker");
        }
    }
}

/// A skipped step changes nothing: 10 steps whose last is skipped end where 9 steps end,
/// bitwise, on one worker and on two.
#[test]
fn a_skipped_step_leaves_the_parameters_as_they_were() {
    let base = [
        "--batch-size",
        "32",
        "--threads",
        "1",
        "--seed",
        "3",
        "--no-epoch-eval",
        "--optimizer",
        "adam",
        "--lr",
        "0.001",
        "--schedule",
        "constant",
    ];
    for workers in ["1", "2"] {
        let (cfg, pc) = config(&[&base[..], &["--steps", "9", "--workers", workers]].concat(), small_mnist());
        let nine = parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap().params;
        let (cfg, pc) = config(
            &[
                &base[..],
                &["--steps", "10", "--workers", workers, "--on-nonfinite", "skip", "--inject-nonfinite", "10"],
            ]
            .concat(),
            small_mnist(),
        );
        let ten = parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap().params;
        assert!(
            ten == nine,
            "{workers} worker(s): the skipped step changed the parameters ({:.3e})",
            rel_err(&ten, &nine)
        );
    }
}

/// `convoy train` on the small MNIST with `args` (`train_small("warn")`); (exit code, stdout,
/// stderr).
fn train_cli(args: &[&str]) -> (Option<i32>, String, String) {
    convoy_text(&[&train_small("warn")[..], args].concat())
}

/// The metrics file marks the skipped steps and counts them at the end; the log warns. Without
/// the flag the same run fails naming the step.
#[test]
fn skipped_steps_are_in_the_metrics_and_fail_is_the_default() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("nonfinite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let metrics = dir.join("m.jsonl");
    let (code, _, err) = train_cli(
        &[&RUN[..], &["skip", "--inject-nonfinite", "4", "--workers", "2", "--metrics", metrics.to_str().unwrap()]]
            .concat(),
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("WARN") && err.contains("skipped"), "{err}");
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&metrics).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let steps: Vec<(u64, bool)> = lines
        .iter()
        .filter(|l| l["event"] == "step")
        .map(|l| (l["step"].as_u64().unwrap(), l["skipped"].as_bool().unwrap()))
        .collect();
    assert_eq!(steps, (1..=10).map(|s| (s, s == 4)).collect::<Vec<_>>());
    let end = lines.iter().find(|l| l["event"] == "run_end").unwrap();
    assert_eq!(end["skipped_steps"], 1);
    // Default: the NaN gradients reach the parameters, and the run ends at that step although
    // the loss stays finite (ReLU turns NaN into 0): every step looks at the parameters. It
    // names the step and the tensor, and writes no checkpoint of a non-finite model.
    let ck = dir.join("ck");
    let (code, _, err) = train_cli(
        &[&RUN[..9], &["--inject-nonfinite", "4", "--checkpoint-dir", ck.to_str().unwrap(), "--checkpoint-every", "5"]]
            .concat(),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("the model is not finite at step 4") && err.contains("conv1.weight"), "{err}");
    assert!(!ck.join("latest").exists(), "a checkpoint of a non-finite model was written");
}

/// Under the asynchronous parameter server each server drops a non-finite push (the other
/// workers' pushes of that step still count): the run stays finite, and the worker whose push
/// was dropped reports the step as skipped.
#[test]
fn asynchronous_servers_drop_nonfinite_pushes() {
    for mode in [&["async"][..], &["ssp", "--staleness", "1"]] {
        let (got, skipped) =
            run(&[&["--strategy", "ps", "--ps-mode"][..], mode, &["--workers", "3", "--servers", "2"]].concat());
        assert!(got.iter().all(|v| v.is_finite()), "{mode:?}: the model went non-finite");
        assert_eq!(skipped, vec![3, 7], "{mode:?}: worker 0 (which holds the NaN image) reports its dropped pushes");
    }
}

/// `--on-nonfinite fail` (the default) under every strategy: NaN gradients whose loss stays
/// finite end the run at the very step they reach the parameters, naming it.
#[test]
fn every_strategy_fails_at_the_step_the_parameters_go_nonfinite() {
    for layout in [
        &["--workers", "2"][..],
        &["--strategy", "ps", "--workers", "2", "--servers", "2"],
        &["--strategy", "pipeline", "--stages", "2", "--micro-batches", "2"],
        &["--strategy", "tensor", "--mp", "2"],
        &["--strategy", "hybrid", "--dp", "2", "--mp", "2"],
    ] {
        let (cfg, pc) = config(&[&RUN[..9], &["--inject-nonfinite", "4"], layout].concat(), small_mnist());
        let e = parallel::run(&cfg, &pc, &mut Recorder::default())
            .err()
            .unwrap_or_else(|| panic!("{layout:?}: the run did not fail"));
        assert!(e.to_string().contains("not finite at step 4"), "{layout:?}: {e}");
    }
}
