//! The Raft log and vote, on RocksDB.
//!
//! Durability rule: a vote, a truncation and a follower's append are
//! acknowledged to openraft only once their write batch is synced to the
//! write-ahead log. A leader's own appends are acknowledged once written and
//! synced in the background, beside replication; nothing is applied or
//! answered before they are synced (see `durability`).
//!
//! openraft 0.9's core waits for each append's flush before it does anything
//! else, so appends never overlap. Grouping happens before the log, in
//! `raft::proposer`, which packs concurrent writes into one entry. Each
//! append is one WriteBatch, written and acknowledged on the core's own task:
//! a hand-off to the blocking pool and back would only add two thread
//! wake-ups to every entry, on every node, while the core waits all the same.
//!
//! The newest entries are also kept in memory ([`Tail`]), so that a leader's
//! replication reads what it just appended without a RocksDB iterator on the
//! blocking pool (TiKV keeps an entry cache for the same reason).

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions};

use super::durability::Durability;
use super::state_machine;
use super::{blocking, decode, encode, io_err, Db, StoreError, CF_LOGS, CF_RAFT};
use crate::command::typ::{Entry, LogId, StorageError, Vote};
use crate::command::TypeConfig;

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

#[derive(Clone)]
pub struct LogStore {
    db: Db,
    /// This node's Raft id: its own entries as leader carry it.
    id: u64,
    /// The vote saved last (or read at start-up).
    vote: Arc<Mutex<Option<Vote>>>,
    tail: Arc<Mutex<Tail>>,
    durability: Arc<Durability>,
    /// The committed id saved last by this process.
    committed_hint: Arc<Mutex<Option<LogId>>>,
    /// The newest committed id not yet saved because the log is not synced
    /// that far; a task saves it once it is.
    waiting_hint: Arc<Mutex<Option<LogId>>>,
}

/// Encoded bytes of entries the [`Tail`] keeps at most: enough for the
/// entries a follower that keeps up still needs, small beside RocksDB's own
/// budget.
const TAIL_BYTES: usize = 4 << 20;

/// The newest log entries, contiguous and a suffix of the log whenever it is
/// not empty (every append passes through it; truncation and purging trim
/// it). Empty after a restart, until the first append.
#[derive(Default)]
struct Tail {
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
    limit: usize,
}

impl Tail {
    fn with_limit(limit: usize) -> Tail {
        Tail {
            limit,
            ..Tail::default()
        }
    }

    fn push(&mut self, entry: Entry, size: usize) {
        let follows = self
            .entries
            .back()
            .is_none_or(|(last, _)| last.log_id.index + 1 == entry.log_id.index);
        if !follows {
            self.entries.clear();
            self.bytes = 0;
        }
        self.bytes += size;
        self.entries.push_back((entry, size));
        while self.bytes > self.limit && self.entries.len() > 1 {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
        }
    }

    /// Drops the entries from `index` on.
    fn truncate(&mut self, index: u64) {
        while let Some((last, size)) = self.entries.back() {
            if last.log_id.index < index {
                break;
            }
            self.bytes -= size;
            self.entries.pop_back();
        }
    }

    /// Drops the entries up to and including `index`.
    fn purge(&mut self, index: u64) {
        while self
            .entries
            .front()
            .is_some_and(|(first, _)| first.log_id.index <= index)
        {
            self.pop_front();
        }
    }

    /// The entries in `start..end` (`end` None: to the last one), or None
    /// when the tail does not hold `start`, so the log must be read instead.
    fn get(&self, start: u64, end: Option<u64>) -> Option<Vec<Entry>> {
        let first = self.entries.front()?.0.log_id.index;
        if start < first {
            return None;
        }
        let from = usize::try_from(start - first).ok()?;
        let count = end.map_or(usize::MAX, |end| {
            usize::try_from(end.saturating_sub(start)).unwrap_or(usize::MAX)
        });
        Some(
            self.entries
                .iter()
                .skip(from)
                .take(count)
                .map(|(entry, _)| entry.clone())
                .collect(),
        )
    }
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
    pub(crate) fn new(db: Db, id: u64, durability: Arc<Durability>) -> LogStore {
        LogStore {
            db,
            id,
            vote: Arc::new(Mutex::new(None)),
            tail: Arc::new(Mutex::new(Tail::with_limit(TAIL_BYTES))),
            durability,
            committed_hint: Arc::new(Mutex::new(None)),
            waiting_hint: Arc::new(Mutex::new(None)),
        }
    }

    /// Which entries are on this node's disk.
    pub fn durability(&self) -> Arc<Durability> {
        self.durability.clone()
    }

