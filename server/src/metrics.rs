//! Prometheus metrics of one node, served as text at `/metrics` and `/v1/metrics`.
//!
//! Three kinds of series:
//! - recorded as things happen: HTTP requests (by route template, method and
//!   status) and snapshot builds and installs ([`SnapshotMetrics`], held by the store);
//! - read at scrape time from the source of truth, never copied: Raft state
//!   (openraft's `RaftMetrics`), RocksDB properties, and the committed index
//!   saved by the log store;
//! - process basics (`process_*`: memory, open fds, CPU) from `/proc`.
//!
//! Built on the `prometheus` crate (TiKV's): one registry per node, so two
//! nodes in one process never mix their series.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::ServerState;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::node::Node;
use cete_store::{SnapshotMetrics, CF_DATA, CF_LOGS, CF_META, CF_RAFT};

/// The exposition format's content type.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// The method label: the standard methods by name, anything else as `other`
/// (extension methods would otherwise grow the label set without bound).
pub fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Raft states as the `state` label of `cete_raft_state`; "Removed" is
/// Cete's own, for a node taken out of the cluster.
const STATES: &[&str] = &[
    "Leader",
    "Follower",
    "Candidate",
    "Learner",
    "Shutdown",
    "Removed",
];

/// RocksDB properties exported per column family, as (property, series, help).
const CF_PROPERTIES: &[(&str, &str, &str)] = &[
    (
        "rocksdb.total-sst-files-size",
        "cete_rocksdb_sst_files_size_bytes",
        "Size of all SST files of the column family (RocksDB rocksdb.total-sst-files-size).",
    ),
    (
        "rocksdb.estimate-live-data-size",
        "cete_rocksdb_live_data_size_bytes",
        "Estimated size of the live data of the column family (RocksDB rocksdb.estimate-live-data-size).",
    ),
    (
        "rocksdb.cur-size-all-mem-tables",
        "cete_rocksdb_memtables_size_bytes",
        "Size of the column family's memtables (RocksDB rocksdb.cur-size-all-mem-tables).",
    ),
];

const COLUMN_FAMILIES: &[&str] = &[CF_DATA, CF_LOGS, CF_RAFT, CF_META];

