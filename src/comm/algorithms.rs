//! Collective algorithms as functions over point-to-point messages, so every transport gets them
//! and they are tested against each other (the naive one is the reference).
//!
//! Buffers of any length work (0, fewer values than ranks, uneven chunks). A collective must be
//! called by every rank of the group in the same order, from one thread per rank at a time; the
//! tags below are reserved for them.

use super::{CommError, Communicator};
use crate::ranges::even_range;

const TAG_NAIVE: u32 = 0xC000_0001;
const TAG_RING_RS: u32 = 0xC000_0002;
const TAG_RING_AG: u32 = 0xC000_0003;
const TAG_TREE: u32 = 0xC000_0004;
const TAG_BCAST: u32 = 0xC000_0005;

/// Reference all-reduce: rank 0 adds everyone's buffer in rank order, then sends the sum back.
pub fn all_reduce_naive<C: Communicator + ?Sized>(c: &C, buf: &mut [f32]) -> Result<(), CommError> {
    let (rank, size) = (c.rank(), c.size());
    if size == 1 {
        return Ok(());
    }
    if rank == 0 {
        for src in 1..size {
            c.recv_add(buf, src, TAG_NAIVE)?;
        }
        for dst in 1..size {
            c.send(buf, dst, TAG_NAIVE)?;
        }
        Ok(())
    } else {
        c.send(buf, 0, TAG_NAIVE)?;
        c.recv(buf, 0, TAG_NAIVE)
    }
}

/// Ring all-reduce (Patarasuk & Yuan; what NCCL and Horovod use): a reduce-scatter and an
/// all-gather around the ring, each rank sending 2(P−1)/P of the buffer in total.
pub fn all_reduce_ring<C: Communicator + ?Sized>(c: &C, buf: &mut [f32]) -> Result<(), CommError> {
    ring_reduce_scatter_inplace(c, buf)?;
    ring_all_gather_inplace(c, buf)
}

/// The first half of the ring all-reduce: afterwards this rank's chunk of `buf`
/// (`even_range(len, rank, size)`) holds the sum over ranks; the other chunks hold partial sums.
pub fn ring_reduce_scatter_inplace<C: Communicator + ?Sized>(c: &C, buf: &mut [f32]) -> Result<(), CommError> {
    let (rank, size) = (c.rank(), c.size());
    let n = buf.len();
    let (next, prev) = ((rank + 1) % size, (rank + size - 1) % size);
    let chunk = |i: usize| even_range(n, i % size, size);
    // After step s, the chunk received is the sum of s + 2 ranks; the last one is chunk `rank`.
    for s in 0..size.saturating_sub(1) {
        let send = chunk(rank + 2 * size - s - 1);
        let recv = chunk(rank + 2 * size - s - 2);
        c.send(&buf[send], next, TAG_RING_RS)?;
        c.recv_add(&mut buf[recv], prev, TAG_RING_RS)?;
    }
    Ok(())
}

/// The second half: every rank's chunk of `buf` is passed around the ring to all ranks.
pub fn ring_all_gather_inplace<C: Communicator + ?Sized>(c: &C, buf: &mut [f32]) -> Result<(), CommError> {
    let (rank, size) = (c.rank(), c.size());
    let n = buf.len();
    let (next, prev) = ((rank + 1) % size, (rank + size - 1) % size);
    let chunk = |i: usize| even_range(n, i % size, size);
    for s in 0..size.saturating_sub(1) {
        let send = chunk(rank + 2 * size - s);
        let recv = chunk(rank + 2 * size - s - 1);
        c.send(&buf[send], next, TAG_RING_AG)?;
        c.recv(&mut buf[recv], prev, TAG_RING_AG)?;
    }
    Ok(())
}

