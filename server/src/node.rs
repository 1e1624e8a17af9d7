//! The node: what every API call reaches. Writes are proposed through Raft,
//! reads wait for the right point in the log, membership changes go through
//! the leader. The API layer knows nothing of RocksDB; this layer knows
//! nothing of HTTP.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};

use crate::errors::{Error, LeaderHint, Result};
use crate::raft::network::{ChannelPool, Contacts};
use crate::raft::peer::PeerClient;
use crate::raft::proposer::{self, ProposeError, Proposer};
use crate::raft::read_batch::{self, ReadBatcher, RoundStats};
use crate::raft::typ::{CheckIsLeaderError, Raft, RaftMetrics};
use crate::raft::{node_id_of, Command, CommandResult, NodeId, NodeInfo};
use crate::store::events::{WatchError, Watcher};
use crate::store::state_machine::{BackupFile, KeyEntry, KvReader};
use crate::store::value::StoredValue;

/// How long a linearizable read may wait for its read index.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A leader that has not heard from a quorum for this long is not ready
/// (twice the longest election timeout).
const QUORUM_CONTACT_LIMIT_MS: u64 = 3000;

/// A member whose last answer to the leader is older than this is shown
/// unreachable: the longest election timeout, ten heartbeats.
const REACHABLE_LIMIT_MS: u64 = 1500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Read index from the leader, then a local read once applied that far.
    Linearizable,
    /// Local state, at once.
    Stale,
}

/// A member as shown by `/v1/cluster`.
#[derive(Debug, Clone)]
pub struct MemberStatus {
    pub info: NodeInfo,
    pub state: String,
    pub voter: bool,
    /// What the leader knows of it; `None` unless this node leads.
    pub progress: Option<Progress>,
}

/// A member's replication as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The member answered an AppendEntries (heartbeats included) within
    /// the last [`REACHABLE_LIMIT_MS`]; always true for the leader itself.
    pub reachable: bool,
    /// Milliseconds since its last answer; `None` if it has not answered
    /// this node yet. 0 for the leader itself.
    pub last_contact_ms: Option<u64>,
    /// The last log index known to be on the member.
    pub matched_index: Option<u64>,
    /// Entries the leader has that the member is not known to have.
    pub lag: u64,
}

/// What this node knows about itself, for `/v1/node`.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub info: NodeInfo,
    pub state: String,
    pub leader: Option<String>,
    pub term: u64,
    pub last_log_index: u64,
    pub last_applied: u64,
    pub member: bool,
    pub voter: bool,
}

pub struct Cete {
    pub info: NodeInfo,
    pub id: NodeId,
    pub raft: Raft,
    /// Packs concurrent writes into shared log entries.
    proposer: Proposer,
    reader: KvReader,
    peers: PeerClient,
    /// When each peer last answered this node's AppendEntries.
    contacts: Contacts,
    /// Applied index this node must reach before it calls itself ready.
    ready_after: u64,
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
    /// This node's Prometheus series (see `crate::metrics`).
    pub prometheus: crate::metrics::Metrics,
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

/// What one leadership confirmation gave, shared by the reads it serves.
#[derive(Debug, Clone, Copy)]
enum ReadIndex {
    At(u64),
    NotLeader,
    NoQuorum,
    Stopped,
}

/// One leadership confirmation: the read index, or why there is none.
async fn confirm_leadership(raft: Raft) -> ReadIndex {
    match raft.get_read_log_id().await {
        Ok((read, _)) => ReadIndex::At(read.map_or(0, |l| l.index)),
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => ReadIndex::NotLeader,
        Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => ReadIndex::NoQuorum,
        Err(RaftError::Fatal(_)) => ReadIndex::Stopped,
    }
}

/// Why a running node asks its runner to stop it and start it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Drop all state and wait to be added to another cluster.
    WipeForJoin,
    /// Start again with the state as it is.
    Keep,
}

/// The node error for a watch that cannot start or go on.
pub fn watch_error(err: WatchError) -> Error {
    match err {
        WatchError::Compacted { requested, oldest } => Error::Compacted { requested, oldest },
        WatchError::TooSlow => Error::WatcherTooSlow,
        WatchError::Closed => Error::ShuttingDown,
        WatchError::Storage(e) => Error::Storage(e),
    }
}

