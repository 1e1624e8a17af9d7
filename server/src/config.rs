//! Server configuration: explicit flag > `CETE_*` environment variable > config file > default.
//!
//! Each source is read into a [`Layer`] (setting key -> raw text and where it came from) by
//! its own function; the layers are merged key by key and only then parsed into the typed
//! [`Config`]. Parsing once, from text, gives every source the same validation and the same
//! error message, which names the flag, env var and file key together.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use serde::Deserialize;

use crate::logging::{parse_level, LogSettings};
use crate::net::split_host_port;
use crate::tls::TlsSettings;

/// Default size limit for one value, in bytes.
pub const DEFAULT_MAX_VALUE_SIZE: u64 = 4 * 1024 * 1024;
/// How often the leader looks for expired keys, by default.
pub const DEFAULT_EXPIRY_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Fully resolved settings of one `cete-server` node.
#[derive(Debug, Clone)]
pub struct Config {
    /// Node ID, unique in the cluster.
    pub id: String,
    /// Raft (internal gRPC) listen address, `host:port` or `:port`.
    pub raft_address: String,
    /// gRPC listen address, `host:port` or `:port`.
    pub grpc_address: String,
    /// HTTP (REST /v1) listen address, `host:port` or `:port`.
    pub http_address: String,
    /// Host that other nodes dial for addresses with an empty host, such as `:7000`.
    pub advertise_host: Option<String>,
    /// RocksDB data and Raft state; defaults to `./cete-data/<id>`.
    pub data_directory: PathBuf,
    /// gRPC address of an existing member to join; `None` bootstraps a new cluster.
    pub peer_grpc_address: Option<String>,
    /// Canonical lower-case level: error, warn, info, debug, trace or off.
    pub log_level: String,
    /// `None` or `/dev/stderr`: stderr; `/dev/stdout`: stdout; anything else: rotating file.
    pub log_file: Option<PathBuf>,
    /// Log file size limit in megabytes.
    pub log_max_size: u64,
    /// Rotated log files to keep; 0 keeps all.
    pub log_max_backups: u32,
    /// Days to keep rotated log files; 0 means no limit.
    pub log_max_age: u32,
    /// Gzip rotated log files.
    pub log_compress: bool,
    /// Raft log entries between snapshots (at least 1).
    pub snapshot_threshold: u64,
    /// Largest accepted value in bytes (at least 1).
    pub max_value_size: u64,
    /// Revisions of change history kept for resuming watches (at least 1).
    pub watch_history: u64,
    /// How often the leader looks for expired keys.
    pub expiry_interval: std::time::Duration,
    /// The config file that was read, if any (worth logging at start-up).
    pub config_file: Option<PathBuf>,
    /// Backup file to start a new one-node cluster from (empty data directory only).
    pub restore: Option<PathBuf>,
    /// TLS for the HTTP API and both gRPC listeners; `None` serves plain text.
    pub tls: Option<TlsSettings>,
}

