//! The state of a split model (pipeline stages, tensor slices, hybrid parts) seen whole: how a
//! worker's own buffer maps into the model's flat layout, gathered for a checkpoint and taken
//! apart again on resume.

use crate::optim::{Optimizer, OptimizerState};
use crate::train::TrainError;

/// For strategies that split the model: how a worker's own buffer (parameters or an optimizer
/// state, in its own layout) maps into the whole model's flat layout.
pub(crate) trait Owned {
    /// Writes this worker's values into their places of `full` (others untouched).
    fn write_full(&self, mine: &[f32], full: &mut [f32]) -> Result<(), TrainError>;
    /// Reads this worker's values out of `full`.
    fn read_full(&self, full: &[f32], mine: &mut [f32]) -> Result<(), TrainError>;
}

/// The whole-model vector of a split buffer: every value written by exactly one worker (those
/// with `contributes`), zeros elsewhere, summed by `reduce` (collective).
pub(crate) fn gather_full(
    owned: &dyn Owned,
    mine: &[f32],
    len: usize,
    contributes: bool,
    reduce: &mut dyn FnMut(&mut [f32]) -> Result<(), TrainError>,
) -> Result<Vec<f32>, TrainError> {
    let mut full = vec![0.0f32; len];
    if contributes {
        owned.write_full(mine, &mut full)?;
    }
    reduce(&mut full)?;
    Ok(full)
}

/// `Strategy::optimizer_state` of a split model: each state buffer gathered whole.
pub(crate) fn gather_optimizer(
    opt: &dyn Optimizer,
    owned: &dyn Owned,
    len: usize,
    contributes: bool,
    reduce: &mut dyn FnMut(&mut [f32]) -> Result<(), TrainError>,
) -> Result<OptimizerState, TrainError> {
    let mut out = Vec::new();
    for (name, buf) in opt.state() {
        out.push((name, gather_full(owned, buf, len, contributes, reduce)?));
    }
    Ok((out, opt.steps()))
}

/// `Strategy::restore` of a split model: each worker takes its part of the whole state.
pub(crate) fn restore_split(
    opt: &mut dyn Optimizer,
    owned: &dyn Owned,
    state: &[(String, Vec<f32>)],
    steps: u64,
) -> Result<(), TrainError> {
    for (name, buf) in opt.state_mut() {
        let src = state
            .iter()
            .find(|s| s.0 == name)
            .ok_or_else(|| TrainError::Internal(format!("checkpoint has no optimizer state '{name}'")))?;
        owned.read_full(&src.1, buf)?;
    }
    opt.set_steps(steps);
    Ok(())
}
