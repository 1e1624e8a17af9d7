//! What the node says of itself and its cluster: `/v1/node`, `/v1/cluster`,
//! readiness and storage health.

use super::*;

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

pub(super) fn state_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "Leader",
        ServerState::Follower => "Follower",
        ServerState::Candidate => "Candidate",
        ServerState::Learner => "Learner",
        ServerState::Shutdown => "Shutdown",
    }
}

/// A leader that has not heard from a quorum for this long is not ready
/// (twice the longest election timeout).
pub(super) const QUORUM_CONTACT_LIMIT_MS: u64 = 3000;

/// A member whose last answer to the leader is older than this is shown
/// unreachable: the longest election timeout, ten heartbeats.
pub(super) const REACHABLE_LIMIT_MS: u64 = 1500;

impl Node {
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
        if applied < self.recovered.committed {
            return Err(format!(
                "applied index {applied} is behind the commit index {} known at startup",
                self.recovered.committed
            ));
        }
        Ok(())
    }
}
