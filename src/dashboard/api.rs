//! The HTTP side of the dashboard: the JSON API under `/api/` (documented in docs/dashboard.md),
//! the Server-Sent Events feed of a run, downloads, and the embedded page.
//!
//! A launch request is checked field by field here (known model, a dataset that is present,
//! bounds), then turned into `convoy train` flags and checked again by the CLI's own validation,
//! so the server refuses exactly what the command line refuses, with the same messages.
//! Client strings never become paths: datasets are matched against the names found on disk,
//! run ids against `store::valid_id`, downloads against a fixed list.

use super::runner::Runner;
use super::store::{self, RunFile, RunRecord, RunStatus};
use crate::cli::{Cli, Command};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Largest request body (a launch request with a model spec): 64 KiB.
pub const BODY_LIMIT: usize = 64 << 10;
/// Largest model spec sent with a launch request.
const SPEC_LIMIT: usize = 32 << 10;
/// Most workers a run from the page may have (threads of one machine).
pub const MAX_WORKERS: usize = 64;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The run queue and the runs directory.
    pub runner: Arc<Runner>,
    /// Where datasets are looked for.
    pub data_root: PathBuf,
}

/// The router: API, feed, downloads and page.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { Html(INDEX) }))
        .route("/assets/app.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], APP_JS) }))
        .route("/assets/style.css", get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE_CSS) }))
        .route("/api/options", get(options))
        .route("/api/runs", get(list_runs).post(create_run))
        .route("/api/runs/{id}", get(get_run))
        .route("/api/runs/{id}/stop", post(stop_run))
        .route("/api/runs/{id}/events", get(run_events))
        .route("/api/runs/{id}/files/{what}", get(download))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such page or API route; hint: the API is documented in docs/dashboard.md") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// An error answer: the status and `{"error": message}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn new(code: StatusCode, msg: impl Into<String>) -> ApiError {
        ApiError(code, msg.into())
    }
    fn bad(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, msg)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// Datasets: sub-directories of the data root holding MNIST-format training images.
