//! The plain-text report of `bench-scheduler`: the machine, the method, every run, medians,
//! Kubernetes' published scheduler_perf figure beside ours, and the target verdict.

use std::fmt::Write as _;

use super::{Mode, Results, Shape, Trial};
use crate::bench::stats::{Table, fmt_mib, group_thousands, median_f64, median_u64};

/// Kubernetes scheduler_perf `SchedulingBasic/5000Nodes_10000Pods`, published average
/// scheduling throughput (pods/s).
pub const REFERENCE_PODS_PER_SEC: f64 = 680.0;
pub const REFERENCE_SHAPE: Shape = Shape { nodes: 5_000, pods: 10_000 };
/// Keelson's target at that shape on this 2-core machine.
pub const TARGET_PODS_PER_SEC: f64 = 2_000.0;

fn shape_label(shape: Shape) -> String {
    format!("{} nodes / {} pods", group_thousands(shape.nodes as u64), group_thousands(shape.pods as u64))
}

fn rate(r: f64) -> String {
    group_thousands(r.round() as u64)
}

/// Trials of one shape and mode that completed (every Pod bound).
fn complete(results: &Results, shape: Shape, mode: Mode) -> Vec<&super::Measured> {
    trials(results, shape, mode)
        .filter_map(|t| t.result.as_ref().ok())
        .filter(|m| m.bound == shape.pods && m.created == shape.pods)
        .collect()
}

fn trials(results: &Results, shape: Shape, mode: Mode) -> impl Iterator<Item = &Trial> {
    results.trials.iter().filter(move |t| t.shape == shape && t.mode == mode)
}

/// The median headline rate of a shape and mode over complete trials.
pub fn median_rate(results: &Results, shape: Shape, mode: Mode) -> Option<f64> {
    let done = complete(results, shape, mode);
    (!done.is_empty()).then(|| median_f64(done.iter().map(|m| m.rate).collect()))
}

