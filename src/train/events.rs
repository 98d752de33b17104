//! Typed training events and the sinks they feed: terminal progress (indicatif), `tracing` logs,
//! a JSON-lines metrics file and a Chrome-trace timeline (`timeline.rs`). One stream, several
//! consumers.

use serde::Serialize;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// Something that happened during a run. Serialised as one JSON object per line, tagged by `event`.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The run begins.
    RunStart {
        /// Model name.
        model: String,
        /// Number of parameters.
        params: usize,
        /// Data-parallel workers.
        workers: usize,
        /// Intra-op threads per worker.
        threads: usize,
        /// Global batch size.
        batch_size: usize,
        /// Training samples.
        train_samples: usize,
        /// Test samples.
        test_samples: usize,
        /// Optimisation steps of the whole run.
        total_steps: u64,
    },
    /// One optimisation step finished.
    Step {
        /// Global step (1-based after the update).
        step: u64,
        /// Epoch (0-based).
        epoch: u64,
        /// Mean training loss over the batch (with several workers: over rank 0's shard).
        loss: f64,
        /// Top-1 accuracy over the batch (with several workers: over rank 0's shard).
        acc: f64,
        /// Learning rate used.
        lr: f32,
        /// Samples in the step (rank 0's shard).
        samples: usize,
        /// Throughput of this step (global batch / wall time of the step).
        images_per_sec: f64,
        /// Seconds spent waiting for data.
        data_wait_s: f64,
        /// Seconds of forward + backward + optimizer (including communication overlapped with it).
        compute_s: f64,
        /// Seconds the collectives or push/pull of this step took (overlapped or not).
        comm_s: f64,
        /// Seconds the worker waited for communication after its computation was done.
        comm_wait_s: f64,
        /// `--on-nonfinite skip` skipped this step's update (non-finite gradients).
        skipped: bool,
    },
    /// A worker's totals so far (every worker, after each epoch and at the end).
    Worker {
        /// Worker rank.
        rank: usize,
        /// Steps done.
        steps: u64,
        /// Samples this worker processed per second of wall time.
        images_per_sec: f64,
        /// Seconds computing (forward, backward, optimizer).
        compute_s: f64,
        /// Seconds in communication (collectives, push/pull), overlapped or not.
        comm_s: f64,
        /// Seconds waiting for communication after computing (the part not overlapped).
        comm_wait_s: f64,
        /// Seconds waiting for data.
        data_wait_s: f64,
    },
    /// A worker's throughput and time over the last second or so (every worker, about once a
    /// second; the dashboard's per-worker curves). Times are seconds within the window.
    Rate {
        /// Worker rank.
        rank: usize,
        /// Its last step.
        step: u64,
        /// Length of the window, s.
        seconds: f64,
        /// Samples this worker processed per second in the window.
        images_per_sec: f64,
        /// Waiting for data.
        data_wait_s: f64,
        /// Computing (forward, backward, optimizer).
        compute_s: f64,
        /// In communication, overlapped or not.
        comm_s: f64,
        /// Waiting for communication after computing.
        comm_wait_s: f64,
    },
    /// Staleness of the updates a parameter-server shard applied: how many updates from other
    /// workers landed between a worker's pull and its push.
    Staleness {
        /// Server shard.
        server: usize,
        /// `histogram[s]` = updates applied with staleness s.
        histogram: Vec<u64>,
        /// Largest staleness seen.
        max: usize,
        /// Mean staleness.
        mean: f64,
    },
    /// What a pipeline stage did over the run.
    Pipeline {
        /// Stage (0 = first).
        stage: usize,
        /// Its layers, "first..last".
        layers: String,
        /// Fraction of the step time the stage waited for its neighbours (the bubble).
        bubble: f64,
        /// Most micro-batches whose activations it held at once.
        peak_in_flight: usize,
        /// Activation bytes those held (its peak activation memory).
        peak_activation_bytes: usize,
    },
    /// What a worker sent over its communicators during the run (measured by them).
    Traffic {
        /// Worker.
        rank: usize,
        /// Bytes it sent.
        bytes_sent: u64,
        /// Steps it ran.
        steps: u64,
    },
    /// The parameter slice a model-parallel worker holds.
    Split {
        /// Worker.
        rank: usize,
        /// Bytes of parameters it holds (its slices).
        param_bytes: usize,
        /// Bytes of the whole model's parameters.
        full_param_bytes: usize,
    },
    /// An evaluation on the test set.
    Eval {
        /// Step at which it ran.
        step: u64,
        /// Epoch just finished.
        epoch: u64,
        /// Mean test loss.
        loss: f64,
        /// Top-1 test accuracy.
        acc: f64,
        /// Samples evaluated.
        samples: usize,
    },
    /// One phase of one worker's step, for the timeline (emitted only when a run asks for one,
    /// see `TrainConfig::timeline`). Times are nanoseconds on this process's clock
    /// (`timeline::clock_ns`), shared by all its workers.
    Phase {
        /// Worker rank.
        rank: usize,
        /// Step the phase belongs to (1-based).
        step: u64,
        /// Which track it is drawn on.
        track: Track,
        /// What the worker did: `data`, `forward_backward`, `comm_wait`, `optimizer`,
        /// `allreduce` (a bucket's reduction, fused with the update of its chunk), `push_pull`;
        /// split models: `forward`, `backward`, `send`, `recv`, `all_gather`, `allreduce`, `stats`.
        name: &'static str,
        /// Gradient bucket (all-reduce phases).
        #[serde(skip_serializing_if = "Option::is_none")]
        bucket: Option<usize>,
        /// Micro-batch (pipeline) or segment (tensor split, hybrid classifier).
        #[serde(skip_serializing_if = "Option::is_none")]
        micro: Option<usize>,
        /// Start, ns.
        start_ns: u64,
        /// End, ns (≥ start).
        end_ns: u64,
    },
    /// The run ended.
    RunEnd {
        /// Steps done.
        steps: u64,
        /// Final test accuracy.
        test_acc: f64,
        /// Final test loss.
        test_loss: f64,
        /// Wall time of the run.
        seconds: f64,
        /// Mean training throughput.
        images_per_sec: f64,
        /// Steps whose update `--on-nonfinite skip` skipped.
        skipped_steps: u64,
    },
}