/// Marker left in the data directory of a removed node: it must not rejoin
/// with stale state.
pub const REMOVED_MARKER: &str = "REMOVED";

fn state_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "Leader",
        ServerState::Follower => "Follower",
        ServerState::Candidate => "Candidate",
        ServerState::Learner => "Learner",
        ServerState::Shutdown => "Shutdown",
    }
}

impl Cete {
    pub fn new(
        info: NodeInfo,
        raft: Raft,
        reader: KvReader,
        pool: ChannelPool,
        ready_after: u64,
        max_value_size: u64,
        data_directory: PathBuf,
    ) -> Cete {
        Cete {
            prometheus: crate::metrics::Metrics::new(reader.db().snapshot_metrics()),
            data_directory,
            removed: AtomicBool::new(false),
            removal_recorded: std::sync::Arc::new(tokio::sync::watch::channel(false).0),
            restart: tokio::sync::watch::channel(None).0,
            read_batch: ReadBatcher::new(read_batch::DEFAULT_ROUNDS),
            follower_read_batch: ReadBatcher::new(read_batch::DEFAULT_ROUNDS),
            id: node_id_of(&info.name),
            info,
            proposer: Proposer::start(raft.clone(), proposer::Limits::default()),
            raft,
            reader,
            contacts: pool.contacts(),
            peers: PeerClient::new(pool),
            ready_after,
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

    fn write_error(&self, err: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>) -> Error {
        match err {
            RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
                match (forward.leader_id, forward.leader_node) {
                    (Some(_), Some(node)) if node.name != self.info.name => {
                        Error::NotLeader(LeaderHint {
                            id: node.name,
                            http_address: node.http_address,
                            grpc_address: node.grpc_address,
                        })
                    }
                    _ => Error::NoLeader,
                }
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => match e {
                openraft::error::ChangeMembershipError::InProgress(_) => {
                    Error::MembershipChangeInProgress
                }
                other => Error::Conflict(other.to_string()),
            },
            // The entry may or may not have been replicated before Raft stopped.
            RaftError::Fatal(fatal) => Error::OutcomeUnknown(fatal.to_string()),
        }
    }

    /// Why Raft stopped, if a storage failure (disk full, read-only or
    /// failing disk) stopped it. openraft treats any storage error as fatal:
    /// the node then refuses writes and linearizable reads until it is
    /// restarted (stale reads still work), and its health checks say why.
    pub fn storage_failure(&self) -> Option<Error> {
        let fatal = self.raft.metrics().borrow().running_state.clone().err()?;
        let openraft::error::Fatal::StorageError(e) = fatal else {
            return None;
        };
        let message =
            format!("{e}; writes are refused until the node is restarted with the storage fixed");
        Some(if message.contains("No space left") {
            Error::StorageFull(message)
        } else {
            Error::Storage(message)
        })
    }

    /// Proposes a command and waits until it is applied.
    pub async fn write(&self, command: Command) -> Result<CommandResult> {
        // Raft is already stopped, so this write surely is not applied.
        if let Some(e) = self.storage_failure() {
            return Err(e);
        }
        match self.proposer.propose(command).await {
            Ok(result) => Ok(result),
            Err(ProposeError::Raft(err)) => Err(self.write_error(*err)),
            Err(ProposeError::Timeout(after)) => Err(Error::OutcomeUnknown(format!(
                "not committed within {}s",
                after.as_secs()
            ))),
            Err(ProposeError::Abandoned) => Err(Error::OutcomeUnknown(
                "Raft stopped before the write was answered".into(),
            )),
            Err(ProposeError::Stopped) => Err(Error::ShuttingDown),
        }
    }

    /// Proposals made and the commands they carried, for metrics.
    pub fn proposer_stats(&self) -> &proposer::ProposerStats {
        self.proposer.stats()
    }

    /// The log index a linearizable read must see, from this node if it
    /// leads, else from the leader over gRPC.
    async fn read_index(&self) -> Result<u64> {
        // Followers go to the leader at once, without a local round first.
        let leads = self.raft.metrics().borrow().current_leader == Some(self.id);
        if leads {
            match self.leader_read_index().await {
                Err(Error::NotLeader(_)) => {} // lost the leadership meanwhile
                other => return other,
            }
        }
        // One ReadIndex call serves every read queued before it was sent:
        // the leader confirms its leadership after receiving it.
        let (raft, peers) = (self.raft.clone(), self.peers.clone());
        self.follower_read_batch
            .run(move || {
                let (raft, peers) = (raft.clone(), peers.clone());
                async move {
                    match leader_hint_of(&raft) {
                        Some(leader) => peers.read_index(&leader.grpc_address).await,
                        None => Err(Error::NoLeader),
                    }
                }
            })
            .await
            .unwrap_or(Err(Error::ShuttingDown))
    }

    /// Serves as leader for its own reads: confirms leadership with a
    /// quorum and returns the index to wait for. Concurrent reads share
    /// confirmation rounds (see `read_batch`).
    async fn leader_read_index(&self) -> Result<u64> {
        let raft = self.raft.clone();
        let outcome = self
            .read_batch
            .run(move || confirm_leadership(raft.clone()))
            .await
            .unwrap_or(ReadIndex::Stopped);
        self.read_index_result(outcome)
    }

    /// Serves a follower's ReadIndex call: one confirmation round of its
    /// own. The follower already shares each call among its queued reads,
    /// so the call does not wait in this node's batcher a second time.
    pub async fn read_index_for_follower(&self) -> Result<u64> {
        let outcome = confirm_leadership(self.raft.clone()).await;
        self.read_index_result(outcome)
    }

    /// Rounds and reads of this node's linearizable-read batching: as leader
    /// (its own reads) and as follower (ReadIndex calls to the leader).
    pub fn read_round_stats(&self) -> [(&'static str, &RoundStats); 2] {
        [
            ("leader", self.read_batch.stats()),
            ("follower", self.follower_read_batch.stats()),
        ]
    }

    fn read_index_result(&self, outcome: ReadIndex) -> Result<u64> {
        match outcome {
            ReadIndex::At(index) => Ok(index),
            ReadIndex::NotLeader => Err(self.not_leader()),
            ReadIndex::NoQuorum => Err(Error::Timeout(
                "the leader could not confirm its leadership with a quorum".into(),
            )),
            ReadIndex::Stopped => Err(self.storage_failure().unwrap_or(Error::ShuttingDown)),
        }
    }

    pub async fn read_barrier(&self, consistency: Consistency) -> Result<()> {
        if consistency == Consistency::Stale {
            return Ok(());
        }
        if crate::faults::settings().local_reads {
            return Ok(()); // deliberately broken (test only, see faults.rs)
        }
        let index = tokio::time::timeout(READ_TIMEOUT, self.read_index())
            .await
            .map_err(|_| Error::Timeout("no read index from the leader in time".into()))??;
        self.raft
            .wait(Some(READ_TIMEOUT))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map_err(|e| {
                Error::Timeout(format!("not applied up to the read index {index}: {e}"))
            })?;
        Ok(())
    }

    pub async fn get(&self, key: Vec<u8>, consistency: Consistency) -> Result<Option<StoredValue>> {
        self.read_barrier(consistency).await?;
        self.reader
            .get(key)
            .await
            .map_err(|e| Error::Storage(e.to_string()))
    }

    pub async fn list(
        &self,
        prefix: Vec<u8>,
        start_after: Option<Vec<u8>>,
        limit: usize,
        consistency: Consistency,
    ) -> Result<(Vec<KeyEntry>, bool)> {
        self.read_barrier(consistency).await?;
        self.reader
            .list(prefix, start_after, limit)
            .await
            .map_err(|e| Error::Storage(e.to_string()))
    }

    /// Follows changes to keys starting with `prefix` from revision `start`
    /// (`None`: from now), as this node applies them: every node delivers
    /// the same events in the same order, each once it has applied them.
    pub async fn watch(&self, prefix: Vec<u8>, start: Option<u64>) -> Result<Watcher> {
        self.reader.watch(prefix, start).await.map_err(watch_error)
    }

    /// A point-in-time backup of the whole store in an unnamed temporary
    /// file; linearizable by default: it holds every write acknowledged
    /// before the call.
    pub async fn backup(&self, consistency: Consistency) -> Result<BackupFile> {
        self.read_barrier(consistency).await?;
        self.reader
            .write_backup()
            .await
            .map_err(|e| Error::Storage(format!("cannot write the backup: {e}")))
    }

    pub fn node_status(&self) -> NodeStatus {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let member = membership.get_node(&self.id).is_some();
        let voter = membership.voter_ids().any(|id| id == self.id);
        let removed = self.removed.load(Ordering::SeqCst);
        let member = member && !removed;
        let voter = voter && !removed;
        // Not being in the membership is not removal by itself: a joining node
        // catches up through configurations from before its join.
        let state = if removed {
            "Removed"
        } else {
            state_name(m.state)
        };
        NodeStatus {
            info: self.info.clone(),
            state: state.to_string(),
            leader: self.leader_hint().map(|h| h.id),
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            last_applied: m.last_applied.map_or(0, |l| l.index),
            member,
            voter,
        }
    }

    /// The highest log index this node knows to be committed. It lives in
    /// Raft's own state (openraft 0.9's metrics do not carry it); a stopped
    /// Raft answers with its applied index, the best it still knows.
    pub async fn commit_index(&self) -> u64 {
        let committed = self
            .raft
            .with_raft_state(|state| state.committed.map(|l| l.index))
            .await
            .ok()
            .flatten();
        committed
            .or(self.metrics().last_applied.map(|l| l.index))
            .unwrap_or(0)
    }

    /// Every member from the replicated membership, with its role as this
    /// node sees it, and on the leader each member's replication progress.
    pub fn cluster_status(&self) -> (BTreeMap<String, MemberStatus>, Option<String>) {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let last_log = m.last_log_index.unwrap_or(0);
        let now = std::time::Instant::now();
        let progress_of = |id: NodeId| -> Option<Progress> {
            let replication = m.replication.as_ref()?;
            if id == self.id {
                return Some(Progress {
                    reachable: true,
                    last_contact_ms: Some(0),
                    matched_index: m.last_log_index,
                    lag: 0,
                });
            }
            let matched_index = replication.get(&id).copied().flatten().map(|l| l.index);
            let last_contact_ms = self
                .contacts
                .last_answer(id)
                .map(|at| now.saturating_duration_since(at).as_millis() as u64);
            Some(Progress {
                reachable: last_contact_ms.is_some_and(|ms| ms <= REACHABLE_LIMIT_MS),
                last_contact_ms,
                matched_index,
                lag: last_log.saturating_sub(matched_index.unwrap_or(0)),
            })
        };
        let mut nodes = BTreeMap::new();
        for (id, info) in membership.nodes() {
            let voter = voters.contains(id);
            let state = if Some(*id) == m.current_leader {
                "Leader"
            } else if voter {
                "Follower"
            } else {
                "Learner"
            };
            nodes.insert(
                info.name.clone(),
                MemberStatus {
                    info: info.clone(),
                    state: state.to_string(),
                    voter,
                    progress: progress_of(*id),
                },
            );
        }
        (nodes, self.leader_hint().map(|h| h.id))
    }

    /// Ready: a leader is known and everything committed before start is applied.
    pub fn readiness(&self) -> std::result::Result<(), String> {
        if let Some(e) = self.storage_failure() {
            return Err(e.to_string());
        }
        let m = self.metrics();
        if m.current_leader.is_none() {
            return Err("no known leader".into());
        }
        if m.current_leader == Some(self.id) {
            // A leader cut off from its quorum cannot serve; say so before
            // an election elsewhere does.
            match m.millis_since_quorum_ack {
                Some(ms) if ms <= QUORUM_CONTACT_LIMIT_MS => {}
                Some(ms) => {
                    return Err(format!(
                        "the leader has not heard from a quorum for {ms} ms"
                    ))
                }
                None => return Err("the leader has not yet heard from a quorum".into()),
            }
        }
        let applied = m.last_applied.map_or(0, |l| l.index);
        if applied < self.ready_after {
            return Err(format!(
                "applied index {applied} is behind the commit index {} known at startup",
                self.ready_after
            ));
        }
        Ok(())
    }

    /// Adds `node` as a learner, lets it catch up, then promotes it to voter.
    /// Idempotent for a member that joins again with the same addresses.
    pub async fn join(&self, node: NodeInfo) -> Result<()> {
        let id = node_id_of(&node.name);
        let m = self.metrics();
        if m.current_leader != Some(self.id) {
            return Err(self.not_leader());
        }
        let membership = m.membership_config.membership();
        if let Some(existing) = membership.get_node(&id) {
            if existing.name != node.name {
                return Err(Error::Conflict(format!(
                    "node id '{}' collides with member '{}'; choose another id",
                    node.name, existing.name
                )));
            }
            if existing != &node {
                return Err(Error::Conflict(format!(
                    "node '{}' is already a member with other addresses ({existing}); remove it first",
                    node.name
                )));
            }
            if membership.voter_ids().any(|v| v == id) {
                return Ok(());
            }
        } else {
            log::info!("adding {node} as a learner");
            self.raft
                .add_learner(id, node.clone(), true)
                .await
                .map_err(|e| self.write_error(e))?;
        }
        log::info!("promoting {} to voter", node.name);
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|e| self.write_error(e))?;
        Ok(())
    }

    /// Removes a member (voter or learner). The leader may remove itself:
    /// leadership moves on once the new configuration commits.
    pub async fn leave(&self, name: &str) -> Result<()> {
        let id = node_id_of(name);
        let m = self.metrics();
        if m.current_leader != Some(self.id) {
            return Err(self.not_leader());
        }
        let membership = m.membership_config.membership();
        if membership.get_node(&id).is_none() {
            return Err(Error::NodeNotFound(name.to_string()));
        }
        let removed_node = membership.get_node(&id).cloned();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if voters.contains(&id) {
            let remaining: BTreeSet<NodeId> = voters.iter().copied().filter(|v| *v != id).collect();
            if remaining.is_empty() {
                return Err(Error::QuorumLoss("cannot remove the last voter".into()));
            }
            self.check_quorum_after(&m, &remaining)?;
            self.raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                .await
                .map_err(|e| self.write_error(e))?;
        } else {
            self.raft
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                .await
                .map_err(|e| self.write_error(e))?;
        }
        if id == self.id {
            self.mark_removed();
        } else if let Some(node) = removed_node {
            // Best effort: a removed node that misses this still stops
            // receiving anything from the cluster.
            let peers = self.peers.clone();
            tokio::spawn(async move {
                if let Err(e) = peers.notify_removed(&node.grpc_address, &node.name).await {
                    log::warn!("could not tell {} it was removed: {e}", node.name);
                }
            });
        }
        Ok(())
    }

    /// Stops this node taking part after its removal, and remembers it
    /// across restarts.
    pub fn mark_removed(&self) {
        if self.removed.swap(true, Ordering::SeqCst) {
            return;
        }
        log::warn!(
            "node {} was removed from the cluster; raft stops here",
            self.info.name
        );
        let marker = self.data_directory.join(REMOVED_MARKER);
        let raft = self.raft.clone();
        let recorded = self.removal_recorded.clone();
        tokio::spawn(async move {
            if let Err(e) = tokio::fs::write(marker, b"removed\n").await {
                log::error!("cannot write the removal marker: {e}");
            }
            recorded.send_replace(true);
            // Give the reply to the membership change time to leave first.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = raft.shutdown().await;
        });
    }

    /// Refuses a change whose new voter set has no live majority, as far as
    /// the leader's replication progress tells.
    fn check_quorum_after(&self, m: &RaftMetrics, remaining: &BTreeSet<NodeId>) -> Result<()> {
        let Some(replication) = &m.replication else {
            return Ok(());
        };
        let last = m.last_log_index.unwrap_or(0);
        let live = remaining
            .iter()
            .filter(|id| {
                **id == self.id
                    || replication
                        .get(id)
                        .and_then(|matched| *matched)
                        .is_some_and(|matched| matched.index + 1000 >= last)
            })
            .count();
        if live * 2 <= remaining.len() {
            return Err(Error::QuorumLoss(format!(
                "only {live} of the {} remaining voters are in contact with the leader",
                remaining.len()
            )));
        }
        Ok(())
    }

    /// Resolves once the node asks to be started again (see `Restart`).
    pub async fn restart_requested(&self) -> Restart {
        let mut requests = self.restart.subscribe();
        let request = match requests.wait_for(Option::is_some).await {
            Ok(request) => request.expect("waited for Some"),
            Err(_) => return std::future::pending().await,
        };
        request
    }

    /// Called on a node by the leader of a cluster that wants to add it. A
    /// node that this cluster removed drops its stale state (see `prepare_rejoin`). A
    /// node in no cluster yet is ready as it is. A one-node cluster that holds no keys stops Raft and
    /// asks to be restarted empty, waiting to be added. Anything else is
    /// refused: a member of a bigger cluster, or a node with data (joining
    /// would discard it).
    pub async fn prepare_join(&self, leader: &str) -> Result<()> {
        // The leader's removal notice may not have arrived yet: ask it.
        if !self.removed.load(Ordering::SeqCst) {
            self.check_removed_by(leader).await;
        }
        if self.removed.load(Ordering::SeqCst) {
            return self.prepare_rejoin(leader).await;
        }
        self.check_standalone()?;
        if self.metrics().membership_config.log_id().is_none() {
            // Not part of any cluster yet: ready to be added as it is.
            return Ok(());
        }
        self.check_empty().await?;
        // Stop Raft before the last check, so that no write can be
        // acknowledged between the check and the wipe.
        if let Err(e) = self.raft.shutdown().await {
            log::warn!("raft shutdown: {e}");
        }
        if let Err(e) = self.check_empty().await {
            self.restart.send_replace(Some(Restart::Keep));
            return Err(e);
        }
        log::warn!(
            "node {} drops its one-node cluster to join the cluster of {leader}",
            self.info.name
        );
        self.restart.send_replace(Some(Restart::WipeForJoin));
        Ok(())
    }

    /// A removed node that its own cluster adds back: its state is a stale copy of what the
    /// cluster holds, so it drops it, starts again empty in place and catches up from the
    /// leader (through a snapshot once the log is compacted). Another cluster may not take it:
    /// that would discard the only copy of data the other cluster may not have.
    async fn prepare_rejoin(&self, leader: &str) -> Result<()> {
        let m = self.metrics();
        let members: Vec<String> = m
            .membership_config
            .membership()
            .nodes()
            .map(|(_, n)| n.name.clone())
            .filter(|n| *n != self.info.name)
            .collect();
        if !members.iter().any(|n| n == leader) {
            return Err(Error::Conflict(format!(
                "node '{}' was removed from the cluster of {}, not of {leader}; to move it, back it up, then restart it with an empty data directory and --peer-grpc-address",
                self.info.name,
                members.join(", ")
            )));
        }
        let mut recorded = self.removal_recorded.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(10), recorded.wait_for(|r| *r)).await;
        // Raft stopped at the removal, or stops now: nothing runs on the old state.
        if let Err(e) = self.raft.shutdown().await {
            log::debug!("raft shutdown: {e}");
        }
        log::warn!(
            "node {} was removed and {leader} adds it back: it drops its state and joins again",
            self.info.name
        );
        self.restart.send_replace(Some(Restart::WipeForJoin));
        Ok(())
    }

    /// Marks this node removed if `leader`, a member of its configuration, has committed one
    /// without it (the same test as [`Cete::detect_removal_while_down`]).
    async fn check_removed_by(&self, leader: &str) {
        let m = self.metrics();
        let Some(leader) = m
            .membership_config
            .membership()
            .nodes()
            .find(|(id, n)| **id != self.id && n.name == leader)
            .map(|(_, n)| n.clone())
        else {
            return;
        };
        let Ok(ours) = self.reader.applied_membership().await else {
            return;
        };
        let ours = ours.log_id().map_or(0, |l| l.index);
        if let Ok((index, members)) = self.peers.membership(&leader.grpc_address).await {
            if index > ours && !members.contains(&self.info.name) {
                self.mark_removed();
            }
        }
    }

    /// Asks the standalone node `name` at `grpc_address` to drop its
    /// one-node cluster, so that this leader can add it.
    pub async fn prepare_remote_join(&self, grpc_address: &str, name: &str) -> Result<()> {
        self.peers
            .prepare_join(grpc_address, name, &self.info.name)
            .await
    }

    fn check_standalone(&self) -> Result<()> {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let others: Vec<String> = membership
            .nodes()
            .filter(|(id, _)| **id != self.id)
            .map(|(_, n)| n.name.clone())
            .collect();
        if !others.is_empty() {
            return Err(Error::Conflict(format!(
                "node '{}' is a member of a cluster with {}; remove it there first",
                self.info.name,
                others.join(", ")
            )));
        }
        Ok(())
    }

    async fn check_empty(&self) -> Result<()> {
        let (_, holds_keys) = self
            .reader
            .list(Vec::new(), None, 0)
            .await
            .map_err(|e| Error::Storage(e.to_string()))?;
        if holds_keys {
            return Err(Error::Conflict(format!(
                "node '{}' holds data that joining would discard; back it up, then restart it with an empty data directory and --peer-grpc-address",
                self.info.name
            )));
        }
        Ok(())
    }

    /// The latest committed membership this node has applied (log index,
    /// member names).
    pub async fn known_membership(&self) -> Result<(u64, Vec<String>)> {
        let committed = self
            .reader
            .applied_membership()
            .await
            .map_err(|e| Error::Storage(e.to_string()))?;
        let index = committed.log_id().map_or(0, |l| l.index);
        let names = committed
            .membership()
            .nodes()
            .map(|(_, n)| n.name.clone())
            .collect();
        Ok((index, names))
    }

    /// A node that was down while the cluster removed it never receives the
    /// configuration without it, and would campaign forever. While it has no
    /// leader, it asks the other members of its last committed configuration
    /// which configuration they know; one committed later that leaves this
    /// node out means it was removed.
    pub async fn detect_removal_while_down(&self) {
        let mut leaderless_since = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let m = self.metrics();
            let stopped = self.raft.metrics().has_changed().is_err();
            if stopped || self.removed.load(Ordering::SeqCst) || m.state == ServerState::Shutdown {
                return;
            }
            if m.current_leader.is_some() {
                leaderless_since = tokio::time::Instant::now();
                continue;
            }
            if leaderless_since.elapsed() < Duration::from_secs(3) {
                continue;
            }
            let Ok(committed) = self.reader.applied_membership().await else {
                continue;
            };
            let ours = committed.log_id().map_or(0, |l| l.index);
            let others: Vec<NodeInfo> = committed
                .membership()
                .nodes()
                .filter(|(id, _)| **id != self.id)
                .map(|(_, n)| n.clone())
                .collect();
            for other in others {
                match self.peers.membership(&other.grpc_address).await {
                    Ok((index, members)) if index > ours && !members.contains(&self.info.name) => {
                        log::warn!(
                            "{} reports a configuration at index {index} without this node",
                            other.name
                        );
                        self.mark_removed();
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => log::debug!("membership of {}: {e}", other.name),
                }
            }
        }
    }

    /// Asks the node at `grpc_address` who it is, for joins by address.
    pub async fn fetch_node_info(&self, grpc_address: &str) -> Result<(NodeInfo, String)> {
        self.peers.node_info(grpc_address).await
    }

    /// Builds a Raft snapshot now (which purges the log behind it).
    pub async fn trigger_snapshot(&self) -> Result<u64> {
        let before = self.metrics().snapshot.map(|l| l.index);
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|_| Error::ShuttingDown)?;
        let applied = self.metrics().last_applied.map(|l| l.index);
        if applied.is_none() || applied == before {
            return Ok(before.unwrap_or(0));
        }
        let m = self
            .raft
            .wait(Some(Duration::from_secs(60)))
            .metrics(|m| m.snapshot.map(|l| l.index) >= applied, "snapshot built")
            .await
            .map_err(|e| Error::Timeout(e.to_string()))?;
        Ok(m.snapshot.map_or(0, |l| l.index))
    }
}
