//! The eBPF service load balancer (the kube-proxy replacement).
//!
//! This module is the only code that loads the eBPF programs, attaches them and writes their
//! maps; everyone else hands it desired state ([`Service`]s) and reads back what is programmed.
//! Nobody else touches the maps.
//!
//! Today it holds the socket load balancing slice: `cgroup/connect4` and `sendmsg4` send a
//! ClusterIP:port (TCP and UDP) to one of its backends and `recvmsg4`/`getpeername4` show the
//! application the service address (see `ebpf/programs`). [`Datapath::attach_cgroup`] attaches
//! them to a cgroup v2 directory the project created (never a root cgroup; see [`cgroup`]).
//! The TC program `tc_nat` does the same per packet, with conntrack and reverse NAT, for traffic
//! the socket hooks do not see; [`Datapath::attach_tc`] attaches it to the ingress of a pod's
//! host-side veth or of the node interface ([`tc`]). The XDP program `xdp_nodeport` is the
//! NodePort fast path on the node's external interface: it translates flows whose backend is in
//! one of this node's pod CIDRs ([`Datapath::set_local_cidrs`]) and, with SNAT, those whose
//! backend is on another node; the rest it leaves to `tc_nat`; [`Datapath::attach_xdp`] attaches
//! it ([`xdp`]). Both SNAT a flow whose client and backend are both outside this node's pod CIDRs
//! (so that the backend's reply comes back through this node), to [`Datapath::set_snat_addr`]. NodePort frontends are ordinary services to the
//! datapath (node address, node port, protocol); the proxy decides their backends.
//! [`Datapath::sync`] applies a whole desired table and [`Datapath::upsert`]/[`Datapath::remove`]
//! single services, each with only the map writes the change needs ([`sync`]). With
//! [`Config::pin_dir`] the maps are pinned on bpffs, so a restarted agent finds them, reads back
//! what they hold and carries on from there.
//! A [`Service`] with [`Service::affinity`] (session affinity `ClientIP`) sends each client back
//! to its last backend within the timeout; the programs keep that in the `AFFINITY` LRU map,
//! keyed by network namespace in the socket programs and by source address in `tc_nat`
//! ([`Datapath::affinity`] reads it). A [`Service`] with [`Service::maglev`] (the proxy sets it on
//! NodePort frontends) has a Maglev table ([`maglev`]) in the `MAGLEV` map, from which `tc_nat`
//! and `xdp_nodeport` take the backend of each new flow ([`Datapath::maglev`] reads it).
//! [`test_run`] runs a loaded program on a buffer
//! (`BPF_PROG_TEST_RUN`), for tests and the benchmark's ns/packet figures.
//!
//! The object comes from `node-agent/build.rs`: freshly built when the eBPF toolchain is
//! installed, else the committed `ebpf/prebuilt/keelson.bpf.o` ([`OBJECT_ORIGIN`]).

pub mod bpffs;
pub mod cgroup;
pub mod maglev;
mod service;
mod sync;
mod tc;
mod test_run;
mod xdp;

use std::fs::File;
use std::io;
use std::net::SocketAddrV4;
use std::os::fd::{AsFd as _, BorrowedFd};
use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, MapData, MapError, PerCpuArray};
use aya::programs::{CgroupAttachMode, CgroupSockAddr, ProgramError, cgroup_sock_addr::CgroupSockAddrLinkId};
use aya::{Ebpf, EbpfLoader};
use keelson_ebpf_common::{
    AFFINITY, AffinityEntry, AffinityKey, BACKENDS, Backend, BackendKey, COUNTERS, CT, CT_REV, Counter, CtEntry, CtKey,
    CtRevEntry, IPPROTO_UDP, LOCAL_CIDRS, LocalCidr, MAGLEV, MAPS, MaglevKey, SERVICES, SNAT_ADDR, SOCKET_PROGRAMS,
    ServiceKey, ServiceValue,
};