/// Command-line flags of `cete-server` (and `cete start`).
///
/// Every field is a raw string with no clap `env`, so that validation happens in one place
/// for all sources; env vars are listed in the help text by hand for that reason. A clap
/// `default_value` is the one place a default is written: [`Config::load_from`] asks clap
/// which values came from the command line, lets env and file fill the rest, and takes
/// clap's default last. Defaults computed at start (from the ID or the certificate) are
/// described in the help text instead.
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "cete-server", version, about = env!("CARGO_PKG_DESCRIPTION"), long_about = None)]
pub struct ServerArgs {
    /// Config file (YAML). If omitted, cete.yaml or cete.yml is searched in /etc, then $HOME
    /// [env: CETE_CONFIG_FILE]
    #[arg(long, value_name = "PATH")]
    pub config_file: Option<String>,
    /// Node ID [env: CETE_ID]
    #[arg(long, value_name = "ID", default_value = "node1")]
    pub id: String,
    /// Raft listen address [env: CETE_RAFT_ADDRESS]
    #[arg(
        long,
        visible_alias = "bind-addr",
        value_name = "ADDR",
        default_value = ":7000"
    )]
    pub raft_address: String,
    /// gRPC listen address [env: CETE_GRPC_ADDRESS]
    #[arg(
        long,
        visible_alias = "grpc-addr",
        value_name = "ADDR",
        default_value = ":9000"
    )]
    pub grpc_address: String,
    /// HTTP listen address [env: CETE_HTTP_ADDRESS]
    #[arg(
        long,
        visible_alias = "http-addr",
        value_name = "ADDR",
        default_value = ":8000"
    )]
    pub http_address: String,
    /// Host other nodes dial when an address has no host, like ":7000"
    /// [env: CETE_ADVERTISE_HOST] [default: 127.0.0.1]
    #[arg(long, value_name = "HOST")]
    pub advertise_host: Option<String>,
    /// Data directory for the key-value data and Raft log
    /// [env: CETE_DATA_DIRECTORY] [default: ./cete-data/<id>]
    #[arg(long, visible_alias = "data-dir", value_name = "DIR")]
    pub data_directory: Option<String>,
    /// gRPC address of an existing member to join; empty bootstraps a new cluster
    /// [env: CETE_PEER_GRPC_ADDRESS]
    #[arg(long, visible_alias = "peer-grpc-addr", value_name = "ADDR")]
    pub peer_grpc_address: Option<String>,
    /// Log level: error, warn, info, debug, trace or off [env: CETE_LOG_LEVEL]
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log file; empty or /dev/stderr for stderr, /dev/stdout for stdout
    /// [env: CETE_LOG_FILE] [default: stderr]
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<String>,
    /// Rotate the log file beyond this many megabytes [env: CETE_LOG_MAX_SIZE]
    #[arg(long, value_name = "MB", default_value = "500")]
    pub log_max_size: String,
    /// Rotated log files to keep, 0 for all [env: CETE_LOG_MAX_BACKUPS]
    #[arg(long, value_name = "N", default_value = "3")]
    pub log_max_backups: String,
    /// Days to keep rotated log files, 0 for ever [env: CETE_LOG_MAX_AGE]
    #[arg(long, value_name = "DAYS", default_value = "30")]
    pub log_max_age: String,
    /// Gzip rotated log files (--log-compress or --log-compress=false)
    /// [env: CETE_LOG_COMPRESS]
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true"
    )]
    pub log_compress: String,
    /// Raft log entries between snapshots [env: CETE_SNAPSHOT_THRESHOLD]
    #[arg(long, value_name = "N", default_value = "10000")]
    pub snapshot_threshold: String,
    /// Largest accepted value in bytes [env: CETE_MAX_VALUE_SIZE]
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_VALUE_SIZE.to_string())]
    pub max_value_size: String,
    /// Revisions of change history kept so watches can resume [env: CETE_WATCH_HISTORY]
    #[arg(
        long,
        value_name = "N",
        default_value_t = cete_store::events::DEFAULT_WATCH_HISTORY.to_string()
    )]
    pub watch_history: String,
    /// How often the leader looks for keys past their deadline, such as 100ms or 1s
    /// [env: CETE_EXPIRY_INTERVAL]
    #[arg(
        long,
        value_name = "DURATION",
        default_value_t = humantime::format_duration(DEFAULT_EXPIRY_INTERVAL).to_string()
    )]
    pub expiry_interval: String,
    /// Start a new one-node cluster from this backup (`cete snapshot save`); the data
    /// directory must be empty; not with --peer-grpc-address [env: CETE_RESTORE]
    #[arg(long, value_name = "FILE")]
    pub restore: Option<String>,
    /// PEM certificate (chain) of this node; turns on TLS for HTTP, Raft and peer gRPC
    /// [env: CETE_CERTIFICATE_FILE]
    #[arg(long, visible_alias = "cert-file", value_name = "PATH")]
    pub certificate_file: Option<String>,
    /// PEM private key of the certificate [env: CETE_KEY_FILE]
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<String>,
    /// PEM CA certificates that peers' certificates must chain to
    /// [env: CETE_CA_FILE] [default: the certificate file]
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<String>,
    /// Name that peers' certificates must be valid for
    /// [env: CETE_COMMON_NAME] [default: the first DNS name of the certificate]
    #[arg(long, visible_alias = "cert-hostname", value_name = "NAME")]
    pub common_name: Option<String>,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Bad command line, or `--help` / `--version`: call [`ConfigError::exit`] or `.exit()`.
    #[error(transparent)]
    Args(#[from] clap::Error),
    /// `--config-file` or `CETE_CONFIG_FILE` names a file that does not exist.
    #[error("config file {path:?} given by {given_by} does not exist")]
    ConfigFileNotFound {
        path: PathBuf,
        given_by: &'static str,
    },
    /// Two settings that cannot be used together.
    #[error("{0}")]
    Incompatible(String),
    /// The config file exists but could not be read.
    #[error("cannot read config file {path:?}: {source}")]
    ConfigFileRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The config file is not a YAML mapping of scalars.
    #[error("invalid config file {path:?}: {message}")]
    ConfigFileInvalid { path: PathBuf, message: String },
    /// The config file has a key that is not a setting (likely a typo).
    #[error("unknown key {key:?} in config file {path:?}; known keys: {}", KEYS.join(", "))]
    UnknownKey { path: PathBuf, key: String },
    /// A setting's value does not parse; names flag, env var, key and where it came from.
    #[error(
        "invalid value {value:?} for {} ({}, {key}): {expected} ({origin})",
        flag_name(key),
        env_name(key)
    )]
    InvalidValue {
        key: &'static str,
        value: String,
        expected: String,
        origin: Source,
    },
}

impl ConfigError {
    /// Prints the error and exits: clap's own handling for `--help`, `--version` and usage
    /// errors (exit 0 or 2), otherwise the message on stderr and exit 1.
    pub fn exit(&self) -> ! {
        match self {
            ConfigError::Args(e) => e.exit(),
            other => {
                eprintln!("cete-server: {other}");
                std::process::exit(1)
            }
        }
    }
}

/// Where a raw setting came from; part of error messages so the operator knows what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The command line.
    Flag,
    /// A `CETE_*` environment variable.
    Env,
    /// The config file at this path.
    File(PathBuf),
    /// The clap `default_value` of the flag.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag => f.write_str("from the command line"),
            Source::Env => f.write_str("from the environment"),
            Source::File(p) => write!(f, "from config file {}", p.display()),
            Source::Default => f.write_str("from the built-in default"),
        }
    }
}

/// Every setting, by its config file key. The flag is `--` plus the key in kebab case and the
/// env var is `CETE_` plus the key in upper case (as in the original Cete).
const KEYS: [&str; 22] = [
    "id",
    "raft_address",
    "grpc_address",
    "http_address",
    "advertise_host",
    "data_directory",
    "peer_grpc_address",
    "log_level",
    "log_file",
    "log_max_size",
    "log_max_backups",
    "log_max_age",
    "log_compress",
    "snapshot_threshold",
    "max_value_size",
    "watch_history",
    "expiry_interval",
    "restore",
    "certificate_file",
    "key_file",
    "ca_file",
    "common_name",
];

