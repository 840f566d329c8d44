//! A shard's registry: the services it owns, their instances and leases.
//!
//! The owner shard is the only writer of a service. Every applied change bumps the service's
//! revision and marks it dirty; [`Registry::flush`] publishes dirty services to the shared
//! [`ReadView`] (an instance write to a published view that no reader holds updates it in
//! place at once; see [`Registry::apply`]). A service's instances are a [`Roster`], so
//! publishing shares it instead of copying it. Leases live in a [`Wheel`]: a beat only stamps the instance's `last_beat`, and
//! each instance is looked at when its next deadline comes due.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hashbrown::{HashMap, HashSet};

use crate::error::{ApiError, ApiResult};
use crate::naming::command::{Command, Patch, Reply, Restore, Target};
use crate::naming::instance::{Host, Instance, InstanceKey, InstanceSpec, Timing};
use crate::naming::op::PersistentOp;
use crate::naming::roster::Roster;
use crate::naming::service::ServiceSettings;
use crate::naming::service::{ClusterMeta, Metadata, ServiceKey, ServiceMeta};
use crate::naming::view::{ReadView, ServiceView};
use crate::naming::wheel::Wheel;

/// Beat answer code: OK.
pub const BEAT_OK: u32 = 10200;
/// Beat answer code: instance unknown, re-register.
pub const BEAT_NOT_FOUND: u32 = 20404;

/// What the prober should do about a tracked instance.
#[derive(Debug)]
pub enum ProbeTarget {
    /// Probe it now.
    Probe(crate::naming::probe::Probe),
    /// Not probe-able at the moment; look again later.
    Idle,
    /// Gone: stop tracking.
    Gone,
}

/// Lifecycle settings for ephemeral instances.
#[derive(Debug, Clone, Copy)]
pub struct Lifecycle {
    /// Default timings (5 s / 15 s / 30 s).
    pub timing: Timing,
    /// Remove instances after the delete timeout (Nacos `expireInstance`, default true).
    pub expire: bool,
    /// Delete a service once it has been empty this long (ms). 0 disables. Default 120 000.
    pub empty_service_ms: u64,
    /// Wheel slot width (ms). Default 250.
    pub slot_ms: u64,
    /// Most services over all namespaces and shards; creating more is a 503. Default 200 000.
    pub max_services: usize,
    /// Most services in one namespace; creating more is a 503. Default 200 000.
    pub max_services_per_namespace: usize,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            timing: Timing::default(),
            expire: true,
            empty_service_ms: 120_000,
            slot_ms: 250,
            max_services: 200_000,
            max_services_per_namespace: 200_000,
        }
    }
}

/// Counters a shard exports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Services owned.
    pub services: u64,
    /// Healthy instances owned.
    pub healthy: u64,
    /// Unhealthy instances owned.
    pub unhealthy: u64,
    /// Instances removed by lease expiry.
    pub expired: u64,
    /// Instances turned unhealthy by a missed beat.
    pub beat_timeouts: u64,
    /// Empty services removed.
    pub empty_services_removed: u64,
}

#[derive(Debug)]
struct ServiceState {
    /// This registry's short id for the service (what lease entries name).
    id: u32,
    meta: Arc<ServiceMeta>,
    instances: Roster,
    revision: u64,
    /// The revision the published view shows (0: not published yet).
    published: u64,
    /// Counts last reported into `Stats`.
    counted: (u64, u64),
    empty_since: Option<u64>,
    /// Created or changed through raft: never removed by the empty-service cleaner.
    durable: bool,
}

/// A wheel entry: 16 bytes plus the deadline, so a lease costs 24 bytes per instance.
#[derive(Debug)]
enum Lease {
    /// Check the lease of the instance with this key and generation (`inst.gen`).
    Instance { service: u32, inst: Arc<Instance> },
    /// Remove the service if it is still empty.
    EmptyService { service: u32 },
}

/// Short ids for the services a registry owns.
#[derive(Debug, Default)]
struct ServiceIds {
    keys: HashMap<u32, ServiceKey>,
    /// Next id to try. Ids are reused only after 2^32 service creations, and then only if free.
    next: u32,
}

impl ServiceIds {
    fn assign(&mut self, key: &ServiceKey) -> u32 {
        while self.keys.contains_key(&self.next) {
            self.next = self.next.wrapping_add(1);
        }
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        self.keys.insert(id, key.clone());
        id
    }
}

/// The services one shard owns.
pub struct Registry {
    life: Lifecycle,
    services: HashMap<ServiceKey, ServiceState>,
    ids: ServiceIds,
    wheel: Wheel<Lease>,
    view: Arc<ReadView>,
    clusters: HashMap<Arc<str>, ()>,
    /// Persistent instances added since the prober last asked, oldest first.
    new_persistent: std::collections::VecDeque<crate::naming::probe::ProbeId>,
    dirty: HashSet<ServiceKey>,
    deleted: Vec<ServiceKey>,
    next_gen: u32,
    revisions: u64,
    stats: Stats,
    due: Vec<Lease>,
    /// Services removed since the last [`Registry::compact`] that did work.
    removed_since_compact: usize,
    /// When the pending compaction runs (monotonic ms), once enough removals are counted.
    compact_at: Option<u64>,
}

/// [`Registry::compact`] runs once at least this many services were removed since it last did.
pub const COMPACT_AFTER_REMOVALS: usize = 4096;

