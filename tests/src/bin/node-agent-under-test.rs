//! The `node-agent` binary, built inside this package so that integration tests can run it
//! (`CARGO_BIN_EXE_node-agent-under-test`), e.g. `node-agent lb list` against pinned maps.

fn main() -> std::process::ExitCode {
    node_agent::cli::main()
}
