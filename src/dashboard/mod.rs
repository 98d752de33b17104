//! `convoy serve`: a web page and a JSON API to launch training runs and watch them live.
//!
//! Every run is a child process of this very binary (`convoy train ...`), so a run that crashes
//! cannot take the server down; its folder in the runs directory (see `store.rs`) holds
//! `run.json`, the metrics the child writes as JSON lines, its weights, its timeline and its log.
//! The page follows a run through Server-Sent Events that carry each new metrics line once.
//! `runner.rs` queues and starts the children (`--max-runs` at a time), `api.rs` validates
//! requests and serves the API and the embedded page (`assets/`).
//!
//! What it deliberately does not do: authentication (it binds 127.0.0.1 by default), TLS, or
//! running anything but `convoy train` with flags it built itself.

pub mod api;
pub mod error;
pub mod launch;
pub mod options;
pub mod plan;
pub mod runner;
pub mod store;

use crate::cli::{ServeArgs, TrainArgs};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::Path;
use store::{RunFile, RunRecord, RunStatus, Store};

/// Runs the dashboard until SIGINT/SIGTERM.
pub fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let addr: SocketAddr = args.addr.parse().map_err(|_| crate::cli::ConfigError::Invalid {
        flag: "addr",
        msg: format!("'{}' is not IP:PORT, e.g. 127.0.0.1:8080", args.addr),
    })?;
    if args.max_runs == 0 || args.max_runs > 64 {
        anyhow::bail!(crate::cli::ConfigError::Invalid {
            flag: "max-runs",
            msg: format!("{} must be between 1 and 64", args.max_runs)
        });
    }
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "the dashboard has no authentication and anyone who can reach this address can start runs");
    }
    let store = Store::open(&args.runs_dir)
        .with_context(|| format!("cannot create the runs directory {}", args.runs_dir.display()))?;
    let exe = std::env::current_exe().context("cannot find the convoy binary to start runs with")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}; hint: pick another --addr port"))?;
        let local = listener.local_addr()?;
        let runner = runner::Runner::start(store, exe, args.max_runs);
        let app = api::router(api::AppState { runner, data_root: args.data_root.clone() });
        // The tests read this line to find the port of `--addr 127.0.0.1:0`.
        println!("convoy serve: listening on http://{local}");
        tracing::info!(addr = %local, runs_dir = %args.runs_dir.display(), max_runs = args.max_runs, "dashboard");
        axum::serve(listener, app).with_graceful_shutdown(shutdown()).await?;
        Ok(())
    })
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("dashboard stopping (runs in progress go on; a restarted server finds them)");
}

/// A run started by `convoy train --runs-dir DIR`: its folder and record, kept up to date.
pub struct CliRun {
    store: Store,
    rec: RunRecord,
}

impl CliRun {
    /// Makes the run folder, points `--metrics`, `--save` and `--timeline` into it when not
    /// given, and records the run as running; `batch_size` is the run's global batch (the flag,
    /// or a prototxt's batch_size).
    pub fn begin(dir: &Path, args: &mut TrainArgs, batch_size: usize) -> anyhow::Result<CliRun> {
        let store = Store::open(dir).with_context(|| format!("cannot create the runs directory {}", dir.display()))?;
        let id = store.create_run().with_context(|| format!("cannot create a run folder in {}", dir.display()))?;
        let run_dir = dir.join(&id);
        args.metrics.get_or_insert_with(|| run_dir.join(RunFile::Metrics.name()));
        args.save.get_or_insert_with(|| run_dir.join(RunFile::Weights.name()));
        args.timeline.get_or_insert_with(|| run_dir.join(RunFile::Trace.name()));
        let p = &args.parallel;
        let config = serde_json::json!({
            "model": args.model,
            "dataset": args.data.display().to_string(),
            "strategy": format!("{:?}", p.strategy).to_lowercase(),
            "workers": p.workers,
            "threads": args.threads,
            "epochs": args.epochs,
            "steps": args.steps,
            "batch_size": batch_size,
            "lr": args.lr,
            "optimizer": args.optimizer,
        });
        let now = store::now();
        let rec = RunRecord {
            id,
            name: String::new(),
            source: "cli".into(),
            status: RunStatus::Running,
            config,
            args: std::env::args().skip(1).collect(),
            created: now,
            started: Some(now),
            ended: None,
            pid: Some(std::process::id()),
            exit_code: None,
            error: None,
        };
        store.save(&rec).with_context(|| format!("cannot write {}", dir.join(&rec.id).join("run.json").display()))?;
        tracing::info!(run = %rec.id, dir = %dir.display(), "recording the run");
        Ok(CliRun { store, rec })
    }

    /// Records how the run ended.
    pub fn end(&mut self, out: &anyhow::Result<()>) {
        let interrupted = |e: &anyhow::Error| {
            matches!(e.downcast_ref::<crate::train::TrainError>(), Some(crate::train::TrainError::Interrupted { .. }))
        };
        (self.rec.status, self.rec.error) = match out {
            Ok(()) => (RunStatus::Finished, None),
            Err(e) if interrupted(e) => (RunStatus::Stopped, Some(e.to_string())),
            Err(e) => (RunStatus::Failed, Some(e.to_string())),
        };
        self.rec.ended = Some(store::now());
        self.rec.pid = None;
        if let Err(e) = self.store.save(&self.rec) {
            tracing::warn!("cannot update the run record of {}: {e}", self.rec.id);
        }
    }
}
