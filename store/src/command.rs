//! What travels through the Raft log: the commands a client write becomes,
//! their results, and openraft's type configuration over them. The log and
//! the state machine persist these, so they live with the storage.

use serde::{Deserialize, Serialize};

pub use cete_types::{node_id_of, NodeId, NodeInfo};

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
///
/// New variants go at the end: log entries are postcard records, which name
/// a variant by its position, so an entry written by an older build still
/// reads the same.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Command {
    /// A put without an expiry, from a build before expiring keys existed
    /// (or from a planted-bug test). Applied as a [`Command::PutAt`] at
    /// clock 0: no key counts as expired for it.
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        content_type: String,
        precondition: Option<Precondition>,
    },
    /// A delete from a build before expiring keys existed.
    Delete {
        key: Vec<u8>,
        precondition: Option<Precondition>,
    },
    /// A put, stamped with the proposing leader's clock.
    PutAt {
        key: Vec<u8>,
        value: Vec<u8>,
        content_type: String,
        precondition: Option<Precondition>,
        /// Unix milliseconds on the leader when it proposed the write: keys
        /// whose deadline is at or before it count as absent.
        at_ms: u64,
        /// The key expires `ttl_ms` after `at_ms`; `None` clears an expiry.
        ttl_ms: Option<u64>,
    },
    /// A delete, stamped with the proposing leader's clock.
    DeleteAt {
        key: Vec<u8>,
        precondition: Option<Precondition>,
        at_ms: u64,
    },
    /// An all-or-nothing transaction; every write of it gets one revision.
    Txn(Txn),
    /// The leader found `key` past its deadline: delete it, if it still
    /// carries that deadline (a later put may have renewed or cleared it).
    Expire { key: Vec<u8>, deadline_ms: u64 },
}

/// A condition of a transaction on one key, checked at apply time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Compare {
    /// The key exists with this modify revision.
    Revision(u64),
    Absent,
    Present,
    /// The key exists with exactly this value.
    Value(Vec<u8>),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum TxnOp {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        content_type: String,
        ttl_ms: Option<u64>,
    },
    Delete {
        key: Vec<u8>,
    },
    Get {
        key: Vec<u8>,
    },
}

impl TxnOp {
    pub fn key(&self) -> &[u8] {
        match self {
            TxnOp::Put { key, .. } | TxnOp::Delete { key } | TxnOp::Get { key } => key,
        }
    }

    fn size(&self) -> usize {
        match self {
            TxnOp::Put {
                key,
                value,
                content_type,
                ..
            } => key.len() + value.len() + content_type.len() + 24,
            TxnOp::Delete { key } | TxnOp::Get { key } => key.len() + 8,
        }
    }
}

/// `compare` all hold: `success` runs, else `failure`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Txn {
    pub compare: Vec<(Vec<u8>, Compare)>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
    /// The proposing leader's clock, as in [`Command::PutAt`].
    pub at_ms: u64,
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
            }
            | Command::PutAt {
                key,
                value,
                content_type,
                ..
            } => key.len() + value.len() + content_type.len() + 48,
            Command::Delete { key, .. } | Command::DeleteAt { key, .. } => key.len() + 24,
            Command::Expire { key, .. } => key.len() + 16,
            Command::Txn(txn) => {
                let compares: usize = txn
                    .compare
                    .iter()
                    .map(|(key, c)| {
                        key.len()
                            + 16
                            + match c {
                                Compare::Value(v) => v.len(),
                                _ => 0,
                            }
                    })
                    .sum();
                let ops: usize = txn
                    .success
                    .iter()
                    .chain(&txn.failure)
                    .map(TxnOp::size)
                    .sum();
                compares + ops + 16
            }
        }
    }

    /// The key a single-key command writes (not for transactions).
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            Command::Put { key, .. }
            | Command::Delete { key, .. }
            | Command::PutAt { key, .. }
            | Command::DeleteAt { key, .. }
            | Command::Expire { key, .. } => Some(key),
            Command::Txn(_) => None,
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
    /// A transaction ran: the branch `succeeded` chose, its writes at
    /// `revision` (the store's revision if it wrote nothing), one result per
    /// operation of the branch.
    Txn {
        succeeded: bool,
        revision: u64,
        results: Vec<TxnOpResult>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum TxnOpResult {
    Put {
        revision: u64,
        expires_at_ms: Option<u64>,
    },
    /// `revision` is `None` when the key did not exist.
    Delete {
        revision: Option<u64>,
    },
    Get(Option<GotValue>),
}

/// A value a transaction read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GotValue {
    pub value: Vec<u8>,
    pub content_type: String,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub expires_at_ms: Option<u64>,
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
