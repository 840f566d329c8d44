//! Distro replicas: the ephemeral instances of a service as its responsible member last
//! replicated them, applied here by version, adopted when this member becomes responsible,
//! and merged instance by instance ([`super::ledger`]) when two members both took writes for
//! the service (a partition) or a member hands its copy to the one now responsible.

use super::ledger::Tombstone;
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
    /// The stamp of each instance, in the same order (empty: all unknown, 0). See
    /// [`super::ledger`].
    #[serde(default)]
    pub stamps: Vec<u64>,
    /// Instances deregistered from the service, within the tombstone retention.
    #[serde(default)]
    pub tombs: Vec<Tombstone>,
}

impl Replica {
    /// The replica of service `key` at `version` from its instances (the persistent ones are
    /// left out: raft replicates those), without stamps or tombstones.
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
            stamps: Vec::new(),
            tombs: Vec::new(),
        }
    }
}

/// What became of a replica a member received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// It replaced the copy held here (a higher version).
    Applied,
    /// This member is responsible: it was merged into the copy held here, which changed.
    Merged,
    /// Nothing changed: an older version, a merge that added nothing, or a copy this member
    /// took writes for and has not handed to the responsible member yet.
    Kept,
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

    /// The replica of `key` at its version, with its stamps and tombstones (within retention
    /// at `now`): after a change this member made to it (as its responsible member: writes
    /// are forwarded there, and leases are checked only there; [`Registry::flush`] bumped the
    /// version), for a peer's verify round that found it missing or older, or to hand it to
    /// the member now responsible. `None` for a service that is gone or held as another's
    /// replica.
    pub fn replica_now(&self, key: &ServiceKey, now: u64) -> Option<Replica> {
        let svc = self.services.get(key).filter(|s| !s.replica)?;
        let mut r = Replica::of(key, svc.version, svc.instances.iter());
        if let Some(ledger) = &svc.ledger {
            r.stamps = svc
                .instances
                .iter()
                .filter(|i| i.key.ephemeral)
                .map(|i| ledger.stamp(&i.key))
                .collect();
            r.tombs = ledger.tombstones(now);
        }
        Some(r)
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
        let (built, tombs) = self.build_replica(&r, now);
        let stamps: Vec<(InstanceKey, u64)> =
            built.iter().map(|(i, s)| (i.key.clone(), *s)).collect();
        let svc = service_entry(&mut self.services, &mut self.ids, &self.view.census, &key);
        let incoming: HashSet<&InstanceKey> = built.iter().map(|(b, _)| &b.key).collect();
        let stale: Vec<InstanceKey> = svc
            .instances
            .iter()
            .filter(|i| i.key.ephemeral && !incoming.contains(&i.key))
            .map(|i| i.key.clone())
            .collect();
        drop(incoming);
        for k in stale {
            svc.instances.remove(&k);
        }
        let mut leases = Vec::new();
        for (inst, _) in built {
            if let Some(old) = svc.instances.get(&inst.key) {
                if old.same_as(&inst) {
                    continue;
                }
            }
            leases.push(place(&mut svc.meta, &mut svc.instances, inst, now));
        }
        svc.replica = true;
        svc.version = r.version;
        svc.ledger_mut().replace(stamps, tombs, now);
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

    /// What a member does with a replica of service `r` it received, at `now`:
    /// - `responsible` (this member is responsible for the service): merges it into its own
    ///   copy ([`Registry::merge_replica`], with no version bump unless something changed, so
    ///   two members that briefly both think they are responsible do not bounce replicas);
    /// - a copy this member took writes for and has not handed over yet: kept as it is (the
    ///   next verify round hands it to the responsible member, which merges it);
    /// - otherwise the replica replaces the copy held here if its version is higher
    ///   ([`Registry::apply_replica`]).
    pub fn receive_replica(&mut self, r: Replica, responsible: bool, now: u64) -> Received {
        if responsible {
            return if self.merge_replica(r, false, now) {
                Received::Merged
            } else {
                Received::Kept
            };
        }
        let key = ServiceKey::new(&r.namespace, &r.grouped);
        if self
            .services
            .get(&key)
            .is_some_and(|s| !s.replica && s.version > 0)
        {
            return Received::Kept;
        }
        if self.apply_replica(r, now) {
            Received::Applied
        } else {
            Received::Kept
        }
    }

    /// Merges another member's copy `r` of a service this member is responsible for into its
    /// own, instance by instance (the rules are in [`super::ledger`]); instances it gains
    /// start fresh leases at `now`. A replica held here becomes this member's own. When
    /// something changed, or when `bump` is set (a verify round or a hand-over: the sender
    /// holds a version this member must move past), the service is published under a version
    /// above both copies' (the flush adds one to the higher), so every member applies the
    /// merged copy. Returns whether it will be published.
    pub fn merge_replica(&mut self, r: Replica, bump: bool, now: u64) -> bool {
        let key = ServiceKey::new(&r.namespace, &r.grouped);
        self.adopt(&key, now);
        let (built, tombs) = self.build_replica(&r, now);
        let svc = service_entry(&mut self.services, &mut self.ids, &self.view.census, &key);
        svc.replica = false;
        let mut changed = false;
        let ledger = svc.ledger.get_or_insert_with(Default::default);
        for (ik, version) in tombs {
            if svc.instances.get(&ik).is_some() {
                if ledger.stamp(&ik) >= version {
                    continue;
                }
                svc.instances.remove(&ik);
                changed = true;
            }
            ledger.bury(ik, version, now);
        }
        let mut leases = Vec::new();
        for (inst, stamp) in built {
            if ledger.tomb(&inst.key).is_some_and(|t| t >= stamp) {
                continue;
            }
            if let Some(old) = svc.instances.get(&inst.key) {
                if stamp <= ledger.stamp(&old.key) {
                    continue;
                }
                ledger.registered(&inst.key, stamp);
                if old.same_as(&inst) && old.healthy == inst.healthy {
                    continue;
                }
            } else {
                ledger.registered(&inst.key, stamp);
            }
            leases.push(place(&mut svc.meta, &mut svc.instances, inst, now));
            changed = true;
        }
        let publish = changed || (bump && r.version >= svc.version);
        if publish {
            svc.version = svc.version.max(r.version);
            let id = svc.id;
            Self::touch(&mut self.revisions, &mut self.dirty, &key, svc);
            for (deadline, inst) in leases {
                self.wheel
                    .schedule(deadline, Lease::Instance { service: id, inst });
            }
        }
        publish
    }

    /// The copies this member took writes for (it was, or thought it was, responsible) of
    /// services `responsible` now says another member is responsible for: what it hands over
    /// in a verify round, as replicas with stamps and tombstones.
    pub fn handovers(&self, responsible: &dyn Fn(&ServiceKey) -> bool, now: u64) -> Vec<Replica> {
        self.services
            .iter()
            .filter(|(k, s)| !s.replica && s.version > 0 && !responsible(k))
            .filter_map(|(k, _)| self.replica_now(k, now))
            .collect()
    }

    /// The member now responsible merged this member's copy of `key` at `version`: from now
    /// on the copy is a replica, replaced by the responsible member's. Not if it changed
    /// since (a write forwarded here meanwhile): it is handed over again.
    pub fn release(&mut self, key: &ServiceKey, version: u64) {
        if let Some(svc) = self.services.get_mut(key) {
            if !svc.replica && svc.version == version {
                svc.replica = true;
                self.any_replica = true;
            }
        }
    }

    /// The instances of `r` built for this registry (fresh generations, last beat `now`),
    /// each with its stamp, and its tombstones' keys with their versions.
    #[allow(clippy::type_complexity)]
    fn build_replica(
        &mut self,
        r: &Replica,
        now: u64,
    ) -> (Vec<(Arc<Instance>, u64)>, Vec<(InstanceKey, u64)>) {
        let base = self.life.timing;
        let mut built = Vec::with_capacity(r.instances.len());
        for (i, spec) in r.instances.iter().enumerate().filter(|(_, s)| s.ephemeral) {
            let stamp = r.stamps.get(i).copied().unwrap_or(0);
            built.push((self.fresh_instance(spec, true, base, now), stamp));
        }
        let tombs = r
            .tombs
            .iter()
            .map(|t| {
                (
                    self.instance_key(&t.ip, t.port, &t.cluster, true),
                    t.version,
                )
            })
            .collect();
        (built, tombs)
    }
}

/// Puts an instance taken from another member's copy into a service (creating its cluster if
/// new) and returns the lease it starts: a full timeout from `now`.
fn place(
    meta: &mut Arc<ServiceMeta>,
    instances: &mut Roster,
    inst: Arc<Instance>,
    now: u64,
) -> (u64, Arc<Instance>) {
    if !meta.clusters.contains_key(&inst.key.cluster) {
        Arc::make_mut(meta)
            .clusters
            .insert(inst.key.cluster.clone(), ClusterMeta::default());
    }
    let deadline = now + inst.timing().timeout_ms + 1;
    instances.insert(inst.clone());
    (deadline, inst)
}
