//! The `config` domain of the state machine: the config center's configs (with their beta and
//! tag variants), their history and the namespaces.
//!
//! Every change is a [`ConfigOp`] carried in a raft entry as an event of domain `config` (key:
//! Nacos's group key `dataId+group[+tenant]`, or `namespace:<id>`; body: the op as JSON, which
//! `muster-wal` shows as it is). Committed ops fold into [`ConfigData`], behind one
//! [`ConfigState`] that the raft thread writes and every shard reads (a shared read-write lock:
//! a read never hops to another shard, and a write holds the lock for one op). Applying never
//! fails: preconditions (parameters, the per-namespace cap) are checked before proposing.
//!
//! History follows Nacos's `his_config_info`: a publish of a new config records the new content
//! (`I`), an update or a delete records the content it replaces (`U`, `D`). Retention (a count
//! per config and an age) travels inside each op, so every member prunes the same records.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::consensus::state_machine::{DecodeError, Domain};

/// The identity of a config: namespace (`tenant`, `""` for `public`), group and data id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConfigKey {
    /// Namespace id; `""` is the public namespace.
    pub tenant: String,
    /// Group.
    pub group: String,
    /// Data id.
    #[serde(rename = "dataId")]
    pub data_id: String,
}

impl ConfigKey {
    /// A key.
    pub fn new(tenant: &str, group: &str, data_id: &str) -> ConfigKey {
        ConfigKey {
            tenant: tenant.to_string(),
            group: group.to_string(),
            data_id: data_id.to_string(),
        }
    }

    /// Nacos's `GroupKey2.getKey`: `dataId+group[+tenant]`, each part with `%` → `%25` and
    /// `+` → `%2B`. The key held polls and log events use.
    pub fn group_key(&self) -> String {
        fn push(out: &mut String, s: &str) {
            for c in s.chars() {
                match c {
                    '+' => out.push_str("%2B"),
                    '%' => out.push_str("%25"),
                    c => out.push(c),
                }
            }
        }
        let mut out = String::with_capacity(self.data_id.len() + self.group.len() + 8);
        push(&mut out, &self.data_id);
        out.push('+');
        push(&mut out, &self.group);
        if !self.tenant.is_empty() {
            out.push('+');
            push(&mut out, &self.tenant);
        }
        out
    }
}

/// Lowercase hex MD5 of `content`'s UTF-8 bytes (Nacos's `MD5Utils.md5Hex(content, "UTF-8")`).
pub fn md5_hex(content: &str) -> String {
    let digest = Md5::digest(content.as_bytes());
    let mut s = String::with_capacity(32);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// What a publish carries besides the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ConfigSpec {
    /// The content (never blank: checked before proposing).
    pub content: String,
    /// `type`, normalised (`text` when unknown).
    #[serde(rename = "type")]
    pub kind: String,
    /// `appName`.
    #[serde(default, rename = "appName")]
    pub app_name: String,
    /// `desc`.
    #[serde(default)]
    pub desc: String,
    /// `config_tags`.
    #[serde(default, rename = "configTags")]
    pub config_tags: String,
    /// The publisher's address.
    #[serde(default, rename = "srcIp")]
    pub src_ip: String,
    /// The publisher's user (`src_user`), if any.
    #[serde(default, rename = "srcUser")]
    pub src_user: String,
}

/// Which copy of a config an op touches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case", tag = "variant", content = "value")]
pub enum Variant {
    /// The config itself.
    #[default]
    Normal,
    /// The beta copy, served to the listed client IPs (`betaIps`, comma-separated).
    Beta(String),
    /// The copy selected by a `Vipserver-Tag` (the tag).
    Tag(String),
}

/// How much history to keep, decided by the proposer (part of the op, so every member prunes
/// alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Most history records kept per config. Minimum 1.
    pub max_per_config: u32,
    /// Records older than this (by op time) are dropped, in ms.
    pub max_age_ms: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_per_config: 100,
            max_age_ms: 30 * 24 * 3600 * 1000,
        }
    }
}

