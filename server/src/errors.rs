//! The node's error type: every failure a request can meet, each with a
//! stable code that clients match on. `api::error` maps them to HTTP.

use thiserror::Error;

/// The leader as far as this node knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    pub id: String,
    pub http_address: String,
    pub grpc_address: String,
}

#[derive(Debug, Clone, Error)]
pub enum Error {
    #[error("this node is not the leader; the leader is {}", .0.id)]
    NotLeader(LeaderHint),
    #[error("no leader is known right now; retry shortly")]
    NoLeader,
    #[error("the outcome of the write is unknown: {0}")]
    OutcomeUnknown(String),
    #[error("the request timed out: {0}")]
    Timeout(String),
    #[error("node '{0}' is not a member of the cluster")]
    NodeNotFound(String),
    #[error("a membership change is already in progress")]
    MembershipChangeInProgress,
    #[error("the change would leave the cluster without a quorum: {0}")]
    QuorumLoss(String),
    #[error("{0}")]
    Conflict(String),
    #[error("bad request: {0}")]
    InvalidArgument(String),
    #[error("peer unreachable: {0}")]
    PeerUnavailable(String),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("the data directory is full: {0}")]
    StorageFull(String),
    #[error("the node is shutting down")]
    ShuttingDown,
    #[error("internal error: {0}")]
    Internal(String),
    #[error(
        "revision {requested} is compacted: the oldest revision this node still holds is {oldest}"
    )]
    Compacted { requested: u64, oldest: u64 },
    #[error("the watcher fell too far behind and was dropped; resume from the revision after the last event received")]
    WatcherTooSlow,
}

impl Error {
    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotLeader(_) => "NotLeader",
            Error::NoLeader => "NoLeader",
            Error::OutcomeUnknown(_) => "OutcomeUnknown",
            Error::Timeout(_) => "Timeout",
            Error::NodeNotFound(_) => "NodeNotFound",
            Error::MembershipChangeInProgress => "MembershipChangeInProgress",
            Error::QuorumLoss(_) => "QuorumLoss",
            Error::Conflict(_) => "Conflict",
            Error::InvalidArgument(_) => "InvalidArgument",
            Error::PeerUnavailable(_) => "PeerUnavailable",
            Error::Storage(_) => "StorageUnavailable",
            Error::StorageFull(_) => "StorageFull",
            Error::ShuttingDown => "ShuttingDown",
            Error::Internal(_) => "Internal",
            Error::Compacted { .. } => "Compacted",
            Error::WatcherTooSlow => "WatcherTooSlow",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
