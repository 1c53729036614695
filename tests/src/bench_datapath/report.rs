//! The plain-text report: figures per mode and size, ratios to the no-NAT floor of the same run,
//! the run's hygiene checks and the machine.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use crate::bench::stats::{Table, fmt_ns, fmt_rate, median_f64, median_u64};

use super::services::{SERVICE_PORT, TARGET_PORT};
use super::{Floor, Latency, Measured, ModeResult, Results, SLOW_CONNECT_NS};

/// Medians over runs of one latency figure.
fn medians(runs: &[Latency]) -> Latency {
    Latency {
        p50: median_u64(runs.iter().map(|l| l.p50).collect()),
        p99: median_u64(runs.iter().map(|l| l.p99).collect()),
        max: runs.iter().map(|l| l.max).max().unwrap_or(0),
        slow: runs.iter().map(|l| l.slow).sum(),
    }
}

fn rate_median(rates: &[super::traffic::Rate]) -> f64 {
    median_f64(rates.iter().map(|r| r.per_second).collect())
}

fn duration_median(values: &[Duration]) -> u64 {
    median_u64(values.iter().map(|d| d.as_nanos() as u64).collect())
}

/// Microseconds with one decimal.
fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1e3)
}

fn ratio(value: f64, base: f64) -> String {
    match value / base {
        _ if base <= 0.0 => "–".into(),
        r if r < 0.01 => format!("{r:.5}×"),
        r => format!("{r:.2}×"),
    }
}

