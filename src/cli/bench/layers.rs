//! `convoy bench --layers` (Caffe's `caffe time`): forward and backward time of every layer over
//! training steps on synthetic data, its GFLOP/s and share of this machine's FMA peak (measured
//! by `simd::fma_peak_gflops` at start, times the threads), the kernel it runs, and the totals.
//! `bench/pytorch_bench.py --layers` prints the same table for PyTorch.

use super::StepArgs;
use crate::tensor::simd;

/// One layer's row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerRow {
    /// Layer name (the model spec's).
    pub layer: String,
    /// Kind ("conv2d", "batch_norm", "add").
    pub kind: &'static str,
    /// The kernel chosen for it ("direct-avx512", "im2col+gemm"; empty where there is one way).
    pub kernel: &'static str,
    /// Per-sample output shape.
    pub out: Vec<usize>,
    /// Median forward time, ms.
    pub fwd_ms: f64,
    /// Median backward time, ms.
    pub bwd_ms: f64,
    /// Forward GFLOP/s (2 flops per multiply-add; 0 for layers without multiply-adds).
    pub fwd_gflops: f64,
    /// Backward GFLOP/s (weight and input gradients: twice forward's multiply-adds).
    pub bwd_gflops: f64,
    /// (forward + backward) GFLOP/s over the FMA peak of the threads used.
    pub peak_share: f64,
}

/// The table: rows and totals.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerTable {
    /// Model name.
    pub model: String,
    /// Batch size.
    pub batch: usize,
    /// Threads.
    pub threads: usize,
    /// Measured FMA peak of the threads used, GFLOP/s.
    pub peak_gflops: f64,
    /// One row per layer, in net order.
    pub layers: Vec<LayerRow>,
    /// Sum of the layers' forward medians, ms.
    pub fwd_ms: f64,
    /// Sum of the layers' backward medians, ms.
    pub bwd_ms: f64,
    /// Median whole step (forward, loss, backward, SGD update), ms.
    pub step_ms: f64,
    /// Whole-step GFLOP/s over the peak.
    pub peak_share: f64,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the per-layer benchmark.
pub fn run(args: &StepArgs) -> anyhow::Result<LayerTable> {
    let peak = simd::fma_peak_gflops() * args.threads as f64;
    let mut rig = super::Rig::new(args)?;
    rig.net.set_layer_timing(true);
    let layers = rig.net.num_layers();
    let (mut fwd, mut bwd, mut steps) = (vec![Vec::new(); layers], vec![Vec::new(); layers], Vec::new());
    for i in 0..args.warmup + args.steps {
        let t = std::time::Instant::now();
        rig.step(i, args.threads)?;
        let step = t.elapsed().as_secs_f64();
        let times = rig.net.take_layer_times();
        if i >= args.warmup {
            steps.push(step);
            for (l, (f, b)) in times.into_iter().enumerate() {
                fwd[l].push(f);
                bwd[l].push(b);
            }
        }
    }
    let (net, spec) = (&rig.net, &rig.spec);
    let flops = net.flops_per_sample();
    let gflops = |macs: f64, s: f64| {
        if s > 0.0 {
            (2.0 * macs * args.batch as f64 / s / 1e9 * 10.0).round() / 10.0
        } else {
            0.0
        }
    };
    let share = |macs: f64, s: f64| {
        if peak > 0.0 && s > 0.0 {
            (2.0 * macs * args.batch as f64 / s / 1e9 / peak * 1000.0).round() / 1000.0
        } else {
            0.0
        }
    };
    let ms = |s: f64| (s * 1e6).round() / 1e3;
    let mut rows = Vec::new();
    for l in 0..layers {
        let (f, b) = (median(&mut fwd[l]), median(&mut bwd[l]));
        let macs = flops[l] as f64;
        rows.push(LayerRow {
            layer: net.layer_names()[l].clone(),
            kind: net.layer_kind(l),
            kernel: net.layer_kernel(l),
            out: net.layer_out_shape(l),
            fwd_ms: ms(f),
            bwd_ms: ms(b),
            fwd_gflops: gflops(macs, f),
            bwd_gflops: gflops(2.0 * macs, b),
            peak_share: share(3.0 * macs, f + b),
        });
    }
    let step = median(&mut steps);
    let total: f64 = flops.iter().map(|&f| 3.0 * f as f64).sum();
    Ok(LayerTable {
        model: spec.name.clone(),
        batch: args.batch,
        threads: args.threads,
        peak_gflops: (peak * 10.0).round() / 10.0,
        fwd_ms: ms(rows.iter().map(|r| r.fwd_ms).sum::<f64>() / 1e3),
        bwd_ms: ms(rows.iter().map(|r| r.bwd_ms).sum::<f64>() / 1e3),
        layers: rows,
        step_ms: ms(step),
        peak_share: share(total, step),
    })
}

/// The table as text, one line per layer (`caffe time`'s layout, with the kernel and the share of peak).
pub fn render(t: &LayerTable) -> String {
    let mut s = format!(
        "{} batch {} threads {}: FMA peak {:.1} GFLOP/s (measured)\n{:<24} {:<12} {:<14} {:>9} {:>9} {:>9} {:>9} {:>7}\n",
        t.model, t.batch, t.threads, t.peak_gflops, "layer", "kind", "kernel", "fwd ms", "bwd ms", "fwd GF/s", "bwd GF/s", "% peak"
    );
    for r in &t.layers {
        let pct = if r.peak_share > 0.0 { format!("{:.1}", r.peak_share * 100.0) } else { "-".into() };
        s += &format!(
            "{:<24} {:<12} {:<14} {:>9.3} {:>9.3} {:>9.1} {:>9.1} {:>7}\n",
            r.layer, r.kind, r.kernel, r.fwd_ms, r.bwd_ms, r.fwd_gflops, r.bwd_gflops, pct
        );
    }
    s += &format!(
        "total: forward {:.3} ms, backward {:.3} ms, step {:.3} ms ({:.1} images/s, {:.1} % of peak)\n",
        t.fwd_ms,
        t.bwd_ms,
        t.step_ms,
        t.batch as f64 / t.step_ms * 1e3,
        t.peak_share * 100.0
    );
    s
}
