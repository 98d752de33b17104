//! `convoy plan calibrate`: measures this machine for the planner — every layer's forward and
//! backward seconds per sample at the model's shapes (median of repeated runs of that layer
//! alone, `Net::forward_layers`/`backward_layers` over one layer), the memory copy bandwidth, and
//! an α–β fit of the threads transport's all-reduce — and writes them as a profile (JSON).

use super::{LayerCost, ModelCost, PlanError};
use crate::comm::{local::DEFAULT_STALL, Algorithm, Communicator, LocalComm};
use crate::layers::{Ctx, Mode};
use crate::net::{Flat, ModelSpec, Net};
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
}

/// The current profile format.
pub const VERSION: u32 = 1;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Measures `spec` at `batch` samples with `threads` intra-op threads.
pub fn calibrate(spec: &ModelSpec, batch: usize, threads: usize, reps: usize) -> Result<Profile, PlanError> {
    if batch == 0 || threads == 0 || reps == 0 {
        return Err(PlanError::Input("--batch, --threads and --reps must be at least 1".into()));
    }
    let err = |e: crate::net::NetError| PlanError::Input(e.to_string());
    let mut net = Net::build(spec).map_err(err)?;
    let params = net.init_params(0);
    let mut grads = vec![0.0f32; params.len()];
    let mut rng = Rng::new(1);
    let mut shape = vec![batch];
    shape.extend_from_slice(&spec.input);
    let n: usize = shape.iter().product();
    let mut x = Tensor::from_vec(&shape, (0..n).map(|_| rng.normal()).collect()).map_err(|e| PlanError::Input(e.to_string()))?;
    let ids: Vec<u64> = (0..batch as u64).collect();
    let ctx = Ctx { mode: Mode::Train, threads, seed: 0, step: 0, layer: 0, sample_ids: &ids, sync: None };
    let fc = |i: usize| matches!(spec.layers[i], crate::net::LayerSpec::Linear { .. });
    let mut layers = Vec::new();
    for i in 0..net.num_layers() {
        let (mut f, mut b) = (Vec::new(), Vec::new());
        let mut out = Tensor::default();
        for _ in 0..reps + 1 {
            let t = Instant::now();
            out = net.forward_layers(&ctx, params.as_slice(), i..i + 1, &x).map_err(err)?.clone();
            f.push(t.elapsed().as_secs_f64());
            let dy = out.clone();
            let t = Instant::now();
            let mut sink = Flat { params: &params, grads: &mut grads };
            net.backward_layers(&ctx, &mut sink, i..i + 1, &x, Some(&dy), i > 0).map_err(err)?;
            b.push(t.elapsed().as_secs_f64());
        }
        // The first run warms caches and buffers.
        f.remove(0);
        b.remove(0);
        layers.push(LayerCost {
            name: net.layer_names()[i].clone(),
            fwd_s: median(f) / batch as f64,
            bwd_s: median(b) / batch as f64,
            params: net.layout().layer_range(i).len(),
            out: net.layer_out_shape(i).iter().product(),
            fc: fc(i),
        });
        x = out;
    }
    let (alpha, beta) = fit_allreduce();
    Ok(Profile {
        version: VERSION,
        model: ModelCost { model: spec.name.clone(), input: spec.input.iter().product(), layers },
        batch,
        threads,
        mem_bandwidth: memcpy_bandwidth(),
        allreduce_alpha: alpha,
        allreduce_beta: beta,
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

/// α and β of 2 thread ranks' direct all-reduce: least squares of time = 2α + bytes/β.
fn fit_allreduce() -> (f64, f64) {
    let sizes: Vec<usize> = (12..=24).step_by(2).map(|e| 1usize << e).collect();
    let comms = LocalComm::world(2, Algorithm::Direct, DEFAULT_STALL);
    let times: Vec<f64> = std::thread::scope(|s| {
        let hs: Vec<_> = comms
            .iter()
            .map(|c| {
                let sizes = &sizes;
                s.spawn(move || {
                    let mut buf = vec![0.0f32; *sizes.last().unwrap_or(&4) / 4];
                    sizes
                        .iter()
                        .map(|&bytes| {
                            let reps = (64 << 20) / bytes.max(1) + 3;
                            let mut v = Vec::new();
                            for _ in 0..reps {
                                let t = Instant::now();
                                let _ = c.all_reduce_into(&mut buf[..bytes / 4]);
                                v.push(t.elapsed().as_secs_f64());
                            }
                            median(v)
                        })
                        .collect::<Vec<f64>>()
                })
            })
            .collect();
        let all: Vec<Vec<f64>> = hs.into_iter().map(|h| h.join().unwrap_or_default()).collect();
        all.into_iter().next().unwrap_or_default()
    });
    let xs: Vec<f64> = sizes.iter().map(|&b| b as f64).collect();
    let (mx, my) = (xs.iter().sum::<f64>() / xs.len() as f64, times.iter().sum::<f64>() / times.len().max(1) as f64);
    let sxy: f64 = xs.iter().zip(&times).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    let slope = (sxy / sxx).max(1e-15);
    // The large sizes dominate the least-squares intercept; the smallest size is almost all
    // latency, so α is taken from it when the fit's intercept is smaller.
    let intercept = (my - slope * mx).max(times.first().map_or(0.0, |t| t - xs[0] * slope)).max(0.0);
    (intercept / 2.0, 1.0 / slope)
}

/// Reads a profile and checks it belongs to `spec`.
pub fn load(path: &std::path::Path, spec: &ModelSpec) -> Result<Profile, PlanError> {
    let text = std::fs::read_to_string(path).map_err(|e| PlanError::Input(format!("--profile {}: {e}", path.display())))?;
    let p: Profile = serde_json::from_str(&text).map_err(|e| PlanError::Input(format!("--profile {}: not a convoy profile ({e}); hint: write one with `convoy plan calibrate`", path.display())))?;
    if p.version != VERSION {
        return Err(PlanError::Input(format!("--profile {}: format version {} (this convoy reads {VERSION}); hint: calibrate again", path.display(), p.version)));
    }
    let net = Net::build(spec).map_err(|e| PlanError::Input(e.to_string()))?;
    let names: Vec<&str> = p.model.layers.iter().map(|l| l.name.as_str()).collect();
    if p.model.model != spec.name || names != net.layer_names().iter().map(String::as_str).collect::<Vec<_>>() {
        return Err(PlanError::Input(format!(
            "--profile {} was measured for model '{}', not '{}'; hint: convoy plan calibrate --model {}",
            path.display(),
            p.model.model,
            spec.name,
            spec.name
        )));
    }
    Ok(p)
}
