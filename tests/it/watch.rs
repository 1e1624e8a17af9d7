//! Watch (`GET /v1/watch`, Server-Sent Events, and `cete watch`): events in
//! the order of the acknowledged writes, resume without gaps (also across a
//! leader change), the compacted error, and a slow watcher dropped while
//! writes and other watchers go on.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{
    assert_error_body, bounded, follow_client, run_cli, wait_until, Cluster, NodeProc,
};

const TEST_TIMEOUT: Duration = Duration::from_secs(150);
const SETTLE: Duration = Duration::from_secs(30);
/// How long a test waits for one event it knows is coming.
const EVENT_WAIT: Duration = Duration::from_secs(20);

/// One Server-Sent Event as the tests see it.
#[derive(Debug, Clone)]
pub(crate) struct Sse {
    pub(crate) event: String,
    pub(crate) id: Option<u64>,
    pub(crate) data: Value,
}

/// Splits SSE text into events; keeps an incomplete tail for the next call.
fn parse_sse(buffer: &mut String) -> Vec<Sse> {
    let mut events = Vec::new();
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        let (mut event, mut id, mut data) = (String::new(), None, None);
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("id:") {
                id = Some(v.trim().parse().expect("ids are revisions"));
            } else if let Some(v) = line.strip_prefix("data:") {
                data = Some(serde_json::from_str(v).expect("event data is JSON"));
            }
        }
        // Keep-alive comments carry no data.
        if let Some(data) = data {
            events.push(Sse { event, id, data });
        }
    }
    events
}

/// An open watch stream read through reqwest.
pub(crate) struct Watch {
    body: futures::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buffer: String,
    ready: std::collections::VecDeque<Sse>,
}

fn stream_client() -> reqwest::Client {
    // No overall timeout: a watch lasts as long as the test wants.
    crate::harness::http()
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .build()
        .expect("reqwest client")
}

impl Watch {
    /// Opens `/v1/watch?<query>` on `node`; panics unless it answers 200.
    pub(crate) async fn open(node: &NodeProc, query: &str, last_event_id: Option<u64>) -> Watch {
        let url = node.url(&format!("/v1/watch?{query}"));
        let mut req = stream_client().get(&url);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(resp.status(), 200, "GET {url}");
        assert_eq!(
            resp.headers()["content-type"],
            "text/event-stream",
            "GET {url}"
        );
        Watch {
            body: resp.bytes_stream().map(|r| r.map(|b| b.to_vec())).boxed(),
            buffer: String::new(),
            ready: Default::default(),
        }
    }

    /// The next event; `None` when the stream ends or breaks.
    pub(crate) async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            let chunk = tokio::time::timeout(EVENT_WAIT, self.body.next())
                .await
                .expect("no event within the wait")?
                .ok()?;
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
            self.ready.extend(parse_sse(&mut self.buffer));
        }
    }

    /// The next event if one comes within `wait`.
    pub(crate) async fn next_within(&mut self, wait: Duration) -> Option<Sse> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            let chunk = tokio::time::timeout(wait, self.body.next())
                .await
                .ok()??
                .ok()?;
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
            self.ready.extend(parse_sse(&mut self.buffer));
        }
    }

    /// Reads put/delete events until one has revision >= `rev`.
    async fn until(&mut self, rev: u64, seen: &mut Vec<Sse>) {
        while seen.last().and_then(|e| e.id) < Some(rev) {
            let event = self.next().await.expect("the stream ended early");
            assert_ne!(event.event, "error", "error event: {:?}", event.data);
            seen.push(event);
        }
    }
}

/// PUT (following redirects) and return the revision; `None` on any failure.
async fn try_put(client: &reqwest::Client, base: &str, key: &str, value: &str) -> Option<u64> {
    let resp = client
        .put(format!("{base}/v1/data/{key}"))
        .header("content-type", "text/plain")
        .body(value.to_string())
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json::<Value>().await.ok()?["revision"].as_u64()
}

async fn put(client: &reqwest::Client, node: &NodeProc, key: &str, value: &str) -> u64 {
    try_put(client, &node.url(""), key, value)
        .await
        .unwrap_or_else(|| panic!("PUT {key} on {} failed", node.name))
}

async fn delete(client: &reqwest::Client, node: &NodeProc, key: &str) -> u64 {
    let resp = client
        .delete(node.url(&format!("/v1/data/{key}")))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(resp.status(), 200);
    resp.json::<Value>().await.unwrap()["revision"]
        .as_u64()
        .unwrap()
}

fn revisions(events: &[Sse]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e.id.expect("events have ids"))
        .collect()
}

fn assert_increasing(revs: &[u64], what: &str) {
    assert!(
        revs.windows(2).all(|w| w[0] < w[1]),
        "{what}: revisions not strictly increasing: {revs:?}"
    );
}

