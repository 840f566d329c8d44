//! Persistent state on the owner: committed ops, the restore at startup, and the health of
//! persistent instances that the node's probes report.

use super::*;

impl Registry {
    /// Up to `limit` of the persistent instances added and not yet taken, oldest first, for the
    /// prober to track. Bounded so that a restore of a million instances is handed over over
    /// several ticks instead of stalling one.
    pub fn take_new_persistent(&mut self, limit: usize) -> Vec<crate::naming::probe::ProbeId> {
        let n = limit.min(self.new_persistent.len());
        self.new_persistent.drain(..n).collect()
    }

    /// What to do about a tracked instance now: probe it (its cluster's checker is TCP or HTTP,
    /// its ip is an address, it is not marked), wait (NONE or MYSQL checker, host name, marked),
    /// or forget it (gone, or no longer persistent).
    pub fn probe_target(&self, service: &ServiceKey, key: &InstanceKey) -> ProbeTarget {
        let Some(inst) = self
            .services
            .get(service)
            .and_then(|s| s.instances.get(key))
        else {
            return ProbeTarget::Gone;
        };
        if key.ephemeral {
            return ProbeTarget::Gone;
        }
        let svc = &self.services[service];
        let Some(cluster) = svc.meta.clusters.get(&key.cluster) else {
            return ProbeTarget::Idle;
        };
        let Some(checker) = crate::naming::probe::Checker::from_json(&cluster.health_checker)
        else {
            return ProbeTarget::Idle;
        };
        let Ok(ip) = key.ip.parse::<std::net::IpAddr>() else {
            return ProbeTarget::Idle;
        };
        if inst.marked {
            return ProbeTarget::Idle;
        }
        let port = if cluster.use_instance_port {
            key.port
        } else {
            u16::try_from(cluster.check_port).unwrap_or(key.port)
        };
        ProbeTarget::Probe(crate::naming::probe::Probe {
            service: service.clone(),
            key: key.clone(),
            addr: std::net::SocketAddr::new(ip, port),
            checker,
        })
    }

    /// Current health of an instance, if it exists.
    pub fn health_of(&self, service: &ServiceKey, key: &InstanceKey) -> Option<bool> {
        self.services
            .get(service)?
            .instances
            .get(key)
            .map(|i| i.healthy)
    }

    /// Sets an instance's health from a probe (persistent, unmarked instances only).
    pub fn set_probe_health(&mut self, service: &ServiceKey, key: &InstanceKey, healthy: bool) {
        let Some(svc) = self.services.get_mut(service) else {
            return;
        };
        let Some(inst) = svc.instances.get(key) else {
            return;
        };
        if key.ephemeral || inst.marked || inst.healthy == healthy {
            return;
        }
        let changed = Arc::new(inst.with_health(healthy));
        svc.instances.insert(changed);
        Self::touch(&mut self.revisions, &mut self.dirty, service, svc);
    }

    /// Applies a committed persistent change. Existence checks were made before proposing, and
    /// applying is an upsert so replays are idempotent. Services touched here are durable: the
    /// empty-service cleaner leaves them alone.
    ///
    /// The one refusal: `DeleteService` of a service that still has persistent instances
    /// changes nothing and answers 400, exactly when
    /// `consensus::naming::Durable::apply_change` refuses it too, so live state and a
    /// replay agree. (The API refuses any non-empty
    /// service before proposing; this catches a persistent register that raced the delete. An
    /// ephemeral one that raced it goes with the service, as it would on replay; its next beat
    /// is answered 20404 and the client registers again.)
    ///
    /// A service whose only change since the last flush is committed ops is published without
    /// a Distro version bump and not replicated (see `Registry::raft_only`): every member
    /// applies the same op from the log, and a bump here would make this member refuse the
    /// responsible member's next replica.
    pub fn apply_committed(
        &mut self,
        key: &ServiceKey,
        op: PersistentOp,
        now: u64,
    ) -> ApiResult<()> {
        let only_raft = !self.dirty.contains(key) || self.raft_only.contains_key(key);
        let r = self.apply_committed_op(key, op, now);
        if only_raft {
            if let Some(svc) = self.services.get(key) {
                self.raft_only.insert(key.clone(), svc.revision);
            }
        }
        r
    }

