//! The key-value state machine on RocksDB, its snapshots, and the read side
//! the API uses.
//!
//! Applying a batch of entries writes the data changes, the new last-applied
//! log id, the revision and any membership change in one atomic WriteBatch,
//! so the state machine is never half-applied. It goes to the memtables
//! only, not to the write-ahead log (see [`unlogged`]): after a crash,
//! entries past the last-applied id of the last flush are applied again
//! from the (synced) log.
//!
//! Revisions are the state machine's own, as etcd's store revision: a
//! counter advanced by one for every write that changes a key, stored with
//! the data, carried in snapshots and backups. Every replica applies the
//! same log, so every replica gives the same write the same revision; log
//! entries carry many writes each (see `raft::proposer`), so log indexes
//! and revisions differ.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use rocksdb::{
    Direction, FlushOptions, IteratorMode, ReadOptions, ReadTier, WriteBatch, WriteOptions,
};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncSeekExt;

use super::durability::Durability;
use super::events::{self, Event, EventHub, WatchError, Watcher};
use super::snapshot::{self, SnapshotError, SnapshotHeader, SnapshotWriter};
use super::value::{self, StoredValue, ValueMeta};
use super::{
    blocking, decode, encode, io_err, Db, StoreError, CF_DATA, CF_EVENTS, CF_EXPIRY, CF_META,
};
use crate::command::typ::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership};
use crate::command::{
    Command, CommandResult, Compare, GotValue, Precondition, ProposalResult, SnapshotData, Txn,
    TxnOp, TxnOpResult, TypeConfig,
};

const KEY_LAST_APPLIED: &[u8] = b"last_applied";
/// The revision of the last write applied (0 before the first).
const KEY_REVISION: &[u8] = b"revision";
const KEY_MEMBERSHIP: &[u8] = b"membership";
const KEY_SNAPSHOT: &[u8] = b"snapshot";
const KEY_INSTALL_PENDING: &[u8] = b"install_pending";

/// Every key sorts below this: keys are at most [`cete_types::MAX_KEY_LEN`] bytes.
fn key_space_end() -> Vec<u8> {
    vec![0xff; cete_types::MAX_KEY_LEN + 1]
}

/// The snapshot currently on disk, as recorded in the meta column family.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CurrentSnapshot {
    meta_json: String,
    file: String,
}

impl CurrentSnapshot {
    fn meta(&self) -> Result<SnapshotMeta, serde_json::Error> {
        serde_json::from_str(&self.meta_json)
    }
}

pub struct StateMachine {
    db: Db,
    last_applied: Option<LogId>,
    /// The revision of the last applied write.
    revision: u64,
    membership: StoredMembership,
    /// Where the snapshot being received from the leader is written.
    receiving: Option<PathBuf>,
    /// Revisions of change history kept for watches.
    watch_history: u64,
    /// The oldest revision the change history holds in full.
    events_oldest: u64,
    hub: Arc<EventHub>,
    /// Entries are applied only once they are on this node's disk.
    durability: Arc<Durability>,
}

fn sm_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    io_err(ErrorSubject::StateMachine, verb, e)
}

/// Options of the writes that apply entries: memtables only, no write-ahead
/// log. The synced Raft log already holds every entry applied, so a second
/// copy in the WAL buys nothing (a 4 KiB value went in three times: entry,
/// data, event). After a crash openraft applies again the entries past the
/// last flushed last-applied id. This needs two things: `atomic_flush`
/// (lib.rs), so that a flush never persists data without the last-applied id
/// and revision that describe it; and a log purged only behind a flushed
/// state machine ([`persist_through`]).
fn unlogged() -> WriteOptions {
    let mut opts = WriteOptions::default();
    opts.disable_wal(true);
    opts
}

/// The families of the state machine, flushed together.
const STATE_MACHINE_FAMILIES: [&str; 4] = [CF_DATA, CF_META, CF_EVENTS, CF_EXPIRY];

/// Flushes the state machine's memtables to files (atomically, with its
/// last-applied id), so that nothing applied so far needs the log again.
fn persist(db: &Db) -> Result<(), rocksdb::Error> {
    let families: Vec<_> = STATE_MACHINE_FAMILIES
        .iter()
        .map(|name| db.cf(name))
        .collect();
    let mut wait = FlushOptions::default();
    wait.set_wait(true);
    db.rocks().flush_cfs_opt(&families, &wait)
}

/// The last-applied index a restart would find: the flushed one.
fn persisted_last_applied(db: &Db) -> Result<Option<u64>, StoreError> {
    let mut opts = ReadOptions::default();
    opts.set_read_tier(ReadTier::Persisted);
    match db
        .rocks()
        .get_cf_opt(db.cf(CF_META), KEY_LAST_APPLIED, &opts)?
    {
        Some(raw) => Ok(decode::<Option<LogId>>("state machine meta", &raw)?.map(|id| id.index)),
        None => Ok(None),
    }
}

/// Makes sure a restart finds the state machine applied through `index` at
/// least (flushing it if not): the log up to `index` is about to be purged,
/// and could not be applied again. Called from a blocking context.
pub(crate) fn persist_through(db: &Db, index: u64) -> Result<(), StoreError> {
    if persisted_last_applied(db)?.is_some_and(|applied| applied >= index) {
        return Ok(());
    }
    persist(db)?;
    Ok(())
}

fn read_meta<T: serde::de::DeserializeOwned>(db: &Db, key: &[u8]) -> Result<Option<T>, StoreError> {
    match db.rocks().get_cf(db.cf(CF_META), key)? {
        Some(raw) => Ok(Some(decode("state machine meta", &raw)?)),
        None => Ok(None),
    }
}

impl StateMachine {
    pub async fn open(db: Db, durability: Arc<Durability>) -> Result<StateMachine, StoreError> {
        let db2 = db.clone();
        blocking(move || -> Result<(), StoreError> {
            remove_unfinished_snapshots(&db2);
            if let Some(file) = read_meta::<String>(&db2, KEY_INSTALL_PENDING)? {
                log::warn!("finishing the snapshot install interrupted by a crash ({file})");
                let path = db2.snapshot_dir().join(&file);
                install_file(&db2, &path, &file).map_err(|e| StoreError::Corrupt {
                    what: "pending snapshot",
                    detail: e.to_string(),
                })?;
            }
            Ok(())
        })
        .await?;
        let last_applied = read_meta::<Option<LogId>>(&db, KEY_LAST_APPLIED)?.flatten();
        let membership = read_meta::<StoredMembership>(&db, KEY_MEMBERSHIP)?.unwrap_or_default();
        let revision = read_meta::<u64>(&db, KEY_REVISION)?.unwrap_or(0);
        let db2 = db.clone();
        let events_oldest = blocking(move || -> Result<u64, StoreError> {
            let oldest = events::read_oldest(&db2, revision)?;
            // Recorded at once: a database from before the history existed
            // holds no events up to here, and readers must know it.
            db2.rocks()
                .put_cf(db2.cf(CF_META), events::KEY_EVENTS_OLDEST, encode(&oldest))?;
            Ok(oldest)
        })
        .await?;
        Ok(StateMachine {
            db,
            last_applied,
            revision,
            membership,
            receiving: None,
            watch_history: events::DEFAULT_WATCH_HISTORY,
            events_oldest,
            hub: Arc::new(EventHub::new(revision)),
            durability,
        })
    }

    /// Keeps the change history for watches to the last `revisions`
    /// revisions (at least 1).
    pub fn with_watch_history(mut self, revisions: u64) -> StateMachine {
        self.watch_history = revisions.max(1);
        self
    }

    /// The read side of the state machine, for the API.
    pub fn reader(&self) -> KvReader {
        KvReader {
            db: self.db.clone(),
            hub: self.hub.clone(),
            durability: self.durability.clone(),
        }
    }
}

/// Reads of the key-value data. Consistency is the caller's business: it
/// waits for the read index before it reads here.
#[derive(Clone)]
pub struct KvReader {
    db: Db,
    hub: Arc<EventHub>,
    durability: Arc<Durability>,
}

/// The key's value unless it expired by `now`, reading no further than `tier`.
fn read_value(
    db: &Db,
    key: &[u8],
    now: u64,
    tier: rocksdb::ReadTier,
) -> Result<Option<StoredValue>, StoreError> {
    let mut opts = ReadOptions::default();
    opts.set_read_tier(tier);
    match db.rocks().get_pinned_cf_opt(db.cf(CF_DATA), key, &opts)? {
        Some(raw) => value::decode(&raw)
            .map(|v| (!v.meta.expired_at(now)).then_some(v))
            .map_err(|e| StoreError::Corrupt {
                what: "stored value",
                detail: e.to_string(),
            }),
        None => Ok(None),
    }
}

