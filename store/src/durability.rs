//! Which log entries are on this node's disk.
//!
//! A leader's own appends are written without a sync and acknowledged to
//! openraft at once, so that it replicates them while a blocking task syncs
//! the write-ahead log: the leader's fsync runs beside the followers' instead
//! of before them (Raft thesis 10.2.1; etcd writes its own WAL in parallel
//! with replication the same way). Followers' appends, votes and truncations
//! stay synced before they are acknowledged.
//!
//! openraft then counts the leader's copy toward a commit before it is on
//! disk, so nothing may become visible before it is: the state machine
//! applies an entry only once it is synced here ([`Durability::wait_synced`]),
//! which comes before any answer to its write, and the leader hands out a
//! read index for a follower's read only once the entries up to it are
//! synced. So every acknowledged write, and every value a linearizable read
//! returns, is on the disks of a quorum.
//!
//! RocksDB has one write-ahead log, written in order, and a sync covers all
//! that was written before it: an unsynced write is on disk once any sync
//! (the background one, or a synced write) that began after it has ended.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::Db;

/// What is on disk, as waiters see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Synced {
    /// Every write so far.
    All,
    /// Every entry before this index; later ones may not be.
    Before(u64),
    /// A sync failed: nothing written since is known to be on disk.
    Failed,
}

fn synced_through(synced: &Synced, index: u64) -> bool {
    match *synced {
        Synced::All => true,
        Synced::Before(first) => first > index,
        Synced::Failed => false,
    }
}

/// A write that is not yet known to be synced.
struct Unsynced {
    /// Its place in the order of writes.
    seq: u64,
    /// The first log index it wrote.
    first_index: u64,
}

#[derive(Default)]
struct State {
    /// Writes made so far (each unsynced one gets the next number).
    seq: u64,
    unsynced: VecDeque<Unsynced>,
    /// Whether a sync task is running; it runs until `unsynced` is empty.
    syncing: bool,
    failed: bool,
}

impl State {
    fn synced(&self) -> Synced {
        if self.failed {
            return Synced::Failed;
        }
        // Truncations can rewrite lower indexes after higher ones: the least.
        match self.unsynced.iter().map(|u| u.first_index).min() {
            None => Synced::All,
            Some(index) => Synced::Before(index),
        }
    }

    /// Numbers an unsynced write starting at `first_index`, in write order.
    fn record(&mut self, first_index: u64) {
        self.seq += 1;
        let seq = self.seq;
        self.unsynced.push_back(Unsynced { seq, first_index });
    }

    /// Forgets the writes a sync that began after write `seq` covered.
    fn covered(&mut self, seq: u64) {
        while self.unsynced.front().is_some_and(|u| u.seq <= seq) {
            self.unsynced.pop_front();
        }
    }
}

/// See the module docs. One per database, shared by the log store and the
/// state machine.
pub struct Durability {
    db: Db,
    state: Mutex<State>,
    synced: watch::Sender<Synced>,
    /// Whether a leader's own appends are synced in the background: set
    /// while the cluster has voters other than this node.
    leader_background: AtomicBool,
}

/// Why an entry cannot be known to be on disk.
#[derive(Debug, thiserror::Error)]
#[error("syncing the raft log to disk failed earlier; this node stops writing")]
pub struct SyncFailed;

impl Durability {
    pub(crate) fn new(db: Db) -> Arc<Durability> {
        Arc::new(Durability {
            db,
            state: Mutex::new(State::default()),
            synced: watch::channel(Synced::All).0,
            leader_background: AtomicBool::new(false),
        })
    }

    /// Has this node's appends as leader synced in the background (`true`:
    /// it has followers to replicate to meanwhile) or inline.
    pub fn sync_leader_appends_in_background(&self, background: bool) {
        self.leader_background.store(background, Ordering::Relaxed);
    }

    pub fn leader_appends_in_background(&self) -> bool {
        self.leader_background.load(Ordering::Relaxed)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("durability lock is never poisoned")
    }

    fn publish(&self, state: &State) {
        self.synced.send_replace(state.synced());
    }

    /// Records a write, starting at `first_index`, that was made without a
    /// sync, and makes sure a sync follows. Call it after the write: a sync
    /// that begins earlier must not count as covering it.
    pub(crate) fn written_unsynced(self: &Arc<Self>, first_index: u64) -> Result<(), SyncFailed> {
        let mut state = self.state();
        if state.failed {
            return Err(SyncFailed);
        }
        state.record(first_index);
        self.publish(&state);
        if !state.syncing {
            state.syncing = true;
            let this = self.clone();
            tokio::task::spawn_blocking(move || this.sync_until_caught_up());
        }
        Ok(())
    }

