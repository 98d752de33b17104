//! One pipeline step simulated pass by pass, in the order the stages run them
//! (`Schedule::passes`, shared with `--strategy pipeline`).
//!
//! A closed formula (GPipe's "the first micro-batch crosses every stage, the others follow at the
//! slowest stage's pace") misses two things measured on the emulated cluster
//! (bench/results/2026-11-30-plan-vs-cluster-3.md): under 1F1B a stage alternates forwards and
//! backwards, so a slow link sits inside the loop stage s → s+1 → s and is not hidden behind the
//! next micro-batch; and MPI moves a message over its eager limit only once the receiver has
//! posted the receive (rendezvous), i.e. once the receiving stage has finished the pass before —
//! the transfer then adds to that stage's time instead of overlapping it.

use super::Cluster;
use crate::parallel::pipeline::{Pass, Schedule};

/// Open MPI's default TCP eager limit (`btl_tcp_eager_limit`, 64 KiB), `Cluster::eager_bytes`
/// unless `--eager-limit` says otherwise: a message is sent at once up to this many bytes; the
/// rest of a longer one waits for its receive to be posted (rendezvous).
pub const EAGER_BYTES: f64 = 65536.0;

/// A message over one cut between stages.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Crossing {
    /// Seconds on the link (α + bytes/β).
    pub seconds: f64,
    /// Seconds when a node's link carries data both ways at once: α + bytes/β of the
    /// collectives, measured with every node sending and receiving (docs/plan.md says why).
    pub duplex_seconds: f64,
    /// The share of the message over the eager limit, which moves only once the receive is
    /// posted (rendezvous; 0: none).
    pub rendezvous_share: f64,
}

impl Crossing {
    /// A message of `bytes` on `cluster`'s link: point to point, or at the collectives' rate
    /// when the link is busy both ways; the part over the cluster's eager limit waits for its
    /// receive.
    pub fn new(bytes: f64, cluster: &Cluster) -> Crossing {
        Crossing {
            seconds: cluster.latency + bytes / cluster.bandwidth,
            duplex_seconds: cluster.collective_latency + bytes / cluster.collective_bandwidth,
            rendezvous_share: if bytes > cluster.eager_bytes { 1.0 - cluster.eager_bytes / bytes } else { 0.0 },
        }
    }

    /// No cost at all.
    pub fn free() -> Crossing {
        Crossing { seconds: 0.0, duplex_seconds: 0.0, rendezvous_share: 0.0 }
    }
}

/// Seconds from the step's start until every stage has run its passes.
///
/// Stage s runs `schedule.passes(s, S, m)` in order, each forward taking `fwd[s]` and each
/// backward `bwd[s]` seconds. A forward on stage s > 0 needs stage s − 1's forward of the same
/// micro-batch, carried over `crossings[s − 1]`; a backward on stage s < S − 1 needs stage
/// s + 1's backward of it, carried back; the last stage's backward follows its own forward. Stage
/// s runs on node s, whose link sends one message at a time and receives one at a time (sends
/// are buffered: the sender goes on); a message starts when the sender has it, the sender's
/// outgoing and the receiver's incoming side are free, and takes `seconds` (`duplex_seconds`
/// when either node's link carries a message the other way when it starts); its bytes over the
/// eager limit (rendezvous) move only once the receiving stage has finished its previous pass and
/// posted the receive, at the same rate.
pub fn simulate(fwd: &[f64], bwd: &[f64], crossings: &[Crossing], m: usize, schedule: Schedule) -> f64 {
    let stages = fwd.len();
    debug_assert!(bwd.len() == stages && crossings.len() + 1 == stages);
    let passes: Vec<Vec<Pass>> = (0..stages).map(|s| schedule.passes(s, stages, m)).collect();
    let mut done_f = vec![vec![None::<f64>; m]; stages];
    let mut done_b = vec![vec![None::<f64>; m]; stages];
    let (mut free, mut next) = (vec![0.0f64; stages], vec![0usize; stages]);
    // When each node's link is next free to send and to receive.
    let (mut out_free, mut in_free) = (vec![0.0f64; stages], vec![0.0f64; stages]);
    loop {
        let mut progressed = false;
        for s in 0..stages {
            while let Some(&pass) = passes[s].get(next[s]) {
                // What the pass waits for: (when its input exists, the sending node and cut).
                let (input, from) = match pass {
                    Pass::Forward(_) if s == 0 => (Some(0.0), None),
                    Pass::Forward(k) => (done_f[s - 1][k], Some((s - 1, s - 1))),
                    Pass::Backward(k) if s + 1 == stages => (done_f[s][k], None),
                    Pass::Backward(k) => (done_b[s + 1][k], Some((s + 1, s))),
                };
                let Some(ready) = input else { break };
                let arrives = match from {
                    None => ready,
                    Some((sender, c)) => {
                        let x = crossings[c];
                        let begin = ready.max(out_free[sender]).max(in_free[s]);
                        let duplex = in_free[sender] > begin || out_free[s] > begin;
                        let t = if duplex { x.duplex_seconds } else { x.seconds };
                        // The eager part from `begin`; the rest once the receive is posted.
                        let end = (begin + t).max(free[s] + t * x.rendezvous_share);
                        out_free[sender] = end;
                        in_free[s] = end;
                        end
                    }
                };
                let end = free[s].max(arrives)
                    + match pass {
                        Pass::Forward(_) => fwd[s],
                        Pass::Backward(_) => bwd[s],
                    };
                match pass {
                    Pass::Forward(k) => done_f[s][k] = Some(end),
                    Pass::Backward(k) => done_b[s][k] = Some(end),
                }
                free[s] = end;
                next[s] += 1;
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    debug_assert!(next.iter().zip(&passes).all(|(n, p)| *n == p.len()), "a schedule that cannot finish");
    free.iter().copied().fold(0.0, f64::max)
}
