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

impl Replica {
    /// The replica of service `key` at `version` from its instances (the persistent ones are
    /// left out: raft replicates those).
    pub fn of<'a>(
        key: &ServiceKey,
        version: u64,
        instances: impl IntoIterator<Item = &'a Arc<Instance>>,
    ) -> Replica {
        Replica {
            namespace: key.namespace.to_string(),
            grouped: key.grouped.to_string(),
            version,
            instances: instances
                .into_iter()
                .filter(|i| i.key.ephemeral)
                .map(|i| i.to_spec())
                .collect(),
        }
    }
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

    /// The replica of `key` at its version: after a change this member made to it (as its
    /// responsible member: writes are forwarded there, and leases are checked only there;
    /// [`Registry::flush`] bumped the version), or for a peer's verify round that found it
    /// missing or older. `None` for a service that is gone or held as another's replica.
    pub fn replica_now(&self, key: &ServiceKey) -> Option<Replica> {
        let svc = self.services.get(key).filter(|s| !s.replica)?;
        Some(Replica::of(key, svc.version, svc.instances.iter()))
    }

    /// Turns Distro on (cluster mode): every flush of a service this member changed itself
    /// bumps its version, and instance writes publish copy-on-write (so every published view
    /// shows the version; the in-place path would keep the old one).
    pub fn set_distro(&mut self, on: bool) {
        self.distro = on;
    }

    /// The Distro versions of the services this member has replicated as their responsible
    /// member: what it sends its peers in a verify round.
    pub fn versions(&self) -> Vec<(ServiceKey, u64)> {
        self.services
            .iter()
            .filter(|(_, s)| !s.replica && s.version > 0)
            .map(|(k, s)| (k.clone(), s.version))
            .collect()
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
        }
        svc.replica = true;
        svc.version = r.version;
        self.any_replica = true;
        let id = svc.id;
        // Published even when the instances are the same, so that the view shows the version
        // a verify round compares.
        Self::touch(&mut self.revisions, &mut self.dirty, &key, svc);
        for (deadline, inst) in leases {
            self.wheel
                .schedule(deadline, Lease::Instance { service: id, inst });
        }
        true
    }
}
