//! Shares leadership confirmations among concurrent linearizable reads.
//!
//! A read index is only good for reads that arrived before the leader
//! started confirming its leadership (a heartbeat round to a quorum). So a
//! read never joins a round already in flight: it waits for the next one to
//! start. Up to `max_rounds` rounds overlap: a read that arrives while fewer
//! are in flight starts one at once; otherwise it queues, and the first
//! round to end takes every queued read into the round it starts next.
//! Under load that is a few rounds per round-trip time instead of one per
//! read; alone, a read costs the same as an unshared one.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;

/// Rounds that may overlap by default.
pub const DEFAULT_ROUNDS: usize = 2;

/// Batches calls of one async fetch; see the module docs.
pub struct ReadBatcher<T> {
    max_rounds: usize,
    state: Mutex<State<T>>,
    stats: RoundStats,
}

struct State<T> {
    /// Tasks running rounds right now.
    drivers: usize,
    /// Callers waiting for the next round.
    waiting: Vec<oneshot::Sender<T>>,
}

/// What the rounds did, for metrics.
#[derive(Debug, Default)]
pub struct RoundStats {
    /// Rounds run.
    pub rounds: AtomicU64,
    /// Calls served by them.
    pub calls: AtomicU64,
    /// Time spent in rounds, summed, in microseconds.
    pub round_micros: AtomicU64,
}

impl<T: Clone + Send + 'static> ReadBatcher<T> {
    pub fn new(max_rounds: usize) -> Arc<ReadBatcher<T>> {
        Arc::new(ReadBatcher {
            max_rounds: max_rounds.max(1),
            state: Mutex::new(State {
                drivers: 0,
                waiting: Vec::new(),
            }),
            stats: RoundStats::default(),
        })
    }

    pub fn stats(&self) -> &RoundStats {
        &self.stats
    }

    /// The result of a `fetch` that starts after this call; `None` if the
    /// runtime stops first. Rounds run in their own tasks, so a caller that
    /// gives up (a client that disconnects) never stalls the others.
    pub async fn run<F, Fut>(self: &Arc<Self>, fetch: F) -> Option<T>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + Send,
    {
        let (tx, rx) = oneshot::channel();
        let start_driver = {
            let mut state = self.state.lock().expect("read batch lock");
            state.waiting.push(tx);
            let start = state.drivers < self.max_rounds;
            if start {
                state.drivers += 1;
            }
            start
        };
        if start_driver {
            let batcher = self.clone();
            tokio::spawn(async move { batcher.drive(fetch).await });
        }
        rx.await.ok()
    }

    async fn drive<F, Fut>(&self, fetch: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = T>,
    {
        loop {
            let batch = {
                let mut state = self.state.lock().expect("read batch lock");
                let batch = std::mem::take(&mut state.waiting);
                if batch.is_empty() {
                    state.drivers -= 1;
                    return;
                }
                batch
            };
            // Every caller in `batch` queued before this fetch starts.
            let started = Instant::now();
            let result = fetch().await;
            let took = started.elapsed().as_micros() as u64;
            self.stats.rounds.fetch_add(1, Ordering::Relaxed);
            self.stats
                .calls
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            self.stats.round_micros.fetch_add(took, Ordering::Relaxed);
            for waiter in batch {
                let _ = waiter.send(result.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_calls_share_rounds_that_start_after_them() {
        let batcher = ReadBatcher::<u64>::new(1);
        let started = Arc::new(AtomicU64::new(0));
        let mut calls = Vec::new();
        for i in 0..200u64 {
            let batcher = batcher.clone();
            let started = started.clone();
            calls.push(tokio::spawn(async move {
                // Spread the arrivals over several rounds.
                tokio::time::sleep(Duration::from_millis(i % 50)).await;
                let seen_at_call = started.load(Ordering::SeqCst);
                let fetch_started = started.clone();
                let round = batcher
                    .run(move || {
                        let started = fetch_started.clone();
                        async move {
                            let round = started.fetch_add(1, Ordering::SeqCst) + 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            round
                        }
                    })
                    .await
                    .expect("a result");
                (seen_at_call, round)
            }));
        }
        for call in calls {
            let (seen_at_call, round) = call.await.unwrap();
            assert!(
                round > seen_at_call,
                "served by round {round}, which started before the call (rounds started then: {seen_at_call})"
            );
        }
        let rounds = started.load(Ordering::SeqCst);
        assert!(rounds >= 2, "{rounds} rounds");
        assert!(
            rounds < 100,
            "200 calls took {rounds} rounds: nothing was shared"
        );
    }

    /// With several rounds allowed, a read that finds a round in flight
    /// starts its own at once instead of waiting for the first to end.
    #[tokio::test]
    async fn overlapping_rounds_start_at_once() {
        let batcher = ReadBatcher::<u64>::new(3);
        let release = Arc::new(tokio::sync::Notify::new());
        let started = Arc::new(AtomicU64::new(0));
        let first = {
            let (batcher, release, started) = (batcher.clone(), release.clone(), started.clone());
            tokio::spawn(async move {
                batcher
                    .run(move || {
                        let (release, started) = (release.clone(), started.clone());
                        async move {
                            started.fetch_add(1, Ordering::SeqCst);
                            release.notified().await;
                            1
                        }
                    })
                    .await
            })
        };
        while started.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // The first round is held open; the second must not wait for it.
        let second = tokio::time::timeout(Duration::from_secs(10), batcher.run(|| async { 2 }))
            .await
            .expect("the second read got a round of its own");
        assert_eq!(second, Some(2));
        assert!(!first.is_finished());
        release.notify_one();
        assert_eq!(first.await.unwrap(), Some(1));
        assert_eq!(batcher.stats().rounds.load(Ordering::SeqCst), 2);
        assert_eq!(batcher.stats().calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_does_not_stall_the_others() {
        let batcher = ReadBatcher::<u64>::new(1);
        let slow = batcher.run(|| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            1
        });
        // Dropped while its round runs.
        assert!(tokio::time::timeout(Duration::from_millis(5), slow)
            .await
            .is_err());
        let next = batcher.run(|| async { 2 });
        let got = tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("not stalled");
        assert!(got.is_some());
    }
}
