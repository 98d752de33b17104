//! `MpiComm`: the communicator for ranks that are processes, over the system's MPI library
//! (rsmpi's bindings; Open MPI on Debian), built with the `mpi` feature.
//!
//! - Collectives are the MPI library's own (`MPI_Allreduce`, `MPI_Reduce_scatter`,
//!   `MPI_Allgatherv`, `MPI_Bcast`, `MPI_Barrier`, `MPI_Comm_split`), in place where MPI allows
//!   it. `--allreduce direct` (the default) means `MPI_Allreduce`; `ring`, `tree` and `naive` run
//!   our algorithms over MPI point-to-point (for comparison, and `tree` for `--deterministic`).
//! - `send` is buffered as the trait asks (never waits for the receiver): the values are copied and
//!   sent with `MPI_Isend`; finished sends are reaped on later calls and all of them at the end.
//!   A send moves only while some thread of the process is inside MPI (Open MPI's TCP transport
//!   has no progress of its own: a message over its 64 KiB eager limit waits for the receiver's
//!   answer and then for the next call), so while sends are in flight a progress thread tests them
//!   every 200 µs (`sends`): a pipeline stage that sends an activation and goes on computing
//!   would otherwise hold the message until its next receive.
//!   `recv` matches with `MPI_Improbe` + `MPI_Mrecv`, so a message of the wrong length is an
//!   error, not a truncation; while it waits it polls, then yields, then sleeps between polls
//!   (`probe`), so a long wait does not take a core from ranks that compute on the same machine.
//! - Threads: MPI is initialised with `MPI_THREAD_MULTIPLE`. Overlap of communication with
//!   backward comes from the strategy's communication thread (it calls blocking collectives while
//!   the worker thread computes), not from `MPI_Iallreduce`: Open MPI's non-blocking collectives
//!   (libnbc) are slower than its tuned blocking ones, and a thread gives the same overlap. The
//!   watchdog (below) is a third thread that uses MPI.
//! - Errors: communicators return errors (`MPI_ERRORS_RETURN`) that become `CommError`s. A rank
//!   that fails calls `abort`, which prints its error and calls `MPI_Abort`: the launcher ends
//!   every rank and names the one that aborted. A rank that dies (killed) is reported by the
//!   launcher, which ends the others (mpirun does within a second).
//! - Stalls: MPI calls block, so a watchdog thread per process watches every call; one that lasts
//!   longer than `--stall-timeout` starts a census (Horovod's stall inspector, without a
//!   coordinator): the stalled rank asks every other rank's watchdog, over a communicator of their
//!   own, what its rank is doing, waits `CENSUS_WAIT` for the answers, prints which ranks are
//!   waiting in which call and which did not arrive (computing, or not answering at all), with the
//!   step and bucket, as a warning, again after each further stall timeout; it aborts the job at
//!   the first report with `--stall-abort` (exit 3), else after `STALLS_BEFORE_GIVING_UP` timeouts.

mod bytes;
mod communicator;
mod hier;
mod sends;
mod watch;

pub use hier::HierComm;

use super::{Algorithm, CommError};
use crate::ranges::even_range;
use mpi::ffi;
use sends::Sent;
use std::ffi::c_void;
use std::ops::Range;
use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// `--mpi-spin-wait`: receives block in `MPI_Mprobe` (MPI's polling) instead of `probe`'s
/// spin-then-sleep. One setting per process, as MPI is one per process.
static SPIN_WAIT: AtomicBool = AtomicBool::new(false);

/// Sets how every receive of this process waits (`--mpi-spin-wait`): in `MPI_Mprobe` (`true`)
/// or polling, then yielding, then sleeping (`false`, the default).
pub fn set_spin_wait(on: bool) {
    SPIN_WAIT.store(on, Ordering::Relaxed);
}
use std::sync::{Arc, Mutex};
use std::time::Duration;
use watch::Watch;

extern "C" {
    /// `MPI_IN_PLACE` (a C macro, see shim.c).
    fn convoy_mpi_in_place() -> *mut c_void;
}