fn flag_name(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

fn env_name(key: &str) -> String {
    format!("CETE_{}", key.to_ascii_uppercase())
}

/// A raw setting value and its origin.
#[derive(Debug, Clone)]
struct Given {
    value: String,
    source: Source,
}

/// The settings one source provides, by key.
type Layer = BTreeMap<&'static str, Given>;

impl Config {
    /// Loads the configuration of this process: argv, the process environment, `$HOME` and
    /// `/etc`.
    pub fn load() -> Result<Config, ConfigError> {
        // `std::env::vars` panics on non-UTF-8 variables; ours are UTF-8 or rejected as unset.
        let env: HashMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from);
        Config::load_from(std::env::args_os(), &env, home, PathBuf::from("/etc"))
    }

    /// The testable core of [`Config::load`]: `args` includes the program name; `env` stands in
    /// for the process environment; `home` and `etc_dir` are where `cete.yaml` is searched when
    /// no config file is given.
    pub fn load_from(
        args: impl IntoIterator<Item = OsString>,
        env: &HashMap<String, String>,
        home: Option<PathBuf>,
        etc_dir: PathBuf,
    ) -> Result<Config, ConfigError> {
        let matches = ServerArgs::command().try_get_matches_from(args)?;
        let args = ServerArgs::from_arg_matches(&matches)?;
        let config_file = find_config_file(&args, env, home.as_deref(), &etc_dir)?;
        let file = match &config_file {
            Some(path) => file_layer(path)?,
            None => Layer::new(),
        };
        let merged = merge([
            flag_layer(&matches),
            env_layer(env),
            file,
            default_layer(&matches),
        ]);
        resolve(&merged, config_file)
    }

    /// A single-node config for tests: the given addresses (use real free ports; port 0 would
    /// leave peers nothing to dial) and data directory, defaults for everything else.
    pub fn for_tests(id: &str, raft: &str, grpc: &str, http: &str, dir: &Path) -> Config {
        let no_flags = ServerArgs::command().get_matches_from(["cete-server"]);
        Config {
            id: id.to_string(),
            raft_address: raft.to_string(),
            grpc_address: grpc.to_string(),
            http_address: http.to_string(),
            data_directory: dir.to_path_buf(),
            ..resolve(&default_layer(&no_flags), None).expect("defaults are valid")
        }
    }

    /// The logging part of the configuration, for [`crate::logging::init`].
    pub fn log_settings(&self) -> LogSettings {
        LogSettings {
            level: self.log_level.clone(),
            file: self.log_file.clone(),
            max_size_mb: self.log_max_size,
            max_backups: self.log_max_backups,
            max_age_days: self.log_max_age,
            compress: self.log_compress,
        }
    }
}

/// Layer 1: settings given on the command line (not clap's defaults: those come last).
fn flag_layer(matches: &ArgMatches) -> Layer {
    clap_layer(matches, ValueSource::CommandLine, Source::Flag)
}

/// Layer 4: the clap `default_value` of every flag that has one and was not given.
fn default_layer(matches: &ArgMatches) -> Layer {
    clap_layer(matches, ValueSource::DefaultValue, Source::Default)
}

/// The values of `matches` that came from `from`, as `source`.
fn clap_layer(matches: &ArgMatches, from: ValueSource, source: Source) -> Layer {
    KEYS.iter()
        .filter(|&&key| matches.value_source(key) == Some(from))
        .filter_map(|&key| {
            let value = matches.get_one::<String>(key)?.clone();
            let source = source.clone();
            Some((key, Given { value, source }))
        })
        .collect()
}

/// Layer 2: `CETE_<KEY>` environment variables. An empty variable counts as unset, as it
/// did in the original (viper), so `CETE_ID=` does not blank the ID.
fn env_layer(env: &HashMap<String, String>) -> Layer {
    KEYS.iter()
        .filter_map(|&key| {
            let value = env.get(&env_name(key)).filter(|v| !v.is_empty())?;
            Some((
                key,
                Given {
                    value: value.clone(),
                    source: Source::Env,
                },
            ))
        })
        .collect()
}

/// The config file to read: `--config-file`, else `CETE_CONFIG_FILE` (both must exist), else
/// the first existing `cete.yaml`/`cete.yml` in `etc_dir`, then `home`.
fn find_config_file(
    args: &ServerArgs,
    env: &HashMap<String, String>,
    home: Option<&Path>,
    etc_dir: &Path,
) -> Result<Option<PathBuf>, ConfigError> {
    let explicit = match (&args.config_file, env.get("CETE_CONFIG_FILE")) {
        (Some(p), _) if !p.is_empty() => Some((p, "--config-file")),
        (_, Some(p)) if !p.is_empty() => Some((p, "CETE_CONFIG_FILE")),
        _ => None,
    };
    if let Some((path, given_by)) = explicit {
        let path = PathBuf::from(path);
        if !path.exists() {
            return Err(ConfigError::ConfigFileNotFound { path, given_by });
        }
        return Ok(Some(path));
    }
    let dirs = std::iter::once(etc_dir).chain(home);
    let found = dirs
        .flat_map(|dir| ["cete.yaml", "cete.yml"].map(|name| dir.join(name)))
        .find(|p| p.exists());
    Ok(found)
}

