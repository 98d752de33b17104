//! `convoy plan`: predicts the step time of every strategy on 1 to 1024 nodes from first
//! principles (docs/plan.md states every formula and its source), and recommends a layout.
//!
//! Inputs: the model (per layer: forward multiply–adds, parameters, output size per sample), the
//! global batch, the nodes, the link (α latency, β bandwidth), and the node's speed — either one
//! number (`--node-gflops`, with backward = 2 × forward) or a measured profile (`convoy plan
//! calibrate`: per-layer forward and backward seconds per sample on this machine).

pub mod calibrate;
mod cost;
mod model;
pub mod pipeline_sim;
pub mod report;

pub use cost::{
    allgather, allreduce, bubble_fraction, expected_max_normal, inverse_normal, p2p, ring_allreduce, straggle,
    tree_allreduce, update_s,
};
pub use model::{LayerCost, ModelCost};

use crate::parallel::partition::balanced_stages;
use crate::parallel::pipeline::Schedule;
use pipeline_sim::{simulate, Crossing};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Errors of the planner (bad input: exit code 2).
#[derive(Debug, Error)]
pub enum PlanError {
    /// A flag or profile is unusable; the message names it and gives a hint.
    #[error("{0}")]
    Input(String),
}

fn bad<T>(m: String) -> Result<T, PlanError> {
    Err(PlanError::Input(m))
}

/// The machine and network a plan is for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// Link bandwidth, bytes/s (each direction).
    pub bandwidth: f64,
    /// Link latency, seconds (α of the α–β model).
    pub latency: f64,
    /// Bandwidth per direction when every node sends and receives at once (ring collectives),
    /// bytes/s: `bandwidth` on a full-duplex link; measured lower on links whose directions
    /// share capacity (the emulated cluster's tbf-capped veth pairs).
    pub collective_bandwidth: f64,
    /// Latency of a collective's step, seconds (as `latency` unless measured apart).
    pub collective_latency: f64,
    /// Bytes/s through a parameter server's link when its workers push to it in turn and it
    /// replies to each in turn: `bandwidth` unless measured apart (`plan calibrate --comm mpi`
    /// times that round; over TCP it ran faster than a ping-pong on the emulated cluster).
    pub server_bandwidth: f64,
    /// Memory copy bandwidth of a node, bytes/s (optimizer updates are memory-bound).
    pub mem_bandwidth: f64,
    /// Cores of a node for one worker (the profile's layer times are for one such node). Below 1
    /// (emulated hosts sharing cores under a CPU quota), computation slows by 1/cores and
    /// communication does not overlap it: computation fills the quota, and the communication
    /// thread's polling in MPI takes from it — the same as the two sharing the quota equally
    /// while they overlap, the longer ending as late as if they ran one after the other (tried
    /// against overlap with computation at half speed: a tie,
    /// bench/results/2026-12-01-plan-dp-below-one-core.md). From one core on, it overlaps: the
    /// communication thread waits on the network, sleeping or yielding, and needs little CPU
    /// (measured on 2 emulated hosts of one core each:
    /// bench/results/2026-11-30-plan-vs-cluster-2.md).
    pub cores_per_node: f64,
    /// How fast a node computes relative to the profile's machine (2: twice as fast; 1 by
    /// default). With `cores_per_node` below 1 both apply; from one core on it is the only
    /// slowdown, and communication still overlaps computation (on the emulated cluster: 2 hosts
    /// of one core each computing at once deliver 0.89–0.94 of one host alone).
    #[serde(default = "one")]
    pub node_speed: f64,
    /// Spread of a node's computation: the coefficient of variation of one second of it (0.02:
    /// a second of computation takes 1 s ± 20 ms, one standard deviation). A phase of T seconds
    /// varies by `jitter`·√T (independent interruptions add up as a random walk), and a
    /// synchronisation of n nodes waits for the slowest of them (`straggle`).
    #[serde(default)]
    pub jitter: f64,
    /// MPI's eager limit, bytes: a message up to this size is sent at once, a longer one's rest
    /// only once its receive is posted (rendezvous; `pipeline_sim::EAGER_BYTES` by default).
    #[serde(default = "default_eager")]
    pub eager_bytes: f64,
}