/// The timeline track of a phase: a worker's own work, or its communication (which may overlap
/// its backward pass, so it needs a track of its own).
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Track {
    /// Data wait, forward/backward, waiting for communication, optimizer.
    Compute,
    /// Collectives and parameter-server push/pull.
    Comm,
}

/// A consumer of events.
pub trait EventSink {
    /// Handles one event.
    fn on_event(&mut self, e: &Event);
}

/// Writes each event as one JSON line.
pub struct JsonlSink {
    out: BufWriter<File>,
    /// Last flush: steps are flushed at most twice a second, so followers (the dashboard) see
    /// them live without a write per step.
    flushed: std::time::Instant,
}

impl JsonlSink {
    /// Creates (truncates) the metrics file.
    pub fn create(path: &Path) -> std::io::Result<JsonlSink> {
        Ok(JsonlSink { out: BufWriter::new(File::create(path)?), flushed: std::time::Instant::now() })
    }
}

impl EventSink for JsonlSink {
    fn on_event(&mut self, e: &Event) {
        // Phases belong to the timeline file, not to the metrics.
        if matches!(e, Event::Phase { .. }) {
            return;
        }
        // Straight into the buffered file: no String per step.
        if serde_json::to_writer(&mut self.out, e).is_ok() {
            let _ = self.out.write_all(b"\n");
        }
        if !matches!(e, Event::Step { .. }) || self.flushed.elapsed().as_millis() >= 500 {
            let _ = self.out.flush();
            self.flushed = std::time::Instant::now();
        }
    }
}

/// Logs evaluations and the run's start and end through `tracing`; steps at info level every
/// `every` steps (`--log-every`, Caffe's `display`), else at debug level.
#[derive(Default)]
pub struct LogSink {
    /// Log every N-th step at info level.
    pub every: Option<u64>,
}

