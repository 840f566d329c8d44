//! Persistent (CP) data: the changes that go through raft, and the state they fold into.
//!
//! Every persistent change is a [`PersistentOp`] carried in a raft entry as a
//! `muster_storage::event::Event` (service key `namespace##group@@name`, a kind, the wall time,
//! and the op as JSON, so `muster-wal` can show it). Committed ops fold into [`Durable`], the
//! raft shard's copy of all persistent state, which snapshots serialize; each op is also applied
//! by the service's owner shard to the registry that serves reads. Applying is an upsert and
//! never fails: existence checks happen before proposing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::ServiceSettings;
use crate::instance::InstanceSpec;
use crate::service::{ClusterMeta, ServiceKey};

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

impl TryFrom<RawOp> for PersistentOp {
    type Error = String;

    fn try_from(r: RawOp) -> Result<Self, String> {
        let need = |name: &str| format!("op {:?} is missing field `{name}`", r.op);
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
            other => return Err(format!("unknown op {other:?}")),
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

/// The event key of a service: `namespace##group@@name`.
pub fn event_key(key: &ServiceKey) -> String {
    format!("{}##{}", key.namespace, key.grouped)
}

/// Parses an event key back into a service key.
pub fn parse_event_key(s: &str) -> Option<ServiceKey> {
    let (ns, grouped) = s.split_once("##")?;
    Some(ServiceKey::new(ns, grouped))
}

/// One service's persistent state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DurableService {
    /// Settings, if the service was created or updated through the API.
    pub settings: Option<ServiceSettings>,
    /// Clusters set with `PUT /cluster`.
    pub clusters: BTreeMap<String, ClusterMeta>,
    /// Persistent instances by `ip:port:cluster`.
    pub instances: BTreeMap<String, InstanceSpec>,
}

/// All persistent state, folded from committed ops. Invariant: equal to applying, in order,
/// every committed op up to `applied`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Durable {
    /// Raft index of the last op folded in.
    pub applied: u64,
    /// Services by event key.
    pub services: BTreeMap<String, DurableService>,
}

impl Durable {
    /// Folds one committed op in.
    pub fn apply(&mut self, key: &ServiceKey, op: &PersistentOp) {
        let k = event_key(key);
        match op {
            PersistentOp::Register { instance } => {
                let id = format!("{}:{}:{}", instance.ip, instance.port, instance.cluster);
                self.services
                    .entry(k)
                    .or_default()
                    .instances
                    .insert(id, instance.clone());
            }
            PersistentOp::Deregister { ip, port, cluster } => {
                if let Some(s) = self.services.get_mut(&k) {
                    s.instances.remove(&format!("{ip}:{port}:{cluster}"));
                }
            }
            PersistentOp::CreateService { settings } | PersistentOp::UpdateService { settings } => {
                self.services.entry(k).or_default().settings = Some(settings.clone());
            }
            PersistentOp::DeleteService => {
                self.services.remove(&k);
            }
            PersistentOp::UpdateCluster { cluster, meta } => {
                self.services
                    .entry(k)
                    .or_default()
                    .clusters
                    .insert(cluster.clone(), meta.clone());
            }
        }
    }

    /// The ops that rebuild this state on empty registries, service by service.
    pub fn replay(&self) -> Vec<(ServiceKey, PersistentOp)> {
        let mut out = Vec::new();
        for (k, s) in &self.services {
            let Some(key) = parse_event_key(k) else {
                continue;
            };
            if let Some(settings) = &s.settings {
                out.push((
                    key.clone(),
                    PersistentOp::CreateService {
                        settings: settings.clone(),
                    },
                ));
            }
            for (cluster, meta) in &s.clusters {
                out.push((
                    key.clone(),
                    PersistentOp::UpdateCluster {
                        cluster: cluster.clone(),
                        meta: meta.clone(),
                    },
                ));
            }
            for spec in s.instances.values() {
                out.push((
                    key.clone(),
                    PersistentOp::Register {
                        instance: spec.clone(),
                    },
                ));
            }
        }
        out
    }

    /// Number of persistent instances.
    pub fn instance_count(&self) -> usize {
        self.services.values().map(|s| s.instances.len()).sum()
    }

    /// Snapshot bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("in-memory JSON encoding")
    }

    /// Parses snapshot bytes.
    pub fn decode(bytes: &[u8]) -> Result<Durable, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("snapshot state is not valid: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ip: &str) -> InstanceSpec {
        InstanceSpec {
            ephemeral: false,
            ..InstanceSpec::new(ip, 3306)
        }
    }

    #[test]
    fn fold_replay_and_snapshot_round_trip() {
        let key = ServiceKey::new("public", "DEFAULT_GROUP@@mysql");
        let mut d = Durable::default();
        d.apply(
            &key,
            &PersistentOp::Register {
                instance: spec("10.0.0.1"),
            },
        );
        d.apply(
            &key,
            &PersistentOp::Register {
                instance: spec("10.0.0.2"),
            },
        );
        d.apply(
            &key,
            &PersistentOp::Deregister {
                ip: "10.0.0.1".into(),
                port: 3306,
                cluster: "DEFAULT".into(),
            },
        );
        assert_eq!(d.instance_count(), 1);
        let back = Durable::decode(&d.encode()).unwrap();
        assert_eq!(back, d);
        let ops = d.replay();
        assert_eq!(ops.len(), 1);
        let mut again = Durable::default();
        for (k, op) in &ops {
            again.apply(k, op);
        }
        assert_eq!(again.services, d.services);
        d.apply(&key, &PersistentOp::DeleteService);
        assert_eq!(d.instance_count(), 0);
    }

    #[test]
    fn ops_are_readable_json() {
        let op = PersistentOp::Deregister {
            ip: "1.1.1.1".into(),
            port: 1,
            cluster: "DEFAULT".into(),
        };
        let j = serde_json::to_string(&op).unwrap();
        assert_eq!(
            j,
            r#"{"op":"deregister","ip":"1.1.1.1","port":1,"cluster":"DEFAULT"}"#
        );
        assert_eq!(
            parse_event_key("public##g@@s"),
            Some(ServiceKey::new("public", "g@@s"))
        );
    }

    #[test]
    fn every_op_decodes_back_and_bad_ops_are_named() {
        let settings = ServiceSettings {
            protect_threshold: 0.5,
            metadata: Default::default(),
            selector: serde_json::json!({"type": "none"}),
        };
        let ops = [
            PersistentOp::Register {
                instance: spec("10.0.0.1"),
            },
            PersistentOp::Deregister {
                ip: "1.1.1.1".into(),
                port: 1,
                cluster: "DEFAULT".into(),
            },
            PersistentOp::CreateService {
                settings: settings.clone(),
            },
            PersistentOp::UpdateService { settings },
            PersistentOp::DeleteService,
            PersistentOp::UpdateCluster {
                cluster: "c1".into(),
                meta: ClusterMeta::default(),
            },
        ];
        for op in ops {
            let j = serde_json::to_vec(&op).unwrap();
            assert_eq!(serde_json::from_slice::<PersistentOp>(&j).unwrap(), op);
        }
        let e = serde_json::from_str::<PersistentOp>(r#"{"op":"deregister","ip":"1.1.1.1"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing field `port`"), "{e}");
        let e = serde_json::from_str::<PersistentOp>(r#"{"op":"explode"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown op \"explode\""), "{e}");
    }
}
