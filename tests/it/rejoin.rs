//! A member removed with `cete leave` and added back with `cete join` while it still runs:
//! it drops its stale state, starts again in place and catches up through a snapshot.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{bounded, run_cli, wait_until, Cluster, NodeProc};

fn cli_ok(node: &NodeProc, args: &[&str]) -> String {
    let out = run_cli(node, args, None);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "cete {args:?}: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn node_state(node: &NodeProc) -> Option<Value> {
    let body: Value = Cluster::client()
        .get(node.url("/v1/node"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some(body["node"].clone())
}

async fn wait_state(node: &NodeProc, state: &str) {
    wait_until(
        Duration::from_secs(30),
        &format!("{} in state {state}", node.name),
        || async { node_state(node).await.filter(|n| n["state"] == state) },
    )
    .await;
}

#[tokio::test]
async fn a_removed_node_that_still_runs_can_be_added_back() {
    bounded(Duration::from_secs(180), async {
        let cluster = Cluster::start(3, &["--snapshot-threshold", "20"]).await;
        let l = cluster.leader(Duration::from_secs(30)).await;
        let t = (l + 1) % 3;
        let (leader, target) = (&cluster.nodes[l], &cluster.nodes[t]);
        let pid = target.pid();

        assert_eq!(cli_ok(leader, &["leave", &target.name]).trim(), "{}");
        wait_state(target, "Removed").await;
        assert!(target.dir.join("REMOVED").exists());
        // Enough writes that the leader's log no longer reaches back to the removal.
        for i in 0..60 {
            cli_ok(leader, &["set", &format!("k{i}"), &format!("v{i}")]);
        }
        cli_ok(leader, &["snapshot"]);
        let log_before = std::fs::metadata(&target.log_path).map_or(0, |m| m.len());

        let grpc = target.grpc_addr();
        assert_eq!(cli_ok(leader, &["join", &target.name, &grpc]).trim(), "{}");
        cluster.wait_members(3, Duration::from_secs(60)).await;
        wait_state(target, "Follower").await;
        let node = node_state(target).await.expect("/v1/node");
        assert_eq!(node["member"], true, "{node}");
        assert_eq!(node["voter"], true, "{node}");
        assert_eq!(
            target.pid(),
            pid,
            "the node restarts in place, not as a new process"
        );
        assert!(
            !target.dir.join("REMOVED").exists(),
            "the removal marker is gone"
        );
        assert_eq!(
            cli_ok(target, &["get", "k59", "--consistency", "stale"]),
            "v59"
        );
        let log = std::fs::read(&target.log_path).unwrap();
        let log = String::from_utf8_lossy(&log[log_before as usize..]);
        assert!(log.contains("adds it back"), "{log}");
        assert!(
            log.contains("installed snapshot"),
            "no snapshot install:\n{log}"
        );

        // Again, at once: the removal notice may not have reached the node when the join
        // comes; it asks the leader.
        assert_eq!(cli_ok(leader, &["leave", &target.name]).trim(), "{}");
        assert_eq!(cli_ok(leader, &["join", &target.name, &grpc]).trim(), "{}");
        cluster.wait_members(3, Duration::from_secs(60)).await;
        wait_state(target, "Follower").await;
        cli_ok(leader, &["set", "after", "both"]);
        assert_eq!(cli_ok(target, &["get", "after"]), "both");
    })
    .await;
}
