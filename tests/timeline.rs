//! `--timeline`: the Chrome trace parses, has one compute track per worker (plus its comm
//! track), and the spans on each track do not overlap; phases are emitted only when asked for.

mod common;

use convoy::train::events::{Event, Recorder, Track};
use serde_json::Value;
use std::collections::BTreeMap;

/// Runs `convoy train` with `args` on the small MNIST and returns the parsed trace.
fn trace(args: &[&str], name: &str) -> Value {
    let path =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("trace-{name}-{}.json", std::process::id()));
    let out = common::convoy(
        &[
            &[
                "train",
                "--no-progress",
                "--no-epoch-eval",
                "--threads",
                "1",
                "--data",
                common::small_mnist().to_str().unwrap(),
                "--timeline",
                path.to_str().unwrap(),
            ][..],
            args,
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Checks the trace's structure; returns the complete events per (pid, tid) track.
fn tracks(t: &Value, workers: usize) -> BTreeMap<(u64, u64), Vec<Value>> {
    let events = t["traceEvents"].as_array().expect("traceEvents is an array");
    let mut tracks: BTreeMap<(u64, u64), Vec<Value>> = BTreeMap::new();
    let mut names = BTreeMap::new();
    for e in events {
        let ph = e["ph"].as_str().expect("every event has ph");
        let key = (e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap());
        match ph {
            "X" => {
                assert!(e["ts"].as_f64().unwrap() >= 0.0 && e["dur"].as_f64().unwrap() >= 0.0, "{e}");
                assert!(e["name"].is_string() && e["args"]["step"].is_u64(), "{e}");
                tracks.entry(key).or_default().push(e.clone());
            }
            "M" if e["name"] == "thread_name" => {
                names.insert(key, e["args"]["name"].as_str().unwrap().to_string());
            }
            "M" | "i" => {}
            other => panic!("unexpected event phase {other}: {e}"),
        }
    }
    let compute: Vec<u64> = tracks.keys().filter(|k| k.1 == 0).map(|k| k.0).collect();
    assert_eq!(compute, (0..workers as u64).collect::<Vec<_>>(), "one compute track per worker");
    for (key, spans) in &mut tracks {
        assert_eq!(
            names.get(key).map(String::as_str),
            Some(if key.1 == 0 { "compute" } else { "comm" }),
            "track {key:?} is named"
        );
        spans.sort_by(|a, b| a["ts"].as_f64().unwrap().total_cmp(&b["ts"].as_f64().unwrap()));
        for w in spans.windows(2) {
            let end = w[0]["ts"].as_f64().unwrap() + w[0]["dur"].as_f64().unwrap();
            assert!(
                w[1]["ts"].as_f64().unwrap() >= end - 1e-3,
                "spans overlap on track {key:?}: {} and {}",
                w[0],
                w[1]
            );
        }
    }
    tracks
}

fn names(spans: &[Value]) -> Vec<&str> {
    let mut n: Vec<&str> = spans.iter().map(|e| e["name"].as_str().unwrap()).collect();
    n.sort();
    n.dedup();
    n
}

#[test]
fn allreduce_trace_has_a_compute_and_a_comm_track_per_worker_without_overlaps() {
    let t = trace(&["--workers", "3", "--steps", "6", "--batch-size", "30", "--bucket-mb", "0.05"], "allreduce");
    let tracks = tracks(&t, 3);
    for w in 0..3u64 {
        assert_eq!(names(&tracks[&(w, 0)]), ["comm_wait", "data", "forward_backward"], "worker {w}");
        let comm = &tracks[&(w, 1)];
        assert_eq!(names(comm), ["allreduce"]);
        // Every step reduced several buckets (a small cap), each with its index.
        assert!(comm.len() >= 6 * 2, "{}", comm.len());
        assert!(comm.iter().all(|e| e["args"]["bucket"].is_u64()));
    }
}

#[test]
fn parameter_server_and_single_worker_traces() {
    let t = trace(&["--workers", "2", "--steps", "4", "--strategy", "ps"], "ps");
    let ps = tracks(&t, 2);
    assert_eq!(names(&ps[&(1, 1)]), ["push_pull"]);
    let t = trace(&["--steps", "4"], "single");
    let single = tracks(&t, 1);
    assert_eq!(names(&single[&(0, 0)]), ["data", "forward_backward", "optimizer"]);
    assert_eq!(single[&(0, 0)].len(), 4 * 3);
}

/// Model-parallel strategies: forward and backward per micro-batch (pipeline) or segment (tensor
/// split) on the compute track, their communication on the comm track, one track pair per worker.
#[test]
fn pipeline_tensor_and_hybrid_traces_have_per_micro_batch_phases_without_overlaps() {
    let t = trace(
        &["--strategy", "pipeline", "--stages", "2", "--micro-batches", "4", "--steps", "3", "--batch-size", "32"],
        "pipeline",
    );
    let p = tracks(&t, 2);
    for stage in 0..2u64 {
        assert_eq!(names(&p[&(stage, 0)]), ["backward", "data", "forward", "optimizer"], "stage {stage}");
        let fwd: Vec<u64> = p[&(stage, 0)]
            .iter()
            .filter(|e| e["name"] == "forward")
            .map(|e| e["args"]["micro"].as_u64().unwrap())
            .collect();
        assert_eq!(fwd.len(), 3 * 4, "a forward per micro-batch and step");
        assert!((0..4).all(|m| fwd.contains(&m)));
    }
    // Stage 0 sends activations and receives gradients and the loss; the last stage the reverse.
    assert_eq!(names(&p[&(0, 1)]), ["recv", "send", "stats"]);
    assert_eq!(names(&p[&(1, 1)]), ["recv", "send", "stats"]);
    let t = trace(&["--strategy", "tensor", "--mp", "2", "--steps", "3"], "tensor");
    let ts = tracks(&t, 2);
    for w in 0..2u64 {
        assert_eq!(names(&ts[&(w, 0)]), ["backward", "data", "forward", "optimizer"], "worker {w}");
        let comm = names(&ts[&(w, 1)]);
        assert!(comm.contains(&"all_gather") && comm.contains(&"allreduce"), "{comm:?}");
        assert!(
            ts[&(w, 0)].iter().filter(|e| e["name"] == "forward").any(|e| e["args"]["micro"].as_u64() == Some(1)),
            "segments are numbered"
        );
    }
    let t = trace(&["--strategy", "hybrid", "--dp", "2", "--mp", "2", "--steps", "3"], "hybrid");
    let h = tracks(&t, 4);
    for w in 0..4u64 {
        assert_eq!(names(&h[&(w, 0)]), ["backward", "data", "forward", "optimizer"], "worker {w}");
        assert!(names(&h[&(w, 1)]).contains(&"all_gather") && names(&h[&(w, 1)]).contains(&"allreduce"));
    }
    let t = trace(&["--strategy", "hybrid", "--dp", "2", "--pp", "2", "--micro-batches", "2", "--steps", "2"], "dp-pp");
    let d = tracks(&t, 4);
    assert!(names(&d[&(0, 1)]).contains(&"allreduce"), "stages all-reduce with their replicas");
}

#[test]
fn phases_are_emitted_only_when_a_timeline_is_asked_for() {
    for timeline in [false, true] {
        let (mut cfg, pc) = common::config(
            &["--workers", "2", "--steps", "3", "--threads", "1", "--no-epoch-eval"],
            common::small_mnist(),
        );
        cfg.timeline = timeline;
        let mut rec = Recorder::default();
        convoy::parallel::run(&cfg, &pc, &mut rec).unwrap();
        let phases: Vec<&Event> = rec.events.iter().filter(|e| matches!(e, Event::Phase { .. })).collect();
        if !timeline {
            assert!(phases.is_empty());
            continue;
        }
        for rank in 0..2 {
            for step in 1..=3 {
                let here = |track| {
                    phases.iter().filter(|e| matches!(e, Event::Phase { rank: r, step: s, track: t, .. } if *r == rank && *s == step && *t == track)).count()
                };
                assert!(here(Track::Compute) >= 3 && here(Track::Comm) >= 1, "rank {rank} step {step}");
            }
        }
        // The metrics file leaves phases to the trace.
        let path =
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("phases-{}.jsonl", std::process::id()));
        let mut sink = convoy::train::events::JsonlSink::create(&path).unwrap();
        for e in &rec.events {
            convoy::train::events::EventSink::on_event(&mut sink, e);
        }
        drop(sink);
        assert!(!std::fs::read_to_string(&path).unwrap().contains("\"phase\""));
    }
}
