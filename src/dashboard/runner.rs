//! The run queue: at most `max_runs` children (`convoy train ...`) at a time, the others wait
//! in order. A child's end (its exit status) becomes the run's status; a stop request is a
//! SIGTERM, on which `convoy train` finishes its step, checkpoints when asked and exits 143.
//!
//! Runs found on disk when the server starts: queued ones are queued again; running ones whose
//! process is gone (the server was down when they ended) are settled from their metrics
//! (`run_end` seen: finished) — see `reconcile`.

use super::store::{self, RunFile, RunRecord, RunStatus, Store};
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// The queue and the running children.
pub struct Runner {
    /// The runs directory.
    pub store: Store,
    exe: PathBuf,
    max_runs: usize,
    state: Mutex<State>,
    wake: Notify,
}

#[derive(Default)]
struct State {
    queue: VecDeque<String>,
    /// Run id → pid of its child.
    running: HashMap<String, u32>,
    /// Runs asked to stop.
    stopping: HashSet<String>,
}

impl Runner {
    /// Loads the runs on disk and starts the scheduler task (call inside the runtime).
    pub fn start(store: Store, exe: PathBuf, max_runs: usize) -> Arc<Runner> {
        let runner = Arc::new(Runner { store, exe, max_runs, state: Mutex::default(), wake: Notify::new() });
        for rec in runner.store.list() {
            if rec.status == RunStatus::Queued {
                runner.lock().queue.push_back(rec.id.clone());
            }
        }
        let r = runner.clone();
        tokio::spawn(async move {
            loop {
                r.start_queued();
                r.wake.notified().await;
            }
        });
        runner
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain collections behind: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a run whose record is saved (status queued).
    pub fn enqueue(&self, id: String) {
        self.lock().queue.push_back(id);
        self.wake.notify_one();
    }

    /// Runs waiting before `id` in the queue (`None`: not queued).
    pub fn queue_position(&self, id: &str) -> Option<usize> {
        self.lock().queue.iter().position(|q| q == id)
    }

    fn start_queued(self: &Arc<Self>) {
        loop {
            let id = {
                let mut s = self.lock();
                if s.running.len() >= self.max_runs {
                    return;
                }
                match s.queue.pop_front() {
                    Some(id) => id,
                    None => return,
                }
            };
            if let Err(e) = self.spawn(&id) {
                tracing::warn!(run = %id, "cannot start: {e}");
                if let Some(mut rec) = self.store.load(&id) {
                    rec.status = RunStatus::Failed;
                    rec.error = Some(format!("could not start the run: {e}"));
                    rec.ended = Some(store::now());
                    let _ = self.store.save(&rec);
                }
            }
        }
    }

    fn spawn(self: &Arc<Self>, id: &str) -> std::io::Result<()> {
        let mut rec = self.store.load(id).ok_or_else(|| std::io::Error::other("its run.json is gone"))?;
        let log_path = self.store.file(id, RunFile::Log).ok_or_else(|| std::io::Error::other("bad id"))?;
        let log = std::fs::File::create(&log_path)?;
        let mut child = tokio::process::Command::new(&self.exe)
            .args(&rec.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let pid = child.id().unwrap_or(0);
        rec.status = RunStatus::Running;
        rec.started = Some(store::now());
        rec.pid = Some(pid);
        self.store.save(&rec)?;
        self.lock().running.insert(id.to_string(), pid);
        tracing::info!(run = %id, pid, "run started");
        let (r, id) = (self.clone(), id.to_string());
        tokio::spawn(async move {
            let status = child.wait().await;
            r.finished(&id, status);
        });
        Ok(())
    }

    fn finished(&self, id: &str, status: std::io::Result<std::process::ExitStatus>) {
        // The id leaves `running` only after the final record is saved, so `reconcile` never
        // settles a run this server is settling.
        let stopping = self.lock().stopping.remove(id);
        if let Some(mut rec) = self.store.load(id) {
            use std::os::unix::process::ExitStatusExt;
            let code = status.as_ref().ok().and_then(|s| s.code().or_else(|| s.signal().map(|g| 128 + g)));
            rec.exit_code = code;
            rec.pid = None;
            rec.ended = Some(store::now());
            rec.status = match code {
                Some(0) => RunStatus::Finished,
                // 130/143: SIGINT/SIGTERM, the run ended cleanly after a step.
                Some(130 | 143) if stopping => RunStatus::Stopped,
                _ => RunStatus::Failed,
            };
            if rec.status != RunStatus::Finished {
                rec.error = self.last_log_line(id).or_else(|| status.err().map(|e| e.to_string()));
            }
            tracing::info!(run = %id, status = ?rec.status, code, "run ended");
            if let Err(e) = self.store.save(&rec) {
                tracing::warn!(run = %id, "cannot update run.json: {e}");
            }
        }
        self.lock().running.remove(id);
        self.wake.notify_one();
    }

    /// The last non-empty line of a run's log (its error message), at most 500 characters.
    fn last_log_line(&self, id: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.store.file(id, RunFile::Log)?).ok()?;
        let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
        Some(line.chars().take(500).collect())
    }

    /// Stops a run: a queued one leaves the queue, a running one gets SIGTERM. Returns the
    /// record, or an error message when it has already ended.
    pub fn stop(&self, id: &str) -> Result<RunRecord, String> {
        let mut rec = self.store.load(id).ok_or_else(|| format!("no run '{id}'"))?;
        let mut s = self.lock();
        if let Some(pos) = s.queue.iter().position(|q| q == id) {
            s.queue.remove(pos);
            drop(s);
            rec.status = RunStatus::Stopped;
            rec.ended = Some(store::now());
            self.store.save(&rec).map_err(|e| format!("cannot update run.json: {e}"))?;
            return Ok(rec);
        }
        if rec.status.is_final() {
            return Err(format!("run '{id}' has already ended ({:?})", rec.status).to_lowercase());
        }
        let pid = s.running.get(id).copied().or(rec.pid).filter(|p| store::pid_alive(*p));
        let Some(pid) = pid else { return Err(format!("run '{id}' has no live process")) };
        s.stopping.insert(id.to_string());
        drop(s);
        // SAFETY: sends SIGTERM to the run's own process (a child of this server, or a
        // `convoy train --runs-dir` that recorded its pid and is still alive).
        if unsafe { libc::kill(pid as i32, libc::SIGTERM) } != 0 {
            return Err(format!("cannot signal run '{id}': {}", std::io::Error::last_os_error()));
        }
        tracing::info!(run = %id, pid, "stop requested");
        Ok(rec)
    }

    /// The record of `id`, settled when it claims to be running but its process is gone and
    /// no child of this server (a run of an earlier server, or a `convoy train` killed -9).
    pub fn reconcile(&self, mut rec: RunRecord) -> RunRecord {
        if rec.status != RunStatus::Running || self.lock().running.contains_key(&rec.id) {
            return rec;
        }
        if rec.pid.is_some_and(store::pid_alive) {
            return rec;
        }
        let ended = self
            .store
            .file(&rec.id, RunFile::Metrics)
            .and_then(|p| std::fs::read_to_string(p).ok())
            .is_some_and(|t| t.lines().rev().take(3).any(|l| l.contains("\"event\":\"run_end\"")));
        rec.status = if ended { RunStatus::Finished } else { RunStatus::Failed };
        if !ended {
            rec.error = Some("its process ended without finishing (killed, or ended while the server was down)".into());
        }
        rec.pid = None;
        rec.ended.get_or_insert_with(store::now);
        let _ = self.store.save(&rec);
        rec
    }
}
