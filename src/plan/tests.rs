use super::*;
use crate::parallel::pipeline::Schedule;
use pipeline_sim::{simulate, Crossing};

fn cluster(gbit: f64, latency: f64) -> Cluster {
    Cluster {
        bandwidth: gbit * 1e9 / 8.0,
        latency,
        collective_bandwidth: gbit * 1e9 / 8.0,
        collective_latency: latency,
        server_bandwidth: gbit * 1e9 / 8.0,
        mem_bandwidth: 10e9,
        cores_per_node: 8.0,
        node_speed: 1.0,
        jitter: 0.0,
        eager_bytes: pipeline_sim::EAGER_BYTES,
    }
}

/// A made-up 3-layer model: conv (no params counted), fc1 1 M params, fc2 10 k params.
fn toy() -> ModelCost {
    let l = |name: &str, f: f64, params: usize, out: usize, fc: bool| LayerCost {
        name: name.into(),
        fwd_s: f,
        bwd_s: 2.0 * f,
        fwd_fixed_s: 0.0,
        bwd_fixed_s: 0.0,
        params,
        out,
        fc,
        cut_after: true,
        kernel: String::new(),
    };
    ModelCost {
        model: "toy".into(),
        input: 784,
        layers: vec![
            l("conv", 1e-4, 1000, 4000, false),
            l("fc1", 1e-5, 1_000_000, 1000, true),
            l("fc2", 1e-6, 10_000, 10, true),
        ],
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1e-12)
}

#[test]
fn ring_tree_allgather_and_bubble_match_hand_computed_values() {
    // 10 Gbit/s = 1.25e9 B/s, α = 5 µs; 100 MB over 4 nodes:
    // ring = 2·3·5e-6 + 2·3/4·1e8/1.25e9 = 3e-5 + 0.12 = 0.12003 s.
    let c = cluster(10.0, 5e-6);
    assert!(close(ring_allreduce(&c, 4, 1e8), 0.12003));
    // tree = 2·log2(4)·(5e-6 + 1e8/1.25e9) = 4·0.080005 = 0.32002 s; allreduce picks the ring.
    assert!(close(tree_allreduce(&c, 4, 1e8), 0.32002));
    assert!(close(allreduce(&c, 4, 1e8), 0.12003));
    // 8 bytes over 1024 nodes: tree 2·10·(5e-6 + 6.4e-9) beats ring 2·1023·5e-6.
    assert!(close(allreduce(&c, 1024, 8.0), 20.0 * (5e-6 + 8.0 / 1.25e9)));
    // all-gather of 100 MB on 4 nodes: 3·5e-6 + 3/4·0.08 = 0.060015.
    assert!(close(allgather(&c, 4, 1e8), 0.060015));
    assert_eq!(ring_allreduce(&c, 1, 1e8), 0.0);
    assert!(close(bubble_fraction(4, 8), 3.0 / 11.0));
    assert!(close(bubble_fraction(2, 1), 0.5));
    assert!(close(update_s(&c, 1e6), 20.0 * 1e6 / 10e9));
}

