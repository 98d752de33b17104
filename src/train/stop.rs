//! Graceful stop on SIGINT/SIGTERM: the binary installs the handlers; the training loop asks
//! `stop_after(step)` after every step. The first worker that sees the signal fixes the step at
//! which every worker stops — the next one when several workers run in lockstep (none of them can
//! be past it yet), the current one for a single worker — so all stop after the same step, write
//! one checkpoint together and end with exit code 130 (SIGINT) or 143 (SIGTERM). A second signal
//! ends the process at once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

static FLAGS: OnceLock<(Arc<AtomicBool>, Arc<AtomicBool>)> = OnceLock::new();
static STOP_AT: AtomicU64 = AtomicU64::new(u64::MAX);

/// SIGINT's number.
pub const SIGINT: i32 = signal_hook::consts::SIGINT;
/// SIGTERM's number.
pub const SIGTERM: i32 = signal_hook::consts::SIGTERM;

/// Installs the handlers (once per process).
pub fn install() -> std::io::Result<()> {
    let (int, term) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    // Registered before the flags: on the second signal the flag is already set, and the
    // process exits at once.
    signal_hook::flag::register_conditional_shutdown(SIGINT, 130, int.clone())?;
    signal_hook::flag::register_conditional_shutdown(SIGTERM, 143, term.clone())?;
    signal_hook::flag::register(SIGINT, int.clone())?;
    signal_hook::flag::register(SIGTERM, term.clone())?;
    let _ = FLAGS.set((int, term));
    Ok(())
}

/// The signal received, if any.
pub fn requested() -> Option<i32> {
    let (int, term) = FLAGS.get()?;
    if int.load(Ordering::Relaxed) {
        Some(SIGINT)
    } else if term.load(Ordering::Relaxed) {
        Some(SIGTERM)
    } else {
        None
    }
}

/// Called by every worker after finishing `step` (1-based): true when it must stop now.
/// `lockstep_workers` is the number of workers that advance together (1 for a single worker).
pub fn stop_after(step: u64, lockstep_workers: usize) -> bool {
    if requested().is_some() {
        let at = if lockstep_workers > 1 { step + 1 } else { step };
        let _ = STOP_AT.compare_exchange(u64::MAX, at, Ordering::AcqRel, Ordering::Acquire);
    }
    step >= STOP_AT.load(Ordering::Acquire)
}

/// The conventional exit code for `signal` (128 + its number).
pub fn exit_code(signal: i32) -> u8 {
    (128 + signal) as u8
}

/// The signal's name.
pub fn name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

/// `Strategy::stop_now` of a strategy whose workers `comm` joins: agreed across processes,
/// process-local otherwise.
pub fn stop_now(comm: &dyn crate::comm::Communicator, step: u64, world: usize) -> Result<bool, crate::comm::CommError> {
    if comm.spans_processes() {
        agreed(comm)
    } else {
        Ok(stop_after(step, world))
    }
}

/// `stop_after` for workers in different processes: every worker of `comm` calls it after the
/// same step, and all stop now if any has seen a signal (a one-value all-reduce per step).
pub fn agreed(comm: &dyn crate::comm::Communicator) -> Result<bool, crate::comm::CommError> {
    let mut flag = [if requested().is_some() { 1.0f32 } else { 0.0 }];
    comm.all_reduce_into(&mut flag)?;
    Ok(flag[0] > 0.0)
}