/// Fixed-order all-reduce: ranks are the leaves of a pairwise tree in rank order (level l adds
/// rank r + 2^l into rank r), then rank 0 broadcasts. The additions do not depend on timing, and
/// when each of P = 2^k ranks holds the pairwise sum of its 2^j consecutive leaves (see
/// `pairwise_sum`), the result is bitwise the pairwise sum of all 2^(j+k) leaves for every P.
pub fn all_reduce_tree<C: Communicator + ?Sized>(c: &C, buf: &mut [f32]) -> Result<(), CommError> {
    let (rank, size) = (c.rank(), c.size());
    let mut stride = 1;
    while stride < size {
        if rank % (2 * stride) == 0 {
            if rank + stride < size {
                c.recv_add(buf, rank + stride, TAG_TREE)?;
            }
        } else {
            c.send(buf, rank - stride, TAG_TREE)?;
            break;
        }
        stride *= 2;
    }
    broadcast(c, buf, 0)
}

/// Binomial-tree broadcast of `root`'s buffer (log2 P rounds).
pub fn broadcast<C: Communicator + ?Sized>(c: &C, buf: &mut [f32], root: usize) -> Result<(), CommError> {
    let (rank, size) = (c.rank(), c.size());
    if root >= size {
        return Err(CommError::Invalid(format!("broadcast: root {root} out of range for a group of {size}")));
    }
    let v = (rank + size - root) % size;
    let mut mask = 1;
    while mask < size {
        if v & mask != 0 {
            c.recv(buf, (v - mask + root) % size, TAG_BCAST)?;
            break;
        }
        mask <<= 1;
    }
    mask >>= 1;
    while mask > 0 {
        if v + mask < size {
            c.send(buf, (v + mask + root) % size, TAG_BCAST)?;
        }
        mask >>= 1;
    }
    Ok(())
}

/// Ring reduce-scatter: `recv` (length `even_range(send.len(), rank, size).len()`) gets this
/// rank's chunk of the sum of every rank's `send`.
pub fn reduce_scatter_ring<C: Communicator + ?Sized>(c: &C, send: &[f32], recv: &mut [f32]) -> Result<(), CommError> {
    let (rank, size) = (c.rank(), c.size());
    let n = send.len();
    let chunk = |i: usize| even_range(n, i % size, size);
    let mine = chunk(rank);
    if recv.len() != mine.len() {
        return Err(CommError::Length {
            op: "reduce_scatter",
            rank,
            peer: rank,
            expected: mine.len(),
            got: recv.len(),
        });
    }
    if size == 1 {
        recv.copy_from_slice(send);
        return Ok(());
    }
    let (next, prev) = ((rank + 1) % size, (rank + size - 1) % size);
    // The partial sum travelling through this rank; chunks differ in length by at most one.
    let mut acc = Vec::with_capacity(mine.len() + 1);
    for s in 0..size - 1 {
        if s == 0 {
            c.send(&send[chunk(rank + 2 * size - 1)], next, TAG_RING_RS)?;
        } else {
            c.send(&acc, next, TAG_RING_RS)?;
        }
        let k = chunk(rank + 2 * size - s - 2);
        acc.clear();
        acc.extend_from_slice(&send[k]);
        c.recv_add(&mut acc, prev, TAG_RING_RS)?;
    }
    recv.copy_from_slice(&acc);
    Ok(())
}

/// Ring all-gather: `recv` (the whole buffer, chunked by `even_range`) gets every rank's `send`
/// in its chunk.
pub fn all_gather_ring<C: Communicator + ?Sized>(c: &C, send: &[f32], recv: &mut [f32]) -> Result<(), CommError> {
    let (rank, size) = (c.rank(), c.size());
    let mine = even_range(recv.len(), rank, size);
    if send.len() != mine.len() {
        return Err(CommError::Length { op: "all_gather", rank, peer: rank, expected: mine.len(), got: send.len() });
    }
    recv[mine].copy_from_slice(send);
    ring_all_gather_inplace(c, recv)
}

