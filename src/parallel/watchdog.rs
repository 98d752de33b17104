//! The stall watchdog of the worker threads of this process (`--stall-timeout`, `--stall-abort`),
//! Horovod's stall inspector for threads: when no worker here has finished a step for the stall
//! timeout, it reports which workers are stuck in which phase — inside their step or between
//! steps (data, evaluation, checkpoint), and for those waiting in communication, in which call,
//! for whom and for how long — as a warning, again after each further timeout. With
//! `--stall-abort` the first report ends the run (exit 3).
//!
//! The workers publish what they do in a `Beacon` (a few relaxed atomics per step, whatever the
//! run's settings); communicators that know which call a rank waits in (`LocalComm::waits`) say
//! so. Across MPI processes the communicator's own watchdog (comm/mpi/watch.rs) adds a census of
//! the other processes. What it does not do: look inside a step (forward or backward), which only
//! the timeline (`--timeline`) records.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one worker is doing, written by its thread, read by the watchdog.
#[derive(Default)]
pub(crate) struct Beacon {
    /// Step being run or last run (1-based; 0: setting up).
    step: AtomicU64,
    in_step: AtomicBool,
    /// Steps finished.
    done: AtomicU64,
    /// When it entered its current phase, ns since the watchdog's epoch.
    since_ns: AtomicU64,
    /// The worker thread has ended.
    ended: AtomicBool,
}

