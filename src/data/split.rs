//! Split placement (`--data-split`, Intel Caffe's per-node DB): data-parallel rank r reads only
//! its own part, the dataset at the `--data` path with `{rank}` replaced by r
//! (`--data shards/rank{rank}` → `shards/rank0`, `shards/rank1`, ...).
//!
//! The parts held by this process are seen as one dataset of `parts × n` samples in which
//! sample id `l·parts + r` is sample l of part r (the sampler's round-robin numbering, see
//! sampler.rs), so the loader, augmentation keys, dropout keys and step counts work as in shared
//! placement. Every part must hold the same number n of training samples (so that every rank
//! runs the same number of steps) and samples of the same shape; a process checks the parts it
//! opens. Pipeline stages and tensor slices of one replica share one part.

use super::{open_with, DataError, DataOptions, Dataset, Normalize, Split};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The placeholder replaced by the data-parallel rank.
pub const RANK: &str = "{rank}";

/// The path of part `rank`: `template` with every `{rank}` replaced.
pub fn part_path(template: &Path, rank: usize) -> PathBuf {
    PathBuf::from(template.to_string_lossy().replace(RANK, &rank.to_string()))
}

/// The parts of a split dataset held by this process.
pub struct SplitSet {
    /// Part r at index r, `None` for the parts other processes hold.
    parts: Vec<Option<Arc<dyn Dataset>>>,
    per_part: usize,
    shape: Vec<usize>,
    classes: usize,
}

impl SplitSet {
    /// Opens the training split of the `local` parts (data-parallel ranks) of `parts`.
    pub fn open(template: &Path, opts: &DataOptions, local: &[usize], parts: usize) -> Result<SplitSet, DataError> {
        check_template(template)?;
        let mut held: Vec<Option<Arc<dyn Dataset>>> = vec![None; parts];
        let mut first: Option<(PathBuf, usize, Vec<usize>)> = None;
        let mut classes = 0;
        for &r in local {
            let path = part_path(template, r);
            let ds = open_with(&path, Split::Train, opts)?;
            match &first {
                None => first = Some((path.clone(), ds.len(), ds.sample_shape().to_vec())),
                Some((p0, n0, s0)) => {
                    if ds.len() != *n0 || ds.sample_shape() != s0.as_slice() {
                        return Err(DataError::Format {
                            path,
                            msg: format!(
                                "this part has {} samples of shape {:?}, part {} has {n0} of shape {s0:?}; hint: --data-split needs parts of equal size (every rank runs the same number of steps)",
                                ds.len(),
                                ds.sample_shape(),
                                p0.display()
                            ),
                        });
                    }
                }
            }
            classes = classes.max(ds.num_classes());
            held[r] = Some(ds);
        }
        let Some((_, per_part, shape)) = first else { return Err(DataError::Internal("no data part to open".into())) };
        Ok(SplitSet { parts: held, per_part, shape, classes })
    }
}

/// Checks that a `--data-split` path names its parts.
pub fn check_template(template: &Path) -> Result<(), DataError> {
    if template.to_string_lossy().contains(RANK) {
        Ok(())
    } else {
        Err(DataError::Format { path: template.to_path_buf(), msg: format!("--data-split needs '{RANK}' in the --data path; hint: --data dir/rank{RANK} reads dir/rank0, dir/rank1, ...") })
    }
}

impl Dataset for SplitSet {
    fn len(&self) -> usize {
        self.per_part * self.parts.len()
    }
    fn sample_shape(&self) -> &[usize] {
        &self.shape
    }
    fn num_classes(&self) -> usize {
        self.classes
    }
    fn read_raw(&self, id: usize, out: &mut [f32]) -> Result<u32, DataError> {
        let n = self.parts.len();
        match &self.parts[id % n] {
            Some(ds) => ds.read_raw(id / n, out),
            None => Err(DataError::Internal(format!(
                "sample {id} belongs to part {} which this process does not hold",
                id % n
            ))),
        }
    }
    fn normalization(&self) -> Normalize {
        self.parts.iter().flatten().next().map(|d| d.normalization()).unwrap_or_else(Normalize::identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_numbered_round_robin_and_must_match() {
        assert_eq!(part_path(Path::new("d/rank{rank}/x{rank}"), 3), PathBuf::from("d/rank3/x3"));
        let opts = DataOptions::default();
        let e = SplitSet::open(Path::new("synthetic:1x2x2:3:10"), &opts, &[0], 2).err().unwrap().to_string();
        assert!(e.contains("{rank}"), "{e}");
        // Parts 1 and 3 of 4 held here; synthetic parts with `{rank}` in their train count.
        let s = SplitSet::open(Path::new("synthetic:1x2x2:3:1{rank}"), &opts, &[1], 4).unwrap();
        assert_eq!(s.len(), 4 * 11);
        let (mut a, mut b) = (vec![0.0; 4], vec![0.0; 4]);
        let part1 = open_with(Path::new("synthetic:1x2x2:3:11"), Split::Train, &opts).unwrap();
        for l in 0..11 {
            assert_eq!(s.read_raw(l * 4 + 1, &mut a).unwrap(), part1.read_raw(l, &mut b).unwrap());
            assert_eq!(a, b);
        }
        assert!(matches!(s.read_raw(2, &mut a), Err(DataError::Internal(_))));
        let e = SplitSet::open(Path::new("synthetic:1x2x2:3:1{rank}"), &opts, &[1, 3], 4).err().unwrap().to_string();
        assert!(e.contains("equal size"), "{e}");
    }
}