    fn apply_committed_op(
        &mut self,
        key: &ServiceKey,
        op: PersistentOp,
        now: u64,
    ) -> ApiResult<()> {
        match op {
            PersistentOp::Register { instance } => {
                self.upsert(key, &instance, now);
            }
            PersistentOp::Deregister { ip, port, cluster } => {
                let ik = self.instance_key(&ip, port, &cluster, false);
                if let Some(svc) = self.services.get_mut(key) {
                    if svc.instances.remove(&ik).is_some() {
                        Self::touch(&mut self.revisions, &mut self.dirty, key, svc);
                    }
                }
                return Ok(());
            }
            PersistentOp::CreateService { settings } | PersistentOp::UpdateService { settings } => {
                let svc = service_entry(&mut self.services, &mut self.ids, &self.view.census, key);
                apply_settings(Arc::make_mut(&mut svc.meta), settings);
                Self::touch(&mut self.revisions, &mut self.dirty, key, svc);
            }
            PersistentOp::DeleteService => {
                let persistent = self
                    .services
                    .get(key)
                    .is_some_and(|svc| svc.instances.iter().any(|i| !i.key.ephemeral));
                if persistent {
                    return Err(has_instances(key));
                }
                self.drop_service(key);
                return Ok(());
            }
            PersistentOp::UpdateCluster { cluster, meta } => {
                let name = intern(&mut self.clusters, &cluster);
                let svc = service_entry(&mut self.services, &mut self.ids, &self.view.census, key);
                Arc::make_mut(&mut svc.meta).clusters.insert(name, meta);
                Self::touch(&mut self.revisions, &mut self.dirty, key, svc);
            }
        }
        if let Some(svc) = self.services.get_mut(key) {
            svc.durable = true;
        }
        Ok(())
    }

    /// Applies a service's recovered persistent state (startup, before the server is ready):
    /// settings, then clusters, then every instance, as the committed ops that made them would.
    pub fn restore(&mut self, key: &ServiceKey, r: Restore, now: u64) {
        let only_raft = !self.dirty.contains(key) || self.raft_only.contains_key(key);
        if let Some(settings) = r.settings {
            // Neither op can be refused.
            let _ = self.apply_committed(key, PersistentOp::CreateService { settings }, now);
        }
        for (cluster, meta) in r.clusters {
            let _ = self.apply_committed(key, PersistentOp::UpdateCluster { cluster, meta }, now);
        }
        let fresh = self
            .services
            .get(key)
            .is_none_or(|s| s.instances.is_empty());
        let (bulk, one_by_one): (Vec<_>, Vec<_>) = r
            .instances
            .iter()
            .partition(|s| fresh && !Instance::wants_snowflake_id(&s.metadata));
        // A service with nothing in it yet (the normal case at startup) is built in one go:
        // one roster sort instead of a lookup and insert per instance.
        let base = self.life.timing;
        let mut built = Vec::with_capacity(bulk.len());
        self.new_persistent.reserve(bulk.len());
        for spec in bulk {
            let inst = self.fresh_instance(spec, false, base, now);
            self.new_persistent
                .push_back((key.clone(), inst.key.clone()));
            built.push(inst);
        }
        let svc = service_entry(&mut self.services, &mut self.ids, &self.view.census, key);
        for inst in &built {
            if !svc.meta.clusters.contains_key(&inst.key.cluster) {
                Arc::make_mut(&mut svc.meta)
                    .clusters
                    .insert(inst.key.cluster.clone(), ClusterMeta::default());
            }
        }
        if !built.is_empty() {
            svc.instances = built.into_iter().collect();
        }
        Self::touch(&mut self.revisions, &mut self.dirty, key, svc);
        svc.durable = true;
        for spec in one_by_one {
            self.upsert(key, spec, now);
        }
        if only_raft {
            if let Some(svc) = self.services.get(key) {
                self.raft_only.insert(key.clone(), svc.revision);
            }
        }
    }

    /// A new instance from `spec` (of the given kind) with its own health, a new generation
    /// and `now` as its last beat: what a restore or a replica builds in bulk.
    pub(super) fn fresh_instance(
        &mut self,
        spec: &InstanceSpec,
        ephemeral: bool,
        base: Timing,
        now: u64,
    ) -> Arc<Instance> {
        let ik = self.instance_key(&spec.ip, spec.port, &spec.cluster, ephemeral);
        self.next_gen = self.next_gen.wrapping_add(1);
        let mut inst = Instance::build(spec, ik.cluster, ik.ip, None, spec.healthy, base);
        inst.gen = self.next_gen;
        inst.last_beat = AtomicU64::new(now);
        Arc::new(inst)
    }
}
