//! `convoy bench train`: data-parallel training throughput on MNIST, and the scaling efficiency
//! against one worker measured in the same run: efficiency = throughput(W) / (W × throughput(1)),
//! with one intra-op thread per worker. Throughput is the median over the timed steps of global
//! batch / step wall time on rank 0 (after `--warmup` steps), so start-up and evaluation are out.

use crate::cli::{Cli, Command};
use crate::parallel;
use crate::train::events::{Event, Recorder};
use clap::{Args, Parser};
use std::path::PathBuf;

/// Flags of `convoy bench train`.
#[derive(Debug, Args, Clone)]
pub struct TrainBenchArgs {
    /// Model.
    #[arg(long, default_value = "lenet")]
    pub model: String,
    /// Data directory.
    #[arg(long, default_value = "data/mnist")]
    pub data: PathBuf,
    /// Global batch size.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Worker counts to measure (one is always measured, as the baseline).
    #[arg(long, value_delimiter = ',', default_value = "2")]
    pub workers: Vec<usize>,
    /// Strategies: allreduce (overlap on and off), ps (sync).
    #[arg(long, value_delimiter = ',', default_value = "allreduce,ps")]
    pub strategy: Vec<String>,
    /// Intra-op threads per worker.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 60)]
    pub steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
}

/// One measurement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainBenchResult {
    /// "train".
    pub bench: &'static str,
    /// Strategy and variant.
    pub strategy: String,
    /// Workers.
    pub workers: usize,
    /// Threads per worker.
    pub threads: usize,
    /// Global batch.
    pub batch: usize,
    /// Median images/s.
    pub images_per_s: f64,
    /// images_per_s / (workers × the one-worker images_per_s of this run).
    pub efficiency: f64,
    /// Mean seconds per step in communication (rank 0).
    pub comm_ms: f64,
    /// Mean seconds per step waiting for communication after computing (rank 0).
    pub comm_wait_ms: f64,
}

/// Median global images/s and mean comm/comm-wait ms per step of a run given as `convoy train` flags.
fn measure(args: &TrainBenchArgs, flags: &[String]) -> anyhow::Result<(f64, f64, f64)> {
    let steps = (args.warmup + args.steps).to_string();
    let (batch, threads) = (args.batch.to_string(), args.threads.to_string());
    let data = args.data.to_string_lossy().to_string();
    let mut argv: Vec<&str> =
        vec!["convoy", "train", "--model", &args.model, "--data", &data, "--steps", &steps, "--batch-size", &batch];
    argv.extend(["--threads", &threads, "--no-epoch-eval", "--no-progress"]);
    argv.extend(flags.iter().map(String::as_str));
    let Command::Train(t) = Cli::try_parse_from(argv)?.command else { unreachable!("parsed a train command") };
    let (cfg, pc) = (t.to_config()?, t.parallel.to_config()?);
    let mut rec = Recorder::default();
    parallel::run(&cfg, &pc, &mut rec)?;
    let mut ips = Vec::new();
    let (mut comm, mut wait) = (0.0, 0.0);
    for e in &rec.events {
        if let Event::Step { step, images_per_sec, comm_s, comm_wait_s, .. } = e {
            if *step as usize > args.warmup {
                ips.push(*images_per_sec);
                comm += comm_s;
                wait += comm_wait_s;
            }
        }
    }
    anyhow::ensure!(!ips.is_empty(), "no timed steps");
    ips.sort_by(f64::total_cmp);
    let n = ips.len() as f64;
    Ok((ips[ips.len() / 2], comm / n * 1e3, wait / n * 1e3))
}

/// Runs every measurement; the first row is the one-worker baseline.
pub fn run(args: &TrainBenchArgs) -> anyhow::Result<Vec<TrainBenchResult>> {
    let (base, _, _) = measure(args, &[])?;
    let row = |strategy: &str, workers: usize, (ips, comm_ms, wait_ms): (f64, f64, f64)| TrainBenchResult {
        bench: "train",
        strategy: strategy.into(),
        workers,
        threads: args.threads,
        batch: args.batch,
        images_per_s: (ips * 10.0).round() / 10.0,
        efficiency: (ips / (workers as f64 * base) * 1000.0).round() / 1000.0,
        comm_ms: (comm_ms * 1000.0).round() / 1000.0,
        comm_wait_ms: (wait_ms * 1000.0).round() / 1000.0,
    };
    let mut out = vec![row("single", 1, (base, 0.0, 0.0))];
    for &w in &args.workers {
        let ws = w.to_string();
        for s in &args.strategy {
            let variants: Vec<(&str, Vec<&str>)> = match s.as_str() {
                "allreduce" => vec![("allreduce", vec![]), ("allreduce-no-overlap", vec!["--no-overlap"])],
                "ps" => vec![("ps-sync", vec!["--strategy", "ps"])],
                other => anyhow::bail!(crate::cli::ConfigError::Invalid {
                    flag: "strategy",
                    msg: format!("'{other}' is not allreduce or ps")
                }),
            };
            for (name, flags) in variants {
                let mut f: Vec<String> = vec!["--workers".into(), ws.clone()];
                f.extend(flags.iter().map(|s| s.to_string()));
                out.push(row(name, w, measure(args, &f)?));
            }
        }
    }
    Ok(out)
}
