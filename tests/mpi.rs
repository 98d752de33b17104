//! The MPI transport, for real: `convoy train` under `mpirun` (Open MPI, as root:
//! `--allow-run-as-root --oversubscribe`) computes what one process computes on the same global
//! batch, for every layout (processes, processes × threads, parameter server); `--deterministic`
//! is bitwise equal to the threads transport; a rank that fails, dies or hangs ends the job in
//! bounded time, named. Needs the `mpi` feature (scripts/test.sh builds with it).
#![cfg(feature = "mpi")]

mod common;

use common::{
    config, convoy, mnist, model_file, reference, rel_err, small_mnist, tmp, train_small, wait_or_kill, TEN_STEPS,
};
use convoy::parallel;
use convoy::train::events::Recorder;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// lr 0.01 (tests/model_parallel.rs says why such runs flip ReLUs at higher rates): at 0.05 a
/// tensor split of LeNet over 3 processes flipped one at step 2 and ended 4e-4 away after ten
/// steps; at 0.02 the residual model with batch norm ended 5e-5 away, split two ways (data over
/// 2 processes, tensor over 2) alike; at 0.01 both stay near 2e-8.
const SGD: [&str; 6] = ["--optimizer", "sgd", "--momentum", "0.9", "--lr", "0.01"];
const ADAM: [&str; 4] = ["--optimizer", "adam", "--lr", "0.0001"];

/// What a finished job printed.
struct Job {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    seconds: f64,
}

/// `mpirun -np NP convoy ARGS`, killed after `deadline`.
fn mpirun(np: usize, args: &[&str], deadline: Duration) -> Job {
    let mut child = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-np", &np.to_string(), env!("CARGO_BIN_EXE_convoy")])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mpirun not found; hint: apt-get install -y openmpi-bin (scripts/test.sh does)");
    let t = Instant::now();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let o = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut e = Some(e);
    let code = wait_or_kill(&mut child, t, deadline, || {
        format!("mpirun -np {np} {args:?} did not end within {deadline:?}:\n{}", e.take().unwrap().join().unwrap())
    });
    Job { code, stdout: o.join().unwrap(), stderr: e.unwrap().join().unwrap(), seconds: t.elapsed().as_secs_f64() }
}

/// `convoy train` flags on the small MNIST, plus `--save DIR/weights.safetensors`.
fn train_args(extra: &[&str], dir: &Path) -> Vec<String> {
    let save = dir.join("weights.safetensors");
    train_small("warn")
        .iter()
        .chain(&["--no-epoch-eval", "--save", save.to_str().unwrap()])
        .chain(TEN_STEPS.iter())
        .chain(extra.iter())
        .map(|s| s.to_string())
        .collect()
}

/// Trains under mpirun; returns the saved parameters.
fn mpi_params(np: usize, extra: &[&str]) -> Vec<f32> {
    mpi_params_of("lenet", np, extra)
}

/// `mpi_params` for the model `model` (zoo name or file, also passed as --model unless "lenet").
fn mpi_params_of(model: &str, np: usize, extra: &[&str]) -> Vec<f32> {
    let dir = tmp(&format!("np{np}-{}", extra.join("").replace(['-', '.'], "")));
    let args = train_args(extra, &dir);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let job = mpirun(np, &args, Duration::from_secs(120));
    assert_eq!(job.code, Some(0), "mpirun -np {np} {extra:?} failed:\n{}", job.stderr);
    assert_eq!(job.stdout.matches("done:").count(), 1, "only the lead process reports:\n{}", job.stdout);
    let net = convoy::net::Net::build(&convoy::net::ModelSpec::resolve(model).unwrap()).unwrap();
    convoy::checkpoint::load_weights(&dir.join("weights.safetensors"), net.layout()).unwrap()
}

/// SyncBatchNorm over MPI (processes, and processes × threads) equals one process, running
/// statistics included.
#[test]
fn sync_batch_norm_over_mpi_equals_single_process() {
    let model = model_file("mini-res.toml", common::RESIDUAL);
    let m = model.as_str();
    let want = reference(&[&SGD[..], &["--model", m]].concat());
    for (np, workers) in [(2, "1"), (2, "2")] {
        let got = mpi_params_of(m, np, &[&SGD[..], &["--model", m, "--workers", workers]].concat());
        let e = rel_err(&got, &want);
        eprintln!("sync batch norm over mpi np {np} × {workers}: rel err {e:.2e}");
        assert!(e <= 1e-5, "np {np} × {workers}: relative error {e:.3e}");
    }
}

