"""A Python client generated from openapi.yaml by openapi-python-client, used against a live node.

Generation must print no warning. Two things the generator cannot express are handled in
openapi-python-client.yaml (its content-type overrides, see there): a response of any media
type (`*/*`, GET /v1/data/{key}) and `application/yaml` (GET /openapi.yaml), both read as
bytes. The watch stream is not used: a generated client cannot follow an event stream. A generated request body always goes with one fixed Content-Type (here
application/octet-stream), so a value stored with another one is sent through an httpx
request hook that sets it.
"""

import importlib
import io
import os
import subprocess
import sys
import tempfile
import unittest

from harness import REPO, SPEC, NodeTestCase

HERE = os.path.dirname(os.path.abspath(__file__))
GENERATOR_CONFIG = os.path.join(HERE, "openapi-python-client.yaml")
PACKAGE = "cete_client"


def generate(into):
    """Runs the generator; returns its combined output. Raises if it failed."""
    tools = os.path.dirname(sys.executable)
    generator = os.path.join(tools, "openapi-python-client")
    # Its default post-hooks run ruff (one of its dependencies), found on PATH.
    env = {**os.environ, "PATH": tools + os.pathsep + os.environ.get("PATH", "")}
    run = subprocess.run(
        [
            generator,
            "generate",
            f"--path={SPEC}",
            f"--output-path={os.path.join(into, PACKAGE)}",
            "--meta=none",
            f"--config={GENERATOR_CONFIG}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = run.stdout + run.stderr
    if run.returncode != 0:
        raise AssertionError(f"openapi-python-client failed ({run.returncode}):\n{output}")
    return output


class GeneratedClient(NodeTestCase, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="cete-client-")
        cls.output = generate(cls.tmp.name)
        sys.path.insert(0, cls.tmp.name)
        cls.pkg = importlib.import_module(PACKAGE)
        cls.clients = {}
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        for client in cls.clients.values():
            client.get_httpx_client().close()
        super().tearDownClass()
        sys.path.remove(cls.tmp.name)
        cls.tmp.cleanup()

    def api(self, module):
        return importlib.import_module(f"{PACKAGE}.api.{module}")

    def client(self, content_type=None):
        """A generated client; with `content_type`, one whose requests carry that Content-Type."""
        if content_type not in self.clients:
            hooks = {}
            if content_type is not None:

                def set_content_type(request):
                    request.headers["Content-Type"] = content_type

                hooks = {"event_hooks": {"request": [set_content_type]}}
            self.clients[content_type] = self.pkg.Client(base_url=self.node.base_url, timeout=10, httpx_args=hooks)
        return self.clients[content_type]

    def put(self, key, value, content_type=None, **conditions):
        put_value = self.api("data.put_value")
        types = importlib.import_module(f"{PACKAGE}.types")
        return put_value.sync_detailed(
            key, client=self.client(content_type), body=types.File(payload=io.BytesIO(value)), **conditions
        )

    def get(self, key):
        return self.api("data.get_value").sync_detailed(key, client=self.client())

    def test_generation_prints_no_warning(self):
        for word in ("warning", "error", "skipping"):
            self.assertNotIn(word, self.output.lower(), f"generator output:\n{self.output}")

    def test_put_text_and_binary_then_get(self):
        r = self.put("docs/readme", "héllo\n".encode(), "text/plain; charset=utf-8")
        self.assertEqual(r.status_code, 201, r.content)
        text_revision = r.parsed.revision
        self.assertGreaterEqual(text_revision, 1)

        binary = bytes(range(256)) * 4
        r = self.put("blobs/one", binary)
        self.assertEqual(r.status_code, 201, r.content)
        self.assertGreater(r.parsed.revision, text_revision)

        r = self.get("docs/readme")
        self.assertEqual(r.status_code, 200)
        self.assertEqual(r.parsed.payload.read(), "héllo\n".encode())
        self.assertEqual(r.headers["content-type"], "text/plain; charset=utf-8")
        self.assertEqual(r.headers["etag"], f'"{text_revision}"')

        r = self.get("blobs/one")
        self.assertEqual(r.status_code, 200)
        self.assertEqual(r.parsed.payload.read(), binary)
        self.assertEqual(r.headers["content-type"], "application/octet-stream")

        # The generator quotes the key as one path segment; the server decodes %2F.
        r = self.get("blobs/missing")
        self.assertEqual(r.status_code, 404)
        self.assertEqual(r.parsed.error.code.value, "KeyNotFound")

    def test_list_with_prefix_and_pages(self):
        wanted = [f"page/{i:02}" for i in range(5)]
        for key in wanted + ["pagf", "pag"]:
            self.assertIn(self.put(key, key.encode()).status_code, (200, 201))
        list_keys = self.api("data.list_keys")
        types = importlib.import_module(f"{PACKAGE}.types")
        seen, start_after, pages = [], types.UNSET, 0
        while True:
            r = list_keys.sync_detailed(client=self.client(), prefix="page/", limit=2, start_after=start_after)
            self.assertEqual(r.status_code, 200, r.content)
            page = r.parsed
            pages += 1
            seen += [entry.key for entry in page.keys]
            for entry in page.keys:
                self.assertEqual(entry.size, len(entry.key))
                self.assertEqual(entry.content_type, "application/octet-stream")
            if not page.more:
                self.assertIsNone(page.next_start_after)
                break
            self.assertEqual(page.next_start_after, page.keys[-1].key)
            start_after = page.next_start_after
        self.assertEqual(seen, wanted)
        self.assertEqual(pages, 3)

        r = list_keys.sync_detailed(client=self.client(), limit=0)
        self.assertEqual(r.status_code, 400)
        self.assertEqual(r.parsed.error.code.value, "InvalidArgument")

    def test_conditional_put_and_delete(self):
        first = self.put("cond", b"v1").parsed.revision
        stale = self.put("cond", b"v2", if_match=f'"{first}"')
        self.assertEqual(stale.status_code, 200, stale.content)
        second = stale.parsed.revision
        self.assertGreater(second, first)

        r = self.put("cond", b"v3", if_match=f'"{first}"')
        self.assertEqual(r.status_code, 412, r.content)
        self.assertEqual(r.parsed.error.code.value, "PreconditionFailed")
        self.assertEqual(self.get("cond").parsed.payload.read(), b"v2")

        if_none_match = importlib.import_module(f"{PACKAGE}.models.put_value_if_none_match")
        r = self.put("cond", b"v4", if_none_match=if_none_match.PutValueIfNoneMatch.VALUE_0)
        self.assertEqual(r.status_code, 412, r.content)

        delete_value = self.api("data.delete_value")
        r = delete_value.sync_detailed("cond", client=self.client(), if_match=f'"{first}"')
        self.assertEqual(r.status_code, 412, r.content)
        r = delete_value.sync_detailed("cond", client=self.client(), if_match=f'"{second}"')
        self.assertEqual(r.status_code, 200, r.content)
        self.assertGreater(r.parsed.revision, second)
        self.assertEqual(self.get("cond").status_code, 404)
        r = delete_value.sync_detailed("cond", client=self.client())
        self.assertEqual(r.status_code, 404)

    def test_node_and_cluster(self):
        r = self.api("cluster.get_node").sync_detailed(client=self.client())
        self.assertEqual(r.status_code, 200, r.content)
        node = r.parsed.node
        self.assertEqual(node.id, "node1")
        self.assertEqual(node.state.value, "Leader")
        self.assertEqual(node.leader, "node1")
        self.assertTrue(node.member and node.voter)
        self.assertEqual(node.metadata.http_addr, f"127.0.0.1:{self.node.http_port}")

        r = self.api("cluster.get_cluster").sync_detailed(client=self.client())
        self.assertEqual(r.status_code, 200, r.content)
        cluster = r.parsed.cluster
        self.assertEqual(cluster.leader, "node1")
        self.assertEqual(list(cluster.nodes.additional_properties), ["node1"])
        member = cluster.nodes["node1"]
        self.assertEqual(member.metadata.grpc_addr, f"127.0.0.1:{self.node.grpc_port}")
        self.assertTrue(member.voter)

    def test_openapi_document_as_bytes(self):
        r = self.api("health.get_open_api").sync_detailed(client=self.client())
        self.assertEqual(r.status_code, 200)
        with open(SPEC, "rb") as f:
            self.assertTrue(r.content == f.read(), "GET /openapi.yaml differs from openapi.yaml")


if __name__ == "__main__":
    unittest.main()