pub fn render(results: &Results) -> String {
    let plan = &results.plan;
    let mut out = String::new();
    let _ = writeln!(out, "== bench datapath: kube-proxy's datapaths on a network-namespace topology ==");
    let _ = writeln!(
        out,
        "client ns 10.244.1.2 → node ns (rules, ip_forward) → backend ns 10.244.9.10-12:{TARGET_PORT}; \
         Services 10.96.16.1… port {SERVICE_PORT}, 3 endpoints each"
    );
    let _ = writeln!(
        out,
        "{} run(s) × {} serial connects per latency figure (socket+connect to SYN-ACK), {} short connections \
         (connect, 1-byte request/answer, RST) per conn/s figure; medians over runs{}",
        plan.runs,
        plan.connects,
        plan.rate_connects,
        if plan.quick { "; --quick" } else { "" }
    );
    let _ = writeln!(
        out,
        "before each figure: 50 untimed connects, node conntrack flushed (netlink), no TIME_WAIT (every \
         connection ends with a RST); {:.1} s in all",
        results.elapsed.as_secs_f64()
    );

    let floor = pooled(&results.floor_before, &results.floor_after);
    let floor_latency = medians(&floor.latency);
    let floor_rate = rate_median(&floor.rate);

    let _ =
        writeln!(out, "\n-- connect latency (µs) and short connections/s; first/last = first/last Service written --");
    let mut table = Table::new(&[
        "mode",
        "services",
        "first p50",
        "first p99",
        "last p50",
        "last p99",
        "conn/s last",
        "non-svc p50",
        "non-svc p99",
    ]);
    table.row(vec![
        "no-NAT floor".into(),
        "0".into(),
        "–".into(),
        "–".into(),
        us(floor_latency.p50),
        us(floor_latency.p99),
        fmt_rate(floor_rate),
        "–".into(),
        "–".into(),
    ]);
    for mode in &results.modes {
        if mode.version.is_none() {
            table.row(not_built(mode.mode.label()));
            continue;
        }
        for size in &mode.sizes {
            let (first, last, direct) = (medians(&size.first), medians(&size.last), medians(&size.non_service));
            table.row(vec![
                mode.mode.label().into(),
                size.services.to_string(),
                us(first.p50),
                us(first.p99),
                us(last.p50),
                us(last.p99),
                fmt_rate(rate_median(&size.rate)),
                us(direct.p50),
                us(direct.p99),
            ]);
        }
    }
    out.push_str(&table.render());
    if results.modes.iter().any(|m| m.mode.is_ebpf() && m.version.is_some()) {
        let _ = writeln!(
            out,
            "eBPF: the client runs in a cgroup with Keelson's socket programs attached, as pods do on a Keelson \
             node: connect4 picks the backend at connect time and no packet is translated in the node. \
             eBPF TC: the client is outside that cgroup and tc_nat translates every packet on the node's \
             veths, where kube-proxy's rules act (traffic the socket programs do not see)."
        );
    }

    let _ = writeln!(out, "\n-- programming (wall time of iptables-restore / nft -f / the eBPF map writes) --");
    let mut table = Table::new(&["mode", "services", "full sync", "n", "one endpoint change", "max", "n"]);
    for mode in &results.modes {
        if mode.version.is_none() {
            table.row(not_built(mode.mode.label()));
            continue;
        }
        for size in &mode.sizes {
            table.row(vec![
                mode.mode.label().into(),
                size.services.to_string(),
                fmt_ns(duration_median(&size.full_syncs)),
                size.full_syncs.len().to_string(),
                fmt_ns(duration_median(&size.changes)),
                fmt_ns(size.changes.iter().max().map_or(0, |d| d.as_nanos() as u64)),
                size.changes.len().to_string(),
            ]);
        }
    }
    out.push_str(&table.render());

    let _ = writeln!(
        out,
        "\n-- ratios to the no-NAT floor of this run (median of its runs before and after the modes; \
         latency: higher is worse, conn/s: lower is worse) --"
    );
    let mut table =
        Table::new(&["mode", "services", "last p50", "last p99", "first p50", "conn/s", "non-svc p50", "non-svc p99"]);
    for mode in &results.modes {
        if mode.version.is_none() {
            table.row(not_built(mode.mode.label()));
            continue;
        }
        for size in &mode.sizes {
            let (first, last, direct) = (medians(&size.first), medians(&size.last), medians(&size.non_service));
            let f = |ns: u64| ns as f64;
            table.row(vec![
                mode.mode.label().into(),
                size.services.to_string(),
                ratio(f(last.p50), f(floor_latency.p50)),
                ratio(f(last.p99), f(floor_latency.p99)),
                ratio(f(first.p50), f(floor_latency.p50)),
                ratio(rate_median(&size.rate), floor_rate),
                ratio(f(direct.p50), f(floor_latency.p50)),
                ratio(f(direct.p99), f(floor_latency.p99)),
            ]);
        }
    }
    out.push_str(&table.render());
    versus_baselines(&mut out, results);
    targets(&mut out, results, floor_latency.p50, floor_rate);
    packet_costs(&mut out, results);

    let _ = writeln!(out, "\n-- checks --");
    let before = medians(&results.floor_before.latency);
    let after = medians(&results.floor_after.latency);
    let floor_slow = before.slow + after.slow;
    let _ = writeln!(
        out,
        "floor before / after the modes: p50 {} / {} µs, p99 {} / {} µs, conn/s {} / {}; connects over {} ms: {floor_slow}",
        us(before.p50),
        us(after.p50),
        us(before.p99),
        us(after.p99),
        fmt_rate(rate_median(&results.floor_before.rate)),
        fmt_rate(rate_median(&results.floor_after.rate)),
        SLOW_CONNECT_NS / 1_000_000
    );
    for mode in results.modes.iter().filter(|mode| mode.version.is_some()) {
        for size in &mode.sizes {
            let all: Vec<Latency> = size.first.iter().chain(&size.last).chain(&size.non_service).copied().collect();
            let all = medians(&all);
            let _ = writeln!(
                out,
                "{} {}: spread of the last Service over the backends {}; slowest connect {}; connects over {} ms: {}",
                mode.mode.label(),
                size.services,
                spread(size),
                fmt_ns(all.max),
                SLOW_CONNECT_NS / 1_000_000,
                all.slow
            );
        }
    }
    let _ = writeln!(
        out,
        "most conntrack entries right after a flush: {}; most TIME_WAIT sockets before a figure: {}; \
         SYNs dropped by full accept queues: {}",
        results.hygiene.conntrack_after_flush, results.hygiene.time_wait, results.hygiene.listen_drops
    );
    let _ = writeln!(
        out,
        "host namespace untouched (no to-client/to-backend link on the host): {}",
        if results.host_untouched { "yes" } else { "NO" }
    );
    if !results.stale_namespaces.is_empty() {
        let _ = writeln!(out, "namespaces left by killed runs: {}", results.stale_namespaces.join(" "));
    }

    let _ = writeln!(out, "\n-- machine (shared with other work: figures are indicative) --");
    let nproc = std::thread::available_parallelism().map_or(0, usize::from);
    let _ = writeln!(out, "nproc {nproc}; cpu {}; kernel {}; {}", cpu_model(), kernel(), utc_now());
    let _ = writeln!(out, "load average before: {}; after: {}", results.load_before, results.load_after);
    for mode in &results.modes {
        if let Some(version) = &mode.version {
            let _ = writeln!(out, "{}: {version}", mode.mode.label());
        }
    }
    out
}