pub use service::{Protocol, Service, SyncStats};
use sync::{LbMaps, Programmed};
pub use test_run::{TestRun, test_run};
pub use xdp::{Cidr, CidrParseError};

/// Whether the embedded object was `"built"` from `ebpf/programs` by this build or is the
/// committed `"prebuilt"` one.
pub const OBJECT_ORIGIN: &str = env!("KEELSON_EBPF_OBJECT_ORIGIN");

/// Hash of the eBPF sources this crate was built with (see `ebpf/toolchain.rs`).
pub const SOURCE_HASH: &str = env!("KEELSON_EBPF_SOURCE_HASH");

/// The embedded eBPF object.
pub fn object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/keelson.bpf.o"))
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("load the eBPF object")]
    Load(#[source] aya::EbpfError),
    #[error("parse the eBPF object: {0}")]
    ParseObject(String),
    #[error("program {prog} is missing from the eBPF object")]
    MissingProgram { prog: &'static str },
    #[error("map {map} is missing from the eBPF object")]
    MissingMap { map: &'static str },
    #[error("load program {prog}")]
    LoadProgram {
        prog: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("attach {prog} to {}", cgroup.display())]
    Attach {
        prog: &'static str,
        cgroup: PathBuf,
        #[source]
        source: ProgramError,
    },
    #[error("detach {prog} from {}", cgroup.display())]
    Detach {
        prog: &'static str,
        cgroup: PathBuf,
        #[source]
        source: ProgramError,
    },
    #[error("nothing is attached to {}", cgroup.display())]
    NotAttached { cgroup: PathBuf },
    #[error("attach {prog} to the ingress of {iface}")]
    AttachTc {
        prog: &'static str,
        iface: String,
        #[source]
        source: ProgramError,
    },
    #[error("detach {prog} from the ingress of {iface}")]
    DetachTc {
        prog: &'static str,
        iface: String,
        #[source]
        source: ProgramError,
    },
    #[error("attach {prog} to {iface}")]
    AttachXdp {
        prog: &'static str,
        iface: String,
        #[source]
        source: ProgramError,
    },
    #[error("detach {prog} from {iface}")]
    DetachXdp {
        prog: &'static str,
        iface: String,
        #[source]
        source: ProgramError,
    },
    #[error("{iface} has xdp_nodeport attached already")]
    XdpAttachedAlready { iface: String },
    #[error("xdp_nodeport is not attached to {iface}")]
    XdpNotAttached { iface: String },
    #[error("{count} local pod CIDRs do not fit the map")]
    TooManyLocalCidrs { count: usize },
    #[error("{iface} has tc_nat attached already")]
    TcAttachedAlready { iface: String },
    #[error("nothing is attached to {iface}")]
    TcNotAttached { iface: String },
    #[error("program {prog} has no file descriptor")]
    ProgramFd {
        prog: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("open map {map}")]
    OpenMap {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("update map {map}")]
    MapUpdate {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("read map {map}")]
    MapRead {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("{} is not a cgroup v2 directory", path.display())]
    NotCgroup2 { path: PathBuf },
    #[error("{} is a root cgroup; attach only to a cgroup the project created", path.display())]
    RootCgroup { path: PathBuf },
    #[error("{} is not on a bpffs mount", path.display())]
    NotBpffs { path: PathBuf },
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("two services share the frontend {service}")]
    DuplicateService { service: String },
    #[error("a service with {count} backends does not fit the map")]
    TooManyBackends { count: usize },
    #[error("no service id left")]
    ServiceIdsExhausted,
    #[error("open the eBPF log buffer")]
    Logger(#[source] aya_log::Error),
    #[error("no datapath pinned at {}; is `node-agent proxy` running?", dir.display())]
    NotPinned { dir: PathBuf },
    #[error("BPF_PROG_TEST_RUN on {len} bytes")]
    TestRun {
        len: usize,
        #[source]
        source: io::Error,
    },
}

impl Error {
    fn io(what: &'static str, path: impl AsRef<Path>, source: io::Error) -> Self {
        Self::Io { what, path: path.as_ref().to_owned(), source }
    }
}

/// How to load the datapath.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Pin the maps in this directory (on bpffs, e.g. [`bpffs::DEFAULT_PIN_DIR`]) so that they
    /// outlive the process and are reused by the next load; `None` keeps them private.
    pub pin_dir: Option<PathBuf>,
}

/// The loaded programs and their maps.
pub struct Datapath {
    ebpf: Ebpf,
    maps: KernelMaps,
    counters: PerCpuArray<MapData, u64>,
    conntrack: HashMap<MapData, CtKey, CtEntry>,
    rev_nat: HashMap<MapData, CtKey, CtRevEntry>,
    local_cidrs: Array<MapData, LocalCidr>,
    snat_addr: Array<MapData, u32>,
    affinity: HashMap<MapData, AffinityKey, AffinityEntry>,
    /// What the maps hold; `None` after a failed write, until read back from the maps.
    programmed: Option<Programmed>,
    /// Pinned maps of another shape that loading replaced (see [`bpffs::remove_stale_pins`]).
    stale_pins: Vec<bpffs::StalePin>,
    attached: Vec<Attachment>,
    /// Interfaces with `tc_nat` on their ingress (names in the network namespace of the thread
    /// that attached it).
    tc_attached: Vec<tc::TcAttachment>,
    /// Interfaces with `xdp_nodeport` attached (names as for `tc_attached`).
    xdp_attached: Vec<xdp::XdpAttachment>,
}

struct Attachment {
    cgroup: PathBuf,
    links: Vec<(&'static str, CgroupSockAddrLinkId)>,
}

impl Datapath {
    /// Loads the embedded object (see [`object`]).
    pub fn load(config: &Config) -> Result<Self, Error> {
        Self::load_object(object(), config)
    }

    /// Loads `object` (8-byte aligned ELF, see `aya::include_bytes_aligned!`) and its programs
    /// into the kernel, reusing pinned maps when `config` says so. Nothing is attached yet.
    pub fn load_object(object: &[u8], config: &Config) -> Result<Self, Error> {
        let mut loader = EbpfLoader::new();
        let mut stale_pins = Vec::new();
        if let Some(dir) = &config.pin_dir {
            bpffs::prepare_pin_dir(dir)?;
            stale_pins = bpffs::remove_stale_pins(dir, object)?;
            for name in MAPS {
                loader.map_pin_path(name, dir.join(name));
            }
        }
        let mut ebpf = loader.load(object).map_err(Error::Load)?;
        for prog in SOCKET_PROGRAMS {
            socket_program(&mut ebpf, prog)?.load().map_err(|source| Error::LoadProgram { prog, source })?;
        }
        tc::load(&mut ebpf)?;
        xdp::load(&mut ebpf)?;
        let mut maps = KernelMaps {
            services: HashMap::try_from(take_map(&mut ebpf, SERVICES)?)
                .map_err(|source| Error::OpenMap { map: SERVICES, source })?,
            backends: HashMap::try_from(take_map(&mut ebpf, BACKENDS)?)
                .map_err(|source| Error::OpenMap { map: BACKENDS, source })?,
            maglev: HashMap::try_from(take_map(&mut ebpf, MAGLEV)?)
                .map_err(|source| Error::OpenMap { map: MAGLEV, source })?,
        };
        let counters = PerCpuArray::try_from(take_map(&mut ebpf, COUNTERS)?)
            .map_err(|source| Error::OpenMap { map: COUNTERS, source })?;
        let conntrack =
            HashMap::try_from(take_map(&mut ebpf, CT)?).map_err(|source| Error::OpenMap { map: CT, source })?;
        let rev_nat =
            HashMap::try_from(take_map(&mut ebpf, CT_REV)?).map_err(|source| Error::OpenMap { map: CT_REV, source })?;
        let local_cidrs = Array::try_from(take_map(&mut ebpf, LOCAL_CIDRS)?)
            .map_err(|source| Error::OpenMap { map: LOCAL_CIDRS, source })?;
        let snat_addr = Array::try_from(take_map(&mut ebpf, SNAT_ADDR)?)
            .map_err(|source| Error::OpenMap { map: SNAT_ADDR, source })?;
        let affinity = HashMap::try_from(take_map(&mut ebpf, AFFINITY)?)
            .map_err(|source| Error::OpenMap { map: AFFINITY, source })?;
        let programmed = Programmed::read(&mut maps)?;
        Ok(Self {
            ebpf,
            maps,
            counters,
            conntrack,
            rev_nat,
            local_cidrs,
            snat_addr,
            affinity,
            programmed: Some(programmed),
            stale_pins,
            attached: Vec::new(),
            tc_attached: Vec::new(),
            xdp_attached: Vec::new(),
        })
    }

    /// Attaches the socket programs to `cgroup`, a cgroup v2 directory below the root of its
    /// hierarchy; they then act on sockets created by processes in it or its descendants.
    pub fn attach_cgroup(&mut self, cgroup: &Path) -> Result<(), Error> {
        cgroup::check_attachable(cgroup)?;
        let dir = File::open(cgroup).map_err(|source| Error::io("open", cgroup, source))?;
        let mut attachment = Attachment { cgroup: cgroup.to_owned(), links: Vec::new() };
        for prog in SOCKET_PROGRAMS {
            let attached = socket_program(&mut self.ebpf, prog)?.attach(&dir, CgroupAttachMode::Single);
            match attached {
                Ok(link) => attachment.links.push((prog, link)),
                Err(source) => {
                    // Leave nothing half attached; the attach error is the one to report.
                    let _ = self.detach(attachment);
                    return Err(Error::Attach { prog, cgroup: cgroup.to_owned(), source });
                }
            }
        }
        self.attached.push(attachment);
        Ok(())
    }

    /// Detaches the socket programs from `cgroup`. Dropping the `Datapath` detaches everything.
    pub fn detach_cgroup(&mut self, cgroup: &Path) -> Result<(), Error> {
        let index = self
            .attached
            .iter()
            .position(|a| a.cgroup == cgroup)
            .ok_or_else(|| Error::NotAttached { cgroup: cgroup.to_owned() })?;
        let attachment = self.attached.swap_remove(index);
        self.detach(attachment)
    }

    fn detach(&mut self, attachment: Attachment) -> Result<(), Error> {
        let mut result = Ok(());
        for (prog, link) in attachment.links {
            let detached = socket_program(&mut self.ebpf, prog).and_then(|p| {
                p.detach(link).map_err(|source| Error::Detach { prog, cgroup: attachment.cgroup.clone(), source })
            });
            if result.is_ok() {
                result = detached;
            }
        }
        result
    }

    /// Makes the maps hold exactly `desired`.
    pub fn sync(&mut self, desired: &[Service]) -> Result<SyncStats, Error> {
        self.change_forgetting_udp(
            |programmed| {
                if !programmed.keys().any(|key| key.proto == IPPROTO_UDP) {
                    return Vec::new();
                }
                let wanted: std::collections::HashMap<ServiceKey, &[SocketAddrV4]> =
                    desired.iter().map(|s| (s.key(), s.backends.as_slice())).collect();
                programmed
                    .keys()
                    .filter_map(|key| lost_udp(programmed, *key, wanted.get(key).copied().unwrap_or_default()))
                    .collect()
            },
            |programmed, maps| programmed.sync(maps, desired),
        )
    }

    /// Adds or changes one service.
    pub fn upsert(&mut self, service: &Service) -> Result<SyncStats, Error> {
        let key = service.key();
        self.change_forgetting_udp(
            |programmed| lost_udp(programmed, key, &service.backends).into_iter().collect(),
            |programmed, maps| programmed.upsert(maps, service),
        )
    }

    /// Removes one service (ClusterIP, port, protocol); nothing happens if it is not programmed.
    pub fn remove(&mut self, vip: std::net::Ipv4Addr, port: u16, proto: Protocol) -> Result<SyncStats, Error> {
        let key = ServiceKey::new(vip, port, proto.ipproto());
        self.change_forgetting_udp(
            |programmed| lost_udp(programmed, key, &[]).into_iter().collect(),
            |programmed, maps| programmed.remove(maps, &key),
        )
    }

    /// Applies `f` like [`Self::change`], then forgets the UDP flows to the backends that `lost`
    /// (asked before the change) says UDP frontends lose.
    fn change_forgetting_udp<T>(
        &mut self,
        lost: impl FnOnce(&Programmed) -> Vec<(ServiceKey, Vec<SocketAddrV4>)>,
        f: impl FnOnce(&mut Programmed, &mut KernelMaps) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let gone = self.change(|programmed, _| Ok(lost(programmed)))?;
        let result = self.change(f)?;
        self.forget_udp_flows(gone)?;
        Ok(result)
    }

    /// Forgets the `tc_nat`/`xdp_nodeport` flows of each UDP frontend to the backends it lost,
    /// with their reverse entries, so that their next datagrams pick a live backend (kube-proxy
    /// deletes the same conntrack entries). UDP has no end to wait for: a client that keeps
    /// sending from one port would otherwise stay on a deleted endpoint. TCP flows are left to
    /// drain. Scans the conntrack map only when a UDP frontend lost a backend.
    fn forget_udp_flows(&mut self, gone: Vec<(ServiceKey, Vec<SocketAddrV4>)>) -> Result<usize, Error> {
        let gone: Vec<(SocketAddrV4, Vec<SocketAddrV4>)> = gone
            .into_iter()
            .filter(|(_, backends)| !backends.is_empty())
            .map(|(key, backends)| (SocketAddrV4::new(key.vip(), key.port()), backends))
            .collect();
        if gone.is_empty() {
            return Ok(0);
        }
        let mut stale = Vec::new();
        for item in self.conntrack.iter() {
            let (flow, entry) = item.map_err(|source| Error::MapRead { map: CT, source })?;
            if flow.proto == IPPROTO_UDP
                && gone
                    .iter()
                    .any(|(frontend, lost)| flow.destination() == *frontend && lost.contains(&entry.backend()))
            {
                stale.push((flow, entry));
            }
        }
        for (flow, entry) in &stale {
            // Either may be gone already (LRU, or the programs): no error.
            removed(self.conntrack.remove(flow), CT)?;
            removed(self.rev_nat.remove(&reply_key(flow, entry)), CT_REV)?;
        }
        Ok(stale.len())
    }

    /// The services as programmed, ordered by frontend; backends in slot order.
    pub fn services(&mut self) -> Result<Vec<Service>, Error> {
        self.change(|programmed, _| Ok(programmed.table()))
    }

    /// Pinned maps that loading found in another shape (pinned by an older build) and replaced.
    pub fn stale_pins(&self) -> &[bpffs::StalePin] {
        &self.stale_pins
    }

    /// Every counter summed over the CPUs.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>, Error> {
        Counter::ALL.iter().map(|&counter| Ok((counter, self.counter(counter)?))).collect()
    }

    /// One counter summed over the CPUs.
    pub fn counter(&self, counter: Counter) -> Result<u64, Error> {
        let values =
            self.counters.get(&(counter as u32), 0).map_err(|source| Error::MapRead { map: COUNTERS, source })?;
        Ok(values.iter().sum())
    }

    /// The flows `tc_nat` translated: each client flow (as the client sent it) and its backend.
    pub fn conntrack(&self) -> Result<Vec<(CtKey, CtEntry)>, Error> {
        self.conntrack.iter().collect::<Result<_, _>>().map_err(|source| Error::MapRead { map: CT, source })
    }

    /// The reverse entries of [`Self::conntrack`]: each backend-side reply tuple, the service
    /// address its replies are given as source and, for a SNAT'd flow, the client they go back to.
    pub fn rev_nat(&self) -> Result<Vec<(CtKey, CtRevEntry)>, Error> {
        self.rev_nat.iter().collect::<Result<_, _>>().map_err(|source| Error::MapRead { map: CT_REV, source })
    }

    /// The session affinity entries: each client (network namespace or IPv4 address) of each
    /// service with affinity, and the backend it was last sent to.
    pub fn affinity(&self) -> Result<Vec<(AffinityKey, AffinityEntry)>, Error> {
        self.affinity.iter().collect::<Result<_, _>>().map_err(|source| Error::MapRead { map: AFFINITY, source })
    }

    /// The Maglev tables: each entry of each service with [`Service::maglev`] and its backend.
    pub fn maglev(&self) -> Result<Vec<(MaglevKey, Backend)>, Error> {
        self.maps.maglev_entries()
    }

    /// The file descriptor of a loaded program (one of `keelson_ebpf_common`'s `PROG_*` names),
    /// e.g. to run it on a crafted packet with `BPF_PROG_TEST_RUN`. It lives as long as `self`.
    pub fn program_fd(&self, prog: &'static str) -> Result<BorrowedFd<'_>, Error> {
        let program = self.ebpf.program(prog).ok_or(Error::MissingProgram { prog })?;
        let fd = program.fd().map_err(|source| Error::ProgramFd { prog, source })?;
        Ok(fd.as_fd())
    }

    /// Starts reading the programs' aya-log records (rare events only); the caller polls the
    /// returned logger's fd and calls `flush`. Records go to the `log` facade.
    pub fn take_logger(&mut self) -> Result<aya_log::EbpfLogger<&'static dyn log::Log>, Error> {
        aya_log::EbpfLogger::init(&mut self.ebpf).map_err(Error::Logger)
    }

    fn change<T>(&mut self, f: impl FnOnce(&mut Programmed, &mut KernelMaps) -> Result<T, Error>) -> Result<T, Error> {
        let mut programmed = match self.programmed.take() {
            Some(programmed) => programmed,
            None => Programmed::read(&mut self.maps)?,
        };
        let result = f(&mut programmed, &mut self.maps);
        // After a failed write the maps may differ from `programmed`: read them back next time.
        if result.is_ok() {
            self.programmed = Some(programmed);
        }
        result
    }
}

/// A look at the maps a running datapath pinned in a directory, for operators (`node-agent lb
/// list|stats`): opens the pins only, loads and attaches nothing, and never writes (the kernel
/// hands out read-write descriptors for pins; this type only reads through them).
pub struct PinnedMaps {
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    backends: HashMap<MapData, BackendKey, Backend>,
    counters: PerCpuArray<MapData, u64>,
}

impl PinnedMaps {
    /// Opens the maps pinned in `dir` ([`Config::pin_dir`] of the running datapath). Only the
    /// maps read here must be there, so a datapath pinning more maps is still shown.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        if ![SERVICES, BACKENDS, COUNTERS].iter().all(|name| dir.join(name).exists()) {
            return Err(Error::NotPinned { dir: dir.to_owned() });
        }
        let open = |map: &'static str| {
            aya::maps::MapData::from_pin(dir.join(map))
                .and_then(aya::maps::Map::from_map_data)
                .map_err(|source| Error::OpenMap { map, source })
        };
        Ok(Self {
            services: HashMap::try_from(open(SERVICES)?).map_err(|source| Error::OpenMap { map: SERVICES, source })?,
            backends: HashMap::try_from(open(BACKENDS)?).map_err(|source| Error::OpenMap { map: BACKENDS, source })?,
            counters: PerCpuArray::try_from(open(COUNTERS)?)
                .map_err(|source| Error::OpenMap { map: COUNTERS, source })?,
        })
    }

    /// The programmed services with their datapath ids, ordered by frontend; backends in slot
    /// order. A service caught in the middle of an update shows the slots readable right now.
    pub fn services(&self) -> Result<Vec<(u32, Service)>, Error> {
        let mut table = Vec::new();
        for entry in self.services.iter() {
            let (key, value) = entry.map_err(|source| Error::MapRead { map: SERVICES, source })?;
            let Some(proto) = Protocol::from_ipproto(key.proto) else {
                continue;
            };
            let mut backends = Vec::with_capacity(value.count as usize);
            for slot in 0..value.count {
                match self.backends.get(&BackendKey { service: value.id, slot }, 0) {
                    Ok(backend) => backends.push(backend.socket_addr()),
                    Err(error) if is_absent(&error) => break,
                    Err(source) => return Err(Error::MapRead { map: BACKENDS, source }),
                }
            }
            let affinity = Service::affinity_from_timeout(value.affinity_timeout);
            let maglev = value.maglev();
            table.push((value.id, Service { vip: key.vip(), port: key.port(), proto, backends, affinity, maglev }));
        }
        table.sort_by_key(|(_, s)| (s.vip, s.port, s.proto));
        Ok(table)
    }

    /// Every counter the pinned array has (a datapath pinned by an older build may have fewer),
    /// summed over the CPUs.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>, Error> {
        Counter::ALL
            .iter()
            .filter(|&&counter| (counter as u32) < self.counters.len())
            .map(|&counter| {
                let values = self
                    .counters
                    .get(&(counter as u32), 0)
                    .map_err(|source| Error::MapRead { map: COUNTERS, source })?;
                Ok((counter, values.iter().sum()))
            })
            .collect()
    }
}

