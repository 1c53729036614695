//! The body of the `bench-datapath` binary (`cargo xtask bench datapath`): kube-proxy's datapaths
//! side by side on one network-namespace topology, in one run, as the baselines the eBPF
//! datapath is measured against (DESIGN.md, "Performance: what we measure").
//!
//! Topology ([`topology`]): client namespace → node namespace (the rules, IPv4 forwarding) →
//! backend namespace with three TCP servers (`10.244.9.10-12:8080`). Modes ([`datapath::Mode`]):
//! the no-NAT floor (client straight to the backend addresses, no rules), then each datapath at
//! 1, 1 000 and 10 000 Services of three endpoints each. Per datapath and size:
//!
//! - full sync: programming every Service onto an empty node (repeated where cheap);
//! - connect latency p50/p99 to the first and to the last Service (`runs` × `connects` serial
//!   connects);
//! - short connections per second to the last Service (connect, 1-byte request and answer, reset);
//! - the latency of non-service traffic (client → backend addresses) through the loaded node;
//! - one endpoint change (the last Service loses its third endpoint, then gets it back).
//!
//! Before every measurement come 50 untimed connects to the same targets, then the node's
//! conntrack table is flushed (netlink); no TIME_WAIT exists anywhere because every connection
//! ends with a RST (see [`traffic`]). The order of the four traffic figures rotates per run. The report gives
//! medians over runs, ratios to the floor, the machine and the load average.
//!
//! Last, [`packet_cost`]: `tc_nat`'s nanoseconds per packet from `BPF_PROG_TEST_RUN` (DNAT of a
//! flow's first packet and of an established flow, and a non-service packet) at 1, 1 000 and
//! 10 000 Services, on the programs' private maps (no topology needed).
//!
//! It creates and deletes its own namespaces (`kbdp-<pid>-…`; drop guards, also on an error or
//! Ctrl-C), never touches the host's interfaces, and sends traffic only inside the namespaces.
//! Like a `main.rs`, it uses `anyhow`: it is a program split into files, not a library.

pub mod datapath;
pub mod ebpf;
pub mod iptables;
pub mod nftables;
pub mod packet_cost;
pub mod report;
pub mod services;
pub mod sys;
pub mod topology;
pub mod traffic;

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};

use crate::bench::stats::percentile;
use datapath::{Datapath, Mode};
use services::{ServiceTable, TARGET_PORT};
use topology::{BACKENDS, Topology};
use traffic::{Backends, Rate};

/// How much of everything to do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub quick: bool,
    pub service_counts: Vec<usize>,
    /// Serial connects per latency measurement.
    pub connects: usize,
    /// Short connections per rate measurement.
    pub rate_connects: usize,
    /// Repetitions of every traffic measurement; the report gives medians.
    pub runs: usize,
    /// Endpoint changes come in pairs (remove one endpoint, add it back).
    pub change_pairs: usize,
    /// Full syncs of up to this many Services are repeated `runs` times; larger ones run once
    /// (iptables-nft needs about a minute for 10 000).
    pub repeat_syncs_up_to: usize,
    /// `tc_nat` per packet with `BPF_PROG_TEST_RUN`.
    pub packet: packet_cost::PacketPlan,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            quick: false,
            service_counts: vec![1, 1_000, 10_000],
            connects: 3_000,
            rate_connects: 3_000,
            runs: 3,
            change_pairs: 3,
            repeat_syncs_up_to: 1_000,
            packet: packet_cost::PacketPlan {
                service_counts: vec![1, 1_000, 10_000],
                repeat: 100_000,
                flows: 10_000,
                runs: 3,
            },
        }
    }

    /// 1 and 1 000 Services, 500 connects per figure: about 15 s.
    pub fn quick() -> Plan {
        Plan {
            quick: true,
            service_counts: vec![1, 1_000],
            connects: 500,
            rate_connects: 500,
            runs: 3,
            change_pairs: 2,
            repeat_syncs_up_to: 1,
            packet: packet_cost::PacketPlan {
                service_counts: vec![1, 1_000, 10_000],
                repeat: 10_000,
                flows: 1_000,
                runs: 3,
            },
        }
    }
}

/// Untimed connects before every figure.
const WARM_UP: usize = 50;

/// Nearest-rank percentiles of one latency measurement, in nanoseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
    /// Connects slower than [`SLOW_CONNECT_NS`]: a SYN was lost and retransmitted.
    pub slow: usize,
}

/// A connect this slow waited for a SYN retransmit (the first comes after 1 s).
pub const SLOW_CONNECT_NS: u64 = 200_000_000;

impl Latency {
    fn of(mut samples: Vec<u64>) -> Latency {
        samples.sort_unstable();
        Latency {
            p50: percentile(&samples, 0.50),
            p99: percentile(&samples, 0.99),
            max: samples.last().copied().unwrap_or(0),
            slow: samples.iter().filter(|ns| **ns > SLOW_CONNECT_NS).count(),
        }
    }
}

/// The floor: no rules, client straight to the backend addresses.
#[derive(Debug, Clone, Default)]
pub struct Floor {
    pub latency: Vec<Latency>,
    pub rate: Vec<Rate>,
}

