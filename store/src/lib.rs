//! RocksDB storage of one node: the Raft log and vote (`log`), the key-value
//! state machine (`state_machine`) and snapshot files (`snapshot`), with what
//! the log carries (`command`) and how records are encoded (`codec`).
//!
//! A crate of its own so that the compiler keeps storage from reaching up:
//! it depends on `cete-types` and openraft, never on the node, the API,
//! metrics or configuration.
//!
//! One database per node, one column family per role:
//! - `logs`: Raft entries keyed by big-endian u64 index, so iteration is in log order;
//! - `raft`: vote, committed log id, last purged log id;
//! - `data`: the key-value state machine (see `value` for the encoding);
//! - `meta`: state-machine metadata (last applied log id, membership, current snapshot);
//! - `events`: the recent change history for watches, keyed by big-endian revision;
//! - `expiry`: an index of the keys that expire, keyed by big-endian deadline and key, so
//!   the leader finds the due ones in order (derived from `data`: snapshots do not carry it).

// openraft's storage traits return its StorageError by value; it is large by design.
#![allow(clippy::result_large_err)]

pub mod codec;
pub mod command;
pub mod durability;
pub mod events;
pub mod log;
pub mod restore;
pub mod snapshot;
pub mod state_machine;
pub mod stats;
pub mod value;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, IteratorMode, Options, DB};
use thiserror::Error;

pub use self::log::LogStore;
pub use self::state_machine::StateMachine;
pub use self::stats::SnapshotMetrics;

pub const CF_LOGS: &str = "logs";
pub const CF_RAFT: &str = "raft";
pub const CF_DATA: &str = "data";
pub const CF_META: &str = "meta";
pub const CF_EVENTS: &str = "events";
pub const CF_EXPIRY: &str = "expiry";

/// The layout of a data directory this build reads and writes, recorded in
/// the `meta` column family. Format 1 (no record) used bincode and log
/// indexes as revisions; format 2 uses `codec` records and the state
/// machine's own revisions.
pub const STORAGE_FORMAT: u32 = 2;
const KEY_STORAGE_FORMAT: &[u8] = b"storage_format";

/// All memtables of the database together, at most.
const MEMTABLE_BUDGET: usize = 32 << 20;
/// One memtable of one column family, at most.
const MEMTABLE_PER_FAMILY: usize = 8 << 20;
/// The block cache every column family shares.
const BLOCK_CACHE: usize = 16 << 20;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot open the data directory {path}: {source}")]
    Open {
        path: PathBuf,
        source: rocksdb::Error,
    },
    #[error("cannot create {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("storage error: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt record in {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    /// The data directory must not be opened as it is (e.g. an interrupted restore).
    #[error("{0}")]
    Unusable(String),
    #[error(
        "the data directory {path} holds storage format {found}, written by an older Cete; \
         this build reads format {STORAGE_FORMAT}: take a backup with the old build \
         (cete snapshot save FILE), then start this one on an empty directory with --restore FILE"
    )]
    OldFormat { path: PathBuf, found: u32 },
}

/// RocksDB, and a signal that goes once it is closed. Fields drop in
/// order: `closed` only after `rocks` has finished closing (its last flush
/// writes files), while an `Arc`'s strong count is already 0 while the
/// drop runs.
struct Open {
    rocks: DB,
    closed: tokio::sync::watch::Sender<()>,
}

/// The open database, shared by the log store and the state machine.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Open>,
    dir: PathBuf,
    snapshot_metrics: Arc<SnapshotMetrics>,
    /// Held while a snapshot file is put in place, recorded as the current
    /// one and the others removed: a snapshot built while another is
    /// installed (they run in separate openraft tasks) must not remove or
    /// replace the other's files halfway.
    snapshot_files: Arc<std::sync::Mutex<()>>,
}

