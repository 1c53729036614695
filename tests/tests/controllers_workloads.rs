//! The deployment and replicaset controllers end to end: a control plane in this process running
//! only those two controllers (no scheduler), a simulated kubelet that binds pods, marks them
//! Running and Ready and finishes their deletion, and the real kubectl for the walkthrough
//! (`create deployment`, `scale`, `delete pod`, `set image --record`, `rollout
//! status|history|undo|pause|resume`).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use control_plane::app::{Config, Running, start};
use control_plane::registry::{deployments, events, pods, replicasets};
use control_plane::server::internal::{Client, DeleteParams, PatchType};
use serde_json::{Value, json};

/// Pods whose first container image contains this never become ready.
const NEVER_READY: &str = "never-ready";
/// How long the simulated kubelet takes to start a bound pod, and to stop a deleted one.
const START_DELAY: Duration = Duration::from_millis(250);
const STOP_DELAY: Duration = Duration::from_millis(150);

/// A control plane with the workload controllers and a simulated kubelet; stopped on drop.
struct Plane {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    client: Client,
    rt: Option<tokio::runtime::Runtime>,
    running: Option<Running>,
    stop: Arc<AtomicBool>,
}

impl Plane {
    fn start() -> Plane {
        let dir = tempfile::tempdir().expect("temp dir");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let mut cfg = Config::new(dir.path().to_path_buf(), "127.0.0.1:0".parse().expect("addr"));
        cfg.controllers = "deployment,replicaset".into();
        cfg.scheduler = false;
        let running = rt.block_on(start(cfg)).expect("control plane starts");
        let client = Client::new(running.api.clone());
        let stop = Arc::new(AtomicBool::new(false));
        rt.spawn(kubelet(client.clone(), stop.clone()));
        Plane { kubeconfig: running.kubeconfig.clone(), client, dir, rt: Some(rt), running: Some(running), stop }
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.as_ref().expect("runtime").block_on(f)
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(common::kubectl_path())
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("kubectl runs")
    }

