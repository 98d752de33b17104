//! The cost formulas of the planner: collectives in the α–β model, the wait for the slowest
//! node, the pipeline bubble, the optimizer update (docs/plan.md states each and its source).

use super::Cluster;

/// Time of moving `bytes` over one link: α + bytes/β.
pub fn p2p(c: &Cluster, bytes: f64) -> f64 {
    c.latency + bytes / c.bandwidth
}

/// Ring all-reduce of `bytes` over `n` nodes (reduce-scatter + all-gather; Thakur, Rabenseifner
/// & Gropp 2005): 2(n−1)α + 2(n−1)/n · bytes/β.
pub fn ring_allreduce(c: &Cluster, n: usize, bytes: f64) -> f64 {
    if n <= 1 {
        return 0.0;
    }
    let n = n as f64;
    2.0 * (n - 1.0) * c.collective_latency + 2.0 * (n - 1.0) / n * bytes / c.collective_bandwidth
}

/// Binomial-tree reduce + broadcast (latency-optimal for small messages): 2⌈log₂ n⌉(α + bytes/β).
pub fn tree_allreduce(c: &Cluster, n: usize, bytes: f64) -> f64 {
    if n <= 1 {
        return 0.0;
    }
    2.0 * (n as f64).log2().ceil() * (c.latency + bytes / c.bandwidth)
}

/// The better of ring and tree (what MPI libraries switch between by message size).
pub fn allreduce(c: &Cluster, n: usize, bytes: f64) -> f64 {
    ring_allreduce(c, n, bytes).min(tree_allreduce(c, n, bytes))
}

/// Ring all-gather of `bytes` in all (each node contributes bytes/n): (n−1)α + (n−1)/n · bytes/β.
pub fn allgather(c: &Cluster, n: usize, bytes: f64) -> f64 {
    if n <= 1 {
        return 0.0;
    }
    let n = n as f64;
    (n - 1.0) * c.collective_latency + (n - 1.0) / n * bytes / c.collective_bandwidth
}

/// Expected largest of `n` independent standard normal values: how many standard deviations
/// the slowest of n nodes lags their mean. Blom's approximation Φ⁻¹((n − 0.375)/(n + 0.25))
/// (Blom, "Statistical estimates and transformed beta-variables", 1958): within 5 % of the exact
/// value from n = 2 on (0.589 for 0.564 at 2, 3.23 for 3.24 at 1000); 0 for one node.
pub fn expected_max_normal(n: usize) -> f64 {
    if n <= 1 {
        return 0.0;
    }
    let n = n as f64;
    inverse_normal((n - 0.375) / (n + 0.25))
}

/// Φ⁻¹(p), the standard normal quantile, for 0 < p < 1 (Acklam's rational approximation,
/// relative error below 1.2·10⁻⁹; the coefficients as published).
#[allow(clippy::excessive_precision)]
pub fn inverse_normal(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383577518672690e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] =
        [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    let poly = |k: &[f64], x: f64| k.iter().fold(0.0, |acc, &v| acc * x + v);
    // The tails: q = √(−2 ln p), a ratio of polynomials in q.
    let tail = |p: f64| {
        let q = (-2.0 * p.ln()).sqrt();
        poly(&C, q) / (poly(&D, q) * q + 1.0)
    };
    const LOW: f64 = 0.02425;
    if p < LOW {
        tail(p)
    } else if p > 1.0 - LOW {
        -tail(1.0 - p)
    } else {
        let q = p - 0.5;
        let r = q * q;
        poly(&A, r) * q / (poly(&B, r) * r + 1.0)
    }
}

/// Seconds a synchronisation of `n` nodes waits for the slowest after a phase of `phase_s`
/// seconds of computation: jitter·√T standard deviations of E[max of n] (`expected_max_normal`).
pub fn straggle(c: &Cluster, n: usize, phase_s: f64) -> f64 {
    c.jitter * phase_s.max(0.0).sqrt() * expected_max_normal(n)
}

/// Pipeline bubble of GPipe and 1F1B with `s` equal stages and `m` micro-batches: (s−1)/(m+s−1).
pub fn bubble_fraction(s: usize, m: usize) -> f64 {
    (s as f64 - 1.0) / (m as f64 + s as f64 - 1.0)
}

/// Seconds of an optimizer update of `params` values at memory bandwidth (SGD momentum reads
/// parameter, gradient and momentum and writes two: 20 bytes per value).
pub fn update_s(c: &Cluster, params: f64) -> f64 {
    20.0 * params / c.mem_bandwidth
}