/// The largest count one MPI call takes (counts are C ints); longer buffers go in pieces.
const MAX_COUNT: usize = 1 << 30;

/// MPI for this process: initialised by `Mpi::init`, finalised when dropped (after the watchdog
/// has stopped).
pub struct Mpi {
    world: Arc<MpiComm>,
    watch: Arc<Watch>,
    _universe: mpi::environment::Universe,
}

impl Mpi {
    /// Initialises MPI with `MPI_THREAD_MULTIPLE` and starts the watchdog: it reports a call
    /// older than `stall`, and ends the job then (`abort`) or after `STALLS_BEFORE_GIVING_UP` × `stall`.
    pub fn init(stall: Duration, abort: bool) -> Result<Mpi, CommError> {
        let (universe, threading) = mpi::initialize_with_threading(mpi::Threading::Multiple)
            .ok_or_else(|| CommError::Invalid("MPI was already initialised in this process".into()))?;
        if threading != mpi::Threading::Multiple {
            return Err(CommError::Invalid(format!(
                "the MPI library gives thread level {threading:?}, convoy needs Multiple; hint: use an MPI built with thread support (Debian's Open MPI has it)"
            )));
        }
        // SAFETY: MPI is initialised; the handles are MPI's predefined ones.
        let world = unsafe { dup(ffi::RSMPI_COMM_WORLD)? };
        let census = unsafe { dup(ffi::RSMPI_COMM_WORLD)? };
        let (rank, size) = unsafe { rank_size(world)? };
        let watch = Watch::start(census, rank, size, stall, abort);
        let world = Arc::new(MpiComm::new(world, rank, size, Algorithm::Direct, watch.clone()));
        Ok(Mpi { world, watch, _universe: universe })
    }

    /// All processes, one rank each, with the default algorithm.
    pub fn world(&self) -> &Arc<MpiComm> {
        &self.world
    }

    /// The name of the MPI library (`MPI_Get_library_version`, first line).
    pub fn library_version() -> String {
        let mut buf = vec![0u8; 8192];
        let mut len: c_int = 0;
        // SAFETY: the buffer is larger than MPI_MAX_LIBRARY_VERSION_STRING.
        unsafe { ffi::MPI_Get_library_version(buf.as_mut_ptr() as *mut _, &mut len) };
        let s = String::from_utf8_lossy(&buf[..(len.max(0) as usize).min(buf.len())]).to_string();
        s.lines().next().unwrap_or("").trim_end_matches('\0').trim().to_string()
    }
}

impl Drop for Mpi {
    fn drop(&mut self) {
        self.world.reap(true);
        self.watch.stop();
    }
}

/// A group of MPI processes (a duplicated communicator of its own).
pub struct MpiComm {
    comm: ffi::MPI_Comm,
    rank: usize,
    size: usize,
    algorithm: Algorithm,
    sent: AtomicU64,
    /// Buffered sends in flight: the request and the copy it sends from.
    pending: Arc<Mutex<Vec<Sent>>>,
    /// Whether a progress thread runs for `pending` (it ends when nothing is in flight).
    progressing: Arc<AtomicBool>,
    watch: Arc<Watch>,
}

// SAFETY: MPI is initialised with MPI_THREAD_MULTIPLE, so a communicator handle may be used from
// any thread; the only mutable state is behind a mutex or atomic.
unsafe impl Send for MpiComm {}
unsafe impl Sync for MpiComm {}

impl MpiComm {
    fn new(comm: ffi::MPI_Comm, rank: usize, size: usize, algorithm: Algorithm, watch: Arc<Watch>) -> MpiComm {
        MpiComm {
            comm,
            rank,
            size,
            algorithm,
            sent: AtomicU64::new(0),
            pending: Arc::default(),
            progressing: Arc::default(),
            watch,
        }
    }

    /// The same group with its own communicator and another all-reduce algorithm.
    pub fn with_algorithm(&self, algorithm: Algorithm) -> Result<MpiComm, CommError> {
        // SAFETY: `self.comm` is a live communicator.
        let comm = unsafe { dup(self.comm)? };
        Ok(MpiComm::new(comm, self.rank, self.size, algorithm, self.watch.clone()))
    }