pub fn datasets(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| ["train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"].iter().any(|f| e.path().join(f).is_file()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

async fn options(State(st): State<AppState>) -> Json<Value> {
    Json(json!({
        "models": crate::net::spec::ZOO,
        "datasets": datasets(&st.data_root),
        "strategies": ["allreduce", "ps"],
        "allreduce": ["direct", "ring", "tree", "naive"],
        "ps_modes": ["sync", "async", "ssp"],
        "optimizers": ["sgd", "adam", "adamw"],
        "max_workers": MAX_WORKERS,
        "cores": crate::cli::default_threads(),
    }))
}

/// A run as the API shows it: the record plus its queue position and downloadable files.
fn view(runner: &Runner, rec: RunRecord) -> Value {
    let rec = runner.reconcile(rec);
    let files: Vec<&str> = ["weights", "metrics", "trace", "log"]
        .into_iter()
        .filter(|w| RunFile::download(w).and_then(|f| file_path(runner, &rec.id, f)).is_some_and(|p| p.is_file()))
        .collect();
    let mut v = serde_json::to_value(&rec).unwrap_or(Value::Null);
    v["files"] = json!(files);
    if rec.status == RunStatus::Queued {
        v["queue_position"] = json!(runner.queue_position(&rec.id));
    }
    v
}

async fn list_runs(State(st): State<AppState>) -> Json<Value> {
    let runs: Vec<Value> = st.runner.store.list().into_iter().rev().map(|r| view(&st.runner, r)).collect();
    Json(json!({ "runs": runs }))
}

fn find(st: &AppState, id: &str) -> Result<RunRecord, ApiError> {
    if !store::valid_id(id) {
        return Err(ApiError::bad(format!("'{id}' is not a run id; hint: ids look like 20260101-120000-00ff")));
    }
    st.runner.store.load(id).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no run '{id}'; hint: GET /api/runs lists them")))
}

async fn get_run(State(st): State<AppState>, UrlPath(id): UrlPath<String>) -> Result<Json<Value>, ApiError> {
    let rec = find(&st, &id)?;
    Ok(Json(view(&st.runner, rec)))
}

async fn stop_run(State(st): State<AppState>, UrlPath(id): UrlPath<String>) -> Result<Json<Value>, ApiError> {
    find(&st, &id)?;
    let rec = st.runner.stop(&id).map_err(|m| ApiError::new(StatusCode::CONFLICT, m))?;
    Ok(Json(view(&st.runner, rec)))
}

/// The body of `POST /api/runs`. Absent fields take `convoy train`'s defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchRequest {
    /// A label (letters, digits, space, `-_.`, at most 64).
    #[serde(default)]
    pub name: String,
    /// A model of the zoo.
    #[serde(default)]
    pub model: Option<String>,
    /// A model spec (TOML, docs/models.md) instead of `model`.
    #[serde(default)]
    pub model_spec: Option<String>,
    /// A dataset from `GET /api/options`.
    #[serde(default)]
    pub dataset: Option<String>,
    /// `allreduce` or `ps`.
    #[serde(default)]
    pub strategy: Option<String>,
    /// All-reduce algorithm.
    #[serde(default)]
    pub allreduce: Option<String>,
    /// Bucket cap, MiB.
    #[serde(default)]
    pub bucket_mb: Option<f64>,
    /// Overlap reduction with backward.
    #[serde(default)]
    pub overlap: Option<bool>,
    /// Micro-batches per reduction.
    #[serde(default)]
    pub accumulate: Option<usize>,
    /// Parameter-server mode.
    #[serde(default)]
    pub ps_mode: Option<String>,
    /// SSP staleness bound.
    #[serde(default)]
    pub staleness: Option<u64>,
    /// Parameter-server shards.
    #[serde(default)]
    pub servers: Option<usize>,
    /// Data-parallel workers.
    #[serde(default)]
    pub workers: Option<usize>,
    /// Intra-op threads per worker.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Epochs.
    #[serde(default)]
    pub epochs: Option<u64>,
    /// Steps (instead of epochs).
    #[serde(default)]
    pub steps: Option<u64>,
    /// Global batch.
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Learning rate.
    #[serde(default)]
    pub lr: Option<f32>,
    /// `sgd`, `adam`, `adamw`.
    #[serde(default)]
    pub optimizer: Option<String>,
    /// LR schedule (`convoy train --schedule`).
    #[serde(default)]
    pub schedule: Option<String>,
    /// Seed.
    #[serde(default)]
    pub seed: Option<u64>,
}

fn one_of(field: &str, v: &Option<String>, allowed: &[&str]) -> Result<(), ApiError> {
    match v {
        Some(x) if !allowed.contains(&x.as_str()) => Err(ApiError::bad(format!("{field}: unknown value '{x}'; hint: one of {allowed:?}"))),
        _ => Ok(()),
    }
}

impl LaunchRequest {
    /// Checks the request and returns the `convoy train` flags (without the run's file paths)
    /// and the settings to show. `model_path` is where a sent model spec will be written.
    pub fn to_args(&self, data_root: &Path, model_path: &Path) -> Result<(Vec<String>, Value), ApiError> {
        let name_ok = |c: char| c.is_ascii_alphanumeric() || " -_.".contains(c);
        if self.name.chars().count() > 64 || !self.name.chars().all(name_ok) || self.name.contains("..") {
            return Err(ApiError::bad(format!("name '{}' is not allowed; hint: at most 64 letters, digits, spaces, '-', '_' or '.' (no '..' or '/')", self.name)));
        }
        let model = match (&self.model, &self.model_spec) {
            (Some(_), Some(_)) => return Err(ApiError::bad("give either model or model_spec, not both")),
            (_, Some(spec)) => {
                if spec.len() > SPEC_LIMIT {
                    return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("model_spec is {} bytes; hint: at most {SPEC_LIMIT}", spec.len())));
                }
                crate::net::ModelSpec::from_toml(spec, "model_spec").map_err(|e| ApiError::bad(format!("model_spec: {e}")))?;
                model_path.display().to_string()
            }
            (m, None) => {
                let m = m.clone().unwrap_or_else(|| "lenet".into());
                if !crate::net::spec::ZOO.contains(&m.as_str()) {
                    return Err(ApiError::bad(format!("unknown model '{m}'; hint: one of {:?}, or send a TOML spec as model_spec", crate::net::spec::ZOO)));
                }
                m
            }
        };
        let present = datasets(data_root);
        let dataset = self.dataset.clone().unwrap_or_else(|| "mnist".into());
        if !present.contains(&dataset) {
            return Err(ApiError::bad(format!("unknown dataset '{dataset}'; hint: one of {present:?} (folders of the server's --data-root)")));
        }
        one_of("strategy", &self.strategy, &["allreduce", "ps"])?;
        one_of("allreduce", &self.allreduce, &["direct", "ring", "tree", "naive"])?;
        one_of("ps_mode", &self.ps_mode, &["sync", "async", "ssp"])?;
        one_of("optimizer", &self.optimizer, &["sgd", "adam", "adamw"])?;
        let workers = self.workers.unwrap_or(1);
        if workers == 0 || workers > MAX_WORKERS {
            return Err(ApiError::bad(format!("workers: {workers} is out of range; hint: 1 to {MAX_WORKERS}")));
        }
        if let Some(t) = self.threads {
            if t == 0 || t > 256 {
                return Err(ApiError::bad(format!("threads: {t} is out of range; hint: 1 to the number of cores ({})", crate::cli::default_threads())));
            }
        }
        if self.epochs.is_some_and(|e| e == 0 || e > 1000) || self.steps.is_some_and(|s| s == 0 || s > 10_000_000) {
            return Err(ApiError::bad("epochs must be 1 to 1000 and steps 1 to 10000000"));
        }
        let mut a: Vec<String> = vec!["train".into(), "--model".into(), model, "--data".into(), data_root.join(&dataset).display().to_string()];
        let mut flag = |f: &str, v: Option<String>| {
            if let Some(v) = v {
                a.push(format!("--{f}"));
                a.push(v);
            }
        };
        flag("workers", Some(workers.to_string()));
        flag("strategy", self.strategy.clone());
        flag("allreduce", self.allreduce.clone());
        flag("bucket-mb", self.bucket_mb.map(|v| v.to_string()));
        flag("accumulate", self.accumulate.map(|v| v.to_string()));
        flag("ps-mode", self.ps_mode.clone());
        flag("staleness", self.staleness.map(|v| v.to_string()));
        flag("servers", self.servers.map(|v| v.to_string()));
        flag("threads", self.threads.map(|v| v.to_string()));
        flag("epochs", self.epochs.map(|v| v.to_string()));
        flag("steps", self.steps.map(|v| v.to_string()));
        flag("batch-size", self.batch_size.map(|v| v.to_string()));
        flag("lr", self.lr.map(|v| v.to_string()));
        flag("optimizer", self.optimizer.clone());
        flag("schedule", self.schedule.clone());
        flag("seed", self.seed.map(|v| v.to_string()));
        if self.overlap == Some(false) {
            a.push("--no-overlap".into());
        }
        // The CLI's own checks, on the CLI's parse of these very flags (a sent spec is checked
        // above; the zoo's lenet stands in for it here).
        let mut check = a.clone();
        if self.model_spec.is_some() {
            check[2] = "lenet".into();
        }
        let cli = Cli::try_parse_from(std::iter::once("convoy".to_string()).chain(check)).map_err(|e| ApiError::bad(first_line(&e.to_string())))?;
        let Command::Train(t) = cli.command else { return Err(internal("not a train command")) };
        let cfg = t.to_config().map_err(|e| ApiError::bad(e.to_string()))?;
        let pc = t.parallel.to_config().map_err(|e| ApiError::bad(e.to_string()))?;
        pc.validate(&cfg).map_err(|e| ApiError::bad(e.to_string()))?;
        let config = json!({
            "model": if self.model_spec.is_some() { "model_spec (model.toml)".to_string() } else { a[2].clone() },
            "dataset": dataset,
            "strategy": self.strategy.clone().unwrap_or_else(|| "allreduce".into()),
            "workers": workers,
            "threads": cfg.threads,
            "epochs": if cfg.steps.is_some() { None } else { Some(cfg.epochs) },
            "steps": cfg.steps,
            "batch_size": cfg.batch_size,
            // Through its decimal form: 0.01 stays 0.01 (as f64 it would show f32's rounding).
            "lr": cfg.schedule.base_lr.to_string().parse::<f64>().unwrap_or(f64::NAN),
            "optimizer": self.optimizer.clone().unwrap_or_else(|| "sgd".into()),
            "allreduce": self.allreduce, "bucket_mb": self.bucket_mb, "overlap": self.overlap, "accumulate": self.accumulate,
            "ps_mode": self.ps_mode, "staleness": self.staleness, "servers": self.servers,
            "schedule": self.schedule, "seed": self.seed,
        });
        Ok((a, config))
    }
}

