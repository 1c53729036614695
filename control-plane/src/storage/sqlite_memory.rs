//! SQLite's memory comes from the process's global allocator (mimalloc) instead of glibc's
//! `malloc`.
//!
//! The store's writer thread allocates in a glibc arena of its own, which glibc grows and trims
//! as each commit's page buffers come and go: under a stream of creates that was one `mprotect`
//! (and fresh zeroed pages to fault in) every five writes (`bench api`, `perf record -e
//! syscalls:sys_enter_mprotect`). mimalloc keeps freed pages for reuse within the process.
//!
//! SQLite accepts a memory configuration only before it initializes, so [`install`] runs before
//! the store opens its first connection; if something opened a connection earlier, SQLite keeps
//! its default allocator, which only costs speed.

use std::alloc::{Layout, alloc, dealloc, realloc};
use std::ffi::{c_int, c_void};
use std::sync::OnceLock;

use rusqlite::ffi;

/// Every block starts with its size (SQLite's `xSize` asks for it), in a header that keeps the
/// rest 16-byte aligned; SQLite needs 8.
const HEADER: usize = 16;
const ALIGN: usize = 16;

/// Routes SQLite's allocations to the global allocator, once per process. Returns whether
/// SQLite took the configuration (false when SQLite was already initialized).
pub fn install() -> bool {
    static TAKEN: OnceLock<bool> = OnceLock::new();
    *TAKEN.get_or_init(|| {
        let methods = ffi::sqlite3_mem_methods {
            xMalloc: Some(x_malloc),
            xFree: Some(x_free),
            xRealloc: Some(x_realloc),
            xSize: Some(x_size),
            xRoundup: Some(x_roundup),
            xInit: Some(x_init),
            xShutdown: Some(x_shutdown),
            pAppData: std::ptr::null_mut(),
        };
        // SAFETY: SQLite copies the methods before `sqlite3_config` returns; the functions below
        // follow its contract (NULL on failure, sizes as asked). It refuses (SQLITE_MISUSE)
        // rather than switch allocators once initialized.
        let rc = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_MALLOC, &methods as *const ffi::sqlite3_mem_methods) };
        if rc != ffi::SQLITE_OK {
            tracing::debug!(rc, "SQLite was initialized before the store opened: it keeps its own allocator");
        }
        rc == ffi::SQLITE_OK
    })
}

fn layout(size: usize) -> Option<Layout> {
    Layout::from_size_align(size.checked_add(HEADER)?, ALIGN).ok()
}

/// # Safety
/// `block` is a pointer this allocator returned and has not freed.
unsafe fn base_and_size(block: *mut c_void) -> (*mut u8, usize) {
    // SAFETY: every block handed out sits HEADER bytes after its base, which holds its size.
    unsafe {
        let base = block.cast::<u8>().sub(HEADER);
        (base, base.cast::<usize>().read())
    }
}

unsafe extern "C" fn x_malloc(size: c_int) -> *mut c_void {
    let Some(layout) = usize::try_from(size).ok().and_then(layout) else { return std::ptr::null_mut() };
    // SAFETY: the layout is never zero-sized (it includes the header).
    unsafe {
        let base = alloc(layout);
        if base.is_null() {
            return std::ptr::null_mut();
        }
        base.cast::<usize>().write(layout.size() - HEADER);
        base.add(HEADER).cast()
    }
}

unsafe extern "C" fn x_free(block: *mut c_void) {
    if block.is_null() {
        return;
    }
    // SAFETY: SQLite frees only blocks from `x_malloc`/`x_realloc`, once.
    unsafe {
        let (base, size) = base_and_size(block);
        dealloc(base, Layout::from_size_align_unchecked(size + HEADER, ALIGN));
    }
}

unsafe extern "C" fn x_realloc(block: *mut c_void, size: c_int) -> *mut c_void {
    if block.is_null() {
        // SAFETY: as for a fresh allocation.
        return unsafe { x_malloc(size) };
    }
    let Some(new) = usize::try_from(size).ok().and_then(layout) else { return std::ptr::null_mut() };
    // SAFETY: `block` is live (SQLite's contract); on failure the old block stays valid.
    unsafe {
        let (base, old) = base_and_size(block);
        let moved = realloc(base, Layout::from_size_align_unchecked(old + HEADER, ALIGN), new.size());
        if moved.is_null() {
            return std::ptr::null_mut();
        }
        moved.cast::<usize>().write(new.size() - HEADER);
        moved.add(HEADER).cast()
    }
}

unsafe extern "C" fn x_size(block: *mut c_void) -> c_int {
    if block.is_null() {
        return 0;
    }
    // SAFETY: `block` is live (SQLite's contract); sizes came from a `c_int`.
    unsafe { base_and_size(block).1 as c_int }
}

unsafe extern "C" fn x_roundup(size: c_int) -> c_int {
    size.saturating_add(7) & !7
}

unsafe extern "C" fn x_init(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_shutdown(_: *mut c_void) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_keep_their_size_and_contents_through_realloc() {
        // SAFETY: the allocator's own contract, exercised directly.
        unsafe {
            let a = x_malloc(100);
            assert!(!a.is_null());
            assert_eq!(a as usize % 8, 0, "SQLite needs 8-byte alignment");
            assert_eq!(x_size(a), 100);
            std::ptr::write_bytes(a.cast::<u8>(), 0xab, 100);
            let b = x_realloc(a, 5000);
            assert_eq!(x_size(b), 5000);
            assert!(std::slice::from_raw_parts(b.cast::<u8>(), 100).iter().all(|&x| x == 0xab), "contents kept");
            let c = x_realloc(b, 10);
            assert_eq!(x_size(c), 10);
            assert_eq!(*c.cast::<u8>(), 0xab);
            x_free(c);
            x_free(std::ptr::null_mut());
            assert!(x_malloc(-1).is_null(), "a negative size is refused, not wrapped");
            assert_eq!(x_roundup(13), 16);
        }
    }
}
