//! Persistent (CP) data: the changes that go through raft, and the state they fold into.
//!
//! Every persistent change is a [`PersistentOp`] carried in a raft entry as a
//! `muster_storage::event::Event` (service key `namespace##group@@name`, a kind, the wall time,
//! and the op's body: [`PersistentOp::encode_body`], binary, which `muster-wal` decodes and shows
//! as JSON; logs written by Muster 0.1 hold JSON bodies, which still decode). Committed ops fold into [`Durable`], the
//! raft shard's copy of all persistent state, which snapshots serialize; each op is also applied
//! by the service's owner shard to the registry that serves reads. Applying is an upsert and
//! never fails: existence checks happen before proposing.

use std::collections::BTreeMap;
use std::sync::Arc;

use hashbrown::{HashMap, HashTable};
use rkyv::with::InlineAsBox;
use serde::{Deserialize, Serialize};

use crate::consensus::state_machine::DecodeError;
use crate::hash::instance_hash;
use crate::naming::instance::InstanceSpec;
use crate::naming::op::PersistentOp;
use crate::naming::service::{ClusterMeta, Metadata, ServiceKey, ServiceSettings};

/// The first 8 bytes of a binary op body (an rkyv archive of [`OpImage`] follows). A JSON body
/// (Muster 0.1) starts with `{` instead.
pub const OP_MAGIC: &[u8; 8] = b"MOP2\0\0\0\0";

impl PersistentOp {
    /// The op as an event body: [`OP_MAGIC`] then an rkyv archive. Registers and deregisters,
    /// nearly every entry of a busy log, are binary; service and cluster ops carry free-form
    /// JSON (selectors, health checkers) and go as their JSON text inside.
    pub fn encode_body(&self) -> Vec<u8> {
        let image = match self {
            PersistentOp::Register { instance } => OpImage::Register(InstanceImage::from(instance)),
            PersistentOp::Deregister { ip, port, cluster } => OpImage::Deregister {
                ip,
                port: *port,
                cluster,
            },
            other => OpImage::Json(json(other)),
        };
        archive_after(OP_MAGIC, &image)
    }

    /// Decodes an event body written by [`PersistentOp::encode_body`], or the JSON body of a
    /// Muster 0.1 log. Errors say what is wrong with it.
    pub fn decode_body(body: &[u8]) -> Result<PersistentOp, DecodeError> {
        if body.first() == Some(&b'{') {
            return serde_json::from_slice(body)
                .map_err(|e| DecodeError::invalid("JSON op body", e));
        }
        let rest = body
            .strip_prefix(OP_MAGIC.as_slice())
            .ok_or_else(|| DecodeError::Magic {
                what: "op body",
                found: String::from_utf8_lossy(&body[..body.len().min(8)]).into_owned(),
                expected: format!("JSON or {:?}", String::from_utf8_lossy(OP_MAGIC)),
            })?;
        aligned(rest, |b| {
            let image = rkyv::access::<ArchivedOpImage, rkyv::rancor::Error>(b)
                .map_err(|e| DecodeError::invalid("binary op body", e))?;
            Ok(match image {
                ArchivedOpImage::Register(i) => PersistentOp::Register {
                    instance: i.to_spec(),
                },
                ArchivedOpImage::Deregister { ip, port, cluster } => PersistentOp::Deregister {
                    ip: ip.to_string(),
                    port: port.to_native(),
                    cluster: cluster.to_string(),
                },
                ArchivedOpImage::Json(j) => serde_json::from_str(j.as_str())
                    .map_err(|e| DecodeError::invalid("JSON op inside a binary body", e))?,
            })
        })
    }
}

/// `magic`, then an rkyv archive of `value` (the layout of op bodies and snapshot images).
fn archive_after<T>(magic: &[u8], value: &T) -> Vec<u8>
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::util::AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rkyv::rancor::Error,
        >,
    >,
{
    let archive = rkyv::to_bytes::<rkyv::rancor::Error>(value).expect("in-memory rkyv encoding");
    let mut out = Vec::with_capacity(magic.len() + archive.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&archive);
    out
}

