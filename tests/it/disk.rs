//! Disk trouble under a real node: its data directory on a small tmpfs that
//! fills up, or that is read-only. Writes must fail with a clear error, no
//! acknowledged write may be lost, the store must not be corrupted, and a
//! restart once the disk is fixed must bring the node back with every
//! acknowledged write.
//!
//! These tests mount file systems, so they need root (CI runs as root, as
//! does the dev container). Without it they fail and say so: they never skip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{assert_error_body, bounded, wait_until, Cluster, NodeProc};

const TEST_TIMEOUT: Duration = Duration::from_secs(180);
const READY: Duration = Duration::from_secs(30);

/// A tmpfs mounted for one test, unmounted (lazily) when dropped.
struct Tmpfs {
    path: PathBuf,
}

fn mount(args: &[&str]) -> Result<(), String> {
    let out = Command::new("mount")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mount {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("mount point");
        let options = format!("size={size}");
        if let Err(e) = mount(&[
            "-t",
            "tmpfs",
            "-o",
            &options,
            "tmpfs",
            &path.display().to_string(),
        ]) {
            panic!(
                "THIS TEST NEEDS ROOT (or CAP_SYS_ADMIN) TO MOUNT A SMALL TMPFS and cannot run without it: {e}"
            );
        }
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    fn remount(&self, options: &str) {
        let options = format!("remount,{options}");
        mount(&["-o", &options, &self.path.display().to_string()])
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// A node whose data directory is on `mnt` and whose log is outside it
/// (so that logging does not compete for the space).
fn node_on(mnt: &Path, root: &Path) -> NodeProc {
    let log = root.join("node1.log").display().to_string();
    NodeProc::new(
        "node1",
        mnt,
        None,
        &["--log-file", &log, "--log-level", "info"],
    )
}

async fn status_and_json(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

async fn put(
    client: &reqwest::Client,
    node: &NodeProc,
    key: &str,
    value: Vec<u8>,
) -> (u16, String) {
    status_and_json(
        client
            .put(node.url(&format!("/v1/data/{key}")))
            .body(value)
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT {key}: {e}")),
    )
    .await
}

/// The value of `key`: `Some` on 200, `None` on 404, panics on anything else.
async fn get(client: &reqwest::Client, node: &NodeProc, key: &str, stale: bool) -> Option<Vec<u8>> {
    let query = if stale { "?consistency=stale" } else { "" };
    let resp = client
        .get(node.url(&format!("/v1/data/{key}{query}")))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {key}: {e}"));
    match resp.status().as_u16() {
        200 => Some(resp.bytes().await.unwrap().to_vec()),
        404 => None,
        other => panic!(
            "GET {key}: {other} {}",
            resp.text().await.unwrap_or_default()
        ),
    }
}

/// Incompressible bytes, different for every `i`: RocksDB compresses its
/// files, and the state machine's writes reach only files (not the WAL), so
/// a patterned value would take a fraction of its size on disk.
fn value_of(i: usize, len: usize) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut value = vec![0; len];
    rand::rngs::StdRng::seed_from_u64(i as u64).fill_bytes(&mut value);
    value
}

/// Fill the data directory until writes fail: they fail with a 5xx JSON
/// error (`StorageFull` once the node knows; the write in flight when the
/// disk filled may be `OutcomeUnknown`), reads go on, health checks say why,
/// and after space is freed a restart brings back every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_disk_fails_writes_cleanly_and_restart_recovers() {
    bounded(TEST_TIMEOUT, async {
        let root = tempfile::Builder::new()
            .prefix("cete-it-disk-")
            .tempdir()
            .expect("tempdir");
        let tmpfs = Tmpfs::mount(&root.path().join("mnt"), "24m");
        let mut node = node_on(&tmpfs.path, root.path());
        node.start();
        node.wait_ready(READY).await;
        let client = Cluster::client();

        let mut acknowledged = Vec::new();
        let mut in_flight = None;
        let started = Instant::now();
        for i in 0..400 {
            let key = format!("fill/{i:03}");
            let value = value_of(i, 256 * 1024);
            let (status, body) = put(&client, &node, &key, value.clone()).await;
            if status == 201 {
                acknowledged.push((key, value));
                continue;
            }
            assert!(
                (500..600).contains(&status),
                "PUT {key} on a full disk: want a 5xx, got {status} {body}"
            );
            assert_error_body(
                &body,
                &["StorageFull", "OutcomeUnknown"],
                &format!("PUT {key} as the disk fills"),
            );
            in_flight = Some((key, value));
            break;
        }
        let (unknown_key, unknown_value) =
            in_flight.expect("400 writes of 256 KiB never filled a 24 MiB data directory");
        println!(
            "disk full after {} acknowledged writes of 256 KiB ({:?})",
            acknowledged.len(),
            started.elapsed()
        );
        assert!(!acknowledged.is_empty(), "not one write fitted");

        // Later writes are refused at once with the stable code.
        for attempt in 0..3 {
            let (status, body) = put(
                &client,
                &node,
                &format!("after/{attempt}"),
                b"small".to_vec(),
            )
            .await;
            assert_eq!(status, 507, "write on a full disk: {body}");
            let body = assert_error_body(&body, &["StorageFull"], "write on a full disk");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("restart"),
                "the message says what to do: {body}"
            );
        }
        // Health checks say why.
        for (path, field) in [
            ("/v1/readiness_check", "ready"),
            ("/v1/liveness_check", "alive"),
        ] {
            let (status, body) =
                status_and_json(client.get(node.url(path)).send().await.unwrap()).await;
            assert_eq!(status, 503, "{path} on a failed disk: {body}");
            let json: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(json[field], false, "{path}: {body}");
            assert!(
                json["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("No space left")),
                "{path}: {body}"
            );
        }
        // Stale reads still serve every acknowledged value.
        for (key, value) in &acknowledged {
            assert_eq!(
                get(&client, &node, key, true).await.as_ref(),
                Some(value),
                "stale read of {key}"
            );
        }
        // A linearizable read cannot be confirmed: a clear error.
        let resp = client
            .get(node.url(&format!("/v1/data/{}", acknowledged[0].0)))
            .send()
            .await
            .unwrap();
        let (status, body) = status_and_json(resp).await;
        assert_eq!(status, 507, "linearizable read on a failed node: {body}");
        assert_error_body(
            &body,
            &["StorageFull"],
            "linearizable read on a failed node",
        );

        // Space comes back; the node needs a restart (openraft stops on any
        // storage error), and then has every acknowledged write.
        tmpfs.remount("size=128m");
        let status = node.terminate();
        println!("SIGTERM with a failed store: exit {status}");
        node.start();
        node.wait_ready(READY).await;
        for (key, value) in &acknowledged {
            assert_eq!(
                get(&client, &node, key, false).await.as_ref(),
                Some(value),
                "{key} after restart"
            );
        }
        // The write in flight is either there whole or not at all.
        match get(&client, &node, &unknown_key, false).await {
            Some(v) => assert!(v == unknown_value, "{unknown_key} is corrupt after restart"),
            None => println!("{unknown_key} (outcome unknown) was not applied"),
        }
        let (status, body) = put(&client, &node, "after/restart", b"ok".to_vec()).await;
        assert_eq!(status, 201, "write after restart: {body}");
        let ready = client
            .get(node.url("/v1/liveness_check"))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 200);
    })
    .await
}

/// A data directory that is read-only when the node starts: the node exits
/// with a clear message rather than running without storage; once the
/// directory is writable again it starts with all its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_only_data_directory_refuses_to_start_then_recovers() {
    bounded(TEST_TIMEOUT, async {
        let root = tempfile::Builder::new()
            .prefix("cete-it-disk-")
            .tempdir()
            .expect("tempdir");
        let tmpfs = Tmpfs::mount(&root.path().join("mnt"), "64m");
        let mut node = node_on(&tmpfs.path, root.path());
        node.start();
        node.wait_ready(READY).await;
        let client = Cluster::client();
        let mut written = Vec::new();
        for i in 0..20 {
            let key = format!("ro/{i:02}");
            let value = value_of(i, 1000 + i);
            let (status, body) = put(&client, &node, &key, value.clone()).await;
            assert_eq!(status, 201, "PUT {key}: {body}");
            written.push((key, value));
        }
        // A file system with files open for writing cannot be remounted
        // read-only (EBUSY), so the node is stopped first.
        node.terminate();
        tmpfs.remount("ro");
        node.start();
        let deadline = Instant::now() + Duration::from_secs(30);
        let exit = loop {
            if let Some(status) = node.try_exit_status() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the node runs on a read-only data directory\n{}",
                node.dump_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            !exit.success(),
            "exit status {exit} on a read-only data directory"
        );
        let stderr = std::fs::read_to_string(node.stderr_path()).unwrap_or_default();
        assert!(
            stderr.contains("Read-only file system") && stderr.contains("--data-directory"),
            "the error names the cause and the setting: {stderr}"
        );

        tmpfs.remount("rw");
        node.start();
        node.wait_ready(READY).await;
        for (key, value) in &written {
            assert_eq!(
                get(&client, &node, key, false).await.as_ref(),
                Some(value),
                "{key} after restart"
            );
        }
        let (status, body) = put(&client, &node, "ro/after", b"ok".to_vec()).await;
        assert_eq!(status, 201, "write once writable again: {body}");
        wait_until(Duration::from_secs(5), "liveness", || async {
            let resp = Cluster::client()
                .get(node.url("/v1/liveness_check"))
                .send()
                .await
                .ok()?;
            (resp.status() == 200).then_some(())
        })
        .await;
    })
    .await
}
