//! The original Cete README, run command by command as a newcomer types it.
//!
//! `original-cete-README.md` beside this file is mosuka/cete's README (Apache-2.0), unchanged.
//! Each `$ ` command in it either works as printed, with this repository's binaries as
//! `./bin/cete`, or fails with one line that says what to type instead: the test checks which,
//! then runs what that line says. The few that cannot run here (the Go checkout, Docker Hub)
//! are listed with the reason. At the end, the commands run or listed must be exactly the
//! file's, so a command cannot be left out silently.
//!
//! The commands use the original's fixed ports (7000-7002, 8000-8002, 9000-9002) and data
//! directories (/tmp/cete/...). So the commands run in network and mount namespaces of their
//! own (`unshare`): there those ports are free and /tmp/cete is an empty tmpfs, whatever else
//! runs on the machine, and nothing is left behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness;

/// The README, as the original project has it.
const README: &str = include_str!("original-cete-README.md");

/// Marks the inner run, which must happen inside the namespaces.
const INNER: &str = "CETE_ORIGINAL_README_INNER";

/// The `$ ` commands of the README's bash blocks, joined over continuation lines (`\`) and
/// over quoted arguments that span lines, as the shell reads them.
fn readme_commands(readme: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_bash = false;
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if line.starts_with("```") {
            in_bash = !in_bash && line.trim() == "```bash";
            continue;
        }
        let Some(first) = line.strip_prefix("$ ").filter(|_| in_bash) else {
            continue;
        };
        let mut command = first.to_string();
        while command.ends_with('\\') || command.matches('\'').count() % 2 == 1 {
            match lines.next() {
                Some(next) => {
                    command.push('\n');
                    command.push_str(next);
                }
                None => break,
            }
        }
        commands.push(command);
    }
    commands
}

#[test]
fn the_command_list_is_read_from_the_readme() {
    let commands = readme_commands(README);
    assert_eq!(commands.len(), 43, "{commands:#?}");
    assert_eq!(commands[0], "mkdir -p ${GOPATH}/src/github.com/mosuka");
    assert!(commands[25].starts_with("curl -X PUT 'http://127.0.0.1:8000/v1/cluster/node2'"));
    assert!(commands[25].ends_with("}\n'"), "{}", commands[25]);
    assert!(commands[35].starts_with("docker run --rm --name cete-node1 \\\n"));
    assert!(commands[35].ends_with("--data-dir=/tmp/cete/node1"));
}

/// How the TLS part of the test names node1 to the CLI: the certificate it pins, and the
/// name the certificate holds.
const TLS_NODE1: &str = "https://localhost:8000 --cert-file=./etc/cete-cert.pem";