    /// Runs `write`, a synced write, and counts everything written before it
    /// as synced once it succeeds.
    pub(crate) fn synced_write<T, E>(&self, write: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let before = self.state().seq;
        let result = write()?;
        let mut state = self.state();
        state.covered(before);
        self.publish(&state);
        Ok(result)
    }

    fn sync_until_caught_up(&self) {
        loop {
            let upto = {
                let mut state = self.state();
                if state.unsynced.is_empty() {
                    state.syncing = false;
                    return;
                }
                state.seq
            };
            let result = self.db.rocks().flush_wal(true);
            let mut state = self.state();
            match result {
                Ok(()) => state.covered(upto),
                Err(e) => {
                    log::error!("syncing the raft log failed: {e}; this node stops writing");
                    state.failed = true;
                    state.syncing = false;
                    self.publish(&state);
                    return;
                }
            }
            self.publish(&state);
        }
    }

    /// Records an unsynced write from `first_index` on without starting a
    /// sync, so that tests can hold entries unsynced.
    #[cfg(test)]
    pub(crate) fn hold_unsynced(&self, first_index: u64) {
        let mut state = self.state();
        state.record(first_index);
        self.publish(&state);
    }

    /// Whether the log entries up to `index` are on disk now.
    pub fn is_synced(&self, index: u64) -> bool {
        synced_through(&self.synced.borrow(), index)
    }

    /// Waits until the log entries up to `index` are on disk.
    pub async fn wait_synced(&self, index: u64) -> Result<(), SyncFailed> {
        let mut synced = self.synced.subscribe();
        let ready = |s: &Synced| *s == Synced::Failed || synced_through(s, index);
        // The sender lives as long as `self`, so the wait cannot fail.
        let status = *synced.wait_for(ready).await.map_err(|_| SyncFailed)?;
        match status {
            Synced::Failed => Err(SyncFailed),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn durability() -> (tempfile::TempDir, Arc<Durability>) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        (dir, Durability::new(db))
    }

    /// Whether a wait for `index` ends at once (a zero timeout still polls
    /// the wait first).
    async fn ready(d: &Durability, index: u64) -> bool {
        tokio::time::timeout(Duration::ZERO, d.wait_synced(index))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn entries_wait_for_the_sync_that_follows_their_write() {
        let (_dir, d) = durability();
        assert!(ready(&d, 10).await, "nothing written: everything is synced");
        d.hold_unsynced(5);
        assert!(
            ready(&d, 4).await,
            "entries before the unsynced write are synced"
        );
        assert!(!ready(&d, 5).await, "the unsynced write's entries are not");
        assert!(!ready(&d, 9).await);
        // A synced write after it covers it.
        d.synced_write(|| Ok::<_, ()>(())).unwrap();
        assert!(ready(&d, 9).await);
    }

    #[tokio::test]
    async fn the_background_sync_releases_the_waiters() {
        let (_dir, d) = durability();
        d.written_unsynced(1).unwrap();
        d.written_unsynced(2).unwrap();
        tokio::time::timeout(Duration::from_secs(10), d.wait_synced(2))
            .await
            .expect("the sync task syncs")
            .unwrap();
        assert_eq!(*d.synced.borrow(), Synced::All);
        // Later writes are synced too, whether the task still runs or not.
        d.written_unsynced(3).unwrap();
        tokio::time::timeout(Duration::from_secs(10), d.wait_synced(3))
            .await
            .expect("the sync task syncs again")
            .unwrap();
    }

    #[test]
    fn a_sync_covers_only_writes_made_before_it_began() {
        let mut state = State::default();
        // Writes 1, 2 and 3, from these indexes.
        for first_index in [1, 3, 2] {
            state.record(first_index);
        }
        // A truncation rewrote index 2 after index 3: the least counts.
        assert_eq!(state.synced(), Synced::Before(1));
        state.covered(1);
        assert_eq!(state.synced(), Synced::Before(2));
        state.covered(3);
        assert_eq!(state.synced(), Synced::All);
        state.failed = true;
        assert_eq!(state.synced(), Synced::Failed);
    }

    #[tokio::test]
    async fn waiters_learn_of_a_failed_sync() {
        let (_dir, d) = durability();
        {
            let mut state = d.state();
            state.failed = true;
            d.publish(&state);
        }
        assert!(d.wait_synced(1).await.is_err());
        assert!(d.written_unsynced(2).is_err(), "no more unsynced writes");
    }
}
