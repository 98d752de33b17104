//! `--on-nonfinite`: what a step whose reduced gradients hold a NaN or an infinity does.
//!
//! `fail` (default) ends the run naming the step and the first non-finite tensor: every worker
//! looks at the loss and at its parameters after every step (one vectorised pass over the
//! parameters, about 1 % of a LeNet step), so gradients that went
//! non-finite while the loss stayed finite are caught at the step they reach the parameters. `skip` is PyTorch's
//! `GradScaler` rule: the strategy checks the gradients it is about to apply — after the
//! reduction, so every worker looks at the same values or asks the others — and, if any is not
//! finite, leaves parameters and optimizer state (its step count too) as they were — batch-norm
//! running statistics are updated by the forward pass, as in PyTorch; the step counts as done
//! and is reported (`"skipped": true` in its metrics line,
//! `skipped_steps` at the end).

use crate::comm::Communicator;
use crate::train::TrainError;

/// `--on-nonfinite`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnNonFinite {
    /// End the run (exit 1) [default].
    #[default]
    Fail,
    /// Skip the update of that step on every worker and go on.
    Skip,
}

/// True when `values` hold a NaN or an infinity.
pub fn any_nonfinite(values: &[f32]) -> bool {
    // A NaN or an infinity has every exponent bit set. OR-ing integer flags (unlike adding floats,
    // which the compiler may not reorder) vectorises: one pass at memory speed, no branch per value.
    const EXP: u32 = 0x7f80_0000;
    let flag = |v: &f32| u32::from(v.to_bits() & EXP == EXP);
    let mut chunks = values.chunks_exact(64);
    let mut acc = 0u32;
    for c in &mut chunks {
        acc |= c.iter().map(flag).fold(0, |a, b| a | b);
        if acc != 0 {
            return true;
        }
    }
    acc | chunks.remainder().iter().map(flag).fold(0, |a, b| a | b) != 0
}

/// True when the gradients of this worker (`local_bad`) or of any worker joined by `comms` are
/// not finite: every worker gets the same answer (a one-value all-reduce per communicator; the
/// communicators together must reach every worker whose gradients matter).
pub fn agreed(local_bad: bool, comms: &[&dyn Communicator]) -> Result<bool, TrainError> {
    let mut flag = [if local_bad { 1.0f32 } else { 0.0 }];
    for c in comms.iter().filter(|c| c.size() > 1) {
        c.all_reduce_into(&mut flag)?;
    }
    Ok(flag[0] > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_and_infinities_are_found_anywhere() {
        let mut g = vec![1.0f32; 1000];
        assert!(!any_nonfinite(&g));
        g[0] = 3e38; // large but finite: g * 0 is 0
        g[1] = 3e38;
        assert!(!any_nonfinite(&g));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut h = g.clone();
            h[999] = bad;
            assert!(any_nonfinite(&h), "{bad}");
        }
        assert!(!any_nonfinite(&[]));
    }
}
