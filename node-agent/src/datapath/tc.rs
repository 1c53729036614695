//! Attaching `tc_nat` (per-packet service DNAT and reverse NAT, see `ebpf/programs/src/tc.rs`) to
//! the ingress of interfaces.
//!
//! One program serves both directions, so each interface gets it once, on ingress: the host-side
//! veth of every pod (requests leaving a client pod, replies leaving a backend pod) and the node
//! interface (replies from backends on other nodes). On kernels ≥ 6.6 aya attaches through TCX
//! (a link per interface, no qdisc); older kernels get a `clsact` qdisc and a netlink filter.
//!
//! Interfaces are resolved by name in the network namespace of the calling thread. Safety rule:
//! attach only to interfaces the project created (pod veths, test links), never to a machine's
//! own uplink on a shared machine.

use aya::Ebpf;
use aya::programs::tc::{SchedClassifierLinkId, TcAttachType};
use aya::programs::{SchedClassifier, tc as aya_tc};
use aya::util::KernelVersion;
use keelson_ebpf_common::PROG_TC_NAT;

use super::{Datapath, Error};

/// `tc_nat` on the ingress of one interface.
pub(super) struct TcAttachment {
    iface: String,
    link: SchedClassifierLinkId,
}

/// Loads `tc_nat` into the kernel (nothing attached yet).
pub(super) fn load(ebpf: &mut Ebpf) -> Result<(), Error> {
    program(ebpf)?.load().map_err(|source| Error::LoadProgram { prog: PROG_TC_NAT, source })
}

fn program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, Error> {
    super::typed_program(ebpf, PROG_TC_NAT)
}

impl Datapath {
    /// Attaches `tc_nat` to the ingress of `iface`, named in the calling thread's network
    /// namespace: a pod's host-side veth or the node interface. Only for interfaces the project
    /// created. Dropping the `Datapath` detaches it.
    pub fn attach_tc(&mut self, iface: &str) -> Result<(), Error> {
        if self.tc_attached.iter().any(|a| a.iface == iface) {
            return Err(Error::TcAttachedAlready { iface: iface.to_owned() });
        }
        // Without TCX the netlink filter needs a clsact qdisc; adding it again only fails with
        // EEXIST, and any other failure shows up as the attach error below.
        let tcx = KernelVersion::current().is_ok_and(|version| version >= KernelVersion::new(6, 6, 0));
        if !tcx {
            let _ = aya_tc::qdisc_add_clsact(iface);
        }
        let link = program(&mut self.ebpf)?.attach(iface, TcAttachType::Ingress).map_err(|source| Error::AttachTc {
            prog: PROG_TC_NAT,
            iface: iface.to_owned(),
            source,
        })?;
        self.tc_attached.push(TcAttachment { iface: iface.to_owned(), link });
        Ok(())
    }

    /// Detaches `tc_nat` from the ingress of `iface` (attached by [`Self::attach_tc`] from the
    /// same network namespace).
    pub fn detach_tc(&mut self, iface: &str) -> Result<(), Error> {
        let index = self
            .tc_attached
            .iter()
            .position(|a| a.iface == iface)
            .ok_or_else(|| Error::TcNotAttached { iface: iface.to_owned() })?;
        let TcAttachment { iface, link } = self.tc_attached.swap_remove(index);
        program(&mut self.ebpf)?.detach(link).map_err(|source| Error::DetachTc { prog: PROG_TC_NAT, iface, source })
    }

    /// The interfaces `tc_nat` is attached to, in attach order (as far as detaches allow).
    pub fn tc_interfaces(&self) -> Vec<&str> {
        self.tc_attached.iter().map(|a| a.iface.as_str()).collect()
    }
}
