//! `cete bench`: concurrent sequential clients issuing reads and writes,
//! with latency percentiles from an HDR histogram (like redis-benchmark).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::cli::{BenchArgs, BenchTarget, Consistency};
use crate::client::{ApiError, Call, Client, Options, Reply, TransportError};
use crate::commands::{print_pretty, write_stdout};
use crate::urls;

/// Latencies are recorded in microseconds, from 1 µs to 10 minutes.
const HIST_MAX_US: u64 = 600_000_000;

/// Results of one kind of operation.
pub struct Stats {
    pub hist: Histogram<u64>,
    pub errors: BTreeMap<String, u64>,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            hist: Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("valid histogram bounds"),
            errors: BTreeMap::new(),
        }
    }

    fn merge(&mut self, other: &Stats) {
        self.hist.add(&other.hist).expect("same histogram bounds");
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += n;
        }
    }

    fn record(&mut self, outcome: Result<(), String>, latency: Duration) {
        match outcome {
            Ok(()) => self
                .hist
                .saturating_record((latency.as_micros() as u64).max(1)),
            Err(kind) => *self.errors.entry(kind).or_default() += 1,
        }
    }
}

/// The numbers printed for one kind of operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub ops: u64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub ops_per_sec: f64,
    /// p50, p99, p99.9 and max in milliseconds; `None` without successful ops.
    pub latency_ms: Option<[f64; 4]>,
}

impl Summary {
    pub fn of(stats: &Stats, elapsed: Duration) -> Summary {
        let ops = stats.hist.len();
        let secs = elapsed.as_secs_f64().max(1e-9);
        let ms = |us: u64| us as f64 / 1000.0;
        let latency_ms = (ops > 0).then(|| {
            [
                ms(stats.hist.value_at_quantile(0.50)),
                ms(stats.hist.value_at_quantile(0.99)),
                ms(stats.hist.value_at_quantile(0.999)),
                ms(stats.hist.max()),
            ]
        });
        Summary {
            ops,
            errors: stats.errors.values().sum(),
            errors_by_kind: stats.errors.clone(),
            ops_per_sec: ops as f64 / secs,
            latency_ms,
        }
    }

    /// One line: `writes: 100 ops, 0 errors, 50.0 ops/s, latency ms p50 ... max ...`.
    pub fn line(&self, label: &str) -> String {
        let mut s = format!("{label:<7} {} ops, {} errors", self.ops, self.errors);
        if !self.errors_by_kind.is_empty() {
            let kinds: Vec<String> = self
                .errors_by_kind
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = write!(s, " ({})", kinds.join(", "));
        }
        let _ = write!(s, ", {:.1} ops/s", self.ops_per_sec);
        if let Some([p50, p99, p999, max]) = self.latency_ms {
            let _ = write!(
                s,
                ", latency ms p50 {p50:.3} p99 {p99:.3} p99.9 {p999:.3} max {max:.3}"
            );
        }
        s
    }

