//! Restarts in place, the removal marker and snapshots on request.

use super::*;

/// Why a running node asks its runner to stop it and start it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Drop all state and wait to be added to another cluster.
    WipeForJoin,
    /// Start again with the state as it is.
    Keep,
}

/// Marker left in the data directory of a removed node: it must not rejoin
/// with stale state.
pub const REMOVED_MARKER: &str = "REMOVED";

impl Node {
    /// Resolves once the node asks to be started again (see `Restart`).
    pub async fn restart_requested(&self) -> Restart {
        let mut requests = self.restart.subscribe();
        let request = match requests.wait_for(Option::is_some).await {
            Ok(request) => request.expect("waited for Some"),
            Err(_) => return std::future::pending().await,
        };
        request
    }

    /// Builds a Raft snapshot now (which purges the log behind it).
    pub async fn trigger_snapshot(&self) -> Result<u64> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut before = self.metrics().snapshot.map(|l| l.index);
        loop {
            self.raft
                .trigger()
                .snapshot()
                .await
                .map_err(|_| Error::ShuttingDown)?;
            let applied = self.metrics().last_applied.map(|l| l.index);
            if applied.is_none() || applied == before {
                return Ok(before.unwrap_or(0));
            }
            // openraft ignores a trigger while it builds a snapshot (the
            // automatic one, say) that may end before `applied`: when that
            // one is done and short of it, trigger again.
            let m = self
                .raft
                .wait(Some(deadline - tokio::time::Instant::now()))
                .metrics(
                    |m| {
                        let built = m.snapshot.map(|l| l.index);
                        built >= applied || built != before
                    },
                    "snapshot built",
                )
                .await
                .map_err(|e| Error::Timeout(e.to_string()))?;
            let built = m.snapshot.map(|l| l.index);
            if built >= applied {
                return Ok(built.unwrap_or(0));
            }
            before = built;
        }
    }
}
