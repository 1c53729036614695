//! `cargo xtask`: set-up, cluster up/down, tests, benchmarks, code generation.
//!
//! Every subcommand is a thin wrapper over one module: [`setup`] installs the tools the project
//! needs, [`suite`] runs the checks and tests CI runs, [`cluster`] starts and stops a single-node
//! control plane, [`bench`] runs the benchmarks, `protogen` regenerates the protobuf schema, and
//! [`ebpf`] rebuilds the committed eBPF object.

mod bench;
mod cluster;
mod cmd;
mod ebpf;
mod protogen;
mod setup;
mod suite;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status for a command line that does not parse (sysexits.h `EX_USAGE`).
const EXIT_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about = "Keelson developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install the system packages, kubectl, helm, the Python client and Rust components (idempotent).
    Setup,
    /// Run setup, then `cargo fmt --check`, `cargo clippy -D warnings` and `cargo test --workspace`.
    Test {
        /// Extra arguments for `cargo test --workspace`, after `--`.
        #[arg(last = true)]
        cargo_test_args: Vec<String>,
    },
    /// Build and start a single-node control plane on the embedded store, in the background.
    Up {
        #[command(flatten)]
        data_dir: DataDirArg,
        /// Address the API server listens on.
        #[arg(long, env = "KEELSON_LISTEN", default_value = "127.0.0.1:6443")]
        listen: SocketAddr,
    },
    /// Stop the control plane started by `up`.
    Down {
        #[command(flatten)]
        data_dir: DataDirArg,
    },
    /// Regenerate `control-plane/src/protobuf/schema.rs`.
    GenProto,
    /// Rebuild the eBPF programs with the pinned nightly and refresh `ebpf/prebuilt/` (object and SOURCE_HASH).
    Ebpf,
    /// Run a benchmark on this machine and print its report.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// API latency, throughput, store size and RSS of the control plane, beside a real etcd.
    Api {
        /// Small counts and one run, for development (about a minute).
        #[arg(long)]
        quick: bool,
        /// Repetitions of every timed phase (default 3, or 1 with --quick).
        #[arg(long)]
        runs: Option<u16>,
    },
    /// Scheduling throughput on 1 000 and 5 000 hollow nodes beside Kubernetes' scheduler_perf, and RSS.
    Scheduler {
        /// Small shapes and one run, for development (a minute or two).
        #[arg(long)]
        quick: bool,
        /// Repetitions of every trial (default 3, or 1 with --quick).
        #[arg(long)]
        runs: Option<u16>,
    },
    /// CNI ADD/DEL latency p50/p99 of `keelson` beside the reference bridge + host-local plugins (root).
    Cni {
        /// 50 pods per round and 2 rounds, for development (under a minute).
        #[arg(long)]
        quick: bool,
    },
    /// Service datapaths in network namespaces: kube-proxy's iptables and nftables shapes beside a
    /// no-NAT floor at 1, 1 000 and 10 000 services (root; the eBPF column is not built yet).
    Datapath {
        /// 1 and 1 000 services, few connects, one run (seconds).
        #[arg(long)]
        quick: bool,
    },
}

#[derive(Debug, clap::Args)]
struct DataDirArg {
    /// Directory for the store, certificates, kubeconfig, log and PID file.
    #[arg(long = "data-dir", env = "KEELSON_DATA_DIR", default_value = "/var/lib/keelson")]
    path: PathBuf,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // `--help` and `--version` are reported as "errors" that go to stdout.
            let code = if error.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    let root = workspace_root();
    match command {
        Command::Setup => setup::run().map(|summary| println!("{summary}")),
        Command::Test { cargo_test_args } => suite::run(&root, &cargo_test_args),
        Command::Up { data_dir, listen } => cluster::up(&root, &data_dir.path, listen),
        Command::Down { data_dir } => cluster::down(&data_dir.path),
        Command::GenProto => protogen::run(&root),
        Command::Ebpf => ebpf::run(&root),
        Command::Bench { which: Bench::Api { quick, runs } } => bench::api(&root, quick, runs),
        Command::Bench { which: Bench::Scheduler { quick, runs } } => bench::scheduler(&root, quick, runs),
        Command::Bench { which: Bench::Cni { quick } } => bench::cni(&root, quick),
        Command::Bench { which: Bench::Datapath { quick } } => bench::datapath(&root, quick),
    }
}

fn workspace_root() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the root")
        .to_path_buf()
}
