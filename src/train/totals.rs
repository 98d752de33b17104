//! A worker's running totals: `Event::Worker` (its totals, after each epoch and at the end) and
//! `Event::Rate` (its throughput and time shares over the last second, for the dashboard's
//! per-worker curves).

use super::events::Event;
use super::StepReport;
use std::time::{Duration, Instant};

/// How often a worker reports `Event::Rate`.
const RATE_EVERY: Duration = Duration::from_secs(1);

/// A worker's running totals, reported as `Event::Worker`.
#[derive(Clone, Copy)]
pub(super) struct WorkerTotals {
    samples: usize,
    /// Samples of the global batches of its steps.
    pub(super) global_samples: usize,
    data_wait_s: f64,
    compute_s: f64,
    comm_s: f64,
    comm_wait_s: f64,
    /// When the last `Event::Rate` was due, and the totals then.
    window: (Instant, usize, [f64; 4]),
}

impl Default for WorkerTotals {
    fn default() -> Self {
        WorkerTotals {
            samples: 0,
            global_samples: 0,
            data_wait_s: 0.0,
            compute_s: 0.0,
            comm_s: 0.0,
            comm_wait_s: 0.0,
            window: (Instant::now(), 0, [0.0; 4]),
        }
    }
}

impl WorkerTotals {
    /// `Event::Rate` of the time since the last one, once a second (checked after each step:
    /// one clock reading), or now with `last` (the end of the run).
    pub(super) fn rate(&mut self, rank: usize, step: u64, last: bool) -> Option<Event> {
        let now = Instant::now();
        let secs = (now - self.window.0).as_secs_f64();
        if secs < RATE_EVERY.as_secs_f64() && !(last && self.samples > self.window.1) {
            return None;
        }
        let (_, samples, [data, compute, comm, comm_wait]) = self.window;
        self.window = (now, self.samples, [self.data_wait_s, self.compute_s, self.comm_s, self.comm_wait_s]);
        Some(Event::Rate {
            rank,
            step,
            seconds: secs,
            images_per_sec: (self.samples - samples) as f64 / secs,
            data_wait_s: self.data_wait_s - data,
            compute_s: self.compute_s - compute,
            comm_s: self.comm_s - comm,
            comm_wait_s: self.comm_wait_s - comm_wait,
        })
    }

    pub(super) fn add(&mut self, waited: f64, compute: f64, global: usize, r: &StepReport) {
        self.samples += r.stats.samples;
        self.global_samples += global;
        self.data_wait_s += waited;
        self.compute_s += compute - r.comm_wait_s;
        self.comm_s += r.comm_s;
        self.comm_wait_s += r.comm_wait_s;
    }

    pub(super) fn event(&self, rank: usize, steps: u64, t0: Instant) -> Event {
        Event::Worker {
            rank,
            steps,
            images_per_sec: self.samples as f64 / t0.elapsed().as_secs_f64().max(1e-9),
            compute_s: self.compute_s,
            comm_s: self.comm_s,
            comm_wait_s: self.comm_wait_s,
            data_wait_s: self.data_wait_s,
        }
    }
}
