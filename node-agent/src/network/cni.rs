//! The node's CNI configuration and plugin binary: writes `10-keelson.conflist` for the node's
//! podCIDR into the runtime's CNI configuration directory and installs the `keelson` plugin into
//! the CNI binary directory. Both writes are atomic (temporary file in the same directory, then
//! rename) and skipped when the content is already there, so the runtime never reads a half
//! written file and a restart rewrites nothing. Only [`super::Network`] calls this.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::json;

/// File name of the network configuration list; `10-` sorts it before most others.
pub const CONFLIST_NAME: &str = "10-keelson.conflist";
/// Name of the plugin binary in the CNI binary directory.
pub const PLUGIN_NAME: &str = "keelson";
/// CNI spec version the configuration declares.
pub const CNI_VERSION: &str = "1.0.0";

/// Errors writing the CNI configuration or installing the plugin.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("create directory {}", path.display())]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("read {}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("write {}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("rename {} to {}", from.display(), to.display())]
    Rename { from: PathBuf, to: PathBuf, source: std::io::Error },
}

/// The configuration list text for a node's podCIDR (pretty JSON, trailing newline).
pub fn conflist(pod_cidr: &str, mtu: Option<u32>) -> String {
    let mut plugin = json!({"type": PLUGIN_NAME, "podCIDR": pod_cidr});
    if let Some(mtu) = mtu {
        plugin["mtu"] = json!(mtu);
    }
    let list = json!({"cniVersion": CNI_VERSION, "name": "keelson", "plugins": [plugin]});
    let mut text = serde_json::to_string_pretty(&list).expect("a JSON value always serializes");
    text.push('\n');
    text
}

/// Writes the configuration list into `conf_dir` (created if missing). Returns whether the
/// file changed.
pub fn write_conflist(conf_dir: &Path, pod_cidr: &str, mtu: Option<u32>) -> Result<bool, CniError> {
    write_if_changed(conf_dir, CONFLIST_NAME, conflist(pod_cidr, mtu).as_bytes(), 0o644)
}

/// Copies the plugin binary at `plugin` to `bin_dir/keelson` (mode 0755). Returns whether the
/// installed file changed.
pub fn install_plugin(plugin: &Path, bin_dir: &Path) -> Result<bool, CniError> {
    let bytes = fs::read(plugin).map_err(|source| CniError::Read { path: plugin.to_owned(), source })?;
    write_if_changed(bin_dir, PLUGIN_NAME, &bytes, 0o755)
}

/// Atomically replaces `dir/name` with `content` unless it already holds exactly that.
fn write_if_changed(dir: &Path, name: &str, content: &[u8], mode: u32) -> Result<bool, CniError> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};

    fs::create_dir_all(dir).map_err(|source| CniError::CreateDir { path: dir.to_owned(), source })?;
    let target = dir.join(name);
    match fs::read(&target) {
        Ok(existing) if existing == content => {
            let perm = fs::metadata(&target).map(|m| m.permissions().mode() & 0o777).ok();
            if perm == Some(mode) {
                return Ok(false);
            }
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(CniError::Read { path: target, source }),
    }
    // A dot-file next to the target: same file system, so the rename is atomic, and the runtime
    // ignores names that do not end in .conf/.conflist/.json.
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| {
        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        f.write_all(content)?;
        // The mode given to open() is masked by the umask; set it exactly.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()
    })();
    if let Err(source) = written {
        let _ = fs::remove_file(&tmp);
        return Err(CniError::Write { path: tmp, source });
    }
    if let Err(source) = fs::rename(&tmp, &target) {
        let _ = fs::remove_file(&tmp);
        return Err(CniError::Rename { from: tmp, to: target, source });
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn conflist_has_one_keelson_plugin() {
        let v: serde_json::Value = serde_json::from_str(&conflist("10.244.1.0/24", Some(1400))).expect("valid JSON");
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["name"], "keelson");
        let plugins = v["plugins"].as_array().expect("plugins array");
        assert_eq!(plugins.len(), 1);
        assert_eq!(plugins[0]["type"], "keelson");
        assert_eq!(plugins[0]["podCIDR"], "10.244.1.0/24");
        assert_eq!(plugins[0]["mtu"], 1400);
        let v: serde_json::Value = serde_json::from_str(&conflist("10.244.1.0/24", None)).expect("valid JSON");
        assert!(v["plugins"][0].get("mtu").is_none());
    }

    #[test]
    fn conflist_is_written_once_and_rewritten_on_change() {
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("net.d");
        assert!(write_conflist(&conf, "10.244.1.0/24", None).expect("first write"));
        assert!(!write_conflist(&conf, "10.244.1.0/24", None).expect("same content"));
        assert!(write_conflist(&conf, "10.244.2.0/24", None).expect("new CIDR"));
        let text = fs::read_to_string(conf.join(CONFLIST_NAME)).expect("read back");
        assert!(text.contains("10.244.2.0/24"));
        let names: Vec<_> = fs::read_dir(&conf).expect("list").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(CONFLIST_NAME)], "no temporary file left behind");
    }

    #[test]
    fn plugin_is_installed_executable_and_skipped_when_identical() {
        let dir = tempfile::tempdir().expect("temp dir");
        let src = dir.path().join("keelson-build");
        fs::write(&src, b"#!/bin/sh\necho v1\n").expect("write source");
        let bin = dir.path().join("bin");
        assert!(install_plugin(&src, &bin).expect("install"));
        let installed = bin.join(PLUGIN_NAME);
        assert_eq!(fs::read(&installed).expect("read"), b"#!/bin/sh\necho v1\n");
        assert_eq!(fs::metadata(&installed).expect("stat").permissions().mode() & 0o777, 0o755);
        assert!(!install_plugin(&src, &bin).expect("identical"));
        fs::write(&src, b"#!/bin/sh\necho v2\n").expect("rewrite source");
        assert!(install_plugin(&src, &bin).expect("changed"));
        assert_eq!(fs::read(&installed).expect("read"), b"#!/bin/sh\necho v2\n");
    }

    #[test]
    fn missing_plugin_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = install_plugin(&dir.path().join("absent"), dir.path()).expect_err("no source");
        assert!(matches!(err, CniError::Read { .. }));
    }
}
