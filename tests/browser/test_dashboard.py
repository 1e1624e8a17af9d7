#!/usr/bin/env python3
"""The web dashboard (/ui/) in a real browser, on a real 3-node cluster.

Starts three debug `cete-server` processes on free ports in a temporary
directory (node1 bootstraps, node2 and node3 join through it, as in the
README), then drives headless Chromium through Selenium: the cluster table,
prefix search with pagination, a value of each kind, put, conditional put
(412), delete, the live feed and its resumption after the page's node
restarts, the page served by a follower, a killed member shown as down, no
console errors and no request to anything but the cluster's nodes.
Screenshots of every view are saved under the temporary directory and their
paths printed.

    python3 tests/browser/test_dashboard.py [--bin-dir target/debug] [--keep]

Needs chromium, chromium-driver and selenium (scripts/setup-browser.sh).
Exits non-zero on the first failed check, after printing the node logs.
"""

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from urllib.parse import quote, urlsplit

# Selenium must use the system chromedriver, never download one.
os.environ["SE_OFFLINE"] = "true"

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEADLINE_S = 300
WAIT_S = 20


class Failure(Exception):
    pass


def check(condition, what):
    if not condition:
        raise Failure(what)
    print(f"  ok: {what}")


def wait_until(what, probe, timeout=30.0):
    """Polls `probe` every 100 ms until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except Exception as e:  # a node still starting, a stale element
            last = e
        time.sleep(0.1)
    raise Failure(f"timed out after {timeout:.0f}s: {what}" + (f" (last error: {last})" if last else ""))


_given_ports = set()


def free_port():
    """A free port below the ephemeral range, never the same one twice."""
    while True:
        port = random.randrange(15000, 32000)
        if port in _given_ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given_ports.add(port)
        return port


def request(port, method, path, body=None, headers=None, timeout=10):
    """One HTTP request, redirects not followed: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def get_json(port, path):
    status, _, body = request(port, "GET", path)
    if status != 200:
        raise Failure(f"GET {path} on :{port} answered {status}: {body[:200]!r}")
    return json.loads(body)


class Node:
    def __init__(self, name, root, bin_dir, peer=None):
        self.name = name
        self.root = root
        self.bin = os.path.join(bin_dir, "cete-server")
        self.dir = os.path.join(root, name)
        self.log = os.path.join(root, f"{name}.log")
        self.raft_port, self.grpc_port, self.http_port = free_port(), free_port(), free_port()
        self.peer = peer
        self.proc = None

    def start(self):
        args = [
            self.bin,
            "--id", self.name,
            "--raft-address", f"127.0.0.1:{self.raft_port}",
            "--grpc-address", f"127.0.0.1:{self.grpc_port}",
            "--http-address", f"127.0.0.1:{self.http_port}",
            "--data-directory", self.dir,
            "--log-level", "debug",
            "--log-file", self.log,
        ]
        if self.peer:
            args += ["--peer-grpc-address", self.peer]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CETE_") and k != "RUST_LOG"}
        with open(self.log + ".stderr", "ab") as out:
            self.proc = subprocess.Popen(args, cwd=self.root, env=env, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=out)

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def url(self, path):
        return f"http://127.0.0.1:{self.http_port}{path}"

    def tail(self, n=60):
        out = []
        for path in (self.log, self.log + ".stderr"):
            try:
                with open(path, errors="replace") as f:
                    lines = f.read().splitlines()[-n:]
                out.append(f"===== {path} (last {n} lines) =====\n" + "\n".join(lines))
            except OSError as e:
                out.append(f"===== {path}: {e}")
        return "\n".join(out)


def wait_cluster(nodes, voters):
    """Every running node lists `voters` voters and the same leader."""
    def probe():
        leaders = set()
        for node in nodes:
            cluster = get_json(node.http_port, "/v1/cluster")["cluster"]
            count = sum(1 for m in cluster["nodes"].values() if m["voter"])
            if count != voters or not cluster["leader"]:
                return None
            leaders.add(cluster["leader"])
        return leaders.pop() if len(leaders) == 1 else None
    return wait_until(f"every node lists {voters} voters and one leader", probe, 60)


