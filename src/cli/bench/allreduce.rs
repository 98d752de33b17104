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
    /// `mpi`: measure across the processes of this MPI job (run under mpirun; --ranks and
    /// --algorithms are ignored): the raw MPI_Allreduce next to MpiComm's all-reduce (direct, and
    /// our ring over MPI point-to-point), rank 0 prints.
    #[arg(long, value_enum, default_value = "local")]
    pub comm: crate::cli::CommArg,
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
    let mpi = match args.comm {
        crate::cli::CommArg::Local => false,
        crate::cli::CommArg::Mpi => true,
        crate::cli::CommArg::Auto => crate::comm::launch::launched(),
    };
    if mpi {
        return run_mpi(args);
    }
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
            out.extend(results(args, p, &format!("{algorithm:?}").to_lowercase(), &sizes, &times, &memcpy));
        }
    }
    Ok(out)
}

/// Rows for `times` (seconds per all-reduce of each size) of `p` ranks.
fn results(
    args: &AllreduceArgs,
    p: usize,
    algorithm: &str,
    sizes: &[usize],
    times: &[f64],
    memcpy: &[f64],
) -> Vec<AllreduceResult> {
    let mut out = Vec::new();
    for ((&bytes, &t), &mc) in sizes.iter().zip(times).zip(memcpy) {
        let algbw = bytes as f64 / t / 1e9;
        let busbw = algbw * 2.0 * (p as f64 - 1.0) / p as f64;
        out.push(AllreduceResult {
            bench: "allreduce",
            ranks: p,
            algorithm: algorithm.to_string(),
            bytes,
            iters: iters(args, bytes),
            time_us: round(t * 1e6, 1),
            algbw_gbs: round(algbw, 3),
            busbw_gbs: round(busbw, 3),
            memcpy_gbs: round(mc, 3),
            ratio: round(busbw / mc, 3),
        });
    }
    out
}

#[cfg(feature = "mpi")]
/// Seconds per call of `op` on a buffer of each size (after two warm-up calls, between barriers).
fn time_sizes(
    args: &AllreduceArgs,
    sizes: &[usize],
    barrier: &dyn Fn() -> anyhow::Result<()>,
    op: &mut dyn FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::new();
    for &bytes in sizes {
        for _ in 0..2 {
            op(bytes / 4)?;
        }
        barrier()?;
        let t = Instant::now();
        let n = iters(args, bytes);
        for _ in 0..n {
            op(bytes / 4)?;
        }
        barrier()?;
        times.push(t.elapsed().as_secs_f64() / n as f64);
    }
    Ok(times)
}

/// `--comm mpi`: the raw `MPI_Allreduce` (out of place, as a user would call it), `MpiComm`'s
/// all-reduce (in place) and our ring over MPI point-to-point, across this job's processes.
#[cfg(feature = "mpi")]
fn run_mpi(args: &AllreduceArgs) -> anyhow::Result<Vec<AllreduceResult>> {
    let mpi = crate::comm::mpi::Mpi::init(DEFAULT_STALL, false)?;
    let world = mpi.world();
    let p = world.size();
    let sizes = sizes(args);
    let memcpy: Vec<f64> = sizes.iter().map(|&b| memcpy_gbs(b, iters(args, b))).collect();
    let barrier = || world.barrier().map_err(anyhow::Error::from);
    let mut send = vec![1.0f32; args.max_bytes / 4];
    let mut recv = vec![0.0f32; args.max_bytes / 4];
    // Interleaved rounds, best of three: the machine's noise hits all three alike.
    let (mut raw, mut raw_in_place, mut direct) =
        (vec![f64::INFINITY; sizes.len()], vec![f64::INFINITY; sizes.len()], vec![f64::INFINITY; sizes.len()]);
    let best = |acc: &mut Vec<f64>, t: Vec<f64>| acc.iter_mut().zip(t).for_each(|(a, t)| *a = a.min(t));
    for _ in 0..3 {
        best(
            &mut raw,
            time_sizes(args, &sizes, &barrier, &mut |n| Ok(world.mpi_all_reduce_from(&send[..n], &mut recv[..n])?))?,
        );
        best(
            &mut raw_in_place,
            time_sizes(args, &sizes, &barrier, &mut |n| Ok(world.raw_all_reduce_in_place(&mut recv[..n])?))?,
        );
        best(&mut direct, time_sizes(args, &sizes, &barrier, &mut |n| Ok(world.all_reduce_into(&mut send[..n])?))?);
    }
    let ring = world.with_algorithm(Algorithm::Ring)?;
    let ring_t = time_sizes(args, &sizes, &barrier, &mut |n| Ok(ring.all_reduce_into(&mut send[..n])?))?;
    drop(ring);
    if world.rank() != 0 {
        return Ok(Vec::new());
    }
    let mut out = results(args, p, "mpi-raw", &sizes, &raw, &memcpy);
    out.extend(results(args, p, "mpi-raw-inplace", &sizes, &raw_in_place, &memcpy));
    out.extend(results(args, p, "mpi-direct", &sizes, &direct, &memcpy));
    out.extend(results(args, p, "mpi-ring", &sizes, &ring_t, &memcpy));
    Ok(out)
}

#[cfg(not(feature = "mpi"))]
fn run_mpi(_args: &AllreduceArgs) -> anyhow::Result<Vec<AllreduceResult>> {
    anyhow::bail!(crate::cli::ConfigError::Invalid {
        flag: "comm",
        msg: format!("this convoy was built without MPI; {}", crate::parallel::BUILD_WITH_MPI)
    })
}
