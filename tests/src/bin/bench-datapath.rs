//! `bench-datapath`: kube-proxy's datapaths (iptables-nft and nftables in kube-proxy's rule shapes)
//! beside a no-NAT floor on a client → node → backend network-namespace topology, at 1, 1 000 and
//! 10 000 Services, in one run on this machine. `cargo xtask bench datapath [--quick]` builds and
//! runs it as root. Progress goes to stderr, the report to stdout.

use std::process::ExitCode;

use clap::Parser;
use keelson_tests::bench_datapath::{self, Plan};

#[derive(Debug, Parser)]
#[command(name = "bench-datapath", about = "kube-proxy datapaths (iptables-nft, nftables) beside a no-NAT floor")]
struct Args {
    /// 1 and 1 000 Services, 500 connects per figure: about 15 s.
    #[arg(long, env = "KEELSON_BENCH_DATAPATH_QUICK")]
    quick: bool,
    /// Service counts to measure, comma-separated (default 1,1000,10000; with --quick 1,1000).
    #[arg(long, env = "KEELSON_BENCH_DATAPATH_SERVICES", value_delimiter = ',',
          value_parser = clap::value_parser!(u32).range(1..=30_000))]
    services: Vec<u32>,
    /// Serial connects per latency figure, and connections per conn/s figure (default 3000, or
    /// 500 with --quick).
    #[arg(long, env = "KEELSON_BENCH_DATAPATH_CONNECTS", value_parser = clap::value_parser!(u32).range(10..=100_000))]
    connects: Option<u32>,
    /// Repetitions of every traffic figure and of the cheap full syncs (default 3).
    #[arg(long, env = "KEELSON_BENCH_DATAPATH_RUNS", value_parser = clap::value_parser!(u16).range(1..=20))]
    runs: Option<u16>,
}

fn main() -> ExitCode {
    let args: Args = match keelson_tests::parse_args() {
        Ok(args) => args,
        Err(code) => return code,
    };
    let mut plan = if args.quick { Plan::quick() } else { Plan::full() };
    if !args.services.is_empty() {
        plan.service_counts = args.services.iter().map(|n| *n as usize).collect();
    }
    if let Some(connects) = args.connects {
        plan.connects = connects as usize;
        plan.rate_connects = connects as usize;
    }
    if let Some(runs) = args.runs {
        plan.runs = usize::from(runs);
    }
    match bench_datapath::run(plan) {
        Ok(results) => {
            print!("{}", bench_datapath::report::render(&results));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("bench-datapath: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
