//! The service half: answers other nodes' control calls by calling the node.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{error_to_reply, from_pb, to_pb};
use crate::node::Node;
use crate::proto::peer::peer_server::Peer;
use crate::proto::peer::{
    ChangeReply, JoinRequest, LeaveRequest, MembershipReply, MembershipRequest,
    NodeInfo as PbNodeInfo, NodeInfoRequest, PrepareJoinRequest, ReadIndexReply, ReadIndexRequest,
};

/// Serves peers' control requests.
pub struct PeerService {
    node: Arc<Node>,
}

impl PeerService {
    pub fn new(node: Arc<Node>) -> PeerService {
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
