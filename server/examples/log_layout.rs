//! Does the Raft log belong in a RocksDB instance of its own?
//!
//! Measures synced log appends (the cost every write waits for) while a
//! state-machine writer fills the data column family as fast as it can
//! (unsynced, as the state machine writes; its memtables flush and compact
//! meanwhile), in two layouts:
//! - shared: log and data in one database, so one WAL (as Cete does);
//! - split: log and data in two databases, two WALs (as TiKV does).
//!
//! Run: `cargo run --release -p cete-server --example log_layout [seconds]`.
//! Prints appends/s and append latency percentiles for each layout, with
//! and without the state-machine writer, side by side.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};

const ENTRY: usize = 64 * 1024; // one batched proposal of ~600 small writes
const VALUE: usize = 100;

fn open(path: &std::path::Path, cfs: &[&str]) -> DB {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let cfs = cfs
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
    DB::open_cf_descriptors(&opts, path, cfs).expect("open RocksDB")
}

struct Figures {
    appends_per_sec: f64,
    p50_us: u128,
    p99_us: u128,
    data_writes_per_sec: f64,
}

/// Synced appends to `log` for `secs`; meanwhile, if `data` is given, a
/// second thread writes unsynced batches of small values to it.
fn run(log: Arc<DB>, data: Option<Arc<DB>>, secs: u64) -> Figures {
    let stop = Arc::new(AtomicBool::new(false));
    let writer = data.map(|db| {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let cf = db.cf_handle("data").expect("data cf");
            let mut written = 0u64;
            let value = vec![7u8; VALUE];
            while !stop.load(Ordering::Relaxed) {
                let mut batch = WriteBatch::default();
                for _ in 0..500 {
                    batch.put_cf(cf, (written % 1_000_000).to_be_bytes(), &value);
                    written += 1;
                }
                db.write(batch).expect("data write");
            }
            written
        })
    });
    let cf = log.cf_handle("logs").expect("logs cf");
    let mut sync = WriteOptions::default();
    sync.set_sync(true);
    let entry = vec![1u8; ENTRY];
    let mut latencies = Vec::new();
    let started = Instant::now();
    let mut index = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        let t = Instant::now();
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, index.to_be_bytes(), &entry);
        log.write_opt(batch, &sync).expect("log append");
        latencies.push(t.elapsed().as_micros());
        index += 1;
        if index.is_multiple_of(1024) {
            // Keep the log short, as purges do.
            log.delete_range_cf(cf, 0u64.to_be_bytes(), (index - 512).to_be_bytes())
                .expect("purge");
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let data_writes = writer.map_or(0, |w| w.join().expect("writer"));
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    Figures {
        appends_per_sec: latencies.len() as f64 / elapsed,
        p50_us: at(0.5),
        p99_us: at(0.99),
        data_writes_per_sec: data_writes as f64 / elapsed,
    }
}

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "synced appends of {} KiB entries, {secs} s per row; data writer: unsynced batches of 500 x {VALUE} B",
        ENTRY / 1024
    );
    println!("| layout | data writer | appends/s | p50 µs | p99 µs | data writes/s |");
    println!("|---|---|---|---|---|---|");
    for (layout, with_writer) in [
        ("shared", false),
        ("shared", true),
        ("split", false),
        ("split", true),
    ] {
        let path = dir.path().join(format!("{layout}-{with_writer}"));
        let (log, data) = if layout == "shared" {
            let db = Arc::new(open(&path, &["logs", "data"]));
            (db.clone(), db)
        } else {
            (
                Arc::new(open(&path.join("log"), &["logs"])),
                Arc::new(open(&path.join("sm"), &["data"])),
            )
        };
        let f = run(log, with_writer.then_some(data), secs);
        println!(
            "| {layout} | {} | {:.0} | {} | {} | {:.0} |",
            if with_writer { "on" } else { "off" },
            f.appends_per_sec,
            f.p50_us,
            f.p99_us,
            f.data_writes_per_sec
        );
    }
}
