//! Failures: each one reports the spec's error JSON with the right code and leaves no interface, route or
//! allocation behind (privileged: run as root).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use common::{ClusterRoute, Network, Pod, assert_clean, exec, host_link_exists, result_ip};
use serde_json::{Value, json};

/// Asserts the pod and network carry no trace of a failed ADD.
fn assert_nothing_created(network: &Network, pod: &Pod) {
    assert_clean(network, pod, None);
    assert!(network.allocations().is_empty(), "allocations left: {:?}", network.allocations());
}

#[test]
fn bad_configurations_are_rejected_with_their_codes() {
    let network = Network::new("1.0.0", &common::small_subnet());
    let pod = Pod::new("badconf");
    let cases: [(&str, String, u64); 7] = [
        ("not JSON", "{\"cniVersion\":".to_owned(), 6),
        ("wrong type", network.with(json!({ "mtu": "large" })).to_string(), 6),
        ("no podCIDR", json!({ "cniVersion": "1.0.0", "name": "k", "type": "keelson" }).to_string(), 7),
        ("podCIDR too small", network.with(json!({ "podCIDR": "10.244.1.0/31" })).to_string(), 7),
        ("IPv6 podCIDR", network.with(json!({ "podCIDR": "fd00::/64" })).to_string(), 7),
        ("unknown version", network.with(json!({ "cniVersion": "0.9.9" })).to_string(), 1),
        ("delegated IPAM", network.with(json!({ "ipam": { "type": "host-local" } })).to_string(), 2),
    ];
    for (what, conf, code) in cases {
        let netns = pod.netns.path.display().to_string();
        let outcome = exec(
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", &pod.container_id),
                ("CNI_NETNS", &netns),
                ("CNI_IFNAME", "eth0"),
            ],
            &conf,
        );
        let error = outcome.error();
        assert_eq!(error["code"], code, "{what}: {error}");
        if what == "unknown version" {
            assert_eq!(error["cniVersion"], "0.9.9", "errors echo the request's version");
        }
        assert_nothing_created(&network, &pod);
    }
}

#[test]
fn invalid_environment_names_the_variable() {
    let network = Network::new("1.0.0", &common::small_subnet());
    let conf = network.conf.to_string();
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[], "CNI_COMMAND"),
        (&[("CNI_COMMAND", "FROB")], "CNI_COMMAND"),
        (&[("CNI_COMMAND", "ADD"), ("CNI_NETNS", "/run/netns/x"), ("CNI_IFNAME", "eth0")], "CNI_CONTAINERID"),
        (
            &[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "abc"), ("CNI_NETNS", "/run/netns/x"), ("CNI_IFNAME", "a/b")],
            "CNI_IFNAME",
        ),
        (&[("CNI_COMMAND", "CHECK"), ("CNI_CONTAINERID", "abc"), ("CNI_IFNAME", "eth0")], "CNI_NETNS"),
    ];
    for (vars, variable) in cases {
        let error = exec(vars, &conf).error();
        assert_eq!(error["code"], 4, "{variable}: {error}");
        let text = format!("{} {}", error["msg"], error["details"]);
        assert!(text.contains(variable), "message names {variable}: {text}");
    }
}

#[test]
fn missing_netns_is_an_unknown_container_and_del_still_succeeds() {
    let network = Network::new("1.0.0", &common::small_subnet());
    let absent = format!("/run/netns/kcni-{}-absent", std::process::id());
    let vars = |command| {
        [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "kcni-absent"),
            ("CNI_NETNS", absent.as_str()),
            ("CNI_IFNAME", "eth0"),
        ]
    };
    let error = exec(&vars("ADD"), &network.conf.to_string()).error();
    assert_eq!(error["code"], 3, "{error}");
    assert!(network.allocations().is_empty());
    assert!(!host_link_exists(&cni_plugin::wiring::host_veth_name("kcni-absent", "eth0")));
    exec(&vars("DEL"), &network.conf.to_string()).ok_silent();
    let not_a_netns = exec(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "kcni-notns"),
            ("CNI_NETNS", "/proc/self/stat"),
            ("CNI_IFNAME", "eth0"),
        ],
        &network.conf.to_string(),
    );
    assert_eq!(not_a_netns.code(), 4, "a path that is not a network namespace is an invalid CNI_NETNS");
    assert!(network.allocations().is_empty());
}

#[test]
fn existing_interface_is_refused_and_left_alone() {
    let network = Network::new("1.0.0", &common::small_subnet());
    let pod = Pod::new("exists");
    pod.netns.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "other0"]);
    let before = pod.netns.ip(&["-o", "link", "show", "dev", "eth0"]);
    assert!(before.contains("eth0@"), "test set-up created eth0: {before}");
    let error = network.add(&pod).error();
    assert_eq!(error["code"], 104, "{error}");
    assert_eq!(pod.netns.ip(&["-o", "link", "show", "dev", "eth0"]), before, "existing eth0 untouched");
    assert!(network.allocations().is_empty());
    assert!(!host_link_exists(&pod.host_veth()));
}

