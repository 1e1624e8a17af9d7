//! Robustness: real clusters under a nemesis, a concurrent workload, and a
//! linearizability check of everything the clients saw.
//!
//! Every Raft and peer gRPC connection between nodes goes through a
//! [`FaultNet`] proxy (the nodes learn the proxy addresses from the test-only
//! `CETE_TEST_DIAL_MAP`, see server/src/faults.rs). Client HTTP goes straight
//! to the nodes. A run:
//!
//! 1. starts 3 or 5 nodes with frequent snapshots;
//! 2. runs several sequential clients doing linearizable and stale gets,
//!    puts of unique values, deletes and compare-and-sets on a few keys, with
//!    short timeouts, recording invoke and completion times and outcomes;
//! 3. meanwhile injects faults: SIGKILL + restart, SIGSTOP/SIGCONT, leader
//!    isolation, symmetric and one-way partitions, link delays, connection
//!    cuts, remove + re-add of a member, and a follower cut off until the log
//!    is compacted past it (it must install a snapshot);
//! 4. heals, checks every node converges within 30 s to one leader and the
//!    same applied index and data, and checks each key's history (plus the
//!    final data as a last read) for linearizability, and stale reads apart;
//! 5. proves its faults happened (leader changes, a snapshot install, bytes
//!    dropped) and that no node panicked or died on its own.
//!
//! A failing run writes history.jsonl, report.txt and the node logs into a
//! folder and panics with its path. `CETE_SOAK=1` runs many more, longer
//! seeds; `CETE_ROBUST_SEEDS=7,9` replays chosen seeds.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::faultproxy::{FaultNet, Mode};
use crate::harness::{bounded, Cluster, NodeProc};
use crate::linearizability::{check, check_stale_reads, Call, Operation, Ret, Verdict};

/// A client gives up on a request after this long: the outcome is unknown.
const OP_TIMEOUT: Duration = Duration::from_millis(2000);
/// Every node must agree after healing within this long.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// The checker's budget per key; running out fails the run.
const CHECK_BUDGET: Duration = Duration::from_secs(60);
/// Small, so that the log is compacted often and snapshots get installed.
const SNAPSHOT_THRESHOLD: u64 = 64;

/// The kinds of fault the nemesis injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    KillLeader,
    KillFollower,
    PauseLeader,
    PauseFollower,
    IsolateLeader,
    Partition,
    OneWay,
    Delays,
    Cut,
    Membership,
    SnapshotInstall,
}

const ALL_FAULTS: &[Fault] = &[
    Fault::KillLeader,
    Fault::KillFollower,
    Fault::PauseLeader,
    Fault::PauseFollower,
    Fault::IsolateLeader,
    Fault::Partition,
    Fault::OneWay,
    Fault::Delays,
    Fault::Cut,
    Fault::Membership,
];

/// What one run does.
#[derive(Debug, Clone)]
struct RunSpec {
    name: String,
    nodes: usize,
    seed: u64,
    duration: Duration,
    clients: usize,
    keys: usize,
    faults: Vec<Fault>,
    /// `CETE_TEST_UNSAFE` for every node (a deliberately broken build).
    unsafe_setting: Option<&'static str>,
}

/// One operation as the client saw it.
#[derive(Debug, Clone)]
struct Record {
    client: usize,
    key: usize,
    node: usize,
    stale: bool,
    call: Call,
    /// `Some` for a definite outcome; `None` unknown.
    ret: Option<Ret>,
    /// A definite failure: the request cannot have taken effect.
    failed: bool,
    invoke: u64,
    complete: u64,
    detail: String,
}

impl Record {
    fn json(&self, id: usize) -> Value {
        let (op, value, expect) = match self.call {
            Call::Read if self.stale => ("stale_get", None, None),
            Call::Read => ("get", None, None),
            Call::Write(v) => ("put", Some(v), None),
            Call::Delete => ("delete", None, None),
            Call::Cas { expect, new } => ("cas", Some(new), Some(expect)),
        };
        let outcome = if self.failed {
            "failed"
        } else if self.ret.is_some() {
            "ok"
        } else {
            "unknown"
        };
        let result = match self.ret {
            Some(Ret::Value(v)) => json!({"value": v}),
            Some(Ret::Deleted(existed)) => json!({"existed": existed}),
            Some(Ret::Swapped(applied)) => json!({"applied": applied}),
            Some(Ret::Written) => json!({}),
            None => Value::Null,
        };
        json!({
            "id": id, "client": self.client, "key": format!("k{}", self.key),
            "node": self.node + 1, "op": op, "value": value, "expect": expect,
            "outcome": outcome, "result": result, "invoke_us": self.invoke,
            "complete_us": self.complete, "detail": self.detail,
        })
    }
}

/// The shared history and clock.
struct History {
    start: Instant,
    records: Mutex<Vec<Record>>,
}

