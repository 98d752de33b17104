//! The shared-memory collectives of `LocalComm`: `Algorithm::Direct` all-reduce and its fused
//! sharded-update variant. Ranks read each other's buffers in place between barriers instead of
//! exchanging messages.

use super::{lock, LocalComm};
use crate::comm::{CommError, Communicator, Update};
use crate::ranges::even_range;
use std::sync::atomic::Ordering;

impl LocalComm {
    /// The shared-memory all-reduce of `buf`, or with `then = (params, update)` the fused
    /// all-reduce + sharded update + all-gather of `params` (see `Communicator::all_reduce_update`).
    ///
    /// Every rank publishes its buffers; after a barrier, rank r sums chunk r of all ranks'
    /// buffers in rank order into its own (and updates its chunk of `params`); after a second
    /// barrier it copies every other chunk from its owner; a third barrier keeps every buffer
    /// alive until nobody reads it any more.
    // Long: the shared-memory all-reduce is one protocol (publish, reduce my chunk, gather) whose phases share the
    // barrier state.
    pub(super) fn direct(&self, buf: &mut [f32], then: Option<(&mut [f32], &mut Update<'_>)>) -> Result<(), CommError> {
        let (size, n) = (self.size(), buf.len());
        if size == 1 {
            if let Some((params, update)) = then {
                update(0..n, params, buf);
            }
            return Ok(());
        }
        let me = &self.group.shared[self.rank];
        let base = buf.as_mut_ptr();
        let (pbase, update) = match then {
            Some((params, update)) => (params.as_mut_ptr(), Some(update)),
            None => (std::ptr::null_mut(), None),
        };
        // No messages: count what the other ranks read from this rank's buffers (its chunk
        // of the others' sums, and its chunk of the result) — the traffic of a ring.
        self.sent.fetch_add((2 * (size - 1) * n / size) as u64, Ordering::Relaxed);
        me.ptr.store(base, Ordering::Release);
        me.aux.store(pbase, Ordering::Release);
        me.len.store(n, Ordering::Release);
        // Past this barrier every rank is inside this function, which has no failure point
        // until it returns: the two barriers below wait unconditionally, so no rank can leave
        // (and free or reuse its buffers) while another still reads them.
        self.barrier()?;
        let ptrs: Vec<*mut f32> = self.group.shared.iter().map(|s| s.ptr.load(Ordering::Acquire)).collect();
        let aux: Vec<*mut f32> = self.group.shared.iter().map(|s| s.aux.load(Ordering::Acquire)).collect();
        let lens: Vec<usize> = self.group.shared.iter().map(|s| s.len.load(Ordering::Acquire)).collect();
        let mismatch =
            lens.iter().position(|&l| l != n).or_else(|| aux.iter().position(|a| a.is_null() != pbase.is_null()));
        if let Some(q) = mismatch {
            self.barrier_unfailing();
            return Err(CommError::Length { op: "all_reduce", rank: self.rank, peer: q, expected: n, got: lens[q] });
        }
        // Phase 1: this rank's chunk := sum over ranks in rank order (the same on every rank).
        // Only this rank writes its chunk, and nobody writes what it reads.
        const BLOCK: usize = 2048;
        let mine = even_range(n, self.rank, size);
        let mut acc = [0.0f32; BLOCK];
        let mut start = mine.start;
        while start < mine.end {
            let len = BLOCK.min(mine.end - start);
            let acc = &mut acc[..len];
            // SAFETY: every pointer is a live buffer of n values (lengths checked above) that
            // its owner does not touch until the last barrier; [start, start+len) is in range
            // and no rank writes it during this phase except this one, below.
            unsafe {
                acc.copy_from_slice(std::slice::from_raw_parts(ptrs[0].add(start), len));
                for &p in &ptrs[1..] {
                    for (a, b) in acc.iter_mut().zip(std::slice::from_raw_parts(p.add(start), len)) {
                        *a += b;
                    }
                }
                std::ptr::copy_nonoverlapping(acc.as_ptr(), base.add(start), len);
            }
            start += len;
        }
        // The update of this rank's chunk; a panic in it is held until every rank is past the
        // last barrier.
        let mut panic = None;
        if let Some(update) = update {
            // SAFETY: chunk `mine` of this rank's buffers is touched by no other rank until the
            // next barrier.
            let (p, g) = unsafe {
                (
                    std::slice::from_raw_parts_mut(pbase.add(mine.start), mine.len()),
                    std::slice::from_raw_parts(base.add(mine.start), mine.len()),
                )
            };
            panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| update(mine.clone(), p, g))).err();
        }
        self.barrier_unfailing();
        // Phase 2: copy every other chunk from its owner, who only reads its own chunk now.
        let (src, dst) = if pbase.is_null() { (&ptrs, base) } else { (&aux, pbase) };
        for (q, &p) in src.iter().enumerate() {
            if q != self.rank {
                let r = even_range(n, q, size);
                // SAFETY: rank q's chunk is final and nobody writes it in this phase; this
                // rank's own chunk r is written only by this rank.
                unsafe { std::ptr::copy_nonoverlapping(p.add(r.start), dst.add(r.start), r.len()) };
            }
        }
        self.barrier_unfailing();
        if let Some(p) = panic {
            std::panic::resume_unwind(p);
        }
        Ok(())
    }

    /// A barrier that ignores failures and stalls: only for points every rank is certain to
    /// reach (inside `all_reduce_direct`).
    fn barrier_unfailing(&self) {
        let size = self.size();
        let mut g = lock(&self.group.barrier);
        let generation = g.1;
        g.0 += 1;
        if g.0 == size {
            *g = (0, generation + 1);
            self.group.barrier_cv.notify_all();
            return;
        }
        while g.1 == generation {
            g = self.group.barrier_cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}
