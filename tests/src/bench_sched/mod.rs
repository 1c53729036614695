//! The body of the `bench-scheduler` binary (`cargo xtask bench scheduler`): scheduling
//! throughput on hollow nodes, shaped like Kubernetes' scheduler_perf `SchedulingBasic` (plain
//! Pods with small requests, no affinity), and the control plane's RSS at the end.
//!
//! Every trial starts a fresh control plane as a separate process (release build, embedded
//! store, no controllers), registers hollow nodes (`node_agent::hollow`) from this process,
//! creates the Pods with concurrent clients and times bindings from a watch. Two modes:
//! - `concurrent` (as scheduler_perf): the scheduler runs while the Pods are created;
//! - `backlog`: the Pods are stored with the scheduler off, then the control plane restarts with
//!   it on, held back by the leader Lease until the watch is open; this times the scheduler alone.
//!
//! Like a `main.rs`, it uses `anyhow`: it is a program split into files, not a library.

pub mod load;
pub mod report;
pub mod server;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use node_agent::hollow::{HollowCluster, HollowConfig, HollowStats};

use crate::bench::procs::{load_average, proc_status_bytes};
use load::{BindWatch, Bindings, Created};
use server::{Flags, Server};

/// Namespace of the benchmark's Pods.
pub const NAMESPACE: &str = "sched-bench";
/// Longest wait for all hollow nodes to show up in a node list.
const NODES_TIMEOUT: Duration = Duration::from_secs(120);

/// Nodes and Pods of one workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub nodes: usize,
    pub pods: usize,
}

/// How the Pods meet the scheduler (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Concurrent,
    Backlog,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Concurrent => "concurrent",
            Mode::Backlog => "backlog",
        }
    }
}

/// How much of everything to do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub quick: bool,
    pub runs: usize,
    pub shapes: Vec<Shape>,
    pub modes: Vec<Mode>,
    /// Concurrent clients creating Pods (one HTTP/2 connection each).
    pub creators: usize,
    /// Hollow node Lease renewal and status period. scheduler_perf runs no kubelets at all; a
    /// long period keeps their writes (nodes / period per second) from competing for the CPU.
    pub renew_every: Duration,
    /// A trial fails when no Pod is bound for this long…
    pub stall: Duration,
    /// …or when it runs this long in all.
    pub trial_cap: Duration,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            quick: false,
            runs: 3,
            shapes: vec![Shape { nodes: 1_000, pods: 10_000 }, Shape { nodes: 5_000, pods: 10_000 }],
            modes: vec![Mode::Concurrent, Mode::Backlog],
            creators: 16,
            renew_every: Duration::from_secs(600),
            stall: Duration::from_secs(30),
            trial_cap: Duration::from_secs(300),
        }
    }

    pub fn quick() -> Plan {
        Plan {
            quick: true,
            runs: 1,
            shapes: vec![Shape { nodes: 100, pods: 1_000 }, Shape { nodes: 500, pods: 2_000 }],
            trial_cap: Duration::from_secs(120),
            ..Plan::full()
        }
    }
}

/// What one trial measured.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// Time to register every hollow node (Node and Lease) and see them all in a node list.
    pub register: Duration,
    pub created: usize,
    pub create_errors: usize,
    /// Pods created per second (first create to last create acknowledged).
    pub create_rate: f64,
    pub bound: usize,
    pub nodes_used: usize,
    /// First binding to last binding.
    pub window: Duration,
    /// Bindings per second over `window` (the headline figure).
    pub rate: f64,
    /// Median and lowest bindings in the whole seconds of the window (scheduler_perf samples
    /// scheduled pods every second).
    pub per_second_median: Option<f64>,
    pub per_second_min: Option<f64>,
    /// From the start (first create; in backlog mode the Lease release) to the first binding.
    pub to_first_bind: Duration,
    /// From the start to the last binding.
    pub wall: Duration,
    /// Control plane VmRSS and VmHWM once every Pod is bound.
    pub rss: u64,
    pub hwm: u64,
    /// CPU cores the control plane and this process (hollow nodes and load) kept busy from the
    /// start to the last binding.
    pub cp_cores: f64,
    pub bench_cores: f64,
    /// Cores busy on the whole machine over the same span: beyond the control plane and this
    /// process, that is other work on the machine, which skews the figures.
    pub machine_cores: f64,
    pub hollow: HollowStats,
    /// Why the trial is incomplete or suspect.
    pub problems: Vec<String>,
}

/// One trial's outcome.
#[derive(Debug)]
pub struct Trial {
    pub shape: Shape,
    pub mode: Mode,
    pub run: usize,
    pub result: Result<Measured, String>,
}

/// The machine the benchmark ran on.
#[derive(Debug, Clone)]
pub struct Machine {
    pub nproc: usize,
    pub model: String,
    pub kernel: String,
    pub date: String,
    pub load_at_start: String,
}