/// Runs `f` on `bytes`, or on a 16-byte aligned copy when they are not aligned (rkyv reads
/// archives in place and needs their alignment).
fn aligned<R>(bytes: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
    if (bytes.as_ptr() as usize).is_multiple_of(16) {
        return f(bytes);
    }
    let mut v = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
    v.extend_from_slice(bytes);
    f(&v)
}

/// A binary op body (see [`PersistentOp::encode_body`]).
#[derive(rkyv::Archive, rkyv::Serialize)]
enum OpImage<'a> {
    /// [`PersistentOp::Register`].
    Register(InstanceImage<'a>),
    /// [`PersistentOp::Deregister`].
    Deregister {
        #[rkyv(with = InlineAsBox)]
        ip: &'a str,
        port: u16,
        #[rkyv(with = InlineAsBox)]
        cluster: &'a str,
    },
    /// Any other op, as its JSON text.
    Json(String),
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
#[derive(Debug, Clone, Default)]
pub struct DurableService {
    /// Settings, if the service was created or updated through the API.
    pub settings: Option<ServiceSettings>,
    /// Clusters set with `PUT /cluster`.
    pub clusters: BTreeMap<String, ClusterMeta>,
    /// Persistent instances, unique by (ip, port, cluster), each beside its [`instance_hash`] (so
    /// growing the table never goes back to the strings). Shared with the owner shard's
    /// restore, so a restart holds each recovered spec once.
    instances: HashTable<(u64, Arc<InstanceSpec>)>,
}

impl DurableService {
    /// The persistent instances, in no particular order.
    pub fn instances(&self) -> impl Iterator<Item = &Arc<InstanceSpec>> {
        self.instances.iter().map(|(_, s)| s)
    }

    /// The instance with this identity.
    pub fn get(&self, ip: &str, port: u16, cluster: &str) -> Option<&Arc<InstanceSpec>> {
        self.instances
            .find(instance_hash(ip, port, cluster), same_id(ip, port, cluster))
            .map(|(_, s)| s)
    }

    /// Adds or replaces one instance; true when it was not there before.
    fn insert(&mut self, spec: Arc<InstanceSpec>) -> bool {
        let h = instance_hash(&spec.ip, spec.port, &spec.cluster);
        match self
            .instances
            .entry(h, same_id(&spec.ip, spec.port, &spec.cluster), |e| e.0)
        {
            hashbrown::hash_table::Entry::Occupied(mut o) => {
                o.get_mut().1 = spec;
                false
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert((h, spec));
                true
            }
        }
    }
}

impl PartialEq for DurableService {
    fn eq(&self, other: &Self) -> bool {
        self.settings == other.settings
            && self.clusters == other.clusters
            && self.instances.len() == other.instances.len()
            && self.instances.iter().all(|(h, i)| {
                other
                    .instances
                    .find(*h, same_id(&i.ip, i.port, &i.cluster))
                    .is_some_and(|(_, o)| o == i)
            })
    }
}

fn same_id<'a>(
    ip: &'a str,
    port: u16,
    cluster: &'a str,
) -> impl Fn(&(u64, Arc<InstanceSpec>)) -> bool + 'a {
    move |(_, s)| s.port == port && s.ip == ip && s.cluster == cluster
}

/// The naming domain of the state machine: persistent services, clusters and instances,
/// folded from committed ops. Invariant: equal to applying, in order, every committed naming op
/// up to the state machine's `applied`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Durable {
    services: HashMap<ServiceKey, DurableService>,
    /// Persistent instances over all services (kept, so the snapshot check per Ready is O(1)).
    instances: usize,
}

