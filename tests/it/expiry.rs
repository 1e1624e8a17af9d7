//! Keys that expire (`PUT /v1/data/{key}?ttl=`), on 3-node clusters: the
//! deadline in answers and headers, expired keys never returned, deletes
//! through Raft seen by watchers as expiries, a leader killed between a
//! deadline and its delete, deadlines kept by backups, and many keys
//! expiring at once while writes go on.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use serde_json::{json, Value};

use crate::harness::{
    assert_error_body, bounded, follow_client, run_cli, wait_until, Cluster, NodeProc,
};
use crate::watch::Watch;

const SETTLE: Duration = Duration::from_secs(30);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `2026-12-02T19:00:30.123Z` as Unix milliseconds.
fn parse_deadline(text: &str) -> u64 {
    humantime::parse_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text} is not RFC 3339: {e}"))
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// PUT with a query; returns the status and the JSON body.
async fn put(
    client: &reqwest::Client,
    node: &NodeProc,
    key: &str,
    query: &str,
    value: &str,
) -> (u16, Value) {
    let resp = client
        .put(node.url(&format!("/v1/data/{key}{query}")))
        .header("content-type", "text/plain")
        .body(value.to_string())
        .send()
        .await
        .expect("PUT");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON answer"))
}

/// GET `key` on `node`: the status and the expiry headers.
async fn get(
    client: &reqwest::Client,
    node: &NodeProc,
    key: &str,
    stale: bool,
) -> (u16, Option<String>, Option<u64>) {
    let query = if stale { "?consistency=stale" } else { "" };
    let resp = client
        .get(node.url(&format!("/v1/data/{key}{query}")))
        .send()
        .await
        .expect("GET");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let at = header("x-cete-expires-at");
    let remaining = header("x-cete-expires-in").map(|v| v.parse().unwrap());
    (resp.status().as_u16(), at, remaining)
}

/// `GET /v1/data?<query>` on `node`.
async fn list(client: &reqwest::Client, node: &NodeProc, query: &str) -> Value {
    client
        .get(node.url(&format!("/v1/data?{query}")))
        .send()
        .await
        .expect("GET /v1/data")
        .json()
        .await
        .expect("a JSON listing")
}