/// One datapath at one size.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub services: usize,
    pub full_syncs: Vec<Duration>,
    pub changes: Vec<Duration>,
    pub first: Vec<Latency>,
    pub last: Vec<Latency>,
    pub non_service: Vec<Latency>,
    pub rate: Vec<Rate>,
}

/// One datapath at every size, or why it was not measured.
#[derive(Debug, Clone)]
pub struct ModeResult {
    pub mode: Mode,
    /// `None`: the datapath does not exist yet.
    pub version: Option<String>,
    pub sizes: Vec<Measured>,
}

/// What the run saw of its own hygiene.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hygiene {
    /// Most conntrack entries left in the node right after a flush.
    pub conntrack_after_flush: u64,
    /// Most TIME_WAIT sockets in the client and backend namespaces before a measurement.
    pub time_wait: usize,
    /// SYNs or handshakes the backends' full accept queues dropped during the whole run.
    pub listen_drops: u64,
}

#[derive(Debug, Clone)]
pub struct Results {
    pub plan: Plan,
    pub floor_before: Floor,
    pub floor_after: Floor,
    pub modes: Vec<ModeResult>,
    pub hygiene: Hygiene,
    pub elapsed: Duration,
    pub load_before: String,
    pub load_after: String,
    pub host_untouched: bool,
    pub stale_namespaces: Vec<String>,
    /// `tc_nat` per packet, one entry per size of [`Plan::packet`].
    pub packet: Vec<packet_cost::PacketCost>,
}

/// Builds the topology, measures every mode and returns the results. Needs root.
pub fn run(plan: Plan) -> anyhow::Result<Results> {
    ensure!(effective_uid_is_root(), "bench-datapath needs root (it creates network namespaces)");
    for tool in ["ip", "iptables-restore", "nft"] {
        ensure!(
            std::process::Command::new(tool).arg("--version").output().is_ok(),
            "{tool} is missing (Debian packages iproute2, iptables, nftables; `cargo xtask setup`)"
        );
    }
    sys::catch_interrupts();
    let stale_namespaces = topology::stale_namespaces();
    for name in &stale_namespaces {
        eprintln!("bench-datapath: warning: namespace {name} is left from a killed run (ip netns del {name})");
    }
    let load_before = crate::bench::procs::load_average();
    let started = Instant::now();
    let scratch = tempfile::Builder::new().prefix("kbdp-").tempdir().context("temporary directory")?;
    // Declaration order matters: the servers stop before the namespaces go.
    let topology = Topology::create()?;
    let _backends = Backends::start(&topology.backend, &BACKENDS, TARGET_PORT)?;
    let mut bench = Bench { plan: &plan, topology: &topology, hygiene: Hygiene::default() };
    bench.check_floor()?;

    eprintln!("bench-datapath: floor (no rules)");
    let floor_before = bench.floor()?;
    let mut modes = Vec::new();
    for mode in Mode::ALL {
        let Some(mut datapath) = mode.datapath(scratch.path()) else {
            eprintln!("bench-datapath: {}: not built yet", mode.label());
            modes.push(ModeResult { mode, version: None, sizes: Vec::new() });
            continue;
        };
        let version = datapath.version();
        let mut sizes = Vec::new();
        for &count in &plan.service_counts {
            sizes.push(bench.measure(mode, datapath.as_mut(), count)?);
        }
        datapath.remove(&topology.node).with_context(|| format!("remove {}", mode.label()))?;
        modes.push(ModeResult { mode, version: Some(version), sizes });
    }
    eprintln!("bench-datapath: floor again (no rules)");
    let floor_after = bench.floor()?;
    eprintln!("bench-datapath: tc_nat per packet (BPF_PROG_TEST_RUN)");
    let packet = packet_cost::measure(&plan.packet).context("tc_nat per packet")?;
    let mut hygiene = bench.hygiene;
    hygiene.listen_drops = topology.backend.listen_drops()?;
    let host_untouched = topology.host_untouched();
    Ok(Results {
        plan: plan.clone(),
        floor_before,
        floor_after,
        modes,
        hygiene,
        elapsed: started.elapsed(),
        load_before,
        load_after: crate::bench::procs::load_average(),
        host_untouched,
        stale_namespaces,
        packet,
    })
}

struct Bench<'a> {
    plan: &'a Plan,
    topology: &'a Topology,
    hygiene: Hygiene,
}

