//! Backup and restore: `GET /v1/snapshot`, `cete snapshot save`,
//! `cete-server --restore` and `cete snapshot restore`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{
    bounded, clean_env, cli_bin, run_cli, run_server_to_exit, wait_output, wait_until, Cluster,
    NodeProc,
};

/// One acknowledged write: key, value (`None` for a delete) and its revision.
type Op = (String, Option<String>, u64);

/// Writes (and now and then deletes) keys `k00..k24` one request at a time
/// until `stop`, recording every acknowledged operation.
async fn writer(
    base: String,
    stop: Arc<AtomicBool>,
    ops: Arc<Mutex<Vec<Op>>>,
    n: Arc<AtomicUsize>,
) {
    let client = Cluster::client();
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let key = format!("k{:02}", i % 25);
        let url = format!("{base}/v1/data/{key}");
        let (resp, value) = if i % 7 == 3 {
            (client.delete(&url).send().await, None)
        } else {
            let value = format!("v{i}");
            (
                client.put(&url).body(value.clone()).send().await,
                Some(value),
            )
        };
        let resp = resp.unwrap_or_else(|e| panic!("write {i} to {key}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        match status.as_u16() {
            200 | 201 => {
                let body: Value = serde_json::from_str(&text).expect("write answer is JSON");
                let revision = body["revision"].as_u64().expect("revision in write answer");
                ops.lock().unwrap().push((key, value, revision));
                n.fetch_add(1, Ordering::SeqCst);
            }
            404 if value.is_none() => {} // deleting an absent key changes nothing
            _ => panic!("write {i} to {key}: {status} {text}"),
        }
        i += 1;
    }
}

/// The last acknowledged value of each key among writes with revision <= `revision`.
fn state_at(ops: &[Op], revision: u64) -> BTreeMap<String, (String, u64)> {
    let mut sorted: Vec<&Op> = ops.iter().filter(|op| op.2 <= revision).collect();
    sorted.sort_by_key(|op| op.2);
    let mut state = BTreeMap::new();
    for (key, value, rev) in sorted {
        match value {
            Some(v) => {
                state.insert(key.clone(), (v.clone(), *rev));
            }
            None => {
                state.remove(key);
            }
        }
    }
    state
}

/// Every key on `node` with its value and revision (read with `consistency`).
async fn node_state(node: &NodeProc, consistency: &str) -> BTreeMap<String, (String, u64)> {
    let client = Cluster::client();
    let url = node.url(&format!("/v1/data?limit=1000&consistency={consistency}"));
    let resp = client.get(&url).send().await.expect("list");
    assert_eq!(resp.status(), 200, "list on {}", node.name);
    let body: Value = resp.json().await.expect("list JSON");
    assert_eq!(body["more"], false);
    let mut state = BTreeMap::new();
    for entry in body["keys"].as_array().expect("keys") {
        let key = entry["key"].as_str().expect("key").to_string();
        let revision = entry["revision"].as_u64().expect("revision");
        let url = node.url(&format!("/v1/data/{key}?consistency={consistency}"));
        let value = client
            .get(&url)
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("body");
        state.insert(key, (value, revision));
    }
    state
}

/// The only non-empty stderr line of a failed run.
fn one_error_line(out: &Output, what: &str) -> String {
    assert!(!out.status.success(), "{what} succeeded: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected one error line, got {stderr:?}"
    );
    lines[0].to_string()
}

