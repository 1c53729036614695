//! Privileged end-to-end tests of the socket load balancer (`node_agent::datapath`), as root.
//!
//! Each test creates its own cgroup v2 child (`keelson-test-<pid>-<n>`), loads the programs and
//! attaches them there, and starts a helper process: this test binary run again with
//! `KEELSON_DATAPATH_HELPER` set, which joins the cgroup, moves into a network namespace of its
//! own with only `lo` (and, for the hairpin test, a veth pair of its own standing for a pod's
//! `eth0`), starts TCP and UDP servers on 127.0.0.x and makes connections when the test asks over
//! stdin; it can also hold connections open across a datapath restart and exchange data on them
//! later. So all traffic stays inside that namespace: a VIP the programs do not rewrite finds no
//! route there (`ENETUNREACH`) instead of leaving the machine. The helper is killed, the
//! programs detached, the cgroup removed and private mounts unmounted on drop, also when an
//! assertion fails.

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use keelson_ebpf_common::{AFFINITY_NETNS, Counter};
use node_agent::datapath::{Config, Datapath, Error, Protocol, Service, bpffs, cgroup};

/// Set in the helper's environment: the cgroup directory it joins.
const HELPER_ENV: &str = "KEELSON_DATAPATH_HELPER";
/// Prefix of the helper's protocol lines on stdout (libtest prints there too).
const REPLY: &str = "@@ ";

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const OTHER_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
/// Where the helper's servers listen, TCP and UDP alike.
const BACKENDS: [SocketAddrV4; 3] = [
    SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2), 8080),
    SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 3), 8080),
    SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 4), 8080),
];
/// A server that is no service's backend.
const DIRECT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 9), 8080);
/// Echo servers on the backends' addresses, for connections held open: each greets a connection
/// with its own address and then answers every line with its address and the line.
const ECHO_PORT: u16 = 9090;
/// The helper's own "pod" address, on its `eth0` (a veth inside its namespace), with a server.
const POD: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 244, 7, 5), 8080);

const ENETUNREACH: i32 = 101;
const EPERM: i32 = 1;

fn service(port: u16, proto: Protocol, backends: &[SocketAddrV4]) -> Service {
    Service { vip: VIP, port, proto, backends: backends.to_vec(), affinity: None, maglev: false }
}

/// The helper half: only runs as the helper process, a no-op in a normal test run.
#[test]
fn helper_process() {
    if let Some(cgroup) = std::env::var_os(HELPER_ENV) {
        helper::run(Path::new(&cgroup));
    }
}

/// What one test created, torn down in field order on drop.
struct Fixture {
    helper: Option<Helper>,
    datapath: Option<Datapath>,
    cgroup: Option<cgroup::OwnedCgroup>,
    /// Mounts this test made (cgroup2 when the machine has none, bpffs for pins).
    mounts: Vec<PathBuf>,
    _scratch: tempfile::TempDir,
}

impl Fixture {
    /// A fresh cgroup, the programs loaded with `config` and attached to it, and the helper in it.
    fn new(config_for: impl FnOnce(&mut Self) -> Config) -> Self {
        Self::with_hierarchy(false, config_for)
    }

    /// With `private_mount`, the cgroup lives under a cgroup2 mount of the test's own (the path a
    /// machine without any cgroup2 mount takes) rather than under the existing one.
    fn with_hierarchy(private_mount: bool, config_for: impl FnOnce(&mut Self) -> Config) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let scratch = tempfile::Builder::new().prefix("keelson-datapath-").tempdir().expect("scratch directory");
        let mut fixture = Self { helper: None, datapath: None, cgroup: None, mounts: Vec::new(), _scratch: scratch };
        let private = fixture._scratch.path().join("cgroup2");
        let (hierarchy, mounted) = if private_mount {
            cgroup::mount_hierarchy(&private).expect("mount cgroup2");
            (private, true)
        } else {
            cgroup::ensure_hierarchy(&private).expect("a cgroup2 hierarchy")
        };
        if mounted {
            fixture.mounts.push(hierarchy.clone());
        }
        let name = format!("keelson-test-{}-{n}", std::process::id());
        fixture.cgroup = Some(cgroup::OwnedCgroup::create(&hierarchy, &name).expect("create test cgroup"));
        let config = config_for(&mut fixture);
        fixture.load(&config);
        fixture.helper = Some(Helper::spawn(fixture.cgroup_path()));
        fixture
    }

    fn cgroup_path(&self) -> &Path {
        self.cgroup.as_ref().expect("cgroup").path()
    }

    fn load(&mut self, config: &Config) {
        let mut datapath = Datapath::load(config).expect("load the eBPF programs");
        datapath.attach_cgroup(self.cgroup_path()).expect("attach to the test cgroup");
        self.datapath = Some(datapath);
    }

    fn datapath(&mut self) -> &mut Datapath {
        self.datapath.as_mut().expect("datapath loaded")
    }

    fn helper(&mut self) -> &mut Helper {
        self.helper.as_mut().expect("helper running")
    }

    /// A private bpffs for pins, unmounted on drop.
    fn private_bpffs(&mut self) -> PathBuf {
        let mount_point = self._scratch.path().join("bpffs");
        assert!(bpffs::ensure_mounted(&mount_point).expect("mount bpffs"), "fresh directory is not bpffs yet");
        self.mounts.push(mount_point.clone());
        mount_point.join("keelson")
    }

    fn counter(&self, which: Counter) -> u64 {
        self.datapath.as_ref().expect("datapath").counter(which).expect("read the counter")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.helper = None;
        self.datapath = None;
        self.cgroup = None;
        for mount in self.mounts.iter().rev() {
            if let Err(error) = nix::mount::umount2(mount.as_path(), nix::mount::MntFlags::MNT_DETACH) {
                eprintln!("unmount {}: {error}", mount.display());
            }
        }
    }
}

