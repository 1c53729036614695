//! Command line of the `node-agent` binary: flags, logging, runtime, signals. Lives in the
//! library so that `main.rs` stays thin (`anyhow` is used here as in a `main.rs`).
//!
//! `node-agent hollow --kubeconfig F --nodes N …` runs N hollow nodes until SIGTERM or Ctrl-C.
//! `node-agent network --kubeconfig F --node-name N …` keeps this node's CNI configuration and
//! its routes to the other nodes' pod CIDRs current.
//! `node-agent proxy --kubeconfig F [--pin-dir D] [--cgroup C] [--node-name N] [--node-ip A]…
//! [--pod-cidr P]… [--xdp-iface I]…` loads the eBPF datapath (maps pinned in D), attaches its
//! socket programs to the cgroup C and `xdp_nodeport` to each I, and keeps its service table
//! (NodePort frontends on the addresses A) equal to the cluster's Services and EndpointSlices
//! until SIGTERM or Ctrl-C.
//! `node-agent lb list|stats [--pin-dir D]` prints the services and backends, or the counters,
//! held by the maps pinned in D.
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
    /// eBPF service proxy (kube-proxy replacement): program Services and EndpointSlices.
    Proxy(ProxyArgs),
    /// Show what the pinned service load balancer maps hold.
    Lb {
        #[command(subcommand)]
        command: LbCommand,
    },
}

