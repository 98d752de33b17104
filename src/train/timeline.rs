//! The compute/communication timeline: strategies record the phases of each step in a
//! `PhaseLog` (only when a run asks for a timeline, so a run without one pays a branch per
//! phase), `run_worker` turns them into `Event::Phase`, and `ChromeTraceSink` writes them as a
//! Chrome trace (the JSON Object Format of the Trace Event Format, loadable in chrome://tracing
//! and https://ui.perfetto.dev), as Horovod's `--timeline-filename` does.
//!
//! Layout of the trace: one "process" per worker (`pid` = rank, named "worker R"), with two
//! threads: `tid` 0 "compute" (data wait, forward+backward, waiting for communication,
//! optimizer) and `tid` 1 "comm" (each bucket's all-reduce, parameter-server push/pull), which
//! overlaps the backward pass and so cannot share its track. Spans on one track never overlap.
//!
//! Under MPI every process records its own workers' phases; at the end of the run the lead
//! process gathers the others' (`export` → MPI gather → `import`, which moves their times onto
//! the lead's clock through each process's wall-clock epoch) and writes the one file.

use super::events::{Event, EventSink, Track};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

/// Nanoseconds since this process's timeline epoch (its first call). One epoch for every worker
/// thread, so their spans line up. A clock, not configuration: the only state is the epoch.
pub fn clock_ns() -> u64 {
    ns(Instant::now())
}

/// The timeline epoch: the instant, and the wall-clock time then (ns since 1970).
fn epoch() -> &'static (Instant, u64) {
    static EPOCH: OnceLock<(Instant, u64)> = OnceLock::new();
    EPOCH.get_or_init(|| {
        let unix =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        (Instant::now(), unix)
    })
}

/// `t` on the timeline clock.
pub fn ns(t: Instant) -> u64 {
    t.saturating_duration_since(epoch().0).as_nanos() as u64
}

/// The names phases may have (`Event::Phase::name`), so that phases read back from another
/// process (`import`) keep static names.
pub const PHASES: &[&str] = &[
    "data",
    "forward_backward",
    "comm_wait",
    "optimizer",
    "allreduce",
    "push_pull",
    "forward",
    "backward",
    "send",
    "recv",
    "all_gather",
    "stats",
];

/// This process's phases for the lead process: a header line with the wall-clock time of its
/// timeline epoch, then one JSON line per `Event::Phase` (other events are skipped).
pub fn export(phases: &[Event]) -> Vec<u8> {
    let mut out = serde_json::json!({ "epoch_unix_ns": epoch().1 }).to_string().into_bytes();
    for e in phases.iter().filter(|e| matches!(e, Event::Phase { .. })) {
        out.push(b'\n');
        let _ = serde_json::to_writer(&mut out, e);
    }
    out
}

/// The phases of another process's `export`, their times moved onto this process's clock (by
/// the difference of the two wall-clock epochs: exact on one machine, as good as the clocks'
/// synchronisation across machines). Lines that do not parse are skipped.
pub fn import(bytes: &[u8]) -> Vec<Event> {
    use serde_json::Value;
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.lines();
    let Some(theirs) =
        lines.next().and_then(|l| serde_json::from_str::<Value>(l).ok()).and_then(|v| v["epoch_unix_ns"].as_u64())
    else {
        return Vec::new();
    };
    let shift = theirs as i128 - epoch().1 as i128;
    let at = |v: &Value| v.as_u64().map(|t| (t as i128 + shift).max(0) as u64);
    let opt = |v: &Value| v.as_u64().map(|b| b as usize);
    lines
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            let name = PHASES.iter().find(|n| v["name"] == **n)?;
            let track = if v["track"] == "comm" { Track::Comm } else { Track::Compute };
            let (start_ns, end_ns) = (at(&v["start_ns"])?, at(&v["end_ns"])?);
            Some(Event::Phase {
                rank: opt(&v["rank"])?,
                step: v["step"].as_u64()?,
                track,
                name,
                bucket: opt(&v["bucket"]),
                micro: opt(&v["micro"]),
                start_ns,
                end_ns: end_ns.max(start_ns),
            })
        })
        .collect()
}

/// One recorded phase.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Span {
    /// Track it is drawn on.
    pub track: Track,
    /// Phase name (see `Event::Phase`).
    pub name: &'static str,
    /// Gradient bucket, for all-reduce phases.
    pub bucket: Option<usize>,
    /// Micro-batch (pipeline phases) or segment (tensor split: the layers between two
    /// communications).
    pub micro: Option<usize>,
    /// Start and end on the timeline clock, ns.
    pub start_ns: u64,
    /// End, ns.
    pub end_ns: u64,
}

/// The phases of a step, recorded by a strategy when the run asks for a timeline.
#[derive(Debug, Default)]
pub struct PhaseLog {
    /// `None`: not recording (the default).
    spans: Option<Vec<Span>>,
}

impl PhaseLog {
    /// Starts recording.
    pub fn enable(&mut self) {
        clock_ns();
        self.spans.get_or_insert_with(Vec::new);
    }

    /// True when recording (callers skip taking times otherwise).
    pub fn on(&self) -> bool {
        self.spans.is_some()
    }

    /// Records a phase from `start` to `end`.
    pub fn record(&mut self, track: Track, name: &'static str, bucket: Option<usize>, start: Instant, end: Instant) {
        if let Some(v) = &mut self.spans {
            v.push(Span { track, name, bucket, micro: None, start_ns: ns(start), end_ns: ns(end).max(ns(start)) });
        }
    }