/// One connection or datagram exchange as the helper saw it: which server answered (the server
/// reports its own address) and what the socket calls the peer, or the errno.
type Outcome = Result<(SocketAddrV4, SocketAddrV4), i32>;

/// The test's end of the helper process.
struct Helper {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Helper {
    fn spawn(cgroup: &Path) -> Self {
        let exe = std::env::current_exe().expect("test executable");
        let mut child = Command::new(exe)
            .args(["helper_process", "--exact", "--nocapture", "--test-threads=1", "-q"])
            .env(HELPER_ENV, cgroup)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the helper process");
        let stdin = child.stdin.take().expect("helper stdin");
        let stdout = BufReader::new(child.stdout.take().expect("helper stdout"));
        let mut helper = Self { child, stdin, stdout };
        assert_eq!(helper.reply(), "ready");
        helper
    }

    fn reply(&mut self) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let read = self.stdout.read_line(&mut line).expect("read from the helper");
            assert!(read > 0, "the helper exited (its panic is above)");
            if let Some(at) = line.find(REPLY) {
                return line[at + REPLY.len()..].trim_end().to_owned();
            }
        }
    }

    /// `kind` is `tcp` (connect, read), `udp` (one unconnected socket, sendto/recvfrom), `udpc`
    /// (connected UDP socket per exchange), `hold` (connect to an echo server and keep the
    /// connection) or `check` (a line each way on every held connection; `target` is unused and
    /// `count` must be the number held).
    fn run(&mut self, kind: &str, target: SocketAddrV4, count: usize) -> Vec<Outcome> {
        self.run_raw(kind, target, count)
            .into_iter()
            .map(|outcome| outcome.map(|fields| (fields[0], fields[1])))
            .collect()
    }

    /// [`Self::run`] with every address the helper reports per exchange (`tcpx` gives four:
    /// served, peer, the client the server saw, the client's local address).
    fn run_raw(&mut self, kind: &str, target: SocketAddrV4, count: usize) -> Vec<Result<Vec<SocketAddrV4>, i32>> {
        writeln!(self.stdin, "{kind} {target} {count}").expect("write to the helper");
        let reply = self.reply();
        let outcomes: Vec<_> = reply
            .split_whitespace()
            .map(|item| match item.strip_prefix('!') {
                Some(errno) => Err(errno.parse().expect("errno")),
                None => Ok(item.split('|').map(|addr| addr.parse().expect("an address")).collect::<Vec<_>>()),
            })
            .collect();
        assert_eq!(outcomes.len(), count, "{reply}");
        outcomes
    }

    /// Every exchange succeeded and the application saw `peer`; returns who served them.
    fn served_by(
        &mut self,
        kind: &str,
        target: SocketAddrV4,
        count: usize,
        peer: SocketAddrV4,
    ) -> BTreeSet<SocketAddrV4> {
        self.run(kind, target, count)
            .into_iter()
            .map(|outcome| {
                let (served, seen) = outcome.unwrap_or_else(|errno| panic!("{kind} {target}: errno {errno}"));
                assert_eq!(seen, peer, "{kind} {target} served by {served}: the application must see {peer}");
                served
            })
            .collect()
    }

    fn errors(&mut self, kind: &str, target: SocketAddrV4, count: usize) -> BTreeSet<i32> {
        self.run(kind, target, count)
            .into_iter()
            .map(|outcome| match outcome {
                Ok((served, _)) => panic!("{kind} {target} must fail, but {served} answered"),
                Err(errno) => errno,
            })
            .collect()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // Our own child, by its pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn all_backends() -> BTreeSet<SocketAddrV4> {
    BACKENDS.into_iter().collect()
}