impl History {
    fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

/// One fault as it happened.
#[derive(Debug, Clone)]
struct FaultEvent {
    fault: Fault,
    at: f64,
    detail: String,
}

/// A cluster whose node-to-node links go through the fault proxies.
struct Sim {
    cluster: Cluster,
    net: FaultNet,
    env: Vec<Vec<(String, String)>>,
    /// Nodes the nemesis killed or is restarting on purpose.
    expected_down: BTreeSet<usize>,
    kills: u64,
    pauses: u64,
}

impl Sim {
    async fn start(spec: &RunSpec) -> Sim {
        let root = tempfile::Builder::new()
            .prefix("cete-robust-")
            .tempdir()
            .expect("tempdir");
        let threshold = SNAPSHOT_THRESHOLD.to_string();
        let args = ["--snapshot-threshold", &threshold, "--log-level", "info"];
        let mut nodes = Vec::new();
        for i in 0..spec.nodes {
            let peer = (i > 0).then(|| nodes.first().map(NodeProc::grpc_addr).unwrap());
            nodes.push(NodeProc::new(
                &format!("node{}", i + 1),
                root.path(),
                peer,
                &args,
            ));
        }
        let mut net = FaultNet::new();
        let node_ports: Vec<u16> = nodes
            .iter()
            .flat_map(|n| [n.raft_port, n.grpc_port, n.http_port])
            .collect();
        let mut env = Vec::new();
        for i in 0..spec.nodes {
            let mut map = Vec::new();
            for (j, peer) in nodes.iter().enumerate().filter(|(j, _)| *j != i) {
                for port in [peer.raft_port, peer.grpc_port] {
                    let real: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
                    let proxy = net
                        .add_link(i, j, real, &node_ports)
                        .await
                        .expect("proxy listener");
                    map.push(format!("{real}={proxy}"));
                }
            }
            let mut vars = vec![("CETE_TEST_DIAL_MAP".to_string(), map.join(","))];
            if let Some(setting) = spec.unsafe_setting {
                vars.push(("CETE_TEST_UNSAFE".to_string(), setting.to_string()));
            }
            env.push(vars);
        }
        let mut sim = Sim {
            cluster: Cluster {
                root,
                nodes: Vec::new(),
            },
            net,
            env,
            expected_down: BTreeSet::new(),
            kills: 0,
            pauses: 0,
        };
        for (i, node) in nodes.into_iter().enumerate() {
            sim.cluster.nodes.push(node);
            sim.start_node(i);
            if i == 0 {
                sim.cluster.nodes[0]
                    .wait_ready(Duration::from_secs(30))
                    .await;
            } else {
                sim.cluster
                    .wait_members(i + 1, Duration::from_secs(60))
                    .await;
            }
        }
        sim
    }

    fn start_node(&mut self, i: usize) {
        let env: Vec<(&str, &str)> = self.env[i]
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.cluster.nodes[i].start_with(&env, &[]);
        self.expected_down.remove(&i);
    }

    fn n(&self) -> usize {
        self.cluster.nodes.len()
    }

