//! Cete server: a key-value store on RocksDB, kept consistent by Raft
//! (openraft), served over an HTTP/JSON API (warp), with Raft and peer
//! control traffic over gRPC (tonic).
//!
//! [`start_node`] starts everything; the binary and the tests both call it.

// openraft's storage traits return its StorageError by value; it is large by design.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod codec;
pub mod config;
pub mod errors;
pub mod expiry;
pub mod faults;
pub mod http_server;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod node;
pub mod raft;
pub mod store;
pub mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use openraft::storage::RaftLogStorage;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::Config;
use node::Cete;
use raft::network::{ChannelPool, Network};
use raft::peer::{PeerClient, PeerService};
use raft::service::RaftService;
use raft::{node_id_of, NodeInfo};

/// Keys longer than this are refused.
pub const MAX_KEY_LEN: usize = 4096;

/// Generated gRPC code for `proto/`.
pub mod proto {
    pub mod raft {
        tonic::include_proto!("cete.raft");
    }
    pub mod peer {
        tonic::include_proto!("cete.peer");
    }
}

/// A running node. Dropping it does not stop it; call [`NodeHandle::shutdown`].
pub struct NodeHandle {
    pub node: Arc<Cete>,
    pub http_addr: SocketAddr,
    pub raft_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
}

impl NodeHandle {
    /// Stops accepting requests, lets in-flight ones finish, stops Raft and
    /// closes RocksDB.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        // Watch streams never end on their own; end them so the HTTP
        // server's graceful shutdown does not wait on them.
        self.node.reader().events().close();
        for server in self.servers {
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        }
        if let Err(e) = self.node.raft.shutdown().await {
            log::warn!("raft shutdown: {e}");
        }
        log::info!("node {} stopped", self.node.info.name);
    }
}

/// The address to advertise for a listener: as configured, with the real
/// port if the configured one was 0, and the advertise host if the host part is empty.
fn advertised(configured: &str, bound: SocketAddr, advertise_host: Option<&str>) -> String {
    let (host, port) = configured.rsplit_once(':').unwrap_or(("", configured));
    let port = if port == "0" {
        bound.port().to_string()
    } else {
        port.to_string()
    };
    let host = if host.is_empty() {
        advertise_host.unwrap_or("")
    } else {
        host
    };
    format!("{host}:{port}")
}

async fn bind(setting: &str, address: &str) -> anyhow::Result<TcpListener> {
    let addr =
        net::listen_addr(address).map_err(|e| anyhow::anyhow!("{setting} {address}: {e}"))?;
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {setting} {address}"))
}

fn raft_config(config: &Config) -> anyhow::Result<openraft::Config> {
    let raft = openraft::Config {
        cluster_name: "cete".into(),
        heartbeat_interval: 150,
        election_timeout_min: 750,
        election_timeout_max: 1500,
        install_snapshot_timeout: 2000,
        // Entries carry up to 1 MiB of batched writes (see raft::proposer):
        // bound one AppendEntries well under the 256 MiB message limit.
        max_payload_entries: 64,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_threshold),
        max_in_snapshot_log_to_keep: config.snapshot_threshold.min(1000),
        ..Default::default()
    };
    raft.validate().context("raft configuration")
}

