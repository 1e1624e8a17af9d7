"""The server as Python's own HTTP clients see it: the served OpenAPI document, and 413s
that clients which write the whole body before reading (urllib, requests) can read."""

import http.client
import json
import unittest
import urllib.error
import urllib.request

import requests
from harness import SPEC, NodeTestCase

LIMIT = 65536
# Far more than the socket buffers on both sides hold, so that without a lingering close
# the server's close would reset the connection while the client is still writing.
OVERSIZED = 32 * 1024 * 1024


class ServedDocument(NodeTestCase, unittest.TestCase):
    def test_openapi_yaml_is_the_file(self):
        with open(SPEC, "rb") as f:
            expected = f.read()
        with urllib.request.urlopen(self.node.url("/openapi.yaml"), timeout=10) as r:
            self.assertEqual(r.status, 200)
            self.assertEqual(r.headers["Content-Type"], "application/yaml")
            body = r.read()
        self.assertEqual(len(body), len(expected))
        self.assertTrue(body == expected, "GET /openapi.yaml differs from openapi.yaml")


class OversizedBodies(NodeTestCase, unittest.TestCase):
    node_args = (f"--max-value-size={LIMIT}",)

    def assert_value_too_large(self, status, content_type, body, what):
        self.assertEqual(status, 413, f"{what}: {body!r}")
        self.assertTrue(content_type.startswith("application/json"), f"{what}: {content_type}")
        error = json.loads(body)["error"]
        self.assertEqual(error["code"], "ValueTooLarge", f"{what}: {body!r}")
        self.assertIn(str(LIMIT), error["message"])

    def assert_absent(self, key):
        with self.assertRaises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(self.node.url(f"/v1/data/{key}"), timeout=10)
        self.assertEqual(caught.exception.code, 404)

    def test_urllib_with_content_length_reads_the_413(self):
        request = urllib.request.Request(
            self.node.url("/v1/data/big-urllib"),
            data=b"x" * OVERSIZED,
            method="PUT",
            headers={"Content-Type": "application/octet-stream"},
        )
        with self.assertRaises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=30)
        e = caught.exception
        self.assert_value_too_large(e.code, e.headers["Content-Type"], e.read(), "urllib PUT")
        self.assert_absent("big-urllib")

    def test_requests_with_content_length_reads_the_413(self):
        r = requests.put(self.node.url("/v1/data/big-requests"), data=b"y" * OVERSIZED, timeout=30)
        self.assert_value_too_large(r.status_code, r.headers["Content-Type"], r.content, "requests PUT")
        self.assert_absent("big-requests")

    def test_requests_chunked_reads_the_413(self):
        # A generator body has no length: requests sends it chunked, and the server only
        # finds out it is too large after reading the limit.
        chunk = b"z" * 65536
        body = (chunk for _ in range(OVERSIZED // len(chunk)))
        r = requests.put(self.node.url("/v1/data/big-chunked"), data=body, timeout=30)
        self.assert_value_too_large(r.status_code, r.headers["Content-Type"], r.content, "chunked PUT")
        self.assert_absent("big-chunked")

    def test_the_connection_is_closed_after_the_413_and_the_next_request_works(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.node.http_port, timeout=30)
        try:
            conn.request("PUT", "/v1/data/big-conn", body=b"w" * OVERSIZED)
            r = conn.getresponse()
            self.assert_value_too_large(r.status, r.getheader("Content-Type"), r.read(), "http.client PUT")
            self.assertEqual(r.getheader("Connection"), "close")
        finally:
            conn.close()
        r = requests.put(self.node.url("/v1/data/small"), data=b"ok", timeout=10)
        self.assertEqual(r.status_code, 201, r.text)


if __name__ == "__main__":
    unittest.main()
