//! What every member knows about every other member.

use std::fmt;

use serde::{Deserialize, Serialize};

/// openraft wants numeric ids; Cete's ids are the names users give (`node1`).
/// The numeric id is a stable hash of the name (see [`node_id_of`]).
pub type NodeId = u64;

/// A member's name and addresses. It lives in the Raft membership, so it is
/// replicated through the log and kept in snapshots.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct NodeInfo {
    pub name: String,
    pub raft_address: String,
    pub grpc_address: String,
    pub http_address: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (raft {}, grpc {}, http {})",
            self.name, self.raft_address, self.grpc_address, self.http_address
        )
    }
}

/// FNV-1a: stable across versions and platforms, unlike std's hasher.
pub fn node_id_of(name: &str) -> NodeId {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_stable_and_distinct() {
        assert_eq!(node_id_of("node1"), node_id_of("node1"));
        assert_ne!(node_id_of("node1"), node_id_of("node2"));
        // Pinned: ids are stored on disk, so the hash must never change.
        assert_eq!(node_id_of(""), 0xcbf2_9ce4_8422_2325);
    }
}