/// Sleeps until this machine's clock (which the nodes share) is past `deadline_ms`.
async fn until_past(deadline_ms: u64) {
    let wait = deadline_ms.saturating_sub(now_ms()) + 50;
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

#[tokio::test]
async fn keys_expire_on_every_replica_and_watchers_see_expiries() {
    bounded(Duration::from_secs(150), async {
        let cluster = Cluster::start(3, &[]).await;
        let client = follow_client(Duration::from_secs(10));
        let leader = &cluster.nodes[cluster.leader(SETTLE).await];
        let follower = cluster
            .nodes
            .iter()
            .find(|n| n.name != leader.name)
            .unwrap();

        // Bad ttls are refused before anything is written.
        for bad in ["0s", "abc", "400d", "5", "-1s", ""] {
            let (status, body) = put(&client, leader, "bad", &format!("?ttl={bad}"), "v").await;
            assert_eq!(status, 400, "ttl={bad}: {body}");
            assert_error_body(&body.to_string(), &["InvalidTtl"], &format!("ttl={bad}"));
        }
        assert_eq!(get(&client, leader, "bad", false).await.0, 404);

        let mut watch = Watch::open(follower, "prefix=session/", None).await;
        let before = now_ms();
        // Sent to a follower: redirected to the leader, ttl and all.
        let (status, body) = put(&client, follower, "session/a", "?ttl=1500ms", "alive").await;
        assert_eq!(status, 201, "{body}");
        let deadline = parse_deadline(body["expires_at"].as_str().expect("expires_at"));
        assert!(
            (before + 1500..=now_ms() + 1500).contains(&deadline),
            "deadline {deadline} not 1.5 s after the write ({before}..)"
        );
        let put_revision = body["revision"].as_u64().unwrap();
        // A ttl then a plain put: the plain put clears the expiry.
        put(&client, leader, "session/kept", "?ttl=1s", "x").await;
        let (_, kept) = put(&client, leader, "session/kept", "", "y").await;
        assert!(kept.get("expires_at").is_none(), "{kept}");

        for node in &cluster.nodes {
            let (status, at, remaining) = get(&client, node, "session/a", false).await;
            assert_eq!(status, 200, "{} before the deadline", node.name);
            assert_eq!(
                at.map(|a| parse_deadline(&a)),
                Some(deadline),
                "{}",
                node.name
            );
            assert!(remaining.unwrap() <= 1500, "{}", node.name);
            let (_, at, _) = get(&client, node, "session/kept", false).await;
            assert_eq!(at, None, "{}: cleared expiry", node.name);
        }
        let listing = list(&client, leader, "prefix=session/").await;
        assert_eq!(
            parse_deadline(listing["keys"][0]["expires_at"].as_str().unwrap()),
            deadline,
            "{listing}"
        );

        until_past(deadline).await;
        // Gone everywhere, by every kind of read, and from listings.
        for node in &cluster.nodes {
            for stale in [false, true] {
                let (status, ..) = get(&client, node, "session/a", stale).await;
                assert_eq!(
                    status, 404,
                    "{} (stale {stale}) after the deadline",
                    node.name
                );
            }
            assert_eq!(get(&client, node, "session/kept", false).await.0, 200);
        }
        // The delete went through Raft: watchers on a follower see it as an expiry.
        let mut seen = Vec::new();
        let expired = loop {
            let event = watch.next().await.expect("the watch ended");
            if event.data["type"] == "delete" {
                break event;
            }
            seen.push(event);
        };
        assert_eq!(expired.data["key"], "session/a", "{:?}", expired.data);
        assert_eq!(expired.data["expired"], true, "{:?}", expired.data);
        let expired_revision = expired.id.unwrap();
        assert!(expired_revision > put_revision);
        // At the same revision on every replica: each node's history agrees.
        for node in &cluster.nodes {
            let mut replay = Watch::open(
                node,
                &format!("prefix=session/a&start_revision={put_revision}"),
                None,
            )
            .await;
            let put_event = replay.next().await.unwrap();
            assert_eq!(put_event.id, Some(put_revision), "{}", node.name);
            let delete = replay.next().await.unwrap();
            assert_eq!(delete.id, Some(expired_revision), "{}", node.name);
            assert_eq!(delete.data["expired"], true, "{}", node.name);
        }
    })
    .await
}

#[tokio::test]
async fn a_new_leader_deletes_what_the_old_one_left_expired() {
    bounded(Duration::from_secs(180), async {
        // node1 leads and sweeps once an hour: its keys expire but are not deleted.
        let mut cluster = Cluster::start(3, &["--expiry-interval", "1h"]).await;
        for i in 1..3 {
            let node = &mut cluster.nodes[i];
            node.kill9();
            node.extra_args.clear();
            node.start();
            node.wait_ready(SETTLE).await;
        }
        cluster.wait_members(3, SETTLE).await;
        assert_eq!(cluster.leader(SETTLE).await, 0, "node1 still leads");
        let client = follow_client(Duration::from_secs(10));
        let (status, body) = put(&client, &cluster.nodes[0], "lock", "?ttl=1s", "held").await;
        assert_eq!(status, 201, "{body}");
        let put_revision = body["revision"].as_u64().unwrap();
        let deadline = parse_deadline(body["expires_at"].as_str().unwrap());
        let mut watch = Watch::open(
            &cluster.nodes[1],
            &format!("start_revision={}", put_revision + 1),
            None,
        )
        .await;
        until_past(deadline).await;
        // Past the deadline, before any delete: no read returns it.
        for node in &cluster.nodes {
            assert_eq!(
                get(&client, node, "lock", false).await.0,
                404,
                "{}",
                node.name
            );
        }
        // A lock whose holder died can be taken at once.
        let resp = client
            .put(cluster.nodes[0].url("/v1/data/lock?ttl=1s"))
            .header("if-none-match", "*")
            .body("taken over")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "the expired lock counts as absent");
        let taken: Value = resp.json().await.unwrap();
        let deadline = parse_deadline(taken["expires_at"].as_str().unwrap());
        // Its first holder's expiry got a revision of its own, then the new holder.
        let gone = watch.next().await.unwrap();
        assert_eq!(
            (gone.data["type"].as_str(), gone.data["expired"].as_bool()),
            (Some("delete"), Some(true))
        );
        let again = watch.next().await.unwrap();
        assert_eq!(again.data["type"], "put");
        until_past(deadline).await;
        assert!(
            watch.next_within(Duration::from_secs(1)).await.is_none(),
            "node1 deleted the key though it sweeps hourly"
        );

        cluster.nodes[0].kill9();
        let new_leader = cluster.leader(SETTLE).await;
        assert_ne!(new_leader, 0);
        let expired = watch.next().await.expect("the new leader's expiry");
        assert_eq!(expired.data["key"], "lock");
        assert_eq!(expired.data["expired"], true, "{:?}", expired.data);
        let revision = expired.id.unwrap();

        cluster.nodes[0].start();
        cluster.nodes[0].wait_ready(SETTLE).await;
        // node1 catches up with the delete it never proposed.
        let mut replay = Watch::open(
            &cluster.nodes[0],
            &format!("start_revision={revision}"),
            None,
        )
        .await;
        let event = replay.next().await.unwrap();
        assert_eq!(
            (event.id, event.data["expired"].as_bool()),
            (Some(revision), Some(true))
        );
    })
    .await
}

