//! The node: what every API call reaches. Writes are proposed through Raft,
//! reads wait for the right point in the log, membership changes go through
//! the leader. The API layer knows nothing of RocksDB; this layer knows
//! nothing of HTTP.

mod kv;
mod lifecycle;
mod membership;
mod reads;
mod status;

pub use kv::watch_error;
pub use lifecycle::{Restart, REMOVED_MARKER};
pub use reads::Consistency;
use reads::ReadIndex;
pub use status::{MemberStatus, NodeStatus, Progress};

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};

use crate::errors::{Error, LeaderHint, Result};
use crate::peer::client::PeerClient;
use crate::raft::network::{ChannelPool, Contacts};
use crate::raft::proposer::{self, ProposeError, Proposer};
use crate::raft::read_batch::{self, ReadBatcher, RoundStats};
use crate::raft::typ::{CheckIsLeaderError, Raft, RaftMetrics};
use crate::raft::{node_id_of, Command, CommandResult, NodeId, NodeInfo};
use cete_store::events::{WatchError, Watcher};
use cete_store::state_machine::{BackupFile, KeyEntry, KvReader};
use cete_store::value::StoredValue;

pub struct Node {
    pub info: NodeInfo,
    pub id: NodeId,
    pub raft: Raft,
    /// Packs concurrent writes into shared log entries.
    proposer: Proposer,
    reader: KvReader,
    peers: PeerClient,
    /// When each peer last answered this node's AppendEntries.
    contacts: Contacts,
    /// What the log held when this process started.
    recovered: Recovered,
    pub max_value_size: u64,
    data_directory: PathBuf,
    /// Set once this node learns it was removed from the cluster.
    removed: AtomicBool,
    /// Set once the removal marker is written (or failed to be): a wipe for a rejoin must
    /// come after it, or the marker could outlive the wipe.
    removal_recorded: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    /// Shares leadership confirmations among concurrent linearizable reads.
    read_batch: std::sync::Arc<ReadBatcher<ReadIndex>>,
    /// Shares ReadIndex calls to the leader among concurrent follower reads.
    follower_read_batch: std::sync::Arc<ReadBatcher<Result<u64>>>,
    /// Set when the node must be started again in place (see `Restart`).
    restart: tokio::sync::watch::Sender<Option<Restart>>,
}

/// What this node's log held when the process started, read before Raft
/// starts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Recovered {
    /// The committed index saved last (a hint, possibly behind): the applied
    /// index this node must reach before it calls itself ready.
    pub committed: u64,
    /// The index of the last entry in the log. Every write acknowledged
    /// before the restart is at or below it, so no read index handed out
    /// in the term the process started in is lower (see
    /// `Node::restored_leader_read_index`).
    pub last_log: u64,
    /// The term of the vote saved last.
    pub term: u64,
}

/// The current leader's addresses as `raft` knows them, if any.
fn leader_hint_of(raft: &Raft) -> Option<LeaderHint> {
    // Borrowed, not cloned: this runs for every redirect and follower read.
    let receiver = raft.metrics();
    let metrics = receiver.borrow();
    let leader = metrics.current_leader?;
    let node = metrics
        .membership_config
        .membership()
        .get_node(&leader)?
        .clone();
    Some(LeaderHint {
        id: node.name,
        http_address: node.http_address,
        grpc_address: node.grpc_address,
    })
}

impl Node {
    pub fn new(
        info: NodeInfo,
        raft: Raft,
        reader: KvReader,
        pool: ChannelPool,
        recovered: Recovered,
        max_value_size: u64,
        data_directory: PathBuf,
    ) -> Node {
        Node {
            data_directory,
            removed: AtomicBool::new(false),
            removal_recorded: std::sync::Arc::new(tokio::sync::watch::channel(false).0),
            restart: tokio::sync::watch::channel(None).0,
            read_batch: ReadBatcher::new(read_batch::DEFAULT_ROUNDS),
            follower_read_batch: ReadBatcher::new(read_batch::DEFAULT_ROUNDS),
            id: node_id_of(&info.name),
            info,
            proposer: Proposer::start(
                raft.clone(),
                proposer::Limits::default(),
                reader.durability().clone(),
            ),
            raft,
            reader,
            contacts: pool.contacts(),
            peers: PeerClient::new(pool),
            recovered,
            max_value_size,
        }
    }

    pub fn metrics(&self) -> RaftMetrics {
        self.raft.metrics().borrow().clone()
    }

    pub fn reader(&self) -> &KvReader {
        &self.reader
    }

    /// The current leader's addresses, if one is known.
    pub fn leader_hint(&self) -> Option<LeaderHint> {
        leader_hint_of(&self.raft)
    }

    fn not_leader(&self) -> Error {
        match self.leader_hint() {
            Some(hint) if hint.id != self.info.name => Error::NotLeader(hint),
            _ => Error::NoLeader,
        }
    }
}
