//! Peer control over gRPC (on --grpc-address): node info, join, leave and
//! read index. The client half is used by nodes joining at start, by the
//! REST join endpoint, and by followers serving linearizable reads.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::network::ChannelPool;
use super::NodeInfo;
use crate::errors::{Error, LeaderHint, Result};
use crate::node::Cete;
use crate::proto::peer::peer_client::PeerClient as GrpcPeerClient;
use crate::proto::peer::peer_server::Peer;
use crate::proto::peer::{
    ChangeReply, JoinRequest, LeaveRequest, MembershipReply, MembershipRequest,
    NodeInfo as PbNodeInfo, NodeInfoRequest, NodeMetadata, PrepareJoinRequest, ReadIndexReply,
    ReadIndexRequest,
};

const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// A join waits for the learner to catch up, which may mean a large snapshot.
const JOIN_TIMEOUT: Duration = Duration::from_secs(600);

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

/// Calls peers' control service.
#[derive(Clone)]
pub struct PeerClient {
    pool: ChannelPool,
}

impl PeerClient {
    pub fn new(pool: ChannelPool) -> PeerClient {
        PeerClient { pool }
    }

    fn client(&self, address: &str) -> Result<GrpcPeerClient<tonic::transport::Channel>> {
        self.pool
            .channel(address)
            .map(GrpcPeerClient::new)
            .map_err(|e| Error::PeerUnavailable(format!("{address}: {e}")))
    }

    fn status_error(address: &str, status: Status) -> Error {
        match status.code() {
            tonic::Code::DeadlineExceeded => {
                Error::Timeout(format!("{address}: {}", status.message()))
            }
            _ => Error::PeerUnavailable(format!("{address}: {}", status.message())),
        }
    }

    /// Why TLS with the peer at `address` fails, if it does: to explain a failed call.
    pub async fn diagnose_tls(&self, address: &str) -> Option<String> {
        self.pool.diagnose_tls(address).await
    }

    /// Who the node at `address` is, and its Raft state as it reports it.
    pub async fn node_info(&self, address: &str) -> Result<(NodeInfo, String)> {
        let mut request = Request::new(NodeInfoRequest {});
        request.set_timeout(CALL_TIMEOUT);
        let reply = self
            .client(address)?
            .get_node_info(request)
            .await
            .map_err(|s| Self::status_error(address, s))?;
        let reply = reply.into_inner();
        let state = reply.state.clone();
        Ok((from_pb(reply), state))
    }

    pub async fn read_index(&self, address: &str) -> Result<u64> {
        let mut request = Request::new(ReadIndexRequest {});
        request.set_timeout(CALL_TIMEOUT);
        let reply = self
            .client(address)?
            .read_index(request)
            .await
            .map_err(|s| Self::status_error(address, s))?
            .into_inner();
        if reply.error_code.is_empty() {
            Ok(reply.read_index)
        } else {
            Err(reply_to_error(
                &reply.error_code,
                reply.error_message,
                String::new(),
                String::new(),
            ))
        }
    }

    /// Asks the member at `address` to add `node`; follows one redirect to the leader.
    pub async fn join(&self, address: &str, node: &NodeInfo) -> Result<()> {
        let mut target = address.to_string();
        for _ in 0..3 {
            let mut request = Request::new(JoinRequest {
                node: Some(to_pb(node, "")),
            });
            request.set_timeout(JOIN_TIMEOUT);
            let reply = self
                .client(&target)?
                .join(request)
                .await
                .map_err(|s| Self::status_error(&target, s))?
                .into_inner();
            if reply.error_code.is_empty() {
                return Ok(());
            }
            if reply.error_code == "NotLeader" && !reply.leader_grpc_address.is_empty() {
                target = reply.leader_grpc_address;
                continue;
            }
            return Err(reply_to_error(
                &reply.error_code,
                reply.error_message,
                reply.leader_id,
                reply.leader_grpc_address,
            ));
        }
        Err(Error::NoLeader)
    }

    pub async fn notify_removed(&self, address: &str, name: &str) -> Result<()> {
        let mut request = Request::new(LeaveRequest {
            id: name.to_string(),
        });
        request.set_timeout(CALL_TIMEOUT);
        self.client(address)?
            .notify_removed(request)
            .await
            .map_err(|s| Self::status_error(address, s))?;
        Ok(())
    }