/// What communication says a worker waits in: (op, the rank it waits for, for how long).
pub(crate) type Wait = Option<(&'static str, Option<usize>, Duration)>;

/// The beacons of this process's workers, shared by their threads and the watchdog.
pub(crate) struct Beacons {
    /// (worker rank, its beacon), for the workers of this process.
    workers: Vec<(usize, Beacon)>,
    epoch: Instant,
}

impl Beacons {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn beacon(&self, i: usize) -> Option<&Beacon> {
        self.workers.get(i).map(|w| &w.1)
    }

    /// The `i`-th worker of this process starts step `step`.
    pub fn enter_step(&self, i: usize, step: u64) {
        if let Some(b) = self.beacon(i) {
            b.step.store(step, Ordering::Relaxed);
            b.since_ns.store(self.now_ns(), Ordering::Relaxed);
            b.in_step.store(true, Ordering::Relaxed);
        }
    }

    /// Worker `i` finished its step.
    pub fn leave_step(&self, i: usize) {
        if let Some(b) = self.beacon(i) {
            b.in_step.store(false, Ordering::Relaxed);
            b.since_ns.store(self.now_ns(), Ordering::Relaxed);
            b.done.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Worker `i`'s thread has ended (it is no longer watched).
    pub fn ended(&self, i: usize) {
        if let Some(b) = self.beacon(i) {
            b.ended.store(true, Ordering::Relaxed);
        }
    }
}

/// The watchdog of this process's workers (driven by `run_ranks`' loop).
pub(crate) struct Watchdog {
    /// What the workers do.
    pub beacons: Arc<Beacons>,
    stall: Duration,
    abort: bool,
    /// The run spans processes: when every worker here waits in communication, the culprit is
    /// elsewhere, and the communicator's census (comm/mpi/watch.rs) reports and ends the job.
    defer: bool,
    done: u64,
    progress: Instant,
    next_report: Duration,
}

impl Watchdog {
    /// A watchdog of the workers `ranks` (in the order of this process's rank threads).
    pub fn new(ranks: &[usize], stall: Duration, abort: bool, defer: bool) -> Watchdog {
        let now = Instant::now();
        let beacons = Beacons { workers: ranks.iter().map(|&r| (r, Beacon::default())).collect(), epoch: now };
        Watchdog { beacons: Arc::new(beacons), stall, abort, defer, done: 0, progress: now, next_report: stall }
    }

    /// Looks at the workers (call it a few times a second). Returns the report when the run has
    /// stalled and must end (`--stall-abort`); a stall without it is logged as a warning.
    /// `waits(i)` is what communication knows of worker `i`.
    pub fn check(&mut self, waits: &dyn Fn(usize) -> Wait) -> Option<String> {
        let done: u64 = self.beacons.workers.iter().map(|w| w.1.done.load(Ordering::Relaxed)).sum();
        let live = self.beacons.workers.iter().any(|w| !w.1.ended.load(Ordering::Relaxed));
        if done != self.done || !live {
            (self.done, self.progress, self.next_report) = (done, Instant::now(), self.stall);
            return None;
        }
        let quiet = self.progress.elapsed();
        if quiet < self.next_report {
            return None;
        }
        self.next_report = quiet + self.stall;
        let (report, stuck_here) = self.report(quiet, waits);
        if self.abort && (stuck_here || !self.defer) {
            return Some(report);
        }
        if self.abort {
            tracing::warn!("{report} (every worker here waits for another process: its census follows)");
        } else {
            tracing::warn!(
                "{report} (the run goes on; a call that waits {}× --stall-timeout ends it, --stall-abort ends it now)",
                crate::comm::STALLS_BEFORE_GIVING_UP
            );
        }
        None
    }

    /// "stall: no worker finished a step for ...: worker 0 ...; worker 1 ...; likely stuck: ...".
    /// Also returns whether a worker here is stuck outside communication.
    pub fn report(&self, quiet: Duration, waits: &dyn Fn(usize) -> Wait) -> (String, bool) {
        let now = self.beacons.now_ns();
        let mut lines = Vec::new();
        let mut stuck = Vec::new();
        for (i, (rank, b)) in self.beacons.workers.iter().enumerate() {
            if b.ended.load(Ordering::Relaxed) {
                continue;
            }
            let (step, in_step) = (b.step.load(Ordering::Relaxed), b.in_step.load(Ordering::Relaxed));
            let secs = now.saturating_sub(b.since_ns.load(Ordering::Relaxed)) as f64 * 1e-9;
            let phase = match (step, in_step) {
                (0, false) => "setting up (loading data, initialising, first broadcast)".to_string(),
                (s, true) => format!("in step {s}"),
                (s, false) => format!("between steps after step {s} (loading data, evaluating or checkpointing)"),
            };
            let comm = match waits(i) {
                Some((op, peer, waited)) => format!(
                    ", waiting in {op}{} for {:.1}s",
                    peer.map(|p| format!(" for rank {p}")).unwrap_or_default(),
                    waited.as_secs_f64()
                ),
                None => {
                    stuck.push(*rank);
                    ", not in communication".to_string()
                }
            };
            lines.push(format!("worker {rank} {phase} for {secs:.1}s{comm}"));
        }
        let culprits = match stuck.as_slice() {
            [] => "every worker here waits in communication (for a worker of another process, or a mismatch of calls)"
                .to_string(),
            [r] => format!("likely stuck: worker {r}"),
            rs => format!("likely stuck: workers {rs:?}"),
        };
        let report = format!(
            "stall: no worker finished a step for {:.1}s (--stall-timeout {}): {}; {culprits}; hint: a worker is hung or much slower (a debugger or `gdb -p {}` shows where)",
            quiet.as_secs_f64(),
            self.stall.as_secs_f64(),
            lines.join("; "),
            std::process::id()
        );
        (report, !stuck.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_after_the_timeout_without_progress_naming_the_worker_outside_communication() {
        let mut w = Watchdog::new(&[0, 1], Duration::from_millis(30), true, false);
        let waits = |i: usize| if i == 0 { Some(("all_reduce", None, Duration::from_millis(40))) } else { None };
        w.beacons.enter_step(0, 3);
        w.beacons.enter_step(1, 3);
        assert!(w.check(&waits).is_none(), "no report before the timeout");
        std::thread::sleep(Duration::from_millis(40));
        let r = w.check(&waits).expect("a stall with --stall-abort ends the run");
        assert!(r.contains("worker 0 in step 3") && r.contains("waiting in all_reduce"), "{r}");
        assert!(r.contains("worker 1 in step 3") && r.contains("likely stuck: worker 1"), "{r}");
        // Progress resets the clock.
        w.beacons.leave_step(1);
        assert!(w.check(&waits).is_none());
    }

    #[test]
    fn without_abort_a_stall_is_only_reported_and_ended_workers_are_not_watched() {
        let mut w = Watchdog::new(&[0], Duration::from_millis(10), false, false);
        std::thread::sleep(Duration::from_millis(20));
        assert!(w.check(&|_| None).is_none());
        let mut w = Watchdog::new(&[0], Duration::from_millis(10), true, true);
        std::thread::sleep(Duration::from_millis(20));
        let waiting = |_| Some(("all_reduce", Some(1), Duration::from_millis(20)));
        assert!(
            w.check(&waiting).is_none(),
            "across processes, a worker waiting for another process is left to the census"
        );
        let mut w = Watchdog::new(&[0], Duration::from_millis(10), true, false);
        w.beacons.ended(0);
        std::thread::sleep(Duration::from_millis(20));
        assert!(w.check(&|_| None).is_none());
    }
}