#[test]
fn data_parallel_and_ps_match_hand_computed_steps() {
    let c = cluster(10.0, 5e-6);
    let plan = Plan { model: toy(), cluster: c.clone(), batch: 64, pins: Pins::default() };
    // One node: compute 64 · 3·(1e-4 + 1e-5 + 1e-6) s, no communication.
    let one = plan.data_parallel(1, 25.0);
    assert!(close(one.compute_s, 64.0 * 3.0 * 1.11e-4));
    assert_eq!(one.exposed_comm_s, 0.0);
    assert!(close(one.efficiency, 1.0));
    // Two nodes, 32 samples each. Buckets, last layers first: fc2+fc1 (4.04 MB ≥ 1 MiB) is ready
    // after their backward (32·2·(1e-6 + 1e-5) = 7.04e-4 s), then conv (4 kB) after the whole
    // backward (32·2·1.11e-4 = 7.104e-3 s). fc bucket: 2·5e-6 + 4.04e6/1.25e9 = 3.242e-3 s,
    // done at 3.946e-3 < 7.104e-3; conv bucket: 1e-5 + 4000/1.25e9 → exposed 1.32e-5 s.
    let two = plan.data_parallel(2, 25.0);
    assert!(close(two.compute_s, 32.0 * 3.0 * 1.11e-4));
    let conv_bucket = ring_allreduce(&c, 2, 4000.0).min(tree_allreduce(&c, 2, 4000.0));
    assert!(close(two.exposed_comm_s, conv_bucket), "{} vs {conv_bucket}", two.exposed_comm_s);
    // PS, 2 workers, 1 shard: the shard's link carries 2 × 4.044 MB each way.
    let ps = plan.param_server(2, 1);
    let bytes = 4.0 * 1_011_000.0;
    let shard = 2.0 * (5e-6 * 2.0 + 2.0 * bytes / 1.25e9);
    assert!(close(ps.exposed_comm_s, shard));
    // Measured apart, the parameter server's round sets its rate; nothing else changes.
    let fast = Plan { cluster: Cluster { server_bandwidth: 2.5e9, ..c.clone() }, ..plan.clone() };
    assert!(close(fast.param_server(2, 1).exposed_comm_s, 2.0 * (5e-6 * 2.0 + 2.0 * bytes / 2.5e9)));
    assert!(close(fast.data_parallel(2, 25.0).step_s, two.step_s));
}

#[test]
fn pipeline_matches_hand_computed_steps_and_cuts_only_where_allowed() {
    // 2 stages, 8 micro-batches of 8 samples. Stage 0 = conv: forward 1e-4·8 = 8e-4 s, backward
    // 1.6e-3 s per micro-batch; stage 1 = fc1 + fc2: 8.8e-5 s and 1.76e-4 s. The cut sends
    // 4000 values · 4 B · 8 = 128 kB each way: x = α + 128 kB/β.
    // GPipe (pinned; 1F1B below).
    let pins = Pins { schedule: Some(Schedule::GPipe), ..Pins::default() };
    let mut plan = Plan { model: toy(), cluster: cluster(100.0, 1e-6), batch: 64, pins };
    // 100 Gbit/s: x = 1e-6 + 1.024e-5 s, below every stage's time. Forwards: the first
    // micro-batch through both stages and the link, 7 more at stage 0's pace; backwards alike,
    // except that the part of each gradient over MPI's 64 KiB eager limit (r = 1 − 65536/128000
    // of it) crosses only once stage 0 has finished the backward before and posted its receive:
    // 7 · r · x more.
    let x = 1e-6 + 128_000.0 / 1.25e10;
    let r = 1.0 - 65_536.0 / 128_000.0;
    let fwd = 7.0 * 8e-4 + (8e-4 + 8.8e-5) + x;
    let bwd = 7.0 * 1.6e-3 + (1.6e-3 + 1.76e-4) + x + 7.0 * r * x;
    let p = plan.pipeline(2, 8).unwrap();
    assert_eq!(p.split_after, vec!["conv".to_string()]);
    assert_eq!(p.strategy, "pipeline gpipe m=8");
    assert!(close(p.step_s - p.optimizer_s, fwd + bwd), "{p:?}");
    assert!(close(p.compute_s, 8.0 * 2.4e-3) && close(p.exposed_comm_s, 2.0 * x + 7.0 * r * x), "{p:?}");
    assert!(close(p.bubble_s, (8.8e-5 + 1.76e-4) + 0.0), "{p:?}");
    // 10 Mbit/s: x = 1e-6 + 0.1024 s, the link sets the pace of both phases (each message's
    // eager part crosses while the receiver still computes, its rest takes longer than that).
    plan.cluster = cluster(0.01, 1e-6);
    let x = 1e-6 + 128_000.0 / 1.25e6;
    let p = plan.pipeline(2, 8).unwrap();
    assert!(close(p.step_s - p.optimizer_s, 16.0 * x + (8e-4 + 8.8e-5) + (1.6e-3 + 1.76e-4)), "{p:?}");
    // 1F1B (the default): the simulated schedule (its timelines are checked by hand in
    // a_simulated_pipeline_step_matches_hand_computed_timelines) on these stages and this link.
    plan.pins.schedule = None;
    let p = plan.pipeline(2, 8).unwrap();
    assert_eq!(p.strategy, "pipeline m=8");
    let want = simulate(
        &[8e-4, 8.8e-5],
        &[1.6e-3, 1.76e-4],
        &[Crossing::new(128_000.0, &plan.cluster)],
        8,
        Schedule::OneFOneB,
    );
    assert!(close(p.step_s - p.optimizer_s, want), "{p:?} vs {want}");
    let gpipe = Plan { pins: Pins { schedule: Some(Schedule::GPipe), ..Pins::default() }, ..plan.clone() }
        .pipeline(2, 8)
        .unwrap();
    assert!(p.step_s < gpipe.step_s, "1F1B sends activations and gradients at once: {p:?} vs {gpipe:?}");
    // A residual connection over the conv's output: the only cut left is after fc1.
    plan.model.layers[0].cut_after = false;
    assert_eq!(plan.pipeline(2, 8).unwrap().split_after, vec!["fc1".to_string()]);
    assert!(plan.pipeline(3, 8).is_none(), "two units cannot make three stages");
}

