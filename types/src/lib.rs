//! What the Cete server and the `cete` CLI both speak: the error codes of the
//! REST API and their statuses ([`ErrorCode`]), the error body, what a member
//! is ([`NodeInfo`]), the backup file format ([`backup`]), the pinning of a
//! self-signed certificate ([`pin`]) and the key limit.
//!
//! It depends on nothing of Cete's, so every other crate can depend on it.

pub mod backup;
mod error;
mod node;
pub mod pin;

pub use error::{ErrorBody, ErrorCode, ErrorDetail, LeaderRef};
pub use node::{node_id_of, NodeId, NodeInfo};

/// Keys longer than this are refused.
pub const MAX_KEY_LEN: usize = 4096;