impl Machine {
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim().to_owned()))
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned());
        let date = std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M:%S UTC"])
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .map_or_else(|| "unknown".into(), |s| s.trim().to_owned());
        Machine {
            nproc: std::thread::available_parallelism().map_or(0, usize::from),
            model,
            kernel,
            date,
            load_at_start: load_average(),
        }
    }
}

/// Everything the report shows.
#[derive(Debug)]
pub struct Results {
    pub machine: Machine,
    pub plan: Plan,
    pub control_plane: PathBuf,
    pub trials: Vec<Trial>,
    pub elapsed: Duration,
    pub load_at_end: String,
}

/// Progress on stderr, so that stdout holds only the report.
pub fn progress(message: impl AsRef<str>) {
    eprintln!("bench-scheduler: {}", message.as_ref());
}

/// Runs every trial (runs × shapes × modes, interleaved so that drift on a shared machine
/// spreads over all of them) and returns the results.
pub async fn run(control_plane: PathBuf, plan: Plan) -> anyhow::Result<Results> {
    let started = Instant::now();
    let machine = Machine::probe();
    let mut trials = Vec::new();
    for run in 1..=plan.runs {
        for &shape in &plan.shapes {
            for &mode in &plan.modes {
                progress(format!(
                    "run {run}/{}: {} nodes, {} pods, {}",
                    plan.runs,
                    shape.nodes,
                    shape.pods,
                    mode.name()
                ));
                let result = trial(&control_plane, &plan, shape, mode).await.map_err(|e| format!("{e:#}"));
                match &result {
                    Ok(m) => progress(format!(
                        "  {} bound in {:.2} s: {:.0} pods/s (created at {:.0}/s; control plane {:.2} cores, \
                         bench {:.2}, machine {:.2}; RSS {:.0} MiB){}",
                        m.bound,
                        m.window.as_secs_f64(),
                        m.rate,
                        m.create_rate,
                        m.cp_cores,
                        m.bench_cores,
                        m.machine_cores,
                        m.rss as f64 / 1048576.0,
                        if m.problems.is_empty() { String::new() } else { format!("; {}", m.problems.join("; ")) }
                    )),
                    Err(e) => progress(format!("  failed: {e}")),
                }
                trials.push(Trial { shape, mode, run, result });
            }
        }
    }
    Ok(Results { machine, plan, control_plane, trials, elapsed: started.elapsed(), load_at_end: load_average() })
}

/// CPU time used so far by the control plane, by this process and by the whole machine.
struct Meters {
    control_plane: Duration,
    own: Duration,
    machine: (u64, u64),
}

impl Meters {
    fn read(pid: u32) -> anyhow::Result<Meters> {
        Ok(Meters {
            control_plane: server::cpu_time(pid)?,
            own: server::cpu_time(std::process::id())?,
            machine: server::machine_ticks()?,
        })
    }

    /// Cores each kept busy from `self` to `later`, `secs` apart.
    fn cores(&self, later: &Meters, secs: f64, m: &mut Measured) {
        let secs = secs.max(1e-9);
        m.cp_cores = later.control_plane.saturating_sub(self.control_plane).as_secs_f64() / secs;
        m.bench_cores = later.own.saturating_sub(self.own).as_secs_f64() / secs;
        m.machine_cores = server::machine_cores(self.machine, later.machine, secs);
    }
}