    /// Asks the standalone node `name` at `address` to drop its one-node
    /// cluster so that `leader` can add it.
    pub async fn prepare_join(&self, address: &str, name: &str, leader: &str) -> Result<()> {
        let mut request = Request::new(PrepareJoinRequest {
            id: name.to_string(),
            leader_id: leader.to_string(),
        });
        request.set_timeout(CALL_TIMEOUT);
        let reply = self
            .client(address)?
            .prepare_join(request)
            .await
            .map_err(|s| Self::status_error(address, s))?
            .into_inner();
        change_result(reply)
    }

    /// The latest membership the node at `address` knows: its log index and
    /// member names.
    pub async fn membership(&self, address: &str) -> Result<(u64, Vec<String>)> {
        let mut request = Request::new(MembershipRequest {});
        request.set_timeout(CALL_TIMEOUT);
        let reply = self
            .client(address)?
            .get_membership(request)
            .await
            .map_err(|s| Self::status_error(address, s))?
            .into_inner();
        Ok((reply.log_index, reply.members))
    }

    pub async fn leave(&self, address: &str, name: &str) -> Result<()> {
        let mut request = Request::new(LeaveRequest {
            id: name.to_string(),
        });
        request.set_timeout(JOIN_TIMEOUT);
        let reply = self
            .client(address)?
            .leave(request)
            .await
            .map_err(|s| Self::status_error(address, s))?
            .into_inner();
        change_result(reply)
    }
}

/// Serves peers' control requests.
pub struct PeerService {
    node: Arc<Cete>,
}

impl PeerService {
    pub fn new(node: Arc<Cete>) -> PeerService {
        PeerService { node }
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn get_node_info(
        &self,
        _request: Request<NodeInfoRequest>,
    ) -> std::result::Result<Response<PbNodeInfo>, Status> {
        let status = self.node.node_status();
        Ok(Response::new(to_pb(&status.info, &status.state)))
    }

    async fn join(
        &self,
        request: Request<JoinRequest>,
    ) -> std::result::Result<Response<ChangeReply>, Status> {
        let node = request
            .into_inner()
            .node
            .map(from_pb)
            .ok_or_else(|| Status::invalid_argument("join without a node"))?;
        Ok(Response::new(match self.node.join(node).await {
            Ok(()) => ChangeReply::default(),
            Err(e) => error_to_reply(&e),
        }))
    }

    async fn leave(
        &self,
        request: Request<LeaveRequest>,
    ) -> std::result::Result<Response<ChangeReply>, Status> {
        let name = request.into_inner().id;
        Ok(Response::new(match self.node.leave(&name).await {
            Ok(()) => ChangeReply::default(),
            Err(e) => error_to_reply(&e),
        }))
    }

    async fn notify_removed(
        &self,
        request: Request<LeaveRequest>,
    ) -> std::result::Result<Response<ChangeReply>, Status> {
        let name = request.into_inner().id;
        if name != self.node.info.name {
            return Err(Status::invalid_argument(format!(
                "this node is '{}', not '{name}'",
                self.node.info.name
            )));
        }
        self.node.mark_removed();
        Ok(Response::new(ChangeReply::default()))
    }

    async fn prepare_join(
        &self,
        request: Request<PrepareJoinRequest>,
    ) -> std::result::Result<Response<ChangeReply>, Status> {
        let request = request.into_inner();
        if request.id != self.node.info.name {
            return Err(Status::invalid_argument(format!(
                "this node is '{}', not '{}'",
                self.node.info.name, request.id
            )));
        }
        Ok(Response::new(
            match self.node.prepare_join(&request.leader_id).await {
                Ok(()) => ChangeReply::default(),
                Err(e) => error_to_reply(&e),
            },
        ))
    }

    async fn get_membership(
        &self,
        _request: Request<MembershipRequest>,
    ) -> std::result::Result<Response<MembershipReply>, Status> {
        let (log_index, members) = self
            .node
            .known_membership()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(MembershipReply { log_index, members }))
    }

    async fn read_index(
        &self,
        _request: Request<ReadIndexRequest>,
    ) -> std::result::Result<Response<ReadIndexReply>, Status> {
        Ok(Response::new(
            match self.node.read_index_for_follower().await {
                Ok(read_index) => ReadIndexReply {
                    read_index,
                    ..Default::default()
                },
                Err(e) => ReadIndexReply {
                    read_index: 0,
                    error_code: e.code().to_string(),
                    error_message: e.payload(),
                },
            },
        ))
    }
}