impl Registry {
    /// An empty registry publishing into `view`, with its wheel starting at `now` (ms).
    pub fn new(life: Lifecycle, view: Arc<ReadView>, now: u64) -> Self {
        Registry {
            life,
            services: HashMap::new(),
            ids: ServiceIds::default(),
            wheel: Wheel::new(life.slot_ms, 512, now),
            view,
            clusters: HashMap::new(),
            new_persistent: std::collections::VecDeque::new(),
            dirty: HashSet::new(),
            deleted: Vec::new(),
            next_gen: 0,
            revisions: 0,
            stats: Stats::default(),
            due: Vec::new(),
            removed_since_compact: 0,
            compact_at: None,
        }
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

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

    /// Number of wheel entries (≈ live leases plus stale ones not yet visited).
    pub fn lease_count(&self) -> usize {
        self.wheel.len()
    }

    /// Applies one command at monotonic time `now` (ms). An error changes nothing.
    ///
    /// Changes become visible to readers at the next [`Registry::flush`], or at once for an
    /// instance write to a published service that no reader holds: then the published view is
    /// updated in place ([`ReadView::update_in_place`]): its roster handle is dropped, so the
    /// owner's roster changes its chunks in place instead of copying them, and is put back
    /// with the new revision. Otherwise (a reader holds the view, or the service is new) the
    /// change is copy-on-write and published by the next flush.
    pub fn apply(&mut self, key: &ServiceKey, cmd: Command, now: u64) -> ApiResult<Reply> {
        // Beats are left out: nearly all of them change nothing (they stamp `last_beat`), and
        // must not take the stripe lock; the rare one that changes health is copy-on-write.
        let instance_write = matches!(
            cmd,
            Command::Register(_)
                | Command::Update { .. }
                | Command::Deregister { .. }
                | Command::Patch(_)
                | Command::SetHealth { .. }
                | Command::BatchMetadata { .. }
        );
        if !instance_write || !self.services.contains_key(key) {
            return self.apply_now(key, cmd, now);
        }
        let view = self.view.clone();
        view.update_in_place(key.as_ref(), |published| {
            let Some(published) = published else {
                return self.apply_now(key, cmd, now);
            };
            drop(published.take_instances());
            // Whatever happens (even a panic, which the API layer turns into a 500), the view
            // gets the owner's roster back before the lock is released.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.apply_now(key, cmd, now)
            }));
            // Instance writes never remove the service, so its state is still here.
            if let Some(svc) = self.services.get_mut(key) {
                published.republish(svc.revision, &svc.meta, svc.instances.clone());
                svc.published = svc.revision;
            }
            r.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Whether `key` exists or one more service fits under the caps (else 503).
    pub fn room_for(&self, key: &ServiceKey) -> ApiResult<()> {
        if self.services.contains_key(key) {
            return Ok(());
        }
        self.view.census.room_for(
            &key.namespace,
            self.life.max_services,
            self.life.max_services_per_namespace,
        )
    }

    fn apply_now(&mut self, key: &ServiceKey, cmd: Command, now: u64) -> ApiResult<Reply> {
        match cmd {
            Command::Register(spec) => {
                self.room_for(key)?;
                self.upsert(key, &spec, now);
                Ok(Reply::Ok)
            }
            Command::Update { spec, strict } => {
                if strict {
                    let Some(svc) = self.services.get(key) else {
                        return Err(ApiError::server(format!(
                            "service not found, namespace: {}, service: {}",
                            key.namespace, key.grouped
                        )));
                    };
                    let exists = svc.instances.iter().any(|i| {
                        let k = &i.key;
                        *k.ip == *spec.ip && k.port == spec.port && k.ephemeral == spec.ephemeral
                    });
                    if !exists {
                        return Err(spec.not_exist());
                    }
                }
                self.room_for(key)?;
                self.upsert(key, &spec, now);
                Ok(Reply::Ok)
            }
            Command::Deregister {
                ip,
                port,
                cluster,
                ephemeral,
            } => {
                let ik = self.instance_key(&ip, port, &cluster, ephemeral);
                if let Some(svc) = self.services.get_mut(key) {
                    if svc.instances.remove(&ik).is_some() {
                        Self::touch(&mut self.revisions, &mut self.dirty, key, svc);
                    }
                }
                Ok(Reply::Ok)
            }
            Command::Patch(p) => self.patch(key, p, now),
            Command::Beat {
                ip,
                port,
                cluster,
                register,
            } => {
                if register.is_some() {
                    self.room_for(key)?;
                }
                Ok(self.beat(key, &ip, port, &cluster, register, now))
            }
            Command::SetHealth {
                ip,
                port,
                cluster,
                healthy,
            } => {
                let Some(svc) = self.services.get_mut(key) else {
                    return Err(ApiError::bad_request(format!(
                        "service not found: {}",
                        key.grouped
                    )));
                };
                let checker = svc
                    .meta
                    .clusters
                    .get(cluster.as_str())
                    .map(|c| c.checker_type().to_string())
                    .unwrap_or_else(|| "TCP".into());
                if checker != "NONE" {
                    return Err(ApiError::bad_request(format!(
                        "health check is still working, service: {}",
                        key.grouped
                    )));
                }
                let flipped: Vec<Arc<Instance>> = [false, true]
                    .into_iter()
                    .filter_map(|eph| svc.instances.find(&ip, port, &cluster, eph))
                    .filter(|i| i.healthy != healthy)
                    .map(|i| Arc::new(i.with_health(healthy)))
                    .collect();
                let changed = !flipped.is_empty();
                for inst in flipped {
                    svc.instances.insert(inst);
                }
                if changed {
                    Self::touch(&mut self.revisions, &mut self.dirty, key, svc);
                }
                Ok(Reply::Ok)
            }
            Command::BatchMetadata {
                targets,
                ephemeral,
                metadata,
                delete,
            } => Ok(self.batch_metadata(key, targets, ephemeral, metadata, delete)),
        }
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
    pub fn apply_committed(
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

    /// Removes a service with all its bookkeeping: its id, pending publication, its instances'
    /// share of the health counters, and its census entry. Returns whether it existed.
    fn drop_service(&mut self, key: &ServiceKey) -> bool {
        let Some(svc) = self.services.remove(key) else {
            return false;
        };
        self.ids.keys.remove(&svc.id);
        self.dirty.remove(key);
        self.deleted.push(key.clone());
        self.stats.healthy -= svc.counted.0;
        self.stats.unhealthy -= svc.counted.1;
        self.stats.services = self.services.len() as u64;
        self.view.census.remove(&key.namespace);
        self.removed_since_compact += 1;
        true
    }

    /// After many removals (at least [`COMPACT_AFTER_REMOVALS`] services since the last time
    /// it did work), gives back the spare capacity of maps that are at most a quarter full and
    /// returns true, so the caller can also hand freed heap pages back to the OS. Otherwise
    /// returns false at the cost of a comparison or two (it is called every tick).
    ///
    /// The work waits one beat timeout (plus a second) after the threshold is reached: a
    /// removed instance's lease holds it until its deadline, so freeing earlier would find
    /// much of the memory still in use.
    pub fn compact(&mut self, now: u64) -> bool {
        if self.removed_since_compact < COMPACT_AFTER_REMOVALS {
            return false;
        }
        let at = *self
            .compact_at
            .get_or_insert(now + self.life.timing.timeout_ms + 1000);
        if now < at {
            return false;
        }
        self.compact_at = None;
        self.removed_since_compact = 0;
        if self.services.len() * 4 <= self.services.capacity() {
            self.services.shrink_to_fit();
        }
        if self.ids.keys.len() * 4 <= self.ids.keys.capacity() {
            self.ids.keys.shrink_to_fit();
        }
        self.dirty.shrink_to_fit();
        self.deleted.shrink_to_fit();
        true
    }

    /// Applies a service's recovered persistent state (startup, before the server is ready):
    /// settings, then clusters, then every instance, as the committed ops that made them would.
    pub fn restore(&mut self, key: &ServiceKey, r: Restore, now: u64) {
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
            let ik = self.instance_key(&spec.ip, spec.port, &spec.cluster, false);
            self.next_gen = self.next_gen.wrapping_add(1);
            let mut inst = Instance::build(
                spec,
                ik.cluster.clone(),
                ik.ip.clone(),
                None,
                spec.healthy,
                base,
            );
            inst.gen = self.next_gen;
            inst.last_beat = AtomicU64::new(now);
            built.push(Arc::new(inst));
            self.new_persistent.push_back((key.clone(), ik));
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
    }

    /// Publishes every service changed since the last flush, at monotonic time `now` (ms), and
    /// starts the empty-service clock of services that became empty. Returns the services that
    /// were published or removed.
    pub fn flush(&mut self, now: u64) -> Vec<ServiceKey> {
        let mut changed = Vec::new();
        for key in self.deleted.drain(..) {
            if !self.services.contains_key(&key) {
                self.view.remove(&key);
                changed.push(key);
            }
        }
        for key in std::mem::take(&mut self.dirty) {
            let Some(svc) = self.services.get_mut(&key) else {
                continue;
            };
            let healthy = svc.instances.healthy() as u64;
            let unhealthy = svc.instances.len() as u64 - healthy;
            self.stats.healthy = self.stats.healthy + healthy - svc.counted.0;
            self.stats.unhealthy = self.stats.unhealthy + unhealthy - svc.counted.1;
            svc.counted = (healthy, unhealthy);
            if !svc.instances.is_empty() {
                svc.empty_since = None;
            } else if svc.empty_since.is_none() {
                svc.empty_since = Some(now);
                if self.life.empty_service_ms > 0 {
                    self.wheel.schedule(
                        now + self.life.empty_service_ms,
                        Lease::EmptyService { service: svc.id },
                    );
                }
            }
            // Unless an in-place update (see `apply`) already shows this revision. Publishing
            // shares the roster: no per-instance work.
            if svc.published != svc.revision {
                svc.published = svc.revision;
                self.view.publish(Arc::new(ServiceView::new(
                    key.clone(),
                    svc.revision,
                    svc.meta.clone(),
                    svc.instances.clone(),
                )));
            }
            changed.push(key);
        }
        self.stats.services = self.services.len() as u64;
        changed
    }

    /// Runs lease deadlines up to `now` (ms): instances without a beat for their timeout turn
    /// unhealthy, and after their delete timeout are removed; long-empty services are removed.
    pub fn tick(&mut self, now: u64) {
        let mut due = std::mem::take(&mut self.due);
        self.wheel.advance(now, &mut due);
        for lease in due.drain(..) {
            match lease {
                Lease::Instance { service, inst } => self.check_lease(service, inst, now),
                Lease::EmptyService { service } => self.check_empty(service, now),
            }
        }
        self.due = due;
    }

    fn check_lease(&mut self, sid: u32, lease: Arc<Instance>, now: u64) {
        let expire = self.life.expire;
        let Some(service) = self.ids.keys.get(&sid) else {
            return;
        };
        let Some(svc) = self.services.get_mut(service) else {
            return;
        };
        let Some(cur) = svc.instances.get(&lease.key) else {
            return;
        };
        if cur.gen != lease.gen {
            return;
        }
        let t = cur.timing();
        let last_beat = cur.last_beat();
        let idle = now.saturating_sub(last_beat);
        let next;
        let mut keep = cur.clone();
        if expire && idle > t.delete_ms {
            svc.instances.remove(&lease.key);
            self.stats.expired += 1;
            Self::touch(&mut self.revisions, &mut self.dirty, service, svc);
            return;
        } else if idle > t.timeout_ms && cur.healthy && !cur.marked {
            keep = Arc::new(cur.with_health(false));
            svc.instances.insert(keep.clone());
            self.stats.beat_timeouts += 1;
            next = last_beat + t.delete_ms + 1;
            Self::touch(&mut self.revisions, &mut self.dirty, service, svc);
        } else if cur.healthy || !expire {
            next = (last_beat + t.timeout_ms + 1)
                .max(now + t.timeout_ms.max(1) * u64::from(!cur.healthy));
        } else {
            next = last_beat + t.delete_ms + 1;
        }
        self.wheel.schedule(
            next,
            Lease::Instance {
                service: sid,
                inst: keep,
            },
        );
    }

    fn check_empty(&mut self, sid: u32, now: u64) {
        let limit = self.life.empty_service_ms;
        let Some(service) = self.ids.keys.get(&sid) else {
            return;
        };
        let Some(svc) = self.services.get(service) else {
            return;
        };
        match svc.empty_since {
            _ if svc.durable => {}
            Some(since) if svc.instances.is_empty() && now.saturating_sub(since) >= limit => {
                let service = service.clone();
                self.drop_service(&service);
                self.stats.empty_services_removed += 1;
            }
            Some(since) if svc.instances.is_empty() => {
                self.wheel
                    .schedule(since + limit, Lease::EmptyService { service: sid });
            }
            _ => {}
        }
    }

    fn upsert(&mut self, key: &ServiceKey, spec: &InstanceSpec, now: u64) {
        let ik = self.instance_key(&spec.ip, spec.port, &spec.cluster, spec.ephemeral);
        let base = self.life.timing;
        self.next_gen = self.next_gen.wrapping_add(1);
        let gen = self.next_gen;
        let cluster = ik.cluster.clone();
        let svc = service_entry(&mut self.services, &mut self.ids, &self.view.census, key);
        if !svc.meta.clusters.contains_key(&cluster) {
            Arc::make_mut(&mut svc.meta)
                .clusters
                .insert(cluster.clone(), ClusterMeta::default());
        }
        let spot = svc.instances.spot(&ik);
        let (id, healthy, marked, is_new) = match svc.instances.at(&spot) {
            Some(old) => (
                old.custom_id(),
                if old.marked {
                    spec.healthy
                } else {
                    old.healthy
                },
                old.marked,
                false,
            ),
            None => {
                let id = Instance::wants_snowflake_id(&spec.metadata).then(|| {
                    smallest_unused_id(svc.instances.iter().filter_map(|i| i.custom_id()))
                });
                (id, spec.healthy, false, true)
            }
        };
        let mut inst = Instance::build(spec, cluster, ik.ip.clone(), id, healthy, base);
        inst.marked = marked;
        if let Some(old) = svc.instances.at(&spot).filter(|old| old.same_as(&inst)) {
            // Re-registering an instance unchanged (clients do, periodically and after a
            // 20404) only renews its lease: no new revision, no push, no new lease entry.
            old.last_beat.store(now, Ordering::Relaxed);
            return;
        }
        inst.gen = gen;
        inst.last_beat = AtomicU64::new(now);
        let delete_deadline = now + inst.timing().timeout_ms + 1;
        let inst = Arc::new(inst);
        svc.instances.insert_at(spot, inst.clone());
        Self::touch(&mut self.revisions, &mut self.dirty, key, svc);
        if spec.ephemeral {
            self.wheel.schedule(
                delete_deadline,
                Lease::Instance {
                    service: svc.id,
                    inst,
                },
            );
        } else if is_new {
            self.new_persistent.push_back((key.clone(), ik));
        }
    }

    fn patch(&mut self, key: &ServiceKey, p: Patch, now: u64) -> ApiResult<Reply> {
        let svc = self.services.get(key);
        let found = svc.and_then(|svc| svc.instances.find_any(&p.ip, p.port, &p.cluster).cloned());
        let Some(old) = found else {
            return Err(ApiError::bad_request("instance not found"));
        };
        let spec = InstanceSpec {
            ip: p.ip,
            port: p.port,
            cluster: p.cluster,
            weight: p.weight.unwrap_or(old.weight),
            healthy: old.healthy,
            enabled: p.enabled.unwrap_or(old.enabled),
            ephemeral: old.key.ephemeral,
            metadata: p.metadata.unwrap_or_else(|| (*old.metadata).clone()),
            app: p.app.unwrap_or_else(|| old.app.to_string()),
        };
        spec.validate()?;
        self.upsert(key, &spec, now);
        Ok(Reply::Ok)
    }

    fn beat(
        &mut self,
        key: &ServiceKey,
        ip: &str,
        port: u16,
        cluster: &str,
        register: Option<InstanceSpec>,
        now: u64,
    ) -> Reply {
        let default_interval = self.life.timing.interval_ms;
        let found = self
            .services
            .get_mut(key)
            .and_then(|svc| Some((svc.instances.find_any(ip, port, cluster)?.clone(), svc)));
        let interval = match found {
            Some((inst, svc)) => {
                let interval = interval_of(&inst, default_interval);
                if inst.key.ephemeral {
                    inst.last_beat.store(now, Ordering::Relaxed);
                    if !inst.healthy && !inst.marked {
                        svc.instances.insert(Arc::new(inst.with_health(true)));
                        Self::touch(&mut self.revisions, &mut self.dirty, key, svc);
                    }
                }
                interval
            }
            None => match register {
                None => {
                    return Reply::Beat {
                        code: BEAT_NOT_FOUND,
                        interval_ms: default_interval,
                    }
                }
                Some(spec) => {
                    let interval = self.life.timing.with_overrides(&spec.metadata).interval_ms;
                    let explicit = spec
                        .metadata
                        .contains_key(crate::naming::instance::HEART_BEAT_INTERVAL);
                    self.upsert(key, &spec, now);
                    if explicit {
                        interval
                    } else {
                        default_interval
                    }
                }
            },
        };
        Reply::Beat {
            code: BEAT_OK,
            interval_ms: interval,
        }
    }

    fn batch_metadata(
        &mut self,
        key: &ServiceKey,
        targets: Option<Vec<Target>>,
        ephemeral: bool,
        metadata: Metadata,
        delete: bool,
    ) -> Reply {
        let Some(svc) = self.services.get_mut(key) else {
            return Reply::Updated(Vec::new());
        };
        let mut updated = Vec::new();
        let mut changed = Vec::new();
        for old in svc.instances.iter() {
            let k = &old.key;
            let hit = match &targets {
                None => k.ephemeral == ephemeral,
                Some(ts) => ts.iter().any(|t| {
                    *t.ip == *k.ip
                        && t.port == k.port
                        && t.ephemeral == k.ephemeral
                        && t.cluster.as_deref().is_none_or(|c| *c == *k.cluster)
                }),
            };
            if !hit {
                continue;
            }
            let mut md = (*old.metadata).clone();
            for (mk, mv) in &metadata {
                if delete {
                    md.remove(mk);
                } else {
                    md.insert(mk.clone(), mv.clone());
                }
            }
            let spec = InstanceSpec {
                ip: old.key.ip.to_string(),
                port: old.key.port,
                cluster: old.key.cluster.to_string(),
                weight: old.weight,
                healthy: old.healthy,
                enabled: old.enabled,
                ephemeral: old.key.ephemeral,
                metadata: md,
                app: old.app.to_string(),
            };
            let mut inst = Instance::build(
                &spec,
                old.key.cluster.clone(),
                old.key.ip.clone(),
                old.custom_id(),
                old.healthy,
                self.life.timing,
            );
            inst.marked = old.marked;
            // Same lease: the generation and last beat carry over.
            inst.gen = old.gen;
            inst.last_beat = AtomicU64::new(old.last_beat());
            updated.push(format!(
                "{}:{}:unknown:{}:{}",
                k.ip,
                k.port,
                k.cluster,
                if k.ephemeral { "ephemeral" } else { "persist" }
            ));
            changed.push(Arc::new(inst));
        }
        for inst in changed {
            svc.instances.insert(inst);
        }
        if !updated.is_empty() {
            Self::touch(&mut self.revisions, &mut self.dirty, key, svc);
        }
        Reply::Updated(updated)
    }

    fn instance_key(&mut self, ip: &str, port: u16, cluster: &str, ephemeral: bool) -> InstanceKey {
        InstanceKey {
            ip: Host::from(ip),
            port,
            cluster: intern(&mut self.clusters, cluster),
            ephemeral,
        }
    }

    /// Records a change: next revision, dirty for the next flush; tracks emptiness.
    fn touch(
        revisions: &mut u64,
        dirty: &mut HashSet<ServiceKey>,
        key: &ServiceKey,
        svc: &mut ServiceState,
    ) {
        *revisions += 1;
        svc.revision = *revisions;
        if !dirty.contains(key) {
            dirty.insert(key.clone());
        }
    }
}

/// The state of `key`, created empty (with a new id) if absent.
/// The state of `key`, created (and counted in `census`) if absent.
fn service_entry<'a>(
    services: &'a mut HashMap<ServiceKey, ServiceState>,
    ids: &mut ServiceIds,
    census: &crate::naming::view::Census,
    key: &ServiceKey,
) -> &'a mut ServiceState {
    services.entry_ref(key).or_insert_with(|| {
        census.add(&key.namespace);
        ServiceState {
            id: ids.assign(key),
            meta: Arc::new(ServiceMeta::default()),
            instances: Roster::new(),
            revision: 0,
            published: 0,
            counted: (0, 0),
            empty_since: None,
            durable: false,
        }
    })
}

/// Nacos 1.0–1.1's `easyRemoveService` refusal (400), kept for a service with instances.
pub fn has_instances(key: &ServiceKey) -> ApiError {
    ApiError::bad_request(format!(
        "specified service has instances, serviceName : {}",
        key.grouped
    ))
}

fn apply_settings(meta: &mut ServiceMeta, s: ServiceSettings) {
    meta.protect_threshold = s.protect_threshold;
    meta.metadata = s.metadata;
    meta.selector = s.selector;
}

fn intern(pool: &mut HashMap<Arc<str>, ()>, s: &str) -> Arc<str> {
    if let Some((k, _)) = pool.get_key_value(s) {
        return k.clone();
    }
    let a: Arc<str> = Arc::from(s);
    pool.insert(a.clone(), ());
    a
}

fn interval_of(inst: &Instance, default: u64) -> u64 {
    if inst
        .metadata
        .contains_key(crate::naming::instance::HEART_BEAT_INTERVAL)
    {
        inst.timing().interval_ms
    } else {
        default
    }
}

/// The smallest non-negative integer not used as an instance id (snowflake generator).
fn smallest_unused_id(ids: impl Iterator<Item = u32>) -> u32 {
    let used: std::collections::HashSet<u32> = ids.collect();
    (0..).find(|n| !used.contains(n)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::naming::view::ListQuery;

    fn spec(ip: &str, port: u16) -> InstanceSpec {
        InstanceSpec::new(ip, port)
    }

    struct Fixture {
        clock: ManualClock,
        view: Arc<ReadView>,
        reg: Registry,
        key: ServiceKey,
    }

    impl Fixture {
        fn new(life: Lifecycle) -> Self {
            let clock = ManualClock::new(1_000);
            let view = Arc::new(ReadView::default());
            let reg = Registry::new(life, view.clone(), clock.now_ms());
            Fixture {
                clock,
                view,
                reg,
                key: ServiceKey::new("public", "DEFAULT_GROUP@@orders"),
            }
        }

        fn apply(&mut self, cmd: Command) -> ApiResult<Reply> {
            let now = self.clock.now_ms();
            let r = self.reg.apply(&self.key, cmd, now);
            self.reg.flush(now);
            r
        }

        /// Moves time forward in 100 ms steps, ticking like a shard does.
        fn run_for(&mut self, ms: u64) {
            for _ in 0..ms / 100 {
                self.clock.advance(100);
                let now = self.clock.now_ms();
                self.reg.tick(now);
                self.reg.flush(now);
            }
        }

        /// Deregisters the ephemeral `ip:80` in DEFAULT.
        fn deregister(&mut self, ip: &str) {
            self.apply(Command::Deregister {
                ip: ip.into(),
                port: 80,
                cluster: "DEFAULT".into(),
                ephemeral: true,
            })
            .unwrap();
        }

        /// A light beat for `ip:80` in DEFAULT.
        fn beat(&mut self, ip: &str) -> Reply {
            self.apply(Command::Beat {
                ip: ip.into(),
                port: 80,
                cluster: "DEFAULT".into(),
                register: None,
            })
            .unwrap()
        }

        fn health(&self) -> Option<bool> {
            let v = self.view.get(self.key.as_ref())?;
            v.instances.first().map(|i| i.healthy)
        }
    }

    #[test]
    fn removing_a_service_takes_its_instances_out_of_every_counter() {
        let life = Lifecycle {
            empty_service_ms: 1_000,
            ..Lifecycle::default()
        };
        let mut f = Fixture::new(life);
        let now = f.clock.now_ms();
        let mut db = spec("10.0.0.9", 3306);
        db.ephemeral = false;
        f.reg
            .apply_committed(&f.key, PersistentOp::Register { instance: db }, now)
            .unwrap();
        f.apply(Command::Register(spec("10.0.0.1", 80))).unwrap();
        let mut sick = spec("10.0.0.2", 80);
        sick.healthy = false;
        f.apply(Command::Register(sick)).unwrap();
        assert_eq!((f.reg.stats().healthy, f.reg.stats().unhealthy), (2, 1));
        assert_eq!(f.view.census.total(), 1);
        // With a persistent instance the delete is refused and changes nothing.
        let e = f
            .reg
            .apply_committed(&f.key, PersistentOp::DeleteService, now)
            .unwrap_err();
        assert_eq!(
            (e.status, e.msg.as_str()),
            (
                400,
                "specified service has instances, serviceName : DEFAULT_GROUP@@orders"
            )
        );
        f.reg.flush(now);
        assert_eq!((f.reg.stats().healthy, f.reg.stats().unhealthy), (2, 1));
        // With only ephemeral ones (a register that raced the API's check) it follows the log.
        f.reg
            .apply_committed(
                &f.key,
                PersistentOp::Deregister {
                    ip: "10.0.0.9".into(),
                    port: 3306,
                    cluster: "DEFAULT".into(),
                },
                now,
            )
            .unwrap();
        f.reg
            .apply_committed(&f.key, PersistentOp::DeleteService, now)
            .unwrap();
        f.reg.flush(now);
        let s = f.reg.stats();
        assert_eq!((s.services, s.healthy, s.unhealthy), (0, 0, 0));
        assert_eq!(f.view.census.total(), 0);
        // The empty-service cleaner keeps the counters too.
        f.apply(Command::Register(spec("10.0.0.1", 80))).unwrap();
        f.deregister("10.0.0.1");
        f.run_for(2_000);
        assert!(f.view.get(f.key.as_ref()).is_none());
        let s = f.reg.stats();
        assert_eq!((s.services, s.healthy, s.unhealthy), (0, 0, 0));
        assert_eq!(f.view.census.total(), 0);
    }

    #[test]
    fn compaction_waits_for_leases_after_many_removals() {
        let mut f = Fixture::new(Lifecycle::default());
        let now = f.clock.now_ms();
        let n = COMPACT_AFTER_REMOVALS as u32;
        for i in 0..n {
            let k = ServiceKey::new("public", &format!("DEFAULT_GROUP@@c{i}"));
            f.reg
                .apply_committed(
                    &k,
                    PersistentOp::CreateService {
                        settings: ServiceSettings {
                            protect_threshold: 0.0,
                            metadata: Metadata::new(),
                            selector: serde_json::json!({"type": "none"}),
                        },
                    },
                    now,
                )
                .unwrap();
        }
        f.reg.flush(now);
        assert!(!f.reg.compact(now), "nothing removed yet");
        for i in 0..n {
            let k = ServiceKey::new("public", &format!("DEFAULT_GROUP@@c{i}"));
            f.reg
                .apply_committed(&k, PersistentOp::DeleteService, now)
                .unwrap();
        }
        f.reg.flush(now);
        let wait = Lifecycle::default().timing.timeout_ms + 1000;
        assert!(
            !f.reg.compact(now),
            "leases of removed instances may still hold memory"
        );
        assert!(!f.reg.compact(now + wait - 1));
        assert!(f.reg.compact(now + wait));
        assert!(!f.reg.compact(now + wait + 1), "once per batch of removals");
        assert!(f.reg.services.capacity() < n as usize);
        assert_eq!(f.view.census.total(), 0);
    }

    #[test]
    fn new_services_over_the_caps_are_refused_with_503() {
        let life = Lifecycle {
            max_services: 3,
            max_services_per_namespace: 2,
            ..Lifecycle::default()
        };
        let mut f = Fixture::new(life);
        let now = f.clock.now_ms();
        let key = |ns: &str, n: u32| ServiceKey::new(ns, &format!("DEFAULT_GROUP@@s{n}"));
        let reg = |f: &mut Fixture, k: &ServiceKey| {
            f.reg
                .apply(k, Command::Register(spec("10.0.0.1", 80)), now)
                .map(|_| ())
        };
        reg(&mut f, &key("a", 1)).unwrap();
        reg(&mut f, &key("a", 2)).unwrap();
        let e = reg(&mut f, &key("a", 3)).unwrap_err();
        assert_eq!(e.status, 503);
        assert!(e.msg.contains("max_services_per_namespace"), "{}", e.msg);
        // Existing services still take writes.
        reg(&mut f, &key("a", 2)).unwrap();
        reg(&mut f, &key("b", 1)).unwrap();
        let e = reg(&mut f, &key("c", 1)).unwrap_err();
        assert_eq!(e.status, 503);
        assert!(e.msg.contains("(max_services)"), "{}", e.msg);
    }

    #[test]
    fn register_publishes_with_increasing_revisions() {
        let mut f = Fixture::new(Lifecycle::default());
        f.apply(Command::Register(spec("10.0.0.1", 80))).unwrap();
        let r1 = f.view.get(f.key.as_ref()).unwrap().revision;
        f.apply(Command::Register(spec("10.0.0.2", 80))).unwrap();
        let v = f.view.get(f.key.as_ref()).unwrap();
        assert!(v.revision > r1);
        assert_eq!(v.instances.len(), 2);
        assert_eq!(f.reg.stats().healthy, 2);
        assert_eq!(f.reg.stats().services, 1);
    }

    #[test]
    fn missed_beats_turn_unhealthy_at_15s_and_remove_at_30s() {
        let mut f = Fixture::new(Lifecycle::default());
        f.apply(Command::Register(spec("10.0.0.1", 80))).unwrap();
        f.run_for(14_900);
        assert_eq!(f.health(), Some(true));
        f.run_for(400);
        assert_eq!(f.health(), Some(false), "unhealthy just after 15 s");
        assert_eq!(f.reg.stats().beat_timeouts, 1);
        // A beat brings it back and restarts the lease.
        let r = f.beat("10.0.0.1");
        assert_eq!(
            r,
            Reply::Beat {
                code: BEAT_OK,
                interval_ms: 5000
            }
        );
        assert_eq!(f.health(), Some(true));
        f.run_for(29_800);
        assert_eq!(f.health(), Some(false));
        f.run_for(500);
        assert_eq!(f.health(), None, "removed just after 30 s");
        assert_eq!(f.reg.stats().expired, 1);
        assert_eq!(f.reg.stats().healthy + f.reg.stats().unhealthy, 0);
    }

    #[test]
    fn preserved_metadata_overrides_timeouts_and_interval() {
        let mut f = Fixture::new(Lifecycle::default());
        let mut s = spec("10.0.0.1", 80);
        s.metadata.insert(
            crate::naming::instance::HEART_BEAT_TIMEOUT.into(),
            "1000".into(),
        );
        s.metadata.insert(
            crate::naming::instance::IP_DELETE_TIMEOUT.into(),
            "2000".into(),
        );
        s.metadata.insert(
            crate::naming::instance::HEART_BEAT_INTERVAL.into(),
            "500".into(),
        );
        f.apply(Command::Register(s)).unwrap();
        let r = f.beat("10.0.0.1");
        assert_eq!(
            r,
            Reply::Beat {
                code: BEAT_OK,
                interval_ms: 500
            }
        );
        f.run_for(1_300);
        assert_eq!(f.health(), Some(false));
        f.run_for(1_000);
        assert_eq!(f.health(), None);
    }

    #[test]
    fn expire_off_keeps_unhealthy_instances() {
        let life = Lifecycle {
            expire: false,
            ..Lifecycle::default()
        };
        let mut f = Fixture::new(life);
        f.apply(Command::Register(spec("10.0.0.1", 80))).unwrap();
        f.run_for(60_000);
        assert_eq!(f.health(), Some(false));
    }

    #[test]
    fn beats_for_unknown_instances() {
        let mut f = Fixture::new(Lifecycle::default());
        let unknown = Command::Beat {
            ip: "10.0.0.9".into(),
            port: 80,
            cluster: "DEFAULT".into(),
            register: None,
        };
        assert_eq!(
            f.apply(unknown).unwrap(),
            Reply::Beat {
                code: BEAT_NOT_FOUND,
                interval_ms: 5000
            }
        );
        assert!(
            f.view.get(f.key.as_ref()).is_none(),
            "a 20404 beat changes nothing"
        );
        let with_json = Command::Beat {
            ip: "10.0.0.9".into(),
            port: 80,
            cluster: "DEFAULT".into(),
            register: Some(spec("10.0.0.9", 80)),
        };
        assert_eq!(
            f.apply(with_json).unwrap(),
            Reply::Beat {
                code: BEAT_OK,
                interval_ms: 5000
            }
        );
        assert_eq!(f.view.get(f.key.as_ref()).unwrap().instances.len(), 1);
    }

    #[test]
    fn strict_update_and_patch_errors_change_nothing() {
        let mut f = Fixture::new(Lifecycle::default());
        let e = f
            .apply(Command::Update {
                spec: spec("10.0.0.1", 80),
                strict: true,
            })
            .unwrap_err();
        assert_eq!(
            e.msg,
            "service not found, namespace: public, service: DEFAULT_GROUP@@orders"
        );
        f.apply(Command::Register(spec("10.0.0.1", 80))).unwrap();
        let rev = f.view.get(f.key.as_ref()).unwrap().revision;
        let e = f
            .apply(Command::Update {
                spec: spec("10.0.0.2", 80),
                strict: true,
            })
            .unwrap_err();
        assert_eq!(
            e.msg,
            "instance not exist: 10.0.0.2:80:unknown:DEFAULT_1.0_true_false_DEFAULT"
        );
        let e = f
            .apply(Command::Patch(Patch {
                ip: "10.0.0.3".into(),
                port: 80,
                cluster: "DEFAULT".into(),
                ..Patch::default()
            }))
            .unwrap_err();
        assert_eq!((e.status, e.msg.as_str()), (400, "instance not found"));
        assert_eq!(f.view.get(f.key.as_ref()).unwrap().revision, rev);
        // A strict update of an existing instance keeps its health and id, changes weight.
        let mut s = spec("10.0.0.1", 80);
        s.weight = 3.0;
        s.healthy = false;
        f.apply(Command::Update {
            spec: s,
            strict: true,
        })
        .unwrap();
        let v = f.view.get(f.key.as_ref()).unwrap();
        assert_eq!(v.instances.first().unwrap().weight, 3.0);
        assert!(v.instances.first().unwrap().healthy);
    }

    #[test]
    fn committed_ops_upsert_and_mark_services_durable() {
        let life = Lifecycle {
            empty_service_ms: 1_000,
            ..Lifecycle::default()
        };
        let mut f = Fixture::new(life);
        let settings = ServiceSettings {
            protect_threshold: 0.5,
            metadata: Metadata::new(),
            selector: serde_json::json!({"type": "none"}),
        };
        let now = f.clock.now_ms();
        f.reg
            .apply_committed(
                &f.key,
                PersistentOp::CreateService {
                    settings: settings.clone(),
                },
                now,
            )
            .unwrap();
        // Replays are idempotent.
        f.reg
            .apply_committed(&f.key, PersistentOp::CreateService { settings }, now)
            .unwrap();
        let mut db = spec("10.0.0.9", 3306);
        db.ephemeral = false;
        f.reg
            .apply_committed(&f.key, PersistentOp::Register { instance: db }, now)
            .unwrap();
        f.reg.flush(now);
        let v = f.view.get(f.key.as_ref()).unwrap();
        assert_eq!(v.meta.protect_threshold, 0.5);
        assert!(!v.instances.first().unwrap().key.ephemeral);
        // Persistent instances never expire; durable services are never auto-cleaned.
        f.run_for(40_000);
        assert_eq!(f.health(), Some(true));
        f.reg
            .apply_committed(
                &f.key,
                PersistentOp::Deregister {
                    ip: "10.0.0.9".into(),
                    port: 3306,
                    cluster: "DEFAULT".into(),
                },
                f.clock.now_ms(),
            )
            .unwrap();
        f.run_for(5_000);
        assert!(
            f.view.get(f.key.as_ref()).is_some(),
            "a durable empty service stays"
        );
        f.reg
            .apply_committed(&f.key, PersistentOp::DeleteService, f.clock.now_ms())
            .unwrap();
        f.reg.flush(f.clock.now_ms());
        assert!(f.view.get(f.key.as_ref()).is_none());
    }

    #[test]
    fn empty_services_are_removed_after_their_ttl() {
        let life = Lifecycle {
            empty_service_ms: 5_000,
            ..Lifecycle::default()
        };
        let mut f = Fixture::new(life);
        f.apply(Command::Register(spec("10.0.0.1", 80))).unwrap();
        f.deregister("10.0.0.1");
        f.run_for(4_800);
        assert!(f.view.get(f.key.as_ref()).is_some());
        f.run_for(400);
        assert!(f.view.get(f.key.as_ref()).is_none());
        assert_eq!(f.reg.stats().empty_services_removed, 1);
    }

    #[test]
    fn protect_threshold_serves_everyone_as_healthy() {
        let mut f = Fixture::new(Lifecycle::default());
        f.apply(Command::Register(spec("10.0.0.1", 80))).unwrap();
        f.run_for(15_500);
        let v = f.view.get(f.key.as_ref()).unwrap();
        let q = ListQuery {
            clusters_raw: "",
            clusters: vec![],
            healthy_only: true,
            grouped: false,
            cache_millis: 3000,
            env: "",
            is_check: false,
            now_wall_ms: 1,
        };
        let body: Vec<u8> = v.render_list(&q).unwrap().concat();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json["hosts"][0]["healthy"], true,
            "0/1 healthy <= 0.0 threshold"
        );
    }

    #[test]
    fn writes_update_an_unheld_view_in_place_and_leave_a_held_one_alone() {
        let mut f = Fixture::new(Lifecycle::default());
        let q = ListQuery {
            clusters_raw: "",
            clusters: vec![],
            healthy_only: false,
            grouped: false,
            cache_millis: 3000,
            env: "",
            is_check: false,
            now_wall_ms: 1,
        };
        let ips = |v: &ServiceView| -> Vec<String> {
            let body: Vec<u8> = v.render_list(&q).unwrap().concat();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            json["hosts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["ip"].as_str().unwrap().to_string())
                .collect()
        };
        f.apply(Command::Register(spec("10.0.0.1", 80))).unwrap();
        // A reader holds the view (and has rendered it): the next write may not touch it.
        let held = f.view.get(f.key.as_ref()).unwrap();
        assert_eq!(ips(&held), ["10.0.0.1"]);
        f.apply(Command::Register(spec("10.0.0.2", 80))).unwrap();
        let next = f.view.get(f.key.as_ref()).unwrap();
        assert!(!Arc::ptr_eq(&held, &next), "copy-on-write while held");
        assert_eq!(ips(&held), ["10.0.0.1"], "a held view never changes");
        assert_eq!(held.instances.len(), 1);
        assert_eq!(next.instances.len(), 2);
        assert!(next.revision > held.revision);
        let (r2, ptr) = (next.revision, Arc::as_ptr(&next));
        drop((held, next));
        // Nobody holds it now: the write lands in the published view itself, visible before
        // any flush, with a new revision and no stale rendering.
        let now = f.clock.now_ms();
        f.reg
            .apply(&f.key, Command::Register(spec("10.0.0.3", 80)), now)
            .unwrap();
        let v = f.view.get(f.key.as_ref()).unwrap();
        assert_eq!(Arc::as_ptr(&v), ptr, "updated in place");
        assert!(v.revision > r2);
        assert_eq!(v.instances.len(), 3);
        let rendered = ips(&v);
        assert_eq!(rendered.len(), 3, "{rendered:?}");
        drop(v);
        // The flush after it publishes nothing new, and says the service changed (for push).
        let changed = f.reg.flush(now);
        assert_eq!(changed, vec![f.key.clone()]);
        let v = f.view.get(f.key.as_ref()).unwrap();
        assert_eq!(Arc::as_ptr(&v), ptr);
        assert_eq!(f.reg.stats().healthy, 3);
        // A write that changes nothing (an identical re-register) keeps the revision and the
        // cached rendering.
        let rev = v.revision;
        drop(v);
        f.apply(Command::Register(spec("10.0.0.3", 80))).unwrap();
        let v = f.view.get(f.key.as_ref()).unwrap();
        assert_eq!(v.revision, rev);
        assert_eq!(ips(&v).len(), 3);
        // Deregistering in place drops the instance from the view at once.
        drop(v);
        f.deregister("10.0.0.1");
        let v = f.view.get(f.key.as_ref()).unwrap();
        assert_eq!(Arc::as_ptr(&v), ptr);
        let mut left = ips(&v);
        left.sort();
        assert_eq!(left, ["10.0.0.2", "10.0.0.3"]);
    }

    #[test]
    fn readers_on_other_threads_see_whole_revisions_while_writes_land_in_place() {
        let mut f = Fixture::new(Lifecycle::default());
        f.apply(Command::Register(spec("10.1.0.0", 80))).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (view, key) = (f.view.clone(), f.key.clone());
                let (stop, started) = (stop.clone(), started.clone());
                std::thread::spawn(move || {
                    let mut last = (0, 0);
                    let mut seen = 0u64;
                    // Bounded: at most 2 M looks; stops once the writer is done.
                    for _ in 0..2_000_000 {
                        let v = view.get(key.as_ref()).expect("published");
                        // Each write adds one instance: a revision shows all of them, whole.
                        let n = v.instances.len();
                        assert_eq!(v.instances.iter().count(), n);
                        assert!(
                            (v.revision, n) >= last,
                            "went back: {last:?} -> {:?}",
                            (v.revision, n)
                        );
                        last = (v.revision, n);
                        seen += 1;
                        if seen == 1 {
                            started.fetch_add(1, Ordering::SeqCst);
                        }
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    seen
                })
            })
            .collect();
        // Write only once both readers are looking (bounded wait: 10 s).
        let t0 = std::time::Instant::now();
        while started.load(Ordering::SeqCst) < 2
            && t0.elapsed() < std::time::Duration::from_secs(10)
        {
            std::thread::yield_now();
        }
        for i in 1..3000u32 {
            let ip = format!("10.1.{}.{}", i / 256, i % 256);
            f.apply(Command::Register(spec(&ip, 80))).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().expect("reader panicked") > 0);
        }
        let v = f.view.get(f.key.as_ref()).unwrap();
        assert_eq!(v.instances.len(), 3000);
        assert_eq!(v.instances.iter().count(), 3000);
    }