    /// Runs kubectl, failing the test with its stderr when it fails; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    fn apply(&self, manifest: &Value) {
        let path = self.dir.path().join("manifest.json");
        std::fs::write(&path, manifest.to_string()).expect("write manifest");
        self.ok(&["apply", "-f", path.to_str().expect("utf-8 path")]);
    }

    fn deployment(&self, name: &str) -> Value {
        self.block_on(self.client.get(&deployments::RESOURCE, "default", name)).expect("deployment exists")
    }

    fn replica_sets(&self) -> Vec<Value> {
        let mut list = self.block_on(self.client.list(&replicasets::RESOURCE, "default")).expect("list").0;
        list.sort_by_key(revision);
        list
    }

    fn pods(&self, app: &str) -> Vec<Value> {
        let all = self.block_on(self.client.list(&pods::RESOURCE, "default")).expect("list").0;
        all.into_iter().filter(|p| p["metadata"]["labels"]["app"] == app).collect()
    }

    /// Polls `check` until it returns `Some`, failing after `secs` seconds.
    fn until<T>(&self, what: &str, secs: u64, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = check() {
                return v;
            }
            if Instant::now() >= deadline {
                self.dump();
                panic!("timed out waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `app` has exactly `n` pods, all live and ready, with `image`.
    fn settled(&self, app: &str, n: usize, image: &str) -> Vec<Value> {
        self.until(&format!("{n} ready pods of {app} with {image}"), 20, || {
            let pods = self.pods(app);
            (pods.len() == n && pods.iter().all(|p| live(p) && ready(p) && image_of(p) == image)).then_some(pods)
        })
    }

    /// Samples the pods of `app` until `done` holds: (most live pods, fewest ready live pods).
    fn sample_while(&self, app: &str, secs: u64, mut done: impl FnMut(&Plane) -> bool) -> (usize, usize) {
        let (mut most, mut fewest) = (0, usize::MAX);
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let pods = self.pods(app);
            let live_pods: Vec<&Value> = pods.iter().filter(|p| live(p)).collect();
            most = most.max(live_pods.len());
            fewest = fewest.min(live_pods.iter().filter(|p| ready(p)).count());
            if done(self) {
                return (most, fewest);
            }
            assert!(Instant::now() < deadline, "rollout of {app} did not finish");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Prints the workload objects, to tell why a wait timed out.
    fn dump(&self) {
        for res in [&deployments::RESOURCE, &replicasets::RESOURCE, &pods::RESOURCE, &events::RESOURCE] {
            for obj in self.block_on(self.client.list(res, "default")).map(|l| l.0).unwrap_or_default() {
                eprintln!("{}", serde_json::to_string(&obj).unwrap_or_default());
            }
        }
    }

    fn events(&self, reason: &str) -> Vec<String> {
        let all = self.block_on(self.client.list(&events::RESOURCE, "default")).expect("list events").0;
        all.iter().filter(|e| e["reason"] == reason).map(|e| e["message"].as_str().unwrap_or("").to_string()).collect()
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let (Some(rt), Some(running)) = (self.rt.take(), self.running.take()) {
            rt.block_on(running.shutdown());
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// The current time as Kubernetes writes it (whole seconds, UTC).
fn now_rfc3339() -> String {
    use k8s_openapi::jiff::Timestamp;
    Timestamp::from_second(Timestamp::now().as_second()).expect("valid time").to_string()
}

fn revision(obj: &Value) -> i64 {
    obj["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn live(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
}

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn image_of(pod_or_template: &Value) -> &str {
    pod_or_template["spec"]["containers"][0]["image"].as_str().unwrap_or("")
}

fn annotation<'a>(obj: &'a Value, key: &str) -> &'a str {
    obj["metadata"]["annotations"][key].as_str().unwrap_or("")
}

/// What a kubelet would do, quickly: bind pending pods to `node-1`, mark them Running and Ready
/// a moment later (unless their image says never), and finish deletions a moment after they
/// begin.
async fn kubelet(client: Client, stop: Arc<AtomicBool>) {
    let seen: Mutex<HashMap<String, Instant>> = Mutex::default();
    let mut ip = 1u32;
    while !stop.load(Ordering::Relaxed) {
        let list = client.list(&pods::RESOURCE, "").await.map(|l| l.0).unwrap_or_default();
        for pod in list {
            let ns = pod["metadata"]["namespace"].as_str().unwrap_or("").to_string();
            let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
            let state = if live(&pod) { "run" } else { "stop" };
            let first = *seen.lock().expect("lock").entry(format!("{ns}/{name}/{state}")).or_insert_with(Instant::now);
            if !live(&pod) {
                if first.elapsed() >= STOP_DELAY {
                    let now = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
                    let _ = client.delete(&pods::RESOURCE, &ns, &name, &now).await;
                }
                continue;
            }
            // Bound pods terminate gracefully; should binding fail, the pod runs unbound.
            if pod["spec"]["nodeName"].as_str().unwrap_or("").is_empty()
                && client.bind(&pods::RESOURCE, &ns, &name, "node-1").await.is_ok()
            {
                continue;
            }
            if ready(&pod) || image_of(&pod).contains(NEVER_READY) || first.elapsed() < START_DELAY {
                continue;
            }
            ip += 1;
            let now = now_rfc3339();
            let cond = |t: &str| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
            let status = json!({"status": {
                "phase": "Running",
                "podIP": format!("10.244.0.{}", ip % 250 + 2),
                "startTime": now,
                "conditions": [cond("PodReadyToStartContainers"), cond("Initialized"), cond("Ready"),
                    cond("ContainersReady"), cond("PodScheduled")],
            }});
            let _ = client.patch(&pods::RESOURCE, &ns, &name, PatchType::Merge, &status, true).await;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

#[test]
fn create_scale_replace_roll_out_and_roll_back_with_kubectl() {
    let p = Plane::start();
    p.ok(&["create", "deployment", "web", "--image=busybox:1", "--replicas=3"]);
    let pods = p.settled("web", 3, "busybox:1");

    // One ReplicaSet `web-<hash>` owning the pods, with the revision annotations.
    let sets = p.replica_sets();
    assert_eq!(sets.len(), 1);
    let rs = &sets[0];
    let hash = rs["metadata"]["labels"]["pod-template-hash"].as_str().expect("hash label").to_string();
    assert_eq!(rs["metadata"]["name"], format!("web-{hash}"));
    assert!(hash.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)), "{hash}");
    assert_eq!(rs["spec"]["selector"]["matchLabels"], json!({"app": "web", "pod-template-hash": hash}));
    assert_eq!(annotation(rs, "deployment.kubernetes.io/revision"), "1");
    assert_eq!(annotation(rs, "deployment.kubernetes.io/desired-replicas"), "3");
    assert_eq!(annotation(rs, "deployment.kubernetes.io/max-replicas"), "4");
    assert_eq!(rs["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    for pod in &pods {
        let owner = &pod["metadata"]["ownerReferences"][0];
        assert_eq!(
            (owner["kind"].as_str(), owner["name"].as_str()),
            (Some("ReplicaSet"), rs["metadata"]["name"].as_str())
        );
        assert_eq!(owner["controller"], true);
        assert_eq!(owner["blockOwnerDeletion"], true);
        assert_eq!(pod["metadata"]["generateName"], format!("web-{hash}-"));
        assert_eq!(pod["metadata"]["labels"]["pod-template-hash"], hash.as_str());
    }
    let d = p.until("deployment status", 10, || {
        let d = p.deployment("web");
        (d["status"]["availableReplicas"] == 3).then_some(d)
    });
    assert_eq!(annotation(&d, "deployment.kubernetes.io/revision"), "1");
    assert_eq!(d["status"]["replicas"], 3);
    assert_eq!(d["status"]["updatedReplicas"], 3);
    assert_eq!(d["status"]["readyReplicas"], 3);
    assert_eq!(d["status"]["observedGeneration"], 1);
    assert!(d["status"].get("unavailableReplicas").is_none());
    let conds = d["status"]["conditions"].as_array().expect("conditions");
    let kinds: Vec<(&str, &str)> =
        conds.iter().map(|c| (c["type"].as_str().unwrap_or(""), c["reason"].as_str().unwrap_or(""))).collect();
    assert_eq!(kinds, [("Available", "MinimumReplicasAvailable"), ("Progressing", "NewReplicaSetAvailable")]);
    let rs_status = &p.replica_sets()[0]["status"];
    assert_eq!(rs_status["readyReplicas"], 3);
    assert_eq!(rs_status["fullyLabeledReplicas"], 3);
    assert_eq!(rs_status["terminatingReplicas"], 0);
    assert!(p.events("ScalingReplicaSet").contains(&format!("Scaled up replica set web-{hash} from 0 to 3")));
    assert!(p.ok(&["rollout", "status", "deployment/web"]).contains("successfully rolled out"));

    // Scale out and back in.
    p.ok(&["scale", "deployment", "web", "--replicas=5"]);
    p.settled("web", 5, "busybox:1");
    p.ok(&["scale", "deployment", "web", "--replicas=3"]);
    p.settled("web", 3, "busybox:1");
    assert!(p.events("ScalingReplicaSet").contains(&format!("Scaled down replica set web-{hash} from 5 to 3")));

    // A deleted pod is replaced.
    let victim = p.pods("web")[0]["metadata"]["name"].as_str().expect("name").to_string();
    p.ok(&["delete", "pod", &victim]);
    let after = p.settled("web", 3, "busybox:1");
    assert!(after.iter().all(|pod| pod["metadata"]["name"] != victim.as_str()));

    // A rolling update never goes beyond 3 + maxSurge (1) pods nor below 3 - maxUnavailable (0)
    // ready ones.
    p.ok(&["set", "image", "deployment/web", "busybox=busybox:2", "--record"]);
    let (most, fewest) = p.sample_while("web", 20, |p| {
        let pods = p.pods("web");
        pods.len() == 3 && pods.iter().all(|pod| ready(pod) && image_of(pod) == "busybox:2")
    });
    assert!(most <= 4, "{most} live pods during the rollout");
    assert!(fewest >= 3, "only {fewest} ready pods during the rollout");
    assert!(p.ok(&["rollout", "status", "deployment/web", "--timeout=20s"]).contains("successfully rolled out"));
    p.ok(&["set", "image", "deployment/web", "busybox=busybox:3", "--record"]);
    assert!(p.ok(&["rollout", "status", "deployment/web", "--timeout=20s"]).contains("successfully rolled out"));
    p.settled("web", 3, "busybox:3");
    let sets = p.replica_sets();
    assert_eq!(sets.iter().map(revision).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(sets.iter().map(|rs| rs["spec"]["replicas"].as_i64().unwrap_or(-1)).collect::<Vec<_>>(), [0, 0, 3]);
    assert_eq!(
        annotation(&sets[1], "kubernetes.io/change-cause"),
        "kubectl set image deployment/web busybox=busybox:2 --record=true"
    );
    assert_eq!(annotation(&p.deployment("web"), "deployment.kubernetes.io/revision"), "3");

    let history = p.ok(&["rollout", "history", "deployment/web"]);
    let lines: Vec<Vec<&str>> = history.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[1], ["REVISION", "CHANGE-CAUSE"], "{history}");
    assert_eq!(lines[2], ["1", "<none>"], "{history}");
    assert_eq!(lines[3][..2], ["2", "kubectl"], "{history}");
    assert!(history.contains("busybox=busybox:3"), "{history}");

    // Undo goes back to revision 2's template, which becomes revision 4.
    p.ok(&["rollout", "undo", "deployment/web"]);
    assert!(p.ok(&["rollout", "status", "deployment/web", "--timeout=20s"]).contains("successfully rolled out"));
    p.settled("web", 3, "busybox:2");
    let d = p.deployment("web");
    assert_eq!(image_of(&d["spec"]["template"]), "busybox:2");
    assert_eq!(annotation(&d, "deployment.kubernetes.io/revision"), "4");
    let sets = p.replica_sets();
    assert_eq!(sets.iter().map(revision).collect::<Vec<_>>(), [1, 3, 4]);
    assert_eq!(image_of(&sets[2]["spec"]["template"]), "busybox:2");
    assert_eq!(annotation(&sets[2], "deployment.kubernetes.io/revision-history"), "2");

    // And to a chosen revision.
    p.ok(&["rollout", "undo", "deployment/web", "--to-revision=1"]);
    assert!(p.ok(&["rollout", "status", "deployment/web", "--timeout=20s"]).contains("successfully rolled out"));
    p.settled("web", 3, "busybox:1");
    let sets = p.replica_sets();
    assert_eq!(sets.iter().map(revision).collect::<Vec<_>>(), [3, 4, 5]);
    assert_eq!(image_of(&sets[2]["spec"]["template"]), "busybox:1");
    assert_eq!(sets[2]["metadata"]["name"], format!("web-{hash}"), "the first ReplicaSet is re-used");
    let history = p.ok(&["rollout", "history", "deployment/web"]);
    let revisions: Vec<&str> = history.lines().skip(2).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(revisions, ["3", "4", "5"], "{history}");
    let rev2 = p.ok(&["rollout", "history", "deployment/web", "--revision=4"]);
    assert!(rev2.contains("busybox:2"), "{rev2}");
}

#[test]
fn pause_scale_resume_and_proportional_scaling() {
    let p = Plane::start();
    p.ok(&["create", "deployment", "api", "--image=busybox:1", "--replicas=2"]);
    p.settled("api", 2, "busybox:1");
    p.ok(&["rollout", "pause", "deployment/api"]);
    p.ok(&["set", "image", "deployment/api", "busybox=busybox:2"]);
    let d = p.until("paused condition", 10, || {
        let d = p.deployment("api");
        let reason = d["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Progressing"))
            .map(|c| c["reason"].clone());
        (reason == Some(json!("DeploymentPaused"))).then_some(d)
    });
    assert_eq!(d["status"]["conditions"][1]["status"], "Unknown");
    // Paused: no rollout, but scaling works.
    p.ok(&["scale", "deployment/api", "--replicas=4"]);
    p.settled("api", 4, "busybox:1");
    assert_eq!(p.replica_sets().len(), 1, "no new ReplicaSet while paused");
    p.ok(&["rollout", "resume", "deployment/api"]);
    assert!(p.ok(&["rollout", "status", "deployment/api", "--timeout=20s"]).contains("successfully rolled out"));
    p.settled("api", 4, "busybox:2");

    // A rollout stuck on pods that never become ready: 10 replicas, maxSurge 3 (25%, rounded
    // up), maxUnavailable 2 (rounded down) leave 8 old and 5 new. Scaling to 20 shares the 12 new
    // replicas (20 + 5 surge - 13) in proportion: 8 → 15, 5 → 10.
    p.ok(&["scale", "deployment/api", "--replicas=10"]);
    p.settled("api", 10, "busybox:2");
    p.ok(&["set", "image", "deployment/api", &format!("busybox=busybox:{NEVER_READY}")]);
    let sizes = |p: &Plane| -> Vec<i64> {
        p.replica_sets().iter().filter_map(|rs| rs["spec"]["replicas"].as_i64()).filter(|n| *n > 0).collect()
    };
    p.until("a stalled rollout at 8 old and 5 new", 20, || (sizes(&p) == [8, 5]).then_some(()));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sizes(&p), [8, 5], "the rollout stays stalled");
    p.ok(&["scale", "deployment/api", "--replicas=20"]);
    p.until("proportional scaling to 15 old and 10 new", 20, || (sizes(&p) == [15, 10]).then_some(()));
    let desired: Vec<String> = p
        .replica_sets()
        .iter()
        .filter(|rs| rs["spec"]["replicas"].as_i64() > Some(0))
        .map(|rs| annotation(rs, "deployment.kubernetes.io/desired-replicas").to_string())
        .collect();
    assert_eq!(desired, ["20", "20"]);
}

#[test]
fn recreate_strategy_and_revision_history_limit() {
    let p = Plane::start();
    let manifest = |image: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "db", "namespace": "default"},
            "spec": {"replicas": 2, "revisionHistoryLimit": 1, "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}},
                    "spec": {"nodeName": "node-1", "containers": [{"name": "db", "image": image}]}}}})
    };
    // Bound from the start, so old pods terminate gracefully and Recreate must wait for them.
    p.apply(&manifest("db:1"));
    p.settled("db", 2, "db:1");
    for image in ["db:2", "db:3"] {
        p.apply(&manifest(image));
        // Never old and new pods at once, terminating ones included.
        let mut mixed = false;
        p.sample_while("db", 20, |p| {
            let pods = p.pods("db");
            let images: std::collections::HashSet<&str> = pods.iter().map(image_of).collect();
            mixed |= images.len() > 1;
            pods.len() == 2 && pods.iter().all(|pod| ready(pod) && image_of(pod) == image)
        });
        assert!(!mixed, "old and new pods coexisted during a Recreate rollout to {image}");
    }
    // Three revisions, one old kept.
    let sets = p.until("history cleanup", 10, || {
        let sets = p.replica_sets();
        (sets.len() == 2).then_some(sets)
    });
    assert_eq!(sets.iter().map(revision).collect::<Vec<_>>(), [2, 3]);
    assert!(p.ok(&["rollout", "status", "deployment/db"]).contains("successfully rolled out"));
}

