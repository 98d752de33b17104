//! `convoy plan` and `convoy plan calibrate` (see plan/).

use crate::net::ModelSpec;
use crate::plan::{self, calibrate, report, Cluster, ModelCost, PlanError};
use clap::Args;
use std::path::PathBuf;

/// Flags of `convoy plan`.
#[derive(Debug, Args, Clone)]
#[command(args_conflicts_with_subcommands = true)]
pub struct PlanArgs {
    /// `calibrate`: measure this machine and write a profile.
    #[command(subcommand)]
    pub kind: Option<PlanKind>,
    /// Built-in model name or path to a .toml model spec.
    #[arg(long, default_value = "lenet")]
    pub model: String,
    /// Global batch size.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Node counts.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32,64,128,256,512,1024")]
    pub nodes: Vec<usize>,
    /// Link bandwidth per node and direction (10gbit, 100mbit, 1.5GB/s).
    #[arg(long, default_value = "10gbit")]
    pub link: String,
    /// Link latency (5us, 1ms).
    #[arg(long, default_value = "5us")]
    pub latency: String,
    /// Node speed in GFLOP/s (ignored with --profile).
    #[arg(long, default_value_t = 100.0)]
    pub node_gflops: f64,
    /// Memory bandwidth of a node (for optimizer updates; --profile measures it).
    #[arg(long, default_value = "10GB/s")]
    pub mem_bandwidth: String,
    /// Cores per node for its worker (below 2 communication cannot overlap computation; below 1,
    /// e.g. emulated hosts sharing a machine's cores, computation slows down by 1/cores).
    #[arg(long, default_value_t = 8.0)]
    pub cores_per_node: f64,
    /// A profile written by `convoy plan calibrate` (measured per-layer times).
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Strategies to consider (dp, ps, pipeline, tensor, hybrid; default all).
    #[arg(long, value_delimiter = ',')]
    pub strategies: Vec<String>,
    /// Show every layout tried (each bucket size, shard count, micro-batch count), not only each
    /// strategy's best.
    #[arg(long)]
    pub all_layouts: bool,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write an SVG plot of images/s and efficiency against nodes.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// `convoy plan` subcommands.
#[derive(Debug, clap::Subcommand, Clone)]
pub enum PlanKind {
    /// Measure per-layer times, memory bandwidth and all-reduce α–β on this machine.
    Calibrate(CalibrateArgs),
}

/// Flags of `convoy plan calibrate`.
#[derive(Debug, Args, Clone)]
pub struct CalibrateArgs {
    /// Built-in model name or path to a .toml model spec.
    #[arg(long, default_value = "lenet")]
    pub model: String,
    /// Batch to time the layers at.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Intra-op threads (the cores of one node) [all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Timed repetitions per layer (the median is kept).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Where to write the profile.
    #[arg(long, default_value = "profile.json")]
    pub out: PathBuf,
}

const STRATEGIES: [&str; 5] = ["dp", "ps", "pipeline", "tensor", "hybrid"];

/// Runs `convoy plan`.
pub fn run(args: &PlanArgs) -> anyhow::Result<()> {
    if let Some(PlanKind::Calibrate(c)) = &args.kind {
        let spec = ModelSpec::resolve(&c.model)?;
        let threads = super::threads_from(c.threads)?;
        let p = calibrate::calibrate(&spec, c.batch, threads, c.reps)?;
        std::fs::write(&c.out, serde_json::to_string_pretty(&p)?).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", c.out.display()))?;
        println!(
            "profile of {} written to {}: {:.3} ms per sample (forward + backward), memcpy {:.1} GB/s, all-reduce α {:.1} µs β {:.2} GB/s",
            spec.name,
            c.out.display(),
            p.model.sample_s() * 1e3,
            p.mem_bandwidth / 1e9,
            p.allreduce_alpha * 1e6,
            p.allreduce_beta / 1e9
        );
        return Ok(());
    }
    let (title, rows) = predict(args)?;
    if let Some(path) = &args.plot {
        std::fs::write(path, report::svg(&title, &rows)).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json_rows(&rows))?);
    } else {
        print!("{}", report::table(&rows));
    }
    Ok(())
}

/// Predictions per node count.
pub type Rows = Vec<(usize, Vec<plan::Prediction>)>;

/// The predictions as JSON: per node count, the recommended layout and every prediction.
pub fn json_rows(rows: &[(usize, Vec<plan::Prediction>)]) -> Vec<serde_json::Value> {
    rows.iter()
        .map(|(n, ps)| {
            let best = ps.iter().min_by(|a, b| a.step_s.total_cmp(&b.step_s)).map(|p| p.strategy.clone());
            serde_json::json!({ "nodes": n, "recommended": best, "predictions": ps })
        })
        .collect()
}

/// Checks the flags of `convoy plan` and predicts every node count: the plot's title and the rows.
pub fn predict(args: &PlanArgs) -> anyhow::Result<(String, Rows)> {
    let spec = ModelSpec::resolve(&args.model)?;
    if args.batch == 0 {
        return Err(PlanError::Input("--batch must be at least 1".into()).into());
    }
    if args.nodes.is_empty() || args.nodes.iter().any(|&n| n == 0 || n > 1_000_000) {
        return Err(PlanError::Input(format!("--nodes {:?}: every node count must be between 1 and 1000000", args.nodes)).into());
    }
    if let Some(s) = args.strategies.iter().find(|s| !STRATEGIES.contains(&s.as_str())) {
        return Err(PlanError::Input(format!("--strategies: unknown strategy '{s}'; hint: {}", STRATEGIES.join(", "))).into());
    }
    let (model, mem): (ModelCost, f64) = match &args.profile {
        Some(path) => {
            let p = calibrate::load(path, &spec)?;
            (p.model, p.mem_bandwidth)
        }
        None => (ModelCost::from_flops(&spec, args.node_gflops)?, plan::parse_bandwidth(&args.mem_bandwidth).map_err(|e| PlanError::Input(e.to_string().replace("--link", "--mem-bandwidth")))?),
    };
    if !(args.cores_per_node.is_finite() && args.cores_per_node > 0.0) {
        return Err(PlanError::Input(format!("--cores-per-node {} must be positive", args.cores_per_node)).into());
    }
    let cluster = Cluster { bandwidth: plan::parse_bandwidth(&args.link)?, latency: plan::parse_latency(&args.latency)?, mem_bandwidth: mem, cores_per_node: args.cores_per_node };
    let planner = plan::Plan { model, cluster, batch: args.batch };
    let rows: Vec<(usize, Vec<plan::Prediction>)> = args.nodes.iter().map(|&n| (n, planner.layouts(n, &args.strategies, args.all_layouts))).collect();
    let title = format!("{} batch {} — link {} latency {}", spec.name, args.batch, args.link, args.latency);
    Ok((title, rows))
}