fn first_line(s: &str) -> String {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s).trim().to_string()
}

async fn create_run(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<(StatusCode, Json<Value>), ApiError> {
    let json_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    if !json_type {
        return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send the run as JSON with Content-Type: application/json"));
    }
    let req: LaunchRequest = serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("malformed launch request: {e}")))?;
    let store = &st.runner.store;
    // The model file's path is fixed before the folder exists; the folder is made only for a
    // valid request.
    let placeholder = store.dir().join("ID").join(RunFile::Model.name());
    req.to_args(&st.data_root, &placeholder)?;
    let id = store.create_run().map_err(internal)?;
    let run_dir = store.run_dir(&id).ok_or_else(|| internal("bad id"))?;
    let (mut args, config) = req.to_args(&st.data_root, &run_dir.join(RunFile::Model.name()))?;
    if let Some(spec) = &req.model_spec {
        std::fs::write(run_dir.join(RunFile::Model.name()), spec).map_err(internal)?;
    }
    for (flag, f) in [("--metrics", RunFile::Metrics), ("--save", RunFile::Weights), ("--timeline", RunFile::Trace)] {
        args.push(flag.into());
        args.push(run_dir.join(f.name()).display().to_string());
    }
    // A stop (SIGTERM) then leaves the weights of its last step in a checkpoint (the parameter
    // server keeps its optimizer on the servers and has no checkpoints).
    if req.strategy.as_deref() != Some("ps") {
        args.extend(["--checkpoint-dir".into(), run_dir.join("checkpoints").display().to_string(), "--keep".into(), "1".into()]);
    }
    args.extend(["--no-progress".into(), "--log-level".into(), "info".into()]);
    let rec = RunRecord {
        id: id.clone(),
        name: req.name.clone(),
        source: "server".into(),
        status: RunStatus::Queued,
        config,
        args,
        created: store::now(),
        started: None,
        ended: None,
        pid: None,
        exit_code: None,
        error: None,
    };
    store.save(&rec).map_err(internal)?;
    tracing::info!(run = %id, name = %rec.name, "run queued");
    st.runner.enqueue(id);
    Ok((StatusCode::CREATED, Json(view(&st.runner, rec))))
}

