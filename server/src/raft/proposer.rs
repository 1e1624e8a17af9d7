//! Packs concurrent client writes into shared Raft log entries.
//!
//! openraft 0.9 makes one log entry per `client_write`, and its core waits
//! for each entry's WAL sync before it handles the next message, so writes
//! proposed one by one cost one fsync each, in series, on every node. The
//! proposer sits in front of it (as etcd collects proposals during one
//! Ready): the writes that queue while earlier proposals are in flight go
//! into the next [`Proposal`] together, up to [`Limits`]. A few proposals
//! wait for their commit at once (more while the leader syncs its own
//! appends in the background), so the next batch fills while they do;
//! alone, a write is proposed at once.
//!
//! Commands keep their order of arrival, inside a proposal and across
//! proposals (each is handed to openraft before the next is packed). Their
//! preconditions are checked at apply time, command by command, so a command
//! sees the ones before it in the same entry. Every request of a proposal
//! gets the same fate: its own result once committed and applied, or the
//! same error (`Timeout` when the outcome is unknown).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cete_store::durability::Durability;
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Notify};

use super::typ::Raft;
use super::{Command, CommandResult, NodeId, NodeInfo, Proposal};

/// Bounds of one proposal and of the proposals in flight.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Commands in one log entry at most.
    pub max_commands: usize,
    /// Bytes of commands in one log entry at most (a single larger command
    /// still goes, alone).
    pub max_bytes: usize,
    /// Proposals waiting for their commit at once while the leader syncs
    /// its own appends inline (it is the only voter).
    pub in_flight_inline: usize,
    /// Proposals waiting for their commit at once while the leader syncs
    /// its own appends in the background (see cete_store::durability).
    pub in_flight_replicated: usize,
    /// How long a proposal may wait for its commit before its outcome is
    /// reported unknown.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_commands: 512,
            max_bytes: 1 << 20,
            // Inline, each entry costs openraft's core a sync in series: one
            // proposal syncing while the next fills (on one node, 8 instead
            // of 2 gave 0.8x the writes at c=4 and 0.7x at c=64).
            in_flight_inline: 2,
            // In the background, an append costs the core only a WAL write,
            // and entries appended while an AppendEntries is out go together
            // in the next one, so a proposal need not wait a whole round in
            // here for a slot (on three nodes, 4 instead of 2 gave 1.4x the
            // writes at c=4 and 1.1x at c=64; 8 and 16 no more than 4).
            in_flight_replicated: 4,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why a write got no result.
#[derive(Debug, Clone)]
pub enum ProposeError {
    /// openraft refused the proposal: this node does not lead, or Raft stopped.
    Raft(Box<RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>>),
    /// Handed to Raft, but not committed within the timeout: it may still be.
    Timeout(Duration),
    /// Handed to Raft, which stopped before it answered: it may be committed.
    Abandoned,
    /// The proposer is gone (the node is stopping); never handed to Raft.
    Stopped,
}

struct Pending {
    command: Command,
    reply: oneshot::Sender<Result<CommandResult, ProposeError>>,
}

/// Counts for metrics: proposals made and commands they carried.
#[derive(Debug, Default)]
pub struct ProposerStats {
    pub proposals: AtomicU64,
    pub commands: AtomicU64,
}

/// The handle writes go through; see the module docs.
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::Sender<Pending>,
    stats: Arc<ProposerStats>,
}

/// Writes queued before the proposer pushes back on callers.
const QUEUE: usize = 8192;

