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
/// Stage s runs `schedule.passes(s, S, m)` in order on node s, each forward taking `fwd[s]` and
/// each backward `bwd[s]` seconds. A forward on stage s > 0 needs stage s − 1's forward of the
/// same micro-batch, carried over `crossings[s − 1]`; a backward on stage s < S − 1 needs stage
/// s + 1's backward of it, carried back; the last stage's backward follows its own forward.
///
/// The network is simulated as a fluid, event by event: a message leaves when its pass ends
/// (sends are buffered: the sender goes on) and crosses at once with the others in flight. Every
/// node has an outgoing and an incoming link; the messages in flight share them max-min fairly
/// (as TCP flows through one capped link do), one message at a time between two nodes (one
/// connection, in order). A message alone on its links takes `seconds`; `duplex_seconds` while
/// the sender also receives or the receiver also sends. Its bytes over the eager limit
/// (`rendezvous_share`) move only once the receiving stage has finished the pass before and waits
/// for it (the receive is posted). Events: a pass ends, a message arrives, a message's eager part
/// is through; between two events every rate is constant.
pub fn simulate(fwd: &[f64], bwd: &[f64], crossings: &[Crossing], m: usize, schedule: Schedule) -> f64 {
    let stages = fwd.len();
    debug_assert!(bwd.len() == stages && crossings.len() + 1 == stages);
    let passes: Vec<Vec<Pass>> = (0..stages).map(|s| schedule.passes(s, stages, m)).collect();
    // The message each pass waits for (index into `msgs`), once it is sent.
    let (mut for_f, mut for_b) = (vec![vec![None::<usize>; m]; stages], vec![vec![None::<usize>; m]; stages]);
    let mut msgs: Vec<Message> = Vec::new();
    let mut done_f = vec![vec![false; m]; stages];
    let (mut next, mut busy) = (vec![0usize; stages], vec![None::<f64>; stages]);
    let mut t = 0.0f64;
    loop {
        // Passes that end now send their output; idle stages start what has arrived, or post
        // the receive they wait for. Repeated, as a free crossing arrives when it is sent.
        let mut changed = true;
        while changed {
            changed = false;
            for s in 0..stages {
                if busy[s].is_some_and(|end| end <= t) {
                    busy[s] = None;
                    let sent = match passes[s][next[s]] {
                        Pass::Forward(k) if s + 1 < stages => Some((s + 1, Pass::Forward(k), s)),
                        Pass::Forward(k) => {
                            done_f[s][k] = true;
                            None
                        }
                        Pass::Backward(k) if s > 0 => Some((s - 1, Pass::Backward(k), s - 1)),
                        Pass::Backward(_) => None,
                    };
                    if let Some((to, pass, cut)) = sent {
                        let x = crossings[cut];
                        let i = msgs.len();
                        let arrived = (x.seconds <= 0.0).then_some(t);
                        msgs.push(Message { from: s, to, x, left: 1.0, posted: false, arrived });
                        match pass {
                            Pass::Forward(k) => for_f[to][k] = Some(i),
                            Pass::Backward(k) => for_b[to][k] = Some(i),
                        }
                    }
                    next[s] += 1;
                    changed = true;
                }
                let Some(&pass) = passes[s].get(next[s]) else { continue };
                if busy[s].is_some() {
                    continue;
                }
                let waits_for = match pass {
                    Pass::Forward(_) if s == 0 => Ok(()),
                    Pass::Forward(k) => Err(for_f[s][k]),
                    Pass::Backward(k) if s + 1 == stages => if done_f[s][k] { Ok(()) } else { Err(None) },
                    Pass::Backward(k) => Err(for_b[s][k]),
                };
                let ready = match waits_for {
                    Ok(()) => true,
                    Err(Some(i)) if msgs[i].arrived.is_some() => true,
                    Err(Some(i)) => {
                        msgs[i].posted = true;
                        false
                    }
                    Err(None) => false,
                };
                if ready {
                    busy[s] = Some(t + if matches!(pass, Pass::Forward(_)) { fwd[s] } else { bwd[s] });
                    changed = true;
                }
            }
        }
        // The messages that move: per pair of nodes the first one sent that may move.
        let mut flowing: Vec<usize> = Vec::new();
        for (i, msg) in msgs.iter().enumerate() {
            let may = msg.arrived.is_none() && (msg.posted || msg.left > msg.x.rendezvous_share + EPS);
            if may && !flowing.iter().any(|&j| msgs[j].from == msg.from && msgs[j].to == msg.to) {
                flowing.push(i);
            }
        }
        let shares = fair_shares(&flowing.iter().map(|&i| (msgs[i].from, msgs[i].to)).collect::<Vec<_>>(), stages);
        let rates: Vec<f64> = flowing
            .iter()
            .zip(&shares)
            .map(|(&i, share)| {
                let (a, b) = (msgs[i].from, msgs[i].to);
                let duplex = flowing.iter().any(|&j| msgs[j].to == a || msgs[j].from == b);
                share / if duplex { msgs[i].x.duplex_seconds } else { msgs[i].x.seconds }
            })
            .collect();
        // The next event.
        let until = |i: usize| msgs[i].left - if msgs[i].posted { 0.0 } else { msgs[i].x.rendezvous_share };
        let mut dt = busy.iter().flatten().map(|end| end - t).fold(f64::INFINITY, f64::min);
        for (&i, r) in flowing.iter().zip(&rates) {
            dt = dt.min(until(i) / r);
        }
        if !dt.is_finite() {
            break;
        }
        t += dt.max(0.0);
        for (&i, r) in flowing.iter().zip(&rates) {
            let msg = &mut msgs[i];
            msg.left -= r * dt;
            if msg.left <= EPS {
                msg.arrived = Some(t);
            }
        }
    }
    debug_assert!(next.iter().zip(&passes).all(|(n, p)| *n == p.len()), "a schedule that cannot finish");
    t
}

