//! The real kubectl against an in-process control plane: Deployments and Services (the
//! tutorial's sections 2.4 and 2.5) at the API level. No controllers run here, so Deployments get
//! no ReplicaSets or Pods and their status stays empty unless a test writes it.

mod common;
mod kubectl_support;

use std::time::Duration;

use common::Cluster;
use kubectl_support::{Streaming, Table, arg, assert_line, describe_field, stderr, stdout, tutorial_text, yaml};
use serde_json::json;

fn replicas(c: &Cluster, deploy: &str) -> String {
    c.ok(&["get", "deployment", deploy, "-o", "jsonpath={.spec.replicas}"])
}

fn container_names(c: &Cluster, deploy: &str) -> String {
    c.ok(&["get", "deployment", deploy, "-o", "jsonpath={.spec.template.spec.containers[*].name}"])
}

/// Environment for `kubectl edit` with `script` as the editor; edit buffers go to `tmp`.
fn editor_env<'a>(script: &'a str, tmp: &'a str) -> [(&'a str, &'a str); 4] {
    [("KUBE_EDITOR", script), ("EDITOR", script), ("SHELL", "/bin/sh"), ("TMPDIR", tmp)]
}

#[test]
fn deployment_create_scale_edit_set_image_and_delete() {
    let c = Cluster::start_standalone();

    // `kubectl create deployment my-tomcat --image=tomcat:9.0.55 --replicas=3` (a protobuf body).
    assert_eq!(
        c.ok(&["create", "deployment", "my-tomcat", "--image=tomcat:9.0.55", "--replicas=3"]),
        "deployment.apps/my-tomcat created\n"
    );
    let t = Table::parse(&c.ok(&["get", "deployment"]));
    assert_eq!(t.headers, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    assert_eq!(t.names(), ["my-tomcat"]);
    assert_eq!(t.cell("my-tomcat", "READY"), "0/3");
    assert_eq!(t.cell("my-tomcat", "UP-TO-DATE"), "0");
    assert_eq!(t.cell("my-tomcat", "AVAILABLE"), "0");
    let t = Table::parse(&c.ok(&["get", "deploy", "-o", "wide"]));
    assert_eq!(t.cell("my-tomcat", "CONTAINERS"), "tomcat");
    assert_eq!(t.cell("my-tomcat", "IMAGES"), "tomcat:9.0.55");
    assert_eq!(t.cell("my-tomcat", "SELECTOR"), "app=my-tomcat");

    // Defaults, as `-o yaml` shows them.
    let d = yaml(&c.ok(&["get", "deployment", "my-tomcat", "-o", "yaml"]));
    assert_eq!(d["apiVersion"], "apps/v1");
    assert_eq!(d["metadata"]["labels"], json!({"app": "my-tomcat"}));
    assert_eq!(d["metadata"]["generation"], 1);
    let spec = &d["spec"];
    assert_eq!(spec["replicas"], 3);
    assert_eq!(spec["selector"], json!({"matchLabels": {"app": "my-tomcat"}}));
    assert_eq!(
        spec["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    );
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(spec["progressDeadlineSeconds"], 600);
    assert_eq!(spec["template"]["metadata"]["labels"], json!({"app": "my-tomcat"}));
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Always");
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    assert_eq!(pod["dnsPolicy"], "ClusterFirst");
    assert_eq!(pod["schedulerName"], "default-scheduler");
    assert_eq!(pod["containers"][0]["name"], "tomcat");
    assert_eq!(pod["containers"][0]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(pod["containers"][0]["terminationMessagePath"], "/dev/termination-log");

    // `kubectl scale --replicas=5`, then back to 3.
    assert_eq!(c.ok(&["scale", "--replicas=5", "deployment", "my-tomcat"]), "deployment.apps/my-tomcat scaled\n");
    assert_eq!(replicas(&c, "my-tomcat"), "5");
    assert_eq!(Table::parse(&c.ok(&["get", "deployment", "my-tomcat"])).cell("my-tomcat", "READY"), "0/5");
    assert_eq!(c.ok(&["scale", "--replicas=3", "deployment", "my-tomcat"]), "deployment.apps/my-tomcat scaled\n");
    assert_eq!(replicas(&c, "my-tomcat"), "3");
    let scale = c.ok(&["get", "--raw", "/apis/apps/v1/namespaces/default/deployments/my-tomcat/scale"]);
    let scale: serde_json::Value = serde_json::from_str(&scale).expect("scale is JSON");
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["apiVersion"], "autoscaling/v1");
    assert_eq!(scale["spec"]["replicas"], 3);
    assert_eq!(scale["status"]["selector"], "app=my-tomcat");
    let err = c.fails(&["scale", "--current-replicas=2", "--replicas=4", "deployment", "my-tomcat"]);
    assert!(err.contains("Expected replicas to be 2, was 3"), "{err}");

    // `kubectl edit deployment my-tomcat`, changing replicas. An editor command with quotes is run
    // as `$SHELL -c "$KUBE_EDITOR <file>"` (KUBE_EDITOR wins over EDITOR).
    let tmp = c.dir.path().to_str().expect("temp dir is UTF-8").to_string();
    let editor = |script: &str| c.kubectl_in(&["edit", "deployment", "my-tomcat"], None, &editor_env(script, &tmp));
    let out = editor("sed -i 's/^  replicas: 3$/  replicas: 4/'");
    assert!(out.status.success(), "kubectl edit failed: {}", stderr(&out));
    assert_eq!(stdout(&out), "deployment.apps/my-tomcat edited\n");
    assert_eq!(replicas(&c, "my-tomcat"), "4");
    // An editor that changes nothing cancels the edit.
    let out = editor("true");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("Edit cancelled, no changes made."), "{}", stderr(&out));
    // An invalid edit is refused with the server's validation message.
    let out = editor("sed -i 's/^  replicas: 4$/  replicas: -1/'");
    assert!(!out.status.success(), "an invalid edit is refused");
    assert!(stderr(&out).contains(r#"deployments.apps "my-tomcat" is invalid"#), "{}", stderr(&out));
    assert_eq!(replicas(&c, "my-tomcat"), "4");

    // Rolling update: `kubectl set image deployment my-tomcat tomcat=tomcat:10.1.11 --record`.
    let out = c.kubectl(&["set", "image", "deployment", "my-tomcat", "tomcat=tomcat:10.1.11", "--record"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "deployment.apps/my-tomcat image updated\n");
    assert_eq!(
        c.ok(&["get", "deployment", "my-tomcat", "-o", "jsonpath={.spec.template.spec.containers[0].image}"]),
        "tomcat:10.1.11"
    );
    let cause = c.ok(&[
        "get",
        "deployment",
        "my-tomcat",
        "-o",
        "jsonpath={.metadata.annotations.kubernetes\\.io/change-cause}",
    ]);
    assert!(cause.contains("set image deployment my-tomcat tomcat=tomcat:10.1.11"), "change-cause: {cause:?}");
    let d = c.ok(&["describe", "deployment", "my-tomcat"]);
    assert_eq!(describe_field(&d, "Name").as_deref(), Some("my-tomcat"));
    assert_eq!(describe_field(&d, "Selector").as_deref(), Some("app=my-tomcat"));
    assert_eq!(describe_field(&d, "StrategyType").as_deref(), Some("RollingUpdate"));
    assert_eq!(describe_field(&d, "RollingUpdateStrategy").as_deref(), Some("25% max unavailable, 25% max surge"));
    assert!(describe_field(&d, "Replicas").is_some_and(|r| r.starts_with("4 desired |")), "Replicas line of:\n{d}");
    assert_line(&d, &["tomcat:"]);
    assert_line(&d, &["Image:", "tomcat:10.1.11"]);
    let err = c.fails(&["set", "image", "deployment", "my-tomcat", "nosuch=tomcat:1"]);
    assert!(err.contains("unable to find container named \"nosuch\""), "{err}");

    // `kubectl delete deployment my-tomcat`
    assert_eq!(
        c.ok(&["delete", "deployment", "my-tomcat"]),
        "deployment.apps \"my-tomcat\" deleted from default namespace\n"
    );
    let err = c.fails(&["get", "deployment", "my-tomcat"]);
    assert!(err.contains(r#"Error from server (NotFound): deployments.apps "my-tomcat" not found"#), "{err}");
}

#[test]
fn deployment_label_annotate_and_the_three_patch_types() {
    let c = Cluster::start_standalone();
    c.ok(&["create", "deployment", "web", "--image=busybox:1.36"]);
    assert_eq!(container_names(&c, "web"), "busybox");

    // Labels.
    assert_eq!(c.ok(&["label", "deployment", "web", "tier=frontend"]), "deployment.apps/web labeled\n");
    assert_eq!(c.ok(&["get", "deploy", "-l", "tier=frontend", "-o", "name"]), "deployment.apps/web\n");
    let err = c.fails(&["label", "deployment", "web", "tier=backend"]);
    assert!(err.contains("'tier' already has a value (frontend), and --overwrite is false"), "{err}");
    assert_eq!(c.ok(&["label", "--overwrite", "deployment", "web", "tier=backend"]), "deployment.apps/web labeled\n");
    assert_eq!(c.ok(&["get", "deploy", "web", "-o", "jsonpath={.metadata.labels.tier}"]), "backend");
    assert_eq!(c.ok(&["label", "deployment", "web", "tier-"]), "deployment.apps/web unlabeled\n");
    let labels = c.json(&["get", "deploy", "web"])["metadata"]["labels"].clone();
    assert_eq!(labels, json!({"app": "web"}));

    // Annotations.
    assert_eq!(c.ok(&["annotate", "deployment", "web", "owner=alice"]), "deployment.apps/web annotated\n");
    assert_eq!(c.ok(&["get", "deploy", "web", "-o", "jsonpath={.metadata.annotations.owner}"]), "alice");
    let d = c.ok(&["describe", "deployment", "web"]);
    assert_eq!(describe_field(&d, "Annotations").as_deref(), Some("owner: alice"), "{d}");
    assert_eq!(c.ok(&["annotate", "deployment", "web", "owner-"]), "deployment.apps/web annotated\n");
    assert_eq!(c.ok(&["get", "deploy", "web", "-o", "jsonpath={.metadata.annotations.owner}"]), "");

    // Strategic merge patch (the default): containers merge by name.
    let add_sidecar = r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"busybox:1.37"}]}}}}"#;
    assert_eq!(c.ok(&["patch", "deployment", "web", "-p", add_sidecar]), "deployment.apps/web patched\n");
    // Items the patch brings come first, then the live-only ones, each in their own order
    // (apimachinery's normalizeElementOrder).
    assert_eq!(container_names(&c, "web"), "sidecar busybox");
    let retag = r#"{"spec":{"template":{"spec":{"containers":[{"name":"busybox","image":"busybox:1.37"}]}}}}"#;
    c.ok(&["patch", "deployment", "web", "--type=strategic", "-p", retag]);
    let d = c.json(&["get", "deployment", "web"]);
    let ctrs = &d["spec"]["template"]["spec"]["containers"];
    assert_eq!(ctrs.as_array().map(Vec::len), Some(2), "{ctrs}");
    let busybox = ctrs.as_array().and_then(|v| v.iter().find(|x| x["name"] == "busybox")).expect("busybox container");
    assert_eq!(busybox["image"], "busybox:1.37");
    assert_eq!(busybox["imagePullPolicy"], "IfNotPresent", "fields the patch does not name are kept");
    let drop_sidecar = r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","$patch":"delete"}]}}}}"#;
    c.ok(&["patch", "deployment", "web", "-p", drop_sidecar]);
    assert_eq!(container_names(&c, "web"), "busybox");
    assert_eq!(
        c.ok(&["patch", "deployment", "web", "-p", retag]),
        "deployment.apps/web patched (no change)\n",
        "a patch that changes nothing"
    );

    // JSON merge patch: lists are replaced whole.
    let replace =
        r#"{"spec":{"replicas":2,"template":{"spec":{"containers":[{"name":"only","image":"busybox:1.36"}]}}}}"#;
    assert_eq!(c.ok(&["patch", "deployment", "web", "--type=merge", "-p", replace]), "deployment.apps/web patched\n");
    assert_eq!(container_names(&c, "web"), "only");
    assert_eq!(replicas(&c, "web"), "2");

    // JSON patch (RFC 6902).
    let ops = r#"[{"op":"replace","path":"/spec/replicas","value":7},{"op":"add","path":"/metadata/labels/patched","value":"json"}]"#;
    assert_eq!(c.ok(&["patch", "deployment", "web", "--type=json", "-p", ops]), "deployment.apps/web patched\n");
    assert_eq!(replicas(&c, "web"), "7");
    assert_eq!(c.ok(&["get", "deploy", "web", "-o", "jsonpath={.metadata.labels.patched}"]), "json");
    let failing =
        r#"[{"op":"test","path":"/spec/replicas","value":99},{"op":"replace","path":"/spec/replicas","value":1}]"#;
    c.fails(&["patch", "deployment", "web", "--type=json", "-p", failing]);
    assert_eq!(replicas(&c, "web"), "7", "a failed JSON patch changes nothing");

    // A patch that makes the object invalid is refused with 422.
    let err = c.fails(&["patch", "deployment", "web", "--type=merge", "-p", r#"{"spec":{"replicas":-1}}"#]);
    assert!(err.contains(r#"The Deployment "web" is invalid"#), "{err}");
    assert!(err.contains("spec.replicas: Invalid value: -1: must be greater than or equal to 0"), "{err}");
    assert_eq!(replicas(&c, "web"), "7");
}

#[test]
fn deployment_apply_is_idempotent_three_way_and_diffable() {
    let c = Cluster::start_standalone();
    let original = tutorial_text("my-tomcat-deployment.yaml");
    let file = c.write("my-tomcat.yaml", &original);
    let file = arg(&file);

    assert_eq!(c.ok(&["apply", "-f", file]), "deployment.apps/my-tomcat created\n");
    assert_eq!(c.ok(&["apply", "-f", file]), "deployment.apps/my-tomcat unchanged\n");
    let same = c.kubectl(&["diff", "-f", file]);
    assert_eq!(same.status.code(), Some(0), "diff of an applied file: {}", stderr(&same));
    assert_eq!(stdout(&same), "");

    // Changes made outside the file.
    c.ok(&[
        "patch",
        "deployment",
        "my-tomcat",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"busybox:1.36"}]}}}}"#,
    ]);
    c.ok(&["annotate", "deployment", "my-tomcat", "note=keep"]);
    c.ok(&["label", "deployment", "my-tomcat", "extra=live"]);
    c.ok(&["scale", "deployment", "my-tomcat", "--replicas=5"]);

    // The file changes: a new image and a new label.
    let edited = original.replace("image: tomcat:9.0.55", "image: tomcat:10.1.11").replace(
        "  labels:\n    app: my-tomcat\n  name: my-tomcat",
        "  labels:\n    app: my-tomcat\n    tier: web\n  name: my-tomcat",
    );
    assert_ne!(edited, original);
    c.write("my-tomcat.yaml", &edited);
    let diff = c.kubectl(&["diff", "-f", file]);
    assert_eq!(diff.status.code(), Some(1), "diff with differences exits 1: {}", stderr(&diff));
    let text = stdout(&diff);
    let changed = |sign: char, needle: &str| text.lines().any(|l| l.starts_with(sign) && l.contains(needle));
    assert!(changed('-', "image: tomcat:9.0.55"), "{text}");
    assert!(changed('+', "image: tomcat:10.1.11"), "{text}");
    assert!(changed('+', "tier: web"), "{text}");
    assert!(changed('-', "replicas: 5") && changed('+', "replicas: 3"), "{text}");
    assert!(!changed('-', "sidecar"), "apply keeps the live-only container: {text}");

    assert_eq!(c.ok(&["apply", "-f", file]), "deployment.apps/my-tomcat configured\n");
    let d = c.json(&["get", "deployment", "my-tomcat"]);
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["metadata"]["labels"], json!({"app": "my-tomcat", "tier": "web", "extra": "live"}));
    assert_eq!(d["metadata"]["annotations"]["note"], "keep");
    let ctrs = d["spec"]["template"]["spec"]["containers"].as_array().expect("containers").clone();
    let by_name = |n: &str| ctrs.iter().find(|x| x["name"] == n).cloned();
    assert_eq!(by_name("tomcat").expect("tomcat container")["image"], "tomcat:10.1.11");
    assert_eq!(by_name("sidecar").expect("live-only sidecar kept")["image"], "busybox:1.36");
    let same = c.kubectl(&["diff", "-f", file]);
    assert_eq!(same.status.code(), Some(0), "{}", stdout(&same));

    // Removing the label from the file removes it from the object, and only it.
    c.write("my-tomcat.yaml", &edited.replace("    tier: web\n", ""));
    assert_eq!(c.ok(&["apply", "-f", file]), "deployment.apps/my-tomcat configured\n");
    let d = c.json(&["get", "deployment", "my-tomcat"]);
    assert_eq!(d["metadata"]["labels"], json!({"app": "my-tomcat", "extra": "live"}));
    let last: serde_json::Value = serde_json::from_str(
        d["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"].as_str().expect("annotation"),
    )
    .expect("last-applied is JSON");
    assert_eq!(last["metadata"]["labels"], json!({"app": "my-tomcat"}));
    assert_eq!(last["spec"]["template"]["spec"]["containers"][0]["image"], "tomcat:10.1.11");

    // Server-side dry run changes nothing.
    c.write("my-tomcat.yaml", &original);
    assert_eq!(
        c.ok(&["apply", "-f", file, "--dry-run=server"]),
        "deployment.apps/my-tomcat configured (server dry run)\n"
    );
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "my-tomcat",
            "-o",
            r#"jsonpath={.spec.template.spec.containers[?(@.name=="tomcat")].image}"#
        ]),
        "tomcat:10.1.11"
    );
}

