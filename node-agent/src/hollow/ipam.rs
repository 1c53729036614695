//! Pod addresses from a node's `spec.podCIDR`, handed out round-robin (a just-released address
//! is not reused at once). The network address and the first host (the gateway a real node's
//! bridge would take) are never given out, nor the IPv4 broadcast address. One [`Ipam`] per
//! hollow node, behind that node's lock.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpamError {
    #[error("{0:?} is not a CIDR")]
    BadCidr(String),
    #[error("no free address left in {0}")]
    Exhausted(String),
}

/// A parsed CIDR: network address as a number, prefix length, family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cidr {
    text: String,
    base: u128,
    prefix: u8,
    v6: bool,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, IpamError> {
        let bad = || IpamError::BadCidr(s.to_string());
        let (addr, len) = s.split_once('/').ok_or_else(bad)?;
        let ip: IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = len.parse().map_err(|_| bad())?;
        let (bits, v6, raw) = match ip {
            IpAddr::V4(a) => (32u8, false, u128::from(u32::from(a))),
            IpAddr::V6(a) => (128u8, true, u128::from(a)),
        };
        if prefix > bits {
            return Err(bad());
        }
        let host_bits = u32::from(bits - prefix);
        let mask = if host_bits == 128 { 0 } else { !((1u128 << host_bits) - 1) };
        Ok(Cidr { text: s.to_string(), base: raw & mask, prefix, v6 })
    }

    fn host_bits(&self) -> u32 {
        u32::from(if self.v6 { 128 } else { 32 } - self.prefix)
    }

    /// Offsets that may be handed out: `first..=last` (empty when `first > last`).
    fn usable(&self) -> (u128, u128) {
        let size_minus_one = if self.host_bits() >= 128 { u128::MAX } else { (1u128 << self.host_bits()) - 1 };
        let last = if self.v6 { size_minus_one } else { size_minus_one.saturating_sub(1) };
        (2, last)
    }

    fn addr(&self, offset: u128) -> IpAddr {
        let raw = self.base + offset;
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(raw))
        } else {
            IpAddr::V4(Ipv4Addr::from(u32::try_from(raw).expect("IPv4 offset stays inside 32 bits")))
        }
    }

    #[cfg(test)]
    fn offset_of(&self, ip: IpAddr) -> Option<u128> {
        let raw = match (ip, self.v6) {
            (IpAddr::V4(a), false) => u128::from(u32::from(a)),
            (IpAddr::V6(a), true) => u128::from(a),
            _ => return None,
        };
        let off = raw.checked_sub(self.base)?;
        (self.host_bits() >= 128 || off >> self.host_bits() == 0).then_some(off)
    }

    #[cfg(test)]
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.offset_of(ip).is_some()
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// One node's pod addresses.
#[derive(Debug, Default)]
pub struct Ipam {
    cidr: Option<Cidr>,
    /// Addresses in use; may hold addresses outside the CIDR (claimed before it was known).
    used: HashSet<IpAddr>,
    next: u128,
}

impl Ipam {
    /// Sets the podCIDR; returns whether it changed.
    pub fn set_cidr(&mut self, cidr: Cidr) -> bool {
        if self.cidr.as_ref() == Some(&cidr) {
            return false;
        }
        self.next = cidr.usable().0;
        self.cidr = Some(cidr);
        true
    }

    /// Marks an address as taken (a pod that already has it, found after a restart).
    pub fn claim(&mut self, ip: IpAddr) {
        self.used.insert(ip);
    }

    pub fn release(&mut self, ip: IpAddr) {
        self.used.remove(&ip);
    }

    /// The next free address, or `Ok(None)` while the node has no podCIDR.
    pub fn allocate(&mut self) -> Result<Option<IpAddr>, IpamError> {
        let Some(cidr) = &self.cidr else { return Ok(None) };
        let (first, last) = cidr.usable();
        if first > last {
            return Err(IpamError::Exhausted(cidr.to_string()));
        }
        let span = last - first + 1;
        // Among `used.len() + 1` distinct offsets at least one is free, unless the range is full.
        let tries = span.min(self.used.len() as u128 + 1);
        let mut off = if (first..=last).contains(&self.next) { self.next } else { first };
        for _ in 0..tries {
            let ip = cidr.addr(off);
            off = if off == last { first } else { off + 1 };
            if self.used.insert(ip) {
                self.next = off;
                return Ok(Some(ip));
            }
        }
        Err(IpamError::Exhausted(cidr.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn parses_and_normalizes() {
        let c = Cidr::parse("10.244.1.7/24").expect("valid");
        assert!(c.contains(ip("10.244.1.255")));
        assert!(!c.contains(ip("10.244.2.0")));
        assert!(!c.contains(ip("fd00::1")));
        for bad in ["10.244.1.0", "10.244.1.0/33", "x/24", "10.0.0.0/-1"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn allocates_round_robin_skipping_network_gateway_and_broadcast() {
        let mut m = Ipam::default();
        assert_eq!(m.allocate(), Ok(None), "no CIDR yet");
        assert!(m.set_cidr(Cidr::parse("10.244.3.0/29").expect("valid")));
        let got: Vec<_> = (0..5).map(|_| m.allocate().expect("free").expect("cidr")).collect();
        assert_eq!(got, ["10.244.3.2", "10.244.3.3", "10.244.3.4", "10.244.3.5", "10.244.3.6"].map(ip));
        assert!(matches!(m.allocate(), Err(IpamError::Exhausted(_))));
        m.release(ip("10.244.3.4"));
        assert_eq!(m.allocate(), Ok(Some(ip("10.244.3.4"))));
    }

    #[test]
    fn released_addresses_wait_their_turn_and_claims_are_respected() {
        let mut m = Ipam::default();
        m.claim(ip("10.244.0.2"));
        m.set_cidr(Cidr::parse("10.244.0.0/24").expect("valid"));
        let a = m.allocate().expect("free").expect("cidr");
        assert_eq!(a, ip("10.244.0.3"), "claimed address skipped");
        m.release(a);
        assert_eq!(m.allocate(), Ok(Some(ip("10.244.0.4"))), "round robin, not the released one");
        assert!(!m.set_cidr(Cidr::parse("10.244.0.0/24").expect("valid")), "same CIDR is no change");
    }

    #[test]
    fn ipv6() {
        let mut m = Ipam::default();
        m.set_cidr(Cidr::parse("fd00:10:244:1::/64").expect("valid"));
        assert_eq!(m.allocate(), Ok(Some(ip("fd00:10:244:1::2"))));
    }
}