pub fn render(results: &Results) -> String {
    let plan = &results.plan;
    let mc = &results.machine;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Keelson scheduler benchmark (cargo xtask bench scheduler{})",
        if plan.quick { " --quick" } else { "" }
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "Machine: nproc {}, CPU {}, kernel {}, {}", mc.nproc, mc.model, mc.kernel, mc.date);
    let _ = writeln!(out, "Load average at start {}, at end {}", mc.load_at_start, results.load_at_end);
    let _ = writeln!(
        out,
        "Control plane: {} (release) as a separate process, embedded SQLite store, --controllers= (none),\n  \
         scheduler on; RSS is its /proc/PID/status VmRSS once every Pod is bound.",
        results.control_plane.display()
    );
    let _ = writeln!(
        out,
        "Hollow nodes: node_agent::hollow in the benchmark process (4 CPU, 16Gi, 110 pods each). Without the\n  \
         nodeipam controller they get no podCIDR, so bound Pods stay Pending: no kubelet status writes, as in\n  \
         scheduler_perf, which runs no kubelets. Leases and node status are written every {} s.",
        plan.renew_every.as_secs()
    );
    let _ = writeln!(
        out,
        "Pods: plain Pods (one container, requests cpu 100m / memory 128Mi, no affinity) created by {} concurrent\n  \
         HTTP/2 clients. Throughput = Pods bound / (last binding - first binding), bindings seen by a watch on\n  \
         the Pods (first event with spec.nodeName), as scheduler_perf counts them from an informer.",
        plan.creators
    );
    let _ = writeln!(
        out,
        "Modes: concurrent = the scheduler runs while the Pods are created (as scheduler_perf);\n  \
         backlog = Pods stored with the scheduler off, then the control plane restarts with it on (scheduler alone;\n  \
         start = leader Lease released, which includes the scheduler's informer sync)."
    );
    let _ = writeln!(out);

    let _ = writeln!(
        out,
        "Every run. pods/s over the binding window; per-s = median and lowest bindings in a whole second;\n\
         cores = CPU time / (start to last binding) of the control plane, of this process (hollow nodes, clients,\n\
         watch) and of the whole machine (the rest of it is other work on the machine)."
    );
    let mut table = Table::new(&[
        "shape",
        "mode",
        "run",
        "pods/s",
        "per-s med",
        "per-s min",
        "create/s",
        "start->1st bind",
        "start->last bind",
        "nodes used",
        "CP cores",
        "bench cores",
        "machine cores",
        "RSS end",
        "register",
    ])
    .left_aligned(2);
    for t in &results.trials {
        match &t.result {
            Ok(m) => table.row(vec![
                shape_label(t.shape),
                t.mode.name().into(),
                t.run.to_string(),
                rate(m.rate),
                m.per_second_median.map_or("-".into(), rate),
                m.per_second_min.map_or("-".into(), rate),
                rate(m.create_rate),
                format!("{:.2} s", m.to_first_bind.as_secs_f64()),
                format!("{:.2} s", m.wall.as_secs_f64()),
                group_thousands(m.nodes_used as u64),
                format!("{:.2}", m.cp_cores),
                format!("{:.2}", m.bench_cores),
                format!("{:.2}", m.machine_cores),
                fmt_mib(m.rss),
                format!("{:.1} s", m.register.as_secs_f64()),
            ]),
            Err(_) => table.row(vec![shape_label(t.shape), t.mode.name().into(), t.run.to_string(), "failed".into()]),
        }
    }
    out.push_str(&table.render());
    let _ = writeln!(out);

    let _ = writeln!(out, "Medians over complete runs (every Pod created and bound)");
    let mut table = Table::new(&["shape", "mode", "runs", "pods/s", "min", "max", "vs K8s 680", "RSS end", "VmHWM"])
        .left_aligned(2);
    for &shape in &plan.shapes {
        for &mode in &plan.modes {
            let done = complete(results, shape, mode);
            let rates: Vec<f64> = done.iter().map(|m| m.rate).collect();
            let Some(median) = median_rate(results, shape, mode) else {
                table.row(vec![shape_label(shape), mode.name().into(), "0".into(), "-".into()]);
                continue;
            };
            let versus = if shape == REFERENCE_SHAPE {
                format!("{:.2}x", median / REFERENCE_PODS_PER_SEC)
            } else {
                "(no ref.)".into()
            };
            table.row(vec![
                shape_label(shape),
                mode.name().into(),
                format!("{}/{}", done.len(), trials(results, shape, mode).count()),
                rate(median),
                rate(rates.iter().copied().fold(f64::INFINITY, f64::min)),
                rate(rates.iter().copied().fold(0.0, f64::max)),
                versus,
                fmt_mib(median_u64(done.iter().map(|m| m.rss).collect())),
                fmt_mib(median_u64(done.iter().map(|m| m.hwm).collect())),
            ]);
        }
    }
    out.push_str(&table.render());
    let _ = writeln!(out);

    let _ = writeln!(
        out,
        "Reference: Kubernetes scheduler_perf SchedulingBasic, {}: {} pods/s (published figure).",
        shape_label(REFERENCE_SHAPE),
        rate(REFERENCE_PODS_PER_SEC)
    );
    match median_rate(results, REFERENCE_SHAPE, Mode::Concurrent) {
        Some(ours) => {
            let _ = writeln!(
                out,
                "Keelson, same shape, concurrent mode (median): {} pods/s = {:.2}x the reference.",
                rate(ours),
                ours / REFERENCE_PODS_PER_SEC
            );
            if let Some(backlog) = median_rate(results, REFERENCE_SHAPE, Mode::Backlog) {
                let _ = writeln!(
                    out,
                    "Keelson, same shape, backlog mode (median): {} pods/s = {:.2}x the reference.",
                    rate(backlog),
                    backlog / REFERENCE_PODS_PER_SEC
                );
            }
            let verdict = if ours >= TARGET_PODS_PER_SEC { "PASS" } else { "MISS" };
            let _ = writeln!(
                out,
                "Target >= {} pods/s at {} (concurrent, median): {verdict}",
                rate(TARGET_PODS_PER_SEC),
                shape_label(REFERENCE_SHAPE)
            );
        }
        None if plan.quick => {
            let _ = writeln!(
                out,
                "Target >= {} pods/s: not judged (--quick uses smaller shapes).",
                rate(TARGET_PODS_PER_SEC)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "Target >= {} pods/s at {}: MISS (no complete run)",
                rate(TARGET_PODS_PER_SEC),
                shape_label(REFERENCE_SHAPE)
            );
        }
    }

    let problems: Vec<String> = results
        .trials
        .iter()
        .filter_map(|t| {
            let text = match &t.result {
                Ok(m) if m.problems.is_empty() => return None,
                Ok(m) => m.problems.join("; "),
                Err(e) => e.clone(),
            };
            Some(format!("- {}, {}, run {}: {text}", shape_label(t.shape), t.mode.name(), t.run))
        })
        .collect();
    if !problems.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "Problems:");
        for p in problems {
            let _ = writeln!(out, "{p}");
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "Elapsed: {:.0} s", results.elapsed.as_secs_f64());
    out
}
