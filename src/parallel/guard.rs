//! `Guard`: the wrapper around each worker's strategy in `run_ranks` — counts the steps (for
//! error messages and the stall reports' step), tells the stall watchdog when a step starts
//! and ends, and fires the failure injected by the hidden test flag `--inject-failure`.

use super::{watchdog, FailureKind, InjectFailure};
use crate::net::Net;
use crate::train::{self, events::Event, StepReport, Strategy, TrainError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Wraps a worker's strategy: counts its steps and fires the injected failure.
pub(super) struct Guard<'a> {
    pub(super) inner: &'a mut (dyn Strategy + 'a),
    pub(super) rank: usize,
    /// The step being run (1-based), readable after a panic.
    pub(super) step: &'a AtomicU64,
    pub(super) inject: Option<InjectFailure>,
    /// Where the watchdog sees this worker's steps.
    pub(super) beacons: &'a watchdog::Beacons,
    /// This worker's position among the ranks of this process.
    pub(super) index: usize,
}

impl Strategy for Guard<'_> {
    fn init(&mut self, params: &mut [f32]) -> Result<(), TrainError> {
        self.inner.init(params)
    }

    fn step(
        &mut self,
        net: &mut Net,
        ctx: &crate::layers::Ctx,
        params: &mut [f32],
        batch: &crate::data::loader::Batch,
        lr: f32,
    ) -> Result<StepReport, TrainError> {
        let step = self.step.fetch_add(1, Ordering::Relaxed) + 1;
        crate::comm::phase::set_step(step);
        self.beacons.enter_step(self.index, step);
        if let Some(f) = self.inject.filter(|f| f.rank == self.rank && f.step == step) {
            match f.kind {
                FailureKind::Error => return Err(TrainError::Injected),
                FailureKind::Panic => panic!("injected panic at step {}", f.step),
                FailureKind::Hang => loop {
                    std::thread::sleep(Duration::from_secs(3600));
                },
            }
        }
        let r = self.inner.step(net, ctx, params, batch, lr);
        self.beacons.leave_step(self.index);
        r
    }

    fn finish(&mut self, params: &mut [f32]) -> Result<(), TrainError> {
        self.inner.finish(params)
    }

    fn stop_now(&mut self, step: u64, world: usize) -> Result<bool, TrainError> {
        self.inner.stop_now(step, world)
    }

    fn state_names(&self) -> Vec<&'static str> {
        self.inner.state_names()
    }

    fn optimizer_state(&mut self) -> Result<crate::optim::OptimizerState, TrainError> {
        self.inner.optimizer_state()
    }

    fn restore(&mut self, state: &[(String, Vec<f32>)], steps: u64) -> Result<(), TrainError> {
        self.inner.restore(state, steps)
    }

    fn final_events(&self) -> Vec<Event> {
        self.inner.final_events()
    }

    fn checkpoint_params(&mut self, params: &mut [f32]) -> Result<(), TrainError> {
        self.inner.checkpoint_params(params)
    }

    fn owns_params(&self) -> bool {
        self.inner.owns_params()
    }

    fn own_params(&self) -> Option<&[f32]> {
        self.inner.own_params()
    }

    fn record_phases(&mut self) {
        self.inner.record_phases()
    }

    fn take_phases(&mut self, out: &mut Vec<train::timeline::Span>) {
        self.inner.take_phases(out)
    }
}
