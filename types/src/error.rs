//! The REST API's error codes, each with its one HTTP status, and the JSON
//! body every error answer carries.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One list makes the enum, its strings and its statuses, so that a code can
/// never have two spellings or two statuses.
macro_rules! codes {
    ($($(#[doc = $doc:literal])* $name:ident => $status:literal,)*) => {
        /// A stable, machine-readable error code: clients match on it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[doc = $doc])* $name,)*
        }

        impl ErrorCode {
            /// Every code, in the order of the table.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            /// The code as it is written in bodies and in openapi.yaml.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$name => stringify!($name),)*
                }
            }

            /// The HTTP status an answer with this code has.
            pub fn status(self) -> u16 {
                match self {
                    $(ErrorCode::$name => $status,)*
                }
            }
        }
    };
}

codes! {
    /// A write or linearizable read reached a follower; the body names the leader.
    NotLeader => 307,
    /// The key is empty or not valid in a URL.
    InvalidKey => 400,
    KeyTooLarge => 400,
    InvalidArgument => 400,
    InvalidJson => 400,
    BadRequest => 400,
    /// A plain-HTTP request to a node that serves HTTPS only.
    HttpsRequired => 400,
    InvalidTtl => 400,
    InvalidTxn => 400,
    TooManyOperations => 400,
    /// Two writes to one key in one transaction branch.
    DuplicateKey => 400,
    KeyNotFound => 404,
    NodeNotFound => 404,
    /// No such route.
    NotFound => 404,
    MethodNotAllowed => 405,
    /// The request body did not arrive in time.
    RequestTimeout => 408,
    Conflict => 409,
    QuorumLoss => 409,
    MembershipChangeInProgress => 409,
    /// A node to add does not answer on its gRPC address.
    NodeUnreachable => 409,
    /// The revision a watch asked for is no longer kept.
    Compacted => 410,
    PreconditionFailed => 412,
    ValueTooLarge => 413,
    UnsupportedMediaType => 415,
    Internal => 500,
    /// A peer this node needed did not answer.
    PeerUnavailable => 502,
    NoLeader => 503,
    Timeout => 503,
    /// This node's disk failed; only a restart recovers.
    StorageUnavailable => 503,
    ShuttingDown => 503,
    /// The readiness check's answer while the node catches up.
    NotReady => 503,
    /// Sent only inside a watch stream (its status is never used).
    WatcherTooSlow => 503,
    /// The write may or may not have been applied.
    OutcomeUnknown => 504,
    StorageFull => 507,
}

impl ErrorCode {
    /// The code for its string, if this build knows it.
    pub fn parse(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_str() == code)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// `{"error": {"code", "message"}}`, with the leader for `NotLeader` and the
/// oldest revision kept for `Compacted`.
///
/// The code is a string, not an [`ErrorCode`], so that a client reads the
/// answers of a newer server, whose codes it may not know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<LeaderRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_revision: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// The leader a `NotLeader` answer points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRef {
    pub id: String,
    pub http_addr: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: code.as_str().to_string(),
                message: message.into(),
            },
            leader: None,
            oldest_revision: None,
        }
    }

    /// The body as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an error body always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_parse_back() {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
            assert!(ErrorCode::ALL[..i]
                .iter()
                .all(|c| c.as_str() != code.as_str()));
            assert!((300..600).contains(&code.status()), "{code}");
        }
        assert_eq!(ErrorCode::parse("NoSuchCode"), None);
    }

    /// openapi.yaml lists every code a client can meet: the same set as here.
    #[test]
    fn openapi_lists_exactly_these_codes() {
        let spec = include_str!("../../openapi.yaml");
        let start = spec
            .find("Stable, machine-readable; match on this.")
            .expect("the error code description in openapi.yaml");
        let listed: Vec<&str> = spec[start..]
            .lines()
            .skip_while(|l| l.trim() != "enum:")
            .skip(1)
            .map_while(|l| l.trim().strip_prefix("- "))
            .collect();
        let mut listed = listed;
        listed.sort_unstable();
        let mut ours: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        ours.sort_unstable();
        assert_eq!(listed, ours);
    }

    #[test]
    fn bodies_round_trip_and_omit_what_they_lack() {
        let body = ErrorBody::new(ErrorCode::KeyNotFound, "key 'a' not found");
        assert_eq!(
            body.to_json(),
            r#"{"error":{"code":"KeyNotFound","message":"key 'a' not found"}}"#
        );
        let with_leader: ErrorBody = serde_json::from_str(
            r#"{"error":{"code":"NotLeader","message":"m"},"leader":{"id":"n1","http_addr":"h:8002"}}"#,
        )
        .unwrap();
        assert_eq!(with_leader.leader.unwrap().http_addr, "h:8002");
    }
}
