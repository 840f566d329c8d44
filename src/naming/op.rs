//! The persistent naming changes: what goes through raft for a service. Their binary codec and
//! the state they fold into are the consensus layer's (`consensus::naming`).

use serde::{Deserialize, Serialize};

use crate::naming::instance::InstanceSpec;
use crate::naming::service::{ClusterMeta, ServiceSettings};

/// A persistent change to one service.
///
/// JSON: an object with `"op": "<kind>"` beside the variant's fields (serde's internally
/// tagged form). Decoding goes through [`RawOp`], one pass without buffering the object, since
/// recovery decodes one op per log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", try_from = "RawOp")]
pub enum PersistentOp {
    /// Add or replace a persistent instance.
    Register {
        /// The instance (always `ephemeral: false`).
        instance: InstanceSpec,
    },
    /// Remove a persistent instance.
    Deregister {
        /// IP or host.
        ip: String,
        /// Port.
        port: u16,
        /// Cluster.
        cluster: String,
    },
    /// Create a service (or set its settings).
    CreateService {
        /// Settings.
        settings: ServiceSettings,
    },
    /// Replace a service's settings.
    UpdateService {
        /// Settings.
        settings: ServiceSettings,
    },
    /// Delete a service and every instance in it.
    DeleteService,
    /// Set a cluster's checker, check port and metadata.
    UpdateCluster {
        /// Cluster name.
        cluster: String,
        /// Settings.
        meta: ClusterMeta,
    },
}

/// Every field any [`PersistentOp`] has, for a single-pass decode (serde's internally tagged
/// enums first buffer the whole object into an untyped tree).
#[derive(Deserialize)]
struct RawOp {
    op: String,
    instance: Option<InstanceSpec>,
    ip: Option<String>,
    port: Option<u16>,
    cluster: Option<String>,
    settings: Option<ServiceSettings>,
    meta: Option<ClusterMeta>,
}

/// Why a JSON op does not make a [`PersistentOp`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// The op lacks a field its kind needs.
    #[error("op {op:?} is missing field `{field}`")]
    MissingField {
        /// The op kind.
        op: String,
        /// The missing field.
        field: &'static str,
    },
    /// An op of an unknown kind.
    #[error("unknown op {0:?}")]
    UnknownOp(String),
}

impl TryFrom<RawOp> for PersistentOp {
    type Error = OpError;

    fn try_from(r: RawOp) -> Result<Self, OpError> {
        let need = |field: &'static str| OpError::MissingField {
            op: r.op.clone(),
            field,
        };
        Ok(match r.op.as_str() {
            "register" => PersistentOp::Register {
                instance: r.instance.ok_or_else(|| need("instance"))?,
            },
            "deregister" => PersistentOp::Deregister {
                ip: r.ip.ok_or_else(|| need("ip"))?,
                port: r.port.ok_or_else(|| need("port"))?,
                cluster: r.cluster.ok_or_else(|| need("cluster"))?,
            },
            "create_service" => PersistentOp::CreateService {
                settings: r.settings.ok_or_else(|| need("settings"))?,
            },
            "update_service" => PersistentOp::UpdateService {
                settings: r.settings.ok_or_else(|| need("settings"))?,
            },
            "delete_service" => PersistentOp::DeleteService,
            "update_cluster" => PersistentOp::UpdateCluster {
                cluster: r.cluster.ok_or_else(|| need("cluster"))?,
                meta: r.meta.ok_or_else(|| need("meta"))?,
            },
            other => return Err(OpError::UnknownOp(other.to_string())),
        })
    }
}

impl PersistentOp {
    /// The event kind shown by `muster-wal`.
    pub fn kind(&self) -> &'static str {
        match self {
            PersistentOp::Register { .. } => "register",
            PersistentOp::Deregister { .. } => "deregister",
            PersistentOp::CreateService { .. } => "create_service",
            PersistentOp::UpdateService { .. } => "update_service",
            PersistentOp::DeleteService => "delete_service",
            PersistentOp::UpdateCluster { .. } => "update_cluster",
        }
    }
}