#[test]
fn the_schedules_run_their_passes_in_the_documented_order() {
    use crate::parallel::pipeline::Pass::{Backward as B, Forward as F};
    assert_eq!(Schedule::GPipe.passes(1, 3, 3), vec![F(0), F(1), F(2), B(2), B(1), B(0)]);
    // 1F1B, stage s of S: S − s − 1 forwards to fill the pipe, then one forward and one backward.
    assert_eq!(Schedule::OneFOneB.passes(0, 3, 4), vec![F(0), F(1), F(2), B(0), F(3), B(1), B(2), B(3)]);
    assert_eq!(Schedule::OneFOneB.passes(2, 3, 2), vec![F(0), B(0), F(1), B(1)]);
    assert_eq!(Schedule::OneFOneB.passes(0, 4, 2), vec![F(0), F(1), B(0), B(1)]);
}

#[test]
fn a_simulated_pipeline_step_matches_hand_computed_timelines() {
    // 2 stages, 2 micro-batches, forward 1 s, backward 2 s on each stage, 0.5 s per crossing.
    let (f, b) = ([1.0, 1.0], [2.0, 2.0]);
    let x = |share: f64| [Crossing { seconds: 0.5, duplex_seconds: 0.5, rendezvous_share: share }];
    // 1F1B, stage 0: F0 0–1, F1 1–2, B0, B1; stage 1: F0, B0, F1, B1.
    // Stage 1: F0 after its crossing 1–1.5: 1.5–2.5, B0 2.5–4.5. Eager: activation 1 crossed
    // 2–2.5, so F1 4.5–5.5, B1 5.5–7.5. Stage 0: gradient 0 crosses 4.5–5, B0 5–7; gradient 1
    // 7.5–8, B1 8–10.
    assert!(close(simulate(&f, &b, &x(0.0), 2, Schedule::OneFOneB), 10.0));
    // All of each message over the eager limit (rendezvous): activation 1 waits until stage 1 is
    // done with B0 (4.5): 4.5–5, F1 5–6, B1 6–8; gradient 1 8–8.5, B1 on stage 0 8.5–10.5.
    assert!(close(simulate(&f, &b, &x(1.0), 2, Schedule::OneFOneB), 10.5));
    // Half of it: activation 1's first half crosses from 2, its second half 4.5–4.75: F1
    // 4.75–5.75, B1 5.75–7.75; gradient 1 7.75–8.25, B1 on stage 0 8.25–10.25.
    assert!(close(simulate(&f, &b, &x(0.5), 2, Schedule::OneFOneB), 10.25));
    // GPipe: stage 0 F0 0–1, F1 1–2; stage 1 F0 1.5–2.5, then activation 1 crosses 2.5–3 (its
    // receive is posted after F0), F1 3–4, B1 4–6, B0 6–8; stage 0: gradient 1 6–6.5, B1
    // 6.5–8.5, gradient 0 8.5–9, B0 9–11.
    assert!(close(simulate(&f, &b, &x(1.0), 2, Schedule::GPipe), 11.0));
    // A link twice as slow (6 s instead of 3) while it carries messages both ways. Stage 0: F
    // 1 s, B 2 s; stage 1: 0.5 s each; eager messages. Activation 0 1–4 (activation 1, sent at
    // 2, waits behind it: one connection), stage 1 F0 4–4.5, B0 4.5–5. Activation 1 alone 4–5
    // (a third of it), then beside gradient 0 at half speed: its other two thirds 5–9; gradient
    // 0 crosses two thirds by then and its last third alone 9–10. Stage 1 F1 9–9.5, B1 9.5–10;
    // stage 0 B0 10–12, gradient 1 10–13, B1 13–15.
    let (f, b) = ([1.0, 0.5], [2.0, 0.5]);
    let link = |duplex_seconds| [Crossing { seconds: 3.0, duplex_seconds, rendezvous_share: 0.0 }];
    assert!(close(simulate(&f, &b, &link(6.0), 2, Schedule::OneFOneB), 15.0));
    // Both ways at full speed: gradient 0 5–8, B0 8–10; gradient 1 8–11, B1 11–13.
    assert!(close(simulate(&f, &b, &link(3.0), 2, Schedule::OneFOneB), 13.0));
    let (f, b) = ([1.0, 1.0], [2.0, 2.0]);
    // Without communication the 1F1B step is the first micro-batch's way through both stages
    // plus what the stages cannot overlap: F0 0–1 | 1–2, B0 2–4 | 4–6; F1 on stage 1 4–5,
    // B1 5–7 | 7–9.
    assert!(close(simulate(&f, &b, &[Crossing::free()], 2, Schedule::OneFOneB), 9.0));
    // Messages that meet on a node's link: the one sent first keeps its rate. 3 stages, no
    // computation, cut 0 takes 2 s and cut 1 1 s; 1F1B, 2 micro-batches; stage 1 runs F0 F1 B0
    // B1. Activations 0 and 1 are sent at 0: a0 0–2, a1 2–4 (one connection, in order); b0
    // (stage 1 → 2) 2–3. Gradient c0 (stage 2 → 1), sent at 3, waits for a1 on stage 1's
    // incoming link: 4–5. Stage 1 F1 at 4 sends b1 4–5; stage 2 sends c1 at 5: 5–6; stage 1 B0
    // at 5 sends g0 5–7, B1 at 6 sends g1, after g0: 7–9; stage 0 B1 at 9.
    let (z, x) = ([0.0; 3], |s: f64| Crossing { seconds: s, duplex_seconds: s, rendezvous_share: 0.0 });
    assert!(close(simulate(&z, &z, &[x(2.0), x(1.0)], 2, Schedule::OneFOneB), 9.0));
    // One stage: its passes back to back.
    assert!(close(simulate(&[1.0], &[2.0], &[], 3, Schedule::OneFOneB), 9.0));
}

