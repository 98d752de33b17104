//! `HierComm`: ranks that are threads of several processes (`mpirun -np P convoy train --workers
//! T`: P × T ranks, rank = process × T + thread). As Horovod's hierarchical all-reduce and Intel
//! Caffe's one process per node: the threads of a process reduce in shared memory (`LocalComm`),
//! thread 0 of each process all-reduces across processes over MPI, and the result is broadcast
//! back to the threads. The fused sharded update gathers each process's chunks to its thread 0,
//! exchanges them with `MPI_Allgatherv`, and broadcasts. Point-to-point between threads of
//! different processes goes over MPI with the two thread indices in the tag, so every algorithm
//! of `algorithms` (ring, tree for `--deterministic`, gathers) works on it too.

use super::{mpi_tag, MpiComm};
use crate::comm::{algorithms, Algorithm, CommError, Communicator, LocalComm, Update};
use crate::ranges::even_range;
use std::ops::Range;
use std::sync::Arc;

/// Threads per process `HierComm` can tell apart in an MPI tag.
pub const MAX_THREADS: usize = 16;

/// One thread's view of the P × T ranks.
pub struct HierComm {
    local: LocalComm,
    net: Arc<MpiComm>,
    algorithm: Algorithm,
}

impl HierComm {
    /// The rank of thread `local.rank()` of process `net.rank()`; `local` joins this process's
    /// threads (its algorithm should be `Direct`), `net` one rank per process.
    pub fn new(local: LocalComm, net: Arc<MpiComm>, algorithm: Algorithm) -> Result<HierComm, CommError> {
        if local.size() > MAX_THREADS {
            return Err(CommError::Invalid(format!(
                "{} threads per process: at most {MAX_THREADS} under MPI; hint: start more processes",
                local.size()
            )));
        }
        Ok(HierComm { local, net, algorithm })
    }

    fn threads(&self) -> usize {
        self.local.size()
    }

    /// (process, thread) of rank `r`.
    fn place(&self, r: usize) -> (usize, usize) {
        (r / self.threads(), r % self.threads())
    }

    fn tag(&self, tag: u32, src_thread: usize, dst_thread: usize) -> Result<i32, CommError> {
        Ok(mpi_tag(tag)? << 8 | (src_thread << 4 | dst_thread) as i32)
    }

    fn leader(&self) -> bool {
        self.local.rank() == 0
    }

    /// The range of `0..n` owned by process `p` (its threads' chunks, contiguous).
    fn process_range(&self, n: usize, p: usize) -> Range<usize> {
        let t = self.threads();
        even_range(n, p * t, self.size()).start..even_range(n, p * t + t - 1, self.size()).end
    }

    /// Hierarchical all-reduce: threads, then processes (thread 0), then back to the threads.
    fn all_reduce_hier(&self, buf: &mut [f32]) -> Result<(), CommError> {
        self.local.all_reduce_into(buf)?;
        if self.leader() {
            self.net.mpi_all_reduce(buf)?;
        }
        self.local.broadcast_into(buf, 0)
    }
}

impl Communicator for HierComm {
    fn rank(&self) -> usize {
        self.net.rank() * self.threads() + self.local.rank()
    }

    fn size(&self) -> usize {
        self.net.size() * self.threads()
    }

    fn send(&self, buf: &[f32], dest: usize, tag: u32) -> Result<(), CommError> {
        let (p, t) = self.place(dest);
        if p == self.net.rank() {
            return self.local.send(buf, t, tag);
        }
        self.net.send_raw(buf, p, self.tag(tag, self.local.rank(), t)?)
    }

    fn recv(&self, buf: &mut [f32], src: usize, tag: u32) -> Result<(), CommError> {
        let (p, t) = self.place(src);
        if p == self.net.rank() {
            return self.local.recv(buf, t, tag);
        }
        self.net.recv_raw(buf, Some(p), self.tag(tag, t, self.local.rank())?, false, "recv").map(|_| ())
    }