async fn trial(binary: &Path, plan: &Plan, shape: Shape, mode: Mode) -> anyhow::Result<Measured> {
    let mut server = Server::start(binary, Flags { scheduler: mode == Mode::Concurrent }).await?;
    let mut m = Measured::default();
    load::create_namespace(&server.target, NAMESPACE).await?;

    let registering = Instant::now();
    let mut hc = HollowConfig::new(server.kubeconfig(), shape.nodes);
    hc.renew_every = plan.renew_every;
    hc.heartbeat_every = plan.renew_every;
    hc.lease_seconds = i32::try_from(plan.renew_every.as_secs() * 4).unwrap_or(i32::MAX);
    let hollow = HollowCluster::start(hc).await.context("start hollow nodes")?;
    let deadline = Instant::now() + NODES_TIMEOUT;
    loop {
        let (nodes, _) = load::count(&server.target, "/api/v1/nodes").await?;
        if nodes >= shape.nodes {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {nodes} of {} nodes listed after {NODES_TIMEOUT:?}", shape.nodes);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    m.register = registering.elapsed();
    // The scheduler's informers are in-process and a list is in: give them a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let prefix = "pod-";
    let pods_path = format!("/api/v1/namespaces/{NAMESPACE}/pods");

    let (created, bindings, start, meters, pid) = match mode {
        Mode::Concurrent => {
            let (_, rv) = load::count(&server.target, &pods_path).await?;
            let watch_deadline = Instant::now() + plan.trial_cap;
            let watch =
                BindWatch::start(&server.target, NAMESPACE, &rv, shape.pods, plan.stall, watch_deadline).await?;
            let pid = server.pid()?;
            let meters = Meters::read(pid)?;
            let created = load::create_pods(&server.target, NAMESPACE, prefix, shape.pods, plan.creators).await?;
            let bindings = watch.finish().await?;
            let start = created.started;
            (created, bindings, start, meters, pid)
        }
        Mode::Backlog => {
            server::hold_leader_lease(&server.target).await?;
            let created = load::create_pods(&server.target, NAMESPACE, prefix, shape.pods, plan.creators).await?;
            let (stored, rv) = load::count(&server.target, &pods_path).await?;
            if stored != created.created {
                m.problems.push(format!("{stored} Pods listed after {} creates", created.created));
            }
            server.restart(Flags { scheduler: true }).await?;
            let watch_deadline = Instant::now() + plan.trial_cap;
            let watch = BindWatch::start(&server.target, NAMESPACE, &rv, stored, plan.stall, watch_deadline).await?;
            let pid = server.pid()?;
            let meters = Meters::read(pid)?;
            let released = Instant::now();
            server::release_leader_lease(&server.target).await?;
            let bindings = watch.finish().await?;
            if bindings.times.first().is_some_and(|t| *t < released) {
                m.problems.push("the scheduler started before the Lease was released".into());
            }
            (created, bindings, released, meters, pid)
        }
    };
    progress(format!("  control plane PID {pid}"));
    let end = bindings.times.last().copied().unwrap_or_else(Instant::now);
    let after = Meters::read(pid)?;
    m.rss = proc_status_bytes(pid, "VmRSS")?;
    m.hwm = proc_status_bytes(pid, "VmHWM")?;
    server.check_alive()?;
    fill(&mut m, &created, &bindings, start, end);
    meters.cores(&after, end.saturating_duration_since(start).as_secs_f64(), &mut m);
    m.hollow = hollow.stats();
    hollow.shutdown().await;
    drop(server);
    Ok(m)
}

/// Derives the rates from creation and binding times.
fn fill(m: &mut Measured, created: &Created, bindings: &Bindings, start: Instant, end: Instant) {
    m.created = created.created;
    m.create_errors = created.errors;
    if let Some(error) = &created.first_error {
        m.problems.push(format!("{} creates failed, first: {error}", created.errors));
    }
    let create_secs = created.finished.saturating_duration_since(created.started).as_secs_f64();
    m.create_rate = if create_secs > 0.0 { created.created as f64 / create_secs } else { 0.0 };
    m.bound = bindings.times.len();
    m.nodes_used = bindings.nodes_used;
    if let Some(error) = &bindings.error {
        m.problems.push(error.clone());
    }
    let (Some(&first), Some(&last)) = (bindings.times.first(), bindings.times.last()) else {
        m.problems.push("no Pod was bound".into());
        return;
    };
    m.window = last.saturating_duration_since(first);
    let secs = m.window.as_secs_f64();
    m.rate = if secs > 0.0 { m.bound as f64 / secs } else { 0.0 };
    let buckets = per_second(&bindings.times);
    m.per_second_median = (!buckets.is_empty()).then(|| crate::bench::stats::median_f64(buckets.clone()));
    m.per_second_min = buckets.iter().copied().reduce(f64::min);
    m.to_first_bind = first.saturating_duration_since(start);
    m.wall = end.saturating_duration_since(start);
}

/// Bindings in each whole second from the first binding (the last, partial second left out).
pub fn per_second(times: &[Instant]) -> Vec<f64> {
    let Some(&first) = times.first() else { return Vec::new() };
    let whole = times.last().map_or(0, |t| t.saturating_duration_since(first).as_secs()) as usize;
    let mut buckets = vec![0f64; whole];
    for t in times {
        let i = t.saturating_duration_since(first).as_secs() as usize;
        if i < whole {
            buckets[i] += 1.0;
        }
    }
    buckets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_second_buckets_leave_out_the_partial_last_second() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let times = [ms(0), ms(10), ms(999), ms(1000), ms(1500), ms(2100)];
        assert_eq!(per_second(&times), vec![3.0, 2.0]);
        assert!(per_second(&[ms(0), ms(500)]).is_empty());
        assert!(per_second(&[]).is_empty());
    }

    #[test]
    fn rates_come_from_the_binding_window() {
        let t0 = Instant::now();
        let times: Vec<Instant> = (0..=1000).map(|i| t0 + Duration::from_millis(2 * i)).collect();
        let created =
            Created { started: t0, finished: t0 + Duration::from_secs(1), created: 1001, errors: 0, first_error: None };
        let bindings = Bindings { times, nodes_used: 10, error: None };
        let mut m = Measured::default();
        let end = *bindings.times.last().expect("times");
        fill(&mut m, &created, &bindings, t0, end);
        assert_eq!(m.bound, 1001);
        assert!((m.rate - 500.5).abs() < 0.1, "1001 bindings over 2 s, not {}", m.rate);
        assert!((m.create_rate - 1001.0).abs() < 0.1);
        assert_eq!(m.per_second_median, Some(500.0));
        assert!(m.problems.is_empty());
    }
}