#[test]
fn messages_on_one_link_are_served_in_the_order_they_were_sent() {
    // Stage 1's incoming link is wanted by two messages (from 0, then from 2): the first moves;
    // 1 → 2 has its links to itself.
    assert_eq!(pipeline_sim::first_come(&[(0, 1), (2, 1), (1, 2)], 3), vec![true, false, true]);
    // Stage 0 sends to 1 and then 2: the second waits for stage 0's outgoing link, and 2 → 1 for
    // stage 1's incoming one, which 0 → 1 holds. In another order, 0 → 2 and 2 → 1 both move.
    assert_eq!(pipeline_sim::first_come(&[(0, 1), (0, 2), (2, 1)], 3), vec![true, false, false]);
    assert_eq!(pipeline_sim::first_come(&[(0, 2), (2, 1), (0, 1)], 3), vec![true, true, false]);
    assert!(pipeline_sim::first_come(&[], 2).is_empty());
}

#[test]
fn the_eager_limit_decides_what_waits_for_the_receive() {
    // 1 MB at 1 Gbit/s: 8 ms. Over Open MPI's default 64 KiB, all but the first 65536 bytes wait
    // for the receive to be posted; under an 8 MiB limit none does.
    let mut c = cluster(1.0, 0.0);
    let x = Crossing::new(1e6, &c);
    assert!(close(x.seconds, 8e-3) && close(x.rendezvous_share, 1.0 - 65536.0 / 1e6), "{x:?}");
    c.eager_bytes = parse_bytes("--eager-limit", "8MiB").unwrap();
    assert_eq!(c.eager_bytes, 8388608.0);
    assert_eq!(Crossing::new(1e6, &c).rendezvous_share, 0.0);
    // So a pipeline on a slow link is predicted no slower with the larger limit.
    let model = toy();
    let step = |c: &Cluster| {
        Plan { model: model.clone(), cluster: c.clone(), batch: 64, pins: Pins::default() }
            .pipeline(2, 8)
            .unwrap()
            .step_s
    };
    let mut slow = cluster(0.1, 1e-4);
    let rendezvous = step(&slow);
    slow.eager_bytes = 1e9;
    assert!(step(&slow) <= rendezvous);
    for (s, v) in [("65536", 65536.0), ("64KiB", 65536.0), ("4MB", 4e6), (" 1 gib ", 1073741824.0)] {
        assert_eq!(parse_bytes("--eager-limit", s).unwrap(), v, "{s}");
    }
    for bad in ["0", "-1KiB", "lots", "8 parsecs", "nan"] {
        assert!(parse_bytes("--eager-limit", bad).unwrap_err().to_string().contains("--eager-limit"), "{bad}");
    }
}

