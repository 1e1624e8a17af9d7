//! Transactions (`POST /v1/txn`, `cete txn`) on 3-node clusters: the
//! documented shape, one revision per transaction seen whole by watchers,
//! the limits and their errors, redirection from followers, and
//! transactions racing conditional puts without a lost update.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::harness::{assert_error_body, bounded, follow_client, run_cli, Cluster, NodeProc};
use crate::watch::Watch;

const SETTLE: Duration = Duration::from_secs(30);

async fn txn(client: &reqwest::Client, node: &NodeProc, body: &Value) -> (u16, Value) {
    let resp = client
        .post(node.url("/v1/txn"))
        .json(body)
        .send()
        .await
        .expect("POST /v1/txn");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn put(client: &reqwest::Client, node: &NodeProc, key: &str, value: &str) -> u64 {
    let resp = client
        .put(node.url(&format!("/v1/data/{key}")))
        .header("content-type", "text/plain")
        .body(value.to_string())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    resp.json::<Value>().await.unwrap()["revision"]
        .as_u64()
        .unwrap()
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test]
async fn transactions_apply_whole_at_one_revision() {
    bounded(Duration::from_secs(150), async {
        let cluster = Cluster::start(3, &[]).await;
        let leader = &cluster.nodes[cluster.leader(SETTLE).await];
        let follower = cluster
            .nodes
            .iter()
            .find(|n| n.name != leader.name)
            .unwrap();
        let follow = follow_client(Duration::from_secs(10));
        let a_rev = put(&follow, leader, "a", "0").await;
        let c_rev = put(&follow, leader, "c", "see").await;
        put(&follow, leader, "d", "x").await;
        let mut watch = Watch::open(follower, &format!("start_revision={}", c_rev + 2), None).await;

        // The example, sent to a follower (redirected to the leader).
        let request = json!({
            "compare": [{"key": "a", "revision": a_rev}, {"key": "b", "absent": true},
                        {"key": "c", "present": true}, {"key": "d", "value": "x"}],
            "success": [{"put": {"key": "a", "value": "1", "content_type": "text/plain"}},
                        {"delete": {"key": "b"}}, {"get": {"key": "c"}},
                        {"put": {"key": "e", "value_base64": "AP8="}}, {"delete": {"key": "d"}}],
            "failure": [{"get": {"key": "a"}}]
        });
        let (status, to_follower) = txn(&Cluster::client(), follower, &request).await;
        assert_eq!(status, 307, "{to_follower}");
        let (status, body) = txn(&follow, follower, &request).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["succeeded"], true, "{body}");
        let rev = body["revision"].as_u64().unwrap();
        assert!(rev > c_rev);
        assert_eq!(
            body["results"],
            json!([
                {"revision": rev},
                {"deleted": false},
                {"key": "c", "found": true, "value_base64": b64("see"),
                 "content_type": "text/plain", "revision": c_rev, "create_revision": c_rev},
                {"revision": rev},
                {"deleted": true, "revision": rev}
            ])
        );
        // Watchers get its three changes at one revision, in order, together.
        let mut seen = Vec::new();
        for _ in 0..3 {
            let event = watch.next().await.unwrap();
            seen.push((
                event.data["revision"].as_u64(),
                event.data["type"].clone(),
                event.data["key"].clone(),
                event.id,
            ));
        }
        assert_eq!(
            seen,
            vec![
                (Some(rev), json!("put"), json!("a"), None),
                (Some(rev), json!("put"), json!("e"), None),
                (Some(rev), json!("delete"), json!("d"), Some(rev)),
            ],
            "only the last event of a revision carries its id"
        );

        // The same compare again fails (a moved on): the failure branch reads.
        let (_, failed) = txn(&follow, leader, &request).await;
        assert_eq!(failed["succeeded"], false, "{failed}");
        assert_eq!(
            failed["revision"], rev,
            "a transaction that writes nothing has no revision of its own"
        );
        assert_eq!(failed["results"][0]["value_base64"], b64("1"));
        let (_, missing) = txn(
            &follow,
            leader,
            &json!({"success": [{"get": {"key": "nope"}}]}),
        )
        .await;
        assert_eq!(missing["results"], json!([{"key": "nope", "found": false}]));

        // Every replica holds the same data at the same revision.
        for node in &cluster.nodes {
            let resp = follow.get(node.url("/v1/data/e")).send().await.unwrap();
            assert_eq!(
                resp.headers()["x-cete-revision"],
                rev.to_string().as_str(),
                "{}",
                node.name
            );
            assert_eq!(
                resp.bytes().await.unwrap().as_ref(),
                [0u8, 255],
                "{}",
                node.name
            );
        }

        // `cete txn` reads the same JSON from stdin or a file.
        let file = cluster.root.path().join("txn.json");
        std::fs::write(
            &file,
            json!({"success": [{"get": {"key": "a"}}]}).to_string(),
        )
        .unwrap();
        for (args, stdin) in [
            (vec!["txn", file.to_str().unwrap()], None),
            (vec!["txn"], Some(request.to_string().into_bytes())),
        ] {
            let out = run_cli(leader, &args, stdin.as_deref());
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let answer: Value = serde_json::from_slice(&out.stdout).expect("cete txn prints JSON");
            assert!(answer.get("succeeded").is_some(), "{answer}");
        }
        let out = run_cli(leader, &["txn"], Some(b"{not json"));
        assert!(!out.status.success());
    })
    .await
}

