//! Learning-rate schedules as pure functions of the step (so a resumed run gets the same rate).
//!
//! PyTorch's StepLR, MultiStepLR, CosineAnnealingLR (closed form), ExponentialLR, and Caffe's
//! `inv` (base·(1 + γ·it)^(−power)) and `poly` (base·(1 − it/max_iter)^power) from
//! caffe/src/caffe/solvers/sgd_solver.cpp `GetLearningRate`. Linear warm-up multiplies the
//! scheduled rate by (step + 1)/N for the first N steps (PyTorch LinearLR with start_factor 1/N).

use super::OptimError;

/// The shape of a schedule.
#[derive(Clone, Debug, PartialEq)]
pub enum ScheduleKind {
    /// The base rate throughout.
    Constant,
    /// × γ every `step_size` steps.
    Step {
        /// Steps between decays.
        step_size: u64,
        /// Decay factor.
        gamma: f32,
    },
    /// × γ at each milestone.
    MultiStep {
        /// Steps at which to decay (ascending).
        milestones: Vec<u64>,
        /// Decay factor.
        gamma: f32,
    },
    /// Cosine annealing from the base rate to `eta_min` over `t_max` steps.
    Cosine {
        /// Period (0 until `resolve` sets it to the run's length).
        t_max: u64,
        /// Final rate.
        eta_min: f32,
    },
    /// Caffe `inv`.
    Inv {
        /// γ.
        gamma: f32,
        /// Power.
        power: f32,
    },
    /// Caffe `poly`.
    Poly {
        /// Steps to reach zero.
        max_iter: u64,
        /// Power.
        power: f32,
    },
    /// × γ every step.
    Exp {
        /// Decay factor.
        gamma: f32,
    },
}

/// A learning-rate schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct LrSchedule {
    /// Base learning rate.
    pub base_lr: f32,
    /// Shape.
    pub kind: ScheduleKind,
    /// Linear warm-up steps (0 = none).
    pub warmup_steps: u64,
}

impl LrSchedule {
    /// A constant rate.
    pub fn constant(base_lr: f32) -> LrSchedule {
        LrSchedule { base_lr, kind: ScheduleKind::Constant, warmup_steps: 0 }
    }

    /// Fills in what depends on the run's length: `cosine` without T_MAX anneals over all
    /// `total_steps` of the run.
    pub fn resolve(mut self, total_steps: u64) -> LrSchedule {
        if let ScheduleKind::Cosine { t_max, .. } = &mut self.kind {
            if *t_max == 0 {
                *t_max = total_steps.max(1);
            }
        }
        self
    }

    /// The rate for the update at `step` (0-based).
    pub fn lr_at(&self, step: u64) -> f32 {
        let base = self.base_lr as f64;
        let s = step as f64;
        let lr = match &self.kind {
            ScheduleKind::Constant => base,
            ScheduleKind::Step { step_size, gamma } => base * (*gamma as f64).powi((step / step_size.max(&1)) as i32),
            ScheduleKind::MultiStep { milestones, gamma } => {
                base * (*gamma as f64).powi(milestones.iter().filter(|&&m| m <= step).count() as i32)
            }
            ScheduleKind::Cosine { t_max, eta_min } => {
                let e = *eta_min as f64;
                e + (base - e) * (1.0 + (std::f64::consts::PI * s / (*t_max).max(1) as f64).cos()) / 2.0
            }
            ScheduleKind::Inv { gamma, power } => base * (1.0 + *gamma as f64 * s).powf(-(*power as f64)),
            ScheduleKind::Poly { max_iter, power } => {
                base * (1.0 - (s / (*max_iter).max(1) as f64).min(1.0)).powf(*power as f64)
            }
            ScheduleKind::Exp { gamma } => base * (*gamma as f64).powf(s),
        };
        let warm = if step < self.warmup_steps { (step + 1) as f64 / self.warmup_steps as f64 } else { 1.0 };
        (lr * warm) as f32
    }

    /// Parses the `--schedule` grammar (see `OptimError::Schedule`).
    // Long: one match over the schedule grammar, an arm per schedule with its own error messages.
    pub fn parse(spec: &str, base_lr: f32) -> Result<LrSchedule, OptimError> {
        let err = |msg: &str| OptimError::Schedule { spec: spec.to_string(), msg: msg.to_string() };
        let (warmup_steps, rest) = match spec.strip_prefix("warmup:") {
            Some(r) => {
                let (n, rest) = r.split_once(',').unwrap_or((r, "constant"));
                (n.parse::<u64>().map_err(|_| err("warmup needs a step count, e.g. warmup:100,cosine:5000"))?, rest)
            }
            None => (0, spec),
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let num = |i: usize| -> Result<f32, OptimError> {
            let v: f32 =
                parts.get(i).ok_or_else(|| err("missing a number"))?.parse().map_err(|_| err("not a number"))?;
            if v.is_finite() {
                Ok(v)
            } else {
                Err(err("numbers must be finite"))
            }
        };
        let int = |i: usize| -> Result<u64, OptimError> {
            let v: u64 = parts
                .get(i)
                .ok_or_else(|| err("missing a step count"))?
                .parse()
                .map_err(|_| err("not a step count"))?;
            if v == 0 {
                Err(err("step counts must be ≥ 1"))
            } else {
                Ok(v)
            }
        };
        let arity = |n: std::ops::RangeInclusive<usize>| {
            if n.contains(&parts.len()) {
                Ok(())
            } else {
                Err(err("wrong number of fields"))
            }
        };
        let kind = match parts[0] {
            "constant" => {
                arity(1..=1)?;
                ScheduleKind::Constant
            }
            "step" => {
                arity(3..=3)?;
                ScheduleKind::Step { step_size: int(1)?, gamma: num(2)? }
            }
            "multistep" => {
                arity(3..=3)?;
                let mut milestones = Vec::new();
                for m in parts[1].split(',') {
                    milestones.push(
                        m.parse::<u64>()
                            .map_err(|_| err("milestones must be step counts, e.g. multistep:500,800:0.1"))?,
                    );
                }
                if milestones.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(err("milestones must be increasing"));
                }
                ScheduleKind::MultiStep { milestones, gamma: num(2)? }
            }
            "cosine" => {
                arity(1..=3)?;
                let t_max = if parts.len() >= 2 { int(1)? } else { 0 };
                ScheduleKind::Cosine { t_max, eta_min: if parts.len() == 3 { num(2)? } else { 0.0 } }
            }
            "inv" => {
                arity(3..=3)?;
                ScheduleKind::Inv { gamma: num(1)?, power: num(2)? }
            }
            "poly" => {
                arity(3..=3)?;
                ScheduleKind::Poly { max_iter: int(1)?, power: num(2)? }
            }
            "exp" => {
                arity(2..=2)?;
                ScheduleKind::Exp { gamma: num(1)? }
            }
            _ => return Err(err("unknown schedule")),
        };
        Ok(LrSchedule { base_lr, kind, warmup_steps })
    }
}
