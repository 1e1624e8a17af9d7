#!/usr/bin/env python3
"""The image test: builds the Cete image with podman and uses it as users do.

1. hadolint passes on the Dockerfile.
2. The image is built from the Dockerfile's `prebuilt` target with binaries built on this
   host (the same runtime stage as the users' multi-stage build, without compiling RocksDB
   a second time).
3. The README's "Cete on Docker" commands run as printed, with `podman` for `docker`, and
   print what the README shows. What changes, so that a run cannot collide with anything
   else on the machine: container and network names get a suffix, host ports become free
   ports on 127.0.0.1, and the image is the one built here. Output is compared with
   numbers (terms, indexes, revisions) masked.
4. Three containers on a podman network, started as the Helm chart's StatefulSet starts its
   pods: the container spec (args, environment) is taken from `helm template`, each
   container gets its pod's DNS name as a network alias, so the addresses are used
   verbatim. Writes through a follower, reads from all, stops the leader (SIGTERM, within
   a few seconds), sees the others elect a leader and keep the data, restarts it and sees
   it rejoin and catch up.

Every wait polls a condition with a deadline. Containers, networks and the image this test
creates are removed at the end, also when it fails or is interrupted.

Usage: tests/image/test_image.py --bin-dir DIR   (DIR holds cete and cete-server)
"""

import argparse
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "cete"
README_IMAGE = "cete:0.1.0"
STOP_LIMIT_S = 5.0  # SIGTERM must stop a node well within the chart's 30 s grace period
START = time.monotonic()


class Failure(Exception):
    pass


def log(msg):
    print(f"[image {time.monotonic() - START:6.1f}s] {msg}", flush=True)


def run(cmd, *, check=True, timeout=120, input=None):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
    except subprocess.TimeoutExpired:
        raise Failure(f"timed out after {timeout} s: {shlex.join(cmd)}")
    if check and p.returncode != 0:
        raise Failure(f"exit {p.returncode}: {shlex.join(cmd)}\n{p.stdout}{p.stderr}")
    return p


def podman(*args, **kw):
    return run(["podman", *args], **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port, method, path, body=None):
    """One request to 127.0.0.1:port; returns (status, body bytes). Redirects are not followed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=body)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def http_json(port, path):
    status, body = request(port, "GET", path)
    if status != 200:
        raise Failure(f"GET {path} on :{port}: {status} {body[:200]!r}")
    return json.loads(body)


def wait_for(what, fn, timeout=30):
    """Polls fn until it returns something truthy; fails after timeout with the last error."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            got = fn()
            if got:
                return got
            last = f"not yet: {got!r}"
        except (OSError, Failure, ValueError, KeyError, http.client.HTTPException) as e:
            last = e
        if time.monotonic() > deadline:
            raise Failure(f"{what}: not within {timeout} s (last: {last})")
        time.sleep(0.2)


class Podman:
    """What this test creates, removed in reverse order by cleanup()."""

    def __init__(self, tag):
        self.suffix = f"-it{os.getpid()}"
        self.tag = tag
        self.containers, self.networks, self.images = [], [], []

    def logs(self):
        for c in self.containers:
            if podman("container", "exists", c, check=False).returncode != 0:
                continue
            p = podman("logs", "--tail", "60", c, check=False)
            print(f"--- podman logs --tail 60 {c}\n{p.stdout}{p.stderr}", file=sys.stderr)

    def cleanup(self):
        if self.containers:
            podman("rm", "-f", "-i", "-v", "-t", "0", *self.containers, check=False)
        for n in self.networks:
            podman("network", "rm", "-f", n, check=False)
        for i in self.images:
            podman("rmi", "-f", "-i", i, check=False)
        left = [c for c in self.containers if podman("container", "exists", c, check=False).returncode == 0]
        if left:
            print(f"image test: could not remove containers {left}", file=sys.stderr)


def stop_timed(name):
    """`podman stop` (SIGTERM, SIGKILL after 10 s): the node must exit cleanly within STOP_LIMIT_S."""
    t = time.monotonic()
    out = podman("stop", "-t", "10", name, timeout=30).stdout
    took = time.monotonic() - t
    code = podman("inspect", "-f", "{{.State.ExitCode}}", name, check=False).stdout.strip()
    if took > STOP_LIMIT_S:
        raise Failure(f"podman stop {name} took {took:.1f} s (SIGTERM should stop it within {STOP_LIMIT_S} s)")
    if code not in ("0", ""):
        raise Failure(f"{name} exited with {code} after SIGTERM, expected 0")
    return took, out