    /// Sends with an MPI tag chosen by the caller (`HierComm` multiplexes threads over tags).
    pub(crate) fn send_raw(&self, buf: &[f32], dest: usize, tag: c_int) -> Result<(), CommError> {
        self.check_rank("send", dest)?;
        self.reap(false);
        let copy = buf.to_vec();
        let mut req: ffi::MPI_Request = unsafe { ffi::RSMPI_REQUEST_NULL };
        let _w = self.watch.enter("send", dest);
        for (i, piece) in pieces(copy.len()).enumerate() {
            if i > 0 {
                // Long messages: the pieces after the first go blocking (rare: > 2^30 values).
                self.check("send", unsafe {
                    ffi::MPI_Send(
                        copy[piece.clone()].as_ptr() as *const c_void,
                        piece.len() as c_int,
                        ffi::RSMPI_FLOAT,
                        dest as c_int,
                        tag,
                        self.comm,
                    )
                })?;
                continue;
            }
            // SAFETY: `copy` lives in `pending` until the request completes.
            self.check("send", unsafe {
                ffi::MPI_Isend(
                    copy.as_ptr() as *const c_void,
                    piece.len() as c_int,
                    ffi::RSMPI_FLOAT,
                    dest as c_int,
                    tag,
                    self.comm,
                    &mut req,
                )
            })?;
        }
        self.sent.fetch_add(buf.len() as u64, Ordering::Relaxed);
        lock(&self.pending).push(Sent::new(req, copy));
        sends::progress_while_in_flight(&self.pending, &self.progressing).map_err(|e| {
            CommError::Invalid(format!("send on rank {}: cannot start the progress thread: {e}", self.rank))
        })
    }

    /// Receives exactly `buf.len()` values from `src` (or any source) with MPI tag `tag`;
    /// returns the source. With `add`, adds them into `buf`.
    pub(crate) fn recv_raw(
        &self,
        buf: &mut [f32],
        src: Option<usize>,
        tag: c_int,
        add: bool,
        op: &'static str,
    ) -> Result<usize, CommError> {
        if let Some(s) = src {
            self.check_rank(op, s)?;
        }
        let _w = self.watch.enter(op, src.unwrap_or(usize::MAX));
        let source = match src {
            Some(s) => s as c_int,
            None => unsafe { ffi::RSMPI_ANY_SOURCE },
        };
        let mut from = usize::MAX;
        let mut scratch = Vec::new();
        for (i, piece) in pieces(buf.len()).enumerate() {
            let mut msg: ffi::MPI_Message = unsafe { ffi::RSMPI_MESSAGE_NULL };
            let mut status: ffi::MPI_Status = unsafe { std::mem::zeroed() };
            let source = if i == 0 { source } else { from as c_int };
            self.probe(source, tag, &mut msg, &mut status, op)?;
            from = status.MPI_SOURCE as usize;
            let mut count: c_int = 0;
            unsafe { ffi::MPI_Get_count(&status, ffi::RSMPI_FLOAT, &mut count) };
            let got = count.max(0) as usize;
            let dst: &mut [f32] = if add {
                scratch.resize(got, 0.0);
                &mut scratch
            } else if got == piece.len() {
                &mut buf[piece.clone()]
            } else {
                scratch.resize(got, 0.0);
                &mut scratch
            };
            let mut st: ffi::MPI_Status = unsafe { std::mem::zeroed() };
            // SAFETY: `dst` holds `got` values, the size of the matched message.
            self.check(op, unsafe {
                ffi::MPI_Mrecv(dst.as_mut_ptr() as *mut c_void, got as c_int, ffi::RSMPI_FLOAT, &mut msg, &mut st)
            })?;
            if got != piece.len() {
                return Err(CommError::Length {
                    op,
                    rank: self.rank,
                    peer: from,
                    expected: buf.len(),
                    got: i * MAX_COUNT + got,
                });
            }
            if add {
                for (b, s) in buf[piece].iter_mut().zip(&scratch) {
                    *b += s;
                }
            }
        }
        Ok(from)
    }

