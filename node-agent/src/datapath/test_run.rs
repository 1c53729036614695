//! `BPF_PROG_TEST_RUN`: running a loaded program on a buffer in the kernel, without any
//! interface, for tests (crafted packets, checked verdicts and rewrites) and for the benchmark's
//! ns/packet figures. aya 0.14 has no wrapper for it.

use std::os::fd::{AsRawFd as _, BorrowedFd};

use super::Error;

/// What one `BPF_PROG_TEST_RUN` call returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value of the last run (for `tc_nat`, the TC verdict).
    pub retval: u32,
    /// The buffer as the program left it after the last run.
    pub data: Vec<u8>,
    /// The kernel's mean time per run in nanoseconds (its clock is read around all `repeat`
    /// runs together, so a large `repeat` leaves out the cost of reading it).
    pub duration_ns: u32,
}

/// `BPF_PROG_TEST_RUN`'s part of `union bpf_attr` (include/uapi/linux/bpf.h, `test`).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

const _: () = assert!(size_of::<TestRunAttr>() == 80);

const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// Room the kernel may need beyond the input (programs can grow a packet).
const HEADROOM: usize = 256;

/// Runs `prog` (for example `tc_nat`, from [`super::Datapath::program_fd`]) on `data` `repeat`
/// times (0 counts as 1) with the program's real maps.
///
/// The kernel runs the program on one buffer for all repeats, so what a run writes into the
/// packet is what the next run sees: a DNAT rewrites the destination for every later repeat.
/// Needs `CAP_BPF` (or root); the kernel refuses some inputs, e.g. an IPv4 frame shorter than its
/// header (`EINVAL`), before the program runs.
pub fn test_run(prog: BorrowedFd<'_>, data: &[u8], repeat: u32) -> Result<TestRun, Error> {
    let failed = |source| Error::TestRun { len: data.len(), source };
    let too_big = || failed(std::io::Error::from_raw_os_error(libc::E2BIG));
    let mut out = vec![0u8; data.len() + HEADROOM];
    let mut attr = TestRunAttr {
        prog_fd: u32::try_from(prog.as_raw_fd()).map_err(|_| failed(std::io::Error::from_raw_os_error(libc::EBADF)))?,
        data_size_in: u32::try_from(data.len()).map_err(|_| too_big())?,
        data_size_out: u32::try_from(out.len()).map_err(|_| too_big())?,
        data_in: data.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat,
        ..TestRunAttr::default()
    };
    // SAFETY: `attr` is laid out as the kernel's `bpf_attr.test` (fields and size checked above;
    // the kernel requires bytes past what it knows to be zero, and `_pad` is). `data_in` points
    // to `data.len()` readable bytes and `data_out` to `out.len()` writable bytes, both alive
    // until the call returns; the kernel does not keep the pointers.
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_PROG_TEST_RUN, &raw mut attr, size_of::<TestRunAttr>() as libc::c_uint)
    };
    if rc != 0 {
        return Err(failed(std::io::Error::last_os_error()));
    }
    out.truncate(usize::try_from(attr.data_size_out).map_err(|_| too_big())?.min(out.len()));
    Ok(TestRun { retval: attr.retval, data: out, duration_ns: attr.duration })
}
