//! What this process is doing, for stall reports: the training step and the gradient bucket
//! being reduced. Set by the strategies (cheap atomics), read by the watchdogs.

use std::sync::atomic::{AtomicU64, Ordering};

static STEP: AtomicU64 = AtomicU64::new(0);
static BUCKET: AtomicU64 = AtomicU64::new(u64::MAX);

/// Records the step (1-based) being run.
pub fn set_step(step: u64) {
    STEP.store(step, Ordering::Relaxed);
}

/// Records the bucket being reduced (`None`: none).
pub fn set_bucket(bucket: Option<usize>) {
    BUCKET.store(bucket.map_or(u64::MAX, |b| b as u64), Ordering::Relaxed);
}

/// " at step S, bucket B" (or "" before the first step).
pub fn describe() -> String {
    let (step, bucket) = (STEP.load(Ordering::Relaxed), BUCKET.load(Ordering::Relaxed));
    match (step, bucket) {
        (0, _) => String::new(),
        (s, u64::MAX) => format!(" at step {s}"),
        (s, b) => format!(" at step {s}, bucket {b}"),
    }
}
