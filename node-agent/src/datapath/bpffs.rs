//! bpffs: where pinned maps live, so that they outlive the node agent process.

use std::fs;
use std::io;
use std::path::Path;

use nix::mount::{MsFlags, mount};
use nix::sys::statfs::{BPF_FS_MAGIC, statfs};

use super::Error;

/// The usual bpffs mount point.
pub const DEFAULT_MOUNT: &str = "/sys/fs/bpf";
/// The node agent's pin directory on it.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/keelson";

/// Whether `path` is on a bpffs mount.
pub fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|stat| stat.filesystem_type() == BPF_FS_MAGIC)
}

/// Mounts a bpffs at `mount_point` (created if missing) unless one is there already; says
/// whether this call mounted it.
pub fn ensure_mounted(mount_point: &Path) -> Result<bool, Error> {
    if is_bpffs(mount_point) {
        return Ok(false);
    }
    fs::create_dir_all(mount_point).map_err(|source| Error::io("create", mount_point, source))?;
    mount(
        Some("bpf"),
        mount_point,
        Some("bpf"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|errno| Error::io("mount bpffs at", mount_point, errno.into()))?;
    Ok(true)
}

/// Creates the pin directory, which must be on bpffs.
pub(crate) fn prepare_pin_dir(dir: &Path) -> Result<(), Error> {
    fs::create_dir_all(dir).map_err(|source| Error::io("create", dir, source))?;
    if !is_bpffs(dir) {
        return Err(Error::NotBpffs { path: dir.to_owned() });
    }
    Ok(())
}

/// Removes the maps pinned in `dir` by [`super::Datapath`] and then `dir` if it is empty. Maps
/// still open elsewhere live on until closed; missing pins are not an error.
pub fn remove_pins(dir: &Path) -> Result<(), Error> {
    for name in keelson_ebpf_common::MAPS {
        let pin = dir.join(name);
        match fs::remove_file(&pin) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::io("unpin", &pin, source)),
        }
    }
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        // Something else is pinned there too; leave it.
        Err(error) if error.raw_os_error() == Some(nix::errno::Errno::ENOTEMPTY as i32) => Ok(()),
        Err(source) => Err(Error::io("remove", dir, source)),
    }
}
