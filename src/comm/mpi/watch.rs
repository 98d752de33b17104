//! The stall watchdog of an MPI process: every MPI call of `MpiComm` registers itself while it
//! runs; a thread checks every `TICK` whether one has run longer than the stall timeout. If so it
//! asks every other rank's watchdog, over a communicator of their own (the census), what that
//! rank is doing, waits `CENSUS_WAIT` for the answers and reports which ranks wait in which call
//! and which did not arrive (computing, or not answering: dead or hung): as a warning, repeated
//! after each further stall timeout, until the call is `STALLS_BEFORE_GIVING_UP` timeouts old
//! and the job is aborted (exit 1) — or at once with `--stall-abort` (exit 3). Each
//! watchdog also answers the census requests of the others, whatever its rank is doing.

use crate::comm::phase;
use mpi::ffi;
use std::ffi::c_void;
use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the watchdog looks.
const TICK: Duration = Duration::from_millis(50);
/// How long a census waits for answers.
const CENSUS_WAIT: Duration = Duration::from_secs(3);
const TAG_ASK: c_int = 1;
const TAG_ANSWER: c_int = 2;

/// Slots for calls in flight (threads of a process that may be inside MPI at once).
const SLOTS: usize = 64;

/// A thread's call in flight: start time in ns since `Watch::epoch` + 1 (0: none), and what.
#[derive(Default)]
struct Slot {
    since: AtomicU64,
    op: Mutex<(&'static str, usize)>,
}

/// The watchdog of this process (shared by all its `MpiComm`s).
pub struct Watch {
    census: ffi::MPI_Comm,
    rank: usize,
    size: usize,
    stall: Duration,
    /// Abort at the first report (`--stall-abort`).
    abort: bool,
    epoch: Instant,
    slots: Vec<Slot>,
    next_slot: AtomicU64,
    /// When the last call ended, ns since `epoch` (how long this rank has been computing).
    idle_since: AtomicU64,
    stop: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

// SAFETY: MPI_THREAD_MULTIPLE; the census communicator is used by the watchdog thread only.
unsafe impl Send for Watch {}
unsafe impl Sync for Watch {}

/// A registered call; unregisters when dropped.
pub struct Entered<'a> {
    watch: &'a Watch,
    slot: usize,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        let w = self.watch;
        w.slots[self.slot].since.store(0, Ordering::Release);
        w.idle_since.store(w.now_ns(), Ordering::Relaxed);
    }
}

