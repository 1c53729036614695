//! Real client libraries against an in-process control plane: kube-rs (typed `Api`s, the
//! `kube::runtime` watcher, subresources) and the Python `kubernetes` package.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::Cluster;
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Client, ResourceExt as _};
use serde_json::json;

/// Longest a single watch-based wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(15);

/// A kube-rs client built from the cluster's kubeconfig, as an application would build it.
async fn client(cluster: &Cluster) -> Client {
    let kubeconfig = Kubeconfig::read_from(&cluster.kubeconfig).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kube config loads");
    Client::try_from(config).expect("client builds")
}

fn config_map(name: &str, labels: &[(&str, &str)], data: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        },
        "data": data.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
    }))
    .expect("config map JSON")
}

fn deployment(name: &str, image: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [
                    {"name": "main", "image": image},
                    {"name": "sidecar", "image": "busybox:sidecar"},
                ]},
            },
        },
    }))
    .expect("deployment JSON")
}

fn pod(name: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "main", "image": "busybox:local", "command": ["sleep", "3600"]}]},
    }))
    .expect("pod JSON")
}

/// The `code` and `reason` of an API error, failing the test on any other error.
fn api_error<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> (u16, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.reason.clone()),
        other => panic!("expected an API error Status, got {other:?}"),
    }
}

fn data(cm: &ConfigMap) -> BTreeMap<String, String> {
    cm.data.clone().unwrap_or_default()
}