fn with_affinity(mut service: Service, timeout: Duration) -> Service {
    service.affinity = Some(timeout);
    service
}

/// The single backend that served every exchange.
fn only(served: BTreeSet<SocketAddrV4>) -> SocketAddrV4 {
    assert_eq!(served.len(), 1, "one backend expected, got {served:?}");
    served.into_iter().next().expect("one")
}

#[test]
fn client_ip_affinity_keeps_a_client_on_one_backend_while_it_lasts() {
    let mut fixture = Fixture::new(|_| Config::default());
    let hour = Duration::from_secs(3_600);
    fixture
        .datapath()
        .sync(&[
            with_affinity(service(80, Protocol::Tcp, &BACKENDS), hour),
            with_affinity(service(53, Protocol::Udp, &BACKENDS), hour),
            service(81, Protocol::Tcp, &BACKENDS),
        ])
        .expect("program the services");
    let (tcp, udp, plain) = (SocketAddrV4::new(VIP, 80), SocketAddrV4::new(VIP, 53), SocketAddrV4::new(VIP, 81));
    let helper = fixture.helper();
    let pinned = only(helper.served_by("tcp", tcp, 30, tcp));
    assert_eq!(helper.served_by("tcp", plain, 45, plain), all_backends(), "without affinity connects spread");
    let pinned_udp = only(helper.served_by("udp", udp, 30, udp));
    assert_eq!(helper.served_by("udpc", udp, 10, udp), BTreeSet::from([pinned_udp]), "connected UDP too");
    assert!(fixture.counter(Counter::AffinityHit) >= 29 + 29 + 10, "{}", fixture.counter(Counter::AffinityHit));
    assert_eq!(fixture.counter(Counter::AffinityUpdateFailed), 0);

    // The client is its network namespace, once per service with affinity.
    let entries = fixture.datapath().affinity().expect("read AFFINITY");
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(entries.iter().all(|(key, _)| key.kind == AFFINITY_NETNS && key.client == entries[0].0.client));
    assert!(entries.iter().any(|(_, entry)| entry.backend() == pinned), "{entries:?}");

    // Other backends come and go (the pinned one may move to another slot): the client stays.
    let others: Vec<SocketAddrV4> = BACKENDS.into_iter().filter(|b| *b != pinned).collect();
    let services = fixture.datapath().services().expect("list");
    let slots = &services.iter().find(|s| s.port == 80).expect("the TCP service").backends;
    // Removing the other backend in the lower slot first moves the tail down when it is kept.
    let mut by_slot = others.clone();
    by_slot.sort_by_key(|b| slots.iter().position(|s| s == b));
    let mut backends = BACKENDS.to_vec();
    for gone in by_slot {
        backends.retain(|b| *b != gone);
        fixture.datapath().upsert(&with_affinity(service(80, Protocol::Tcp, &backends), hour)).expect("remove one");
        assert_eq!(fixture.helper().served_by("tcp", tcp, 10, tcp), BTreeSet::from([pinned]), "{gone} removed");
    }

    // The pinned backend goes: the client moves to one new backend, and sticks to it.
    fixture.datapath().upsert(&with_affinity(service(80, Protocol::Tcp, &others), hour)).expect("swap");
    let moved = only(fixture.helper().served_by("tcp", tcp, 30, tcp));
    assert!(others.contains(&moved), "{moved} is one of {others:?}");

    // Affinity off: connects spread again.
    fixture.datapath().upsert(&service(80, Protocol::Tcp, &BACKENDS)).expect("affinity off");
    assert_eq!(fixture.helper().served_by("tcp", tcp, 45, tcp), all_backends());
}

#[test]
fn client_ip_affinity_expires_after_its_timeout() {
    let mut fixture = Fixture::new(|_| Config::default());
    let timeout = Duration::from_secs(1);
    fixture.datapath().sync(&[with_affinity(service(80, Protocol::Tcp, &BACKENDS), timeout)]).expect("program");
    let tcp = SocketAddrV4::new(VIP, 80);
    let first = only(fixture.helper().served_by("tcp", tcp, 10, tcp));
    // Within the timeout of the last use, again and again: still the same backend.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(fixture.helper().served_by("tcp", tcp, 1, tcp), BTreeSet::from([first]));
    }
    // Past the timeout each first connect is a fresh pick (no hit), remembered again; with three
    // backends a different one comes up soon (all 12 the same: (1/3)^12).
    let mut picks = Vec::new();
    for _ in 0..12 {
        std::thread::sleep(timeout + Duration::from_millis(300));
        let hits = fixture.counter(Counter::AffinityHit);
        let pick = only(fixture.helper().served_by("tcp", tcp, 1, tcp));
        assert_eq!(fixture.counter(Counter::AffinityHit), hits, "an expired entry is no hit");
        assert_eq!(fixture.helper().served_by("tcp", tcp, 5, tcp), BTreeSet::from([pick]), "the new pick sticks");
        picks.push(pick);
        if pick != first {
            break;
        }
    }
    assert!(picks.iter().any(|pick| *pick != first), "never a new pick after the timeout: {picks:?}");
}

