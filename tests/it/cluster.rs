//! Multi-node tests: bring-up, replication, redirects, leader failure,
//! snapshots for lagging followers, membership changes through REST and the
//! CLI, full restarts and loss of quorum, all against real `cete-server`
//! processes started by the harness.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{
    assert_error_body, bounded, follow_client, run_cli, wait_until, Cluster, NodeProc,
};

/// Deadline of one test, start-up included. The machine is small and other
/// builds may share it, so this is well above the ~60 s a test should take.
const TEST_TIMEOUT: Duration = Duration::from_secs(150);
/// How long an election or a membership change may take to show.
const SETTLE: Duration = Duration::from_secs(30);

/// A client that follows redirects (re-sending the body of a 307), with no
/// idle connections so a restarted node never meets a stale pooled socket.
/// A client that does not follow redirects, with `timeout`.
fn raw_client(timeout: Duration) -> reqwest::Client {
    crate::harness::http()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .pool_max_idle_per_host(0)
        .build()
        .expect("reqwest client")
}

/// Status and body text of a response.
async fn status_text(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// Parses a JSON body, naming `what` on failure.
fn parse(text: &str, what: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {text}"))
}

/// GET a JSON document from a node (any status); `None` if unreachable or not JSON.
async fn try_json(client: &reqwest::Client, url: &str) -> Option<Value> {
    let resp = client.get(url).send().await.ok()?;
    resp.json::<Value>().await.ok()
}

/// GET a JSON document that must answer 200.
async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    let resp = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let (status, text) = status_text(resp).await;
    assert_eq!(status, 200, "GET {url}: {text}");
    parse(&text, url)
}

/// PUT through the leader (following redirects), expecting 200 or 201.
async fn put_ok(client: &reqwest::Client, node: &NodeProc, key: &str, value: &str) {
    let url = node.url(&format!("/v1/data/{key}"));
    let resp = client
        .put(&url)
        .body(value.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
    let (status, text) = status_text(resp).await;
    assert!(status == 200 || status == 201, "PUT {url}: {status} {text}");
    assert!(
        parse(&text, &url)["revision"].as_u64().is_some(),
        "PUT {url}: no revision in {text}"
    );
}

/// GET a key: `Some(value)` on 200, `None` on 404 KeyNotFound, panics otherwise.
async fn read_key(
    client: &reqwest::Client,
    node: &NodeProc,
    key: &str,
    consistency: Option<&str>,
) -> Option<String> {
    let query = consistency.map_or(String::new(), |c| format!("?consistency={c}"));
    let url = node.url(&format!("/v1/data/{key}{query}"));
    let resp = client
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let (status, text) = status_text(resp).await;
    match status {
        200 => Some(text),
        404 => {
            assert_error_body(&text, &["KeyNotFound"], &url);
            None
        }
        _ => panic!("GET {url} on {}: {status} {text}", node.name),
    }
}

/// Waits until `node` says on `/v1/node` that it was removed.
async fn wait_removed(client: &reqwest::Client, node: &NodeProc) {
    let url = node.url("/v1/node");
    let what = format!("{} reports state Removed", node.name);
    wait_until(SETTLE, &what, || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let body: Value = client.get(&url).send().await.ok()?.json().await.ok()?;
            (body["node"]["state"] == "Removed" && body["node"]["member"] == false).then_some(())
        }
    })
    .await;
}

/// The member names in a `/v1/cluster` document.
fn member_names(cluster: &Value) -> BTreeSet<String> {
    cluster["cluster"]["nodes"]
        .as_object()
        .map(|nodes| nodes.keys().cloned().collect())
        .unwrap_or_default()
}

/// Waits until each of `nodes` lists exactly `names` as voters and names
/// one leader (the same on all of them, and one of `names`); returns it.
async fn wait_membership(nodes: &[&NodeProc], names: &[&str], timeout: Duration) -> String {
    let client = raw_client(Duration::from_secs(2));
    let want: BTreeSet<String> = names.iter().map(|s| s.to_string()).collect();
    let urls: Vec<String> = nodes.iter().map(|n| n.url("/v1/cluster")).collect();
    let what = format!(
        "{:?} all list exactly {want:?} and agree on a leader",
        nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>()
    );
    wait_until(timeout, &what, || {
        let client = client.clone();
        let urls = urls.clone();
        let want = want.clone();
        async move {
            let mut leaders = BTreeSet::new();
            for url in &urls {
                let view = try_json(&client, url).await?;
                let voters: BTreeSet<String> = view["cluster"]["nodes"]
                    .as_object()?
                    .iter()
                    .filter(|(_, m)| m["voter"] == json!(true))
                    .map(|(name, _)| name.clone())
                    .collect();
                if voters != want || member_names(&view) != want {
                    return None;
                }
                leaders.insert(view["cluster"]["leader"].as_str()?.to_string());
            }
            let leader = leaders.into_iter().next()?;
            (want.contains(&leader) && !leader.is_empty()).then_some(leader)
        }
    })
    .await
}

/// Waits until exactly one of `nodes` says state Leader on `/v1/node` and all
/// of them name it as leader; returns its name.
async fn wait_leader_among(nodes: &[&NodeProc], timeout: Duration) -> String {
    let client = raw_client(Duration::from_secs(2));
    let urls: Vec<String> = nodes.iter().map(|n| n.url("/v1/node")).collect();
    wait_until(timeout, "one leader agreed by the given nodes", || {
        let client = client.clone();
        let urls = urls.clone();
        async move {
            let mut leaders = Vec::new();
            let mut named = BTreeSet::new();
            for url in &urls {
                let node = try_json(&client, url).await?["node"].clone();
                if node["state"] == "Leader" {
                    leaders.push(node["id"].as_str()?.to_string());
                }
                named.insert(node["leader"].as_str()?.to_string());
            }
            match (leaders.as_slice(), named.len()) {
                ([leader], 1) if named.contains(leader) => Some(leader.clone()),
                _ => None,
            }
        }
    })
    .await
}