/// Each eBPF datapath's figures as ratios of each baseline's at the same size.
fn versus_baselines(out: &mut String, results: &Results) {
    let measured = |m: &&ModeResult| m.version.is_some();
    let ebpf: Vec<&ModeResult> = results.modes.iter().filter(|m| m.mode.is_ebpf()).filter(measured).collect();
    if ebpf.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n-- eBPF as a ratio of each baseline at the same size (latency and programming time: below 1 is \
         better; conn/s: above 1 is better) --"
    );
    let mut table =
        Table::new(&["mode", "baseline", "services", "last p50", "last p99", "conn/s", "full sync", "endpoint change"]);
    for mode in ebpf {
        for base in results.modes.iter().filter(|m| !m.mode.is_ebpf()).filter(measured) {
            for size in &mode.sizes {
                let Some(other) = base.sizes.iter().find(|s| s.services == size.services) else { continue };
                let (mine, theirs) = (medians(&size.last), medians(&other.last));
                let f = |ns: u64| ns as f64;
                table.row(vec![
                    mode.mode.label().into(),
                    base.mode.label().into(),
                    size.services.to_string(),
                    ratio(f(mine.p50), f(theirs.p50)),
                    ratio(f(mine.p99), f(theirs.p99)),
                    ratio(rate_median(&size.rate), rate_median(&other.rate)),
                    ratio(f(duration_median(&size.full_syncs)), f(duration_median(&other.full_syncs))),
                    ratio(f(duration_median(&size.changes)), f(duration_median(&other.changes))),
                ]);
            }
        }
    }
    out.push_str(&table.render());
}

/// Connect p50 at most this many times the floor's.
const CONNECT_P50_TARGET: f64 = 1.05;
/// Connections per second at least this share of the floor's.
const RATE_TARGET: f64 = 0.95;
const ENDPOINT_CHANGE_TARGET: Duration = Duration::from_millis(1);
const FULL_SYNC_TARGET: Duration = Duration::from_millis(200);

/// The targets, checked on each eBPF datapath at the largest size measured.
fn targets(out: &mut String, results: &Results, floor_p50: u64, floor_rate: f64) {
    for ebpf in results.modes.iter().filter(|m| m.mode.is_ebpf() && m.version.is_some()) {
        mode_targets(out, ebpf, floor_p50, floor_rate);
    }
}

