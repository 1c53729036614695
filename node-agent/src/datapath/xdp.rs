//! Attaching `xdp_nodeport` (the NodePort fast path, see `ebpf/programs/src/xdp.rs`) to the
//! node's external interface, and the local pod CIDRs it relies on.
//!
//! `xdp_nodeport` translates a packet itself when the flow's backend is local, that is inside
//! one of the CIDRs written by [`Datapath::set_local_cidrs`] (this node's pod CIDRs, whose
//! addresses sit behind pod veths here), and passes it up; when the backend is remote and the
//! client is not a local pod, it also SNATs the flow to [`Datapath::set_snat_addr`] and forwards
//! it itself (FIB lookup, then `XDP_TX` or redirect). Everything else it passes to the stack
//! unchanged, for `tc_nat` to translate or ignore. The same CIDRs tell `tc_nat` which flows need
//! SNAT. So XDP goes together with `tc_nat` on the same interface
//! (remote backends) and on the pods' veths (replies). A reply reverse-translated on a pod veth
//! carries the node's own address as its source, which the kernel drops as martian unless
//! `net.ipv4.conf.<veth>.accept_local` is 1 (and `rp_filter` is not strict) on the pod veths;
//! the `keelson` CNI plugin sets both on every host veth it creates.
//!
//! Attached with aya's default mode (the kernel picks native XDP where the driver has it, as veth
//! does on 6.18, else generic). Interfaces are resolved by name in the network namespace of the
//! calling thread. Safety rule: only interfaces the project created, never a machine's uplink on
//! a shared machine.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use aya::Ebpf;
use aya::programs::xdp::XdpLinkId;
use aya::programs::{Xdp, XdpMode};
use keelson_ebpf_common::{LOCAL_CIDRS, LOCAL_CIDRS_MAX_ENTRIES, LocalCidr, PROG_XDP_NODEPORT, SNAT_ADDR};

use super::{Datapath, Error};

/// An IPv4 network, e.g. a node's pod CIDR `10.244.1.0/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    /// The network address (host bits cleared by [`Cidr::new`] and parsing).
    pub addr: Ipv4Addr,
    /// 1 to 32.
    pub prefix_len: u8,
}

impl Cidr {
    /// `addr/prefix_len` with the host bits cleared; `None` for a prefix of 0 or above 32.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Option<Self> {
        if !(1..=32).contains(&prefix_len) {
            return None;
        }
        Some(Self { addr: LocalCidr::new(addr, prefix_len).network(), prefix_len })
    }

    /// Whether `addr` lies inside.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        LocalCidr::new(self.addr, self.prefix_len).contains(u32::from_ne_bytes(addr.octets()))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// A string that is not `a.b.c.d/len` with `len` in 1..=32.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an IPv4 CIDR such as 10.244.1.0/24")]
pub struct CidrParseError(String);

impl FromStr for Cidr {
    type Err = CidrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CidrParseError(s.to_owned());
        let (addr, len) = s.split_once('/').ok_or_else(bad)?;
        Self::new(addr.parse().map_err(|_| bad())?, len.parse().map_err(|_| bad())?).ok_or_else(bad)
    }
}

/// `xdp_nodeport` on one interface.
pub(super) struct XdpAttachment {
    iface: String,
    link: XdpLinkId,
}

/// Loads `xdp_nodeport` into the kernel (nothing attached yet).
pub(super) fn load(ebpf: &mut Ebpf) -> Result<(), Error> {
    program(ebpf)?.load().map_err(|source| Error::LoadProgram { prog: PROG_XDP_NODEPORT, source })
}

fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp, Error> {
    super::typed_program(ebpf, PROG_XDP_NODEPORT)
}

impl Datapath {
    /// Attaches `xdp_nodeport` to `iface`, named in the calling thread's network namespace: the
    /// node's external interface (one the project created). Dropping the `Datapath` detaches it.
    pub fn attach_xdp(&mut self, iface: &str) -> Result<(), Error> {
        if self.xdp_attached.iter().any(|a| a.iface == iface) {
            return Err(Error::XdpAttachedAlready { iface: iface.to_owned() });
        }
        let link = program(&mut self.ebpf)?.attach(iface, XdpMode::Default).map_err(|source| Error::AttachXdp {
            prog: PROG_XDP_NODEPORT,
            iface: iface.to_owned(),
            source,
        })?;
        self.xdp_attached.push(XdpAttachment { iface: iface.to_owned(), link });
        Ok(())
    }

