//! Keelson node agent (kubelet, pod network, eBPF datapath). Not built yet: see issues 3-5.

fn main() {
    eprintln!("node-agent: not implemented yet");
    std::process::exit(64);
}
