//! `LocalComm`: the communicator for ranks that are threads of one process.
//!
//! Each rank has one mailbox, a queue of `(src, tag, values)` messages behind a mutex and a
//! condition variable. `send` copies the values into a pooled buffer and queues it (it never waits
//! for the receiver, like a buffered MPI send); `recv` takes the first message from `src` with
//! `tag` (per-pair order is kept, as in MPI). Waits poll every `POLL` so a failed group or a
//! stall is noticed within a bounded time: `abort` marks the whole world failed, and a wait longer
//! than the stall timeout fails naming the rank it waits for.

mod direct;

use super::{Algorithm, CommError, Communicator, Update};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often a blocked call re-checks the failure flag.
const POLL: Duration = Duration::from_millis(20);

/// Default time a call may wait for a peer before it fails.
pub const DEFAULT_STALL: Duration = Duration::from_secs(300);

/// Failure state shared by a world and all its sub-groups.
struct Failure {
    flag: AtomicBool,
    first: Mutex<Option<(usize, String)>>,
    /// Per world rank: inside a blocking call right now (to name the culprits of a stall).
    waiting: Vec<AtomicBool>,
    /// Per world rank: the call it waits in (op, world rank of the peer or `usize::MAX`, since
    /// when), for the stall watchdog's report. Set only once a call has to wait.
    ops: Vec<Mutex<WaitingIn>>,
}

