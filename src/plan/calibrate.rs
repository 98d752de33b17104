//! `convoy plan calibrate`: measures this machine for the planner — every layer's forward and
//! backward seconds per sample at the model's shapes (median of repeated runs of that layer
//! alone, `Net::forward_layers`/`backward_layers` over one layer), the memory copy bandwidth, and
//! an α–β fit of the threads transport's all-reduce — and writes them as a profile (JSON).

use super::{LayerCost, ModelCost, PlanError};
use crate::comm::{local::DEFAULT_STALL, Algorithm, Communicator, LocalComm};
use crate::layers::Backend;
use crate::layers::{Ctx, Mode};
use crate::net::{ModelSpec, Net};
use crate::tensor::{rng::Rng, Tensor};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// What `calibrate` measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Profile format version.
    pub version: u32,
    /// The model's measured costs (seconds per sample per layer, one node).
    pub model: ModelCost,
    /// Batch the layers were timed at.
    pub batch: usize,
    /// Intra-op threads used (a node's cores).
    pub threads: usize,
    /// Memory copy bandwidth, bytes/s.
    pub mem_bandwidth: f64,
    /// All-reduce between 2 thread ranks: latency α (s) and bandwidth β (bytes/s) of
    /// time = 2α + bytes/β (least squares over sizes 4 KiB–16 MiB).
    pub allreduce_alpha: f64,
    /// See `allreduce_alpha`.
    pub allreduce_beta: f64,
    /// The link between two MPI processes (`calibrate --comm mpi` under `mpirun`), ranks 0 and
    /// 1: ping-pong and `MPI_Allreduce` fits; `convoy plan --link profile --latency profile` uses
    /// them. Absent when calibrated without MPI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mpi_link: Option<LinkFit>,
}

/// The link between two MPI processes, measured two ways.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkFit {
    /// Point to point (ping-pong, one direction at a time): latency α, seconds, of
    /// time = α + bytes/β.
    pub alpha: f64,
    /// See `alpha`: bandwidth β, bytes/s.
    pub beta: f64,
    /// `MPI_Allreduce` over the job's `ranks` processes, fitted as a ring:
    /// time = 2(n−1)α + 2(n−1)/n · bytes/β.
    pub allreduce_alpha: f64,
    /// See `allreduce_alpha`.
    pub allreduce_beta: f64,
    /// Processes in the all-reduce.
    #[serde(default)]
    pub ranks: usize,
    /// A parameter server's round: rank 0 receives a message from every other rank in turn,
    /// then sends one back to each, as `convoy train --strategy ps` does; bytes/s moved through
    /// rank 0's link, fitted as time = 2(n−1)(α + bytes/β). 0 in profiles written before it was
    /// measured (the plan then uses `beta`).
    #[serde(default)]
    pub server_beta: f64,
    /// Smallest and largest message timed, bytes.
    pub min_bytes: usize,
    /// See `min_bytes`.
    pub max_bytes: usize,
}

