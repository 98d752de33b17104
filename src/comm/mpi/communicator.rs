//! The `Communicator` trait for `MpiComm`: rank and size, buffered sends and matched receives
//! with convoy's tags mapped into MPI's, the barrier, the collectives (each the MPI library's
//! own call, or one of `algorithms` over point-to-point when another all-reduce is chosen),
//! `split` into sub-communicators, and `abort` through `MPI_Abort`.

use super::{mpi_tag, pieces, rank_size, set_errors_return, MpiComm};
use crate::comm::{algorithms, Algorithm, CommError, Communicator, Update};
use crate::ranges::even_range;
use mpi::ffi;
use std::ffi::c_void;
use std::ops::Range;
use std::os::raw::c_int;
use std::sync::atomic::Ordering;

impl Communicator for MpiComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn send(&self, buf: &[f32], dest: usize, tag: u32) -> Result<(), CommError> {
        self.send_raw(buf, dest, mpi_tag(tag)? << 8)
    }

    fn recv(&self, buf: &mut [f32], src: usize, tag: u32) -> Result<(), CommError> {
        self.recv_raw(buf, Some(src), mpi_tag(tag)? << 8, false, "recv").map(|_| ())
    }

    fn recv_add(&self, buf: &mut [f32], src: usize, tag: u32) -> Result<(), CommError> {
        self.recv_raw(buf, Some(src), mpi_tag(tag)? << 8, true, "recv").map(|_| ())
    }

    fn recv_any(&self, buf: &mut [f32], tag: u32) -> Result<usize, CommError> {
        self.recv_raw(buf, None, mpi_tag(tag)? << 8, false, "recv_any")
    }

    fn barrier(&self) -> Result<(), CommError> {
        self.reap(false);
        let _w = self.watch.enter("barrier", usize::MAX);
        // SAFETY: a live communicator.
        self.check("barrier", unsafe { ffi::MPI_Barrier(self.comm) })
    }

    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// `MPI_Allreduce`; from `LARGE` bytes on, `MPI_Reduce_scatter` + `MPI_Allgatherv` (the
    /// ring's traffic, as `all_reduce_update`): Open MPI 4.1's `MPI_Allreduce` over TCP picks an
    /// algorithm for 3 processes that takes 2.6× the time of a ring at 4 MiB
    /// (bench/results/2026-11-30-plan-vs-cluster.md). At 2 processes over TCP both take turns
    /// between the directions unless the eager limit is raised (docs/mpi.md, "Over TCP").
    fn all_reduce_direct(&self, buf: &mut [f32]) -> Result<(), CommError> {
        const LARGE: usize = 256 << 10;
        if self.size < 2 || buf.len() * 4 < LARGE || buf.len() > i32::MAX as usize {
            return self.mpi_all_reduce(buf);
        }
        let ranges = self.reduce_scatter_inplace(buf)?;
        self.all_gather_ranges_inplace(buf, &ranges)
    }

    fn all_reduce_update_direct(
        &self,
        grads: &mut [f32],
        params: &mut [f32],
        update: &mut Update<'_>,
    ) -> Result<(), CommError> {
        if grads.len() > i32::MAX as usize {
            return self.too_long("all_reduce_update", grads.len());
        }
        let ranges = self.reduce_scatter_inplace(grads)?;
        let mine = ranges[self.rank].clone();
        update(mine.clone(), &mut params[mine.clone()], &grads[mine]);
        self.all_gather_ranges_inplace(params, &ranges)
    }

    fn abort(&self, msg: &str) {
        self.abort_with(msg, 1)
    }

    fn abort_with(&self, msg: &str, code: i32) {
        eprintln!("error: rank {} failed: {msg}", self.watch.world_rank());
        // SAFETY: ends every process of the job; does not return.
        unsafe { ffi::MPI_Abort(ffi::RSMPI_COMM_WORLD, code.max(1)) };
    }

    fn split(&self, color: usize, key: usize) -> Result<Box<dyn Communicator>, CommError> {
        let mut comm: ffi::MPI_Comm = unsafe { ffi::RSMPI_COMM_NULL };
        // SAFETY: collective over this communicator; the result is a new communicator.
        self.check("split", unsafe { ffi::MPI_Comm_split(self.comm, color as c_int, key as c_int, &mut comm) })?;
        unsafe { set_errors_return(comm) };
        let (rank, size) = unsafe { rank_size(comm)? };
        Ok(Box::new(MpiComm::new(comm, rank, size, self.algorithm, self.watch.clone())))
    }

    fn spans_processes(&self) -> bool {
        true
    }

    fn values_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn broadcast_into(&self, buf: &mut [f32], root: usize) -> Result<(), CommError> {
        self.check_rank("broadcast", root)?;
        let _w = self.watch.enter("broadcast", root);
        for piece in pieces(buf.len()) {
            let p = &mut buf[piece];
            // SAFETY: a live buffer of `p.len()` floats on every rank.
            self.check("broadcast", unsafe {
                ffi::MPI_Bcast(
                    p.as_mut_ptr() as *mut c_void,
                    p.len() as c_int,
                    ffi::RSMPI_FLOAT,
                    root as c_int,
                    self.comm,
                )
            })?;
        }
        if self.rank == root {
            self.sent.fetch_add(buf.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    fn reduce_scatter_into(&self, send: &[f32], recv: &mut [f32]) -> Result<(), CommError> {
        let (n, size) = (send.len(), self.size);
        let mine = even_range(n, self.rank, size);
        if recv.len() != mine.len() {
            return Err(CommError::Length {
                op: "reduce_scatter",
                rank: self.rank,
                peer: self.rank,
                expected: mine.len(),
                got: recv.len(),
            });
        }
        if n > i32::MAX as usize {
            return self.too_long("reduce_scatter", n);
        }
        let counts: Vec<c_int> = (0..size).map(|r| even_range(n, r, size).len() as c_int).collect();
        let _w = self.watch.enter("reduce_scatter", usize::MAX);
        // SAFETY: `send` holds all chunks, `recv` this rank's.
        self.check("reduce_scatter", unsafe {
            ffi::MPI_Reduce_scatter(
                send.as_ptr() as *const c_void,
                recv.as_mut_ptr() as *mut c_void,
                counts.as_ptr(),
                ffi::RSMPI_FLOAT,
                ffi::RSMPI_SUM,
                self.comm,
            )
        })
    }

    fn all_gather_into(&self, send: &[f32], recv: &mut [f32]) -> Result<(), CommError> {
        let (n, size) = (recv.len(), self.size);
        let ranges: Vec<Range<usize>> = (0..size).map(|r| even_range(n, r, size)).collect();
        let mine = ranges[self.rank].clone();
        if send.len() != mine.len() {
            return Err(CommError::Length {
                op: "all_gather",
                rank: self.rank,
                peer: self.rank,
                expected: mine.len(),
                got: send.len(),
            });
        }
        recv[mine].copy_from_slice(send);
        self.all_gather_ranges_inplace(recv, &ranges)
    }

    fn all_reduce_into(&self, buf: &mut [f32]) -> Result<(), CommError> {
        match self.algorithm {
            Algorithm::Direct => self.all_reduce_direct(buf),
            Algorithm::Ring => algorithms::all_reduce_ring(self, buf),
            Algorithm::Tree => algorithms::all_reduce_tree(self, buf),
            Algorithm::Naive => algorithms::all_reduce_naive(self, buf),
        }
    }
}