/// A pod reaching itself through its own Service: the only backend is the client's own address
/// (on its `eth0`), and the connect, rewritten before routing, needs no NAT.
#[test]
fn hairpin_a_pod_reaches_itself_through_its_service() {
    let mut fixture = Fixture::new(|_| Config::default());
    fixture.datapath().sync(&[service(80, Protocol::Tcp, &[POD])]).expect("program");
    let tcp = SocketAddrV4::new(VIP, 80);
    for outcome in fixture.helper().run_raw("tcpx", tcp, 10) {
        let fields = outcome.unwrap_or_else(|errno| panic!("hairpin connect: errno {errno}"));
        let [served, peer, seen, local] = fields[..] else { panic!("four addresses: {fields:?}") };
        assert_eq!(served, POD, "the pod's own server answered");
        assert_eq!(peer, tcp, "getpeername shows the VIP");
        assert_eq!(*local.ip(), *POD.ip(), "the client's own address is the pod's");
        assert_eq!(seen, local, "the server sees the pod itself as the client, untranslated");
    }
    assert!(fixture.counter(Counter::Connect) >= 10);
}

/// 100 connections through a VIP stay up across a restart of the datapath (programs detached
/// and loaded again from the pins) and keep showing the VIP; new connections work afterwards.
#[test]
fn a_restart_keeps_100_open_connections() {
    const HELD: usize = 100;
    let mut pin_dir = PathBuf::new();
    let mut fixture = Fixture::new(|fixture| {
        pin_dir = fixture.private_bpffs();
        Config { pin_dir: Some(pin_dir.clone()) }
    });
    let echo: Vec<SocketAddrV4> = BACKENDS.iter().map(|b| SocketAddrV4::new(*b.ip(), ECHO_PORT)).collect();
    let table = vec![service(90, Protocol::Tcp, &echo), service(80, Protocol::Tcp, &BACKENDS)];
    fixture.datapath().sync(&table).expect("program the services");
    let vip = SocketAddrV4::new(VIP, 90);
    let held = fixture.helper().served_by("hold", vip, HELD, vip);
    assert_eq!(held, echo.iter().copied().collect(), "the held connections spread over the backends");
    assert_eq!(fixture.helper().served_by("check", vip, HELD, vip), held, "data both ways before the restart");

    // Restart: the programs go, the connections and the pinned maps stay.
    fixture.datapath = None;
    let served: BTreeSet<SocketAddrV4> = fixture
        .helper()
        .run("check", vip, HELD)
        .into_iter()
        .map(|outcome| outcome.unwrap_or_else(|errno| panic!("exchange while no program is attached: errno {errno}")).0)
        .collect();
    assert_eq!(served, held, "established connections never needed the programs");
    fixture.load(&Config { pin_dir: Some(pin_dir.clone()) });
    assert_eq!(fixture.datapath().sync(&table).expect("resync").map_writes, 0, "the maps were kept");

    assert_eq!(fixture.helper().served_by("check", vip, HELD, vip), held, "all 100 still talk and show the VIP");
    let tcp = SocketAddrV4::new(VIP, 80);
    assert_eq!(fixture.helper().served_by("tcp", tcp, 45, tcp), all_backends(), "new connections work");
    assert_eq!(fixture.helper().served_by("check", vip, HELD, vip), held);

    fixture.datapath = None;
    bpffs::remove_pins(&pin_dir).expect("unpin");
}

