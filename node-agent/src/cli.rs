//! Command line of the `node-agent` binary: flags, logging, runtime, signals. Lives in the
//! library so that `main.rs` stays thin (`anyhow` is used here as in a `main.rs`).
//!
//! `node-agent hollow --kubeconfig F --nodes N …` runs N hollow nodes until SIGTERM or Ctrl-C.
//! `node-agent network --kubeconfig F --node-name N …` keeps this node's CNI configuration and
//! its routes to the other nodes' pod CIDRs current.
//! Usage errors (bad flags, invalid values) exit with 64.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::hollow::{HollowCluster, HollowConfig, parse_labels};

const USAGE: u8 = 64;

#[derive(Parser, Debug)]
#[command(name = "node-agent", version, about = "Keelson node agent")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Simulate many kubelets without running containers (scale tests, like kubemark).
    Hollow(HollowArgs),
    /// Pod network of this node: CNI configuration, plugin install, routes between nodes.
    Network(NetworkArgs),
}

#[derive(clap::Args, Debug)]
struct NetworkArgs {
    /// Kubeconfig of the API server.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// This node's name (its Node object).
    #[arg(long, env = "KEELSON_NODE_NAME")]
    node_name: String,
    /// The container runtime's CNI configuration directory.
    #[arg(long, env = "KEELSON_CNI_CONF_DIR", default_value = "/etc/cni/net.d")]
    cni_conf_dir: PathBuf,
    /// The container runtime's CNI binary directory.
    #[arg(long, env = "KEELSON_CNI_BIN_DIR", default_value = "/opt/cni/bin")]
    cni_bin_dir: PathBuf,
    /// The `keelson` plugin binary to install into the CNI binary directory.
    #[arg(long, env = "KEELSON_CNI_PLUGIN")]
    plugin: Option<PathBuf>,
    /// MTU of pod interfaces.
    #[arg(long, env = "KEELSON_MTU")]
    mtu: Option<u32>,
}

#[derive(clap::Args, Debug)]
struct HollowArgs {
    /// Kubeconfig of the API server.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// How many nodes to simulate.
    #[arg(long, env = "KEELSON_HOLLOW_NODES")]
    nodes: usize,
    /// Node names are this prefix plus the node's index.
    #[arg(long, env = "KEELSON_HOLLOW_NAME_PREFIX", default_value = "hollow-")]
    name_prefix: String,
    /// Lease duration (spec.leaseDurationSeconds).
    #[arg(long, env = "KEELSON_HOLLOW_LEASE_SECONDS", default_value_t = 40)]
    lease_seconds: i32,
    /// Lease renewal interval (e.g. 10s, 200ms); renewals of all nodes are spread over it.
    #[arg(long, env = "KEELSON_HOLLOW_RENEW_EVERY", default_value = "10s", value_parser = parse_duration)]
    renew_every: Duration,
    /// Interval of the Node condition heartbeat (lastHeartbeatTime), spread likewise.
    #[arg(long, env = "KEELSON_HOLLOW_HEARTBEAT_EVERY", default_value = "60s", value_parser = parse_duration)]
    heartbeat_every: Duration,
    /// CPU capacity of each node.
    #[arg(long, env = "KEELSON_HOLLOW_CPU", default_value = "4")]
    cpu: String,
    /// Memory capacity of each node.
    #[arg(long, env = "KEELSON_HOLLOW_MEMORY", default_value = "16Gi")]
    memory: String,
    /// Pod capacity of each node.
    #[arg(long, env = "KEELSON_HOLLOW_PODS", default_value_t = 110)]
    pods: u32,
    /// Ephemeral-storage capacity of each node.
    #[arg(long, env = "KEELSON_HOLLOW_EPHEMERAL_STORAGE", default_value = "100Gi")]
    ephemeral_storage: String,
    /// Extra node labels, k=v,k2=v2.
    #[arg(long, env = "KEELSON_HOLLOW_LABELS", default_value = "")]
    labels: String,
    /// Most API writes in flight at once.
    #[arg(long, env = "KEELSON_HOLLOW_MAX_INFLIGHT", default_value_t = 100)]
    max_inflight: usize,
}

impl HollowArgs {
    fn config(self) -> Result<HollowConfig, crate::hollow::HollowError> {
        let mut cfg = HollowConfig::new(self.kubeconfig, self.nodes);
        cfg.name_prefix = self.name_prefix;
        cfg.lease_seconds = self.lease_seconds;
        cfg.renew_every = self.renew_every;
        cfg.heartbeat_every = self.heartbeat_every;
        cfg.cpu = self.cpu;
        cfg.memory = self.memory;
        cfg.pods = self.pods;
        cfg.ephemeral_storage = self.ephemeral_storage;
        cfg.labels = parse_labels(&self.labels)?;
        cfg.max_inflight = self.max_inflight;
        cfg.validate()?;
        Ok(cfg)
    }
}

/// `250ms`, `10s`, `2m`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration (like 200ms, 10s, 1m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

/// Runs `node-agent` as the binary does.
pub fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(USAGE) } else { ExitCode::SUCCESS };
        }
    };
    let work = match args.command {
        Command::Hollow(hollow) => match hollow.config() {
            Ok(cfg) => Work::Hollow(cfg),
            Err(error) => {
                eprintln!("node-agent: {error}");
                return ExitCode::from(USAGE);
            }
        },
        Command::Network(n) => Work::Network(n),
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = match work {
        Work::Hollow(cfg) => rt.block_on(run_hollow(cfg)),
        Work::Network(n) => rt.block_on(run_network(n)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("node-agent: {error:#}");
            ExitCode::FAILURE
        }
    }
}

enum Work {
    Hollow(HollowConfig),
    Network(NetworkArgs),
}

async fn run_network(args: NetworkArgs) -> anyhow::Result<()> {
    let client = crate::hollow::connect(&args.kubeconfig).await.context("connect to the API server")?;
    let cfg = crate::network::NetworkConfig {
        cni_conf_dir: args.cni_conf_dir,
        cni_bin_dir: args.cni_bin_dir,
        plugin_path: args.plugin,
        mtu: args.mtu,
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let stop = cancel.clone();
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("SIGTERM handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        stop.cancel();
    });
    crate::network::run(client, &args.node_name, cfg, cancel).await.context("pod network")
}

async fn run_hollow(cfg: HollowConfig) -> anyhow::Result<()> {
    let nodes = cfg.nodes;
    let cluster = HollowCluster::start(cfg).await.context("start hollow nodes")?;
    println!("{nodes} hollow nodes running");
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!(stats = ?cluster.stats(), "shutting down");
    cluster.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn flags_become_a_config() {
        let args = Args::try_parse_from([
            "node-agent",
            "hollow",
            "--kubeconfig",
            "/k",
            "--nodes",
            "5",
            "--renew-every",
            "200ms",
            "--labels",
            "zone=a,tier=b",
        ])
        .expect("valid flags");
        let Command::Hollow(h) = args.command else { panic!("hollow subcommand") };
        let cfg = h.config().expect("valid config");
        assert_eq!((cfg.nodes, cfg.renew_every, cfg.lease_seconds), (5, Duration::from_millis(200), 40));
        assert_eq!(cfg.labels.len(), 2);
        let bad = Args::try_parse_from(["node-agent", "hollow", "--kubeconfig", "/k", "--nodes", "1", "--memory", "x"])
            .expect("parses");
        let Command::Hollow(h) = bad.command else { panic!("hollow subcommand") };
        assert!(h.config().is_err(), "invalid memory is a usage error");
    }
}