fn one() -> f64 {
    1.0
}

fn default_eager() -> f64 {
    pipeline_sim::EAGER_BYTES
}

impl Cluster {
    /// Whether communication can run beside computation.
    pub fn overlaps(&self) -> bool {
        self.cores_per_node >= 1.0
    }

    /// The factor on computation times.
    pub fn compute_scale(&self) -> f64 {
        (1.0 / self.cores_per_node).max(1.0) / self.node_speed
    }
}

/// A strategy's predicted step.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    /// Strategy, with its layout ("dp", "ps k=2", "pipeline m=16", "hybrid mp=4", "tensor").
    pub strategy: String,
    /// Nodes (workers; parameter servers are extra nodes).
    pub nodes: usize,
    /// Seconds computing per step (the slowest worker).
    pub compute_s: f64,
    /// Seconds of communication not hidden behind computation.
    pub exposed_comm_s: f64,
    /// Seconds idle in the pipeline bubble.
    pub bubble_s: f64,
    /// Seconds in the optimizer update.
    pub optimizer_s: f64,
    /// Seconds waiting at synchronisations for the slowest node (`Cluster::jitter`).
    pub straggle_s: f64,
    /// Total step seconds.
    pub step_s: f64,
    /// Global images per second.
    pub images_per_s: f64,
    /// images/s ÷ (nodes × images/s of one node).
    pub efficiency: f64,
    /// Bytes per worker: parameters, optimizer state, activations.
    pub memory_bytes: f64,
    /// Pipeline: the layers after which its stages end (`convoy train --split-after`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub split_after: Vec<String>,
}

impl Prediction {
    /// The step lengthened by `seconds` of waiting for the slowest node.
    fn with_straggle(mut self, seconds: f64) -> Prediction {
        let old = self.step_s;
        self.straggle_s = seconds;
        self.step_s += seconds;
        self.images_per_s *= old / self.step_s;
        self.efficiency *= old / self.step_s;
        self
    }
}

/// Layout parameters fixed by the user (`convoy plan --servers 2 --micro-batches 8 ...`);
/// `None`: the planner tries several and keeps the fastest.
#[derive(Clone, Debug, Default)]
pub struct Pins {
    /// Parameter-server shards.
    pub servers: Option<usize>,
    /// Pipeline micro-batches.
    pub micro_batches: Option<usize>,
    /// Hybrid model-parallel group size.
    pub mp: Option<usize>,
    /// All-reduce bucket size, MiB.
    pub bucket_mb: Option<f64>,
    /// Pipeline schedule (`None`: 1F1B, as `convoy train`).
    pub schedule: Option<Schedule>,
}

/// What to plan.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The model's costs.
    pub model: ModelCost,
    /// The network and nodes.
    pub cluster: Cluster,
    /// Global batch.
    pub batch: usize,
    /// Layout parameters the user fixed.
    pub pins: Pins,
}

impl Plan {
    fn single_step(&self) -> f64 {
        self.model.step_s(self.batch as f64) * self.cluster.compute_scale()
            + update_s(&self.cluster, self.model.params() as f64)
    }

    #[allow(clippy::too_many_arguments)] // the parts of one step, each named at the call sites
    fn finish(
        &self,
        strategy: String,
        nodes: usize,
        compute_s: f64,
        exposed: f64,
        bubble: f64,
        opt: f64,
        memory: f64,
    ) -> Prediction {
        let step = compute_s + exposed + bubble + opt;
        let ips = self.batch as f64 / step;
        let one = self.batch as f64 / self.single_step();
        Prediction {
            strategy,
            nodes,
            compute_s,
            exposed_comm_s: exposed,
            bubble_s: bubble,
            optimizer_s: opt,
            straggle_s: 0.0,
            step_s: step,
            images_per_s: ips,
            efficiency: ips / (nodes as f64 * one),
            memory_bytes: memory,
            split_after: Vec::new(),
        }
    }

