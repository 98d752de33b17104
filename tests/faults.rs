//! Never lose work: SIGINT/SIGTERM stop after a step with a checkpoint and the exit codes 130/143;
//! `kill -9` and a crash halfway through writing a checkpoint leave the previous one loadable;
//! resuming afterwards gives the weights of the uninterrupted run. Signals are sent for real.

mod common;

use common::{config, rel_err, small_mnist};
use convoy::parallel;
use convoy::train::events::Recorder;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn tmp(tag: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("faults-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A run long enough to be interrupted (600 images, batch 32: 19 steps an epoch).
fn run_flags(workers: &str) -> Vec<String> {
    ["--steps", "150", "--batch-size", "32", "--threads", "1", "--seed", "5", "--workers", workers, "--no-epoch-eval"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Final parameters of the uninterrupted run, in process.
fn straight(workers: &str) -> Vec<f32> {
    let flags = run_flags(workers);
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (cfg, pc) = config(&args, small_mnist());
    parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap().params
}

fn spawn(workers: &str, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_convoy"))
        .args(["--log-level", "error", "train", "--no-progress", "--data", small_mnist().to_str().unwrap()])
        .args(run_flags(workers))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `path` exists (or the child ends); panics after a minute.
fn wait_for(path: &Path, child: &mut Child) {
    let t = Instant::now();
    while !path.exists() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before {} appeared", path.display());
        assert!(t.elapsed() < Duration::from_secs(60), "{} did not appear", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn finish(child: Child) -> (Option<i32>, String) {
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Resumes from `ckpt` to the end; returns the final parameters (saved with --save).
fn resume(workers: &str, ckpt: &Path, dir: &Path) -> Vec<f32> {
    let weights = dir.join("final.safetensors");
    let child = spawn(workers, &["--resume", ckpt.to_str().unwrap(), "--save", weights.to_str().unwrap()]);
    let (code, err) = finish(child);
    assert_eq!(code, Some(0), "resume failed: {err}");
    let spec = convoy::net::ModelSpec::resolve("lenet").unwrap();
    let net = convoy::net::Net::build(&spec).unwrap();
    convoy::checkpoint::load_weights(&weights, net.layout()).unwrap()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
}

#[test]
fn sigint_and_sigterm_stop_with_a_checkpoint_and_resume_exactly() {
    for (workers, sig, code) in [("1", "-INT", 130), ("2", "-TERM", 143)] {
        let dir = tmp(&format!("sig{workers}"));
        let ck = dir.join("ck");
        let metrics = dir.join("m.jsonl");
        let mut child = spawn(workers, &["--checkpoint-dir", ck.to_str().unwrap(), "--checkpoint-every", "1000", "--metrics", metrics.to_str().unwrap()]);
        wait_for(&metrics, &mut child);
        std::thread::sleep(Duration::from_millis(400));
        signal(&child, sig);
        let (got, err) = finish(child);
        assert_eq!(got, Some(code), "{sig}: {err}");
        assert!(err.contains("checkpoint saved") && err.contains("--resume"), "{err}");
        let latest = std::fs::read_to_string(ck.join("latest")).unwrap();
        let step: u64 = latest.strip_prefix("step-").unwrap().parse().unwrap();
        assert!(step > 0 && step < 150, "stopped at {latest}");
        let e = rel_err(&resume(workers, &ck, &dir), &straight(workers));
        assert!(e <= 1e-6, "{sig} with {workers} workers: relative error {e:e}");
    }
}

#[test]
fn kill_9_loses_at_most_the_steps_since_the_last_checkpoint() {
    let dir = tmp("kill9");
    let ck = dir.join("ck");
    let mut child = spawn("1", &["--checkpoint-dir", ck.to_str().unwrap(), "--checkpoint-every", "7"]);
    wait_for(&ck.join("step-21"), &mut child);
    signal(&child, "-KILL");
    let (code, _) = finish(child);
    assert_eq!(code, None, "killed by a signal");
    let e = rel_err(&resume("1", &ck, &dir), &straight("1"));
    assert!(e <= 1e-6, "relative error {e:e}");
}

#[test]
fn a_crash_halfway_through_a_checkpoint_leaves_the_previous_one() {
    let dir = tmp("crash");
    let ck = dir.join("ck");
    let child = spawn("1", &["--checkpoint-dir", ck.to_str().unwrap(), "--checkpoint-every", "10", "--inject-checkpoint-crash", "20"]);
    let (code, _) = finish(child);
    assert_eq!(code, None, "aborted");
    assert_eq!(std::fs::read_to_string(ck.join("latest")).unwrap(), "step-10");
    assert!(!ck.join("step-20").exists(), "a half checkpoint must not appear under its final name");
    let e = rel_err(&resume("1", &ck, &dir), &straight("1"));
    assert!(e <= 1e-6, "relative error {e:e}");
}

#[test]
fn a_diverging_run_stops_naming_the_step_and_tensor_and_keeps_the_last_good_checkpoint() {
    let dir = tmp("nonfinite");
    let ck = dir.join("ck");
    let out = Command::new(env!("CARGO_BIN_EXE_convoy"))
        .args(["--log-level", "error", "train", "--no-progress", "--data", small_mnist().to_str().unwrap(), "--steps", "10", "--threads", "1"])
        .args(["--lr", "1e30", "--checkpoint-dir", ck.to_str().unwrap(), "--checkpoint-every", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not finite at step") && err.contains("first non-finite parameter tensor"), "{err}");
    let latest = std::fs::read_to_string(ck.join("latest")).unwrap();
    let spec = convoy::net::ModelSpec::resolve("lenet").unwrap();
    let net = convoy::net::Net::build(&spec).unwrap();
    let w = convoy::checkpoint::load_weights(&ck.join(&latest).join("model.safetensors"), net.layout()).unwrap();
    assert!(w.iter().all(|v| v.is_finite()), "the kept checkpoint {latest} must be finite");
}
