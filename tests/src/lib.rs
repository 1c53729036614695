//! Integration tests live in `tests/tests/`; this crate has no library code.

pub mod bench;
pub mod bench_datapath;
pub mod bench_sched;
