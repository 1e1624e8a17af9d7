//! The command line, as clap sees it.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Command-line client for Cete, a distributed key-value store. It speaks the
/// nodes' REST API (HTTP/JSON); `cete start` runs a node.
#[derive(Parser, Debug)]
#[command(name = "cete", version, propagate_version = true)]
pub struct Cli {
    /// HTTP address of any node: http(s)://HOST:PORT, HOST:PORT or :PORT.
    /// Writes sent to a follower are redirected to the leader.
    #[arg(
        long,
        global = true,
        env = "CETE_ADDRESS",
        default_value = "http://127.0.0.1:8000",
        value_name = "URL"
    )]
    pub address: String,

    /// Time limit in seconds for each request, including leader redirects
    /// and retries while the cluster has no leader.
    #[arg(long, global = true, default_value = "10", value_name = "SECONDS", value_parser = parse_seconds)]
    pub timeout: Duration,

    /// PEM file of CA certificates to trust for https addresses, instead of
    /// the system's roots (e.g. for a self-signed server certificate).
    #[arg(
        long,
        global = true,
        env = "CETE_CACERT",
        value_name = "FILE",
        visible_alias = "cacert",
        // The original CLI's spellings of its TLS trust file.
        aliases = ["certificate-file", "cert-file"]
    )]
    pub ca_cert: Option<PathBuf>,

    /// Name the server's certificate must be valid for, whatever host the
    /// address (or a redirect) names, e.g. `localhost` for https://127.0.0.1:8000.
    #[arg(
        long,
        global = true,
        env = "CETE_COMMON_NAME",
        value_name = "NAME",
        alias = "cert-hostname"
    )]
    pub common_name: Option<String>,

    /// Do not verify the server's certificate (for tests only: anyone in the
    /// middle can read and change the traffic). No environment variable on purpose.
    #[arg(long, global = true)]
    pub insecure: bool,

    /// The original gRPC client flag. Refused: this CLI speaks REST.
    #[arg(long = "grpc-address", alias = "grpc-addr", global = true, hide = true)]
    pub grpc_address: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a node: executes `cete-server` (found beside this binary, else on
    /// PATH) with all following arguments, e.g. `cete start --id=node1`.
    Start(StartArgs),
    /// Show this node's Raft state (GET /v1/node).
    Node,
    /// Show the cluster's members and leader (GET /v1/cluster).
    Cluster,
    /// Print a key's value, byte for byte.
    Get(GetArgs),
    /// Store a value from the command line, a file or standard input.
    Set(SetArgs),
    /// Delete a key.
    Delete(DeleteArgs),
    /// List keys (with revision, size, content type and, for expiring keys,
    /// expires_at), one JSON object per line.
    List(ListArgs),
    /// Follow changes to keys, one JSON object per line, until interrupted
    /// (GET /v1/watch). Resumes by itself after a dropped connection.
    Watch(WatchArgs),
    /// Add a node to the cluster (PUT /v1/cluster/ID).
    Join(JoinArgs),
    /// Remove a node from the cluster (DELETE /v1/cluster/ID).
    Leave(LeaveArgs),
    /// Without a subcommand: build a Raft snapshot on the node now and purge
    /// the log behind it (POST /v1/snapshot). `save` and `restore` back up
    /// and restore the whole store.
    Snapshot(SnapshotArgs),
    /// Check liveness and readiness; exits 1 if the node is not ready.
    Healthcheck,
    /// Print the node's Prometheus metrics (GET /metrics).
    Metrics,
    /// Print the version of this client.
    Version,
    /// Load-test a cluster with concurrent reads and writes (like redis-benchmark).
    Bench(BenchArgs),
    /// Run a transaction atomically (POST /v1/txn) and print the answer on one line.
    ///
    /// The transaction's JSON comes from FILE, or from standard input when FILE
    /// is `-` or absent; input that is not JSON is refused before anything is
    /// sent. All three lists are optional: every `compare` must hold for
    /// `success` to run, else `failure` runs. For example:
    ///
    /// {"compare":[{"key":"a","revision":3}],"success":[{"put":{"key":"a","value":"1","ttl":"30s"}}],"failure":[{"get":{"key":"a"}}]}
    ///
    /// A compare has `key` and one of `revision`, `absent: true`, `present: true`,
    /// `value` or `value_base64`. Operations: `put` (key, value or value_base64,
    /// optional content_type and ttl), `delete` (key) and `get` (key).
    ///
    /// Exit status: 0 when the transaction ran, whether its compares held or not:
    /// read `succeeded` in the output (true: `success` ran, false: `failure` ran).
    /// 1 when the server refused it (its one-line error, e.g. InvalidTxn or
    /// DuplicateKey, is printed) or the input could not be read or is not JSON.
    Txn(TxnArgs),
}

