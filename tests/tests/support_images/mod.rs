//! Locally built container images: a busybox-static rootfs packed as an OCI image layout tar, byte for byte
//! the same on every run (fixed mtimes, owners and entry order), ready for `ctr images import`.
//!
//! No registry is reachable from the test machines, so images are made here instead of pulled.

#![allow(dead_code, reason = "each test binary uses a different part of these helpers")]

use std::path::Path;

use serde_json::json;
use sha2::{Digest, Sha256};

/// The Debian `busybox-static` binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// One entry of a tar archive.
enum Entry<'a> {
    Dir(&'a str),
    File { name: &'a str, mode: u32, data: &'a [u8] },
}

/// A ustar archive of `entries`, in the given order, owned by 0:0 with mtime 0.
fn tar(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        let (name, mode, kind, data): (&str, u32, u8, &[u8]) = match entry {
            Entry::Dir(name) => (name, 0o755, b'5', &[]),
            Entry::File { name, mode, data } => (name, *mode, b'0', data),
        };
        assert!(name.len() < 100, "tar entry name {name} is too long for a plain ustar header");
        let mut header = [0u8; 512];
        header[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut header[100..108], u64::from(mode));
        octal(&mut header[108..116], 0);
        octal(&mut header[116..124], 0);
        octal(&mut header[124..136], data.len() as u64);
        octal(&mut header[136..148], 0);
        header[148..156].fill(b' ');
        header[156] = kind;
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        let checksum: u32 = header.iter().map(|byte| u32::from(*byte)).sum();
        let text = format!("{checksum:06o}\0 ");
        header[148..156].copy_from_slice(text.as_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// Writes `value` as zero-padded octal filling `field` but its last byte (NUL).
fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    assert_eq!(text.len(), width, "{value} does not fit a tar field of {width} digits");
    field[..width].copy_from_slice(text.as_bytes());
    field[width] = 0;
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The OCI name of this machine's architecture.
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// An OCI image layout tar holding one image, named `name` (`registry/repository:tag`), whose rootfs is
/// busybox-static at `/bin/busybox` and whose entrypoint is `entrypoint`.
pub fn busybox_image_tar(name: &str, entrypoint: &[&str]) -> Vec<u8> {
    let busybox = std::fs::read(BUSYBOX).unwrap_or_else(|error| {
        panic!("read {BUSYBOX} ({error}): install the Debian busybox-static package (cargo xtask setup)")
    });
    let layer = tar(&[
        Entry::Dir("bin/"),
        Entry::File { name: "bin/busybox", mode: 0o755, data: &busybox },
        Entry::Dir("dev/"),
        Entry::Dir("etc/"),
        Entry::Dir("proc/"),
        Entry::Dir("sys/"),
        Entry::Dir("tmp/"),
    ]);
    let layer_digest = format!("sha256:{}", sha256_hex(&layer));
    let config = serde_json::to_vec(&json!({
        "architecture": oci_arch(),
        "os": "linux",
        "config": { "Entrypoint": entrypoint, "Env": ["PATH=/bin"], "WorkingDir": "/" },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    }))
    .expect("image config JSON");
    let config_digest = format!("sha256:{}", sha256_hex(&config));
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    }))
    .expect("manifest JSON");
    let manifest_hex = sha256_hex(&manifest);
    let tag = name.rsplit_once(':').map(|(_, tag)| tag).unwrap_or("latest");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_hex}"),
            "size": manifest.len(),
            "platform": { "architecture": oci_arch(), "os": "linux" },
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    }))
    .expect("index JSON");

    let config_path = format!("blobs/sha256/{}", &config_digest["sha256:".len()..]);
    let layer_path = format!("blobs/sha256/{}", &layer_digest["sha256:".len()..]);
    let manifest_path = format!("blobs/sha256/{manifest_hex}");
    let mut blobs = [
        (config_path.as_str(), config.as_slice()),
        (layer_path.as_str(), layer.as_slice()),
        (manifest_path.as_str(), manifest.as_slice()),
    ];
    blobs.sort_by_key(|(path, _)| *path);
    let mut entries = vec![
        Entry::Dir("blobs/"),
        Entry::Dir("blobs/sha256/"),
        Entry::File { name: "index.json", mode: 0o644, data: &index },
        Entry::File { name: "oci-layout", mode: 0o644, data: br#"{"imageLayoutVersion":"1.0.0"}"# },
    ];
    entries.extend(blobs.iter().map(|(name, data)| Entry::File { name, mode: 0o644, data }));
    tar(&entries)
}

/// Imports the OCI layout tar at `archive` into containerd namespace `namespace` through `ctr`.
pub fn ctr_import(socket: &Path, namespace: &str, archive: &Path) {
    let output = std::process::Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["--namespace", namespace, "images", "import"])
        .arg(archive)
        .output()
        .expect("run ctr (install the Debian containerd package: cargo xtask setup)");
    assert!(
        output.status.success(),
        "ctr images import {}: {}{}",
        archive.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn image_tar_is_deterministic() {
    let first = busybox_image_tar("keelson.local/x:1", &["/bin/busybox", "true"]);
    let second = busybox_image_tar("keelson.local/x:1", &["/bin/busybox", "true"]);
    assert_eq!(sha256_hex(&first), sha256_hex(&second), "same inputs give the same bytes");
    assert_eq!(first.len() % 512, 0, "whole tar blocks");
}
