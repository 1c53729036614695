//! Keelson's CNI plugin (binary `keelson`, CNI `type: keelson`): routed veth pairs, addresses from the
//! node's podCIDR, no bridge and no IPAM plugin. Spec versions 0.3.0–1.1.0; commands ADD, DEL, CHECK,
//! STATUS, VERSION and GC.
//!
//! - [`env`]: the `CNI_*` variables; [`config`]: the configuration on stdin; [`result`]: the ADD result.
//! - [`plugin`]: the commands; [`error`]: CNI error codes and the error JSON.
//! - [`ipam`]: allocations in `dataDir` under a file lock; [`wiring`]: the veth pair, addresses, routes;
//!   [`netlink`]: a small synchronous rtnetlink client; [`netns`]: entering the pod's namespace.
//! - [`agent`]: the JSON-line protocol that tells the node-agent about endpoints (`agentSocket`).

pub mod agent;
pub mod config;
pub mod env;
pub mod error;
pub mod ipam;
pub mod netlink;
pub mod netns;
pub mod plugin;
pub mod result;
pub mod wiring;

pub use error::{CniError, ErrorCode};
pub use plugin::run;
