//! Optimizers and schedules against PyTorch golden values.
//!
//! Generated with torch 2.15 CPU by this script (its printed lines are pasted below):
//! ```python
//! import torch, math
//! def run(make, steps=5):
//!     p = torch.nn.Parameter(torch.tensor([0.5, -0.3, 0.8, -1.2, 0.1, 0.0]))
//!     opt = make([p])
//!     for t in range(steps):
//!         p.grad = torch.tensor([math.sin(i + t) for i in range(6)], dtype=torch.float32)
//!         opt.step()
//!     return [f'{v:.8e}' for v in p.detach().tolist()]
//! print('sgd_momentum', run(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9)))
//! print('sgd_nesterov_wd', run(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)))
//! print('sgd_dampening', run(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.5, dampening=0.3, weight_decay=0.1)))
//! print('sgd_plain', run(lambda ps: torch.optim.SGD(ps, lr=0.1)))
//! print('adam_wd', run(lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=0.1)))
//! print('adamw', run(lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1)))
//! def sched(make, n=12):
//!     p = torch.nn.Parameter(torch.zeros(1)); opt = torch.optim.SGD([p], lr=0.1); s = make(opt); out = []
//!     for _ in range(n):
//!         out.append(f'{opt.param_groups[0]["lr"]:.8e}'); opt.step(); s.step()
//!     return out
//! print('steplr', sched(lambda o: torch.optim.lr_scheduler.StepLR(o, 4, 0.5)))
//! print('multistep', sched(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [3, 7], 0.1)))
//! print('cosine', sched(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 10, 0.001)))
//! print('exp', sched(lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.9)))
//! print('warmup4', sched(lambda o: torch.optim.lr_scheduler.LinearLR(o, 0.25, 1.0, 3)))
//! ```

use super::schedule::{LrSchedule, ScheduleKind};
use super::*;

fn run(cfg: OptimizerConfig, lr: f32) -> Vec<f32> {
    let mut p = vec![0.5f32, -0.3, 0.8, -1.2, 0.1, 0.0];
    let mut opt = cfg.build(6).unwrap();
    for t in 0..5 {
        let g: Vec<f32> = (0..6).map(|i| ((i + t) as f64).sin() as f32).collect();
        opt.step(&mut p, &g, lr);
    }
    p
}

fn close(got: &[f32], want: &[f32], what: &str) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-6 * w.abs().max(1e-1), "{what}[{i}]: {g} vs PyTorch {w}");
    }
}

fn sgd(momentum: f32, dampening: f32, nesterov: bool, weight_decay: f32) -> OptimizerConfig {
    OptimizerConfig::Sgd { momentum, dampening, nesterov, weight_decay }
}

#[test]
fn sgd_matches_pytorch() {
    close(
        &run(sgd(0.9, 0.0, false, 0.0), 0.1),
        &[1.30660273e-02, -7.55856693e-01, 7.94333160e-01, -7.50266910e-01, 5.91650546e-01, 8.15467760e-02],
        "momentum",
    );
    close(
        &run(sgd(0.9, 0.0, true, 0.01), 0.1),
        &[-5.74279577e-02, -7.18262136e-01, 8.78228605e-01, -6.57571971e-01, 5.71101785e-01, -1.14285359e-02],
        "nesterov",
    );
    close(
        &run(sgd(0.5, 0.3, false, 0.1), 0.1),
        &[2.89512128e-01, -4.27097470e-01, 7.73827016e-01, -9.56597090e-01, 2.54865646e-01, 3.93340038e-03],
        "dampening",
    );
    close(
        &run(sgd(0.0, 0.0, false, 0.0), 0.1),
        &[3.86491418e-01, -3.17616165e-01, 8.94472480e-01, -1.08029640e+00, 1.34879753e-01, -8.20123628e-02],
        "plain",
    );
}

#[test]
fn adam_and_adamw_match_pytorch() {
    let adam = OptimizerConfig::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 };
    close(
        &run(adam, 0.01),
        &[4.62119341e-01, -3.29395890e-01, 7.85091639e-01, -1.18124616e+00, 1.31911218e-01, 1.45872161e-02],
        "adam",
    );
    let adamw = OptimizerConfig::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 };
    close(
        &run(adamw, 0.01),
        &[4.71165806e-01, -3.28739285e-01, 7.84723580e-01, -1.17918992e+00, 1.31648511e-01, 1.45702707e-02],
        "adamw",
    );
}

