//! Server settings: CLI flags, a TOML file and `MUSTER_*` environment variables.
//!
//! Precedence, highest first: command-line flag, then the `--config` TOML file, then the
//! `MUSTER_<NAME>` environment variable (name upper-cased, `-` → `_`), then the built-in default.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use serde::Deserialize;

use crate::naming::instance::Timing;
use crate::naming::push::PushConfig;
use crate::naming::registry::Lifecycle;

/// Command-line interface of the `muster` server.
#[derive(Parser, Debug, Default)]
#[command(
    name = "muster",
    version,
    about = "Muster: a Nacos 1.x compatible service registry on a thread-per-core io_uring runtime",
    long_about = "Muster speaks the Nacos 1.x naming HTTP API, so stock Nacos clients (Java, Spring \
Cloud Alibaba, Go, Python, Node) work unchanged.\n\nEvery option can also be set in the TOML file \
given to --config (same name, with '_' instead of '-') or with a MUSTER_<NAME> environment variable \
(e.g. MUSTER_LISTEN). Precedence: flag > file > environment > default.",
    after_help = "Examples:\n  muster                                   # 0.0.0.0:8848, one shard per core, ./muster-data\n  muster --listen 127.0.0.1:8848 --shards 2\n  muster --config /etc/muster/muster.toml"
)]
pub struct Cli {
    /// TOML config file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to serve HTTP on. Port 0 picks a free port. [default: 0.0.0.0:8848]
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Data directory. [default: ./muster-data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Number of shards (one pinned thread each). [default: available cores]
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// Beat interval told to clients, in ms. [default: 5000]
    #[arg(long, value_name = "MS")]
    pub heartbeat_interval_ms: Option<u64>,
    /// No beat for this long marks an ephemeral instance unhealthy, in ms. [default: 15000]
    #[arg(long, value_name = "MS")]
    pub heartbeat_timeout_ms: Option<u64>,
    /// No beat for this long removes an ephemeral instance, in ms. [default: 30000]
    #[arg(long, value_name = "MS")]
    pub ip_delete_timeout_ms: Option<u64>,
    /// Remove instances whose beats stopped (Nacos expireInstance). [default: true]
    #[arg(long, value_name = "BOOL")]
    pub expire_instances: Option<bool>,
    /// Delete a service after it has been empty this long, in ms; 0 keeps empty services. [default: 120000]
    #[arg(long, value_name = "MS")]
    pub empty_service_ttl_ms: Option<u64>,
    /// Most services in total; creating more answers 503. [default: 200000]
    #[arg(long, value_name = "N")]
    pub max_services: Option<usize>,
    /// Most services in one namespace; creating more answers 503. [default: 200000]
    #[arg(long, value_name = "N")]
    pub max_services_per_namespace: Option<usize>,
    /// Mass-expiry guard: while more than this percent of a shard's ephemeral instances are
    /// unhealthy (and at least 10), none is removed until beats come back; 0 switches it off.
    /// [default: 50]
    #[arg(long, value_name = "PERCENT")]
    pub expiry_guard_percent: Option<u8>,
    /// Most open client connections per process; more are closed at accept. [default: 10000]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Largest request body accepted, in bytes; larger gets 413. [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Largest request head (request line + headers), in bytes; larger gets 431. [default: 16384]
    #[arg(long, value_name = "BYTES")]
    pub max_header_bytes: Option<usize>,
    /// Close a connection idle (no bytes received) this long, in ms. [default: 60000]
    #[arg(long, value_name = "MS")]
    pub idle_timeout_ms: Option<u64>,
    /// A request head must arrive whole this long after its first byte (after accept, for a
    /// connection's first request), in ms; else the connection is closed. [default: 10000]
    #[arg(long, value_name = "MS")]
    pub head_timeout_ms: Option<u64>,
    /// Capacity of each shard's cross-shard inbox; a full inbox answers 503. [default: 4096]
    #[arg(long, value_name = "N")]
    pub inbox_capacity: Option<usize>,
    /// How long shutdown waits for in-flight requests, in ms. [default: 10000]
    #[arg(long, value_name = "MS")]
    pub shutdown_grace_ms: Option<u64>,
    /// Pin each shard to a CPU. [default: true]
    #[arg(long, value_name = "BOOL")]
    pub pin: Option<bool>,
    /// Snapshot the persistent state and truncate the WAL every this many raft entries, or every
    /// records/2 entries when that is more. [default: 10000]
    #[arg(long, value_name = "N")]
    pub snapshot_entries: Option<u64>,
    /// Size of each preallocated WAL segment, in bytes (min 65536). [default: 67108864]
    #[arg(long, value_name = "BYTES")]
    pub wal_segment_bytes: Option<u64>,
    /// Push changes over UDP to subscribers that query with udpPort. [default: true]
    #[arg(long, value_name = "BOOL")]
    pub push_enabled: Option<bool>,
    /// A push target expires this long after its last query, in ms. [default: 10000]
    #[arg(long, value_name = "MS")]
    pub push_target_ttl_ms: Option<u64>,
    /// Re-send an unacked push after this long, give up after twice this, in ms. [default: 10000]
    #[arg(long, value_name = "MS")]
    pub push_ack_timeout_ms: Option<u64>,
    /// Most push targets per shard. [default: 100000]
    #[arg(long, value_name = "N")]
    pub push_max_targets: Option<usize>,
    /// Fault injection: drop this percentage of outgoing push datagrams (0-100). [default: 0]
    #[arg(long, value_name = "PERCENT")]
    pub push_drop_percent: Option<u8>,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `muster=debug`. [default: info]
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,
    /// Log line format on stderr: `text` (coloured only when stderr is a terminal) or `json`
    /// (one object per line). [default: text]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// What start does with a damaged end of the WAL: `strict` repairs only a torn write and
    /// refuses any other damage; `truncate-tail` also drops corrupt records at the very end of
    /// the last segment (keeping a `.broken` copy). [default: strict]
    #[arg(long, value_name = "MODE")]
    pub wal_recovery: Option<WalRecovery>,
    /// Cluster members, `ip:port,...` (HTTP addresses, this node included; a missing port is
    /// 8848). None: standalone. [default: none]
    #[arg(long, value_name = "ADDRS")]
    pub members: Option<String>,
    /// Cluster members from a Nacos `cluster.conf` file (`#` comments, several per line).
    /// `--members` wins. [default: none]
    #[arg(long, value_name = "FILE")]
    pub cluster_conf: Option<PathBuf>,
    /// This node's member address, when it is not `--listen` (e.g. listening on 0.0.0.0).
    /// [default: the listen address]
    #[arg(long, value_name = "ADDR:PORT")]
    pub advertise: Option<SocketAddr>,
    /// Address to serve peer (node-to-node) traffic on. Peers dial every member at its HTTP
    /// port - 1000, so keep that port. [default: the listen IP, member port - 1000]
    #[arg(long, value_name = "ADDR:PORT")]
    pub peer_listen: Option<SocketAddr>,
    /// File holding the cluster secret (at least 32 bytes; surrounding whitespace trimmed).
    /// Or set MUSTER_CLUSTER_SECRET, or `cluster_secret` in the TOML file. Required with
    /// members. [default: none]
    #[arg(long, value_name = "FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// How often each peer link pings its member, in ms (≥ 50); an answer later than this is
    /// a miss, and more than 3 misses in a row make the member DOWN, so a silent member's
    /// services move after about 4 periods. [default: 500]
    #[arg(long, value_name = "MS")]
    pub member_ping_ms: Option<u64>,
    /// About how many instances one page of a starting member's load from a peer holds
    /// (≥ 100); the load takes as many pages as it needs. [default: 20000]
    #[arg(long, value_name = "INSTANCES")]
    pub load_page_instances: Option<usize>,
    /// Raft's clock period, in ms (≥ 10). A leader heartbeats every 3 ticks. [default: 100]
    #[arg(long, value_name = "MS")]
    pub raft_tick_ms: Option<u64>,
    /// Ticks without a leader before a follower campaigns (≥ 5; raft randomises it up to
    /// twice that). [default: 10, i.e. 1 to 2 s]
    #[arg(long, value_name = "TICKS")]
    pub raft_election_ticks: Option<usize>,
    /// Join an existing cluster: a fresh data dir starts with no raft membership and waits
    /// until the leader adds this member (a conf change) and sends it a snapshot. Without it,
    /// a fresh data dir starts a new group whose voters are all the members. [default: false]
    #[arg(long)]
    pub raft_join: bool,
    /// Most bytes per second a snapshot streams to one follower, in MiB. [default: 64]
    #[arg(long, value_name = "MIB")]
    pub raft_snapshot_rate_mib: Option<u64>,
    /// Largest config content, in characters (UTF-16 units, as Nacos counts); larger is 400.
    /// The request body cap (max_body_bytes) applies first. [default: 10485760]
    #[arg(long, value_name = "CHARS")]
    pub config_max_content: Option<usize>,
    /// Most configs in one namespace; publishing a new one over it answers 400. [default: 10000]
    #[arg(long, value_name = "N")]
    pub config_max_per_namespace: Option<usize>,
    /// History records kept per config (newest first). [default: 100]
    #[arg(long, value_name = "N")]
    pub config_history_max: Option<u32>,
    /// History records older than this are dropped, in ms. [default: 2592000000 (30 days)]
    #[arg(long, value_name = "MS")]
    pub config_history_retention_ms: Option<u64>,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines; ANSI colour only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line, with the span fields (for journald and log shippers).
    Json,
}

/// What start-up recovery does with damage at the end of the write-ahead log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WalRecovery {
    /// Repair only a torn write (etcd's rule); refuse any other damage. The default.
    #[default]
    Strict,
    /// Also drop corrupt records confined to the end of the last segment.
    TruncateTail,
}

