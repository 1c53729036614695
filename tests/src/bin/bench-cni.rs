//! `bench-cni`: sequential ADD and DEL latency of the `keelson` CNI plugin beside the reference
//! `bridge` + `host-local` plugins (Debian `containernetworking-plugins`), in one run on this machine.
//! `cargo xtask bench cni [--quick]` builds and runs it (as root: it creates network namespaces).
//!
//! Isolation: every namespace it uses is named `kbcni-<pid>-…` and deleted at the end, also when a
//! step fails (a drop guard). Both plugins run from inside a dedicated "node" namespace
//! `kbcni-<pid>-node`: a worker thread enters it with `setns(2)` before spawning any plugin, so the
//! reference bridge `kbcni0`, the host-side veths and the pod routes live there and nothing touches
//! the real host's network. Spawning from that thread costs the same for both plugins and avoids the
//! `ip netns exec` overhead.
//!
//! Method: N pod namespaces; a warm-up of both plugins; then R rounds, interleaved (keelson first in
//! even rounds, the reference first in odd ones). In a round, a plugin gets N sequential ADDs (one per
//! namespace), then N sequential DELs (with the ADD result as `prevResult`, as runtimes do). Every
//! invocation is timed wall-clock from spawn to exit; p50/p99 are nearest-rank over all rounds.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use serde_json::{Value, json};

/// Keelson's pod CIDR for the run.
const KEELSON_CIDR: &str = "10.244.250.0/24";
/// The reference bridge's subnet for the run.
const REFERENCE_CIDR: &str = "10.244.251.0/24";
/// The reference bridge's name (inside the node namespace).
const BRIDGE: &str = "kbcni0";
/// Warm-up ADD/DEL pairs per plugin before the first round (not recorded).
const WARM_UP: usize = 10;

#[derive(Debug, Parser)]
#[command(name = "bench-cni", about = "keelson CNI ADD/DEL latency beside bridge + host-local")]
struct Args {
    /// The `keelson` plugin binary (a release build).
    #[arg(long, env = "KEELSON_BENCH_CNI_PLUGIN")]
    keelson: PathBuf,
    /// Directory holding the reference `bridge` and `host-local` plugins.
    #[arg(long, env = "KEELSON_BENCH_CNI_PATH", default_value = "/usr/lib/cni")]
    reference_dir: PathBuf,
    /// 50 pods per round and 2 rounds, for development.
    #[arg(long)]
    quick: bool,
    /// Pods (ADD/DEL pairs) per plugin per round (default 200, or 50 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=250))]
    pods: Option<u16>,
    /// Rounds (default 5, or 2 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=50))]
    rounds: Option<u16>,
}

fn main() -> ExitCode {
    let args: Args = match keelson_tests::parse_args() {
        Ok(args) => args,
        Err(code) => return code,
    };
    match run(&args) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("bench-cni: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The two plugins under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Keelson,
    Reference,
}

impl Which {
    fn label(self) -> &'static str {
        match self {
            Which::Keelson => "keelson",
            Which::Reference => "bridge+host-local",
        }
    }
}

/// How to invoke one plugin.
struct Plugin {
    which: Which,
    binary: PathBuf,
    cni_path: String,
    conf: Value,
}

/// Latencies of one plugin, all rounds pooled, plus each round's p99.
#[derive(Default)]
struct Samples {
    add: Vec<Duration>,
    del: Vec<Duration>,
    add_p99_per_round: Vec<Duration>,
    del_p99_per_round: Vec<Duration>,
}