impl Bench<'_> {
    fn backend_targets() -> Vec<SocketAddrV4> {
        BACKENDS.iter().map(|address| SocketAddrV4::new(*address, TARGET_PORT)).collect()
    }

    /// Every backend answers directly with its own index.
    fn check_floor(&self) -> anyhow::Result<()> {
        let targets = Self::backend_targets();
        let answers = self
            .topology
            .client
            .run(|| targets.iter().map(|target| traffic::probe(*target)).collect::<Result<Vec<_>, _>>())?;
        ensure!(answers == [0, 1, 2], "backends answered {answers:?} instead of [0, 1, 2]");
        Ok(())
    }

    /// Flushes the node's conntrack table and records what is left of it and of TIME_WAIT.
    fn settle(&mut self) -> anyhow::Result<()> {
        if sys::interrupted() {
            bail!("interrupted");
        }
        let left = self.topology.node.flush_conntrack()?;
        let time_wait = self.topology.client.time_wait_sockets()? + self.topology.backend.time_wait_sockets()?;
        self.hygiene.conntrack_after_flush = self.hygiene.conntrack_after_flush.max(left);
        self.hygiene.time_wait = self.hygiene.time_wait.max(time_wait);
        Ok(())
    }

    /// Untimed connects to the same targets (caches, neighbours, scheduler), then [`Self::settle`].
    fn warm_up(&mut self, targets: &[SocketAddrV4]) -> anyhow::Result<()> {
        self.topology.client.run(|| traffic::connect_latencies(targets, WARM_UP))?;
        self.settle()
    }

    fn latency(&mut self, targets: &[SocketAddrV4]) -> anyhow::Result<Latency> {
        self.warm_up(targets)?;
        let count = self.plan.connects;
        let samples = self.topology.client.run(|| traffic::connect_latencies(targets, count))?;
        Ok(Latency::of(samples))
    }

    fn rate(&mut self, targets: &[SocketAddrV4]) -> anyhow::Result<Rate> {
        self.warm_up(targets)?;
        let count = self.plan.rate_connects;
        self.topology.client.run(|| traffic::connection_rate(targets, count, BACKENDS.len()))
    }

    fn floor(&mut self) -> anyhow::Result<Floor> {
        let targets = Self::backend_targets();
        let mut floor = Floor::default();
        for _ in 0..self.plan.runs {
            floor.latency.push(self.latency(&targets)?);
            floor.rate.push(self.rate(&targets)?);
        }
        Ok(floor)
    }

    /// One datapath with `count` Services: full syncs, traffic, endpoint changes.
    fn measure(&mut self, mode: Mode, datapath: &mut dyn Datapath, count: usize) -> anyhow::Result<Measured> {
        let label = mode.label();
        let node = &self.topology.node;
        let mut table = ServiceTable::new(count, &BACKENDS);
        let mut measured = Measured { services: count, ..Measured::default() };
        let syncs = if count <= self.plan.repeat_syncs_up_to { self.plan.runs } else { 1 };
        for _ in 0..syncs {
            datapath.reset(node).with_context(|| format!("reset {label}"))?;
            if sys::interrupted() {
                bail!("interrupted");
            }
            let took = datapath.full_sync(node, &table).with_context(|| format!("{label}: full sync of {count}"))?;
            eprintln!("bench-datapath: {label} {count} services: full sync {:.3} s", took.as_secs_f64());
            measured.full_syncs.push(took);
        }
        let first = [table.services[0].address()];
        let last = [table.services[count - 1].address()];
        self.check_service(&first, label)?;
        self.check_service(&last, label)?;

        let direct = Self::backend_targets();
        for run in 0..self.plan.runs {
            eprintln!("bench-datapath: {label} {count} services: traffic run {}/{}", run + 1, self.plan.runs);
            // The order rotates from run to run, so that no figure always comes first.
            for figure in (0..4).map(|i| (i + run) % 4) {
                match figure {
                    0 => measured.first.push(self.latency(&first)?),
                    1 => measured.last.push(self.latency(&last)?),
                    2 => measured.non_service.push(self.latency(&direct)?),
                    _ => measured.rate.push(self.rate(&last)?),
                }
            }
        }

        let changed = count - 1;
        for _ in 0..self.plan.change_pairs {
            for removing in [true, false] {
                let before = table.services[changed].clone();
                if removing {
                    table.services[changed].endpoints.pop();
                } else {
                    table.services[changed].endpoints.push(BACKENDS[2]);
                }
                let took = datapath
                    .endpoint_change(node, &table, changed, &before)
                    .with_context(|| format!("{label}: endpoint change at {count}"))?;
                measured.changes.push(took);
            }
        }
        eprintln!(
            "bench-datapath: {label} {count} services: endpoint changes {:?}",
            measured.changes.iter().map(|d| format!("{:.1} ms", d.as_secs_f64() * 1e3)).collect::<Vec<_>>()
        );
        // After remove + add, the last Service must again spread over all three backends.
        self.settle()?;
        let spread = self.topology.client.run(|| traffic::connection_rate(&last, 90, BACKENDS.len()))?;
        ensure!(
            spread.per_backend.iter().all(|n| *n > 0),
            "{label}: after the endpoint changes the last Service reached backends {:?} (of 90 connections)",
            spread.per_backend
        );
        Ok(measured)
    }

    /// A Service answers (any backend).
    fn check_service(&self, target: &[SocketAddrV4; 1], label: &str) -> anyhow::Result<()> {
        let target = target[0];
        self.topology
            .client
            .run(|| traffic::probe(target))
            .with_context(|| format!("{label}: Service {target} does not answer after the full sync"))
            .map(drop)
    }
}

/// Whether this process runs as root (effective uid 0).
fn effective_uid_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}
