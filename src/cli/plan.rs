//! `convoy plan` and `convoy plan calibrate` (see plan/).

use crate::cli::ScheduleArg;
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
    /// Link bandwidth per node and direction (10gbit, 100mbit, 1.5GB/s), or `profile`: the MPI
    /// link measured by `calibrate --comm mpi` (needs --profile).
    #[arg(long, default_value = "10gbit")]
    pub link: String,
    /// Link latency (5us, 1ms), or `profile` (as --link).
    #[arg(long, default_value = "5us")]
    pub latency: String,
    /// Node speed in GFLOP/s (ignored with --profile).
    #[arg(long, default_value_t = 100.0)]
    pub node_gflops: f64,
    /// Memory bandwidth of a node (for optimizer updates; --profile measures it).
    #[arg(long, default_value = "10GB/s")]
    pub mem_bandwidth: String,
    /// Cores per node for its worker (below 1, e.g. emulated hosts sharing a machine's cores,
    /// computation slows down by 1/cores and communication cannot overlap it).
    #[arg(long, default_value_t = 8.0)]
    pub cores_per_node: f64,
    /// How fast a node computes relative to the machine the profile (or --node-gflops) describes:
    /// 2 = twice as fast. Unlike --cores-per-node below 1, it keeps communication overlapping.
    #[arg(long, default_value_t = 1.0)]
    pub node_speed: f64,
    /// Spread of a node's computation: the coefficient of variation of one second of it (0.02
    /// or 2%). Each synchronisation of n nodes then waits for the slowest (reported as
    /// straggle): jitter·√T·E[max of n standard normals] after a phase of T seconds.
    #[arg(long, default_value = "0")]
    pub jitter: String,
    /// MPI's eager limit (Open MPI over TCP: `btl_tcp_eager_limit`, 64 KiB by default): a
    /// pipeline's message up to this size is sent at once, the rest of a longer one only once
    /// the receiving stage has posted its receive.
    #[arg(long, default_value = "64KiB")]
    pub eager_limit: String,
    /// A profile written by `convoy plan calibrate` (measured per-layer times).
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Strategies to consider (dp, ps, pipeline, tensor, hybrid; default all).
    #[arg(long, value_delimiter = ',')]
    pub strategies: Vec<String>,
    /// Parameter-server shards to predict (default: 1, 2, 4, ... up to the nodes, the fastest kept).
    #[arg(long)]
    pub servers: Option<usize>,
    /// Pipeline micro-batches to predict (default: 1, 2, 4 and 8 × the stages, the fastest kept).
    #[arg(long)]
    pub micro_batches: Option<usize>,
    /// Pipeline schedule to predict (as `convoy train --pipeline-schedule`; default 1f1b).
    #[arg(long, value_enum)]
    pub pipeline_schedule: Option<ScheduleArg>,
    /// Hybrid model-parallel group size to predict (default: every divisor of the nodes).
    #[arg(long)]
    pub mp: Option<usize>,
    /// All-reduce bucket size in MiB to predict (default: 1, 5, 25 and 100).
    #[arg(long)]
    pub bucket_mb: Option<f64>,
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
    /// The library that runs convolutions and linear layers, as for `convoy train` [auto when
    /// built with oneDNN, else native].
    #[arg(long, value_parser = super::parse_backend, env = "CONVOY_BACKEND")]
    pub backend: Option<crate::layers::Backend>,
    /// Timed repetitions per layer (the median is kept).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Where to write the profile.
    #[arg(long, default_value = "profile.json")]
    pub out: PathBuf,
    /// `mpi`: also measure the link between processes 0 and 1 of this MPI job (run under
    /// mpirun, one process per host; rank 0 then times the layers while the others wait asleep
    /// and writes the profile); `local`: this process only; `auto`: mpi under a launcher.
    #[arg(long, value_enum, default_value = "local")]
    pub comm: super::CommArg,
}

const STRATEGIES: [&str; 5] = ["dp", "ps", "pipeline", "tensor", "hybrid"];

/// Runs `convoy plan`.
pub fn run(args: &PlanArgs) -> anyhow::Result<()> {
    if let Some(PlanKind::Calibrate(c)) = &args.kind {
        return calibrate_cmd(c);
    }
    let (title, rows) = predict(args)?;
    if let Some(path) = &args.plot {
        std::fs::write(path, report::svg(&title, &rows))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json_rows(&rows))?);
    } else {
        print!("{}", report::table(&rows));
    }
    Ok(())
}

