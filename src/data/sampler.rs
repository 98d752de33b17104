//! The seeded, shuffling sampler and the shard rule.
//!
//! Epoch e visits a permutation of the dataset drawn from `Rng::keyed([seed, e])`, cut into global
//! batches of `global_batch` (the last one partial unless `drop_last`, like PyTorch's DataLoader).
//! A position in training is (epoch, batch index), so a run can resume exactly. Each global batch
//! is split into contiguous rank shards by `even_range`, so the union of the shards is exactly
//! the global batch whatever the world size.
//!
//! With `--data-split` (`split`), each of `parts` data-parallel ranks holds a part of its own of
//! `len / parts` samples, numbered round-robin: local sample l of rank r has the sample id
//! `l·parts + r` (the id it would have if the whole set had been dealt to the ranks like cards).
//! Epoch e visits rank r's part in the order `Rng::keyed([seed, e, SPLIT, r])`; global batch b
//! takes `B / parts` samples of every part (the last batch fewer, equally from every part), so
//! the rank shards, their offsets and the step count are those of shared placement.

use crate::ranges::even_range;
use crate::tensor::rng::Rng;
use std::ops::Range;

/// Indices of global batches, per epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sampler {
    len: usize,
    global_batch: usize,
    seed: u64,
    drop_last: bool,
    shuffle: bool,
    /// `--data-split`: the number of parts (one per data-parallel rank); `None`: shared.
    parts: Option<usize>,
}

/// Key separating the split-placement orders from the shared one.
const SPLIT: u64 = 0x7370_6c74; // "splt"

impl Sampler {
    /// A shuffling sampler over `len` samples. `global_batch` must be ≥ 1 (the CLI validates it).
    pub fn new(len: usize, global_batch: usize, seed: u64, drop_last: bool) -> Sampler {
        Sampler { len, global_batch: global_batch.max(1), seed, drop_last, shuffle: true, parts: None }
    }

    /// A sampler visiting samples in order (evaluation).
    pub fn sequential(len: usize, global_batch: usize) -> Sampler {
        Sampler { shuffle: false, ..Sampler::new(len, global_batch, 0, false) }
    }

    /// Samples in the dataset.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty dataset.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Global batch size.
    pub fn global_batch(&self) -> usize {
        self.global_batch
    }

    /// Global batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        if self.drop_last {
            self.len / self.global_batch
        } else {
            self.len.div_ceil(self.global_batch)
        }
    }

    /// The visiting order of epoch `epoch`.
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len).collect();
        if self.shuffle {
            Rng::keyed(&[self.seed, epoch]).shuffle(&mut order);
        }
        order
    }

    /// The dataset indices of global batch `b` given the epoch's order.
    pub fn batch_of<'a>(&self, order: &'a [usize], b: usize) -> &'a [usize] {
        let start = (b * self.global_batch).min(order.len());
        let end = (start + self.global_batch).min(order.len());
        &order[start..end]
    }

    /// Split placement: `len` counts the samples of all `parts` parts, each of `len / parts`
    /// samples (see the module's documentation).
    pub fn split(self, parts: usize) -> Sampler {
        Sampler { parts: Some(parts.max(1)), ..self }
    }

    /// The order in which `shard`'s rank visits samples in epoch `epoch`: the whole set's
    /// (`epoch_order`), or with split placement its own part's, as sample ids.
    pub fn order_for(&self, epoch: u64, shard: &Shard) -> Vec<usize> {
        let Some(parts) = self.parts else { return self.epoch_order(epoch) };
        let r = shard.rank / shard.group.max(1);
        let mut local: Vec<usize> = (0..self.len / parts).collect();
        if self.shuffle {
            Rng::keyed(&[self.seed, epoch, SPLIT, r as u64]).shuffle(&mut local);
        }
        local.into_iter().map(|l| l * parts + r).collect()
    }

    /// The sample ids of global batch `b` that `shard` loads, the size of the whole global
    /// batch, and the offset of this shard in it; `order` is `order_for(epoch, shard)`.
    pub fn shard_of<'a>(&self, order: &'a [usize], b: usize, shard: &Shard) -> (&'a [usize], usize, usize) {
        match self.parts {
            None => {
                let global = self.batch_of(order, b);
                let range = shard.range(global.len());
                (&global[range.clone()], global.len(), range.start)
            }
            Some(_) => {
                let g = self.global_batch.min(self.len.saturating_sub(b * self.global_batch));
                let range = shard.range(g);
                let start = (b * shard.range(self.global_batch).len()).min(order.len());
                let end = (start + range.len()).min(order.len());
                (&order[start..end], g, range.start)
            }
        }
    }
}