    fn recv_add(&self, buf: &mut [f32], src: usize, tag: u32) -> Result<(), CommError> {
        let (p, t) = self.place(src);
        if p == self.net.rank() {
            return self.local.recv_add(buf, t, tag);
        }
        self.net.recv_raw(buf, Some(p), self.tag(tag, t, self.local.rank())?, true, "recv").map(|_| ())
    }

    fn recv_any(&self, _buf: &mut [f32], _tag: u32) -> Result<usize, CommError> {
        Err(CommError::Invalid("receiving from any rank is not supported with several threads per MPI process; hint: run one worker per process (--workers 1)".into()))
    }

    fn barrier(&self) -> Result<(), CommError> {
        self.local.barrier()?;
        if self.leader() {
            self.net.barrier()?;
        }
        self.local.barrier()
    }

    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    fn all_reduce_direct(&self, buf: &mut [f32]) -> Result<(), CommError> {
        self.all_reduce_hier(buf)
    }

    fn all_reduce_update_direct(
        &self,
        grads: &mut [f32],
        params: &mut [f32],
        update: &mut Update<'_>,
    ) -> Result<(), CommError> {
        let n = grads.len();
        self.all_reduce_hier(grads)?;
        let mine = even_range(n, self.rank(), self.size());
        update(mine.clone(), &mut params[mine.clone()], &grads[mine.clone()]);
        // Each process's chunks to its thread 0, across processes, back to the threads.
        let first = self.net.rank() * self.threads();
        if self.leader() {
            for t in 1..self.threads() {
                let r = even_range(n, first + t, self.size());
                self.local.recv(&mut params[r], t, TAG_GATHER)?;
            }
            let ranges: Vec<Range<usize>> = (0..self.net.size()).map(|p| self.process_range(n, p)).collect();
            self.net.all_gather_ranges_inplace(params, &ranges)?;
        } else {
            self.local.send(&params[mine], 0, TAG_GATHER)?;
        }
        self.local.broadcast_into(params, 0)
    }

    fn abort(&self, msg: &str) {
        self.abort_with(msg, 1)
    }

    fn abort_with(&self, msg: &str, code: i32) {
        self.local.abort(msg);
        self.net.abort_with(&format!("thread {}: {msg}", self.local.rank()), code);
    }

    fn split(&self, _color: usize, _key: usize) -> Result<Box<dyn Communicator>, CommError> {
        Err(CommError::Invalid("split is not supported with several threads per MPI process".into()))
    }

    fn spans_processes(&self) -> bool {
        true
    }

    fn values_sent(&self) -> u64 {
        self.local.values_sent() + if self.leader() { self.net.values_sent() } else { 0 }
    }

    fn broadcast_into(&self, buf: &mut [f32], root: usize) -> Result<(), CommError> {
        let (p, t) = self.place(root);
        if p == self.net.rank() && t != 0 {
            // The root's values to thread 0 of its process first.
            if self.local.rank() == t {
                self.local.send(buf, 0, TAG_GATHER)?;
            } else if self.leader() {
                self.local.recv(buf, t, TAG_GATHER)?;
            }
        }
        if self.leader() {
            self.net.broadcast_into(buf, p)?;
        }
        self.local.broadcast_into(buf, 0)
    }

    fn all_reduce_into(&self, buf: &mut [f32]) -> Result<(), CommError> {
        match self.algorithm {
            Algorithm::Direct => self.all_reduce_hier(buf),
            Algorithm::Ring => algorithms::all_reduce_ring(self, buf),
            Algorithm::Tree => algorithms::all_reduce_tree(self, buf),
            Algorithm::Naive => algorithms::all_reduce_naive(self, buf),
        }
    }
}

/// Tag of the gathers to a process's thread 0 (local messages only).
const TAG_GATHER: u32 = 0xC000_0010;