#[tokio::test]
async fn events_follow_acknowledged_writes_and_resume() {
    bounded(TEST_TIMEOUT, async {
        let cluster = Cluster::start(1, &[]).await;
        let node = &cluster.nodes[0];
        let client = follow_client(Duration::from_secs(5));
        let mut all = Watch::open(node, "", None).await;
        let mut only_a = Watch::open(node, "prefix=a/", None).await;

        // Acknowledged writes, in order: (revision, type, key, value).
        let mut acked = Vec::new();
        let mut present = BTreeSet::new();
        for i in 0..30 {
            let key = if i % 3 == 0 {
                format!("b/{i}")
            } else {
                format!("a/{}", i % 4)
            };
            if i % 5 == 4 && present.remove(&key) {
                let rev = delete(&client, node, &key).await;
                acked.push((rev, "delete", key, String::new()));
                continue;
            }
            let value = format!("v{i}");
            let rev = put(&client, node, &key, &value).await;
            present.insert(key.clone());
            acked.push((rev, "put", key, value));
        }
        let last = acked.last().unwrap().0;
        let mut seen = Vec::new();
        all.until(last, &mut seen).await;
        assert_eq!(seen.len(), acked.len(), "one event per acknowledged write");
        for (event, (rev, kind, key, value)) in seen.iter().zip(&acked) {
            assert_eq!(event.id, Some(*rev));
            assert_eq!(event.event, *kind);
            assert_eq!(event.data["type"], *kind);
            assert_eq!(event.data["key"], key.as_str());
            assert_eq!(event.data["revision"], *rev);
            if *kind == "put" {
                assert_eq!(event.data["value"], value.as_str());
                assert_eq!(event.data["size"], value.len());
                assert_eq!(event.data["content_type"], "text/plain");
            }
        }
        let mut seen_a = Vec::new();
        let last_a = acked
            .iter()
            .rev()
            .find(|w| w.2.starts_with("a/"))
            .unwrap()
            .0;
        only_a.until(last_a, &mut seen_a).await;
        let expected_a: Vec<u64> = acked
            .iter()
            .filter(|w| w.2.starts_with("a/"))
            .map(|w| w.0)
            .collect();
        assert_eq!(revisions(&seen_a), expected_a, "the prefix watch");

        // Resume: drop the connection after 10 events, reconnect with
        // start_revision (and, like EventSource, with Last-Event-ID).
        drop(all);
        let first = acked[0].0;
        let mut part = Vec::new();
        let mut w = Watch::open(node, &format!("start_revision={first}"), None).await;
        w.until(acked[9].0, &mut part).await;
        drop(w);
        let resume_at = part.last().unwrap().id.unwrap();
        let mut w = Watch::open(node, "start_revision=1", Some(resume_at)).await;
        w.until(last, &mut part).await;
        assert_eq!(
            revisions(&part),
            revisions(&seen),
            "resumed with Last-Event-ID"
        );
        let mut w = Watch::open(node, &format!("start_revision={}", resume_at + 1), None).await;
        let mut rest = Vec::new();
        w.until(last, &mut rest).await;
        assert_eq!(
            revisions(&rest),
            revisions(&seen[10..]),
            "resumed with start_revision"
        );

        // A binary value travels as base64.
        let resp = client
            .put(node.url("/v1/data/bin"))
            .body(vec![0xffu8, 0x00])
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
        let event = w.next().await.unwrap();
        assert_eq!(event.data["key"], "bin");
        assert_eq!(event.data["value_base64"], "/wA=");
        assert!(event.data.get("value").is_none());

        // Bad input is a JSON error before any stream.
        let resp = client
            .get(node.url("/v1/watch?start_revision=soon"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        assert_error_body(
            &resp.text().await.unwrap(),
            &["InvalidArgument"],
            "bad start",
        );
    })
    .await
}

#[tokio::test]
async fn compacted_start_is_refused_with_the_oldest_revision() {
    bounded(TEST_TIMEOUT, async {
        let cluster = Cluster::start(1, &["--watch-history", "10"]).await;
        let node = &cluster.nodes[0];
        let client = follow_client(Duration::from_secs(5));
        let mut last = 0;
        for i in 0..30 {
            last = put(&client, node, &format!("k{i}"), "v").await;
        }
        let resp = client
            .get(node.url("/v1/watch?start_revision=1"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 410);
        let body = assert_error_body(&resp.text().await.unwrap(), &["Compacted"], "old start");
        let oldest = body["oldest_revision"].as_u64().expect("oldest_revision");
        assert_eq!(oldest, last - 9, "the window is the last 10 revisions");

        // From the oldest retained revision on, everything is there.
        let mut w = Watch::open(node, &format!("start_revision={oldest}"), None).await;
        let mut seen = Vec::new();
        w.until(last, &mut seen).await;
        assert_eq!(revisions(&seen), (oldest..=last).collect::<Vec<_>>());

        // The CLI: one line, non-zero exit.
        let out = run_cli(node, &["watch", "--start-revision", "2"], None);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains("compacted") && stderr.contains("Compacted"),
            "{stderr}"
        );
    })
    .await
}

#[tokio::test]
async fn cli_watch_prints_one_json_line_per_event() {
    bounded(TEST_TIMEOUT, async {
        let cluster = Cluster::start(1, &[]).await;
        let node = &cluster.nodes[0];
        let client = follow_client(Duration::from_secs(5));
        let first = put(&client, node, "app/x", "1").await;
        put(&client, node, "other", "2").await;
        let last = delete(&client, node, "app/x").await;
        let mut cmd = tokio::process::Command::new(crate::harness::cli_bin());
        cmd.args(["--address", &node.url(""), "watch", "--prefix", "app/"])
            .args(["--start-revision", &first.to_string()])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        crate::harness::clean_env(cmd.as_std_mut());
        let mut child = cmd.spawn().expect("spawn cete watch");
        let mut stdout = child.stdout.take().unwrap();
        let deadline = tokio::time::Instant::now() + EVENT_WAIT;
        let mut text = String::new();
        let mut buf = vec![0u8; 4096];
        while text.lines().count() < 2 {
            let n = tokio::time::timeout_at(deadline, stdout.read(&mut buf))
                .await
                .expect("two lines from cete watch in time")
                .unwrap();
            assert!(n > 0, "cete watch ended early: {text}");
            text.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        }
        child.kill().await.unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["type"], "put");
        assert_eq!(lines[0]["revision"], first);
        assert_eq!(lines[0]["value"], "1");
        assert_eq!(lines[1]["type"], "delete");
        assert_eq!(lines[1]["revision"], last);
    })
    .await
}

/// Writes keys `w<id>-<n>` until stopped, recording acknowledged revisions;
/// failures (a leader change) are retried against every node in turn.
async fn writer(urls: Vec<String>, stop: Arc<AtomicBool>, acked: Arc<Mutex<Vec<u64>>>) {
    let client = follow_client(Duration::from_secs(5));
    let mut n = 0u64;
    let mut target = 0;
    while !stop.load(Ordering::SeqCst) {
        match try_put(&client, &urls[target], &format!("w-{n}"), "v").await {
            Some(rev) => {
                acked.lock().unwrap().push(rev);
                n += 1;
            }
            None => {
                target = (target + 1) % urls.len();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test]
async fn resume_on_another_node_after_the_leader_dies_has_no_gap() {
    bounded(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start(3, &[]).await;
        let leader = cluster.leader(SETTLE).await;
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url("")).collect();
        let load = tokio::spawn(writer(urls, stop.clone(), acked.clone()));

        let mut seen = Vec::new();
        let mut w = Watch::open(&cluster.nodes[leader], "start_revision=1", None).await;
        wait_until(SETTLE, "20 writes acknowledged", || {
            let n = acked.lock().unwrap().len();
            async move { (n >= 20).then_some(()) }
        })
        .await;
        let before = *acked.lock().unwrap().last().unwrap();
        w.until(before, &mut seen).await;
        cluster.nodes[leader].kill9();
        // Whatever was already sent still arrives; then the stream breaks.
        while let Some(event) = w.next().await {
            assert_ne!(event.event, "error", "{:?}", event.data);
            seen.push(event);
        }
        let other = (leader + 1) % 3;
        let resume_at = seen.last().unwrap().id.unwrap();
        let mut w = Watch::open(&cluster.nodes[other], "", Some(resume_at)).await;

        wait_until(SETTLE, "writes acknowledged by a new leader", || {
            let n = acked
                .lock()
                .unwrap()
                .iter()
                .filter(|r| **r > before)
                .count();
            async move { (n >= 20).then_some(()) }
        })
        .await;
        stop.store(true, Ordering::SeqCst);
        load.await.unwrap();
        let acked = acked.lock().unwrap().clone();
        let last = *acked.last().unwrap();
        w.until(last, &mut seen).await;

        let revs = revisions(&seen);
        assert_increasing(&revs, "across the leader change");
        let missing: Vec<_> = acked.iter().filter(|r| !revs.contains(r)).collect();
        assert!(
            missing.is_empty(),
            "acknowledged writes missing: {missing:?}"
        );
        // Every node holds the same history: a fresh watch from 1 on the
        // third node sees exactly what the resumed watch saw.
        let third = 3 - leader - other;
        let mut fresh = Watch::open(&cluster.nodes[third], "start_revision=1", None).await;
        let mut all = Vec::new();
        fresh.until(last, &mut all).await;
        assert_eq!(
            revisions(&all),
            revs,
            "history on {}",
            cluster.nodes[third].name
        );
        let keys = |events: &[Sse]| -> Vec<String> {
            events.iter().map(|e| e.data["key"].to_string()).collect()
        };
        assert_eq!(keys(&all), keys(&seen));
        eprintln!(
            "{} events, {} acknowledged writes, resumed at {resume_at} on {}",
            revs.len(),
            acked.len(),
            cluster.nodes[other].name
        );
    })
    .await
}

/// Reads a raw HTTP response to its end, or what arrives within `wait`.
async fn read_all(stream: &mut tokio::net::TcpStream, wait: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The SSE events in a raw chunked HTTP/1.1 response (chunk-size lines
/// dropped: they never look like `field:value` lines).
fn raw_events(response: &str) -> Vec<Sse> {
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let mut text: String = body
        .split("\r\n")
        .filter(|line| !line.chars().all(|c| c.is_ascii_hexdigit()) || line.is_empty())
        .collect::<Vec<_>>()
        .join("");
    parse_sse(&mut text)
}

#[tokio::test]
async fn slow_watcher_is_dropped_while_writes_and_others_go_on() {
    bounded(TEST_TIMEOUT, async {
        let cluster = Cluster::start(1, &[]).await;
        let node = &cluster.nodes[0];
        let client = follow_client(Duration::from_secs(5));
        let start = put(&client, node, "start", "x").await;

        // The slow watcher: asks, then reads nothing (small receive buffer,
        // so the server's queue for it fills sooner).
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut slow = socket
            .connect(format!("127.0.0.1:{}", node.http_port).parse().unwrap())
            .await
            .unwrap();
        let request = format!(
            "GET /v1/watch?start_revision={start} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        );
        slow.write_all(request.as_bytes()).await.unwrap();

        // The fast watcher reads everything, all the time.
        let mut fast = Watch::open(node, &format!("start_revision={start}"), None).await;
        let fast_seen = Arc::new(Mutex::new(Vec::new()));
        let fast_task = {
            let fast_seen = fast_seen.clone();
            tokio::spawn(async move {
                while let Some(event) = fast.next().await {
                    let done = event.data["key"] == "end";
                    fast_seen.lock().unwrap().push(event);
                    if done {
                        break;
                    }
                }
            })
        };

        // Writes of 16 KiB values until the server drops the slow watcher.
        let value = "x".repeat(16 * 1024);
        let mut acked = vec![start];
        let mut latencies = Vec::new();
        let began = Instant::now();
        let mut dropped_after = None;
        let log = node.log_path.clone();
        for round in 0..40 {
            for i in 0..50 {
                let t = Instant::now();
                acked.push(put(&client, node, &format!("big/{round}/{i}"), &value).await);
                latencies.push(t.elapsed());
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("dropping a watcher") {
                dropped_after = Some(acked.len());
                break;
            }
        }
        let dropped_after = dropped_after.expect("the slow watcher was never dropped");
        // Writes go on after the drop.
        for i in 0..20 {
            acked.push(put(&client, node, &format!("after/{i}"), "v").await);
        }
        acked.push(put(&client, node, "end", "v").await);
        let elapsed = began.elapsed();
        latencies.sort();
        eprintln!(
            "{} writes in {elapsed:?}; slow watcher dropped after {dropped_after}; write latency p50 {:?} max {:?}",
            acked.len(),
            latencies[latencies.len() / 2],
            latencies.last().unwrap()
        );
        tokio::time::timeout(EVENT_WAIT, fast_task)
            .await
            .expect("the fast watcher received everything")
            .unwrap();
        let fast_revs = revisions(&fast_seen.lock().unwrap());
        assert_eq!(fast_revs, acked, "the fast watcher saw every write, in order");

        // The slow watcher now reads: contiguous events, an error event,
        // then the end of the stream.
        let response = read_all(&mut slow, EVENT_WAIT).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{}", &response[..100.min(response.len())]);
        let events = raw_events(&response);
        let (last, got) = events.split_last().expect("the slow watcher got events");
        assert_eq!(last.event, "error", "the stream ends with an error event");
        assert_eq!(last.data["error"]["code"], "WatcherTooSlow");
        assert!(last.id.is_none());
        let revs = revisions(got);
        assert!(!revs.is_empty());
        assert_eq!(revs, acked[..revs.len()], "what it got is a gap-free prefix");
        assert!(revs.len() < acked.len());
        // And it can resume where it stopped.
        let mut w = Watch::open(node, "", revs.last().copied()).await;
        let mut rest = Vec::new();
        w.until(*acked.last().unwrap(), &mut rest).await;
        assert_eq!(revisions(&rest), acked[revs.len()..]);
    })
    .await
}
