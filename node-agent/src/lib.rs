//! Keelson node agent.
//!
//! - [`hollow`]: many simulated kubelets in one process that register Nodes, keep their Leases
//!   and report pods Running without running any container, for scale tests of the control plane
//!   (what kubemark does for Kubernetes);
//! - [`network`]: the pod network of a node (CNI configuration, the plugin binary, routes to the
//!   other nodes' pod CIDRs and `unreachable` routes for the cluster ranges);
//! - [`datapath`]: the eBPF Service load balancer that replaces kube-proxy (so far ClusterIP at the
//!   socket hooks);
//! - [`proxy`]: follows Services and EndpointSlices and hands the datapath the service table they
//!   describe (`node-agent proxy`), and shows what the pinned maps hold (`node-agent lb`).
//!
//! The real kubelet (CRI) comes later. The command line lives in [`cli`] so that `main.rs` stays
//! thin.

pub mod cli;
pub mod datapath;
pub mod hollow;
pub mod network;
pub mod proxy;
