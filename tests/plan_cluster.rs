//! `convoy plan` against an emulated 2-host cluster (network namespaces joined by a bridge, links
//! capped at 200 Mbit/s by tc tbf; scripts/cluster.sh), as root with `ip netns` available:
//! the link and the compute are calibrated in the same run by `convoy plan calibrate --comm mpi`,
//! and the predicted step of LeNet in a 2-stage pipeline (8 micro-batches, cut where the plan
//! says) must be within 25 % of the measured one (the 15 % target is for
//! bench/plan_vs_cluster.sh, not a test on a noisy machine). The pipeline, the strategy whose
//! prediction is a simulation (1F1B, pass by pass, with the cluster's MPI eager limit): its
//! 2-host predictions were +5, −1, +8 and −11 % in bench/results/2026-12-01-plan-vs-cluster-5.md
//! (data parallel's +1, −0, −6 and −9 %). Elsewhere it says why it did not run.
#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::Command;

const PREFIX: &str = "cvt";
const NET: &str = "10.231.78";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster.sh")
}

fn cluster(args: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg(script())
        .args(args)
        .env("CLUSTER_PREFIX", PREFIX)
        .env("CLUSTER_NET", NET)
        .output()
        .unwrap()
}

/// Removes the hosts however the test ends.
struct Down;

impl Drop for Down {
    fn drop(&mut self) {
        cluster(&["down"]);
    }
}

fn available() -> Result<(), String> {
    let uid = Command::new("id").arg("-u").output().map_err(|e| e.to_string())?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("not root".into());
    }
    let probe = format!("{PREFIX}-probe");
    let ok = Command::new("ip").args(["netns", "add", &probe]).status().map_err(|e| e.to_string())?.success();
    let _ = Command::new("ip").args(["netns", "del", &probe]).status();
    if !ok {
        return Err("ip netns add is not permitted here".into());
    }
    Ok(())
}

#[test]
fn plan_predicts_a_lenet_pipeline_on_2_emulated_hosts_within_25_percent() {
    if let Err(why) = available() {
        eprintln!("emulated cluster not available ({why}); not run");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_convoy");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("plan-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let profile = dir.join("profile.json");
    let _down = Down;
    let up = cluster(&["up", "2", "200mbit"]);
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    let run = |cmd: String| {
        let o = cluster(&["run", "bash", "-c", &cmd]);
        assert!(o.status.success(), "{cmd}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // The link (ping-pong and all-reduce between the hosts) and the compute (host 0 alone),
    // measured in the same run by `convoy plan calibrate --comm mpi`.
    let cal = run(format!(
        "mpirun --hostfile $CLUSTER_HOSTFILE -np 2 {bin} plan calibrate --comm mpi --model lenet --threads 1 --out {}",
        profile.display()
    ));
    eprintln!("{cal}");
    // The measurement: the median step of a 25-step run. The emulated link shares this
    // machine's two cores with everything else, so a run that lands in a busy moment is measured
    // once more and the faster median kept (a slower convoy fails both).
    // The prediction: 2 hosts share 2 cores, one each; their MPI's eager limit is the one
    // scripts/cluster.sh runs it with (8 MiB).
    let p = Command::new(bin)
        .args([
            "plan",
            "--profile",
            profile.to_str().unwrap(),
            "--model",
            "lenet",
            "--batch",
            "64",
            "--nodes",
            "2",
            "--link",
            "profile",
            "--latency",
            "profile",
            "--eager-limit",
            "8MiB",
        ])
        .args(["--cores-per-node", "1", "--strategies", "pipeline", "--micro-batches", "8", "--json"])
        .output()
        .unwrap();
    assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
    let v: serde_json::Value = serde_json::from_slice(&p.stdout).unwrap();
    let predicted = v[0]["predictions"][0]["step_s"].as_f64().unwrap();
    let split: Vec<&str> = v[0]["predictions"][0]["split_after"]
        .as_array()
        .expect("a pipeline prediction names its cuts")
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(split.len(), 1, "2 stages, one cut: {split:?}");
    let measure = |attempt: usize| -> f64 {
        let metrics = dir.join(format!("m{attempt}.jsonl"));
        run(format!(
            "mpirun --hostfile $CLUSTER_HOSTFILE -np 2 {bin} --log-level error train --no-progress --no-epoch-eval --steps 25 --batch-size 64 --threads 1 --strategy pipeline --stages 2 --micro-batches 8 --split-after {} --metrics {}",
            split[0],
            metrics.display()
        ));
        let mut steps: Vec<f64> = std::fs::read_to_string(&metrics)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("{\"event\":\"step\""))
            .skip(5)
            .map(|l| 64.0 / serde_json::from_str::<serde_json::Value>(l).unwrap()["images_per_sec"].as_f64().unwrap())
            .collect();
        steps.sort_by(f64::total_cmp);
        steps[steps.len() / 2]
    };
    let mut measured = measure(0);
    if ((predicted - measured) / measured).abs() > 0.25 {
        eprintln!("measured {:.1} ms against {:.1} ms predicted: measuring again", measured * 1e3, predicted * 1e3);
        measured = measured.min(measure(1));
    }
    let err = (predicted - measured) / measured;
    eprintln!(
        "2 hosts at 200 Mbit/s: measured {:.1} ms, predicted {:.1} ms ({:+.0} %)",
        measured * 1e3,
        predicted * 1e3,
        err * 100.0
    );
    assert!(err.abs() <= 0.25, "prediction {predicted:.4}s vs measured {measured:.4}s: {:+.0} %", err * 100.0);
}