/// Pairwise (balanced tree) sum of `leaves` into `leaves[0]`: level l adds leaf i + 2^l into
/// leaf i. With `all_reduce_tree` this fixes the whole summation tree of `--deterministic`.
pub fn pairwise_sum(leaves: &mut [Vec<f32>]) {
    let mut stride = 1;
    while stride < leaves.len() {
        let mut i = 0;
        while i + stride < leaves.len() {
            let (a, b) = leaves.split_at_mut(i + stride);
            for (x, y) in a[i].iter_mut().zip(&b[0]) {
                *x += y;
            }
            i += 2 * stride;
        }
        stride *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comm::{local::DEFAULT_STALL, Algorithm, LocalComm};
    use crate::tensor::rng::Rng;

    /// Runs `f` on every rank of a thread world of `size`.
    fn on_ranks<R: Send>(size: usize, f: impl Fn(&LocalComm) -> R + Sync) -> Vec<R> {
        let comms = LocalComm::world(size, Algorithm::Ring, DEFAULT_STALL);
        std::thread::scope(|s| {
            let hs: Vec<_> = comms.iter().map(|c| s.spawn(|| f(c))).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    /// Integer-valued data so that every summation order gives the exact same sum.
    fn data(rank: usize, n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7 + rank * 13) % 23) as f32 - 11.0).collect()
    }

    fn expected(size: usize, n: usize) -> Vec<f32> {
        let mut e = vec![0.0; n];
        for r in 0..size {
            for (x, d) in e.iter_mut().zip(data(r, n)) {
                *x += d;
            }
        }
        e
    }

    type AllReduce = fn(&LocalComm, &mut [f32]) -> Result<(), CommError>;

    #[test]
    fn all_reduce_algorithms_agree_with_naive_for_all_sizes() {
        let direct: AllReduce = |c, b| c.all_reduce_direct(b);
        let algos: [(&str, AllReduce); 4] = [
            ("naive", all_reduce_naive::<LocalComm>),
            ("ring", all_reduce_ring::<LocalComm>),
            ("tree", all_reduce_tree::<LocalComm>),
            ("direct", direct),
        ];
        for p in 1..=8usize {
            for n in [0, 1, 7, p.saturating_sub(1), 1_000_003] {
                let want = expected(p, n);
                for (name, f) in algos {
                    let out = on_ranks(p, |c| {
                        let mut b = data(c.rank(), n);
                        f(c, &mut b).unwrap();
                        b
                    });
                    for (r, o) in out.iter().enumerate() {
                        assert!(o == &want, "{name} P={p} n={n} rank {r} differs");
                    }
                }
            }
        }
    }

    #[test]
    fn ring_on_random_floats_is_close_to_naive_and_identical_on_every_rank() {
        for p in [2, 3, 5] {
            let n = 10_007;
            let input = |r: usize| {
                let mut rng = Rng::new(r as u64);
                (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect::<Vec<f32>>()
            };
            let ring = on_ranks(p, |c| {
                let mut b = input(c.rank());
                all_reduce_ring(c, &mut b).unwrap();
                b
            });
            let naive = on_ranks(p, |c| {
                let mut b = input(c.rank());
                all_reduce_naive(c, &mut b).unwrap();
                b
            });
            for r in 1..p {
                assert!(ring[r] == ring[0], "ring results differ between ranks");
            }
            for (a, b) in ring[0].iter().zip(&naive[0]) {
                assert!((a - b).abs() <= 1e-5, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn all_reduce_update_updates_each_chunk_once_and_gathers_the_parameters() {
        for alg in [Algorithm::Direct, Algorithm::Ring, Algorithm::Tree, Algorithm::Naive] {
            for p in 1..=5usize {
                for n in [0, 1, 7, 1003] {
                    let want = expected(p, n);
                    let comms = LocalComm::world(p, alg, DEFAULT_STALL);
                    let out: Vec<(Vec<f32>, Vec<std::ops::Range<usize>>)> = std::thread::scope(|s| {
                        let hs: Vec<_> = comms
                            .iter()
                            .map(|c| {
                                s.spawn(move || {
                                    let mut grads = data(c.rank(), n);
                                    // Every rank starts from the same parameters, as replicas do.
                                    let mut params: Vec<f32> = (0..n).map(|i| i as f32).collect();
                                    let mut seen = Vec::new();
                                    c.all_reduce_update(&mut grads, &mut params, &mut |r, p, g| {
                                        for (x, y) in p.iter_mut().zip(g) {
                                            *x -= y;
                                        }
                                        seen.push(r);
                                    })
                                    .unwrap();
                                    (params, seen)
                                })
                            })
                            .collect();
                        hs.into_iter().map(|h| h.join().unwrap()).collect()
                    });
                    let updated: Vec<f32> = (0..n).map(|i| i as f32 - want[i]).collect();
                    for (r, (params, seen)) in out.iter().enumerate() {
                        assert!(params == &updated, "{alg:?} P={p} n={n} rank {r}");
                        assert_eq!(seen, &vec![even_range(n, r, p)], "{alg:?} P={p} n={n} rank {r}");
                    }
                }
            }
        }
    }

    #[test]
    fn broadcast_from_every_root() {
        for p in 1..=7 {
            for root in 0..p {
                let out = on_ranks(p, |c| {
                    let mut b = data(c.rank(), 11);
                    broadcast(c, &mut b, root).unwrap();
                    b
                });
                assert!(out.iter().all(|o| o == &data(root, 11)), "P={p} root={root}");
            }
        }
        let out = on_ranks(2, |c| broadcast(c, &mut [0.0], 5));
        assert!(matches!(out[0], Err(CommError::Invalid(_))));
    }

    #[test]
    fn reduce_scatter_and_all_gather_compose_to_all_reduce() {
        for p in 1..=6usize {
            for n in [0, 1, 7, p.saturating_sub(1), 1003] {
                let want = expected(p, n);
                let out = on_ranks(p, |c| {
                    let mine = even_range(n, c.rank(), c.size());
                    let mut part = vec![0.0; mine.len()];
                    reduce_scatter_ring(c, &data(c.rank(), n), &mut part).unwrap();
                    assert_eq!(part, want[mine], "reduce-scatter P={p} n={n}");
                    let mut full = vec![f32::NAN; n];
                    all_gather_ring(c, &part, &mut full).unwrap();
                    full
                });
                assert!(out.iter().all(|o| o == &want), "P={p} n={n}");
            }
        }
    }

    #[test]
    fn tree_with_pairwise_leaves_is_bitwise_independent_of_the_rank_count() {
        // 8 leaves of random floats (so order matters); P ranks each own 8/P consecutive leaves.
        let leaves: Vec<Vec<f32>> = (0..8)
            .map(|l| {
                let mut rng = Rng::new(100 + l);
                (0..4099).map(|_| rng.uniform(-1.0, 1.0) * 10f32.powi(l as i32 % 4)).collect()
            })
            .collect();
        let mut reference = leaves.clone();
        pairwise_sum(&mut reference);
        let mut sequential = leaves[0].clone();
        for l in &leaves[1..] {
            for (a, b) in sequential.iter_mut().zip(l) {
                *a += b;
            }
        }
        assert!(sequential != reference[0], "test data must make summation order visible");
        for p in [1, 2, 4, 8] {
            let out = on_ranks(p, |c| {
                let per = 8 / p;
                let mut mine = leaves[c.rank() * per..(c.rank() + 1) * per].to_vec();
                pairwise_sum(&mut mine);
                let mut b = mine.swap_remove(0);
                all_reduce_tree(c, &mut b).unwrap();
                b
            });
            assert!(out.iter().all(|o| o == &reference[0]), "P={p}");
        }
    }
}
