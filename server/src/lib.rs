//! Cete server: a key-value store on RocksDB, kept consistent by Raft
//! (openraft), served over an HTTP/JSON API (warp), with Raft and peer
//! control traffic over gRPC (tonic).
//!
//! [`start_node`] starts everything; the binary and the tests both call it.
//! docs/architecture.md describes the modules and the one way imports point.

// openraft's storage traits return its StorageError by value; it is large by design.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod config;
pub mod errors;
pub mod expiry;
pub mod faults;
pub mod http_server;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod node;
pub mod peer;
pub mod proto;
pub mod raft;
pub mod startup;
pub mod tls;

pub use config::Config;
pub use startup::{run, start_node, NodeHandle};
