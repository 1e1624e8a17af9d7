//! openraft type configuration and the commands that travel through the log.

pub mod network;
pub mod peer;
pub mod proposer;
pub mod read_batch;
pub mod service;

use std::fmt;

use serde::{Deserialize, Serialize};

/// openraft wants numeric ids; Cete's ids are the names users give (`node1`).
/// The numeric id is a stable hash of the name (see [`node_id_of`]).
pub type NodeId = u64;

/// What every member knows about every other member. It lives in the Raft
/// membership, so it is replicated through the log and kept in snapshots.
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

/// A condition checked by the state machine at apply time, so it holds
/// whichever node was leader when the write was proposed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Precondition {
    /// `If-Match`: the key exists and its modify revision is this one.
    RevisionIs(u64),
    /// `If-None-Match: *`: the key does not exist.
    Absent,
}

/// One client write. Commands travel in [`Proposal`]s, many to a log entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Command {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        content_type: String,
        precondition: Option<Precondition>,
    },
    Delete {
        key: Vec<u8>,
        precondition: Option<Precondition>,
    },
}

impl Command {
    /// Bytes this command adds to a log entry, roughly: for batch size caps.
    pub fn size(&self) -> usize {
        match self {
            Command::Put {
                key,
                value,
                content_type,
                ..
            } => key.len() + value.len() + content_type.len() + 32,
            Command::Delete { key, .. } => key.len() + 16,
        }
    }
}

/// The payload of one Raft log entry: the writes the proposer packed into
/// it, applied in order, each seeing the ones before it (see `proposer`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Proposal {
    pub commands: Vec<Command>,
}

/// The outcome of applying a [`Command`]; errors here are definite.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum CommandResult {
    /// Written at `revision`; `created` is true when the key did not exist.
    Written {
        revision: u64,
        created: bool,
    },
    /// Deleted at `revision`.
    Deleted {
        revision: u64,
    },
    NotFound,
    /// The precondition failed; `current` is the key's modify revision, if any.
    PreconditionFailed {
        current: Option<u64>,
    },
}

/// The results of one [`Proposal`], in the order of its commands (empty for
/// entries that carry none: blank and membership entries).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ProposalResult {
    pub results: Vec<CommandResult>,
}

/// Snapshot bytes live in a file on disk, never whole in memory.
pub type SnapshotData = tokio::fs::File;

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Proposal,
        R = ProposalResult,
        NodeId = NodeId,
        Node = NodeInfo,
        SnapshotData = SnapshotData,
);

/// openraft aliases bound to our type config.
pub mod typ {
    use super::{NodeId, NodeInfo, TypeConfig};

    pub type Raft = openraft::Raft<TypeConfig>;
    pub type Entry = openraft::Entry<TypeConfig>;
    pub type LogId = openraft::LogId<NodeId>;
    pub type Vote = openraft::Vote<NodeId>;
    pub type StorageError = openraft::StorageError<NodeId>;
    pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
    pub type Snapshot = openraft::Snapshot<TypeConfig>;
    pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
    pub type RaftMetrics = openraft::RaftMetrics<NodeId, NodeInfo>;
    pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
    pub type RPCError<E = openraft::error::Infallible> =
        openraft::error::RPCError<NodeId, NodeInfo, RaftError<E>>;
    pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, NodeInfo>;
    pub type CheckIsLeaderError = openraft::error::CheckIsLeaderError<NodeId, NodeInfo>;
    pub type ForwardToLeader = openraft::error::ForwardToLeader<NodeId, NodeInfo>;
    pub type InstallSnapshotError = openraft::error::InstallSnapshotError;
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
