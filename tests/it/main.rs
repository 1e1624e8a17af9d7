//! Integration tests: one binary driving the real `cete-server` and `cete`
//! binaries (build them first with `cargo build --workspace --bins`).

mod cluster;
mod faultproxy;
mod harness;
mod linearizability;
mod robustness;
mod single_node;