fn socket_program<'a>(ebpf: &'a mut Ebpf, prog: &'static str) -> Result<&'a mut CgroupSockAddr, Error> {
    typed_program(ebpf, prog)
}

/// The program `prog` of the object as its type `P`.
fn typed_program<'a, P>(ebpf: &'a mut Ebpf, prog: &'static str) -> Result<&'a mut P, Error>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(prog)
        .ok_or(Error::MissingProgram { prog })?
        .try_into()
        .map_err(|source| Error::LoadProgram { prog, source })
}

fn take_map(ebpf: &mut Ebpf, map: &'static str) -> Result<aya::maps::Map, Error> {
    ebpf.take_map(map).ok_or(Error::MissingMap { map })
}

/// The kernel maps behind [`LbMaps`].
struct KernelMaps {
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    backends: HashMap<MapData, BackendKey, Backend>,
    maglev: HashMap<MapData, MaglevKey, Backend>,
}

/// Whether a delete failed only because the key was absent.
fn is_absent(error: &MapError) -> bool {
    matches!(error, MapError::KeyNotFound)
        || matches!(error, MapError::SyscallError(e) if e.io_error.kind() == io::ErrorKind::NotFound)
}

/// The outcome of deleting a key from `map`: an absent key is not an error.
fn removed(result: Result<(), MapError>, map: &'static str) -> Result<(), Error> {
    match result {
        Err(source) if !is_absent(&source) => Err(Error::MapUpdate { map, source }),
        _ => Ok(()),
    }
}