fn calibrate_cmd(c: &CalibrateArgs) -> anyhow::Result<()> {
    let spec = ModelSpec::resolve(&c.model)?;
    let threads = super::threads_from(c.threads)?;
    let mpi = match c.comm {
        super::CommArg::Local => false,
        super::CommArg::Mpi => true,
        super::CommArg::Auto => crate::comm::launch::launched(),
    };
    let p = if mpi {
        calibrate_mpi(&spec, c, threads)?
    } else {
        Some(calibrate::calibrate(
            &spec,
            c.batch,
            (threads, c.backend.unwrap_or(crate::layers::Backend::best())),
            c.reps,
            None,
        )?)
    };
    let Some(p) = p else { return Ok(()) };
    std::fs::write(&c.out, serde_json::to_string_pretty(&p)?)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", c.out.display()))?;
    let link = p.mpi_link.as_ref().map_or(String::new(), |l| {
        format!(
            ", MPI link: ping-pong α {:.1} µs β {:.1} MB/s, all-reduce α {:.1} µs β {:.1} MB/s, parameter-server round β {:.1} MB/s",
            l.alpha * 1e6,
            l.beta / 1e6,
            l.allreduce_alpha * 1e6,
            l.allreduce_beta / 1e6,
            l.server_beta / 1e6
        )
    });
    println!(
        "profile of {} written to {}: {:.3} ms per sample (forward + backward), memcpy {:.1} GB/s, all-reduce α {:.1} µs β {:.2} GB/s{link}",
        spec.name,
        c.out.display(),
        p.model.sample_s() * 1e3,
        p.mem_bandwidth / 1e9,
        p.allreduce_alpha * 1e6,
        p.allreduce_beta / 1e9
    );
    Ok(())
}

/// `calibrate --comm mpi`: the link between ranks 0 and 1, then rank 0 alone times the layers
/// (the others sleep in a barrier, so that on hosts sharing cores they take none); the profile
/// on rank 0, `None` elsewhere.
#[cfg(feature = "mpi")]
fn calibrate_mpi(spec: &ModelSpec, c: &CalibrateArgs, threads: usize) -> anyhow::Result<Option<calibrate::Profile>> {
    use crate::comm::Communicator;
    let mpi = crate::comm::mpi::Mpi::init(crate::comm::local::DEFAULT_STALL, false)?;
    let world = mpi.world();
    let grad_bytes = 4 * ModelCost::from_flops(spec, 1.0)?.params();
    let link = calibrate::fit_mpi_link(world, grad_bytes)?;
    let p = if world.rank() == 0 {
        Some(calibrate::calibrate(
            spec,
            c.batch,
            (threads, c.backend.unwrap_or(crate::layers::Backend::best())),
            c.reps,
            link,
        ))
    } else {
        None
    };
    world.quiet_barrier()?;
    Ok(p.transpose()?)
}