/// The current profile format.
pub const VERSION: u32 = 1;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Measures `spec` at `batch` samples (and at an eighth of it, for the per-call part) with
/// `threads` intra-op threads, the convolutions on `backend`.
// Long: one measurement run (layers, all-reduce, bandwidth) whose timings go into the same profile.
pub fn calibrate(
    spec: &ModelSpec,
    batch: usize,
    (threads, backend): (usize, Backend),
    reps: usize,
    mpi_link: Option<LinkFit>,
) -> Result<Profile, PlanError> {
    if batch == 0 || threads == 0 || reps == 0 {
        return Err(PlanError::Input("--batch, --threads and --reps must be at least 1".into()));
    }
    let err = |e: crate::net::NetError| PlanError::Input(e.to_string());
    let net = Net::build(spec).map_err(err)?;
    let params = net.init_params(0);
    let mut rng = Rng::new(1);
    let mut shape = vec![batch];
    shape.extend_from_slice(&spec.input);
    let n: usize = shape.iter().product();
    let x = Tensor::from_vec(&shape, (0..n).map(|_| rng.normal()).collect())
        .map_err(|e| PlanError::Input(e.to_string()))?;
    let labels: Vec<u32> = (0..batch).map(|_| rng.below(spec.classes as u64) as u32).collect();
    let ids: Vec<u64> = (0..batch as u64).collect();
    let fc = |i: usize| matches!(spec.layers[i], crate::net::LayerSpec::Linear { .. });
    // Each layer is timed inside whole training steps (its real inputs, also in DAG nets) at
    // `batch` and at an eighth of it (a net of its own, so that neither resizes the other's
    // buffers): time = fixed + samples·per-sample, per call. Medians of `reps` steps after one
    // that warms caches and buffers.
    let small = (batch / 8).max(1);
    let time = |b: usize| -> Result<Vec<(f64, f64)>, PlanError> {
        let mut net = Net::build(spec).map_err(err)?;
        let mut grads = vec![0.0f32; params.len()];
        net.set_layer_timing(true);
        let xb = Tensor::from_vec(&[&[b][..], &spec.input[..]].concat(), x.data()[..b * n / batch].to_vec())
            .map_err(|e| PlanError::Input(e.to_string()))?;
        let ctx =
            Ctx { mode: Mode::Train, threads, backend, seed: 0, step: 0, layer: 0, sample_ids: &ids[..b], sync: None };
        let mut runs = vec![(Vec::new(), Vec::new()); net.num_layers()];
        for rep in 0..reps + 1 {
            grads.fill(0.0);
            net.forward_backward(&ctx, &params, &mut grads, &xb, &labels[..b], b).map_err(err)?;
            let times = net.take_layer_times();
            if rep > 0 {
                for ((f, bw), (tf, tb)) in runs.iter_mut().zip(times) {
                    f.push(tf);
                    bw.push(tb);
                }
            }
        }
        Ok(runs.into_iter().map(|(f, b)| (median(f), median(b))).collect())
    };
    let (large, little) = (time(batch)?, time(small)?);
    // (per-sample, fixed) from the two timings; when noise makes the large batch no dearer
    // than the small one, everything counts as per-sample.
    let split = |large: f64, little: f64| -> (f64, f64) {
        let slope = if batch > small { (large - little) / (batch - small) as f64 } else { 0.0 };
        if slope <= 0.0 || !slope.is_finite() {
            return (large / batch as f64, 0.0);
        }
        (slope, (little - small as f64 * slope).max(0.0))
    };
    let mut layers = Vec::new();
    for (i, (&(f, b), &(fs, bs))) in large.iter().zip(&little).enumerate() {
        let ((fwd_s, fwd_fixed_s), (bwd_s, bwd_fixed_s)) = (split(f, fs), split(b, bs));
        layers.push(LayerCost {
            name: net.layer_names()[i].clone(),
            fwd_s,
            bwd_s,
            fwd_fixed_s,
            bwd_fixed_s,
            params: net.layout().layer_range(i).len(),
            out: net.layer_out_shape(i).iter().product(),
            fc: fc(i),
            cut_after: i + 1 == net.num_layers() || spec.can_cut_after(i),
            kernel: net.layer_kernel(i).to_string(),
        });
    }
    let (alpha, beta) = fit_threads();
    Ok(Profile {
        version: VERSION,
        model: ModelCost { model: spec.name.clone(), input: spec.input.iter().product(), layers },
        batch,
        threads,
        mem_bandwidth: memcpy_bandwidth(),
        allreduce_alpha: alpha,
        allreduce_beta: beta,
        mpi_link,
    })
}

/// Bytes/s of copying 64 MiB (best of five).
fn memcpy_bandwidth() -> f64 {
    let n = 16 << 20;
    let src = vec![1.0f32; n];
    let mut dst = vec![0.0f32; n];
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        best = best.min(t.elapsed().as_secs_f64());
    }
    4.0 * n as f64 / best
}

/// α and β of 2 thread ranks' direct all-reduce (sizes 4 KiB–16 MiB).
fn fit_threads() -> (f64, f64) {
    let sizes: Vec<usize> = (12..=24).step_by(2).map(|e| 1usize << e).collect();
    let comms = LocalComm::world(2, Algorithm::Direct, DEFAULT_STALL);
    let times: Vec<f64> = std::thread::scope(|s| {
        let sizes = &sizes;
        let hs: Vec<_> =
            comms.iter().map(|c| s.spawn(move || time_allreduce(c, sizes, 64 << 20).unwrap_or_default())).collect();
        let all: Vec<Vec<f64>> = hs.into_iter().map(|h| h.join().unwrap_or_default()).collect();
        all.into_iter().next().unwrap_or_default()
    });
    fit(&sizes, &times)
}

/// Median seconds of `comm`'s all-reduce at each size (bytes), on every rank; each size is
/// repeated until about `budget` bytes went through (at least 3 times), after a barrier.
pub fn time_allreduce(
    comm: &dyn Communicator,
    sizes: &[usize],
    budget: usize,
) -> Result<Vec<f64>, crate::comm::CommError> {
    time_rounds(comm, sizes, budget, |b| comm.all_reduce_into(b))
}

/// α and β of time = 2α + bytes/β, least squares over (`sizes`, `times`).
pub fn fit(sizes: &[usize], times: &[f64]) -> (f64, f64) {
    let (intercept, slope) = fit_line(sizes, times);
    (intercept / 2.0, 1.0 / slope)
}

