//! Single-node tests: the REST contract, the CLI, durability across restarts
//! and crashes, snapshots, configuration precedence and log rotation, all
//! against the real `cete-server` binary.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{
    assert_error_body, bounded, run_cli, single_node, wait_until, Cluster, NodeProc,
};

const TEST_TIMEOUT: Duration = Duration::from_secs(120);
const READY: Duration = Duration::from_secs(30);

/// Asserts the response is an error with `status` and the one JSON error shape
/// `{"error": {"code": code, "message": "..."}}`; returns the body.
async fn expect_error(resp: reqwest::Response, status: u16, code: &str, what: &str) -> Value {
    let got = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_string())
        .unwrap_or_default();
    let text = resp.text().await.expect("error body");
    assert_eq!(got, status, "{what}: status (body {text})");
    assert!(
        content_type.starts_with("application/json"),
        "{what}: error Content-Type is {content_type:?}, body {text}"
    );
    assert_error_body(&text, &[code], what)
}

async fn json_body(resp: reqwest::Response, status: u16, what: &str) -> Value {
    let got = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    assert_eq!(got, status, "{what}: status (body {text})");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {text}"))
}

/// PUT a value, expecting 200 or 201; returns the revision.
async fn put(
    client: &reqwest::Client,
    node: &NodeProc,
    key_path: &str,
    value: impl Into<reqwest::Body>,
) -> u64 {
    let resp = client
        .put(node.url(&format!("/v1/data/{key_path}")))
        .body(value)
        .send()
        .await
        .expect("PUT");
    let status = resp.status();
    let body = resp.text().await.unwrap();
    assert!(
        status == 200 || status == 201,
        "PUT {key_path}: {status} {body}"
    );
    let body: Value = serde_json::from_str(&body).unwrap();
    body["revision"]
        .as_u64()
        .unwrap_or_else(|| panic!("PUT {key_path}: no revision in {body}"))
}

