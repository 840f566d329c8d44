//! Writes: every change a client asks of a service, what its owner makes of it, and the answers.
//!
//! There is one write path. A handler parses a request into a [`Write`] and sends it to the
//! service's owner (`node::shard::Shard::execute`); it never decides durability and never
//! checks a precondition itself. The owner's registry (`Registry::apply`) checks every
//! precondition once, against its own state (strict update, patch merge, metadata-batch
//! matching, service existence, the service caps), and answers an [`Outcome`]:
//! - [`Outcome::Applied`]: an ephemeral write (or a health flip) already applied in memory;
//! - [`Outcome::Propose`]: persistent changes, which the owner proposes to raft and applies when
//!   they are committed (`Registry::apply_committed`), then answers.
//!
//! A write for a service owned by another shard travels in that shard's mailbox
//! (`node::mailbox::Message`) and is answered after the owner has applied and published it.

use crate::naming::instance::InstanceSpec;
use crate::naming::op::PersistentOp;
use crate::naming::push::Subscription;
use crate::naming::service::{ClusterMeta, Metadata, ServiceSettings};

/// Where an instance lives: in memory, kept by heartbeats and replicated AP (`Ephemeral`), or
/// in the raft log, fsynced before `ok` (`Persistent`). Nacos's `ephemeral` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Durability {
    /// Kept alive by beats; lost with the node (Nacos `ephemeral=true`, the default).
    Ephemeral,
    /// A raft log entry; survives restarts (Nacos `ephemeral=false`).
    Persistent,
}

impl Durability {
    /// From Nacos's `ephemeral` flag.
    pub fn from_ephemeral(ephemeral: bool) -> Durability {
        if ephemeral {
            Durability::Ephemeral
        } else {
            Durability::Persistent
        }
    }

    /// Nacos's `ephemeral` flag.
    pub fn is_ephemeral(self) -> bool {
        self == Durability::Ephemeral
    }
}

/// What the owner made of a [`Write`].
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Applied in memory (ephemeral instances, health): the answer, ready now.
    Applied(Reply),
    /// Persistent changes to propose, in this order. Nothing has changed yet: each op is
    /// applied when raft commits it, and `reply` is the answer once all of them are applied.
    /// The ephemeral part of a mixed write (metadata batch) is already applied.
    Propose {
        /// The changes, in log order (at least one).
        ops: Vec<PersistentOp>,
        /// The answer after the last op is applied.
        reply: Reply,
    },
}

/// A change to one service, as a client asked for it. Its durability is the instance's
/// `ephemeral` flag where the request names it; where it depends on the state (patch, beat,
/// metadata batch), the owner decides. Serialisable: a write that reaches a member that is not
/// responsible for its service travels to the responsible one (`node::distro`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Write {
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
        durability: Durability,
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
        durability: Durability,
        /// Keys to set (PUT) or delete (DELETE, values ignored).
        metadata: Metadata,
        /// Delete the keys instead of setting them.
        delete: bool,
    },
    /// `POST /service`: a 400 if the service exists.
    CreateService(ServiceSettings),
    /// `PUT /service`: a 500 (`service … not found!`) if it does not.
    UpdateService(ServiceSettings),
    /// `DELETE /service`: a 400 if it does not exist or still has instances.
    DeleteService,
    /// `PUT /cluster`: a 500 (`service not found:…`) if the service does not exist.
    UpdateCluster {
        /// Cluster name.
        cluster: String,
        /// Checker, check port and metadata.
        meta: ClusterMeta,
    },
}

impl Write {
    /// True for a write of a persistent instance named by the request (register, update or
    /// deregister with `ephemeral=false`). Those go through raft from whichever member took
    /// them, not to the service's Distro-responsible member: raft forwards the proposal to
    /// its leader, and the answer says `no raft leader` when there is none.
    pub fn names_persistent_instance(&self) -> bool {
        match self {
            Write::Register(spec) | Write::Update { spec, .. } => !spec.ephemeral,
            Write::Deregister { durability, .. } => *durability == Durability::Persistent,
            _ => false,
        }
    }
}

/// Fields `PATCH /instance` may change; `None` leaves a field alone.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Target {
    /// IP or host.
    pub ip: String,
    /// Port.
    pub port: u16,
    /// Cluster; `None` matches any.
    pub cluster: Option<String>,
    /// Ephemeral or persistent.
    pub durability: Durability,
}

/// The answer to a write.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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