    /// Data parallelism with bucketed all-reduce overlapped with backward (as `--strategy
    /// allreduce`): buckets of the gradients, last layers first (first bucket ≤ 1 MiB, then
    /// `bucket_mb`), each reduced once its layers' backward is done, one at a time; what ends
    /// after backward is exposed. The update is sharded (1/n of the parameters per node).
    pub fn data_parallel(&self, n: usize, bucket_mb: f64) -> Prediction {
        let (b, scale) = (self.batch as f64 / n as f64, self.cluster.compute_scale());
        let l = &self.model.layers;
        let fwd: f64 = l.iter().map(|x| x.fwd(b)).sum::<f64>() * scale;
        let bwd: f64 = l.iter().map(|x| x.bwd(b)).sum::<f64>() * scale;
        let overlap = self.cluster.overlaps();
        // Backward runs the layers last to first; bucket k is ready when its lowest layer is done.
        let (mut t, mut comm_end, mut bucket_bytes, mut first) = (0.0f64, 0.0f64, 0.0f64, true);
        for (i, layer) in l.iter().enumerate().rev() {
            t += layer.bwd(b) * scale;
            bucket_bytes += 4.0 * layer.params as f64;
            let cap = if first { 1_048_576.0 } else { bucket_mb * 1_048_576.0 };
            if bucket_bytes >= cap || i == 0 {
                if bucket_bytes > 0.0 {
                    let ready = if overlap { t } else { bwd };
                    comm_end = comm_end.max(ready) + allreduce(&self.cluster, n, bucket_bytes);
                }
                bucket_bytes = 0.0;
                first = false;
            }
        }
        let exposed = (comm_end - bwd).max(0.0);
        let p = self.model.params() as f64;
        let memory = 4.0 * p * 2.0 + 8.0 * p / n as f64 + self.model.act_bytes() * b;
        // Every node's gradients must be in before the last bucket is reduced: one synchronisation.
        self.finish(
            format!("dp bucket={bucket_mb}MB"),
            n,
            fwd + bwd,
            exposed,
            0.0,
            update_s(&self.cluster, p / n as f64),
            memory,
        )
        .with_straggle(straggle(&self.cluster, n, fwd + bwd))
    }

    /// Synchronous parameter server with `k` shards on k extra nodes (as `--strategy ps`): after
    /// backward every worker pushes its gradients (1/k to each shard) and pulls the parameters;
    /// a shard's link carries n·bytes/k each way (incast), a worker's bytes each way.
    pub fn param_server(&self, n: usize, k: usize) -> Prediction {
        let b = self.batch as f64 / n as f64;
        let compute = self.model.step_s(b) * self.cluster.compute_scale();
        let bytes = 4.0 * self.model.params() as f64;
        let c = &self.cluster;
        let worker = 2.0 * (c.latency + bytes / c.server_bandwidth);
        let shard = 2.0 * (c.latency * n as f64 / k as f64 + n as f64 * bytes / k as f64 / c.server_bandwidth);
        let comm = worker.max(shard);
        let p = self.model.params() as f64;
        let memory = 4.0 * p * 2.0 + self.model.act_bytes() * b;
        // The shards wait for every worker's push.
        self.finish(format!("ps k={k}"), n, compute, comm, 0.0, update_s(&self.cluster, p / k as f64), memory)
            .with_straggle(straggle(&self.cluster, n, compute))
    }

