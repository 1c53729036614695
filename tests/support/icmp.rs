//! One ICMP echo over a raw socket, for the privileged tests of several crates (included with
//! `#[path]`, so that there is one copy): no `ping` binary needed, and it runs in the network
//! namespace of the calling thread.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Sends one ICMP echo request to `dst` from the calling thread's namespace and waits up to `timeout`
/// for the matching reply.
pub fn ping(dst: Ipv4Addr, timeout: Duration) -> bool {
    static SEQUENCE: AtomicUsize = AtomicUsize::new(1);
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed) as u16;
    let identifier = std::process::id() as u16;
    // SAFETY: plain socket(2) call; the descriptor is owned by `OwnedFd` right after.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_ICMP) };
    assert!(raw >= 0, "raw ICMP socket: {}", std::io::Error::last_os_error());
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let socket = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);

    let mut packet = [0u8; 24];
    packet[0] = 8; // echo request
    packet[4..6].copy_from_slice(&identifier.to_be_bytes());
    packet[6..8].copy_from_slice(&sequence.to_be_bytes());
    packet[8..].copy_from_slice(b"keelson-net-test");
    let checksum = icmp_checksum(&packet);
    packet[2..4].copy_from_slice(&checksum.to_be_bytes());
    let address = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(dst).to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: `packet` and `address` outlive the call and the lengths match them.
    let sent = unsafe {
        libc::sendto(
            fd,
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&raw const address).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return false;
    }
    let deadline = Instant::now() + timeout;
    let mut buffer = [0u8; 1500];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let mut poll = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut poll, 1, left.as_millis().max(1) as libc::c_int) };
        if ready <= 0 {
            return false;
        }
        // SAFETY: `buffer` is writable for its whole length.
        let size = unsafe { libc::recv(fd, buffer.as_mut_ptr().cast(), buffer.len(), 0) };
        if size < 20 {
            continue;
        }
        let received = &buffer[..size as usize];
        let header = usize::from(received[0] & 0x0f) * 4;
        let source = Ipv4Addr::new(received[12], received[13], received[14], received[15]);
        let Some(icmp) = received.get(header..header + 8) else { continue };
        if source == dst
            && icmp[0] == 0
            && icmp[4..6] == identifier.to_be_bytes()
            && icmp[6..8] == sequence.to_be_bytes()
        {
            return true;
        }
    }
    false
}

fn icmp_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 =
        data.chunks(2).map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
