//! What this process waits in (for the stall watchdog), and byte gathers over MPI for small end-of-run reports (the timeline of every process), not for
//! training data: `MPI_Gather` of the lengths, then `MPI_Gatherv` of the bytes.

use super::MpiComm;
use crate::comm::CommError;
use mpi::ffi;
use std::ffi::c_void;
use std::os::raw::c_int;

impl MpiComm {
    /// The MPI call of this process that has waited longest, if any: (op, peer, how long).
    pub fn waiting_in(&self) -> Option<(&'static str, Option<usize>, std::time::Duration)> {
        self.watch.longest_call()
    }

    /// Gathers every rank's `mine` on `root`, in rank order; the other ranks get an empty list.
    /// Collective: every rank calls it with the same `root`.
    pub fn gather_bytes(&self, root: usize, mine: &[u8]) -> Result<Vec<Vec<u8>>, CommError> {
        self.check_rank("gather_bytes", root)?;
        if mine.len() > i32::MAX as usize {
            return self.too_long("gather_bytes", mine.len());
        }
        let _w = self.watch.enter("gather_bytes", usize::MAX);
        let len = mine.len() as c_int;
        let mut counts = vec![0 as c_int; self.size];
        // SAFETY: one int from every rank into `counts` (size ints) on the root.
        self.check("gather_bytes", unsafe {
            ffi::MPI_Gather(
                &len as *const c_int as *const c_void,
                1,
                ffi::RSMPI_INT32_T,
                counts.as_mut_ptr() as *mut c_void,
                1,
                ffi::RSMPI_INT32_T,
                root as c_int,
                self.comm,
            )
        })?;
        let mut displs = Vec::with_capacity(self.size);
        let mut total: usize = 0;
        for &c in &counts {
            displs.push(total as c_int);
            total += c.max(0) as usize;
        }
        if self.rank == root && total > i32::MAX as usize {
            return self.too_long("gather_bytes", total);
        }
        let mut all = vec![0u8; if self.rank == root { total } else { 0 }];
        // SAFETY: the root's buffer holds the sum of the counts it gathered; others pass none.
        self.check("gather_bytes", unsafe {
            ffi::MPI_Gatherv(
                mine.as_ptr() as *const c_void,
                len,
                ffi::RSMPI_UINT8_T,
                all.as_mut_ptr() as *mut c_void,
                counts.as_ptr(),
                displs.as_ptr(),
                ffi::RSMPI_UINT8_T,
                root as c_int,
                self.comm,
            )
        })?;
        if self.rank != root {
            return Ok(Vec::new());
        }
        Ok(counts
            .iter()
            .zip(&displs)
            .map(|(&c, &d)| all[d as usize..d as usize + c.max(0) as usize].to_vec())
            .collect())
    }
}
