//! The core controllers against an in-process control plane: EndpointSlices and Endpoints of
//! Services, the `default` ServiceAccount, the garbage collector's three deletion policies and
//! namespace deletion. Only these controllers run (no scheduler, no workload controllers); the
//! tests play kubelet by patching pod status (podIP, Ready) and by finishing graceful deletions.

mod common;
mod kubectl_support;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use control_plane::app::{Config, Running, start};
use control_plane::registry::{self, Resource};
use control_plane::server::Api;
use control_plane::server::internal::{Client, DeleteParams, PatchType};
use kubectl_support::{Table, eventually};
use serde_json::{Value, json};

const CONTROLLERS: &str = "endpointslice,endpoints,serviceaccount,garbagecollector,namespace";
const WAIT: Duration = Duration::from_secs(15);

/// A control plane running only the controllers under test, stopped on drop.
struct Cp {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    api: Arc<Api>,
    rt: Option<tokio::runtime::Runtime>,
    running: Option<Running>,
}

impl Cp {
    fn start() -> Cp {
        let dir = tempfile::tempdir().expect("temp dir");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let mut cfg = Config::new(dir.path().to_path_buf(), "127.0.0.1:0".parse().expect("addr"));
        cfg.controllers = CONTROLLERS.into();
        cfg.scheduler = false;
        let running = rt.block_on(start(cfg)).expect("control plane starts");
        Cp {
            kubeconfig: running.kubeconfig.clone(),
            api: running.api.clone(),
            dir,
            rt: Some(rt),
            running: Some(running),
        }
    }

    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.as_ref().expect("runtime").block_on(f)
    }

    fn client(&self) -> Client {
        Client::new(self.api.clone())
    }

    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(common::kubectl_path());
        cmd.args(args).env("KUBECONFIG", &self.kubeconfig).env("HOME", self.dir.path());
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl runs");
        if let Some(input) = stdin {
            use std::io::Write as _;
            child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
        }
        child.wait_with_output().expect("kubectl finishes")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args, None);
        assert!(out.status.success(), "kubectl {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// The object, or `None` when it does not exist.
    fn get(&self, res: &Resource, ns: &str, name: &str) -> Option<Value> {
        match self.block(self.client().get(res, ns, name)) {
            Ok(v) => Some(v),
            Err(e) if e.code == 404 => None,
            Err(e) => panic!("get {}/{name}: {e:?}", res.plural),
        }
    }

    fn create(&self, res: &Resource, ns: &str, obj: Value) -> Value {
        self.block(self.client().create(res, ns, obj)).unwrap_or_else(|e| panic!("create {}: {e:?}", res.plural))
    }

    fn node(&self, name: &str, zone: Option<&str>) {
        let mut labels = json!({"kubernetes.io/hostname": name});
        if let Some(z) = zone {
            labels["topology.kubernetes.io/zone"] = json!(z);
        }
        self.create(nodes(), "", json!({"metadata": {"name": name, "labels": labels}}));
    }

    /// A pod with a container port named `http` (8080), bound to `node`.
    fn pod(&self, ns: &str, name: &str, app: &str, node: &str) -> Value {
        self.create(
            pods(),
            ns,
            json!({
                "metadata": {"name": name, "labels": {"app": app}},
                "spec": {"nodeName": node, "containers": [{"name": "app", "image": "busybox:1.36",
                    "ports": [{"name": "http", "containerPort": 8080}]}]},
            }),
        )
    }

    /// What a kubelet reports: Running with an address, Ready or not.
    fn report(&self, ns: &str, name: &str, ip: &str, ready: bool) {
        let status = if ready { "True" } else { "False" };
        let patch = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": status}, {"type": "ContainersReady", "status": status}]}});
        self.block(self.client().patch(pods(), ns, name, PatchType::Merge, &patch, true)).expect("pod status patched");
    }

    /// What a kubelet does once a deleted pod's containers stopped.
    fn finish_deletion(&self, ns: &str, name: &str) {
        let params = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
        match self.block(self.client().delete(pods(), ns, name, &params)) {
            Ok(_) => {}
            Err(e) if e.code == 404 => {}
            Err(e) => panic!("delete pod {name}: {e:?}"),
        }
    }

    /// The managed EndpointSlices of a Service.
    fn slices(&self, ns: &str, svc: &str) -> Vec<Value> {
        let (items, _) = self.block(self.client().list(slices(), ns)).expect("list slices");
        items
            .into_iter()
            .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == svc)
            .filter(|s| {
                s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == "endpointslice-controller.k8s.io"
            })
            .collect()
    }

    /// Waits until the Service has exactly one slice for which `check` holds.
    fn slice_where(&self, ns: &str, svc: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        eventually(WAIT, what, || {
            let s = self.slices(ns, svc);
            (s.len() == 1 && check(&s[0])).then(|| s[0].clone())
        })
    }
}