fn mode_targets(out: &mut String, ebpf: &ModeResult, floor_p50: u64, floor_rate: f64) {
    let Some(size) = ebpf.sizes.iter().max_by_key(|s| s.services) else { return };
    let n = size.services;
    let _ = writeln!(out, "\n-- targets ({} at {n} services) --", ebpf.mode.label());
    let pass = |ok: bool| if ok { "PASS" } else { "MISS" }.to_owned();
    let mut table = Table::new(&["target", "measured", "result"]);
    let last = medians(&size.last);
    let p50 = last.p50 as f64 / floor_p50.max(1) as f64;
    table.row(vec![
        format!("connect p50 to the last Service ≤ {CONNECT_P50_TARGET}× the floor"),
        format!("{} µs vs {} µs = {p50:.2}×", us(last.p50), us(floor_p50)),
        pass(p50 <= CONNECT_P50_TARGET),
    ]);
    let rate = rate_median(&size.rate) / floor_rate.max(f64::MIN_POSITIVE);
    table.row(vec![
        format!("conn/s to the last Service ≥ {RATE_TARGET}× the floor"),
        format!("{}/s vs {}/s = {rate:.2}×", fmt_rate(rate_median(&size.rate)), fmt_rate(floor_rate)),
        pass(rate >= RATE_TARGET),
    ]);
    let change = size.changes.iter().max().copied().unwrap_or_default();
    table.row(vec![
        format!("one endpoint change ≤ {} ms (slowest of {})", ENDPOINT_CHANGE_TARGET.as_millis(), size.changes.len()),
        fmt_ns(change.as_nanos() as u64),
        pass(!size.changes.is_empty() && change <= ENDPOINT_CHANGE_TARGET),
    ]);
    let sync = Duration::from_nanos(duration_median(&size.full_syncs));
    table.row(vec![
        format!("full sync of {n} Services ≤ {} ms", FULL_SYNC_TARGET.as_millis()),
        fmt_ns(sync.as_nanos() as u64),
        pass(!size.full_syncs.is_empty() && sync <= FULL_SYNC_TARGET),
    ]);
    let direct = medians(&size.non_service);
    let direct_ratio = direct.p50 as f64 / floor_p50.max(1) as f64;
    table.row(vec![
        format!("non-service connect p50 ≤ {CONNECT_P50_TARGET}× the floor (traffic unaffected)"),
        format!("{} µs = {direct_ratio:.2}×", us(direct.p50)),
        pass(direct_ratio <= CONNECT_P50_TARGET),
    ]);
    out.push_str(&table.render());
}

/// `tc_nat`'s ns/packet from `BPF_PROG_TEST_RUN` (see `packet_cost`).
fn packet_costs(out: &mut String, results: &Results) {
    let plan = &results.plan.packet;
    let _ = writeln!(
        out,
        "\n-- tc_nat per packet (BPF_PROG_TEST_RUN, kernel's ns per run; medians of {} runs) --",
        plan.runs
    );
    let mut table =
        Table::new(&["services", "DNAT first packet", "non-svc, 1 run/call", "DNAT established", "non-service"]);
    let ns = |values: &[f64]| format!("{:.0}", median_f64(values.to_vec()));
    for size in &results.packet {
        table.row(vec![
            size.services.to_string(),
            ns(&size.first_packet),
            ns(&size.non_service_single),
            ns(&size.established),
            ns(&size.non_service),
        ]);
    }
    out.push_str(&table.render());
    let _ = writeln!(
        out,
        "first packet: {} calls of 1 run, a new flow each (conntrack miss, pick, CT/CT_REV insert, rewrite), \
         mean; 1 run/call includes a clock read, hence the non-service figure beside it. Established and \
         non-service: {} runs in one call. Frames: Ethernet/IPv4/TCP, 54 bytes; the last Service's packet.",
        plan.flows, plan.repeat
    );
}

/// The row of a datapath that does not exist yet.
fn not_built(label: &str) -> Vec<String> {
    vec![format!("{label} (not built yet)"), "–".into()]
}

/// Floor runs before and after the modes, pooled.
fn pooled(before: &Floor, after: &Floor) -> Floor {
    Floor {
        latency: before.latency.iter().chain(&after.latency).copied().collect(),
        rate: before.rate.iter().chain(&after.rate).cloned().collect(),
    }
}

/// Share of each backend in the rate runs, as `33.1/33.5/33.4 %`.
fn spread(size: &Measured) -> String {
    let mut totals = [0usize; 3];
    for rate in &size.rate {
        for (total, n) in totals.iter_mut().zip(&rate.per_backend) {
            *total += n;
        }
    }
    let sum: usize = totals.iter().sum();
    if sum == 0 {
        return "–".into();
    }
    let shares: Vec<String> = totals.iter().map(|n| format!("{:.1}", *n as f64 * 100.0 / sum as f64)).collect();
    format!("{} %", shares.join("/"))
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim().to_owned()))
        })
        .unwrap_or_else(|| "unknown".into())
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map_or_else(|_| "unknown".into(), |s| s.trim().to_owned())
}

fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default()
}
