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
        let result = if step.title == "cargo test" { run_counting(&mut command) } else { cmd::run(&mut command) };
        result.with_context(|| format!("step `{}` failed: {}", step.title, step.hint))?;
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

/// Runs `cargo test`, passing its output through, and ends with one line that totals every
/// test binary's `test result:` line (`tests: N passed, M failed`), so the log's last line
/// speaks for the whole suite rather than for the last binary (often doc tests with none).
fn run_counting(command: &mut Command) -> anyhow::Result<()> {
    use std::io::{BufRead as _, BufReader};
    let mut child = command.stdout(std::process::Stdio::piped()).spawn().context("start cargo test")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().context("cargo test stdout")?).lines() {
        let line = line.context("read cargo test output")?;
        println!("{line}");
        let (p, f) = counts(&line);
        passed += p;
        failed += f;
    }
    let status = child.wait().context("wait for cargo test")?;
    println!("tests: {passed} passed, {failed} failed");
    if !status.success() {
        anyhow::bail!("`cargo test` failed ({status})");
    }
    Ok(())
}

/// Passed and failed counts of one `test result:` line of cargo test; (0, 0) for other lines.
fn counts(line: &str) -> (u64, u64) {
    let (mut passed, mut failed) = (0, 0);
    if let Some(rest) = line.strip_prefix("test result: ") {
        for part in rest.split([';', '.']).map(str::trim) {
            let mut words = part.split_whitespace();
            if let (Some(n), Some(kind)) = (words.next(), words.next())
                && let Ok(n) = n.parse::<u64>()
            {
                match kind {
                    "passed" => passed += n,
                    "failed" => failed += n,
                    _ => {}
                }
            }
        }
    }
    (passed, failed)
}

#[cfg(test)]
mod tests {
    use super::counts;

    #[test]
    fn counts_cargo_test_result_lines() {
        assert_eq!(
            counts("test result: ok. 325 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 6.01s"),
            (325, 0)
        );
        assert_eq!(counts("test result: FAILED. 1 passed; 6 failed; 0 ignored; 0 measured; 0 filtered out"), (1, 6));
        assert_eq!(counts("running 3 tests"), (0, 0));
    }
}
