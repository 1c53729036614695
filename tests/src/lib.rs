//! Integration tests live in `tests/tests/`; this library holds the benchmarks behind
//! `cargo xtask bench …` and what their binaries share.

pub mod bench;
pub mod bench_datapath;
pub mod bench_sched;

/// Parses a benchmark's command line. On a usage error (or `--help`) it prints clap's message and
/// returns the exit code: 64 for a usage error, as every Keelson program, 0 for help.
pub fn parse_args<A: clap::Parser>() -> Result<A, std::process::ExitCode> {
    A::try_parse().map_err(|error| {
        let _ = error.print();
        if error.use_stderr() { std::process::ExitCode::from(64) } else { std::process::ExitCode::SUCCESS }
    })
}
