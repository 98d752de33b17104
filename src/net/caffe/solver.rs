//! Caffe's `SolverParameter` (`--solver`): what it sets, in convoy's terms.

use super::text::{err, lex, num, parse_msg, CaffeError, Value};

/// What a Caffe `SolverParameter` sets, in convoy's terms (`--solver`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Solver {
    /// `net`: the model prototxt.
    pub net: Option<String>,
    /// `base_lr`.
    pub lr: Option<f32>,
    /// `momentum`.
    pub momentum: Option<f32>,
    /// `weight_decay`.
    pub weight_decay: Option<f32>,
    /// `lr_policy` with its parameters, as a `--schedule` spec.
    pub schedule: Option<String>,
    /// `max_iter`.
    pub steps: Option<u64>,
    /// `type`: sgd, or adam; `nesterov` for Nesterov.
    pub optimizer: Option<String>,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// `random_seed`.
    pub seed: Option<u64>,
    /// `snapshot` (steps).
    pub snapshot: Option<u64>,
    /// `snapshot_prefix`.
    pub snapshot_prefix: Option<String>,
    /// `iter_size` (gradient accumulation).
    pub iter_size: Option<usize>,
    /// `test_interval`: evaluate every this many steps (`--eval-every`).
    pub test_interval: Option<u64>,
    /// `test_iter`: read, not applied (convoy evaluates the whole test set).
    pub test_iter: Option<u64>,
    /// `display`: log every N steps (`--log-every`); 0 is never.
    pub display: Option<u64>,
}

/// Parses a Caffe solver; `note` receives what is accepted but not applied.
// Long: the fields of a SolverParameter read in the order of caffe.proto, each error naming its line.
pub fn solver_from_prototxt(text: &str, origin: &str, note: &mut dyn FnMut(String)) -> Result<Solver, CaffeError> {
    let toks = lex(text, origin)?;
    let m = parse_msg(&toks, &mut 0, origin, false)?;
    m.only(
        &[
            "net",
            "train_net",
            "base_lr",
            "momentum",
            "weight_decay",
            "lr_policy",
            "gamma",
            "power",
            "stepsize",
            "stepvalue",
            "max_iter",
            "test_interval",
            "test_iter",
            "display",
            "snapshot",
            "snapshot_prefix",
            "type",
            "solver_type",
            "random_seed",
            "solver_mode",
            "device_id",
            "momentum2",
            "delta",
            "test_initialization",
            "average_loss",
            "iter_size",
            "regularization_type",
            "snapshot_format",
        ],
        origin,
        "the solver",
    )?;
    let mut s = Solver { net: m.scalar("net").or(m.scalar("train_net")).map(|v| v.0.to_string()), ..Solver::default() };
    s.lr = num(&m, "base_lr", origin)?;
    s.momentum = num(&m, "momentum", origin)?;
    s.weight_decay = num(&m, "weight_decay", origin)?;
    s.steps = num(&m, "max_iter", origin)?;
    s.seed = num::<i64>(&m, "random_seed", origin)?.filter(|&v| v >= 0).map(|v| v as u64);
    s.snapshot = num::<u64>(&m, "snapshot", origin)?.filter(|&v| v > 0);
    s.snapshot_prefix = m.scalar("snapshot_prefix").map(|v| v.0.to_string());
    s.iter_size = num::<usize>(&m, "iter_size", origin)?.filter(|&v| v > 1);
    // Caffe's 0 (test_interval, display) is "never".
    s.test_interval = num::<u64>(&m, "test_interval", origin)?.filter(|&v| v > 0);
    s.test_iter = num(&m, "test_iter", origin)?;
    s.display = num::<u64>(&m, "display", origin)?.filter(|&v| v > 0);
    if let (Some(n), Some((_, line))) = (s.test_iter, m.scalar("test_iter")) {
        note(format!("{origin}:{line}: test_iter: {n} read and not applied: convoy evaluates the whole test set (Caffe: test_iter batches of the TEST Data layer)"));
    }
    let ty_raw = m.scalar("type").or(m.scalar("solver_type")).map(|v| v.0);
    let ty = ty_raw.map(str::to_ascii_lowercase);
    match ty.as_deref() {
        None | Some("sgd") => s.optimizer = Some("sgd".into()),
        Some("nesterov") => {
            s.optimizer = Some("sgd".into());
            s.nesterov = true;
        }
        Some("adam") => {
            s.optimizer = Some("adam".into());
            if num::<f32>(&m, "momentum2", origin)?.is_some_and(|b| b != 0.999)
                || num::<f32>(&m, "delta", origin)?.is_some_and(|d| d != 1e-8)
            {
                let line = m.scalar("momentum2").or(m.scalar("delta")).map_or(1, |v| v.1);
                return err(origin, line, "Adam with momentum2 ≠ 0.999 or delta ≠ 1e-8 is not supported yet");
            }
            if s.momentum.is_some_and(|b| b != 0.9) {
                return err(
                    origin,
                    m.scalar("momentum").map_or(1, |v| v.1),
                    "Adam's momentum (β1) must be 0.9 in convoy for now",
                );
            }
            s.momentum = None;
        }
        Some(_) => {
            return err(
                origin,
                m.scalar("type").or(m.scalar("solver_type")).map_or(1, |v| v.1),
                format!("solver type '{}' is not supported; hint: SGD, Nesterov or Adam", ty_raw.unwrap_or("")),
            )
        }
    }
    if let Some((r, line)) = m.scalar("regularization_type") {
        if r != "L2" {
            return err(origin, line, format!("regularization_type {r}: only L2 is supported"));
        }
    }
    let gamma: Option<f32> = num(&m, "gamma", origin)?;
    let power: Option<f32> = num(&m, "power", origin)?;
    let need = |v: Option<f32>, what: &str, line: usize| {
        v.ok_or_else(|| CaffeError::at(origin, line, format!("this lr_policy needs {what}")))
    };
    if let Some((policy, line)) = m.scalar("lr_policy") {
        s.schedule = Some(match policy {
            "fixed" => "constant".into(),
            "step" => {
                let size: u64 = num(&m, "stepsize", origin)?
                    .ok_or_else(|| CaffeError::at(origin, line, "lr_policy step needs stepsize"))?;
                format!("step:{size}:{}", need(gamma, "gamma", line)?)
            }
            "multistep" => {
                let values: Vec<String> = m
                    .all("stepvalue")
                    .filter_map(|(v, _)| if let Value::Scalar(s) = v { Some(s.clone()) } else { None })
                    .collect();
                if values.is_empty() {
                    return err(origin, line, "lr_policy multistep needs stepvalue entries");
                }
                format!("multistep:{}:{}", values.join(","), need(gamma, "gamma", line)?)
            }
            "inv" => format!("inv:{}:{}", need(gamma, "gamma", line)?, need(power, "power", line)?),
            "poly" => format!(
                "poly:{}:{}",
                s.steps.ok_or_else(|| CaffeError::at(origin, line, "lr_policy poly needs max_iter"))?,
                need(power, "power", line)?
            ),
            "exp" => format!("exp:{}", need(gamma, "gamma", line)?),
            other => {
                return err(
                    origin,
                    line,
                    format!("lr_policy '{other}' is not supported; hint: fixed, step, multistep, inv, poly, exp"),
                )
            }
        });
    }
    for f in ["solver_mode", "device_id", "average_loss", "test_initialization", "snapshot_format"] {
        if let Some((v, line)) = m.scalar(f) {
            note(format!("{origin}:{line}: {f}: {v} accepted and ignored (convoy runs on the CPU, reports each step's own loss, evaluates after training has started, writes safetensors)"));
        }
    }
    Ok(s)
}