/// A committed change of the config domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum ConfigOp {
    /// Creates or replaces a config (or its beta or tag copy).
    Publish {
        /// The config.
        key: ConfigKey,
        /// Which copy.
        #[serde(default)]
        variant: Variant,
        /// Content and attributes.
        spec: ConfigSpec,
        /// Wall time of the proposal, in ms (the config's modification time).
        time_ms: u64,
        /// History retention.
        retention: Retention,
    },
    /// Removes a config (or only its beta or tag copy). Removing what is absent changes nothing.
    Delete {
        /// The config.
        key: ConfigKey,
        /// Which copy (the tag's value is the tag; a beta's is ignored).
        #[serde(default)]
        variant: Variant,
        /// The remover's address.
        #[serde(default)]
        src_ip: String,
        /// Wall time of the proposal, in ms.
        time_ms: u64,
        /// History retention.
        retention: Retention,
    },
    /// Creates a namespace, or renames an existing one.
    PutNamespace {
        /// The namespace.
        namespace: Namespace,
    },
    /// Removes a namespace (never `public`, which is not stored).
    DeleteNamespace {
        /// Its id.
        id: String,
    },
    /// Several changes as one entry, applied in order (an import: all or nothing in the log).
    Batch {
        /// The changes (never another batch).
        ops: Vec<ConfigOp>,
    },
}

impl ConfigOp {
    /// The event kind (`publish`, `delete`, `publish-beta`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            ConfigOp::Publish { variant, .. } => match variant {
                Variant::Normal => "publish",
                Variant::Beta(_) => "publish-beta",
                Variant::Tag(_) => "publish-tag",
            },
            ConfigOp::Delete { variant, .. } => match variant {
                Variant::Normal => "delete",
                Variant::Beta(_) => "delete-beta",
                Variant::Tag(_) => "delete-tag",
            },
            ConfigOp::PutNamespace { .. } => "namespace-put",
            ConfigOp::DeleteNamespace { .. } => "namespace-delete",
            ConfigOp::Batch { .. } => "batch",
        }
    }

    /// The event key: the config's group key, or `namespace:<id>`.
    pub fn event_key(&self) -> String {
        match self {
            ConfigOp::Publish { key, .. } | ConfigOp::Delete { key, .. } => key.group_key(),
            ConfigOp::PutNamespace { namespace } => format!("namespace:{}", namespace.id),
            ConfigOp::DeleteNamespace { id } => format!("namespace:{id}"),
            ConfigOp::Batch { ops } => format!("batch:{}", ops.len()),
        }
    }

    /// The configs an op changes.
    pub fn config_keys(&self) -> Vec<&ConfigKey> {
        match self {
            ConfigOp::Publish { key, .. } | ConfigOp::Delete { key, .. } => vec![key],
            ConfigOp::Batch { ops } => ops.iter().flat_map(ConfigOp::config_keys).collect(),
            _ => Vec::new(),
        }
    }

    /// The event body: the op as JSON.
    pub fn encode_body(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("in-memory JSON encoding")
    }

    /// Decodes a body written by [`ConfigOp::encode_body`].
    pub fn decode_body(body: &[u8]) -> Result<ConfigOp, DecodeError> {
        serde_json::from_slice(body).map_err(|e| DecodeError::invalid("config op body", e))
    }
}

/// A custom namespace. `public` (id `""`) always exists and is never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    /// Id (`^[\w-]+`, ≤ 128 characters).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub desc: String,
}

/// A stored config (one copy: normal, beta or tag).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigItem {
    /// Stable id, assigned when the config was first published (Nacos's `config_info.id`).
    pub id: u64,
    /// Content and attributes.
    pub spec: ConfigSpec,
    /// [`md5_hex`] of the content.
    pub md5: String,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
    /// Last modification time, ms since the epoch.
    pub modified_ms: u64,
}