fn index_of(cluster: &Cluster, name: &str) -> usize {
    cluster
        .nodes
        .iter()
        .position(|n| n.name == name)
        .unwrap_or_else(|| panic!("no node named {name}"))
}

/// The cluster view of a node as (name -> (bind_addr, grpc_addr, http_addr)).
fn addresses(view: &Value) -> BTreeMap<String, (String, String, String)> {
    view["cluster"]["nodes"]
        .as_object()
        .expect("cluster.nodes is an object")
        .iter()
        .map(|(name, m)| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (
                name.clone(),
                (
                    s(&m["bind_addr"]),
                    s(&m["metadata"]["grpc_addr"]),
                    s(&m["metadata"]["http_addr"]),
                ),
            )
        })
        .collect()
}

/// What every node of a harness cluster should be listed with.
fn expected_addresses(nodes: &[&NodeProc]) -> BTreeMap<String, (String, String, String)> {
    nodes
        .iter()
        .map(|n| {
            (
                n.name.clone(),
                (
                    format!("127.0.0.1:{}", n.raft_port),
                    n.grpc_addr(),
                    format!("127.0.0.1:{}", n.http_port),
                ),
            )
        })
        .collect()
}

/// Stale reads of `expected` (key -> Some(value) or None for deleted) on `node`
/// until they all match.
async fn wait_converged(node: &NodeProc, expected: &BTreeMap<String, Option<String>>) {
    let client = raw_client(Duration::from_secs(5));
    wait_until(
        Duration::from_secs(45),
        &format!(
            "{} serves all {} keys as expected (stale)",
            node.name,
            expected.len()
        ),
        || {
            let client = client.clone();
            async move {
                for (key, value) in expected {
                    let url = node.url(&format!("/v1/data/{key}?consistency=stale"));
                    let resp = client.get(&url).send().await.ok()?;
                    let (status, text) = status_text(resp).await;
                    let ok = match value {
                        Some(v) => status == 200 && text == *v,
                        None => status == 404,
                    };
                    if !ok {
                        return None;
                    }
                }
                Some(())
            }
        },
    )
    .await
}

#[tokio::test]
async fn three_node_bring_up_via_peer_address() {
    bounded(TEST_TIMEOUT, async {
        let cluster = Cluster::start(3, &[]).await;
        let client = raw_client(Duration::from_secs(5));
        let nodes: Vec<&NodeProc> = cluster.nodes.iter().collect();
        let expected = expected_addresses(&nodes);

        for node in &cluster.nodes {
            let view = get_json(&client, &node.url("/v1/cluster")).await;
            assert_eq!(
                addresses(&view),
                expected,
                "{}'s /v1/cluster: {view}",
                node.name
            );
            for (name, member) in view["cluster"]["nodes"].as_object().unwrap() {
                assert_eq!(member["voter"], json!(true), "{name} in {view}");
            }
        }

        // Leadership as every node reports it. Read it again on a mismatch: on
        // a loaded machine an election may be under way at the first look.
        let (leader, views) = wait_until(
            Duration::from_secs(15),
            "one leader named on every /v1/cluster and /v1/node, one node in state Leader",
            || {
                let client = client.clone();
                let nodes = nodes.clone();
                async move {
                    let mut named = BTreeSet::new();
                    let mut in_state_leader = Vec::new();
                    let mut views = Vec::new();
                    for node in &nodes {
                        let view = try_json(&client, &node.url("/v1/cluster")).await?;
                        named.insert(view["cluster"]["leader"].as_str()?.to_string());
                        let me = try_json(&client, &node.url("/v1/node")).await?;
                        named.insert(me["node"]["leader"].as_str()?.to_string());
                        if me["node"]["state"] == "Leader" {
                            in_state_leader.push(node.name.clone());
                        }
                        views.push(me);
                    }
                    match (in_state_leader.as_slice(), named.len()) {
                        ([leader], 1) if named.contains(leader) => Some((leader.clone(), views)),
                        _ => None,
                    }
                }
            },
        )
        .await;
        assert!(expected.contains_key(&leader), "leader {leader:?}");
        for (node, body) in cluster.nodes.iter().zip(&views) {
            let me = &body["node"];
            assert_eq!(me["id"], json!(node.name), "{body}");
            assert_eq!(me["member"], json!(true), "{body}");
            assert_eq!(me["voter"], json!(true), "{body}");
            let state = if node.name == leader {
                "Leader"
            } else {
                "Follower"
            };
            assert_eq!(me["state"], state, "{body}");
        }
    })
    .await
}