/// The series refreshed at scrape time.
struct Sampled {
    info: IntGaugeVec,
    term: IntGauge,
    state: IntGaugeVec,
    leader: IntGaugeVec,
    last_log_index: IntGauge,
    committed_index: IntGauge,
    applied_index: IntGauge,
    snapshot_index: IntGauge,
    purged_index: IntGauge,
    members: IntGaugeVec,
    quorum_ack_seconds: prometheus::Gauge,
    matched_index: IntGaugeVec,
    replication_lag: IntGaugeVec,
    cf_properties: Vec<(&'static str, IntGaugeVec)>,
    keys: IntGauge,
    revision: IntGauge,
    proposals: IntCounter,
    proposed_writes: IntCounter,
    read_rounds: IntCounterVec,
    read_round_reads: IntCounterVec,
    read_round_seconds: prometheus::CounterVec,
}

/// Brings a counter up to `total`, a count kept elsewhere (counters only rise).
fn catch_up(counter: &IntCounter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric name and help");
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

/// All metrics of one node.
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_seconds: HistogramVec,
    /// Held while sampling and encoding, so two scrapes at once never see
    /// each other's half-reset series.
    sampled: Mutex<Sampled>,
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric name and help");
    registry
        .register(Box::new(g.clone()))
        .expect("metric names are unique");
    g
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric name and labels");
    registry
        .register(Box::new(g.clone()))
        .expect("metric names are unique");
    g
}

/// An index or size as a gauge value (0 for none).
fn gauge_value(i: Option<u64>) -> i64 {
    i64::try_from(i.unwrap_or(0)).unwrap_or(i64::MAX)
}

impl Metrics {
    /// A node's metrics, with the store's snapshot counters registered too.
    pub fn new(snapshots: &SnapshotMetrics) -> Metrics {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "cete_http_requests_total",
                "HTTP requests answered, by route template, method and status code.",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let http_seconds = HistogramVec::new(
            HistogramOpts::new(
                "cete_http_request_duration_seconds",
                "Time from request to response headers, by route template, method and status code.",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(http_requests.clone()))
            .expect("metric names are unique");
        registry
            .register(Box::new(http_seconds.clone()))
            .expect("metric names are unique");
        snapshots
            .register(&registry)
            .expect("metric names are unique");
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("metric names are unique");

        let r = &registry;
        let sampled = Sampled {
            info: gauge_vec(
                r,
                "cete_node_info",
                "Always 1; the labels name this node and its version.",
                &["id", "version"],
            ),
            term: gauge(r, "cete_raft_term", "Current Raft term."),
            state: gauge_vec(
                r,
                "cete_raft_state",
                "1 for this node's current Raft state, 0 for the others (Removed: taken out of the cluster).",
                &["state"],
            ),
            leader: gauge_vec(
                r,
                "cete_raft_leader",
                "1 with the id of the leader this node knows; no series while no leader is known.",
                &["id"],
            ),
            last_log_index: gauge(
                r,
                "cete_raft_last_log_index",
                "Index of the last entry in this node's Raft log.",
            ),
            committed_index: gauge(
                r,
                "cete_raft_committed_index",
                "Index of the last entry this node knows to be committed (as saved by its log store).",
            ),
            applied_index: gauge(
                r,
                "cete_raft_applied_index",
                "Index of the last entry applied to this node's state machine.",
            ),
            snapshot_index: gauge(
                r,
                "cete_raft_snapshot_index",
                "Last log index covered by this node's current snapshot (0: none).",
            ),
            purged_index: gauge(
                r,
                "cete_raft_purged_index",
                "Last log index purged from this node's log (0: none).",
            ),
            members: gauge_vec(
                r,
                "cete_raft_members",
                "Members of the cluster configuration this node holds, by role.",
                &["role"],
            ),
            // Not registered: encode() adds it only while this node leads.
            quorum_ack_seconds: prometheus::Gauge::new(
                "cete_raft_seconds_since_quorum_ack",
                "On the leader: seconds since a quorum last acknowledged it; no series elsewhere.",
            )
            .expect("valid metric"),
            matched_index: gauge_vec(
                r,
                "cete_raft_replication_matched_index",
                "On the leader: last log index known to be replicated to each other member.",
                &["follower"],
            ),
            replication_lag: gauge_vec(
                r,
                "cete_raft_replication_lag_entries",
                "On the leader: its last log index minus each other member's matched index.",
                &["follower"],
            ),
            cf_properties: CF_PROPERTIES
                .iter()
                .map(|(property, name, help)| (*property, gauge_vec(r, name, help, &["cf"])))
                .collect(),
            keys: gauge(
                r,
                "cete_keys_estimated",
                "Estimated number of keys stored (RocksDB rocksdb.estimate-num-keys on the data column family; an estimate, not an exact count).",
            ),
            revision: gauge(
                r,
                "cete_revision",
                "Revision of the last write applied here (the same write has the same revision on every member).",
            ),
            proposals: counter(
                r,
                "cete_proposals_total",
                "Raft log entries this node proposed for client writes (each carries one or more writes).",
            ),
            proposed_writes: counter(
                r,
                "cete_proposed_writes_total",
                "Client writes this node proposed; divided by cete_proposals_total, the mean writes per entry.",
            ),
            read_rounds: counter_vec(
                r,
                "cete_read_index_rounds_total",
                "Read-index rounds for linearizable reads: as leader (leadership confirmations) and as follower (ReadIndex calls to the leader).",
                &["role"],
            ),
            read_round_reads: counter_vec(
                r,
                "cete_read_index_reads_total",
                "Linearizable reads served by those rounds, by role.",
                &["role"],
            ),
            read_round_seconds: {
                let c = prometheus::CounterVec::new(
                    Opts::new(
                        "cete_read_index_round_seconds_total",
                        "Time spent in read-index rounds, summed, by role.",
                    ),
                    &["role"],
                )
                .expect("valid metric");
                r.register(Box::new(c.clone()))
                    .expect("metric names are unique");
                c
            },
        };
        Metrics {
            registry,
            http_requests,
            http_seconds,
            sampled: Mutex::new(sampled),
        }
    }

    /// Counts one answered HTTP request under its route template.
    pub fn record_request(
        &self,
        method: &http::Method,
        route: &'static str,
        status: http::StatusCode,
        elapsed: Duration,
    ) {
        let labels = [route, method_label(method), status.as_str()];
        self.http_requests.with_label_values(&labels).inc();
        self.http_seconds
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Samples the node and renders every series as Prometheus text. Runs
    /// off the async runtime: RocksDB and `/proc` are read here.
    pub async fn render(self: Arc<Self>, node: Arc<Node>) -> Result<String, String> {
        tokio::task::spawn_blocking(move || self.encode(&node))
            .await
            .map_err(|e| format!("metrics task failed: {e}"))?
    }

    fn encode(&self, node: &Node) -> Result<String, String> {
        let sampled = self.sampled.lock().unwrap_or_else(|e| e.into_inner());
        let has_quorum_ack = sample(&sampled, node);
        let mut families = self.registry.gather();
        // Only a leader has a quorum-ack age: keep the series absent elsewhere
        // rather than report a made-up value.
        if has_quorum_ack {
            families.extend(prometheus::core::Collector::collect(
                &sampled.quorum_ack_seconds,
            ));
            families.sort_by(|a, b| a.name().cmp(b.name()));
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut out)
            .map_err(|e| format!("encoding metrics: {e}"))?;
        drop(sampled);
        String::from_utf8(out).map_err(|e| format!("encoding metrics: {e}"))
    }
}

/// Reads the current values into the scrape-time series. Returns whether
/// the quorum-ack age was set (only a leader has one).
fn sample(s: &Sampled, node: &Node) -> bool {
    let m = node.metrics();
    let status = node.node_status();

    s.info.reset();
    s.info
        .with_label_values(&[node.info.name.as_str(), env!("CARGO_PKG_VERSION")])
        .set(1);
    s.term.set(gauge_value(Some(m.current_term)));
    for state in STATES {
        s.state
            .with_label_values(&[*state])
            .set(i64::from(status.state == *state));
    }
    s.leader.reset();
    if let Some(leader) = &status.leader {
        s.leader.with_label_values(&[leader.as_str()]).set(1);
    }
    s.last_log_index.set(gauge_value(m.last_log_index));
    s.applied_index
        .set(gauge_value(m.last_applied.map(|l| l.index)));
    s.snapshot_index
        .set(gauge_value(m.snapshot.map(|l| l.index)));
    s.purged_index.set(gauge_value(m.purged.map(|l| l.index)));
    s.revision
        .set(gauge_value(Some(node.reader().events().published())));
    let proposer = node.proposer_stats();
    catch_up(&s.proposals, proposer.proposals.load(Ordering::Relaxed));
    catch_up(
        &s.proposed_writes,
        proposer.commands.load(Ordering::Relaxed),
    );
    for (role, stats) in node.read_round_stats() {
        catch_up(
            &s.read_rounds.with_label_values(&[role]),
            stats.rounds.load(Ordering::Relaxed),
        );
        catch_up(
            &s.read_round_reads.with_label_values(&[role]),
            stats.calls.load(Ordering::Relaxed),
        );
        let seconds = s.read_round_seconds.with_label_values(&[role]);
        let total = stats.round_micros.load(Ordering::Relaxed) as f64 / 1e6;
        seconds.inc_by((total - seconds.get()).max(0.0));
    }
    let db = node.reader().db();
    s.committed_index
        .set(gauge_value(cete_store::log::committed_index(db)));

    let membership = m.membership_config.membership();
    let voters = membership.voter_ids().count();
    let all = membership.nodes().count();
    s.members.with_label_values(&["voter"]).set(voters as i64);
    s.members
        .with_label_values(&["learner"])
        .set(all.saturating_sub(voters) as i64);

    if let Some(ms) = m.millis_since_quorum_ack {
        s.quorum_ack_seconds.set(ms as f64 / 1000.0);
    }
    s.matched_index.reset();
    s.replication_lag.reset();
    if m.state == ServerState::Leader {
        if let Some(replication) = &m.replication {
            let last = m.last_log_index.unwrap_or(0);
            for (id, matched) in replication.iter() {
                if *id == node.id {
                    continue;
                }
                let name = membership
                    .get_node(id)
                    .map_or_else(|| id.to_string(), |n| n.name.clone());
                let matched = matched.map_or(0, |l| l.index);
                s.matched_index
                    .with_label_values(&[name.as_str()])
                    .set(gauge_value(Some(matched)));
                s.replication_lag
                    .with_label_values(&[name.as_str()])
                    .set(gauge_value(Some(last.saturating_sub(matched))));
            }
        }
    }

    for (property, series) in &s.cf_properties {
        for cf in COLUMN_FAMILIES {
            if let Ok(Some(value)) = db.rocks().property_int_value_cf(db.cf(cf), *property) {
                series
                    .with_label_values(&[*cf])
                    .set(gauge_value(Some(value)));
            }
        }
    }
    s.keys
        .set(gauge_value(Some(node.reader().approximate_key_count())));
    m.millis_since_quorum_ack.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&http::Method::PUT), "PUT");
        let odd = http::Method::from_bytes(b"PROPFIND").unwrap();
        assert_eq!(method_label(&odd), "other");
    }

    #[test]
    fn requests_are_counted_by_template() {
        let metrics = Metrics::new(&SnapshotMetrics::default());
        for key in ["a", "b/c", "d"] {
            metrics.record_request(
                &http::Method::GET,
                crate::api::routes::template(&format!("/v1/data/{key}")),
                http::StatusCode::OK,
                Duration::from_millis(2),
            );
        }
        let count = metrics
            .http_requests
            .with_label_values(&["/v1/data/{key}", "GET", "200"])
            .get();
        assert_eq!(count, 3);
        let series = metrics
            .registry
            .gather()
            .into_iter()
            .find(|f| f.name() == "cete_http_requests_total")
            .unwrap();
        assert_eq!(series.get_metric().len(), 1, "one series for three keys");
    }
}
