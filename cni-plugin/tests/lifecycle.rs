//! ADD, CHECK, DEL, VERSION, STATUS and GC through the built binary, for 1.0.0, 1.1.0 and 0.4.0
//! configurations, in test-owned network namespaces (privileged: run as root).

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::{ClusterRoute, Network, Pod, assert_clean, exec, host_link_exists, host_routes_to, ping, result_ip};
use serde_json::{Value, json};

fn is_mac(text: &Value) -> bool {
    let text = text.as_str().unwrap_or_default();
    text.len() == 17 && text.split(':').all(|part| part.len() == 2 && u8::from_str_radix(part, 16).is_ok())
}

/// First host address and first pod address of a subnet such as `10.244.193.16/28`.
fn gateway_and_first(subnet: &str) -> (Ipv4Addr, Ipv4Addr) {
    let network: Ipv4Addr = subnet.split('/').next().expect("address").parse().expect("IPv4");
    (Ipv4Addr::from(u32::from(network) + 1), Ipv4Addr::from(u32::from(network) + 2))
}

fn validate_add_result(version: &str, result: &Value, pod: &Pod, gateway: Ipv4Addr, expected_ip: Ipv4Addr) {
    assert_eq!(result["cniVersion"], version);

    let interfaces = result["interfaces"].as_array().expect("interfaces is a list");
    assert_eq!(interfaces.len(), 2, "host and pod interface: {result}");
    assert_eq!(interfaces[0]["name"], pod.host_veth().as_str());
    assert!(is_mac(&interfaces[0]["mac"]), "host mac: {result}");
    assert!(interfaces[0].get("sandbox").is_none(), "host interface has no sandbox");
    assert_eq!(interfaces[1]["name"], "eth0");
    assert!(is_mac(&interfaces[1]["mac"]), "pod mac: {result}");
    assert_eq!(interfaces[1]["sandbox"], pod.netns.path.display().to_string().as_str());
    for interface in interfaces {
        match version {
            "1.1.0" => assert_eq!(interface["mtu"], 1500, "1.1.0 results carry the MTU"),
            _ => assert!(interface.get("mtu").is_none(), "{version} results have no interface mtu"),
        }
    }

    let ips = result["ips"].as_array().expect("ips is a list");
    assert_eq!(ips.len(), 1);
    assert_eq!(ips[0]["address"], format!("{expected_ip}/32").as_str());
    assert_eq!(ips[0]["gateway"], gateway.to_string().as_str());
    assert_eq!(ips[0]["interface"], 1, "the address belongs to the pod interface");
    match version {
        "0.4.0" => assert_eq!(ips[0]["version"], "4"),
        _ => assert!(ips[0].get("version").is_none(), "{version} ips have no version"),
    }

    let routes = result["routes"].as_array().expect("routes is a list");
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0]["dst"], "0.0.0.0/0");
    assert_eq!(routes[0]["gw"], gateway.to_string().as_str());
    assert!(result.get("dns").is_none(), "no dns configured, none reported");

    // The kernel agrees with the result.
    let addresses = pod.netns.ip(&["-o", "-4", "addr", "show", "dev", "eth0"]);
    assert!(addresses.contains(&format!("inet {expected_ip}/32")), "pod address: {addresses}");
    let links = pod.netns.ip(&["-o", "link", "show", "dev", "eth0"]);
    assert!(links.contains(interfaces[1]["mac"].as_str().expect("mac")), "pod mac: {links}");
    assert!(links.contains("mtu 1500") && links.contains(",UP"), "pod link up with MTU: {links}");
    let routes = pod.netns.ip(&["-o", "route", "show"]);
    assert!(routes.contains(&format!("default via {gateway} dev eth0")), "pod default route: {routes}");
    assert!(routes.contains(&format!("{gateway} dev eth0")), "pod gateway route: {routes}");
    let host_routes = host_routes_to(expected_ip);
    assert!(host_routes.contains(&format!("dev {}", pod.host_veth())), "host route: {host_routes}");
    let rp_filter = std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{}/rp_filter", pod.host_veth()))
        .expect("host veth sysctl");
    assert_eq!(rp_filter.trim(), "2", "loose reverse-path filter on the host veth");
    let accept_local = std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{}/accept_local", pod.host_veth()))
        .expect("read accept_local");
    assert_eq!(accept_local.trim(), "1", "reverse-translated NodePort replies (source: a node address) are accepted");
}