impl Durable {
    /// Folds one committed op in.
    pub fn apply_change(&mut self, key: &ServiceKey, op: &PersistentOp) {
        match op {
            PersistentOp::Register { instance } => {
                self.insert(key, Arc::new(instance.clone()));
            }
            PersistentOp::Deregister { ip, port, cluster } => {
                if let Some(s) = self.services.get_mut(key) {
                    if let Ok(e) = s.instances.find_entry(
                        instance_hash(ip, *port, cluster),
                        same_id(ip, *port, cluster),
                    ) {
                        e.remove();
                        self.instances -= 1;
                    }
                }
            }
            PersistentOp::CreateService { settings } | PersistentOp::UpdateService { settings } => {
                self.service(key).settings = Some(settings.clone());
            }
            PersistentOp::DeleteService => {
                // A service with persistent instances is kept: the registry refuses the same
                // delete (`Registry::apply_committed`), so live state and replay agree.
                if self
                    .services
                    .get(key)
                    .is_some_and(|s| s.instances.is_empty())
                {
                    self.services.remove(key);
                }
            }
            PersistentOp::UpdateCluster { cluster, meta } => {
                self.service(key)
                    .clusters
                    .insert(cluster.clone(), meta.clone());
            }
        }
    }

    /// [`Durable::apply_change`] for an op nobody else needs: a registered instance moves in
    /// whole.
    pub fn apply_change_owned(&mut self, key: &ServiceKey, op: PersistentOp) {
        match op {
            PersistentOp::Register { instance } => self.insert(key, Arc::new(instance)),
            other => self.apply_change(key, &other),
        }
    }

    fn service(&mut self, key: &ServiceKey) -> &mut DurableService {
        self.services.entry_ref(key).or_default()
    }

    /// Adds or replaces one instance.
    fn insert(&mut self, key: &ServiceKey, spec: Arc<InstanceSpec>) {
        if self.services.entry_ref(key).or_default().insert(spec) {
            self.instances += 1;
        }
    }

    /// The ops that turn `self` into `new` when applied in order (a snapshot installed from the
    /// leader replaces this state; the owner shards apply the difference as committed ops):
    /// settings and clusters that differ, instances that are new or changed, and
    /// deregistrations of instances `new` lacks. A service `new` lacks entirely loses its
    /// instances, and is deleted when it had settings.
    pub fn diff(&self, new: &Durable) -> Vec<(ServiceKey, PersistentOp)> {
        let mut ops = Vec::new();
        let empty = DurableService::default();
        for (key, old) in &self.services {
            let now = new.services.get(key).unwrap_or(&empty);
            for spec in old.instances() {
                if now.get(&spec.ip, spec.port, &spec.cluster).is_none() {
                    ops.push((
                        key.clone(),
                        PersistentOp::Deregister {
                            ip: spec.ip.clone(),
                            port: spec.port,
                            cluster: spec.cluster.clone(),
                        },
                    ));
                }
            }
            if old.settings.is_some() && !new.services.contains_key(key) {
                ops.push((key.clone(), PersistentOp::DeleteService));
            }
        }
        for (key, now) in &new.services {
            let old = self.services.get(key).unwrap_or(&empty);
            if let Some(settings) = now
                .settings
                .as_ref()
                .filter(|s| old.settings.as_ref() != Some(s))
            {
                ops.push((
                    key.clone(),
                    PersistentOp::CreateService {
                        settings: settings.clone(),
                    },
                ));
            }
            for (cluster, meta) in &now.clusters {
                if old.clusters.get(cluster) != Some(meta) {
                    ops.push((
                        key.clone(),
                        PersistentOp::UpdateCluster {
                            cluster: cluster.clone(),
                            meta: meta.clone(),
                        },
                    ));
                }
            }
            for spec in now.instances() {
                if old.get(&spec.ip, spec.port, &spec.cluster) != Some(spec) {
                    ops.push((
                        key.clone(),
                        PersistentOp::Register {
                            instance: (**spec).clone(),
                        },
                    ));
                }
            }
        }
        ops
    }

