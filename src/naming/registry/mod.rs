//! A shard's registry: the services it owns, their instances and leases.
//!
//! The owner shard is the only writer of a service. Every applied change bumps the service's
//! revision and marks it dirty; [`Registry::flush`] publishes dirty services to the shared
//! [`ReadView`] (an instance write to a published view that no reader holds updates it in
//! place at once; see [`Registry::apply`]). A service's instances are a [`Roster`], so
//! publishing shares it instead of copying it. Leases live in a [`Wheel`]: a beat only stamps the instance's `last_beat`, and
//! each instance is looked at when its next deadline comes due.
//!
//! Files: this one holds the registry and its writes; [`lease`] the beats, lease checks and
//! empty-service expiry; [`persistent`] committed ops, the startup restore and probe health;
//! [`removal`] service removal and compaction; `tests` the unit tests on a driven clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hashbrown::{HashMap, HashSet};

use crate::error::{ApiError, ApiResult};
use crate::naming::instance::{Host, Instance, InstanceKey, InstanceSpec, Timing};
use crate::naming::op::PersistentOp;
use crate::naming::roster::Roster;
use crate::naming::service::ServiceSettings;
use crate::naming::service::{ClusterMeta, Metadata, ServiceKey, ServiceMeta};
use crate::naming::view::{ReadView, ServiceView};
use crate::naming::wheel::Wheel;
use crate::naming::write::{Durability, Outcome, Patch, Reply, Restore, Target, Write};

mod lease;
mod ledger;
mod persistent;
mod removal;
mod replica;

pub use ledger::Tombstone;
pub use replica::{Received, Replica};
#[cfg(test)]
mod tests;

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
    /// The mass-expiry guard, in percent: while more than this share of the shard's ephemeral
    /// instances are unhealthy (and at least [`GUARD_MIN_SICK`]), none is removed; they are
    /// looked at again later and removed once enough beats are back. 0 switches it off.
    /// Default 50.
    pub expiry_guard_percent: u8,
}

/// The mass-expiry guard never holds back removals while fewer ephemeral instances than this
/// are unhealthy: a few clients that died together are just removed.
pub const GUARD_MIN_SICK: u64 = 10;

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            timing: Timing::default(),
            expire: true,
            empty_service_ms: 120_000,
            slot_ms: 250,
            max_services: 200_000,
            max_services_per_namespace: 200_000,
            expiry_guard_percent: 50,
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
    /// Ephemeral instances owned.
    pub ephemeral: u64,
    /// Unhealthy ephemeral instances owned.
    pub ephemeral_sick: u64,
    /// Removals the mass-expiry guard held back (each re-check counts).
    pub expiry_deferred: u64,
}

impl Stats {
    /// Replaces a service's counts (`was`) by its new ones (`now`): healthy, unhealthy,
    /// ephemeral, unhealthy ephemeral.
    fn count(&mut self, was: [u64; 4], now: [u64; 4]) {
        let fields = [
            &mut self.healthy,
            &mut self.unhealthy,
            &mut self.ephemeral,
            &mut self.ephemeral_sick,
        ];
        for (f, (w, n)) in fields.into_iter().zip(was.into_iter().zip(now)) {
            *f = *f + n - w;
        }
    }

    /// Whether the mass-expiry guard holds back removals: more than `percent` of the ephemeral
    /// instances are unhealthy, and at least [`GUARD_MIN_SICK`]. Never with `percent` 0.
    pub fn expiry_paused(&self, percent: u8) -> bool {
        percent > 0
            && self.ephemeral_sick >= GUARD_MIN_SICK
            && self.ephemeral_sick * 100 > u64::from(percent) * self.ephemeral
    }
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
    /// Counts last reported into `Stats`: healthy, unhealthy, ephemeral, unhealthy ephemeral.
    counted: [u64; 4],
    empty_since: Option<u64>,
    /// Created or changed through raft: never removed by the empty-service cleaner.
    durable: bool,
    /// Distro: the ephemeral instances are another member's replica (that member is
    /// responsible), so their leases are not checked here until this member adopts them.
    replica: bool,
    /// Distro version of the ephemeral instances: bumped by the responsible member for each
    /// replication round, taken from the replica otherwise. Only a higher one replaces them.
    version: u64,
    /// Distro stamps and tombstones of the ephemeral instances (cluster mode only; `None`
    /// standalone, and until the first ephemeral write).
    ledger: Option<Box<ledger::Ledger>>,
}