async fn download(State(st): State<AppState>, UrlPath((id, what)): UrlPath<(String, String)>) -> Result<Response, ApiError> {
    find(&st, &id)?;
    let f = RunFile::download(&what).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no file '{what}'; hint: weights, metrics, trace or log")))?;
    let path = file_path(&st.runner, &id, f).ok_or_else(|| internal("bad id"))?;
    let bytes = tokio::fs::read(&path).await.map_err(|_| ApiError::new(StatusCode::NOT_FOUND, format!("run '{id}' has no {what} (yet)")))?;
    let (ctype, ext) = match f {
        RunFile::Weights => ("application/octet-stream", "safetensors"),
        RunFile::Metrics => ("application/x-ndjson", "jsonl"),
        RunFile::Trace => ("application/json", "json"),
        _ => ("text/plain; charset=utf-8", "txt"),
    };
    let disp = format!("attachment; filename=\"{id}-{what}.{ext}\"");
    Ok(([(header::CONTENT_TYPE, ctype.to_string()), (header::CONTENT_DISPOSITION, disp)], bytes).into_response())
}

/// Where file `f` of run `id` is: its fixed name, except for the weights of a run stopped before
/// the end, which are those of its last checkpoint.
fn file_path(runner: &Runner, id: &str, f: RunFile) -> Option<PathBuf> {
    let path = runner.store.file(id, f)?;
    if f == RunFile::Weights && !path.is_file() {
        if let Ok(dir) = crate::checkpoint::run::resolve(&runner.store.run_dir(id)?.join("checkpoints")) {
            return Some(dir.join("model.safetensors"));
        }
    }
    Some(path)
}