#[tokio::test]
async fn bad_transactions_are_refused_and_write_nothing() {
    bounded(Duration::from_secs(120), async {
        let cluster = Cluster::start(3, &["--max-value-size", "65536"]).await;
        let leader = &cluster.nodes[cluster.leader(SETTLE).await];
        let follow = follow_client(Duration::from_secs(10));
        let many: Vec<Value> = (0..129).map(|i| json!({"get": {"key": format!("k{i}")}})).collect();
        let big = "x".repeat(70_000);
        let cases = [
            (json!({"success": [{"put": {"key": "w", "value": "1"}}], "extra": 1}), 400, "InvalidTxn"),
            (json!({"compare": [{"key": "w"}], "success": [{"put": {"key": "w", "value": "1"}}]}), 400, "InvalidTxn"),
            (json!({"success": [{"put": {"key": "w", "value": "1", "value_base64": "MQ=="}}]}), 400, "InvalidTxn"),
            (json!({"success": [{"put": {"key": "w", "value": "1", "ttl": "never"}}]}), 400, "InvalidTtl"),
            (json!({"success": [{"put": {"key": "w", "value": "1"}}, {"delete": {"key": "w"}}]}), 400, "DuplicateKey"),
            (json!({"success": [{"put": {"key": "", "value": "1"}}]}), 400, "InvalidKey"),
            (json!({"success": many}), 400, "TooManyOperations"),
            (json!({"success": [{"put": {"key": "w", "value": big}}]}), 413, "ValueTooLarge"),
        ];
        for (body, status, code) in cases {
            let (got, answer) = txn(&follow, leader, &body).await;
            assert_eq!(got, status, "{code}: {answer}");
            assert_error_body(&answer.to_string(), &[code], code);
        }
        let resp = follow.get(leader.url("/v1/data/w?consistency=stale")).send().await.unwrap();
        assert_eq!(resp.status(), 404, "nothing was written");
        let resp = follow.get(leader.url("/v1/txn")).send().await.unwrap();
        assert_eq!(resp.status(), 405);
        assert_eq!(resp.headers()["allow"], "POST");
    })
    .await
}

/// What the workers saw: attempts, and writes whose outcome is unknown (a
/// timeout, or a 503/504 from a busy node): those may or may not count.
#[derive(Default)]
struct Tally {
    attempts: AtomicU64,
    unknown: AtomicU64,
}

/// Increments `counter` by compare-and-set, by a transaction or a conditional
/// put at random, until `share` increments of this worker succeeded.
async fn increment(
    client: reqwest::Client,
    node: String,
    share: u64,
    worker: u64,
    tally: Arc<Tally>,
) {
    let mut done = 0;
    let mut turn = worker;
    while done < share {
        turn += 1;
        tally.attempts.fetch_add(1, Ordering::Relaxed);
        let Ok(resp) = client.get(format!("{node}/v1/data/counter")).send().await else {
            continue;
        };
        if resp.status() == 503 {
            continue; // no read index in time on a busy machine: read again
        }
        assert_eq!(resp.status(), 200);
        let revision: u64 = resp.headers()["x-cete-revision"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let value: u64 = resp.text().await.unwrap().parse().unwrap();
        let next = (value + 1).to_string();
        let sent = if turn.is_multiple_of(2) {
            let body = json!({"compare": [{"key": "counter", "revision": revision}],
                              "success": [{"put": {"key": "counter", "value": next}}]});
            client
                .post(format!("{node}/v1/txn"))
                .json(&body)
                .send()
                .await
        } else {
            client
                .put(format!("{node}/v1/data/counter"))
                .header("if-match", format!("\"{revision}\""))
                .body(next)
                .send()
                .await
        };
        let Ok(resp) = sent else {
            tally.unknown.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let won = match resp.status().as_u16() {
            200 if turn.is_multiple_of(2) => {
                resp.json::<Value>().await.unwrap()["succeeded"] == true
            }
            200 => true,
            412 => false,
            503 | 504 => {
                tally.unknown.fetch_add(1, Ordering::Relaxed);
                false
            }
            other => panic!("the write answered {other}"),
        };
        if won {
            done += 1;
        }
    }
}

#[tokio::test]
async fn transactions_racing_conditional_puts_lose_no_update() {
    bounded(Duration::from_secs(150), async {
        let cluster = Cluster::start(3, &[]).await;
        let leader = &cluster.nodes[cluster.leader(SETTLE).await];
        let follow = follow_client(Duration::from_secs(10));
        put(&follow, leader, "counter", "0").await;
        let (workers, share) = (6u64, 15u64);
        let tally = Arc::new(Tally::default());
        // Workers on every node: reads are linearizable, writes go to the leader.
        let runs = (0..workers).map(|w| {
            let node = cluster.nodes[w as usize % 3].url("");
            tokio::spawn(increment(follow.clone(), node, share, w, tally.clone()))
        });
        for run in futures::future::join_all(runs).await {
            run.unwrap();
        }
        let value: u64 = follow
            .get(leader.url("/v1/data/counter"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .parse()
            .unwrap();
        let attempts = tally.attempts.load(Ordering::Relaxed);
        let unknown = tally.unknown.load(Ordering::Relaxed);
        let won = workers * share;
        println!("{won} increments won in {attempts} attempts ({unknown} of unknown outcome)");
        // Every increment that won is counted once; one of unknown outcome may have landed.
        assert!(
            (won..=won + unknown).contains(&value),
            "counter {value} after {won} increments that won and {unknown} unknown"
        );
        assert!(attempts > workers * share, "the workers did race");
    })
    .await
}