/// One key in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    pub key: Vec<u8>,
    pub meta: ValueMeta,
}

impl KvReader {
    /// How this node's log reaches its disk: a leader hands out a read
    /// index only once its log is synced that far (see `durability`).
    pub fn durability(&self) -> &Arc<Durability> {
        &self.durability
    }

    /// The key's value, unless it is past its deadline by this node's
    /// clock: an expired key is never returned, even before its delete
    /// commits.
    pub async fn get(&self, key: Vec<u8>) -> Result<Option<StoredValue>, StoreError> {
        let now = now_ms();
        // Most reads are served from memtables and the block cache in
        // microseconds: they run here, where a hand-off to the blocking pool
        // would cost more than the read. One that needs a file read gets
        // Incomplete from RocksDB instead, and goes to the pool.
        match read_value(&self.db, &key, now, rocksdb::ReadTier::BlockCache) {
            Err(StoreError::Rocks(e)) if e.kind() == rocksdb::ErrorKind::Incomplete => {}
            served => return served,
        }
        let db = self.db.clone();
        blocking(move || read_value(&db, &key, now, rocksdb::ReadTier::All)).await
    }

    /// Keys whose deadline is at or before `now_ms`, earliest first, at most
    /// `limit`, with their deadlines; after `after` (a deadline and key
    /// returned before) if given. Starting after the last round's keys
    /// skips the tombstones their deletes left at the front of the index,
    /// which a scan from the start would wade through again every round.
    pub async fn due(
        &self,
        after: Option<(Vec<u8>, u64)>,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, u64)>, StoreError> {
        let db = self.db.clone();
        blocking(move || {
            let mut opts = ReadOptions::default();
            opts.set_iterate_upper_bound(now_ms.saturating_add(1).to_be_bytes());
            let start = after
                .as_ref()
                .map(|(key, deadline)| expiry_key(*deadline, key))
                .unwrap_or_default();
            let iter = db.rocks().iterator_cf_opt(
                db.cf(CF_EXPIRY),
                opts,
                IteratorMode::From(&start, Direction::Forward),
            );
            let mut due = Vec::new();
            for item in iter {
                let (raw, _) = item?;
                if after.is_some() && raw.as_ref() == start.as_slice() {
                    continue;
                }
                if due.len() == limit {
                    break;
                }
                let (deadline, key) = raw.split_at_checked(8).ok_or(StoreError::Corrupt {
                    what: "expiry index",
                    detail: format!("a key of {} bytes", raw.len()),
                })?;
                due.push((
                    key.to_vec(),
                    u64::from_be_bytes(deadline.try_into().expect("8 bytes")),
                ));
            }
            Ok(due)
        })
        .await
    }

    /// Keys starting with `prefix`, in order, after `start_after`; at most
    /// `limit` of them, plus whether more follow.
    pub async fn list(
        &self,
        prefix: Vec<u8>,
        start_after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<(Vec<KeyEntry>, bool), StoreError> {
        let db = self.db.clone();
        let now = now_ms();
        blocking(move || {
            let start = match &start_after {
                Some(after) if after.as_slice() >= prefix.as_slice() => after.clone(),
                _ => prefix.clone(),
            };
            let mut entries = Vec::new();
            let iter = db.rocks().iterator_cf(
                db.cf(CF_DATA),
                IteratorMode::From(&start, Direction::Forward),
            );
            for item in iter {
                let (key, raw) = item?;
                if !key.starts_with(&prefix) {
                    break;
                }
                if start_after.as_deref() == Some(&key[..]) {
                    continue;
                }
                if entries.len() == limit {
                    return Ok((entries, true));
                }
                let (meta, _) = value::decode_meta(&raw).map_err(|e| StoreError::Corrupt {
                    what: "stored value",
                    detail: e.to_string(),
                })?;
                if meta.expired_at(now) {
                    continue;
                }
                entries.push(KeyEntry {
                    key: key.to_vec(),
                    meta,
                });
            }
            Ok((entries, false))
        })
        .await
    }

    /// Number of keys (an estimate from RocksDB, cheap to ask).
    pub fn approximate_key_count(&self) -> u64 {
        self.db
            .rocks()
            .property_int_value_cf(self.db.cf(CF_DATA), "rocksdb.estimate-num-keys")
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The last membership the state machine applied: a committed one.
    pub async fn applied_membership(&self) -> Result<StoredMembership, StoreError> {
        let db = self.db.clone();
        blocking(
            move || Ok(read_meta::<StoredMembership>(&db, KEY_MEMBERSHIP)?.unwrap_or_default()),
        )
        .await
    }

    /// Live watchers and the end of their history.
    pub fn events(&self) -> &Arc<EventHub> {
        &self.hub
    }

    /// A watch of the keys starting with `prefix`: every event from revision
    /// `start` on (`None`: from the next one applied here).
    pub async fn watch(&self, prefix: Vec<u8>, start: Option<u64>) -> Result<Watcher, WatchError> {
        Watcher::start(self.db.clone(), self.hub.clone(), prefix, start).await
    }

    /// Writes a consistent point-in-time snapshot file of the whole state
    /// machine to `path` (Raft snapshots and backups alike).
    pub async fn write_snapshot_file(
        &self,
        path: PathBuf,
    ) -> Result<(SnapshotMeta, u64), SnapshotError> {
        let db = self.db.clone();
        blocking(move || write_snapshot_file(&db, &path)).await
    }

    /// Writes a backup of the whole applied state, consistent as of one
    /// moment while writes go on, to an unnamed temporary file.
    pub async fn write_backup(&self) -> Result<BackupFile, SnapshotError> {
        let db = self.db.clone();
        blocking(move || write_backup(&db)).await
    }
}

/// This node's clock in Unix milliseconds (0 if it is before 1970: then
/// nothing counts as expired).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn unix_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn decode_snapshot_meta<T: serde::de::DeserializeOwned>(
    raw: Option<Vec<u8>>,
    what: &'static str,
) -> Result<Option<T>, SnapshotError> {
    raw.map(|r| decode(what, &r))
        .transpose()
        .map_err(|e| SnapshotError::Corrupt(e.to_string()))
}

fn write_snapshot_file(db: &Db, path: &Path) -> Result<(SnapshotMeta, u64), SnapshotError> {
    let (header, written) = write_snapshot(db, std::fs::File::create(path)?)?;
    Ok((header.meta, written.records))
}

/// Writes a snapshot of the applied state, as of one RocksDB snapshot, into `file`.
fn write_snapshot(
    db: &Db,
    file: std::fs::File,
) -> Result<(SnapshotHeader, snapshot::Written), SnapshotError> {
    let view = db.rocks().snapshot();
    let meta_of = |key: &[u8]| -> Result<Option<Vec<u8>>, SnapshotError> {
        view.get_cf(db.cf(CF_META), key)
            .map_err(|e| SnapshotError::Io(std::io::Error::other(e)))
    };
    let last_applied: Option<LogId> =
        decode_snapshot_meta::<Option<LogId>>(meta_of(KEY_LAST_APPLIED)?, "last applied")?
            .flatten();
    let membership: StoredMembership =
        decode_snapshot_meta(meta_of(KEY_MEMBERSHIP)?, "membership")?.unwrap_or_default();
    let revision: u64 = decode_snapshot_meta(meta_of(KEY_REVISION)?, "revision")?.unwrap_or(0);
    let snapshot_id = match last_applied {
        Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, unix_millis()),
        None => format!("0-0-{}", unix_millis()),
    };
    let meta = SnapshotMeta {
        last_log_id: last_applied,
        last_membership: membership,
        snapshot_id,
    };
    let header = SnapshotHeader { revision, meta };
    let mut writer = SnapshotWriter::from_file(file, &header)?;
    let mut opts = ReadOptions::default();
    opts.set_snapshot(&view);
    for item in db
        .rocks()
        .iterator_cf_opt(db.cf(CF_DATA), opts, IteratorMode::Start)
    {
        let (key, raw) = item.map_err(|e| SnapshotError::Io(std::io::Error::other(e)))?;
        writer.record(&key, &raw)?;
    }
    let written = writer.finish_written()?;
    Ok((header, written))
}

/// A backup written to an unnamed temporary file, ready to be read from its start.
#[derive(Debug)]
pub struct BackupFile {
    /// The file; it has no name, so it vanishes when closed (or on a crash).
    pub file: std::fs::File,
    /// The backup's revision: every write up to this revision is in it, none after.
    pub revision: u64,
    /// Keys in the backup.
    pub keys: u64,
    /// Size of the file.
    pub bytes: u64,
    /// CRC-32 of the whole file.
    pub crc32: u32,
}