#[cfg(test)]
mod solver_tests {
    use super::*;

    #[test]
    fn caffe_mnist_lenet_solver_maps_to_convoy_settings() {
        // Caffe's examples/mnist/lenet_solver.prototxt.
        let text = r#"
net: "examples/mnist/lenet_train_test.prototxt"
test_iter: 100
test_interval: 500
base_lr: 0.01
momentum: 0.9
weight_decay: 0.0005
lr_policy: "inv"
gamma: 0.0001
power: 0.75
display: 100
max_iter: 10000
snapshot: 5000
snapshot_prefix: "examples/mnist/lenet"
solver_mode: CPU
"#;
        let mut notes = Vec::new();
        let s = solver_from_prototxt(text, "lenet_solver.prototxt", &mut |n| notes.push(n)).unwrap();
        assert_eq!(s.net.as_deref(), Some("examples/mnist/lenet_train_test.prototxt"));
        assert_eq!((s.lr, s.momentum, s.weight_decay, s.steps), (Some(0.01), Some(0.9), Some(0.0005), Some(10000)));
        assert_eq!(s.schedule.as_deref(), Some("inv:0.0001:0.75"));
        assert_eq!((s.snapshot, s.snapshot_prefix.as_deref()), (Some(5000), Some("examples/mnist/lenet")));
        assert_eq!(s.optimizer.as_deref(), Some("sgd"));
        assert_eq!((s.test_interval, s.test_iter, s.display), (Some(500), Some(100), Some(100)));
        assert!(notes.iter().any(|n| n.contains("solver_mode")), "{notes:?}");
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("lenet_solver.prototxt:3: test_iter: 100") && n.contains("whole test set")),
            "{notes:?}"
        );
        assert!(!notes.iter().any(|n| n.contains("display")), "display is applied (--log-every): {notes:?}");
        assert!(!notes.iter().any(|n| n.contains("test_interval")), "test_interval is applied: {notes:?}");
        let multi = solver_from_prototxt(
            "lr_policy: \"multistep\"\ngamma: 0.1\nstepvalue: 100\nstepvalue: 200\ntype: \"Nesterov\"",
            "s",
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(multi.schedule.as_deref(), Some("multistep:100,200:0.1"));
        assert!(multi.nesterov);
        let poly =
            solver_from_prototxt("lr_policy: \"poly\"\npower: 1\nmax_iter: 50\ntype: \"Adam\"", "s", &mut |_| {})
                .unwrap();
        assert_eq!((poly.schedule.as_deref(), poly.optimizer.as_deref()), (Some("poly:50:1"), Some("adam")));
    }

    #[test]
    fn unsupported_solver_settings_name_the_line() {
        for (text, needle) in [
            ("base_lr: 0.1\nlr_policy: \"sigmoid\"", ":2:"),
            ("base_lr: 0.1\nclip_gradients: 10", "clip_gradients"),
            ("type: \"RMSProp\"", "RMSProp"),
            ("lr_policy: \"step\"\ngamma: 0.1", "stepsize"),
            ("base_lr: 0.1\ntest_interval: -5", ":2:"),
            ("display: often", "display: often"),
        ] {
            let e = solver_from_prototxt(text, "s.prototxt", &mut |_| {}).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
