//! `GET /api/plan`: `convoy plan` for the page — the predicted images/s and scaling efficiency
//! of every strategy against nodes, as the SVG plot of `plan::report::svg` and as JSON rows.
//! The query is turned into `convoy plan` flags and checked by the CLI's own parser and
//! validation; the model must be one of the zoo (no path from the client reaches the
//! filesystem), and there is no `--profile` (calibrate on the command line).

use super::error::{first_line, internal, ApiError};
use crate::cli::{Cli, Command};
use axum::extract::Query;
use axum::Json;
use clap::Parser;
use serde::Deserialize;
use serde_json::{json, Value};

/// Most node counts in one request.
const MAX_NODE_COUNTS: usize = 32;

/// The query of `GET /api/plan` (every field optional: `convoy plan`'s defaults).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanQuery {
    /// A model of the zoo.
    pub model: Option<String>,
    /// Global batch.
    pub batch: Option<usize>,
    /// Node counts, comma-separated.
    pub nodes: Option<String>,
    /// Link bandwidth (10gbit, 100mbit, 1.5GB/s).
    pub link: Option<String>,
    /// Link latency (5us, 1ms).
    pub latency: Option<String>,
    /// Node speed, GFLOP/s.
    pub node_gflops: Option<f64>,
    /// Cores per node.
    pub cores_per_node: Option<f64>,
    /// Jitter of a node's computation (0.02 or 2%).
    pub jitter: Option<String>,
    /// MPI's eager limit (64KiB, 8MiB).
    pub eager_limit: Option<String>,
    /// Strategies (dp, ps, pipeline, tensor, hybrid), comma-separated.
    pub strategies: Option<String>,
}

impl PlanQuery {
    /// The `convoy plan` flags of this query, after the checks the CLI does not make.
    pub fn to_args(&self) -> Result<Vec<String>, ApiError> {
        let mut a = vec!["convoy".to_string(), "plan".into()];
        if let Some(m) = &self.model {
            if !crate::net::spec::ZOO.contains(&m.as_str()) {
                return Err(ApiError::bad(format!("unknown model '{m}'; hint: one of {:?}", crate::net::spec::ZOO)));
            }
        }
        if self.nodes.as_ref().is_some_and(|n| n.split(',').count() > MAX_NODE_COUNTS) {
            return Err(ApiError::bad(format!("nodes: at most {MAX_NODE_COUNTS} node counts")));
        }
        let mut flag = |f: &str, v: Option<String>| {
            if let Some(v) = v {
                a.push(format!("--{f}"));
                a.push(v);
            }
        };
        flag("model", self.model.clone());
        flag("batch", self.batch.map(|v| v.to_string()));
        flag("nodes", self.nodes.clone());
        flag("link", self.link.clone());
        flag("latency", self.latency.clone());
        flag("node-gflops", self.node_gflops.map(|v| v.to_string()));
        flag("cores-per-node", self.cores_per_node.map(|v| v.to_string()));
        flag("jitter", self.jitter.clone());
        flag("eager-limit", self.eager_limit.clone());
        flag("strategies", self.strategies.clone());
        // A value that looks like a flag would be read as one.
        if a.iter().skip(3).step_by(2).any(|v| v.starts_with('-')) {
            return Err(ApiError::bad("a value starts with '-'; hint: numbers and names only"));
        }
        Ok(a)
    }
}

/// `GET /api/plan?model=alexnet&nodes=1,2,4,8&link=10gbit`: `{"title", "svg", "plan": [...]}`.
pub async fn plan(
    query: Result<Query<PlanQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad(format!("bad plan query: {}; hint: model, batch, nodes, link, latency, node_gflops, cores_per_node, jitter, eager_limit, strategies", e.body_text())))?;
    let args = q.to_args()?;
    let out = tokio::task::spawn_blocking(move || -> Result<Value, ApiError> {
        let cli = Cli::try_parse_from(&args).map_err(|e| ApiError::bad(first_line(&e.to_string())))?;
        let Command::Plan(p) = cli.command else { return Err(internal("not a plan command")) };
        let (title, rows) = crate::cli::plan::predict(&p).map_err(|e| ApiError::bad(e.to_string()))?;
        Ok(json!({ "title": title, "svg": crate::plan::report::svg(&title, &rows), "plan": crate::cli::plan::json_rows(&rows) }))
    })
    .await
    .map_err(internal)??;
    Ok(Json(out))
}