/// Intercept and slope of time = a + b·bytes, least squares. The large sizes dominate the
/// intercept; the smallest size is almost all latency, so the intercept is taken from it when
/// the fit's is smaller.
fn fit_line(sizes: &[usize], times: &[f64]) -> (f64, f64) {
    let xs: Vec<f64> = sizes.iter().map(|&b| b as f64).collect();
    let (mx, my) =
        (xs.iter().sum::<f64>() / xs.len().max(1) as f64, times.iter().sum::<f64>() / times.len().max(1) as f64);
    let sxy: f64 = xs.iter().zip(times).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    let slope = (sxy / sxx).max(1e-15);
    let intercept = (my - slope * mx).max(times.first().map_or(0.0, |t| t - xs[0] * slope)).max(0.0);
    (intercept, slope)
}

/// Median seconds of one way of a ping-pong between ranks 0 and 1 of `comm` at each size
/// (half the round trip), on rank 0; each size repeated until about `budget` bytes went by.
pub fn time_pingpong(
    comm: &dyn Communicator,
    sizes: &[usize],
    budget: usize,
) -> Result<Vec<f64>, crate::comm::CommError> {
    const TAG: u32 = 7;
    let rounds = time_rounds(comm, sizes, budget / 2, |b| {
        if comm.rank() == 0 {
            comm.send(b, 1, TAG)?;
            comm.recv(b, 1, TAG)
        } else {
            comm.recv(b, 0, TAG)?;
            comm.send(b, 0, TAG)
        }
    })?;
    Ok(rounds.into_iter().map(|t| t / 2.0).collect())
}

/// Median seconds of a parameter server's round at each size, on rank 0 of `comm`: rank 0
/// receives from ranks 1, 2, … in turn (the others send at once, as workers push), then sends
/// to each in turn (the pull); each size repeated until about `budget` bytes went by.
pub fn time_server_round(
    comm: &dyn Communicator,
    sizes: &[usize],
    budget: usize,
) -> Result<Vec<f64>, crate::comm::CommError> {
    const TAG: u32 = 8;
    let n = comm.size();
    time_rounds(comm, sizes, budget / (2 * (n - 1)).max(1), |b| {
        if comm.rank() == 0 {
            (1..n).try_for_each(|r| comm.recv(b, r, TAG))?;
            (1..n).try_for_each(|r| comm.send(b, r, TAG))
        } else {
            comm.send(b, 0, TAG)?;
            comm.recv(b, 0, TAG)
        }
    })
}

/// Median seconds of `round` on a buffer of each size (bytes), after a barrier and one
/// unmeasured round (it sets up the connections); `budget / bytes + 3` measured rounds.
fn time_rounds(
    comm: &dyn Communicator,
    sizes: &[usize],
    budget: usize,
    mut round: impl FnMut(&mut [f32]) -> Result<(), crate::comm::CommError>,
) -> Result<Vec<f64>, crate::comm::CommError> {
    let mut buf = vec![0.0f32; sizes.iter().max().copied().unwrap_or(4) / 4];
    let mut out = Vec::new();
    for &bytes in sizes {
        let b = &mut buf[..bytes / 4];
        comm.barrier()?;
        round(b)?;
        let mut v = Vec::new();
        for _ in 0..budget / bytes.max(1) + 3 {
            let t = Instant::now();
            round(b)?;
            v.push(t.elapsed().as_secs_f64());
        }
        out.push(median(v));
    }
    Ok(out)
}

/// The MPI link, measured: ranks 0 and 1 of `world` time a ping-pong (the other ranks wait),
/// then every rank a parameter server's round on rank 0 and `MPI_Allreduce` (64 KiB–4 MiB and
/// `grad_bytes`, about 16 MiB per size); `Some` on rank 0.
#[cfg(feature = "mpi")]
pub fn fit_mpi_link(world: &crate::comm::mpi::MpiComm, grad_bytes: usize) -> Result<Option<LinkFit>, PlanError> {
    let err = |e: crate::comm::CommError| PlanError::Input(format!("--comm mpi: {e}"));
    if world.size() < 2 {
        return Err(PlanError::Input("--comm mpi: the link is measured between two processes; hint: mpirun -np 2 convoy plan calibrate --comm mpi".into()));
    }
    // 64 KiB–4 MiB, and the model's whole gradient (the size data parallelism reduces): MPI
    // libraries switch algorithms by size, so the fit must see the sizes the plan will use.
    let mut sizes: Vec<usize> = (16..=22).step_by(2).map(|e| 1usize << e).collect();
    if grad_bytes > 1 << 22 {
        sizes.push(grad_bytes / 4 * 4);
    }
    let rank = world.rank();
    let pair = world.split(usize::from(rank >= 2), rank).map_err(err)?;
    let pp = if rank < 2 { time_pingpong(pair.as_ref(), &sizes, 16 << 20).map_err(err)? } else { Vec::new() };
    drop(pair);
    // The all-reduce over every process of the job: the link as collectives use it, with as
    // many hosts sending at once as the job has.
    let ar = time_allreduce(world, &sizes, 16 << 20).map_err(err)?;
    let server = time_server_round(world, &sizes, 16 << 20).map_err(err)?;
    if rank != 0 {
        return Ok(None);
    }
    // Ring all-reduce: time = 2(n−1)α + 2(n−1)/n · bytes/β.
    let n = world.size() as f64;
    let (intercept, slope) = fit_line(&sizes, &ar);
    let (allreduce_alpha, allreduce_beta) = (intercept / (2.0 * (n - 1.0)), 2.0 * (n - 1.0) / n / slope);
    let server_beta = 2.0 * (n - 1.0) / fit_line(&sizes, &server).1;
    let (alpha, slope) = fit_line(&sizes, &pp);
    Ok(Some(LinkFit {
        alpha,
        beta: 1.0 / slope,
        allreduce_alpha,
        allreduce_beta,
        ranks: world.size(),
        server_beta,
        min_bytes: sizes[0],
        max_bytes: sizes[sizes.len() - 1],
    }))
}