    /// Every service with persistent state, in no particular order.
    pub fn services(&self) -> impl Iterator<Item = (&ServiceKey, &DurableService)> {
        self.services.iter()
    }

    /// Number of services.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// Number of persistent instances.
    pub fn instance_count(&self) -> usize {
        self.instances
    }

    /// Snapshot bytes: [`IMAGE_MAGIC`], then an rkyv archive of [`Image`] (16-byte aligned when
    /// the bytes start aligned).
    pub fn encode(&self) -> Vec<u8> {
        let image = Image {
            services: self
                .services
                .iter()
                .map(|(key, s)| ServiceImage {
                    namespace: &key.namespace,
                    grouped: &key.grouped,
                    settings: s.settings.as_ref().map(json),
                    clusters: s
                        .clusters
                        .iter()
                        .map(|(n, m)| (n.clone(), json(m)))
                        .collect(),
                    instances: s.instances().map(|i| InstanceImage::from(&**i)).collect(),
                })
                .collect(),
        };
        archive_after(IMAGE_MAGIC, &image)
    }

    /// Parses snapshot bytes: the binary image, or the JSON of Muster 0.1 snapshots (read so
    /// that an upgrade keeps its data; never written).
    pub fn decode(bytes: &[u8]) -> Result<Durable, DecodeError> {
        if bytes.first() == Some(&b'{') {
            return decode_json(bytes);
        }
        let Some(body) = bytes.strip_prefix(IMAGE_MAGIC) else {
            return Err(DecodeError::Magic {
                what: "snapshot state",
                found: String::from_utf8_lossy(&bytes[..bytes.len().min(16)]).into_owned(),
                expected: format!("the image magic {:?}", String::from_utf8_lossy(IMAGE_MAGIC)),
            });
        };
        aligned(body, Self::decode_image)
    }

    fn decode_image(body: &[u8]) -> Result<Durable, DecodeError> {
        let image = rkyv::access::<ArchivedImage, rkyv::rancor::Error>(body)
            .map_err(|e| DecodeError::invalid("snapshot image", e))?;
        let mut d = Durable::default();
        d.services.reserve(image.services.len());
        for s in image.services.iter() {
            let key = ServiceKey::new(&s.namespace, &s.grouped);
            let svc = d.services.entry(key.clone()).or_default();
            if let Some(j) = s.settings.as_ref() {
                svc.settings = Some(serde_json::from_str(j.as_str()).map_err(|e| {
                    DecodeError::invalid(
                        format!(
                            "settings of service {}##{} in the snapshot",
                            key.namespace, key.grouped
                        ),
                        e,
                    )
                })?);
            }
            for c in s.clusters.iter() {
                let meta = serde_json::from_str(c.1.as_str()).map_err(|e| {
                    DecodeError::invalid(
                        format!(
                            "cluster {} of service {}##{} in the snapshot",
                            c.0, key.namespace, key.grouped
                        ),
                        e,
                    )
                })?;
                svc.clusters.insert(c.0.to_string(), meta);
            }
            svc.instances.reserve(s.instances.len(), |e| e.0);
            for i in s.instances.iter() {
                if svc.insert(Arc::new(i.to_spec())) {
                    d.instances += 1;
                }
            }
        }
        Ok(d)
    }
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("in-memory JSON encoding")
}

/// The first 16 bytes of a snapshot image (format 2; format 1 was JSON).
pub const IMAGE_MAGIC: &[u8; 16] = b"MUSTER-DURABLE/2";

/// The snapshot image of all persistent state (what [`Durable::encode`] archives). It borrows
/// from the [`Durable`] it is taken of: encoding copies each string once, into the archive.
#[derive(rkyv::Archive, rkyv::Serialize)]
struct Image<'a> {
    services: Vec<ServiceImage<'a>>,
}

