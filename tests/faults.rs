//! Never lose work: SIGINT/SIGTERM stop after a step with a checkpoint and the exit codes 130/143;
//! `kill -9` and a crash halfway through writing a checkpoint leave the previous one loadable;
//! resuming afterwards gives the weights of the uninterrupted run. Signals are sent for real.

mod common;

use common::{config, convoy, convoy_cmd, rel_err, small_mnist, tmp, train_small};
use convoy::parallel;
use convoy::train::events::Recorder;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    convoy_cmd()
        .args(train_small("error"))
        .args(run_flags(workers))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `path` exists (or the child ends); panics after ten minutes (a hang guard only:
/// the soak test waits for up to 950 steps of a 4-worker run, which a loaded 2-core machine
/// takes minutes for).
fn wait_for(path: &Path, child: &mut Child) {
    let t = Instant::now();
    while !path.exists() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before {} appeared", path.display());
        assert!(t.elapsed() < Duration::from_secs(600), "{} did not appear within 10 minutes", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn finish(child: Child) -> (Option<i32>, String) {
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Resumes from `ckpt` to the end; returns the final parameters (saved with --save).
fn resume(workers: &str, ckpt: &Path, dir: &Path, extra: &[&str]) -> Vec<f32> {
    let weights = dir.join("final.safetensors");
    let child = spawn(
        workers,
        &[&["--resume", ckpt.to_str().unwrap(), "--save", weights.to_str().unwrap()][..], extra].concat(),
    );
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
        let mut child = spawn(
            workers,
            &[
                "--checkpoint-dir",
                ck.to_str().unwrap(),
                "--checkpoint-every",
                "1000",
                "--metrics",
                metrics.to_str().unwrap(),
            ],
        );
        wait_for(&metrics, &mut child);
        std::thread::sleep(Duration::from_millis(400));
        signal(&child, sig);
        let (got, err) = finish(child);
        assert_eq!(got, Some(code), "{sig}: {err}");
        assert!(err.contains("checkpoint saved") && err.contains("--resume"), "{err}");
        let latest = std::fs::read_to_string(ck.join("latest")).unwrap();
        let step: u64 = latest.strip_prefix("step-").unwrap().parse().unwrap();
        assert!(step > 0 && step < 150, "stopped at {latest}");
        let e = rel_err(&resume(workers, &ck, &dir, &[]), &straight(workers));
        assert!(e <= 1e-6, "{sig} with {workers} workers: relative error {e:e}");
    }
}

/// The parameter server stops on a signal too: its servers fix the step after which every worker
/// stops (sync: the step in which a worker saw the signal; async/SSP: two steps past the furthest
/// worker, where everyone waits for the others), the checkpoint holds exactly that many global
/// batches, and a synchronous run resumed from it ends as the uninterrupted run.
#[test]
fn the_parameter_server_stops_on_a_signal_with_a_checkpoint() {
    for (mode, sig, code) in [("sync", "-INT", 130), ("async", "-TERM", 143), ("ssp", "-INT", 130)] {
        let ps = ["--strategy", "ps", "--ps-mode", mode, "--servers", "2"];
        let dir = tmp(&format!("ps-{mode}"));
        let ck = dir.join("ck");
        let metrics = dir.join("m.jsonl");
        let mut child = spawn(
            "2",
            &[
                &ps[..],
                &[
                    "--checkpoint-dir",
                    ck.to_str().unwrap(),
                    "--checkpoint-every",
                    "1000",
                    "--metrics",
                    metrics.to_str().unwrap(),
                ],
            ]
            .concat(),
        );
        wait_for(&metrics, &mut child);
        std::thread::sleep(Duration::from_millis(400));
        signal(&child, sig);
        let (got, err) = finish(child);
        assert_eq!(got, Some(code), "{mode} {sig}: {err}");
        assert!(err.contains("checkpoint saved") && err.contains("--resume"), "{mode}: {err}");
        let latest = std::fs::read_to_string(ck.join("latest")).unwrap();
        let step: u64 = latest.strip_prefix("step-").unwrap().parse().unwrap();
        assert!(step > 0 && step < 150, "{mode}: stopped at {latest}");
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(ck.join(&latest).join("state.json")).unwrap()).unwrap();
        // One update per step in sync mode, one per push otherwise.
        let updates = if mode == "sync" { step } else { 2 * step };
        assert_eq!(state["optimizer_steps"].as_u64(), Some(updates), "{mode}: checkpoint of step {step}");
        let resumed = resume("2", &ck, &dir, &ps);
        if mode == "sync" {
            let base = run_flags("2");
            let flags = [&base.iter().map(String::as_str).collect::<Vec<_>>()[..], &ps[..]].concat();
            let (cfg, pc) = config(&flags, small_mnist());
            let want = parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap().params;
            let e = rel_err(&resumed, &want);
            assert!(e <= 1e-6, "{mode}: relative error {e:e} against the uninterrupted run");
        }
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
    let e = rel_err(&resume("1", &ck, &dir, &[]), &straight("1"));
    assert!(e <= 1e-6, "relative error {e:e}");
}

#[test]
fn a_crash_halfway_through_a_checkpoint_leaves_the_previous_one() {
    let dir = tmp("crash");
    let ck = dir.join("ck");
    let child = spawn(
        "1",
        &["--checkpoint-dir", ck.to_str().unwrap(), "--checkpoint-every", "10", "--inject-checkpoint-crash", "20"],
    );
    let (code, _) = finish(child);
    assert_eq!(code, None, "aborted");
    assert_eq!(std::fs::read_to_string(ck.join("latest")).unwrap(), "step-10");
    assert!(!ck.join("step-20").exists(), "a half checkpoint must not appear under its final name");
    let e = rel_err(&resume("1", &ck, &dir, &[]), &straight("1"));
    assert!(e <= 1e-6, "relative error {e:e}");
}

#[test]
fn a_diverging_run_stops_naming_the_step_and_tensor_and_keeps_the_last_good_checkpoint() {
    let dir = tmp("nonfinite");
    let ck = dir.join("ck");
    let out = convoy(
        &[
            &train_small("error")[..],
            &["--steps", "10", "--threads", "1"],
            &["--lr", "1e30", "--checkpoint-dir", ck.to_str().unwrap(), "--checkpoint-every", "1"],
        ]
        .concat(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not finite at step") && err.contains("first non-finite parameter tensor"), "{err}");
    let latest = std::fs::read_to_string(ck.join("latest")).unwrap();
    let spec = convoy::net::ModelSpec::resolve("lenet").unwrap();
    let net = convoy::net::Net::build(&spec).unwrap();
    let w = convoy::checkpoint::load_weights(&ck.join(&latest).join("model.safetensors"), net.layout()).unwrap();
    assert!(w.iter().all(|v| v.is_finite()), "the kept checkpoint {latest} must be finite");
}

/// `convoy train` on the small MNIST under `sh -c "ulimit -f BLOCKS; trap '' XFSZ; exec ..."`:
/// no file may grow beyond BLOCKS × 512 bytes (POSIX `ulimit -f` units), and a write past it
/// fails with EFBIG instead of killing the process — a disk that fills up, for real.
fn run_limited(blocks: Option<u64>, args: &[&str]) -> (Option<i32>, String) {
    let mut all: Vec<String> =
        std::iter::once(env!("CARGO_BIN_EXE_convoy")).chain(train_small("warn")).map(|s| s.to_string()).collect();
    all.extend(
        [
            "--steps",
            "20",
            "--batch-size",
            "32",
            "--threads",
            "1",
            "--seed",
            "5",
            "--no-epoch-eval",
            "--optimizer",
            "adam",
            "--lr",
            "0.001",
        ]
        .map(String::from),
    );
    all.extend(args.iter().map(|s| s.to_string()));
    let quoted: Vec<String> = all.iter().map(|a| format!("'{a}'")).collect();
    let limit = blocks.map(|b| format!("ulimit -f {b}; trap '' XFSZ; ")).unwrap_or_default();
    let out = Command::new("sh").arg("-c").arg(format!("{limit}exec {}", quoted.join(" "))).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Every file under `dir` with its bytes (hidden temporary folders included).
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.push((p.clone(), Vec::new()));
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_full_disk_keeps_the_previous_checkpoint_and_fails_or_warns() {
    let dir = tmp("diskfull");
    let ck = dir.join("ck");
    let cks = ck.to_str().unwrap();
    // A first run leaves checkpoint step-8 (it dies halfway through step-16's, hook).
    let (code, err) =
        run_limited(None, &["--checkpoint-dir", cks, "--checkpoint-every", "8", "--inject-checkpoint-crash", "16"]);
    assert_eq!(code, None, "{err}");
    for e in std::fs::read_dir(&ck).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_str().unwrap().starts_with(".tmp-") {
            std::fs::remove_dir_all(p).unwrap();
        }
    }
    assert_eq!(std::fs::read_to_string(ck.join("latest")).unwrap(), "step-8");
    let before = snapshot(&ck);
    // LeNet's weights take 6.7 MB and Adam's two moments 13.3 MB: a 10 MB file-size limit lets
    // `--save` and model.safetensors through and stops optimizer.safetensors halfway.
    let weights_len = std::fs::metadata(ck.join("step-8/model.safetensors")).unwrap().len();
    let blocks = 10_000_000 / 512;
    assert!(weights_len < 10_000_000 && 2 * weights_len > 10_000_000, "LeNet changed size: {weights_len} bytes");
    // Default (fail): the run ends at the first checkpoint it cannot write, exit 1, naming the
    // file and the intact previous checkpoint, with a hint; nothing in the directory changed.
    let (code, err) = run_limited(Some(blocks), &["--checkpoint-dir", cks, "--checkpoint-every", "8", "--resume", cks]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("could not write the checkpoint of step 16 into {}", ck.join("step-16").display()))
            && err.contains("optimizer.safetensors"),
        "{err}"
    );
    assert!(
        err.contains("File too large")
            && err.contains(&ck.join("step-8").display().to_string())
            && err.contains("hint"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        snapshot(&ck) == before,
        "a failed checkpoint changed the checkpoint directory (temporary folder left, or files touched)"
    );
    // --checkpoint-errors warn: every due checkpoint (16 and the final 20) is tried and warned
    // about, training runs to the end and its weights are those of an unlimited run.
    let limited = dir.join("limited.safetensors");
    let (code, err) = run_limited(
        Some(blocks),
        &[
            "--checkpoint-dir",
            cks,
            "--checkpoint-every",
            "8",
            "--resume",
            cks,
            "--checkpoint-errors",
            "warn",
            "--save",
            limited.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    for step in [16, 20] {
        assert!(
            err.contains(&format!("could not write the checkpoint of step {step}")) && err.contains("WARN"),
            "step {step}: {err}"
        );
    }
    assert!(snapshot(&ck) == before, "a failed checkpoint changed the checkpoint directory");
    let spec = convoy::net::ModelSpec::resolve("lenet").unwrap();
    let net = convoy::net::Net::build(&spec).unwrap();
    let unlimited = dir.join("unlimited.safetensors");
    let (code, err) = run_limited(None, &["--save", unlimited.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    let (a, b) = (
        convoy::checkpoint::load_weights(&limited, net.layout()).unwrap(),
        convoy::checkpoint::load_weights(&unlimited, net.layout()).unwrap(),
    );
    assert!(rel_err(&a, &b) <= 1e-6, "relative error {:e}", rel_err(&a, &b));
    // The previous checkpoint still loads and resumes.
    let (code, err) = run_limited(None, &["--checkpoint-dir", cks, "--checkpoint-every", "8", "--resume", cks]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(std::fs::read_to_string(ck.join("latest")).unwrap(), "step-20");
}

/// A real full disk: a 24 MiB tmpfs (root only; elsewhere the `ulimit -f` test above covers
/// the same path with EFBIG). One LeNet checkpoint with Adam takes 20 MB, so the second cannot
/// be written: the run ends naming ENOSPC and the intact previous checkpoint, leaves no
/// temporary folder behind, and that checkpoint resumes.
#[test]
fn a_full_tmpfs_keeps_the_previous_checkpoint() {
    struct Mount(PathBuf);
    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let dir = tmp("tmpfs");
    let fs = dir.join("fs");
    std::fs::create_dir_all(&fs).unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"]).arg(&fs).output();
    if !mounted.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root): {mounted:?}");
        return;
    }
    let _mount = Mount(fs.clone());
    let ck = fs.join("ck");
    let cks = ck.to_str().unwrap();
    let (code, err) = run_limited(None, &["--checkpoint-dir", cks, "--checkpoint-every", "8"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("could not write the checkpoint of step 16") && err.contains("No space left on device"),
        "{err}"
    );
    assert!(
        err.contains(&ck.join("step-8").display().to_string()) && err.contains("hint") && !err.contains("panicked"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(ck.join("latest")).unwrap(), "step-8");
    let names: Vec<String> =
        std::fs::read_dir(&ck).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.starts_with(".tmp")), "a temporary folder was left on the full disk: {names:?}");
    // The kept checkpoint is whole: it resumes (from a copy on a disk with room) to the end.
    let room = dir.join("room");
    std::fs::create_dir_all(room.join("step-8")).unwrap();
    for f in std::fs::read_dir(ck.join("step-8")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), room.join("step-8").join(f.file_name())).unwrap();
    }
    let (code, err) = run_limited(None, &["--resume", room.join("step-8").to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn an_unwritable_checkpoint_dir_is_refused_before_training() {
    let dir = tmp("unwritable");
    let file = dir.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let ck = file.join("ck");
    let (code, err) = run_limited(None, &["--checkpoint-dir", ck.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--checkpoint-dir") && err.contains("a-file/ck") && err.contains("hint"), "{err}");
}

/// Soak: 1000 steps with 4 deterministic workers and a checkpoint every 50 steps, killed with
/// SIGKILL at 5 seeded points and resumed from `latest` each time, ends bitwise equal to the
/// uninterrupted run.
#[test]
#[cfg_attr(debug_assertions, ignore = "release suite: 1000 steps and 6 runs")]
fn soak_1000_steps_killed_5_times_ends_bitwise_equal() {
    let dir = tmp("soak");
    let ck = dir.join("ck");
    let flags = |extra: &[&str]| -> Vec<String> {
        train_small("error")
            .iter()
            .chain(&["--no-epoch-eval"])
            .chain(
                [
                    "--steps",
                    "1000",
                    "--batch-size",
                    "32",
                    "--threads",
                    "1",
                    "--seed",
                    "9",
                    "--workers",
                    "4",
                    "--deterministic",
                ]
                .iter(),
            )
            .chain(["--checkpoint-dir", ck.to_str().unwrap(), "--checkpoint-every", "50", "--keep", "2"].iter())
            .chain(extra.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let convoy =
        |args: Vec<String>| convoy_cmd().args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    // Seeded kill points: after the checkpoints of these steps appear.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut points: Vec<u64> = (0..5)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            50 * (1 + state % 19)
        })
        .collect();
    points.sort();
    points.dedup();
    for p in &points {
        let resume = ck.join("latest").exists();
        let extra: Vec<&str> = if resume { vec!["--resume", ck.to_str().unwrap()] } else { vec![] };
        let mut child = convoy(flags(&extra));
        wait_for(&ck.join(format!("step-{p}")), &mut child);
        Command::new("kill").args(["-9", &child.id().to_string()]).status().unwrap();
        let _ = child.wait();
    }
    let weights = dir.join("final.safetensors");
    let child = convoy(flags(&["--resume", ck.to_str().unwrap(), "--save", weights.to_str().unwrap()]));
    let (code, err) = finish(child);
    assert_eq!(code, Some(0), "{err}");
    let net = convoy::net::Net::build(&convoy::net::ModelSpec::resolve("lenet").unwrap()).unwrap();
    let got = convoy::checkpoint::load_weights(&weights, net.layout()).unwrap();
    // The uninterrupted run, in process.
    let straight_flags: Vec<String> = [
        "--steps",
        "1000",
        "--batch-size",
        "32",
        "--threads",
        "1",
        "--seed",
        "9",
        "--workers",
        "4",
        "--deterministic",
        "--no-epoch-eval",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let args: Vec<&str> = straight_flags.iter().map(String::as_str).collect();
    let (cfg, pc) = config(&args, small_mnist());
    let want = parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap().params;
    assert!(
        got == want,
        "killed at steps {points:?} and resumed: differs from the uninterrupted run (rel err {:.3e})",
        rel_err(&got, &want)
    );
}
