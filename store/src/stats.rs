//! Snapshot builds and installs, counted by the state machine as they happen.
//! The node's metrics registry (the server's `metrics.rs`) registers them; the
//! store owns them because only it sees a snapshot finish.

use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounter, Registry};

/// Snapshot builds and installs, counted by the state machine as they finish.
pub struct SnapshotMetrics {
    builds: IntCounter,
    build_seconds: Histogram,
    installs: IntCounter,
    install_seconds: Histogram,
}

/// Buckets for snapshot durations: from a tiny store to a large one.
const SNAPSHOT_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0];

impl Default for SnapshotMetrics {
    fn default() -> SnapshotMetrics {
        let counter = |name: &str, help: &str| {
            IntCounter::new(name, help).expect("valid metric name and help")
        };
        let histogram = |name: &str, help: &str| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(SNAPSHOT_BUCKETS.to_vec()))
                .expect("valid metric name and buckets")
        };
        SnapshotMetrics {
            builds: counter(
                "cete_snapshot_builds_total",
                "Snapshots this node built and recorded.",
            ),
            build_seconds: histogram(
                "cete_snapshot_build_duration_seconds",
                "Time to build a snapshot: write the file and record it.",
            ),
            installs: counter(
                "cete_snapshot_installs_total",
                "Snapshots received from the leader and installed.",
            ),
            install_seconds: histogram(
                "cete_snapshot_install_duration_seconds",
                "Time to install a received snapshot: copy, verify and replace the state.",
            ),
        }
    }
}

impl SnapshotMetrics {
    /// A snapshot was built in `took`.
    pub fn built(&self, took: Duration) {
        self.builds.inc();
        self.build_seconds.observe(took.as_secs_f64());
    }

    /// A received snapshot was installed in `took`.
    pub fn installed(&self, took: Duration) {
        self.installs.inc();
        self.install_seconds.observe(took.as_secs_f64());
    }

    /// Adds these series to `registry` (the node's, at `/metrics`).
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.builds.clone()))?;
        registry.register(Box::new(self.build_seconds.clone()))?;
        registry.register(Box::new(self.installs.clone()))?;
        registry.register(Box::new(self.install_seconds.clone()))
    }
}
