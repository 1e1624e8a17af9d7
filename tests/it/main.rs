//! Integration tests: one binary driving the real `cete-server` and `cete`
//! binaries (build them first with `cargo build --workspace --bins`).

mod backup;
mod bad_input;
mod batching;
mod cluster;
mod disk;
mod faultproxy;
mod harness;
mod linearizability;
mod metrics;
mod robustness;
mod single_node;
mod tls;
mod watch;