    /// In-place reduce-scatter over the chunks of `even_range`: afterwards this rank's chunk of
    /// `buf` (at its place) holds the sum over ranks; returns every rank's chunk.
    fn reduce_scatter_inplace(&self, buf: &mut [f32]) -> Result<Vec<Range<usize>>, CommError> {
        let (n, size) = (buf.len(), self.size);
        let ranges: Vec<Range<usize>> = (0..size).map(|r| even_range(n, r, size)).collect();
        let counts: Vec<c_int> = ranges.iter().map(|r| r.len() as c_int).collect();
        let mine = ranges[self.rank].clone();
        {
            let _w = self.watch.enter("reduce_scatter", usize::MAX);
            // SAFETY: in place: the input is all of `buf`, this rank's sum lands at its start.
            self.check("reduce_scatter", unsafe {
                ffi::MPI_Reduce_scatter(
                    convoy_mpi_in_place(),
                    buf.as_mut_ptr() as *mut c_void,
                    counts.as_ptr(),
                    ffi::RSMPI_FLOAT,
                    ffi::RSMPI_SUM,
                    self.comm,
                )
            })?;
        }
        buf.copy_within(0..mine.len(), mine.start);
        Ok(ranges)
    }

    /// In-place all-gather where rank `r` contributes `buf[ranges[r]]` (contiguous, in rank order).
    pub(crate) fn all_gather_ranges_inplace(&self, buf: &mut [f32], ranges: &[Range<usize>]) -> Result<(), CommError> {
        if buf.len() > i32::MAX as usize {
            return self.too_long("all_gather", buf.len());
        }
        let counts: Vec<c_int> = ranges.iter().map(|r| r.len() as c_int).collect();
        let displs: Vec<c_int> = ranges.iter().map(|r| r.start as c_int).collect();
        let _w = self.watch.enter("all_gather", usize::MAX);
        // SAFETY: in place: every rank's part lies inside `buf` at its displacement.
        self.check("all_gather", unsafe {
            ffi::MPI_Allgatherv(
                convoy_mpi_in_place(),
                0,
                ffi::RSMPI_FLOAT,
                buf.as_mut_ptr() as *mut c_void,
                counts.as_ptr(),
                displs.as_ptr(),
                ffi::RSMPI_FLOAT,
                self.comm,
            )
        })
    }

    /// `MPI_Allreduce` (sum), in place.
    pub fn mpi_all_reduce(&self, buf: &mut [f32]) -> Result<(), CommError> {
        let _w = self.watch.enter("all_reduce", usize::MAX);
        for piece in pieces(buf.len()) {
            let p = &mut buf[piece];
            // SAFETY: in-place sum over `p.len()` floats of a live buffer.
            self.check("all_reduce", unsafe {
                ffi::MPI_Allreduce(
                    convoy_mpi_in_place(),
                    p.as_mut_ptr() as *mut c_void,
                    p.len() as c_int,
                    ffi::RSMPI_FLOAT,
                    ffi::RSMPI_SUM,
                    self.comm,
                )
            })?;
        }
        Ok(())
    }

    /// The bare in-place `MPI_Allreduce` call (no watchdog, no pieces): the benchmark's baseline.
    pub fn raw_all_reduce_in_place(&self, buf: &mut [f32]) -> Result<(), CommError> {
        // SAFETY: in-place sum over a live buffer.
        self.check("all_reduce", unsafe {
            ffi::MPI_Allreduce(
                convoy_mpi_in_place(),
                buf.as_mut_ptr() as *mut c_void,
                buf.len() as c_int,
                ffi::RSMPI_FLOAT,
                ffi::RSMPI_SUM,
                self.comm,
            )
        })
    }