/// Why the settings do not resolve: what failed, where it came from, and why. The server
/// prints it and exits with status 2.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The `--config` file cannot be read.
    #[error("cannot read config file {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The `--config` file is not valid TOML for these settings (an unknown key included).
    #[error("config file {} is invalid: {source}", path.display())]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// What the TOML parser says.
        #[source]
        source: toml::de::Error,
    },
    /// A `MUSTER_*` variable does not parse as its setting's type.
    #[error("environment variable {key}={value:?} is invalid: {why}")]
    Env {
        /// The variable, e.g. `MUSTER_SHARDS`.
        key: String,
        /// Its value.
        value: String,
        /// The parse error.
        why: String,
    },
    /// The member list (`--members` or a `cluster.conf`) does not parse.
    #[error("{from}: {source}")]
    Members {
        /// Where the list came from.
        from: String,
        /// What is wrong with it.
        #[source]
        source: crate::cluster::MemberListError,
    },
    /// This node's address is not one of the members.
    #[error("this node's address {this} is not in the member list {members:?}; list it, or set --advertise to the listed address")]
    NotAMember {
        /// `--advertise`, else `--listen`.
        this: SocketAddr,
        /// The members.
        members: Vec<SocketAddr>,
    },
    /// The cluster secret is missing or too weak.
    #[error(transparent)]
    Secret(crate::cluster::SecretError),
    /// Each value parses, but together they are out of range (e.g. `shards` 0).
    #[error("{0}")]
    OutOfRange(String),
}