    #[test]
    fn a_restore_equals_the_committed_ops_it_stands_for() {
        let settings = ServiceSettings {
            protect_threshold: 0.25,
            metadata: Metadata::new(),
            selector: serde_json::json!({"type": "none"}),
        };
        let meta = ClusterMeta {
            check_port: 9,
            ..ClusterMeta::default()
        };
        let specs: Vec<Arc<InstanceSpec>> = (0..40)
            .map(|i| {
                let mut s = spec(&format!("10.0.1.{i}"), 3306);
                s.ephemeral = false;
                s.weight = f64::from(i % 5 + 1);
                s.healthy = i % 7 != 0;
                if i % 3 == 0 {
                    s.cluster = "c1".into();
                }
                if i % 4 == 0 {
                    s.metadata.insert("zone".into(), format!("z{i}"));
                }
                if i == 5 {
                    s.metadata.insert(
                        crate::naming::instance::INSTANCE_ID_GENERATOR.into(),
                        "snowflake".into(),
                    );
                }
                Arc::new(s)
            })
            .collect();
        let mut restored = Fixture::new(Lifecycle::default());
        let now = restored.clock.now_ms();
        let r = Restore {
            settings: Some(settings.clone()),
            clusters: vec![("c1".into(), meta.clone())],
            instances: specs.clone(),
        };
        restored.reg.restore(&restored.key, r, now);
        restored.reg.flush(now);
        let mut replayed = Fixture::new(Lifecycle::default());
        let key = replayed.key.clone();
        replayed
            .reg
            .apply_committed(&key, PersistentOp::CreateService { settings }, now)
            .unwrap();
        replayed
            .reg
            .apply_committed(
                &key,
                PersistentOp::UpdateCluster {
                    cluster: "c1".into(),
                    meta,
                },
                now,
            )
            .unwrap();
        for s in &specs {
            let op = PersistentOp::Register {
                instance: (**s).clone(),
            };
            replayed.reg.apply_committed(&key, op, now).unwrap();
        }
        replayed.reg.flush(now);
        let seen = |f: &Fixture| {
            let v = f.view.get(f.key.as_ref()).unwrap();
            let mut clusters: Vec<_> = v
                .meta
                .clusters
                .iter()
                .map(|(n, m)| (n.to_string(), m.check_port))
                .collect();
            clusters.sort();
            let mut insts: Vec<_> = v
                .instances
                .iter()
                .map(|i| {
                    (
                        i.key.ip.to_string(),
                        i.key.cluster.to_string(),
                        i.weight,
                        i.healthy,
                        i.key.ephemeral,
                        i.metadata
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>(),
                        i.instance_id(&f.key.grouped).to_string(),
                    )
                })
                .collect();
            insts.sort_by(|a, b| a.0.cmp(&b.0));
            (
                v.meta.protect_threshold,
                clusters,
                insts,
                v.instances.healthy(),
            )
        };
        assert_eq!(seen(&restored), seen(&replayed));
        assert_eq!(seen(&restored).2.len(), 40);
        assert_eq!(restored.reg.take_new_persistent(100).len(), 40);
        assert_eq!(replayed.reg.take_new_persistent(100).len(), 40);
        // Restored services are durable: empty, they are never cleaned away.
        assert!(restored.reg.services.get(&restored.key).unwrap().durable);
    }