/// Which part of every global batch a rank loads: shard `rank` of `world`, aligned to `leaves`
/// fixed micro-shards when `leaves > world` (the `--deterministic` layout: the global batch is cut
/// into `leaves` pieces by `even_range`, and rank r takes leaves r·L/W .. (r+1)·L/W, so the pieces
/// do not depend on the worker count). Ranks that split a model rather than the data (pipeline
/// stages, tensor slices) come in groups of `group` consecutive ranks that load the same shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This rank (unique among all workers; rank 0 leads).
    pub rank: usize,
    /// Number of workers.
    pub world: usize,
    /// Micro-shards per global batch; a multiple of the data-parallel rank count `world / group`.
    pub leaves: usize,
    /// Consecutive ranks that share one data shard (1: pure data parallelism).
    pub group: usize,
}

impl Shard {
    /// The whole batch.
    pub const WHOLE: Shard = Shard { rank: 0, world: 1, leaves: 1, group: 1 };

    /// Shard `rank` of `world`, as `even_range` cuts it.
    pub fn of(rank: usize, world: usize) -> Shard {
        Shard { rank, world, leaves: world, group: 1 }
    }

    /// Rank `rank` of `world` workers in groups of `group` that share a data shard: the groups
    /// split the batch as `of(rank / group, world / group)` does.
    pub fn grouped(rank: usize, world: usize, group: usize) -> Shard {
        let g = group.max(1);
        Shard { rank, world, leaves: world / g, group: g }
    }

    /// The first and one-past-last leaf of this rank.
    pub fn leaf_range(&self) -> Range<usize> {
        let g = self.group.max(1);
        let per = self.leaves / (self.world / g).max(1);
        let r = self.rank / g;
        r * per..(r + 1) * per
    }

    /// This rank's samples of a global batch of `n`.
    pub fn range(&self, n: usize) -> Range<usize> {
        let leaves = self.leaf_range();
        let start = even_range(n, leaves.start, self.leaves).start;
        let end = if leaves.is_empty() { start } else { even_range(n, leaves.end - 1, self.leaves).end };
        start..end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_epoch_is_a_permutation_and_epochs_differ() {
        let s = Sampler::new(103, 10, 7, false);
        assert_eq!(s.batches_per_epoch(), 11);
        let a = s.epoch_order(0);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..103).collect::<Vec<_>>());
        assert_ne!(a, s.epoch_order(1));
        assert_eq!(a, Sampler::new(103, 10, 7, false).epoch_order(0));
        assert_eq!(s.batch_of(&a, 10).len(), 3);
        assert_eq!(Sampler::new(103, 10, 7, true).batches_per_epoch(), 10);
        assert_eq!(Sampler::sequential(5, 2).epoch_order(3), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn aligned_shards_are_unions_of_the_same_leaves_for_every_world() {
        let n = 100;
        let leaf = |l| even_range(n, l, 8);
        for world in [1, 2, 4, 8] {
            for rank in 0..world {
                let s = Shard { rank, world, leaves: 8, group: 1 };
                let ls = s.leaf_range();
                assert_eq!(s.range(n), leaf(ls.start).start..leaf(ls.end - 1).end);
            }
        }
        // Groups of 3 ranks (pipeline stages) per data shard: 2 data shards.
        for rank in 0..6 {
            assert_eq!(Shard::grouped(rank, 6, 3).range(n), Shard::of(rank / 3, 2).range(n));
        }
        assert_eq!(Shard::of(1, 4).range(10), even_range(10, 1, 4));
        assert_eq!(Shard::WHOLE.range(7), 0..7);
    }

    /// Split placement: 3 parts of 7 samples, global batch 6: every rank visits exactly its own
    /// part each epoch, 2 samples a batch (the last batch 1 each), at the offsets of shared
    /// placement; pipeline groups of 2 ranks load the same samples.
    #[test]
    fn split_parts_are_visited_whole_with_the_shared_shard_layout() {
        let s = Sampler::new(21, 6, 5, false).split(3);
        assert_eq!(s.batches_per_epoch(), 4);
        for r in 0..3 {
            let shard = Shard::of(r, 3);
            let order = s.order_for(1, &shard);
            let mut seen = Vec::new();
            for b in 0..4 {
                let (ids, global, offset) = s.shard_of(&order, b, &shard);
                let want = if b < 3 { 6 } else { 3 };
                assert_eq!((global, offset, ids.len()), (want, r * want / 3, want / 3), "rank {r} batch {b}");
                seen.extend_from_slice(ids);
            }
            seen.sort();
            assert_eq!(seen, (0..7).map(|l| l * 3 + r).collect::<Vec<_>>());
            assert_ne!(order, s.order_for(2, &shard), "epochs differ");
            let g = Shard::grouped(2 * r + 1, 6, 2);
            assert_eq!(s.order_for(1, &g), order);
            assert_eq!(s.shard_of(&order, 0, &g), s.shard_of(&order, 0, &shard));
        }
    }
}