#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct StartArgs {
    /// Arguments passed verbatim to cete-server (`cete start --help` shows its flags).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0.., value_name = "SERVER_ARGS")]
    pub args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    pub action: Option<SnapshotAction>,
}

#[derive(Subcommand, Debug)]
pub enum SnapshotAction {
    /// Save a point-in-time backup of the whole store to FILE (GET /v1/snapshot),
    /// with a progress bar; the checksum and format are verified before FILE
    /// is written. --timeout bounds the wait for the backup to start and any
    /// stall in the transfer.
    Save(SaveArgs),
    /// Start a new one-node cluster from a backup: runs
    /// `cete-server --restore FILE SERVER_ARGS...` (the data directory must be empty).
    Restore(RestoreArgs),
}

#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Where to write the backup (replaced only once the new one is verified).
    pub file: PathBuf,
    /// Linearizable (default): the backup holds every write acknowledged
    /// before it; stale: the node's local state, without asking the leader.
    #[arg(long, value_enum)]
    pub consistency: Option<Consistency>,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The backup file, as written by `cete snapshot save`.
    pub file: PathBuf,
    /// Arguments passed to cete-server, e.g. `--id=node1 --data-directory=DIR`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0.., value_name = "SERVER_ARGS")]
    pub server_args: Vec<String>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    /// Confirm leadership with a quorum before reading (read index).
    Linearizable,
    /// Read the local copy; may lag behind the leader.
    Stale,
}

impl Consistency {
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Stale => "stale",
        }
    }
}

#[derive(Args, Debug)]
pub struct GetArgs {
    /// The key; `/` separates path segments, any other byte is allowed.
    pub key: String,
    /// Read consistency (server default when omitted).
    #[arg(long, value_enum)]
    pub consistency: Option<Consistency>,
}

#[derive(Args, Debug)]
pub struct SetArgs {
    /// The key; `/` separates path segments, any other byte is allowed.
    pub key: String,
    /// The value; without it (and without --file) the value is read from standard input.
    #[arg(conflicts_with = "file")]
    pub value: Option<String>,
    /// Read the value from this file.
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Content-Type to store with the value (the server defaults to application/octet-stream).
    #[arg(long, value_name = "TYPE")]
    pub content_type: Option<String>,
    /// Only replace the value if its current revision is REV (If-Match).
    #[arg(long, value_name = "REV", conflicts_with = "if_absent")]
    pub if_match: Option<u64>,
    /// Only create the key; fail if it exists (If-None-Match: *).
    #[arg(long)]
    pub if_absent: bool,
    /// Expire the key after this long: 1500ms, 30s, 2m, 1h30m, 1d, ... (from
    /// 1ms to 365 days); the answer then gives `expires_at`. A set without
    /// --ttl removes any expiry the key had.
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,
}

