//! `cargo xtask test`: what CI runs. Set-up, then formatting, lints and the whole test suite,
//! stopping at the first failure.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::{cmd, setup};

/// One step of the suite.
struct Step {
    title: &'static str,
    args: Vec<String>,
    /// What to tell the developer when the step fails.
    hint: &'static str,
}

/// Runs setup, then `cargo fmt --check`, `cargo clippy` and `cargo test --workspace [extra args]`.
pub fn run(root: &Path, cargo_test_args: &[String]) -> anyhow::Result<()> {
    let ci = std::env::var("CI").is_ok_and(|value| value == "true");
    header(ci, "setup");
    println!("{}", setup::run().context("setup failed")?);

    let strings = |args: &[&str]| args.iter().map(|arg| (*arg).to_owned()).collect::<Vec<_>>();
    let steps = [
        Step {
            title: "cargo fmt --check",
            args: strings(&["fmt", "--all", "--", "--check"]),
            hint: "run `cargo fmt --all` to fix formatting",
        },
        Step {
            title: "cargo clippy",
            args: strings(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]),
            hint: "fix the clippy warnings above",
        },
        Step {
            title: "cargo test",
            args: strings(&["test", "--workspace"]).into_iter().chain(cargo_test_args.iter().cloned()).collect(),
            hint: "see the failing tests above",
        },
    ];
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    for step in &steps {
        header(ci, step.title);
        let mut command = Command::new(&cargo);
        command
            .args(&step.args)
            .current_dir(root)
            .env("KEELSON_KUBECTL", setup::KUBECTL_PATH)
            .env("KEELSON_HELM", setup::HELM_PATH);
        cmd::run(&mut command).with_context(|| format!("step `{}` failed: {}", step.title, step.hint))?;
    }
    if ci {
        println!("==> all steps passed");
    }
    Ok(())
}

/// A header line that makes the CI log easy to scan; silent outside CI.
fn header(ci: bool, title: &str) {
    if ci {
        println!("\n==> {title}");
    }
}
