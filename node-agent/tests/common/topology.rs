//! Network namespaces for the datapath tests that run real traffic: `<prefix>-<pid>-<tag>`
//! namespaces joined by veths `<prefix><pid><end>0`/`1`, created straight inside the namespaces
//! (never in the host's) and deleted on drop, also when an assertion fails.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `ip args…`; panics with stderr when it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip (iproute2 must be installed)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// The namespaces a test created; deleted (with their veths) on drop.
pub struct Topology {
    prefix: &'static str,
    pid: u32,
    created: Vec<String>,
}

impl Topology {
    /// Nothing created yet; every name starts with `prefix`.
    pub fn new(prefix: &'static str) -> Self {
        Self { prefix, pid: std::process::id(), created: Vec::new() }
    }

    pub fn ns(&self, tag: &str) -> String {
        format!("{}-{}-{tag}", self.prefix, self.pid)
    }

    pub fn link(&self, name: &str) -> String {
        format!("{}{}{name}", self.prefix, self.pid)
    }

    /// Creates namespace `tag` with its loopback up.
    pub fn add_ns(&mut self, tag: &str) -> String {
        let name = self.ns(tag);
        ip(&["netns", "add", &name]);
        self.created.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        name
    }

    /// A veth `<end>0` in `ns` with `addr/24` and a default route via `gateway`, peered with
    /// `<end>1` in the node namespace (tag `n`) holding `gateway/24`.
    pub fn wire(&self, ns: &str, end: &str, addr: Ipv4Addr, gateway: Ipv4Addr) {
        self.veth(end, (ns, Some(addr)), (&self.ns("n"), Some(gateway)));
        ip(&["-n", ns, "route", "add", "default", "via", &gateway.to_string()]);
    }

    /// A veth `<end>0` in namespace `a.0` peered with `<end>1` in `b.0` (full names, possibly the
    /// same namespace), each up and holding its address as a /24 when given.
    #[allow(dead_code, reason = "not every test binary builds more than a star of namespaces")]
    pub fn veth(&self, end: &str, a: (&str, Option<Ipv4Addr>), b: (&str, Option<Ipv4Addr>)) {
        let (first, second) = (self.link(&format!("{end}0")), self.link(&format!("{end}1")));
        ip(&["-n", a.0, "link", "add", &first, "type", "veth", "peer", "name", &second, "netns", b.0]);
        for (ns, name, addr) in [(a.0, &first, a.1), (b.0, &second, b.1)] {
            if let Some(addr) = addr {
                ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", name]);
            }
            ip(&["-n", ns, "link", "set", name, "up"]);
        }
    }

    /// A Linux bridge `<name>` in namespace `ns` (full name), up, with the given interfaces of
    /// that namespace as its ports: a LAN segment the veths' far ends plug into.
    #[allow(dead_code, reason = "only the single-interface tests build a LAN")]
    pub fn bridge(&self, ns: &str, name: &str, ports: &[String]) {
        let bridge = self.link(name);
        ip(&["-n", ns, "link", "add", &bridge, "type", "bridge"]);
        for port in ports {
            ip(&["-n", ns, "link", "set", port, "master", &bridge]);
        }
        ip(&["-n", ns, "link", "set", &bridge, "up"]);
    }

    fn netns_path(&self, tag: &str) -> PathBuf {
        PathBuf::from("/run/netns").join(self.ns(tag))
    }

    /// Runs `f` on a thread inside namespace `tag`.
    /// Sets IPv4 sysctls (`/proc/sys/net/ipv4/<name>`) in namespace `tag` (a thread's
    /// `/proc/sys/net` is its own namespace's). A `conf/*/…` name is written for both `all` and
    /// `default`, so that links created afterwards inherit it.
    pub fn ipv4_sysctls(&self, tag: &str, settings: &[(&str, &str)]) {
        self.in_ns(tag, || {
            for &(name, value) in settings {
                let paths: Vec<String> = match name.strip_prefix("conf/*/") {
                    Some(key) => {
                        ["all", "default"].iter().map(|c| format!("/proc/sys/net/ipv4/conf/{c}/{key}")).collect()
                    }
                    None => vec![format!("/proc/sys/net/ipv4/{name}")],
                };
                for path in paths {
                    std::fs::write(&path, value).unwrap_or_else(|e| panic!("write {value} to {path}: {e}"));
                }
            }
        });
    }