#[test]
fn get_all_and_wait_for_conditions_and_deletion() {
    let c = Cluster::start_standalone();
    c.ok(&["create", "deployment", "web", "--image=busybox:1.36"]);
    c.ok(&["run", "solo", "--image=busybox:1.36"]);

    // `kubectl get all`: one table per kind.
    let tables = Table::all(&c.ok(&["get", "all"]));
    let pods = tables.iter().find(|t| t.names().iter().any(|n| n.starts_with("pod/"))).expect("a pod table");
    assert_eq!(pods.headers, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert_eq!(pods.cell("pod/solo", "STATUS"), "Pending");
    let deploys = tables
        .iter()
        .find(|t| t.names().iter().any(|n| n.starts_with("deployment.apps/")))
        .expect("a deployment table");
    assert_eq!(deploys.headers, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    assert_eq!(deploys.cell("deployment.apps/web", "READY"), "0/1");

    // `kubectl wait --for=condition=…`: nothing sets it (no controllers), so set it by hand.
    let err = c.fails(&["wait", "--for=condition=Available", "deployment/web", "--timeout=1s"]);
    assert!(err.contains("timed out waiting for the condition on deployments/web"), "{err}");
    let status =
        r#"{"status":{"conditions":[{"type":"Available","status":"True","reason":"MinimumReplicasAvailable"}]}}"#;
    assert_eq!(
        c.ok(&["patch", "deployment", "web", "--subresource=status", "--type=merge", "-p", status]),
        "deployment.apps/web patched\n"
    );
    assert_eq!(
        c.ok(&["wait", "--for=condition=Available", "deployment/web", "--timeout=10s"]),
        "deployment.apps/web condition met\n"
    );
    assert_eq!(
        c.ok(&["wait", "--for=jsonpath={.spec.replicas}=1", "deployment/web", "--timeout=10s"]),
        "deployment.apps/web condition met\n"
    );
    // A status write through the main resource is ignored; a spec write through status is ignored.
    c.ok(&["patch", "deployment", "web", "--type=merge", "-p", r#"{"status":{"conditions":null}}"#]);
    let d = c.json(&["get", "deployment", "web"]);
    assert_eq!(d["status"]["conditions"][0]["type"], "Available", "{d}");
    c.ok(&["patch", "deployment", "web", "--subresource=status", "--type=merge", "-p", r#"{"spec":{"replicas":9}}"#]);
    assert_eq!(replicas(&c, "web"), "1");

    // `kubectl wait --for=delete`: a finalizer keeps the pod until the wait is under way.
    c.ok(&["patch", "pod", "solo", "--type=merge", "-p", r#"{"metadata":{"finalizers":["keelson.test/hold"]}}"#]);
    assert_eq!(c.ok(&["delete", "pod", "solo", "--wait=false"]), "pod \"solo\" deleted from default namespace\n");
    let held = c.json(&["get", "pod", "solo"]);
    assert!(held["metadata"]["deletionTimestamp"].is_string(), "{held}");
    let err = c.fails(&["wait", "--for=delete", "pod/solo", "--timeout=1s"]);
    assert!(err.contains("timed out waiting for the condition on pods/solo"), "{err}");
    // `-v=6` logs when kubectl's informer has the pod; only then is the finalizer released.
    let mut waiter = Streaming::spawn(&c, &["wait", "--for=delete", "pod/solo", "--timeout=20s", "-v=6"]);
    waiter.stderr_matching(Duration::from_secs(15), "\"Caches populated\"", |l| l.contains("Caches populated"));
    c.ok(&["patch", "pod", "solo", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    let (status, out) = waiter.finish(Duration::from_secs(25));
    assert!(status.success(), "kubectl wait --for=delete: {out}");
    assert_eq!(out.trim(), "pod/solo condition met");
    assert!(c.fails(&["get", "pod", "solo"]).contains(r#"pods "solo" not found"#));
}

#[test]
fn services_expose_create_and_nodeport_range() {
    let c = Cluster::start_standalone();
    assert_eq!(
        c.ok_stdin(&["apply", "-f", "-"], &tutorial_text("my-tomcat-deployment.yaml")),
        "deployment.apps/my-tomcat created\n"
    );

    // `kubectl expose deployment my-tomcat --name=tomcat --port=8080 --type=NodePort`
    assert_eq!(
        c.ok(&["expose", "deployment", "my-tomcat", "--name=tomcat", "--port=8080", "--type=NodePort"]),
        "service/tomcat exposed\n"
    );
    let svc = c.json(&["get", "svc", "tomcat"]);
    assert_eq!(svc["spec"]["type"], "NodePort");
    assert_eq!(svc["spec"]["selector"], json!({"app": "my-tomcat"}));
    let port = &svc["spec"]["ports"][0];
    assert_eq!(port["port"], 8080);
    assert_eq!(port["targetPort"], 8080);
    assert_eq!(port["protocol"], "TCP");
    assert_eq!(svc["spec"]["sessionAffinity"], "None");
    assert_eq!(svc["spec"]["externalTrafficPolicy"], "Cluster");
    let t = Table::parse(&c.ok(&["get", "svc", "-o", "wide"]));
    assert_eq!(t.headers, ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE", "SELECTOR"]);
    assert_eq!(t.cell("tomcat", "TYPE"), "NodePort");
    assert_eq!(t.cell("tomcat", "EXTERNAL-IP"), "<none>");
    let ports = t.cell("tomcat", "PORT(S)");
    assert!(ports.starts_with("8080") && ports.ends_with("/TCP"), "PORT(S) {ports}");
    assert_eq!(t.cell("tomcat", "SELECTOR"), "app=my-tomcat");

    // The tutorial's Service with `nodePort: 30001`.
    let manifest = tutorial_text("mytomcat-service.yaml");
    assert_eq!(c.ok_stdin(&["apply", "-f", "-"], &manifest), "service/my-tomcat created\n");
    let t = Table::parse(&c.ok(&["get", "svc", "-o", "wide"]));
    assert_eq!(t.cell("my-tomcat", "TYPE"), "NodePort");
    assert_eq!(t.cell("my-tomcat", "PORT(S)"), "8080:30001/TCP");
    assert_eq!(t.cell("my-tomcat", "SELECTOR"), "app=my-tomcat");
    let d = c.ok(&["describe", "svc", "my-tomcat"]);
    assert_eq!(describe_field(&d, "Type").as_deref(), Some("NodePort"), "{d}");
    assert_eq!(describe_field(&d, "Selector").as_deref(), Some("app=my-tomcat"), "{d}");
    assert_line(&d, &["NodePort:", "<unset>", "30001/TCP"]);
    assert_line(&d, &["TargetPort:", "8080/TCP"]);

    // A nodePort outside 30000-32767 is refused (422 Invalid).
    let bad = manifest.replace("nodePort: 30001", "nodePort: 29999").replace("  name: my-tomcat", "  name: bad-port");
    let out = c.kubectl_in(&["apply", "-f", "-"], Some(&bad), &[]);
    assert!(!out.status.success(), "nodePort 29999 must be refused");
    let err = stderr(&out);
    assert!(
        err.contains(r#"The Service "bad-port" is invalid: spec.ports[0].nodePort: Invalid value: 29999: provided port is not in the valid range. The range of valid ports is 30000-32767"#),
        "{err}"
    );
    assert!(c.fails(&["get", "svc", "bad-port"]).contains(r#"services "bad-port" not found"#));

    // `kubectl create service clusterip|nodeport`
    assert_eq!(c.ok(&["create", "service", "clusterip", "my-cs", "--tcp=5678:8080"]), "service/my-cs created\n");
    let svc = c.json(&["get", "svc", "my-cs"]);
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert_eq!(svc["spec"]["selector"], json!({"app": "my-cs"}));
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "5678-8080", "port": 5678, "protocol": "TCP", "targetPort": 8080}])
    );
    assert_eq!(c.ok(&["create", "service", "nodeport", "my-ns", "--tcp=5679:8080"]), "service/my-ns created\n");
    assert_eq!(Table::parse(&c.ok(&["get", "svc", "my-ns"])).cell("my-ns", "TYPE"), "NodePort");
    let err = c.fails(&["create", "service", "clusterip", "my-cs", "--tcp=5678:8080"]);
    assert!(err.contains(r#"services "my-cs" already exists"#), "{err}");

    assert_eq!(c.ok(&["delete", "svc", "tomcat"]), "service \"tomcat\" deleted from default namespace\n");
    assert!(c.fails(&["get", "svc", "tomcat"]).contains(r#"services "tomcat" not found"#));

    // Cluster IPs are allocated when a Service is created, from 10.96.0.0/12; `kubernetes` is
    // 10.96.0.1 in `default`.
    let t = Table::parse(&c.ok(&["get", "svc"]));
    let ip: std::net::Ipv4Addr = t.cell("my-cs", "CLUSTER-IP").parse().expect("my-cs has a cluster IP");
    assert_eq!(u32::from(ip) >> 20, u32::from(std::net::Ipv4Addr::new(10, 96, 0, 0)) >> 20, "{ip} in 10.96.0.0/12");
    assert_eq!(t.cell("kubernetes", "CLUSTER-IP"), "10.96.0.1");
    assert_eq!(t.cell("kubernetes", "PORT(S)"), "443/TCP");
}
