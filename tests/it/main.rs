//! Integration tests: one binary driving the real `cete-server` and `cete`
//! binaries (build them first with `cargo build --workspace --bins`).

mod cluster;
mod harness;
mod single_node;
mod tls;