/// Fractions of a link below which a message counts as through (rounding of the event times).
const EPS: f64 = 1e-12;

/// A message in flight between two stages' nodes.
struct Message {
    from: usize,
    to: usize,
    x: Crossing,
    /// The share of the message still to cross.
    left: f64,
    /// Whether the receiving stage waits for it (its rendezvous part may move).
    posted: bool,
    arrived: Option<f64>,
}

/// Max-min fair shares of flows (sender, receiver) over links of capacity 1, one outgoing and
/// one incoming per node (progressive filling: the most contended link's flows get an equal
/// share of it, and the rest is shared again without them).
pub(super) fn fair_shares(flows: &[(usize, usize)], nodes: usize) -> Vec<f64> {
    let mut share = vec![None::<f64>; flows.len()];
    // Links 0..nodes outgoing, nodes..2·nodes incoming.
    let mut left = vec![1.0f64; 2 * nodes];
    let links = |&(a, b): &(usize, usize)| [a, nodes + b];
    loop {
        let mut users = vec![0usize; 2 * nodes];
        for (f, s) in flows.iter().zip(&share) {
            if s.is_none() {
                for l in links(f) {
                    users[l] += 1;
                }
            }
        }
        let Some(bottleneck) = (0..2 * nodes).filter(|&l| users[l] > 0).min_by(|&x, &y| (left[x] / users[x] as f64).total_cmp(&(left[y] / users[y] as f64))) else { break };
        let level = left[bottleneck] / users[bottleneck] as f64;
        for (f, s) in flows.iter().zip(share.iter_mut()) {
            if s.is_none() && links(f).contains(&bottleneck) {
                *s = Some(level);
                for l in links(f) {
                    left[l] -= level;
                }
            }
        }
    }
    share.into_iter().map(|s| s.unwrap_or(0.0)).collect()
}