#[test]
fn updating_two_ranges_equals_one_full_step_bitwise() {
    for cfg in
        [sgd(0.9, 0.0, true, 0.01), OptimizerConfig::Adam { beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.0 }]
    {
        let mut a = vec![0.5f32, -0.3, 0.8, -1.2, 0.1, 0.0];
        let mut b = a.clone();
        let (mut oa, mut ob) = (cfg.build(6).unwrap(), cfg.build(6).unwrap());
        for t in 0..4 {
            let g: Vec<f32> = (0..6).map(|i| ((i * 3 + t) as f32).cos()).collect();
            oa.step(&mut a, &g, 0.05);
            ob.begin_step();
            ob.update_range(3..6, &mut b[3..6], &g[3..6], 0.05);
            ob.update_range(0..3, &mut b[0..3], &g[0..3], 0.05);
        }
        assert_eq!(a, b);
        assert_eq!(oa.state()[0].1, ob.state()[0].1);
    }
}

#[test]
fn bad_hyper_parameters_are_rejected() {
    assert!(OptimizerConfig::from_name("sgd", -0.9, false, None).unwrap_err().to_string().contains("momentum"));
    assert!(OptimizerConfig::from_name("sgd", 0.0, true, None).unwrap_err().to_string().contains("nesterov"));
    assert!(OptimizerConfig::from_name("lbfgs", 0.9, false, None).unwrap_err().to_string().contains("lbfgs"));
    assert!(OptimizerConfig::from_name("adam", 0.9, false, Some(f32::NAN)).is_err());
    assert!(OptimizerConfig::Adam { beta1: 1.0, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }.validate().is_err());
    assert_eq!(
        OptimizerConfig::from_name("adamw", 0.9, false, None).unwrap(),
        OptimizerConfig::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    );
}

fn lrs(s: &LrSchedule) -> Vec<f32> {
    (0..12).map(|t| s.lr_at(t)).collect()
}

#[test]
fn schedules_match_pytorch_and_caffe() {
    let p = |spec: &str| LrSchedule::parse(spec, 0.1).unwrap();
    close(&lrs(&p("step:4:0.5")), &[0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.025], "step");
    close(
        &lrs(&p("multistep:3,7:0.1")),
        &[0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.01, 0.001, 0.001, 0.001, 0.001, 0.001],
        "multistep",
    );
    close(
        &lrs(&p("cosine:10:0.001")),
        &[
            1.0e-01,
            9.75772976e-02,
            9.05463412e-02,
            7.95953700e-02,
            6.57963412e-02,
            5.05e-02,
            3.52036588e-02,
            2.14046300e-02,
            1.04536588e-02,
            3.42270244e-03,
            1.0e-03,
            3.42270244e-03,
        ],
        "cosine",
    );
    close(
        &lrs(&p("exp:0.9")),
        &[
            0.1,
            0.09,
            0.081,
            0.0729,
            0.06561,
            0.059049,
            0.0531441,
            0.04782969,
            0.043046721,
            0.0387420489,
            0.034867844,
            0.0313810596,
        ],
        "exp",
    );
    close(&lrs(&p("warmup:4,constant")), &[0.025, 0.05, 0.075, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], "warmup");
    // Caffe inv and poly, by hand: 0.1·(1 + 0.0001·1000)^(−0.75) and 0.1·(1 − 250/1000)^2.
    assert!((p("inv:0.0001:0.75").lr_at(1000) - 0.1 * 1.1f32.powf(-0.75)).abs() < 1e-8);
    assert!((p("poly:1000:2").lr_at(250) - 0.05625).abs() < 1e-8);
    assert_eq!(p("poly:1000:2").lr_at(5000), 0.0);
    assert_eq!(p("warmup:10,step:100:0.1").kind, ScheduleKind::Step { step_size: 100, gamma: 0.1 });
    for bad in ["sometimes", "step:0:0.1", "step:10", "multistep:5,3:0.1", "cosine:x", "warmup:a,constant", "exp:inf"] {
        let e = LrSchedule::parse(bad, 0.1).unwrap_err().to_string();
        assert!(e.contains(bad) && e.contains("grammar"), "{e}");
    }
}

