//! A parameter server shard: receives the workers' pushes, applies the updates of its slice, and
//! answers with its parameters (the protocol: the module's documentation, param_server/mod.rs).

use super::*;

/// A server shard.
pub struct Server<'c> {
    comm: &'c dyn Communicator,
    index: usize,
    workers: usize,
    mode: PsMode,
    steps: u64,
    params: Vec<f32>,
    opt: Box<dyn Optimizer>,
    schedule: LrSchedule,
    /// Global steps already done when the run starts (resumed from a checkpoint).
    start: u64,
    /// When the workers write checkpoints, and the steps of an epoch.
    checkpoint: Option<(CheckpointPolicy, u64)>,
}

/// Staleness counts of one server.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Staleness {
    /// `histogram[s]` = updates applied with staleness s.
    pub histogram: Vec<u64>,
}

impl Staleness {
    fn record(&mut self, s: usize) {
        if self.histogram.len() <= s {
            self.histogram.resize(s + 1, 0);
        }
        self.histogram[s] += 1;
    }

    /// Largest staleness seen.
    pub fn max(&self) -> usize {
        self.histogram.iter().rposition(|&c| c > 0).unwrap_or(0)
    }

    /// Mean staleness.
    pub fn mean(&self) -> f64 {
        let n: u64 = self.histogram.iter().sum();
        let total: u64 = self.histogram.iter().enumerate().map(|(s, &c)| s as u64 * c).sum();
        total as f64 / n.max(1) as f64
    }

    /// As an event of server `server`.
    pub fn event(&self, server: usize) -> Event {
        Event::Staleness { server, histogram: self.histogram.clone(), max: self.max(), mean: self.mean() }
    }
}

