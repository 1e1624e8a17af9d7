//! Test harness: real `cete-server` processes on temp dirs and free ports.
//!
//! Every node gets its own data directory under a test-owned temp dir, ports
//! picked by the OS, and a log file written by the server itself. A node that
//! is dropped while the test thread panics prints the tail of its logs, so a
//! failing test always shows what the servers were doing (see [`bounded`] for
//! the overall deadline, which panics while the nodes are still alive).
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The directory of the workspace binaries: the test runs as
/// `<target>/debug/deps/it-<hash>`, the binaries are in `<target>/debug/`.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary has a parent dir");
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps has a parent").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first (with the same CARGO_TARGET_DIR)",
        path.display()
    );
    path
}

/// Path of the `cete-server` binary built beside this test binary.
pub fn server_bin() -> PathBuf {
    bin("cete-server")
}

/// Path of the `cete` CLI binary built beside this test binary.
pub fn cli_bin() -> PathBuf {
    bin("cete")
}

/// A port that was free a moment ago. Taken at random below the kernel's
/// ephemeral range (32768 and up on Linux), so that the source port of some
/// outgoing connection cannot take it before the node binds it; never the
/// same port twice in one test run.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let mut given = GIVEN
        .get_or_init(Default::default)
        .lock()
        .expect("port registry lock");
    loop {
        let port = rand::random_range(15_000..32_000);
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
}

/// A reqwest client builder. Every HTTP client of the tests starts here: reqwest is built
/// without a crypto provider of its own (the workspace enables `rustls-no-provider`, so that
/// only ring is compiled) and panics when it builds a client, even a plain-http one, before a
/// process-wide rustls provider is installed. `clients_come_from_the_harness` keeps it so.
pub fn http() -> reqwest::ClientBuilder {
    // Err only means that a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

/// A client that follows up to 5 redirects (a follower's 307 to the leader), with
/// `timeout` per request and no idle connections (a restarted node never meets a dead
/// pooled socket).
pub fn follow_client(timeout: Duration) -> reqwest::Client {
    http()
        .redirect(reqwest::redirect::Policy::limited(5))
        .timeout(timeout)
        .pool_max_idle_per_host(0)
        .build()
        .expect("reqwest client")
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `timeout`.
pub async fn wait_until<F, Fut, T>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        // A single slow attempt must not overrun the deadline either.
        if let Ok(Some(value)) =
            tokio::time::timeout(remaining.max(Duration::from_millis(1)), f()).await
        {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a test body with a deadline. On timeout it panics *while the body's
/// future (and so its nodes) is still alive*, so the nodes print their logs
/// as they are dropped during unwinding.
pub async fn bounded<T>(timeout: Duration, body: impl Future<Output = T>) -> T {
    let mut body = Box::pin(body);
    tokio::select! {
        out = &mut body => out,
        _ = tokio::time::sleep(timeout) => panic!("test timed out after {timeout:?}"),
    }
}

/// Sends a signal to a process we started.
#[allow(unsafe_code)]
fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child's.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {sig}) failed: {}",
        std::io::Error::last_os_error()
    );
}

/// Removes every `CETE_*` variable (and `RUST_LOG`, which would override
/// `--log-level`) from a command's environment, so the test process's
/// environment never leaks into a server or CLI.
pub fn clean_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CETE_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env_remove("RUST_LOG");
}

/// The value of `--flag X` or `--flag=X` in `args`, if present.
fn flag_value(args: &[String], flag: &str) -> Option<String> {
    let prefix = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&prefix).map(str::to_string)
        }
    })
}

fn has_flag(args: &[String], flag: &str) -> bool {
    let prefix = format!("{flag}=");
    args.iter().any(|a| a == flag || a.starts_with(&prefix))
}

