//! bpffs: where pinned maps live, so that they outlive the node agent process.

use std::fs;
use std::io;
use std::path::Path;

use aya::maps::MapInfo;
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

/// The shape of a map: what a program compiled against it assumes, and what the kernel checks
/// every access against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapShape {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

impl std::fmt::Display for MapShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "type {} key {} B value {} B max {} flags {:#x}",
            self.map_type, self.key_size, self.value_size, self.max_entries, self.flags
        )
    }
}

/// A pinned map that the object being loaded cannot use: pinned by a build whose map had another
/// shape.
#[derive(Debug, PartialEq, Eq)]
pub struct StalePin {
    pub map: &'static str,
    pub pinned: MapShape,
    pub wanted: MapShape,
}

/// Unpins every map in `dir` whose shape differs from its definition in `object`, so that loading
/// creates it afresh instead of handing this build's programs (and its own map reads and writes)
/// a map laid out for another build. A pinned map is otherwise reused as is: the loader does not
/// compare shapes, the kernel would then reject the programs' accesses past an old, shorter value,
/// and user space would read and write the wrong number of bytes.
///
/// What an unpinned map held is lost: the service maps are refilled by the next sync, the
/// conntrack and affinity entries of flows in flight are not (those flows start over), counters
/// restart from zero. A map still in use by a running older agent lives on until it lets go.
pub(crate) fn remove_stale_pins(dir: &Path, object: &[u8]) -> Result<Vec<StalePin>, super::Error> {
    let parsed = aya_obj::Object::parse(object).map_err(|error| super::Error::ParseObject(error.to_string()))?;
    let mut stale = Vec::new();
    for map in keelson_ebpf_common::MAPS {
        let pin = dir.join(map);
        if !pin.exists() {
            continue;
        }
        let Some(def) = parsed.maps.get(map) else { continue };
        let wanted = MapShape {
            map_type: def.map_type(),
            key_size: def.key_size(),
            value_size: def.value_size(),
            max_entries: def.max_entries(),
            flags: def.map_flags(),
        };
        let pinned = match MapInfo::from_pin(&pin) {
            Ok(info) => Some(MapShape {
                map_type: info.map_type().map_or(u32::MAX, |t| t as u32),
                key_size: info.key_size(),
                value_size: info.value_size(),
                max_entries: info.max_entries(),
                flags: info.map_flags(),
            }),
            // Not a map (or unreadable): it cannot be this build's map either.
            Err(_) => None,
        };
        if pinned == Some(wanted) {
            continue;
        }
        fs::remove_file(&pin).map_err(|source| super::Error::io("unpin", &pin, source))?;
        let pinned = pinned.unwrap_or(MapShape { map_type: 0, key_size: 0, value_size: 0, max_entries: 0, flags: 0 });
        tracing::warn!(map, %pinned, %wanted, "pinned map has another shape (an older build?); recreating it");
        stale.push(StalePin { map, pinned, wanted });
    }
    Ok(stale)
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
