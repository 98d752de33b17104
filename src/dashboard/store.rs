//! Runs on disk: one folder per run under the runs directory, named by an id this code makes,
//! holding `run.json` (the record below) and the run's files under fixed names. The record is
//! written atomically (temporary file + rename), so a reader never sees half of one, and the
//! list of runs is simply the folders: it survives a restart of the server.
//!
//! Used by the server (runs it launches) and by `convoy train --runs-dir` (runs started by hand).
//! Nothing here takes a path from a client: ids are made here and checked by `valid_id`, and
//! file names come from `RunFile`.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where a run is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Waiting for a free slot (`--max-runs`).
    Queued,
    /// Its process is training.
    Running,
    /// Ended successfully.
    Finished,
    /// Ended with an error (or its process vanished).
    Failed,
    /// Stopped on request (SIGTERM): ended cleanly after a step.
    Stopped,
}

impl RunStatus {
    /// True once the run has ended.
    pub fn is_final(self) -> bool {
        matches!(self, RunStatus::Finished | RunStatus::Failed | RunStatus::Stopped)
    }
}

/// `run.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    /// The folder's name.
    pub id: String,
    /// A label for people (checked: letters, digits, space, `-_.`; never a path).
    #[serde(default)]
    pub name: String,
    /// `server` (launched from the dashboard) or `cli` (`convoy train --runs-dir`).
    pub source: String,
    /// Status.
    pub status: RunStatus,
    /// The settings, as the launch form names them.
    pub config: serde_json::Value,
    /// The `convoy` arguments the run was started with.
    pub args: Vec<String>,
    /// Unix time (s) it was created, started and ended.
    pub created: f64,
    /// Start time.
    #[serde(default)]
    pub started: Option<f64>,
    /// End time.
    #[serde(default)]
    pub ended: Option<f64>,
    /// Process id while running.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Exit code of the process.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Why it failed (the last line of its log).
    #[serde(default)]
    pub error: Option<String>,
}

/// The files of a run, by fixed name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunFile {
    /// `run.json`.
    Record,
    /// JSON-lines metrics.
    Metrics,
    /// Final weights (safetensors).
    Weights,
    /// Chrome-trace timeline.
    Trace,
    /// stdout and stderr of the run's process.
    Log,
    /// A model spec sent with the launch request.
    Model,
}

impl RunFile {
    /// The file's name in the run folder.
    pub fn name(self) -> &'static str {
        match self {
            RunFile::Record => "run.json",
            RunFile::Metrics => "metrics.jsonl",
            RunFile::Weights => "weights.safetensors",
            RunFile::Trace => "trace.json",
            RunFile::Log => "log.txt",
            RunFile::Model => "model.toml",
        }
    }

    /// The downloadable file called `what` in the API (`weights`, `metrics`, `trace`, `log`).
    pub fn download(what: &str) -> Option<RunFile> {
        Some(match what {
            "weights" => RunFile::Weights,
            "metrics" => RunFile::Metrics,
            "trace" => RunFile::Trace,
            "log" => RunFile::Log,
            _ => return None,
        })
    }
}

/// Unix time in seconds.
pub fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// True for ids this code makes: 1–64 ASCII letters, digits and `-` (so never `..` or a `/`).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The runs directory.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creates) the runs directory.
    pub fn open(dir: &Path) -> std::io::Result<Store> {
        std::fs::create_dir_all(dir)?;
        Ok(Store { dir: dir.to_path_buf() })
    }

    /// The runs directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folder of run `id` (`None` for an id this code would not make).
    pub fn run_dir(&self, id: &str) -> Option<PathBuf> {
        valid_id(id).then(|| self.dir.join(id))
    }

    /// A file of run `id`.
    pub fn file(&self, id: &str, f: RunFile) -> Option<PathBuf> {
        self.run_dir(id).map(|d| d.join(f.name()))
    }

    /// Makes the folder of a new run and returns its id: `YYYYMMDD-HHMMSS-NNNN` (UTC), unique
    /// because the folder is created exclusively.
    pub fn create_run(&self) -> std::io::Result<String> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let secs = now() as u64;
        let (d, t) = (secs / 86400, secs % 86400);
        let (y, m, day) = civil_from_days(d as i64);
        for _ in 0..1000 {
            // Process id and a counter keep ids apart across processes and within one.
            let n = (std::process::id().wrapping_mul(2654435761).wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed)))
                % 0x10000;
            let id = format!("{y:04}{m:02}{day:02}-{:02}{:02}{:02}-{n:04x}", t / 3600, t / 60 % 60, t % 60);
            match std::fs::create_dir(self.dir.join(&id)) {
                Ok(()) => return Ok(id),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other("could not find a free run id"))
    }

    /// Writes `run.json` atomically.
    pub fn save(&self, rec: &RunRecord) -> std::io::Result<()> {
        let dir = self.run_dir(&rec.id).ok_or_else(|| std::io::Error::other(format!("bad run id '{}'", rec.id)))?;
        let tmp = dir.join("run.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(rec).map_err(std::io::Error::other)?)?;
        std::fs::rename(&tmp, dir.join(RunFile::Record.name()))
    }

    /// Reads `run.json` of run `id`.
    pub fn load(&self, id: &str) -> Option<RunRecord> {
        let text = std::fs::read(self.file(id, RunFile::Record)?).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Every run with a readable record, oldest first.
    pub fn list(&self) -> Vec<RunRecord> {
        let mut runs: Vec<RunRecord> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|id| self.load(id)))
            .collect();
        runs.sort_by(|a, b| a.created.total_cmp(&b.created).then(a.id.cmp(&b.id)));
        runs
    }
}

/// True when process `pid` exists (signal 0 probes without sending anything).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(p) = i32::try_from(pid) else { return false };
    // SAFETY: kill with signal 0 only checks that the process exists and may be signalled.
    p > 0 && unsafe { libc::kill(p, 0) } == 0
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_and_dates_are_right() {
        assert!(valid_id("20260101-120000-00ff"));
        for bad in ["", "..", "../x", "a/b", "a b", "x.json", &"a".repeat(65)] {
            assert!(!valid_id(bad), "{bad}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19723), (2024, 1, 1));
        assert_eq!(civil_from_days(19782), (2024, 2, 29));
    }

    #[test]
    fn records_round_trip_and_list_oldest_first() {
        let dir = std::env::temp_dir().join(format!("convoy-store-{}", std::process::id()));
        let store = Store::open(&dir).unwrap();
        let mut ids = Vec::new();
        for i in 0..2 {
            let id = store.create_run().unwrap();
            let rec = RunRecord {
                id: id.clone(),
                name: format!("r{i}"),
                source: "cli".into(),
                status: RunStatus::Queued,
                config: serde_json::json!({"workers": 2}),
                args: vec!["train".into()],
                created: 100.0 + i as f64,
                started: None,
                ended: None,
                pid: None,
                exit_code: None,
                error: None,
            };
            store.save(&rec).unwrap();
            assert_eq!(store.load(&id).unwrap(), rec);
            ids.push(id);
        }
        assert_ne!(ids[0], ids[1]);
        assert_eq!(store.list().iter().map(|r| r.id.clone()).collect::<Vec<_>>(), ids);
        assert!(store.file("../etc", RunFile::Record).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
