//! The HTTP side of the dashboard: the JSON API under `/api/` (documented in docs/dashboard.md),
//! the Server-Sent Events feed of a run, downloads, and the embedded page.
//!
//! A launch request is checked field by field here (known model, a dataset that is present,
//! bounds), then turned into `convoy train` flags and checked again by the CLI's own validation,
//! so the server refuses exactly what the command line refuses, with the same messages.
//! Client strings never become paths: datasets are matched against the names found on disk,
//! run ids against `store::valid_id`, downloads against a fixed list.

use super::error::internal;
pub use super::error::ApiError;
pub use super::launch::LaunchRequest;
use super::options;
use super::runner::Runner;
use super::store::{self, RunFile, RunRecord, RunStatus};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Largest request body (a launch request with a model spec): 64 KiB.
pub const BODY_LIMIT: usize = 64 << 10;
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
        .route("/api/plan", get(super::plan::plan))
        .route("/api/runs", get(list_runs).post(create_run))
        .route("/api/runs/{id}", get(get_run))
        .route("/api/runs/{id}/stop", post(stop_run))
        .route("/api/runs/{id}/events", get(run_events))
        .route("/api/runs/{id}/files/{what}", get(download))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such page or API route; hint: the API is documented in docs/dashboard.md",
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

async fn options(State(st): State<AppState>) -> Json<Value> {
    Json(options::options(&st.data_root))
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
    st.runner
        .store
        .load(id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no run '{id}'; hint: GET /api/runs lists them")))
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

async fn create_run(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_type {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the run as JSON with Content-Type: application/json",
        ));
    }
    let req: LaunchRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("malformed launch request: {e}")))?;
    let store = &st.runner.store;
    // The model file's path is fixed before the folder exists; the folder is made only for a
    // valid request.
    // (Validation reads the dataset and builds the model: off the async threads.)
    let model_file = req.sent_model().map_or(RunFile::Model.name(), |m| m.1);
    let placeholder = store.dir().join("ID").join(model_file);
    let (req, data_root) = tokio::task::spawn_blocking({
        let data_root = st.data_root.clone();
        move || req.to_args(&data_root, &placeholder).map(|_| (req, data_root))
    })
    .await
    .map_err(internal)??;
    let id = store.create_run().map_err(internal)?;
    let run_dir = store.run_dir(&id).ok_or_else(|| internal("bad id"))?;
    let (mut args, config) = req.to_args(&data_root, &run_dir.join(model_file))?;
    if let Some((text, file)) = req.sent_model() {
        std::fs::write(run_dir.join(file), text).map_err(internal)?;
    }
    for (flag, f) in [("--metrics", RunFile::Metrics), ("--save", RunFile::Weights), ("--timeline", RunFile::Trace)] {
        args.push(flag.into());
        args.push(run_dir.join(f.name()).display().to_string());
    }
    // A stop (SIGTERM) then leaves the weights of its last step in a checkpoint (the parameter
    // server keeps its optimizer on the servers and has no checkpoints).
    if req.strategy.as_deref() != Some("ps") {
        args.extend([
            "--checkpoint-dir".into(),
            run_dir.join("checkpoints").display().to_string(),
            "--keep".into(),
            "1".into(),
        ]);
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

async fn download(
    State(st): State<AppState>,
    UrlPath((id, what)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    find(&st, &id)?;
    let f = RunFile::download(&what).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, format!("no file '{what}'; hint: weights, metrics, trace or log"))
    })?;
    let path = file_path(&st.runner, &id, f).ok_or_else(|| internal("bad id"))?;
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, format!("run '{id}' has no {what} (yet)")))?;
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
async fn run_events(
    State(st): State<AppState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let rec = find(&st, &id)?;
    let from: u64 =
        headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
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
                let _ = tx
                    .send(
                        SseEvent::default()
                            .event("end")
                            .data(format!("{{\"status\":\"{:?}\"}}", rec.status).to_lowercase()),
                    )
                    .await;
                return;
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, std::convert::Infallible>(e), rx))
    });
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