/// Writes a backup of the applied state into an unnamed file in the snapshot directory.
fn write_backup(db: &Db) -> Result<BackupFile, SnapshotError> {
    use std::io::Seek;
    let file = tempfile::tempfile_in(db.snapshot_dir())?;
    let mut reader = file.try_clone()?;
    let (header, written) = write_snapshot(db, file)?;
    reader.seek(std::io::SeekFrom::Start(0))?;
    Ok(BackupFile {
        file: reader,
        revision: header.revision,
        keys: written.records,
        bytes: written.bytes,
        crc32: written.file_crc32,
    })
}

/// Fills an empty state machine from the (verified) backup at `path` for a
/// restore: its data, `last_applied`, `revision` and `membership`, then builds the
/// current snapshot from them (so that joining nodes receive the restored
/// membership, not the backup's). Returns the number of keys.
pub(crate) fn restore_from_backup(
    db: &Db,
    path: &Path,
    last_applied: LogId,
    revision: u64,
    membership: StoredMembership,
) -> Result<u64, SnapshotError> {
    let rocks_err = |e: rocksdb::Error| SnapshotError::Io(std::io::Error::other(e));
    let (mut batch, records) = load_snapshot_data(db, path)?;
    batch.put_cf(
        db.cf(CF_META),
        KEY_LAST_APPLIED,
        encode(&Some(last_applied)),
    );
    batch.put_cf(db.cf(CF_META), KEY_MEMBERSHIP, encode(&membership));
    batch.put_cf(db.cf(CF_META), KEY_REVISION, encode(&revision));
    events::restart_after(db, &mut batch, revision);
    let mut sync = rocksdb::WriteOptions::default();
    sync.set_sync(true);
    db.rocks().write_opt(batch, &sync).map_err(rocks_err)?;
    build_snapshot_file(db)?;
    Ok(records)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Deletes every snapshot file but `keep`.
/// Removes the snapshot files but `keep`. Files still being written (a
/// snapshot built or received meanwhile, `*.tmp`) stay: they are removed at
/// open ([`remove_unfinished_snapshots`]), when none can be.
fn remove_other_snapshots(db: &Db, keep: &str) {
    remove_snapshot_files(db, |name| name != keep && name.ends_with(".snap"));
}

/// Removes what a crash left of snapshots being built or received.
fn remove_unfinished_snapshots(db: &Db) {
    remove_snapshot_files(db, |name| name.ends_with(".tmp"));
}

fn remove_snapshot_files(db: &Db, remove: impl Fn(&str) -> bool) {
    let Ok(dir) = std::fs::read_dir(db.snapshot_dir()) else {
        return;
    };
    for entry in dir.flatten() {
        if remove(&entry.file_name().to_string_lossy()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Whether the snapshot recorded as current is newer than `meta` (one
/// installed while `meta`'s was being built).
fn newer_snapshot_recorded(db: &Db, meta: &SnapshotMeta) -> Result<bool, SnapshotError> {
    let corrupt = |e: &dyn std::fmt::Display| SnapshotError::Corrupt(e.to_string());
    match read_meta::<CurrentSnapshot>(db, KEY_SNAPSHOT).map_err(|e| corrupt(&e))? {
        Some(current) => {
            Ok(current.meta().map_err(|e| corrupt(&e))?.last_log_id > meta.last_log_id)
        }
        None => Ok(false),
    }
}

fn record_current_snapshot(db: &Db, batch: &mut WriteBatch, meta: &SnapshotMeta, file: &str) {
    let current = CurrentSnapshot {
        meta_json: serde_json::to_string(meta).expect("snapshot meta serializes"),
        file: file.to_string(),
    };
    batch.put_cf(db.cf(CF_META), KEY_SNAPSHOT, encode(&current));
}

/// Replaces the whole state machine with the verified snapshot at `path`
/// (already named `file` inside the snapshot directory). Crash-safe: the
/// pending mark is set first and cleared in the last batch, and `open`
/// finishes an interrupted install.
/// Writes the data of the snapshot file at `path` into the data column
/// family in bounded batches; returns the last batch, still to be written
/// (the caller adds its metadata to it), and the number of keys.
fn load_snapshot_data(db: &Db, path: &Path) -> Result<(WriteBatch, u64), SnapshotError> {
    let rocks_err = |e: rocksdb::Error| SnapshotError::Io(std::io::Error::other(e));
    let mut batch = WriteBatch::default();
    let (_, records) = snapshot::read(path, |key, raw| {
        batch.put_cf(db.cf(CF_DATA), &key, &raw);
        // The expiry index is derived from the values' deadlines.
        let (meta, _) =
            value::decode_meta(&raw).map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
        if let Some(deadline) = meta.expires_at_ms {
            batch.put_cf(db.cf(CF_EXPIRY), expiry_key(deadline, &key), []);
        }
        if batch.size_in_bytes() > 8 << 20 {
            db.rocks()
                .write(std::mem::take(&mut batch))
                .map_err(rocks_err)?;
        }
        Ok(())
    })?;
    Ok((batch, records))
}

fn install_file(db: &Db, path: &Path, file: &str) -> Result<SnapshotHeader, SnapshotError> {
    let rocks_err = |e: rocksdb::Error| SnapshotError::Io(std::io::Error::other(e));
    let (header, records) = snapshot::verify(path)?;
    let _files = db.lock_snapshot_files();
    let meta = &header.meta;
    let mut sync = rocksdb::WriteOptions::default();
    sync.set_sync(true);
    db.rocks()
        .put_cf_opt(
            db.cf(CF_META),
            KEY_INSTALL_PENDING,
            encode(&file.to_string()),
            &sync,
        )
        .map_err(rocks_err)?;
    // Keys absent from the snapshot must be gone afterwards.
    db.rocks()
        .delete_range_cf(db.cf(CF_DATA), Vec::<u8>::new(), key_space_end())
        .map_err(rocks_err)?;
    db.rocks()
        .delete_range_cf(
            db.cf(CF_EXPIRY),
            Vec::<u8>::new(),
            expiry_key(u64::MAX, &key_space_end()),
        )
        .map_err(rocks_err)?;
    let (mut batch, _) = load_snapshot_data(db, path)?;
    batch.put_cf(db.cf(CF_META), KEY_LAST_APPLIED, encode(&meta.last_log_id));
    batch.put_cf(
        db.cf(CF_META),
        KEY_MEMBERSHIP,
        encode(&meta.last_membership),
    );
    batch.put_cf(db.cf(CF_META), KEY_REVISION, encode(&header.revision));
    record_current_snapshot(db, &mut batch, meta, file);
    events::restart_after(db, &mut batch, header.revision);
    batch.delete_cf(db.cf(CF_META), KEY_INSTALL_PENDING);
    db.rocks().write_opt(batch, &sync).map_err(rocks_err)?;
    remove_other_snapshots(db, file);
    log::info!(
        "installed snapshot {} ({records} keys, last log id {:?}, revision {})",
        meta.snapshot_id,
        meta.last_log_id,
        header.revision
    );
    Ok(header)
}

fn check(precondition: Option<Precondition>, current: Option<u64>) -> bool {
    match precondition {
        None => true,
        Some(Precondition::Absent) => current.is_none(),
        Some(Precondition::RevisionIs(rev)) => current == Some(rev),
    }
}

/// The key of `key` in the expiry index: deadline first, so the due keys
/// come first.
fn expiry_key(deadline_ms: u64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&deadline_ms.to_be_bytes());
    out.extend_from_slice(key);
    out
}

fn corrupt_value(e: value::CorruptValue) -> StorageError {
    sm_err(ErrorVerb::Read, e)
}

/// The entries being applied, as one WriteBatch, and the keys as they see
/// them: each command sees the writes of the commands before it.
struct Applying<'a> {
    db: &'a Db,
    batch: WriteBatch,
    /// Keys written by this batch: their encoded value, or `None` if deleted.
    overlay: HashMap<Vec<u8>, Option<Vec<u8>>>,
    revision: u64,
    events: Vec<Arc<Event>>,
}

impl<'a> Applying<'a> {
    fn new(db: &'a Db, revision: u64) -> Applying<'a> {
        Applying {
            db,
            batch: WriteBatch::default(),
            overlay: HashMap::new(),
            revision,
            events: Vec::new(),
        }
    }

    /// Decodes the key's stored value (expired or not) with `decode`.
    fn stored_with<T>(
        &self,
        key: &[u8],
        decode: impl Fn(&[u8]) -> Result<T, value::CorruptValue>,
    ) -> Result<Option<T>, StorageError> {
        if let Some(seen) = self.overlay.get(key) {
            return seen
                .as_deref()
                .map(decode)
                .transpose()
                .map_err(corrupt_value);
        }
        match self
            .db
            .rocks()
            .get_pinned_cf(self.db.cf(CF_DATA), key)
            .map_err(|e| sm_err(ErrorVerb::Read, e))?
        {
            Some(raw) => decode(&raw).map(Some).map_err(corrupt_value),
            None => Ok(None),
        }
    }

    /// The key's metadata as stored, expired or not (writes need no more).
    fn stored(&self, key: &[u8]) -> Result<Option<ValueMeta>, StorageError> {
        self.stored_with(key, |raw| value::decode_meta(raw).map(|(meta, _)| meta))
    }

    /// The key's metadata unless it is past its deadline at `now_ms`.
    fn live(&self, key: &[u8], now_ms: u64) -> Result<Option<ValueMeta>, StorageError> {
        Ok(self.stored(key)?.filter(|m| !m.expired_at(now_ms)))
    }

    /// The key's value unless it is past its deadline at `now_ms`.
    fn live_value(&self, key: &[u8], now_ms: u64) -> Result<Option<StoredValue>, StorageError> {
        Ok(self
            .stored_with(key, value::decode)?
            .filter(|v| !v.meta.expired_at(now_ms)))
    }

    fn next_revision(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    /// Deletes a key past its deadline at `now_ms` before a write to it, as
    /// an expiry of its own revision: watchers see it go, then come back.
    fn reap(&mut self, key: &[u8], now_ms: u64) -> Result<(), StorageError> {
        if let Some(old) = self.stored(key)? {
            if old.expired_at(now_ms) {
                let revision = self.next_revision();
                self.remove(key, &old, Event::expire(revision, key));
            }
        }
        Ok(())
    }

    fn put(
        &mut self,
        key: &[u8],
        old: Option<&ValueMeta>,
        revision: u64,
        content_type: &str,
        expires_at_ms: Option<u64>,
        bytes: &[u8],
    ) -> u64 {
        let create = old.map_or(revision, |o| o.create_revision);
        if let Some(deadline) = old.and_then(|o| o.expires_at_ms) {
            self.batch
                .delete_cf(self.db.cf(CF_EXPIRY), expiry_key(deadline, key));
        }
        if let Some(deadline) = expires_at_ms {
            self.batch
                .put_cf(self.db.cf(CF_EXPIRY), expiry_key(deadline, key), []);
        }
        let raw = value::encode(create, revision, content_type, expires_at_ms, bytes);
        self.batch.put_cf(self.db.cf(CF_DATA), key, &raw);
        self.overlay.insert(key.to_vec(), Some(raw));
        self.events.push(Arc::new(Event::put(
            revision,
            key,
            create,
            content_type,
            bytes,
        )));
        create
    }

    fn remove(&mut self, key: &[u8], old: &ValueMeta, event: Event) {
        if let Some(deadline) = old.expires_at_ms {
            self.batch
                .delete_cf(self.db.cf(CF_EXPIRY), expiry_key(deadline, key));
        }
        self.batch.delete_cf(self.db.cf(CF_DATA), key);
        self.overlay.insert(key.to_vec(), None);
        self.events.push(Arc::new(event));
    }

    fn apply(&mut self, command: Command) -> Result<CommandResult, StorageError> {
        match command {
            Command::Put {
                key,
                value,
                content_type,
                precondition,
            } => self.apply_put(&key, &value, &content_type, precondition, 0, None),
            Command::PutAt {
                key,
                value,
                content_type,
                precondition,
                at_ms,
                ttl_ms,
            } => {
                let deadline = ttl_ms.map(|ttl| at_ms.saturating_add(ttl));
                self.apply_put(&key, &value, &content_type, precondition, at_ms, deadline)
            }
            Command::Delete { key, precondition } => self.apply_delete(&key, precondition, 0),
            Command::DeleteAt {
                key,
                precondition,
                at_ms,
            } => self.apply_delete(&key, precondition, at_ms),
            Command::Expire { key, deadline_ms } => match self.stored(&key)? {
                Some(old) if old.expires_at_ms == Some(deadline_ms) => {
                    let revision = self.next_revision();
                    self.remove(&key, &old, Event::expire(revision, &key));
                    Ok(CommandResult::Deleted { revision })
                }
                _ => {
                    // Renewed, cleared or gone: an index entry left for this
                    // deadline is stale.
                    self.batch
                        .delete_cf(self.db.cf(CF_EXPIRY), expiry_key(deadline_ms, &key));
                    Ok(CommandResult::NotFound)
                }
            },
            Command::Txn(txn) => self.apply_txn(txn),
        }
    }

    fn apply_put(
        &mut self,
        key: &[u8],
        bytes: &[u8],
        content_type: &str,
        precondition: Option<Precondition>,
        now_ms: u64,
        expires_at_ms: Option<u64>,
    ) -> Result<CommandResult, StorageError> {
        let current = self.live(key, now_ms)?;
        let current_revision = current.as_ref().map(|c| c.mod_revision);
        if !check(precondition, current_revision) {
            return Ok(CommandResult::PreconditionFailed {
                current: current_revision,
            });
        }
        self.reap(key, now_ms)?;
        let revision = self.next_revision();
        self.put(
            key,
            current.as_ref(),
            revision,
            content_type,
            expires_at_ms,
            bytes,
        );
        Ok(CommandResult::Written {
            revision,
            created: current.is_none(),
        })
    }

    fn apply_delete(
        &mut self,
        key: &[u8],
        precondition: Option<Precondition>,
        now_ms: u64,
    ) -> Result<CommandResult, StorageError> {
        let current = self.live(key, now_ms)?;
        let current_revision = current.as_ref().map(|c| c.mod_revision);
        if precondition.is_some() && !check(precondition, current_revision) {
            return Ok(CommandResult::PreconditionFailed {
                current: current_revision,
            });
        }
        let Some(old) = current else {
            self.reap(key, now_ms)?;
            return Ok(CommandResult::NotFound);
        };
        let revision = self.next_revision();
        self.remove(key, &old, Event::delete(revision, key));
        Ok(CommandResult::Deleted { revision })
    }

    fn compare_holds(
        &self,
        key: &[u8],
        compare: &Compare,
        now_ms: u64,
    ) -> Result<bool, StorageError> {
        if let Compare::Value(expected) = compare {
            return Ok(self
                .live_value(key, now_ms)?
                .is_some_and(|v| &v.value == expected));
        }
        let current = self.live(key, now_ms)?;
        Ok(match (compare, &current) {
            (Compare::Absent, current) => current.is_none(),
            (Compare::Present, current) => current.is_some(),
            (Compare::Revision(rev), Some(m)) => m.mod_revision == *rev,
            (Compare::Revision(_) | Compare::Value(_), None) | (Compare::Value(_), Some(_)) => {
                false
            }
        })
    }

    /// Applies the branch the compares choose; all its writes share one
    /// revision, taken only if it writes.
    fn apply_txn(&mut self, txn: Txn) -> Result<CommandResult, StorageError> {
        let now = txn.at_ms;
        let mut succeeded = true;
        for (key, compare) in &txn.compare {
            if !self.compare_holds(key, compare, now)? {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded { txn.success } else { txn.failure };
        // Expired keys the branch writes go first, at revisions of their
        // own, so that the transaction's writes keep one revision.
        for op in &ops {
            if !matches!(op, TxnOp::Get { .. }) {
                self.reap(op.key(), now)?;
            }
        }
        let mut txn_revision = None;
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let result = match op {
                TxnOp::Put {
                    key,
                    value,
                    content_type,
                    ttl_ms,
                } => {
                    let revision = *txn_revision.get_or_insert_with(|| self.next_revision());
                    let deadline = ttl_ms.map(|ttl| now.saturating_add(ttl));
                    let old = self.live(&key, now)?;
                    self.put(
                        &key,
                        old.as_ref(),
                        revision,
                        &content_type,
                        deadline,
                        &value,
                    );
                    TxnOpResult::Put {
                        revision,
                        expires_at_ms: deadline,
                    }
                }
                TxnOp::Delete { key } => match self.live(&key, now)? {
                    Some(old) => {
                        let revision = *txn_revision.get_or_insert_with(|| self.next_revision());
                        self.remove(&key, &old, Event::delete(revision, &key));
                        TxnOpResult::Delete {
                            revision: Some(revision),
                        }
                    }
                    None => TxnOpResult::Delete { revision: None },
                },
                TxnOp::Get { key } => {
                    TxnOpResult::Get(self.live_value(&key, now)?.map(|v| GotValue {
                        content_type: v.meta.content_type,
                        create_revision: v.meta.create_revision,
                        mod_revision: v.meta.mod_revision,
                        expires_at_ms: v.meta.expires_at_ms,
                        value: v.value,
                    }))
                }
            };
            results.push(result);
        }
        Ok(CommandResult::Txn {
            succeeded,
            revision: txn_revision.unwrap_or(self.revision),
            results,
        })
    }
}

/// Entries with at most this many operations are applied on the state
/// machine worker's own task: an unsynced WriteBatch that small takes tens of
/// microseconds, less than the hand-off to the blocking pool and back.
/// Larger ones go to the pool, so that no runtime thread stalls for long.
const INLINE_APPLY_OPERATIONS: usize = 16;

/// Operations the entries carry: one per command, a transaction's compares
/// and branches counted one by one (it may hold up to 128).
fn operations_in(entries: &[Entry]) -> usize {
    let operations = |command: &Command| match command {
        Command::Txn(txn) => txn.compare.len() + txn.success.len() + txn.failure.len(),
        _ => 1,
    };
    entries
        .iter()
        .map(|entry| match &entry.payload {
            EntryPayload::Normal(proposal) => proposal.commands.iter().map(operations).sum(),
            _ => 1,
        })
        .sum()
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ProposalResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let Some(last) = entries.last().map(|entry| entry.log_id.index) else {
            return Ok(Vec::new());
        };
        // A leader's own entries may be committed before they are synced
        // here: nothing of them shows (or is answered) until they are.
        self.durability
            .wait_synced(last)
            .await
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        let db = self.db.clone();
        let mut membership = self.membership.clone();
        let (history, oldest) = (self.watch_history, self.events_oldest);
        let revision = self.revision;
        let inline = operations_in(&entries) <= INLINE_APPLY_OPERATIONS;
        let apply = move || {
            let mut applying = Applying::new(&db, revision);
            let mut results = Vec::with_capacity(entries.len());
            let mut last_applied = None;
            let mut membership_changed = false;
            for entry in entries {
                last_applied = Some(entry.log_id);
                let result = match entry.payload {
                    EntryPayload::Blank => ProposalResult::default(),
                    EntryPayload::Membership(m) => {
                        membership = StoredMembership::new(Some(entry.log_id), m);
                        membership_changed = true;
                        ProposalResult::default()
                    }
                    EntryPayload::Normal(proposal) => {
                        let mut results = Vec::with_capacity(proposal.commands.len());
                        for command in proposal.commands {
                            results.push(applying.apply(command)?);
                        }
                        ProposalResult { results }
                    }
                };
                results.push(result);
            }
            let Applying {
                mut batch,
                revision,
                events,
                ..
            } = applying;
            batch.put_cf(db.cf(CF_META), KEY_LAST_APPLIED, encode(&last_applied));
            batch.put_cf(db.cf(CF_META), KEY_REVISION, encode(&revision));
            if membership_changed {
                batch.put_cf(db.cf(CF_META), KEY_MEMBERSHIP, encode(&membership));
            }
            let oldest = events::record(&db, &mut batch, &events, revision, history, oldest)
                .map_err(|e| sm_err(ErrorVerb::Read, e))?;
            db.rocks()
                .write_opt(batch, &unlogged())
                .map_err(|e| sm_err(ErrorVerb::Write, e))?;
            Ok::<_, StorageError>((results, last_applied, membership, events, oldest, revision))
        };
        let (results, last_applied, membership, events, oldest, revision) = if inline {
            apply()?
        } else {
            blocking(apply).await?
        };
        self.last_applied = last_applied;
        self.revision = revision;
        self.membership = membership;
        self.events_oldest = oldest;
        // Only once the batch is durable in RocksDB: a watcher that
        // subscribes later finds these events in the history instead.
        self.hub.publish(&events, revision);
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError> {
        let path = self
            .db
            .snapshot_dir()
            .join(format!("receiving-{}.tmp", unix_millis()));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        // A transfer given up for a new one leaves its file behind.
        if let Some(abandoned) = self.receiving.replace(path) {
            let _ = tokio::fs::remove_file(abandoned).await;
        }
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError> {
        let started = Instant::now();
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let write_err = |e: std::io::Error| io_err(subject(), ErrorVerb::Write, e);
        // Copy from the handle we are given (not the path we handed out):
        // openraft may hand back any snapshot data, and the copy also lands
        // under the snapshot's own name.
        let mut snapshot = snapshot;
        snapshot
            .seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(write_err)?;
        let file = format!("{}.snap", meta.snapshot_id);
        let received = self.db.snapshot_dir().join(format!("{file}.tmp"));
        let mut out = tokio::fs::File::create(&received)
            .await
            .map_err(write_err)?;
        tokio::io::copy(&mut snapshot, &mut out)
            .await
            .map_err(write_err)?;
        out.sync_all().await.map_err(write_err)?;
        drop(out);
        drop(snapshot);
        if let Some(path) = self.receiving.take() {
            let _ = tokio::fs::remove_file(path).await;
        }
        let db = self.db.clone();
        let installed = blocking(move || {
            let path = db.snapshot_dir().join(&file);
            std::fs::rename(&received, &path)?;
            sync_dir(&db.snapshot_dir())?;
            install_file(&db, &path, &file)
        })
        .await
        .map_err(|e| io_err(subject(), ErrorVerb::Write, e))?;
        self.db.snapshot_metrics().installed(started.elapsed());
        self.last_applied = installed.meta.last_log_id;
        self.membership = installed.meta.last_membership;
        self.revision = installed.revision;
        self.events_oldest = self.revision + 1;
        self.hub.reset(self.revision, self.events_oldest);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let read = |e: StoreError| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e);
        let mut current = read_meta::<CurrentSnapshot>(&self.db, KEY_SNAPSHOT).map_err(read)?;
        loop {
            let Some(recorded) = current else {
                return Ok(None);
            };
            let meta = recorded
                .meta()
                .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
            match tokio::fs::File::open(self.db.snapshot_dir().join(&recorded.file)).await {
                Ok(file) => {
                    return Ok(Some(Snapshot {
                        meta,
                        snapshot: Box::new(file),
                    }))
                }
                Err(e) => {
                    // A new snapshot is recorded before the old file is removed: if the
                    // record changed meanwhile, the new one is there to open. Open, a file
                    // stays readable when it is removed.
                    let now = read_meta::<CurrentSnapshot>(&self.db, KEY_SNAPSHOT).map_err(read)?;
                    let replaced = now.as_ref().map(|c| &c.file) != Some(&recorded.file);
                    if e.kind() != std::io::ErrorKind::NotFound || !replaced {
                        return Err(io_err(
                            ErrorSubject::Snapshot(Some(meta.signature())),
                            ErrorVerb::Read,
                            e,
                        ));
                    }
                    current = now;
                }
            }
        }
    }
}

/// Writes a snapshot file from the applied state and records it as the
/// current one, unless a newer one was installed meanwhile. Returns it open:
/// the file of one not recorded is removed at once.
fn build_snapshot_file(db: &Db) -> Result<(SnapshotMeta, std::fs::File), SnapshotError> {
    let built = write_building_file(db)?;
    finish_building(db, built)
}

/// A snapshot file written, not yet put in place.
struct Built {
    meta: SnapshotMeta,
    tmp: PathBuf,
    records: u64,
}

fn write_building_file(db: &Db) -> Result<Built, SnapshotError> {
    let tmp = db
        .snapshot_dir()
        .join(format!("building-{}.tmp", unix_millis()));
    let (meta, records) = write_snapshot_file(db, &tmp)?;
    // The log behind this snapshot is purged next: make the state machine
    // it describes durable first (here, off openraft's core, so that the
    // purge finds it done). After the file: the flush then holds all the
    // file holds.
    persist(db).map_err(|e| SnapshotError::Io(std::io::Error::other(e)))?;
    Ok(Built { meta, tmp, records })
}

fn finish_building(
    db: &Db,
    Built { meta, tmp, records }: Built,
) -> Result<(SnapshotMeta, std::fs::File), SnapshotError> {
    let _files = db.lock_snapshot_files();
    if newer_snapshot_recorded(db, &meta)? {
        // openraft keeps the newer one; this one only answers the build.
        let handle = std::fs::File::open(&tmp)?;
        std::fs::remove_file(&tmp)?;
        log::info!(
            "built snapshot {} but kept the newer one installed meanwhile",
            meta.snapshot_id
        );
        return Ok((meta, handle));
    }
    let file = format!("{}.snap", meta.snapshot_id);
    let path = db.snapshot_dir().join(&file);
    std::fs::rename(&tmp, &path)?;
    sync_dir(&db.snapshot_dir())?;
    let mut batch = WriteBatch::default();
    record_current_snapshot(db, &mut batch, &meta, &file);
    let mut sync = rocksdb::WriteOptions::default();
    sync.set_sync(true);
    db.rocks()
        .write_opt(batch, &sync)
        .map_err(|e| SnapshotError::Io(std::io::Error::other(e)))?;
    let handle = std::fs::File::open(&path)?;
    remove_other_snapshots(db, &file);
    log::info!(
        "built snapshot {} ({records} keys, last log id {:?})",
        meta.snapshot_id,
        meta.last_log_id
    );
    Ok((meta, handle))
}

/// Builds a snapshot from a consistent RocksDB view while writes go on.
pub struct SnapshotBuilder {
    db: Db,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let db = self.db.clone();
        let started = Instant::now();
        let (meta, file) = blocking(move || build_snapshot_file(&db))
            .await
            .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        self.db.snapshot_metrics().built(started.elapsed());
        Ok(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        })
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, RaftSnapshotBuilder};
    use tokio::io::AsyncWriteExt;

    use super::*;

    fn entry(index: u64, command: Command) -> Entry {
        batch_entry(index, vec![command])
    }

    fn batch_entry(index: u64, commands: Vec<Command>) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Normal(crate::command::Proposal { commands }),
        }
    }

    fn results(applied: Vec<ProposalResult>) -> Vec<CommandResult> {
        applied.into_iter().flat_map(|p| p.results).collect()
    }

    fn put(key: &str, value: &str, precondition: Option<Precondition>) -> Command {
        Command::Put {
            key: key.into(),
            value: value.into(),
            content_type: "text/plain".into(),
            precondition,
        }
    }

    fn delete(key: &str, precondition: Option<Precondition>) -> Command {
        Command::Delete {
            key: key.into(),
            precondition,
        }
    }

    /// Builds a snapshot of `sm` (whose directory is `dir`) and returns it with its file's bytes.
    async fn built_snapshot(sm: &mut StateMachine, dir: &Path) -> (Snapshot, Vec<u8>) {
        let snapshot = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let file = format!("{}.snap", snapshot.meta.snapshot_id);
        let bytes = std::fs::read(dir.join("snapshots").join(file)).unwrap();
        (snapshot, bytes)
    }

    async fn open_sm(dir: &Path) -> StateMachine {
        let (_, sm) = crate::open(dir, 0).await.unwrap();
        sm
    }

    /// Applied entries reach neither the WAL nor a file at once; the log
    /// behind them is purged only once the state machine's files hold them
    /// (else a restart could not apply them again).
    #[tokio::test]
    async fn the_log_is_purged_only_behind_a_flushed_state_machine() {
        use openraft::storage::RaftLogStorage;
        let dir = tempfile::tempdir().unwrap();
        let (mut log, mut sm) = crate::open(dir.path(), 0).await.unwrap();
        sm.apply(vec![
            entry(1, put("a", "1", None)),
            entry(2, put("b", "2", None)),
        ])
        .await
        .unwrap();
        let mut persisted = ReadOptions::default();
        persisted.set_read_tier(ReadTier::Persisted);
        let persisted_value = |key: &[u8]| {
            sm.db
                .rocks()
                .get_cf_opt(sm.db.cf(CF_DATA), key, &persisted)
                .unwrap()
        };
        assert_eq!(persisted_last_applied(&sm.db).unwrap(), None);
        assert_eq!(persisted_value(b"b"), None, "an applied write was logged");
        log.purge(LogId::new(CommittedLeaderId::new(1, 0), 2))
            .await
            .unwrap();
        assert_eq!(persisted_last_applied(&sm.db).unwrap(), Some(2));
        assert!(persisted_value(b"b").is_some());
    }

    /// A leader's own entries can be committed before they are on its
    /// disk: none is applied (so none is read or answered) before it is.
    #[tokio::test]
    async fn entries_are_applied_only_once_synced() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open_sm(dir.path()).await;
        sm.durability.hold_unsynced(2);
        sm.apply(vec![entry(1, put("a", "1", None))]).await.unwrap();
        let held = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            sm.apply(vec![entry(2, put("b", "2", None))]),
        )
        .await;
        assert!(held.is_err(), "entry 2 was applied before it was synced");
        assert!(sm.reader().get(b"b".to_vec()).await.unwrap().is_none());
        sm.durability.synced_write(|| Ok::<_, ()>(())).unwrap();
        sm.apply(vec![entry(2, put("b", "2", None))]).await.unwrap();
        assert!(sm.reader().get(b"b".to_vec()).await.unwrap().is_some());
    }

    /// A GET runs inline when memory holds the value and in the blocking
    /// pool when a file must be read: both find it.
    #[tokio::test]
    async fn a_value_only_in_a_file_is_read_through_the_blocking_pool() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open_sm(dir.path()).await;
        sm.apply(vec![entry(1, put("a", "1", None))]).await.unwrap();
        let reader = sm.reader();
        assert!(reader.get(b"a".to_vec()).await.unwrap().is_some());
        let db = &reader.db;
        db.rocks().flush_cf(db.cf(CF_DATA)).unwrap();
        let in_memory = read_value(db, b"a", now_ms(), rocksdb::ReadTier::BlockCache);
        assert!(
            matches!(&in_memory, Err(StoreError::Rocks(e)) if e.kind() == rocksdb::ErrorKind::Incomplete),
            "after a flush the value is only in a file: {in_memory:?}"
        );
        let read = reader.get(b"a".to_vec()).await.unwrap().unwrap();
        assert_eq!(read.value, b"1");
        assert!(reader.get(b"b".to_vec()).await.unwrap().is_none());
    }

    /// Revisions are the state machine's: one per write that changes a
    /// key, whatever the log indexes (here with gaps, as blank and
    /// membership entries make them).
    #[tokio::test]
    async fn apply_puts_deletes_and_preconditions_in_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open_sm(dir.path()).await;
        let applied = sm
            .apply(vec![
                entry(3, put("a", "1", Some(Precondition::Absent))),
                entry(4, put("a", "2", Some(Precondition::Absent))),
                entry(6, put("a", "3", Some(Precondition::RevisionIs(1)))),
                entry(7, put("a", "4", Some(Precondition::RevisionIs(1)))),
                entry(9, delete("b", None)),
                entry(10, delete("a", Some(Precondition::RevisionIs(1)))),
                entry(11, delete("a", None)),
                entry(12, put("a", "8", None)),
            ])
            .await
            .unwrap();
        assert_eq!(
            results(applied),
            vec![
                CommandResult::Written {
                    revision: 1,
                    created: true
                },
                CommandResult::PreconditionFailed { current: Some(1) },
                CommandResult::Written {
                    revision: 2,
                    created: false
                },
                CommandResult::PreconditionFailed { current: Some(2) },
                CommandResult::NotFound,
                CommandResult::PreconditionFailed { current: Some(2) },
                CommandResult::Deleted { revision: 3 },
                CommandResult::Written {
                    revision: 4,
                    created: true
                },
            ]
        );
        let stored = sm.reader().get(b"a".to_vec()).await.unwrap().unwrap();
        assert_eq!(stored.value, b"8");
        assert_eq!(
            (stored.meta.create_revision, stored.meta.mod_revision),
            (4, 4)
        );
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(12));
        assert_eq!(sm.reader().events().published(), 4);
    }

    /// In one entry, each command sees the ones before it: a precondition
    /// on a revision written earlier in the same batch holds, and the
    /// writes get consecutive revisions.
    #[tokio::test]
    async fn a_command_sees_the_earlier_commands_of_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open_sm(dir.path()).await;
        let applied = sm
            .apply(vec![batch_entry(
                5,
                vec![
                    put("a", "1", Some(Precondition::Absent)),
                    put("a", "2", Some(Precondition::Absent)),
                    put("a", "3", Some(Precondition::RevisionIs(1))),
                    delete("a", Some(Precondition::RevisionIs(2))),
                    put("a", "5", Some(Precondition::Absent)),
                ],
            )])
            .await
            .unwrap();
        assert_eq!(applied.len(), 1, "one result set per entry");
        assert_eq!(
            results(applied),
            vec![
                CommandResult::Written {
                    revision: 1,
                    created: true
                },
                CommandResult::PreconditionFailed { current: Some(1) },
                CommandResult::Written {
                    revision: 2,
                    created: false
                },
                CommandResult::Deleted { revision: 3 },
                CommandResult::Written {
                    revision: 4,
                    created: true
                },
            ]
        );
        let stored = sm.reader().get(b"a".to_vec()).await.unwrap().unwrap();
        assert_eq!(
            (stored.value.as_slice(), stored.meta.mod_revision),
            (&b"5"[..], 4)
        );
    }

    #[tokio::test]
    async fn applied_state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut sm = open_sm(dir.path()).await;
            sm.apply(vec![entry(1, put("k", "v", None))]).await.unwrap();
        }
        let mut sm = open_sm(dir.path()).await;
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(1));
        assert!(sm.reader().get(b"k".to_vec()).await.unwrap().is_some());
        // The revision counter goes on where it was.
        assert_eq!(sm.reader().events().published(), 1);
        let applied = sm.apply(vec![entry(2, put("k", "w", None))]).await.unwrap();
        assert_eq!(
            results(applied),
            vec![CommandResult::Written {
                revision: 2,
                created: false
            }]
        );
    }

    /// A new snapshot replaces the current one while openraft reads the current one (to send
    /// it to a follower): the read gets one of the two, never the old file's NotFound, which
    /// openraft takes for a storage failure and stops Raft on (seen in a soak: the leader
    /// stopped while it re-added a member).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reading_the_current_snapshot_races_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open_sm(dir.path()).await;
        sm.apply(vec![entry(1, put("k", "v", None))]).await.unwrap();
        let mut builder = sm.get_snapshot_builder().await;
        builder.build_snapshot().await.unwrap();
        let building = tokio::spawn(async move {
            for _ in 0..200 {
                builder.build_snapshot().await.unwrap();
            }
        });
        let mut reads = 0;
        while !building.is_finished() {
            let current = sm.get_current_snapshot().await;
            assert!(current.is_ok_and(|s| s.is_some()), "after {reads} reads");
            reads += 1;
        }
        building.await.unwrap();
    }

    /// Installing a snapshot replaces the whole state: keys it lacks are gone
    /// (the original Cete let deleted keys come back here).
    /// openraft builds a snapshot in a task of its own, so an install can
    /// land while a build is writing its file: neither may remove the
    /// other's file (a failed build or install stops the node), and the
    /// newer snapshot stays the current one.
    #[tokio::test]
    async fn a_snapshot_built_while_a_newer_one_is_installed_keeps_the_newer() {
        let source_dir = tempfile::tempdir().unwrap();
        let mut source = open_sm(source_dir.path()).await;
        source
            .apply(vec![entry(7, put("k", "new", None))])
            .await
            .unwrap();
        let (newer, bytes) = built_snapshot(&mut source, source_dir.path()).await;

        let dir = tempfile::tempdir().unwrap();
        let mut sm = open_sm(dir.path()).await;
        sm.apply(vec![entry(2, put("k", "old", None))])
            .await
            .unwrap();
        let db = sm.db.clone();
        let building = blocking(move || write_building_file(&db)).await.unwrap();
        let mut file = sm.begin_receiving_snapshot().await.unwrap();
        file.write_all(&bytes).await.unwrap();
        sm.install_snapshot(&newer.meta, file).await.unwrap();
        let db = sm.db.clone();
        let (built, _) = blocking(move || finish_building(&db, building))
            .await
            .expect("the build finishes beside the install");
        assert_eq!(built.last_log_id.map(|l| l.index), Some(2));

        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta.snapshot_id, newer.meta.snapshot_id);
        let files: Vec<String> = std::fs::read_dir(dir.path().join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(files, vec![format!("{}.snap", newer.meta.snapshot_id)]);
    }

    #[tokio::test]
    async fn install_replaces_everything() {
        let source_dir = tempfile::tempdir().unwrap();
        let mut source = open_sm(source_dir.path()).await;
        source
            .apply(vec![
                entry(5, put("keep", "1", None)),
                entry(6, put("gone", "2", None)),
            ])
            .await
            .unwrap();
        source
            .apply(vec![entry(8, delete("gone", None))])
            .await
            .unwrap();
        let (snapshot, bytes) = built_snapshot(&mut source, source_dir.path()).await;

        let target_dir = tempfile::tempdir().unwrap();
        let mut target = open_sm(target_dir.path()).await;
        target
            .apply(vec![
                entry(1, put("gone", "stale", None)),
                entry(2, put("other", "x", None)),
            ])
            .await
            .unwrap();
        let mut file = target.begin_receiving_snapshot().await.unwrap();
        file.write_all(&bytes).await.unwrap();
        target.install_snapshot(&snapshot.meta, file).await.unwrap();

        let reader = target.reader();
        assert!(reader.get(b"gone".to_vec()).await.unwrap().is_none());
        assert!(reader.get(b"other".to_vec()).await.unwrap().is_none());
        assert_eq!(
            reader.get(b"keep".to_vec()).await.unwrap().unwrap().value,
            b"1"
        );
        let (applied, _) = target.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(8));
        // The source's revision came with the snapshot, not the log index.
        assert_eq!(reader.events().published(), 3);
        let applied = target
            .apply(vec![entry(9, put("keep", "2", None))])
            .await
            .unwrap();
        assert_eq!(
            results(applied),
            vec![CommandResult::Written {
                revision: 4,
                created: false
            }]
        );
        let current = target.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta.snapshot_id, snapshot.meta.snapshot_id);
        // The history it had is gone: watches start after the snapshot.
        assert_eq!(
            reader.watch(Vec::new(), Some(1)).await.err(),
            Some(WatchError::Compacted {
                requested: 1,
                oldest: 4
            })
        );
        assert!(reader.watch(Vec::new(), Some(4)).await.is_ok());
        let mut reopened = target.reader().watch(Vec::new(), Some(4)).await.unwrap();
        let event = tokio::time::timeout(std::time::Duration::from_secs(5), reopened.next())
            .await
            .unwrap();
        assert!(matches!(&event, Ok(c) if c[0].revision == 4), "{event:?}");
    }

    #[tokio::test]
    async fn corrupt_snapshot_is_refused_and_state_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open_sm(dir.path()).await;
        sm.apply(vec![entry(1, put("k", "v", None))]).await.unwrap();
        let meta = SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 0), 9)),
            last_membership: Default::default(),
            snapshot_id: "bad".into(),
        };
        let mut file = sm.begin_receiving_snapshot().await.unwrap();
        file.write_all(b"CETESNP1 definitely not a snapshot")
            .await
            .unwrap();
        assert!(sm.install_snapshot(&meta, file).await.is_err());
        assert!(sm.reader().get(b"k".to_vec()).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn list_pages_in_order_within_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open_sm(dir.path()).await;
        let entries = ["a/1", "a/2", "a/3", "b/1", "a"]
            .iter()
            .enumerate()
            .map(|(i, k)| entry(i as u64 + 1, put(k, "v", None)))
            .collect::<Vec<_>>();
        sm.apply(entries).await.unwrap();
        let reader = sm.reader();
        let (page, more) = reader.list(b"a/".to_vec(), None, 2).await.unwrap();
        let keys: Vec<_> = page.iter().map(|e| e.key.clone()).collect();
        assert_eq!(keys, vec![b"a/1".to_vec(), b"a/2".to_vec()]);
        assert!(more);
        let (page, more) = reader
            .list(b"a/".to_vec(), Some(b"a/2".to_vec()), 2)
            .await
            .unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].key, b"a/3");
        assert!(!more);
    }

    fn put_at(key: &str, value: &str, at_ms: u64, ttl_ms: Option<u64>) -> Command {
        Command::PutAt {
            key: key.into(),
            value: value.into(),
            content_type: "text/plain".into(),
            precondition: None,
            at_ms,
            ttl_ms,
        }
    }

    /// Deadlines far in the past or the future of the real clock, so the
    /// reader's own clock (now) decides predictably.
    const PAST: u64 = 1_000;
    const FUTURE: u64 = u64::MAX / 2;

    #[tokio::test]
    async fn expiring_keys_are_hidden_then_deleted_by_their_expire_command() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open_sm(dir.path()).await;
        let applied = sm
            .apply(vec![batch_entry(
                1,
                vec![
                    put_at("gone", "1", PAST, Some(1)),
                    put_at("later", "2", PAST, Some(FUTURE)),
                    put_at("renewed", "3", PAST, Some(1)),
                    put_at("renewed", "4", PAST, None),
                ],
            )])
            .await
            .unwrap();
        assert_eq!(applied[0].results.len(), 4);
        let reader = sm.reader();
        // Past its deadline by this clock: never returned, though not deleted yet.
        assert!(reader.get(b"gone".to_vec()).await.unwrap().is_none());
        let later = reader.get(b"later".to_vec()).await.unwrap().unwrap();
        assert_eq!(later.meta.expires_at_ms, Some(PAST + FUTURE));
        let renewed = reader.get(b"renewed".to_vec()).await.unwrap().unwrap();
        assert_eq!(
            renewed.meta.expires_at_ms, None,
            "a put without ttl clears it"
        );
        let (listed, _) = reader.list(Vec::new(), None, 10).await.unwrap();
        let keys: Vec<_> = listed.iter().map(|e| e.key.clone()).collect();
        assert_eq!(keys, vec![b"later".to_vec(), b"renewed".to_vec()]);
        // Only "gone" is due; "renewed" left no index entry behind.
        let due = reader
            .due(None, crate::state_machine::now_ms(), 10)
            .await
            .unwrap();
        assert_eq!(due, vec![(b"gone".to_vec(), PAST + 1)]);
        let after = reader
            .due(Some((b"gone".to_vec(), PAST + 1)), u64::MAX - 1, 10)
            .await
            .unwrap();
        assert_eq!(
            after,
            vec![(b"later".to_vec(), PAST + FUTURE)],
            "after the cursor"
        );

        let mut watch = reader.watch(Vec::new(), None).await.unwrap();
        let applied = sm
            .apply(vec![batch_entry(
                2,
                vec![
                    Command::Expire {
                        key: b"gone".to_vec(),
                        deadline_ms: PAST + 1,
                    },
                    // A stale deadline (the key was renewed): nothing happens.
                    Command::Expire {
                        key: b"later".to_vec(),
                        deadline_ms: PAST + 1,
                    },
                ],
            )])
            .await
            .unwrap();
        assert_eq!(
            results(applied),
            vec![
                CommandResult::Deleted { revision: 5 },
                CommandResult::NotFound
            ]
        );
        let change = watch.next().await.unwrap();
        assert_eq!(change[0].kind, crate::events::EventKind::Expire);
        assert_eq!(change[0].key, b"gone");
        assert!(
            reader.due(None, u64::MAX - 1, 10).await.unwrap().len() == 1,
            "only later's entry"
        );
        assert!(reader.get(b"later".to_vec()).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn writes_treat_expired_keys_as_absent_at_the_leaders_clock() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open_sm(dir.path()).await;
        let lock = |at_ms| Command::PutAt {
            key: b"lock".to_vec(),
            value: b"me".to_vec(),
            content_type: String::new(),
            precondition: Some(Precondition::Absent),
            at_ms,
            ttl_ms: Some(100),
        };
        let applied = sm
            .apply(vec![batch_entry(
                1,
                // Taken at 1000 (expires at 1100); refused at 1099; taken
                // again at 1100, which first expires the old one.
                vec![lock(1000), lock(1099), lock(1100)],
            )])
            .await
            .unwrap();
        assert_eq!(
            results(applied),
            vec![
                CommandResult::Written {
                    revision: 1,
                    created: true
                },
                CommandResult::PreconditionFailed { current: Some(1) },
                CommandResult::Written {
                    revision: 3,
                    created: true
                },
            ]
        );
        let mut replay = sm.reader().watch(Vec::new(), Some(1)).await.unwrap();
        let kinds: Vec<_> = [
            replay.next().await.unwrap(),
            replay.next().await.unwrap(),
            replay.next().await.unwrap(),
        ]
        .iter()
        .map(|c| (c[0].revision, c[0].kind, c[0].create_revision))
        .collect();
        use crate::events::EventKind;
        assert_eq!(
            kinds,
            vec![
                (1, EventKind::Put, 1),
                (2, EventKind::Expire, 0),
                (3, EventKind::Put, 3)
            ]
        );
        // Legacy commands carry no clock: nothing counts as expired for them.
        let applied = sm
            .apply(vec![entry(2, put("lock", "x", Some(Precondition::Absent)))])
            .await
            .unwrap();
        assert_eq!(
            results(applied),
            vec![CommandResult::PreconditionFailed { current: Some(3) }]
        );
    }

    fn txn(compare: Vec<(&str, Compare)>, success: Vec<TxnOp>, failure: Vec<TxnOp>) -> Command {
        Command::Txn(Txn {
            compare: compare
                .into_iter()
                .map(|(k, c)| (k.as_bytes().to_vec(), c))
                .collect(),
            success,
            failure,
            at_ms: PAST,
        })
    }

    fn op_put(key: &str, value: &str) -> TxnOp {
        TxnOp::Put {
            key: key.into(),
            value: value.into(),
            content_type: "text/plain".into(),
            ttl_ms: None,
        }
    }

    fn op_get(key: &str) -> TxnOp {
        TxnOp::Get { key: key.into() }
    }

    #[tokio::test]
    async fn a_transaction_writes_at_one_revision_and_sees_its_own_writes() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open_sm(dir.path()).await;
        sm.apply(vec![entry(1, put("a", "1", None))]).await.unwrap();
        let mut watch = sm.reader().watch(Vec::new(), None).await.unwrap();
        let applied = sm
            .apply(vec![batch_entry(
                2,
                vec![
                    txn(
                        vec![
                            ("a", Compare::Revision(1)),
                            ("a", Compare::Value(b"1".to_vec())),
                            ("b", Compare::Absent),
                            ("a", Compare::Present),
                        ],
                        vec![
                            TxnOp::Delete { key: b"a".to_vec() },
                            op_put("b", "moved"),
                            op_get("b"),
                            op_get("a"),
                            TxnOp::Delete { key: b"c".to_vec() },
                        ],
                        vec![op_get("a")],
                    ),
                    // The same compare again, in the same entry: the first
                    // one's writes make it fail, so the failure branch reads.
                    txn(vec![("a", Compare::Present)], vec![], vec![op_get("b")]),
                ],
            )])
            .await
            .unwrap();
        let results = results(applied);
        let got_b = GotValue {
            value: b"moved".to_vec(),
            content_type: "text/plain".into(),
            create_revision: 2,
            mod_revision: 2,
            expires_at_ms: None,
        };
        assert_eq!(
            results,
            vec![
                CommandResult::Txn {
                    succeeded: true,
                    revision: 2,
                    results: vec![
                        TxnOpResult::Delete { revision: Some(2) },
                        TxnOpResult::Put {
                            revision: 2,
                            expires_at_ms: None
                        },
                        TxnOpResult::Get(Some(got_b.clone())),
                        TxnOpResult::Get(None),
                        TxnOpResult::Delete { revision: None },
                    ]
                },
                CommandResult::Txn {
                    succeeded: false,
                    revision: 2,
                    results: vec![TxnOpResult::Get(Some(got_b))]
                },
            ]
        );
        // Watchers get the transaction whole, in order, at one revision.
        let change = watch.next().await.unwrap();
        let seen: Vec<_> = change
            .iter()
            .map(|e| (e.revision, e.kind, e.key.clone()))
            .collect();
        use crate::events::EventKind;
        assert_eq!(
            seen,
            vec![
                (2, EventKind::Delete, b"a".to_vec()),
                (2, EventKind::Put, b"b".to_vec())
            ]
        );
    }

    #[tokio::test]
    async fn a_snapshot_install_rebuilds_the_expiry_index() {
        let source_dir = tempfile::tempdir().unwrap();
        let mut source = open_sm(source_dir.path()).await;
        source
            .apply(vec![batch_entry(
                1,
                vec![
                    put_at("due", "1", PAST, Some(1)),
                    put_at("plain", "2", PAST, None),
                ],
            )])
            .await
            .unwrap();
        let (snapshot, bytes) = built_snapshot(&mut source, source_dir.path()).await;
        let target_dir = tempfile::tempdir().unwrap();
        let mut target = open_sm(target_dir.path()).await;
        // A stale index entry of the target's own must not survive the install.
        target
            .apply(vec![entry(1, put_at("stale", "x", PAST, Some(2)))])
            .await
            .unwrap();
        let mut file = target.begin_receiving_snapshot().await.unwrap();
        file.write_all(&bytes).await.unwrap();
        target.install_snapshot(&snapshot.meta, file).await.unwrap();
        assert_eq!(
            target.reader().due(None, u64::MAX - 1, 10).await.unwrap(),
            vec![(b"due".to_vec(), PAST + 1)]
        );
    }
}
