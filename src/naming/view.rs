//! The read view: what every shard serves reads from, without a cross-shard hop.
//!
//! The owner shard of a service publishes a [`ServiceView`] (instances, settings, revision)
//! after every change; its instances are a [`Roster`] shared with the owner, not a copy. A view
//! a reader holds never changes. One that nobody holds may be updated in place by its owner,
//! under its stripe's write lock ([`ReadView::update_in_place`]), so that a write to a service
//! nobody is reading copies nothing. Readers on any shard look it up under a striped read lock. A list's host array is
//! rendered once per revision and variant (all clusters, with or without `healthyOnly`, grouped
//! or not; plus a few cluster filters) and then served as shared [`Bytes`], from the
//! [`crate::arena`] when it is large.

use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;
use hashbrown::HashMap;
use md5::{Digest, Md5};

use crate::error::{ApiError, ApiResult};
use crate::hash::stable_hash;
use crate::naming::instance::Instance;
use crate::naming::roster::Roster;
use crate::naming::service::{name_of, KeyRef, ServiceKey, ServiceMeta};

/// Number of lock stripes in the read view.
const STRIPES: usize = 64;
/// Most cluster-filtered host arrays cached per service revision.
const FILTERED_CACHE: usize = 8;

/// A published, immutable snapshot of one service.
#[derive(Debug)]
pub struct ServiceView {
    /// The service.
    pub key: ServiceKey,
    /// Revision of the last applied change. Invariant: strictly increases per service.
    pub revision: u64,
    /// Settings and clusters.
    pub meta: Arc<ServiceMeta>,
    /// Distro version of the ephemeral instances as last published (0 standalone; see
    /// `naming::registry::Replica`). What a peer's verify round compares.
    pub version: u64,
    /// Instances in a stable order (by identity), with their healthy count.
    pub instances: Roster,
    /// Host arrays for "all clusters", indexed by `healthy_only as usize * 2 + grouped as usize`.
    hosts_cache: [OnceLock<Bytes>; 4],
    /// Host arrays for cluster-filtered queries: (clusters as sent, variant, bytes).
    filtered: std::sync::Mutex<Vec<(Box<str>, u8, Bytes)>>,
    checksum: OnceLock<String>,
    /// See [`ServiceView::distro_digest`].
    digest: OnceLock<u64>,
    metadata_json: OnceLock<Bytes>,
}

/// What an `instance/list` request asks for.
#[derive(Debug, Clone)]
pub struct ListQuery<'a> {
    /// The `clusters` parameter exactly as sent (echoed back).
    pub clusters_raw: &'a str,
    /// Parsed cluster filter; empty means all clusters.
    pub clusters: Vec<&'a str>,
    /// `healthyOnly`.
    pub healthy_only: bool,
    /// The client may see grouped names (Java UA ≥ 1.0.0).
    pub grouped: bool,
    /// `cacheMillis` to report.
    pub cache_millis: u64,
    /// `env`, echoed.
    pub env: &'a str,
    /// `isCheck`.
    pub is_check: bool,
    /// Wall-clock ms for `lastRefTime`.
    pub now_wall_ms: u64,
}

impl ServiceView {
    /// A new view of `instances` (shared with the owner's roster, not copied).
    pub fn new(key: ServiceKey, revision: u64, meta: Arc<ServiceMeta>, instances: Roster) -> Self {
        ServiceView {
            key,
            revision,
            meta,
            version: 0,
            instances,
            hosts_cache: Default::default(),
            filtered: Default::default(),
            checksum: OnceLock::new(),
            digest: OnceLock::new(),
            metadata_json: OnceLock::new(),
        }
    }

    /// Takes the instances out (leaving none), so that the owner's roster is the only holder
    /// of its chunks and changes it in place. Only inside [`ReadView::update_in_place`], which
    /// keeps readers out until [`ServiceView::republish`] puts instances back.
    pub fn take_instances(&mut self) -> Roster {
        std::mem::take(&mut self.instances)
    }