#[tokio::test]
async fn replication_and_reads_on_every_node() {
    bounded(TEST_TIMEOUT, async {
        let cluster = Cluster::start(3, &[]).await;
        let leader = cluster.leader(SETTLE).await;
        let client = raw_client(Duration::from_secs(10));
        let mut expected = BTreeMap::new();
        for i in 0..50 {
            let key = format!("repl/k{i:03}");
            let value = format!("value {i} {}", rand::random::<u64>());
            put_ok(&client, &cluster.nodes[leader], &key, &value).await;
            // Acknowledged: a linearizable read anywhere must see it now.
            for node in &cluster.nodes {
                assert_eq!(
                    read_key(&client, node, &key, None).await.as_deref(),
                    Some(value.as_str()),
                    "default (linearizable) read of {key} on {} right after the ack",
                    node.name
                );
            }
            if i % 10 == 0 {
                for node in &cluster.nodes {
                    assert_eq!(
                        read_key(&client, node, &key, Some("linearizable"))
                            .await
                            .as_deref(),
                        Some(value.as_str()),
                        "?consistency=linearizable read of {key} on {}",
                        node.name
                    );
                }
            }
            expected.insert(key, Some(value));
        }
        for node in &cluster.nodes {
            wait_converged(node, &expected).await;
        }
    })
    .await
}

