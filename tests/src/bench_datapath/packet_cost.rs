//! `tc_nat`'s cost per packet, from the kernel's own clock: `BPF_PROG_TEST_RUN`
//! (`node_agent::datapath::test_run`) on a crafted Ethernet/IPv4/TCP frame, with the programs
//! loaded on private maps and attached nowhere (no namespace, no interface).
//!
//! Per size (1, 1 000, 10 000 Services of three endpoints, the benchmark's table) and run:
//!
//! - **DNAT, first packet of a flow**: conntrack miss, backend pick, [`CT`] and [`CT_REV`]
//!   inserts, rewrite. The kernel runs every repeat on one buffer, and the first run rewrites it to
//!   the backend, so repeats cannot stand for new flows: instead `flows` calls of one run each, a
//!   fresh source address and port per call, averaged. A single run's figure includes one read of
//!   the kernel's clock, so the same is given for a non-service packet (`repeat 1`) beside it.
//! - **DNAT, established flow**: conntrack hit and rewrite, `repeat` runs in one call. So that the
//!   rewritten buffer is still the same service packet for the next run, the measured Service
//!   (the last one) is for this figure its own backend (ClusterIP:80 → ClusterIP:80): the
//!   program's path is the same, it just writes back the bytes it read. The DNAT counter must grow
//!   by `repeat`, which checks that every run took that path.
//! - **non-service**: a pod-to-pod packet (no Service, no conntrack entry), `repeat` runs.
//!
//! [`CT`]: keelson_ebpf_common::CT
//! [`CT_REV`]: keelson_ebpf_common::CT_REV

use std::net::{Ipv4Addr, SocketAddrV4};

use anyhow::{Context as _, ensure};
use keelson_ebpf_common::{Counter, PROG_TC_NAT};
use node_agent::datapath::{self as lb, Config, Protocol};

use super::services::{SERVICE_PORT, ServiceTable, TARGET_PORT};
use super::topology::BACKENDS;

/// `TC_ACT_OK`.
const TC_ACT_OK: u32 = 0;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
/// The client of every measured packet (its port varies for new flows).
const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 2), 40_000);

/// What to measure.
#[derive(Debug, Clone)]
pub struct PacketPlan {
    pub service_counts: Vec<usize>,
    /// Runs per `BPF_PROG_TEST_RUN` call for the established and non-service figures.
    pub repeat: u32,
    /// Calls (one fresh flow each) per first-packet figure.
    pub flows: usize,
    /// Repetitions of every figure; the report gives medians.
    pub runs: usize,
}

/// One size's figures, one value per run, in nanoseconds per packet.
#[derive(Debug, Clone, Default)]
pub struct PacketCost {
    pub services: usize,
    pub first_packet: Vec<f64>,
    /// Non-service packets at one run per call: the clock-read baseline of `first_packet`.
    pub non_service_single: Vec<f64>,
    pub established: Vec<f64>,
    pub non_service: Vec<f64>,
}

/// Measures every size of `plan`. Needs root (or `CAP_BPF`).
pub fn measure(plan: &PacketPlan) -> anyhow::Result<Vec<PacketCost>> {
    let mut flow = 0u32;
    plan.service_counts.iter().map(|&count| measure_size(plan, count, &mut flow)).collect()
}

fn measure_size(plan: &PacketPlan, count: usize, flow: &mut u32) -> anyhow::Result<PacketCost> {
    // Fresh private maps per size: conntrack starts empty and never fills up.
    let mut datapath = lb::Datapath::load(&Config { pin_dir: None }).context("load the eBPF programs")?;
    let table = ServiceTable::new(count, &BACKENDS);
    let mut desired: Vec<lb::Service> = table.services.iter().map(|s| service(s.vip, &s.endpoints)).collect();
    datapath.sync(&desired).with_context(|| format!("program {count} services"))?;
    let vip = table.services[count - 1].vip;
    let target = SocketAddrV4::new(vip, SERVICE_PORT);
    let pod = SocketAddrV4::new(BACKENDS[0], TARGET_PORT);
    let non_service = tcp_frame(CLIENT, pod, TCP_ACK);
    let mut cost = PacketCost { services: count, ..PacketCost::default() };
    for _ in 0..plan.runs {
        let mut first = 0u64;
        let mut single = 0u64;
        for _ in 0..plan.flows {
            *flow += 1;
            let run = run(&datapath, &tcp_frame(fresh_client(*flow), target, TCP_SYN), 1)?;
            ensure!(run.data[30..34] != vip.octets(), "the first packet of a flow was not translated");
            first += u64::from(run.duration_ns);
            single += u64::from(self::run(&datapath, &non_service, 1)?.duration_ns);
        }
        cost.first_packet.push(first as f64 / plan.flows as f64);
        cost.non_service_single.push(single as f64 / plan.flows as f64);
    }

    // The last Service as its own backend, so that each repeat sees the same service packet.
    let last = desired.len() - 1;
    desired[last].backends = vec![target];
    datapath.upsert(&desired[last]).context("make the last service its own backend")?;
    let established = tcp_frame(CLIENT, target, TCP_ACK);
    run(&datapath, &established, 1)?;
    for _ in 0..plan.runs {
        let before = counter(&datapath, Counter::TcDnat)?;
        let timed = run(&datapath, &established, plan.repeat)?;
        let dnat = counter(&datapath, Counter::TcDnat)? - before;
        ensure!(dnat == u64::from(plan.repeat), "{dnat} of {} established runs were translated", plan.repeat);
        cost.established.push(f64::from(timed.duration_ns));
        let timed = run(&datapath, &non_service, plan.repeat)?;
        ensure!(timed.data == non_service, "a non-service packet was changed");
        cost.non_service.push(f64::from(timed.duration_ns));
    }
    Ok(cost)
}