# --- 1, 2: lint and build ------------------------------------------------------------
def lint():
    p = run(["hadolint", "--config", str(ROOT / ".hadolint.yaml"), str(ROOT / "Dockerfile")], check=False)
    if p.returncode != 0:
        raise Failure(f"hadolint found problems in the Dockerfile:\n{p.stdout}{p.stderr}")
    log("hadolint: Dockerfile clean")


def build(pm, bin_dir):
    ctx = Path(tempfile.mkdtemp(prefix="cete-image-"))
    try:
        (ctx / "scripts").mkdir()
        (ctx / "prebuilt").mkdir()
        shutil.copy(ROOT / "Dockerfile", ctx / "Dockerfile")
        shutil.copy(ROOT / "scripts" / "docker-entrypoint.sh", ctx / "scripts" / "docker-entrypoint.sh")
        for b in ("cete", "cete-server"):
            src = Path(bin_dir) / b
            if not src.is_file():
                raise Failure(f"{src} does not exist: build the binaries first (cargo build --workspace --bins)")
            # Debug info is most of a debug binary; the image does not need it.
            if shutil.which("strip"):
                run(["strip", "--strip-debug", "-o", str(ctx / "prebuilt" / b), str(src)])
            else:
                shutil.copy(src, ctx / "prebuilt" / b)
        t = time.monotonic()
        pm.images.append(pm.tag)
        podman("build", "--pull=never", "--target", "prebuilt", "-t", pm.tag, str(ctx), timeout=600)
        size = podman("image", "inspect", "-f", "{{.Size}}", pm.tag).stdout.strip()
        log(f"built {pm.tag} (target prebuilt) in {time.monotonic() - t:.1f} s, {int(size) // 2**20} MiB")
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    cfg = json.loads(podman("image", "inspect", "-f", "{{json .Config}}", pm.tag).stdout)
    want = {
        "User": "1000:1000",
        "Entrypoint": ["docker-entrypoint"],
        "Cmd": ["start", "--data-directory", "/var/lib/cete/data"],
        "WorkingDir": "/var/lib/cete",
    }
    for k, v in want.items():
        if cfg.get(k) != v:
            raise Failure(f"image config {k} is {cfg.get(k)!r}, expected {v!r}")
    if set(cfg.get("ExposedPorts", {})) != {"7000/tcp", "8000/tcp", "9000/tcp"}:
        raise Failure(f"image exposes {sorted(cfg.get('ExposedPorts', {}))}")
    if "/var/lib/cete" not in cfg.get("Volumes", {}):
        raise Failure("image has no volume /var/lib/cete")


