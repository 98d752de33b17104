//! The `convoy` binary: parse the command line, call the library, map errors to exit codes.
//!
//! Exit codes: 0 success; 1 a failure during the run; 2 bad usage, configuration, model spec,
//! data file or weights file (the message names the thing and gives a hint); 3 a stalled run
//! ended by `--stall-abort`; 130/143 stopped by SIGINT/SIGTERM.

use clap::Parser;
use convoy::cli::{self, Cli, Command};
use convoy::train::{self, events};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false);
    // Under an MPI launcher every line names the process's rank.
    match convoy::comm::launch::rank() {
        Some(rank) => fmt.with_timer(RankTimer(rank)).init(),
        None => fmt.init(),
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Our error messages already name their causes; `{e:#}` would repeat them.
            match e.downcast_ref::<train::TrainError>() {
                Some(train::TrainError::Interrupted { .. }) => eprintln!("{e}"),
                _ => eprintln!("error: {e}"),
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The log timestamp followed by the MPI rank.
struct RankTimer(usize);

impl tracing_subscriber::fmt::time::FormatTime for RankTimer {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        tracing_subscriber::fmt::time::SystemTime.format_time(w)?;
        write!(w, " rank {}", self.0)
    }
}

/// 2 for bad input (anything but a failure inside a run), 1 otherwise.
fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(t) = e.downcast_ref::<train::TrainError>() {
        return t.exit_code();
    }
    if e.downcast_ref::<std::io::Error>().is_some() {
        return 1;
    }
    2
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(mut args) => {
            // `--runs-dir`: a run folder the dashboard lists (made by the process holding
            // worker 0, MPI rank 0, before the configuration is read, so that it can name the files).
            // Bad flags end here, before a run folder is made for them.
            let batch_size = args.to_config()?.batch_size;
            args.parallel.to_config()?;
            let mut record = match args.runs_dir.clone().filter(|_| convoy::comm::launch::rank().unwrap_or(0) == 0) {
                Some(dir) => Some(convoy::dashboard::CliRun::begin(&dir, &mut args, batch_size)?),
                None => None,
            };
            let out = train_cmd(&args);
            if let Some(r) = record.as_mut() {
                r.end(&out);
            }
            out
        }
        Command::Eval(args) => {
            let threads = cli::threads_from(args.threads)?;
            if args.batch_size == 0 {
                anyhow::bail!(cli::ConfigError::Invalid { flag: "batch-size", msg: "must be at least 1".into() });
            }
            // A prototxt's transform_param (normalisation, crop) applies as in training.
            let (spec, opts) = cli::model_and_options(&args.model, &args.data, &args.image, None)?;
            let mut net = convoy::net::Net::build(&spec)?;
            // A checkpoint folder (or directory) holds its weights in model.safetensors.
            let weights = if args.weights.is_dir() {
                convoy::checkpoint::run::resolve(&args.weights)?.join("model.safetensors")
            } else {
                args.weights.clone()
            };
            let params = convoy::checkpoint::load_weights(&weights, net.layout())?;
            let test = convoy::data::open_with(&args.data, convoy::data::Split::Test, &opts)?;
            train::check_shape(&spec, &args.data, opts.crop, test.sample_shape())?;
            let s = train::evaluate(
                &mut net,
                &params,
                test.as_ref(),
                opts.crop,
                args.batch_size,
                threads,
                args.backend.unwrap_or(convoy::layers::Backend::best()),
            )?;
            let n = s.samples.max(1) as f64;
            println!(
                "test accuracy {:.2}% (loss {:.4}) on {} images",
                s.correct as f64 / n * 100.0,
                s.loss_sum / n,
                s.samples
            );
            Ok(())
        }
        Command::Bench(args) => cli::bench::run(&args),
        Command::Plan(args) => cli::plan::run(&args),
        Command::Serve(args) => convoy::dashboard::serve(&args),
    }
}

/// `convoy train`.
fn train_cmd(args: &cli::TrainArgs) -> anyhow::Result<()> {
    let cfg = args.to_config()?;
    let pc = args.parallel.to_config()?;
    if let Err(e) = train::stop::install() {
        tracing::warn!("cannot install the SIGINT/SIGTERM handlers: {e}");
    }
    let session = convoy::parallel::Session::start(&pc)?;
    // Only the process holding worker 0 draws progress and writes metrics (and weights).
    let lead = session.leads(&pc);
    let mut sink = events::Fanout::default();
    sink.push(Box::new(events::LogSink { every: cfg.log_every }));
    if !args.no_progress && lead {
        sink.push(Box::new(events::ProgressSink::new()));
    }
    if let Some(path) = args.metrics.as_ref().filter(|_| lead) {
        let f = events::JsonlSink::create(path)
            .map_err(|e| anyhow::anyhow!("cannot create metrics file {}: {e}", path.display()))?;
        sink.push(Box::new(f));
    }
    if let Some(path) = args.timeline.as_ref().filter(|_| lead) {
        let f = train::timeline::ChromeTraceSink::create(path)
            .map_err(|e| anyhow::anyhow!("cannot create timeline file {}: {e}", path.display()))?;
        sink.push(Box::new(f));
    }
    let Some(s) = session.run(&cfg, &pc, &mut sink)? else { return Ok(()) };
    if !lead {
        return Ok(());
    }
    println!(
        "done: {} steps in {:.1}s, {:.0} images/s, test accuracy {:.2}% (loss {:.4}){}",
        s.steps,
        s.seconds,
        s.images_per_sec,
        s.test_acc * 100.0,
        s.test_loss,
        cfg.save.as_ref().map(|p| format!(", weights saved to {}", p.display())).unwrap_or_default()
    );
    Ok(())
}