impl<'c> Server<'c> {
    /// Server shard `comm.rank() - workers` of `servers`, for a run of `steps` steps per worker
    /// over `len` parameters and a training set of `train_len` samples. A resumed run reads this
    /// shard's optimizer state and the step to start from from the checkpoint.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &TrainConfig,
        comm: &'c dyn Communicator,
        workers: usize,
        servers: usize,
        mode: PsMode,
        steps: u64,
        len: usize,
        train_len: usize,
    ) -> Result<Server<'c>, TrainError> {
        let index = comm.rank() - workers;
        let range = server_range(len, index, servers);
        // The buffers are the workers' own (see `Client::buffers`): not the optimizer's to move.
        let mults = Net::build(&cfg.model)?.layout().mult_ranges_in(&range);
        let mut opt = cfg.optimizer.build_scaled(range.len(), mults)?;
        let mut start = 0;
        if let Some(path) = &cfg.resume {
            let net = Net::build(&cfg.model)?;
            let names: Vec<&str> = opt.state().into_iter().map(|s| s.0).collect();
            let c = checkpoint::run::load_checkpoint(path, net.layout(), &names)?;
            let slices: Vec<(String, Vec<f32>)> =
                c.state.into_iter().map(|(n, b)| (n, b[range.clone()].to_vec())).collect();
            restore_optimizer(opt.as_mut(), &slices, c.run.optimizer_steps)?;
            start = c.run.step;
        }
        let per_epoch = Sampler::new(train_len, cfg.batch_size, cfg.seed, false).batches_per_epoch() as u64;
        Ok(Server {
            comm,
            index,
            workers,
            mode,
            steps,
            params: vec![0.0; range.len()],
            opt,
            schedule: cfg.schedule.clone().resolve(steps),
            start,
            checkpoint: cfg.checkpoint.clone().map(|p| (p, per_epoch)),
        })
    }

    /// Whether the workers write a checkpoint after global step `step`.
    fn checkpoint_due(&self, step: u64) -> bool {
        self.checkpoint.as_ref().is_some_and(|(p, per_epoch)| p.due(step, *per_epoch, self.steps))
    }

    /// Whether every worker pauses after `step` (async modes): a checkpoint, or the stop.
    fn pause_at(&self, step: u64, stop_at: Option<u64>) -> bool {
        self.checkpoint_due(step) || stop_at == Some(step)
    }

    /// Whether the workers write a checkpoint after `step`, where they stop after `stop_at`.
    fn state_due(&self, step: u64, stop_at: Option<u64>) -> bool {
        self.checkpoint_due(step) || (self.checkpoint.is_some() && stop_at == Some(step))
    }

    fn recv_ctrl(&self, src: usize) -> Result<PushCtrl, TrainError> {
        let mut m = [0.0f32; 4];
        self.comm.recv(&mut m, src, TAG_PUSH_CTRL)?;
        Ok(PushCtrl::decode(&m))
    }

    fn reply(&self, to: usize, ctrl: ReplyCtrl) -> Result<(), TrainError> {
        self.comm.send(&self.params, to, TAG_PARAMS)?;
        self.comm.send(&ctrl.encode(), to, TAG_REPLY_CTRL)?;
        Ok(())
    }

    /// Sends this shard's optimizer state and update count to worker 0 (a checkpoint).
    fn send_state(&self) -> Result<(), TrainError> {
        let steps = self.opt.steps();
        let mut msg = vec![f32::from_bits(steps as u32), f32::from_bits((steps >> 32) as u32)];
        for (_, buf) in self.opt.state() {
            msg.extend_from_slice(buf);
        }
        self.comm.send(&msg, 0, TAG_STATE)?;
        Ok(())
    }

    /// Serves the whole run; returns the staleness of the updates applied.
    pub fn serve(mut self) -> Result<Staleness, TrainError> {
        self.comm.recv(&mut self.params, 0, TAG_INIT)?;
        for w in 0..self.workers {
            self.comm.send(&self.params, w, TAG_PARAMS)?;
        }
        let (hist, stopped) = match self.mode {
            PsMode::Sync => self.serve_sync()?,
            PsMode::Async => self.serve_async(None)?,
            PsMode::Ssp { staleness } => self.serve_async(Some(staleness))?,
        };
        // Workers stopped by a signal end without pulling the final parameters.
        if !stopped {
            self.comm.send(&self.params, 0, TAG_FINAL)?;
        }
        Ok(hist)
    }

    /// Returns the staleness, and whether the workers stop early (a signal).
    fn serve_sync(&mut self) -> Result<(Staleness, bool), TrainError> {
        let mut sum = vec![0.0f32; self.params.len()];
        let mut hist = Staleness::default();
        for step in self.start..self.steps {
            sum.fill(0.0);
            let (mut signal, mut bad) = (false, false);
            // Server s takes the workers from s on: a transport that moves a long message only
            // when its receive is posted (MPI's rendezvous) would otherwise have every server
            // wait for worker 0 first, which then sends to all of them at once while the others
            // idle (on 4 emulated hosts, 2 workers and 2 servers took 1.4–1.5× the planned step).
            for i in 0..self.workers {
                let w = (self.index + i) % self.workers;
                let ctrl = self.recv_ctrl(w)?;
                (signal, bad) = (signal || ctrl.signal, bad || ctrl.nonfinite);
                self.comm.recv_add(&mut sum, w, TAG_PUSH)?;
                hist.record(0);
            }
            if !bad {
                self.opt.step(&mut self.params, &sum, self.schedule.lr_at(step));
            }
            // Every server sees the same flags: all stop after this step (unless it is the last).
            let stop_at = (signal && step + 1 < self.steps).then_some(step + 1);
            if self.state_due(step + 1, stop_at) {
                self.send_state()?;
            }
            for w in 0..self.workers {
                self.reply(w, ReplyCtrl { stop_at, skipped: bad })?;
            }
            if stop_at.is_some() {
                return Ok((hist, true));
            }
        }
        Ok((hist, false))
    }

    /// Returns the staleness, and whether the workers stop early (a signal).
    fn serve_async(&mut self, bound: Option<u64>) -> Result<(Staleness, bool), TrainError> {
        let w = self.workers;
        let mut grad = vec![0.0f32; self.params.len()];
        let mut hist = Staleness::default();
        let mut version = self.start * w as u64;
        let mut pulled = vec![version; w];
        let mut clock = vec![self.start; w];
        let mut waiting = vec![false; w];
        let mut skipped = vec![false; w];
        // The step after which everyone stops (a signal): fixed by server 0, learnt by the
        // others from the pushes (see the module docs).
        let mut stop_at: Option<u64> = None;
        let end = |stop_at: Option<u64>| stop_at.map_or(self.steps, |s| s.min(self.steps));
        while clock.iter().any(|&c| c < end(stop_at)) {
            let src = self.comm.recv_any(&mut grad, TAG_PUSH)?;
            if src >= w {
                return Err(TrainError::Internal(format!(
                    "server {} got a push from rank {src}, which is not a worker",
                    self.index
                )));
            }
            let ctrl = self.recv_ctrl(src)?;
            hist.record((version - pulled[src]) as usize);
            skipped[src] = ctrl.nonfinite;
            if !ctrl.nonfinite {
                let lr = self.schedule.lr_at(version / w as u64);
                self.opt.step(&mut self.params, &grad, lr);
            }
            version += 1;
            clock[src] += 1;
            waiting[src] = true;
            if stop_at.is_none() {
                stop_at = ctrl.stop_at;
                if self.index == 0 && ctrl.signal {
                    // No worker is past `most` now, nor can one push `most + 2` before this
                    // server has answered its `most + 1` (with the stop step in the answer).
                    let most = clock.iter().copied().max().unwrap_or(0);
                    stop_at = Some(most + 2).filter(|&s| s < self.steps);
                }
            }
            let slowest = clock.iter().copied().min().unwrap_or(0);
            // A checkpoint (or the stop) after step c: whoever has pushed step c waits until every
            // worker has; the last push completes the consistent point (all of batches 1..c,
            // nothing more).
            if clock[src] == slowest && self.state_due(slowest, stop_at) && clock.iter().all(|&c| c == slowest) {
                self.send_state()?;
            }
            for v in 0..w {
                // Under SSP a worker that has finished c steps may start the next only when
                // c − slowest ≤ s; a worker that has finished the run just gets its reply.
                let may_go = match bound {
                    None => true,
                    Some(s) => clock[v] - slowest <= s || clock[v] == end(stop_at),
                };
                let held = clock[v] > slowest && self.pause_at(clock[v], stop_at);
                if waiting[v] && may_go && !held {
                    self.reply(v, ReplyCtrl { stop_at, skipped: skipped[v] })?;
                    pulled[v] = version;
                    waiting[v] = false;
                }
            }
        }
        Ok((hist, stop_at.is_some_and(|s| s < self.steps)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_summary() {
        let mut s = Staleness::default();
        for x in [0, 0, 3, 1] {
            s.record(x);
        }
        assert_eq!(s.histogram, vec![2, 1, 0, 1]);
        assert_eq!(s.max(), 3);
        assert!((s.mean() - 1.0).abs() < 1e-12);
    }
}