    fn http_ports(&self) -> Vec<u16> {
        self.cluster.nodes.iter().map(|n| n.http_port).collect()
    }
}

fn http_client(timeout: Duration, redirects: usize) -> reqwest::Client {
    crate::harness::http()
        .redirect(reqwest::redirect::Policy::limited(redirects))
        .timeout(timeout)
        .pool_max_idle_per_host(0)
        .build()
        .expect("reqwest client")
}

async fn node_json(client: &reqwest::Client, port: u16) -> Option<Value> {
    let url = format!("http://127.0.0.1:{port}/v1/node");
    let body: Value = client.get(url).send().await.ok()?.json().await.ok()?;
    body.get("node").cloned()
}

/// The node that claims leadership with the highest term, among those that answer.
async fn find_leader(sim: &mut Sim) -> Option<usize> {
    let client = http_client(Duration::from_millis(800), 0);
    let mut best: Option<(u64, usize)> = None;
    for i in 0..sim.n() {
        if !sim.cluster.nodes[i].is_running() || sim.cluster.nodes[i].is_paused() {
            continue;
        }
        let Some(node) = node_json(&client, sim.cluster.nodes[i].http_port).await else {
            continue;
        };
        if node["state"] == "Leader" {
            let term = node["term"].as_u64().unwrap_or(0);
            if best.is_none_or(|(t, _)| term > t) {
                best = Some((term, i));
            }
        }
    }
    best.map(|(_, i)| i)
}

/// Waits (bounded) for a leader; `None` if there is none in time.
async fn wait_leader(sim: &mut Sim, timeout: Duration) -> Option<usize> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(leader) = find_leader(sim).await {
            return Some(leader);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------- workload

/// Per-client knowledge for compare-and-set: the revision that goes with a value.
type Known = BTreeMap<usize, (u64, u64)>;

/// Runs one sequential client until `stop`.
async fn client_loop(
    id: usize,
    seed: u64,
    ports: Arc<Vec<u16>>,
    keys: usize,
    history: Arc<History>,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1000).wrapping_add(id as u64));
    let http = http_client(OP_TIMEOUT, 3);
    let mut known = Known::new();
    let mut seq = 0u64;
    while !*stop.borrow() {
        let key = rng.random_range(0..keys);
        let node = rng.random_range(0..ports.len());
        seq += 1;
        let value = (id as u64 + 1) * 1_000_000 + seq;
        let roll = rng.random_range(0..100);
        let call = match roll {
            0..30 => Call::Read,
            30..45 => Call::Read, // stale, below
            45..75 => Call::Write(value),
            75..85 => Call::Delete,
            _ => match known.get(&key) {
                Some(&(_, expect)) => Call::Cas { expect, new: value },
                None => Call::Write(value),
            },
        };
        let stale = (30..45).contains(&roll);
        let invoke = history.now();
        let (ret, failed, detail) = request(&http, ports[node], key, call, stale, &mut known).await;
        let complete = history.now();
        history.records.lock().unwrap().push(Record {
            client: id,
            key,
            node,
            stale,
            call,
            ret,
            failed,
            invoke,
            complete,
            detail,
        });
        // A little think time keeps the debug build's CPU use sane.
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(rng.random_range(0..20))) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Sends one operation and maps the response to (definite result, failed, detail).
/// Only answers that prove what happened are definite; timeouts, lost
/// connections and 5xx are unknown. A refused connection is a definite
/// failure (the request never reached a node that could apply it; a 307
/// from a follower does not apply anything either).
async fn request(
    http: &reqwest::Client,
    port: u16,
    key: usize,
    call: Call,
    stale: bool,
    known: &mut Known,
) -> (Option<Ret>, bool, String) {
    let url = format!("http://127.0.0.1:{port}/v1/data/k{key}");
    let builder = match call {
        Call::Read => {
            let consistency = if stale { "stale" } else { "linearizable" };
            http.get(format!("{url}?consistency={consistency}"))
        }
        Call::Write(v) => http.put(&url).body(v.to_string()),
        Call::Delete => http.delete(&url),
        Call::Cas { new, .. } => {
            let rev = known[&key].0;
            http.put(&url)
                .header("if-match", format!("\"{rev}\""))
                .body(new.to_string())
        }
    };
    let resp = match builder.send().await {
        Ok(resp) => resp,
        Err(e) if e.is_connect() => return (None, true, format!("connect: {e}")),
        Err(e) => return (None, false, format!("unknown: {e}")),
    };
    let status = resp.status().as_u16();
    let revision = resp
        .headers()
        .get("x-cete-revision")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Ok(body) = resp.text().await else {
        return (None, false, format!("{status}, body lost"));
    };
    let code = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|b| b["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_default();
    let detail = format!("{status} {code}");
    let body_rev = || {
        serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|b| b["revision"].as_u64())
    };
    match (call, status) {
        (Call::Read, 200) => match body.parse::<u64>() {
            Ok(v) => {
                if let Some(rev) = revision {
                    known.insert(key, (rev, v));
                }
                (Some(Ret::Value(Some(v))), false, detail)
            }
            Err(_) => (None, false, format!("{detail}: unexpected body {body:?}")),
        },
        (Call::Read, 404) if code == "KeyNotFound" => {
            known.remove(&key);
            (Some(Ret::Value(None)), false, detail)
        }
        (Call::Write(v), 200 | 201) => {
            if let Some(rev) = body_rev() {
                known.insert(key, (rev, v));
            }
            (Some(Ret::Written), false, detail)
        }
        (Call::Delete, 200) => {
            known.remove(&key);
            (Some(Ret::Deleted(true)), false, detail)
        }
        (Call::Delete, 404) if code == "KeyNotFound" => {
            known.remove(&key);
            (Some(Ret::Deleted(false)), false, detail)
        }
        (Call::Cas { new, .. }, 200) => {
            if let Some(rev) = body_rev() {
                known.insert(key, (rev, new));
            }
            (Some(Ret::Swapped(true)), false, detail)
        }
        (Call::Cas { .. }, 412) => {
            known.remove(&key);
            (Some(Ret::Swapped(false)), false, detail)
        }
        // Not proposed: the node knew no leader, or the entry was truncated
        // as conflicting (never committed). A definite failure for a write.
        (Call::Write(_) | Call::Delete | Call::Cas { .. }, 503) if code == "NoLeader" => {
            (None, true, detail)
        }
        // 400s other than the above would be a workload bug: say so loudly.
        (_, 400..=499) if status != 404 => (None, false, format!("UNEXPECTED {detail}: {body}")),
        _ => (None, false, detail),
    }
}

/// Polls every node's view of leader and term, to prove leader changes happened.
async fn monitor_leaders(
    ports: Arc<Vec<u16>>,
    seen: Arc<Mutex<BTreeSet<(u64, String)>>>,
    mut stop: watch::Receiver<bool>,
) {
    let client = http_client(Duration::from_millis(500), 0);
    while !*stop.borrow() {
        for port in ports.iter() {
            if let Some(node) = node_json(&client, *port).await {
                if node["state"] == "Leader" {
                    let term = node["term"].as_u64().unwrap_or(0);
                    let name = node["id"].as_str().unwrap_or_default().to_string();
                    seen.lock().unwrap().insert((term, name));
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.changed() => {}
        }
    }
}

// ----------------------------------------------------------------- nemesis

fn count_in_log(node: &NodeProc, needle: &str) -> usize {
    std::fs::read_to_string(&node.log_path)
        .map(|t| t.matches(needle).count())
        .unwrap_or(0)
}

async fn hold(rng: &mut StdRng, min_ms: u64, max_ms: u64) {
    tokio::time::sleep(Duration::from_millis(rng.random_range(min_ms..=max_ms))).await;
}

/// Injects one fault and heals it. Returns a description, or an error when a
/// fault that must be proven (a snapshot install) could not be.
async fn inject(sim: &mut Sim, fault: Fault, rng: &mut StdRng) -> Result<String, String> {
    let n = sim.n();
    let leader = wait_leader(sim, Duration::from_secs(10)).await;
    let follower = |rng: &mut StdRng| {
        let others: Vec<usize> = (0..n).filter(|i| Some(*i) != leader).collect();
        *others.choose(rng).unwrap()
    };
    match fault {
        Fault::KillLeader | Fault::KillFollower => {
            let target = match (fault, leader) {
                (Fault::KillLeader, Some(l)) => l,
                _ => follower(rng),
            };
            sim.expected_down.insert(target);
            sim.cluster.nodes[target].kill9();
            sim.kills += 1;
            hold(rng, 500, 2500).await;
            sim.start_node(target);
            Ok(format!("SIGKILL node{} and restart", target + 1))
        }
        Fault::PauseLeader | Fault::PauseFollower => {
            let target = match (fault, leader) {
                (Fault::PauseLeader, Some(l)) => l,
                _ => follower(rng),
            };
            sim.cluster.nodes[target].pause();
            sim.pauses += 1;
            hold(rng, 1000, 3000).await;
            sim.cluster.nodes[target].resume();
            Ok(format!("SIGSTOP/SIGCONT node{}", target + 1))
        }
        Fault::IsolateLeader => {
            let l = leader.unwrap_or_else(|| follower(rng));
            let rest: Vec<usize> = (0..n).filter(|i| *i != l).collect();
            sim.net.partition(&[l], &rest);
            hold(rng, 2000, 4000).await;
            sim.net.heal();
            Ok(format!("isolate leader node{}", l + 1))
        }
        Fault::Partition => {
            let mut all: Vec<usize> = (0..n).collect();
            all.shuffle(rng);
            let minority = rng.random_range(1..=(n - 1) / 2);
            let (a, b) = all.split_at(minority);
            sim.net.partition(a, b);
            hold(rng, 1500, 4000).await;
            sim.net.heal();
            Ok(format!("partition {} | {}", names(a), names(b)))
        }
        Fault::OneWay => {
            let src = rng.random_range(0..n);
            for dst in (0..n).filter(|d| *d != src) {
                sim.net.set(src, dst, Mode::Drop);
            }
            hold(rng, 1500, 4000).await;
            sim.net.heal();
            Ok(format!("one-way: nothing from node{} arrives", src + 1))
        }
        Fault::Delays => {
            let mut links = Vec::new();
            for a in 0..n {
                for b in (0..n).filter(|b| *b != a) {
                    if rng.random_bool(0.5) {
                        let d = Duration::from_millis(rng.random_range(10..250));
                        sim.net.set(a, b, Mode::Delay(d));
                        links.push(format!("{}->{} {}ms", a + 1, b + 1, d.as_millis()));
                    }
                }
            }
            hold(rng, 2000, 4000).await;
            sim.net.heal();
            Ok(format!("delays {}", links.join(", ")))
        }
        Fault::Cut => {
            for _ in 0..3 {
                for a in 0..n {
                    for b in a + 1..n {
                        sim.net.cut(a, b);
                    }
                }
                hold(rng, 200, 600).await;
            }
            Ok("cut every connection, three times".into())
        }
        Fault::Membership => membership_change(sim, leader, rng).await,
        Fault::SnapshotInstall => snapshot_install(sim, leader, rng).await,
    }
}

fn names(nodes: &[usize]) -> String {
    nodes
        .iter()
        .map(|i| format!("node{}", i + 1))
        .collect::<Vec<_>>()
        .join(",")
}

/// Removes a follower through the leader, wipes it, and adds it back.
async fn membership_change(
    sim: &mut Sim,
    leader: Option<usize>,
    rng: &mut StdRng,
) -> Result<String, String> {
    let Some(l) = leader else {
        return Ok("membership change skipped: no leader".into());
    };
    let others: Vec<usize> = (0..sim.n()).filter(|i| *i != l).collect();
    let target = *others.choose(rng).unwrap();
    let name = sim.cluster.nodes[target].name.clone();
    let client = http_client(Duration::from_secs(20), 3);
    let url = sim.cluster.nodes[l].url(&format!("/v1/cluster/{name}"));
    let resp = client.delete(url).send().await;
    let status = resp.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
    if status != 200 {
        // Refused (e.g. the leader sees too few live voters): no harm done.
        let text = match resp {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => e.to_string(),
        };
        return Ok(format!(
            "membership change: remove {name} refused ({status} {text})"
        ));
    }
    // The removed node stops taking part; take it down and wipe it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let probe = http_client(Duration::from_millis(500), 0);
    while Instant::now() < deadline {
        let port = sim.cluster.nodes[target].http_port;
        if node_json(&probe, port)
            .await
            .is_some_and(|n| n["state"] == "Removed")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sim.expected_down.insert(target);
    sim.cluster.nodes[target].kill9();
    let dir = sim.cluster.nodes[target].dir.clone();
    let _ = std::fs::remove_dir_all(&dir);
    hold(rng, 200, 1000).await;
    sim.cluster.nodes[target].peer_grpc = Some(sim.cluster.nodes[l].grpc_addr());
    sim.start_node(target);
    let n = sim.n();
    wait_members_quietly(sim, n, Duration::from_secs(60))
        .await
        .map_err(|e| format!("membership change: {name} did not rejoin: {e}"))?;
    Ok(format!("membership change: removed and re-added {name}"))
}

/// Like `Cluster::wait_members`, but an error instead of a panic.
async fn wait_members_quietly(sim: &Sim, n: usize, timeout: Duration) -> Result<(), String> {
    let client = http_client(Duration::from_secs(1), 0);
    let deadline = Instant::now() + timeout;
    loop {
        let mut ok = true;
        for node in &sim.cluster.nodes {
            let body: Option<Value> = async {
                client
                    .get(node.url("/v1/cluster"))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()
            }
            .await;
            let voters = body
                .as_ref()
                .and_then(|b| b["cluster"]["nodes"].as_object().cloned())
                .map(|m| m.values().filter(|v| v["voter"] == true).count());
            let state = node_json(&client, node.http_port)
                .await
                .map(|v| v["state"].clone());
            let serving = state
                .as_ref()
                .is_some_and(|s| s == "Leader" || s == "Follower");
            ok &= voters == Some(n) && serving;
        }
        if ok {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "not every node lists {n} voters and serves as leader or follower after {timeout:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Cuts a follower off until the others have compacted their logs well past
/// it, then heals: it can only catch up by installing a snapshot. The
/// install must show in its log, or the run fails.
async fn snapshot_install(
    sim: &mut Sim,
    leader: Option<usize>,
    rng: &mut StdRng,
) -> Result<String, String> {
    let n = sim.n();
    let Some(l) = leader else {
        return Err("snapshot install: no leader to start from".into());
    };
    let others: Vec<usize> = (0..n).filter(|i| *i != l).collect();
    let target = *others.choose(rng).unwrap();
    let rest: Vec<usize> = (0..n).filter(|i| *i != target).collect();
    let installs_before = count_in_log(&sim.cluster.nodes[target], "installed snapshot");
    let client = http_client(Duration::from_secs(2), 0);
    let applied = |v: &Value| v["last_applied"].as_u64().unwrap_or(0);
    let start = node_json(&client, sim.cluster.nodes[target].http_port)
        .await
        .map_or(0, |v| applied(&v));
    sim.net.partition(&[target], &rest);
    // Let the workload move the log far enough, then compact everywhere else.
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut reached = 0;
    while Instant::now() < deadline {
        reached = 0;
        for i in &rest {
            if let Some(v) = node_json(&client, sim.cluster.nodes[*i].http_port).await {
                reached = reached.max(applied(&v));
            }
        }
        if reached >= start + 4 * SNAPSHOT_THRESHOLD {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in &rest {
        let url = sim.cluster.nodes[*i].url("/v1/snapshot");
        let _ = http_client(Duration::from_secs(20), 0)
            .post(url)
            .send()
            .await;
    }
    sim.net.heal();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if count_in_log(&sim.cluster.nodes[target], "installed snapshot") > installs_before {
            return Ok(format!(
                "snapshot install: node{} cut off from applied {start} until {reached}, then installed a snapshot",
                target + 1
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "snapshot install: node{} was cut off from applied {start} until {reached} but never logged \"installed snapshot\"",
        target + 1
    ))
}

// --------------------------------------------------------------- the check

/// Everything a run measured.
#[derive(Debug, Default)]
struct Outcome {
    ops: usize,
    ops_checked: usize,
    unknown: usize,
    faults: usize,
    leader_terms: usize,
    check_time: Duration,
    problems: Vec<String>,
    report: String,
}

/// Heals every fault and waits until all nodes agree on leader, applied
/// index and data. Returns each key's final value.
async fn converge(sim: &mut Sim, keys: usize) -> Result<Vec<Option<u64>>, String> {
    sim.net.heal();
    for i in 0..sim.n() {
        if sim.cluster.nodes[i].is_paused() {
            sim.cluster.nodes[i].resume();
        }
        if !sim.cluster.nodes[i].is_running() && sim.expected_down.contains(&i) {
            sim.start_node(i);
        }
    }
    let client = http_client(Duration::from_secs(2), 0);
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    let mut last;
    loop {
        match agreement(sim, &client, keys).await {
            Ok(values) => return Ok(values),
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the nodes did not converge within {CONVERGE_TIMEOUT:?}: {last}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn agreement(
    sim: &Sim,
    client: &reqwest::Client,
    keys: usize,
) -> Result<Vec<Option<u64>>, String> {
    let mut views = Vec::new();
    for node in &sim.cluster.nodes {
        let v = node_json(client, node.http_port)
            .await
            .ok_or_else(|| format!("{} does not answer /v1/node", node.name))?;
        views.push((
            v["leader"].as_str().unwrap_or_default().to_string(),
            v["last_applied"].as_u64().unwrap_or(0),
            v["state"].as_str().unwrap_or_default().to_string(),
        ));
    }
    let leaders = views.iter().filter(|v| v.2 == "Leader").count();
    let first = &views[0];
    if leaders != 1 || first.0.is_empty() || views.iter().any(|v| v.0 != first.0 || v.1 != first.1)
    {
        return Err(format!("views (leader, applied, state) differ: {views:?}"));
    }
    let mut finals = Vec::new();
    for key in 0..keys {
        let mut seen = Vec::new();
        for node in &sim.cluster.nodes {
            let url = node.url(&format!("/v1/data/k{key}?consistency=stale"));
            let resp = client.get(url).send().await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let rev = resp
                .headers()
                .get("x-cete-revision")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = resp.text().await.map_err(|e| e.to_string())?;
            seen.push(match status {
                200 => Some((body.parse::<u64>().map_err(|e| e.to_string())?, rev)),
                404 => None,
                other => return Err(format!("{}: k{key} answered {other}", node.name)),
            });
        }
        if seen.windows(2).any(|w| w[0] != w[1]) {
            return Err(format!("k{key} differs between nodes: {seen:?}"));
        }
        finals.push(seen[0].as_ref().map(|(v, _)| *v));
    }
    let mut lists = Vec::new();
    for node in &sim.cluster.nodes {
        let url = node.url("/v1/data?consistency=stale&limit=1000");
        let body: Value = client
            .get(url)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        lists.push(body["keys"].clone());
    }
    if lists.windows(2).any(|w| w[0] != w[1]) {
        return Err(format!("key listings differ between nodes: {lists:?}"));
    }
    Ok(finals)
}

/// Checks the history, each key apart, with the converged data as a last read.
fn check_history(
    records: &[Record],
    keys: usize,
    finals: Option<&[Option<u64>]>,
    end: u64,
    out: &mut Outcome,
) {
    let started = Instant::now();
    for key in 0..keys {
        let mut ops = Vec::new();
        let mut writes = Vec::new();
        let mut stale = Vec::new();
        for (id, r) in records.iter().enumerate().filter(|(_, r)| r.key == key) {
            let op = Operation {
                id,
                client: r.client,
                call: r.call,
                ret: r.ret,
                invoke: r.invoke,
                complete: r.complete,
            };
            if r.call != Call::Read && !r.failed {
                writes.push(op.clone());
            }
            match (r.stale, r.call, r.ret, r.failed) {
                (true, _, Some(Ret::Value(v)), _) => stale.push((op, v)),
                (true, ..) => {}
                // A read without an answer, or a definitely failed request, says nothing.
                (_, Call::Read, None, _) | (_, _, _, true) => {}
                _ => ops.push(op),
            }
        }
        if let Some(finals) = finals {
            ops.push(Operation {
                id: records.len() + key,
                client: usize::MAX,
                call: Call::Read,
                ret: Some(Ret::Value(finals[key])),
                invoke: end,
                complete: end,
            });
        }
        out.ops_checked += ops.len() + stale.len();
        match check(&ops, CHECK_BUDGET) {
            Verdict::Linearizable => {
                let _ = writeln!(
                    out.report,
                    "k{key}: linearizable ({} operations)",
                    ops.len()
                );
            }
            Verdict::NotLinearizable(why) => {
                out.problems.push(format!("k{key} is not linearizable"));
                let _ = writeln!(out.report, "k{key}: NOT LINEARIZABLE\n{why}");
            }
            Verdict::Timeout => {
                out.problems.push(format!(
                    "k{key}: the checker ran out of its {CHECK_BUDGET:?} budget"
                ));
            }
        }
        for problem in check_stale_reads(&writes, &stale) {
            out.problems.push(format!("k{key}: {problem}"));
        }
    }
    out.check_time += started.elapsed();
}

/// Scans node logs for panics.
fn panics(sim: &Sim) -> Vec<String> {
    let mut found = Vec::new();
    for node in &sim.cluster.nodes {
        for path in [node.log_path.clone(), node.stderr_path()] {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("panicked at")) {
                found.push(format!("{}: {line}", node.name));
            }
        }
    }
    found
}

/// Where failing runs leave their evidence.
fn failure_dir(name: &str) -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    base.join("cete-robust").join(format!("{name}-{stamp}"))
}

fn save_evidence(
    spec: &RunSpec,
    sim: &Sim,
    records: &[Record],
    faults: &[FaultEvent],
    out: &Outcome,
) -> PathBuf {
    let dir = failure_dir(&spec.name);
    std::fs::create_dir_all(&dir).expect("create the failure folder");
    let mut lines = String::new();
    for (id, r) in records.iter().enumerate() {
        lines.push_str(&r.json(id).to_string());
        lines.push('\n');
    }
    std::fs::write(dir.join("history.jsonl"), lines).expect("write history");
    std::fs::write(
        dir.join("report.txt"),
        render_report(spec, sim, faults, out),
    )
    .expect("write report");
    for node in &sim.cluster.nodes {
        for path in [node.log_path.clone(), node.stderr_path()] {
            if let Some(name) = path.file_name() {
                let _ = std::fs::copy(&path, dir.join(name));
            }
        }
    }
    dir
}

fn render_report(spec: &RunSpec, sim: &Sim, faults: &[FaultEvent], out: &Outcome) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "run {} ({} nodes, seed {}, {:?}, {} clients, {} keys, unsafe {:?})",
        spec.name,
        spec.nodes,
        spec.seed,
        spec.duration,
        spec.clients,
        spec.keys,
        spec.unsafe_setting
    );
    let _ = writeln!(
        text,
        "operations {} (unknown {}), checked {}, faults {}, leader terms seen {}, kills {}, pauses {}, checker {:?}",
        out.ops,
        out.unknown,
        out.ops_checked,
        out.faults,
        out.leader_terms,
        sim.kills,
        sim.pauses,
        out.check_time
    );
    let _ = writeln!(text, "{}", sim.net.summary());
    let _ = writeln!(text, "\nproblems:");
    for p in &out.problems {
        let _ = writeln!(text, "  - {p}");
    }
    let _ = writeln!(text, "\nfaults (seconds since start):");
    for f in faults {
        let _ = writeln!(text, "  {:7.2} {:?}: {}", f.at, f.fault, f.detail);
    }
    let _ = writeln!(text, "\nper key:\n{}", out.report);
    text
}

/// Runs one seed. `Ok` with the figures, or `Err` with the evidence folder and
/// the problems.
async fn run(spec: RunSpec) -> Result<Outcome, (PathBuf, Outcome)> {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut sim = Sim::start(&spec).await;
    let ports = Arc::new(sim.http_ports());
    let history = Arc::new(History {
        start: Instant::now(),
        records: Mutex::new(Vec::new()),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let terms = Arc::new(Mutex::new(BTreeSet::new()));
    let monitor = tokio::spawn(monitor_leaders(
        ports.clone(),
        terms.clone(),
        stop_rx.clone(),
    ));
    let clients: Vec<_> = (0..spec.clients)
        .map(|id| {
            tokio::spawn(client_loop(
                id,
                spec.seed,
                ports.clone(),
                spec.keys,
                history.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();

    // The schedule: a leader-changing fault first, the snapshot install once,
    // then random faults from the spec until the time is up.
    let mut out = Outcome::default();
    let mut faults = Vec::new();
    let deadline = Instant::now() + spec.duration;
    let mut plan: Vec<Fault> = Vec::new();
    if spec.faults.contains(&Fault::IsolateLeader) {
        plan.push(Fault::IsolateLeader);
    }
    if spec.faults.contains(&Fault::SnapshotInstall) {
        plan.push(Fault::SnapshotInstall);
    }
    let random: Vec<Fault> = spec
        .faults
        .iter()
        .copied()
        .filter(|f| *f != Fault::SnapshotInstall)
        .collect();
    let mut planned = plan.into_iter();
    hold(&mut rng, 500, 1000).await;
    while Instant::now() < deadline {
        let fault = planned
            .next()
            .unwrap_or_else(|| *random.choose(&mut rng).unwrap());
        let at = history.start.elapsed().as_secs_f64();
        let result = inject(&mut sim, fault, &mut rng).await;
        out.faults += 1;
        let detail = match result {
            Ok(d) => d,
            Err(e) => {
                out.problems.push(e.clone());
                e
            }
        };
        eprintln!("[{}] {at:6.2}s {fault:?}: {detail}", spec.name);
        faults.push(FaultEvent { fault, at, detail });
        // Nodes that exit on their own are crashes.
        for i in 0..sim.n() {
            if !sim.expected_down.contains(&i) && !sim.cluster.nodes[i].is_running() {
                out.problems
                    .push(format!("node{} exited without the nemesis", i + 1));
                sim.expected_down.insert(i); // reported once; converge restarts it
            }
        }
        hold(&mut rng, 300, 1500).await;
    }

    let _ = stop_tx.send(true);
    for c in clients {
        let _ = c.await;
    }
    let _ = monitor.await;
    let records = history.records.lock().unwrap().clone();
    out.ops = records.len();
    out.unknown = records
        .iter()
        .filter(|r| r.ret.is_none() && !r.failed)
        .count();
    out.leader_terms = terms.lock().unwrap().len();

    let finals = match converge(&mut sim, spec.keys).await {
        Ok(f) => Some(f),
        Err(e) => {
            out.problems.push(e);
            None
        }
    };
    let end = history.now();
    check_history(&records, spec.keys, finals.as_deref(), end, &mut out);
    out.problems.extend(panics(&sim));
    if spec.faults.iter().any(|f| {
        matches!(
            f,
            Fault::IsolateLeader | Fault::KillLeader | Fault::PauseLeader
        )
    }) && out.leader_terms < 2
    {
        out.problems.push(format!(
            "no leader change was observed ({} leader terms seen): the faults did not bite",
            out.leader_terms
        ));
    }
    let drops = sim.net.stats().bytes_dropped.load(Ordering::Relaxed);
    if spec.faults.contains(&Fault::IsolateLeader) && drops == 0 {
        out.problems
            .push("the proxies dropped no bytes: partitions did not bite".into());
    }
    let unexpected: Vec<&Record> = records
        .iter()
        .filter(|r| r.detail.starts_with("UNEXPECTED"))
        .collect();
    if let Some(r) = unexpected.first() {
        out.problems.push(format!(
            "{} unexpected client errors, e.g. {}",
            unexpected.len(),
            r.detail
        ));
    }
    eprintln!(
        "[{}] {} ops ({} unknown), {} checked in {:?}, {} faults, {} leader terms, {}",
        spec.name,
        out.ops,
        out.unknown,
        out.ops_checked,
        out.check_time,
        out.faults,
        out.leader_terms,
        sim.net.summary()
    );
    if out.problems.is_empty() {
        Ok(out)
    } else {
        let dir = save_evidence(&spec, &sim, &records, &faults, &out);
        Err((dir, out))
    }
}

// ------------------------------------------------------------------- tests

/// Soak totals, reported once per test.
static TOTAL_OPS: AtomicU64 = AtomicU64::new(0);

fn soak() -> bool {
    std::env::var("CETE_SOAK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Seeds: `CETE_ROBUST_SEEDS` if set, else the defaults (more under soak).
fn seeds(default: &[u64], soak_count: u64) -> Vec<u64> {
    if let Ok(list) = std::env::var("CETE_ROBUST_SEEDS") {
        return list
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect();
    }
    if soak() {
        (1..=soak_count).map(|s| s * 7919).collect()
    } else {
        default.to_vec()
    }
}

async fn run_seeds(nodes: usize, default_seeds: &[u64], secs: u64, soak_secs: u64) {
    let duration = Duration::from_secs(if soak() { soak_secs } else { secs });
    let mut faults = ALL_FAULTS.to_vec();
    faults.push(Fault::SnapshotInstall);
    let mut failures = Vec::new();
    let (mut runs, mut ops, mut checked, mut injected) = (0, 0, 0, 0);
    let mut check_time = Duration::ZERO;
    for seed in seeds(default_seeds, 10) {
        let spec = RunSpec {
            name: format!("robust-{nodes}n-seed{seed}"),
            nodes,
            seed,
            duration,
            clients: nodes + 1,
            keys: 3,
            faults: faults.clone(),
            unsafe_setting: None,
        };
        runs += 1;
        match run(spec.clone()).await {
            Ok(out) => {
                ops += out.ops;
                checked += out.ops_checked;
                injected += out.faults;
                check_time += out.check_time;
            }
            Err((dir, out)) => {
                eprintln!(
                    "[{}] FAILED: {:?}\n  evidence (history, report, node logs): {}",
                    spec.name,
                    out.problems,
                    dir.display()
                );
                failures.push(format!("{}: {}", spec.name, dir.display()));
            }
        }
    }
    TOTAL_OPS.fetch_add(ops as u64, Ordering::Relaxed);
    eprintln!(
        "robustness {nodes} nodes: {runs} runs, {ops} operations, {checked} checked, {injected} faults, checker {check_time:?}"
    );
    assert!(
        failures.is_empty(),
        "robustness runs failed; evidence in:\n{}",
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn robustness_three_nodes() {
    let limit = if soak() { 3600 } else { 300 };
    bounded(Duration::from_secs(limit), run_seeds(3, &[1, 2], 30, 120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn robustness_five_nodes() {
    let limit = if soak() { 3600 } else { 300 };
    bounded(Duration::from_secs(limit), run_seeds(5, &[3], 35, 120)).await;
}

/// Runs a deliberately broken build (`CETE_TEST_UNSAFE=<setting>`) under
/// leader isolation and partitions until the checker rejects its history as
/// not linearizable; panics if no seed gets it caught.
async fn planted_bug_is_caught(setting: &'static str, seeds: [u64; 3]) {
    let mut attempts = Vec::new();
    for seed in seeds {
        let spec = RunSpec {
            name: format!("broken-{setting}-seed{seed}"),
            nodes: 3,
            seed,
            duration: Duration::from_secs(15),
            clients: 4,
            keys: 2,
            faults: vec![Fault::IsolateLeader, Fault::Partition],
            unsafe_setting: Some(setting),
        };
        match run(spec).await {
            Err((dir, out)) => {
                let caught = out.problems.iter().any(|p| p.contains("not linearizable"));
                if caught {
                    eprintln!(
                        "the broken build ({setting}) was caught ({:?}); evidence in {}",
                        out.problems,
                        dir.display()
                    );
                    let report =
                        std::fs::read_to_string(dir.join("report.txt")).unwrap_or_default();
                    assert!(report.contains("NOT LINEARIZABLE"), "{report}");
                    let at = report.find("NOT LINEARIZABLE").unwrap_or(0);
                    let excerpt: String =
                        report[at..].lines().take(20).collect::<Vec<_>>().join("\n");
                    eprintln!("report excerpt:\n{excerpt}");
                    let _ = std::fs::remove_dir_all(&dir);
                    return;
                }
                attempts.push(format!("seed {seed}: other problems {:?}", out.problems));
            }
            Ok(out) => attempts.push(format!(
                "seed {seed}: passed with {} ops checked",
                out.ops_checked
            )),
        }
    }
    panic!("{setting} was never caught: {attempts:#?}");
}

/// The suite must be able to fail: with linearizable reads served locally
/// (no read index), isolating nodes makes them answer stale data, and the
/// checker must reject the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn robustness_catches_local_reads() {
    bounded(
        Duration::from_secs(300),
        planted_bug_is_caught("local-reads", [11, 12, 13]),
    )
    .await;
}

/// A proposer that answers writes before they commit (`early-ack`): an
/// isolated leader acknowledges writes the rest of the cluster never sees,
/// and the checker must reject the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn robustness_catches_early_acks() {
    bounded(
        Duration::from_secs(300),
        planted_bug_is_caught("early-ack", [21, 22, 23]),
    )
    .await;
}

/// Regression (found by the membership nemesis): a node removed and added
/// back with an empty data directory catches up through a snapshot whose
/// membership predates its return. It used to take that for its removal and
/// stop; it must rejoin and serve.
#[tokio::test]
async fn rejoin_through_a_snapshot_after_removal() {
    bounded(Duration::from_secs(240), async {
        let mut cluster = Cluster::start(3, &["--snapshot-threshold", "20"]).await;
        let client = http_client(Duration::from_secs(20), 3);
        let leader = cluster.leader(Duration::from_secs(30)).await;
        let target = (leader + 1) % 3;
        let name = cluster.nodes[target].name.clone();
        let resp = client
            .delete(cluster.nodes[leader].url(&format!("/v1/cluster/{name}")))
            .send()
            .await
            .expect("DELETE member");
        assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
        cluster.nodes[target].kill9();
        // Enough writes that the log behind the re-add is compacted away.
        for i in 0..100 {
            let resp = client
                .put(cluster.nodes[leader].url(&format!("/v1/data/r{i}")))
                .body(format!("v{i}"))
                .send()
                .await
                .expect("PUT");
            assert!(resp.status().is_success(), "PUT r{i}: {}", resp.status());
        }
        std::fs::remove_dir_all(&cluster.nodes[target].dir).expect("wipe the removed node");
        cluster.nodes[target].peer_grpc = Some(cluster.nodes[leader].grpc_addr());
        // The log file outlives the data directory: its first life may have
        // logged its removal before the kill. Only this life counts.
        let log_before = std::fs::metadata(&cluster.nodes[target].log_path).map_or(0, |m| m.len());
        cluster.nodes[target].start();
        cluster.wait_members(3, Duration::from_secs(60)).await;
        let url = cluster.nodes[target].url("/v1/data/r99?consistency=stale");
        crate::harness::wait_until(
            Duration::from_secs(30),
            "the re-added node serves the data",
            || {
                let client = client.clone();
                let url = url.clone();
                async move {
                    let resp = client.get(&url).send().await.ok()?;
                    (resp.status() == 200).then_some(())
                }
            },
        )
        .await;
        let node = node_json(&client, cluster.nodes[target].http_port)
            .await
            .expect("/v1/node");
        assert_eq!(node["state"], "Follower", "{node}");
        let log = std::fs::read(&cluster.nodes[target].log_path).unwrap();
        let log = String::from_utf8_lossy(&log[log_before as usize..]);
        assert!(log.contains("installed snapshot"), "no snapshot install");
        assert!(!log.contains("was removed"), "the node stopped itself");
    })
    .await;
}