impl Drop for Cp {
    fn drop(&mut self) {
        if let (Some(rt), Some(running)) = (self.rt.take(), self.running.take()) {
            rt.block_on(running.shutdown());
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

fn pods() -> &'static Resource {
    &registry::pods::RESOURCE
}
fn nodes() -> &'static Resource {
    &registry::nodes::RESOURCE
}
fn services() -> &'static Resource {
    &registry::services::RESOURCE
}
fn slices() -> &'static Resource {
    &registry::endpointslices::RESOURCE
}
fn endpoints() -> &'static Resource {
    &registry::endpoints::RESOURCE
}
fn configmaps() -> &'static Resource {
    &registry::configmaps::RESOURCE
}
fn secrets() -> &'static Resource {
    &registry::secrets::RESOURCE
}
fn namespaces() -> &'static Resource {
    &registry::namespaces::RESOURCE
}
fn service_accounts() -> &'static Resource {
    &registry::serviceaccounts::RESOURCE
}

/// Endpoints of a slice: pod name → endpoint.
fn by_pod(slice: &Value) -> std::collections::BTreeMap<String, Value> {
    slice["endpoints"]
        .as_array()
        .map(|eps| {
            eps.iter().map(|e| (e["targetRef"]["name"].as_str().expect("pod name").to_string(), e.clone())).collect()
        })
        .unwrap_or_default()
}

fn ips(list: &Value) -> Vec<&str> {
    list.as_array().map(|a| a.iter().map(|x| x["ip"].as_str().expect("ip")).collect()).unwrap_or_default()
}

