//! `convoy serve` over HTTP: launch runs through the API, follow their Server-Sent Events to the
//! end, download and load the weights, queueing under --max-runs, a restart that keeps the list,
//! and bad requests answered 4xx with a message while the server keeps serving.

mod common;
#[path = "common/http.rs"]
mod http;

use http::{get, post_json, request, Server};
use serde_json::Value;
use std::path::PathBuf;

fn workdir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("dash-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn metrics(events: &[http::Sse]) -> Vec<Value> {
    events.iter().filter(|e| e.event == "metric").map(|e| serde_json::from_str(&e.data).unwrap()).collect()
}

#[test]
fn launch_follow_download_queue_and_restart() {
    let dir = workdir("api");
    let mut server = Server::start(&dir, common::small_mnist(), 1);
    let port = server.port;
    let opts = get(port, "/api/options").json();
    assert_eq!(opts["datasets"], serde_json::json!(["small"]));
    assert!(opts["models"].as_array().unwrap().iter().any(|m| m == "lenet"));

    let body = r#"{"name": "api test", "dataset": "small", "workers": 2, "threads": 1, "steps": 20, "batch_size": 32, "lr": 0.05}"#;
    let first = post_json(port, "/api/runs", body);
    assert_eq!(first.status, 201, "{}", first.text());
    let first = first.json();
    let id1 = first["id"].as_str().unwrap().to_string();
    assert_eq!(first["name"], "api test");
    let second = post_json(
        port,
        "/api/runs",
        r#"{"dataset": "small", "strategy": "ps", "workers": 2, "threads": 1, "steps": 12, "batch_size": 32}"#,
    );
    assert_eq!(second.status, 201, "{}", second.text());
    let id2 = second.json()["id"].as_str().unwrap().to_string();
    assert_ne!(id1, id2);

    // The first run's feed: its record, then every metrics line once, then the end.
    let events = http::follow_sse(port, &format!("/api/runs/{id1}/events"), None);
    assert_eq!(events.first().map(|e| e.event.as_str()), Some("status"));
    assert_eq!(events.last().map(|e| e.event.as_str()), Some("end"), "{events:?}");
    assert!(events.last().unwrap().data.contains("finished"), "{events:?}");
    let m = metrics(&events);
    assert_eq!(m.first().unwrap()["event"], "run_start");
    let steps: Vec<u64> = m.iter().filter(|e| e["event"] == "step").map(|e| e["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, (1..=20).collect::<Vec<_>>(), "each step exactly once");
    assert!(m.iter().any(|e| e["event"] == "run_end"));
    // Resuming after the fifth line sends only what follows it.
    let fifth = events.iter().filter(|e| e.event == "metric").nth(4).unwrap().id.clone().unwrap();
    let rest = metrics(&http::follow_sse(port, &format!("/api/runs/{id1}/events"), Some(&fifth)));
    assert_eq!(rest.len(), m.len() - 5);
    assert_eq!(rest[0], m[5]);

    let run = get(port, &format!("/api/runs/{id1}")).json();
    assert_eq!(run["status"], "finished");
    assert_eq!(run["exit_code"], 0);
    for f in ["weights", "metrics", "trace", "log"] {
        assert!(run["files"].as_array().unwrap().iter().any(|x| x == f), "{run}");
    }
    let w = get(port, &format!("/api/runs/{id1}/files/weights"));
    assert_eq!(w.status, 200);
    let path = dir.join("downloaded.safetensors");
    std::fs::write(&path, &w.body).unwrap();
    let net = convoy::net::Net::build(&convoy::net::ModelSpec::resolve("lenet").unwrap()).unwrap();
    let params = convoy::checkpoint::load_weights(&path, net.layout()).unwrap();
    assert_eq!(params.len(), net.layout().len());
    let trace: Value = serde_json::from_slice(&get(port, &format!("/api/runs/{id1}/files/trace")).body).unwrap();
    assert!(trace["traceEvents"].as_array().unwrap().len() > 20 * 2 * 3);

    // The second run waited for the first (--max-runs 1) and also finishes.
    let events2 = http::follow_sse(port, &format!("/api/runs/{id2}/events"), None);
    assert!(events2.last().unwrap().data.contains("finished"), "{events2:?}");
    let (r1, r2) = (get(port, &format!("/api/runs/{id1}")).json(), get(port, &format!("/api/runs/{id2}")).json());
    assert!(r2["started"].as_f64().unwrap() >= r1["ended"].as_f64().unwrap(), "{r1} {r2}");
    assert!(server.alive());

    // A restarted server lists the same runs from their run.json.
    drop(server);
    server = Server::start(&dir, common::small_mnist(), 1);
    let list = get(server.port, "/api/runs").json();
    let mut ids: Vec<(String, String)> = list["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap().into(), r["status"].as_str().unwrap().into()))
        .collect();
    ids.sort();
    let mut want = vec![(id1, "finished".to_string()), (id2, "finished".to_string())];
    want.sort();
    assert_eq!(ids, want);
}

#[test]
fn bad_requests_get_4xx_with_a_message_and_the_server_keeps_serving() {
    let dir = workdir("bad");
    let mut server = Server::start(&dir, common::small_mnist(), 1);
    let port = server.port;
    let cases: &[(&str, u16, &str)] = &[
        (r#"{"dataset": "small", "workers": 2"#, 400, "malformed"),
        (r#"[1, 2]"#, 400, "malformed"),
        (r#"{"dataset": "small", "model": "resnet9000"}"#, 400, "unknown model 'resnet9000'"),
        (r#"{"dataset": "small", "model": "../../etc/passwd"}"#, 400, "unknown model"),
        (r#"{"dataset": "small", "workers": 0}"#, 400, "workers"),
        (r#"{"dataset": "small", "workers": 10000}"#, 400, "workers"),
        (r#"{"dataset": "small", "workers": -1}"#, 400, "malformed"),
        (r#"{"dataset": "small", "name": "../../x"}"#, 400, "name"),
        (r#"{"dataset": "small", "name": "a/b"}"#, 400, "name"),
        (r#"{"dataset": "../small"}"#, 400, "unknown dataset"),
        (r#"{"dataset": "/etc"}"#, 400, "unknown dataset"),
        (r#"{"dataset": "small", "strategy": "magic"}"#, 400, "strategy"),
        (r#"{"dataset": "small", "lr": -1}"#, 400, "--lr"),
        (r#"{"dataset": "small", "batch_size": 1, "workers": 2}"#, 400, "--batch-size"),
        (r#"{"dataset": "small", "staleness": 3}"#, 400, "--staleness"),
        (r#"{"dataset": "small", "epochs": 5000}"#, 400, "epochs"),
        (r#"{"dataset": "small", "wrokers": 2}"#, 400, "unknown field"),
        (r#"{"dataset": "small", "model_spec": "not toml ["}"#, 400, "model_spec"),
    ];
    for (body, code, needle) in cases {
        let r = post_json(port, "/api/runs", body);
        assert_eq!(r.status, *code, "{body}: {}", r.text());
        let msg = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(msg.contains(needle), "{body}: '{msg}' lacks '{needle}'");
    }
    // Oversize body: refused before it is parsed.
    let big = format!(r#"{{"name": "{}"}}"#, "a".repeat(200 << 10));
    let r = post_json(port, "/api/runs", &big);
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(!r.text().is_empty());
    // Not JSON at all.
    let r = request(port, "POST", "/api/runs", &[("Content-Type", "text/plain")], b"workers=2");
    assert_eq!(r.status, 415);
    // Ids and file names from the URL never reach the filesystem unchecked.
    for (path, code) in [
        ("/api/runs/..%2F..%2Fetc", 400),
        ("/api/runs/..", 400),
        ("/api/runs/20990101-000000-0000", 404),
        ("/api/runs/20990101-000000-0000/files/weights", 404),
        ("/api/runs/x/files/..%2Frun.json", 404),
        ("/api/runs/..%2Fdata/events", 400),
        ("/api/nothing", 404),
    ] {
        let r = get(port, path);
        assert_eq!(r.status, code, "{path}: {}", r.text());
        assert!(r.json()["error"].is_string(), "{path}");
    }
    let r = post_json(port, "/api/runs/20990101-000000-0000/stop", "");
    assert_eq!(r.status, 404);
    // Nothing was created, and the server still answers.
    assert_eq!(get(port, "/api/runs").json()["runs"].as_array().unwrap().len(), 0);
    assert!(server.alive());
    assert_eq!(get(port, "/").status, 200);
    assert!(get(port, "/").text().contains("Launch a run"));
    assert_eq!(get(port, "/assets/app.js").status, 200);
}

/// A Caffe prototxt sent as the model trains (checked on the server first); its feed carries
/// per-worker rates; the plan endpoint draws `convoy plan`'s plot.
#[test]
fn prototxt_model_per_worker_rates_and_the_plan() {
    let dir = workdir("proto");
    let mut server = Server::start(&dir, common::small_mnist(), 1);
    let port = server.port;
    let proto =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/lenet_train_test.prototxt")).unwrap();
    let body = serde_json::json!({"dataset": "small", "model_prototxt": proto, "workers": 2, "threads": 1, "steps": 15, "batch_size": 32}).to_string();
    let r = post_json(port, "/api/runs", &body);
    assert_eq!(r.status, 201, "{}", r.text());
    let run = r.json();
    assert_eq!(run["config"]["model"], "sent (model.prototxt)");
    let id = run["id"].as_str().unwrap().to_string();
    let events = http::follow_sse(port, &format!("/api/runs/{id}/events"), None);
    assert!(events.last().unwrap().data.contains("finished"), "{events:?}");
    let m = metrics(&events);
    for rank in 0..2 {
        let rates: Vec<&Value> = m.iter().filter(|e| e["event"] == "rate" && e["rank"] == rank).collect();
        assert!(!rates.is_empty(), "worker {rank} reports its rate at least at the end");
        assert!(
            rates.iter().all(|e| e["images_per_sec"].as_f64().unwrap() > 0.0 && e["compute_s"].as_f64().unwrap() > 0.0),
            "{rates:?}"
        );
    }
    // Bad prototxts and conflicting models are refused before a run exists.
    for (body, needle) in [
        (serde_json::json!({"dataset": "small", "model_prototxt": "layer { type: \"Warp\" }"}), "model_prototxt"),
        (serde_json::json!({"dataset": "small", "model_prototxt": proto, "model": "lenet"}), "not several"),
        (
            serde_json::json!({"dataset": "small", "model_spec": "name = \"x\"\ninput = [3, 32, 32]\nlayers = []"}),
            "model_spec",
        ),
        (
            serde_json::json!({"dataset": "small", "model_prototxt": proto.replacen("batch_size: 64", "batch_size: 0", 1)}),
            "batch_size 0",
        ),
    ] {
        let r = post_json(port, "/api/runs", &body.to_string());
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.json()["error"].as_str().unwrap().contains(needle), "{}", r.text());
    }
    // Without batch_size, the prototxt's TRAIN Data layer's batch_size is the run's batch.
    let b16 = serde_json::json!({"dataset": "small", "model_prototxt": proto.replacen("batch_size: 64", "batch_size: 16", 1), "threads": 1, "steps": 2});
    let r = post_json(port, "/api/runs", &b16.to_string());
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["config"]["batch_size"], 16);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let events = http::follow_sse(port, &format!("/api/runs/{id}/events"), None);
    assert!(events.last().unwrap().data.contains("finished"), "{events:?}");
    assert!(metrics(&events).iter().any(|e| e["event"] == "run_start" && e["batch_size"] == 16), "{events:?}");
    // The plan: an SVG plot and a recommended layout per node count.
    let p = get(port, "/api/plan?model=alexnet&batch=256&nodes=1,2,4&link=10gbit&latency=5us");
    assert_eq!(p.status, 200, "{}", p.text());
    let p = p.json();
    assert!(p["svg"].as_str().unwrap().starts_with("<svg"), "{p}");
    assert_eq!(p["plan"].as_array().unwrap().len(), 3);
    assert!(p["plan"][2]["recommended"].is_string());
    let p = get(port, "/api/plan?model=lenet&nodes=1,4&strategies=dp&jitter=3%25").json();
    assert!(p["plan"][1]["predictions"][0]["straggle_s"].as_f64().unwrap() > 0.0, "{p}");
    for (q, needle) in [
        ("model=..%2Fetc%2Fpasswd", "unknown model"),
        ("link=fast", "link"),
        ("nodes=0", "nodes"),
        ("batch=-3", "batch"),
        ("colour=red", "bad plan query"),
        ("node_gflops=-1", "'-'"),
        ("jitter=lots", "--jitter"),
        ("eager_limit=0", "--eager-limit"),
    ] {
        let r = get(port, &format!("/api/plan?{q}"));
        assert_eq!(r.status, 400, "{q}: {}", r.text());
        assert!(r.json()["error"].as_str().unwrap().contains(needle), "{q}: {}", r.text());
    }
    assert!(server.alive());
}

/// The model-parallel strategies launch from the API too, with their parameters checked by the
/// server as the CLI checks them; each run finishes with loadable weights and one trace track
/// pair per worker thread.
#[test]
fn pipeline_tensor_and_hybrid_runs_launch_from_the_api() {
    let dir = workdir("split");
    let mut server = Server::start(&dir, common::small_mnist(), 1);
    let port = server.port;
    let base = serde_json::json!({"dataset": "small", "threads": 1, "steps": 8, "batch_size": 32, "lr": 0.05});
    let with = |extra: Value| {
        let mut b = base.clone();
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b.to_string()
    };
    for (extra, workers) in [
        (
            serde_json::json!({"strategy": "pipeline", "stages": 2, "micro_batches": 4, "pipeline_schedule": "gpipe"}),
            2u64,
        ),
        (serde_json::json!({"strategy": "tensor", "mp": 2}), 2),
        (serde_json::json!({"strategy": "hybrid", "dp": 2, "pp": 2}), 4),
        (serde_json::json!({"strategy": "hybrid", "dp": 2, "mp": 2}), 4),
    ] {
        let r = post_json(port, "/api/runs", &with(extra.clone()));
        assert_eq!(r.status, 201, "{extra}: {}", r.text());
        let run = r.json();
        assert_eq!(run["config"]["strategy"], extra["strategy"]);
        assert_eq!(run["config"]["workers"], workers, "{extra}: worker threads of the run");
        let id = run["id"].as_str().unwrap().to_string();
        let events = http::follow_sse(port, &format!("/api/runs/{id}/events"), None);
        assert!(events.last().unwrap().data.contains("finished"), "{extra}: {events:?}");
        let steps = metrics(&events).iter().filter(|e| e["event"] == "step").count();
        assert_eq!(steps, 8, "{extra}");
        let path = dir.join(format!("{id}.safetensors"));
        std::fs::write(&path, get(port, &format!("/api/runs/{id}/files/weights")).body).unwrap();
        let net = convoy::net::Net::build(&convoy::net::ModelSpec::resolve("lenet").unwrap()).unwrap();
        let params = convoy::checkpoint::load_weights(&path, net.layout()).unwrap();
        assert!(params.iter().all(|v| v.is_finite()));
        let trace: Value = serde_json::from_slice(&get(port, &format!("/api/runs/{id}/files/trace")).body).unwrap();
        let mut pids: Vec<u64> = trace["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["ph"] == "X")
            .map(|e| e["pid"].as_u64().unwrap())
            .collect();
        pids.sort();
        pids.dedup();
        assert_eq!(pids, (0..workers).collect::<Vec<_>>(), "{extra}: a track per worker");
    }
    for (extra, needle) in [
        (serde_json::json!({"strategy": "pipeline", "stages": 1}), "--stages 1"),
        (serde_json::json!({"strategy": "pipeline", "stages": 0}), "stages"),
        (serde_json::json!({"strategy": "pipeline", "pipeline_schedule": "zigzag"}), "pipeline_schedule"),
        (serde_json::json!({"strategy": "pipeline", "servers": 2}), "servers"),
        (serde_json::json!({"strategy": "hybrid", "dp": 2}), "--strategy hybrid needs"),
        (serde_json::json!({"strategy": "hybrid", "dp": 40, "pp": 40}), "1600 workers"),
        (serde_json::json!({"strategy": "tensor", "mp": 100}), "mp"),
        (serde_json::json!({"strategy": "allreduce", "stages": 2}), "--strategy pipeline"),
        (serde_json::json!({"strategy": "pipeline", "stages": 2, "micro_batches": 64}), "--micro-batches 64"),
    ] {
        let r = post_json(port, "/api/runs", &with(extra.clone()));
        assert_eq!(r.status, 400, "{extra}: {}", r.text());
        let msg = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(msg.contains(needle), "{extra}: '{msg}' lacks '{needle}'");
    }
    assert!(server.alive());
    drop(server);
}

#[test]
fn a_stopped_run_ends_cleanly_with_its_checkpoint_weights() {
    let dir = workdir("stop");
    let server = Server::start(&dir, common::small_mnist(), 1);
    let port = server.port;
    let r = post_json(
        port,
        "/api/runs",
        r#"{"dataset": "small", "workers": 2, "threads": 1, "steps": 100000, "batch_size": 32}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    // Wait (bounded) until it has made a step, then stop it.
    let metrics_file = dir.join("runs").join(&id).join("metrics.jsonl");
    for _ in 0..600 {
        if std::fs::read_to_string(&metrics_file).is_ok_and(|t| t.contains("\"event\":\"step\"")) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let r = post_json(port, &format!("/api/runs/{id}/stop"), "");
    assert_eq!(r.status, 200, "{}", r.text());
    let events = http::follow_sse(port, &format!("/api/runs/{id}/events"), None);
    assert!(events.last().unwrap().data.contains("stopped"), "{events:?}");
    let run = get(port, &format!("/api/runs/{id}")).json();
    assert_eq!(run["status"], "stopped");
    assert_eq!(run["exit_code"], 143);
    let w = get(port, &format!("/api/runs/{id}/files/weights"));
    assert_eq!(w.status, 200);
    let path = dir.join("stopped.safetensors");
    std::fs::write(&path, &w.body).unwrap();
    let net = convoy::net::Net::build(&convoy::net::ModelSpec::resolve("lenet").unwrap()).unwrap();
    convoy::checkpoint::load_weights(&path, net.layout()).unwrap();
    // Stopping it again is a conflict, not a crash.
    assert_eq!(post_json(port, &format!("/api/runs/{id}/stop"), "").status, 409);
}

#[test]
fn cli_runs_with_runs_dir_are_listed() {
    let dir = workdir("cli");
    let runs_dir = dir.join("runs");
    let runs_dir = runs_dir.to_str().unwrap();
    let out = common::convoy(&[
        "train",
        "--steps",
        "3",
        "--threads",
        "1",
        "--no-progress",
        "--no-epoch-eval",
        "--runs-dir",
        runs_dir,
        "--data",
        common::small_mnist().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Bad flags make no run folder.
    let bad = common::convoy(&["train", "--workers", "0", "--runs-dir", runs_dir]);
    assert_eq!(bad.status.code(), Some(2));
    let server = Server::start(&dir, common::small_mnist(), 1);
    let runs = get(server.port, "/api/runs").json()["runs"].as_array().unwrap().clone();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["source"], "cli");
    assert_eq!(runs[0]["status"], "finished");
    let files: Vec<&str> = runs[0]["files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    assert_eq!(files, ["weights", "metrics", "trace"]);
}

#[test]
fn bad_serve_flags_exit_2_with_the_flag_named() {
    for (args, flag) in [(&["--max-runs", "0"][..], "--max-runs"), (&["--addr", "localhost-ish"][..], "--addr")] {
        let out = common::convoy(&[&["serve"][..], args].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(flag), "{}", String::from_utf8_lossy(&out.stderr));
    }
}
