//! Distro replicas: the ephemeral instances of a service as its responsible member last
//! replicated them, applied here by version, and adopted when this member becomes responsible.

use super::*;

/// One service's ephemeral instances as its responsible member replicates them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Replica {
    /// Namespace.
    pub namespace: String,
    /// `group@@name`.
    pub grouped: String,
    /// Distro version: a receiver applies only a higher one than it holds.
    pub version: u64,
    /// Every ephemeral instance, with its health (`InstanceSpec::healthy`).
    pub instances: Vec<InstanceSpec>,
}

impl Registry {
    /// Makes a replica held here this member's own: every ephemeral instance starts a fresh
    /// lease at `now` (its beats went to the old member; the clients that keep beating now
    /// beat here). No-op for a service that is not a replica.
    pub(super) fn adopt(&mut self, key: &ServiceKey, now: u64) {
        if !self.any_replica {
            return;
        }
        let Some(svc) = self.services.get_mut(key) else {
            return;
        };
        if !svc.replica {
            return;
        }
        svc.replica = false;
        for inst in svc.instances.iter().filter(|i| i.key.ephemeral) {
            inst.last_beat.store(now, Ordering::Relaxed);
        }
    }

    /// The replica to send for `key` after a change this member made to it (as its
    /// responsible member: writes are forwarded there, and leases are checked only there):
    /// its ephemeral instances under the next version. `None` for a service that is gone or
    /// that this member holds only as another member's replica.
    pub fn replica(&mut self, key: &ServiceKey) -> Option<Replica> {
        let svc = self.services.get_mut(key)?;
        if svc.replica {
            return None;
        }
        svc.version += 1;
        Some(Replica {
            namespace: key.namespace.to_string(),
            grouped: key.grouped.to_string(),
            version: svc.version,
            instances: svc
                .instances
                .iter()
                .filter(|i| i.key.ephemeral)
                .map(|i| i.to_spec())
                .collect(),
        })
    }

    /// Applies another member's replica at `now`: when its version is higher than the one held,
    /// the service's ephemeral instances become exactly the replica's (health included), and
    /// the service is a replica until this member adopts it. Returns whether it applied.
    pub fn apply_replica(&mut self, r: Replica, now: u64) -> bool {
        let key = ServiceKey::new(&r.namespace, &r.grouped);
        if self
            .services
            .get(&key)
            .is_some_and(|s| r.version <= s.version)
        {
            return false;
        }
        let base = self.life.timing;
        let mut built = Vec::with_capacity(r.instances.len());
        for spec in r.instances.iter().filter(|s| s.ephemeral) {
            built.push(self.fresh_instance(spec, true, base, now));
        }
        let svc = service_entry(&mut self.services, &mut self.ids, &self.view.census, &key);
        let stale: Vec<InstanceKey> = svc
            .instances
            .iter()
            .filter(|i| i.key.ephemeral)
            .filter(|i| !built.iter().any(|b| b.key == i.key))
            .map(|i| i.key.clone())
            .collect();
        let mut changed = !stale.is_empty();
        for k in stale {
            svc.instances.remove(&k);
        }
        let mut leases = Vec::new();
        for inst in built {
            if let Some(old) = svc.instances.get(&inst.key) {
                if old.same_as(&inst) {
                    continue;
                }
            }
            if !svc.meta.clusters.contains_key(&inst.key.cluster) {
                Arc::make_mut(&mut svc.meta)
                    .clusters
                    .insert(inst.key.cluster.clone(), ClusterMeta::default());
            }
            let deadline = now + inst.timing().timeout_ms + 1;
            svc.instances.insert(inst.clone());
            leases.push((deadline, inst));
            changed = true;
        }
        svc.replica = true;
        svc.version = r.version;
        self.any_replica = true;
        let id = svc.id;
        if changed {
            Self::touch(&mut self.revisions, &mut self.dirty, &key, svc);
        }
        for (deadline, inst) in leases {
            self.wheel
                .schedule(deadline, Lease::Instance { service: id, inst });
        }
        true
    }
}
