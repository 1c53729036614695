//! Keelson control plane: a kube-apiserver-compatible API on a durable store.
//!
//! `storage` owns persistence, `registry` the per-resource rules, `server` the HTTP(S) API,
//! `patch` and `protobuf` the wire-level transformations.

pub mod app;
pub mod cli;
pub mod controllers;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod registry;
pub mod scheduler;
pub mod scheduling;
pub mod selectors;
pub mod server;
pub mod storage;
pub mod typeinfo;
pub mod validation;

/// mimalloc instead of glibc's malloc: the API server's work is mostly building and dropping
/// JSON trees, where glibc spent a third of the CPU in its free lists (bench api profile).
/// `no_thp`: mimalloc would otherwise ask for transparent huge pages for its arenas, which made
/// the idle server 20 MB larger.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