    pub fn to_json(&self) -> Value {
        let latency = match self.latency_ms {
            Some([p50, p99, p999, max]) => {
                json!({ "p50": p50, "p99": p99, "p99_9": p999, "max": max })
            }
            None => Value::Null,
        };
        json!({
            "ops": self.ops,
            "errors": self.errors,
            "errors_by_kind": self.errors_by_kind,
            "ops_per_sec": round3(self.ops_per_sec),
            "latency_ms": latency,
        })
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Names an error for the per-kind counts: the server's code, or the
/// transport failure's kind.
fn error_kind(err: &anyhow::Error) -> String {
    if let Some(api) = err.downcast_ref::<ApiError>() {
        return api.code.clone();
    }
    if let Some(t) = err.downcast_ref::<TransportError>() {
        return t.kind().to_string();
    }
    "other".to_string()
}

enum Stop {
    At(Instant),
    After { sent: AtomicU64, total: u64 },
}

impl Stop {
    fn reached(&self) -> bool {
        match self {
            Stop::At(deadline) => Instant::now() >= *deadline,
            Stop::After { sent, total } => sent.fetch_add(1, Ordering::Relaxed) >= *total,
        }
    }
}

/// etcd's default `--max-txn-ops`: the most puts one preload transaction carries.
const ETCD_TXN_OPS: usize = 128;
/// Bytes of values and keys per preload transaction, well under etcd's
/// default 1.5 MiB request limit.
const ETCD_TXN_BYTES: usize = 1 << 20;
/// Keys per page when listing what already exists.
const CETE_LIST_PAGE: usize = 1000;
const ETCD_LIST_PAGE: usize = 10_000;

/// The key space, and how one read or write is sent to the target.
enum Api {
    /// `PUT`/`GET /v1/data/KEY`.
    Cete {
        paths: Vec<String>,
        value: Bytes,
        read_query: Option<String>,
    },
    /// `POST /v3/kv/put` and `/v3/kv/range` with base64 keys and value.
    Etcd {
        keys: Vec<String>,
        value: String,
        serializable: bool,
    },
}

impl Api {
    fn new(args: &BenchArgs, names: &[String], value: &[u8]) -> Result<Api> {
        Ok(match args.target {
            BenchTarget::Cete => Api::Cete {
                paths: names
                    .iter()
                    .map(|k| crate::commands::data_path(k))
                    .collect::<Result<Vec<_>>>()?,
                value: Bytes::copy_from_slice(value),
                read_query: urls::query_string(
                    &args
                        .consistency
                        .map(|c| vec![("consistency", c.as_str().to_string())])
                        .unwrap_or_default(),
                ),
            },
            // etcd reads are linearizable unless asked to be serializable.
            BenchTarget::Etcd => Api::Etcd {
                keys: names.iter().map(|k| B64.encode(k)).collect(),
                value: B64.encode(value),
                serializable: args.consistency == Some(Consistency::Stale),
            },
        })
    }

    fn len(&self) -> usize {
        match self {
            Api::Cete { paths, .. } => paths.len(),
            Api::Etcd { keys, .. } => keys.len(),
        }
    }

    fn write_call(&self, i: usize) -> Call {
        match self {
            Api::Cete { paths, value, .. } => {
                Call::new(Method::PUT, paths[i].clone()).body(value.clone())
            }
            Api::Etcd { keys, value, .. } => etcd_call(
                "/v3/kv/put",
                format!(r#"{{"key":"{}","value":"{value}"}}"#, keys[i]),
            ),
        }
    }

    fn read_call(&self, i: usize) -> Call {
        match self {
            Api::Cete {
                paths, read_query, ..
            } => Call::get(paths[i].clone()).query(read_query.clone()),
            Api::Etcd {
                keys, serializable, ..
            } => {
                let extra = if *serializable {
                    r#","serializable":true"#
                } else {
                    ""
                };
                etcd_call("/v3/kv/range", format!(r#"{{"key":"{}"{extra}}}"#, keys[i]))
            }
        }
    }

    /// Sends one operation; `Err` names the kind of failure.
    async fn send(&self, client: &Client, call: &Call, is_read: bool) -> Result<(), String> {
        match self {
            Api::Cete { .. } => client
                .call(call)
                .await
                .map(drop)
                .map_err(|e| error_kind(&e)),
            Api::Etcd { .. } => {
                let reply = etcd_send(client, call).await?;
                // A range for a missing key is a 200 without `kvs`; Cete
                // answers 404 KeyNotFound, so count it the same way.
                if is_read && !contains(&reply.body, br#""kvs""#) {
                    return Err("KeyNotFound".to_string());
                }
                Ok(())
            }
        }
    }
}

fn etcd_call(path: &str, body: String) -> Call {
    let mut call = Call::new(Method::POST, path).body(Bytes::from(body));
    call.headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    call
}

/// Sends a call to etcd's gateway; a non-2xx answer becomes the kind of
/// error named by its `message` (`etcdserver: request timed out`, ...).
async fn etcd_send(client: &Client, call: &Call) -> Result<Reply, String> {
    let reply = client
        .execute(call)
        .await
        .map_err(|e| e.kind().to_string())?;
    if reply.status.is_success() {
        return Ok(reply);
    }
    let message = serde_json::from_slice::<Value>(&reply.body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| format!("HTTP {}", reply.status.as_u16()));
    Err(message)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The end of etcd's range for keys starting with `prefix` (its
/// `clientv3.GetPrefixRangeEnd`): the prefix with its last byte below 0xff
/// incremented; `\0` (all keys) when there is none.
fn etcd_prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

struct Plan {
    api: Api,
    read_ratio: f64,
    stop: Stop,
}

/// Runs the benchmark against `base` (writes) and `args.addresses` (reads).
pub async fn run(args: BenchArgs, base: Options) -> Result<ExitCode> {
    let pool = args.concurrency as usize;
    let timeout = base.timeout;
    let tls = base.tls.clone();
    let writer = Arc::new(Client::new(Options {
        pool_size: pool,
        ..base
    })?);
    let mut readers = Vec::new();
    for addr in &args.addresses {
        let address = urls::normalize_address(addr)
            .map_err(|e| crate::commands::UsageError(format!("--addresses: {e}")))?;
        readers.push(Arc::new(Client::new(Options {
            address,
            timeout,
            tls: tls.clone(),
            pool_size: pool,
        })?));
    }
    if readers.is_empty() {
        readers.push(writer.clone());
    }

    let width = (args.keys - 1).to_string().len();
    let names: Vec<String> = (0..args.keys)
        .map(|i| format!("{}{i:0width$}", args.key_prefix))
        .collect();
    let mut value = vec![0u8; args.value_size];
    StdRng::from_os_rng().fill(&mut value[..]);
    let api = Api::new(&args, &names, &value)?;

    if args.preload_only {
        let started = Instant::now();
        let written = preload(&writer, &args, &api, &names).await?;
        let elapsed = started.elapsed().as_secs_f64();
        if args.json {
            print_pretty(&json!({
                "target": args.target.as_str(),
                "keys": args.keys,
                "preloaded": written,
                "elapsed_s": round3(elapsed),
            }))?;
        } else {
            write_stdout(
                format!(
                    "bench: preloaded {written} of {} keys in {elapsed:.2} s\n",
                    args.keys
                )
                .as_bytes(),
            )?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.read_ratio > 0.0 && !args.no_preload {
        preload(&writer, &args, &api, &names).await?;
    }

    let stop = match args.requests {
        Some(total) => Stop::After {
            sent: AtomicU64::new(0),
            total,
        },
        None => Stop::At(Instant::now() + args.duration),
    };
    let plan = Arc::new(Plan {
        api,
        read_ratio: args.read_ratio,
        stop,
    });

    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.concurrency as usize {
        let plan = plan.clone();
        let writer = writer.clone();
        let reader = readers[i % readers.len()].clone();
        tasks.push(tokio::spawn(worker(plan, writer, reader)));
    }
    let mut reads = Stats::new();
    let mut writes = Stats::new();
    for task in tasks {
        let (r, w) = task.await.context("a benchmark task failed")?;
        reads.merge(&r);
        writes.merge(&w);
    }
    let elapsed = started.elapsed();

    let mut total = Stats::new();
    total.merge(&reads);
    total.merge(&writes);
    let (reads, writes, total) = (
        Summary::of(&reads, elapsed),
        Summary::of(&writes, elapsed),
        Summary::of(&total, elapsed),
    );
    if args.json {
        let report = json!({
            "config": {
                "target": args.target.as_str(),
                "address": writer.base().as_str(),
                "read_addresses": readers.iter().map(|c| c.base().as_str()).collect::<Vec<_>>(),
                "concurrency": args.concurrency,
                "duration_s": args.requests.is_none().then_some(args.duration.as_secs_f64()),
                "requests": args.requests,
                "value_size": args.value_size,
                "keys": args.keys,
                "read_ratio": args.read_ratio,
                "consistency": args.consistency.map(|c| c.as_str()),
                "key_prefix": args.key_prefix,
            },
            "elapsed_s": round3(elapsed.as_secs_f64()),
            "total": total.to_json(),
            "reads": reads.to_json(),
            "writes": writes.to_json(),
        });
        print_pretty(&report)?;
    } else {
        let mut out = format!(
            "bench: {}, {} clients, {} keys, {}-byte values, read ratio {:.2}, {:.2} s\n",
            args.target.as_str(),
            args.concurrency,
            args.keys,
            args.value_size,
            args.read_ratio,
            elapsed.as_secs_f64()
        );
        for (label, s) in [("writes:", &writes), ("reads:", &reads), ("total:", &total)] {
            if s.ops + s.errors > 0 || label == "total:" {
                out.push_str(&s.line(label));
                out.push('\n');
            }
        }
        write_stdout(out.as_bytes())?;
    }
    Ok(if total.ops == 0 && total.errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn worker(plan: Arc<Plan>, writer: Arc<Client>, reader: Arc<Client>) -> (Stats, Stats) {
    let mut rng = StdRng::from_os_rng();
    let mut reads = Stats::new();
    let mut writes = Stats::new();
    while !plan.stop.reached() {
        let i = rng.random_range(0..plan.api.len());
        let is_read = plan.read_ratio > 0.0 && rng.random::<f64>() < plan.read_ratio;
        let (call, client, stats) = if is_read {
            (plan.api.read_call(i), &reader, &mut reads)
        } else {
            (plan.api.write_call(i), &writer, &mut writes)
        };
        let started = Instant::now();
        let outcome = plan.api.send(client, &call, is_read).await;
        stats.record(outcome, started.elapsed());
    }
    (reads, writes)
}

/// Writes the keys of the key space that do not exist yet (Cete: one PUT
/// each; etcd: transactions of many puts), `--concurrency` requests at a
/// time. Returns how many it wrote.
async fn preload(client: &Client, args: &BenchArgs, api: &Api, names: &[String]) -> Result<u64> {
    let existing = match api {
        Api::Cete { .. } => existing_keys(client, &args.key_prefix).await?,
        Api::Etcd { .. } => etcd_existing_keys(client, &args.key_prefix).await?,
    };
    let missing: Vec<usize> = (0..names.len())
        .filter(|&i| !existing.contains(&names[i]))
        .collect();
    if missing.is_empty() {
        return Ok(0);
    }
    eprintln!(
        "bench: preloading {} of {} keys",
        missing.len(),
        names.len()
    );
    // Requests are built as they are sent: a million keys' worth of bodies
    // would be hundreds of megabytes.
    let calls: Box<dyn Iterator<Item = Call> + Send + '_> = match api {
        Api::Cete { .. } => Box::new(missing.iter().map(|&i| api.write_call(i))),
        Api::Etcd { keys, value, .. } => {
            let put = move |i: usize| {
                format!(
                    r#"{{"request_put":{{"key":"{}","value":"{value}"}}}}"#,
                    keys[i]
                )
            };
            let per_txn = (ETCD_TXN_BYTES / put(missing[0]).len()).clamp(1, ETCD_TXN_OPS);
            Box::new(
                missing
                    .chunks(per_txn)
                    .map(move |chunk| etcd_txn(&chunk.iter().map(|&i| put(i)).collect::<Vec<_>>())),
            )
        }
    };
    let mut sent = futures::stream::iter(calls)
        .map(|call| async move {
            match api {
                Api::Cete { .. } => client.call(&call).await.map(drop),
                Api::Etcd { .. } => etcd_send(client, &call)
                    .await
                    .map(drop)
                    .map_err(anyhow::Error::msg),
            }
        })
        .buffer_unordered(args.concurrency as usize);
    while let Some(result) = sent.next().await {
        result.context("preloading the benchmark keys")?;
    }
    Ok(missing.len() as u64)
}

fn etcd_txn(puts: &[String]) -> Call {
    etcd_call(
        "/v3/kv/txn",
        format!(r#"{{"success":[{}]}}"#, puts.join(",")),
    )
}

async fn existing_keys(client: &Client, prefix: &str) -> Result<HashSet<String>> {
    let mut keys = HashSet::new();
    let mut start_after: Option<String> = None;
    loop {
        let mut pairs = vec![
            ("prefix", prefix.to_string()),
            ("limit", CETE_LIST_PAGE.to_string()),
        ];
        if let Some(after) = &start_after {
            pairs.push(("start_after", after.clone()));
        }
        let call = Call::get("/v1/data").query(urls::query_string(&pairs));
        let page = client.call(&call).await?.json()?;
        for entry in page
            .get("keys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(k) = entry.get("key").and_then(Value::as_str) {
                keys.insert(k.to_string());
            }
        }
        let more = page.get("more").and_then(Value::as_bool) == Some(true);
        match page.get("next_start_after").and_then(Value::as_str) {
            Some(next) if more && start_after.as_deref() != Some(next) => {
                start_after = Some(next.to_string())
            }
            _ => return Ok(keys),
        }
    }
}

/// The keys under `prefix` in etcd, listed in pages of keys-only ranges.
async fn etcd_existing_keys(client: &Client, prefix: &str) -> Result<HashSet<String>> {
    let end = B64.encode(etcd_prefix_end(prefix.as_bytes()));
    // An empty prefix is the whole key space: etcd's `\0` to `\0`.
    let mut from = if prefix.is_empty() {
        vec![0]
    } else {
        prefix.as_bytes().to_vec()
    };
    let mut keys = HashSet::new();
    loop {
        let body = format!(
            r#"{{"key":"{}","range_end":"{end}","keys_only":true,"limit":{ETCD_LIST_PAGE}}}"#,
            B64.encode(&from)
        );
        let reply = etcd_send(client, &etcd_call("/v3/kv/range", body))
            .await
            .map_err(|e| anyhow::anyhow!("listing the benchmark keys in etcd: {e}"))?;
        let page = reply.json()?;
        let mut last = None;
        for kv in page
            .get("kvs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let raw = kv
                .get("key")
                .and_then(Value::as_str)
                .and_then(|k| B64.decode(k).ok())
                .context("etcd listed a key that is not base64")?;
            if let Ok(k) = String::from_utf8(raw.clone()) {
                keys.insert(k);
            }
            last = Some(raw);
        }
        match last {
            // The next page starts just after the last key listed.
            Some(mut raw) if page.get("more").and_then(Value::as_bool) == Some(true) => {
                raw.push(0);
                from = raw;
            }
            _ => return Ok(keys),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn summary_percentiles_and_line() {
        let mut stats = Stats::new();
        // 1000 successes: 1 ms .. 1000 ms, one error of each of two kinds.
        for ms in 1..=1000u64 {
            stats.record(Ok(()), Duration::from_millis(ms));
        }
        stats.record(Err("NoLeader".into()), Duration::ZERO);
        stats.record(Err("timeout".into()), Duration::ZERO);
        stats.record(Err("timeout".into()), Duration::ZERO);
        let s = Summary::of(&stats, Duration::from_secs(4));
        assert_eq!(s.ops, 1000);
        assert_eq!(s.errors, 3);
        assert_eq!(s.ops_per_sec, 250.0);
        let [p50, p99, p999, max] = s.latency_ms.unwrap();
        // HDR buckets at 3 significant digits: within 0.1% of the exact value.
        assert!((p50 - 500.0).abs() <= 0.5, "{p50}");
        assert!((p99 - 990.0).abs() <= 1.0, "{p99}");
        assert!((p999 - 999.0).abs() <= 1.0, "{p999}");
        assert!((max - 1000.0).abs() <= 1.0, "{max}");
        assert_eq!(
            s.line("writes:"),
            format!(
                "writes: 1000 ops, 3 errors (NoLeader 1, timeout 2), 250.0 ops/s, \
                 latency ms p50 {p50:.3} p99 {p99:.3} p99.9 {p999:.3} max {max:.3}"
            )
        );
        let j = s.to_json();
        assert_eq!(j["ops"], 1000);
        assert_eq!(j["errors_by_kind"]["timeout"], 2);
        assert_eq!(j["latency_ms"]["p50"], p50);
    }

    #[test]
    fn exact_format_of_small_values() {
        let mut stats = Stats::new();
        stats.record(Ok(()), Duration::from_micros(1500));
        let s = Summary::of(&stats, Duration::from_secs(2));
        assert_eq!(
            s.line("reads:"),
            "reads:  1 ops, 0 errors, 0.5 ops/s, latency ms p50 1.500 p99 1.500 p99.9 1.500 max 1.500"
        );
    }

    #[test]
    fn etcd_prefix_end_is_the_next_prefix() {
        assert_eq!(etcd_prefix_end(b"bench/"), b"bench0");
        assert_eq!(etcd_prefix_end(b"a\xff"), b"b");
        assert_eq!(etcd_prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(etcd_prefix_end(b""), b"\0");
    }

    #[test]
    fn etcd_calls_carry_base64_json() {
        let names = vec!["bench/0".to_string(), "bench/1".to_string()];
        let args = |extra: &[&str]| {
            let mut argv = vec!["cete", "bench", "--target", "etcd"];
            argv.extend_from_slice(extra);
            match crate::cli::Cli::try_parse_from(argv).unwrap().command {
                crate::cli::Command::Bench(a) => a,
                other => panic!("{other:?}"),
            }
        };
        let api = Api::new(&args(&[]), &names, b"hi").unwrap();
        let put = api.write_call(1);
        assert_eq!(put.method, Method::POST);
        assert_eq!(put.path, "/v3/kv/put");
        assert_eq!(
            put.body.as_deref(),
            Some(&br#"{"key":"YmVuY2gvMQ==","value":"aGk="}"#[..])
        );
        let read = api.read_call(0);
        assert_eq!(read.path, "/v3/kv/range");
        assert_eq!(
            read.body.as_deref(),
            Some(&br#"{"key":"YmVuY2gvMA=="}"#[..])
        );
        let stale = Api::new(&args(&["--consistency", "stale"]), &names, b"hi").unwrap();
        assert_eq!(
            stale.read_call(0).body.as_deref(),
            Some(&br#"{"key":"YmVuY2gvMA==","serializable":true}"#[..])
        );
        let txn = etcd_txn(&vec![r#"{"request_put":{}}"#.to_string(); 2]);
        let parsed: Value = serde_json::from_slice(txn.body.as_deref().unwrap()).unwrap();
        assert_eq!(parsed["success"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn empty_summary_has_no_latency() {
        let mut stats = Stats::new();
        stats.record(Err("connect".into()), Duration::ZERO);
        let s = Summary::of(&stats, Duration::from_secs(1));
        assert_eq!(s.latency_ms, None);
        assert_eq!(
            s.line("total:"),
            "total:  0 ops, 1 errors (connect 1), 0.0 ops/s"
        );
        assert_eq!(s.to_json()["latency_ms"], Value::Null);
    }
}