#[test]
fn hybrid_matches_hand_computed_exchanges() {
    // toy on 4 nodes, groups of 2 (dp 2): convolutions on 16 samples, the classifier on the
    // group's 32 in halves. fc1 is column-parallel (its input gradient, the conv features, is
    // all-reduced in backward), fc2 row-parallel (its logits all-reduced in forward).
    let c = cluster(10.0, 5e-6);
    let plan = Plan { model: toy(), cluster: c.clone(), batch: 64, pins: Pins::default() };
    let h = plan.hybrid(4, 2).unwrap();
    assert!(close(h.compute_s, 16.0 * 3.0 * 1e-4 + 32.0 * 3.0 * (1e-5 + 1e-6) / 2.0), "{h:?}");
    let feats = 4.0 * 4000.0 * 32.0;
    let exchange = allgather(&c, 2, feats)
        + allgather(&c, 2, 0.0)
        + ring_allreduce(&c, 2, feats)
        + ring_allreduce(&c, 2, 4.0 * 10.0 * 32.0);
    let grads = allreduce(&c, 4, 4000.0) + allreduce(&c, 2, 4.0 * 1_010_000.0 / 2.0) + allreduce(&c, 4, 12.0);
    assert!(close(h.exposed_comm_s, exchange + grads), "{} vs {}", h.exposed_comm_s, exchange + grads);
    // With one fc layer only (column-parallel and last): its output is all-gathered.
    let mut one = plan.clone();
    one.model.layers.pop();
    let h = one.hybrid(2, 2).unwrap();
    let (gb, f) = (64.0, 4.0 * 4000.0 * 64.0);
    let exchange =
        allgather(&c, 2, f) + allgather(&c, 2, 0.0) + ring_allreduce(&c, 2, f) + allgather(&c, 2, 4.0 * 1000.0 * gb);
    let grads = allreduce(&c, 2, 4000.0) + allreduce(&c, 1, 4.0 * 1_000_000.0 / 2.0) + allreduce(&c, 2, 12.0);
    assert!(close(h.exposed_comm_s, exchange + grads), "{} vs {}", h.exposed_comm_s, exchange + grads);
}