/// A call a rank waits in: (op, world rank of the peer or `usize::MAX`, since when).
type WaitingIn = Option<(&'static str, usize, Instant)>;

impl Failure {
    fn new(world: usize) -> Failure {
        Failure {
            flag: AtomicBool::new(false),
            first: Mutex::new(None),
            waiting: (0..world).map(|_| AtomicBool::new(false)).collect(),
            ops: (0..world).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// Marks the group failed (the first failure is the one reported).
    fn fail(&self, rank: usize, msg: &str) {
        let mut first = lock(&self.first);
        if first.is_none() {
            *first = Some((rank, msg.to_string()));
        }
        self.flag.store(true, Ordering::Release);
    }

    /// World ranks not inside a blocking call, other than `me`.
    fn not_waiting(&self, me: usize) -> Vec<usize> {
        (0..self.waiting.len()).filter(|&r| r != me && !self.waiting[r].load(Ordering::Acquire)).collect()
    }

    fn check(&self) -> Result<(), CommError> {
        if !self.flag.load(Ordering::Acquire) {
            return Ok(());
        }
        let (rank, msg) = lock(&self.first).clone().unwrap_or((usize::MAX, String::new()));
        Err(CommError::PeerFailed { rank, msg })
    }
}

struct Msg {
    src: usize,
    tag: u32,
    data: Vec<f32>,
}

#[derive(Default)]
struct Mailbox {
    queue: Mutex<VecDeque<Msg>>,
    ready: Condvar,
}

/// State of one group (the world or a sub-group made by `split`).
struct Group {
    /// World rank of each member.
    world_ranks: Vec<usize>,
    boxes: Vec<Mailbox>,
    /// Buffers that received messages hand back for later sends.
    pool: Mutex<Vec<Vec<f32>>>,
    barrier: Mutex<(usize, u64)>,
    barrier_cv: Condvar,
    /// Pending `split` calls: round -> (color, key) per member.
    splits: Mutex<HashMap<u64, SplitRound>>,
    splits_cv: Condvar,
    failure: Arc<Failure>,
    stall: Duration,
    algorithm: Algorithm,
    /// Each rank's buffer during `all_reduce_direct`.
    shared: Vec<SharedBuf>,
}

/// A buffer a rank exposes to the others for the duration of one shared-memory collective.
struct SharedBuf {
    ptr: std::sync::atomic::AtomicPtr<f32>,
    /// The parameters of `all_reduce_update` (null for a plain all-reduce).
    aux: std::sync::atomic::AtomicPtr<f32>,
    len: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct SplitRound {
    entries: Vec<Option<(usize, usize)>>,
    groups: HashMap<usize, Arc<Group>>,
    taken: usize,
}

impl Group {
    fn new(world_ranks: Vec<usize>, failure: Arc<Failure>, stall: Duration, algorithm: Algorithm) -> Group {
        let n = world_ranks.len();
        Group {
            world_ranks,
            boxes: (0..n).map(|_| Mailbox::default()).collect(),
            pool: Mutex::new(Vec::new()),
            barrier: Mutex::new((0, 0)),
            barrier_cv: Condvar::new(),
            splits: Mutex::new(HashMap::new()),
            splits_cv: Condvar::new(),
            failure,
            stall,
            algorithm,
            shared: (0..n)
                .map(|_| SharedBuf {
                    ptr: std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()),
                    aux: std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()),
                    len: std::sync::atomic::AtomicUsize::new(0),
                })
                .collect(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking rank must not poison the others' communication: the data stays consistent
    // because every critical section here is a plain queue/counter update.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One rank's handle on a group of thread ranks.
pub struct LocalComm {
    group: Arc<Group>,
    rank: usize,
    sent: AtomicU64,
    split_round: AtomicU64,
}

impl LocalComm {
    /// A world of `size` ranks; hand element i to the thread that plays rank i.
    pub fn world(size: usize, algorithm: Algorithm, stall: Duration) -> Vec<LocalComm> {
        let group = Arc::new(Group::new((0..size).collect(), Arc::new(Failure::new(size)), stall, algorithm));
        (0..size).map(|rank| LocalComm::member(group.clone(), rank)).collect()
    }

    /// Another handle on this rank (for a supervisor that must be able to `abort` the group
    /// after the rank's own handle has moved into its thread). It must not communicate.
    pub fn twin(&self) -> LocalComm {
        LocalComm::member(self.group.clone(), self.rank)
    }

    fn member(group: Arc<Group>, rank: usize) -> LocalComm {
        LocalComm { group, rank, sent: AtomicU64::new(0), split_round: AtomicU64::new(0) }
    }

    fn check_rank(&self, op: &str, r: usize) -> Result<(), CommError> {
        if r >= self.group.boxes.len() {
            return Err(CommError::Invalid(format!(
                "{op}: rank {r} out of range for a group of {}",
                self.group.boxes.len()
            )));
        }
        Ok(())
    }

    /// Waits on `cv` until `ready(&mut guard)` returns Some, failing on abort or stall.
    fn wait<'a, T, R>(
        &self,
        op: &'static str,
        peer: usize,
        mut guard: MutexGuard<'a, T>,
        cv: &Condvar,
        mut ready: impl FnMut(&mut T) -> Option<R>,
    ) -> Result<R, CommError> {
        if let Some(r) = ready(&mut guard) {
            return Ok(r);
        }
        let start = Instant::now();
        let me = self.group.world_ranks[self.rank];
        let failure = &self.group.failure;
        failure.waiting[me].store(true, Ordering::Release);
        let peer_world = self.group.world_ranks.get(peer).copied().unwrap_or(usize::MAX);
        *lock(&failure.ops[me]) = Some((op, peer_world, start));
        let out = loop {
            // Readiness is checked before failure (below, after each wake-up): a barrier that
            // completed lets every participant through, which `all_reduce_direct` relies on.
            if let Err(e) = failure.check() {
                break Err(e);
            }
            let waited = start.elapsed();
            if waited >= self.group.stall {
                let e = CommError::Timeout {
                    op,
                    rank: me,
                    peer: self.group.world_ranks.get(peer).copied().unwrap_or(peer),
                    secs: waited.as_secs_f64(),
                    stuck: failure.not_waiting(me),
                };
                // A stall fails the whole group, marked while this wait's lock is held, so that
                // e.g. a barrier this rank leaves can no longer complete for the others.
                failure.fail(me, &e.to_string());
                break Err(e);
            }
            guard = cv.wait_timeout(guard, POLL).unwrap_or_else(|e| e.into_inner()).0;
            if let Some(r) = ready(&mut guard) {
                break Ok(r);
            }
        };
        failure.waiting[me].store(false, Ordering::Release);
        *lock(&failure.ops[me]) = None;
        out
    }

    /// What every world rank waits in right now: (op, the peer it waits for, how long), `None`
    /// for a rank not inside a blocking call. For the stall watchdog.
    pub fn waits(&self) -> Vec<Option<(&'static str, Option<usize>, Duration)>> {
        let failure = &self.group.failure;
        failure
            .ops
            .iter()
            .map(|o| lock(o).map(|(op, peer, since)| (op, (peer != usize::MAX).then_some(peer), since.elapsed())))
            .collect()
    }

    /// Takes the first message from `src` (any source when None) with `tag`, runs `f` on it and
    /// recycles its buffer. Returns the source.
    fn take(
        &self,
        op: &'static str,
        src: Option<usize>,
        tag: u32,
        f: impl FnOnce(usize, &[f32]) -> Result<(), CommError>,
    ) -> Result<usize, CommError> {
        let mailbox = &self.group.boxes[self.rank];
        let q = lock(&mailbox.queue);
        let msg = self.wait(op, src.unwrap_or(usize::MAX), q, &mailbox.ready, |q| {
            let i = q.iter().position(|m| m.tag == tag && src.is_none_or(|s| s == m.src))?;
            q.remove(i)
        })?;
        let res = f(msg.src, &msg.data);
        let from = msg.src;
        lock(&self.group.pool).push(msg.data);
        res.map(|_| from)
    }

    fn length_check(&self, op: &'static str, peer: usize, expected: usize, got: usize) -> Result<(), CommError> {
        if expected != got {
            return Err(CommError::Length { op, rank: self.rank, peer, expected, got });
        }
        Ok(())
    }
}

impl Communicator for LocalComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.group.boxes.len()
    }

    fn send(&self, buf: &[f32], dest: usize, tag: u32) -> Result<(), CommError> {
        self.check_rank("send", dest)?;
        self.group.failure.check()?;
        let mut data = {
            let mut pool = lock(&self.group.pool);
            match pool.iter().position(|v| v.capacity() >= buf.len()) {
                Some(i) => pool.swap_remove(i),
                None => pool.pop().unwrap_or_default(),
            }
        };
        data.clear();
        data.extend_from_slice(buf);
        let mailbox = &self.group.boxes[dest];
        lock(&mailbox.queue).push_back(Msg { src: self.rank, tag, data });
        mailbox.ready.notify_all();
        self.sent.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn recv(&self, buf: &mut [f32], src: usize, tag: u32) -> Result<(), CommError> {
        self.check_rank("recv", src)?;
        self.take("recv", Some(src), tag, |_, data| {
            self.length_check("recv", src, buf.len(), data.len())?;
            buf.copy_from_slice(data);
            Ok(())
        })
        .map(|_| ())
    }

    fn recv_add(&self, buf: &mut [f32], src: usize, tag: u32) -> Result<(), CommError> {
        self.check_rank("recv_add", src)?;
        self.take("recv_add", Some(src), tag, |_, data| {
            self.length_check("recv_add", src, buf.len(), data.len())?;
            for (b, d) in buf.iter_mut().zip(data) {
                *b += d;
            }
            Ok(())
        })
        .map(|_| ())
    }

    fn recv_any(&self, buf: &mut [f32], tag: u32) -> Result<usize, CommError> {
        self.take("recv_any", None, tag, |src, data| {
            self.length_check("recv_any", src, buf.len(), data.len())?;
            buf.copy_from_slice(data);
            Ok(())
        })
    }

    fn barrier(&self) -> Result<(), CommError> {
        let size = self.size();
        let mut g = lock(&self.group.barrier);
        // Checked under the barrier lock: once a rank has left a barrier because the group
        // failed, no later arrival can complete it.
        self.group.failure.check()?;
        let generation = g.1;
        g.0 += 1;
        if g.0 == size {
            *g = (0, generation + 1);
            self.group.barrier_cv.notify_all();
            return Ok(());
        }
        self.wait("barrier", usize::MAX, g, &self.group.barrier_cv, |g| (g.1 != generation).then_some(()))
    }

    fn algorithm(&self) -> Algorithm {
        self.group.algorithm
    }

    fn all_reduce_direct(&self, buf: &mut [f32]) -> Result<(), CommError> {
        self.direct(buf, None)
    }

    fn all_reduce_update_direct(
        &self,
        grads: &mut [f32],
        params: &mut [f32],
        update: &mut Update<'_>,
    ) -> Result<(), CommError> {
        self.direct(grads, Some((params, update)))
    }
    fn abort(&self, msg: &str) {
        self.group.failure.fail(self.group.world_ranks[self.rank], msg);
        // Waiters also poll, so a wake-up lost in a race costs at most one poll interval.
        for b in &self.group.boxes {
            b.ready.notify_all();
        }
        self.group.barrier_cv.notify_all();
        self.group.splits_cv.notify_all();
    }

    fn split(&self, color: usize, key: usize) -> Result<Box<dyn Communicator>, CommError> {
        let size = self.size();
        let round = self.split_round.fetch_add(1, Ordering::Relaxed);
        let mut splits = lock(&self.group.splits);
        let entry = splits.entry(round).or_default();
        if entry.entries.is_empty() {
            entry.entries = vec![None; size];
        }
        entry.entries[self.rank] = Some((color, key));
        self.group.splits_cv.notify_all();
        let (group, my_rank) = self.wait("split", usize::MAX, splits, &self.group.splits_cv, |splits| {
            let r = splits.get_mut(&round)?;
            if r.entries.iter().any(Option::is_none) {
                return None;
            }
            let mut members: Vec<(usize, usize)> = r
                .entries
                .iter()
                .enumerate()
                .filter_map(|(i, e)| e.filter(|e| e.0 == color).map(|e| (e.1, i)))
                .collect();
            members.sort();
            let my_rank = members.iter().position(|&(_, i)| i == self.rank).expect("caller is a member of its color");
            let parent = &self.group;
            let group = r
                .groups
                .entry(color)
                .or_insert_with(|| {
                    let world = members.iter().map(|&(_, i)| parent.world_ranks[i]).collect();
                    Arc::new(Group::new(world, parent.failure.clone(), parent.stall, parent.algorithm))
                })
                .clone();
            r.taken += 1;
            if r.taken == size {
                splits.remove(&round);
            }
            Some((group, my_rank))
        })?;
        Ok(Box::new(LocalComm::member(group, my_rank)))
    }

    fn values_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    fn run<R: Send>(size: usize, stall: Duration, f: impl Fn(&LocalComm) -> R + Sync) -> Vec<R> {
        let comms = LocalComm::world(size, Algorithm::Ring, stall);
        thread::scope(|s| {
            let hs: Vec<_> = comms.iter().map(|c| s.spawn(|| f(c))).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn messages_match_by_source_and_tag_in_order() {
        let out = run(3, DEFAULT_STALL, |c| {
            if c.rank() == 0 {
                let mut a = [0.0f32; 2];
                let mut got = vec![];
                // Tag 2 from rank 2 first, although rank 1's tag-1 messages may be queued earlier.
                c.recv(&mut a, 2, 2).unwrap();
                got.push(a);
                c.recv(&mut a, 1, 1).unwrap();
                got.push(a);
                c.recv(&mut a, 1, 1).unwrap();
                got.push(a);
                let mut b = [1.0f32; 2];
                c.recv_add(&mut b, 2, 3).unwrap();
                got.push(b);
                got
            } else if c.rank() == 1 {
                c.send(&[1.0, 2.0], 0, 1).unwrap();
                c.send(&[3.0, 4.0], 0, 1).unwrap();
                vec![]
            } else {
                c.send(&[5.0, 6.0], 0, 2).unwrap();
                c.send(&[10.0, 20.0], 0, 3).unwrap();
                vec![]
            }
        });
        assert_eq!(out[0], vec![[5.0, 6.0], [1.0, 2.0], [3.0, 4.0], [11.0, 21.0]]);
    }

    #[test]
    fn wrong_length_is_an_error_not_a_panic() {
        let out = run(2, DEFAULT_STALL, |c| {
            if c.rank() == 0 {
                c.send(&[1.0, 2.0, 3.0], 1, 0).map(|_| ())
            } else {
                c.recv(&mut [0.0; 2], 0, 0)
            }
        });
        assert!(matches!(out[1], Err(CommError::Length { expected: 2, got: 3, .. })), "{:?}", out[1]);
    }

    #[test]
    fn abort_fails_the_waiting_ranks_naming_the_failed_one() {
        let out = run(4, DEFAULT_STALL, |c| {
            if c.rank() == 2 {
                thread::sleep(Duration::from_millis(30));
                c.abort("boom at step 3");
                Ok(())
            } else if c.rank() == 1 {
                c.barrier()
            } else {
                c.recv(&mut [0.0; 4], 2, 0)
            }
        });
        for r in [0, 1, 3] {
            assert_eq!(out[r], Err(CommError::PeerFailed { rank: 2, msg: "boom at step 3".into() }), "rank {r}");
        }
    }

    #[test]
    fn a_silent_peer_times_out_naming_it() {
        let out =
            run(2, Duration::from_millis(100), |c| if c.rank() == 0 { c.recv(&mut [0.0; 1], 1, 0) } else { Ok(()) });
        match &out[0] {
            Err(CommError::Timeout { op: "recv", rank: 0, peer: 1, stuck, .. }) => assert_eq!(stuck, &vec![1]),
            e => panic!("{e:?}"),
        }
        assert!(out[0].as_ref().unwrap_err().to_string().contains("waiting for rank 1"));
    }

    #[test]
    fn barrier_is_reusable_and_recv_any_reports_the_source() {
        let out = run(4, DEFAULT_STALL, |c| {
            for _ in 0..50 {
                c.barrier().unwrap();
            }
            if c.rank() == 0 {
                let mut seen = vec![];
                for _ in 1..4 {
                    let mut v = [0.0f32];
                    let s = c.recv_any(&mut v, 9).unwrap();
                    assert_eq!(v[0], s as f32 * 10.0);
                    seen.push(s);
                }
                seen.sort();
                seen
            } else {
                c.send(&[c.rank() as f32 * 10.0], 0, 9).unwrap();
                vec![]
            }
        });
        assert_eq!(out[0], vec![1, 2, 3]);
    }

    #[test]
    fn split_groups_by_color_ordered_by_key() {
        let out = run(6, DEFAULT_STALL, |c| {
            // Two groups: even and odd world ranks, reverse order by key.
            let sub = c.split(c.rank() % 2, 100 - c.rank()).unwrap();
            let mut v = [c.rank() as f32];
            sub.all_reduce_into(&mut v).unwrap();
            // A second split on the same world works too.
            let all = c.split(0, c.rank()).unwrap();
            let mut w = [1.0f32];
            all.all_reduce_into(&mut w).unwrap();
            (sub.rank(), sub.size(), v[0], all.size(), w[0])
        });
        assert_eq!(out[0], (2, 3, 6.0, 6, 6.0));
        assert_eq!(out[4], (0, 3, 6.0, 6, 6.0));
        assert_eq!(out[1], (2, 3, 9.0, 6, 6.0));
        assert_eq!(out[5], (0, 3, 9.0, 6, 6.0));
    }
}
