//! kube-proxy's nftables mode, in the shape of `pkg/proxy/nftables/proxier.go` (`table ip
//! kube-proxy`):
//!
//! - base chains `nat-prerouting`/`nat-output` → `services`: one lookup
//!   `ip daddr . meta l4proto . th dport vmap @service-ips`, whatever the number of Services;
//! - per Service `service-<hash>-bench/svc-N/tcp/http`: masquerade mark for off-cluster sources,
//!   then `numgen random mod 3 vmap { 0 : goto endpoint-…, … }`;
//! - per endpoint `endpoint-<hash>-…__10.244.9.10/8080`: hairpin mark and `dnat to`;
//! - the filter chains, sets and maps kube-proxy always installs (`cluster-ips-check`,
//!   `service-endpoints-check`, `firewall-check`, `masquerading`, …).
//!
//! A full sync is one `nft -f` transaction of everything, as kube-proxy's first sync writes it
//! (chains added then flushed, maps flushed then refilled). An endpoint change is one transaction
//! that replaces the changed Service's chains and its `service-ips` element and removes the stale
//! endpoint chain.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::datapath::{Datapath, load_rules, tool_version};
use super::services::{CLUSTER_CIDR, MASQ_MARK, SERVICE_PORT, Service, ServiceTable, TARGET_PORT, digest};
use super::topology::{NODE_CLIENT_SIDE, Netns, SERVICE_CIDR};

const TABLE: &str = "ip kube-proxy";

/// Base chains: name, type, hook, priority (filter chains see pre-DNAT addresses).
const BASE_CHAINS: [(&str, &str, &str, &str); 8] = [
    ("filter-prerouting-pre-dnat", "filter", "prerouting", "-110"),
    ("filter-output-pre-dnat", "filter", "output", "-110"),
    ("filter-forward", "filter", "forward", "0"),
    ("filter-input", "filter", "input", "0"),
    ("filter-output", "filter", "output", "0"),
    ("nat-output", "nat", "output", "-100"),
    ("nat-postrouting", "nat", "postrouting", "100"),
    ("nat-prerouting", "nat", "prerouting", "-100"),
];
const REGULAR_CHAINS: [&str; 8] = [
    "cluster-ips-check",
    "firewall-check",
    "mark-for-masquerade",
    "masquerading",
    "nodeport-endpoints-check",
    "reject-chain",
    "services",
    "service-endpoints-check",
];

pub struct Nftables {
    scratch: PathBuf,
}

impl Nftables {
    pub fn new(scratch: &Path) -> Nftables {
        Nftables { scratch: scratch.to_path_buf() }
    }

    fn load(&self, node: &Netns, name: &str, text: &str) -> anyhow::Result<Duration> {
        load_rules(&self.scratch, node, name, text, "nft", &["-f", "-"])
    }
}

impl Datapath for Nftables {
    fn version(&self) -> String {
        tool_version("nft", "--version")
    }

    fn reset(&mut self, node: &Netns) -> anyhow::Result<()> {
        // "add" first, so that "delete" never fails on a missing table.
        self.load(node, "nft-reset.nft", &format!("add table {TABLE}\ndelete table {TABLE}\n")).map(drop)
    }

    fn remove(&mut self, node: &Netns) -> anyhow::Result<()> {
        self.reset(node)
    }

    fn full_sync(&mut self, node: &Netns, table: &ServiceTable) -> anyhow::Result<Duration> {
        self.load(node, "nft-full.nft", &full_transaction(table))
    }

    fn endpoint_change(
        &mut self,
        node: &Netns,
        table: &ServiceTable,
        changed: usize,
        before: &Service,
    ) -> anyhow::Result<Duration> {
        self.load(node, "nft-partial.nft", &partial_transaction(&table.services[changed], before))
    }
}

/// `service-<8 base32>-bench/svc-N/tcp/http`.
pub fn service_chain(service: &Service) -> String {
    let base = format!("{}/tcp/http", service_path(service));
    format!("service-{}-{base}", digest(&base, 8))
}

/// `endpoint-<8 base32>-bench/svc-N/tcp/http__10.244.9.10/8080`.
pub fn endpoint_chain(service: &Service, endpoint: impl std::fmt::Display) -> String {
    let base = format!("{}/tcp/http__{endpoint}/{TARGET_PORT}", service_path(service));
    format!("endpoint-{}-{base}", digest(&base, 8))
}

fn service_path(service: &Service) -> String {
    let name = service.port_name();
    // `bench/svc-00001:http` → `bench/svc-00001`
    name.split(':').next().unwrap_or_default().to_owned()
}