#[test]
fn pipeline_hybrid_and_tensor_are_consistent() {
    let plan = Plan { model: toy(), cluster: cluster(100.0, 1e-6), batch: 64, pins: Pins::default() };
    let p = plan.pipeline(2, 8).unwrap();
    // The conv layer dominates: stage 0 = conv, stage 1 = fc1 + fc2; the bubble is stage 1's
    // share of the first micro-batch's forward and backward.
    let per = 3.0 * 1e-4 * 8.0;
    assert!(close(p.compute_s, 8.0 * per));
    assert!(p.bubble_s > 0.0 && p.bubble_s < p.compute_s, "{p:?}");
    assert!(plan.pipeline(5, 8).is_none(), "more stages than layers");
    let h = plan.hybrid(4, 2).unwrap();
    assert!(h.compute_s < plan.data_parallel(1, 25.0).compute_s);
    assert!(plan.hybrid(4, 3).is_none());
    let t = plan.tensor(4);
    assert!(close(t.compute_s, 64.0 * 3.0 * 1.11e-4 / 4.0));
    // Everything at every node count is finite and positive.
    for n in [1, 2, 4, 64, 1024] {
        for pr in plan.at(n, &[]) {
            assert!(pr.step_s.is_finite() && pr.step_s > 0.0 && pr.images_per_s > 0.0, "{pr:?}");
        }
    }
}

#[test]
fn shared_cores_turn_overlap_off_and_slow_computation_a_slower_node_only_slows_it() {
    let mut c = cluster(10.0, 5e-6);
    let plan = Plan { model: toy(), cluster: c.clone(), batch: 64, pins: Pins::default() };
    let with = plan.data_parallel(2, 25.0);
    c.cores_per_node = 1.0;
    let one = Plan { model: toy(), cluster: c.clone(), batch: 64, pins: Pins::default() }.data_parallel(2, 25.0);
    assert_eq!(one, with, "one core per node still overlaps");
    c.cores_per_node = 0.5;
    let half = Plan { model: toy(), cluster: c.clone(), batch: 64, pins: Pins::default() }.data_parallel(2, 25.0);
    // Without overlap both buckets go after backward: 2 all-reduces exposed.
    let fc = allreduce(&c, 2, 4.0 * 1_010_000.0);
    let conv = allreduce(&c, 2, 4000.0);
    assert!(close(half.exposed_comm_s, fc + conv), "{} vs {}", half.exposed_comm_s, fc + conv);
    assert!(half.exposed_comm_s > with.exposed_comm_s);
    assert!(close(half.compute_s, 2.0 * with.compute_s));
    // A slower node (0.8 of the profile's speed) at one core: computation 1/0.8 as long, and the
    // buckets still overlap it (the conv bucket alone, after backward, stays exposed).
    c.cores_per_node = 1.0;
    c.node_speed = 0.8;
    let slow = Plan { model: toy(), cluster: c.clone(), batch: 64, pins: Pins::default() }.data_parallel(2, 25.0);
    assert!(close(slow.compute_s, with.compute_s / 0.8));
    assert!(close(slow.exposed_comm_s, with.exposed_comm_s), "{} vs {}", slow.exposed_comm_s, with.exposed_comm_s);
    // Both: half a core of a node at 0.8 of the speed.
    c.cores_per_node = 0.5;
    let both = Plan { model: toy(), cluster: c, batch: 64, pins: Pins::default() }.data_parallel(2, 25.0);
    assert!(close(both.compute_s, 2.0 * with.compute_s / 0.8));
}

#[test]
fn more_bandwidth_never_predicts_a_slower_step() {
    let m = toy();
    for n in [2, 3, 8, 64, 512] {
        let mut last: Option<Vec<f64>> = None;
        for gbit in [0.1, 1.0, 10.0, 25.0, 100.0, 400.0] {
            let plan = Plan { model: m.clone(), cluster: cluster(gbit, 5e-6), batch: 256, pins: Pins::default() };
            let steps: Vec<f64> = plan.at(n, &[]).iter().map(|p| p.step_s).collect();
            if let Some(prev) = &last {
                for (a, b) in steps.iter().zip(prev) {
                    assert!(*a <= b * (1.0 + 1e-12), "n {n}, {gbit} Gbit: {a} > {b}");
                }
            }
            last = Some(steps);
        }
    }
}

