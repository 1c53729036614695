//! The real kubectl against an in-process control plane: namespaces, pods, discovery, `explain`,
//! watches, selectors and output formats (the tutorial's sections 2.2 and 2.3). Nothing runs
//! containers here, so pods stay Pending and unscheduled.

mod common;
mod kubectl_support;

use std::time::Duration;

use common::Cluster;
use kubectl_support::{Streaming, Table, assert_line, describe_field, eventually, stderr, stdout, tutorial_arg, yaml};
use serde_json::json;

const INITIAL_NAMESPACES: [&str; 4] = ["default", "kube-node-lease", "kube-public", "kube-system"];

#[test]
fn namespaces_initial_create_apply_and_delete_with_contents() {
    let c = Cluster::start();

    // `kubectl get namespace`: the four initial namespaces, Active.
    let t = Table::parse(&c.ok(&["get", "namespace"]));
    assert_eq!(t.headers, ["NAME", "STATUS", "AGE"]);
    assert_eq!(t.names(), INITIAL_NAMESPACES);
    for ns in INITIAL_NAMESPACES {
        assert_eq!(t.cell(ns, "STATUS"), "Active", "namespace {ns}");
    }
    let out = c.kubectl(&["get", "pods", "-n", "kube-system"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    assert_eq!(stderr(&out).trim(), "No resources found in kube-system namespace.");

    // The initial namespaces cannot be deleted.
    for ns in ["default", "kube-system", "kube-public"] {
        let err = c.fails(&["delete", "namespace", ns]);
        assert!(err.contains(&format!("namespaces \"{ns}\" is forbidden: this namespace may not be deleted")), "{err}");
    }

    // `kubectl create namespace test`.
    assert_eq!(c.ok(&["create", "namespace", "test"]), "namespace/test created\n");
    let ns = c.json(&["get", "namespace", "test"]);
    assert_eq!(ns["status"]["phase"], "Active");
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
    let err = c.fails(&["create", "namespace", "test"]);
    assert!(err.contains(r#"Error from server (AlreadyExists): namespaces "test" already exists"#), "{err}");

    // Objects in it, then `kubectl delete namespace test`: kubectl waits until the namespace is
    // gone, and everything in it went with it.
    c.ok(&["run", "p1", "--image=busybox:1.36", "-n", "test"]);
    c.ok(&["run", "p2", "--image=busybox:1.36", "-n", "test"]);
    c.ok(&["create", "configmap", "settings", "--from-literal=a=b", "-n", "test"]);
    assert_eq!(c.ok(&["get", "pods", "-n", "test", "-o", "name"]), "pod/p1\npod/p2\n");
    assert_eq!(c.ok(&["delete", "namespace", "test"]), "namespace \"test\" deleted\n");
    let err = c.fails(&["get", "namespace", "test"]);
    assert!(err.contains(r#"Error from server (NotFound): namespaces "test" not found"#), "{err}");
    let out = c.kubectl(&["get", "pods,configmaps", "-n", "test", "-o", "name"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "", "objects of the deleted namespace are gone");
    let all = c.json(&["get", "pods", "-A"]);
    let left: Vec<&serde_json::Value> =
        all["items"].as_array().expect("items").iter().filter(|p| p["metadata"]["namespace"] == "test").collect();
    assert!(left.is_empty(), "pods left in the deleted namespace: {left:?}");
    let err = c.fails(&["run", "p3", "--image=busybox:1.36", "-n", "test"]);
    assert!(err.contains(r#"namespaces "test" not found"#), "{err}");

    // The tutorial's manifest: `kubectl apply -f my-namespace.yaml`, `kubectl delete -f`.
    let manifest = tutorial_arg("my-namespace.yaml");
    assert_eq!(c.ok(&["apply", "-f", &manifest]), "namespace/test created\n");
    assert_eq!(c.ok(&["apply", "-f", &manifest]), "namespace/test unchanged\n");
    assert_eq!(Table::parse(&c.ok(&["get", "namespace", "test"])).cell("test", "STATUS"), "Active");
    assert_eq!(c.ok(&["delete", "-f", &manifest]), "namespace \"test\" deleted\n");
    let err = c.fails(&["get", "namespace", "test"]);
    assert!(err.contains(r#"namespaces "test" not found"#), "{err}");
}

#[test]
fn namespace_stays_terminating_until_its_contents_are_gone() {
    let c = Cluster::start();
    c.ok(&["create", "namespace", "hold"]);
    c.ok(&["create", "configmap", "held", "--from-literal=a=b", "-n", "hold"]);
    c.ok(&[
        "patch",
        "configmap",
        "held",
        "-n",
        "hold",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["keelson.test/hold"]}}"#,
    ]);

    // The configmap cannot go away while it has a finalizer, so neither can the namespace.
    assert_eq!(c.ok(&["delete", "namespace", "hold", "--wait=false"]), "namespace \"hold\" deleted\n");
    let t = Table::parse(&c.ok(&["get", "namespace", "hold"]));
    assert_eq!(t.cell("hold", "STATUS"), "Terminating");
    let ns = c.json(&["get", "namespace", "hold"]);
    assert!(ns["metadata"]["deletionTimestamp"].is_string(), "{ns}");
    assert_eq!(ns["status"]["phase"], "Terminating");
    let err = c.fails(&["run", "late", "--image=busybox:1.36", "-n", "hold"]);
    assert!(err.contains("because it is being terminated"), "{err}");
    let cm = eventually(Duration::from_secs(10), "the namespace's configmap to be marked for deletion", || {
        let cm = c.json(&["get", "configmap", "held", "-n", "hold"]);
        cm["metadata"]["deletionTimestamp"].is_string().then_some(cm)
    });
    assert_eq!(cm["metadata"]["finalizers"], json!(["keelson.test/hold"]));

    // Releasing the finalizer lets the namespace finish.
    c.ok(&["patch", "configmap", "held", "-n", "hold", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    let out = c.ok(&["wait", "--for=delete", "namespace/hold", "--timeout=20s"]);
    assert_eq!(out.trim(), "namespace/hold condition met");
    let err = c.fails(&["get", "namespace", "hold"]);
    assert!(err.contains(r#"namespaces "hold" not found"#), "{err}");
}

#[test]
fn pods_run_get_wide_all_namespaces_describe_delete() {
    let c = Cluster::start();

    // `kubectl run mynginx --image=nginx:1.14.2`
    assert_eq!(c.ok(&["run", "mynginx", "--image=nginx:1.14.2"]), "pod/mynginx created\n");
    let t = Table::parse(&c.ok(&["get", "pod"]));
    assert_eq!(t.headers, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert_eq!(t.names(), ["mynginx"]);
    assert_eq!(t.cell("mynginx", "READY"), "0/1");
    assert_eq!(t.cell("mynginx", "STATUS"), "Pending");
    assert_eq!(t.cell("mynginx", "RESTARTS"), "0");

    // `-owide`: no node and no IP yet.
    let t = Table::parse(&c.ok(&["get", "pod", "-owide"]));
    assert_eq!(
        t.headers,
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE", "READINESS GATES"]
    );
    for col in ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"] {
        assert_eq!(t.cell("mynginx", col), "<none>", "column {col}");
    }

    // `-n <namespace>` and `-A`.
    c.ok(&["create", "namespace", "dev"]);
    c.ok(&["run", "web", "--image=busybox:1.36", "-n", "dev"]);
    assert_eq!(Table::parse(&c.ok(&["get", "pod", "-owide", "-n", "dev"])).names(), ["web"]);
    assert_eq!(Table::parse(&c.ok(&["get", "pod"])).names(), ["mynginx"]);
    let t = Table::parse(&c.ok(&["get", "pods", "-A"]));
    assert_eq!(t.headers, ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    let pairs: Vec<(String, String)> = t.rows.iter().map(|r| (r[0].clone(), r[1].clone())).collect();
    assert_eq!(pairs, [("default".to_string(), "mynginx".to_string()), ("dev".to_string(), "web".to_string())]);

    // `kubectl describe pod mynginx`
    let d = c.ok(&["describe", "pod", "mynginx"]);
    assert_eq!(describe_field(&d, "Name").as_deref(), Some("mynginx"), "{d}");
    assert_eq!(describe_field(&d, "Namespace").as_deref(), Some("default"), "{d}");
    assert_eq!(describe_field(&d, "Labels").as_deref(), Some("run=mynginx"), "{d}");
    assert_eq!(describe_field(&d, "Status").as_deref(), Some("Pending"), "{d}");
    assert_eq!(describe_field(&d, "Service Account").as_deref(), Some("default"), "{d}");
    assert_eq!(describe_field(&d, "Node").as_deref(), Some("<none>"), "{d}");
    assert_eq!(describe_field(&d, "QoS Class").as_deref(), Some("BestEffort"), "{d}");
    assert_line(&d, &["Containers:"]);
    assert_line(&d, &["mynginx:"]);
    assert_line(&d, &["Image:", "nginx:1.14.2"]);
    assert!(d.lines().any(|l| l.starts_with("Events:")), "{d}");

    // `kubectl delete pod mynginx`
    assert_eq!(c.ok(&["delete", "pod", "mynginx"]), "pod \"mynginx\" deleted from default namespace\n");
    let err = c.fails(&["get", "pod", "mynginx"]);
    assert!(err.contains(r#"Error from server (NotFound): pods "mynginx" not found"#), "{err}");
    let err = c.fails(&["delete", "pod", "mynginx"]);
    assert!(err.contains(r#"pods "mynginx" not found"#), "{err}");
}

#[test]
fn pod_manifests_apply_describe_defaults_and_delete() {
    let c = Cluster::start();

    // `kubectl apply -f nginx-pod.yaml`
    let nginx = tutorial_arg("nginx-pod.yaml");
    assert_eq!(c.ok(&["apply", "-f", &nginx]), "pod/mynginx created\n");
    assert_eq!(c.ok(&["apply", "-f", &nginx]), "pod/mynginx unchanged\n");
    let pod = yaml(&c.ok(&["get", "pod", "mynginx", "-o", "yaml"]));
    assert_eq!(pod["metadata"]["labels"], json!({"run": "mynginx"}));
    let spec = &pod["spec"];
    assert_eq!(spec["restartPolicy"], "Always");
    assert_eq!(spec["terminationGracePeriodSeconds"], 30);
    assert_eq!(spec["dnsPolicy"], "ClusterFirst");
    assert_eq!(spec["schedulerName"], "default-scheduler");
    assert_eq!(spec["serviceAccountName"], "default");
    assert_eq!(spec["securityContext"], json!({}));
    let ctr = &spec["containers"][0];
    assert_eq!(ctr["name"], "nginx");
    assert_eq!(ctr["image"], "nginx:1.14.2");
    assert_eq!(ctr["imagePullPolicy"], "IfNotPresent", "a tagged image is pulled if not present");
    assert_eq!(ctr["ports"], json!([{"containerPort": 80, "protocol": "TCP"}]));
    assert_eq!(ctr["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(ctr["terminationMessagePolicy"], "File");
    assert_eq!(pod["status"]["phase"], "Pending");
    assert_eq!(pod["status"]["qosClass"], "BestEffort");
    assert!(pod["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"].is_string());

    // `kubectl delete -f nginx-pod.yaml`
    assert_eq!(c.ok(&["delete", "-f", &nginx]), "pod \"mynginx\" deleted from default namespace\n");
    assert!(c.fails(&["get", "pod", "mynginx"]).contains(r#"pods "mynginx" not found"#));

    // The two-container pod: `kubectl describe pod myapp` shows both containers.
    assert_eq!(c.ok(&["apply", "-f", &tutorial_arg("myapp-pod.yaml")]), "pod/myapp created\n");
    assert_eq!(Table::parse(&c.ok(&["get", "pod", "myapp"])).cell("myapp", "READY"), "0/2");
    let d = c.ok(&["describe", "pod", "myapp"]);
    assert_line(&d, &["nginx:"]);
    assert_line(&d, &["Image:", "nginx:1.14.2"]);
    assert_line(&d, &["tomcat:"]);
    assert_line(&d, &["Image:", "tomcat:9.0.55"]);
    let names = c.ok(&["get", "pod", "myapp", "-o", "jsonpath={.spec.containers[*].name}"]);
    assert_eq!(names, "nginx tomcat");

    // imagePullPolicy defaults: Always for :latest or no tag, IfNotPresent otherwise.
    let digest = format!("busybox@sha256:{}", "a".repeat(64));
    for (name, image, policy) in [
        ("latest", "busybox:latest", "Always"),
        ("untagged", "busybox", "Always"),
        ("registry-port", "localhost:5000/busybox", "Always"),
        ("registry-port-tag", "localhost:5000/busybox:1.36", "IfNotPresent"),
        ("digest", digest.as_str(), "IfNotPresent"),
    ] {
        c.ok(&["run", name, &format!("--image={image}")]);
        let got = c.ok(&["get", "pod", name, "-o", "jsonpath={.spec.containers[0].imagePullPolicy}"]);
        assert_eq!(got, policy, "imagePullPolicy of {image}");
    }
}

#[test]
fn discovery_api_resources_versions_and_explain() {
    let c = Cluster::start();

    let t = Table::parse(&c.ok(&["api-resources"]));
    assert_eq!(t.headers, ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]);
    let find = |name: &str, version: &str| -> Vec<String> {
        t.rows
            .iter()
            .find(|r| r[0] == name && r[2] == version)
            .unwrap_or_else(|| panic!("api-resources has no {name} in {version}: {:?}", t.rows))
            .clone()
    };
    for (name, short, version, namespaced, kind) in [
        ("pods", "po", "v1", "true", "Pod"),
        ("services", "svc", "v1", "true", "Service"),
        ("configmaps", "cm", "v1", "true", "ConfigMap"),
        ("secrets", "", "v1", "true", "Secret"),
        ("namespaces", "ns", "v1", "false", "Namespace"),
        ("nodes", "no", "v1", "false", "Node"),
        ("persistentvolumes", "pv", "v1", "false", "PersistentVolume"),
        ("persistentvolumeclaims", "pvc", "v1", "true", "PersistentVolumeClaim"),
        ("serviceaccounts", "sa", "v1", "true", "ServiceAccount"),
        ("deployments", "deploy", "apps/v1", "true", "Deployment"),
        ("replicasets", "rs", "apps/v1", "true", "ReplicaSet"),
        ("statefulsets", "sts", "apps/v1", "true", "StatefulSet"),
        ("daemonsets", "ds", "apps/v1", "true", "DaemonSet"),
        ("ingresses", "ing", "networking.k8s.io/v1", "true", "Ingress"),
        ("storageclasses", "sc", "storage.k8s.io/v1", "false", "StorageClass"),
        ("clusterroles", "", "rbac.authorization.k8s.io/v1", "false", "ClusterRole"),
        ("roles", "", "rbac.authorization.k8s.io/v1", "true", "Role"),
    ] {
        assert_eq!(find(name, version), [name, short, version, namespaced, kind]);
    }
    let cluster_scoped = Table::parse(&c.ok(&["api-resources", "--namespaced=false"]));
    assert!(cluster_scoped.names().contains(&"namespaces".to_string()));
    assert!(!cluster_scoped.names().contains(&"pods".to_string()));
    let apps = Table::parse(&c.ok(&["api-resources", "--api-group=apps"]));
    assert!(apps.rows.iter().all(|r| r[2] == "apps/v1"), "{:?}", apps.rows);
    assert!(apps.names().contains(&"deployments".to_string()));

    let versions: Vec<String> = c.ok(&["api-versions"]).lines().map(str::to_string).collect();
    for v in [
        "v1",
        "apps/v1",
        "batch/v1",
        "networking.k8s.io/v1",
        "storage.k8s.io/v1",
        "rbac.authorization.k8s.io/v1",
        "coordination.k8s.io/v1",
    ] {
        assert!(versions.iter().any(|x| x == v), "api-versions lacks {v}: {versions:?}");
    }
    let mut sorted = versions.clone();
    sorted.sort();
    assert_eq!(versions, sorted, "api-versions prints sorted");

    // `kubectl explain` reads the server's OpenAPI v3 documents.
    let e = c.ok(&["explain", "pods"]);
    assert_line(&e, &["KIND:", "Pod"]);
    assert_line(&e, &["VERSION:", "v1"]);
    assert!(e.contains("Pod is a collection of containers that can run on a host."), "{e}");
    assert_line(&e, &["FIELDS:"]);
    assert_line(&e, &["spec", "<PodSpec>"]);
    assert_line(&e, &["metadata", "<ObjectMeta>"]);
    assert_line(&e, &["status", "<PodStatus>"]);

    let e = c.ok(&["explain", "deployment.spec.template.spec.containers"]);
    assert_line(&e, &["GROUP:", "apps"]);
    assert_line(&e, &["KIND:", "Deployment"]);
    assert_line(&e, &["VERSION:", "v1"]);
    assert!(e.lines().any(|l| l.starts_with("FIELD: containers <[]Container>")), "{e}");
    assert_line(&e, &["name", "<string>", "-required-"]);
    assert_line(&e, &["image", "<string>"]);
    assert_line(&e, &["ports", "<[]ContainerPort>"]);
    assert_line(&e, &["env", "<[]EnvVar>"]);

    let e = c.ok(&["explain", "svc.spec.ports"]);
    assert_line(&e, &["KIND:", "Service"]);
    assert!(e.lines().any(|l| l.starts_with("FIELD: ports <[]ServicePort>")), "{e}");
    assert_line(&e, &["port", "<integer>", "-required-"]);
    assert_line(&e, &["nodePort", "<integer>"]);
    assert_line(&e, &["targetPort", "<IntOrString>"]);

    let err = c.fails(&["explain", "pods.spec.nosuchfield"]);
    assert!(err.contains("field \"nosuchfield\" does not exist"), "{err}");
}

#[test]
fn get_watch_streams_added_modified_and_deleted() {
    let c = Cluster::start();
    c.ok(&["run", "w0", "--image=busybox:1.36"]);
    let limit = Duration::from_secs(15);

    // `kubectl get pods -w --output-watch-events`: the initial list, then every change.
    let mut watch = Streaming::spawn(&c, &["get", "pods", "-w", "--output-watch-events"]);
    let header = watch.line_matching(limit, "header", |l| l.starts_with("EVENT"));
    assert_eq!(header.split_whitespace().collect::<Vec<_>>(), ["EVENT", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    let tokens = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    let first = watch.line_matching(limit, "ADDED w0", |l| l.split_whitespace().take(2).eq(["ADDED", "w0"]));
    assert_eq!(tokens(&first)[2..5], ["0/1", "Pending", "0"]);

    c.ok(&["run", "w1", "--image=busybox:1.36"]);
    watch.line_matching(limit, "ADDED w1", |l| l.split_whitespace().take(2).eq(["ADDED", "w1"]));
    c.ok(&["label", "pod", "w1", "seen=yes"]);
    watch.line_matching(limit, "MODIFIED w1", |l| l.split_whitespace().take(2).eq(["MODIFIED", "w1"]));
    c.ok(&["delete", "pod", "w1"]);
    watch.line_matching(limit, "DELETED w1", |l| l.split_whitespace().take(2).eq(["DELETED", "w1"]));
    drop(watch);

    // Plain `kubectl get pod -w`: the table, then one line per change.
    let mut watch = Streaming::spawn(&c, &["get", "pod", "-w"]);
    let header = watch.line_matching(limit, "header", |l| l.starts_with("NAME"));
    assert_eq!(header.split_whitespace().collect::<Vec<_>>(), ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    watch.line_matching(limit, "w0", |l| l.split_whitespace().next() == Some("w0"));
    c.ok(&["run", "w2", "--image=busybox:1.36"]);
    let line = watch.line_matching(limit, "w2", |l| l.split_whitespace().next() == Some("w2"));
    assert_eq!(tokens(&line)[1..4], ["0/1", "Pending", "0"]);
    drop(watch);

    // A watch on one object by name.
    let mut watch = Streaming::spawn(&c, &["get", "pod", "w2", "-w", "-o", "name"]);
    watch.line_matching(limit, "pod/w2", |l| l == "pod/w2");
    c.ok(&["annotate", "pod", "w2", "note=changed"]);
    watch.line_matching(limit, "pod/w2 again after a change", |l| l == "pod/w2");
}

#[test]
fn selectors_output_formats_and_delete_all() {
    let c = Cluster::start();
    c.ok(&["run", "a1", "--image=busybox:1.36", "--labels=tier=a,app=demo"]);
    c.ok(&["run", "b1", "--image=busybox:1.36", "--labels=tier=b,app=demo"]);
    c.ok(&["run", "c1", "--image=busybox:1.36", "--labels=tier=c"]);

    // Label selectors (`-l`).
    assert_eq!(c.ok(&["get", "pods", "-l", "tier=a", "-o", "name"]), "pod/a1\n");
    assert_eq!(c.ok(&["get", "pods", "-l", "tier in (a,b)", "-o", "name"]), "pod/a1\npod/b1\n");
    assert_eq!(c.ok(&["get", "pods", "-l", "tier!=a,app=demo", "-o", "name"]), "pod/b1\n");
    assert_eq!(c.ok(&["get", "pods", "-l", "!app", "-o", "name"]), "pod/c1\n");
    let t = Table::parse(&c.ok(&["get", "pods", "-l", "app", "--show-labels"]));
    assert_eq!(t.cell("a1", "LABELS"), "app=demo,tier=a");
    let t = Table::parse(&c.ok(&["get", "pods", "-L", "tier"]));
    assert_eq!(t.cell("c1", "TIER"), "c");

    // Field selectors.
    assert_eq!(c.ok(&["get", "pods", "--field-selector", "metadata.name=b1", "-o", "name"]), "pod/b1\n");
    assert_eq!(
        c.ok(&["get", "pods", "--field-selector", "status.phase=Pending", "-o", "name"]),
        "pod/a1\npod/b1\npod/c1\n"
    );
    assert_eq!(c.ok(&["get", "pods", "--field-selector", "spec.nodeName=", "-o", "name"]), "pod/a1\npod/b1\npod/c1\n");
    let out = c.kubectl(&["get", "pods", "--field-selector", "status.phase=Running"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    assert_eq!(stderr(&out).trim(), "No resources found in default namespace.");
    assert_eq!(
        c.ok(&["get", "pods", "-l", "app=demo", "--field-selector", "metadata.name!=a1", "-o", "name"]),
        "pod/b1\n"
    );
    let err = c.fails(&["get", "pods", "--field-selector", "foo=bar"]);
    assert!(err.contains("Error from server (BadRequest)"), "{err}");
    assert!(err.contains("field label not supported: foo"), "{err}");

    // Output formats.
    let list = c.json(&["get", "pods"]);
    assert_eq!(list["kind"], "List");
    assert_eq!(list["apiVersion"], "v1");
    let names: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["a1", "b1", "c1"]);
    assert!(list["items"].as_array().expect("items").iter().all(|p| p["kind"] == "Pod" && p["apiVersion"] == "v1"));
    let one = c.json(&["get", "pod", "a1"]);
    assert_eq!(one["kind"], "Pod");
    assert_eq!(one["metadata"]["labels"], json!({"app": "demo", "tier": "a"}));
    let one = yaml(&c.ok(&["get", "pod", "a1", "-o", "yaml"]));
    assert_eq!(one["spec"]["containers"][0]["image"], "busybox:1.36");
    assert_eq!(c.ok(&["get", "pods", "-o", "jsonpath={.items[*].metadata.name}"]), "a1 b1 c1");
    let cc = c.ok(&[
        "get",
        "pods",
        "-o",
        "custom-columns=NAME:.metadata.name,IMAGE:.spec.containers[0].image,TIER:.metadata.labels.tier",
    ]);
    let t = Table::parse(&cc);
    assert_eq!(t.headers, ["NAME", "IMAGE", "TIER"]);
    assert_eq!(t.rows[2], ["c1", "busybox:1.36", "c"]);
    let t = Table::parse(&c.ok(&["get", "pods", "-o", "wide", "-l", "tier=b"]));
    assert_eq!(t.names(), ["b1"]);
    assert_eq!(t.cell("b1", "NODE"), "<none>");
    assert!(c.ok(&["get", "pods", "--no-headers"]).lines().all(|l| !l.starts_with("NAME")));
    let s = c.ok(&["get", "pods", "--sort-by=.metadata.name", "-o", "name"]);
    assert_eq!(s, "pod/a1\npod/b1\npod/c1\n");

    // `kubectl delete -l`, then `kubectl delete --all`.
    assert_eq!(c.ok(&["delete", "pods", "-l", "tier=c"]), "pod \"c1\" deleted from default namespace\n");
    assert_eq!(
        c.ok(&["delete", "pods", "--all"]),
        "pod \"a1\" deleted from default namespace\npod \"b1\" deleted from default namespace\n"
    );
    let out = c.kubectl(&["get", "pods"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out).trim(), "No resources found in default namespace.");
}
