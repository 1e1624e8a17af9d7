//! `/v1/node`, `/v1/cluster` and `/v1/snapshot`: the node, its cluster and
//! membership changes. JSON shapes follow the original Cete README
//! (`bind_addr`, `metadata.grpc_addr`, `metadata.http_addr`, `state`), with
//! the `*_address` spellings alongside.

use std::sync::Arc;

use bytes::Bytes;
use cete_types::ErrorCode;
use serde::Deserialize;
use serde_json::{json, Value};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::error::{node_error, ApiError};
use super::{limited_body, request_target, with_node, RequestTarget};
use crate::errors::Error;
use crate::node::Node;
use crate::raft::NodeInfo;

/// Join requests are small; anything bigger is a mistake.
const MAX_JOIN_BODY: u64 = 64 * 1024;

pub fn routes(node: Arc<Node>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let node_route = warp::path!("v1" / "node")
        .and(warp::get())
        .and(with_node(node.clone()))
        .then(|node: Arc<Node>| async move { node_json(&node).await });
    let cluster = warp::path!("v1" / "cluster")
        .and(warp::get())
        .and(with_node(node.clone()))
        .map(|node: Arc<Node>| cluster_json(&node));
    let join = warp::path!("v1" / "cluster" / String)
        .and(warp::put())
        .and(with_node(node.clone()))
        .and(request_target())
        .and(limited_body(MAX_JOIN_BODY))
        .then(join);
    let leave = warp::path!("v1" / "cluster" / String)
        .and(warp::delete())
        .and(with_node(node.clone()))
        .and(request_target())
        .then(leave);
    let snapshot = warp::path!("v1" / "snapshot")
        .and(warp::post())
        .and(with_node(node))
        .then(snapshot);
    node_route
        .or(cluster)
        .unify()
        .or(join)
        .unify()
        .or(leave)
        .unify()
        .or(snapshot)
        .unify()
}

fn node_fields(info: &NodeInfo, state: &str) -> serde_json::Map<String, Value> {
    let value = json!({
        "id": info.name,
        "bind_addr": info.raft_address,
        "raft_address": info.raft_address,
        "metadata": {
            "grpc_addr": info.grpc_address,
            "http_addr": info.http_address,
            "grpc_address": info.grpc_address,
            "http_address": info.http_address,
        },
        "state": state,
    });
    match value {
        Value::Object(map) => map,
        _ => unreachable!("json! of an object is an object"),
    }
}

async fn node_json(node: &Node) -> Response {
    let commit_index = node.commit_index().await;
    let status = node.node_status();
    let mut fields = node_fields(&status.info, &status.state);
    fields.insert("leader".into(), json!(status.leader.unwrap_or_default()));
    fields.insert("term".into(), json!(status.term));
    fields.insert("last_log_index".into(), json!(status.last_log_index));
    fields.insert("last_applied".into(), json!(status.last_applied));
    fields.insert("commit_index".into(), json!(commit_index));
    fields.insert("member".into(), json!(status.member));
    fields.insert("voter".into(), json!(status.voter));
    warp::reply::json(&json!({ "node": fields })).into_response()
}

fn cluster_json(node: &Node) -> Response {
    let (members, leader) = node.cluster_status();
    let nodes: serde_json::Map<String, Value> = members
        .into_iter()
        .map(|(name, member)| {
            let mut fields = node_fields(&member.info, &member.state);
            fields.insert("voter".into(), json!(member.voter));
            // What the leader knows; null on other nodes, which do not know.
            let progress = member.progress;
            fields.insert("reachable".into(), json!(progress.map(|p| p.reachable)));
            fields.insert(
                "last_contact_ms".into(),
                json!(progress.and_then(|p| p.last_contact_ms)),
            );
            fields.insert(
                "matched_index".into(),
                json!(progress.and_then(|p| p.matched_index)),
            );
            fields.insert("replication_lag".into(), json!(progress.map(|p| p.lag)));
            (name, Value::Object(fields))
        })
        .collect();
    warp::reply::json(&json!({"cluster": {"nodes": nodes, "leader": leader.unwrap_or_default()}}))
        .into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinMetadata {
    grpc_addr: Option<String>,
    grpc_address: Option<String>,
    http_addr: Option<String>,
    http_address: Option<String>,
}

/// The original's join body (the `JoinRequest` schema); only
/// `metadata.grpc_addr` is required: the rest is asked of the joining node
/// itself. Either spelling of a field is read, not both; an unknown field is
/// refused rather than ignored (a typo must not pass unnoticed).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinBody {
    bind_addr: Option<String>,
    raft_address: Option<String>,
    #[serde(default)]
    metadata: JoinMetadata,
    /// The original's bodies carry it; accepted and ignored.
    #[serde(rename = "state")]
    _state: Option<String>,
}

impl JoinBody {
    /// The first field given in both spellings, if any.
    fn both_spellings(&self) -> Option<&'static str> {
        let m = &self.metadata;
        [
            (
                "bind_addr and raft_address",
                self.bind_addr.is_some() && self.raft_address.is_some(),
            ),
            (
                "metadata.grpc_addr and metadata.grpc_address",
                m.grpc_addr.is_some() && m.grpc_address.is_some(),
            ),
            (
                "metadata.http_addr and metadata.http_address",
                m.http_addr.is_some() && m.http_address.is_some(),
            ),
        ]
        .into_iter()
        .find_map(|(fields, both)| both.then_some(fields))
    }
}