#[tokio::test]
async fn follower_write_redirect() {
    bounded(TEST_TIMEOUT, async {
        let cluster = Cluster::start(3, &[]).await;
        let leader = cluster.leader(SETTLE).await;
        let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
        let (f1, f2) = (&cluster.nodes[followers[0]], &cluster.nodes[followers[1]]);
        let leader_node = &cluster.nodes[leader];

        // No write takes query parameters (unknown ones are refused with 400).
        let path_and_query = "/v1/data/redir/a%20b/c";
        let resp = raw_client(Duration::from_secs(10))
            .put(f1.url(path_and_query))
            .body("hello")
            .send()
            .await
            .expect("PUT to a follower");
        assert_eq!(resp.status(), StatusCode::TEMPORARY_REDIRECT);
        let location = resp
            .headers()
            .get("location")
            .expect("Location header")
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(location, leader_node.url(path_and_query), "Location");
        let hinted = resp
            .headers()
            .get("x-cete-leader")
            .expect("X-Cete-Leader header")
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(hinted, leader_node.name, "X-Cete-Leader");
        let (_, text) = status_text(resp).await;
        let body = assert_error_body(&text, &["NotLeader"], "307 body");
        assert_eq!(body["leader"]["id"], json!(leader_node.name), "{body}");
        assert_eq!(
            body["leader"]["http_addr"],
            json!(format!("127.0.0.1:{}", leader_node.http_port)),
            "{body}"
        );
        // Nothing was written by the refused request.
        assert_eq!(
            read_key(
                &raw_client(Duration::from_secs(10)),
                leader_node,
                "redir/a%20b/c",
                None
            )
            .await,
            None
        );

        // A client that follows the redirect re-sends the PUT to the leader.
        let resp = follow_client(Duration::from_secs(15))
            .put(f1.url(path_and_query))
            .body("hello")
            .send()
            .await
            .expect("PUT following the redirect");
        let (status, text) = status_text(resp).await;
        assert_eq!(status, 201, "followed PUT: {text}");
        for node in &cluster.nodes {
            assert_eq!(
                read_key(
                    &raw_client(Duration::from_secs(10)),
                    node,
                    "redir/a%20b/c",
                    None
                )
                .await
                .as_deref(),
                Some("hello"),
                "on {}",
                node.name
            );
        }

        // The CLI follows redirects too.
        let out = run_cli(f1, &["set", "redir/cli", "from the cli"], None);
        assert!(
            out.status.success(),
            "cete set via {}: {:?}\nstdout {}\nstderr {}",
            f1.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let out = run_cli(f2, &["get", "redir/cli"], None);
        assert!(
            out.status.success(),
            "cete get via {}: {:?}\nstderr {}",
            f2.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "from the cli");
    })
    .await
}

/// What the writers of `leader_kill9_under_write_load_loses_nothing` share.
struct Load {
    /// HTTP base URLs of all nodes, dead or alive.
    urls: Vec<String>,
    /// Index in `urls` the writers currently send to.
    target: AtomicUsize,
    stop: AtomicBool,
    acked: Mutex<Vec<(String, String)>>,
    /// Writes answered 503/504 or lost to a timeout or broken connection.
    unacked: AtomicUsize,
}

async fn writer(load: Arc<Load>, id: usize) {
    let client = follow_client(Duration::from_secs(15));
    let mut seq = 0u64;
    while !load.stop.load(Ordering::SeqCst) {
        seq += 1;
        let key = format!("load/w{id}/{seq:06}");
        let value = format!("{id}-{seq}-{}", rand::random::<u32>());
        let target = load.target.load(Ordering::SeqCst);
        let url = format!("{}/v1/data/{key}", load.urls[target]);
        match client.put(&url).body(value.clone()).send().await {
            Ok(resp) if resp.status() == 200 || resp.status() == 201 => {
                load.acked.lock().unwrap().push((key, value));
            }
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                assert!(
                    status == 503 || status == 504,
                    "write {url}: unexpected {status} {text}"
                );
                load.unacked.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => {
                // Connection refused or reset, or no answer in time: try
                // another node, which redirects to the leader it knows.
                load.unacked.fetch_add(1, Ordering::SeqCst);
                let _ = load.target.compare_exchange(
                    target,
                    (target + 1) % load.urls.len(),
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test]
async fn leader_kill9_under_write_load_loses_nothing() {
    bounded(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start(3, &[]).await;
        let old = cluster.leader(SETTLE).await;
        let load = Arc::new(Load {
            urls: cluster.nodes.iter().map(|n| n.url("")).collect(),
            target: AtomicUsize::new(old),
            stop: AtomicBool::new(false),
            acked: Mutex::new(Vec::new()),
            unacked: AtomicUsize::new(0),
        });
        let writers: Vec<_> = (0..4)
            .map(|id| tokio::spawn(writer(load.clone(), id)))
            .collect();

        let acked = || load.acked.lock().unwrap().len();
        wait_until(Duration::from_secs(30), "50 writes acknowledged", || {
            let n = acked();
            async move { (n >= 50).then_some(()) }
        })
        .await;
        let before_kill = acked();
        cluster.nodes[old].kill9();
        let killed_at = Instant::now();

        let new = cluster.leader(SETTLE).await;
        assert_ne!(new, old, "the killed node cannot lead");
        let elected_after = killed_at.elapsed();
        let at_election = acked();
        tokio::time::sleep(Duration::from_secs(2)).await; // the load runs on meanwhile
        load.stop.store(true, Ordering::SeqCst);
        for w in writers {
            w.await.expect("writer task");
        }
        let acked_list = load.acked.lock().unwrap().clone();
        eprintln!(
            "{} acknowledged ({before_kill} before the kill, {} after the election in {elected_after:?}), {} not acknowledged",
            acked_list.len(),
            acked_list.len() - at_election,
            load.unacked.load(Ordering::SeqCst)
        );
        assert!(
            acked_list.len() > at_election,
            "no write was acknowledged in the 2 s after the new leader was elected"
        );

        cluster.nodes[old].start();
        cluster.nodes[old].wait_ready(SETTLE).await;
        let client = raw_client(Duration::from_secs(10));
        for node in &cluster.nodes {
            // A linearizable read is a barrier: every write acknowledged before it
            // is applied on this node, so stale reads after it must see them all.
            let (key, value) = acked_list.last().unwrap();
            assert_eq!(
                read_key(&client, node, key, None).await.as_deref(),
                Some(value.as_str()),
                "linearizable read of {key} on {}",
                node.name
            );
            for (key, value) in &acked_list {
                assert_eq!(
                    read_key(&client, node, key, Some("stale")).await.as_deref(),
                    Some(value.as_str()),
                    "acknowledged {key} on {}",
                    node.name
                );
            }
        }
        // A sample of linearizable reads as well, spread over the run.
        for (key, value) in acked_list.iter().step_by(25) {
            for node in &cluster.nodes {
                assert_eq!(
                    read_key(&client, node, key, None).await.as_deref(),
                    Some(value.as_str()),
                    "linearizable read of {key} on {}",
                    node.name
                );
            }
        }
    })
    .await
}

#[tokio::test]
async fn lagging_follower_catches_up_by_snapshot() {
    bounded(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start(3, &["--snapshot-threshold", "20"]).await;
        let leader = cluster.leader(SETTLE).await;
        let lagging = (0..3).find(|i| *i != leader).unwrap();
        let status = cluster.nodes[lagging].terminate();
        assert!(status.success(), "SIGTERM exit: {status:?}");
        let leader = cluster.leader(SETTLE).await;

        let client = raw_client(Duration::from_secs(15));
        let mut expected = BTreeMap::new();
        for i in 0..200 {
            let key = format!("snap/k{i:03}");
            let value = format!("v{i}-{}", rand::random::<u32>());
            put_ok(&client, &cluster.nodes[leader], &key, &value).await;
            expected.insert(key, Some(value));
        }
        for i in (0..200).step_by(4) {
            let key = format!("snap/k{i:03}");
            let url = cluster.nodes[leader].url(&format!("/v1/data/{key}"));
            let (status, text) = status_text(client.delete(&url).send().await.unwrap()).await;
            assert_eq!(status, 200, "DELETE {url}: {text}");
            expected.insert(key, None);
        }
        assert_eq!(expected.values().filter(|v| v.is_none()).count(), 50);

        let resp = client
            .post(cluster.nodes[leader].url("/v1/snapshot"))
            .send()
            .await
            .expect("POST /v1/snapshot");
        let (status, text) = status_text(resp).await;
        assert_eq!(status, 200, "POST /v1/snapshot: {text}");
        let index = parse(&text, "snapshot")["snapshot"]["index"]
            .as_u64()
            .unwrap_or_else(|| panic!("no snapshot.index in {text}"));
        assert!(
            index >= 250,
            "snapshot index {index} is behind the 250 writes"
        );

        let log_len_before = std::fs::metadata(&cluster.nodes[lagging].log_path)
            .map(|m| m.len())
            .unwrap_or(0);
        cluster.nodes[lagging].start();
        cluster.nodes[lagging].wait_ready(SETTLE).await;
        wait_converged(&cluster.nodes[lagging], &expected).await;

        // The follower got there by installing the snapshot, not by replaying the log.
        let log_path = cluster.nodes[lagging].log_path.clone();
        wait_until(
            Duration::from_secs(10),
            "the restarted follower logs \"installed snapshot\"",
            || {
                let log_path = log_path.clone();
                async move {
                    let bytes = std::fs::read(&log_path).ok()?;
                    let tail = bytes.get(log_len_before as usize..)?;
                    String::from_utf8_lossy(tail)
                        .contains("installed snapshot")
                        .then_some(())
                }
            },
        )
        .await;
        // And it is a full member again, serving linearizable reads.
        for (key, value) in expected.iter().step_by(20) {
            assert_eq!(
                read_key(&client, &cluster.nodes[lagging], key, None).await,
                *value,
                "linearizable read of {key} on the caught-up follower"
            );
        }
        // Revisions came with the snapshot: every key has the same revision
        // on every member, and the next write gets the same one everywhere.
        let revisions = key_revisions(&client, &cluster.nodes[leader], "snap/").await;
        assert_eq!(revisions.len(), 150);
        put_ok(&client, &cluster.nodes[leader], "snap/after", "x").await;
        let after = key_revisions(&client, &cluster.nodes[leader], "snap/after").await;
        for node in &cluster.nodes {
            let what = format!("{} lists the leader's revisions", node.name);
            wait_until(SETTLE, &what, || {
                let client = client.clone();
                let revisions = &revisions;
                let after = &after;
                async move {
                    (key_revisions(&client, node, "snap/k").await == *revisions
                        && key_revisions(&client, node, "snap/after").await == *after)
                        .then_some(())
                }
            })
            .await;
        }
    })
    .await
}

/// Key -> modify revision of every key under `prefix`, from a stale listing.
async fn key_revisions(
    client: &reqwest::Client,
    node: &NodeProc,
    prefix: &str,
) -> BTreeMap<String, u64> {
    let url = node.url(&format!(
        "/v1/data?prefix={prefix}&limit=1000&consistency=stale"
    ));
    let Ok(resp) = client.get(&url).send().await else {
        return BTreeMap::new();
    };
    let body: Value = resp.json().await.unwrap_or_default();
    body["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| Some((k["key"].as_str()?.to_string(), k["revision"].as_u64()?)))
        .collect()
}

#[tokio::test]
async fn join_and_leave_via_rest_and_cli() {
    bounded(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start(1, &[]).await;
        let peer = cluster.nodes[0].grpc_addr();
        for name in ["node2", "node3"] {
            let mut node = NodeProc::new(name, cluster.root.path(), Some(peer.clone()), &[]);
            node.start();
            cluster.nodes.push(node);
            let n = cluster.nodes.len();
            cluster.wait_members(n, Duration::from_secs(60)).await;
        }
        let all: Vec<&NodeProc> = cluster.nodes.iter().collect();
        let leader = wait_membership(&all, &["node1", "node2", "node3"], SETTLE).await;
        let client = raw_client(Duration::from_secs(15));
        let view = get_json(&client, &cluster.nodes[0].url("/v1/cluster")).await;
        assert_eq!(addresses(&view), expected_addresses(&all), "{view}");

        // Membership changes go to the leader (normally node1, which bootstrapped).
        let mut leader_idx = index_of(&cluster, &leader);
        let resp = client
            .delete(cluster.nodes[leader_idx].url("/v1/cluster/node3"))
            .send()
            .await
            .expect("DELETE /v1/cluster/node3");
        let (status, text) = status_text(resp).await;
        assert_eq!(status, 200, "DELETE /v1/cluster/node3: {text}");
        assert_eq!(parse(&text, "DELETE node3"), json!({}));
        let leader = wait_membership(
            &[&cluster.nodes[0], &cluster.nodes[1]],
            &["node1", "node2"],
            SETTLE,
        )
        .await;
        leader_idx = index_of(&cluster, &leader);
        // node3 learns of its removal, says so, and stops taking part.
        wait_removed(&client, &cluster.nodes[2]).await;
        cluster.nodes[2].terminate();
        let remaining = [&cluster.nodes[0], &cluster.nodes[1]];

        let resp = client
            .delete(cluster.nodes[leader_idx].url("/v1/cluster/nosuchnode"))
            .send()
            .await
            .expect("DELETE unknown node");
        let (status, text) = status_text(resp).await;
        assert_eq!(status, 404, "DELETE /v1/cluster/nosuchnode: {text}");
        assert_error_body(&text, &["NodeNotFound"], "DELETE unknown node");

        // Bad join requests.
        let join_url = cluster.nodes[leader_idx].url("/v1/cluster/node9");
        let resp = client
            .put(&join_url)
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .expect("PUT invalid JSON");
        let (status, text) = status_text(resp).await;
        assert_eq!(status, 400, "PUT invalid JSON: {text}");
        assert_error_body(&text, &["InvalidJson"], "PUT invalid JSON");
        // node2's gRPC address answers as node2, not node9.
        let resp = client
            .put(&join_url)
            .json(&json!({"metadata": {"grpc_addr": cluster.nodes[1].grpc_addr()}}))
            .send()
            .await
            .expect("PUT with another node's address");
        let (status, text) = status_text(resp).await;
        assert_eq!(status, 409, "PUT node9 with node2's grpc_addr: {text}");
        assert_error_body(&text, &["Conflict"], "PUT with a mismatched id");
        // Neither changed the membership.
        wait_membership(&remaining, &["node1", "node2"], SETTLE).await;

        // The CLI removes node2 (sent to node1; a follower would redirect it).
        let out = run_cli(&cluster.nodes[0], &["leave", "node2"], None);
        assert!(
            out.status.success(),
            "cete leave node2: {:?}\nstdout {}\nstderr {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let leader = wait_membership(&[&cluster.nodes[0]], &["node1"], SETTLE).await;
        assert_eq!(leader, "node1");
        // The one-node cluster still takes writes.
        put_ok(&client, &cluster.nodes[0], "after/leave", "ok").await;
    })
    .await
}

#[tokio::test]
async fn remove_the_leader() {
    bounded(TEST_TIMEOUT, async {
        let cluster = Cluster::start(3, &[]).await;
        let leader = cluster.leader(SETTLE).await;
        let leader_name = cluster.nodes[leader].name.clone();
        let client = raw_client(Duration::from_secs(15));
        put_ok(&client, &cluster.nodes[leader], "before/removal", "1").await;

        let url = cluster.nodes[leader].url(&format!("/v1/cluster/{leader_name}"));
        let (status, text) = status_text(client.delete(&url).send().await.expect("DELETE")).await;
        assert_eq!(status, 200, "DELETE {url}: {text}");
        assert_eq!(parse(&text, &url), json!({}));

        let rest: Vec<&NodeProc> = cluster
            .nodes
            .iter()
            .filter(|n| n.name != leader_name)
            .collect();
        let names: Vec<&str> = rest.iter().map(|n| n.name.as_str()).collect();
        let new_leader = wait_leader_among(&rest, SETTLE).await;
        assert_ne!(new_leader, leader_name);
        let new_leader = wait_membership(&rest, &names, SETTLE).await;
        assert!(names.contains(&new_leader.as_str()), "{new_leader}");

        // Writes go through (sent to a remaining node, redirects followed).
        let follow = follow_client(Duration::from_secs(15));
        for i in 0..10 {
            put_ok(&follow, rest[i % 2], &format!("after/removal/{i}"), "2").await;
        }
        for node in &rest {
            assert_eq!(
                read_key(&client, node, "after/removal/9", None)
                    .await
                    .as_deref(),
                Some("2")
            );
            assert_eq!(
                read_key(&client, node, "before/removal", None)
                    .await
                    .as_deref(),
                Some("1")
            );
        }
    })
    .await
}

#[tokio::test]
async fn full_cluster_restart_keeps_data_and_membership() {
    bounded(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start(3, &[]).await;
        let leader = cluster.leader(SETTLE).await;
        let client = raw_client(Duration::from_secs(15));
        let mut expected = BTreeMap::new();
        for i in 0..30 {
            let key = format!("restart/k{i:02}");
            let value = format!("v{i}-{}", rand::random::<u32>());
            put_ok(&client, &cluster.nodes[leader], &key, &value).await;
            expected.insert(key, value);
        }
        let before = addresses(&get_json(&client, &cluster.nodes[leader].url("/v1/cluster")).await);

        for node in cluster.nodes.iter_mut() {
            let status = node.terminate();
            assert!(status.success(), "{} SIGTERM exit: {status:?}", node.name);
        }
        for node in cluster.nodes.iter_mut() {
            node.start();
        }
        cluster.wait_members(3, Duration::from_secs(60)).await;
        let leader = cluster.leader(SETTLE).await;
        for node in &cluster.nodes {
            node.wait_ready(SETTLE).await;
            let view = get_json(&client, &node.url("/v1/cluster")).await;
            assert_eq!(
                addresses(&view),
                before,
                "{}'s /v1/cluster after restart",
                node.name
            );
            for (key, value) in &expected {
                assert_eq!(
                    read_key(&client, node, key, None).await.as_deref(),
                    Some(value.as_str()),
                    "{key} on {} after the restart",
                    node.name
                );
            }
        }
        put_ok(&client, &cluster.nodes[leader], "restart/after", "x").await;
    })
    .await
}

#[tokio::test]
async fn five_nodes_survive_two_down() {
    bounded(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start(5, &[]).await;
        let leader = cluster.leader(SETTLE).await;
        let followers: Vec<usize> = (0..5).filter(|i| *i != leader).collect();
        cluster.nodes[followers[0]].kill9();
        cluster.nodes[followers[1]].kill9();

        let client = raw_client(Duration::from_secs(15));
        let follow = follow_client(Duration::from_secs(15));
        let alive: Vec<usize> = (0..5)
            .filter(|i| cluster.nodes[*i].pid().is_some())
            .collect();
        assert_eq!(alive.len(), 3);
        for i in 0..20 {
            let key = format!("five/k{i:02}");
            let value = format!("v{i}");
            // Alternate the entry node: followers redirect to the leader.
            let entry = &cluster.nodes[alive[i % 3]];
            put_ok(&follow, entry, &key, &value).await;
            for &n in &alive {
                assert_eq!(
                    read_key(&client, &cluster.nodes[n], &key, None)
                        .await
                        .as_deref(),
                    Some(value.as_str()),
                    "linearizable read of {key} on {}",
                    cluster.nodes[n].name
                );
            }
        }
    })
    .await
}

#[tokio::test]
async fn no_leader_gives_503() {
    bounded(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start(3, &[]).await;
        let leader = cluster.leader(SETTLE).await;
        let client = raw_client(Duration::from_secs(10));
        put_ok(&client, &cluster.nodes[leader], "quorum/before", "kept").await;
        let survivor = (0..3).find(|i| *i != leader).unwrap();
        // Make sure the survivor has the write before it is alone.
        assert_eq!(
            read_key(&client, &cluster.nodes[survivor], "quorum/before", None)
                .await
                .as_deref(),
            Some("kept")
        );
        for i in 0..3 {
            if i != survivor {
                cluster.nodes[i].kill9();
            }
        }
        let node = &cluster.nodes[survivor];

        // A write answers 503 or 504 within 15 s. Until the survivor's election
        // timeout fires it may still redirect (307) to the dead leader; it must
        // never accept the write.
        let slow = raw_client(Duration::from_secs(30));
        let started = Instant::now();
        let (status, text) = loop {
            let sent = Instant::now();
            let resp = slow
                .put(node.url("/v1/data/quorum/lost"))
                .body("never")
                .send()
                .await
                .expect("PUT to the survivor");
            let (status, text) = status_text(resp).await;
            assert!(
                status != 200 && status != 201,
                "a write without quorum was accepted: {status} {text}"
            );
            assert!(
                sent.elapsed() <= Duration::from_secs(15),
                "the write took {:?} to answer {status} {text}",
                sent.elapsed()
            );
            if status != 307 {
                break (status, text);
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "still redirecting to the dead leader after 15 s: {text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        eprintln!(
            "write to the lone follower answered {status} after {:?}: {text}",
            started.elapsed()
        );
        match status {
            503 => {
                assert_error_body(&text, &["NoLeader", "Timeout"], "write without quorum");
            }
            504 => {
                assert_error_body(&text, &["OutcomeUnknown"], "write without quorum");
            }
            _ => panic!("write without quorum: {status} {text}"),
        }

        // Once the survivor knows it has no leader, linearizable reads fail
        // and stale reads still serve the local copy.
        wait_until(
            Duration::from_secs(15),
            "the survivor knows it has no leader",
            || {
                let client = client.clone();
                let url = node.url("/v1/node");
                async move {
                    let body = try_json(&client, &url).await?;
                    (body["node"]["leader"] == "").then_some(())
                }
            },
        )
        .await;
        let url = node.url("/v1/data/quorum/before");
        let resp = slow.get(&url).send().await.expect("linearizable GET");
        let retry_after = resp.headers().get("retry-after").cloned();
        let (status, text) = status_text(resp).await;
        assert_eq!(status, 503, "linearizable read without a leader: {text}");
        assert_error_body(&text, &["NoLeader", "Timeout"], "linearizable read");
        assert!(retry_after.is_some(), "503 without Retry-After: {text}");
        assert_stale_view(&client, node, "quorum", "the survivor").await;
    })
    .await
}

/// Without a quorum, `node` still serves stale reads: `<prefix>/before`
/// (committed earlier) reads "kept", and `<prefix>/lost` (refused or never
/// committed) is absent.
async fn assert_stale_view(client: &reqwest::Client, node: &NodeProc, prefix: &str, who: &str) {
    assert_eq!(
        read_key(client, node, &format!("{prefix}/before"), Some("stale"))
            .await
            .as_deref(),
        Some("kept"),
        "stale read on {who}"
    );
    assert_eq!(
        read_key(client, node, &format!("{prefix}/lost"), Some("stale")).await,
        None,
        "a write without quorum was applied on {who}"
    );
}

/// The other side of `no_leader_gives_503`: the survivor is the old leader,
/// which still thinks it leads but can reach no quorum.
#[tokio::test]
async fn isolated_leader_gives_503_or_504() {
    bounded(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start(3, &[]).await;
        let leader = cluster.leader(SETTLE).await;
        let client = raw_client(Duration::from_secs(30));
        put_ok(&client, &cluster.nodes[leader], "isolated/before", "kept").await;
        for i in 0..3 {
            if i != leader {
                cluster.nodes[i].kill9();
            }
        }
        let node = &cluster.nodes[leader];

        let sent = Instant::now();
        let resp = client
            .put(node.url("/v1/data/isolated/lost"))
            .body("never")
            .send()
            .await
            .expect("PUT to the isolated leader");
        let (status, text) = status_text(resp).await;
        eprintln!(
            "write to the isolated leader answered {status} after {:?}: {text}",
            sent.elapsed()
        );
        assert!(
            sent.elapsed() <= Duration::from_secs(15),
            "the write took {:?} to answer {status} {text}",
            sent.elapsed()
        );
        match status {
            503 => {
                assert_error_body(&text, &["NoLeader", "Timeout"], "write without quorum");
            }
            504 => {
                assert_error_body(&text, &["OutcomeUnknown"], "write without quorum");
            }
            _ => panic!("write without quorum: {status} {text}"),
        }

        let sent = Instant::now();
        let resp = client
            .get(node.url("/v1/data/isolated/before"))
            .send()
            .await
            .expect("linearizable GET on the isolated leader");
        let (status, text) = status_text(resp).await;
        eprintln!(
            "linearizable read on the isolated leader answered {status} after {:?}: {text}",
            sent.elapsed()
        );
        assert_eq!(status, 503, "linearizable read without quorum: {text}");
        assert_error_body(&text, &["NoLeader", "Timeout"], "linearizable read");
        assert!(
            sent.elapsed() <= Duration::from_secs(15),
            "{:?}",
            sent.elapsed()
        );
        assert_stale_view(&client, node, "isolated", "the isolated leader").await;
    })
    .await
}

/// The original README's "join later": nodes started standalone (each its
/// own one-node cluster) join through `cete join` and `PUT /v1/cluster/{id}`.
/// They drop their empty cluster, restart in place and get the data. A
/// standalone node that holds data is refused and keeps its data.
#[tokio::test]
async fn standalone_nodes_join_later() {
    bounded(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start(1, &[]).await;
        let client = raw_client(Duration::from_secs(30));
        put_ok(&client, &cluster.nodes[0], "before/join", "v1").await;
        for name in ["node2", "node3", "node4"] {
            let mut node = NodeProc::new(name, cluster.root.path(), None, &[]);
            node.start();
            node.wait_ready(SETTLE).await;
            cluster.nodes.push(node);
        }
        // node4 takes a write of its own: joining would discard it.
        put_ok(&client, &cluster.nodes[3], "mine", "node4's").await;

        let out = run_cli(
            &cluster.nodes[0],
            &["join", "node2", &cluster.nodes[1].grpc_addr()],
            None,
        );
        assert!(
            out.status.success(),
            "cete join node2: {:?}\nstdout {}\nstderr {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            cluster.dump_logs()
        );
        let node3 = &cluster.nodes[2];
        let resp = client
            .put(cluster.nodes[0].url("/v1/cluster/node3"))
            .json(&json!({
                "bind_addr": format!("127.0.0.1:{}", node3.raft_port),
                "metadata": {
                    "grpc_addr": node3.grpc_addr(),
                    "http_addr": format!("127.0.0.1:{}", node3.http_port),
                }
            }))
            .send()
            .await
            .expect("PUT /v1/cluster/node3");
        let (status, text) = status_text(resp).await;
        assert_eq!(status, 200, "PUT /v1/cluster/node3: {text}");

        let three = [&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]];
        let leader = wait_membership(&three, &["node1", "node2", "node3"], SETTLE).await;
        assert_eq!(leader, "node1");
        for node in three {
            let value = wait_until(SETTLE, "the data reaches the joined node", || async {
                read_key(&client, node, "before/join", Some("stale")).await
            })
            .await;
            assert_eq!(value, "v1", "on {}", node.name);
        }
        put_ok(&client, &cluster.nodes[0], "after/join", "v2").await;
        assert_eq!(
            read_key(&client, &cluster.nodes[2], "after/join", None).await,
            Some("v2".into())
        );

        // node4 holds data: refused, nothing changes, its data stays.
        let resp = client
            .put(cluster.nodes[0].url("/v1/cluster/node4"))
            .json(&json!({"metadata": {"grpc_addr": cluster.nodes[3].grpc_addr()}}))
            .send()
            .await
            .expect("PUT /v1/cluster/node4");
        let (status, text) = status_text(resp).await;
        assert_eq!(status, 409, "PUT /v1/cluster/node4: {text}");
        let body = assert_error_body(&text, &["Conflict"], "join a node with data");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("holds data")),
            "{body}"
        );
        assert_eq!(
            read_key(&client, &cluster.nodes[3], "mine", None).await,
            Some("node4's".into())
        );
        wait_membership(&three, &["node1", "node2", "node3"], SETTLE).await;

        // Restarting a joined node keeps it a member with its data.
        cluster.nodes[1].terminate();
        cluster.nodes[1].start();
        let three = [&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]];
        wait_membership(&three, &["node1", "node2", "node3"], SETTLE).await;
        let value = wait_until(SETTLE, "node2 serves after its restart", || async {
            read_key(&client, &cluster.nodes[1], "after/join", Some("stale")).await
        })
        .await;
        assert_eq!(value, "v2");
    })
    .await
}