    /// Pipeline of `n` stages (one per node) cut where the largest stage is smallest, `m`
    /// micro-batches, 1F1B (PipeDream-Flush; the default of `convoy train`) or GPipe (Huang et al.
    /// 2019) as pinned: the step is simulated pass by pass (pipeline_sim.rs), each activation and
    /// gradient crossing its cut as α + bytes/β, a message over MPI's eager limit only once its
    /// receiver is ready for it (rendezvous). Jitter is not modelled here: a stage waits for one
    /// neighbour at a time, and the schedule's slack absorbs part of a late pass.
    pub fn pipeline(&self, n: usize, m: usize) -> Option<Prediction> {
        let l = &self.model.layers;
        if n > l.len() || n < 2 {
            return None;
        }
        let cost: Vec<f64> = l.iter().map(|x| x.step(self.batch as f64 / m as f64)).collect();
        // The stages `convoy train --strategy pipeline` would cut.
        let stages = balanced_stages(&cost, |j| l[j].cut_after, n).ok()?;
        let cuts: Vec<usize> = stages.iter().map(|r| r.start).chain([l.len()]).collect();
        let mb = self.batch as f64 / m as f64;
        let scale = self.cluster.compute_scale();
        let fwd: Vec<f64> =
            cuts.windows(2).map(|w| l[w[0]..w[1]].iter().map(|x| x.fwd(mb)).sum::<f64>() * scale).collect();
        let bwd: Vec<f64> =
            cuts.windows(2).map(|w| l[w[0]..w[1]].iter().map(|x| x.bwd(mb)).sum::<f64>() * scale).collect();
        // One micro-batch's activations (forward) or their gradient (backward) over each cut.
        let crossings: Vec<Crossing> =
            cuts[1..n].iter().map(|&c| Crossing::new(4.0 * l[c - 1].out as f64 * mb, &self.cluster)).collect();
        let schedule = self.pins.schedule.unwrap_or(Schedule::OneFOneB);
        let total = simulate(&fwd, &bwd, &crossings, m, schedule);
        let free = vec![Crossing::free(); crossings.len()];
        let no_comm = simulate(&fwd, &bwd, &free, m, schedule);
        let compute = m as f64 * fwd.iter().zip(&bwd).map(|(f, b)| f + b).fold(0.0, f64::max);
        let params_max =
            cuts.windows(2).map(|w| l[w[0]..w[1]].iter().map(|x| x.params).sum::<usize>()).max().unwrap_or(0) as f64;
        // Micro-batches whose activations a stage holds at once: all under GPipe, at most the
        // stages under 1F1B.
        let held = if schedule == Schedule::GPipe { m } else { n.min(m) };
        let memory = 12.0 * params_max + self.model.act_bytes() * mb * held as f64;
        let name = match schedule {
            Schedule::OneFOneB => format!("pipeline m={m}"),
            Schedule::GPipe => format!("pipeline gpipe m={m}"),
        };
        let mut p = self.finish(
            name,
            n,
            compute,
            total - no_comm,
            no_comm - compute,
            update_s(&self.cluster, params_max),
            memory,
        );
        p.split_after = cuts[1..n].iter().map(|&c| l[c - 1].name.clone()).collect();
        Some(p)
    }

    /// Data-parallel convolutions, model-parallel classifier in groups of `mp` (Krizhevsky 2014;
    /// as `--strategy hybrid`): the convolutions on batch/n, the classifier slices on the group's
    /// batch; the group all-gathers the last convolution's output (and the labels), and its
    /// Linear layers alternate column- and row-parallel (Megatron): a row-parallel layer's output
    /// is all-reduced in forward, a column-parallel layer's input gradient in backward, a
    /// column-parallel last layer's output all-gathered. After backward the convolutions'
    /// gradients are all-reduced over all nodes, each classifier slice's over the n/mp groups.
    pub fn hybrid(&self, n: usize, mp: usize) -> Option<Prediction> {
        let l = &self.model.layers;
        let cut = l.iter().position(|x| x.fc)?;
        if mp < 2 || !n.is_multiple_of(mp) || cut == 0 {
            return None;
        }
        let dp = n / mp;
        let scale = self.cluster.compute_scale();
        let b = self.batch as f64 / n as f64;
        let group_b = self.batch as f64 / dp as f64;
        let conv_fwd: f64 = l[..cut].iter().map(|x| x.fwd(b)).sum::<f64>() * scale;
        let conv_bwd: f64 = l[..cut].iter().map(|x| x.bwd(b)).sum::<f64>() * scale;
        let fc: f64 = l[cut..].iter().map(|x| x.step(group_b)).sum::<f64>() / mp as f64 * scale;
        let c = &self.cluster;
        let bytes = |values: usize| 4.0 * values as f64 * group_b;
        // Features and the labels (a latency) gathered; then the classifier's exchanges.
        let mut exchange = allgather(c, mp, bytes(l[cut - 1].out)) + allgather(c, mp, 0.0);
        let mut column = true;
        for (j, layer) in l.iter().enumerate().skip(cut).filter(|(_, x)| x.fc) {
            exchange += if column {
                ring_allreduce(c, mp, bytes(l[j - 1].out))
            } else {
                ring_allreduce(c, mp, bytes(layer.out))
            };
            if column && !l[j + 1..].iter().any(|x| x.fc) {
                exchange += allgather(c, mp, bytes(layer.out));
            }
            column = !column;
        }
        let conv_params: f64 = l[..cut].iter().map(|x| x.params).sum::<usize>() as f64;
        let fc_params: f64 = l[cut..].iter().map(|x| x.params).sum::<usize>() as f64 / mp as f64;
        // (and the loss statistics, 3 values, over all nodes)
        let grads = allreduce(c, n, 4.0 * conv_params) + allreduce(c, dp, 4.0 * fc_params) + allreduce(c, n, 12.0);
        let memory = 12.0 * (conv_params + fc_params) + self.model.act_bytes() * b;
        // Synchronisations: the group's gather after the convolutions' forward, the classifier's
        // exchanges (one phase), the all-reduce over every node after the convolutions' backward.
        let wait = straggle(c, mp, conv_fwd) + straggle(c, mp, fc) + straggle(c, n, conv_bwd);
        Some(
            self.finish(
                format!("hybrid mp={mp}"),
                n,
                conv_fwd + conv_bwd + fc,
                exchange + grads,
                0.0,
                update_s(c, conv_params + fc_params),
                memory,
            )
            .with_straggle(wait),
        )
    }

