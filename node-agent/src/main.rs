//! `node-agent`: the Keelson node agent (see the library for what each mode does).

fn main() -> std::process::ExitCode {
    node_agent::cli::main()
}