/// Runs [`inner`] in fresh network and mount namespaces: as root, or else as the user's own
/// root in a user namespace.
#[test]
fn original_readme_commands_work_or_say_what_to_type() {
    let exe = std::env::current_exe().expect("current_exe");
    // The mount point of the namespace's tmpfs; outside, an empty directory at most.
    let tmp_cete = Path::new("/tmp/cete");
    let created = !tmp_cete.exists();
    std::fs::create_dir_all(tmp_cete).expect("mkdir /tmp/cete");
    let ways: [&[&str]; 2] = [
        &["--net", "--mount"],
        &["--user", "--map-root-user", "--net", "--mount"],
    ];
    let way = ways.into_iter().find(|way| {
        Command::new("unshare")
            .args(*way)
            .arg("true")
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    let Some(way) = way else {
        panic!(
            "`unshare --net --mount` failed (as root) and so did `unshare --user --map-root-user \
             --net --mount`: this test runs the original README's fixed ports in a namespace \
             of its own; run it as root or enable user namespaces"
        );
    };
    let status = Command::new("unshare")
        .args(way)
        .arg("--")
        .arg(&exe)
        .args([
            "--ignored",
            "--exact",
            "original_readme::inner",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INNER, "1")
        .status()
        .expect("run the inner test under unshare");
    if created {
        let _ = std::fs::remove_dir(tmp_cete);
    }
    assert!(
        status.success(),
        "the original README's commands failed (output above)"
    );
}

/// The README's commands themselves; only meaningful inside the namespaces, where
/// [`original_readme_commands_work_or_say_what_to_type`] runs it.
#[test]
#[ignore = "run by original_readme_commands_work_or_say_what_to_type, in namespaces of its own"]
fn inner() {
    assert!(
        std::env::var_os(INNER).is_some(),
        "run original_readme_commands_work_or_say_what_to_type instead: it runs this test in \
         network and mount namespaces of its own"
    );
    namespace_setup();
    let mut r = Readme::new();

    // Building Cete: the Go checkout does not apply; make does.
    for cmd in [
        "mkdir -p ${GOPATH}/src/github.com/mosuka",
        "cd ${GOPATH}/src/github.com/mosuka",
        "git clone https://github.com/mosuka/cete.git",
        "cd cete",
    ] {
        r.skip(
            cmd,
            "the Go original's checkout: this is a clone of this repository",
        );
    }
    r.skip(
        "make build",
        "builds release binaries (RocksDB once more, in release); ./bin here holds the debug \
         build of the same sources, which `make test` has just built",
    );
    r.run_in_repo("make GOOS=darwin build")
        .refused(&["GOOS=darwin", "`make build`"]);
    let ls = r.run("ls ./bin").ok();
    assert!(ls.stdout.lines().any(|l| l == "cete"), "{ls}");
    r.skip("make test", "this test runs inside `make test`");
    r.skip(
        "make GOOS=linux dist",
        "builds release binaries and a tarball; GOOS=linux names this machine, so it is `make dist`",
    );
    r.run_in_repo("make GOOS=darwin dist")
        .refused(&["GOOS=darwin", "`make dist`"]);

    // One node.
    r.start("./bin/cete start --id=node1 --raft-address=:7000 --grpc-address=:9000 --http-address=:8000 --data-directory=/tmp/cete/node1");
    r.wait_voters(":8000", 1);
    for cmd in [
        "./bin/cete node | jq .",
        "curl -X GET http://localhost:8000/v1/node | jq .",
    ] {
        let node = r.run(cmd).ok().json();
        let node = &node["node"];
        assert_eq!(node["state"], "Leader", "{node}");
        assert_eq!(node["bind_addr"], ":7000", "{node}");
        assert_eq!(node["metadata"]["grpc_addr"], ":9000", "{node}");
        assert_eq!(node["metadata"]["http_addr"], ":8000", "{node}");
    }
    r.run("./bin/cete set 1 value1").ok().revision();
    r.run("curl -X PUT 'http://127.0.0.1:8000/v1/data/1' --data-binary value1")
        .ok()
        .revision();
    // A placeholder path: curl itself warns that it cannot read it (and sends an empty body);
    // with a real file the same command stores the photo with its type.
    let photo = r.run(
        r#"curl -X PUT 'http://127.0.0.1:8000/v1/data/2' -H "Content-Type: image/jpeg" --data-binary @/path/to/photo.jpg"#,
    );
    assert!(
        photo.stderr.contains("Couldn't read data from file"),
        "{photo}"
    );
    std::fs::write(
        r.dir.join("photo.jpg"),
        b"\xff\xd8\xff\xe0 not really a photo",
    )
    .unwrap();
    r.helper(r#"curl -X PUT 'http://127.0.0.1:8000/v1/data/2' -H "Content-Type: image/jpeg" --data-binary @photo.jpg"#)
        .ok()
        .revision();
    let head = r
        .helper("curl -sI http://127.0.0.1:8000/v1/data/2")
        .ok()
        .stdout;
    assert!(head.contains("content-type: image/jpeg"), "{head}");
    assert_eq!(r.run("./bin/cete get 1").ok().stdout, "value1");
    assert_eq!(
        r.run("curl -X GET 'http://127.0.0.1:8000/v1/data/1'")
            .ok()
            .stdout,
        "value1"
    );
    r.run("./bin/cete delete 1").ok().revision();
    // The README offers curl as the alternative: put the key back for it.
    r.helper("./bin/cete set 1 value1").ok();
    r.run("curl -X DELETE 'http://127.0.0.1:8000/v1/data/1'")
        .ok()
        .revision();

    // Three nodes.
    r.start("./bin/cete start --id=node2 --raft-address=:7001 --grpc-address=:9001 --http-address=:8001 --data-directory=/tmp/cete/node2 --peer-grpc-address=:9000");
    r.start("./bin/cete start --id=node3 --raft-address=:7002 --grpc-address=:9002 --http-address=:8002 --data-directory=/tmp/cete/node3 --peer-grpc-address=:9000");
    r.wait_voters(":8000", 3);
    for cmd in [
        "./bin/cete cluster | jq .",
        "curl -X GET 'http://127.0.0.1:8000/v1/cluster' | jq .",
    ] {
        let cluster = r.run(cmd).ok().json();
        let cluster = &cluster["cluster"];
        assert_eq!(cluster["leader"], "node1", "{cluster}");
        for (name, port) in [("node1", 0), ("node2", 1), ("node3", 2)] {
            let node = &cluster["nodes"][name];
            assert_eq!(node["bind_addr"], format!(":700{port}"), "{cluster}");
            assert_eq!(node["metadata"]["grpc_addr"], format!(":900{port}"));
            assert_eq!(node["metadata"]["http_addr"], format!(":800{port}"));
        }
    }
    // The original's gRPC flag: refused, naming the HTTP address of that very node.
    r.run("./bin/cete join --grpc-addr=:9000 node2 127.0.0.1:9001")
        .refused(&["speaks REST", "use --address :8000"]);
    // The original's REST join, in the README's order: node2 joined at start, and the same
    // join again is a no-op.
    let join = r.run(
        "curl -X PUT 'http://127.0.0.1:8000/v1/cluster/node2' --data-binary '\n{\n  \"bind_addr\": \":7001\",\n  \"metadata\": {\n    \"grpc_addr\": \":9001\",\n    \"http_addr\": \":8001\"\n  }\n}\n'",
    );
    assert_eq!(join.ok().stdout.trim(), "{}");
    r.wait_voters(":8000", 3);
    r.wait_state(":8001", "Follower");
    r.run("./bin/cete leave --grpc-addr=:9000 node2")
        .refused(&["speaks REST", "use --address :8000"]);
    r.helper("./bin/cete --address :8000 leave node2").ok();
    r.wait_state(":8001", "Removed");
    // Removed, still running: a join adds it back (it drops its stale state and catches up
    // from the leader), so that the README's REST leave has a member to remove.
    assert_eq!(
        r.helper("./bin/cete --address :8000 join node2 127.0.0.1:9001")
            .ok()
            .stdout
            .trim(),
        "{}"
    );
    r.wait_voters(":8000", 3);
    r.wait_state(":8001", "Follower");
    r.run("curl -X DELETE 'http://127.0.0.1:8000/v1/cluster/node2'")
        .ok();
    r.wait_state(":8001", "Removed");
    // And the CLI adds it back too.
    assert_eq!(
        r.helper("./bin/cete join node2 127.0.0.1:9001")
            .ok()
            .stdout
            .trim(),
        "{}"
    );
    r.wait_voters(":8000", 3);
    r.wait_state(":8001", "Follower");
    r.run("./bin/cete set --grpc-addr=:9000 1 value1")
        .refused(&["speaks REST", "use --address :8000"]);
    r.helper("./bin/cete --address :8000 set 1 value1").ok();
    for (grpc, http) in [(":9000", ":8000"), (":9001", ":8001"), (":9002", ":8002")] {
        r.run(&format!("./bin/cete get --grpc-addr={grpc} 1"))
            .refused(&["speaks REST", &format!("use --address {http}")]);
        assert_eq!(
            r.helper(&format!("./bin/cete --address {http} get 1"))
                .ok()
                .stdout,
            "value1"
        );
    }

    // Docker: no image of this Cete is published, and none is built here.
    r.skip(
        "make docker-build",
        "builds the image with docker (the image test builds it with podman)",
    );
    for _ in 0..2 {
        r.skip(
            "docker pull mosuka/cete:latest",
            "pulls the Go original's image; no image of this Cete is published",
        );
    }
    r.skip(
        "docker run --rm --name cete-node1 \\\n    -p 7000:7000 \\\n    -p 8000:8000 \\\n    -p 9000:9000 \\\n    mosuka/cete:latest cete start \\\n      --id=node1 \\\n      --bind-addr=:7000 \\\n      --grpc-addr=:9000 \\\n      --http-addr=:8000 \\\n      --data-dir=/tmp/cete/node1",
        "runs the Go original's image (the image test runs this Cete's the same way)",
    );
    r.skip(
        "docker exec -it cete-node1 cete node --grpc-addr=:9000",
        "needs that container; its `cete node --grpc-addr=:9000` is refused like the gets above",
    );
    r.stop_all();

    // TLS, with the original's own certificate recipe.
    std::fs::create_dir_all(r.dir.join("etc")).unwrap();
    r.run("openssl req -x509 -nodes -newkey rsa:4096 -keyout ./etc/cete-key.pem -out ./etc/cete-cert.pem -days 365 -subj '/CN=localhost'")
        .ok();
    // The original's start commands name other files than its recipe writes.
    for cmd in [
        "./bin/cete start --id=node1 --bind-addr=:7000 --grpc-addr=:9000 --http-addr=:8000 --data-dir=/tmp/cete/node1 --peer-grpc-addr=:9000 --cert-file=./etc/cert.pem --key-file=./etc/key.pem --cert-hostname=localhost",
        "./bin/cete start --id=node2 --bind-addr=:7001 --grpc-addr=:9001 --http-addr=:8001 --data-dir=/tmp/cete/node2 --peer-grpc-addr=:9000 --cert-file=./etc/cert.pem --key-file=./etc/key.pem --cert-hostname=localhost",
        "./bin/cete start --id=node3 --bind-addr=:7002 --grpc-addr=:9002 --http-addr=:8002 --data-dir=/tmp/cete/node3 --peer-grpc-addr=:9000 --cert-file=./etc/cert.pem --key-file=./etc/key.pem --cert-hostname=localhost",
    ] {
        r.run(cmd)
            .refused(&["cannot read --certificate-file ./etc/cert.pem"]);
    }
    // With the files the recipe wrote, the nodes start: each pins that self-signed
    // certificate, since it is its own trust root.
    for node in 1..=3 {
        let port = node - 1;
        r.background(&format!(
            "./bin/cete start --id=node{node} --bind-addr=:700{port} --grpc-addr=:900{port} --http-addr=:800{port} --data-dir=/tmp/cete/node{node} --peer-grpc-addr=:9000 --cert-file=./etc/cete-cert.pem --key-file=./etc/cete-key.pem --cert-hostname=localhost"
        ));
        if node == 1 {
            r.wait_state(TLS_NODE1, "Leader");
        }
    }
    r.wait_voters(TLS_NODE1, 3);
    let node = r
        .helper("curl -s --cacert ./etc/cete-cert.pem https://localhost:8002/v1/node")
        .ok();
    assert!(node.stdout.contains("\"Follower\""), "{node}");
    // ./cert.pem does not exist either: the refusal cannot ask a node, and says what to use.
    let cluster =
        r.run("./bin/cete cluster --grpc-addr=:9000 --cert-file=./cert.pem --cert-hostname=localhost | jq .");
    cluster.refused_line(&["speaks REST", "--address"]);
    let curl = r.run("curl -X GET https://localhost:8000/v1/cluster --cacert ./cert.pem | jq .");
    assert!(curl.stderr.contains("curl: ("), "{curl}");

    r.covers(&readme_commands(README));
}

/// The namespace's loopback is down and /tmp/cete is the host's: bring lo up, and put a
/// tmpfs of this namespace's own on /tmp/cete.
#[allow(unsafe_code)]
fn namespace_setup() {
    // SAFETY: plain system calls on values that live across them; results are checked.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let mut request: libc::ifreq = std::mem::zeroed();
        for (to, from) in request.ifr_name.iter_mut().zip(b"lo") {
            *to = *from as libc::c_char;
        }
        request.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        let rc = libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &request);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        assert_eq!(rc, 0, "bringing up lo in the namespace: {err}");
        let rc = libc::mount(
            c"tmpfs".as_ptr(),
            c"/tmp/cete".as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        );
        assert_eq!(
            rc,
            0,
            "mounting a tmpfs on /tmp/cete in the namespace: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// What one command did.
struct Ran {
    command: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "$ {}\nexit: {:?}\nstdout:\n{}\nstderr:\n{}",
            self.command, self.code, self.stdout, self.stderr
        )
    }
}

impl Ran {
    fn ok(self) -> Ran {
        assert_eq!(self.code, Some(0), "expected success:\n{self}");
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{self}"))
    }

    fn revision(&self) -> u64 {
        self.json()["revision"]
            .as_u64()
            .unwrap_or_else(|| panic!("no revision:\n{self}"))
    }

    /// Failed, with one line on stderr that holds each of `says`.
    fn refused(&self, says: &[&str]) {
        assert!(
            self.code.is_some_and(|c| c != 0),
            "expected a refusal:\n{self}"
        );
        self.refused_line(says);
    }

    /// One line on stderr, besides a server's log records, that holds each of `says`, and
    /// nothing on stdout (alone for pipelines, whose exit code is the last command's).
    fn refused_line(&self, says: &[&str]) {
        // A server's log records (`[time LEVEL target] ...`) go to stderr as well.
        let is_log = |l: &str| l.starts_with("[20") && l.contains("] ");
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.is_empty() && !is_log(l))
            .collect();
        assert_eq!(lines.len(), 1, "expected one line on stderr:\n{self}");
        for said in says {
            assert!(lines[0].contains(said), "expected {said:?} in:\n{self}");
        }
        assert!(self.stdout.trim().is_empty(), "expected no output:\n{self}");
    }
}

/// The sandbox the commands run in (`./bin`, `./etc`), the servers they started, and which
/// README commands were run or skipped.
struct Readme {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
    servers: Vec<(String, Child, PathBuf)>,
    covered: Vec<String>,
}

impl Readme {
    fn new() -> Readme {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        std::fs::create_dir(dir.join("bin")).unwrap();
        for (name, path) in [
            ("cete", harness::cli_bin()),
            ("cete-server", harness::server_bin()),
        ] {
            std::os::unix::fs::symlink(path, dir.join("bin").join(name)).unwrap();
        }
        Readme {
            dir,
            _tmp: tmp,
            servers: Vec::new(),
            covered: Vec::new(),
        }
    }

    fn shell(&self, command: &str, cwd: &Path) -> Command {
        let mut shell = Command::new("bash");
        shell
            .arg("-c")
            .arg(command)
            .current_dir(cwd)
            // No ~/cete.yaml of the user's.
            .env("HOME", &self.dir)
            .env_remove("CETE_ADDRESS")
            // Run as a user types them, not as a child of `make test`'s make.
            .env_remove("MAKEFLAGS")
            .env_remove("MFLAGS")
            .env_remove("MAKELEVEL")
            .stdin(Stdio::null());
        shell
    }

    fn exec(&self, command: &str, cwd: &Path) -> Ran {
        let out_path = self.dir.join("out.txt");
        let err_path = self.dir.join("err.txt");
        let mut child = self
            .shell(command, cwd)
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .expect("spawn bash");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("`{command}` did not finish within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Ran {
            command: command.to_string(),
            code: status.code(),
            stdout: std::fs::read_to_string(out_path).unwrap(),
            stderr: std::fs::read_to_string(err_path).unwrap(),
        }
    }

    /// A README command, verbatim, in the sandbox.
    fn run(&mut self, command: &str) -> Ran {
        self.covered.push(command.to_string());
        self.exec(command, &self.dir.clone())
    }

    /// A README command, verbatim, in the repository (the make targets).
    fn run_in_repo(&mut self, command: &str) -> Ran {
        self.covered.push(command.to_string());
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        self.exec(command, &repo)
    }

    /// A command that is not the README's: what a refusal said to type, or a step between
    /// two README commands.
    fn helper(&self, command: &str) -> Ran {
        self.exec(command, &self.dir.clone())
    }

    /// A README command that is not run here, and why.
    fn skip(&mut self, command: &str, why: &str) {
        println!("not run: `{command}`: {why}");
        self.covered.push(command.to_string());
    }

    /// Starts a README `cete start` command in the background, as in a terminal of its own.
    fn start(&mut self, command: &str) {
        self.covered.push(command.to_string());
        self.background(command);
    }

    /// Starts a server command that is not the README's in the background.
    fn background(&mut self, command: &str) {
        let log = self.dir.join(format!("server-{}.log", self.servers.len()));
        let file = std::fs::File::create(&log).unwrap();
        // `cete start` execs cete-server, so the child is the server itself.
        let child = self
            .shell(&format!("exec {command}"), &self.dir.clone())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("spawn bash");
        self.servers.push((command.to_string(), child, log));
    }

    /// Waits until the node at `http` sees `n` voters and a leader.
    fn wait_voters(&self, http: &str, n: usize) {
        self.wait(
            &format!("{n} voters and a leader, seen from {http}"),
            || {
                let ran = self.exec(
                    &format!("./bin/cete --address {http} --timeout 2 cluster"),
                    &self.dir,
                );
                let cluster: Value = serde_json::from_str(&ran.stdout).ok()?;
                let cluster = &cluster["cluster"];
                let voters = cluster["nodes"]
                    .as_object()?
                    .values()
                    .filter(|n| n["voter"] == true)
                    .count();
                (voters == n && cluster["leader"].as_str().is_some_and(|l| !l.is_empty()))
                    .then_some(())
            },
        );
    }

    /// Waits until the node at `http` reports `state`.
    fn wait_state(&self, http: &str, state: &str) {
        self.wait(&format!("state {state} at {http}"), || {
            let ran = self.exec(
                &format!("./bin/cete --address {http} --timeout 2 node"),
                &self.dir,
            );
            let node: Value = serde_json::from_str(&ran.stdout).ok()?;
            (node["node"]["state"] == state).then_some(())
        });
    }

    fn wait(&self, what: &str, mut done: impl FnMut() -> Option<()>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while done().is_none() {
            assert!(Instant::now() < deadline, "timed out after 30 s: {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops every server started so far (SIGTERM, then SIGKILL) and drops their data.
    fn stop_all(&mut self) {
        for (_, mut child, _) in self.servers.drain(..) {
            stop(&mut child);
        }
        for node in ["node1", "node2", "node3"] {
            let _ = std::fs::remove_dir_all(Path::new("/tmp/cete").join(node));
        }
    }

    /// The commands run or skipped must be the README's, in its order.
    fn covers(&self, commands: &[String]) {
        assert_eq!(
            self.covered, commands,
            "the commands run or skipped differ from the README's"
        );
    }
}

fn stop(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        #[allow(unsafe_code)]
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
    }
    let _ = child.wait();
}

impl Drop for Readme {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        for (command, mut child, log) in self.servers.drain(..) {
            stop(&mut child);
            if failed {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(60).collect();
                eprintln!("--- $ {command}: last lines of its output");
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}
