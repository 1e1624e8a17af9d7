//! The tonic client side of Raft: how this node sends votes, appends and
//! snapshot chunks to its peers. Channels are pooled per address and
//! reconnect on their own after failures; every call has a deadline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use super::{NodeId, NodeInfo, TypeConfig};
use crate::proto::raft::raft_client::RaftClient;
use crate::proto::raft::{RaftPayload, RaftReply};
use crate::tls::ClientTls;
use cete_store::durability::Durability;

/// When each peer last answered an AppendEntries (heartbeats included), as
/// this node saw it while sending them, i.e. while it led. openraft 0.9
/// reports only each follower's matched log id, which stands still on an idle
/// cluster whether the follower is up or not; this tells the two apart.
#[derive(Clone, Default)]
pub struct Contacts(Arc<Mutex<HashMap<NodeId, Instant>>>);

impl Contacts {
    fn record(&self, target: NodeId) {
        self.0
            .lock()
            .expect("contacts lock is never poisoned")
            .insert(target, Instant::now());
    }

    /// When `target` last answered an AppendEntries, if it ever did.
    pub fn last_answer(&self, target: NodeId) -> Option<Instant> {
        self.0
            .lock()
            .expect("contacts lock is never poisoned")
            .get(&target)
            .copied()
    }
}

/// Opens (lazily) and caches one gRPC channel per peer address.
#[derive(Clone)]
pub struct ChannelPool {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    tls: ClientTls,
    contacts: Contacts,
}

impl ChannelPool {
    pub fn new(tls: ClientTls) -> ChannelPool {
        ChannelPool {
            channels: Arc::default(),
            tls,
            contacts: Contacts::default(),
        }
    }

    /// The peers' last answers to this node's AppendEntries.
    pub fn contacts(&self) -> Contacts {
        self.contacts.clone()
    }

    /// Why TLS with `address` fails, if it does (see [`ClientTls::diagnose`]).
    pub async fn diagnose_tls(&self, address: &str) -> Option<String> {
        self.tls.diagnose(address).await
    }

    /// A channel to `address` (`host:port`, or `:port` for this host).
    pub fn channel(&self, address: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self.channels.lock().expect("pool lock is never poisoned");
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let target = crate::net::dial_addr(crate::faults::dial_target(address), None);
        let endpoint = Endpoint::from_shared(format!("http://{target}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = match self.tls.connector() {
            Some(tls) => endpoint.connect_with_connector_lazy(tls),
            None => endpoint.connect_lazy(),
        };
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }
}

pub struct Network {
    pool: ChannelPool,
    /// This node's log on disk: a leader tells followers of a commit only
    /// once it has synced the entries up to it.
    durability: Arc<Durability>,
}

impl Network {
    pub fn new(pool: ChannelPool, durability: Arc<Durability>) -> Network {
        Network { pool, durability }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerConnection {
        PeerConnection {
            target,
            node: node.clone(),
            client: self.pool.channel(&node.raft_address).map(RaftClient::new),
            contacts: self.pool.contacts(),
            durability: self.durability.clone(),
        }
    }
}

pub struct PeerConnection {
    target: NodeId,
    node: NodeInfo,
    client: Result<RaftClient<Channel>, tonic::transport::Error>,
    contacts: Contacts,
    durability: Arc<Durability>,
}

pub(crate) use cete_store::codec::{decode, encode};

type RpcResult<T, E> = Result<T, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>;

impl PeerConnection {
    async fn call<Req, Resp, E>(
        &mut self,
        method: &'static str,
        request: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &self.client {
            Ok(client) => client.clone(),
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(e))),
        };
        let mut client = client;
        let mut req = tonic::Request::new(RaftPayload {
            data: encode(request),
        });
        req.set_timeout(option.hard_ttl());
        let reply = match method {
            "vote" => client.vote(req).await,
            "append_entries" => client.append_entries(req).await,
            _ => client.install_snapshot(req).await,
        };
        let reply: RaftReply = match reply {
            Ok(reply) => reply.into_inner(),
            Err(status) => return Err(status_to_rpc_error(status)),
        };
        let net_err = |e: cete_store::codec::CodecError| RPCError::Network(NetworkError::new(&e));
        if !reply.error.is_empty() {
            let err: RaftError<NodeId, E> = decode(&reply.error).map_err(net_err)?;
            return Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                err,
            )));
        }
        decode(&reply.data).map_err(net_err)
    }
}

/// Connection failures mean the peer did not get the message (openraft backs
/// off); everything else is a network error whose outcome is unknown.
fn status_to_rpc_error<E: std::error::Error>(
    status: tonic::Status,
) -> RPCError<NodeId, NodeInfo, RaftError<NodeId, E>> {
    match status.code() {
        tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&status)),
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        // openraft counts the leader's own copy of an entry toward its commit
        // before the leader has synced it (see cete_store::durability). A
        // follower that learned of the commit would apply the entry and show
        // it while a quorum may not have it on disk yet: the commit goes out
        // only once synced here. The sync began at the append, so by the time
        // a quorum has answered it has mostly ended.
        if let Some(committed) = &rpc.leader_commit {
            self.durability
                .wait_synced(committed.index)
                .await
                .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        }
        let reply = self.call("append_entries", &rpc, &option).await;
        // Any answer, a refusal included, shows the peer is up and reachable.
        if matches!(reply, Ok(_) | Err(RPCError::RemoteError(_))) {
            self.contacts.record(self.target);
        }
        reply
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call("install_snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call("vote", &rpc, &option).await
    }
}
