//! Writes through the proposer, and the reads, watches and backups that
//! wait at the right point of the log first.

use super::*;

/// The node error for a watch that cannot start or go on.
pub fn watch_error(err: WatchError) -> Error {
    match err {
        WatchError::Compacted { requested, oldest } => Error::Compacted { requested, oldest },
        WatchError::TooSlow => Error::WatcherTooSlow,
        WatchError::Closed => Error::ShuttingDown,
        WatchError::Storage(e) => Error::Storage(e),
    }
}

impl Node {
    pub(super) fn write_error(
        &self,
        err: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>,
    ) -> Error {
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
}
