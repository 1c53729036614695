//! Crafting and checking Ethernet/IPv4/TCP-UDP frames for `BPF_PROG_TEST_RUN` tests, run through
//! `node_agent::datapath::test_run`.
//!
//! Checksums are computed here from scratch (RFC 1071 over the header, and over the pseudo-header
//! and segment for TCP/UDP), never incrementally, so they check the program's incremental updates.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::BorrowedFd;

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMP: u8 = 1;
#[allow(dead_code, reason = "not every test binary sends resets")]
pub const TCP_RST: u8 = 0x04;
#[allow(dead_code, reason = "not every test binary closes connections")]
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;
/// IPv4 "more fragments" flag in the host-order `frag_off` field.
pub const IP_MF: u16 = 0x2000;

/// A frame to build. The defaults describe a TCP SYN without options or payload.
#[derive(Clone, Debug)]
pub struct Frame {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub proto: u8,
    pub ether_type: u16,
    /// IPv4 options, a multiple of 4 bytes long.
    pub ip_options: Vec<u8>,
    /// Host order: flags and fragment offset (in 8-byte units).
    pub frag_off: u16,
    pub tcp_flags: u8,
    /// Send UDP without a checksum (the field is 0).
    pub udp_no_checksum: bool,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn tcp(src: SocketAddrV4, dst: SocketAddrV4) -> Self {
        Self {
            src,
            dst,
            proto: IPPROTO_TCP,
            ether_type: ETH_P_IP,
            ip_options: Vec::new(),
            frag_off: 0,
            tcp_flags: TCP_SYN,
            udp_no_checksum: false,
            payload: Vec::new(),
        }
    }

    pub fn udp(src: SocketAddrV4, dst: SocketAddrV4) -> Self {
        Self { proto: IPPROTO_UDP, payload: b"query".to_vec(), ..Self::tcp(src, dst) }
    }

    pub fn build(&self) -> Vec<u8> {
        assert_eq!(self.ip_options.len() % 4, 0, "IPv4 options are whole words");
        let l4 = match self.proto {
            IPPROTO_TCP => {
                let mut tcp = Vec::with_capacity(20 + self.payload.len());
                tcp.extend_from_slice(&self.src.port().to_be_bytes());
                tcp.extend_from_slice(&self.dst.port().to_be_bytes());
                tcp.extend_from_slice(&0x0102_0304u32.to_be_bytes()); // seq
                tcp.extend_from_slice(&0u32.to_be_bytes()); // ack
                tcp.push(5 << 4); // data offset
                tcp.push(self.tcp_flags);
                tcp.extend_from_slice(&64_240u16.to_be_bytes()); // window
                tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
                tcp.extend_from_slice(&self.payload);
                let sum = l4_checksum(self.src.ip(), self.dst.ip(), IPPROTO_TCP, &tcp);
                tcp[16..18].copy_from_slice(&sum.to_be_bytes());
                tcp
            }
            IPPROTO_UDP => {
                let mut udp = Vec::with_capacity(8 + self.payload.len());
                udp.extend_from_slice(&self.src.port().to_be_bytes());
                udp.extend_from_slice(&self.dst.port().to_be_bytes());
                udp.extend_from_slice(&u16::try_from(8 + self.payload.len()).expect("small").to_be_bytes());
                udp.extend_from_slice(&[0, 0]);
                udp.extend_from_slice(&self.payload);
                if !self.udp_no_checksum {
                    let sum = match l4_checksum(self.src.ip(), self.dst.ip(), IPPROTO_UDP, &udp) {
                        0 => 0xffff,
                        sum => sum,
                    };
                    udp[6..8].copy_from_slice(&sum.to_be_bytes());
                }
                udp
            }
            _ => self.payload.clone(),
        };
        let ihl = 20 + self.ip_options.len();
        let mut ip = Vec::with_capacity(ihl);
        ip.push(0x40 | u8::try_from(ihl / 4).expect("IHL fits"));
        ip.push(0);
        ip.extend_from_slice(&u16::try_from(ihl + l4.len()).expect("small").to_be_bytes());
        ip.extend_from_slice(&0x1234u16.to_be_bytes()); // id
        ip.extend_from_slice(&self.frag_off.to_be_bytes());
        ip.push(64);
        ip.push(self.proto);
        ip.extend_from_slice(&[0, 0]);
        ip.extend_from_slice(&self.src.ip().octets());
        ip.extend_from_slice(&self.dst.ip().octets());
        ip.extend_from_slice(&self.ip_options);
        let sum = checksum(&[&ip]);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());

        let mut frame = Vec::with_capacity(ETH_HLEN + ip.len() + l4.len());
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // destination MAC
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]); // source MAC
        frame.extend_from_slice(&self.ether_type.to_be_bytes());
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&l4);
        frame
    }
}