#[test]
fn cluster_ip_spreads_tcp_and_udp_over_every_backend_and_shows_the_service_address() {
    let mut fixture = Fixture::new(|_| Config::default());
    let stats = fixture
        .datapath()
        .sync(&[service(80, Protocol::Tcp, &BACKENDS), service(53, Protocol::Udp, &BACKENDS)])
        .expect("program the services");
    assert_eq!((stats.services_added, stats.map_writes), (2, 2 + 6));

    let tcp = SocketAddrV4::new(VIP, 80);
    let udp = SocketAddrV4::new(VIP, 53);
    let helper = fixture.helper();
    assert_eq!(helper.served_by("tcp", tcp, 60, tcp), all_backends(), "TCP uses every backend");
    assert_eq!(helper.served_by("udp", udp, 60, udp), all_backends(), "unconnected UDP uses every backend");
    assert_eq!(helper.served_by("udpc", udp, 45, udp), all_backends(), "connected UDP uses every backend");

    // Not services: left alone.
    assert_eq!(helper.served_by("tcp", DIRECT, 3, DIRECT), BTreeSet::from([DIRECT]), "plain loopback traffic");
    for target in [SocketAddrV4::new(OTHER_VIP, 80), SocketAddrV4::new(VIP, 81)] {
        assert_eq!(helper.errors("tcp", target, 2), BTreeSet::from([ENETUNREACH]), "{target} is not rewritten");
    }
    assert_eq!(helper.errors("udp", SocketAddrV4::new(OTHER_VIP, 53), 2), BTreeSet::from([ENETUNREACH]));
    assert_eq!(helper.errors("tcp", SocketAddrV4::new(VIP, 53), 2), BTreeSet::from([ENETUNREACH]), "UDP-only port");

    // connect4 counts TCP and connected UDP; getpeername every peer_addr call on both.
    assert!(fixture.counter(Counter::Connect) >= 60 + 45, "{}", fixture.counter(Counter::Connect));
    assert!(fixture.counter(Counter::Sendmsg) >= 60, "{}", fixture.counter(Counter::Sendmsg));
    assert!(fixture.counter(Counter::Recvmsg) >= 60, "{}", fixture.counter(Counter::Recvmsg));
    assert!(fixture.counter(Counter::Getpeername) >= 60 + 45, "{}", fixture.counter(Counter::Getpeername));
    assert_eq!(fixture.counter(Counter::NoBackend), 0);
}

#[test]
fn a_removed_backend_drains_its_open_connections() {
    const HELD: usize = 30;
    let mut fixture = Fixture::new(|_| Config::default());
    let echo: Vec<SocketAddrV4> = BACKENDS.iter().map(|b| SocketAddrV4::new(*b.ip(), ECHO_PORT)).collect();
    fixture.datapath().sync(&[service(90, Protocol::Tcp, &echo)]).expect("program the service");
    let vip = SocketAddrV4::new(VIP, 90);
    let held = fixture.helper().served_by("hold", vip, HELD, vip);
    assert_eq!(held, echo.iter().copied().collect(), "the held connections spread over the backends");

    // The endpoint goes (a Pod terminating): new connections avoid it, open ones finish their work.
    fixture.datapath().upsert(&service(90, Protocol::Tcp, &echo[1..])).expect("remove one backend");
    let after = fixture.helper().served_by("check", vip, HELD, vip);
    assert_eq!(after, held, "every open connection, those on the removed backend too, still talks");
    let fresh = fixture.helper().served_by("hold", vip, HELD, vip);
    assert_eq!(fresh, echo[1..].iter().copied().collect(), "new connections go to the remaining backends only");
}

#[test]
fn removing_backends_stops_new_connections_to_them() {
    let mut fixture = Fixture::new(|_| Config::default());
    let tcp = SocketAddrV4::new(VIP, 80);
    fixture.datapath().sync(&[service(80, Protocol::Tcp, &BACKENDS)]).expect("program the service");
    assert_eq!(fixture.helper().served_by("tcp", tcp, 45, tcp), all_backends());

    let remaining = [BACKENDS[0], BACKENDS[2]];
    let stats = fixture.datapath().upsert(&service(80, Protocol::Tcp, &remaining)).expect("remove one backend");
    assert_eq!((stats.services_updated, stats.map_writes), (1, 3), "move the tail, shrink, delete: {stats:?}");
    assert_eq!(fixture.datapath().services().expect("list")[0].backends.len(), 2);
    let served = fixture.helper().served_by("tcp", tcp, 60, tcp);
    assert_eq!(served, remaining.into_iter().collect(), "the removed backend gets no new connection");

    // No endpoints: refused at once (EPERM from the connect hook), TCP and UDP.
    fixture.datapath().sync(&[service(80, Protocol::Tcp, &[]), service(53, Protocol::Udp, &[])]).expect("empty");
    assert_eq!(fixture.helper().errors("tcp", tcp, 3), BTreeSet::from([EPERM]));
    assert_eq!(fixture.helper().errors("udp", SocketAddrV4::new(VIP, 53), 3), BTreeSet::from([EPERM]));
    assert_eq!(fixture.counter(Counter::NoBackend), 6);

    // Service gone: the VIP is an ordinary (here unroutable) address again.
    fixture.datapath().remove(VIP, 80, Protocol::Tcp).expect("remove the service");
    assert_eq!(fixture.helper().errors("tcp", tcp, 2), BTreeSet::from([ENETUNREACH]));
    assert_eq!(fixture.datapath().services().expect("list").len(), 1);
}

