//! Raft: the network between peers, the proposer that batches writes, and read batching.

pub mod network;
pub mod proposer;
pub mod read_batch;
pub mod service;

// The log's types are the storage's (cete-store); the rest of the server
// names them through this module, as the Raft layer they belong to.
pub use cete_store::command::*;

use std::sync::Arc;

use cete_store::durability::Durability;

/// Keeps the leader's own appends synced in the background while the
/// cluster has other voters (the sync then overlaps their replication) and
/// inline while this node is the only one (see cete_store::durability).
/// Ends when Raft stops.
pub async fn sync_in_background_while_replicated(raft: typ::Raft, durability: Arc<Durability>) {
    let mut metrics = raft.server_metrics();
    loop {
        let others = {
            let m = metrics.borrow_and_update();
            m.membership_config
                .membership()
                .voter_ids()
                .any(|voter| voter != m.id)
        };
        durability.sync_leader_appends_in_background(others);
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// openraft's settings for a node that snapshots every `snapshot_threshold` entries.
pub fn openraft_config(snapshot_threshold: u64) -> anyhow::Result<openraft::Config> {
    let raft = openraft::Config {
        cluster_name: "cete".into(),
        heartbeat_interval: 150,
        election_timeout_min: 750,
        election_timeout_max: 1500,
        install_snapshot_timeout: 2000,
        // Entries carry up to 1 MiB of batched writes (see raft::proposer):
        // bound one AppendEntries well under the 256 MiB message limit.
        max_payload_entries: 64,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_threshold),
        max_in_snapshot_log_to_keep: snapshot_threshold.min(1000),
        ..Default::default()
    };
    use anyhow::Context;
    raft.validate().context("raft configuration")
}
