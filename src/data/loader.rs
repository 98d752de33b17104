//! A prefetching loader: a background thread assembles this rank's shard of each global batch
//! of an epoch into a `Batch`, a bounded queue keeps a few ready, and used batches come back
//! through a second channel to be refilled, so the steady state allocates nothing.
//!
//! Dropping the loader stops the thread: it sees the closed channel at its next send.

use super::{sampler::Sampler, sampler::Shard, Dataset};
use crate::tensor::Tensor;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Batches kept ready ahead of the trainer.
const PREFETCH: usize = 3;

/// One rank's shard of a global batch.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// Images, (n, C, H, W).
    pub x: Tensor,
    /// Labels, n.
    pub labels: Vec<u32>,
    /// Global dataset index of each sample, n.
    pub ids: Vec<u64>,
    /// Epoch.
    pub epoch: u64,
    /// Index of the global batch in the epoch.
    pub index: usize,
    /// Size of the whole global batch this shard belongs to (the loss denominator).
    pub global: usize,
    /// Offset of this shard in the global batch.
    pub offset: usize,
}

/// Background loader for one epoch of one rank.
pub struct Loader {
    rx: Option<Receiver<Batch>>,
    recycle: Option<SyncSender<Batch>>,
    thread: Option<JoinHandle<()>>,
}

impl Loader {
    /// Starts loading epoch `epoch` from global batch `start_batch` on, this `shard` of each batch.
    pub fn new(data: Arc<dyn Dataset>, sampler: Sampler, epoch: u64, start_batch: usize, shard: Shard) -> Loader {
        let (tx, rx) = sync_channel::<Batch>(PREFETCH);
        let (recycle_tx, recycle_rx) = sync_channel::<Batch>(PREFETCH + 2);
        let thread = std::thread::Builder::new()
            .name(format!("loader-r{}", shard.rank))
            .spawn(move || {
                let order = sampler.epoch_order(epoch);
                let shape = data.sample_shape().to_vec();
                let per: usize = shape.iter().product();
                let mut full = vec![0; shape.len() + 1];
                full[1..].copy_from_slice(&shape);
                for b in start_batch..sampler.batches_per_epoch() {
                    let global = sampler.batch_of(&order, b);
                    let range = shard.range(global.len());
                    let mine = &global[range.clone()];
                    let mut batch = recycle_rx.try_recv().unwrap_or_default();
                    full[0] = mine.len();
                    batch.x.resize(&full);
                    batch.labels.clear();
                    batch.ids.clear();
                    for (&i, out) in mine.iter().zip(batch.x.data_mut().chunks_exact_mut(per.max(1))) {
                        batch.labels.push(data.get_into(i, out));
                        batch.ids.push(i as u64);
                    }
                    batch.epoch = epoch;
                    batch.index = b;
                    batch.global = global.len();
                    batch.offset = range.start;
                    if tx.send(batch).is_err() {
                        return;
                    }
                }
            })
            .ok();
        Loader { rx: Some(rx), recycle: Some(recycle_tx), thread }
    }

    /// The next batch, or None at the end of the epoch.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Batch> {
        self.rx.as_ref()?.recv().ok()
    }

    /// Gives a used batch back so its buffers are reused.
    pub fn recycle(&self, b: Batch) {
        if let Some(tx) = &self.recycle {
            let _ = tx.try_send(b);
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the receiver makes the thread's next send fail; then join it.
        self.rx.take();
        self.recycle.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counting(usize);
    impl Dataset for Counting {
        fn len(&self) -> usize {
            self.0
        }
        fn sample_shape(&self) -> &[usize] {
            &[1, 1, 2]
        }
        fn num_classes(&self) -> usize {
            10
        }
        fn get_into(&self, i: usize, out: &mut [f32]) -> u32 {
            out.fill(i as f32);
            (i % 10) as u32
        }
    }

    #[test]
    fn yields_the_samplers_shards_in_order_and_resumes() {
        let data: Arc<dyn Dataset> = Arc::new(Counting(23));
        let s = Sampler::new(23, 5, 3, false);
        let order = s.epoch_order(2);
        for world in 1..=3 {
            let mut seen = vec![Vec::new(); 5];
            for rank in 0..world {
                let mut l = Loader::new(data.clone(), s.clone(), 2, 0, Shard::of(rank, world));
                while let Some(b) = l.next() {
                    assert_eq!(b.x.shape(), &[b.ids.len(), 1, 1, 2]);
                    for (k, &id) in b.ids.iter().enumerate() {
                        assert_eq!(b.x.data()[2 * k], id as f32);
                        assert_eq!(b.labels[k], (id % 10) as u32);
                    }
                    seen[b.index].extend(b.ids.iter().map(|&i| i as usize));
                    l.recycle(b);
                }
            }
            for (b, ids) in seen.iter().enumerate() {
                assert_eq!(ids.as_slice(), s.batch_of(&order, b), "world {world} batch {b}");
            }
        }
        let mut l = Loader::new(data, s, 2, 3, Shard::WHOLE);
        assert_eq!(l.next().unwrap().index, 3);
        assert_eq!(l.next().unwrap().index, 4);
        assert!(l.next().is_none());
    }

    #[test]
    fn dropping_mid_epoch_returns() {
        let data: Arc<dyn Dataset> = Arc::new(Counting(10_000));
        let mut l = Loader::new(data, Sampler::new(10_000, 1, 0, false), 0, 0, Shard::WHOLE);
        assert!(l.next().is_some());
        drop(l);
    }
}