    /// `MPI_Allreduce` (sum) from `send` into `recv`: the raw call, for the benchmark's baseline.
    pub fn mpi_all_reduce_from(&self, send: &[f32], recv: &mut [f32]) -> Result<(), CommError> {
        if send.len() != recv.len() || send.len() > i32::MAX as usize {
            return self.too_long("all_reduce", send.len());
        }
        // SAFETY: two distinct live buffers of the same length.
        self.check("all_reduce", unsafe {
            ffi::MPI_Allreduce(
                send.as_ptr() as *const c_void,
                recv.as_mut_ptr() as *mut c_void,
                send.len() as c_int,
                ffi::RSMPI_FLOAT,
                ffi::RSMPI_SUM,
                self.comm,
            )
        })
    }

    /// Waits for a message from `source` with `tag` and matches it (`MPI_Improbe`): polling for
    /// `SPIN`, then yielding the core, then — unless a send of ours is still in flight, which
    /// moves only while we call into MPI — sleeping an eighth of the time waited so far (at most
    /// 1 ms) between polls — spin-then-block, as MPI libraries' wait modes do — so that a rank that
    /// waits long (a parameter server for its workers' gradients, a pipeline stage for its
    /// neighbour) leaves its core to the ranks that compute beside it. `--mpi-spin-wait`
    /// blocks in `MPI_Mprobe` instead (MPI's own polling).
    fn probe(
        &self,
        source: c_int,
        tag: c_int,
        msg: &mut ffi::MPI_Message,
        status: &mut ffi::MPI_Status,
        op: &'static str,
    ) -> Result<(), CommError> {
        const SPIN: std::time::Duration = std::time::Duration::from_micros(50);
        const YIELD: std::time::Duration = std::time::Duration::from_micros(500);
        if SPIN_WAIT.load(Ordering::Relaxed) {
            // SAFETY: plain MPI call on a live communicator; `status` is written by MPI.
            return self.check(op, unsafe { ffi::MPI_Mprobe(source, tag, self.comm, msg, status) });
        }
        let t = std::time::Instant::now();
        loop {
            let mut flag: c_int = 0;
            // SAFETY: as above; `msg` and `status` are written when `flag` is set.
            self.check(op, unsafe { ffi::MPI_Improbe(source, tag, self.comm, &mut flag, msg, status) })?;
            if flag != 0 {
                return Ok(());
            }
            let waited = t.elapsed();
            if waited < SPIN {
                std::hint::spin_loop();
            } else if waited < YIELD {
                std::thread::yield_now();
            } else {
                std::thread::sleep((waited / 8).min(std::time::Duration::from_millis(1)));
            }
        }
    }