    /// Records a phase timed elsewhere (another thread's).
    pub fn push(&mut self, s: Span) {
        if let Some(v) = &mut self.spans {
            v.push(s);
        }
    }

    /// Now, when recording (the start of a phase for `end`); `None` otherwise, without reading
    /// the clock.
    pub fn start(&self) -> Option<Instant> {
        self.on().then(Instant::now)
    }

    /// Records a phase of micro-batch or segment `micro` from `start` (from `start()`) until now.
    pub fn end(&mut self, track: Track, name: &'static str, micro: Option<usize>, start: Option<Instant>) {
        if let (Some(v), Some(start)) = (&mut self.spans, start) {
            let (start_ns, end_ns) = (ns(start), clock_ns());
            v.push(Span { track, name, bucket: None, micro, start_ns, end_ns: end_ns.max(start_ns) });
        }
    }

    /// Records a phase from `start` until now.
    pub fn since(&mut self, track: Track, name: &'static str, start: Instant) {
        if self.on() {
            self.record(track, name, None, start, Instant::now());
        }
    }

    /// Appends the recorded phases to `out` and forgets them.
    pub fn drain_into(&mut self, out: &mut Vec<Span>) {
        if let Some(v) = &mut self.spans {
            out.append(v);
        }
    }
}

/// Writes phases as a Chrome trace. The file is a complete JSON document once the sink is dropped
/// (at the end of the run, also after a failure or a signal); until then it is a prefix that
/// chrome://tracing and Perfetto still load.
pub struct ChromeTraceSink {
    out: BufWriter<File>,
    /// Workers whose track names were written.
    named: Vec<bool>,
    first: bool,
}

impl ChromeTraceSink {
    /// Creates (truncates) the trace file.
    pub fn create(path: &Path) -> std::io::Result<ChromeTraceSink> {
        let mut out = BufWriter::new(File::create(path)?);
        out.write_all(b"{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n")?;
        Ok(ChromeTraceSink { out, named: Vec::new(), first: true })
    }

    fn line(&mut self, v: serde_json::Value) {
        let sep: &[u8] = if self.first { b"" } else { b",\n" };
        self.first = false;
        let _ = self.out.write_all(sep);
        let _ = serde_json::to_writer(&mut self.out, &v);
    }

    fn name_tracks(&mut self, rank: usize) {
        if self.named.len() <= rank {
            self.named.resize(rank + 1, false);
        }
        if std::mem::replace(&mut self.named[rank], true) {
            return;
        }
        use serde_json::json;
        self.line(json!({"ph": "M", "name": "process_name", "pid": rank, "tid": 0, "args": {"name": format!("worker {rank}")}}));
        self.line(
            json!({"ph": "M", "name": "process_sort_index", "pid": rank, "tid": 0, "args": {"sort_index": rank}}),
        );
        self.line(json!({"ph": "M", "name": "thread_name", "pid": rank, "tid": 0, "args": {"name": "compute"}}));
        self.line(json!({"ph": "M", "name": "thread_name", "pid": rank, "tid": 1, "args": {"name": "comm"}}));
    }
}

impl EventSink for ChromeTraceSink {
    fn on_event(&mut self, e: &Event) {
        use serde_json::json;
        match e {
            Event::Phase { rank, step, track, name, bucket, micro, start_ns, end_ns } => {
                self.name_tracks(*rank);
                let tid = match track {
                    Track::Compute => 0,
                    Track::Comm => 1,
                };
                // Microseconds with nanosecond digits: spans that touch on the clock touch here.
                let us = |t: u64| (t / 1000) as f64 + (t % 1000) as f64 / 1000.0;
                let mut args = json!({"step": step});
                if let Some(b) = bucket {
                    args["bucket"] = json!(b);
                }
                if let Some(m) = micro {
                    args["micro"] = json!(m);
                }
                self.line(json!({"ph": "X", "name": name, "cat": if tid == 0 { "compute" } else { "comm" }, "pid": rank, "tid": tid, "ts": us(*start_ns), "dur": us(end_ns - start_ns), "args": args}));
            }
            Event::Eval { step, loss, acc, .. } => {
                // An instant marker on worker 0's compute track.
                self.name_tracks(0);
                let ts = clock_ns() as f64 / 1000.0;
                self.line(json!({"ph": "i", "s": "p", "name": "eval", "pid": 0, "tid": 0, "ts": ts, "args": {"step": step, "loss": loss, "acc": acc}}));
            }
            Event::RunEnd { .. } => {
                let _ = self.out.flush();
            }
            _ => {}
        }
    }
}

impl Drop for ChromeTraceSink {
    fn drop(&mut self) {
        let _ = self.out.write_all(b"\n]}\n");
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exported_phases_come_back_with_their_names_and_times() {
        let e = Event::Phase {
            rank: 3,
            step: 7,
            track: Track::Comm,
            name: "send",
            bucket: None,
            micro: Some(2),
            start_ns: 10,
            end_ns: 25,
        };
        let other = Event::Eval { step: 1, epoch: 0, loss: 0.1, acc: 0.9, samples: 10 };
        let back = import(&export(&[e.clone(), other]));
        assert_eq!(back, vec![e], "same process: no shift; non-phase events are not exported");
        assert!(import(b"not json\n{}").is_empty());
        assert!(PHASES.contains(&"all_gather"));
    }
}