#[test]
fn pinned_maps_survive_a_restart() {
    let mut pin_dir = PathBuf::new();
    let mut fixture = Fixture::new(|fixture| {
        pin_dir = fixture.private_bpffs();
        Config { pin_dir: Some(pin_dir.clone()) }
    });
    let table = vec![service(80, Protocol::Tcp, &BACKENDS), service(53, Protocol::Udp, &BACKENDS[..1])];
    fixture.datapath().sync(&table).expect("program the services");
    for map in keelson_ebpf_common::MAPS {
        assert!(pin_dir.join(map).exists(), "{map} is pinned");
    }

    // Restart: the old programs go with their process's links, the pinned maps stay.
    fixture.datapath = None;
    let config = Config { pin_dir: Some(pin_dir.clone()) };
    fixture.load(&config);
    let mut restored = fixture.datapath().services().expect("read back");
    restored.sort_by_key(|s| s.port);
    let mut expected = table.clone();
    expected.sort_by_key(|s| s.port);
    for (got, want) in restored.iter().zip(&expected) {
        assert_eq!(got.backends.iter().collect::<BTreeSet<_>>(), want.backends.iter().collect(), "{want}");
    }
    assert_eq!(restored.len(), expected.len());
    assert_eq!(fixture.datapath().sync(&table).expect("resync").map_writes, 0, "nothing to rewrite after restart");
    let tcp = SocketAddrV4::new(VIP, 80);
    assert_eq!(fixture.helper().served_by("tcp", tcp, 45, tcp), all_backends());

    fixture.datapath = None;
    bpffs::remove_pins(&pin_dir).expect("unpin");
    assert!(!pin_dir.exists());
}

#[test]
fn maps_pinned_in_another_shape_are_replaced_and_refilled() {
    let mut pin_dir = PathBuf::new();
    let mut fixture = Fixture::new(|fixture| {
        pin_dir = fixture.private_bpffs();
        Config { pin_dir: Some(pin_dir.clone()) }
    });
    let table = vec![service(80, Protocol::Tcp, &BACKENDS)];
    fixture.datapath().sync(&table).expect("program the services");
    fixture.datapath = None;

    // What an older build with other layouts would have left: a 4-byte-value array where this
    // build has its service hash map, and one where it has its conntrack LRU map.
    for map in [keelson_ebpf_common::SERVICES, keelson_ebpf_common::CT] {
        std::fs::remove_file(pin_dir.join(map)).expect("unpin");
        let old = aya::maps::Array::<aya::maps::MapData, u32>::create(4, 0).expect("create an old-shaped map");
        old.pin(pin_dir.join(map)).expect("pin it");
    }
    let config = Config { pin_dir: Some(pin_dir.clone()) };
    fixture.load(&config);
    let stale: Vec<_> = fixture.datapath().stale_pins().iter().map(|s| (s.map, s.pinned.value_size)).collect();
    assert_eq!(stale, vec![(keelson_ebpf_common::SERVICES, 4), (keelson_ebpf_common::CT, 4)], "in MAPS order");
    for pin in fixture.datapath().stale_pins() {
        assert_ne!(pin.pinned, pin.wanted, "{}", pin.map);
    }
    // The fresh service map is empty; the next sync fills it and traffic flows again.
    assert!(fixture.datapath().services().expect("read back").is_empty());
    assert!(fixture.datapath().sync(&table).expect("resync").map_writes > 0);
    let tcp = SocketAddrV4::new(VIP, 80);
    assert_eq!(fixture.helper().served_by("tcp", tcp, 45, tcp), all_backends());

    // The maps pinned now have this build's shapes: the next start keeps all of them.
    fixture.datapath = None;
    fixture.load(&config);
    assert!(fixture.datapath().stale_pins().is_empty());
    assert_eq!(fixture.datapath().services().expect("read back").len(), 1);
    fixture.datapath = None;
    bpffs::remove_pins(&pin_dir).expect("unpin");
}

#[test]
fn works_under_a_private_cgroup2_mount() {
    let mut fixture = Fixture::with_hierarchy(true, |_| Config::default());
    fixture.datapath().sync(&[service(80, Protocol::Tcp, &BACKENDS)]).expect("program");
    let tcp = SocketAddrV4::new(VIP, 80);
    assert_eq!(fixture.helper().served_by("tcp", tcp, 45, tcp), all_backends());
}

