//! 200 concurrent ADDs on one node, each pod in its own namespace: unique addresses, every pod answers a
//! ping from the host, and after 200 concurrent DELs the range is empty and no host veth remains
//! (privileged: run as root).

mod common;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use common::{ClusterRoute, Network, Pod, host_link_exists, host_routes_to, ping, result_ip};
use serde_json::Value;

const PODS: usize = 200;

#[test]
fn two_hundred_concurrent_adds_then_dels() {
    let _route = ClusterRoute::hold();
    let subnet = common::large_subnet();
    let network = Network::new("1.0.0", &subnet);
    let pods: Vec<Pod> = (0..PODS).map(|_| Pod::new("scale")).collect();

    let results: Vec<Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = pods.iter().map(|pod| scope.spawn(|| network.add(pod))).collect();
        handles.into_iter().map(|handle| handle.join().expect("ADD thread").json()).collect()
    });
    let ips: Vec<Ipv4Addr> = results.iter().map(result_ip).collect();
    let unique: HashSet<Ipv4Addr> = ips.iter().copied().collect();
    assert_eq!(unique.len(), PODS, "every pod got its own address");
    let network_address: Ipv4Addr = subnet.split('/').next().expect("address").parse().expect("IPv4");
    let base = u32::from(network_address);
    for ip in &ips {
        let offset = u32::from(*ip) - base;
        assert!((2..=254).contains(&offset), "{ip} is a pod address of {subnet}");
    }
    assert_eq!(network.allocations().len(), PODS);

    let unreachable: Vec<Ipv4Addr> = ips.iter().copied().filter(|ip| !ping(*ip, Duration::from_secs(1))).collect();
    assert!(unreachable.is_empty(), "pods not answering a ping from the host: {unreachable:?}");

    std::thread::scope(|scope| {
        let handles: Vec<_> =
            pods.iter().zip(&results).map(|(pod, result)| scope.spawn(|| network.del(pod, Some(result)))).collect();
        for handle in handles {
            handle.join().expect("DEL thread").ok_silent();
        }
    });
    assert!(network.allocations().is_empty(), "range is empty after the DELs: {:?}", network.allocations());
    for (pod, ip) in pods.iter().zip(&ips) {
        assert!(!host_link_exists(&pod.host_veth()), "host veth {} left behind", pod.host_veth());
        assert!(host_routes_to(*ip).is_empty(), "route to {ip} left behind");
    }
}
