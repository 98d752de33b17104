//! Parameter initialisers, matching PyTorch's defaults and Caffe's fillers.
//!
//! PyTorch's `Conv2d`/`Linear` use `kaiming_uniform_(w, a=√5)`, i.e. U(−b, b) with
//! b = gain·√(3/fan_in), gain = √(2/(1+a²)) = √(1/3), so b = 1/√fan_in; their bias is
//! U(−1/√fan_in, 1/√fan_in). See torch/nn/modules/conv.py `reset_parameters`.

use super::rng::Rng;

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
    /// N(0, std²).
    Gaussian {
        /// Standard deviation.
        std: f32,
    },
    /// Caffe's xavier: U(−√(3/fan_in), √(3/fan_in)).
    Xavier {
        /// Fan-in.
        fan_in: usize,
    },
    /// Caffe's msra (He): N(0, 2/fan_in).
    Msra {
        /// Fan-in.
        fan_in: usize,
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
            Init::Gaussian { std } => buf.iter_mut().for_each(|x| *x = std * rng.normal()),
            Init::Xavier { fan_in } => {
                let b = (3.0 / fan_in.max(1) as f32).sqrt();
                buf.iter_mut().for_each(|x| *x = rng.uniform(-b, b));
            }
            Init::Msra { fan_in } => {
                let s = (2.0 / fan_in.max(1) as f32).sqrt();
                buf.iter_mut().for_each(|x| *x = s * rng.normal());
            }
            Init::Constant(c) => buf.fill(c),
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
}
