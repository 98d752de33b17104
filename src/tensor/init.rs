//! Parameter initialisers: PyTorch's defaults, and Caffe's fillers (`Filler`, chosen per layer
//! in the model spec).
//!
//! PyTorch's `Conv2d`/`Linear` use `kaiming_uniform_(w, a=√5)`, i.e. U(−b, b) with
//! b = gain·√(3/fan_in), gain = √(2/(1+a²)) = √(1/3), so b = 1/√fan_in; their bias is
//! U(−1/√fan_in, 1/√fan_in). See torch/nn/modules/conv.py `reset_parameters`.

use super::rng::Rng;
use serde::{Deserialize, Serialize};

/// How one parameter tensor is initialised.
#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    /// PyTorch default weight init: kaiming-uniform with a = √5, bound 1/√fan_in.
    KaimingUniform {
        /// Inputs feeding one output (in_channels/groups · kh · kw, or in_features).
        fan_in: usize,
    },
    /// PyTorch default bias init: U(−1/√fan_in, 1/√fan_in).
    UniformFanIn {
        /// Same fan-in as the matching weight.
        fan_in: usize,
    },
    /// U(lo, hi).
    Uniform {
        /// Lower bound.
        lo: f32,
        /// Upper bound.
        hi: f32,
    },
    /// N(mean, std²).
    Gaussian {
        /// Mean.
        mean: f32,
        /// Standard deviation.
        std: f32,
    },
    /// Every element the same value.
    Constant(f32),
}

impl Init {
    /// Fills `buf` in order from `rng`.
    pub fn fill(&self, buf: &mut [f32], rng: &mut Rng) {
        let bound_fan = |f: usize| 1.0 / (f.max(1) as f32).sqrt();
        match *self {
            Init::KaimingUniform { fan_in } | Init::UniformFanIn { fan_in } => {
                let b = bound_fan(fan_in);
                buf.iter_mut().for_each(|x| *x = rng.uniform(-b, b));
            }
            Init::Uniform { lo, hi } => buf.iter_mut().for_each(|x| *x = rng.uniform(lo, hi)),
            Init::Gaussian { mean, std } => buf.iter_mut().for_each(|x| *x = mean + std * rng.normal()),
            Init::Constant(c) => buf.fill(c),
        }
    }
}

/// Which fan Caffe's xavier and msra fillers divide by (`variance_norm`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VarianceNorm {
    /// Inputs per output (Caffe's default).
    #[default]
    FanIn,
    /// Outputs per input.
    FanOut,
    /// (fan_in + fan_out) / 2.
    Average,
}

/// A Caffe `FillerParameter` (weight_filler, bias_filler): an initialiser chosen in the model
/// spec instead of PyTorch's default. Defaults are Caffe's (filler.hpp, caffe.proto).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Filler {
    /// Every value `value` (default 0).
    Constant {
        /// The value.
        #[serde(default)]
        value: f32,
    },
    /// N(mean, std²), defaults 0 and 1.
    Gaussian {
        /// Mean.
        #[serde(default)]
        mean: f32,
        /// Standard deviation.
        #[serde(default = "one")]
        std: f32,
    },
    /// U(−√(3/n), √(3/n)), n the fan chosen by `variance_norm`.
    Xavier {
        /// Which fan (default fan_in).
        #[serde(default)]
        variance_norm: VarianceNorm,
    },
    /// N(0, 2/n) (He et al.), n the fan chosen by `variance_norm`.
    Msra {
        /// Which fan (default fan_in).
        #[serde(default)]
        variance_norm: VarianceNorm,
    },
    /// U(min, max), defaults 0 and 1.
    Uniform {
        /// Lower bound.
        #[serde(default)]
        min: f32,
        /// Upper bound.
        #[serde(default = "one")]
        max: f32,
    },
}

fn one() -> f32 {
    1.0
}

impl Filler {
    /// The initialiser for a tensor of `shape` (PyTorch layout, which is Caffe's blob layout:
    /// fan_in = count / shape[0], fan_out = count / shape[1], or count for one axis, as Caffe's
    /// filler.hpp computes them).
    pub fn init(&self, shape: &[usize]) -> Init {
        let count: usize = shape.iter().product();
        let fan = |norm: VarianceNorm| {
            let fan_in = count / shape.first().copied().unwrap_or(1).max(1);
            let fan_out = if shape.len() > 1 { count / shape[1].max(1) } else { count };
            let n = match norm {
                VarianceNorm::FanIn => fan_in as f32,
                VarianceNorm::FanOut => fan_out as f32,
                VarianceNorm::Average => (fan_in + fan_out) as f32 / 2.0,
            };
            n.max(1.0)
        };
        match *self {
            Filler::Constant { value } => Init::Constant(value),
            Filler::Gaussian { mean, std } => Init::Gaussian { mean, std },
            Filler::Xavier { variance_norm } => {
                let b = (3.0 / fan(variance_norm)).sqrt();
                Init::Uniform { lo: -b, hi: b }
            }
            Filler::Msra { variance_norm } => Init::Gaussian { mean: 0.0, std: (2.0 / fan(variance_norm)).sqrt() },
            Filler::Uniform { min, max } => Init::Uniform { lo: min, hi: max },
        }
    }