/// One service in the image. Settings and cluster metadata hold free-form JSON (selectors,
/// health checkers), so they stay JSON text; instances are binary.
#[derive(rkyv::Archive, rkyv::Serialize)]
struct ServiceImage<'a> {
    #[rkyv(with = InlineAsBox)]
    namespace: &'a str,
    #[rkyv(with = InlineAsBox)]
    grouped: &'a str,
    settings: Option<String>,
    clusters: Vec<(String, String)>,
    instances: Vec<InstanceImage<'a>>,
}

/// A persistent instance in the image (an [`InstanceSpec`], always `ephemeral: false`).
#[derive(rkyv::Archive, rkyv::Serialize)]
struct InstanceImage<'a> {
    #[rkyv(with = InlineAsBox)]
    ip: &'a str,
    port: u16,
    #[rkyv(with = InlineAsBox)]
    cluster: &'a str,
    weight: f64,
    healthy: bool,
    enabled: bool,
    #[rkyv(with = InlineAsBox)]
    metadata: &'a [(String, String)],
    #[rkyv(with = InlineAsBox)]
    app: &'a str,
}

impl<'a> From<&'a InstanceSpec> for InstanceImage<'a> {
    fn from(s: &'a InstanceSpec) -> Self {
        InstanceImage {
            ip: &s.ip,
            port: s.port,
            cluster: &s.cluster,
            weight: s.weight,
            healthy: s.healthy,
            enabled: s.enabled,
            metadata: s.metadata.as_slice(),
            app: &s.app,
        }
    }
}

impl ArchivedInstanceImage<'_> {
    fn to_spec(&self) -> InstanceSpec {
        let mut metadata = Metadata::new();
        for kv in self.metadata.iter() {
            metadata.insert(kv.0.to_string(), kv.1.to_string());
        }
        InstanceSpec {
            ip: self.ip.to_string(),
            port: self.port.to_native(),
            cluster: self.cluster.to_string(),
            weight: self.weight.to_native(),
            healthy: self.healthy,
            enabled: self.enabled,
            ephemeral: false,
            metadata,
            app: self.app.to_string(),
        }
    }
}

