//! The change history behind watches: every applied put and delete, kept in
//! the `events` column family for a bounded window of revisions, and handed
//! to live watchers as it is applied.
//!
//! Events are written in the same WriteBatch as the data change they
//! describe, so history and data never disagree, and every node that applies
//! the same log holds the same history. A node whose state is replaced by a
//! snapshot only knows events after the snapshot's revision.
//!
//! Live delivery never blocks apply: each watcher has a bounded queue, and a
//! watcher whose queue is full is ended with [`WatchError::TooSlow`] (it can
//! resume from its last revision, from the history).
//!
//! A revision may hold several events (a transaction's writes): the history
//! keys them by revision and position, and watchers receive them as one
//! [`Change`], never half of one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use rocksdb::{IteratorMode, ReadOptions, WriteBatch};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{blocking, decode, encode, Db, StoreError, CF_EVENTS, CF_META};

/// Meta key of the oldest revision the history still holds in full.
pub(crate) const KEY_EVENTS_OLDEST: &[u8] = b"events_oldest";

/// Default number of revisions kept for resuming watches.
pub const DEFAULT_WATCH_HISTORY: u64 = 100_000;

/// Values up to this size travel inside events; larger ones are announced
/// by size only (read them with a GET). This bounds the history on disk to
/// about `history x (key + 16 KiB)` at worst.
pub const MAX_EVENT_VALUE: usize = 16 * 1024;

/// Revisions queued for one live watcher before it counts as too slow.
pub const WATCHER_QUEUE: usize = 256;

/// Events read from the history per page while a watcher catches up.
const REPLAY_PAGE: usize = 256;
/// History entries examined per page (prefix filters skip most of them).
const REPLAY_SCAN: usize = 4096;
/// Beyond this many revisions a trim is one range deletion, not point deletes.
const POINT_DELETE_LIMIT: u64 = 4096;

/// Put or delete. New variants go at the end (history records name a
/// variant by its position).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
    /// A delete because the key's deadline passed.
    Expire,
}

/// One change to one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The revision of the change: the key's new modify revision.
    pub revision: u64,
    pub kind: EventKind,
    pub key: Vec<u8>,
    /// Puts only: the key's create revision.
    pub create_revision: u64,
    /// Puts only.
    pub content_type: String,
    /// Puts only: the value's size in bytes.
    pub size: u64,
    /// Puts only, and only values up to [`MAX_EVENT_VALUE`] bytes.
    pub value: Option<Vec<u8>>,
}

impl Event {
    pub fn put(
        revision: u64,
        key: &[u8],
        create_revision: u64,
        content_type: &str,
        value: &[u8],
    ) -> Event {
        Event {
            revision,
            kind: EventKind::Put,
            key: key.to_vec(),
            create_revision,
            content_type: content_type.to_string(),
            size: value.len() as u64,
            value: (value.len() <= MAX_EVENT_VALUE).then(|| value.to_vec()),
        }
    }

    pub fn delete(revision: u64, key: &[u8]) -> Event {
        Event::removal(revision, key, EventKind::Delete)
    }

    pub fn expire(revision: u64, key: &[u8]) -> Event {
        Event::removal(revision, key, EventKind::Expire)
    }

    fn removal(revision: u64, key: &[u8], kind: EventKind) -> Event {
        Event {
            revision,
            kind,
            key: key.to_vec(),
            create_revision: 0,
            content_type: String::new(),
            size: 0,
            value: None,
        }
    }
}

/// Why a watch cannot start or go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchError {
    /// `requested` is older than the history holds; `oldest` is the first
    /// revision it holds in full.
    Compacted {
        requested: u64,
        oldest: u64,
    },
    /// The watcher fell more than [`WATCHER_QUEUE`] events behind.
    TooSlow,
    /// The node is shutting down.
    Closed,
    Storage(String),
}

/// How a live subscription ended, set once by the hub.
type EndSlot = Arc<OnceLock<WatchError>>;

/// The events of one revision that a watcher's prefix matches, in order.
pub type Change = Vec<Arc<Event>>;

struct Subscriber {
    prefix: Vec<u8>,
    tx: mpsc::Sender<Change>,
    end: EndSlot,
}

struct HubState {
    /// Every event up to this revision is in the history on disk (or
    /// compacted); every later one goes to the subscribers.
    published: u64,
    subscribers: Vec<Subscriber>,
    closed: bool,
}

/// Fans applied events out to live watchers.
pub struct EventHub {
    state: Mutex<HubState>,
}

struct Subscription {
    rx: mpsc::Receiver<Change>,
    end: EndSlot,
}