    /// Checks the values: finite, std ≥ 0, min ≤ max.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            Filler::Gaussian { mean, std } if !(mean.is_finite() && std.is_finite() && std >= 0.0) => {
                Err(format!("gaussian filler needs a finite mean and std ≥ 0, got mean {mean}, std {std}"))
            }
            Filler::Uniform { min, max } if !(min.is_finite() && max.is_finite() && min <= max) => {
                Err(format!("uniform filler needs finite min ≤ max, got {min}, {max}"))
            }
            Filler::Constant { value } if !value.is_finite() => {
                Err(format!("constant filler value {value} is not finite"))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kaiming_bound_is_inverse_sqrt_fan_in() {
        let mut buf = vec![0.0; 10_000];
        Init::KaimingUniform { fan_in: 25 }.fill(&mut buf, &mut Rng::new(3));
        let max = buf.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!(max <= 0.2 && max > 0.199, "max {max}");
    }

    fn moments(f: &Filler, shape: &[usize], seed: u64) -> (Vec<f32>, f64, f64) {
        let mut buf = vec![0.0; shape.iter().product()];
        f.init(shape).fill(&mut buf, &mut Rng::new(seed));
        let n = buf.len() as f64;
        let mean = buf.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = buf.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        (buf, mean, var.sqrt())
    }

    /// Caffe's fillers on a (64, 32, 5, 5) conv weight: fan_in 800, fan_out 1600.
    #[test]
    fn caffe_fillers_have_their_moments_and_bounds() {
        let shape = [64, 32, 5, 5];
        let (c, _, _) = moments(&Filler::Constant { value: 0.25 }, &shape, 1);
        assert!(c.iter().all(|&x| x == 0.25));
        let (_, m, s) = moments(&Filler::Gaussian { mean: 0.5, std: 0.01 }, &shape, 1);
        assert!((m - 0.5).abs() < 1e-3 && (s - 0.01).abs() < 2e-4, "{m} {s}");
        for (norm, fan) in
            [(VarianceNorm::FanIn, 800.0f64), (VarianceNorm::FanOut, 1600.0), (VarianceNorm::Average, 1200.0)]
        {
            let (x, m, s) = moments(&Filler::Xavier { variance_norm: norm }, &shape, 2);
            let b = (3.0 / fan).sqrt();
            // U(−b, b): std b/√3.
            assert!(x.iter().all(|&v| (v.abs() as f64) <= b + 1e-7), "{norm:?}");
            assert!(m.abs() < 0.02 * b && (s - b / 3f64.sqrt()).abs() < 0.02 * b, "{norm:?}: {m} {s}");
            let (_, m, s) = moments(&Filler::Msra { variance_norm: norm }, &shape, 3);
            let want = (2.0 / fan).sqrt();
            assert!(m.abs() < 0.02 * want && (s - want).abs() < 0.02 * want, "{norm:?}: {m} {s} vs {want}");
        }
        let (x, m, _) = moments(&Filler::Uniform { min: -0.3, max: 0.1 }, &shape, 4);
        assert!(x.iter().all(|&v| (-0.3..=0.1).contains(&v)) && (m + 0.1).abs() < 3e-3, "{m}");
        // The same seed gives the same values; another seed others.
        let f = Filler::Xavier { variance_norm: VarianceNorm::FanIn };
        assert_eq!(moments(&f, &shape, 9).0, moments(&f, &shape, 9).0);
        assert_ne!(moments(&f, &shape, 9).0, moments(&f, &shape, 10).0);
        // A 1-D bias: fan_in 1, fan_out its length (Caffe's filler.hpp).
        assert_eq!(
            Filler::Xavier { variance_norm: VarianceNorm::FanOut }.init(&[12]),
            Init::Uniform { lo: -0.5, hi: 0.5 }
        );
        assert!(
            Filler::Uniform { min: 1.0, max: 0.0 }.validate().is_err()
                && Filler::Gaussian { mean: 0.0, std: -1.0 }.validate().is_err()
        );
    }
}