    /// Tensor split over `n` nodes (every conv/linear layer in n slices): compute/n; every
    /// layer's output all-gathered in forward and its input gradient all-reduced in backward.
    pub fn tensor(&self, n: usize) -> Prediction {
        let b = self.batch as f64;
        let compute = self.model.step_s(b) / n as f64 * self.cluster.compute_scale();
        let comm: f64 = self
            .model
            .layers
            .iter()
            .filter(|x| x.params > 0)
            .map(|x| {
                allgather(&self.cluster, n, 4.0 * x.out as f64 * b)
                    + ring_allreduce(&self.cluster, n, 4.0 * x.out as f64 * b)
            })
            .sum();
        // Each of those exchanges waits for the slowest node's slice of its layer.
        let scale = self.cluster.compute_scale() / n as f64;
        let wait: f64 = self
            .model
            .layers
            .iter()
            .filter(|x| x.params > 0)
            .map(|x| straggle(&self.cluster, n, x.fwd(b) * scale) + straggle(&self.cluster, n, x.bwd(b) * scale))
            .sum();
        let p = self.model.params() as f64 / n as f64;
        let memory = 12.0 * p + self.model.act_bytes() * b;
        self.finish("tensor".into(), n, compute, comm, 0.0, update_s(&self.cluster, p), memory).with_straggle(wait)
    }

    /// Every strategy's best layout at `n` nodes (`strategies` filters: dp, ps, pipeline, tensor, hybrid).
    pub fn at(&self, n: usize, strategies: &[String]) -> Vec<Prediction> {
        self.layouts(n, strategies, false)
    }

    /// `at`, or with `all` every layout tried (each bucket size, shard count, ...).
    pub fn layouts(&self, n: usize, strategies: &[String], all: bool) -> Vec<Prediction> {
        let want = |s: &str| strategies.is_empty() || strategies.iter().any(|x| x == s);
        let best = |v: Vec<Prediction>| -> Vec<Prediction> {
            if all {
                v
            } else {
                v.into_iter().min_by(|a, b| a.step_s.total_cmp(&b.step_s)).into_iter().collect()
            }
        };
        let mut out = Vec::new();
        // One node: plain training (every strategy degenerates to it).
        let split = n > 1;
        let pins = &self.pins;
        if want("dp") {
            let buckets = pins.bucket_mb.map_or(vec![1.0, 5.0, 25.0, 100.0], |b| vec![b]);
            out.extend(best(buckets.iter().map(|&mb| self.data_parallel(n, mb)).collect()));
        }
        if want("ps") && (split || pins.servers.is_some()) {
            let shards: Vec<usize> = pins
                .servers
                .map_or_else(|| (0..).map(|e| 1usize << e).take_while(|&k| k <= n.max(1)).collect(), |k| vec![k]);
            out.extend(best(shards.iter().map(|&k| self.param_server(n, k)).collect()));
        }
        if want("pipeline") && split {
            let micro: Vec<usize> = pins
                .micro_batches
                .map_or_else(|| [1, 2, 4, 8].iter().map(|&f| (f * n).min(self.batch)).collect(), |m| vec![m]);
            out.extend(best(micro.iter().filter_map(|&m| self.pipeline(n, m)).collect()));
        }
        if want("tensor") && split {
            out.push(self.tensor(n));
        }
        if want("hybrid") && split {
            let groups: Vec<usize> =
                pins.mp.map_or_else(|| (2..=n).filter(|&mp| n.is_multiple_of(mp)).collect(), |mp| vec![mp]);
            out.extend(best(groups.iter().filter_map(|&mp| self.hybrid(n, mp)).collect()));
        }
        out
    }
}