# --- 3: the README's commands --------------------------------------------------------
def readme_blocks():
    """The shell commands (with the output the README shows) of 'Cete on Docker'."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"^## Cete on Docker\n(.*?)^## ", text, re.S | re.M)
    if not m:
        raise Failure("README.md has no section '## Cete on Docker'")
    steps = []
    for block in re.findall(r"^```(?:bash|console)\n(.*?)^```", m.group(1), re.S | re.M):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            if not lines[i].startswith("$ "):
                raise Failure(f"README Docker block: output without a command: {lines[i]!r}")
            cmd = lines[i][2:]
            while cmd.endswith("\\"):
                i += 1
                cmd = cmd[:-1] + " " + lines[i].strip()
            i += 1
            out = []
            while i < len(lines) and not lines[i].startswith("$ "):
                out.append(lines[i])
                i += 1
            steps.append((cmd, "\n".join(out)))
    return steps


def mask(text):
    return re.sub(r"\d+", "N", "\n".join(l.rstrip() for l in text.strip().splitlines()))


def readme(pm):
    steps = readme_blocks()
    if not any(c.startswith("docker run") for c, _ in steps):
        raise Failure("README's Docker section has no `docker run` line")
    names = {}  # README name -> name used here
    ports = {}  # README host port -> free port here
    for cmd, _ in steps:
        toks = shlex.split(cmd)
        for flag, value in zip(toks, toks[1:]):
            if flag == "--name":
                names[value] = value + pm.suffix
        if toks[:3] == ["docker", "network", "create"]:
            names[toks[3]] = toks[3] + pm.suffix

    def rename(s):
        for old, new in names.items():
            s = re.sub(rf"(?<![\w.-]){re.escape(old)}(?![\w.-])", new, s)
        return s

    def unrename(s):
        for old, new in names.items():
            s = s.replace(new, old)
        return s

    ran = 0
    for cmd, shown in steps:
        toks = shlex.split(cmd)
        if toks[:2] == ["docker", "build"]:
            continue  # compiles inside a rust image; built above from the prebuilt target instead
        if toks[0] == "docker":
            toks[0] = "podman"
            out = []
            it = iter(toks)
            for t in it:
                if t in ("-p", "--publish"):
                    spec = next(it).split(":")
                    host, cport = spec[-2], spec[-1]
                    ports.setdefault(host, free_port())
                    out += [t, f"127.0.0.1:{ports[host]}:{cport}"]
                elif t == README_IMAGE:
                    out.append(pm.tag)
                else:
                    out.append(rename(t))
            toks = out
        elif toks[0] == "curl":
            for host, free in ports.items():
                toks = [re.sub(rf"(//(127\.0\.0\.1|localhost)):{host}\b", rf"\1:{free}", t) for t in toks]
        else:
            raise Failure(f"README Docker section: the test does not know how to run {cmd!r}")
        if toks[:2] == ["podman", "run"]:
            pm.containers.append(toks[toks.index("--name") + 1])
        if toks[:3] == ["podman", "network", "create"]:
            pm.networks.append(toks[3])
        took = None
        if toks[:2] == ["podman", "stop"] and len(toks) == 3:
            took, stdout = stop_timed(toks[2])
        elif toks[:2] == ["podman", "exec"] or toks[0] == "curl":
            # A node just started may not be serving yet: retry a client call until the deadline.
            stdout = wait_for(f"README: {cmd}", lambda: (r := run(toks, check=False)).returncode == 0 and r, 30).stdout
        else:
            stdout = run(toks).stdout
        if toks[:2] == ["podman", "run"]:
            name = toks[toks.index("--name") + 1]
            wait_for(f"{name} serving", lambda: podman("exec", name, "cete", "node", check=False).returncode == 0, 30)
        if shown and mask(unrename(stdout)) != mask(shown):
            raise Failure(f"README: `{cmd}` printed\n{unrename(stdout)}\nbut the README shows\n{shown}")
        log(f"README: {cmd}" + ("  (output as shown)" if shown else "") + (f" ({took:.1f} s)" if took else ""))
        ran += 1
    log(f"README: {ran} commands of 'Cete on Docker' ran as printed")
    # The default command, as the README says: `cete start --data-directory /var/lib/cete/data`.
    name = "cete-default" + pm.suffix
    port = free_port()
    pm.containers.append(name)
    podman("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000", pm.tag)
    wait_for("default command: node1 leading",
             lambda: (n := http_json(port, "/v1/node")["node"])["id"] == "node1" and n["leader"] == "node1", 30)
    ls = podman("exec", name, "ls", "/var/lib/cete/data").stdout.split()
    if not ls:
        raise Failure("default command: nothing in /var/lib/cete/data")
    log(f"default command: node1 leads, data in /var/lib/cete/data ({', '.join(ls)}); stopped in {stop_timed(name)[0]:.1f} s")


# --- 4: a cluster started as the StatefulSet starts its pods -------------------------
def statefulset_container(helm, release, replicas):
    out = run([helm, "template", release, str(CHART), "--set", f"replicas={replicas}"]).stdout
    import yaml  # PyYAML, installed by scripts/setup.sh

    sts = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    c = pod["containers"][0]
    return c, pod["securityContext"], sts["spec"]["serviceName"]


def pod_env(container, pod_name):
    """The container's environment in pod pod_name, as the kubelet expands it."""
    env = {}
    for e in container["env"]:
        if "valueFrom" in e:
            if e["valueFrom"] != {"fieldRef": {"fieldPath": "metadata.name"}}:
                raise Failure(f"env {e['name']}: the test knows only fieldRef metadata.name, not {e['valueFrom']}")
            env[e["name"]] = pod_name
        else:
            env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], e["value"])
    return env


