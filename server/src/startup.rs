//! Starting a node ([`start_node`]: storage, Raft, listeners, the HTTP API)
//! and starting it again in place when it asks to ([`run`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use openraft::storage::RaftLogStorage;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::node::{self, Node};
use crate::peer::service::PeerService;
use crate::raft::network::{ChannelPool, Network};
use crate::raft::service::RaftService;
use crate::raft::{self, node_id_of, NodeInfo};
use crate::{api, expiry, faults, http_server, listen, metrics, proto, tls};

/// A running node. Dropping it does not stop it; call [`NodeHandle::shutdown`].
pub struct NodeHandle {
    pub node: Arc<Node>,
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
            if tokio::time::timeout(SERVER_STOP_GRACE, server)
                .await
                .is_err()
            {
                log::warn!(
                    "a listener still had open calls {}s after the stop began; it is dropped",
                    SERVER_STOP_GRACE.as_secs()
                );
            }
        }
        if let Err(e) = self.node.raft.shutdown().await {
            log::warn!("raft shutdown: {e}");
        }
        log::info!("node {} stopped", self.node.info.name);
    }
}

/// How long a listener may take to finish its open calls when the node stops.
const SERVER_STOP_GRACE: Duration = Duration::from_secs(10);

/// Starts a node: storage, Raft, the gRPC listeners and the HTTP API. A node
/// with no peer address and no state bootstraps a one-member cluster; with a
/// peer address it asks that peer to add it.
pub async fn start_node(config: Config) -> anyhow::Result<NodeHandle> {
    listen::raise_open_file_limit();
    faults::announce();
    let tls = match config.tls.clone() {
        Some(settings) => Some(
            tokio::task::spawn_blocking(move || tls::TlsConfig::load(&settings))
                .await
                .context("loading TLS files")??,
        ),
        None => None,
    };
    let raft_listener = listen::bind("--raft-address", &config.raft_address).await?;
    let grpc_listener = listen::bind("--grpc-address", &config.grpc_address).await?;
    let http_listener = listen::bind("--http-address", &config.http_address).await?;
    let (raft_addr, grpc_addr, http_addr) = (
        raft_listener.local_addr()?,
        grpc_listener.local_addr()?,
        http_listener.local_addr()?,
    );
    let advertise_host = config.advertise_host.as_deref();
    let info = NodeInfo {
        name: config.id.clone(),
        raft_address: listen::advertised(&config.raft_address, raft_addr, advertise_host),
        grpc_address: listen::advertised(&config.grpc_address, grpc_addr, advertise_host),
        http_address: listen::advertised(&config.http_address, http_addr, advertise_host),
    };
    let id = node_id_of(&info.name);

    if let Some(backup) = config.restore.clone() {
        let (dir, me) = (config.data_directory.clone(), info.clone());
        let restored = tokio::task::spawn_blocking(move || {
            cete_store::restore::restore(&dir, &backup, id, me)
        })
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
    let awaiting_join =
        tokio::task::spawn_blocking(move || cete_store::finish_interrupted_wipe(&dir))
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

    let (mut log_store, state_machine) = cete_store::open(&config.data_directory, id)
        .await
        .with_context(|| {
            format!(
                "opening --data-directory {}",
                config.data_directory.display()
            )
        })?;
    let recovered = node::Recovered {
        committed: log_store
            .read_committed()
            .await
            .context("reading the committed index")?
            .map_or(0, |l| l.index),
        last_log: log_store
            .get_log_state()
            .await
            .context("reading the log state")?
            .last_log_id
            .map_or(0, |l| l.index),
        term: log_store
            .read_vote()
            .await
            .context("reading the vote")?
            .map_or(0, |v| v.leader_id.term),
    };
    let state_machine = state_machine.with_watch_history(config.watch_history);
    let reader = state_machine.reader();
    let metrics = Arc::new(metrics::Metrics::new(reader.db().snapshot_metrics()));
    let pool = ChannelPool::new(tls::ClientTls::new(tls.as_ref()));
    let durability = log_store.durability();
    let raft = openraft::Raft::new(
        id,
        Arc::new(raft::openraft_config(config.snapshot_threshold)?),
        Network::new(pool.clone(), durability.clone()),
        log_store,
        state_machine,
    )
    .await
    .context("starting raft")?;
    let node = Arc::new(Node::new(
        info.clone(),
        raft.clone(),
        reader,
        pool.clone(),
        recovered,
        config.max_value_size,
        config.data_directory.clone(),
    ));

    tokio::spawn(node.clone().stop_when_removed());
    tokio::spawn(raft::sync_in_background_while_replicated(
        raft.clone(),
        durability,
    ));

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
        proto::raft::raft_server::RaftServer::new(RaftService::new(
            raft.clone(),
            shutdown_rx.clone(),
        ))
        .max_decoding_message_size(256 << 20),
    );
    let raft_server = listen::serve_grpc(
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
    let peer_server = listen::serve_grpc(
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
        warp::service(api::routes(node.clone(), metrics)),
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
            cete_store::clear_awaiting_join(&config.data_directory)?;
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
                servers.push(tokio::spawn(
                    node.clone().join_until_member(peer, shutdown_rx.clone()),
                ));
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
        let db_closed = node.reader().db().closed();
        drop(node);
        handle.shutdown().await;
        let Some(restart) = restart else {
            return Ok(());
        };
        // The database must be closed (RocksDB done writing) before its
        // files go or it reopens.
        let closed = tokio::time::timeout(Duration::from_secs(30), db_closed).await;
        anyhow::ensure!(closed.is_ok(), "the database did not close for a restart");
        if restart == node::Restart::WipeForJoin {
            let dir = config.data_directory.clone();
            tokio::task::spawn_blocking(move || cete_store::wipe_for_join(&dir))
                .await
                .context("the wipe task failed")?
                .context("dropping this node's state to join a cluster")?;
        }
        log::info!("starting node {} again ({restart:?})", config.id);
    }
}
