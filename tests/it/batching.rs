//! Batched proposals seen from outside: concurrent writes share log entries,
//! keep their own preconditions and revisions, and share one fate when the
//! entry cannot commit; watches follow the revisions; old data directories
//! are refused.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{
    assert_error_body, bounded, run_server_to_exit, wait_until, Cluster, NodeProc,
};

/// Sums every sample of the series `name` in a Prometheus text page.
async fn metric(client: &reqwest::Client, node: &NodeProc, name: &str) -> u64 {
    let text = client
        .get(node.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| l.split([' ', '{']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn client() -> reqwest::Client {
    crate::harness::http()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client")
}

/// Many create-only puts of one key at once: whatever batches they share,
/// exactly one creates it and every other sees the key it created.
#[tokio::test]
async fn concurrent_create_only_puts_have_one_winner() {
    bounded(Duration::from_secs(120), async {
        let cluster = Cluster::start(1, &[]).await;
        let node = &cluster.nodes[0];
        let client = client();
        let before = metric(&client, node, "cete_proposed_writes_total").await;
        let url = node.url("/v1/data/race/one");
        let puts = (0..64).map(|i| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let resp = client
                    .put(&url)
                    .header("If-None-Match", "*")
                    .body(format!("writer {i}"))
                    .send()
                    .await
                    .expect("PUT");
                let status = resp.status().as_u16();
                (status, resp.text().await.unwrap_or_default())
            }
        });
        let answers = futures::future::join_all(puts).await;
        let created: Vec<_> = answers.iter().filter(|(s, _)| *s == 201).collect();
        assert_eq!(created.len(), 1, "exactly one create: {answers:?}");
        let winner: Value = serde_json::from_str(&created[0].1).unwrap();
        let revision = winner["revision"].as_u64().unwrap();
        for (status, text) in answers.iter().filter(|(s, _)| *s != 201) {
            assert_eq!(*status, 412, "{text}");
            assert_error_body(text, &["PreconditionFailed"], "a losing create");
        }
        let stored = client.get(&url).send().await.unwrap();
        assert_eq!(
            stored.headers()["etag"].to_str().unwrap(),
            format!("\"{revision}\"")
        );
        let after = metric(&client, node, "cete_proposed_writes_total").await;
        assert_eq!(after - before, 64, "every put was proposed once");
    })
    .await
}

/// With no quorum, the proposals in flight cannot commit: every write of
/// every batch is answered 504 OutcomeUnknown (never a success, never a
/// silent loss), and the writes that queued behind them shared entries.
#[tokio::test]
async fn a_batch_without_quorum_answers_outcome_unknown_to_every_write() {
    bounded(Duration::from_secs(150), async {
        let mut cluster = Cluster::start(3, &[]).await;
        let leader = cluster.leader(Duration::from_secs(30)).await;
        let client = client();
        let proposals_before =
            metric(&client, &cluster.nodes[leader], "cete_proposals_total").await;
        for i in 0..3 {
            if i != leader {
                cluster.nodes[i].kill9();
            }
        }
        const WRITES: usize = 24;
        let node = &cluster.nodes[leader];
        let puts = (0..WRITES).map(|i| {
            let client = client.clone();
            let url = node.url(&format!("/v1/data/lost/k{i}"));
            async move {
                let resp = client.put(&url).body("v").send().await.expect("PUT");
                (
                    resp.status().as_u16(),
                    resp.text().await.unwrap_or_default(),
                )
            }
        });
        let answers = futures::future::join_all(puts).await;
        for (status, text) in &answers {
            assert_eq!(*status, 504, "{text}");
            assert_error_body(text, &["OutcomeUnknown"], "a write without quorum");
        }
        let proposals = metric(&client, node, "cete_proposals_total").await - proposals_before;
        assert!(
            proposals < WRITES as u64,
            "{WRITES} writes took {proposals} proposals: none were batched"
        );
        // The outcome really was unknown: once the others are back, each
        // write is either there or not, and reads agree on which.
        for i in 0..3 {
            if i != leader {
                cluster.nodes[i].start();
            }
        }
        cluster.wait_members(3, Duration::from_secs(60)).await;
        let leader = cluster.leader(Duration::from_secs(30)).await;
        for i in 0..WRITES {
            let url = cluster.nodes[leader].url(&format!("/v1/data/lost/k{i}"));
            // Just after an election a read can meet a 503 (Retry-After): ask again.
            let status = wait_until(Duration::from_secs(20), "a read that is not 503", || {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    let status = client.get(&url).send().await.ok()?.status().as_u16();
                    (status != 503).then_some(status)
                }
            })
            .await;
            assert!(status == 200 || status == 404, "GET {url}: {status}");
        }
    })
    .await
}