/// `GET /api/runs/{id}/events`: the run's record as a `status` event, then each line of its
/// metrics file once as a `metric` event (id = byte offset after it, so a reconnecting
/// EventSource resumes with `Last-Event-ID` instead of receiving the history again), a `status`
/// event whenever the status changes, and `end` once the run has ended and every line was sent.
async fn run_events(State(st): State<AppState>, UrlPath(id): UrlPath<String>, headers: HeaderMap) -> Result<impl IntoResponse, ApiError> {
    let rec = find(&st, &id)?;
    let from: u64 = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
    let (tx, rx) = tokio::sync::mpsc::channel::<SseEvent>(256);
    let runner = st.runner.clone();
    tokio::spawn(async move {
        let path = runner.store.file(&id, RunFile::Metrics).unwrap_or_default();
        let (mut offset, mut partial) = (from, Vec::<u8>::new());
        let mut last_status = None;
        let mut rec = rec;
        loop {
            rec = runner.reconcile(runner.store.load(&id).unwrap_or(rec));
            if last_status != Some(rec.status) {
                last_status = Some(rec.status);
                let data = serde_json::to_string(&view(&runner, rec.clone())).unwrap_or_default();
                if tx.send(SseEvent::default().event("status").data(data)).await.is_err() {
                    return;
                }
            }
            let ended = rec.status.is_final();
            let new = read_from(&path, offset).await;
            let got = !new.is_empty();
            partial.extend_from_slice(&new);
            while let Some(nl) = partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = partial.drain(..=nl).collect();
                offset += line.len() as u64;
                let text = String::from_utf8_lossy(&line[..line.len() - 1]).to_string();
                if text.trim().is_empty() {
                    continue;
                }
                if tx.send(SseEvent::default().event("metric").id(offset.to_string()).data(text)).await.is_err() {
                    return;
                }
            }
            // The child has exited once the status is final: nothing more will be written.
            if ended && !got {
                let _ = tx.send(SseEvent::default().event("end").data(format!("{{\"status\":\"{:?}\"}}", rec.status).to_lowercase())).await;
                return;
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok::<_, std::convert::Infallible>(e), rx)) });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The bytes of `path` from `offset` on (none when it does not exist yet).
async fn read_from(path: &Path, offset: u64) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let Ok(mut f) = tokio::fs::File::open(path).await else { return Vec::new() };
    let mut buf = Vec::new();
    if f.seek(std::io::SeekFrom::Start(offset)).await.is_ok() {
        let _ = f.read_to_end(&mut buf).await;
    }
    buf
}