fn run(args: &Args) -> anyhow::Result<String> {
    let pods = usize::from(args.pods.unwrap_or(if args.quick { 50 } else { 200 }));
    let rounds = usize::from(args.rounds.unwrap_or(if args.quick { 2 } else { 5 }));
    let keelson = args.keelson.canonicalize().with_context(|| format!("keelson plugin {}", args.keelson.display()))?;
    for name in ["bridge", "host-local"] {
        let path = args.reference_dir.join(name);
        ensure!(
            path.is_file(),
            "reference plugin {} is missing (Debian package containernetworking-plugins; `cargo xtask setup`)",
            path.display()
        );
    }
    ensure!(Path::new("/run").is_dir(), "/run is missing");

    let load_before = read_trimmed("/proc/loadavg");
    let data = tempfile::Builder::new().prefix("kbcni-").tempdir().context("temporary data directory")?;
    let namespaces = Namespaces::create(pods)?;
    let plugins = [
        Plugin {
            which: Which::Keelson,
            binary: keelson.clone(),
            cni_path: args.reference_dir.display().to_string(),
            conf: json!({
                "cniVersion": "1.0.0",
                "name": "keelson",
                "type": "keelson",
                "podCIDR": KEELSON_CIDR,
                "dataDir": data.path().join("keelson"),
            }),
        },
        Plugin {
            which: Which::Reference,
            binary: args.reference_dir.join("bridge"),
            cni_path: args.reference_dir.display().to_string(),
            conf: json!({
                "cniVersion": "1.0.0",
                "name": "bench",
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": REFERENCE_CIDR }]],
                    "dataDir": data.path().join("host-local"),
                },
            }),
        },
    ];

    let node = std::fs::File::open(namespaces.path(&namespaces.node)).context("open the node namespace")?;
    let started = Instant::now();
    let samples = std::thread::scope(|scope| {
        scope
            .spawn(|| -> anyhow::Result<[Samples; 2]> {
                // Only this thread (and what it spawns) moves to the node namespace.
                sys::enter_netns(&node).context("setns into the node namespace")?;
                measure(&plugins, &namespaces, pods, rounds)
            })
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("measuring thread panicked")))
    })?;
    let elapsed = started.elapsed();
    let load_after = read_trimmed("/proc/loadavg");
    let host_bridge = Command::new("ip").args(["-o", "link", "show", "dev", BRIDGE]).output();
    let host_untouched = host_bridge.map(|output| !output.status.success()).unwrap_or(true);
    drop(namespaces);

    Ok(render(&Report {
        pods,
        rounds,
        elapsed,
        samples,
        keelson,
        reference_dir: args.reference_dir.clone(),
        load_before,
        load_after,
        host_untouched,
    }))
}

/// Warm-up, then `rounds` interleaved rounds of `pods` ADDs followed by `pods` DELs per plugin.
fn measure(plugins: &[Plugin; 2], namespaces: &Namespaces, pods: usize, rounds: usize) -> anyhow::Result<[Samples; 2]> {
    let mut samples = [Samples::default(), Samples::default()];
    for plugin in plugins {
        eprintln!("bench-cni: warm-up {} ({} ADD/DEL)", plugin.which.label(), WARM_UP.min(pods));
        round(plugin, namespaces, WARM_UP.min(pods), "w")?;
    }
    for index in 0..rounds {
        let order = if index % 2 == 0 { [0, 1] } else { [1, 0] };
        for slot in order {
            let plugin = &plugins[slot];
            eprintln!("bench-cni: round {}/{rounds}: {} × {pods} ADD then DEL", index + 1, plugin.which.label());
            let (mut add, mut del) = round(plugin, namespaces, pods, &format!("r{index}"))?;
            add.sort();
            del.sort();
            let target = &mut samples[slot];
            target.add_p99_per_round.push(percentile(&add, 0.99));
            target.del_p99_per_round.push(percentile(&del, 0.99));
            target.add.extend(add);
            target.del.extend(del);
        }
    }
    for target in &mut samples {
        target.add.sort();
        target.del.sort();
    }
    Ok(samples)
}