/// A YAML scalar as text, so that `log_max_size: 500` and `log_max_size: "500"` are the same
/// and values from every source go through one parser.
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Layer 3: the config file, a YAML mapping of the snake_case keys. A `null` value counts as
/// unset; an unknown key is an error so that typos do not silently fall back to defaults.
fn file_layer(path: &Path) -> Result<Layer, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ConfigFileRead {
        path: path.to_path_buf(),
        source,
    })?;
    // An empty document or one holding only comments is YAML null: no settings.
    let map: Option<BTreeMap<String, Option<Scalar>>> =
        serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::ConfigFileInvalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let mut layer = Layer::new();
    for (key, value) in map.unwrap_or_default() {
        let Some(&key) = KEYS.iter().find(|k| **k == key) else {
            return Err(ConfigError::UnknownKey {
                path: path.to_path_buf(),
                key,
            });
        };
        if let Some(Scalar(value)) = value {
            let source = Source::File(path.to_path_buf());
            layer.insert(key, Given { value, source });
        }
    }
    Ok(layer)
}

/// Merges layers key by key; earlier layers win.
fn merge<const N: usize>(layers: [Layer; N]) -> Layer {
    let mut merged = Layer::new();
    for layer in layers {
        for (key, given) in layer {
            merged.entry(key).or_insert(given);
        }
    }
    merged
}

/// Parses the merged raw settings into a [`Config`]; `raw` includes the default layer, and
/// only the computed defaults (data directory, and in [`crate::tls`] the CA file and common
/// name) are filled in here.
fn resolve(raw: &Layer, config_file: Option<PathBuf>) -> Result<Config, ConfigError> {
    let id = defaulted(raw, "id", parse_id)?;
    let data_directory = setting(raw, "data_directory", parse_non_empty)?
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(".").join("cete-data").join(&id));
    let restore =
        setting(raw, "restore", |v| Ok(PathBuf::from(v)))?.filter(|p| !p.as_os_str().is_empty());
    let peer_grpc_address = setting(raw, "peer_grpc_address", parse_optional_address)?.flatten();
    if restore.is_some() && peer_grpc_address.is_some() {
        return Err(ConfigError::Incompatible(format!(
            "{} ({}, restore) starts a new cluster and cannot be used with {} ({}, \
             peer_grpc_address); start the restored node alone, then join others to it",
            flag_name("restore"),
            env_name("restore"),
            flag_name("peer_grpc_address"),
            env_name("peer_grpc_address"),
        )));
    }
    Ok(Config {
        raft_address: defaulted(raw, "raft_address", parse_address)?,
        grpc_address: defaulted(raw, "grpc_address", parse_address)?,
        http_address: defaulted(raw, "http_address", parse_address)?,
        advertise_host: setting(raw, "advertise_host", parse_host)?.flatten(),
        peer_grpc_address,
        log_level: defaulted(raw, "log_level", parse_log_level)?,
        log_file: setting(raw, "log_file", |v| Ok(PathBuf::from(v)))?
            .filter(|p| !p.as_os_str().is_empty()),
        log_max_size: defaulted(raw, "log_max_size", |v| {
            parse_at_least(v, 1, "a whole number of megabytes")
        })?,
        log_max_backups: defaulted(raw, "log_max_backups", |v| {
            parse_u32(v, "a whole number of files (0 keeps all)")
        })?,
        log_max_age: defaulted(raw, "log_max_age", |v| {
            parse_u32(v, "a whole number of days (0 for no limit)")
        })?,
        log_compress: defaulted(raw, "log_compress", parse_bool)?,
        snapshot_threshold: defaulted(raw, "snapshot_threshold", |v| {
            parse_at_least(v, 1, "a whole number of log entries")
        })?,
        max_value_size: defaulted(raw, "max_value_size", |v| {
            parse_at_least(v, 1, "a whole number of bytes")
        })?,
        watch_history: defaulted(raw, "watch_history", |v| {
            parse_at_least(v, 1, "a whole number of revisions")
        })?,
        expiry_interval: defaulted(raw, "expiry_interval", parse_interval)?,
        tls: resolve_tls(raw)?,
        id,
        data_directory,
        config_file,
        restore,
    })
}

/// The TLS settings: none at all, or a certificate with its key (the CA file and common
/// name only mean something with them). Empty values count as unset.
fn resolve_tls(raw: &Layer) -> Result<Option<TlsSettings>, ConfigError> {
    let path = |v: &str| Ok(Some(v).filter(|v| !v.is_empty()).map(PathBuf::from));
    let certificate_file = setting(raw, "certificate_file", path)?.flatten();
    let key_file = setting(raw, "key_file", path)?.flatten();
    let ca_file = setting(raw, "ca_file", path)?.flatten();
    let common_name = setting(raw, "common_name", parse_common_name)?.flatten();
    let needs = |key: &'static str, what: &str| {
        let given = raw.get(key).expect("checked by the caller");
        ConfigError::InvalidValue {
            key,
            value: given.value.clone(),
            expected: what.to_string(),
            origin: given.source.clone(),
        }
    };
    match (certificate_file, key_file) {
        (Some(certificate_file), Some(key_file)) => Ok(Some(TlsSettings {
            certificate_file,
            key_file,
            ca_file,
            common_name,
        })),
        (Some(_), None) => Err(needs(
            "certificate_file",
            "a certificate needs its private key: set --key-file (CETE_KEY_FILE, key_file) too",
        )),
        (None, Some(_)) => Err(needs(
            "key_file",
            "a key needs its certificate: set --certificate-file (CETE_CERTIFICATE_FILE, \
             certificate_file) too",
        )),
        (None, None) if ca_file.is_some() => Err(needs(
            "ca_file",
            "only meaningful with TLS: set --certificate-file and --key-file too",
        )),
        (None, None) if common_name.is_some() => Err(needs(
            "common_name",
            "only meaningful with TLS: set --certificate-file and --key-file too",
        )),
        (None, None) => Ok(None),
    }
}

