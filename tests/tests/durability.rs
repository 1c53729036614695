//! Durability: SIGKILL the control plane in the middle of concurrent writes, restart it on the same
//! data directory, and find every acknowledged write; revisions stay monotonic; a watch resumed
//! from its last seen revision receives every later event exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn spawn(dir: &Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_control-plane-under-test"))
        .args(["--data-dir", dir.to_str().expect("utf-8"), "--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("control plane starts")
}

async fn client(dir: &Path) -> kube::Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(kc) = kube::config::Kubeconfig::read_from(dir.join("admin.kubeconfig"))
            && let Ok(cfg) = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await
            && let Ok(c) = kube::Client::try_from(cfg)
            && c.apiserver_version().await.is_ok()
            && Api::<ConfigMap>::namespaced(c.clone(), "default").list(&Default::default()).await.is_ok()
        {
            return c;
        }
        assert!(Instant::now() < deadline, "control plane did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": {"k": name}})).expect("configmap")
}

fn rv(cm: &ConfigMap) -> i64 {
    cm.metadata.resource_version.as_deref().expect("resourceVersion").parse().expect("numeric resourceVersion")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_and_watch_resumes_exactly_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let mut child = spawn(dir.path(), port);
    let c = client(dir.path()).await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");

    // A watch that records the last revision it saw before the crash.
    let watch_rv = api.list(&Default::default()).await.expect("list").metadata.resource_version.expect("list rv");
    let last_seen = Arc::new(Mutex::new(watch_rv.parse::<i64>().expect("numeric")));
    let watcher = {
        let (api, last_seen) = (api.clone(), last_seen.clone());
        tokio::spawn(async move {
            let mut s = api.watch(&WatchParams::default(), &watch_rv).await.expect("watch").boxed();
            while let Some(Ok(ev)) = s.next().await {
                if let WatchEvent::Added(o) | WatchEvent::Modified(o) = ev {
                    let mut l = last_seen.lock().expect("lock");
                    *l = (*l).max(rv(&o));
                }
            }
        })
    };

    // Concurrent writers record every acknowledged create.
    let acked: Arc<Mutex<BTreeMap<String, i64>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..8 {
        let (api, acked) = (api.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("w{w}-{i}");
                match api.create(&PostParams::default(), &cm(&name)).await {
                    Ok(o) => {
                        acked.lock().expect("lock").insert(name, rv(&o));
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    for w in writers {
        w.await.expect("writer ends when the server dies");
    }
    watcher.abort();
    let acked = acked.lock().expect("lock").clone();
    let resume_from = *last_seen.lock().expect("lock");
    assert!(acked.len() > 50, "writers made progress before the kill: {}", acked.len());

    // Restart on the same directory.
    let mut child = spawn(dir.path(), port);
    let c = client(dir.path()).await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let list = api.list(&Default::default()).await.expect("list after restart");
    let stored: BTreeMap<String, i64> =
        list.items.iter().map(|o| (o.metadata.name.clone().expect("name"), rv(o))).collect();
    for (name, r) in &acked {
        assert_eq!(stored.get(name), Some(r), "acknowledged write {name} at revision {r} survives");
    }
    let max_acked = acked.values().copied().max().expect("some writes");
    let after = api.create(&PostParams::default(), &cm("after-restart")).await.expect("write after restart");
    assert!(rv(&after) > max_acked, "revisions stay monotonic: {} > {max_acked}", rv(&after));

    // Resume the watch from the last revision seen before the crash.
    let expected: BTreeSet<String> = stored
        .iter()
        .filter(|(_, r)| **r > resume_from)
        .map(|(n, _)| n.clone())
        .chain(std::iter::once("after-restart".to_string()))
        .collect();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut s =
        api.watch(&WatchParams::default().timeout(10), &resume_from.to_string()).await.expect("resumed watch").boxed();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < expected.len() && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), s.next()).await {
            Ok(Some(Ok(WatchEvent::Added(o)))) => *seen.entry(o.metadata.name.expect("name")).or_default() += 1,
            Ok(Some(Ok(WatchEvent::Bookmark(_)))) => {}
            Ok(Some(other)) => panic!("unexpected watch event {other:?}"),
            Ok(None) | Err(_) => break,
        }
    }
    let seen_names: BTreeSet<String> = seen.keys().cloned().collect();
    assert_eq!(seen_names, expected, "the resumed watch delivers every later write");
    assert!(seen.values().all(|n| *n == 1), "each exactly once: {seen:?}");

    child.kill().expect("stop");
    child.wait().expect("reaped");
}
