//! kube-proxy's iptables mode, through Debian's default `iptables` (iptables-nft), in the rule
//! shape of `pkg/proxy/iptables/proxier.go`:
//!
//! - nat `PREROUTING`/`OUTPUT` → `KUBE-SERVICES`: one rule per Service (`-d VIP --dport 80 -j
//!   KUBE-SVC-…`), walked linearly, then the `KUBE-NODEPORTS` rule;
//! - `KUBE-SVC-…`: mark off-cluster sources for masquerade, then one rule per endpoint with
//!   `-m statistic --mode random --probability` 1/3, 1/2 and a last unconditional one;
//! - `KUBE-SEP-…`: hairpin `KUBE-MARK-MASQ` and `DNAT --to-destination`;
//! - the filter table's `KUBE-FORWARD` and the empty per-Service filter chains.
//!
//! A full sync is one `iptables-restore --noflush` of both tables as kube-proxy writes them. An
//! endpoint change is kube-proxy's partial sync: the filter table and the nat table's fixed
//! chains again, all of `KUBE-SERVICES` (kube-proxy always rewrites it), and only the changed
//! Service's `KUBE-SVC`/`KUBE-SEP` chains, stale ones flushed and deleted. Below 1 000 endpoints
//! kube-proxy also runs `iptables-save -t nat` on every sync to find stale chains, and so does
//! this; past 1 000 ("large cluster mode") it skips that, drops the per-endpoint comments and
//! defers deleting stale chains, and so does this.
//!
//! The jump rules from the built-in chains (`iptables -I PREROUTING …` in kube-proxy) are
//! installed by the untimed reset, once, like kube-proxy's start-up checks.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use super::datapath::{Datapath, load_rules, tool_version};
use super::services::{CLUSTER_CIDR, MASQ_MARK, SERVICE_PORT, Service, ServiceTable, TARGET_PORT, digest};
use super::topology::Netns;

/// kube-proxy's `largeClusterEndpointsThreshold`.
const LARGE_CLUSTER_ENDPOINTS: usize = 1000;
/// `iptables-restore` as kube-proxy runs it (wait for the lock, never flush, keep counters).
const RESTORE_ARGS: [&str; 6] = ["-w", "5", "-W", "100000", "--noflush", "--counters"];
const FILTER_CHAINS: [&str; 5] =
    ["KUBE-NODEPORTS", "KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD", "KUBE-PROXY-FIREWALL"];
const NAT_CHAINS: [&str; 4] = ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"];

pub struct Iptables {
    scratch: PathBuf,
}

impl Iptables {
    pub fn new(scratch: &Path) -> Iptables {
        Iptables { scratch: scratch.to_path_buf() }
    }

    fn restore(&self, node: &Netns, name: &str, text: &str) -> anyhow::Result<Duration> {
        load_rules(&self.scratch, node, name, text, "iptables-restore", &RESTORE_ARGS)
    }
}

impl Datapath for Iptables {
    fn version(&self) -> String {
        tool_version("iptables", "--version")
    }

    fn reset(&mut self, node: &Netns) -> anyhow::Result<()> {
        self.remove(node)?;
        self.restore(node, "iptables-reset.rules", &reset_rules()).map(drop)
    }

    fn remove(&mut self, node: &Netns) -> anyhow::Result<()> {
        // iptables-nft keeps each table as an nftables table of the same name; deleting them
        // whole is instant at any size and unregisters their hooks (a restore that flushes
        // leaves the base chains, and with them conntrack and NAT, in place).
        let path = self.scratch.join("iptables-remove.nft");
        std::fs::write(&path, "add table ip nat\ndelete table ip nat\nadd table ip filter\ndelete table ip filter\n")
            .with_context(|| format!("write {}", path.display()))?;
        node.exec("nft", &["-f", "-"], Some(&path)).map(drop)
    }

    fn full_sync(&mut self, node: &Netns, table: &ServiceTable) -> anyhow::Result<Duration> {
        let listing = stale_chain_listing(node, table)?;
        Ok(listing + self.restore(node, "iptables-full.rules", &full_restore(table))?)
    }

    fn endpoint_change(
        &mut self,
        node: &Netns,
        table: &ServiceTable,
        changed: usize,
        before: &Service,
    ) -> anyhow::Result<Duration> {
        let listing = stale_chain_listing(node, table)?;
        Ok(listing + self.restore(node, "iptables-partial.rules", &partial_restore(table, changed, before))?)
    }
}

/// Outside large-cluster mode kube-proxy runs `iptables-save -t nat` on every sync to find stale
/// chains; that is part of its sync time.
fn stale_chain_listing(node: &Netns, table: &ServiceTable) -> anyhow::Result<Duration> {
    if table.total_endpoints() > LARGE_CLUSTER_ENDPOINTS {
        return Ok(Duration::ZERO);
    }
    node.exec("iptables-save", &["-t", "nat"], None)
}