/// A DNS name or IP address that certificates are checked against; empty means "not set".
fn parse_common_name(v: &str) -> Result<Option<String>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    rustls::pki_types::ServerName::try_from(v)
        .map(|_| Some(v.to_string()))
        .map_err(|_| "expected a DNS name or IP address".to_string())
}

/// Parses one raw setting if present; a failure names the setting and where it came from.
fn setting<T>(
    raw: &Layer,
    key: &'static str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    let Some(given) = raw.get(key) else {
        return Ok(None);
    };
    parse(&given.value)
        .map(Some)
        .map_err(|expected| ConfigError::InvalidValue {
            key,
            value: given.value.clone(),
            expected,
            origin: given.source.clone(),
        })
}

/// Parses a setting that has a clap `default_value`, so the default layer always holds it.
fn defaulted<T>(
    raw: &Layer,
    key: &'static str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    let parsed = setting(raw, key, parse)?;
    Ok(parsed.unwrap_or_else(|| panic!("{} has no clap default_value", flag_name(key))))
}

/// IDs become the default data directory name, so they must be a plain path component.
fn parse_id(v: &str) -> Result<String, String> {
    let plain = !v.is_empty()
        && v != "."
        && v != ".."
        && !v
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_whitespace() || c.is_control());
    if plain {
        Ok(v.to_string())
    } else {
        Err("expected a non-empty node ID without whitespace or slashes".into())
    }
}

fn parse_non_empty(v: &str) -> Result<String, String> {
    if v.is_empty() {
        Err("expected a non-empty path".into())
    } else {
        Ok(v.to_string())
    }
}

fn parse_address(v: &str) -> Result<String, String> {
    split_host_port(v)?;
    Ok(v.to_string())
}

/// Empty means "not set", so an explicit `--peer-grpc-address=` can cancel a file's value.
fn parse_optional_address(v: &str) -> Result<Option<String>, String> {
    if v.is_empty() {
        Ok(None)
    } else {
        parse_address(v).map(Some)
    }
}

/// A bare host name or IP (IPv6 with or without brackets); empty means "not set".
fn parse_host(v: &str) -> Result<Option<String>, String> {
    const EXPECTED: &str = "expected a host name or IP address without a port";
    if v.is_empty() {
        return Ok(None);
    }
    if v.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(EXPECTED.into());
    }
    if v.contains(':') {
        let bare = v
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(v);
        if bare.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(EXPECTED.into());
        }
    }
    Ok(Some(v.to_string()))
}

fn parse_log_level(v: &str) -> Result<String, String> {
    parse_level(v)
        .map(|l| l.to_string().to_ascii_lowercase())
        .ok_or_else(|| "expected one of error, warn, info, debug, trace, off".into())
}

fn parse_at_least(v: &str, min: u64, expected: &str) -> Result<u64, String> {
    match v.trim().parse::<u64>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(format!("expected {expected}, at least {min}")),
    }
}

fn parse_interval(v: &str) -> Result<std::time::Duration, String> {
    let expected = || "a duration from 1ms to 1h, such as 100ms or 2s".to_string();
    match humantime::parse_duration(v.trim()) {
        Ok(d)
            if d >= std::time::Duration::from_millis(1)
                && d <= std::time::Duration::from_secs(3600) =>
        {
            Ok(d)
        }
        _ => Err(expected()),
    }
}

