//! The body of the `bench-api` binary (`cargo xtask bench api`): API latency and throughput of
//! the control plane beside a real etcd as the storage floor, store size under churn, and RSS.
//!
//! It starts every process it measures (by PID, in temporary directories, on loopback ports),
//! bounds every loop in count and time, and returns a plain-text report. Like a `main.rs`, it
//! uses `anyhow`: it is a program split into files, not a library.

pub mod etcd;
pub mod http;
pub mod keelson;
pub mod procs;
pub mod report;
pub mod stats;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use procs::{ControlPlane, Etcd, Machine, StoreSize, proc_status_bytes};
use stats::{Phase, Summary};

/// Namespace of the Pods the API runs create.
const NAMESPACE: &str = "bench";
/// Where the timed creates go, so that the read phases run over exactly `stored_pods` Pods
/// however many creates are timed.
const CREATE_NAMESPACE: &str = "bench-create";
/// Namespace of the churn run.
const CHURN_NAMESPACE: &str = "churn";
/// Flags that leave only the API server and the store running: no controllers, no scheduler.
/// Otherwise the scheduler keeps writing the status of the benchmark's unschedulable Pods (there
/// are no Nodes), which costs CPU and makes conditional updates conflict.
pub const API_ONLY: [&str; 2] = ["--controllers=", "--scheduler=false"];

fn api_only_args() -> Vec<String> {
    API_ONLY.iter().map(|s| (*s).to_owned()).collect()
}

/// Paths of the programs under test.
#[derive(Debug, Clone)]
pub struct Programs {
    pub control_plane: PathBuf,
    pub etcd: PathBuf,
}

/// Parts of the benchmark that can be run alone (`bench-api --sections …`), for profiling one
/// of them without waiting for the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Section {
    /// etcd put and get, the storage floor.
    Etcd,
    /// Timed creates.
    Create,
    /// Updates, with and without watches, and watch delivery.
    Update,
    /// Gets and lists.
    Read,
    /// Store size under churn, with compaction.
    Churn,
    /// RSS with the default flags.
    Memory,
}

impl Section {
    pub const ALL: [Section; 6] =
        [Section::Etcd, Section::Create, Section::Update, Section::Read, Section::Churn, Section::Memory];
}

/// How much of everything to do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub quick: bool,
    /// What to run (everything by default).
    pub sections: Vec<Section>,
    /// Repetitions of every timed phase; the report gives medians.
    pub runs: usize,
    /// Concurrent clients.
    pub levels: Vec<usize>,
    /// Creates per run and level (all into one namespace).
    pub creates: usize,
    /// Pods stored (untimed) in their own namespace before the read phases.
    pub stored_pods: usize,
    pub updates: usize,
    pub gets: usize,
    /// Full lists per run and level: at least this many, and at least one per client.
    pub min_lists: usize,
    /// Levels from this many clients up list in full in one run only: 100 lists of 10 000 Pods at
    /// once take about a minute here.
    pub full_list_once_from: usize,
    pub page_limit: usize,
    /// Page requests per run and level, shared by the clients (at least one each).
    pub page_budget: usize,
    /// Watches open during the update runs.
    pub watchers: usize,
    /// etcd puts (and gets) per run and level.
    pub etcd_ops: usize,
    pub churn_objects: usize,
    pub churn_updates: usize,
    pub churn_clients: usize,
    /// `--compact-interval` of the churn server, in seconds.
    pub compact_interval: u64,
    /// Longest any one timed phase may run.
    pub phase_cap: Duration,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            quick: false,
            sections: Section::ALL.to_vec(),
            runs: 3,
            levels: vec![1, 10, 100],
            // As many as etcd's puts would take too much memory; enough that a level's phase
            // lasts a good fraction of a second even at 100 clients (1 000 took ~0.1 s and its
            // rate swung by ±30 % between runs).
            creates: 5_000,
            stored_pods: 10_000,
            updates: 5_000,
            gets: 5_000,
            min_lists: 10,
            full_list_once_from: 100,
            page_limit: 500,
            page_budget: 200,
            watchers: 4,
            etcd_ops: 10_000,
            churn_objects: 100,
            churn_updates: 100_000,
            churn_clients: 100,
            compact_interval: 5,
            phase_cap: Duration::from_secs(60),
        }
    }

    pub fn quick() -> Plan {
        Plan {
            quick: true,
            runs: 1,
            creates: 500,
            stored_pods: 2_000,
            updates: 1_000,
            gets: 1_000,
            min_lists: 4,
            page_budget: 40,
            etcd_ops: 2_000,
            churn_updates: 10_000,
            compact_interval: 2,
            phase_cap: Duration::from_secs(30),
            ..Plan::full()
        }
    }

    fn runs_section(&self, section: Section) -> bool {
        self.sections.contains(&section)
    }

    fn lists_per_client(&self, clients: usize) -> usize {
        self.min_lists.div_ceil(clients).max(1)
    }

    fn pages_per_client(&self, clients: usize) -> usize {
        self.page_budget.div_ceil(clients).max(1)
    }

    /// Runs of the full-list phase at `clients`.
    pub fn full_list_runs(&self, clients: usize) -> usize {
        if clients >= self.full_list_once_from { 1 } else { self.runs }
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.phase_cap
    }
}

