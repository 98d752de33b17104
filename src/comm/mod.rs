//! Communication: the `Communicator` trait (the only thing strategies see), its in-process
//! implementation `LocalComm` (threads), and the collective algorithms as sibling functions over
//! point-to-point messages (`algorithms`), each tested against the naive one.
//!
//! Everything works on flat `f32` buffers; this module never sees a layer. Every blocking call
//! returns an error, never hangs: a peer that failed (`abort`) makes the others' calls fail within
//! a poll interval, and a call that waits longer than the stall timeout fails naming the op and
//! the peer it waits for.

pub mod algorithms;
pub mod launch;
pub mod local;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod phase;

pub use local::LocalComm;

/// Without `--stall-abort`, communication gives up after this many stall timeouts: the
/// watchdogs report a stall first, and a hung rank still ends the run within a bounded time.
pub const STALLS_BEFORE_GIVING_UP: u32 = 5;
use crate::ranges::even_range;
use thiserror::Error;

/// Errors of communication.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum CommError {
    /// Another rank failed and aborted the group.
    #[error("rank {rank} failed: {msg}")]
    PeerFailed {
        /// The failed rank (in the world group).
        rank: usize,
        /// Its message.
        msg: String,
    },
    /// An operation waited longer than the stall timeout.
    #[error("{op} on rank {rank} timed out after {secs:.1}s waiting for rank {peer}{}; hint: a rank is stuck or much slower (see --stall-timeout)", stuck_note(.stuck))]
    Timeout {
        /// Operation.
        op: &'static str,
        /// This rank.
        rank: usize,
        /// The rank it waited for.
        peer: usize,
        /// Seconds waited.
        secs: f64,
        /// Ranks that were not inside a communication call at that moment: the likely culprits
        /// (stuck in computation, or ended).
        stuck: Vec<usize>,
    },
    /// A message had an unexpected length.
    #[error("{op}: rank {rank} expected {expected} values from rank {peer}, got {got}")]
    Length {
        /// Operation.
        op: &'static str,
        /// This rank.
        rank: usize,
        /// Sender.
        peer: usize,
        /// Expected length.
        expected: usize,
        /// Received length.
        got: usize,
    },
    /// A rank or argument out of range.
    #[error("{0}")]
    Invalid(String),
}

fn stuck_note(stuck: &[usize]) -> String {
    match stuck {
        [] => String::new(),
        [r] => format!(" (rank {r} is not communicating: stuck or ended)"),
        rs => format!(" (ranks {rs:?} are not communicating: stuck or ended)"),
    }
}

/// Which all-reduce algorithm a communicator uses (`--allreduce`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// Reduce to rank 0 in rank order, then broadcast.
    Naive,
    /// Ring: reduce-scatter then all-gather (bandwidth-optimal over links).
    Ring,
    /// Shared memory (thread ranks): every rank sums its chunk reading all ranks' buffers in
    /// place, then copies the other chunks from their owners — no messages, about 1.5 memcpy
    /// of traffic per rank. Transports without shared memory run `Ring` instead.
    #[default]
    Direct,
    /// Pairwise tree over ranks in rank order, then broadcast: the same summation tree whatever
    /// the timing (and, for power-of-two worker counts, the upper levels of one global tree).
    Tree,
}

/// A group of ranks that exchange flat f32 buffers. Implementations: `LocalComm` (threads) and,
/// with the `mpi` feature, `MpiComm` (processes) and `HierComm` (processes × threads).
pub trait Communicator: Send + Sync {
    /// This rank, 0-based.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Sends `buf` to `dest` with `tag` (does not wait for the receiver).
    fn send(&self, buf: &[f32], dest: usize, tag: u32) -> Result<(), CommError>;
    /// Receives exactly `buf.len()` values from `src` with `tag`.
    fn recv(&self, buf: &mut [f32], src: usize, tag: u32) -> Result<(), CommError>;
    /// Receives `buf.len()` values from `src` with `tag` and ADDS them into `buf` (the reduction
    /// step of every collective; implementations avoid the temporary copy).
    fn recv_add(&self, buf: &mut [f32], src: usize, tag: u32) -> Result<(), CommError> {
        let mut tmp = vec![0.0f32; buf.len()];
        self.recv(&mut tmp, src, tag)?;
        for (b, t) in buf.iter_mut().zip(&tmp) {
            *b += t;
        }
        Ok(())
    }
    /// Receives `buf.len()` values with `tag` from whichever rank sent first; returns that rank.
    fn recv_any(&self, buf: &mut [f32], tag: u32) -> Result<usize, CommError>;
    /// Waits until every rank has called it.
    fn barrier(&self) -> Result<(), CommError>;
    /// The all-reduce algorithm this communicator uses.
    fn algorithm(&self) -> Algorithm;
    /// Aborts the group: every rank's pending and future calls fail with `PeerFailed` naming this rank.
    fn abort(&self, msg: &str);
    /// `abort` with the exit code the process should end with where the transport ends
    /// processes (MPI); the same as `abort` elsewhere.
    fn abort_with(&self, msg: &str, _code: i32) {
        self.abort(msg)
    }
    /// A sub-group of the ranks that pass the same `color`, ordered by `key` then rank.
    fn split(&self, color: usize, key: usize) -> Result<Box<dyn Communicator>, CommError>;
    /// Values this rank has sent so far (for benchmarks and metrics).
    fn values_sent(&self) -> u64;
    /// True when the ranks are separate processes (which must agree explicitly on what threads
    /// of one process can share, such as a signal received).
    fn spans_processes(&self) -> bool {
        false
    }