/// Revisions come from the state machine: concurrent writes (packed into
/// shared entries) get distinct, gapless revisions, and a watch from the
/// first of them replays exactly those, in revision order.
#[tokio::test]
async fn watch_resumes_over_batched_revisions() {
    bounded(Duration::from_secs(120), async {
        let cluster = Cluster::start(3, &[]).await;
        let leader = cluster.leader(Duration::from_secs(30)).await;
        let node = &cluster.nodes[leader];
        let client = client();
        let puts = (0..40).map(|i| {
            let client = client.clone();
            let url = node.url(&format!("/v1/data/batched/k{i:02}"));
            async move {
                let resp = client.put(&url).body(format!("v{i}")).send().await.unwrap();
                assert_eq!(resp.status(), 201);
                let body: Value = resp.json().await.unwrap();
                body["revision"].as_u64().unwrap()
            }
        });
        let revisions: BTreeSet<u64> = futures::future::join_all(puts).await.into_iter().collect();
        assert_eq!(revisions.len(), 40, "distinct revisions");
        let (first, last) = (*revisions.first().unwrap(), *revisions.last().unwrap());
        assert_eq!(last - first, 39, "no gaps: {revisions:?}");

        // From a follower, as a client resuming elsewhere would.
        let follower = &cluster.nodes[(leader + 1) % 3];
        let url = follower.url(&format!("/v1/watch?prefix=batched/&start_revision={first}"));
        let mut resp = client.get(&url).send().await.expect("watch");
        assert_eq!(resp.status(), 200);
        let mut seen = Vec::new();
        let mut buffer = String::new();
        while seen.len() < 40 {
            let chunk = tokio::time::timeout(Duration::from_secs(20), resp.chunk())
                .await
                .expect("events in time")
                .expect("stream")
                .expect("stream open");
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                if let Some(id) = event.lines().find_map(|l| l.strip_prefix("id:")) {
                    seen.push(id.trim().parse::<u64>().unwrap());
                }
            }
        }
        assert_eq!(seen, (first..=last).collect::<Vec<_>>());
    })
    .await
}

/// A data directory of the earlier storage format (no format record) is
/// refused at start with one line that says what to do, and left as it is.
#[tokio::test]
async fn an_old_format_data_directory_is_refused() {
    bounded(Duration::from_secs(60), async {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        write_format_1_directory(&data);
        let args = [
            "--id",
            "node1",
            "--data-directory",
            data.to_str().unwrap(),
            "--http-address",
            "127.0.0.1:0",
            "--grpc-address",
            "127.0.0.1:0",
            "--raft-address",
            "127.0.0.1:0",
        ];
        let out = run_server_to_exit(&args, root.path());
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        assert!(
            lines[0].contains("storage format 1") && lines[0].contains("--restore"),
            "{stderr}"
        );
        // Refused, not changed: it is refused again, the same way.
        let again = run_server_to_exit(&args, root.path());
        assert_eq!(String::from_utf8_lossy(&again.stderr), stderr);
    })
    .await
}

/// A data directory as format 1 left it: the same column families, a Raft
/// log entry and a vote, and no storage-format record.
fn write_format_1_directory(data: &std::path::Path) {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let db = rocksdb::DB::open_cf(
        &opts,
        data.join("db"),
        ["logs", "raft", "data", "meta", "events"],
    )
    .expect("open RocksDB");
    let logs = db.cf_handle("logs").unwrap();
    db.put_cf(logs, 1u64.to_be_bytes(), b"bincode entry")
        .unwrap();
    let raft = db.cf_handle("raft").unwrap();
    db.put_cf(raft, b"vote", b"bincode vote").unwrap();
    db.flush_wal(true).unwrap();
}