/// Reads a profile and checks it belongs to `spec`.
pub fn load(path: &std::path::Path, spec: &ModelSpec) -> Result<Profile, PlanError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| PlanError::Input(format!("--profile {}: {e}", path.display())))?;
    parse(&text, &format!("--profile {}", path.display()), spec)
}

/// Parses a profile (`origin` names it in errors) and checks that it belongs to `spec` — the
/// same layers with the same parameter and output counts — and that every measurement is a
/// usable number (times finite and not negative, bandwidths finite and positive).
pub fn parse(text: &str, origin: &str, spec: &ModelSpec) -> Result<Profile, PlanError> {
    let bad = |m: String| {
        Err(PlanError::Input(format!(
            "{origin}: {m}; hint: write a new one with `convoy plan calibrate --model {}`",
            spec.name
        )))
    };
    let p: Profile = match serde_json::from_str(text) {
        Ok(p) => p,
        Err(e) => return bad(format!("not a convoy profile ({e})")),
    };
    if p.version != VERSION {
        return bad(format!("format version {} (this convoy reads {VERSION})", p.version));
    }
    let want = ModelCost::from_flops(spec, 1.0)?;
    let same_layers = p.model.layers.len() == want.layers.len()
        && p.model.layers.iter().zip(&want.layers).all(|(a, b)| {
            a.name == b.name && a.params == b.params && a.out == b.out && a.fc == b.fc && a.cut_after == b.cut_after
        });
    if p.model.model != spec.name || p.model.input != want.input || !same_layers {
        return bad(format!(
            "was measured for model '{}', not this '{}' (names or shapes of its layers differ)",
            p.model.model, spec.name
        ));
    }
    let time = |v: f64| v.is_finite() && v >= 0.0;
    if let Some(l) =
        p.model.layers.iter().find(|l| !(time(l.fwd_s) && time(l.bwd_s) && time(l.fwd_fixed_s) && time(l.bwd_fixed_s)))
    {
        return bad(format!(
            "layer '{}' has times forward {} s + {} s per call, backward {} s + {} s per call: they must be finite and not negative",
            l.name, l.fwd_s, l.fwd_fixed_s, l.bwd_s, l.bwd_fixed_s
        ));
    }
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if !(positive(p.mem_bandwidth)
        && positive(p.allreduce_beta)
        && p.allreduce_alpha.is_finite()
        && p.allreduce_alpha >= 0.0)
    {
        return bad(format!(
            "mem_bandwidth {}, allreduce_alpha {}, allreduce_beta {}: bandwidths must be positive, the latency not negative",
            p.mem_bandwidth, p.allreduce_alpha, p.allreduce_beta
        ));
    }
    if let Some(l) = &p.mpi_link {
        let latency = |v: f64| v.is_finite() && v >= 0.0;
        if !(positive(l.beta)
            && positive(l.allreduce_beta)
            && latency(l.alpha)
            && latency(l.allreduce_alpha)
            && (l.server_beta == 0.0 || positive(l.server_beta)))
        {
            return bad(format!(
                "mpi_link alpha {}, beta {}, allreduce_alpha {}, allreduce_beta {}, server_beta {}: bandwidths must be positive (server_beta may be 0: not measured), latencies not negative",
                l.alpha, l.beta, l.allreduce_alpha, l.allreduce_beta, l.server_beta
            ));
        }
    }
    if p.batch == 0 || p.threads == 0 {
        return bad(format!("batch {} and threads {} must be at least 1", p.batch, p.threads));
    }
    Ok(p)
}