#[test]
fn progress_deadline_exceeded_when_pods_never_become_ready() {
    let p = Plane::start();
    p.apply(
        &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "stuck", "namespace": "default"},
        "spec": {"replicas": 2, "progressDeadlineSeconds": 2, "selector": {"matchLabels": {"app": "stuck"}},
            "template": {"metadata": {"labels": {"app": "stuck"}},
                "spec": {"containers": [{"name": "c", "image": format!("img:{NEVER_READY}")}]}}}}),
    );
    let cond = p.until("ProgressDeadlineExceeded", 15, || {
        let d = p.deployment("stuck");
        let c = d["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Progressing")?.clone();
        (c["reason"] == "ProgressDeadlineExceeded").then_some(c)
    });
    assert_eq!(cond["status"], "False");
    assert!(cond["message"].as_str().is_some_and(|m| m.ends_with("has timed out progressing.")), "{cond}");
    let d = p.deployment("stuck");
    let available =
        d["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == "Available").cloned());
    assert_eq!(available.map(|c| c["reason"].clone()), Some(json!("MinimumReplicasUnavailable")));
    assert_eq!(d["status"]["unavailableReplicas"], 2);
    let out = p.kubectl(&["rollout", "status", "deployment/stuck", "--timeout=10s"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exceeded its progress deadline"), "{err}");
}

#[test]
fn replicaset_adopts_orphans_releases_strays_and_waits_min_ready_seconds() {
    let p = Plane::start();
    // An orphan pod that the ReplicaSet's selector matches.
    let orphan = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "stray", "namespace": "default",
        "labels": {"app": "cache"}}, "spec": {"containers": [{"name": "c", "image": "cache:1"}]}});
    p.block_on(p.client.create(&pods::RESOURCE, "default", orphan)).expect("create orphan");
    p.apply(
        &json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "cache", "namespace": "default"},
        "spec": {"replicas": 2, "minReadySeconds": 2, "selector": {"matchLabels": {"app": "cache"}},
            "template": {"metadata": {"labels": {"app": "cache"}},
                "spec": {"containers": [{"name": "c", "image": "cache:1"}]}}}}),
    );
    let pods = p.settled("cache", 2, "cache:1");
    assert!(pods.iter().any(|pod| pod["metadata"]["name"] == "stray"), "the orphan is adopted, not replaced");
    let stray = pods.iter().find(|pod| pod["metadata"]["name"] == "stray").expect("stray");
    assert_eq!(stray["metadata"]["ownerReferences"][0]["name"], "cache");

    // Ready, but available only after minReadySeconds.
    let rs = p.until("ready replicas", 10, || {
        let rs = p.block_on(p.client.get(&replicasets::RESOURCE, "default", "cache")).expect("rs");
        (rs["status"]["readyReplicas"] == 2).then_some(rs)
    });
    assert!(rs["status"]["availableReplicas"].as_i64().unwrap_or(0) < 2, "{rs}");
    let started = Instant::now();
    let rs = p.until("available replicas", 10, || {
        let rs = p.block_on(p.client.get(&replicasets::RESOURCE, "default", "cache")).expect("rs");
        (rs["status"]["availableReplicas"] == 2).then_some(rs)
    });
    assert!(started.elapsed() >= Duration::from_millis(500), "availability waited for minReadySeconds");
    assert_eq!(rs["status"]["replicas"], 2);
    assert_eq!(rs["status"]["fullyLabeledReplicas"], 2);
    assert_eq!(rs["status"]["observedGeneration"], 1);

    // A pod relabelled out of the selector is released and replaced.
    p.ok(&["label", "pod", "stray", "app=elsewhere", "--overwrite"]);
    p.settled("cache", 2, "cache:1");
    let released = p.block_on(p.client.get(&pods::RESOURCE, "default", "stray")).expect("stray still exists");
    assert!(released["metadata"].get("ownerReferences").is_none(), "{released}");
}

