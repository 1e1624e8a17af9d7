//! `cete-server --restore FILE`: a new one-node cluster from a backup.
//!
//! As `etcdutl snapshot restore` does, and only on an empty data directory:
//! the backup (a snapshot file, see `snapshot`) is verified in full, then
//! written as this node's state machine with last applied = the backup's log
//! id, its revision, and this node alone as voter; the Raft log is marked
//! purged up to that log id and the vote set to this node in its term.
//! openraft then starts an initialized one-node cluster whose log continues
//! after the backup's log id, and whose revisions continue after the
//! backup's revision. Other nodes join it as usual.
//!
//! Crash safety: a marker file is written (and synced) before anything else
//! and removed last. A data directory that still holds it refuses to start
//! (see [`check_no_interrupted_restore`]); a restore that fails cleanly
//! removes what it wrote.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use openraft::Membership;
use thiserror::Error;

use super::snapshot::{self, SnapshotError};
use super::{log, state_machine, Db, StoreError};
use crate::command::typ::{LogId, StoredMembership, Vote};
use crate::command::{NodeId, NodeInfo};

/// Present in a data directory while a restore writes it.
pub const RESTORE_MARKER: &str = "RESTORING";

#[derive(Debug, Error)]
pub enum RestoreError {
    #[error(
        "the data directory {0} is not empty; --restore needs a new or empty directory \
         (it starts a new cluster)"
    )]
    NotEmpty(PathBuf),
    #[error(
        "the data directory {0} holds an interrupted restore ({RESTORE_MARKER} is present); \
         delete the directory and restore again"
    )]
    Interrupted(PathBuf),
    #[error("backup {path} refused: {reason}")]
    Backup {
        path: PathBuf,
        reason: SnapshotError,
    },
    #[error("backup {0} refused: it holds no revision (taken from an uninitialized node)")]
    NoRevision(PathBuf),
    #[error("restoring into {path} failed: {detail}")]
    Failed { path: PathBuf, detail: String },
}

/// What a restore wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// The backup's revision; new writes get higher ones.
    pub revision: u64,
    /// Keys restored.
    pub keys: u64,
}

/// Refuses a data directory left by a restore that did not finish.
pub fn check_no_interrupted_restore(data_directory: &Path) -> Result<(), RestoreError> {
    if data_directory.join(RESTORE_MARKER).exists() {
        return Err(RestoreError::Interrupted(data_directory.to_path_buf()));
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Restores the backup at `backup` into the empty (or missing)
/// `data_directory` as node `id` described by `info`. Blocking.
pub fn restore(
    data_directory: &Path,
    backup: &Path,
    id: NodeId,
    info: NodeInfo,
) -> Result<Restored, RestoreError> {
    let failed = |detail: String| RestoreError::Failed {
        path: data_directory.to_path_buf(),
        detail,
    };
    match std::fs::read_dir(data_directory) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                check_no_interrupted_restore(data_directory)?;
                return Err(RestoreError::NotEmpty(data_directory.to_path_buf()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed(e.to_string())),
    }
    let refused = |reason: SnapshotError| RestoreError::Backup {
        path: backup.to_path_buf(),
        reason,
    };
    let (header, _) = snapshot::verify(backup).map_err(refused)?;
    let revision = header.revision;
    let last = header
        .meta
        .last_log_id
        .ok_or_else(|| RestoreError::NoRevision(backup.to_path_buf()))?;

    let marker = data_directory.join(RESTORE_MARKER);
    let mark = || -> std::io::Result<()> {
        std::fs::create_dir_all(data_directory)?;
        std::fs::File::create(&marker)?.sync_all()?;
        sync_dir(data_directory)?;
        if let Some(parent) = data_directory
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            sync_dir(parent)?;
        }
        Ok(())
    };
    mark().map_err(|e| failed(format!("cannot write {}: {e}", marker.display())))?;

    match fill(data_directory, backup, last, revision, id, info) {
        Ok(keys) => {
            std::fs::remove_file(&marker)
                .and_then(|()| sync_dir(data_directory))
                .map_err(|e| failed(format!("cannot remove {}: {e}", marker.display())))?;
            Ok(Restored { revision, keys })
        }
        Err(e) => {
            // Leave an empty directory; if that fails the marker stays and
            // keeps the half-written directory from starting.
            let cleaned = std::fs::read_dir(data_directory).and_then(|entries| {
                for entry in entries.flatten() {
                    let path = entry.path();
                    if path != marker {
                        if path.is_dir() {
                            std::fs::remove_dir_all(&path)?;
                        } else {
                            std::fs::remove_file(&path)?;
                        }
                    }
                }
                std::fs::remove_file(&marker)
            });
            if let Err(clean) = cleaned {
                ::log::error!("cannot clean up the failed restore: {clean}");
            }
            Err(match e {
                FillError::Backup(source) => refused(source),
                FillError::Store(detail) => failed(detail),
            })
        }
    }
}

enum FillError {
    Backup(SnapshotError),
    Store(String),
}

impl From<StoreError> for FillError {
    fn from(e: StoreError) -> Self {
        FillError::Store(e.to_string())
    }
}

fn fill(
    data_directory: &Path,
    backup: &Path,
    last: LogId,
    revision: u64,
    id: NodeId,
    info: NodeInfo,
) -> Result<u64, FillError> {
    let db = Db::open(data_directory)?;
    let membership = StoredMembership::new(
        Some(last),
        Membership::new(vec![BTreeSet::from([id])], BTreeMap::from([(id, info)])),
    );
    // The backup is read again here: a file changed since it was verified
    // fails its checksum now, and the marker keeps the result from starting.
    let keys = state_machine::restore_from_backup(&db, backup, last, revision, membership)
        .map_err(|e| match e {
            SnapshotError::Io(io) => FillError::Store(io.to_string()),
            other => FillError::Backup(other),
        })?;
    log::write_restored_state(&db, last, Vote::new(last.leader_id.term, id))?;
    // Dropping the last handle closes RocksDB before the node opens it again.
    drop(db);
    Ok(keys)
}