#[test]
fn exhausted_range_fails_cleanly_and_status_reports_it() {
    let _route = ClusterRoute::hold();
    let network = Network::new("1.1.0", &common::tiny_subnet());
    let (first, second) = (Pod::new("full"), Pod::new("full"));
    network.command("STATUS", &network.conf).ok_silent();
    let result = network.add(&first).json();
    let ip = result_ip(&result);

    let status = network.command("STATUS", &network.conf).error();
    assert_eq!(status["code"], 50, "STATUS on a full range: {status}");
    let error = network.add(&second).error();
    assert_eq!(error["code"], 100, "{error}");
    assert!(error["msg"].as_str().expect("msg").contains("exhausted"), "{error}");
    assert_clean(&network, &second, None);
    assert_eq!(network.allocations(), vec![ip], "only the first pod holds an address");

    network.del(&first, Some(&result)).ok_silent();
    network.command("STATUS", &network.conf).ok_silent();
    let again = network.add(&second).json();
    assert_eq!(result_ip(&again), ip, "the released address is the only one, so it is reused");
    network.del(&second, Some(&again)).ok_silent();
    assert_clean(&network, &second, Some(ip));
}

#[test]
fn status_fails_when_state_is_not_writable() {
    let network = Network::new("1.1.0", &common::small_subnet());
    let file = network.data_dir.path().join("plain-file");
    std::fs::write(&file, b"x").expect("create file");
    let error = network.command("STATUS", &network.with(json!({ "dataDir": file.join("state") }))).error();
    assert_eq!(error["code"], 50, "{error}");
}

/// A fake node-agent: answers each connection with `reply` (or nothing) and records the requests.
struct FakeAgent {
    path: PathBuf,
    requests: Arc<Mutex<Vec<Value>>>,
    _dir: tempfile::TempDir,
}

impl FakeAgent {
    fn start(reply: Option<&'static str>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path).expect("bind fake agent");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let mut line = String::new();
                if BufReader::new(&stream).read_line(&mut line).is_err() {
                    continue;
                }
                if let Ok(request) = serde_json::from_str::<Value>(&line) {
                    seen.lock().expect("requests lock").push(request);
                }
                match reply {
                    Some(reply) => {
                        let _ = (&stream).write_all(format!("{reply}\n").as_bytes());
                    }
                    // Hold the connection open without answering until the plugin gives up.
                    None => std::thread::sleep(std::time::Duration::from_secs(2)),
                }
            }
        });
        Self { path, requests, _dir: dir }
    }

    fn requests(&self) -> Vec<Value> {
        self.requests.lock().expect("requests lock").clone()
    }
}

#[test]
fn agent_socket_without_listener_fails_add_and_leaves_nothing() {
    let network = Network::new("1.0.0", &common::small_subnet());
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = network.with(json!({ "agentSocket": dir.path().join("nobody.sock") }));
    let pod = Pod::new("noagent");
    let error = network.attach("ADD", &pod, &conf).error();
    assert_eq!(error["code"], 101, "{error}");
    assert!(error["details"].as_str().expect("details").contains("nobody.sock"), "{error}");
    assert_nothing_created(&network, &pod);
    network.attach("DEL", &pod, &conf).ok_silent();
}

#[test]
fn agent_refusal_or_silence_rolls_back() {
    for (agent, what) in [
        (FakeAgent::start(Some(r#"{"ok":false,"error":"unknown pod"}"#)), "refusal"),
        (FakeAgent::start(None), "silence"),
    ] {
        let network = Network::new("1.0.0", &common::small_subnet());
        let conf = network.with(json!({ "agentSocket": agent.path, "agentTimeoutMs": 300 }));
        let pod = Pod::new("badagent");
        let error = network.attach("ADD", &pod, &conf).error();
        assert_eq!(error["code"], 101, "{what}: {error}");
        assert_nothing_created(&network, &pod);
        assert_eq!(agent.requests().len(), 1, "{what}: the agent was asked once");
    }
}

#[test]
fn agent_hears_about_added_and_deleted_endpoints() {
    let _route = ClusterRoute::hold();
    let agent = FakeAgent::start(Some(r#"{"ok":true}"#));
    let network = Network::new("1.1.0", &common::small_subnet());
    let conf = network.with(json!({ "agentSocket": agent.path }));
    let pod = Pod::new("agent");
    let result = network.attach("ADD", &pod, &conf).json();
    let ip = result_ip(&result);

    let requests = agent.requests();
    assert_eq!(requests.len(), 1);
    let add = &requests[0];
    assert_eq!(add["op"], "add");
    assert_eq!(add["network"], "kcni-test");
    assert_eq!(add["containerId"], pod.container_id.as_str());
    assert_eq!(add["ifname"], "eth0");
    assert_eq!(add["netns"], pod.netns.path.display().to_string().as_str());
    assert_eq!(add["hostVeth"], pod.host_veth().as_str());
    assert_eq!(add["ip"], ip.to_string().as_str());
    assert_eq!(add["mac"], result["interfaces"][1]["mac"]);
    assert_eq!(add["podNamespace"], "default");
    assert_eq!(add["podName"], "web-0");

    network
        .attach("CHECK", &pod, &network.with(json!({ "agentSocket": agent.path, "prevResult": result })))
        .ok_silent();
    network.command("STATUS", &conf).ok_silent();
    network.attach("DEL", &pod, &network.with(json!({ "agentSocket": agent.path, "prevResult": result }))).ok_silent();
    let ops: Vec<String> = agent.requests().iter().map(|r| r["op"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(ops, ["add", "check", "ping", "del"]);
    assert_eq!(agent.requests()[3]["ip"], ip.to_string().as_str());
    assert_clean(&network, &pod, Some(ip));
}