#[test]
fn frozen_ranges_are_never_updated_whatever_the_sub_ranges() {
    let cfg = OptimizerConfig::Sgd { momentum: 0.9, dampening: 0.0, nesterov: false, weight_decay: 0.1 };
    let frozen = vec![(2..4, ParamMult::FROZEN), (6..7, ParamMult::FROZEN)];
    let grads: Vec<f32> = (0..10).map(|i| i as f32 - 4.0).collect();
    let mut whole = vec![1.0f32; 10];
    let mut parts = whole.clone();
    let (mut a, mut b) = (cfg.build_scaled(10, frozen.clone()).unwrap(), cfg.build_scaled(10, frozen).unwrap());
    for _ in 0..3 {
        a.step(&mut whole, &grads, 0.1);
        b.begin_step();
        for r in [0..3, 3..6, 6..10] {
            b.update_range(r.clone(), &mut parts[r.clone()], &grads[r], 0.1);
        }
    }
    assert_eq!(whole, parts);
    assert_eq!((whole[2], whole[3], whole[6]), (1.0, 1.0, 1.0));
    assert!(whole.iter().enumerate().filter(|(i, _)| ![2, 3, 6].contains(i)).all(|(_, &v)| v != 1.0));
    assert!(a.state()[0].1[2..4].iter().all(|&m| m == 0.0));
}

/// Caffe's `lr_mult: 2 decay_mult: 0` (its usual bias setting) on a range: that range moves
/// by 2·lr·g with no decay, the others by lr·(g + wd·p), whatever the sub-ranges of the update.
#[test]
fn lr_and_decay_multipliers_scale_their_range_only() {
    let cfg = OptimizerConfig::Sgd { momentum: 0.0, dampening: 0.0, nesterov: false, weight_decay: 0.1 };
    let (lr, p0) = (0.5f32, 2.0f32);
    let grads = [1.0f32, -1.0, 0.5, 0.25, 4.0, 0.0];
    let mults = vec![
        (1..3, ParamMult { lr: 2.0, decay: 0.0 }),
        (4..5, ParamMult::FROZEN),
        (5..6, ParamMult { lr: 1.0, decay: 3.0 }),
    ];
    let want: Vec<f32> = grads
        .iter()
        .enumerate()
        .map(|(i, &g)| match i {
            1 | 2 => p0 - 2.0 * lr * g,
            4 => p0,
            5 => p0 - lr * (g + 0.1 * 3.0 * p0),
            _ => p0 - lr * (g + 0.1 * p0),
        })
        .collect();
    // By hand: p = 2, g = 1 → 2 − 0.5·(1 + 0.2) = 1.4; in the ×2, no-decay range g = −1 → 3.
    for (got, hand) in [(want[0], 1.4), (want[1], 3.0), (want[4], 2.0), (want[5], 1.7)] {
        assert!((got - hand).abs() < 1e-6, "{got} vs {hand}");
    }
    let mut whole = vec![p0; 6];
    let mut opt = cfg.build_scaled(6, mults.clone()).unwrap();
    opt.step(&mut whole, &grads, lr);
    assert_eq!(whole, want);
    let mut parts = vec![p0; 6];
    let mut opt = cfg.build_scaled(6, mults).unwrap();
    opt.begin_step();
    for r in [0..2, 2..5, 5..6] {
        opt.update_range(r.clone(), &mut parts[r.clone()], &grads[r], lr);
    }
    assert_eq!(parts, want);
    // No multipliers: the plain optimizer, bit for bit.
    let (mut a, mut b) = (vec![p0; 6], vec![p0; 6]);
    cfg.build_scaled(6, Vec::new()).unwrap().step(&mut a, &grads, lr);
    cfg.build(6).unwrap().step(&mut b, &grads, lr);
    assert_eq!(a, b);
    assert!(cfg.build_scaled(6, vec![(0..1, ParamMult { lr: -1.0, decay: 1.0 })]).is_err());
}