#[test]
fn more_nodes_never_predict_less_ring_traffic_per_step_at_fixed_bytes() {
    let c = cluster(10.0, 5e-6);
    for bytes in [1e3, 1e6, 1e9] {
        let mut last = 0.0;
        for n in 1..=1024 {
            let t = ring_allreduce(&c, n, bytes);
            assert!(t >= last, "{n} nodes, {bytes} B: {t} < {last}");
            last = t;
        }
    }
}

#[test]
fn units_parse_and_bad_values_name_the_flag() {
    assert!(close(parse_bandwidth("10gbit").unwrap(), 1.25e9));
    assert!(close(parse_bandwidth("100Mbit").unwrap(), 1.25e7));
    assert!(close(parse_bandwidth("1.5GB/s").unwrap(), 1.5e9));
    assert!(close(parse_latency("5us").unwrap(), 5e-6));
    assert!(close(parse_latency("2ms").unwrap(), 2e-3));
    for b in ["-1gbit", "0gbit", "fast", ""] {
        let e = parse_bandwidth(b).unwrap_err().to_string();
        assert!(e.contains("--link") && e.contains(b), "{e}");
    }
    assert!(parse_latency("-3us").is_err());
    assert!(parse_latency("soon").is_err());
    assert_eq!(parse_latency("0").unwrap(), 0.0);
    let e = parse_latency("5").unwrap_err().to_string();
    assert!(e.contains("--latency 5") && e.contains("unit"), "{e}");
}

#[test]
fn a_per_call_cost_is_paid_once_per_step_by_data_parallelism_and_per_micro_batch_by_the_pipeline() {
    // fc1's backward costs 1e-3 s per call whatever its batch (its weight gradient). GPipe.
    let pins = Pins { schedule: Some(Schedule::GPipe), ..Pins::default() };
    let mut plan = Plan { model: toy(), cluster: cluster(100.0, 1e-6), batch: 64, pins };
    let dp0 = plan.data_parallel(2, 25.0).compute_s;
    let pipe0 = plan.pipeline(2, 8).unwrap();
    plan.model.layers[1].bwd_fixed_s = 1e-3;
    assert!(close(plan.data_parallel(2, 25.0).compute_s, dp0 + 1e-3));
    // Stage 1 (fc1 + fc2) now takes 1.176e-3 s backward per micro-batch, still below stage 0's
    // 1.6e-3: only the first micro-batch's crossing of the stages grows.
    let pipe = plan.pipeline(2, 8).unwrap();
    assert!(close(pipe.step_s - pipe0.step_s, 1e-3), "{pipe:?} vs {pipe0:?}");
    plan.model.layers[1].bwd_fixed_s = 3e-3;
    let pipe = plan.pipeline(2, 8).unwrap();
    // Now stage 1's backward, 3.176e-3 s, sets the pace: 7 × 3.176e-3 + (1.6e-3 + 3.176e-3)
    // (stage 0 waits for each gradient with its receive posted: no rendezvous delay).
    let x = 1e-6 + 128_000.0 / 1.25e10;
    let fwd = 7.0 * 8e-4 + (8e-4 + 8.8e-5) + x;
    let bwd = 7.0 * 3.176e-3 + (1.6e-3 + 3.176e-3) + x;
    assert!(close(pipe.step_s - pipe.optimizer_s, fwd + bwd), "{pipe:?}");
    // The single node pays it once: efficiency counts it.
    assert!(close(plan.data_parallel(1, 25.0).compute_s, 64.0 * 3.0 * 1.11e-4 + 3e-3));
}

