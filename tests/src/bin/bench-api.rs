//! `bench-api`: the control plane's API latency and throughput beside a real etcd, store size under
//! churn and RSS, in one run on this machine. `cargo xtask bench api [--quick]` builds and runs it.
//!
//! It starts and stops its own control plane and etcd processes (by PID, in temporary directories,
//! on 127.0.0.1), prints progress on stderr and the report on stdout.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use keelson_tests::bench::{self, Plan, Programs, Section};

/// The load generator allocates as the API server does (mimalloc): under glibc's malloc its free
/// lists took ~6 % of its CPU, CPU that the servers under test share. etcd's client runs in this
/// process too, so both sides of the comparison get the same lighter load generator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "bench-api", about = "Keelson API benchmark against a real etcd as the storage floor")]
struct Args {
    /// The control-plane binary (`control-plane-under-test` takes the same flags).
    #[arg(long, env = "KEELSON_BENCH_CONTROL_PLANE")]
    control_plane: PathBuf,
    /// The etcd server binary (Debian `etcd-server`).
    #[arg(long, env = "KEELSON_BENCH_ETCD", default_value = "/usr/bin/etcd")]
    etcd: PathBuf,
    /// Small counts and one run, for development.
    #[arg(long)]
    quick: bool,
    /// Repetitions of every timed phase (default: 3, or 1 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=20))]
    runs: Option<u16>,
    /// Only these sections (comma-separated; default: all), e.g. `--sections update` to profile
    /// the update path. Updates and reads store their Pods first, untimed.
    #[arg(long, value_enum, value_delimiter = ',')]
    sections: Vec<Section>,
    /// Only these numbers of concurrent clients (comma-separated; default: 1,10,100).
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..=1000))]
    levels: Vec<u16>,
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
    if !args.sections.is_empty() {
        plan.sections = args.sections;
    }
    if !args.levels.is_empty() {
        plan.levels = args.levels.into_iter().map(usize::from).collect();
    }
    let programs = Programs { control_plane: args.control_plane, etcd: args.etcd };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bench-api: tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench::run(programs, plan)) {
        Ok(results) => {
            print!("{}", bench::report::render(&results));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("bench-api: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