/// The last `n` lines of a file, or a note that it could not be read.
fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..]
                .iter()
                .map(|line| match line.char_indices().nth(2000) {
                    Some((cut, _)) => format!("{}... ({} bytes)", &line[..cut], line.len()),
                    None => line.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// One `cete-server` process (running or not) with its ports and data dir.
pub struct NodeProc {
    pub name: String,
    /// Data directory.
    pub dir: PathBuf,
    pub raft_port: u16,
    pub grpc_port: u16,
    pub http_port: u16,
    /// The server's own log file (`--log-file`).
    pub log_path: PathBuf,
    pub extra_args: Vec<String>,
    pub peer_grpc: Option<String>,
    child: Option<Child>,
    /// Set between `pause` and `resume`; paused nodes are skipped by `Cluster::leader`.
    paused: AtomicBool,
    /// The directory the process runs in (and its HOME).
    root: PathBuf,
}

impl NodeProc {
    /// A node named `name` with free ports, data dir `root/<name>` and log file
    /// `root/<name>.log` (or the `--log-file` given in `extra_args`). Not started.
    pub fn new(
        name: &str,
        root: &Path,
        peer_grpc: Option<String>,
        extra_args: &[&str],
    ) -> NodeProc {
        let extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let log_path = flag_value(&extra_args, "--log-file")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(format!("{name}.log")));
        NodeProc {
            name: name.to_string(),
            dir: root.join(name),
            raft_port: free_port(),
            grpc_port: free_port(),
            http_port: free_port(),
            log_path,
            extra_args,
            peer_grpc,
            child: None,
            paused: AtomicBool::new(false),
            root: root.to_path_buf(),
        }
    }

    /// Where the process's stdout and stderr go (appended across restarts).
    pub fn stderr_path(&self) -> PathBuf {
        let mut p = self.log_path.clone().into_os_string();
        p.push(".stderr");
        PathBuf::from(p)
    }

    /// The full `cete-server` command line (without the binary).
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--id".to_string(),
            self.name.clone(),
            "--raft-address".into(),
            format!("127.0.0.1:{}", self.raft_port),
            "--grpc-address".into(),
            format!("127.0.0.1:{}", self.grpc_port),
            "--http-address".into(),
            format!("127.0.0.1:{}", self.http_port),
            "--data-directory".into(),
            self.dir.display().to_string(),
        ];
        if let Some(peer) = &self.peer_grpc {
            args.push("--peer-grpc-address".into());
            args.push(peer.clone());
        }
        if !has_flag(&self.extra_args, "--log-level") {
            args.push("--log-level".into());
            args.push("debug".into());
        }
        if !has_flag(&self.extra_args, "--log-file") {
            args.push("--log-file".into());
            args.push(self.log_path.display().to_string());
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// Spawns the server. Panics if it is already running.
    pub fn start(&mut self) {
        self.start_with(&[], &[]);
    }

    /// Like [`NodeProc::start`], with extra environment variables and without
    /// the harness's own value for each flag in `omit` (e.g. `"--http-address"`),
    /// so a test can let the address come from the environment or a config file.
    pub fn start_with(&mut self, env: &[(&str, &str)], omit: &[&str]) {
        assert!(!self.is_running(), "{} is already running", self.name);
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stderr_path())
            .expect("open the node's stderr file");
        let err = out.try_clone().expect("clone file handle");
        let mut args = Vec::new();
        let mut given = self.args().into_iter();
        while let Some(arg) = given.next() {
            if omit.contains(&arg.as_str()) {
                given.next(); // and its value
            } else {
                args.push(arg);
            }
        }
        let mut cmd = Command::new(server_bin());
        cmd.args(args)
            .current_dir(&self.root)
            .env("HOME", &self.root)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        clean_env(&mut cmd);
        cmd.envs(env.iter().copied());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", server_bin().display()));
        self.child = Some(child);
        self.paused.store(false, Ordering::SeqCst);
    }

    /// `http://127.0.0.1:<http_port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    /// `127.0.0.1:<grpc_port>`.
    pub fn grpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    /// The process id, if started and not yet reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL and reap. No-op when not running.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused.store(false, Ordering::SeqCst);
    }

    /// SIGTERM and wait up to 20 s for the exit (then SIGKILL and panic).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        if self.paused.swap(false, Ordering::SeqCst) {
            signal(child.id(), libc::SIGCONT);
        }
        signal(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match child.try_wait().expect("try_wait") {
                Some(status) => return status,
                None if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "{} did not exit within 20s of SIGTERM\n{}",
                        self.name,
                        self.dump_log()
                    );
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// SIGSTOP: the process freezes, its sockets stay open.
    pub fn pause(&self) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        signal(pid, libc::SIGSTOP);
        self.paused.store(true, Ordering::SeqCst);
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        signal(pid, libc::SIGCONT);
        self.paused.store(false, Ordering::SeqCst);
    }

    /// Whether `pause` is in effect.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Whether the process is alive (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            None => false,
            Some(child) => matches!(child.try_wait(), Ok(None)),
        }
    }

    /// The exit status if the process has exited (and reaps it), `None` while it runs.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Polls `GET /v1/readiness_check` until it answers 200.
    pub async fn wait_ready(&self, timeout: Duration) {
        let client = Cluster::client();
        let url = self.url("/v1/readiness_check");
        let what = format!("{} ready at {url}", self.name);
        wait_until(timeout, &what, || {
            let client = client.clone();
            let url = url.clone();
            async move {
                let resp = client.get(&url).send().await.ok()?;
                (resp.status() == 200).then_some(())
            }
        })
        .await
    }

    /// The last 200 lines of the server's log file and of its stdout/stderr.
    pub fn dump_log(&self) -> String {
        format!(
            "===== {} log {} (last 200 lines) =====\n{}\n===== {} stdout/stderr {} =====\n{}\n",
            self.name,
            self.log_path.display(),
            tail(&self.log_path, 200),
            self.name,
            self.stderr_path().display(),
            tail(&self.stderr_path(), 200),
        )
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.dump_log());
        }
        self.kill9();
    }
}

