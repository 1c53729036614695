//! `bench-datapath --quick` end to end (root: it builds network namespaces, loads kube-proxy's rule
//! shapes and Keelson's eBPF socket programs). Timing is not asserted here — targets live in the
//! benchmark's report — but every mode must program 1 and 1 000 Services, carry traffic to them,
//! spread it over the three backends and leave the host as it found it.

use std::process::Command;

#[test]
fn quick_run_measures_every_mode_and_leaves_the_host_alone() {
    let output =
        Command::new(env!("CARGO_BIN_EXE_bench-datapath")).arg("--quick").output().expect("run bench-datapath");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench-datapath failed: {}\nstderr:\n{stderr}", output.status);
    for mode in ["eBPF", "eBPF TC", "iptables-nft", "nftables"] {
        for services in ["1", "1000"] {
            let spread = format!("{mode} {services}: spread of the last Service over the backends ");
            let line = stdout
                .lines()
                .find(|l| l.starts_with(&spread))
                .unwrap_or_else(|| panic!("no {spread:?} in:\n{stdout}"));
            let shares: Vec<f64> = line[spread.len()..]
                .split(' ')
                .next()
                .expect("shares")
                .split('/')
                .map(|s| s.parse().expect("a share"))
                .collect();
            assert_eq!(shares.len(), 3, "{line}");
            assert!(shares.iter().all(|s| *s > 10.0), "{mode} {services} left a backend nearly idle: {line}");
        }
    }
    assert!(stdout.contains("-- targets (eBPF at 1000 services) --"), "no target section:\n{stdout}");
    // tc_nat ns/packet: a row per size, each figure a positive number.
    let (_, packets) = stdout
        .split_once("-- tc_nat per packet (BPF_PROG_TEST_RUN")
        .unwrap_or_else(|| panic!("no tc_nat per packet table:\n{stdout}"));
    for services in ["1", "1000", "10000"] {
        let row = packets
            .lines()
            .find(|line| line.split_whitespace().next() == Some(services))
            .unwrap_or_else(|| panic!("no {services}-service row in:\n{packets}"));
        let figures: Vec<f64> = row.split_whitespace().skip(1).map(|n| n.parse().expect("ns per packet")).collect();
        assert_eq!(figures.len(), 4, "{row}");
        assert!(figures.iter().all(|ns| *ns > 0.0), "{row}");
    }
    assert!(stdout.contains("host namespace untouched (no to-client/to-backend link on the host): yes"), "{stdout}");
    assert!(!stdout.contains("not built yet"), "a mode was skipped:\n{stdout}");
    let cgroups = std::fs::read_dir("/sys/fs/cgroup")
        .map(|dir| dir.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect::<Vec<_>>())
        .unwrap_or_default();
    assert!(!cgroups.iter().any(|name| name.starts_with("kbdp-")), "a benchmark cgroup is left: {cgroups:?}");
}
