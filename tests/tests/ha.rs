//! Two control-plane replicas on one etcd: exactly one holds the leader Lease and runs the
//! controllers; kill it and the other takes over within the lease duration.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Etcd, free_port, wait_for};
use serde_json::Value;

const LEASE_SECONDS: u64 = 3;

struct Replica {
    port: u16,
    child: Child,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn replica(dir: &Path, etcd: &Etcd, identity: &str) -> Replica {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_control-plane-under-test"))
        .args(["--data-dir", dir.to_str().expect("utf-8"), "--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--etcd-servers",
            &etcd.endpoint,
            "--identity",
            identity,
            "--lease-duration",
            &LEASE_SECONDS.to_string(),
        ])
        .args(["--controllers", "deployment,replicaset", "--scheduler=false"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("control plane starts");
    Replica { port, child }
}

/// kubectl against one replica (the kubeconfig of the shared data dir, with that replica's address).
fn kubectl(dir: &Path, r: &Replica, args: &[&str]) -> std::process::Output {
    Command::new(common::kubectl_path())
        .args(["--kubeconfig", dir.join("admin.kubeconfig").to_str().expect("utf-8")])
        .args(["--server", &format!("https://127.0.0.1:{}", r.port)])
        .args(args)
        .env("HOME", dir)
        .output()
        .expect("kubectl runs")
}

fn lease(dir: &Path, r: &Replica) -> Option<Value> {
    let out = kubectl(dir, r, &["get", "lease", "-n", "kube-system", "keelson-control-plane", "-o", "json"]);
    out.status.success().then(|| serde_json::from_slice(&out.stdout).expect("json"))
}

fn has_replicaset(dir: &Path, r: &Replica, deploy: &str) -> bool {
    let out = kubectl(dir, r, &["get", "rs", "-l", &format!("app={deploy}"), "-o", "name"]);
    out.status.success() && !out.stdout.is_empty()
}

#[test]
fn one_leader_runs_controllers_and_the_other_takes_over() {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut a = Some(replica(dir.path(), &etcd, "replica-a"));
    // Let A create the PKI before B loads it.
    wait_for("replica a", Duration::from_secs(30), || {
        kubectl(dir.path(), a.as_ref().expect("a"), &["get", "ns", "default"]).status.success().then_some(())
    });
    let b = replica(dir.path(), &etcd, "replica-b");
    wait_for("replica b", Duration::from_secs(30), || {
        kubectl(dir.path(), &b, &["get", "ns", "default"]).status.success().then_some(())
    });

    // Exactly one holder, and it stays the holder while both run.
    let first = wait_for("a leader", Duration::from_secs(20), || {
        lease(dir.path(), &b)
            .and_then(|l| l.pointer("/spec/holderIdentity").and_then(Value::as_str).map(str::to_string))
    });
    assert!(first == "replica-a" || first == "replica-b", "holder {first}");
    let transitions = |l: &Value| l.pointer("/spec/leaseTransitions").and_then(Value::as_i64).unwrap_or(0);
    let before = lease(dir.path(), &b).expect("lease");
    std::thread::sleep(Duration::from_secs(LEASE_SECONDS + 1));
    let still = lease(dir.path(), &b).expect("lease");
    assert_eq!(still.pointer("/spec/holderIdentity").and_then(Value::as_str), Some(first.as_str()), "no flapping");
    assert_eq!(transitions(&still), transitions(&before), "no transitions while the leader lives");

    // The leader runs the controllers: a Deployment gets its ReplicaSet through either replica.
    assert!(kubectl(dir.path(), &b, &["create", "deployment", "one", "--image=busybox:local"]).status.success());
    wait_for("ReplicaSet of one", Duration::from_secs(20), || has_replicaset(dir.path(), &b, "one").then_some(()));

    // Kill the leader; the survivor takes over within the lease duration (plus a retry period).
    let (mut dead, survivor) = if first == "replica-a" { (a.take().expect("a"), b) } else { (b, a.take().expect("a")) };
    dead.child.kill().expect("SIGKILL the leader");
    dead.child.wait().expect("reaped");
    let killed_at = Instant::now();
    let expected = if first == "replica-a" { "replica-b" } else { "replica-a" };
    wait_for("takeover", Duration::from_secs(LEASE_SECONDS * 3), || {
        lease(dir.path(), &survivor)
            .filter(|l| l.pointer("/spec/holderIdentity").and_then(Value::as_str) == Some(expected))
            .map(|_| ())
    });
    let took = killed_at.elapsed();
    assert!(took <= Duration::from_secs(LEASE_SECONDS * 2), "takeover took {took:?}, lease is {LEASE_SECONDS}s");
    assert!(kubectl(dir.path(), &survivor, &["create", "deployment", "two", "--image=busybox:local"]).status.success());
    wait_for("ReplicaSet of two", Duration::from_secs(20), || {
        has_replicaset(dir.path(), &survivor, "two").then_some(())
    });
}