impl EventHub {
    pub(crate) fn new(published: u64) -> EventHub {
        EventHub {
            state: Mutex::new(HubState {
                published,
                subscribers: Vec::new(),
                closed: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        // Nothing under this lock can leave the state half-changed.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last revision whose events were handed to watchers.
    pub fn published(&self) -> u64 {
        self.lock().published
    }

    /// Hands a batch's events (already durable in the history) to watchers,
    /// and records that everything up to revision `applied` is published.
    /// Never waits.
    pub(crate) fn publish(&self, events: &[Arc<Event>], applied: u64) {
        let mut state = self.lock();
        state.subscribers.retain(|sub| {
            if sub.tx.is_closed() {
                return false;
            }
            for revision in events.chunk_by(|a, b| a.revision == b.revision) {
                let change: Change = revision
                    .iter()
                    .filter(|e| e.key.starts_with(&sub.prefix))
                    .cloned()
                    .collect();
                if change.is_empty() {
                    continue;
                }
                match sub.tx.try_send(change) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        log::info!(
                            "dropping a watcher of prefix {:?}: {WATCHER_QUEUE} revisions behind at revision {}",
                            String::from_utf8_lossy(&sub.prefix),
                            revision[0].revision
                        );
                        let _ = sub.end.set(WatchError::TooSlow);
                        return false;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            true
        });
        state.published = state.published.max(applied);
    }

    /// After a snapshot install: the history restarts after `applied`, so
    /// every live watcher has a gap and is ended as compacted.
    pub(crate) fn reset(&self, applied: u64, oldest: u64) {
        let mut state = self.lock();
        for sub in state.subscribers.drain(..) {
            let _ = sub.end.set(WatchError::Compacted {
                requested: applied,
                oldest,
            });
        }
        state.published = applied;
    }

    /// Ends every watcher and refuses new ones: the node is stopping.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        for sub in state.subscribers.drain(..) {
            let _ = sub.end.set(WatchError::Closed);
        }
    }

    /// A live subscription and the revision after which it starts.
    fn subscribe(&self, prefix: &[u8]) -> Result<(Subscription, u64), WatchError> {
        let mut state = self.lock();
        if state.closed {
            return Err(WatchError::Closed);
        }
        let (tx, rx) = mpsc::channel(WATCHER_QUEUE);
        let end = EndSlot::default();
        state.subscribers.push(Subscriber {
            prefix: prefix.to_vec(),
            tx,
            end: end.clone(),
        });
        Ok((Subscription { rx, end }, state.published))
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Live watchers right now.
    pub fn watchers(&self) -> usize {
        self.lock()
            .subscribers
            .iter()
            .filter(|s| !s.tx.is_closed())
            .count()
    }
}

/// The history key of the event at `position` within its revision: the
/// revision alone for the first (as before revisions held several), then
/// revision and position, so a revision's events sort together, in order.
fn history_key(revision: u64, position: u32) -> Vec<u8> {
    let mut key = revision.to_be_bytes().to_vec();
    if position > 0 {
        key.extend_from_slice(&position.to_be_bytes());
    }
    key
}

fn revision_of(key: &[u8]) -> Result<u64, StoreError> {
    match key.len() {
        8 | 12 => Ok(u64::from_be_bytes(key[..8].try_into().expect("8 bytes"))),
        n => Err(StoreError::Corrupt {
            what: "event key",
            detail: format!("{n} bytes"),
        }),
    }
}

/// Adds `events` (in revision order) to the history in `batch` and trims it
/// to the last `history` revisions up to `applied`; returns the new oldest
/// revision.
pub(crate) fn record(
    db: &Db,
    batch: &mut WriteBatch,
    events: &[Arc<Event>],
    applied: u64,
    history: u64,
    oldest: u64,
) -> Result<u64, StoreError> {
    let cf = db.cf(CF_EVENTS);
    let mut keys = Vec::with_capacity(events.len());
    for revision in events.chunk_by(|a, b| a.revision == b.revision) {
        for (position, event) in revision.iter().enumerate() {
            let key = history_key(event.revision, position as u32);
            batch.put_cf(cf, &key, encode(event.as_ref()));
            keys.push((event.revision, key));
        }
    }
    // Deletes after the puts: a tiny window may trim events of this batch.
    let new_oldest = oldest.max((applied + 1).saturating_sub(history));
    if new_oldest > oldest {
        if new_oldest - oldest > POINT_DELETE_LIMIT {
            batch.delete_range_cf(cf, oldest.to_be_bytes(), new_oldest.to_be_bytes());
        } else {
            // A revision may hold several events: delete the keys there are.
            let mut opts = ReadOptions::default();
            opts.set_iterate_upper_bound(new_oldest.to_be_bytes());
            let start = oldest.to_be_bytes();
            let iter = db.rocks().iterator_cf_opt(
                cf,
                opts,
                IteratorMode::From(&start, rocksdb::Direction::Forward),
            );
            for item in iter {
                batch.delete_cf(cf, item?.0);
            }
            for (_, key) in keys.iter().filter(|(rev, _)| *rev < new_oldest) {
                batch.delete_cf(cf, key);
            }
        }
    }
    batch.put_cf(db.cf(CF_META), KEY_EVENTS_OLDEST, encode(&new_oldest));
    Ok(new_oldest)
}

/// Empties the history, which now starts after `applied` (snapshot install).
pub(crate) fn restart_after(db: &Db, batch: &mut WriteBatch, applied: u64) {
    batch.delete_range_cf(db.cf(CF_EVENTS), 0u64.to_be_bytes(), u64::MAX.to_be_bytes());
    batch.put_cf(db.cf(CF_META), KEY_EVENTS_OLDEST, encode(&(applied + 1)));
}

/// The oldest retained revision on disk: as recorded, else (a database from
/// before the history existed, or a new one) the revision after `applied`.
pub(crate) fn read_oldest(db: &Db, applied: u64) -> Result<u64, StoreError> {
    match db.rocks().get_cf(db.cf(CF_META), KEY_EVENTS_OLDEST)? {
        Some(raw) => decode("events oldest revision", &raw),
        None => Ok(applied + 1),
    }
}

/// A page of history: the changes with `from <= revision <= upto` matching
/// the prefix, whole revisions only, and the revision to continue from.
struct Page {
    changes: Vec<Change>,
    next: u64,
}

fn read_page(db: &Db, from: u64, upto: u64, prefix: &[u8]) -> Result<Page, WatchError> {
    let storage = |e: StoreError| WatchError::Storage(e.to_string());
    let view = db.rocks().snapshot();
    // The oldest mark and the events from one point in time, so a trim
    // between the two reads cannot hide a gap.
    let oldest: u64 = match view
        .get_cf(db.cf(CF_META), KEY_EVENTS_OLDEST)
        .map_err(|e| storage(e.into()))?
    {
        Some(raw) => decode("events oldest revision", &raw).map_err(storage)?,
        None => 1,
    };
    if from < oldest {
        return Err(WatchError::Compacted {
            requested: from,
            oldest,
        });
    }
    let mut opts = ReadOptions::default();
    opts.set_snapshot(&view);
    opts.set_iterate_upper_bound(upto.saturating_add(1).to_be_bytes());
    let start = from.to_be_bytes();
    let iter = db.rocks().iterator_cf_opt(
        db.cf(CF_EVENTS),
        opts,
        IteratorMode::From(&start, rocksdb::Direction::Forward),
    );
    let mut changes: Vec<Change> = Vec::new();
    let mut last = None;
    for (scanned, item) in iter.enumerate() {
        let (raw_key, raw) = item.map_err(|e| storage(e.into()))?;
        let revision = revision_of(&raw_key).map_err(storage)?;
        let full = changes.len() >= REPLAY_PAGE || scanned >= REPLAY_SCAN;
        // A page ends between revisions, never inside one.
        if full && last != Some(revision) {
            return Ok(Page {
                changes,
                next: revision,
            });
        }
        let event: Event = decode("event", &raw).map_err(storage)?;
        if event.key.starts_with(prefix) {
            match changes.last_mut() {
                Some(change) if change[0].revision == revision => change.push(Arc::new(event)),
                _ => changes.push(vec![Arc::new(event)]),
            }
        }
        last = Some(revision);
    }
    Ok(Page {
        changes,
        next: upto.saturating_add(1),
    })
}

/// The first revision a watch may start from on this node right now.
pub(crate) fn check_start(db: &Db, start: u64) -> Result<(), WatchError> {
    read_page(db, start, 0, b"").map(|_| ())
}

/// One watch: replays the history from its start revision, then follows
/// live events, with no gap and no duplicate between the two.
pub struct Watcher {
    db: Db,
    hub: Arc<EventHub>,
    prefix: Vec<u8>,
    /// The next revision this watcher may deliver.
    next: u64,
    /// Replay reads the history up to here.
    bound: u64,
    pending: VecDeque<Change>,
    live: Option<Subscription>,
    /// Replay is over; only the subscription is read.
    following: bool,
}

impl Watcher {
    /// Starts at `start` (every event with revision >= start), or with
    /// `None` at the next event applied. Refuses a compacted start.
    pub(crate) async fn start(
        db: Db,
        hub: Arc<EventHub>,
        prefix: Vec<u8>,
        start: Option<u64>,
    ) -> Result<Watcher, WatchError> {
        let mut watcher = Watcher {
            bound: hub.published(),
            db,
            hub,
            prefix,
            next: 0,
            pending: VecDeque::new(),
            live: None,
            following: false,
        };
        match start {
            None => {
                let (live, after) = watcher.hub.subscribe(&watcher.prefix)?;
                watcher.live = Some(live);
                watcher.next = after + 1;
                watcher.following = true;
            }
            Some(start) => {
                let db = watcher.db.clone();
                blocking(move || check_start(&db, start)).await?;
                watcher.next = start;
            }
        }
        Ok(watcher)
    }

    /// The first revision this watch can still deliver: its start, or for
    /// a watch "from now", the revision after the last one applied when it
    /// began. A client that reconnects asks for this one on.
    pub fn next_revision(&self) -> u64 {
        self.next
    }

    /// The next revision's events (those the prefix matches), in revision order.
    pub async fn next(&mut self) -> Result<Change, WatchError> {
        loop {
            if let Some(end) = self.live.as_ref().and_then(|l| l.end.get()) {
                return Err(match end {
                    // Name this watcher's own position, not the hub's.
                    WatchError::Compacted { oldest, .. } => WatchError::Compacted {
                        requested: self.next,
                        oldest: *oldest,
                    },
                    other => other.clone(),
                });
            }
            if let Some(change) = self.pending.pop_front() {
                self.next = self.next.max(change[0].revision + 1);
                return Ok(change);
            }
            if self.following {
                let live = self
                    .live
                    .as_mut()
                    .expect("following implies a subscription");
                match live.rx.recv().await {
                    // Replay already delivered it.
                    Some(change) if change[0].revision < self.next => continue,
                    Some(change) => {
                        self.next = change[0].revision + 1;
                        return Ok(change);
                    }
                    // Ended by the hub: the check above says why.
                    None if live.end.get().is_some() => continue,
                    None => return Err(WatchError::Closed),
                }
            }
            if self.next > self.bound {
                if self.live.is_none() {
                    // Caught up with the history: subscribe, then replay
                    // the few events applied meanwhile; later ones queue.
                    let (live, after) = self.hub.subscribe(&self.prefix)?;
                    self.live = Some(live);
                    self.bound = after;
                } else {
                    self.following = true;
                }
                continue;
            }
            if self.hub.is_closed() {
                return Err(WatchError::Closed);
            }
            let (db, prefix, from, upto) =
                (self.db.clone(), self.prefix.clone(), self.next, self.bound);
            let page = blocking(move || read_page(&db, from, upto, &prefix)).await?;
            self.pending.extend(page.changes);
            self.next = page.next.max(self.next);
            if self.live.is_none() && self.next > self.bound {
                // Applies went on during the replay: read up to the new end.
                self.bound = self.hub.published().max(self.bound);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(rev: u64, key: &str) -> Arc<Event> {
        Arc::new(Event::put(rev, key.as_bytes(), rev, "text/plain", b"v"))
    }

    fn write(db: &Db, events: &[Arc<Event>], applied: u64, history: u64, oldest: u64) -> u64 {
        let mut batch = WriteBatch::default();
        let oldest = record(db, &mut batch, events, applied, history, oldest).unwrap();
        db.rocks().write(batch).unwrap();
        oldest
    }

    #[test]
    fn history_is_trimmed_to_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let mut oldest = 1;
        for rev in 1..=10 {
            oldest = write(&db, &[put(rev, "k")], rev, 4, oldest);
        }
        assert_eq!(oldest, 7);
        assert_eq!(
            check_start(&db, 6),
            Err(WatchError::Compacted {
                requested: 6,
                oldest: 7
            })
        );
        let page = read_page(&db, 7, 10, b"").unwrap();
        let revs: Vec<_> = page.changes.iter().map(|c| c[0].revision).collect();
        assert_eq!(revs, vec![7, 8, 9, 10]);
        let count = db
            .rocks()
            .iterator_cf(db.cf(CF_EVENTS), IteratorMode::Start)
            .count();
        assert_eq!(count, 4, "trimmed events are deleted");
    }

    #[test]
    fn big_values_travel_by_size_only() {
        let big = vec![b'x'; MAX_EVENT_VALUE + 1];
        let event = Event::put(1, b"k", 1, "", &big);
        assert_eq!(event.size, big.len() as u64);
        assert!(event.value.is_none());
        assert!(Event::put(1, b"k", 1, "", &big[1..]).value.is_some());
    }

    #[tokio::test]
    async fn replay_then_live_has_no_gap_or_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let hub = Arc::new(EventHub::new(0));
        let mut oldest = 1;
        // Revision 3 is a hole (say, a membership entry).
        for rev in [1, 2, 4, 5] {
            let events = [put(rev, if rev == 2 { "other" } else { "a/k" })];
            oldest = write(&db, &events, rev, 100, oldest);
            hub.publish(&events, rev);
        }
        let mut watcher = Watcher::start(db.clone(), hub.clone(), b"a/".to_vec(), Some(1))
            .await
            .unwrap();
        assert_eq!(watcher.next().await.unwrap()[0].revision, 1);
        // Applied while the watcher replays: on disk, not yet published...
        let events = [put(6, "a/k")];
        write(&db, &events, 6, 100, oldest);
        assert_eq!(watcher.next().await.unwrap()[0].revision, 4);
        assert_eq!(watcher.next().await.unwrap()[0].revision, 5);
        // ...then published: delivered once.
        hub.publish(&events, 6);
        assert_eq!(watcher.next().await.unwrap()[0].revision, 6);
        let events = [put(7, "a/k")];
        write(&db, &events, 7, 100, oldest);
        hub.publish(&events, 7);
        assert_eq!(watcher.next().await.unwrap()[0].revision, 7);
    }

    #[tokio::test]
    async fn a_full_queue_ends_the_watcher_not_the_publisher() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let hub = Arc::new(EventHub::new(0));
        let mut slow = Watcher::start(db.clone(), hub.clone(), Vec::new(), None)
            .await
            .unwrap();
        for rev in 1..=(WATCHER_QUEUE as u64 + 1) {
            hub.publish(&[put(rev, "k")], rev);
        }
        assert_eq!(hub.watchers(), 0);
        assert_eq!(slow.next().await, Err(WatchError::TooSlow));
    }

    #[tokio::test]
    async fn snapshot_install_ends_live_watchers_as_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let hub = Arc::new(EventHub::new(0));
        let mut watcher = Watcher::start(db.clone(), hub.clone(), Vec::new(), None)
            .await
            .unwrap();
        hub.reset(50, 51);
        assert_eq!(
            watcher.next().await,
            Err(WatchError::Compacted {
                requested: 1,
                oldest: 51
            })
        );
        hub.close();
        assert_eq!(
            Watcher::start(db, hub, Vec::new(), None).await.err(),
            Some(WatchError::Closed)
        );
    }

    #[tokio::test]
    async fn a_revision_of_many_events_is_kept_paged_trimmed_and_delivered_whole() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let hub = Arc::new(EventHub::new(0));
        let mut oldest = 1;
        // Revision 1: one event; revision 2: a transaction of REPLAY_PAGE + 2
        // writes, so a page fills in the middle of it; revision 3: one event.
        let txn: Vec<_> = (0..REPLAY_PAGE + 2)
            .map(|i| put(2, &format!("t/{i:04}")))
            .collect();
        for (rev, events) in [(1, vec![put(1, "a")]), (2, txn), (3, vec![put(3, "b")])] {
            oldest = write(&db, &events, rev, 100, oldest);
            hub.publish(&events, rev);
        }
        let page = read_page(&db, 1, 3, b"").unwrap();
        let sizes: Vec<_> = page.changes.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1, REPLAY_PAGE + 2, 1], "no revision is split");
        let mut watcher = Watcher::start(db.clone(), hub.clone(), b"t/".to_vec(), Some(1))
            .await
            .unwrap();
        let change = watcher.next().await.unwrap();
        assert_eq!(change.len(), REPLAY_PAGE + 2);
        assert!(change.iter().all(|e| e.revision == 2));
        assert_eq!(change[0].key, b"t/0000");
        // Live: a transaction's events arrive together, filtered by prefix.
        let live = vec![put(4, "t/x"), put(4, "other"), put(4, "t/y")];
        write(&db, &live, 4, 100, oldest);
        hub.publish(&live, 4);
        let change = watcher.next().await.unwrap();
        let keys: Vec<_> = change.iter().map(|e| e.key.clone()).collect();
        assert_eq!(keys, vec![b"t/x".to_vec(), b"t/y".to_vec()]);
        // Trimming revision 2 deletes all of its events, and only those.
        let oldest = write(&db, &[put(5, "c")], 5, 3, oldest);
        assert_eq!(oldest, 3);
        let left = db
            .rocks()
            .iterator_cf(db.cf(CF_EVENTS), IteratorMode::Start)
            .count();
        assert_eq!(left, 1 + 3 + 1, "revisions 3, 4 (three events) and 5");
    }
}
