//! The leader's expiry sweep: it finds the keys past their deadline and
//! deletes them through Raft, like any write, so that every replica deletes
//! the same keys at the same revisions. Deadlines are absolute times in the
//! state machine, so a new leader carries on where the old one stopped.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::node::Node;
use crate::raft::Command;
use cete_store::state_machine::now_ms;

/// Keys expired per round. Rounds run one after another, so client writes
/// queued behind an expiry wait for at most one round's deletes, however
/// many keys expire at once.
pub const ROUND: usize = 256;

/// Sweeps every `interval` while this node leads, until `shutdown`.
pub async fn run(node: Arc<Node>, interval: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        if node.raft.metrics().borrow().current_leader != Some(node.id) {
            continue;
        }
        // Each round starts after the keys of the one before.
        let mut after = None;
        while let Some(last) = sweep_round(&node, after.take()).await {
            match last {
                Some(last) if !*shutdown.borrow() => after = Some(last),
                _ => break,
            }
        }
    }
}

/// Proposes the deletes of up to [`ROUND`] due keys after `after` and
/// waits for them. `Some(Some(last))`: a full round, more may be due after
/// `last`; `Some(None)`: nothing more is due; `None`: it could not (no
/// longer leader, storage failing), and the next tick starts over.
async fn sweep_round(node: &Node, after: Option<(Vec<u8>, u64)>) -> Option<Option<(Vec<u8>, u64)>> {
    let due = match node.reader().due(after, now_ms(), ROUND).await {
        Ok(due) => due,
        Err(e) => {
            log::warn!("cannot read the expiry index: {e}");
            return None;
        }
    };
    let last = (due.len() == ROUND).then(|| due[ROUND - 1].clone());
    let deletes = due
        .into_iter()
        .map(|(key, deadline_ms)| node.write(Command::Expire { key, deadline_ms }));
    for outcome in futures::future::join_all(deletes).await {
        if let Err(e) = outcome {
            log::debug!("expiry round stopped: {e}");
            return None;
        }
    }
    Some(last)
}
