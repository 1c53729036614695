//! Puts the eBPF object at `$OUT_DIR/keelson.bpf.o` for `datapath` to embed.
//!
//! With the pinned nightly (with `rust-src`) and bpf-linker installed (`cargo xtask setup`), the
//! programs in `ebpf/programs` are built with aya-build; otherwise, or with
//! `KEELSON_EBPF_PREBUILT=1`, the committed `ebpf/prebuilt/keelson.bpf.o` is used. Either way a
//! warning says so when `ebpf/prebuilt/SOURCE_HASH` no longer matches the sources (refresh it with
//! `cargo xtask ebpf`), and the datapath's unit tests fail on that mismatch.

#[path = "../ebpf/toolchain.rs"]
mod toolchain;

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};

/// The object's name in `OUT_DIR`, which `datapath` includes.
const OBJECT: &str = "keelson.bpf.o";

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?);
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let ebpf_dir = manifest_dir.parent().context("node-agent has a parent directory")?.join("ebpf");

    println!("cargo:rerun-if-env-changed={}", toolchain::FORCE_PREBUILT_ENV);
    println!("cargo:rerun-if-changed={}", ebpf_dir.join("toolchain.rs").display());
    println!("cargo:rerun-if-changed={}", ebpf_dir.join("prebuilt").display());
    for dir in toolchain::SOURCE_DIRS {
        println!("cargo:rerun-if-changed={}", ebpf_dir.join(dir).display());
    }

    let source_hash = toolchain::source_hash(&ebpf_dir).context("hash the eBPF sources")?;
    let committed_hash = fs::read_to_string(ebpf_dir.join(toolchain::PREBUILT_SOURCE_HASH))
        .context("read ebpf/prebuilt/SOURCE_HASH")?
        .trim()
        .to_owned();
    println!("cargo:rustc-env=KEELSON_EBPF_SOURCE_HASH={source_hash}");

    let forced = env::var_os(toolchain::FORCE_PREBUILT_ENV).is_some_and(|value| value == "1");
    let missing = if forced { None } else { toolchain::missing_toolchain() };
    let origin = match (forced, missing) {
        (false, None) => {
            build(&ebpf_dir, &out_dir)?;
            "built"
        }
        _ => {
            let prebuilt = ebpf_dir.join(toolchain::PREBUILT_OBJECT);
            fs::copy(&prebuilt, out_dir.join(OBJECT))
                .with_context(|| format!("copy {} to {}", prebuilt.display(), out_dir.display()))?;
            "prebuilt"
        }
    };
    if source_hash != committed_hash {
        println!(
            "cargo:warning=ebpf/prebuilt/SOURCE_HASH does not match the eBPF sources ({origin} object in use); \
             run `cargo xtask ebpf` and commit ebpf/prebuilt/"
        );
    }
    println!("cargo:rustc-env=KEELSON_EBPF_OBJECT_ORIGIN={origin}");
    Ok(())
}

/// Builds `ebpf/programs` with aya-build and the pinned nightly into `OUT_DIR`.
fn build(ebpf_dir: &Path, out_dir: &Path) -> anyhow::Result<()> {
    let root_dir = ebpf_dir.join("programs");
    let root_dir = root_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path {}", root_dir.display()))?;
    let package = aya_build::Package { name: toolchain::PACKAGE, root_dir, ..Default::default() };
    // aya-build builds in (and copies the binary to) `$OUT_DIR`, which differs between `cargo
    // clippy` and `cargo test` of the same profile; point it at one directory per profile,
    // `target/<profile>/keelson-ebpf`, so the programs and `core` are built once (~300 MB, ~1 min).
    let shared = out_dir
        .ancestors()
        .nth(3)
        .filter(|_| out_dir.ancestors().nth(2).and_then(Path::file_name).is_some_and(|name| name == "build"))
        .map_or_else(|| out_dir.to_owned(), |profile_dir| profile_dir.join("keelson-ebpf"));
    fs::create_dir_all(&shared).with_context(|| format!("create {}", shared.display()))?;
    // SAFETY: the build script has not started any thread yet (aya-build starts one later).
    unsafe {
        env::set_var("OUT_DIR", &shared);
        // aya-build turns every line the nested cargo prints into a cargo warning; without
        // progress lines only real diagnostics remain.
        env::set_var("CARGO_TERM_QUIET", "true");
    }
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(toolchain::TOOLCHAIN))
        .context("build the eBPF programs (set KEELSON_EBPF_PREBUILT=1 to use the committed object)")?;
    let built = shared.join(toolchain::BINARY);
    fs::copy(&built, out_dir.join(OBJECT)).with_context(|| format!("copy {}", built.display()))?;
    Ok(())
}