/// A value that is none of a setting's choices.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not one of {choices}")]
pub struct ChoiceError {
    /// What was given.
    pub value: String,
    /// The choices, comma-separated.
    pub choices: &'static str,
}

/// Parses a kebab-case enum value the way the TOML file spells it.
fn parse_choice<T: serde::de::DeserializeOwned>(
    s: &str,
    choices: &'static str,
) -> Result<T, ChoiceError> {
    T::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(s)).map_err(
        |_| ChoiceError {
            value: s.to_string(),
            choices,
        },
    )
}

impl std::str::FromStr for LogFormat {
    type Err = ChoiceError;
    fn from_str(s: &str) -> Result<Self, ChoiceError> {
        parse_choice(s, "text, json")
    }
}

impl std::str::FromStr for WalRecovery {
    type Err = ChoiceError;
    fn from_str(s: &str) -> Result<Self, ChoiceError> {
        parse_choice(s, "strict, truncate-tail")
    }
}

impl From<WalRecovery> for muster_storage::wal::RecoveryMode {
    fn from(w: WalRecovery) -> Self {
        match w {
            WalRecovery::Strict => muster_storage::wal::RecoveryMode::Strict,
            WalRecovery::TruncateTail => muster_storage::wal::RecoveryMode::TruncateTail,
        }
    }
}

