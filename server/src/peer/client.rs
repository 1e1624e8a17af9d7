//! The client half: calls to other nodes' control service.

use std::time::Duration;

use tonic::{Request, Status};

use super::{change_result, from_pb, reply_to_error, to_pb};
use crate::errors::{Error, Result};
use crate::proto::peer::peer_client::PeerClient as GrpcPeerClient;
use crate::proto::peer::{
    JoinRequest, LeaveRequest, MembershipRequest, NodeInfoRequest, PrepareJoinRequest,
    ReadIndexRequest,
};
use crate::raft::network::ChannelPool;
use crate::raft::NodeInfo;

const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// A join waits for the learner to catch up, which may mean a large snapshot.
const JOIN_TIMEOUT: Duration = Duration::from_secs(600);

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
