//! The node's error type: every failure a request can meet, each with a
//! stable code that clients match on (`cete_types::ErrorCode`, whose table
//! also gives its HTTP status). `api::error` turns them into answers.

use cete_types::ErrorCode;
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
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::NotLeader(_) => ErrorCode::NotLeader,
            Error::NoLeader => ErrorCode::NoLeader,
            Error::OutcomeUnknown(_) => ErrorCode::OutcomeUnknown,
            Error::Timeout(_) => ErrorCode::Timeout,
            Error::NodeNotFound(_) => ErrorCode::NodeNotFound,
            Error::MembershipChangeInProgress => ErrorCode::MembershipChangeInProgress,
            Error::QuorumLoss(_) => ErrorCode::QuorumLoss,
            Error::Conflict(_) => ErrorCode::Conflict,
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::PeerUnavailable(_) => ErrorCode::PeerUnavailable,
            Error::Storage(_) => ErrorCode::StorageUnavailable,
            Error::StorageFull(_) => ErrorCode::StorageFull,
            Error::ShuttingDown => ErrorCode::ShuttingDown,
            Error::Internal(_) => ErrorCode::Internal,
            Error::Compacted { .. } => ErrorCode::Compacted,
            Error::WatcherTooSlow => ErrorCode::WatcherTooSlow,
        }
    }
}

impl Error {
    /// What a peer sends besides the code: the variant's own text, which
    /// [`Error::from_code`] puts back, so Display adds the wording once.
    pub fn payload(&self) -> String {
        match self {
            Error::OutcomeUnknown(m)
            | Error::Timeout(m)
            | Error::NodeNotFound(m)
            | Error::QuorumLoss(m)
            | Error::Conflict(m)
            | Error::InvalidArgument(m)
            | Error::PeerUnavailable(m)
            | Error::Storage(m)
            | Error::StorageFull(m)
            | Error::Internal(m) => m.clone(),
            Error::Compacted { requested, oldest } => format!("{requested} {oldest}"),
            Error::NotLeader(_)
            | Error::NoLeader
            | Error::MembershipChangeInProgress
            | Error::ShuttingDown
            | Error::WatcherTooSlow => self.to_string(),
        }
    }

    /// Rebuilds an error a peer reported by its code and payload, so that it
    /// answers the same REST status here as there (`leader` for `NotLeader`).
    /// An unknown code (a newer peer) is `Internal`.
    pub fn from_code(code: &str, payload: String, leader: LeaderHint) -> Error {
        let Some(code) = ErrorCode::parse(code) else {
            return Error::Internal(payload);
        };
        match code {
            ErrorCode::NotLeader => Error::NotLeader(leader),
            ErrorCode::NoLeader => Error::NoLeader,
            ErrorCode::OutcomeUnknown => Error::OutcomeUnknown(payload),
            ErrorCode::Timeout => Error::Timeout(payload),
            ErrorCode::NodeNotFound => Error::NodeNotFound(payload),
            ErrorCode::MembershipChangeInProgress => Error::MembershipChangeInProgress,
            ErrorCode::QuorumLoss => Error::QuorumLoss(payload),
            ErrorCode::Conflict => Error::Conflict(payload),
            ErrorCode::InvalidArgument => Error::InvalidArgument(payload),
            ErrorCode::PeerUnavailable => Error::PeerUnavailable(payload),
            ErrorCode::StorageUnavailable => Error::Storage(payload),
            ErrorCode::StorageFull => Error::StorageFull(payload),
            ErrorCode::ShuttingDown => Error::ShuttingDown,
            ErrorCode::Compacted => {
                match payload.split_once(' ').map(|(r, o)| (r.parse(), o.parse())) {
                    Some((Ok(requested), Ok(oldest))) => Error::Compacted { requested, oldest },
                    _ => Error::Internal(format!("a peer reported Compacted as {payload:?}")),
                }
            }
            ErrorCode::WatcherTooSlow => Error::WatcherTooSlow,
            // Codes of the HTTP layer never travel between peers.
            _ => Error::Internal(payload),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn every_variant() -> Vec<Error> {
        let leader = LeaderHint {
            id: "node2".into(),
            http_address: String::new(),
            grpc_address: "10.0.0.2:5001".into(),
        };
        let all = vec![
            Error::NotLeader(leader),
            Error::NoLeader,
            Error::OutcomeUnknown("o".into()),
            Error::Timeout("t".into()),
            Error::NodeNotFound("n".into()),
            Error::MembershipChangeInProgress,
            Error::QuorumLoss("q".into()),
            Error::Conflict("c".into()),
            Error::InvalidArgument("i".into()),
            Error::PeerUnavailable("p".into()),
            Error::Storage("disk failed".into()),
            Error::StorageFull("full".into()),
            Error::ShuttingDown,
            Error::Internal("x".into()),
            Error::Compacted {
                requested: 3,
                oldest: 9,
            },
            Error::WatcherTooSlow,
        ];
        // Fails to compile when a variant is added and not listed above.
        for e in &all {
            match e {
                Error::NotLeader(_)
                | Error::NoLeader
                | Error::OutcomeUnknown(_)
                | Error::Timeout(_)
                | Error::NodeNotFound(_)
                | Error::MembershipChangeInProgress
                | Error::QuorumLoss(_)
                | Error::Conflict(_)
                | Error::InvalidArgument(_)
                | Error::PeerUnavailable(_)
                | Error::Storage(_)
                | Error::StorageFull(_)
                | Error::ShuttingDown
                | Error::Internal(_)
                | Error::Compacted { .. }
                | Error::WatcherTooSlow => {}
            }
        }
        all
    }

    /// A leader's storage failure reached a follower's client as a 500
    /// `Internal` when the peer table lacked its code (it answers 503 there).
    #[test]
    fn every_error_survives_the_trip_between_peers() {
        for err in every_variant() {
            let hint = match &err {
                Error::NotLeader(hint) => hint.clone(),
                _ => LeaderHint {
                    id: String::new(),
                    http_address: String::new(),
                    grpc_address: String::new(),
                },
            };
            let back = Error::from_code(err.code().as_str(), err.payload(), hint);
            assert_eq!(back.code(), err.code(), "{err:?}");
            assert_eq!(back.to_string(), err.to_string(), "{err:?}");
        }
    }
}