/// A cluster of nodes `node1..=n` sharing one temp dir.
pub struct Cluster {
    /// Removed after the nodes are killed (see `Drop for Cluster`).
    pub root: tempfile::TempDir,
    pub nodes: Vec<NodeProc>,
}

/// GET a URL and parse the JSON body (any status).
async fn get_json(client: &reqwest::Client, url: &str) -> Option<Value> {
    let resp = client.get(url).send().await.ok()?;
    resp.json::<Value>().await.ok()
}

impl Cluster {
    /// Starts `n` nodes: node1 bootstraps, the others join through node1's
    /// gRPC address, one at a time. Returns once every node's `/v1/cluster`
    /// lists `n` voters and a leader.
    pub async fn start(n: usize, extra_args: &[&str]) -> Cluster {
        assert!(n >= 1);
        let root = tempfile::Builder::new()
            .prefix("cete-it-")
            .tempdir()
            .expect("tempdir");
        let mut cluster = Cluster {
            root,
            nodes: Vec::new(),
        };
        let mut first = NodeProc::new("node1", cluster.root.path(), None, extra_args);
        first.start();
        cluster.nodes.push(first);
        cluster.nodes[0].wait_ready(Duration::from_secs(30)).await;
        let peer = cluster.nodes[0].grpc_addr();
        for i in 2..=n {
            let mut node = NodeProc::new(
                &format!("node{i}"),
                cluster.root.path(),
                Some(peer.clone()),
                extra_args,
            );
            node.start();
            cluster.nodes.push(node);
            cluster.wait_members(i, Duration::from_secs(60)).await;
        }
        cluster.wait_members(n, Duration::from_secs(60)).await;
        cluster
    }