#[tokio::test]
async fn backups_carry_deadlines_and_cete_set_takes_a_ttl() {
    bounded(Duration::from_secs(120), async {
        let cluster = Cluster::start(3, &[]).await;
        let leader = &cluster.nodes[cluster.leader(SETTLE).await];
        let client = follow_client(Duration::from_secs(10));
        let out = run_cli(leader, &["set", "held", "yes", "--ttl", "1h"], None);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bad = run_cli(leader, &["set", "held", "yes", "--ttl", "0s"], None);
        assert!(!bad.status.success());
        let (_, at, _) = get(&client, leader, "held", false).await;
        let deadline = parse_deadline(&at.expect("cete set --ttl set an expiry"));
        assert!(deadline > now_ms() + 3_500_000);

        let backup = cluster.root.path().join("ttl.backup");
        let out = run_cli(
            leader,
            &["snapshot", "save", backup.to_str().unwrap()],
            None,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut restored = NodeProc::new(
            "restored",
            cluster.root.path(),
            None,
            &["--restore", backup.to_str().unwrap()],
        );
        restored.start();
        restored.wait_ready(SETTLE).await;
        let (status, at, _) = get(&client, &restored, "held", false).await;
        assert_eq!(status, 200);
        assert_eq!(at.map(|a| parse_deadline(&a)), Some(deadline));
    })
    .await
}

/// Latency figures of a list of durations: (p50, p99, max) in ms.
fn figures(mut lat: Vec<Duration>) -> (f64, f64, f64) {
    lat.sort();
    let at = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
    (at(0.5), at(0.99), at(1.0))
}

#[tokio::test]
async fn many_keys_expiring_at_once_are_deleted_in_rounds_while_writes_go_on() {
    const KEYS: usize = 100_000;
    const PER_TXN: usize = 125;
    bounded(Duration::from_secs(420), async {
        let cluster = Cluster::start(3, &["--log-level", "info"]).await;
        let leader = &cluster.nodes[cluster.leader(SETTLE).await];
        let client = follow_client(Duration::from_secs(10));
        // Every key's deadline in the same second, this far ahead: time to load them.
        let target = now_ms() + 30_000;
        let started = Instant::now();
        let loads = (0..KEYS / PER_TXN).map(|t| {
            let client = client.clone();
            let url = leader.url("/v1/txn");
            async move {
                let ttl = format!("{}ms", target.saturating_sub(now_ms()).max(1));
                let puts: Vec<Value> = (0..PER_TXN)
                    .map(|i| json!({"put": {"key": format!("many/{:06}", t * PER_TXN + i), "value": "x", "ttl": ttl}}))
                    .collect();
                let resp = client
                    .post(&url)
                    .json(&json!({"success": puts}))
                    .send()
                    .await
                    .expect("POST /v1/txn");
                assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
            }
        });
        futures::stream::iter(loads)
            .buffer_unordered(8)
            .collect::<Vec<()>>()
            .await;
        let loaded = started.elapsed();
        assert!(now_ms() + 3000 < target, "loading took {loaded:?}: too slow for the test");
        let mut watch = Watch::open(leader, "prefix=many/", None).await;

        // A writer from just before the deadline until every key is gone.
        let writer = {
            let client = client.clone();
            let url = leader.url("/v1/data/writer");
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(target.saturating_sub(now_ms() + 1000))).await;
                let mut latencies = Vec::new();
                let begun = Instant::now();
                while begun.elapsed() < Duration::from_secs(600) {
                    let sent = Instant::now();
                    let resp = client.put(&url).body("w").send().await.expect("PUT");
                    assert!(resp.status().is_success(), "a write failed: {}", resp.status());
                    latencies.push(sent.elapsed());
                    if latencies.len() % 16 == 0 && STOP.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                }
                latencies
            })
        };
        static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        let mut expired = 0;
        let mut first = None;
        let mut last = None;
        while expired < KEYS {
            let event = watch.next().await.expect("expiry events");
            if event.event == "error" {
                // Dropped as too slow (this test reads 100,000 events): resume.
                let from = last.expect("an event before falling behind") + 1;
                watch = Watch::open(leader, &format!("prefix=many/&start_revision={from}"), None).await;
                continue;
            }
            assert_eq!(event.data["expired"], true, "{:?}", event.data);
            first.get_or_insert_with(Instant::now);
            last = event.id;
            expired += 1;
        }
        let took = first.unwrap().elapsed();
        STOP.store(true, std::sync::atomic::Ordering::SeqCst);
        let latencies = writer.await.unwrap();
        let (p50, p99, max) = figures(latencies.clone());
        println!(
            "{KEYS} keys loaded in {loaded:.1?}, expired in {took:.1?} after their deadline; \
             {} writes meanwhile: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms",
            latencies.len()
        );
        // Generous: this machine is shared and the build is a debug one. A
        // sweep that proposed all keys at once would hold writes for seconds.
        assert!(max < 3000.0, "a write waited {max:.0} ms during the expiry");
        let listing = list(&client, leader, "prefix=many/&limit=1").await;
        assert_eq!(listing["keys"], json!([]));
        wait_until(SETTLE, "the followers applied every expiry", || {
            let client = client.clone();
            let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url("/v1/node")).collect();
            async move {
                let mut applied = Vec::new();
                for url in urls {
                    let body: Value = client.get(url).send().await.ok()?.json().await.ok()?;
                    applied.push(body["node"]["last_applied"].as_u64()?);
                }
                applied.windows(2).all(|w| w[0] == w[1]).then_some(())
            }
        })
        .await;
    })
    .await
}
