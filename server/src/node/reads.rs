//! Linearizable reads: a read index from a leadership confirmation shared
//! by concurrent reads, or from the leader for a follower.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Read index from the leader, then a local read once applied that far.
    Linearizable,
    /// Local state, at once.
    Stale,
}

/// What one leadership confirmation gave, shared by the reads it serves.
#[derive(Debug, Clone, Copy)]
pub(super) enum ReadIndex {
    /// The index, and the term this node was in before it asked.
    At {
        index: u64,
        term_before: u64,
    },
    NotLeader,
    NoQuorum,
    Stopped,
}

/// One leadership confirmation: the read index, or why there is none.
pub(super) async fn confirm_leadership(raft: Raft) -> ReadIndex {
    let term_before = raft.metrics().borrow().current_term;
    match raft.get_read_log_id().await {
        Ok((read, _)) => ReadIndex::At {
            index: read.map_or(0, |l| l.index),
            term_before,
        },
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => ReadIndex::NotLeader,
        Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => ReadIndex::NoQuorum,
        Err(RaftError::Fatal(_)) => ReadIndex::Stopped,
    }
}

/// How long a linearizable read may wait for its read index.
pub(super) const READ_TIMEOUT: Duration = Duration::from_secs(5);

impl Node {
    /// The log index a linearizable read must see, from this node if it
    /// leads, else from the leader over gRPC.
    pub(super) async fn read_index(&self) -> Result<u64> {
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
    pub(super) async fn leader_read_index(&self) -> Result<u64> {
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
    /// The entries up to the index are on this node's disk before it
    /// answers: the follower may read what they wrote at once, and a
    /// leader's own entries can be committed before they are synced.
    pub async fn read_index_for_follower(&self) -> Result<u64> {
        let outcome = confirm_leadership(self.raft.clone()).await;
        let index = self.read_index_result(outcome)?;
        self.reader
            .durability()
            .wait_synced(index)
            .await
            .map_err(|e| {
                self.storage_failure()
                    .unwrap_or(Error::Storage(e.to_string()))
            })?;
        Ok(index)
    }

    /// Rounds and reads of this node's linearizable-read batching: as leader
    /// (its own reads) and as follower (ReadIndex calls to the leader).
    pub fn read_round_stats(&self) -> [(&'static str, &RoundStats); 2] {
        [
            ("leader", self.read_batch.stats()),
            ("follower", self.follower_read_batch.stats()),
        ]
    }

    /// openraft 0.9 restores a restarted leader at once, in the term it
    /// led, with the commit index its storage gave back: the saved hint or
    /// the state machine's flushed last-applied id, both possibly behind
    /// writes it acknowledged before the crash. Its read index (the first
    /// entry of its term, or that commit index) could then miss them; the
    /// last entry in the log at startup covers them. A later term starts
    /// with an election, whose first entry comes after every acknowledged
    /// write (and the log may since have been cut below that last entry).
    /// `term_before` was read before the index was asked for: the index is
    /// of that term or a later one.
    fn restored_leader_read_index(&self, index: u64, term_before: u64) -> u64 {
        if term_before <= self.recovered.term {
            index.max(self.recovered.last_log)
        } else {
            index
        }
    }

    pub(super) fn read_index_result(&self, outcome: ReadIndex) -> Result<u64> {
        match outcome {
            ReadIndex::At { index, term_before } => {
                Ok(self.restored_leader_read_index(index, term_before))
            }
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
}