/// One history record (Nacos's `his_config_info` row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRecord {
    /// History id (`nid`), increasing over the whole domain.
    pub nid: u64,
    /// The config's id.
    pub id: u64,
    /// The config.
    pub key: ConfigKey,
    /// Content recorded (new for `I`, replaced for `U` and `D`).
    pub spec: ConfigSpec,
    /// Its md5.
    pub md5: String,
    /// Who made the change.
    pub src_ip: String,
    /// `I`, `U` or `D`.
    pub op_type: String,
    /// When the change happened, ms since the epoch.
    pub time_ms: u64,
}

/// All config-center state. Invariant: equal to applying, in order, every committed config op.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigData {
    /// Configs, ordered by key (search pages are stable).
    pub configs: BTreeMap<ConfigKey, Arc<ConfigItem>>,
    /// Beta copies: the copy and its comma-separated IPs.
    pub betas: BTreeMap<ConfigKey, (Arc<ConfigItem>, String)>,
    /// Tag copies, by config then tag.
    pub tags: BTreeMap<ConfigKey, BTreeMap<String, Arc<ConfigItem>>>,
    /// History, by config, oldest first.
    pub history: BTreeMap<ConfigKey, Vec<Arc<HistoryRecord>>>,
    /// Custom namespaces by id.
    pub namespaces: BTreeMap<String, Namespace>,
    /// The last id handed out (configs and history records share the counter).
    pub last_id: u64,
}

impl ConfigData {
    /// Folds one committed op in.
    pub fn apply(&mut self, op: &ConfigOp) {
        match op {
            ConfigOp::Publish {
                key,
                variant,
                spec,
                time_ms,
                retention,
            } => self.publish(key, variant, spec, *time_ms, *retention),
            ConfigOp::Delete {
                key,
                variant,
                src_ip,
                time_ms,
                retention,
            } => match variant {
                Variant::Normal => {
                    if let Some(old) = self.configs.remove(key) {
                        self.record(key, &old, src_ip, "D", *time_ms, *retention);
                    }
                }
                Variant::Beta(_) => {
                    self.betas.remove(key);
                }
                Variant::Tag(tag) => {
                    if let Some(t) = self.tags.get_mut(key) {
                        t.remove(tag);
                        if t.is_empty() {
                            self.tags.remove(key);
                        }
                    }
                }
            },
            ConfigOp::PutNamespace { namespace } => {
                self.namespaces
                    .insert(namespace.id.clone(), namespace.clone());
            }
            ConfigOp::DeleteNamespace { id } => {
                self.namespaces.remove(id);
            }
            ConfigOp::Batch { ops } => {
                for op in ops {
                    self.apply(op);
                }
            }
        }
    }

    fn next_id(&mut self) -> u64 {
        self.last_id += 1;
        self.last_id
    }

    fn publish(
        &mut self,
        key: &ConfigKey,
        variant: &Variant,
        spec: &ConfigSpec,
        time_ms: u64,
        retention: Retention,
    ) {
        let md5 = md5_hex(&spec.content);
        let old = match variant {
            Variant::Normal => self.configs.get(key).cloned(),
            Variant::Beta(_) => self.betas.get(key).map(|b| b.0.clone()),
            Variant::Tag(t) => self.tags.get(key).and_then(|m| m.get(t)).cloned(),
        };
        let id = match &old {
            Some(o) => o.id,
            None => self.next_id(),
        };
        let item = Arc::new(ConfigItem {
            id,
            spec: spec.clone(),
            md5,
            created_ms: old.as_ref().map_or(time_ms, |o| o.created_ms),
            modified_ms: time_ms,
        });
        match variant {
            Variant::Normal => {
                match &old {
                    Some(o) => self.record(key, o, &spec.src_ip, "U", time_ms, retention),
                    None => self.record(key, &item, &spec.src_ip, "I", time_ms, retention),
                }
                self.configs.insert(key.clone(), item);
            }
            Variant::Beta(ips) => {
                self.betas.insert(key.clone(), (item, ips.clone()));
            }
            Variant::Tag(t) => {
                self.tags
                    .entry(key.clone())
                    .or_default()
                    .insert(t.clone(), item);
            }
        }
    }

