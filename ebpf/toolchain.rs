//! The eBPF toolchain pins and the source hash of the committed object, shared by
//! `node-agent/build.rs` and `cargo xtask` (both include this file with `#[path]`; it uses `std`
//! and `sha2` only).
//!
//! `ebpf/prebuilt/keelson.bpf.o` is the built object, committed so that machines without the
//! pinned nightly and bpf-linker still build the node agent; `ebpf/prebuilt/SOURCE_HASH` is a hash
//! of the sources it was built from. The hash covers the sources rather than the object's bytes
//! because the object embeds build paths, so two clones never produce the same bytes.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest as _, Sha256};

/// The nightly the programs are built with (needs the `rust-src` component for `-Z build-std`).
pub const TOOLCHAIN: &str = "nightly-2026-05-20";
/// The bpf-linker release, built against LLVM 22 (at least the nightly's LLVM).
pub const BPF_LINKER_VERSION: &str = "0.13.0";
/// The target of the eBPF programs on little-endian hosts.
pub const TARGET: &str = "bpfel-unknown-none";
/// The programs' package and binary names.
pub const PACKAGE: &str = "keelson-ebpf";
pub const BINARY: &str = "keelson";
/// Under `ebpf/`: the committed object and the hash of its sources.
pub const PREBUILT_OBJECT: &str = "prebuilt/keelson.bpf.o";
pub const PREBUILT_SOURCE_HASH: &str = "prebuilt/SOURCE_HASH";
/// Under `ebpf/`: what the source hash covers, besides the pins above.
pub const SOURCE_DIRS: [&str; 2] = ["common", "programs"];
/// Set to `1` to build with the committed object even when the toolchain is present.
pub const FORCE_PREBUILT_ENV: &str = "KEELSON_EBPF_PREBUILT";

/// Hex sha256 over the toolchain pins and every file under [`SOURCE_DIRS`] (relative path and
/// contents, in path order), skipping hidden files, editor backups and `target` directories.
pub fn source_hash(ebpf_dir: &Path) -> io::Result<String> {
    let mut files = Vec::new();
    for dir in SOURCE_DIRS {
        collect_files(&ebpf_dir.join(dir), &mut files)?;
    }
    let mut relative: Vec<(String, PathBuf)> = files
        .into_iter()
        .map(|path| {
            let name = path.strip_prefix(ebpf_dir).unwrap_or(&path);
            let name = name.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            (name, path)
        })
        .collect();
    relative.sort();
    let mut hasher = Sha256::new();
    hasher.update(format!("toolchain {TOOLCHAIN}\nbpf-linker {BPF_LINKER_VERSION}\ntarget {TARGET}\n"));
    for (name, path) in relative {
        let contents = fs::read(&path)?;
        hasher.update(format!("{name}\0{}\0", contents.len()));
        hasher.update(&contents);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.ends_with('~') || name.ends_with(".swp") || name == "target" {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect_files(&entry.path(), files)?;
        } else if kind.is_file() {
            files.push(entry.path());
        }
    }
    Ok(())
}

/// Why the programs cannot be built on this machine, or `None` when the pinned nightly with
/// `rust-src` and the pinned bpf-linker are all present. Never installs anything.
pub fn missing_toolchain() -> Option<String> {
    // `rustup run` installs nothing without `--install`.
    let sysroot = match Command::new("rustup")
        .args(["run", TOOLCHAIN, "rustc", "--print", "sysroot"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    {
        Err(error) => return Some(format!("rustup is not available ({error})")),
        Ok(output) if !output.status.success() => return Some(format!("toolchain {TOOLCHAIN} is not installed")),
        Ok(output) => String::from_utf8_lossy(&output.stdout).trim().to_owned(),
    };
    let core = Path::new(&sysroot).join("lib/rustlib/src/rust/library/core/Cargo.toml");
    if !core.is_file() {
        return Some(format!("toolchain {TOOLCHAIN} lacks the rust-src component"));
    }
    match bpf_linker_version() {
        None => Some("bpf-linker is not installed".to_owned()),
        Some(version) if version != BPF_LINKER_VERSION => {
            Some(format!("bpf-linker is {version}, not {BPF_LINKER_VERSION}"))
        }
        Some(_) => None,
    }
}

/// The version `bpf-linker --version` reports (`bpf-linker 0.13.0`), if it runs.
pub fn bpf_linker_version() -> Option<String> {
    let output =
        Command::new("bpf-linker").arg("--version").stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace().nth(1).map(str::to_owned)
}
