//! Buffered sends in flight and their progress. Open MPI's TCP transport moves a message only
//! while some thread of the process is inside MPI (a message over its 64 KiB eager limit waits
//! for the receiver's answer, then for the next call), so while sends are in flight a thread
//! tests them every `PROGRESS_EVERY`.

use super::lock;
use mpi::ffi;
use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Starts the progress thread of `pending` unless one runs (`progressing`); call after a push.
pub(super) fn progress_while_in_flight(
    pending: &Arc<Mutex<Vec<Sent>>>,
    progressing: &Arc<AtomicBool>,
) -> std::io::Result<()> {
    if !progressing.swap(true, Ordering::AcqRel) {
        let (pending, progressing) = (pending.clone(), progressing.clone());
        std::thread::Builder::new().name("mpi-progress".into()).spawn(move || progress(&pending, &progressing))?;
    }
    Ok(())
}

/// A buffered send in flight: its request and the copy it sends from.
pub(super) struct Sent {
    req: ffi::MPI_Request,
    _buf: Vec<f32>,
}

impl Sent {
    pub(super) fn new(req: ffi::MPI_Request, buf: Vec<f32>) -> Sent {
        Sent { req, _buf: buf }
    }
}

// SAFETY: MPI is initialised with MPI_THREAD_MULTIPLE: a request may be tested from any thread
// (one at a time: `Sent`s live behind a mutex).
unsafe impl Send for Sent {}

/// How often the progress thread tests the sends in flight: at 2 Gbit/s a link carries 50 kB in
/// 200 µs, well inside a TCP socket's buffer, so the link does not idle between tests.
const PROGRESS_EVERY: Duration = Duration::from_micros(200);

/// The progress thread of a communicator's buffered sends: tests them every `PROGRESS_EVERY`
/// (MPI moves every message of the process on each test) and ends when none is in flight,
/// clearing `progressing` under the lock, so a send that comes after starts a new one. It calls
/// MPI only while a send is in flight, never after the last `reap(true)` before finalising.
fn progress(pending: &Mutex<Vec<Sent>>, progressing: &AtomicBool) {
    loop {
        std::thread::sleep(PROGRESS_EVERY);
        let mut p = lock(pending);
        if p.is_empty() {
            progressing.store(false, Ordering::Release);
            return;
        }
        reap(&mut p, false);
    }
}

/// Completes the finished sends of `pending` (all of them, waiting, with `all`).
pub(super) fn reap(pending: &mut Vec<Sent>, all: bool) {
    pending.retain_mut(|Sent { req, .. }| {
        let mut done: c_int = 0;
        let mut st: ffi::MPI_Status = unsafe { std::mem::zeroed() };
        // SAFETY: `req` is a live request of this process.
        unsafe {
            if all {
                ffi::MPI_Wait(req, &mut st);
                done = 1;
            } else {
                ffi::MPI_Test(req, &mut done, &mut st);
            }
        }
        done == 0
    });
}
