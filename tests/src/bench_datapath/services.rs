//! The desired state every datapath programs: `count` ClusterIP Services (`bench/svc-NNNNN`, TCP
//! port `http` 80 → 8080) with three endpoints each, and the chain-name hashes kube-proxy derives
//! from them.

use std::net::{Ipv4Addr, SocketAddrV4};

/// Namespace of every benchmark Service.
pub const NAMESPACE: &str = "bench";
/// The one port of each Service.
pub const PORT_NAME: &str = "http";
pub const SERVICE_PORT: u16 = 80;
pub const TARGET_PORT: u16 = 8080;
/// The cluster (pod) CIDR kube-proxy's local-traffic detector uses: sources outside it are
/// masqueraded. The client is a pod inside it, as in-cluster clients are.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// kube-proxy's default masquerade mark (`--masquerade-bit 14`).
pub const MASQ_MARK: &str = "0x4000";
/// The first Service's ClusterIP; the others follow (10 000 Services end at 10.96.55.16).
const FIRST_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 16, 1);

/// One Service port with its endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub vip: Ipv4Addr,
    pub endpoints: Vec<Ipv4Addr>,
}

impl Service {
    /// kube-proxy's `ServicePortName.String()`: `namespace/name:port`.
    pub fn port_name(&self) -> String {
        format!("{NAMESPACE}/{}:{PORT_NAME}", self.name)
    }

    pub fn address(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.vip, SERVICE_PORT)
    }
}

/// All Services, in the order the datapaths write them (the first is matched first by iptables'
/// linear `KUBE-SERVICES`, the last one last).
#[derive(Debug, Clone)]
pub struct ServiceTable {
    pub services: Vec<Service>,
}

impl ServiceTable {
    pub fn new(count: usize, endpoints: &[Ipv4Addr]) -> ServiceTable {
        let services = (0..count)
            .map(|index| Service {
                name: format!("svc-{index:05}"),
                vip: Ipv4Addr::from(u32::from(FIRST_VIP) + index as u32),
                endpoints: endpoints.to_vec(),
            })
            .collect();
        ServiceTable { services }
    }

    pub fn total_endpoints(&self) -> usize {
        self.services.iter().map(|service| service.endpoints.len()).sum()
    }
}

/// A stable base32 digest of `input`, `len` characters long (at most 25). kube-proxy uses the
/// first characters of base32(sha256(…)); any stable hash gives chain names of the same shape and
/// length, which is all the rules' cost depends on.
pub fn digest(input: &str, len: usize) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let fnv =
        |seed: u64| input.bytes().fold(seed, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01B3));
    let bits = (u128::from(fnv(0xcbf2_9ce4_8422_2325)) << 64) | u128::from(fnv(0x8422_2325_cbf2_9ce4));
    (0..len.min(25)).map(|i| char::from(ALPHABET[((bits >> (i * 5)) & 31) as usize])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_get_consecutive_vips_inside_the_service_cidr() {
        let table = ServiceTable::new(10_000, &[Ipv4Addr::new(10, 244, 9, 10)]);
        assert_eq!(table.services[0].vip, Ipv4Addr::new(10, 96, 16, 1));
        let last = table.services[9_999].vip.octets();
        assert_eq!(last[0], 10);
        assert!((96..112).contains(&last[1]), "last VIP {last:?} is outside 10.96.0.0/12");
        assert_eq!(table.services[42].port_name(), "bench/svc-00042:http");
        assert_eq!(table.total_endpoints(), 10_000);
    }

    #[test]
    fn digests_are_stable_and_distinct() {
        assert_eq!(digest("bench/svc-00001:http/tcp", 16), digest("bench/svc-00001:http/tcp", 16));
        assert_ne!(digest("bench/svc-00001:http/tcp", 16), digest("bench/svc-00002:http/tcp", 16));
        assert_eq!(digest("x", 16).len(), 16);
        assert!(digest("x", 8).bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)));
    }
}