/// GET a key: `Some(bytes)` on 200, `None` on 404 (with the KeyNotFound body).
async fn get(client: &reqwest::Client, node: &NodeProc, key_path: &str) -> Option<Vec<u8>> {
    let resp = client
        .get(node.url(&format!("/v1/data/{key_path}")))
        .send()
        .await
        .expect("GET");
    match resp.status().as_u16() {
        200 => Some(resp.bytes().await.unwrap().to_vec()),
        404 => {
            expect_error(resp, 404, "KeyNotFound", &format!("GET {key_path}")).await;
            None
        }
        other => panic!(
            "GET {key_path}: {other} {}",
            resp.text().await.unwrap_or_default()
        ),
    }
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("header {name} missing; headers {:?}", resp.headers()))
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_get_head_delete_roundtrip() {
    bounded(TEST_TIMEOUT, async {
        let (_dir, node) = single_node(&[]).await;
        let client = Cluster::client();
        let url = node.url("/v1/data/greeting");

        let resp = client
            .put(&url)
            .header("content-type", "text/plain; charset=utf-8")
            .body("hello")
            .send()
            .await
            .unwrap();
        let created = json_body(resp, 201, "PUT new key").await;
        let rev1 = created["revision"].as_u64().expect("revision");
        assert_eq!(
            created,
            json!({"revision": rev1}),
            "PUT answers exactly {{\"revision\": N}}"
        );

        let resp = client
            .put(&url)
            .header("content-type", "text/plain")
            .body("world")
            .send()
            .await
            .unwrap();
        let replaced = json_body(resp, 200, "PUT existing key").await;
        let rev2 = replaced["revision"].as_u64().expect("revision");
        assert!(rev2 > rev1, "revisions increase: {rev1} then {rev2}");

        let resp = client.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "content-type"), "text/plain");
        assert_eq!(header(&resp, "etag"), format!("\"{rev2}\""));
        assert_eq!(header(&resp, "x-cete-revision"), rev2.to_string());
        assert_eq!(header(&resp, "x-cete-create-revision"), rev1.to_string());
        assert_eq!(resp.bytes().await.unwrap(), "world");

        for consistency in ["linearizable", "stale"] {
            let resp = client
                .get(format!("{url}?consistency={consistency}"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "consistency={consistency}");
            assert_eq!(resp.bytes().await.unwrap(), "world");
        }

        let resp = client.head(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "HEAD");
        assert_eq!(header(&resp, "content-type"), "text/plain");
        assert_eq!(header(&resp, "etag"), format!("\"{rev2}\""));
        assert!(resp.bytes().await.unwrap().is_empty(), "HEAD has no body");

        // No Content-Type: the documented default.
        let rev3 = put(&client, &node, "plain", &b"x"[..]).await;
        assert!(rev3 > rev2);
        let resp = client.get(node.url("/v1/data/plain")).send().await.unwrap();
        assert_eq!(header(&resp, "content-type"), "application/octet-stream");

        let resp = client.delete(&url).send().await.unwrap();
        let deleted = json_body(resp, 200, "DELETE").await;
        let rev4 = deleted["revision"]
            .as_u64()
            .expect("revision of the delete");
        assert!(rev4 > rev3, "delete revision {rev4} after {rev3}");

        expect_error(
            client.get(&url).send().await.unwrap(),
            404,
            "KeyNotFound",
            "GET deleted",
        )
        .await;
        let resp = client.head(&url).send().await.unwrap();
        assert_eq!(resp.status(), 404, "HEAD deleted");
        expect_error(
            client.delete(&url).send().await.unwrap(),
            404,
            "KeyNotFound",
            "DELETE absent",
        )
        .await;
        expect_error(
            client.get(node.url("/v1/data/never")).send().await.unwrap(),
            404,
            "KeyNotFound",
            "GET never written",
        )
        .await;

        // Re-creating a deleted key is a create again.
        let resp = client.put(&url).body("again").send().await.unwrap();
        let again = json_body(resp, 201, "PUT after delete").await;
        let rev5 = again["revision"].as_u64().unwrap();
        assert!(rev5 > rev4);
        let resp = client.get(&url).send().await.unwrap();
        assert_eq!(header(&resp, "x-cete-create-revision"), rev5.to_string());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_with_slashes_escapes_and_binary_values() {
    bounded(TEST_TIMEOUT, async {
        let (_dir, node) = single_node(&[]).await;
        let client = Cluster::client();

        put(&client, &node, "a/b/c", "abc").await;
        put(&client, &node, "sp%20ace", "space").await;
        put(&client, &node, "%00%ff", "raw bytes").await;
        put(&client, &node, "%D0%BA%D0%BB%D1%8E%D1%87", "utf8").await;

        assert_eq!(
            get(&client, &node, "a/b/c").await.as_deref(),
            Some(&b"abc"[..])
        );
        assert_eq!(get(&client, &node, "a/b").await, None, "a/b is not a/b/c");
        assert_eq!(
            get(&client, &node, "a%2Fb%2Fc").await.as_deref(),
            Some(&b"abc"[..]),
            "%2F is a slash"
        );
        assert_eq!(
            get(&client, &node, "sp%20ace").await.as_deref(),
            Some(&b"space"[..])
        );
        assert_eq!(
            get(&client, &node, "%00%ff").await.as_deref(),
            Some(&b"raw bytes"[..])
        );
        assert_eq!(
            get(&client, &node, "%00%FF").await.as_deref(),
            Some(&b"raw bytes"[..]),
            "hex case does not matter"
        );
        assert_eq!(get(&client, &node, "%00").await, None);
        assert_eq!(
            get(&client, &node, "ключ").await.as_deref(),
            Some(&b"utf8"[..])
        );

        // The list shows decoded keys.
        let resp = client.get(node.url("/v1/data")).send().await.unwrap();
        let body = json_body(resp, 200, "list all").await;
        let keys: Vec<&str> = body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["key"].as_str().unwrap())
            .collect();
        assert!(
            keys.contains(&"a/b/c") && keys.contains(&"sp ace") && keys.contains(&"ключ"),
            "{keys:?}"
        );

        // Every byte value, with a stored Content-Type.
        let value: Vec<u8> = (0..=255u8).collect();
        let resp = client
            .put(node.url("/v1/data/bin/all-bytes"))
            .header("content-type", "image/png")
            .body(value.clone())
            .send()
            .await
            .unwrap();
        json_body(resp, 201, "PUT binary").await;
        let resp = client
            .get(node.url("/v1/data/bin/all-bytes"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "content-type"), "image/png");
        assert_eq!(
            resp.bytes().await.unwrap().to_vec(),
            value,
            "binary value round trips"
        );
        let resp = client
            .head(node.url("/v1/data/bin/all-bytes"))
            .send()
            .await
            .unwrap();
        assert_eq!(header(&resp, "x-cete-size"), "256");

        // The longest allowed key.
        let longest = "k".repeat(4096);
        put(&client, &node, &longest, "long").await;
        assert_eq!(
            get(&client, &node, &longest).await.as_deref(),
            Some(&b"long"[..])
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_prefix_limit_and_pagination() {
    bounded(TEST_TIMEOUT, async {
        let (_dir, node) = single_node(&[]).await;
        let client = Cluster::client();
        for i in 0..25 {
            put(
                &client,
                &node,
                &format!("page/k{i:02}"),
                format!("value {i}"),
            )
            .await;
        }
        put(&client, &node, "pag", "before").await;
        put(&client, &node, "pagf", "after").await;
        put(&client, &node, "zzz", "other").await;

        let list = |query: Vec<(&'static str, String)>| {
            let client = client.clone();
            let url = node.url("/v1/data");
            async move {
                let url = reqwest::Url::parse_with_params(&url, &query).unwrap();
                let resp = client.get(url).send().await.unwrap();
                json_body(resp, 200, &format!("list {query:?}")).await
            }
        };

        let mut all = Vec::new();
        let mut start_after: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut query = vec![("prefix", "page/".to_string()), ("limit", "10".to_string())];
            if let Some(after) = &start_after {
                query.push(("start_after", after.clone()));
            }
            let body = list(query).await;
            pages += 1;
            let keys = body["keys"].as_array().unwrap();
            let names: Vec<String> = keys
                .iter()
                .map(|k| k["key"].as_str().unwrap().to_string())
                .collect();
            let expected_len = if pages < 3 { 10 } else { 5 };
            assert_eq!(names.len(), expected_len, "page {pages}: {body}");
            for entry in keys {
                let i: usize = entry["key"].as_str().unwrap()["page/k".len()..]
                    .parse()
                    .unwrap();
                assert_eq!(entry["size"], format!("value {i}").len(), "{entry}");
                assert_eq!(entry["content_type"], "application/octet-stream", "{entry}");
                assert!(
                    entry["revision"].as_u64().is_some()
                        && entry["create_revision"].as_u64().is_some(),
                    "{entry}"
                );
            }
            all.extend(names.clone());
            if pages < 3 {
                assert_eq!(body["more"], true, "page {pages}: {body}");
                assert_eq!(
                    body["next_start_after"],
                    names.last().unwrap().as_str(),
                    "page {pages}: {body}"
                );
                start_after = Some(names.last().unwrap().clone());
            } else {
                assert_eq!(body["more"], false, "last page: {body}");
                assert!(body["next_start_after"].is_null(), "last page: {body}");
                break;
            }
        }
        let expected: Vec<String> = (0..25).map(|i| format!("page/k{i:02}")).collect();
        assert_eq!(all, expected, "pages cover every key once, in order");

        // Exactly `limit` matching keys: no more.
        let body = list(vec![("prefix", "page/".into()), ("limit", "25".into())]).await;
        assert_eq!(body["keys"].as_array().unwrap().len(), 25);
        assert_eq!(body["more"], false, "{body}");
        // Default limit, no prefix: everything, in byte order.
        let body = list(vec![]).await;
        let names: Vec<&str> = body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["key"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), 28);
        assert_eq!((names[0], names[1], names[27]), ("pag", "page/k00", "zzz"));
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        // No match.
        let body = list(vec![("prefix", "nothing/".into())]).await;
        assert_eq!(
            body,
            json!({"keys": [], "more": false, "next_start_after": null})
        );
        // start_after past the prefix.
        let body = list(vec![
            ("prefix", "page/".into()),
            ("start_after", "page/k23".into()),
        ])
        .await;
        let names: Vec<&str> = body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["key"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["page/k24"]);
        // Stale reads list the same.
        let body = list(vec![
            ("prefix", "page/".into()),
            ("consistency", "stale".into()),
        ])
        .await;
        assert_eq!(body["keys"].as_array().unwrap().len(), 25);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conditional_writes() {
    bounded(TEST_TIMEOUT, async {
        let (_dir, node) = single_node(&[]).await;
        let client = Cluster::client();
        let url = node.url("/v1/data/cas");

        let resp = client
            .put(&url)
            .header("if-none-match", "*")
            .body("1")
            .send()
            .await
            .unwrap();
        let rev1 = json_body(resp, 201, "If-None-Match: * on absent key").await["revision"]
            .as_u64()
            .unwrap();
        let resp = client
            .put(&url)
            .header("if-none-match", "*")
            .body("2")
            .send()
            .await
            .unwrap();
        expect_error(
            resp,
            412,
            "PreconditionFailed",
            "If-None-Match: * on existing key",
        )
        .await;
        assert_eq!(
            get(&client, &node, "cas").await.as_deref(),
            Some(&b"1"[..]),
            "the failed write changed nothing"
        );

        let resp = client
            .put(&url)
            .header("if-match", format!("\"{}\"", rev1 + 1000))
            .body("3")
            .send()
            .await
            .unwrap();
        expect_error(
            resp,
            412,
            "PreconditionFailed",
            "If-Match with a wrong revision",
        )
        .await;
        let resp = client
            .put(&url)
            .header("if-match", format!("\"{rev1}\""))
            .body("4")
            .send()
            .await
            .unwrap();
        let rev2 = json_body(resp, 200, "If-Match with the right revision").await["revision"]
            .as_u64()
            .unwrap();
        assert!(rev2 > rev1);
        let resp = client
            .put(&url)
            .header("if-match", format!("\"{rev1}\""))
            .body("5")
            .send()
            .await
            .unwrap();
        expect_error(
            resp,
            412,
            "PreconditionFailed",
            "If-Match with the previous revision",
        )
        .await;
        assert_eq!(get(&client, &node, "cas").await.as_deref(), Some(&b"4"[..]));

        // The ETag from a GET is what If-Match takes.
        let etag = header(&client.get(&url).send().await.unwrap(), "etag");
        let resp = client
            .put(&url)
            .header("if-match", etag.as_str())
            .body("6")
            .send()
            .await
            .unwrap();
        let rev3 = json_body(resp, 200, "If-Match with the GET's ETag").await["revision"]
            .as_u64()
            .unwrap();

        // If-Match on an absent key fails.
        let resp = client
            .put(node.url("/v1/data/cas-absent"))
            .header("if-match", "\"1\"")
            .body("x")
            .send()
            .await
            .unwrap();
        expect_error(resp, 412, "PreconditionFailed", "If-Match on absent key").await;
        assert_eq!(get(&client, &node, "cas-absent").await, None);

        // Malformed preconditions are client errors.
        let resp = client
            .put(&url)
            .header("if-match", "abc")
            .body("x")
            .send()
            .await
            .unwrap();
        expect_error(resp, 400, "InvalidArgument", "If-Match: abc").await;

        // DELETE with If-Match.
        let resp = client
            .delete(&url)
            .header("if-match", format!("\"{rev2}\""))
            .send()
            .await
            .unwrap();
        expect_error(resp, 412, "PreconditionFailed", "DELETE If-Match stale").await;
        assert_eq!(get(&client, &node, "cas").await.as_deref(), Some(&b"6"[..]));
        let resp = client
            .delete(&url)
            .header("if-match", format!("\"{rev3}\""))
            .send()
            .await
            .unwrap();
        let rev4 = json_body(resp, 200, "DELETE If-Match current").await["revision"]
            .as_u64()
            .unwrap();
        assert!(rev4 > rev3);
        assert_eq!(get(&client, &node, "cas").await, None);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn documented_errors_and_status_endpoints() {
    bounded(TEST_TIMEOUT, async {
        let (_dir, node) = single_node(&["--max-value-size", "1024"]).await;
        let client = Cluster::client();
        let send = |method: Method, path: &str| client.request(method, node.url(path)).send();

        // Keys.
        expect_error(
            client
                .put(node.url("/v1/data/"))
                .body("v")
                .send()
                .await
                .unwrap(),
            400,
            "InvalidKey",
            "PUT empty key",
        )
        .await;
        expect_error(
            send(Method::DELETE, "/v1/data/").await.unwrap(),
            400,
            "InvalidKey",
            "DELETE empty key",
        )
        .await;
        let too_long = "k".repeat(4097);
        expect_error(
            client
                .put(node.url(&format!("/v1/data/{too_long}")))
                .body("v")
                .send()
                .await
                .unwrap(),
            400,
            "KeyTooLarge",
            "PUT 4097-byte key",
        )
        .await;
        expect_error(
            send(Method::GET, &format!("/v1/data/{too_long}"))
                .await
                .unwrap(),
            400,
            "KeyTooLarge",
            "GET 4097-byte key",
        )
        .await;
        // 4097 bytes after decoding, though the path is longer.
        let encoded_long = format!("%41{}", "k".repeat(4096));
        expect_error(
            client
                .put(node.url(&format!("/v1/data/{encoded_long}")))
                .body("v")
                .send()
                .await
                .unwrap(),
            400,
            "KeyTooLarge",
            "PUT 4097-byte key, percent-encoded",
        )
        .await;
        for bad in ["%zz", "abc%4", "a%g0b"] {
            expect_error(
                client
                    .put(node.url(&format!("/v1/data/{bad}")))
                    .body("v")
                    .send()
                    .await
                    .unwrap(),
                400,
                "InvalidKey",
                &format!("PUT key {bad}"),
            )
            .await;
            expect_error(
                send(Method::GET, &format!("/v1/data/{bad}")).await.unwrap(),
                400,
                "InvalidKey",
                &format!("GET key {bad}"),
            )
            .await;
        }

        // Values.
        let resp = client
            .put(node.url("/v1/data/big"))
            .body(vec![7u8; 1025])
            .send()
            .await
            .unwrap();
        expect_error(
            resp,
            413,
            "ValueTooLarge",
            "PUT 1025 bytes with --max-value-size 1024",
        )
        .await;
        assert_eq!(
            get(&client, &node, "big").await,
            None,
            "the oversized value was not stored"
        );
        let resp = client
            .put(node.url("/v1/data/big"))
            .body(vec![7u8; 1024])
            .send()
            .await
            .unwrap();
        json_body(resp, 201, "PUT exactly --max-value-size bytes").await;

        // Query parameters.
        for limit in ["0", "1001", "abc", "-1"] {
            expect_error(
                send(Method::GET, &format!("/v1/data?limit={limit}"))
                    .await
                    .unwrap(),
                400,
                "InvalidArgument",
                &format!("list limit={limit}"),
            )
            .await;
        }
        let body = json_body(
            send(Method::GET, "/v1/data?limit=1000").await.unwrap(),
            200,
            "limit=1000",
        )
        .await;
        assert!(body["keys"].is_array());
        expect_error(
            send(Method::GET, "/v1/data/big?consistency=bogus")
                .await
                .unwrap(),
            400,
            "InvalidArgument",
            "GET consistency=bogus",
        )
        .await;
        expect_error(
            send(Method::GET, "/v1/data?consistency=bogus")
                .await
                .unwrap(),
            400,
            "InvalidArgument",
            "list consistency=bogus",
        )
        .await;

        // Routing (`/` is the dashboard's redirect to `/ui/`).
        let root = send(Method::GET, "/").await.unwrap();
        assert_eq!(root.status(), 302, "GET /");
        assert_eq!(root.headers()["location"], "/ui/");
        for path in ["/v2/data/x", "/v1/nope", "/v1/node/extra", "/v1"] {
            expect_error(
                send(Method::GET, path).await.unwrap(),
                404,
                "NotFound",
                &format!("GET {path}"),
            )
            .await;
        }
        for (method, path) in [
            (Method::POST, "/v1/data/x"),
            (Method::PATCH, "/v1/data/x"),
            (Method::DELETE, "/v1/node"),
            (Method::PUT, "/v1/node"),
            (Method::POST, "/v1/cluster"),
            (Method::DELETE, "/v1/snapshot"),
            (Method::POST, "/v1/liveness_check"),
            (Method::DELETE, "/openapi.yaml"),
        ] {
            expect_error(
                send(method.clone(), path).await.unwrap(),
                405,
                "MethodNotAllowed",
                &format!("{method} {path}"),
            )
            .await;
        }

        // Membership errors that a single node can produce.
        let resp = client
            .put(node.url("/v1/cluster/node2"))
            .body("{not json")
            .send()
            .await
            .unwrap();
        expect_error(resp, 400, "InvalidJson", "join with a malformed body").await;
        expect_error(
            send(Method::DELETE, "/v1/cluster/nobody").await.unwrap(),
            404,
            "NodeNotFound",
            "leave of an unknown node",
        )
        .await;

        // Status endpoints.
        let resp = send(Method::GET, "/openapi.yaml").await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(header(&resp, "content-type").starts_with("application/yaml"));
        let spec = resp.text().await.unwrap();
        assert!(
            spec.contains("openapi:") && spec.contains("/v1/data"),
            "spec: {}",
            &spec[..spec.len().min(200)]
        );

        let live = json_body(
            send(Method::GET, "/v1/liveness_check").await.unwrap(),
            200,
            "liveness",
        )
        .await;
        assert_eq!(live, json!({"alive": true}));
        let ready = json_body(
            send(Method::GET, "/v1/readiness_check").await.unwrap(),
            200,
            "readiness",
        )
        .await;
        assert_eq!(ready, json!({"ready": true}));

        let body = json_body(
            send(Method::GET, "/v1/node").await.unwrap(),
            200,
            "/v1/node",
        )
        .await;
        let n = &body["node"];
        assert_eq!(n["id"], "node1", "{body}");
        assert_eq!(
            n["bind_addr"],
            format!("127.0.0.1:{}", node.raft_port),
            "{body}"
        );
        assert_eq!(n["metadata"]["grpc_addr"], node.grpc_addr(), "{body}");
        assert_eq!(
            n["metadata"]["http_addr"],
            format!("127.0.0.1:{}", node.http_port),
            "{body}"
        );
        assert_eq!(n["state"], "Leader", "{body}");
        assert_eq!(n["leader"], "node1", "{body}");
        assert!(n["term"].as_u64().is_some_and(|t| t >= 1), "{body}");
        assert!(n["last_applied"].as_u64().is_some_and(|i| i >= 1), "{body}");
        assert_eq!(n["member"], true, "{body}");

        let body = json_body(
            send(Method::GET, "/v1/cluster").await.unwrap(),
            200,
            "/v1/cluster",
        )
        .await;
        let c = &body["cluster"];
        assert_eq!(c["leader"], "node1", "{body}");
        let members = c["nodes"].as_object().expect("cluster.nodes is an object");
        assert_eq!(members.len(), 1, "{body}");
        let m = &c["nodes"]["node1"];
        assert_eq!(
            m["bind_addr"],
            format!("127.0.0.1:{}", node.raft_port),
            "{body}"
        );
        assert_eq!(m["metadata"]["grpc_addr"], node.grpc_addr(), "{body}");
        assert_eq!(
            m["metadata"]["http_addr"],
            format!("127.0.0.1:{}", node.http_port),
            "{body}"
        );
        assert_eq!(m["state"], "Leader", "{body}");
        assert_eq!(m["voter"], true, "{body}");

        let body = json_body(
            send(Method::POST, "/v1/snapshot").await.unwrap(),
            200,
            "snapshot",
        )
        .await;
        assert!(body["snapshot"]["index"].as_u64().is_some(), "{body}");
    })
    .await
}

/// PUT bodies that carry no Content-Length: an explicitly empty body, a body
/// with no length header at all (zero length by RFC 9112 section 6.3, what
/// reqwest sends for an empty body), and chunked uploads (`curl -T -`, any
/// streaming client). The size limit must hold for chunked bodies too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_bodies_without_content_length() {
    bounded(TEST_TIMEOUT, async {
        let (_dir, node) = single_node(&["--max-value-size", "1024"]).await;
        let client = Cluster::client();
        let chunked = |parts: Vec<Vec<u8>>| {
            reqwest::Body::wrap_stream(futures::stream::iter(
                parts.into_iter().map(Ok::<_, std::io::Error>),
            ))
        };

        let resp = client
            .put(node.url("/v1/data/empty-cl"))
            .header("content-length", "0")
            .body(Vec::new())
            .send()
            .await
            .unwrap();
        json_body(resp, 201, "PUT with Content-Length: 0").await;
        assert_eq!(get(&client, &node, "empty-cl").await, Some(Vec::new()));

        let mut bugs = Vec::new();
        // SERVER BUG (411 LengthRequired): a request with neither Content-Length
        // nor Transfer-Encoding has an empty body.
        let resp = client.put(node.url("/v1/data/empty")).body("").send().await.unwrap();
        let status = resp.status();
        let body = resp.text().await.unwrap();
        if status != 201 {
            bugs.push(format!("PUT with an empty body and no Content-Length: expected 201, got {status} {body}"));
        }
        // SERVER BUG (411 LengthRequired): chunked uploads are refused.
        let resp = client
            .put(node.url("/v1/data/chunked"))
            .body(chunked(vec![b"ab".to_vec(), b"c".to_vec()]))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.text().await.unwrap();
        if status == 201 {
            assert_eq!(get(&client, &node, "chunked").await.as_deref(), Some(&b"abc"[..]));
        } else {
            bugs.push(format!("chunked PUT of 3 bytes: expected 201, got {status} {body}"));
        }
        let resp = client
            .put(node.url("/v1/data/chunked-big"))
            .body(chunked(vec![vec![1u8; 1000], vec![2u8; 1000]]))
            .send()
            .await;
        match resp {
            Ok(resp) => {
                let status = resp.status();
                let body = resp.text().await.unwrap();
                if status != 413 {
                    bugs.push(format!("chunked PUT of 2000 bytes over a 1024 limit: expected 413 ValueTooLarge, got {status} {body}"));
                }
            }
            Err(e) => bugs.push(format!("chunked PUT of 2000 bytes: no response: {e}")),
        }
        assert_eq!(get(&client, &node, "chunked-big").await, None);
        assert!(bugs.is_empty(), "SERVER BUGS:\n{}", bugs.join("\n"));
    })
    .await
}

/// SIGTERM as soon as the HTTP port answers must still be a clean shutdown
/// (exit status 0), not death by the default signal action.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_right_after_start_exits_cleanly() {
    bounded(TEST_TIMEOUT, async {
        let dir = tempfile::Builder::new()
            .prefix("cete-it-")
            .tempdir()
            .unwrap();
        let client = crate::harness::http()
            .timeout(Duration::from_millis(500))
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        for round in 0..5 {
            let mut node = NodeProc::new(&format!("node{round}"), dir.path(), None, &[]);
            node.start();
            let url = node.url("/v1/liveness_check");
            let deadline = Instant::now() + READY;
            loop {
                if let Ok(resp) = client.get(&url).send().await {
                    if resp.status() == 200 {
                        break;
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "round {round}: {url} never answered"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let status = node.terminate();
            // SERVER BUG if this fails with signal 15: main() installs its SIGTERM
            // handler only after start_node() returns, while HTTP already serves.
            assert!(
                status.success(),
                "round {round}: SIGTERM right after the HTTP port opened: exit status {status:?}"
            );
        }
    })
    .await
}

/// `/v1/node` reports the log and applied indexes, applied never ahead of the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_json_reports_log_progress() {
    bounded(TEST_TIMEOUT, async {
        let (_dir, node) = single_node(&[]).await;
        let client = Cluster::client();
        put(&client, &node, "k", "v").await;
        let body = json_body(
            client.get(node.url("/v1/node")).send().await.unwrap(),
            200,
            "/v1/node",
        )
        .await;
        let last_log = body["node"]["last_log_index"].as_u64();
        let applied = body["node"]["last_applied"].as_u64();
        assert!(last_log.is_some() && applied.is_some(), "{body}");
        assert!(last_log >= applied && applied >= Some(2), "{body}");
    })
    .await
}

fn stdout_str(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn describe(out: &std::process::Output) -> String {
    format!(
        "status {:?}, stdout {:?}, stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_data_and_status_commands() {
    bounded(TEST_TIMEOUT, async {
        let (dir, node) = single_node(&[]).await;
        let client = Cluster::client();

        let out = run_cli(&node, &["set", "k", "v"], None);
        assert!(out.status.success(), "set: {}", describe(&out));
        let reply: Value = serde_json::from_str(stdout_str(&out).trim()).expect("set prints JSON");
        assert!(reply["revision"].as_u64().is_some(), "set: {reply}");
        let out = run_cli(&node, &["get", "k"], None);
        assert!(out.status.success(), "get: {}", describe(&out));
        assert_eq!(out.stdout, b"v", "get prints exactly the value");

        // Binary file with a content type.
        let value: Vec<u8> = (0..=255u8).rev().chain(0..=255u8).collect();
        let file = dir.path().join("value.bin");
        std::fs::write(&file, &value).unwrap();
        let out = run_cli(
            &node,
            &[
                "set",
                "img/one",
                "--file",
                file.to_str().unwrap(),
                "--content-type",
                "image/png",
            ],
            None,
        );
        assert!(out.status.success(), "set --file: {}", describe(&out));
        let out = run_cli(&node, &["get", "img/one"], None);
        assert!(out.status.success(), "get binary: {}", describe(&out));
        assert_eq!(out.stdout, value, "binary value through the CLI");
        let resp = client
            .get(node.url("/v1/data/img/one"))
            .send()
            .await
            .unwrap();
        assert_eq!(header(&resp, "content-type"), "image/png");
        assert_eq!(resp.bytes().await.unwrap().to_vec(), value);

        // Standard input, trailing newline kept.
        let out = run_cli(&node, &["set", "from/stdin"], Some(b"line one\nline two\n"));
        assert!(out.status.success(), "set from stdin: {}", describe(&out));
        let out = run_cli(&node, &["get", "from/stdin"], None);
        assert_eq!(out.stdout, b"line one\nline two\n", "{}", describe(&out));
        // Keys that need escaping.
        let out = run_cli(&node, &["set", "sp ace/%x", "odd"], None);
        assert!(out.status.success(), "set odd key: {}", describe(&out));
        assert_eq!(
            get(&client, &node, "sp%20ace/%25x").await.as_deref(),
            Some(&b"odd"[..])
        );

        // List with a prefix: one JSON object per line.
        for key in ["lp/a", "lp/b", "lq/c"] {
            let out = run_cli(&node, &["set", key, key], None);
            assert!(out.status.success(), "set {key}: {}", describe(&out));
        }
        let out = run_cli(&node, &["list", "--prefix", "lp/"], None);
        assert!(out.status.success(), "list: {}", describe(&out));
        let listed: Vec<Value> = stdout_str(&out)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("list line {l:?}: {e}")))
            .collect();
        let keys: Vec<&str> = listed.iter().map(|v| v["key"].as_str().unwrap()).collect();
        assert_eq!(keys, ["lp/a", "lp/b"], "{}", describe(&out));

        // Delete, then the key is gone: exit 1 and one line on stderr.
        let out = run_cli(&node, &["delete", "k"], None);
        assert!(out.status.success(), "delete: {}", describe(&out));
        let out = run_cli(&node, &["get", "k"], None);
        assert_eq!(
            out.status.code(),
            Some(1),
            "get missing: {}",
            describe(&out)
        );
        assert!(
            out.stdout.is_empty(),
            "get missing prints nothing on stdout: {}",
            describe(&out)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr:?}");
        assert!(stderr.to_lowercase().contains("not found"), "{stderr:?}");
        let out = run_cli(&node, &["delete", "k"], None);
        assert_eq!(
            out.status.code(),
            Some(1),
            "delete missing: {}",
            describe(&out)
        );

        // Status commands print JSON.
        let out = run_cli(&node, &["node"], None);
        assert!(out.status.success(), "node: {}", describe(&out));
        let body: Value = serde_json::from_slice(&out.stdout).expect("node prints JSON");
        assert_eq!(body["node"]["id"], "node1");
        assert_eq!(body["node"]["state"], "Leader");
        let out = run_cli(&node, &["cluster"], None);
        assert!(out.status.success(), "cluster: {}", describe(&out));
        let body: Value = serde_json::from_slice(&out.stdout).expect("cluster prints JSON");
        assert_eq!(body["cluster"]["leader"], "node1");
        assert!(body["cluster"]["nodes"]["node1"].is_object());
    })
    .await
}

/// Writes `n` keys `restart/NNN` and checks them after each restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_keeps_data_after_sigterm_and_sigkill() {
    bounded(TEST_TIMEOUT, async {
        let (_dir, mut node) = single_node(&[]).await;
        let client = Cluster::client();
        for i in 0..100 {
            put(
                &client,
                &node,
                &format!("restart/{i:03}"),
                format!("value-{i}"),
            )
            .await;
        }
        let check = |node: &NodeProc, when: &'static str| {
            let client = client.clone();
            let urls: Vec<String> = (0..100)
                .map(|i| node.url(&format!("/v1/data/restart/{i:03}")))
                .collect();
            async move {
                for (i, url) in urls.iter().enumerate() {
                    let resp = client.get(url).send().await.unwrap();
                    assert_eq!(resp.status(), 200, "{when}: key {i}");
                    assert_eq!(
                        resp.bytes().await.unwrap(),
                        format!("value-{i}"),
                        "{when}: key {i}"
                    );
                }
            }
        };

        let status = node.terminate();
        assert!(status.success(), "SIGTERM exit status: {status:?}");
        node.start();
        node.wait_ready(READY).await;
        check(&node, "after SIGTERM and restart").await;
        put(&client, &node, "restart/after", "x").await;

        node.kill9();
        node.start();
        node.wait_ready(READY).await;
        check(&node, "after SIGKILL and restart").await;
        assert_eq!(
            get(&client, &node, "restart/after").await.as_deref(),
            Some(&b"x"[..])
        );
        // Writes go on after the restart.
        put(&client, &node, "restart/later", "y").await;
        let status = node.terminate();
        assert!(status.success(), "second SIGTERM exit status: {status:?}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_writes_loses_no_acknowledged_write() {
    bounded(TEST_TIMEOUT, async {
        let (_dir, mut node) = single_node(&[]).await;
        let client = Cluster::client();
        let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..8 {
            let client = client.clone();
            let acked = acked.clone();
            let stop = stop.clone();
            let base = node.url("/v1/data/");
            writers.push(tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let key = format!("crash/w{w}/{i:06}");
                    let value = format!("{w}-{i}-{}", rand::random::<u64>());
                    i += 1;
                    match client.put(format!("{base}{key}")).body(value.clone()).send().await {
                        Ok(resp) if resp.status().is_success() => acked.lock().unwrap().push((key, value)),
                        Ok(_) => {}
                        // The node is gone: back off instead of spinning.
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }));
        }
        let started = Instant::now();
        wait_until(Duration::from_secs(30), "3 s of acknowledged writes", || {
            let count = acked.lock().unwrap().len();
            async move { (started.elapsed() >= Duration::from_secs(3) && count >= 50).then_some(()) }
        })
        .await;
        node.kill9();
        stop.store(true, Ordering::SeqCst);
        for writer in writers {
            writer.await.expect("writer task");
        }
        let acked = std::mem::take(&mut *acked.lock().unwrap());
        node.start();
        node.wait_ready(READY).await;

        let mut lost = Vec::new();
        for (key, value) in &acked {
            let resp = client.get(node.url(&format!("/v1/data/{key}"))).send().await.unwrap();
            let status = resp.status();
            let body = resp.bytes().await.unwrap();
            if status != StatusCode::OK || body != value.as_bytes() {
                lost.push(format!("{key}: {status} {:?} (acked {value:?})", String::from_utf8_lossy(&body)));
            }
        }
        assert!(
            lost.is_empty(),
            "{} of {} acknowledged writes lost after SIGKILL, e.g. {:?}",
            lost.len(),
            acked.len(),
            &lost[..lost.len().min(10)]
        );
        eprintln!("{} acknowledged writes survived SIGKILL", acked.len());
    })
    .await
}

fn snap_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("snapshots"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".snap"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_then_restart_keeps_live_keys_only() {
    bounded(TEST_TIMEOUT, async {
        let (_dir, mut node) = single_node(&["--snapshot-threshold", "50"]).await;
        let client = Cluster::client();
        for i in 0..300 {
            put(&client, &node, &format!("snap/{i:03}"), format!("v{i}")).await;
        }
        for i in 0..100 {
            let resp = client
                .delete(node.url(&format!("/v1/data/snap/{i:03}")))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "delete snap/{i:03}");
        }
        let resp = client.post(node.url("/v1/snapshot")).send().await.unwrap();
        let body = json_body(resp, 200, "POST /v1/snapshot").await;
        let index = body["snapshot"]["index"]
            .as_u64()
            .unwrap_or_else(|| panic!("no snapshot.index: {body}"));
        assert!(index >= 400, "the snapshot covers the 400 writes: {body}");
        let snapshots = node.dir.join("snapshots");
        wait_until(
            Duration::from_secs(10),
            &format!("a .snap file in {}", snapshots.display()),
            || {
                let found = !snap_files(&node.dir).is_empty();
                async move { found.then_some(()) }
            },
        )
        .await;

        let status = node.terminate();
        assert!(status.success(), "SIGTERM exit status: {status:?}");
        node.start();
        node.wait_ready(READY).await;
        for i in 0..300 {
            let got = get(&client, &node, &format!("snap/{i:03}")).await;
            if i < 100 {
                assert_eq!(got, None, "deleted snap/{i:03} is back after restart");
            } else {
                assert_eq!(
                    got,
                    Some(format!("v{i}").into_bytes()),
                    "snap/{i:03} after restart"
                );
            }
        }
        let resp = client
            .get(node.url("/v1/data?prefix=snap/&limit=1000"))
            .send()
            .await
            .unwrap();
        let body = json_body(resp, 200, "list after restart").await;
        assert_eq!(body["keys"].as_array().unwrap().len(), 200);
        assert!(
            !snap_files(&node.dir).is_empty(),
            "the .snap file survives a restart"
        );

        // And after a crash, with writes past the snapshot.
        put(&client, &node, "snap/extra", "e").await;
        node.kill9();
        node.start();
        node.wait_ready(READY).await;
        assert_eq!(
            get(&client, &node, "snap/150").await.as_deref(),
            Some(&b"v150"[..])
        );
        assert_eq!(get(&client, &node, "snap/050").await, None);
        assert_eq!(
            get(&client, &node, "snap/extra").await.as_deref(),
            Some(&b"e"[..])
        );
    })
    .await
}

/// Which of `ports` answers `GET /v1/node` (waiting for exactly one to).
async fn answering_port(node: &mut NodeProc, ports: &[u16]) -> u16 {
    let client = crate::harness::http()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let answering = wait_until(
        Duration::from_secs(30),
        "one of the candidate HTTP ports answers /v1/node",
        || {
            let client = client.clone();
            let ports = ports.to_vec();
            async move {
                for port in ports {
                    if let Ok(resp) = client
                        .get(format!("http://127.0.0.1:{port}/v1/node"))
                        .send()
                        .await
                    {
                        if resp.status() == 200 {
                            return Some(port);
                        }
                    }
                }
                None
            }
        },
    )
    .await;
    for &port in ports.iter().filter(|&&p| p != answering) {
        assert!(
            client
                .get(format!("http://127.0.0.1:{port}/v1/node"))
                .send()
                .await
                .is_err(),
            "port {port} answers too"
        );
    }
    // Terminate a node that is fully up (see sigterm_right_after_start_exits_cleanly
    // for SIGTERM during start-up).
    let ready_url = format!("http://127.0.0.1:{answering}/v1/readiness_check");
    wait_until(READY, "the node is ready", || {
        let client = client.clone();
        let url = ready_url.clone();
        async move { (client.get(url).send().await.ok()?.status() == 200).then_some(()) }
    })
    .await;
    let status = node.terminate();
    assert!(status.success(), "SIGTERM exit status: {status:?}");
    answering
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn config_precedence_flag_env_file() {
    bounded(TEST_TIMEOUT, async {
        let dir = tempfile::Builder::new()
            .prefix("cete-it-")
            .tempdir()
            .unwrap();
        let (a, b, c) = (
            crate::harness::free_port(),
            crate::harness::free_port(),
            crate::harness::free_port(),
        );
        let file = dir.path().join("cete.yaml");
        std::fs::write(&file, format!("http_address: '127.0.0.1:{a}'\n")).unwrap();
        let file_arg = file.to_str().unwrap();
        let env_b = format!("127.0.0.1:{b}");
        let ports = [a, b, c];

        // Flag > env > file.
        let mut node = NodeProc::new("flag", dir.path(), None, &["--config-file", file_arg]);
        node.http_port = c;
        node.start_with(&[("CETE_HTTP_ADDRESS", &env_b)], &[]);
        assert_eq!(answering_port(&mut node, &ports).await, c, "the flag wins");

        // Env > file.
        let mut node = NodeProc::new("env", dir.path(), None, &["--config-file", file_arg]);
        node.start_with(&[("CETE_HTTP_ADDRESS", &env_b)], &["--http-address"]);
        assert_eq!(
            answering_port(&mut node, &ports).await,
            b,
            "the env var beats the file"
        );

        // File alone.
        let mut node = NodeProc::new("file", dir.path(), None, &["--config-file", file_arg]);
        node.start_with(&[], &["--http-address"]);
        assert_eq!(
            answering_port(&mut node, &ports).await,
            a,
            "the file is used"
        );

        // CETE_CONFIG_FILE names the file too.
        let mut node = NodeProc::new("envfile", dir.path(), None, &[]);
        node.start_with(&[("CETE_CONFIG_FILE", file_arg)], &["--http-address"]);
        assert_eq!(
            answering_port(&mut node, &ports).await,
            a,
            "CETE_CONFIG_FILE is read"
        );

        // An unknown key is fatal and named.
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "http_adress: '127.0.0.1:1'\n").unwrap();
        let mut node = NodeProc::new(
            "bad",
            dir.path(),
            None,
            &["--config-file", bad.to_str().unwrap()],
        );
        node.start();
        let status = wait_until(
            Duration::from_secs(20),
            "the server exits on an unknown config key",
            || {
                let status = node.try_exit_status();
                async move { status }
            },
        )
        .await;
        assert!(!status.success(), "exit status {status:?}");
        let stderr = std::fs::read_to_string(node.stderr_path()).unwrap();
        assert!(
            stderr.contains("http_adress"),
            "stderr does not name the key: {stderr:?}"
        );
    })
    .await
}

/// Names of rotated log files (`cete-<timestamp>.log[.gz]`) in `dir`.
fn rotated(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("cete-") && n.contains(".log"))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn log_file_rotates_with_backups_and_gzip() {
    bounded(TEST_TIMEOUT, async {
        let logs = tempfile::Builder::new().prefix("cete-it-logs-").tempdir().unwrap();
        let log = logs.path().join("cete.log");
        let log_arg = log.to_str().unwrap().to_string();
        let (_dir, node) = single_node(&[
            "--log-file",
            &log_arg,
            "--log-max-size",
            "1",
            "--log-level",
            "debug",
            "--log-max-backups",
            "2",
            "--log-compress",
        ])
        .await;
        let client = Cluster::client();

        // Each request is logged at debug with its path: a 4000-byte path makes
        // every line about 4 KB, so ~260 requests fill 1 MB.
        let long = "r".repeat(4000);
        let url = node.url(&format!("/v1/data/{long}?consistency=stale"));
        let started = Instant::now();
        let mut seen = BTreeSet::new();
        let mut requests = 0usize;
        while seen.len() < 4 {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "REPORT: {requests} requests in 20s produced only {} rotations ({seen:?}); filling 1 MB is too slow",
                seen.len()
            );
            let batch: Vec<_> = (0..100)
                .map(|_| {
                    let client = client.clone();
                    let url = url.clone();
                    tokio::spawn(async move { client.get(url).send().await.map(|r| r.status()) })
                })
                .collect();
            for request in batch {
                let status = request.await.unwrap().expect("GET");
                assert_eq!(status, 404);
            }
            requests += 100;
            for name in rotated(logs.path()) {
                // Not the `.gz.tmp` of a compression in progress.
                if name.ends_with(".log") || name.ends_with(".log.gz") {
                    seen.insert(name.trim_end_matches(".gz").to_string());
                }
            }
        }
        eprintln!("{requests} requests, {:?} to see {} rotations", started.elapsed(), seen.len());

        // Compression and pruning run in the background: wait for them.
        let backups = wait_until(Duration::from_secs(20), "at most 2 backups, all gzipped", || {
            let names = rotated(logs.path());
            async move {
                (!names.is_empty() && names.len() <= 2 && names.iter().all(|n| n.ends_with(".gz"))).then_some(names)
            }
        })
        .await;
        for name in &backups {
            let compressed = std::fs::read(logs.path().join(name)).unwrap();
            let mut text = String::new();
            flate2::read::GzDecoder::new(&compressed[..])
                .read_to_string(&mut text)
                .unwrap_or_else(|e| panic!("{name} is not valid gzip: {e}"));
            assert!(text.len() <= 1024 * 1024, "{name} holds {} bytes, over 1 MB", text.len());
            assert!(text.len() > 512 * 1024, "{name} holds only {} bytes", text.len());
            assert!(text.contains(&long), "{name} holds the request log lines");
        }
        let active = std::fs::metadata(&log).expect("the active log file exists").len();
        assert!(active <= 1024 * 1024, "active log is {active} bytes");
        // Other files in the directory: only the active log, its backups and the harness's stderr file.
        let stray: Vec<String> = std::fs::read_dir(logs.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "cete.log" && n != "cete.log.stderr" && !backups.contains(n))
            .collect();
        assert!(stray.is_empty(), "unexpected files beside the log: {stray:?} (backups {backups:?})");
    })
    .await
}