#[test]
fn only_non_root_cgroup2_directories_are_accepted() {
    let mut fixture = Fixture::new(|_| Config::default());
    let hierarchy = fixture.cgroup_path().parent().expect("parent").to_owned();
    let error = fixture.datapath().attach_cgroup(&hierarchy).expect_err("the hierarchy root is refused");
    assert!(matches!(error, Error::RootCgroup { .. }), "{error}");
    let plain = tempfile::tempdir().expect("temporary directory");
    let error = fixture.datapath().attach_cgroup(plain.path()).expect_err("not a cgroup");
    assert!(matches!(error, Error::NotCgroup2 { .. }), "{error}");
}

/// The committed object passes the verifier and serves traffic on this kernel, whichever object
/// this build embeds.
#[test]
fn committed_object_loads_and_balances() {
    static PREBUILT: &[u8] = aya::include_bytes_aligned!("../../ebpf/prebuilt/keelson.bpf.o");
    let mut fixture = Fixture::new(|_| Config::default());
    fixture.datapath = None;
    let mut datapath = Datapath::load_object(PREBUILT, &Config::default()).expect("load the committed object");
    datapath.attach_cgroup(fixture.cgroup_path()).expect("attach");
    fixture.datapath = Some(datapath);
    fixture.datapath().sync(&[service(80, Protocol::Tcp, &BACKENDS)]).expect("program");
    let tcp = SocketAddrV4::new(VIP, 80);
    assert_eq!(fixture.helper().served_by("tcp", tcp, 45, tcp), all_backends());
}

/// The helper process: servers and clients inside the test cgroup and a private network namespace.
mod helper {
    use super::*;

