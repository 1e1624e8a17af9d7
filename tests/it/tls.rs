//! TLS: a cluster whose HTTP API, Raft and peer traffic all run over TLS, plain text refused
//! on every TLS port, mutual TLS keeping out a node with an untrusted certificate, and
//! certificate problems stopping the server at start.
//!
//! Node certificates are issued for the name `cete.test` only, which does not resolve: every
//! check that passes therefore passes because the common name was used, not the address.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::Value;

use crate::harness::{
    assert_error_body, bounded, clean_env, cli_bin, run_server_to_exit, wait_until, NodeProc,
};

const NAME: &str = "cete.test";

/// A CA and the PEM files it issued, in a temp dir.
struct Pki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate file.
    ca: PathBuf,
}

impl Pki {
    fn new(dir: &Path, label: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{label} CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca = dir.join(format!("{label}-ca.pem"));
        std::fs::write(&ca, cert.pem()).unwrap();
        Pki {
            dir: dir.to_path_buf(),
            issuer: Issuer::new(params, key),
            ca,
        }
    }

    /// A node certificate for `cete.test` (server and client use), as (cert, key) files.
    fn node(&self, file: &str, expired: bool) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(vec![NAME.to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, NAME);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_path, key_path) = (
            self.dir.join(format!("{file}-cert.pem")),
            self.dir.join(format!("{file}-key.pem")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// TLS flags for a node.
fn tls_args(cert: &Path, key: &Path, ca: &Path, common_name: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "--cert-file".to_string(),
        path_str(cert),
        "--key-file".into(),
        path_str(key),
        "--ca-file".into(),
        path_str(ca),
    ];
    if let Some(name) = common_name {
        args.extend(["--cert-hostname".to_string(), name.to_string()]);
    }
    args
}

fn node(name: &str, root: &Path, peer: Option<String>, args: &[String]) -> NodeProc {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    NodeProc::new(name, root, peer, &args)
}

/// An HTTPS client trusting `ca`, reaching `cete.test` at 127.0.0.1, not following redirects.
fn https_client(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    crate::harness::http()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
        .resolve(NAME, "127.0.0.1:0".parse().unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

fn https_url(node: &NodeProc, path: &str) -> String {
    format!("https://{NAME}:{}{path}", node.http_port)
}

async fn get_json(client: &reqwest::Client, url: &str) -> Option<Value> {
    client.get(url).send().await.ok()?.json().await.ok()
}

/// Waits until `node` answers `/v1/cluster` over HTTPS with `n` voters and a leader.
async fn wait_voters(client: &reqwest::Client, node: &NodeProc, n: usize) -> Value {
    let url = https_url(node, "/v1/cluster");
    wait_until(
        Duration::from_secs(60),
        &format!("{} lists {n} voters over https", node.name),
        || async {
            let body = get_json(client, &url).await?;
            let cluster = body.get("cluster")?;
            let voters = cluster
                .get("nodes")?
                .as_object()?
                .values()
                .filter(|m| m["voter"] == true)
                .count();
            let leader = cluster.get("leader")?.as_str()?;
            (voters == n && !leader.is_empty()).then(|| body.clone())
        },
    )
    .await
}

/// Runs the CLI with the given arguments (address and TLS options included).
fn cli(args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(cli_bin());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    clean_env(&mut cmd);
    cmd.output().expect("run the cli")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_cluster_serves_https_and_replicates_over_tls() {
    bounded(Duration::from_secs(150), async {
        let root = tempfile::tempdir().unwrap();
        let pki = Pki::new(root.path(), "cluster");
        let (cert, key) = pki.node("node", false);
        let client = https_client(&pki.ca);

        // node1: flags with the original's spellings; node2: all from CETE_* variables;
        // node3: no common name, so it defaults to the certificate's DNS name.
        let mut n1 = node(
            "node1",
            root.path(),
            None,
            &tls_args(&cert, &key, &pki.ca, Some(NAME)),
        );
        n1.start();
        wait_voters(&client, &n1, 1).await;
        let peer = Some(n1.grpc_addr());
        let mut n2 = node("node2", root.path(), peer.clone(), &[]);
        let (c, k, ca) = (path_str(&cert), path_str(&key), path_str(&pki.ca));
        n2.start_with(
            &[
                ("CETE_CERTIFICATE_FILE", &c),
                ("CETE_KEY_FILE", &k),
                ("CETE_CA_FILE", &ca),
                ("CETE_COMMON_NAME", NAME),
            ],
            &[],
        );
        wait_voters(&client, &n1, 2).await;
        let mut n3 = node(
            "node3",
            root.path(),
            peer,
            &tls_args(&cert, &key, &pki.ca, None),
        );
        n3.start();
        let nodes = [n1, n2, n3];
        for n in &nodes {
            wait_voters(&client, n, 3).await;
        }

        // A write to a follower is redirected to the leader, on https.
        let body = get_json(&client, &https_url(&nodes[0], "/v1/cluster"))
            .await
            .unwrap();
        let leader = body["cluster"]["leader"].as_str().unwrap().to_string();
        let follower = nodes.iter().find(|n| n.name != leader).unwrap();
        let resp = client
            .put(https_url(follower, "/v1/data/tls/a"))
            .body("over tls")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 307);
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        assert!(location.starts_with("https://"), "{location}");
        let leader_node = nodes.iter().find(|n| n.name == leader).unwrap();
        let resp = client
            .put(https_url(leader_node, "/v1/data/tls/a"))
            .body("over tls")
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{:?}", resp.text().await);

        // Every node gets it through Raft, which runs over TLS.
        for n in &nodes {
            let url = https_url(n, "/v1/data/tls/a?consistency=stale");
            wait_until(
                Duration::from_secs(20),
                &format!("{} has tls/a", n.name),
                || async {
                    let resp = client.get(&url).send().await.ok()?;
                    let body = resp.bytes().await.ok()?;
                    (body.as_ref() == b"over tls").then_some(())
                },
            )
            .await;
        }

        // The CLI: --cacert plus --common-name, as the addresses are IPs; the write goes to a
        // follower and follows the redirect, which names another IP:port.
        let addr = format!("https://127.0.0.1:{}", follower.http_port);
        let ca = path_str(&pki.ca);
        let tls = ["--cacert", ca.as_str(), "--common-name", NAME];
        let out = cli(&[
            &["--address", &addr][..],
            &tls,
            &["set", "tls/b", "from the cli"],
        ]
        .concat());
        assert!(out.status.success(), "set: {}", text(&out.stderr));
        let out = cli(&[&["--address", &addr][..], &tls, &["get", "tls/b"]].concat());
        assert!(out.status.success(), "get: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "from the cli");
        let out = cli(&[&["--address", &addr][..], &tls, &["cluster"]].concat());
        assert!(out.status.success(), "cluster: {}", text(&out.stderr));
        let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(listed["cluster"]["nodes"].as_object().unwrap().len(), 3);

        // Without the common name the certificate does not match the IP: a one-line error.
        let out = cli(&["--address", &addr, "--cacert", &ca, "node"]);
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(
            err.starts_with("error: ")
                && err.contains("not issued for the host")
                && err.lines().count() == 1,
            "{err}"
        );
        // Without the CA the certificate is not trusted.
        let out = cli(&["--address", &addr, "--common-name", NAME, "node"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        // --insecure skips verification, with a warning.
        let out = cli(&["--address", &addr, "--insecure", "get", "tls/b"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("warning: --insecure"));
    })
    .await
}

/// Sends `request` on a fresh connection to `port` and reads until the server closes it.
fn exchange(port: u16, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let start = Instant::now();
    match stream.read_to_end(&mut answer) {
        Ok(_) => {}
        // A reset after the server gave up is a close too; a timeout is a hang.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("no close within 5s (after {:?}): {e}", start.elapsed()),
    }
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text_is_refused_on_every_tls_port() {
    bounded(Duration::from_secs(60), async {
        let root = tempfile::tempdir().unwrap();
        let pki = Pki::new(root.path(), "cluster");
        let (cert, key) = pki.node("node", false);
        let mut n1 = node(
            "node1",
            root.path(),
            None,
            &tls_args(&cert, &key, &pki.ca, Some(NAME)),
        );
        n1.start();
        wait_voters(&https_client(&pki.ca), &n1, 1).await;

        // HTTP on the HTTPS port: a readable 400, then the connection closes.
        let start = Instant::now();
        let answer = text(&exchange(
            n1.http_port,
            b"GET /v1/node HTTP/1.1\r\nhost: localhost\r\n\r\n",
        ));
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        assert_error_body(body, &["HttpsRequired"], "plain HTTP on the HTTPS port");

        let resp = crate::harness::http()
            .build()
            .unwrap()
            .get(format!("http://127.0.0.1:{}/v1/node", n1.http_port))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        let out = cli(&[
            "--address",
            &format!("http://127.0.0.1:{}", n1.http_port),
            "node",
        ]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr).contains("HttpsRequired"),
            "{}",
            text(&out.stderr)
        );

        // Plain HTTP/1.1 or HTTP/2 (what a plain gRPC client sends) on the Raft and peer
        // ports: no HTTP answer, and the connection is closed rather than left hanging.
        for port in [n1.raft_port, n1.grpc_port] {
            for request in [
                &b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n"[..],
                &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
            ] {
                let answer = exchange(port, request);
                assert!(
                    !answer.starts_with(b"HTTP/"),
                    "port {port}: {}",
                    text(&answer)
                );
            }
            let plain = crate::harness::http()
                .build()
                .unwrap()
                .get(format!("http://127.0.0.1:{port}/"))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            assert!(plain.is_err(), "port {port}: {plain:?}");
        }
        // The node is unharmed.
        let resp = https_client(&pki.ca)
            .get(https_url(&n1, "/v1/node"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_an_untrusted_certificate_cannot_join() {
    bounded(Duration::from_secs(90), async {
        let root = tempfile::tempdir().unwrap();
        let pki = Pki::new(root.path(), "cluster");
        let rogue_pki = Pki::new(root.path(), "rogue");
        let (cert, key) = pki.node("node", false);
        let (rogue_cert, rogue_key) = rogue_pki.node("rogue", false);
        let client = https_client(&pki.ca);
        let mut n1 = node(
            "node1",
            root.path(),
            None,
            &tls_args(&cert, &key, &pki.ca, Some(NAME)),
        );
        n1.start();
        wait_voters(&client, &n1, 1).await;

        // The rogue trusts the cluster's CA (so it would accept node1), but its own
        // certificate comes from a CA the cluster does not trust: mutual TLS refuses it.
        let both = root.path().join("both-ca.pem");
        let bundle = std::fs::read_to_string(&pki.ca).unwrap()
            + &std::fs::read_to_string(&rogue_pki.ca).unwrap();
        std::fs::write(&both, bundle).unwrap();
        let mut rogue = node(
            "rogue",
            root.path(),
            Some(n1.grpc_addr()),
            &tls_args(&rogue_cert, &rogue_key, &both, Some(NAME)),
        );
        rogue.start();
        let log = rogue.log_path.clone();
        let line = wait_until(
            Duration::from_secs(30),
            "the rogue node logs a failed join",
            || async {
                let text = std::fs::read_to_string(&log).ok()?;
                text.lines()
                    .find(|l| l.contains("join through") && l.contains("failed"))
                    .map(str::to_string)
            },
        )
        .await;
        assert!(
            line.contains("the peer refused this node's certificate"),
            "the failure should say why: {line}"
        );
        println!("{line}");
        assert!(
            rogue.is_running(),
            "the rogue keeps retrying, it does not crash"
        );
        let body = get_json(&client, &https_url(&n1, "/v1/cluster"))
            .await
            .unwrap();
        let members = body["cluster"]["nodes"].as_object().unwrap();
        assert_eq!(members.len(), 1, "membership unchanged: {body}");
        assert!(members.contains_key("node1"));
    })
    .await
}

/// Runs the server with `args` and returns its exit code and stderr; it must stop by itself.
fn start_failure(root: &Path, args: &[String]) -> (Option<i32>, String) {
    let data = root.join("bad");
    let mut all = vec![
        "--id",
        "bad",
        "--raft-address",
        "127.0.0.1:0",
        "--grpc-address",
        "127.0.0.1:0",
        "--http-address",
        "127.0.0.1:0",
        "--data-directory",
        data.to_str().expect("UTF-8 temp path"),
    ];
    all.extend(args.iter().map(String::as_str));
    let out = run_server_to_exit(&all, root);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn certificate_problems_stop_the_server_at_start() {
    let root = tempfile::tempdir().unwrap();
    let pki = Pki::new(root.path(), "cluster");
    let (cert, key) = pki.node("node", false);
    let (_, other_key) = pki.node("other", false);
    let (expired_cert, expired_key) = pki.node("expired", true);
    let missing = root.path().join("missing.pem");
    let ca = &pki.ca;
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "missing certificate",
            tls_args(&missing, &key, ca, None),
            "cannot read --certificate-file",
        ),
        (
            "missing CA file",
            tls_args(&cert, &key, &missing, None),
            "cannot read --ca-file",
        ),
        (
            "key of another certificate",
            tls_args(&cert, &other_key, ca, None),
            "does not match the certificate",
        ),
        (
            "expired certificate",
            tls_args(&expired_cert, &expired_key, ca, None),
            "expired",
        ),
        (
            "wrong common name",
            tls_args(&cert, &key, ca, Some("other.test")),
            "not valid for the common name",
        ),
        (
            "certificate without a key",
            vec!["--certificate-file".into(), path_str(&cert)],
            "--key-file",
        ),
    ];
    for (what, args, expected) in cases {
        let (code, err) = start_failure(root.path(), &args);
        assert_eq!(code, Some(1), "{what}: {err}");
        assert!(err.contains(expected), "{what}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{what}: one line: {err}");
        assert!(err.starts_with("cete-server: "), "{what}: {err}");
    }
}

/// Runs the original Cete README's certificate recipe verbatim in `dir`: a self-signed
/// CA:TRUE certificate for CN=localhost, without a subjectAltName. Returns (cert, key).
fn original_recipe(dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(
            "openssl req -x509 -nodes -newkey rsa:4096 -keyout ./etc/cete-key.pem \
             -out ./etc/cete-cert.pem -days 365 -subj '/CN=localhost'",
        )
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "openssl: {}", text(&out.stderr));
    (dir.join("etc/cete-cert.pem"), dir.join("etc/cete-key.pem"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_recipe_certificate_is_pinned_by_peers_and_the_cli() {
    bounded(Duration::from_secs(150), async {
        let root = tempfile::tempdir().unwrap();
        let (cert, key) = original_recipe(&root.path().join("a"));
        let (other_cert, other_key) = original_recipe(&root.path().join("b"));
        // The original's flags: no CA file, so the certificate is its own trust root.
        let args = |cert: &Path, key: &Path| {
            vec![
                "--cert-file".to_string(),
                path_str(cert),
                "--key-file".into(),
                path_str(key),
                "--cert-hostname=localhost".into(),
            ]
        };
        let cli_at = |node: &NodeProc, cert: &Path, rest: &[&str]| {
            let addr = format!("https://localhost:{}", node.http_port);
            let cert = path_str(cert);
            cli(&[
                &["--address", addr.as_str(), "--cert-file", cert.as_str()][..],
                rest,
            ]
            .concat())
        };
        let voters = |out: &std::process::Output| -> Option<(usize, String)> {
            let body: Value = serde_json::from_slice(&out.stdout).ok()?;
            let cluster = body.get("cluster")?;
            let n = cluster
                .get("nodes")?
                .as_object()?
                .values()
                .filter(|m| m["voter"] == true)
                .count();
            let leader = cluster.get("leader")?.as_str()?.to_string();
            (!leader.is_empty()).then_some((n, leader))
        };

        let mut n1 = node("node1", root.path(), None, &args(&cert, &key));
        n1.start();
        let peer = Some(n1.grpc_addr());
        let mut n2 = node("node2", root.path(), peer.clone(), &args(&cert, &key));
        let mut n3 = node("node3", root.path(), peer.clone(), &args(&cert, &key));
        n2.start();
        n3.start();
        let nodes = [n1, n2, n3];
        let mut leader = String::new();
        for n in &nodes {
            leader = wait_until(
                Duration::from_secs(60),
                &format!("{} lists 3 voters over https", n.name),
                || async {
                    let out = cli_at(n, &cert, &["cluster"]);
                    voters(&out).and_then(|(count, leader)| (count == 3).then_some(leader))
                },
            )
            .await;
        }

        // Write through the leader, read from a follower: Raft ran over the pinned TLS.
        let leader_node = nodes.iter().find(|n| n.name == leader).unwrap();
        let follower = nodes.iter().find(|n| n.name != leader).unwrap();
        let out = cli_at(leader_node, &cert, &["set", "pin/a", "pinned"]);
        assert!(out.status.success(), "set: {}", text(&out.stderr));
        wait_until(
            Duration::from_secs(20),
            "the follower has pin/a",
            || async {
                let out = cli_at(follower, &cert, &["get", "pin/a", "--consistency", "stale"]);
                (out.status.success() && out.stdout == b"pinned").then_some(())
            },
        )
        .await;

        // Another run of the recipe: the same name, another key. The CLI refuses it...
        let out = cli_at(follower, &other_cert, &["node"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
        let err = text(&out.stderr);
        assert!(err.contains("certificate is refused"), "{err}");

        // ... and so does the cluster: a node with it cannot join.
        let mut rogue = node("rogue", root.path(), peer, &args(&other_cert, &other_key));
        rogue.start();
        let log = rogue.log_path.clone();
        let line = wait_until(
            Duration::from_secs(30),
            "the node with the other certificate logs a failed join",
            || async {
                let text = std::fs::read_to_string(&log).ok()?;
                text.lines()
                    .find(|l| l.contains("join through") && l.contains("failed"))
                    .map(str::to_string)
            },
        )
        .await;
        assert!(line.contains("TLS handshake failed"), "{line}");
        println!("{line}");
        let out = cli_at(leader_node, &cert, &["cluster"]);
        let body: Value = serde_json::from_slice(&out.stdout).unwrap();
        let members = body["cluster"]["nodes"].as_object().unwrap();
        assert_eq!(members.len(), 3, "membership unchanged: {body}");
        assert!(!members.contains_key("rogue"));
    })
    .await
}