/// The `n`th new flow's client: ports 10 000..60 000 of 10.245.0.0 and up, never twice the same.
fn fresh_client(n: u32) -> SocketAddrV4 {
    let first = u32::from(Ipv4Addr::new(10, 245, 0, 0));
    SocketAddrV4::new(Ipv4Addr::from(first + n / 50_000), 10_000 + (n % 50_000) as u16)
}

/// ClusterIP:80/TCP → the endpoints' 8080.
fn service(vip: Ipv4Addr, endpoints: &[Ipv4Addr]) -> lb::Service {
    lb::Service {
        vip,
        port: SERVICE_PORT,
        proto: Protocol::Tcp,
        backends: endpoints.iter().map(|ip| SocketAddrV4::new(*ip, TARGET_PORT)).collect(),
        affinity: None,
        maglev: false,
    }
}

fn run(datapath: &lb::Datapath, frame: &[u8], repeat: u32) -> anyhow::Result<lb::TestRun> {
    let fd = datapath.program_fd(PROG_TC_NAT).context("tc_nat is loaded")?;
    let run = lb::test_run(fd, frame, repeat).context("run tc_nat")?;
    ensure!(run.retval == TC_ACT_OK, "tc_nat returned {}", run.retval);
    Ok(run)
}

fn counter(datapath: &lb::Datapath, which: Counter) -> anyhow::Result<u64> {
    datapath.counter(which).context("read the counter")
}

/// An Ethernet/IPv4/TCP frame without options or payload, checksums filled in.
fn tcp_frame(src: SocketAddrV4, dst: SocketAddrV4, flags: u8) -> Vec<u8> {
    let mut frame = Vec::with_capacity(54);
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00]);
    let ip_start = frame.len();
    frame.extend_from_slice(&[0x45, 0, 0, 40, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0]);
    frame.extend_from_slice(&src.ip().octets());
    frame.extend_from_slice(&dst.ip().octets());
    let ip_sum = checksum(&frame[ip_start..]);
    frame[ip_start + 10..ip_start + 12].copy_from_slice(&ip_sum.to_be_bytes());
    let tcp_start = frame.len();
    frame.extend_from_slice(&src.port().to_be_bytes());
    frame.extend_from_slice(&dst.port().to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 5 << 4, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
    let mut pseudo = Vec::with_capacity(32);
    pseudo.extend_from_slice(&src.ip().octets());
    pseudo.extend_from_slice(&dst.ip().octets());
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    pseudo.extend_from_slice(&frame[tcp_start..]);
    let tcp_sum = checksum(&pseudo);
    frame[tcp_start + 16..tcp_start + 18].copy_from_slice(&tcp_sum.to_be_bytes());
    frame
}

/// RFC 1071 over an even number of bytes.
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_valid_checksums() {
        let frame = tcp_frame(CLIENT, SocketAddrV4::new(Ipv4Addr::new(10, 96, 16, 1), 80), TCP_SYN);
        assert_eq!(frame.len(), 54);
        assert_eq!(checksum(&frame[14..34]), 0, "IPv4 header");
        let mut pseudo = frame[26..34].to_vec();
        pseudo.extend_from_slice(&[0, 6, 0, 20]);
        pseudo.extend_from_slice(&frame[34..]);
        assert_eq!(checksum(&pseudo), 0, "TCP with the pseudo-header");
    }
}