    /// Detaches `xdp_nodeport` from `iface` (attached by [`Self::attach_xdp`] from the same network
    /// namespace).
    pub fn detach_xdp(&mut self, iface: &str) -> Result<(), Error> {
        let index = self
            .xdp_attached
            .iter()
            .position(|a| a.iface == iface)
            .ok_or_else(|| Error::XdpNotAttached { iface: iface.to_owned() })?;
        let XdpAttachment { iface, link } = self.xdp_attached.swap_remove(index);
        program(&mut self.ebpf)?.detach(link).map_err(|source| Error::DetachXdp {
            prog: PROG_XDP_NODEPORT,
            iface,
            source,
        })
    }

    /// The interfaces `xdp_nodeport` is attached to.
    pub fn xdp_interfaces(&self) -> Vec<&str> {
        self.xdp_attached.iter().map(|a| a.iface.as_str()).collect()
    }

    /// Makes `cidrs` (at most [`LOCAL_CIDRS_MAX_ENTRIES`]) this node's pod CIDRs: backends inside
    /// them are local, and `xdp_nodeport` translates flows to them itself; a flow with neither
    /// its client nor its backend inside is SNAT'd (by both programs). Unused slots are cleared;
    /// an empty list makes XDP leave every flow to TC and turns SNAT off.
    pub fn set_local_cidrs(&mut self, cidrs: &[Cidr]) -> Result<(), Error> {
        if cidrs.len() > LOCAL_CIDRS_MAX_ENTRIES as usize {
            return Err(Error::TooManyLocalCidrs { count: cidrs.len() });
        }
        for slot in 0..LOCAL_CIDRS_MAX_ENTRIES {
            let value =
                cidrs.get(slot as usize).map_or_else(LocalCidr::default, |c| LocalCidr::new(c.addr, c.prefix_len));
            self.local_cidrs.set(slot, value, 0).map_err(|source| Error::MapUpdate { map: LOCAL_CIDRS, source })?;
        }
        Ok(())
    }

    /// Makes `addr` the source address of SNAT'd flows (those whose client and backend are both
    /// outside the local pod CIDRs): this node's own address, which the other nodes route back
    /// to it. `None` makes each flow use the node address its client reached.
    pub fn set_snat_addr(&mut self, addr: Option<Ipv4Addr>) -> Result<(), Error> {
        let value = addr.map_or(0, |addr| u32::from_ne_bytes(addr.octets()));
        self.snat_addr.set(0, value, 0).map_err(|source| Error::MapUpdate { map: SNAT_ADDR, source })
    }

    /// The SNAT address as the map holds it (`None`: the address each client reached).
    pub fn snat_addr(&self) -> Result<Option<Ipv4Addr>, Error> {
        let value = self.snat_addr.get(&0, 0).map_err(|source| Error::MapRead { map: SNAT_ADDR, source })?;
        Ok((value != 0).then(|| Ipv4Addr::from(value.to_ne_bytes())))
    }

    /// The local pod CIDRs as the map holds them.
    pub fn local_cidrs(&self) -> Result<Vec<Cidr>, Error> {
        let mut cidrs = Vec::new();
        for slot in 0..LOCAL_CIDRS_MAX_ENTRIES {
            let value = self.local_cidrs.get(&slot, 0).map_err(|source| Error::MapRead { map: LOCAL_CIDRS, source })?;
            cidrs.extend(Cidr::new(value.network(), value.prefix_len));
        }
        Ok(cidrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_clear_host_bits_and_match() {
        let cidr: Cidr = "10.244.1.9/24".parse().expect("a CIDR");
        assert_eq!(cidr, Cidr { addr: Ipv4Addr::new(10, 244, 1, 0), prefix_len: 24 });
        assert_eq!(cidr.to_string(), "10.244.1.0/24");
        assert!(cidr.contains(Ipv4Addr::new(10, 244, 1, 200)));
        assert!(!cidr.contains(Ipv4Addr::new(10, 244, 2, 1)));
        for bad in ["10.244.1.0", "10.244.1.0/0", "10.244.1.0/33", "x/24", "10.244.1.0/", "fd00::/64"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
