"""A real `cete-server` for the API tests: temp dir, free ports, its log shown on failure.

The binary is $CETE_SERVER_BIN (the Makefile passes <target>/debug/cete-server), else
target/debug/cete-server under the repository.
"""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SPEC = os.path.join(REPO, "openapi.yaml")

_given_ports = set()


def server_bin():
    path = os.environ.get("CETE_SERVER_BIN") or os.path.join(REPO, "target", "debug", "cete-server")
    if not os.path.isfile(path):
        raise RuntimeError(f"{path} is missing: run `cargo build --workspace --bins` first (or set CETE_SERVER_BIN)")
    return path


def free_port():
    """A port that was free a moment ago, below the ephemeral range (as the Rust harness does),
    so an outgoing connection's source port cannot take it before the node binds it."""
    while True:
        port = random.randrange(15_000, 32_000)
        if port in _given_ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given_ports.add(port)
        return port


def wait_until(timeout, what, probe, interval=0.05):
    """Calls `probe` until it returns something truthy; raises after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout} s: {what}")
        time.sleep(interval)


class Node:
    """One single-node cluster, bootstrapped on a fresh temp dir. Use as a context manager."""

    def __init__(self, *extra_args, name="node1"):
        self.name = name
        self.extra_args = list(extra_args)
        self.tmp = tempfile.TemporaryDirectory(prefix="cete-api-")
        self.log_path = os.path.join(self.tmp.name, f"{name}.log")
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.raft_port = free_port()
        self.proc = None

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.http_port}"

    def url(self, path):
        return self.base_url + path

    def start(self):
        args = [
            server_bin(),
            f"--id={self.name}",
            f"--raft-address=127.0.0.1:{self.raft_port}",
            f"--grpc-address=127.0.0.1:{self.grpc_port}",
            f"--http-address=127.0.0.1:{self.http_port}",
            f"--data-directory={os.path.join(self.tmp.name, self.name)}",
            "--log-level=info",
            f"--log-file={self.log_path}",
            *self.extra_args,
        ]
        # The test's own CETE_* settings must not reach the server.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CETE_") and k != "RUST_LOG"}
        env["HOME"] = self.tmp.name
        self.stderr = open(self.log_path + ".stderr", "ab")
        self.proc = subprocess.Popen(
            args, cwd=self.tmp.name, env=env, stdin=subprocess.DEVNULL, stdout=self.stderr, stderr=self.stderr
        )
        wait_until(30, f"{self.name} is ready at {self.base_url}", self._ready)
        return self

    def _ready(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"cete-server exited with {self.proc.returncode}:\n{self.logs()}")
        try:
            with urllib.request.urlopen(self.url("/v1/readiness_check"), timeout=2) as r:
                return r.status == 200 and json.load(r).get("ready") is True
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def logs(self, lines=60):
        out = []
        for path in (self.log_path, self.log_path + ".stderr"):
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    out.append(f"--- {path} (last {lines} lines)\n" + "".join(f.readlines()[-lines:]))
            except OSError as e:
                out.append(f"--- {path}: {e}")
        return "\n".join(out)

    def stop(self, failed=False):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                failed = True
        if failed:
            print(self.logs(), file=sys.stderr)
        if self.proc is not None:
            self.stderr.close()
            self.proc = None
        self.tmp.cleanup()

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop(failed=True)
            raise

    def __exit__(self, exc_type, exc, tb):
        self.stop(failed=exc_type is not None)
        return False


class NodeTestCase:
    """Mixin for unittest.TestCase: one node for the class (`node_args` are its extra flags);
    the node's log is printed when one of the class's tests fails."""

    node_args = ()

    @classmethod
    def setUpClass(cls):
        cls.node = Node(*cls.node_args).__enter__()
        cls._failed = False

    @classmethod
    def tearDownClass(cls):
        cls.node.stop(failed=cls._failed)

    def run(self, result=None):
        before = (len(result.failures), len(result.errors)) if result is not None else None
        outcome = super().run(result)
        if result is not None and (len(result.failures), len(result.errors)) != before:
            type(self)._failed = True
        return outcome