    #[test]
    fn snowflake_ids_fill_the_smallest_gap() {
        let mut f = Fixture::new(Lifecycle::default());
        for i in 1..=3 {
            let mut s = spec(&format!("10.0.0.{i}"), 80);
            s.metadata.insert(
                crate::naming::instance::INSTANCE_ID_GENERATOR.into(),
                "snowflake".into(),
            );
            f.apply(Command::Register(s)).unwrap();
        }
        let mut ids: Vec<(String, String)> = f
            .view
            .get(f.key.as_ref())
            .unwrap()
            .instances
            .iter()
            .map(|i| {
                (
                    i.key.ip.to_string(),
                    i.instance_id(&f.key.grouped).to_string(),
                )
            })
            .collect();
        ids.sort();
        let want = [("10.0.0.1", "0"), ("10.0.0.2", "1"), ("10.0.0.3", "2")];
        assert_eq!(ids, want.map(|(a, b)| (a.to_string(), b.to_string())));
    }

    #[test]
    fn batch_metadata_reports_datum_keys() {
        let mut f = Fixture::new(Lifecycle::default());
        f.apply(Command::Register(spec("10.0.0.1", 80))).unwrap();
        let mut md = Metadata::new();
        md.insert("zone".into(), "a".into());
        let r = f
            .apply(Command::BatchMetadata {
                targets: None,
                ephemeral: true,
                metadata: md,
                delete: false,
            })
            .unwrap();
        assert_eq!(
            r,
            Reply::Updated(vec!["10.0.0.1:80:unknown:DEFAULT:ephemeral".into()])
        );
        let v = f.view.get(f.key.as_ref()).unwrap();
        assert_eq!(v.instances.first().unwrap().metadata["zone"], "a");
        // The copy keeps the lease: beats keep it, and without beats it still expires.
        f.run_for(10_000);
        f.beat("10.0.0.1");
        f.run_for(10_000);
        assert_eq!(f.health(), Some(true));
        f.run_for(31_000);
        assert_eq!(f.health(), None);
        assert_eq!(f.reg.stats().expired, 1);
    }