thread_local! {
    /// This thread's slot (assigned at its first call).
    static SLOT: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

impl Watch {
    /// Starts the watchdog of world rank `rank` of `size` on `census` (a communicator of its own).
    pub fn start(census: ffi::MPI_Comm, rank: usize, size: usize, stall: Duration, abort: bool) -> Arc<Watch> {
        let w = Arc::new(Watch {
            census,
            rank,
            size,
            stall,
            abort,
            epoch: Instant::now(),
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
            next_slot: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            thread: Mutex::new(None),
        });
        let me = w.clone();
        let handle = std::thread::Builder::new().name("mpi-watchdog".into()).spawn(move || me.run());
        match handle {
            Ok(h) => *lock(&w.thread) = Some(h),
            Err(e) => tracing::warn!("cannot start the MPI stall watchdog: {e}; a stalled run will hang"),
        }
        w
    }

    /// This process's rank in the world.
    pub fn world_rank(&self) -> usize {
        self.rank
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    /// Registers call `op` (waiting for `peer`, or `usize::MAX` for a collective): two atomic
    /// stores and an uncontended lock, so the bare MPI call's speed is kept.
    pub fn enter(&self, op: &'static str, peer: usize) -> Entered<'_> {
        let slot = SLOT.with(|s| {
            *s.get().get_or_insert_with(|| {
                let i = (self.next_slot.fetch_add(1, Ordering::Relaxed) as usize) % SLOTS;
                s.set(Some(i));
                i
            })
        });
        *lock(&self.slots[slot].op) = (op, peer);
        self.slots[slot].since.store(self.now_ns(), Ordering::Release);
        Entered { watch: self, slot }
    }

    /// Calls in flight: (how long, op, peer).
    fn calls(&self) -> Vec<(Duration, &'static str, usize)> {
        let now = self.now_ns();
        self.slots
            .iter()
            .filter_map(|s| {
                let since = s.since.load(Ordering::Acquire);
                (since != 0).then(|| {
                    let (op, peer) = *lock(&s.op);
                    (Duration::from_nanos(now.saturating_sub(since)), op, peer)
                })
            })
            .collect()
    }

    /// The call of this process that has waited longest: (op, peer, how long), for the thread
    /// watchdog's report (parallel/watchdog.rs).
    pub fn longest_call(&self) -> Option<(&'static str, Option<usize>, Duration)> {
        self.calls().into_iter().max_by_key(|c| c.0).map(|(t, op, peer)| (op, (peer != usize::MAX).then_some(peer), t))
    }

    /// Stops the thread (before MPI is finalised).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = lock(&self.thread).take() {
            let _ = h.join();
        }
    }

    fn run(&self) {
        let limit = if self.abort { self.stall } else { self.stall * crate::comm::STALLS_BEFORE_GIVING_UP };
        // The age of the oldest call at which the next warning is due.
        let mut next_report = self.stall;
        while !self.stop.load(Ordering::Acquire) {
            std::thread::sleep(TICK);
            self.answer();
            let stalled = self.calls().into_iter().max_by_key(|c| c.0);
            let Some((waited, op, peer)) = stalled.filter(|c| c.0 > self.stall) else {
                next_report = self.stall;
                continue;
            };
            if waited > limit {
                let msg = self.census(waited, op, peer);
                eprintln!("error: {msg}");
                let code = if self.abort { 3 } else { 1 };
                // SAFETY: ends every process of the job.
                unsafe { ffi::MPI_Abort(ffi::RSMPI_COMM_WORLD, code) };
            } else if waited > next_report {
                let msg = self.census(waited, op, peer);
                tracing::warn!("{msg} (the job goes on, and ends if the call still waits after {:.0}s; --stall-abort ends it at the first report)", limit.as_secs_f64());
                next_report = waited + self.stall;
            }
        }
        // Drain the questions still queued so finalize finds no unmatched message.
        self.answer();
    }

    /// What this rank is doing, in words.
    fn describe(&self) -> String {
        let where_ = phase::describe();
        match self.calls().into_iter().max_by_key(|c| c.0) {
            Some((waited, op, peer)) => {
                format!("waiting in {op}{} for {:.1}s{where_}", peer_note(peer), waited.as_secs_f64())
            }
            None => {
                let idle = self.now_ns().saturating_sub(self.idle_since.load(Ordering::Relaxed));
                format!("not in communication (computing, or stuck outside MPI) for {:.1}s{where_}", idle as f64 * 1e-9)
            }
        }
    }

    /// Answers every census question queued.
    fn answer(&self) {
        loop {
            let (mut flag, mut status): (c_int, ffi::MPI_Status) = (0, unsafe { std::mem::zeroed() });
            // SAFETY: plain MPI calls on the census communicator.
            unsafe { ffi::MPI_Iprobe(ffi::RSMPI_ANY_SOURCE, TAG_ASK, self.census, &mut flag, &mut status) };
            if flag == 0 {
                return;
            }
            let src = status.MPI_SOURCE;
            let mut st: ffi::MPI_Status = unsafe { std::mem::zeroed() };
            let mut none = 0u8;
            unsafe {
                ffi::MPI_Recv(
                    &mut none as *mut u8 as *mut c_void,
                    0,
                    ffi::RSMPI_UINT8_T,
                    src,
                    TAG_ASK,
                    self.census,
                    &mut st,
                )
            };
            let text = self.describe().into_bytes();
            let mut req: ffi::MPI_Request = unsafe { ffi::RSMPI_REQUEST_NULL };
            // Small and eager: the buffer can go once the send has been posted and freed.
            unsafe {
                ffi::MPI_Isend(
                    text.as_ptr() as *const c_void,
                    text.len() as c_int,
                    ffi::RSMPI_UINT8_T,
                    src,
                    TAG_ANSWER,
                    self.census,
                    &mut req,
                );
                let mut st: ffi::MPI_Status = std::mem::zeroed();
                ffi::MPI_Wait(&mut req, &mut st);
            }
        }
    }

    /// Asks every other rank what it does; returns the stall report.
    fn census(&self, waited: Duration, op: &str, peer: usize) -> String {
        let none = 0u8;
        let mut asks = Vec::new();
        for r in (0..self.size).filter(|&r| r != self.rank) {
            let mut req: ffi::MPI_Request = unsafe { ffi::RSMPI_REQUEST_NULL };
            // SAFETY: an empty message; the request is left to MPI_Abort.
            unsafe {
                ffi::MPI_Isend(
                    &none as *const u8 as *const c_void,
                    0,
                    ffi::RSMPI_UINT8_T,
                    r as c_int,
                    TAG_ASK,
                    self.census,
                    &mut req,
                )
            };
            asks.push(req);
        }
        let mut answers: Vec<Option<String>> = vec![None; self.size];
        let t = Instant::now();
        while t.elapsed() < CENSUS_WAIT && answers.iter().enumerate().any(|(r, a)| r != self.rank && a.is_none()) {
            self.answer();
            let (mut flag, mut status): (c_int, ffi::MPI_Status) = (0, unsafe { std::mem::zeroed() });
            unsafe { ffi::MPI_Iprobe(ffi::RSMPI_ANY_SOURCE, TAG_ANSWER, self.census, &mut flag, &mut status) };
            if flag == 0 {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            let mut count: c_int = 0;
            unsafe { ffi::MPI_Get_count(&status, ffi::RSMPI_UINT8_T, &mut count) };
            let mut buf = vec![0u8; count.max(0) as usize];
            let mut st: ffi::MPI_Status = unsafe { std::mem::zeroed() };
            unsafe {
                ffi::MPI_Recv(
                    buf.as_mut_ptr() as *mut c_void,
                    count,
                    ffi::RSMPI_UINT8_T,
                    status.MPI_SOURCE,
                    TAG_ANSWER,
                    self.census,
                    &mut st,
                )
            };
            if let Some(a) = answers.get_mut(status.MPI_SOURCE as usize) {
                *a = Some(String::from_utf8_lossy(&buf).into_owned());
            }
        }
        let mut missing = Vec::new();
        let mut lines = Vec::new();
        for (r, a) in answers.into_iter().enumerate().filter(|(r, _)| *r != self.rank) {
            let waiting = a.as_deref().is_some_and(|a| a.starts_with("waiting"));
            if !waiting {
                missing.push(r);
            }
            lines.push(format!(
                "rank {r}: {}",
                a.unwrap_or_else(|| format!(
                    "no answer within {}s (dead, or hung with its watchdog)",
                    CENSUS_WAIT.as_secs()
                ))
            ));
        }
        let culprits = match missing.as_slice() {
            [] => "every rank is waiting in communication (a mismatch of calls between ranks?)".to_string(),
            [r] => format!("rank {r} did not arrive"),
            rs => format!("ranks {rs:?} did not arrive"),
        };
        format!(
            "stall: rank {} waited {:.1}s in {op}{}{}: {culprits}; {}; hint: a rank is stuck or much slower (see --stall-timeout)",
            self.rank,
            waited.as_secs_f64(),
            peer_note(peer),
            phase::describe(),
            lines.join("; ")
        )
    }
}

fn peer_note(peer: usize) -> String {
    if peer == usize::MAX {
        String::new()
    } else {
        format!(" (for rank {peer})")
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