/// `count` sequential ADDs, then `count` sequential DELs; returns their latencies.
fn round(
    plugin: &Plugin,
    namespaces: &Namespaces,
    count: usize,
    tag: &str,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let pid = std::process::id();
    let ids: Vec<String> = (0..count).map(|i| format!("kbcni{pid}-{tag}-{i}")).collect();
    let mut adds = Vec::with_capacity(count);
    let mut results = Vec::with_capacity(count);
    for (i, id) in ids.iter().enumerate() {
        let (took, stdout) = invoke(plugin, "ADD", id, &namespaces.path(&namespaces.pods[i]), &plugin.conf)?;
        adds.push(took);
        let result: Value = serde_json::from_str(&stdout)
            .with_context(|| format!("{} ADD {id}: stdout is not JSON: {stdout:?}", plugin.which.label()))?;
        results.push(result);
    }
    let mut dels = Vec::with_capacity(count);
    for (i, (id, result)) in ids.iter().zip(results).enumerate() {
        let mut conf = plugin.conf.clone();
        conf["prevResult"] = result;
        let (took, _) = invoke(plugin, "DEL", id, &namespaces.path(&namespaces.pods[i]), &conf)?;
        dels.push(took);
    }
    Ok((adds, dels))
}

/// Runs one plugin command; returns its wall time (spawn to exit) and stdout. Fails on a non-zero exit.
fn invoke(plugin: &Plugin, command: &str, id: &str, netns: &Path, conf: &Value) -> anyhow::Result<(Duration, String)> {
    let config = conf.to_string();
    let netns = netns.display().to_string();
    let started = Instant::now();
    let mut child = Command::new(&plugin.binary)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs([
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", id),
            ("CNI_NETNS", &netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", &plugin.cni_path),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=bench"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {}", plugin.binary.display()))?;
    child.stdin.take().context("plugin stdin")?.write_all(config.as_bytes()).context("write the configuration")?;
    let output = child.wait_with_output().context("wait for the plugin")?;
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "{} {command} {id} failed ({}): stdout {stdout} stderr {}",
            plugin.which.label(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok((took, stdout))
}

/// The node namespace and the pod namespaces; all deleted on drop (also on an error).
struct Namespaces {
    node: String,
    pods: Vec<String>,
    /// Every namespace created so far, for the drop guard.
    created: Vec<String>,
}

impl Namespaces {
    fn create(pods: usize) -> anyhow::Result<Self> {
        let prefix = format!("kbcni-{}-", std::process::id());
        let mut this = Self { node: format!("{prefix}node"), pods: Vec::with_capacity(pods), created: Vec::new() };
        eprintln!("bench-cni: creating {} network namespaces {prefix}*", pods + 1);
        let node = this.node.clone();
        this.add(&node)?;
        for i in 0..pods {
            let name = format!("{prefix}{i}");
            this.add(&name)?;
            this.pods.push(name);
        }
        Ok(this)
    }

    fn add(&mut self, name: &str) -> anyhow::Result<()> {
        let output = Command::new("ip").args(["netns", "add", name]).output().context("run ip (iproute2)")?;
        ensure!(output.status.success(), "ip netns add {name}: {}", String::from_utf8_lossy(&output.stderr).trim());
        self.created.push(name.to_owned());
        Ok(())
    }

    fn path(&self, name: &str) -> PathBuf {
        Path::new("/run/netns").join(name)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        eprintln!("bench-cni: deleting {} network namespaces", self.created.len());
        // Deleting the node namespace removes the bridge, host-side veths and routes with it.
        for name in self.created.drain(..).rev() {
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
}

mod sys {
    //! The one system call std lacks: `setns(2)`, from the C library std already links.

    use std::os::fd::AsRawFd;

    /// `CLONE_NEWNET` from `<sched.h>`.
    const CLONE_NEWNET: i32 = 0x4000_0000;

    unsafe extern "C" {
        fn setns(fd: i32, nstype: i32) -> i32;
    }

    /// Moves the calling thread into the network namespace open as `file`.
    pub fn enter_netns(file: &std::fs::File) -> std::io::Result<()> {
        // SAFETY: `setns` only reads its two integer arguments; the descriptor is valid for the call
        // because `file` is borrowed, and changing this thread's network namespace cannot invalidate
        // any memory Rust relies on.
        let rc = unsafe { setns(file.as_raw_fd(), CLONE_NEWNET) };
        if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

struct Report {
    pods: usize,
    rounds: usize,
    elapsed: Duration,
    samples: [Samples; 2],
    keelson: PathBuf,
    reference_dir: PathBuf,
    load_before: String,
    load_after: String,
    host_untouched: bool,
}

fn ms(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64() * 1000.0)
}

fn range(values: &[Duration]) -> String {
    let min = values.iter().min().copied().unwrap_or_default();
    let max = values.iter().max().copied().unwrap_or_default();
    format!("{}–{}", ms(min), ms(max))
}

fn render(report: &Report) -> String {
    let mut out = String::new();
    let [keelson, reference] = &report.samples;
    let _ = writeln!(out, "== bench cni: sequential ADD/DEL latency (ms), wall time per plugin invocation ==");
    let _ = writeln!(
        out,
        "{} pods × {} rounds per plugin (+{} warm-up), interleaved; {:.1} s; plugins run in netns kbcni-<pid>-node (setns)",
        report.pods,
        report.rounds,
        WARM_UP.min(report.pods),
        report.elapsed.as_secs_f64()
    );
    let _ = writeln!(out, "{:<20} {:>4} {:>8} {:>8} {:>18} {:>8}", "plugin", "op", "p50", "p99", "p99 per round", "n");
    for (which, samples) in [(Which::Keelson, keelson), (Which::Reference, reference)] {
        for (op, all, rounds) in
            [("ADD", &samples.add, &samples.add_p99_per_round), ("DEL", &samples.del, &samples.del_p99_per_round)]
        {
            let _ = writeln!(
                out,
                "{:<20} {:>4} {:>8} {:>8} {:>18} {:>8}",
                which.label(),
                op,
                ms(percentile(all, 0.5)),
                ms(percentile(all, 0.99)),
                range(rounds),
                all.len()
            );
        }
    }
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(f64::MIN_POSITIVE);
    for (op, k, r) in [("ADD", &keelson.add, &reference.add), ("DEL", &keelson.del, &reference.del)] {
        let _ = writeln!(
            out,
            "ratio keelson/reference {op}: p50 {:.2}  p99 {:.2}",
            ratio(percentile(k, 0.5), percentile(r, 0.5)),
            ratio(percentile(k, 0.99), percentile(r, 0.99))
        );
    }
    let add_p99 = percentile(&keelson.add, 0.99);
    let limit = percentile(&reference.add, 0.99) / 2;
    let verdict = if add_p99 <= limit { "PASS" } else { "MISS" };
    let _ = writeln!(
        out,
        "target keelson ADD p99 ≤ 0.5 × reference ADD p99: {} ms ≤ {} ms: {verdict}",
        ms(add_p99),
        ms(limit)
    );
    let _ = writeln!(out, "-- machine (shared with other work: figures are indicative) --");
    let nproc = std::thread::available_parallelism().map(|n| n.get().to_string()).unwrap_or_else(|_| "?".into());
    let _ = writeln!(out, "nproc {nproc}; cpu {}; kernel {}", cpu_model(), read_trimmed("/proc/sys/kernel/osrelease"));
    let _ = writeln!(out, "load average before: {}", report.load_before);
    let _ = writeln!(out, "load average after:  {}", report.load_after);
    let _ = writeln!(out, "keelson: {}", report.keelson.display());
    let _ =
        writeln!(out, "reference: {}/bridge + host-local ({})", report.reference_dir.display(), reference_version());
    let _ = writeln!(
        out,
        "host namespace untouched (no {BRIDGE} on the host): {}",
        if report.host_untouched { "yes" } else { "NO" }
    );
    out
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map(|text| text.trim().to_owned()).unwrap_or_else(|_| "?".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

/// The installed `containernetworking-plugins` version, if dpkg knows it.
fn reference_version() -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Package} ${Version}", "containernetworking-plugins"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_else(|| "version unknown".into())
}
