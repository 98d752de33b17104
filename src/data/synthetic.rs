//! Synthetic data of any shape, for benchmarks and smoke runs: `--data synthetic:CxHxW:CLASSES`
//! (optionally `:TRAIN` and `:TEST` sample counts, default 4096 and 1024).
//!
//! Nothing is stored: sample i of a split is computed on demand from fixed keys, so a set of a
//! million 3×224×224 images costs no memory and every run, rank and loader thread sees the
//! same values. Each class has its own mean image, smooth so that convolutions and pooling keep
//! it: a 4×4 grid of blocks per channel, each uniform in [−1, 1] (keyed by the class); a sample is
//! its class's mean plus unit Gaussian noise, so that a model can learn it and a smoke run's
//! loss falls. The label of sample i is drawn uniformly from its key.
//! The values do not depend on `--seed` (the data stays the same when the seed changes).

use super::{DataError, Dataset, Split};
use crate::tensor::rng::Rng;
use std::path::Path;

/// Keys separating the synthetic streams from everything else.
const SYNTHETIC: u64 = 0x7379_6e74; // "synt"
const CLASS_MEAN: u64 = 1;
/// The class means are constant on GRID × GRID blocks of each channel.
const GRID: usize = 4;

/// A parsed `synthetic:` data source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// Per-sample shape (C, H, W).
    pub shape: [usize; 3],
    /// Classes.
    pub classes: usize,
    /// Training samples.
    pub train: usize,
    /// Test samples.
    pub test: usize,
}

/// Largest sample accepted (elements): 64 Mi floats, far above 3×1024×1024.
const MAX_SAMPLE: usize = 64 << 20;

impl Spec {
    /// The spec when `path` is `synthetic:...` (else `None`).
    pub fn from_path(path: &Path) -> Option<Result<Spec, DataError>> {
        let s = path.to_str()?.strip_prefix("synthetic:")?;
        Some(Spec::parse(s).map_err(|msg| DataError::Format { path: path.to_path_buf(), msg }))
    }

    /// Parses `CxHxW:CLASSES[:TRAIN[:TEST]]`.
    pub fn parse(s: &str) -> Result<Spec, String> {
        let hint = "hint: --data synthetic:CxHxW:CLASSES[:TRAIN[:TEST]], e.g. synthetic:3x32x32:10 or synthetic:1x28x28:10:60000:10000";
        let parts: Vec<&str> = s.split(':').collect();
        if !(2..=4).contains(&parts.len()) {
            return Err(format!("'{s}' is not a synthetic data spec; {hint}"));
        }
        let dims: Vec<usize> = parts[0]
            .split('x')
            .map(|d| d.parse::<usize>().ok().filter(|&d| d > 0))
            .collect::<Option<_>>()
            .ok_or(format!("'{}' is not CxHxW with positive sizes; {hint}", parts[0]))?;
        let [c, h, w] = dims[..] else { return Err(format!("'{}' must have three sizes CxHxW; {hint}", parts[0])) };
        if c.checked_mul(h).and_then(|n| n.checked_mul(w)).is_none_or(|n| n > MAX_SAMPLE) {
            return Err(format!("a {c}x{h}x{w} sample is too large (at most {MAX_SAMPLE} values)"));
        }
        let count = |i: usize, default: usize, what: &str| match parts.get(i) {
            None => Ok(default),
            Some(t) => t
                .parse::<usize>()
                .ok()
                .filter(|&n| (1..=1 << 32).contains(&n))
                .ok_or(format!("{what} '{t}' must be a positive number; {hint}")),
        };
        let classes = count(1, 0, "the class count")?;
        if classes > 1 << 20 {
            return Err(format!("{classes} classes is too many"));
        }
        Ok(Spec {
            shape: [c, h, w],
            classes,
            train: count(2, 4096, "the training set size")?,
            test: count(3, 1024, "the test set size")?,
        })
    }
}

/// A synthetic split.
#[derive(Clone, Debug)]
pub struct Synthetic {
    spec: Spec,
    split: u64,
    len: usize,
}