    /// Waits until every node's `/v1/cluster` lists `n` voters and the same non-empty leader.
    pub async fn wait_members(&self, n: usize, timeout: Duration) {
        let client = Cluster::client();
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|node| node.url("/v1/cluster"))
            .collect();
        wait_until(
            timeout,
            &format!("every node lists {n} voters and a leader"),
            || {
                let client = client.clone();
                let urls = urls.clone();
                async move {
                    let mut leaders = Vec::new();
                    for url in &urls {
                        let body = get_json(&client, url).await?;
                        let cluster = body.get("cluster")?;
                        let voters = cluster
                            .get("nodes")?
                            .as_object()?
                            .values()
                            .filter(|m| m.get("voter").and_then(Value::as_bool) == Some(true))
                            .count();
                        let leader = cluster.get("leader")?.as_str()?.to_string();
                        if voters != n || leader.is_empty() {
                            return None;
                        }
                        leaders.push(leader);
                    }
                    leaders.windows(2).all(|w| w[0] == w[1]).then_some(())
                }
            },
        )
        .await
    }

    /// Index in `nodes` of the leader: the node whose `/v1/node` state is
    /// "Leader" and which every other running, unpaused, answering node names
    /// as its leader.
    pub async fn leader(&self, timeout: Duration) -> usize {
        let client = http()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(1))
            .build()
            .expect("reqwest client");
        let live: Vec<(usize, String, String)> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, node)| node.child.is_some() && !node.is_paused())
            .map(|(i, node)| (i, node.name.clone(), node.url("/v1/node")))
            .collect();
        wait_until(timeout, "a leader agreed by the running nodes", || {
            let client = client.clone();
            let live = live.clone();
            async move {
                let mut leader_idx = None;
                let mut named = Vec::new();
                for (i, name, url) in &live {
                    let Some(body) = get_json(&client, url).await else {
                        continue; // down or stuck: not part of the vote
                    };
                    let node = body.get("node")?;
                    if node.get("state")?.as_str()? == "Leader" {
                        if leader_idx.is_some() {
                            return None; // two nodes claim leadership
                        }
                        leader_idx = Some((*i, name.clone()));
                    }
                    named.push(node.get("leader")?.as_str()?.to_string());
                }
                let (idx, name) = leader_idx?;
                named.iter().all(|n| *n == name).then_some(idx)
            }
        })
        .await
    }

    /// A client that does not follow redirects, with a 10 s timeout. It keeps
    /// no idle connections, so a request after a node restart never lands on
    /// a dead pooled socket.
    pub fn client() -> reqwest::Client {
        http()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(0)
            .build()
            .expect("reqwest client")
    }

    /// Every node's log tail.
    pub fn dump_logs(&self) -> String {
        self.nodes
            .iter()
            .map(NodeProc::dump_log)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Nodes print their own logs on panic; kill them before the temp dir goes.
        self.nodes.clear();
    }
}

/// Runs the `cete` CLI against `node` (`--address http://127.0.0.1:<http_port>`
/// first), optionally feeding `stdin`.
pub fn run_cli(node: &NodeProc, args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
    let mut cmd = Command::new(cli_bin());
    cmd.arg("--address")
        .arg(format!("http://127.0.0.1:{}", node.http_port))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    clean_env(&mut cmd);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", cli_bin().display()));
    let writer = stdin.map(|data| {
        let data = data.to_vec();
        let mut pipe = child.stdin.take().expect("piped stdin");
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = pipe.write_all(&data);
        })
    });
    let output = child.wait_with_output().expect("wait for the cli");
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    output
}

/// Asserts `text` is the one JSON error shape `{"error": {"code": <one of codes>, "message": "..."}}`
/// and returns it parsed; `what` names the request in failure messages.
pub fn assert_error_body(text: &str, codes: &[&str], what: &str) -> serde_json::Value {
    let body: serde_json::Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("{what}: error body is not JSON ({e}): {text}"));
    let code = body["error"]["code"].as_str().unwrap_or_default();
    assert!(
        codes.contains(&code),
        "{what}: error code {code:?} is not one of {codes:?}: {body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: error message missing in {body}"
    );
    body
}

/// A started, ready single node `node1` in its own temp dir. Bind the pair
/// in this order: the node is dropped (killed) before the directory goes.
pub async fn single_node(extra: &[&str]) -> (tempfile::TempDir, NodeProc) {
    let dir = tempfile::Builder::new()
        .prefix("cete-it-")
        .tempdir()
        .expect("tempdir");
    let mut node = NodeProc::new("node1", dir.path(), None, extra);
    node.start();
    node.wait_ready(Duration::from_secs(30)).await;
    (dir, node)
}

/// Runs `cete-server ARGS` that is expected to stop by itself; kills it
/// (and fails) if it still runs after 30 s.
pub fn run_server_to_exit(args: &[&str], cwd: &Path) -> std::process::Output {
    let mut cmd = Command::new(server_bin());
    cmd.args(args)
        .args(["--log-level", "off"])
        .current_dir(cwd)
        .env("HOME", cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    clean_env(&mut cmd);
    wait_output(cmd.spawn().expect("spawn cete-server"), "cete-server")
}

pub fn wait_output(mut child: Child, what: &str) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!(
                "{what} did not stop within 30s; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("wait")
}
