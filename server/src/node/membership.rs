//! Joining and leaving: membership changes through the leader, the checks
//! before a node joins, and noticing a removal.

use super::*;

impl Node {
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

    /// Refuses a change whose new voter set has no live majority, as far as
    /// the leader's replication progress tells.
    pub(super) fn check_quorum_after(
        &self,
        m: &RaftMetrics,
        remaining: &BTreeSet<NodeId>,
    ) -> Result<()> {
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
    pub(super) async fn prepare_rejoin(&self, leader: &str) -> Result<()> {
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
    pub(super) async fn check_removed_by(&self, leader: &str) {
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

    pub(super) fn check_standalone(&self) -> Result<()> {
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

    pub(super) async fn check_empty(&self) -> Result<()> {
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

    /// Asks the node at `grpc_address` who it is, for joins by address.
    pub async fn fetch_node_info(&self, grpc_address: &str) -> Result<(NodeInfo, String)> {
        self.peers.node_info(grpc_address).await
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

    /// Watches the replicated membership: once a configuration that was
    /// committed without this node arrives, the node stops taking part, even if
    /// the leader's removal notice never reached it.
    pub async fn stop_when_removed(self: Arc<Self>) {
        let mut metrics = self.raft.metrics();
        let mut was_member = false;
        loop {
            let removed = {
                let m = metrics.borrow_and_update();
                let member = m
                    .membership_config
                    .membership()
                    .get_node(&self.id)
                    .is_some();
                // A joining node can first see a configuration from before it was
                // added (the one in a snapshot from the leader, when the log
                // behind it is purged): only leaving one it was in counts.
                was_member |= member;
                was_member && !member && m.membership_config.log_id().is_some()
            };
            if removed {
                self.mark_removed();
                return;
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    }

    /// Asks `peer` to add this node until it is a member (or the node stops).
    pub async fn join_until_member(
        self: Arc<Self>,
        peer: String,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut delay = Duration::from_millis(200);
        loop {
            if self.node_status().voter {
                return;
            }
            match self.peers.join(&peer, &self.info).await {
                Ok(()) => {
                    log::info!("joined the cluster through {peer}");
                    return;
                }
                Err(e) => {
                    // A refused certificate shows only as an unreachable peer.
                    let tls = match e {
                        Error::PeerUnavailable(_) => self.peers.diagnose_tls(&peer).await,
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
}