impl Db {
    pub fn open(data_directory: &Path) -> Result<Db, StoreError> {
        let db_dir = data_directory.join("db");
        for dir in [data_directory.to_path_buf(), snapshot_dir(data_directory)] {
            std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
                path: dir.clone(),
                source,
            })?;
        }
        // A database whose CURRENT file exists was written before: it must
        // say which format it holds.
        let existed = db_dir.join("CURRENT").exists();
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Writes of the log are synced explicitly; this keeps a torn WAL tail
        // (a crash mid-write) from refusing to open: it is dropped, as it was
        // never acknowledged.
        opts.set_wal_recovery_mode(rocksdb::DBRecoveryMode::PointInTime);
        opts.set_keep_log_file_num(4);
        // The state machine's writes skip the write-ahead log (see
        // `state_machine::unlogged`): its families must reach files together.
        opts.set_atomic_flush(true);
        // A memory budget instead of RocksDB's per-family defaults (a 64 MiB
        // memtable, up to two, and an 8 MiB block cache for each of six
        // families): all memtables together stay under 32 MiB, flushed
        // early when they reach it, and every family shares one block cache.
        opts.set_db_write_buffer_size(MEMTABLE_BUDGET);
        let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE);
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_block_cache(&cache);
        // A point read then skips the files that cannot hold its key: with
        // many keys a write's read of the old value and a GET otherwise
        // search every level-0 file (about 1.2 bytes a key).
        table.set_bloom_filter(10.0, false);
        let cfs = [CF_LOGS, CF_RAFT, CF_DATA, CF_META, CF_EVENTS, CF_EXPIRY]
            .into_iter()
            .map(|name| {
                let mut cf = Options::default();
                cf.set_write_buffer_size(MEMTABLE_PER_FAMILY);
                cf.set_block_based_table_factory(&table);
                ColumnFamilyDescriptor::new(name, cf)
            });
        let inner =
            DB::open_cf_descriptors(&opts, &db_dir, cfs).map_err(|source| StoreError::Open {
                path: db_dir.clone(),
                source,
            })?;
        let db = Db {
            inner: Arc::new(Open {
                rocks: inner,
                closed: tokio::sync::watch::channel(()).0,
            }),
            dir: data_directory.to_path_buf(),
            snapshot_metrics: Arc::default(),
            snapshot_files: Arc::default(),
        };
        db.check_format(existed)?;
        Ok(db)
    }

    fn is_empty(&self) -> Result<bool, StoreError> {
        for name in [CF_LOGS, CF_RAFT, CF_DATA, CF_META, CF_EVENTS, CF_EXPIRY] {
            if let Some(item) = self
                .rocks()
                .iterator_cf(self.cf(name), IteratorMode::Start)
                .next()
            {
                item?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Refuses a database of another storage format; records the format in a new one.
    fn check_format(&self, existed: bool) -> Result<(), StoreError> {
        let meta = self.cf(CF_META);
        match self.rocks().get_cf(meta, KEY_STORAGE_FORMAT)? {
            Some(raw) => {
                let found = raw
                    .as_slice()
                    .try_into()
                    .map(u32::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        what: "storage format",
                        detail: format!("{} bytes", raw.len()),
                    })?;
                if found == STORAGE_FORMAT {
                    return Ok(());
                }
                Err(StoreError::OldFormat {
                    path: self.dir.clone(),
                    found,
                })
            }
            // (An empty one is new: a crash came before its format was recorded.)
            None if existed && !self.is_empty()? => Err(StoreError::OldFormat {
                path: self.dir.clone(),
                found: 1,
            }),
            None => {
                let mut sync = rocksdb::WriteOptions::default();
                sync.set_sync(true);
                self.rocks().put_cf_opt(
                    meta,
                    KEY_STORAGE_FORMAT,
                    STORAGE_FORMAT.to_be_bytes(),
                    &sync,
                )?;
                Ok(())
            }
        }
    }

    /// Waits until the database is closed: every handle dropped and RocksDB
    /// done writing its files. Does not keep it open.
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut closed = self.inner.closed.subscribe();
        async move {
            // Nothing is ever sent: this ends when the sender is dropped.
            while closed.changed().await.is_ok() {}
        }
    }

    pub fn rocks(&self) -> &DB {
        &self.inner.rocks
    }

    pub fn cf(&self, name: &'static str) -> &ColumnFamily {
        self.rocks()
            .cf_handle(name)
            .expect("column families are created at open")
    }

    pub fn data_directory(&self) -> &Path {
        &self.dir
    }

    pub fn snapshot_dir(&self) -> PathBuf {
        snapshot_dir(&self.dir)
    }

    /// The lock over the snapshot files' last steps (see the field). Held
    /// on blocking threads only.
    pub(crate) fn lock_snapshot_files(&self) -> std::sync::MutexGuard<'_, ()> {
        self.snapshot_files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts of snapshots built and installed on this database.
    pub fn snapshot_metrics(&self) -> &SnapshotMetrics {
        &self.snapshot_metrics
    }

    /// Approximate on-disk size of the whole database, for metrics and status.
    pub fn approximate_size(&self) -> u64 {
        [CF_LOGS, CF_RAFT, CF_DATA, CF_META, CF_EVENTS, CF_EXPIRY]
            .into_iter()
            .filter_map(|name| {
                self.rocks()
                    .property_int_value_cf(self.cf(name), "rocksdb.total-sst-files-size")
                    .ok()
                    .flatten()
            })
            .sum()
    }
}