def png(width, height):
    """A small RGB PNG (a gradient), made here so the test needs no files."""
    rows = b"".join(
        b"\x00" + bytes(c for x in range(width) for c in (x * 255 // width, y * 255 // height, 160))
        for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def put(port, key, value, content_type):
    status, _, body = request(port, "PUT", "/v1/data/" + quote(key, safe="/"), value,
                              {"content-type": content_type})
    if status not in (200, 201):
        raise Failure(f"PUT {key} on :{port} answered {status}: {body!r}")
    return json.loads(body)["revision"]


class Page:
    """The browser, with the checks' helpers."""

    def __init__(self, root):
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--no-first-run", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--window-size=1320,900",
                     f"--user-data-dir={os.path.join(root, 'chromium-profile')}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        self.driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        self.driver.set_page_load_timeout(WAIT_S)
        self.shots = os.path.join(root, "screenshots")
        os.makedirs(self.shots, exist_ok=True)
        self.requested = []  # every URL the page asked for

    def by(self, testid):
        return self.driver.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]')

    def all(self, css):
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait(self, what, probe, timeout=WAIT_S):
        """Polls `probe` until it returns a truthy value; an element replaced
        or not there yet (the page re-renders as data arrives) is a retry."""
        def attempt(_):
            try:
                return probe()
            except (StaleElementReferenceException, NoSuchElementException):
                return False
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(attempt)
        except TimeoutException:
            raise Failure(f"timed out after {timeout}s: {what}") from None

    def screenshot(self, name):
        path = os.path.join(self.shots, f"{name}.png")
        self.driver.save_screenshot(path)
        print(f"  screenshot: {path}")
        return path

    def type_into(self, testid, text):
        element = self.by(testid)
        element.clear()
        element.send_keys(text)
        return element

    def console(self):
        """The console messages since the last call (severity, text)."""
        return [(e["level"], e["message"]) for e in self.driver.get_log("browser")]

    def collect_requests(self):
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                self.requested.append(message["params"]["request"]["url"])

    def close(self):
        try:
            self.driver.quit()
        except WebDriverException:
            pass


def console_errors(page, allowed=()):
    """Console errors since the last check, except those containing an `allowed` text."""
    errors = [m for level, m in page.console() if level == "SEVERE"]
    return [m for m in errors if not any(a in m for a in allowed)]


def rows(page):
    return {r.get_attribute("data-member"): r.get_attribute("data-state")
            for r in page.all('[data-testid="cluster-table"] tbody tr')}


def run(root, bin_dir):
    node1 = Node("node1", root, bin_dir)
    nodes = [node1]
    try:
        node1.start()
        wait_until("node1 ready", lambda: request(node1.http_port, "GET", "/v1/readiness_check")[0] == 200)
        for name in ("node2", "node3"):
            node = Node(name, root, bin_dir, peer=f"127.0.0.1:{node1.grpc_port}")
            node.start()
            nodes.append(node)
            wait_cluster(nodes, len(nodes))
        leader_name = wait_cluster(nodes, 3)
        by_name = {n.name: n for n in nodes}
        leader = by_name[leader_name]
        follower = next(n for n in nodes if n.name != leader_name)
        ports = {n.http_port for n in nodes}
        print(f"cluster up in {root}: leader {leader.name}, page also served by follower {follower.name}")
        browse(root, nodes, leader, follower, ports)
    except BaseException:
        for node in nodes:
            print(node.tail(), file=sys.stderr)
        raise
    finally:
        for node in nodes:
            node.stop(signal.SIGKILL)


def browse(root, nodes, leader, follower, ports):
    lp = leader.http_port
    text = "Cete is a distributed key-value store.\nServed by curl and browsers.\n"
    document = {"name": "cete", "replicas": 3, "tags": ["raft", "rocksdb"], "nested": {"ok": True}}
    image = png(48, 32)
    binary = bytes(range(256)) * 2
    put(lp, "demo/readme.txt", text.encode(), "text/plain; charset=utf-8")
    put(lp, "demo/config.json", json.dumps(document).encode(), "application/json")
    put(lp, "demo/logo.png", image, "image/png")
    put(lp, "demo/blob.bin", binary, "application/octet-stream")
    for i in range(60):
        put(lp, f"page/{i:03}", f"value {i}".encode(), "text/plain")

    page = Page(root)
    try:
        d = page.driver
        print("cluster view (page served by the leader)")
        d.get(leader.url("/"))
        check(urlsplit(d.current_url).path == "/ui/", f"/ redirects to /ui/ ({d.current_url})")
        page.wait("3 members in the cluster table", lambda: len(rows(page)) == 3)
        page.wait("every member healthy", lambda: sorted(rows(page).values()) == ["Follower", "Follower", "Leader"])
        leader_row = d.find_element(By.CSS_SELECTOR, f'tr[data-member="{leader.name}"]')
        check("is-leader" in leader_row.get_attribute("class") and "leader" in leader_row.text,
              "the leader's row is marked")
        page.wait("replication lag shown for every member",
                  lambda: all(c.text.isdigit() for c in page.all('td[data-field="lag"]')))
        check(leader.name in page.by("node-info").text, "the header names the node serving the page")
        page.screenshot("cluster")

        print("keys view: prefix search, pagination, values by content type")
        page.by("tab-keys").click()
        search = page.type_into("key-search", "demo/")
        search.send_keys(Keys.ENTER)
        names = lambda: [b.text for b in page.all('[data-testid="key-list"] [data-testid="key-name"]')]  # noqa: E731
        page.wait("4 demo keys listed", lambda: sorted(names()) == [
            "demo/blob.bin", "demo/config.json", "demo/logo.png", "demo/readme.txt"])
        row_text = d.find_element(By.XPATH, '//button[text()="demo/logo.png"]/ancestor::tr').text
        check("image/png" in row_text and f"{len(image) / 1024:.1f} KiB" in row_text,
              f"size and type listed ({row_text})")

        def open_key(key, kind):
            d.find_element(By.XPATH, f'//*[@data-testid="key-list"]//button[text()="{key}"]').click()
            return page.wait(f"{key} shown as {kind}", lambda: d.find_element(
                By.CSS_SELECTOR, f'[data-testid="value-view"] h3').text == key and page.all(
                f'[data-testid="value-view"] .value[data-kind="{kind}"]'))[0]

        value = open_key("demo/readme.txt", "text")
        check(value.find_element(By.TAG_NAME, "pre").text == text.strip(), "text shown as text")
        page.screenshot("value-text")
        value = open_key("demo/config.json", "json")
        shown = value.find_element(By.TAG_NAME, "pre").text
        check(json.loads(shown) == document and '\n  "replicas": 3' in shown, "JSON pretty-printed")
        page.screenshot("value-json")
        value = open_key("demo/logo.png", "image")
        img = value.find_element(By.TAG_NAME, "img")
        page.wait("the image decodes", lambda: d.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", img) == 48)
        check(True, "image shown as an image (48 px wide)")
        page.screenshot("value-image")
        value = open_key("demo/blob.bin", "binary")
        hexdump = value.find_element(By.TAG_NAME, "pre").text
        meta = d.find_element(By.CSS_SELECTOR, '[data-testid="value-view"] .meta').text
        check(hexdump.startswith("00000000  00 01 02 03") and "512 bytes" in meta,
              f"binary shown as a hex dump with its size ({meta})")
        page.screenshot("value-hex")

        page.type_into("key-search", "page/").send_keys(Keys.ENTER)
        page.wait("the first page of 50 keys", lambda: len(names()) == 50 and names()[0] == "page/000")
        more = page.by("key-more")
        check(more.is_displayed(), "a More button for the next page")
        more.click()
        page.wait("all 60 keys after More", lambda: len(names()) == 60 and names()[-1] == "page/059")
        check(not page.by("key-more").is_displayed(), "no More button after the last page")
        errors = console_errors(page)
        check(errors == [], f"no console errors so far {errors}")

        print("the page served by a follower: put, conditional put, delete")
        d.get(follower.url("/ui/#keys"))
        page.wait("the follower's page loaded", lambda: follower.name in page.by("node-info").text
                  and "Follower" in page.by("node-info").text)
        page.type_into("put-key", "ui/made-here")
        page.type_into("put-value", '{"from": "a follower"}')
        page.type_into("put-content-type", "application/json")
        page.by("put-submit").click()
        result = page.by("put-result")
        page.wait("the put is confirmed", lambda: result.get_attribute("data-tone") == "ok")
        check("revision" in result.text, f"put through the follower: {result.text}")
        status, headers, body = request(lp, "GET", "/v1/data/ui/made-here")
        check(status == 200 and body == b'{"from": "a follower"}' and headers["content-type"] == "application/json",
              "the value is on the leader over REST, with its content type")

        page.type_into("key-search", "ui/").send_keys(Keys.ENTER)
        page.wait("the new key listed", lambda: names() == ["ui/made-here"])
        open_key("ui/made-here", "json")
        page.by("edit-key").click()
        check(Select(page.by("put-condition")).first_selected_option.get_attribute("value") == "if-match",
              "Edit prepares a conditional put")
        page.type_into("put-value", '{"from": "the page, too late"}')
        rest_revision = put(lp, "ui/made-here", b'{"from": "REST, meanwhile"}', "application/json")
        page.by("put-submit").click()
        page.wait("the 412 is shown", lambda: result.get_attribute("data-tone") == "conflict")
        check("412" in result.text and f"revision is {rest_revision}" in result.text,
              f"412 shown clearly: {result.text}")
        page.screenshot("put-412")
        check(request(lp, "GET", "/v1/data/ui/made-here")[2] == b'{"from": "REST, meanwhile"}',
              "the failed conditional put changed nothing")
        errors = console_errors(page, allowed=["status of 412"])
        check(errors == [], f"no console errors but the expected 412 ({errors})")

        page.type_into("put-key", "k" * 4097)
        Select(page.by("put-condition")).select_by_value("always")
        page.by("put-submit").click()
        page.wait("the API's error is shown", lambda: result.get_attribute("data-tone") == "bad")
        check("400 KeyTooLarge" in result.text and "4096" in result.text, f"API error as its message: {result.text}")
        console_errors(page, allowed=["status of 400"])

        open_key("ui/made-here", "json")
        page.by("delete-key").click()
        page.by("delete-confirm").click()
        page.wait("the delete is confirmed", lambda: page.all('[data-testid="delete-result"]'))
        check(request(lp, "GET", "/v1/data/ui/made-here")[0] == 404, "deleted through the follower (404 over REST)")
        page.screenshot("keys")

        print("live feed (on the follower)")
        page.by("tab-feed").click()
        page.type_into("watch-prefix", "feed/").send_keys(Keys.ENTER)
        status_el = page.by("watch-status")
        page.wait("the feed connects", lambda: status_el.get_attribute("data-tone") == "ok")

        def feed():
            return [(li.get_attribute("data-type"), li.get_attribute("data-key"), int(li.get_attribute("data-revision")))
                    for li in page.all('[data-testid="watch-feed"] li')]
        put(lp, "feed/a", b"first", "text/plain")
        put(lp, "feed/b", b"second", "text/plain")
        request(lp, "DELETE", "/v1/data/feed/a")
        put(lp, "other/x", b"not watched", "text/plain")
        page.wait("3 events, newest first", lambda: [(t, k) for t, k, _ in feed()] == [
            ("delete", "feed/a"), ("put", "feed/b"), ("put", "feed/a")])
        page.screenshot("feed")
        errors = console_errors(page)
        check(errors == [], f"no console errors in the feed {errors}")

        print("the feed resumes after its node restarts")
        before = feed()
        follower.stop(signal.SIGKILL)
        page.wait("the feed sees the disconnect", lambda: status_el.get_attribute("data-tone") == "warn")
        put(lp, "feed/c", b"written while the page's node was down", "text/plain")
        follower.start()
        page.wait("the missed event arrives after the reconnect",
                  lambda: feed() and feed()[0][1] == "feed/c", timeout=60)
        after = feed()
        revisions = [r for _, _, r in after]
        check(after[1:] == before and revisions == sorted(set(revisions), reverse=True),
              f"resumed without a gap or a repeat: {revisions}")
        check("resumed after revision" in status_el.text, f"status says so: {status_el.text}")
        # While the node was down the page's polls and the stream failed.
        console_errors(page, allowed=["ERR_CONNECTION_REFUSED", f":{follower.http_port}/"])

        print("a killed member is shown down")
        wait_cluster([n for n in nodes if n is not follower] + [follower], 3)
        victim = next(n for n in nodes if n is not leader and n is not follower)
        victim.stop(signal.SIGKILL)
        d.get(follower.url("/ui/#cluster"))
        page.wait(f"{victim.name} shown down", lambda: rows(page).get(victim.name) == "Down", timeout=30)
        seen = wait_until("the leader's /v1/cluster says the killed member is unreachable",
                          lambda: (lambda m: m if m["reachable"] is False else None)(
                              get_json(lp, "/v1/cluster")["cluster"]["nodes"][victim.name]))
        print(f"  the leader's /v1/cluster entry for {victim.name}: {json.dumps(seen, sort_keys=True)}")
        check(seen["last_contact_ms"] > 1500 and seen["state"] == "Follower",
              f"unreachable beside the original's state: last contact {seen['last_contact_ms']} ms ago")
        check(rows(page)[leader.name] == "Leader", "the leader still shown as such")
        page.screenshot("cluster-down")
        console_errors(page, allowed=["ERR_CONNECTION_REFUSED", f":{victim.http_port}/"])

        print("requests")
        page.collect_requests()
        foreign = [u for u in page.requested
                   # chrome:// is the browser's own first tab, served from inside it.
                   if not u.startswith(("data:", "blob:", "chrome:", "chrome-untrusted:"))
                   and not (urlsplit(u).hostname == "127.0.0.1" and urlsplit(u).port in ports)]
        check(page.requested and not foreign,
              f"{len(page.requested)} requests, all to the cluster's nodes (others: {foreign[:5]})")
    except BaseException:
        try:
            page.screenshot("failure")
        except Exception:
            pass
        raise
    finally:
        page.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "debug"),
                        help="where the debug cete-server is (default: target/debug)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.bin_dir, "cete-server")):
        sys.exit(f"browser test: {args.bin_dir}/cete-server is missing: run `cargo build --workspace --bins`")
    for tool in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not os.path.isfile(tool):
            sys.exit(f"browser test: {tool} is missing: run scripts/setup-browser.sh")

    def timeout(*_):
        raise Failure(f"the browser test took longer than {DEADLINE_S} s")
    signal.signal(signal.SIGALRM, timeout)
    signal.alarm(DEADLINE_S)
    root = tempfile.mkdtemp(prefix="cete-browser-")
    started = time.monotonic()
    try:
        run(root, os.path.abspath(args.bin_dir))
    except Failure as e:
        print(f"browser test: FAILED: {e}\n(temporary directory kept: {root})", file=sys.stderr)
        return 1
    print(f"browser test: ok in {time.monotonic() - started:.1f}s; screenshots in {root}/screenshots")
    if not args.keep:
        # The screenshots are kept; the nodes' data is not.
        for entry in os.listdir(root):
            if entry != "screenshots":
                path = os.path.join(root, entry)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