#[test]
fn rolling_update_with_graceful_termination_stays_within_bounds() {
    let p = Plane::start();
    // Pods bound from the start terminate gracefully: deleted pods linger until the kubelet is done.
    let manifest = |image: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bound", "namespace": "default"},
            "spec": {"replicas": 4, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}},
                "selector": {"matchLabels": {"app": "bound"}},
                "template": {"metadata": {"labels": {"app": "bound"}},
                    "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": image}]}}}})
    };
    p.apply(&manifest("app:1"));
    p.settled("bound", 4, "app:1");
    p.apply(&manifest("app:2"));
    let mut terminating_seen = false;
    let (most, fewest) = p.sample_while("bound", 20, |p| {
        let pods = p.pods("bound");
        if pods.iter().any(|pod| !live(pod)) {
            let sets = p.replica_sets();
            terminating_seen |= sets.iter().any(|rs| rs["status"]["terminatingReplicas"].as_i64() > Some(0));
        }
        pods.len() == 4 && pods.iter().all(|pod| ready(pod) && image_of(pod) == "app:2")
    });
    assert!(most <= 5, "{most} live pods with maxSurge 1");
    assert!(fewest >= 3, "{fewest} ready pods with maxUnavailable 1");
    assert!(terminating_seen, "ReplicaSets report their terminating pods");
    let d = p.until("a settled status", 10, || {
        let d = p.deployment("bound");
        (d["status"]["terminatingReplicas"] == 0 && d["status"]["availableReplicas"] == 4).then_some(d)
    });
    assert_eq!(d["status"]["updatedReplicas"], 4);
    assert_eq!(annotation(&d, "deployment.kubernetes.io/revision"), "2");

    // Settled controllers write nothing more (leader election does: look at the workloads only).
    let revision = || {
        let mut versions = Vec::new();
        for res in [&deployments::RESOURCE, &replicasets::RESOURCE, &pods::RESOURCE, &events::RESOURCE] {
            for obj in p.block_on(p.client.list(res, "default")).expect("list").0 {
                versions.push(obj["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string());
            }
        }
        versions.sort();
        versions
    };
    std::thread::sleep(Duration::from_millis(500));
    let before = revision();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(revision(), before, "writes while nothing changes");
}