/// Left in a data directory whose state was dropped so that the node can be
/// added to another cluster: such a node must wait to be added, not
/// bootstrap a cluster of its own. Its content says how far the wipe got.
pub const AWAITING_JOIN_MARKER: &str = "AWAITING_JOIN";
const WIPE_STARTED: &[u8] = b"wiping\n";
const WIPE_DONE: &[u8] = b"waiting\n";

/// Drops all state of the (closed) database in `data_directory` and marks it
/// as waiting to be added to a cluster. Safe against a crash half way: the
/// marker is written first, and [`finish_interrupted_wipe`] completes it.
pub fn wipe_for_join(data_directory: &Path) -> std::io::Result<()> {
    let marker = data_directory.join(AWAITING_JOIN_MARKER);
    write_synced(&marker, WIPE_STARTED)?;
    for dir in [data_directory.join("db"), snapshot_dir(data_directory)] {
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    write_synced(&marker, WIPE_DONE)
}

/// Completes a wipe a crash interrupted. Returns whether the directory waits
/// to be added to a cluster.
pub fn finish_interrupted_wipe(data_directory: &Path) -> std::io::Result<bool> {
    match std::fs::read(data_directory.join(AWAITING_JOIN_MARKER)) {
        Ok(content) if content == WIPE_DONE => Ok(true),
        Ok(_) => wipe_for_join(data_directory).map(|()| true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Forgets the wait once the node is a member again.
pub fn clear_awaiting_join(data_directory: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(data_directory.join(AWAITING_JOIN_MARKER)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn write_synced(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(content)?;
    file.sync_all()?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn snapshot_dir(data_directory: &Path) -> PathBuf {
    data_directory.join("snapshots")
}

/// Opens the database and builds both halves openraft needs, for the node
/// whose Raft id is `id`.
pub async fn open(data_directory: &Path, id: u64) -> Result<(LogStore, StateMachine), StoreError> {
    restore::check_no_interrupted_restore(data_directory)
        .map_err(|e| StoreError::Unusable(e.to_string()))?;
    let dir = data_directory.to_path_buf();
    let db = tokio::task::spawn_blocking(move || Db::open(&dir))
        .await
        .expect("open task does not panic")?;
    let durability = durability::Durability::new(db.clone());
    let log = LogStore::new(db.clone(), id, durability.clone());
    let sm = StateMachine::open(db, durability).await?;
    Ok((log, sm))
}

/// An openraft storage error for `subject`, keeping the cause.
pub(crate) fn io_err(
    subject: openraft::ErrorSubject<u64>,
    verb: openraft::ErrorVerb,
    e: impl std::error::Error + 'static,
) -> crate::command::typ::StorageError {
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::new(&e)).into()
}

/// Runs blocking RocksDB work off the async runtime's worker threads.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("storage tasks do not panic")
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    crate::codec::encode(value)
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    what: &'static str,
    raw: &[u8],
) -> Result<T, StoreError> {
    crate::codec::decode(raw).map_err(|e| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod conformance;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A restart wipes or reopens the directory once `closed` ends: by then
    /// RocksDB must be done with its files (its lock released, too).
    #[tokio::test]
    async fn closed_ends_once_rocksdb_has_closed() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let mut unlogged = rocksdb::WriteOptions::default();
        unlogged.disable_wal(true);
        // Unlogged data makes the close flush it: files are written then.
        db.rocks()
            .put_cf_opt(db.cf(CF_DATA), b"k", b"v", &unlogged)
            .unwrap();
        let closed = db.closed();
        let other = db.clone();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), db.closed())
                .await
                .is_err(),
            "closed while open"
        );
        drop(other);
        std::thread::spawn(move || drop(db));
        tokio::time::timeout(Duration::from_secs(30), closed)
            .await
            .expect("closed in time");
        let reopened = Db::open(dir.path()).expect("the lock is released");
        assert_eq!(
            reopened.rocks().get_cf(reopened.cf(CF_DATA), b"k").unwrap(),
            Some(b"v".to_vec())
        );
    }
}