fn parse_u32(v: &str, expected: &str) -> Result<u32, String> {
    v.trim()
        .parse::<u32>()
        .map_err(|_| format!("expected {expected}"))
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "1" | "yes" | "on" => Ok(true),
        "false" | "f" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test world: a temp dir holding an `etc` dir and a `home` dir, plus an env map.
    struct World {
        dir: tempfile::TempDir,
        env: HashMap<String, String>,
    }

    impl World {
        fn new() -> World {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("etc")).unwrap();
            std::fs::create_dir(dir.path().join("home")).unwrap();
            World {
                dir,
                env: HashMap::new(),
            }
        }
        fn env(mut self, key: &str, value: &str) -> World {
            self.env.insert(key.into(), value.into());
            self
        }
        fn file(self, rel: &str, yaml: &str) -> World {
            std::fs::write(self.dir.path().join(rel), yaml).unwrap();
            self
        }
        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }
        fn load(&self, flags: &[&str]) -> Result<Config, ConfigError> {
            let args = std::iter::once("cete-server")
                .chain(flags.iter().copied())
                .map(OsString::from);
            Config::load_from(args, &self.env, Some(self.path("home")), self.path("etc"))
        }
    }

    #[test]
    fn defaults_with_no_flags() {
        let c = World::new().load(&[]).unwrap();
        assert_eq!(c.id, "node1");
        assert_eq!(c.raft_address, ":7000");
        assert_eq!(c.grpc_address, ":9000");
        assert_eq!(c.http_address, ":8000");
        assert_eq!(c.advertise_host, None);
        assert_eq!(c.data_directory, Path::new("./cete-data/node1"));
        assert_eq!(c.peer_grpc_address, None);
        assert_eq!(c.log_level, "info");
        assert_eq!(c.log_file, None);
        assert_eq!(
            (
                c.log_max_size,
                c.log_max_backups,
                c.log_max_age,
                c.log_compress
            ),
            (500, 3, 30, false)
        );
        assert_eq!(c.snapshot_threshold, 10_000);
        assert_eq!(c.max_value_size, 4 * 1024 * 1024);
        assert_eq!(c.watch_history, 100_000);
        assert_eq!(c.expiry_interval, std::time::Duration::from_millis(100));
        assert_eq!(c.tls, None);
        assert_eq!(c.config_file, None);
    }

    /// Each clap default is shown by `--help` on its own flag's entry, and loading with no
    /// flags gives the same config as passing every default explicitly.
    #[test]
    fn help_shows_each_default_and_no_flags_loads_them() {
        let command = ServerArgs::command();
        let defaults: Vec<(String, String)> = command
            .get_arguments()
            .filter_map(|a| {
                let [value] = a.get_default_values() else {
                    return None;
                };
                Some((a.get_long()?.to_string(), value.to_str()?.to_string()))
            })
            .collect();
        let shown: Vec<&str> = defaults.iter().map(|(flag, _)| flag.as_str()).collect();
        assert_eq!(
            shown,
            [
                "id",
                "raft-address",
                "grpc-address",
                "http-address",
                "log-level",
                "log-max-size",
                "log-max-backups",
                "log-max-age",
                "log-compress",
                "snapshot-threshold",
                "max-value-size",
                "watch-history",
                "expiry-interval",
            ]
        );

        // One entry per flag: its heading line (six spaces, then the flag) and the wrapped
        // lines under it, joined into one line.
        let help = command.clone().render_help().to_string();
        let mut entries: Vec<String> = Vec::new();
        for line in help.lines() {
            if line.starts_with("      --") || line.starts_with("  -") {
                entries.push(String::new());
            }
            if let Some(entry) = entries.last_mut() {
                entry.push(' ');
                entry.push_str(line.trim());
            }
        }
        for (flag, value) in &defaults {
            let entry = entries
                .iter()
                .find(|e| {
                    let rest = e.trim_start().strip_prefix(&format!("--{flag}"));
                    rest.is_some_and(|r| r.starts_with([' ', '[']))
                })
                .unwrap_or_else(|| panic!("no help entry for --{flag} in\n{help}"));
            assert!(
                entry.contains(&format!("[default: {value}]")),
                "--{flag}: {entry}"
            );
        }

        let w = World::new();
        let explicit: Vec<String> = defaults
            .iter()
            .map(|(flag, value)| format!("--{flag}={value}"))
            .collect();
        let explicit: Vec<&str> = explicit.iter().map(String::as_str).collect();
        let from_defaults = format!("{:?}", w.load(&[]).unwrap());
        assert_eq!(from_defaults, format!("{:?}", w.load(&explicit).unwrap()));
        assert_eq!(
            from_defaults,
            format!(
                "{:?}",
                Config {
                    data_directory: Path::new(".").join("cete-data").join("node1"),
                    ..Config::for_tests("node1", ":7000", ":9000", ":8000", Path::new("/t"))
                }
            )
        );
    }

    #[test]
    fn data_directory_default_follows_the_final_id() {
        let w = World::new().env("CETE_ID", "node7");
        assert_eq!(
            w.load(&[]).unwrap().data_directory,
            Path::new("./cete-data/node7")
        );
        let c = w.load(&["--id", "node9"]).unwrap();
        assert_eq!(c.data_directory, Path::new("./cete-data/node9"));
        let c = w.load(&["--data-dir", "/d"]).unwrap();
        assert_eq!(c.data_directory, Path::new("/d"));
    }

    #[test]
    fn precedence_is_flag_then_env_then_file_then_default() {
        let w = World::new()
            .file(
                "etc/cete.yaml",
                "id: file-id\nraft_address: ':7100'\ngrpc_address: ':9100'\nlog_max_size: 7\n",
            )
            .env("CETE_ID", "env-id")
            .env("CETE_RAFT_ADDRESS", ":7200");
        let c = w.load(&["--id=flag-id"]).unwrap();
        assert_eq!(c.id, "flag-id"); // flag > env > file
        assert_eq!(c.raft_address, ":7200"); // env > file
        assert_eq!(c.grpc_address, ":9100"); // file > default
        assert_eq!(c.http_address, ":8000"); // default
        assert_eq!(c.log_max_size, 7);
        assert_eq!(c.config_file, Some(w.path("etc/cete.yaml")));
        let c = w.load(&[]).unwrap();
        assert_eq!(c.id, "env-id");
    }

    #[test]
    fn numbers_and_bools_from_every_source() {
        let w = World::new()
            .file(
                "home/cete.yml",
                "log_compress: true\nsnapshot_threshold: 5\n",
            )
            .env("CETE_MAX_VALUE_SIZE", "1024");
        let c = w.load(&["--log-max-backups", "0"]).unwrap();
        assert!(c.log_compress);
        assert_eq!(c.snapshot_threshold, 5);
        assert_eq!(c.max_value_size, 1024);
        assert_eq!(c.log_max_backups, 0);
        assert!(!w.load(&["--log-compress=false"]).unwrap().log_compress);
        let w = World::new().env("CETE_LOG_COMPRESS", "false");
        assert!(w.load(&["--log-compress"]).unwrap().log_compress);
    }

    #[test]
    fn watch_history_from_every_source() {
        let w = World::new().file("home/cete.yaml", "watch_history: 50\n");
        assert_eq!(w.load(&[]).unwrap().watch_history, 50);
        let w = w.env("CETE_WATCH_HISTORY", "60");
        assert_eq!(w.load(&[]).unwrap().watch_history, 60);
        assert_eq!(w.load(&["--watch-history=70"]).unwrap().watch_history, 70);
        let err = w.load(&["--watch-history=0"]).unwrap_err().to_string();
        assert!(err.contains("--watch-history") && err.contains("CETE_WATCH_HISTORY"));
    }

    #[test]
    fn expiry_interval_from_flag_and_file() {
        let w = World::new().file("home/cete.yaml", "expiry_interval: 2s\n");
        assert_eq!(
            w.load(&[]).unwrap().expiry_interval,
            std::time::Duration::from_secs(2)
        );
        assert_eq!(
            w.load(&["--expiry-interval=250ms"])
                .unwrap()
                .expiry_interval,
            std::time::Duration::from_millis(250)
        );
        for bad in ["0s", "2h", "often"] {
            let err = w
                .load(&[format!("--expiry-interval={bad}").as_str()])
                .unwrap_err()
                .to_string();
            assert!(err.contains("--expiry-interval"), "{err}");
        }
    }

    #[test]
    fn both_flag_spellings_are_accepted() {
        let w = World::new();
        let long = [
            "--raft-address=:1",
            "--grpc-address=:2",
            "--http-address=:3",
            "--data-directory=/x",
            "--peer-grpc-address=h:4",
        ];
        let short = [
            "--bind-addr=:1",
            "--grpc-addr=:2",
            "--http-addr=:3",
            "--data-dir=/x",
            "--peer-grpc-addr=h:4",
        ];
        for flags in [long, short] {
            let c = w.load(&flags).unwrap();
            assert_eq!(
                (
                    c.raft_address.as_str(),
                    c.grpc_address.as_str(),
                    c.http_address.as_str()
                ),
                (":1", ":2", ":3")
            );
            assert_eq!(c.data_directory, Path::new("/x"));
            assert_eq!(c.peer_grpc_address.as_deref(), Some("h:4"));
        }
    }

    #[test]
    fn tls_settings_from_every_source_and_both_spellings() {
        let w = World::new();
        assert_eq!(w.load(&[]).unwrap().tls, None);
        for flags in [
            [
                "--certificate-file=c.pem",
                "--key-file=k.pem",
                "--common-name=cete.test",
            ],
            [
                "--cert-file=c.pem",
                "--key-file=k.pem",
                "--cert-hostname=cete.test",
            ],
        ] {
            let tls = w.load(&flags).unwrap().tls.unwrap();
            assert_eq!(tls.certificate_file, Path::new("c.pem"));
            assert_eq!(tls.key_file, Path::new("k.pem"));
            assert_eq!(tls.ca_file, None);
            assert_eq!(tls.common_name.as_deref(), Some("cete.test"));
        }
        let w = World::new()
            .file(
                "etc/cete.yaml",
                "certificate_file: f.pem\nca_file: ca.pem\n",
            )
            .env("CETE_KEY_FILE", "e.pem")
            .env("CETE_COMMON_NAME", "127.0.0.1");
        let tls = w.load(&[]).unwrap().tls.unwrap();
        assert_eq!(
            (tls.certificate_file, tls.key_file, tls.ca_file),
            ("f.pem".into(), "e.pem".into(), Some("ca.pem".into()))
        );
        assert_eq!(tls.common_name.as_deref(), Some("127.0.0.1"));
    }

    #[test]
    fn incomplete_tls_settings_name_the_missing_flag() {
        let w = World::new();
        let err = w.load(&["--cert-file=c.pem"]).unwrap_err().to_string();
        assert!(
            err.contains("--certificate-file") && err.contains("--key-file"),
            "{err}"
        );
        let err = w.load(&["--key-file=k.pem"]).unwrap_err().to_string();
        assert!(err.contains("--certificate-file"), "{err}");
        let err = w.load(&["--ca-file=ca.pem"]).unwrap_err().to_string();
        assert!(err.contains("--ca-file") && err.contains("TLS"), "{err}");
        let err = World::new()
            .env("CETE_COMMON_NAME", "x")
            .load(&[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("CETE_COMMON_NAME"), "{err}");
        let err = w
            .load(&["--cert-file=c", "--key-file=k", "--common-name=a b"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("DNS name or IP address"), "{err}");
    }

    #[test]
    fn unknown_file_key_is_named() {
        let w = World::new().file("etc/cete.yaml", "id: a\nlog_max_sizes: 5\n");
        let err = w.load(&[]).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownKey { .. }), "{err:?}");
        assert!(err.to_string().contains("\"log_max_sizes\""), "{err}");
    }

    #[test]
    fn bad_value_names_flag_env_and_key_and_source() {
        let w = World::new();
        let err = w.load(&["--log-max-size", "abc"]).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "invalid value \"abc\" for --log-max-size (CETE_LOG_MAX_SIZE, log_max_size): \
                 expected a whole number of megabytes"
            ),
            "{err}"
        );
        assert!(err.contains("command line"), "{err}");

        let err = World::new()
            .env("CETE_LOG_LEVEL", "loud")
            .load(&[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--log-level (CETE_LOG_LEVEL, log_level)") && err.contains("environment"),
            "{err}"
        );

        let w = World::new().file("etc/cete.yaml", "snapshot_threshold: 0\n");
        let err = w.load(&[]).unwrap_err().to_string();
        assert!(
            err.contains("--snapshot-threshold (CETE_SNAPSHOT_THRESHOLD, snapshot_threshold)")
                && err.contains("cete.yaml"),
            "{err}"
        );

        for bad in ["7000", "host:", "host:70000", "a:b:1", "[::1:7000"] {
            let err = w.load(&["--raft-address", bad]).unwrap_err().to_string();
            assert!(err.contains("--raft-address"), "{bad}: {err}");
        }
    }

    #[test]
    fn log_level_spellings_and_log_file_special_values() {
        let w = World::new();
        assert_eq!(w.load(&["--log-level=ERR"]).unwrap().log_level, "error");
        assert_eq!(w.load(&["--log-level=Warning"]).unwrap().log_level, "warn");
        assert_eq!(w.load(&["--log-level=DEBUG"]).unwrap().log_level, "debug");
        assert_eq!(w.load(&["--log-file="]).unwrap().log_file, None);
        let c = w.load(&["--log-file=/dev/stdout"]).unwrap();
        assert_eq!(c.log_file.as_deref(), Some(Path::new("/dev/stdout")));
    }

    #[test]
    fn restore_from_every_source_and_not_with_a_peer() {
        let w = World::new()
            .env("CETE_RESTORE", "env.snap")
            .file("etc/cete.yaml", "restore: file.snap\n");
        let c = w.load(&["--restore=flag.snap"]).unwrap();
        assert_eq!(c.restore, Some(PathBuf::from("flag.snap")));
        assert_eq!(
            w.load(&[]).unwrap().restore,
            Some(PathBuf::from("env.snap"))
        );
        assert_eq!(World::new().load(&[]).unwrap().restore, None);
        let w = World::new().file("etc/cete.yaml", "restore: file.snap\n");
        assert_eq!(
            w.load(&[]).unwrap().restore,
            Some(PathBuf::from("file.snap"))
        );
        // An explicit empty flag cancels the file's value.
        assert_eq!(w.load(&["--restore="]).unwrap().restore, None);
        match w.load(&["--peer-grpc-address=:9000"]) {
            Err(ConfigError::Incompatible(m)) => {
                assert!(
                    m.contains("--restore") && m.contains("--peer-grpc-address"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn empty_values_mean_unset_where_documented() {
        let w = World::new()
            .file("etc/cete.yaml", "peer_grpc_address: ':9000'\n")
            .env("CETE_ID", "");
        let c = w.load(&["--peer-grpc-address="]).unwrap();
        assert_eq!(c.id, "node1", "empty env var is unset");
        assert_eq!(
            c.peer_grpc_address, None,
            "empty flag cancels the file value"
        );
        assert!(
            w.load(&["--id="]).is_err(),
            "an explicitly empty ID is invalid"
        );
    }

    #[test]
    fn missing_explicit_config_file_is_an_error() {
        let w = World::new();
        let missing = w.path("nope.yaml");
        let err = w
            .load(&["--config-file", missing.to_str().unwrap()])
            .unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::ConfigFileNotFound {
                    given_by: "--config-file",
                    ..
                }
            ),
            "{err:?}"
        );
        let w = w.env("CETE_CONFIG_FILE", missing.to_str().unwrap());
        assert!(matches!(
            w.load(&[]).unwrap_err(),
            ConfigError::ConfigFileNotFound {
                given_by: "CETE_CONFIG_FILE",
                ..
            }
        ));
    }

    #[test]
    fn explicit_config_file_replaces_the_search() {
        let w = World::new()
            .file("etc/cete.yaml", "id: from-etc\n")
            .file("mine.yaml", "id: mine\n");
        let mine = w.path("mine.yaml");
        let c = w.load(&["--config-file", mine.to_str().unwrap()]).unwrap();
        assert_eq!(c.id, "mine");
        assert_eq!(w.load(&[]).unwrap().id, "from-etc");
    }

    #[test]
    fn etc_is_searched_before_home() {
        let w = World::new()
            .file("etc/cete.yml", "id: etc\n")
            .file("home/cete.yaml", "id: home\n");
        assert_eq!(w.load(&[]).unwrap().id, "etc");
    }

    #[test]
    fn empty_comment_only_and_invalid_files() {
        let w = World::new().file("etc/cete.yaml", "");
        assert_eq!(w.load(&[]).unwrap().id, "node1");
        let w = World::new().file("etc/cete.yaml", "# nothing yet\nid: ~\n");
        assert_eq!(w.load(&[]).unwrap().id, "node1");
        let w = World::new().file("etc/cete.yaml", "id: [a, b]\n");
        let err = w.load(&[]).unwrap_err();
        assert!(
            matches!(err, ConfigError::ConfigFileInvalid { .. }),
            "{err}"
        );
        let w = World::new().file("etc/cete.yaml", "- just\n- a list\n");
        assert!(matches!(
            w.load(&[]).unwrap_err(),
            ConfigError::ConfigFileInvalid { .. }
        ));
    }

    #[test]
    fn help_and_version_are_clap_errors_for_exit() {
        for flag in ["--help", "--version"] {
            assert!(matches!(
                World::new().load(&[flag]),
                Err(ConfigError::Args(_))
            ));
        }
    }

    #[test]
    fn every_key_has_a_flag() {
        let ids: Vec<String> = ServerArgs::command()
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect();
        for key in KEYS {
            assert!(ids.iter().any(|id| id == key), "no flag for {key}");
        }
        ServerArgs::command().debug_assert();
    }

    #[test]
    fn for_tests_uses_given_addresses_and_dir() {
        let c = Config::for_tests(
            "n2",
            "127.0.0.1:1",
            "127.0.0.1:2",
            "127.0.0.1:3",
            Path::new("/t"),
        );
        assert_eq!(c.id, "n2");
        assert_eq!(c.grpc_address, "127.0.0.1:2");
        assert_eq!(c.data_directory, Path::new("/t"));
        assert_eq!(c.snapshot_threshold, 10_000);
        let s = c.log_settings();
        assert_eq!((s.level.as_str(), s.max_size_mb), ("info", 500));
    }

    #[test]
    fn advertise_host_is_validated() {
        let w = World::new();
        let c = w.load(&["--advertise-host=10.0.0.5"]).unwrap();
        assert_eq!(c.advertise_host.as_deref(), Some("10.0.0.5"));
        assert!(w.load(&["--advertise-host=fd00::1"]).is_ok());
        let err = w
            .load(&["--advertise-host=h:7000"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--advertise-host (CETE_ADVERTISE_HOST, advertise_host)"),
            "{err}"
        );
    }
}
