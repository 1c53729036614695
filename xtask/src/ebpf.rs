//! `cargo xtask ebpf`: rebuilds the eBPF programs with the pinned toolchain and refreshes the
//! committed object `ebpf/prebuilt/keelson.bpf.o` and its `SOURCE_HASH`.
//!
//! The build mirrors what `node-agent/build.rs` does through aya-build 0.2.0 (same target, flags
//! and `-Z build-std=core`), in `target/ebpf`, and also remaps the workspace, cargo and rustup home paths
//! so that the committed object does not carry this machine's directories.

#[path = "../../ebpf/toolchain.rs"]
pub mod toolchain;

use std::ffi::OsString;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};

use crate::cmd;

pub fn run(root: &Path) -> anyhow::Result<()> {
    if let Some(missing) = toolchain::missing_toolchain() {
        bail!(
            "{missing}: run `cargo xtask setup` (the build falls back to the committed object, \
             as with {}=1)",
            toolchain::FORCE_PREBUILT_ENV
        );
    }
    let ebpf_dir = root.join("ebpf");
    let target_dir = root.join("target").join("ebpf");
    let started = Instant::now();
    let mut command = Command::new("rustup");
    command
        .args(["run", toolchain::TOOLCHAIN, "cargo", "build", "--package", toolchain::PACKAGE, "--bins", "--release"])
        .args(["--target", toolchain::TARGET, "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags(root))
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .current_dir(root);
    cmd::run(&mut command)?;
    let built = target_dir.join(toolchain::TARGET).join("release").join(toolchain::BINARY);
    let object = ebpf_dir.join(toolchain::PREBUILT_OBJECT);
    fs::copy(&built, &object).with_context(|| format!("copy {} to {}", built.display(), object.display()))?;
    let hash = toolchain::source_hash(&ebpf_dir).context("hash the eBPF sources")?;
    let hash_file = ebpf_dir.join(toolchain::PREBUILT_SOURCE_HASH);
    fs::write(&hash_file, format!("{hash}\n")).with_context(|| format!("write {}", hash_file.display()))?;
    let size = fs::metadata(&object).with_context(|| format!("stat {}", object.display()))?.len();
    println!(
        "ebpf: built in {:.1}s; {} ({size} bytes) and {} ({hash}) refreshed; commit ebpf/prebuilt/",
        started.elapsed().as_secs_f64(),
        toolchain::PREBUILT_OBJECT,
        toolchain::PREBUILT_SOURCE_HASH,
    );
    Ok(())
}

/// aya-build's flags (`bpf_target_arch`, full debug info for BTF, `--btf` for bpf-linker) plus
/// path remapping; `\x1f`-separated as `CARGO_ENCODED_RUSTFLAGS` wants.
fn rustflags(root: &Path) -> OsString {
    let mut flags = vec![
        format!("--cfg=bpf_target_arch=\"{}\"", std::env::consts::ARCH),
        "-Cdebuginfo=2".to_owned(),
        "-Clink-arg=--btf".to_owned(),
        format!("--remap-path-prefix={}=/keelson", root.display()),
    ];
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let cargo_home = std::env::var_os("CARGO_HOME").map(Into::into).or_else(|| home.as_ref().map(|h| h.join(".cargo")));
    let rustup_home =
        std::env::var_os("RUSTUP_HOME").map(Into::into).or_else(|| home.as_ref().map(|h| h.join(".rustup")));
    for (dir, to) in [(cargo_home, "/cargo"), (rustup_home, "/rustup")] {
        if let Some(dir) = dir {
            flags.push(format!("--remap-path-prefix={}={to}", dir.display()));
        }
    }
    OsString::from(flags.join("\x1f"))
}

#[cfg(test)]
mod tests {
    use super::toolchain::source_hash;
    use std::fs;

    #[test]
    fn source_hash_follows_sources_only() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let root = dir.path();
        for (path, contents) in
            [("common/src/lib.rs", "a"), ("programs/src/main.rs", "b"), ("programs/Cargo.toml", "c")]
        {
            fs::create_dir_all(root.join(path).parent().expect("parent")).expect("mkdir");
            fs::write(root.join(path), contents).expect("write");
        }
        let original = source_hash(root).expect("hash");
        assert_eq!(original.len(), 64);

        // Build output, editor files and the prebuilt object do not count.
        fs::create_dir_all(root.join("programs/target")).expect("mkdir");
        fs::write(root.join("programs/target/x"), "junk").expect("write");
        fs::write(root.join("programs/src/.main.rs.swp"), "junk").expect("write");
        fs::create_dir_all(root.join("prebuilt")).expect("mkdir");
        fs::write(root.join("prebuilt/keelson.bpf.o"), "object").expect("write");
        assert_eq!(source_hash(root).expect("hash"), original);

        // A source edit, or the same bytes under another name, does.
        fs::write(root.join("programs/src/main.rs"), "b2").expect("write");
        let edited = source_hash(root).expect("hash");
        assert_ne!(edited, original);
        fs::write(root.join("programs/src/main.rs"), "b").expect("write");
        fs::rename(root.join("common/src/lib.rs"), root.join("common/src/mod.rs")).expect("rename");
        assert_ne!(source_hash(root).expect("hash"), original);
    }
}
