//! The prefetching loader: `threads` background threads (`--loader-threads`) read, crop, augment
//! and normalise this rank's shard of each global batch of an epoch into a `Batch`, ahead of the
//! trainer. Batch b is made by thread b mod N, which queues at most `PER_THREAD` finished
//! batches; the trainer takes batch b from that thread's queue, so batches arrive in order and
//! memory stays bounded (N·(PER_THREAD + 1) batches) with no reordering buffer. Used batches go
//! back to the thread that made them to be refilled, so the steady state allocates nothing.
//!
//! Every sample is a function of (seed, epoch, sample id) only, so the batches are bitwise the
//! same whatever N is. The time the trainer waits in `next` is the step's `data_wait_s`: a
//! loader that cannot keep up shows there. A failure to read a sample (a damaged image) ends
//! the epoch with that error; dropping the loader stops its threads at their next send.

use super::crop::{Crop, Place};
use super::{sampler::Sampler, sampler::Shard, Augment, DataError, Dataset};
use crate::tensor::Tensor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Finished batches queued per loader thread (3 ahead for the default single thread).
const PER_THREAD: usize = 3;

/// One rank's shard of a global batch.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// Images, (n, C, H, W).
    pub x: Tensor,
    /// Labels, n.
    pub labels: Vec<u32>,
    /// Global sample id of each sample, n.
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

/// What a loader reads and how: the training set, its sampler, crop, augmentation and threads.
#[derive(Clone)]
pub struct Feed {
    /// The dataset (raw samples and their normalisation).
    pub data: Arc<dyn Dataset>,
    /// Global batches of each epoch.
    pub sampler: Sampler,
    /// The window every sample is cut to, at a random place (`--crop-size`); `None`: whole.
    pub crop: Option<Crop>,
    /// Augmentation of every sample (after the crop).
    pub augment: Augment,
    /// The run's seed (keys the crop and the augmentation).
    pub seed: u64,
    /// Loader threads (at least 1).
    pub threads: usize,
}

impl Feed {
    /// A feed without crop or augmentation on one thread.
    pub fn plain(data: Arc<dyn Dataset>, sampler: Sampler) -> Feed {
        Feed { data, sampler, crop: None, augment: Augment::default(), seed: 0, threads: 1 }
    }
}

type Made = Result<Batch, DataError>;

/// Background loader for one epoch of one rank.
pub struct Loader {
    /// Per thread: its finished batches, and the way back for used ones.
    queues: Vec<(Receiver<Made>, SyncSender<Batch>)>,
    threads: Vec<JoinHandle<()>>,
    start: usize,
    next: usize,
    end: usize,
}

impl Loader {
    /// Starts loading epoch `epoch` from global batch `start_batch` on, this `shard` of each batch.
    pub fn new(feed: &Feed, epoch: u64, start_batch: usize, shard: Shard) -> Loader {
        let order = Arc::new(feed.sampler.order_for(epoch, &shard));
        let n = feed.threads.max(1);
        let end = feed.sampler.batches_per_epoch();
        let (mut queues, mut threads) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for t in 0..n {
            let (tx, rx) = sync_channel::<Made>(PER_THREAD);
            let (recycle_tx, recycle_rx) = sync_channel::<Batch>(PER_THREAD + 2);
            let (feed, order) = (feed.clone(), order.clone());
            let spawned = std::thread::Builder::new().name(format!("loader-r{}-{t}", shard.rank)).spawn(move || {
                let mut scratch = (Vec::new(), Vec::new());
                for b in (start_batch + t..end).step_by(n) {
                    let mut batch = recycle_rx.try_recv().unwrap_or_default();
                    let made = catch_unwind(AssertUnwindSafe(|| {
                        fill(&feed, &order, epoch, b, &shard, &mut batch, &mut scratch)
                    }));
                    let made = match made {
                        Ok(Ok(())) => Ok(batch),
                        Ok(Err(e)) => Err(e),
                        Err(p) => Err(DataError::Internal(format!("loader thread panicked: {}", panic_text(&*p)))),
                    };
                    let failed = made.is_err();
                    if tx.send(made).is_err() || failed {
                        return;
                    }
                }
            });
            match spawned {
                Ok(h) => threads.push(h),
                // Without its thread the queue's sender is gone: `next` reports it.
                Err(e) => tracing::error!("cannot start a loader thread: {e}"),
            }
            queues.push((rx, recycle_tx));
        }
        Loader { queues, threads, start: start_batch, next: start_batch, end }
    }

    /// The next batch, `None` at the end of the epoch, or the error that ended it.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Result<Batch, DataError>> {
        if self.next >= self.end {
            return None;
        }
        let b = self.next;
        let made = match self.queues[(b - self.start) % self.queues.len()].0.recv() {
            Ok(m) => m,
            Err(_) => Err(DataError::Internal(format!("the loader thread of batch {b} ended early"))),
        };
        // After an error the epoch is over: a later call returns None.
        self.next = if made.is_ok() { b + 1 } else { self.end };
        Some(made)
    }

    /// Gives a used batch back so its buffers are reused.
    pub fn recycle(&self, b: Batch) {
        if let Some(q) = self.queues.get(b.index.wrapping_sub(self.start) % self.queues.len().max(1)) {
            let _ = q.1.try_send(b);
        }
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".into())
}

/// Reads, crops, augments and normalises global batch `b`'s shard into `batch`; `scratch` holds
/// a whole sample before its crop and the augmentation's copy.
fn fill(
    feed: &Feed,
    order: &[usize],
    epoch: u64,
    b: usize,
    shard: &Shard,
    batch: &mut Batch,
    scratch: &mut (Vec<f32>, Vec<f32>),
) -> Result<(), DataError> {
    let data = feed.data.as_ref();
    let (mine, global, offset) = feed.sampler.shard_of(order, b, shard);
    let shape = data.sample_shape();
    let [c, h, w] = match feed.crop {
        Some(k) => {
            k.out_shape(shape).map_err(|m| DataError::Internal(format!("crop not checked against the data: {m}")))?
        }
        None => [shape[0], shape[1], shape[2]],
    };
    let norm = data.normalization();
    batch.x.resize(&[mine.len(), c, h, w]);
    batch.labels.clear();
    batch.ids.clear();
    for (&i, out) in mine.iter().zip(batch.x.data_mut().chunks_exact_mut((c * h * w).max(1))) {
        let label = match feed.crop {
            Some(k) => k.read(data, i, Place::Random { seed: feed.seed, epoch }, out, &mut scratch.0)?,
            None => data.read_raw(i, out)?,
        };
        batch.labels.push(label);
        feed.augment.apply(out, [c, h, w], (feed.seed, epoch, i as u64), &mut scratch.1);
        norm.apply(out, c);
        batch.ids.push(i as u64);
    }
    batch.epoch = epoch;
    batch.index = b;
    batch.global = global;
    batch.offset = offset;
    Ok(())
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the receivers makes each thread's next send fail; then join them.
        self.queues.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
#[path = "loader_tests.rs"]
mod tests;