    /// Appends a history record of `item` and prunes the config's history.
    fn record(
        &mut self,
        key: &ConfigKey,
        item: &ConfigItem,
        src_ip: &str,
        op_type: &str,
        time_ms: u64,
        retention: Retention,
    ) {
        let nid = self.next_id();
        let list = self.history.entry(key.clone()).or_default();
        list.push(Arc::new(HistoryRecord {
            nid,
            id: item.id,
            key: key.clone(),
            spec: item.spec.clone(),
            md5: item.md5.clone(),
            src_ip: src_ip.to_string(),
            op_type: op_type.to_string(),
            time_ms,
        }));
        let oldest = time_ms.saturating_sub(retention.max_age_ms);
        let stale = list.iter().take_while(|r| r.time_ms < oldest).count();
        let over = list
            .len()
            .saturating_sub(retention.max_per_config.max(1) as usize);
        list.drain(..stale.max(over));
        if list.is_empty() {
            self.history.remove(key);
        }
    }

    /// Configs (normal copies) in namespace `tenant`.
    pub fn count_in(&self, tenant: &str) -> usize {
        self.configs.keys().filter(|k| k.tenant == tenant).count()
    }

    /// The md5 a client at `ip` with `Vipserver-Tag` `tag` sees for `key` (Nacos's
    /// `ConfigCacheService.getContentMd5`): the beta copy's if `ip` is listed, else the tag
    /// copy's if there is one for `tag`, else the config's; `""` when there is none.
    pub fn md5_for(&self, key: &ConfigKey, ip: &str, tag: &str) -> &str {
        if let Some((item, ips)) = self.betas.get(key) {
            if ips.split(',').any(|i| i.trim() == ip) {
                return &item.md5;
            }
        }
        if !tag.is_empty() {
            if let Some(item) = self.tags.get(key).and_then(|m| m.get(tag)) {
                return &item.md5;
            }
        }
        self.configs.get(key).map_or("", |i| i.md5.as_str())
    }

    /// Every history record of `key`, newest first.
    pub fn history_of(&self, key: &ConfigKey) -> impl Iterator<Item = &Arc<HistoryRecord>> {
        self.history
            .get(key)
            .into_iter()
            .flat_map(|v| v.iter().rev())
    }

    /// The history record with id `nid`, if kept.
    pub fn history_record(&self, nid: u64) -> Option<&Arc<HistoryRecord>> {
        self.history
            .values()
            .flat_map(|v| v.iter())
            .find(|r| r.nid == nid)
    }
}

/// The config domain as the state machine holds it: [`ConfigData`] behind a lock shared with
/// every shard. Cloning shares the data (the server hands a clone to the shards at start).
///
/// Why a lock and not a published copy per change: configs can be 10 MiB and history keeps
/// old contents, so nothing is copied; the raft thread holds the write lock for one op (a map
/// insert and a history prune), and readers hold the read lock for one lookup or one page.
#[derive(Debug, Clone, Default)]
pub struct ConfigState {
    data: Arc<RwLock<ConfigData>>,
}

impl PartialEq for ConfigState {
    fn eq(&self, other: &Self) -> bool {
        *self.read() == *other.read()
    }
}

impl ConfigState {
    /// Reads the data (a poisoned lock is still read: applying never leaves it half-done).
    pub fn read(&self) -> RwLockReadGuard<'_, ConfigData> {
        self.data.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the data with `other`'s (a snapshot installed from the leader), keeping this
    /// handle, which readers share. Returns every config key either held: the ones whose
    /// listeners must be told.
    pub fn replace_with(&self, other: &ConfigState) -> Vec<ConfigKey> {
        let new = other.read().clone();
        let mut w = self.write();
        let mut keys: std::collections::BTreeSet<ConfigKey> = std::collections::BTreeSet::new();
        for d in [&*w, &new] {
            keys.extend(d.configs.keys().cloned());
            keys.extend(d.betas.keys().cloned());
            keys.extend(d.tags.keys().cloned());
        }
        *w = new;
        keys.into_iter().collect()
    }

