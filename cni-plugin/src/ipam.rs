//! Address allocation from the node's podCIDR, kept in `dataDir`: one file per allocated address, named by
//! the address and holding its owner (`containerID` and `ifname`, one per line), plus `last_reserved_ip`
//! (allocation goes round-robin so a released address is not handed out again at once) and `lock`.
//!
//! Every change happens under an exclusive `flock` on `lock`, so concurrent plugin processes never hand out
//! the same address; the lock is held only for the few file operations, not while interfaces are wired.
//! Files are not fsynced: a crash of the plugin process leaves the page cache intact, and after a power loss
//! every pod on the node is gone anyway (a stale file is then collected by GC, and a lost one is harmless).
//!
//! Only the plugin's commands call this module.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::config::PodCidr;
use crate::error::{CniError, ErrorCode};

const LOCK_FILE: &str = "lock";
const LAST_RESERVED_FILE: &str = "last_reserved_ip";

/// The attachment an address belongs to: the spec's key is (network, container ID, ifname), and the
/// network is implied by the directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub container_id: String,
    pub ifname: String,
}

impl Owner {
    fn encode(&self) -> String {
        format!("{}\n{}\n", self.container_id, self.ifname)
    }

    fn decode(text: &str) -> Self {
        let mut lines = text.lines();
        let container_id = lines.next().unwrap_or_default().trim().to_owned();
        let ifname = lines.next().unwrap_or_default().trim().to_owned();
        Self { container_id, ifname }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("lock {}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("all {count} pod addresses of {cidr} are allocated")]
    Exhausted { cidr: PodCidr, count: u64 },
}

impl From<IpamError> for CniError {
    fn from(error: IpamError) -> Self {
        let (code, msg) = match &error {
            IpamError::Exhausted { .. } => (ErrorCode::AddressRangeExhausted, "address range exhausted"),
            IpamError::Io { .. } | IpamError::Lock { .. } => (ErrorCode::Io, "address allocation state"),
        };
        CniError::new(code, msg, crate::error::chain(&error))
    }
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> IpamError {
    let path = path.to_path_buf();
    move |source| IpamError::Io { op, path, source }
}

/// The allocation state of one network.
#[derive(Debug, Clone)]
pub struct Pool {
    dir: PathBuf,
    cidr: PodCidr,
}

impl Pool {
    pub fn new(dir: impl Into<PathBuf>, cidr: PodCidr) -> Self {
        Self { dir: dir.into(), cidr }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of addresses pods can get.
    pub fn capacity(&self) -> u64 {
        self.cidr.size() - 3
    }

    /// Creates the directory if needed and takes the exclusive lock.
    fn lock(&self) -> Result<Flock<File>, IpamError> {
        fs::create_dir_all(&self.dir).map_err(io_error("create directory", &self.dir))?;
        let path = self.dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error("open lock file", &path))?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, source)| IpamError::Lock { path, source })
    }

    fn address_path(&self, ip: Ipv4Addr) -> PathBuf {
        self.dir.join(ip.to_string())
    }

    /// Reserves the next free address for `owner`.
    pub fn allocate(&self, owner: &Owner) -> Result<Ipv4Addr, IpamError> {
        let _lock = self.lock()?;
        let (first, last) = self.cidr.pod_range();
        let (first, last) = (u32::from(first), u32::from(last));
        let last_path = self.dir.join(LAST_RESERVED_FILE);
        let previous = fs::read_to_string(&last_path)
            .ok()
            .and_then(|text| text.trim().parse::<Ipv4Addr>().ok())
            .map(u32::from)
            .filter(|ip| (first..=last).contains(ip));
        let start = match previous {
            Some(ip) if ip < last => ip + 1,
            _ => first,
        };
        let count = last - first + 1;
        for offset in 0..count {
            let candidate = Ipv4Addr::from(first + (start - first + offset) % count);
            let path = self.address_path(candidate);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    file.write_all(owner.encode().as_bytes()).map_err(io_error("write allocation", &path))?;
                    // Only a hint: a lost or torn write makes the next allocation start from the first address.
                    let _ = fs::write(&last_path, candidate.to_string());
                    return Ok(candidate);
                }
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(error) => return Err(io_error("create allocation", &path)(error)),
            }
        }
        Err(IpamError::Exhausted { cidr: self.cidr, count: u64::from(count) })
    }

    /// Releases every address held by `owner`; `hint` (the address from `prevResult`) is tried first so
    /// the usual DEL reads one file. Returns the released addresses; none is not an error.
    pub fn release(&self, owner: &Owner, hint: Option<Ipv4Addr>) -> Result<Vec<Ipv4Addr>, IpamError> {
        let _lock = self.lock()?;
        if let Some(ip) = hint
            && self.read_owner(ip)?.as_ref() == Some(owner)
        {
            self.remove(ip)?;
            return Ok(vec![ip]);
        }
        let mut released = Vec::new();
        for (ip, holder) in self.scan()? {
            if &holder == owner {
                self.remove(ip)?;
                released.push(ip);
            }
        }
        Ok(released)
    }

    /// Releases every address of `owner` except `keep` (left over by an interrupted attachment).
    pub fn release_except(&self, owner: &Owner, keep: Ipv4Addr) -> Result<Vec<Ipv4Addr>, IpamError> {
        let _lock = self.lock()?;
        let mut released = Vec::new();
        for (ip, holder) in self.scan()? {
            if &holder == owner && ip != keep {
                self.remove(ip)?;
                released.push(ip);
            }
        }
        Ok(released)
    }

    /// Releases every allocation whose owner is not in `keep` (GC). Returns what was released.
    pub fn retain(&self, keep: &HashSet<Owner>) -> Result<Vec<(Ipv4Addr, Owner)>, IpamError> {
        let _lock = self.lock()?;
        let mut released = Vec::new();
        for (ip, holder) in self.scan()? {
            if !keep.contains(&holder) {
                self.remove(ip)?;
                released.push((ip, holder));
            }
        }
        Ok(released)
    }

    /// The owner of `ip`, if it is allocated.
    pub fn owner(&self, ip: Ipv4Addr) -> Result<Option<Owner>, IpamError> {
        self.read_owner(ip)
    }

    /// Every allocation (a consistent snapshot, taken under the lock).
    pub fn allocations(&self) -> Result<Vec<(Ipv4Addr, Owner)>, IpamError> {
        let _lock = self.lock()?;
        self.scan()
    }

    /// Verifies the state directory is usable (created, lockable, writable) and returns how many
    /// addresses are still free.
    pub fn status(&self) -> Result<u64, IpamError> {
        let _lock = self.lock()?;
        let probe = self.dir.join(".probe");
        fs::write(&probe, b"ok").map_err(io_error("write probe file", &probe))?;
        fs::remove_file(&probe).map_err(io_error("remove probe file", &probe))?;
        let used = self.scan()?.into_iter().filter(|(ip, _)| self.in_pod_range(*ip)).count() as u64;
        Ok(self.capacity().saturating_sub(used))
    }

    fn in_pod_range(&self, ip: Ipv4Addr) -> bool {
        let (first, last) = self.cidr.pod_range();
        (first..=last).contains(&ip)
    }

    fn read_owner(&self, ip: Ipv4Addr) -> Result<Option<Owner>, IpamError> {
        let path = self.address_path(ip);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(Owner::decode(&text))),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io_error("read allocation", &path)(error)),
        }
    }

    fn remove(&self, ip: Ipv4Addr) -> Result<(), IpamError> {
        let path = self.address_path(ip);
        match fs::remove_file(&path) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(io_error("remove allocation", &path)(error)),
            _ => Ok(()),
        }
    }

    /// All allocation files (names that parse as IPv4 addresses), in address order.
    fn scan(&self) -> Result<Vec<(Ipv4Addr, Owner)>, IpamError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(io_error("list", &self.dir)(error)),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error("list", &self.dir))?;
            let Some(ip) = entry.file_name().to_str().and_then(|name| name.parse::<Ipv4Addr>().ok()) else {
                continue;
            };
            if let Some(owner) = self.read_owner(ip)? {
                found.push((ip, owner));
            }
        }
        found.sort_by_key(|(ip, _)| *ip);
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(id: &str) -> Owner {
        Owner { container_id: id.into(), ifname: "eth0".into() }
    }

    fn pool(dir: &Path, cidr: &str) -> Pool {
        Pool::new(dir.join("net"), cidr.parse().expect("valid cidr"))
    }

    #[test]
    fn allocates_from_the_third_address_and_never_network_gateway_or_broadcast() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let pool = pool(tmp.path(), "10.244.9.0/29");
        let ips: Vec<Ipv4Addr> =
            (0..5).map(|n| pool.allocate(&owner(&format!("c{n}"))).expect("free address")).collect();
        let expected: Vec<Ipv4Addr> = (2..=6).map(|n| Ipv4Addr::new(10, 244, 9, n)).collect();
        assert_eq!(ips, expected);
        let error = pool.allocate(&owner("c5")).expect_err("a /29 has five pod addresses");
        assert!(matches!(error, IpamError::Exhausted { count: 5, .. }), "{error}");
        assert_eq!(pool.status().expect("status"), 0);
    }

    #[test]
    fn release_frees_and_allocation_goes_round_robin() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let pool = pool(tmp.path(), "10.244.9.0/28");
        let a = pool.allocate(&owner("a")).expect("first");
        let b = pool.allocate(&owner("b")).expect("second");
        assert_eq!(pool.release(&owner("a"), None).expect("release by scan"), vec![a]);
        assert_eq!(pool.release(&owner("a"), Some(a)).expect("second release is a no-op"), Vec::<Ipv4Addr>::new());
        let c = pool.allocate(&owner("c")).expect("third");
        assert!(c != a && c != b, "the just-released address is not reused at once");
        assert_eq!(pool.release(&owner("b"), Some(b)).expect("release by hint"), vec![b]);
        assert_eq!(pool.allocations().expect("list"), vec![(c, owner("c"))]);
    }

    #[test]
    fn release_ignores_a_hint_owned_by_someone_else() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let pool = pool(tmp.path(), "10.244.9.0/28");
        let a = pool.allocate(&owner("a")).expect("first");
        let b = pool.allocate(&owner("b")).expect("second");
        assert_eq!(pool.release(&owner("b"), Some(a)).expect("release"), vec![b]);
        assert_eq!(pool.owner(a).expect("read"), Some(owner("a")));
    }

    #[test]
    fn retain_releases_everything_not_kept() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let pool = pool(tmp.path(), "10.244.9.0/28");
        for id in ["a", "b", "c"] {
            pool.allocate(&owner(id)).expect("free address");
        }
        let keep: HashSet<Owner> = [owner("b")].into_iter().collect();
        let released = pool.retain(&keep).expect("gc");
        assert_eq!(released.iter().map(|(_, o)| o.container_id.as_str()).collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(pool.allocations().expect("list").len(), 1);
    }

    #[test]
    fn concurrent_allocations_are_unique() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let pool = pool(tmp.path(), "10.244.9.0/24");
        let ips: Vec<Ipv4Addr> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..16)
                .map(|t| {
                    let pool = pool.clone();
                    scope.spawn(move || {
                        (0..10).map(|n| pool.allocate(&owner(&format!("t{t}-{n}"))).expect("free")).collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().expect("thread")).collect()
        });
        let unique: HashSet<Ipv4Addr> = ips.iter().copied().collect();
        assert_eq!(unique.len(), 160);
    }
}