/// The same settings as they appear in the TOML file (all optional).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    shards: Option<usize>,
    heartbeat_interval_ms: Option<u64>,
    heartbeat_timeout_ms: Option<u64>,
    ip_delete_timeout_ms: Option<u64>,
    expire_instances: Option<bool>,
    empty_service_ttl_ms: Option<u64>,
    max_services: Option<usize>,
    max_services_per_namespace: Option<usize>,
    expiry_guard_percent: Option<u8>,
    max_connections: Option<usize>,
    max_body_bytes: Option<usize>,
    max_header_bytes: Option<usize>,
    idle_timeout_ms: Option<u64>,
    head_timeout_ms: Option<u64>,
    inbox_capacity: Option<usize>,
    shutdown_grace_ms: Option<u64>,
    pin: Option<bool>,
    snapshot_entries: Option<u64>,
    wal_segment_bytes: Option<u64>,
    push_enabled: Option<bool>,
    push_target_ttl_ms: Option<u64>,
    push_ack_timeout_ms: Option<u64>,
    push_max_targets: Option<usize>,
    push_drop_percent: Option<u8>,
    log: Option<String>,
    log_format: Option<LogFormat>,
    wal_recovery: Option<WalRecovery>,
    members: Option<String>,
    cluster_conf: Option<PathBuf>,
    advertise: Option<SocketAddr>,
    peer_listen: Option<SocketAddr>,
    cluster_secret_file: Option<PathBuf>,
    cluster_secret: Option<String>,
    member_ping_ms: Option<u64>,
    load_page_instances: Option<usize>,
    raft_tick_ms: Option<u64>,
    raft_election_ticks: Option<usize>,
    raft_join: Option<bool>,
    raft_snapshot_rate_mib: Option<u64>,
    config_max_content: Option<usize>,
    config_max_per_namespace: Option<usize>,
    config_history_max: Option<u32>,
    config_history_retention_ms: Option<u64>,
}

/// Resolved server settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP listen address. Default `0.0.0.0:8848`.
    pub listen: SocketAddr,
    /// Data directory. Default `./muster-data`.
    pub data_dir: PathBuf,
    /// Shard count, ≥ 1. Default: available cores.
    pub shards: usize,
    /// Ephemeral lifecycle (timeouts 5 s / 15 s / 30 s by default).
    pub lifecycle: Lifecycle,
    /// Connection cap per process. Default 10 000.
    pub max_connections: usize,
    /// Request body cap in bytes. Default 1 MiB.
    pub max_body_bytes: usize,
    /// Request head cap in bytes (≥ 8192). Default 16 KiB. A larger head is answered 431.
    pub max_header_bytes: usize,
    /// Idle connection timeout in ms. Default 60 000.
    pub idle_timeout_ms: u64,
    /// Request-head deadline in ms (≥ 1), from the head's first byte, or from accept for a
    /// connection's first request. Default 10 000.
    pub head_timeout_ms: u64,
    /// Cross-shard inbox capacity per shard. Default 4096.
    pub inbox_capacity: usize,
    /// Shutdown grace period in ms. Default 10 000.
    pub shutdown_grace_ms: u64,
    /// Pin shards to CPUs. Default true.
    pub pin: bool,
    /// UDP push settings.
    pub push: PushConfig,
    /// Raft snapshot period in entries (≥ 1). Default 10 000.
    pub snapshot_entries: u64,
    /// WAL segment size in bytes (≥ 64 KiB). Default 64 MiB.
    pub wal_segment_bytes: u64,
    /// Log filter. Default `info`.
    pub log: String,
    /// Log line format. Default [`LogFormat::Text`].
    pub log_format: LogFormat,
    /// WAL recovery mode at start. Default [`WalRecovery::Strict`].
    pub wal_recovery: WalRecovery,
    /// Cluster membership; `None` (the default) is standalone.
    pub cluster: Option<ClusterConfig>,
    /// Largest config content in UTF-16 units (≥ 1). Default 10 MiB (10 485 760).
    pub config_max_content: usize,
    /// Most configs per namespace (≥ 1). Default 10 000.
    pub config_max_per_namespace: usize,
    /// History records kept per config (≥ 1). Default 100.
    pub config_history_max: u32,
    /// History retention by age, in ms. Default 30 days.
    pub config_history_retention_ms: u64,
}

