//! The Raft log and vote, on RocksDB.
//!
//! Durability rule: an append or a vote is acknowledged to openraft only once
//! its write batch is synced to the write-ahead log.
//!
//! openraft 0.9's core waits for each append's flush before it does anything
//! else, so appends never overlap and a separate syncing thread could never
//! group two of them: each append is one synced WriteBatch, written and
//! acknowledged on one blocking-pool thread with no further hand-off.
//! Grouping happens before the log, in `raft::proposer`, which packs
//! concurrent writes into one entry.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions};

use super::{blocking, decode, encode, io_err, Db, StoreError, CF_LOGS, CF_RAFT};
use crate::command::typ::{Entry, LogId, StorageError, Vote};
use crate::command::TypeConfig;

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

#[derive(Clone)]
pub struct LogStore {
    db: Db,
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn index_of(key: &[u8]) -> u64 {
    u64::from_be_bytes(key.try_into().expect("log keys are 8 bytes"))
}

fn synced() -> WriteOptions {
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    opts
}

/// The committed index this node last saved, if any (a blocking RocksDB
/// read), for metrics: openraft 0.9's own metrics do not carry it.
pub fn committed_index(db: &Db) -> Option<u64> {
    let raw = db.rocks().get_cf(db.cf(CF_RAFT), KEY_COMMITTED).ok()??;
    decode::<Option<LogId>>("raft state", &raw)
        .ok()
        .flatten()
        .map(|l| l.index)
}

impl LogStore {
    pub fn new(db: Db) -> LogStore {
        LogStore { db }
    }

    fn read_raft_key<T: serde::de::DeserializeOwned>(
        &self,
        key: &'static [u8],
    ) -> Result<Option<T>, StoreError> {
        match self.db.rocks().get_cf(self.db.cf(CF_RAFT), key)? {
            Some(raw) => Ok(Some(decode("raft state", &raw)?)),
            None => Ok(None),
        }
    }

    async fn write_raft_key<T: serde::Serialize>(
        &self,
        key: &'static [u8],
        value: &T,
        subject: ErrorSubject<u64>,
    ) -> Result<(), StorageError> {
        let raw = encode(value);
        let db = self.db.clone();
        blocking(move || {
            db.rocks()
                .put_cf_opt(db.cf(CF_RAFT), key, raw, &synced())
                .map_err(|e| io_err(subject, ErrorVerb::Write, e))
        })
        .await
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId>, StoreError> {
        let mut iter = self
            .db
            .rocks()
            .iterator_cf(self.db.cf(CF_LOGS), IteratorMode::End);
        match iter.next() {
            Some(item) => {
                let (_, raw) = item?;
                let entry: Entry = decode("log entry", &raw)?;
                Ok(Some(entry.log_id))
            }
            None => Ok(None),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Some(i + 1),
            Bound::Excluded(i) => Some(*i),
            Bound::Unbounded => None,
        };
        let db = self.db.clone();
        blocking(move || {
            let from = index_key(start);
            let mut entries = Vec::new();
            for item in db.rocks().iterator_cf(
                db.cf(CF_LOGS),
                IteratorMode::From(&from, Direction::Forward),
            ) {
                let (key, raw) =
                    item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                let index = index_of(&key);
                if end.is_some_and(|end| index >= end) {
                    break;
                }
                let entry: Entry = decode("log entry", &raw)
                    .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                entries.push(entry);
            }
            Ok(entries)
        })
        .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let read = |e: StoreError| io_err(ErrorSubject::Logs, ErrorVerb::Read, e);
        let last_purged_log_id: Option<LogId> =
            self.read_raft_key(KEY_LAST_PURGED).map_err(read)?;
        let last = self.last_entry_log_id().map_err(read)?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.write_raft_key(KEY_VOTE, vote, ErrorSubject::Vote)
            .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_raft_key(KEY_VOTE)
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Read, e))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not synced: the committed id is a hint that speeds up restarts; if it
        // is lost, openraft re-learns it from the leader.
        let raw = encode(&committed);
        let db = self.db.clone();
        blocking(move || {
            db.rocks()
                .put_cf(db.cf(CF_RAFT), KEY_COMMITTED, raw)
                .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))
        })
        .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self
            .read_raft_key::<Option<LogId>>(KEY_COMMITTED)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, e))?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let cf = self.db.cf(CF_LOGS);
        for entry in entries {
            batch.put_cf(cf, index_key(entry.log_id.index), encode(&entry));
        }
        let db = self.db.clone();
        // Readable and durable at once; acknowledged from the same thread.
        blocking(move || match db.rocks().write_opt(batch, &synced()) {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                log::error!("writing the raft log failed: {e}");
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(io_err(ErrorSubject::Logs, ErrorVerb::Write, e))
            }
        })
        .await
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        log::debug!("truncating the log from index {}", log_id.index);
        let db = self.db.clone();
        blocking(move || {
            db.rocks()
                .delete_range_cf(db.cf(CF_LOGS), index_key(log_id.index), index_key(u64::MAX))
                .and_then(|()| db.rocks().flush_wal(true))
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        log::debug!("purging the log up to index {}", log_id.index);
        // The purge mark goes first and durably: a crash between the two steps
        // leaves entries behind the mark, which reads then skip.
        self.write_raft_key(KEY_LAST_PURGED, &log_id, ErrorSubject::Logs)
            .await?;
        let db = self.db.clone();
        blocking(move || {
            db.rocks()
                .delete_range_cf(db.cf(CF_LOGS), index_key(0), index_key(log_id.index + 1))
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
        })
        .await
    }
}

/// Raft state of a node restored from a backup taken at `last`: the log is
/// purged up to `last` (so it continues after it), `last` is committed, and
/// the vote is this node's in `last`'s term (an election then moves to a
/// later term, so new entries sort after `last`). Synced.
pub(crate) fn write_restored_state(db: &Db, last: LogId, vote: Vote) -> Result<(), StoreError> {
    let mut batch = WriteBatch::default();
    let cf = db.cf(CF_RAFT);
    batch.put_cf(cf, KEY_LAST_PURGED, encode(&last));
    batch.put_cf(cf, KEY_COMMITTED, encode(&Some(last)));
    batch.put_cf(cf, KEY_VOTE, encode(&vote));
    db.rocks().write_opt(batch, &synced())?;
    Ok(())
}
