#!/usr/bin/env python3
"""Cete against etcd on this machine, under the same load generator.

Installs Debian's etcd 3.4 if it is missing, builds Cete's release binaries,
then for a 1-node and a 3-node cluster of each (on 127.0.0.1, every member
with its own data directory, etcd at its defaults, both syncing to disk)
drives them with `cete bench` (Cete's REST API, or etcd's v3 JSON gateway
with `--target etcd`): same clients, value size, key space and duration;
writes to the leader, reads spread over all members. It samples each server
process's CPU time and peak RSS per row, and prints one markdown table with
the Cete/etcd ratios, also written to benchmarks/results/<date>.md with the
machine described.

    make bench-compare                          # the full run (~10 s per row)
    benchmarks/compare.py --smoke               # 2 s rows, short sweep, 20,000-key preload
    BENCH_DURATION=5 benchmarks/compare.py      # 5 s rows

Run it on a quiet machine: a compile job beside it changes the figures
several-fold. Every process it starts is stopped when it exits, also on
failure or Ctrl-C.
"""

import argparse
import atexit
import base64
import ctypes
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Debian bookworm's etcd; any 3.4.x on PATH is accepted.
ETCD_DEB_VERSION = "3.4.23-4+b4"
CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT = 60.0

KEYS = 10_000  # key space of the ordinary rows (as in issue 9)
FULL_SWEEP = [1, 4, 16, 64, 256]
SMOKE_SWEEP = [1, 64]


