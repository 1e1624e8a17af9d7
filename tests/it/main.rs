//! Integration tests: one binary driving the real `cete-server` and `cete`
//! binaries (build them first with `cargo build --workspace --bins`).

mod backup;
mod bad_input;
mod cluster;
mod disk;
mod harness;
mod metrics;
mod single_node;
mod watch;