/// A member's cluster settings (see [`crate::cluster`]).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's member address (`--advertise`, else `--listen`); one of `members`.
    pub this: SocketAddr,
    /// Every member's HTTP address, sorted, this node included.
    pub members: Vec<SocketAddr>,
    /// Where peer traffic is served. Default: the listen IP at `this`'s port − 1000.
    pub peer_listen: SocketAddr,
    /// What peers prove to each other.
    pub secret: crate::cluster::Secret,
    /// Peer ping period in ms (≥ 50); also the answer timeout. Default 500: a silent member
    /// is DOWN (its services move) after about 2 s, a refusing one at the next ping.
    pub ping_ms: u64,
    /// About how many instances a page of the startup load holds (≥ 100; default 20,000,
    /// a few MB of peer frame).
    pub load_page_instances: usize,
    /// The `cluster.conf` the members came from (`None` with `--members`): SIGHUP reloads it.
    pub conf_file: Option<PathBuf>,
    /// Raft tick period in ms (≥ 10, default 100).
    pub raft_tick_ms: u64,
    /// Election timeout in ticks (≥ 5, default 10); heartbeats every 3 ticks.
    pub raft_election_ticks: usize,
    /// A fresh data dir waits to be added instead of starting a new group (default false).
    pub raft_join: bool,
    /// Snapshot streaming rate cap per follower, in bytes per second (default 64 MiB/s).
    pub snapshot_rate: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "0.0.0.0:8848".parse().expect("valid default address"),
            data_dir: PathBuf::from("./muster-data"),
            shards: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            lifecycle: Lifecycle::default(),
            max_connections: 10_000,
            max_body_bytes: 1 << 20,
            max_header_bytes: 16 << 10,
            idle_timeout_ms: 60_000,
            head_timeout_ms: 10_000,
            inbox_capacity: 4096,
            shutdown_grace_ms: 10_000,
            pin: true,
            push: PushConfig::default(),
            snapshot_entries: 10_000,
            wal_segment_bytes: 64 << 20,
            log: "info".into(),
            log_format: LogFormat::Text,
            wal_recovery: WalRecovery::Strict,
            cluster: None,
            config_max_content: 10 << 20,
            config_max_per_namespace: 10_000,
            config_history_max: 100,
            config_history_retention_ms: 30 * 24 * 3600 * 1000,
        }
    }
}