/// Summaries of repeated runs, by number of clients.
pub type Levels = BTreeMap<usize, Vec<Summary>>;

/// etcd figures.
#[derive(Debug, Default)]
pub struct EtcdResults {
    pub put: Levels,
    pub get: Levels,
    pub idle_rss: u64,
}

/// Control-plane API figures.
#[derive(Debug, Default)]
pub struct ApiResults {
    pub create: Levels,
    /// Updates while the watchers are open.
    pub update: Levels,
    /// Updates with no watch open.
    pub update_unwatched: Levels,
    pub get: Levels,
    pub list_full: Levels,
    pub list_page: Levels,
    pub list_walk: Levels,
    pub watch: Levels,
    /// Per level, summed over runs: deliveries timed.
    pub watch_deliveries: BTreeMap<usize, usize>,
    /// Per level, summed over runs: events that arrived before the write's acknowledgement.
    pub watch_before_ack: BTreeMap<usize, usize>,
    /// Per level, summed over runs: (write, watcher) pairs never delivered.
    pub watch_missed: BTreeMap<usize, usize>,
    pub idle_rss: u64,
    pub stored_rss: u64,
    /// VmHWM at the end of the API runs.
    pub peak_rss: u64,
    /// Size of one stored Pod as GET returns it (JSON bytes).
    pub pod_json_bytes: usize,
}

/// Store size under churn.
#[derive(Debug, Default)]
pub struct ChurnResults {
    pub updates: usize,
    pub summary: Summary,
    /// Right after the last update.
    pub after: StoreSize,
    /// The largest `state.db` + `-wal` seen while updating.
    pub largest: u64,
    /// After two more compaction intervals with no writes.
    pub settled: StoreSize,
    pub rss: u64,
    /// Compactions the server logged (at debug level) during the churn run.
    pub compactions: usize,
}

/// Memory of the control plane as shipped: controllers and scheduler on.
#[derive(Debug, Default)]
pub struct DefaultFlagsResults {
    /// VmRSS 2 s after start.
    pub idle_rss: u64,
    /// VmRSS 3 s after the Pods were stored.
    pub stored_rss: u64,
    /// Pods created (by the widest level of clients), and at what rate.
    pub created: usize,
    pub create_rate: f64,
}

/// Everything the report shows.
#[derive(Debug)]
pub struct Results {
    pub machine: Machine,
    pub plan: Plan,
    pub programs: Programs,
    pub etcd: EtcdResults,
    pub api: ApiResults,
    pub churn: ChurnResults,
    pub default_flags: DefaultFlagsResults,
    /// First failure of every phase that had one.
    pub failures: Vec<String>,
    pub notes: Vec<String>,
    pub elapsed: Duration,
    pub load_at_end: String,
}

/// Progress on stderr, so that stdout holds only the report.
fn progress(message: impl AsRef<str>) {
    eprintln!("bench-api: {}", message.as_ref());
}

/// Runs every section and returns the results.
pub async fn run(programs: Programs, plan: Plan) -> anyhow::Result<Results> {
    let started = Instant::now();
    let machine = Machine::probe(&programs.etcd);
    let mut results = Results {
        machine,
        plan: plan.clone(),
        programs: programs.clone(),
        etcd: EtcdResults::default(),
        api: ApiResults::default(),
        churn: ChurnResults::default(),
        default_flags: DefaultFlagsResults::default(),
        failures: Vec::new(),
        notes: Vec::new(),
        elapsed: Duration::ZERO,
        load_at_end: String::new(),
    };
    let etcd = if plan.runs_section(Section::Etcd) {
        Some(start_etcd(&programs, &mut results).await.context("etcd section")?)
    } else {
        None
    };
    let api_sections = [Section::Create, Section::Update, Section::Read].iter().any(|s| plan.runs_section(*s));
    // etcd's rounds run between the creates when there are creates (see `run_api`).
    if let Some(etcd) = etcd.as_ref().filter(|_| !plan.runs_section(Section::Create)) {
        for run in 0..plan.runs {
            for &clients in &plan.levels {
                etcd_round(etcd, &plan, run, clients, &mut results.etcd, &mut results.failures)
                    .await
                    .context("etcd section")?;
            }
        }
    }
    if api_sections {
        run_api(&programs, &plan, &mut results, etcd.as_ref()).await.context("API section")?;
    }
    drop(etcd);
    if plan.runs_section(Section::Churn) {
        run_churn(&programs, &plan, &mut results).await.context("churn section")?;
    }
    if plan.runs_section(Section::Memory) {
        run_default_flags(&programs, &plan, &mut results).await.context("default-flags memory section")?;
    }
    results.elapsed = started.elapsed();
    results.load_at_end = procs::load_average();
    Ok(results)
}