#[derive(clap::Args, Debug)]
struct ProxyArgs {
    /// Kubeconfig of the API server.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Pin the datapath's maps in this bpffs directory (they outlive the process).
    #[arg(long, env = "KEELSON_PIN_DIR", default_value = crate::datapath::bpffs::DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// Attach the socket programs to this cgroup v2 directory (one the project created, never a
    /// root cgroup); without it the maps are programmed but nothing is attached.
    #[arg(long, env = "KEELSON_CGROUP")]
    cgroup: Option<PathBuf>,
    /// How long a burst of watch events is collected before it is applied (e.g. 20ms).
    #[arg(long, env = "KEELSON_PROXY_DEBOUNCE", default_value = "20ms", value_parser = parse_duration)]
    debounce: Duration,
    /// This node's name (its Node object): Services with `internalTrafficPolicy: Local` then use
    /// only the endpoints on this node. Without it that policy is not applied.
    #[arg(long, env = "KEELSON_NODE_NAME")]
    node_name: Option<String>,
    /// An address of this node that NodePort and LoadBalancer Services listen on (repeat for
    /// several). The first is also the source of SNAT'd flows (outside clients to backends on
    /// other nodes). Default with --node-name: the Node's IPv4 InternalIP and ExternalIP
    /// addresses, read once at start.
    #[arg(long = "node-ip", env = "KEELSON_NODE_IPS", value_delimiter = ',')]
    node_ips: Vec<std::net::Ipv4Addr>,
    /// A pod CIDR of this node (repeatable): backends inside are local, so `xdp_nodeport`
    /// translates their NodePort flows itself; a flow with neither client nor backend inside is
    /// SNAT'd. Without any, nothing is SNAT'd. Default with --node-name: the Node's IPv4 podCIDRs.
    #[arg(long = "pod-cidr", env = "KEELSON_POD_CIDRS", value_delimiter = ',')]
    pod_cidrs: Vec<crate::datapath::Cidr>,
    /// Attach the NodePort fast path `xdp_nodeport` to this interface, the node's external one
    /// (repeatable; only interfaces the project created). `tc_nat` must serve the same interface.
    #[arg(long = "xdp-iface", env = "KEELSON_XDP_IFACES", value_delimiter = ',')]
    xdp_ifaces: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum LbCommand {
    /// The services and their backends as programmed in the maps.
    List(LbArgs),
    /// The datapath's counters, summed over the CPUs.
    Stats(LbArgs),
}

#[derive(clap::Args, Debug)]
struct LbArgs {
    /// The bpffs directory the datapath's maps are pinned in.
    #[arg(long, env = "KEELSON_PIN_DIR", default_value = crate::datapath::bpffs::DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
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
        Command::Proxy(p) => Work::Proxy(p),
        // Reads the maps and prints; no runtime, no logging set-up.
        Command::Lb { command } => return lb(command),
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = match work {
        Work::Hollow(cfg) => rt.block_on(run_hollow(cfg)),
        Work::Network(n) => rt.block_on(run_network(n)),
        Work::Proxy(p) => rt.block_on(run_proxy(p)),
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
    Proxy(ProxyArgs),
}

/// A token cancelled by the first SIGTERM or Ctrl-C.
fn shutdown_token() -> anyhow::Result<tokio_util::sync::CancellationToken> {
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
    Ok(cancel)
}

async fn run_proxy(args: ProxyArgs) -> anyhow::Result<()> {
    use crate::datapath::{self, Datapath, bpffs};
    // The default pin directory lives on the usual bpffs mount, which a fresh machine may lack.
    if args.pin_dir.starts_with(bpffs::DEFAULT_MOUNT) {
        bpffs::ensure_mounted(std::path::Path::new(bpffs::DEFAULT_MOUNT)).context("mount bpffs")?;
    }
    let mut datapath =
        Datapath::load(&datapath::Config { pin_dir: Some(args.pin_dir.clone()) }).context("load the eBPF datapath")?;
    match &args.cgroup {
        Some(cgroup) => datapath.attach_cgroup(cgroup).context("attach the socket programs")?,
        None => tracing::warn!("no --cgroup: the service table is programmed but no socket is load balanced"),
    }
    let client = crate::hollow::connect(&args.kubeconfig).await.context("connect to the API server")?;
    let (mut node_ips, mut pod_cidrs) = (args.node_ips.clone(), args.pod_cidrs.clone());
    if let Some(name) = args.node_name.as_deref().filter(|_| node_ips.is_empty() || pod_cidrs.is_empty()) {
        // Read once: a node's addresses and pod CIDRs do not change while it runs.
        let node = kube::Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
            .get(name)
            .await
            .with_context(|| format!("read Node {name} for its addresses and pod CIDRs"))?;
        if node_ips.is_empty() {
            node_ips = crate::proxy::desired::node_addresses(&node);
        }
        if pod_cidrs.is_empty() {
            pod_cidrs = crate::proxy::desired::node_pod_cidrs(&node);
        }
    }
    datapath.set_local_cidrs(&pod_cidrs).context("write the local pod CIDRs")?;
    // SNAT'd flows (outside clients to backends on other nodes) leave with the first node
    // address, which the other nodes route back here.
    datapath.set_snat_addr(node_ips.first().copied()).context("write the SNAT address")?;
    for iface in &args.xdp_ifaces {
        datapath.attach_xdp(iface).with_context(|| format!("attach xdp_nodeport to {iface}"))?;
    }
    let cancel = shutdown_token()?;
    tracing::info!(
        pin_dir = %args.pin_dir.display(),
        cgroup = ?args.cgroup,
        node_ips = ?node_ips,
        pod_cidrs = ?pod_cidrs,
        xdp = ?args.xdp_ifaces,
        object = datapath::OBJECT_ORIGIN,
        "service proxy running"
    );
    let config = crate::proxy::ProxyConfig {
        debounce: args.debounce,
        node_name: args.node_name.clone(),
        node_addresses: node_ips,
        ..Default::default()
    };
    crate::proxy::run(client, &mut datapath, &config, cancel).await;
    // Dropping the datapath detaches the programs; the pinned maps stay for the next start.
    Ok(())
}

/// `node-agent lb list|stats`.
fn lb(command: LbCommand) -> ExitCode {
    let (LbCommand::List(args) | LbCommand::Stats(args)) = &command;
    let shown = crate::datapath::PinnedMaps::open(&args.pin_dir).and_then(|maps| match command {
        LbCommand::List(_) => maps.services().map(|services| crate::proxy::show::service_list(&services)),
        LbCommand::Stats(_) => maps
            .counters()
            .map(|counters| crate::proxy::show::counter_list(counters.iter().map(|(c, v)| (c.name(), *v)))),
    });
    match shown {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("node-agent: {:#}", anyhow::Error::new(error));
            ExitCode::FAILURE
        }
    }
}

async fn run_network(args: NetworkArgs) -> anyhow::Result<()> {
    let client = crate::hollow::connect(&args.kubeconfig).await.context("connect to the API server")?;
    let cfg = crate::network::NetworkConfig {
        cni_conf_dir: args.cni_conf_dir,
        cni_bin_dir: args.cni_bin_dir,
        plugin_path: args.plugin,
        mtu: args.mtu,
    };
    let cancel = shutdown_token()?;
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

    #[test]
    fn proxy_and_lb_flags() {
        let args = Args::try_parse_from(["node-agent", "proxy", "--kubeconfig", "/k", "--cgroup", "/sys/fs/cgroup/k"])
            .expect("valid flags");
        let Command::Proxy(p) = args.command else { panic!("proxy subcommand") };
        assert_eq!(p.pin_dir, PathBuf::from(crate::datapath::bpffs::DEFAULT_PIN_DIR));
        assert_eq!(p.cgroup, Some(PathBuf::from("/sys/fs/cgroup/k")));
        assert_eq!(p.debounce, Duration::from_millis(20));
        assert!(p.node_ips.is_empty() && p.pod_cidrs.is_empty() && p.xdp_ifaces.is_empty());
        let args = Args::try_parse_from([
            "node-agent",
            "proxy",
            "--kubeconfig",
            "/k",
            "--node-ip",
            "192.168.77.1",
            "--node-ip",
            "203.0.113.7",
            "--pod-cidr",
            "10.244.1.0/24",
            "--xdp-iface",
            "knp0",
        ])
        .expect("valid flags");
        let Command::Proxy(p) = args.command else { panic!("proxy subcommand") };
        assert_eq!(
            p.node_ips,
            ["192.168.77.1".parse::<std::net::Ipv4Addr>().expect("ip"), "203.0.113.7".parse().expect("ip")]
        );
        assert_eq!(p.pod_cidrs, ["10.244.1.0/24".parse::<crate::datapath::Cidr>().expect("cidr")]);
        assert_eq!(p.xdp_ifaces, ["knp0"]);
        assert!(
            Args::try_parse_from(["node-agent", "proxy", "--kubeconfig", "/k", "--pod-cidr", "10.244.1.0"]).is_err()
        );
        let args =
            Args::try_parse_from(["node-agent", "lb", "list", "--pin-dir", "/sys/fs/bpf/x"]).expect("valid flags");
        let Command::Lb { command: LbCommand::List(l) } = args.command else { panic!("lb list subcommand") };
        assert_eq!(l.pin_dir, PathBuf::from("/sys/fs/bpf/x"));
        assert!(Args::try_parse_from(["node-agent", "lb", "stats", "extra"]).is_err());
    }
}