impl LbMaps for KernelMaps {
    fn set_service(&mut self, key: &ServiceKey, value: &ServiceValue) -> Result<(), Error> {
        self.services.insert(key, value, 0).map_err(|source| Error::MapUpdate { map: SERVICES, source })
    }

    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), Error> {
        removed(self.services.remove(key), SERVICES)
    }

    fn set_backend(&mut self, key: &BackendKey, value: &Backend) -> Result<(), Error> {
        self.backends.insert(key, value, 0).map_err(|source| Error::MapUpdate { map: BACKENDS, source })
    }

    fn remove_backend(&mut self, key: &BackendKey) -> Result<(), Error> {
        removed(self.backends.remove(key), BACKENDS)
    }

    fn services(&self) -> Result<Vec<(ServiceKey, ServiceValue)>, Error> {
        self.services.iter().collect::<Result<_, _>>().map_err(|source| Error::MapRead { map: SERVICES, source })
    }

    fn backend_keys(&self) -> Result<Vec<BackendKey>, Error> {
        self.backends.keys().collect::<Result<_, _>>().map_err(|source| Error::MapRead { map: BACKENDS, source })
    }

    fn backend(&self, key: &BackendKey) -> Result<Option<Backend>, Error> {
        match self.backends.get(key, 0) {
            Ok(backend) => Ok(Some(backend)),
            Err(error) if is_absent(&error) => Ok(None),
            Err(source) => Err(Error::MapRead { map: BACKENDS, source }),
        }
    }

    fn set_maglev(&mut self, key: &MaglevKey, value: &Backend) -> Result<(), Error> {
        self.maglev.insert(key, value, 0).map_err(|source| Error::MapUpdate { map: MAGLEV, source })
    }

    fn remove_maglev(&mut self, key: &MaglevKey) -> Result<(), Error> {
        removed(self.maglev.remove(key), MAGLEV)
    }

    fn maglev_entries(&self) -> Result<Vec<(MaglevKey, Backend)>, Error> {
        self.maglev.iter().collect::<Result<_, _>>().map_err(|source| Error::MapRead { map: MAGLEV, source })
    }
}