    /// Puts the owner's state back into this view: `instances` always; and if `revision` is
    /// newer than the view's, the new revision and settings, with every cached rendering
    /// dropped. (An unchanged revision means unchanged content: the caches stay valid.)
    pub fn republish(&mut self, revision: u64, meta: &Arc<ServiceMeta>, instances: Roster) {
        self.instances = instances;
        if revision != self.revision {
            debug_assert!(revision > self.revision, "revisions only grow");
            self.revision = revision;
            self.meta = meta.clone();
            self.hosts_cache = Default::default();
            self.filtered
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            self.checksum = OnceLock::new();
            self.digest = OnceLock::new();
            self.metadata_json = OnceLock::new();
        }
    }

    /// Number of healthy instances.
    pub fn healthy_count(&self) -> usize {
        self.instances.healthy()
    }

    /// Lowercase hex MD5 over every instance's identity, weight, health, flags and metadata.
    pub fn checksum(&self) -> &str {
        self.checksum.get_or_init(|| {
            let mut h = Md5::new();
            for i in &self.instances {
                h.update(i.describe().as_bytes());
                h.update(if i.enabled {
                    &b"_true_"[..]
                } else {
                    &b"_false_"[..]
                });
                for (k, v) in i.metadata.iter() {
                    h.update(k.as_bytes());
                    h.update(b":");
                    h.update(v.as_bytes());
                    h.update(b",");
                }
                h.update(b",");
            }
            format!("{:x}", h.finalize())
        })
    }

    /// Digest of the ephemeral instances (what Distro replicates): FNV-1a 64 over each one's
    /// identity, weight, health, `enabled`, app and metadata, in roster order (not `marked`,
    /// which replicas do not carry). Two members holding the
    /// same copy of a service compute the same digest; a Distro verify round compares it
    /// with the version. Computed once per published view.
    pub fn distro_digest(&self) -> u64 {
        *self.digest.get_or_init(|| {
            let mut h = crate::hash::Digest::default();
            for i in self.instances.iter().filter(|i| i.key.ephemeral) {
                h.part(i.key.ip.as_bytes());
                h.part(&i.key.port.to_be_bytes());
                h.part(i.key.cluster.as_bytes());
                h.part(&i.weight.to_bits().to_be_bytes());
                h.part(&[u8::from(i.healthy), u8::from(i.enabled)]);
                h.part(i.app.as_bytes());
                for (k, v) in i.metadata.iter() {
                    h.part(k.as_bytes());
                    h.part(v.as_bytes());
                }
            }
            h.finish()
        })
    }

    fn metadata_json(&self) -> &Bytes {
        self.metadata_json.get_or_init(|| {
            Bytes::from(serde_json::to_vec(&self.meta.metadata).unwrap_or_else(|_| b"{}".to_vec()))
        })
    }