def cluster(pm, helm):
    release = "ceteimg" + pm.suffix.lstrip("-")  # contains "cete": the chart's fullname is the release
    c, sec, headless = statefulset_container(helm, release, 3)
    pods = [f"{release}-{i}" for i in range(3)]
    domain = f"{headless}.default.svc.cluster.local"
    net = release
    pm.networks.append(net)
    podman("network", "create", net)
    if '"dns_enabled": true' not in podman("network", "inspect", net).stdout:
        raise Failure("podman network without DNS: install golang-github-containernetworking-plugin-dnsname")
    http_port = next(p["containerPort"] for p in c["ports"] if p["name"] == "http")
    port = {}
    for name in pods:
        env = pod_env(c, name)
        port[name] = free_port()
        args = ["run", "-d", "--name", name, "--hostname", name, "--network", net,
                "--network-alias", f"{name}.{domain}", "-p", f"127.0.0.1:{port[name]}:{http_port}",
                "--user", f"{sec['runAsUser']}:{sec['runAsGroup']}"]
        for k, v in env.items():
            args += ["-e", f"{k}={v}"]
        if c.get("command"):
            args += ["--entrypoint", json.dumps(c["command"])]
        pm.containers.append(name)
        podman(*args, pm.tag, *c.get("args", []))
    log(f"chart: started {', '.join(pods)} with the StatefulSet's args {c.get('args')} and environment "
        f"({', '.join(sorted(pod_env(c, pods[1])))})")

    def view(name):
        return http_json(port[name], "/v1/cluster")["cluster"]

    def agreed(names, n, not_leader=None):
        views = [view(x) for x in names]
        leaders = {v.get("leader") for v in views}
        ok = all(len(v["nodes"]) == n and all(m["voter"] for m in v["nodes"].values()) for v in views)
        leader = leaders.pop() if len(leaders) == 1 else None
        return ok and leader and leader != not_leader and leader

    t = time.monotonic()
    leader = wait_for("3 pods in one cluster with one leader", lambda: agreed(pods, 3), 60)
    log(f"chart: 3 voters, leader {leader}, in {time.monotonic() - t:.1f} s")

    follower = next(p for p in pods if p != leader)
    keys = {f"k{i}": f"v{i}" for i in range(20)}
    for k, v in keys.items():
        status, body = request(port[leader], "PUT", f"/v1/data/{k}", v.encode())
        if status != 201:
            raise Failure(f"PUT {k} on the leader: {status} {body!r}")
    # Through a follower: the CLI follows its redirect to the leader's pod DNS name.
    podman("exec", follower, "cete", "set", "via-follower", "yes")
    keys["via-follower"] = "yes"

    def has_all(name, consistency):
        for k, v in keys.items():
            status, body = request(port[name], "GET", f"/v1/data/{k}?consistency={consistency}")
            if status != 200 or body.decode() != v:
                return False
        return True

    for name in pods:
        wait_for(f"{name} has every key (stale read)", lambda: has_all(name, "stale"), 15)
        if not has_all(name, "linearizable"):
            raise Failure(f"{name}: linearizable reads miss keys")
    log(f"chart: {len(keys)} keys written (one through follower {follower}), read from all 3 pods")

    took, _ = stop_timed(leader)
    t = time.monotonic()
    rest = [p for p in pods if p != leader]
    new_leader = wait_for("a new leader among the other two", lambda: agreed(rest, 3, not_leader=leader), 30)
    log(f"chart: stopped leader {leader} in {took:.1f} s (SIGTERM); {new_leader} leads after "
        f"{time.monotonic() - t:.1f} s")
    for name in rest:
        if not has_all(name, "linearizable"):
            raise Failure(f"{name} lost data after the leader stopped")
    status, body = request(port[new_leader], "PUT", "/v1/data/after-failover", b"kept")
    if status != 201:
        raise Failure(f"PUT after failover: {status} {body!r}")
    keys["after-failover"] = "kept"

    t = time.monotonic()
    podman("start", leader)

    def rejoined():
        node = http_json(port[leader], "/v1/node")["node"]
        return node["leader"] == new_leader and node["state"] == "Follower" and has_all(leader, "stale")

    wait_for(f"{leader} back as a follower with every key", rejoined, 30)
    wait_for("all 3 agree again", lambda: agreed(pods, 3), 15)
    log(f"chart: {leader} restarted, rejoined and caught up in {time.monotonic() - t:.1f} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin-dir", required=True, help="directory holding cete and cete-server (Debian 12 builds)")
    default_helm = Path(os.environ.get("CETE_TOOLS_DIR", Path.home() / ".cache" / "cete-tools")) / "bin" / "helm"
    ap.add_argument("--helm", default=str(default_helm if default_helm.exists() else "helm"))
    args = ap.parse_args()
    for tool in ("podman", "hadolint", args.helm):
        if not shutil.which(tool):
            sys.exit(f"image test: {tool} not found: run scripts/setup-image.sh and scripts/setup-helm.sh")

    pm = Podman(f"localhost/cete-image-test:it{os.getpid()}")

    # SIGTERM/SIGHUP (make interrupted, CI timeout) unwind through the cleanup below too.
    def interrupted(signum, _):
        raise KeyboardInterrupt(f"signal {signum}")

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, interrupted)
    ok = False
    try:
        lint()
        build(pm, args.bin_dir)
        readme(pm)
        cluster(pm, args.helm)
        ok = True
    except Failure as e:
        print(f"image test: FAILED: {e}", file=sys.stderr)
        pm.logs()
    except KeyboardInterrupt as e:
        print(f"image test: interrupted ({e})", file=sys.stderr)
    finally:
        t = time.monotonic()
        pm.cleanup()
        log(f"removed {len(pm.containers)} containers, {len(pm.networks)} networks, the image "
            f"({time.monotonic() - t:.1f} s)")
    log(f"image test {'passed' if ok else 'FAILED'} in {time.monotonic() - START:.1f} s")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