/// A node removed while it was down learns of it from the others when it
/// comes back, stops, and refuses to start on that data again.
#[tokio::test]
async fn node_removed_while_down_stops_when_back() {
    bounded(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start(3, &[]).await;
        let client = raw_client(Duration::from_secs(15));
        let all: Vec<&NodeProc> = cluster.nodes.iter().collect();
        let leader = wait_membership(&all, &["node1", "node2", "node3"], SETTLE).await;
        let victim = (0..3)
            .find(|i| cluster.nodes[*i].name != leader)
            .expect("a follower");
        cluster.nodes[victim].terminate();
        let leader_idx = index_of(&cluster, &leader);
        let victim_name = cluster.nodes[victim].name.clone();
        let resp = client
            .delete(cluster.nodes[leader_idx].url(&format!("/v1/cluster/{victim_name}")))
            .send()
            .await
            .expect("DELETE the stopped node");
        let (status, text) = status_text(resp).await;
        assert_eq!(status, 200, "DELETE {victim_name}: {text}");

        cluster.nodes[victim].start();
        wait_removed(&client, &cluster.nodes[victim]).await;
        let survivors: Vec<&NodeProc> = (0..3)
            .filter(|i| *i != victim)
            .map(|i| &cluster.nodes[i])
            .collect();
        let names: Vec<&str> = survivors.iter().map(|n| n.name.as_str()).collect();
        wait_membership(&survivors, &names, SETTLE).await;

        cluster.nodes[victim].terminate();
        cluster.nodes[victim].start();
        let status = wait_until(SETTLE, "the removed node exits at start", || {
            let status = cluster.nodes[victim].try_exit_status();
            async move { status }
        })
        .await;
        assert!(!status.success(), "a removed node must not start again");
        let stderr =
            std::fs::read_to_string(cluster.nodes[victim].stderr_path()).unwrap_or_default();
        assert!(
            stderr.contains("was removed from its cluster"),
            "stderr: {stderr}"
        );
    })
    .await
}

/// A leader keeps its append stream to each follower open while it leads; a
/// follower that stops must end it, not wait out the listeners' grace period
/// (the node logs a warning when a listener's calls outlast it).
#[tokio::test]
async fn a_follower_stops_without_waiting_on_the_leaders_append_stream() {
    bounded(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start(3, &[]).await;
        let leader = cluster.leader(SETTLE).await;
        let client = raw_client(Duration::from_secs(15));
        for i in 0..10 {
            put_ok(&client, &cluster.nodes[leader], &format!("stop/k{i}"), "v").await;
        }
        let follower = (0..3).find(|i| *i != leader).unwrap();
        let status = cluster.nodes[follower].terminate();
        assert!(status.success(), "SIGTERM exit: {status:?}");
        let log = cluster.nodes[follower].dump_log();
        assert!(
            !log.contains("still had open calls"),
            "the follower's shutdown waited on open calls:\n{log}"
        );
    })
    .await
}
