//! Keelson node agent.
//!
//! Today this crate holds the hollow-node mode ([`hollow`]): many simulated kubelets in one
//! process that register Nodes, keep their Leases and report pods Running without running any
//! container, for scale tests of the control plane (what kubemark does for Kubernetes). The
//! real kubelet (CRI), the pod network and the eBPF datapath come later. The command line lives
//! in [`cli`] so that `main.rs` stays thin.

pub mod cli;
pub mod datapath;
pub mod hollow;
pub mod network;