/// Keeps a phase's summary and its first failure.
fn record(levels: &mut Levels, failures: &mut Vec<String>, label: &str, clients: usize, phase: &Phase) -> Summary {
    let summary = phase.summary();
    if let Some(error) = &phase.first_error {
        failures.push(format!("{label} ({clients} clients, {} failed): {error}", phase.errors));
    }
    levels.entry(clients).or_default().push(summary);
    progress(format!(
        "{label:<14} clients {clients:>3}: {:>6} ok, {:>4} errors, {:>9}/s, p50 {}, p99 {}{}",
        summary.count,
        summary.errors,
        stats::fmt_rate(summary.throughput),
        stats::fmt_ns(summary.p50),
        stats::fmt_ns(summary.p99),
        if summary.capped { " (time cap)" } else { "" }
    ));
    summary
}

async fn start_etcd(programs: &Programs, results: &mut Results) -> anyhow::Result<Etcd> {
    progress(format!("starting etcd ({})", programs.etcd.display()));
    let etcd = Etcd::start(&programs.etcd).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    results.etcd.idle_rss = proc_status_bytes(etcd.pid(), "VmRSS")?;
    Ok(etcd)
}

/// One run of etcd puts and then gets of the keys put, at one level.
async fn etcd_round(
    etcd: &Etcd,
    plan: &Plan,
    run: usize,
    clients: usize,
    out: &mut EtcdResults,
    failures: &mut Vec<String>,
) -> anyhow::Result<()> {
    let prefix = format!("/bench/r{run}/c{clients}");
    let (phase, keys) = etcd::put(&etcd.endpoint, clients, plan.etcd_ops, &prefix, plan.deadline()).await?;
    record(&mut out.put, failures, "etcd put", clients, &phase);
    if keys.is_empty() {
        bail!("no etcd put succeeded: {}", phase.first_error.unwrap_or_default());
    }
    let phase = etcd::get(&etcd.endpoint, clients, plan.etcd_ops, Arc::new(keys), plan.deadline()).await?;
    record(&mut out.get, failures, "etcd get", clients, &phase);
    Ok(())
}