fn is_empty_or_missing(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

fn save(node: &NodeProc, file: &Path) -> Value {
    let out = run_cli(node, &["snapshot", "save", file.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "cete snapshot save: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("save prints one JSON line")
}

/// A backup taken while a writer keeps writing holds exactly the writes up to
/// its revision; the restored node serves them, takes new writes with higher
/// revisions and a second node can join it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_write_load_restores_exactly_its_revision() {
    bounded(Duration::from_secs(240), async {
        let cluster = Cluster::start(1, &["--snapshot-threshold", "100"]).await;
        let root = cluster.root.path().to_path_buf();
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(writer(
            cluster.nodes[0].url(""),
            stop.clone(),
            ops.clone(),
            count.clone(),
        ));
        let at_least = |n: usize| {
            let count = count.clone();
            move || {
                let done = count.load(Ordering::SeqCst) >= n;
                async move { done.then_some(()) }
            }
        };
        wait_until(
            Duration::from_secs(60),
            "150 writes before the backup",
            at_least(150),
        )
        .await;

        let file = root.join("backup.snap");
        let node = cluster.nodes.first().unwrap();
        let (node_http, file2) = (node.http_port, file.clone());
        let saved = tokio::task::spawn_blocking(move || {
            let mut cmd = Command::new(cli_bin());
            cmd.args(["--address", &format!("http://127.0.0.1:{node_http}")])
                .args(["snapshot", "save", file2.to_str().unwrap()])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            clean_env(&mut cmd);
            wait_output(cmd.spawn().expect("spawn cete"), "cete snapshot save")
        })
        .await
        .unwrap();
        assert!(
            saved.status.success(),
            "save under load: {}",
            String::from_utf8_lossy(&saved.stderr)
        );
        let saved: Value = serde_json::from_slice(&saved.stdout).expect("save JSON");
        let revision = saved["revision"].as_u64().expect("revision");
        assert!(!file.with_extension("snap.part").exists());

        let after = count.load(Ordering::SeqCst) + 100;
        wait_until(
            Duration::from_secs(60),
            "100 writes after the backup",
            at_least(after),
        )
        .await;
        stop.store(true, Ordering::SeqCst);
        task.await.expect("writer");
        let ops = ops.lock().unwrap().clone();
        assert!(
            ops.iter().any(|op| op.2 > revision),
            "no write after the backup"
        );
        let expected = state_at(&ops, revision);
        assert!(!expected.is_empty());
        assert_eq!(
            saved["keys"].as_u64(),
            Some(expected.len() as u64),
            "{saved}"
        );

        // Restore on a new node with an empty data directory.
        let mut restored = NodeProc::new(
            "restored",
            &root,
            None,
            &["--restore", file.to_str().unwrap()],
        );
        restored.start();
        restored.wait_ready(Duration::from_secs(60)).await;
        assert_eq!(node_state(&restored, "linearizable").await, expected);

        let client = Cluster::client();
        let resp = client
            .put(restored.url("/v1/data/after-restore"))
            .body("new")
            .send()
            .await
            .expect("put after restore");
        assert_eq!(resp.status(), 201);
        let body: Value = resp.json().await.unwrap();
        let new_revision = body["revision"].as_u64().unwrap();
        // Revisions are the state machine's own and go on from the backup's.
        assert_eq!(
            new_revision,
            revision + 1,
            "the first write after restoring revision {revision}"
        );

        // A second node joins the restored one and gets everything.
        let mut joiner = NodeProc::new("joiner", &root, Some(restored.grpc_addr()), &[]);
        joiner.start();
        let url = joiner.url("/v1/cluster");
        wait_until(Duration::from_secs(60), "the joiner is a voter", || {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let body: Value = client.get(&url).send().await.ok()?.json().await.ok()?;
                let nodes = body["cluster"]["nodes"].as_object()?;
                let voters = nodes.values().filter(|n| n["voter"] == true).count();
                (voters == 2 && body["cluster"]["leader"] == "restored").then_some(())
            }
        })
        .await;
        let mut with_new = expected.clone();
        with_new.insert("after-restore".into(), ("new".into(), new_revision));
        let url = joiner.url("/v1/data/after-restore?consistency=stale");
        wait_until(
            Duration::from_secs(30),
            "the joiner has the new write",
            || {
                let (client, url) = (client.clone(), url.clone());
                async move { (client.get(&url).send().await.ok()?.status() == 200).then_some(()) }
            },
        )
        .await;
        assert_eq!(node_state(&joiner, "stale").await, with_new);
        assert_eq!(node_state(&joiner, "linearizable").await, with_new);

        // A follower serves backups too, linearizable by default: it holds the
        // write just made on the leader.
        let from_follower = save(&joiner, &root.join("follower.snap"));
        assert!(
            from_follower["revision"].as_u64().unwrap() >= new_revision,
            "{from_follower}"
        );
        assert_eq!(from_follower["keys"].as_u64(), Some(with_new.len() as u64));
        drop(cluster);
    })
    .await;
}

/// Corrupt or truncated backups, a non-empty data directory, a peer address
/// and a data directory left by an interrupted restore are all refused with
/// one line and a non-zero exit, leaving no state behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_backups_and_bad_targets_are_refused() {
    bounded(Duration::from_secs(180), async {
        let mut cluster = Cluster::start(1, &[]).await;
        let root = cluster.root.path().to_path_buf();
        let client = Cluster::client();
        for i in 0..20 {
            let url = cluster.nodes[0].url(&format!("/v1/data/key{i}"));
            let resp = client.put(&url).body(vec![b'x'; 200]).send().await.unwrap();
            assert!(resp.status().is_success());
        }
        let good = root.join("good.snap");
        save(&cluster.nodes[0], &good);
        let bytes = std::fs::read(&good).unwrap();

        let mut flipped = bytes.clone();
        flipped[bytes.len() / 2] ^= 0x40;
        let cases: [(&str, Vec<u8>, &[&str]); 3] = [
            ("flipped", flipped, &["corrupt", "checksum"]),
            (
                "truncated",
                bytes[..bytes.len() - 9].to_vec(),
                &["truncated"],
            ),
            ("garbage", b"not a backup at all".to_vec(), &["bad magic"]),
        ];
        for (name, data, words) in cases {
            let file = root.join(format!("{name}.snap"));
            std::fs::write(&file, data).unwrap();
            let dir = root.join(format!("restore-{name}"));
            let out = run_server_to_exit(
                &[
                    "--restore",
                    file.to_str().unwrap(),
                    "--data-directory",
                    dir.to_str().unwrap(),
                    "--raft-address",
                    "127.0.0.1:0",
                    "--grpc-address",
                    "127.0.0.1:0",
                    "--http-address",
                    "127.0.0.1:0",
                ],
                &root,
            );
            let line = one_error_line(&out, name);
            assert!(line.contains("refused"), "{name}: {line}");
            assert!(words.iter().any(|w| line.contains(w)), "{name}: {line}");
            assert!(
                is_empty_or_missing(&dir),
                "{name} left state in {}",
                dir.display()
            );
        }

        // The CLI's restore runs the server's, with the same outcome.
        let file = root.join("truncated.snap");
        let dir = root.join("restore-cli");
        let out = wait_output(
            {
                let mut cmd = Command::new(cli_bin());
                cmd.args(["snapshot", "restore", file.to_str().unwrap()])
                    .args(["--data-directory", dir.to_str().unwrap()])
                    .args([
                        "--raft-address",
                        "127.0.0.1:0",
                        "--grpc-address",
                        "127.0.0.1:0",
                    ])
                    .args(["--http-address", "127.0.0.1:0", "--log-level", "off"])
                    .current_dir(&root)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                clean_env(&mut cmd);
                cmd.spawn().expect("spawn cete")
            },
            "cete snapshot restore",
        );
        let line = one_error_line(&out, "cete snapshot restore");
        assert!(line.contains("truncated"), "{line}");
        assert!(is_empty_or_missing(&dir));

        // A used data directory is never overwritten.
        cluster.nodes[0].terminate();
        let used = cluster.nodes[0].dir.clone();
        let good_path = good.to_str().unwrap();
        let out = run_server_to_exit(
            &[
                "--restore",
                good_path,
                "--data-directory",
                used.to_str().unwrap(),
                "--raft-address",
                "127.0.0.1:0",
                "--grpc-address",
                "127.0.0.1:0",
                "--http-address",
                "127.0.0.1:0",
            ],
            &root,
        );
        let line = one_error_line(&out, "restore into a used directory");
        assert!(line.contains("not empty"), "{line}");
        cluster.nodes[0].start();
        cluster.nodes[0].wait_ready(Duration::from_secs(30)).await;
        let resp = client
            .get(cluster.nodes[0].url("/v1/data/key7"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            200,
            "the used directory still serves its data"
        );

        // Restore makes a new cluster: no peer to join.
        let out = run_server_to_exit(
            &["--restore", good_path, "--peer-grpc-address", "127.0.0.1:1"],
            &root,
        );
        let line = one_error_line(&out, "restore with a peer");
        assert!(
            line.contains("--restore") && line.contains("--peer-grpc-address"),
            "{line}"
        );

        // A data directory left by a restore that never finished does not start.
        let half = root.join("half");
        std::fs::create_dir_all(half.join("db")).unwrap();
        std::fs::write(half.join("RESTORING"), b"").unwrap();
        let out = run_server_to_exit(
            &[
                "--data-directory",
                half.to_str().unwrap(),
                "--raft-address",
                "127.0.0.1:0",
                "--grpc-address",
                "127.0.0.1:0",
                "--http-address",
                "127.0.0.1:0",
            ],
            &root,
        );
        let line = one_error_line(&out, "start on an interrupted restore");
        assert!(line.contains("interrupted restore"), "{line}");
    })
    .await;
}

/// Serves one canned answer to each of `answers.len()` connections.
async fn fake_server(answers: Vec<Vec<u8>>) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        for answer in answers {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            let _ = conn.write_all(&answer).await;
            let _ = conn.shutdown().await;
        }
    });
    (port, task)
}