/// RFC 1071 checksum over the concatenation of `parts` (each of even length but the last).
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    for part in parts {
        for word in part.chunks(2) {
            let high = u32::from(word[0]) << 8;
            sum += high | word.get(1).map_or(0, |&low| u32::from(low));
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The TCP/UDP checksum of `segment` (its checksum field zero) with the IPv4 pseudo-header.
pub fn l4_checksum(src: &Ipv4Addr, dst: &Ipv4Addr, proto: u8, segment: &[u8]) -> u16 {
    let len = u16::try_from(segment.len()).expect("small").to_be_bytes();
    let pseudo = [&src.octets()[..], &dst.octets()[..], &[0, proto], &len[..]].concat();
    checksum(&[&pseudo, segment])
}

/// What a test reads back from a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub proto: u8,
    /// The L4 checksum field as found.
    pub l4_checksum: u16,
}

/// Parses an Ethernet/IPv4/TCP-UDP frame and checks both checksums against ones computed from
/// scratch (a UDP checksum of 0 means "none" and is accepted as such).
pub fn parse_checked(frame: &[u8]) -> Parsed {
    assert_eq!(u16::from_be_bytes([frame[12], frame[13]]), ETH_P_IP, "IPv4 frame");
    let ip = &frame[ETH_HLEN..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    assert_eq!(checksum(&[&ip[..ihl]]), 0, "IPv4 header checksum is valid");
    let src_ip = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst_ip = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let proto = ip[9];
    let segment = &ip[ihl..total];
    let csum_at = match proto {
        IPPROTO_TCP => 16,
        IPPROTO_UDP => 6,
        other => panic!("protocol {other} is not TCP or UDP"),
    };
    let found = u16::from_be_bytes([segment[csum_at], segment[csum_at + 1]]);
    if !(proto == IPPROTO_UDP && found == 0) {
        let mut zeroed = segment.to_vec();
        zeroed[csum_at..csum_at + 2].fill(0);
        let mut expected = l4_checksum(&src_ip, &dst_ip, proto, &zeroed);
        if proto == IPPROTO_UDP && expected == 0 {
            expected = 0xffff;
        }
        assert_eq!(found, expected, "L4 checksum matches one computed from scratch");
    }
    let port = |at: usize| u16::from_be_bytes([segment[at], segment[at + 1]]);
    Parsed {
        src: SocketAddrV4::new(src_ip, port(0)),
        dst: SocketAddrV4::new(dst_ip, port(2)),
        proto,
        l4_checksum: found,
    }
}

/// Runs the program once on `frame`; returns its return value (the TC verdict) and the frame as
/// the program left it.
pub fn test_run(prog: BorrowedFd<'_>, frame: &[u8]) -> (u32, Vec<u8>) {
    try_test_run(prog, frame).unwrap_or_else(|error| panic!("BPF_PROG_TEST_RUN on {} bytes: {error}", frame.len()))
}

/// [`test_run`], with the kernel's refusal as an error.
pub fn try_test_run(prog: BorrowedFd<'_>, frame: &[u8]) -> std::io::Result<(u32, Vec<u8>)> {
    match node_agent::datapath::test_run(prog, frame, 1) {
        Ok(run) => Ok((run.retval, run.data)),
        Err(node_agent::datapath::Error::TestRun { source, .. }) => Err(source),
        Err(other) => Err(std::io::Error::other(other)),
    }
}

/// Frames too short for their headers or with a bad IPv4 header, from `src` to a TCP service
/// `tcp` and a UDP one `udp`: every program must pass them unchanged (and count them).
#[allow(dead_code, reason = "used by the TC and XDP tests, not by every test binary")]
pub fn malformed(src: SocketAddrV4, tcp: SocketAddrV4, udp: SocketAddrV4) -> Vec<(&'static str, Vec<u8>)> {
    let syn = Frame::tcp(src, tcp).build();
    let datagram = Frame::udp(src, udp).build();
    let with = |first_byte: u8| {
        let mut frame = syn.clone();
        frame[ETH_HLEN] = first_byte;
        frame
    };
    let mut short_total = syn.clone();
    short_total[ETH_HLEN + 2..ETH_HLEN + 4].copy_from_slice(&30u16.to_be_bytes());
    // IHL 7 (8 bytes of options) but the frame ends after 4 of them: the header is cut.
    let two_options = Frame { ip_options: vec![1; 8], ..Frame::tcp(src, tcp) }.build();
    // IHL 6 and a TCP header cut right after the ports.
    let one_option = Frame { ip_options: vec![1; 4], ..Frame::tcp(src, tcp) }.build();
    vec![
        ("IPv4 header cut in its options", two_options[..ETH_HLEN + 24].to_vec()),
        ("TCP header cut", syn[..ETH_HLEN + 20 + 12].to_vec()),
        ("TCP header cut after options", one_option[..ETH_HLEN + 24 + 4].to_vec()),
        ("UDP header cut", datagram[..ETH_HLEN + 20 + 6].to_vec()),
        ("IHL 4", with(0x44)),
        ("IPv4 version 6", with(0x65)),
        ("total length shorter than the headers", short_total),
        ("IHL 15, past the end of the frame", with(0x4f)),
    ]
}

/// Runs `prog` on the start of `frame` cut shorter than Ethernet + IPv4 (this kernel's
/// BPF_PROG_TEST_RUN refuses such frames with `EINVAL` before the program runs); those that do
/// run must come back with verdict `pass` and unchanged. Returns how many ran.
#[allow(dead_code, reason = "used by the TC and XDP tests, not by every test binary")]
pub fn short_frames_pass(prog: BorrowedFd<'_>, frame: &[u8], pass: u32) -> u64 {
    let mut ran = 0;
    for (what, cut) in [("Ethernet header only", &frame[..ETH_HLEN]), ("IPv4 header cut", &frame[..ETH_HLEN + 12])] {
        match try_test_run(prog, cut) {
            Ok((verdict, out)) => {
                assert_eq!((verdict, out.as_slice()), (pass, cut), "{what}: passed unchanged");
                ran += 1;
            }
            Err(error) => assert_eq!(error.raw_os_error(), Some(libc::EINVAL), "{what}: {error}"),
        }
    }
    ran
}