impl Synthetic {
    /// The `split` of the set `spec` describes.
    pub fn new(spec: Spec, split: Split) -> Synthetic {
        let (split, len) = match split {
            Split::Train => (0, spec.train),
            Split::Test => (1, spec.test),
        };
        Synthetic { spec, split, len }
    }
}

impl Dataset for Synthetic {
    fn len(&self) -> usize {
        self.len
    }
    fn sample_shape(&self) -> &[usize] {
        &self.spec.shape
    }
    fn num_classes(&self) -> usize {
        self.spec.classes
    }
    fn read_raw(&self, i: usize, out: &mut [f32]) -> Result<u32, DataError> {
        let mut noise = Rng::keyed(&[SYNTHETIC, self.split, i as u64]);
        let label = noise.below(self.spec.classes as u64);
        let means = class_means(label, self.spec.shape[0]);
        let [_, h, w] = self.spec.shape;
        for (k, o) in out.iter_mut().enumerate() {
            let (c, y, x) = (k / (h * w), k / w % h, k % w);
            *o = means[(c * GRID + y * GRID / h) * GRID + x * GRID / w] + noise.normal();
        }
        Ok(label as u32)
    }
}

/// The block means of `class` (C × GRID × GRID).
fn class_means(class: u64, channels: usize) -> Vec<f32> {
    let mut r = Rng::keyed(&[SYNTHETIC, CLASS_MEAN, class]);
    (0..channels * GRID * GRID).map(|_| r.uniform(-1.0, 1.0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_and_rejects_with_the_form() {
        let s = Spec::parse("3x32x32:10").unwrap();
        assert_eq!((s.shape, s.classes, s.train, s.test), ([3, 32, 32], 10, 4096, 1024));
        assert_eq!(Spec::parse("1x28x28:10:600:100").unwrap().test, 100);
        for bad in ["3x32:10", "3x32x32", "3x0x32:10", "3x32x32:0", "3x32x32:10:-1", "axbxc:2", "100000x100000x100:10"]
        {
            assert!(Spec::parse(bad).is_err(), "{bad}");
        }
        assert!(Spec::parse("3x32:10").unwrap_err().contains("synthetic:3x32x32:10"));
        assert!(Spec::from_path(Path::new("data/mnist")).is_none());
        assert!(Spec::from_path(Path::new("synthetic:1x2x2:3")).unwrap().is_ok());
    }

    #[test]
    fn samples_are_deterministic_and_carry_their_class_mean() {
        let spec = Spec::parse("1x8x8:3:3000:10").unwrap();
        let train = Synthetic::new(spec.clone(), Split::Train);
        let (mut a, mut b) = (vec![0.0; 64], vec![0.0; 64]);
        assert_eq!(
            train.read_raw(5, &mut a).unwrap(),
            Synthetic::new(spec.clone(), Split::Train).read_raw(5, &mut b).unwrap()
        );
        assert_eq!(a, b);
        let mut c = vec![0.0; 64];
        Synthetic::new(spec, Split::Test).read_raw(5, &mut c).unwrap();
        assert_ne!(a, c, "test samples differ from training samples");
        // Averaging a class's samples recovers its mean image (and the labels are balanced).
        let mut sums = vec![vec![0.0f64; 64]; 3];
        let mut counts = [0usize; 3];
        for i in 0..3000 {
            let l = train.read_raw(i, &mut a).unwrap() as usize;
            counts[l] += 1;
            sums[l].iter_mut().zip(&a).for_each(|(s, &v)| *s += v as f64);
        }
        assert!(counts.iter().all(|&n| (850..1150).contains(&n)), "{counts:?}");
        let means = class_means(1, 1);
        for (k, s) in sums[1].iter().enumerate() {
            let want = means[(k / 8 / 2) * GRID + k % 8 / 2];
            assert!((s / counts[1] as f64 - want as f64).abs() < 0.15, "pixel {k}");
        }
    }
}
