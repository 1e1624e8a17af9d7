//! The tonic client side of Raft: how this node sends votes, appends and
//! snapshot chunks to its peers. Channels are pooled per address and
//! reconnect on their own after failures; every call has a deadline.
//!
//! Appends go over one long-lived stream per peer (`AppendEntriesStream`),
//! as etcd's rafthttp keeps a stream per peer for its append messages: a
//! unary call costs a new HTTP/2 stream with headers and trailers each way
//! and a task on the peer, which measured most of an append's round trip on
//! one host. openraft sends one append at a time per peer, so the stream
//! carries one request and then its reply; a stream that fails or times out
//! is dropped, and the next append opens a new one.

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
use tokio::sync::mpsc;
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
            appends: None,
            appends_unimplemented: false,
        }
    }
}

pub struct PeerConnection {
    target: NodeId,
    node: NodeInfo,
    client: Result<RaftClient<Channel>, tonic::transport::Error>,
    contacts: Contacts,
    durability: Arc<Durability>,
    /// The open append stream to the peer, if any.
    appends: Option<AppendStream>,
    /// The peer answered UNIMPLEMENTED to a stream (an older Cete during a
    /// rolling upgrade): appends to it are unary calls.
    appends_unimplemented: bool,
}

/// One `AppendEntriesStream` call: requests go out on `requests`, replies
/// come back in the same order on `replies`.
struct AppendStream {
    requests: mpsc::Sender<RaftPayload>,
    replies: tonic::Streaming<RaftReply>,
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
        match reply {
            Ok(reply) => self.decode_reply(reply.into_inner()),
            Err(status) => Err(status_to_rpc_error(status)),
        }
    }

    /// openraft's response, or the peer's error, out of `reply`.
    fn decode_reply<Resp, E>(&self, reply: RaftReply) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
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

    /// Sends `rpc` on the append stream (opened first if there is none) and
    /// waits for its reply, all within the call's deadline.
    async fn append_on_stream(
        &mut self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        let payload = RaftPayload { data: encode(rpc) };
        let deadline = option.hard_ttl();
        let reply = match tokio::time::timeout(deadline, self.exchange(payload)).await {
            Ok(Ok(Some(reply))) => reply,
            Ok(Ok(None)) => {
                // The peer has no such method: an older Cete.
                self.appends_unimplemented = true;
                return self.call("append_entries", rpc, option).await;
            }
            Ok(Err(e)) => {
                self.appends = None;
                return Err(e);
            }
            Err(_) => {
                // A reply may still come on this stream; it would answer the
                // wrong request, so the stream goes.
                self.appends = None;
                let status = tonic::Status::deadline_exceeded(format!(
                    "no append reply within {deadline:?}"
                ));
                return Err(RPCError::Network(NetworkError::new(&status)));
            }
        };
        self.decode_reply(reply)
    }

    /// One request and its reply on the append stream; `None` when the
    /// peer does not serve streams.
    async fn exchange(
        &mut self,
        payload: RaftPayload,
    ) -> RpcResult<Option<RaftReply>, openraft::error::Infallible> {
        if self.appends.is_none() {
            let mut client = match &self.client {
                Ok(client) => client.clone(),
                Err(e) => return Err(RPCError::Unreachable(Unreachable::new(e))),
            };
            let (requests, outgoing) = mpsc::channel(1);
            let opened = client
                .append_entries_stream(tokio_stream::wrappers::ReceiverStream::new(outgoing))
                .await;
            let replies = match opened {
                Ok(replies) => replies.into_inner(),
                Err(status) if status.code() == tonic::Code::Unimplemented => return Ok(None),
                Err(status) => return Err(status_to_rpc_error(status)),
            };
            self.appends = Some(AppendStream { requests, replies });
        }
        let stream = self.appends.as_mut().expect("opened above");
        let ended = || {
            let status = tonic::Status::unavailable("the append stream ended");
            RPCError::Network(NetworkError::new(&status))
        };
        stream.requests.send(payload).await.map_err(|_| ended())?;
        match stream.replies.message().await {
            Ok(Some(reply)) => Ok(Some(reply)),
            Ok(None) => Err(ended()),
            Err(status) => Err(status_to_rpc_error(status)),
        }
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
        let reply = if self.appends_unimplemented {
            self.call("append_entries", &rpc, &option).await
        } else {
            self.append_on_stream(&rpc, &option).await
        };
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

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::{Stream, StreamExt};
    use openraft::{CommittedLeaderId, LogId, Vote};
    use tonic::{Request, Response, Status, Streaming};

    use super::*;
    use crate::proto::raft::raft_server::{Raft, RaftServer};

    /// A peer that answers every append with `PartialSuccess(prev_log_id)`,
    /// so a reply names the request it answers.
    #[derive(Default)]
    struct FakePeer {
        streams_opened: AtomicUsize,
        unary_appends: AtomicUsize,
        /// Answers UNIMPLEMENTED to streams (an older Cete).
        without_streams: bool,
        /// The first stream takes requests but never answers.
        first_stream_silent: bool,
    }

    fn answer(payload: &RaftPayload) -> RaftReply {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(&payload.data).unwrap();
        let response = AppendEntriesResponse::<NodeId>::PartialSuccess(rpc.prev_log_id);
        RaftReply {
            data: encode(&response),
            error: Vec::new(),
        }
    }

    type Replies = Pin<Box<dyn Stream<Item = Result<RaftReply, Status>> + Send>>;

    #[tonic::async_trait]
    impl Raft for Arc<FakePeer> {
        async fn vote(&self, _: Request<RaftPayload>) -> Result<Response<RaftReply>, Status> {
            Err(Status::unimplemented("not in this test"))
        }

        async fn append_entries(
            &self,
            request: Request<RaftPayload>,
        ) -> Result<Response<RaftReply>, Status> {
            self.unary_appends.fetch_add(1, Ordering::SeqCst);
            Ok(Response::new(answer(request.get_ref())))
        }

        type AppendEntriesStreamStream = Replies;

        async fn append_entries_stream(
            &self,
            request: Request<Streaming<RaftPayload>>,
        ) -> Result<Response<Replies>, Status> {
            if self.without_streams {
                return Err(Status::unimplemented("no streams here"));
            }
            let opened = self.streams_opened.fetch_add(1, Ordering::SeqCst);
            let silent = self.first_stream_silent && opened == 0;
            let replies = request.into_inner().then(move |payload| async move {
                if silent {
                    std::future::pending::<()>().await;
                }
                Ok(answer(&payload?))
            });
            Ok(Response::new(Box::pin(replies)))
        }

        async fn install_snapshot(
            &self,
            _: Request<RaftPayload>,
        ) -> Result<Response<RaftReply>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
    }

    /// A connection from a node to `peer`, served on a free port.
    async fn connect(peer: Arc<FakePeer>, dir: &std::path::Path) -> PeerConnection {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let router = tonic::transport::Server::builder().add_service(RaftServer::new(peer));
        tokio::spawn(crate::listen::serve_grpc(
            router,
            listener,
            None,
            std::future::pending(),
        ));
        let (log, _state_machine) = cete_store::open(dir, 1).await.unwrap();
        let mut network = Network::new(
            ChannelPool::new(crate::tls::ClientTls::new(None)),
            log.durability(),
        );
        let node = NodeInfo {
            name: "peer".into(),
            raft_address: address,
            grpc_address: String::new(),
            http_address: String::new(),
        };
        network.new_client(2, &node).await
    }

    fn append(index: u64) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), index)),
            entries: Vec::new(),
            leader_commit: None,
        }
    }

    fn answered(index: u64) -> AppendEntriesResponse<NodeId> {
        AppendEntriesResponse::PartialSuccess(append(index).prev_log_id)
    }

    fn within(ttl: Duration) -> RPCOption {
        RPCOption::new(ttl)
    }

    /// Sends an append for each index in turn; each must get its own reply.
    async fn appends_are_answered_in_order(
        connection: &mut PeerConnection,
        indexes: std::ops::RangeInclusive<u64>,
    ) {
        for index in indexes {
            let reply = connection
                .append_entries(append(index), within(Duration::from_secs(10)))
                .await
                .unwrap();
            assert_eq!(reply, answered(index));
        }
    }

    #[tokio::test]
    async fn appends_share_one_stream_and_each_gets_its_own_reply() {
        let dir = tempfile::tempdir().unwrap();
        let peer = Arc::new(FakePeer::default());
        let mut connection = connect(peer.clone(), dir.path()).await;
        appends_are_answered_in_order(&mut connection, 1..=5).await;
        assert_eq!(peer.streams_opened.load(Ordering::SeqCst), 1);
        assert_eq!(peer.unary_appends.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_peer_without_streams_gets_unary_appends() {
        let dir = tempfile::tempdir().unwrap();
        let peer = Arc::new(FakePeer {
            without_streams: true,
            ..FakePeer::default()
        });
        let mut connection = connect(peer.clone(), dir.path()).await;
        appends_are_answered_in_order(&mut connection, 1..=3).await;
        assert_eq!(peer.unary_appends.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_append_unanswered_in_time_fails_and_the_next_one_gets_a_new_stream() {
        let dir = tempfile::tempdir().unwrap();
        let peer = Arc::new(FakePeer {
            first_stream_silent: true,
            ..FakePeer::default()
        });
        let mut connection = connect(peer.clone(), dir.path()).await;
        let late = connection
            .append_entries(append(1), within(Duration::from_millis(300)))
            .await;
        assert!(
            matches!(late, Err(RPCError::Network(_))),
            "an unanswered append is a network error: {late:?}"
        );
        // Were the old stream kept, this would read no reply (or another's).
        let reply = connection
            .append_entries(append(2), within(Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(reply, answered(2));
        assert_eq!(peer.streams_opened.load(Ordering::SeqCst), 2);
    }
}