def log(msg):
    print(f"[compare {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Failure(Exception):
    """A step failed; the message says which and why."""


# ---------------------------------------------------------------- processes

_children = []  # every Popen we started, stopped by cleanup()


def _die_with_parent():
    # Runs in the child before exec: it gets SIGKILL if this script dies
    # without a chance to clean up (kill -9), so no server outlives a run.
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(argv, logfile, env=None):
    out = open(logfile, "ab")
    p = subprocess.Popen(
        argv,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    out.close()
    _children.append(p)
    return p


def stop(p, grace=10.0):
    """SIGTERM, then SIGKILL after `grace` seconds; only our own process (group)."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
    if p in _children:
        _children.remove(p)


def cleanup():
    for p in list(_children):
        stop(p, grace=5.0)


def _on_signal(signum, _frame):
    raise SystemExit(f"interrupted by signal {signum}")


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def run(argv, **kw):
    return subprocess.run(argv, check=True, text=True, capture_output=True, **kw).stdout


# ---------------------------------------------------------------- /proc sampling


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        # The command name may hold spaces: fields start after its ')'.
        fields = f.read().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
    return (utime + stime) / CLK_TCK


def steal_seconds():
    # The host's CPU time given to other guests while this VM wanted it (proc(5), /proc/stat
    # "cpu" line, 8th value): on a shared VM it explains rows that come out slow.
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return int(fields[8]) / CLK_TCK if len(fields) > 8 else 0.0


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise Failure(f"no {field} in /proc/{pid}/status")


def reset_peak_rss(pid):
    # "5" resets VmHWM to the current RSS (proc(5), clear_refs): peaks per row.
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- HTTP


def http(method, url, body=None, timeout=10.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        raw = resp.read()
        return resp.status, (json.loads(raw) if raw else None)


def wait_until(what, check, timeout=START_TIMEOUT, procs=()):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise Failure(f"{what}: a server exited with status {p.returncode}")
        try:
            if check():
                return
        except (OSError, ValueError, KeyError, urllib.error.URLError, subprocess.CalledProcessError) as e:
            last = e
        time.sleep(0.1)
    raise Failure(f"{what}: not within {timeout:.0f} s (last error: {last})")


def b64(s):
    return base64.b64encode(s.encode()).decode()


# ---------------------------------------------------------------- clusters


class Cluster:
    """N members of one system on 127.0.0.1, each with its own data directory."""

    name = ""

    def __init__(self, root, n):
        self.root = Path(root) / f"{self.name}-{n}"
        self.root.mkdir(parents=True)
        self.n = n
        self.procs = []
        self.urls = []  # client URL of each member

    @property
    def pids(self):
        return [p.pid for p in self.procs]

    def stop(self):
        for p in self.procs:
            stop(p)
        self.procs = []

    def logs_tail(self, lines=20):
        out = []
        for f in sorted(self.root.glob("*.log")):
            text = f.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {f}\n" + "\n".join(text))
        return "\n".join(out)

    def between_rows(self):
        """Called before each row."""


class Etcd(Cluster):
    name = "etcd"

    def start(self, etcd_bin):
        ports = free_ports(2 * self.n)
        client = ports[: self.n]
        peer = ports[self.n :]
        initial = ",".join(f"e{i}=http://127.0.0.1:{peer[i]}" for i in range(self.n))
        # etcd reads ETCD_* variables as flags: keep its defaults.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        for i in range(self.n):
            url = f"http://127.0.0.1:{client[i]}"
            self.urls.append(url)
            argv = [
                etcd_bin,
                f"--name=e{i}",
                f"--data-dir={self.root / f'e{i}'}",
                f"--listen-client-urls={url}",
                f"--advertise-client-urls={url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer[i]}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer[i]}",
                f"--initial-cluster={initial}",
                "--initial-cluster-state=new",
                "--initial-cluster-token=cete-bench",
            ]
            self.procs.append(spawn(argv, self.root / f"e{i}.log", env=env))
        wait_until(f"etcd {self.n}-node leader", lambda: self.leader() is not None, procs=self.procs)
        self.compacted = 0

    def endpoint_status(self):
        out = run(["etcdctl", f"--endpoints={','.join(self.urls)}", "endpoint", "status", "-w", "json"])
        return json.loads(out)

    def leader(self):
        """Client URL of the leader, once every member agrees on one."""
        status = self.endpoint_status()
        leaders = {s["Status"]["leader"] for s in status}
        if len(status) != self.n or len(leaders) != 1 or 0 in leaders:
            return None
        (lead,) = leaders
        for s in status:
            if s["Status"]["header"]["member_id"] == lead:
                return s["Endpoint"]
        return None

    def between_rows(self):
        # etcd keeps every revision until compacted: compact to the current
        # one and defragment, so no row runs on the history of the ones before.
        _, r = http("POST", self.urls[0] + "/v3/kv/range", {"key": b64("\0")})
        rev = int(r["header"]["revision"])
        if rev > self.compacted:
            http("POST", self.urls[0] + "/v3/kv/compaction", {"revision": rev, "physical": True}, timeout=120)
            self.compacted = rev
        run(["etcdctl", f"--endpoints={','.join(self.urls)}", "--command-timeout=120s", "defrag"])

    def db_size(self):
        return max(int(s["Status"]["dbSize"]) for s in self.endpoint_status())


class Cete(Cluster):
    name = "cete"

    def start(self, server_bin):
        ports = free_ports(3 * self.n)
        self.ids = [f"node{i + 1}" for i in range(self.n)]
        grpc0 = None
        for i, node in enumerate(self.ids):
            raft, grpc, http_port = ports[3 * i : 3 * i + 3]
            url = f"http://127.0.0.1:{http_port}"
            self.urls.append(url)
            argv = [
                server_bin,
                f"--id={node}",
                f"--raft-address=127.0.0.1:{raft}",
                f"--grpc-address=127.0.0.1:{grpc}",
                f"--http-address=127.0.0.1:{http_port}",
                f"--data-directory={self.root / node}",
            ]
            if grpc0 is None:
                grpc0 = grpc
            else:
                argv.append(f"--peer-grpc-address=127.0.0.1:{grpc0}")
            env = {k: v for k, v in os.environ.items() if not k.startswith("CETE_")}
            self.procs.append(spawn(argv, self.root / f"{node}.log", env=env))
            if i == 0:
                # The others join through the first: it must lead first.
                wait_until("cete first node ready", lambda: self.ready(self.urls[0]), procs=self.procs)

        def formed():
            _, c = http("GET", self.urls[0] + "/v1/cluster")
            nodes = c["cluster"]["nodes"]
            voters = [n for n in nodes.values() if n.get("voter")]
            return len(voters) == self.n and c["cluster"]["leader"] and all(self.ready(u) for u in self.urls)

        wait_until(f"cete {self.n}-node cluster", formed, procs=self.procs)

    @staticmethod
    def ready(url):
        try:
            status, _ = http("GET", url + "/v1/readiness_check", timeout=2)
            return status == 200
        except urllib.error.HTTPError:
            return False

    def leader(self):
        _, c = http("GET", self.urls[0] + "/v1/cluster")
        lead = c["cluster"]["leader"]
        return self.urls[self.ids.index(lead)] if lead in self.ids else None


# ---------------------------------------------------------------- rows


WRITE = ["--read-ratio", "0"]
LINEARIZABLE = ["--read-ratio", "1", "--consistency", "linearizable"]
STALE = ["--read-ratio", "1", "--consistency", "stale"]


def row_set(preload_keys):
    """(label, `cete bench` flags, reads the keys) of the ordinary rows and of
    the large-store rows, in run order. Write rows need no keys loaded."""
    small = ["--keys", str(KEYS)]
    base = [
        ("write c=1", small + WRITE + ["-c", "1"], False),
        ("write c=64", small + WRITE + ["-c", "64"], False),
        # Its own keys, so the read rows after it still read 100-byte values.
        ("write 4 KiB c=64", small + WRITE + ["-c", "64", "--value-size", "4096", "--key-prefix", "bench4k/"], False),
        ("linearizable read c=64", small + LINEARIZABLE + ["-c", "64"], True),
        ("stale read c=64", small + STALE + ["-c", "64"], True),
        ("90/10 c=64 (linearizable reads)", small + ["-c", "64", "--read-ratio", "0.9", "--consistency", "linearizable"], True),
    ]
    big = ["--keys", str(preload_keys), "--key-prefix", "big/", "-c", "64"]
    after = [
        (f"write c=64, {preload_keys:,} keys", big + WRITE, False),
        (f"linearizable read c=64, {preload_keys:,} keys", big + LINEARIZABLE, True),
        (f"stale read c=64, {preload_keys:,} keys", big + STALE, True),
    ]
    return base, after


class Runner:
    def __init__(self, opts, cete_bin):
        self.opts = opts
        self.cete_bin = cete_bin

    def bench(self, cluster, target, flags, extra=(), writer=None):
        """One `cete bench` run; returns its JSON report and the client's CPU seconds."""
        writer = writer or cluster.leader()
        if writer is None:
            raise Failure(f"{cluster.name}: no leader")
        argv = [self.cete_bin, f"--address={writer}", "--timeout=30", "bench", "--json", f"--target={target}"]
        argv += list(flags) + list(extra)
        log(" ".join(argv[1:]))
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=_die_with_parent)
        _children.append(p)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out, err = p.communicate()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        _children.remove(p)
        self.client_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        if p.returncode != 0:
            raise Failure(f"cete bench exited {p.returncode}: {err.strip()}\n{cluster.logs_tail()}")
        for line in err.splitlines():
            log("  " + line)
        return json.loads(out)

    def measure(self, cluster, target, label, flags, state):
        cluster.between_rows()
        time.sleep(self.opts.settle)
        pids = cluster.pids
        for pid in pids:
            state["peak"] = max(state["peak"], status_kib(pid, "VmHWM"))
            state["hwm_reset"] &= reset_peak_rss(pid)
        cpu0 = sum(cpu_seconds(pid) for pid in pids)
        steal0 = steal_seconds()
        report = self.bench(
            cluster,
            target,
            flags,
            ["-d", str(self.opts.duration), f"--addresses={','.join(cluster.urls)}", "--no-preload"],
        )
        cpu = sum(cpu_seconds(pid) for pid in pids) - cpu0
        steal = steal_seconds() - steal0
        rss = [status_kib(pid, "VmHWM") for pid in pids]
        state["peak"] = max([state["peak"]] + rss)
        t = report["total"]
        lat = t["latency_ms"] or {}
        errors = t["errors"]
        if errors:
            log(f"  {errors} errors: {t['errors_by_kind']}")
        res = {
            "label": label,
            "nodes": cluster.n,
            "ops_per_sec": t["ops_per_sec"],
            "p50": lat.get("p50"),
            "p99": lat.get("p99"),
            "errors": errors,
            "errors_by_kind": t["errors_by_kind"],
            "cpu_s": cpu,
            "client_cpu_s": self.client_cpu,
            "steal_s": steal,
            "rss_kib": max(rss),
        }
        log(f"  {target} {label}: {res['ops_per_sec']:.0f} ops/s p50 {res['p50']} p99 {res['p99']} ms, cpu {cpu:.1f} s, steal {steal:.1f} s")
        return res

    def preload(self, cluster, target, keys, prefix, concurrency):
        t0 = time.monotonic()
        rep = self.bench(
            cluster,
            target,
            ["--preload-only", "-c", str(concurrency), "--keys", str(keys), "--key-prefix", prefix],
        )
        return rep["preloaded"], time.monotonic() - t0

    def system(self, cls, binary, n, with_sweep_and_big):
        """All rows of one system at one size; returns {label: result}, notes."""
        target = cls.name
        cluster = cls(self.opts.root, n)
        log(f"starting {target}, {n} node(s)")
        cluster.start(binary)
        state = {"peak": 0, "hwm_reset": True}
        results, notes = {}, {}
        base, after = row_set(self.opts.preload_keys)
        try:
            loaded = False
            for label, flags, reads in base:
                if reads and not loaded:
                    # Every read finds its key: write the ones the write rows missed.
                    self.preload(cluster, target, KEYS, "bench/", 64)
                    loaded = True
                results[label] = self.measure(cluster, target, label, flags, state)
            if with_sweep_and_big:
                for c in self.opts.sweep:
                    label = f"write c={c} (sweep)"
                    flags = ["--keys", str(KEYS), "--read-ratio", "0", "-c", str(c)]
                    results[label] = self.measure(cluster, target, label, flags, state)
            notes["peak_main"] = state["peak"]
            if with_sweep_and_big:
                notes["preload"] = self.preload(
                    cluster, target, self.opts.preload_keys, "big/", self.opts.preload_concurrency
                )
                # The preload wrote every key: the rows need no check.
                for label, flags, _ in after:
                    results[label] = self.measure(cluster, target, label, flags, state)
            notes["peak"] = state["peak"]
            notes["hwm_reset"] = state["hwm_reset"]
            if target == "etcd":
                notes["db_size"] = cluster.db_size()
        finally:
            cluster.stop()
        return results, notes


# ---------------------------------------------------------------- setup


def ensure_etcd():
    if shutil.which("etcd") and shutil.which("etcdctl"):
        pass
    elif os.geteuid() != 0:
        raise Failure(
            "etcd is not installed and this is not root: "
            f"run `apt-get install -y etcd-server={ETCD_DEB_VERSION} etcd-client={ETCD_DEB_VERSION}`"
        )
    else:
        log(f"installing etcd-server and etcd-client {ETCD_DEB_VERSION} (Debian)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        pkgs = [f"etcd-server={ETCD_DEB_VERSION}", f"etcd-client={ETCD_DEB_VERSION}"]
        if subprocess.run(["apt-get", "install", "-y", "--no-install-recommends"] + pkgs, env=env).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, check=True)
            subprocess.run(["apt-get", "install", "-y", "--no-install-recommends"] + pkgs, env=env, check=True)
    version = run(["etcd", "--version"]).splitlines()[0].split()[-1]
    if not version.startswith("3.4."):
        raise Failure(f"etcd {version} on PATH; this comparison is against etcd 3.4 (Debian's etcd-server)")
    return version


def release_dir():
    if os.environ.get("CARGO_TARGET_DIR"):
        target_dir = Path(os.environ["CARGO_TARGET_DIR"])
    else:
        meta = json.loads(run(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=REPO))
        target_dir = Path(meta["target_directory"])
    return target_dir / "release"


def other_servers():
    """Running etcd or cete-server processes this script did not start."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            comm = (d / "comm").read_text().strip()
        except OSError:
            continue
        if comm in ("etcd", "cete-server"):
            found.append(f"{comm} (pid {d.name})")
    return found


def machine(root, etcd_version, cete_bin):
    def first(path, key):
        try:
            for line in open(path):
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return "unknown"

    mem_kib = int(first("/proc/meminfo", "MemTotal").split()[0])
    try:
        fs = run(["findmnt", "-n", "-o", "SOURCE,FSTYPE", "-T", str(root)]).strip()
        src = fs.split()[0]
        dev = Path(src).name.rstrip("0123456789") if src.startswith("/dev/") else ""
        rot = Path(f"/sys/block/{dev}/queue/rotational")
        flag = rot.read_text().strip() if rot.exists() else ""
        kind = {"0": "non-rotational", "1": "rotational"}.get(flag, "")
        kind = f"{kind} as the kernel reports it" if kind else ""
        disk = f"{fs}{', ' + kind if kind else ''} ({root})"
    except (subprocess.CalledProcessError, FileNotFoundError, IndexError):
        disk = str(root)
    try:
        commit = run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO).strip()
        if run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO).strip():
            commit += " (with uncommitted changes)"
    except (subprocess.CalledProcessError, FileNotFoundError):
        commit = "unknown"
    return {
        "nproc": os.cpu_count(),
        "cpu": first("/proc/cpuinfo", "model name"),
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "disk": disk,
        "etcd": etcd_version,
        "cete": run([cete_bin, "version"]).strip().split()[-1],
        "commit": commit,
    }


# ---------------------------------------------------------------- output


def fmt_ops(x):
    return f"{x:,.0f}"


def fmt_ms(x):
    return "–" if x is None else f"{x:.2f}" if x < 10 else f"{x:.1f}"


def mib(kib):
    return kib / 1024


def table(order, etcd, cete, notes_e, notes_c, preload_keys):
    head = (
        "| row | nodes | etcd ops/s | etcd p50 ms | etcd p99 ms | Cete ops/s | Cete p50 ms | Cete p99 ms "
        "| Cete/etcd | etcd CPU s | Cete CPU s | etcd RSS MiB | Cete RSS MiB |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for n, label in order:
        e, c = etcd[n][label], cete[n][label]
        ratio = c["ops_per_sec"] / e["ops_per_sec"] if e["ops_per_sec"] else float("nan")
        lines.append(
            f"| {label} | {n} | {fmt_ops(e['ops_per_sec'])} | {fmt_ms(e['p50'])} | {fmt_ms(e['p99'])} "
            f"| {fmt_ops(c['ops_per_sec'])} | {fmt_ms(c['p50'])} | {fmt_ms(c['p99'])} | {ratio:.2f} "
            f"| {e['cpu_s']:.1f} | {c['cpu_s']:.1f} | {mib(e['rss_kib']):.0f} | {mib(c['rss_kib']):.0f} |"
        )
    rss_rows = [(1, "peak_main", f"{KEYS:,}-key rows"), (3, "peak_main", f"{KEYS:,}-key rows and sweep")]
    rss_rows.append((3, "peak", f"with {preload_keys:,} keys preloaded"))
    for n, key, what in rss_rows:
        e, c = mib(notes_e[n][key]), mib(notes_c[n][key])
        lines.append(
            f"| peak RSS per member, MiB ({what}) | {n} | {e:.0f} | – | – | {c:.0f} | – | – | {c / e:.2f} "
            "| – | – | – | – |"
        )
    return head + "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", default=os.environ.get("BENCH_SMOKE") == "1",
                    help="quick check of the harness: 2 s rows, sweep c=1,64, 20,000 preloaded keys (env BENCH_SMOKE=1)")
    ap.add_argument("--duration", type=float, default=None,
                    help="seconds per row (env BENCH_DURATION; default 10, 2 with --smoke)")
    ap.add_argument("--sweep", default=None, help="comma-separated client counts for the 3-node write sweep (default 1,4,16,64,256)")
    ap.add_argument("--preload-keys", type=int, default=None, help="keys preloaded for the large-store rows (default 1,000,000)")
    ap.add_argument("--preload-concurrency", type=int, default=256, help="concurrent requests of the preload (default 256)")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds of quiet before each row (default 1)")
    ap.add_argument("--data-root", default=os.environ.get("BENCH_DATA_ROOT", "/var/tmp"),
                    help="where the members' data directories go; must be a real disk, not tmpfs (default /var/tmp)")
    ap.add_argument("--out", default=None, help="results file (default benchmarks/results/<date>.md; smoke-<date>.md with --smoke); the raw figures go beside it as .json")
    ap.add_argument("--no-build", action="store_true", help="use the release binaries already built")
    ap.add_argument("--keep-data", action="store_true", help="keep the data directories and logs")
    opts = ap.parse_args()

    duration_env = os.environ.get("BENCH_DURATION")
    opts.duration = opts.duration or (float(duration_env) if duration_env else (2.0 if opts.smoke else 10.0))
    if opts.duration <= 0:
        ap.error("--duration must be positive")
    opts.sweep = [int(c) for c in opts.sweep.split(",")] if opts.sweep else (SMOKE_SWEEP if opts.smoke else FULL_SWEEP)
    if any(c < 1 for c in opts.sweep):
        ap.error("--sweep: client counts must be positive")
    if opts.preload_keys is None:
        opts.preload_keys = 20_000 if opts.smoke else 1_000_000
    if opts.preload_keys < 1:
        ap.error("--preload-keys must be positive")
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    out = Path(opts.out) if opts.out else REPO / "benchmarks" / "results" / (f"smoke-{date}.md" if opts.smoke else f"{date}.md")

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)
    atexit.register(cleanup)

    others = other_servers()
    if others:
        log("warning: other servers are running, the figures will suffer: " + ", ".join(others))
    etcd_version = ensure_etcd()
    if not opts.no_build:
        log("cargo build --release -p cete-server -p cete-cli")
        subprocess.run(["cargo", "build", "--release", "-p", "cete-server", "-p", "cete-cli"], cwd=REPO, check=True)
    release = release_dir()
    cete_bin, server_bin = str(release / "cete"), str(release / "cete-server")
    for b in (cete_bin, server_bin):
        if not os.access(b, os.X_OK):
            raise Failure(f"{b} is missing: run without --no-build")
    etcd_bin = shutil.which("etcd")

    Path(opts.data_root).mkdir(parents=True, exist_ok=True)
    opts.root = tempfile.mkdtemp(prefix="cete-bench-", dir=opts.data_root)
    fstype = run(["findmnt", "-n", "-o", "FSTYPE", "-T", opts.root]).strip()
    if fstype in ("tmpfs", "ramfs"):
        raise Failure(f"{opts.root} is on {fstype}: fsync would cost nothing; pass --data-root on a disk")
    info = machine(opts.root, etcd_version, cete_bin)
    log(f"data in {opts.root}; {opts.duration:g} s per row")

    runner = Runner(opts, cete_bin)
    started = time.monotonic()
    # A failed step keeps the data directories, with the servers' logs, to read;
    # an interrupted or finished run removes them (stopped servers first).
    keep = opts.keep_data
    try:
        etcd, cete, notes_e, notes_c = {}, {}, {}, {}
        for n in (1, 3):
            big = n == 3
            etcd[n], notes_e[n] = runner.system(Etcd, etcd_bin, n, big)
            cete[n], notes_c[n] = runner.system(Cete, server_bin, n, big)
    except Failure:
        keep = True
        raise
    finally:
        cleanup()
        if keep:
            log(f"data directories and logs kept in {opts.root}")
        else:
            shutil.rmtree(opts.root, ignore_errors=True)
    elapsed = time.monotonic() - started

    base, after = row_set(opts.preload_keys)
    order = [(1, r[0]) for r in base] + [(3, r[0]) for r in base]
    order += [(3, f"write c={c} (sweep)") for c in opts.sweep]
    order += [(3, r[0]) for r in after]
    tbl = table(order, etcd, cete, notes_e, notes_c, opts.preload_keys)
    print(tbl, end="")

    pe_n, pe_s = notes_e[3]["preload"]
    pc_n, pc_s = notes_c[3]["preload"]
    errors = [
        f"{sys_name} {n} node(s) {label}: {r['errors']} ({r['errors_by_kind']})"
        for sys_name, res in (("etcd", etcd), ("Cete", cete))
        for n in res
        for label, r in res[n].items()
        if r["errors"]
    ]
    client_max = max(r["client_cpu_s"] for res in (etcd, cete) for n in res for r in res[n].values())
    stolen = [
        f"{sys_name} {n} node(s) {label} {r['steal_s']:.1f} s"
        for sys_name, res in (("etcd", etcd), ("Cete", cete))
        for n in res
        for label, r in res[n].items()
        if r["steal_s"] >= 1.0
    ]
    doc = [
        "# Cete against etcd" + (" (SMOKE RUN: harness check only, not a result)" if opts.smoke else ""),
        "",
        f"`benchmarks/compare.py`, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{opts.duration:g} s per row, {elapsed / 60:.1f} min in all.",
        "",
        "## Machine",
        "",
        f"- CPUs: {info['nproc']} x {info['cpu']}",
        f"- memory: {info['memory']}; kernel {info['kernel']}",
        f"- disk: {info['disk']}",
        f"- etcd {info['etcd']} (Debian etcd-server, its defaults); Cete {info['cete']} at commit {info['commit']} (release build)",
        "",
        "## Results",
        "",
        tbl.rstrip("\n"),
        "",
        "## How it was measured",
        "",
        "- Cete/etcd is Cete's ops/s over etcd's (above 1: Cete is faster); in the peak RSS rows it is "
        "Cete's memory over etcd's (below 1: Cete uses less).",
        "- One load generator for both: `cete bench`, over HTTP/1.1 (Cete's REST API; etcd's v3 JSON "
        "gateway with `--target etcd`). It ran on the same cores as the servers.",
        f"- {KEYS:,} keys picked uniformly at random, 100-byte values unless the row says otherwise "
        "(4 KiB rows write their own keys). Writes go to the leader; read client i uses member i mod N.",
        "- Linearizable reads: Cete's default, etcd's default range. Stale reads: Cete "
        "`consistency=stale`, etcd `serializable: true`. 90/10 mixes 90 % linearizable reads with 10 % writes "
        "(its ops/s and percentiles are of all operations).",
        "- Before each row: etcd history compacted to the current revision and every member "
        f"defragmented; then {opts.settle:g} s of quiet. Keys the read rows need are written beforehand.",
        "- CPU s: user + system time of all members during the row (from /proc/PID/stat). RSS: largest "
        "VmHWM of a member during the row (reset at its start through /proc/PID/clear_refs"
        + ("" if all(v["hwm_reset"] for v in list(notes_e.values()) + list(notes_c.values())) else "; the reset FAILED, so these are peaks since start")
        + "). Peak RSS per member rows: the largest VmHWM of any member over all rows of that size.",
        f"- Preload for the large-store rows: {opts.preload_keys:,} keys under `big/` "
        f"(`cete bench --preload-only -c {opts.preload_concurrency}`): etcd in transactions of 128 puts "
        f"({pe_n:,} keys in {pe_s:.0f} s), Cete one PUT per key (its preload does not use /v1/txn yet) "
        f"({pc_n:,} keys in {pc_s:.0f} s). etcd's database was {notes_e[3]['db_size'] / 2**20:.0f} MiB at the end.",
        f"- The load generator itself used up to {client_max:.1f} CPU s in a row (of "
        f"{info['nproc'] * opts.duration:g} the {info['nproc']} cores have in one); every row's figures are in "
        f"`{out.with_suffix('.json').name}`.",
        "- Steal time (CPU the host gave to other guests while this VM wanted it, from /proc/stat): "
        + ("rows with 1 s or more: " + "; ".join(stolen) + "." if stolen else "under 1 s in every row."),
        "- Errors: " + ("; ".join(errors) if errors else "none."),
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(doc))
    raw = out.with_suffix(".json")
    raw.write_text(json.dumps({"machine": info, "duration_s": opts.duration, "rows": {
        "etcd": etcd, "cete": cete}, "notes": {"etcd": notes_e, "cete": notes_c}}, indent=1) + "\n")
    log(f"wrote {out} and {raw.name} ({elapsed / 60:.1f} min)")


if __name__ == "__main__":
    try:
        main()
    except Failure as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except subprocess.CalledProcessError as e:
        detail = (e.stderr or "").strip().splitlines()
        print(f"error: {' '.join(map(str, e.cmd))} exited {e.returncode}: {detail[-1] if detail else ''}", file=sys.stderr)
        sys.exit(1)
