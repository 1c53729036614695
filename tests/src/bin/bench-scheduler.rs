//! `bench-scheduler`: scheduling throughput on 1 000 and 5 000 hollow nodes (10 000 Pods each,
//! shaped like Kubernetes' scheduler_perf SchedulingBasic) and the control plane's RSS, beside
//! Kubernetes' published figure, in one run on this machine. `cargo xtask bench scheduler
//! [--quick]` builds and runs it.
//!
//! It starts and stops its own control plane processes (by PID, in temporary directories, on
//! 127.0.0.1), runs the hollow nodes and the load in this process, prints progress on stderr and
//! the report on stdout.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use keelson_tests::bench_sched::{self, Plan};

#[derive(Debug, Parser)]
#[command(name = "bench-scheduler", about = "Keelson scheduling throughput on hollow nodes")]
struct Args {
    /// The control-plane binary (`control-plane-under-test` takes the same flags).
    #[arg(long, env = "KEELSON_BENCH_CONTROL_PLANE")]
    control_plane: PathBuf,
    /// Small shapes and one run, for development.
    #[arg(long)]
    quick: bool,
    /// Repetitions of every trial (default 3, or 1 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=20))]
    runs: Option<u16>,
    /// Only the concurrent mode (as scheduler_perf), not the backlog mode.
    #[arg(long)]
    concurrent_only: bool,
    /// Workloads as NODESxPODS (repeatable), instead of 1000x10000 and 5000x10000.
    #[arg(long = "shape", value_parser = parse_shape)]
    shapes: Vec<bench_sched::Shape>,
    /// Concurrent clients creating Pods (default 16).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1000))]
    creators: Option<u16>,
    /// Hollow node Lease renewal and status period, in seconds (kubelets use 10).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3600))]
    renew_secs: Option<u64>,
}

fn main() -> ExitCode {
    let args: Args = match keelson_tests::parse_args() {
        Ok(args) => args,
        Err(code) => return code,
    };
    let mut plan = if args.quick { Plan::quick() } else { Plan::full() };
    if let Some(runs) = args.runs {
        plan.runs = usize::from(runs);
    }
    if args.concurrent_only {
        plan.modes = vec![bench_sched::Mode::Concurrent];
    }
    if !args.shapes.is_empty() {
        plan.shapes = args.shapes;
    }
    if let Some(creators) = args.creators {
        plan.creators = usize::from(creators);
    }
    if let Some(secs) = args.renew_secs {
        plan.renew_every = std::time::Duration::from_secs(secs);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bench-scheduler: tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench_sched::run(args.control_plane, plan)) {
        Ok(results) => {
            print!("{}", bench_sched::report::render(&results));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("bench-scheduler: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `5000x10000` → 5 000 nodes, 10 000 Pods.
fn parse_shape(s: &str) -> Result<bench_sched::Shape, String> {
    let (nodes, pods) = s.split_once('x').ok_or_else(|| format!("{s:?} is not NODESxPODS"))?;
    let number = |v: &str| v.trim().parse::<usize>().map_err(|e| format!("{v:?}: {e}"));
    let shape = bench_sched::Shape { nodes: number(nodes)?, pods: number(pods)? };
    if shape.nodes == 0 || shape.pods == 0 {
        return Err("nodes and pods must be positive".into());
    }
    Ok(shape)
}