    /// A barrier that sleeps while it waits (`MPI_Ibarrier` tested every millisecond) instead of
    /// polling: for processes that only wait while another one measures this machine.
    pub fn quiet_barrier(&self) -> Result<(), CommError> {
        self.reap(false);
        let mut req: ffi::MPI_Request = unsafe { ffi::RSMPI_REQUEST_NULL };
        // SAFETY: a live communicator; `req` is completed below before it goes out of scope.
        self.check("barrier", unsafe { ffi::MPI_Ibarrier(self.comm, &mut req) })?;
        loop {
            let mut done: c_int = 0;
            let mut st: ffi::MPI_Status = unsafe { std::mem::zeroed() };
            // SAFETY: `req` is the live request of the barrier above.
            self.check("barrier", unsafe { ffi::MPI_Test(&mut req, &mut done, &mut st) })?;
            if done != 0 {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Completes the finished buffered sends (all of them, waiting, with `all`).
    fn reap(&self, all: bool) {
        sends::reap(&mut lock(&self.pending), all);
    }

    fn check_rank(&self, op: &str, r: usize) -> Result<(), CommError> {
        if r >= self.size {
            return Err(CommError::Invalid(format!("{op}: rank {r} out of range (size {})", self.size)));
        }
        Ok(())
    }

    fn check(&self, op: &str, rc: c_int) -> Result<(), CommError> {
        if rc == 0 {
            return Ok(());
        }
        Err(CommError::Invalid(format!("{op} on rank {} failed in MPI: {}", self.rank, error_string(rc))))
    }

    fn too_long<T>(&self, op: &str, n: usize) -> Result<T, CommError> {
        Err(CommError::Invalid(format!("{op}: {n} values do not fit one MPI call (at most {})", i32::MAX)))
    }
}

impl Drop for MpiComm {
    fn drop(&mut self) {
        self.reap(true);
        // SAFETY: the communicator was created by dup/split for this value alone.
        unsafe { ffi::MPI_Comm_free(&mut self.comm) };
    }
}

/// Maps a convoy tag (u32, classes in the top nibble: 0xC… collectives, 0x5… parameter server,
/// small values for tests) to an MPI tag below 2^20, leaving 8 bits for `HierComm`'s thread
/// indices (MPI guarantees tags up to 32767 only, Open MPI allows 2^31 − 1).
pub(crate) fn mpi_tag(tag: u32) -> Result<c_int, CommError> {
    let class = tag >> 28;
    if tag & 0x0FFF_0000 != 0 {
        return Err(CommError::Invalid(format!("tag {tag:#x} does not fit the MPI tag space")));
    }
    Ok(((class << 16) | (tag & 0xFFFF)) as c_int)
}

/// Ranges of at most `MAX_COUNT` values covering `0..n` (one empty range for n = 0).
fn pieces(n: usize) -> impl Iterator<Item = Range<usize>> {
    let count = n.div_ceil(MAX_COUNT).max(1);
    (0..count).map(move |i| i * MAX_COUNT..((i + 1) * MAX_COUNT).min(n))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A duplicate of `comm` that returns errors instead of aborting.
unsafe fn dup(comm: ffi::MPI_Comm) -> Result<ffi::MPI_Comm, CommError> {
    let mut out: ffi::MPI_Comm = ffi::RSMPI_COMM_NULL;
    let rc = ffi::MPI_Comm_dup(comm, &mut out);
    if rc != 0 {
        return Err(CommError::Invalid(format!("MPI_Comm_dup failed: {}", error_string(rc))));
    }
    set_errors_return(out);
    Ok(out)
}

unsafe fn set_errors_return(comm: ffi::MPI_Comm) {
    ffi::MPI_Comm_set_errhandler(comm, ffi::RSMPI_ERRORS_RETURN);
}

unsafe fn rank_size(comm: ffi::MPI_Comm) -> Result<(usize, usize), CommError> {
    let (mut rank, mut size): (c_int, c_int) = (0, 0);
    ffi::MPI_Comm_rank(comm, &mut rank);
    ffi::MPI_Comm_size(comm, &mut size);
    Ok((rank as usize, size as usize))
}

fn error_string(rc: c_int) -> String {
    let mut buf = vec![0u8; 1024];
    let mut len: c_int = 0;
    // SAFETY: the buffer is larger than MPI_MAX_ERROR_STRING (256 in Open MPI, 1024 in MPICH).
    unsafe { ffi::MPI_Error_string(rc, buf.as_mut_ptr() as *mut _, &mut len) };
    String::from_utf8_lossy(&buf[..(len.max(0) as usize).min(buf.len())]).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_of_every_class_map_into_the_mpi_range_distinctly() {
        let tags = [1u32, 7, 0xC000_0001, 0xC000_0005, 0x5000_0001, 0x5000_0004];
        let mapped: Vec<c_int> = tags.iter().map(|&t| mpi_tag(t).unwrap()).collect();
        for (i, a) in mapped.iter().enumerate() {
            assert!(*a >= 0 && (*a as i64) << 8 < (1i64 << 31), "{a}");
            assert!(!mapped[i + 1..].contains(a), "{mapped:?}");
        }
        assert!(mpi_tag(0x0123_0000).is_err());
    }

    #[test]
    fn pieces_cover_the_buffer() {
        assert_eq!(pieces(0).collect::<Vec<_>>(), vec![0..0]);
        assert_eq!(pieces(5).collect::<Vec<_>>(), vec![0..5]);
        let n = 2 * MAX_COUNT + 3;
        let p: Vec<_> = pieces(n).collect();
        assert_eq!(p, vec![0..MAX_COUNT, MAX_COUNT..2 * MAX_COUNT, 2 * MAX_COUNT..n]);
    }
}