/// `host:port`, as a peer's gRPC address must be (so a typo is a 400, not
/// a 502 from a connection that could never work).
fn check_host_port(address: &str) -> Result<(), String> {
    let authority: http::uri::Authority = address
        .parse()
        .map_err(|_| format!("'{address}' is not host:port"))?;
    if authority.port_u16().is_none() || address.contains('@') {
        return Err(format!("'{address}' is not host:port"));
    }
    Ok(())
}

async fn join(id: String, node: Arc<Node>, target: RequestTarget, body: Bytes) -> Response {
    let id = match percent_encoding::percent_decode_str(&id).decode_utf8() {
        Ok(id) if !id.is_empty() => id.into_owned(),
        _ => {
            return ApiError::new(
                ErrorCode::InvalidArgument,
                "the node id must be non-empty UTF-8",
            )
            .into_response()
        }
    };
    let body: JoinBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => {
            return ApiError::new(ErrorCode::InvalidJson, format!("invalid join body: {e}"))
                .into_response()
        }
    };
    if let Some(fields) = body.both_spellings() {
        return ApiError::new(
            ErrorCode::InvalidJson,
            format!("invalid join body: {fields} are the same field; give one"),
        )
        .into_response();
    }
    let non_empty = |a: &String| !a.is_empty();
    let Some(grpc_addr) = body
        .metadata
        .grpc_addr
        .filter(non_empty)
        .or(body.metadata.grpc_address.filter(non_empty))
    else {
        return ApiError::new(ErrorCode::InvalidArgument, "metadata.grpc_addr is required")
            .into_response();
    };
    if let Err(e) = check_host_port(&grpc_addr) {
        return ApiError::new(
            ErrorCode::InvalidArgument,
            format!("metadata.grpc_addr: {e}"),
        )
        .into_response();
    }
    // Only the leader changes membership: send the client there first.
    if let Some(hint) = node.leader_hint() {
        if hint.id != node.info.name {
            return node_error(Error::NotLeader(hint), Some(&target));
        }
    } else {
        return node_error(Error::NoLeader, None);
    }
    let (info, state) = match node.fetch_node_info(&grpc_addr).await {
        Ok(found) => found,
        Err(e) => return unreachable_target(e, &grpc_addr),
    };
    if info.name != id {
        return ApiError::new(
            ErrorCode::Conflict,
            format!("the node at {grpc_addr} is '{}', not '{id}'", info.name),
        )
        .into_response();
    }
    let given = [
        (
            "bind_addr",
            body.bind_addr.or(body.raft_address),
            info.raft_address.as_str(),
        ),
        (
            "metadata.http_addr",
            body.metadata.http_addr.or(body.metadata.http_address),
            info.http_address.as_str(),
        ),
    ];
    for (field, given, actual) in given {
        if let Some(given) = given.as_deref().filter(|g| !g.is_empty() && *g != actual) {
            return ApiError::new(
                ErrorCode::Conflict,
                format!("{field} is {given} in the request but the node reports {actual}"),
            )
            .into_response();
        }
    }
    let already_member = node.cluster_status().0.contains_key(&info.name);
    if !already_member {
        // A node that runs a cluster of its own must not get our log on top
        // of its own: a one-node cluster without data drops it and comes back
        // empty; anything else is refused (409).
        log::info!("preparing {} ({state}) to join", info.name);
        if let Err(e) = node.prepare_remote_join(&grpc_addr, &info.name).await {
            return unreachable_target(e, &grpc_addr);
        }
    }
    match node.join(info).await {
        Ok(()) => warp::reply::json(&json!({})).into_response(),
        Err(e) => node_error(e, Some(&target)),
    }
}

/// A join target that cannot be reached is the request's problem, not the cluster's:
/// the client named an address where no node answers (not started yet, or a typo).
/// `409 NodeUnreachable`: the request conflicts with the state of the node it names,
/// which the client can resolve (start the node, fix the address) and then repeat the
/// request (RFC 9110, section 15.5.10); a 5xx would say the cluster is failing. Other
/// errors map as usual.
fn unreachable_target(err: Error, grpc_addr: &str) -> Response {
    match err {
        Error::PeerUnavailable(detail) => ApiError::new(
            ErrorCode::NodeUnreachable,
            format!("no node answers at metadata.grpc_addr {grpc_addr}; is it running? ({detail})"),
        )
        .into_response(),
        other => node_error(other, None),
    }
}

async fn leave(id: String, node: Arc<Node>, target: RequestTarget) -> Response {
    let id = percent_encoding::percent_decode_str(&id)
        .decode_utf8_lossy()
        .into_owned();
    match node.leave(&id).await {
        Ok(()) => warp::reply::json(&json!({})).into_response(),
        Err(e) => node_error(e, Some(&target)),
    }
}

async fn snapshot(node: Arc<Node>) -> Response {
    match node.trigger_snapshot().await {
        Ok(index) => warp::reply::json(&json!({"snapshot": {"index": index}})).into_response(),
        Err(e) => node_error(e, None),
    }
}
