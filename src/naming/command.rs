//! Writes: what a service's owner applies to its registry, and the answers.
//!
//! A write for a service owned by another shard travels in that shard's mailbox
//! (`node::mailbox::Message`) and is answered after the owner has applied and published it.

use crate::naming::instance::InstanceSpec;
use crate::naming::push::Subscription;
use crate::naming::service::Metadata;

/// A change to one service.
#[derive(Debug, Clone)]
pub enum Command {
    /// `POST /instance`: add or replace an instance; creates the service if absent.
    Register(InstanceSpec),
    /// `PUT /instance`. `strict` (Java UA ≥ 1.0.0) requires the service and instance to exist.
    Update {
        /// The new settings.
        spec: InstanceSpec,
        /// Strict update instead of upsert.
        strict: bool,
    },
    /// `DELETE /instance`: `ok` even when nothing matches.
    Deregister {
        /// IP or host.
        ip: String,
        /// Port.
        port: u16,
        /// Cluster.
        cluster: String,
        /// Which set to remove from.
        ephemeral: bool,
    },
    /// `PATCH /instance`: change selected fields of an existing instance.
    Patch(Patch),
    /// `PUT /instance/beat`.
    Beat {
        /// IP or host (the beat JSON's wins).
        ip: String,
        /// Port (the beat JSON's wins).
        port: u16,
        /// Cluster (a non-blank one in the beat JSON wins).
        cluster: String,
        /// The instance to register if unknown (from the beat JSON).
        register: Option<InstanceSpec>,
    },
    /// `PUT /health/instance`: allowed only when the cluster's checker is `NONE`.
    SetHealth {
        /// IP or host.
        ip: String,
        /// Port.
        port: u16,
        /// Cluster.
        cluster: String,
        /// New health.
        healthy: bool,
    },
    /// `PUT|DELETE /instance/metadata/batch`.
    BatchMetadata {
        /// The instances to touch; `None` means all of the given kind.
        targets: Option<Vec<Target>>,
        /// Which instances `None` targets cover.
        ephemeral: bool,
        /// Keys to set (PUT) or delete (DELETE, values ignored).
        metadata: Metadata,
        /// Delete the keys instead of setting them.
        delete: bool,
    },
}

/// Fields `PATCH /instance` may change; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct Patch {
    /// IP or host.
    pub ip: String,
    /// Port.
    pub port: u16,
    /// Cluster.
    pub cluster: String,
    /// New metadata (replaces all keys).
    pub metadata: Option<Metadata>,
    /// New app.
    pub app: Option<String>,
    /// New weight.
    pub weight: Option<f64>,
    /// New enabled flag.
    pub enabled: Option<bool>,
}

/// A service's persistent state as recovered from the log (see `Durable`).
#[derive(Debug, Clone)]
pub struct Restore {
    /// Settings, if the service was created or updated through the API.
    pub settings: Option<crate::naming::service::ServiceSettings>,
    /// Clusters set with `PUT /cluster`.
    pub clusters: Vec<(String, crate::naming::service::ClusterMeta)>,
    /// The persistent instances (shared with the raft thread's copy).
    pub instances: Vec<std::sync::Arc<InstanceSpec>>,
}

/// One instance named by a batch request.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// IP or host.
    pub ip: String,
    /// Port.
    pub port: u16,
    /// Cluster; `None` matches any.
    pub cluster: Option<String>,
    /// Ephemeral or persistent.
    pub ephemeral: bool,
}

/// The answer to a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Plain `ok`.
    Ok,
    /// A beat answer: `code` 10200 or 20404, and the interval to sleep.
    Beat {
        /// 10200 (OK) or 20404 (unknown instance).
        code: u32,
        /// Milliseconds until the next beat.
        interval_ms: u64,
    },
    /// Instances a batch touched, as `ip:port:unknown:cluster:ephemeral|persist`.
    Updated(Vec<String>),
    /// Live push targets of a service.
    Subscribers(Vec<Subscription>),
    /// Whether a `Subscribe` made (or refreshed) a push target: false when the shard's target
    /// table is full.
    Subscribed(bool),
}
