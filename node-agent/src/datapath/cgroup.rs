//! cgroup v2 directories for the socket programs: finding (or mounting) the unified hierarchy,
//! creating the project's own child cgroups, and refusing any root cgroup.
//!
//! The socket programs act on every socket created by a process in the cgroup they are attached
//! to (and its descendants), so they go only on a subtree the project created.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};
use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, statfs};

use super::Error;

/// Where [`ensure_hierarchy`] mounts cgroup2 when the machine has no cgroup2 mount (hybrid
/// set-ups mount only v1 hierarchies under `/sys/fs/cgroup`).
pub const PRIVATE_MOUNT: &str = "/run/keelson/cgroup2";

/// The first cgroup2 mount point in `/proc/self/mountinfo`.
pub fn find_hierarchy() -> io::Result<Option<PathBuf>> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    Ok(mountinfo.lines().find_map(|line| {
        // "<id> <parent> <maj:min> <root> <mount point> <options> [optional…] - <fstype> <source> <super options>"
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mut fields = left.split_whitespace();
        let (root, mount_point) = (fields.nth(3)?, fields.next()?);
        (fstype == "cgroup2" && root == "/").then(|| PathBuf::from(unescape(mount_point)))
    }))
}

/// A cgroup2 mount point: an existing one, else cgroup2 mounted at `private` (the same single
/// hierarchy, so nothing changes for anyone else). The second value says whether this call
/// mounted it.
pub fn ensure_hierarchy(private: &Path) -> Result<(PathBuf, bool), Error> {
    if let Some(existing) = find_hierarchy().map_err(|source| Error::io("read", "/proc/self/mountinfo", source))? {
        return Ok((existing, false));
    }
    mount_hierarchy(private)?;
    Ok((private.to_owned(), true))
}

/// Mounts the cgroup2 hierarchy at `mount_point` (created if missing); the caller unmounts it.
pub fn mount_hierarchy(mount_point: &Path) -> Result<(), Error> {
    fs::create_dir_all(mount_point).map_err(|source| Error::io("create", mount_point, source))?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("cgroup2"), mount_point, Some("cgroup2"), flags, None::<&str>)
        .map_err(|errno| Error::io("mount cgroup2 at", mount_point, errno.into()))
}

/// Accepts `dir` only if it is a cgroup v2 directory below the root of its hierarchy.
pub fn check_attachable(dir: &Path) -> Result<(), Error> {
    let stat = statfs(dir).map_err(|errno| Error::io("statfs", dir, errno.into()))?;
    if stat.filesystem_type() != CGROUP2_SUPER_MAGIC {
        return Err(Error::NotCgroup2 { path: dir.to_owned() });
    }
    // The root cgroup has no `cgroup.type`; a mount's root directory sits on another device
    // than its parent (or is `/`).
    let is_mount_root = match dir.canonicalize().map_err(|source| Error::io("resolve", dir, source))?.parent() {
        None => true,
        Some(parent) => {
            let dev =
                |path: &Path| fs::metadata(path).map(|m| m.dev()).map_err(|source| Error::io("stat", path, source));
            dev(parent)? != dev(dir)?
        }
    };
    if is_mount_root || !dir.join("cgroup.type").exists() {
        return Err(Error::RootCgroup { path: dir.to_owned() });
    }
    Ok(())
}

/// A child cgroup this process created; removed on drop. Processes still in it are moved to the
/// parent first (drop cannot wait for them to exit).
#[derive(Debug)]
pub struct OwnedCgroup {
    path: PathBuf,
}

impl OwnedCgroup {
    /// Creates `parent/name`, which must not exist yet.
    pub fn create(parent: &Path, name: &str) -> Result<Self, Error> {
        let stat = statfs(parent).map_err(|errno| Error::io("statfs", parent, errno.into()))?;
        if stat.filesystem_type() != CGROUP2_SUPER_MAGIC {
            return Err(Error::NotCgroup2 { path: parent.to_owned() });
        }
        let path = parent.join(name);
        fs::create_dir(&path).map_err(|source| Error::io("create cgroup", &path, source))?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves process `pid` (all its threads) into this cgroup.
    pub fn add_process(&self, pid: u32) -> Result<(), Error> {
        let procs = self.path.join("cgroup.procs");
        fs::write(&procs, pid.to_string()).map_err(|source| Error::io("write", &procs, source))
    }

    /// The processes in this cgroup.
    pub fn processes(&self) -> Result<Vec<u32>, Error> {
        let procs = self.path.join("cgroup.procs");
        let text = fs::read_to_string(&procs).map_err(|source| Error::io("read", &procs, source))?;
        Ok(text.lines().filter_map(|line| line.trim().parse().ok()).collect())
    }
}

impl Drop for OwnedCgroup {
    fn drop(&mut self) {
        if let (Ok(pids), Some(parent)) = (self.processes(), self.path.parent()) {
            for pid in pids {
                // Best effort: the process may have exited meanwhile.
                let _ = fs::write(parent.join("cgroup.procs"), pid.to_string());
            }
        }
        if let Err(error) = fs::remove_dir(&self.path) {
            tracing::warn!(%error, cgroup = %self.path.display(), "remove cgroup");
        }
    }
}

/// Undoes the octal escapes of `/proc/self/mountinfo` (`\040` for a space, …).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| digits.iter().all(|d| (b'0'..=b'3').contains(&digits[0]) && (b'0'..=b'7').contains(d)));
        match (bytes[i], octal) {
            (b'\\', Some(digits)) => {
                out.push(digits.iter().fold(0u8, |value, digit| value * 8 + (digit - b'0')));
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(r"/run/a\040b"), "/run/a b");
        assert_eq!(unescape("/sys/fs/cgroup/unified"), "/sys/fs/cgroup/unified");
        assert_eq!(unescape(r"/x\"), r"/x\");
    }
}