/// Snapshots of Muster 0.1: `Durable` as JSON, services by event key, instances by
/// `ip:port:cluster`.
fn decode_json(bytes: &[u8]) -> Result<Durable, DecodeError> {
    #[derive(Deserialize)]
    struct Old {
        services: BTreeMap<String, OldService>,
    }
    #[derive(Deserialize)]
    struct OldService {
        settings: Option<ServiceSettings>,
        clusters: BTreeMap<String, ClusterMeta>,
        instances: BTreeMap<String, InstanceSpec>,
    }
    let old: Old =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::invalid("snapshot state", e))?;
    let mut d = Durable::default();
    for (k, s) in old.services {
        let key = parse_event_key(&k).ok_or_else(|| DecodeError::BadKey(k.clone()))?;
        let svc = d.service(&key);
        svc.settings = s.settings;
        svc.clusters = s.clusters;
        for spec in s.instances.into_values() {
            d.insert(&key, Arc::new(spec));
        }
    }
    Ok(d)
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

    fn settings() -> ServiceSettings {
        ServiceSettings {
            protect_threshold: 0.5,
            metadata: Default::default(),
            selector: serde_json::json!({"type": "label", "expression": "a = b"}),
        }
    }

    /// Two services: settings, a cluster, instances with metadata; one instance removed.
    fn sample() -> (Durable, ServiceKey) {
        let key = ServiceKey::new("public", "DEFAULT_GROUP@@mysql");
        let other = ServiceKey::new("dev", "g@@redis");
        let mut d = Durable::default();
        let mut tagged = spec("10.0.0.3");
        tagged.metadata.insert("zone".into(), "b".into());
        tagged.metadata.insert("az".into(), "1".into());
        tagged.weight = 2.5;
        tagged.cluster = "c1".into();
        tagged.app = "shop".into();
        let ops = [
            (
                &key,
                PersistentOp::CreateService {
                    settings: settings(),
                },
            ),
            (
                &key,
                PersistentOp::Register {
                    instance: spec("10.0.0.1"),
                },
            ),
            (
                &key,
                PersistentOp::Register {
                    instance: spec("10.0.0.2"),
                },
            ),
            (&key, PersistentOp::Register { instance: tagged }),
            (
                &key,
                PersistentOp::UpdateCluster {
                    cluster: "c1".into(),
                    meta: ClusterMeta {
                        check_port: 9,
                        ..ClusterMeta::default()
                    },
                },
            ),
            (
                &key,
                PersistentOp::Deregister {
                    ip: "10.0.0.1".into(),
                    port: 3306,
                    cluster: "DEFAULT".into(),
                },
            ),
            (
                &other,
                PersistentOp::Register {
                    instance: spec("10.0.1.1"),
                },
            ),
        ];
        for (k, op) in &ops {
            d.apply_change(k, op);
        }
        (d, key)
    }

    #[test]
    fn fold_and_snapshot_round_trip() {
        let (mut d, key) = sample();
        assert_eq!(d.instance_count(), 3);
        assert_eq!(d.service_count(), 2);
        let bytes = d.encode();
        assert!(bytes.starts_with(IMAGE_MAGIC));
        let back = Durable::decode(&bytes).unwrap();
        assert_eq!(back, d);
        // The image decodes wherever the bytes sit (rkyv needs alignment; decode copies when
        // the buffer is not aligned).
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&bytes);
        assert_eq!(Durable::decode(&shifted[1..]).unwrap(), d);
        // Re-registering replaces, it does not add.
        d.apply_change(
            &key,
            &PersistentOp::Register {
                instance: spec("10.0.0.2"),
            },
        );
        assert_eq!(d.instance_count(), 3);
        // A service with persistent instances is not deleted (the registry refuses it too).
        d.apply_change(&key, &PersistentOp::DeleteService);
        assert_eq!(d.instance_count(), 3);
        assert_eq!(d.service_count(), 2);
        for (ip, cluster) in [("10.0.0.2", "DEFAULT"), ("10.0.0.3", "c1")] {
            let (ip, cluster) = (ip.into(), cluster.into());
            d.apply_change(
                &key,
                &PersistentOp::Deregister {
                    ip,
                    port: 3306,
                    cluster,
                },
            );
        }
        d.apply_change(&key, &PersistentOp::DeleteService);
        assert_eq!(d.instance_count(), 1);
        assert_eq!(d.service_count(), 1);
    }

    #[test]
    fn snapshots_of_muster_0_1_still_load() {
        let old = serde_json::json!({
            "applied": 7,
            "services": {
                "public##DEFAULT_GROUP@@mysql": {
                    "settings": null,
                    "clusters": {},
                    "instances": {
                        "10.0.0.1:3306:DEFAULT": spec("10.0.0.1"),
                        "10.0.0.2:3306:DEFAULT": spec("10.0.0.2")
                    }
                }
            }
        });
        let d = Durable::decode(&serde_json::to_vec(&old).unwrap()).unwrap();
        assert_eq!(d.instance_count(), 2);
        let (key, s) = d.services().next().unwrap();
        assert_eq!(*key, ServiceKey::new("public", "DEFAULT_GROUP@@mysql"));
        let mut ips: Vec<_> = s.instances().map(|i| i.ip.clone()).collect();
        ips.sort();
        assert_eq!(ips, ["10.0.0.1", "10.0.0.2"]);
    }

    #[test]
    fn damaged_images_are_refused_not_trusted() {
        use muster_storage::snapshot::{self, SnapshotData};
        use muster_storage::{Corruption, Error};
        let (d, _) = sample();
        let bytes = d.encode();
        assert!(matches!(
            Durable::decode(b"NOT-AN-IMAGE-AT-ALL").unwrap_err(),
            DecodeError::Magic {
                what: "snapshot state",
                ..
            }
        ));
        // The image carries no checksum of its own: it is stored as the data of a snapshot
        // file, whose crc covers it (FORMAT.md §7), and recovery reads it only through that
        // file. So every damaged copy of that file must be refused there, as corruption at the
        // offset of the damaged part (0 header, 16 length, 32 payload), before the image is
        // decoded.
        let (index, term) = (7, 2);
        let file = snapshot::encode(&SnapshotData {
            index,
            term,
            conf_state: muster_storage::record::ConfStateRecord {
                voters: vec![1],
                ..Default::default()
            },
            data: bytes.clone(),
        });
        let path = std::path::Path::new("0000000000000002-0000000000000007.snap");
        let read = |b: &[u8]| snapshot::decode(path, index, b);
        let intact = read(&file).expect("the intact file reads back");
        assert_eq!(Durable::decode(&intact.data).unwrap(), d);
        let refused = |b: &[u8], what: &str, want_offset: u64| match read(b) {
            Err(Error::Corruption {
                offset,
                reason: Corruption::Snapshot(why),
                ..
            }) => assert_eq!(
                offset, want_offset,
                "{what}: refused at the wrong offset: {why}"
            ),
            Err(e) => panic!("{what}: refused, but not as snapshot corruption: {e}"),
            Ok(s) => panic!(
                "{what}: a damaged snapshot was trusted ({} image bytes)",
                s.data.len()
            ),
        };
        for cut in 0..file.len() {
            let at = if cut < snapshot::SNAPSHOT_HEADER_LEN {
                0
            } else {
                16
            };
            refused(&file[..cut], &format!("cut at {cut} of {}", file.len()), at);
        }
        for i in 0..file.len() {
            let mut b = file.clone();
            b[i] ^= 0x55;
            let at = match i {
                16..=23 => 16,
                24..=27 => 32,
                _ if i >= snapshot::SNAPSHOT_HEADER_LEN => 32,
                _ => 0,
            };
            refused(&b, &format!("byte {i} flipped"), at);
        }
        // Below the file's crc, the image decoder still never panics, and what it refuses it
        // refuses with one of its own errors.
        let known = |e: &DecodeError| match e {
            DecodeError::Magic { what, .. } => *what == "snapshot state",
            DecodeError::Invalid { what, .. } => [
                "snapshot state",
                "snapshot image",
                "settings of service",
                "cluster ",
            ]
            .iter()
            .any(|k| what.starts_with(k)),
            _ => false,
        };
        for cut in 0..bytes.len() {
            if let Err(e) = Durable::decode(&bytes[..cut]) {
                assert!(known(&e), "cut at {cut}: {e}");
            }
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x55;
            if let Err(e) = Durable::decode(&b) {
                assert!(known(&e), "byte {i} flipped: {e}");
            }
        }
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
        let settings = settings();
        let mut tagged = spec("10.0.0.1");
        tagged.metadata.insert("zone".into(), "a".into());
        tagged.app = "shop".into();
        let ops = [
            PersistentOp::Register { instance: tagged },
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
            // The event body: binary, and a Muster 0.1 JSON body still decodes.
            let body = op.encode_body();
            assert!(body.starts_with(OP_MAGIC));
            assert_eq!(PersistentOp::decode_body(&body).unwrap(), op);
            assert_eq!(PersistentOp::decode_body(&j).unwrap(), op);
            let mut shifted = vec![0u8];
            shifted.extend_from_slice(&body);
            assert_eq!(PersistentOp::decode_body(&shifted[1..]).unwrap(), op);
            // Cut anywhere: an error or some op, never a panic (the entry's crc refuses damage
            // before this is reached).
            for cut in 0..body.len() {
                let _ = PersistentOp::decode_body(&body[..cut]);
            }
        }
        let e = PersistentOp::decode_body(b"garbage").unwrap_err();
        assert!(
            matches!(&e, DecodeError::Magic { what: "op body", found, .. } if found == "garbage"),
            "{e}"
        );
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
