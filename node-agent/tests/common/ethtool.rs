//! The ethtool ioctls the network-namespace tests need (there is no ethtool binary here): offload
//! features on their veths and the veth driver's per-queue XDP statistics, always on an interface
//! of the calling thread's namespace.

use std::net::UdpSocket;

/// `ETHTOOL_STXCSUM`: transmit checksum offload.
pub const ETHTOOL_STXCSUM: u32 = 0x17;
/// `ETHTOOL_SGRO`: generic receive offload.
#[allow(dead_code, reason = "only the tests whose veths take redirected XDP frames use it")]
pub const ETHTOOL_SGRO: u32 = 0x2c;

/// `ethtool -K <iface> <feature> on|off` (no ethtool binary here): the `cmd` ioctl (one of the
/// `ETHTOOL_S*` constants above) on an interface of the calling thread's namespace.
pub fn set_feature(iface: &str, cmd: u32, on: bool) {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let mut value = EthtoolValue { cmd, data: u32::from(on) };
    // SAFETY: an `ethtool_value` is what the `ETHTOOL_S*` feature commands read and write.
    unsafe { ethtool(iface, (&raw mut value).cast()) };
}

/// The `SIOCETHTOOL` ioctl on `iface` (in the calling thread's namespace) with the command
/// structure at `data`, whose first `u32` is the command; panics when it fails.
///
/// # Safety
///
/// `data` must point to a structure, alive for the call, as large as the command reads and
/// writes.
unsafe fn ethtool(iface: &str, data: *mut libc::c_void) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("a socket for the ioctl");
    // SAFETY: `ifreq` is plain data; all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    assert!(iface.len() < request.ifr_name.len(), "interface name fits");
    for (dst, src) in request.ifr_name.iter_mut().zip(iface.bytes()) {
        *dst = src as libc::c_char;
    }
    request.ifr_ifru.ifru_data = data.cast();
    // SAFETY: SIOCETHTOOL reads `ifreq` (a NUL-terminated name and the pointer to the
    // command, both alive for the call) and at most the command's structure, which the
    // caller vouches for.
    let rc = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&socket), libc::SIOCETHTOOL as _, &raw mut request) };
    // SAFETY: the caller's structure starts with the command.
    let cmd = unsafe { data.cast::<u32>().read() };
    assert_eq!(rc, 0, "ethtool command {cmd:#x} on {iface}: {}", std::io::Error::last_os_error());
}

/// The sum over a veth's receive queues of one of its per-queue XDP statistics
/// (`rx_queue_<n>_<stat>` in `ethtool -S`), in the calling thread's namespace.
#[allow(dead_code, reason = "only the XDP_TX test reads veth statistics")]
pub fn veth_xdp_stat(iface: &str, stat: &str) -> u64 {
    const ETHTOOL_GSTRINGS: u32 = 0x1b;
    const ETHTOOL_GSTATS: u32 = 0x1d;
    const ETHTOOL_GSSET_INFO: u32 = 0x37;
    const ETH_SS_STATS: u32 = 1;
    const ETH_GSTRING_LEN: usize = 32;
    // Two `u32`s in the first `u64` of a buffer, in memory order.
    let pair = |a: u32, b: u32| {
        u64::from_ne_bytes([a.to_ne_bytes(), b.to_ne_bytes()].concat().try_into().expect("eight bytes"))
    };
    // `ethtool_sset_info`: cmd, reserved, sset_mask, then one u32 per set in the mask.
    let mut info = [pair(ETHTOOL_GSSET_INFO, 0), 1 << ETH_SS_STATS, 0];
    // SAFETY: an `ethtool_sset_info` with room for the one set asked for.
    unsafe { ethtool(iface, info.as_mut_ptr().cast()) };
    let n = u32::from_ne_bytes(info[2].to_ne_bytes()[..4].try_into().expect("four bytes")) as usize;
    // `ethtool_gstrings`: cmd, string_set, len, then `len` names of 32 bytes.
    let mut names = vec![0u32; 3 + n * ETH_GSTRING_LEN / 4];
    names[..3].copy_from_slice(&[ETHTOOL_GSTRINGS, ETH_SS_STATS, n as u32]);
    // SAFETY: an `ethtool_gstrings` with room for the `n` names it asks for.
    unsafe { ethtool(iface, names.as_mut_ptr().cast()) };
    let names: Vec<u8> = names[3..].iter().flat_map(|word| word.to_ne_bytes()).collect();
    // `ethtool_stats`: cmd, n_stats, then `n_stats` u64 values.
    let mut values = vec![0u64; 1 + n];
    values[0] = pair(ETHTOOL_GSTATS, n as u32);
    // SAFETY: an `ethtool_stats` with room for the `n` values it asks for.
    unsafe { ethtool(iface, values.as_mut_ptr().cast()) };
    names
        .chunks(ETH_GSTRING_LEN)
        .map(|name| String::from_utf8_lossy(name).trim_end_matches('\0').to_string())
        .zip(&values[1..])
        .filter(|(name, _)| {
            name.strip_prefix("rx_queue_")
                .and_then(|rest| rest.split_once('_'))
                .is_some_and(|(queue, rest)| queue.bytes().all(|b| b.is_ascii_digit()) && rest == stat)
        })
        .map(|(_, value)| value)
        .sum()
}