/// Starts a node: storage, Raft, the gRPC listeners and the HTTP API. A node
/// with no peer address and no state bootstraps a one-member cluster; with a
/// peer address it asks that peer to add it.
pub async fn start_node(config: Config) -> anyhow::Result<NodeHandle> {
    raise_open_file_limit();
    faults::announce();
    let tls = match config.tls.clone() {
        Some(settings) => Some(
            tokio::task::spawn_blocking(move || tls::TlsConfig::load(&settings))
                .await
                .context("loading TLS files")??,
        ),
        None => None,
    };
    let raft_listener = bind("--raft-address", &config.raft_address).await?;
    let grpc_listener = bind("--grpc-address", &config.grpc_address).await?;
    let http_listener = bind("--http-address", &config.http_address).await?;
    let (raft_addr, grpc_addr, http_addr) = (
        raft_listener.local_addr()?,
        grpc_listener.local_addr()?,
        http_listener.local_addr()?,
    );
    let advertise_host = config.advertise_host.as_deref();
    let info = NodeInfo {
        name: config.id.clone(),
        raft_address: advertised(&config.raft_address, raft_addr, advertise_host),
        grpc_address: advertised(&config.grpc_address, grpc_addr, advertise_host),
        http_address: advertised(&config.http_address, http_addr, advertise_host),
    };
    let id = node_id_of(&info.name);

    if let Some(backup) = config.restore.clone() {
        let (dir, me) = (config.data_directory.clone(), info.clone());
        let restored =
            tokio::task::spawn_blocking(move || store::restore::restore(&dir, &backup, id, me))
                .await
                .context("the restore task failed")??;
        log::info!(
            "restored {} keys at revision {} into {}; starting a new one-node cluster",
            restored.keys,
            restored.revision,
            config.data_directory.display()
        );
    }
    let dir = config.data_directory.clone();
    let awaiting_join = tokio::task::spawn_blocking(move || store::finish_interrupted_wipe(&dir))
        .await
        .context("the wipe check failed")?
        .with_context(|| format!("--data-directory {}", config.data_directory.display()))?;
    let removed_marker = config.data_directory.join(node::REMOVED_MARKER);
    if awaiting_join {
        // A removed node that its cluster adds back: the wipe dropped the state the marker
        // was about, so it goes too (only after the wipe, which a crash cannot undo).
        match tokio::fs::remove_file(&removed_marker).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", removed_marker.display()))
            }
            _ => {}
        }
    } else if removed_marker.exists() {
        anyhow::bail!(
            "node {} was removed from its cluster ({} exists); to take part again, start it with an empty --data-directory",
            info.name,
            removed_marker.display()
        );
    }

    let (mut log_store, state_machine) =
        store::open(&config.data_directory).await.with_context(|| {
            format!(
                "opening --data-directory {}",
                config.data_directory.display()
            )
        })?;
    let ready_after = log_store
        .read_committed()
        .await
        .context("reading the committed index")?
        .map_or(0, |l| l.index);
    let state_machine = state_machine.with_watch_history(config.watch_history);
    let reader = state_machine.reader();
    let pool = ChannelPool::new(tls::ClientTls::new(tls.as_ref()));
    let raft = openraft::Raft::new(
        id,
        Arc::new(raft_config(&config)?),
        Network::new(pool.clone()),
        log_store,
        state_machine,
    )
    .await
    .context("starting raft")?;
    let node = Arc::new(Cete::new(
        info.clone(),
        raft.clone(),
        reader,
        pool.clone(),
        ready_after,
        config.max_value_size,
        config.data_directory.clone(),
    ));

    tokio::spawn(stop_when_removed(node.clone()));

    let (shutdown, shutdown_rx) = watch::channel(false);
    tokio::spawn(expiry::run(
        node.clone(),
        config.expiry_interval,
        shutdown_rx.clone(),
    ));
    let stopped = move |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let mut servers = Vec::new();
    let grpc_tls = match &tls {
        Some(tls) => Some(tls.grpc_server_config()?),
        None => None,
    };
    let raft_router = tonic::transport::Server::builder().add_service(
        proto::raft::raft_server::RaftServer::new(RaftService::new(raft.clone()))
            .max_decoding_message_size(256 << 20),
    );
    let raft_server = serve_grpc(
        raft_router,
        raft_listener,
        grpc_tls.clone(),
        stopped(shutdown_rx.clone()),
    );
    servers.push(tokio::spawn(async move {
        if let Err(e) = raft_server.await {
            log::error!("raft listener failed: {e}");
        }
    }));
    let peer_router = tonic::transport::Server::builder().add_service(
        proto::peer::peer_server::PeerServer::new(PeerService::new(node.clone())),
    );
    let peer_server = serve_grpc(
        peer_router,
        grpc_listener,
        grpc_tls,
        stopped(shutdown_rx.clone()),
    );
    servers.push(tokio::spawn(async move {
        if let Err(e) = peer_server.await {
            log::error!("peer listener failed: {e}");
        }
    }));
    let https = match &tls {
        Some(tls) => Some(tls.http_server_config()?),
        None => None,
    };
    servers.push(tokio::spawn(http_server::serve(
        http_listener,
        https,
        warp::service(api::routes(node.clone())),
        http_server::Limits::default(),
        shutdown_rx.clone(),
    )));

    let peer = config
        .peer_grpc_address
        .clone()
        .filter(|p| !p.is_empty() && *p != config.grpc_address && *p != info.grpc_address);
    let initialized = raft.is_initialized().await.context("reading raft state")?;
    if initialized {
        tokio::spawn({
            let node = node.clone();
            async move { node.detect_removal_while_down().await }
        });
        if awaiting_join {
            store::clear_awaiting_join(&config.data_directory)?;
        }
    }
    match (initialized, peer) {
        (false, None) if awaiting_join => {
            log::info!(
                "waiting to be added to a cluster (this node's state was dropped for a join)"
            );
        }
        (false, None) => {
            log::info!("bootstrapping a new cluster with {info}");
            raft.initialize(BTreeMap::from([(id, info.clone())]))
                .await
                .context("bootstrapping the cluster")?;
        }
        (_, Some(peer)) => {
            let member = node.node_status().member;
            if !member {
                servers.push(tokio::spawn(join_until_member(
                    node.clone(),
                    PeerClient::new(pool),
                    peer,
                    shutdown_rx.clone(),
                )));
            }
        }
        (true, None) => {}
    }
    log::info!(
        "node {} up: raft {raft_addr}, grpc {grpc_addr}, {} {http_addr}, data {}",
        info.name,
        match &tls {
            Some(tls) => format!("TLS (common name {}), https", tls.server_name),
            None => "http".to_string(),
        },
        config.data_directory.display()
    );
    Ok(NodeHandle {
        node,
        http_addr,
        raft_addr,
        grpc_addr,
        shutdown,
        servers,
    })
}