    /// Sum of `buf` over all ranks, in place, with this communicator's algorithm.
    fn all_reduce_into(&self, buf: &mut [f32]) -> Result<(), CommError> {
        match self.algorithm() {
            Algorithm::Naive => algorithms::all_reduce_naive(self, buf),
            Algorithm::Ring => algorithms::all_reduce_ring(self, buf),
            Algorithm::Direct => self.all_reduce_direct(buf),
            Algorithm::Tree => algorithms::all_reduce_tree(self, buf),
        }
    }
    /// `Algorithm::Direct`: the shared-memory all-reduce where the transport has one (LocalComm);
    /// the ring elsewhere.
    fn all_reduce_direct(&self, buf: &mut [f32]) -> Result<(), CommError> {
        algorithms::all_reduce_ring(self, buf)
    }
    /// An all-reduce of `grads` fused with a sharded update of `params` (ZeRO stage 1): once
    /// this rank's chunk `r = even_range(len, rank, size)` of `grads` holds the sum over
    /// ranks, `update(r, &mut params[r], &grads[r])` runs for that chunk only, and then every
    /// rank's updated chunk of `params` is gathered to all. The traffic of one all-reduce, 1/P of
    /// the update work per rank, and identical parameters everywhere. Afterwards only chunk r of
    /// `grads` holds the full sum.
    fn all_reduce_update(
        &self,
        grads: &mut [f32],
        params: &mut [f32],
        update: &mut Update<'_>,
    ) -> Result<(), CommError> {
        let (n, rank, size) = (grads.len(), self.rank(), self.size());
        if params.len() != n {
            return Err(CommError::Length {
                op: "all_reduce_update",
                rank,
                peer: rank,
                expected: n,
                got: params.len(),
            });
        }
        match self.algorithm() {
            Algorithm::Direct => return self.all_reduce_update_direct(grads, params, update),
            Algorithm::Ring => algorithms::ring_reduce_scatter_inplace(self, grads)?,
            Algorithm::Naive | Algorithm::Tree => self.all_reduce_into(grads)?,
        }
        let r = even_range(n, rank, size);
        update(r.clone(), &mut params[r.clone()], &grads[r]);
        algorithms::ring_all_gather_inplace(self, params)
    }
    /// `all_reduce_update` with `Algorithm::Direct` (shared memory where the transport has it;
    /// the ring elsewhere).
    fn all_reduce_update_direct(
        &self,
        grads: &mut [f32],
        params: &mut [f32],
        update: &mut Update<'_>,
    ) -> Result<(), CommError> {
        algorithms::ring_reduce_scatter_inplace(self, grads)?;
        let r = even_range(grads.len(), self.rank(), self.size());
        update(r.clone(), &mut params[r.clone()], &grads[r]);
        algorithms::ring_all_gather_inplace(self, params)
    }
    /// Copies `root`'s `buf` into every rank's `buf`.
    fn broadcast_into(&self, buf: &mut [f32], root: usize) -> Result<(), CommError> {
        algorithms::broadcast(self, buf, root)
    }
    /// `recv` gets this rank's chunk (`even_range(send.len(), rank, size)`) of the sum of `send`.
    fn reduce_scatter_into(&self, send: &[f32], recv: &mut [f32]) -> Result<(), CommError> {
        algorithms::reduce_scatter_ring(self, send, recv)
    }
    /// `recv` (size × chunk layout of `even_range`) gets every rank's `send` chunk.
    fn all_gather_into(&self, send: &[f32], recv: &mut [f32]) -> Result<(), CommError> {
        algorithms::all_gather_ring(self, send, recv)
    }
}

/// The update of `all_reduce_update`: (range in the buffer, parameters of that range, summed
/// gradients of that range).
pub type Update<'a> = dyn FnMut(std::ops::Range<usize>, &mut [f32], &[f32]) + Send + 'a;
