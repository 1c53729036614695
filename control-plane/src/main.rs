//! `control-plane`: the Keelson API server on its embedded store.

fn main() -> std::process::ExitCode {
    control_plane::cli::main()
}
