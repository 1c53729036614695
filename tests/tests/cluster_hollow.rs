//! The Deployment, Service, namespace and scheduling steps of the walkthrough against a control
//! plane with all controllers and the scheduler, and three hollow nodes (kubemark-style
//! simulated kubelets), driven by the real kubectl. Also: a node that stops heartbeating goes
//! NotReady and its pods are recreated on the others.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::wait_for;
use control_plane::app::{Config, Running, start};
use node_agent::hollow::{HollowCluster, HollowConfig};
use serde_json::Value;

struct Env {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    rt: Option<tokio::runtime::Runtime>,
    running: Option<Running>,
    hollow: Option<Arc<HollowCluster>>,
}

impl Env {
    fn start(nodes: usize) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let mut cfg = Config::new(dir.path().to_path_buf(), "127.0.0.1:0".parse().expect("addr"));
        cfg.settings.node_monitor_grace_period = Duration::from_secs(3);
        cfg.settings.node_monitor_period = Duration::from_millis(300);
        cfg.leader.retry_period = Duration::from_millis(200);
        let running = rt.block_on(start(cfg)).expect("control plane starts");
        let kubeconfig = running.kubeconfig.clone();
        let mut hc = HollowConfig::new(&kubeconfig, nodes);
        hc.renew_every = Duration::from_millis(300);
        hc.heartbeat_every = Duration::from_secs(1);
        hc.lease_seconds = 3;
        let hollow = rt.block_on(HollowCluster::start(hc)).expect("hollow nodes start");
        Env { dir, kubeconfig, rt: Some(rt), running: Some(running), hollow: Some(Arc::new(hollow)) }
    }

    fn kubectl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(common::kubectl_path());
        cmd.args(args).env("KUBECONFIG", &self.kubeconfig).env("HOME", self.dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null()).output().expect("kubectl runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl_env(args, &[]);
        assert!(out.status.success(), "kubectl {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("json")
    }

    fn apply(&self, manifest: &str) -> String {
        let mut child = Command::new(common::kubectl_path())
            .args(["apply", "-f", "-"])
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        use std::io::Write as _;
        child.stdin.take().expect("stdin").write_all(manifest.as_bytes()).expect("write");
        let out = child.wait_with_output().expect("kubectl");
        assert!(out.status.success(), "apply failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// Running, Ready pods with label `app=<app>` that are not being deleted.
    fn running_pods(&self, app: &str) -> Vec<Value> {
        let pods = self.json(&["get", "pods", "-l", &format!("app={app}")]);
        pods["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|p| p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null())
            .cloned()
            .collect()
    }

    fn pods_of(&self, app: &str) -> Vec<Value> {
        self.json(&["get", "pods", "-l", &format!("app={app}")])["items"].as_array().expect("items").clone()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            if let Some(h) = self.hollow.take()
                && let Ok(h) = Arc::try_unwrap(h)
            {
                rt.block_on(h.shutdown());
            }
            if let Some(r) = self.running.take() {
                rt.block_on(r.shutdown());
            }
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

fn image_of(pod: &Value) -> String {
    pod["spec"]["containers"][0]["image"].as_str().unwrap_or("").to_string()
}

#[test]
fn deployments_services_and_scheduling_on_hollow_nodes() {
    let e = Env::start(3);
    // Nodes register, get distinct pod CIDRs, and are Ready.
    let nodes = wait_for("3 Ready nodes with pod CIDRs", Duration::from_secs(30), || {
        let n = e.json(&["get", "nodes"]);
        let items = n["items"].as_array()?.clone();
        let ready = items.iter().filter(|n| {
            n["spec"]["podCIDR"].is_string()
                && n["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        });
        (ready.count() == 3).then_some(items)
    });
    let cidrs: std::collections::BTreeSet<&str> = nodes.iter().filter_map(|n| n["spec"]["podCIDR"].as_str()).collect();
    assert_eq!(cidrs.len(), 3, "distinct pod CIDRs: {cidrs:?}");
    assert!(e.ok(&["get", "nodes"]).lines().skip(1).all(|l| l.split_whitespace().nth(1) == Some("Ready")));

    // create deployment --replicas=3: three Running pods with an IP and a node.
    e.ok(&["create", "deployment", "my-tomcat", "--image=tomcat:9.0.55", "--replicas=3"]);
    wait_for("3 running pods", Duration::from_secs(30), || (e.running_pods("my-tomcat").len() == 3).then_some(()));
    for p in e.running_pods("my-tomcat") {
        let ip = p["status"]["podIP"].as_str().expect("pod IP");
        assert!(ip.starts_with("10.244."), "pod IP {ip} from the node's podCIDR");
        assert!(p["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty()));
    }
    let wide = e.ok(&["get", "pods", "-o", "wide"]);
    assert!(wide.lines().skip(1).all(|l| !l.contains("<none>   <none>   <none>")), "{wide}");
    wait_for("deployment available", Duration::from_secs(30), || {
        let d = e.json(&["get", "deployment", "my-tomcat"]);
        (d["status"]["availableReplicas"] == 3).then_some(())
    });
    assert!(e.ok(&["get", "deployment", "my-tomcat"]).contains("3/3"));

    // scale to 5 and back to 3; edit replicas.
    e.ok(&["scale", "--replicas=5", "deployment", "my-tomcat"]);
    wait_for("5 running pods", Duration::from_secs(30), || (e.running_pods("my-tomcat").len() == 5).then_some(()));
    e.ok(&["scale", "--replicas=3", "deployment", "my-tomcat"]);
    wait_for("3 pods", Duration::from_secs(30), || (e.pods_of("my-tomcat").len() == 3).then_some(()));
    let out = e.kubectl_env(&["edit", "deployment", "my-tomcat"], &[("EDITOR", "sed -i 's/replicas: 3/replicas: 4/'")]);
    assert!(out.status.success(), "edit: {}", String::from_utf8_lossy(&out.stderr));
    wait_for("4 running pods", Duration::from_secs(30), || (e.running_pods("my-tomcat").len() == 4).then_some(()));

    // Self-healing: a deleted pod is replaced.
    let victim = e.running_pods("my-tomcat")[0]["metadata"]["name"].as_str().expect("name").to_string();
    e.ok(&["delete", "pod", &victim]);
    wait_for("replacement pod", Duration::from_secs(30), || {
        let pods = e.running_pods("my-tomcat");
        (pods.len() == 4 && pods.iter().all(|p| p["metadata"]["name"] != victim.as_str())).then_some(())
    });

    // Rolling update with --record, step by step, then history and undo.
    e.ok(&["set", "image", "deployment", "my-tomcat", "tomcat=tomcat:10.1.11", "--record"]);
    e.ok(&["rollout", "status", "deployment/my-tomcat", "--timeout=60s"]);
    let pods = e.running_pods("my-tomcat");
    assert_eq!(pods.len(), 4);
    assert!(pods.iter().all(|p| image_of(p) == "tomcat:10.1.11"), "all pods on the new image");
    let history = e.ok(&["rollout", "history", "deploy", "my-tomcat"]);
    assert!(history.contains("tomcat=tomcat:10.1.11"), "change-cause recorded: {history}");
    e.ok(&["rollout", "undo", "deployment", "my-tomcat"]);
    e.ok(&["rollout", "status", "deployment/my-tomcat", "--timeout=60s"]);
    wait_for("pods back on 9.0.55", Duration::from_secs(30), || {
        let pods = e.running_pods("my-tomcat");
        (pods.len() == 4 && pods.iter().all(|p| image_of(p) == "tomcat:9.0.55")).then_some(())
    });
    e.ok(&["rollout", "undo", "deployment/my-tomcat", "--to-revision=2"]);
    e.ok(&["rollout", "status", "deployment/my-tomcat", "--timeout=60s"]);
    let d = e.json(&["get", "deployment", "my-tomcat"]);
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "tomcat:10.1.11");

    // expose as NodePort: a port in range, and EndpointSlices listing the ready pods.
    e.ok(&["expose", "deployment", "my-tomcat", "--name=tomcat", "--port=8080", "--type=NodePort"]);
    let svc = e.json(&["get", "svc", "tomcat"]);
    let np = svc["spec"]["ports"][0]["nodePort"].as_i64().expect("nodePort");
    assert!((30000..=32767).contains(&np));
    wait_for("endpoints of tomcat", Duration::from_secs(30), || {
        let slices = e.json(&["get", "endpointslices", "-l", "kubernetes.io/service-name=tomcat"]);
        let ready: usize = slices["items"]
            .as_array()?
            .iter()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|ep| ep["conditions"]["ready"] == true)
            .count();
        (ready == 4).then_some(())
    });
    e.apply("apiVersion: v1\nkind: Service\nmetadata:\n  name: my-tomcat\nspec:\n  type: NodePort\n  selector:\n    app: my-tomcat\n  ports:\n  - port: 8080\n    nodePort: 30001\n    targetPort: 8080\n    protocol: TCP\n");
    assert!(e.ok(&["get", "svc", "-o", "wide"]).contains("8080:30001/TCP"));

    // nodeSelector: only the labelled node; nothing fits → FailedScheduling.
    let target = nodes[1]["metadata"]["name"].as_str().expect("node").to_string();
    e.ok(&["label", "node", &target, "disktype=ssd"]);
    e.apply("apiVersion: v1\nkind: Pod\nmetadata:\n  name: on-ssd\n  labels:\n    app: sel\nspec:\n  nodeSelector:\n    disktype: ssd\n  containers:\n  - name: c\n    image: busybox:local\n");
    wait_for("on-ssd running", Duration::from_secs(30), || {
        let p = e.json(&["get", "pod", "on-ssd"]);
        (p["status"]["phase"] == "Running").then_some(())
    });
    assert_eq!(e.json(&["get", "pod", "on-ssd"])["spec"]["nodeName"], target.as_str());
    e.apply("apiVersion: v1\nkind: Pod\nmetadata:\n  name: nowhere\nspec:\n  nodeSelector:\n    disktype: tape\n  containers:\n  - name: c\n    image: busybox:local\n");
    let msg = wait_for("FailedScheduling event", Duration::from_secs(30), || {
        let ev = e.json(&["get", "events", "--field-selector", "involvedObject.name=nowhere,reason=FailedScheduling"]);
        ev["items"].as_array()?.first().and_then(|e| e["message"].as_str()).map(str::to_string)
    });
    assert_eq!(
        msg,
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );
    assert!(e.ok(&["describe", "pod", "nowhere"]).contains("FailedScheduling"));
    assert_eq!(e.json(&["get", "pod", "nowhere"])["status"]["phase"], "Pending");

    // Namespace deletion removes what is inside.
    e.ok(&["create", "namespace", "scratch"]);
    e.ok(&["create", "deployment", "inner", "--image=busybox:local", "--replicas=2", "-n", "scratch"]);
    wait_for("inner pods", Duration::from_secs(30), || {
        (e.json(&["get", "pods", "-n", "scratch"])["items"].as_array()?.len() == 2).then_some(())
    });
    e.ok(&["delete", "namespace", "scratch", "--timeout=60s"]);
    assert!(!e.kubectl_env(&["get", "namespace", "scratch"], &[]).status.success());
}

#[test]
fn pods_of_a_silent_node_are_recreated_elsewhere() {
    let e = Env::start(3);
    wait_for("3 Ready nodes", Duration::from_secs(30), || {
        let n = e.json(&["get", "nodes"]);
        let ready = n["items"].as_array()?.iter().filter(|n| {
            n["spec"]["podCIDR"].is_string()
                && n["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        });
        (ready.count() == 3).then_some(())
    });
    // Pods that tolerate an unreachable node for 2 s only (the default is 300 s).
    e.apply(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 6
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      tolerations:
      - key: node.kubernetes.io/unreachable
        operator: Exists
        effect: NoExecute
        tolerationSeconds: 2
      - key: node.kubernetes.io/not-ready
        operator: Exists
        effect: NoExecute
        tolerationSeconds: 2
      containers:
      - name: web
        image: busybox:local
"#,
    );
    wait_for("6 running pods", Duration::from_secs(30), || (e.running_pods("web").len() == 6).then_some(()));
    let pods = e.running_pods("web");
    let victim = pods[0]["spec"]["nodeName"].as_str().expect("node").to_string();
    e.hollow.as_ref().expect("hollow").pause_node(&victim).expect("pause");

    wait_for("node NotReady", Duration::from_secs(30), || {
        let n = e.json(&["get", "node", &victim]);
        let ready = n["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready")?.clone();
        let tainted = n["spec"]["taints"]
            .as_array()
            .is_some_and(|ts| ts.iter().any(|t| t["key"] == "node.kubernetes.io/unreachable"));
        (ready["status"] == "Unknown" && tainted).then_some(())
    });
    assert!(e.ok(&["get", "node", &victim]).contains("NotReady"));
    wait_for("pods recreated on the other nodes", Duration::from_secs(60), || {
        let pods = e.running_pods("web");
        (pods.len() == 6 && pods.iter().all(|p| p["spec"]["nodeName"] != victim.as_str())).then_some(())
    });
}