/// Parses a bandwidth: `10gbit`, `100mbit`, `25gbit`, `1.5GB/s`, `200MB/s`, or bytes/s.
pub fn parse_bandwidth(s: &str) -> Result<f64, PlanError> {
    let t = s.trim().to_ascii_lowercase();
    let units: [(&str, f64); 8] = [
        ("gbit", 1e9 / 8.0),
        ("mbit", 1e6 / 8.0),
        ("kbit", 1e3 / 8.0),
        ("gb/s", 1e9),
        ("mb/s", 1e6),
        ("kb/s", 1e3),
        ("b/s", 1.0),
        ("", 1.0),
    ];
    match with_unit(&t, &units) {
        Some((v, f)) if v.is_finite() && v > 0.0 => Ok(v * f),
        Some(_) => bad(format!("--link {s}: the bandwidth must be positive")),
        None => bad(format!("--link {s}: not a bandwidth; hint: 10gbit, 100mbit or 1.5GB/s")),
    }
}

/// The number before the first of `units` that `t` ends with and the unit's factor, where
/// what precedes that suffix is a number.
fn with_unit(t: &str, units: &[(&str, f64)]) -> Option<(f64, f64)> {
    units.iter().find_map(|&(u, f)| t.strip_suffix(u).and_then(|num| num.trim().parse::<f64>().ok()).map(|v| (v, f)))
}

/// A jitter (`--jitter`): a fraction (0.02) or a percentage (2%), not negative.
pub fn parse_jitter(s: &str) -> Result<f64, PlanError> {
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    };
    match v {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => bad(format!("--jitter {s}: must be a non-negative fraction or percentage; hint: 0.02 or 2%")),
    }
}

/// A size in bytes (`--eager-limit`): `65536`, `64KiB`, `8MiB`, `4MB`; positive.
pub fn parse_bytes(flag: &str, s: &str) -> Result<f64, PlanError> {
    let t = s.trim().to_ascii_lowercase();
    let units = [
        ("kib", 1024.0),
        ("mib", 1048576.0),
        ("gib", 1073741824.0),
        ("kb", 1e3),
        ("mb", 1e6),
        ("gb", 1e9),
        ("b", 1.0),
        ("", 1.0),
    ];
    match with_unit(&t, &units) {
        Some((v, f)) if v.is_finite() && v > 0.0 => Ok(v * f),
        Some(_) => bad(format!("{flag} {s}: must be positive; hint: 64KiB")),
        None => bad(format!("{flag} {s}: not a size in bytes; hint: 65536, 64KiB or 8MiB")),
    }
}

/// Parses a duration: `5us`, `1ms`, `0.2s`, `100ns`.
pub fn parse_latency(s: &str) -> Result<f64, PlanError> {
    let t = s.trim().to_ascii_lowercase();
    // Zero needs no unit; any other bare number is ambiguous.
    if t.parse::<f64>() == Ok(0.0) {
        return Ok(0.0);
    }
    for (u, f) in [("ns", 1e-9), ("us", 1e-6), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0)] {
        if let Some(num) = t.strip_suffix(u) {
            if let Ok(v) = num.trim().parse::<f64>() {
                if v.is_finite() && v >= 0.0 {
                    return Ok(v * f);
                }
            }
            return bad(format!("--latency {s}: must be a non-negative duration; hint: 5us"));
        }
    }
    bad(format!("--latency {s}: not a duration (a number with a unit: ns, us, ms, s); hint: 5us, 1ms"))
}

#[cfg(test)]
mod tests;
