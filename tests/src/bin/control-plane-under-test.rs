//! The `control-plane` binary, built inside this package so that integration tests can start it
//! as a separate process (`CARGO_BIN_EXE_control-plane`) and kill it.

fn main() -> std::process::ExitCode {
    control_plane::cli::main()
}