#[test]
fn allreduce_over_mpi_equals_single_process_sgd_for_2_3_4_processes() {
    let want = reference(&SGD);
    for np in [2, 3, 4] {
        let got = mpi_params(np, &SGD);
        let e = rel_err(&got, &want);
        eprintln!("mpi allreduce np {np}: rel err {e:.2e}");
        assert!(e <= 1e-5, "np {np}: relative error {e:.3e}");
    }
}

#[test]
fn allreduce_over_mpi_equals_single_process_adam_and_our_ring_and_tree() {
    let want = reference(&ADAM);
    let got = mpi_params(3, &ADAM);
    assert!(rel_err(&got, &want) <= 1e-5, "adam np 3: {:.3e}", rel_err(&got, &want));
    // Our algorithms over MPI point-to-point (buffered sends, probes) instead of MPI's all-reduce.
    let want = reference(&SGD);
    for alg in ["ring", "tree", "naive"] {
        let got = mpi_params(3, &[&SGD[..], &["--allreduce", alg, "--no-overlap"]].concat());
        assert!(rel_err(&got, &want) <= 1e-5, "{alg} np 3: {:.3e}", rel_err(&got, &want));
    }
}

#[test]
fn deterministic_over_mpi_is_bitwise_equal_to_threads_including_hybrid() {
    let det = [&SGD[..], &["--deterministic"]].concat();
    let threads = reference(&[&det[..], &["--workers", "4"]].concat());
    assert_eq!(threads, reference(&det), "threads: 4 workers vs 1");
    for (np, workers) in [(2, "1"), (4, "1"), (2, "2")] {
        let got = mpi_params(np, &[&det[..], &["--workers", workers]].concat());
        assert!(
            got == threads,
            "np {np} × {workers} threads differs from threads: rel err {:.3e}",
            rel_err(&got, &threads)
        );
    }
}

#[test]
fn hybrid_2_processes_by_2_threads_equals_4_threads() {
    for opt in [&SGD[..], &ADAM[..]] {
        let want = reference(&[opt, &["--workers", "4"]].concat());
        let got = mpi_params(2, &[opt, &["--workers", "2"]].concat());
        let e = rel_err(&got, &want);
        eprintln!("hybrid 2×2 {opt:?}: rel err {e:.2e}");
        assert!(e <= 1e-5, "{opt:?}: relative error {e:.3e}");
    }
}

#[test]
fn sync_parameter_server_over_mpi_equals_single_worker() {
    let want = reference(&SGD);
    for (np, servers) in [(3, "1"), (4, "2")] {
        let got = mpi_params(np, &[&SGD[..], &["--strategy", "ps", "--servers", servers]].concat());
        let e = rel_err(&got, &want);
        assert!(e <= 1e-5, "ps np {np} servers {servers}: relative error {e:.3e}");
    }
}