/// Everything kube-proxy's first full sync writes, as one transaction.
pub fn full_transaction(table: &ServiceTable) -> String {
    let mut out = String::with_capacity(table.services.len() * 1400 + 4096);
    write_base(&mut out);
    for service in &table.services {
        write_service(&mut out, service);
        let _ = writeln!(out, "add element {TABLE} cluster-ips {{ {} }}", service.vip);
        let _ = writeln!(out, "add element {TABLE} service-ips {{ {} }}", service_ips_element(service));
    }
    out
}

/// One Service's chains and map element replaced; stale endpoint chains removed.
pub fn partial_transaction(service: &Service, before: &Service) -> String {
    let mut out = String::with_capacity(4096);
    write_service(&mut out, service);
    for gone in before.endpoints.iter().filter(|endpoint| !service.endpoints.contains(endpoint)) {
        let chain = endpoint_chain(service, gone);
        let _ = writeln!(out, "flush chain {TABLE} {chain}");
        let _ = writeln!(out, "delete chain {TABLE} {chain}");
    }
    let key = format!("{} . tcp . {SERVICE_PORT}", service.vip);
    let _ = writeln!(out, "delete element {TABLE} service-ips {{ {key} }}");
    let _ = writeln!(out, "add element {TABLE} service-ips {{ {} }}", service_ips_element(service));
    out
}

fn service_ips_element(service: &Service) -> String {
    format!("{} . tcp . {SERVICE_PORT} : goto {}", service.vip, service_chain(service))
}

/// The table, base and regular chains, sets, maps and their fixed rules (kube-proxy's
/// `setupNFTables` plus the map flushes of a full sync).
fn write_base(out: &mut String) {
    let _ = writeln!(out, "add table {TABLE} {{ comment \"rules for kube-proxy\" ; }}");
    for (name, kind, hook, priority) in BASE_CHAINS {
        let _ = writeln!(out, "add chain {TABLE} {name} {{ type {kind} hook {hook} priority {priority} ; }}");
        let _ = writeln!(out, "flush chain {TABLE} {name}");
    }
    for name in REGULAR_CHAINS {
        let _ = writeln!(out, "add chain {TABLE} {name}");
        let _ = writeln!(out, "flush chain {TABLE} {name}");
    }
    let _ = writeln!(out, "add set {TABLE} cluster-ips {{ type ipv4_addr ; comment \"Active ClusterIPs\" ; }}");
    let _ = writeln!(
        out,
        "add set {TABLE} nodeport-ips {{ type ipv4_addr ; comment \"IPs that accept NodePort traffic\" ; }}"
    );
    let key3 = "ipv4_addr . inet_proto . inet_service";
    for (map, key, comment) in [
        ("firewall-ips", key3, "destinations that are subject to LoadBalancerSourceRanges"),
        (
            "no-endpoint-nodeports",
            "inet_proto . inet_service",
            "vmap to drop or reject packets to service nodeports with no endpoints",
        ),
        ("no-endpoint-services", key3, "vmap to drop or reject packets to services with no endpoints"),
        ("service-ips", key3, "ClusterIP, ExternalIP and LoadBalancer IP traffic"),
        ("service-nodeports", "inet_proto . inet_service", "NodePort traffic"),
    ] {
        let _ = writeln!(out, "add map {TABLE} {map} {{ type {key} : verdict ; comment \"{comment}\" ; }}");
        let _ = writeln!(out, "flush map {TABLE} {map}");
    }
    let _ = writeln!(out, "flush set {TABLE} cluster-ips");
    let _ = writeln!(out, "flush set {TABLE} nodeport-ips");
    let _ = writeln!(out, "add element {TABLE} nodeport-ips {{ {NODE_CLIENT_SIDE} }}");
    let vmap3 = "ip daddr . meta l4proto . th dport vmap";
    for (chain, rule) in [
        ("filter-prerouting-pre-dnat", "ct state new jump firewall-check".to_owned()),
        ("filter-forward", "ct state new jump service-endpoints-check".to_owned()),
        ("filter-forward", "ct state new jump cluster-ips-check".to_owned()),
        ("filter-input", "ct state new jump nodeport-endpoints-check".to_owned()),
        ("filter-input", "ct state new jump service-endpoints-check".to_owned()),
        ("filter-output", "ct state new jump service-endpoints-check".to_owned()),
        ("filter-output-pre-dnat", "ct state new jump firewall-check".to_owned()),
        ("filter-output", "ct state new jump cluster-ips-check".to_owned()),
        ("nat-output", "jump services".to_owned()),
        ("nat-postrouting", "jump masquerading".to_owned()),
        ("nat-prerouting", "jump services".to_owned()),
        (
            "cluster-ips-check",
            "ip daddr @cluster-ips reject comment \"Reject traffic to invalid ports of ClusterIPs\"".to_owned(),
        ),
        (
            "cluster-ips-check",
            format!("ip daddr {{ {SERVICE_CIDR} }} drop comment \"Drop traffic to unallocated ClusterIPs\""),
        ),
        ("firewall-check", format!("{vmap3} @firewall-ips")),
        ("mark-for-masquerade", format!("mark set mark or {MASQ_MARK}")),
        ("masquerading", format!("mark and {MASQ_MARK} == 0 return")),
        ("masquerading", format!("mark set mark xor {MASQ_MARK}")),
        ("masquerading", "masquerade fully-random".to_owned()),
        (
            "nodeport-endpoints-check",
            "ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports".to_owned(),
        ),
        ("reject-chain", "reject".to_owned()),
        ("services", format!("{vmap3} @service-ips")),
        ("services", "ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports".to_owned()),
        ("service-endpoints-check", format!("{vmap3} @no-endpoint-services")),
    ] {
        let _ = writeln!(out, "add rule {TABLE} {chain} {rule}");
    }
}

