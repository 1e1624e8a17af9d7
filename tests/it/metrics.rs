//! Metrics: `/metrics` and `/v1/metrics` serve Prometheus text whose values
//! follow the traffic, the writes, the snapshots and the replication of the
//! real binaries. The exposition is parsed here, and series are matched on
//! their exact label sets.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::harness::{bounded, run_cli, wait_until, Cluster, NodeProc};

const TEST_TIMEOUT: Duration = Duration::from_secs(180);
const SETTLE: Duration = Duration::from_secs(30);
const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// One sample line: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition format (version 0.0.4). Panics on anything
/// malformed, including a sample whose family has no `# TYPE` line before it.
fn parse(text: &str) -> Vec<Sample> {
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("bad TYPE line: {line}"));
            typed.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let sample = parse_sample(line);
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = sample.name.strip_suffix(suffix)?;
                (typed.get(base).map(String::as_str) == Some("histogram")).then_some(base)
            })
            .unwrap_or(&sample.name);
        assert!(
            typed.contains_key(family),
            "sample without a TYPE line: {line}"
        );
        samples.push(sample);
    }
    samples
}

fn parse_sample(line: &str) -> Sample {
    let bad = || -> ! { panic!("malformed sample line: {line}") };
    let name_end = line.find(['{', ' ']).unwrap_or_else(|| bad());
    let name = &line[..name_end];
    assert!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "bad metric name in {line}"
    );
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            if c == '}' {
                end = Some(i);
                break;
            }
            if c == ',' || c == ' ' {
                continue;
            }
            let mut key = String::from(c);
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                bad();
            }
            let mut value = String::new();
            loop {
                match chars.next().map(|(_, c)| c) {
                    Some('"') => break,
                    Some('\\') => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some(c @ ('\\' | '"')) => value.push(c),
                        _ => bad(),
                    },
                    Some(c) => value.push(c),
                    None => bad(),
                }
            }
            assert!(
                labels.insert(key, value).is_none(),
                "duplicate label in {line}"
            );
        }
        let end = end.unwrap_or_else(|| bad());
        rest = &inner[end + 1..];
    }
    let value = rest.trim();
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().unwrap_or_else(|_| bad()),
    };
    Sample {
        name: name.to_string(),
        labels,
        value,
    }
}

/// The value of the series `name` with exactly `labels`, if present.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let found: Vec<f64> = samples
        .iter()
        .filter(|s| s.name == name && s.labels == want)
        .map(|s| s.value)
        .collect();
    assert!(found.len() <= 1, "{name}{labels:?} appears twice");
    found.first().copied()
}

/// Every series named `name`.
fn series<'a>(samples: &'a [Sample], name: &str) -> Vec<&'a Sample> {
    samples.iter().filter(|s| s.name == name).collect()
}