impl Proposer {
    /// Starts the proposer task for `raft`, whose log store syncs through
    /// `durability`.
    pub fn start(raft: Raft, limits: Limits, durability: Arc<Durability>) -> Proposer {
        let (queue, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(ProposerStats::default());
        tokio::spawn(run(raft, rx, limits, durability, stats.clone()));
        Proposer { queue, stats }
    }

    /// Proposes `command` and waits until it is applied.
    pub async fn propose(&self, command: Command) -> Result<CommandResult, ProposeError> {
        let (reply, result) = oneshot::channel();
        self.queue
            .send(Pending { command, reply })
            .await
            .map_err(|_| ProposeError::Stopped)?;
        // A dropped reply means the proposer stopped after taking the
        // command; it may have been handed to Raft.
        result.await.unwrap_or(Err(ProposeError::Abandoned))
    }

    pub fn stats(&self) -> &ProposerStats {
        &self.stats
    }
}

async fn run(
    raft: Raft,
    mut queue: mpsc::Receiver<Pending>,
    limits: Limits,
    durability: Arc<Durability>,
    stats: Arc<ProposerStats>,
) {
    let slots = Slots::new();
    let mut carried: Option<Pending> = None;
    loop {
        // A free slot first, then everything that queued meanwhile.
        let limit = if durability.leader_appends_in_background() {
            limits.in_flight_replicated
        } else {
            limits.in_flight_inline
        };
        let slot = slots.take(limit).await;
        let first = match carried.take() {
            Some(p) => p,
            None => match queue.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let batch = take_batch(first, &mut queue, &mut carried, &limits);
        stats.proposals.fetch_add(1, Ordering::Relaxed);
        stats
            .commands
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let (commands, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|p| (p.command, p.reply)).unzip();
        let planted_early_ack = crate::faults::settings().early_ack;
        let early_answers = planted_early_ack.then(|| guessed_results(&commands));
        // Handed over here, in order, before the next batch is packed.
        match raft.client_write_ff(Proposal { commands }).await {
            Err(fatal) => answer_all(
                replies,
                Err(ProposeError::Raft(Box::new(RaftError::Fatal(fatal)))),
            ),
            Ok(response) => {
                let mut replies = Some(replies);
                if let Some(answers) = early_answers {
                    // Deliberately broken (test only, see faults.rs): answers
                    // before the commit.
                    for (reply, answer) in replies.take().into_iter().flatten().zip(answers) {
                        let _ = reply.send(Ok(answer));
                    }
                }
                let timeout = limits.timeout;
                tokio::spawn(async move {
                    let outcome = tokio::time::timeout(timeout, response).await;
                    drop(slot);
                    let Some(replies) = replies else { return };
                    match outcome {
                        Err(_) => answer_all(replies, Err(ProposeError::Timeout(timeout))),
                        Ok(Err(_)) => answer_all(replies, Err(ProposeError::Abandoned)),
                        Ok(Ok(Err(refused))) => answer_all(
                            replies,
                            Err(ProposeError::Raft(Box::new(RaftError::APIError(refused)))),
                        ),
                        Ok(Ok(Ok(written))) => {
                            let results = written.data.results;
                            if results.len() != replies.len() {
                                log::error!(
                                    "a proposal of {} commands applied with {} results",
                                    replies.len(),
                                    results.len()
                                );
                                return answer_all(replies, Err(ProposeError::Abandoned));
                            }
                            for (reply, result) in replies.into_iter().zip(results) {
                                let _ = reply.send(Ok(result));
                            }
                        }
                    }
                });
            }
        }
    }
}

/// Proposals in flight, under a limit that may change between proposals
/// (a semaphore's may not).
struct Slots {
    taken: AtomicUsize,
    freed: Notify,
}

/// One proposal's place among those in flight, given back when dropped.
struct Slot(Arc<Slots>);

impl Slots {
    fn new() -> Arc<Slots> {
        Arc::new(Slots {
            taken: AtomicUsize::new(0),
            freed: Notify::new(),
        })
    }

    /// Waits until fewer than `limit` (at least one) are taken, and takes one.
    /// Only one task takes slots.
    async fn take(self: &Arc<Self>, limit: usize) -> Slot {
        loop {
            // Made before the check, so that a slot freed after it wakes us.
            let freed = self.freed.notified();
            if self.taken.load(Ordering::Acquire) < limit.max(1) {
                self.taken.fetch_add(1, Ordering::AcqRel);
                return Slot(self.clone());
            }
            freed.await;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::AcqRel);
        self.0.freed.notify_one();
    }
}

fn answer_all(
    replies: Vec<oneshot::Sender<Result<CommandResult, ProposeError>>>,
    outcome: Result<CommandResult, ProposeError>,
) {
    for reply in replies {
        let _ = reply.send(outcome.clone());
    }
}

/// Packs `first` and what is queued behind it, up to the limits. A command
/// that would overflow the byte cap is kept in `carried` for the next batch.
fn take_batch(
    first: Pending,
    queue: &mut mpsc::Receiver<Pending>,
    carried: &mut Option<Pending>,
    limits: &Limits,
) -> Vec<Pending> {
    let mut bytes = first.command.size();
    let mut batch = vec![first];
    while batch.len() < limits.max_commands {
        let Ok(next) = queue.try_recv() else { break };
        let size = next.command.size();
        if bytes + size > limits.max_bytes {
            *carried = Some(next);
            break;
        }
        bytes += size;
        batch.push(next);
    }
    batch
}

/// The planted bug's answers: what a write would get if nothing else changed.
fn guessed_results(commands: &[Command]) -> Vec<CommandResult> {
    commands
        .iter()
        .map(|c| match c {
            Command::Put { .. } | Command::PutAt { .. } => CommandResult::Written {
                revision: 1,
                created: true,
            },
            Command::Delete { .. } | Command::DeleteAt { .. } | Command::Expire { .. } => {
                CommandResult::Deleted { revision: 1 }
            }
            Command::Txn(_) => CommandResult::Txn {
                succeeded: true,
                revision: 1,
                results: Vec::new(),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, size: usize) -> Command {
        Command::Put {
            key: key.as_bytes().to_vec(),
            value: vec![b'x'; size],
            content_type: String::new(),
            precondition: None,
        }
    }

    fn queue_of(commands: Vec<Command>) -> mpsc::Receiver<Pending> {
        let (tx, rx) = mpsc::channel(commands.len().max(1));
        for command in commands {
            let (reply, _) = oneshot::channel();
            tx.try_send(Pending { command, reply }).unwrap();
        }
        rx
    }

    fn keys(batch: &[Pending]) -> Vec<String> {
        batch
            .iter()
            .map(|p| String::from_utf8(p.command.key().unwrap().to_vec()).unwrap())
            .collect()
    }

    fn limits(max_commands: usize, max_bytes: usize) -> Limits {
        Limits {
            max_commands,
            max_bytes,
            ..Limits::default()
        }
    }

    #[test]
    fn a_batch_stops_at_the_command_cap_in_arrival_order() {
        let mut queue = queue_of((0..5).map(|i| put(&i.to_string(), 1)).collect());
        let mut carried = None;
        let first = queue.try_recv().unwrap();
        let batch = take_batch(first, &mut queue, &mut carried, &limits(3, 1 << 20));
        assert_eq!(keys(&batch), ["0", "1", "2"]);
        assert!(carried.is_none());
        let first = queue.try_recv().unwrap();
        let batch = take_batch(first, &mut queue, &mut carried, &limits(3, 1 << 20));
        assert_eq!(keys(&batch), ["3", "4"]);
    }

    #[test]
    fn a_batch_stops_at_the_byte_cap_and_carries_the_next_command() {
        // Each put is 100 value bytes + 1 key byte + 32 overhead = 133 bytes.
        let mut queue = queue_of((0..4).map(|i| put(&i.to_string(), 100)).collect());
        let mut carried = None;
        let first = queue.try_recv().unwrap();
        let batch = take_batch(first, &mut queue, &mut carried, &limits(100, 300));
        assert_eq!(keys(&batch), ["0", "1"]);
        let next = carried.take().expect("the third command is carried over");
        let batch = take_batch(next, &mut queue, &mut carried, &limits(100, 300));
        assert_eq!(keys(&batch), ["2", "3"]);
    }

    #[tokio::test]
    async fn slots_hold_proposals_to_the_limit_of_the_moment() {
        let slots = Slots::new();
        let first = slots.take(2).await;
        let second = slots.take(2).await;
        let third = slots.take(2);
        tokio::pin!(third);
        let waited = tokio::time::timeout(Duration::from_millis(50), &mut third).await;
        assert!(waited.is_err(), "a third proposal waits at a limit of two");
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("a freed slot lets the next proposal go");
        // A raised limit lets more go at once; a lowered one holds them.
        let fourth = slots.take(4).await;
        assert!(
            tokio::time::timeout(Duration::from_millis(50), slots.take(3))
                .await
                .is_err(),
            "three are in flight"
        );
        drop((second, third, fourth));
        let _one = slots.take(1).await;
    }

    #[test]
    fn a_command_larger_than_the_byte_cap_goes_alone() {
        let mut queue = queue_of(vec![put("big", 1000), put("small", 1)]);
        let mut carried = None;
        let first = queue.try_recv().unwrap();
        let batch = take_batch(first, &mut queue, &mut carried, &limits(100, 300));
        assert_eq!(keys(&batch), ["big"]);
        assert_eq!(keys(&[carried.take().unwrap()]), ["small"]);
    }
}