#[cfg(not(feature = "mpi"))]
fn calibrate_mpi(_spec: &ModelSpec, _c: &CalibrateArgs, _threads: usize) -> anyhow::Result<Option<calibrate::Profile>> {
    anyhow::bail!(super::ConfigError::Invalid {
        flag: "comm",
        msg: format!("this convoy was built without MPI; {}", crate::parallel::BUILD_WITH_MPI)
    })
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
// Long: the flags of convoy plan checked and turned into the cluster, the model and the pins, in the order of --help.
pub fn predict(args: &PlanArgs) -> anyhow::Result<(String, Rows)> {
    let spec = ModelSpec::resolve(&args.model)?;
    if args.batch == 0 {
        return Err(PlanError::Input("--batch must be at least 1".into()).into());
    }
    if args.nodes.is_empty() || args.nodes.iter().any(|&n| n == 0 || n > 1_000_000) {
        return Err(PlanError::Input(format!(
            "--nodes {:?}: every node count must be between 1 and 1000000",
            args.nodes
        ))
        .into());
    }
    if let Some(s) = args.strategies.iter().find(|s| !STRATEGIES.contains(&s.as_str())) {
        return Err(
            PlanError::Input(format!("--strategies: unknown strategy '{s}'; hint: {}", STRATEGIES.join(", "))).into()
        );
    }
    let (model, mem, link): (ModelCost, f64, Option<calibrate::LinkFit>) = match &args.profile {
        Some(path) => {
            let p = calibrate::load(path, &spec)?;
            (p.model, p.mem_bandwidth, p.mpi_link)
        }
        None => (
            ModelCost::from_flops(&spec, args.node_gflops)?,
            plan::parse_bandwidth(&args.mem_bandwidth)
                .map_err(|e| PlanError::Input(e.to_string().replace("--link", "--mem-bandwidth")))?,
            None,
        ),
    };
    let measured = |flag: &str| -> Result<calibrate::LinkFit, PlanError> {
        link.clone().ok_or_else(|| match &args.profile {
            Some(p) => PlanError::Input(format!("{flag} profile: {} has no MPI link; hint: calibrate under mpirun with `convoy plan calibrate --comm mpi`", p.display())),
            None => PlanError::Input(format!("{flag} profile needs --profile FILE (written by `convoy plan calibrate --comm mpi` under mpirun)")),
        })
    };
    // `profile`: point to point from the ping-pong, collectives from the all-reduce, a
    // parameter server's link from its round (the ping-pong's where the profile predates it).
    let (bandwidth, collective_bandwidth, server_bandwidth) = if args.link.trim() == "profile" {
        let l = measured("--link")?;
        (l.beta, l.allreduce_beta, if l.server_beta > 0.0 { l.server_beta } else { l.beta })
    } else {
        let b = plan::parse_bandwidth(&args.link)?;
        (b, b, b)
    };
    let (latency, collective_latency) = if args.latency.trim() == "profile" {
        let l = measured("--latency")?;
        (l.alpha, l.allreduce_alpha)
    } else {
        let a = plan::parse_latency(&args.latency)?;
        (a, a)
    };
    if !(args.cores_per_node.is_finite() && args.cores_per_node > 0.0) {
        return Err(PlanError::Input(format!("--cores-per-node {} must be positive", args.cores_per_node)).into());
    }
    if !(args.node_speed.is_finite() && args.node_speed > 0.0) {
        return Err(PlanError::Input(format!(
            "--node-speed {}: must be a positive factor; hint: 1 (as the profile's machine), 2 (twice as fast)",
            args.node_speed
        ))
        .into());
    }
    let cluster = Cluster {
        bandwidth,
        latency,
        collective_bandwidth,
        collective_latency,
        server_bandwidth,
        mem_bandwidth: mem,
        cores_per_node: args.cores_per_node,
        node_speed: args.node_speed,
        jitter: plan::parse_jitter(&args.jitter)?,
        eager_bytes: plan::parse_bytes("--eager-limit", &args.eager_limit)?,
    };
    let positive = |flag: &str, v: Option<usize>| match v {
        Some(0) => Err(PlanError::Input(format!("{flag} 0: must be at least 1"))),
        _ => Ok(v),
    };
    let pins = plan::Pins {
        servers: positive("--servers", args.servers)?,
        micro_batches: positive("--micro-batches", args.micro_batches)?,
        mp: positive("--mp", args.mp)?,
        bucket_mb: match args.bucket_mb {
            Some(b) if !(b.is_finite() && b > 0.0) => {
                return Err(
                    PlanError::Input(format!("--bucket-mb {b}: must be a positive number of MiB; hint: 25")).into()
                )
            }
            b => b,
        },
        schedule: args.pipeline_schedule.map(ScheduleArg::schedule),
    };
    if args.micro_batches.is_some_and(|m| m > args.batch) {
        return Err(PlanError::Input(format!(
            "--micro-batches {:?} exceeds --batch {}",
            args.micro_batches, args.batch
        ))
        .into());
    }
    let planner = plan::Plan { model, cluster, batch: args.batch, pins };
    let rows: Vec<(usize, Vec<plan::Prediction>)> =
        args.nodes.iter().map(|&n| (n, planner.layouts(n, &args.strategies, args.all_layouts))).collect();
    let title = format!("{} batch {} — link {} latency {}", spec.name, args.batch, args.link, args.latency);
    Ok((title, rows))
}