/// `KUBE-SVC-<16 base32>` from the Service port name and protocol.
pub fn service_chain(service: &Service) -> String {
    format!("KUBE-SVC-{}", digest(&format!("{}tcp", service.port_name()), 16))
}

/// `KUBE-SEP-<16 base32>` from the Service port name, protocol and endpoint.
pub fn endpoint_chain(service: &Service, endpoint: impl std::fmt::Display) -> String {
    format!("KUBE-SEP-{}", digest(&format!("{}tcp{endpoint}:{TARGET_PORT}", service.port_name()), 16))
}

/// The fixed chains declared and the jumps from the built-in chains in place, on empty tables.
pub fn reset_rules() -> String {
    let mut out = String::new();
    out.push_str("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for chain in FILTER_CHAINS {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    let new = "-m conntrack --ctstate NEW";
    for line in [
        format!("-A INPUT {new} -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL"),
        "-A INPUT -m comment --comment \"kubernetes health check service ports\" -j KUBE-NODEPORTS".to_owned(),
        format!(
            "-A INPUT {new} -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES"
        ),
        format!("-A FORWARD {new} -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL"),
        "-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD".to_owned(),
        format!("-A FORWARD {new} -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"),
        format!(
            "-A FORWARD {new} -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES"
        ),
        format!("-A OUTPUT {new} -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL"),
        format!("-A OUTPUT {new} -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"),
    ] {
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str("COMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    out.push_str(":POSTROUTING ACCEPT [0:0]\n");
    for chain in NAT_CHAINS {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    out.push_str("-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n");
    out.push_str("-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n");
    out.push_str("-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n");
    out.push_str("COMMIT\n");
    out
}

/// What kube-proxy's full sync restores: both tables, every Service.
pub fn full_restore(table: &ServiceTable) -> String {
    let large = table.total_endpoints() > LARGE_CLUSTER_ENDPOINTS;
    let mut out = String::with_capacity(table.services.len() * 1100 + 2048);
    write_filter(&mut out);
    out.push_str("*nat\n");
    for chain in NAT_CHAINS {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    for service in &table.services {
        declare_service_chains(&mut out, service);
    }
    write_nat_fixed_rules(&mut out, table);
    for service in &table.services {
        write_service_rules(&mut out, service, large);
    }
    out.push_str("COMMIT\n");
    out
}

/// What kube-proxy's partial sync restores after `table.services[changed]` went from `before`'s
/// endpoints to its current ones.
pub fn partial_restore(table: &ServiceTable, changed: usize, before: &Service) -> String {
    let large = table.total_endpoints() > LARGE_CLUSTER_ENDPOINTS;
    let service = &table.services[changed];
    let mut out = String::with_capacity(table.services.len() * 200 + 4096);
    write_filter(&mut out);
    out.push_str("*nat\n");
    for chain in NAT_CHAINS {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    declare_service_chains(&mut out, service);
    // Stale chains: declared (which flushes them: a chain with rules cannot be deleted), then
    // deleted. Large clusters leave them for a later cleanup.
    let stale: Vec<String> = if large {
        Vec::new()
    } else {
        before
            .endpoints
            .iter()
            .filter(|endpoint| !service.endpoints.contains(endpoint))
            .map(|gone| endpoint_chain(service, gone))
            .collect()
    };
    for chain in &stale {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    write_nat_fixed_rules(&mut out, table);
    write_service_rules(&mut out, service, large);
    for chain in &stale {
        let _ = writeln!(out, "-X {chain}");
    }
    out.push_str("COMMIT\n");
    out
}

fn write_filter(out: &mut String) {
    out.push_str("*filter\n");
    for chain in FILTER_CHAINS {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    out.push_str("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n");
    let _ = writeln!(
        out,
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT"
    );
    out.push_str(
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n",
    );
    out.push_str("COMMIT\n");
}

fn declare_service_chains(out: &mut String, service: &Service) {
    let _ = writeln!(out, ":{} - [0:0]", service_chain(service));
    for endpoint in &service.endpoints {
        let _ = writeln!(out, ":{} - [0:0]", endpoint_chain(service, endpoint));
    }
}

/// `KUBE-SERVICES` in full (one rule per Service, then the NodePort rule), `KUBE-MARK-MASQ` and
/// `KUBE-POSTROUTING`.
fn write_nat_fixed_rules(out: &mut String, table: &ServiceTable) {
    for service in &table.services {
        let _ = writeln!(
            out,
            "-A KUBE-SERVICES -m comment --comment \"{} cluster IP\" -m tcp -p tcp -d {} --dport {SERVICE_PORT} -j {}",
            service.port_name(),
            service.vip,
            service_chain(service)
        );
    }
    out.push_str(
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n",
    );
    let _ = writeln!(out, "-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}");
    let _ = writeln!(out, "-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN");
    let _ = writeln!(out, "-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}");
    out.push_str(
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n",
    );
}

/// One Service's `KUBE-SVC` and `KUBE-SEP` rules.
fn write_service_rules(out: &mut String, service: &Service, large: bool) {
    let name = service.port_name();
    let svc = service_chain(service);
    let _ = writeln!(
        out,
        "-A {svc} -m comment --comment \"{name} cluster IP\" -m tcp -p tcp -d {} --dport {SERVICE_PORT} ! -s {CLUSTER_CIDR} -j KUBE-MARK-MASQ",
        service.vip
    );
    let count = service.endpoints.len();
    for (i, endpoint) in service.endpoints.iter().enumerate() {
        let _ = write!(out, "-A {svc}");
        if !large {
            let _ = write!(out, " -m comment --comment \"{name} -> {endpoint}:{TARGET_PORT}\"");
        }
        if i + 1 < count {
            let _ = write!(out, " -m statistic --mode random --probability {:.10}", 1.0 / (count - i) as f64);
        }
        let _ = writeln!(out, " -j {}", endpoint_chain(service, endpoint));
    }
    for endpoint in &service.endpoints {
        let sep = endpoint_chain(service, endpoint);
        let comment = if large { String::new() } else { format!(" -m comment --comment {name}") };
        let _ = writeln!(out, "-A {sep}{comment} -s {endpoint} -j KUBE-MARK-MASQ");
        let _ = writeln!(out, "-A {sep}{comment} -m tcp -p tcp -j DNAT --to-destination {endpoint}:{TARGET_PORT}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench_datapath::topology::BACKENDS;

    #[test]
    fn full_restore_has_kube_proxys_shape() {
        let table = ServiceTable::new(2, &BACKENDS);
        let text = full_restore(&table);
        let svc = service_chain(&table.services[1]);
        let sep = endpoint_chain(&table.services[1], BACKENDS[0]);
        assert!(text.starts_with("*filter\n"), "{text}");
        assert!(text.contains(&format!(
            "-A KUBE-SERVICES -m comment --comment \"bench/svc-00001:http cluster IP\" -m tcp -p tcp -d 10.96.16.2 --dport 80 -j {svc}\n"
        )));
        assert!(text.contains(&format!(
            "-A {svc} -m comment --comment \"bench/svc-00001:http -> 10.244.9.10:8080\" -m statistic --mode random --probability 0.3333333333 -j {sep}\n"
        )));
        assert!(text.contains("--probability 0.5000000000 -j"));
        let last = endpoint_chain(&table.services[1], BACKENDS[2]);
        assert!(text.contains(&format!(
            "-A {svc} -m comment --comment \"bench/svc-00001:http -> 10.244.9.12:8080\" -j {last}\n"
        )));
        assert!(text.contains(&format!(
            "-A {sep} -m comment --comment bench/svc-00001:http -s 10.244.9.10 -j KUBE-MARK-MASQ\n"
        )));
        assert!(text.contains(&format!(
            "-A {sep} -m comment --comment bench/svc-00001:http -m tcp -p tcp -j DNAT --to-destination 10.244.9.10:8080\n"
        )));
        assert_eq!(text.matches("COMMIT\n").count(), 2);
        // The NodePort rule is the last one of KUBE-SERVICES.
        let nodeports = text.find("-j KUBE-NODEPORTS\n").expect("nodeport rule");
        assert!(text.rfind("-A KUBE-SERVICES").expect("services rules") < nodeports);
    }

    #[test]
    fn large_clusters_drop_endpoint_comments() {
        let table = ServiceTable::new(400, &BACKENDS);
        let text = full_restore(&table);
        assert!(!text.contains(" -> 10.244.9.10:8080"));
        assert!(text.contains("\"bench/svc-00399:http cluster IP\""));
    }

    #[test]
    fn partial_restore_rewrites_services_and_only_the_changed_chains() {
        let mut table = ServiceTable::new(3, &BACKENDS);
        let before = table.services[2].clone();
        table.services[2].endpoints.pop();
        let text = partial_restore(&table, 2, &before);
        assert_eq!(text.matches("-A KUBE-SERVICES -m comment --comment \"bench/svc-").count(), 3);
        // An unchanged Service's chain appears only as a KUBE-SERVICES jump target.
        assert_eq!(text.matches(&service_chain(&table.services[0])).count(), 1);
        let stale = endpoint_chain(&table.services[2], BACKENDS[2]);
        assert!(text.contains(&format!(":{stale} - [0:0]\n")));
        assert!(text.contains(&format!("-X {stale}\n")));
        assert!(text.contains("--probability 0.5000000000"));
        assert!(!text.contains("0.3333333333"));
    }
}
