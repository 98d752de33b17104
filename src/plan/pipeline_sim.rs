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
/// The network is simulated event by event: a message leaves when its pass ends (sends are
/// buffered: the sender goes on). Every node has an outgoing and an incoming link, each carrying
/// one message at a time: a message moves once no message sent before it holds its sender's
/// outgoing or its receiver's incoming link (so one at a time between two nodes: one
/// connection, in order). First come, first served, not a fair share: a TCP flow that is under
/// way holds the link's queue, and a newer one's slow start (one round trip per doubling, the
/// round trip stretched by that queue) lasts about as long as these messages do; on the
/// emulated cluster the fair share predicted 3-stage pipelines at 100 Mbit/s 12–15 % slower
/// than measured, first come first served −1 … +3 % (bench/results/2026-12-01-plan-vs-cluster-6.md).
/// A moving message crosses at the rate of `seconds`; of `duplex_seconds` while its sender also
/// receives or its receiver also sends (the rate can change under way). Its bytes over the eager
/// limit (`rendezvous_share`) move only once the receiving stage has finished the pass before
/// and waits for it (the receive is posted). Events: a pass ends, a message arrives, a message's
/// eager part is through; between two events every rate is constant.
// Long: one event-by-event simulation loop whose state (stage clocks, queues, messages in flight) is shared by every
// branch.
pub fn simulate(fwd: &[f64], bwd: &[f64], crossings: &[Crossing], m: usize, schedule: Schedule) -> f64 {
    let stages = fwd.len();
    debug_assert!(bwd.len() == stages && crossings.len() + 1 == stages);
    let passes: Vec<Vec<Pass>> = (0..stages).map(|s| schedule.passes(s, stages, m)).collect();
    // The message each pass waits for (index into `msgs`), once it is sent.
    let (mut for_f, mut for_b) = (vec![vec![None::<usize>; m]; stages], vec![vec![None::<usize>; m]; stages]);
    let mut msgs: Vec<Message> = Vec::new();
    // The messages sent and not yet arrived, in the order they were sent.
    let mut in_flight: Vec<usize> = Vec::new();
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
                        in_flight.push(i);
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
                    Pass::Backward(k) if s + 1 == stages => {
                        if done_f[s][k] {
                            Ok(())
                        } else {
                            Err(None)
                        }
                    }
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
        // The messages that move: oldest first, each that may move (its eager part, or all of
        // it once posted) and finds its two links free. A later message between the same two
        // nodes needs the same links, so it waits behind the earlier one (one connection).
        in_flight.retain(|&i| msgs[i].arrived.is_none());
        let ready: Vec<usize> = in_flight
            .iter()
            .copied()
            .filter(|&i| msgs[i].posted || msgs[i].left > msgs[i].x.rendezvous_share + EPS)
            .collect();
        let go = first_come(&ready.iter().map(|&i| (msgs[i].from, msgs[i].to)).collect::<Vec<_>>(), stages);
        let moving: Vec<usize> = ready.iter().zip(&go).filter(|(_, &g)| g).map(|(&i, _)| i).collect();
        // Which nodes send and receive now (for the duplex rate).
        let (mut sends, mut receives) = (vec![false; stages], vec![false; stages]);
        for &i in &moving {
            sends[msgs[i].from] = true;
            receives[msgs[i].to] = true;
        }
        let rates: Vec<f64> = moving
            .iter()
            .map(|&i| {
                let x = &msgs[i];
                1.0 / if receives[x.from] || sends[x.to] { x.x.duplex_seconds } else { x.x.seconds }
            })
            .collect();
        // The next event.
        let until = |i: usize| msgs[i].left - if msgs[i].posted { 0.0 } else { msgs[i].x.rendezvous_share };
        let mut dt = busy.iter().flatten().map(|end| end - t).fold(f64::INFINITY, f64::min);
        for (&i, r) in moving.iter().zip(&rates) {
            dt = dt.min(until(i) / r);
        }
        if !dt.is_finite() {
            break;
        }
        t += dt.max(0.0);
        for (&i, r) in moving.iter().zip(&rates) {
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

/// Which of the flows (sender, receiver), in the order they were sent, move now: each that finds
/// its sender's outgoing and its receiver's incoming link not taken by a flow sent before it.
pub(super) fn first_come(flows: &[(usize, usize)], nodes: usize) -> Vec<bool> {
    let (mut out, mut into) = (vec![false; nodes], vec![false; nodes]);
    flows
        .iter()
        .map(|&(a, b)| {
            let go = !out[a] && !into[b];
            if go {
                out[a] = true;
                into[b] = true;
            }
            go
        })
        .collect()
}