/// For a UDP frontend `key`: the programmed backends that `left` does not keep.
fn lost_udp(
    programmed: &Programmed,
    key: ServiceKey,
    left: &[SocketAddrV4],
) -> Option<(ServiceKey, Vec<SocketAddrV4>)> {
    (key.proto == IPPROTO_UDP)
        .then(|| (key, programmed.backends_of(&key).into_iter().filter(|b| !left.contains(b)).collect()))
}

/// The key of the reverse (`CT_REV`) entry of the flow `flow` that `entry` translates: the
/// backend's replies, to the client or to the flow's SNAT address and port.
fn reply_key(flow: &CtKey, entry: &CtEntry) -> CtKey {
    let (daddr, dport) =
        if entry.snat_port != 0 { (entry.snat_addr, entry.snat_port) } else { (flow.saddr, flow.sport) };
    CtKey { saddr: entry.backend, daddr, sport: entry.backend_port, dport, proto: flow.proto, _pad: [0; 3] }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails when the eBPF sources changed but `ebpf/prebuilt` was not refreshed.
    #[test]
    fn committed_object_matches_sources() {
        let committed = include_str!("../../../ebpf/prebuilt/SOURCE_HASH").trim();
        assert_eq!(
            committed, SOURCE_HASH,
            "the eBPF sources changed since ebpf/prebuilt/ was refreshed: run `cargo xtask ebpf` and commit ebpf/prebuilt/"
        );
    }

    #[test]
    fn object_origin_is_known_and_honours_the_override() {
        assert!(OBJECT_ORIGIN == "built" || OBJECT_ORIGIN == "prebuilt", "{OBJECT_ORIGIN}");
        // The variable is read by build.rs; set when the tests run, it was set for the build too
        // (`KEELSON_EBPF_PREBUILT=1 cargo test`).
        if std::env::var_os("KEELSON_EBPF_PREBUILT").is_some_and(|v| v == "1") {
            assert_eq!(OBJECT_ORIGIN, "prebuilt");
        }
    }

    #[test]
    fn embedded_object_is_bpf_elf() {
        let object = object();
        assert_eq!(&object[..4], b"\x7fELF");
        assert_eq!(object[4], 2, "64-bit");
        assert_eq!(object[5], 1, "little endian");
        assert_eq!(u16::from_le_bytes([object[18], object[19]]), 247, "e_machine EM_BPF");
    }
}