#[derive(Args, Debug)]
pub struct TxnArgs {
    /// JSON file holding the transaction; `-` or none: standard input.
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// The key; `/` separates path segments, any other byte is allowed.
    pub key: String,
    /// Only delete if the key's current revision is REV (If-Match).
    #[arg(long, value_name = "REV")]
    pub if_match: Option<u64>,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only keys starting with this prefix.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Print at most N keys in total (default: all, fetched page by page).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Start after this key (exclusive).
    #[arg(long, value_name = "KEY")]
    pub start_after: Option<String>,
    /// Read consistency (server default when omitted).
    #[arg(long, value_enum)]
    pub consistency: Option<Consistency>,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Only keys starting with this prefix.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Start with this revision (every change at or after it that the node
    /// still holds); default: changes from now on.
    #[arg(long, value_name = "REV")]
    pub start_revision: Option<u64>,
}

#[derive(Args, Debug)]
pub struct JoinArgs {
    /// ID of the node to add.
    pub id: String,
    /// Its gRPC address; the leader asks it for the rest over gRPC.
    pub grpc_addr: String,
    /// Its Raft address (bind_addr), if you want to state it.
    #[arg(long, value_name = "ADDR")]
    pub raft_address: Option<String>,
    /// Its HTTP address (metadata.http_addr), if you want to state it.
    #[arg(long, value_name = "ADDR")]
    pub http_address: Option<String>,
}

#[derive(Args, Debug)]
pub struct LeaveArgs {
    /// ID of the node to remove.
    pub id: String,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Concurrent clients, each sending one request at a time.
    #[arg(long, short = 'c', default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub concurrency: u64,
    /// Run for this many seconds.
    #[arg(long, short = 'd', default_value = "10", value_name = "SECONDS", value_parser = parse_seconds, conflicts_with = "requests")]
    pub duration: Duration,
    /// Stop after this many requests in total instead of after --duration.
    #[arg(long, short = 'n', value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,
    /// Size of each written value in bytes.
    #[arg(long, default_value_t = 100, value_name = "BYTES")]
    pub value_size: usize,
    /// Number of distinct keys, picked uniformly at random.
    #[arg(long, default_value_t = 10_000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,
    /// Fraction of operations that are reads (0.0 = all writes, 1.0 = all reads).
    #[arg(long, default_value_t = 0.0, value_name = "RATIO", value_parser = parse_ratio)]
    pub read_ratio: f64,
    /// Read consistency for the reads (server default when omitted).
    #[arg(long, value_enum)]
    pub consistency: Option<Consistency>,
    /// Prefix of the benchmark's keys.
    #[arg(long, default_value = "bench/", value_name = "PREFIX")]
    pub key_prefix: String,
    /// Comma-separated node addresses to spread reads over (default: --address).
    #[arg(long, value_delimiter = ',', value_name = "URL,...")]
    pub addresses: Vec<String>,
    /// Print the results as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// The API to drive: Cete's REST API, or etcd's v3 JSON gateway (for a
    /// comparison under the same load; --address and --addresses then name
    /// etcd client URLs, and writes must go to etcd's leader).
    #[arg(long, value_enum, default_value_t = BenchTarget::Cete)]
    pub target: BenchTarget,
    /// Write every key of the key space that does not exist yet, then exit
    /// without measuring (etcd: transactions of up to 128 puts).
    #[arg(long, conflicts_with_all = ["duration", "requests", "read_ratio", "consistency", "addresses"])]
    pub preload_only: bool,
    /// Do not check for (and write) missing keys before reading: the key
    /// space is already loaded, e.g. by a `--preload-only` run. Reads of
    /// missing keys count as KeyNotFound errors.
    #[arg(long, conflicts_with = "preload_only")]
    pub no_preload: bool,
}

/// Which server `cete bench` speaks to.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchTarget {
    /// Cete's REST API: PUT and GET /v1/data/KEY.
    Cete,
    /// etcd's v3 JSON gateway: POST /v3/kv/put and /v3/kv/range, base64 keys
    /// and values; `--consistency stale` is a serializable range.
    Etcd,
}

impl BenchTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            BenchTarget::Cete => "cete",
            BenchTarget::Etcd => "etcd",
        }
    }
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !secs.is_finite() || secs <= 0.0 || secs > 1e9 {
        return Err(format!("'{s}' must be a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err(format!("'{s}' is not between 0.0 and 1.0"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn start_passes_everything_through() {
        let cli = Cli::try_parse_from([
            "cete",
            "start",
            "--id=node1",
            "--raft-address=:7000",
            "--help",
            "--grpc-address",
            ":9000",
        ])
        .unwrap();
        match cli.command {
            Command::Start(a) => assert_eq!(
                a.args,
                [
                    "--id=node1",
                    "--raft-address=:7000",
                    "--help",
                    "--grpc-address",
                    ":9000"
                ]
            ),
            other => panic!("{other:?}"),
        }
        assert!(cli.grpc_address.is_none());
    }

    #[test]
    fn grpc_flag_is_seen() {
        let cli = Cli::try_parse_from(["cete", "get", "--grpc-addr=:9000", "k"]).unwrap();
        assert_eq!(cli.grpc_address.as_deref(), Some(":9000"));
    }

    #[test]
    fn snapshot_keeps_its_bare_form_and_gains_save_and_restore() {
        let cli = Cli::try_parse_from(["cete", "snapshot"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Snapshot(SnapshotArgs { action: None })
        ));
        let cli = Cli::try_parse_from(["cete", "snapshot", "save", "b.snap"]).unwrap();
        match cli.command {
            Command::Snapshot(SnapshotArgs {
                action: Some(SnapshotAction::Save(a)),
            }) => assert_eq!(a.file, PathBuf::from("b.snap")),
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from([
            "cete",
            "snapshot",
            "restore",
            "b.snap",
            "--id=n1",
            "--data-directory",
            "d",
        ])
        .unwrap();
        match cli.command {
            Command::Snapshot(SnapshotArgs {
                action: Some(SnapshotAction::Restore(a)),
            }) => {
                assert_eq!(a.file, PathBuf::from("b.snap"));
                assert_eq!(a.server_args, ["--id=n1", "--data-directory", "d"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn seconds_and_ratio() {
        assert_eq!(parse_seconds("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_seconds("10s").unwrap(), Duration::from_secs(10));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("x").is_err());
        assert!(parse_ratio("1.1").is_err());
        assert_eq!(parse_ratio("0.9").unwrap(), 0.9);
    }
}