/// One Service's endpoint chains (added, flushed, filled) and its service chain.
fn write_service(out: &mut String, service: &Service) {
    let chain = service_chain(service);
    let _ = writeln!(out, "add chain {TABLE} {chain}");
    let _ = writeln!(out, "flush chain {TABLE} {chain}");
    for endpoint in &service.endpoints {
        let ep = endpoint_chain(service, endpoint);
        let _ = writeln!(out, "add chain {TABLE} {ep}");
        let _ = writeln!(out, "flush chain {TABLE} {ep}");
        let _ = writeln!(out, "add rule {TABLE} {ep} ip saddr {endpoint} jump mark-for-masquerade");
        let _ = writeln!(out, "add rule {TABLE} {ep} meta l4proto tcp dnat to {endpoint}:{TARGET_PORT}");
    }
    let _ = writeln!(
        out,
        "add rule {TABLE} {chain} ip daddr {} ip saddr != {CLUSTER_CIDR} jump mark-for-masquerade",
        service.vip
    );
    let targets: Vec<String> = service
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, endpoint)| format!("{i} : goto {}", endpoint_chain(service, endpoint)))
        .collect();
    let _ = writeln!(
        out,
        "add rule {TABLE} {chain} numgen random mod {} vmap {{ {} }}",
        service.endpoints.len(),
        targets.join(" , ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench_datapath::topology::BACKENDS;

    #[test]
    fn full_transaction_has_kube_proxys_shape() {
        let table = ServiceTable::new(2, &BACKENDS);
        let text = full_transaction(&table);
        let service = &table.services[1];
        let chain = service_chain(service);
        assert!(chain.starts_with("service-") && chain.ends_with("-bench/svc-00001/tcp/http"), "{chain}");
        let ep = endpoint_chain(service, BACKENDS[2]);
        assert!(ep.ends_with("-bench/svc-00001/tcp/http__10.244.9.12/8080"), "{ep}");
        assert!(
            text.contains("add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips\n")
        );
        assert!(
            text.contains(&format!(
                "add element ip kube-proxy service-ips {{ 10.96.16.2 . tcp . 80 : goto {chain} }}\n"
            ))
        );
        assert!(text.contains(&format!("add rule ip kube-proxy {chain} numgen random mod 3 vmap {{ 0 : goto ")));
        assert!(text.contains(&format!(", 2 : goto {ep} }}\n")));
        assert!(text.contains(&format!("add rule ip kube-proxy {ep} meta l4proto tcp dnat to 10.244.9.12:8080\n")));
        assert!(text.contains(&format!(
            "add rule ip kube-proxy {chain} ip daddr 10.96.16.2 ip saddr != 10.244.0.0/16 jump mark-for-masquerade\n"
        )));
        // Endpoint chains exist before the rule that jumps to them.
        assert!(text.find(&format!("add chain ip kube-proxy {ep}\n")) < text.find(&format!(", 2 : goto {ep}")));
    }

    #[test]
    fn partial_transaction_replaces_one_service() {
        let table = ServiceTable::new(3, &BACKENDS);
        let before = table.services[2].clone();
        let mut after = before.clone();
        after.endpoints.pop();
        let text = partial_transaction(&after, &before);
        assert!(text.contains("numgen random mod 2 vmap"));
        assert!(text.contains(&format!("delete chain ip kube-proxy {}\n", endpoint_chain(&after, BACKENDS[2]))));
        assert!(text.contains("delete element ip kube-proxy service-ips { 10.96.16.3 . tcp . 80 }\n"));
        assert!(!text.contains("svc-00001"));
        let back = partial_transaction(&before, &after);
        assert!(back.contains("numgen random mod 3 vmap") && !back.contains("delete chain"));
    }
}
