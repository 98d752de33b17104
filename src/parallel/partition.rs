//! Pipeline stages balanced over a net's layers: one rule for `--strategy pipeline` (which cuts
//! the net it runs) and for `convoy plan` (which predicts that run), so the two cannot drift.

use std::ops::Range;

/// `stages` contiguous ranges of the layers `0..cost.len()`, each ending after a layer where
/// `can_cut_after` holds (no residual connection crosses the point) or at the last layer, whose
/// largest total cost is smallest. The layers between two cut points form one unit (a residual
/// block) that is never split. `Err(units)` when the net has only `units` such units, fewer than
/// `stages`.
pub fn balanced_stages(
    cost: &[f64],
    can_cut_after: impl Fn(usize) -> bool,
    stages: usize,
) -> Result<Vec<Range<usize>>, usize> {
    let n = cost.len();
    let starts: Vec<usize> =
        std::iter::once(0).chain((0..n.saturating_sub(1)).filter(|&j| can_cut_after(j)).map(|j| j + 1)).collect();
    if stages > starts.len() {
        return Err(starts.len());
    }
    let start = |u: usize| starts.get(u).copied().unwrap_or(n);
    let unit_cost: Vec<f64> = (0..starts.len()).map(|u| cost[start(u)..start(u + 1)].iter().sum()).collect();
    let cuts = balanced_cuts(&unit_cost, stages);
    Ok(cuts.windows(2).map(|w| start(w[0])..start(w[1])).collect())
}

/// Cut points 0 = c₀ < … < c_s = len of `cost` into `s` contiguous parts whose largest sum is
/// smallest (dynamic programming over prefix sums, O(s·n²): nets have at most a few hundred units).
fn balanced_cuts(cost: &[f64], s: usize) -> Vec<usize> {
    let n = cost.len();
    let prefix: Vec<f64> = std::iter::once(0.0)
        .chain(cost.iter().scan(0.0, |a, &c| {
            *a += c;
            Some(*a)
        }))
        .collect();
    let mut best = vec![vec![f64::INFINITY; n + 1]; s + 1];
    let mut from = vec![vec![0usize; n + 1]; s + 1];
    best[0][0] = 0.0;
    for k in 1..=s {
        for j in k..=n {
            for i in (k - 1)..j {
                let c = best[k - 1][i].max(prefix[j] - prefix[i]);
                if c < best[k][j] {
                    (best[k][j], from[k][j]) = (c, i);
                }
            }
        }
    }
    let mut cuts = vec![n];
    let mut j = n;
    for k in (1..=s).rev() {
        j = from[k][j];
        cuts.push(j);
    }
    cuts.reverse();
    cuts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_cuts_minimise_the_largest_part() {
        assert_eq!(balanced_cuts(&[1.0, 1.0, 1.0, 1.0], 2), vec![0, 2, 4]);
        assert_eq!(balanced_cuts(&[5.0, 1.0, 1.0, 1.0, 1.0, 1.0], 2), vec![0, 1, 6]);
        assert_eq!(balanced_cuts(&[1.0, 2.0, 3.0], 3), vec![0, 1, 2, 3]);
    }

    #[test]
    fn stages_end_only_where_a_cut_is_allowed() {
        // Layers 1..=3 are one residual block: no cut after 1 or 2.
        let cost = [1.0, 1.0, 1.0, 1.0, 4.0];
        let cut = |j: usize| j != 1 && j != 2;
        assert_eq!(balanced_stages(&cost, cut, 2), Ok(vec![0..4, 4..5]));
        assert_eq!(balanced_stages(&cost, cut, 3), Ok(vec![0..1, 1..4, 4..5]));
        assert_eq!(balanced_stages(&cost, cut, 4), Err(3));
        assert_eq!(balanced_stages(&cost, |_| true, 1), Ok(std::iter::once(0..5).collect()));
    }
}