/// The API phases. With `etcd`, each create run is paired with an etcd round at the same level
/// just before it, so that the two sides of the `vs etcd` ratio are measured minutes apart at
/// most rather than one whole section apart: on a shared machine the noise drifts within minutes.
async fn run_api(programs: &Programs, plan: &Plan, results: &mut Results, etcd: Option<&Etcd>) -> anyhow::Result<()> {
    progress(format!("starting control plane ({})", programs.control_plane.display()));
    let cp = ControlPlane::start(&programs.control_plane, &api_only_args(), "info").await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    results.api.idle_rss = proc_status_bytes(cp.pid(), "VmRSS")?;
    keelson::create_namespace(&cp.target, NAMESPACE).await?;
    keelson::create_namespace(&cp.target, CREATE_NAMESPACE).await?;
    let api = &mut results.api;
    let failures = &mut results.failures;

    // Creates, level by level, repeated, in their own namespace.
    let mut next = 0usize;
    let mut names = |n: usize| -> Vec<String> {
        let out = (next..next + n).map(|i| format!("pod-{i:06}")).collect();
        next += n;
        out
    };
    let mut timed_names = Vec::new();
    let create_runs = if plan.runs_section(Section::Create) { plan.runs } else { 0 };
    for run in 0..create_runs {
        for &clients in &plan.levels {
            if let Some(etcd) = etcd {
                etcd_round(etcd, plan, run, clients, &mut results.etcd, failures).await.context("etcd section")?;
            }
            let batch = names(plan.creates);
            timed_names.extend(batch.iter().cloned());
            let (phase, _) = keelson::create(&cp.target, CREATE_NAMESPACE, clients, batch, plan.deadline()).await?;
            record(&mut api.create, failures, "create", clients, &phase);
        }
    }
    // Gone again, so that the reads and the RSS figures are about `stored_pods` Pods.
    progress(format!("deleting the {} created pods (not timed)", timed_names.len()));
    let clients = *plan.levels.last().expect("levels");
    let phase = keelson::delete(&cp.target, CREATE_NAMESPACE, clients, timed_names, plan.deadline()).await?;
    if phase.errors > 0 {
        bail!("deleting the created pods: {}", phase.first_error.unwrap_or_default());
    }
    // The Pods the read phases run over.
    progress(format!("storing {} pods (not timed)", plan.stored_pods));
    let (phase, mut pods) =
        keelson::create(&cp.target, NAMESPACE, clients, names(plan.stored_pods), plan.deadline()).await?;
    if phase.errors > 0 || pods.len() != plan.stored_pods {
        bail!("storing pods created {} of {}: {}", pods.len(), plan.stored_pods, phase.first_error.unwrap_or_default());
    }
    let stored = pods.len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    api.stored_rss = proc_status_bytes(cp.pid(), "VmRSS")?;

    // Updates with watchers open; delivery is timed against each write's acknowledgement.
    let update_runs = if plan.runs_section(Section::Update) { plan.runs } else { 0 };
    for _ in 0..update_runs {
        for &clients in &plan.levels {
            let from = keelson::list_resource_version(&cp.target, NAMESPACE).await?;
            let watchers =
                keelson::start_watchers(&cp.target, NAMESPACE, &from, plan.watchers, plan.deadline()).await?;
            let (phase, updated) =
                keelson::update(&cp.target, NAMESPACE, clients, pods, plan.updates, plan.deadline()).await?;
            record(&mut api.update, failures, "update", clients, &phase);
            pods = updated.pods;
            let last = updated.acks.iter().map(|(rv, _)| *rv).max().unwrap_or(0);
            let logs = watchers.finish(last, Duration::from_secs(15)).await;
            let delivery = keelson::delivery(&updated.acks, &logs);
            let mut watch_phase = delivery.phase;
            watch_phase.wall = phase.wall;
            record(&mut api.watch, failures, "watch delivery", clients, &watch_phase);
            *api.watch_deliveries.entry(clients).or_default() += watch_phase.latencies.len();
            *api.watch_before_ack.entry(clients).or_default() += delivery.before_ack;
            *api.watch_missed.entry(clients).or_default() += delivery.missed;
            if delivery.missed > 0 {
                failures.push(format!(
                    "watch ({clients} writers): {} of {} deliveries missing; watchers said: {}",
                    delivery.missed,
                    updated.acks.len() * plan.watchers,
                    delivery.notes.join("; ")
                ));
            }
            // The same updates with no watch open, to show what the fan-out costs the writers.
            let (phase, updated) =
                keelson::update(&cp.target, NAMESPACE, clients, pods, plan.updates, plan.deadline()).await?;
            record(&mut api.update_unwatched, failures, "update unwatched", clients, &phase);
            pods = updated.pods;
        }
    }
    if pods.len() != stored {
        bail!("{} of {stored} pods came back from the update runs", pods.len());
    }

    if plan.runs_section(Section::Read) {
        let names: Arc<Vec<String>> = Arc::new(pods.iter().map(|p| p.name.clone()).collect());
        {
            let mut conn = http::Conn::connect(&cp.target).await?;
            let reply = conn
                .call(::http::Method::GET, &format!("/api/v1/namespaces/{NAMESPACE}/pods/{}", names[0]), None)
                .await?;
            api.pod_json_bytes = reply.body.len();
        }
        for _ in 0..plan.runs {
            for &clients in &plan.levels {
                let phase =
                    keelson::get(&cp.target, NAMESPACE, clients, names.clone(), plan.gets, plan.deadline()).await?;
                record(&mut api.get, failures, "get", clients, &phase);
            }
        }
        for run in 0..plan.runs {
            for &clients in &plan.levels {
                if run < plan.full_list_runs(clients) {
                    let per_client = plan.lists_per_client(clients);
                    let phase =
                        keelson::list_full(&cp.target, NAMESPACE, clients, per_client, stored, plan.deadline()).await?;
                    record(&mut api.list_full, failures, "list full", clients, &phase);
                }
                let paged = keelson::list_pages(
                    &cp.target,
                    NAMESPACE,
                    clients,
                    plan.pages_per_client(clients),
                    plan.page_limit,
                    stored,
                    plan.deadline(),
                )
                .await?;
                record(&mut api.list_page, failures, "list page", clients, &paged.pages);
                if !paged.walks.latencies.is_empty() {
                    record(&mut api.list_walk, failures, "list walk", clients, &paged.walks);
                }
            }
        }
    }
    api.peak_rss = proc_status_bytes(cp.pid(), "VmHWM")?;
    check_alive(&cp)?;
    Ok(())
}