    fn write(&self) -> RwLockWriteGuard<'_, ConfigData> {
        self.data.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// First bytes of the config section of a snapshot image (JSON of [`ConfigData`] follows).
pub const CONFIG_IMAGE_MAGIC: &[u8; 8] = b"MCFG1\0\0\0";

/// The config section of a snapshot image (JSON): flat lists, since JSON maps need string keys.
/// History records are written oldest first per config.
#[derive(Serialize)]
struct Image<'a> {
    last_id: u64,
    configs: Vec<(&'a ConfigKey, &'a ConfigItem)>,
    betas: Vec<(&'a ConfigKey, &'a ConfigItem, &'a str)>,
    tags: Vec<(&'a ConfigKey, &'a str, &'a ConfigItem)>,
    history: Vec<&'a HistoryRecord>,
    namespaces: Vec<&'a Namespace>,
}

/// [`Image`] as read back.
#[derive(Deserialize)]
struct OwnedImage {
    last_id: u64,
    configs: Vec<(ConfigKey, ConfigItem)>,
    betas: Vec<(ConfigKey, ConfigItem, String)>,
    tags: Vec<(ConfigKey, String, ConfigItem)>,
    history: Vec<HistoryRecord>,
    namespaces: Vec<Namespace>,
}

impl Domain for ConfigState {
    const NAME: &'static str = "config";
    type Op = ConfigOp;

    fn decode_op(_key: &str, body: &[u8]) -> Result<ConfigOp, DecodeError> {
        ConfigOp::decode_body(body)
    }

    fn apply(&mut self, op: &ConfigOp) {
        self.write().apply(op);
    }

    fn records(&self) -> u64 {
        let d = self.read();
        (d.configs.len()
            + d.betas.len()
            + d.tags.values().map(BTreeMap::len).sum::<usize>()
            + d.history.values().map(Vec::len).sum::<usize>()
            + d.namespaces.len()) as u64
    }

    fn encode_image(&self) -> Vec<u8> {
        let d = self.read();
        let image = Image {
            last_id: d.last_id,
            configs: d.configs.iter().map(|(k, v)| (k, &**v)).collect(),
            betas: d
                .betas
                .iter()
                .map(|(k, v)| (k, &*v.0, v.1.as_str()))
                .collect(),
            tags: d
                .tags
                .iter()
                .flat_map(|(k, m)| m.iter().map(move |(t, v)| (k, t.as_str(), &**v)))
                .collect(),
            history: d.history.values().flatten().map(|r| &**r).collect(),
            namespaces: d.namespaces.values().collect(),
        };
        let mut out = CONFIG_IMAGE_MAGIC.to_vec();
        serde_json::to_writer(&mut out, &image).expect("in-memory JSON encoding");
        out
    }

    fn decode_image(bytes: &[u8]) -> Result<Self, DecodeError> {
        let body = bytes
            .strip_prefix(CONFIG_IMAGE_MAGIC.as_slice())
            .ok_or_else(|| DecodeError::Magic {
                what: "config section",
                found: String::from_utf8_lossy(&bytes[..bytes.len().min(8)]).into_owned(),
                expected: format!("{:?}", String::from_utf8_lossy(CONFIG_IMAGE_MAGIC)),
            })?;
        let image: OwnedImage = serde_json::from_slice(body)
            .map_err(|e| DecodeError::invalid("config section of the snapshot", e))?;
        let mut data = ConfigData {
            last_id: image.last_id,
            ..Default::default()
        };
        for (k, v) in image.configs {
            data.configs.insert(k, Arc::new(v));
        }
        for (k, v, ips) in image.betas {
            data.betas.insert(k, (Arc::new(v), ips));
        }
        for (k, t, v) in image.tags {
            data.tags.entry(k).or_default().insert(t, Arc::new(v));
        }
        for r in image.history {
            data.history
                .entry(r.key.clone())
                .or_default()
                .push(Arc::new(r));
        }
        for n in image.namespaces {
            data.namespaces.insert(n.id.clone(), n);
        }
        Ok(ConfigState {
            data: Arc::new(RwLock::new(data)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(data_id: &str, content: &str, t: u64) -> ConfigOp {
        ConfigOp::Publish {
            key: ConfigKey::new("", "DEFAULT_GROUP", data_id),
            variant: Variant::Normal,
            spec: ConfigSpec {
                content: content.into(),
                kind: "text".into(),
                ..Default::default()
            },
            time_ms: t,
            retention: Retention {
                max_per_config: 3,
                max_age_ms: 1000,
            },
        }
    }

    #[test]
    fn md5_and_group_keys_match_nacos() {
        assert_eq!(md5_hex(""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex("hello"), "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(ConfigKey::new("", "G", "a+b%c").group_key(), "a%2Bb%25c+G");
        assert_eq!(ConfigKey::new("dev", "G", "d").group_key(), "d+G+dev");
    }

    #[test]
    fn history_records_inserts_updates_deletes_and_prunes() {
        let mut s = ConfigState::default();
        let key = ConfigKey::new("", "DEFAULT_GROUP", "a");
        s.apply(&publish("a", "v1", 10));
        s.apply(&publish("a", "v2", 20));
        {
            let d = s.read();
            let item = &d.configs[&key];
            assert_eq!(
                (
                    item.spec.content.as_str(),
                    item.created_ms,
                    item.modified_ms
                ),
                ("v2", 10, 20)
            );
            let h: Vec<_> = d
                .history_of(&key)
                .map(|r| (r.op_type.as_str(), r.spec.content.as_str()))
                .collect();
            assert_eq!(h, [("U", "v1"), ("I", "v1")]);
        }
        for (i, t) in [30, 40, 50].into_iter().enumerate() {
            s.apply(&publish("a", &format!("w{i}"), t));
        }
        assert_eq!(s.read().history_of(&key).count(), 3, "count retention");
        s.apply(&publish("a", "late", 5000));
        assert_eq!(s.read().history_of(&key).count(), 1, "age retention");
        s.apply(&ConfigOp::Delete {
            key: key.clone(),
            variant: Variant::Normal,
            src_ip: "1.2.3.4".into(),
            time_ms: 5001,
            retention: Retention::default(),
        });
        let d = s.read();
        assert!(d.configs.is_empty());
        let last = d.history_of(&key).next().unwrap();
        assert_eq!(
            (last.op_type.as_str(), last.spec.content.as_str()),
            ("D", "late")
        );
    }

    #[test]
    fn ops_and_image_round_trip() {
        let mut s = ConfigState::default();
        let ops = [
            publish("a", "x\ny&z+=%é", 1),
            ConfigOp::Publish {
                key: ConfigKey::new("dev", "G", "b"),
                variant: Variant::Beta("10.0.0.1,10.0.0.2".into()),
                spec: ConfigSpec {
                    content: "beta".into(),
                    kind: "yaml".into(),
                    ..Default::default()
                },
                time_ms: 2,
                retention: Retention::default(),
            },
            ConfigOp::Publish {
                key: ConfigKey::new("dev", "G", "b"),
                variant: Variant::Tag("gray".into()),
                spec: ConfigSpec {
                    content: "tagged".into(),
                    kind: "text".into(),
                    ..Default::default()
                },
                time_ms: 3,
                retention: Retention::default(),
            },
            ConfigOp::PutNamespace {
                namespace: Namespace {
                    id: "dev".into(),
                    name: "Dev".into(),
                    desc: "d".into(),
                },
            },
        ];
        for op in &ops {
            let body = op.encode_body();
            assert_eq!(&ConfigState::decode_op("k", &body).unwrap(), op);
            s.apply(op);
        }
        let image = s.encode_image();
        let back = ConfigState::decode_image(&image).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.records(), 5);
        assert!(ConfigState::decode_image(b"garbage").is_err());
        for cut in 0..image.len() {
            assert!(
                ConfigState::decode_image(&image[..cut]).is_err(),
                "cut at {cut}"
            );
        }
    }
}