/// Reads `MUSTER_<NAME>` and parses it; an unparsable value is an error naming the variable.
fn env_var<T: std::str::FromStr>(
    name: &str,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<T>, SettingsError>
where
    T::Err: std::fmt::Display,
{
    let key = format!("MUSTER_{}", name.to_ascii_uppercase());
    match get(&key) {
        None => Ok(None),
        Some(v) => v.parse::<T>().map(Some).map_err(|e| SettingsError::Env {
            why: e.to_string(),
            key,
            value: v,
        }),
    }
}

impl Config {
    /// Resolves the configuration from the process's CLI and environment.
    pub fn load() -> Result<Config, SettingsError> {
        Self::resolve(Cli::parse(), &|k| std::env::var(k).ok())
    }

    /// Resolves from parsed flags and an environment lookup (tests pass their own).
    pub fn resolve(
        cli: Cli,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, SettingsError> {
        let file = match &cli.config {
            None => FileConfig::default(),
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| SettingsError::ReadFile {
                        path: path.clone(),
                        source,
                    })?;
                toml::from_str(&text).map_err(|source| SettingsError::ParseFile {
                    path: path.clone(),
                    source,
                })?
            }
        };
        let d = Config::default();
        macro_rules! pick {
            ($field:ident) => {
                match cli.$field.clone().or(file.$field.clone()) {
                    Some(v) => Some(v),
                    None => env_var(stringify!($field), env)?,
                }
            };
        }
        let timing = Timing {
            interval_ms: pick!(heartbeat_interval_ms).unwrap_or(d.lifecycle.timing.interval_ms),
            timeout_ms: pick!(heartbeat_timeout_ms).unwrap_or(d.lifecycle.timing.timeout_ms),
            delete_ms: pick!(ip_delete_timeout_ms).unwrap_or(d.lifecycle.timing.delete_ms),
        };
        let lifecycle = Lifecycle {
            timing,
            expire: pick!(expire_instances).unwrap_or(d.lifecycle.expire),
            empty_service_ms: pick!(empty_service_ttl_ms).unwrap_or(d.lifecycle.empty_service_ms),
            max_services: pick!(max_services).unwrap_or(d.lifecycle.max_services),
            max_services_per_namespace: pick!(max_services_per_namespace)
                .unwrap_or(d.lifecycle.max_services_per_namespace),
            slot_ms: d.lifecycle.slot_ms,
            expiry_guard_percent: pick!(expiry_guard_percent)
                .unwrap_or(d.lifecycle.expiry_guard_percent),
        };
        let cfg = Config {
            listen: pick!(listen).unwrap_or(d.listen),
            data_dir: pick!(data_dir).unwrap_or(d.data_dir),
            shards: pick!(shards).unwrap_or(d.shards),
            lifecycle,
            max_connections: pick!(max_connections).unwrap_or(d.max_connections),
            max_body_bytes: pick!(max_body_bytes).unwrap_or(d.max_body_bytes),
            max_header_bytes: pick!(max_header_bytes).unwrap_or(d.max_header_bytes),
            idle_timeout_ms: pick!(idle_timeout_ms).unwrap_or(d.idle_timeout_ms),
            head_timeout_ms: pick!(head_timeout_ms).unwrap_or(d.head_timeout_ms).max(1),
            inbox_capacity: pick!(inbox_capacity).unwrap_or(d.inbox_capacity),
            shutdown_grace_ms: pick!(shutdown_grace_ms).unwrap_or(d.shutdown_grace_ms),
            pin: pick!(pin).unwrap_or(d.pin),
            push: PushConfig {
                enabled: pick!(push_enabled).unwrap_or(d.push.enabled),
                target_ttl_ms: pick!(push_target_ttl_ms).unwrap_or(d.push.target_ttl_ms),
                ack_timeout_ms: pick!(push_ack_timeout_ms).unwrap_or(d.push.ack_timeout_ms),
                max_targets: pick!(push_max_targets).unwrap_or(d.push.max_targets),
                drop_percent: pick!(push_drop_percent).unwrap_or(d.push.drop_percent),
            },
            snapshot_entries: pick!(snapshot_entries).unwrap_or(d.snapshot_entries).max(1),
            wal_segment_bytes: pick!(wal_segment_bytes)
                .unwrap_or(d.wal_segment_bytes)
                .max(64 << 10),
            log: pick!(log).unwrap_or(d.log),
            log_format: pick!(log_format).unwrap_or(d.log_format),
            wal_recovery: pick!(wal_recovery).unwrap_or(d.wal_recovery),
            cluster: None,
            config_max_content: pick!(config_max_content)
                .unwrap_or(d.config_max_content)
                .max(1),
            config_max_per_namespace: pick!(config_max_per_namespace)
                .unwrap_or(d.config_max_per_namespace)
                .max(1),
            config_history_max: pick!(config_history_max)
                .unwrap_or(d.config_history_max)
                .max(1),
            config_history_retention_ms: pick!(config_history_retention_ms)
                .unwrap_or(d.config_history_retention_ms),
        };
        let conf_file = match pick!(members) {
            Some(_) => None,
            None => pick!(cluster_conf),
        };
        let members = match (pick!(members), pick!(cluster_conf)) {
            (Some(list), _) => Some(crate::cluster::parse_members(&list).map_err(|source| {
                SettingsError::Members {
                    from: "members".into(),
                    source,
                }
            })?),
            (None, Some(path)) => {
                let text =
                    std::fs::read_to_string(&path).map_err(|source| SettingsError::ReadFile {
                        path: path.clone(),
                        source,
                    })?;
                Some(crate::cluster::parse_members(&text).map_err(|source| {
                    SettingsError::Members {
                        from: path.display().to_string(),
                        source,
                    }
                })?)
            }
            (None, None) => None,
        };
        let mut cfg = cfg;
        if let Some(members) = members {
            let this = pick!(advertise).unwrap_or(cfg.listen);
            if !members.contains(&this) {
                return Err(SettingsError::NotAMember { this, members });
            }
            let raw = match (
                pick!(cluster_secret_file),
                // Never a flag: a flag shows in `ps`.
                file.cluster_secret
                    .clone()
                    .or_else(|| env("MUSTER_CLUSTER_SECRET")),
            ) {
                (Some(path), _) => {
                    std::fs::read_to_string(&path).map_err(|source| SettingsError::ReadFile {
                        path: path.clone(),
                        source,
                    })?
                }
                (None, Some(s)) => s,
                (None, None) => String::new(),
            };
            let secret = crate::cluster::Secret::new(&raw).map_err(SettingsError::Secret)?;
            let peer_listen = pick!(peer_listen).unwrap_or_else(|| {
                SocketAddr::new(cfg.listen.ip(), crate::cluster::peer_addr(this).port())
            });
            cfg.cluster = Some(ClusterConfig {
                this,
                members,
                peer_listen,
                secret,
                ping_ms: pick!(member_ping_ms).unwrap_or(500).max(50),
                load_page_instances: pick!(load_page_instances).unwrap_or(20_000).max(100),
                conf_file,
                raft_tick_ms: pick!(raft_tick_ms).unwrap_or(100).max(10),
                raft_election_ticks: pick!(raft_election_ticks).unwrap_or(10).max(5),
                raft_join: cli.raft_join
                    || file
                        .raft_join
                        .or(env_var("raft_join", env)?)
                        .unwrap_or(false),
                snapshot_rate: pick!(raft_snapshot_rate_mib).unwrap_or(64).max(1) << 20,
            });
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let out = SettingsError::OutOfRange;
        if self.shards == 0 || self.shards > 1024 {
            return Err(out(format!("shards must be 1..=1024, got {}", self.shards)));
        }
        let t = self.lifecycle.timing;
        if t.timeout_ms == 0 || t.delete_ms < t.timeout_ms {
            return Err(out(format!(
                "need 0 < heartbeat_timeout_ms ({}) <= ip_delete_timeout_ms ({})",
                t.timeout_ms, t.delete_ms
            )));
        }
        if self.max_connections == 0 || self.inbox_capacity == 0 {
            return Err(out(
                "max_connections and inbox_capacity must be at least 1".into()
            ));
        }
        if self.lifecycle.expiry_guard_percent > 100 {
            return Err(out(format!(
                "expiry_guard_percent must be 0..=100, got {}",
                self.lifecycle.expiry_guard_percent
            )));
        }
        if self.push.drop_percent > 100 {
            return Err(out(format!(
                "push_drop_percent must be 0..=100, got {}",
                self.push.drop_percent
            )));
        }
        if self.max_header_bytes < 8192 {
            return Err(out(format!(
                "max_header_bytes must be at least 8192, got {}",
                self.max_header_bytes
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn defaults_match_the_issue() {
        let c = Config::resolve(Cli::default(), &env(&[])).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:8848");
        assert_eq!(c.data_dir, PathBuf::from("./muster-data"));
        assert!(c.shards >= 1);
        assert_eq!(c.lifecycle.timing, Timing::default());
    }

    #[test]
    fn flag_beats_file_beats_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        std::fs::write(&path, "shards = 3\nlisten = \"127.0.0.1:9000\"\n").unwrap();
        let cli = Cli {
            config: Some(path.clone()),
            shards: Some(5),
            ..Cli::default()
        };
        let e = env(&[
            ("MUSTER_SHARDS", "7"),
            ("MUSTER_LISTEN", "127.0.0.1:1"),
            ("MUSTER_HEARTBEAT_TIMEOUT_MS", "2000"),
        ]);
        let c = Config::resolve(cli, &e).unwrap();
        assert_eq!(c.shards, 5);
        assert_eq!(c.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(c.lifecycle.timing.timeout_ms, 2000);
    }

    #[test]
    fn config_center_settings_from_each_source() {
        let d = Config::resolve(Cli::default(), &env(&[])).unwrap();
        assert_eq!(
            (
                d.config_max_content,
                d.config_max_per_namespace,
                d.config_history_max
            ),
            (10 << 20, 10_000, 100)
        );
        assert_eq!(d.config_history_retention_ms, 2_592_000_000);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        std::fs::write(&path, "config_max_content = 5\nconfig_history_max = 7\n").unwrap();
        let cli = Cli {
            config: Some(path),
            config_max_content: Some(9),
            ..Cli::default()
        };
        let e = env(&[
            ("MUSTER_CONFIG_MAX_CONTENT", "1"),
            ("MUSTER_CONFIG_HISTORY_MAX", "1"),
            ("MUSTER_CONFIG_MAX_PER_NAMESPACE", "3"),
        ]);
        let c = Config::resolve(cli, &e).unwrap();
        assert_eq!(
            (
                c.config_max_content,
                c.config_history_max,
                c.config_max_per_namespace
            ),
            (9, 7, 3)
        );
    }

    #[test]
    fn bad_values_name_their_source() {
        let e = env(&[("MUSTER_SHARDS", "many")]);
        let err = Config::resolve(Cli::default(), &e).unwrap_err();
        let err = err.to_string();
        assert!(err.contains("MUSTER_SHARDS"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        std::fs::write(&path, "shardz = 3\n").unwrap();
        let cli = Cli {
            config: Some(path),
            ..Cli::default()
        };
        let err = Config::resolve(cli, &env(&[])).unwrap_err();
        assert!(matches!(err, SettingsError::ParseFile { .. }), "{err}");
        assert!(err.to_string().contains("invalid"), "{err}");
        let e = env(&[("MUSTER_WAL_RECOVERY", "loose")]);
        let err = Config::resolve(Cli::default(), &e).unwrap_err().to_string();
        assert!(
            err.contains("MUSTER_WAL_RECOVERY") && err.contains("truncate-tail"),
            "{err}"
        );
    }

    #[test]
    fn log_format_and_wal_recovery_from_each_source() {
        let d = Config::resolve(Cli::default(), &env(&[])).unwrap();
        assert_eq!(
            (d.log_format, d.wal_recovery),
            (LogFormat::Text, WalRecovery::Strict)
        );
        let e = env(&[
            ("MUSTER_LOG_FORMAT", "json"),
            ("MUSTER_WAL_RECOVERY", "truncate-tail"),
        ]);
        let c = Config::resolve(Cli::default(), &e).unwrap();
        assert_eq!(
            (c.log_format, c.wal_recovery),
            (LogFormat::Json, WalRecovery::TruncateTail)
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        std::fs::write(&path, "log_format = \"json\"\nwal_recovery = \"strict\"\n").unwrap();
        let cli = Cli {
            config: Some(path),
            ..Cli::default()
        };
        let c = Config::resolve(cli, &e).unwrap();
        assert_eq!(
            (c.log_format, c.wal_recovery),
            (LogFormat::Json, WalRecovery::Strict)
        );
        let cli = Cli::try_parse_from([
            "muster",
            "--log-format",
            "text",
            "--wal-recovery",
            "truncate-tail",
        ])
        .unwrap();
        let c = Config::resolve(cli, &env(&[])).unwrap();
        assert_eq!(
            (c.log_format, c.wal_recovery),
            (LogFormat::Text, WalRecovery::TruncateTail)
        );
    }

    #[test]
    fn cluster_settings_resolve_and_refuse_what_cannot_work() {
        let secret = ("MUSTER_CLUSTER_SECRET", "0123456789abcdef0123456789abcdef");
        let cli = |members: &str| Cli {
            listen: Some("127.0.0.2:8848".parse().unwrap()),
            members: Some(members.into()),
            ..Cli::default()
        };
        let c = Config::resolve(cli("127.0.0.1,127.0.0.2:8848,127.0.0.3"), &env(&[secret]))
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!(c.this.to_string(), "127.0.0.2:8848");
        assert_eq!(c.members.len(), 3);
        assert_eq!(c.peer_listen.to_string(), "127.0.0.2:7848");
        assert_eq!(c.ping_ms, 500);
        // No secret, a short one, or the README's example: refused.
        let e = Config::resolve(cli("127.0.0.1,127.0.0.2"), &env(&[])).unwrap_err();
        assert!(matches!(e, SettingsError::Secret(_)), "{e}");
        let e = Config::resolve(
            cli("127.0.0.1,127.0.0.2"),
            &env(&[("MUSTER_CLUSTER_SECRET", crate::cluster::EXAMPLE_SECRET)]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("example"), "{e}");
        // This node is not listed.
        let e = Config::resolve(cli("127.0.0.1,127.0.0.3"), &env(&[secret])).unwrap_err();
        assert!(matches!(e, SettingsError::NotAMember { .. }), "{e}");
        // cluster.conf, with --advertise naming the listed address.
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("cluster.conf");
        std::fs::write(&conf, "# members\n10.0.0.1:8848 10.0.0.2:8848\n").unwrap();
        let c = Config::resolve(
            Cli {
                listen: Some("0.0.0.0:8848".parse().unwrap()),
                advertise: Some("10.0.0.2:8848".parse().unwrap()),
                cluster_conf: Some(conf),
                ..Cli::default()
            },
            &env(&[secret]),
        )
        .unwrap()
        .cluster
        .unwrap();
        assert_eq!(c.this.to_string(), "10.0.0.2:8848");
        assert_eq!(c.peer_listen.to_string(), "0.0.0.0:7848");
        // Standalone by default.
        assert!(Config::resolve(Cli::default(), &env(&[]))
            .unwrap()
            .cluster
            .is_none());
    }
}