/// GETs `path` on `node`; returns the Content-Type and the parsed samples.
async fn scrape_path(node: &NodeProc, path: &str) -> (String, Vec<Sample>) {
    let resp = Cluster::client()
        .get(node.url(path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path} on {}: {e}", node.name));
    assert_eq!(resp.status(), 200, "GET {path} on {}", node.name);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = resp.text().await.expect("metrics body");
    (content_type, parse(&text))
}

async fn scrape(node: &NodeProc) -> Vec<Sample> {
    scrape_path(node, "/metrics").await.1
}

/// A gauge or counter without labels, which must be present.
fn single(samples: &[Sample], name: &str) -> u64 {
    value(samples, name, &[]).unwrap_or_else(|| panic!("no {name} series")) as u64
}

async fn single_node() -> Cluster {
    Cluster::start(1, &[]).await
}

async fn put(client: &reqwest::Client, node: &NodeProc, key: &str) -> u16 {
    client
        .put(node.url(&format!("/v1/data/{key}")))
        .body(format!("value of {key}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PUT {key}: {e}"))
        .status()
        .as_u16()
}

#[tokio::test]
async fn request_counter_rises_by_the_requests_made_under_the_route_template() {
    bounded(TEST_TIMEOUT, async {
        let cluster = single_node().await;
        let node = &cluster.nodes[0];
        let client = Cluster::client();
        let put_201 = [
            ("route", "/v1/data/{key}"),
            ("method", "PUT"),
            ("status", "201"),
        ];
        let get_404 = [
            ("route", "/v1/data/{key}"),
            ("method", "GET"),
            ("status", "404"),
        ];
        let other_404 = [("route", "other"), ("method", "GET"), ("status", "404")];
        let before = scrape(node).await;
        let count = |samples: &[Sample], labels: &[(&str, &str)]| {
            value(samples, "cete_http_requests_total", labels).unwrap_or(0.0) as u64
        };
        let applied_before = single(&before, "cete_raft_applied_index");
        let revision_before = single(&before, "cete_revision");
        let proposed_before = single(&before, "cete_proposed_writes_total");

        const WRITES: u64 = 7;
        for i in 0..WRITES {
            assert_eq!(put(&client, node, &format!("metrics/k{i}/x")).await, 201);
        }
        for i in 0..3 {
            let resp = client
                .get(node.url(&format!("/v1/data/missing/{i}")))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 404);
        }
        let resp = client.get(node.url("/no/such/route")).send().await.unwrap();
        assert_eq!(resp.status(), 404);

        let after = scrape(node).await;
        assert_eq!(
            count(&after, &put_201) - count(&before, &put_201),
            WRITES,
            "PUT 201 counter"
        );
        assert_eq!(count(&after, &get_404) - count(&before, &get_404), 3);
        assert_eq!(count(&after, &other_404) - count(&before, &other_404), 1);
        // The latency histogram counts the same requests.
        let histogram_count = value(&after, "cete_http_request_duration_seconds_count", &put_201)
            .expect("latency histogram for PUT 201");
        assert_eq!(histogram_count as u64, count(&after, &put_201));
        // Route labels are templates only: no raw key, no raw unknown path.
        let routes: BTreeSet<&str> = series(&after, "cete_http_requests_total")
            .iter()
            .map(|s| s.labels["route"].as_str())
            .collect();
        assert!(
            routes.iter().all(|r| !r.contains("metrics/k")
                && !r.contains("missing")
                && !r.contains("no/such")),
            "raw paths leaked into route labels: {routes:?}"
        );

        // Writes one after the other are one log entry each, applied before
        // they are acknowledged; each advances the revision by one.
        let applied_after = single(&after, "cete_raft_applied_index");
        assert_eq!(applied_after, applied_before + WRITES, "applied index");
        assert_eq!(single(&after, "cete_revision"), revision_before + WRITES);
        assert_eq!(
            single(&after, "cete_proposed_writes_total"),
            proposed_before + WRITES
        );
        assert_eq!(single(&after, "cete_raft_last_log_index"), applied_after);
        assert_eq!(single(&after, "cete_raft_committed_index"), applied_after);
        assert!(single(&after, "cete_keys_estimated") >= 1);
        assert_eq!(
            value(&after, "cete_raft_state", &[("state", "Leader")]),
            Some(1.0)
        );
        assert_eq!(
            value(&after, "cete_raft_leader", &[("id", "node1")]),
            Some(1.0)
        );
        assert_eq!(
            value(&after, "cete_raft_members", &[("role", "voter")]),
            Some(1.0)
        );
        assert!(value(
            &after,
            "cete_rocksdb_sst_files_size_bytes",
            &[("cf", "data")]
        )
        .is_some());
        assert!(single(&after, "process_resident_memory_bytes") > 0);
    })
    .await
}

#[tokio::test]
async fn snapshot_build_counter_rises_after_post_snapshot() {
    bounded(TEST_TIMEOUT, async {
        let cluster = single_node().await;
        let node = &cluster.nodes[0];
        let client = Cluster::client();
        assert_eq!(put(&client, node, "snap/a").await, 201);
        let before = scrape(node).await;
        let builds_before = single(&before, "cete_snapshot_builds_total");

        let resp = client.post(node.url("/v1/snapshot")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "POST /v1/snapshot");

        let after = scrape(node).await;
        assert_eq!(
            single(&after, "cete_snapshot_builds_total"),
            builds_before + 1
        );
        assert_eq!(
            single(&after, "cete_snapshot_build_duration_seconds_count"),
            builds_before + 1
        );
        assert_eq!(
            single(&after, "cete_raft_snapshot_index"),
            single(&after, "cete_raft_applied_index")
        );
        assert_eq!(single(&after, "cete_snapshot_installs_total"), 0);
    })
    .await
}