    /// Renders the `instance/list` body as a sequence of chunks (written with one `writev`).
    ///
    /// Follows Nacos's `doSrvIpxt`: a disabled service is a 500; the protect threshold serves
    /// every instance as healthy when `healthy / total <= threshold`; healthy hosts come first;
    /// disabled instances are dropped after counting; `isCheck` with instances answers `{}`.
    pub fn render_list(&self, q: &ListQuery<'_>) -> ApiResult<Vec<Bytes>> {
        if !self.meta.enabled {
            return Err(ApiError::server("service is disabled now."));
        }
        let selected = |i: &&Arc<Instance>| {
            q.clusters.is_empty() || q.clusters.iter().any(|c| **c == *i.key.cluster)
        };
        let total = self.instances.iter().filter(selected).count();
        if total > 0 && q.is_check {
            return Ok(vec![Bytes::from_static(b"{}")]);
        }
        let service_name = Instance::service_name_for(&self.key.grouped, q.grouped);
        let service_json = json_str(service_name);
        let hosts = if total == 0 {
            Bytes::from_static(b"]}")
        } else if q.clusters.is_empty() {
            // When every instance is served as healthy (all healthy, or the protect threshold
            // fires), `healthyOnly` changes nothing: share one cached array for both.
            let uniform = self.healthy_count() == total
                || (self.healthy_count() as f32 / total as f32) <= self.meta.protect_threshold;
            let slot = (q.healthy_only && !uniform) as usize * 2 + q.grouped as usize;
            self.hosts_cache[slot]
                .get_or_init(|| {
                    seal(self.render_hosts(
                        self.instances.iter(),
                        total,
                        q.healthy_only,
                        &service_json[1..service_json.len() - 1],
                    ))
                })
                .clone()
        } else {
            self.filtered_hosts(q, total, &service_json[1..service_json.len() - 1], selected)
        };
        // Everything that varies per request comes first, the cached host array (closing the
        // object) last, so the reply is one buffer of headers and fields plus one cached body
        // (sent with `sendfile` when it is large). JSON clients do not depend on key order.
        let mut head = Vec::with_capacity(256);
        head.extend_from_slice(b"{\"dom\":");
        head.extend_from_slice(service_json.as_bytes());
        head.extend_from_slice(b",\"name\":");
        head.extend_from_slice(json_str(&self.key.grouped).as_bytes());
        head.extend_from_slice(b",\"cacheMillis\":");
        head.extend_from_slice(itoa::Buffer::new().format(q.cache_millis).as_bytes());
        head.extend_from_slice(b",\"lastRefTime\":");
        head.extend_from_slice(itoa::Buffer::new().format(q.now_wall_ms).as_bytes());
        head.extend_from_slice(b",\"checksum\":\"");
        head.extend_from_slice(self.checksum().as_bytes());
        head.extend_from_slice(b"\",\"useSpecifiedURL\":false,\"clusters\":");
        head.extend_from_slice(json_str(q.clusters_raw).as_bytes());
        head.extend_from_slice(b",\"env\":");
        head.extend_from_slice(json_str(q.env).as_bytes());
        head.extend_from_slice(b",\"metadata\":");
        let meta = self.metadata_json().clone();
        Ok(vec![
            Bytes::from(head),
            meta,
            Bytes::from_static(b",\"hosts\":["),
            hosts,
        ])
    }

    /// Host arrays for a cluster filter (Node's client always sends one), cached per
    /// (clusters, healthyOnly, naming) for this revision; at most [`FILTERED_CACHE`] variants.
    fn filtered_hosts(
        &self,
        q: &ListQuery<'_>,
        total: usize,
        service_json: &str,
        selected: impl Fn(&&Arc<Instance>) -> bool + Clone,
    ) -> Bytes {
        let variant = (q.healthy_only as u8) << 1 | q.grouped as u8;
        let mut cache = self.filtered.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, b)) = cache
            .iter()
            .find(|(c, v, _)| *v == variant && **c == *q.clusters_raw)
        {
            return b.clone();
        }
        let b = seal(self.render_hosts(
            self.instances.iter().filter(selected),
            total,
            q.healthy_only,
            service_json,
        ));
        if cache.len() < FILTERED_CACHE {
            cache.push((q.clusters_raw.into(), variant, b.clone()));
        }
        b
    }

    /// The comma-separated host objects of `selected` (healthy first, as served), followed by
    /// the `]}` that closes the list reply.
    fn render_hosts<'a>(
        &self,
        selected: impl Iterator<Item = &'a Arc<Instance>> + Clone,
        total: usize,
        healthy_only: bool,
        service_json: &str,
    ) -> Vec<u8> {
        let healthy = selected.clone().filter(|i| i.healthy).count();
        let protect = (healthy as f32 / total as f32) <= self.meta.protect_threshold;
        let mut out = Vec::with_capacity(total * 300);
        let mut first = true;
        let mut emit = |i: &Instance, as_healthy: bool, out: &mut Vec<u8>| {
            if !first {
                out.push(b',');
            }
            first = false;
            i.write_host(out, as_healthy, service_json.as_bytes(), &self.key.grouped);
        };
        for i in selected.clone().filter(|i| protect || i.healthy) {
            if i.enabled {
                emit(i, true, &mut out);
            }
        }
        if !protect && !healthy_only {
            for i in selected.filter(|i| !i.healthy) {
                if i.enabled {
                    emit(i, false, &mut out);
                }
            }
        }
        out.extend_from_slice(b"]}");
        out
    }
}