#[test]
fn full_lifecycle_for_each_supported_version() {
    let _route = ClusterRoute::hold();
    for version in ["1.0.0", "1.1.0", "0.4.0"] {
        let subnet = common::small_subnet();
        let (gateway, first) = gateway_and_first(&subnet);
        let network = Network::new(version, &subnet);
        let pod = Pod::new("life");

        let reported = exec(&[("CNI_COMMAND", "VERSION")], &json!({ "cniVersion": version }).to_string()).json();
        assert_eq!(reported["cniVersion"], version);
        let supported = reported["supportedVersions"].as_array().expect("supportedVersions is a list");
        for expected in ["0.4.0", "1.0.0", "1.1.0"] {
            assert!(supported.iter().any(|v| v == expected), "{expected} supported: {reported}");
        }

        let result = network.add(&pod).json();
        validate_add_result(version, &result, &pod, gateway, first);
        assert_eq!(network.allocations(), vec![first]);
        assert!(ping(first, Duration::from_secs(1)), "{version}: pod {first} answers a ping from the host");

        network.check(&pod, &result).ok_silent();

        let status = network.command("STATUS", &network.conf);
        let gc = network.command(
            "GC",
            &network
                .with(json!({ "cni.dev/valid-attachments": [{ "containerID": pod.container_id, "ifname": "eth0" }] })),
        );
        if version == "1.1.0" {
            status.ok_silent();
            gc.ok_silent();
            assert_eq!(network.allocations(), vec![first], "GC keeps valid attachments");
        } else {
            assert_eq!(status.code(), 1, "{version}: STATUS needs 1.1.0");
            assert_eq!(gc.code(), 1, "{version}: GC needs 1.1.0");
        }

        network.del(&pod, Some(&result)).ok_silent();
        assert_clean(&network, &pod, Some(first));
        network.del(&pod, Some(&result)).ok_silent();
        network.del(&pod, None).ok_silent();
        assert_clean(&network, &pod, Some(first));
    }
}

