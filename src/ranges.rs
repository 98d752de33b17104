//! Even splits of `0..n` into contiguous parts: the one rule behind a rank's shard of a global
//! batch (data), its chunk of a buffer in reduce-scatter/all-gather (comm), a parameter server's
//! share of the parameters and a tensor split's channels (parallel). A leaf: it imports nothing.

use std::ops::Range;

/// Part `part` of `parts` of `0..n`: contiguous parts whose lengths differ by at most one, the
/// first `n % parts` parts taking one more. A part is empty when `n < parts`; `parts` 0 counts as 1.
pub fn even_range(n: usize, part: usize, parts: usize) -> Range<usize> {
    let parts = parts.max(1);
    let (base, extra) = (n / parts, n % parts);
    let start = part * base + part.min(extra);
    let len = base + usize::from(part < extra);
    start.min(n)..(start + len).min(n)
}

#[cfg(test)]
mod tests {
    use super::even_range;

    #[test]
    fn shards_cover_the_global_batch_exactly() {
        for n in 0..20 {
            for world in 1..=5 {
                let mut next = 0;
                for r in 0..world {
                    let s = even_range(n, r, world);
                    assert_eq!(s.start, next, "n={n} world={world} rank={r}");
                    assert!(s.len() == n / world || s.len() == n / world + 1);
                    next = s.end;
                }
                assert_eq!(next, n);
            }
        }
        assert_eq!(even_range(10, 0, 4), 0..3);
        assert_eq!(even_range(10, 3, 4), 8..10);
    }
}