#[test]
fn only_the_lead_process_writes_metrics() {
    let dir = tmp("metrics");
    let metrics = dir.join("m.jsonl");
    let mut args = train_args(&SGD, &dir);
    args.extend(["--metrics".to_string(), metrics.to_str().unwrap().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let job = mpirun(3, &args, Duration::from_secs(120));
    assert_eq!(job.code, Some(0), "{}", job.stderr);
    let text = std::fs::read_to_string(&metrics).unwrap();
    let steps = text.lines().filter(|l| l.starts_with("{\"event\":\"step\"")).count();
    assert_eq!(steps, 10, "one line per step, from one process:\n{text}");
}

/// A job long enough to be interrupted.
fn long_args(extra: &[&str]) -> Vec<String> {
    train_small("warn")
        .iter()
        .chain(&["--no-epoch-eval", "--steps", "100000", "--batch-size", "32", "--threads", "1"])
        .chain(extra.iter())
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn a_failing_rank_ends_the_job_naming_it() {
    let args = long_args(&["--inject-failure", "1:5"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let job = mpirun(3, &args, Duration::from_secs(60));
    assert_ne!(job.code, Some(0));
    assert!(job.stderr.contains("rank 1 failed") && job.stderr.contains("step 5"), "{}", job.stderr);
}

#[test]
fn a_hung_rank_is_named_by_the_stall_census_and_the_job_ends() {
    // With --stall-abort: at the first report, exit 3 — the hung rank's own watchdog (it is
    // stuck outside communication) or the census of a rank waiting for it, whichever is first.
    let args = long_args(&["--inject-failure", "2:5:hang", "--stall-timeout", "2", "--stall-abort"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let job = mpirun(3, &args, Duration::from_secs(60));
    assert_eq!(job.code, Some(3), "{}", job.stderr);
    let named = job.stderr.contains("rank 2 did not arrive") || job.stderr.contains("worker 2 in step 5 for");
    assert!(job.stderr.contains("stall") && named, "{}", job.stderr);
    assert!(
        job.stderr.contains("rank 2: not in communication") || job.stderr.contains("likely stuck: worker 2"),
        "{}",
        job.stderr
    );
    assert!(job.seconds < 25.0, "took {:.1}s", job.seconds);
    // Without: the census is a warning at 2 s, and the job ends after 5 × 2 s (exit 1).
    let job = mpirun(3, &args[..args.len() - 1], Duration::from_secs(90));
    assert_ne!(job.code, Some(0));
    assert!(job.stderr.contains("WARN") && job.stderr.contains("the job goes on"), "{}", job.stderr);
    assert!(job.stderr.contains("rank 2 did not arrive"), "{}", job.stderr);
    assert!(job.seconds > 10.0, "ended after {:.1}s, before the limit", job.seconds);
}

/// `--timeline` under MPI: the lead gathers every process's phases into one trace, one track
/// pair per worker of every process, on one clock.
#[test]
fn the_timeline_of_an_mpi_job_has_every_process() {
    let dir = tmp("timeline");
    for (np, extra) in
        [(2usize, vec![]), (2, vec!["--workers", "2"]), (2, vec!["--strategy", "pipeline", "--micro-batches", "2"])]
    {
        let trace = dir.join(format!("trace-{np}-{}.json", extra.join("")));
        let mut a = vec![
            "--log-level",
            "warn",
            "train",
            "--no-progress",
            "--no-epoch-eval",
            "--data",
            small_mnist().to_str().unwrap(),
            "--steps",
            "4",
            "--threads",
            "1",
        ];
        a.extend(["--timeline", trace.to_str().unwrap()]);
        a.extend(&extra);
        let job = mpirun(np, &a, Duration::from_secs(120));
        assert_eq!(job.code, Some(0), "{extra:?}: {}", job.stderr);
        let t: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
        let spans: Vec<&serde_json::Value> =
            t["traceEvents"].as_array().unwrap().iter().filter(|e| e["ph"] == "X").collect();
        let workers = if extra.contains(&"--workers") { 4 } else { 2 };
        let mut pids: Vec<u64> = spans.iter().map(|e| e["pid"].as_u64().unwrap()).collect();
        pids.sort();
        pids.dedup();
        assert_eq!(pids, (0..workers).collect::<Vec<u64>>(), "{extra:?}: every worker of every process");
        // On one clock: every worker's steps overlap in time with worker 0's run.
        let range = |p: u64| {
            let s: Vec<f64> = spans.iter().filter(|e| e["pid"] == p).map(|e| e["ts"].as_f64().unwrap()).collect();
            (s.iter().cloned().fold(f64::INFINITY, f64::min), s.iter().cloned().fold(0.0, f64::max))
        };
        let (a0, a1) = range(0);
        for p in 1..workers {
            let (b0, b1) = range(p);
            assert!(
                b0 < a1 && a0 < b1,
                "{extra:?}: worker {p} [{b0}, {b1}] and worker 0 [{a0}, {a1}] µs are on different clocks"
            );
        }
        for p in 0..workers {
            for tid in [0u64, 1] {
                let mut s: Vec<(f64, f64)> = spans
                    .iter()
                    .filter(|e| e["pid"] == p && e["tid"] == tid)
                    .map(|e| (e["ts"].as_f64().unwrap(), e["dur"].as_f64().unwrap()))
                    .collect();
                s.sort_by(|a, b| a.0.total_cmp(&b.0));
                assert!(
                    s.windows(2).all(|w| w[1].0 >= w[0].0 + w[0].1 - 1e-3),
                    "{extra:?}: overlap on worker {p} track {tid}"
                );
            }
        }
    }
}

/// The PIDs of the ranks of the job started by `mpirun_pid` (its children), by rank.
fn rank_pids(mpirun_pid: u32, np: usize) -> Vec<u32> {
    let mut pids = vec![0; np];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // Field 4 (after the parenthesised name) is the parent.
        let ppid =
            stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)).and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(mpirun_pid) {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        for var in env.split(|b| *b == 0) {
            if let Some(r) = String::from_utf8_lossy(var).strip_prefix("OMPI_COMM_WORLD_RANK=") {
                if let Ok(r) = r.parse::<usize>() {
                    if r < np {
                        pids[r] = pid;
                    }
                }
            }
        }
    }
    pids
}

/// Starts `mpirun -np 3 convoy ARGS`, waits until its ranks run, lets training start for 2 s;
/// returns the job and the ranks' PIDs.
fn start_job(args: &[String]) -> (std::process::Child, Vec<u32>) {
    let child = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-np", "3", env!("CARGO_BIN_EXE_convoy")])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let pids = loop {
        let p = rank_pids(child.id(), 3);
        if p.iter().all(|&p| p != 0) {
            break p;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "the ranks did not start: {p:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_secs(2));
    (child, pids)
}

/// Sends `signal` to `pid`, then waits at most `bound` for the job to end; returns its exit code.
fn signal_and_wait(child: &mut std::process::Child, pid: u32, signal: &str, bound: Duration) -> Option<i32> {
    assert!(Command::new("kill").args([signal, &pid.to_string()]).status().unwrap().success());
    wait_or_kill(child, Instant::now(), bound, || {
        format!("the job did not end within {bound:?} of {signal} to one rank")
    })
}

/// The parameter server over MPI (rank 0 the server, ranks 1 and 2 the workers), asynchronous:
/// SIGTERM to one worker's process reaches the server in that worker's next push; the server
/// fixes the stop step, every worker stops after it, one checkpoint holds exactly that many
/// global batches, and the job ends.
#[test]
fn a_signal_to_one_parameter_server_worker_stops_the_job_with_a_checkpoint() {
    let dir = tmp("ps-signal");
    let ck = dir.join("ck");
    let (mut child, pids) = start_job(&long_args(&[
        "--strategy",
        "ps",
        "--ps-mode",
        "async",
        "--checkpoint-dir",
        ck.to_str().unwrap(),
        "--checkpoint-every",
        "100000",
    ]));
    let code = signal_and_wait(&mut child, pids[2], "-TERM", Duration::from_secs(30));
    assert_ne!(code, Some(0));
    let latest = std::fs::read_to_string(ck.join("latest")).expect("a checkpoint was written");
    let step: u64 = latest.strip_prefix("step-").unwrap().parse().unwrap();
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck.join(&latest).join("state.json")).unwrap()).unwrap();
    assert_eq!(state["optimizer_steps"].as_u64(), Some(2 * step), "{latest}: one update per push of 2 workers");
    let eval = convoy(&["eval", "--data", small_mnist().to_str().unwrap(), "--weights", ck.to_str().unwrap()]);
    assert!(eval.status.success(), "{latest}: {}", String::from_utf8_lossy(&eval.stderr));
}

#[test]
fn a_killed_rank_ends_the_job_within_10_seconds_naming_it() {
    let (mut child, pids) = start_job(&long_args(&[]));
    // Kill rank 1 for real.
    let code = signal_and_wait(&mut child, pids[1], "-9", Duration::from_secs(10));
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_ne!(code, Some(0));
    assert!(err.contains("rank 1"), "the message names the lost rank:\n{err}");
    for (r, pid) in pids.iter().enumerate() {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z"),
            "rank {r} still runs"
        );
    }
}

#[test]
fn bad_mpi_layouts_are_usage_errors() {
    // PS needs more processes than servers, and one worker per process.
    for (np, extra) in
        [(2, vec!["--strategy", "ps", "--servers", "2"]), (3, vec!["--strategy", "ps", "--workers", "2"])]
    {
        let mut args = train_args(&SGD, &tmp("bad"));
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let job = mpirun(np, &args, Duration::from_secs(60));
        assert_eq!(job.code, Some(2), "{extra:?}: {}", job.stderr);
        assert!(job.stderr.contains("hint"), "{}", job.stderr);
    }
}

/// The asynchronous parameter server over MPI (1 server, 3 workers) trains LeNet on all of MNIST.
#[test]
#[cfg_attr(debug_assertions, ignore = "release suite: trains on all of MNIST")]
fn async_parameter_server_over_mpi_reaches_98_5_percent() {
    let data = mnist();
    let args = [
        "--log-level",
        "warn",
        "train",
        "--no-progress",
        "--no-epoch-eval",
        "--data",
        data.to_str().unwrap(),
        "--threads",
        "1",
        "--strategy",
        "ps",
        "--ps-mode",
        "async",
        "--servers",
        "1",
    ];
    let job = mpirun(4, &args, Duration::from_secs(600));
    assert_eq!(job.code, Some(0), "{}", job.stderr);
    let acc: f64 = job
        .stdout
        .split("test accuracy ")
        .nth(1)
        .and_then(|s| s.split('%').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no accuracy in:\n{}", job.stdout));
    eprintln!("async PS over MPI: {acc:.2}% in {:.0}s", job.seconds);
    assert!(acc >= 98.5, "test accuracy {acc}% < 98.5%");
}

/// A checkpoint written by 2 MPI processes (sharded optimizer state gathered across them)
/// resumes in one process, and one written by one process resumes under MPI, each giving the
/// parameters of the uninterrupted single-process run.
#[test]
fn checkpoints_move_between_mpi_and_a_single_process() {
    let want = reference(&SGD);
    let dir = tmp("ckpt");
    let ck = dir.join("ck");
    let mut args = train_args(&SGD, &dir);
    args.extend(["--checkpoint-dir", ck.to_str().unwrap(), "--checkpoint-every", "5"].map(String::from));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let job = mpirun(2, &a, Duration::from_secs(120));
    assert_eq!(job.code, Some(0), "{}", job.stderr);
    // MPI → one process.
    let (mut cfg, pc) = config(&[&TEN_STEPS[..], &SGD[..]].concat(), small_mnist());
    cfg.resume = Some(ck.join("step-5"));
    let got = parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap().params;
    assert!(rel_err(&got, &want) <= 1e-5, "mpi → 1: {:.3e}", rel_err(&got, &want));
    // One process → MPI with 3 processes.
    let single = tmp("ckpt1");
    let ck1 = single.join("ck");
    let (cfg, pc) = config(
        &[&TEN_STEPS[..], &SGD[..], &["--checkpoint-dir", ck1.to_str().unwrap(), "--checkpoint-every", "5"]].concat(),
        small_mnist(),
    );
    parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap();
    let got = mpi_params(3, &[&SGD[..], &["--resume", ck1.join("step-5").to_str().unwrap()]].concat());
    assert!(rel_err(&got, &want) <= 1e-5, "1 → mpi: {:.3e}", rel_err(&got, &want));
}

/// `--on-nonfinite skip` over MPI: the processes agree to skip the step whose first image is NaN
/// (only rank 0's shard holds it) and end with the parameters of one process doing the same.
#[test]
fn nonfinite_steps_are_skipped_alike_over_mpi() {
    let flags = [&SGD[..], &["--on-nonfinite", "skip", "--inject-nonfinite", "4"]].concat();
    let want = reference(&flags);
    assert!(want.iter().all(|v| v.is_finite()));
    for (np, extra) in [(2, &[][..]), (2, &["--strategy", "pipeline", "--micro-batches", "2"][..])] {
        let got = mpi_params(np, &[&flags[..], extra].concat());
        assert!(rel_err(&got, &want) <= 1e-5, "{extra:?}: {:.3e}", rel_err(&got, &want));
    }
}

/// Model parallelism over MPI (one stage or slice per process) equals one process; the tensor
/// split also of a residual block.
#[test]
fn pipeline_hybrid_and_tensor_over_mpi_equal_single_process() {
    let want = reference(&SGD);
    for schedule in ["gpipe", "1f1b"] {
        let got = mpi_params(
            3,
            &[
                &SGD[..],
                &["--strategy", "pipeline", "--stages", "3", "--micro-batches", "4", "--pipeline-schedule", schedule],
            ]
            .concat(),
        );
        assert!(rel_err(&got, &want) <= 1e-5, "{schedule}: {:.3e}", rel_err(&got, &want));
    }
    let got = mpi_params(
        4,
        &[&SGD[..], &["--strategy", "hybrid", "--dp", "2", "--pp", "2", "--micro-batches", "4"]].concat(),
    );
    assert!(rel_err(&got, &want) <= 1e-5, "dp2 × pp2: {:.3e}", rel_err(&got, &want));
    let got = mpi_params(3, &[&SGD[..], &["--strategy", "tensor", "--mp", "3"]].concat());
    assert!(rel_err(&got, &want) <= 1e-5, "tensor mp 3: {:.3e}", rel_err(&got, &want));
    // A residual block (a DAG) with batch norms, split over 2 processes.
    let model = model_file("mini-res.toml", common::RESIDUAL);
    let m = model.as_str();
    let want_res = reference(&[&SGD[..], &["--model", m]].concat());
    let got = mpi_params_of(m, 2, &[&SGD[..], &["--model", m, "--strategy", "tensor", "--mp", "2"]].concat());
    assert!(rel_err(&got, &want_res) <= 1e-5, "tensor mp 2, residual: {:.3e}", rel_err(&got, &want_res));
    let got = mpi_params(4, &[&SGD[..], &["--strategy", "hybrid", "--dp", "2", "--mp", "2"]].concat());
    assert!(rel_err(&got, &want) <= 1e-5, "hybrid dp2 × mp2: {:.3e}", rel_err(&got, &want));
}

/// SIGTERM to one process only: the processes agree (a one-value all-reduce per step) to stop
/// after the same step, write one checkpoint together and end — no rank is left waiting.
#[test]
fn a_signal_to_one_rank_stops_every_rank_after_the_same_step_with_a_checkpoint() {
    let dir = tmp("signal");
    let ck = dir.join("ck");
    let (mut child, pids) = start_job(&long_args(&[
        "--checkpoint-dir",
        ck.to_str().unwrap(),
        "--checkpoint-every",
        "100000",
        "--stall-timeout",
        "60",
    ]));
    signal_and_wait(&mut child, pids[2], "-TERM", Duration::from_secs(30));
    let latest = std::fs::read_to_string(ck.join("latest")).expect("a checkpoint was written");
    let eval = convoy(&["eval", "--data", small_mnist().to_str().unwrap(), "--weights", ck.to_str().unwrap()]);
    assert!(eval.status.success(), "{latest}: {}", String::from_utf8_lossy(&eval.stderr));
}

/// `convoy plan calibrate --comm mpi` measures the link between processes 0 and 1 (3 processes:
/// the third only waits) and a parameter server's round through process 0 into the profile,
/// and `convoy plan --link profile --latency profile` predicts with it.
#[test]
fn calibrate_over_mpi_measures_the_link_for_the_plan() {
    let dir = tmp("calibrate");
    let profile = dir.join("p.json");
    let job = mpirun(
        3,
        &[
            "--log-level",
            "warn",
            "plan",
            "calibrate",
            "--comm",
            "mpi",
            "--model",
            "lenet",
            "--batch",
            "8",
            "--reps",
            "2",
            "--threads",
            "1",
            "--out",
            profile.to_str().unwrap(),
        ],
        Duration::from_secs(300),
    );
    assert_eq!(job.code, Some(0), "{}", job.stderr);
    assert_eq!(job.stdout.matches("profile of lenet").count(), 1, "rank 0 alone writes: {}", job.stdout);
    let p: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&profile).unwrap()).unwrap();
    let (alpha, beta) = (p["mpi_link"]["alpha"].as_f64().unwrap(), p["mpi_link"]["beta"].as_f64().unwrap());
    // Two processes of one machine: at least 10 MB/s and under 1 s of latency, whatever the load.
    assert!((0.0..1.0).contains(&alpha) && beta > 1e7 && beta.is_finite(), "α {alpha} β {beta}");
    // The parameter server's round through process 0 (2 senders in turn), as fast a link.
    let server = p["mpi_link"]["server_beta"].as_f64().unwrap();
    assert!(server > 1e7 && server.is_finite(), "server β {server}");
    let out = convoy(&[
        "plan",
        "--model",
        "lenet",
        "--profile",
        profile.to_str().unwrap(),
        "--link",
        "profile",
        "--latency",
        "profile",
        "--nodes",
        "2",
        "--strategies",
        "dp",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let dp = &v[0]["predictions"][0];
    // The exposed communication of 2 nodes is at most the all-reduce of every gradient at (α, β).
    let bytes =
        4.0 * p["model"]["layers"].as_array().unwrap().iter().map(|l| l["params"].as_f64().unwrap()).sum::<f64>();
    assert!(dp["exposed_comm_s"].as_f64().unwrap() <= 2.0 * alpha * 3.0 + bytes / beta * 1.001, "{dp}");
}