#[test]
fn endpointslices_and_endpoints_follow_pods() {
    let cp = Cp::start();
    cp.node("n1", Some("zone-a"));
    cp.node("n2", None);
    let svc = cp.create(
        services(),
        "default",
        json!({"metadata": {"name": "web", "labels": {"tier": "front"}},
            "spec": {"selector": {"app": "web"}, "ports": [
                {"name": "http", "port": 80, "targetPort": "http"},
                {"name": "metrics", "port": 9090, "targetPort": 9100}]}}),
    );

    // No pods yet: one empty placeholder slice, owned by the Service, named after it.
    let placeholder = cp.slice_where("default", "web", "the placeholder slice", |s| s["endpoints"].is_null());
    assert!(placeholder["metadata"]["name"].as_str().expect("name").starts_with("web-"), "{placeholder}");
    assert_eq!(placeholder["addressType"], "IPv4");
    assert_eq!(placeholder["metadata"]["labels"]["tier"], "front");
    let owner = &placeholder["metadata"]["ownerReferences"][0];
    assert_eq!((owner["kind"].as_str(), owner["name"].as_str()), (Some("Service"), Some("web")));
    assert_eq!(owner["uid"], svc["metadata"]["uid"]);
    assert_eq!((owner["controller"].as_bool(), owner["blockOwnerDeletion"].as_bool()), (Some(true), Some(true)));

    // Pods: two ready, one not ready, one without an address (left out).
    for (name, node) in [("web-0", "n1"), ("web-1", "n2"), ("web-2", "n1"), ("web-3", "n2")] {
        cp.pod("default", name, "web", node);
    }
    cp.pod("default", "other", "db", "n1");
    cp.report("default", "web-0", "10.244.1.10", true);
    cp.report("default", "web-1", "10.244.2.11", true);
    cp.report("default", "web-2", "10.244.1.12", false);
    cp.report("default", "other", "10.244.1.13", true);
    let slice = cp.slice_where("default", "web", "three endpoints", |s| by_pod(s).len() == 3);
    let eps = by_pod(&slice);
    assert_eq!(eps.keys().collect::<Vec<_>>(), ["web-0", "web-1", "web-2"]);
    assert_eq!(eps["web-0"]["addresses"], json!(["10.244.1.10"]));
    assert_eq!(eps["web-0"]["conditions"], json!({"ready": true, "serving": true, "terminating": false}));
    assert_eq!(eps["web-2"]["conditions"], json!({"ready": false, "serving": false, "terminating": false}));
    assert_eq!(eps["web-0"]["nodeName"], "n1");
    assert_eq!(eps["web-0"]["zone"], "zone-a");
    assert!(eps["web-1"].get("zone").is_none(), "no zone label on n2");
    assert_eq!(eps["web-1"]["targetRef"]["kind"], "Pod");
    let mut ports = slice["ports"].as_array().expect("ports").clone();
    ports.sort_by_key(|p| p["port"].as_i64());
    assert_eq!(
        ports,
        [
            json!({"name": "http", "port": 8080, "protocol": "TCP"}),
            json!({"name": "metrics", "port": 9100, "protocol": "TCP"})
        ]
    );

    // The legacy Endpoints mirror it.
    let ep = eventually(WAIT, "Endpoints with two ready addresses", || {
        cp.get(endpoints(), "default", "web").filter(|e| {
            ips(&e["subsets"][0]["addresses"]).len() == 2 && ips(&e["subsets"][0]["notReadyAddresses"]).len() == 1
        })
    });
    assert_eq!(ips(&ep["subsets"][0]["addresses"]), ["10.244.1.10", "10.244.2.11"]);
    assert_eq!(ips(&ep["subsets"][0]["notReadyAddresses"]), ["10.244.1.12"]);
    assert_eq!(ep["subsets"][0]["addresses"][0]["targetRef"]["name"], "web-0");
    assert_eq!(ep["metadata"]["labels"]["tier"], "front");
    let mut ep_ports = ep["subsets"][0]["ports"].as_array().expect("ports").clone();
    ep_ports.sort_by_key(|p| p["port"].as_i64());
    assert_eq!(
        ep_ports,
        [
            json!({"name": "http", "port": 8080, "protocol": "TCP"}),
            json!({"name": "metrics", "port": 9100, "protocol": "TCP"})
        ]
    );
    let out = cp.ok(&["get", "endpoints", "web"]);
    assert!(out.contains("10.244.1.10:8080"), "{out}");

    // Nothing changed: nothing is written.
    let rv = slice["metadata"]["resourceVersion"].clone();
    cp.ok(&["annotate", "pod", "web-0", "note=unrelated"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        cp.slices("default", "web")[0]["metadata"]["resourceVersion"],
        rv,
        "an unrelated change rewrote the slice"
    );

    // A terminating pod: serving, terminating, not ready; Endpoints leave it out.
    cp.ok(&["delete", "pod", "web-1", "--wait=false"]);
    let slice = cp.slice_where("default", "web", "web-1 terminating", |s| {
        by_pod(s)["web-1"]["conditions"]["terminating"] == true
    });
    assert_eq!(by_pod(&slice)["web-1"]["conditions"], json!({"ready": false, "serving": true, "terminating": true}));
    eventually(WAIT, "Endpoints without the terminating pod", || {
        cp.get(endpoints(), "default", "web").filter(|e| ips(&e["subsets"][0]["addresses"]) == ["10.244.1.10"])
    });
    cp.finish_deletion("default", "web-1");

    // Scaling: pods come and go, readiness flips.
    for (name, ip) in [("web-4", "10.244.2.14"), ("web-5", "10.244.2.15")] {
        cp.pod("default", name, "web", "n2");
        cp.report("default", name, ip, true);
    }
    cp.report("default", "web-2", "10.244.1.12", true);
    let slice = cp.slice_where("default", "web", "four ready endpoints", |s| {
        let eps = by_pod(s);
        eps.len() == 4 && eps.values().all(|e| e["conditions"]["ready"] == true)
    });
    assert_eq!(by_pod(&slice).keys().collect::<Vec<_>>(), ["web-0", "web-2", "web-4", "web-5"]);
    eventually(WAIT, "Endpoints with four addresses", || {
        cp.get(endpoints(), "default", "web").filter(|e| ips(&e["subsets"][0]["addresses"]).len() == 4)
    });
    cp.ok(&["label", "pod", "web-5", "app=moved", "--overwrite"]);
    for name in ["web-0", "web-2", "web-4"] {
        cp.ok(&["delete", "pod", name, "--wait=false"]);
        cp.finish_deletion("default", name);
    }
    cp.slice_where("default", "web", "the placeholder again", |s| s["endpoints"].is_null());
    eventually(WAIT, "empty Endpoints", || {
        cp.get(endpoints(), "default", "web").filter(|e| e.get("subsets").is_none())
    });

    // The Service goes: its slices (owned) and Endpoints go with it.
    cp.ok(&["delete", "service", "web"]);
    eventually(WAIT, "slices and Endpoints removed", || {
        (cp.slices("default", "web").is_empty() && cp.get(endpoints(), "default", "web").is_none()).then_some(())
    });
}

#[test]
fn publish_not_ready_and_large_services() {
    let cp = Cp::start();
    cp.node("n1", None);
    cp.create(
        services(),
        "default",
        json!({"metadata": {"name": "db"}, "spec": {"clusterIP": "None", "publishNotReadyAddresses": true,
            "selector": {"app": "db"}, "ports": [{"port": 5432}]}}),
    );
    cp.pod("default", "db-0", "db", "n1");
    cp.report("default", "db-0", "10.244.1.20", false);
    let slice = cp.slice_where("default", "db", "a not-ready but published endpoint", |s| by_pod(s).len() == 1);
    assert_eq!(by_pod(&slice)["db-0"]["conditions"], json!({"ready": true, "serving": false, "terminating": false}));
    assert_eq!(slice["metadata"]["labels"]["service.kubernetes.io/headless"], "");
    let ep = eventually(WAIT, "published Endpoints", || {
        cp.get(endpoints(), "default", "db").filter(|e| e.get("subsets").is_some())
    });
    assert_eq!(ips(&ep["subsets"][0]["addresses"]), ["10.244.1.20"]);

    // 150 pods: two slices, none over 100 endpoints.
    cp.create(
        services(),
        "default",
        json!({"metadata": {"name": "big"}, "spec": {"selector": {"app": "big"}, "ports": [{"port": 80}]}}),
    );
    for i in 0..150 {
        let name = format!("big-{i}");
        cp.pod("default", &name, "big", "n1");
        cp.report("default", &name, &format!("10.244.{}.{}", 100 + i / 200, i % 200 + 1), true);
    }
    let sizes = eventually(WAIT, "150 endpoints in slices", || {
        let mut sizes: Vec<usize> = cp.slices("default", "big").iter().map(|s| by_pod(s).len()).collect();
        sizes.sort_unstable();
        (sizes.iter().sum::<usize>() == 150).then_some(sizes)
    });
    assert!(sizes.iter().all(|n| *n <= 100) && sizes.len() == 2, "{sizes:?}");
}

#[test]
fn kubectl_expose_deployment_lists_ready_pods() {
    let cp = Cp::start();
    cp.node("n1", None);
    cp.ok(&["create", "deployment", "hello", "--image=busybox:1.36", "--port=8080", "--replicas=2"]);
    // No workload controllers here: the pods are made by hand, as the ReplicaSet would make them.
    for (name, ip) in [("hello-a", "10.244.1.31"), ("hello-b", "10.244.1.32"), ("hello-c", "10.244.1.33")] {
        cp.pod("default", name, "hello", "n1");
        cp.report("default", name, ip, name != "hello-c");
    }
    assert_eq!(
        cp.ok(&["expose", "deployment", "hello", "--port=80", "--target-port=8080", "--type=NodePort"]),
        "service/hello exposed\n"
    );
    let t = eventually(WAIT, "kubectl to list the slice with both ready pods", || {
        let t = Table::parse(&cp.ok(&["get", "endpointslices", "-l", "kubernetes.io/service-name=hello"]));
        (t.rows.len() == 1 && t.rows[0][t.col("ENDPOINTS")].contains("10.244.1.32")).then_some(t)
    });
    assert_eq!(t.headers, ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]);
    let row = &t.rows[0];
    assert!(row[0].starts_with("hello-"), "{row:?}");
    assert_eq!(row[t.col("ADDRESSTYPE")], "IPv4");
    assert_eq!(row[t.col("PORTS")], "8080");
    assert_eq!(row[t.col("ENDPOINTS")], "10.244.1.31,10.244.1.32,10.244.1.33");
    let slice = &cp.slices("default", "hello")[0];
    let ready: Vec<&str> = slice["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter(|e| e["conditions"]["ready"] == true)
        .map(|e| e["targetRef"]["name"].as_str().expect("name"))
        .collect();
    assert_eq!(ready, ["hello-a", "hello-b"]);
    let t = eventually(WAIT, "kubectl get endpoints", || {
        let t = Table::parse(&cp.ok(&["get", "endpoints", "hello"]));
        (t.cell("hello", "ENDPOINTS") == "10.244.1.31:8080,10.244.1.32:8080").then_some(t)
    });
    assert_eq!(t.names(), ["hello"]);
}

#[test]
fn default_service_account_in_every_namespace() {
    let cp = Cp::start();
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        eventually(WAIT, "default ServiceAccount in an initial namespace", || {
            cp.get(service_accounts(), ns, "default")
        });
    }
    cp.ok(&["create", "namespace", "team"]);
    eventually(WAIT, "default ServiceAccount in a new namespace", || cp.get(service_accounts(), "team", "default"));
    assert_eq!(cp.ok(&["get", "serviceaccounts", "-n", "team", "-o", "name"]), "serviceaccount/default\n");
    cp.ok(&["delete", "serviceaccount", "default", "-n", "team"]);
    eventually(WAIT, "default ServiceAccount re-created", || cp.get(service_accounts(), "team", "default"));

    // A terminating namespace gets none back.
    cp.create(configmaps(), "team", json!({"metadata": {"name": "held", "finalizers": ["keelson.test/hold"]}}));
    cp.ok(&["delete", "namespace", "team", "--wait=false"]);
    eventually(WAIT, "the namespace's ServiceAccount deleted", || {
        cp.get(service_accounts(), "team", "default").is_none().then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(cp.get(service_accounts(), "team", "default").is_none(), "re-created in a terminating namespace");
    cp.ok(&["patch", "configmap", "held", "-n", "team", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    // Content held by a finalizer is looked at again after upstream's 15 s estimate.
    eventually(Duration::from_secs(25), "the namespace gone", || {
        cp.get(namespaces(), "", "team").is_none().then_some(())
    });
}

/// A ConfigMap `name` owned by `owner` (a created object), in `default`.
fn owned(cp: &Cp, res: &Resource, name: &str, owner: &Value, block: bool, finalizers: &[&str]) -> Value {
    let oref = json!({"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"], "blockOwnerDeletion": block});
    let mut obj = json!({"metadata": {"name": name, "ownerReferences": [oref]}});
    if !finalizers.is_empty() {
        obj["metadata"]["finalizers"] = json!(finalizers);
    }
    cp.create(res, "default", obj)
}

fn cm(cp: &Cp, name: &str) -> Value {
    cp.create(configmaps(), "default", json!({"metadata": {"name": name}}))
}

#[test]
fn garbage_collection_background_foreground_orphan() {
    let cp = Cp::start();

    // Background: the owner goes at once, then its dependents.
    let owner = cm(&cp, "bg-owner");
    owned(&cp, configmaps(), "bg-a", &owner, false, &[]);
    owned(&cp, secrets(), "bg-b", &owner, true, &[]);
    cp.ok(&["delete", "configmap", "bg-owner"]);
    eventually(WAIT, "background dependents deleted", || {
        (cp.get(configmaps(), "default", "bg-a").is_none() && cp.get(secrets(), "default", "bg-b").is_none())
            .then_some(())
    });

    // A reference to an owner with another uid (deleted and re-created) is dangling.
    let old = cm(&cp, "phoenix");
    cp.ok(&["delete", "configmap", "phoenix"]);
    cm(&cp, "phoenix");
    owned(&cp, configmaps(), "ash", &old, false, &[]);
    eventually(WAIT, "dependent of a replaced owner deleted", || {
        cp.get(configmaps(), "default", "ash").is_none().then_some(())
    });
    assert!(cp.get(configmaps(), "default", "phoenix").is_some());

    // Two owners: one gone, one alive: the dependent stays, without the dangling reference.
    let live = cm(&cp, "live");
    let doomed = cm(&cp, "doomed");
    let both = owned(&cp, configmaps(), "shared", &live, false, &[]);
    let mut refs = both["metadata"]["ownerReferences"].as_array().expect("refs").clone();
    refs.push(json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "doomed", "uid": doomed["metadata"]["uid"]}));
    let patch = json!({"metadata": {"ownerReferences": refs}});
    cp.block(cp.client().patch(configmaps(), "default", "shared", PatchType::Merge, &patch, false))
        .expect("patch refs");
    cp.ok(&["delete", "configmap", "doomed"]);
    let shared = eventually(WAIT, "the dangling reference dropped", || {
        cp.get(configmaps(), "default", "shared")
            .filter(|o| o["metadata"]["ownerReferences"].as_array().is_some_and(|a| a.len() == 1))
    });
    assert_eq!(shared["metadata"]["ownerReferences"][0]["name"], "live");

    // A cluster-scoped owner of namespaced dependents.
    cp.node("gc-node", None);
    let node = cp.get(nodes(), "", "gc-node").expect("node");
    owned(&cp, configmaps(), "node-info", &node, false, &[]);
    cp.ok(&["delete", "node", "gc-node"]);
    eventually(WAIT, "dependent of a deleted node deleted", || {
        cp.get(configmaps(), "default", "node-info").is_none().then_some(())
    });

    // Foreground: the owner stays, with its finalizer, until its blocking dependents are gone.
    let owner = cm(&cp, "fg-owner");
    owned(&cp, configmaps(), "fg-held", &owner, true, &["keelson.test/hold"]);
    owned(&cp, configmaps(), "fg-free", &owner, false, &[]);
    assert_eq!(
        cp.ok(&["delete", "configmap", "fg-owner", "--cascade=foreground", "--wait=false"]),
        "configmap \"fg-owner\" deleted from default namespace\n"
    );
    let held = eventually(WAIT, "the blocking dependent marked for deletion", || {
        cp.get(configmaps(), "default", "fg-held").filter(|o| o["metadata"]["deletionTimestamp"].is_string())
    });
    assert_eq!(held["metadata"]["finalizers"], json!(["keelson.test/hold"]));
    eventually(WAIT, "the other dependent deleted", || {
        cp.get(configmaps(), "default", "fg-free").is_none().then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    let waiting = cp.get(configmaps(), "default", "fg-owner").expect("owner waits for its dependents");
    assert!(waiting["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(waiting["metadata"]["finalizers"], json!(["foregroundDeletion"]));
    cp.ok(&["patch", "configmap", "fg-held", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    eventually(WAIT, "the owner deleted after its dependents", || {
        cp.get(configmaps(), "default", "fg-owner").is_none().then_some(())
    });

    // Orphan: the owner goes, the dependents stay without the reference.
    let owner = cm(&cp, "or-owner");
    let keep = cm(&cp, "or-other-owner");
    owned(&cp, configmaps(), "or-a", &owner, true, &[]);
    let b = owned(&cp, secrets(), "or-b", &owner, false, &[]);
    let mut refs = b["metadata"]["ownerReferences"].as_array().expect("refs").clone();
    refs.push(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "or-other-owner", "uid": keep["metadata"]["uid"]}),
    );
    cp.block(cp.client().patch(
        secrets(),
        "default",
        "or-b",
        PatchType::Merge,
        &json!({"metadata": {"ownerReferences": refs}}),
        false,
    ))
    .expect("patch refs");
    cp.ok(&["delete", "configmap", "or-owner", "--cascade=orphan"]);
    assert!(cp.get(configmaps(), "default", "or-owner").is_none(), "kubectl waits for the orphaning owner to go");
    let a = cp.get(configmaps(), "default", "or-a").expect("orphaned dependent stays");
    assert!(a["metadata"].get("ownerReferences").is_none(), "{a}");
    let b = cp.get(secrets(), "default", "or-b").expect("orphaned dependent stays");
    assert_eq!(b["metadata"]["ownerReferences"].as_array().map(Vec::len), Some(1), "{b}");
    assert_eq!(b["metadata"]["ownerReferences"][0]["name"], "or-other-owner");
    std::thread::sleep(Duration::from_millis(300));
    assert!(cp.get(configmaps(), "default", "or-a").is_some(), "an orphan was collected");
}

#[test]
fn deleting_a_deployment_takes_its_replicaset_and_pods() {
    let cp = Cp::start();
    cp.ok(&["create", "deployment", "web", "--image=busybox:1.36", "--replicas=2"]);
    let deploy = cp.get(&registry::deployments::RESOURCE, "default", "web").expect("deployment");
    let rs = cp.create(
        &registry::replicasets::RESOURCE,
        "default",
        json!({"metadata": {"name": "web-5d4f7", "labels": {"app": "web"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                    "uid": deploy["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "busybox", "image": "busybox:1.36"}]}}}}),
    );
    for name in ["web-5d4f7-aaaaa", "web-5d4f7-bbbbb"] {
        cp.create(
            pods(),
            "default",
            json!({"metadata": {"name": name, "labels": {"app": "web"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d4f7",
                        "uid": rs["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]},
                "spec": {"containers": [{"name": "busybox", "image": "busybox:1.36"}]}}),
        );
    }
    // Foreground through the chain: kubectl waits until the deployment is gone, which is after
    // the ReplicaSet, which is after its pods.
    assert_eq!(
        cp.ok(&["delete", "deployment", "web", "--cascade=foreground"]),
        "deployment.apps \"web\" deleted from default namespace\n"
    );
    assert!(cp.get(&registry::replicasets::RESOURCE, "default", "web-5d4f7").is_none(), "the ReplicaSet went first");
    let out = cp.ok(&["get", "pods", "-o", "name"]);
    assert_eq!(out, "", "pods of the deleted deployment remain");
}

#[test]
fn namespace_deletion_cascades() {
    let cp = Cp::start();
    cp.node("n1", None);
    cp.ok(&["create", "namespace", "shop"]);
    cp.ok(&["create", "configmap", "settings", "--from-literal=a=b", "-n", "shop"]);
    cp.ok(&["create", "deployment", "cart", "--image=busybox:1.36", "-n", "shop"]);
    cp.ok(&["create", "service", "clusterip", "cart", "--tcp=80:8080", "-n", "shop"]);
    cp.ok(&["run", "loose", "--image=busybox:1.36", "-n", "shop"]);
    cp.pod("shop", "bound", "cart", "n1");
    cp.report("shop", "bound", "10.244.1.40", true);
    eventually(WAIT, "the cart slice", || (!cp.slices("shop", "cart").is_empty()).then_some(()));

    // The bound pod waits for its kubelet; until it is gone nothing else is deleted.
    assert_eq!(cp.ok(&["delete", "namespace", "shop", "--wait=false"]), "namespace \"shop\" deleted\n");
    eventually(WAIT, "the bound pod marked for deletion", || {
        cp.get(pods(), "shop", "bound").filter(|p| p["metadata"]["deletionTimestamp"].is_string())
    });
    eventually(WAIT, "the unbound pod deleted at once", || cp.get(pods(), "shop", "loose").is_none().then_some(()));
    let ns = eventually(WAIT, "the deletion conditions", || {
        cp.get(namespaces(), "", "shop").filter(|n| {
            n["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["type"] == "NamespaceContentRemaining" && c["status"] == "True"))
        })
    });
    let remaining = ns["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "NamespaceContentRemaining")
        .expect("condition")
        .clone();
    assert_eq!(remaining["reason"], "SomeResourcesRemain");
    assert_eq!(remaining["message"], "Some resources are remaining: pods. has 1 resource instances");
    assert_eq!(ns["status"]["phase"], "Terminating");
    assert!(cp.get(configmaps(), "shop", "settings").expect("configmap stays while pods remain")["metadata"]["deletionTimestamp"].is_null());

    // The kubelet finishes: everything goes, then the namespace.
    cp.finish_deletion("shop", "bound");
    eventually(WAIT, "the namespace gone", || cp.get(namespaces(), "", "shop").is_none().then_some(()));
    for res in
        [configmaps(), services(), slices(), endpoints(), service_accounts(), pods(), &registry::deployments::RESOURCE]
    {
        let (items, _) = cp.block(cp.client().list(res, "shop")).expect("list");
        assert!(items.is_empty(), "{} left in the deleted namespace: {items:?}", res.plural);
    }
}
