//! The plain-text report: figures per mode and size, ratios to the no-NAT floor of the same run,
//! the run's hygiene checks and the machine.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use crate::bench::stats::{Table, fmt_ns, fmt_rate, median_f64, median_u64};

use super::services::{SERVICE_PORT, TARGET_PORT};
use super::{Floor, Latency, Measured, Results, SLOW_CONNECT_NS};

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
    if base <= 0.0 { "–".into() } else { format!("{:.2}×", value / base) }
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

    let _ = writeln!(out, "\n-- rule programming (wall time of iptables-restore / nft -f) --");
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
    let _ = writeln!(out, "(the eBPF row will also carry its ratios to each baseline once it is built)");

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