#[tokio::test]
async fn v1_metrics_and_metrics_serve_the_same_series() {
    bounded(TEST_TIMEOUT, async {
        let cluster = single_node().await;
        let node = &cluster.nodes[0];
        // Each scrape is counted after it is answered: scrape both paths
        // once so the second round sees the same request series on both.
        scrape_path(node, "/metrics").await;
        scrape_path(node, "/v1/metrics").await;
        let (root_type, root) = scrape_path(node, "/metrics").await;
        let (v1_type, v1) = scrape_path(node, "/v1/metrics").await;
        assert_eq!(root_type, CONTENT_TYPE);
        assert_eq!(v1_type, CONTENT_TYPE);
        let keys = |samples: &[Sample]| -> BTreeSet<(String, BTreeMap<String, String>)> {
            samples
                .iter()
                .map(|s| (s.name.clone(), s.labels.clone()))
                .collect()
        };
        assert_eq!(keys(&root), keys(&v1));
        assert!(
            value(
                &v1,
                "cete_http_requests_total",
                &[
                    ("route", "/v1/metrics"),
                    ("method", "GET"),
                    ("status", "200")
                ]
            )
            .is_some(),
            "scrapes of /v1/metrics are counted under their own route"
        );

        // `cete metrics` prints the same text.
        let out = run_cli(node, &["metrics"], None);
        assert!(out.status.success(), "cete metrics: {out:?}");
        let printed = parse(&String::from_utf8_lossy(&out.stdout));
        assert!(value(&printed, "cete_raft_term", &[]).is_some());
    })
    .await
}

#[tokio::test]
async fn cli_metrics_fails_in_one_line_when_the_node_is_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Never started: nothing listens on its HTTP port.
    let node = NodeProc::new("down", dir.path(), None, &[]);
    let out = run_cli(&node, &["metrics"], None);
    assert!(!out.status.success(), "cete metrics against a dead node");
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
}