    fn set_vote(&self, vote: Vote) {
        *self.vote.lock().expect("vote lock is never poisoned") = Some(vote);
    }

    /// Whether `entries` are this node's own, appended while it leads under
    /// the vote it saved last. Only that leader makes entries of that vote:
    /// a follower saves a newer leader's vote before it appends its entries,
    /// even entries this node once made itself.
    fn appended_as_leader(&self, entries: &[(Entry, usize)]) -> bool {
        let vote = self.vote.lock().expect("vote lock is never poisoned");
        vote.is_some_and(|vote| {
            vote.committed
                && vote.leader_id.node_id == self.id
                && entries
                    .iter()
                    .all(|(entry, _)| entry.log_id.leader_id == vote.leader_id)
        })
    }

    fn tail(&self) -> MutexGuard<'_, Tail> {
        self.tail.lock().expect("log tail lock is never poisoned")
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
        let (db, durability) = (self.db.clone(), self.durability.clone());
        blocking(move || {
            durability
                .synced_write(|| db.rocks().put_cf_opt(db.cf(CF_RAFT), key, raw, &synced()))
                .map_err(|e| io_err(subject, ErrorVerb::Write, e))
        })
        .await
    }

    /// Saves `committed` unless a later one is saved already. Neither synced
    /// nor in the write-ahead log: the committed id is a hint that speeds up
    /// restarts; if it is lost (or an older one is read back), openraft
    /// re-learns it from the leader. Without the WAL the put only touches the
    /// memtable, so it runs inline: the core waits for it on every commit,
    /// and the blocking pool would cost two wake-ups.
    fn write_committed_hint(&self, committed: LogId) -> Result<(), rocksdb::Error> {
        let mut saved = self
            .committed_hint
            .lock()
            .expect("committed hint lock is never poisoned");
        if saved.is_some_and(|saved| saved >= committed) {
            return Ok(());
        }
        let mut memtable_only = WriteOptions::default();
        memtable_only.disable_wal(true);
        self.db.rocks().put_cf_opt(
            self.db.cf(CF_RAFT),
            KEY_COMMITTED,
            encode(&Some(committed)),
            &memtable_only,
        )?;
        *saved = Some(committed);
        Ok(())
    }

    /// Saves the committed id that waits for the sync (the latest one a
    /// commit gave) once the log is synced that far, until none waits.
    async fn save_hints_once_synced(self) {
        loop {
            let Some(target) = *self
                .waiting_hint
                .lock()
                .expect("hint lock is never poisoned")
            else {
                return;
            };
            if self.durability.wait_synced(target.index).await.is_err() {
                // Nothing is synced after a failed sync: no later hint either.
                return;
            }
            if let Err(e) = self.write_committed_hint(target) {
                log::warn!("saving the committed index failed: {e}");
            }
            let mut waiting = self
                .waiting_hint
                .lock()
                .expect("hint lock is never poisoned");
            if *waiting == Some(target) {
                *waiting = None;
                return;
            }
        }
    }

    /// Writes `entries` as one batch, then keeps them in the tail. This
    /// node's own entries as leader are synced in the background, all others
    /// before this returns: inline, see the module docs (the core's task
    /// blocks for the sync, which it would wait for anyway).
    fn write_entries(&self, entries: impl IntoIterator<Item = Entry>) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        let cf = self.db.cf(CF_LOGS);
        let mut appended = Vec::new();
        for entry in entries {
            let raw = encode(&entry);
            batch.put_cf(cf, index_key(entry.log_id.index), &raw);
            appended.push((entry, raw.len()));
        }
        let Some(first) = appended.first().map(|(entry, _)| entry.log_id.index) else {
            return Ok(());
        };
        let failed = |e: &dyn std::error::Error| {
            io_err(
                ErrorSubject::Logs,
                ErrorVerb::Write,
                std::io::Error::other(e.to_string()),
            )
        };
        if self.durability.leader_appends_in_background() && self.appended_as_leader(&appended) {
            self.db.rocks().write(batch).map_err(|e| failed(&e))?;
            self.durability
                .written_unsynced(first)
                .map_err(|e| failed(&e))?;
        } else {
            self.durability
                .synced_write(|| self.db.rocks().write_opt(batch, &synced()))
                .map_err(|e| failed(&e))?;
        }
        let mut tail = self.tail();
        for (entry, size) in appended {
            tail.push(entry, size);
        }
        Ok(())
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
        if let Some(entries) = self.tail().get(start, end) {
            return Ok(entries);
        }
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
            .await?;
        self.set_vote(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        let vote: Option<Vote> = self
            .read_raft_key(KEY_VOTE)
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Read, e))?;
        if let Some(vote) = vote {
            self.set_vote(vote);
        }
        Ok(vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Nor ahead of the log on disk: a leader's own entries are committed
        // before it has synced them, so their hint waits for the sync.
        // One task at a time waits; a later commit only moves its target.
        if let Some(ahead) = committed.filter(|c| !self.durability.is_synced(c.index)) {
            let waiting = self
                .waiting_hint
                .lock()
                .expect("hint lock is never poisoned")
                .replace(ahead);
            if waiting.is_none() {
                tokio::spawn(self.clone().save_hints_once_synced());
            }
            return Ok(());
        }
        match committed {
            Some(committed) => self
                .write_committed_hint(committed)
                .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e)),
            None => Ok(()),
        }
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
        match self.write_entries(entries) {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                log::error!("writing the raft log failed: {e}");
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        log::debug!("truncating the log from index {}", log_id.index);
        self.tail().truncate(log_id.index);
        let (db, durability) = (self.db.clone(), self.durability.clone());
        blocking(move || {
            durability
                .synced_write(|| {
                    db.rocks()
                        .delete_range_cf(
                            db.cf(CF_LOGS),
                            index_key(log_id.index),
                            index_key(u64::MAX),
                        )
                        .and_then(|()| db.rocks().flush_wal(true))
                })
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        log::debug!("purging the log up to index {}", log_id.index);
        self.tail().purge(log_id.index);
        // The purge mark goes first and durably: a crash between the two steps
        // leaves entries behind the mark, which reads then skip.
        self.write_raft_key(KEY_LAST_PURGED, &log_id, ErrorSubject::Logs)
            .await?;
        let db = self.db.clone();
        blocking(move || {
            // Applied entries are not in the WAL: until the state machine is
            // flushed past them, a restart applies them again from here.
            state_machine::persist_through(&db, log_id.index)
                .map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Write, e))?;
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

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 0), index)
    }

    fn blank(term: u64, index: u64) -> Entry {
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Blank,
        }
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    fn tail_of(range: std::ops::Range<u64>, limit: usize) -> Tail {
        let mut tail = Tail::with_limit(limit);
        for index in range {
            tail.push(blank(1, index), 10);
        }
        tail
    }

    #[test]
    fn the_tail_serves_only_ranges_it_holds_from_their_start() {
        let tail = tail_of(5..10, 1000);
        assert_eq!(indexes(&tail.get(5, Some(8)).unwrap()), [5, 6, 7]);
        assert_eq!(indexes(&tail.get(7, None).unwrap()), [7, 8, 9]);
        assert_eq!(indexes(&tail.get(8, Some(100)).unwrap()), [8, 9]);
        assert!(tail.get(10, None).unwrap().is_empty());
        assert!(tail.get(4, Some(6)).is_none(), "index 4 is only in the log");
        assert!(Tail::with_limit(1000).get(0, None).is_none());
    }

    #[test]
    fn the_tail_keeps_the_newest_entries_within_its_byte_limit() {
        let tail = tail_of(1..11, 35);
        assert_eq!(indexes(&tail.get(8, None).unwrap()), [8, 9, 10]);
        assert_eq!(tail.bytes, 30);
        assert!(tail.get(7, None).is_none());
        // One entry above the limit is still kept: it is the newest.
        let mut tail = Tail::with_limit(5);
        tail.push(blank(1, 1), 10);
        assert_eq!(indexes(&tail.get(1, None).unwrap()), [1]);
    }

    #[test]
    fn the_tail_follows_truncation_purging_and_a_gap() {
        let mut tail = tail_of(1..6, 1000);
        tail.truncate(4);
        assert_eq!(indexes(&tail.get(1, None).unwrap()), [1, 2, 3]);
        tail.push(blank(2, 4), 10);
        assert_eq!(tail.get(4, None).unwrap()[0].log_id.leader_id.term, 2);
        tail.purge(2);
        assert_eq!(indexes(&tail.get(3, None).unwrap()), [3, 4]);
        assert!(tail.get(2, None).is_none());
        // An append that does not follow the last entry starts a new tail.
        tail.push(blank(2, 9), 10);
        assert!(tail.get(3, None).is_none());
        assert_eq!(indexes(&tail.get(9, None).unwrap()), [9]);
        assert_eq!(tail.bytes, 10);
    }

    #[tokio::test]
    async fn only_the_leaders_own_entries_skip_the_inline_sync() {
        let dir = tempfile::TempDir::new().unwrap();
        let (mut store, _sm) = crate::open(dir.path(), 7).await.unwrap();
        let entry = |term, node| Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, node), 1),
            payload: EntryPayload::Blank,
        };
        // A clone shares the vote, and leaves `store` free to save votes.
        let reader = store.clone();
        let own = |entries: &[Entry]| {
            let sized: Vec<_> = entries.iter().map(|e| (e.clone(), 0)).collect();
            reader.appended_as_leader(&sized)
        };
        assert!(!own(&[entry(3, 7)]), "no vote saved yet");
        let mut vote = Vote::new(3, 7);
        store.save_vote(&vote).await.unwrap();
        assert!(!own(&[entry(3, 7)]), "a candidate's vote is not a leader's");
        vote.commit();
        store.save_vote(&vote).await.unwrap();
        assert!(own(&[entry(3, 7)]));
        assert!(
            !own(&[entry(3, 7), entry(2, 7)]),
            "an entry of an earlier term"
        );
        store.save_vote(&Vote::new_committed(4, 2)).await.unwrap();
        assert!(
            !own(&[entry(4, 2)]),
            "a follower's entries from another leader"
        );
        assert!(
            !own(&[entry(3, 7)]),
            "its own old entries, sent back by a new leader"
        );
        drop((store, reader, _sm));
        // The vote read back at start-up counts the same.
        let (mut store, _sm) = crate::open(dir.path(), 2).await.unwrap();
        store.read_vote().await.unwrap();
        assert!(store.appended_as_leader(&[(entry(4, 2), 0)]));
    }

    #[tokio::test]
    async fn a_leaders_own_entries_are_synced_in_the_background() {
        let dir = tempfile::TempDir::new().unwrap();
        let (mut store, _sm) = crate::open(dir.path(), 7).await.unwrap();
        store.save_vote(&Vote::new_committed(1, 7)).await.unwrap();
        store.durability.sync_leader_appends_in_background(true);
        let own = |index| Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 7), index),
            payload: EntryPayload::Blank,
        };
        store.write_entries((1..4).map(own)).unwrap();
        let durability = store.durability();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            durability.wait_synced(3),
        )
        .await
        .expect("the background sync ends")
        .unwrap();
        assert_eq!(
            indexes(&store.try_get_log_entries(1..).await.unwrap()),
            [1, 2, 3]
        );
    }

    #[tokio::test]
    async fn the_committed_hint_never_runs_ahead_of_the_synced_log() {
        let dir = tempfile::TempDir::new().unwrap();
        let (mut store, _sm) = crate::open(dir.path(), 0).await.unwrap();
        store.save_committed(Some(log_id(1, 4))).await.unwrap();
        store.durability.hold_unsynced(5);
        store.save_committed(Some(log_id(1, 5))).await.unwrap();
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 4)));
        // Saved once synced, and never over a later one.
        store.durability.synced_write(|| Ok::<_, ()>(())).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.read_committed().await.unwrap() != Some(log_id(1, 5)) {
            assert!(
                std::time::Instant::now() < deadline,
                "the hint is saved after the sync"
            );
            tokio::task::yield_now().await;
        }
        store.save_committed(Some(log_id(1, 6))).await.unwrap();
        store.write_committed_hint(log_id(1, 5)).unwrap();
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 6)));
    }

    #[tokio::test]
    async fn reads_agree_with_the_log_whether_the_tail_holds_them_or_not() {
        let dir = tempfile::TempDir::new().unwrap();
        let (mut store, _sm) = crate::open(dir.path(), 0).await.unwrap();
        store.write_entries((1..6).map(|i| blank(1, i))).unwrap();
        assert_eq!(
            indexes(&store.try_get_log_entries(2..4).await.unwrap()),
            [2, 3]
        );
        store.truncate(log_id(1, 4)).await.unwrap();
        assert_eq!(
            indexes(&store.try_get_log_entries(1..).await.unwrap()),
            [1, 2, 3]
        );
        store.purge(log_id(1, 1)).await.unwrap();
        assert_eq!(
            indexes(&store.try_get_log_entries(0..).await.unwrap()),
            [2, 3]
        );
        drop((store, _sm));

        // After a restart the tail is empty: reads go to RocksDB, and an
        // append does not hide the entries before it.
        let (mut store, _sm) = crate::open(dir.path(), 0).await.unwrap();
        store.write_entries([blank(1, 4)]).unwrap();
        assert_eq!(
            indexes(&store.try_get_log_entries(2..).await.unwrap()),
            [2, 3, 4]
        );
        assert_eq!(
            indexes(&store.try_get_log_entries(4..5).await.unwrap()),
            [4]
        );
    }
}