fn answer(headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut out = b"HTTP/1.1 200 OK\r\nconnection: close\r\n".to_vec();
    for (name, value) in headers {
        out.extend(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend(b"\r\n");
    out.extend(body);
    out
}

/// `cete snapshot save` keeps nothing from a transfer that does not match the
/// server's checksum, stops short of its length, or is not a valid backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_refuses_damaged_transfers() {
    bounded(Duration::from_secs(120), async {
        let cluster = Cluster::start(1, &[]).await;
        let client = Cluster::client();
        for i in 0..10 {
            let url = cluster.nodes[0].url(&format!("/v1/data/k{i}"));
            client.put(&url).body("v").send().await.unwrap();
        }
        let resp = client
            .get(cluster.nodes[0].url("/v1/snapshot"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let h = |name: &str| resp.headers()[name].to_str().unwrap().to_string();
        let (revision, keys, checksum) =
            (h("x-cete-revision"), h("x-cete-keys"), h("x-cete-checksum"));
        assert_eq!(h("content-type"), "application/octet-stream");
        let body = resp.bytes().await.unwrap().to_vec();
        assert_eq!(checksum, format!("crc32:{:08x}", crc32fast::hash(&body)));
        assert_eq!(keys, "10");

        let mut flipped = body.clone();
        flipped[body.len() / 3] ^= 1;
        let short = &body[..body.len() - 20];
        let with = |len: usize, crc: String| {
            vec![
                ("content-length", len.to_string()),
                ("x-cete-revision", revision.clone()),
                ("x-cete-keys", keys.clone()),
                ("x-cete-checksum", crc),
            ]
        };
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "flipped",
                answer(&with(body.len(), checksum.clone()), &flipped),
                "corrupt",
            ),
            (
                "cut off",
                answer(&with(body.len(), checksum.clone()), short),
                "broke off",
            ),
            (
                "consistent but truncated",
                answer(
                    &with(short.len(), format!("crc32:{:08x}", crc32fast::hash(short))),
                    short,
                ),
                "truncated",
            ),
        ];
        let (port, server) = fake_server(cases.iter().map(|c| c.1.clone()).collect()).await;
        for (name, _, word) in &cases {
            let file: PathBuf = cluster.root.path().join("fake.snap");
            let out = tokio::task::spawn_blocking({
                let file = file.clone();
                move || {
                    let mut cmd = Command::new(cli_bin());
                    cmd.args(["--address", &format!("http://127.0.0.1:{port}")])
                        .args(["snapshot", "save", file.to_str().unwrap()])
                        .stdin(Stdio::null())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped());
                    clean_env(&mut cmd);
                    wait_output(cmd.spawn().expect("spawn cete"), "cete snapshot save")
                }
            })
            .await
            .unwrap();
            let line = one_error_line(&out, name);
            assert!(line.contains(word), "{name}: {line}");
            assert!(!file.exists(), "{name}: the damaged backup was kept");
            assert!(
                !file.with_extension("snap.part").exists(),
                "{name}: .part left"
            );
        }
        server.await.unwrap();
    })
    .await;
}
