//! The plain-text report: machine, one table per section, ratios, and the targets.

use std::fmt::Write as _;

use super::stats::{Repeated, Table, fmt_mib, fmt_ns, fmt_rate, group_thousands};
use super::{Levels, Results};

/// Mutating p99 target at 100 clients.
const MUTATING_P99_TARGET_NS: u64 = 25_000_000;
/// Idle RSS target: 40 MB (10^6 bytes).
const IDLE_RSS_TARGET_BYTES: u64 = 40_000_000;

fn repeated(levels: &Levels, clients: usize) -> Option<Repeated> {
    levels.get(&clients).map(|runs| Repeated::of(runs))
}

fn range(r: &Repeated) -> String {
    if r.runs < 2 { "-".into() } else { format!("{}–{}", fmt_rate(r.throughput_min), fmt_rate(r.throughput_max)) }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 { format!("{:.2}×", a / b) } else { "-".into() }
}

fn pass(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

/// One row of a latency/throughput table.
fn row(op: &str, clients: usize, r: &Repeated, versus: Option<f64>) -> Vec<String> {
    vec![
        op.to_owned(),
        clients.to_string(),
        group_thousands(r.count as u64),
        format!("{}{}", fmt_rate(r.throughput), if r.capped { " (cap)" } else { "" }),
        range(r),
        fmt_ns(r.p50),
        fmt_ns(r.p99),
        r.errors.to_string(),
        versus.map_or_else(|| "-".into(), |base| ratio(r.throughput, base)),
    ]
}

pub fn render(results: &Results) -> String {
    let mut out = String::new();
    let plan = &results.plan;
    let m = &results.machine;
    let runs = plan.runs;
    let _ = writeln!(
        out,
        "Keelson API benchmark{}",
        if plan.quick { " (QUICK mode: small counts, not for comparison)" } else { "" }
    );
    let _ = writeln!(out, "======================\n");
    let _ = writeln!(out, "== Machine ==");
    let _ = writeln!(out, "cpus (nproc)   {}", m.cpus);
    let _ = writeln!(out, "model          {}", m.model);
    let _ = writeln!(out, "kernel         {}", m.kernel);
    let _ = writeln!(out, "date           {}", m.date);
    let _ = writeln!(out, "temp dirs on   {}", m.temp_fs);
    let _ = writeln!(out, "etcd           {} ({})", m.etcd_version, results.programs.etcd.display());
    let _ = writeln!(out, "control plane  {}", results.programs.control_plane.display());
    let _ = writeln!(
        out,
        "repetitions    {runs} run(s) of every timed phase; figures are medians over runs (p50, p99 and rate each), \
         'range' is the lowest–highest rate"
    );
    let _ = writeln!(out, "load average   {} at start, {} at end (1/5/15 min)", m.load_at_start, results.load_at_end);
    let _ = writeln!(
        out,
        "note           load generator, server and etcd share the same {} CPUs; total time {:.0} s\n",
        m.cpus,
        results.elapsed.as_secs_f64()
    );

    let header = ["op", "clients", "ops/run", "ops/s", "range", "p50", "p99", "errors", "vs etcd"];
    let _ = writeln!(
        out,
        "== etcd {} raw, one member on loopback, default fsync, {}-byte values (the storage floor{}) ==",
        m.etcd_version.trim_start_matches("etcd Version: "),
        super::etcd::VALUE_BYTES,
        match results.api.pod_json_bytes {
            0 => String::new(),
            n => format!("; a bench Pod as the API returns it: {n} bytes"),
        }
    );
    let mut table = Table::new(&header);
    for (op, levels) in [("put", &results.etcd.put), ("get", &results.etcd.get)] {
        for &clients in &plan.levels {
            if let Some(r) = repeated(levels, clients) {
                table.row(row(op, clients, &r, None));
            }
        }
    }
    let _ = writeln!(out, "{}", table.render());
    let _ = writeln!(
        out,
        "DESIGN.md reference for etcd put on this kind of machine (2026-11-26), 1/10/100 clients: 3 164 / 12 925 / 28 819 ops/s, \
         p99 0.54 / 2.2 / 12.2 ms"
    );
    let _ = writeln!(out, "etcd RSS idle after start: {}\n", fmt_mib(results.etcd.idle_rss));

    let api = &results.api;
    let _ = writeln!(
        out,
        "== Keelson API: Pods in one namespace, JSON, HTTP/2 over TLS, one connection per client ==\n\
         server: API only ({}): the API server and the store, no controllers or scheduler.\n\
         create/update 'vs etcd' = rate / etcd put rate at the same clients; get 'vs etcd' = rate / etcd get rate.\n\
         update = PUT conditional on the last resourceVersion, each client on its own pods, with {} watches open \
         on the namespace; 'update, no watch' = the same with none open.\n\
         one stored pod is {} bytes of JSON; reads run over {} stored pods.",
        super::API_ONLY.join(" "),
        plan.watchers,
        api.pod_json_bytes,
        group_thousands(plan.stored_pods as u64)
    );
    let mut table = Table::new(&header);
    let etcd_put = |clients| repeated(&results.etcd.put, clients).map(|r| r.throughput);
    let etcd_get = |clients| repeated(&results.etcd.get, clients).map(|r| r.throughput);
    for (op, levels, base) in [
        ("create", &api.create, &etcd_put as &dyn Fn(usize) -> Option<f64>),
        ("update", &api.update, &etcd_put),
        ("update, no watch", &api.update_unwatched, &etcd_put),
        ("get", &api.get, &etcd_get),
    ] {
        for &clients in &plan.levels {
            if let Some(r) = repeated(levels, clients) {
                table.row(row(op, clients, &r, base(clients)));
            }
        }
    }
    let _ = writeln!(out, "{}", table.render());

    let _ = writeln!(
        out,
        "== Keelson list over {} stored pods ==\n\
         'full' = one request for all (at {}+ clients in one run only); 'page' = one limit={} request ({} page requests per run \
         and level, shared by the clients); 'walk' = all pages of one list with continue, where a client's share of \
         the page budget covers a whole walk.",
        group_thousands(plan.stored_pods as u64),
        plan.full_list_once_from,
        plan.page_limit,
        plan.page_budget
    );
    let mut table = Table::new(&["list", "clients", "runs", "requests/run", "req/s", "range", "p50", "p99", "errors"]);
    for (op, levels) in [
        ("full", &api.list_full),
        (&*format!("page (limit={})", plan.page_limit), &api.list_page),
        ("walk (all pages)", &api.list_walk),
    ] {
        for &clients in &plan.levels {
            if let Some(r) = repeated(levels, clients) {
                let mut cells = row(op, clients, &r, None);
                cells.pop();
                cells.insert(2, r.runs.to_string());
                table.row(cells);
            }
        }
    }
    let _ = writeln!(out, "{}", table.render());

    let _ = writeln!(
        out,
        "== Keelson watch delivery (write acknowledged → event at the watcher), {} watchers during the update runs ==\n\
         one delivery = one write seen by one watcher; one that arrives before the writer's acknowledgement counts as 0 \
         ('before ack' is their share).",
        plan.watchers
    );
    let mut table = Table::new(&["writers", "deliveries/run", "p50", "p99", "before ack", "missed (all runs)"]);
    for &clients in &plan.levels {
        if let Some(r) = repeated(&api.watch, clients) {
            let delivered = api.watch_deliveries.get(&clients).copied().unwrap_or(0);
            let before = api.watch_before_ack.get(&clients).copied().unwrap_or(0);
            table.row(vec![
                clients.to_string(),
                group_thousands(r.count as u64),
                fmt_ns(r.p50),
                fmt_ns(r.p99),
                format!("{:.0} %", if delivered > 0 { 100.0 * before as f64 / delivered as f64 } else { 0.0 }),
                api.watch_missed.get(&clients).copied().unwrap_or(0).to_string(),
            ]);
        }
    }
    let _ = writeln!(out, "{}", table.render());

    let churn = &results.churn;
    let _ = writeln!(
        out,
        "== Store size on disk under churn: {} updates to {} pods by {} clients, server run with --compact-interval {} s ==",
        group_thousands(churn.updates as u64),
        plan.churn_objects,
        plan.churn_clients,
        plan.compact_interval
    );
    let mut table = Table::new(&["when", "state.db", "state.db-wal", "db + wal", "(-shm)"]);
    let size_row = |when: &str, s: &super::StoreSize| {
        vec![when.to_owned(), fmt_mib(s.db), fmt_mib(s.wal), fmt_mib(s.total()), fmt_mib(s.shm)]
    };
    table.row(size_row("right after the last update", &churn.after));
    table.row(vec![
        "largest seen while updating (100 ms samples)".into(),
        "".into(),
        "".into(),
        fmt_mib(churn.largest),
        "".into(),
    ]);
    table.row(size_row(&format!("after {} s idle", plan.compact_interval * 2 + 1), &churn.settled));
    let _ = writeln!(out, "{}", table.render());
    let _ = writeln!(
        out,
        "churn rate {}/s, p50 {}, p99 {}, errors {}; compactions logged: {}; live data ≈ {} pods × {} B = {}; \
         control-plane RSS after churn {}\n",
        fmt_rate(churn.summary.throughput),
        fmt_ns(churn.summary.p50),
        fmt_ns(churn.summary.p99),
        churn.summary.errors,
        churn.compactions,
        plan.churn_objects,
        api.pod_json_bytes,
        fmt_mib((plan.churn_objects * api.pod_json_bytes) as u64),
        fmt_mib(churn.rss)
    );

    let defaults = &results.default_flags;
    let pods = group_thousands(plan.stored_pods as u64);
    let _ = writeln!(
        out,
        "== Control-plane memory (VmRSS from /proc/PID/status) ==\n\
         'default flags' = controllers and scheduler on, as shipped; 'API only' = {} (the server of the runs above).",
        super::API_ONLY.join(" ")
    );
    let mut table = Table::new(&["server", "when", "RSS", "MB (10^6)"]).left_aligned(2);
    let mb = |b: u64| format!("{:.1}", b as f64 / 1e6);
    let mut rss_row = |server: &str, when: String, bytes: u64| {
        table.row(vec![server.to_owned(), when, fmt_mib(bytes), mb(bytes)]);
    };
    rss_row("default flags", "idle, 2 s after start".into(), defaults.idle_rss);
    rss_row(
        "default flags",
        format!(
            "{} pods stored (+3 s; created at {}/s)",
            group_thousands(defaults.created as u64),
            fmt_rate(defaults.create_rate)
        ),
        defaults.stored_rss,
    );
    rss_row("API only", "idle, 1 s after start".into(), api.idle_rss);
    rss_row("API only", format!("{pods} pods stored"), api.stored_rss);
    rss_row("API only", "peak (VmHWM) after all API runs, lists included".into(), api.peak_rss);
    let _ = writeln!(out, "{}", table.render());

    let _ = writeln!(out, "== Targets ==");
    let mut table = Table::new(&["target", "measured", "result"]);
    let top = *plan.levels.iter().max().unwrap_or(&100);
    let watches = plan.watchers;
    // The target is about the writes themselves, measured as create is (no watch open); the run
    // with watches open, each write delivered to every one, is reported beside it.
    for (op, levels) in [
        ("create".to_owned(), &api.create),
        ("update".to_owned(), &api.update_unwatched),
        (format!("update with {watches} watches open (stricter)"), &api.update),
    ] {
        if let Some(r) = repeated(levels, top) {
            table.row(vec![
                format!("{op} p99 ≤ 25 ms at {top} clients"),
                fmt_ns(r.p99),
                pass(r.p99 <= MUTATING_P99_TARGET_NS && r.errors == 0).into(),
            ]);
        }
    }
    for &clients in &plan.levels {
        if let (Some(r), Some(base)) = (repeated(&api.create, clients), etcd_put(clients)) {
            table.row(vec![
                format!("create rate ≥ etcd put rate at {clients} clients"),
                format!("{}/s vs {}/s = {}", fmt_rate(r.throughput), fmt_rate(base), ratio(r.throughput, base)),
                pass(r.throughput >= base).into(),
            ]);
        }
    }
    table.row(vec![
        "idle RSS ≤ 40 MB (default flags)".into(),
        format!("{} MB (API only: {} MB)", mb(defaults.idle_rss), mb(api.idle_rss)),
        pass(defaults.idle_rss <= IDLE_RSS_TARGET_BYTES).into(),
    ]);
    let _ = writeln!(out, "{}", table.render());

    if !results.failures.is_empty() {
        let _ = writeln!(out, "== Failures (first of each phase) ==");
        for failure in &results.failures {
            let _ = writeln!(out, "- {failure}");
        }
        let _ = writeln!(out);
    }
    for note in &results.notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}