/// A rendered host array as cached bytes: in the [`crate::arena`] when it is large enough to
/// be sent with `sendfile`, else on the heap without the over-estimated capacity.
fn seal(mut hosts: Vec<u8>) -> Bytes {
    crate::arena::store(&hosts).unwrap_or_else(|| {
        // Cached for the life of the revision: give back the over-estimate (glibc shrinks in
        // place), ~20% of the allocation.
        hosts.shrink_to_fit();
        Bytes::from(hosts)
    })
}

/// The body for a service that does not exist: `{"name","clusters","cacheMillis","hosts":[]}`.
pub fn render_missing(grouped: &str, q: &ListQuery<'_>) -> Bytes {
    let mut s = String::with_capacity(96);
    s.push_str("{\"name\":");
    s.push_str(&json_str(grouped));
    s.push_str(",\"clusters\":");
    s.push_str(&json_str(q.clusters_raw));
    s.push_str(",\"cacheMillis\":");
    s.push_str(itoa::Buffer::new().format(q.cache_millis));
    s.push_str(",\"hosts\":[]}");
    Bytes::from(s)
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// One lock stripe of the read view.
type Stripe = RwLock<HashMap<ServiceKey, Arc<ServiceView>>>;

/// Every shard's published services, readable from any shard.
#[derive(Debug)]
pub struct ReadView {
    stripes: Box<[Stripe]>,
    /// How many services exist, for the service caps.
    pub census: Census,
}

impl Default for ReadView {
    fn default() -> Self {
        ReadView {
            stripes: (0..STRIPES).map(|_| RwLock::default()).collect(),
            census: Census::default(),
        }
    }
}

/// Services in total and per namespace over every shard: what `max_services` and
/// `max_services_per_namespace` bound.
///
/// Invariant: equals the services the shards' registries hold (each registry adds a service
/// when it creates one and removes it when it drops one). It counts services as they are
/// created, before they are published. The caps are soft by at most one creation per shard
/// racing another shard's check, and a persistent service that passed its check before
/// proposing is applied even if the cap filled meanwhile (committed entries never fail).
#[derive(Debug, Default)]
pub struct Census {
    total: std::sync::atomic::AtomicUsize,
    namespaces: std::sync::Mutex<HashMap<Arc<str>, usize>>,
}

impl Census {
    /// Counts a created service.
    pub fn add(&self, namespace: &Arc<str>) {
        self.total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut ns = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        *ns.entry(namespace.clone()).or_insert(0) += 1;
    }

    /// Uncounts a removed service.
    pub fn remove(&self, namespace: &str) {
        self.total
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let mut ns = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = ns.get_mut(namespace) {
            *n -= 1;
            if *n == 0 {
                ns.remove(namespace);
            }
        }
    }

    /// Services in total.
    pub fn total(&self) -> usize {
        self.total.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Services in `namespace`.
    pub fn in_namespace(&self, namespace: &str) -> usize {
        let ns = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        ns.get(namespace).copied().unwrap_or(0)
    }

    /// Every namespace holding at least one service, with its service count, sorted by id.
    pub fn namespaces(&self) -> Vec<(Arc<str>, usize)> {
        let ns = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<(Arc<str>, usize)> = ns.iter().map(|(k, n)| (k.clone(), *n)).collect();
        v.sort();
        v
    }

    /// Whether one more service may be created in `namespace`: else 503 naming the cap.
    pub fn room_for(&self, namespace: &str, max_total: usize, max_in_ns: usize) -> ApiResult<()> {
        let full = |msg: String| ApiError {
            status: 503,
            msg,
            kind: crate::error::ErrorKind::Caused,
        };
        let total = self.total();
        if total >= max_total {
            return Err(full(format!(
                "too many services: the server holds {total}, the limit (max_services) is \
                 {max_total}; delete unused services or raise the limit"
            )));
        }
        let here = self.in_namespace(namespace);
        if here >= max_in_ns {
            return Err(full(format!(
                "too many services in namespace {namespace}: it holds {here}, the limit \
                 (max_services_per_namespace) is {max_in_ns}; delete unused services or raise \
                 the limit"
            )));
        }
        Ok(())
    }
}

impl ReadView {
    fn stripe(key: KeyRef<'_>) -> usize {
        // High bits: the low bits already pick the owner shard.
        (stable_hash(key.namespace, key.grouped) >> 40) as usize % STRIPES
    }

    /// The published view of a service, if it exists.
    pub fn get(&self, key: KeyRef<'_>) -> Option<Arc<ServiceView>> {
        let map = self.stripes[Self::stripe(key)]
            .read()
            .unwrap_or_else(|e| e.into_inner());
        map.get(&key).cloned()
    }

    /// Publishes (or replaces) a service's view. Only the owner shard calls this.
    ///
    /// A republished service keeps its map entry (no key clone, one hash); the old view is
    /// dropped after the lock is released, so readers never wait for its memory to be freed.
    pub fn publish(&self, view: Arc<ServiceView>) {
        let old = {
            let mut map = self.stripes[Self::stripe(view.key.as_ref())]
                .write()
                .unwrap_or_else(|e| e.into_inner());
            match map.get_mut(&view.key.as_ref()) {
                Some(slot) => Some(std::mem::replace(slot, view)),
                None => map.insert(view.key.clone(), view),
            }
        };
        drop(old);
    }

    /// Runs `f` on the published view of `key` while no reader can see it: under the stripe's
    /// write lock, and only if no reader holds the view (`f` gets `None` if one does, or if
    /// the service is not published). Only the owner shard calls this; `f` must not touch
    /// this read view (the lock is not reentrant) and should be short: readers of the other
    /// services in the stripe wait for it.
    pub fn update_in_place<R>(
        &self,
        key: KeyRef<'_>,
        f: impl FnOnce(Option<&mut ServiceView>) -> R,
    ) -> R {
        let mut map = self.stripes[Self::stripe(key)]
            .write()
            .unwrap_or_else(|e| e.into_inner());
        f(map.get_mut(&key).and_then(Arc::get_mut))
    }

    /// Removes a deleted service. Only the owner shard calls this.
    pub fn remove(&self, key: &ServiceKey) {
        let mut map = self.stripes[Self::stripe(key.as_ref())]
            .write()
            .unwrap_or_else(|e| e.into_inner());
        map.remove(key);
    }

    /// Gives back the spare capacity of stripes at most a quarter full (after many services
    /// were removed). Takes each stripe's write lock in turn, briefly.
    pub fn shrink(&self) {
        for s in self.stripes.iter() {
            let mut map = s.write().unwrap_or_else(|e| e.into_inner());
            if map.len() * 4 <= map.capacity() {
                map.shrink_to_fit();
            }
        }
    }

    /// Every published service, in no particular order.
    pub fn all(&self) -> Vec<Arc<ServiceView>> {
        let mut out = Vec::new();
        for s in self.stripes.iter() {
            let map = s.read().unwrap_or_else(|e| e.into_inner());
            out.extend(map.values().cloned());
        }
        out
    }

    /// Services of one namespace, sorted by grouped name.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<ServiceView>> {
        let mut v: Vec<_> = self
            .all()
            .into_iter()
            .filter(|s| &*s.key.namespace == namespace)
            .collect();
        v.sort_by(|a, b| a.key.grouped.cmp(&b.key.grouped));
        v
    }
}

/// The ungrouped name of a view, for service lists.
pub fn display_name(view: &ServiceView) -> &str {
    name_of(&view.key.grouped)
}