#[test]
fn del_without_netns_or_prev_result_releases_everything() {
    let _route = ClusterRoute::hold();
    let network = Network::new("1.0.0", &common::small_subnet());
    let pod = Pod::new("gone");
    let result = network.add(&pod).json();
    let ip = result_ip(&result);
    let outcome = common::exec(
        &[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", &pod.container_id), ("CNI_IFNAME", "eth0")],
        &network.conf.to_string(),
    );
    outcome.ok_silent();
    assert_clean(&network, &pod, Some(ip));
}

/// Breaks one part of a pod's wiring.
type Breaker = dyn Fn(&Pod, Ipv4Addr);

#[test]
fn check_detects_drift() {
    let _route = ClusterRoute::hold();
    let network = Network::new("1.1.0", &common::small_subnet());
    let drifts: [(&str, &Breaker, &str); 5] = [
        ("default route", &|pod, _| drop(pod.netns.ip(&["route", "del", "default"])), "default route"),
        ("address", &|pod, ip| drop(pod.netns.ip(&["addr", "del", &format!("{ip}/32"), "dev", "eth0"])), "address"),
        ("pod link down", &|pod, _| drop(pod.netns.ip(&["link", "set", "eth0", "down"])), "down"),
        (
            "host route",
            &|pod, ip| drop(common::ip(&["route", "del", &format!("{ip}/32"), "dev", &pod.host_veth()])),
            "host route",
        ),
        ("host veth", &|pod, _| drop(common::ip(&["link", "del", &pod.host_veth()])), "missing"),
    ];
    for (what, break_it, expected) in drifts {
        let pod = Pod::new("drift");
        let result = network.add(&pod).json();
        let ip = result_ip(&result);
        network.check(&pod, &result).ok_silent();
        break_it(&pod, ip);
        let error = network.check(&pod, &result).error();
        assert_eq!(error["code"], 103, "{what}: drift code: {error}");
        let details = error["details"].as_str().expect("details");
        assert!(details.contains(expected), "{what}: details mention {expected:?}: {details}");
        network.del(&pod, Some(&result)).ok_silent();
        assert_clean(&network, &pod, Some(ip));
    }

    // A released reservation is drift too.
    let pod = Pod::new("drift");
    let result = network.add(&pod).json();
    let ip = result_ip(&result);
    std::fs::remove_file(network.state_dir().join(ip.to_string())).expect("remove allocation file");
    let error = network.check(&pod, &result).error();
    assert!(error["details"].as_str().expect("details").contains("reserved"), "{error}");
    network.del(&pod, Some(&result)).ok_silent();
    assert_clean(&network, &pod, Some(ip));

    // CHECK without prevResult is an invalid configuration.
    let pod = Pod::new("drift");
    assert_eq!(network.attach("CHECK", &pod, &network.conf).code(), 7);
}

#[test]
fn gc_releases_every_allocation_not_listed() {
    let _route = ClusterRoute::hold();
    let network = Network::new("1.1.0", &common::small_subnet());
    let pods: Vec<Pod> = (0..3).map(|_| Pod::new("gc")).collect();
    let results: Vec<Value> = pods.iter().map(|pod| network.add(pod).json()).collect();
    let ips: Vec<Ipv4Addr> = results.iter().map(result_ip).collect();

    let keep = |indices: &[usize]| {
        let list: Vec<Value> =
            indices.iter().map(|&i| json!({ "containerID": pods[i].container_id, "ifname": "eth0" })).collect();
        network.with(json!({ "cni.dev/valid-attachments": list }))
    };
    network.command("GC", &keep(&[0, 2])).ok_silent();
    assert_eq!(network.allocations(), vec![ips[0], ips[2]]);
    assert!(!host_link_exists(&pods[1].host_veth()), "GC removed the stale host veth");
    assert!(host_routes_to(ips[1]).is_empty(), "GC removed the stale route");
    assert!(ping(ips[0], Duration::from_secs(1)) && ping(ips[2], Duration::from_secs(1)), "kept pods still answer");

    network.command("GC", &keep(&[0, 2])).ok_silent();
    assert_eq!(network.allocations(), vec![ips[0], ips[2]], "a second GC changes nothing");
    assert_eq!(network.command("GC", &network.conf).code(), 7, "GC without valid-attachments is refused");

    network.command("GC", &keep(&[])).ok_silent();
    assert!(network.allocations().is_empty(), "GC with an empty list releases everything");
    for (pod, result) in pods.iter().zip(&results) {
        network.del(pod, Some(result)).ok_silent();
        assert_clean(&network, pod, Some(result_ip(result)));
    }
}

#[test]
fn pods_reach_each_other_through_the_host() {
    let _route = ClusterRoute::hold();
    let network = Network::new("1.0.0", &common::small_subnet());
    let (a, b) = (Pod::new("peer"), Pod::new("peer"));
    let (result_a, result_b) = (network.add(&a).json(), network.add(&b).json());
    let (ip_a, ip_b) = (result_ip(&result_a), result_ip(&result_b));
    assert!(a.netns.run(|| ping(ip_b, Duration::from_secs(1))), "pod a reaches pod b");
    assert!(b.netns.run(|| ping(ip_a, Duration::from_secs(1))), "pod b reaches pod a");
    let gateway = gateway_and_first(network.conf["podCIDR"].as_str().expect("podCIDR")).0;
    assert!(a.netns.run(|| ping(gateway, Duration::from_secs(1))), "pod a reaches its gateway");
    network.del(&a, Some(&result_a)).ok_silent();
    network.del(&b, Some(&result_b)).ok_silent();
    assert_clean(&network, &a, Some(ip_a));
    assert_clean(&network, &b, Some(ip_b));
}

#[test]
fn dns_and_mtu_from_the_configuration() {
    let _route = ClusterRoute::hold();
    let base = Network::new("1.1.0", &common::small_subnet());
    let conf =
        base.with(json!({ "mtu": 1400, "dns": { "nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"] } }));
    let pod = Pod::new("mtu");
    let result = base.attach("ADD", &pod, &conf).json();
    assert_eq!(result["dns"]["nameservers"][0], "10.96.0.10");
    assert_eq!(result["dns"]["search"][0], "svc.cluster.local");
    assert_eq!(result["interfaces"][1]["mtu"], 1400);
    let links = pod.netns.ip(&["-o", "link", "show", "dev", "eth0"]);
    assert!(links.contains("mtu 1400"), "pod MTU: {links}");
    let host =
        String::from_utf8_lossy(&common::ip(&["-o", "link", "show", "dev", &pod.host_veth()]).stdout).into_owned();
    assert!(host.contains("mtu 1400"), "host veth MTU: {host}");
    let ip = result_ip(&result);
    base.attach("DEL", &pod, &conf).ok_silent();
    assert_clean(&base, &pod, Some(ip));
}

#[test]
fn leftover_of_an_interrupted_attachment_is_replaced() {
    let _route = ClusterRoute::hold();
    let network = Network::new("1.0.0", &common::small_subnet());
    let old = Pod::new("leftover");
    let first = network.add(&old).json();
    // The runtime lost the first sandbox without DEL and retries the same container ID in a new namespace.
    let retry = Pod { netns: common::Netns::new(), container_id: old.container_id.clone(), ifname: "eth0".into() };
    let second = network.add(&retry).json();
    let ip = result_ip(&second);
    assert_eq!(network.allocations(), vec![ip], "the old allocation was released: {first}");
    assert!(!old.netns.ip(&["-o", "link", "show"]).contains("eth0@"), "old pod side went with the old host veth");
    assert!(ping(ip, Duration::from_secs(1)), "the new attachment works");
    network.del(&retry, Some(&second)).ok_silent();
    assert_clean(&network, &retry, Some(ip));
    assert_clean(&network, &old, Some(result_ip(&first)));
}
