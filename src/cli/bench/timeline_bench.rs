//! `convoy bench timeline`: the step-time overhead of the event stream's outputs — the metrics
//! JSONL file and the Chrome-trace timeline (`--metrics`, `--timeline`) — on real MNIST training.
//! Runs without and with them alternate in this process (`--pairs` times, the order swapped
//! every pair so that a drifting machine favours neither); each run's mean step time is measured
//! between its first and last step events, and the median of the per-pair ratios is reported
//! with their spread. "Off" still emits events (the training loop always does) to a sink that
//! only notes the steps; "on" also times every phase and writes both files.

use crate::cli::{Cli, Command};
use crate::train::events::{Event, EventSink, Fanout, JsonlSink};
use crate::train::timeline::ChromeTraceSink;
use clap::{Args, Parser};
use std::path::PathBuf;
use std::time::Instant;

/// Flags of `convoy bench timeline`.
#[derive(Debug, Args, Clone)]
pub struct TimelineBenchArgs {
    /// Built-in model name.
    #[arg(long, default_value = "lenet")]
    pub model: String,
    /// MNIST-format data.
    #[arg(long, default_value = "data/mnist")]
    pub data: PathBuf,
    /// Data-parallel workers (threads).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Intra-op threads per worker.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Steps of each run.
    #[arg(long, default_value_t = 150)]
    pub steps: u64,
    /// Global batch.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Pairs of runs (off, on).
    #[arg(long, default_value_t = 5)]
    pub pairs: usize,
}

/// The result line.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TimelineBenchResult {
    /// Always "timeline_overhead".
    pub bench: &'static str,
    /// Model name.
    pub model: String,
    /// Workers.
    pub workers: usize,
    /// Steps of each run.
    pub steps: u64,
    /// Median mean step time without metrics file and timeline, ms.
    pub step_ms_off: f64,
    /// Median mean step time with both, ms.
    pub step_ms_on: f64,
    /// Median over pairs of on / off (1.02 = 2 % slower).
    pub ratio: f64,
    /// Smallest and largest per-pair ratio.
    pub ratio_min: f64,
    /// Largest per-pair ratio.
    pub ratio_max: f64,
    /// Every pair's mean step times (off, on), ms.
    pub runs_ms: Vec<(f64, f64)>,
}

/// Notes when each step event arrives.
#[derive(Default)]
struct StepTimes(Vec<Instant>);

impl EventSink for StepTimes {
    fn on_event(&mut self, e: &Event) {
        if matches!(e, Event::Step { .. }) {
            self.0.push(Instant::now());
        }
    }
}

/// The sinks of a run with the outputs on: the metrics file, the trace, and the step times.
struct On<'a> {
    files: Fanout,
    times: &'a mut StepTimes,
}

impl EventSink for On<'_> {
    fn on_event(&mut self, e: &Event) {
        self.files.on_event(e);
        self.times.on_event(e);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs the benchmark.
pub fn run(args: &TimelineBenchArgs) -> anyhow::Result<TimelineBenchResult> {
    if args.pairs == 0 || args.steps < 2 || args.workers == 0 || args.threads == 0 {
        anyhow::bail!(crate::cli::ConfigError::Invalid {
            flag: "pairs/steps/workers/threads",
            msg: "pairs, workers and threads must be at least 1, steps at least 2".into()
        });
    }
    let dir = std::env::temp_dir().join(format!("convoy-bench-timeline-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (steps, workers, threads, batch) =
        (args.steps.to_string(), args.workers.to_string(), args.threads.to_string(), args.batch_size.to_string());
    let data = args.data.to_string_lossy().into_owned();
    let flags = [
        "convoy",
        "train",
        "--model",
        &args.model,
        "--data",
        &data,
        "--steps",
        &steps,
        "--workers",
        &workers,
        "--threads",
        &threads,
        "--batch-size",
        &batch,
        "--no-epoch-eval",
    ];
    let Command::Train(t) = Cli::try_parse_from(flags)?.command else { unreachable!("parsed a train command") };
    let (cfg, pc) = (t.to_config()?, t.parallel.to_config()?);
    let mut runs = Vec::new();
    for pair in 0..args.pairs {
        let mut ms = [0.0; 2];
        let order = if pair % 2 == 0 { [false, true] } else { [true, false] };
        for on in order {
            let mut times = StepTimes::default();
            let mut cfg = cfg.clone();
            cfg.timeline = on;
            if on {
                let mut files = Fanout::default();
                files.push(Box::new(JsonlSink::create(&dir.join("metrics.jsonl"))?));
                files.push(Box::new(ChromeTraceSink::create(&dir.join("trace.json"))?));
                crate::parallel::run(&cfg, &pc, &mut On { files, times: &mut times })?;
            } else {
                crate::parallel::run(&cfg, &pc, &mut times)?;
            }
            let n = times.0.len();
            anyhow::ensure!(n as u64 == args.steps, "expected {} step events, got {n}", args.steps);
            ms[on as usize] = (times.0[n - 1] - times.0[0]).as_secs_f64() / (n - 1) as f64 * 1e3;
        }
        tracing::info!(pair, off_ms = ms[0], on_ms = ms[1], ratio = ms[1] / ms[0], "timeline overhead pair");
        runs.push((ms[0], ms[1]));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let ratios: Vec<f64> = runs.iter().map(|r| r.1 / r.0).collect();
    Ok(TimelineBenchResult {
        bench: "timeline_overhead",
        model: args.model.clone(),
        workers: args.workers,
        steps: args.steps,
        step_ms_off: median(runs.iter().map(|r| r.0).collect()),
        step_ms_on: median(runs.iter().map(|r| r.1).collect()),
        ratio: median(ratios.clone()),
        ratio_min: ratios.iter().cloned().fold(f64::INFINITY, f64::min),
        ratio_max: ratios.iter().cloned().fold(0.0, f64::max),
        runs_ms: runs,
    })
}