    #[test]
    fn an_unchanged_re_register_only_renews_the_lease() {
        let mut f = Fixture::new(Lifecycle::default());
        f.apply(Command::Register(spec("10.0.0.1", 80))).unwrap();
        let r1 = f.view.get(f.key.as_ref()).unwrap().revision;
        let leases = f.reg.lease_count();
        f.run_for(10_000);
        f.apply(Command::Register(spec("10.0.0.1", 80))).unwrap();
        assert_eq!(f.view.get(f.key.as_ref()).unwrap().revision, r1);
        assert_eq!(f.reg.lease_count(), leases);
        // The lease was renewed: 10 s + 10 s is past the 15 s timeout of the first registration.
        f.run_for(10_000);
        assert_eq!(f.health(), Some(true));
        // A changed weight is a change.
        let mut heavier = spec("10.0.0.1", 80);
        heavier.weight = 2.0;
        f.apply(Command::Register(heavier)).unwrap();
        assert!(f.view.get(f.key.as_ref()).unwrap().revision > r1);
    }

    #[test]
    fn beats_do_not_publish_but_health_flips_do() {
        let mut f = Fixture::new(Lifecycle::default());
        f.apply(Command::Register(spec("10.0.0.1", 80))).unwrap();
        let r1 = f.view.get(f.key.as_ref()).unwrap().revision;
        f.beat("10.0.0.1");
        assert_eq!(f.view.get(f.key.as_ref()).unwrap().revision, r1);
        f.run_for(16_000);
        assert_eq!(f.health(), Some(false));
        let r2 = f.view.get(f.key.as_ref()).unwrap().revision;
        assert!(r2 > r1);
        f.beat("10.0.0.1");
        assert_eq!(f.health(), Some(true));
        assert!(f.view.get(f.key.as_ref()).unwrap().revision > r2);
    }
}
