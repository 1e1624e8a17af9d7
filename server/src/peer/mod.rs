//! Peer control over gRPC (on --grpc-address): node info, join, leave and
//! read index. `client` is what this node calls on others (below the node:
//! nodes joining at start, the REST join endpoint, followers serving
//! linearizable reads); `service` answers others' calls (above the node,
//! which it calls). This file holds the wire conversions both share.

pub mod client;
pub mod service;

use crate::errors::{Error, LeaderHint, Result};
use crate::proto::peer::{ChangeReply, NodeInfo as PbNodeInfo, NodeMetadata};
use crate::raft::NodeInfo;

pub fn to_pb(info: &NodeInfo, state: &str) -> PbNodeInfo {
    PbNodeInfo {
        id: info.name.clone(),
        raft_address: info.raft_address.clone(),
        metadata: Some(NodeMetadata {
            grpc_address: info.grpc_address.clone(),
            http_address: info.http_address.clone(),
        }),
        state: state.to_string(),
    }
}

pub fn from_pb(pb: PbNodeInfo) -> NodeInfo {
    let metadata = pb.metadata.unwrap_or_default();
    NodeInfo {
        name: pb.id,
        raft_address: pb.raft_address,
        grpc_address: metadata.grpc_address,
        http_address: metadata.http_address,
    }
}

fn error_to_reply(err: &Error) -> ChangeReply {
    let (leader_id, leader_grpc_address) = match err {
        Error::NotLeader(hint) => (hint.id.clone(), hint.grpc_address.clone()),
        _ => (String::new(), String::new()),
    };
    ChangeReply {
        error_code: err.code().to_string(),
        error_message: err.payload(),
        leader_id,
        leader_grpc_address,
    }
}

/// A membership-change reply as a result.
fn change_result(reply: ChangeReply) -> Result<()> {
    if reply.error_code.is_empty() {
        return Ok(());
    }
    Err(reply_to_error(
        &reply.error_code,
        reply.error_message,
        reply.leader_id,
        reply.leader_grpc_address,
    ))
}

/// Rebuilds the node error a peer reported, so it maps to the same REST code.
fn reply_to_error(code: &str, message: String, leader_id: String, leader_grpc: String) -> Error {
    Error::from_code(
        code,
        message,
        LeaderHint {
            id: leader_id,
            http_address: String::new(),
            grpc_address: leader_grpc,
        },
    )
}