fn owned(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn config_maps_create_get_list_patch_replace_delete() {
    let cluster = Cluster::start_standalone();
    cluster.runtime().block_on(async {
        let api: Api<ConfigMap> = Api::namespaced(client(&cluster).await, "default");
        let pp = PostParams::default();

        // create and get
        let created = api.create(&pp, &config_map("one", &[("app", "a")], &[("k", "v")])).await.expect("create one");
        assert_eq!(created.name_any(), "one");
        assert_eq!(created.namespace().as_deref(), Some("default"));
        assert!(created.uid().is_some_and(|u| !u.is_empty()), "server sets a uid: {created:?}");
        assert!(created.resource_version().is_some_and(|rv| !rv.is_empty()), "server sets a resourceVersion");
        assert!(created.metadata.creation_timestamp.is_some(), "server sets creationTimestamp");
        let got = api.get("one").await.expect("get one");
        assert_eq!(data(&got), owned(&[("k", "v")]));
        assert_eq!(got.resource_version(), created.resource_version());
        assert_eq!(got.uid(), created.uid());

        // list with a label selector, paginated: 7 matching objects in pages of 3, plus 3 others
        for i in 0..6 {
            api.create(&pp, &config_map(&format!("page-{i}"), &[("app", "a")], &[])).await.expect("create page-N");
        }
        for i in 0..3 {
            api.create(&pp, &config_map(&format!("other-{i}"), &[("app", "b")], &[])).await.expect("create other-N");
        }
        let mut names = Vec::new();
        let mut pages = 0;
        let mut lp = ListParams::default().labels("app=a").limit(3);
        let mut first_rv = None;
        loop {
            let page = api.list(&lp).await.expect("list page");
            pages += 1;
            assert!(page.items.len() <= 3, "page {pages} has {} items, limit is 3", page.items.len());
            first_rv.get_or_insert_with(|| page.metadata.resource_version.clone());
            names.extend(page.items.iter().map(|cm| cm.name_any()));
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => lp = ListParams::default().labels("app=a").limit(3).continue_token(&token),
                None => break,
            }
            assert!(pages < 10, "pagination does not end");
        }
        assert_eq!(pages, 3, "7 objects in pages of 3: {names:?}");
        let mut sorted = names.clone();
        sorted.sort();
        let expected: Vec<String> =
            ["one", "page-0", "page-1", "page-2", "page-3", "page-4", "page-5"].iter().map(|s| s.to_string()).collect();
        assert_eq!(sorted, expected, "every matching object once, none of app=b");
        let all = api.list(&ListParams::default()).await.expect("list all");
        assert_eq!(all.items.iter().filter(|c| c.name_any().starts_with("other-")).count(), 3);

        // The same walk with no selector (such JSON lists are written from the stored bytes),
        // checked against one list at the walk's revision.
        let (mut walked, mut pages, mut walk_rv) = (Vec::new(), 0, None);
        let mut lp = ListParams::default().limit(4);
        loop {
            let page = api.list(&lp).await.expect("list page");
            pages += 1;
            assert!(page.items.len() <= 4, "page {pages} has {} items, limit is 4", page.items.len());
            walk_rv.get_or_insert_with(|| page.metadata.resource_version.clone().expect("list resourceVersion"));
            walked.extend(page.items);
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => lp = ListParams::default().limit(4).continue_token(&token),
                None => break,
            }
            assert!(pages < 10, "pagination does not end");
        }
        let at = ListParams::default().at(&walk_rv.expect("a page")).matching(kube::api::VersionMatch::Exact);
        let whole = api.list(&at).await.expect("list at the walk's revision").items;
        assert!(whole.len() >= 10, "the 10 config maps at least: {}", whole.len());
        assert_eq!(pages, whole.len().div_ceil(4), "{} objects in pages of 4", whole.len());
        assert_eq!(walked, whole, "the pages hold the whole list once, in order, object for object");
        let one = walked.iter().find(|cm| cm.name_any() == "one").expect("one is listed");
        assert_eq!(one, &api.get("one").await.expect("get one"), "a listed object is the object");
        assert!(walked.iter().all(|cm| cm.resource_version().is_some_and(|rv| !rv.is_empty()) && cm.uid().is_some()));
        let not_a = api.list(&ListParams::default().labels("app!=a")).await.expect("list app!=a");
        assert!(not_a.items.iter().all(|c| c.labels().get("app").map(String::as_str) != Some("a")));
        let set = api.list(&ListParams::default().labels("app in (b),app notin (a)")).await.expect("list set selector");
        assert_eq!(
            set.items.len(),
            3,
            "set-based selector: {:?}",
            set.items.iter().map(|c| c.name_any()).collect::<Vec<_>>()
        );

        // merge patch
        let merged = api
            .patch(
                "one",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"added": "1"}, "metadata": {"labels": {"x": "y"}}})),
            )
            .await
            .expect("merge patch");
        assert_eq!(data(&merged), owned(&[("added", "1"), ("k", "v")]));
        assert_eq!(merged.labels().get("x").map(String::as_str), Some("y"));
        assert_ne!(merged.resource_version(), created.resource_version(), "a change bumps resourceVersion");
        // strategic merge patch (data is a plain map: keys merge, null deletes)
        let strategic = api
            .patch("one", &PatchParams::default(), &Patch::Strategic(json!({"data": {"added": null, "s": "2"}})))
            .await
            .expect("strategic patch");
        assert_eq!(data(&strategic), owned(&[("k", "v"), ("s", "2")]));
        // JSON patch (RFC 6902), with a test op
        let ops = json!([
            {"op": "test", "path": "/data/k", "value": "v"},
            {"op": "replace", "path": "/data/k", "value": "v2"},
            {"op": "remove", "path": "/data/s"},
            {"op": "add", "path": "/data/j", "value": "3"},
        ]);
        let jp = api
            .patch::<()>("one", &PatchParams::default(), &Patch::Json(serde_json::from_value(ops).expect("json patch")))
            .await
            .expect("json patch");
        assert_eq!(data(&jp), owned(&[("j", "3"), ("k", "v2")]));
        let failed_test =
            json!([{"op": "test", "path": "/data/k", "value": "nope"}, {"op": "remove", "path": "/data/k"}]);
        let r = api
            .patch::<()>(
                "one",
                &PatchParams::default(),
                &Patch::Json(serde_json::from_value(failed_test).expect("json patch")),
            )
            .await;
        let (code, _) = api_error(r);
        assert!(code == 422 || code == 409 || code == 400, "failed JSON patch test op is rejected, got {code}");
        assert_eq!(
            data(&api.get("one").await.expect("get")),
            owned(&[("j", "3"), ("k", "v2")]),
            "failed patch wrote nothing"
        );

        // replace: with the current resourceVersion it works, with a stale one it is a 409 Conflict
        let mut fresh = api.get("one").await.expect("get");
        fresh.data = Some(owned(&[("replaced", "yes")]));
        let replaced = api.replace("one", &pp, &fresh).await.expect("replace with current resourceVersion");
        assert_eq!(data(&replaced), owned(&[("replaced", "yes")]));
        let mut stale = created.clone();
        stale.data = Some(owned(&[("stale", "write")]));
        let (code, reason) = api_error(api.replace("one", &pp, &stale).await);
        assert_eq!((code, reason.as_str()), (409, "Conflict"), "replace with a stale resourceVersion");
        assert_eq!(
            data(&api.get("one").await.expect("get")),
            owned(&[("replaced", "yes")]),
            "the stale replace wrote nothing"
        );

        // delete
        api.delete("one", &DeleteParams::default()).await.expect("delete");
        let (code, reason) = api_error(api.get("one").await);
        assert_eq!((code, reason.as_str()), (404, "NotFound"));
        assert!(api.get_opt("one").await.expect("get_opt").is_none());
        let (code, _) = api_error(api.delete("one", &DeleteParams::default()).await);
        assert_eq!(code, 404, "deleting twice");
    });
}

