//! `cargo xtask`: set-up, cluster up/down, tests, benchmarks.

mod protogen;

fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf();
    match std::env::args().nth(1).as_deref() {
        Some("gen-proto") => protogen::run(&root),
        _ => anyhow::bail!("usage: cargo xtask <setup|test|up|down|gen-proto>"),
    }
}
