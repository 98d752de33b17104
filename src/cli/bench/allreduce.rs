//! `convoy bench allreduce`: bus bandwidth of each all-reduce algorithm over thread ranks, for
//! message sizes from `--min-bytes` to `--max-bytes` (×4 steps), next to the bandwidth of one
//! memcpy of the same size measured in the same run.
//!
//! As nccl-tests define them: algbw = bytes / time of one all-reduce; busbw = algbw × 2(P−1)/P,
//! the bandwidth every rank's link must sustain for a ring, comparable across P.

use crate::cli::AlgorithmArg;
use crate::comm::{local::DEFAULT_STALL, Algorithm, Communicator, LocalComm};
use clap::Args;
use std::hint::black_box;
use std::time::Instant;

/// Flags of `convoy bench allreduce`.
#[derive(Debug, Args, Clone)]
pub struct AllreduceArgs {
    /// Rank counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "2,4")]
    pub ranks: Vec<usize>,
    /// Algorithms to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "direct,ring,tree,naive")]
    pub algorithms: Vec<AlgorithmArg>,
    /// Smallest message in bytes.
    #[arg(long, default_value_t = 4096)]
    pub min_bytes: usize,
    /// Largest message in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    pub max_bytes: usize,
    /// Bytes reduced per measurement (more iterations for small messages).
    #[arg(long, default_value_t = 1 << 30)]
    pub budget_bytes: usize,
}

/// One measurement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AllreduceResult {
    /// "allreduce".
    pub bench: &'static str,
    /// Ranks.
    pub ranks: usize,
    /// Algorithm.
    pub algorithm: String,
    /// Message size in bytes.
    pub bytes: usize,
    /// Timed iterations.
    pub iters: usize,
    /// Microseconds per all-reduce.
    pub time_us: f64,
    /// Algorithm bandwidth, GB/s.
    pub algbw_gbs: f64,
    /// Bus bandwidth, GB/s.
    pub busbw_gbs: f64,
    /// memcpy bandwidth of the same size in this run, GB/s.
    pub memcpy_gbs: f64,
    /// busbw / memcpy.
    pub ratio: f64,
}

fn sizes(args: &AllreduceArgs) -> Vec<usize> {
    let mut v = Vec::new();
    let mut b = args.min_bytes.max(4);
    while b <= args.max_bytes {
        v.push(b);
        b *= 4;
    }
    v
}

fn iters(args: &AllreduceArgs, bytes: usize) -> usize {
    (args.budget_bytes / bytes).clamp(5, 2000)
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

/// Bandwidth of copying `bytes` (GB/s), best of a few rounds.
fn memcpy_gbs(bytes: usize, iters: usize) -> f64 {
    let n = bytes / 4;
    let src = vec![1.0f32; n];
    let mut dst = vec![0.0f32; n];
    dst.copy_from_slice(&src);
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..iters {
            dst.copy_from_slice(black_box(&src));
            black_box(&mut dst);
        }
        best = best.min(t.elapsed().as_secs_f64() / iters as f64);
    }
    bytes as f64 / best / 1e9
}

/// Runs every measurement.
pub fn run(args: &AllreduceArgs) -> anyhow::Result<Vec<AllreduceResult>> {
    if args.ranks.iter().any(|&p| p == 0 || p > 64) || args.min_bytes == 0 || args.min_bytes > args.max_bytes {
        anyhow::bail!(crate::cli::ConfigError::Invalid {
            flag: "ranks/min-bytes/max-bytes",
            msg: "ranks must be 1..=64 and 0 < min-bytes <= max-bytes".into()
        });
    }
    let sizes = sizes(args);
    let memcpy: Vec<f64> = sizes.iter().map(|&b| memcpy_gbs(b, iters(args, b))).collect();
    let mut out = Vec::new();
    for &p in &args.ranks {
        for &alg in &args.algorithms {
            let algorithm = match alg {
                AlgorithmArg::Direct => Algorithm::Direct,
                AlgorithmArg::Ring => Algorithm::Ring,
                AlgorithmArg::Tree => Algorithm::Tree,
                AlgorithmArg::Naive => Algorithm::Naive,
            };
            let comms = LocalComm::world(p, algorithm, DEFAULT_STALL);
            let times: Vec<f64> = std::thread::scope(|s| {
                let handles: Vec<_> = comms
                    .iter()
                    .map(|c| {
                        let sizes = &sizes;
                        s.spawn(move || -> Result<Vec<f64>, crate::comm::CommError> {
                            let mut buf = vec![0.0f32; args.max_bytes / 4];
                            let mut times = Vec::new();
                            for &bytes in sizes {
                                let b = &mut buf[..bytes / 4];
                                for _ in 0..2 {
                                    c.all_reduce_into(b)?;
                                }
                                c.barrier()?;
                                let t = Instant::now();
                                let n = iters(args, bytes);
                                for _ in 0..n {
                                    c.all_reduce_into(b)?;
                                }
                                c.barrier()?;
                                times.push(t.elapsed().as_secs_f64() / n as f64);
                            }
                            Ok(times)
                        })
                    })
                    .collect();
                let all: Vec<_> = handles.into_iter().map(|h| h.join().expect("bench rank panicked")).collect();
                all.into_iter().next().expect("at least one rank").unwrap_or_default()
            });
            for ((&bytes, &t), &mc) in sizes.iter().zip(&times).zip(&memcpy) {
                let algbw = bytes as f64 / t / 1e9;
                let busbw = algbw * 2.0 * (p as f64 - 1.0) / p as f64;
                out.push(AllreduceResult {
                    bench: "allreduce",
                    ranks: p,
                    algorithm: format!("{algorithm:?}").to_lowercase(),
                    bytes,
                    iters: iters(args, bytes),
                    time_us: round(t * 1e6, 1),
                    algbw_gbs: round(algbw, 3),
                    busbw_gbs: round(busbw, 3),
                    memcpy_gbs: round(mc, 3),
                    ratio: round(busbw / mc, 3),
                });
            }
        }
    }
    Ok(out)
}