/// Waits for the next watch event, failing after [`WAIT`].
async fn next_event<S, K>(stream: &mut S) -> WatchEvent<K>
where
    S: futures::Stream<Item = Result<WatchEvent<K>, kube::Error>> + Unpin,
{
    loop {
        let ev = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("a watch event within the timeout")
            .expect("watch stream still open")
            .expect("watch event decodes");
        if !matches!(ev, WatchEvent::Bookmark(_)) {
            return ev;
        }
    }
}

#[test]
fn watch_sees_changes_made_while_watching() {
    let cluster = Cluster::start_standalone();
    cluster.runtime().block_on(async {
        let client = client(&cluster).await;
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let pp = PostParams::default();
        api.create(&pp, &config_map("before", &[("w", "1")], &[])).await.expect("create before watching");
        let rv = api.list(&ListParams::default()).await.expect("list").metadata.resource_version.expect("list rv");

        // From the list's resourceVersion: only what happens afterwards.
        let mut stream = api.watch(&WatchParams::default().timeout(30), &rv).await.expect("watch starts").boxed();
        api.create(&pp, &config_map("w1", &[("w", "1")], &[("a", "1")])).await.expect("create w1");
        api.patch("w1", &PatchParams::default(), &Patch::Merge(json!({"data": {"a": "2"}}))).await.expect("patch w1");
        api.delete("w1", &DeleteParams::default()).await.expect("delete w1");
        match next_event(&mut stream).await {
            WatchEvent::Added(cm) => assert_eq!((cm.name_any(), data(&cm)), ("w1".into(), owned(&[("a", "1")]))),
            other => panic!("expected ADDED w1, got {other:?}"),
        }
        match next_event(&mut stream).await {
            WatchEvent::Modified(cm) => assert_eq!((cm.name_any(), data(&cm)), ("w1".into(), owned(&[("a", "2")]))),
            other => panic!("expected MODIFIED w1, got {other:?}"),
        }
        match next_event(&mut stream).await {
            WatchEvent::Deleted(cm) => assert_eq!(cm.name_any(), "w1"),
            other => panic!("expected DELETED w1, got {other:?}"),
        }
        drop(stream);

        // From "0": the current objects first as ADDED, then changes; with a label selector.
        let mut stream =
            api.watch(&WatchParams::default().labels("w=1").timeout(30), "0").await.expect("watch from 0").boxed();
        match next_event(&mut stream).await {
            WatchEvent::Added(cm) => assert_eq!(cm.name_any(), "before"),
            other => panic!("expected synthetic ADDED for the existing object, got {other:?}"),
        }
        api.create(&pp, &config_map("unlabelled", &[], &[])).await.expect("create unlabelled");
        api.create(&pp, &config_map("w2", &[("w", "1")], &[])).await.expect("create w2");
        match next_event(&mut stream).await {
            WatchEvent::Added(cm) => assert_eq!(cm.name_any(), "w2", "objects outside the selector are not sent"),
            other => panic!("expected ADDED w2, got {other:?}"),
        }
        // Losing the label is a DELETED for a selector watch.
        api.patch("w2", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"w": null}}})))
            .await
            .expect("unlabel w2");
        match next_event(&mut stream).await {
            WatchEvent::Deleted(cm) => assert_eq!(cm.name_any(), "w2"),
            other => panic!("expected DELETED when w2 leaves the selector, got {other:?}"),
        }
        drop(stream);

        // kube::runtime::watcher: paginated initial list, then live events.
        let pods: Api<Pod> = Api::namespaced(client, "default");
        for i in 0..3 {
            pods.create(&pp, &pod(&format!("init-{i}"), json!({"role": "w"}))).await.expect("create pod");
        }
        let mut events = watcher(pods.clone(), watcher::Config::default().labels("role=w").page_size(2)).boxed();
        let mut initial = Vec::new();
        loop {
            let ev = tokio::time::timeout(WAIT, events.try_next()).await.expect("watcher event in time");
            match ev.expect("watcher has no error").expect("watcher stream open") {
                watcher::Event::Init => {}
                watcher::Event::InitApply(p) => initial.push(p.name_any()),
                watcher::Event::InitDone => break,
                other => panic!("unexpected event during init: {other:?}"),
            }
        }
        initial.sort();
        assert_eq!(initial, ["init-0", "init-1", "init-2"]);
        pods.create(&pp, &pod("live", json!({"role": "w"}))).await.expect("create live pod");
        pods.delete("init-0", &DeleteParams::default()).await.expect("delete init-0");
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let ev = tokio::time::timeout(WAIT, events.try_next()).await.expect("watcher event in time");
            match ev.expect("watcher has no error").expect("watcher stream open") {
                watcher::Event::Apply(p) => seen.push(format!("apply {}", p.name_any())),
                watcher::Event::Delete(p) => seen.push(format!("delete {}", p.name_any())),
                other => panic!("unexpected watcher event: {other:?}"),
            }
        }
        assert_eq!(seen, ["apply live", "delete init-0"]);
    });
}