impl ServiceState {
    /// The Distro ledger, created on first use.
    fn ledger_mut(&mut self) -> &mut ledger::Ledger {
        self.ledger.get_or_insert_with(Default::default)
    }
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
    /// Some service has held another member's replica (Distro): writes check for adoption.
    any_replica: bool,
    /// Cluster mode (see [`Registry::set_distro`]).
    distro: bool,
    /// Services changed only by committed (raft) ops since the last flush, with the revision
    /// the last of them left: if the service still has that revision at the flush, nothing
    /// else changed it, so its Distro version stays and it is not replicated.
    raft_only: HashMap<ServiceKey, u64>,
    /// The services the last flush published because of committed ops alone.
    raft_only_flushed: HashSet<ServiceKey>,
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
            any_replica: false,
            distro: false,
            raft_only: HashMap::new(),
            raft_only_flushed: HashSet::new(),
        }
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Number of wheel entries (≈ live leases plus stale ones not yet visited).
    pub fn lease_count(&self) -> usize {
        self.wheel.len()
    }

    /// Applies one write at monotonic time `now` (ms), after checking its preconditions
    /// against this owner's state. An error changes nothing. An ephemeral write is applied
    /// here ([`Outcome::Applied`]); a persistent one changes nothing yet and comes back as the
    /// ops to propose ([`Outcome::Propose`]), applied by [`Registry::apply_committed`] once
    /// raft commits them.
    ///
    /// Changes become visible to readers at the next [`Registry::flush`], or at once for an
    /// instance write to a published service that no reader holds: then the published view is
    /// updated in place ([`ReadView::update_in_place`]): its roster handle is dropped, so the
    /// owner's roster changes its chunks in place instead of copying them, and is put back
    /// with the new revision. Otherwise (a reader holds the view, or the service is new) the
    /// change is copy-on-write and published by the next flush.
    pub fn apply(&mut self, key: &ServiceKey, write: Write, now: u64) -> ApiResult<Outcome> {
        // Beats are left out: nearly all of them change nothing (they stamp `last_beat`), and
        // must not take the stripe lock; the rare one that changes health is copy-on-write.
        // So are persistent instance writes, which change nothing until committed.
        let instance_write = match &write {
            Write::Register(spec) | Write::Update { spec, .. } => spec.ephemeral,
            Write::Deregister { durability, .. } => durability.is_ephemeral(),
            Write::Patch(_) | Write::SetHealth { .. } | Write::BatchMetadata { .. } => true,
            _ => false,
        };
        if !instance_write || self.distro || !self.services.contains_key(key) {
            return self.apply_now(key, write, now);
        }
        let view = self.view.clone();
        view.update_in_place(key.as_ref(), |published| {
            let Some(published) = published else {
                return self.apply_now(key, write, now);
            };
            drop(published.take_instances());
            // Whatever happens (even a panic, which the API layer turns into a 500), the view
            // gets the owner's roster back before the lock is released.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.apply_now(key, write, now)
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

    /// The state of an existing service, or `missing(key)`.
    fn existing(
        &self,
        key: &ServiceKey,
        missing: impl FnOnce(&ServiceKey) -> ApiError,
    ) -> ApiResult<&ServiceState> {
        self.services.get(key).ok_or_else(|| missing(key))
    }

    fn apply_now(&mut self, key: &ServiceKey, write: Write, now: u64) -> ApiResult<Outcome> {
        // A write reaches the owner shard of the member responsible for the service (Distro
        // forwards it there): a replica held here is this member's from now on. Not a write
        // of a persistent instance: any member takes those, since they go through raft.
        if !write.names_persistent_instance() {
            self.adopt(key, now);
        }
        match write {
            Write::Register(spec) => {
                self.room_for(key)?;
                Ok(self.put(key, spec, now))
            }
            Write::Update { spec, strict } => {
                if strict {
                    let svc = self.existing(key, |key| {
                        ApiError::server(format!(
                            "service not found, namespace: {}, service: {}",
                            key.namespace, key.grouped
                        ))
                    })?;
                    let exists = svc.instances.iter().any(|i| {
                        let k = &i.key;
                        *k.ip == *spec.ip && k.port == spec.port && k.ephemeral == spec.ephemeral
                    });
                    if !exists {
                        return Err(spec.not_exist());
                    }
                }
                self.room_for(key)?;
                Ok(self.put(key, spec, now))
            }
            Write::Deregister {
                ip,
                port,
                cluster,
                durability,
            } => {
                let ik = self.instance_key(&ip, port, &cluster, durability.is_ephemeral());
                let persistent = durability == Durability::Persistent;
                let svc = self.services.get_mut(key);
                // Nothing to remove here: standalone that is the applied state, so answer ok
                // without a log entry. In a cluster this member's copy may not have applied a
                // register another member already acknowledged: the deregister goes through the
                // log all the same (removing an absent instance changes nothing), or an `ok`
                // here could come before that register in the log's order (found by
                // tests/raft.rs's linearizability check).
                let present = svc.as_ref().is_some_and(|s| s.instances.get(&ik).is_some());
                if persistent && (present || self.distro) {
                    return Ok(Outcome::Propose {
                        ops: vec![PersistentOp::Deregister { ip, port, cluster }],
                        reply: Reply::Ok,
                    });
                }
                let Some(svc) = svc.filter(|_| !persistent) else {
                    return Ok(Outcome::Applied(Reply::Ok));
                };
                if svc.instances.remove(&ik).is_some() {
                    if self.distro {
                        let version = svc.version + 1;
                        svc.ledger_mut().bury(ik, version, now);
                    }
                    Self::touch(&mut self.revisions, &mut self.dirty, key, svc);
                }
                Ok(Outcome::Applied(Reply::Ok))
            }
            Write::Patch(p) => self.patch(key, p, now),
            Write::Beat {
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
            Write::SetHealth {
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
                Ok(Outcome::Applied(Reply::Ok))
            }
            Write::BatchMetadata {
                targets,
                durability,
                metadata,
                delete,
            } => self.batch_metadata(key, targets, durability, metadata, delete),
            Write::CreateService(settings) => {
                if self.services.contains_key(key) {
                    return Err(ApiError::bad_request(format!(
                        "specified service already exists, serviceName : {}",
                        key.grouped
                    )));
                }
                self.room_for(key)?;
                Ok(propose(PersistentOp::CreateService { settings }))
            }
            Write::UpdateService(settings) => {
                self.existing(key, |key| {
                    ApiError::server(format!("service {} not found!", key.grouped))
                })?;
                Ok(propose(PersistentOp::UpdateService { settings }))
            }
            Write::DeleteService => {
                let svc = self.existing(key, |key| {
                    ApiError::bad_request(format!(
                        "specified service not exist, serviceName : {}",
                        key.grouped
                    ))
                })?;
                if !svc.instances.is_empty() {
                    return Err(has_instances(key));
                }
                Ok(propose(PersistentOp::DeleteService))
            }
            Write::UpdateCluster { cluster, meta } => {
                self.existing(key, |key| {
                    ApiError::server(format!("service not found:{}", key.grouped))
                })?;
                Ok(propose(PersistentOp::UpdateCluster { cluster, meta }))
            }
        }
    }

    /// Adds or replaces an instance: at once if ephemeral, else as a proposal.
    fn put(&mut self, key: &ServiceKey, spec: InstanceSpec, now: u64) -> Outcome {
        if !spec.ephemeral {
            return propose(PersistentOp::Register { instance: spec });
        }
        self.upsert(key, &spec, now);
        Outcome::Applied(Reply::Ok)
    }

    /// Publishes every service changed since the last flush, at monotonic time `now` (ms), and
    /// starts the empty-service clock of services that became empty. Returns the services that
    /// were published or removed.
    pub fn flush(&mut self, now: u64) -> Vec<ServiceKey> {
        let mut changed = Vec::new();
        let raft_only = std::mem::take(&mut self.raft_only);
        self.raft_only_flushed.clear();
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
            let (eph, sick) = svc.instances.ephemeral();
            let now_counted = [
                healthy,
                svc.instances.len() as u64 - healthy,
                eph as u64,
                sick as u64,
            ];
            self.stats.count(svc.counted, now_counted);
            svc.counted = now_counted;
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
                if raft_only.get(&key) == Some(&svc.revision) {
                    self.raft_only_flushed.insert(key.clone());
                } else if self.distro && !svc.replica {
                    svc.version += 1;
                }
                let mut view = ServiceView::new(
                    key.clone(),
                    svc.revision,
                    svc.meta.clone(),
                    svc.instances.clone(),
                );
                view.version = svc.version;
                self.view.publish(Arc::new(view));
            }
            changed.push(key);
        }
        self.stats.services = self.services.len() as u64;
        changed
    }

    /// Whether the last flush published `key` only because of committed ops (no Distro
    /// change to replicate).
    pub fn flushed_by_raft_only(&self, key: &ServiceKey) -> bool {
        self.raft_only_flushed.contains(key)
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
        if self.distro && spec.ephemeral {
            // The version the next flush publishes.
            let version = svc.version + 1;
            svc.ledger_mut().registered(&inst.key, version);
        }
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

    /// `PATCH /instance`: merges the given fields into the instance `ip:port` in `cluster`
    /// (either kind; the first found) and writes it back the way its kind is written.
    fn patch(&mut self, key: &ServiceKey, p: Patch, now: u64) -> ApiResult<Outcome> {
        let svc = self.services.get(key);
        let found = svc.and_then(|svc| svc.instances.find_any(&p.ip, p.port, &p.cluster).cloned());
        let Some(old) = found else {
            return Err(ApiError::bad_request("instance not found"));
        };
        let mut spec = old.to_spec();
        if let Some(m) = p.metadata {
            spec.metadata = m;
        }
        if let Some(a) = p.app {
            spec.app = a;
        }
        if let Some(w) = p.weight {
            spec.weight = w;
        }
        if let Some(e) = p.enabled {
            spec.enabled = e;
        }
        spec.validate()?;
        Ok(self.put(key, spec, now))
    }

    /// `PUT|DELETE /instance/metadata/batch`: sets or deletes `metadata`'s keys on every
    /// instance `targets` names (or every instance of `durability` when `None`). Ephemeral
    /// instances change at once; persistent ones are re-registered through raft, one op each.
    /// Every changed metadata map is checked before anything changes. The answer lists the
    /// persistent instances first, then the ephemeral ones.
    fn batch_metadata(
        &mut self,
        key: &ServiceKey,
        targets: Option<Vec<Target>>,
        durability: Durability,
        metadata: Metadata,
        delete: bool,
    ) -> ApiResult<Outcome> {
        let Some(svc) = self.services.get_mut(key) else {
            return Ok(Outcome::Applied(Reply::Updated(Vec::new())));
        };
        let mut updated = Vec::new();
        let mut ops = Vec::new();
        let mut changed = Vec::new();
        for old in svc.instances.iter() {
            let k = &old.key;
            let hit = match &targets {
                None => k.ephemeral == durability.is_ephemeral(),
                Some(ts) => ts.iter().any(|t| {
                    *t.ip == *k.ip
                        && t.port == k.port
                        && t.durability.is_ephemeral() == k.ephemeral
                        && t.cluster.as_deref().is_none_or(|c| *c == *k.cluster)
                }),
            };
            if !hit {
                continue;
            }
            let mut spec = old.to_spec();
            for (mk, mv) in &metadata {
                if delete {
                    spec.metadata.remove(mk);
                } else {
                    spec.metadata.insert(mk.clone(), mv.clone());
                }
            }
            crate::naming::service::check_metadata(&spec.metadata)?;
            let line = format!(
                "{}:{}:unknown:{}:{}",
                k.ip,
                k.port,
                k.cluster,
                if k.ephemeral { "ephemeral" } else { "persist" }
            );
            if !k.ephemeral {
                ops.push(PersistentOp::Register { instance: spec });
                updated.push(line);
                continue;
            }
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
            changed.push((line, Arc::new(inst)));
        }
        let touched = !changed.is_empty();
        for (line, inst) in changed {
            updated.push(line);
            svc.instances.insert(inst);
        }
        if touched {
            Self::touch(&mut self.revisions, &mut self.dirty, key, svc);
        }
        let reply = Reply::Updated(updated);
        Ok(if ops.is_empty() {
            Outcome::Applied(reply)
        } else {
            Outcome::Propose { ops, reply }
        })
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
            counted: [0; 4],
            empty_since: None,
            durable: false,
            replica: false,
            version: 0,
            ledger: None,
        }
    })
}

/// One persistent op to propose, answered `ok` once applied.
fn propose(op: PersistentOp) -> Outcome {
    Outcome::Propose {
        ops: vec![op],
        reply: Reply::Ok,
    }
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

/// The smallest non-negative integer not used as an instance id (snowflake generator).
fn smallest_unused_id(ids: impl Iterator<Item = u32>) -> u32 {
    let used: std::collections::HashSet<u32> = ids.collect();
    (0..).find(|n| !used.contains(n)).unwrap_or(0)
}