/// Runs a node until `stop` resolves, and starts it again in place when it
/// asks to: a standalone node that another cluster adds drops its state and
/// comes back empty, waiting to be added.
pub async fn run(
    mut config: Config,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(stop);
    loop {
        let handle = start_node(config.clone()).await?;
        // A backup is restored once, on the first start only.
        config.restore = None;
        let node = handle.node.clone();
        let restart = tokio::select! {
            _ = &mut stop => {
                log::info!("shutting down");
                None
            }
            restart = node.restart_requested() => Some(restart),
        };
        let db = node.reader().db().downgrade();
        drop(node);
        handle.shutdown().await;
        let Some(restart) = restart else {
            return Ok(());
        };
        // The database must be closed before its files go or it reopens.
        let closed = tokio::time::timeout(Duration::from_secs(30), async {
            while db.strong_count() > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        anyhow::ensure!(closed.is_ok(), "the database did not close for a restart");
        if restart == node::Restart::WipeForJoin {
            let dir = config.data_directory.clone();
            tokio::task::spawn_blocking(move || store::wipe_for_join(&dir))
                .await
                .context("the wipe task failed")?
                .context("dropping this node's state to join a cluster")?;
        }
        log::info!("starting node {} again ({restart:?})", config.id);
    }
}

/// Raises the soft limit on open files to the hard limit: every client
/// connection is a file descriptor, and the usual soft limit (1024) is far
/// below what a busy node needs.
pub fn raise_open_file_limit() {
    let soft = rlimit::Resource::NOFILE.get_soft().unwrap_or(0);
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(raised) if raised > soft => log::info!("open-file limit raised from {soft} to {raised}"),
        Ok(limit) => log::info!("open-file limit: {limit}"),
        Err(e) => log::warn!("cannot raise the open-file limit from {soft}: {e}"),
    }
}

/// Accepted peer connections with Nagle's algorithm off. tonic's own
/// `tcp_nodelay` setting does not reach connections from a listener we bind
/// ourselves, and with Nagle on, a reply split over two writes waits for the
/// peer's delayed ACK: ~40 ms on every other Raft round trip.
fn peer_incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Serves `router` on `listener`, with TLS (peers must present a trusted certificate) if
/// configured. The TLS is ours, not tonic's, whose settings take no custom verifier.
fn serve_grpc(
    router: tonic::transport::server::Router,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> futures::future::BoxFuture<'static, Result<(), tonic::transport::Error>> {
    let incoming = peer_incoming(listener);
    match tls {
        Some(tls) => {
            Box::pin(router.serve_with_incoming_shutdown(tls::accept(incoming, tls), shutdown))
        }
        None => Box::pin(router.serve_with_incoming_shutdown(incoming, shutdown)),
    }
}

/// Watches the replicated membership: once a configuration that was
/// committed without this node arrives, the node stops taking part, even if
/// the leader's removal notice never reached it.
async fn stop_when_removed(node: Arc<Cete>) {
    let mut metrics = node.raft.metrics();
    let mut was_member = false;
    loop {
        let removed = {
            let m = metrics.borrow_and_update();
            let member = m
                .membership_config
                .membership()
                .get_node(&node.id)
                .is_some();
            // A joining node can first see a configuration from before it was
            // added (the one in a snapshot from the leader, when the log
            // behind it is purged): only leaving one it was in counts.
            was_member |= member;
            was_member && !member && m.membership_config.log_id().is_some()
        };
        if removed {
            node.mark_removed();
            return;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Asks `peer` to add this node until it is a member (or the node stops).
async fn join_until_member(
    node: Arc<Cete>,
    peers: PeerClient,
    peer: String,
    mut stop: watch::Receiver<bool>,
) {
    let mut delay = Duration::from_millis(200);
    loop {
        if node.node_status().voter {
            return;
        }
        match peers.join(&peer, &node.info).await {
            Ok(()) => {
                log::info!("joined the cluster through {peer}");
                return;
            }
            Err(e) => {
                // A refused certificate shows only as an unreachable peer.
                let tls = match e {
                    errors::Error::PeerUnavailable(_) => peers.diagnose_tls(&peer).await,
                    _ => None,
                };
                let why = tls.map(|d| format!(" ({d})")).unwrap_or_default();
                log::warn!("join through {peer} failed, retrying: {e}{why}")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_addresses() {
        let bound: SocketAddr = "0.0.0.0:7123".parse().unwrap();
        assert_eq!(advertised(":7000", bound, None), ":7000");
        assert_eq!(advertised(":0", bound, None), ":7123");
        assert_eq!(
            advertised(":7000", bound, Some("node1.cete")),
            "node1.cete:7000"
        );
        assert_eq!(
            advertised("10.0.0.1:7000", bound, Some("x")),
            "10.0.0.1:7000"
        );
        assert_eq!(advertised("127.0.0.1:0", bound, None), "127.0.0.1:7123");
    }
}