    pub fn run(cgroup: &Path) {
        std::fs::write(cgroup.join("cgroup.procs"), std::process::id().to_string()).expect("join the test cgroup");
        // This thread (and the threads and processes it starts) get a namespace with only `lo`.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare the network namespace");
        let ip = |args: &[&str]| {
            let status = Command::new("ip").args(args).status().expect("run ip");
            assert!(status.success(), "ip {}", args.join(" "));
        };
        ip(&["link", "set", "lo", "up"]);
        // The "pod" interface: a veth pair inside this private namespace (gone with it).
        ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "peer0"]);
        ip(&["addr", "add", &format!("{}/24", POD.ip()), "dev", "eth0"]);
        ip(&["link", "set", "eth0", "up"]);
        ip(&["link", "set", "peer0", "up"]);
        for addr in BACKENDS.into_iter().chain([DIRECT, POD]) {
            serve_tcp(addr);
            serve_udp(addr);
        }
        for addr in BACKENDS {
            serve_echo(SocketAddrV4::new(*addr.ip(), ECHO_PORT));
        }
        println!("{REPLY}ready");
        let mut held = Vec::new();
        for line in std::io::stdin().lines() {
            let line = line.expect("read a request");
            let mut words = line.split_whitespace();
            let (Some(kind), Some(target), Some(count)) = (words.next(), words.next(), words.next()) else {
                panic!("bad request {line:?}");
            };
            let target: SocketAddrV4 = target.parse().expect("target address");
            let count: usize = count.parse().expect("count");
            let outcomes: Vec<String> = match kind {
                "tcp" => (0..count).map(|_| tcp_exchange(target)).map(describe).collect(),
                "tcpx" => (0..count).map(|_| tcp_exchange_seen(target)).collect(),
                "hold" => (0..count)
                    .map(|_| {
                        Held::open(target).map(|connection| {
                            let described = describe(Ok((connection.served, connection.peer())));
                            held.push(connection);
                            described
                        })
                    })
                    .map(|outcome| outcome.unwrap_or_else(|error| describe(Err(error))))
                    .collect(),
                "check" => held.iter_mut().enumerate().map(|(i, connection)| describe(connection.check(i))).collect(),
                "udp" => {
                    let socket = UdpSocket::bind("0.0.0.0:0").expect("bind UDP client");
                    socket.set_read_timeout(Some(TIMEOUT)).expect("timeout");
                    (0..count).map(|_| udp_exchange(&socket, target)).map(describe).collect()
                }
                "udpc" => (0..count).map(|_| connected_udp_exchange(target)).map(describe).collect(),
                _ => panic!("unknown request {kind}"),
            };
            println!("{REPLY}{}", outcomes.join(" "));
        }
    }

    const TIMEOUT: Duration = Duration::from_secs(3);

    fn describe(outcome: std::io::Result<(SocketAddr, SocketAddr)>) -> String {
        match outcome {
            Ok((served, peer)) => format!("{served}|{peer}"),
            Err(error) => format!("!{}", error.raw_os_error().unwrap_or(-1)),
        }
    }

    /// The first word of a server's reply: its own address.
    fn parse_served(text: &str) -> std::io::Result<SocketAddr> {
        let first = text.split_whitespace().next().unwrap_or_default();
        first.parse().map_err(|_| std::io::Error::other(format!("bad server reply {text:?}")))
    }

    /// A TCP exchange described as `served|peer|seen|local`: also the client address the server
    /// saw (second word of its reply) and the socket's own.
    fn tcp_exchange_seen(target: SocketAddrV4) -> String {
        let exchange = || -> std::io::Result<String> {
            let mut stream = TcpStream::connect_timeout(&target.into(), TIMEOUT)?;
            stream.set_read_timeout(Some(TIMEOUT))?;
            let (peer, local) = (stream.peer_addr()?, stream.local_addr()?);
            let mut reply = String::new();
            stream.read_to_string(&mut reply)?;
            let seen = reply.split_whitespace().nth(1).unwrap_or_default();
            Ok(format!("{}|{peer}|{seen}|{local}", parse_served(&reply)?))
        };
        exchange().unwrap_or_else(|error| describe(Err(error)))
    }

    /// A connection to an echo server, kept open.
    pub struct Held {
        reader: BufReader<TcpStream>,
        stream: TcpStream,
        served: SocketAddr,
    }

    impl Held {
        fn open(target: SocketAddrV4) -> std::io::Result<Self> {
            let stream = TcpStream::connect_timeout(&target.into(), TIMEOUT)?;
            stream.set_read_timeout(Some(TIMEOUT))?;
            let mut reader = BufReader::new(stream.try_clone()?);
            let mut greeting = String::new();
            reader.read_line(&mut greeting)?;
            Ok(Self { reader, stream, served: parse_served(&greeting)? })
        }

        fn peer(&self) -> SocketAddr {
            self.stream.peer_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
        }

        /// A line there and its echo back, from the server that greeted us.
        fn check(&mut self, i: usize) -> std::io::Result<(SocketAddr, SocketAddr)> {
            let line = format!("ping-{i}");
            writeln!(self.stream, "{line}")?;
            let mut echo = String::new();
            self.reader.read_line(&mut echo)?;
            let served = parse_served(&echo)?;
            if served != self.served || echo.split_whitespace().nth(1) != Some(line.as_str()) {
                return Err(std::io::Error::other(format!("{echo:?} from {served}, greeted by {}", self.served)));
            }
            Ok((served, self.stream.peer_addr()?))
        }
    }

    /// Greets each connection with the server's address and echoes every line after it.
    fn serve_echo(addr: SocketAddrV4) {
        let listener = TcpListener::bind(addr).expect("bind echo server");
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                std::thread::spawn(move || {
                    let _ = writeln!(stream, "{addr}");
                    let Ok(reader) = stream.try_clone() else { return };
                    for line in BufReader::new(reader).lines() {
                        let Ok(line) = line else { return };
                        if writeln!(stream, "{addr} {line}").is_err() {
                            return;
                        }
                    }
                });
            }
        });
    }

    fn tcp_exchange(target: SocketAddrV4) -> std::io::Result<(SocketAddr, SocketAddr)> {
        let mut stream = TcpStream::connect_timeout(&target.into(), TIMEOUT)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        let peer = stream.peer_addr()?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        Ok((parse_served(&reply)?, peer))
    }

    fn udp_exchange(socket: &UdpSocket, target: SocketAddrV4) -> std::io::Result<(SocketAddr, SocketAddr)> {
        socket.send_to(b"who", target)?;
        let mut buf = [0; 64];
        let (len, from) = socket.recv_from(&mut buf)?;
        Ok((parse_served(&String::from_utf8_lossy(&buf[..len]))?, from))
    }

    fn connected_udp_exchange(target: SocketAddrV4) -> std::io::Result<(SocketAddr, SocketAddr)> {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.set_read_timeout(Some(TIMEOUT))?;
        socket.connect(target)?;
        socket.send(b"who")?;
        let mut buf = [0; 64];
        let len = socket.recv(&mut buf)?;
        Ok((parse_served(&String::from_utf8_lossy(&buf[..len]))?, socket.peer_addr()?))
    }

    /// Answers every connection with the server's own address and the client's as it sees it,
    /// then closes it.
    fn serve_tcp(addr: SocketAddrV4) {
        let listener = TcpListener::bind(addr).expect("bind TCP server");
        std::thread::spawn(move || {
            for (stream, client) in std::iter::from_fn(|| Some(listener.accept())).filter_map(Result::ok) {
                let mut stream = stream;
                let _ = writeln!(stream, "{addr} {client}");
            }
        });
    }

    /// Answers every datagram with the server's own address.
    fn serve_udp(addr: SocketAddrV4) {
        let socket = UdpSocket::bind(addr).expect("bind UDP server");
        std::thread::spawn(move || {
            let mut buf = [0; 64];
            while let Ok((_, from)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(addr.to_string().as_bytes(), from);
            }
        });
    }
}