#[test]
fn deployments_and_pods_subresources_and_patches() {
    let cluster = Cluster::start_standalone();
    cluster.runtime().block_on(async {
        let client = client(&cluster).await;
        let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
        let pp = PostParams::default();
        let created = api.create(&pp, &deployment("web", "busybox:1")).await.expect("create deployment");
        let spec = created.spec.as_ref().expect("spec");
        assert_eq!(spec.replicas, Some(1), "replicas defaults to 1");
        assert_eq!(created.metadata.generation, Some(1));

        // scale subresource
        let scale = api.get_scale("web").await.expect("get scale");
        assert_eq!(scale.spec.as_ref().and_then(|s| s.replicas), Some(1));
        assert_eq!(scale.metadata.name.as_deref(), Some("web"));
        let scale = api
            .patch_scale("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 4}})))
            .await
            .expect("patch scale");
        assert_eq!(scale.spec.as_ref().and_then(|s| s.replicas), Some(4));
        let got = api.get("web").await.expect("get");
        assert_eq!(got.spec.as_ref().and_then(|s| s.replicas), Some(4), "scale writes spec.replicas");
        assert_eq!(got.metadata.generation, Some(2), "a spec change bumps generation");
        let (code, reason) = api_error(
            api.patch_scale("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": -1}}))).await,
        );
        assert_eq!((code, reason.as_str()), (422, "Invalid"), "negative replicas through scale");

        // status subresource: status writes change only status; main writes never change status
        let status_patch = json!({"status": {"replicas": 4, "readyReplicas": 2, "observedGeneration": 2}, "spec": {"replicas": 9}});
        let st = api.patch_status("web", &PatchParams::default(), &Patch::Merge(status_patch)).await.expect("patch status");
        let status = st.status.as_ref().expect("status");
        assert_eq!((status.replicas, status.ready_replicas, status.observed_generation), (Some(4), Some(2), Some(2)));
        assert_eq!(st.spec.as_ref().and_then(|s| s.replicas), Some(4), "a status patch does not change spec");
        let st = api.get_status("web").await.expect("get status");
        assert_eq!(st.status.as_ref().and_then(|s| s.ready_replicas), Some(2));
        let main = api
            .patch("web", &PatchParams::default(), &Patch::Merge(json!({"status": {"readyReplicas": 0}})))
            .await
            .expect("main patch touching status");
        assert_eq!(main.status.as_ref().and_then(|s| s.ready_replicas), Some(2), "the main resource ignores status");

        // strategic merge patch merges containers by name
        let smp = json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "busybox:2"}]}}}});
        let patched = api.patch("web", &PatchParams::default(), &Patch::Strategic(smp)).await.expect("strategic patch");
        let containers = &patched.spec.as_ref().expect("spec").template.spec.as_ref().expect("pod spec").containers;
        let images: Vec<(String, Option<String>)> = containers.iter().map(|c| (c.name.clone(), c.image.clone())).collect();
        assert_eq!(
            images,
            [("main".to_string(), Some("busybox:2".to_string())), ("sidecar".to_string(), Some("busybox:sidecar".to_string()))],
            "strategic merge keeps the sidecar and updates main"
        );
        // a merge patch replaces the list
        let mp = json!({"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "busybox:3"}]}}}});
        let patched = api.patch("web", &PatchParams::default(), &Patch::Merge(mp)).await.expect("merge patch");
        let containers = &patched.spec.as_ref().expect("spec").template.spec.as_ref().expect("pod spec").containers;
        assert_eq!(containers.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["only"]);
        // JSON patch
        let ops = json!([{"op": "replace", "path": "/spec/replicas", "value": 2}, {"op": "add", "path": "/metadata/labels/tier", "value": "front"}]);
        let patched = api
            .patch::<()>("web", &PatchParams::default(), &Patch::Json(serde_json::from_value(ops).expect("ops")))
            .await
            .expect("json patch");
        assert_eq!(patched.spec.as_ref().and_then(|s| s.replicas), Some(2));
        assert_eq!(patched.labels().get("tier").map(String::as_str), Some("front"));
        assert_eq!(api.get_scale("web").await.expect("scale").spec.and_then(|s| s.replicas), Some(2));

        // stale replace
        let mut stale = created.clone();
        stale.spec.as_mut().expect("spec").replicas = Some(7);
        let (code, reason) = api_error(api.replace("web", &pp, &stale).await);
        assert_eq!((code, reason.as_str()), (409, "Conflict"));
        assert_eq!(api.get("web").await.expect("get").spec.and_then(|s| s.replicas), Some(2), "stale replace wrote nothing");

        let list = api.list(&ListParams::default().labels("app=web")).await.expect("list deployments");
        assert_eq!(list.items.iter().map(|d| d.name_any()).collect::<Vec<_>>(), ["web"]);
        api.delete("web", &DeleteParams::default()).await.expect("delete deployment");
        let (code, _) = api_error(api.get("web").await);
        assert_eq!(code, 404);

        // pods: create, list by label, status, delete
        let pods: Api<Pod> = Api::namespaced(client, "default");
        for (name, tier) in [("p1", "a"), ("p2", "a"), ("p3", "b")] {
            pods.create(&pp, &pod(name, json!({"tier": tier}))).await.expect("create pod");
        }
        let a = pods.list(&ListParams::default().labels("tier=a")).await.expect("list pods");
        let mut names: Vec<String> = a.items.iter().map(|p| p.name_any()).collect();
        names.sort();
        assert_eq!(names, ["p1", "p2"]);
        let p1 = pods.get("p1").await.expect("get pod");
        let pspec = p1.spec.as_ref().expect("pod spec");
        assert_eq!(pspec.restart_policy.as_deref(), Some("Always"), "restartPolicy defaults to Always");
        assert_eq!(pspec.containers[0].image.as_deref(), Some("busybox:local"));
        let status = json!({"status": {"phase": "Running", "podIP": "10.244.0.5", "hostIP": "192.0.2.1"}});
        let p1 = pods.patch_status("p1", &PatchParams::default(), &Patch::Merge(status)).await.expect("patch pod status");
        let ps = p1.status.as_ref().expect("pod status");
        assert_eq!((ps.phase.as_deref(), ps.pod_ip.as_deref()), (Some("Running"), Some("10.244.0.5")));
        let got = pods.get_status("p1").await.expect("get pod status");
        assert_eq!(got.status.and_then(|s| s.pod_ip).as_deref(), Some("10.244.0.5"));
        let by_field = pods.list(&ListParams::default().fields("status.phase=Running")).await.expect("field selector");
        assert_eq!(by_field.items.iter().map(|p| p.name_any()).collect::<Vec<_>>(), ["p1"]);
        // An unscheduled pod has no kubelet to wait for: it goes away at once.
        pods.delete("p2", &DeleteParams::default()).await.expect("delete pod");
        assert!(pods.get_opt("p2").await.expect("get_opt").is_none(), "unscheduled pod deleted immediately");
    });
}

#[test]
fn python_kubernetes_client() {
    let cluster = Cluster::start_standalone();
    let script = common::fixture("python/client_smoke.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&cluster.kubeconfig)
        .env("HOME", cluster.dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBECONFIG")
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{} failed ({})\nstdout:\n{}\nstderr:\n{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("client_smoke: OK"), "script finished every step: {stdout}");
}