impl EventSink for LogSink {
    fn on_event(&mut self, e: &Event) {
        match e {
            Event::Step { step, loss, acc, lr, images_per_sec, .. } => {
                if self.every.is_some_and(|n| step % n == 0) {
                    tracing::info!(
                        step,
                        loss = format!("{loss:.4}"),
                        acc = format!("{:.2}%", acc * 100.0),
                        lr,
                        images_per_sec = format!("{images_per_sec:.0}"),
                        "step"
                    )
                } else {
                    tracing::debug!(step, loss, acc, images_per_sec, "step")
                }
            }
            Event::Eval { step, epoch, loss, acc, .. } => {
                tracing::info!(step, epoch, loss = format!("{loss:.4}"), acc = format!("{:.2}%", acc * 100.0), "eval")
            }
            Event::RunStart { model, params, workers, threads, batch_size, total_steps, .. } => {
                tracing::info!(model, params, workers, threads, batch_size, total_steps, "run start")
            }
            Event::RunEnd { steps, test_acc, seconds, .. } => {
                tracing::info!(
                    steps,
                    test_acc = format!("{:.2}%", test_acc * 100.0),
                    seconds = format!("{seconds:.1}"),
                    "run end"
                )
            }
            Event::Worker { rank, steps, images_per_sec, compute_s, comm_s, comm_wait_s, .. } => {
                tracing::info!(
                    rank,
                    steps,
                    images_per_sec = format!("{images_per_sec:.0}"),
                    compute_s = format!("{compute_s:.2}"),
                    comm_s = format!("{comm_s:.2}"),
                    comm_wait_s = format!("{comm_wait_s:.2}"),
                    "worker"
                )
            }
            Event::Staleness { server, max, mean, .. } => {
                tracing::info!(server, max, mean = format!("{mean:.2}"), "staleness")
            }
            Event::Split { rank, param_bytes, full_param_bytes } => {
                tracing::info!(rank, param_bytes, full_param_bytes, "model slice")
            }
            Event::Traffic { rank, bytes_sent, steps } => tracing::debug!(rank, bytes_sent, steps, "traffic"),
            Event::Pipeline { stage, layers, bubble, peak_in_flight, peak_activation_bytes } => {
                tracing::info!(stage, layers = %layers, bubble = format!("{:.1}%", bubble * 100.0), peak_in_flight, peak_activation_bytes, "pipeline stage")
            }
            Event::Rate { rank, step, images_per_sec, .. } => tracing::trace!(rank, step, images_per_sec, "rate"),
            Event::Phase { .. } => {}
        }
    }
}

/// A terminal progress bar showing smoothed loss, accuracy and images/s.
pub struct ProgressSink {
    bar: Option<indicatif::ProgressBar>,
    loss: f64,
    acc: f64,
    ips: f64,
}

impl ProgressSink {
    /// A progress sink drawing on stderr (drawing is skipped when stderr is not a terminal).
    pub fn new() -> ProgressSink {
        ProgressSink { bar: None, loss: f64::NAN, acc: 0.0, ips: 0.0 }
    }
}

impl Default for ProgressSink {
    fn default() -> Self {
        Self::new()
    }
}

impl EventSink for ProgressSink {
    fn on_event(&mut self, e: &Event) {
        match e {
            Event::RunStart { total_steps, .. } => {
                let bar = indicatif::ProgressBar::new(*total_steps);
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} steps (eta {eta}) {msg}",
                ) {
                    bar.set_style(style.progress_chars("=> "));
                }
                self.bar = Some(bar);
            }
            Event::Step { step, loss, acc, images_per_sec, .. } => {
                // Exponential moving averages, as most trainers display.
                let a = 0.05;
                self.loss = if self.loss.is_nan() { *loss } else { (1.0 - a) * self.loss + a * loss };
                self.acc = if *step <= 1 { *acc } else { (1.0 - a) * self.acc + a * acc };
                self.ips = if *step <= 1 { *images_per_sec } else { (1.0 - a) * self.ips + a * images_per_sec };
                if let Some(bar) = &self.bar {
                    bar.set_position(*step);
                    if step % 10 == 0 || *step <= 1 {
                        bar.set_message(format!(
                            "loss {:.4} acc {:.2}% {:.0} img/s",
                            self.loss,
                            self.acc * 100.0,
                            self.ips
                        ));
                    }
                }
            }
            Event::Eval { epoch, loss, acc, .. } => {
                let line = format!("epoch {epoch}: test loss {loss:.4}, test accuracy {:.2}%", acc * 100.0);
                match &self.bar {
                    Some(bar) => bar.println(line),
                    None => eprintln!("{line}"),
                }
            }
            Event::RunEnd { .. } => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
            }
            Event::Worker { .. }
            | Event::Rate { .. }
            | Event::Staleness { .. }
            | Event::Pipeline { .. }
            | Event::Split { .. }
            | Event::Traffic { .. }
            | Event::Phase { .. } => {}
        }
    }
}

/// Forwards every event to several sinks.
#[derive(Default)]
pub struct Fanout {
    sinks: Vec<Box<dyn EventSink>>,
}

impl Fanout {
    /// Adds a sink.
    pub fn push(&mut self, s: Box<dyn EventSink>) {
        self.sinks.push(s);
    }
}

impl EventSink for Fanout {
    fn on_event(&mut self, e: &Event) {
        for s in &mut self.sinks {
            s.on_event(e);
        }
    }
}

/// Collects events in memory (tests, benchmarks).
#[derive(Default)]
pub struct Recorder {
    /// Events seen, in order.
    pub events: Vec<Event>,
}

impl EventSink for Recorder {
    fn on_event(&mut self, e: &Event) {
        self.events.push(e.clone());
    }
}