async fn run_churn(programs: &Programs, plan: &Plan, results: &mut Results) -> anyhow::Result<()> {
    let mut args = api_only_args();
    args.extend(["--compact-interval".to_owned(), plan.compact_interval.to_string()]);
    progress(format!("starting control plane with --compact-interval {}", plan.compact_interval));
    // Storage logs its compactions at debug level: count them to show compaction ran.
    let cp = ControlPlane::start(&programs.control_plane, &args, "info,control_plane::storage=debug").await?;
    keelson::create_namespace(&cp.target, CHURN_NAMESPACE).await?;
    let names: Vec<String> = (0..plan.churn_objects).map(|i| format!("churn-{i:04}")).collect();
    let (phase, pods) =
        keelson::create(&cp.target, CHURN_NAMESPACE, plan.churn_clients, names, plan.deadline()).await?;
    if pods.len() != plan.churn_objects {
        bail!("created {} of {} churn pods: {}", pods.len(), plan.churn_objects, phase.first_error.unwrap_or_default());
    }

    // Sample the store's size while the updates run.
    let data_dir = cp.data_dir.clone();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let sampler = tokio::spawn(async move {
        let mut largest = 0u64;
        let size = |suffix: &str| std::fs::metadata(data_dir.join(format!("state.db{suffix}"))).map_or(0, |m| m.len());
        loop {
            largest = largest.max(size("") + size("-wal"));
            tokio::select! {
                _ = &mut stopped => break,
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        largest
    });
    // Churn gets a longer cap: at ~1 ms per write it needs most of a minute.
    let deadline = Instant::now() + plan.phase_cap * 5;
    let (phase, _) =
        keelson::update(&cp.target, CHURN_NAMESPACE, plan.churn_clients, pods, plan.churn_updates, deadline).await?;
    let _ = stop.send(());
    let largest = sampler.await.context("size sampler")?;
    let mut levels = Levels::new();
    let summary = record(&mut levels, &mut results.failures, "churn update", plan.churn_clients, &phase);
    let churn = &mut results.churn;
    churn.updates = summary.count;
    churn.summary = summary;
    churn.after = cp.store_size();
    churn.largest = largest.max(churn.after.total());
    churn.rss = proc_status_bytes(cp.pid(), "VmRSS")?;
    let settle = Duration::from_secs(plan.compact_interval * 2 + 1);
    progress(format!("waiting {settle:?} for compaction to settle"));
    tokio::time::sleep(settle).await;
    churn.settled = cp.store_size();
    churn.compactions = cp.log_lines_containing(" compacted revision=");
    check_alive(&cp)?;
    Ok(())
}

/// RSS of the control plane with its default flags, idle and with the Pods stored.
async fn run_default_flags(programs: &Programs, plan: &Plan, results: &mut Results) -> anyhow::Result<()> {
    progress("starting control plane with default flags (controllers and scheduler on)");
    let cp = ControlPlane::start(&programs.control_plane, &[], "info").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = &mut results.default_flags;
    out.idle_rss = proc_status_bytes(cp.pid(), "VmRSS")?;
    keelson::create_namespace(&cp.target, NAMESPACE).await?;
    let clients = *plan.levels.last().expect("levels");
    let names = (0..plan.stored_pods).map(|i| format!("pod-{i:06}")).collect();
    let (phase, created) = keelson::create(&cp.target, NAMESPACE, clients, names, plan.deadline()).await?;
    if let Some(error) = &phase.first_error {
        results
            .failures
            .push(format!("create with default flags ({clients} clients, {} failed): {error}", phase.errors));
    }
    out.created = created.len();
    out.create_rate = phase.summary().throughput;
    progress(format!("stored {} pods with default flags at {}/s", out.created, stats::fmt_rate(out.create_rate)));
    tokio::time::sleep(Duration::from_secs(3)).await;
    out.stored_rss = proc_status_bytes(cp.pid(), "VmRSS")?;
    check_alive(&cp)
}

fn check_alive(cp: &ControlPlane) -> anyhow::Result<()> {
    proc_status_bytes(cp.pid(), "VmRSS")
        .map(|_| ())
        .with_context(|| format!("control plane gone; log:\n{}", cp.log_tail()))
}
