//! Shares one leadership confirmation among concurrent linearizable reads.
//!
//! A read index is only good for reads that arrived before the leader
//! started confirming its leadership (a heartbeat round to a quorum). So a
//! read never joins a round already in flight: it waits for the next one,
//! which starts as soon as the current one ends and serves every read that
//! queued meanwhile. Under load that is one round per round-trip time
//! instead of one per read; alone, a read costs the same as before.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Batches calls of one async fetch; see the module docs.
pub struct ReadBatcher<T> {
    state: Mutex<State<T>>,
}

struct State<T> {
    /// Whether a task is running rounds.
    driving: bool,
    /// Callers waiting for the next round.
    waiting: Vec<oneshot::Sender<T>>,
}

impl<T: Clone + Send + 'static> ReadBatcher<T> {
    pub fn new() -> Arc<ReadBatcher<T>> {
        Arc::new(ReadBatcher {
            state: Mutex::new(State {
                driving: false,
                waiting: Vec::new(),
            }),
        })
    }

    /// The result of a `fetch` that starts after this call; `None` if the
    /// runtime stops first. Rounds run in their own task, so a caller that
    /// gives up (a client that disconnects) never stalls the others.
    pub async fn run<F, Fut>(self: &Arc<Self>, fetch: F) -> Option<T>
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send,
    {
        let (tx, rx) = oneshot::channel();
        let start_driver = {
            let mut state = self.state.lock().expect("read batch lock");
            state.waiting.push(tx);
            !std::mem::replace(&mut state.driving, true)
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
                    state.driving = false;
                    return;
                }
                batch
            };
            // Every caller in `batch` queued before this fetch starts.
            let result = fetch().await;
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
        let batcher = ReadBatcher::<u64>::new();
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

    #[tokio::test]
    async fn a_caller_that_gives_up_does_not_stall_the_others() {
        let batcher = ReadBatcher::<u64>::new();
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
