//! The few system calls std lacks, from the C library std already links: `setns(2)`, `SO_LINGER`,
//! `shutdown(2)` on a listener, `signal(2)` for Ctrl-C, and a conntrack flush over netfilter
//! netlink (what `conntrack -F` sends), so the benchmark needs no extra Debian package.

use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsRawFd, FromRawFd as _};
use std::sync::atomic::{AtomicBool, Ordering};

/// `CLONE_NEWNET` from `<sched.h>`.
const CLONE_NEWNET: i32 = 0x4000_0000;
/// `<sys/socket.h>` and `<linux/netlink.h>` constants (x86-64 and aarch64 agree on these).
const SOL_SOCKET: i32 = 1;
const SO_LINGER: i32 = 13;
const SHUT_RDWR: i32 = 2;
const AF_INET: u8 = 2;
const AF_NETLINK: i32 = 16;
const SOCK_RAW: i32 = 3;
const SOCK_CLOEXEC: i32 = 0o2_000_000;
const NETLINK_NETFILTER: i32 = 12;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLMSG_ERROR: u16 = 0x2;
/// `NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE`: a delete without a tuple flushes the table.
const CT_DELETE: u16 = (1 << 8) | 2;
const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

/// `struct linger` from `<sys/socket.h>`.
#[repr(C)]
struct Linger {
    l_onoff: i32,
    l_linger: i32,
}

unsafe extern "C" {
    fn setns(fd: i32, nstype: i32) -> i32;
    fn setsockopt(fd: i32, level: i32, name: i32, value: *const core::ffi::c_void, len: u32) -> i32;
    fn shutdown(fd: i32, how: i32) -> i32;
    fn listen(fd: i32, backlog: i32) -> i32;
    fn socket(domain: i32, kind: i32, protocol: i32) -> i32;
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    fn umount2(target: *const core::ffi::c_char, flags: i32) -> i32;
}

/// `MNT_DETACH` from `<sys/mount.h>`.
const MNT_DETACH: i32 = 2;

/// Lazily unmounts `path` (`umount -l`).
pub fn unmount(path: &std::path::Path) -> io::Result<()> {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "mount point with a NUL byte"))?;
    // SAFETY: `path` is a valid NUL-terminated string that outlives the call; umount2 only reads it.
    let rc = unsafe { umount2(path.as_ptr(), MNT_DETACH) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Moves the calling thread (only it) into the network namespace open as `file`.
pub fn enter_netns(file: &File) -> io::Result<()> {
    // SAFETY: `setns` only reads its two integer arguments; the descriptor is valid for the call
    // because `file` is borrowed, and changing this thread's network namespace cannot invalidate
    // any memory Rust relies on.
    let rc = unsafe { setns(file.as_raw_fd(), CLONE_NEWNET) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// `SO_LINGER` on, timeout 0: closing the socket sends a RST and leaves no TIME_WAIT behind.
pub fn set_abortive_close(socket: &impl AsRawFd) -> io::Result<()> {
    let linger = Linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: the pointer and length describe `linger`, which lives across the call; the kernel
    // only reads it. The descriptor is borrowed, so it is open.
    let rc = unsafe {
        setsockopt(socket.as_raw_fd(), SOL_SOCKET, SO_LINGER, (&raw const linger).cast(), size_of::<Linger>() as u32)
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Raises a listening socket's accept backlog (std listens with 128; Linux caps the value at the
/// namespace's `net.core.somaxconn`). A full accept queue drops SYNs, and the client's retransmit
/// comes a second later.
pub fn set_backlog(listener: &impl AsRawFd, backlog: i32) -> io::Result<()> {
    // SAFETY: plain integer arguments; the descriptor is borrowed, so it is open. `listen` on a
    // listening socket only updates its backlog.
    let rc = unsafe { listen(listener.as_raw_fd(), backlog) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Wakes every thread blocked in `accept` on this listener (it returns `EINVAL` from then on).
pub fn shutdown_listener(listener: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: plain integer arguments; the descriptor is borrowed, so it is open.
    let rc = unsafe { shutdown(listener.as_raw_fd(), SHUT_RDWR) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_signum: i32) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM set a flag that the measuring loops poll, so the run stops at the next step
/// and its drop guards delete the namespaces. (A terminal's Ctrl-C also reaches a running
/// `iptables-restore` or `nft`, which then fails the current step.)
pub fn catch_interrupts() {
    for signum in [SIGINT, SIGTERM] {
        // SAFETY: `on_signal` is an `extern "C" fn(i32)` that only stores to an atomic, which is
        // async-signal-safe; glibc's `signal` installs it with BSD semantics (SA_RESTART).
        unsafe { signal(signum, on_signal) };
    }
}

/// Whether SIGINT or SIGTERM arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Deletes every IPv4 conntrack entry of the calling thread's network namespace.
pub fn flush_conntrack() -> io::Result<()> {
    // SAFETY: plain integer arguments; the result is checked before use.
    let fd = unsafe { socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns; the `File` closes it once.
    // Netlink sockets take write(2)/read(2): an unaddressed write goes to the kernel.
    let mut netlink = unsafe { File::from_raw_fd(fd) };
    let mut message = Vec::with_capacity(20);
    message.extend_from_slice(&20u32.to_ne_bytes()); // nlmsg_len
    message.extend_from_slice(&CT_DELETE.to_ne_bytes()); // nlmsg_type
    message.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes()); // nlmsg_flags
    message.extend_from_slice(&1u32.to_ne_bytes()); // nlmsg_seq
    message.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid
    message.extend_from_slice(&[AF_INET, 0, 0, 0]); // nfgenmsg: family, version 0, res_id 0 (big-endian)
    netlink.write_all(&message)?;
    let mut reply = [0u8; 4096];
    let read = netlink.read(&mut reply)?;
    if read < 20 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("short netlink reply ({read} bytes)")));
    }
    let kind = u16::from_ne_bytes([reply[4], reply[5]]);
    if kind != NLMSG_ERROR {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("unexpected netlink reply type {kind}")));
    }
    let error = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
    if error == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-error)) }
}