    pub fn in_ns<T: Send>(&self, tag: &str, f: impl FnOnce() -> T + Send) -> T {
        let file = File::open(self.netns_path(tag)).expect("open the namespace");
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("enter the namespace");
                    f()
                })
                .join()
                .expect("the thread in the namespace panicked")
        })
    }

    /// Starts a thread inside namespace `tag`; it stays there.
    pub fn spawn_in_ns<T: Send + 'static>(
        &self,
        tag: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let file = File::open(self.netns_path(tag)).expect("open the namespace");
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("enter the namespace");
            f()
        })
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            let deleted = Command::new("ip").args(["netns", "del", ns]).status();
            if !deleted.is_ok_and(|status| status.success()) {
                eprintln!("could not delete namespace {ns}");
            }
        }
    }
}

/// Answers `exchanges` TCP connections and `exchanges` datagrams with the peer it saw (for the
/// client to check which address the backend saw), within about `timeout` each way.
pub fn serve(listener: TcpListener, udp: UdpSocket, exchanges: usize, timeout: Duration) {
    listener.set_nonblocking(true).expect("non-blocking listener");
    let deadline = Instant::now() + timeout * 2;
    let mut served = 0;
    while served < exchanges && Instant::now() < deadline {
        match listener.accept() {
            Ok((mut stream, peer)) => {
                let _ = writeln!(stream, "{peer}");
                served += 1;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    udp.set_read_timeout(Some(timeout)).expect("timeout");
    let mut buf = [0; 64];
    for _ in 0..exchanges {
        let Ok((_, from)) = udp.recv_from(&mut buf) else { break };
        let _ = udp.send_to(from.to_string().as_bytes(), from);
    }
}

/// From the client namespace `c`: `exchanges` TCP connections and UDP exchanges with `target`,
/// served by `backend` in namespace `b`, each within about `timeout`; returns the client address
/// the backend reported each time.
#[allow(dead_code, reason = "the ClusterIP tests exchange their own way")]
pub fn exchange(
    topo: &Topology,
    target: SocketAddrV4,
    backend: SocketAddrV4,
    exchanges: usize,
    timeout: Duration,
) -> Vec<SocketAddrV4> {
    let (listener, udp) = topo
        .in_ns("b", || (TcpListener::bind(backend).expect("bind TCP"), UdpSocket::bind(backend).expect("bind UDP")));
    let server = topo.spawn_in_ns("b", move || serve(listener, udp, exchanges, timeout));
    let seen = topo.in_ns("c", || {
        let mut seen = Vec::new();
        for _ in 0..exchanges {
            let mut stream = TcpStream::connect_timeout(&target.into(), timeout).expect("connect to the node port");
            stream.set_read_timeout(Some(timeout)).expect("timeout");
            let mut reply = String::new();
            stream.read_to_string(&mut reply).expect("read the backend's reply");
            assert_eq!(stream.peer_addr().expect("peer"), target.into(), "the client's peer is the node port");
            seen.push(reply.trim().parse().expect("the backend reports the client"));
        }
        for _ in 0..exchanges {
            let socket = UdpSocket::bind("0.0.0.0:0").expect("bind UDP client");
            socket.set_read_timeout(Some(timeout)).expect("timeout");
            socket.connect(target).expect("connect UDP");
            socket.send(b"who").expect("send");
            let mut buf = [0; 64];
            let len = socket.recv(&mut buf).expect("a reply from the node port");
            seen.push(String::from_utf8_lossy(&buf[..len]).parse().expect("the backend reports the client"));
        }
        seen
    });
    server.join().expect("the server thread");
    seen
}
