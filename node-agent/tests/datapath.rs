//! Privileged end-to-end tests of the socket load balancer (`node_agent::datapath`), as root.
//!
//! Each test creates its own cgroup v2 child (`keelson-test-<pid>-<n>`), loads the programs and
//! attaches them there, and starts a helper process: this test binary run again with
//! `KEELSON_DATAPATH_HELPER` set, which joins the cgroup, moves into a network namespace of its
//! own with only `lo`, starts TCP and UDP servers on 127.0.0.x and makes connections when the test
//! asks over stdin. So all traffic stays inside that namespace: a VIP the programs do not rewrite
//! finds no route there (`ENETUNREACH`) instead of leaving the machine. The helper is killed, the
//! programs detached, the cgroup removed and private mounts unmounted on drop, also when an
//! assertion fails.

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use keelson_ebpf_common::Counter;
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

const ENETUNREACH: i32 = 101;
const EPERM: i32 = 1;

fn service(port: u16, proto: Protocol, backends: &[SocketAddrV4]) -> Service {
    Service { vip: VIP, port, proto, backends: backends.to_vec() }
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
        let counters = self.datapath.as_ref().expect("datapath").counters().expect("read counters");
        counters.into_iter().find(|(c, _)| *c == which).expect("every counter is listed").1
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

    /// `kind` is `tcp` (connect, read), `udp` (one unconnected socket, sendto/recvfrom) or `udpc`
    /// (connected UDP socket per exchange).
    fn run(&mut self, kind: &str, target: SocketAddrV4, count: usize) -> Vec<Outcome> {
        writeln!(self.stdin, "{kind} {target} {count}").expect("write to the helper");
        let reply = self.reply();
        let outcomes: Vec<Outcome> = reply
            .split_whitespace()
            .map(|item| match item.strip_prefix('!') {
                Some(errno) => Err(errno.parse().expect("errno")),
                None => {
                    let (served, peer) = item.split_once('|').expect("served|peer");
                    Ok((served.parse().expect("served address"), peer.parse().expect("peer address")))
                }
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
        let status = Command::new("ip").args(["link", "set", "lo", "up"]).status().expect("run ip");
        assert!(status.success(), "ip link set lo up");
        for addr in BACKENDS.into_iter().chain([DIRECT]) {
            serve_tcp(addr);
            serve_udp(addr);
        }
        println!("{REPLY}ready");
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

    fn parse_served(text: &str) -> std::io::Result<SocketAddr> {
        text.trim().parse().map_err(|_| std::io::Error::other(format!("bad server reply {text:?}")))
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

    /// Answers every connection with the server's own address, then closes it.
    fn serve_tcp(addr: SocketAddrV4) {
        let listener = TcpListener::bind(addr).expect("bind TCP server");
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = writeln!(stream, "{addr}");
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