#[tokio::test]
async fn leader_reports_replication_lag_per_follower_and_snapshot_installs() {
    bounded(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start(3, &["--snapshot-threshold", "20"]).await;
        let leader = cluster.leader(SETTLE).await;
        let names: Vec<String> = cluster.nodes.iter().map(|n| n.name.clone()).collect();
        let followers: BTreeSet<String> = names
            .iter()
            .filter(|n| **n != names[leader])
            .cloned()
            .collect();

        // Every node sees three voters and names the same leader; only the
        // leader has lag series, one per follower, and they drain to 0.
        for node in &cluster.nodes {
            let samples = scrape(node).await;
            assert_eq!(
                value(&samples, "cete_raft_members", &[("role", "voter")]),
                Some(3.0),
                "{}",
                node.name
            );
            let leader_series = series(&samples, "cete_raft_leader");
            assert_eq!(leader_series.len(), 1, "{}", node.name);
            assert_eq!(leader_series[0].labels["id"], names[leader]);
            let on = series(&samples, "cete_raft_state")
                .into_iter()
                .filter(|s| s.value == 1.0)
                .map(|s| s.labels["state"].clone())
                .collect::<Vec<_>>();
            let expected = if node.name == names[leader] {
                "Leader"
            } else {
                "Follower"
            };
            assert_eq!(on, vec![expected.to_string()], "{}", node.name);
            if node.name != names[leader] {
                assert!(series(&samples, "cete_raft_replication_lag_entries").is_empty());
                assert!(value(&samples, "cete_raft_seconds_since_quorum_ack", &[]).is_none());
            }
        }
        let lag_of = |samples: &[Sample]| -> BTreeMap<String, u64> {
            series(samples, "cete_raft_replication_lag_entries")
                .into_iter()
                .map(|s| (s.labels["follower"].clone(), s.value as u64))
                .collect()
        };
        let samples = scrape(&cluster.nodes[leader]).await;
        assert_eq!(
            lag_of(&samples).keys().cloned().collect::<BTreeSet<_>>(),
            followers
        );
        assert!(value(&samples, "cete_raft_seconds_since_quorum_ack", &[]).is_some());

        // A stopped follower falls behind by every write made without it.
        let stopped = (0..3).find(|i| *i != leader).unwrap();
        let stopped_name = names[stopped].clone();
        assert!(cluster.nodes[stopped].terminate().success());
        let leader = cluster.leader(SETTLE).await;
        let client = Cluster::client();
        const WRITES: u64 = 100;
        for i in 0..WRITES {
            assert_eq!(
                put(&client, &cluster.nodes[leader], &format!("lag/{i}")).await,
                201
            );
        }
        let samples = scrape(&cluster.nodes[leader]).await;
        let lag = lag_of(&samples);
        assert!(
            lag[&stopped_name] >= WRITES,
            "lag of the stopped {stopped_name}: {lag:?}"
        );
        let resp = client
            .post(cluster.nodes[leader].url("/v1/snapshot"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);

        // Back up, it catches up by installing the leader's snapshot, and
        // the lag of every follower drains to 0.
        cluster.nodes[stopped].start();
        let back = &cluster.nodes[stopped];
        back.wait_ready(SETTLE).await;
        wait_until(
            SETTLE,
            "the restarted follower counts a snapshot install",
            || async move {
                let samples = scrape(back).await;
                (single(&samples, "cete_snapshot_installs_total") >= 1
                    && single(&samples, "cete_snapshot_install_duration_seconds_count") >= 1)
                    .then_some(())
            },
        )
        .await;
        let leader_node = &cluster.nodes[leader];
        let followers = &followers;
        wait_until(SETTLE, "every follower's lag drains to 0", || async move {
            let lag = lag_of(&scrape(leader_node).await);
            (lag.keys().cloned().collect::<BTreeSet<_>>() == *followers
                && lag.values().all(|v| *v == 0))
            .then_some(())
        })
        .await;
    })
    .await
}

/// The parser the tests above rely on: labels matched exactly, escapes
/// decoded, histogram parts tied to their family, malformed lines refused.
#[test]
fn exposition_parser_matches_labels_exactly() {
    let text = r#"# HELP a_total A counter.
# TYPE a_total counter
a_total{route="/v1/data/{key}",method="PUT"} 3
a_total{route="/v1/data/{key}",method="PUT",status="201"} 2
# TYPE h_seconds histogram
h_seconds_bucket{le="+Inf"} 4
h_seconds_sum 0.5
h_seconds_count 4
# TYPE g gauge
g{v="a \"quoted\\ \nline"} -1
"#;
    let samples = parse(text);
    assert_eq!(samples.len(), 6);
    let route = ("route", "/v1/data/{key}");
    assert_eq!(
        value(&samples, "a_total", &[route, ("method", "PUT")]),
        Some(3.0)
    );
    assert_eq!(
        value(
            &samples,
            "a_total",
            &[route, ("method", "PUT"), ("status", "201")]
        ),
        Some(2.0)
    );
    assert_eq!(value(&samples, "a_total", &[route]), None);
    assert_eq!(
        value(&samples, "h_seconds_bucket", &[("le", "+Inf")]),
        Some(4.0)
    );
    assert_eq!(value(&samples, "h_seconds_count", &[]), Some(4.0));
    assert_eq!(
        value(&samples, "g", &[("v", "a \"quoted\\ \nline")]),
        Some(-1.0)
    );
    for bad in [
        "untyped_series 1\n",
        "# TYPE x gauge\nx{a=\"1\" 1\n",
        "# TYPE x gauge\nx one\n",
    ] {
        assert!(
            std::panic::catch_unwind(|| parse(bad)).is_err(),
            "accepted {bad:?}"
        );
    }
}