#[test]
fn the_expected_maximum_of_normals_is_within_five_percent_of_the_exact_values() {
    // Exact E[max of n standard normals] (Harter's tables, 1961).
    for (n, exact) in [(2, 0.5642), (3, 0.8463), (4, 1.0294), (5, 1.1630), (10, 1.5388), (100, 2.5076), (1000, 3.2414)]
    {
        let e = expected_max_normal(n);
        assert!((e - exact).abs() <= 0.05 * exact, "n = {n}: {e} vs {exact}");
    }
    assert_eq!(expected_max_normal(1), 0.0);
    // The quantile itself, against Φ⁻¹ values to 6 digits, in the middle and both tails.
    for (p, x) in [(0.5, 0.0), (0.975, 1.959964), (0.8413447, 1.0), (0.01, -2.326348), (0.999, 3.090232)] {
        assert!((inverse_normal(p) - x).abs() < 1e-5, "Φ⁻¹({p}) = {} vs {x}", inverse_normal(p));
    }
    // More nodes, a later slowest node.
    for n in 1..2000 {
        assert!(expected_max_normal(n + 1) > expected_max_normal(n));
    }
}

#[test]
fn jitter_makes_each_synchronisation_wait_for_the_slowest_node() {
    let mut c = cluster(10.0, 5e-6);
    let still = Plan { model: toy(), cluster: c.clone(), batch: 64, pins: Pins::default() };
    c.jitter = 0.05;
    let plan = Plan { model: toy(), cluster: c.clone(), batch: 64, pins: Pins::default() };
    // Data parallel on 4 nodes, 16 samples each: one synchronisation after T = 16·3·1.11e-4 s
    // of computation; it waits 0.05·√T·E[max of 4].
    let (a, b) = (still.data_parallel(4, 25.0), plan.data_parallel(4, 25.0));
    let t: f64 = 16.0 * 3.0 * 1.11e-4;
    let wait = 0.05 * t.sqrt() * expected_max_normal(4);
    assert!(close(b.straggle_s, wait) && close(b.step_s, a.step_s + wait), "{b:?}");
    assert!(close(b.images_per_s, 64.0 / b.step_s) && close(b.efficiency * b.step_s, a.efficiency * a.step_s));
    assert_eq!(a.straggle_s, 0.0);
    // The parameter server: the same wait for its workers' pushes.
    assert!(close(plan.param_server(4, 2).straggle_s, wait));
    // One node waits for nobody.
    assert_eq!(plan.data_parallel(1, 25.0).straggle_s, 0.0);
    // Hybrid on 4 nodes in groups of 2: the group waits after the convolutions' forward
    // (16·1e-4 s) and after the classifier (32·3·1.1e-5/2 s); all 4 after the convolutions'
    // backward (16·2e-4 s).
    let h = plan.hybrid(4, 2).unwrap();
    let s = |n: usize, t: f64| 0.05 * t.sqrt() * expected_max_normal(n);
    let hand = s(2, 16.0 * 1e-4) + s(2, 32.0 * 3.0 * 1.1e-5 / 2.0) + s(4, 16.0 * 2e-4);
    assert!(close(h.straggle_s, hand), "{} vs {hand}", h.straggle_s);
    assert!(close(h.step_s, still.hybrid(4, 2).unwrap().step_s + hand));
    // Tensor split: every layer with parameters waits twice (forward, backward) for its slices.
    let tensor = plan.tensor(2);
    let hand: f64 = [1e-4, 1e-5, 1e-6].iter().map(|f| s(2, 64.0 * f / 2.0) + s(2, 64.0 * 2.0 * f / 2.0)).sum();
    assert!(close(tensor.straggle_s, hand), "{} vs {hand}", tensor.straggle_s);
    // The pipeline is simulated without it.
    assert_eq!(plan.pipeline(2, 4).unwrap().straggle_s, 0.0);
    assert!(parse_jitter("2%").is_ok_and(|j| close(j, 0.02)) && parse_jitter("0.02").is_ok_and(|j| close(j, 0.02)));
    for bad in ["-1%", "x", "inf"] {
        assert!(parse_jitter(bad).unwrap_err().to_string().contains("--jitter"), "{bad}");
    }
}
